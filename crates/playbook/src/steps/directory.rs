//! `directory`: a directory with a mode and owner at `path` (parents created as
//! needed), or nothing at `path` (`state = "absent"`, removed recursively).

use super::file::{Kind, PathFact, PathFacts};
pub use super::util::Presence as State;
use super::util::{self, Mode};
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Typed};
use provision_engine::step::{Action, Change, Check, HostStep, StepError};
use provision_transport::shell::quote;
use serde::Deserialize;

/// The mode of a directory created without `mode`.
pub const NEW_DIR_MODE: u32 = 0o755;

pub const KNOWN_KEYS: &[&str] = &["path", "mode", "owner", "group", "state"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    path: String,
    mode: Option<Mode>,
    owner: Option<String>,
    group: Option<String>,
    #[serde(default)]
    state: State,
}

pub struct Directory {
    path: String,
    /// None: 0755 for a new directory, an existing one keeps its mode (think
    /// of /root/.ssh or a 1777 spool).
    mode: Option<u32>,
    owner: Option<String>,
    group: Option<String>,
    state: State,
}

pub fn build(with: &toml::Table, _ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let path = util::abs_path("path", &p.path)?;
    let owner = util::account("owner", p.owner)?;
    let group = util::account("group", p.group)?;
    if p.state == State::Absent {
        // A typo must not wipe /, /etc or /home.
        if path.split('/').filter(|c| !c.is_empty()).count() < 2 {
            return Err(util::bad(
                "path",
                format!("refusing to remove {path}: too close to the root"),
                "state = \"absent\" removes a path with at least two components, e.g. /opt/app",
            ));
        }
        util::require(
            p.mode.is_none() && owner.is_none() && group.is_none(),
            "state",
            "`mode`, `owner` and `group` mean nothing with state = \"absent\"",
            "remove them, or use state = \"present\"",
        )?;
    }
    Ok(Box::new(Typed(Directory {
        path,
        mode: p.mode.map(|m| m.0),
        owner,
        group,
        state: p.state,
    })))
}

inventory::submit! { crate::ctx::BuiltIn::host("directory", build) }

/// Creates the directory (and parents), then sets its mode and owner: mkdir -m
/// would not apply to parents and is subject to the umask.
pub fn create_command(path: &str, mode: u32, owner: Option<&str>, group: Option<&str>) -> String {
    let mut s = format!("mkdir -p {} && {}", quote(path), chmod_command(path, mode));
    if let Some(c) = util::chown_spec(owner, group) {
        s.push_str(&format!(" && chown {} {}", quote(&c), quote(path)));
    }
    s
}

/// Five octal digits: GNU chmod keeps a directory's setgid bit (inherited from
/// a setgid parent) unless the mode clears it explicitly with a leading 0.
pub fn chmod_command(path: &str, mode: u32) -> String {
    format!("chmod {mode:05o} {}", quote(path))
}

pub fn remove_command(path: &str) -> String {
    format!("rm -rf {}", quote(path))
}

impl Directory {
    fn present(&self, now: &PathFacts) -> Result<Check, StepError> {
        let path = &self.path;
        match &now.kind {
            Kind::Absent if now.link.is_some() => {
                return Err(StepError::new(format!(
                    "{path} is a symbolic link to a missing {}",
                    now.link.as_deref().unwrap_or("")
                ))
                .hint("remove the link or create its target first"));
            }
            Kind::Absent => {
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
            }
            Kind::File => {
                return Err(
                    StepError::new(format!("{path} exists but is a regular file"))
                        .hint("remove it, or choose another path"),
                );
            }
            Kind::Other(t) => {
                return Err(StepError::new(format!("{path} exists but is a {t}"))
                    .hint("remove it, or choose another path"));
            }
            Kind::Directory => {}
        }
        let a = now
            .attrs
            .as_ref()
            .ok_or_else(|| StepError::new(format!("no attributes gathered for {path}")))?;
        let mut what = Vec::new();
        let mut cmds = Vec::new();
        if let Some(mode) = self.mode.filter(|m| *m != a.mode) {
            what.push(format!("mode {mode:04o} (was {:04o})", a.mode));
            cmds.push(chmod_command(path, mode));
        }
        let owner = self.owner.as_deref().filter(|o| !a.owner_is(o));
        let group = self.group.as_deref().filter(|g| !a.group_is(g));
        if let Some(o) = owner {
            what.push(format!("owner {o} (was {})", a.owner));
        }
        if let Some(g) = group {
            what.push(format!("group {g} (was {})", a.group));
        }
        if let Some(c) = util::chown_spec(owner, group) {
            cmds.push(format!("chown {} {}", quote(&c), quote(path)));
        }
        if what.is_empty() {
            return Ok(Check::Ok(format!(
                "{path} exists ({:04o} {}:{})",
                a.mode, a.owner, a.group
            )));
        }
        Ok(Check::Change(vec![Change::new(
            format!("update {path}: {}", what.join(", ")),
            vec![Action::run(cmds.join(" && "))],
        )]))
    }
}

impl Decide for Directory {
    type Fact = PathFact;

    fn fact(&self) -> PathFact {
        PathFact::new(&self.path, None)
    }

    fn decide(&self, now: PathFacts) -> Result<Check, StepError> {
        match self.state {
            State::Present => self.present(&now),
            State::Absent if now.kind == Kind::Absent && now.link.is_none() => {
                Ok(Check::Ok(format!("{} absent", self.path)))
            }
            State::Absent => {
                let what = match (&now.link, &now.kind) {
                    (Some(_), _) => "symbolic link",
                    (None, Kind::Directory) => "directory",
                    (None, Kind::File) => "file",
                    (None, _) => "special file",
                };
                Ok(Check::Change(vec![Change::new(
                    format!("remove {what} {}", self.path),
                    vec![Action::run(remove_command(&self.path))],
                )]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::file;
    use crate::steps::testing::{build as build_with, build_err};
    use provision_engine::step::Facts;

    fn step(with: &str) -> Box<dyn HostStep> {
        build_with(build, with).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn commands_are_exact() {
        assert_eq!(
            create_command("/opt/my app", 0o750, Some("app"), Some("app")),
            "mkdir -p '/opt/my app' && chmod 00750 '/opt/my app' && chown app:app '/opt/my app'"
        );
        assert_eq!(
            create_command("/srv", 0o2775, None, Some("www-data")),
            "mkdir -p /srv && chmod 02775 /srv && chown :www-data /srv"
        );
        assert_eq!(remove_command("/opt/old app"), "rm -rf '/opt/old app'");
    }

    #[test]
    fn fresh_host_creates() {
        let s = step("path = \"/opt/app/data\"\nowner = \"app\"");
        assert_eq!(
            s.gather().unwrap(),
            file::gather_command("/opt/app/data", None)
        );
        assert_eq!(
            s.check(&Facts::new("kind=absent\n")).unwrap(),
            Check::Change(vec![Change::new(
                "create directory /opt/app/data (mode 0755, owner app)",
                vec![Action::run(
                    "mkdir -p /opt/app/data && chmod 00755 /opt/app/data && chown app /opt/app/data"
                )]
            )])
        );
    }

    #[test]
    fn already_there() {
        let s = step("path = \"/opt/app\"\nowner = \"app\"\ngroup = \"app\"\nmode = \"0750\"");
        assert_eq!(
            s.check(&Facts::new(
                "kind=directory\nattrs=750 app app 999 999 4096\n"
            ))
            .unwrap(),
            Check::Ok("/opt/app exists (0750 app:app)".into())
        );
        // Without `mode`, an existing directory keeps its own.
        let s2 = step("path = \"/root/.ssh\"");
        assert_eq!(
            s2.check(&Facts::new(
                "kind=directory\nattrs=700 root root 0 0 4096\n"
            ))
            .unwrap(),
            Check::Ok("/root/.ssh exists (0700 root:root)".into())
        );
        // A symbolic link to a directory is followed (/var/lib/docker -> /data/docker).
        let f = Facts::new("link=/data/app\nkind=directory\nattrs=750 app app 999 999 4096\n");
        assert!(matches!(s.check(&f).unwrap(), Check::Ok(_)));
    }

    #[test]
    fn drifted_attributes() {
        let s = step("path = \"/opt/app\"\nowner = \"app\"\nmode = \"0750\"");
        assert_eq!(
            s.check(&Facts::new(
                "kind=directory\nattrs=2755 root root 0 0 4096\n"
            ))
            .unwrap(),
            Check::Change(vec![Change::new(
                "update /opt/app: mode 0750 (was 2755), owner app (was root)",
                vec![Action::run("chmod 00750 /opt/app && chown app /opt/app")]
            )])
        );
    }

    #[test]
    fn not_a_directory() {
        let s = step("path = \"/opt/app\"");
        let e = s
            .check(&Facts::new("kind=file\nattrs=644 root root 0 0 3\n"))
            .unwrap_err();
        assert_eq!(e.message, "/opt/app exists but is a regular file");
        assert!(
            s.check(&Facts::new("link=/nowhere\nkind=absent\n"))
                .is_err()
        );
    }

    #[test]
    fn absent() {
        let s = step("path = \"/opt/old\"\nstate = \"absent\"");
        assert_eq!(
            s.check(&Facts::new("kind=absent\n")).unwrap(),
            Check::Ok("/opt/old absent".into())
        );
        assert_eq!(
            s.check(&Facts::new(
                "kind=directory\nattrs=755 root root 0 0 4096\n"
            ))
            .unwrap(),
            Check::Change(vec![Change::new(
                "remove directory /opt/old",
                vec![Action::run("rm -rf /opt/old")]
            )])
        );
    }

    #[test]
    fn param_errors() {
        for p in ["/", "/etc", "/home/", "//var"] {
            let e = build_err(build_with(
                build,
                &format!("path = \"{p}\"\nstate = \"absent\""),
            ));
            assert!(
                e.message.starts_with("refusing to remove"),
                "{p}: {}",
                e.message
            );
        }
        let e = build_err(build_with(build, "path = \"/opt/x\"\nstate = \"gone\""));
        assert_eq!(e.key.as_deref(), Some("state"));
        assert_eq!(
            e.message,
            "`state`: unknown variant `gone`, expected `present` or `absent`"
        );
        let e = build_err(build_with(build, "path = \"/opt/x\"\nmod = \"0755\""));
        assert!(e.help.unwrap().starts_with("did you mean `mode`?"));
        let e = build_err(build_with(
            build,
            "path = \"/opt/x\"\nstate = \"absent\"\nmode = \"0755\"",
        ));
        assert_eq!(e.key.as_deref(), Some("state"));
        let e = build_err(build_with(build, "path = true"));
        assert_eq!(
            e.message,
            "`path`: invalid type: boolean `true`, expected a string"
        );
    }
}
