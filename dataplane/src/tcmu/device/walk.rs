//! Step 1 of the poll: walking the ring from the receive position up to
//! `cmd_head`, copying each command out into a slot and submitting it.

use super::{SlotState, TcmuDevice, TcmuStatsSnapshot, Walked, NO_SLOT};
use crate::exec::CommandExecutor;
use crate::tcmu::abi::*;
use crate::tcmu::ring::{self, CmdParse};
use crate::tcmu::{internal_target_failure, invalid_command_opcode, RingFault};
use reactor::clock;

impl<E: CommandExecutor> TcmuDevice<E> {
    /// Walks new entries (step 1). Returns the number of entries walked.
    pub(super) fn walk(&mut self, c: &mut TcmuStatsSnapshot) -> usize {
        // The head first (acquire): the kernel's reset stores cmd_tail
        // before cmd_head, so a head written by a reset comes with the
        // reset's tail, which the check below then sees.
        let head = self.region.load_cmd_head();
        // Only this device writes cmd_tail; a different value means the ring
        // was reset or taken over, and nothing walked so far is valid.
        let found = self.region.load_cmd_tail();
        if found != self.published_tail {
            self.fault = Some(RingFault::TailMovedByPeer {
                expected: self.published_tail,
                found,
            });
            return 0;
        }
        if head >= self.geo.cmdr_size {
            self.fault = Some(RingFault::HeadOutOfRange {
                head,
                cmdr_size: self.geo.cmdr_size,
            });
            return 0;
        }
        if !(head as usize).is_multiple_of(TCMU_OP_ALIGN_SIZE) {
            self.fault = Some(RingFault::HeadMisaligned { head });
            return 0;
        }
        // The kernel never fills the ring, so counted from the published
        // tail its head is never behind what was walked. A head that is
        // behind was reset (the tail written by a reset can equal the one
        // published); the entries from there on are stale.
        if self.geo.distance(self.published_tail, head)
            < self.geo.distance(self.published_tail, self.recv)
        {
            self.fault = Some(RingFault::HeadMovedBackwards {
                head,
                walked: self.recv,
            });
            return 0;
        }
        if self.recv == head {
            return 0;
        }
        // Read once per walk that finds entries: the commands' receive time
        // and the coalescer's arrival clock.
        self.walk_clock = clock::recent();
        let received_before = c.commands_received;
        let mut walked = 0;
        while self.recv != head && walked < self.config.budget {
            let off = self.recv;
            let hdr = match ring::read_header(&self.region, &self.geo, off, head) {
                Ok(h) => h,
                Err(fault) => {
                    self.fault = Some(fault);
                    return walked;
                }
            };
            let abs = self.geo.entry_abs(off);
            let mut cmd_id = None;
            match hdr.op {
                TCMU_OP_PAD => c.pad_entries += 1,
                TCMU_OP_CMD => {
                    if (hdr.len as usize) < CMD_ENTRY_SIZE {
                        self.fault = Some(RingFault::CmdEntryTooShort {
                            offset: off,
                            len: hdr.len,
                        });
                        return walked;
                    }
                    if hdr.cmd_id == 0 {
                        self.fault = Some(RingFault::InvalidCmdId { offset: off });
                        return walked;
                    }
                    if self.slot_of_id[usize::from(hdr.cmd_id)] != NO_SLOT {
                        self.fault = Some(RingFault::DuplicateCmdId { cmd_id: hdr.cmd_id });
                        return walked;
                    }
                    let Some(slot) = self.free.pop() else {
                        break; // backpressure: resume when a slot frees up
                    };
                    self.receive_command(slot, hdr.cmd_id, abs, hdr.len, c);
                    cmd_id = Some(hdr.cmd_id);
                }
                TCMU_OP_TMR => self.handle_tmr(abs, hdr.len, c),
                _ => {
                    ring::flag_unknown_op(&self.region, abs);
                    c.unknown_entries += 1;
                }
            }
            self.walked.push_back(Walked {
                offset: off,
                len: hdr.len,
                cmd_id,
            });
            self.recv = self.geo.advance(off, hdr.len);
            walked += 1;
        }
        let arrived = (c.commands_received - received_before) as usize;
        // In hand: every command walked and not yet published (executing,
        // or completed into the ring behind the unpublished tail).
        let in_hand = self.slots.len() - self.free.len() + self.unpublished;
        self.coalescer.arrived(arrived, in_hand, self.walk_clock);
        if self.coalescer.concurrent() {
            c.concurrent_commands += arrived as u64;
        }
        walked
    }

    /// Copies a CMD entry into `slot` and submits it, or fails it directly.
    fn receive_command(
        &mut self,
        slot: u32,
        cmd_id: u16,
        abs: usize,
        len: u32,
        c: &mut TcmuStatsSnapshot,
    ) {
        let s = &mut self.slots[slot as usize];
        s.cmd_id = cmd_id;
        s.received_at = self.walk_clock;
        self.slot_of_id[usize::from(cmd_id)] = slot;
        c.commands_received += 1;
        match ring::parse_cmd(&self.region, &self.geo, abs, len, &mut s.cdb, &mut s.iovs) {
            CmdParse::Ok {
                cdb_len,
                data_len,
                data_in_capacity,
            } => {
                s.data_in_capacity = data_in_capacity;
                s.state = SlotState::Executing;
                c.data_bytes += data_len;
                // SAFETY: every iovec was checked to lie inside the data area
                // of the mapping, which stays mapped while commands are in
                // flight (`self.region` holds it, and `Drop` leaks it if the
                // executor still has commands). The device never touches the
                // data area, and the kernel does not touch a command's data
                // blocks until the command is completed through the ring,
                // which happens only after the executor delivered the
                // response for `slot`. (Overlapping iovecs from a
                // misbehaving kernel can only garble data bytes, which the
                // executor accesses through raw pointers.)
                unsafe {
                    self.executor
                        .submit(slot, &s.cdb[..usize::from(cdb_len)], &s.iovs);
                }
            }
            CmdParse::Malformed(_) => {
                s.response = internal_target_failure();
                s.data_in_capacity = 0;
                s.state = SlotState::Done;
                self.done.push(slot);
                c.malformed_commands += 1;
            }
            CmdParse::CdbTooLong => {
                s.response = invalid_command_opcode();
                s.data_in_capacity = 0;
                s.state = SlotState::Done;
                self.done.push(slot);
                c.malformed_commands += 1;
            }
        }
    }

    /// Asks the executor to abort every listed command this device holds.
    /// The aborted commands still complete through `poll`.
    fn handle_tmr(&mut self, abs: usize, len: u32, c: &mut TcmuStatsSnapshot) {
        c.tmr_entries += 1;
        let Some((_tmr_type, cmd_cnt)) = ring::parse_tmr(&self.region, abs, len) else {
            return; // malformed: ids do not fit; nothing to abort
        };
        for i in 0..cmd_cnt {
            let id = ring::tmr_cmd_id(&self.region, abs, i);
            let slot = self.slot_of_id[usize::from(id)];
            if slot != NO_SLOT && self.slots[slot as usize].state == SlotState::Executing {
                self.executor.abort(slot);
                c.aborts += 1;
            }
        }
    }
}
