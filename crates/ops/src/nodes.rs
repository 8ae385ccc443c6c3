//! Node maintenance: `drain`, `activate` and `remove-node` (drain, demote a
//! manager, leave, `node rm`), refused when it would break the managers' quorum.

use crate::cluster::HostState;
use crate::services::swarm;
use crate::{Cluster, OpsError, commands};
use provision_playbook::steps::swarm_facts::{NodeInfo, Raft, SwarmView};
use provision_playbook::swarm::commands as swarm_commands;
use provision_playbook::swarm::node::{Availability, NodeRole};
use std::time::Duration;

const DRAIN_WAIT: Duration = Duration::from_secs(300);

/// A manager other than `host` that can run manager commands.
fn other_manager(
    cluster: &Cluster,
    survey: &crate::Survey,
    v: &SwarmView,
    host: &str,
) -> Option<String> {
    if v.via != host {
        return Some(v.via.clone());
    }
    cluster.inv.managers().map(|m| m.name.clone()).find(|m| {
        m != host
            && survey
                .state(m)
                .and_then(HostState::swarm)
                .and_then(|s| s.info())
                .is_some_and(|i| i.control_available)
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub host: String,
    pub node: String,
    /// Tasks still meant to run on the node when the wait ended (none = drained).
    pub remaining: Vec<String>,
}

/// Sets a node's availability (`active`, `pause` or `drain`); for `drain`, waits until its
/// tasks moved away.
pub async fn set_availability(
    cluster: &Cluster,
    host: &str,
    availability: &str,
) -> Result<Moved, OpsError> {
    cluster.host(host)?;
    let availability: Availability = availability
        .parse()
        .map_err(|e: String| OpsError::refused(e, "use active, pause or drain"))?;
    let survey = cluster.survey().await;
    let v = swarm(cluster).await?;
    let Some(node) = v.node_of(host, survey.state(host).and_then(HostState::swarm)) else {
        return Err(OpsError::refused(
            format!("{host} is not in the swarm"),
            format!("`provision run {}` joins it", cluster.inv.path.display()),
        ));
    };
    cluster
        .ok(
            &v.via,
            &format!("setting {host} to {availability}"),
            swarm_commands::node_availability(&node.id, availability),
            "check `docker node ls` on a manager",
        )
        .await?;
    let mut remaining = Vec::new();
    if availability == Availability::Drain {
        let waited = cluster
            .wait_for(
                &v.via,
                "the tasks to leave the node",
                &commands::node_running_tasks(&node.id),
                DRAIN_WAIT,
                "",
                |out| out.lines().all(|l| l.trim().is_empty()),
            )
            .await;
        if waited.is_err() {
            let out = cluster
                .ok(
                    &v.via,
                    "listing the node's tasks",
                    commands::node_running_tasks(&node.id),
                    "",
                )
                .await?;
            remaining = out
                .lines()
                .map(str::to_string)
                .filter(|l| !l.is_empty())
                .collect();
        }
    }
    Ok(Moved {
        host: host.to_string(),
        node: node.id.clone(),
        remaining,
    })
}

/// Whether removing manager `host` keeps a quorum: Err(reason) when it does not.
pub fn removal_keeps_quorum(nodes: &[NodeInfo], node_id: &str) -> Result<(), String> {
    let managers = Raft::of(nodes).members;
    if managers.len() <= 1 {
        return Err("it is the swarm's last manager".into());
    }
    let after = managers.len() - 1;
    let reachable_after = managers
        .iter()
        .filter(|n| n.id != node_id && n.reachable())
        .count();
    let needed = after / 2 + 1;
    if reachable_after < needed {
        let down: Vec<&str> = managers
            .iter()
            .filter(|n| n.id != node_id && !n.reachable())
            .map(|n| n.hostname.as_str())
            .collect();
        return Err(format!(
            "it would leave {reachable_after} of {after} managers reachable and a quorum needs {needed}{}",
            if down.is_empty() {
                String::new()
            } else {
                format!(" ({} unreachable)", down.join(", "))
            }
        ));
    }
    Ok(())
}

#[derive(Debug, Default)]
pub struct Removal {
    pub steps: Vec<String>,
}

/// Drains, demotes (managers), makes the node leave and removes it from the node list.
pub async fn remove_node(cluster: &Cluster, host: &str) -> Result<Removal, OpsError> {
    cluster.host(host)?;
    let file = cluster.inv.path.display().to_string();
    let survey = cluster.survey().await;
    let v = swarm(cluster).await?;
    let mut done = Removal::default();
    let Some(node) = v
        .node_of(host, survey.state(host).and_then(HostState::swarm))
        .cloned()
    else {
        done.steps
            .push(format!("{host} is not in the swarm: nothing to remove"));
        return Ok(done);
    };
    let manager = node.role == NodeRole::Manager;
    if manager && let Err(why) = removal_keeps_quorum(&v.nodes, &node.id) {
        return Err(OpsError::refused(
            format!("refusing to remove manager {host}: {why}"),
            "bring the unreachable managers back first (`provision status` shows them), or add a manager and run `provision run`",
        ));
    }
    let Some(via) = other_manager(cluster, &survey, &v, host) else {
        return Err(OpsError::refused(
            format!("no other manager can run the removal of {host}"),
            "check the managers with `provision status`",
        ));
    };
    let reachable = survey.state(host).is_some_and(|s| s.swarm().is_some());
    if node.availability != Availability::Drain {
        cluster
            .ok(
                &via,
                &format!("draining {host}"),
                swarm_commands::node_availability(&node.id, Availability::Drain),
                "check `docker node ls`",
            )
            .await?;
        let _ = cluster
            .wait_for(
                &via,
                "the tasks to leave the node",
                &commands::node_running_tasks(&node.id),
                DRAIN_WAIT,
                "",
                |o| o.lines().all(|l| l.trim().is_empty()),
            )
            .await;
        done.steps.push(format!("drained {host}"));
    }
    if manager {
        cluster
            .ok(
                &via,
                &format!("demoting {host}"),
                swarm_commands::demote(&node.id),
                "check `docker node ls`",
            )
            .await?;
        done.steps.push(format!("demoted {host} to worker"));
    }
    let mut left = false;
    if reachable {
        // Demotion reaches the node a moment later; leave only once it took effect.
        if manager {
            let _ = cluster
                .wait_for(
                    host,
                    "the demotion to reach the node",
                    commands::LOCAL_STATE,
                    Duration::from_secs(60),
                    "",
                    |o| crate::parse::local_state(o).is_some_and(|(_, control)| !control),
                )
                .await;
        }
        cluster
            .ok(
                host,
                "leaving the swarm",
                swarm_commands::LEAVE_COMMAND,
                "look at `journalctl -u docker` on the host",
            )
            .await?;
        left = true;
        done.steps.push(format!("{host} left the swarm"));
        let _ = cluster
            .wait_for(
                &via,
                "the node to be down",
                &commands::node_state(&node.id),
                Duration::from_secs(60),
                "",
                |o| o.trim_start().starts_with("down"),
            )
            .await;
    }
    cluster
        .ok(
            &via,
            &format!("removing node {host}"),
            swarm_commands::node_rm(&node.id, !left),
            "check `docker node ls`",
        )
        .await?;
    done.steps
        .push(format!("removed node {} from the swarm", node.id));
    done.steps.push(format!(
        "now delete {host} from {file} (or give it other roles): otherwise the next `provision run` joins it again"
    ));
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, reach: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            hostname: format!("host-{id}"),
            role: NodeRole::Manager,
            reachability: reach.parse().ok(),
            ..Default::default()
        }
    }

    #[test]
    fn removing_a_manager_must_keep_quorum() {
        let all_up = [
            m("1", "reachable"),
            m("2", "reachable"),
            m("3", "reachable"),
        ];
        assert_eq!(removal_keeps_quorum(&all_up, "3"), Ok(()));
        let one_down = [
            m("1", "reachable"),
            m("2", "unreachable"),
            m("3", "reachable"),
        ];
        assert_eq!(
            removal_keeps_quorum(&one_down, "3"),
            Err("it would leave 1 of 2 managers reachable and a quorum needs 2 (host-2 unreachable)".into())
        );
        // Removing the dead one itself is what fixes things.
        assert_eq!(removal_keeps_quorum(&one_down, "2"), Ok(()));
        assert!(
            removal_keeps_quorum(&[m("1", "reachable")], "1")
                .unwrap_err()
                .contains("last manager")
        );
    }
}
