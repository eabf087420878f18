//! A command's way through the core, as `scst_targ.c` and scst_user.c take
//! it: the target driver submits it (`scst_cmd_init_done`), the core parses
//! it (its own parser or PARSE), finds memory (the SGV cache or
//! ALLOC_MEM), sends EXEC, and processes its completion (`dev_done`, the
//! target driver's `xmit_response`); when the initiator is done with it,
//! it is freed and the handler hears of it (ON_FREE_CMD).

use super::cmd::{Cmd, Stage};
use super::sgv::{class_bytes, order_of, pages, SGV_ORDERS};
use super::transfer::PendingCopy;
use super::ucmd::UState;
use super::{prefetch_cmd, SessState, State, NONE, PAGE_SIZE};
use crate::scst::error::SimSubmitError;
use crate::scst::io::SimData;
use crate::scst::parse::{self, Local, ParseFail};
use dataplane::exec::status;
use dataplane::scsi::sense::key;
use dataplane::scsi::Asc;
use dataplane::scst::abi::{subcode, *};

impl State {
    /// The target driver hands a command to the core (`scst_cmd_init_done`):
    /// it goes on the active list, processed in the handler's next call.
    pub(in crate::scst) fn submit(
        &mut self,
        sess_h: u64,
        cdb: &[u8],
        data: SimData<'_>,
        tag: u64,
        queue_type: u8,
    ) -> Result<(), SimSubmitError> {
        if self.gone || self.dev.is_none() {
            return Err(SimSubmitError::NoDevice);
        }
        let sess = self
            .session_index(sess_h)
            .filter(|&s| self.sessions[s as usize].state == SessState::Active)
            .ok_or(SimSubmitError::UnknownSession)?;
        if cdb.is_empty() || cdb.len() > SCST_MAX_CDB_SIZE {
            return Err(SimSubmitError::BadCdb);
        }
        let cdb_len = parse::cdb_len(cdb[0], cdb.len());
        if cdb.len() < cdb_len {
            return Err(SimSubmitError::BadCdb);
        }
        let (exp_dir, exp_len, out) = match data {
            SimData::None | SimData::Out(&[]) => (SCST_DATA_NONE, 0, None),
            SimData::Out(bytes) => (SCST_DATA_WRITE, bytes.len(), Some(bytes)),
            SimData::In(n) => (SCST_DATA_READ, n, None),
        };
        if exp_len > self.cfg.max_transfer_bytes {
            return Err(SimSubmitError::TooLarge);
        }
        let slot = self.free_ext.pop().ok_or(SimSubmitError::Full)?;
        let s = &mut self.sessions[sess as usize];
        s.active += 1;
        let sn = s.next_sn;
        s.next_sn = sn.wrapping_add(1);
        let c = &mut self.cmds[slot as usize];
        c.stage = Stage::Active;
        c.tag = tag;
        c.parent = NONE;
        c.sess = sess;
        c.cdb = [0; SCST_MAX_CDB_SIZE];
        c.cdb[..cdb_len].copy_from_slice(&cdb[..cdb_len]);
        c.cdb_len = cdb_len as u16;
        c.queue_type = queue_type;
        c.sn = sn;
        c.exp_dir = exp_dir;
        c.exp_len = exp_len;
        if c.staging.len() < exp_len {
            c.staging.resize(exp_len, 0);
        }
        c.out_len = 0;
        if let Some(bytes) = out {
            c.staging[..bytes.len()].copy_from_slice(bytes);
            c.out_len = bytes.len();
        }
        c.reset_result();
        self.in_use_cmds += 1;
        self.active.push_back(slot);
        self.unnotified += 1;
        self.stats.submitted += 1;
        Ok(())
    }

    /// `dev_user_process_scst_commands`: runs the core for every command on
    /// the active list, then settles copies and completions.
    pub(in crate::scst) fn process_active(&mut self) {
        // The initiator wrote these commands on another CPU: start fetching
        // all of them before working on the first (a simulator's speed-up;
        // it changes nothing the handler can see).
        for &slot in self.active.iter() {
            prefetch_cmd(&self.cmds[slot as usize]);
        }
        loop {
            while let Some(slot) = self.active.pop_front() {
                self.start_cmd(slot);
            }
            self.settle();
            if self.active.is_empty() {
                break;
            }
        }
    }

    /// `scst_pre_parse` + `dev_user_parse`.
    fn start_cmd(&mut self, slot: u32) {
        self.cmds[slot as usize].stage = Stage::InCore;
        if self.gone {
            return self.complete_busy(slot);
        }
        if self.cmds[slot as usize].aborted {
            return self.complete_aborted(slot);
        }
        let block_size = self.dev().block_size;
        let type_ = self.dev().type_;
        let parse_type = self.dev().opt.parse_type;
        let c = &mut self.cmds[slot as usize];
        let info = parse::parse(&c.cdb[..usize::from(c.cdb_len)], block_size);
        if let Ok(i) = info {
            if i.local == Local::Fully {
                return self.exec_fully_local(slot);
            }
        }
        let c = &mut self.cmds[slot as usize];
        match info {
            Ok(i) => {
                c.dir = i.direction;
                c.lba = i.lba;
                c.data_len = i.data_len;
                c.bufflen = i.bufflen;
                c.op_flags = i.op_flags;
                c.timeout = i.timeout;
                c.local = i.local;
            }
            Err(_) => {
                // What the core knows of an unknown command: the target
                // driver's expected values.
                c.dir = c.exp_dir;
                c.lba = 0;
                c.data_len = 0;
                c.bufflen = i32::try_from(c.exp_len).unwrap_or(i32::MAX);
                c.op_flags = SCST_UNKNOWN_LBA | SCST_UNKNOWN_LENGTH;
                c.timeout = 60;
                c.local = Local::No;
            }
        }
        c.out_bufflen = 0;
        let ui = self.alloc_ucmd();
        self.ucmds[ui as usize].cmd = slot;
        self.cmds[slot as usize].ucmd = ui;
        // Only the SBC parser is modelled: other device types behave as
        // PARSE_CALL (the kernel forces CALL for types it has no parser for).
        let parse_type = if matches!(type_, TYPE_DISK | 0x05 | 0x07) {
            parse_type
        } else {
            SCST_USER_PARSE_CALL
        };
        match (parse_type, info) {
            (SCST_USER_PARSE_STANDARD, Ok(_)) | (SCST_USER_PARSE_EXCEPTION, Ok(_)) => {
                self.after_parse(slot)
            }
            (SCST_USER_PARSE_STANDARD, Err(ParseFail::UnknownOpcode)) => self.complete_error(
                slot,
                key::ILLEGAL_REQUEST,
                Asc::INVALID_COMMAND_OPERATION_CODE,
            ),
            (SCST_USER_PARSE_STANDARD, Err(ParseFail::InvalidField)) => {
                self.complete_error(slot, key::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB)
            }
            _ => {
                self.stats.parse_sent += 1;
                self.add_to_ready(ui, UState::Parsing, subcode::PARSE);
            }
        }
    }

    /// After a successful parse (`dev_user_parse` `done:` and
    /// `scst_parse_cmd`): no buffer → no data direction; then memory.
    pub(super) fn after_parse(&mut self, slot: u32) {
        let c = &mut self.cmds[slot as usize];
        if c.bufflen == 0 {
            c.dir = SCST_DATA_NONE;
        }
        if c.aborted {
            return self.complete_aborted(slot);
        }
        // The sim does not model SCST's reconciliation of the target
        // driver's expected transfer with the CDB (residuals, overflow):
        // data-out must match the buffer exactly and goes only with
        // WRITE-direction commands.
        let ok = match c.dir {
            SCST_DATA_WRITE => c.exp_dir == SCST_DATA_WRITE && c.out_len == c.bufflen as usize,
            SCST_DATA_BIDI => true,
            _ => c.exp_dir != SCST_DATA_WRITE,
        };
        if !ok {
            return self.complete_error(slot, key::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB);
        }
        if c.dir == SCST_DATA_NONE {
            self.exec_stage(slot);
        } else {
            self.alloc_stage(slot);
        }
    }

    /// Buffer bytes a command needs (`dev_user_alloc_sg`'s `orig_bufflen`):
    /// BIDI puts the data-out after the page-rounded data-in.
    pub(super) fn buffer_len(c: &Cmd) -> usize {
        let bufflen = c.bufflen.max(0) as usize;
        if c.dir == SCST_DATA_BIDI {
            pages(bufflen) * PAGE_SIZE + c.out_bufflen.max(0) as usize
        } else {
            bufflen
        }
    }

    /// `dev_user_alloc_space`.
    fn alloc_stage(&mut self, slot: u32) {
        let c = &self.cmds[slot as usize];
        let ui = c.ucmd;
        let dir = c.dir;
        let local = c.op_flags & SCST_LOCAL_CMD != 0;
        let len = Self::buffer_len(c);
        let cached = self.is_buff_cached(dir);
        self.ucmds[ui as usize].state = UState::BufAllocing;
        self.ucmds[ui as usize].buff_cached = cached;
        let order = order_of(len);
        if cached && usize::from(order) < SGV_ORDERS {
            if let Some((owner, pbuf)) = self.cache_get(order) {
                self.stats.cache_hits += 1;
                let u = &mut self.ucmds[ui as usize];
                u.ubuff = pbuf;
                u.buf_owner = owner;
                return self.data_out_ready(slot);
            }
            self.stats.cache_misses += 1;
        }
        if dir & SCST_DATA_WRITE == 0 && !local {
            // Delayed allocation: EXEC with pbuf 0, the handler allocates.
            return self.exec_stage(slot);
        }
        let alloc_len = if cached { class_bytes(order) } else { len };
        let u = &mut self.ucmds[ui as usize];
        u.alloc_len = i32::try_from(alloc_len).unwrap_or(i32::MAX);
        self.stats.alloc_mem_sent += 1;
        self.add_to_ready(ui, UState::BufAllocing, subcode::ALLOC_MEM);
    }

    /// The buffer is known: the target driver receives the data-out into
    /// it (copied in the batch at the end of this step), then EXEC.
    fn data_out_ready(&mut self, slot: u32) {
        let c = &self.cmds[slot as usize];
        if c.dir == SCST_DATA_WRITE && c.out_len > 0 {
            let remote = self.ucmds[c.ucmd as usize].ubuff;
            self.pending_out.push(PendingCopy {
                slot,
                remote,
                len: c.out_len,
                // Only cache hits come here; ALLOC_MEM replies copy at once.
                pinned: true,
            });
        } else {
            self.exec_stage(slot);
        }
    }

    /// `dev_user_exec`, or the core's local execution.
    pub(super) fn exec_stage(&mut self, slot: u32) {
        let c = &self.cmds[slot as usize];
        if c.aborted {
            return self.complete_aborted(slot);
        }
        match c.local {
            Local::No | Local::Fully => {}
            Local::Reserve => {
                self.set_good(slot);
                return self.complete(slot);
            }
            Local::NotModelled => {
                return self.complete_error(
                    slot,
                    key::ILLEGAL_REQUEST,
                    Asc::INVALID_COMMAND_OPERATION_CODE,
                )
            }
            Local::CompareAndWrite => return self.caw_start(slot),
        }
        let ui = c.ucmd;
        let dir = c.dir;
        let len = Self::buffer_len(c);
        let u = &mut self.ucmds[ui as usize];
        u.alloc_len = if u.ubuff == 0 && dir != SCST_DATA_NONE {
            let n = if u.buff_cached {
                class_bytes(order_of(len))
            } else {
                len
            };
            i32::try_from(n).unwrap_or(i32::MAX)
        } else {
            0
        };
        self.stats.exec_sent += 1;
        self.add_to_ready(ui, UState::Execing, subcode::EXEC);
    }

    /// Runs the batched copies and the completions of this call, in order:
    /// data-in from the handler first (its commands complete after), then
    /// completions, then data-out into cached buffers (their EXECs are
    /// queued after).
    pub(in crate::scst) fn settle(&mut self) {
        loop {
            if !self.pending_in.is_empty() {
                self.flush_in();
            }
            if !self.completing.is_empty() {
                self.drain_completions();
                continue;
            }
            if !self.pending_out.is_empty() {
                self.flush_out();
                continue;
            }
            break;
        }
    }

    /// Processes the commands completed in this call, in order.
    pub(super) fn drain_completions(&mut self) {
        while let Some(slot) = self.completing.pop_front() {
            self.finalize(slot);
        }
    }

    /// The command finished (`scst_cmd_done` → `dev_done` → xmit).
    fn finalize(&mut self, slot: u32) {
        self.stats.completed += 1;
        self.snoop_block_size(slot);
        let c = &mut self.cmds[slot as usize];
        c.stage = Stage::Done;
        let waiters = std::mem::take(&mut c.tm_waiters);
        for &tm in &waiters {
            self.tm_cmd_finished(tm);
        }
        let c = &mut self.cmds[slot as usize];
        c.tm_waiters = waiters;
        c.tm_waiters.clear();
        let parent = c.parent;
        if parent == NONE {
            self.done.push_back(slot);
        } else {
            self.child_done(parent, slot);
        }
    }

    /// `scst_block_generic_dev_done`: a disk's block size follows the READ
    /// CAPACITY data the handler returned (not with PARSE_CALL, where
    /// `dev_done` is NULL).
    fn snoop_block_size(&mut self, slot: u32) {
        let Some(dev) = self.dev.as_ref() else {
            return;
        };
        if dev.opt.parse_type == SCST_USER_PARSE_CALL || dev.type_ != TYPE_DISK {
            return;
        }
        let c = &self.cmds[slot as usize];
        if c.status != status::GOOD || c.ucmd == NONE {
            return;
        }
        let at = match (c.cdb[0], c.cdb[1] & 0x1F) {
            (0x25, _) => 4,
            (0x9E, 0x10) => 8,
            _ => return,
        };
        self.materialize_in(slot);
        let c = &self.cmds[slot as usize];
        if c.in_len < at + 4 {
            return;
        }
        let bs = u32::from_be_bytes([
            c.staging[at],
            c.staging[at + 1],
            c.staging[at + 2],
            c.staging[at + 3],
        ]);
        if bs.is_power_of_two() && bs >= 512 {
            if let Some(dev) = self.dev.as_mut() {
                dev.block_size = bs;
            }
        }
    }

    /// `dev_user_on_free_cmd` and the release of the command: ON_FREE_CMD
    /// when the handler saw the command and wants it; else the buffer goes
    /// straight back (`dev_user_process_reply_on_free`).
    pub(super) fn free_cmd(&mut self, slot: u32) {
        let c = &self.cmds[slot as usize];
        let ui = c.ucmd;
        if ui != NONE {
            let on_free = ScstUserScsiOnFreeCmd {
                pbuf: self.ucmds[ui as usize].ubuff,
                resp_data_len: c.resp_data_len,
                buffer_cached: u8::from(self.ucmds[ui as usize].buff_cached),
                aborted: u8::from(self.ucmds[ui as usize].aborted),
                status: c.status,
                delivery_status: if c.aborted {
                    SCST_CMD_DELIVERY_ABORTED
                } else {
                    SCST_CMD_DELIVERY_SUCCESS
                },
            };
            let ignore = self.dev().opt.on_free_cmd_type == SCST_USER_ON_FREE_CMD_IGNORE;
            let u = &mut self.ucmds[ui as usize];
            u.cmd = NONE;
            if ignore || !u.seen || self.gone {
                self.on_free_processed(ui);
            } else {
                u.on_free = on_free;
                self.stats.on_free_sent += 1;
                self.add_to_ready(ui, UState::OnFreeing, subcode::ON_FREE_CMD);
            }
        }
        let c = &mut self.cmds[slot as usize];
        c.stage = Stage::Free;
        c.ucmd = NONE;
        let sess = c.sess as usize;
        if c.parent == NONE {
            self.free_ext.push(slot);
        } else {
            c.parent = NONE;
            self.free_int.push(slot);
        }
        self.sessions[sess].active -= 1;
        self.in_use_cmds -= 1;
    }

    /// ON_FREE_CMD answered, or not sent: a cached buffer goes back to
    /// the cache and the ucmd is released.
    pub(super) fn on_free_processed(&mut self, ui: u32) {
        self.free_sgv(ui);
        self.maybe_free_ucmd(ui);
    }
}
