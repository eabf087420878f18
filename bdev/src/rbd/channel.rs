//! A channel of the `rbd` bdev: the requests' slots and keys, the AIO calls,
//! and the completions polled from librbd's queue of the image.

use std::ffi::{c_int, c_void};
use std::fmt;
use std::mem::ManuallyDrop;
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::errno;
use super::ffi::{self, Api};
use super::plan::{plan, Iovs, Plan, Rules};
use super::route::{self, Completion, Key, Route};
use super::stats::{ChannelCounters, RbdStats};
use super::Shared;
use crate::request::CompletionQueue;
use crate::uring::Slots;
use crate::{BdevChannel, Error, IoCompletion, IoError, IoOp, IoRequest, IoVec, SgList};

/// Completions taken from librbd per `rbd_poll_io_events` call (an array
/// on the stack of `poll`).
const POLL_BATCH: usize = 32;

/// Iovecs each slot can hold for a trimmed copy of a request's list
/// without allocating (a longer one grows the slot's copy once).
const SCRATCH_IOVS: usize = 8;

/// What a request in librbd needs at its completion. Only the owning
/// channel touches it.
struct Slot {
    tag: u64,
    op: IoOp,
    /// Bytes a read must return.
    bytes: u64,
    /// A FUA write done as a write and a flush: the flush is to come.
    flush_after: bool,
    /// The trimmed copy of a request's iovecs that librbd was given (a
    /// read's list is used until its completion).
    scratch: Vec<IoVec>,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            tag: 0,
            op: IoOp::Read,
            bytes: 0,
            flush_after: false,
            scratch: Vec::with_capacity(SCRATCH_IOVS),
        }
    }
}

/// One channel. Owned by one thread.
///
/// Invariants: `in_flight` = requests in `ready` + slots in use, at most
/// `depth`; `outstanding` = AIOs in librbd whose completion this channel
/// has not finished, one per slot in use (the write and the flush of a
/// FUA write are in librbd one after the other).
pub(super) struct RbdChannel {
    shared: Arc<Shared>,
    api: &'static Api,
    image: ffi::Image,
    rules: Rules,
    route: Arc<Route>,
    /// The AIOs' callback arguments, one per slot. Leaked, with `slots`,
    /// when a drop gives up waiting for librbd.
    keys: ManuallyDrop<Box<[Key]>>,
    slots: ManuallyDrop<Slots<Slot>>,
    /// Requests finished without librbd (failed checks, zero length).
    ready: CompletionQueue,
    depth: usize,
    in_flight: usize,
    outstanding: usize,
    stats: RbdStats,
    counters: Arc<ChannelCounters>,
}

// SAFETY: `image` is the bdev's open image, which librbd lets any thread
// use (the shared state that owns it is Send + Sync); everything else is
// owned data, `Send` keys, or `Arc`s of `Sync` data.
unsafe impl Send for RbdChannel {}

impl RbdChannel {
    /// A channel for `depth` requests.
    pub fn new(shared: Arc<Shared>, depth: usize) -> Result<Self, Error> {
        let depth = depth.max(1);
        let route = Arc::new(Route::new(depth)?);
        // The keys name the route by a pointer obtained from
        // `Arc::into_raw`, as `Arc::increment_strong_count` wants it.
        let raw = Arc::into_raw(Arc::clone(&route));
        // SAFETY: `raw` came from `into_raw` just above; this gives that
        // count back, and `route` keeps the allocation alive.
        drop(unsafe { Arc::from_raw(raw) });
        let counters = Arc::new(ChannelCounters::default());
        shared.register_counters(&counters);
        Ok(Self {
            api: shared.connection.api,
            image: shared.connection.image(),
            rules: shared.rules,
            keys: ManuallyDrop::new(route::keys(raw, depth)),
            slots: ManuallyDrop::new(Slots::new(depth)),
            route,
            ready: CompletionQueue::new(depth),
            depth,
            in_flight: 0,
            outstanding: 0,
            stats: RbdStats::default(),
            counters,
            shared,
        })
    }

    /// Starts `request` in librbd as `plan` says, or completes it with the
    /// error librbd gave at once.
    fn start(&mut self, request: &IoRequest, plan: Plan) {
        let Some(index) = self.slots.take() else {
            // Cannot happen: at most `depth` requests, one slot each.
            self.fail_early(request.tag, IoError::NoResources);
            return;
        };
        let slot = self.slots.slot_mut(index);
        slot.tag = request.tag;
        slot.op = request.op;
        slot.flush_after = false;
        slot.bytes = match plan {
            Plan::Read { bytes, .. } => bytes,
            Plan::Write { flush_after, .. } => {
                slot.flush_after = flush_after;
                0
            }
            _ => 0,
        };
        let rc = self.issue(index, plan, &request.sgl);
        if rc < 0 {
            self.slots.release(index);
            self.stats.submit_errors += 1;
            self.fail_early(request.tag, errno::io_error(request.op, -rc));
        }
    }

    /// A request that failed before librbd had it.
    fn fail_early(&mut self, tag: u64, error: IoError) {
        self.stats.errors += 1;
        self.ready.complete(tag, Err(error));
    }

    /// Creates the AIO completion of slot `index` and hands `plan` to
    /// librbd. Returns librbd's answer (negative errno on failure, when
    /// nothing is in librbd).
    fn issue(&mut self, index: u32, plan: Plan, sgl: &SgList) -> c_int {
        let api = self.api;
        let image = self.image;
        let arg = ptr::from_ref(&self.keys[index as usize])
            .cast_mut()
            .cast::<c_void>();
        let mut completion: ffi::Completion = ptr::null_mut();
        // SAFETY: `arg` points at the slot's key, which stays put until the
        // completion is finished (the keys are freed only when no AIO is
        // outstanding); no callback: completions are polled.
        let rc = unsafe { (api.rbd_aio_create_completion)(arg, None, &mut completion) };
        if rc < 0 {
            return rc;
        }
        let slot = self.slots.slot_mut(index);
        let iovecs = |iovs: Iovs, scratch: &mut Vec<IoVec>| -> (*const libc::iovec, c_int) {
            if iovs.trimmed {
                iovs.copy_trimmed(sgl, scratch);
                (scratch.as_ptr().cast(), scratch.len() as c_int)
            } else {
                (sgl.iovs().as_ptr().cast(), iovs.count as c_int)
            }
        };
        // SAFETY: for every call below, `image` is the bdev's open image and
        // `completion` a fresh completion. The memory librbd reads or
        // writes stays valid until the completion is finished: a request's
        // buffers and iovec array by the `SgList` contract (the request
        // completes only after its AIO), a trimmed copy in the slot (not
        // touched until then). `IoVec` has the layout of `struct iovec`.
        let rc = unsafe {
            match plan {
                Plan::Read { offset, iovs, .. } => {
                    let (iov, count) = iovecs(iovs, &mut slot.scratch);
                    (api.rbd_aio_readv)(image, iov, count, offset, completion)
                }
                Plan::Write { offset, iovs, .. } => {
                    let (iov, count) = iovecs(iovs, &mut slot.scratch);
                    (api.rbd_aio_writev)(image, iov, count, offset, completion)
                }
                Plan::WriteFua {
                    offset,
                    bytes,
                    base,
                } => (api.rbd_aio_write2)(
                    image,
                    offset,
                    bytes as usize,
                    base.cast(),
                    completion,
                    ffi::OP_FLAG_FADVISE_FUA,
                ),
                Plan::Flush => (api.rbd_aio_flush)(image, completion),
                Plan::Discard { offset, bytes } => {
                    (api.rbd_aio_discard)(image, offset, bytes, completion)
                }
                Plan::WriteZeroes { offset, bytes } => {
                    (api.rbd_aio_write_zeroes)(image, offset, bytes as usize, completion, 0, 0)
                }
                Plan::Done(_) => -libc::EINVAL,
            }
        };
        if rc < 0 {
            // SAFETY: the completion was not handed to librbd.
            unsafe { (api.rbd_aio_release)(completion) };
            return rc;
        }
        self.outstanding += 1;
        self.stats.submitted += 1;
        0
    }

    /// Finishes one completion popped from librbd's queue or handed over:
    /// ours completes its request (or starts a FUA write's flush), another
    /// channel's goes to that channel. Returns the completions delivered.
    fn finish(&mut self, completion: Completion, done: &mut dyn FnMut(IoCompletion)) -> usize {
        let api = self.api;
        // SAFETY: a completion librbd returned, not yet released.
        let key = unsafe { (api.rbd_aio_get_arg)(completion.0) }.cast::<Key>();
        // SAFETY: every AIO of this bdev carries the address of a key of a
        // channel that keeps its keys until its AIOs are finished (or
        // leaks them), and this one is not finished yet.
        let key = unsafe { &*key };
        if !ptr::eq(key.route, Arc::as_ptr(&self.route)) {
            // SAFETY: `key.route` came from `Arc::into_raw` and the owner
            // still holds its `Arc` (its AIO is outstanding until it takes
            // this completion from the inbox), so the count is live; the
            // count taken here keeps the route alive until the handover
            // (push, flag, eventfd write) is over.
            let owner = unsafe {
                Arc::increment_strong_count(key.route);
                Arc::from_raw(key.route)
            };
            owner.hand_over(completion);
            self.stats.handed_over += 1;
            return 0;
        }
        let index = key.index;
        // SAFETY: a completion librbd returned; it is released right after
        // its value is read, and never used again.
        let ret = unsafe {
            let ret = (api.rbd_aio_get_return_value)(completion.0);
            (api.rbd_aio_release)(completion.0);
            ret
        };
        self.outstanding -= 1;
        let slot = self.slots.slot_mut(index);
        let mut result = if ret < 0 {
            Err(errno::io_error(slot.op, (-ret) as i32))
        } else if slot.op == IoOp::Read && ret as u64 != slot.bytes {
            Err(errno::short_read())
        } else {
            Ok(())
        };
        if result.is_ok() && slot.flush_after {
            slot.flush_after = false;
            let rc = self.issue(index, Plan::Flush, &SgList::EMPTY);
            if rc >= 0 {
                return 0;
            }
            self.stats.submit_errors += 1;
            result = Err(errno::io_error(IoOp::Flush, -rc));
        }
        let tag = self.slots.slot_mut(index).tag;
        self.slots.release(index);
        self.in_flight -= 1;
        self.stats.completed += 1;
        if result.is_err() {
            self.stats.errors += 1;
        }
        done(IoCompletion { tag, result });
        1
    }

    /// Takes every completion librbd has queued for the image (this
    /// channel's and, with several channels, others').
    fn reap(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
        let mut n = 0;
        let mut batch: [ffi::Completion; POLL_BATCH] = [ptr::null_mut(); POLL_BATCH];
        loop {
            // SAFETY: the open image; `batch` has room for POLL_BATCH
            // completions.
            let got = unsafe {
                (self.api.rbd_poll_io_events)(self.image, batch.as_mut_ptr(), POLL_BATCH as c_int)
            };
            if got <= 0 {
                break;
            }
            for &completion in &batch[..got as usize] {
                n += self.finish(Completion(completion), done);
            }
            if (got as usize) < POLL_BATCH {
                break;
            }
        }
        n
    }
}

impl BdevChannel for RbdChannel {
    fn submit(&mut self, request: IoRequest) -> Result<(), IoRequest> {
        if self.in_flight >= self.depth {
            return Err(request);
        }
        self.in_flight += 1;
        match plan(&self.rules, &request) {
            Plan::Done(Ok(())) => self.ready.complete(request.tag, Ok(())),
            Plan::Done(Err(error)) => self.fail_early(request.tag, error),
            plan => self.start(&request, plan),
        }
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
        self.stats.polls += 1;
        let ready = self.ready.deliver(done);
        self.in_flight -= ready;
        self.stats.completed += ready as u64;
        let mut n = ready;
        if self.outstanding > 0 {
            n += self.reap(done);
        }
        if self.route.is_kicked() {
            let route = Arc::clone(&self.route);
            route.take_handed_over(|completion| n += self.finish(completion, done));
        }
        self.stats.in_flight = self.in_flight as u64;
        self.counters.publish(&self.stats);
        n
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The image's eventfd (librbd writes it at every completion) and this
    /// channel's handover eventfd. Neither is ever read: the reactor
    /// registers them edge-triggered, and an eventfd's counter cannot reach
    /// its limit (2^64 - 2) at one write per completion.
    fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
        vec![self.shared.connection.event_fd(), self.route.wake_fd()]
    }
}

impl Drop for RbdChannel {
    fn drop(&mut self) {
        // librbd still writes into the buffers and iovec copies of reads in
        // flight, and will hand back their keys: wait for them, bounded.
        let deadline = Instant::now() + self.shared.drain_timeout;
        while self.outstanding > 0 && Instant::now() < deadline {
            if self.poll(&mut |_| {}) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if self.outstanding > 0 {
            tracing::error!(
                bdev = %self.shared.name,
                outstanding = self.outstanding,
                "rbd channel dropped with I/O still in librbd after {:?}: leaking its slots, \
                 keys and the image rather than freeing memory librbd may still use",
                self.shared.drain_timeout
            );
            std::mem::forget(Arc::clone(&self.route));
            std::mem::forget(Arc::clone(&self.shared));
            return;
        }
        // SAFETY: no AIO of this channel is left in librbd, so nothing
        // refers to the keys or the slots any more; neither is used again.
        unsafe {
            ManuallyDrop::drop(&mut self.keys);
            ManuallyDrop::drop(&mut self.slots);
        }
    }
}

impl fmt::Debug for RbdChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbdChannel")
            .field("bdev", &self.shared.name)
            .field("depth", &self.depth)
            .field("in_flight", &self.in_flight)
            .field("outstanding", &self.outstanding)
            .field("stats", &self.stats)
            .finish()
    }
}
