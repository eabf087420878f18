//! Counters of a `file` bdev: what its channels did, summed over them.
//!
//! Each channel counts in plain integers and publishes them with relaxed
//! stores once per poll into its own [`ChannelCounters`] (one writer, no
//! read-modify-write on the data path); [`FileBdev::stats`](super::FileBdev::stats)
//! sums every channel's, closed ones included.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the channels of a `file` bdev did since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Requests completed (successfully or not).
    pub completed: u64,
    /// `io_uring_enter` system calls made to submit (and, with IOPOLL, to
    /// reap). Divided by `completed`: the bench's `submit_syscalls_per_io`.
    pub submit_syscalls: u64,
    /// Polls of the channels: `submit_syscalls` never exceeds it (one ring)
    /// or twice it (IOPOLL, whose flushes and deallocations use a second
    /// ring).
    pub polls: u64,
    /// Reads and writes that went through the bounce pool because a buffer
    /// did not meet the O_DIRECT alignment.
    pub bounced: u64,
    /// Reads and writes done on registered fixed buffers.
    pub fixed: u64,
    /// Requests that waited in a channel for ring room, a slot or bounce
    /// chunks before they went to the kernel.
    pub waited: u64,
    /// Enters that failed and were retried.
    pub enter_errors: u64,
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

    fn add(&mut self, other: &FileStats) {
        self.completed += other.completed;
        self.submit_syscalls += other.submit_syscalls;
        self.polls += other.polls;
        self.bounced += other.bounced;
        self.fixed += other.fixed;
        self.waited += other.waited;
        self.enter_errors += other.enter_errors;
    }

    /// The sum of several channels' counters.
    pub(super) fn sum<'a>(channels: impl IntoIterator<Item = &'a ChannelCounters>) -> Self {
        let mut total = FileStats::default();
        for channel in channels {
            total.add(&channel.load());
        }
        total
    }
}

/// One channel's published counters.
#[derive(Debug, Default)]
pub(super) struct ChannelCounters {
    completed: AtomicU64,
    submit_syscalls: AtomicU64,
    polls: AtomicU64,
    bounced: AtomicU64,
    fixed: AtomicU64,
    waited: AtomicU64,
    enter_errors: AtomicU64,
}

impl ChannelCounters {
    /// Publishes the channel's current totals (relaxed: a reader sees each
    /// counter at some recent value).
    #[inline]
    pub fn publish(&self, stats: &FileStats) {
        let store = |counter: &AtomicU64, value| counter.store(value, Ordering::Relaxed);
        store(&self.completed, stats.completed);
        store(&self.submit_syscalls, stats.submit_syscalls);
        store(&self.polls, stats.polls);
        store(&self.bounced, stats.bounced);
        store(&self.fixed, stats.fixed);
        store(&self.waited, stats.waited);
        store(&self.enter_errors, stats.enter_errors);
    }

    fn load(&self) -> FileStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FileStats {
            completed: load(&self.completed),
            submit_syscalls: load(&self.submit_syscalls),
            polls: load(&self.polls),
            bounced: load(&self.bounced),
            fixed: load(&self.fixed),
            waited: load(&self.waited),
            enter_errors: load(&self.enter_errors),
        }
    }
}
