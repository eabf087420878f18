//! Finishing ucmds without the handler (`dev_user_unjam_cmd`): after a
//! reply that breaks the protocol, for aborted commands the handler has not
//! seen, and for everything when the handler closes the fd
//! (`dev_user_release` and the cleanup thread's `dev_user_unjam_dev`).

use super::cmd::Stage;
use super::sgv::{class_bytes, SGV_ORDERS};
use super::tm::TmStage;
use super::ucmd::UState;
use super::{SessState, State, NONE};
use dataplane::scsi::sense::key;
use dataplane::scsi::Asc;
use dataplane::scst::abi::*;

/// `-EFAULT` as the kernel passes it to `dev_user_process_reply_sess`.
const EFAULT_RESULT: i32 = -14;

impl State {
    /// `dev_user_unjam_cmd`: finishes whatever the ucmd waits for without
    /// the handler. Commands: aborted if they were, else BUSY (`busy`) or
    /// ILLEGAL REQUEST 25/00.
    pub(super) fn unjam(&mut self, ui: u32, busy: bool) {
        let u = &mut self.ucmds[ui as usize];
        if u.unjammed {
            return;
        }
        u.unjammed = true;
        u.sent = false;
        self.stats.unjammed += 1;
        match u.state {
            UState::Parsing | UState::BufAllocing | UState::Execing => {
                let slot = u.cmd;
                if slot == NONE {
                    return;
                }
                if self.cmds[slot as usize].aborted {
                    self.ucmds[ui as usize].aborted = true;
                    self.complete_aborted(slot);
                } else if busy {
                    self.complete_busy(slot);
                } else {
                    self.complete_error(slot, key::ILLEGAL_REQUEST, Asc::new(0x25, 0x00));
                }
            }
            UState::OnFreeing => self.on_free_processed(ui),
            UState::OnCacheFreeing => self.cache_free_processed(ui),
            UState::TmReceived => self.tm_received_done(ui),
            UState::TmDone => self.tm_done(ui, SCST_MGMT_STATUS_FAILED),
            UState::AttachSess | UState::DetachSess => self.reply_sess(ui, EFAULT_RESULT),
            UState::New => {}
        }
    }

    /// The handler closed the fd: `dev_user_release` → `dev_user_exit_dev`
    /// → the cleanup thread's `dev_user_unjam_dev` loop.
    pub(in crate::scst) fn release(&mut self) {
        if self.gone {
            return;
        }
        self.gone = true;
        if self.dev.is_none() {
            return;
        }
        // The handler's memory may go once it is released: data not yet
        // sent to the initiator moves to the target driver's buffers.
        self.materialize_all_in();
        // sgv_pool_flush: every idle buffer (its ON_CACHED_MEM_FREE is
        // unjammed at once: nobody will read it).
        for o in 0..SGV_ORDERS {
            while let Some((_, owner, _)) = self.idle[o].pop_front() {
                self.idle_bytes -= class_bytes(o as u8);
                self.ucmds[owner as usize].own = None;
                self.maybe_free_ucmd(owner);
            }
        }
        // Sent ucmds: unjammed with errors.
        for ui in 0..self.ucmds.len() as u32 {
            let u = &self.ucmds[ui as usize];
            if u.in_use && u.sent {
                self.unjam(ui, false);
            }
        }
        // Commands the core has not started yet, and everything queued:
        // BUSY (unjam with busy = 1).
        loop {
            while let Some(slot) = self.active.pop_front() {
                self.cmds[slot as usize].stage = Stage::InCore;
                self.complete_busy(slot);
            }
            if let Some(ui) = self.pop_ready() {
                self.unjam(ui, true);
            } else if !self.completing.is_empty() {
                self.drain_completions();
            } else {
                break;
            }
        }
        // Backgrounded commands will never be answered; drop their refs.
        for ui in 0..self.ucmds.len() as u32 {
            let u = &mut self.ucmds[ui as usize];
            if u.in_use && u.background {
                u.background = false;
                self.maybe_free_ucmd(ui);
            }
        }
        for s in &mut self.sessions {
            s.state = match s.state {
                SessState::Attaching => SessState::Failed(EFAULT_RESULT),
                SessState::Failed(r) => SessState::Failed(r),
                SessState::TimedOut => SessState::TimedOut,
                _ => SessState::Gone,
            };
        }
        for tm in &mut self.tms {
            if tm.result.is_none() {
                tm.stage = TmStage::Finished;
                tm.result = Some(SCST_MGMT_STATUS_FAILED);
            }
        }
        self.pending_in.clear();
        self.pending_out.clear();
    }
}
