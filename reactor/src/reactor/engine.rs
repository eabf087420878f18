//! The reactor thread's engine: its pollers in polling order, the loop that
//! polls them and accounts busy/idle time, the control messages it handles
//! between iterations, the drain of a removal or a shutdown, and the adaptive
//! sleep. The module docs of [`reactor`](super) state the contract.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::config::IdlePolicy;
use super::context::{ReactorContext, ReactorOps};
use super::control::{Message, Shared};
use super::exit::{ReactorExit, RemovedPoller};
use crate::clock;
use crate::error::Error;
use crate::poller::{Poller, PollerId};
use crate::sleep::Sleeper;
use crate::stats::{
    PollerCounters, ReactorCounters, ReactorState, SharedPollerCell, PUBLISH_EVERY,
};
use crate::waker::Waker;

/// A poller being removed: who waits for it and until when.
struct Removal {
    reply: mpsc::SyncSender<Result<RemovedPoller, Error>>,
    deadline: u64,
}

/// A poller on the reactor, with its accounting.
struct Slot {
    id: PollerId,
    poller: Box<dyn Poller>,
    /// Wait fds registered for it (empty under the busy policy).
    fds: Vec<RawFd>,
    counters: PollerCounters,
    cell: Arc<SharedPollerCell>,
    removal: Option<Removal>,
    /// Found work in the current iteration (expensive-clock accounting).
    busy_now: bool,
}

/// The reactor thread's state.
pub(super) struct Engine {
    shared: Arc<Shared>,
    idle: IdlePolicy,
    drain_timeout: Duration,
    /// The epoll set (adaptive policy only).
    sleeper: Option<Sleeper>,
    slots: Vec<Slot>,
    counters: ReactorCounters,
    /// Idle iterations in a row.
    idle_run: u32,
    /// Tick at which the last iteration that found work ended.
    last_work: u64,
    /// The adaptive policy's `min_spin` in ticks (0 under `Busy`).
    min_spin_ticks: u64,
    /// Slots with a removal in progress.
    removing: usize,
    /// Tick deadline of the shutdown drain, once a stop was seen.
    shutdown_deadline: Option<u64>,
    /// Tick at which the current iteration began (the end of the previous
    /// iteration or sleep).
    iteration_start: u64,
    /// [`clock::is_cheap`]: time each poller, or only each iteration.
    cheap_clock: bool,
}

impl Engine {
    /// An engine with no pollers yet; `sleeper` is the epoll set under the
    /// adaptive policy, `None` under `busy`.
    pub(super) fn new(
        shared: Arc<Shared>,
        idle: IdlePolicy,
        drain_timeout: Duration,
        sleeper: Option<Sleeper>,
        capacity: usize,
    ) -> Self {
        Engine {
            shared,
            idle,
            drain_timeout,
            sleeper,
            slots: Vec::with_capacity(capacity),
            counters: ReactorCounters::default(),
            idle_run: 0,
            last_work: 0,
            min_spin_ticks: match idle {
                IdlePolicy::Adaptive { min_spin, .. } => clock::duration_to_ticks(min_spin),
                IdlePolicy::Busy => 0,
            },
            removing: 0,
            shutdown_deadline: None,
            iteration_start: 0,
            cheap_clock: clock::is_cheap(),
        }
    }

    fn drain_deadline(&self) -> u64 {
        clock::now().saturating_add(clock::duration_to_ticks(self.drain_timeout))
    }

    /// Adds a poller at the end of the polling order (see
    /// [`ReactorHandle::add_poller`](super::ReactorHandle::add_poller)).
    pub(super) fn add(&mut self, mut poller: Box<dyn Poller>) -> Result<PollerId, Error> {
        let fds = match &mut self.sleeper {
            Some(sleeper) => {
                let fds = poller.wait_fds();
                sleeper.register(&fds)?;
                fds
            }
            None => Vec::new(),
        };
        if self.shutdown_deadline.is_some() {
            poller.begin_shutdown();
        }
        let id = self.shared.next_poller_id();
        let cell = Arc::new(SharedPollerCell::default());
        self.shared
            .register(id, poller.name().to_owned(), Arc::clone(&cell));
        self.slots.push(Slot {
            id,
            poller,
            fds,
            counters: PollerCounters::default(),
            cell,
            removal: None,
            busy_now: false,
        });
        Ok(id)
    }

    /// Takes slot `index` off the reactor (fds, registry, list).
    fn take(&mut self, index: usize) -> Slot {
        let slot = self.slots.remove(index);
        if let Some(sleeper) = &mut self.sleeper {
            sleeper.unregister(&slot.fds);
        }
        self.shared.unregister(slot.id);
        if slot.removal.is_some() {
            self.removing -= 1;
        }
        slot
    }

    /// The loop (see the module docs); returns once the shutdown drain ends.
    pub(super) fn run(mut self) -> ReactorExit {
        self.shared.stats.set_state(ReactorState::Running);
        self.iteration_start = clock::refresh();
        loop {
            let polls_from = if self.shared.pending.load(Ordering::Relaxed) {
                self.control();
                clock::refresh()
            } else {
                self.iteration_start
            };
            let work = self.iterate(polls_from);
            if self.removing > 0 {
                self.finish_removals();
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.slots.iter().all(|slot| slot.poller.is_drained()) {
                    return self.exit(true);
                }
                if self.iteration_start >= deadline {
                    return self.exit(false);
                }
            }
            if work == 0 {
                self.maybe_sleep();
            }
        }
    }

    /// One pass over all pollers starting at tick `polls_from`; returns the
    /// work done.
    ///
    /// With a cheap clock every poller's time is measured (one read after
    /// each poll). With an expensive one ([`clock::is_cheap`] false) the
    /// clock is read once per iteration and the iteration's time is shared
    /// among its pollers: equally among those that found work when any did,
    /// else equally among all. Either way each reading becomes the thread's
    /// [`clock::recent`] time, which the next poller sees as its "now".
    #[inline]
    fn iterate(&mut self, polls_from: u64) -> u64 {
        if !self.cheap_clock {
            return self.iterate_coarse();
        }
        let mut last = polls_from;
        let mut work = 0;
        for slot in &mut self.slots {
            let done = slot.poller.poll() as u64;
            let now = clock::refresh();
            let ticks = now.saturating_sub(last);
            last = now;
            let counters = &mut slot.counters;
            counters.polls += 1;
            if done > 0 {
                counters.busy_ticks += ticks;
                counters.busy_polls += 1;
                counters.work += done;
                work += done;
            } else {
                counters.idle_ticks += ticks;
            }
        }
        if self.slots.is_empty() {
            last = clock::refresh();
        }
        self.end_iteration(last, work)
    }

    /// [`iterate`](Self::iterate) on an expensive clock: one read.
    fn iterate_coarse(&mut self) -> u64 {
        let mut work = 0;
        let mut busy = 0u64;
        for slot in &mut self.slots {
            let done = slot.poller.poll() as u64;
            let counters = &mut slot.counters;
            counters.polls += 1;
            slot.busy_now = done > 0;
            if done > 0 {
                counters.busy_polls += 1;
                counters.work += done;
                work += done;
                busy += 1;
            }
        }
        let last = clock::refresh();
        let ticks = last.saturating_sub(self.iteration_start);
        let sharers = if busy > 0 {
            busy
        } else {
            self.slots.len() as u64
        };
        let share = ticks / sharers.max(1);
        for slot in &mut self.slots {
            if busy == 0 {
                slot.counters.idle_ticks += share;
            } else if slot.busy_now {
                slot.counters.busy_ticks += share;
            }
        }
        self.end_iteration(last, work)
    }

    /// The iteration's accounting, from `iteration_start` to `last`.
    fn end_iteration(&mut self, last: u64, work: u64) -> u64 {
        let ticks = last.saturating_sub(self.iteration_start);
        self.iteration_start = last;
        let counters = &mut self.counters;
        counters.iterations += 1;
        counters.polls += self.slots.len() as u64;
        counters.work += work;
        if work > 0 {
            counters.busy_ticks += ticks;
            counters.busy_iterations += 1;
            self.idle_run = 0;
            self.last_work = last;
        } else {
            counters.idle_ticks += ticks;
            self.idle_run = self.idle_run.saturating_add(1);
        }
        if counters.iterations & (PUBLISH_EVERY - 1) == 0 {
            self.publish();
        }
        work
    }

    fn publish(&self) {
        self.counters.publish(&self.shared.stats);
        for slot in &self.slots {
            slot.counters.publish(&slot.cell);
        }
    }

    /// Handles queued control messages and a stop request.
    fn control(&mut self) {
        for message in self.shared.take_messages() {
            match message {
                Message::Run(task) => task(&mut ReactorContext::new(self)),
                Message::Remove { id, reply } => self.begin_removal(id, reply),
            }
        }
        if self.shutdown_deadline.is_none() && self.shared.stop_requested.load(Ordering::Acquire) {
            self.begin_shutdown();
        }
        self.publish();
    }

    fn begin_removal(
        &mut self,
        id: PollerId,
        reply: mpsc::SyncSender<Result<RemovedPoller, Error>>,
    ) {
        let deadline = self.drain_deadline();
        let shutting_down = self.shutdown_deadline.is_some();
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|slot| slot.id == id && slot.removal.is_none())
        else {
            let _ = reply.send(Err(Error::UnknownPoller {
                reactor: self.shared.name.clone(),
                id,
            }));
            return;
        };
        // During a shutdown the poller already had its begin_shutdown.
        if !shutting_down {
            slot.poller.begin_shutdown();
        }
        slot.removal = Some(Removal { reply, deadline });
        self.removing += 1;
    }

    /// Hands back the pollers being removed that drained or ran out of time.
    fn finish_removals(&mut self) {
        let now = self.iteration_start;
        let mut index = 0;
        while index < self.slots.len() {
            let slot = &self.slots[index];
            let done = match &slot.removal {
                Some(removal) => slot.poller.is_drained() || now >= removal.deadline,
                None => false,
            };
            if done {
                let slot = self.take(index);
                Self::hand_back(slot);
            } else {
                index += 1;
            }
        }
    }

    fn hand_back(slot: Slot) {
        let Some(removal) = slot.removal else {
            return;
        };
        let removed = RemovedPoller {
            id: slot.id,
            stats: slot.counters.snapshot(slot.id, slot.poller.name()),
            drained: slot.poller.is_drained(),
            poller: slot.poller,
        };
        // If the caller is gone, the poller is dropped here.
        let _ = removal.reply.send(Ok(removed));
    }

    fn begin_shutdown(&mut self) {
        for slot in &mut self.slots {
            if slot.removal.is_none() {
                slot.poller.begin_shutdown();
            }
        }
        self.shutdown_deadline = Some(self.drain_deadline());
        self.shared.stats.set_state(ReactorState::Draining);
    }

    /// Sleeps if the adaptive policy says so (see the module docs).
    fn maybe_sleep(&mut self) {
        let IdlePolicy::Adaptive {
            idle_polls_before_sleep,
            max_sleep,
            ..
        } = self.idle
        else {
            return;
        };
        if self.idle_run < idle_polls_before_sleep
            || self.iteration_start.wrapping_sub(self.last_work) < self.min_spin_ticks
            || self.removing > 0
            || self.shutdown_deadline.is_some()
        {
            return;
        }
        let waker = self.shared.waker.clone();
        waker.prepare_sleep();
        self.publish();
        // Work published before our flag became visible to its producer is
        // found by this pass; work published after it comes with a kick.
        let work = self.iterate(self.iteration_start);
        if work > 0 || self.shared.pending.load(Ordering::Relaxed) {
            waker.finish_sleep();
            return;
        }
        let Some(sleeper) = &mut self.sleeper else {
            waker.finish_sleep();
            return;
        };
        // Counted (and published) as it begins, so that a reader sees
        // `sleeping` together with a `sleeps` that includes this one.
        self.counters.sleeps += 1;
        self.counters.publish(&self.shared.stats);
        let before = clock::now();
        let by_event = sleeper.wait(max_sleep);
        let after = clock::refresh();
        waker.finish_sleep();
        self.counters.sleep_ticks += after.saturating_sub(before);
        if by_event {
            self.counters.event_wakeups += 1;
        }
        self.iteration_start = after;
        self.publish();
    }

    /// Final accounting; hands back removals, returns the rest.
    pub(super) fn exit(mut self, drained: bool) -> ReactorExit {
        self.publish();
        self.shared.close();
        let mut pollers = Vec::with_capacity(self.slots.len());
        let mut poller_stats = Vec::with_capacity(self.slots.len());
        while !self.slots.is_empty() {
            let slot = self.take(0);
            if slot.removal.is_some() {
                Self::hand_back(slot);
            } else {
                poller_stats.push(slot.counters.snapshot(slot.id, slot.poller.name()));
                pollers.push((slot.id, slot.poller));
            }
        }
        let mut stats = self.shared.stats();
        stats.pollers = poller_stats;
        stats.state = ReactorState::Stopped;
        stats.sleeping = false;
        self.shared.stats.set_state(ReactorState::Stopped);
        ReactorExit {
            stats,
            drained,
            pollers,
        }
    }
}

impl ReactorOps for Engine {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn waker(&self) -> &Waker {
        &self.shared.waker
    }

    fn add_poller(&mut self, poller: Box<dyn Poller>) -> Result<PollerId, Error> {
        self.add(poller)
    }

    fn remove_poller_now(&mut self, id: PollerId) -> Option<Box<dyn Poller>> {
        let index = self
            .slots
            .iter()
            .position(|slot| slot.id == id && slot.removal.is_none())?;
        Some(self.take(index).poller)
    }

    fn poller_ids(&self) -> Vec<PollerId> {
        self.slots.iter().map(|slot| slot.id).collect()
    }

    fn request_stop(&self) {
        self.shared.request_stop();
    }
}
