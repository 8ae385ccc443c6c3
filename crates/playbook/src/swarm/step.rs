//! The frame every swarm step shares: it gathers the swarm facts on the managers (and on its
//! targets), redacts the join tokens they hold, reads THE swarm once and hands it to the
//! step's own planning. A swarm step is then only what it decides.

use crate::ctx::{ClusterCtx, ParamError};
use crate::steps::swarm_facts::{self, Swarm};
use provision_engine::inventory::{Host, Inventory, Role};
use provision_engine::step::{Facts, Step, StepPlan};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a swarm step decides from THE swarm.
pub trait SwarmPlanner: Send + Sync {
    fn plan(&self, on: &On<'_>) -> StepPlan;

    /// A fact command run on a host after the swarm facts (a stack's state): its output
    /// follows theirs, and [`SwarmPlanner::swarm_part`] takes it off again.
    fn more_facts(&self, _host: &str) -> Option<String> {
        None
    }

    /// The swarm facts in a host's output, without what [`SwarmPlanner::more_facts`] added.
    fn swarm_part(&self, stdout: &str) -> String {
        stdout.to_string()
    }

    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Hosts whose earlier steps it needs besides the managers it reads (see
    /// `Step::waits_for_hosts`). Default: none.
    fn waits_for_hosts(&self, _inv: &Inventory) -> Vec<String> {
        Vec::new()
    }
}

/// What a planner reads: the inventory, its targets, every host's facts as gathered and THE
/// swarm read from them.
pub struct On<'a> {
    pub inv: &'a Inventory,
    pub targets: &'a [String],
    pub facts: &'a BTreeMap<String, Facts>,
    pub swarm: Swarm,
}

impl<'a> On<'a> {
    /// Reads the swarm from facts that hold nothing else.
    pub fn read(
        inv: &'a Inventory,
        targets: &'a [String],
        facts: &'a BTreeMap<String, Facts>,
    ) -> Self {
        On {
            inv,
            targets,
            facts,
            swarm: Swarm::read(inv, facts),
        }
    }

    /// The targets whose facts were gathered: the hosts a plan speaks for.
    pub fn reachable_targets(&self) -> impl Iterator<Item = &'a String> + '_ {
        self.targets.iter().filter(|t| self.facts.contains_key(*t))
    }

    /// The first manager of the inventory: where manager-side commands are planned while
    /// the swarm does not exist yet (only under --check).
    pub fn first_manager(&self) -> String {
        self.inv
            .managers()
            .next()
            .map(|h| h.name.clone())
            .unwrap_or_default()
    }
}

/// The selected hosts of a swarm step's entry that are managers, in inventory order.
pub fn selected_managers(ctx: &ClusterCtx<'_>) -> Vec<String> {
    selected(ctx, |h| h.has_role(Role::Manager))
}

/// The selected hosts that are swarm nodes (managers and workers), in inventory order.
pub fn selected_nodes(ctx: &ClusterCtx<'_>) -> Vec<String> {
    selected(ctx, Host::is_swarm_node)
}

fn selected(ctx: &ClusterCtx<'_>, keep: impl Fn(&Host) -> bool) -> Vec<String> {
    ctx.hosts
        .iter()
        .filter(|h| keep(h))
        .map(|h| h.name.clone())
        .collect()
}

/// Refuses a target without the private address the swarm advertises (`what` names the
/// kind of host in the error).
pub fn need_private_ips(
    ctx: &ClusterCtx<'_>,
    targets: &[String],
    what: &str,
) -> Result<(), ParamError> {
    match targets.iter().find(|t| {
        ctx.inventory
            .host(t)
            .is_some_and(|h| h.private_ip.is_none())
    }) {
        Some(t) => Err(ParamError::new(
            None,
            format!("{what} `{t}` has no private_ip to advertise"),
        )
        .help("add private_ip = \"10.0.0.x\" to the host in the inventory")),
        None => Ok(()),
    }
}

/// A swarm step: the frame around a [`SwarmPlanner`].
pub struct SwarmStep<P> {
    pub title: String,
    pub inv: Inventory,
    pub targets: Vec<String>,
    pub planner: P,
}

impl<P: SwarmPlanner + 'static> SwarmStep<P> {
    pub fn boxed(ctx: &ClusterCtx<'_>, targets: Vec<String>, planner: P) -> Box<dyn Step> {
        Box::new(SwarmStep {
            title: ctx.title.to_string(),
            inv: ctx.inventory.clone(),
            targets,
            planner,
        })
    }
}

impl<P: SwarmPlanner> Step for SwarmStep<P> {
    fn title(&self) -> &str {
        &self.title
    }

    fn targets(&self) -> Vec<String> {
        self.targets.clone()
    }

    /// The managers tell which swarm is THE swarm and hold the tokens, even when --limit
    /// lets only a new node change.
    fn fact_hosts(&self) -> Vec<String> {
        self.inv.managers().map(|h| h.name.clone()).collect()
    }

    fn waits_for_hosts(&self) -> Vec<String> {
        self.planner.waits_for_hosts(&self.inv)
    }

    fn gather(&self, host: &str) -> Option<String> {
        let swarm = swarm_facts::gather_for(&self.inv, host);
        Some(match self.planner.more_facts(host) {
            Some(more) => format!("{swarm}; {more}"),
            None => swarm,
        })
    }

    fn secret_values(&self, _host: &str, facts: &Facts) -> Vec<String> {
        swarm_facts::tokens_in(&Facts::new(self.planner.swarm_part(&facts.stdout)))
    }

    fn timeout(&self) -> Option<Duration> {
        self.planner.timeout()
    }

    fn plan(&self, facts: &BTreeMap<String, Facts>) -> StepPlan {
        let swarm_only: BTreeMap<String, Facts> = facts
            .iter()
            .map(|(h, f)| {
                let stdout = self.planner.swarm_part(&f.stdout);
                (
                    h.clone(),
                    Facts {
                        stdout,
                        ..f.clone()
                    },
                )
            })
            .collect();
        self.planner.plan(&On {
            inv: &self.inv,
            targets: &self.targets,
            facts,
            swarm: Swarm::read(&self.inv, &swarm_only),
        })
    }
}
