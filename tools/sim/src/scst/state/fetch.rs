//! What REPLY_AND_GET_MULTI hands out: the next ready ucmd
//! (`__dev_user_get_next_cmd`, after the core's last checks), written into
//! the handler's buffer as the subcommand of its state.

use super::sgv::pages;
use super::ucmd::UState;
use super::{State, NONE, PAGE_SIZE};
use dataplane::scsi::sense::key;
use dataplane::scsi::Asc;
use dataplane::scst::abi::*;

impl State {
    /// `__dev_user_get_next_cmd`: the next ready ucmd, after the core
    /// checks that make a command finish instead of reaching the handler.
    pub(in crate::scst) fn fetch_one(&mut self) -> Option<u32> {
        loop {
            let ui = self.pop_ready()?;
            let u = &self.ucmds[ui as usize];
            if u.cmd != NONE {
                let slot = u.cmd;
                let state = u.state;
                let c = &self.cmds[slot as usize];
                match state {
                    UState::Execing => {
                        // scst_check_local_events: aborted, unit attention.
                        if c.aborted {
                            self.complete_aborted(slot);
                            continue;
                        }
                        let sess = c.sess as usize;
                        if self.sessions[sess].ua_capacity && c.op_flags & SCST_SKIP_UA == 0 {
                            self.sessions[sess].ua_capacity = false;
                            self.complete_error(slot, key::UNIT_ATTENTION, Asc::new(0x2A, 0x09));
                            continue;
                        }
                    }
                    UState::Parsing | UState::BufAllocing if c.aborted => {
                        self.unjam(ui, false);
                        continue;
                    }
                    _ => {}
                }
            }
            let u = &mut self.ucmds[ui as usize];
            u.sent = true;
            u.seen = true;
            return Some(ui);
        }
    }

    /// Writes the subcommand of `ui` into `out` as `copy_to_user` of
    /// `user_cmd_payload_len` bytes: the header and the union member; the
    /// rest of the slot keeps its old bytes.
    pub(in crate::scst) fn write_cmd(&self, ui: u32, out: &mut ScstUserGetCmd) {
        let u = &self.ucmds[ui as usize];
        out.cmd_h = u.h;
        out.subcode = u.subcode;
        let cmd = (u.cmd != NONE).then(|| &self.cmds[u.cmd as usize]);
        let sess_h = |sess: u32| self.sessions[sess as usize].sess_h;
        match u.state {
            UState::Parsing => {
                let c = cmd.expect("PARSE has a command");
                out.set_parse_cmd(&ScstUserScsiCmdParse {
                    sess_h: sess_h(c.sess),
                    cdb: c.cdb,
                    cdb_len: c.cdb_len,
                    lba: c.lba,
                    data_len: c.data_len,
                    bufflen: c.bufflen,
                    out_bufflen: c.out_bufflen,
                    timeout: c.timeout,
                    op_flags: c.op_flags,
                    queue_type: c.queue_type,
                    data_direction: c.dir,
                    expected_values_set: 1,
                    expected_data_direction: c.exp_dir,
                    expected_transfer_len: i32::try_from(c.exp_len).unwrap_or(i32::MAX),
                    expected_out_transfer_len: 0,
                    sn: c.sn,
                    ..Default::default()
                });
            }
            UState::BufAllocing => {
                let c = cmd.expect("ALLOC_MEM has a command");
                out.set_alloc_cmd(&ScstUserScsiCmdAllocMem {
                    sess_h: sess_h(c.sess),
                    cdb: c.cdb,
                    cdb_len: c.cdb_len,
                    alloc_len: u.alloc_len,
                    queue_type: c.queue_type,
                    data_direction: c.dir,
                    sn: c.sn,
                    ..Default::default()
                });
            }
            UState::Execing => {
                let c = cmd.expect("EXEC has a command");
                let (parent_cmd_h, parent_cmd_data_len) = if c.parent != NONE {
                    let p = &self.cmds[c.parent as usize];
                    let ph = if p.ucmd != NONE {
                        self.ucmds[p.ucmd as usize].h
                    } else {
                        0
                    };
                    (ph, i32::try_from(p.data_len).unwrap_or(i32::MAX))
                } else {
                    (0, 0)
                };
                let in_pages = pages(c.bufflen.max(0) as usize) as u64;
                out.set_exec_cmd(&ScstUserScsiCmdExec {
                    sess_h: sess_h(c.sess),
                    cdb: c.cdb,
                    cdb_len: c.cdb_len,
                    lba: c.lba,
                    data_len: c.data_len,
                    bufflen: c.bufflen,
                    alloc_len: u.alloc_len,
                    pbuf: u.ubuff,
                    queue_type: c.queue_type,
                    data_direction: c.dir,
                    partial: 0,
                    timeout: c.timeout,
                    p_out_buf: if u.ubuff != 0 {
                        u.ubuff + in_pages * PAGE_SIZE as u64
                    } else {
                        0
                    },
                    out_bufflen: c.out_bufflen,
                    sn: c.sn,
                    parent_cmd_h,
                    parent_cmd_data_len,
                    partial_offset: 0,
                    ..Default::default()
                });
            }
            UState::OnFreeing => out.set_on_free_cmd(&u.on_free),
            UState::OnCacheFreeing => out.set_on_cached_mem_free(&ScstUserOnCachedMemFree {
                pbuf: u.own.map_or(u.ubuff, |o| o.pbuf),
            }),
            UState::TmReceived | UState::TmDone => {
                let tm = &self.tms[u.mgmt as usize];
                out.set_tm_cmd(&ScstUserTm {
                    sess_h: sess_h(tm.sess),
                    fn_: tm.fn_,
                    cmd_h_to_abort: tm.cmd_h_to_abort,
                    cmd_sn: 0,
                    cmd_sn_set: 0,
                    ..Default::default()
                });
            }
            UState::AttachSess => {
                let s = &self.sessions[u.mgmt as usize];
                let mut target = [0u8; SCST_MAX_EXTERNAL_NAME];
                let t = self.cfg.target_name.as_bytes();
                let n = t.len().min(SCST_MAX_EXTERNAL_NAME - 2);
                target[..n].copy_from_slice(&t[..n]);
                out.set_sess(&ScstUserSess {
                    sess_h: s.sess_h,
                    lun: s.lun,
                    threads_num: 0,
                    rd_only: 0,
                    _pad0: 0,
                    scsi_transport_version: 0,
                    phys_transport_version: 0,
                    initiator_name: s.initiator,
                    target_name: target,
                });
            }
            UState::DetachSess => {
                out.set_sess(&ScstUserSess {
                    sess_h: self.sessions[u.mgmt as usize].sess_h,
                    lun: 0,
                    threads_num: 0,
                    rd_only: 0,
                    _pad0: 0,
                    scsi_transport_version: 0,
                    phys_transport_version: 0,
                    initiator_name: [0; SCST_MAX_EXTERNAL_NAME],
                    target_name: [0; SCST_MAX_EXTERNAL_NAME],
                });
            }
            UState::New => {}
        }
    }
}
