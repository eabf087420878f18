//! Counters of an `nvme` bdev: what its channels did, summed over them.
//!
//! Each channel counts in plain integers and publishes them with relaxed
//! stores once per poll into its own [`ChannelCounters`] (one writer, no
//! read-modify-write on the data path); [`NvmeBdev::stats`](super::NvmeBdev::stats)
//! sums every channel's, closed ones included.

use crate::channel_stats::channel_stats;

channel_stats! {
    /// What the channels of an `nvme` bdev did since it was opened.
    pub struct NvmeStats;
    /// One channel's published counters.
    pub(super) struct ChannelCounters;
    summed {
        /// Requests completed (successfully or not).
        completed,
        /// NVMe commands completed: more than `completed` when requests were
        /// split.
        commands,
        /// Reads and writes larger than one command, sent as several.
        split,
        /// `io_uring_enter` system calls made to submit (and, with IOPOLL, to
        /// reap). Divided by `completed`: the bench's `submit_syscalls_per_io`.
        submit_syscalls,
        /// Polls of the channels: `submit_syscalls` never exceeds it.
        polls,
        /// Commands whose data went through the bounce pool.
        bounced,
        /// Commands on registered fixed buffers.
        fixed,
        /// Commands sent vectored (several iovecs, no copy).
        vectored,
        /// Requests that waited in a channel for ring room, slots or bounce
        /// buffers before they went to the kernel.
        waited,
        /// Enters that failed and were retried.
        enter_errors,
        /// Commands the controller completed with an error status.
        status_errors,
    }
    last_nonzero {
        /// The last such status (the CQE status field without the phase
        /// bit: SCT in bits 10:8, SC in bits 7:0), 0 if none.
        last_status,
    }
}

impl NvmeStats {
    /// `io_uring_enter` calls per completed request (0 when none).
    pub fn submit_syscalls_per_io(&self) -> f64 {
        if self.completed == 0 {
            0.0
        } else {
            self.submit_syscalls as f64 / self.completed as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_sum() {
        let a = ChannelCounters::default();
        let b = ChannelCounters::default();
        let one = NvmeStats {
            completed: 10,
            commands: 12,
            split: 1,
            submit_syscalls: 3,
            polls: 5,
            bounced: 2,
            fixed: 4,
            vectored: 6,
            waited: 7,
            enter_errors: 8,
            status_errors: 1,
            last_status: 0x281,
        };
        a.publish(&one);
        b.publish(&NvmeStats {
            last_status: 0,
            ..one
        });
        let total = NvmeStats::sum([&a, &b]);
        assert_eq!(total.completed, 20);
        assert_eq!(total.commands, 24);
        assert_eq!(total.enter_errors, 16);
        assert_eq!(total.last_status, 0x281);
        assert_eq!(a.load(), one);
        assert!((total.submit_syscalls_per_io() - 0.3).abs() < 1e-9);
        assert_eq!(NvmeStats::default().submit_syscalls_per_io(), 0.0);
    }
}
