//! `service`: a systemd unit started or stopped, enabled or disabled at boot.
//! There is no `restarted`: restarting on every run is not a state; restart
//! from a `command` step guarded by `when` (or `unless`) instead.

use super::util;
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::step::{Action, Change, Check, Facts, HostStep, StepError};
use provision_transport::shell::join;
use serde::Deserialize;

pub const KNOWN_KEYS: &[&str] = &["name", "state", "enabled"];

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Started,
    Stopped,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    state: Option<toml::Value>,
    enabled: Option<bool>,
}

pub struct Service {
    name: String,
    state: Option<State>,
    enabled: Option<bool>,
}

pub fn build(with: &toml::Table, _ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let valid = !p.name.is_empty()
        && !p.name.starts_with('-')
        && p.name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'@' | b'-' | b'\\')
        });
    if !valid {
        return Err(util::bad(
            "name",
            format!("`name` \"{}\" is not a systemd unit name", p.name),
            "e.g. name = \"nginx\" or \"docker.socket\"",
        ));
    }
    let state = match p.state {
        None => None,
        Some(toml::Value::String(s)) => Some(match s.as_str() {
            "started" => State::Started,
            "stopped" => State::Stopped,
            "restarted" | "reloaded" => {
                return Err(util::bad(
                    "state",
                    format!(
                        "state = \"{s}\" is not supported: it would {} on every run",
                        &s[..s.len() - 2]
                    ),
                    format!(
                        "use a `command` step with run = \"systemctl {} {}\" and a `when` (or `unless`) saying when it is needed",
                        &s[..s.len() - 2],
                        p.name
                    ),
                ));
            }
            other => {
                return Err(util::bad(
                    "state",
                    format!("unknown state \"{other}\""),
                    "use state = \"started\" or \"stopped\"",
                ));
            }
        }),
        Some(v) => {
            return Err(util::bad(
                "state",
                format!("`state` must be a string, not {}", v.type_str()),
                "use state = \"started\" or \"stopped\"",
            ));
        }
    };
    if state.is_none() && p.enabled.is_none() {
        return Err(
            ParamError::new(Some("name"), "`service` needs `state`, `enabled`, or both")
                .help("e.g. state = \"started\" and enabled = true"),
        );
    }
    Ok(Box::new(Service {
        name: p.name,
        state,
        enabled: p.enabled,
    }))
}

pub fn gather_command(name: &str) -> String {
    format!(
        "systemctl show -p LoadState -p ActiveState -p UnitFileState {}",
        join([name])
    )
}

/// What the unit is now.
#[derive(Debug, PartialEq, Eq)]
pub struct Unit<'a> {
    pub load: &'a str,
    pub active: &'a str,
    pub unit_file: &'a str,
}

pub fn parse(facts: &Facts) -> Result<Unit<'_>, StepError> {
    let kv = facts.kv();
    match (
        kv.get("LoadState"),
        kv.get("ActiveState"),
        kv.get("UnitFileState"),
    ) {
        (Some(load), Some(active), unit_file) => Ok(Unit {
            load,
            active,
            unit_file: unit_file.copied().unwrap_or(""),
        }),
        _ if facts.stdout.trim().is_empty() => {
            Err(StepError::new("systemctl show printed nothing")
                .hint("is systemd running on this host (not a container without systemd)?"))
        }
        _ => Err(util::bad_facts("systemctl show", &facts.stdout)),
    }
}

impl HostStep for Service {
    fn gather(&self) -> Option<String> {
        Some(gather_command(&self.name))
    }

    fn check(&self, facts: &Facts) -> Result<Check, StepError> {
        let u = parse(facts)?;
        let name = &self.name;
        if u.load == "not-found" {
            return Err(StepError::new(format!("unit {name} not found")).hint("install the package that provides it first (an `apt` step before this one), or check the name"));
        }
        if u.load == "masked" || u.unit_file == "masked" {
            return Err(
                StepError::new(format!("unit {name} is masked")).hint(format!(
                    "unmask it with a `command` step: systemctl unmask {name}"
                )),
            );
        }
        let mut changes = Vec::new();
        let mut ok = Vec::new();
        match self.enabled {
            // static, indirect, generated, transient: nothing to enable, it starts when needed.
            Some(true)
                if matches!(
                    u.unit_file,
                    "enabled" | "static" | "indirect" | "generated" | "transient" | "alias"
                ) =>
            {
                ok.push(u.unit_file.to_string())
            }
            Some(true) => changes.push(Change::new(
                format!("enable {name} (was {})", or_none(u.unit_file)),
                vec![Action::run(join(["systemctl", "enable", name]))],
            )),
            Some(false)
                if matches!(
                    u.unit_file,
                    "enabled" | "enabled-runtime" | "linked" | "linked-runtime"
                ) =>
            {
                changes.push(Change::new(
                    format!("disable {name} (was {})", u.unit_file),
                    vec![Action::run(join(["systemctl", "disable", name]))],
                ))
            }
            Some(false) => ok.push(or_none(u.unit_file).to_string()),
            None => {}
        }
        let running = matches!(u.active, "active" | "reloading" | "activating");
        match self.state {
            Some(State::Started) if running => ok.push(u.active.to_string()),
            Some(State::Started) => changes.push(Change::new(
                format!("start {name} (was {})", u.active),
                vec![Action::run(join(["systemctl", "start", name]))],
            )),
            Some(State::Stopped) if !running => ok.push(u.active.to_string()),
            Some(State::Stopped) => changes.push(Change::new(
                format!("stop {name} (was {})", u.active),
                vec![Action::run(join(["systemctl", "stop", name]))],
            )),
            None => {}
        }
        if changes.is_empty() {
            Ok(Check::Ok(format!("{name} {}", ok.join(", "))))
        } else {
            Ok(Check::Change(changes))
        }
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "no unit file state"
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{build as build_with, build_err};

    fn step(with: &str) -> Box<dyn HostStep> {
        build_with(build, with).unwrap_or_else(|e| panic!("{e:?}"))
    }

    // `systemctl show -p LoadState -p ActiveState -p UnitFileState nginx` on Debian 12.
    const RUNNING: &str = "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\n";
    const INSTALLED_STOPPED: &str =
        "LoadState=loaded\nActiveState=inactive\nUnitFileState=disabled\n";
    const MISSING: &str = "LoadState=not-found\nActiveState=inactive\nUnitFileState=\n";

    #[test]
    fn gather_command_is_exact() {
        assert_eq!(
            gather_command("nginx"),
            "systemctl show -p LoadState -p ActiveState -p UnitFileState nginx"
        );
        assert_eq!(
            gather_command("getty@tty1.service"),
            "systemctl show -p LoadState -p ActiveState -p UnitFileState getty@tty1.service"
        );
        assert_eq!(
            gather_command("a\\x2db"),
            "systemctl show -p LoadState -p ActiveState -p UnitFileState 'a\\x2db'"
        );
    }

    #[test]
    fn fresh_host_starts_and_enables() {
        let s = step("name = \"nginx\"\nstate = \"started\"\nenabled = true");
        assert_eq!(
            s.check(&Facts::new(INSTALLED_STOPPED)).unwrap(),
            Check::Change(vec![
                Change::new(
                    "enable nginx (was disabled)",
                    vec![Action::run("systemctl enable nginx")]
                ),
                Change::new(
                    "start nginx (was inactive)",
                    vec![Action::run("systemctl start nginx")]
                ),
            ])
        );
    }

    #[test]
    fn already_running() {
        let s = step("name = \"nginx\"\nstate = \"started\"\nenabled = true");
        assert_eq!(
            s.check(&Facts::new(RUNNING)).unwrap(),
            Check::Ok("nginx enabled, active".into())
        );
        let s = step("name = \"systemd-journald\"\nenabled = true");
        assert_eq!(
            s.check(&Facts::new(
                "LoadState=loaded\nActiveState=active\nUnitFileState=static\n"
            ))
            .unwrap(),
            Check::Ok("systemd-journald static".into())
        );
    }

    #[test]
    fn drifted_is_stopped_and_disabled() {
        let s = step("name = \"apache2\"\nstate = \"stopped\"\nenabled = false");
        assert_eq!(
            s.check(&Facts::new(RUNNING)).unwrap(),
            Check::Change(vec![
                Change::new(
                    "disable apache2 (was enabled)",
                    vec![Action::run("systemctl disable apache2")]
                ),
                Change::new(
                    "stop apache2 (was active)",
                    vec![Action::run("systemctl stop apache2")]
                ),
            ])
        );
        assert_eq!(
            s.check(&Facts::new(
                "LoadState=loaded\nActiveState=failed\nUnitFileState=disabled\n"
            ))
            .unwrap(),
            Check::Ok("apache2 disabled, failed".into())
        );
    }

    #[test]
    fn missing_or_masked_unit() {
        let s = step("name = \"nginx\"\nstate = \"started\"");
        let e = s.check(&Facts::new(MISSING)).unwrap_err();
        assert_eq!(e.message, "unit nginx not found");
        assert!(e.hint.unwrap().starts_with("install the package"));
        let e = s
            .check(&Facts::new(
                "LoadState=masked\nActiveState=inactive\nUnitFileState=masked\n",
            ))
            .unwrap_err();
        assert_eq!(e.message, "unit nginx is masked");
        let e = s
            .check(&Facts {
                stdout: String::new(),
                exit_status: Some(1),
            })
            .unwrap_err();
        assert_eq!(e.message, "systemctl show printed nothing");
    }

    #[test]
    fn param_errors() {
        let e = build_err(build_with(build, "name = \"nginx\"\nstate = \"restarted\""));
        assert_eq!(
            e.message,
            "state = \"restarted\" is not supported: it would restart on every run"
        );
        assert_eq!(
            e.help.as_deref(),
            Some(
                "use a `command` step with run = \"systemctl restart nginx\" and a `when` (or `unless`) saying when it is needed"
            )
        );
        let e = build_err(build_with(build, "name = \"nginx\"\nstate = \"running\""));
        assert_eq!(
            (e.key.as_deref(), e.help.as_deref()),
            (
                Some("state"),
                Some("use state = \"started\" or \"stopped\"")
            )
        );
        let e = build_err(build_with(build, "name = \"nginx\""));
        assert_eq!(e.message, "`service` needs `state`, `enabled`, or both");
        let e = build_err(build_with(
            build,
            "name = \"nginx; reboot\"\nenabled = true",
        ));
        assert_eq!(e.key.as_deref(), Some("name"));
        let e = build_err(build_with(build, "name = \"nginx\"\nenable = true"));
        assert!(e.help.unwrap().starts_with("did you mean `enabled`?"));
        let e = build_err(build_with(build, "name = \"nginx\"\nenabled = \"yes\""));
        assert_eq!(
            e.message,
            "`enabled`: invalid type: string \"yes\", expected a boolean"
        );
    }
}
