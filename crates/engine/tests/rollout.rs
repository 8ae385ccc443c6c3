//! Tier 1: rollouts (`serial`, `max_fail_percentage`, `run_once`, and a plan's one-at-a-time
//! changes) through the runner, against fake hosts whose change command takes 10 s of tokio's
//! paused clock: when each host's change finished tells exactly which ran together.

use provision_engine::event::{MemorySink, Recap};
use provision_engine::facts::answer_batch;
use provision_engine::rollout::{BatchSize, Rollout, Serial};
use provision_engine::step::{
    Action, Change, Check, Configured, Facts, HostStep, PerHost, Step, StepError,
};
use provision_engine::{HostStatus, RunOptions, Runner};
use provision_transport::Output;
use provision_transport::fake::{FakeConnector, FakeTransport};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const TOOK: Duration = Duration::from_secs(10);

/// A toy step: `touch NAME` unless the host says it is done; `rolling` marks its change as one
/// to make one host at a time.
struct Touch {
    name: &'static str,
    rolling: bool,
}

impl HostStep for Touch {
    fn gather(&self) -> Option<String> {
        Some(format!("test -e {}", self.name))
    }
    fn check(&self, facts: &Facts) -> Result<Check, StepError> {
        if facts.stdout.trim() == "yes" {
            return Ok(Check::Ok("done".into()));
        }
        let c = Change::new(
            format!("touch {}", self.name),
            vec![Action::run(format!("touch {}", self.name))],
        );
        Ok(Check::Change(vec![if self.rolling {
            c.one_at_a_time()
        } else {
            c
        }]))
    }
}

fn step(name: &'static str, hosts: &[&str], rolling: bool) -> Box<dyn Step> {
    Box::new(PerHost {
        title: name.into(),
        hosts: hosts
            .iter()
            .map(|h| {
                (
                    h.to_string(),
                    Box::new(Touch { name, rolling }) as Box<dyn HostStep>,
                )
            })
            .collect(),
    })
}

fn rolled(step: Box<dyn Step>, rollout: Rollout) -> Box<dyn Step> {
    Box::new(Configured {
        rollout: Some(rollout),
        ..Configured::new(step)
    })
}

/// What happened on every host, in order: "HOST gather" when facts were read, "HOST touch NAME
/// @SECONDS" when a change finished (seconds since the run started).
type Journal = Arc<Mutex<Vec<String>>>;

struct Hosts {
    fakes: Vec<Arc<FakeTransport>>,
    journal: Journal,
}

/// `n` hosts h1..hn; `failing` hosts fail their change commands.
fn hosts(n: usize, failing: &[&str]) -> Hosts {
    let journal: Journal = Arc::default();
    let t0 = Instant::now();
    let fakes = (1..=n)
        .map(|i| {
            let name = format!("h{i}");
            let fake = Arc::new(FakeTransport::new(name.clone()));
            let (j, h) = (journal.clone(), name.clone());
            fake.respond_with("<<pv-", move |script| {
                j.lock().unwrap().push(format!("{h} gather"));
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
            fake.delay("touch ", TOOK);
            fake
        })
        .collect();
    Hosts { fakes, journal }
}

impl Hosts {
    async fn run(&self, steps: &[Box<dyn Step>], opts: RunOptions) -> (Recap, Arc<MemorySink>) {
        let (connector, targets) = FakeConnector::of(&self.fakes);
        let sink = Arc::new(MemorySink::default());
        let runner = Runner::new(connector, targets, opts, sink.clone());
        (runner.run(steps).await, sink)
    }

    /// The changes that finished, "HOST touch NAME @SECONDS", in order.
    fn changes(&self) -> Vec<String> {
        let j = self.journal.lock().unwrap();
        j.iter().filter(|l| l.contains("touch")).cloned().collect()
    }

    fn journal(&self) -> Vec<String> {
        self.journal.lock().unwrap().clone()
    }
}

const ALL: &[&str] = &["h1", "h2", "h3", "h4", "h5"];

#[tokio::test(start_paused = true)]
async fn without_serial_every_host_changes_at_once() {
    let h = hosts(5, &[]);
    let (recap, _) = h.run(&[step("a", ALL, false)], RunOptions::default()).await;
    assert!(recap.is_success());
    let mut changes = h.changes();
    changes.sort();
    assert_eq!(
        changes,
        [
            "h1 touch a @10",
            "h2 touch a @10",
            "h3 touch a @10",
            "h4 touch a @10",
            "h5 touch a @10"
        ]
    );
}

/// serial = [1, 2]: h1 alone, then h2 and h3 together, then h4 and h5 (the last size repeats),
/// each batch's facts read only once the previous batch finished.
#[tokio::test(start_paused = true)]
async fn serial_changes_batch_after_batch_in_inventory_order() {
    let h = hosts(5, &[]);
    let serial = Rollout {
        serial: Some(Serial(vec![BatchSize::Hosts(1), BatchSize::Hosts(2)])),
        ..Default::default()
    };
    let (recap, sink) = h
        .run(
            &[rolled(step("a", ALL, false), serial)],
            RunOptions::default(),
        )
        .await;
    assert!(recap.is_success());
    assert_eq!(recap.changed(), 5);
    let at = |host: &str| {
        h.changes()
            .iter()
            .find(|l| l.starts_with(&format!("{host} ")))
            .unwrap()
            .rsplit('@')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        ALL.iter().map(|x| at(x)).collect::<Vec<_>>(),
        ["10", "20", "20", "30", "30"]
    );
    let j = h.journal();
    let pos = |line: &str| j.iter().position(|l| l.starts_with(line)).unwrap();
    assert!(pos("h1 touch") < pos("h2 gather"), "{j:?}");
    assert!(
        pos("h3 touch") < pos("h4 gather") && pos("h2 touch") < pos("h5 gather"),
        "{j:?}"
    );
    // One step, announced once, with a result per host.
    assert_eq!(sink.results().len(), 5);
}

/// A change the plan makes one host at a time (a restart of a running daemon) goes host after
/// host; the same change without the mark goes everywhere at once (above).
#[tokio::test(start_paused = true)]
async fn a_plan_of_one_at_a_time_changes_goes_host_after_host() {
    let h = hosts(3, &[]);
    let (recap, _) = h
        .run(
            &[step("a", &["h1", "h2", "h3"], true)],
            RunOptions::default(),
        )
        .await;
    assert!(recap.is_success());
    assert_eq!(
        h.changes(),
        ["h1 touch a @10", "h2 touch a @20", "h3 touch a @30"]
    );
}

/// max_fail_percentage = 25 over 4 hosts, one at a time: h2 failing is 25% (goes on), h3 too is
/// 50%: the run stops there; h4 is never touched and step b never starts.
#[tokio::test(start_paused = true)]
async fn past_max_fail_percentage_the_run_stops_after_the_batch() {
    let four = &["h1", "h2", "h3", "h4"];
    let h = hosts(4, &["h2", "h3"]);
    let strict = Rollout {
        serial: Some(Serial::one()),
        max_fail_percentage: Some(25),
        run_once: false,
    };
    let steps = [
        rolled(step("a", four, false), strict),
        step("b", four, false),
    ];
    let (recap, sink) = h.run(&steps, RunOptions::default()).await;
    assert!(!recap.is_success());
    assert_eq!(
        recap.stopped.as_deref(),
        Some(
            "stopped after step `a`: 2 of its 4 host(s) failed (50%), more than max_fail_percentage = 25; no further batches or steps ran"
        )
    );
    assert_eq!(
        sink.results(),
        [
            ("a".into(), "h1".into(), HostStatus::Changed),
            ("a".into(), "h2".into(), HostStatus::Failed),
            ("a".into(), "h3".into(), HostStatus::Failed),
        ]
    );
    assert!(h.fakes[3].scripts().is_empty(), "h4 untouched");

    // Without a threshold (the default), failed hosts drop out and the others go on.
    let h = hosts(4, &["h2", "h3"]);
    let lenient = Rollout {
        serial: Some(Serial::one()),
        ..Default::default()
    };
    let steps = [
        rolled(step("a", four, false), lenient),
        step("b", four, false),
    ];
    let (recap, sink) = h.run(&steps, RunOptions::default()).await;
    assert_eq!(recap.stopped, None);
    assert_eq!(recap.failed_hosts(), 2);
    let b: Vec<String> = sink
        .results()
        .into_iter()
        .filter(|r| r.0 == "b")
        .map(|r| r.1)
        .collect();
    assert_eq!(b, ["h1", "h4"]);
}

/// Hosts that failed at an earlier step count against a later step's threshold, as a play's
/// failed hosts do in Ansible: 1 of 3 is more than 0%.
#[tokio::test(start_paused = true)]
async fn hosts_failed_earlier_count_against_the_threshold() {
    let h = hosts(3, &["h1"]);
    let zero = Rollout {
        max_fail_percentage: Some(0),
        ..Default::default()
    };
    let three = &["h1", "h2", "h3"];
    let steps = [
        step("a", &["h1"], false),
        rolled(step("b", three, false), zero),
        step("c", three, false),
    ];
    let (recap, sink) = h.run(&steps, RunOptions::default()).await;
    assert!(
        recap
            .stopped
            .as_deref()
            .unwrap()
            .starts_with("stopped after step `b`: 1 of its 3 host(s) failed (33%)")
    );
    assert!(sink.results().iter().all(|r| r.0 != "c"), "c never starts");
}

/// run_once: the first of the step's hosts that is within --limit and has not failed; one result.
#[tokio::test(start_paused = true)]
async fn run_once_changes_the_first_live_host_only() {
    let once = Rollout {
        run_once: true,
        ..Default::default()
    };
    let three = &["h1", "h2", "h3"];
    let h = hosts(3, &[]);
    let (recap, sink) = h
        .run(
            &[rolled(step("a", three, false), once.clone())],
            RunOptions::default(),
        )
        .await;
    assert!(recap.is_success());
    assert_eq!(
        sink.results(),
        [("a".into(), "h1".into(), HostStatus::Changed)]
    );
    assert_eq!(h.changes(), ["h1 touch a @10"]);
    assert!(h.fakes[1].scripts().is_empty() && h.fakes[2].scripts().is_empty());

    let h = hosts(3, &[]);
    let opts = RunOptions {
        limit: Some(["h2".to_string(), "h3".to_string()].into()),
        ..RunOptions::default()
    };
    let (_, sink) = h
        .run(&[rolled(step("a", three, false), once.clone())], opts)
        .await;
    assert_eq!(
        sink.results(),
        [("a".into(), "h2".into(), HostStatus::Changed)]
    );

    // h1 failed at step "z": the next live host runs it.
    let h = hosts(3, &["h1"]);
    let (_, sink) = h
        .run(
            &[
                step("z", &["h1"], false),
                rolled(step("a", three, false), once),
            ],
            RunOptions::default(),
        )
        .await;
    assert_eq!(
        sink.results(),
        [
            ("z".into(), "h1".into(), HostStatus::Failed),
            ("a".into(), "h2".into(), HostStatus::Changed)
        ]
    );
}
