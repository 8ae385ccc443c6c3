//! Which earlier steps each step of a run waits for (`strategy`, `after`): a pure decision over
//! the steps' hosts, made once before the run; the runner starts a step when all of them
//! finished. Under `linear` (the default, Ansible's) a step waits for every earlier one; under
//! `pipelined` only for the earlier steps it shares a host with, those its `after` names, and
//! `flush_handlers` steps, which wait for and hold back everything.

use std::collections::BTreeSet;

/// How a playbook's steps wait for each other (the playbook's top-level `strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Every step waits until the previous one finished on all its hosts (Ansible's `linear`).
    #[default]
    Linear,
    /// A step waits only for the earlier steps it shares a host with, or names in `after`.
    Pipelined,
}

impl Strategy {
    /// The names a playbook writes, in the order help lists them.
    pub const NAMES: &'static [&'static str] = &["linear", "pipelined"];

    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "linear" => Some(Strategy::Linear),
            "pipelined" => Some(Strategy::Pipelined),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Linear => "linear",
            Strategy::Pipelined => "pipelined",
        }
    }
}

/// What the runner orders a run's steps by, besides their hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    pub strategy: Strategy,
    /// For each step of the run (same order), the indices of the earlier steps its `after`
    /// names (a looped entry's every item). Missing entries: none.
    pub after: Vec<Vec<usize>>,
}

impl Schedule {
    /// The same schedule with one more step run before all the others (the `facts` report a
    /// run puts first when templates read host facts): every index moves up by one.
    pub fn behind_a_first_step(self) -> Schedule {
        let shifted = self
            .after
            .into_iter()
            .map(|a| a.into_iter().map(|i| i + 1).collect());
        Schedule {
            strategy: self.strategy,
            after: std::iter::once(Vec::new()).chain(shifted).collect(),
        }
    }
}

/// One step as the ordering sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepDeps {
    /// Every host the step touches or needs finished: its targets, the hosts it runs on for
    /// them (`on`), the hosts whose facts it reads, and the hosts it waits for
    /// (`Step::waits_for_hosts`).
    pub hosts: BTreeSet<String>,
    /// A `flush_handlers` step: it waits for every earlier step and every later one for it.
    pub barrier: bool,
    /// Indices of earlier steps it waits for whatever their hosts (`after`).
    pub after: Vec<usize>,
}

impl StepDeps {
    /// A step as the ordering sees it; `after`: the indices of the earlier steps it names.
    pub fn of(step: &dyn crate::step::Step, after: Vec<usize>) -> StepDeps {
        let targets = step.targets();
        let delegates: Vec<String> = targets
            .iter()
            .filter_map(|h| step.delegate(h).map(str::to_string))
            .collect();
        StepDeps {
            hosts: targets
                .into_iter()
                .chain(delegates)
                .chain(step.fact_hosts())
                .chain(step.waits_for_hosts())
                .collect(),
            barrier: step.flushes_handlers(),
            after,
        }
    }
}

/// For each step, the indices of the earlier steps it waits for, ascending. Only earlier steps
/// are ever named, so the graph has no cycle.
pub fn dependencies(strategy: Strategy, steps: &[StepDeps]) -> Vec<Vec<usize>> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (0..i)
                .filter(|&j| match strategy {
                    Strategy::Linear => true,
                    Strategy::Pipelined => {
                        let earlier = &steps[j];
                        s.barrier
                            || earlier.barrier
                            || s.after.contains(&j)
                            || !s.hosts.is_disjoint(&earlier.hosts)
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(hosts: &[&str]) -> StepDeps {
        StepDeps {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..Default::default()
        }
    }

    const NONE: Vec<usize> = Vec::new();

    fn after(mut s: StepDeps, earlier: &[usize]) -> StepDeps {
        s.after = earlier.to_vec();
        s
    }

    const BARRIER: StepDeps = StepDeps {
        hosts: BTreeSet::new(),
        barrier: true,
        after: Vec::new(),
    };

    /// Steps on disjoint hosts wait for nothing; a step waits for each earlier one it shares a
    /// host with (a host it reads or waits for counts like one it runs on).
    #[test]
    fn pipelined_steps_wait_only_for_earlier_steps_sharing_a_host() {
        let steps = [
            on(&["a", "b"]),      // 0: hostname on the nodes
            on(&["a"]),           // 1: docker on the node
            on(&["s"]),           // 2: nfs server on storage
            on(&["a", "s"]),      // 3: the mount: runs on a, waits for the server on s
            on(&["lb"]),          // 4: the load balancer
            on(&["a", "b", "s"]), // 5: everything
        ];
        assert_eq!(
            dependencies(Strategy::Pipelined, &steps),
            vec![NONE, vec![0], NONE, vec![0, 1, 2], NONE, vec![0, 1, 2, 3]]
        );
    }

    /// Without a cross-host need, two steps on different hosts overlap; the need (the host it
    /// waits for added to its hosts) makes it wait.
    #[test]
    fn a_cross_host_need_is_what_makes_a_step_wait() {
        let without = [on(&["server"]), on(&["client"])];
        assert_eq!(
            dependencies(Strategy::Pipelined, &without),
            vec![NONE, NONE]
        );
        let with = [on(&["server"]), on(&["client", "server"])];
        assert_eq!(
            dependencies(Strategy::Pipelined, &with),
            vec![NONE, vec![0]]
        );
    }

    /// `after` makes a step wait for an earlier one whatever their hosts.
    #[test]
    fn after_waits_for_the_named_earlier_steps() {
        let steps = [on(&["a"]), on(&["b"]), after(on(&["c"]), &[0])];
        assert_eq!(
            dependencies(Strategy::Pipelined, &steps),
            vec![NONE, NONE, vec![0]]
        );
        // A later index in `after` (the parser refuses one) is never a dependency: no cycle.
        let steps = [after(on(&["a"]), &[1]), on(&["b"])];
        assert_eq!(dependencies(Strategy::Pipelined, &steps), vec![NONE, NONE]);
    }

    /// A `flush_handlers` step waits for everything before it, and everything after waits for it.
    #[test]
    fn flush_handlers_is_a_barrier() {
        let steps = [on(&["a"]), on(&["b"]), BARRIER, on(&["c"]), on(&["d"])];
        assert_eq!(
            dependencies(Strategy::Pipelined, &steps),
            vec![NONE, NONE, vec![0, 1], vec![2], vec![2]]
        );
    }

    /// Linear: every step waits for every earlier one, whatever its hosts.
    #[test]
    fn linear_waits_for_every_earlier_step() {
        let steps = [on(&["a"]), on(&["b"]), on(&["c"])];
        assert_eq!(
            dependencies(Strategy::Linear, &steps),
            vec![NONE, vec![0], vec![0, 1]]
        );
    }

    #[test]
    fn strategy_names_round_trip() {
        for n in Strategy::NAMES {
            assert_eq!(Strategy::parse(n).unwrap().name(), *n);
        }
        assert_eq!(Strategy::parse("free"), None);
        assert_eq!(Strategy::default(), Strategy::Linear);
    }

    #[test]
    fn a_first_step_moves_every_after_up_by_one() {
        let s = Schedule {
            strategy: Strategy::Pipelined,
            after: vec![vec![], vec![0], vec![0, 1]],
        };
        assert_eq!(
            s.behind_a_first_step(),
            Schedule {
                strategy: Strategy::Pipelined,
                after: vec![vec![], vec![], vec![1], vec![1, 2]],
            }
        );
    }

    /// A step that runs on another host for its targets (`on`) touches that host: it waits for
    /// an earlier step there, and a later step there waits for it.
    #[test]
    fn a_delegated_step_counts_its_delegate_among_its_hosts() {
        struct Nothing;
        impl crate::step::HostStep for Nothing {
            fn gather(&self) -> Option<String> {
                None
            }
            fn check(
                &self,
                _: &crate::step::Facts,
            ) -> Result<crate::step::Check, crate::step::StepError> {
                Ok(crate::step::Check::Ok(String::new()))
            }
        }
        let mut c = crate::step::Configured::new(Box::new(crate::step::PerHost {
            title: "drain".into(),
            hosts: vec![("web-1".into(), Box::new(Nothing))],
        }));
        c.on = [("web-1".to_string(), "lb-1".to_string())].into();
        let d = StepDeps::of(&c, vec![]);
        assert_eq!(d.hosts, ["lb-1".to_string(), "web-1".to_string()].into());
        let steps = [on(&["lb-1"]), d, on(&["lb-1"]), on(&["db-1"])];
        assert_eq!(
            dependencies(Strategy::Pipelined, &steps),
            vec![NONE, vec![0], vec![0, 1], NONE]
        );
    }
}
