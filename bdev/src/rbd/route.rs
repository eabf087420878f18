//! Getting each completion to the channel that submitted it.
//!
//! The image is opened once per bdev, so librbd has one completion queue
//! per image, which every channel of the bdev polls
//! (`rbd_poll_io_events`, a lock-free queue inside librbd). Each AIO
//! carries, as its librbd callback argument, the address of a [`Key`]: one
//! per request slot of the submitting channel, preallocated and never
//! changed while the channel lives, naming the channel's [`Route`] and the
//! slot. A channel that pops a completion whose key names its own route
//! finishes it at once (with one channel, always: one pointer comparison).
//! Otherwise it hands it over: a push into the owner's inbox (a bounded
//! lock-free queue of the owner's depth, so it never fills: the owner has
//! at most that many AIOs in librbd) and, when the owner has not been told
//! since it last looked, one eventfd write so that a sleeping reactor of
//! the owner wakes. The owner looks at its inbox when its `kicked` flag is
//! set: one relaxed load per poll when nothing was handed over.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_queue::ArrayQueue;

use super::ffi;

/// An AIO completion of librbd in transit between channels.
#[derive(Debug, Clone, Copy)]
pub(super) struct Completion(pub ffi::Completion);

// SAFETY: a completion handle may be used from any thread: librbd's
// `rbd_aio_get_return_value`/`rbd_aio_release` take no thread affinity, and
// exactly one channel holds a popped completion at a time.
unsafe impl Send for Completion {}

/// The per-channel end of the handover. Shared in an `Arc`: a channel
/// handing a completion over holds a strong count for the time of the
/// handover, so the owner cannot free the route under it.
#[derive(Debug)]
pub(super) struct Route {
    /// Completions of this channel that another channel popped.
    inbox: ArrayQueue<Completion>,
    /// Set by a channel that pushed into `inbox`, cleared by the owner
    /// before it drains the inbox.
    kicked: AtomicBool,
    /// Written when `kicked` goes from clear to set: a wait fd of the
    /// owner, so that its reactor wakes for a handover.
    wake: OwnedFd,
}

impl Route {
    /// A route for a channel with at most `depth` AIOs in librbd.
    pub fn new(depth: usize) -> std::io::Result<Self> {
        // SAFETY: plain eventfd creation; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            inbox: ArrayQueue::new(depth.max(1)),
            kicked: AtomicBool::new(false),
            // SAFETY: `fd` is a new descriptor that nothing else owns.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The descriptor a handover writes.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Hands `completion`, which belongs to this route's channel, over to
    /// it (called by another channel, on its own thread).
    pub fn hand_over(&self, completion: Completion) {
        if self.inbox.push(completion).is_err() {
            // Cannot happen: the owner has at most `depth` AIOs in librbd
            // and each is pushed at most once.
            debug_assert!(false, "a channel's inbox is full");
            return;
        }
        if !self.kicked.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from `one` to the route's own eventfd
            // (open while the route lives); a failure (EAGAIN at a counter
            // of 2^64 - 2) loses nothing, the flag stays set.
            let _ = unsafe { libc::write(self.wake_fd(), (&raw const one).cast(), 8) };
        }
    }

    /// Whether completions may have been handed over since the last
    /// [`take_handed_over`](Self::take_handed_over) (one relaxed load).
    #[inline]
    pub fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::Relaxed)
    }

    /// Calls `take` with every completion handed over since the last call
    /// (the owner's side).
    pub fn take_handed_over(&self, mut take: impl FnMut(Completion)) {
        // Clear before draining: a push that lands after the drain sets the
        // flag again (and writes the eventfd), so nothing is left behind.
        if self.kicked.swap(false, Ordering::AcqRel) {
            while let Some(completion) = self.inbox.pop() {
                take(completion);
            }
        }
    }
}

/// What an AIO's callback argument points at: the submitting channel's
/// route and the request's slot. A channel's keys are allocated once, with
/// the channel, and not changed until it is dropped; their addresses are
/// what librbd hands back.
#[derive(Debug)]
pub(super) struct Key {
    /// The route of the owning channel, a pointer from `Arc::into_raw`
    /// (kept alive by the owner, which holds the `Arc`).
    pub route: *const Route,
    /// The slot in the owning channel.
    pub index: u32,
}

// SAFETY: a key is immutable after creation; the route it names is `Sync`
// (a lock-free queue, an atomic, a descriptor) and outlives every AIO that
// carries the key (the owner waits for them, or leaks both).
unsafe impl Send for Key {}
// SAFETY: as above.
unsafe impl Sync for Key {}

/// `count` keys for the channel whose route is at `route`.
pub(super) fn keys(route: *const Route, count: usize) -> Box<[Key]> {
    (0..count as u32)
        .map(|index| Key { route, index })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handovers_reach_the_owner_once_each_with_one_wake() {
        let route = Route::new(4).unwrap();
        let mut got = Vec::new();
        route.take_handed_over(|c| got.push(c.0 as usize));
        assert!(got.is_empty());
        for n in 1..=3usize {
            route.hand_over(Completion(n as ffi::Completion));
        }
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into `count` from the route's eventfd.
        let n = unsafe { libc::read(route.wake_fd(), (&raw mut count).cast(), 8) };
        assert_eq!((n, count), (8, 1), "one wake for a batch of handovers");
        route.take_handed_over(|c| got.push(c.0 as usize));
        assert_eq!(got, [1, 2, 3]);
        route.take_handed_over(|_| panic!("drained already"));
        route.hand_over(Completion(9 as ffi::Completion));
        route.take_handed_over(|c| got.push(c.0 as usize));
        assert_eq!(got, [1, 2, 3, 9]);
    }
}
