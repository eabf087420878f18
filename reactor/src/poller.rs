//! The `Poller` contract: the unit of work a reactor runs.
//!
//! A reactor calls `poll` on each of its pollers in turn, forever. A poll does
//! a bounded amount of work (a budget), never blocks and returns how many
//! units of work it did; zero means "idle". The reactor turns those answers
//! into busy/idle time per poller and per reactor, and into the decision to
//! sleep under the adaptive idle policy. A poller on a reactor is known by its
//! [`PollerId`].

use std::fmt;
use std::os::fd::RawFd;

/// A unit of work owned by exactly one reactor thread.
pub trait Poller: Send {
    /// Short name for statistics and logs (e.g. `tcmu:disk0`, `bdev:ram0`).
    fn name(&self) -> &str;

    /// Does at most a budget of work without blocking; returns the number of
    /// work items done (commands received, completions delivered, ...).
    fn poll(&mut self) -> usize;

    /// File descriptors that become readable when this poller has new work
    /// from outside the process (a UIO device, an eventfd). Under the
    /// `adaptive` idle policy the reactor sleeps in epoll on these plus its
    /// own wake eventfd. Queried once when the poller is added (not at all
    /// under the `busy` policy).
    ///
    /// The descriptors must stay open while the poller is on a reactor. They
    /// are registered edge-triggered: every new notification wakes a
    /// sleeping reactor once, so the poller need not read or acknowledge
    /// them (it may, if its device wants that); a wake-up only means "poll
    /// now". Several pollers may return the same descriptor.
    fn wait_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    /// Called once when the reactor starts to shut down, or when this poller
    /// is being removed: stop taking new work and finish what is in flight.
    /// The reactor keeps calling `poll` afterwards until `is_drained`.
    fn begin_shutdown(&mut self) {}

    /// True when nothing is in flight. The reactor keeps polling during
    /// shutdown until every poller is drained (or its `drain_timeout`
    /// passes).
    fn is_drained(&self) -> bool {
        true
    }
}

/// Identifies a poller on its reactor (unique per reactor, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PollerId(u64);

impl PollerId {
    /// The id with this raw value.
    pub const fn from_raw(raw: u64) -> Self {
        PollerId(raw)
    }

    /// The raw value.
    pub const fn as_raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for PollerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "poller#{}", self.0)
    }
}
