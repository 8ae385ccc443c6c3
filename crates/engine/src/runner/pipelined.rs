//! The runner's scheduler and the order of its output: the play's steps start as soon as the
//! earlier steps they wait for finished (`pipeline::dependencies`; under `linear`, every earlier
//! step, one step at a time as always), and the events of a step that runs while an earlier one
//! still runs are held back until every earlier step finished, so the output, the JSON lines
//! and the recap read in playbook order whatever overlapped. `Event::Command` (the run log's)
//! is not held: it is written when the command ended, with its real duration; nor is a step's
//! heartbeat (`Event::StepRunning`), which says what is running now.

use super::Runner;
use crate::event::{Event, EventSink};
use crate::pipeline::{self, StepDeps};
use crate::step::Step;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::collections::{BTreeMap, BTreeSet};

tokio::task_local! {
    /// The play step whose work is being done (its events are ordered by it).
    static STEP: usize;
}

/// Events held back until the steps before theirs finished.
#[derive(Default)]
pub(super) struct Ordered {
    /// The lowest step not finished yet: its events go out as they come.
    next: usize,
    finished: BTreeSet<usize>,
    held: BTreeMap<usize, Vec<Event>>,
}

impl Ordered {
    /// Emits or holds an event of step `index`.
    fn event(&mut self, index: usize, e: Event, sink: &dyn EventSink) {
        if index <= self.next {
            sink.emit(&e);
        } else {
            self.held.entry(index).or_default().push(e);
        }
    }

    /// Step `index` finished: what waited for it goes out, up to the next unfinished step.
    fn finished(&mut self, index: usize, sink: &dyn EventSink) {
        self.finished.insert(index);
        loop {
            for e in self.held.remove(&self.next).unwrap_or_default() {
                sink.emit(&e);
            }
            if !self.finished.remove(&self.next) {
                break;
            }
            self.next += 1;
        }
    }

    /// The end of the play (also when steps never started): everything held, in step order.
    fn drain(&mut self, sink: &dyn EventSink) {
        for (_, events) in std::mem::take(&mut self.held) {
            for e in events {
                sink.emit(&e);
            }
        }
        self.next = usize::MAX;
    }
}

impl Runner {
    /// Sends an event to the sink, in playbook order (see the module's doc).
    pub(super) fn ordered_emit(&self, e: Event) {
        let index = match &e {
            // The run log's commands and heartbeats say what happens now: never held back.
            Event::Command { .. } | Event::StepRunning { .. } => None,
            _ => STEP.try_with(|i| *i).ok(),
        };
        match index {
            Some(i) => self.output.lock().unwrap().event(i, e, &*self.sink),
            None => self.sink.emit(&e),
        }
    }

    /// Runs the play's steps (`all[..count]`), each once the steps it waits for finished. No step
    /// starts after Ctrl-C or after one stopped the run; the running ones finish. True when the
    /// run stopped before its end (its handlers do not run then).
    pub(super) async fn run_play(&self, all: &[&dyn Step], count: usize) -> bool {
        let deps = pipeline::dependencies(self.schedule.strategy, &self.step_deps(all, count));
        let mut started = vec![false; count];
        let mut done = vec![false; count];
        let mut running = FuturesUnordered::new();
        let (mut halted, mut stopped, mut interrupted) = (false, false, false);
        loop {
            for i in 0..count {
                if halted || started[i] || !deps[i].iter().all(|&j| done[j]) {
                    continue;
                }
                if self.cancelled() {
                    (halted, interrupted) = (true, true);
                    break;
                }
                started[i] = true;
                running.push(STEP.scope(i, async move { (i, self.play_step(i, all).await) }));
            }
            let Some((i, go_on)) = running.next().await else {
                break;
            };
            done[i] = true;
            self.output.lock().unwrap().finished(i, &*self.sink);
            if !go_on || self.stopped() {
                (halted, stopped) = (true, true);
            }
        }
        self.output.lock().unwrap().drain(&*self.sink);
        if interrupted {
            self.emit(Event::Interrupted);
        }
        stopped || interrupted
    }

    /// One step of the play; false when the run must stop (a flush of handlers stopped).
    async fn play_step(&self, index: usize, all: &[&dyn Step]) -> bool {
        if all[index].flushes_handlers() {
            return self.flush(all).await;
        }
        self.run_entry(index, all, None).await;
        true
    }

    /// The play's steps as the ordering sees them.
    fn step_deps(&self, all: &[&dyn Step], count: usize) -> Vec<StepDeps> {
        all[..count]
            .iter()
            .enumerate()
            .map(|(i, s)| StepDeps::of(*s, self.schedule.after.get(i).cloned().unwrap_or_default()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MemorySink;

    fn ev(n: usize) -> Event {
        Event::RunStarted {
            hosts: n,
            steps: 0,
            check: false,
        }
    }

    fn seen(sink: &MemorySink) -> Vec<usize> {
        sink.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| match e {
                Event::RunStarted { hosts, .. } => *hosts,
                _ => unreachable!(),
            })
            .collect()
    }

    /// The lowest unfinished step's events go out at once; a later step's wait for every
    /// earlier step to finish, then go out in step order.
    #[test]
    fn events_come_out_in_step_order() {
        let sink = MemorySink::default();
        let mut o = Ordered::default();
        o.event(0, ev(0), &sink);
        o.event(2, ev(20), &sink);
        o.event(1, ev(10), &sink);
        o.event(2, ev(21), &sink);
        assert_eq!(seen(&sink), vec![0], "only step 0's is out");
        o.finished(2, &sink);
        assert_eq!(seen(&sink), vec![0], "step 2 finished before 0 and 1: held");
        o.finished(0, &sink);
        assert_eq!(seen(&sink), vec![0, 10], "step 1 is now the lowest: live");
        o.event(1, ev(11), &sink);
        o.event(3, ev(30), &sink);
        assert_eq!(seen(&sink), vec![0, 10, 11]);
        o.finished(1, &sink);
        assert_eq!(seen(&sink), vec![0, 10, 11, 20, 21, 30]);
        o.event(3, ev(31), &sink);
        assert_eq!(seen(&sink), vec![0, 10, 11, 20, 21, 30, 31]);
    }

    /// Steps that never started (the run stopped) hold nothing back at the end.
    #[test]
    fn the_end_of_the_play_lets_everything_out() {
        let sink = MemorySink::default();
        let mut o = Ordered::default();
        o.event(3, ev(3), &sink);
        o.event(2, ev(2), &sink);
        o.finished(0, &sink);
        assert_eq!(seen(&sink), Vec::<usize>::new());
        o.drain(&sink);
        assert_eq!(seen(&sink), vec![2, 3]);
        o.event(0, ev(9), &sink);
        assert_eq!(seen(&sink), vec![2, 3, 9], "after the play: live");
    }
}
