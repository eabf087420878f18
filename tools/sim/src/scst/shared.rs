//! What the two ends share: the simulated kernel's state behind one lock,
//! the condition variable of blocking calls, the wait fd and the counters
//! both ends read without the lock.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Instant;

use crossbeam_utils::Backoff;
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::config::ScstSimConfig;
use super::error::SimError;
use super::state::State;

/// The simulated kernel of one scst_user fd, shared by the driver and the
/// initiator.
pub(super) struct Shared {
    state: Mutex<State>,
    /// Where blocking calls (a blocking fetch, an attach, a suspend) wait.
    pub(super) cond: Condvar,
    /// The wait fd (an eventfd).
    pub(super) wake: OwnedFd,
    /// Driver calls so far.
    pub(super) ioctls: AtomicU64,
    /// Writes to the wait fd so far.
    pub(super) notifications: AtomicU64,
    /// Driver handles open on the file (`dup`): the device is released
    /// when the last one closes.
    pub(super) handles: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("wake", &self.wake)
            .field("ioctls", &self.ioctls)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// A new, unregistered device's state and a fresh wait fd.
    pub(super) fn new(config: ScstSimConfig) -> Result<Self, SimError> {
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map(OwnedFd::from)
            .map_err(SimError::Eventfd)?;
        Ok(Self {
            state: Mutex::new(State::new(config)),
            cond: Condvar::new(),
            wake,
            ioctls: AtomicU64::new(0),
            handles: AtomicU64::new(1),
            notifications: AtomicU64::new(0),
        })
    }

    /// Takes the state lock. The kernel's locks on this path (the device's
    /// `cmd_lists_lock`, the session and command locks) are spinlocks: a
    /// contended caller spins, it does not sleep. So does this one: it
    /// spins with exponential backoff, then yields the CPU between
    /// attempts (so that a holder preempted in user space can run), and
    /// never sleeps in the mutex: a futex sleep and wake-up on every
    /// collision would charge both sides costs the kernel never pays.
    /// (Only the condition variable of blocking mode sleeps.)
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        let backoff = Backoff::new();
        loop {
            match self.state.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => backoff.snooze(),
            }
        }
    }

    /// Adds 1 to the wait eventfd.
    pub(super) fn ring(&self) {
        // EAGAIN only at a counter of 2^64 - 2: a handler that never reads
        // it still sees the fd readable then.
        let _ = nix::unistd::write(&self.wake, &1u64.to_ne_bytes());
        self.notifications.fetch_add(1, Ordering::Relaxed);
    }

    /// Wakes threads blocked in the simulator (a blocking fetch, an attach
    /// or a suspend) if there are any.
    pub(super) fn kick(&self, st: &State) {
        if st.fetch_waiters + st.attach_waiters + st.suspend_waiters > 0 {
            self.cond.notify_all();
        }
    }

    pub(super) fn wait_until<'a>(
        &self,
        st: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> (MutexGuard<'a, State>, bool) {
        let now = Instant::now();
        if now >= deadline {
            return (st, true);
        }
        let (st, res) = self
            .cond
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(PoisonError::into_inner);
        (st, res.timed_out())
    }
}
