//! Counters of an `rbd` bdev: what its channels did, summed over them.
//!
//! Each channel counts in plain integers and publishes them with relaxed
//! stores once per poll into its own [`ChannelCounters`] (one writer, no
//! read-modify-write on the data path); [`RbdBdev::stats`](super::RbdBdev::stats)
//! sums every channel's, closed ones included.

use crate::channel_stats::channel_stats;

channel_stats! {
    /// What the channels of an `rbd` bdev did since it was opened.
    pub struct RbdStats;
    /// One channel's published counters.
    pub(super) struct ChannelCounters;
    summed {
        /// Requests completed (successfully or not).
        completed,
        /// Requests completed with an error (included in `completed`).
        errors,
        /// Requests submitted and not yet completed, as of each channel's last
        /// poll.
        in_flight,
        /// Operations handed to librbd (a FUA write done as a write and a
        /// flush counts two).
        submitted,
        /// Polls of the channels.
        polls,
        /// Completions a channel took from librbd's queue that belonged to
        /// another channel of the same bdev and handed over to it (0 with one
        /// channel).
        handed_over,
        /// Completions librbd reported with an error code at submission (the
        /// request failed without reaching the cluster).
        submit_errors,
    }
}
