//! An Ansible playbook (its plays, tasks, handlers, roles) to provision steps. Pure over the
//! files it is given to read: what it converts becomes `Step`s, what it cannot is a `Problem`
//! at its YAML file and line, and the step it belongs to is written commented out, so nothing
//! runs differently from what Ansible would have done.

use super::jinja::{self, Scope};
use super::yaml::{self, Node, V};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Something left unconverted (the command exits 3 when there is any), or a note about what was
/// dropped on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub what: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// Comment lines written above the step.
    pub comments: Vec<String>,
    pub name: Option<String>,
    pub use_: String,
    pub hosts: Option<String>,
    pub when: Option<String>,
    pub timeout: Option<i64>,
    pub tags: Vec<String>,
    pub loop_: Option<toml::Value>,
    pub loop_var: Option<String>,
    pub loop_label: Option<String>,
    pub notify: Vec<String>,
    pub with: toml::Table,
    /// Something in it could not be converted: written commented out.
    pub disabled: bool,
}

/// A file a step reads (`template`, `copy`), to be written next to the converted playbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Relative to the output directory: what the step's `src` says.
    pub dest: String,
    pub content: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Converted {
    pub steps: Vec<Step>,
    pub handlers: Vec<Step>,
    /// Play vars, for the inventory's `[vars]` (over its `all` vars, as in Ansible).
    pub vars: toml::Table,
    /// Role defaults, for `[vars]` too, under the inventory's `all` vars.
    pub defaults: toml::Table,
    pub assets: Vec<Asset>,
    pub problems: Vec<Problem>,
    pub notes: Vec<Problem>,
    /// Some play or task asked for `become: true`.
    pub become_: bool,
}

/// Keys of a play.
const PLAY_KEYS: &[&str] = &[
    "name",
    "hosts",
    "become",
    "become_method",
    "become_user",
    "gather_facts",
    "vars",
    "tasks",
    "pre_tasks",
    "post_tasks",
    "handlers",
    "roles",
    "tags",
];
/// Keys of a task other than its module.
const TASK_KEYS: &[&str] = &[
    "name",
    "when",
    "notify",
    "loop",
    "with_items",
    "with_list",
    "loop_control",
    "tags",
    "become",
    "become_method",
    "args",
    "timeout",
    "listen",
    "register",
    "until",
    "retries",
    "delay",
    "delegate_to",
    "run_once",
    "ignore_errors",
    "changed_when",
    "failed_when",
    "no_log",
    "environment",
    "vars",
    "become_user",
    "check_mode",
    "diff",
    "async",
    "poll",
    "throttle",
    "any_errors_fatal",
    "local_action",
    "with_dict",
    "with_fileglob",
    "with_nested",
    "with_together",
    "with_sequence",
    "with_subelements",
    "with_indexed_items",
    "ignore_unreachable",
    "module_defaults",
    "collections",
    "debugger",
    "connection",
    "delegate_facts",
    "block",
    "rescue",
    "always",
];
/// Task keys with a provision form in other branches (see README), or none.
fn why_not(key: &str) -> &'static str {
    match key {
        "register" => "see README: `register = \"x\"`",
        "until" | "retries" | "delay" => "see README: `retries`, `delay`, `until`",
        "run_once" => "see README: `run_once = true`",
        "delegate_to" | "local_action" | "delegate_facts" | "connection" => {
            "provision runs every step on its own hosts"
        }
        "become_user" => "provision runs as the SSH user, with sudo for root only",
        "ignore_errors" | "failed_when" | "changed_when" => {
            "provision decides failure and change from facts, not from output"
        }
        "no_log" => {
            "provision hides secrets (from the secrets file) everywhere; plain vars are shown"
        }
        "block" | "rescue" | "always" => "blocks are not supported: write the tasks as steps",
        k if k.starts_with("with_") => "use `loop` with a list",
        _ => "no provision form",
    }
}

pub struct Converter<'a> {
    /// The playbook's directory: `templates/`, `files/` and `roles/` are looked up there.
    base: PathBuf,
    vars: BTreeSet<String>,
    out: Converted,
    file: PathBuf,
    /// Read a file (tests give fixtures; the command reads the disk).
    read: &'a dyn Fn(&Path) -> Option<Vec<u8>>,
}

/// What a task is converted within: the play's hosts and tags, a role's directory.
#[derive(Clone, Default)]
struct Within {
    hosts: Option<String>,
    tags: Vec<String>,
    role: Option<PathBuf>,
}

impl<'a> Converter<'a> {
    /// `known_vars`: the inventory's var names (they become `vars.NAME` in expressions).
    pub fn new(
        base: &Path,
        known_vars: BTreeSet<String>,
        read: &'a dyn Fn(&Path) -> Option<Vec<u8>>,
    ) -> Self {
        Converter {
            base: base.to_path_buf(),
            vars: known_vars,
            out: Converted::default(),
            file: PathBuf::new(),
            read,
        }
    }

    fn problem(&mut self, line: usize, what: impl Into<String>) {
        self.out.problems.push(Problem {
            file: self.file.clone(),
            line,
            what: what.into(),
        });
    }

    fn note(&mut self, line: usize, what: impl Into<String>) {
        self.out.notes.push(Problem {
            file: self.file.clone(),
            line,
            what: what.into(),
        });
    }

    fn load(&mut self, path: &Path) -> Option<Node> {
        let text = (self.read)(path)?;
        let text = String::from_utf8_lossy(&text);
        match yaml::load(&text) {
            Ok(mut docs) if docs.len() == 1 => Some(docs.remove(0)),
            Ok(docs) if docs.is_empty() => Some(Node {
                line: 1,
                v: V::Seq(vec![]),
            }),
            Ok(_) => {
                self.file = path.to_path_buf();
                self.problem(1, "several YAML documents in one file: only one is read");
                None
            }
            Err(e) => {
                self.file = path.to_path_buf();
                let line = e
                    .split(':')
                    .next()
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(1);
                self.problem(line, format!("YAML error: {e}"));
                None
            }
        }
    }

    /// Converts the playbook at `path`.
    pub fn playbook(mut self, path: &Path) -> Converted {
        let Some(doc) = self.load(path) else {
            if self.out.problems.is_empty() {
                self.file = path.to_path_buf();
                self.problem(1, "cannot read the playbook");
            }
            return self.out;
        };
        self.file = path.to_path_buf();
        let V::Seq(plays) = &doc.v else {
            self.problem(doc.line, "a playbook is a list of plays");
            return self.out;
        };
        // First every var a play or role defines, so expressions anywhere can read them.
        for play in plays {
            self.collect_vars(play);
        }
        for play in plays {
            self.file = path.to_path_buf();
            self.play(play);
        }
        self.out
    }

    fn collect_vars(&mut self, play: &Node) {
        let file = self.file.clone();
        if let Some(vars) = play.get("vars").and_then(Node::map) {
            for (k, v) in vars {
                self.add_var(k, v, false);
            }
        }
        for role in play.get("roles").map(roles).unwrap_or_default() {
            let path = self
                .base
                .join("roles")
                .join(&role.0)
                .join("defaults/main.yml");
            if (self.read)(&path).is_some()
                && let Some(d) = self.load(&path)
            {
                self.file = path.clone();
                for (k, v) in d.map().unwrap_or(&[]) {
                    self.add_var(k, v, true);
                }
            }
        }
        self.file = file;
    }

    /// A var for `[vars]`: the first definition wins, a conflicting one is named.
    fn add_var(&mut self, k: &str, v: &Node, default: bool) {
        self.vars.insert(k.to_string());
        let table = if default {
            &self.out.defaults
        } else {
            &self.out.vars
        };
        let old = table.get(k).cloned();
        match self.value(v, &[]) {
            Some(val) => match old {
                Some(old) if old != val => self.problem(
                    v.line,
                    format!("var `{k}` is defined twice with different values: provision has one `[vars]`"),
                ),
                _ => {
                    let table = if default { &mut self.out.defaults } else { &mut self.out.vars };
                    table.insert(k.to_string(), val);
                }
            },
            None => self.problem(v.line, format!("var `{k}`: its value cannot be written in TOML")),
        }
    }

    fn play(&mut self, play: &Node) {
        let Some(keys) = play.map() else {
            self.problem(play.line, "a play is a mapping");
            return;
        };
        for (k, v) in keys {
            if !PLAY_KEYS.contains(&k.as_str()) {
                let why = match k.as_str() {
                    "serial" => "see README: `serial`",
                    "max_fail_percentage" => "see README: `max_fail_percentage`",
                    "vars_files" | "vars_prompt" => "put these vars in the inventory's `[vars]`",
                    "strategy" => "provision runs each step on all its hosts, then the next",
                    _ => "no provision form",
                };
                self.problem(v.line, format!("play key `{k}`: not converted ({why})"));
            }
        }
        let hosts = play
            .get("hosts")
            .and_then(Node::strings)
            .map(|h| h.join(","));
        let mut within = Within {
            hosts: hosts.filter(|h| h != "all"),
            tags: play.get("tags").and_then(Node::strings).unwrap_or_default(),
            role: None,
        };
        let play_name = play.get("name").and_then(Node::text);
        if let Some(b) = play.get("become") {
            self.become_note(b);
        }
        if let Some(u) = play
            .get("become_user")
            .and_then(Node::text)
            .filter(|u| u != "root")
        {
            self.problem(play.get("become_user").unwrap().line, format!("become_user `{u}`: not converted (provision runs as the SSH user, with sudo for root only)"));
        }
        if let Some(g) = play.get("gather_facts") {
            self.note(
                g.line,
                "gather_facts dropped: each provision step reads what it needs itself",
            );
        }
        let first = self.out.steps.len();
        self.tasks(play.get("pre_tasks"), &within, false);
        for (role, line) in play.get("roles").map(roles).unwrap_or_default() {
            self.role(&role, line, &within);
        }
        for key in ["tasks", "post_tasks"] {
            self.tasks(play.get(key), &within, false);
        }
        within.role = None;
        self.tasks(play.get("handlers"), &within, true);
        if let (Some(n), Some(s)) = (play_name, self.out.steps.get_mut(first)) {
            s.comments.insert(0, format!("play: {n}"));
        }
    }

    fn become_note(&mut self, b: &Node) {
        match b.boolean() {
            Some(true) => {
                self.out.become_ = true;
                self.note(b.line, "become dropped: provision runs as the SSH user and uses sudo when the inventory says become = \"sudo\" (set in the converted inventory)");
            }
            Some(false) => self.note(
                b.line,
                "become: false dropped: a host with become = \"sudo\" runs every step through sudo",
            ),
            None => self.problem(b.line, "become: not a boolean"),
        }
    }

    fn role(&mut self, name: &str, line: usize, within: &Within) {
        let dir = self.base.join("roles").join(name);
        let tasks = dir.join("tasks/main.yml");
        if (self.read)(&tasks).is_none() {
            self.problem(line, format!("role `{name}`: {} not found (roles are inlined from roles/NAME/; see README: `include = \"roles/web\"`)", tasks.display()));
            return;
        }
        let outer = self.file.clone();
        let within = Within {
            role: Some(dir.clone()),
            ..within.clone()
        };
        let first = self.out.steps.len();
        if let Some(t) = self.load(&tasks) {
            self.file = tasks.clone();
            self.tasks(Some(&t), &within, false);
        }
        if let Some(s) = self.out.steps.get_mut(first) {
            s.comments
                .insert(0, format!("role: {name} (inlined from roles/{name}/)"));
        }
        let handlers = dir.join("handlers/main.yml");
        if (self.read)(&handlers).is_some()
            && let Some(h) = self.load(&handlers)
        {
            self.file = handlers.clone();
            self.tasks(Some(&h), &within, true);
        }
        for sub in ["vars/main.yml", "meta/main.yml"] {
            if (self.read)(&dir.join(sub)).is_some() {
                self.file = dir.join(sub);
                self.problem(1, format!("role `{name}`: {sub} not converted (put role vars in the inventory's `[vars]`; dependencies as steps)"));
            }
        }
        self.file = outer;
    }

    fn tasks(&mut self, list: Option<&Node>, within: &Within, handlers: bool) {
        let Some(list) = list else { return };
        let V::Seq(items) = &list.v else {
            self.problem(list.line, "a task list must be a list");
            return;
        };
        for t in items {
            if let Some(step) = self.task(t, within, handlers) {
                if handlers {
                    self.out.handlers.push(step);
                } else {
                    self.out.steps.push(step);
                }
            }
        }
    }

    fn task(&mut self, t: &Node, within: &Within, handler: bool) -> Option<Step> {
        let Some(keys) = t.map() else {
            self.problem(t.line, "a task is a mapping");
            return None;
        };
        let before = self.out.problems.len();
        let modules: Vec<&(String, Node)> = keys
            .iter()
            .filter(|(k, _)| !TASK_KEYS.contains(&k.as_str()))
            .collect();
        let mut step = Step {
            name: t.get("name").and_then(Node::text),
            hosts: within.hosts.clone(),
            ..Step::default()
        };
        if t.get("block").is_some() {
            self.problem(
                t.line,
                format!("block: not converted ({})", why_not("block")),
            );
            return None;
        }
        let (module, margs) = match modules.as_slice() {
            [(m, a)] => (m.as_str(), a),
            [] => {
                self.problem(t.line, "task without a module");
                return None;
            }
            [(m, a), rest @ ..] => {
                for (k, v) in rest {
                    self.problem(
                        v.line,
                        format!("task key `{k}`: unknown (a second module?)"),
                    );
                }
                (m.as_str(), a)
            }
        };
        let module = module
            .strip_prefix("ansible.builtin.")
            .or_else(|| module.strip_prefix("ansible.legacy."))
            .unwrap_or(module);
        // The loop first: its variable is a local of every expression in the task.
        let mut locals = Vec::new();
        let loop_node = t
            .get("loop")
            .or_else(|| t.get("with_items"))
            .or_else(|| t.get("with_list"));
        if let Some(l) = loop_node {
            let var = t
                .get("loop_control")
                .and_then(|c| c.get("loop_var"))
                .and_then(Node::text)
                .unwrap_or_else(|| "item".into());
            locals.push(var.clone());
            step.loop_ = match &l.v {
                V::Str(s) => self.jinja_str(s, l.line, &[]).map(toml::Value::String),
                _ => self.value(l, &[]),
            };
            if t.get("loop_control").is_some() && var != "item" {
                step.loop_var = Some(var);
            }
            if let Some(c) = t.get("loop_control").and_then(Node::map) {
                for (k, v) in c {
                    match k.as_str() {
                        "loop_var" => {}
                        "label" => {
                            step.loop_label =
                                v.text().and_then(|s| self.jinja_str(&s, v.line, &locals))
                        }
                        _ => self.problem(v.line, format!("loop_control `{k}`: not converted")),
                    }
                }
            }
            if t.get("with_items").is_some() {
                self.note(
                    l.line,
                    "with_items became loop: a list of lists is not flattened",
                );
            }
        }
        for (k, v) in keys {
            match k.as_str() {
                "name" | "loop" | "with_items" | "with_list" | "loop_control" | "args" => {}
                "when" => {
                    let conds: Vec<String> = match &v.v {
                        V::Seq(items) => items.iter().filter_map(Node::text).collect(),
                        _ => v.text().into_iter().collect(),
                    };
                    let mut out = Vec::new();
                    for c in &conds {
                        let c = c
                            .trim()
                            .trim_start_matches("{{")
                            .trim_end_matches("}}")
                            .trim();
                        match jinja::expr(
                            c,
                            &Scope {
                                vars: &self.vars,
                                locals: &locals,
                            },
                        ) {
                            Ok(e) => out.push(if conds.len() > 1 { format!("({e})") } else { e }),
                            Err(unknown) => self.unknown_vars(v.line, "when", &unknown),
                        }
                    }
                    step.when = Some(out.join(" and "));
                }
                "notify" => step.notify = v.strings().unwrap_or_default(),
                "tags" => {
                    let mut tags = within.tags.clone();
                    tags.extend(
                        v.strings()
                            .unwrap_or_default()
                            .iter()
                            .flat_map(|t| t.split(',').map(|s| s.trim().to_string())),
                    );
                    step.tags = tags;
                }
                "become" => self.become_note(v),
                "become_method" if v.text().as_deref() == Some("sudo") => {}
                "timeout" => step.timeout = v.text().and_then(|s| s.parse().ok()),
                "listen" if handler => self.problem(
                    v.line,
                    "listen: not converted (notify the handler by its name)",
                ),
                _ if TASK_KEYS.contains(&k.as_str()) => {
                    self.problem(v.line, format!("{k}: not converted ({})", why_not(k)))
                }
                _ => {}
            }
        }
        if step.tags.is_empty() {
            step.tags = within.tags.clone();
        }
        // Module arguments: a mapping (plus `args:`), or Ansible's free form.
        let mut args: Vec<(String, Node)> = Vec::new();
        let mut free: Option<String> = None;
        match &margs.v {
            V::Map(m) => args.extend(m.iter().cloned()),
            V::Str(s)
                if matches!(
                    module,
                    "command"
                        | "shell"
                        | "meta"
                        | "include_tasks"
                        | "import_tasks"
                        | "include_role"
                        | "import_role"
                        | "fail"
                        | "debug"
                ) =>
            {
                free = Some(s.clone())
            }
            V::Str(s) => match split_kv(s, margs.line) {
                Some(kv) => args.extend(kv),
                None => {
                    self.problem(
                        margs.line,
                        format!("`{module}` arguments `{s}`: not key=value pairs"),
                    );
                    return None;
                }
            },
            V::Null => {}
            _ => {
                self.problem(margs.line, format!("`{module}` arguments: not a mapping"));
                return None;
            }
        }
        if let Some(a) = t.get("args").and_then(Node::map) {
            args.extend(a.iter().cloned());
        }
        let mut a = Args {
            items: args,
            used: BTreeSet::new(),
        };
        self.module(
            module, &mut a, free, &mut step, &locals, within, handler, margs.line,
        );
        for (k, v) in &a.items {
            if !a.used.contains(k) {
                self.problem(v.line, format!("`{module}` option `{k}`: not converted"));
            }
        }
        if self.out.problems.len() > before {
            step.disabled = true;
            let reasons: Vec<String> = self.out.problems[before..]
                .iter()
                .map(|p| format!("not converted: {}:{}: {}", p.file.display(), p.line, p.what))
                .collect();
            step.comments.extend(reasons);
            if step.use_.is_empty() {
                step.use_ = module.to_string();
            }
        }
        Some(step)
    }

    fn unknown_vars(&mut self, line: usize, key: &str, unknown: &[String]) {
        let names: Vec<String> = unknown.iter().map(|u| format!("`{u}`")).collect();
        self.problem(
            line,
            format!(
                "{key}: {} not a var of the playbook or inventory (a fact, a registered result or an extra var?): not converted",
                names.join(", ")
            ),
        );
    }

    /// A string with `{{ }}` expressions rewritten; None (and a problem) when one reads an
    /// unknown name.
    fn jinja_str(&mut self, s: &str, line: usize, locals: &[String]) -> Option<String> {
        if !s.contains("{{") && !s.contains("{%") {
            return Some(s.to_string());
        }
        match jinja::template(
            s,
            &Scope {
                vars: &self.vars,
                locals,
            },
        ) {
            Ok(r) => Some(r),
            Err(unknown) => {
                self.unknown_vars(line, &format!("`{s}`"), &unknown);
                None
            }
        }
    }

    /// A YAML value as TOML, its strings' expressions rewritten.
    fn value(&mut self, n: &Node, locals: &[String]) -> Option<toml::Value> {
        Some(match &n.v {
            V::Str(s) => toml::Value::String(self.jinja_str(s, n.line, locals)?),
            V::Int(i) => toml::Value::Integer(*i),
            V::Float(f) => toml::Value::Float(*f),
            V::Bool(b) => toml::Value::Boolean(*b),
            V::Seq(items) => toml::Value::Array(
                items
                    .iter()
                    .map(|i| self.value(i, locals))
                    .collect::<Option<Vec<_>>>()?,
            ),
            V::Map(m) => {
                let mut t = toml::Table::new();
                for (k, v) in m {
                    t.insert(k.clone(), self.value(v, locals)?);
                }
                toml::Value::Table(t)
            }
            V::Null => return None,
            V::Unsupported(what) => {
                self.problem(n.line, format!("{what}: not converted"));
                return None;
            }
        })
    }

    /// A file a `template` or `copy` step reads: looked up as Ansible does (the role's
    /// `templates/` or `files/`, then the playbook's), copied into the output (templates with
    /// their expressions rewritten) under `dir/NAME`.
    fn asset(
        &mut self,
        src: &str,
        dir: &str,
        within: &Within,
        line: usize,
        locals: &[String],
    ) -> Option<String> {
        let mut candidates = Vec::new();
        if let Some(r) = &within.role {
            candidates.push(r.join(dir).join(src));
        }
        candidates.push(self.base.join(dir).join(src));
        candidates.push(self.base.join(src));
        let Some((path, content)) = candidates
            .iter()
            .find_map(|p| (self.read)(p).map(|c| (p.clone(), c)))
        else {
            self.problem(
                line,
                format!("`{src}` not found in {dir}/ (of the role or the playbook)"),
            );
            return None;
        };
        let name = Path::new(src).file_name()?.to_string_lossy().to_string();
        let dest = format!("{dir}/{name}");
        let content = if dir == "templates" {
            let text = String::from_utf8_lossy(&content).to_string();
            match jinja::template(
                &text,
                &Scope {
                    vars: &self.vars,
                    locals,
                },
            ) {
                Ok(t) => t.into_bytes(),
                Err(unknown) => {
                    let outer = std::mem::replace(&mut self.file, path.clone());
                    for u in unknown {
                        let at = text
                            .lines()
                            .position(|l| l.contains(&u))
                            .map_or(1, |i| i + 1);
                        self.problem(at, format!("template reads `{u}`, not a var of the playbook or inventory: not converted"));
                    }
                    self.file = outer;
                    return None;
                }
            }
        } else {
            content
        };
        match self.out.assets.iter().find(|a| a.dest == dest) {
            Some(a) if a.content != content => {
                self.problem(
                    line,
                    format!("two different files would be written as {dest}"),
                );
                return None;
            }
            Some(_) => {}
            None => self.out.assets.push(Asset {
                dest: dest.clone(),
                content,
            }),
        }
        Some(dest)
    }

    #[allow(clippy::too_many_arguments)]
    fn module(
        &mut self,
        module: &str,
        a: &mut Args,
        free: Option<String>,
        step: &mut Step,
        locals: &[String],
        within: &Within,
        handler: bool,
        line: usize,
    ) {
        let with = &mut step.with;
        macro_rules! put {
            ($key:expr, $names:expr) => {
                if let Some(n) = a.take($names) {
                    if let Some(v) = self.value(&n, locals) {
                        with.insert($key.to_string(), v);
                    }
                }
            };
        }
        macro_rules! put_bool {
            ($key:expr, $names:expr) => {
                if let Some(n) = a.take($names) {
                    match n.boolean() {
                        Some(b) => {
                            with.insert($key.to_string(), toml::Value::Boolean(b));
                        }
                        None => match self.value(&n, locals) {
                            Some(v) => {
                                with.insert($key.to_string(), v);
                            }
                            None => {}
                        },
                    }
                }
            };
        }
        macro_rules! put_mode {
            () => {
                if let Some(n) = a.take(&["mode"]) {
                    match mode(&n) {
                        Some(m) => {
                            with.insert("mode".into(), toml::Value::String(m));
                        }
                        None => {
                            self.problem(n.line, "mode: only octal modes (\"0644\") are converted")
                        }
                    }
                }
            };
        }
        let use_ = match module {
            "apt" | "package" => {
                if let Some(n) = a.take(&["name", "pkg", "package"]) {
                    let v = match &n.v {
                        V::Str(s) if !s.contains("{{") && s.contains(',') => {
                            Some(toml::Value::Array(
                                s.split(',')
                                    .map(|p| toml::Value::String(p.trim().into()))
                                    .collect(),
                            ))
                        }
                        _ => self.value(&n, locals),
                    };
                    if let Some(v) = v {
                        with.insert("packages".into(), v);
                    }
                }
                if let Some(n) = a.take(&["state"]) {
                    match n.text().as_deref() {
                        Some("present" | "installed") => {
                            with.insert("state".into(), "present".into());
                        }
                        Some("absent" | "removed") => {
                            with.insert("state".into(), "absent".into());
                        }
                        Some("latest") => {
                            with.insert("state".into(), "latest".into());
                        }
                        other => self.problem(
                            n.line,
                            format!("apt state `{}`: not converted", other.unwrap_or("?")),
                        ),
                    }
                }
                put_bool!("update_cache", &["update_cache", "update-cache"]);
                put!("cache_valid_time", &["cache_valid_time"]);
                put_bool!("install_recommends", &["install_recommends"]);
                put_bool!("purge", &["purge"]);
                "apt"
            }
            "copy" => {
                if let Some(n) = a.take(&["src"])
                    && let Some(src) = n
                        .text()
                        .and_then(|s| self.asset(&s, "files", within, n.line, locals))
                {
                    with.insert("src".into(), src.into());
                }
                put!("content", &["content"]);
                put!("dest", &["dest"]);
                put_mode!();
                put!("owner", &["owner"]);
                put!("group", &["group"]);
                "copy"
            }
            "template" => {
                if let Some(n) = a.take(&["src"])
                    && let Some(src) = n
                        .text()
                        .and_then(|s| self.asset(&s, "templates", within, n.line, locals))
                {
                    with.insert("src".into(), src.into());
                }
                put!("dest", &["dest"]);
                put_mode!();
                put!("owner", &["owner"]);
                put!("group", &["group"]);
                "template"
            }
            "lineinfile" => {
                put!("path", &["path", "dest", "name", "destfile"]);
                put!("line", &["line", "value"]);
                put!("regexp", &["regexp", "regex"]);
                put!("state", &["state"]);
                put_bool!("create", &["create"]);
                put_mode!();
                "line"
            }
            "file" => {
                let state = a.take(&["state"]).and_then(|n| n.text());
                if matches!(state.as_deref(), Some("link" | "hard")) {
                    put!("path", &["path", "dest", "name"]);
                    put!("target", &["src"]);
                    if state.as_deref() == Some("hard") {
                        with.insert("hard".into(), true.into());
                    }
                    put_bool!("force", &["force"]);
                    "link"
                } else {
                    put!("path", &["path", "dest", "name"]);
                    if let Some(s) = state {
                        with.insert("state".into(), s.into());
                    }
                    put_mode!();
                    put!("owner", &["owner"]);
                    put!("group", &["group"]);
                    put_bool!("recurse", &["recurse"]);
                    "file"
                }
            }
            "service" | "systemd" | "systemd_service" => {
                let name = a.take(&["name"]);
                let state = a.take(&["state"]).and_then(|n| n.text());
                let enabled = a.take(&["enabled"]);
                let reload = a
                    .take(&["daemon_reload", "daemon-reload"])
                    .and_then(|n| n.boolean())
                    .unwrap_or(false);
                let name_s = name
                    .as_ref()
                    .and_then(|n| n.text().and_then(|s| self.jinja_str(&s, n.line, locals)));
                match state.as_deref() {
                    // Not a state: what the handler (or task) does every time it runs.
                    Some(verb @ ("restarted" | "reloaded")) => {
                        let verb = if verb == "restarted" {
                            "restart"
                        } else {
                            "reload"
                        };
                        let mut cmds = Vec::new();
                        if reload {
                            cmds.push("systemctl daemon-reload".to_string());
                        }
                        if let Some(n) = name_s {
                            if enabled.as_ref().and_then(Node::boolean) == Some(true) {
                                cmds.push(format!("systemctl enable {n}"));
                            } else if let Some(e) = &enabled {
                                self.problem(
                                    e.line,
                                    "enabled: not converted with state restarted/reloaded",
                                );
                            }
                            cmds.push(format!("systemctl {verb} {n}"));
                        }
                        if !handler {
                            self.note(line, format!("state {verb}ed in a task: restarts on every run, as in Ansible; a handler is usually meant"));
                        }
                        with.insert("run".into(), cmds.join(" && ").into());
                        "command"
                    }
                    other => {
                        if let Some(n) = name_s {
                            with.insert("name".into(), n.into());
                        }
                        match other {
                            Some(s @ ("started" | "stopped")) => {
                                with.insert("state".into(), s.into());
                            }
                            None => {}
                            Some(s) => {
                                self.problem(line, format!("service state `{s}`: not converted"))
                            }
                        }
                        if let Some(e) = enabled {
                            match e.boolean() {
                                Some(b) => {
                                    with.insert("enabled".into(), b.into());
                                }
                                None => self.problem(e.line, "enabled: not a boolean"),
                            }
                        }
                        if reload {
                            self.problem(line, "daemon_reload with a state: not converted (a `command` step running `systemctl daemon-reload` before it)");
                        }
                        "service"
                    }
                }
            }
            "user" => {
                put!("name", &["name"]);
                put!("uid", &["uid"]);
                put!("group", &["group"]);
                if let Some(n) = a.take(&["groups"]) {
                    let v = match &n.v {
                        V::Str(s) if !s.contains("{{") => Some(toml::Value::Array(
                            s.split(',')
                                .filter(|g| !g.trim().is_empty())
                                .map(|g| toml::Value::String(g.trim().into()))
                                .collect(),
                        )),
                        _ => self.value(&n, locals),
                    };
                    if let Some(v) = v {
                        with.insert("groups".into(), v);
                    }
                }
                put!("shell", &["shell"]);
                put!("home", &["home"]);
                put_bool!("system", &["system"]);
                put_bool!("create_home", &["create_home", "createhome"]);
                put!("state", &["state"]);
                put_bool!("remove_home", &["remove"]);
                "user"
            }
            "command" | "shell" => {
                let mut cmd = free.clone();
                let mut extra = Vec::new();
                if let Some(f) = &free {
                    // Ansible takes these out of the free form.
                    let mut words = Vec::new();
                    for w in f.split(' ') {
                        match w.split_once('=') {
                            Some((
                                k @ ("creates" | "removes" | "chdir" | "executable" | "warn"),
                                v,
                            )) => extra.push((
                                k.to_string(),
                                Node {
                                    line,
                                    v: V::Str(v.to_string()),
                                },
                            )),
                            _ => words.push(w),
                        }
                    }
                    cmd = Some(words.join(" "));
                }
                a.items.extend(extra);
                if let Some(c) = a.take(&["cmd", "_raw_params"]) {
                    cmd = c.text();
                }
                if a.take(&["argv"]).is_some() {
                    self.problem(
                        line,
                        "argv: not converted (write the command as one string)",
                    );
                }
                let chdir = a.take(&["chdir"]).and_then(|n| n.text());
                a.take(&["warn"]);
                if let Some(c) = cmd {
                    let c = match chdir {
                        Some(d) => format!("cd {d} && {c}"),
                        None => c,
                    };
                    if let Some(c) = self.jinja_str(c.trim(), line, locals) {
                        with.insert("run".into(), c.into());
                    }
                }
                put!("creates", &["creates"]);
                "command"
            }
            "wait_for" => {
                put!("port", &["port"]);
                put!("host", &["host"]);
                put!("path", &["path"]);
                put!("timeout", &["timeout"]);
                if let Some(n) = a.take(&["state"]) {
                    match n.text().as_deref() {
                        Some("started" | "present") => {
                            with.insert("state".into(), "present".into());
                        }
                        Some("stopped" | "absent") => {
                            with.insert("state".into(), "absent".into());
                        }
                        other => self.problem(
                            n.line,
                            format!("wait_for state `{}`: not converted", other.unwrap_or("?")),
                        ),
                    }
                }
                "wait_for"
            }
            "assert" => {
                if let Some(n) = a.take(&["that"]) {
                    let mut that = Vec::new();
                    for c in n.strings().unwrap_or_default() {
                        match jinja::expr(
                            &c,
                            &Scope {
                                vars: &self.vars,
                                locals,
                            },
                        ) {
                            Ok(e) => that.push(toml::Value::String(e)),
                            Err(u) => self.unknown_vars(n.line, "that", &u),
                        }
                    }
                    with.insert("that".into(), toml::Value::Array(that));
                }
                put!("fail_msg", &["fail_msg", "msg"]);
                put!("success_msg", &["success_msg"]);
                a.take(&["quiet"]);
                "assert"
            }
            "fail" => {
                if let Some(f) = free {
                    match split_kv(&f, line).filter(|kv| kv.iter().all(|(k, _)| k == "msg")) {
                        Some(kv) => a.items.extend(kv),
                        None => self.problem(line, "fail: arguments not converted"),
                    }
                }
                put!("msg", &["msg"]);
                "fail"
            }
            "meta" if free.as_deref() == Some("flush_handlers") => "flush_handlers",
            "include_tasks" | "import_tasks" | "include_role" | "import_role" => {
                let what = free
                    .or_else(|| a.take(&["file", "name"]).and_then(|n| n.text()))
                    .unwrap_or_default();
                a.used.extend(a.items.iter().map(|(k, _)| k.clone()));
                self.problem(
                    line,
                    format!(
                        "{module} `{what}`: not converted (see README: `include = \"roles/web\"`)"
                    ),
                );
                "include"
            }
            other => {
                a.used.extend(a.items.iter().map(|(k, _)| k.clone()));
                let why = match other {
                    "debug" => {
                        "provision steps do not print; an `assert` or `fail` step checks a value"
                    }
                    "meta" => "only `meta: flush_handlers` has a provision form",
                    _ => "no provision step does this",
                };
                self.problem(line, format!("module `{other}`: not converted ({why})"));
                other
            }
        };
        step.use_ = use_.to_string();
    }
}

/// A module's arguments; what a converter takes is marked used, the rest is reported.
struct Args {
    items: Vec<(String, Node)>,
    used: BTreeSet<String>,
}

impl Args {
    fn take(&mut self, names: &[&str]) -> Option<Node> {
        let mut found = None;
        for (k, v) in &self.items {
            if names.contains(&k.as_str()) {
                self.used.insert(k.clone());
                if found.is_none() {
                    found = Some(v.clone());
                }
            }
        }
        found
    }
}

/// A mode as provision writes it: YAML's `0644` (an integer to YAML 1.2 and octal to Ansible's
/// YAML 1.1) and the string `"0644"` both become "0644"; symbolic modes are not converted.
fn mode(n: &Node) -> Option<String> {
    let digits = match &n.v {
        V::Int(i) => i.to_string(),
        V::Str(s) => s.trim_start_matches('0').to_string(),
        _ => return None,
    };
    (!digits.is_empty() && digits.len() <= 4 && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)))
        .then(|| format!("{digits:0>4}"))
}

/// The roles of a play: names (or `role:`/`name:` in a mapping) with their lines.
fn roles(n: &Node) -> Vec<(String, usize)> {
    match &n.v {
        V::Seq(items) => items
            .iter()
            .filter_map(|r| {
                r.text()
                    .or_else(|| r.get("role").or_else(|| r.get("name")).and_then(Node::text))
                    .map(|s| (s, r.line))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Ansible's `k=v k2='v 2'` free form; None when a word is not `k=v`.
pub fn split_kv(s: &str, line: usize) -> Option<Vec<(String, Node)>> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut words = Vec::new();
    // Inside `{{ }}` spaces do not split (Ansible's parser keeps Jinja whole).
    let mut depth = 0usize;
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if quote.is_none() && c == '{' && chars.get(i + 1) == Some(&'{') {
            depth += 1;
        }
        if quote.is_none() && c == '}' && i > 0 && chars[i - 1] == '}' {
            depth = depth.saturating_sub(1);
        }
        match (quote, c) {
            (None, '\'' | '"') if depth == 0 => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() && depth == 0 => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    for w in words {
        let (k, v) = w.split_once('=')?;
        let v = match v {
            "yes" | "true" | "True" => V::Bool(true),
            "no" | "false" | "False" => V::Bool(false),
            _ => V::Str(v.to_string()),
        };
        out.push((k.to_string(), Node { line, v }));
    }
    Some(out)
}
