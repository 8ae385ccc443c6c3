//! The inventory (`cluster.toml`): the cluster's hosts, roles, SSH settings and vars, validated
//! in one pass before anything connects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use provision_transport::HostKeyPolicy;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::{ConfigError, Diagnostic, Reporter, did_you_mean, to_table};

/// What a host does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Serves the shared NFS volume.
    Storage,
    /// Swarm manager (Raft member).
    Manager,
    /// Swarm worker.
    Worker,
    /// Load balancer in front of the swarm.
    Lb,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Storage, Role::Manager, Role::Worker, Role::Lb];
    pub const NAMES: [&'static str; 4] = ["storage", "manager", "worker", "lb"];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Storage => "storage",
            Role::Manager => "manager",
            Role::Worker => "worker",
            Role::Lb => "lb",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of storage, manager, worker, lb.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}` (one of: storage, manager, worker, lb)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// One server of the inventory.
#[derive(Debug, Clone)]
pub struct Host {
    /// Also the hostname the playbook sets.
    pub name: String,
    /// What SSH connects to: an IP address or DNS name.
    pub address: String,
    /// This host's own port; `None` means [ssh] port, else 22.
    pub port: Option<u16>,
    /// This host's own user; `None` means [ssh] user.
    pub user: Option<String>,
    /// Whether commands run through sudo: the host's `become`, else [ssh] `become`.
    pub become_sudo: bool,
    pub private_ip: Option<IpAddr>,
    pub roles: Vec<Role>,
    pub labels: BTreeMap<String, String>,
    pub vars: toml::Table,
    /// Line of the host's `[[hosts]]` header, for later diagnostics.
    pub line: usize,
}

impl Host {
    pub fn has_role(&self, r: Role) -> bool {
        self.roles.contains(&r)
    }

    /// Manager or worker: a member of the swarm.
    pub fn is_swarm_node(&self) -> bool {
        self.has_role(Role::Manager) || self.has_role(Role::Worker)
    }
}

/// The [ssh] table: defaults for every host.
#[derive(Debug, Clone)]
pub struct SshSettings {
    pub user: Option<String>,
    pub port: Option<u16>,
    /// `~` expanded, relative paths resolved against the inventory's directory.
    pub identity: Option<PathBuf>,
    /// Absolute; default `<inventory dir>/known_hosts`.
    pub known_hosts: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    pub proxy_jump: Option<String>,
    pub connect_timeout: Option<Duration>,
    pub become_sudo: bool,
}

/// A loaded, validated inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// As given by the caller (diagnostics show it this way).
    pub path: PathBuf,
    /// Absolute directory of the file: relative paths inside it are resolved against this.
    pub dir: PathBuf,
    pub name: String,
    /// Absolute; `None` means the built-in swarm playbook.
    pub playbook: Option<PathBuf>,
    /// Absolute path of the age-encrypted secrets file.
    pub secrets: Option<PathBuf>,
    pub ssh: SshSettings,
    pub vars: toml::Table,
    pub hosts: Vec<Host>,
    /// `[groups.NAME]`, in the order their vars apply (see [`Inventory::host_vars`]).
    pub groups: Vec<Group>,
    /// Problems that do not stop a run (an even number of managers, ...).
    pub warnings: Vec<Diagnostic>,
}

/// A group of hosts (`[groups.NAME]`, Ansible's inventory groups): hosts listed by name, child
/// groups (or roles) whose hosts it includes, and vars for all of them.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    /// The hosts listed in the group itself.
    pub hosts: Vec<String>,
    /// Child groups and roles, as listed.
    pub children: Vec<String>,
    pub vars: toml::Table,
    /// The longest chain of parent groups above it (0: no parent). A group is deeper than its
    /// parents, so its vars apply after theirs.
    pub depth: usize,
    /// Every host of the group, its children's included.
    pub members: BTreeSet<String>,
    /// Line of the group's header.
    pub line: usize,
}

/// Checks that depend on what the caller is about to do.
#[derive(Debug, Clone, Default)]
pub struct InventoryRules {
    /// At least one host must have the manager role.
    pub require_manager: bool,
    /// Storage, manager and worker hosts must have a private_ip (the swarm playbook needs it).
    pub require_private_ip: bool,
}

const TOP_KEYS: &[&str] = &[
    "name", "playbook", "secrets", "ssh", "vars", "hosts", "groups",
];
const GROUP_KEYS: &[&str] = &["hosts", "children", "vars"];
const SSH_KEYS: &[&str] = &[
    "user",
    "port",
    "identity",
    "known_hosts",
    "host_key_policy",
    "proxy_jump",
    "connect_timeout",
    "become",
];
const HOST_KEYS: &[&str] = &[
    "name",
    "address",
    "port",
    "user",
    "become",
    "private_ip",
    "roles",
    "labels",
    "vars",
];
const ROLE_LIST: &str = "storage, manager, worker, lb";
/// Names a selector reads as a role or group rather than a host.
pub(crate) const SELECTOR_WORDS: &[&str] = &["all", "swarm", "storage", "manager", "worker", "lb"];

impl Inventory {
    /// Reads and validates an inventory file.
    pub fn load(path: &Path, rules: &InventoryRules) -> Result<Inventory, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Inventory::parse(&text, path, rules),
            Err(e) => Err(ConfigError {
                diagnostics: vec![
                    Diagnostic::error(
                        path,
                        (1, 1),
                        format!("cannot read inventory: {}", io_reason(&e)),
                    )
                    .with_help(
                        "pass the path of your cluster.toml \
                             (see inventories/minimal.toml for a start)",
                    ),
                ],
            }),
        }
    }

    /// Validates inventory text; `path` names it in diagnostics and anchors relative paths.
    pub fn parse(
        text: &str,
        path: &Path,
        rules: &InventoryRules,
    ) -> Result<Inventory, ConfigError> {
        let mut r = Reporter::new(text, path);
        let Some(doc) = r.parse() else {
            return Err(ConfigError {
                diagnostics: r.finish(),
            });
        };
        let dir = absolute_dir(path);
        let inv = check(&mut r, &doc, path, &dir, rules);
        let diagnostics = r.finish();
        match inv {
            Some(mut inv) if !diagnostics.iter().any(Diagnostic::is_error) => {
                inv.warnings = diagnostics;
                Ok(inv)
            }
            _ => Err(ConfigError { diagnostics }),
        }
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn managers(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| h.has_role(Role::Manager))
    }

    /// The port SSH connects to: the host's, else [ssh] port, else 22.
    pub fn ssh_port(&self, host: &Host) -> u16 {
        host.port.or(self.ssh.port).unwrap_or(22)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The groups `host` is in (through child groups too), in the order their vars apply.
    pub fn groups_of<'a>(&'a self, host: &'a Host) -> impl Iterator<Item = &'a Group> + 'a {
        self.groups
            .iter()
            .filter(|g| g.members.contains(&host.name))
    }

    /// Vars for one host, key by key, each layer over the one before: inventory [vars], then
    /// the vars of each group the host is in (shallowest first: a child group's over its
    /// parents'; at the same depth alphabetical by name, the later wins: Ansible's order),
    /// then host.vars. Plus a `host` table of facts: name, address, private_ip (when set),
    /// roles, groups (sorted), labels.
    pub fn host_vars(&self, host: &Host) -> toml::Table {
        let mut vars = self.vars.clone();
        for g in self.groups_of(host) {
            vars.extend(g.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        vars.extend(host.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut facts = toml::Table::new();
        facts.insert("name".into(), host.name.clone().into());
        facts.insert("address".into(), host.address.clone().into());
        if let Some(ip) = host.private_ip {
            facts.insert("private_ip".into(), ip.to_string().into());
        }
        let roles = host
            .roles
            .iter()
            .map(|r| toml::Value::from(r.as_str()))
            .collect::<Vec<_>>();
        facts.insert("roles".into(), roles.into());
        let mut groups: Vec<&str> = self.groups_of(host).map(|g| g.name.as_str()).collect();
        groups.sort_unstable();
        let groups: Vec<toml::Value> = groups.into_iter().map(toml::Value::from).collect();
        facts.insert("groups".into(), groups.into());
        let labels = host
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), toml::Value::from(v.as_str())))
            .collect::<toml::Table>();
        facts.insert("labels".into(), labels.into());
        vars.insert("host".into(), facts.into());
        vars
    }
}

/// A host as read, before the checks that span several hosts.
struct Draft {
    header: Range<usize>,
    name: Option<(String, Range<usize>)>,
    address: Option<(String, Range<usize>)>,
    port: Option<u16>,
    user: Option<String>,
    become_sudo: Option<bool>,
    private_ip: Option<(IpAddr, Range<usize>)>,
    roles: Vec<Role>,
    /// False when roles are missing or invalid: then "no manager" may be wrong, so it is not said.
    roles_known: bool,
    labels: BTreeMap<String, String>,
    vars: toml::Table,
}

impl Draft {
    fn label(&self, index: usize) -> String {
        match &self.name {
            Some((n, _)) => format!("host `{n}`"),
            None => format!("host #{}", index + 1),
        }
    }
}

fn check(
    r: &mut Reporter<'_>,
    doc: &DeTable<'_>,
    path: &Path,
    dir: &Path,
    rules: &InventoryRules,
) -> Option<Inventory> {
    let top = 0..0;
    let mut suggested = Vec::new();
    for key in doc.keys() {
        let k = key.get_ref().as_ref();
        if TOP_KEYS.contains(&k) {
            continue;
        }
        // A setting in the wrong table is a likelier mistake than a typo.
        let (in_ssh, in_host) = (SSH_KEYS.contains(&k), HOST_KEYS.contains(&k));
        let help = if in_ssh && in_host {
            format!("`{k}` belongs in [ssh] (the default for every host) or in a [[hosts]] block")
        } else if in_ssh {
            format!("`{k}` belongs in the [ssh] table: move it below [ssh]")
        } else if in_host {
            format!("`{k}` is a host setting: move it into a [[hosts]] block")
        } else if let Some(s) = did_you_mean(k, TOP_KEYS) {
            suggested.push(s);
            format!("did you mean `{s}`?")
        } else {
            format!("expected one of: {}", TOP_KEYS.join(", "))
        };
        r.error(&key.span(), format!("unknown key `{k}`"), Some(help));
    }

    let name = match doc.get("name") {
        Some(v) => r
            .nonempty_string(v, "`name`", "name = \"prod\"")
            .map(str::to_string),
        None if suggested.contains(&"name") => None,
        None => {
            r.error(
                &top,
                "missing required key `name`",
                Some("add name = \"prod\" at the top of the file: the cluster's name".into()),
            );
            None
        }
    };
    let playbook = path_value(
        r,
        doc.get("playbook"),
        "`playbook`",
        "playbook = \"playbooks/swarm.toml\"",
        dir,
    );
    let secrets = path_value(
        r,
        doc.get("secrets"),
        "`secrets`",
        "secrets = \"secrets.age\"",
        dir,
    );
    let ssh = check_ssh(r, doc.get("ssh"), dir);
    let vars = doc.get("vars").and_then(|v| {
        check_vars(
            r,
            v,
            "`vars`",
            "[vars] followed by key = value lines",
            "[vars]",
        )
    });

    let drafts = check_hosts(r, doc.get("hosts"), ssh.as_ref());
    let hosts = check_cluster(r, &drafts, ssh.as_ref(), rules);
    let groups = match doc.get("groups") {
        Some(v) => check_groups(r, v, &drafts_names(&drafts), &hosts),
        None => Vec::new(),
    };

    Some(Inventory {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        name: name?,
        playbook: playbook?,
        secrets: secrets?,
        ssh: ssh?,
        vars: vars.unwrap_or_default(),
        hosts,
        groups,
        warnings: Vec::new(),
    })
}

/// Every host name of the file, valid hosts or not (so a group
/// listing a host whose address is wrong does not also get "unknown host").
fn drafts_names(drafts: &[Draft]) -> Vec<&str> {
    drafts
        .iter()
        .filter_map(|d| d.name.as_ref().map(|(n, _)| n.as_str()))
        .collect()
}

/// An optional path setting: `Some(None)` when absent, `None` when invalid.
fn path_value(
    r: &mut Reporter<'_>,
    value: Option<&Spanned<DeValue<'_>>>,
    what: &str,
    example: &str,
    dir: &Path,
) -> Option<Option<PathBuf>> {
    match value {
        None => Some(None),
        Some(v) => r
            .nonempty_string(v, what, example)
            .map(|s| Some(resolve(s, dir))),
    }
}

fn check_ssh(
    r: &mut Reporter<'_>,
    value: Option<&Spanned<DeValue<'_>>>,
    dir: &Path,
) -> Option<SshSettings> {
    let mut ssh = SshSettings {
        user: None,
        port: None,
        identity: None,
        known_hosts: dir.join("known_hosts"),
        host_key_policy: HostKeyPolicy::AcceptNew,
        proxy_jump: None,
        connect_timeout: None,
        become_sudo: false,
    };
    let Some(value) = value else { return Some(ssh) };
    let t = r.table(
        value,
        "`ssh`",
        "[ssh] followed by its keys, e.g. user = \"root\"",
    )?;
    let errors_before = r.diagnostics.len();
    r.unknown_keys(t, SSH_KEYS, " in [ssh]");
    for (key, v) in t.iter() {
        let k = key.get_ref().as_ref();
        let what = format!("`{k}` in [ssh]");
        match k {
            "user" => {
                ssh.user = r
                    .nonempty_string(v, &what, "user = \"root\"")
                    .map(str::to_string)
            }
            "port" => ssh.port = check_port(r, v, &what),
            "identity" => {
                ssh.identity = r
                    .nonempty_string(v, &what, "identity = \"~/.ssh/id_ed25519\"")
                    .map(|s| resolve(s, dir))
            }
            "known_hosts" => {
                if let Some(s) = r.nonempty_string(v, &what, "known_hosts = \"known_hosts\"") {
                    ssh.known_hosts = resolve(s, dir);
                }
            }
            "host_key_policy" => {
                let example = "host_key_policy = \"accept-new\" (or \"strict\")";
                match r.string(v, &what, example) {
                    Some("strict") => ssh.host_key_policy = HostKeyPolicy::Strict,
                    Some("accept-new") => ssh.host_key_policy = HostKeyPolicy::AcceptNew,
                    Some(other) => {
                        let help = match did_you_mean(other, &["strict", "accept-new"]) {
                            Some(s) => format!("did you mean `{s}`? (one of: strict, accept-new)"),
                            None => format!("write {example}"),
                        };
                        r.error(
                            &v.span(),
                            format!("unknown host_key_policy `{other}`"),
                            Some(help),
                        );
                    }
                    None => {}
                }
            }
            "proxy_jump" => {
                ssh.proxy_jump = r
                    .nonempty_string(v, &what, "proxy_jump = \"admin@bastion.example.com\"")
                    .map(str::to_string)
            }
            "connect_timeout" => {
                let example = "connect_timeout = 10 (seconds)";
                match r.integer(v, &what, example) {
                    Some(n) if n > 0 => ssh.connect_timeout = Some(Duration::from_secs(n as u64)),
                    Some(n) => r.error(
                        &v.span(),
                        format!("{what} must be a positive number of seconds, not {n}"),
                        Some(format!("write {example}")),
                    ),
                    None => {}
                }
            }
            "become" => ssh.become_sudo = check_become(r, v, &what).unwrap_or(false),
            _ => {}
        }
    }
    (r.diagnostics.len() == errors_before).then_some(ssh)
}

/// A port number, 1 to 65535; the help names sshd, the only port an inventory sets.
fn check_port(r: &mut Reporter<'_>, value: &Spanned<DeValue<'_>>, what: &str) -> Option<u16> {
    let example = "port = 22";
    let n = r.integer(value, what, example)?;
    match u16::try_from(n) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            r.error(
                &value.span(),
                format!("{what} must be between 1 and 65535, not {n}"),
                Some(format!("write {example}, or the port sshd listens on")),
            );
            None
        }
    }
}

/// `become = "sudo"`, the one supported method.
fn check_become(r: &mut Reporter<'_>, v: &Spanned<DeValue<'_>>, what: &str) -> Option<bool> {
    let example = "become = \"sudo\"";
    match r.string(v, what, example)? {
        "sudo" => Some(true),
        other => {
            r.error(
                &v.span(),
                format!("unsupported become method `{other}`"),
                Some(format!(
                    "write {example} (the only supported method), \
                     or remove it to run as the SSH user"
                )),
            );
            None
        }
    }
}

/// A vars table; `host` is reserved for the facts `host_vars` adds.
pub(crate) fn check_vars(
    r: &mut Reporter<'_>,
    v: &Spanned<DeValue<'_>>,
    what: &str,
    example: &str,
    place: &str,
) -> Option<toml::Table> {
    let t = r.table(v, what, example)?;
    if let Some((key, _)) = t.get_key_value("host") {
        r.error(
            &key.span(),
            format!("var `host` in {place} is reserved"),
            Some(
                "rename it: templates see the host's facts \
                 (name, address, private_ip, roles, labels) as `host`"
                    .into(),
            ),
        );
        return None;
    }
    Some(to_table(t))
}

fn check_hosts(
    r: &mut Reporter<'_>,
    value: Option<&Spanned<DeValue<'_>>>,
    ssh: Option<&SshSettings>,
) -> Vec<Draft> {
    let no_hosts_help = "add a [[hosts]] block for each server, with name, address and roles";
    let Some(value) = value else {
        r.error(&(0..0), "no hosts defined", Some(no_hosts_help.into()));
        return Vec::new();
    };
    let items = match value.get_ref() {
        DeValue::Array(a) => a,
        DeValue::Table(_) => {
            r.error(
                &value.span(),
                "`hosts` must be an array of tables, not a table",
                Some("write [[hosts]] (double brackets) before each host".into()),
            );
            return Vec::new();
        }
        _ => {
            r.wrong_type(
                value,
                "`hosts`",
                "an array of tables",
                "one [[hosts]] block per server",
            );
            return Vec::new();
        }
    };
    if items.is_empty() {
        r.error(
            &value.span(),
            "no hosts defined",
            Some(no_hosts_help.into()),
        );
    }
    let mut drafts = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.get_ref() {
            DeValue::Table(t) => drafts.push(check_host(r, t, item.span(), i, ssh)),
            _ => r.wrong_type(
                item,
                &format!("host #{}", i + 1),
                "a table",
                "one [[hosts]] block per server",
            ),
        }
    }
    drafts
}

fn check_host(
    r: &mut Reporter<'_>,
    t: &DeTable<'_>,
    header: Range<usize>,
    index: usize,
    ssh: Option<&SshSettings>,
) -> Draft {
    let mut d = Draft {
        header: header.clone(),
        name: None,
        address: None,
        port: None,
        user: None,
        become_sudo: None,
        private_ip: None,
        roles: Vec::new(),
        roles_known: false,
        labels: BTreeMap::new(),
        vars: toml::Table::new(),
    };
    // The name first: every other message about this host uses it.
    if let Some(v) = t.get("name")
        && let Some(name) = r.nonempty_string(
            v,
            &format!("`name` in host #{}", index + 1),
            "name = \"web-1\"",
        )
    {
        if !is_hostname(name) {
            r.error(
                &v.span(),
                format!("host name `{name}` is not a valid hostname"),
                Some(format!(
                    "use letters, digits and hyphens (at most 63, not first or last), \
                 e.g. name = \"{}\"",
                    hostname_suggestion(name)
                )),
            );
        } else if SELECTOR_WORDS.contains(&name) {
            r.warning(
                &v.span(),
                format!("host name `{name}` is also a role or group name"),
                Some(format!(
                    "hosts = \"{name}\" in a playbook means the role or group; \
                 rename the host (e.g. `{name}-1`) to target it alone"
                )),
            );
        }
        d.name = Some((name.to_string(), v.span()));
    }
    let host = d.label(index);
    let suggested = r.unknown_keys(t, HOST_KEYS, &format!(" in {host}"));
    let missing = |key: &str| t.get(key).is_none() && !suggested.contains(&key);
    if missing("name") {
        r.error(
            &header,
            format!("{host} has no name"),
            Some("add name = \"web-1\" (it also becomes the server's hostname)".into()),
        );
    }

    for (key, v) in t.iter() {
        let k = key.get_ref().as_ref();
        let what = format!("`{k}` in {host}");
        match k {
            "address" => d.address = check_address(r, v, &what).map(|a| (a, v.span())),
            "port" => d.port = check_port(r, v, &what),
            "user" => {
                d.user = r
                    .nonempty_string(v, &what, "user = \"admin\"")
                    .map(str::to_string)
            }
            "become" => d.become_sudo = check_become(r, v, &what),
            "private_ip" => {
                d.private_ip = check_private_ip(r, v, &what).map(|ip| (ip, v.span()));
            }
            "roles" => {
                let errors_before = r.diagnostics.len();
                d.roles = check_roles(r, v, &what, &host);
                d.roles_known = !d.roles.is_empty()
                    && !r.diagnostics[errors_before..]
                        .iter()
                        .any(Diagnostic::is_error);
            }
            "labels" => d.labels = check_labels(r, v, &what, &host),
            "vars" => {
                d.vars = check_vars(r, v, &what, "vars = { swap_size = \"2G\" }", &host)
                    .unwrap_or_default()
            }
            _ => {}
        }
    }
    if missing("address") {
        r.error(
            &header,
            format!("{host} has no address"),
            Some(
                "add address = \"203.0.113.10\": the IP address or DNS name SSH connects to".into(),
            ),
        );
    }
    if missing("roles") {
        r.error(&header, format!("{host} has no role"), Some(no_role_help()));
    }
    if d.become_sudo.is_none() {
        d.become_sudo = Some(ssh.is_some_and(|s| s.become_sudo));
    }
    d
}

fn no_role_help() -> String {
    format!("add roles = [\"worker\"] (one of: {ROLE_LIST})")
}

fn check_address(r: &mut Reporter<'_>, v: &Spanned<DeValue<'_>>, what: &str) -> Option<String> {
    let example = "address = \"203.0.113.10\"";
    let a = r.nonempty_string(v, what, example)?;
    if a.parse::<IpAddr>().is_ok() || is_dns_name(a) {
        return Some(a.to_string());
    }
    let bare = provision_transport::addr::host_of(a);
    let help = match a.rsplit_once(':') {
        // `[v6]` or `[v6]:port`, the URL form.
        _ if a.starts_with('[') && bare.parse::<IpAddr>().is_ok() => match a.rsplit_once("]:") {
            Some((_, p)) => format!(
                "write the address without brackets and the port in its own key: address = \"{bare}\" and port = {p}"
            ),
            None => format!("write the address without brackets: address = \"{bare}\""),
        },
        Some((host, port))
            if port.parse::<u16>().is_ok()
                && (host.parse::<IpAddr>().is_ok() || is_dns_name(host)) =>
        {
            format!("put the port in its own key: address = \"{host}\" and port = {port}")
        }
        _ => format!("write an IP address or DNS name, e.g. {example}"),
    };
    r.error(
        &v.span(),
        format!("address `{a}` is not an IP address or hostname"),
        Some(help),
    );
    None
}

fn check_private_ip(r: &mut Reporter<'_>, v: &Spanned<DeValue<'_>>, what: &str) -> Option<IpAddr> {
    let example = "private_ip = \"10.0.0.11\"";
    let s = r.string(v, what, example)?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let help = match s.split_once('/') {
        Some((ip, _)) if ip.parse::<IpAddr>().is_ok() => {
            format!("drop the prefix length: private_ip = \"{ip}\"")
        }
        _ => format!("write an IPv4 or IPv6 address, e.g. {example}"),
    };
    r.error(
        &v.span(),
        format!("private_ip `{s}` is not an IP address"),
        Some(help),
    );
    None
}

fn check_roles(
    r: &mut Reporter<'_>,
    v: &Spanned<DeValue<'_>>,
    what: &str,
    host: &str,
) -> Vec<Role> {
    let items = match v.get_ref() {
        DeValue::Array(a) => a,
        DeValue::String(s) => {
            r.error(
                &v.span(),
                format!("{what} must be an array, not a string"),
                Some(format!("write roles = [\"{s}\"]")),
            );
            return Vec::new();
        }
        _ => {
            r.wrong_type(v, what, "an array", "roles = [\"worker\"]");
            return Vec::new();
        }
    };
    if items.is_empty() {
        r.error(
            &v.span(),
            format!("{host} has no role"),
            Some(no_role_help()),
        );
    }
    let mut roles = Vec::new();
    for item in items.iter() {
        let Some(s) = r.string(item, &format!("each of {what}"), "roles = [\"worker\"]") else {
            continue;
        };
        match s.parse::<Role>() {
            Ok(role) if roles.contains(&role) => r.warning(
                &item.span(),
                format!("role `{s}` is listed twice in {host}"),
                Some("remove one".into()),
            ),
            Ok(role) => roles.push(role),
            Err(_) => {
                let help = if s == "swarm" {
                    "`swarm` is a selector group (managers and workers), not a role: \
                     write \"manager\" or \"worker\""
                        .into()
                } else if let Some(m) = did_you_mean(s, &Role::NAMES) {
                    format!("did you mean `{m}`? (one of: {ROLE_LIST})")
                } else {
                    format!("use one of: {ROLE_LIST}")
                };
                r.error(
                    &item.span(),
                    format!("unknown role `{s}` in {host}"),
                    Some(help),
                );
            }
        }
    }
    roles
}

fn check_labels(
    r: &mut Reporter<'_>,
    v: &Spanned<DeValue<'_>>,
    what: &str,
    host: &str,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let Some(t) = r.table(v, what, "labels = { zone = \"a\" }") else {
        return labels;
    };
    for (key, value) in t.iter() {
        let k = key.get_ref().as_ref();
        if k.trim().is_empty() {
            r.error(
                &key.span(),
                format!("a label name in {host} is empty"),
                Some("name the label, e.g. labels = { zone = \"a\" }".into()),
            );
            continue;
        }
        let s = match value.get_ref() {
            DeValue::String(s) => s.as_ref(),
            // Docker labels are strings; quoting the value is the whole fix.
            DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
                let raw = r.text.get(value.span()).unwrap_or("").trim();
                r.error(
                    &value.span(),
                    format!(
                        "label `{k}` in {host} must be a string, not {}",
                        crate::diagnostic::a_type(value.get_ref())
                    ),
                    Some(format!("write {k} = \"{raw}\"")),
                );
                continue;
            }
            _ => {
                r.wrong_type(
                    value,
                    &format!("label `{k}` in {host}"),
                    "a string",
                    &format!("{k} = \"a\""),
                );
                continue;
            }
        };
        if s.trim().is_empty() {
            r.error(
                &value.span(),
                format!("label `{k}` in {host} has an empty value"),
                Some(format!("write {k} = \"a\", or remove the label")),
            );
            continue;
        }
        labels.insert(k.to_string(), s.to_string());
    }
    labels
}

/// Checks across hosts (duplicates, managers, private_ip) and builds the final host list.
fn check_cluster(
    r: &mut Reporter<'_>,
    drafts: &[Draft],
    ssh: Option<&SshSettings>,
    rules: &InventoryRules,
) -> Vec<Host> {
    let default_port = ssh.and_then(|s| s.port).unwrap_or(22);
    let mut names: HashMap<&str, (usize, String)> = HashMap::new();
    let mut endpoints: HashMap<(String, u16), (usize, String)> = HashMap::new();
    let mut private_ips: HashMap<IpAddr, (usize, String)> = HashMap::new();
    let mut warned_v6 = false;
    for (i, d) in drafts.iter().enumerate() {
        let host = d.label(i);
        let line = r.pos(&d.header).0;
        if let Some((name, span)) = &d.name {
            if let Some((first, _)) = names.get(name.as_str()) {
                r.error(
                    span,
                    format!("host name `{name}` is already used at line {first}"),
                    Some("give every host a unique name".into()),
                );
            } else {
                names.insert(name, (line, host.clone()));
            }
        }
        if let Some((address, span)) = &d.address {
            let port = d.port.unwrap_or(default_port);
            let key = (address.to_lowercase(), port);
            if let Some((first, other)) = endpoints.get(&key) {
                r.error(
                    span,
                    format!(
                        "{host} has the same address and port ({}) as {other} at line {first}",
                        provision_transport::addr::with_port(address, port)
                    ),
                    Some(
                        "give each host its own address, or its own port when they share one"
                            .into(),
                    ),
                );
            } else {
                endpoints.insert(key, (line, host.clone()));
            }
        }
        if let Some((ip, span)) = &d.private_ip {
            if let Some((first, other)) = private_ips.get(ip) {
                r.error(
                    span,
                    format!("{host} has the same private_ip ({ip}) as {other} at line {first}"),
                    Some("give every host its own private_ip".into()),
                );
            } else {
                private_ips.insert(*ip, (line, host.clone()));
            }
            let swarm_node = d
                .roles
                .iter()
                .any(|r| matches!(r, Role::Manager | Role::Worker));
            if ip.is_ipv6() && swarm_node && !warned_v6 {
                // Said once: the same holds for every IPv6 swarm node.
                warned_v6 = true;
                r.warning(
                    span,
                    format!(
                        "{host} has an IPv6 private_ip: the swarm's control plane, joins and NFS work over IPv6, but Docker's overlay networks do not carry traffic between nodes over an IPv6 underlay (moby/moby#41691, #43643), so tasks on different nodes cannot reach each other"
                    ),
                    Some(
                        "give swarm nodes an IPv4 private_ip (their SSH address may stay IPv6), or keep every service's tasks on one node".into(),
                    ),
                );
            }
        }
        let needs_ip = d
            .roles
            .iter()
            .any(|r| matches!(r, Role::Storage | Role::Manager | Role::Worker));
        if rules.require_private_ip && needs_ip && d.private_ip.is_none() {
            r.error(
                &d.header,
                format!("{host} has no private_ip"),
                Some(
                    "add private_ip = \"10.0.0.x\", its address on the cluster network \
                     (storage, manager and worker hosts need one)"
                        .into(),
                ),
            );
        }
    }

    let managers: Vec<&Draft> = drafts
        .iter()
        .filter(|d| d.roles.contains(&Role::Manager))
        .collect();
    let roles_known = drafts.iter().all(|d| d.roles_known);
    if rules.require_manager && managers.is_empty() && !drafts.is_empty() && roles_known {
        r.error(
            &drafts[0].header,
            "no host has the manager role",
            Some("add \"manager\" to the roles of one host (three for fault tolerance)".into()),
        );
    }
    if let Some(last) = managers.last().filter(|_| managers.len().is_multiple_of(2)) {
        let n = managers.len();
        r.warning(
            &last.header,
            format!(
                "{n} managers: an even number tolerates no more failures than {}",
                n - 1
            ),
            Some(
                "use an odd number of managers (1, 3 or 5) \
                 so a majority, the Raft quorum, survives a failure"
                    .into(),
            ),
        );
    }

    drafts
        .iter()
        .filter_map(|d| {
            Some(Host {
                name: d.name.as_ref()?.0.clone(),
                address: d.address.as_ref()?.0.clone(),
                port: d.port,
                user: d.user.clone(),
                become_sudo: d.become_sudo.unwrap_or(false),
                private_ip: d.private_ip.as_ref().map(|(ip, _)| *ip),
                roles: d.roles.clone(),
                labels: d.labels.clone(),
                vars: d.vars.clone(),
                line: r.pos(&d.header).0,
            })
        })
        .collect()
}

/// A group as read, before the checks across groups (cycles) and its members are known.
struct GroupDraft {
    name: String,
    line: usize,
    hosts: Vec<String>,
    /// Child groups and roles, each with its entry's span (a cycle is shown where it closes).
    children: Vec<(String, Range<usize>)>,
    vars: toml::Table,
}

const GROUP_EXAMPLE: &str = "[groups.web] followed by hosts = [\"web-1\"]";

/// `[groups.NAME]` tables: names, hosts, children and vars checked, cycles refused, members
/// resolved; sorted in the order their vars apply (depth, then name).
fn check_groups(
    r: &mut Reporter<'_>,
    value: &Spanned<DeValue<'_>>,
    host_names: &[&str],
    hosts: &[Host],
) -> Vec<Group> {
    let Some(t) = r.table(value, "`groups`", GROUP_EXAMPLE) else {
        return Vec::new();
    };
    let errors_before = r.diagnostics.iter().filter(|d| d.is_error()).count();
    let group_names: Vec<&str> = t.keys().map(|k| k.get_ref().as_ref()).collect();
    let mut drafts = Vec::new();
    for (key, v) in t.iter() {
        let name = key.get_ref().as_ref();
        if !check_group_name(r, name, &key.span(), host_names) {
            continue;
        }
        let label = format!("group `{name}`");
        let Some(body) = r.table(v, &label, GROUP_EXAMPLE) else {
            continue;
        };
        r.unknown_keys(body, GROUP_KEYS, &format!(" in {label}"));
        let mut d = GroupDraft {
            name: name.to_string(),
            line: r.pos(&key.span()).0,
            hosts: Vec::new(),
            children: Vec::new(),
            vars: toml::Table::new(),
        };
        if let Some(v) = body.get("hosts") {
            for (s, span) in string_list(r, v, "hosts", &label) {
                if d.hosts.iter().any(|h| h == s) {
                    r.warning(
                        &span,
                        format!("host `{s}` is listed twice in {label}"),
                        Some("remove one".into()),
                    );
                } else if host_names.contains(&s) {
                    d.hosts.push(s.to_string());
                } else {
                    let help = if group_names.contains(&s) || s.parse::<Role>().is_ok() {
                        format!("`{s}` is a group: list it in children = [\"{s}\"]")
                    } else if let Some(m) = did_you_mean(s, host_names) {
                        format!("did you mean `{m}`?")
                    } else {
                        "list the names of [[hosts]] blocks".into()
                    };
                    r.error(&span, format!("unknown host `{s}` in {label}"), Some(help));
                }
            }
        }
        if let Some(v) = body.get("children") {
            for (s, span) in string_list(r, v, "children", &label) {
                if group_names.contains(&s) || s.parse::<Role>().is_ok() {
                    d.children.push((s.to_string(), span));
                    continue;
                }
                let mut candidates = group_names.clone();
                candidates.extend(Role::NAMES);
                let help = if host_names.contains(&s) {
                    format!("`{s}` is a host: list it in hosts = [\"{s}\"]")
                } else if let Some(m) = did_you_mean(s, &candidates) {
                    format!("did you mean `{m}`?")
                } else {
                    format!(
                        "children are groups ([groups.NAME]) or roles ({ROLE_LIST}) whose hosts \
                         belong to {label} too"
                    )
                };
                r.error(
                    &span,
                    format!("unknown group `{s}` in the children of {label}"),
                    Some(help),
                );
            }
        }
        if let Some(v) = body.get("vars") {
            let what = format!("`vars` in {label}");
            d.vars = check_vars(r, v, &what, "vars = { port = 8080 }", &label).unwrap_or_default();
        }
        drafts.push(d);
    }
    report_cycles(r, &drafts);
    if r.diagnostics.iter().filter(|d| d.is_error()).count() != errors_before {
        // The inventory is refused: members of a broken hierarchy mean nothing.
        return Vec::new();
    }
    resolve_groups(drafts, hosts)
}

/// A valid group name that is no role, keyword or host name.
fn check_group_name(
    r: &mut Reporter<'_>,
    name: &str,
    span: &Range<usize>,
    host_names: &[&str],
) -> bool {
    let (message, help) = if !is_group_name(name) {
        (
            format!("group name `{name}` is not valid"),
            "use letters, digits, `-` and `_` (at most 63): hosts patterns use `,` `:` `&` `!` \
             `*` `?` as operators"
                .to_string(),
        )
    } else if name.parse::<Role>().is_ok() {
        (
            format!("group name `{name}` is a role"),
            format!(
                "roles are groups already (hosts = \"{name}\" selects its hosts, children = \
                 [\"{name}\"] includes them); name this group otherwise, e.g. `{name}s`"
            ),
        )
    } else if SELECTOR_WORDS.contains(&name) {
        (
            format!("group name `{name}` is reserved"),
            format!(
                "`{name}` selects hosts already (all: every host; swarm: managers and workers); \
                 name this group otherwise"
            ),
        )
    } else if host_names.contains(&name) {
        (
            format!("group `{name}` has the same name as a host"),
            format!(
                "rename the group (e.g. `{name}-group`): a hosts pattern could not tell them apart"
            ),
        )
    } else {
        return true;
    };
    r.error(span, message, Some(help));
    false
}

/// A list of strings (`hosts = [...]`, `children = [...]`) with each entry's span.
fn string_list<'v>(
    r: &mut Reporter<'_>,
    v: &'v Spanned<DeValue<'_>>,
    key: &str,
    label: &str,
) -> Vec<(&'v str, Range<usize>)> {
    let what = format!("`{key}` in {label}");
    let example = format!("{key} = [\"web-1\"]");
    let items = match v.get_ref() {
        DeValue::Array(a) => a,
        DeValue::String(s) => {
            r.error(
                &v.span(),
                format!("{what} must be an array, not a string"),
                Some(format!("write {key} = [\"{s}\"]")),
            );
            return Vec::new();
        }
        _ => {
            r.wrong_type(v, &what, "an array", &example);
            return Vec::new();
        }
    };
    items
        .iter()
        .filter_map(|item| {
            r.string(item, &format!("each of {what}"), &example)
                .map(|s| (s, item.span()))
        })
        .collect()
}

/// Each cycle of `children` once, at the entry that closes it, with the chain it makes.
fn report_cycles(r: &mut Reporter<'_>, drafts: &[GroupDraft]) {
    fn visit(
        i: usize,
        drafts: &[GroupDraft],
        state: &mut [u8],
        stack: &mut Vec<usize>,
        found: &mut Vec<(Range<usize>, String)>,
    ) {
        // 0: not seen, 1: on the current path, 2: done.
        state[i] = 1;
        stack.push(i);
        for (child, span) in &drafts[i].children {
            let Some(j) = drafts.iter().position(|d| d.name == *child) else {
                continue; // a role: no children
            };
            match state[j] {
                0 => visit(j, drafts, state, stack, found),
                1 => {
                    let from = stack.iter().position(|&k| k == j).unwrap_or(0);
                    let mut chain: Vec<&str> = stack[from..]
                        .iter()
                        .map(|&k| drafts[k].name.as_str())
                        .collect();
                    chain.push(child);
                    found.push((span.clone(), chain.join(" -> ")));
                }
                _ => {}
            }
        }
        stack.pop();
        state[i] = 2;
    }
    let mut state = vec![0u8; drafts.len()];
    let mut found = Vec::new();
    for i in 0..drafts.len() {
        if state[i] == 0 {
            visit(i, drafts, &mut state, &mut Vec::new(), &mut found);
        }
    }
    for (span, chain) in found {
        r.error(
            &span,
            format!("groups contain each other: {chain}"),
            Some("remove one of these children entries: a group cannot contain itself".into()),
        );
    }
}

/// Depths and members of an acyclic hierarchy, sorted by (depth, name).
fn resolve_groups(drafts: Vec<GroupDraft>, hosts: &[Host]) -> Vec<Group> {
    fn depth(i: usize, drafts: &[GroupDraft], memo: &mut [Option<usize>]) -> usize {
        if let Some(d) = memo[i] {
            return d;
        }
        let name = &drafts[i].name;
        let d = (0..drafts.len())
            .filter(|&p| drafts[p].children.iter().any(|(c, _)| c == name))
            .map(|p| depth(p, drafts, memo) + 1)
            .max()
            .unwrap_or(0);
        memo[i] = Some(d);
        d
    }
    fn members(
        i: usize,
        drafts: &[GroupDraft],
        hosts: &[Host],
        memo: &mut [Option<BTreeSet<String>>],
    ) -> BTreeSet<String> {
        if let Some(m) = &memo[i] {
            return m.clone();
        }
        let mut m: BTreeSet<String> = drafts[i].hosts.iter().cloned().collect();
        for (child, _) in &drafts[i].children {
            match drafts.iter().position(|d| d.name == *child) {
                Some(j) => m.extend(members(j, drafts, hosts, memo)),
                None => {
                    if let Ok(role) = child.parse::<Role>() {
                        m.extend(
                            hosts
                                .iter()
                                .filter(|h| h.has_role(role))
                                .map(|h| h.name.clone()),
                        );
                    }
                }
            }
        }
        memo[i] = Some(m.clone());
        m
    }
    let mut depths = vec![None; drafts.len()];
    let mut all_members = vec![None; drafts.len()];
    let mut groups: Vec<Group> = (0..drafts.len())
        .map(|i| Group {
            name: drafts[i].name.clone(),
            hosts: drafts[i].hosts.clone(),
            children: drafts[i].children.iter().map(|(c, _)| c.clone()).collect(),
            vars: drafts[i].vars.clone(),
            depth: depth(i, &drafts, &mut depths),
            members: members(i, &drafts, hosts, &mut all_members),
            line: drafts[i].line,
        })
        .collect();
    groups.sort_by(|a, b| (a.depth, &a.name).cmp(&(b.depth, &b.name)));
    groups
}

/// An RFC 1123 label: letters, digits and hyphens, 1 to 63 long, no hyphen at either end.
pub fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A group name: letters, digits, `-` and `_`, 1 to 63 long (what a hosts pattern can name;
/// every valid host name is one).
pub fn is_group_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Dot-separated hostname labels, as an SSH address may be (a trailing dot is fully qualified).
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    s.len() <= 253 && s.split('.').all(is_hostname)
}

/// The nearest valid hostname, for the help text: `Web_1` becomes `web-1`.
fn hostname_suggestion(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut out = String::new();
    for c in mapped.chars() {
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let out: String = out.trim_matches('-').chars().take(63).collect();
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        "web-1".into()
    } else {
        out.into()
    }
}

/// `~` to $HOME, then relative to the inventory's directory.
fn resolve(s: &str, dir: &Path) -> PathBuf {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    let p = match (s.strip_prefix("~"), home) {
        (Some(""), Some(home)) => home,
        (Some(rest), Some(home)) if rest.starts_with('/') => {
            home.join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(s),
    };
    if p.is_absolute() { p } else { dir.join(p) }
}

/// The file's directory as an absolute path (without touching the filesystem).
fn absolute_dir(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    abs.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Short, platform-independent reasons for the common cases.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "file not found".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(is_hostname("manager-1"));
        assert!(is_hostname("A1"));
        assert!(is_hostname(&"a".repeat(63)));
        assert!(!is_hostname(&"a".repeat(64)));
        assert!(!is_hostname("-a"));
        assert!(!is_hostname("a-"));
        assert!(!is_hostname("web_1"));
        assert!(!is_hostname("web.1"));
        assert!(!is_hostname(""));
        assert!(is_dns_name("node1.example.com."));
        assert!(!is_dns_name("a..b"));
        assert_eq!(hostname_suggestion("Web_1"), "web-1");
        assert_eq!(hostname_suggestion("-db__main-"), "db-main");
        assert_eq!(hostname_suggestion("___"), "web-1");
    }

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert_eq!(
            "Manager".parse::<Role>().unwrap_err().to_string(),
            "unknown role `Manager` (one of: storage, manager, worker, lb)"
        );
    }

    #[test]
    fn paths_resolve_against_the_inventory() {
        let dir = Path::new("/srv/prod");
        assert_eq!(
            resolve("known_hosts", dir),
            PathBuf::from("/srv/prod/known_hosts")
        );
        assert_eq!(resolve("/etc/k", dir), PathBuf::from("/etc/k"));
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            assert_eq!(
                resolve("~/.ssh/id", dir),
                PathBuf::from(home).join(".ssh/id")
            );
        }
        assert_eq!(
            absolute_dir(Path::new("/a/b/cluster.toml")),
            PathBuf::from("/a/b")
        );
        assert!(absolute_dir(Path::new("cluster.toml")).is_absolute());
    }

    /// Four hosts (web-1, web-2, db-1 a manager, lb-1) and `extra` appended: groups.
    fn with_groups(extra: &str) -> Result<Inventory, ConfigError> {
        let text = format!(
            "name = \"t\"\n\
             [vars]\nport = 1\ntier = \"global\"\n\
             [[hosts]]\nname = \"web-1\"\naddress = \"10.0.0.1\"\nroles = [\"worker\"]\n\
             [[hosts]]\nname = \"web-2\"\naddress = \"10.0.0.2\"\nroles = [\"worker\"]\nvars = {{ port = 9 }}\n\
             [[hosts]]\nname = \"db-1\"\naddress = \"10.0.0.3\"\nroles = [\"manager\"]\n\
             [[hosts]]\nname = \"lb-1\"\naddress = \"10.0.0.4\"\nroles = [\"lb\"]\n\
             {extra}"
        );
        Inventory::parse(&text, Path::new("c.toml"), &InventoryRules::default())
    }

    fn errors(extra: &str) -> String {
        match with_groups(extra) {
            Ok(_) => panic!("loaded:\n{extra}"),
            Err(e) => e.to_string(),
        }
    }

    fn var(inv: &Inventory, host: &str, key: &str) -> toml::Value {
        inv.host_vars(inv.host(host).unwrap())[key].clone()
    }

    #[test]
    fn groups_include_their_children_and_roles() {
        let inv = with_groups(
            "[groups.web]\nhosts = [\"web-1\"]\nchildren = [\"canary\"]\n\
             [groups.canary]\nhosts = [\"web-2\"]\n\
             [groups.site]\nchildren = [\"web\", \"manager\"]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let members =
            |g: &str| -> Vec<String> { inv.group(g).unwrap().members.iter().cloned().collect() };
        assert_eq!(members("canary"), ["web-2"]);
        assert_eq!(members("web"), ["web-1", "web-2"]);
        // Grandchildren, and a role's hosts as a child.
        assert_eq!(members("site"), ["db-1", "web-1", "web-2"]);
        // Depth is the longest chain of parents; groups are kept in the order vars apply.
        let order: Vec<(&str, usize)> = inv
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.depth))
            .collect();
        assert_eq!(order, [("site", 0), ("web", 1), ("canary", 2)]);
        assert_eq!(inv.group("web").unwrap().line, 22);
        let groups_of = |h: &str| -> Vec<&str> {
            inv.groups_of(inv.host(h).unwrap())
                .map(|g| g.name.as_str())
                .collect()
        };
        assert_eq!(groups_of("web-2"), ["site", "web", "canary"]);
        assert!(groups_of("lb-1").is_empty());
        // Templates see them, sorted, as host.groups.
        assert_eq!(
            inv.host_vars(inv.host("web-2").unwrap())["host"]["groups"],
            toml::Value::Array(vec!["canary".into(), "site".into(), "web".into()])
        );
    }

    #[test]
    fn var_precedence_host_over_child_over_parent_over_global() {
        let inv = with_groups(
            "[groups.web]\nchildren = [\"canary\"]\nhosts = [\"web-1\"]\nvars = { port = 2, tier = \"web\", from = \"web\" }\n\
             [groups.canary]\nhosts = [\"web-2\"]\nvars = { port = 3, tier = \"canary\" }\n",
        )
        .unwrap();
        // Group over [vars].
        assert_eq!(var(&inv, "web-1", "port"), 2.into());
        assert_eq!(var(&inv, "web-1", "tier"), "web".into());
        // A child group's over its parent's; the parent's still fill in the rest.
        assert_eq!(var(&inv, "web-2", "tier"), "canary".into());
        assert_eq!(var(&inv, "web-2", "from"), "web".into());
        // The host's own over every group.
        assert_eq!(var(&inv, "web-2", "port"), 9.into());
        // Outside every group: [vars].
        assert_eq!(var(&inv, "db-1", "port"), 1.into());
        assert!(
            !inv.host_vars(inv.host("db-1").unwrap())
                .contains_key("from")
        );
    }

    #[test]
    fn unrelated_groups_apply_alphabetically_and_the_later_wins() {
        // Written z before a: the order in the file does not matter, the names do.
        let inv = with_groups(
            "[groups.zeta]\nhosts = [\"web-1\"]\nvars = { tier = \"zeta\" }\n\
             [groups.alpha]\nhosts = [\"web-1\", \"db-1\"]\nvars = { tier = \"alpha\", a = 1 }\n",
        )
        .unwrap();
        assert_eq!(var(&inv, "web-1", "tier"), "zeta".into());
        assert_eq!(var(&inv, "web-1", "a"), 1.into());
        assert_eq!(var(&inv, "db-1", "tier"), "alpha".into());
        // Depth before names: a deeper group wins over a shallower one whatever their names.
        let inv = with_groups(
            "[groups.zeta]\nhosts = [\"web-1\"]\nvars = { tier = \"zeta\" }\n\
             [groups.top]\nchildren = [\"alpha\"]\n\
             [groups.alpha]\nhosts = [\"web-1\"]\nvars = { tier = \"alpha\" }\n",
        )
        .unwrap();
        assert_eq!(var(&inv, "web-1", "tier"), "alpha".into());
    }

    #[test]
    fn a_cycle_is_an_error_showing_the_chain() {
        assert_eq!(
            errors(
                "[groups.a]\nchildren = [\"b\"]\n[groups.b]\nchildren = [\"c\"]\n[groups.c]\nchildren = [\"a\", \"manager\"]\n"
            ),
            "c.toml:27:13: error: groups contain each other: a -> b -> c -> a\n  \
             help: remove one of these children entries: a group cannot contain itself\n\n1 error"
        );
        assert_eq!(
            errors("[groups.a]\nchildren = [\"a\"]\n"),
            "c.toml:23:13: error: groups contain each other: a -> a\n  \
             help: remove one of these children entries: a group cannot contain itself\n\n1 error"
        );
    }

    #[test]
    fn bad_groups_are_named_at_their_line_with_a_suggestion() {
        let e = errors(
            "[groups.web]\nhosts = [\"web-3\", \"canary\", \"web-1\", \"web-1\"]\nchildren = [\"canery\", \"lb-1\"]\nvar = {}\n\
             [groups.canary]\nhosts = \"web-2\"\nvars = { host = 1 }\n\
             [groups.worker]\n[groups.all]\n[groups.db-1]\n[groups.\"a.b\"]\n[groups.x]\nhosts = [1]\n",
        );
        assert_eq!(
            e,
            "c.toml:23:10: error: unknown host `web-3` in group `web`\n  help: did you mean `web-1`?\n\n\
             c.toml:23:19: error: unknown host `canary` in group `web`\n  help: `canary` is a group: list it in children = [\"canary\"]\n\n\
             c.toml:23:38: warning: host `web-1` is listed twice in group `web`\n  help: remove one\n\n\
             c.toml:24:13: error: unknown group `canery` in the children of group `web`\n  help: did you mean `canary`?\n\n\
             c.toml:24:23: error: unknown group `lb-1` in the children of group `web`\n  help: `lb-1` is a host: list it in hosts = [\"lb-1\"]\n\n\
             c.toml:25:1: error: unknown key `var` in group `web`\n  help: did you mean `vars`?\n\n\
             c.toml:27:9: error: `hosts` in group `canary` must be an array, not a string\n  help: write hosts = [\"web-2\"]\n\n\
             c.toml:28:10: error: var `host` in group `canary` is reserved\n  help: rename it: templates see the host's facts (name, address, private_ip, roles, labels) as `host`\n\n\
             c.toml:29:9: error: group name `worker` is a role\n  help: roles are groups already (hosts = \"worker\" selects its hosts, children = [\"worker\"] includes them); name this group otherwise, e.g. `workers`\n\n\
             c.toml:30:9: error: group name `all` is reserved\n  help: `all` selects hosts already (all: every host; swarm: managers and workers); name this group otherwise\n\n\
             c.toml:31:9: error: group `db-1` has the same name as a host\n  help: rename the group (e.g. `db-1-group`): a hosts pattern could not tell them apart\n\n\
             c.toml:32:9: error: group name `a.b` is not valid\n  help: use letters, digits, `-` and `_` (at most 63): hosts patterns use `,` `:` `&` `!` `*` `?` as operators\n\n\
             c.toml:34:10: error: each of `hosts` in group `x` must be a string, not an integer\n  help: write hosts = [\"web-1\"]\n\n\
             12 errors, 1 warning"
        );
        let top = "groups = [\"web\"]\nname = \"t\"\n[[hosts]]\nname = \"web-1\"\naddress = \"10.0.0.1\"\nroles = [\"lb\"]\n";
        assert_eq!(
            Inventory::parse(top, Path::new("c.toml"), &InventoryRules::default())
                .unwrap_err()
                .to_string(),
            "c.toml:1:10: error: `groups` must be a table, not an array\n  \
             help: write [groups.web] followed by hosts = [\"web-1\"]\n\n1 error"
        );
    }

    #[test]
    fn group_names() {
        assert!(is_group_name("web_servers"));
        assert!(is_group_name("web-1"));
        assert!(!is_group_name("web.1"));
        assert!(!is_group_name("web*"));
        assert!(!is_group_name(""));
        assert!(!is_group_name(&"a".repeat(64)));
    }
}
