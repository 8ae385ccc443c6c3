//! What a run reports, as events sent to sinks (terminal progress, JSON lines, the
//! run log). Every text in an event is [`Redacted`]: it has been through secret redaction,
//! and an event cannot be built from text that has not.

pub use provision_secrets::{Redacted, Redactor};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    Ok,
    Changed,
    /// --check: it would change.
    WouldChange,
    Skipped,
    Failed,
    Unreachable,
    /// Failed on a step with `ignore_errors`: reported, and the host goes on.
    Ignored,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Ok => "ok",
            HostStatus::Changed => "changed",
            HostStatus::WouldChange => "would change",
            HostStatus::Skipped => "skipped",
            HostStatus::Failed => "failed",
            HostStatus::Unreachable => "unreachable",
            HostStatus::Ignored => "ignored",
        }
    }
}

/// A failure, with everything a person needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureInfo {
    pub message: Redacted,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Redacted>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<u32>,
    #[serde(skip_serializing_if = "Redacted::is_empty")]
    pub stderr: Redacted,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<Redacted>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        hosts: usize,
        steps: usize,
        check: bool,
    },
    StepStarted {
        index: usize,
        title: Redacted,
        hosts: Vec<Redacted>,
        /// A handler (`[[handlers]]`): `index` counts handlers, `title` is its name.
        #[serde(skip_serializing_if = "is_false")]
        handler: bool,
    },
    /// The outcome of one step on one host.
    HostResult {
        index: usize,
        step: Redacted,
        host: Redacted,
        status: HostStatus,
        /// Why ok / skipped, or the change summaries.
        details: Vec<Redacted>,
        #[serde(skip_serializing_if = "Option::is_none")]
        diff: Option<Redacted>,
        #[serde(skip_serializing_if = "Option::is_none")]
        failure: Option<FailureInfo>,
        #[serde(serialize_with = "millis")]
        duration: Duration,
        /// The outcome of a handler (`[[handlers]]`): `index` counts handlers, `step` is its name.
        #[serde(skip_serializing_if = "is_false")]
        handler: bool,
        /// Where the step ran for `host` when that is another host (`on`, Ansible's
        /// `delegate_to`): the result is `host`'s, its gather and commands ran on this one.
        #[serde(skip_serializing_if = "Option::is_none")]
        on: Option<Redacted>,
    },
    /// Every remote command, for the run log (not shown on the terminal). The output of
    /// fact gathering is not kept (it may hold file contents): only its size.
    Command {
        host: Redacted,
        step: Redacted,
        command: Redacted,
        exit_status: Option<u32>,
        #[serde(serialize_with = "millis")]
        duration: Duration,
        stdout: Redacted,
        stderr: Redacted,
    },
    /// A retried step (`retries`) failed on a host, or its `until` did not hold there, and it
    /// runs there again after its `delay`: retry `retry` of `retries`.
    Retrying {
        index: usize,
        step: Redacted,
        host: Redacted,
        retry: u32,
        retries: u32,
        /// Why: the failure, or the `until` that is still false.
        reason: Redacted,
        #[serde(skip_serializing_if = "is_false")]
        handler: bool,
    },
    Interrupted,
    RunFinished {
        recap: Recap,
        #[serde(serialize_with = "millis")]
        duration: Duration,
        /// How long each step took, in playbook order (handlers last): `provision run
        /// --profile` shows the slowest.
        timings: Vec<StepTiming>,
    },
    /// The heartbeat of a long step: every [`crate::runner::HEARTBEAT`] (10 s) while it runs,
    /// the hosts still busy on it. Sent as it happens, not held back for playbook order (under
    /// `pipelined` several steps may be running, each with its own heartbeat).
    StepRunning {
        index: usize,
        step: Redacted,
        #[serde(skip_serializing_if = "is_false")]
        handler: bool,
        /// Since the step started.
        seconds: u64,
        busy: Vec<Busy>,
    },
}

/// A host still working on a step, in a heartbeat ([`Event::StepRunning`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Busy {
    pub host: Redacted,
    /// Since the host started on the step.
    pub seconds: u64,
    /// The last complete line its command printed so far (stdout or stderr), redacted as all
    /// command output is; none while it printed no whole line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_line: Option<Redacted>,
}

/// How long one step took: from its start to the result of its last host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepTiming {
    pub index: usize,
    pub step: Redacted,
    #[serde(skip_serializing_if = "is_false")]
    pub handler: bool,
    #[serde(serialize_with = "millis")]
    pub duration: Duration,
    /// The host whose result took longest, and how long it took.
    pub slowest_host: Redacted,
    #[serde(serialize_with = "millis")]
    pub slowest_host_duration: Duration,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Counts per host, plus every failure, for the end of a run.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Recap {
    pub hosts: Vec<HostRecap>,
    /// Why the run stopped before its end: a step's `max_fail_percentage` was exceeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Redacted>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HostRecap {
    pub host: Redacted,
    pub ok: usize,
    pub changed: usize,
    pub would_change: usize,
    pub skipped: usize,
    pub failed: usize,
    pub unreachable: bool,
    /// Failures of steps with `ignore_errors`: they do not fail the host or the run.
    pub ignored: usize,
    /// (step, failure) for each failure on this host.
    pub failures: Vec<(Redacted, FailureInfo)>,
}

impl Recap {
    pub fn changed(&self) -> usize {
        self.hosts.iter().map(|h| h.changed + h.would_change).sum()
    }

    pub fn failed_hosts(&self) -> usize {
        self.hosts
            .iter()
            .filter(|h| h.failed > 0 || h.unreachable)
            .count()
    }

    pub fn is_success(&self) -> bool {
        self.failed_hosts() == 0 && self.stopped.is_none()
    }
}

/// Receives events. Sinks must be cheap: the runner calls them inline.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: &Event);
}

/// Collects events in memory (tests, and the recap).
#[derive(Default)]
pub struct MemorySink {
    pub events: std::sync::Mutex<Vec<Event>>,
}

impl EventSink for MemorySink {
    fn emit(&self, event: &Event) {
        self.events.lock().unwrap().push(event.clone());
    }
}

impl MemorySink {
    pub fn results(&self) -> Vec<(String, String, HostStatus)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::HostResult {
                    step, host, status, ..
                } => Some((step.to_string(), host.to_string(), *status)),
                _ => None,
            })
            .collect()
    }
}

/// Sends every event to several sinks.
pub struct Fanout(pub Vec<std::sync::Arc<dyn EventSink>>);

impl EventSink for Fanout {
    fn emit(&self, event: &Event) {
        for s in &self.0 {
            s.emit(event);
        }
    }
}
