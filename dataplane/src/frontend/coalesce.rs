//! [`Coalescer`]: publish completions now, or hold them so that one
//! doorbell (TCMU) or one REPLY_AND_GET_MULTI (SCST) carries more of them.
//!
//! # The rule
//! At the end of a poll a frontend has `pending` completions (responses
//! written to the ring, replies queued) that the kernel has not been given
//! yet. They are **held** when all of these hold:
//! - nothing must go out now (`urgent` is false: the device is not draining,
//!   and for SCST no queued reply is one a command or the kernel waits for);
//! - fewer than [`CoalesceConfig::batch`] are pending;
//! - either a batch is *building by itself* (`building`: the initiator keeps
//!   the queue busy, so more completions are about to come) and
//!   [`CoalesceConfig::max_hold`] has not passed, or the coalescing window
//!   ([`CoalesceConfig::window`], off by default) has not passed.
//!
//! So a lone command never waits (nothing builds a batch behind it), unless
//! a window is configured. Both times are measured from the start of the
//! hold, which the frontend sets with [`Coalescer::restart`]: TCMU restarts
//! it when the first completion after a publication is written, SCST at
//! every exchange with the kernel.
//!
//! # Cost
//! The coalescer is two integers of configuration in clock ticks and one
//! timestamp: no allocation, no lock, and [`Coalescer::hold`] reads the
//! clock only when its answer depends on the time.

use std::time::Duration;

use reactor::clock;

/// How completions are coalesced; the same settings for both frontends
/// (`doorbell_batch` and `completion_coalesce_us` in `serve`'s `[tcmu]` and
/// `[[scst]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceConfig {
    /// Completions are held (see the module docs) only while fewer than
    /// this many are pending. Default 32; 1 publishes at every poll that
    /// completed something; 0 never holds.
    pub batch: usize,
    /// Longest hold while a batch builds up by itself. Default 20 µs.
    pub max_hold: Duration,
    /// Completion coalescing window: when non-zero, completions may wait up
    /// to this long for others to join them even when no batch builds up by
    /// itself (up to `batch` of them), like NVMe interrupt aggregation. Each
    /// publication makes the kernel complete the batch and wake the
    /// initiator side once, so on a host short of CPU (a small VM shared
    /// with the initiator) fewer, larger batches leave more CPU for I/O; it
    /// adds up to this much latency per command. The device keeps its
    /// reactor awake while a completion is held. Default 0 (off).
    pub window: Duration,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        Self {
            batch: 32,
            max_hold: Duration::from_micros(20),
            window: Duration::ZERO,
        }
    }
}

/// Decides, at the end of each poll, whether pending completions are
/// published now or held. See the module docs for the rule. Owned by the
/// device (one reactor thread).
#[derive(Debug, Clone)]
pub struct Coalescer {
    batch: usize,
    /// `max_hold` in clock ticks.
    max_hold_ticks: u64,
    /// `window` in clock ticks (0 = off).
    window_ticks: u64,
    /// Clock ticks the current hold is measured from.
    since: u64,
}

/// A duration in clock ticks (saturating).
fn ticks(d: Duration) -> u64 {
    clock::ns_to_ticks(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Coalescer {
    /// A coalescer with `config`, its hold measured from tick 0.
    pub fn new(config: &CoalesceConfig) -> Self {
        Self {
            batch: config.batch,
            max_hold_ticks: ticks(config.max_hold),
            window_ticks: ticks(config.window),
            since: 0,
        }
    }

    /// Starts measuring the hold at `now` (clock ticks).
    #[inline]
    pub fn restart(&mut self, now: u64) {
        self.since = now;
    }

    /// Clock ticks from the start of the hold to `now`.
    #[inline]
    pub fn age(&self, now: u64) -> u64 {
        now.wrapping_sub(self.since)
    }

    /// True to hold `pending` completions, false to publish them now:
    /// `urgent` means something must go out now, `building` that a batch is
    /// building up by itself. Reads the clock only when the answer depends
    /// on the time.
    #[inline]
    pub fn hold(&self, pending: usize, urgent: bool, building: bool) -> bool {
        if urgent || pending >= self.batch || (!building && self.window_ticks == 0) {
            return false;
        }
        let age = self.age(clock::now());
        (building && age < self.max_hold_ticks) || age < self.window_ticks
    }

    /// True once [`CoalesceConfig::max_hold`] has passed since the start of
    /// the hold at `now`.
    #[inline]
    pub fn max_hold_passed(&self, now: u64) -> bool {
        self.age(now) >= self.max_hold_ticks
    }

    /// True if a coalescing window is configured: a device holding
    /// completions then reports work, so its reactor does not go to sleep
    /// before the window closes.
    #[inline]
    pub fn has_window(&self) -> bool {
        self.window_ticks != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn coalescer(batch: usize, max_hold: Duration, window: Duration) -> Coalescer {
        let mut c = Coalescer::new(&CoalesceConfig {
            batch,
            max_hold,
            window,
        });
        c.restart(clock::now());
        c
    }

    #[test]
    fn defaults_are_a_batch_of_32_and_no_window() {
        let d = CoalesceConfig::default();
        assert_eq!(d.batch, 32);
        assert_eq!(d.max_hold, Duration::from_micros(20));
        assert_eq!(d.window, Duration::ZERO);
        assert!(!Coalescer::new(&d).has_window());
    }

    #[test]
    fn a_building_batch_is_held_until_full() {
        let c = coalescer(4, HOUR, Duration::ZERO);
        assert!(c.hold(1, false, true));
        assert!(c.hold(3, false, true));
        assert!(!c.hold(4, false, true), "a full batch goes out");
        assert!(!c.hold(1, true, true), "urgent goes out");
    }

    #[test]
    fn nothing_is_held_when_no_batch_builds_up_and_no_window_is_set() {
        let c = coalescer(4, HOUR, Duration::ZERO);
        assert!(!c.hold(1, false, false));
    }

    #[test]
    fn max_hold_bounds_a_building_batch() {
        let c = coalescer(4, Duration::ZERO, Duration::ZERO);
        assert!(!c.hold(1, false, true));
        assert!(c.max_hold_passed(clock::now()));
        let c = coalescer(4, HOUR, Duration::ZERO);
        assert!(!c.max_hold_passed(clock::now()));
    }

    #[test]
    fn a_window_holds_even_without_a_building_batch() {
        let c = coalescer(4, Duration::ZERO, HOUR);
        assert!(c.has_window());
        assert!(c.hold(1, false, false));
        assert!(c.hold(1, false, true));
        assert!(!c.hold(4, false, false), "up to a batch");
        assert!(!c.hold(1, true, false), "urgent goes out");
    }

    #[test]
    fn batch_zero_never_holds() {
        let c = coalescer(0, HOUR, HOUR);
        assert!(!c.hold(0, false, true));
        assert!(!c.hold(1, false, true));
    }
}
