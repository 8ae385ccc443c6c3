//! Tier 1: a step that runs `on` another host for each of its hosts (Ansible's `delegate_to`),
//! through the runner against fake hosts that keep a ledger of the names written to it: where
//! facts are read and commands run, how targets sharing a delegate take turns, what is reported,
//! and where notifications go. Writing a name takes 10 s of tokio's paused clock, so when each
//! write finished tells which ran together.

use provision_engine::event::{Event, MemorySink, Recap};
use provision_engine::facts::answer_batch;
use provision_engine::handlers::Handlers;
use provision_engine::step::{
    Action, Change, Check, Configured, Facts, HostStep, PerHost, Step, StepError,
};
use provision_engine::{HostStatus, RunOptions, Runner};
use provision_transport::fake::{FakeConnector, FakeTransport};
use provision_transport::{Output, Transport};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// `name` is in the host's ledger: the step of target `name`, as `{{ host.name }}` renders it.
struct Ledger(String);

impl HostStep for Ledger {
    fn gather(&self) -> Option<String> {
        Some(format!("ledger-has {}", self.0))
    }
    fn check(&self, facts: &Facts) -> Result<Check, StepError> {
        if facts.stdout.trim() == "yes" {
            return Ok(Check::Ok(format!("{} listed", self.0)));
        }
        Ok(Check::Change(vec![Change::new(
            format!("list {}", self.0),
            vec![Action::run(format!("ledger-add {}", self.0))],
        )]))
    }
}

/// The ledger step on `hosts`, run on `on` (target to delegate).
fn ledger(title: &str, hosts: &[&str], on: &[(&str, &str)], notify: &[&str]) -> Box<dyn Step> {
    let step = Box::new(PerHost {
        title: title.into(),
        hosts: hosts
            .iter()
            .map(|h| {
                (
                    h.to_string(),
                    Box::new(Ledger(h.to_string())) as Box<dyn HostStep>,
                )
            })
            .collect(),
    });
    Box::new(Configured {
        on: on
            .iter()
            .map(|(t, d)| (t.to_string(), d.to_string()))
            .collect(),
        notifies: notify.iter().map(|s| s.to_string()).collect(),
        ..Configured::new(step)
    })
}

/// What happened: "HOST gather NAMES" / "HOST add NAME @SECONDS" / "HOST SCRIPT" for others.
type Journal = Arc<Mutex<Vec<String>>>;

struct Fleet {
    fakes: Vec<Arc<FakeTransport>>,
    journal: Journal,
    dir: tempfile::TempDir,
}

fn fleet(n: usize) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let journal: Journal = Arc::default();
    let t0 = Instant::now();
    let fakes = (1..=n)
        .map(|i| {
            let name = format!("h{i}");
            let fake = Arc::new(FakeTransport::new(name.clone()));
            let listed: Arc<Mutex<Vec<String>>> = Arc::default();
            let (j, h, l) = (journal.clone(), name.clone(), listed.clone());
            fake.respond_with("<<pv-", move |script| {
                let l = l.lock().unwrap();
                let asked = std::cell::RefCell::new(Vec::new());
                let out = answer_batch(script, |cmd| {
                    let who = cmd.split_whitespace().nth(1).unwrap_or("").to_string();
                    let yes = l.contains(&who);
                    asked.borrow_mut().push(who);
                    ((if yes { "yes\n" } else { "no\n" }).into(), 0)
                });
                j.lock()
                    .unwrap()
                    .push(format!("{h} gather {}", asked.borrow().join(",")));
                Output::ok(out)
            });
            let (j, h, l) = (journal.clone(), name.clone(), listed.clone());
            fake.respond_with("ledger-add ", move |script| {
                let who = script.split_whitespace().nth(1).unwrap().to_string();
                j.lock()
                    .unwrap()
                    .push(format!("{h} add {who} @{}", t0.elapsed().as_secs()));
                l.lock().unwrap().push(who);
                Output::ok("")
            });
            fake.delay("ledger-add ", Duration::from_secs(10));
            // The pending-notifications commands run for real, on a file of the test's own.
            let (j, h) = (journal.clone(), name.clone());
            fake.respond_with("pending-handlers", move |script| {
                j.lock().unwrap().push(format!("{h} pending"));
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(script)
                    .output()
                    .unwrap();
                Output {
                    stdout: out.stdout,
                    exit_status: out.status.code().map(|c| c as u32),
                    ..Output::ok("")
                }
            });
            let (j, h) = (journal.clone(), name.clone());
            fake.respond_with("bounce-app", move |script| {
                j.lock().unwrap().push(format!("{h} {script}"));
                Output::ok("")
            });
            fake
        })
        .collect();
    Fleet {
        fakes,
        journal,
        dir,
    }
}

impl Fleet {
    async fn run(
        &self,
        steps: &[Box<dyn Step>],
        handlers: Vec<Box<dyn Step>>,
        opts: RunOptions,
    ) -> (Recap, Arc<MemorySink>) {
        let (connector, targets) = FakeConnector::of(&self.fakes);
        let pending_files: BTreeMap<String, String> = self
            .fakes
            .iter()
            .map(|f| (f.host().to_string(), self.pending(f.host())))
            .collect();
        let sink = Arc::new(MemorySink::default());
        let runner = Runner::new(connector, targets, opts, sink.clone()).with_handlers(Handlers {
            steps: handlers,
            pending_files,
        });
        (runner.run(steps).await, sink)
    }

    /// A host's pending-notifications file.
    fn pending(&self, host: &str) -> String {
        let p = self.dir.path().join(host).join("pending-handlers");
        p.display().to_string()
    }

    fn journal(&self) -> Vec<String> {
        std::mem::take(&mut *self.journal.lock().unwrap())
    }

    fn scripts(&self, host: &str) -> Vec<String> {
        let f = self.fakes.iter().find(|f| f.host() == host).unwrap();
        f.scripts()
    }
}

/// (host, on, status) of every result.
fn results(sink: &MemorySink) -> Vec<(String, Option<String>, HostStatus)> {
    sink.events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::HostResult {
                host, on, status, ..
            } => Some((
                host.to_string(),
                on.as_ref().map(|o| o.to_string()),
                *status,
            )),
            _ => None,
        })
        .collect()
}

/// h1 and h2 run on h3: facts are read and names written on h3 only, one target after the
/// other (h2's facts read after h1's write finished), each result is its target's and says
/// where it ran; the second run reads h3 again and changes nothing.
#[tokio::test(start_paused = true)]
async fn targets_sharing_a_delegate_run_there_one_after_the_other() {
    let f = fleet(3);
    let steps = [ledger(
        "list",
        &["h1", "h2"],
        &[("h1", "h3"), ("h2", "h3")],
        &[],
    )];
    let (recap, sink) = f.run(&steps, vec![], RunOptions::default()).await;
    assert!(recap.is_success());
    assert_eq!(
        f.journal(),
        [
            "h3 gather h1",
            "h3 add h1 @10",
            "h3 gather h2",
            "h3 add h2 @20"
        ]
    );
    assert!(f.scripts("h1").is_empty() && f.scripts("h2").is_empty());
    let on3 = Some("h3".to_string());
    assert_eq!(
        results(&sink),
        [
            ("h1".into(), on3.clone(), HostStatus::Changed),
            ("h2".into(), on3.clone(), HostStatus::Changed)
        ]
    );
    let counts: Vec<(String, usize)> = recap
        .hosts
        .iter()
        .map(|h| (h.host.to_string(), h.changed))
        .collect();
    assert_eq!(
        counts,
        [("h1".into(), 1), ("h2".into(), 1), ("h3".into(), 0)],
        "counted for the targets"
    );

    let (recap, sink) = f.run(&steps, vec![], RunOptions::default()).await;
    assert_eq!(recap.changed(), 0);
    assert_eq!(f.journal(), ["h3 gather h1", "h3 gather h2"]);
    assert_eq!(
        results(&sink),
        [
            ("h1".into(), on3.clone(), HostStatus::Ok),
            ("h2".into(), on3, HostStatus::Ok)
        ]
    );
}

/// Targets on different machines still run at once: h1 on h3, h2 on h4, h5 on itself.
#[tokio::test(start_paused = true)]
async fn targets_on_different_machines_run_at_once() {
    let f = fleet(5);
    let steps = [ledger(
        "list",
        &["h1", "h2", "h5"],
        &[("h1", "h3"), ("h2", "h4")],
        &[],
    )];
    let (recap, sink) = f.run(&steps, vec![], RunOptions::default()).await;
    assert!(recap.is_success());
    let mut adds: Vec<String> = f
        .journal()
        .into_iter()
        .filter(|l| l.contains(" add "))
        .collect();
    adds.sort();
    assert_eq!(adds, ["h3 add h1 @10", "h4 add h2 @10", "h5 add h5 @10"]);
    assert_eq!(
        results(&sink)
            .iter()
            .map(|r| r.1.clone())
            .collect::<Vec<_>>(),
        [Some("h3".to_string()), Some("h4".into()), None]
    );
}

/// A later step of the target is not batched into a delegated step's facts, nor a delegated
/// step into the target's: each is read where it runs.
#[tokio::test(start_paused = true)]
async fn facts_of_a_delegated_step_are_not_batched_with_the_targets() {
    let f = fleet(2);
    let steps = [
        ledger("own", &["h1"], &[], &[]),
        ledger("for h1 on h2", &["h1"], &[("h1", "h2")], &[]),
    ];
    let (recap, _) = f.run(&steps, vec![], RunOptions::default()).await;
    assert!(recap.is_success());
    assert_eq!(
        f.journal(),
        [
            "h1 gather h1",
            "h1 add h1 @10",
            "h2 gather h1",
            "h2 add h1 @20"
        ],
        "h1's batch holds only its own step"
    );
}

/// Under --check the delegate's facts are read and nothing is written anywhere.
#[tokio::test(start_paused = true)]
async fn check_reads_the_delegate_and_changes_nothing() {
    let f = fleet(3);
    let steps = [ledger(
        "list",
        &["h1", "h2"],
        &[("h1", "h3"), ("h2", "h3")],
        &[],
    )];
    let opts = RunOptions {
        check: true,
        ..Default::default()
    };
    let (recap, sink) = f.run(&steps, vec![], opts).await;
    assert!(recap.is_success());
    assert_eq!(f.journal(), ["h3 gather h1", "h3 gather h2"]);
    assert!(
        results(&sink)
            .iter()
            .all(|r| r.1.as_deref() == Some("h3") && r.2 == HostStatus::WouldChange)
    );
}

/// A delegated change notifies the target's handler: the notification is written on the
/// target (not on the delegate), and the handler runs on the target.
#[tokio::test(start_paused = true)]
async fn a_delegated_change_notifies_the_targets_handler() {
    struct Restart;
    impl HostStep for Restart {
        fn gather(&self) -> Option<String> {
            None
        }
        fn check(&self, _: &Facts) -> Result<Check, StepError> {
            Ok(Check::Change(vec![Change::new(
                "restart",
                vec![Action::run("bounce-app")],
            )]))
        }
    }
    let f = fleet(2);
    let steps = [ledger("list", &["h1"], &[("h1", "h2")], &["bounce"])];
    let handler: Box<dyn Step> = Box::new(PerHost {
        title: "bounce".into(),
        hosts: vec![("h1".into(), Box::new(Restart) as Box<dyn HostStep>)],
    });
    let (recap, _) = f.run(&steps, vec![handler], RunOptions::default()).await;
    assert!(recap.is_success());
    assert_eq!(
        f.journal(),
        [
            "h2 gather h1",
            "h2 add h1 @10",
            "h1 pending",
            "h1 pending",
            "h1 bounce-app",
            "h1 pending"
        ],
        "added on h1 after the change, read there at the flush, the handler, then cleared there"
    );
    assert!(
        !std::path::Path::new(&f.pending("h1")).exists(),
        "written on h1 (read back above), removed once the handler ran"
    );
    assert!(
        !std::path::Path::new(&f.pending("h2")).exists(),
        "nothing of the notification on the delegate"
    );
}

/// A delegate that cannot be reached fails the target's step, naming it; the target is not
/// marked unreachable.
#[tokio::test(start_paused = true)]
async fn an_unreachable_delegate_fails_the_target() {
    let f = fleet(2);
    f.fakes[1].set_unreachable(true);
    let steps = [ledger("list", &["h1"], &[("h1", "h2")], &[])];
    let (recap, sink) = f.run(&steps, vec![], RunOptions::default()).await;
    assert!(!recap.is_success());
    let h1 = &recap.hosts[0];
    assert_eq!((h1.failed, h1.unreachable), (1, false));
    assert!(
        h1.failures[0]
            .1
            .message
            .starts_with("cannot reach h2 to run the step there for h1"),
        "{:?}",
        h1.failures
    );
    assert_eq!(
        results(&sink),
        [("h1".into(), Some("h2".into()), HostStatus::Failed)]
    );
}
