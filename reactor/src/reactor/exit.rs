//! What a reactor hands back: the pollers and final counters at exit, and a
//! poller taken off by a removal.
//!
//! Not a report of load: a reactor's load over an interval is
//! [`ReactorLoad`](crate::stats::ReactorLoad), the one report type.

use std::fmt;

use crate::poller::{Poller, PollerId};
use crate::stats::{PollerStats, ReactorStats};

/// What [`ReactorHandle::join`](super::ReactorHandle::join) returns.
pub struct ReactorExit {
    /// Final, exact counters, with every poller still on the reactor.
    pub stats: ReactorStats,
    /// True if every poller reported `is_drained` before the deadline.
    pub drained: bool,
    /// The pollers still on the reactor at exit, in polling order.
    pub pollers: Vec<(PollerId, Box<dyn Poller>)>,
}

impl fmt::Debug for ReactorExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorExit")
            .field("stats", &self.stats)
            .field("drained", &self.drained)
            .field(
                "pollers",
                &self
                    .pollers
                    .iter()
                    .map(|(id, p)| (id, p.name()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A poller taken off its reactor by
/// [`ReactorHandle::remove_poller`](super::ReactorHandle::remove_poller).
pub struct RemovedPoller {
    /// Its id on the reactor.
    pub id: PollerId,
    /// The poller; `begin_shutdown` has been called on it.
    pub poller: Box<dyn Poller>,
    /// True if it reported `is_drained` before the deadline.
    pub drained: bool,
    /// Its final, exact counters.
    pub stats: PollerStats,
}

impl fmt::Debug for RemovedPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemovedPoller")
            .field("id", &self.id)
            .field("poller", &self.poller.name())
            .field("drained", &self.drained)
            .field("stats", &self.stats)
            .finish()
    }
}
