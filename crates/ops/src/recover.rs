//! `provision recover`: when a majority of managers is lost, a surviving
//! manager starts a new swarm from its own state (`--force-new-cluster`), the
//! other reachable nodes re-join it, and the dead managers leave the node list.
//! Also the re-join half of `restore`.

use crate::cluster::HostState;
use crate::{Cluster, OpsError, commands};
use provision_playbook::steps::swarm_facts::{self, HostSwarm, NodeInfo};
use provision_playbook::steps::swarm_join;
use std::time::{Duration, Instant};

const LEADER_WAIT: Duration = Duration::from_secs(180);
/// How long nodes get to reconnect by themselves before they are made to re-join.
const RECONNECT_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Recovered {
    pub survivor: String,
    pub steps: Vec<String>,
}

/// Waits until `host` leads (can list nodes).
pub async fn wait_leader(cluster: &Cluster, host: &str) -> Result<(), OpsError> {
    cluster
        .wait_for(
            host,
            "the new swarm to have a leader",
            commands::CAN_LIST_NODES,
            LEADER_WAIT,
            "look at `journalctl -u docker` on the host",
            |o| o.trim() == "ok",
        )
        .await
}

/// The leader's facts: node list and join tokens.
async fn leader_facts(cluster: &Cluster, leader: &str) -> Result<HostSwarm, OpsError> {
    let out = cluster
        .ok(
            leader,
            "reading the swarm",
            swarm_facts::gather(true),
            "is Docker healthy on the manager?",
        )
        .await?;
    let s = swarm_facts::parse(&out).map_err(|e| OpsError::unexpected("swarm facts", e))?;
    for t in s.worker_token.iter().chain(s.manager_token.iter()) {
        cluster.learn_secret(t);
    }
    Ok(s)
}

/// What a host needs to be a proper member of the leader's swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    Fine,
    /// In the swarm as a worker; the inventory says manager.
    Promote(String),
    /// Same swarm, node known, but not (yet) ready: may reconnect by itself.
    Reconnecting,
    /// Needs `docker swarm join`, after leaving its old state when `leave`.
    Join {
        leave: bool,
    },
    Unreachable(String),
}

pub fn membership(leader: &HostSwarm, host: Option<&HostState>, manager: bool) -> Membership {
    let s = match host {
        None => return Membership::Unreachable("not surveyed".into()),
        Some(HostState::Unreachable(e)) | Some(HostState::Broken(e)) => {
            return Membership::Unreachable(e.clone());
        }
        Some(HostState::Up { swarm, .. }) => swarm,
    };
    let Some(info) = s.info() else {
        return Membership::Unreachable("Docker is not running".into());
    };
    if !s.in_a_swarm() {
        return Membership::Join { leave: false };
    }
    let same = info
        .cluster
        .as_ref()
        .is_none_or(|c| Some(c.id.as_str()) == leader.cluster_id());
    let node = leader.nodes.iter().find(|n| n.id == info.node_id);
    match node {
        Some(n) if same && n.state == "ready" => {
            if manager && n.role != "manager" {
                Membership::Promote(n.id.clone())
            } else if manager && n.reachability != "reachable" {
                // An old raft member the new swarm does not count: join again.
                Membership::Join { leave: true }
            } else {
                Membership::Fine
            }
        }
        Some(_) if same && !manager => Membership::Reconnecting,
        _ => Membership::Join { leave: true },
    }
}

/// Makes every other reachable swarm host of the inventory a member of the swarm
/// `leader` leads (managers one at a time, then workers), then drops the nodes
/// that are down and replaced, or dead managers.
pub async fn rejoin_others(
    cluster: &Cluster,
    leader: &str,
    steps: &mut Vec<String>,
) -> Result<(), OpsError> {
    let ip = cluster.private_ip(leader)?;
    let join_addr = format!("{ip}:2377");
    let start = Instant::now();
    let others: Vec<(String, bool)> = cluster
        .swarm_hosts()
        .into_iter()
        .filter(|h| h.name != leader)
        .map(|h| (h.name.clone(), cluster.is_manager(&h.name)))
        .collect();
    loop {
        let facts = leader_facts(cluster, leader).await?;
        let survey = cluster.survey().await;
        let plans: Vec<(String, bool, Membership)> = others
            .iter()
            .map(|(h, m)| (h.clone(), *m, membership(&facts, survey.state(h), *m)))
            .collect();
        let waiting = plans.iter().any(|p| p.2 == Membership::Reconnecting);
        if waiting && start.elapsed() < RECONNECT_WAIT {
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        let (worker_token, manager_token) = match (&facts.worker_token, &facts.manager_token) {
            (Some(w), Some(m)) => (w.clone(), m.clone()),
            _ => {
                return Err(OpsError::unexpected(
                    "join tokens",
                    format!("{leader} printed none"),
                ));
            }
        };
        for (host, manager, plan) in plans {
            let role = if manager { "manager" } else { "worker" };
            match plan {
                Membership::Fine => steps.push(format!("{host}: already a {role} of the swarm")),
                Membership::Unreachable(e) => steps.push(format!(
                    "{host}: skipped ({}); once it is back, `provision run` makes it join",
                    e.lines().next().unwrap_or("")
                )),
                Membership::Promote(id) => {
                    cluster
                        .ok(
                            leader,
                            &format!("promoting {host}"),
                            swarm_join::promote_command(&id),
                            "check `docker node ls`",
                        )
                        .await?;
                    steps.push(format!("{host}: promoted to manager"));
                }
                Membership::Reconnecting | Membership::Join { .. } => {
                    if !matches!(plan, Membership::Join { leave: false }) {
                        cluster
                            .ok(
                                &host,
                                "leaving the old swarm state",
                                commands::LEAVE,
                                "look at `journalctl -u docker` on the host",
                            )
                            .await?;
                    }
                    let hip = cluster.private_ip(&host)?;
                    let token = if manager {
                        &manager_token
                    } else {
                        &worker_token
                    };
                    let body = swarm_join::join_request(&hip, &join_addr, token);
                    cluster
                        .ok_stdin(
                            &host,
                            &format!("joining as {role}"),
                            swarm_join::JOIN_COMMAND,
                            body.into_bytes(),
                            "check that the host reaches the leader's private address on port 2377",
                        )
                        .await?;
                    if manager {
                        // The next manager joins only once this one is caught up.
                        cluster
                            .ok(
                                &host,
                                "waiting to be a reachable manager",
                                swarm_join::MANAGER_SETTLED,
                                "look at `docker node ls` and `journalctl -u docker` on the leader",
                            )
                            .await?;
                    }
                    steps.push(format!("{host}: joined as {role}"));
                }
            }
        }
        break;
    }
    // Drop what is dead: managers that are not reachable, and down nodes whose
    // host is now in the swarm under a new node.
    let facts = leader_facts(cluster, leader).await?;
    let own = facts.info().map(|i| i.node_id.clone()).unwrap_or_default();
    for n in stale_nodes(&facts.nodes, &own) {
        // After --force-new-cluster the dead managers are out of the raft (no
        // manager status; demoting them fails): `node rm --force` alone drops them.
        if n.role == "manager" && !n.reachability.is_empty() {
            cluster
                .ok(
                    leader,
                    &format!("demoting dead manager {}", n.hostname),
                    commands::demote(&n.id),
                    "check `docker node ls`",
                )
                .await?;
        }
        cluster
            .ok(
                leader,
                &format!("removing node {}", n.hostname),
                commands::node_rm(&n.id, true),
                "check `docker node ls`",
            )
            .await?;
        steps.push(format!(
            "removed {} node {} ({}) from the node list",
            n.role, n.hostname, n.id
        ));
    }
    Ok(())
}

/// Nodes to drop after a recovery: managers other than the leader that are not
/// reachable, and down nodes whose hostname also has a ready node.
pub fn stale_nodes<'a>(nodes: &'a [NodeInfo], leader_id: &str) -> Vec<&'a NodeInfo> {
    nodes
        .iter()
        .filter(|n| n.id != leader_id)
        .filter(|n| {
            let dead_manager = n.role == "manager" && n.reachability != "reachable";
            let replaced = n.state == "down"
                && nodes
                    .iter()
                    .any(|o| o.id != n.id && o.hostname == n.hostname && o.state == "ready");
            dead_manager || replaced
        })
        .collect()
}

/// Recovers from a lost quorum through `from` (or the first surviving manager).
pub async fn recover(cluster: &Cluster, from: Option<&str>) -> Result<Recovered, OpsError> {
    let survey = cluster.survey().await;
    let file = cluster.inv.path.display().to_string();
    // A leader that lost its majority still answers for a few seconds: the
    // quorum count decides, not whether a node list came back.
    if let Some(q) = survey.quorum(&cluster.inv)
        && q.ok
    {
        return Err(OpsError::refused(
            format!(
                "quorum is fine: {} of {} managers reachable{}; nothing to recover",
                q.reachable,
                q.managers,
                q.leader.map(|l| format!(", {l} leads")).unwrap_or_default()
            ),
            format!(
                "`provision status {file}` shows the swarm; `provision remove-node` drops a dead manager"
            ),
        ));
    }
    let survivors = survey.managers_in_swarm(&cluster.inv);
    let survivor = match from {
        Some(f) => {
            cluster.host(f)?;
            if !survivors.contains(&f) {
                return Err(OpsError::refused(
                    format!(
                        "{f} cannot lead the recovery: it is not a reachable manager with the swarm's state"
                    ),
                    format!(
                        "surviving managers: {}",
                        if survivors.is_empty() {
                            "none".into()
                        } else {
                            survivors.join(", ")
                        }
                    ),
                ));
            }
            f.to_string()
        }
        None => match survivors.first() {
            Some(s) => s.to_string(),
            None => {
                return Err(OpsError::refused(
                    "no reachable manager holds the swarm's state",
                    format!(
                        "bring a manager back, or restore a backup: `provision restore {file} FILE --to HOST`"
                    ),
                ));
            }
        },
    };
    let ip = cluster.private_ip(&survivor)?;
    let mut done = Recovered {
        survivor: survivor.clone(),
        steps: vec![],
    };
    cluster
        .ok(
            &survivor,
            "starting a new swarm from this manager's state",
            commands::force_new_cluster(&ip),
            "look at `journalctl -u docker` on the host",
        )
        .await?;
    done.steps.push(format!(
        "{survivor}: docker swarm init --force-new-cluster --advertise-addr {ip}"
    ));
    wait_leader(cluster, &survivor).await?;
    rejoin_others(cluster, &survivor, &mut done.steps).await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use provision_playbook::steps::swarm_facts::{ClusterInfo, Docker, SwarmInfo};

    fn node(id: &str, host: &str, role: &str, state: &str, reach: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            hostname: host.into(),
            role: role.into(),
            state: state.into(),
            reachability: reach.into(),
            ..Default::default()
        }
    }

    fn swarm(node_id: &str, state: &str, cluster: &str, nodes: Vec<NodeInfo>) -> HostSwarm {
        HostSwarm {
            docker: Docker::Up(SwarmInfo {
                node_id: node_id.into(),
                local_node_state: state.into(),
                control_available: !nodes.is_empty(),
                cluster: Some(ClusterInfo { id: cluster.into() }),
                ..Default::default()
            }),
            nodes,
            worker_token: None,
            manager_token: None,
        }
    }

    fn up(s: HostSwarm) -> HostState {
        HostState::Up {
            swarm: Box::new(s),
            list_error: None,
        }
    }

    #[test]
    fn stale_nodes_are_dead_managers_and_replaced_nodes() {
        let nodes = vec![
            node("m1", "manager-1", "manager", "ready", "reachable"),
            node("m2", "manager-2", "manager", "down", "unreachable"),
            node("w1old", "worker-1", "worker", "down", ""),
            node("w1", "worker-1", "worker", "ready", ""),
            node("w2", "worker-2", "worker", "down", ""),
        ];
        let ids: Vec<&str> = stale_nodes(&nodes, "m1")
            .iter()
            .map(|n| n.id.as_str())
            .collect();
        // worker-2 is merely down (maybe rebooting): kept.
        assert_eq!(ids, vec!["m2", "w1old"]);
    }

    #[test]
    fn membership_decisions() {
        let leader = swarm(
            "m1",
            "active",
            "C",
            vec![
                node("m1", "manager-1", "manager", "ready", "reachable"),
                node("m2", "manager-2", "manager", "ready", "unreachable"),
                node("w1", "worker-1", "worker", "ready", ""),
                node("w2", "worker-2", "worker", "down", ""),
            ],
        );
        let inactive = up(HostSwarm {
            docker: Docker::Up(SwarmInfo {
                local_node_state: "inactive".into(),
                ..Default::default()
            }),
            nodes: vec![],
            worker_token: None,
            manager_token: None,
        });
        assert_eq!(
            membership(&leader, Some(&inactive), true),
            Membership::Join { leave: false }
        );
        // An old raft member that still shows as ready: made to leave and join.
        assert_eq!(
            membership(&leader, Some(&up(swarm("m2", "active", "C", vec![]))), true),
            Membership::Join { leave: true }
        );
        assert_eq!(
            membership(
                &leader,
                Some(&up(swarm("w1", "active", "C", vec![]))),
                false
            ),
            Membership::Fine
        );
        assert_eq!(
            membership(&leader, Some(&up(swarm("w1", "active", "C", vec![]))), true),
            Membership::Promote("w1".into())
        );
        assert_eq!(
            membership(
                &leader,
                Some(&up(swarm("w2", "active", "C", vec![]))),
                false
            ),
            Membership::Reconnecting
        );
        assert_eq!(
            membership(
                &leader,
                Some(&up(swarm("zz", "active", "OTHER", vec![]))),
                false
            ),
            Membership::Join { leave: true }
        );
        assert!(matches!(
            membership(&leader, Some(&HostState::Unreachable("down".into())), false),
            Membership::Unreachable(_)
        ));
    }
}
