//! The `docker` step's packages: ca-certificates, curl and apparmor first, then the engine,
//! Docker's docker-ce and its plugins or the distribution's docker.io, with a pinned `version`
//! of docker-ce installed by its own command and held. The other engine being installed is an
//! error, never a silent swap that would restart every container.

use super::apt;
use super::system_files::system_files;
use super::util;
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::Fact;
use provision_engine::step::{Action, Change, Check, Facts, HostStep, StepError};
use provision_transport::shell::quote;
use serde::Deserialize;

pub const SERVICE: &str = "docker.service";

system_files! {
    os_release: "/etc/os-release",
    apt_proxy: "/etc/apt/apt.conf.d/01provision-proxy",
    keyring: "/etc/apt/keyrings/docker.asc",
    sources: "/etc/apt/sources.list.d/docker.sources",
    /// The one-line sources file of Docker's older instructions: its Signed-By
    /// would conflict with ours and break apt-get update.
    legacy_list: "/etc/apt/sources.list.d/docker.list",
    daemon_json: "/etc/docker/daemon.json",
}

/// Installed before anything else: the key is fetched with curl.
pub const PREREQUISITES: &[&str] = &["ca-certificates", "curl"];

/// Docker's packages, as its installation guide lists them.
pub const DOCKER_PACKAGES: &[&str] = &[
    "docker-ce",
    "docker-ce-cli",
    "containerd.io",
    "docker-buildx-plugin",
    "docker-compose-plugin",
];

/// Packages are installed without recommends (predictable), except this one:
/// Debian and Ubuntu kernels enable AppArmor, and dockerd cannot start
/// containers without apparmor_parser (docker-ce-packaging#845).
pub const APPARMOR: &str = "apparmor";

/// Packages whose state decides the plan: the engines and what provides /usr/bin/docker.
const ENGINE_QUERIES: &[&str] = &["docker-ce", "docker-ce-cli", "docker.io", "podman-docker"];

/// Where the engine comes from (`source`).
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Docker,
    Distro,
}

impl Source {
    /// Refuses `key`, when set, with source = "distro": only Docker's repository uses it.
    pub fn only_docker(self, key: &str, set: bool) -> Result<(), ParamError> {
        if set && self == Source::Distro {
            Err(util::bad(
                key,
                format!("`{key}` applies only to source = \"docker\""),
                format!("remove `{key}`, or set source = \"docker\""),
            ))
        } else {
            Ok(())
        }
    }
}

/// The packages, as inner apt steps, and the pin.
pub struct Engine {
    source: Source,
    version: Option<String>,
    pub prereq: Box<dyn HostStep>,
    pub packages: Box<dyn HostStep>,
}

/// `version`, checked: only for Docker's packages, and a Debian version.
pub fn check_version(
    source: Source,
    version: Option<String>,
) -> Result<Option<String>, ParamError> {
    let version = util::non_empty(version);
    source.only_docker("version", version.is_some())?;
    if let Some(v) = &version
        && apt::parse_package(&format!("docker-ce={v}")).is_none()
    {
        return Err(util::bad(
            "version",
            format!("`version` \"{v}\" is not a Debian package version"),
            "e.g. version = \"27.3.1\" (the newest build of it) or the full \"5:27.3.1-1~debian.12~bookworm\"",
        ));
    }
    Ok(version)
}

/// The state of the engines and of what provides /usr/bin/docker, read with dpkg.
pub struct DpkgFact;

impl Fact for DpkgFact {
    type Value = apt::AptFacts;

    fn command(&self) -> String {
        let queries: Vec<String> = ENGINE_QUERIES.iter().map(|s| s.to_string()).collect();
        apt::gather_command(&queries, false)
    }

    fn parse(&self, facts: &Facts) -> Result<apt::AptFacts, StepError> {
        apt::parse(&facts.stdout)
    }
}

/// Installs docker-ce and docker-ce-cli at the newest build matching `version`
/// (as [`version_matches`] reads it), looked up with apt-cache madison, and holds them.
pub fn pinned_install_command(version: &str) -> String {
    let install = apt::install_command(&[], false, true);
    format!(
        "v=$(LC_ALL=C apt-cache madison docker-ce | awk -v {} '{{ x = $3; if (index(w, \":\") == 0) sub(/^[0-9]+:/, \"\", x) }} \
         x == w || index(x, w \"-\") == 1 || index(x, w \"~\") == 1 || index(x, w \".\") == 1 {{ print $3; exit }}'); \
         [ -n \"$v\" ] || {{ echo {} >&2; exit 1; }}; \
         {} --allow-change-held-packages \"docker-ce=$v\" \"docker-ce-cli=$v\" && apt-mark hold docker-ce docker-ce-cli",
        quote(&format!("w={version}")),
        quote(&format!(
            "docker-ce {version} is not in Docker's repository for this system (apt-cache madison docker-ce lists the versions)"
        )),
        install.trim_end(),
    )
}

/// Whether an installed version satisfies a pin: a full version (with epoch)
/// must be equal; "27.3.1" or "27.3" match the builds of that release.
pub fn version_matches(installed: &str, want: &str) -> bool {
    if want.contains(':') {
        return installed == want;
    }
    let bare = installed.split_once(':').map_or(installed, |(_, v)| v);
    bare == want
        || bare
            .strip_prefix(want)
            .is_some_and(|r| r.starts_with(['-', '~', '.']))
}

impl Engine {
    pub fn new(
        source: Source,
        version: Option<String>,
        ctx: &BuildCtx<'_>,
    ) -> Result<Engine, ParamError> {
        let apt_step = |packages: Vec<&str>| {
            let mut t = toml::Table::new();
            t.insert(
                "packages".into(),
                toml::Value::Array(packages.into_iter().map(toml::Value::from).collect()),
            );
            apt::build(&t, ctx)
        };
        let (prereq, packages) = match source {
            Source::Distro => (
                apt_step(PREREQUISITES.to_vec())?,
                apt_step(vec![APPARMOR, "docker.io"])?,
            ),
            Source::Docker => {
                // A pinned pair is installed by its own command (the exact version is
                // looked up on the host); the rest follow the lists.
                let pinned =
                    |p: &&str| version.is_some() && matches!(*p, "docker-ce" | "docker-ce-cli");
                let mut prereq = PREREQUISITES.to_vec();
                prereq.push(APPARMOR);
                let rest: Vec<&str> = DOCKER_PACKAGES
                    .iter()
                    .filter(|p| !pinned(p))
                    .copied()
                    .collect();
                (apt_step(prereq)?, apt_step(rest)?)
            }
        };
        Ok(Engine {
            source,
            version,
            prereq,
            packages,
        })
    }

    pub fn main_package(&self) -> &'static str {
        match self.source {
            Source::Docker => "docker-ce",
            Source::Distro => "docker.io",
        }
    }

    /// The installed version of the engine asked for, refusing the other one.
    pub fn installed<'a>(
        &self,
        dpkg: &'a apt::AptFacts,
        host: &str,
    ) -> Result<Option<&'a str>, StepError> {
        let installed = |name: &str| dpkg.dpkg.iter().find(|d| d.name == name && d.installed());
        let (other, wanted) = match self.source {
            Source::Docker => (
                ["docker.io", "podman-docker"],
                "source = \"docker\" (Docker's docker-ce)",
            ),
            Source::Distro => (
                ["docker-ce", "podman-docker"],
                "source = \"distro\" (docker.io)",
            ),
        };
        if let Some(o) = other.iter().find(|o| installed(o).is_some()) {
            let switch = match self.source {
                Source::Docker => "source = \"distro\"",
                Source::Distro => "source = \"docker\"",
            };
            return Err(StepError::new(format!("{host}: {o} is installed, but the step asks for {wanted}"))
                .hint(format!("switching engines restarts every container: remove {o} by hand first (apt-get purge {o}), or set {switch}")));
        }
        Ok(installed(self.main_package()).map(|d| d.version.as_str()))
    }

    /// The packages installed first; `updated`: whether the plan refreshes the lists.
    pub fn prereq_changes(
        &self,
        facts: &Facts,
        updated: &mut bool,
    ) -> Result<Vec<Change>, StepError> {
        Self::apt_changes(&*self.prereq, facts, updated)
    }

    /// The engine's packages and the pin; `updated`: whether the plan refreshes the lists.
    pub fn package_changes(
        &self,
        facts: &Facts,
        dpkg: &apt::AptFacts,
        updated: &mut bool,
    ) -> Result<Vec<Change>, StepError> {
        let mut changes = Self::apt_changes(&*self.packages, facts, updated)?;
        self.pinned_changes(dpkg, *updated, &mut changes);
        // The pin's own refresh, like the apt steps', is remembered for the rest of the run.
        Ok(apt::mark_updates(changes))
    }

    /// The changes of an inner apt step, noting whether they refresh the lists.
    fn apt_changes(
        step: &dyn HostStep,
        facts: &Facts,
        updated: &mut bool,
    ) -> Result<Vec<Change>, StepError> {
        match step.check(facts)? {
            Check::Change(c) => {
                let update = Action::run(apt::update_command());
                *updated |= c.iter().any(|c| c.actions.contains(&update));
                Ok(c)
            }
            _ => Ok(Vec::new()),
        }
    }

    /// A pinned `version` installed and held; `updated`: the plan already refreshes the lists.
    fn pinned_changes(&self, dpkg: &apt::AptFacts, updated: bool, changes: &mut Vec<Change>) {
        let Some(want) = &self.version else { return };
        let pair = ["docker-ce", "docker-ce-cli"];
        let have: Vec<Option<&apt::Dpkg>> = pair
            .iter()
            .map(|n| dpkg.dpkg.iter().find(|d| d.name == *n && d.installed()))
            .collect();
        let matching = have
            .iter()
            .all(|d| d.is_some_and(|d| version_matches(&d.version, want)));
        if !matching {
            let was = have[0].map_or("not installed".to_string(), |d| d.version.clone());
            let mut actions = Vec::new();
            // The version is looked up in the lists: refresh them unless this plan already does.
            if !updated {
                actions.push(Action::run(apt::update_command()));
            }
            actions.push(Action::run(pinned_install_command(want)));
            changes.push(Change::new(
                format!("install docker-ce and docker-ce-cli {want} (was {was}) and hold them"),
                actions,
            ));
        } else if !have
            .iter()
            .all(|d| d.is_some_and(|d| d.status.starts_with('h')))
        {
            changes.push(Change::new(
                format!(
                    "hold docker-ce and docker-ce-cli at {}",
                    have[0].map_or("", |d| d.version.as_str())
                ),
                vec![Action::run("apt-mark hold docker-ce docker-ce-cli")],
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::docker::testing::*;

    #[test]
    fn commands_are_exact() {
        assert_eq!(
            pinned_install_command("27.3.1"),
            format!(
                "v=$(LC_ALL=C apt-cache madison docker-ce | awk -v w=27.3.1 '{{ x = $3; if (index(w, \":\") == 0) sub(/^[0-9]+:/, \"\", x) }} \
                 x == w || index(x, w \"-\") == 1 || index(x, w \"~\") == 1 || index(x, w \".\") == 1 {{ print $3; exit }}'); \
                 [ -n \"$v\" ] || {{ echo 'docker-ce 27.3.1 is not in Docker'\\''s repository for this system (apt-cache madison docker-ce lists the versions)' >&2; exit 1; }}; \
                 {} --allow-change-held-packages \"docker-ce=$v\" \"docker-ce-cli=$v\" && apt-mark hold docker-ce docker-ce-cli",
                INSTALL.replace(
                    "--no-install-recommends",
                    "--no-install-recommends --allow-downgrades"
                )
            )
        );
    }

    #[test]
    fn already_done() {
        let s = step("users = \"deploy\"");
        assert_eq!(
            s.check(&facts(&done(), true, true)).unwrap(),
            Check::Ok("docker-ce 5:27.3.1-1~debian.12~bookworm running, /etc/docker/daemon.json up to date".into())
        );
        let s = step("version = \"27.3.1\"");
        let mut h = done();
        h.dpkg = "pkg=hi  docker-ce amd64 5:27.3.1-1~debian.12~bookworm\npkg=hi  docker-ce-cli amd64 5:27.3.1-1~debian.12~bookworm\n";
        assert!(matches!(
            s.check(&facts(&h, true, false)).unwrap(),
            Check::Ok(_)
        ));
        let s = step("source = \"distro\"");
        let mut h = done();
        h.prereq = "pkg=ii  ca-certificates all 20230311\npkg=ii  curl amd64 7.88.1-10+deb12u12\n";
        h.engine =
            "pkg=ii  apparmor amd64 3.0.8-3\npkg=ii  docker.io amd64 20.10.24+dfsg1-1+deb12u1\n";
        h.dpkg = "pkg=ii  docker.io amd64 20.10.24+dfsg1-1+deb12u1\n";
        assert_eq!(
            s.check(&facts(&h, false, false)).unwrap(),
            Check::Ok(
                "docker.io 20.10.24+dfsg1-1+deb12u1 running, /etc/docker/daemon.json up to date"
                    .into()
            )
        );
    }

    #[test]
    fn versions() {
        let v = "5:27.3.1-1~debian.12~bookworm";
        for ok in ["27.3.1", "27.3", "27", v] {
            assert!(version_matches(v, ok), "{ok}");
        }
        for no in ["27.3.10", "27.30", "2", "5:27.3.1", "27.3.1-2"] {
            assert!(!version_matches(v, no), "{no}");
        }
    }

    #[test]
    fn fresh_host_from_the_distribution() {
        let s = step("source = \"distro\"");
        let mut h = fresh();
        h.prereq = "pkg=ii  ca-certificates all 20230311\ncandidate=curl 7.88.1-10+deb12u12\n";
        h.engine = "candidate=apparmor 3.0.8-3\ncandidate=docker.io 20.10.24+dfsg1-1+deb12u1\n";
        let c = s.check(&facts(&h, false, false)).unwrap();
        assert_eq!(
            summaries(&c),
            vec![
                "install curl",
                "write /etc/docker/daemon.json (before the engine first starts)",
                "install apparmor, docker.io",
                "enable and start docker.service",
            ]
        );
    }

    #[test]
    fn drifted_pin() {
        // A pin that the installed version does not satisfy; lists fresh, so refreshed here.
        let s = step("version = \"28.0\"");
        let Check::Change(c) = s.check(&facts(&done(), true, false)).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "install docker-ce and docker-ce-cli 28.0 (was 5:27.3.1-1~debian.12~bookworm) and hold them"
        );
        assert_eq!(
            c[0].actions,
            vec![
                Action::run(apt::update_command()),
                Action::run(pinned_install_command("28.0"))
            ]
        );
        // Its refresh is remembered for the run's later package steps on this host.
        assert_eq!(c[0].marks, vec![apt::LISTS_UPDATED.to_string()]);
        // Satisfied but not held.
        let s = step("version = \"27.3\"");
        let Check::Change(c) = s.check(&facts(&done(), true, false)).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "hold docker-ce and docker-ce-cli at 5:27.3.1-1~debian.12~bookworm"
        );
    }

    #[test]
    fn refuses_the_other_engine() {
        let s = step("source = \"distro\"");
        let e = s.check(&facts(&done(), false, false)).unwrap_err();
        assert_eq!(
            e.message,
            "web-1: docker-ce is installed, but the step asks for source = \"distro\" (docker.io)"
        );
        assert!(
            e.hint
                .unwrap()
                .starts_with("switching engines restarts every container")
        );
        let s = step("");
        let mut h = fresh();
        h.dpkg = "pkg=ii  docker.io amd64 20.10.24+dfsg1-1+deb12u1\n";
        let e = s.check(&facts(&h, true, false)).unwrap_err();
        assert_eq!(
            e.message,
            "web-1: docker.io is installed, but the step asks for source = \"docker\" (Docker's docker-ce)"
        );
    }

    #[test]
    fn param_errors() {
        let e = build_err(build_with_ctx(
            build,
            "source = \"distro\"\nversion = \"27.3.1\"",
        ));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (
                Some("version"),
                "`version` applies only to source = \"docker\""
            )
        );
        let e = build_err(build_with_ctx(build, "version = \"latest\""));
        assert_eq!(
            e.message,
            "`version` \"latest\" is not a Debian package version"
        );
    }
}
