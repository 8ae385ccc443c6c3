//! `node_availability`: managers are drained when `drain_managers = true` (the
//! guide's option for big swarms: managers then only manage) and active otherwise.
//! Workers are left alone, so a maintenance drain (`provision drain`) survives runs.

use crate::ctx::{Claim, ClusterCtx, ParamError, params};
use crate::swarm::commands;
use crate::swarm::node::Availability;
use crate::swarm::step::{self, On, SwarmPlanner, SwarmStep};
use provision_engine::inventory::Role;
use provision_engine::step::{Action, Change, Check, Step, StepError, StepPlan};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    drain_managers: bool,
}

/// Plans the managers' availability; the frame around it is [`SwarmStep`].
pub struct NodeAvailability {
    drain: bool,
}

pub fn build(with: &toml::Table, ctx: &ClusterCtx<'_>) -> Result<Box<dyn Step>, ParamError> {
    let p: Params = params(with, &["drain_managers"])?;
    if p.drain_managers && !ctx.inventory.hosts.iter().any(|h| h.has_role(Role::Worker)) {
        return Err(ParamError::new(
            Some("drain_managers"),
            "draining every manager leaves no node to run services: the inventory has no worker",
        )
        .help("add workers, or set drain_managers = false"));
    }
    if p.drain_managers {
        (ctx.claim)("drain_managers", Claim::DrainsManagers);
    }
    let targets = step::selected_managers(ctx);
    let planner = NodeAvailability {
        drain: p.drain_managers,
    };
    Ok(SwarmStep::boxed(ctx, targets, planner))
}

inventory::submit! { crate::ctx::BuiltIn::cluster("node_availability", build) }

impl SwarmPlanner for NodeAvailability {
    fn plan(&self, on: &On<'_>) -> StepPlan {
        let want = if self.drain {
            Availability::Drain
        } else {
            Availability::Active
        };
        let mut out = StepPlan::default();
        for t in on.reachable_targets() {
            let check = match &on.swarm.view {
                Err(e) => Err(e.clone()),
                Ok(None) => {
                    if want == Availability::Active {
                        Ok(Check::Ok("active once joined (the default)".into()))
                    } else {
                        Ok(Check::Change(vec![Change::new(
                            "drain (managers only manage)",
                            vec![Action::RunOn {
                                host: on.first_manager(),
                                script: commands::node_availability(t, want),
                                stdin: None,
                            }],
                        )]))
                    }
                }
                Ok(Some(v)) => match v.node_of(t, on.swarm.host(t)) {
                    None => Err(StepError::new(format!(
                        "{t} is not a node of swarm {}",
                        v.short_id()
                    ))
                    .hint("swarm_join must run first")),
                    Some(n) if n.availability == want => Ok(Check::Ok(want.to_string())),
                    Some(n) => Ok(Check::Change(vec![Change::new(
                        format!("{} -> {want}", n.availability),
                        vec![Action::RunOn {
                            host: v.via.clone(),
                            script: commands::node_availability(&n.id, want),
                            stdin: None,
                        }],
                    )])),
                },
            };
            out.hosts.insert(t.clone(), check);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::swarm_facts::fixtures;
    use super::*;
    use provision_engine::inventory::Inventory;
    use provision_engine::step::Facts;
    use std::collections::BTreeMap;

    #[test]
    fn managers_are_drained_on_request() {
        let t = "name = \"t\"\n[[hosts]]\nname = \"manager-1\"\naddress = \"127.0.0.1\"\nport = 2201\nprivate_ip = \"10.10.0.12\"\nroles = [\"manager\"]\n";
        let inv = Inventory::parse(t, std::path::Path::new("c.toml"), &Default::default()).unwrap();
        let facts: BTreeMap<String, Facts> = [(
            "manager-1".to_string(),
            Facts::new(fixtures::manager(
                "m1",
                "c",
                &[("m1", "manager-1", "manager", true, "null")],
            )),
        )]
        .into_iter()
        .collect();
        let s = SwarmStep {
            title: "a".into(),
            inv: inv.clone(),
            targets: vec!["manager-1".into()],
            planner: NodeAvailability { drain: true },
        };
        assert_eq!(
            s.plan(&facts).hosts["manager-1"],
            Ok(Check::Change(vec![Change::new(
                "active -> drain",
                vec![Action::RunOn {
                    host: "manager-1".into(),
                    script: "docker node update --availability drain m1".into(),
                    stdin: None
                }]
            )]))
        );
        let s = SwarmStep {
            planner: NodeAvailability { drain: false },
            ..s
        };
        assert_eq!(
            s.plan(&facts).hosts["manager-1"],
            Ok(Check::Ok("active".into()))
        );
    }
}
