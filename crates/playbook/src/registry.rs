//! The table of built-in steps by name: what a playbook's `use` may name. Each step's file
//! registers itself ([`BuiltIn`]); this module only looks them up.

use crate::ctx::{BuiltIn, ClusterStepCtor, Ctor, HostStepCtor};

/// Every built-in step, by name.
fn all() -> Vec<&'static BuiltIn> {
    let mut v: Vec<&'static BuiltIn> = inventory::iter::<BuiltIn>.into_iter().collect();
    v.sort_by_key(|b| b.name);
    v
}

fn find(name: &str) -> Option<&'static BuiltIn> {
    inventory::iter::<BuiltIn>
        .into_iter()
        .find(|b| b.name == name)
}

/// The general per-host steps, by name.
pub fn host_step(name: &str) -> Option<HostStepCtor> {
    match find(name)?.ctor {
        Ctor::Host(c) => Some(c),
        Ctor::Cluster(_) => None,
    }
}

/// The cluster steps (swarm membership, labels, stacks), by name.
pub fn cluster_step(name: &str) -> Option<ClusterStepCtor> {
    match find(name)?.ctor {
        Ctor::Cluster(c) => Some(c),
        Ctor::Host(_) => None,
    }
}

/// Every step name a playbook may `use`, sorted.
pub fn known_steps() -> Vec<&'static str> {
    all().into_iter().map(|b| b.name).collect()
}

/// The step's parameters that travel on stdin or as file content ([`BuiltIn::stdin_params`]).
pub fn stdin_params(name: &str) -> &'static [&'static str] {
    find(name).map(|b| b.stdin_params).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_registers_once_under_a_name_of_its_own() {
        let names = known_steps();
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(names, unique, "a name registered twice");
        for host in [
            "apt", "command", "copy", "docker", "link", "template", "user",
        ] {
            assert!(host_step(host).is_some(), "{host}");
            assert!(cluster_step(host).is_none(), "{host}");
        }
        for cluster in ["swarm_init", "swarm_join", "stack_deploy"] {
            assert!(cluster_step(cluster).is_some(), "{cluster}");
        }
        assert_eq!(stdin_params("copy"), &["content"]);
        assert_eq!(stdin_params("apt"), &[] as &[&str]);
    }
}
