//! The epoll set an adaptive reactor sleeps in.
//!
//! Every descriptor is registered **edge-triggered** (`EPOLLIN | EPOLLET`):
//! each new notification on it (an eventfd write, a UIO interrupt) wakes a
//! sleeping reactor once, whether or not anybody reads the descriptor. So a
//! poller need not drain or acknowledge its fd for the reactor to sleep: with
//! level-triggered registration a UIO fd whose counter nobody reads would stay
//! readable and turn every sleep into a spin. The price is at most one early
//! return of `epoll_wait` per notification that arrived while the reactor was
//! awake (the event stays queued), after which the reactor re-polls, finds
//! nothing and sleeps again. No wake-up is lost: a notification that lands
//! between the last poll and `epoll_wait` is queued and ends the wait at once.
//!
//! Descriptors are reference-counted, so two pollers may share one fd.

use std::collections::HashMap;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::error::Error;

/// Events taken from the kernel per `epoll_wait`: the reactor only needs to
/// know that something happened, not what.
const EVENTS_PER_WAIT: usize = 8;

pub(crate) struct Sleeper {
    epoll: Epoll,
    /// Registered descriptors and how many pollers use each.
    fds: HashMap<RawFd, u32>,
    events: [EpollEvent; EVENTS_PER_WAIT],
}

impl std::fmt::Debug for Sleeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleeper")
            .field("fds", &self.fds)
            .finish_non_exhaustive()
    }
}

fn epoll_error(op: String, errno: Errno) -> Error {
    Error::Epoll {
        op,
        source: io::Error::from(errno),
    }
}

impl Sleeper {
    /// An epoll set holding the reactor's wake eventfd.
    pub fn new(wake_fd: RawFd) -> Result<Self, Error> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| epoll_error("create".into(), e))?;
        let mut sleeper = Sleeper {
            epoll,
            fds: HashMap::new(),
            events: [EpollEvent::empty(); EVENTS_PER_WAIT],
        };
        sleeper.register(&[wake_fd])?;
        Ok(sleeper)
    }

    /// Adds `fds` (all or none).
    pub fn register(&mut self, fds: &[RawFd]) -> Result<(), Error> {
        for (i, &fd) in fds.iter().enumerate() {
            if let Err(e) = self.add(fd) {
                self.unregister(&fds[..i]);
                return Err(e);
            }
        }
        Ok(())
    }

    fn add(&mut self, fd: RawFd) -> Result<(), Error> {
        if let Some(users) = self.fds.get_mut(&fd) {
            *users += 1;
            return Ok(());
        }
        if fd < 0 {
            return Err(epoll_error(format!("add fd {fd}"), Errno::EBADF));
        }
        // SAFETY: `fd` is not -1 (checked above) and the borrow lasts only for
        // this epoll_ctl call. The `Poller` contract keeps its wait fds open
        // while it is on a reactor; if one were closed anyway, the kernel
        // answers EBADF, which we return.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        self.epoll
            .add(
                borrowed,
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, fd as u64),
            )
            .map_err(|e| epoll_error(format!("add fd {fd}"), e))?;
        self.fds.insert(fd, 1);
        Ok(())
    }

    /// Removes `fds` (one reference each). Errors are ignored: a descriptor
    /// its poller already closed has left the epoll set by itself.
    pub fn unregister(&mut self, fds: &[RawFd]) {
        for fd in fds {
            let Some(users) = self.fds.get_mut(fd) else {
                continue;
            };
            *users -= 1;
            if *users == 0 {
                self.fds.remove(fd);
                // SAFETY: `fd` was validated (not -1) when it was added, and
                // the borrow lasts only for this epoll_ctl call; a closed fd
                // gives EBADF, which is ignored.
                let borrowed = unsafe { BorrowedFd::borrow_raw(*fd) };
                let _ = self.epoll.delete(borrowed);
            }
        }
    }

    /// Blocks until a registered descriptor is notified or `timeout` passes.
    /// Returns true if it was woken by a descriptor. An interrupted or failed
    /// wait counts as a timeout: the reactor simply polls again.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        // Whole milliseconds, rounded up so that a short sleep is not a spin.
        let millis = timeout.as_nanos().div_ceil(1_000_000);
        let timeout = u32::try_from(millis)
            .ok()
            .and_then(|ms| EpollTimeout::try_from(ms).ok())
            .unwrap_or(EpollTimeout::MAX);
        matches!(self.epoll.wait(&mut self.events, timeout), Ok(n) if n > 0)
    }
}
