//! `hostname`: the host's name (the inventory name unless `name` says
//! otherwise), set now and at boot, and an /etc/hosts that resolves it: the
//! Debian `127.0.1.1 NAME` line, plus a marked block with every inventory
//! host's private address so cluster names resolve everywhere. On cloud images
//! cloud-init is told to keep both, or it would reset them at the next boot.

use super::file::{self, PathFacts};
use super::line::{self, Edit};
use super::system_files::{Built, system_files};
use super::util::{self, Flag, Sections};
use crate::ctx::BuildCtx;
use provision_engine::fact::{Decide, Fact, Typed};
use provision_engine::inventory::is_hostname;
use provision_engine::step::{Action, Change, Check, Facts, StepError};
use provision_transport::shell::{join, quote};
use serde::Deserialize;

pub const KNOWN_KEYS: &[&str] = &["name", "hosts_entries"];

pub const BEGIN: &str = "# BEGIN provision";
pub const END: &str = "# END provision";

system_files! {
    hostname: "/etc/hostname",
    hosts: "/etc/hosts",
    /// cloud-init's drop-in directory: the step writes there only if it exists.
    cloud_dir: "/etc/cloud/cloud.cfg.d",
    cloud_cfg: "/etc/cloud/cloud.cfg.d/99-provision-hostname.cfg",
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: Option<String>,
    hosts_entries: Option<Flag>,
}

#[derive(Debug)]
pub struct Hostname {
    name: String,
    /// `PRIVATE_IP\tNAME` lines of the marked block; None: no block.
    block: Option<String>,
    files: Files,
}

pub fn build(with: &toml::Table, ctx: &BuildCtx<'_>) -> Built {
    build_with(with, ctx, Files::default())
}

inventory::submit! { crate::ctx::BuiltIn::host("hostname", build) }

/// [`build`] with the system files somewhere else (tests).
pub fn build_with(with: &toml::Table, ctx: &BuildCtx<'_>, files: Files) -> Built {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let name = util::non_empty(p.name).unwrap_or_else(|| ctx.host.name.clone());
    if !is_hostname(&name) {
        return Err(util::bad(
            "name",
            format!("`name` \"{name}\" is not a valid hostname"),
            "use letters, digits and hyphens (at most 63, no hyphen at either end), e.g. name = \"manager-1\"",
        ));
    }
    let block = if p.hosts_entries.is_none_or(|f| f.0) {
        // Hosts without a private address are left out: they have nothing to resolve to here.
        let lines: String = ctx
            .inventory
            .hosts
            .iter()
            .filter_map(|h| h.private_ip.map(|ip| format!("{ip}\t{}\n", h.name)))
            .collect();
        (!lines.is_empty()).then_some(lines)
    } else {
        None
    };
    Ok(Box::new(Typed(Hostname { name, block, files })))
}

/// The fact a hostname step needs: [`HostnameFacts`]. Sections: `host` (the
/// kernel's hostname, whether hostnamectl can work: systemd running and D-Bus
/// there, which minimal images lack; whether cloud-init is installed), then the
/// facts of /etc/hostname, /etc/hosts and the cloud-init drop-in.
pub struct HostnameFact {
    pub files: Files,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostnameFacts {
    pub current: String,
    pub hostnamectl: bool,
    pub cloud_init: bool,
    pub hostname: PathFacts,
    pub hosts: PathFacts,
    pub cloud: PathFacts,
}

impl Fact for HostnameFact {
    type Value = HostnameFacts;

    fn command(&self) -> String {
        util::sections(&[
            (
                "host",
                format!(
                    "echo \"current=$(uname -n)\"; \
                     if [ -d /run/systemd/system ] && [ -S /run/dbus/system_bus_socket ] && command -v hostnamectl >/dev/null 2>&1; then echo hostnamectl=yes; fi; \
                     if [ -d {} ]; then echo cloud_init=yes; fi",
                    quote(&self.files.cloud_dir)
                ),
            ),
            (
                "hostname",
                file::gather_command(&self.files.hostname, Some(file::DIFF_LIMIT)),
            ),
            (
                "hosts",
                file::gather_command(&self.files.hosts, Some(line::SIZE_LIMIT)),
            ),
            (
                "cloud",
                file::gather_command(&self.files.cloud_cfg, Some(file::DIFF_LIMIT)),
            ),
        ])
    }

    fn parse(&self, facts: &Facts) -> Result<HostnameFacts, StepError> {
        let s = Sections::parse(facts);
        let host = s.get("host")?;
        let kv = host.kv();
        let current = kv
            .get("current")
            .ok_or_else(|| util::bad_facts("hostname", &host.stdout))?;
        Ok(HostnameFacts {
            current: current.trim().to_string(),
            hostnamectl: kv.get("hostnamectl") == Some(&"yes"),
            cloud_init: kv.get("cloud_init") == Some(&"yes"),
            hostname: file::parse(s.get("hostname")?)?,
            hosts: file::parse(s.get("hosts")?)?,
            cloud: file::parse(s.get("cloud")?)?,
        })
    }
}

/// What cloud-init must leave alone: without it, cloud images reset the
/// hostname (and on some providers /etc/hosts) from the metadata at boot.
pub const CLOUD_CFG: &str = "# Written by provision (hostname step): the hostname and /etc/hosts are managed by provision.\npreserve_hostname: true\nmanage_etc_hosts: false\n";

/// Pure: /etc/hosts with the 127.0.1.1 line for `name` and the block (None
/// removes it). An existing 127.0.1.1 line that already lists `name` is kept
/// as it is (`127.0.1.1 web-1.example.com web-1` carries the FQDN).
pub fn edit_hosts(content: &str, name: &str, block: Option<&str>) -> Result<Edit, String> {
    let first_field = |l: &str| l.split_whitespace().next().map(str::to_string);
    let loopback = |l: &str| first_field(l).as_deref() == Some("127.0.1.1");
    let want = content
        .lines()
        .find(|l| loopback(l))
        .filter(|l| l.split_whitespace().skip(1).any(|n| n == name))
        .map(str::to_string)
        .unwrap_or_else(|| format!("127.0.1.1\t{name}"));
    let mut summaries = Vec::new();
    let after_line = match line::set_unique_line(content, loopback, &want, |l| {
        first_field(l).as_deref() == Some("127.0.0.1")
    }) {
        Edit::Unchanged(_) => content.to_string(),
        Edit::Changed { content, summary } => {
            summaries.push(format!("{summary} ({})", want.replace('\t', " ")));
            content
        }
    };
    let out = match line::set_block(&after_line, BEGIN, END, block)? {
        Edit::Unchanged(_) => after_line,
        Edit::Changed { content, summary } => {
            summaries.push(format!("{summary} (cluster addresses)"));
            content
        }
    };
    Ok(if summaries.is_empty() {
        Edit::Unchanged("up to date".into())
    } else {
        Edit::Changed {
            content: out,
            summary: summaries.join(", "),
        }
    })
}

impl Decide for Hostname {
    type Fact = HostnameFact;

    fn fact(&self) -> HostnameFact {
        HostnameFact {
            files: self.files.clone(),
        }
    }

    fn decide(&self, f: HostnameFacts) -> Result<Check, StepError> {
        let name = &self.name;
        let files = &self.files;
        let mut changes = Vec::new();
        // /etc/hosts first: once the name changes, sudo and others look it up.
        let mut hosts = file::text(&f.hosts, &files.hosts)?;
        if f.hosts.kind == file::Kind::Absent {
            hosts = "127.0.0.1\tlocalhost\n".into();
        }
        match edit_hosts(&hosts, name, self.block.as_deref()) {
            Err(e) => {
                return Err(StepError::new(format!("{}: {e}", files.hosts))
                    .hint(format!("repair or remove the `{BEGIN}` block by hand")));
            }
            Ok(Edit::Unchanged(_)) => {}
            Ok(Edit::Changed { content, summary }) => {
                if let Some(mut c) =
                    file::change(&files.hosts, "path", content.as_bytes(), &f.hosts)?
                {
                    c.summary = format!("{}: {summary}", files.hosts);
                    changes.push(c);
                }
            }
        }
        if f.cloud_init
            && let Some(mut c) =
                file::change(&files.cloud_cfg, "path", CLOUD_CFG.as_bytes(), &f.cloud)?
        {
            c.summary = format!(
                "keep cloud-init from resetting the hostname at boot ({})",
                files.cloud_cfg
            );
            changes.push(c);
        }
        let static_name = file::text(&f.hostname, &files.hostname)?;
        let static_ok = static_name.trim() == name;
        if f.current != *name || !static_ok {
            let was = if f.current != *name {
                &f.current
            } else {
                static_name.trim()
            };
            let summary = format!("set hostname to {name} (was {was})");
            let actions = if f.hostnamectl {
                vec![Action::run(join(["hostnamectl", "set-hostname", name]))]
            } else {
                let mut a = Vec::new();
                if let Some(c) = file::change(
                    &files.hostname,
                    "path",
                    format!("{name}\n").as_bytes(),
                    &f.hostname,
                )? {
                    a.extend(c.actions);
                }
                if f.current != *name {
                    a.push(Action::run(join(["hostname", name])));
                }
                a
            };
            changes.push(Change::new(summary, actions));
        }
        if changes.is_empty() {
            Ok(Check::Ok(format!(
                "hostname {name}, {} up to date",
                files.hosts
            )))
        } else {
            Ok(Check::Change(changes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::fixtures::{build_in, file_facts};
    use crate::steps::testing::{build as build_with_ctx, build_err};

    fn gather_command(files: &Files) -> String {
        HostnameFact {
            files: files.clone(),
        }
        .command()
    }

    fn parse(facts: &Facts) -> Result<HostnameFacts, StepError> {
        HostnameFact {
            files: Files::default(),
        }
        .parse(facts)
    }

    /// Debian 12's /etc/hosts as the installer writes it.
    const DEBIAN_HOSTS: &str = "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n\n# The following lines are desirable for IPv6 capable hosts\n::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n";

    const CLUSTER: &str = "name = \"t\"\n\
        [[hosts]]\nname = \"storage-1\"\naddress = \"203.0.113.10\"\nprivate_ip = \"10.0.0.10\"\nroles = [\"storage\"]\n\
        [[hosts]]\nname = \"manager-1\"\naddress = \"203.0.113.11\"\nprivate_ip = \"10.0.0.11\"\nroles = [\"manager\"]\n\
        [[hosts]]\nname = \"lb-1\"\naddress = \"203.0.113.30\"\nroles = [\"lb\"]\n";

    fn cluster_step(with: &str) -> Built {
        build_in(build, CLUSTER, "manager-1", with)
    }

    fn facts(
        current: &str,
        host_extra: &str,
        hostname: &str,
        hosts: &str,
        cloud: Option<&str>,
    ) -> Facts {
        Facts::new(format!(
            "--- host\ncurrent={current}\n{host_extra}--- hostname\n{}--- hosts\n{}--- cloud\n{}",
            file_facts(Some(hostname)),
            file_facts(Some(hosts)),
            file_facts(cloud)
        ))
    }

    const BLOCK: &str =
        "# BEGIN provision\n10.0.0.10\tstorage-1\n10.0.0.11\tmanager-1\n# END provision\n";

    fn done_hosts() -> String {
        format!(
            "{}{BLOCK}",
            DEBIAN_HOSTS.replace("127.0.1.1\tdebian", "127.0.1.1\tmanager-1")
        )
    }

    #[test]
    fn gather_command_is_exact() {
        let files = Files::default();
        assert_eq!(
            gather_command(&files),
            "echo '--- host'; echo \"current=$(uname -n)\"; \
             if [ -d /run/systemd/system ] && [ -S /run/dbus/system_bus_socket ] && command -v hostnamectl >/dev/null 2>&1; then echo hostnamectl=yes; fi; \
             if [ -d /etc/cloud/cloud.cfg.d ]; then echo cloud_init=yes; fi; \
             echo '--- hostname'; ".to_string()
                + &file::gather_command("/etc/hostname", Some(65536))
                + "; echo '--- hosts'; " + &file::gather_command("/etc/hosts", Some(1024 * 1024))
                + "; echo '--- cloud'; " + &file::gather_command("/etc/cloud/cloud.cfg.d/99-provision-hostname.cfg", Some(65536))
        );
    }

    #[test]
    fn parses_captured_output() {
        let f = parse(&facts(
            "debian",
            "hostnamectl=yes\ncloud_init=yes\n",
            "debian\n",
            DEBIAN_HOSTS,
            None,
        ))
        .unwrap();
        assert_eq!(f.current, "debian");
        assert!(f.hostnamectl && f.cloud_init);
        assert_eq!(f.cloud.kind, file::Kind::Absent);
        assert!(parse(&Facts::new("--- host\n")).is_err());
    }

    #[test]
    fn fresh_host_with_systemd() {
        let s = cluster_step("").unwrap();
        let Check::Change(c) = s
            .check(&facts(
                "debian",
                "hostnamectl=yes\n",
                "debian\n",
                DEBIAN_HOSTS,
                None,
            ))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0].summary,
            "/etc/hosts: replace line 2 (127.0.1.1 manager-1), append block at line 8 (cluster addresses)"
        );
        let Action::Upload { content, .. } = &c[0].actions[0] else {
            panic!()
        };
        assert_eq!(String::from_utf8(content.to_vec()).unwrap(), done_hosts());
        assert_eq!(c[1].summary, "set hostname to manager-1 (was debian)");
        assert_eq!(
            c[1].actions,
            vec![Action::run("hostnamectl set-hostname manager-1")]
        );
    }

    #[test]
    fn fresh_host_without_systemd_and_with_cloud_init() {
        let s = cluster_step("").unwrap();
        let ubuntu_hosts = "127.0.0.1 localhost\n\n::1 ip6-localhost ip6-loopback\n";
        let Check::Change(c) = s
            .check(&facts(
                "ip-10-0-0-11",
                "cloud_init=yes\n",
                "ip-10-0-0-11\n",
                ubuntu_hosts,
                None,
            ))
            .unwrap()
        else {
            panic!()
        };
        let summaries: Vec<&str> = c.iter().map(|c| c.summary.as_str()).collect();
        assert_eq!(
            summaries,
            vec![
                "/etc/hosts: insert line 2 (127.0.1.1 manager-1), append block at line 5 (cluster addresses)",
                "keep cloud-init from resetting the hostname at boot (/etc/cloud/cloud.cfg.d/99-provision-hostname.cfg)",
                "set hostname to manager-1 (was ip-10-0-0-11)",
            ]
        );
        let Action::Upload { content, .. } = &c[0].actions[0] else {
            panic!()
        };
        assert!(
            String::from_utf8(content.to_vec())
                .unwrap()
                .starts_with("127.0.0.1 localhost\n127.0.1.1\tmanager-1\n\n")
        );
        let Action::Upload { dest, content, .. } = &c[2].actions[0] else {
            panic!()
        };
        assert_eq!(
            (dest.as_str(), &content[..]),
            ("/etc/hostname", &b"manager-1\n"[..])
        );
        assert_eq!(c[2].actions[1], Action::run("hostname manager-1"));
    }

    #[test]
    fn already_done() {
        let s = cluster_step("").unwrap();
        assert_eq!(
            s.check(&facts(
                "manager-1",
                "hostnamectl=yes\ncloud_init=yes\n",
                "manager-1\n",
                &done_hosts(),
                Some(CLOUD_CFG)
            ))
            .unwrap(),
            Check::Ok("hostname manager-1, /etc/hosts up to date".into())
        );
        // A 127.0.1.1 line with the FQDN first is kept.
        let fqdn = done_hosts().replace(
            "127.0.1.1\tmanager-1",
            "127.0.1.1 manager-1.example.com manager-1",
        );
        assert!(matches!(
            s.check(&facts("manager-1", "", "manager-1\n", &fqdn, None))
                .unwrap(),
            Check::Ok(_)
        ));
    }

    #[test]
    fn drifted() {
        let s = cluster_step("").unwrap();
        // Renamed at runtime only (someone ran `hostname`), a block entry edited by hand.
        let hosts = done_hosts().replace("10.0.0.10\tstorage-1", "10.0.0.99\tstorage-1");
        let Check::Change(c) = s
            .check(&facts("tmp", "", "manager-1\n", &hosts, None))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "/etc/hosts: update block at lines 8-11 (cluster addresses)"
        );
        assert_eq!(c[1].summary, "set hostname to manager-1 (was tmp)");
        assert_eq!(c[1].actions, vec![Action::run("hostname manager-1")]);
        // hosts_entries = false removes the block.
        let s = cluster_step("hosts_entries = false").unwrap();
        let Check::Change(c) = s
            .check(&facts("manager-1", "", "manager-1\n", &done_hosts(), None))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "/etc/hosts: remove block at lines 8-11 (cluster addresses)"
        );
        // A broken block is not guessed at.
        let broken = DEBIAN_HOSTS.replace("127.0.1.1\tdebian", "127.0.1.1\tmanager-1")
            + "# BEGIN provision\n10.0.0.10 storage-1\n";
        let e = s
            .check(&facts("manager-1", "", "manager-1\n", &broken, None))
            .unwrap_err();
        assert_eq!(
            e.message,
            "/etc/hosts: line 8: `# BEGIN provision` without a following `# END provision`"
        );
    }

    #[test]
    fn params() {
        // The test context's host is web-1; its inventory has one host at 10.0.0.5.
        let s = build_with_ctx(build, "name = \"node-7\"\nhosts_entries = \"true\"").unwrap();
        let Check::Change(c) = s
            .check(&facts(
                "node-7",
                "",
                "node-7\n",
                "127.0.0.1 localhost\n",
                None,
            ))
            .unwrap()
        else {
            panic!()
        };
        let Action::Upload { content, .. } = &c[0].actions[0] else {
            panic!()
        };
        assert_eq!(
            String::from_utf8(content.to_vec()).unwrap(),
            "127.0.0.1 localhost\n127.0.1.1\tnode-7\n# BEGIN provision\n10.0.0.5\tweb-1\n# END provision\n"
        );
        let e = build_err(build_with_ctx(build, "name = \"web_1\""));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (Some("name"), "`name` \"web_1\" is not a valid hostname")
        );
        let e = build_err(build_with_ctx(build, "hosts_entries = \"yes\""));
        assert_eq!(e.key.as_deref(), Some("hosts_entries"));
        let e = build_err(build_with_ctx(build, "hostname = \"x\""));
        assert_eq!(e.key.as_deref(), Some("hostname"));
    }
}
