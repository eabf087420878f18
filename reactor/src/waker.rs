//! Cross-thread wake-up of a reactor that may be sleeping.
//!
//! Protocol (a Dekker-style handshake, so no wake-up is lost):
//! - The reactor, before sleeping, calls [`Waker::prepare_sleep`] (stores
//!   `sleeping = true` with `SeqCst`), polls every poller once more, and only
//!   sleeps in epoll if that found no work. After waking it calls
//!   [`Waker::finish_sleep`].
//! - A producer publishes its work (a release store on an SPSC ring) and then
//!   calls [`Waker::kick`], which issues a `SeqCst` fence and writes the
//!   eventfd only if the reactor says it sleeps. In busy-poll mode a kick is a
//!   fence and a load: no syscall.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug)]
struct Inner {
    eventfd: OwnedFd,
    sleeping: AtomicBool,
    /// Eventfd writes actually issued (for statistics and tests).
    wakeups: AtomicU64,
}

/// A cloneable handle that wakes one reactor.
#[derive(Debug, Clone)]
pub struct Waker {
    inner: Arc<Inner>,
}

impl Waker {
    /// Creates a waker backed by a non-blocking eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall with constant flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            inner: Arc::new(Inner {
                eventfd,
                sleeping: AtomicBool::new(false),
                wakeups: AtomicU64::new(0),
            }),
        })
    }

    /// The eventfd the reactor waits on.
    pub fn fd(&self) -> RawFd {
        self.inner.eventfd.as_raw_fd()
    }

    /// Wakes the reactor if it is (about to be) asleep. Call after publishing.
    #[inline]
    pub fn kick(&self) {
        fence(Ordering::SeqCst);
        if self.inner.sleeping.load(Ordering::Relaxed) {
            self.wake();
        }
    }

    /// Writes the eventfd unconditionally (used for shutdown).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. EAGAIN
        // (counter saturated) still leaves the fd readable, which is all we need.
        let _ = unsafe {
            libc::write(
                self.fd(),
                (&one as *const u64).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
        self.inner.wakeups.fetch_add(1, Ordering::Relaxed);
    }

    /// Reactor side: announce the intent to sleep. Re-check for work after
    /// this and before sleeping.
    #[inline]
    pub fn prepare_sleep(&self) {
        self.inner.sleeping.store(true, Ordering::SeqCst);
        // Orders the flag store before the re-poll's loads (the ring indices
        // the producers publish). A SeqCst store alone does not order later
        // non-SeqCst loads in the language model (on x86 the store is an
        // `xchg`, a full barrier, and this fence is cheap); paired with the
        // fence in `kick`, either the re-poll sees the work or the producer
        // sees `sleeping` and writes the eventfd.
        fence(Ordering::SeqCst);
    }

    /// Reactor side: back from sleep (or sleep abandoned); clears the flag and
    /// drains the eventfd.
    pub fn finish_sleep(&self) {
        self.inner.sleeping.store(false, Ordering::SeqCst);
        self.drain();
    }

    /// Resets the eventfd (it polls readable again only after the next
    /// write). For a waiter that does not use the sleep handshake, such as
    /// the control loop, which drains it before looking for work.
    pub fn drain(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking
        // eventfd; EAGAIN just means it was not written.
        let _ = unsafe {
            libc::read(
                self.fd(),
                (&mut count as *mut u64).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// True while the reactor declares itself asleep.
    pub fn is_sleeping(&self) -> bool {
        self.inner.sleeping.load(Ordering::Relaxed)
    }

    /// Eventfd writes issued so far.
    pub fn wakeups(&self) -> u64 {
        self.inner.wakeups.load(Ordering::Relaxed)
    }
}

impl AsFd for Waker {
    /// The eventfd, to wait on it with other descriptors.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.eventfd.as_fd()
    }
}
