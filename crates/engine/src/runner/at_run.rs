//! The runner's side of `register`, a `when` over registered results, and retries: the results
//! each host registered, the `when` decided when the step is reached, and a retried step's
//! outcomes held back until its `until` (or the host's failure) decides whether it runs again.

use super::{Runner, Step};
use crate::event::{Event, FailureInfo, HostStatus, Redacted};
use crate::registered::{AtRun, Captured, Registered, Retry};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio::time::Instant;

/// What the runner keeps for these features.
#[derive(Default)]
pub(super) struct Kept {
    /// Host to the results registered there, by name (a later `register` of a name wins).
    registered: HashMap<String, BTreeMap<String, Registered>>,
    /// Host to the step index and what the commands of its last change printed.
    captured: HashMap<String, (usize, Captured)>,
    /// Host to the step index and how that step ended there (reported, or held back).
    last: HashMap<String, (usize, HostStatus)>,
    /// Step index to the attempt of a retried step in progress (steps that overlap may both
    /// be retrying).
    retrying: HashMap<usize, Attempt>,
}

struct Attempt {
    number: u32,
    /// Hosts whose outcome is held back.
    hosts: BTreeSet<String>,
    outcomes: BTreeMap<String, Outcome>,
}

/// A host's outcome of a step, as the runner reports it.
pub(super) struct Outcome {
    pub status: HostStatus,
    pub details: Vec<Redacted>,
    pub diff: Option<Redacted>,
    pub failure: Option<FailureInfo>,
    pub started: Instant,
}

impl Runner {
    /// Runs step `index` (`only` these hosts, for a handler), deciding at run time what its
    /// `when`, `retries` and `register` ask for.
    pub(super) async fn run_entry_now(
        &self,
        index: usize,
        steps: &[&dyn Step],
        only: Option<&[String]>,
    ) {
        let step = steps[index];
        let Some(at) = step.at_run() else {
            // Whether the run stops here is recorded in the state (`Runner::stopped`).
            self.run_step(index, steps, only).await;
            return;
        };
        let hosts: Vec<String> = step
            .targets()
            .into_iter()
            .filter(|h| self.in_limit(h) && !self.is_dead(h))
            .filter(|h| only.is_none_or(|o| o.contains(h)))
            .collect();
        self.forget(index, &hosts);
        match &at.retry {
            Some(retry) => {
                self.run_retried(index, steps, at, retry, hosts.clone())
                    .await
            }
            None => {
                self.run_step(index, steps, only).await;
            }
        }
        if let Some(name) = &at.register {
            let mut st = self.state.lock().unwrap();
            let kept = &mut st.at_run;
            for host in &hosts {
                let Some((_, status)) = kept.last.get(host).filter(|(i, _)| *i == index) else {
                    continue; // unreachable: it has no result
                };
                let printed = kept
                    .captured
                    .get(host)
                    .filter(|(i, _)| *i == index)
                    .map(|(_, c)| c);
                let result = Registered::from_outcome(*status, printed);
                let on_host = kept.registered.entry(host.clone()).or_default();
                let result = match &at.looped {
                    None => result,
                    // One entry of the loop's `results`: the first item starts the list.
                    Some(l) => Registered::add_item(on_host.remove(name), l, result),
                };
                on_host.insert(name.clone(), result);
            }
        }
    }

    /// Whether step `index` is being run again (its start is not reported again).
    pub(super) fn is_retry_attempt(&self, index: usize) -> bool {
        let st = self.state.lock().unwrap();
        st.at_run.retrying.get(&index).is_some_and(|a| a.number > 1)
    }

    /// Records how step `index` ended on `host`; None when a retry holds the outcome back,
    /// else the outcome, to be reported.
    pub(super) fn hold(&self, index: usize, host: &str, outcome: Outcome) -> Option<Outcome> {
        let mut st = self.state.lock().unwrap();
        let kept = &mut st.at_run;
        kept.last.insert(host.to_string(), (index, outcome.status));
        if let Some(a) = kept.retrying.get_mut(&index)
            && a.hosts.contains(host)
        {
            a.outcomes.insert(host.to_string(), outcome);
            return None;
        }
        Some(outcome)
    }

    /// What the commands of step `index` printed on `host` so far (redacted).
    pub(super) fn captured(&self, index: usize, host: &str, printed: &Captured) {
        let mut st = self.state.lock().unwrap();
        st.at_run
            .captured
            .insert(host.to_string(), (index, printed.clone()));
    }

    /// The results registered on `host` so far.
    pub(super) fn registered_on(&self, host: &str) -> BTreeMap<String, Registered> {
        let st = self.state.lock().unwrap();
        st.at_run.registered.get(host).cloned().unwrap_or_default()
    }

    fn forget(&self, index: usize, hosts: &[String]) {
        let mut st = self.state.lock().unwrap();
        for h in hosts {
            st.at_run.captured.remove(h);
            if st.at_run.last.get(h).is_some_and(|(i, _)| *i == index) {
                st.at_run.last.remove(h);
            }
        }
    }

    /// The `targets` on which the step's `when` over registered results holds; the others are
    /// reported skipped, and a host where it cannot be evaluated fails.
    pub(super) fn decide_when(
        &self,
        index: usize,
        step: &dyn Step,
        title: &str,
        targets: Vec<String>,
        started: Instant,
    ) -> Vec<String> {
        let Some(at) = step.at_run() else {
            return targets;
        };
        let Some(expr) = &at.when else {
            return targets;
        };
        let mut keep = Vec::new();
        for host in targets {
            let registered = self
                .state
                .lock()
                .unwrap()
                .at_run
                .registered
                .get(&host)
                .cloned()
                .unwrap_or_default();
            match at.when_holds(&host, &registered) {
                Ok(true) => keep.push(host),
                Ok(false) => self.result(
                    index,
                    title,
                    &host,
                    HostStatus::Skipped,
                    vec![self.clean(&format!("`when = {expr}` is false"))],
                    None,
                    None,
                    started,
                ),
                Err(e) => self.fail(
                    index,
                    title,
                    &host,
                    FailureInfo {
                        message: self.clean(&e),
                        command: None,
                        exit_status: None,
                        stderr: Redacted::default(),
                        hint: Some(Redacted::literal(
                            "`when` reads registered results as NAME.rc, NAME.stdout, NAME.changed ...; guard a result some hosts lack with `NAME is defined and ...`",
                        )),
                    },
                    started,
                ),
            }
        }
        keep
    }

    /// Runs a step with `retries` on `hosts`: each host whose attempt failed (or, with `until`,
    /// whose result does not satisfy it) runs the step again, facts gathered anew, after the
    /// delay, until it succeeds or its retries run out. Each retry is reported; the final
    /// outcome once.
    async fn run_retried(
        &self,
        index: usize,
        steps: &[&dyn Step],
        at: &AtRun,
        retry: &Retry,
        hosts: Vec<String>,
    ) {
        let title = steps[index].title().to_string();
        let (shown, handler) = self.position(index);
        let mut remaining = hosts;
        let mut number = 1;
        loop {
            self.forget(index, &remaining);
            self.state.lock().unwrap().at_run.retrying.insert(
                index,
                Attempt {
                    number,
                    hosts: remaining.iter().cloned().collect(),
                    outcomes: BTreeMap::new(),
                },
            );
            self.run_step(index, steps, Some(&remaining)).await;
            let (mut held, kept) = {
                let mut st = self.state.lock().unwrap();
                let held = st
                    .at_run
                    .retrying
                    .remove(&index)
                    .map(|a| a.outcomes)
                    .unwrap_or_default();
                let kept: BTreeMap<String, (Option<Captured>, BTreeMap<String, Registered>)> =
                    remaining
                        .iter()
                        .map(|h| {
                            let printed = st
                                .at_run
                                .captured
                                .get(h)
                                .filter(|(i, _)| *i == index)
                                .map(|(_, c)| c.clone());
                            let registered =
                                st.at_run.registered.get(h).cloned().unwrap_or_default();
                            (h.clone(), (printed, registered))
                        })
                        .collect();
                (held, kept)
            };
            let last_try = number > retry.retries || self.cancelled();
            let mut again = Vec::new();
            for host in &remaining {
                // No outcome: unreachable (reported), nothing more to try there.
                let Some(outcome) = held.remove(host) else {
                    continue;
                };
                let (printed, registered) = &kept[host];
                let own = Registered::from_outcome(outcome.status, printed.as_ref());
                // A skipped result (its `when` false, --check) ran nothing: nothing to retry.
                let decided = if own.skipped {
                    Ok(true)
                } else {
                    at.until_holds(host, &own, registered)
                };
                if decided == Ok(true) {
                    self.release(index, &title, host, outcome);
                    continue;
                }
                let why = match (&decided, &outcome.failure, &retry.until) {
                    (Err(e), _, _) => e.clone(),
                    (_, Some(f), _) => f.message.as_str().to_string(),
                    (_, None, Some(until)) => format!("`until = {until}` is false"),
                    (_, None, None) => "failed".to_string(),
                };
                if !last_try {
                    self.emit(Event::Retrying {
                        index: shown,
                        step: self.clean(&title),
                        host: self.clean(host),
                        retry: number,
                        retries: retry.retries,
                        reason: self.clean(&why).shortened(super::MAX_LINE_CHARS),
                        handler,
                    });
                    again.push(host.clone());
                    continue;
                }
                let attempts = format!(
                    "after {number} attempt{}",
                    if number == 1 { "" } else { "s" }
                );
                let failure = match (decided, outcome.failure) {
                    (Err(e), _) => FailureInfo {
                        message: self.clean(&format!("{e} ({attempts})")),
                        command: None,
                        exit_status: None,
                        stderr: Redacted::default(),
                        hint: None,
                    },
                    (_, Some(f)) => FailureInfo {
                        message: self.clean(&format!("{} ({attempts})", f.message)),
                        ..f
                    },
                    (_, None) => FailureInfo {
                        message: self.clean(&format!("{why} {attempts}")),
                        command: None,
                        exit_status: printed.as_ref().and_then(|c| c.rc),
                        stderr: self.clean(&own.stderr),
                        hint: Some(self.clean(&format!(
                            "the last attempt: rc {}, stdout {:?}",
                            own.rc,
                            own.stdout.chars().take(120).collect::<String>()
                        ))),
                    },
                };
                self.fail(index, &title, host, failure, outcome.started);
            }
            if again.is_empty() {
                return;
            }
            tokio::time::sleep(retry.delay).await;
            number += 1;
            remaining = again;
        }
    }

    /// Reports an outcome a retry held back.
    fn release(&self, index: usize, title: &str, host: &str, o: Outcome) {
        match (o.status, o.failure) {
            (HostStatus::Failed, Some(f)) => self.fail(index, title, host, f, o.started),
            (status, failure) => self.result(
                index, title, host, status, o.details, o.diff, failure, o.started,
            ),
        }
    }
}
