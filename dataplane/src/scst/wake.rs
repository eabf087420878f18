//! [`WakeSet`]: what a sleeping reactor waits on for an scst_user device.
//!
//! # Why not the `/dev/scst_user` fd itself
//! scst_user's `poll` returns `EPOLLIN` at once, *without* calling
//! `poll_wait`, when commands are already queued (`dev_user_poll` checks the
//! lists before and after `poll_wait`). epoll registers its wake-up
//! callback only through that `poll_wait` call at `EPOLL_CTL_ADD`, so an fd
//! added while commands were queued is never woken again: a reactor asleep
//! on it sleeps its whole `max_sleep` (10 ms) every time the device goes
//! idle. A device attached right after registration may well have
//! something queued (the session of a LUN being exported).
//!
//! # The fix
//! The reactor waits on a private epoll set instead (epoll fds are
//! pollable and nest), and the scst_user fd is added to it only when it is
//! known to be idle: after an exchange answered `EAGAIN` (the ready list
//! was empty and the kernel had processed its pending commands). If the fd
//! reports ready right after the add, the registration may have missed
//! `poll_wait`; it is removed and added again at the next idle exchange.
//! This costs three system calls once per device (and again only after
//! such a miss), none per command.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// A private epoll set holding one scst_user fd once it is safely armed.
#[derive(Debug)]
pub struct WakeSet {
    epoll: Epoll,
    /// The fd is in the set.
    added: bool,
    /// It was added while idle: wake-ups reach the set.
    armed: bool,
    /// Arming attempts (for tests and statistics).
    attempts: u64,
}

impl WakeSet {
    /// An empty set.
    pub fn new() -> Result<Self, Errno> {
        Ok(Self {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            added: false,
            armed: false,
            attempts: 0,
        })
    }

    /// The fd to sleep on: readable when the armed scst_user fd signals.
    pub fn fd(&self) -> RawFd {
        self.epoll.0.as_raw_fd()
    }

    /// True once the scst_user fd was added while idle.
    pub fn armed(&self) -> bool {
        self.armed
    }

    /// Arming attempts so far.
    pub fn attempts(&self) -> u64 {
        self.attempts
    }

    /// Called after an exchange that found nothing: (re-)adds `fd` unless
    /// already armed, and keeps it armed only if it is not ready right
    /// after the add. Errors leave it unarmed (the reactor then wakes by
    /// its `max_sleep`, as before).
    pub fn on_idle(&mut self, fd: BorrowedFd<'_>) {
        if self.armed {
            return;
        }
        self.attempts += 1;
        if self.added {
            let _ = self.epoll.delete(fd);
            self.added = false;
        }
        if self
            .epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .is_err()
        {
            return;
        }
        self.added = true;
        let mut events = [EpollEvent::empty(); 1];
        self.armed = matches!(self.epoll.wait(&mut events, EpollTimeout::ZERO), Ok(0));
    }
}

impl AsFd for WakeSet {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::eventfd::{EfdFlags, EventFd};

    #[test]
    fn an_idle_fd_is_armed_once_and_wakes_the_set() {
        let ev = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK).unwrap();
        let mut w = WakeSet::new().unwrap();
        assert!(!w.armed());
        w.on_idle(ev.as_fd());
        assert!(w.armed());
        w.on_idle(ev.as_fd());
        assert_eq!(w.attempts(), 1, "armed: nothing more to do");
        ev.write(1).unwrap();
        let mut events = [EpollEvent::empty(); 1];
        assert_eq!(w.epoll.wait(&mut events, EpollTimeout::ZERO), Ok(1));
    }

    #[test]
    fn a_ready_fd_is_added_again_at_the_next_idle_moment() {
        let ev = EventFd::from_value_and_flags(1, EfdFlags::EFD_NONBLOCK).unwrap();
        let mut w = WakeSet::new().unwrap();
        w.on_idle(ev.as_fd());
        assert!(!w.armed(), "ready at the add: maybe not registered");
        ev.read().unwrap();
        w.on_idle(ev.as_fd());
        assert!(w.armed());
        assert_eq!(w.attempts(), 2);
    }
}
