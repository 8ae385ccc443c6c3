//! The cluster.toml a lab writes for the engine: exactly the inventory keys the engine accepts.

use crate::spec::Role;
use std::net::Ipv4Addr;
use std::path::Path;

/// One inventory host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryHost {
    pub name: String,
    pub port: u16,
    pub private_ip: Ipv4Addr,
    pub roles: Vec<Role>,
}

/// Renders cluster.toml. `known_hosts` sits next to it (the engine resolves it relative to the
/// file); `strict` pins host keys, else the engine learns them on first contact.
pub fn cluster_toml(name: &str, identity: &Path, strict: bool, hosts: &[InventoryHost]) -> String {
    let mut t = format!(
        "# Written by `provision lab` for its VMs; `lab up` and `lab add` rewrite it.\n\
         name = {}\n\n[ssh]\nuser = \"root\"\nidentity = {}\nknown_hosts = \"known_hosts\"\n\
         host_key_policy = {}\n\n[vars]\n\
         # The lab's VMs reach only Debian's mirror, through qemu's NAT.\n\
         docker_source = \"distro\"\n\
         # No registry is reachable either: the demo stack's image is built on the nodes.\n\
         stack = \"demo\"\n\
         # Small VMs: a small swap file.\n\
         swap_size = \"512M\"\n\
         # A load balancer (role lb) forwards the demo stack's port.\n\
         lb_ports = [8080]\n",
        toml_str(name),
        toml_str(&identity.display().to_string()),
        toml_str(if strict { "strict" } else { "accept-new" }),
    );
    for h in hosts {
        let roles: Vec<String> = h.roles.iter().map(|r| toml_str(r.as_str())).collect();
        t.push_str(&format!(
            "\n[[hosts]]\nname = {}\naddress = \"127.0.0.1\"\nport = {}\nprivate_ip = \"{}\"\nroles = [{}]\n",
            toml_str(&h.name),
            h.port,
            h.private_ip,
            roles.join(", ")
        ));
    }
    t
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_text() {
        let hosts = [
            InventoryHost {
                name: "storage-1".into(),
                port: 22200,
                private_ip: Ipv4Addr::new(10, 10, 0, 11),
                roles: vec![Role::Storage],
            },
            InventoryHost {
                name: "manager-1".into(),
                port: 22201,
                private_ip: Ipv4Addr::new(10, 10, 0, 12),
                roles: vec![Role::Manager, Role::Lb],
            },
        ];
        let text = cluster_toml("lab", Path::new("/s/lab/id_ed25519"), true, &hosts);
        assert_eq!(
            text,
            r#"# Written by `provision lab` for its VMs; `lab up` and `lab add` rewrite it.
name = "lab"

[ssh]
user = "root"
identity = "/s/lab/id_ed25519"
known_hosts = "known_hosts"
host_key_policy = "strict"

[vars]
# The lab's VMs reach only Debian's mirror, through qemu's NAT.
docker_source = "distro"
# No registry is reachable either: the demo stack's image is built on the nodes.
stack = "demo"
# Small VMs: a small swap file.
swap_size = "512M"
# A load balancer (role lb) forwards the demo stack's port.
lb_ports = [8080]

[[hosts]]
name = "storage-1"
address = "127.0.0.1"
port = 22200
private_ip = "10.10.0.11"
roles = ["storage"]

[[hosts]]
name = "manager-1"
address = "127.0.0.1"
port = 22201
private_ip = "10.10.0.12"
roles = ["manager", "lb"]
"#
        );
        // It is valid TOML with the values we meant.
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            v["hosts"].as_array().unwrap()[1]["port"].as_integer(),
            Some(22201)
        );
    }

    #[test]
    fn accept_new_and_escaping() {
        let text = cluster_toml("l", Path::new("/odd \"dir\"\\x/id"), false, &[]);
        assert!(text.contains("host_key_policy = \"accept-new\"\n"));
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["ssh"]["identity"].as_str(), Some("/odd \"dir\"\\x/id"));
        assert!(v.get("hosts").is_none());
    }
}
