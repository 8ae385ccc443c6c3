//! `service`: a systemd unit started or stopped, enabled or disabled at boot.
//! There is no `restarted`: restarting on every run is not a state; restart from a
//! `command` handler notified by the step that changed the service's configuration.

use super::systemd::{self, Verb};
use super::util;
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Typed};
use provision_engine::step::{Check, HostStep, StepError};
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
                        "restart when something changed: a [[handlers]] block with use = \"command\" and run = \"systemctl {} {}\", notified by the step that changes its configuration (notify = [\"NAME\"])",
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
    Ok(Box::new(Typed(Service {
        name: p.name,
        state,
        enabled: p.enabled,
    })))
}

inventory::submit! { crate::ctx::BuiltIn::host("service", build) }

impl Decide for Service {
    type Fact = systemd::UnitFact;

    fn fact(&self) -> systemd::UnitFact {
        systemd::UnitFact::new(&self.name)
    }

    fn decide(&self, u: systemd::Unit) -> Result<Check, StepError> {
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
        let unit_file = u.unit_file.as_str();
        match self.enabled {
            // transient (made at run time, by systemd-run): nothing to enable either.
            Some(true) if u.enabled() || unit_file == "transient" => ok.push(unit_file.to_string()),
            Some(true) => changes.push(systemd::change(Verb::Enable, name, or_none(unit_file))),
            Some(false)
                if matches!(
                    unit_file,
                    "enabled" | "enabled-runtime" | "linked" | "linked-runtime"
                ) =>
            {
                changes.push(systemd::change(Verb::Disable, name, unit_file))
            }
            Some(false) => ok.push(or_none(unit_file).to_string()),
            None => {}
        }
        match self.state {
            Some(State::Started) if u.running() => ok.push(u.active.to_string()),
            Some(State::Started) => changes.push(systemd::change(Verb::Start, name, &u.active)),
            Some(State::Stopped) if !u.running() => ok.push(u.active.to_string()),
            Some(State::Stopped) => changes.push(systemd::change(Verb::Stop, name, &u.active)),
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
    use provision_engine::step::{Action, Change, Facts};

    fn step(with: &str) -> Box<dyn HostStep> {
        build_with(build, with).unwrap_or_else(|e| panic!("{e:?}"))
    }

    // `systemctl show -p LoadState -p ActiveState -p UnitFileState nginx` on Debian 12.
    const RUNNING: &str = "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\n";
    const INSTALLED_STOPPED: &str =
        "LoadState=loaded\nActiveState=inactive\nUnitFileState=disabled\n";
    const MISSING: &str = "LoadState=not-found\nActiveState=inactive\nUnitFileState=\n";

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
                ..Default::default()
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
                "restart when something changed: a [[handlers]] block with use = \"command\" and run = \"systemctl restart nginx\", notified by the step that changes its configuration (notify = [\"NAME\"])"
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
