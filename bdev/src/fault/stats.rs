//! What the fault bdev did, counted over all its channels (relaxed atomics,
//! read on the control path).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by a fault bdev's channels.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) failed: AtomicU64,
    pub(super) delayed: AtomicU64,
    pub(super) stuck: AtomicU64,
    pub(super) aborted: AtomicU64,
    pub(super) no_space: AtomicU64,
}

impl Counters {
    pub(super) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> FaultStats {
        FaultStats {
            failed: self.failed.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            stuck: self.stuck.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
            no_space: self.no_space.load(Ordering::Relaxed),
        }
    }
}

/// What a fault bdev injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Requests failed with an injected error.
    pub failed: u64,
    /// Requests whose completion was delayed.
    pub delayed: u64,
    /// Requests held until aborted.
    pub stuck: u64,
    /// Requests aborted (stuck or waiting out a delay).
    pub aborted: u64,
    /// Writes refused for want of space (the space limit).
    pub no_space: u64,
}
