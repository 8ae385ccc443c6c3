//! `provision recover`: when a majority of managers is lost, a surviving
//! manager starts a new swarm from its own state (`--force-new-cluster`), the
//! other reachable nodes re-join it, and the dead managers leave the node list.
//! Also the re-join half of `restore`.

use crate::cluster::HostState;
use crate::{Cluster, OpsError, commands};
use provision_playbook::steps::swarm_facts::{self, HostSwarm, NodeInfo};
use provision_playbook::swarm::commands as swarm_commands;
use provision_playbook::swarm::node::{NodeRole, NodeState};
use provision_transport::Command;
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
        Some(n) if same && n.state == NodeState::Ready => {
            if manager && n.role != NodeRole::Manager {
                Membership::Promote(n.id.clone())
            } else if manager && !n.reachable() {
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
    let join_addr = swarm_commands::manager_addr(&ip);
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
            let role = NodeRole::of(manager);
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
                            swarm_commands::promote(&id),
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
                                swarm_commands::LEAVE_COMMAND,
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
                    let body = swarm_commands::join_request(&hip, &join_addr, token);
                    cluster
                        .ok_stdin(
                            &host,
                            &format!("joining as {role}"),
                            swarm_commands::JOIN_COMMAND,
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
                                &swarm_commands::manager_settled(),
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
        if n.raft_member() {
            cluster
                .ok(
                    leader,
                    &format!("demoting dead manager {}", n.hostname),
                    swarm_commands::demote(&n.id),
                    "check `docker node ls`",
                )
                .await?;
        }
        cluster
            .ok(
                leader,
                &format!("removing node {}", n.hostname),
                swarm_commands::node_rm(&n.id, true),
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
            let dead_manager = n.role == NodeRole::Manager && !n.reachable();
            let replaced = n.state == NodeState::Down
                && nodes.iter().any(|o| {
                    o.id != n.id && o.hostname == n.hostname && o.state == NodeState::Ready
                });
            dead_manager || replaced
        })
        .collect()
}

/// How new a manager's raft state is, from the names and times of its raft files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct RaftState {
    /// The highest raft index a snapshot or log segment name carries.
    pub index: u64,
    /// When the log was last written (ns since the epoch): breaks ties between managers
    /// whose newest segment starts at the same index (the one written last holds more).
    pub written_ns: u128,
}

/// Parses [`commands::raft_files`]: `PATH SECONDS.NANOS` lines.
pub fn parse_raft_files(out: &str) -> Option<RaftState> {
    let mut state: Option<RaftState> = None;
    for line in out.lines() {
        let Some((path, time)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or(path);
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        let Some(index) = stem
            .split_once('-')
            .and_then(|(_, i)| u64::from_str_radix(i, 16).ok())
        else {
            continue;
        };
        let written_ns = match (ext, time.split_once('.')) {
            ("wal", Some((s, ns))) => {
                s.parse::<u128>().unwrap_or(0) * 1_000_000_000 + ns.parse::<u128>().unwrap_or(0)
            }
            _ => 0,
        };
        let st = state.get_or_insert_with(RaftState::default);
        st.index = st.index.max(index);
        st.written_ns = st.written_ns.max(written_ns);
    }
    state
}

/// Why recovering now would be wrong, or None. `answering` managers are in the swarm by their
/// own Docker; `raft` is the number of managers their raft knows.
pub fn recover_refusal(
    quorum: Option<&crate::Quorum>,
    answering: usize,
    file: &str,
) -> Option<OpsError> {
    let q = quorum?;
    if q.ok {
        return Some(OpsError::refused(
            format!(
                "quorum is not lost: {} of {} managers reachable{}; nothing to recover",
                q.reachable,
                q.managers,
                q.leader
                    .as_deref()
                    .map(|l| format!(", {l} leads"))
                    .unwrap_or_default()
            ),
            format!(
                "`provision status {file}` shows the swarm; `provision remove-node` drops a dead manager"
            ),
        ));
    }
    // No leader, yet a majority answers: an election is under way, or the managers cannot
    // reach each other. Forcing a new swarm now would split it in two.
    if answering >= q.needed {
        return Some(OpsError::refused(
            format!(
                "quorum is not lost: {answering} of {} managers answer, but none leads yet (an election is in progress, or the managers cannot reach each other on port 2377)",
                q.managers
            ),
            format!(
                "wait a minute and run `provision status {file}`; if no leader appears, check the network between the managers (2377/tcp, 7946)"
            ),
        ));
    }
    None
}

/// The surviving manager with the newest raft state (None when none could be read):
/// recovering from an older one would lose the latest changes.
pub fn newest<'a>(states: &[(&'a str, Option<RaftState>)]) -> Option<&'a str> {
    states
        .iter()
        .filter_map(|(h, s)| s.map(|s| (s, *h)))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, h)| h)
}

/// Recovers from a lost quorum through `from` (or the surviving manager with the newest raft
/// state). Without `yes` it says what it would do (which managers it drops as dead) and stops.
pub async fn recover(
    cluster: &Cluster,
    from: Option<&str>,
    yes: bool,
) -> Result<Recovered, OpsError> {
    let survey = cluster.survey().await;
    let file = cluster.inv.path.display().to_string();
    let survivors = survey.managers_in_swarm(&cluster.inv);
    // A leader that lost its majority still answers for a few seconds: the
    // quorum count decides, not whether a node list came back.
    if let Some(e) = recover_refusal(survey.quorum(&cluster.inv).as_ref(), survivors.len(), &file) {
        return Err(e);
    }
    let mut states = Vec::new();
    for s in &survivors {
        let out = cluster.run(s, Command::new(commands::raft_files())).await?;
        states.push((*s, parse_raft_files(&out.stdout_str())));
    }
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
        None => match newest(&states).or(survivors.first().copied()) {
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
    let why = match states
        .iter()
        .find(|(h, _)| *h == survivor)
        .and_then(|(_, s)| *s)
    {
        Some(st) if from.is_none() => format!(
            "the newest raft state of the surviving managers (index {})",
            st.index
        ),
        _ if from.is_some() => "chosen with --from".to_string(),
        _ => "the first surviving manager (its raft files could not be read)".to_string(),
    };
    let dead: Vec<&str> = cluster
        .inv
        .managers()
        .map(|m| m.name.as_str())
        .filter(|m| !survivors.contains(m))
        .collect();
    if !yes {
        return Err(OpsError::refused(
            format!(
                "recover would start a new swarm from {survivor}'s state ({why}) and drop {} from it as dead; they re-join as managers when they are back and `provision run {file}` runs",
                if dead.is_empty() {
                    "no manager".to_string()
                } else {
                    dead.join(", ")
                }
            ),
            "pass --yes to go ahead",
        ));
    }
    let ip = cluster.private_ip(&survivor)?;
    let mut done = Recovered {
        survivor: survivor.clone(),
        steps: vec![format!("{survivor}: chosen for {why}")],
    };
    cluster
        .ok(
            &survivor,
            "starting a new swarm from this manager's state",
            swarm_commands::force_new_cluster(&ip),
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
    use provision_playbook::swarm::node::LocalNodeState;

    fn node(id: &str, host: &str, role: &str, state: &str, reach: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            hostname: host.into(),
            role: role.parse().unwrap(),
            state: state.parse().unwrap(),
            reachability: reach.parse().ok(),
            ..Default::default()
        }
    }

    fn swarm(node_id: &str, state: &str, cluster: &str, nodes: Vec<NodeInfo>) -> HostSwarm {
        HostSwarm {
            docker: Docker::Up(SwarmInfo {
                node_id: node_id.into(),
                local_node_state: state.parse().unwrap(),
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

    /// Captured on the lab (swarm_lab's manager-1, just after `provision run` made the swarm):
    /// the output of `commands::raft_files()`. A young swarm has no snapshot yet.
    const RAFT_FILES: &str = "/var/lib/docker/swarm/raft/wal-v3-encrypted/0000000000000000-0000000000000000.wal 1796528487.080009304\n";

    /// Written for the test, in swarmkit's naming (`<term>-<index>.snap`,
    /// `<seq>-<index>.wal`, hex): an older swarm with a snapshot and a second log segment.
    const RAFT_FILES_LATER: &str = "/var/lib/docker/swarm/raft/snap-v3-encrypted/0000000000000002-0000000000000ef0.snap 1796531811.503942104
/var/lib/docker/swarm/raft/wal-v3-encrypted/0000000000000000-0000000000000000.wal 1796531901.118347731
/var/lib/docker/swarm/raft/wal-v3-encrypted/0000000000000001-0000000000000e39.wal 1796532012.402117500
";

    #[test]
    fn raft_state_from_file_names_and_times() {
        assert_eq!(
            parse_raft_files(RAFT_FILES),
            Some(RaftState {
                index: 0,
                written_ns: 1_796_528_487_080_009_304
            })
        );
        assert_eq!(
            parse_raft_files(RAFT_FILES_LATER),
            Some(RaftState {
                index: 0xef0,
                written_ns: 1_796_532_012_402_117_500
            })
        );
        assert_eq!(parse_raft_files(""), None);
        assert_eq!(parse_raft_files("garbage\n/x/y.wal 1.2\n"), None);
        let (a, b, c) = (
            RaftState {
                index: 10,
                written_ns: 5,
            },
            RaftState {
                index: 12,
                written_ns: 1,
            },
            RaftState {
                index: 12,
                written_ns: 3,
            },
        );
        assert_eq!(
            newest(&[("m1", Some(a)), ("m2", Some(b)), ("m3", Some(c))]),
            Some("m3")
        );
        assert_eq!(newest(&[("m1", Some(a)), ("m2", None)]), Some("m1"));
        // A tie is broken by inventory order, not by chance.
        assert_eq!(newest(&[("m1", Some(c)), ("m2", Some(c))]), Some("m1"));
        assert_eq!(newest(&[("m1", None)]), None);
    }

    #[test]
    fn recover_only_when_the_quorum_is_really_lost() {
        let q = |managers, reachable, ok| crate::Quorum {
            managers,
            reachable,
            needed: managers / 2 + 1,
            ok,
            leader: ok.then(|| "manager-1".to_string()),
        };
        let e = recover_refusal(Some(&q(3, 3, true)), 3, "c.toml").unwrap();
        assert!(
            e.to_string()
                .starts_with("quorum is not lost: 3 of 3 managers reachable, manager-1 leads"),
            "{e}"
        );
        // No leader but 2 of 3 answer: an election, not a lost quorum.
        let e = recover_refusal(Some(&q(3, 2, false)), 2, "c.toml").unwrap();
        assert_eq!(
            e.to_string(),
            "quorum is not lost: 2 of 3 managers answer, but none leads yet (an election is in progress, or the managers cannot reach each other on port 2377)\n  hint: wait a minute and run `provision status c.toml`; if no leader appears, check the network between the managers (2377/tcp, 7946)"
        );
        assert!(recover_refusal(Some(&q(3, 1, false)), 1, "c.toml").is_none());
        assert!(recover_refusal(None, 0, "c.toml").is_none());
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
                local_node_state: LocalNodeState::Inactive,
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
