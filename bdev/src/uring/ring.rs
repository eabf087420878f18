//! One io_uring instance and the memory it shares with the kernel: the only
//! unsafe code of the engine.
//!
//! # Contract
//! Once an SQE is pushed ([`Ring::push`]), the kernel may read and write the
//! memory it names (data buffers, iovec arrays) at any time until its CQE is
//! reaped ([`Ring::reap`]). A fixed buffer registered with
//! [`Ring::register_buffers`] is pinned by the kernel and used for every
//! `READ_FIXED`/`WRITE_FIXED` naming it until the ring is dropped. This
//! module keeps the ring's side of that bargain:
//! - it never lets the completion queue overflow (a pushed SQE is refused
//!   unless its CQE is certain to find room: [`Ring::room`]), so every
//!   request gets exactly one CQE;
//! - dropping a `Ring` first waits for every outstanding CQE, so the kernel
//!   is done with all memory named by SQEs before the owner of that memory
//!   (the channel, declared after its ring or dropping it first) frees it.
//!
//! The caller's side is on `push` and `register_buffers`.

use std::fmt;
use std::io;

use io_uring::{cqueue, squeue, EnterFlags, IoUring};

use super::fixed::{FixedRefused, FixedRegions};
use crate::IoVec;

/// How to set a ring up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Submission queue entries (rounded up to a power of two by the
    /// kernel); the completion queue gets twice as many.
    pub entries: u32,
    /// `IORING_SETUP_IOPOLL`: completions are polled from the device (it
    /// needs O_DIRECT and a device with poll queues, and takes only reads
    /// and writes). Reaping then needs an `io_uring_enter` on every poll
    /// while anything is in flight.
    pub iopoll: bool,
    /// `IORING_SETUP_SQPOLL` with this idle time in milliseconds: a kernel
    /// thread consumes the SQ, and an enter is made only to wake it.
    pub sqpoll_idle_ms: Option<u32>,
}

/// One io_uring, owned by one thread.
///
/// Invariant: `outstanding` (SQEs pushed whose CQE has not been reaped) is
/// at most the CQ size.
pub struct Ring<S: squeue::EntryMarker = squeue::Entry, C: cqueue::EntryMarker = cqueue::Entry> {
    ring: IoUring<S, C>,
    config: RingConfig,
    /// SQEs pushed whose CQE has not been reaped.
    outstanding: u32,
    /// CQ entries.
    cq_entries: u32,
    /// `io_uring_enter` calls made.
    enters: u64,
    /// Enters that failed (the SQEs stay queued and go with the next).
    enter_errors: u64,
}

impl<S: squeue::EntryMarker, C: cqueue::EntryMarker> Ring<S, C> {
    /// Sets up a ring. Errors are the kernel's (`ENOSYS`: no io_uring;
    /// `EPERM`: disabled by `kernel.io_uring_disabled`; `EINVAL`: a flag
    /// this kernel does not know).
    pub fn new(config: RingConfig) -> io::Result<Self> {
        let entries = config.entries.clamp(1, 32768);
        let mut builder = IoUring::<S, C>::builder();
        builder.setup_cqsize(entries.next_power_of_two() * 2);
        builder.setup_clamp();
        if config.iopoll {
            builder.setup_iopoll();
        }
        if let Some(idle) = config.sqpoll_idle_ms {
            builder.setup_sqpoll(idle);
        }
        // SUBMIT_ALL (5.18+): an SQE that fails at submission does not
        // stop the ones after it. Older kernels refuse the flag; without it
        // the rest stay queued and go with the next enter.
        let mut with_submit_all = builder.clone();
        with_submit_all.setup_submit_all();
        let ring = match with_submit_all.build(entries) {
            Ok(ring) => ring,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => builder.build(entries)?,
            Err(e) => return Err(e),
        };
        let cq_entries = ring.params().cq_entries();
        Ok(Self {
            ring,
            config,
            outstanding: 0,
            cq_entries,
            enters: 0,
            enter_errors: 0,
        })
    }

    /// How the ring was set up.
    pub fn config(&self) -> RingConfig {
        self.config
    }

    /// SQEs that can be pushed now: free SQ entries, and CQ entries not
    /// spoken for by SQEs already pushed.
    #[inline]
    pub fn room(&mut self) -> u32 {
        let sq = self.ring.submission();
        let sq_free = (sq.capacity() - sq.len()) as u32;
        drop(sq);
        sq_free.min(self.cq_entries - self.outstanding)
    }

    /// SQEs pushed whose CQE has not been reaped.
    #[inline]
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// Queues one SQE in shared memory (no system call; the kernel sees it
    /// at the next [`publish`](Self::publish)). Returns false, pushing
    /// nothing, when there is no [`room`](Self::room).
    ///
    /// # Safety
    /// Every address in `sqe` (buffer, iovec array and the buffers it names)
    /// must stay valid, for reads and for writes as the operation needs, and
    /// untouched by anyone but the kernel where the kernel writes, until the
    /// CQE carrying this SQE's `user_data` has been returned by
    /// [`reap`](Self::reap) or the ring has been dropped. A fixed-buffer
    /// operation must name a buffer index and a range inside a buffer
    /// registered with [`register_buffers`](Self::register_buffers).
    #[inline]
    pub unsafe fn push(&mut self, sqe: &S) -> bool {
        if self.room() == 0 {
            return false;
        }
        let mut sq = self.ring.submission();
        // SAFETY: the caller guarantees the memory `sqe` names stays valid
        // until its CQE is reaped or the ring is dropped (which waits for
        // it); the room check above makes the push succeed and keeps a CQ
        // entry for it.
        let pushed = unsafe { sq.push(sqe) }.is_ok();
        drop(sq);
        if pushed {
            self.outstanding += 1;
        }
        pushed
    }

    /// Hands the SQEs pushed since the last call to the kernel: one
    /// `io_uring_enter`, or none when there is nothing to submit (nor, with
    /// IOPOLL, anything to poll; nor, with SQPOLL, a sleeping thread to
    /// wake). Returns the number of enters made (0 or 1). A failed enter
    /// (`EAGAIN`, `EBUSY`, `EINTR`) leaves the SQEs queued for the next call
    /// and is counted in [`enter_errors`](Self::enter_errors).
    #[inline]
    pub fn publish(&mut self) -> u32 {
        let mut sq = self.ring.submission();
        sq.sync();
        let pending = sq.len() as u32;
        let sqpoll_needs_wakeup = self.config.sqpoll_idle_ms.is_some() && sq.need_wakeup();
        let cq_overflow = sq.cq_overflow();
        drop(sq);
        let mut flags = EnterFlags::empty();
        if self.config.iopoll && self.outstanding > 0 {
            flags |= EnterFlags::GETEVENTS;
        }
        if cq_overflow {
            // Cannot happen while `room` is respected; if it does, an enter
            // with GETEVENTS flushes the kernel's overflow list.
            flags |= EnterFlags::GETEVENTS;
        }
        let to_submit = if self.config.sqpoll_idle_ms.is_some() {
            // The thread only needs waking for work it has not picked up.
            if sqpoll_needs_wakeup && pending > 0 {
                flags |= EnterFlags::SQ_WAKEUP;
            }
            0
        } else {
            pending
        };
        if to_submit == 0 && flags.is_empty() {
            return 0;
        }
        self.enters += 1;
        // SAFETY: a plain io_uring_enter on our own ring with no argument
        // structure; the SQEs it submits were pushed under `push`'s contract.
        let entered = unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(to_submit, 0, flags.bits(), None)
        };
        if entered.is_err() {
            self.enter_errors += 1;
        }
        1
    }

    /// Hands every CQE the kernel has posted to `each`, reading the CQ in
    /// shared memory without a system call. Returns how many there were.
    #[inline]
    pub fn reap(&mut self, mut each: impl FnMut(C)) -> usize {
        let mut cq = self.ring.completion();
        let mut n = 0;
        for cqe in &mut cq {
            // Counted before `each` runs: should it panic, the CQE is
            // consumed (the queue's drop publishes the head) and no longer
            // outstanding, so `wait_idle` does not wait for it forever.
            n += 1;
            self.outstanding -= 1;
            each(cqe);
        }
        n
    }

    /// Registers `bufs` as the ring's fixed buffers (index = position), in
    /// one `IORING_REGISTER_BUFFERS`; the kernel pins their pages. Fails
    /// with the kernel's error (`EFAULT`/`EOPNOTSUPP` for memory it cannot
    /// pin, `ENOMEM` over `RLIMIT_MEMLOCK`, `EBUSY` if buffers are already
    /// registered).
    ///
    /// # Safety
    /// Each buffer must stay mapped to the same memory until the ring is
    /// dropped: fixed-buffer I/O is done on the pages pinned here, whatever
    /// the address maps to later.
    pub unsafe fn register_buffers(&mut self, bufs: &[libc::iovec]) -> io::Result<()> {
        // SAFETY: the caller keeps the buffers mapped for the ring's life.
        unsafe { self.ring.submitter().register_buffers(bufs) }
    }

    /// Replaces the ring's fixed buffers with `regions`, cut into pieces of
    /// at most `piece` bytes ([`FixedRegions::plan`]), and returns the table
    /// that finds a request's buffer in them (empty when `regions` is).
    /// Call it with no request outstanding.
    ///
    /// # Safety
    /// As [`register_buffers`](Self::register_buffers): the regions stay
    /// mapped to the same memory until the ring is dropped.
    pub unsafe fn register_fixed(
        &mut self,
        regions: &[IoVec],
        piece: usize,
    ) -> Result<FixedRegions, FixedRefused> {
        self.unregister_buffers();
        let Some(pieces) = FixedRegions::plan(regions, piece) else {
            return Err(FixedRefused {
                bytes: regions.iter().map(|r| r.len).sum(),
                error: io::Error::other(format!(
                    "more than the kernel's 16384 fixed buffers of {piece} bytes"
                )),
            });
        };
        if pieces.is_empty() {
            return Ok(FixedRegions::default());
        }
        // SAFETY: this function's contract is `register_buffers`'.
        match unsafe { self.register_buffers(&pieces) } {
            Ok(()) => Ok(FixedRegions::registered(&pieces)),
            Err(error) => Err(FixedRefused {
                bytes: pieces.iter().map(|p| p.iov_len).sum(),
                error,
            }),
        }
    }

    /// Drops any fixed buffers (no-op if none). Waits for nothing: call it
    /// only with no fixed-buffer I/O outstanding.
    pub fn unregister_buffers(&mut self) {
        let _ = self.ring.submitter().unregister_buffers();
    }

    /// The ring's descriptor: readable while CQEs wait to be reaped (a
    /// reactor sleeps on it with I/O in flight).
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.ring.as_raw_fd()
    }

    /// `io_uring_enter` calls made so far.
    pub fn enters(&self) -> u64 {
        self.enters
    }

    /// Enters that failed and were retried by the next publish.
    pub fn enter_errors(&self) -> u64 {
        self.enter_errors
    }

    /// Blocks until every outstanding SQE has completed, discarding the
    /// CQEs. Used when the ring's owner goes away with requests in flight.
    pub fn wait_idle(&mut self) {
        while self.outstanding > 0 {
            let want = self.outstanding as usize;
            // Errors (EINTR, EBUSY) are retried: memory named by in-flight
            // SQEs must not be freed before the kernel is done with it.
            let _ = self.ring.submitter().submit_and_wait(want.min(1));
            self.reap(drop);
        }
    }
}

impl<S: squeue::EntryMarker, C: cqueue::EntryMarker> Drop for Ring<S, C> {
    fn drop(&mut self) {
        self.wait_idle();
    }
}

impl<S: squeue::EntryMarker, C: cqueue::EntryMarker> fmt::Debug for Ring<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("config", &self.config)
            .field("outstanding", &self.outstanding)
            .field("cq_entries", &self.cq_entries)
            .field("enters", &self.enters)
            .finish()
    }
}
