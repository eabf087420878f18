//! Waiting until one of several descriptors is readable: the one `poll`
//! of serve's control loop (TCMU's netlink socket, the control socket's
//! wake-up eventfd, the hand-off socket; see [`crate::serve::MAX_WAIT`])
//! and of the netlink socket's own waits.
//!
//! The control loop sleeps in it rather than waking on a short period to
//! look: an idle server wakes only for its timers, and a call on the
//! control socket or a successor's hand-off request is taken at once.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Waits up to `timeout` (`None`: for ever; rounded up to whole
/// milliseconds, so a short remainder waits rather than spins) until one
/// of `fds` is readable (or hung up). Returns the index of the first such
/// descriptor, `None` when the time passed or a signal interrupted the
/// wait. With no descriptors it only sleeps.
pub fn wait_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> io::Result<Option<usize>> {
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => {
            let ms = i32::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX);
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    };
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    match poll(&mut polled, timeout) {
        Ok(0) | Err(Errno::EINTR) => Ok(None),
        Ok(_) => Ok(polled
            .iter()
            .position(|p| p.revents().is_some_and(|r| !r.is_empty()))),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_written_eventfd_ends_the_wait_and_is_named() {
        let quiet = reactor::Waker::new().unwrap();
        let woken = reactor::Waker::new().unwrap();
        woken.wake();
        let fds = [quiet.as_fd(), woken.as_fd()];
        assert_eq!(
            wait_readable(&fds, Some(Duration::from_secs(60))).unwrap(),
            Some(1)
        );
        woken.drain();
        assert_eq!(wait_readable(&fds, Some(Duration::ZERO)).unwrap(), None);
    }

    #[test]
    fn without_descriptors_it_sleeps_for_the_timeout() {
        let began = std::time::Instant::now();
        assert_eq!(
            wait_readable(&[], Some(Duration::from_millis(5))).unwrap(),
            None
        );
        assert!(began.elapsed() >= Duration::from_millis(5));
    }
}
