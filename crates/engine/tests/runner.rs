//! Tier 1: the runner against the recording fake transport, with fake hosts that
//! keep state so that applying a change is visible to the next fact gathering.

use provision_engine::event::{MemorySink, Recap, Redactor};
use provision_engine::facts::answer_batch;
use provision_engine::step::{Action, Change, Check, Facts, HostStep, PerHost, Step, StepError};
use provision_engine::{Event, HostStatus, RunOptions, Runner};
use provision_transport::fake::{FakeConnector, FakeTransport};
use provision_transport::{Output, Target};
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

/// A toy step: make sure `marker` is listed in /etc/markers.
struct Marker(&'static str);

impl HostStep for Marker {
    fn gather(&self) -> Option<String> {
        Some(format!("grep -c {} /etc/markers", self.0))
    }
    fn check(&self, facts: &Facts) -> Result<Check, StepError> {
        match facts.stdout.trim() {
            "0" => Ok(Check::Change(vec![Change::new(
                format!("add {}", self.0),
                vec![Action::run(format!("echo {} >> /etc/markers", self.0))],
            )])),
            "1" => Ok(Check::Ok(format!("{} present", self.0))),
            other => Err(StepError::new(format!("unexpected count {other}"))
                .hint("fix /etc/markers by hand")),
        }
    }
}

fn step(name: &'static str, hosts: &[&str]) -> Box<dyn Step> {
    Box::new(PerHost {
        title: name.into(),
        hosts: hosts
            .iter()
            .map(|h| (h.to_string(), Box::new(Marker(name)) as Box<dyn HostStep>))
            .collect(),
    })
}

struct Host {
    fake: Arc<FakeTransport>,
    markers: Arc<Mutex<HashSet<String>>>,
}

fn host(name: &str) -> Host {
    let fake = Arc::new(FakeTransport::new(name));
    let markers = Arc::new(Mutex::new(HashSet::new()));
    let m = markers.clone();
    fake.respond_with("<<pv-", move |script| {
        let m = m.lock().unwrap();
        Output::ok(answer_batch(script, |cmd| {
            let marker = cmd.split_whitespace().nth(2).unwrap();
            (format!("{}\n", m.contains(marker) as u8), 0)
        }))
    });
    let m = markers.clone();
    fake.respond_with(">> /etc/markers", move |script| {
        m.lock()
            .unwrap()
            .insert(script.split_whitespace().nth(1).unwrap().to_string());
        Output::ok("")
    });
    Host { fake, markers }
}

fn connector(hosts: &[&Host]) -> Arc<FakeConnector> {
    let c = Arc::new(FakeConnector::default());
    for h in hosts {
        c.add(h.fake.clone());
    }
    c
}

fn targets(names: &[&str]) -> Vec<Target> {
    names
        .iter()
        .map(|n| Target {
            name: n.to_string(),
            ..Default::default()
        })
        .collect()
}

async fn run(
    hosts: &[&Host],
    steps: &[Box<dyn Step>],
    opts: RunOptions,
) -> (Recap, Arc<MemorySink>) {
    let names: Vec<&str> = hosts.iter().map(|h| h.fake.host()).collect::<Vec<_>>();
    let names: Vec<&str> = names.to_vec();
    let sink = Arc::new(MemorySink::default());
    let runner = Runner::new(connector(hosts), targets(&names), opts, sink.clone());
    (runner.run(steps).await, sink)
}

fn playbook() -> Vec<Box<dyn Step>> {
    vec![
        step("a", &["h1", "h2"]),
        step("b", &["h1", "h2"]),
        step("c", &["h2"]),
    ]
}

use provision_transport::Transport;

#[tokio::test]
async fn converges_then_reruns_with_one_round_trip_per_host() {
    let (h1, h2) = (host("h1"), host("h2"));
    let (recap, _) = run(&[&h1, &h2], &playbook(), RunOptions::default()).await;
    assert!(recap.is_success());
    assert_eq!(recap.changed(), 5);
    assert_eq!(
        *h2.markers.lock().unwrap(),
        HashSet::from(["a".into(), "b".into(), "c".into()])
    );

    h1.fake.clear();
    h2.fake.clear();
    let (recap, sink) = run(&[&h1, &h2], &playbook(), RunOptions::default()).await;
    assert_eq!(recap.changed(), 0);
    assert_eq!(recap.hosts.iter().map(|h| h.ok).sum::<usize>(), 5);
    // The no-change path: every step's facts in a single command per host.
    assert_eq!(h1.fake.scripts().len(), 1);
    assert_eq!(h2.fake.scripts().len(), 1);
    let results = sink.results();
    assert!(
        results.iter().all(|(_, _, s)| *s == HostStatus::Ok),
        "{results:?}"
    );
}

/// A first run changes step after step: facts of later steps gathered ahead are made stale by
/// each change, so after one wasted batch a host's gathers are of their own step only.
#[tokio::test]
async fn a_run_that_changes_step_after_step_gathers_ahead_only_once() {
    let (h1, h2) = (host("h1"), host("h2"));
    let (recap, _) = run(&[&h1, &h2], &playbook(), RunOptions::default()).await;
    assert_eq!(recap.changed(), 5);
    let gathers = |h: &Host| -> Vec<usize> {
        h.fake
            .scripts()
            .iter()
            .filter(|s| s.contains("<<pv-"))
            .map(|s| s.matches("grep -c").count())
            .collect()
    };
    // h2: steps a, b, c gathered with a; a changed it, so b and c are gathered alone.
    assert_eq!(gathers(&h2), vec![3, 1, 1]);
    assert_eq!(gathers(&h1), vec![2, 1]);
    // Once a step changes nothing, the next gather looks ahead again.
    let (h1, h2) = (host("h1"), host("h2"));
    h2.markers.lock().unwrap().insert("b".into());
    let steps = vec![
        step("a", &["h2"]),
        step("b", &["h2"]),
        step("c", &["h2"]),
        step("d", &["h2"]),
    ];
    let (recap, _) = run(&[&h1, &h2], &steps, RunOptions::default()).await;
    assert_eq!(recap.changed(), 3);
    // a (with b, c, d) changes; b alone is ok; c (with d) changes; d alone.
    assert_eq!(gathers(&h2), vec![4, 1, 2, 1]);
    // Every step changes: one look ahead, then each step alone.
    let (h1, h2) = (host("h1"), host("h2"));
    let (recap, _) = run(&[&h1, &h2], &steps, RunOptions::default()).await;
    assert_eq!(recap.changed(), 4);
    assert_eq!(gathers(&h2), vec![4, 1, 1, 1]);
}

/// Two steps gathering the same facts on a host (the swarm steps on a manager) share one run
/// of the command, and each gets its output.
#[tokio::test]
async fn the_same_fact_command_runs_once_per_batch() {
    let h1 = host("h1");
    h1.markers.lock().unwrap().insert("a".into());
    let steps = vec![step("a", &["h1"]), step("b", &["h1"]), step("a", &["h1"])];
    let (recap, _) = run(&[&h1], &steps, RunOptions::default()).await;
    assert_eq!(recap.changed(), 1);
    assert_eq!(recap.hosts[0].ok, 2);
    let first = &h1.fake.scripts()[0];
    assert_eq!(first.matches("grep -c a ").count(), 1, "{first}");
    assert_eq!(first.matches("grep -c").count(), 2, "{first}");
}

#[tokio::test]
async fn check_mode_reports_and_changes_nothing() {
    let (h1, h2) = (host("h1"), host("h2"));
    let opts = RunOptions {
        check: true,
        ..Default::default()
    };
    let (recap, sink) = run(&[&h1, &h2], &playbook(), opts).await;
    assert!(recap.is_success());
    assert_eq!(recap.hosts.iter().map(|h| h.would_change).sum::<usize>(), 5);
    assert!(h1.markers.lock().unwrap().is_empty() && h2.markers.lock().unwrap().is_empty());
    for h in [&h1, &h2] {
        assert!(
            h.fake
                .scripts()
                .iter()
                .all(|s| !s.contains(">> /etc/markers")),
            "no mutation under --check"
        );
    }
    let details: Vec<Vec<String>> = sink
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::HostResult { host, details, .. } if host == "h2" => {
                Some(details.iter().map(|d| d.to_string()).collect())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        details,
        vec![
            vec!["add a".to_string()],
            vec!["add b".to_string()],
            vec!["add c".to_string()]
        ]
    );
}

#[tokio::test]
async fn a_failing_host_drops_out_and_the_others_finish() {
    let (h1, h2) = (host("h1"), host("h2"));
    h1.fake
        .respond("echo a >> /etc/markers", Output::failed(2, "disk full\n"));
    let (recap, sink) = run(&[&h1, &h2], &playbook(), RunOptions::default()).await;
    assert!(!recap.is_success());
    assert_eq!(recap.failed_hosts(), 1);
    let r1 = recap.hosts.iter().find(|h| h.host == "h1").unwrap();
    let (step, failure) = &r1.failures[0];
    assert_eq!(step, "a");
    assert_eq!(failure.command.as_deref(), Some("echo a >> /etc/markers"));
    assert_eq!(failure.exit_status, Some(2));
    assert_eq!(failure.stderr, "disk full");
    assert!(
        h1.fake.scripts().iter().all(|s| !s.contains("echo b")),
        "h1 is not touched after failing"
    );
    assert_eq!(h2.markers.lock().unwrap().len(), 3, "h2 converged");
    assert!(
        sink.results()
            .contains(&("b".into(), "h2".into(), HostStatus::Changed))
    );
}

#[tokio::test]
async fn unreachable_host_is_reported_and_skipped() {
    let (h1, h2) = (host("h1"), host("h2"));
    h2.fake.set_unreachable(true);
    let (recap, sink) = run(&[&h1, &h2], &playbook(), RunOptions::default()).await;
    let r2 = recap.hosts.iter().find(|h| h.host == "h2").unwrap();
    assert!(r2.unreachable);
    assert_eq!(recap.failed_hosts(), 1);
    assert_eq!(h1.markers.lock().unwrap().len(), 2);
    let h2_results: Vec<_> = sink
        .results()
        .into_iter()
        .filter(|(_, h, _)| h == "h2")
        .collect();
    assert_eq!(
        h2_results,
        vec![("a".to_string(), "h2".to_string(), HostStatus::Unreachable)],
        "reported once"
    );
}

#[tokio::test]
async fn limit_restricts_changes() {
    let (h1, h2) = (host("h1"), host("h2"));
    let opts = RunOptions {
        limit: Some(BTreeSet::from(["h2".to_string()])),
        ..Default::default()
    };
    let (recap, _) = run(&[&h1, &h2], &playbook(), opts).await;
    assert!(recap.is_success());
    assert!(
        h1.fake.scripts().is_empty(),
        "h1 outside --limit is not touched"
    );
    assert_eq!(h2.markers.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_check_error_fails_the_host_with_its_hint() {
    let h1 = host("h1");
    h1.fake.respond_with("<<pv-", |script| {
        Output::ok(answer_batch(script, |_| ("7\n".into(), 0)))
    });
    let (recap, _) = run(&[&h1], &[step("a", &["h1"])], RunOptions::default()).await;
    let f = &recap.hosts[0].failures[0].1;
    assert_eq!(f.message, "unexpected count 7");
    assert_eq!(f.hint.as_deref(), Some("fix /etc/markers by hand"));
}

#[tokio::test]
async fn secrets_are_redacted_from_every_event() {
    let h1 = host("h1");
    h1.fake.respond(
        "echo a >> /etc/markers",
        Output::failed(1, "token s3cr3t-value rejected"),
    );
    let sink = Arc::new(MemorySink::default());
    let runner = Runner::new(
        connector(&[&h1]),
        targets(&["h1"]),
        RunOptions::default(),
        sink.clone(),
    )
    .with_redaction(Redactor::new(["s3cr3t-value"]));
    runner.run(&[step("a", &["h1"])]).await;
    let all = serde_json::to_string(&*sink.events.lock().unwrap()).unwrap();
    assert!(all.contains("token *** rejected"), "{all}");
    assert!(!all.contains("s3cr3t-value"));
}

/// A step whose facts hold a token and whose change runs on another host.
struct TokenStep;

impl Step for TokenStep {
    fn title(&self) -> &str {
        "join"
    }
    fn targets(&self) -> Vec<String> {
        vec!["h2".into()]
    }
    fn fact_hosts(&self) -> Vec<String> {
        vec!["h1".into()]
    }
    fn gather(&self, host: &str) -> Option<String> {
        (host == "h1").then(|| "print-token".to_string())
    }
    fn plan(
        &self,
        facts: &std::collections::BTreeMap<String, Facts>,
    ) -> provision_engine::StepPlan {
        let token = facts["h1"].stdout.trim().to_string();
        let mut plan = provision_engine::StepPlan::default();
        plan.hosts.insert(
            "h2".into(),
            Ok(Check::Change(vec![Change::new(
                "joined",
                vec![Action::RunOn {
                    host: "h1".into(),
                    script: format!("accept {token}"),
                    stdin: None,
                }],
            )])),
        );
        plan
    }
    fn secret_values(&self, _host: &str, facts: &Facts) -> Vec<String> {
        vec![facts.stdout.trim().to_string()]
    }
}

#[tokio::test]
async fn learnt_secrets_are_redacted_and_run_on_runs_elsewhere() {
    let (h1, h2) = (host("h1"), host("h2"));
    h1.fake.respond_with("print-token", |script| {
        Output::ok(answer_batch(script, |_| ("SWMTKN-1-abcdef\n".into(), 0)))
    });
    h1.fake
        .respond("accept", Output::failed(1, "rejected SWMTKN-1-abcdef"));
    let (recap, sink) = run(
        &[&h1, &h2],
        &[Box::new(TokenStep) as Box<dyn Step>],
        RunOptions::default(),
    )
    .await;
    assert!(
        h1.fake
            .scripts()
            .iter()
            .any(|s| s == "accept SWMTKN-1-abcdef"),
        "ran on h1: {:?}",
        h1.fake.scripts()
    );
    assert!(h2.fake.scripts().is_empty(), "nothing ran on h2 itself");
    let f = &recap
        .hosts
        .iter()
        .find(|h| h.host == "h2")
        .unwrap()
        .failures[0]
        .1;
    assert_eq!(
        f.stderr, "rejected ***",
        "failure counted against h2, token redacted"
    );
    let all = serde_json::to_string(&*sink.events.lock().unwrap()).unwrap();
    assert!(!all.contains("SWMTKN-1-abcdef"), "{all}");
}

#[tokio::test]
async fn a_change_anywhere_refreshes_the_facts_of_cross_host_steps() {
    let (h1, h2) = (host("h1"), host("h2"));
    h1.fake.respond_with("print-token", |script| {
        Output::ok(answer_batch(script, |_| ("SWMTKN-1-abcdef\n".into(), 0)))
    });
    // Step 1 changes h2 (marker "a" is missing there); step 2 reads h1's facts.
    let steps: Vec<Box<dyn Step>> = vec![step("a", &["h2"]), Box::new(TokenStep)];
    run(&[&h1, &h2], &steps, RunOptions::default()).await;
    let gathers = h1
        .fake
        .scripts()
        .iter()
        .filter(|s| s.contains("print-token"))
        .count();
    assert_eq!(
        gathers, 1,
        "h1 had nothing batched before; one gather when step 2 ran"
    );
    // Now with h1 also targeted by step 1 (batched first), its cached step-2 facts
    // must be dropped once h2 changes.
    let (h1, h2) = (host("h1"), host("h2"));
    h1.fake.respond_with("print-token", |script| {
        Output::ok(answer_batch(script, |cmd| {
            if cmd.contains("print-token") {
                ("SWMTKN-1-abcdef\n".into(), 0)
            } else {
                ("1\n".into(), 0)
            }
        }))
    });
    let steps: Vec<Box<dyn Step>> = vec![step("a", &["h1", "h2"]), Box::new(TokenStep)];
    run(&[&h1, &h2], &steps, RunOptions::default()).await;
    let gathers = h1
        .fake
        .scripts()
        .iter()
        .filter(|s| s.contains("print-token"))
        .count();
    assert_eq!(
        gathers, 2,
        "batched with step 1, then gathered again after h2 changed"
    );
}

/// A file-like step: its facts carry the current content base64-encoded (as the file steps'
/// do, for --diff), and its change uploads new content holding the secret.
struct SecretFile;

const FILE_SECRET: &str = "db-pass~?>word-42";

impl HostStep for SecretFile {
    fn gather(&self) -> Option<String> {
        Some("cat-file".into())
    }
    fn check(&self, facts: &Facts) -> Result<Check, StepError> {
        use base64::Engine as _;
        let b64 = facts.stdout.trim().trim_start_matches("content=");
        let before = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let before = String::from_utf8(before).unwrap();
        let after = format!("user = app\npassword = {FILE_SECRET}\nport = 5433\n");
        Ok(Check::Change(vec![
            Change::new(
                "update /etc/app.conf: content",
                vec![Action::Upload {
                    dest: "/etc/app.conf".into(),
                    content: zeroize::Zeroizing::new(after.clone().into_bytes()),
                    mode: Some(0o600),
                    owner: None,
                    group: None,
                }],
            )
            .with_diff(provision_engine::step::FileDiff {
                path: "/etc/app.conf".into(),
                before: Some(before),
                after,
            }),
        ]))
    }
}

#[tokio::test]
async fn fact_output_is_not_logged_and_diffs_hide_the_secret_on_both_sides() {
    use base64::Engine as _;
    let h1 = host("h1");
    // The file on the host holds the secret already; only the port drifted.
    let current = format!("user = app\npassword = {FILE_SECRET}\nport = 5432\n");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&current);
    h1.fake.respond_with("cat-file", move |script| {
        Output::ok(answer_batch(script, |_| {
            (format!("content={encoded}\n"), 0)
        }))
    });
    let sink = Arc::new(MemorySink::default());
    let steps: Vec<Box<dyn Step>> = vec![Box::new(PerHost {
        title: "app config".into(),
        hosts: vec![("h1".into(), Box::new(SecretFile) as Box<dyn HostStep>)],
    })];
    let runner = Runner::new(
        connector(&[&h1]),
        targets(&["h1"]),
        RunOptions {
            diff: true,
            check: true,
            ..Default::default()
        },
        sink.clone(),
    )
    .with_redaction(Redactor::new([FILE_SECRET]));
    runner.run(&steps).await;
    let events = sink.events.lock().unwrap();
    let gather = events
        .iter()
        .find_map(|e| match e {
            Event::Command {
                command, stdout, ..
            } if command.contains("cat-file") => Some(stdout.to_string()),
            _ => None,
        })
        .expect("the gather is logged");
    assert!(
        gather.starts_with('(') && gather.ends_with(" bytes of facts, not logged)"),
        "{gather}"
    );
    let diff = events
        .iter()
        .find_map(|e| match e {
            Event::HostResult { diff, .. } => diff.clone(),
            _ => None,
        })
        .expect("a diff");
    assert!(diff.contains("-port = 5432\n+port = 5433"), "{diff}");
    assert!(diff.contains(" password = ***\n"), "{diff}");
    let all = serde_json::to_string(&*events).unwrap();
    assert!(!all.contains(FILE_SECRET), "{all}");
    assert!(
        !all.contains("content="),
        "no fact output in any event: {all}"
    );
}

/// A secret rotated in the secrets file: the host's file still holds the old value, which the
/// redactor does not know. The diff shows that the line changes, not the old value.
#[tokio::test]
async fn a_diff_never_shows_the_previous_value_of_a_rotated_secret() {
    use base64::Engine as _;
    let h1 = host("h1");
    let old_secret = "old-db-pass-0042";
    let current = format!("user = app\npassword = {old_secret}\nport = 5433\n");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&current);
    h1.fake.respond_with("cat-file", move |script| {
        Output::ok(answer_batch(script, |_| {
            (format!("content={encoded}\n"), 0)
        }))
    });
    let sink = Arc::new(MemorySink::default());
    let steps: Vec<Box<dyn Step>> = vec![Box::new(PerHost {
        title: "app config".into(),
        hosts: vec![("h1".into(), Box::new(SecretFile) as Box<dyn HostStep>)],
    })];
    let runner = Runner::new(
        connector(&[&h1]),
        targets(&["h1"]),
        RunOptions {
            diff: true,
            check: true,
            ..Default::default()
        },
        sink.clone(),
    )
    .with_redaction(Redactor::new([FILE_SECRET]));
    runner.run(&steps).await;
    let events = sink.events.lock().unwrap();
    let diff = events
        .iter()
        .find_map(|e| match e {
            Event::HostResult { diff, .. } => diff.clone(),
            _ => None,
        })
        .expect("a diff");
    assert!(
        diff.contains(" user = app\n-password = ***\n+password = ***\n port = 5433"),
        "{diff}"
    );
    let all = serde_json::to_string(&*events).unwrap();
    assert!(!all.contains(old_secret), "{all}");
}

/// A step that refreshes something at most once per run on a host: its change marks the host,
/// and it decides from the run's marks (what apt's package lists use).
struct RefreshOnce(&'static str);

impl HostStep for RefreshOnce {
    fn gather(&self) -> Option<String> {
        Some(format!("echo {}", self.0))
    }
    fn check(&self, facts: &Facts) -> Result<Check, StepError> {
        if facts.marks.contains("refreshed") {
            return Ok(Check::Ok(format!("{}: refreshed in this run", self.0)));
        }
        Ok(Check::Change(vec![
            Change::new(
                format!("{}: refresh", self.0),
                vec![Action::run("refresh-the-lists")],
            )
            .marking("refreshed"),
        ]))
    }
}

fn refresh_step(name: &'static str, hosts: &[&str]) -> Box<dyn Step> {
    Box::new(PerHost {
        title: name.into(),
        hosts: hosts
            .iter()
            .map(|h| {
                (
                    h.to_string(),
                    Box::new(RefreshOnce(name)) as Box<dyn HostStep>,
                )
            })
            .collect(),
    })
}

#[tokio::test]
async fn a_changes_marks_reach_the_later_steps_of_its_host_for_the_rest_of_the_run() {
    let (h1, h2) = (host("h1"), host("h2"));
    for h in [&h1, &h2] {
        h.fake.respond_with("<<pv-", |script| {
            Output::ok(answer_batch(script, |_| ("\n".into(), 0)))
        });
    }
    let steps = vec![
        refresh_step("first", &["h1"]),
        refresh_step("second", &["h1", "h2"]),
        refresh_step("third", &["h1", "h2"]),
    ];
    let refreshes = |h: &Host| {
        h.fake
            .scripts()
            .iter()
            .filter(|s| s.contains("refresh-the-lists"))
            .count()
    };
    let (recap, sink) = run(&[&h1, &h2], &steps, RunOptions::default()).await;
    assert!(recap.is_success());
    // h1 refreshed at the first step only, h2 (not marked by h1's change) at the second.
    assert_eq!((refreshes(&h1), refreshes(&h2)), (1, 1));
    let mut results = sink.results();
    results.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        results,
        vec![
            ("first".into(), "h1".into(), HostStatus::Changed),
            ("second".into(), "h1".into(), HostStatus::Ok),
            ("second".into(), "h2".into(), HostStatus::Changed),
            ("third".into(), "h1".into(), HostStatus::Ok),
            ("third".into(), "h2".into(), HostStatus::Ok),
        ]
    );
    // The memory is the run's: the next run refreshes again, once.
    h1.fake.clear();
    let (_, _) = run(&[&h1], &steps[..1], RunOptions::default()).await;
    assert_eq!(refreshes(&h1), 1);
    // A dry run plans as the real run would: one refresh per host.
    h1.fake.clear();
    let opts = RunOptions {
        check: true,
        ..Default::default()
    };
    let (recap, _) = run(&[&h1], &steps, opts).await;
    assert_eq!(refreshes(&h1), 0);
    assert_eq!(recap.hosts[0].would_change, 1);
    assert_eq!(recap.hosts[0].ok, 2);
}
