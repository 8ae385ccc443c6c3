//! `swarm_init`: makes sure there is exactly one swarm. Leader and membership come
//! from live state: when any manager is in a swarm, that is THE swarm and nothing is
//! initialised; only when every manager answers and none is in a swarm does the
//! first one run `docker swarm init` on its private address.

use crate::ctx::{ClusterCtx, ParamError, params};
use crate::swarm::commands;
use crate::swarm::node::LocalNodeState;
use crate::swarm::step::{self, On, SwarmPlanner, SwarmStep};
use provision_engine::step::{Action, Change, Check, Step, StepError, StepPlan};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Params {}

/// Plans the init; the frame around it is [`SwarmStep`].
pub struct SwarmInit;

pub fn build(with: &toml::Table, ctx: &ClusterCtx<'_>) -> Result<Box<dyn Step>, ParamError> {
    let _: Params = params(with, &[])?;
    let targets = step::selected_managers(ctx);
    step::need_private_ips(ctx, &targets, "manager")?;
    // The frame gathers on every manager of the inventory, even under --limit: a swarm
    // anywhere forbids a new one.
    Ok(SwarmStep::boxed(ctx, targets, SwarmInit))
}

inventory::submit! { crate::ctx::BuiltIn::cluster("swarm_init", build) }

impl SwarmPlanner for SwarmInit {
    fn plan(&self, on: &On<'_>) -> StepPlan {
        plan(on)
    }
}

/// What the managers' live state says to do.
enum Decision {
    Exists(String),
    Init(String),
    Refuse(StepError),
}

fn decide(on: &On<'_>) -> Decision {
    let swarm = &on.swarm;
    if let Some(Err(e)) = swarm.hosts.values().find(|s| s.is_err()) {
        return Decision::Refuse(e.clone());
    }
    let managers: Vec<&str> = on.inv.managers().map(|h| h.name.as_str()).collect();
    // Locked managers hold the swarm but cannot act: say how to unlock.
    if let Some(h) = managers.iter().find(|m| {
        swarm
            .host(m)
            .and_then(|s| s.info())
            .is_some_and(|i| i.local_node_state == LocalNodeState::Locked)
    }) {
        return Decision::Refuse(
            StepError::new(format!("the swarm is locked on {h} (autolock)"))
                .hint("unlock it with `docker swarm unlock` and the unlock key (or `provision restore`), then re-run"),
        );
    }
    match &swarm.view {
        Err(e) => return Decision::Refuse(e.clone()),
        Ok(Some(v)) => {
            return Decision::Exists(format!(
                "swarm {} exists (managed through {})",
                v.short_id(),
                v.via
            ));
        }
        Ok(None) => {}
    }
    if let Some(h) = managers
        .iter()
        .find(|m| swarm.host(m).is_some_and(|s| s.in_a_swarm()))
    {
        // In a swarm without control: a manager of the inventory is a worker
        // somewhere, or the swarm lost quorum.
        return Decision::Refuse(
            StepError::new(format!("{h} is in a swarm but cannot manage it (it is a worker there, or the swarm has lost quorum)"))
                .hint("check `docker info` on it; `provision recover` brings back a swarm that lost quorum"),
        );
    }
    let unreachable: Vec<&str> = managers
        .iter()
        .copied()
        .filter(|m| !on.facts.contains_key(*m))
        .collect();
    if !unreachable.is_empty() {
        // Never create a second swarm: an unreachable manager may hold the real one.
        return Decision::Refuse(
            StepError::new(format!(
                "no reachable manager is in a swarm, and {} could not be reached: refusing to create a new swarm",
                unreachable.join(", ")
            ))
            .hint("bring the unreachable managers back (they may hold the swarm), or remove them from the inventory"),
        );
    }
    Decision::Init(managers.first().copied().unwrap_or_default().to_string())
}

fn plan(on: &On<'_>) -> StepPlan {
    let decision = decide(on);
    let mut out = StepPlan::default();
    for t in on.reachable_targets() {
        let check = match &decision {
            Decision::Exists(reason) => Ok(Check::Ok(reason.clone())),
            Decision::Refuse(e) => Err(e.clone()),
            Decision::Init(first) if first == t => {
                let ip = on
                    .inv
                    .host(t)
                    .and_then(|h| h.private_ip)
                    .map(|ip| ip.to_string())
                    .unwrap_or_default();
                Ok(Check::Change(vec![Change::new(
                    format!("init the swarm advertising {ip}"),
                    vec![Action::run(commands::init(&ip))],
                )]))
            }
            Decision::Init(first) => Ok(Check::Ok(format!("joins the swarm {first} creates"))),
        };
        out.hosts.insert(t.clone(), check);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::swarm_facts::fixtures::{self, facts, inventory};
    use super::*;
    use provision_engine::inventory::Inventory;
    use provision_engine::step::Facts;
    use std::collections::BTreeMap;

    fn plan(inv: &Inventory, targets: &[String], facts: &BTreeMap<String, Facts>) -> StepPlan {
        super::plan(&On::read(inv, targets, facts))
    }

    fn targets(inv: &Inventory) -> Vec<String> {
        inv.managers().map(|h| h.name.clone()).collect()
    }

    #[test]
    fn bare_managers_init_on_the_first() {
        let inv = inventory(3, 0);
        let f = facts(&[
            ("manager-1", fixtures::INACTIVE.into()),
            ("manager-2", fixtures::INACTIVE.into()),
            ("manager-3", "docker=absent\n".into()),
        ]);
        let p = plan(&inv, &targets(&inv), &f);
        assert_eq!(
            p.hosts["manager-1"],
            Ok(Check::Change(vec![Change::new(
                "init the swarm advertising 10.10.0.11",
                vec![Action::run("docker swarm init --advertise-addr 10.10.0.11")]
            )]))
        );
        assert_eq!(
            p.hosts["manager-2"],
            Ok(Check::Ok("joins the swarm manager-1 creates".into()))
        );
    }

    #[test]
    fn an_existing_swarm_anywhere_wins() {
        let inv = inventory(3, 0);
        // manager-2 holds the swarm; manager-1 (listed first) is bare.
        let f = facts(&[
            ("manager-1", fixtures::INACTIVE.into()),
            (
                "manager-2",
                fixtures::manager(
                    "m2",
                    "clusterAAAAAAAAAA",
                    &[("m2", "manager-2", "manager", true, "null")],
                ),
            ),
            ("manager-3", fixtures::INACTIVE.into()),
        ]);
        let p = plan(&inv, &targets(&inv), &f);
        for m in ["manager-1", "manager-2", "manager-3"] {
            assert_eq!(
                p.hosts[m],
                Ok(Check::Ok(
                    "swarm clusterAAAAA exists (managed through manager-2)".into()
                ))
            );
        }
    }

    #[test]
    fn first_manager_down_never_creates_a_second_swarm() {
        let inv = inventory(3, 0);
        let f = facts(&[
            ("manager-2", fixtures::INACTIVE.into()),
            ("manager-3", fixtures::INACTIVE.into()),
        ]);
        let p = plan(&inv, &targets(&inv), &f);
        let err = p.hosts["manager-2"].clone().unwrap_err();
        assert_eq!(
            err.message,
            "no reachable manager is in a swarm, and manager-1 could not be reached: refusing to create a new swarm"
        );
        assert!(
            !p.hosts.contains_key("manager-1"),
            "no plan for an unreachable host"
        );
    }

    #[test]
    fn two_swarms_are_an_error() {
        let inv = inventory(2, 0);
        let f = facts(&[
            (
                "manager-1",
                fixtures::manager(
                    "m1",
                    "clusterA",
                    &[("m1", "manager-1", "manager", true, "null")],
                ),
            ),
            (
                "manager-2",
                fixtures::manager(
                    "m2",
                    "clusterB",
                    &[("m2", "manager-2", "manager", true, "null")],
                ),
            ),
        ]);
        let p = plan(&inv, &targets(&inv), &f);
        let err = p.hosts["manager-1"].clone().unwrap_err();
        assert_eq!(
            err.message,
            "managers are in different swarms: manager-1 is in swarm clusterA, manager-2 in swarm clusterB"
        );
    }

    /// Runs `f` in the build context of a playbook entry selecting every host of `inv`.
    fn with_ctx<R>(inv: &Inventory, f: impl FnOnce(&ClusterCtx<'_>) -> R) -> R {
        f(&ClusterCtx {
            title: "swarm",
            inventory: inv,
            hosts: inv.hosts.iter().collect(),
            base_dir: std::path::Path::new("."),
            render: &|_: &str, b: &str| Ok(b.to_string()),
            has_secret: &|_: &str| false,
            claim: &|_, _| {},
        })
    }

    #[test]
    fn unknown_parameters_are_rejected() {
        let with: toml::Table = toml::from_str("advertise = \"x\"").unwrap();
        assert_eq!(
            with_ctx(&inventory(1, 0), |ctx| build(&with, ctx)
                .err()
                .unwrap()
                .message),
            "unknown parameter `advertise`"
        );
    }

    #[test]
    fn a_manager_without_a_private_address_is_refused() {
        let mut inv = inventory(2, 1);
        inv.hosts[1].private_ip = None;
        inv.hosts[2].private_ip = None;
        let refused = |ctor: crate::ctx::ClusterStepCtor| {
            with_ctx(&inv, |ctx| {
                ctor(&toml::Table::new(), ctx).err().unwrap().message
            })
        };
        assert_eq!(
            refused(build),
            "manager `manager-2` has no private_ip to advertise"
        );
        assert_eq!(
            refused(super::super::swarm_join::build),
            "swarm node `manager-2` has no private_ip to advertise"
        );
    }
}
