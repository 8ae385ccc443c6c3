//! LAB.toml: what VMs a lab has (names, roles, size) and its private network; parsing and checks.

use crate::error::{LabError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use toml::Spanned;

/// The embedded default topology: storage-1, manager-1, worker-1.
pub const DEFAULT_LAB_TOML: &str = include_str!("../default-lab.toml");

/// Memory of a VM when LAB.toml does not say, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 1536;
/// CPUs of a VM when LAB.toml does not say.
pub const DEFAULT_CPUS: u32 = 1;
/// Private network when LAB.toml does not say.
pub const DEFAULT_SUBNET: &str = "10.10.0.0/24";
/// Last octet of the first VM's private address; later VMs count up from it.
pub const FIRST_HOST: u32 = 11;

/// What a VM is for in the cluster; the inventory's `roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Storage,
    Manager,
    Worker,
    Lb,
}

impl Role {
    /// All roles, in the order they are documented.
    pub const ALL: [Role; 4] = [Role::Storage, Role::Manager, Role::Worker, Role::Lb];

    /// The inventory spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Storage => "storage",
            Role::Manager => "manager",
            Role::Worker => "worker",
            Role::Lb => "lb",
        }
    }

    /// Parses the inventory spelling.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One VM of a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub name: String,
    pub roles: Vec<Role>,
    pub memory_mib: u32,
    pub cpus: u32,
}

impl VmSpec {
    /// A VM with default size.
    pub fn new(name: impl Into<String>, roles: Vec<Role>) -> VmSpec {
        VmSpec {
            name: name.into(),
            roles,
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: DEFAULT_CPUS,
        }
    }

    /// Checks name, roles and size; `source` names where the VM came from for the message.
    pub fn validate(&self, source: &str) -> Result<()> {
        let fail = |m: String| Err(LabError::spec(source, None, m));
        if let Err(m) = check_name(&self.name, 63) {
            return fail(format!("VM name `{}`: {m}", self.name));
        }
        if self.roles.is_empty() {
            return fail(format!(
                "VM `{}` has no roles: give at least one of storage, manager, worker, lb",
                self.name
            ));
        }
        for (i, r) in self.roles.iter().enumerate() {
            if self.roles[..i].contains(r) {
                return fail(format!("VM `{}` lists role `{r}` twice", self.name));
            }
        }
        if let Err(m) = check_memory(self.memory_mib) {
            return fail(format!("VM `{}`: {m}", self.name));
        }
        if let Err(m) = check_cpus(self.cpus) {
            return fail(format!("VM `{}`: {m}", self.name));
        }
        Ok(())
    }
}

/// An IPv4 network whose hosts get .11, .12, ... (counted from the network address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/len`; host bits must be zero, length 16 to 28.
    pub fn parse(s: &str) -> std::result::Result<Subnet, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("subnet `{s}` is not of the form 10.10.0.0/24"))?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("subnet `{s}`: `{addr}` is not an IPv4 address"))?;
        let prefix: u8 = len
            .parse()
            .map_err(|_| format!("subnet `{s}`: `{len}` is not a prefix length"))?;
        if !(16..=28).contains(&prefix) {
            return Err(format!("subnet `{s}`: prefix length must be 16 to 28"));
        }
        let subnet = Subnet { network, prefix };
        if u32::from(network) & !subnet.mask() != 0 {
            let net = Ipv4Addr::from(u32::from(network) & subnet.mask());
            return Err(format!(
                "subnet `{s}` has host bits set: did you mean {net}/{prefix}?"
            ));
        }
        // qemu's user network (management NIC) is 10.0.2.0/24: the private one must not overlap it.
        let slirp = Subnet {
            network: Ipv4Addr::new(10, 0, 2, 0),
            prefix: 24,
        };
        if subnet.overlaps(&slirp) {
            return Err(format!(
                "subnet `{s}` overlaps qemu's user network 10.0.2.0/24 used for management: choose another, e.g. {DEFAULT_SUBNET}"
            ));
        }
        Ok(subnet)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    fn overlaps(&self, other: &Subnet) -> bool {
        let mask = self.mask() & other.mask();
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }

    /// Prefix length, e.g. 24.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// How many VMs fit: .11 up to the last address before broadcast.
    pub fn capacity(&self) -> u32 {
        let size = 1u32 << (32 - u32::from(self.prefix));
        size.saturating_sub(FIRST_HOST + 1)
    }

    /// Address of the VM with this index (0 is .11).
    pub fn host(&self, index: u32) -> Option<Ipv4Addr> {
        (index < self.capacity())
            .then(|| Ipv4Addr::from(u32::from(self.network) + FIRST_HOST + index))
    }

    /// Index of an address given by `host`, if it is one.
    pub fn index_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let off = u32::from(ip)
            .checked_sub(u32::from(self.network))?
            .checked_sub(FIRST_HOST)?;
        (off < self.capacity()).then_some(off)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A whole lab: its name, VMs and network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    /// Lab name: names the state directory and the cluster.
    pub name: String,
    pub vms: Vec<VmSpec>,
    pub subnet: Subnet,
    /// First SSH port on 127.0.0.1 (VM i gets base + i); None picks free ports.
    pub ssh_port_base: Option<u16>,
    /// The image layer the VMs boot from.
    pub layer: LayerName,
}

/// Which cached image layer a lab's VMs start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerName {
    /// Debian as debootstrap left it: nothing the playbook installs (the product's promise).
    #[default]
    Bare,
    /// Bare plus what the built-in playbook installs (Docker, NFS packages), identity wiped.
    Ready,
}

impl LayerName {
    pub const ALL: [LayerName; 2] = [LayerName::Bare, LayerName::Ready];

    pub fn as_str(self) -> &'static str {
        match self {
            LayerName::Bare => "bare",
            LayerName::Ready => "ready",
        }
    }

    pub fn parse(s: &str) -> Option<LayerName> {
        LayerName::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: Spanned<String>,
    subnet: Option<Spanned<String>>,
    ssh_port_base: Option<Spanned<u16>>,
    layer: Option<Spanned<String>>,
    vms: Spanned<Vec<RawVm>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: Spanned<String>,
    roles: Spanned<Vec<Spanned<String>>>,
    memory: Option<Spanned<u32>>,
    cpus: Option<Spanned<u32>>,
}

impl LabSpec {
    /// The embedded default lab (storage-1, manager-1, worker-1).
    pub fn default_lab() -> LabSpec {
        LabSpec::parse(DEFAULT_LAB_TOML, "<embedded default lab>")
            .expect("the embedded default lab is valid")
    }

    /// A generated topology: `storage` storage hosts, then managers, then workers.
    pub fn topology(name: &str, storage: u32, managers: u32, workers: u32) -> Result<LabSpec> {
        let mut vms = Vec::new();
        for (count, prefix, role) in [
            (storage, "storage", Role::Storage),
            (managers, "manager", Role::Manager),
            (workers, "worker", Role::Worker),
        ] {
            for i in 1..=count {
                vms.push(VmSpec::new(format!("{prefix}-{i}"), vec![role]));
            }
        }
        let spec = LabSpec {
            name: name.to_string(),
            vms,
            subnet: Subnet::parse(DEFAULT_SUBNET).expect("default subnet is valid"),
            ssh_port_base: None,
            layer: LayerName::Bare,
        };
        spec.validate("<command line>")?;
        Ok(spec)
    }

    /// Reads and checks a LAB.toml file.
    pub fn from_file(path: &Path) -> Result<LabSpec> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LabError::io(format!("cannot read {}", path.display()), e))?;
        LabSpec::parse(&text, &path.display().to_string())
    }

    /// Parses and checks LAB.toml text; `source_name` (a file name) prefixes error positions.
    pub fn parse(text: &str, source_name: &str) -> Result<LabSpec> {
        let pos = |span: std::ops::Range<usize>| Some(line_col(text, span.start));
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_string();
            LabError::spec(source_name, e.span().and_then(pos), msg)
        })?;
        let err =
            |span: std::ops::Range<usize>, m: String| LabError::spec(source_name, pos(span), m);

        check_name(raw.name.get_ref(), 32)
            .map_err(|m| err(raw.name.span(), format!("lab name: {m}")))?;
        let subnet = match &raw.subnet {
            Some(s) => Subnet::parse(s.get_ref()).map_err(|m| err(s.span(), m))?,
            None => Subnet::parse(DEFAULT_SUBNET).expect("default subnet is valid"),
        };
        if raw.vms.get_ref().is_empty() {
            return Err(err(
                raw.vms.span(),
                "a lab needs at least one VM in [[vms]]".into(),
            ));
        }
        let mut vms = Vec::new();
        for v in raw.vms.get_ref() {
            let name = v.name.get_ref().clone();
            check_name(&name, 63)
                .map_err(|m| err(v.name.span(), format!("VM name `{name}`: {m}")))?;
            if vms.iter().any(|o: &VmSpec| o.name == name) {
                return Err(err(
                    v.name.span(),
                    format!("VM name `{name}` is used twice"),
                ));
            }
            if v.roles.get_ref().is_empty() {
                return Err(err(
                    v.roles.span(),
                    format!(
                        "VM `{name}` has no roles: give at least one of storage, manager, worker, lb"
                    ),
                ));
            }
            let mut roles = Vec::new();
            for r in v.roles.get_ref() {
                let role = Role::parse(r.get_ref()).ok_or_else(|| {
                    err(
                        r.span(),
                        format!(
                            "unknown role `{}`: roles are storage, manager, worker, lb",
                            r.get_ref()
                        ),
                    )
                })?;
                if roles.contains(&role) {
                    return Err(err(r.span(), format!("role `{role}` is listed twice")));
                }
                roles.push(role);
            }
            let memory_mib = match &v.memory {
                Some(m) => {
                    check_memory(*m.get_ref()).map_err(|msg| err(m.span(), msg))?;
                    *m.get_ref()
                }
                None => DEFAULT_MEMORY_MIB,
            };
            let cpus = match &v.cpus {
                Some(c) => {
                    check_cpus(*c.get_ref()).map_err(|msg| err(c.span(), msg))?;
                    *c.get_ref()
                }
                None => DEFAULT_CPUS,
            };
            vms.push(VmSpec {
                name,
                roles,
                memory_mib,
                cpus,
            });
        }
        if vms.len() as u64 > u64::from(subnet.capacity()) {
            let span = raw.subnet.as_ref().map_or(raw.vms.span(), |s| s.span());
            return Err(err(
                span,
                format!(
                    "{} VMs do not fit in subnet {subnet} (room for {})",
                    vms.len(),
                    subnet.capacity()
                ),
            ));
        }
        let ssh_port_base = match &raw.ssh_port_base {
            Some(p) => {
                let base = *p.get_ref();
                if base < 1024 || u32::from(base) + vms.len() as u32 - 1 > 65535 {
                    return Err(err(
                        p.span(),
                        format!(
                            "ssh_port_base {base}: ports {base} to {base}+{} must lie in 1024..65535",
                            vms.len() - 1
                        ),
                    ));
                }
                Some(base)
            }
            None => None,
        };
        let layer = match &raw.layer {
            Some(l) => LayerName::parse(l.get_ref()).ok_or_else(|| {
                err(
                    l.span(),
                    format!("unknown layer `{}`: layers are bare, ready", l.get_ref()),
                )
            })?,
            None => LayerName::Bare,
        };
        Ok(LabSpec {
            name: raw.name.into_inner(),
            vms,
            subnet,
            ssh_port_base,
            layer,
        })
    }

    /// Overrides every VM's memory and/or CPUs (command-line flags).
    pub fn with_resources(mut self, memory_mib: Option<u32>, cpus: Option<u32>) -> LabSpec {
        for vm in &mut self.vms {
            if let Some(m) = memory_mib {
                vm.memory_mib = m;
            }
            if let Some(c) = cpus {
                vm.cpus = c;
            }
        }
        self
    }

    /// Checks a spec built in code (parsed specs are checked already).
    pub fn validate(&self, source: &str) -> Result<()> {
        check_name(&self.name, 32)
            .map_err(|m| LabError::spec(source, None, format!("lab name: {m}")))?;
        if self.vms.is_empty() {
            return Err(LabError::spec(source, None, "a lab needs at least one VM"));
        }
        for (i, vm) in self.vms.iter().enumerate() {
            vm.validate(source)?;
            if self.vms[..i].iter().any(|o| o.name == vm.name) {
                return Err(LabError::spec(
                    source,
                    None,
                    format!("VM name `{}` is used twice", vm.name),
                ));
            }
        }
        if self.vms.len() as u64 > u64::from(self.subnet.capacity()) {
            return Err(LabError::spec(
                source,
                None,
                format!(
                    "{} VMs do not fit in subnet {}",
                    self.vms.len(),
                    self.subnet
                ),
            ));
        }
        if let Some(base) = self.ssh_port_base
            && (base < 1024 || u32::from(base) + self.vms.len() as u32 - 1 > 65535)
        {
            return Err(LabError::spec(
                source,
                None,
                format!("ssh_port_base {base}: the VMs' ports must lie in 1024..65535"),
            ));
        }
        Ok(())
    }
}

/// Names become directory names, qemu names and host names: keep them plain.
fn check_name(name: &str, max: usize) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > max {
        return Err(format!("must be 1 to {max} characters"));
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err("use lower-case letters, digits and inner dashes only".into())
    }
}

fn check_memory(mib: u32) -> std::result::Result<(), String> {
    if (512..=65536).contains(&mib) {
        Ok(())
    } else {
        Err(format!("memory {mib} MiB: must be 512 to 65536 (MiB)"))
    }
}

fn check_cpus(cpus: u32) -> std::result::Result<(), String> {
    if (1..=64).contains(&cpus) {
        Ok(())
    } else {
        Err(format!("cpus {cpus}: must be 1 to 64"))
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        LabSpec::parse(text, "LAB.toml").unwrap_err().to_string()
    }

    #[test]
    fn default_lab_is_storage_manager_worker() {
        let spec = LabSpec::default_lab();
        assert_eq!(spec.name, "lab");
        let names: Vec<&str> = spec.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["storage-1", "manager-1", "worker-1"]);
        assert_eq!(spec.vms[1].roles, [Role::Manager]);
        assert_eq!(spec.vms[0].memory_mib, 1536);
        assert_eq!(spec.vms[0].cpus, 1);
        assert_eq!(spec.subnet.to_string(), "10.10.0.0/24");
        assert_eq!(spec.ssh_port_base, None);
    }

    #[test]
    fn topology_orders_storage_managers_workers() {
        let spec = LabSpec::topology("big", 1, 3, 1).unwrap();
        let names: Vec<&str> = spec.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "storage-1",
                "manager-1",
                "manager-2",
                "manager-3",
                "worker-1"
            ]
        );
        assert_eq!(spec.vms[4].roles, [Role::Worker]);
        assert_eq!(LabSpec::topology("x", 0, 1, 0).unwrap().vms.len(), 1);
        assert!(
            LabSpec::topology("x", 0, 0, 0)
                .unwrap_err()
                .to_string()
                .contains("at least one VM")
        );
    }

    #[test]
    fn full_file_parses() {
        let spec = LabSpec::parse(
            r#"
name = "demo"
subnet = "10.20.0.0/24"
ssh_port_base = 22201

[[vms]]
name = "m1"
roles = ["manager", "lb"]
memory = 2048
cpus = 2
"#,
            "LAB.toml",
        )
        .unwrap();
        assert_eq!(spec.name, "demo");
        assert_eq!(spec.ssh_port_base, Some(22201));
        assert_eq!(
            spec.vms,
            [VmSpec {
                name: "m1".into(),
                roles: vec![Role::Manager, Role::Lb],
                memory_mib: 2048,
                cpus: 2
            }]
        );
        assert_eq!(spec.subnet.host(0), Some(Ipv4Addr::new(10, 20, 0, 11)));
        assert_eq!(spec.subnet.host(1), Some(Ipv4Addr::new(10, 20, 0, 12)));
    }

    #[test]
    fn errors_point_at_file_line_column() {
        let text = "name = \"lab\"\n[[vms]]\nname = \"a\"\nroles = [\"worker\", \"db\"]\n";
        assert_eq!(
            parse_err(text),
            "LAB.toml:4:20: unknown role `db`: roles are storage, manager, worker, lb"
        );
        let text = "name = \"lab\"\n[[vms]]\nname = \"a\"\nroles = [\"worker\"]\n[[vms]]\nname = \"a\"\nroles = [\"worker\"]\n";
        assert_eq!(parse_err(text), "LAB.toml:6:8: VM name `a` is used twice");
        let text = "name = \"lab\"\n[[vms]]\nname = \"a\"\nroles = [\"worker\"]\nmemory = 100\n";
        assert_eq!(
            parse_err(text),
            "LAB.toml:5:10: memory 100 MiB: must be 512 to 65536 (MiB)"
        );
        let text = "name = \"Lab_1\"\n[[vms]]\nname = \"a\"\nroles = [\"worker\"]\n";
        assert_eq!(
            parse_err(text),
            "LAB.toml:1:8: lab name: use lower-case letters, digits and inner dashes only"
        );
    }

    #[test]
    fn unknown_keys_and_syntax_errors_are_positioned() {
        let text = "name = \"lab\"\n[[vms]]\nname = \"a\"\nroles = [\"worker\"]\nmemroy = 2048\n";
        let msg = parse_err(text);
        assert!(
            msg.starts_with("LAB.toml:5:1: unknown field `memroy`"),
            "{msg}"
        );
        let msg = parse_err("name = \"lab\"\nvms = [\n");
        assert!(msg.starts_with("LAB.toml:"), "{msg}");
        let msg = parse_err("name = \"lab\"\n");
        assert!(msg.contains("missing field `vms`"), "{msg}");
    }

    #[test]
    fn empty_vms_and_roles_are_rejected() {
        assert_eq!(
            parse_err("name = \"lab\"\nvms = []\n"),
            "LAB.toml:2:7: a lab needs at least one VM in [[vms]]"
        );
        let text = "name = \"lab\"\n[[vms]]\nname = \"a\"\nroles = []\n";
        assert_eq!(
            parse_err(text),
            "LAB.toml:4:9: VM `a` has no roles: give at least one of storage, manager, worker, lb"
        );
    }

    #[test]
    fn subnet_checks() {
        assert_eq!(Subnet::parse("10.10.0.0/24").unwrap().capacity(), 244);
        assert!(
            Subnet::parse("10.10.0.1/24")
                .unwrap_err()
                .contains("did you mean 10.10.0.0/24")
        );
        assert!(
            Subnet::parse("10.0.0.0/16")
                .unwrap_err()
                .contains("overlaps qemu's user network")
        );
        assert!(
            Subnet::parse("10.10.0.0")
                .unwrap_err()
                .contains("not of the form")
        );
        assert!(
            Subnet::parse("10.10.0.0/30")
                .unwrap_err()
                .contains("16 to 28")
        );
        let s = Subnet::parse("192.168.50.0/28").unwrap();
        assert_eq!(s.capacity(), 4);
        assert_eq!(s.host(3), Some(Ipv4Addr::new(192, 168, 50, 14)));
        assert_eq!(s.host(4), None);
        assert_eq!(s.index_of(Ipv4Addr::new(192, 168, 50, 12)), Some(1));
        assert_eq!(s.index_of(Ipv4Addr::new(192, 168, 50, 2)), None);
        let text =
            "name = \"l\"\nsubnet = \"10.0.2.0/24\"\n[[vms]]\nname = \"a\"\nroles = [\"lb\"]\n";
        assert!(parse_err(text).starts_with("LAB.toml:2:10: subnet `10.0.2.0/24` overlaps"));
    }

    #[test]
    fn port_base_range() {
        let text = "name = \"l\"\nlayer = \"golden\"\n[[vms]]\nname = \"a\"\nroles = [\"lb\"]\n";
        assert_eq!(
            LabSpec::parse(text, "LAB.toml").unwrap_err().to_string(),
            "LAB.toml:2:9: unknown layer `golden`: layers are bare, ready"
        );
        let text = "name = \"l\"\nlayer = \"ready\"\n[[vms]]\nname = \"a\"\nroles = [\"lb\"]\n";
        assert_eq!(
            LabSpec::parse(text, "LAB.toml").unwrap().layer,
            LayerName::Ready
        );
        let text = "name = \"l\"\nssh_port_base = 80\n[[vms]]\nname = \"a\"\nroles = [\"lb\"]\n";
        assert_eq!(
            parse_err(text),
            "LAB.toml:2:17: ssh_port_base 80: ports 80 to 80+0 must lie in 1024..65535"
        );
    }

    #[test]
    fn validate_checks_code_built_specs() {
        let mut spec = LabSpec::default_lab();
        spec.ssh_port_base = Some(65534);
        assert_eq!(
            spec.validate("api").unwrap_err().to_string(),
            "api: ssh_port_base 65534: the VMs' ports must lie in 1024..65535"
        );
        spec.ssh_port_base = Some(22201);
        assert!(spec.validate("api").is_ok());
        spec.vms.push(spec.vms[0].clone());
        assert_eq!(
            spec.validate("api").unwrap_err().to_string(),
            "api: VM name `storage-1` is used twice"
        );
    }

    #[test]
    fn resources_override() {
        let spec = LabSpec::default_lab().with_resources(Some(1024), None);
        assert!(spec.vms.iter().all(|v| v.memory_mib == 1024 && v.cpus == 1));
    }

    #[test]
    fn vm_spec_validation() {
        assert!(
            VmSpec::new("worker-9", vec![Role::Worker])
                .validate("x")
                .is_ok()
        );
        let e = VmSpec::new("w", vec![])
            .validate("--role")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--role: VM `w` has no roles: give at least one of storage, manager, worker, lb"
        );
        let e = VmSpec::new("W", vec![Role::Worker])
            .validate("x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lower-case"), "{e}");
    }
}
