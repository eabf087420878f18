//! Busy/idle accounting, readable from other threads while a reactor runs.
//!
//! The reactor thread counts in plain integers and *publishes* them every
//! [`PUBLISH_EVERY`] iterations, before it goes to sleep, after it wakes, when
//! it handles control messages and when it exits. Publishing is a relaxed
//! store per counter into a cache-padded block of `AtomicU64`s that only the
//! reactor thread writes (one writer, so no read-modify-write). A reader (the
//! one-second progress line, a test) loads them and gets a snapshot that is at
//! most a few dozen iterations old; the fields of one snapshot may come from
//! neighbouring publications and need not add up exactly while the reactor
//! runs. After `join` the final numbers are exact.
//!
//! Times are kept in [`clock`] ticks and converted to
//! nanoseconds when a snapshot is taken.
//!
//! # Attribution (as SPDK's `_reactor_run`)
//! - Per poller: the time from the end of the previous poll (or from the
//!   start of the iteration) to the end of this poll is *busy* if the poll
//!   returned work, *idle* otherwise.
//! - Per reactor: an iteration (one pass over all pollers, plus the control
//!   messages handled at its start) is *busy* if any poller returned work,
//!   *idle* otherwise. Time blocked in `epoll_wait` is *sleep*, counted apart.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crossbeam_utils::CachePadded;

use crate::clock;
use crate::poller::PollerId;

/// The reactor publishes its counters after this many iterations (and at
/// every sleep, wake-up, control message and exit).
pub const PUBLISH_EVERY: u64 = 64;
const _: () = assert!(PUBLISH_EVERY.is_power_of_two());

/// What a reactor is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReactorState {
    /// Polling (or sleeping between polls).
    Running,
    /// A stop was requested: `begin_shutdown` was called on every poller and
    /// the reactor polls until they are drained or the deadline passes.
    Draining,
    /// The thread has exited (or panicked).
    Stopped,
}

impl ReactorState {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => ReactorState::Running,
            1 => ReactorState::Draining,
            _ => ReactorState::Stopped,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            ReactorState::Running => 0,
            ReactorState::Draining => 1,
            ReactorState::Stopped => 2,
        }
    }
}

/// A snapshot of one poller's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerStats {
    /// The poller's id on its reactor.
    pub id: PollerId,
    /// `Poller::name` when it was added.
    pub name: String,
    /// Time in polls that returned work.
    pub busy_ns: u64,
    /// Time in polls that returned zero.
    pub idle_ns: u64,
    /// Calls of `poll`.
    pub polls: u64,
    /// Calls of `poll` that returned work (more than zero).
    pub busy_polls: u64,
    /// Sum of the values `poll` returned.
    pub work: u64,
}

/// A snapshot of one reactor's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct ReactorStats {
    /// Reactor name.
    pub name: String,
    /// The core it is pinned to, if any.
    pub core: Option<usize>,
    /// Running, draining or stopped.
    pub state: ReactorState,
    /// True while the reactor declares itself asleep (or about to be).
    pub sleeping: bool,
    /// Time in iterations in which some poller did work.
    pub busy_ns: u64,
    /// Time in iterations in which no poller did work.
    pub idle_ns: u64,
    /// Time blocked in `epoll_wait`.
    pub sleep_ns: u64,
    /// Passes over all pollers.
    pub iterations: u64,
    /// Passes in which some poller did work.
    pub busy_iterations: u64,
    /// Times the reactor blocked in `epoll_wait` (counted as each sleep
    /// begins).
    pub sleeps: u64,
    /// Sleeps that ended because a descriptor became ready (the wake
    /// eventfd or a poller's fd) rather than by the timeout.
    pub event_wakeups: u64,
    /// `poll` calls over all pollers, including removed ones.
    pub polls: u64,
    /// Work over all pollers, including removed ones.
    pub work: u64,
    /// The pollers now on the reactor, in polling order (empty after exit).
    pub pollers: Vec<PollerStats>,
}

impl ReactorStats {
    /// Busy share of the time awake and asleep, 0.0 ..= 1.0.
    pub fn utilization(&self) -> f64 {
        let total = self.busy_ns + self.idle_ns + self.sleep_ns;
        if total == 0 {
            0.0
        } else {
            self.busy_ns as f64 / total as f64
        }
    }

    /// The stats of one poller, if it is on the reactor.
    pub fn poller(&self, id: PollerId) -> Option<&PollerStats> {
        self.pollers.iter().find(|p| p.id == id)
    }
}

/// Counters of one poller, kept by the reactor thread.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PollerCounters {
    pub busy_ticks: u64,
    pub idle_ticks: u64,
    pub polls: u64,
    pub busy_polls: u64,
    pub work: u64,
}

/// Published copy of [`PollerCounters`].
#[derive(Debug, Default)]
pub(crate) struct PollerCell {
    busy_ticks: AtomicU64,
    idle_ticks: AtomicU64,
    polls: AtomicU64,
    busy_polls: AtomicU64,
    work: AtomicU64,
}

/// A poller's published counters, on their own cache lines.
pub(crate) type SharedPollerCell = CachePadded<PollerCell>;

impl PollerCounters {
    /// Stores the counters into `cell` (reactor thread only).
    #[inline]
    pub fn publish(&self, cell: &PollerCell) {
        cell.busy_ticks.store(self.busy_ticks, Ordering::Relaxed);
        cell.idle_ticks.store(self.idle_ticks, Ordering::Relaxed);
        cell.polls.store(self.polls, Ordering::Relaxed);
        cell.busy_polls.store(self.busy_polls, Ordering::Relaxed);
        cell.work.store(self.work, Ordering::Relaxed);
    }

    /// A snapshot of these (exact, local) counters.
    pub fn snapshot(&self, id: PollerId, name: &str) -> PollerStats {
        PollerStats {
            id,
            name: name.to_owned(),
            busy_ns: clock::ticks_to_ns(self.busy_ticks),
            idle_ns: clock::ticks_to_ns(self.idle_ticks),
            polls: self.polls,
            busy_polls: self.busy_polls,
            work: self.work,
        }
    }
}

impl PollerCell {
    /// Loads a snapshot (any thread).
    pub fn snapshot(&self, id: PollerId, name: &str) -> PollerStats {
        PollerCounters {
            busy_ticks: self.busy_ticks.load(Ordering::Relaxed),
            idle_ticks: self.idle_ticks.load(Ordering::Relaxed),
            polls: self.polls.load(Ordering::Relaxed),
            busy_polls: self.busy_polls.load(Ordering::Relaxed),
            work: self.work.load(Ordering::Relaxed),
        }
        .snapshot(id, name)
    }
}

/// Counters of one reactor, kept by the reactor thread.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReactorCounters {
    pub busy_ticks: u64,
    pub idle_ticks: u64,
    pub sleep_ticks: u64,
    pub iterations: u64,
    pub busy_iterations: u64,
    pub sleeps: u64,
    pub event_wakeups: u64,
    pub polls: u64,
    pub work: u64,
}

/// Published copy of [`ReactorCounters`] plus the state.
#[derive(Debug, Default)]
pub(crate) struct ReactorCell {
    busy_ticks: AtomicU64,
    idle_ticks: AtomicU64,
    sleep_ticks: AtomicU64,
    iterations: AtomicU64,
    busy_iterations: AtomicU64,
    sleeps: AtomicU64,
    event_wakeups: AtomicU64,
    polls: AtomicU64,
    work: AtomicU64,
    state: AtomicU8,
}

impl ReactorCounters {
    /// Stores the counters into `cell` (reactor thread only).
    #[inline]
    pub fn publish(&self, cell: &ReactorCell) {
        cell.busy_ticks.store(self.busy_ticks, Ordering::Relaxed);
        cell.idle_ticks.store(self.idle_ticks, Ordering::Relaxed);
        cell.sleep_ticks.store(self.sleep_ticks, Ordering::Relaxed);
        cell.iterations.store(self.iterations, Ordering::Relaxed);
        cell.busy_iterations
            .store(self.busy_iterations, Ordering::Relaxed);
        cell.sleeps.store(self.sleeps, Ordering::Relaxed);
        cell.event_wakeups
            .store(self.event_wakeups, Ordering::Relaxed);
        cell.polls.store(self.polls, Ordering::Relaxed);
        cell.work.store(self.work, Ordering::Relaxed);
    }
}

impl ReactorCell {
    /// Sets the published state.
    pub fn set_state(&self, state: ReactorState) {
        self.state.store(state.as_u8(), Ordering::Release);
    }

    /// The published state.
    pub fn state(&self) -> ReactorState {
        ReactorState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Loads a snapshot without the per-poller part (any thread).
    pub fn snapshot(
        &self,
        name: &str,
        core: Option<usize>,
        sleeping: bool,
        pollers: Vec<PollerStats>,
    ) -> ReactorStats {
        let ns = |ticks: &AtomicU64| clock::ticks_to_ns(ticks.load(Ordering::Relaxed));
        let count = |value: &AtomicU64| value.load(Ordering::Relaxed);
        ReactorStats {
            name: name.to_owned(),
            core,
            state: self.state(),
            sleeping,
            busy_ns: ns(&self.busy_ticks),
            idle_ns: ns(&self.idle_ticks),
            sleep_ns: ns(&self.sleep_ticks),
            iterations: count(&self.iterations),
            busy_iterations: count(&self.busy_iterations),
            sleeps: count(&self.sleeps),
            event_wakeups: count(&self.event_wakeups),
            polls: count(&self.polls),
            work: count(&self.work),
            pollers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let cell = ReactorCell::default();
        assert_eq!(cell.state(), ReactorState::Running);
        for state in [
            ReactorState::Draining,
            ReactorState::Stopped,
            ReactorState::Running,
        ] {
            cell.set_state(state);
            assert_eq!(cell.state(), state);
        }
    }

    #[test]
    fn published_counters_read_back() {
        let counters = PollerCounters {
            busy_ticks: 0,
            idle_ticks: 0,
            polls: 7,
            busy_polls: 3,
            work: 11,
        };
        let cell = PollerCell::default();
        counters.publish(&cell);
        let stats = cell.snapshot(PollerId::from_raw(4), "p");
        assert_eq!((stats.polls, stats.busy_polls, stats.work), (7, 3, 11));
        assert_eq!(stats.id, PollerId::from_raw(4));
        assert_eq!(stats.name, "p");
    }

    #[test]
    fn utilization_is_busy_share() {
        let cell = ReactorCell::default();
        let mut stats = cell.snapshot("r", None, false, Vec::new());
        assert_eq!(stats.utilization(), 0.0);
        stats.busy_ns = 25;
        stats.idle_ns = 50;
        stats.sleep_ns = 25;
        assert_eq!(stats.utilization(), 0.25);
    }
}
