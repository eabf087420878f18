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
//! # Over an interval
//! Counters only grow; what users report is the difference of two
//! snapshots of one reactor: [`ReactorLoad::between`] (busy, idle and sleep
//! time, as `dataplane serve`'s statistics show them) and
//! [`ReactorLoad::with_detail`] (plus loop iterations and per-poller busy
//! time and work, as `dataplane bench` reports them). Its field names are
//! the JSON keys of both reports.
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
use serde::Serialize;

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

/// One reactor over an interval: the difference of two [`ReactorStats`] of
/// it. The field names are the JSON keys of the reports that carry it.
///
/// Invariant: `busy_fraction` is `busy_ns / (busy_ns + idle_ns +
/// sleep_ns)`, 0 for an empty interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReactorLoad {
    /// Reactor name.
    pub name: String,
    /// The CPU it is pinned to, if any.
    pub core: Option<usize>,
    /// Busy time / wall time (awake and asleep).
    pub busy_fraction: f64,
    /// Nanoseconds in iterations that did work.
    pub busy_ns: u64,
    /// Nanoseconds in iterations that did none.
    pub idle_ns: u64,
    /// Nanoseconds asleep (adaptive idle policy).
    pub sleep_ns: u64,
    /// Loop iterations and per-poller figures; `None` leaves their keys
    /// out.
    #[serde(flatten)]
    pub detail: Option<LoadDetail>,
}

/// The loop and the pollers of one reactor over an interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadDetail {
    /// Loop iterations.
    pub iterations: u64,
    /// Loop iterations in which some poller did work.
    pub busy_iterations: u64,
    /// The pollers on the reactor at the end of the interval, in polling
    /// order.
    pub pollers: Vec<PollerLoad>,
}

/// One poller over an interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PollerLoad {
    /// Poller name.
    pub name: String,
    /// Nanoseconds in polls that did work.
    pub busy_ns: u64,
    /// Work items reported.
    pub work: u64,
}

impl ReactorLoad {
    /// Busy, idle and sleep time of the reactor from `start` to `end` (two
    /// snapshots of the same reactor, `start` first), without the detail.
    pub fn between(start: &ReactorStats, end: &ReactorStats) -> Self {
        let busy_ns = end.busy_ns.saturating_sub(start.busy_ns);
        let idle_ns = end.idle_ns.saturating_sub(start.idle_ns);
        let sleep_ns = end.sleep_ns.saturating_sub(start.sleep_ns);
        let wall = (busy_ns + idle_ns + sleep_ns).max(1);
        Self {
            name: end.name.clone(),
            core: end.core,
            busy_fraction: busy_ns as f64 / wall as f64,
            busy_ns,
            idle_ns,
            sleep_ns,
            detail: None,
        }
    }

    /// [`between`](Self::between) with the loop iterations and every
    /// poller of `end` (a poller added during the interval counts from
    /// zero).
    pub fn with_detail(start: &ReactorStats, end: &ReactorStats) -> Self {
        let pollers = end
            .pollers
            .iter()
            .map(|p| {
                let before = start.poller(p.id);
                PollerLoad {
                    name: p.name.clone(),
                    busy_ns: p.busy_ns.saturating_sub(before.map_or(0, |q| q.busy_ns)),
                    work: p.work.saturating_sub(before.map_or(0, |q| q.work)),
                }
            })
            .collect();
        Self {
            detail: Some(LoadDetail {
                iterations: end.iterations.saturating_sub(start.iterations),
                busy_iterations: end.busy_iterations.saturating_sub(start.busy_iterations),
                pollers,
            }),
            ..Self::between(start, end)
        }
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

    fn stats(busy: u64, idle: u64, sleep: u64, pollers: Vec<PollerStats>) -> ReactorStats {
        let mut stats = ReactorCell::default().snapshot("r0", Some(3), false, pollers);
        stats.busy_ns = busy;
        stats.idle_ns = idle;
        stats.sleep_ns = sleep;
        stats
    }

    fn poller(id: u64, busy_ns: u64, work: u64) -> PollerStats {
        let mut p = PollerCell::default().snapshot(PollerId::from_raw(id), &format!("p{id}"));
        p.busy_ns = busy_ns;
        p.work = work;
        p
    }

    #[test]
    fn load_is_the_difference_of_two_snapshots() {
        let mut start = stats(100, 200, 0, vec![poller(1, 50, 5)]);
        start.iterations = 10;
        let mut end = stats(400, 500, 100, vec![poller(1, 80, 9), poller(2, 7, 1)]);
        end.iterations = 30;
        end.busy_iterations = 4;
        let load = ReactorLoad::between(&start, &end);
        assert_eq!(
            (load.name.as_str(), load.core, load.detail.as_ref()),
            ("r0", Some(3), None)
        );
        assert_eq!((load.busy_ns, load.idle_ns, load.sleep_ns), (300, 300, 100));
        assert_eq!(load.busy_fraction, 300.0 / 700.0);
        let detail = ReactorLoad::with_detail(&start, &end).detail.unwrap();
        assert_eq!((detail.iterations, detail.busy_iterations), (20, 4));
        assert_eq!(
            detail.pollers,
            [
                PollerLoad {
                    name: "p1".into(),
                    busy_ns: 30,
                    work: 4
                },
                PollerLoad {
                    name: "p2".into(),
                    busy_ns: 7,
                    work: 1
                }
            ]
        );
        // An empty interval is not busy.
        assert_eq!(ReactorLoad::between(&end, &end).busy_fraction, 0.0);
    }

    #[test]
    fn load_keys_are_the_report_keys() {
        let start = stats(0, 0, 0, Vec::new());
        let end = stats(1, 2, 3, vec![poller(1, 1, 1)]);
        let summary = "{\"name\":\"r0\",\"core\":3,\"busy_fraction\":0.16666666666666666,\
                       \"busy_ns\":1,\"idle_ns\":2,\"sleep_ns\":3";
        let json = |load: ReactorLoad| serde_json::to_string(&load).unwrap();
        assert_eq!(
            json(ReactorLoad::between(&start, &end)),
            format!("{summary}}}")
        );
        assert_eq!(
            json(ReactorLoad::with_detail(&start, &end)),
            format!(
                "{summary},\"iterations\":0,\"busy_iterations\":0,\
                 \"pollers\":[{{\"name\":\"p1\",\"busy_ns\":1,\"work\":1}}]}}"
            )
        );
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
