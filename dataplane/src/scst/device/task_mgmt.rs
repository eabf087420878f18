//! Task management: which commands a function affects ([`tm_affects`]),
//! and TASK_MGMT_RECEIVED / TASK_MGMT_DONE (see the module docs of
//! [`super`]).

use super::{Held, ScstDevice, ScstStatsSnapshot, SlotState, TmWait};
use crate::exec::{status, CommandExecutor, Response};
use crate::scst::abi::*;
use crate::scst::driver::ScstDriver;

/// Which commands a task management function affects: `tm` against a
/// command of session `sess_h` with handle `cmd_h`. See the module docs of
/// [`super`].
pub fn tm_affects(tm: &ScstUserTm, sess_h: u64, cmd_h: u32) -> bool {
    match tm.fn_ {
        SCST_ABORT_TASK => sess_h == tm.sess_h && cmd_h == tm.cmd_h_to_abort,
        SCST_ABORT_TASK_SET
        | SCST_CLEAR_TASK_SET
        | SCST_NEXUS_LOSS_SESS
        | SCST_ABORT_ALL_TASKS_SESS
        | SCST_UNREG_SESS_TM => sess_h == tm.sess_h,
        SCST_LUN_RESET | SCST_TARGET_RESET | SCST_NEXUS_LOSS | SCST_ABORT_ALL_TASKS
        | SCST_PR_ABORT_ALL => true,
        _ => false,
    }
}

impl<D: ScstDriver, E: CommandExecutor> ScstDevice<D, E> {
    /// TASK_MGMT_RECEIVED (`done` false) or TASK_MGMT_DONE (`done` true).
    pub(super) fn task_mgmt(
        &mut self,
        cmd_h: u32,
        tm: &ScstUserTm,
        done: bool,
        c: &mut ScstStatsSnapshot,
    ) {
        let code = if done {
            subcode::TASK_MGMT_DONE
        } else {
            subcode::TASK_MGMT_RECEIVED
        };
        // EXECs still waiting for a slot never run.
        let mut i = 0;
        while i < self.held.len() {
            let aborted = match &self.held[i] {
                Held::Exec { cmd_h, exec, .. } => tm_affects(tm, exec.sess_h, *cmd_h),
                Held::TmDone { .. } => false,
            };
            if aborted {
                if let Some(Held::Exec { cmd_h, .. }) = self.held.remove(i) {
                    let response = Response::with_status(status::TASK_ABORTED);
                    self.fail_exec(cmd_h, &response, c);
                }
            } else {
                i += 1;
            }
        }
        let mut affected = 0u32;
        for (slot, s) in self.slots.iter_mut().enumerate() {
            if s.state == SlotState::Executing && tm_affects(tm, s.sess_h, s.cmd_h) {
                affected += 1;
                if !s.aborted {
                    s.aborted = true;
                    self.executor.abort(slot as u32);
                    c.aborts += 1;
                }
            }
        }
        if !done || affected == 0 {
            self.replies
                .push_result(cmd_h, code, SCST_MGMT_STATUS_SUCCESS);
            return;
        }
        if self.tm_used == u64::MAX {
            self.held.push_back(Held::TmDone { cmd_h, tm: *tm });
            return;
        }
        let bit = (!self.tm_used).trailing_zeros() as usize;
        self.tm_used |= 1u64 << bit;
        self.tm_waits[bit] = TmWait {
            cmd_h,
            remaining: affected,
        };
        for s in self.slots.iter_mut() {
            if s.state == SlotState::Executing && tm_affects(tm, s.sess_h, s.cmd_h) {
                s.tm_waiters |= 1u64 << bit;
            }
        }
    }
}
