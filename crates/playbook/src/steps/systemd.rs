//! systemd units as the steps see them: a unit's state as a typed fact ([`UnitFact`]), and
//! the `systemctl` commands and changes that enable, start, stop, restart or reload it. One
//! place, so every step words and runs these the same way.

use super::apt;
use super::util::{self, Sections};
use provision_engine::fact::Fact;
use provision_engine::step::{Action, Change, Facts, StepError};
use provision_transport::shell::quote;

/// Reloads systemd's view of its configuration (units it generates from /etc/fstab, say),
/// only where systemd runs: containers and chroots may have none.
pub const DAEMON_RELOAD: &str = "if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi";

/// What `systemctl` is asked to do to a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Enable,
    Disable,
    Start,
    Stop,
    Restart,
    Reload,
    ReloadOrRestart,
}

impl Verb {
    /// systemctl's word for it, also the word of a change's summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Enable => "enable",
            Verb::Disable => "disable",
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
            Verb::Reload => "reload",
            Verb::ReloadOrRestart => "reload-or-restart",
        }
    }
}

/// `systemctl VERB UNIT`.
pub fn command(verb: Verb, unit: &str) -> String {
    format!("systemctl {} {}", verb.as_str(), quote(unit))
}

/// The change `VERB UNIT (was WAS)` running [`command`].
pub fn change(verb: Verb, unit: &str, was: &str) -> Change {
    Change::new(
        format!("{} {unit} (was {was})", verb.as_str()),
        vec![Action::run(command(verb, unit))],
    )
}

/// Enables and starts a unit in one command: for one whose package this plan installs.
pub fn enable_and_start(unit: &str) -> Change {
    Change::new(
        format!("enable and start {unit}"),
        vec![Action::run(format!(
            "systemctl enable --now {}",
            quote(unit)
        ))],
    )
}

/// The changes that leave a step's own service enabled and running. `now`: the unit's state,
/// None when this plan installs its package (the package starts it, unless a policy, as in
/// containers and some images, stops that: enabled and started in one command).
/// `restarting`: the plan restarts it anyway, which starts it.
pub fn keep_running(unit: &str, now: Option<&Unit>, restarting: bool) -> Vec<Change> {
    let Some(u) = now else {
        return vec![enable_and_start(unit)];
    };
    let mut changes = Vec::new();
    if !u.enabled() {
        let was = if u.unit_file.is_empty() {
            "unknown"
        } else {
            &u.unit_file
        };
        changes.push(change(Verb::Enable, unit, was));
    }
    if !u.running() && !restarting {
        changes.push(change(Verb::Start, unit, &u.active));
    }
    changes
}

/// A unit's state: one `systemctl show`, composed by the steps that keep a service running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFact {
    pub unit: String,
}

impl UnitFact {
    pub fn new(unit: impl Into<String>) -> UnitFact {
        UnitFact { unit: unit.into() }
    }
}

/// What the unit is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub load: String,
    pub active: String,
    pub unit_file: String,
}

impl Unit {
    /// Running, or about to be.
    pub fn running(&self) -> bool {
        matches!(self.active.as_str(), "active" | "reloading" | "activating")
    }

    /// Nothing to enable: enabled, or started when something else needs it (static,
    /// indirect, generated, an alias).
    pub fn enabled(&self) -> bool {
        matches!(
            self.unit_file.as_str(),
            "enabled" | "static" | "indirect" | "generated" | "alias"
        )
    }
}

impl Fact for UnitFact {
    type Value = Unit;

    fn command(&self) -> String {
        format!(
            "systemctl show -p LoadState -p ActiveState -p UnitFileState {}",
            quote(&self.unit)
        )
    }

    fn parse(&self, facts: &Facts) -> Result<Unit, StepError> {
        let kv = facts.kv();
        match (
            kv.get("LoadState"),
            kv.get("ActiveState"),
            kv.get("UnitFileState"),
        ) {
            (Some(load), Some(active), unit_file) => Ok(Unit {
                load: load.to_string(),
                active: active.to_string(),
                unit_file: unit_file.copied().unwrap_or("").to_string(),
            }),
            _ if facts.stdout.trim().is_empty() => {
                Err(StepError::new("systemctl show printed nothing")
                    .hint("is systemd running on this host (not a container without systemd)?"))
            }
            _ => Err(util::bad_facts("systemctl show", &facts.stdout)),
        }
    }
}

/// The facts of a step that installs a package and keeps its service running, read from the
/// `apt` section (the apt step's own command) and the `service` section ([`UnitFact`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packaged {
    /// The apt step's output: it decides over it itself.
    pub apt: Facts,
    pub installed: bool,
    /// None until the package is installed: before, there is no unit to read.
    pub unit: Option<Unit>,
}

impl Packaged {
    pub fn parse(s: &Sections, package: &str, unit: &str) -> Result<Packaged, StepError> {
        let apt = s.get("apt")?.clone();
        let installed = apt::parse(&apt.stdout)?
            .dpkg
            .iter()
            .any(|d| d.name == package && d.installed());
        let unit = installed
            .then(|| UnitFact::new(unit).parse(s.get("service")?))
            .transpose()?;
        Ok(Packaged {
            apt,
            installed,
            unit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `systemctl show -p LoadState -p ActiveState -p UnitFileState nginx` on Debian 12.
    const RUNNING: &str = "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\n";

    fn gather_command(unit: &str) -> String {
        UnitFact::new(unit).command()
    }

    fn parse(facts: &Facts) -> Result<Unit, StepError> {
        UnitFact::new("nginx").parse(facts)
    }

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
    fn commands_are_exact() {
        assert_eq!(
            command(Verb::ReloadOrRestart, "haproxy.service"),
            "systemctl reload-or-restart haproxy.service"
        );
        assert_eq!(command(Verb::Stop, "a\\x2db"), "systemctl stop 'a\\x2db'");
        assert_eq!(
            change(Verb::Disable, "apache2", "enabled"),
            Change::new(
                "disable apache2 (was enabled)",
                vec![Action::run("systemctl disable apache2")]
            )
        );
        assert_eq!(
            enable_and_start("docker.service"),
            Change::new(
                "enable and start docker.service",
                vec![Action::run("systemctl enable --now docker.service")]
            )
        );
    }

    #[test]
    fn parses_captured_output() {
        let f = Facts::new(RUNNING);
        let u = parse(&f).unwrap();
        assert_eq!(
            u,
            Unit {
                load: "loaded".into(),
                active: "active".into(),
                unit_file: "enabled".into()
            }
        );
        assert!(u.running() && u.enabled());
        // A unit that does not exist prints an empty UnitFileState, older systemd none at all.
        let f = Facts::new("LoadState=not-found\nActiveState=inactive\n");
        assert_eq!(parse(&f).unwrap().unit_file, "");
        let e = parse(&Facts::new("Frobnicated=yes\n")).unwrap_err();
        assert!(e.message.contains("systemctl show"), "{}", e.message);
    }

    #[test]
    fn keeps_a_service_enabled_and_running() {
        let s = "nfs-server.service";
        assert_eq!(keep_running(s, None, false), vec![enable_and_start(s)]);
        let f = Facts::new(RUNNING);
        assert_eq!(keep_running(s, Some(&parse(&f).unwrap()), false), vec![]);
        let f = Facts::new("LoadState=loaded\nActiveState=failed\nUnitFileState=\n");
        let u = parse(&f).unwrap();
        assert_eq!(
            keep_running(s, Some(&u), false),
            vec![
                Change::new(
                    "enable nfs-server.service (was unknown)",
                    vec![Action::run("systemctl enable nfs-server.service")]
                ),
                Change::new(
                    "start nfs-server.service (was failed)",
                    vec![Action::run("systemctl start nfs-server.service")]
                ),
            ]
        );
        // Restarted by the plan anyway: no separate start.
        assert_eq!(keep_running(s, Some(&u), true).len(), 1);
    }
}
