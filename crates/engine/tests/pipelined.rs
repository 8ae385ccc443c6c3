//! Tier 1: the `pipelined` strategy through the runner, against fake hosts whose change commands
//! take seconds of tokio's paused clock: when each change finished tells which steps overlapped,
//! and the events tell that the output still reads in playbook order. `linear` is unchanged.

use provision_engine::event::{Event, MemorySink, Recap};
use provision_engine::facts::answer_batch;
use provision_engine::pipeline::{Schedule, Strategy};
use provision_engine::rollout::Rollout;
use provision_engine::step::{
    Action, Change, Check, Configured, Facts, HostStep, PerHost, Step, StepError,
};
use provision_engine::{RunOptions, Runner};
use provision_transport::Output;
use provision_transport::fake::{FakeConnector, FakeTransport};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// `touch NAME` unless done; `waits` are the hosts it needs finished besides its own.
struct Touch {
    name: &'static str,
    waits: Vec<String>,
}

impl HostStep for Touch {
    fn gather(&self) -> Option<String> {
        Some(format!("test -e {}", self.name))
    }
    fn check(&self, _facts: &Facts) -> Result<Check, StepError> {
        Ok(Check::Change(vec![Change::new(
            format!("touch {}", self.name),
            vec![Action::run(format!("touch {}", self.name))],
        )]))
    }
    fn waits_for_hosts(&self) -> Vec<String> {
        self.waits.clone()
    }
}

fn step(name: &'static str, hosts: &[&str]) -> Box<dyn Step> {
    waiting(name, hosts, &[])
}

fn waiting(name: &'static str, hosts: &[&str], waits: &[&str]) -> Box<dyn Step> {
    Box::new(PerHost {
        title: name.into(),
        hosts: hosts
            .iter()
            .map(|h| {
                let t = Touch {
                    name,
                    waits: waits.iter().map(|w| w.to_string()).collect(),
                };
                (h.to_string(), Box::new(t) as Box<dyn HostStep>)
            })
            .collect(),
    })
}

type Journal = Arc<Mutex<Vec<String>>>;

/// Hosts h1..hn; the change of step NAME takes the seconds `took` gives it (default 1);
/// `failing` hosts fail their changes at once.
struct Hosts {
    fakes: Vec<Arc<FakeTransport>>,
    journal: Journal,
}

fn hosts(n: usize, took: &[(&str, u64)], failing: &[&str]) -> Hosts {
    let journal: Journal = Arc::default();
    let t0 = Instant::now();
    let fakes = (1..=n)
        .map(|i| {
            let name = format!("h{i}");
            let fake = Arc::new(FakeTransport::new(name.clone()));
            fake.respond_with("<<pv-", |script| {
                Output::ok(answer_batch(script, |_| ("no".into(), 0)))
            });
            let (j, h) = (journal.clone(), name.clone());
            let fails = failing.contains(&name.as_str());
            fake.respond_with("touch ", move |script| {
                j.lock()
                    .unwrap()
                    .push(format!("{h} {script} @{}", t0.elapsed().as_secs()));
                if fails {
                    Output::failed(1, "touch: cannot touch")
                } else {
                    Output::ok("")
                }
            });
            for (step, secs) in took {
                if !fails {
                    fake.delay(format!("touch {step}"), Duration::from_secs(*secs));
                }
            }
            fake.delay("touch ", Duration::from_secs(if fails { 0 } else { 1 }));
            fake
        })
        .collect();
    Hosts { fakes, journal }
}

impl Hosts {
    async fn run(
        &self,
        steps: &[Box<dyn Step>],
        schedule: Schedule,
        opts: RunOptions,
        cancel_at: Option<u64>,
    ) -> (Recap, Arc<MemorySink>) {
        let (connector, targets) = FakeConnector::of(&self.fakes);
        let sink = Arc::new(MemorySink::default());
        let (tx, rx) = tokio::sync::watch::channel(false);
        if let Some(secs) = cancel_at {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                let _ = tx.send(true);
            });
        }
        let runner = Runner::new(connector, targets, opts, sink.clone())
            .with_schedule(schedule)
            .with_cancel(rx);
        (runner.run(steps).await, sink)
    }

    /// "HOST touch NAME @SECONDS", in the order the changes finished.
    fn changes(&self) -> Vec<String> {
        self.journal.lock().unwrap().clone()
    }
}

fn pipelined() -> Schedule {
    Schedule {
        strategy: Strategy::Pipelined,
        after: Vec::new(),
    }
}

/// The events but the run log's, shortly: "start NAME", "NAME HOST STATUS", "interrupted".
fn events(sink: &MemorySink) -> Vec<String> {
    sink.events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { title, .. } => Some(format!("start {title}")),
            Event::HostResult {
                step, host, status, ..
            } => Some(format!("{step} {host} {status:?}")),
            Event::Interrupted => Some("interrupted".into()),
            _ => None,
        })
        .collect()
}

/// A quick step on h2 after a slow one on h1: pipelined, it is done at 1 s, while the slow one
/// runs (10 s), yet its start and result come out after the slow step's.
#[tokio::test(start_paused = true)]
async fn a_step_on_other_hosts_overlaps_and_is_reported_in_playbook_order() {
    let h = hosts(2, &[("slow", 10)], &[]);
    let steps = [step("slow", &["h1"]), step("quick", &["h2"])];
    let (recap, sink) = h
        .run(&steps, pipelined(), RunOptions::default(), None)
        .await;
    assert!(recap.is_success());
    assert_eq!(h.changes(), ["h2 touch quick @1", "h1 touch slow @10"]);
    assert_eq!(
        events(&sink),
        [
            "start slow",
            "slow h1 Changed",
            "start quick",
            "quick h2 Changed"
        ]
    );
    // The run log's lines are not held back: the quick command is logged first.
    let logged: Vec<String> = sink
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Command { command, .. } if command.as_str().starts_with("touch") => {
                Some(command.to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(logged, ["touch quick", "touch slow"]);
}

/// The same steps under `linear` (the default): the quick step starts when the slow one ended,
/// and the events are those a run always had, in that order.
#[tokio::test(start_paused = true)]
async fn linear_runs_one_step_after_the_other_as_before() {
    let h = hosts(2, &[("slow", 10)], &[]);
    let steps = [
        step("slow", &["h1"]),
        step("quick", &["h2"]),
        step("both", &["h1", "h2"]),
    ];
    let (recap, sink) = h
        .run(&steps, Schedule::default(), RunOptions::default(), None)
        .await;
    assert!(recap.is_success());
    let mut changes = h.changes();
    changes[2..].sort();
    assert_eq!(
        changes,
        [
            "h1 touch slow @10",
            "h2 touch quick @11",
            "h1 touch both @12",
            "h2 touch both @12"
        ]
    );
    let kinds: Vec<&str> = sink
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| match e {
            Event::RunStarted { .. } => "run",
            Event::StepStarted { .. } => "step",
            Event::HostResult { .. } => "result",
            Event::Command { .. } => "command",
            Event::RunFinished { .. } => "end",
            _ => "other",
        })
        .collect();
    // Each step: started, its facts read (logged), its change made (logged), its result.
    assert_eq!(
        kinds,
        [
            "run", "step", "command", "command", "result", "step", "command", "command", "result",
            "step", "command", "command", "command", "result", "command", "result", "end"
        ]
    );
    assert_eq!(
        events(&sink),
        [
            "start slow",
            "slow h1 Changed",
            "start quick",
            "quick h2 Changed",
            "start both",
            "both h1 Changed",
            "both h2 Changed"
        ]
    );
}

/// A step sharing a host with a slow one waits for it; one that waits for the slow step's host
/// (`waits_for_hosts`, an NFS mount needing the server) waits too; an independent one does not.
/// The last step on h1 waits for the mount as well: the mount waited for h1.
#[tokio::test(start_paused = true)]
async fn steps_sharing_or_waiting_for_a_host_wait() {
    let h = hosts(3, &[("server", 10)], &[]);
    let steps = [
        step("server", &["h1"]),
        waiting("mount", &["h2"], &["h1"]),
        step("other", &["h3"]),
        step("again", &["h1"]),
    ];
    let (recap, sink) = h
        .run(&steps, pipelined(), RunOptions::default(), None)
        .await;
    assert!(recap.is_success());
    let mut changes = h.changes();
    changes[1..].sort();
    assert_eq!(
        changes,
        [
            "h3 touch other @1",
            "h1 touch again @12",
            "h1 touch server @10",
            "h2 touch mount @11"
        ]
    );
    assert_eq!(
        events(&sink),
        [
            "start server",
            "server h1 Changed",
            "start mount",
            "mount h2 Changed",
            "start other",
            "other h3 Changed",
            "start again",
            "again h1 Changed"
        ]
    );
}

/// `after` makes a step wait for an earlier one on other hosts.
#[tokio::test(start_paused = true)]
async fn after_makes_a_step_wait_for_another_hosts_step() {
    let h = hosts(2, &[("init", 10)], &[]);
    let steps = [step("init", &["h1"]), step("join", &["h2"])];
    let schedule = Schedule {
        strategy: Strategy::Pipelined,
        after: vec![vec![], vec![0]],
    };
    let (recap, _) = h.run(&steps, schedule, RunOptions::default(), None).await;
    assert!(recap.is_success());
    assert_eq!(h.changes(), ["h1 touch init @10", "h2 touch join @11"]);
}

/// A step `after` another host's step reads its facts when it starts, not ahead with its host's
/// earlier steps: what it waited for may change them.
#[tokio::test(start_paused = true)]
async fn a_step_after_another_hosts_step_reads_its_facts_when_it_starts() {
    let h = hosts(2, &[("init", 10)], &[]);
    let gathers: Journal = Arc::default();
    let (g, t0) = (gathers.clone(), Instant::now());
    h.fakes[1].respond_with("<<pv-", move |script| {
        g.lock().unwrap().push(format!(
            "{} step(s) @{}",
            script.matches("test -e").count(),
            t0.elapsed().as_secs()
        ));
        Output::ok(answer_batch(script, |_| ("no".into(), 0)))
    });
    let steps = [
        step("init", &["h1"]),
        step("prep", &["h2"]),
        step("join", &["h2"]),
        step("more", &["h2"]),
    ];
    let schedule = Schedule {
        strategy: Strategy::Pipelined,
        after: vec![vec![], vec![], vec![0], vec![]],
    };
    let (recap, _) = h.run(&steps, schedule, RunOptions::default(), None).await;
    assert!(recap.is_success());
    // prep reads its own facts and more's (join's are left for join), at 0 s; prep changes h2,
    // so join, at 10 s, and more read again.
    assert_eq!(
        gathers.lock().unwrap().clone(),
        ["2 step(s) @0", "1 step(s) @10", "1 step(s) @11"]
    );
}

/// `forks` bounds the commands of every step running at once: with one fork, two independent
/// 10 s changes go one after the other.
#[tokio::test(start_paused = true)]
async fn forks_bound_commands_across_overlapping_steps() {
    let h = hosts(2, &[("a", 10), ("b", 10)], &[]);
    let steps = [step("a", &["h1"]), step("b", &["h2"])];
    let opts = RunOptions {
        forks: 1,
        ..Default::default()
    };
    let (recap, _) = h.run(&steps, pipelined(), opts, None).await;
    assert!(recap.is_success());
    let mut at: Vec<String> = h
        .changes()
        .iter()
        .map(|l| l.rsplit('@').next().unwrap().to_string())
        .collect();
    at.sort();
    assert_eq!(at, ["10", "20"]);
}

/// Ctrl-C at 5 s: the two running steps finish, the one waiting for them never starts, and the
/// interruption is reported after their results.
#[tokio::test(start_paused = true)]
async fn after_ctrl_c_no_step_starts_and_running_ones_finish() {
    let h = hosts(2, &[("a", 10), ("b", 10)], &[]);
    let steps = [step("a", &["h1"]), step("b", &["h2"]), step("c", &["h2"])];
    let (recap, sink) = h
        .run(&steps, pipelined(), RunOptions::default(), Some(5))
        .await;
    assert_eq!(recap.changed(), 2);
    let mut changes = h.changes();
    changes.sort();
    assert_eq!(changes, ["h1 touch a @10", "h2 touch b @10"]);
    assert_eq!(
        events(&sink),
        [
            "start a",
            "a h1 Changed",
            "start b",
            "b h2 Changed",
            "interrupted"
        ]
    );
}

/// A step past its `max_fail_percentage` stops the run: a step already running elsewhere
/// finishes, no step starts after.
#[tokio::test(start_paused = true)]
async fn a_stopped_run_starts_no_step_but_lets_running_ones_finish() {
    let h = hosts(2, &[("b", 10)], &["h1"]);
    let strict = Box::new(Configured {
        rollout: Some(Rollout {
            max_fail_percentage: Some(0),
            ..Default::default()
        }),
        ..Configured::new(step("a", &["h1"]))
    });
    let steps: [Box<dyn Step>; 3] = [strict, step("b", &["h2"]), step("c", &["h2"])];
    let (recap, sink) = h
        .run(&steps, pipelined(), RunOptions::default(), None)
        .await;
    assert!(recap.stopped.is_some());
    assert_eq!(h.changes(), ["h1 touch a @0", "h2 touch b @10"]);
    assert_eq!(
        events(&sink),
        ["start a", "a h1 Failed", "start b", "b h2 Changed"]
    );
}
