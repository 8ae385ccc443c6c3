//! `user`: a local account with its uid, primary and supplementary groups,
//! shell and home, and public keys in its `~/.ssh/authorized_keys`; or no such
//! account (`state = "absent"`).

pub use super::util::Presence as State;
use super::util::{self, Attrs, List};
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Fact, Typed};
use provision_engine::step::{Action, Change, Check, Facts, FileDiff, HostStep, StepError};
use provision_transport::shell::{join, quote};
use serde::Deserialize;

pub const KNOWN_KEYS: &[&str] = &[
    "name",
    "uid",
    "group",
    "groups",
    "shell",
    "home",
    "system",
    "create_home",
    "state",
    "remove_home",
    "authorized_keys",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    uid: Option<u32>,
    group: Option<String>,
    #[serde(default)]
    groups: List,
    shell: Option<String>,
    home: Option<String>,
    #[serde(default)]
    system: bool,
    #[serde(default = "yes")]
    create_home: bool,
    #[serde(default)]
    state: State,
    #[serde(default)]
    remove_home: bool,
    #[serde(default)]
    authorized_keys: List,
}

fn yes() -> bool {
    true
}

pub struct User {
    name: String,
    uid: Option<u32>,
    group: Option<String>,
    groups: Vec<String>,
    shell: Option<String>,
    home: Option<String>,
    system: bool,
    create_home: bool,
    state: State,
    remove_home: bool,
    keys: Vec<String>,
}

pub fn build(with: &toml::Table, _ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let name = util::account_name("name", &p.name, false)?;
    let group = util::account("group", p.group)?;
    let groups = p
        .groups
        .0
        .iter()
        .map(|g| util::account_name("groups", g, false))
        .collect::<Result<Vec<_>, _>>()?;
    let shell = p.shell.map(|s| util::abs_path("shell", &s)).transpose()?;
    let home = p.home.map(|h| util::abs_path("home", &h)).transpose()?;
    let keys = p
        .authorized_keys
        .0
        .iter()
        .enumerate()
        .map(|(i, k)| public_key("authorized_keys", i, k))
        .collect::<Result<Vec<_>, _>>()?;
    if p.state == State::Absent {
        let set: Vec<&str> = [
            ("uid", p.uid.is_some()),
            ("group", group.is_some()),
            ("groups", !groups.is_empty()),
            ("shell", shell.is_some()),
            ("home", home.is_some()),
            ("authorized_keys", !keys.is_empty()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        if let Some(first) = set.first() {
            return Err(util::bad(
                first,
                format!(
                    "`{}` {} nothing with state = \"absent\"",
                    set.join("`, `"),
                    if set.len() > 1 { "mean" } else { "means" }
                ),
                "remove them, or use state = \"present\"",
            ));
        }
    } else if p.remove_home {
        return Err(util::bad(
            "remove_home",
            "`remove_home` applies only with state = \"absent\"",
            "remove it, or set state = \"absent\"",
        ));
    }
    Ok(Box::new(Typed(User {
        name,
        uid: p.uid,
        group,
        groups,
        shell,
        home,
        system: p.system,
        create_home: p.create_home,
        state: p.state,
        remove_home: p.remove_home,
        keys,
    })))
}

inventory::submit! { crate::ctx::BuiltIn::host("user", build) }

/// A public key line, whitespace normalized; refuses private keys and anything
/// without a key type. `param` is the parameter it came from, for the error.
pub(crate) fn public_key(param: &str, i: usize, k: &str) -> Result<String, ParamError> {
    let key = k.split_whitespace().collect::<Vec<_>>().join(" ");
    if k.contains("PRIVATE KEY") {
        return Err(util::bad(
            param,
            format!("{param} entry {} is a private key", i + 1),
            "never share a private key: use the line from the matching .pub file",
        ));
    }
    let words: Vec<&str> = key.split(' ').collect();
    let typed = words.iter().enumerate().any(|(j, w)| {
        (w.starts_with("ssh-") || w.starts_with("ecdsa-sha2-") || w.starts_with("sk-"))
            && j + 1 < words.len()
    });
    if !typed || k.trim().contains('\n') || key.starts_with('#') {
        return Err(util::bad(
            param,
            format!("{param} entry {} does not look like a public key", i + 1),
            "use one line of a .pub file per entry, e.g. \"ssh-ed25519 AAAAC3Nza... you@laptop\"",
        ));
    }
    Ok(key)
}

/// The fact a user step needs: the account, and with keys its authorized_keys.
pub struct UserFact {
    pub name: String,
    pub with_keys: bool,
}

/// What [`UserFact`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFacts {
    /// None: no such user.
    pub passwd: Option<Passwd>,
    /// Supplementary and primary group names (`id -nG`, `id -gn`).
    pub groups: Vec<String>,
    pub primary: String,
    /// None: not gathered, or no authorized_keys file.
    pub keys: Option<AuthorizedKeys>,
    /// Of ~/.ssh and its authorized_keys; None when missing or unreadable.
    pub ssh_dir: Option<Attrs>,
    pub keys_attrs: Option<Attrs>,
}

/// The authorized_keys file as gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizedKeys {
    /// ~/.ssh or the file is a symbolic link.
    Link,
    /// Its content could not be read (no become).
    Unreadable,
    /// Its text ("" when not UTF-8: such keys are not ours and get replaced).
    Text(String),
}

impl Fact for UserFact {
    type Value = UserFacts;

    fn command(&self) -> String {
        gather_command(&self.name, self.with_keys)
    }

    fn parse(&self, facts: &Facts) -> Result<UserFacts, StepError> {
        let kv = facts.kv();
        let bad = || util::bad_facts("getent passwd", &facts.stdout);
        let entry = kv.get("passwd").copied().ok_or_else(bad)?;
        let passwd = if entry.is_empty() {
            None
        } else {
            Some(parse_passwd(entry).ok_or_else(bad)?)
        };
        let keys = kv.get("keys").map(|&k| match k {
            "link" => AuthorizedKeys::Link,
            b64 => match util::base64_decode(b64) {
                Some(b) => AuthorizedKeys::Text(String::from_utf8(b).unwrap_or_default()),
                None => AuthorizedKeys::Unreadable,
            },
        });
        let attrs = |key: &str| kv.get(key).and_then(|a| util::parse_attrs(a));
        Ok(UserFacts {
            passwd,
            groups: kv
                .get("groups")
                .copied()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            primary: kv.get("primary").copied().unwrap_or("").to_string(),
            keys,
            ssh_dir: attrs("ssh_dir"),
            keys_attrs: attrs("keys_attrs"),
        })
    }
}

/// The command of [`UserFact`]: `passwd=` (the getent line, empty when there is no such user), then for an
/// existing user `groups=` (id -nG) and `primary=` (id -gn); with keys,
/// `ssh_dir=` and `keys_attrs=` (stat), `keys=` (base64 of authorized_keys, or
/// `unreadable`), or `keys=link` when either is a symbolic link.
pub fn gather_command(name: &str, with_keys: bool) -> String {
    let mut s = format!(
        "u={}; e=$(getent passwd \"$u\"); printf 'passwd=%s\\n' \"$e\"; if [ -n \"$e\" ]; then \
         printf 'groups=%s\\n' \"$(id -nG \"$u\")\"; printf 'primary=%s\\n' \"$(id -gn \"$u\")\"; ",
        quote(name)
    );
    if with_keys {
        s.push_str(&format!(
            "d=\"$(printf '%s\\n' \"$e\" | cut -d: -f6)/.ssh\"; k=\"$d/authorized_keys\"; \
             if [ -L \"$d\" ] || [ -L \"$k\" ]; then echo keys=link; elif [ -d \"$d\" ]; then stat -c 'ssh_dir={f}' -- \"$d\"; \
             if [ -f \"$k\" ]; then stat -c 'keys_attrs={f}' -- \"$k\"; if c=$(base64 -w0 < \"$k\"); then printf 'keys=%s\\n' \"$c\"; else echo keys=unreadable; fi; fi; fi; ",
            f = util::STAT_FORMAT
        ));
    }
    s.push_str("fi");
    s
}

/// A `getent passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

pub fn parse_passwd(line: &str) -> Option<Passwd> {
    let f: Vec<&str> = line.trim_end().split(':').collect();
    let [_, _, uid, gid, _, home, shell] = f.as_slice() else {
        return None;
    };
    Some(Passwd {
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        home: home.to_string(),
        shell: shell.to_string(),
    })
}

pub fn useradd_command(u: &User) -> String {
    let mut w: Vec<String> = vec!["useradd".into()];
    if u.system {
        w.push("--system".into());
    }
    w.push(
        if u.create_home {
            "--create-home"
        } else {
            "--no-create-home"
        }
        .into(),
    );
    if let Some(uid) = u.uid {
        w.extend(["--uid".into(), uid.to_string()]);
    }
    if let Some(g) = &u.group {
        w.extend(["--gid".into(), g.clone()]);
    }
    if !u.groups.is_empty() {
        w.extend(["--groups".into(), u.groups.join(",")]);
    }
    if let Some(h) = &u.home {
        w.extend(["--home-dir".into(), h.clone()]);
    }
    if let Some(s) = &u.shell {
        w.extend(["--shell".into(), s.clone()]);
    }
    w.push(u.name.clone());
    join(w)
}

/// Writes stdin to the user's authorized_keys (found at run time: a new user's
/// home is only known once created) through a temp file and a rename, with
/// ~/.ssh 0700 and the file 0600, both owned by the user. Refuses to follow
/// symbolic links the user could have planted.
pub fn keys_command(name: &str) -> String {
    format!(
        "set -e; u={}; h=$(getent passwd \"$u\" | cut -d: -f6); g=$(id -gn \"$u\"); \
         [ -n \"$h\" ] && [ -d \"$h\" ] || {{ echo \"the home directory of $u ($h) does not exist: set create_home = true\" >&2; exit 1; }}; \
         d=\"$h/.ssh\"; if [ -L \"$d\" ] || [ -L \"$d/authorized_keys\" ]; then echo \"$d or its authorized_keys is a symbolic link: refusing to write through it\" >&2; exit 1; fi; \
         mkdir -p \"$d\"; chown \"$u:$g\" \"$d\"; chmod 700 \"$d\"; t=$(mktemp \"$d/.authorized_keys.XXXXXX\"); trap 'rm -f \"$t\"' EXIT; \
         cat > \"$t\"; chown \"$u:$g\" \"$t\"; chmod 600 \"$t\"; mv -f \"$t\" \"$d/authorized_keys\"; trap - EXIT",
        quote(name)
    )
}

impl User {
    fn usermod(&self, now: &Passwd, groups: &[&str], primary: &str) -> Option<(String, String)> {
        let mut what = Vec::new();
        let mut w: Vec<String> = vec!["usermod".into()];
        if let Some(uid) = self.uid.filter(|u| *u != now.uid) {
            what.push(format!("uid {uid} (was {})", now.uid));
            w.extend(["--uid".into(), uid.to_string()]);
        }
        if let Some(g) = self
            .group
            .as_deref()
            .filter(|g| *g != primary && g.parse::<u32>().ok() != Some(now.gid))
        {
            what.push(format!("group {g} (was {primary})"));
            w.extend(["--gid".into(), g.to_string()]);
        }
        let missing: Vec<&str> = self
            .groups
            .iter()
            .map(String::as_str)
            .filter(|g| !groups.contains(g))
            .collect();
        if !missing.is_empty() {
            what.push(format!("groups +{}", missing.join(" +")));
            w.extend(["--append".into(), "--groups".into(), missing.join(",")]);
        }
        if let Some(h) = self.home.as_deref().filter(|h| *h != now.home) {
            // Not moved: moving a home is rarely wanted and not undoable.
            what.push(format!("home {h} (was {})", now.home));
            w.extend(["--home".into(), h.to_string()]);
        }
        if let Some(s) = self.shell.as_deref().filter(|s| *s != now.shell) {
            what.push(format!("shell {s} (was {})", now.shell));
            w.extend(["--shell".into(), s.to_string()]);
        }
        if what.is_empty() {
            return None;
        }
        w.push(self.name.clone());
        Some((
            format!("update user {}: {}", self.name, what.join(", ")),
            join(w),
        ))
    }

    /// The change to authorized_keys, if any: missing keys appended to what is
    /// there (other keys are kept), wrong modes or owners fixed.
    fn keys_change(
        &self,
        now: &UserFacts,
        home: &str,
        exists: bool,
    ) -> Result<Option<Change>, StepError> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let path = format!("{home}/.ssh/authorized_keys");
        let current = match &now.keys {
            Some(AuthorizedKeys::Link) => {
                return Err(StepError::new(format!(
                    "{home}/.ssh or its authorized_keys is a symbolic link"
                ))
                .hint("replace the link with a real directory and file"));
            }
            Some(AuthorizedKeys::Unreadable) => {
                return Err(StepError::new(format!("cannot read {path}"))
                    .hint("set `become = true` for this host"));
            }
            Some(AuthorizedKeys::Text(t)) => Some(t.clone()),
            None => None,
        };
        let have: Vec<String> = current
            .as_deref()
            .unwrap_or("")
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let missing: Vec<&String> = self.keys.iter().filter(|k| !have.contains(k)).collect();
        let owned = |attrs: &Option<Attrs>, mode: u32| {
            attrs
                .as_ref()
                .is_some_and(|a| a.mode == mode && a.owner == self.name)
        };
        let attrs_ok = !exists || (owned(&now.ssh_dir, 0o700) && owned(&now.keys_attrs, 0o600));
        if missing.is_empty() && attrs_ok {
            return Ok(None);
        }
        let mut after = current.clone().unwrap_or_default();
        if !after.is_empty() && !after.ends_with('\n') {
            after.push('\n');
        }
        for k in &missing {
            after.push_str(k);
            after.push('\n');
        }
        let summary = match missing.len() {
            0 => format!("fix mode and owner of {path} (0600) and its directory (0700)"),
            1 => format!("add 1 authorized key to {path}"),
            n => format!("add {n} authorized keys to {path}"),
        };
        let change = Change::new(
            summary,
            vec![Action::run_with_stdin(
                keys_command(&self.name),
                after.clone().into_bytes(),
            )],
        );
        Ok(Some(change.with_diff(FileDiff {
            path,
            before: current,
            after,
        })))
    }
}

impl Decide for User {
    type Fact = UserFact;

    fn fact(&self) -> UserFact {
        UserFact {
            name: self.name.clone(),
            with_keys: !self.keys.is_empty(),
        }
    }

    fn decide(&self, facts: UserFacts) -> Result<Check, StepError> {
        let name = &self.name;
        let Some(now) = &facts.passwd else {
            if self.state == State::Absent {
                return Ok(Check::Ok(format!("no user {name}")));
            }
            let mut changes = vec![Change::new(
                format!("create user {name}"),
                vec![Action::run(useradd_command(self))],
            )];
            let home = self.home.clone().unwrap_or_else(|| format!("/home/{name}"));
            changes.extend(self.keys_change(&facts, &home, false)?);
            return Ok(Check::Change(changes));
        };
        if self.state == State::Absent {
            let cmd = if self.remove_home {
                join(["userdel", "--remove", name])
            } else {
                join(["userdel", name])
            };
            let what = if self.remove_home {
                format!("remove user {name} and {}", now.home)
            } else {
                format!("remove user {name}")
            };
            return Ok(Check::Change(vec![Change::new(
                what,
                vec![Action::run(cmd)],
            )]));
        }
        let groups: Vec<&str> = facts.groups.iter().map(String::as_str).collect();
        let mut changes = Vec::new();
        if let Some((summary, cmd)) = self.usermod(now, &groups, &facts.primary) {
            changes.push(Change::new(summary, vec![Action::run(cmd)]));
        }
        changes.extend(self.keys_change(&facts, &now.home, true)?);
        if changes.is_empty() {
            let mut reason = format!("user {name} (uid {}", now.uid);
            if !self.keys.is_empty() {
                reason.push_str(&format!(
                    ", {} authorized key{}",
                    self.keys.len(),
                    if self.keys.len() > 1 { "s" } else { "" }
                ));
            }
            reason.push(')');
            return Ok(Check::Ok(reason));
        }
        Ok(Check::Change(changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{build as build_with, build_err};

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGz0eKqWk3n9q3sC0tHcXjW9m2b5y8yq7d3vQe1Xo0aB ops@laptop";
    const KEY2: &str =
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= ci@runner";

    fn step(with: &str) -> Box<dyn HostStep> {
        build_with(build, with).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// The concrete step, for the command builders.
    fn user(with: &str) -> User {
        let p: Params = util::params(&toml::from_str(with).unwrap(), KNOWN_KEYS).unwrap();
        User {
            name: p.name,
            uid: p.uid,
            group: p.group,
            groups: p.groups.0,
            shell: p.shell,
            home: p.home,
            system: p.system,
            create_home: p.create_home,
            state: p.state,
            remove_home: p.remove_home,
            keys: p.authorized_keys.0,
        }
    }

    /// `getent passwd deploy`, `id -nG deploy`, `id -gn deploy` and stat on Debian 12.
    fn existing(keys: Option<&str>) -> Facts {
        let mut s = String::from(
            "passwd=deploy:x:1001:1001:,,,:/home/deploy:/bin/bash\ngroups=deploy sudo\nprimary=deploy\n",
        );
        if let Some(k) = keys {
            s.push_str(&format!(
                "ssh_dir=700 deploy deploy 1001 1001 4096\nkeys_attrs=600 deploy deploy 1001 1001 {}\nkeys={}\n",
                k.len(),
                util::base64_encode(k.as_bytes())
            ));
        }
        Facts::new(s)
    }

    #[test]
    fn commands_are_exact() {
        assert_eq!(
            gather_command("deploy", false),
            "u=deploy; e=$(getent passwd \"$u\"); printf 'passwd=%s\\n' \"$e\"; if [ -n \"$e\" ]; then \
             printf 'groups=%s\\n' \"$(id -nG \"$u\")\"; printf 'primary=%s\\n' \"$(id -gn \"$u\")\"; fi"
        );
        assert!(
            gather_command("deploy", true).contains(
                "if [ -f \"$k\" ]; then stat -c 'keys_attrs=%a %U %G %u %g %s' -- \"$k\"; "
            )
        );
        assert_eq!(
            useradd_command(&user(
                "name = \"deploy\"\nuid = 1001\ngroups = [\"docker\", \"sudo\"]\nshell = \"/bin/bash\""
            )),
            "useradd --create-home --uid 1001 --groups docker,sudo --shell /bin/bash deploy"
        );
        assert_eq!(
            useradd_command(&user(
                "name = \"prometheus\"\nsystem = true\ncreate_home = false\nhome = \"/var/lib/prometheus\"\nshell = \"/usr/sbin/nologin\""
            )),
            "useradd --system --no-create-home --home-dir /var/lib/prometheus --shell /usr/sbin/nologin prometheus"
        );
        assert!(
            keys_command("deploy")
                .starts_with("set -e; u=deploy; h=$(getent passwd \"$u\" | cut -d: -f6); ")
        );
    }

    #[test]
    fn parses_passwd() {
        assert_eq!(
            parse_passwd("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
            Some(Passwd {
                uid: 65534,
                gid: 65534,
                home: "/nonexistent".into(),
                shell: "/usr/sbin/nologin".into()
            })
        );
        assert_eq!(parse_passwd("garbage"), None);
    }

    /// The change that adds one key to deploy's authorized_keys, leaving it as `file`.
    fn assert_adds_one_key(c: &Change, file: &str) {
        assert_eq!(
            c.summary,
            "add 1 authorized key to /home/deploy/.ssh/authorized_keys"
        );
        assert_eq!(
            c.actions,
            vec![Action::run_with_stdin(
                keys_command("deploy"),
                file.as_bytes().to_vec()
            )]
        );
    }

    #[test]
    fn fresh_host_creates_user_and_keys() {
        let s = step(&format!(
            "name = \"deploy\"\ngroups = [\"docker\"]\nshell = \"/bin/bash\"\nauthorized_keys = [\"{KEY}\"]"
        ));
        let Check::Change(c) = s.check(&Facts::new("passwd=\n")).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0],
            Change::new(
                "create user deploy",
                vec![Action::run(
                    "useradd --create-home --groups docker --shell /bin/bash deploy"
                )]
            )
        );
        assert_adds_one_key(&c[1], &format!("{KEY}\n"));
    }

    #[test]
    fn already_there() {
        let s = step(&format!(
            "name = \"deploy\"\ngroups = [\"sudo\"]\nshell = \"/bin/bash\"\nauthorized_keys = [\"{KEY}\"]"
        ));
        assert_eq!(
            s.check(&existing(Some(&format!("# managed elsewhere\n{KEY}\n"))))
                .unwrap(),
            Check::Ok("user deploy (uid 1001, 1 authorized key)".into())
        );
    }

    #[test]
    fn drifted_user_is_modified_and_keys_appended() {
        let s = step(&format!(
            "name = \"deploy\"\nuid = 1002\ngroups = [\"sudo\", \"docker\"]\nshell = \"/bin/zsh\"\nauthorized_keys = [\"{KEY}\", \"{KEY2}\"]"
        ));
        let Check::Change(c) = s.check(&existing(Some(KEY))).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0],
            Change::new(
                "update user deploy: uid 1002 (was 1001), groups +docker, shell /bin/zsh (was /bin/bash)",
                vec![Action::run(
                    "usermod --uid 1002 --append --groups docker --shell /bin/zsh deploy"
                )]
            )
        );
        assert_adds_one_key(&c[1], &format!("{KEY}\n{KEY2}\n"));
        assert_eq!(c[1].diff.as_ref().unwrap().before.as_deref(), Some(KEY));
    }

    #[test]
    fn loose_key_file_modes_are_fixed() {
        let s = step(&format!("name = \"deploy\"\nauthorized_keys = [\"{KEY}\"]"));
        let f = existing(Some(&format!("{KEY}\n")))
            .stdout
            .replace("keys_attrs=600", "keys_attrs=644");
        let Check::Change(c) = s.check(&Facts::new(f)).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "fix mode and owner of /home/deploy/.ssh/authorized_keys (0600) and its directory (0700)"
        );
        // No key file yet.
        let f =
            "passwd=deploy:x:1001:1001:,,,:/home/deploy:/bin/bash\ngroups=deploy\nprimary=deploy\n";
        let Check::Change(c) = s.check(&Facts::new(f)).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].diff.as_ref().unwrap().before, None);
        let e = s.check(&Facts::new(format!("{f}keys=link\n"))).unwrap_err();
        assert!(e.message.ends_with("is a symbolic link"));
        let e = s
            .check(&Facts::new(format!(
                "{f}ssh_dir=700 deploy deploy 1001 1001 4096\nkeys=unreadable\n"
            )))
            .unwrap_err();
        assert_eq!(e.message, "cannot read /home/deploy/.ssh/authorized_keys");
    }

    #[test]
    fn absent() {
        let s = step("name = \"olduser\"\nstate = \"absent\"\nremove_home = true");
        assert_eq!(
            s.check(&Facts::new("passwd=\n")).unwrap(),
            Check::Ok("no user olduser".into())
        );
        assert_eq!(
            s.check(&Facts::new("passwd=olduser:x:1003:1003::/home/olduser:/bin/sh\ngroups=olduser\nprimary=olduser\n")).unwrap(),
            Check::Change(vec![Change::new("remove user olduser and /home/olduser", vec![Action::run("userdel --remove olduser")])])
        );
    }

    #[test]
    fn param_errors() {
        let e = build_err(build_with(build, "name = \"Deploy\""));
        assert_eq!(e.key.as_deref(), Some("name"));
        let e = build_err(build_with(build, "name = \"deploy\"\ngroup = [\"docker\"]"));
        assert_eq!(
            e.message,
            "`group`: invalid type: sequence, expected a string"
        );
        let e = build_err(build_with(build, "name = \"deploy\"\nshel = \"/bin/bash\""));
        assert!(e.help.unwrap().starts_with("did you mean `shell`?"));
        let e = build_err(build_with(build, "name = \"deploy\"\nuid = -1"));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (
                Some("uid"),
                "`uid`: invalid value: integer `-1`, expected u32"
            )
        );
        for (keys, message) in [
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----",
                "authorized_keys entry 1 is a private key",
            ),
            (
                "AAAAC3Nza",
                "authorized_keys entry 1 does not look like a public key",
            ),
        ] {
            let with = format!("name = \"deploy\"\nauthorized_keys = [\"{keys}\"]");
            assert_eq!(build_err(build_with(build, &with)).message, message);
        }
        for (with, key) in [
            (
                "name = \"deploy\"\nstate = \"absent\"\nshell = \"/bin/sh\"",
                "shell",
            ),
            ("name = \"deploy\"\nremove_home = true", "remove_home"),
        ] {
            assert_eq!(build_err(build_with(build, with)).key.as_deref(), Some(key));
        }
    }
}
