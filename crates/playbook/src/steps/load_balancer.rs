//! `load_balancer`: HAProxy (Debian's package) on the `lb` hosts, forwarding
//! each of `ports` in TCP mode to every swarm node's private address, with
//! health checks and websocket-friendly timeouts. The configuration comes from
//! an embedded template (or `template`, relative to the playbook) and is
//! checked with `haproxy -c` on a staged copy before it replaces the live one;
//! haproxy is reloaded (not restarted: open connections survive) only when it changed.

use super::apt;
use super::file::{self, Kind, PathFacts};
use super::system_files::{Built, system_files};
use super::systemd::{self, Verb};
use super::util::{self, Flag, Num, Sections};
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Fact, Typed};
use provision_engine::inventory::Role;
use provision_engine::step::{Action, Change, Check, Facts, HostStep, StepError};
use provision_transport::shell::quote;
use serde::Deserialize;
use zeroize::Zeroizing;

pub const KNOWN_KEYS: &[&str] = &["ports", "template", "proxy_protocol"];

/// The default configuration; see the variables it documents.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../../../templates/haproxy/haproxy.cfg.j2");

pub const DEFAULT_PORTS: &[u16] = &[80, 443];

const SERVICE: &str = "haproxy.service";

system_files! {
    config: "/etc/haproxy/haproxy.cfg",
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    ports: Option<Vec<Num>>,
    template: Option<String>,
    proxy_protocol: Option<Flag>,
}

pub struct LoadBalancer {
    config: Zeroizing<Vec<u8>>,
    /// 0600 when the rendered configuration holds a secret (stats passwords).
    mode: u32,
    apt: Box<dyn HostStep>,
    files: Files,
}

pub fn build(with: &toml::Table, ctx: &BuildCtx<'_>) -> Built {
    build_with(with, ctx, Files::default())
}

inventory::submit! { crate::ctx::BuiltIn::host("load_balancer", build) }

/// [`build`] with the system files somewhere else (tests).
pub fn build_with(with: &toml::Table, ctx: &BuildCtx<'_>, files: Files) -> Built {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let ports = match p.ports {
        None => DEFAULT_PORTS.to_vec(),
        Some(list) => {
            let mut ports = Vec::new();
            for n in list.iter().filter_map(|n| n.0) {
                let port = u16::try_from(n).ok().filter(|p| *p > 0).ok_or_else(|| {
                    util::bad(
                        "ports",
                        format!("port {n} is out of range"),
                        "ports are 1 to 65535, e.g. ports = [80, 443]",
                    )
                })?;
                if ports.contains(&port) {
                    return Err(util::bad(
                        "ports",
                        format!("port {port} is listed twice"),
                        "list each port once",
                    ));
                }
                ports.push(port);
            }
            if ports.is_empty() {
                return Err(util::bad(
                    "ports",
                    "`ports` is empty",
                    "e.g. ports = [80, 443]",
                ));
            }
            ports
        }
    };
    let backends = backends(ctx)?;
    let (name, body) = match util::non_empty(p.template) {
        None => (
            "haproxy.cfg.j2 (built in)".to_string(),
            DEFAULT_TEMPLATE.to_string(),
        ),
        Some(t) => {
            let path = ctx.base_dir.join(&t);
            let body = std::fs::read_to_string(&path).map_err(|e| {
                util::bad(
                    "template",
                    format!("cannot read `template` {}: {e}", path.display()),
                    format!(
                        "`template` is relative to the playbook's directory ({})",
                        ctx.base_dir.display()
                    ),
                )
            })?;
            (t, body)
        }
    };
    let rendered = (ctx.render)(&name, &format!("{}{body}", prelude(&ports, &backends, p.proxy_protocol.is_some_and(|f| f.0))))
        .map_err(|e| {
            util::bad(
                "template",
                format!("cannot render the haproxy configuration: {e}"),
                "it sees ports, backends (name, address) and proxy_protocol, plus host, hosts, vars and secrets",
            )
        })?;
    let mode = if (ctx.has_secret)(&rendered) {
        0o600
    } else {
        0o644
    };
    let mut t = toml::Table::new();
    t.insert(
        "packages".into(),
        toml::Value::Array(vec!["haproxy".into()]),
    );
    Ok(Box::new(Typed(LoadBalancer {
        config: Zeroizing::new(rendered.into_bytes()),
        mode,
        apt: apt::build(&t, ctx)?,
        files,
    })))
}

/// Every manager and worker, by name and private address (IPv6 in brackets, as haproxy reads it).
fn backends(ctx: &BuildCtx<'_>) -> Result<Vec<(String, String)>, ParamError> {
    let mut out = Vec::new();
    for h in ctx.inventory.hosts.iter().filter(|h| h.is_swarm_node()) {
        let Some(ip) = h.private_ip else {
            let role = if h.has_role(Role::Manager) {
                "manager"
            } else {
                "worker"
            };
            return Err(ParamError::new(
                None,
                format!(
                    "{} ({role}) has no private_ip, so the load balancer cannot reach it",
                    h.name
                ),
            )
            .help(format!("set private_ip for {} in the inventory", h.name)));
        };
        let address = provision_transport::addr::bracketed(&ip.to_string()).into_owned();
        out.push((h.name.clone(), address));
    }
    if out.is_empty() {
        return Err(ParamError::new(
            None,
            "the inventory has no manager or worker hosts to balance to",
        )
        .help("add swarm hosts to the inventory"));
    }
    Ok(out)
}

/// The template's own variables, set on the template's first line (no newline:
/// line numbers in rendering errors stay those of the file). Names and
/// addresses come from the validated inventory, so they need no escaping.
pub fn prelude(ports: &[u16], backends: &[(String, String)], proxy_protocol: bool) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let backends: Vec<String> = backends
        .iter()
        .map(|(n, a)| format!("{{\"name\": \"{n}\", \"address\": \"{a}\"}}"))
        .collect();
    format!(
        "{{% set ports = [{}] %}}{{% set backends = [{}] %}}{{% set proxy_protocol = {proxy_protocol} %}}",
        ports.join(", "),
        backends.join(", ")
    )
}

/// Checks the staged configuration and moves it over the live one.
pub fn install_config_command(live: &str) -> String {
    format!(
        "s={}; haproxy -c -f \"$s\" >/dev/null || {{ rm -f \"$s\"; echo {} >&2; exit 1; }}; mv -f \"$s\" {}",
        quote(&format!("{live}.provision-new")),
        quote(&format!(
            "haproxy rejects the new {live} (see above); the running configuration is unchanged"
        )),
        quote(live),
    )
}

/// The fact a load balancer needs: [`BalancerFacts`]. Sections: `apt` (the apt step's own
/// command), `config`, `service`.
pub struct BalancerFact {
    pub apt_gather: String,
    pub files: Files,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancerFacts {
    /// haproxy and its unit.
    pub package: systemd::Packaged,
    pub config: PathFacts,
}

impl Fact for BalancerFact {
    type Value = BalancerFacts;

    fn command(&self) -> String {
        util::sections(&[
            ("apt", self.apt_gather.clone()),
            (
                "config",
                file::gather_command(&self.files.config, Some(file::DIFF_LIMIT)),
            ),
            ("service", systemd::UnitFact::new(SERVICE).command()),
        ])
    }

    fn parse(&self, facts: &Facts) -> Result<BalancerFacts, StepError> {
        let s = Sections::parse(facts);
        Ok(BalancerFacts {
            package: systemd::Packaged::parse(&s, "haproxy", SERVICE)?,
            config: file::parse(s.get("config")?)?,
        })
    }
}

impl LoadBalancer {
    fn config_change(
        &self,
        now: &PathFacts,
        installed: bool,
        active: bool,
    ) -> Result<Option<Change>, StepError> {
        let live = &self.files.config;
        let Some(mut c) = file::change(live, "path", &self.config, now)? else {
            return Ok(None);
        };
        let mut actions = vec![
            Action::Upload {
                dest: format!("{live}.provision-new"),
                content: self.config.clone(),
                mode: Some(self.mode),
                owner: Some("root".into()),
                group: Some("root".into()),
            },
            Action::run(install_config_command(live)),
        ];
        let existed = now.kind == Kind::File;
        c.summary = if existed {
            format!("update {live}")
        } else {
            format!("write {live}")
        };
        if !installed {
            // The package has just started haproxy with its own configuration.
            actions.push(Action::run(systemd::command(
                Verb::ReloadOrRestart,
                SERVICE,
            )));
            c.summary.push_str(" and load it");
        } else if active {
            actions.push(Action::run(systemd::command(Verb::Reload, SERVICE)));
            c.summary.push_str(" and reload haproxy");
        }
        c.actions = actions;
        Ok(Some(c))
    }
}

impl Decide for LoadBalancer {
    type Fact = BalancerFact;

    fn fact(&self) -> BalancerFact {
        BalancerFact {
            apt_gather: self.apt.gather().unwrap_or_default(),
            files: self.files.clone(),
        }
    }

    fn decide(&self, f: BalancerFacts) -> Result<Check, StepError> {
        let mut changes = Vec::new();
        if let Check::Change(c) = self.apt.check(&f.package.apt)? {
            changes.extend(c);
        }
        let unit = f.package.unit.as_ref();
        let active = unit.is_some_and(|u| u.running());
        changes.extend(self.config_change(&f.config, f.package.installed, active)?);
        changes.extend(systemd::keep_running(SERVICE, unit, false));
        if changes.is_empty() {
            Ok(Check::Ok(format!(
                "haproxy running, {} up to date",
                self.files.config
            )))
        } else {
            Ok(Check::Change(changes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::fixtures::{CLUSTER, LISTS, file_facts, summaries};
    use crate::steps::testing::{build as build_with_ctx, build_err, with_ctx};
    use provision_engine::inventory::Inventory;

    fn cluster_step_in(cluster: &str, base: &std::path::Path, with: &str) -> Built {
        let inv =
            Inventory::parse(cluster, std::path::Path::new("c.toml"), &Default::default()).unwrap();
        let env = provision_engine::template::environment();
        let ctx = minijinja::Value::from(minijinja::value::Serde(serde_json::json!({
            "host": {"name": "lb-1"}, "vars": {"stats_user": "admin"}, "secrets": {"stats_password": "s3cr3t-pw"}
        })));
        let render =
            |name: &str, body: &str| provision_engine::template::render(&env, name, body, &ctx);
        let has_secret = |t: &str| t.contains("s3cr3t-pw");
        let bctx = BuildCtx {
            host: inv.host("lb-1").unwrap(),
            inventory: &inv,
            base_dir: base,
            render: &render,
            has_secret: &has_secret,
            warn: &|_, _| {},
        };
        build(&toml::from_str(with).unwrap(), &bctx)
    }

    fn step(with: &str) -> Box<dyn HostStep> {
        cluster_step_in(CLUSTER, std::path::Path::new("."), with)
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    const EXPECTED: &str = include_str!("../../tests/fixtures/swarm/haproxy.cfg");
    const INSTALLED: &str = "pkg=ii  haproxy amd64 2.6.12-1+deb12u1\n";
    const RUNNING: &str = "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\n";

    fn facts(apt: &str, config: Option<&str>, service: &str) -> Facts {
        Facts::new(format!(
            "--- apt\n{apt}{LISTS}--- config\n{}--- service\n{service}",
            file_facts(config)
        ))
    }

    /// Debian 12's haproxy.cfg as the package installs it (abridged).
    const DEBIAN_CFG: &str = "global\n\tlog /dev/log\tlocal0\n\tchroot /var/lib/haproxy\n\tuser haproxy\n\tgroup haproxy\n\tdaemon\n\ndefaults\n\tlog\tglobal\n\tmode\thttp\n";

    #[test]
    fn commands_are_exact() {
        assert_eq!(
            prelude(
                &[80, 443],
                &[
                    ("manager-1".into(), "10.0.0.11".into()),
                    ("w".into(), "[fd00::21]".into())
                ],
                false
            ),
            "{% set ports = [80, 443] %}{% set backends = [{\"name\": \"manager-1\", \"address\": \"10.0.0.11\"}, {\"name\": \"w\", \"address\": \"[fd00::21]\"}] %}{% set proxy_protocol = false %}"
        );
        assert_eq!(
            install_config_command("/etc/haproxy/haproxy.cfg"),
            "s=/etc/haproxy/haproxy.cfg.provision-new; haproxy -c -f \"$s\" >/dev/null || { rm -f \"$s\"; echo 'haproxy rejects the new /etc/haproxy/haproxy.cfg (see above); the running configuration is unchanged' >&2; exit 1; }; \
             mv -f \"$s\" /etc/haproxy/haproxy.cfg"
        );
        assert_eq!(
            step("").gather().unwrap(),
            format!(
                "echo '--- apt'; {}; echo '--- config'; {}; echo '--- service'; systemctl show -p LoadState -p ActiveState -p UnitFileState haproxy.service",
                apt::gather_present(&["haproxy".into()]),
                file::gather_command("/etc/haproxy/haproxy.cfg", Some(65536))
            )
        );
    }

    #[test]
    fn default_template_renders_every_swarm_node() {
        let s = step("");
        let Check::Change(c) = s.check(&facts(INSTALLED, None, RUNNING)).unwrap() else {
            panic!()
        };
        let Action::Upload { content, .. } = &c[0].actions[0] else {
            panic!()
        };
        assert_eq!(String::from_utf8(content.to_vec()).unwrap(), EXPECTED);
    }

    #[test]
    fn fresh_host() {
        let s = step("");
        let c = s
            .check(&facts(
                "candidate=haproxy 2.6.12-1+deb12u1\n",
                Some(DEBIAN_CFG),
                "LoadState=not-found\nActiveState=inactive\n",
            ))
            .unwrap();
        assert_eq!(
            summaries(&c),
            vec![
                "install haproxy",
                "update /etc/haproxy/haproxy.cfg and load it",
                "enable and start haproxy.service"
            ]
        );
        let Check::Change(c) = c else { panic!() };
        assert!(matches!(
            &c[1].actions[0],
            Action::Upload { dest, mode: Some(0o644), owner: Some(o), .. } if dest == "/etc/haproxy/haproxy.cfg.provision-new" && o == "root"
        ));
        assert_eq!(
            c[1].actions[1],
            Action::run(install_config_command("/etc/haproxy/haproxy.cfg"))
        );
        assert_eq!(
            c[1].actions[2],
            Action::run("systemctl reload-or-restart haproxy.service")
        );
        assert_eq!(
            c[1].diff.as_ref().unwrap().before.as_deref(),
            Some(DEBIAN_CFG)
        );
    }

    #[test]
    fn already_done() {
        assert_eq!(
            step("")
                .check(&facts(INSTALLED, Some(EXPECTED), RUNNING))
                .unwrap(),
            Check::Ok("haproxy running, /etc/haproxy/haproxy.cfg up to date".into())
        );
    }

    #[test]
    fn drifted() {
        // A node added to the inventory: reloaded, not restarted.
        let more = format!(
            "{CLUSTER}[[hosts]]\nname = \"worker-2\"\naddress = \"203.0.113.22\"\nprivate_ip = \"10.0.0.22\"\nroles = [\"worker\"]\n"
        );
        let s = cluster_step_in(&more, std::path::Path::new("."), "").unwrap();
        let c = s.check(&facts(INSTALLED, Some(EXPECTED), RUNNING)).unwrap();
        assert_eq!(
            summaries(&c),
            vec!["update /etc/haproxy/haproxy.cfg and reload haproxy"]
        );
        let Check::Change(c) = c else { panic!() };
        assert_eq!(
            c[0].actions[2],
            Action::run("systemctl reload haproxy.service")
        );
        assert!(
            c[0].diff
                .as_ref()
                .unwrap()
                .after
                .contains("    server worker-2 10.0.0.22:443 check\n")
        );
        // Stopped and disabled: started (which reads the file), not reloaded.
        let c = step("")
            .check(&facts(
                INSTALLED,
                Some(EXPECTED),
                "LoadState=loaded\nActiveState=failed\nUnitFileState=disabled\n",
            ))
            .unwrap();
        assert_eq!(
            summaries(&c),
            vec![
                "enable haproxy.service (was disabled)",
                "start haproxy.service (was failed)"
            ]
        );
    }

    #[test]
    fn own_template_ports_and_proxy_protocol() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("lb.cfg.j2"),
            "# {{ host.name }}\nlisten stats\n    bind :8404\n    stats auth {{ vars.stats_user }}:{{ secrets.stats_password }}\n{% for p in ports %}# {{ p }}:{% for b in backends %} {{ b.name }}={{ b.address }}{% endfor %}{% if proxy_protocol %} pp{% endif %}\n{% endfor %}",
        )
        .unwrap();
        let s = cluster_step_in(
            CLUSTER,
            dir.path(),
            "template = \"lb.cfg.j2\"\nports = [\"8080\", 8443]\nproxy_protocol = true",
        )
        .unwrap();
        let Check::Change(c) = s.check(&facts(INSTALLED, None, RUNNING)).unwrap() else {
            panic!()
        };
        let Action::Upload { content, mode, .. } = &c[0].actions[0] else {
            panic!()
        };
        assert_eq!(
            String::from_utf8(content.to_vec()).unwrap(),
            "# lb-1\nlisten stats\n    bind :8404\n    stats auth admin:s3cr3t-pw\n# 8080: manager-1=10.0.0.11 worker-1=10.0.0.21 pp\n# 8443: manager-1=10.0.0.11 worker-1=10.0.0.21 pp\n"
        );
        // A secret inside: only root may read it.
        assert_eq!(*mode, Some(0o600));
        // The default template with proxy protocol.
        let s = step("proxy_protocol = true\nports = [443]");
        let Check::Change(c) = s.check(&facts(INSTALLED, None, RUNNING)).unwrap() else {
            panic!()
        };
        let after = &c[0].diff.as_ref().unwrap().after;
        assert!(after.contains("    default-server inter 5s fall 3 rise 2 send-proxy-v2\n"));
        assert!(!after.contains(":80 "));
    }

    #[test]
    fn param_errors() {
        let e = build_err(cluster_step_in(
            CLUSTER,
            std::path::Path::new("."),
            "ports = [80, 80]",
        ));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (Some("ports"), "port 80 is listed twice")
        );
        let e = build_err(cluster_step_in(
            CLUSTER,
            std::path::Path::new("."),
            "ports = [0]",
        ));
        assert_eq!(e.message, "port 0 is out of range");
        let e = build_err(cluster_step_in(
            CLUSTER,
            std::path::Path::new("."),
            "ports = [70000]",
        ));
        assert_eq!(e.message, "port 70000 is out of range");
        let e = build_err(cluster_step_in(
            CLUSTER,
            std::path::Path::new("."),
            "ports = []",
        ));
        assert_eq!(e.message, "`ports` is empty");
        let e = build_err(cluster_step_in(
            CLUSTER,
            std::path::Path::new("."),
            "ports = 80",
        ));
        assert_eq!(e.key.as_deref(), Some("ports"));
        let e = build_err(cluster_step_in(
            CLUSTER,
            std::path::Path::new("/nonexistent"),
            "template = \"lb.j2\"",
        ));
        assert!(
            e.message
                .starts_with("cannot read `template` /nonexistent/lb.j2: "),
            "{}",
            e.message
        );
        let no_ip = CLUSTER.replace("private_ip = \"10.0.0.21\"\n", "");
        let e = build_err(cluster_step_in(&no_ip, std::path::Path::new("."), ""));
        assert_eq!(
            e.message,
            "worker-1 (worker) has no private_ip, so the load balancer cannot reach it"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.j2"), "line 1\n{{ vars.nope }}\n").unwrap();
        let e = build_err(cluster_step_in(
            CLUSTER,
            dir.path(),
            "template = \"bad.j2\"",
        ));
        assert_eq!(e.key.as_deref(), Some("template"));
        assert!(e.message.contains("bad.j2:2"), "{}", e.message);
        // The test context's inventory has one worker (10.0.0.5).
        let s = with_ctx(std::path::Path::new("."), |ctx| {
            build(&toml::Table::new(), ctx)
        })
        .unwrap();
        assert!(s.gather().is_some());
        let e = build_err(build_with_ctx(build, "port = [80]"));
        assert!(e.help.unwrap().starts_with("did you mean `ports`?"));
    }
}
