//! Completions to the initiator: the target driver sends each finished
//! command's status, sense and data-in, and then the command is freed.

use super::State;
use crate::scst::io::{DataIn, SimCompletion};
use dataplane::exec::status;

/// A finished GOOD command whose data-in the initiator reads straight from
/// the pinned handler buffer, outside the state lock (see `State::reap`).
#[derive(Debug, Clone, Copy)]
pub(in crate::scst) struct DeferredReap {
    slot: u32,
    pub(in crate::scst) tag: u64,
    pub(in crate::scst) data_in_len: usize,
    pub(in crate::scst) addr: u64,
}

impl State {
    /// Hands every finished command to `f`, then frees it (the target
    /// driver's `xmit_response` done → `scst_tgt_cmd_done`) — except a
    /// GOOD command whose data-in is still in its pinned handler buffer:
    /// that one goes to `deferred` (it stays allocated, off every list)
    /// for the caller to complete without the state lock and then hand to
    /// [`finish_reap`](Self::finish_reap). Returns the commands handed to
    /// `f` here.
    pub(in crate::scst) fn reap(
        &mut self,
        f: &mut dyn FnMut(&SimCompletion<'_>),
        deferred: &mut Vec<DeferredReap>,
    ) -> usize {
        let mut n = 0;
        while let Some(slot) = self.done.pop_front() {
            let c = &self.cmds[slot as usize];
            if c.in_remote != 0 && !c.aborted && c.status == status::GOOD {
                deferred.push(DeferredReap {
                    slot,
                    tag: c.tag,
                    data_in_len: c.in_len,
                    addr: c.in_remote,
                });
                continue;
            }
            // An aborted command has no response (SCST does not send it):
            // the initiator sees TASK ABORTED without data or sense.
            let (status, sense_len, in_len) = if c.aborted {
                (status::TASK_ABORTED, 0, 0)
            } else if c.status == status::CHECK_CONDITION {
                (c.status, usize::from(c.sense_len), c.in_len)
            } else {
                (c.status, 0, c.in_len)
            };
            f(&SimCompletion {
                tag: c.tag,
                status,
                sense: &c.sense[..sense_len],
                data_in_len: in_len,
                aborted: c.aborted,
                data: if c.in_remote != 0 && in_len > 0 {
                    DataIn::Pinned(c.in_remote)
                } else {
                    DataIn::Staged(&c.staging[..in_len])
                },
            });
            self.free_cmd(slot);
            self.stats.reaped += 1;
            n += 1;
        }
        n
    }

    /// Frees a command [`reap`](Self::reap) deferred, once the initiator
    /// has its completion.
    pub(in crate::scst) fn finish_reap(&mut self, d: &DeferredReap) {
        self.cmds[d.slot as usize].in_remote = 0;
        self.free_cmd(d.slot);
        self.stats.reaped += 1;
    }
}
