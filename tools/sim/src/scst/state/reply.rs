//! Processing the handler's replies (`dev_user_process_reply` and its
//! per-state functions) with their error rules: which reply is accepted in
//! which state, what a refused reply does to its command, and the errno the
//! driver call returns.

use nix::errno::Errno;

use super::sgv::{order_of, page_aligned};
use super::transfer::PendingCopy;
use super::ucmd::{OwnBuf, UState};
use super::{prefetch, prefetch_cmd, State, NONE, PAGE_SIZE};
use crate::scst::copy;
use dataplane::scsi::sense::key;
use dataplane::scsi::Asc;
use dataplane::scst::abi::{subcode, *};

/// `sense_len` bytes the kernel copies: `min(SCST_SENSE_BUFFERSIZE, n)`.
fn sense_copy_len(n: u8) -> usize {
    usize::from(n).min(SCST_SENSE_BUFFERSIZE)
}

impl State {
    /// Starts loading what processing `replies` will read: their ucmds,
    /// then their commands (a simulator's speed-up: the commands were last
    /// touched long ago, many copies back).
    pub(in crate::scst) fn prefetch_replies(&mut self, replies: &[ScstUserReplyCmd]) {
        self.reply_ucmds.clear();
        for r in replies {
            if let Some(&ui) = self.by_h.get(&r.cmd_h) {
                prefetch(&self.ucmds[ui as usize]);
                self.reply_ucmds.push(ui);
            }
        }
        for &ui in &self.reply_ucmds {
            let slot = self.ucmds[ui as usize].cmd;
            if let Some(c) = self.cmds.get(slot as usize) {
                prefetch_cmd(c);
            }
        }
    }

    /// `dev_user_process_reply`: processes one reply, counting the refused
    /// ones by errno.
    pub(in crate::scst) fn process_reply(&mut self, r: &ScstUserReplyCmd) -> Result<(), Errno> {
        let res = self.process_reply_inner(r);
        match res {
            Err(Errno::EINVAL) => self.stats.replies_einval += 1,
            Err(Errno::ESRCH) => self.stats.replies_esrch += 1,
            Err(Errno::EFAULT) => self.stats.replies_efault += 1,
            _ => {}
        }
        res
    }

    /// The checks every reply passes (handle, state, subcode), then the
    /// reply of the ucmd's state.
    fn process_reply_inner(&mut self, r: &ScstUserReplyCmd) -> Result<(), Errno> {
        let Some(&ui) = self.by_h.get(&r.cmd_h) else {
            return Err(Errno::ESRCH);
        };
        let u = &self.ucmds[ui as usize];
        if u.background {
            // Any reply to a backgrounded command is its final EXEC reply;
            // the subcode is not checked (dev_user_process_reply).
            return self.reply_exec(ui, r);
        }
        if u.unjammed {
            // "Reply on unjammed ucmd, ignoring".
            return Ok(());
        }
        if !u.sent {
            return Err(Errno::EINVAL);
        }
        if r.subcode != u.subcode || subcode::state_nr(r.subcode) != u.state as u8 {
            self.unjam(ui, false);
            return Err(Errno::EINVAL);
        }
        let state = u.state;
        self.ucmds[ui as usize].sent = false;
        match state {
            UState::Parsing => self.reply_parse(ui, r),
            UState::BufAllocing => self.reply_alloc(ui, r),
            UState::Execing => self.reply_exec(ui, r),
            UState::OnFreeing => {
                self.on_free_processed(ui);
                Ok(())
            }
            UState::OnCacheFreeing => {
                self.cache_free_processed(ui);
                Ok(())
            }
            UState::TmReceived => {
                self.tm_received_done(ui);
                Ok(())
            }
            UState::TmDone => {
                self.tm_done(ui, r.result());
                Ok(())
            }
            UState::AttachSess | UState::DetachSess => {
                self.reply_sess(ui, r.result());
                Ok(())
            }
            UState::New => Err(Errno::EINVAL),
        }
    }

    /// Copies the handler's sense (`min(252, sense_len)` bytes).
    fn copy_sense(&mut self, slot: u32, sense: &ReplySense) -> Result<(), Errno> {
        let n = sense_copy_len(sense.sense_len);
        let c = &mut self.cmds[slot as usize];
        c.sense.fill(0);
        c.sense_len = 0;
        if n > 0 {
            copy::read_remote(&mut c.sense[..n], sense.psense_buffer)?;
        }
        c.sense_len = n as u8;
        Ok(())
    }

    /// `dev_user_process_reply_parse`.
    fn reply_parse(&mut self, ui: u32, r: &ScstUserReplyCmd) -> Result<(), Errno> {
        let slot = self.ucmds[ui as usize].cmd;
        let p = r.parse_reply();
        if p.status != 0 {
            if let Err(e) = self.copy_sense(slot, &p.sense()) {
                self.complete_error(slot, key::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE);
                return Err(e);
            }
            // scst_set_cmd_error_status.
            let c = &mut self.cmds[slot as usize];
            c.status = p.status;
            c.resp_data_len = 0;
            c.drop_data_in();
            self.complete(slot);
            return Ok(());
        }
        let pr = p.result();
        let c = &self.cmds[slot as usize];
        let invalid = pr.queue_type > SCST_CMD_QUEUE_ACA
            || !matches!(
                pr.data_direction,
                SCST_DATA_WRITE | SCST_DATA_READ | SCST_DATA_BIDI | SCST_DATA_NONE
            )
            || (pr.data_direction != SCST_DATA_NONE && pr.bufflen == 0)
            || pr.bufflen < 0
            || pr.out_bufflen < 0
            || pr.data_len < 0
            || pr.lba < 0
            || pr.cdb_len > c.cdb_len
            || pr.op_flags & SCST_INFO_VALID == 0;
        if invalid {
            // "Invalid parse_reply parameters".
            self.complete_error(slot, key::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE);
            return Err(Errno::EINVAL);
        }
        let c = &mut self.cmds[slot as usize];
        c.queue_type = pr.queue_type;
        c.dir = pr.data_direction;
        c.lba = pr.lba;
        c.bufflen = pr.bufflen;
        c.out_bufflen = pr.out_bufflen;
        c.data_len = pr.data_len;
        if pr.cdb_len > 0 {
            c.cdb_len = pr.cdb_len;
        }
        c.op_flags = pr.op_flags;
        self.after_parse(slot);
        Ok(())
    }

    /// `dev_user_process_reply_alloc` + `dev_user_map_buf`: the data-out is
    /// copied into the new buffer right away (a fault is EFAULT here).
    fn reply_alloc(&mut self, ui: u32, r: &ScstUserReplyCmd) -> Result<(), Errno> {
        let slot = self.ucmds[ui as usize].cmd;
        let pbuf = r.alloc_reply().pbuf;
        if pbuf == 0 {
            self.complete_busy(slot);
            return Ok(());
        }
        let cached = self.ucmds[ui as usize].buff_cached;
        if cached && !page_aligned(pbuf) {
            // "Supplied pbuf .. isn't page aligned".
            self.complete_error(slot, key::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE);
            return Err(Errno::EINVAL);
        }
        let c = &self.cmds[slot as usize];
        if c.dir == SCST_DATA_WRITE && c.out_len > 0 {
            if let Err(e) = copy::write_remote(&c.staging[..c.out_len], pbuf) {
                self.stats.copy_faults += 1;
                self.complete_error(slot, key::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE);
                return Err(e);
            }
        }
        let len = Self::buffer_len(c);
        let u = &mut self.ucmds[ui as usize];
        u.ubuff = pbuf;
        if cached {
            u.own = Some(OwnBuf {
                pbuf,
                order: order_of(len),
            });
            u.buf_owner = ui;
        }
        self.exec_stage(slot);
        Ok(())
    }

    /// `dev_user_process_reply_exec`.
    fn reply_exec(&mut self, ui: u32, r: &ScstUserReplyCmd) -> Result<(), Errno> {
        let e = r.exec_reply();
        if self.ucmds[ui as usize].background {
            // The final reply of a BACKGROUND command: only COMPLETED is
            // valid; either way the command's extra reference goes.
            self.ucmds[ui as usize].background = false;
            self.maybe_free_ucmd(ui);
            return if e.reply_type == SCST_EXEC_REPLY_COMPLETED {
                Ok(())
            } else {
                Err(Errno::EINVAL)
            };
        }
        let slot = self.ucmds[ui as usize].cmd;
        let (dir, bufflen) = {
            let c = &self.cmds[slot as usize];
            (c.dir, c.bufflen)
        };
        let resp = e.resp_data_len;
        let valid = match e.reply_type {
            SCST_EXEC_REPLY_COMPLETED => {
                resp >= 0 && resp <= bufflen && (dir == SCST_DATA_READ || resp == 0)
            }
            SCST_EXEC_REPLY_BACKGROUND => dir & SCST_DATA_READ == 0 && resp == 0,
            SCST_EXEC_REPLY_DO_WRITE_SAME => return self.reply_write_same(slot, &e),
            _ => false,
        };
        if !valid {
            return self.exec_inval(slot);
        }
        if e.reply_type == SCST_EXEC_REPLY_BACKGROUND {
            // GOOD goes to the initiator now; COMPLETED comes later.
            self.ucmds[ui as usize].background = true;
            self.set_good(slot);
            self.complete(slot);
            return Ok(());
        }
        let cached = self.ucmds[ui as usize].buff_cached;
        if resp != 0 {
            // A buffer known before this reply came from the cache (or an
            // ALLOC_MEM reply of this command) and is pinned already.
            let pinned = self.ucmds[ui as usize].ubuff != 0;
            if !pinned {
                if e.pbuf == 0 {
                    self.complete_busy(slot);
                    return Ok(());
                }
                if cached && !page_aligned(e.pbuf) {
                    // "Supplied pbuf .. isn't page aligned".
                    return self.exec_inval(slot);
                }
                let len = Self::buffer_len(&self.cmds[slot as usize]);
                let u = &mut self.ucmds[ui as usize];
                u.ubuff = e.pbuf;
                if cached {
                    u.own = Some(OwnBuf {
                        pbuf: e.pbuf,
                        order: order_of(len),
                    });
                    u.buf_owner = ui;
                }
            }
            // The initiator takes at most what it asked for.
            let keep = (resp as usize).min(self.cmds[slot as usize].exp_len);
            let remote = self.ucmds[ui as usize].ubuff;
            let c = &mut self.cmds[slot as usize];
            c.in_len = keep;
            if keep > 0 && self.trust_pinned && pinned && c.parent == NONE {
                // No copy now: the initiator reads the pinned buffer at
                // reap (or the simulator, if it needs the data sooner).
                c.in_remote = remote;
            } else if keep > 0 {
                self.pending_in.push(PendingCopy {
                    slot,
                    remote,
                    len: keep,
                    pinned,
                });
            }
        }
        let c = &mut self.cmds[slot as usize];
        c.resp_data_len = resp;
        c.status = e.status;
        c.sense_len = 0;
        let sense = e.sense();
        if sense.sense_len != 0 {
            if let Err(err) = self.copy_sense(slot, &sense) {
                self.complete_error(slot, key::ABORTED_COMMAND, Asc::INTERNAL_TARGET_FAILURE);
                return Err(err);
            }
        }
        self.complete(slot);
        Ok(())
    }

    /// "Invalid exec_reply parameters": the command fails with ABORTED
    /// COMMAND 44/00 (`scst_sense_internal_failure`) and the reply with
    /// EINVAL.
    fn exec_inval(&mut self, slot: u32) -> Result<(), Errno> {
        self.complete_error(slot, key::ABORTED_COMMAND, Asc::INTERNAL_TARGET_FAILURE);
        Err(Errno::EINVAL)
    }

    /// EXEC reply `SCST_EXEC_REPLY_DO_WRITE_SAME`: the core writes the
    /// ranges itself, as internal WRITE(16) commands to this handler.
    fn reply_write_same(&mut self, slot: u32, e: &ScstUserScsiCmdReplyExec) -> Result<(), Errno> {
        let c = &self.cmds[slot as usize];
        let ws = e.write_same();
        let len = usize::from(ws.ws_descriptors_len);
        if !matches!(c.cdb[0], 0x41 | 0x93)
            || e.status != 0
            || e.resp_data_len != 0
            || len > PAGE_SIZE
            || !len.is_multiple_of(std::mem::size_of::<ScstUserDataDescriptor>())
        {
            self.complete_error(slot, key::ABORTED_COMMAND, Asc::INTERNAL_TARGET_FAILURE);
            return Err(Errno::EINVAL);
        }
        let bs = u64::from(self.dev().block_size);
        let mut ranges = std::mem::take(&mut self.cmds[slot as usize].ws_ranges);
        ranges.clear();
        if len == 0 {
            // SCST writes the whole range of the CDB.
            let c = &self.cmds[slot as usize];
            let blocks = c.data_len as u64 / bs.max(1);
            if blocks == 0 {
                // Up to the end of the medium: the sim does not know the
                // capacity (not modelled).
                self.cmds[slot as usize].ws_ranges = ranges;
                self.complete_error(slot, key::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB);
                return Ok(());
            }
            ranges.push((c.lba as u64, blocks));
        } else {
            let mut raw = [0u8; PAGE_SIZE];
            if let Err(err) = copy::read_remote(&mut raw[..len], ws.ws_descriptors) {
                self.cmds[slot as usize].ws_ranges = ranges;
                self.complete_error(slot, key::ABORTED_COMMAND, Asc::INTERNAL_TARGET_FAILURE);
                return Err(err);
            }
            let mut terminated = false;
            for d in raw[..len].chunks_exact(16) {
                let lba = u64::from_ne_bytes(d[0..8].try_into().expect("8 bytes"));
                let blocks = u64::from_ne_bytes(d[8..16].try_into().expect("8 bytes"));
                if blocks == 0 {
                    terminated = true;
                    break;
                }
                ranges.push((lba, blocks));
            }
            if !terminated {
                self.cmds[slot as usize].ws_ranges = ranges;
                self.complete_error(slot, key::ABORTED_COMMAND, Asc::INTERNAL_TARGET_FAILURE);
                return Err(Errno::EINVAL);
            }
        }
        let c = &mut self.cmds[slot as usize];
        c.ws_ranges = ranges;
        c.ws_idx = 0;
        self.stats.write_same_offloaded += 1;
        self.ws_next(slot);
        Ok(())
    }
}
