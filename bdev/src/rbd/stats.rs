//! Counters of an `rbd` bdev: what its channels did, summed over them.
//!
//! Each channel counts in plain integers and publishes them with relaxed
//! stores once per poll into its own [`ChannelCounters`] (one writer, no
//! read-modify-write on the data path); [`RbdBdev::stats`](super::RbdBdev::stats)
//! sums every channel's, closed ones included.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the channels of an `rbd` bdev did since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RbdStats {
    /// Requests completed (successfully or not).
    pub completed: u64,
    /// Requests completed with an error (included in `completed`).
    pub errors: u64,
    /// Requests submitted and not yet completed, as of each channel's last
    /// poll.
    pub in_flight: u64,
    /// Operations handed to librbd (a FUA write done as a write and a
    /// flush counts two).
    pub submitted: u64,
    /// Polls of the channels.
    pub polls: u64,
    /// Completions a channel took from librbd's queue that belonged to
    /// another channel of the same bdev and handed over to it (0 with one
    /// channel).
    pub handed_over: u64,
    /// Completions librbd reported with an error code at submission (the
    /// request failed without reaching the cluster).
    pub submit_errors: u64,
}

impl RbdStats {
    fn add(&mut self, other: &RbdStats) {
        self.completed += other.completed;
        self.errors += other.errors;
        self.in_flight += other.in_flight;
        self.submitted += other.submitted;
        self.polls += other.polls;
        self.handed_over += other.handed_over;
        self.submit_errors += other.submit_errors;
    }

    /// The sum of several channels' counters.
    pub(super) fn sum<'a>(channels: impl IntoIterator<Item = &'a ChannelCounters>) -> Self {
        let mut total = RbdStats::default();
        for channel in channels {
            total.add(&channel.load());
        }
        total
    }
}

/// One channel's published counters.
#[derive(Debug, Default)]
pub(super) struct ChannelCounters {
    completed: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    submitted: AtomicU64,
    polls: AtomicU64,
    handed_over: AtomicU64,
    submit_errors: AtomicU64,
}

impl ChannelCounters {
    /// Publishes the channel's current totals (relaxed: a reader sees each
    /// counter at some recent value).
    #[inline]
    pub fn publish(&self, stats: &RbdStats) {
        let store = |counter: &AtomicU64, value| counter.store(value, Ordering::Relaxed);
        store(&self.completed, stats.completed);
        store(&self.errors, stats.errors);
        store(&self.in_flight, stats.in_flight);
        store(&self.submitted, stats.submitted);
        store(&self.polls, stats.polls);
        store(&self.handed_over, stats.handed_over);
        store(&self.submit_errors, stats.submit_errors);
    }

    fn load(&self) -> RbdStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RbdStats {
            completed: load(&self.completed),
            errors: load(&self.errors),
            in_flight: load(&self.in_flight),
            submitted: load(&self.submitted),
            polls: load(&self.polls),
            handed_over: load(&self.handed_over),
            submit_errors: load(&self.submit_errors),
        }
    }
}
