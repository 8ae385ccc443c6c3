//! `file`: Ansible's `file` module without links (those are the `link` step's): the mode and
//! owner of an existing path without touching its content, an empty file created if missing
//! (`touch`), a directory (`directory`, with `recurse` over its tree), or nothing at the path
//! (`absent`; a directory that is not empty only with `recurse = true`).

use super::directory::{NEW_DIR_MODE, chmod_command, create_command};
use super::file::{Kind, NEW_FILE_MODE, PathFact, PathFacts};
use super::util::{self, Attrs, Flag, Mode};
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Fact, Sections, Typed, sections, unexpected};
use provision_engine::step::{Action, Change, Check, Facts, HostStep, StepError};
use provision_transport::shell::quote;
use serde::Deserialize;

pub const KNOWN_KEYS: &[&str] = &["path", "state", "mode", "owner", "group", "recurse"];

/// Ansible's `state` values; `link` and `hard` are refused with a pointer to the `link` step.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum StateParam {
    File,
    Directory,
    Touch,
    Absent,
    Link,
    Hard,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    path: String,
    state: Option<StateParam>,
    mode: Option<Mode>,
    owner: Option<String>,
    group: Option<String>,
    #[serde(default)]
    recurse: Option<Flag>,
}

/// What the step wants at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// `state` not set: the attributes of whatever file or directory is there (it must exist).
    Attrs,
    /// A regular file that must exist: its attributes.
    File,
    /// An empty file when missing; an existing one keeps its content and times.
    Touch,
    Directory,
    Absent,
}

#[derive(Debug)]
pub struct FileState {
    path: String,
    want: Want,
    mode: Option<u32>,
    owner: Option<String>,
    group: Option<String>,
    /// `directory`: the attributes apply to the whole tree; `absent`: a directory that is not
    /// empty may be removed with everything in it.
    recurse: bool,
}

pub fn build(with: &toml::Table, _ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    Ok(Box::new(Typed(from_params(util::params(
        with, KNOWN_KEYS,
    )?)?)))
}

fn from_params(p: Params) -> Result<FileState, ParamError> {
    let path = util::abs_path("path", &p.path)?;
    let owner = util::account("owner", p.owner)?;
    let group = util::account("group", p.group)?;
    let recurse = p.recurse.is_some_and(|f| f.0);
    let sets_attrs = p.mode.is_some() || owner.is_some() || group.is_some();
    let want = match p.state {
        Some(StateParam::Link | StateParam::Hard) => {
            return Err(util::bad(
                "state",
                "links are made by the `link` step",
                "use = \"link\" with { path = \"...\", target = \"...\" } (hard = true for a hard link)",
            ));
        }
        Some(StateParam::File) => Want::File,
        Some(StateParam::Directory) => Want::Directory,
        Some(StateParam::Touch) => Want::Touch,
        Some(StateParam::Absent) => Want::Absent,
        // Ansible's default with recurse is a directory.
        None if recurse => Want::Directory,
        None => Want::Attrs,
    };
    match want {
        Want::Absent => {
            // A typo must not wipe /, /etc or /home.
            if path.split('/').filter(|c| !c.is_empty()).count() < 2 {
                return Err(util::bad(
                    "path",
                    format!("refusing to remove {path}: too close to the root"),
                    "state = \"absent\" removes a path with at least two components, e.g. /opt/app",
                ));
            }
            util::require(
                !sets_attrs,
                "state",
                "`mode`, `owner` and `group` mean nothing with state = \"absent\"",
                "remove them, or choose another state",
            )?;
        }
        Want::Attrs | Want::File => util::require(
            sets_attrs,
            "path",
            "this `file` step sets nothing: no `mode`, `owner` or `group`",
            "add them, or a state: \"touch\", \"directory\" or \"absent\"",
        )?,
        Want::Directory if recurse => util::require(
            sets_attrs,
            "recurse",
            "`recurse` applies `mode`, `owner` and `group` to a tree, and none is set",
            "add them, or remove `recurse`",
        )?,
        Want::Touch => util::require(
            !recurse,
            "recurse",
            "`recurse` means nothing with state = \"touch\"",
            "remove it",
        )?,
        Want::Directory => {}
    }
    Ok(FileState {
        path,
        want,
        mode: p.mode.map(|m| m.0),
        owner,
        group,
        recurse,
    })
}

inventory::submit! { crate::ctx::BuiltIn::host("file", build) }

/// The fact of a `file` step: what is at the path, how many entries a directory holds (for
/// `absent`), and how many entries of a tree differ from the wanted attributes (for `recurse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStateFact {
    pub path: String,
    pub count_entries: bool,
    /// (mode, owner, group) the tree should have, when `recurse` applies them.
    pub tree: Option<(Option<u32>, Option<String>, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStateFacts {
    pub path: PathFacts,
    /// Entries directly in the directory (not following a link), when counted.
    pub entries: Option<u64>,
    /// Entries of the tree (the directory included) whose attributes differ, when checked.
    pub tree_drift: Option<u64>,
}

/// Counts the entries directly in a directory (a link to one is not looked into): `entries=N`.
pub fn entries_command(path: &str) -> String {
    let p = quote(path);
    format!(
        "if [ -d {p} ] && [ ! -L {p} ]; then printf 'entries=%s\\n' \"$(find {p} -mindepth 1 -maxdepth 1 -printf . | wc -c)\"; fi"
    )
}

/// Counts the entries of the tree at `path` (itself included) whose mode, owner or group
/// differ: `tree=N`, or `tree=error` when find fails (an unknown user, say), never a silent 0.
/// Links are not followed, as `chown -R` and `chmod -R` do not; a link's own mode means nothing
/// (chmod never changes it), so only its owner is compared.
pub fn tree_command(
    path: &str,
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) -> String {
    let p = quote(path);
    let mut tests = Vec::new();
    if let Some(m) = mode {
        tests.push(format!("\\( ! -type l ! -perm {m:04o} \\)"));
    }
    if let Some(o) = owner {
        tests.push(format!("! -user {}", quote(o)));
    }
    if let Some(g) = group {
        tests.push(format!("! -group {}", quote(g)));
    }
    format!(
        "if [ -d {p} ]; then t=$(find {p} \\( {} \\) -printf .) && printf 'tree=%s\\n' \"${{#t}}\" || echo tree=error; fi",
        tests.join(" -o ")
    )
}

impl Fact for FileStateFact {
    type Value = FileStateFacts;

    fn command(&self) -> String {
        let mut parts = vec![("path", PathFact::new(&self.path, None).command())];
        if self.count_entries {
            parts.push(("entries", entries_command(&self.path)));
        }
        if let Some((m, o, g)) = &self.tree {
            parts.push((
                "tree",
                tree_command(&self.path, *m, o.as_deref(), g.as_deref()),
            ));
        }
        sections(&parts)
    }

    fn parse(&self, facts: &Facts) -> Result<FileStateFacts, StepError> {
        let s = Sections::parse(facts);
        let path = PathFact::new(&self.path, None).parse(s.get("path")?)?;
        let number = |part: &str, key: &str| -> Result<Option<u64>, StepError> {
            let f = s.get(part)?;
            match f.kv().get(key) {
                None => Ok(None),
                Some(n) => n
                    .parse()
                    .map(Some)
                    .map_err(|_| unexpected(&format!("`{part}` fact"), &f.stdout)),
            }
        };
        let entries = if self.count_entries {
            number("entries", "entries")?
        } else {
            None
        };
        let tree_drift = match &self.tree {
            None => None,
            Some(_) if s.get("tree")?.kv().get("tree") == Some(&"error") => {
                return Err(StepError::new(format!(
                    "cannot compare the tree under {} with the wanted attributes (find failed)",
                    self.path
                ))
                .hint("are `owner` and `group` known on the host? run the gather command with `provision shell` to see"));
            }
            Some(_) => number("tree", "tree")?,
        };
        Ok(FileStateFacts {
            path,
            entries,
            tree_drift,
        })
    }
}

/// chown (first: it may clear set-id bits) then chmod, for one path or, `recursive`, a tree.
pub fn attrs_command(
    path: &str,
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
    recursive: bool,
) -> String {
    let r = if recursive { "-R " } else { "" };
    let mut cmds = Vec::new();
    if let Some(c) = util::chown_spec(owner, group) {
        cmds.push(format!("chown {r}{} {}", quote(&c), quote(path)));
    }
    if let Some(m) = mode {
        cmds.push(if recursive {
            format!("chmod -R {m:05o} {}", quote(path))
        } else {
            chmod_command(path, m)
        });
    }
    cmds.join(" && ")
}

/// Creates an empty file where nothing is (`touch` would only update the times of a file made
/// meanwhile, never truncate it), then sets its owner and mode.
pub fn touch_command(path: &str, mode: u32, owner: Option<&str>, group: Option<&str>) -> String {
    let rest = attrs_command(path, Some(mode), owner, group, false);
    format!("touch {} && {rest}", quote(path))
}

pub fn remove_file_command(path: &str) -> String {
    format!("rm -f {}", quote(path))
}

pub fn remove_empty_dir_command(path: &str) -> String {
    format!("rmdir {}", quote(path))
}

pub fn remove_tree_command(path: &str) -> String {
    format!("rm -rf {}", quote(path))
}

impl FileState {
    /// The attribute changes an existing path needs, as a change (None: nothing to do).
    fn attrs_change(&self, a: &Attrs) -> Option<Change> {
        let mut what = Vec::new();
        let mode = self.mode.filter(|m| *m != a.mode);
        if let Some(m) = mode {
            what.push(format!("mode {m:04o} (was {:04o})", a.mode));
        }
        let owner = self.owner.as_deref().filter(|o| !a.owner_is(o));
        if let Some(o) = owner {
            what.push(format!("owner {o} (was {})", a.owner));
        }
        let group = self.group.as_deref().filter(|g| !a.group_is(g));
        if let Some(g) = group {
            what.push(format!("group {g} (was {})", a.group));
        }
        if what.is_empty() {
            return None;
        }
        Some(Change::new(
            format!("update {}: {}", self.path, what.join(", ")),
            vec![Action::run(attrs_command(
                &self.path, mode, owner, group, false,
            ))],
        ))
    }

    fn ok_or(&self, a: &Attrs, what: &str) -> Check {
        match self.attrs_change(a) {
            Some(c) => Check::Change(vec![c]),
            None => Check::Ok(format!(
                "{} {what} ({:04o} {}:{})",
                self.path, a.mode, a.owner, a.group
            )),
        }
    }

    fn missing(&self) -> StepError {
        StepError::new(format!("{} does not exist", self.path)).hint(
            "state = \"touch\" creates an empty file, \"directory\" a directory; `copy` and `template` write content",
        )
    }

    fn directory(&self, now: &FileStateFacts, a: Option<&Attrs>) -> Result<Check, StepError> {
        let path = &self.path;
        let Some(a) = a else {
            let mode = self.mode.unwrap_or(NEW_DIR_MODE);
            let mut summary = format!("create directory {path} (mode {mode:04o}");
            if let Some(c) = util::chown_spec(self.owner.as_deref(), self.group.as_deref()) {
                summary.push_str(&format!(", owner {c}"));
            }
            summary.push(')');
            let cmd = create_command(path, mode, self.owner.as_deref(), self.group.as_deref());
            return Ok(Check::Change(vec![Change::new(
                summary,
                vec![Action::run(cmd)],
            )]));
        };
        if !self.recurse {
            return Ok(self.ok_or(a, "is a directory"));
        }
        match now.tree_drift {
            Some(0) => Ok(Check::Ok(format!(
                "{path} and everything in it have the wanted attributes"
            ))),
            Some(n) => {
                let mut set = Vec::new();
                if let Some(m) = self.mode {
                    set.push(format!("mode {m:04o}"));
                }
                if let Some(c) = util::chown_spec(self.owner.as_deref(), self.group.as_deref()) {
                    set.push(format!("owner {c}"));
                }
                Ok(Check::Change(vec![Change::new(
                    format!(
                        "set {} on the tree {path} ({n} entries differ)",
                        set.join(", ")
                    ),
                    vec![Action::run(attrs_command(
                        path,
                        self.mode,
                        self.owner.as_deref(),
                        self.group.as_deref(),
                        true,
                    ))],
                )]))
            }
            None => Err(unexpected("`tree` fact", "")),
        }
    }

    fn absent(&self, now: &FileStateFacts) -> Result<Check, StepError> {
        let path = &self.path;
        let (summary, cmd) = match (&now.path.link, &now.path.kind) {
            (None, Kind::Absent) => return Ok(Check::Ok(format!("{path} absent"))),
            // The link goes, never what it points to.
            (Some(_), _) => (
                format!("remove symbolic link {path}"),
                remove_file_command(path),
            ),
            (None, Kind::Directory) => match now.entries {
                Some(0) => (
                    format!("remove empty directory {path}"),
                    remove_empty_dir_command(path),
                ),
                Some(n) if self.recurse => (
                    format!("remove directory {path} and the {n} entries in it"),
                    remove_tree_command(path),
                ),
                Some(n) => {
                    return Err(StepError::new(format!(
                        "{path} is a directory holding {n} entries: not removed"
                    ))
                    .hint("set recurse = true to remove it with everything in it"));
                }
                None => return Err(unexpected("`entries` fact", "")),
            },
            (None, Kind::File) => (format!("remove file {path}"), remove_file_command(path)),
            (None, Kind::Other(t)) => (format!("remove {t} {path}"), remove_file_command(path)),
        };
        Ok(Check::Change(vec![Change::new(
            summary,
            vec![Action::run(cmd)],
        )]))
    }
}

impl Decide for FileState {
    type Fact = FileStateFact;

    fn fact(&self) -> FileStateFact {
        FileStateFact {
            path: self.path.clone(),
            count_entries: self.want == Want::Absent,
            tree: (self.want == Want::Directory && self.recurse)
                .then(|| (self.mode, self.owner.clone(), self.group.clone())),
        }
    }

    fn decide(&self, now: FileStateFacts) -> Result<Check, StepError> {
        let path = &self.path;
        if self.want == Want::Absent {
            return self.absent(&now);
        }
        let attrs = now.path.attrs.as_ref();
        match (&now.path.kind, attrs) {
            (Kind::Absent, _) if now.path.link.is_some() => Err(StepError::new(format!(
                "{path} is a symbolic link to a missing {}",
                now.path.link.as_deref().unwrap_or("")
            ))
            .hint("remove the link or create its target first")),
            (Kind::Other(t), _) => Err(StepError::new(format!("{path} is a {t}"))
                .hint("remove it, or choose another path")),
            (Kind::Absent, _) => match self.want {
                Want::Directory => self.directory(&now, None),
                Want::Touch => {
                    let mode = self.mode.unwrap_or(NEW_FILE_MODE);
                    Ok(Check::Change(vec![Change::new(
                        format!("create empty file {path} (mode {mode:04o})"),
                        vec![Action::run(touch_command(
                            path,
                            mode,
                            self.owner.as_deref(),
                            self.group.as_deref(),
                        ))],
                    )]))
                }
                _ => Err(self.missing()),
            },
            (_, None) => Err(unexpected("file fact", "")),
            (Kind::Directory, Some(a)) => match self.want {
                Want::Directory => self.directory(&now, Some(a)),
                Want::Attrs => Ok(self.ok_or(a, "is a directory")),
                _ => Err(StepError::new(format!("{path} is a directory"))
                    .hint("use state = \"directory\" for a directory's attributes")),
            },
            (Kind::File, Some(a)) => match self.want {
                Want::Directory => Err(StepError::new(format!(
                    "{path} exists but is a regular file"
                ))
                .hint("remove it (state = \"absent\"), or choose another path")),
                // Content and times are left alone: a second run changes nothing.
                _ => Ok(self.ok_or(a, "is a file")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{build as build_step, build_err};
    use provision_testkit::local::LocalShell;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn built(with: &str) -> Box<dyn HostStep> {
        build_step(super::build, with).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn step(with: &str) -> FileState {
        from_params(util::params(&crate::steps::testing::table(with), KNOWN_KEYS).unwrap()).unwrap()
    }

    fn facts(path: &str, entries: Option<u64>, tree: Option<u64>) -> FileStateFacts {
        FileStateFacts {
            path: super::super::file::parse(&Facts::new(path)).unwrap(),
            entries,
            tree_drift: tree,
        }
    }

    fn one(c: Check) -> (String, Vec<Action>) {
        match c {
            Check::Change(mut cs) if cs.len() == 1 => {
                let c = cs.remove(0);
                (c.summary, c.actions)
            }
            other => panic!("expected one change, got {other:?}"),
        }
    }

    const FILE_644: &str = "kind=file\nattrs=644 root root 0 0 12\n";
    const DIR_755: &str = "kind=directory\nattrs=755 root root 0 0 4096\n";

    #[test]
    fn commands_are_exact() {
        assert_eq!(
            entries_command("/srv/old data"),
            "if [ -d '/srv/old data' ] && [ ! -L '/srv/old data' ]; then printf 'entries=%s\\n' \"$(find '/srv/old data' -mindepth 1 -maxdepth 1 -printf . | wc -c)\"; fi"
        );
        assert_eq!(
            tree_command("/srv/www", Some(0o750), Some("www-data"), Some("adm")),
            "if [ -d /srv/www ]; then t=$(find /srv/www \\( \\( ! -type l ! -perm 0750 \\) -o ! -user www-data -o ! -group adm \\) -printf .) && printf 'tree=%s\\n' \"${#t}\" || echo tree=error; fi"
        );
        assert_eq!(
            tree_command("/srv/www", None, None, Some("adm")),
            "if [ -d /srv/www ]; then t=$(find /srv/www \\( ! -group adm \\) -printf .) && printf 'tree=%s\\n' \"${#t}\" || echo tree=error; fi"
        );
        assert_eq!(
            attrs_command("/srv/my app", Some(0o640), Some("app"), None, false),
            "chown app '/srv/my app' && chmod 00640 '/srv/my app'"
        );
        assert_eq!(
            attrs_command("/srv/www", Some(0o2775), None, Some("www-data"), true),
            "chown -R :www-data /srv/www && chmod -R 02775 /srv/www"
        );
        assert_eq!(
            touch_command("/var/log/app.log", 0o640, Some("app"), Some("adm")),
            "touch /var/log/app.log && chown app:adm /var/log/app.log && chmod 00640 /var/log/app.log"
        );
        assert_eq!(remove_file_command("/tmp/a b"), "rm -f '/tmp/a b'");
        assert_eq!(remove_empty_dir_command("/srv/old"), "rmdir /srv/old");
        assert_eq!(remove_tree_command("/srv/old"), "rm -rf /srv/old");
    }

    #[test]
    fn the_fact_gathers_only_what_the_state_needs() {
        let f = step("path = \"/srv/x\"\nstate = \"absent\"").fact();
        assert_eq!(
            f.command(),
            sections(&[
                ("path", super::super::file::gather_command("/srv/x", None)),
                ("entries", entries_command("/srv/x")),
            ])
        );
        let f = step("path = \"/srv/x\"\nstate = \"directory\"\nrecurse = true\nowner = \"app\"")
            .fact();
        assert_eq!(
            f.command(),
            sections(&[
                ("path", super::super::file::gather_command("/srv/x", None)),
                ("tree", tree_command("/srv/x", None, Some("app"), None)),
            ])
        );
        let f = step("path = \"/srv/x\"\nstate = \"touch\"").fact();
        assert_eq!(
            f.command(),
            sections(&[("path", super::super::file::gather_command("/srv/x", None))])
        );
    }

    #[test]
    fn parses_real_output() {
        // Captured from the commands above on Debian 12 (find 4.9, coreutils 9.1).
        let f = FileStateFact {
            path: "/srv/x".into(),
            count_entries: true,
            tree: Some((Some(0o750), None, None)),
        };
        let v = f
            .parse(&Facts::new(
                "--- path\nkind=directory\nattrs=755 root root 0 0 4096\n--- entries\nentries=3\n--- tree\ntree=4\n",
            ))
            .unwrap();
        assert_eq!(v.path.kind, Kind::Directory);
        assert_eq!((v.entries, v.tree_drift), (Some(3), Some(4)));
        // Nothing there: the directory-only parts print nothing.
        let v = f
            .parse(&Facts::new(
                "--- path\nkind=absent\n--- entries\n--- tree\n",
            ))
            .unwrap();
        assert_eq!((v.entries, v.tree_drift), (None, None));
        // find failed (an unknown user): an error, not "no drift".
        let e = f
            .parse(&Facts::new(
                "--- path\nkind=directory\nattrs=755 root root 0 0 4096\n--- entries\nentries=0\n--- tree\ntree=error\n",
            ))
            .unwrap_err();
        assert!(
            e.message
                .starts_with("cannot compare the tree under /srv/x"),
            "{e}"
        );
        assert!(f.parse(&Facts::new("--- path\nkind=absent\n")).is_err());
        assert!(
            f.parse(&Facts::new(
                "--- path\nkind=absent\n--- entries\nentries=x\n--- tree\n"
            ))
            .is_err()
        );
    }

    #[test]
    fn touch_creates_only_what_is_missing() {
        let s = step("path = \"/var/log/app.log\"\nstate = \"touch\"\nowner = \"app\"");
        assert_eq!(
            one(s.decide(facts("kind=absent\n", None, None)).unwrap()),
            (
                "create empty file /var/log/app.log (mode 0644)".into(),
                vec![Action::run(
                    "touch /var/log/app.log && chown app /var/log/app.log && chmod 00644 /var/log/app.log"
                )]
            )
        );
        // An existing file keeps its content and times; only its owner is fixed.
        assert_eq!(
            one(s.decide(facts(FILE_644, None, None)).unwrap()),
            (
                "update /var/log/app.log: owner app (was root)".into(),
                vec![Action::run("chown app /var/log/app.log")]
            )
        );
        assert_eq!(
            s.decide(facts(
                "kind=file\nattrs=600 app root 1000 0 99\n",
                None,
                None
            ))
            .unwrap(),
            Check::Ok("/var/log/app.log is a file (0600 app:root)".into())
        );
        assert!(s.decide(facts(DIR_755, None, None)).is_err());
    }

    #[test]
    fn attributes_of_an_existing_path_never_create_it() {
        let s = step("path = \"/etc/app.conf\"\nmode = \"0640\"\ngroup = \"app\"");
        assert_eq!(
            one(s.decide(facts(FILE_644, None, None)).unwrap()),
            (
                "update /etc/app.conf: mode 0640 (was 0644), group app (was root)".into(),
                vec![Action::run(
                    "chown :app /etc/app.conf && chmod 00640 /etc/app.conf"
                )]
            )
        );
        // Without a state, a directory's attributes are set too; state = "file" refuses it.
        assert!(matches!(
            s.decide(facts(DIR_755, None, None)).unwrap(),
            Check::Change(_)
        ));
        let e = s.decide(facts("kind=absent\n", None, None)).unwrap_err();
        assert_eq!(e.message, "/etc/app.conf does not exist");
        let f = step("path = \"/etc/app.conf\"\nstate = \"file\"\nmode = \"0640\"");
        assert_eq!(
            f.decide(facts(DIR_755, None, None)).unwrap_err().message,
            "/etc/app.conf is a directory"
        );
        assert!(f.decide(facts("kind=absent\n", None, None)).is_err());
    }

    #[test]
    fn directory_with_and_without_recurse() {
        let s =
            step("path = \"/srv/www\"\nstate = \"directory\"\nmode = \"0750\"\nowner = \"app\"");
        assert_eq!(
            one(s.decide(facts("kind=absent\n", None, None)).unwrap()),
            (
                "create directory /srv/www (mode 0750, owner app)".into(),
                vec![Action::run(
                    "mkdir -p /srv/www && chmod 00750 /srv/www && chown app /srv/www"
                )]
            )
        );
        assert_eq!(
            one(s.decide(facts(DIR_755, None, None)).unwrap()).0,
            "update /srv/www: mode 0750 (was 0755), owner app (was root)"
        );
        assert!(s.decide(facts(FILE_644, None, None)).is_err());
        let r = step("path = \"/srv/www\"\nrecurse = true\ngroup = \"www-data\"");
        assert_eq!(
            one(r.decide(facts(DIR_755, None, Some(12))).unwrap()),
            (
                "set owner :www-data on the tree /srv/www (12 entries differ)".into(),
                vec![Action::run("chown -R :www-data /srv/www")]
            )
        );
        assert_eq!(
            r.decide(facts(DIR_755, None, Some(0))).unwrap(),
            Check::Ok("/srv/www and everything in it have the wanted attributes".into())
        );
    }

    #[test]
    fn absent_removes_a_non_empty_directory_only_with_recurse() {
        let s = step("path = \"/srv/old\"\nstate = \"absent\"");
        assert_eq!(
            s.decide(facts("kind=absent\n", None, None)).unwrap(),
            Check::Ok("/srv/old absent".into())
        );
        assert_eq!(
            one(s.decide(facts(FILE_644, None, None)).unwrap()),
            (
                "remove file /srv/old".into(),
                vec![Action::run("rm -f /srv/old")]
            )
        );
        assert_eq!(
            one(s.decide(facts(DIR_755, Some(0), None)).unwrap()),
            (
                "remove empty directory /srv/old".into(),
                vec![Action::run("rmdir /srv/old")]
            )
        );
        let e = s.decide(facts(DIR_755, Some(3), None)).unwrap_err();
        assert_eq!(
            e.message,
            "/srv/old is a directory holding 3 entries: not removed"
        );
        // A link to a directory: the link goes, its target stays.
        assert_eq!(
            one(s
                .decide(facts(&format!("link=/data/old\n{DIR_755}"), None, None))
                .unwrap()),
            (
                "remove symbolic link /srv/old".into(),
                vec![Action::run("rm -f /srv/old")]
            )
        );
        let r = step("path = \"/srv/old\"\nstate = \"absent\"\nrecurse = true");
        assert_eq!(
            one(r.decide(facts(DIR_755, Some(3), None)).unwrap()),
            (
                "remove directory /srv/old and the 3 entries in it".into(),
                vec![Action::run("rm -rf /srv/old")]
            )
        );
    }

    #[test]
    fn bad_parameters() {
        let err = |with: &str| build_err(build_step(super::build, with));
        let e = err("path = \"/srv/x\"\nstate = \"link\"");
        assert_eq!(e.key.as_deref(), Some("state"));
        assert!(e.help.unwrap().starts_with("use = \"link\""));
        let e = err("path = \"/srv/x\"");
        assert_eq!(
            e.message,
            "this `file` step sets nothing: no `mode`, `owner` or `group`"
        );
        let e = err("path = \"/etc\"\nstate = \"absent\"");
        assert!(
            e.message.starts_with("refusing to remove /etc"),
            "{}",
            e.message
        );
        let e = err("path = \"/srv/x\"\nstate = \"absent\"\nmode = \"0644\"");
        assert_eq!(e.key.as_deref(), Some("state"));
        let e = err("path = \"/srv/x\"\nstate = \"directory\"\nrecurse = true");
        assert_eq!(e.key.as_deref(), Some("recurse"));
        let e = err("path = \"/srv/x\"\nstate = \"touch\"\nrecurse = true");
        assert_eq!(e.key.as_deref(), Some("recurse"));
        let e = err("path = \"/srv/x\"\nstate = \"gone\"");
        assert_eq!(e.key.as_deref(), Some("state"));
        let e = err("path = \"/srv/x\"\nmod = \"0644\"");
        assert!(e.help.unwrap().starts_with("did you mean `mode`?"));
        let e = err("path = \"srv/x\"\nstate = \"touch\"");
        assert_eq!(e.key.as_deref(), Some("path"));
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn real_commands_converge_in_a_shell() {
        let tmp = tempfile::tempdir().unwrap();
        let t = LocalShell::new();
        // touch: created, then left alone (content and mtime kept).
        let log = tmp.path().join("app.log");
        let touch = built(&format!(
            "path = \"{}\"\nstate = \"touch\"\nmode = \"0640\"",
            s(&log)
        ));
        assert_eq!(t.converge(&*touch).len(), 1);
        assert_eq!(std::fs::read(&log).unwrap(), b"");
        assert_eq!(mode_of(&log), 0o640);
        std::fs::write(&log, "kept").unwrap();
        let mtime = std::fs::metadata(&log).unwrap().modified().unwrap();
        assert!(matches!(t.check(&*touch).unwrap(), Check::Ok(_)));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "kept");
        assert_eq!(std::fs::metadata(&log).unwrap().modified().unwrap(), mtime);
        // Attributes only: the mode changes, the content does not.
        let attrs = built(&format!("path = \"{}\"\nmode = \"0600\"", s(&log)));
        assert_eq!(t.converge(&*attrs).len(), 1);
        assert_eq!(
            (mode_of(&log), std::fs::read_to_string(&log).unwrap()),
            (0o600, "kept".into())
        );
        // A tree: every entry gets the mode, links are left alone.
        let tree = tmp.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), "f").unwrap();
        std::os::unix::fs::symlink("/nonexistent", tree.join("a/l")).unwrap();
        let rec = built(&format!(
            "path = \"{}\"\nstate = \"directory\"\nrecurse = true\nmode = \"0750\"",
            s(&tree)
        ));
        assert_eq!(t.converge(&*rec).len(), 1);
        for p in ["", "a", "a/b", "a/b/f"] {
            assert_eq!(mode_of(&tree.join(p)), 0o750, "{p}");
        }
        // absent: refused while not empty, then removed with recurse.
        let gone = built(&format!("path = \"{}\"\nstate = \"absent\"", s(&tree)));
        assert!(t.check(&*gone).is_err());
        assert!(tree.exists());
        let gone_all = built(&format!(
            "path = \"{}\"\nstate = \"absent\"\nrecurse = true",
            s(&tree)
        ));
        assert_eq!(t.converge(&*gone_all).len(), 1);
        assert!(!tree.exists());
        // An empty directory goes without recurse.
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let gone = built(&format!("path = \"{}\"\nstate = \"absent\"", s(&empty)));
        assert_eq!(t.converge(&*gone).len(), 1);
        assert!(!empty.exists());
    }
}
