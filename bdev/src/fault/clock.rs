//! The time the fault bdev measures delays in: the monotonic clock
//! (`clock_gettime` through the vDSO, no system call), or a manual clock
//! that tests advance by hand so that nothing depends on timing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A source of nanoseconds since an arbitrary start.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The monotonic clock.
    Monotonic(Instant),
    /// A time that only moves when [`ManualTime::advance`] is called.
    Manual(ManualTime),
}

impl Clock {
    /// The monotonic clock, starting now.
    pub fn monotonic() -> Self {
        Clock::Monotonic(Instant::now())
    }

    /// A manual clock at 0, and the handle that moves it.
    pub fn manual() -> (Self, ManualTime) {
        let time = ManualTime(Arc::new(AtomicU64::new(0)));
        (Clock::Manual(time.clone()), time)
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        match self {
            Clock::Monotonic(start) => start.elapsed().as_nanos() as u64,
            Clock::Manual(time) => time.0.load(Ordering::Acquire),
        }
    }
}

/// Moves a manual [`Clock`].
#[derive(Debug, Clone)]
pub struct ManualTime(Arc<AtomicU64>);

impl ManualTime {
    /// Moves the clock forward by `us` microseconds.
    pub fn advance_us(&self, us: u64) {
        self.0.fetch_add(us * 1000, Ordering::AcqRel);
    }
}
