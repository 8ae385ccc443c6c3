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
    pub register: Option<String>,
    pub retries: Option<i64>,
    pub delay: Option<i64>,
    pub until: Option<String>,
    pub run_once: bool,
    /// `on`: from `delegate_to`, the host the step runs on for each of its hosts.
    pub on: Option<String>,
    pub ignore_errors: bool,
    pub failed_when: Option<String>,
    pub changed_when: Option<String>,
    pub with: toml::Table,
    /// An include entry (`include = "roles/web"`): its path, relative to the file it is in.
    pub include: Option<String>,
    /// An include entry's `vars`.
    pub vars: toml::Table,
    /// Something in it could not be converted: written commented out.
    pub disabled: bool,
}

/// One TOML file of steps and handlers: the playbook, a role's `steps.toml` or
/// `handlers.toml`, a converted task file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutFile {
    /// Relative to the output directory, `/`-separated.
    pub path: String,
    /// The YAML it was converted from, as the header names it.
    pub source: String,
    /// Top-level keys (`serial`, `max_fail_percentage`), in order.
    pub top: Vec<(String, toml::Value)>,
    pub steps: Vec<Step>,
    pub handlers: Vec<Step>,
}

/// A role's `defaults.toml`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoleDefaults {
    pub path: String,
    pub source: String,
    pub vars: toml::Table,
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
    /// The playbook (first), then each role's and task file's TOML, in the order converted.
    pub files: Vec<OutFile>,
    pub role_defaults: Vec<RoleDefaults>,
    /// Play vars, for the inventory's `[vars]` (over its `all` vars, as in Ansible).
    pub vars: toml::Table,
    /// Every role's defaults (the first role's value of a name): those that steps outside the
    /// roles read go to `[vars]` too, under the inventory's `all` vars, since Ansible shows a
    /// role's defaults to the whole play and provision only to the role's own steps.
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
    "serial",
    "max_fail_percentage",
    "strategy",
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
        "local_action" | "connection" => {
            "provision runs steps on the hosts of the inventory, never on the controller"
        }
        // A task's converts to `on` (`Converter::delegate_to`); an include's or a role's does not.
        "delegate_to" => "an include takes no `on`: write it on the steps it includes",
        "delegate_facts" => "provision keeps no facts between steps",
        "become_user" => "provision runs as the SSH user, with sudo for root only",
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
    /// Names an earlier task registers: a `when` or `until` reads them bare, as provision does.
    registered: Vec<String>,
    /// The index in `out.files` that tasks are added to.
    cur: usize,
    /// Output files being converted (a cycle of includes is named, not followed).
    busy: Vec<String>,
    /// Indices of problems found inside an included file: they disable the steps of that file,
    /// not the include entry.
    inner: Vec<std::ops::Range<usize>>,
}

/// What a task is converted within: the play's hosts and tags, a role's directory.
#[derive(Clone, Default)]
struct Within {
    hosts: Option<String>,
    tags: Vec<String>,
    role: Option<PathBuf>,
    /// Where the role's files go in the output (`roles/NAME/`); empty for the playbook's.
    out_dir: String,
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
            registered: Vec::new(),
            cur: 0,
            busy: Vec::new(),
            inner: Vec::new(),
        }
    }

    /// Runs `f` with tasks going to a new output file `path`; false (and nothing run) when that
    /// file is converted already or is being converted (an include cycle, named at `line`).
    fn in_file(
        &mut self,
        path: &str,
        source: &Path,
        line: usize,
        f: impl FnOnce(&mut Self),
    ) -> bool {
        if self.busy.iter().any(|b| b == path) {
            let chain = [self.busy.as_slice(), &[path.to_string()]]
                .concat()
                .join(" -> ");
            self.problem(line, format!("include cycle: {chain}: not converted"));
            return false;
        }
        if self.out.files.iter().any(|f| f.path == path) {
            return false;
        }
        let source = source
            .strip_prefix(&self.base)
            .unwrap_or(source)
            .display()
            .to_string();
        self.out.files.push(OutFile {
            path: path.to_string(),
            source,
            ..OutFile::default()
        });
        let (outer, outer_file) = (self.cur, self.file.clone());
        self.cur = self.out.files.len() - 1;
        self.busy.push(path.to_string());
        let first = self.out.problems.len();
        f(self);
        self.inner.push(first..self.out.problems.len());
        self.busy.pop();
        self.cur = outer;
        self.file = outer_file;
        true
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
        self.out.files.push(OutFile {
            path: "playbook.toml".into(),
            source: path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            ..OutFile::default()
        });
        self.busy.push("playbook.toml".into());
        let V::Seq(plays) = &doc.v else {
            self.problem(doc.line, "a playbook is a list of plays");
            return self.out;
        };
        // First every var a play or role defines, so expressions anywhere can read them.
        for play in plays {
            self.collect_vars(play);
        }
        for key in ["serial", "max_fail_percentage"] {
            self.rollout(plays, key);
        }
        self.strategy(plays);
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
                self.add_var(k, v);
            }
        }
        // Only the names of role defaults and params here: their values go to the role's
        // defaults.toml and the include's `vars` when the role is converted.
        for role in play.get("roles").map(roles).unwrap_or_default() {
            let path = self
                .base
                .join("roles")
                .join(&role.0)
                .join("defaults/main.yml");
            if (self.read)(&path).is_some()
                && let Some(d) = self.load(&path)
            {
                for (k, _) in d.map().unwrap_or(&[]) {
                    self.vars.insert(k.clone());
                }
            }
        }
        if let Some(V::Seq(entries)) = play.get("roles").map(|r| &r.v) {
            for e in entries {
                for (k, v) in e.map().unwrap_or(&[]) {
                    match k.as_str() {
                        "vars" => self
                            .vars
                            .extend(v.map().unwrap_or(&[]).iter().map(|(k, _)| k.clone())),
                        k if !ROLE_ENTRY_KEYS.contains(&k) => {
                            self.vars.insert(k.to_string());
                        }
                        _ => {}
                    }
                }
            }
        }
        self.file = file;
    }

    /// A play var for `[vars]`: the first definition wins, a conflicting one is named.
    fn add_var(&mut self, k: &str, v: &Node) {
        self.vars.insert(k.to_string());
        let old = self.out.vars.get(k).cloned();
        match self.value(v, &[]) {
            Some(val) => match old {
                Some(old) if old != val => self.problem(
                    v.line,
                    format!("var `{k}` is defined twice with different values: provision has one `[vars]`"),
                ),
                _ => {
                    self.out.vars.insert(k.to_string(), val);
                }
            },
            None => self.problem(v.line, format!("var `{k}`: its value cannot be written in TOML")),
        }
    }

    /// A play's `serial` or `max_fail_percentage` as the playbook's top-level key: provision
    /// has one per playbook file (or per step), so plays that disagree are not converted.
    fn rollout(&mut self, plays: &[Node], key: &str) {
        let set: Vec<&Node> = plays.iter().filter_map(|p| p.get(key)).collect();
        let Some(first) = set.first() else { return };
        let values: Vec<Option<toml::Value>> = set.iter().map(|n| rollout_value(key, n)).collect();
        let mut ok = true;
        for (n, v) in set.iter().zip(&values) {
            if v.is_none() {
                ok = false;
                let what = if key == "serial" {
                    "a positive number of hosts, a percentage (\"25%\") or a list of them"
                } else {
                    "a percentage from 0 to 100"
                };
                self.problem(
                    n.line,
                    format!(
                        "play key `{key}`: not converted (provision takes {what}, not a template)"
                    ),
                );
            }
        }
        if !ok {
            return;
        }
        if set.len() != plays.len() || values.iter().any(|v| v != &values[0]) {
            for n in &set {
                self.problem(n.line, format!("play key `{key}`: not converted (plays differ, and provision has one `{key}` per playbook: set it per step)"));
            }
            return;
        }
        if key == "serial" {
            self.note(first.line, "serial: each step rolls out in these batches; unlike Ansible, a batch runs one step, not the whole play (README: `serial`)");
        }
        let v = values[0].clone().expect("checked above");
        self.out.files[0].top.push((key.to_string(), v));
    }

    /// The plays' `strategy`: `free` in every play becomes `strategy = "pipelined"` (a step
    /// waits for the earlier steps on its hosts, where Ansible's `free` waits for nothing);
    /// `linear` is provision's default too. Plays that differ, and other strategies, are named.
    fn strategy(&mut self, plays: &[Node]) {
        let set: Vec<&Node> = plays.iter().filter_map(|p| p.get("strategy")).collect();
        let names: Vec<Option<String>> = set.iter().map(|n| n.text()).collect();
        let mut ok = true;
        for (n, name) in set.iter().zip(&names) {
            if !matches!(name.as_deref(), Some("free" | "linear")) {
                ok = false;
                self.problem(n.line, "play key `strategy`: not converted (provision has `linear`, the default, and `pipelined`, for Ansible's `free`)");
            }
        }
        let free = names
            .iter()
            .filter(|n| n.as_deref() == Some("free"))
            .count();
        if !ok || free == 0 {
            return;
        }
        if free != plays.len() {
            for n in &set {
                self.problem(n.line, "play key `strategy`: not converted (plays differ, and provision has one `strategy` per playbook)");
            }
            return;
        }
        self.note(set[0].line, "strategy: free became strategy = \"pipelined\": a step waits for the earlier steps on its hosts; declare what it needs of other hosts' steps with `after` (README: `strategy`)");
        self.out.files[0]
            .top
            .push(("strategy".into(), toml::Value::String("pipelined".into())));
    }

    fn play(&mut self, play: &Node) {
        let Some(keys) = play.map() else {
            self.problem(play.line, "a play is a mapping");
            return;
        };
        for (k, v) in keys {
            if !PLAY_KEYS.contains(&k.as_str()) {
                let why = match k.as_str() {
                    "vars_files" | "vars_prompt" => "put these vars in the inventory's `[vars]`",
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
            ..Within::default()
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
        let first = self.out.files[self.cur].steps.len();
        self.tasks(play.get("pre_tasks"), &within, false);
        if let Some(V::Seq(entries)) = play.get("roles").map(|r| &r.v) {
            for e in entries {
                let before = self.out.problems.len();
                if let Some(step) = self.role_entry(e, &within) {
                    let step = self.disable_if_problems(step, before, "include");
                    self.out.files[self.cur].steps.push(step);
                }
            }
        }
        for key in ["tasks", "post_tasks"] {
            self.tasks(play.get(key), &within, false);
        }
        within.role = None;
        self.tasks(play.get("handlers"), &within, true);
        if let (Some(n), Some(s)) = (play_name, self.out.files[self.cur].steps.get_mut(first)) {
            s.comments.insert(0, format!("play: {n}"));
        }
    }

    /// A `roles:` entry (a name, or a mapping with `role`, `when`, `tags`, `vars` and role
    /// params) as an include of the converted role.
    fn role_entry(&mut self, e: &Node, within: &Within) -> Option<Step> {
        let Some((name, line)) = roles_of(std::slice::from_ref(e)).pop() else {
            self.problem(e.line, "a role entry names no role");
            return None;
        };
        let mut step = Step {
            hosts: within.hosts.clone(),
            tags: within.tags.clone(),
            ..Step::default()
        };
        for (k, v) in e.map().unwrap_or(&[]) {
            match k.as_str() {
                "role" | "name" => {}
                "when" => step.when = self.when(v, &[]),
                "tags" => step.tags.extend(tag_list(v)),
                "become" => self.become_note(v),
                "vars" => {
                    for (k, v) in v.map().unwrap_or(&[]) {
                        self.include_var(&mut step, k, v);
                    }
                }
                k if ROLE_ENTRY_KEYS.contains(&k) => self.problem(
                    v.line,
                    format!("role key `{k}`: not converted ({})", why_not(k)),
                ),
                // Anything else is a role param: a var of the role's tasks.
                k => self.include_var(&mut step, k, v),
            }
        }
        let path = self.role(&name, line)?;
        step.include = Some(path);
        Some(step)
    }

    /// An include's var: a plain value (provision's include `vars` are not templates).
    fn include_var(&mut self, step: &mut Step, k: &str, v: &Node) {
        self.vars.insert(k.to_string());
        let plain = match &v.v {
            V::Str(s) => !s.contains("{{") && !s.contains("{%"),
            _ => true,
        };
        match self.value(v, &[]) {
            Some(val) if plain => {
                step.vars.insert(k.to_string(), val);
            }
            Some(_) => self.problem(v.line, format!("var `{k}` of an include: a template: not converted (provision's include `vars` are plain values)")),
            None => self.problem(v.line, format!("var `{k}`: its value cannot be written in TOML")),
        }
    }

    /// A task's `when` (a condition or a list of them, AND-ed) rewritten; registered names stay
    /// bare.
    fn when(&mut self, v: &Node, locals: &[String]) -> Option<String> {
        let conds: Vec<String> = match &v.v {
            V::Seq(items) => items.iter().filter_map(Node::text).collect(),
            _ => v.text().into_iter().collect(),
        };
        let mut locals = locals.to_vec();
        locals.extend(self.registered.iter().cloned());
        let mut out = Vec::new();
        for c in &conds {
            let c = c
                .trim()
                .trim_start_matches("{{")
                .trim_end_matches("}}")
                .trim();
            let c = jinja::result_tests(c, &self.registered);
            match jinja::expr(
                &c,
                &Scope {
                    vars: &self.vars,
                    locals: &locals,
                },
            ) {
                Ok(e) => out.push(if conds.len() > 1 { format!("({e})") } else { e }),
                Err(unknown) => self.unknown_vars(v.line, "when", &unknown),
            }
        }
        Some(out.join(" and "))
    }

    /// Marks a step with problems since `before` as not converted, with the reasons above it.
    fn disable_if_problems(&mut self, mut step: Step, before: usize, use_: &str) -> Step {
        let own: Vec<&Problem> = (before..self.out.problems.len())
            .filter(|i| !self.inner.iter().any(|r| r.contains(i)))
            .map(|i| &self.out.problems[i])
            .collect();
        if !own.is_empty() {
            step.disabled = true;
            let reasons: Vec<String> = own
                .iter()
                .map(|p| format!("not converted: {}:{}: {}", p.file.display(), p.line, p.what))
                .collect();
            step.comments.extend(reasons);
            if step.use_.is_empty() && step.include.is_none() {
                step.use_ = use_.to_string();
            }
        }
        step
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

    /// Converts the role `name` (once, however often it is included) to `roles/NAME/`: its
    /// tasks to steps.toml, handlers to handlers.toml, defaults to defaults.toml, its templates
    /// and files beside them. Returns its path relative to the file being converted.
    fn role(&mut self, name: &str, line: usize) -> Option<String> {
        if name.contains("{{") || name.contains('/') || name.starts_with('.') {
            self.problem(line, format!("role `{name}`: not converted (a role is a directory under roles/, named as written)"));
            return None;
        }
        let dir = self.base.join("roles").join(name);
        let tasks = dir.join("tasks/main.yml");
        if (self.read)(&tasks).is_none() {
            self.problem(
                line,
                format!("role `{name}`: {} not found", tasks.display()),
            );
            return None;
        }
        let out_dir = format!("roles/{name}");
        let from = self.out.files[self.cur].path.clone();
        let role_within = Within {
            role: Some(dir.clone()),
            out_dir: out_dir.clone(),
            ..Within::default()
        };
        let defaults = dir.join("defaults/main.yml");
        if !self
            .out
            .files
            .iter()
            .any(|f| f.path.starts_with(&format!("{out_dir}/")))
            && (self.read)(&defaults).is_some()
            && let Some(d) = self.load(&defaults)
        {
            let outer = std::mem::replace(&mut self.file, defaults.clone());
            let mut vars = toml::Table::new();
            for (k, v) in d.map().unwrap_or(&[]) {
                self.vars.insert(k.clone());
                match self.value(v, &[]) {
                    Some(val) => {
                        self.out
                            .defaults
                            .entry(k.clone())
                            .or_insert_with(|| val.clone());
                        vars.insert(k.clone(), val);
                    }
                    None => self.problem(
                        v.line,
                        format!("var `{k}`: its value cannot be written in TOML"),
                    ),
                }
            }
            self.file = outer;
            self.out.role_defaults.push(RoleDefaults {
                path: format!("{out_dir}/defaults.toml"),
                source: format!("roles/{name}/defaults/main.yml"),
                vars,
            });
        }
        let converted = self.in_file(&format!("{out_dir}/steps.toml"), &tasks, line, |c| {
            if let Some(t) = c.load(&tasks) {
                c.file = tasks.clone();
                c.tasks(Some(&t), &role_within, false);
            }
        });
        if converted {
            let handlers = dir.join("handlers/main.yml");
            if (self.read)(&handlers).is_some() {
                self.in_file(&format!("{out_dir}/handlers.toml"), &handlers, line, |c| {
                    if let Some(h) = c.load(&handlers) {
                        c.file = handlers.clone();
                        c.tasks(Some(&h), &role_within, true);
                    }
                });
            }
            let outer = self.file.clone();
            for sub in ["vars/main.yml", "meta/main.yml"] {
                if (self.read)(&dir.join(sub)).is_some() {
                    self.file = dir.join(sub);
                    self.problem(1, format!("role `{name}`: {sub} not converted (put role vars in the include's `vars` or the inventory's `[vars]`; dependencies as include steps)"));
                }
            }
            self.file = outer;
        }
        Some(relative(&from, &out_dir))
    }

    fn tasks(&mut self, list: Option<&Node>, within: &Within, handlers: bool) {
        let Some(list) = list else { return };
        let V::Seq(items) = &list.v else {
            self.problem(list.line, "a task list must be a list");
            return;
        };
        for t in items {
            if let Some(step) = self.task(t, within, handlers) {
                let file = &mut self.out.files[self.cur];
                if handlers {
                    file.handlers.push(step);
                } else {
                    file.steps.push(step);
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
        // `local_action: MODULE ARGS` holds the module: the task has no other.
        if let Some(l) = t.get("local_action") {
            self.problem(
                l.line,
                format!("local_action: not converted ({})", why_not("local_action")),
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
            .or_else(|| module.strip_prefix("ansible.posix."))
            .unwrap_or(module);
        if !handler
            && matches!(
                module,
                "include_tasks" | "import_tasks" | "include_role" | "import_role"
            )
        {
            let step = self.include_task(t, module, margs, within)?;
            return Some(self.disable_if_problems(step, before, "include"));
        }
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
                "when" => step.when = self.when(v, &locals),
                "notify" => step.notify = v.strings().unwrap_or_default(),
                "tags" => {
                    let mut tags = within.tags.clone();
                    tags.extend(tag_list(v));
                    step.tags = tags;
                }
                "register" => step.register = self.register(v),
                "retries" | "delay" => {
                    let n = match &v.v {
                        V::Int(i) => Some(*i),
                        V::Str(s) => s.trim().parse().ok(),
                        _ => None,
                    };
                    match n {
                        Some(n) if k == "retries" && n > 0 => step.retries = Some(n),
                        Some(n) if k == "delay" && n >= 0 => step.delay = Some(n),
                        _ => self.problem(v.line, format!("{k}: not converted (provision takes a {} number of seconds/attempts, not a template)", if k == "retries" { "positive" } else { "non-negative" })),
                    }
                }
                "until" | "failed_when" | "changed_when" => {}
                "ignore_errors" => match v.boolean() {
                    Some(b) => step.ignore_errors = b,
                    None => self.problem(
                        v.line,
                        "ignore_errors: not converted (provision takes true or false, not a template)",
                    ),
                },
                "run_once" => match v.boolean() {
                    Some(b) => step.run_once = b,
                    None => self.problem(
                        v.line,
                        "run_once: not converted (provision takes true or false, not a template)",
                    ),
                },
                "delegate_to" => step.on = self.delegate_to(v, &locals),
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
        if let Some(u) = t.get("until") {
            // Over the step's own result too, by its register name.
            let mut own = locals.clone();
            own.extend(step.register.iter().cloned());
            let mut reg = self.registered.clone();
            reg.extend(step.register.iter().cloned());
            let saved = std::mem::replace(&mut self.registered, reg);
            step.until = self.when(u, &own);
            self.registered = saved;
            // Ansible's `until` without `retries` makes 3 attempts in all.
            if step.retries.is_none() {
                step.retries = Some(2);
                self.note(
                    u.line,
                    "until without retries: retries = 2 (Ansible's default of 3 attempts in all)",
                );
            }
        }
        // Over the step's own result, by its register name, as `until`.
        for key in ["failed_when", "changed_when"] {
            let Some(c) = t.get(key) else { continue };
            let cond = match c.boolean() {
                Some(b) => Some(b.to_string()),
                None => {
                    let mut own = locals.clone();
                    own.extend(step.register.iter().cloned());
                    let mut reg = self.registered.clone();
                    reg.extend(step.register.iter().cloned());
                    let saved = std::mem::replace(&mut self.registered, reg);
                    let e = self.when(c, &own);
                    self.registered = saved;
                    e
                }
            };
            if key == "failed_when" {
                step.failed_when = cond;
            } else {
                step.changed_when = cond;
            }
        }
        if step.run_once && step.register.is_some() {
            self.problem(t.get("run_once").map_or(t.line, |n| n.line), "run_once with register: not converted (Ansible gives every host the one result; provision registers it on the host that ran the step only)");
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
        // Only a command's result (rc, stdout, stderr) is there for the expressions to read.
        if step.use_ != "command" {
            for key in ["failed_when", "changed_when"] {
                if let Some(c) = t.get(key) {
                    self.problem(c.line, format!("{key} on `{module}`: not converted (provision's `{}` decides failure and change from the host's state; only `command` steps take {key})", step.use_));
                }
            }
        }
        let step = self.disable_if_problems(step, before, module);
        if let Some(r) = &step.register
            && !step.disabled
            && !self.registered.contains(r)
        {
            self.registered.push(r.clone());
        }
        Some(step)
    }

    /// `include_tasks`/`import_tasks` of a file (converted to the TOML file beside where it
    /// goes) or `include_role`/`import_role` (the role converted as for `roles:`), as an
    /// include entry with the task's `when`, `tags` and `vars`.
    fn include_task(
        &mut self,
        t: &Node,
        module: &str,
        margs: &Node,
        within: &Within,
    ) -> Option<Step> {
        let mut step = Step {
            hosts: within.hosts.clone(),
            tags: within.tags.clone(),
            ..Step::default()
        };
        if let Some(n) = t.get("name").and_then(Node::text) {
            step.comments.push(format!("{module}: {n}"));
        }
        let role = module.ends_with("_role");
        let mut target = None;
        match &margs.v {
            V::Str(s) => target = Some(s.trim().to_string()),
            V::Map(m) => {
                for (k, v) in m {
                    match k.as_str() {
                        "file" if !role => target = v.text(),
                        "name" if role => target = v.text(),
                        _ => {
                            self.problem(v.line, format!("`{module}` option `{k}`: not converted"))
                        }
                    }
                }
            }
            _ => {}
        }
        for (k, v) in t.map().unwrap_or(&[]) {
            if !TASK_KEYS.contains(&k.as_str()) {
                continue;
            }
            match k.as_str() {
                "name" => {}
                "when" => step.when = self.when(v, &[]),
                "tags" => step.tags.extend(tag_list(v)),
                "become" => self.become_note(v),
                "become_method" if v.text().as_deref() == Some("sudo") => {}
                "vars" => {
                    for (k, v) in v.map().unwrap_or(&[]) {
                        self.include_var(&mut step, k, v);
                    }
                }
                "loop" | "with_items" | "with_list" | "loop_control" => self.problem(
                    v.line,
                    format!("{k} on `{module}`: not converted (provision's include has no loop: include a file whose step loops)"),
                ),
                _ => self.problem(v.line, format!("{k} on `{module}`: not converted ({})", why_not(k))),
            }
        }
        let Some(target) = target.filter(|t| !t.is_empty() && !t.contains("{{")) else {
            self.problem(margs.line, format!("`{module}`: not converted (it names no file or role, or names it with a template)"));
            return None;
        };
        let path = if role {
            self.role(&target, margs.line)?
        } else {
            self.tasks_file(&target, margs.line, within)?
        };
        step.include = Some(path);
        Some(step)
    }

    /// A task file that `include_tasks`/`import_tasks` names, converted to the TOML file at the
    /// same place (`tasks/extra.yml` to `tasks/extra.toml`; in a role, relative to its
    /// `tasks/`). Looked up beside the including file, then in the role's `tasks/` or the
    /// playbook's directory. Returns its path relative to the including file's output.
    fn tasks_file(&mut self, target: &str, line: usize, within: &Within) -> Option<String> {
        let rel = Path::new(target);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            self.problem(line, format!("include_tasks `{target}`: not converted (only a relative path without `..` is converted)"));
            return None;
        }
        let root = match &within.role {
            Some(r) => r.join("tasks"),
            None => self.base.clone(),
        };
        let here = self
            .file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let Some(src) = [here.join(rel), root.join(rel)]
            .into_iter()
            .find(|p| (self.read)(p).is_some())
        else {
            self.problem(
                line,
                format!(
                    "include_tasks `{target}`: not found beside {} or in {}",
                    self.file.display(),
                    root.display()
                ),
            );
            return None;
        };
        let Ok(under) = src.strip_prefix(&root) else {
            self.problem(
                line,
                format!(
                    "include_tasks `{target}`: not converted ({} is outside {})",
                    src.display(),
                    root.display()
                ),
            );
            return None;
        };
        let mut out = under
            .with_extension("toml")
            .to_string_lossy()
            .replace('\\', "/");
        if !within.out_dir.is_empty() {
            out = format!("{}/{out}", within.out_dir);
        }
        if out == "playbook.toml" || out.starts_with("roles/") && within.out_dir.is_empty() {
            self.problem(line, format!("include_tasks `{target}`: not converted (its TOML would be written as {out}, which the converter writes for the playbook or a role)"));
            return None;
        }
        let from = self.out.files[self.cur].path.clone();
        let inner = Within {
            role: within.role.clone(),
            out_dir: within.out_dir.clone(),
            ..Within::default()
        };
        self.in_file(&out, &src, line, |c| {
            if let Some(t) = c.load(&src) {
                c.file = src.clone();
                c.tasks(Some(&t), &inner, false);
            }
        });
        Some(relative(&from, &out))
    }

    /// A task's `register`: a name provision accepts (on a loop, provision registers
    /// `results` as Ansible does).
    fn register(&mut self, v: &Node) -> Option<String> {
        let name = v.text().unwrap_or_default();
        let ident = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        // Names provision's templates read already, or `until` reads bare.
        const TAKEN: &[&str] = &[
            "vars",
            "host",
            "hosts",
            "cluster",
            "secrets",
            "item",
            "rc",
            "stdout",
            "stderr",
            "stdout_lines",
            "changed",
            "failed",
            "skipped",
            "true",
            "false",
            "none",
            "range",
            "dict",
            "namespace",
            "loop",
        ];
        if !ident || TAKEN.contains(&name.as_str()) {
            self.problem(v.line, format!("register `{name}`: not converted (provision takes a name of letters, digits and `_` that templates do not read already)"));
            return None;
        }
        Some(name)
    }

    fn unknown_vars(&mut self, line: usize, key: &str, unknown: &[String]) {
        if let Some(r) = unknown.iter().find(|u| self.registered.contains(u)) {
            self.problem(line, format!("{key}: reads the registered result `{r}`: not converted (provision's `when` and `until` read registered results; parameters and templates cannot)"));
            return;
        }
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
    /// `delegate_to: HOST` as `on`: a host name, or a template rewritten like the others. The
    /// controller (`localhost`) is no host provision runs steps on: not converted.
    fn delegate_to(&mut self, v: &Node, locals: &[String]) -> Option<String> {
        let Some(host) = v.text().filter(|h| !h.trim().is_empty()) else {
            self.problem(
                v.line,
                "delegate_to: not converted (a host name is expected)",
            );
            return None;
        };
        let host = host.trim();
        if matches!(host, "localhost" | "127.0.0.1" | "::1") {
            self.problem(
                v.line,
                format!(
                    "delegate_to: {host}: not converted ({})",
                    why_not("local_action")
                ),
            );
            return None;
        }
        self.jinja_str(host, v.line, locals)
    }

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
        // The step reads `dir/NAME` beside its own file; a role's go to the role's directory.
        let rel = format!("{dir}/{name}");
        let dest = if within.out_dir.is_empty() {
            rel.clone()
        } else {
            format!("{}/{rel}", within.out_dir)
        };
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
            None => self.out.assets.push(Asset { dest, content }),
        }
        Some(rel)
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
                match a.take(&["cache_valid_time"]) {
                    // A number of seconds (the free form gives it as text).
                    Some(n) => match n.text().and_then(|t| t.trim().parse::<i64>().ok()) {
                        Some(secs) if secs >= 0 => {
                            with.insert("cache_valid_time".into(), toml::Value::Integer(secs));
                        }
                        _ if n.text().is_some_and(|t| t.contains("{{")) => {
                            if let Some(v) = self.value(&n, locals) {
                                with.insert("cache_valid_time".into(), v);
                            }
                        }
                        _ => self.problem(
                            n.line,
                            format!(
                                "apt cache_valid_time `{}`: not converted (a number of seconds)",
                                n.text().unwrap_or_default()
                            ),
                        ),
                    },
                    // Ansible refreshes the lists at every such task; provision at most once
                    // per host and run, which `cache_valid_time = 0` asks for.
                    None if with.get("update_cache") == Some(&toml::Value::Boolean(true)) => {
                        with.insert("cache_valid_time".into(), toml::Value::Integer(0));
                    }
                    None => {}
                }
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
            "authorized_key" => {
                put!("user", &["user"]);
                put!("key", &["key"]);
                put!("path", &["path"]);
                if let Some(n) = a.take(&["state"]) {
                    match n.text().as_deref() {
                        Some(s @ ("present" | "absent")) => {
                            with.insert("state".into(), s.into());
                        }
                        other => self.problem(
                            n.line,
                            format!(
                                "authorized_key state `{}`: not converted",
                                other.unwrap_or("?")
                            ),
                        ),
                    }
                }
                put_bool!("exclusive", &["exclusive"]);
                put_bool!("manage_dir", &["manage_dir"]);
                "authorized_key"
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
                        "{module} `{what}` in handlers: not converted (provision's handlers are steps, not includes)"
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
        V::Seq(items) => roles_of(items),
        _ => Vec::new(),
    }
}

fn roles_of(items: &[Node]) -> Vec<(String, usize)> {
    items
        .iter()
        .filter_map(|r| {
            r.text()
                .or_else(|| r.get("role").or_else(|| r.get("name")).and_then(Node::text))
                .map(|s| (s, r.line))
        })
        .collect()
}

/// Keys of a `roles:` entry that are keywords, not role params.
const ROLE_ENTRY_KEYS: &[&str] = &[
    "role",
    "name",
    "when",
    "tags",
    "vars",
    "become",
    "become_user",
    "become_method",
    "delegate_to",
    "environment",
    "no_log",
    "ignore_errors",
    "connection",
    "any_errors_fatal",
    "check_mode",
    "diff",
    "debugger",
    "module_defaults",
    "collections",
    "run_once",
    "throttle",
    "timeout",
];

/// A `tags` value: a list or a comma-separated string.
fn tag_list(v: &Node) -> Vec<String> {
    v.strings()
        .unwrap_or_default()
        .iter()
        .flat_map(|t| t.split(',').map(|s| s.trim().to_string()))
        .collect()
}

/// A play's `serial` (a positive number, "N%" or a list of them) or `max_fail_percentage`
/// (0 to 100) as provision writes it; None when it is a template or out of range.
fn rollout_value(key: &str, n: &Node) -> Option<toml::Value> {
    let one = |n: &Node| -> Option<toml::Value> {
        let text = match &n.v {
            V::Int(i) => i.to_string(),
            V::Str(s) => s.trim().to_string(),
            _ => return None,
        };
        if key == "serial" {
            if let Some(p) = text.strip_suffix('%') {
                let p: f64 = p.trim().parse().ok()?;
                (p > 0.0 && p <= 100.0).then(|| toml::Value::String(text.clone()))
            } else {
                let i: i64 = text.parse().ok()?;
                (i > 0).then_some(toml::Value::Integer(i))
            }
        } else {
            let i: i64 = text.trim_end_matches('%').parse().ok()?;
            (0..=100).contains(&i).then_some(toml::Value::Integer(i))
        }
    };
    match &n.v {
        V::Seq(items) if key == "serial" && !items.is_empty() => Some(toml::Value::Array(
            items.iter().map(one).collect::<Option<Vec<_>>>()?,
        )),
        _ => one(n),
    }
}

/// `to` (relative to the output directory) as an include path in the file `from_file`.
fn relative(from_file: &str, to: &str) -> String {
    let from: Vec<&str> = from_file.split('/').collect();
    let from = &from[..from.len() - 1];
    let to: Vec<&str> = to.split('/').collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    parts.join("/")
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
