//! `link`: a symbolic link at `path` pointing to `target` (Ansible's `file: state=link`), a hard
//! link (`hard = true`, `state=hard`), or no link at `path` (`state = "absent"`). A regular file
//! in the way is replaced only with `force = true`; a directory in the way never is.

use super::util::{self, Presence as State};
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Fact, Typed};
use provision_engine::step::{Action, Change, Check, Facts, HostStep, StepError};
use provision_transport::shell::quote;
use serde::Deserialize;

pub const KNOWN_KEYS: &[&str] = &["path", "target", "hard", "force", "state"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    path: String,
    target: Option<String>,
    #[serde(default)]
    hard: bool,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    state: State,
}

#[derive(Debug)]
pub struct Link {
    path: String,
    /// None with state = "absent".
    target: Option<String>,
    hard: bool,
    force: bool,
}

pub fn build(with: &toml::Table, _ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let path = util::abs_path("path", &p.path)?;
    let target = match (p.state, p.target) {
        (State::Absent, Some(_)) => {
            return Err(util::bad(
                "target",
                "`target` means nothing with state = \"absent\"",
                "remove it, or use state = \"present\"",
            ));
        }
        (State::Absent, None) => None,
        (State::Present, None) => {
            return Err(util::bad(
                "path",
                "a link needs a `target`",
                "add target = \"/the/file/it/points/to\"",
            ));
        }
        // A hard link names an existing file: an absolute path. A symbolic link may be
        // relative to the link's directory, as `ln -s` writes it.
        (State::Present, Some(t)) if p.hard => Some(util::abs_path("target", &t)?),
        (State::Present, Some(t)) if t.is_empty() || t.contains(['\0', '\n']) => {
            return Err(util::bad(
                "target",
                "`target` is empty or contains a newline or NUL byte",
                "write the path the link points to",
            ));
        }
        (State::Present, Some(t)) => Some(t),
    };
    Ok(Box::new(Typed(Link {
        path,
        target,
        hard: p.hard,
        force: p.force,
    })))
}

inventory::submit! { crate::ctx::BuiltIn::host("link", build) }

/// What is at a path, without following a link there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Absent,
    /// A symbolic link and what it says (as written, not resolved).
    Symlink(String),
    /// A regular file: its device and inode (`DEV:INO`), equal for hard links of one file.
    File(String),
    Directory,
    Other(String),
}

/// The link's path and, for a hard link, the target's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFacts {
    pub at_path: Found,
    /// `DEV:INO` of the target when it is a regular file (hard links only); None when absent.
    pub target_id: Option<String>,
}

/// The fact a link step needs: [`LinkFacts`].
pub struct LinkFact {
    pub path: String,
    /// Hard links only: the file whose identity the link must share.
    pub hard_target: Option<String>,
}

impl Fact for LinkFact {
    type Value = LinkFacts;

    fn command(&self) -> String {
        let mut s = format!(
            "p={}; if [ -L \"$p\" ]; then printf 'link=%s\\n' \"$(readlink -- \"$p\")\"; \
             elif [ -f \"$p\" ]; then stat -c 'file=%d:%i' -- \"$p\"; \
             elif [ -d \"$p\" ]; then echo directory=yes; \
             elif [ -e \"$p\" ]; then stat -c 'other=%F' -- \"$p\"; fi",
            quote(&self.path)
        );
        if let Some(t) = &self.hard_target {
            s.push_str(&format!(
                "; t={}; if [ -f \"$t\" ] && [ ! -L \"$t\" ]; then stat -c 'target=%d:%i' -- \"$t\"; fi",
                quote(t)
            ));
        }
        s
    }

    fn parse(&self, facts: &Facts) -> Result<LinkFacts, StepError> {
        let kv = facts.kv();
        let at_path = if let Some(l) = kv.get("link") {
            Found::Symlink(l.to_string())
        } else if let Some(id) = kv.get("file") {
            Found::File(id.to_string())
        } else if kv.contains_key("directory") {
            Found::Directory
        } else if let Some(t) = kv.get("other") {
            Found::Other(t.to_string())
        } else if facts.stdout.trim().is_empty() || kv.contains_key("target") {
            Found::Absent
        } else {
            return Err(util::bad_facts("link fact", &facts.stdout));
        };
        Ok(LinkFacts {
            at_path,
            target_id: kv.get("target").map(|s| s.to_string()),
        })
    }
}

/// `ln -sfn`: replaces a link (or, with force, a file) in one step; `-n` so that a link to a
/// directory is replaced rather than followed.
pub fn symlink_command(target: &str, path: &str) -> String {
    format!("ln -sfn -- {} {}", quote(target), quote(path))
}

pub fn hard_link_command(target: &str, path: &str) -> String {
    format!("ln -f -- {} {}", quote(target), quote(path))
}

pub fn remove_command(path: &str) -> String {
    format!("rm -f -- {}", quote(path))
}

impl Link {
    fn in_the_way(&self, what: &str) -> StepError {
        StepError::new(format!("{} exists and is {what}", self.path))
            .hint("remove it, choose another path, or set force = true to replace a regular file")
    }

    fn present(&self, target: &str, now: LinkFacts) -> Result<Check, StepError> {
        let path = &self.path;
        let make = |summary: String| {
            let cmd = if self.hard {
                hard_link_command(target, path)
            } else {
                symlink_command(target, path)
            };
            Ok(Check::Change(vec![Change::new(
                summary,
                vec![Action::run(cmd)],
            )]))
        };
        if self.hard {
            let Some(id) = now.target_id else {
                return Err(StepError::new(format!(
                    "the hard link's target {target} is not a regular file on the host"
                ))
                .hint("create the file first (a hard link names an existing file)"));
            };
            return match now.at_path {
                Found::File(at) if at == id => Ok(Check::Ok(format!("{path} is {target}"))),
                Found::Absent => make(format!("hard link {path} to {target}")),
                Found::File(_) if self.force => {
                    make(format!("replace file {path} with a hard link to {target}"))
                }
                Found::File(_) => Err(self.in_the_way("another file")),
                Found::Symlink(l) if self.force => make(format!(
                    "replace symbolic link {path} (-> {l}) with a hard link to {target}"
                )),
                Found::Symlink(l) => Err(self.in_the_way(&format!("a symbolic link to {l}"))),
                Found::Directory => Err(self.in_the_way("a directory")),
                Found::Other(t) => Err(self.in_the_way(&format!("a {t}"))),
            };
        }
        match now.at_path {
            Found::Symlink(l) if l == target => Ok(Check::Ok(format!("{path} -> {target}"))),
            Found::Symlink(l) => make(format!("link {path} -> {target} (was -> {l})")),
            Found::Absent => make(format!("link {path} -> {target}")),
            Found::File(_) if self.force => {
                make(format!("replace file {path} with a link -> {target}"))
            }
            Found::File(_) => Err(self.in_the_way("a regular file")),
            Found::Directory => Err(self.in_the_way("a directory")),
            Found::Other(t) => Err(self.in_the_way(&format!("a {t}"))),
        }
    }

    fn absent(&self, now: LinkFacts) -> Result<Check, StepError> {
        let path = &self.path;
        match now.at_path {
            Found::Absent => Ok(Check::Ok(format!("no link at {path}"))),
            Found::Symlink(l) => Ok(Check::Change(vec![Change::new(
                format!("remove link {path} (-> {l})"),
                vec![Action::run(remove_command(path))],
            )])),
            // Which name of a hard-linked file is "the link" is not knowable: `hard` says so.
            Found::File(_) if self.hard => Ok(Check::Change(vec![Change::new(
                format!("remove hard link {path}"),
                vec![Action::run(remove_command(path))],
            )])),
            Found::File(_) => Err(StepError::new(format!(
                "{path} is a regular file, not a symbolic link"
            ))
            .hint("set hard = true to remove a hard link, or use the `file` step for files")),
            Found::Directory => Err(StepError::new(format!("{path} is a directory, not a link"))
                .hint("use the `directory` step with state = \"absent\"")),
            Found::Other(t) => Err(StepError::new(format!("{path} is a {t}, not a link"))
                .hint("remove it by hand if it must go")),
        }
    }
}

impl Decide for Link {
    type Fact = LinkFact;

    fn fact(&self) -> LinkFact {
        LinkFact {
            path: self.path.clone(),
            hard_target: self.target.clone().filter(|_| self.hard),
        }
    }

    fn decide(&self, now: LinkFacts) -> Result<Check, StepError> {
        match &self.target {
            Some(t) => self.present(t, now),
            None => self.absent(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{build as build_step, build_err};
    use provision_testkit::local::LocalShell;
    use std::path::Path;

    fn built(with: &str) -> Box<dyn HostStep> {
        build_step(super::build, with).unwrap()
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    fn link(with: &str) -> Link {
        let p: Params = util::params(&crate::steps::testing::table(with), KNOWN_KEYS).unwrap();
        Link {
            path: p.path,
            target: p.target,
            hard: p.hard,
            force: p.force,
        }
    }

    fn facts(at_path: Found) -> LinkFacts {
        LinkFacts {
            at_path,
            target_id: None,
        }
    }

    fn actions(c: Check) -> Vec<(String, Vec<Action>)> {
        match c {
            Check::Change(cs) => cs.into_iter().map(|c| (c.summary, c.actions)).collect(),
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn fact_command_is_exact() {
        let f = LinkFact {
            path: "/etc/nginx/sites-enabled/app".into(),
            hard_target: None,
        };
        assert_eq!(
            f.command(),
            "p=/etc/nginx/sites-enabled/app; if [ -L \"$p\" ]; then printf 'link=%s\\n' \"$(readlink -- \"$p\")\"; \
             elif [ -f \"$p\" ]; then stat -c 'file=%d:%i' -- \"$p\"; \
             elif [ -d \"$p\" ]; then echo directory=yes; \
             elif [ -e \"$p\" ]; then stat -c 'other=%F' -- \"$p\"; fi"
        );
        let hard = LinkFact {
            path: "/b".into(),
            hard_target: Some("/srv/a b".into()),
        };
        assert!(hard.command().ends_with(
            "; t='/srv/a b'; if [ -f \"$t\" ] && [ ! -L \"$t\" ]; then stat -c 'target=%d:%i' -- \"$t\"; fi"
        ));
    }

    #[test]
    fn parses_what_the_command_prints() {
        let f = LinkFact {
            path: "/x".into(),
            hard_target: Some("/t".into()),
        };
        let parse = |out: &str| f.parse(&Facts::new(out)).unwrap();
        assert_eq!(
            parse("link=../sites-available/app\n").at_path,
            Found::Symlink("../sites-available/app".into())
        );
        assert_eq!(
            parse("file=2049:131090\ntarget=2049:131090\n"),
            LinkFacts {
                at_path: Found::File("2049:131090".into()),
                target_id: Some("2049:131090".into())
            }
        );
        assert_eq!(parse("").at_path, Found::Absent);
        assert_eq!(parse("target=2049:7\n").at_path, Found::Absent);
        assert_eq!(parse("directory=yes\n").at_path, Found::Directory);
        assert_eq!(parse("other=fifo\n").at_path, Found::Other("fifo".into()));
        assert!(f.parse(&Facts::new("garbage\n")).is_err());
    }

    #[test]
    fn a_symlink_is_made_repointed_and_left_alone() {
        let l = link(
            "path = \"/etc/nginx/sites-enabled/app\"\ntarget = \"/etc/nginx/sites-available/app\"",
        );
        assert_eq!(
            actions(l.decide(facts(Found::Absent)).unwrap()),
            vec![(
                "link /etc/nginx/sites-enabled/app -> /etc/nginx/sites-available/app".to_string(),
                vec![Action::run(
                    "ln -sfn -- /etc/nginx/sites-available/app /etc/nginx/sites-enabled/app"
                )]
            )]
        );
        assert_eq!(
            actions(l.decide(facts(Found::Symlink("/old".into()))).unwrap())[0].0,
            "link /etc/nginx/sites-enabled/app -> /etc/nginx/sites-available/app (was -> /old)"
        );
        assert_eq!(
            l.decide(facts(Found::Symlink(
                "/etc/nginx/sites-available/app".into()
            )))
            .unwrap(),
            Check::Ok("/etc/nginx/sites-enabled/app -> /etc/nginx/sites-available/app".into())
        );
    }

    #[test]
    fn what_is_in_the_way_is_refused_unless_forced() {
        let l = link("path = \"/opt/a\"\ntarget = \"/opt/b\"");
        let e = l.decide(facts(Found::File("1:2".into()))).unwrap_err();
        assert_eq!(e.message, "/opt/a exists and is a regular file");
        assert!(e.hint.unwrap().contains("force = true"));
        assert!(l.decide(facts(Found::Directory)).is_err());
        let forced = link("path = \"/opt/a\"\ntarget = \"/opt/b\"\nforce = true");
        assert_eq!(
            actions(forced.decide(facts(Found::File("1:2".into()))).unwrap())[0].0,
            "replace file /opt/a with a link -> /opt/b"
        );
        // Never a directory, force or not.
        assert!(forced.decide(facts(Found::Directory)).is_err());
    }

    #[test]
    fn a_hard_link_shares_the_targets_inode() {
        let l = link("path = \"/srv/b\"\ntarget = \"/srv/a\"\nhard = true");
        let with = |at: Found, target: Option<&str>| LinkFacts {
            at_path: at,
            target_id: target.map(str::to_string),
        };
        assert_eq!(
            l.decide(with(Found::File("8:9".into()), Some("8:9")))
                .unwrap(),
            Check::Ok("/srv/b is /srv/a".into())
        );
        assert_eq!(
            actions(l.decide(with(Found::Absent, Some("8:9"))).unwrap()),
            vec![(
                "hard link /srv/b to /srv/a".to_string(),
                vec![Action::run("ln -f -- /srv/a /srv/b")]
            )]
        );
        let e = l.decide(with(Found::Absent, None)).unwrap_err();
        assert_eq!(
            e.message,
            "the hard link's target /srv/a is not a regular file on the host"
        );
        assert!(
            l.decide(with(Found::File("8:10".into()), Some("8:9")))
                .is_err()
        );
    }

    #[test]
    fn absent_removes_links_only() {
        let l = link("path = \"/opt/a\"\nstate = \"absent\"");
        assert_eq!(
            actions(l.decide(facts(Found::Symlink("/x".into()))).unwrap()),
            vec![(
                "remove link /opt/a (-> /x)".to_string(),
                vec![Action::run("rm -f -- /opt/a")]
            )]
        );
        assert_eq!(
            l.decide(facts(Found::Absent)).unwrap(),
            Check::Ok("no link at /opt/a".into())
        );
        let e = l.decide(facts(Found::File("1:1".into()))).unwrap_err();
        assert_eq!(e.message, "/opt/a is a regular file, not a symbolic link");
    }

    #[test]
    fn bad_parameters_say_what_to_write() {
        let e = build_err(build_step(super::build, "path = \"/a\""));
        assert_eq!(e.message, "a link needs a `target`");
        let e = build_err(build_step(
            super::build,
            "path = \"/a\"\ntarget = \"b\"\nhard = true",
        ));
        assert_eq!(e.key.as_deref(), Some("target"));
        let e = build_err(build_step(
            super::build,
            "path = \"/a\"\ntarget = \"/b\"\nstate = \"absent\"",
        ));
        assert_eq!(e.message, "`target` means nothing with state = \"absent\"");
        let e = build_err(build_step(
            super::build,
            "path = \"/a\"\ntarget = \"/b\"\nsrc = \"/c\"",
        ));
        assert!(e.message.contains("unknown parameter `src`"), "{e:?}");
        // A relative target is what `ln -s` writes; relative paths are refused for `path`.
        assert!(build_step(super::build, "path = \"/a\"\ntarget = \"../b\"").is_ok());
        assert!(
            build_err(build_step(super::build, "path = \"a\"\ntarget = \"/b\"")).key
                == Some("path".into())
        );
    }

    #[test]
    fn links_are_made_repointed_and_removed_in_a_real_shell() {
        // The real commands in a real `sh`, against a temporary directory.
        let tmp = tempfile::tempdir().unwrap();
        let t = LocalShell::new();
        let (a, b, l) = (
            tmp.path().join("a"),
            tmp.path().join("b"),
            tmp.path().join("l"),
        );
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "b").unwrap();
        let to = |target: &str| built(&format!("path = \"{}\"\ntarget = \"{target}\"", s(&l)));
        // Made, then nothing to do; a relative target as `ln -s` writes it.
        assert_eq!(t.converge(&*to("a")).len(), 1);
        assert_eq!(std::fs::read_link(&l).unwrap(), Path::new("a"));
        assert_eq!(std::fs::read_to_string(&l).unwrap(), "a");
        // Repointed in place.
        assert_eq!(
            t.converge(&*to(s(&b))),
            vec![format!("link {} -> {} (was -> a)", s(&l), s(&b))]
        );
        assert_eq!(std::fs::read_to_string(&l).unwrap(), "b");
        // A link to a directory is replaced, not followed into (ln -n).
        let d = tmp.path().join("d");
        std::fs::create_dir(&d).unwrap();
        t.converge(&*to(s(&d)));
        t.converge(&*to(s(&a)));
        assert!(
            !d.join("a").exists(),
            "the link was created inside the directory"
        );
        // A regular file in the way: refused, then replaced with force.
        std::fs::remove_file(&l).unwrap();
        std::fs::write(&l, "precious").unwrap();
        let e = t.check(&*to(s(&a))).unwrap_err();
        assert!(e.message.ends_with("exists and is a regular file"), "{e}");
        let forced = built(&format!(
            "path = \"{}\"\ntarget = \"{}\"\nforce = true",
            s(&l),
            s(&a)
        ));
        t.converge(&*forced);
        assert_eq!(std::fs::read_link(&l).unwrap(), a);
        // A hard link shares the inode; then absent removes it.
        let h = tmp.path().join("h");
        let hard = |state: &str| built(&format!("path = \"{}\"\n{state}hard = true", s(&h)));
        t.converge(&*hard(&format!("target = \"{}\"\n", s(&b))));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(&h).unwrap().ino(),
            std::fs::metadata(&b).unwrap().ino()
        );
        t.converge(&*hard("state = \"absent\"\n"));
        assert!(!h.exists() && b.exists());
        // Absent removes the symbolic link, never what it points to.
        let gone = built(&format!("path = \"{}\"\nstate = \"absent\"", s(&l)));
        assert_eq!(t.converge(&*gone).len(), 1);
        assert!(std::fs::symlink_metadata(&l).is_err() && a.exists());
    }
}
