//! Sessions (`tgt_dev`): `dev_user_attach_tgt` queues ATTACH_SESS and
//! waits for the handler's answer, `dev_user_detach_tgt` queues
//! DETACH_SESS and waits for nothing. A session also carries its pending
//! unit attention (`scst_capacity_data_changed`).

use std::time::Instant;

use super::ucmd::UState;
use super::State;
use crate::scst::error::SimError;
use dataplane::scst::abi::*;

/// `sess_h` values look like the kernel's `tgt_dev` pointers: opaque and
/// non-zero. Session `i` gets `SESS_H_BASE + (i << 12)`.
const SESS_H_BASE: u64 = 0xffff_8881_0400_0000;

/// State of a session (`tgt_dev`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::scst) enum SessState {
    /// ATTACH_SESS queued or sent; `attach_tgt` is waiting.
    Attaching,
    /// Attached; commands can be submitted.
    Active,
    /// The handler answered ATTACH_SESS with this non-zero result (or the
    /// fd was closed: -EFAULT).
    Failed(i32),
    /// No answer within `DEV_USER_ATTACH_TIMEOUT`: `attach_tgt` failed with
    /// -EFAULT.
    TimedOut,
    /// Detached (DETACH_SESS sent) or the device is gone.
    Gone,
}

/// A session (`tgt_dev`) of the device.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) sess_h: u64,
    pub(super) lun: u64,
    pub(super) initiator: [u8; SCST_MAX_EXTERNAL_NAME],
    pub(super) state: SessState,
    pub(super) deadline: Instant,
    /// Commands of this session in flight (submitted, not reaped).
    pub(super) active: u32,
    /// `sn` of the next command.
    pub(super) next_sn: u32,
    /// CAPACITY DATA HAS CHANGED unit attention pending.
    pub(super) ua_capacity: bool,
}

impl State {
    /// The session of handle `sess_h`, if there is one.
    pub(in crate::scst) fn session_index(&self, sess_h: u64) -> Option<u32> {
        let off = sess_h.checked_sub(SESS_H_BASE)?;
        if !off.is_multiple_of(1 << 12) {
            return None;
        }
        let i = usize::try_from(off >> 12).ok()?;
        (i < self.sessions.len()).then_some(i as u32)
    }

    /// Where session `sess` is.
    pub(in crate::scst) fn session_state(&self, sess: u32) -> SessState {
        self.sessions[sess as usize].state
    }

    /// When the attach of session `sess` times out.
    pub(in crate::scst) fn session_deadline(&self, sess: u32) -> Instant {
        self.sessions[sess as usize].deadline
    }

    /// `dev_user_attach_tgt`: queues ATTACH_SESS; the caller waits.
    pub(in crate::scst) fn begin_attach(
        &mut self,
        lun: u64,
        initiator: &str,
    ) -> Result<u64, SimError> {
        if self.gone {
            return Err(SimError::DeviceGone);
        }
        if self.dev.is_none() {
            return Err(SimError::NotRegistered);
        }
        let index = self.sessions.len() as u32;
        let sess_h = SESS_H_BASE + (u64::from(index) << 12);
        let mut name = [0u8; SCST_MAX_EXTERNAL_NAME];
        // strlcpy(.., sizeof - 1): at most 254 bytes and a NUL.
        let n = initiator.len().min(SCST_MAX_EXTERNAL_NAME - 2);
        name[..n].copy_from_slice(&initiator.as_bytes()[..n]);
        self.sessions.push(Session {
            sess_h,
            lun,
            initiator: name,
            state: SessState::Attaching,
            deadline: Instant::now() + self.cfg.attach_timeout,
            active: 0,
            next_sn: 0,
            ua_capacity: false,
        });
        let ui = self.alloc_ucmd();
        self.ucmds[ui as usize].mgmt = index;
        self.add_to_ready(ui, UState::AttachSess, subcode::ATTACH_SESS);
        self.stats.attach_sent += 1;
        Ok(sess_h)
    }

    /// The caller of `attach_tgt` gave up (`DEV_USER_ATTACH_TIMEOUT`).
    pub(in crate::scst) fn attach_timed_out(&mut self, sess: u32) {
        let s = &mut self.sessions[sess as usize];
        if s.state == SessState::Attaching {
            s.state = SessState::TimedOut;
        }
    }

    /// `dev_user_detach_tgt`: DETACH_SESS is queued; nobody waits for it.
    pub(in crate::scst) fn detach(&mut self, sess: u32) -> Result<(), SimError> {
        let s = &self.sessions[sess as usize];
        if s.state != SessState::Active {
            return Err(SimError::UnknownSession);
        }
        if s.active > 0 {
            return Err(SimError::SessionBusy);
        }
        self.sessions[sess as usize].state = SessState::Gone;
        if self.gone {
            return Ok(());
        }
        let ui = self.alloc_ucmd();
        self.ucmds[ui as usize].mgmt = sess;
        self.add_to_ready(ui, UState::DetachSess, subcode::DETACH_SESS);
        self.stats.detach_sent += 1;
        Ok(())
    }

    /// `scst_capacity_data_changed`: a unit attention for every session.
    pub(in crate::scst) fn capacity_changed(&mut self) {
        for s in &mut self.sessions {
            if s.state == SessState::Active {
                s.ua_capacity = true;
            }
        }
    }

    /// `dev_user_process_reply_sess`.
    pub(super) fn reply_sess(&mut self, ui: u32, result: i32) {
        let u = &self.ucmds[ui as usize];
        if u.state == UState::AttachSess {
            let s = &mut self.sessions[u.mgmt as usize];
            // A reply after the 5 s are over finds nobody waiting.
            if s.state == SessState::Attaching {
                s.state = if Instant::now() > s.deadline {
                    SessState::TimedOut
                } else if result == 0 {
                    SessState::Active
                } else {
                    SessState::Failed(result)
                };
            }
        }
        self.maybe_free_ucmd(ui);
    }
}
