//! `authorized_key`: public keys of an existing user in its authorized_keys file (Ansible's
//! `ansible.posix.authorized_key`): added (`state = "present"`, other keys kept, or only these
//! with `exclusive = true`) or removed (`state = "absent"`); the file 0600 and, with
//! `manage_dir` (default), its directory 0700, both owned by the user and its primary group.
//! A key is known by its type and blob: the same key with another comment or options is
//! replaced in place.

use super::user::{Passwd, parse_passwd, public_key};
use super::util::{self, Attrs, List, Presence as State};
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Fact, Typed};
use provision_engine::step::{Action, Change, Check, Facts, FileDiff, HostStep, StepError};
use provision_transport::shell::quote;
use serde::Deserialize;

pub const KNOWN_KEYS: &[&str] = &["user", "key", "path", "state", "exclusive", "manage_dir"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    user: String,
    #[serde(default)]
    key: List,
    path: Option<String>,
    #[serde(default)]
    state: State,
    #[serde(default)]
    exclusive: bool,
    #[serde(default = "yes")]
    manage_dir: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
pub struct AuthorizedKey {
    user: String,
    /// Normalized key lines, in the order given.
    keys: Vec<String>,
    /// None: `~user/.ssh/authorized_keys`, found on the host.
    path: Option<String>,
    state: State,
    exclusive: bool,
    manage_dir: bool,
}

pub fn build(with: &toml::Table, _ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    Ok(Box::new(Typed(parse(with)?)))
}

fn parse(with: &toml::Table) -> Result<AuthorizedKey, ParamError> {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let user = util::account_name("user", &p.user, false)?;
    let path = p.path.map(|x| util::abs_path("path", &x)).transpose()?;
    // Ansible's `key` may hold several keys, one a line (a joined list): so may ours.
    let keys = p
        .key
        .0
        .iter()
        .flat_map(|k| k.lines())
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, k)| public_key("key", i, k))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() && !(p.exclusive && p.state == State::Present) {
        return Err(util::bad(
            "key",
            "no key given",
            "write key = \"ssh-ed25519 AAAA... you@laptop\" (one line of a .pub file, or several lines)",
        ));
    }
    if p.exclusive && p.state == State::Absent {
        return Err(util::bad(
            "exclusive",
            "`exclusive` means nothing with state = \"absent\"",
            "remove it, or use state = \"present\" to keep only the given keys",
        ));
    }
    Ok(AuthorizedKey {
        user,
        keys,
        path,
        state: p.state,
        exclusive: p.exclusive,
        manage_dir: p.manage_dir,
    })
}

inventory::submit! {
    crate::ctx::BuiltIn::host("authorized_key", build).stdin_params(&["key"])
}

/// The fact: the user, and its authorized_keys file and directory.
pub struct KeysFact {
    pub user: String,
    pub path: Option<String>,
}

/// What [`KeysFact`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysFacts {
    /// None: no such user (then nothing else is gathered).
    pub passwd: Option<Passwd>,
    pub primary: String,
    /// The file's path, the default resolved from the user's home.
    pub path: String,
    pub dir: Option<Attrs>,
    pub file: Option<Attrs>,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// No file.
    Missing,
    /// The file or its directory is a symbolic link.
    Link,
    /// It could not be read (no become).
    Unreadable,
    Text(String),
}

impl Fact for KeysFact {
    type Value = KeysFacts;

    fn command(&self) -> String {
        gather_command(&self.user, self.path.as_deref())
    }

    fn parse(&self, facts: &Facts) -> Result<KeysFacts, StepError> {
        let kv = facts.kv();
        let bad = || util::bad_facts("authorized_key fact", &facts.stdout);
        let entry = kv.get("passwd").copied().ok_or_else(bad)?;
        let passwd = if entry.is_empty() {
            None
        } else {
            Some(parse_passwd(entry).ok_or_else(bad)?)
        };
        let attrs = |key: &str| kv.get(key).and_then(|a| util::parse_attrs(a));
        let content = match kv.get("keys").copied() {
            None => Content::Missing,
            Some("link") => Content::Link,
            Some(b64) => match util::base64_decode(b64) {
                Some(b) => Content::Text(String::from_utf8(b).unwrap_or_default()),
                None => Content::Unreadable,
            },
        };
        if passwd.is_some() && !kv.contains_key("path") {
            return Err(bad());
        }
        Ok(KeysFacts {
            passwd,
            primary: kv.get("primary").copied().unwrap_or("").to_string(),
            path: kv.get("path").copied().unwrap_or("").to_string(),
            dir: attrs("dir"),
            file: attrs("attrs"),
            content,
        })
    }
}

/// `passwd=` (the getent line, empty for no such user), then for an existing user `primary=`
/// (id -gn), `path=`, `dir=` and `attrs=` (stat of the directory and the file, when there),
/// `keys=` (base64 of the file, `unreadable`, or `link` when either is a symbolic link).
pub fn gather_command(user: &str, path: Option<&str>) -> String {
    let k = match path {
        Some(p) => quote(p).into_owned(),
        None => "\"$(printf '%s\\n' \"$e\" | cut -d: -f6)/.ssh/authorized_keys\"".to_string(),
    };
    format!(
        "u={u}; e=$(getent passwd \"$u\"); printf 'passwd=%s\\n' \"$e\"; if [ -n \"$e\" ]; then \
         printf 'primary=%s\\n' \"$(id -gn \"$u\")\"; k={k}; d=$(dirname -- \"$k\"); printf 'path=%s\\n' \"$k\"; \
         if [ -L \"$d\" ] || [ -L \"$k\" ]; then echo keys=link; else \
         if [ -d \"$d\" ]; then stat -c 'dir={f}' -- \"$d\"; fi; \
         if [ -f \"$k\" ]; then stat -c 'attrs={f}' -- \"$k\"; if c=$(base64 -w0 < \"$k\"); then printf 'keys=%s\\n' \"$c\"; else echo keys=unreadable; fi; fi; fi; fi",
        u = quote(user),
        f = util::STAT_FORMAT
    )
}

/// Writes stdin to `path` through a temp file beside it and a rename, the file 0600 and owned
/// by the user and its primary group; with `manage_dir` its directory is made 0700 and owned
/// the same way. Refuses to write through a symbolic link the user could have planted.
pub fn write_command(user: &str, path: &str, manage_dir: bool) -> String {
    let dir = if manage_dir {
        "mkdir -p -- \"$d\"; chown -- \"$u:$g\" \"$d\"; chmod 700 \"$d\"; "
    } else {
        ""
    };
    format!(
        "set -e; u={}; k={}; d=$(dirname -- \"$k\"); g=$(id -gn \"$u\"); \
         if [ -L \"$d\" ] || [ -L \"$k\" ]; then echo \"$d or $k is a symbolic link: refusing to write through it\" >&2; exit 1; fi; \
         {dir}t=$(mktemp \"$d/.authorized_keys.XXXXXX\"); trap 'rm -f \"$t\"' EXIT; \
         cat > \"$t\"; chown -- \"$u:$g\" \"$t\"; chmod 600 \"$t\"; mv -f -- \"$t\" \"$k\"; trap - EXIT",
        quote(user),
        quote(path)
    )
}

/// A key line's identity: its type and blob, wherever options put them.
fn identity(line: &str) -> Option<(&str, &str)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.windows(2).find_map(|w| {
        (w[0].starts_with("ssh-") || w[0].starts_with("ecdsa-sha2-") || w[0].starts_with("sk-"))
            .then_some((w[0], w[1]))
    })
}

/// The file's text after the step, from its text now.
fn edit(now: &str, keys: &[String], state: State, exclusive: bool) -> String {
    let mut lines: Vec<String> = if exclusive {
        Vec::new()
    } else {
        now.lines().map(str::to_string).collect()
    };
    for key in keys {
        let id = identity(key);
        match state {
            State::Absent => lines.retain(|l| identity(l).is_none() || identity(l) != id),
            State::Present => {
                match lines
                    .iter_mut()
                    .find(|l| identity(l).is_some() && identity(l) == id)
                {
                    Some(l) => {
                        if l.split_whitespace().collect::<Vec<_>>().join(" ") != *key {
                            *l = key.clone();
                        }
                    }
                    None => lines.push(key.clone()),
                }
            }
        }
    }
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

impl AuthorizedKey {
    fn owned(&self, a: &Option<Attrs>, mode: u32, group: &str) -> bool {
        a.as_ref()
            .is_some_and(|a| a.mode == mode && a.owner_is(&self.user) && a.group_is(group))
    }
}

impl Decide for AuthorizedKey {
    type Fact = KeysFact;

    fn fact(&self) -> KeysFact {
        KeysFact {
            user: self.user.clone(),
            path: self.path.clone(),
        }
    }

    fn decide(&self, now: KeysFacts) -> Result<Check, StepError> {
        let user = &self.user;
        if now.passwd.is_none() {
            return Err(StepError::new(format!("no user {user} on the host"))
                .hint("create it first, with a `user` step before this one"));
        }
        let path = &now.path;
        let current = match &now.content {
            Content::Link => {
                return Err(
                    StepError::new(format!("{path} or its directory is a symbolic link"))
                        .hint("replace the link with a real directory and file"),
                );
            }
            Content::Unreadable => {
                return Err(StepError::new(format!("cannot read {path}"))
                    .hint("set `become = \"sudo\"` for this host"));
            }
            Content::Missing => None,
            Content::Text(t) => Some(t.as_str()),
        };
        if self.state == State::Absent && current.is_none() {
            return Ok(Check::Ok(format!("no {path}")));
        }
        if now.dir.is_none() && !self.manage_dir {
            return Err(
                StepError::new(format!("the directory of {path} does not exist"))
                    .hint("create it first, or leave out manage_dir = false"),
            );
        }
        let after = edit(
            current.unwrap_or(""),
            &self.keys,
            self.state,
            self.exclusive,
        );
        let same = current == Some(after.as_str());
        let attrs_ok = self.state == State::Absent
            || (self.owned(&now.file, 0o600, &now.primary)
                && (!self.manage_dir || self.owned(&now.dir, 0o700, &now.primary)));
        let n = self.keys.len();
        let keys = |n: usize| format!("{n} key{}", if n == 1 { "" } else { "s" });
        if same && attrs_ok {
            let what = match self.state {
                State::Present => format!("{path} holds the {} of {user}", keys(n)),
                State::Absent => format!("{path} holds none of the {}", keys(n)),
            };
            return Ok(Check::Ok(what));
        }
        let summary = if same {
            format!("fix mode and owner of {path} (0600, {user})")
        } else {
            let had = |k: &String| {
                current
                    .unwrap_or("")
                    .lines()
                    .any(|l| identity(l).is_some() && identity(l) == identity(k))
            };
            match self.state {
                State::Absent => format!(
                    "remove {} from {path}",
                    keys(self.keys.iter().filter(|k| had(k)).count())
                ),
                State::Present if self.exclusive => {
                    format!("write {path}: exactly {} of {user}", keys(n))
                }
                State::Present => {
                    let new = self.keys.iter().filter(|k| !had(k)).count();
                    if new == 0 {
                        format!("update the options or comments of keys in {path}")
                    } else {
                        format!("add {} to {path}", keys(new))
                    }
                }
            }
        };
        let change = Change::new(
            summary,
            vec![Action::run_with_stdin(
                write_command(user, path, self.manage_dir && self.state == State::Present),
                after.clone().into_bytes(),
            )],
        );
        Ok(Check::Change(vec![change.with_diff(FileDiff {
            path: path.clone(),
            before: current.map(str::to_string),
            after,
        })]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{build as build_step, build_err, table};
    use provision_testkit::local::LocalShell;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGz0eKqWk3n9q3sC0tHcXjW9m2b5y8yq7d3vQe1Xo0aB ops@laptop";
    const KEY2: &str =
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= ci@runner";

    fn step(with: &str) -> AuthorizedKey {
        parse(&table(with)).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// What the fact command prints for deploy on Debian 12 (captured with `sh`), with the
    /// file holding `keys` (None: no file yet, but ~/.ssh there).
    fn facts(keys: Option<&str>, file_mode: &str) -> KeysFacts {
        let mut s = String::from(
            "passwd=deploy:x:1001:1001:,,,:/home/deploy:/bin/bash\nprimary=deploy\npath=/home/deploy/.ssh/authorized_keys\ndir=700 deploy deploy 1001 1001 4096\n",
        );
        if let Some(k) = keys {
            s.push_str(&format!(
                "attrs={file_mode} deploy deploy 1001 1001 {}\nkeys={}\n",
                k.len(),
                util::base64_encode(k.as_bytes())
            ));
        }
        KeysFact {
            user: "deploy".into(),
            path: None,
        }
        .parse(&Facts::new(s))
        .unwrap()
    }

    fn change(c: Check) -> Change {
        match c {
            Check::Change(mut cs) if cs.len() == 1 => cs.remove(0),
            other => panic!("expected one change, got {other:?}"),
        }
    }

    #[test]
    fn commands_are_exact() {
        assert_eq!(
            gather_command("deploy", None),
            "u=deploy; e=$(getent passwd \"$u\"); printf 'passwd=%s\\n' \"$e\"; if [ -n \"$e\" ]; then \
             printf 'primary=%s\\n' \"$(id -gn \"$u\")\"; k=\"$(printf '%s\\n' \"$e\" | cut -d: -f6)/.ssh/authorized_keys\"; d=$(dirname -- \"$k\"); printf 'path=%s\\n' \"$k\"; \
             if [ -L \"$d\" ] || [ -L \"$k\" ]; then echo keys=link; else \
             if [ -d \"$d\" ]; then stat -c 'dir=%a %U %G %u %g %s' -- \"$d\"; fi; \
             if [ -f \"$k\" ]; then stat -c 'attrs=%a %U %G %u %g %s' -- \"$k\"; if c=$(base64 -w0 < \"$k\"); then printf 'keys=%s\\n' \"$c\"; else echo keys=unreadable; fi; fi; fi; fi"
        );
        assert!(
            gather_command("deploy", Some("/etc/ssh/keys/deploy one"))
                .contains("; k='/etc/ssh/keys/deploy one'; d=$(dirname")
        );
        assert_eq!(
            write_command("deploy", "/home/deploy/.ssh/authorized_keys", true),
            "set -e; u=deploy; k=/home/deploy/.ssh/authorized_keys; d=$(dirname -- \"$k\"); g=$(id -gn \"$u\"); \
             if [ -L \"$d\" ] || [ -L \"$k\" ]; then echo \"$d or $k is a symbolic link: refusing to write through it\" >&2; exit 1; fi; \
             mkdir -p -- \"$d\"; chown -- \"$u:$g\" \"$d\"; chmod 700 \"$d\"; t=$(mktemp \"$d/.authorized_keys.XXXXXX\"); trap 'rm -f \"$t\"' EXIT; \
             cat > \"$t\"; chown -- \"$u:$g\" \"$t\"; chmod 600 \"$t\"; mv -f -- \"$t\" \"$k\"; trap - EXIT"
        );
        assert!(
            !write_command("deploy", "/k", false).contains("mkdir"),
            "without manage_dir the directory is left alone"
        );
    }

    #[test]
    fn parses_what_the_command_prints() {
        let f = KeysFact {
            user: "nobody".into(),
            path: None,
        };
        assert_eq!(f.parse(&Facts::new("passwd=\n")).unwrap().passwd, None);
        // nobody on Debian 12: its home does not exist.
        let got = f
            .parse(&Facts::new(
                "passwd=nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nprimary=nogroup\npath=/nonexistent/.ssh/authorized_keys\n",
            ))
            .unwrap();
        assert_eq!(
            (
                got.primary.as_str(),
                got.path.as_str(),
                &got.dir,
                &got.content
            ),
            (
                "nogroup",
                "/nonexistent/.ssh/authorized_keys",
                &None,
                &Content::Missing
            )
        );
        let got = f
            .parse(&Facts::new(
                "passwd=nobody:x:65534:65534:nobody:/n:/bin/sh\nprimary=nogroup\npath=/n/.ssh/authorized_keys\nkeys=link\n",
            ))
            .unwrap();
        assert_eq!(got.content, Content::Link);
        assert!(f.parse(&Facts::new("garbage\n")).is_err());
        assert!(
            f.parse(&Facts::new(
                "passwd=nobody:x:65534:65534:nobody:/n:/bin/sh\n"
            ))
            .is_err()
        );
    }

    #[test]
    fn keys_are_added_kept_replaced_and_removed() {
        let s = step(&format!("user = \"deploy\"\nkey = \"{KEY}\""));
        // No file yet: written with the one key.
        let c = change(s.decide(facts(None, "")).unwrap());
        assert_eq!(c.summary, "add 1 key to /home/deploy/.ssh/authorized_keys");
        assert_eq!(
            c.actions,
            vec![Action::run_with_stdin(
                write_command("deploy", "/home/deploy/.ssh/authorized_keys", true),
                format!("{KEY}\n").into_bytes()
            )]
        );
        // Other keys and comments are kept; ours is appended.
        let c = change(
            s.decide(facts(Some(&format!("# ci\n{KEY2}")), "600"))
                .unwrap(),
        );
        let diff = c.diff.unwrap();
        assert_eq!(diff.after, format!("# ci\n{KEY2}\n{KEY}\n"));
        assert_eq!(diff.before, Some(format!("# ci\n{KEY2}")));
        // There already: nothing to do.
        assert_eq!(
            s.decide(facts(Some(&format!("{KEY2}\n{KEY}\n")), "600"))
                .unwrap(),
            Check::Ok("/home/deploy/.ssh/authorized_keys holds the 1 key of deploy".into())
        );
        // The same key with other options: replaced in place.
        let c = change(
            s.decide(facts(Some(&format!("no-pty {KEY}\n{KEY2}\n")), "600"))
                .unwrap(),
        );
        assert_eq!(
            c.summary,
            "update the options or comments of keys in /home/deploy/.ssh/authorized_keys"
        );
        assert_eq!(c.diff.unwrap().after, format!("{KEY}\n{KEY2}\n"));
        // A loose mode: fixed, content as it is.
        let c = change(s.decide(facts(Some(&format!("{KEY}\n")), "644")).unwrap());
        assert_eq!(
            c.summary,
            "fix mode and owner of /home/deploy/.ssh/authorized_keys (0600, deploy)"
        );
        // Absent: removed by type and blob, whatever the comment; missing file: nothing.
        let gone = step(&format!(
            "user = \"deploy\"\nkey = \"{}\"\nstate = \"absent\"",
            KEY.replace("ops@laptop", "old comment")
        ));
        let c = change(
            gone.decide(facts(Some(&format!("{KEY}\n{KEY2}\n")), "600"))
                .unwrap(),
        );
        assert_eq!(
            c.summary,
            "remove 1 key from /home/deploy/.ssh/authorized_keys"
        );
        assert_eq!(c.diff.unwrap().after, format!("{KEY2}\n"));
        assert!(matches!(
            gone.decide(facts(Some(&format!("{KEY2}\n")), "644"))
                .unwrap(),
            Check::Ok(_)
        ));
        assert_eq!(
            gone.decide(facts(None, "")).unwrap(),
            Check::Ok("no /home/deploy/.ssh/authorized_keys".into())
        );
    }

    #[test]
    fn exclusive_keeps_only_the_given_keys() {
        let s = step(&format!(
            "user = \"deploy\"\nkey = \"{KEY}\\n{KEY2}\\n\"\nexclusive = true"
        ));
        let c = change(
            s.decide(facts(
                Some(&format!("# old\nssh-rsa AAAAB3 x@y\n{KEY}\n")),
                "600",
            ))
            .unwrap(),
        );
        assert_eq!(
            c.summary,
            "write /home/deploy/.ssh/authorized_keys: exactly 2 keys of deploy"
        );
        assert_eq!(c.diff.unwrap().after, format!("{KEY}\n{KEY2}\n"));
        assert!(matches!(
            s.decide(facts(Some(&format!("{KEY}\n{KEY2}\n")), "600"))
                .unwrap(),
            Check::Ok(_)
        ));
        // No keys at all, exclusively: an empty file.
        let none = step("user = \"deploy\"\nkey = []\nexclusive = true");
        let c = change(
            none.decide(facts(Some(&format!("{KEY}\n")), "600"))
                .unwrap(),
        );
        assert_eq!(c.diff.unwrap().after, "");
    }

    #[test]
    fn refusals_name_what_to_do() {
        let s = step(&format!("user = \"deploy\"\nkey = \"{KEY}\""));
        let mut f = facts(None, "");
        f.passwd = None;
        let e = s.decide(f).unwrap_err();
        assert_eq!(e.message, "no user deploy on the host");
        let mut f = facts(None, "");
        f.content = Content::Link;
        assert!(
            s.decide(f)
                .unwrap_err()
                .message
                .ends_with("is a symbolic link")
        );
        let mut f = facts(None, "");
        f.content = Content::Unreadable;
        assert_eq!(
            s.decide(f).unwrap_err().message,
            "cannot read /home/deploy/.ssh/authorized_keys"
        );
        let unmanaged = step(&format!(
            "user = \"deploy\"\nkey = \"{KEY}\"\nmanage_dir = false"
        ));
        let mut f = facts(None, "");
        f.dir = None;
        assert_eq!(
            unmanaged.decide(f).unwrap_err().message,
            "the directory of /home/deploy/.ssh/authorized_keys does not exist"
        );
    }

    #[test]
    fn bad_parameters_say_what_to_write() {
        let err = |with: &str| build_err(build_step(super::build, with));
        assert_eq!(err("user = \"deploy\"").message, "no key given");
        let e = err("user = \"deploy\"\nkey = \"AAAAC3Nza\"");
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (Some("key"), "key entry 1 does not look like a public key")
        );
        assert_eq!(
            err("user = \"deploy\"\nkey = \"-----BEGIN OPENSSH PRIVATE KEY-----\"").message,
            "key entry 1 is a private key"
        );
        assert_eq!(
            err(&format!(
                "user = \"deploy\"\nkey = \"{KEY}\"\nstate = \"absent\"\nexclusive = true"
            ))
            .key
            .as_deref(),
            Some("exclusive")
        );
        assert_eq!(
            err(&format!(
                "user = \"deploy\"\nkey = \"{KEY}\"\npath = \"keys\""
            ))
            .key
            .as_deref(),
            Some("path")
        );
        assert_eq!(
            err(&format!("user = \"Deploy!\"\nkey = \"{KEY}\""))
                .key
                .as_deref(),
            Some("user")
        );
        assert!(
            err(&format!(
                "user = \"deploy\"\nkey = \"{KEY}\"\nexlusive = true"
            ))
            .help
            .unwrap()
            .starts_with("did you mean `exclusive`?")
        );
    }

    #[test]
    fn keys_converge_in_a_real_shell() {
        // The real commands, for this machine's own user, with the file under a temp dir.
        let tmp = tempfile::tempdir().unwrap();
        let me = String::from_utf8(
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string();
        let path = tmp.path().join("home/.ssh/authorized_keys");
        let with = |extra: &str| {
            build_step(
                super::build,
                &format!("user = \"{me}\"\npath = \"{}\"\n{extra}", path.display()),
            )
            .unwrap()
        };
        let t = LocalShell::new();
        std::fs::create_dir_all(tmp.path().join("home")).unwrap();
        assert_eq!(t.converge(&*with(&format!("key = \"{KEY}\""))).len(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{KEY}\n"));
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&path), mode(path.parent().unwrap())), (0o600, 0o700));
        assert_eq!(t.converge(&*with(&format!("key = \"{KEY2}\""))).len(), 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{KEY}\n{KEY2}\n")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            t.converge(&*with(&format!("key = \"{KEY}\""))),
            [format!(
                "fix mode and owner of {} (0600, {me})",
                path.display()
            )]
        );
        assert_eq!(
            t.converge(&*with(&format!("key = \"{KEY}\"\nstate = \"absent\"")))
                .len(),
            1
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{KEY2}\n"));
        // A planted link is refused, not written through.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &path).unwrap();
        assert!(t.check(&*with(&format!("key = \"{KEY}\""))).is_err());
        assert!(!tmp.path().join("elsewhere").exists());
    }
}
