//! `node_labels`: swarm node labels follow the inventory: the guide's role tags
//! (`swarm`, `swarm-manager`, `swarm-worker`) plus each host's `labels`. Labels the
//! inventory dropped are removed only with `prune = true`. Updates run on a manager.

use super::swarm_facts::SwarmView;
use crate::ctx::{ClusterCtx, ParamError, params};
use crate::swarm::commands;
use crate::swarm::step::{self, On, SwarmPlanner, SwarmStep};
use provision_engine::inventory::{Host, Role};
use provision_engine::step::{Action, Change, Check, Step, StepError, StepPlan};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "yes")]
    role_labels: bool,
    #[serde(default)]
    prune: bool,
}

fn yes() -> bool {
    true
}

/// Plans the labels; the frame around it is [`SwarmStep`].
pub struct NodeLabels {
    role_labels: bool,
    prune: bool,
}

pub fn build(with: &toml::Table, ctx: &ClusterCtx<'_>) -> Result<Box<dyn Step>, ParamError> {
    let p: Params = params(with, &["role_labels", "prune"])?;
    let targets = step::selected_nodes(ctx);
    let planner = NodeLabels {
        role_labels: p.role_labels,
        prune: p.prune,
    };
    Ok(SwarmStep::boxed(ctx, targets, planner))
}

inventory::submit! { crate::ctx::BuiltIn::cluster("node_labels", build) }

/// The labels a host's node must carry.
pub fn wanted(host: &Host, role_labels: bool) -> BTreeMap<String, String> {
    let mut w = BTreeMap::new();
    if role_labels {
        w.insert("swarm".to_string(), "true".to_string());
        let role = if host.has_role(Role::Manager) {
            "swarm-manager"
        } else {
            "swarm-worker"
        };
        w.insert(role.to_string(), "true".to_string());
    }
    w.extend(host.labels.clone());
    w
}

impl SwarmPlanner for NodeLabels {
    fn plan(&self, on: &On<'_>) -> StepPlan {
        let mut out = StepPlan::default();
        for t in on.reachable_targets() {
            let host = on.inv.host(t).expect("targets come from the inventory");
            let check = match &on.swarm.view {
                Err(e) => Err(e.clone()),
                Ok(v) => self.check_node(on, host, v.as_ref()),
            };
            out.hosts.insert(t.clone(), check);
        }
        out
    }
}

impl NodeLabels {
    fn check_node(
        &self,
        on: &On<'_>,
        host: &Host,
        view: Option<&SwarmView>,
    ) -> Result<Check, StepError> {
        let wanted = wanted(host, self.role_labels);
        let describe = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(v) = view else {
            // No swarm yet (only under --check): label by hostname once joined.
            return Ok(Check::Change(vec![Change::new(
                format!("label {}", describe(&wanted)),
                vec![Action::RunOn {
                    host: on.first_manager(),
                    script: commands::node_labels(&host.name, &wanted, &[]),
                    stdin: None,
                }],
            )]));
        };
        let Some(node) = v.node_of(&host.name, on.swarm.host(&host.name)) else {
            return Err(StepError::new(format!(
                "{} is not a node of swarm {}",
                host.name,
                v.short_id()
            ))
            .hint("swarm_join must run before node_labels"));
        };
        let add: BTreeMap<String, String> = wanted
            .iter()
            .filter(|(k, val)| node.labels.get(*k) != Some(*val))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let rm: Vec<String> = if self.prune {
            node.labels
                .keys()
                .filter(|k| !wanted.contains_key(*k))
                .cloned()
                .collect()
        } else {
            vec![]
        };
        if add.is_empty() && rm.is_empty() {
            return Ok(Check::Ok(if wanted.is_empty() {
                "no labels wanted".into()
            } else {
                format!("labels {}", describe(&wanted))
            }));
        }
        let mut summary = Vec::new();
        if !add.is_empty() {
            summary.push(format!("set {}", describe(&add)));
        }
        if !rm.is_empty() {
            summary.push(format!("remove {}", rm.join(", ")));
        }
        Ok(Check::Change(vec![Change::new(
            summary.join("; "),
            vec![Action::RunOn {
                host: v.via.clone(),
                script: commands::node_labels(&node.id, &add, &rm),
                stdin: None,
            }],
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::swarm_facts::fixtures;
    use super::*;

    use provision_engine::inventory::Inventory;
    use provision_engine::step::Facts;

    fn inventory() -> Inventory {
        let t = "name = \"t\"\n[[hosts]]\nname = \"manager-1\"\naddress = \"127.0.0.1\"\nport = 2201\nprivate_ip = \"10.10.0.12\"\nroles = [\"manager\"]\n\
                 [[hosts]]\nname = \"worker-1\"\naddress = \"127.0.0.1\"\nport = 2202\nprivate_ip = \"10.10.0.13\"\nroles = [\"worker\"]\nlabels = { zone = \"a b\" }\n";
        Inventory::parse(t, std::path::Path::new("c.toml"), &Default::default()).unwrap()
    }

    fn step(prune: bool) -> SwarmStep<NodeLabels> {
        let inv = inventory();
        SwarmStep {
            title: "labels".into(),
            targets: vec!["manager-1".into(), "worker-1".into()],
            inv,
            planner: NodeLabels {
                role_labels: true,
                prune,
            },
        }
    }

    fn facts(worker_labels: &str) -> BTreeMap<String, Facts> {
        let m = fixtures::manager(
            "m1",
            "clusterA",
            &[
                (
                    "m1",
                    "manager-1",
                    "manager",
                    true,
                    "{\"swarm\":\"true\",\"swarm-manager\":\"true\"}",
                ),
                ("w1", "worker-1", "worker", false, worker_labels),
            ],
        );
        [
            ("manager-1".to_string(), Facts::new(m)),
            ("worker-1".to_string(), Facts::new(fixtures::worker("w1"))),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn missing_labels_are_added_on_the_leader() {
        let p = step(false).plan(&facts("{\"old\":\"x\"}"));
        assert_eq!(
            p.hosts["manager-1"],
            Ok(Check::Ok("labels swarm=true, swarm-manager=true".into()))
        );
        assert_eq!(
            p.hosts["worker-1"],
            Ok(Check::Change(vec![Change::new(
                "set swarm=true, swarm-worker=true, zone=a b",
                vec![Action::RunOn {
                    host: "manager-1".into(),
                    script: "docker node update --label-add swarm=true --label-add swarm-worker=true --label-add 'zone=a b' w1".into(),
                    stdin: None
                }]
            )]))
        );
    }

    #[test]
    fn dropped_labels_are_removed_only_when_pruning() {
        let done = "{\"old\":\"x\",\"swarm\":\"true\",\"swarm-worker\":\"true\",\"zone\":\"a b\"}";
        assert!(matches!(
            step(false).plan(&facts(done)).hosts["worker-1"],
            Ok(Check::Ok(_))
        ));
        let p = step(true).plan(&facts(done));
        let Ok(Check::Change(c)) = &p.hosts["worker-1"] else {
            panic!()
        };
        assert_eq!(c[0].summary, "remove old");
    }
}
