//! Tier 1: handlers in the runner against the recording fake transport. The pending-notification
//! commands run in a real shell against a file of the test's own, so what a run leaves for the
//! next one is real.

use provision_engine::event::{MemorySink, Recap};
use provision_engine::facts::answer_batch;
use provision_engine::handlers::Handlers;
use provision_engine::step::{
    Action, Change, Check, Configured, Facts, FlushHandlers, HostStep, PerHost, Step, StepError,
};
use provision_engine::{Event, HostStatus, RunOptions, Runner};
use provision_transport::fake::{FakeConnector, FakeTransport};
use provision_transport::{Output, Target, Transport};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Make sure `marker` is listed in /etc/markers (the fake keeps the list).
struct Marker(&'static str);

impl HostStep for Marker {
    fn gather(&self) -> Option<String> {
        Some(format!("grep -c {} /etc/markers", self.0))
    }
    fn check(&self, facts: &Facts) -> Result<Check, StepError> {
        Ok(match facts.stdout.trim() {
            "0" => Check::Change(vec![Change::new(
                format!("add {}", self.0),
                vec![Action::run(format!("echo {} >> /etc/markers", self.0))],
            )]),
            _ => Check::Ok(format!("{} present", self.0)),
        })
    }
}

/// A command that always runs (a handler, or a step that may fail).
struct Run(&'static str);

impl HostStep for Run {
    fn gather(&self) -> Option<String> {
        None
    }
    fn check(&self, _: &Facts) -> Result<Check, StepError> {
        Ok(Check::Change(vec![Change::new(
            self.0,
            vec![Action::run(self.0)],
        )]))
    }
}

fn per_host(title: &str, hosts: &[&str], make: impl Fn() -> Box<dyn HostStep>) -> Box<dyn Step> {
    Box::new(PerHost {
        title: title.into(),
        hosts: hosts.iter().map(|h| (h.to_string(), make())).collect(),
    })
}

fn marker(name: &'static str, hosts: &[&str], notify: &[&str]) -> Box<dyn Step> {
    let step = per_host(name, hosts, || Box::new(Marker(name)));
    if notify.is_empty() {
        return step;
    }
    Box::new(Configured {
        notifies: notify.iter().map(|s| s.to_string()).collect(),
        ..Configured::new(step)
    })
}

/// Handler `name` runs `restart NAME` on `hosts`.
fn handler(name: &'static str, hosts: &[&str]) -> Box<dyn Step> {
    let script: &'static str = Box::leak(format!("restart {name}").into_boxed_str());
    per_host(name, hosts, move || Box::new(Run(script)))
}

struct Host {
    fake: Arc<FakeTransport>,
    markers: Arc<Mutex<HashSet<String>>>,
    /// The host's pending-notifications file (a real file).
    pending: PathBuf,
    /// `fail-here` exits 1 while this is set.
    failing: Arc<AtomicBool>,
}

fn sh(script: &str) -> Output {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    Output {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_status: out.status.code().map(|c| c as u32),
        ..Output::ok("")
    }
}

fn host(name: &str, dir: &std::path::Path) -> Host {
    let fake = Arc::new(FakeTransport::new(name));
    let markers = Arc::new(Mutex::new(HashSet::new()));
    let failing = Arc::new(AtomicBool::new(false));
    let f = failing.clone();
    fake.respond_with("fail-here", move |_| {
        if f.load(Ordering::SeqCst) {
            Output {
                exit_status: Some(1),
                ..Output::ok("")
            }
        } else {
            Output::ok("")
        }
    });
    // Adding and clearing pending notifications: run for real.
    fake.respond_with("pending-handlers", sh);
    let m = markers.clone();
    fake.respond_with(">> /etc/markers", move |script| {
        m.lock()
            .unwrap()
            .insert(script.split_whitespace().nth(1).unwrap().to_string());
        Output::ok("")
    });
    let m = markers.clone();
    fake.respond_with("<<pv-", move |script| {
        let m = m.lock().unwrap();
        Output::ok(answer_batch(script, |cmd| {
            if cmd.contains("pending-handlers") {
                let out = sh(cmd);
                return (out.stdout_str(), out.exit_status.unwrap_or(1));
            }
            let marker = cmd.split_whitespace().nth(2).unwrap();
            (format!("{}\n", m.contains(marker) as u8), 0)
        }))
    });
    Host {
        fake,
        markers,
        pending: dir.join(name).join("pending-handlers"),
        failing,
    }
}

struct Fleet {
    dir: PathBuf,
    hosts: Vec<Host>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fleet(names: &[&str]) -> Fleet {
    let dir = std::env::temp_dir().join(format!(
        "provision-handlers-{}-{}",
        std::process::id(),
        provision_engine::facts::nonce()
    ));
    let hosts = names.iter().map(|n| host(n, &dir)).collect();
    Fleet { dir, hosts }
}

impl Fleet {
    fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.fake.host() == name).unwrap()
    }

    fn runner(&self, opts: RunOptions, handlers: Vec<Box<dyn Step>>) -> (Runner, Arc<MemorySink>) {
        let c = Arc::new(FakeConnector::default());
        for h in &self.hosts {
            c.add(h.fake.clone());
        }
        let targets = self
            .hosts
            .iter()
            .map(|h| Target {
                name: h.fake.host().to_string(),
                ..Default::default()
            })
            .collect();
        let pending_files: BTreeMap<String, String> = self
            .hosts
            .iter()
            .map(|h| (h.fake.host().to_string(), h.pending.display().to_string()))
            .collect();
        let sink = Arc::new(MemorySink::default());
        let runner = Runner::new(c, targets, opts, sink.clone()).with_handlers(Handlers {
            steps: handlers,
            pending_files,
        });
        (runner, sink)
    }

    async fn run(
        &self,
        steps: &[Box<dyn Step>],
        handlers: Vec<Box<dyn Step>>,
        opts: RunOptions,
    ) -> (Recap, Arc<MemorySink>) {
        for h in &self.hosts {
            h.fake.clear();
        }
        let (runner, sink) = self.runner(opts, handlers);
        (runner.run(steps).await, sink)
    }
}

/// (handler, host, status) of every handler result.
fn handler_results(sink: &MemorySink) -> Vec<(String, String, HostStatus)> {
    sink.events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::HostResult {
                step,
                host,
                status,
                handler: true,
                ..
            } => Some((step.to_string(), host.to_string(), *status)),
            _ => None,
        })
        .collect()
}

/// The handler commands a host ran.
fn restarts(h: &Host) -> Vec<String> {
    h.fake
        .scripts()
        .into_iter()
        .filter(|s| s.starts_with("restart "))
        .collect()
}

fn two_handlers() -> Vec<Box<dyn Step>> {
    vec![
        handler("first", &["h1", "h2"]),
        handler("second", &["h1", "h2"]),
        handler("unused", &["h1", "h2"]),
    ]
}

#[tokio::test]
async fn handlers_run_once_in_declaration_order_only_where_notified_then_not_again() {
    let f = fleet(&["h1", "h2"]);
    // h2 already has both markers: nothing changes there.
    f.host("h2")
        .markers
        .lock()
        .unwrap()
        .extend(["a".into(), "b".into()]);
    let steps = vec![
        // Notified in the reverse of declaration order, and `first` by both steps.
        marker("a", &["h1", "h2"], &["second", "first"]),
        marker("b", &["h1", "h2"], &["first"]),
    ];
    let (recap, sink) = f.run(&steps, two_handlers(), RunOptions::default()).await;
    assert!(recap.is_success());
    assert_eq!(
        handler_results(&sink),
        vec![
            ("first".into(), "h1".into(), HostStatus::Changed),
            ("second".into(), "h1".into(), HostStatus::Changed),
        ]
    );
    assert_eq!(restarts(f.host("h1")), ["restart first", "restart second"]);
    assert!(restarts(f.host("h2")).is_empty());
    // Handlers are announced as such, counted on their own.
    let started: Vec<(usize, String, bool)> = sink
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted {
                index,
                title,
                handler,
                ..
            } => Some((*index, title.to_string(), *handler)),
            _ => None,
        })
        .collect();
    assert_eq!(
        started,
        [
            (0, "a".into(), false),
            (1, "b".into(), false),
            (0, "first".into(), true),
            (1, "second".into(), true),
        ]
    );
    // The recap counts them like steps: 2 steps and 2 handlers changed h1.
    let h1 = recap.hosts.iter().find(|h| h.host == "h1").unwrap();
    assert_eq!(h1.changed, 4);
    assert!(!f.host("h1").pending.exists(), "handled: nothing pending");
    assert!(!f.host("h2").pending.exists(), "h2 never notified");

    // Nothing changes: no handler, and still one command per host (the pending read rides in
    // the fact batch).
    let (recap, sink) = f.run(&steps, two_handlers(), RunOptions::default()).await;
    assert!(recap.is_success());
    assert_eq!(recap.changed(), 0);
    assert!(handler_results(&sink).is_empty());
    for h in ["h1", "h2"] {
        let scripts = f.host(h).fake.scripts();
        assert_eq!(scripts.len(), 1, "{h}: {scripts:#?}");
        assert!(scripts[0].contains("pending-handlers"), "{}", scripts[0]);
    }
}

#[tokio::test]
async fn check_mode_reports_the_handlers_that_would_run_and_writes_nothing() {
    let f = fleet(&["h1"]);
    let steps = vec![marker("a", &["h1"], &["first"])];
    let opts = RunOptions {
        check: true,
        ..Default::default()
    };
    let (recap, sink) = f.run(&steps, two_handlers(), opts).await;
    assert!(recap.is_success());
    assert_eq!(
        handler_results(&sink),
        [("first".into(), "h1".into(), HostStatus::WouldChange)]
    );
    let scripts = f.host("h1").fake.scripts();
    assert_eq!(scripts.len(), 1, "only the fact batch: {scripts:#?}");
    assert!(!f.host("h1").pending.exists());
    assert!(f.host("h1").markers.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failure_after_the_notifying_step_leaves_the_handler_pending_for_the_next_run() {
    let f = fleet(&["h1", "h2"]);
    f.host("h1").failing.store(true, Ordering::SeqCst);
    let steps = vec![
        marker("a", &["h1", "h2"], &["first"]),
        per_host("breaks on h1", &["h1", "h2"], || Box::new(Run("fail-here"))),
    ];
    let (recap, sink) = f.run(&steps, two_handlers(), RunOptions::default()).await;
    assert!(!recap.is_success());
    // h1 failed after its change: its handler did not run, and the host remembers it.
    assert_eq!(
        handler_results(&sink),
        [("first".into(), "h2".into(), HostStatus::Changed)]
    );
    assert!(restarts(f.host("h1")).is_empty());
    assert_eq!(
        std::fs::read_to_string(&f.host("h1").pending).unwrap(),
        "first\n"
    );
    assert!(!f.host("h2").pending.exists(), "h2's handler ran: cleared");

    // Fixed: nothing of the playbook changes on h1, yet its pending handler runs, once, and is
    // then cleared; h2 has nothing pending.
    f.host("h1").failing.store(false, Ordering::SeqCst);
    let steps = vec![marker("a", &["h1", "h2"], &["first"])];
    let (recap, sink) = f.run(&steps, two_handlers(), RunOptions::default()).await;
    assert!(recap.is_success());
    assert_eq!(
        handler_results(&sink),
        [("first".into(), "h1".into(), HostStatus::Changed)]
    );
    assert_eq!(restarts(f.host("h1")), ["restart first"]);
    assert!(!f.host("h1").pending.exists());

    let (_, sink) = f.run(&steps, two_handlers(), RunOptions::default()).await;
    assert!(handler_results(&sink).is_empty());
    assert!(restarts(f.host("h1")).is_empty());
}

#[tokio::test]
async fn an_interrupted_run_leaves_its_notifications_pending() {
    let f = fleet(&["h1"]);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let tx = Arc::new(tx);
    // Ctrl-C while step `a` changes the host.
    f.host("h1").fake.respond_with("echo a >>", move |_| {
        let _ = tx.send(true);
        Output::ok("")
    });
    let steps = vec![marker("a", &["h1"], &["first"]), marker("b", &["h1"], &[])];
    for h in &f.hosts {
        h.fake.clear();
    }
    let (runner, sink) = f.runner(RunOptions::default(), two_handlers());
    runner.with_cancel(rx).run(&steps).await;
    assert!(handler_results(&sink).is_empty());
    assert!(
        sink.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Interrupted))
    );
    assert_eq!(
        std::fs::read_to_string(&f.host("h1").pending).unwrap(),
        "first\n"
    );
}

#[tokio::test]
async fn flush_handlers_runs_them_where_it_stands_and_not_again_at_the_end() {
    let f = fleet(&["h1"]);
    let steps: Vec<Box<dyn Step>> = vec![
        marker("a", &["h1"], &["first"]),
        Box::new(FlushHandlers {
            title: "flush_handlers".into(),
        }),
        marker("b", &["h1"], &[]),
    ];
    let (recap, sink) = f.run(&steps, two_handlers(), RunOptions::default()).await;
    assert!(recap.is_success());
    let ran: Vec<String> = f
        .host("h1")
        .fake
        .scripts()
        .into_iter()
        .filter(|s| s.starts_with("restart ") || s.ends_with(">> /etc/markers"))
        .collect();
    assert_eq!(
        ran,
        [
            "echo a >> /etc/markers",
            "restart first",
            "echo b >> /etc/markers"
        ]
    );
    assert_eq!(handler_results(&sink).len(), 1);
    assert!(!f.host("h1").pending.exists());
}

/// A handler that does not target the notified host neither runs there nor is kept pending.
#[tokio::test]
async fn a_notification_for_a_handler_of_other_hosts_is_dropped() {
    let f = fleet(&["h1", "h2"]);
    let steps = vec![marker("a", &["h1", "h2"], &["h2 only"])];
    let (_, sink) = f
        .run(
            &steps,
            vec![handler("h2 only", &["h2"])],
            RunOptions::default(),
        )
        .await;
    assert_eq!(
        handler_results(&sink),
        [("h2 only".into(), "h2".into(), HostStatus::Changed)]
    );
    assert!(
        f.host("h1")
            .fake
            .scripts()
            .iter()
            .all(|s| !s.contains("sort -u")),
        "nothing written on h1"
    );
}

/// A pending notification an earlier run left runs its handler although nothing changes; a name
/// this playbook has no handler for stays for the playbook that has it.
#[tokio::test]
async fn pending_notifications_run_without_a_change_and_unknown_ones_are_kept() {
    let f = fleet(&["h1"]);
    f.host("h1").markers.lock().unwrap().insert("a".into());
    let pending = &f.host("h1").pending;
    std::fs::create_dir_all(pending.parent().unwrap()).unwrap();
    std::fs::write(pending, "first\nother playbook's\n").unwrap();
    let steps = vec![marker("a", &["h1"], &["first"])];
    let (recap, sink) = f.run(&steps, two_handlers(), RunOptions::default()).await;
    assert!(recap.is_success());
    assert_eq!(
        handler_results(&sink),
        [("first".into(), "h1".into(), HostStatus::Changed)]
    );
    assert_eq!(
        std::fs::read_to_string(pending).unwrap(),
        "other playbook's\n"
    );
}
