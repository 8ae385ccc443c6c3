//! The table of built-in steps by name: what a playbook's `uses` may name.

use crate::ctx::{ClusterStepCtor, HostStepCtor};
use crate::steps;

/// The general per-host steps, by name.
pub fn host_step(name: &str) -> Option<HostStepCtor> {
    steps::HOST_STEPS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
}

/// The cluster steps (swarm membership, labels, stacks), by name.
pub fn cluster_step(name: &str) -> Option<ClusterStepCtor> {
    steps::CLUSTER_STEPS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
}

/// Every step name a playbook may `use`.
pub fn known_steps() -> Vec<&'static str> {
    let host = steps::HOST_STEPS.iter().map(|(n, _)| *n);
    host.chain(steps::CLUSTER_STEPS.iter().map(|(n, _)| *n))
        .collect()
}
