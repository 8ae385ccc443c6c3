//! What a step is: hosts to gather facts from, a fact command, a pure check from
//! facts to a plan, and the actions that carry the plan out (run by the engine).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use zeroize::Zeroizing;

/// The output of a step's fact command on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub stdout: String,
    pub exit_status: Option<u32>,
    /// What earlier changes of this run left on the host, as the runner remembers it
    /// ([`Change::marks`]): what its files cannot tell (apt's package lists were refreshed in
    /// this run, however old the `cache_valid_time` allows them to be).
    pub marks: BTreeSet<String>,
}

impl Facts {
    pub fn new(stdout: impl Into<String>) -> Self {
        Facts {
            stdout: stdout.into(),
            exit_status: Some(0),
            marks: BTreeSet::new(),
        }
    }

    /// `key=value` lines (the format most fact commands print) as a map; other lines are ignored.
    pub fn kv(&self) -> BTreeMap<&str, &str> {
        self.stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .collect()
    }
}

/// Something the engine does on a host to apply a change. Steps only describe
/// actions; the engine runs them through the transport (and not at all under --check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A POSIX sh script that must exit 0; `stdin` carries secrets or content, never argv.
    Run {
        script: String,
        stdin: Option<Zeroizing<Vec<u8>>>,
    },
    /// Like `Run`, on another host of the inventory (a swarm manager updating a
    /// node's labels). A failure counts against the host the change is for.
    RunOn {
        host: String,
        script: String,
        stdin: Option<Zeroizing<Vec<u8>>>,
    },
    /// Write a file atomically.
    Upload {
        dest: String,
        content: Zeroizing<Vec<u8>>,
        mode: Option<u32>,
        owner: Option<String>,
        group: Option<String>,
    },
}

impl Action {
    /// An `Upload` action as the transport's upload (None for commands).
    pub fn upload(&self) -> Option<provision_transport::Upload> {
        match self {
            Action::Upload {
                dest,
                content,
                mode,
                owner,
                group,
            } => Some(provision_transport::Upload {
                dest: dest.clone(),
                source: provision_transport::UploadSource::Bytes(content.clone()),
                mode: *mode,
                owner: owner.clone(),
                group: group.clone(),
            }),
            _ => None,
        }
    }

    pub fn run(script: impl Into<String>) -> Self {
        Action::Run {
            script: script.into(),
            stdin: None,
        }
    }

    pub fn run_with_stdin(script: impl Into<String>, stdin: impl Into<Vec<u8>>) -> Self {
        Action::Run {
            script: script.into(),
            stdin: Some(Zeroizing::new(stdin.into())),
        }
    }

    /// The command as it is logged (uploads show their destination only).
    pub fn describe(&self) -> String {
        match self {
            Action::Run { script, .. } => script.clone(),
            Action::RunOn { host, script, .. } => format!("(on {host}) {script}"),
            Action::Upload {
                dest,
                content,
                mode,
                ..
            } => {
                format!(
                    "upload {} bytes to {dest}{}",
                    content.len(),
                    mode.map(|m| format!(" (mode {m:o})")).unwrap_or_default()
                )
            }
        }
    }
}

/// Content change of a file, for `--diff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    pub path: String,
    pub before: Option<String>,
    pub after: String,
}

/// One change a step makes on one host: what it means to a person, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub summary: String,
    pub actions: Vec<Action>,
    pub diff: Option<FileDiff>,
    /// Hosts with such a change are changed one at a time (`StepPlan::serial`): a restart of a
    /// service every node of a cluster runs (dockerd under the swarm) must not happen on all
    /// of them at once.
    pub one_at_a_time: bool,
    /// Remembered on the host for the rest of the run once this change's actions all ran (or,
    /// under `--check`, would have): later steps' [`Facts::marks`] on that host hold them.
    pub marks: Vec<String>,
}

impl Change {
    pub fn new(summary: impl Into<String>, actions: Vec<Action>) -> Self {
        Change {
            summary: summary.into(),
            actions,
            diff: None,
            one_at_a_time: false,
            marks: Vec::new(),
        }
    }

    /// See [`Change::marks`].
    pub fn marking(mut self, mark: impl Into<String>) -> Self {
        self.marks.push(mark.into());
        self
    }

    /// See [`Change::one_at_a_time`].
    pub fn one_at_a_time(mut self) -> Self {
        self.one_at_a_time = true;
        self
    }

    pub fn with_diff(mut self, diff: FileDiff) -> Self {
        self.diff = Some(diff);
        self
    }
}

/// The decision of a step for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Nothing to do, and why ("swap /swapfile 2G active").
    Ok(String),
    Change(Vec<Change>),
    /// Deliberately not run here ("not a manager"), not an error.
    Skip(String),
}

/// Why a step cannot go on for a host: shown to the user with what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub message: String,
    pub hint: Option<String>,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

/// A step's plan across its hosts.
#[derive(Debug, Clone, Default)]
pub struct StepPlan {
    pub hosts: BTreeMap<String, Result<Check, StepError>>,
    /// Apply host changes one at a time, in `order` (managers joining a swarm, daemons
    /// restarting): within each batch of the step's `serial` rollout, when it has one.
    pub serial: bool,
    /// Order of application; hosts not listed are applied after, by name.
    pub order: Vec<String>,
}

/// A step of one host, built from rendered parameters. The general steps
/// (`apt`, `template`, ...) are all of this kind.
pub trait HostStep: Send + Sync {
    /// A POSIX sh command printing what `check` needs; None when nothing is needed.
    /// Must not change the host: it also runs under --check.
    fn gather(&self) -> Option<String>;

    /// Pure: facts to a decision.
    fn check(&self, facts: &Facts) -> Result<Check, StepError>;

    /// Hosts whose earlier steps this one needs finished although it neither runs on them nor
    /// reads their facts (an NFS mount needs the server's export). Default: none.
    fn waits_for_hosts(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A playbook entry as the engine runs it: possibly looking at several hosts'
/// facts at once (the swarm steps), or one host at a time (`PerHost`).
pub trait Step: Send + Sync {
    fn title(&self) -> &str;

    /// Hosts the step may change, in inventory order.
    fn targets(&self) -> Vec<String>;

    /// Hosts whose facts the plan needs besides the targets, gathered even when
    /// --limit keeps them from changing (a join step reads the managers' state
    /// when only a new node may change). Default: none.
    fn fact_hosts(&self) -> Vec<String> {
        Vec::new()
    }

    /// Hosts whose earlier steps this one needs finished although it neither runs on them nor
    /// reads their facts (a stack deploy needs every node's images and mounts): under the
    /// `pipelined` strategy it waits for them as for its own hosts. Default: none.
    fn waits_for_hosts(&self) -> Vec<String> {
        Vec::new()
    }

    /// The fact command for one host (None: no facts needed from it).
    fn gather(&self, host: &str) -> Option<String>;

    /// Pure: all gathered facts to a plan. A host whose facts could not be
    /// gathered is absent from `facts`.
    fn plan(&self, facts: &BTreeMap<String, Facts>) -> StepPlan;

    /// Values in this step's facts from `host` that must never be shown (a swarm
    /// join token): the runner redacts them from logs and events from then on.
    fn secret_values(&self, _host: &str, _facts: &Facts) -> Vec<String> {
        Vec::new()
    }

    /// How long each command of this step's plan may run; None: the run's default
    /// (`RunOptions::command_timeout`). A step whose commands wait by design (a stack
    /// deploy that waits for convergence) says how long they may.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// The handlers (by name) this step notifies on each host it changes. Default: none.
    fn notifies(&self) -> &[String] {
        &[]
    }

    /// True for `use = "flush_handlers"`: the runner runs the handlers notified so far here.
    fn flushes_handlers(&self) -> bool {
        false
    }

    /// What is decided about this step when it is reached (`register`, a `when` over registered
    /// results, retries); None: nothing (default).
    fn at_run(&self) -> Option<&crate::registered::AtRun> {
        None
    }
    /// How the step rolls out over its hosts (`serial`, `max_fail_percentage`, `run_once`).
    /// Default: all hosts at once.
    fn rollout(&self) -> &crate::rollout::Rollout {
        &crate::rollout::ALL_AT_ONCE
    }
    /// The host whose connection runs this step's gather and commands for target `host`
    /// (`on = "HOST"`, Ansible's `delegate_to`); None: the target's own. Templates, results,
    /// `register` and notifications stay the target's.
    fn delegate(&self, _host: &str) -> Option<&str> {
        None
    }
}

/// A built step with what its playbook entry adds around it: the `timeout` of every command of
/// its plan, the handlers its `notify` names, what is decided when it is reached (`register`, a
/// `when` over registered results, retries) and its rollout (`serial`, `max_fail_percentage`,
/// `run_once`) and where it runs for each host (`on`). One wrapper, so that a new per-step setting is a field here, not one more type
/// forwarding every method.
pub struct Configured {
    pub step: Box<dyn Step>,
    pub timeout: Option<Duration>,
    pub notifies: Vec<String>,
    pub at: Option<crate::registered::AtRun>,
    pub rollout: Option<crate::rollout::Rollout>,
    /// Target host to the host it runs on instead (`on`); a host absent runs on itself.
    pub on: BTreeMap<String, String>,
}

impl Configured {
    /// `step` with nothing added (set the fields that apply).
    pub fn new(step: Box<dyn Step>) -> Configured {
        Configured {
            step,
            timeout: None,
            notifies: Vec::new(),
            at: None,
            rollout: None,
            on: BTreeMap::new(),
        }
    }

    /// Whether nothing is added: the step can run as it is.
    pub fn adds_nothing(&self) -> bool {
        self.timeout.is_none()
            && self.notifies.is_empty()
            && self.at.is_none()
            && self.rollout.is_none()
            && self.on.is_empty()
    }
}

impl Step for Configured {
    fn title(&self) -> &str {
        self.step.title()
    }
    fn targets(&self) -> Vec<String> {
        self.step.targets()
    }
    fn fact_hosts(&self) -> Vec<String> {
        self.step.fact_hosts()
    }
    fn waits_for_hosts(&self) -> Vec<String> {
        self.step.waits_for_hosts()
    }
    fn gather(&self, host: &str) -> Option<String> {
        self.step.gather(host)
    }
    fn plan(&self, facts: &BTreeMap<String, Facts>) -> StepPlan {
        self.step.plan(facts)
    }
    fn secret_values(&self, host: &str, facts: &Facts) -> Vec<String> {
        self.step.secret_values(host, facts)
    }
    fn timeout(&self) -> Option<Duration> {
        self.timeout.or_else(|| self.step.timeout())
    }
    fn notifies(&self) -> &[String] {
        if self.notifies.is_empty() {
            self.step.notifies()
        } else {
            &self.notifies
        }
    }
    fn flushes_handlers(&self) -> bool {
        self.step.flushes_handlers()
    }
    fn at_run(&self) -> Option<&crate::registered::AtRun> {
        self.at.as_ref().or_else(|| self.step.at_run())
    }
    fn rollout(&self) -> &crate::rollout::Rollout {
        self.rollout.as_ref().unwrap_or_else(|| self.step.rollout())
    }
    fn delegate(&self, host: &str) -> Option<&str> {
        match self.on.get(host) {
            Some(d) => Some(d),
            None => self.step.delegate(host),
        }
    }
}

/// `use = "flush_handlers"`: no hosts of its own, no facts, no plan; the runner runs the handlers
/// notified so far when it reaches it.
pub struct FlushHandlers {
    pub title: String,
}

impl Step for FlushHandlers {
    fn title(&self) -> &str {
        &self.title
    }
    fn targets(&self) -> Vec<String> {
        Vec::new()
    }
    fn gather(&self, _host: &str) -> Option<String> {
        None
    }
    fn plan(&self, _facts: &BTreeMap<String, Facts>) -> StepPlan {
        StepPlan::default()
    }
    fn flushes_handlers(&self) -> bool {
        true
    }
}

/// A step made of independent per-host steps.
pub struct PerHost {
    pub title: String,
    /// Host name to its step, in inventory order.
    pub hosts: Vec<(String, Box<dyn HostStep>)>,
}

impl Step for PerHost {
    fn title(&self) -> &str {
        &self.title
    }

    fn targets(&self) -> Vec<String> {
        self.hosts.iter().map(|(h, _)| h.clone()).collect()
    }

    /// What any of its hosts' steps waits for.
    fn waits_for_hosts(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for h in self.hosts.iter().flat_map(|(_, s)| s.waits_for_hosts()) {
            if !all.contains(&h) {
                all.push(h);
            }
        }
        all
    }

    fn gather(&self, host: &str) -> Option<String> {
        self.hosts
            .iter()
            .find(|(h, _)| h == host)
            .and_then(|(_, s)| s.gather())
    }

    fn plan(&self, facts: &BTreeMap<String, Facts>) -> StepPlan {
        let mut plan = StepPlan {
            order: self.targets(),
            ..StepPlan::default()
        };
        let empty = Facts::default();
        for (host, step) in &self.hosts {
            let needs_facts = step.gather().is_some();
            let result = match (needs_facts, facts.get(host)) {
                (true, None) => continue, // unreachable host: the runner reports it
                (true, Some(f)) => step.check(f),
                (false, _) => step.check(&empty),
            };
            if let Ok(Check::Change(c)) = &result {
                plan.serial |= c.iter().any(|c| c.one_at_a_time);
            }
            plan.hosts.insert(host.clone(), result);
        }
        plan
    }
}
