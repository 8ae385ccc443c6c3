//! `docker`: the Docker engine from Docker's apt repository (`source =
//! "docker"`, the production default) or from the distribution (`"distro"`:
//! `docker.io`), configured by /etc/docker/daemon.json, enabled and running,
//! with `users` in the docker group. Also installs curl (the swarm steps talk
//! to the Docker socket with it) and ca-certificates.
//!
//! daemon.json is written before the first install, so the engine starts with
//! it; later changes are validated by `dockerd --validate` (Docker 23 and later)
//! on a staged copy before they replace the live file and docker is restarted: one host at a
//! time where dockerd was running (the plan is serial then), so a swarm never loses every node's
//! engine at once; a first install, which starts dockerd, stays parallel.
//! A pinned `version` is held with apt-mark; removing `version` leaves holds
//! alone (they may be an administrator's). The other engine being installed is
//! an error, never a silent swap that would restart every container.
//!
//! This file is the step: its parameters and the order of its parts, which live beside it
//! (docker_repo: where packages come from; docker_engine: the packages; docker_daemon:
//! daemon.json; docker_users: the docker group).

use super::apt;
use super::docker_daemon;
use super::docker_engine::{self, DpkgFact, Engine, Source};
// Where the Docker install keeps its files and its unit: beside the engine, read by every part.
pub use super::docker_engine::{Files, SERVICE};
use super::docker_repo::{self, OsFact, Repo, RepoFacts, SourcesFact};
use super::docker_users::{self, Members, UsersFact};
use super::file::{self, PathFacts};
use super::system_files::Built;
use super::systemd;
use super::util::{self, List, Sections};
use crate::ctx::BuildCtx;
use provision_engine::fact::{Decide, Fact, Typed};
use provision_engine::step::{Change, Check, Facts, StepError};
use serde::Deserialize;

/// Where tests of the whole step (and the lab) find what the step writes.
pub use super::docker_repo::{fetch_key_command, proxy_conf, sources_content};

pub const KNOWN_KEYS: &[&str] = &[
    "source",
    "version",
    "apt_proxy",
    "mirror",
    "daemon",
    "users",
    "gpg_key",
    "gpg_key_url",
    "repo_url",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    source: Option<Source>,
    version: Option<String>,
    apt_proxy: Option<String>,
    mirror: Option<String>,
    daemon: Option<toml::Table>,
    #[serde(default)]
    users: List,
    gpg_key: Option<String>,
    gpg_key_url: Option<String>,
    repo_url: Option<String>,
}

pub struct Docker {
    source: Source,
    repo: Repo,
    engine: Engine,
    users: Vec<String>,
    daemon_json: String,
    host: String,
    files: Files,
}

pub fn build(with: &toml::Table, ctx: &BuildCtx<'_>) -> Built {
    build_with(with, ctx, Files::default())
}

inventory::submit! { crate::ctx::BuiltIn::host("docker", build) }

/// [`build`] with the system files somewhere else (tests).
pub fn build_with(with: &toml::Table, ctx: &BuildCtx<'_>, files: Files) -> Built {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let source = p.source.unwrap_or_default();
    let version = docker_engine::check_version(source, p.version)?;
    let repo = Repo::new(source, p.apt_proxy, p.gpg_key, p.gpg_key_url, p.repo_url)?;
    let mirror = util::non_empty(p.mirror)
        .map(|u| docker_repo::url("mirror", u))
        .transpose()?;
    let users = p
        .users
        .0
        .iter()
        .map(|u| util::account_name("users", u, false))
        .collect::<Result<Vec<_>, _>>()?;
    // The raw table: through serde, TOML dates turn into private marker tables.
    let raw_daemon = p
        .daemon
        .as_ref()
        .and(with.get("daemon"))
        .and_then(toml::Value::as_table);
    let daemon = docker_daemon::daemon_config(raw_daemon, mirror.as_deref())?;
    Ok(Box::new(Typed(Docker {
        source,
        repo,
        engine: Engine::new(source, version, ctx)?,
        users,
        daemon_json: docker_daemon::json_text(&daemon),
        host: ctx.host.name.clone(),
        files,
    })))
}

/// The fact the docker step needs: [`DockerFacts`]. Sections, in the order of the parts:
/// `os` (Docker's repository only), `proxy`, `prereq` (its apt step's command), `key` and
/// `sources` (Docker's repository only), `engine` (its apt step's command), `dpkg`, `daemon`,
/// `users` (when there are any), `service`.
pub struct DockerFact {
    pub files: Files,
    /// Docker's repository (`source = "docker"`): its facts are gathered too.
    pub repo: bool,
    pub prereq: String,
    pub engine: String,
    pub users: Vec<String>,
}

pub struct DockerFacts {
    /// The engines, read with dpkg.
    pub dpkg: apt::AptFacts,
    pub proxy: PathFacts,
    /// The inner apt steps' output: they decide over it themselves.
    pub prereq: Facts,
    pub engine: Facts,
    pub repo: Option<RepoFacts>,
    pub daemon: PathFacts,
    pub users: Option<Members>,
    /// Read only where the engine is installed, which the step decides (it refuses the other
    /// engine first): the unit's error waits until then.
    pub service: Result<systemd::Unit, StepError>,
}

impl Fact for DockerFact {
    type Value = DockerFacts;

    fn command(&self) -> String {
        let f = &self.files;
        let mut parts = Vec::new();
        if self.repo {
            parts.push((
                "os",
                OsFact {
                    os_release: &f.os_release,
                }
                .command(),
            ));
        }
        parts.push((
            "proxy",
            file::gather_command(&f.apt_proxy, Some(file::DIFF_LIMIT)),
        ));
        parts.push(("prereq", self.prereq.clone()));
        if self.repo {
            parts.push((
                "key",
                file::gather_command(&f.keyring, Some(file::DIFF_LIMIT)),
            ));
            parts.push(("sources", SourcesFact { files: f }.command()));
        }
        parts.push(("engine", self.engine.clone()));
        parts.push(("dpkg", DpkgFact.command()));
        parts.push((
            "daemon",
            file::gather_command(&f.daemon_json, Some(file::DIFF_LIMIT)),
        ));
        if !self.users.is_empty() {
            parts.push(("users", UsersFact { users: &self.users }.command()));
        }
        parts.push(("service", systemd::UnitFact::new(SERVICE).command()));
        util::sections(&parts)
    }

    fn parse(&self, facts: &Facts) -> Result<DockerFacts, StepError> {
        let s = Sections::parse(facts);
        let f = &self.files;
        let repo = if self.repo {
            Some(RepoFacts {
                os: OsFact {
                    os_release: &f.os_release,
                }
                .parse(s.get("os")?)?,
                key: file::parse(s.get("key")?)?,
                sources: SourcesFact { files: f }.parse(s.get("sources")?)?,
            })
        } else {
            None
        };
        let users = if self.users.is_empty() {
            None
        } else {
            Some(UsersFact { users: &self.users }.parse(s.get("users")?)?)
        };
        Ok(DockerFacts {
            dpkg: DpkgFact.parse(s.get("dpkg")?)?,
            proxy: file::parse(s.get("proxy")?)?,
            prereq: s.get("prereq")?.clone(),
            engine: s.get("engine")?.clone(),
            repo,
            daemon: file::parse(s.get("daemon")?)?,
            users,
            service: s
                .get("service")
                .and_then(|u| systemd::UnitFact::new(SERVICE).parse(u)),
        })
    }
}

impl Decide for Docker {
    type Fact = DockerFact;

    fn fact(&self) -> DockerFact {
        DockerFact {
            files: self.files.clone(),
            repo: self.source == Source::Docker,
            prereq: self.engine.prereq.gather().unwrap_or_default(),
            engine: self.engine.packages.gather().unwrap_or_default(),
            users: self.users.clone(),
        }
    }

    fn decide(&self, now: DockerFacts) -> Result<Check, StepError> {
        let version = self.engine.installed(&now.dpkg, &self.host)?;
        let installed = version.is_some();
        let mut changes = Vec::new();
        let mut updated = false;
        changes.extend(self.repo.proxy_change(&self.files.apt_proxy, &now.proxy)?);
        changes.extend(self.engine.prereq_changes(&now.prereq, &mut updated)?);
        if let Some(repo) = &now.repo {
            self.repo
                .changes(&self.files, &self.host, repo, &mut changes)?;
        }
        let (mut daemon, restarts) = docker_daemon::change(
            &self.files.daemon_json,
            &self.daemon_json,
            &now.daemon,
            installed,
        )?;
        // Restarting a running dockerd stops its containers, and under the swarm its tasks and
        // a manager's raft member, until it is back: the hosts where it does restart one at a
        // time (a first install, which starts dockerd, stays parallel).
        let running = installed && now.service.as_ref().is_ok_and(systemd::Unit::running);
        if restarts && running {
            daemon = daemon.map(Change::one_at_a_time);
        }
        if !installed {
            changes.extend(daemon.clone());
        }
        changes.extend(
            self.engine
                .package_changes(&now.engine, &now.dpkg, &mut updated)?,
        );
        if installed {
            changes.extend(daemon);
        }
        if let Some(members) = &now.users {
            changes.extend(docker_users::change(&self.users, &self.host, members)?);
        }
        let unit = if installed { Some(now.service?) } else { None };
        changes.extend(systemd::keep_running(SERVICE, unit.as_ref(), restarts));
        if changes.is_empty() {
            Ok(Check::Ok(format!(
                "{} {} running, {} up to date",
                self.engine.main_package(),
                version.unwrap_or(""),
                self.files.daemon_json
            )))
        } else {
            Ok(Check::Change(changes))
        }
    }
}

/// The fake host that the tests of the step and of its parts check against.
#[cfg(test)]
pub(crate) mod testing {
    pub(crate) use super::build;
    use super::*;
    pub(crate) use crate::steps::fixtures::{LISTS, file_facts, summaries};
    pub(crate) use crate::steps::testing::{build as build_with_ctx, build_err};
    pub(crate) use provision_engine::step::{Action, Check, Facts, HostStep};

    pub(crate) fn step(with: &str) -> Box<dyn HostStep> {
        build_with_ctx(build, with).unwrap_or_else(|e| panic!("{e:?}"))
    }

    pub(crate) const INSTALL: &str = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout=300";

    pub(crate) const DEFAULT_JSON: &str = "{\n  \"log-driver\": \"json-file\",\n  \"log-opts\": {\n    \"max-file\": \"3\",\n    \"max-size\": \"10m\"\n  }\n}\n";

    pub(crate) fn sources() -> String {
        sources_content(
            "https://download.docker.com/linux/debian",
            "bookworm",
            "amd64",
            "/etc/apt/keyrings/docker.asc",
        )
    }

    pub(crate) struct Host<'a> {
        pub prereq: &'a str,
        pub key: Option<&'a str>,
        pub sources: Option<String>,
        pub legacy: bool,
        pub engine: &'a str,
        pub dpkg: &'a str,
        pub daemon: Option<&'a str>,
        pub users: &'a str,
        pub service: &'a str,
    }

    pub(crate) const CE: &str = "pkg=ii  docker-ce amd64 5:27.3.1-1~debian.12~bookworm\npkg=ii  docker-ce-cli amd64 5:27.3.1-1~debian.12~bookworm\n";

    /// A Debian 12 host where source = "docker" is fully applied.
    pub(crate) fn done<'a>() -> Host<'a> {
        Host {
            prereq: "pkg=ii  ca-certificates all 20230311\npkg=ii  curl amd64 7.88.1-10+deb12u12\npkg=ii  apparmor amd64 3.0.8-3\n",
            key: Some("-----BEGIN PGP PUBLIC KEY BLOCK-----\n...\n"),
            sources: Some(sources()),
            legacy: false,
            engine: "pkg=ii  docker-ce amd64 5:27.3.1-1~debian.12~bookworm\npkg=ii  docker-ce-cli amd64 5:27.3.1-1~debian.12~bookworm\npkg=ii  containerd.io amd64 1.7.22-1\npkg=ii  docker-buildx-plugin amd64 0.17.1-1~debian.12~bookworm\npkg=ii  docker-compose-plugin amd64 2.29.7-1~debian.12~bookworm\n",
            dpkg: CE,
            daemon: Some(DEFAULT_JSON),
            users: "group=docker:x:998:deploy\nuser=deploy\n",
            service: "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\n",
        }
    }

    /// A bare Debian 12 cloud host: curl and ca-certificates there, nothing of docker.
    pub(crate) fn fresh<'a>() -> Host<'a> {
        Host {
            prereq: "pkg=ii  ca-certificates all 20230311\npkg=ii  curl amd64 7.88.1-10+deb12u12\ncandidate=apparmor 3.0.8-3\n",
            key: None,
            sources: None,
            legacy: false,
            engine: "",
            dpkg: "",
            daemon: None,
            users: "user=deploy\n",
            service: "LoadState=not-found\nActiveState=inactive\nUnitFileState=\n",
        }
    }

    pub(crate) fn facts(h: &Host<'_>, docker: bool, users: bool) -> Facts {
        let mut s = String::new();
        if docker {
            s.push_str("--- os\nid=debian\ncodename=bookworm\narch=amd64\n");
        }
        s.push_str(&format!(
            "--- proxy\nkind=absent\n--- prereq\n{}{LISTS}",
            h.prereq
        ));
        if docker {
            s.push_str(&format!(
                "--- key\n{}--- sources\n{}",
                file_facts(h.key),
                file_facts(h.sources.as_deref())
            ));
            if h.legacy {
                s.push_str("legacy=yes\n");
            }
        }
        s.push_str(&format!(
            "--- engine\n{}{LISTS}--- dpkg\n{}--- daemon\n{}",
            h.engine,
            h.dpkg,
            file_facts(h.daemon)
        ));
        if users {
            s.push_str(&format!("--- users\n{}", h.users));
        }
        s.push_str(&format!("--- service\n{}", h.service));
        Facts::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::docker::testing::*;
    use crate::steps::docker_daemon::apply_daemon_json_command;

    #[test]
    fn gather_command_is_exact() {
        let s = step("users = [\"deploy\"]");
        let g = s.gather().unwrap();
        assert!(g.starts_with("echo '--- os'; ( . /etc/os-release; echo \"id=$ID\"; echo \"codename=${VERSION_CODENAME:-$UBUNTU_CODENAME}\" ); echo \"arch=$(dpkg --print-architecture)\"; echo '--- proxy'; "), "{g}");
        assert!(g.contains("; if [ -e /etc/apt/sources.list.d/docker.list ]; then echo legacy=yes; fi; echo '--- engine'; "));
        assert!(g.contains("echo '--- users'; getent group docker | sed 's/^/group=/'; getent passwd deploy | cut -d: -f1 | sed 's/^/user=/'; "));
        assert!(g.ends_with("echo '--- service'; systemctl show -p LoadState -p ActiveState -p UnitFileState docker.service"));
        assert!(
            !step("source = \"distro\"")
                .gather()
                .unwrap()
                .contains("--- os")
        );
    }

    #[test]
    fn fresh_host_from_dockers_repository() {
        let s = step("users = [\"deploy\"]");
        let c = s.check(&facts(&fresh(), true, true)).unwrap();
        assert_eq!(
            summaries(&c),
            vec![
                "install apparmor",
                "fetch Docker's signing key from https://download.docker.com/linux/debian/gpg into /etc/apt/keyrings/docker.asc",
                "add Docker's repository (https://download.docker.com/linux/debian bookworm stable) in /etc/apt/sources.list.d/docker.sources",
                "write /etc/docker/daemon.json (before the engine first starts)",
                "install docker-ce, docker-ce-cli, containerd.io, docker-buildx-plugin, docker-compose-plugin (after apt-get update: docker-ce is not in the package lists)",
                "add deploy to the docker group",
                "enable and start docker.service",
            ]
        );
        let Check::Change(c) = c else { panic!() };
        assert_eq!(
            c[1].actions,
            vec![Action::run(fetch_key_command(
                "https://download.docker.com/linux/debian/gpg",
                "/etc/apt/keyrings/docker.asc",
                false
            ))]
        );
        assert_eq!(c[3].actions[0], Action::run("mkdir -p /etc/docker"));
        let Action::Upload {
            dest,
            content,
            mode,
            ..
        } = &c[3].actions[1]
        else {
            panic!()
        };
        assert_eq!(
            (dest.as_str(), &content[..], *mode),
            (
                "/etc/docker/daemon.json",
                DEFAULT_JSON.as_bytes(),
                Some(0o644)
            )
        );
        assert_eq!(
            c[4].actions,
            vec![
                Action::run(apt::update_command()),
                Action::run(format!(
                    "{INSTALL} docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin"
                ))
            ]
        );
        assert_eq!(c[5].actions, vec![Action::run("usermod -aG docker deploy")]);
        assert_eq!(
            c[6].actions,
            vec![Action::run("systemctl enable --now docker.service")]
        );
    }

    #[test]
    fn drifted() {
        // New settings: staged, validated, moved, restarted; no separate start.
        let s = step("daemon = { mtu = 1450 }");
        let mut h = done();
        h.service = "LoadState=loaded\nActiveState=failed\nUnitFileState=disabled\n";
        h.legacy = true;
        let c = s.check(&facts(&h, true, false)).unwrap();
        assert_eq!(
            summaries(&c),
            vec![
                "remove /etc/apt/sources.list.d/docker.list (replaced by /etc/apt/sources.list.d/docker.sources)",
                "update /etc/docker/daemon.json and restart docker",
                "enable docker.service (was disabled)",
            ]
        );
        let Check::Change(c) = c else { panic!() };
        assert_eq!(c[1].actions[0], Action::run("mkdir -p /etc/docker"));
        assert!(
            matches!(&c[1].actions[1], Action::Upload { dest, mode: Some(0o644), .. } if dest == "/etc/docker/daemon.json.provision-new")
        );
        assert_eq!(
            c[1].actions[2],
            Action::run(apply_daemon_json_command("/etc/docker/daemon.json"))
        );
        assert_eq!(
            c[1].diff.as_ref().unwrap().before.as_deref(),
            Some(DEFAULT_JSON)
        );
    }

    #[test]
    fn param_errors() {
        let e = build_err(build_with_ctx(build, "source = \"apt\""));
        assert_eq!(
            e.message,
            "`source`: unknown variant `apt`, expected `docker` or `distro`"
        );
        let e = build_err(build_with_ctx(build, "sourc = \"docker\""));
        assert!(e.help.unwrap().starts_with("did you mean `source`?"));
    }
}

/// A daemon.json change restarts a running dockerd one host at a time; a first install (which
/// starts dockerd) and a restart of a dockerd that was not running stay parallel.
#[cfg(test)]
mod rolling_tests {
    use crate::steps::docker::testing::*;
    use provision_engine::event::MemorySink;
    use provision_engine::facts::answer_batch;
    use provision_engine::step::{PerHost, Step};
    use provision_engine::{RunOptions, Runner};
    use provision_transport::fake::{FakeConnector, FakeTransport};
    use provision_transport::{Output, Target};
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const RESTART: &str = "systemctl restart docker.service";
    const START: &str = "systemctl enable --now docker.service";

    fn on_two_hosts(with: &str) -> PerHost {
        PerHost {
            title: "docker".into(),
            hosts: ["h1", "h2"].map(|h| (h.to_string(), step(with))).into(),
        }
    }

    #[test]
    fn only_a_restart_of_a_running_daemon_is_planned_one_host_at_a_time() {
        let both = |h: &Host<'_>| -> BTreeMap<String, Facts> {
            ["h1", "h2"]
                .map(|n| (n.to_string(), facts(h, true, false)))
                .into()
        };
        let new_settings = on_two_hosts("daemon = { mtu = 1450 }");
        let plan = new_settings.plan(&both(&done()));
        assert!(plan.serial, "dockerd running on both: one at a time");
        assert_eq!(plan.order, ["h1", "h2"], "in inventory order");
        let Some(Ok(Check::Change(c))) = plan.hosts.get("h2") else {
            panic!("{plan:?}")
        };
        assert_eq!(
            summaries(&Check::Change(c.clone())),
            ["update /etc/docker/daemon.json and restart docker"]
        );

        let mut stopped = done();
        stopped.service = "LoadState=loaded\nActiveState=failed\nUnitFileState=enabled\n";
        assert!(
            !new_settings.plan(&both(&stopped)).serial,
            "nothing running to keep up: restarted everywhere at once"
        );
        let first_install = on_two_hosts("");
        let plan = first_install.plan(&both(&fresh()));
        assert!(!plan.serial, "a first install is parallel");
        assert!(matches!(plan.hosts.get("h1"), Some(Ok(Check::Change(_)))));
        assert!(
            !on_two_hosts("").plan(&both(&done())).serial,
            "nothing to do"
        );
    }

    /// Each host's (command, seconds since start) for every command but fact gathering.
    type Journal = Arc<Mutex<Vec<(String, String, u64)>>>;

    /// Runs `step` on h1 and h2, which answer `host`'s facts; `slow` takes 10 s (paused clock).
    async fn run(step: PerHost, host: &Host<'_>, slow: &str) -> Journal {
        let journal: Journal = Arc::default();
        let t0 = tokio::time::Instant::now();
        let connector = Arc::new(FakeConnector::default());
        let stdout = facts(host, true, false).stdout;
        for name in ["h1", "h2"] {
            let fake = Arc::new(FakeTransport::new(name));
            let out = stdout.clone();
            fake.respond_with("<<pv-", move |script| {
                Output::ok(answer_batch(script, |_| (out.clone(), 0)))
            });
            // Uploads find no file there yet (then write, and succeed by default).
            fake.respond("; else echo absent; fi", Output::ok("absent\n"));
            let j = journal.clone();
            fake.respond_with(slow, move |script| {
                j.lock()
                    .unwrap()
                    .push((name.into(), script.into(), t0.elapsed().as_secs()));
                Output::ok("")
            });
            fake.delay(slow, Duration::from_secs(10));
            connector.add(fake);
        }
        let targets = ["h1", "h2"]
            .map(|n| Target {
                name: n.into(),
                ..Default::default()
            })
            .into();
        let sink = Arc::new(MemorySink::default());
        let runner = Runner::new(connector, targets, RunOptions::default(), sink);
        let steps: Vec<Box<dyn Step>> = vec![Box::new(step)];
        let recap = runner.run(&steps).await;
        assert!(recap.is_success(), "{recap:?}");
        assert_eq!(recap.changed(), 2);
        journal
    }

    #[tokio::test(start_paused = true)]
    async fn two_daemons_restart_one_after_the_other() {
        let j = run(on_two_hosts("daemon = { mtu = 1450 }"), &done(), RESTART).await;
        let j = j.lock().unwrap();
        let seen: Vec<(&str, u64)> = j.iter().map(|(h, _, t)| (h.as_str(), *t)).collect();
        assert_eq!(
            seen,
            [("h1", 10), ("h2", 20)],
            "h2 restarts once h1 is back"
        );
        assert!(j.iter().all(|(_, s, _)| s.ends_with(RESTART)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_install_starts_every_daemon_at_once() {
        let j = run(on_two_hosts(""), &fresh(), START).await;
        let mut seen: Vec<(String, u64)> = j
            .lock()
            .unwrap()
            .iter()
            .map(|(h, _, t)| (h.clone(), *t))
            .collect();
        seen.sort();
        assert_eq!(seen, [("h1".into(), 10), ("h2".into(), 10)]);
    }
}
