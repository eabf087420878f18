//! [`HandOff`]: bringing an [`ScstDevice`](super::ScstDevice) to the point
//! where its `/dev/scst_user` fd can be given to another process.
//!
//! # Why a device must be quiesced first
//! A device stays registered (and its LUNs stay in SCST) as long as its fd
//! is open in any process, so passing the fd (SCM_RIGHTS) keeps initiators'
//! disks in place across a handler upgrade. What cannot pass is this
//! process's memory: with memory reuse the kernel keeps (pins) the pages of
//! the data buffers it was given and names them again, by this process's
//! addresses, in later EXECs. Those addresses mean nothing (or, worse,
//! something else) in the successor. So before the fd moves, no buffer of
//! this device's pool (or oversize buffer) may be with the kernel.
//!
//! # Protocol (control thread and device thread)
//! 1. The control thread calls [`HandOff::request`]. At its next poll the
//!    device *quiesces*: it hands out no buffer any more (ALLOC_MEM is
//!    answered with `pbuf = 0`, which the kernel turns into BUSY; a
//!    data-in EXEC without a buffer gets BUSY status: initiators retry
//!    both), serves everything else as before, and acknowledges
//!    ([`HandOff::quiescing`]).
//! 2. The control thread calls `SCST_USER_FLUSH_CACHE` on the fd (from its
//!    own thread: the ioctl suspends SCST's activity until every command in
//!    flight finished, which the device thread keeps serving). The kernel
//!    then frees every cached buffer with an ON_CACHED_MEM_FREE, which the
//!    device answers as usual.
//! 3. Once nothing of the device's memory is with the kernel or the
//!    executor ([`HandOff::is_clean`]) the device is taken off its reactor
//!    (it drains: stops fetching, answers what it holds, still handing out
//!    no buffer) while a duplicate of its fd is kept, and the duplicate is
//!    passed on together with [`HandOff::sessions`].
//!
//! [`HandOff::cancel`] ends the quiescence (the device hands out buffers
//! again) when the hand-off is given up.
//!
//! # Cost
//! One relaxed load per poll (and one store per poll while quiescing).
//! The session table is copied under a lock
//! only while quiescing, at entry and at each ATTACH_SESS/DETACH_SESS
//! (control operations, never per command).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};

use super::Session;

/// What the device last reported (see [`HandOff`]).
const SERVING: u8 = 0;
const QUIESCING: u8 = 1;
const CLEAN: u8 = 2;

/// The hand-off state shared by a device and the control plane. See the
/// module docs.
#[derive(Debug, Default)]
pub struct HandOff {
    requested: AtomicBool,
    /// Written by the device at each poll: SERVING, QUIESCING or CLEAN.
    observed: AtomicU8,
    sessions: Mutex<Vec<Session>>,
}

impl HandOff {
    /// Asks the device to quiesce.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Relaxed);
    }

    /// Gives the hand-off up: the device serves normally again.
    pub fn cancel(&self) {
        self.requested.store(false, Ordering::Relaxed);
    }

    /// The device serves normally as of its last poll: no hand-off was
    /// requested, or it saw the request given up.
    pub fn serving(&self) -> bool {
        self.observed.load(Ordering::Acquire) == SERVING
    }

    /// The device has seen the request: it hands out no buffer any more.
    pub fn quiescing(&self) -> bool {
        self.requested.load(Ordering::Relaxed) && self.observed.load(Ordering::Acquire) != SERVING
    }

    /// The device has seen the request and, as of its last poll, none of
    /// its buffers is with the kernel or the executor.
    pub fn is_clean(&self) -> bool {
        self.requested.load(Ordering::Relaxed) && self.observed.load(Ordering::Acquire) == CLEAN
    }

    /// The sessions attached to the device (as of its last change while
    /// quiescing).
    pub fn sessions(&self) -> Vec<Session> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Device side: whether a hand-off is requested.
    pub(super) fn requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// Device side: the state at the end of a poll.
    pub(super) fn observe(&self, quiescing: bool, clean: bool) {
        let state = match (quiescing, clean) {
            (false, _) => SERVING,
            (true, false) => QUIESCING,
            (true, true) => CLEAN,
        };
        self.observed.store(state, Ordering::Release);
    }

    /// Device side: the current session table.
    pub(super) fn publish_sessions(&self, sessions: &[Session]) {
        let mut kept = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        kept.clear();
        kept.extend_from_slice(sessions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_request_and_observation() {
        let h = HandOff::default();
        assert!(!h.quiescing() && !h.is_clean());
        h.request();
        assert!(h.requested());
        assert!(!h.quiescing(), "not until the device observed it");
        h.observe(true, false);
        assert!(h.quiescing() && !h.is_clean());
        h.observe(true, true);
        assert!(h.quiescing() && h.is_clean());
        h.cancel();
        assert!(!h.quiescing() && !h.is_clean(), "a cancel wins at once");
        h.observe(false, false);
        assert!(!h.quiescing());
    }

    #[test]
    fn sessions_are_copied() {
        let h = HandOff::default();
        let s = Session {
            sess_h: 7,
            lun: 1,
            rd_only: false,
            initiator_name: "i".into(),
            target_name: "t".into(),
        };
        h.publish_sessions(std::slice::from_ref(&s));
        assert_eq!(h.sessions(), vec![s]);
        h.publish_sessions(&[]);
        assert!(h.sessions().is_empty());
    }
}
