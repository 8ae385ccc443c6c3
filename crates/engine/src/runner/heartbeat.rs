//! The heartbeat of a long step and the timing of every step. While a step runs, every
//! `RunOptions::heartbeat` (10 s) it reports the hosts still busy on it, for how long, and the
//! last complete line each one's command printed so far (redacted); at the end of the run, each
//! step's wall time and slowest host (`provision run --profile`). Times are tokio's, so tests on
//! a paused clock see them exactly.

use super::Runner;
use crate::event::{Busy, Event, StepTiming};
use crate::step::Step;
use provision_transport::Tail;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;
use tokio::time::Instant;

/// A host working on a step: since when, and what its commands print.
pub(super) struct BusyHost {
    since: Instant,
    tail: Tail,
}

/// The timing of one step so far.
pub(super) struct Timing {
    title: String,
    started: Instant,
    /// From `started` to the latest result.
    wall: Duration,
    /// The host whose result took longest, with that duration.
    slowest: Option<(String, Duration)>,
}

/// What the heartbeat and the timings keep, in the runner's state.
#[derive(Default)]
pub(super) struct Kept {
    /// (step index, host) to the host's work on that step, until its result.
    busy: BTreeMap<(usize, String), BusyHost>,
    /// Step index to its timing, once it has a result.
    timings: BTreeMap<usize, Timing>,
}

/// Whole seconds, rounded: a host that became busy a few milliseconds after its step started
/// shows the same seconds as the step.
fn secs(d: Duration) -> u64 {
    ((d.as_millis() + 500) / 1000) as u64
}

impl Runner {
    /// Runs step `index` as [`Runner::run_entry_now`] does, with its heartbeat, and times it.
    pub(super) async fn run_entry(
        &self,
        index: usize,
        steps: &[&dyn Step],
        only: Option<&[String]>,
    ) {
        let started = Instant::now();
        self.state.lock().unwrap().beats.timings.insert(
            index,
            Timing {
                title: steps[index].title().to_string(),
                started,
                wall: Duration::ZERO,
                slowest: None,
            },
        );
        // The step first: one that ends as a heartbeat falls due (10 s exactly) gets none.
        tokio::select! {
            biased;
            () = self.run_entry_now(index, steps, only) => {}
            never = self.heartbeat(index, steps[index], started) => match never {},
        }
    }

    /// Every `heartbeat` from `started` on, the step's heartbeat event; never returns.
    async fn heartbeat(&self, index: usize, step: &dyn Step, started: Instant) -> Infallible {
        let every = self.opts.heartbeat;
        if every.is_zero() {
            return std::future::pending().await;
        }
        let title = step.title().to_string();
        let mut next = started + every;
        loop {
            tokio::time::sleep_until(next).await;
            next += every;
            let now = Instant::now();
            let busy: Vec<(String, Duration, Option<String>)> = {
                let st = self.state.lock().unwrap();
                st.beats
                    .busy
                    .range((index, String::new())..)
                    .take_while(|((i, _), _)| *i == index)
                    .map(|((_, h), b)| (h.clone(), now - b.since, b.tail.last_line()))
                    .collect()
            };
            let (shown, handler) = self.position(index);
            let e = Event::StepRunning {
                index: shown,
                step: self.clean(&title),
                handler,
                seconds: secs(now - started),
                busy: busy
                    .iter()
                    .map(|(host, took, line)| Busy {
                        host: self.clean(host),
                        seconds: secs(*took),
                        // Redacted whole, then shortened: a cut cannot split a secret.
                        last_line: line
                            .as_deref()
                            .map(|l| self.clean(l).shortened(super::MAX_LINE_CHARS)),
                    })
                    .collect(),
            };
            self.emit(e);
        }
    }

    /// `hosts` start working on step `index` now.
    pub(super) fn busy(&self, index: usize, hosts: &[String]) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap();
        for h in hosts {
            st.beats.busy.insert(
                (index, h.clone()),
                BusyHost {
                    since: now,
                    tail: Tail::default(),
                },
            );
        }
    }

    /// `host` is done with step `index` (its result is known, or it has none).
    pub(super) fn idle(&self, index: usize, host: &str) {
        let mut st = self.state.lock().unwrap();
        st.beats.busy.remove(&(index, host.to_string()));
    }

    /// Where the commands `host` runs for step `index` print their last line, while busy.
    pub(super) fn tail(&self, index: usize, host: &str) -> Option<Tail> {
        let st = self.state.lock().unwrap();
        st.beats
            .busy
            .get(&(index, host.to_string()))
            .map(|b| b.tail.clone())
    }

    /// A result of step `index` on `host`, `took` long, was reported: the step's timing.
    pub(super) fn timed(&self, index: usize, host: &str, took: Duration) {
        let mut st = self.state.lock().unwrap();
        if let Some(t) = st.beats.timings.get_mut(&index) {
            t.wall = t.started.elapsed();
            if t.slowest.as_ref().is_none_or(|(_, d)| took > *d) {
                t.slowest = Some((host.to_string(), took));
            }
        }
    }

    /// How long each step that reported a result took, play steps then handlers.
    pub fn timings(&self) -> Vec<StepTiming> {
        type Timed = (usize, String, Duration, String, Duration);
        let timed: Vec<Timed> = {
            let st = self.state.lock().unwrap();
            st.beats
                .timings
                .iter()
                .filter_map(|(i, t)| {
                    let (host, took) = t.slowest.clone()?;
                    Some((*i, t.title.clone(), t.wall, host, took))
                })
                .collect()
        };
        timed
            .into_iter()
            .map(|(i, title, wall, host, took)| {
                let (index, handler) = self.position(i);
                StepTiming {
                    index,
                    step: self.clean(&title),
                    handler,
                    duration: wall,
                    slowest_host: self.clean(&host),
                    slowest_host_duration: took,
                }
            })
            .collect()
    }
}
