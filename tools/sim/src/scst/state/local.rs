//! Commands the core executes itself (`scst_local_fns[]` in scst_targ.c):
//! REPORT LUNS and REQUEST SENSE without the handler at all; COMPARE AND
//! WRITE and DO_WRITE_SAME through internal READ(16)/WRITE(16) commands the
//! core sends to the handler on the parent's session.

use super::cmd::Stage;
use super::{State, NONE};
use crate::scst::parse::Local;
use dataplane::exec::status;
use dataplane::scsi::sense::key;
use dataplane::scsi::Asc;
use dataplane::scst::abi::*;

/// REPORT LUNS needs at least this allocation length (SPC).
const REPORT_LUNS_MIN_ALLOC: u32 = 16;

/// Two distinct elements of `v`, both mutable.
fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

impl State {
    /// REPORT LUNS and REQUEST SENSE, answered by the core.
    pub(super) fn exec_fully_local(&mut self, slot: u32) {
        let d_sense = self.dev().opt.d_sense != 0;
        let c = &mut self.cmds[slot as usize];
        let mut out = [0u8; 32];
        let (len, alloc) = match c.cdb[0] {
            0xA0 => {
                let alloc = u32::from_be_bytes([c.cdb[6], c.cdb[7], c.cdb[8], c.cdb[9]]);
                if alloc < REPORT_LUNS_MIN_ALLOC {
                    return self.complete_error(
                        slot,
                        key::ILLEGAL_REQUEST,
                        Asc::INVALID_FIELD_IN_CDB,
                    );
                }
                let lun = self.sessions[c.sess as usize].lun;
                out[0..4].copy_from_slice(&8u32.to_be_bytes());
                if lun < 256 {
                    out[9] = lun as u8;
                } else {
                    // Flat space addressing.
                    out[8] = 0x40 | ((lun >> 8) & 0x3F) as u8;
                    out[9] = lun as u8;
                }
                (16, alloc as usize)
            }
            _ => {
                let desc = c.cdb[1] & 0x01 != 0 || d_sense;
                let n = dataplane::scsi::request_sense_data(desc, &mut out);
                (n, usize::from(c.cdb[4]))
            }
        };
        let n = len.min(alloc);
        let keep = n.min(c.exp_len);
        c.staging[..keep].copy_from_slice(&out[..keep]);
        c.in_len = keep;
        c.resp_data_len = n as i32;
        c.status = status::GOOD;
        self.complete(slot);
    }

    /// An internal command of the core (COMPARE AND WRITE, WRITE SAME) on
    /// `parent`'s session: READ(16)/WRITE(16) of `blocks` at `lba`. Its
    /// data-out is filled by the caller. Returns None when no slot is free.
    fn new_internal(&mut self, parent: u32, write: bool, lba: u64, blocks: u32) -> Option<u32> {
        let slot = self.free_int.pop()?;
        let bs = self.dev().block_size as usize;
        let sess = self.cmds[parent as usize].sess;
        let s = &mut self.sessions[sess as usize];
        s.active += 1;
        let sn = s.next_sn;
        s.next_sn = sn.wrapping_add(1);
        let len = blocks as usize * bs;
        let c = &mut self.cmds[slot as usize];
        c.stage = Stage::Active;
        c.tag = 0;
        c.parent = parent;
        c.sess = sess;
        c.cdb = [0; SCST_MAX_CDB_SIZE];
        c.cdb[0] = if write { 0x8A } else { 0x88 };
        c.cdb[2..10].copy_from_slice(&lba.to_be_bytes());
        c.cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
        c.cdb_len = 16;
        c.queue_type = SCST_CMD_QUEUE_SIMPLE;
        c.sn = sn;
        c.exp_dir = if write {
            SCST_DATA_WRITE
        } else {
            SCST_DATA_READ
        };
        c.exp_len = len;
        if c.staging.len() < len {
            c.staging.resize(len, 0);
        }
        c.out_len = if write { len } else { 0 };
        c.reset_result();
        self.in_use_cmds += 1;
        self.active.push_back(slot);
        self.cmds[parent as usize].child = slot;
        self.stats.internal_cmds += 1;
        Some(slot)
    }

    /// Issues the next internal WRITE of a DO_WRITE_SAME, or completes it.
    pub(super) fn ws_next(&mut self, parent: u32) {
        let bs = self.dev().block_size as usize;
        let max_blocks = (self.cfg.ws_max_write_bytes / bs).max(1) as u64;
        let c = &mut self.cmds[parent as usize];
        let Some(&(lba, blocks)) = c.ws_ranges.get(c.ws_idx) else {
            self.set_good(parent);
            return self.complete(parent);
        };
        let n = blocks.min(max_blocks);
        if n == blocks {
            c.ws_idx += 1;
        } else {
            c.ws_ranges[c.ws_idx] = (lba + n, blocks - n);
        }
        let ndob = c.dir == SCST_DATA_NONE;
        if self.gone {
            return self.complete_busy(parent);
        }
        let Some(child) = self.new_internal(parent, true, lba, n as u32) else {
            return self.complete_busy(parent);
        };
        let (p, ch) = two_mut(&mut self.cmds, parent as usize, child as usize);
        let len = n as usize * bs;
        if ndob {
            ch.staging[..len].fill(0);
        } else {
            for chunk in ch.staging[..len].chunks_exact_mut(bs) {
                chunk.copy_from_slice(&p.staging[..bs]);
            }
        }
    }

    /// COMPARE AND WRITE, executed by the core: an internal READ of the
    /// range first.
    pub(super) fn caw_start(&mut self, slot: u32) {
        let c = &self.cmds[slot as usize];
        let blocks = u32::from(c.cdb[13]);
        if blocks == 0 {
            self.set_good(slot);
            return self.complete(slot);
        }
        let lba = c.lba as u64;
        self.cmds[slot as usize].caw_phase = 0;
        if self.new_internal(slot, false, lba, blocks).is_none() {
            self.complete_busy(slot);
        }
    }

    /// An internal command finished: continue its parent.
    pub(super) fn child_done(&mut self, parent: u32, child: u32) {
        let (p, ch) = two_mut(&mut self.cmds, parent as usize, child as usize);
        p.child = NONE;
        let failed = ch.status != status::GOOD;
        if failed {
            p.status = ch.status;
            p.sense = ch.sense;
            p.sense_len = ch.sense_len;
        }
        let mut next_write = None;
        let mut miscompare = None;
        if !failed && p.local == Local::CompareAndWrite && p.caw_phase == 0 {
            let n = ch.exp_len;
            match (0..n).find(|&i| i >= ch.in_len || ch.staging[i] != p.staging[i]) {
                Some(off) => miscompare = Some(off),
                None => next_write = Some((p.lba as u64, u32::from(p.cdb[13]), n)),
            }
        }
        let aborted = p.aborted;
        let is_ws = p.local != Local::CompareAndWrite;
        self.free_cmd(child);
        if aborted {
            return self.complete_aborted(parent);
        }
        if failed {
            return self.complete(parent);
        }
        if let Some(off) = miscompare {
            self.set_error(
                parent,
                key::MISCOMPARE,
                Asc::MISCOMPARE_DURING_VERIFY,
                Some(off as u64),
            );
            return self.complete(parent);
        }
        if let Some((lba, blocks, n)) = next_write {
            if self.gone {
                return self.complete_busy(parent);
            }
            self.cmds[parent as usize].caw_phase = 1;
            let Some(w) = self.new_internal(parent, true, lba, blocks) else {
                return self.complete_busy(parent);
            };
            let (p, wc) = two_mut(&mut self.cmds, parent as usize, w as usize);
            wc.staging[..n].copy_from_slice(&p.staging[n..2 * n]);
            return;
        }
        if is_ws {
            self.ws_next(parent);
        } else {
            self.set_good(parent);
            self.complete(parent);
        }
    }
}
