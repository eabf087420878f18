//! The subcommand handlers of [`ScstDevice`]: one function per subcommand
//! kind, called by [`ScstDevice::handle`] for each subcommand an exchange
//! brought. PARSE is answered in `parse.rs`, task management in
//! `task_mgmt.rs`. See the module docs of [`super`] for what each answers.

use bdev::IoVec;

use super::{Held, ScstDevice, ScstStatsSnapshot, Session, SlotState};
use crate::exec::{status, CommandExecutor, Response};
use crate::scsi::{cdb, ScsiError};
use crate::scst::abi::*;
use crate::scst::driver::ScstDriver;

impl<D: ScstDriver, E: CommandExecutor> ScstDevice<D, E> {
    /// Handles subcommand `i` of the last exchange (`now`: when it arrived,
    /// for latency).
    pub(super) fn handle(&mut self, i: usize, now: u64, c: &mut ScstStatsSnapshot) {
        let cmd = &self.multi.cmds()[i];
        let (cmd_h, code) = (cmd.cmd_h, cmd.subcode);
        c.subcommands += 1;
        match code {
            subcode::EXEC => {
                let exec = self.multi.cmds()[i].exec_cmd();
                self.exec(cmd_h, exec, now, c);
            }
            subcode::ALLOC_MEM => {
                let alloc = self.multi.cmds()[i].alloc_cmd();
                self.alloc_mem(cmd_h, &alloc, c);
            }
            subcode::ON_FREE_CMD => {
                let on_free = self.multi.cmds()[i].on_free_cmd();
                self.on_free_cmd(cmd_h, &on_free, c);
            }
            subcode::ON_CACHED_MEM_FREE => {
                let pbuf = self.multi.cmds()[i].on_cached_mem_free().pbuf;
                self.on_cached_mem_free(cmd_h, pbuf, c);
            }
            subcode::PARSE => {
                let parse = self.multi.cmds()[i].parse_cmd();
                self.parse(cmd_h, &parse, c);
            }
            subcode::TASK_MGMT_RECEIVED | subcode::TASK_MGMT_DONE => {
                let tm = self.multi.cmds()[i].tm_cmd();
                let done = code == subcode::TASK_MGMT_DONE;
                if done {
                    c.tm_done += 1;
                } else {
                    c.tm_received += 1;
                }
                self.task_mgmt(cmd_h, &tm, done, c);
            }
            subcode::ATTACH_SESS => {
                let sess = self.multi.cmds()[i].sess();
                self.attach_sess(cmd_h, &sess, c);
            }
            subcode::DETACH_SESS => {
                let sess_h = self.multi.cmds()[i].sess().sess_h;
                self.detach_sess(cmd_h, sess_h, c);
            }
            subcode::EXT_COPY_REMAP => {
                let remap = self.multi.cmds()[i].remap_cmd();
                self.ext_copy_remap(cmd_h, &remap, c);
            }
            _ => {
                c.unknown_subcodes += 1;
                self.replies.push_result(cmd_h, code, -libc::EINVAL);
            }
        }
    }

    /// EXEC: starts the command, or holds it (in order) until a slot frees.
    fn exec(&mut self, cmd_h: u32, exec: ScstUserScsiCmdExec, now: u64, c: &mut ScstStatsSnapshot) {
        c.exec += 1;
        c.data_bytes += u64::try_from(exec.bufflen).unwrap_or(0);
        if self.free.is_empty() || !self.held.is_empty() {
            c.held += 1;
            self.held.push_back(Held::Exec {
                cmd_h,
                exec,
                received_at: now,
            });
        } else {
            self.start_exec(cmd_h, &exec, now, c);
        }
    }

    /// ALLOC_MEM: a pool buffer, an oversize buffer for a write larger
    /// than the pool's largest, or `pbuf = 0` (BUSY) when the pool (or the
    /// oversize allowance) is exhausted.
    fn alloc_mem(
        &mut self,
        cmd_h: u32,
        alloc: &ScstUserScsiCmdAllocMem,
        c: &mut ScstStatsSnapshot,
    ) {
        c.alloc_mem += 1;
        let len = usize::try_from(alloc.alloc_len).unwrap_or(0);
        if self.quiescing {
            // Handing off: no buffer goes to the kernel (`handoff.rs`).
            c.busy += 1;
            return self.replies.push_alloc(cmd_h, 0);
        }
        let mut pbuf = self.pool.alloc(len).map_or(0, |b| b.pbuf);
        if pbuf == 0 && len > 0 && self.pool.class_size(len).is_none() {
            // No pool buffer will ever fit: a buffer of its own, so that
            // the command is answered with sense at EXEC (`oversize.rs`).
            pbuf = self.oversize.alloc(len).unwrap_or(0);
            if pbuf != 0 {
                c.oversize_buffers += 1;
            }
        }
        if pbuf == 0 {
            c.busy += 1;
        }
        self.replies.push_alloc(cmd_h, pbuf);
    }

    /// ON_FREE_CMD: a buffer the kernel does not cache goes back to the
    /// pool.
    fn on_free_cmd(
        &mut self,
        cmd_h: u32,
        on_free: &ScstUserScsiOnFreeCmd,
        c: &mut ScstStatsSnapshot,
    ) {
        c.on_free_cmd += 1;
        if on_free.buffer_cached == 0 && on_free.pbuf != 0 && !self.free_buffer(on_free.pbuf) {
            c.bad_frees += 1;
        }
        self.replies.push_result(cmd_h, subcode::ON_FREE_CMD, 0);
    }

    /// ON_CACHED_MEM_FREE: the evicted buffer goes back to the pool.
    fn on_cached_mem_free(&mut self, cmd_h: u32, pbuf: u64, c: &mut ScstStatsSnapshot) {
        c.on_cached_mem_free += 1;
        if !self.free_buffer(pbuf) {
            c.bad_frees += 1;
        }
        self.replies
            .push_result(cmd_h, subcode::ON_CACHED_MEM_FREE, 0);
    }

    /// Returns a buffer the kernel gave back to the pool or unmaps it (an
    /// oversize one); false if it is neither. An oversize buffer a command
    /// in the executor still uses is kept (only a misbehaving kernel frees
    /// it then; unmapping it would pull memory from under the executor).
    fn free_buffer(&mut self, pbuf: u64) -> bool {
        // Oversize buffers first: the pool counts a pbuf it does not know
        // as a bad free.
        if !self.oversize.owns(pbuf) {
            return self.pool.free(pbuf);
        }
        let in_use = self
            .slots
            .iter()
            .any(|s| s.state != SlotState::Free && s.pbuf == pbuf);
        !in_use && self.oversize.free(pbuf)
    }

    /// ATTACH_SESS: records the session (replacing one of the same handle).
    fn attach_sess(&mut self, cmd_h: u32, sess: &ScstUserSess, c: &mut ScstStatsSnapshot) {
        c.attach_sess += 1;
        self.sessions.retain(|s| s.sess_h != sess.sess_h);
        self.sessions.push(Session {
            sess_h: sess.sess_h,
            lun: sess.lun,
            rd_only: sess.rd_only != 0,
            initiator_name: c_string(&sess.initiator_name),
            target_name: c_string(&sess.target_name),
        });
        if self.quiescing {
            self.handoff.publish_sessions(&self.sessions);
        }
        self.replies.push_result(cmd_h, subcode::ATTACH_SESS, 0);
    }

    /// DETACH_SESS: forgets the session.
    fn detach_sess(&mut self, cmd_h: u32, sess_h: u64, c: &mut ScstStatsSnapshot) {
        c.detach_sess += 1;
        self.sessions.retain(|s| s.sess_h != sess_h);
        if self.quiescing {
            self.handoff.publish_sessions(&self.sessions);
        }
        self.replies.push_result(cmd_h, subcode::DETACH_SESS, 0);
    }

    /// EXT_COPY_REMAP: the identity remap (SCST copies the range itself).
    fn ext_copy_remap(
        &mut self,
        cmd_h: u32,
        remap: &ScstUserExtCopyRemap,
        c: &mut ScstStatsSnapshot,
    ) {
        c.ext_copy_remap += 1;
        self.replies.push_identity_remap(cmd_h, &remap.data_descr);
    }

    /// Answers an EXEC at once (without the executor).
    pub(super) fn fail_exec(&mut self, cmd_h: u32, response: &Response, c: &mut ScstStatsSnapshot) {
        self.replies
            .push_exec(cmd_h, 0, 0, response.status, response.sense_bytes());
        c.commands_completed += 1;
    }

    /// Finds the EXEC's buffer and submits it into a free slot (the caller
    /// checked there is one), or answers it at once.
    pub(super) fn start_exec(
        &mut self,
        cmd_h: u32,
        exec: &ScstUserScsiCmdExec,
        received_at: u64,
        c: &mut ScstStatsSnapshot,
    ) {
        let format = self.sense_format;
        let cdb_len = usize::from(exec.cdb_len);
        if cdb_len == 0 || cdb_len > SCST_MAX_CDB_SIZE {
            // Extended CDBs (GET_EXTENDED_CDB) are not supported.
            let response = ScsiError::InvalidCommandOperationCode.to_response(format);
            return self.fail_exec(cmd_h, &response, c);
        }
        let cdb_bytes = &exec.cdb[..cdb_len];
        let (Ok(bufflen), Ok(alloc_len)) =
            (u32::try_from(exec.bufflen), usize::try_from(exec.alloc_len))
        else {
            let response = ScsiError::InternalTargetFailure.to_response(format);
            return self.fail_exec(cmd_h, &response, c);
        };
        let mut exec_pbuf = 0;
        let iov: Option<IoVec> = if exec.data_direction == SCST_DATA_NONE || bufflen == 0 {
            None
        } else if exec.pbuf != 0 {
            let len = bufflen as usize;
            let iov = self.pool.iovec(exec.pbuf, len);
            match iov.or_else(|| self.oversize.iovec(exec.pbuf, len)) {
                Some(iov) => Some(iov),
                None => {
                    c.bad_pbufs += 1;
                    let response = ScsiError::InternalTargetFailure.to_response(format);
                    return self.fail_exec(cmd_h, &response, c);
                }
            }
        } else if exec.data_direction & SCST_DATA_READ != 0 {
            if self.quiescing {
                // Handing off: no buffer goes to the kernel (`handoff.rs`).
                c.busy += 1;
                return self.fail_exec(cmd_h, &Response::with_status(status::BUSY), c);
            }
            let len = alloc_len.max(bufflen as usize);
            match self.pool.alloc(len) {
                Some(buf) => {
                    exec_pbuf = buf.pbuf;
                    self.pool.iovec(buf.pbuf, bufflen as usize)
                }
                None if self.pool.class_size(len).is_none() => {
                    let field = cdb::transfer_length_field(cdb_bytes[0]);
                    let response = ScsiError::InvalidFieldInCdb(field).to_response(format);
                    return self.fail_exec(cmd_h, &response, c);
                }
                None => {
                    c.busy += 1;
                    return self.fail_exec(cmd_h, &Response::with_status(status::BUSY), c);
                }
            }
        } else {
            // Data-out without a buffer: the kernel never does this.
            c.bad_pbufs += 1;
            let response = ScsiError::InternalTargetFailure.to_response(format);
            return self.fail_exec(cmd_h, &response, c);
        };
        let Some(slot) = self.free.pop() else {
            // Callers check for a free slot; never happens.
            if exec_pbuf != 0 {
                self.pool.free(exec_pbuf);
            }
            return self.fail_exec(cmd_h, &Response::with_status(status::BUSY), c);
        };
        let s = &mut self.slots[slot as usize];
        s.state = SlotState::Executing;
        s.cmd_h = cmd_h;
        s.sess_h = exec.sess_h;
        s.data_direction = exec.data_direction;
        s.bufflen = bufflen;
        s.pbuf = exec.pbuf;
        s.exec_pbuf = exec_pbuf;
        s.received_at = received_at;
        s.tm_waiters = 0;
        s.aborted = false;
        let iovs = match &iov {
            Some(iov) => std::slice::from_ref(iov),
            None => &[],
        };
        // SAFETY: the iovec (if any) lies inside a buffer the pool handed
        // out, in the pool's mapping, or inside an oversize buffer's own
        // mapping; both stay mapped while commands are in the executor
        // (`Drop` leaks them if some still are, and an oversize buffer is
        // unmapped only when the kernel gives it back and no slot uses it,
        // see `free_buffer`). The buffer
        // stays allocated until the command's reply is queued: a buffer
        // allocated here is freed only in `complete`, and a kernel-supplied
        // one (ALLOC_MEM or cached) only on ON_FREE_CMD / ON_CACHED_MEM_FREE,
        // which the kernel sends only after it has the EXEC reply (commands
        // sent to user space are never completed behind the handler's back).
        // The device itself never touches buffer contents. A misbehaving
        // kernel could at worst get a buffer reused for two commands,
        // garbling data the executor accesses through raw pointers, never
        // memory outside the live mapping.
        unsafe { self.executor.submit(slot, cdb_bytes, iovs) };
    }
}

/// A NUL-terminated name field as a string.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
