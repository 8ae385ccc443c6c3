//! Tier 1: the heartbeat of long steps and the timing of every step, through the runner, against
//! fake hosts whose commands take seconds of tokio's paused clock: how many heartbeats a step
//! gets, which hosts and steps they name, the last line they show (redacted, whole lines only),
//! and the timings the run ends with.

use provision_engine::event::{Busy, Event, MemorySink, Redactor, StepTiming};
use provision_engine::facts::answer_batch;
use provision_engine::pipeline::{Schedule, Strategy};
use provision_engine::step::{Action, Change, Check, Facts, HostStep, PerHost, Step, StepError};
use provision_engine::{RunOptions, Runner};
use provision_transport::Output;
use provision_transport::fake::{FakeConnector, FakeTransport};
use std::sync::Arc;
use std::time::Duration;

/// `work NAME` on each of its hosts, always.
struct Work(&'static str);

impl HostStep for Work {
    fn gather(&self) -> Option<String> {
        Some(format!("test -e {}", self.0))
    }
    fn check(&self, _facts: &Facts) -> Result<Check, StepError> {
        Ok(Check::Change(vec![Change::new(
            format!("work {}", self.0),
            vec![Action::run(format!("work {}", self.0))],
        )]))
    }
}

fn step(name: &'static str, hosts: &[&str]) -> Box<dyn Step> {
    Box::new(PerHost {
        title: name.into(),
        hosts: hosts
            .iter()
            .map(|h| (h.to_string(), Box::new(Work(name)) as Box<dyn HostStep>))
            .collect(),
    })
}

/// A host whose facts come at once and whose `work NAME` takes the seconds given.
fn host(name: &str, took: &[(&str, u64)]) -> Arc<FakeTransport> {
    let fake = Arc::new(FakeTransport::new(name));
    fake.respond_with("<<pv-", |script| {
        Output::ok(answer_batch(script, |_| ("no".into(), 0)))
    });
    for (step, secs) in took {
        fake.delay(format!("work {step}"), Duration::from_secs(*secs));
    }
    fake
}

async fn run(
    fakes: &[Arc<FakeTransport>],
    steps: &[Box<dyn Step>],
    strategy: Strategy,
    opts: RunOptions,
    redactor: Redactor,
) -> (Arc<MemorySink>, Vec<StepTiming>) {
    let (connector, targets) = FakeConnector::of(fakes);
    let sink = Arc::new(MemorySink::default());
    let runner = Runner::new(connector, targets, opts, sink.clone())
        .with_schedule(Schedule {
            strategy,
            after: Vec::new(),
        })
        .with_redaction(redactor);
    assert!(runner.run(steps).await.is_success());
    let timings = runner.timings();
    (sink, timings)
}

/// The heartbeats, shortly: "STEP @SECONDS: HOST SECONDS [LAST LINE], ...".
fn beats(sink: &MemorySink) -> Vec<String> {
    sink.events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::StepRunning {
                step,
                seconds,
                busy,
                ..
            } => Some(format!(
                "{step} @{seconds}: {}",
                busy.iter()
                    .map(
                        |Busy {
                             host,
                             seconds,
                             last_line,
                         }| match last_line {
                            Some(l) => format!("{host} {seconds} [{l}]"),
                            None => format!("{host} {seconds}"),
                        }
                    )
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => None,
        })
        .collect()
}

/// A step whose command takes 25 s gets exactly two heartbeats (10 s, 20 s) naming its host;
/// one that takes 5 s gets none. The last line shown is the last whole line printed so far,
/// redacted: neither the secret on it nor the line still being printed shows.
#[tokio::test(start_paused = true)]
async fn a_long_step_beats_every_ten_seconds_with_its_busy_hosts() {
    let h1 = host("h1", &[("slow", 25), ("quick", 5)]);
    h1.prints_first(
        "work slow",
        "first\ntoken=s3cr3t-heartbeat-value\nhalf of s3cr3t-hea",
    );
    let steps = [step("slow", &["h1"]), step("quick", &["h1"])];
    let (sink, timings) = run(
        &[h1],
        &steps,
        Strategy::Linear,
        RunOptions::default(),
        Redactor::new(["s3cr3t-heartbeat-value"]),
    )
    .await;
    assert_eq!(
        beats(&sink),
        ["slow @10: h1 10 [token=***]", "slow @20: h1 20 [token=***]"]
    );
    let all = format!("{:?}", sink.events.lock().unwrap());
    assert!(!all.contains("s3cr3t-hea"), "{all}");
    // Each heartbeat comes while its step runs: after its start, before its result.
    let kinds: Vec<String> = sink
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { title, .. } => Some(format!("start {title}")),
            Event::StepRunning { step, .. } => Some(format!("beat {step}")),
            Event::HostResult { step, .. } => Some(format!("result {step}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "start slow",
            "beat slow",
            "beat slow",
            "result slow",
            "start quick",
            "result quick"
        ]
    );
    let json = serde_json::to_string(
        sink.events
            .lock()
            .unwrap()
            .iter()
            .find(|e| matches!(e, Event::StepRunning { .. }))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        json,
        r#"{"event":"step_running","index":0,"step":"slow","seconds":10,"busy":[{"host":"h1","seconds":10,"last_line":"token=***"}]}"#
    );
    // The timings: each step's wall time and slowest host.
    let shown: Vec<(usize, String, u64, String, u64)> = timings
        .iter()
        .map(|t| {
            (
                t.index,
                t.step.to_string(),
                t.duration.as_secs(),
                t.slowest_host.to_string(),
                t.slowest_host_duration.as_secs(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            (0, "slow".into(), 25, "h1".into(), 25),
            (1, "quick".into(), 5, "h1".into(), 5)
        ]
    );
    let finished = sink.events.lock().unwrap().last().cloned().unwrap();
    let Event::RunFinished { timings: sent, .. } = finished else {
        panic!("the run ends with run_finished")
    };
    assert_eq!(sent, timings);
}

/// Under `pipelined`, two steps running at once on different hosts each have their heartbeat,
/// naming the step and its host; they are not held back behind the earlier step.
#[tokio::test(start_paused = true)]
async fn overlapping_steps_each_beat() {
    let h1 = host("h1", &[("a", 25)]);
    let h2 = host("h2", &[("b", 15)]);
    let steps = [step("a", &["h1"]), step("b", &["h2"])];
    let (sink, timings) = run(
        &[h1, h2],
        &steps,
        Strategy::Pipelined,
        RunOptions::default(),
        Redactor::empty(),
    )
    .await;
    let mut seen = beats(&sink);
    seen[..2].sort();
    assert_eq!(seen, ["a @10: h1 10", "b @10: h2 10", "a @20: h1 20"]);
    // Step b's heartbeat came out before its start (held back until a finished).
    let kinds: Vec<String> = sink
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { title, .. } => Some(format!("start {title}")),
            Event::StepRunning { step, .. } => Some(format!("beat {step}")),
            _ => None,
        })
        .collect();
    assert_eq!(kinds[kinds.len() - 1], "start b", "{kinds:?}");
    let walls: Vec<u64> = timings.iter().map(|t| t.duration.as_secs()).collect();
    assert_eq!(walls, [25, 15]);
}

/// Only the hosts still busy are named; the slowest host of a step is the one whose result
/// came last; the interval is a run option.
#[tokio::test(start_paused = true)]
async fn a_heartbeat_names_only_the_hosts_still_busy() {
    let h1 = host("h1", &[("both", 4)]);
    let h2 = host("h2", &[("both", 7)]);
    let steps = [step("both", &["h1", "h2"])];
    let opts = RunOptions {
        heartbeat: Duration::from_secs(3),
        ..Default::default()
    };
    let (sink, timings) = run(&[h1, h2], &steps, Strategy::Linear, opts, Redactor::empty()).await;
    assert_eq!(beats(&sink), ["both @3: h1 3, h2 3", "both @6: h2 6"]);
    assert_eq!(
        (
            timings[0].slowest_host.to_string(),
            timings[0].duration.as_secs()
        ),
        ("h2".to_string(), 7)
    );
    let quiet = RunOptions {
        heartbeat: Duration::ZERO,
        ..Default::default()
    };
    let (sink, _) = run(
        &[host("h1", &[("both", 30)])],
        &[step("both", &["h1"])],
        Strategy::Linear,
        quiet,
        Redactor::empty(),
    )
    .await;
    assert_eq!(beats(&sink), Vec::<String>::new(), "zero: no heartbeat");
}
