//! Counters of an `nvme` bdev: what its channels did, summed over them.
//!
//! Each channel counts in plain integers and publishes them with relaxed
//! stores once per poll into its own [`ChannelCounters`] (one writer, no
//! read-modify-write on the data path); [`NvmeBdev::stats`](super::NvmeBdev::stats)
//! sums every channel's, closed ones included.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the channels of an `nvme` bdev did since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NvmeStats {
    /// Requests completed (successfully or not).
    pub completed: u64,
    /// NVMe commands completed: more than `completed` when requests were
    /// split.
    pub commands: u64,
    /// Reads and writes larger than one command, sent as several.
    pub split: u64,
    /// `io_uring_enter` system calls made to submit (and, with IOPOLL, to
    /// reap). Divided by `completed`: the bench's `submit_syscalls_per_io`.
    pub submit_syscalls: u64,
    /// Polls of the channels: `submit_syscalls` never exceeds it.
    pub polls: u64,
    /// Commands whose data went through the bounce pool.
    pub bounced: u64,
    /// Commands on registered fixed buffers.
    pub fixed: u64,
    /// Commands sent vectored (several iovecs, no copy).
    pub vectored: u64,
    /// Requests that waited in a channel for ring room, slots or bounce
    /// buffers before they went to the kernel.
    pub waited: u64,
    /// Enters that failed and were retried.
    pub enter_errors: u64,
    /// Commands the controller completed with an error status.
    pub status_errors: u64,
    /// The last such status (the CQE status field without the phase
    /// bit: SCT in bits 10:8, SC in bits 7:0), 0 if none.
    pub last_status: u64,
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

    fn add(&mut self, other: &NvmeStats) {
        self.completed += other.completed;
        self.commands += other.commands;
        self.split += other.split;
        self.submit_syscalls += other.submit_syscalls;
        self.polls += other.polls;
        self.bounced += other.bounced;
        self.fixed += other.fixed;
        self.vectored += other.vectored;
        self.waited += other.waited;
        self.enter_errors += other.enter_errors;
        self.status_errors += other.status_errors;
        if other.last_status != 0 {
            self.last_status = other.last_status;
        }
    }

    /// The sum of several channels' counters.
    pub(super) fn sum<'a>(channels: impl IntoIterator<Item = &'a ChannelCounters>) -> Self {
        let mut total = NvmeStats::default();
        for channel in channels {
            total.add(&channel.load());
        }
        total
    }
}

/// One channel's published counters, in the order of [`NvmeStats`]'s
/// fields.
#[derive(Debug, Default)]
pub(super) struct ChannelCounters {
    values: [AtomicU64; FIELDS],
}

const FIELDS: usize = 12;

impl NvmeStats {
    fn to_array(self) -> [u64; FIELDS] {
        [
            self.completed,
            self.commands,
            self.split,
            self.submit_syscalls,
            self.polls,
            self.bounced,
            self.fixed,
            self.vectored,
            self.waited,
            self.enter_errors,
            self.status_errors,
            self.last_status,
        ]
    }

    fn from_array(a: [u64; FIELDS]) -> Self {
        let [completed, commands, split, submit_syscalls, polls, bounced, fixed, vectored, waited, enter_errors, status_errors, last_status] =
            a;
        Self {
            completed,
            commands,
            split,
            submit_syscalls,
            polls,
            bounced,
            fixed,
            vectored,
            waited,
            enter_errors,
            status_errors,
            last_status,
        }
    }
}

impl ChannelCounters {
    /// Publishes the channel's current totals (relaxed: a reader sees each
    /// counter at some recent value).
    #[inline]
    pub fn publish(&self, stats: &NvmeStats) {
        for (counter, value) in self.values.iter().zip(stats.to_array()) {
            counter.store(value, Ordering::Relaxed);
        }
    }

    fn load(&self) -> NvmeStats {
        NvmeStats::from_array(std::array::from_fn(|i| {
            self.values[i].load(Ordering::Relaxed)
        }))
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
