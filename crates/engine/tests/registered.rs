//! Tier 1: `register` (and a loop's `results`), a `when` over registered results, retries,
//! `ignore_errors`, `failed_when` and `changed_when` in the runner, against the recording fake
//! transport.

use minijinja::Value;
use provision_engine::event::{MemorySink, Recap, Redactor};
use provision_engine::registered::{AtRun, LoopItem, ResultRules, Retry};
use provision_engine::step::{
    Action, Change, Check, Configured, Facts, HostStep, PerHost, Step, StepError,
};
use provision_engine::{Event, HostStatus, RunOptions, Runner};
use provision_transport::Output;
use provision_transport::fake::{FakeConnector, FakeTransport};
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
    ignore_errors: bool,
    failed_when: Option<&'static str>,
    changed_when: Option<&'static str>,
    /// A looped step's repetition: its index and item.
    looped: Option<(usize, &'static str)>,
}

const PLAIN: Spec = Spec {
    register: None,
    when: None,
    retry: None,
    ignore_errors: false,
    failed_when: None,
    changed_when: None,
    looped: None,
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
            rules: ResultRules {
                ignore_errors: spec.ignore_errors,
                failed_when: spec.failed_when.map(str::to_string),
                changed_when: spec.changed_when.map(str::to_string),
            },
            looped: spec.looped.map(|(index, item)| LoopItem {
                index,
                item: serde_json::json!(item),
            }),
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
    let fakes: Vec<Arc<FakeTransport>> = hosts.iter().map(|h| (*h).clone()).collect();
    let (connector, targets) = FakeConnector::of(&fakes);
    let sink = Arc::new(MemorySink::default());
    let runner = Runner::new(connector, targets, opts, sink.clone()).with_redaction(redactor);
    (runner.run(steps).await, sink)
}

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

fn status_of(sink: &MemorySink, step: &str, host: &str) -> HostStatus {
    match result_of(sink, step, host) {
        Event::HostResult { status, .. } => status,
        _ => unreachable!(),
    }
}

/// A host failing a step with `ignore_errors` is reported ignored, counted apart, goes on with
/// the next step, and the run succeeds; the registered result says it failed.
#[tokio::test]
async fn an_ignored_failure_lets_the_host_go_on_and_the_run_succeed() {
    let h1 = Arc::new(FakeTransport::new("h1"));
    h1.respond("broken-x", Output::failed(3, "no such thing\n"));
    let steps = vec![
        step(
            "broken",
            "broken-x",
            &["h1"],
            Spec {
                ignore_errors: true,
                register: Some("b"),
                ..PLAIN
            },
        ),
        step(
            "next",
            "next-x",
            &["h1"],
            Spec {
                when: Some("b.failed and b.rc == 3 and not b.changed"),
                ..PLAIN
            },
        ),
    ];
    let (recap, sink) = run(&[&h1], &steps, RunOptions::default(), Redactor::empty()).await;
    assert_eq!(status_of(&sink, "broken", "h1"), HostStatus::Ignored);
    let Event::HostResult { failure, .. } = result_of(&sink, "broken", "h1") else {
        unreachable!()
    };
    assert_eq!(
        failure.unwrap().message.as_str(),
        "command failed with exit status 3"
    );
    assert_eq!(status_of(&sink, "next", "h1"), HostStatus::Changed);
    assert_eq!(ran(&h1, "next-x"), 1);
    assert!(recap.is_success(), "{recap:?}");
    let h = &recap.hosts[0];
    assert_eq!((h.ignored, h.failed, h.changed), (1, 0, 1));
    assert!(h.failures.is_empty());
}

/// `failed_when` turns an exit status into ok or failure; `changed_when` decides whether the
/// host changed (a probe with `changed_when = false` reports ok, and skipped under --check).
#[tokio::test]
async fn failed_when_and_changed_when_decide_how_a_command_ended() {
    let h1 = Arc::new(FakeTransport::new("h1"));
    h1.respond("grep-1", Output::failed(1, ""));
    h1.respond("grep-2", Output::failed(2, "bad regexp\n"));
    h1.respond("upd-x", Output::ok("3 updated\n"));
    h1.respond("probe-x", Output::ok("v1\n"));
    let judged = |title: &str, script: &'static str, failed_when, changed_when, reg| {
        step(
            title,
            script,
            &["h1"],
            Spec {
                failed_when,
                changed_when,
                register: reg,
                ..PLAIN
            },
        )
    };
    let steps = vec![
        judged(
            "rc 1",
            "grep-1",
            Some("rc not in [0, 1]"),
            None,
            Some("one"),
        ),
        judged("updated", "upd-x", None, Some("'updated' in stdout"), None),
        judged("probe", "probe-x", None, Some("false"), Some("p")),
        step(
            "after",
            "after-x",
            &["h1"],
            Spec {
                when: Some(
                    "one.rc == 1 and not one.failed and one.changed and not p.changed and p.stdout == 'v1'",
                ),
                ..PLAIN
            },
        ),
        judged("rc 2", "grep-2", Some("rc not in [0, 1]"), None, None),
    ];
    let (recap, sink) = run(&[&h1], &steps, RunOptions::default(), Redactor::empty()).await;
    assert_eq!(status_of(&sink, "rc 1", "h1"), HostStatus::Changed);
    assert_eq!(status_of(&sink, "updated", "h1"), HostStatus::Changed);
    assert_eq!(status_of(&sink, "probe", "h1"), HostStatus::Ok);
    let Event::HostResult { details, .. } = result_of(&sink, "probe", "h1") else {
        unreachable!()
    };
    assert_eq!(details[0].as_str(), "`changed_when = false` is false");
    assert_eq!(status_of(&sink, "after", "h1"), HostStatus::Changed);
    let Event::HostResult { failure, .. } = result_of(&sink, "rc 2", "h1") else {
        unreachable!()
    };
    let f = failure.unwrap();
    assert_eq!(
        f.message.as_str(),
        "`failed_when = rc not in [0, 1]` is true (rc 2)"
    );
    assert_eq!((f.exit_status, f.stderr.as_str()), (Some(2), "bad regexp"));
    assert_eq!(failed(&recap), ["h1"]);

    // --check: the probe ran nothing and changes nothing: skipped, not a would-change.
    let h1 = Arc::new(FakeTransport::new("h1"));
    let check = RunOptions {
        check: true,
        ..RunOptions::default()
    };
    let (recap, sink) = run(&[&h1], &steps[2..3], check, Redactor::empty()).await;
    assert_eq!(status_of(&sink, "probe", "h1"), HostStatus::Skipped);
    assert_eq!(recap.changed(), 0);
    assert_eq!(ran(&h1, "probe-x"), 0);
}

/// Each repetition of a looped step adds its result, with its item, to the registered
/// `results`; a later `when` reads the list and the aggregate.
#[tokio::test]
async fn a_looped_register_collects_every_items_result() {
    let h1 = Arc::new(FakeTransport::new("h1"));
    h1.respond(
        "item-b",
        Output {
            stdout: b"bee\n".to_vec(),
            ..Output::failed(5, "")
        },
    );
    h1.respond("item-a", Output::ok("ay\n"));
    let rep = |i: usize, item: &'static str, script: &'static str| {
        step(
            &format!("each ({item})"),
            script,
            &["h1"],
            Spec {
                register: Some("each"),
                ignore_errors: true,
                looped: Some((i, item)),
                ..PLAIN
            },
        )
    };
    let reads = |title: &str, when: &'static str| {
        step(
            title,
            "read-x",
            &["h1"],
            Spec {
                when: Some(when),
                ..PLAIN
            },
        )
    };
    let steps = vec![
        rep(0, "a", "item-a"),
        rep(1, "b", "item-b"),
        reads(
            "list",
            "each.results | length == 2 and each.results[0].stdout == 'ay' and each.results[1].rc == 5 and each.results[1].item == 'b'",
        ),
        reads(
            "aggregate",
            "each.changed and each.failed and not each.skipped",
        ),
        reads(
            "filters",
            "each.results | selectattr('failed') | map(attribute='item') | list == ['b']",
        ),
    ];
    let (recap, sink) = run(&[&h1], &steps, RunOptions::default(), Redactor::empty()).await;
    for s in ["list", "aggregate", "filters"] {
        assert_eq!(status_of(&sink, s, "h1"), HostStatus::Changed, "{s}");
    }
    assert!(recap.is_success());
}
