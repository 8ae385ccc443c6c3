//! `include` entries of `[[steps]]` (Ansible's `include_tasks`/`import_tasks` and `roles`): a
//! playbook file, a role directory or a built-in playbook whose steps are spliced in where the
//! entry stands, with the entry's `vars`, `when`, `tags` and `hosts` applied to each of them.
//!
//! Vars, weakest first (Ansible's order where it has one): a role's `defaults.toml` (the
//! nearest role's winning), then the inventory's (`[vars]`, group vars, host vars), then the
//! `vars` of the includes that brought the step in (the nearest include's winning).

use std::path::{Component, Path, PathBuf};

use toml::de::DeTable;

use super::{Entry, PlaybookFile, STEP_KEYS, SecretSpec, StepSpec, check_selector, parse_parts};
use super::{notify, tags};
use crate::diagnostic::{ConfigError, Diagnostic, Reporter, did_you_mean, to_table};
use crate::inventory::io_reason;
use crate::selector::Selector;

/// `include = "builtin:swarm"` names a playbook the `provision` binary embeds.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// Turns the NAME of `include = "builtin:NAME"` into the built-in playbook's file, or says
/// which names exist.
pub type Builtins<'a> = dyn Fn(&str) -> Result<PathBuf, String> + 'a;

pub(super) fn no_builtins(name: &str) -> Result<PathBuf, String> {
    Err(format!(
        "built-in playbooks are included by the provision command; `{BUILTIN_PREFIX}{name}` is not available here"
    ))
}

/// What the includes that brought a step in give it. Empty for a step of the playbook itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    /// `defaults.toml` of the roles the step is in, the nearest role's winning: weaker than
    /// every inventory var.
    pub defaults: toml::Table,
    /// `vars` of the includes that brought it in, the nearest include's winning: stronger than
    /// every inventory var.
    pub vars: toml::Table,
    /// Directories a relative `src` is looked up in, nearest first: the directory of the
    /// step's file (a role's directory), then each including file's.
    pub search: Vec<PathBuf>,
    /// The file `hosts_at` points into, when `hosts` comes from an include entry.
    pub hosts_file: Option<PathBuf>,
}

impl Scope {
    /// Where the step's relative paths resolve: the first search directory holding `src`
    /// (a template in a role's `templates/`, else beside an including file), else the step's
    /// own directory (`fallback` for a step of the playbook itself).
    pub fn base_dir(&self, src: Option<&str>, fallback: &Path) -> PathBuf {
        if let Some(src) = src.filter(|s| !Path::new(s).is_absolute())
            && let Some(dir) = self.search.iter().find(|d| d.join(src).exists())
        {
            return dir.clone();
        }
        self.search
            .first()
            .cloned()
            .unwrap_or_else(|| fallback.to_path_buf())
    }
}

/// One `include` entry, checked.
#[derive(Debug, Clone)]
pub(crate) struct IncludeSpec {
    /// As written: `roles/web`, `tasks/extra.toml`, `builtin:swarm`.
    pub target: String,
    /// Position of the `include` value: where problems with the target are shown.
    pub at: (usize, usize),
    pub vars: toml::Table,
    pub when: Option<String>,
    pub tags: Vec<String>,
    pub hosts: Option<(Selector, (usize, usize))>,
}

const INCLUDE_KEYS: &[&str] = &["include", "vars", "when", "tags", "hosts"];
const INCLUDE_HELP: &str = "include names a role directory (include = \"roles/web\") or a playbook file (include = \"tasks/extra.toml\"), relative to this file, or a built-in playbook (include = \"builtin:swarm\")";
const ROLE_HELP: &str = "a role directory holds steps.toml ([[steps]]), and optionally handlers.toml ([[handlers]]), defaults.toml (default vars), templates/ and files/";

/// A `[[steps]]` entry with an `include` key.
pub(super) fn check_include(r: &mut Reporter<'_>, t: &DeTable<'_>) -> Option<IncludeSpec> {
    let before = r.diagnostics.len();
    let target_v = t.get("include").expect("routed here by its include key");
    let target = r.nonempty_string(target_v, "`include`", "include = \"roles/web\"");
    let label = match target {
        Some(s) => format!("include `{s}`"),
        None => "an include".to_string(),
    };
    for key in t.keys() {
        let k: &str = key.get_ref().as_ref();
        if INCLUDE_KEYS.contains(&k) {
            continue;
        }
        let help = if STEP_KEYS.contains(&k) {
            format!(
                "an entry either includes steps (include, with {}) or is a step (use); set `{k}` on the included steps, or move it to a [[steps]] entry of its own",
                INCLUDE_KEYS[1..].join(", ")
            )
        } else {
            match did_you_mean(k, INCLUDE_KEYS) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("an include takes: {}", INCLUDE_KEYS.join(", ")),
            }
        };
        r.error(
            &key.span(),
            format!("unknown key `{k}` in {label}"),
            Some(help),
        );
    }
    let vars = match t.get("vars") {
        Some(v) => {
            let what = format!("`vars` in {label}");
            match r.table(v, &what, "vars = { site = \"blog\" }") {
                Some(table) => match table.get("host") {
                    Some(h) => {
                        r.error(
                            &h.span(),
                            format!("`host` in {what} is the host's facts (host.name, host.address, ...), not a var"),
                            Some("give the var another name".into()),
                        );
                        None
                    }
                    None => Some(to_table(table)),
                },
                None => None,
            }
        }
        None => Some(toml::Table::new()),
    };
    let when = match t.get("when") {
        Some(v) => r
            .nonempty_string(v, &format!("`when` in {label}"), "when = \"vars.use_web\"")
            .map(|s| Some(s.to_string())),
        None => Some(None),
    };
    let tags = match t.get("tags") {
        Some(v) => tags::check_tags(r, v, &label),
        None => Some(Vec::new()),
    };
    let hosts = match t.get("hosts") {
        Some(v) => check_selector(r, v, &label).map(|s| Some((s, r.pos(&v.span())))),
        None => Some(None),
    };
    if r.diagnostics.len() != before {
        return None;
    }
    Some(IncludeSpec {
        target: target?.to_string(),
        at: r.pos(&target_v.span()),
        vars: vars?,
        when: when?,
        tags: tags?,
        hosts: hosts?,
    })
}

/// Reads a playbook and everything it includes into one flat list of steps.
pub(crate) struct Loader<'a> {
    known: &'a [&'a str],
    builtins: &'a Builtins<'a>,
    /// The playbook's directory: a cycle's chain shows paths relative to it.
    root: PathBuf,
    diagnostics: Vec<Diagnostic>,
    handlers: Vec<StepSpec>,
    /// Files whose handlers are taken: a role included twice declares its handlers once.
    handler_files: Vec<PathBuf>,
    declared: Vec<String>,
    secrets: Vec<SecretSpec>,
}

/// A file or role on the way from the playbook to the file being read.
struct Link {
    /// Canonical path: what a cycle is detected by.
    key: PathBuf,
    shown: String,
    /// Where the steps of this link's file are (a role's directory).
    dir: PathBuf,
    defaults: toml::Table,
}

enum Target {
    File(PathBuf),
    Role(PathBuf),
}

impl<'a> Loader<'a> {
    pub fn new(path: &Path, known: &'a [&'a str], builtins: &'a Builtins<'a>) -> Self {
        Loader {
            known,
            builtins,
            root: normalize(path.parent().unwrap_or(Path::new(""))),
            diagnostics: Vec::new(),
            handlers: Vec::new(),
            handler_files: Vec::new(),
            declared: Vec::new(),
            secrets: Vec::new(),
        }
    }

    pub fn playbook(mut self, text: &str, path: &Path) -> Result<PlaybookFile, ConfigError> {
        let mut chain = vec![Link {
            key: canonical(path),
            shown: self.shown(path),
            dir: normalize(path.parent().unwrap_or(Path::new(""))),
            defaults: toml::Table::new(),
        }];
        let (parts, diagnostics) = parse_parts(text, path, self.known, true);
        self.diagnostics.extend(diagnostics);
        // The play's rollout is the top playbook's (an included file's own is not the play's).
        let rollout = parts.rollout.clone();
        // So is its strategy: an included file's steps run under the including playbook's.
        let strategy = parts.strategy.unwrap_or_default();
        let steps: Vec<StepSpec> = self
            .expand(parts, path, &mut chain)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let declared: Vec<&str> = self.declared.iter().map(String::as_str).collect();
        self.diagnostics
            .extend(notify::check_notified(&steps, &declared));
        self.diagnostics
            .extend(super::order::check_after_names(&steps));
        if self.diagnostics.iter().any(Diagnostic::is_error) {
            // Top to bottom in each file, the files in the order they were read.
            let mut files: Vec<PathBuf> = Vec::new();
            for d in &self.diagnostics {
                if !files.contains(&d.file) {
                    files.push(d.file.clone());
                }
            }
            let order = |d: &Diagnostic| files.iter().position(|f| *f == d.file);
            self.diagnostics
                .sort_by_key(|d| (order(d), d.line, d.column));
            return Err(ConfigError {
                diagnostics: self.diagnostics,
            });
        }
        Ok(PlaybookFile {
            path: path.to_path_buf(),
            steps,
            secrets: self.secrets,
            handlers: self.handlers,
            rollout,
            strategy,
        })
    }

    /// The steps of one file with its includes expanded, each with whether it sets `hosts`;
    /// its handlers and secrets join the playbook's.
    fn expand(
        &mut self,
        parts: super::Parts,
        file: &Path,
        chain: &mut Vec<Link>,
    ) -> Vec<(StepSpec, bool)> {
        // The playbook's own steps resolve files in its directory, as they always did.
        let scope = if chain.len() == 1 {
            Scope::default()
        } else {
            scope_of(chain)
        };
        for secret in parts.secrets {
            // The same file included twice declares its secrets once.
            if !self.secrets.iter().any(|s| s.name == secret.name) {
                self.secrets.push(secret);
            }
        }
        self.take_handlers(file, parts.handlers, parts.declared, &scope);
        let mut out = Vec::new();
        for entry in parts.entries {
            match entry {
                Entry::Step(mut s, hosts_set) => {
                    s.scope = scope.clone();
                    out.push((*s, hosts_set));
                }
                Entry::Include(inc) => out.extend(self.include(&inc, file, chain)),
            }
        }
        out
    }

    fn take_handlers(
        &mut self,
        file: &Path,
        handlers: Vec<StepSpec>,
        declared: Vec<String>,
        scope: &Scope,
    ) {
        let key = canonical(file);
        if self.handler_files.contains(&key) {
            return;
        }
        self.handler_files.push(key);
        for name in declared {
            if !self.declared.contains(&name) {
                self.declared.push(name);
            }
        }
        for mut h in handlers {
            if let Some(first) = self.handlers.iter().find(|x| x.name == h.name) {
                self.diagnostics.push(
                    Diagnostic::error(
                        &h.file,
                        (h.line, h.column),
                        format!(
                            "handler `{}` is declared twice (first at {}:{})",
                            h.name,
                            first.file.display(),
                            first.line
                        ),
                    )
                    .with_help(
                        "give each handler a name of its own, in every file the playbook includes; steps notify handlers by name",
                    ),
                );
                continue;
            }
            // Handlers are shared by every inclusion: they get their role's defaults, not the
            // vars of one include.
            h.scope = Scope {
                vars: toml::Table::new(),
                ..scope.clone()
            };
            self.handlers.push(h);
        }
    }

    /// The steps an include entry of `from` brings in, with the entry applied to them.
    fn include(
        &mut self,
        inc: &IncludeSpec,
        from: &Path,
        chain: &mut Vec<Link>,
    ) -> Vec<(StepSpec, bool)> {
        let Some(target) = self.resolve(inc, from) else {
            return Vec::new();
        };
        let (key, dir, steps_file) = match &target {
            Target::File(p) => (
                canonical(p),
                p.parent().unwrap_or(Path::new("")).to_path_buf(),
                p.clone(),
            ),
            Target::Role(d) => (canonical(d), d.clone(), d.join("steps.toml")),
        };
        let shown = match &target {
            _ if inc.target.starts_with(BUILTIN_PREFIX) => inc.target.clone(),
            Target::File(p) | Target::Role(p) => self.shown(p),
        };
        if chain.iter().any(|l| l.key == key) {
            let names: Vec<&str> = chain
                .iter()
                .map(|l| l.shown.as_str())
                .chain([shown.as_str()])
                .collect();
            self.diagnostics.push(
                Diagnostic::error(from, inc.at, format!("include cycle: {}", names.join(" -> ")))
                    .with_help("remove one of these includes: a file cannot include itself, directly or through the files it includes"),
            );
            return Vec::new();
        }
        let text = match std::fs::read_to_string(&steps_file) {
            Ok(t) => t,
            Err(e) => {
                self.diagnostics.push(
                    Diagnostic::error(
                        from,
                        inc.at,
                        format!("cannot read {}: {}", steps_file.display(), io_reason(&e)),
                    )
                    .with_help(INCLUDE_HELP),
                );
                return Vec::new();
            }
        };
        let defaults = match &target {
            Target::Role(d) => self.defaults(&d.join("defaults.toml")),
            Target::File(_) => toml::Table::new(),
        };
        chain.push(Link {
            key,
            shown,
            dir: dir.clone(),
            defaults,
        });
        let (parts, diagnostics) = parse_parts(&text, &steps_file, self.known, true);
        self.diagnostics.extend(diagnostics);
        if let Target::Role(d) = &target {
            let handlers_file = d.join("handlers.toml");
            if let Ok(text) = std::fs::read_to_string(&handlers_file) {
                let (parts, diagnostics) = parse_parts(&text, &handlers_file, self.known, false);
                self.diagnostics.extend(diagnostics);
                let scope = scope_of(chain);
                self.take_handlers(&handlers_file, parts.handlers, parts.declared, &scope);
                for secret in parts.secrets {
                    if !self.secrets.iter().any(|s| s.name == secret.name) {
                        self.secrets.push(secret);
                    }
                }
            }
        }
        let steps = self.expand(parts, &steps_file, chain);
        chain.pop();
        steps
            .into_iter()
            .map(|(s, hosts_set)| apply(inc, from, s, hosts_set))
            .collect()
    }

    /// The role directory or playbook file an include names; a problem is shown at the
    /// include's value in `from`.
    fn resolve(&mut self, inc: &IncludeSpec, from: &Path) -> Option<Target> {
        let target = inc.target.as_str();
        let mut error = |message: String, help: String| {
            self.diagnostics
                .push(Diagnostic::error(from, inc.at, message).with_help(help));
            None
        };
        if let Some(name) = target.strip_prefix(BUILTIN_PREFIX) {
            return match (self.builtins)(name) {
                Ok(path) => Some(Target::File(path)),
                Err(help) => error(format!("unknown built-in playbook `{target}`"), help),
            };
        }
        let path = normalize(&from.parent().unwrap_or(Path::new("")).join(target));
        let is_file = target.ends_with(".toml");
        if is_file && path.is_file() {
            return Some(Target::File(path));
        }
        if !is_file && path.is_dir() {
            if path.join("steps.toml").is_file() {
                return Some(Target::Role(path));
            }
            return error(
                format!(
                    "role directory `{target}` has no steps.toml ({})",
                    path.display()
                ),
                ROLE_HELP.into(),
            );
        }
        let what = if is_file {
            "no playbook file"
        } else {
            "no role directory"
        };
        let help = match near(&path, is_file) {
            Some(name) => {
                let prefix = target.rsplit_once('/').map(|(p, _)| format!("{p}/"));
                format!("did you mean `{}{name}`?", prefix.unwrap_or_default())
            }
            None => INCLUDE_HELP.into(),
        };
        error(
            format!("include `{target}`: {what} {}", path.display()),
            help,
        )
    }

    /// A role's `defaults.toml`: a table of vars (none when the file does not exist).
    fn defaults(&mut self, path: &Path) -> toml::Table {
        let Ok(text) = std::fs::read_to_string(path) else {
            return toml::Table::new();
        };
        let mut r = Reporter::new(&text, path);
        let table = r.parse().map(|doc| to_table(&doc)).unwrap_or_default();
        self.diagnostics.extend(r.finish());
        table
    }

    /// `path` relative to the playbook's directory when it is under it.
    fn shown(&self, path: &Path) -> String {
        let path = normalize(path);
        path.strip_prefix(&self.root)
            .unwrap_or(&path)
            .display()
            .to_string()
    }
}

/// The scope of the steps of the last file of `chain`: the defaults of every role on the way
/// (nearest winning), and the directories to look files up in (nearest first).
fn scope_of(chain: &[Link]) -> Scope {
    let mut defaults = toml::Table::new();
    for l in chain {
        defaults.extend(l.defaults.clone());
    }
    let mut search: Vec<PathBuf> = Vec::new();
    for l in chain.iter().rev() {
        if !search.contains(&l.dir) {
            search.push(l.dir.clone());
        }
    }
    Scope {
        defaults,
        vars: toml::Table::new(),
        search,
        hosts_file: None,
    }
}

/// An include entry applied to one step it brings in: its vars under the step's nearer ones,
/// its `when` AND-ed before the step's, its tags added, its hosts when the step sets none.
fn apply(inc: &IncludeSpec, from: &Path, mut s: StepSpec, hosts_set: bool) -> (StepSpec, bool) {
    for (k, v) in &inc.vars {
        s.scope.vars.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if let Some(outer) = &inc.when {
        s.when = Some(match s.when.take() {
            Some(inner) => format!("({outer}) and ({inner})"),
            None => outer.clone(),
        });
    }
    for t in &inc.tags {
        if !s.tags.contains(t) {
            s.tags.push(t.clone());
        }
    }
    if hosts_set {
        return (s, true);
    }
    match &inc.hosts {
        Some((hosts, at)) => {
            s.hosts = hosts.clone();
            s.hosts_at = *at;
            s.scope.hosts_file = Some(from.to_path_buf());
            (s, true)
        }
        None => (s, false),
    }
}

/// The entry of `path`'s directory closest to its name (directories for a role, `.toml`
/// files for a playbook file), for a did-you-mean.
fn near(path: &Path, file: bool) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let entries = std::fs::read_dir(dir.unwrap_or(Path::new("."))).ok()?;
    let names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let p = e.path();
            if file {
                p.is_file() && p.extension().is_some_and(|x| x == "toml")
            } else {
                p.is_dir()
            }
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    did_you_mean(name, &refs).map(str::to_string)
}

/// `a/./b/../c` as `a/c`, without touching the file system (paths in messages stay as the
/// user wrote them, minus the detours).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// What two spellings of one file have in common: its canonical path, when it exists.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| normalize(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["command", "template", "copy"];

    /// Writes `files` (path relative to a new directory, content) and returns the directory.
    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, content) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        dir
    }

    fn load(dir: &Path, file: &str) -> Result<PlaybookFile, String> {
        let builtins = |name: &str| -> Result<PathBuf, String> {
            match name {
                "base" => Ok(dir.join("builtin/base.toml")),
                _ => Err("built-in playbooks: builtin:base".into()),
            }
        };
        PlaybookFile::load_with(&dir.join(file), KNOWN, &builtins)
            .map_err(|e| e.to_string().replace(&format!("{}/", dir.display()), ""))
    }

    const ROLE_STEPS: &str = r#"
[[steps]]
name = "site config"
use = "template"
with = { src = "templates/site.conf.j2", dest = "/etc/{{ vars.site }}.conf" }
notify = "reload web"

[[steps]]
name = "site flag"
use = "command"
hosts = "db"
when = "vars.flag"
tags = ["flag"]
with = { run = "true" }
"#;

    fn web_role() -> Vec<(&'static str, &'static str)> {
        vec![
            ("roles/web/steps.toml", ROLE_STEPS),
            (
                "roles/web/handlers.toml",
                "[[handlers]]\nname = \"reload web\"\nuse = \"command\"\nwith = { run = \"true\" }\n",
            ),
            ("roles/web/defaults.toml", "site = \"default\"\nport = 80\n"),
            ("roles/web/templates/site.conf.j2", "port {{ vars.port }}\n"),
        ]
    }

    #[test]
    fn a_role_is_spliced_in_place_with_the_include_applied_to_each_step() {
        let mut files = web_role();
        files.push((
            "site.toml",
            r#"
[[steps]]
name = "first"
use = "command"
with = { run = "true" }

[[steps]]
include = "roles/web"
vars = { site = "blog" }
when = "vars.web"
tags = ["web"]
hosts = "web"

[[steps]]
include = "roles/web"
vars = { site = "shop", port = 8080 }

[[steps]]
name = "last"
use = "command"
with = { run = "true" }
notify = "reload web"
"#,
        ));
        let dir = tree(&files);
        let pb = load(dir.path(), "site.toml").unwrap();
        let names: Vec<&str> = pb.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "first",
                "site config",
                "site flag",
                "site config",
                "site flag",
                "last"
            ]
        );
        let role = dir.path().join("roles/web");
        let steps_file = role.join("steps.toml");
        let (blog, blog_flag, shop) = (&pb.steps[1], &pb.steps[2], &pb.steps[3]);
        // Each step points at its own file; `hosts` from the include points at the include.
        assert_eq!(
            (blog.file.as_path(), blog.line, blog.column),
            (steps_file.as_path(), 2, 1)
        );
        assert_eq!(blog.hosts.to_string(), "web");
        assert_eq!(blog.hosts_at, (12, 9));
        assert_eq!(
            blog.scope.hosts_file.as_deref(),
            Some(dir.path().join("site.toml").as_path())
        );
        // A step that sets its own hosts keeps them.
        assert_eq!(blog_flag.hosts.to_string(), "db");
        assert_eq!(blog_flag.scope.hosts_file, None);
        assert_eq!(shop.hosts.to_string(), "all");
        // `when` AND-ed, outer first; tags added after the step's own.
        assert_eq!(blog.when.as_deref(), Some("vars.web"));
        assert_eq!(
            blog_flag.when.as_deref(),
            Some("(vars.web) and (vars.flag)")
        );
        assert_eq!(blog_flag.tags, ["flag", "web"]);
        assert!(shop.tags.is_empty());
        // Vars: the role's defaults, each include's vars.
        let table = |s: &str| -> toml::Table { toml::from_str(s).unwrap() };
        assert_eq!(blog.scope.defaults, table("site = \"default\"\nport = 80"));
        assert_eq!(blog.scope.vars, table("site = \"blog\""));
        assert_eq!(shop.scope.vars, table("site = \"shop\"\nport = 8080"));
        // Files are looked up in the role, then beside the playbook.
        assert_eq!(blog.scope.search, [role.clone(), dir.path().to_path_buf()]);
        assert_eq!(
            blog.scope
                .base_dir(Some("templates/site.conf.j2"), Path::new("/x")),
            role
        );
        // The role's handler is declared once however often the role is included, and both
        // the role's steps and the playbook's notify it.
        assert_eq!(pb.handlers.len(), 1);
        assert_eq!(pb.handlers[0].name, "reload web");
        assert_eq!(
            pb.handlers[0].scope.defaults,
            table("site = \"default\"\nport = 80")
        );
        assert!(pb.handlers[0].scope.vars.is_empty());
        // The playbook's own steps have no scope.
        assert_eq!(pb.steps[0].scope, Scope::default());
    }

    #[test]
    fn src_falls_back_to_the_including_files_directory() {
        let dir = tree(&[
            (
                "tasks/extra.toml",
                "[[steps]]\nuse = \"copy\"\nwith = { src = \"motd\", dest = \"/etc/motd\" }\n",
            ),
            ("motd", "hi\n"),
            ("site.toml", "[[steps]]\ninclude = \"tasks/extra.toml\"\n"),
        ]);
        let pb = load(dir.path(), "site.toml").unwrap();
        let scope = &pb.steps[0].scope;
        assert_eq!(
            scope.search,
            [dir.path().join("tasks"), dir.path().to_path_buf()]
        );
        assert_eq!(scope.base_dir(Some("motd"), Path::new("/x")), dir.path());
        assert_eq!(
            scope.base_dir(Some("missing"), Path::new("/x")),
            dir.path().join("tasks")
        );
        assert_eq!(
            Scope::default().base_dir(Some("motd"), Path::new("/x")),
            Path::new("/x")
        );
    }

    #[test]
    fn nested_includes_layer_nearest_first() {
        let dir = tree(&[
            (
                "roles/inner/steps.toml",
                "[[steps]]\nname = \"inner\"\nuse = \"command\"\nwith = { run = \"true\" }\n",
            ),
            (
                "roles/inner/defaults.toml",
                "a = \"inner\"\nb = \"inner\"\n",
            ),
            (
                "roles/outer/steps.toml",
                "[[steps]]\ninclude = \"../inner\"\nvars = { x = \"near\" }\nwhen = \"vars.i\"\ntags = [\"i\"]\n",
            ),
            (
                "roles/outer/defaults.toml",
                "a = \"outer\"\nc = \"outer\"\n",
            ),
            (
                "site.toml",
                "[[steps]]\ninclude = \"roles/outer\"\nvars = { x = \"far\", y = \"far\" }\nwhen = \"vars.o\"\ntags = [\"o\"]\nhosts = \"web\"\n",
            ),
        ]);
        let pb = load(dir.path(), "site.toml").unwrap();
        let s = &pb.steps[0];
        let table = |t: &str| -> toml::Table { toml::from_str(t).unwrap() };
        assert_eq!(
            s.scope.defaults,
            table("a = \"inner\"\nb = \"inner\"\nc = \"outer\"")
        );
        assert_eq!(s.scope.vars, table("x = \"near\"\ny = \"far\""));
        assert_eq!(s.when.as_deref(), Some("(vars.o) and (vars.i)"));
        assert_eq!(s.tags, ["i", "o"]);
        assert_eq!(s.hosts.to_string(), "web");
        assert_eq!(
            s.scope.search,
            [
                dir.path().join("roles/inner"),
                dir.path().join("roles/outer"),
                dir.path().to_path_buf()
            ]
        );
    }

    #[test]
    fn a_cycle_is_an_error_at_the_include_showing_the_chain() {
        let dir = tree(&[
            (
                "roles/web/steps.toml",
                "[[steps]]\nuse = \"command\"\nwith = { run = \"true\" }\n\n[[steps]]\ninclude = \"../../a.toml\"\n",
            ),
            ("a.toml", "[[steps]]\ninclude = \"roles/web\"\n"),
        ]);
        assert_eq!(
            load(dir.path(), "a.toml").unwrap_err(),
            "roles/web/steps.toml:6:11: error: include cycle: a.toml -> roles/web -> a.toml\n  \
             help: remove one of these includes: a file cannot include itself, directly or through the files it includes\n\n1 error"
        );
        let dir = tree(&[("self.toml", "[[steps]]\ninclude = \"self.toml\"\n")]);
        assert!(
            load(dir.path(), "self.toml")
                .unwrap_err()
                .starts_with("self.toml:2:11: error: include cycle: self.toml -> self.toml\n")
        );
    }

    #[test]
    fn problems_inside_an_included_file_point_into_that_file() {
        let dir = tree(&[
            (
                "roles/web/steps.toml",
                "[[steps]]\nuse = \"comand\"\n\n[[steps]]\nuse = \"command\"\nnotify = \"reload wbe\"\n",
            ),
            (
                "roles/web/handlers.toml",
                "[[handlers]]\nname = \"reload web\"\nuse = \"command\"\n",
            ),
            ("roles/web/defaults.toml", "port = \n"),
            (
                "site.toml",
                "[[steps]]\nuse = \"command\"\n\n[[steps]]\ninclude = \"roles/web\"\n",
            ),
        ]);
        let err = load(dir.path(), "site.toml").unwrap_err();
        let firsts: Vec<&str> = err.split("\n\n").filter_map(|d| d.lines().next()).collect();
        assert_eq!(
            firsts,
            [
                "roles/web/defaults.toml:1:8: error: invalid TOML: string values must be quoted, expected literal string",
                "roles/web/steps.toml:2:7: error: unknown step `comand`",
                "roles/web/steps.toml:6:10: error: step `command` notifies unknown handler `reload wbe`",
                "3 errors"
            ],
            "{err}"
        );
        assert!(err.contains("did you mean `command`?"), "{err}");
        assert!(err.contains("did you mean `reload web`?"), "{err}");
    }

    #[test]
    fn problems_with_the_include_itself_point_at_the_including_file() {
        let dir = tree(&[
            ("roles/web/steps.toml", "[[steps]]\nuse = \"command\"\n"),
            ("roles/empty/defaults.toml", "a = 1\n"),
            (
                "site.toml",
                "[[steps]]\ninclude = \"roles/wbe\"\n\n\
                 [[steps]]\ninclude = \"roles/empty\"\n\n\
                 [[steps]]\ninclude = \"tasks/none.toml\"\n\n\
                 [[steps]]\ninclude = \"roles/web\"\nvar = { a = 1 }\nuse = \"command\"\n\n\
                 [[steps]]\ninclude = \"builtin:bsae\"\n\n\
                 [[steps]]\ninclude = \"roles/web\"\nvars = { host = \"x\" }\nhosts = \"web:&\"\n",
            ),
        ]);
        let err = load(dir.path(), "site.toml").unwrap_err();
        let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines,
            [
                "site.toml:2:11: error: include `roles/wbe`: no role directory roles/wbe",
                "  help: did you mean `roles/web`?",
                "site.toml:5:11: error: role directory `roles/empty` has no steps.toml (roles/empty)",
                &format!("  help: {ROLE_HELP}"),
                "site.toml:8:11: error: include `tasks/none.toml`: no playbook file tasks/none.toml",
                &format!("  help: {INCLUDE_HELP}"),
                "site.toml:12:1: error: unknown key `var` in include `roles/web`",
                "  help: did you mean `vars`?",
                "site.toml:13:1: error: unknown key `use` in include `roles/web`",
                "  help: an entry either includes steps (include, with vars, when, tags, hosts) or is a step (use); set `use` on the included steps, or move it to a [[steps]] entry of its own",
                "site.toml:16:11: error: unknown built-in playbook `builtin:bsae`",
                "  help: built-in playbooks: builtin:base",
                "site.toml:20:17: error: `host` in `vars` in include `roles/web` is the host's facts (host.name, host.address, ...), not a var",
                "  help: give the var another name",
                "site.toml:21:9: error: bad hosts selector `web:&` in include `roles/web`: `&` must be followed by a role, group or host name",
                "  help: write terms joined by `,` or `:`: all, a role (storage, manager, worker, lb), swarm, a group, a host name or a glob (web-*); &term intersects, !term excludes, e.g. hosts = \"web:&prod,!web-3\"",
                "8 errors",
            ],
            "{err}"
        );
    }

    #[test]
    fn a_builtin_playbook_is_included_and_a_misspelt_include_key_is_suggested() {
        let dir = tree(&[
            (
                "builtin/base.toml",
                "[[steps]]\nname = \"base\"\nuse = \"command\"\n\n[[secrets]]\nname = \"token\"\n",
            ),
            (
                "site.toml",
                "[[steps]]\ninclude = \"builtin:base\"\n\n[[steps]]\nname = \"mine\"\nuse = \"command\"\n\n[[secrets]]\nname = \"token\"\n",
            ),
        ]);
        let pb = load(dir.path(), "site.toml").unwrap();
        let names: Vec<&str> = pb.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["base", "mine"]);
        assert_eq!(pb.steps[0].file, dir.path().join("builtin/base.toml"));
        assert_eq!(pb.secrets.len(), 1, "declared twice, kept once");
        let dir = tree(&[("site.toml", "[[steps]]\ninclde = \"roles/web\"\n")]);
        assert_eq!(
            load(dir.path(), "site.toml").unwrap_err(),
            "site.toml:2:1: error: unknown key `inclde` in step #1\n  help: did you mean `include`?\n\n1 error"
        );
    }

    #[test]
    fn handlers_of_two_files_with_one_name_are_an_error() {
        let dir = tree(&[
            (
                "roles/web/steps.toml",
                "[[steps]]\nuse = \"command\"\n\n[[handlers]]\nname = \"reload\"\nuse = \"command\"\n",
            ),
            (
                "site.toml",
                "[[steps]]\ninclude = \"roles/web\"\n\n[[handlers]]\nname = \"reload\"\nuse = \"command\"\n",
            ),
        ]);
        let err = load(dir.path(), "site.toml").unwrap_err();
        assert!(
            err.starts_with("roles/web/steps.toml:4:1: error: handler `reload` is declared twice (first at site.toml:4)"),
            "{err}"
        );
    }
}
