//! The `Poller` contract: the unit of work a reactor runs.
//!
//! A reactor calls `poll` on each of its pollers in turn, forever. A poll does
//! a bounded amount of work (a budget), never blocks and returns how many
//! units of work it did; zero means "idle". The reactor turns those answers
//! into busy/idle time per poller and per reactor, and into the decision to
//! sleep under the adaptive idle policy.

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
    /// own wake eventfd. Queried once when the poller is added.
    fn wait_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    /// Called once when the reactor starts to shut down: stop taking new work
    /// and finish what is in flight.
    fn begin_shutdown(&mut self) {}

    /// True when nothing is in flight. The reactor keeps polling during
    /// shutdown until every poller is drained (or a deadline passes).
    fn is_drained(&self) -> bool {
        true
    }
}
