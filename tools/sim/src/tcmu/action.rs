//! The configfs actions of a TCMU device (`action/reset_ring`,
//! `action/free_kept_buf`).

use super::TcmuSim;
use crate::tcmu::completion::SimCompletion;
use dataplane::exec::status;

impl TcmuSim {
    /// `action/reset_ring` (`tcmu_reset_ring`): completes every command in
    /// flight without looking at the ring — with BUSY for `mode` 1 (the
    /// initiator retries), CHECK CONDITION for `mode` 2 — and hands each to
    /// `f`; frees their data blocks and ids (kept buffers too); then sets
    /// `cmd_tail` = 0, then `cmd_head` = 0 (the kernel's order), and clears
    /// the broken state. The handler
    /// must (re)attach afterwards. Returns the number of commands completed.
    pub fn reset_ring(&mut self, mode: u8, mut f: impl FnMut(&SimCompletion<'_>)) -> usize {
        let status = if mode == 1 {
            status::BUSY
        } else {
            status::CHECK_CONDITION
        };
        let mut completed = 0;
        for id in 1..self.cmds.len() {
            let cmd = &self.cmds[id];
            if cmd.in_flight {
                f(&SimCompletion {
                    tag: cmd.tag,
                    cmd_id: id as u16,
                    status,
                    sense: &[],
                    data_in_len: 0,
                    region: &self.region,
                    blocks: &cmd.blocks,
                    data_off: self.data_off,
                    block_size: self.config.data_block_size as usize,
                });
                completed += 1;
            }
            let cmd = &mut self.cmds[id];
            if cmd.in_flight || cmd.kept {
                cmd.in_flight = false;
                cmd.kept = false;
                self.release_blocks(Some(id as u16));
                self.ids.free(id as u32);
            }
        }
        self.in_flight = 0;
        self.records.clear();
        self.head = 0;
        self.last_cleaned = 0;
        // The kernel's order: cmd_tail, then cmd_head.
        self.region.store_cmd_tail(0);
        self.region.store_cmd_head(0);
        self.fault = None;
        completed
    }

    /// `action/free_kept_buf`: releases a command completed with KEEP_BUF.
    /// Returns false if `cmd_id` is not such a command.
    pub fn free_kept_buf(&mut self, cmd_id: u16) -> bool {
        let cmd = &mut self.cmds[usize::from(cmd_id)];
        if !cmd.kept {
            return false;
        }
        cmd.kept = false;
        self.release_blocks(Some(cmd_id));
        self.ids.free(u32::from(cmd_id));
        true
    }
}
