//! Task management: the core aborts the affected commands (those it has not
//! started and those the handler has not seen finish at once), tells the
//! handler (TASK_MGMT_RECEIVED), waits for the affected commands, and ends
//! with TASK_MGMT_DONE, whose answer is the function's result.

use super::cmd::Stage;
use super::ucmd::UState;
use super::{SessState, State, NONE};
use crate::scst::error::SimError;
use dataplane::scst::abi::{subcode, *};

/// Where a task management function is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TmStage {
    /// TASK_MGMT_RECEIVED queued or sent.
    Received,
    /// Waiting for the affected commands.
    Waiting,
    /// TASK_MGMT_DONE queued or sent.
    Done,
    /// Result known.
    Finished,
}

/// A task management function the core received.
#[derive(Debug)]
pub(super) struct Tm {
    /// The session it came on.
    pub(super) sess: u32,
    /// `SCST_ABORT_TASK`, `SCST_LUN_RESET`, ...
    pub(super) fn_: u32,
    /// ABORT TASK: the handle of the command's ucmd (0 if it has none).
    pub(super) cmd_h_to_abort: u32,
    pub(super) stage: TmStage,
    /// Affected commands not finished yet.
    pub(super) remaining: u32,
    /// `SCST_MGMT_STATUS_*`, once finished.
    pub(super) result: Option<i32>,
}

impl State {
    /// The SCST core receives a task management function. Returns the TM
    /// index.
    pub(in crate::scst) fn task_mgmt(
        &mut self,
        sess: u32,
        fn_: u32,
        tag: Option<u64>,
    ) -> Result<u32, SimError> {
        if self.gone {
            return Err(SimError::DeviceGone);
        }
        if self.sessions[sess as usize].state != SessState::Active {
            return Err(SimError::UnknownSession);
        }
        let index = self.tms.len() as u32;
        self.tms.push(Tm {
            sess,
            fn_,
            cmd_h_to_abort: 0,
            stage: TmStage::Received,
            remaining: 0,
            result: None,
        });
        let tst_one_set = self.dev().opt.tst == 0;
        #[derive(PartialEq)]
        enum Scope {
            Task(u32),
            Session,
            Device,
            Nothing,
        }
        let scope = match fn_ {
            SCST_ABORT_TASK => {
                let max = self.cfg.max_cmds.max(1);
                let found = tag.and_then(|tag| {
                    (0..max).find(|&i| {
                        let c = &self.cmds[i];
                        c.stage != Stage::Free && c.sess == sess && c.tag == tag
                    })
                });
                match found {
                    Some(i) => Scope::Task(i as u32),
                    None => {
                        // The core finds no such command: answered at once.
                        let tm = &mut self.tms[index as usize];
                        tm.stage = TmStage::Finished;
                        tm.result = Some(SCST_MGMT_STATUS_TASK_NOT_EXIST);
                        return Ok(index);
                    }
                }
            }
            SCST_ABORT_TASK_SET
            | SCST_NEXUS_LOSS_SESS
            | SCST_ABORT_ALL_TASKS_SESS
            | SCST_UNREG_SESS_TM => Scope::Session,
            SCST_CLEAR_TASK_SET if !tst_one_set => Scope::Session,
            SCST_CLEAR_TASK_SET | SCST_LUN_RESET | SCST_TARGET_RESET | SCST_NEXUS_LOSS
            | SCST_ABORT_ALL_TASKS | SCST_PR_ABORT_ALL => Scope::Device,
            SCST_CLEAR_ACA => Scope::Nothing,
            _ => {
                let tm = &mut self.tms[index as usize];
                tm.stage = TmStage::Finished;
                tm.result = Some(SCST_MGMT_STATUS_FN_NOT_SUPPORTED);
                return Ok(index);
            }
        };
        // scst_abort_cmd for every affected command that has not finished;
        // internal commands follow their parent.
        for i in 0..self.cmds.len() {
            let c = &self.cmds[i];
            if !matches!(c.stage, Stage::Active | Stage::InCore) {
                continue;
            }
            let owner = if c.parent != NONE { c.parent } else { i as u32 };
            let hit = match scope {
                Scope::Task(t) => owner == t,
                Scope::Session => c.sess == sess,
                Scope::Device => true,
                Scope::Nothing => false,
            };
            if hit {
                let c = &mut self.cmds[i];
                c.aborted = true;
                c.tm_waiters.push(index);
                self.tms[index as usize].remaining += 1;
            }
        }
        if let Scope::Task(t) = scope {
            let ui = self.cmds[t as usize].ucmd;
            if ui != NONE {
                self.tms[index as usize].cmd_h_to_abort = self.ucmds[ui as usize].h;
            }
        }
        // Commands the core has not started: finished here.
        let mut i = 0;
        while i < self.active.len() {
            let slot = self.active[i];
            if self.cmds[slot as usize].aborted {
                self.active.remove(i);
                self.complete_aborted(slot);
            } else {
                i += 1;
            }
        }
        // dev_user_abort_ready_commands: aborted commands the handler has
        // not seen never reach it.
        let mut i = 0;
        while i < self.ready.len() {
            let ui = self.ready[i];
            let u = &self.ucmds[ui as usize];
            let hit = u.cmd != NONE
                && !u.seen
                && self.cmds[u.cmd as usize].aborted
                && matches!(
                    u.state,
                    UState::Parsing | UState::BufAllocing | UState::Execing
                );
            if hit {
                self.remove_ready_at(i);
                self.unjam(ui, false);
            } else {
                i += 1;
            }
        }
        self.settle();
        let ui = self.alloc_ucmd();
        self.ucmds[ui as usize].mgmt = index;
        self.stats.tm_sent += 1;
        self.add_to_ready(ui, UState::TmReceived, subcode::TASK_MGMT_RECEIVED);
        Ok(index)
    }

    /// The result of TM `index`, once it finished.
    pub(in crate::scst) fn tm_result(&self, index: u32) -> Option<i32> {
        self.tms.get(index as usize).and_then(|t| t.result)
    }

    /// An affected command of TM `index` finished.
    pub(super) fn tm_cmd_finished(&mut self, index: u32) {
        let tm = &mut self.tms[index as usize];
        tm.remaining = tm.remaining.saturating_sub(1);
        if tm.remaining == 0 && tm.stage == TmStage::Waiting {
            self.queue_tm_done(index);
        }
    }

    /// Every affected command finished: TASK_MGMT_DONE.
    fn queue_tm_done(&mut self, index: u32) {
        self.tms[index as usize].stage = TmStage::Done;
        let ui = self.alloc_ucmd();
        self.ucmds[ui as usize].mgmt = index;
        self.stats.tm_sent += 1;
        self.add_to_ready(ui, UState::TmDone, subcode::TASK_MGMT_DONE);
    }

    /// The TASK_MGMT_RECEIVED stage completed (its result is ignored).
    pub(super) fn tm_received_done(&mut self, ui: u32) {
        let index = self.ucmds[ui as usize].mgmt;
        self.maybe_free_ucmd(ui);
        let tm = &mut self.tms[index as usize];
        if tm.stage == TmStage::Received {
            tm.stage = TmStage::Waiting;
            if tm.remaining == 0 {
                self.queue_tm_done(index);
            }
        }
    }

    /// `dev_user_process_reply_tm_exec` for TASK_MGMT_DONE.
    pub(super) fn tm_done(&mut self, ui: u32, result: i32) {
        let index = self.ucmds[ui as usize].mgmt;
        self.maybe_free_ucmd(ui);
        let tm = &mut self.tms[index as usize];
        tm.stage = TmStage::Finished;
        tm.result = Some(if result == SCST_MGMT_STATUS_TASK_NOT_EXIST {
            SCST_MGMT_STATUS_SUCCESS
        } else {
            result
        });
    }
}
