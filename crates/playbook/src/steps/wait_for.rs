//! `wait_for`: wait until a TCP port answers (or stops answering), a path exists (or is gone),
//! or a probe command succeeds, within a timeout (Ansible's `wait_for` and `until`). A condition
//! that already holds is nothing to do; one that does not is a change that waits for it, so
//! `--check` says what it would wait for and a run fails the host, naming the condition, when
//! the time runs out.

use super::util::{self, Presence as State};
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Fact, Typed};
use provision_engine::step::{Action, Change, Check, Facts, HostStep, StepError};
use provision_transport::shell::quote;
use serde::Deserialize;

pub const KNOWN_KEYS: &[&str] = &["port", "host", "path", "command", "state", "timeout"];

/// Without `timeout`: five minutes, Ansible's default.
pub const DEFAULT_TIMEOUT: u64 = 300;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    port: Option<u16>,
    host: Option<String>,
    path: Option<String>,
    command: Option<String>,
    #[serde(default)]
    state: State,
    timeout: Option<u64>,
}

/// What is waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    Port { host: String, port: u16 },
    Path(String),
    Command(String),
}

#[derive(Debug)]
pub struct WaitFor {
    condition: Condition,
    absent: bool,
    timeout: u64,
}

pub fn build(with: &toml::Table, _ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let condition = match (p.port, p.path, p.command) {
        (Some(port), None, None) => {
            let host = p.host.clone().unwrap_or_else(|| "127.0.0.1".into());
            // It goes inside bash's /dev/tcp path: a name or an address, nothing else.
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:_".contains(c))
            {
                return Err(util::bad(
                    "host",
                    format!("`host` \"{host}\" is not a host name or address"),
                    "write a name such as db-1 or an address such as 10.0.0.5",
                ));
            }
            Condition::Port { host, port }
        }
        (None, Some(path), None) => Condition::Path(util::abs_path("path", &path)?),
        (None, None, Some(cmd)) if !cmd.trim().is_empty() => Condition::Command(cmd),
        (None, None, None) | (None, None, Some(_)) => {
            return Err(util::bad(
                "port",
                "wait_for needs what to wait for",
                "set one of port (with host), path or command",
            ));
        }
        _ => {
            return Err(util::bad(
                "port",
                "wait_for waits for one thing: port, path or command",
                "keep one of them; use several wait_for steps for several conditions",
            ));
        }
    };
    if p.host.is_some() && !matches!(condition, Condition::Port { .. }) {
        return Err(util::bad(
            "host",
            "`host` goes with `port`",
            "remove it, or wait for a port",
        ));
    }
    let absent = p.state == State::Absent;
    if absent && matches!(condition, Condition::Command(_)) {
        return Err(util::bad(
            "state",
            "state = \"absent\" waits for a port to close or a path to go; a command is waited for until it succeeds",
            "write the command so that it succeeds when the wait is over",
        ));
    }
    let timeout = p.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if timeout == 0 {
        return Err(util::bad(
            "timeout",
            "`timeout` must be at least 1 second",
            format!("leave it out for {DEFAULT_TIMEOUT} s"),
        ));
    }
    Ok(Box::new(Typed(WaitFor {
        condition,
        absent,
        timeout,
    })))
}

impl WaitFor {
    /// The POSIX sh test that is true when the wait is over.
    fn test(&self) -> String {
        let holds = match &self.condition {
            // bash's /dev/tcp: no netcat needed (Debian and Ubuntu always have bash).
            Condition::Port { host, port } => format!(
                "timeout 2 bash -c {} 2>/dev/null",
                quote(&format!("exec 3<>/dev/tcp/{host}/{port}"))
            ),
            Condition::Path(p) => format!("test -e {}", quote(p)),
            Condition::Command(c) => format!("sh -c {} >/dev/null 2>&1", quote(c)),
        };
        if self.absent {
            format!("! {holds}")
        } else {
            holds
        }
    }

    /// The condition as it holds: "port 80 on 127.0.0.1 answers".
    fn holding(&self) -> String {
        match (&self.condition, self.absent) {
            (Condition::Port { host, port }, false) => format!("port {port} on {host} answers"),
            (Condition::Port { host, port }, true) => format!("port {port} on {host} is closed"),
            (Condition::Path(p), false) => format!("{p} exists"),
            (Condition::Path(p), true) => format!("{p} is gone"),
            (Condition::Command(c), _) => format!("`{c}` succeeds"),
        }
    }

    fn what(&self) -> String {
        let (present, absent) = match &self.condition {
            Condition::Port { host, port } => (
                format!("port {port} on {host} to answer"),
                format!("port {port} on {host} to close"),
            ),
            Condition::Path(p) => (format!("{p} to exist"), format!("{p} to go")),
            Condition::Command(c) => (format!("`{c}` to succeed"), String::new()),
        };
        if self.absent { absent } else { present }
    }

    /// Polls once a second until the test holds; past the deadline, fails naming the condition.
    pub fn wait_command(&self) -> String {
        format!(
            "end=$(($(date +%s) + {t})); until {test}; do if [ \"$(date +%s)\" -ge \"$end\" ]; then echo {msg} >&2; exit 1; fi; sleep 1; done",
            t = self.timeout,
            test = self.test(),
            msg = quote(&format!(
                "gave up waiting for {} after {} s",
                self.what(),
                self.timeout
            )),
        )
    }
}

/// Whether the condition holds now.
pub struct Holds(String);

impl Fact for Holds {
    type Value = bool;

    fn command(&self) -> String {
        format!("if {}; then echo holds=yes; else echo holds=no; fi", self.0)
    }

    fn parse(&self, facts: &Facts) -> Result<bool, StepError> {
        match facts.kv().get("holds").copied() {
            Some("yes") => Ok(true),
            Some("no") => Ok(false),
            _ => Err(util::bad_facts("wait_for", &facts.stdout)),
        }
    }
}

impl Decide for WaitFor {
    type Fact = Holds;

    fn fact(&self) -> Holds {
        Holds(self.test())
    }

    fn decide(&self, holds: bool) -> Result<Check, StepError> {
        let what = self.what();
        Ok(if holds {
            Check::Ok(format!("no wait: {}", self.holding()))
        } else {
            Check::Change(vec![Change::new(
                format!("wait up to {} s for {what}", self.timeout),
                vec![Action::run(self.wait_command())],
            )])
        })
    }
}

inventory::submit! { crate::ctx::BuiltIn::host("wait_for", build) }

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{build as build_step, build_err};
    use provision_testkit::local::LocalShell;

    fn wait(with: &str) -> Box<dyn HostStep> {
        build_step(super::build, with).unwrap()
    }

    #[test]
    fn commands_are_exact() {
        let w = WaitFor {
            condition: Condition::Port {
                host: "db-1".into(),
                port: 5432,
            },
            absent: false,
            timeout: 60,
        };
        assert_eq!(
            w.fact().command(),
            "if timeout 2 bash -c 'exec 3<>/dev/tcp/db-1/5432' 2>/dev/null; then echo holds=yes; else echo holds=no; fi"
        );
        assert_eq!(
            w.wait_command(),
            "end=$(($(date +%s) + 60)); until timeout 2 bash -c 'exec 3<>/dev/tcp/db-1/5432' 2>/dev/null; do if [ \"$(date +%s)\" -ge \"$end\" ]; then echo 'gave up waiting for port 5432 on db-1 to answer after 60 s' >&2; exit 1; fi; sleep 1; done"
        );
        let gone = WaitFor {
            condition: Condition::Path("/run/app.lock".into()),
            absent: true,
            timeout: 5,
        };
        assert_eq!(
            gone.fact().command(),
            "if ! test -e /run/app.lock; then echo holds=yes; else echo holds=no; fi"
        );
    }

    #[test]
    fn decisions_and_the_fact_parser() {
        let w = WaitFor {
            condition: Condition::Command("curl -fsS http://127.0.0.1/health".into()),
            absent: false,
            timeout: 30,
        };
        assert_eq!(w.fact().parse(&Facts::new("holds=yes\n")), Ok(true));
        assert_eq!(w.fact().parse(&Facts::new("holds=no\n")), Ok(false));
        assert!(w.fact().parse(&Facts::new("")).is_err());
        assert_eq!(
            w.decide(true).unwrap(),
            Check::Ok("no wait: `curl -fsS http://127.0.0.1/health` succeeds".into())
        );
        let Check::Change(c) = w.decide(false).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "wait up to 30 s for `curl -fsS http://127.0.0.1/health` to succeed"
        );
    }

    #[test]
    fn bad_parameters_say_what_to_write() {
        let e = build_err(build_step(super::build, ""));
        assert_eq!(e.message, "wait_for needs what to wait for");
        let e = build_err(build_step(super::build, "port = 80\npath = \"/a\""));
        assert_eq!(
            e.message,
            "wait_for waits for one thing: port, path or command"
        );
        let e = build_err(build_step(super::build, "port = 80\nhost = \"a b\""));
        assert_eq!(e.key.as_deref(), Some("host"));
        let e = build_err(build_step(super::build, "path = \"/a\"\nhost = \"db\""));
        assert_eq!(e.message, "`host` goes with `port`");
        let e = build_err(build_step(
            super::build,
            "command = \"true\"\nstate = \"absent\"",
        ));
        assert_eq!(e.key.as_deref(), Some("state"));
        let e = build_err(build_step(super::build, "path = \"/a\"\ntimeout = 0"));
        assert_eq!(e.key.as_deref(), Some("timeout"));
        let e = build_err(build_step(super::build, "port = 70000"));
        assert_eq!(e.key.as_deref(), Some("port"));
    }

    #[test]
    fn waits_in_a_real_shell_and_gives_up_naming_the_condition() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("ready");
        let path = flag.to_str().unwrap();
        let t = LocalShell::new();
        // Already there: nothing to do.
        std::fs::write(&flag, "").unwrap();
        let present = wait(&format!("path = \"{path}\"\ntimeout = 5"));
        assert!(matches!(t.check(&*present).unwrap(), Check::Ok(_)));
        // Appears while waiting: the wait ends, and then there is nothing to do.
        std::fs::remove_file(&flag).unwrap();
        let writer = {
            let flag = flag.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(1500));
                std::fs::write(flag, "").unwrap();
            })
        };
        assert_eq!(
            t.converge(&*present),
            vec![format!("wait up to 5 s for {path} to exist")]
        );
        writer.join().unwrap();
        // Never comes: the command fails after the timeout, saying what it waited for.
        let never = dir.path().join("never");
        let w = wait(&format!(
            "path = \"{}\"\ntimeout = 1",
            never.to_str().unwrap()
        ));
        let Check::Change(c) = t.check(&*w).unwrap() else {
            panic!()
        };
        let Action::Run { script, .. } = &c[0].actions[0] else {
            panic!()
        };
        let out = t.sh(script, b"");
        assert_eq!(out.exit_status, Some(1));
        assert_eq!(
            out.stderr_str().trim(),
            format!(
                "gave up waiting for {} to exist after 1 s",
                never.to_str().unwrap()
            )
        );
        // A port: one that nothing listens on does not answer.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = port.local_addr().unwrap().port();
        assert!(matches!(
            t.check(&*wait(&format!("port = {open}"))).unwrap(),
            Check::Ok(_)
        ));
        drop(port);
        assert!(matches!(
            t.check(&*wait(&format!("port = {open}"))).unwrap(),
            Check::Change(_)
        ));
        assert!(matches!(
            t.check(&*wait(&format!("port = {open}\nstate = \"absent\"")))
                .unwrap(),
            Check::Ok(_)
        ));
    }
}
