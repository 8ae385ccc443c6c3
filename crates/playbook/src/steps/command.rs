//! `command`: runs a sh script, guarded by `creates`, `unless` and `only_if` so
//! that it runs only when needed. Without a guard it runs, and reports a change,
//! on every run: add a guard to make it idempotent.

use super::util;
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Fact, Typed};
use provision_engine::step::{Action, Change, Check, Facts, HostStep, StepError};
use provision_transport::shell::quote;
use serde::Deserialize;

pub const KNOWN_KEYS: &[&str] = &["run", "creates", "unless", "only_if", "stdin"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    run: String,
    creates: Option<String>,
    unless: Option<String>,
    only_if: Option<String>,
    stdin: Option<String>,
}

pub struct Command {
    run: String,
    creates: Option<String>,
    unless: Option<String>,
    only_if: Option<String>,
    stdin: Option<String>,
}

pub fn build(with: &toml::Table, _ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    if p.run.trim().is_empty() {
        return Err(util::bad(
            "run",
            "`run` is empty",
            "write the sh script to run, e.g. run = \"make install\"",
        ));
    }
    let creates = p
        .creates
        .map(|c| util::abs_path("creates", &c))
        .transpose()?;
    for (key, v) in [("unless", &p.unless), ("only_if", &p.only_if)] {
        if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err(util::bad(
                key,
                format!("`{key}` is empty"),
                format!(
                    "write a command, e.g. {key} = \"test -x /usr/bin/docker\", or remove `{key}`"
                ),
            ));
        }
    }
    let command = Command {
        run: p.run,
        creates,
        unless: p.unless,
        only_if: p.only_if,
        stdin: p.stdin,
    };
    Ok(
        if command.creates.is_none() && command.unless.is_none() && command.only_if.is_none() {
            Box::new(Unguarded(command))
        } else {
            Box::new(Typed(command))
        },
    )
}

inventory::submit! { crate::ctx::BuiltIn::host("command", build).stdin_params(&["stdin"]) }

/// The guards as `key=value` lines: `creates=yes|no`, then the exit status of
/// `unless` and `only_if`, each run in its own `sh -c` with output discarded
/// (a syntax error there only makes it fail, it cannot break the fact batch).
pub fn gather_command(
    creates: Option<&str>,
    unless: Option<&str>,
    only_if: Option<&str>,
) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(p) = creates {
        let p = quote(p);
        parts.push(format!(
            "if [ -e {p} ] || [ -L {p} ]; then echo creates=yes; else echo creates=no; fi"
        ));
    }
    for (key, cmd) in [("unless", unless), ("only_if", only_if)] {
        if let Some(c) = cmd {
            parts.push(format!(
                "sh -c {} >/dev/null 2>&1; echo \"{key}=$?\"",
                quote(c)
            ));
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("; "))
    }
}

/// The fact a guarded command needs: its guards, gathered by [`gather_command`].
pub struct GuardFact {
    pub creates: Option<String>,
    pub unless: Option<String>,
    pub only_if: Option<String>,
}

/// The guards' outcomes; None for a guard the step does not have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Guards {
    /// Whether the `creates` path exists.
    pub creates: Option<bool>,
    /// Exit statuses.
    pub unless: Option<i64>,
    pub only_if: Option<i64>,
}

impl Fact for GuardFact {
    type Value = Guards;

    fn command(&self) -> String {
        // Empty only without guards, and such a command is not built as a typed step.
        gather_command(
            self.creates.as_deref(),
            self.unless.as_deref(),
            self.only_if.as_deref(),
        )
        .unwrap_or_default()
    }

    fn parse(&self, facts: &Facts) -> Result<Guards, StepError> {
        let kv = facts.kv();
        let bad = || util::bad_facts("command guard", &facts.stdout);
        let status = |key: &str, guard: &Option<String>| -> Result<Option<i64>, StepError> {
            guard
                .as_ref()
                .map(|_| {
                    kv.get(key)
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or_else(bad)
                })
                .transpose()
        };
        let creates = match (&self.creates, kv.get("creates").copied()) {
            (None, _) => None,
            (Some(_), Some("yes")) => Some(true),
            (Some(_), Some("no")) => Some(false),
            (Some(_), _) => return Err(bad()),
        };
        Ok(Guards {
            creates,
            unless: status("unless", &self.unless)?,
            only_if: status("only_if", &self.only_if)?,
        })
    }
}

impl Decide for Command {
    type Fact = GuardFact;

    fn fact(&self) -> GuardFact {
        GuardFact {
            creates: self.creates.clone(),
            unless: self.unless.clone(),
            only_if: self.only_if.clone(),
        }
    }

    fn decide(&self, guards: Guards) -> Result<Check, StepError> {
        if let (Some(p), Some(true)) = (&self.creates, guards.creates) {
            // The guard holds: the state the command creates is there, so "ok".
            return Ok(Check::Ok(format!("{p} exists (creates)")));
        }
        if let (Some(u), Some(0)) = (&self.unless, guards.unless) {
            return Ok(Check::Ok(format!(
                "`{}` succeeded (unless)",
                util::short(u)
            )));
        }
        if let (Some(o), Some(code)) = (&self.only_if, guards.only_if)
            && code != 0
        {
            return Ok(Check::Skip(format!(
                "`{}` exited {code} (only_if)",
                util::short(o)
            )));
        }
        let action = match &self.stdin {
            Some(s) => Action::run_with_stdin(self.run.clone(), s.as_bytes()),
            None => Action::run(self.run.clone()),
        };
        Ok(Check::Change(vec![Change::new(
            format!("run `{}`", util::short(&self.run)),
            vec![action],
        )]))
    }
}

/// A command without guards gathers nothing (a typed step always gathers) and runs every time.
struct Unguarded(Command);

impl HostStep for Unguarded {
    fn gather(&self) -> Option<String> {
        None
    }

    fn check(&self, _facts: &Facts) -> Result<Check, StepError> {
        self.0.decide(Guards::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{build as build_with, build_err};

    fn step(with: &str) -> Box<dyn HostStep> {
        build_with(build, with).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn gather_commands_are_exact() {
        assert_eq!(gather_command(None, None, None), None);
        assert_eq!(
            gather_command(
                Some("/opt/app/.installed"),
                Some("grep -q '^x' /etc/x"),
                Some("test -x /usr/bin/docker")
            )
            .unwrap(),
            "if [ -e /opt/app/.installed ] || [ -L /opt/app/.installed ]; then echo creates=yes; else echo creates=no; fi; \
             sh -c 'grep -q '\\''^x'\\'' /etc/x' >/dev/null 2>&1; echo \"unless=$?\"; \
             sh -c 'test -x /usr/bin/docker' >/dev/null 2>&1; echo \"only_if=$?\""
        );
    }

    #[test]
    fn unguarded_runs_every_time() {
        let s = step("run = \"systemctl daemon-reload\"");
        assert_eq!(s.gather(), None);
        assert_eq!(
            s.check(&Facts::default()).unwrap(),
            Check::Change(vec![Change::new(
                "run `systemctl daemon-reload`",
                vec![Action::run("systemctl daemon-reload")]
            )])
        );
    }

    #[test]
    fn creates_guard() {
        let s = step("run = \"tar xzf /tmp/app.tgz -C /opt\"\ncreates = \"/opt/app\"");
        // Fresh host: runs.
        assert!(matches!(
            s.check(&Facts::new("creates=no\n")).unwrap(),
            Check::Change(_)
        ));
        // Already done: skipped, saying why.
        assert_eq!(
            s.check(&Facts::new("creates=yes\n")).unwrap(),
            Check::Ok("/opt/app exists (creates)".into())
        );
        assert!(s.check(&Facts::new("")).is_err());
    }

    #[test]
    fn unless_and_only_if() {
        let s = step(
            "run = \"docker swarm init\"\nunless = \"docker info | grep -q 'Swarm: active'\"\nonly_if = \"command -v docker\"",
        );
        assert_eq!(
            s.check(&Facts::new("unless=0\nonly_if=0\n")).unwrap(),
            Check::Ok("`docker info | grep -q 'Swarm: active'` succeeded (unless)".into())
        );
        assert_eq!(
            s.check(&Facts::new("unless=1\nonly_if=127\n")).unwrap(),
            Check::Skip("`command -v docker` exited 127 (only_if)".into())
        );
        let Check::Change(c) = s.check(&Facts::new("unless=1\nonly_if=0\n")).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].summary, "run `docker swarm init`");
        assert!(s.check(&Facts::new("unless=\n")).is_err());
    }

    #[test]
    fn stdin_is_passed_as_stdin_never_argv() {
        let s = step("run = \"chpasswd\"\nstdin = \"app:pw\"");
        let Check::Change(c) = s.check(&Facts::default()).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].actions,
            vec![Action::run_with_stdin("chpasswd", b"app:pw".to_vec())]
        );
        assert_eq!(c[0].actions[0].describe(), "chpasswd");
    }

    #[test]
    fn param_errors() {
        let e = build_err(build_with(build, "run = \"x\"\ncreate = \"/x\""));
        assert_eq!(e.key.as_deref(), Some("create"));
        assert!(e.help.unwrap().starts_with("did you mean `creates`?"));
        let e = build_err(build_with(build, "run = [\"a\"]"));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (
                Some("run"),
                "`run`: invalid type: sequence, expected a string"
            )
        );
        let e = build_err(build_with(build, "run = \"x\"\ncreates = \"opt/x\""));
        assert_eq!(e.key.as_deref(), Some("creates"));
        let e = build_err(build_with(build, "run = \" \""));
        assert_eq!(e.message, "`run` is empty");
        let e = build_err(build_with(build, "creates = \"/x\""));
        assert_eq!(e.message, "missing field `run`");
    }
}
