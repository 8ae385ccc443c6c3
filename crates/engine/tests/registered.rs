//! Tier 1: `register`, a `when` over registered results and retries in the runner, against the
//! recording fake transport.

use minijinja::Value;
use provision_engine::event::{MemorySink, Recap, Redactor};
use provision_engine::registered::{AtRun, Retry};
use provision_engine::step::{
    Action, Change, Check, Configured, Facts, HostStep, PerHost, Step, StepError,
};
use provision_engine::{Event, HostStatus, RunOptions, Runner};
use provision_transport::fake::{FakeConnector, FakeTransport};
use provision_transport::{Output, Target};
use std::sync::Arc;
use std::time::Duration;

/// A command step without guards: runs its script every time.
struct Run(&'static str);

impl HostStep for Run {
    fn gather(&self) -> Option<String> {
        None
    }
    fn check(&self, _: &Facts) -> Result<Check, StepError> {
        Ok(Check::Change(vec![Change::new(
            format!("run `{}`", self.0),
            vec![Action::run(self.0)],
        )]))
    }
}

struct Spec {
    register: Option<&'static str>,
    when: Option<&'static str>,
    retry: Option<Retry>,
}

const PLAIN: Spec = Spec {
    register: None,
    when: None,
    retry: None,
};

fn step(title: &str, script: &'static str, hosts: &[&str], spec: Spec) -> Box<dyn Step> {
    let inner = Box::new(PerHost {
        title: title.into(),
        hosts: hosts
            .iter()
            .map(|h| (h.to_string(), Box::new(Run(script)) as Box<dyn HostStep>))
            .collect(),
    });
    let contexts = hosts
        .iter()
        .map(|h| {
            let ctx = Value::from(minijinja::value::Serde(
                serde_json::json!({"vars": {"wanted": "absent"}, "host": {"name": h}}),
            ));
            (h.to_string(), ctx)
        })
        .collect();
    Box::new(Configured {
        at: Some(AtRun {
            register: spec.register.map(str::to_string),
            when: spec.when.map(str::to_string),
            retry: spec.retry,
            contexts,
        }),
        ..Configured::new(inner)
    })
}

fn retry(retries: u32, until: Option<&str>) -> Option<Retry> {
    Some(Retry {
        retries,
        delay: Duration::ZERO,
        until: until.map(str::to_string),
    })
}

async fn run(
    hosts: &[&Arc<FakeTransport>],
    steps: &[Box<dyn Step>],
    opts: RunOptions,
    redactor: Redactor,
) -> (Recap, Arc<MemorySink>) {
    let connector = Arc::new(FakeConnector::default());
    let targets: Vec<Target> = hosts
        .iter()
        .map(|h| {
            connector.add((*h).clone());
            Target {
                name: h.host().to_string(),
                ..Default::default()
            }
        })
        .collect();
    let sink = Arc::new(MemorySink::default());
    let runner = Runner::new(connector, targets, opts, sink.clone()).with_redaction(redactor);
    (runner.run(steps).await, sink)
}

use provision_transport::Transport;

fn failed(recap: &Recap) -> Vec<String> {
    recap
        .hosts
        .iter()
        .filter(|h| h.failed > 0)
        .map(|h| h.host.to_string())
        .collect()
}

fn ran(h: &FakeTransport, needle: &str) -> usize {
    h.scripts().iter().filter(|s| s.contains(needle)).count()
}

/// (host, retry, retries, reason) of every Retrying event.
fn retries(sink: &MemorySink) -> Vec<(String, u32, u32, String)> {
    sink.events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Retrying {
                host,
                retry,
                retries,
                reason,
                ..
            } => Some((host.to_string(), *retry, *retries, reason.to_string())),
            _ => None,
        })
        .collect()
}

fn result_of(sink: &MemorySink, step: &str, host: &str) -> Event {
    sink.events
        .lock()
        .unwrap()
        .iter()
        .find(|e| matches!(e, Event::HostResult { step: s, host: h, .. } if s.as_str() == step && h.as_str() == host))
        .cloned()
        .unwrap_or_else(|| panic!("no result of {step} on {host}"))
}

/// The probe prints what each host has; the fix runs only where it said "absent", and the
/// other host is reported skipped, saying why. A result read on a host that the probe did not
/// reach fails that host, naming it.
#[tokio::test]
async fn a_later_step_runs_where_the_registered_probe_said_so() {
    let (h1, h2, h3) = (
        Arc::new(FakeTransport::new("h1")),
        Arc::new(FakeTransport::new("h2")),
        Arc::new(FakeTransport::new("h3")),
    );
    h1.respond("probe-x", Output::ok("present\n"));
    h2.respond("probe-x", Output::ok("absent\n"));
    let steps = vec![
        step(
            "probe",
            "probe-x",
            &["h1", "h2"],
            Spec {
                register: Some("probe"),
                ..PLAIN
            },
        ),
        step(
            "fix",
            "fix-x",
            &["h1", "h2", "h3"],
            Spec {
                when: Some("probe.rc == 0 and probe.stdout == vars.wanted and probe.changed"),
                ..PLAIN
            },
        ),
    ];
    let (recap, sink) = run(
        &[&h1, &h2, &h3],
        &steps,
        RunOptions::default(),
        Redactor::empty(),
    )
    .await;
    assert_eq!(
        (ran(&h1, "fix-x"), ran(&h2, "fix-x"), ran(&h3, "fix-x")),
        (0, 1, 0)
    );
    let Event::HostResult {
        status, details, ..
    } = result_of(&sink, "fix", "h1")
    else {
        unreachable!()
    };
    assert_eq!(status, HostStatus::Skipped);
    assert_eq!(
        details[0].as_str(),
        "`when = probe.rc == 0 and probe.stdout == vars.wanted and probe.changed` is false"
    );
    let Event::HostResult {
        status, failure, ..
    } = result_of(&sink, "fix", "h3")
    else {
        unreachable!()
    };
    assert_eq!(status, HostStatus::Failed);
    assert_eq!(
        failure.unwrap().message.as_str(),
        "`when = probe.rc == 0 and probe.stdout == vars.wanted and probe.changed`: `probe` is not registered on this host (the step that registers it did not reach it)"
    );
    assert_eq!(failed(&recap), ["h3"]);
}

/// A registered result holds the exit status of a failed command, and its output redacted.
#[tokio::test]
async fn registered_output_is_redacted_and_a_failure_keeps_its_status() {
    let h1 = Arc::new(FakeTransport::new("h1"));
    h1.respond("show-token", Output::ok("token=s3cr3t-value-123\n"));
    let steps = vec![
        step(
            "show",
            "show-token",
            &["h1"],
            Spec {
                register: Some("shown"),
                ..PLAIN
            },
        ),
        // Runs only if the registered stdout holds the redaction mark and not the secret.
        step(
            "check",
            "after",
            &["h1"],
            Spec {
                when: Some(
                    "'s3cr3t' not in shown.stdout and shown.stdout is startingwith('token=')",
                ),
                ..PLAIN
            },
        ),
    ];
    let redactor = Redactor::new(["s3cr3t-value-123"]);
    let (recap, _) = run(&[&h1], &steps, RunOptions::default(), redactor).await;
    assert!(recap.is_success());
    assert_eq!(ran(&h1, "after"), 1);

    // Failed attempts register `failed` and the status: `until` reads them.
    let h1 = Arc::new(FakeTransport::new("h1"));
    h1.respond("exit-3", Output::failed(3, "bad"));
    let steps = vec![step(
        "three",
        "exit-3",
        &["h1"],
        Spec {
            retry: retry(1, Some("rc == 3 and failed and stderr == 'bad'")),
            ..PLAIN
        },
    )];
    let (recap, sink) = run(&[&h1], &steps, RunOptions::default(), Redactor::empty()).await;
    // `until` holds on the first attempt: no retry; the failure stands as the result.
    assert!(retries(&sink).is_empty());
    assert_eq!(ran(&h1, "exit-3"), 1);
    assert_eq!(failed(&recap), ["h1"]);
}

/// Without `until`, a host is retried while it fails: each retry is an event, the final
/// success is reported once, and the failures before it are not counted.
#[tokio::test]
async fn a_command_that_succeeds_on_its_third_attempt_passes() {
    let h1 = Arc::new(FakeTransport::new("h1"));
    let h2 = Arc::new(FakeTransport::new("h2"));
    h1.respond("flaky", Output::ok("done\n"));
    h1.respond_once("flaky", Output::failed(1, "not yet"));
    h1.respond_once("flaky", Output::failed(1, "not yet"));
    let steps = vec![step(
        "flaky",
        "flaky",
        &["h1", "h2"],
        Spec {
            retry: retry(5, None),
            ..PLAIN
        },
    )];
    let (recap, sink) = run(
        &[&h1, &h2],
        &steps,
        RunOptions::default(),
        Redactor::empty(),
    )
    .await;
    assert!(recap.is_success(), "{recap:?}");
    assert_eq!(
        retries(&sink),
        [
            (
                "h1".into(),
                1,
                5,
                "command failed with exit status 1".into()
            ),
            (
                "h1".into(),
                2,
                5,
                "command failed with exit status 1".into()
            ),
        ]
    );
    assert_eq!(
        (ran(&h1, "flaky"), ran(&h2, "flaky")),
        (3, 1),
        "h2 succeeded at once"
    );
    assert_eq!(
        sink.results(),
        [
            ("flaky".into(), "h2".into(), HostStatus::Changed),
            ("flaky".into(), "h1".into(), HostStatus::Changed),
        ]
    );
    let started = sink
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::StepStarted { .. }))
        .count();
    assert_eq!(started, 1, "a retry is not a new step");
    assert_eq!(recap.changed(), 2);
}

/// Retries that run out fail the host once, naming the attempts.
#[tokio::test]
async fn retries_that_run_out_name_the_attempts() {
    let h1 = Arc::new(FakeTransport::new("h1"));
    h1.respond("never", Output::failed(2, "no"));
    let steps = vec![
        step(
            "never",
            "never",
            &["h1"],
            Spec {
                retry: retry(2, None),
                ..PLAIN
            },
        ),
        step("after", "after", &["h1"], PLAIN),
    ];
    let (recap, sink) = run(&[&h1], &steps, RunOptions::default(), Redactor::empty()).await;
    assert_eq!(ran(&h1, "never"), 3);
    assert_eq!(ran(&h1, "after"), 0, "a failed host drops out");
    assert_eq!(retries(&sink).len(), 2);
    let Event::HostResult { failure, .. } = result_of(&sink, "never", "h1") else {
        unreachable!()
    };
    let f = failure.unwrap();
    assert_eq!(
        f.message.as_str(),
        "command failed with exit status 2 (after 3 attempts)"
    );
    assert_eq!(f.exit_status, Some(2));
    assert_eq!(recap.hosts[0].failed, 1);
}

/// `until` over the step's own stdout: re-run until it holds, or fail saying it stayed false.
#[tokio::test]
async fn until_over_stdout() {
    let h1 = Arc::new(FakeTransport::new("h1"));
    h1.respond("status", Output::ok("ready\n"));
    h1.respond_once("status", Output::ok("starting\n"));
    let until = "'ready' in stdout";
    let steps = vec![step(
        "wait",
        "status",
        &["h1"],
        Spec {
            retry: retry(3, Some(until)),
            register: Some("st"),
            ..PLAIN
        },
    )];
    let (recap, sink) = run(&[&h1], &steps, RunOptions::default(), Redactor::empty()).await;
    assert!(recap.is_success());
    assert_eq!(
        retries(&sink),
        [(
            "h1".into(),
            1,
            3,
            "`until = 'ready' in stdout` is false".into()
        )]
    );
    assert_eq!(ran(&h1, "status"), 2);

    let h1 = Arc::new(FakeTransport::new("h1"));
    h1.respond("status", Output::ok("starting\n"));
    let steps = vec![step(
        "wait",
        "status",
        &["h1"],
        Spec {
            retry: retry(1, Some(until)),
            ..PLAIN
        },
    )];
    let (recap, sink) = run(&[&h1], &steps, RunOptions::default(), Redactor::empty()).await;
    let Event::HostResult { failure, .. } = result_of(&sink, "wait", "h1") else {
        unreachable!()
    };
    let f = failure.unwrap();
    assert_eq!(
        f.message.as_str(),
        "`until = 'ready' in stdout` is false after 2 attempts"
    );
    assert_eq!(
        f.hint.unwrap().as_str(),
        "the last attempt: rc 0, stdout \"starting\""
    );
    assert_eq!(failed(&recap), ["h1"]);
}

/// Under --check nothing runs: a probe registers `skipped`, a retried step is not retried, and a
/// `when` over the probe decides from that.
#[tokio::test]
async fn check_mode_registers_skipped_results() {
    let h1 = Arc::new(FakeTransport::new("h1"));
    let steps = vec![
        step(
            "probe",
            "probe-x",
            &["h1"],
            Spec {
                register: Some("probe"),
                retry: retry(3, Some("'ready' in stdout")),
                ..PLAIN
            },
        ),
        step(
            "if skipped",
            "fix-a",
            &["h1"],
            Spec {
                when: Some(
                    "probe.skipped and probe.rc == 0 and probe.stdout == '' and not probe.changed",
                ),
                ..PLAIN
            },
        ),
        step(
            "if it failed",
            "fix-b",
            &["h1"],
            Spec {
                when: Some("probe.rc != 0"),
                ..PLAIN
            },
        ),
    ];
    let opts = RunOptions {
        check: true,
        ..Default::default()
    };
    let (recap, sink) = run(&[&h1], &steps, opts, Redactor::empty()).await;
    assert!(recap.is_success());
    assert!(h1.scripts().is_empty(), "{:?}", h1.scripts());
    assert!(retries(&sink).is_empty());
    assert_eq!(
        sink.results(),
        [
            ("probe".into(), "h1".into(), HostStatus::WouldChange),
            ("if skipped".into(), "h1".into(), HostStatus::WouldChange),
            ("if it failed".into(), "h1".into(), HostStatus::Skipped),
        ]
    );
}
