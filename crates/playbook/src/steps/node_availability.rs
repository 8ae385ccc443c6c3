//! `node_availability`: managers are drained when `drain_managers = true` (the
//! guide's option for big swarms: managers then only manage) and active otherwise.
//! Workers are left alone, so a maintenance drain (`provision drain`) survives runs.

use super::swarm_facts;
use crate::ctx::{Claim, ClusterCtx, ParamError, params};
use provision_engine::inventory::{Inventory, Role};
use provision_engine::step::{Action, Change, Check, Facts, Step, StepError, StepPlan};
use provision_transport::shell::quote;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    drain_managers: bool,
}

pub struct NodeAvailability {
    title: String,
    inv: Inventory,
    targets: Vec<String>,
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
    let targets = ctx
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::Manager))
        .map(|h| h.name.clone())
        .collect();
    Ok(Box::new(NodeAvailability {
        title: ctx.title.to_string(),
        inv: ctx.inventory.clone(),
        targets,
        drain: p.drain_managers,
    }))
}

pub fn availability_command(node: &str, availability: &str) -> String {
    format!(
        "docker node update --availability {} {}",
        quote(availability),
        quote(node)
    )
}

impl Step for NodeAvailability {
    fn title(&self) -> &str {
        &self.title
    }

    fn targets(&self) -> Vec<String> {
        self.targets.clone()
    }

    fn fact_hosts(&self) -> Vec<String> {
        self.inv.managers().map(|h| h.name.clone()).collect()
    }

    fn gather(&self, host: &str) -> Option<String> {
        Some(swarm_facts::gather_for(&self.inv, host))
    }

    fn secret_values(&self, _host: &str, facts: &Facts) -> Vec<String> {
        swarm_facts::tokens_in(facts)
    }

    fn plan(&self, facts: &BTreeMap<String, Facts>) -> StepPlan {
        let swarms = swarm_facts::parse_all(facts);
        let view = swarm_facts::view(&self.inv, &swarms);
        let want = if self.drain { "drain" } else { "active" };
        let mut out = StepPlan::default();
        for t in self.targets.iter().filter(|t| facts.contains_key(*t)) {
            let check = match &view {
                Err(e) => Err(e.clone()),
                Ok(None) => {
                    let via = self
                        .inv
                        .managers()
                        .next()
                        .map(|h| h.name.clone())
                        .unwrap_or_default();
                    if want == "active" {
                        Ok(Check::Ok("active once joined (the default)".into()))
                    } else {
                        Ok(Check::Change(vec![Change::new(
                            "drain (managers only manage)",
                            vec![Action::RunOn {
                                host: via,
                                script: availability_command(t, want),
                                stdin: None,
                            }],
                        )]))
                    }
                }
                Ok(Some(v)) => match v.node_of(t, swarms.get(t).and_then(|s| s.as_ref().ok())) {
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
                            script: availability_command(&n.id, want),
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
        let s = NodeAvailability {
            title: "a".into(),
            inv: inv.clone(),
            targets: vec!["manager-1".into()],
            drain: true,
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
        let s = NodeAvailability { drain: false, ..s };
        assert_eq!(
            s.plan(&facts).hosts["manager-1"],
            Ok(Check::Ok("active".into()))
        );
    }
}
