//! The reactor thread's engine: its pollers in polling order, the loop that
//! polls them and accounts busy/idle time, the control messages it handles
//! between iterations, the drain of a removal or a shutdown, and the adaptive
//! sleep. The module docs of [`reactor`](super) state the contract.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::config::{IdlePolicy, IDLE_CLOCK_EVERY};
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
    /// Expensive clock: idle iterations run since the clock was last read.
    unclocked: u32,
    /// Expensive clock: the ticks one idle iteration took, from the last
    /// run of idle iterations that ended with a reading; the estimate of
    /// the idle part of a reading that ends an iteration with work.
    idle_iteration_ticks: u64,
    /// Expensive clock: read it at the end of the next iteration, work or
    /// not (before a sleep).
    clock_next: bool,
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
            unclocked: 0,
            idle_iteration_ticks: 0,
            clock_next: false,
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
        self.end_iteration(last, work, 0)
    }

    /// [`iterate`](Self::iterate) on an expensive clock: a read when a
    /// poller first asks for [`clock::recent`] and one at the end of an
    /// iteration that found work; an idle iteration uses a poller's reading
    /// if one asked, and most idle iterations take none at all (see
    /// [`IDLE_CLOCK_EVERY`]). A reading's ticks since the last one are
    /// shared among the pollers: the estimated time of the unread idle
    /// iterations before it equally among all, the rest equally among
    /// those that found work when any did, else equally among all.
    fn iterate_coarse(&mut self) -> u64 {
        clock::expire_recent();
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
        let read = !clock::expired();
        if work == 0 && !read && !self.clock_next && self.unclocked + 1 < IDLE_CLOCK_EVERY {
            self.unclocked += 1;
            self.count_iteration(0);
            return 0;
        }
        let last = if work == 0 && read && !self.clock_next {
            clock::recent()
        } else {
            clock::refresh()
        };
        self.clock_next = false;
        let ticks = last.saturating_sub(self.iteration_start);
        let unclocked = u64::from(std::mem::take(&mut self.unclocked));
        let idle_ticks = if work == 0 {
            self.idle_iteration_ticks = ticks / (unclocked + 1);
            ticks
        } else {
            ticks.min(unclocked.saturating_mul(self.idle_iteration_ticks))
        };
        let busy_ticks = ticks - idle_ticks;
        let pollers = (self.slots.len() as u64).max(1);
        let idle_share = idle_ticks / pollers;
        let busy_share = busy_ticks / busy.max(1);
        for slot in &mut self.slots {
            slot.counters.idle_ticks += idle_share;
            if slot.busy_now {
                slot.counters.busy_ticks += busy_share;
            }
        }
        self.end_iteration(last, work, idle_ticks)
    }

    /// The iteration's accounting, from `iteration_start` to `last`: all
    /// idle if it did no work, else `idle` ticks of it idle (the estimate
    /// of unread idle iterations before it) and the rest busy.
    fn end_iteration(&mut self, last: u64, work: u64, idle: u64) -> u64 {
        let ticks = last.saturating_sub(self.iteration_start);
        let idle = if work == 0 { ticks } else { idle.min(ticks) };
        self.iteration_start = last;
        self.counters.idle_ticks += idle;
        self.counters.busy_ticks += ticks - idle;
        if work > 0 {
            self.last_work = last;
        }
        self.count_iteration(work)
    }

    /// Counts one iteration that did `work` (its time is accounted by the
    /// caller) and publishes the counters every [`PUBLISH_EVERY`].
    fn count_iteration(&mut self, work: u64) -> u64 {
        let counters = &mut self.counters;
        counters.iterations += 1;
        counters.polls += self.slots.len() as u64;
        counters.work += work;
        if work > 0 {
            counters.busy_iterations += 1;
            self.idle_run = 0;
        } else {
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
        // found by this pass; work published after it comes with a kick. The
        // pass reads the clock, so that the sleep's time starts at its end
        // (an expensive clock's pass would not read it if idle).
        self.clock_next = !self.cheap_clock;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize};

    /// Does the work the test hands it and notes the recent time it saw
    /// when it did.
    struct Scripted {
        work: Arc<AtomicUsize>,
        seen: Arc<AtomicU64>,
        /// Asks for the time at every poll, work or not.
        always_asks: bool,
    }

    impl Poller for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }

        fn poll(&mut self) -> usize {
            let work = self.work.swap(0, Ordering::Relaxed);
            if work > 0 || self.always_asks {
                self.seen.store(clock::recent(), Ordering::Relaxed);
            }
            work
        }
    }

    /// An engine on the expensive-clock path with two pollers: one that
    /// does the work stored in the returned counter (and notes its time in
    /// the returned cell; at every poll if `always_asks`), one always idle.
    fn coarse_engine_asking(always_asks: bool) -> (Engine, Arc<AtomicUsize>, Arc<AtomicU64>) {
        let shared = Arc::new(Shared::new("coarse".into(), None, Waker::new().unwrap()));
        let mut engine = Engine::new(shared, IdlePolicy::Busy, Duration::from_secs(1), None, 2);
        engine.cheap_clock = false;
        let work = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicU64::new(0));
        for (w, always_asks) in [
            (Arc::clone(&work), always_asks),
            (Arc::new(AtomicUsize::new(0)), false),
        ] {
            let seen = Arc::clone(&seen);
            let poller = Scripted {
                work: w,
                seen,
                always_asks,
            };
            engine.add(Box::new(poller)).unwrap();
        }
        engine.iteration_start = clock::refresh();
        (engine, work, seen)
    }

    fn coarse_engine() -> (Engine, Arc<AtomicUsize>, Arc<AtomicU64>) {
        coarse_engine_asking(false)
    }

    #[test]
    fn an_idle_reactor_reads_an_expensive_clock_every_so_many_iterations() {
        let (mut e, _, _) = coarse_engine();
        let start = e.iteration_start;
        for _ in 0..IDLE_CLOCK_EVERY - 1 {
            assert_eq!(e.iterate_coarse(), 0);
        }
        assert_eq!(e.iteration_start, start, "no reading yet");
        assert_eq!(e.counters.iterations, u64::from(IDLE_CLOCK_EVERY - 1));
        assert_eq!(e.counters.polls, 2 * u64::from(IDLE_CLOCK_EVERY - 1));
        assert_eq!(e.counters.idle_ticks, 0);
        assert_eq!(e.idle_run, IDLE_CLOCK_EVERY - 1);

        e.iterate_coarse();
        let elapsed = e.iteration_start - start;
        assert!(elapsed > 0, "the IDLE_CLOCK_EVERY-th idle iteration reads");
        assert_eq!(e.counters.idle_ticks, elapsed, "all of it idle");
        assert_eq!(e.counters.busy_ticks, 0);
        assert_eq!(
            e.idle_iteration_ticks,
            elapsed / u64::from(IDLE_CLOCK_EVERY),
            "the estimate of one idle iteration"
        );
        for slot in &e.slots {
            assert_eq!(
                slot.counters.idle_ticks,
                elapsed / 2,
                "shared by both pollers"
            );
        }

        e.clock_next = true;
        e.iterate_coarse();
        assert!(
            e.iteration_start > start + elapsed,
            "a reading asked for is taken"
        );
        assert!(!e.clock_next);
    }

    #[test]
    fn work_after_unread_idle_iterations_is_timed_from_its_own_iteration() {
        let (mut e, work, seen) = coarse_engine();
        let start = e.iteration_start;
        for _ in 0..10 {
            e.iterate_coarse();
        }
        // As if a run of idle iterations had measured 1000 ticks each.
        e.idle_iteration_ticks = 1000;
        std::thread::sleep(Duration::from_millis(2));
        let before = clock::now();
        work.store(3, Ordering::Relaxed);
        assert_eq!(e.iterate_coarse(), 3);
        assert!(
            seen.load(Ordering::Relaxed) >= before,
            "the poller's recent time is read in the iteration that needs it"
        );
        assert!(
            e.iteration_start > seen.load(Ordering::Relaxed),
            "an iteration with work ends with a reading of its own"
        );
        let elapsed = e.iteration_start - start;
        assert!(elapsed > 10_000);
        assert_eq!(
            e.counters.idle_ticks, 10_000,
            "ten idle iterations' estimate"
        );
        assert_eq!(e.counters.busy_ticks, elapsed - 10_000);
        assert_eq!(e.slots[0].counters.busy_ticks, elapsed - 10_000);
        assert_eq!(e.slots[1].counters.busy_ticks, 0);
        assert_eq!(e.slots[0].counters.idle_ticks, 5_000);
        assert_eq!(e.slots[1].counters.idle_ticks, 5_000);
        assert_eq!((e.counters.iterations, e.counters.busy_iterations), (11, 1));
        assert_eq!((e.idle_run, e.last_work), (0, e.iteration_start));
        assert_eq!(e.unclocked, 0);
    }

    #[test]
    fn an_idle_iteration_in_which_a_poller_read_the_clock_uses_that_reading() {
        let (mut e, _, seen) = coarse_engine_asking(true);
        let start = e.iteration_start;
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(e.iterate_coarse(), 0);
        let read = seen.load(Ordering::Relaxed);
        assert!(read > start);
        assert_eq!(e.iteration_start, read, "no second reading");
        assert_eq!(e.counters.idle_ticks, read - start);
        assert_eq!(e.unclocked, 0);
    }
}
