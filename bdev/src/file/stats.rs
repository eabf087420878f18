//! Counters of a `file` bdev: what its channels did, summed over them.
//!
//! Each channel counts in plain integers and publishes them with relaxed
//! stores once per poll into its own [`ChannelCounters`] (one writer, no
//! read-modify-write on the data path); [`FileBdev::stats`](super::FileBdev::stats)
//! sums every channel's, closed ones included.

use crate::channel_stats::channel_stats;

channel_stats! {
    /// What the channels of a `file` bdev did since it was opened.
    pub struct FileStats;
    /// One channel's published counters.
    pub(super) struct ChannelCounters;
    summed {
        /// Requests completed (successfully or not).
        completed,
        /// `io_uring_enter` system calls made to submit (and, with IOPOLL, to
        /// reap). Divided by `completed`: the bench's `submit_syscalls_per_io`.
        submit_syscalls,
        /// Polls of the channels: `submit_syscalls` never exceeds it (one ring)
        /// or twice it (IOPOLL, whose flushes and deallocations use a second
        /// ring).
        polls,
        /// Reads and writes that went through the bounce pool because a buffer
        /// did not meet the O_DIRECT alignment.
        bounced,
        /// Reads and writes done on registered fixed buffers.
        fixed,
        /// Requests that waited in a channel for ring room, a slot or bounce
        /// chunks before they went to the kernel.
        waited,
        /// Enters that failed and were retried.
        enter_errors,
    }
}

impl FileStats {
    /// `io_uring_enter` calls per completed request (0 when none).
    pub fn submit_syscalls_per_io(&self) -> f64 {
        if self.completed == 0 {
            0.0
        } else {
            self.submit_syscalls as f64 / self.completed as f64
        }
    }
}
