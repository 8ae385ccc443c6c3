//! The runner: for each step, gather facts (batched, in parallel), plan (pure),
//! then apply through the one dry-run gate, reporting every outcome as events.

use crate::event::{
    Event, EventSink, FailureInfo, HostRecap, HostStatus, Recap, Redacted, Redactor,
};
use crate::facts;
use crate::handlers::{self, Handlers};
use crate::rollout;
use crate::step::{Action, Change, Check, Facts, Step, StepError};
use provision_transport::{Command, Connector, Stdin, Tail, Target, Transport, TransportError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
// tokio's clock: tests on a paused clock see durations and heartbeats exactly.
use tokio::time::Instant;

mod at_run;
mod heartbeat;
mod pipelined;

/// How a run behaves; the defaults are those of `provision run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Dry run: gather and plan, never apply. Enforced in one place: [`Runner::apply`].
    pub check: bool,
    /// Attach unified diffs of file contents to changes.
    pub diff: bool,
    /// Only these hosts may change (facts still come from the hosts steps need).
    pub limit: Option<BTreeSet<String>>,
    /// Hosts worked on at once.
    pub forks: usize,
    /// Gather the facts of all remaining steps of a host in one round trip, and
    /// re-gather only after that host changed.
    pub batch_facts: bool,
    pub gather_timeout: Duration,
    /// How long a command of a plan may run unless its step says otherwise: past it the
    /// command is abandoned and the host fails (a hung NFS mount or a stuck apt lock cannot
    /// hold a run forever).
    pub command_timeout: Duration,
    /// How often a running step reports the hosts still busy on it ([`HEARTBEAT`]); zero: never.
    pub heartbeat: Duration,
}

/// [`RunOptions::heartbeat`] by default.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// [`RunOptions::command_timeout`] by default: generous, since a first run under emulation
/// installs packages for many minutes.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);

/// Longest line of a transport error shown (the first line of a long script is cut there).
const MAX_LINE_CHARS: usize = 200;

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            check: false,
            diff: false,
            limit: None,
            forks: 64,
            batch_facts: true,
            gather_timeout: Duration::from_secs(300),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            heartbeat: HEARTBEAT,
        }
    }
}

/// Why a host dropped out of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dead {
    Failed,
    Unreachable,
}

struct State {
    conns: HashMap<String, Arc<dyn Transport>>,
    dead: HashMap<String, Dead>,
    /// Steps that plan over other hosts' facts too (swarm steps): a change
    /// anywhere makes their cached facts stale.
    cross: std::collections::HashSet<usize>,
    /// (host, step index) to facts gathered since the host last changed.
    cache: HashMap<(String, usize), Facts>,
    /// Hosts whose facts of later steps were gathered ahead and then made stale by a change:
    /// their next gather is of its own step only. On a run that changes step after step
    /// (a first run), gathering every later step's facts again at each step is wasted work on
    /// the hosts; on a run that changes nothing, one round trip still gathers everything.
    wasted: std::collections::HashSet<String>,
    recap: BTreeMap<String, HostRecap>,
    /// The play's steps; indices from here on are handlers.
    steps: usize,
    /// Hosts a step of the play targets: the only ones a flush reads pending notifications
    /// from (a handler's other hosts are not contacted for it).
    play_hosts: BTreeSet<String>,
    /// Host to the handlers notified there in this run and not run yet.
    notified: BTreeMap<String, BTreeSet<String>>,
    /// Host to the pending notifications its file holds, once read (in the host's first fact
    /// batch, or at the first flush); kept up to date with what this run writes there.
    pending: HashMap<String, BTreeSet<String>>,
    /// Why the run stopped before its end (a step's `max_fail_percentage` exceeded).
    stopped: Option<String>,
    /// `register`, a `when` over registered results, retries: what the runner keeps for them.
    at_run: at_run::Kept,
    /// (step index, target host) to the host the step runs on for it (`on`): results say so.
    on: HashMap<(usize, String), String>,
    /// Steps with `ignore_errors`: a host failing one is reported ignored and goes on.
    ignoring: BTreeSet<usize>,
    /// Host to what changes applied there in this run left (`Change::marks`): later steps'
    /// facts on that host carry them (`Facts::marks`).
    marks: HashMap<String, BTreeSet<String>>,
    /// The hosts busy on each step (its heartbeat), and each step's timing.
    beats: heartbeat::Kept,
}

/// The batch key of the pending-notifications read, which rides in a host's first fact batch.
const PENDING_KEY: usize = usize::MAX;

pub struct Runner {
    connector: Arc<dyn Connector>,
    targets: Vec<Target>,
    opts: RunOptions,
    sink: Arc<dyn EventSink>,
    /// The one redaction point of a run: every text of every event is made by [`Runner::clean`].
    /// Grows with the secrets learnt from facts during the run (join tokens).
    redactor: Mutex<Redactor>,
    cancel: tokio::sync::watch::Receiver<bool>,
    nonce: String,
    state: Mutex<State>,
    handlers: Handlers,
    /// Each handler's name and the hosts it targets, in declaration order.
    handler_targets: Vec<(String, Vec<String>)>,
    /// The playbook's `strategy` and `after`s: which steps may overlap.
    schedule: crate::pipeline::Schedule,
    /// `forks`: commands of all steps running at once share it.
    forks: Arc<Semaphore>,
    /// Events of steps that overlapped, held back for playbook order.
    output: Mutex<pipelined::Ordered>,
}

impl Runner {
    /// `targets`: every inventory host, in order, as the transport reaches them.
    pub fn new(
        connector: Arc<dyn Connector>,
        targets: Vec<Target>,
        opts: RunOptions,
        sink: Arc<dyn EventSink>,
    ) -> Self {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let forks = Arc::new(Semaphore::new(opts.forks.max(1)));
        let recap = targets
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    // `host` is filled in (redacted) when the recap is handed out.
                    HostRecap::default(),
                )
            })
            .collect();
        Runner {
            connector,
            targets,
            opts,
            sink,
            redactor: Mutex::new(Redactor::empty()),
            cancel: rx,
            nonce: facts::nonce(),
            state: Mutex::new(State {
                conns: HashMap::new(),
                dead: HashMap::new(),
                cache: HashMap::new(),
                wasted: Default::default(),
                cross: Default::default(),
                recap,
                steps: 0,
                play_hosts: BTreeSet::new(),
                notified: BTreeMap::new(),
                pending: HashMap::new(),
                stopped: None,
                at_run: Default::default(),
                on: HashMap::new(),
                ignoring: BTreeSet::new(),
                marks: HashMap::new(),
                beats: Default::default(),
            }),
            handlers: Handlers::default(),
            handler_targets: Vec::new(),
            schedule: Default::default(),
            forks,
            output: Default::default(),
        }
    }

    /// How the steps wait for each other (default: `linear`, each for every earlier one).
    pub fn with_schedule(mut self, schedule: crate::pipeline::Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// The play's handlers: run at the end (and at each `flush_handlers`) on the hosts where a
    /// step that notifies them changed something, or where an earlier run left them pending.
    pub fn with_handlers(mut self, handlers: Handlers) -> Self {
        self.handler_targets = handlers
            .steps
            .iter()
            .map(|h| (h.title().to_string(), h.targets()))
            .collect();
        self.handlers = handlers;
        self
    }

    /// The secrets of the run: nothing that leaves the runner shows them.
    pub fn with_redaction(self, redactor: Redactor) -> Self {
        *self.redactor.lock().unwrap() = redactor;
        self
    }

    /// When the receiver turns true (Ctrl-C), no new work starts; running commands finish.
    pub fn with_cancel(mut self, cancel: tokio::sync::watch::Receiver<bool>) -> Self {
        self.cancel = cancel;
        self
    }

    fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    fn emit(&self, e: Event) {
        self.ordered_emit(e);
    }

    fn is_dead(&self, host: &str) -> bool {
        self.state.lock().unwrap().dead.contains_key(host)
    }

    fn in_limit(&self, host: &str) -> bool {
        self.opts.limit.as_ref().is_none_or(|l| l.contains(host))
    }

    /// Runs the steps in order (overlapping where the schedule lets them), each across its
    /// hosts, then the handlers they notified, and
    /// returns the recap.
    pub async fn run(&self, steps: &[Box<dyn Step>]) -> Recap {
        let started = Instant::now();
        // Handlers follow the play's steps in one index space (facts cache, cross-host steps).
        let all: Vec<&dyn Step> = steps
            .iter()
            .chain(self.handlers.steps.iter())
            .map(|s| s.as_ref())
            .collect();
        {
            let mut st = self.state.lock().unwrap();
            st.steps = steps.len();
            st.play_hosts = steps.iter().flat_map(|s| s.targets()).collect();
            st.cross = all
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.fact_hosts().is_empty())
                .map(|(i, _)| i)
                .collect();
            st.ignoring = all
                .iter()
                .enumerate()
                .filter(|(_, s)| s.at_run().is_some_and(|a| a.rules.ignore_errors))
                .map(|(i, _)| i)
                .collect();
        }
        self.emit(Event::RunStarted {
            hosts: self.targets.len(),
            steps: steps.len(),
            check: self.opts.check,
        });
        let stopped = self.run_play(&all, steps.len()).await;
        // The end of the play flushes too. A stopped run runs no handler: the notifications of
        // changed hosts stay pending on them, for the next run.
        if !stopped && !self.handlers.is_empty() {
            if self.cancelled() {
                self.emit(Event::Interrupted);
            } else {
                self.flush(&all).await;
            }
        }
        let stop = self.state.lock().unwrap().stopped.clone();
        let recap = Recap {
            stopped: stop.map(|s| self.clean(&s)),
            hosts: self
                .state
                .lock()
                .unwrap()
                .recap
                .iter()
                .map(|(name, r)| HostRecap {
                    host: self.clean(name),
                    ..r.clone()
                })
                .collect(),
        };
        self.emit(Event::RunFinished {
            recap: recap.clone(),
            duration: started.elapsed(),
            timings: self.timings(),
        });
        recap
    }

    /// Whether a step's `max_fail_percentage` stopped the run.
    fn stopped(&self) -> bool {
        self.state.lock().unwrap().stopped.is_some()
    }

    /// Runs step `index` of `steps` on its hosts (`only` these, for a handler), batch by batch
    /// when its rollout has `serial`. False when the run must stop here: more of its hosts
    /// failed than its `max_fail_percentage` allows (recorded for the recap).
    async fn run_step(&self, index: usize, steps: &[&dyn Step], only: Option<&[String]>) -> bool {
        let step = steps[index];
        let rollout = step.rollout();
        let title = step.title().to_string();
        let timeout = step.timeout().unwrap_or(self.opts.command_timeout);
        // The step's hosts within --limit, those that dropped out earlier included: the
        // failure threshold counts them, as Ansible counts a play's failed hosts.
        let selected: Vec<String> = step
            .targets()
            .into_iter()
            .filter(|h| self.in_limit(h))
            .filter(|h| only.is_none_or(|o| o.contains(h)))
            .collect();
        let mut targets: Vec<String> = selected
            .iter()
            .filter(|h| !self.is_dead(h))
            .cloned()
            .collect();
        let counted = if rollout.run_once {
            targets = rollout::run_once_host(&targets)
                .cloned()
                .into_iter()
                .collect();
            targets.clone()
        } else {
            selected
        };
        if targets.is_empty() {
            return true;
        }
        {
            let mut st = self.state.lock().unwrap();
            for h in &targets {
                if let Some(d) = step.delegate(h) {
                    st.on.insert((index, h.clone()), d.to_string());
                }
            }
        }
        let (shown, handler) = self.position(index);
        // A retry's attempt is reported as a retry, not as the step starting again.
        if !self.is_retry_attempt(index) {
            self.emit(Event::StepStarted {
                index: shown,
                title: self.clean(&title),
                hosts: targets.iter().map(|h| self.clean(h)).collect(),
                handler,
            });
        }
        let step_started = Instant::now();
        // A `when` over registered results is decided now, per host.
        let targets = self.decide_when(index, step, &title, targets, step_started);
        if targets.is_empty() {
            return true;
        }
        let batches = match &rollout.serial {
            Some(serial) => serial.batches(&targets),
            None => vec![targets],
        };
        for (n, batch) in batches.iter().enumerate() {
            // A batch starts only when the previous one finished, and not after Ctrl-C.
            if n > 0 && self.cancelled() {
                break;
            }
            // Targets that run on one machine (`on`) go one round after another.
            for (k, round) in rollout::delegation_rounds(batch, |h| step.delegate(h))
                .iter()
                .enumerate()
            {
                if k > 0 && self.cancelled() {
                    break;
                }
                self.run_batch(index, steps, round, timeout, step_started)
                    .await;
            }
            if let Some(max) = rollout.max_fail_percentage {
                let failed = counted.iter().filter(|h| self.is_dead(h)).count();
                if rollout::too_many_failed(failed, counted.len(), max) {
                    // Steps that overlapped may both stop it: the first one's reason is kept.
                    let reason = rollout::stop_reason(&title, failed, counted.len(), max);
                    self.state.lock().unwrap().stopped.get_or_insert(reason);
                    return false;
                }
            }
        }
        true
    }

    /// One batch of step `index`: gather the facts of its hosts (and of the hosts the step
    /// reads besides), plan, apply. Each batch plans on its own, after the previous one
    /// finished, so a decision sees what earlier batches changed (a swarm step reads the
    /// managers again).
    async fn run_batch(
        &self,
        index: usize,
        steps: &[&dyn Step],
        targets: &[String],
        timeout: Duration,
        step_started: Instant,
    ) {
        self.busy(index, targets);
        self.run_batch_now(index, steps, targets, timeout, step_started)
            .await;
        // A host the plan left out has no result: it is done all the same.
        for h in targets {
            self.idle(index, h);
        }
    }

    async fn run_batch_now(
        &self,
        index: usize,
        steps: &[&dyn Step],
        targets: &[String],
        timeout: Duration,
        step_started: Instant,
    ) {
        let step = steps[index];
        let title = step.title().to_string();
        let mut gather_hosts: Vec<String> = targets.to_vec();
        for h in step.fact_hosts() {
            if !gather_hosts.contains(&h) && !self.is_dead(&h) {
                gather_hosts.push(h);
            }
        }

        // Facts, in parallel.
        let forks = self.forks.clone();
        let gathered = futures::future::join_all(gather_hosts.iter().map(|h| {
            let forks = forks.clone();
            async move {
                let _p = forks.acquire().await.expect("semaphore");
                (h.clone(), self.facts_for(h, index, steps).await)
            }
        }))
        .await;
        let mut facts = BTreeMap::new();
        for (host, res) in gathered {
            match res {
                Ok(Some(f)) => {
                    facts.insert(host, f);
                }
                Ok(None) => {}
                Err(e) => self.host_lost(index, &title, &host, &e, step_started),
            }
        }

        // What this run did on the host the facts were read on: the run's memory, which no
        // fact command can read.
        {
            let st = self.state.lock().unwrap();
            for (host, f) in facts.iter_mut() {
                let on = step.delegate(host).unwrap_or(host);
                f.marks = st.marks.get(on).cloned().unwrap_or_default();
            }
        }
        let plan = step.plan(&facts);
        let at = step.at_run();
        let judged = at.is_some_and(|a| a.rules.judges());
        // Each host's changes, and the notifications they add to its pending file.
        let mut changes: Vec<(String, Vec<Change>, BTreeSet<String>)> = Vec::new();
        for host in targets {
            if self.is_dead(host) {
                continue;
            }
            match plan.hosts.get(host) {
                None => {}
                Some(Ok(Check::Ok(reason))) => self.result(
                    index,
                    &title,
                    host,
                    HostStatus::Ok,
                    vec![self.clean(reason)],
                    None,
                    None,
                    step_started,
                ),
                Some(Ok(Check::Skip(reason))) => self.result(
                    index,
                    &title,
                    host,
                    HostStatus::Skipped,
                    vec![self.clean(reason)],
                    None,
                    None,
                    step_started,
                ),
                Some(Ok(Check::Change(c))) if c.is_empty() => self.result(
                    index,
                    &title,
                    host,
                    HostStatus::Ok,
                    vec![],
                    None,
                    None,
                    step_started,
                ),
                Some(Ok(Check::Change(c))) => {
                    let mut c = c.clone();
                    let fresh = if judged {
                        // Whether it changed is known only after it ran: the notification
                        // is written then (`note_pending`).
                        self.fresh_notifications(step, host)
                    } else {
                        self.notify_pending(step, host, step.delegate(host), &mut c)
                    };
                    changes.push((host.clone(), c, fresh))
                }
                Some(Err(e)) => {
                    self.fail(index, &title, host, self.failure_from_step(e), step_started)
                }
            }
        }

        // Apply: one host at a time when the plan says so (quorum), else in parallel.
        let mut changed: Vec<(String, BTreeSet<String>)> = Vec::new();
        if plan.serial {
            let pos = |h: &String| plan.order.iter().position(|o| o == h).unwrap_or(usize::MAX);
            changes.sort_by_key(|(h, _, _)| (pos(h), h.clone()));
            for (host, c, fresh) in changes {
                if self.cancelled() {
                    break;
                }
                if self
                    .apply(
                        index,
                        &title,
                        (&host, step.delegate(&host)),
                        c,
                        step_started,
                        timeout,
                        true,
                        at,
                    )
                    .await
                {
                    if judged {
                        self.note_pending(index, &title, &host, &fresh).await;
                    }
                    changed.push((host, fresh));
                }
            }
        } else {
            let title = &title;
            changed = futures::future::join_all(changes.into_iter().map(|(host, c, fresh)| {
                let forks = forks.clone();
                async move {
                    let _p = forks.acquire().await.expect("semaphore");
                    let changed = self
                        .apply(
                            index,
                            title,
                            (&host, step.delegate(&host)),
                            c,
                            step_started,
                            timeout,
                            true,
                            at,
                        )
                        .await;
                    if changed && judged {
                        self.note_pending(index, title, &host, &fresh).await;
                    }
                    changed.then_some((host, fresh))
                }
            }))
            .await
            .into_iter()
            .flatten()
            .collect();
        }
        self.notified(step, changed);
    }

    /// The index an event shows for `index` of the run, and whether it is a handler's (handlers
    /// are counted on their own).
    fn position(&self, index: usize) -> (usize, bool) {
        let steps = self.state.lock().unwrap().steps;
        match index.checked_sub(steps) {
            Some(h) => (h, true),
            None => (index, false),
        }
    }

    /// The handlers `step` notifies that can run on `host` (declared, and targeting it).
    fn notifications(&self, step: &dyn Step, host: &str) -> BTreeSet<String> {
        step.notifies()
            .iter()
            .filter(|n| {
                self.handler_targets
                    .iter()
                    .any(|(name, targets)| name == *n && targets.iter().any(|t| t == host))
            })
            .cloned()
            .collect()
    }

    /// Before `changes` are applied to `host`: the notifications they add to the host's pending
    /// file (those it is not known to hold), written by one more command after the changes'
    /// own, through the same gate. Returns what it adds. The file is the target's also when the
    /// changes run `on` another host: the handlers are notified for the target, as in Ansible.
    fn notify_pending(
        &self,
        step: &dyn Step,
        host: &str,
        on: Option<&str>,
        changes: &mut [Change],
    ) -> BTreeSet<String> {
        let fresh = self.fresh_notifications(step, host);
        if let (false, Some(last)) = (fresh.is_empty(), changes.last_mut()) {
            let script = handlers::add_command(self.handlers.pending_file(host), &fresh);
            last.actions.push(match on {
                None => Action::run(script),
                Some(_) => Action::RunOn {
                    host: host.to_string(),
                    script,
                    stdin: None,
                },
            });
        }
        fresh
    }

    /// The notifications of `step` on `host` that its pending file is not known to hold.
    fn fresh_notifications(&self, step: &dyn Step, host: &str) -> BTreeSet<String> {
        let mut fresh = self.notifications(step, host);
        if let Some(held) = self.state.lock().unwrap().pending.get(host) {
            fresh.retain(|n| !held.contains(n));
        }
        fresh
    }

    /// Writes `fresh` notifications to the pending file of `host` after a step whose change
    /// was decided by `changed_when` changed it: through the gate, reporting only a failure.
    async fn note_pending(&self, index: usize, title: &str, host: &str, fresh: &BTreeSet<String>) {
        if fresh.is_empty() || self.opts.check {
            return;
        }
        let change = Change::new(
            "pending notifications written".to_string(),
            vec![Action::run(handlers::add_command(
                self.handlers.pending_file(host),
                fresh,
            ))],
        );
        self.apply_bookkeeping(index, title, host, change).await;
    }

    /// One change of the runner's own bookkeeping on `host` itself (its pending-notifications
    /// file): through the gate like every change, reported only when it fails.
    async fn apply_bookkeeping(
        &self,
        index: usize,
        title: &str,
        host: &str,
        change: Change,
    ) -> bool {
        self.apply(
            index,
            title,
            (host, None),
            vec![change],
            Instant::now(),
            self.opts.command_timeout,
            false,
            None,
        )
        .await
    }

    /// Records the notifications of `step` on the hosts it changed (`fresh`: what each host's
    /// file now holds besides what it held).
    fn notified(&self, step: &dyn Step, changed: Vec<(String, BTreeSet<String>)>) {
        if step.notifies().is_empty() {
            return;
        }
        let mut st = self.state.lock().unwrap();
        for (host, fresh) in changed {
            let names = self.notifications(step, &host);
            st.notified.entry(host.clone()).or_default().extend(names);
            if !self.opts.check
                && let Some(held) = st.pending.get_mut(&host)
            {
                held.extend(fresh);
            }
        }
    }

    /// Runs the handlers notified so far, each on its notified hosts, in declaration order, and
    /// clears those notifications (on the host too). False when the run was stopped.
    async fn flush(&self, all: &[&dyn Step]) -> bool {
        if self.handlers.is_empty() {
            return true;
        }
        let steps = self.state.lock().unwrap().steps;
        let live = |h: &String| self.in_limit(h) && !self.is_dead(h);
        // Hosts no fact batch reached yet have their pending file read now.
        let unread: BTreeSet<String> = {
            let st = self.state.lock().unwrap();
            self.handler_targets
                .iter()
                .flat_map(|(_, t)| t.iter())
                .filter(|h| st.play_hosts.contains(*h) && !st.pending.contains_key(*h))
                .cloned()
                .collect()
        };
        futures::future::join_all(
            unread
                .iter()
                .filter(|h| live(h))
                .map(|h| self.read_pending(steps, h)),
        )
        .await;
        let notified: BTreeMap<String, BTreeSet<String>> = {
            let st = self.state.lock().unwrap();
            let mut all = st.notified.clone();
            for (host, held) in &st.pending {
                all.entry(host.clone())
                    .or_default()
                    .extend(held.iter().cloned());
            }
            all
        };
        let list: Vec<(&str, Vec<String>)> = self
            .handler_targets
            .iter()
            .map(|(n, t)| (n.as_str(), t.iter().filter(|h| live(h)).cloned().collect()))
            .collect();
        for (i, hosts) in handlers::due(&list, &notified) {
            if self.cancelled() {
                self.emit(Event::Interrupted);
                return false;
            }
            let name = &self.handler_targets[i].0;
            self.run_entry(steps + i, all, Some(&hosts)).await;
            // Past a handler's failure threshold the run stops, once the hosts where it ran
            // have their notification cleared.
            let go_on = !self.stopped();
            let done: Vec<&String> = hosts.iter().filter(|h| !self.is_dead(h)).collect();
            let held: Vec<&String> = {
                let mut st = self.state.lock().unwrap();
                for h in &done {
                    if let Some(n) = st.notified.get_mut(*h) {
                        n.remove(name);
                    }
                }
                done.iter()
                    .filter(|h| st.pending.get(**h).is_some_and(|p| p.contains(name)))
                    .copied()
                    .collect()
            };
            if self.opts.check {
                // Nothing is cleared on the host; in this run the handler has been reported.
                let mut st = self.state.lock().unwrap();
                for h in held {
                    if let Some(p) = st.pending.get_mut(h) {
                        p.remove(name);
                    }
                }
            } else {
                futures::future::join_all(
                    held.into_iter()
                        .map(|h| self.clear_pending(steps + i, name, h)),
                )
                .await;
            }
            if !go_on {
                return false;
            }
        }
        true
    }

    /// Reads the pending notifications of `host` (one read-only command).
    async fn read_pending(&self, steps: usize, host: &str) {
        let script = handlers::read_command(self.handlers.pending_file(host));
        let started = Instant::now();
        let title = "pending handlers";
        let res = match self.connection(host).await {
            Ok(conn) => {
                conn.run(Command::new(script.clone()).timeout(self.opts.gather_timeout))
                    .await
            }
            Err(e) => Err(e),
        };
        match res {
            Ok(out) => {
                self.log_command(
                    host,
                    title,
                    &script,
                    out.exit_status,
                    started.elapsed(),
                    &out.stdout_str(),
                    &out.stderr_str(),
                );
                let held = handlers::parse_pending(&out.stdout_str());
                self.state
                    .lock()
                    .unwrap()
                    .pending
                    .insert(host.to_string(), held);
            }
            Err(e) => self.host_lost(steps, title, host, &RunnerError::Transport(e), started),
        }
    }

    /// Removes handler `name` from the pending file of `host`, where it ran: through the gate,
    /// reporting only a failure.
    async fn clear_pending(&self, index: usize, name: &str, host: &str) {
        let once: BTreeSet<String> = [name.to_string()].into();
        let change = Change::new(
            format!("pending notification of `{name}` cleared"),
            vec![Action::run(handlers::clear_command(
                self.handlers.pending_file(host),
                &once,
            ))],
        );
        let cleared = self.apply_bookkeeping(index, name, host, change).await;
        if cleared && let Some(held) = self.state.lock().unwrap().pending.get_mut(host) {
            held.remove(name);
        }
    }

    async fn connection(&self, host: &str) -> Result<Arc<dyn Transport>, TransportError> {
        if let Some(c) = self.state.lock().unwrap().conns.get(host) {
            return Ok(c.clone());
        }
        let target = self
            .targets
            .iter()
            .find(|t| t.name == host)
            .cloned()
            .unwrap_or_else(|| Target {
                name: host.into(),
                ..Default::default()
            });
        let conn = self.connector.connect(&target).await?;
        self.state
            .lock()
            .unwrap()
            .conns
            .insert(host.to_string(), conn.clone());
        Ok(conn)
    }

    /// Facts of step `index` for `host`: from the cache, or by one batched
    /// command covering this step and (when batching) every later step that
    /// needs facts from this host.
    async fn facts_for(
        &self,
        host: &str,
        index: usize,
        steps: &[&dyn Step],
    ) -> Result<Option<Facts>, RunnerError> {
        if let Some(f) = self
            .state
            .lock()
            .unwrap()
            .cache
            .remove(&(host.to_string(), index))
        {
            return Ok(Some(f));
        }
        let Some(own) = steps[index].gather(host) else {
            return Ok(None);
        };
        // A step that runs `on` another host for this one reads that host, when it is reached:
        // in a round trip of its own, never batched or cached with the target's facts.
        let on = steps[index].delegate(host);
        let mut cmds = vec![(index, own)];
        let (ahead, play) = {
            let mut st = self.state.lock().unwrap();
            (on.is_none() && !st.wasted.remove(host), st.steps)
        };
        // The play's steps look ahead to the play's steps; a handler to no other.
        let end = if index < play { play } else { index + 1 };
        if self.opts.batch_facts && ahead {
            for (j, later) in steps.iter().enumerate().take(end).skip(index + 1) {
                let concerned = later
                    .targets()
                    .iter()
                    .any(|t| t == host && self.in_limit(t) && later.delegate(t).is_none())
                    || later.fact_hosts().iter().any(|t| t == host);
                // A step that waits `after` another host's step reads its facts when it starts:
                // what it waits for may change what they say (a file on a share).
                let waits = self.schedule.after.get(j).is_some_and(|a| !a.is_empty());
                if concerned
                    && !waits
                    && let Some(g) = later.gather(host)
                {
                    cmds.push((j, g));
                }
            }
        }
        let conn = match on {
            None => self
                .connection(host)
                .await
                .map_err(RunnerError::Transport)?,
            Some(d) => self
                .connection(d)
                .await
                .map_err(|e| RunnerError::Step(self.delegate_lost(d, host, &e)))?,
        };
        // Steps that gather the same facts (the swarm steps of a manager) share one run of
        // the command: only distinct commands go into the script.
        let mut distinct: Vec<(usize, String)> = Vec::new();
        let mut same_as: Vec<(usize, usize)> = Vec::new();
        for (k, c) in &cmds {
            match distinct.iter().find(|(_, d)| d == c) {
                Some((first, _)) => same_as.push((*k, *first)),
                None => distinct.push((*k, c.clone())),
            }
        }
        // The host's pending notifications ride in its first batch: a run that changes nothing
        // learns there is nothing pending without a round trip of its own.
        let read_pending = on.is_none()
            && self
                .handler_targets
                .iter()
                .any(|(_, t)| t.iter().any(|h| h == host))
            && self.in_limit(host)
            && !self.state.lock().unwrap().pending.contains_key(host);
        if read_pending {
            distinct.push((
                PENDING_KEY,
                handlers::read_command(self.handlers.pending_file(host)),
            ));
        }
        let script = facts::batch_script(&self.nonce, &distinct);
        let started = Instant::now();
        let out = conn
            .run(Command::new(script.clone()).timeout(self.opts.gather_timeout))
            .await
            .map_err(|e| match on {
                None => RunnerError::Transport(e),
                Some(d) => RunnerError::Step(self.delegate_lost(d, host, &e)),
            })?;
        let title = steps[index].title().to_string();
        let stdout = out.stdout_str();
        let mut parsed = facts::parse_batch(&self.nonce, &stdout);
        if let Some(at) = parsed.iter().position(|(k, _)| *k == PENDING_KEY) {
            let (_, f) = parsed.remove(at);
            self.state
                .lock()
                .unwrap()
                .pending
                .insert(host.to_string(), handlers::parse_pending(&f.stdout));
        }
        for (k, first) in same_as {
            if let Some(f) = parsed
                .iter()
                .find(|(j, _)| *j == first)
                .map(|(_, f)| f.clone())
            {
                parsed.push((k, f));
            }
        }
        // Learn the secrets in these facts before anything is reported.
        for (k, f) in &parsed {
            let found = steps[*k].secret_values(host, f);
            if !found.is_empty() {
                let mut r = self.redactor.lock().unwrap();
                *r = r.with_values(found.iter().map(String::as_str));
            }
        }
        // Fact output is not logged: it holds file contents (for --diff) and hashes of
        // contents that may hold secrets. Its size tells whether the gather worked.
        self.log_command(
            host,
            &title,
            &format!(
                "{}(facts for {} step(s))\n{script}",
                on.map(|d| format!("(on {d}) ")).unwrap_or_default(),
                cmds.len()
            ),
            out.exit_status,
            started.elapsed(),
            &format!("({} bytes of facts, not logged)", out.stdout.len()),
            &out.stderr_str(),
        );
        let own_pos = parsed.iter().position(|(k, _)| *k == index);
        let Some(own_pos) = own_pos else {
            return Err(RunnerError::Step(FailureInfo {
                message: Redacted::literal("fact gathering did not complete"),
                command: Some(self.clean(&script)),
                exit_status: out.exit_status,
                stderr: self.clean(&out.stderr_str()),
                hint: Some(Redacted::literal(
                    "is the remote shell POSIX sh? run `provision shell` with the command to see",
                )),
            }));
        };
        let (_, own_facts) = parsed.remove(own_pos);
        let mut st = self.state.lock().unwrap();
        for (k, f) in parsed {
            st.cache.insert((host.to_string(), k), f);
        }
        Ok(Some(own_facts))
    }

    /// The one gate between a plan and the hosts: under --check nothing below runs. True when
    /// the host changed (or, under --check, would). `report`: a result event for the step;
    /// without it (the runner's own bookkeeping) only a failure is reported.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        index: usize,
        title: &str,
        (host, on): (&str, Option<&str>),
        changes: Vec<Change>,
        started: Instant,
        timeout: Duration,
        report: bool,
        at: Option<&crate::registered::AtRun>,
    ) -> bool {
        // `failed_when`/`changed_when`: the step's own result decides how it ended.
        let judged = at.filter(|a| a.rules.judges());
        let summaries: Vec<Redacted> = changes.iter().map(|c| self.clean(&c.summary)).collect();
        let diff = if self.opts.diff {
            let redactor = self.redactor.lock().unwrap().clone();
            let has_secret = |t: &str| redactor.contains_secret(t.as_bytes());
            render_diffs(&changes, &has_secret).map(|d| self.clean(&d))
        } else {
            None
        };
        if self.opts.check {
            if !report {
                return false;
            }
            // A probe that never changes anything ran nothing either: skipped, as Ansible's
            // check mode skips a command, not counted as a change.
            if judged.is_some_and(|a| a.rules.never_changes()) {
                self.result(
                    index,
                    title,
                    host,
                    HostStatus::Skipped,
                    vec![Redacted::literal(
                        "not run under --check (changed_when = false: it changes nothing)",
                    )],
                    None,
                    None,
                    started,
                );
                return false;
            }
            self.result(
                index,
                title,
                host,
                HostStatus::WouldChange,
                summaries,
                diff,
                None,
                started,
            );
            // What the real run would remember, so that a dry run plans as it would.
            self.remember(on.unwrap_or(host), changes.iter());
            return true;
        }
        // Where the changes run: the target, or the host the step runs `on` for it.
        let at = on.unwrap_or(host);
        let conn = match self.connection(at).await {
            Ok(c) => c,
            Err(e) => {
                match on {
                    None => self.host_lost(index, title, host, &RunnerError::Transport(e), started),
                    Some(d) => {
                        self.fail(index, title, host, self.delegate_lost(d, host, &e), started)
                    }
                }
                return false;
            }
        };
        // Whatever happens next, cached facts of this host are stale.
        {
            // A change on a host makes its own cached facts stale, and those of
            // steps that look across hosts (a join changes the managers' view).
            let mut st = self.state.lock().unwrap();
            let cross = st.cross.clone();
            // A host that changed is likely to change again at its next step: it looks ahead
            // again only after a step that changed nothing on it.
            let stale: Vec<String> = st
                .cache
                .keys()
                .filter(|(h, j)| h == at || cross.contains(j))
                .map(|(h, _)| h.clone())
                .chain([at.to_string()])
                .collect();
            st.wasted.extend(stale);
            st.cache.retain(|(h, j), _| h != at && !cross.contains(j));
        }
        // What the commands print, for `register` and `until`.
        let mut printed = crate::registered::Captured::default();
        // With `failed_when`, a command's non-zero exit ends the step without failing it: the
        // expression decides.
        let mut exited = None;
        // What the commands print, for the step's heartbeat while the host is busy on it.
        let tail = self.tail(index, host);
        'changes: for change in &changes {
            for action in &change.actions {
                let res = match action {
                    Action::RunOn { host: other, .. } => match self.connection(other).await {
                        Ok(c) => {
                            self.run_action(
                                &*c,
                                (other, None),
                                title,
                                action,
                                (timeout, tail.clone()),
                                &mut printed,
                            )
                            .await
                        }
                        Err(e) => Err(RunnerError::Step(FailureInfo {
                            message: self
                                .clean(&format!("cannot reach {other} to act for {host}: {e}")),
                            command: None,
                            exit_status: None,
                            stderr: Redacted::default(),
                            hint: None,
                        })),
                    },
                    _ => {
                        let logged = (host, on);
                        let run = (timeout, tail.clone());
                        self.run_action(&*conn, logged, title, action, run, &mut printed)
                            .await
                    }
                };
                // The runner's own bookkeeping (`report` false) is not the step's result.
                if report {
                    self.captured(index, host, &printed);
                }
                if let Err(e) = res {
                    if let (Some(a), RunnerError::Step(f)) = (judged, &e)
                        && a.rules.failed_when.is_some()
                        && f.exit_status.is_some()
                    {
                        exited = Some(f.clone());
                        break 'changes;
                    }
                    match e {
                        RunnerError::Transport(t) if t.is_unreachable() => match on {
                            None => self.host_lost(
                                index,
                                title,
                                host,
                                &RunnerError::Transport(t),
                                started,
                            ),
                            Some(d) => self.fail(
                                index,
                                title,
                                host,
                                self.delegate_lost(d, host, &t),
                                started,
                            ),
                        },
                        other => self.fail(index, title, host, self.failure(&other), started),
                    };
                    return false;
                }
            }
            self.remember(at, [change]);
        }
        if let Some(a) = judged {
            return self.judged(
                index, title, host, a, &printed, exited, summaries, diff, started,
            );
        }
        if report {
            self.result(
                index,
                title,
                host,
                HostStatus::Changed,
                summaries,
                diff,
                None,
                started,
            );
        }
        true
    }

    /// Remembers the marks of `changes` applied on `host` ([`Change::marks`]).
    fn remember<'a>(&self, host: &str, changes: impl IntoIterator<Item = &'a Change>) {
        let mut st = self.state.lock().unwrap();
        for m in changes.into_iter().flat_map(|c| &c.marks) {
            st.marks
                .entry(host.to_string())
                .or_default()
                .insert(m.clone());
        }
    }

    /// Reports how a step with `failed_when`/`changed_when` ended on `host`, from what its
    /// commands printed (`exited`: the command that exited non-zero). True when it changed.
    #[allow(clippy::too_many_arguments)]
    fn judged(
        &self,
        index: usize,
        title: &str,
        host: &str,
        at: &crate::registered::AtRun,
        printed: &crate::registered::Captured,
        exited: Option<FailureInfo>,
        summaries: Vec<Redacted>,
        diff: Option<Redacted>,
        started: Instant,
    ) -> bool {
        // A command that ran changed, whatever its exit status (Ansible's), unless
        // `changed_when` says otherwise.
        let own = crate::registered::Registered {
            failed: exited.is_some(),
            ..crate::registered::Registered::from_outcome(HostStatus::Changed, Some(printed))
        };
        let registered = self.registered_on(host);
        let rules = &at.rules;
        let failure = |message: String| FailureInfo {
            message: self.clean(&message),
            command: exited.as_ref().and_then(|f| f.command.clone()),
            exit_status: printed.rc,
            stderr: self.clean(own.stderr.trim()),
            hint: None,
        };
        match at.judge(host, &own, &registered) {
            Err(e) => {
                self.fail(index, title, host, failure(e), started);
                false
            }
            Ok((true, _)) => {
                let why = match (&rules.failed_when, &exited) {
                    (Some(expr), _) => format!("`failed_when = {expr}` is true (rc {})", own.rc),
                    (None, Some(f)) => f.message.as_str().to_string(),
                    (None, None) => "failed".to_string(),
                };
                self.fail(index, title, host, failure(why), started);
                false
            }
            Ok((false, changed)) => {
                let (status, details) = match (changed, &rules.changed_when) {
                    (true, _) => (HostStatus::Changed, summaries),
                    (false, Some(expr)) => (
                        HostStatus::Ok,
                        vec![self.clean(&format!("`changed_when = {expr}` is false"))],
                    ),
                    (false, None) => (HostStatus::Ok, summaries),
                };
                let diff = diff.filter(|_| changed);
                self.result(index, title, host, status, details, diff, None, started);
                changed
            }
        }
    }

    /// Runs one action over `conn`; logged under `host`, as run on `on` when the step runs on
    /// another host for it.
    async fn run_action(
        &self,
        conn: &dyn Transport,
        (host, on): (&str, Option<&str>),
        title: &str,
        action: &Action,
        (timeout, tail): (Duration, Option<Tail>),
        printed: &mut crate::registered::Captured,
    ) -> Result<(), RunnerError> {
        let started = Instant::now();
        match action {
            Action::Run { script, stdin } | Action::RunOn { script, stdin, .. } => {
                let stdin = stdin
                    .as_ref()
                    .map(|s| Stdin::Bytes(s.clone()))
                    .unwrap_or_default();
                let mut cmd = Command::new(script.clone()).stdin(stdin).timeout(timeout);
                cmd.tail = tail;
                let out = conn.run(cmd).await.map_err(RunnerError::Transport)?;
                let logged = match on {
                    Some(d) => format!("(on {d}) {script}"),
                    None => script.clone(),
                };
                self.log_command(
                    host,
                    title,
                    &logged,
                    out.exit_status,
                    started.elapsed(),
                    &out.stdout_str(),
                    &out.stderr_str(),
                );
                printed.rc = out.exit_status;
                printed
                    .stdout
                    .push_str(self.clean(&out.stdout_str()).as_str());
                printed
                    .stderr
                    .push_str(self.clean(&out.stderr_str()).as_str());
                if !out.success() {
                    return Err(RunnerError::Step(FailureInfo {
                        message: self
                            .clean(&format!("command failed with {}", out.describe_exit())),
                        command: Some(self.clean(script)),
                        exit_status: out.exit_status,
                        stderr: self.clean(out.stderr_str().trim()),
                        hint: None,
                    }));
                }
            }
            Action::Upload { .. } => {
                let up = action.upload().expect("an upload action");
                let res = conn.upload(up).await;
                let status = if res.is_ok() { Some(0) } else { None };
                self.log_command(
                    host,
                    title,
                    &match on {
                        Some(d) => format!("(on {d}) {}", action.describe()),
                        None => action.describe(),
                    },
                    status,
                    started.elapsed(),
                    "",
                    &res.as_ref()
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default(),
                );
                res.map_err(RunnerError::Transport)?;
            }
        }
        Ok(())
    }

    /// Why `host` fails when the host its step runs `on` cannot be reached: its step failed
    /// there, but `host` itself is not unreachable.
    fn delegate_lost(&self, on: &str, host: &str, e: &TransportError) -> FailureInfo {
        FailureInfo {
            message: self
                .clean(&format!(
                    "cannot reach {on} to run the step there for {host}: {e}"
                ))
                .shortened(MAX_LINE_CHARS),
            command: None,
            exit_status: None,
            stderr: Redacted::default(),
            hint: Some(Redacted::literal(
                "the step's `on` names that host: check that it is up and reachable over SSH",
            )),
        }
    }

    /// The host step `index` ran on for `host`, when another (`on`): for its result.
    fn on(&self, index: usize, host: &str) -> Option<Redacted> {
        let st = self.state.lock().unwrap();
        st.on.get(&(index, host.to_string())).map(|d| self.clean(d))
    }

    /// The one redaction point of the runner.
    fn clean(&self, s: &str) -> Redacted {
        self.redactor.lock().unwrap().clean(s)
    }

    fn failure(&self, e: &RunnerError) -> FailureInfo {
        match e {
            RunnerError::Transport(t) => FailureInfo {
                // Redacted whole, then shortened (a command line can be long).
                message: self.clean(&t.to_string()).shortened(MAX_LINE_CHARS),
                command: None,
                exit_status: None,
                stderr: Redacted::default(),
                hint: match t {
                    TransportError::CommandTimeout { stopped: true, .. } => {
                        Some(Redacted::literal(
                            "the host stopped it (TERM to its processes, KILL 5 s later): what it changed so far stays; if it needs longer, set `timeout` (seconds) on the step, or `provision run --timeout SECONDS`",
                        ))
                    }
                    TransportError::CommandTimeout { stopped: false, .. } => {
                        Some(Redacted::literal(
                            "the host did not answer in time, so the command may still be running there: look; if it needs longer, set `timeout` (seconds) on the step, or `provision run --timeout SECONDS`",
                        ))
                    }
                    _ => None,
                },
            },
            RunnerError::Step(f) => f.clone(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn log_command(
        &self,
        host: &str,
        step: &str,
        command: &str,
        exit_status: Option<u32>,
        duration: Duration,
        stdout: &str,
        stderr: &str,
    ) {
        self.emit(Event::Command {
            host: self.clean(host),
            step: self.clean(step),
            command: self.clean(command),
            exit_status,
            duration,
            stdout: self.clean(stdout),
            stderr: self.clean(stderr),
        });
    }

    fn host_lost(&self, index: usize, title: &str, host: &str, e: &RunnerError, started: Instant) {
        self.idle(index, host);
        let unreachable = matches!(e, RunnerError::Transport(t) if t.is_unreachable());
        let failure = self.failure(e);
        if unreachable {
            {
                let mut st = self.state.lock().unwrap();
                st.dead.insert(host.into(), Dead::Unreachable);
                st.conns.remove(host);
                if let Some(r) = st.recap.get_mut(host) {
                    r.unreachable = true;
                    r.failures.push((self.clean(title), failure.clone()));
                }
            }
            let on = self.on(index, host);
            self.timed(index, host, started.elapsed());
            let (index, handler) = self.position(index);
            self.emit(Event::HostResult {
                index,
                step: self.clean(title),
                host: self.clean(host),
                status: HostStatus::Unreachable,
                details: vec![],
                diff: None,
                failure: Some(failure),
                duration: started.elapsed(),
                handler,
                on,
            });
        } else {
            self.fail(index, title, host, failure, started);
        }
    }

    fn fail(&self, index: usize, title: &str, host: &str, failure: FailureInfo, started: Instant) {
        // A retried step's failure waits for the retry's decision.
        let held = at_run::Outcome {
            status: HostStatus::Failed,
            details: vec![],
            diff: None,
            failure: Some(failure),
            started,
        };
        let Some(at_run::Outcome {
            failure: Some(failure),
            ..
        }) = self.hold(index, host, held)
        else {
            return;
        };
        let ignored = {
            let mut st = self.state.lock().unwrap();
            let ignored = st.ignoring.contains(&index);
            // `ignore_errors`: the host stays in the run, and the failure is not the run's.
            if !ignored {
                st.dead.insert(host.into(), Dead::Failed);
                if let Some(r) = st.recap.get_mut(host) {
                    r.failures.push((self.clean(title), failure.clone()));
                }
            }
            ignored
        };
        self.result(
            index,
            title,
            host,
            if ignored {
                HostStatus::Ignored
            } else {
                HostStatus::Failed
            },
            vec![],
            None,
            Some(failure),
            started,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn result(
        &self,
        index: usize,
        title: &str,
        host: &str,
        status: HostStatus,
        details: Vec<Redacted>,
        diff: Option<Redacted>,
        failure: Option<FailureInfo>,
        started: Instant,
    ) {
        self.idle(index, host);
        let outcome = at_run::Outcome {
            status,
            details,
            diff,
            failure,
            started,
        };
        let Some(at_run::Outcome {
            status,
            details,
            diff,
            failure,
            started,
        }) = self.hold(index, host, outcome)
        else {
            return;
        };
        {
            let mut st = self.state.lock().unwrap();
            let r = st.recap.entry(host.to_string()).or_default();
            match status {
                HostStatus::Ok => r.ok += 1,
                HostStatus::Changed => r.changed += 1,
                HostStatus::WouldChange => r.would_change += 1,
                HostStatus::Skipped => r.skipped += 1,
                HostStatus::Failed => r.failed += 1,
                HostStatus::Unreachable => r.unreachable = true,
                HostStatus::Ignored => r.ignored += 1,
            }
        }
        let on = self.on(index, host);
        let duration = started.elapsed();
        self.timed(index, host, duration);
        let (index, handler) = self.position(index);
        self.emit(Event::HostResult {
            index,
            step: self.clean(title),
            host: self.clean(host),
            status,
            details,
            diff,
            failure,
            duration,
            handler,
            on,
        });
    }
}

#[derive(Debug)]
enum RunnerError {
    Transport(TransportError),
    Step(FailureInfo),
}

impl Runner {
    fn failure_from_step(&self, e: &StepError) -> FailureInfo {
        FailureInfo {
            message: self.clean(&e.message),
            command: None,
            exit_status: None,
            stderr: Redacted::default(),
            hint: e.hint.as_deref().map(|h| self.clean(h)),
        }
    }
}

/// Unified diffs of every file change, concatenated. A line replaced by one holding a known
/// secret is shown without its old value: it most likely held the previous value of that secret
/// (rotated), which the redactor does not know.
fn render_diffs(changes: &[Change], has_secret: &dyn Fn(&str) -> bool) -> Option<String> {
    let mut out = String::new();
    for c in changes {
        if let Some(d) = &c.diff {
            let before = hide_replaced_secrets(
                d.before.as_deref().unwrap_or_default(),
                &d.after,
                has_secret,
            );
            let text = similar::TextDiff::from_lines(&before, &d.after);
            let old_name = if d.before.is_some() {
                format!("a{}", d.path)
            } else {
                "/dev/null".to_string()
            };
            out.push_str(
                &text
                    .unified_diff()
                    .context_radius(3)
                    .header(&old_name, &format!("b{}", d.path))
                    .to_string(),
            );
        }
    }
    if out.is_empty() { None } else { Some(out) }
}

/// `before` with every line that the diff replaces by a line holding a secret shown as its key
/// (up to the first `=` or `:`) and `***`, or as `***` alone.
fn hide_replaced_secrets(before: &str, after: &str, has_secret: &dyn Fn(&str) -> bool) -> String {
    let diff = similar::TextDiff::from_lines(before, after);
    let old: Vec<&str> = before.split_inclusive('\n').collect();
    let new: Vec<&str> = after.split_inclusive('\n').collect();
    let mut hide = vec![false; old.len()];
    for op in diff.ops() {
        if let similar::DiffOp::Replace {
            old_index,
            old_len,
            new_index,
            new_len,
        } = *op
            && new[new_index..new_index + new_len]
                .iter()
                .any(|l| has_secret(l))
        {
            hide[old_index..old_index + old_len].fill(true);
        }
    }
    old.iter()
        .zip(hide)
        .map(|(line, hide)| {
            if !hide {
                return line.to_string();
            }
            let end = if line.ends_with('\n') { "\n" } else { "" };
            match line.find(['=', ':']) {
                Some(at) if at <= 64 => format!("{} ***{end}", line[..=at].trim_end()),
                _ => format!("***{end}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::hide_replaced_secrets;

    /// Only lines replaced by a line holding a secret are hidden; their key stays readable.
    #[test]
    fn lines_replaced_by_secrets_are_hidden_with_their_key() {
        let has = |t: &str| t.contains("NEW-SECRET");
        let before = "a = 1\npass: old-one\nPEM-OLD-LINE\nport = 1\nkeep\n";
        let after = "a = 2\npass: NEW-SECRET\nNEW-SECRET-PEM\nport = 2\nkeep\n";
        assert_eq!(
            hide_replaced_secrets(before, after, &has),
            "a = ***\npass: ***\n***\nport = ***\nkeep\n",
            "one replaced block: all its old lines are hidden"
        );
        let before = "a = 1\nx\npass = old\n";
        let after = "a = 2\nx\npass = NEW-SECRET";
        assert_eq!(
            hide_replaced_secrets(before, after, &has),
            "a = 1\nx\npass = ***\n"
        );
    }
}
