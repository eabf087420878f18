//! The two signals between the device and the kernel side.
//!
//! - **Kick** (device → kernel, "completions are ready"): on `/dev/uioN` a
//!   4-byte `write` (the value is ignored; `uio_write` runs
//!   `tcmu_irqcontrol`, which reaps completions). For a kernel side in the
//!   same process, an 8-byte write of 1 to its "kick" eventfd.
//! - **Notification** (kernel → device, "new entries"): `/dev/uioN` becomes
//!   readable when the kernel calls `uio_event_notify`; reading 4 bytes (the
//!   event count) acknowledges it. For an in-process kernel side, the
//!   "notify" eventfd; reading 8 bytes drains it.
//!
//! The device busy-polls `cmd_head` and never needs the notification while it
//! spins; the notification fd only matters when the reactor sleeps in epoll.
//! Level-triggered epoll reports the fd readable until it is acknowledged, so
//! a reactor that wakes up must [`acknowledge`](Doorbell::acknowledge) before
//! it re-polls the ring (acknowledge first, then look at `cmd_head`, so no
//! notification is lost).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// How the device signals the kernel side and how it is signalled.
#[derive(Debug)]
pub enum Doorbell {
    /// `/dev/uioN`: kick = 4-byte write; notification = readable, 4-byte read.
    Uio(OwnedFd),
    /// In-process kernel side: kick = 8-byte write to `kick`; notification = `notify`
    /// readable, 8-byte read.
    EventFds {
        /// Written by the device.
        kick: OwnedFd,
        /// Written by the kernel side, read by the device.
        notify: OwnedFd,
    },
}

impl Doorbell {
    /// A doorbell on an open `/dev/uioN`.
    pub fn uio(fd: OwnedFd) -> Self {
        Doorbell::Uio(fd)
    }

    /// A doorbell on two eventfds, for a kernel side in the same process.
    pub fn event_fds(kick: OwnedFd, notify: OwnedFd) -> Self {
        Doorbell::EventFds { kick, notify }
    }

    /// Rings the kernel side: exactly one `write` syscall.
    #[inline]
    pub fn ring(&self) -> io::Result<()> {
        let (fd, buf): (BorrowedFd<'_>, &[u8]) = match self {
            Doorbell::Uio(fd) => (fd.as_fd(), &[0u8; 4]),
            Doorbell::EventFds { kick, .. } => (kick.as_fd(), &KICK_ONE),
        };
        match nix::unistd::write(fd, buf) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short doorbell write",
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The fd that becomes readable when the kernel side has queued entries
    /// (for epoll under the adaptive idle policy).
    pub fn wait_fd(&self) -> RawFd {
        match self {
            Doorbell::Uio(fd) => fd.as_raw_fd(),
            Doorbell::EventFds { notify, .. } => notify.as_raw_fd(),
        }
    }

    /// Makes the notification fd non-blocking, so that
    /// [`acknowledge`](Self::acknowledge) never blocks. Called at attach.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        let fd = self.wait_fd();
        let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
        if !flags.contains(OFlag::O_NONBLOCK) {
            fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        }
        Ok(())
    }

    /// Drains the pending notification, if any, without blocking (one `read`
    /// syscall). Returns true if one was pending. Call it after waking from
    /// sleep, before looking at the ring; never on the busy-poll path.
    pub fn acknowledge(&self) -> io::Result<bool> {
        let mut buf = [0u8; 8];
        let want = match self {
            Doorbell::Uio(_) => 4,
            Doorbell::EventFds { .. } => 8,
        };
        match nix::unistd::read(self.wait_fd(), &mut buf[..want]) {
            Ok(n) => Ok(n > 0),
            Err(Errno::EAGAIN) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// An eventfd increment of 1.
const KICK_ONE: [u8; 8] = 1u64.to_ne_bytes();

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::eventfd::{EfdFlags, EventFd};

    fn efd() -> OwnedFd {
        OwnedFd::from(EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).unwrap())
    }

    fn read_count(fd: &OwnedFd) -> u64 {
        let mut b = [0u8; 8];
        nix::unistd::read(fd.as_raw_fd(), &mut b).unwrap();
        u64::from_ne_bytes(b)
    }

    #[test]
    fn eventfd_doorbell_rings_and_acknowledges() {
        let kick = efd();
        let notify = efd();
        let sim_kick = kick.try_clone().unwrap();
        let sim_notify = notify.try_clone().unwrap();
        let bell = Doorbell::event_fds(kick, notify);
        bell.set_nonblocking().unwrap();
        bell.ring().unwrap();
        bell.ring().unwrap();
        assert_eq!(read_count(&sim_kick), 2);
        // Nothing pending: acknowledge does not block.
        assert!(!bell.acknowledge().unwrap());
        nix::unistd::write(&sim_notify, &3u64.to_ne_bytes()).unwrap();
        assert!(bell.acknowledge().unwrap());
        assert!(!bell.acknowledge().unwrap());
    }
}
