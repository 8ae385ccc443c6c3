//! `swarm_join`: every manager and worker of the inventory is a member of THE swarm
//! (the one the managers are in), with its role. Join tokens are read live from a
//! manager, never stored, and reach the joining node on stdin (through Docker's API
//! on its local socket), so they appear in no command line and no log. Managers
//! join one at a time so that quorum is never at risk.

use super::swarm_facts::{self, HostSwarm, NodeInfo, Swarm, SwarmView};
use crate::ctx::{ClusterCtx, ParamError, params};
use crate::swarm::commands::{self, JOIN_COMMAND, LEAVE_COMMAND};
use crate::swarm::node::{LocalNodeState, NodeRole, NodeState, Reachability};
use crate::swarm::step::{self, On, SwarmPlanner, SwarmStep};
use provision_engine::inventory::{Inventory, Role};
use provision_engine::step::{Action, Change, Check, Step, StepError, StepPlan};
use provision_transport::shell::quote;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Params {}

/// Plans the joins; the frame around it is [`SwarmStep`].
pub struct SwarmJoin;

pub fn build(with: &toml::Table, ctx: &ClusterCtx<'_>) -> Result<Box<dyn Step>, ParamError> {
    let _: Params = params(with, &[])?;
    let targets = step::selected_nodes(ctx);
    step::need_private_ips(ctx, &targets, "swarm node")?;
    Ok(SwarmStep::boxed(ctx, targets, SwarmJoin))
}

inventory::submit! { crate::ctx::BuiltIn::cluster("swarm_join", build) }

impl SwarmPlanner for SwarmJoin {
    fn plan(&self, on: &On<'_>) -> StepPlan {
        plan(on)
    }
}

fn plan(on: &On<'_>) -> StepPlan {
    let (inv, swarm) = (on.inv, &on.swarm);
    let mut out = StepPlan::default();
    let mut any_manager_joins = false;
    for t in on.reachable_targets() {
        let check = match (&swarm.view, &swarm.hosts[t]) {
            (_, Err(e)) => Err(e.clone()),
            (Err(e), _) => Err(e.clone()),
            (Ok(None), Ok(s)) if !s.in_a_swarm() && swarm_to_be_created(inv, swarm) => {
                // Only under --check (or when swarm_init did not run): the swarm
                // swarm_init creates does not exist yet, so there is no token.
                let first = on.first_manager();
                Ok(Check::Change(vec![Change::new(
                    format!("join the swarm that swarm_init creates on {first}"),
                    vec![Action::run(format!(
                        "echo {} >&2; exit 1",
                        quote(&format!("no swarm yet: swarm_init must create it on {first} first (run without --limit, with swarm_init in the playbook)"))
                    ))],
                )]))
            }
            (Ok(None), _) => Err(StepError::new("no reachable manager is in a swarm")
                .hint("swarm_init must run first (it does in playbooks/swarm.toml); check that the managers are up")),
            (Ok(Some(v)), Ok(s)) => {
                let manager = inv.host(t).is_some_and(|h| h.has_role(Role::Manager));
                let c = member_check(inv, t, manager, v, s);
                if manager && matches!(c, Ok(Check::Change(_))) {
                    any_manager_joins = true;
                }
                c
            }
        };
        out.hosts.insert(t.clone(), check);
    }
    // Managers first, one at a time, in inventory order; then the workers.
    out.serial = any_manager_joins;
    let mut order: Vec<String> = inv.managers().map(|h| h.name.clone()).collect();
    order.extend(
        inv.hosts
            .iter()
            .filter(|h| h.has_role(Role::Worker) && !h.has_role(Role::Manager))
            .map(|h| h.name.clone()),
    );
    out.order = order;
    out
}

/// True when every manager answered and none is in a swarm: swarm_init creates it.
fn swarm_to_be_created(inv: &Inventory, swarm: &Swarm) -> bool {
    inv.managers()
        .all(|m| matches!(swarm.hosts.get(&m.name), Some(Ok(s)) if !s.in_a_swarm()))
}

fn member_check(
    inv: &Inventory,
    host: &str,
    manager: bool,
    v: &SwarmView,
    s: &HostSwarm,
) -> Result<Check, StepError> {
    let role = NodeRole::of(manager);
    let Some(info) = s.info() else {
        return match &s.docker {
            // Under --check before Docker is installed: it will join.
            swarm_facts::Docker::Absent => {
                Ok(Check::Change(vec![join_change(inv, host, manager, v)]))
            }
            swarm_facts::Docker::Down(e) => {
                Err(StepError::new(format!("docker is not running: {e}"))
                    .hint("start it: systemctl start docker"))
            }
            swarm_facts::Docker::Up(_) => unreachable!(),
        };
    };
    match info.local_node_state {
        LocalNodeState::Inactive => Ok(Check::Change(vec![join_change(inv, host, manager, v)])),
        // Removed from THE swarm (by `recover` or `remove-node`) while it was
        // down: it still holds the swarm's state but is no member any more.
        _ if removed_member(v, s) => Ok(Check::Change(vec![Change::new(
            format!(
                "leave the swarm state it was removed from (node {}) and join again as {role}",
                info.node_id
            ),
            {
                let mut c = join_change(inv, host, manager, v);
                c.actions.insert(0, Action::run(LEAVE_COMMAND));
                c.actions
            },
        )])),
        LocalNodeState::Active => match v.node_of(host, Some(s)) {
            None => Err(StepError::new(format!(
                "{host} is in a different swarm (node {}, managers at {})",
                info.node_id,
                info.remote_managers.iter().flatten().map(|m| m.addr.as_str()).collect::<Vec<_>>().join(", ")
            ))
            .hint(format!("if that swarm is abandoned, run `docker swarm leave --force` on {host}, then re-run"))),
            Some(node) if manager && node.role != NodeRole::Manager => Ok(Check::Change(vec![Change::new(
                "promote to manager",
                vec![Action::RunOn { host: v.via.clone(), script: commands::promote(&node.id), stdin: None }],
            )])),
            Some(node) if !manager && node.role == NodeRole::Manager => Ok(Check::Ok(format!(
                "manager in swarm {} (the inventory says worker; not demoted automatically: `docker node demote {}`)",
                v.short_id(),
                node.hostname
            ))),
            // Its Docker runs in THE swarm (it answered), yet the swarm does not hear it (down,
            // or a manager the others do not reach): just restarted (heard within seconds) or
            // cut off from the others (never heard).
            Some(node) if unheard(node) => {
                let ip = inv.host(host).and_then(|h| h.private_ip).map(|ip| ip.to_string()).unwrap_or_default();
                let hint = commands::unheard_hint(host, &ip);
                Ok(Check::Change(vec![Change::new(
                    format!(
                        "wait up to {} s for the swarm to hear {host} (it marks it {} while its Docker runs in the swarm)",
                        commands::HEARD_WITHIN_SECS,
                        if node.state == NodeState::Down { "down" } else { "unreachable" }
                    ),
                    vec![Action::RunOn { host: v.via.clone(), script: commands::wait_node(&node.id, node.role == NodeRole::Manager, &hint, commands::HEARD_WITHIN_SECS), stdin: None }],
                )]))
            }
            Some(_) => Ok(Check::Ok(format!("{role} in swarm {}", v.short_id()))),
        },
        LocalNodeState::Locked => Err(StepError::new(format!("{host} is locked (swarm autolock)")).hint("unlock it with `docker swarm unlock`")),
        other @ (LocalNodeState::Pending | LocalNodeState::Error) => Err(StepError::new(format!("{host} swarm state is `{other}`: {}", info.error))
            .hint(format!("if it cannot reach the managers, run `docker swarm leave --force` on {host} and re-run"))),
    }
}

/// The swarm does not hear the node: down, or a manager the other managers do not reach.
pub fn unheard(node: &NodeInfo) -> bool {
    node.state == NodeState::Down
        || (node.role == NodeRole::Manager && node.reachability == Some(Reachability::Unreachable))
}

/// Same swarm (cluster ID) but the node is not in its node list: it was removed.
fn removed_member(v: &SwarmView, s: &HostSwarm) -> bool {
    let Some(info) = s.info() else { return false };
    // Workers do not see the cluster ID: they are ours when they talk to our managers.
    let ours = match s.cluster_id() {
        Some(id) => id == v.cluster_id,
        None => info.remote_managers.iter().flatten().any(|r| {
            v.nodes.iter().any(|n| {
                n.role == NodeRole::Manager
                    && !n.manager_addr.is_empty()
                    && n.manager_addr == r.addr
            })
        }),
    };
    ours && !info.node_id.is_empty()
        && !v.nodes.is_empty()
        && !v.nodes.iter().any(|n| n.id == info.node_id)
}

fn join_change(inv: &Inventory, host: &str, manager: bool, v: &SwarmView) -> Change {
    let ip = inv
        .host(host)
        .and_then(|h| h.private_ip)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let token = if manager {
        &v.manager_token
    } else {
        &v.worker_token
    };
    let body = commands::join_request(&ip, &v.join_addr, token);
    Change::new(
        format!(
            "join swarm {} as {} through {}",
            v.short_id(),
            NodeRole::of(manager),
            v.join_addr
        ),
        {
            let mut a = vec![Action::run_with_stdin(JOIN_COMMAND, body.into_bytes())];
            if manager {
                a.push(Action::run(commands::manager_settled()));
            }
            a
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::swarm_facts::fixtures::{self, facts, inventory};
    use super::*;
    use provision_engine::step::Facts;
    use std::collections::BTreeMap;

    fn plan(inv: &Inventory, targets: &[String], facts: &BTreeMap<String, Facts>) -> StepPlan {
        super::plan(&On::read(inv, targets, facts))
    }

    fn all(inv: &Inventory) -> Vec<String> {
        inv.hosts.iter().map(|h| h.name.clone()).collect()
    }

    /// worker-1 is in the swarm already; worker-2 joins: the summary, script and request body
    /// of its join.
    fn worker_2_joins(p: &StepPlan) -> (String, String, serde_json::Value) {
        assert_eq!(
            p.hosts["worker-1"],
            Ok(Check::Ok("worker in swarm clusterA".into()))
        );
        let Ok(Check::Change(c)) = &p.hosts["worker-2"] else {
            panic!("{:?}", p.hosts["worker-2"])
        };
        let Action::Run { script, stdin } = &c[0].actions[0] else {
            panic!()
        };
        let body = serde_json::from_slice(stdin.as_ref().unwrap()).unwrap();
        (c[0].summary.clone(), script.clone(), body)
    }

    #[test]
    fn new_worker_joins_with_the_token_on_stdin() {
        let inv = inventory(1, 2);
        let m = fixtures::manager(
            "m1",
            "clusterA",
            &[
                ("m1", "manager-1", "manager", true, "null"),
                ("w1", "worker-1", "worker", false, "null"),
            ],
        );
        let f = facts(&[
            ("manager-1", m),
            ("worker-1", fixtures::worker("w1")),
            ("worker-2", fixtures::INACTIVE.into()),
        ]);
        let p = plan(&inv, &all(&inv), &f);
        assert_eq!(
            p.hosts["manager-1"],
            Ok(Check::Ok("manager in swarm clusterA".into()))
        );
        let (summary, script, body) = worker_2_joins(&p);
        assert_eq!(
            summary,
            "join swarm clusterA as worker through 10.10.0.12:2377"
        );
        assert_eq!(script, JOIN_COMMAND);
        assert!(
            !script.contains("SWMTKN"),
            "the token is not in the command line"
        );
        assert_eq!(body["JoinToken"], "SWMTKN-1-worker-token");
        assert_eq!(body["AdvertiseAddr"], "10.10.0.32:2377");
        assert_eq!(body["RemoteAddrs"][0], "10.10.0.12:2377");
        assert!(!p.serial, "workers alone join in parallel");
    }

    #[test]
    fn ipv6_nodes_join_through_a_bracketed_address() {
        // Private addresses in IPv6 form; Docker writes a v6 raft address `[addr]:2377`.
        let t = inventory(1, 2)
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                format!(
                    "[[hosts]]\nname = \"{}\"\naddress = \"::1\"\nport = {}\nprivate_ip = \"fd00::{}\"\nroles = [\"{}\"]\n",
                    h.name,
                    2200 + i,
                    11 + i,
                    if i == 0 { "manager" } else { "worker" }
                )
            })
            .collect::<String>();
        let inv = Inventory::parse(
            &format!("name = \"t\"\n{t}"),
            std::path::Path::new("c.toml"),
            &Default::default(),
        )
        .unwrap();
        let m = fixtures::manager(
            "m1",
            "clusterA",
            &[
                ("m1", "manager-1", "manager", true, "null"),
                ("w1", "worker-1", "worker", false, "null"),
            ],
        )
        .replace("10.10.0.12:2377", "[fd00::11]:2377")
        .replace("10.10.0.12", "fd00::11");
        let f = facts(&[
            ("manager-1", m),
            (
                "worker-1",
                fixtures::worker("w1").replace("10.10.0.12:2377", "[fd00::11]:2377"),
            ),
            ("worker-2", fixtures::INACTIVE.into()),
        ]);
        let p = plan(&inv, &all(&inv), &f);
        let (summary, _, body) = worker_2_joins(&p);
        assert_eq!(
            summary,
            "join swarm clusterA as worker through [fd00::11]:2377"
        );
        assert_eq!(body["AdvertiseAddr"], "[fd00::13]:2377");
        assert_eq!(body["DataPathAddr"], "fd00::13");
        assert_eq!(body["RemoteAddrs"][0], "[fd00::11]:2377");
        // Without a leader's address in the node list, the manager's private address.
        let no_leader = fixtures::manager(
            "m1",
            "clusterA",
            &[("m1", "manager-1", "manager", false, "null")],
        )
        .replace("10.10.0.12", "fd00::11");
        let f = facts(&[
            ("manager-1", no_leader),
            ("worker-2", fixtures::INACTIVE.into()),
        ]);
        let v = swarm_facts::view(&inv, &swarm_facts::parse_all(&f))
            .unwrap()
            .unwrap();
        assert_eq!(v.join_addr, "[fd00::11]:2377");
    }

    #[test]
    fn managers_join_one_at_a_time_first() {
        let inv = inventory(3, 1);
        let m = fixtures::manager(
            "m1",
            "clusterA",
            &[("m1", "manager-1", "manager", true, "null")],
        );
        let f = facts(&[
            ("manager-1", m),
            ("manager-2", fixtures::INACTIVE.into()),
            ("manager-3", fixtures::INACTIVE.into()),
            ("worker-1", fixtures::INACTIVE.into()),
        ]);
        let p = plan(&inv, &all(&inv), &f);
        assert!(p.serial);
        assert_eq!(
            p.order,
            vec!["manager-1", "manager-2", "manager-3", "worker-1"]
        );
        let Ok(Check::Change(c)) = &p.hosts["manager-2"] else {
            panic!()
        };
        let Action::Run { stdin, .. } = &c[0].actions[0] else {
            panic!()
        };
        assert!(
            String::from_utf8_lossy(stdin.as_ref().unwrap()).contains("SWMTKN-1-manager-token")
        );
    }

    #[test]
    fn a_manager_removed_while_down_leaves_and_joins_again() {
        // After `provision recover` on manager-1, manager-2 comes back: it still
        // holds the old raft state (same cluster ID, its own node list) but the
        // swarm removed its node.
        let inv = inventory(2, 0);
        let m1 = fixtures::manager(
            "m1",
            "clusterA",
            &[("m1", "manager-1", "manager", true, "null")],
        );
        let m2 = fixtures::manager(
            "m2",
            "clusterA",
            &[
                ("m1", "manager-1", "manager", false, "null"),
                ("m2", "manager-2", "manager", true, "null"),
            ],
        );
        let f = facts(&[("manager-1", m1), ("manager-2", m2)]);
        let p = plan(&inv, &all(&inv), &f);
        assert_eq!(
            p.hosts["manager-1"],
            Ok(Check::Ok("manager in swarm clusterA".into())),
            "the stale manager is not taken for THE swarm"
        );
        let Ok(Check::Change(c)) = &p.hosts["manager-2"] else {
            panic!("{:?}", p.hosts["manager-2"])
        };
        assert_eq!(
            c[0].summary,
            "leave the swarm state it was removed from (node m2) and join again as manager"
        );
        let scripts: Vec<&str> = c[0]
            .actions
            .iter()
            .map(|a| match a {
                Action::Run { script, .. } => script.as_str(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            scripts,
            vec![LEAVE_COMMAND, JOIN_COMMAND, &commands::manager_settled()],
            "a manager waits until it is caught up"
        );
    }

    #[test]
    fn a_node_of_another_swarm_is_a_hard_error() {
        let inv = inventory(1, 1);
        let m = fixtures::manager(
            "m1",
            "clusterA",
            &[("m1", "manager-1", "manager", true, "null")],
        );
        let other = fixtures::worker("zz-other").replace("10.10.0.12:2377", "10.99.0.1:2377");
        let f = facts(&[("manager-1", m), ("worker-1", other)]);
        let p = plan(&inv, &all(&inv), &f);
        let e = p.hosts["worker-1"].clone().unwrap_err();
        assert_eq!(
            e.message,
            "worker-1 is in a different swarm (node zz-other, managers at 10.99.0.1:2377)"
        );
        assert_eq!(
            e.hint.as_deref(),
            Some(
                "if that swarm is abandoned, run `docker swarm leave --force` on worker-1, then re-run"
            )
        );
    }

    #[test]
    fn a_worker_listed_as_manager_is_promoted_from_the_leader() {
        let inv = inventory(2, 0);
        let m = fixtures::manager(
            "m1",
            "clusterA",
            &[
                ("m1", "manager-1", "manager", true, "null"),
                ("w9", "manager-2", "worker", false, "null"),
            ],
        );
        let f = facts(&[("manager-1", m), ("manager-2", fixtures::worker("w9"))]);
        let p = plan(&inv, &all(&inv), &f);
        assert_eq!(
            p.hosts["manager-2"],
            Ok(Check::Change(vec![Change::new(
                "promote to manager",
                vec![Action::RunOn {
                    host: "manager-1".into(),
                    script: "docker node promote w9".into(),
                    stdin: None
                }]
            )]))
        );
    }

    #[test]
    fn a_manager_cut_off_from_the_others_is_waited_for_from_the_leader() {
        // Captured on the lab: manager-3's private interface dropped by nftables (SSH stays
        // up): its Docker is in the swarm but sees no leader; manager-1 leads and lists it down.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/swarm/");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap();
        let inv = inventory(3, 0);
        let f = facts(&[
            ("manager-1", read("partition-manager-1.gather")),
            ("manager-3", read("partition-manager-3.gather")),
        ]);
        let targets = vec!["manager-1".to_string(), "manager-3".to_string()];
        let p = plan(&inv, &targets, &f);
        assert_eq!(
            p.hosts["manager-1"],
            Ok(Check::Ok("manager in swarm sg2d8m89xwed".into()))
        );
        let hint = commands::unheard_hint("manager-3", "10.10.0.13");
        assert_eq!(
            p.hosts["manager-3"],
            Ok(Check::Change(vec![Change::new(
                "wait up to 60 s for the swarm to hear manager-3 (it marks it down while its Docker runs in the swarm)",
                vec![Action::RunOn {
                    host: "manager-1".into(),
                    script: commands::wait_node("qzlr2zbcyvvku5bdzp2x8jw0b", true, &hint, 60),
                    stdin: None
                }]
            )]))
        );
        // Seconds earlier the leader already counts it unreachable but not yet down: the same.
        let early = read("partition-manager-1.gather").replace(
            "\"Status\":{\"State\":\"down\",\"Message\":\"heartbeat failure\"",
            "\"Status\":{\"State\":\"ready\",\"Message\":\"\"",
        );
        let f = facts(&[
            ("manager-1", early),
            ("manager-3", read("partition-manager-3.gather")),
        ]);
        let Ok(Check::Change(c)) = &plan(&inv, &targets, &f).hosts["manager-3"] else {
            panic!("not waited for")
        };
        assert_eq!(
            c[0].summary,
            "wait up to 60 s for the swarm to hear manager-3 (it marks it unreachable while its Docker runs in the swarm)"
        );
    }

    #[test]
    fn before_the_swarm_exists_joins_are_planned_against_swarm_init() {
        // What --check shows on bare hosts.
        let inv = inventory(1, 1);
        let f = facts(&[
            ("manager-1", fixtures::INACTIVE.into()),
            ("worker-1", "docker=absent\n".into()),
        ]);
        let p = plan(&inv, &all(&inv), &f);
        let Ok(Check::Change(c)) = &p.hosts["worker-1"] else {
            panic!("{:?}", p.hosts["worker-1"])
        };
        assert_eq!(
            c[0].summary,
            "join the swarm that swarm_init creates on manager-1"
        );
    }

    #[test]
    fn no_swarm_and_a_manager_down_is_an_error() {
        let inv = inventory(2, 1);
        let f = facts(&[
            ("manager-1", fixtures::INACTIVE.into()),
            ("worker-1", fixtures::INACTIVE.into()),
        ]);
        let p = plan(&inv, &all(&inv), &f);
        assert_eq!(
            p.hosts["worker-1"].clone().unwrap_err().message,
            "no reachable manager is in a swarm"
        );
    }
}
