//! Day-2 operations on a running swarm, each a single safe command: status, ps,
//! logs and exec through the managers, node maintenance (drain, activate,
//! remove-node), backup and restore of the swarm state, recovery from a lost
//! quorum, and the cluster lock that serialises every mutating command.
//!
//! Like the steps, operations never talk to russh: they run commands built by
//! the pure functions of [`commands`] and of the swarm steps'
//! `provision_playbook::swarm::commands` through the [`provision_transport::Transport`]
//! of each host, and decide from parsed output ([`parse`], and the swarm steps' one
//! reading of the swarm, `provision_playbook::steps::swarm_facts`).

// Errors carry host, command, status and stderr for people; they are rare and
// returned once per command, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod backup;
pub mod cluster;
pub mod commands;
pub mod error;
pub mod lock;
pub mod nodes;
pub mod parse;
pub mod record;
pub mod recover;
pub mod services;
pub mod stacks;
pub mod status;

pub use cluster::{Cluster, HostState, Quorum, Survey};
pub use error::OpsError;
