//! Entries and bytes no ordinary command produces, for tests of the
//! device: TMR entries, entries of an unknown opcode, raw writes into the
//! mapping.

use super::TcmuSim;
use crate::tcmu::error::SimSubmitError;
use dataplane::tcmu::abi::*;
use dataplane::tcmu::TcmuError;

impl TcmuSim {
    /// Queues a `TCMU_OP_TMR` entry listing `cmd_ids` (like `queue_tmr_ring`
    /// with `tmr_notification=1`) and notifies the device at once, as the
    /// kernel does. The kernel lists only commands on the ring; the ids are
    /// written as given.
    pub fn inject_tmr(&mut self, tmr_type: u8, cmd_ids: &[u16]) -> Result<(), SimSubmitError> {
        if self.fault.is_some() {
            return Err(SimSubmitError::Broken);
        }
        let size = round_up_op(TMR_ENTRY_SIZE + 2 * cmd_ids.len());
        if size > self.config.cmdr_size as usize {
            return Err(SimSubmitError::TooLarge);
        }
        let size = size as u32;
        if !self.ring_space_avail(size) {
            return Err(SimSubmitError::RingFull);
        }
        let pos = self.insert_padding(size);
        let abs = CMDR_OFF as usize + pos as usize;
        let _ = self.region.fill(abs, size as usize, 0);
        let len_op = tcmu_len_op(size, TCMU_OP_TMR);
        let _ = self.region.write_u32(abs + HDR_LEN_OP, len_op);
        let _ = self.region.write_u8(abs + TMR_TYPE, tmr_type);
        let _ = self
            .region
            .write_u32(abs + TMR_CMD_CNT, cmd_ids.len() as u32);
        for (i, &id) in cmd_ids.iter().enumerate() {
            let _ = self.region.write_u16(abs + TMR_CMD_IDS + 2 * i, id);
        }
        self.publish_entry(pos, len_op);
        self.pending_notify += 1;
        self.notify();
        Ok(())
    }

    /// Queues an entry of `len` bytes with opcode 3 (unknown to this ABI);
    /// the device must pass it with `TCMU_UFLAG_UNKNOWN_OP`. Not notified.
    pub fn inject_unknown_op(&mut self, len: u32) -> Result<(), SimSubmitError> {
        if self.fault.is_some() {
            return Err(SimSubmitError::Broken);
        }
        if len == 0 || !(len as usize).is_multiple_of(TCMU_OP_ALIGN_SIZE) {
            return Err(SimSubmitError::InvalidLength);
        }
        if len > self.config.cmdr_size / 2 {
            return Err(SimSubmitError::TooLarge);
        }
        if !self.ring_space_avail(len) {
            return Err(SimSubmitError::RingFull);
        }
        let pos = self.insert_padding(len);
        let abs = CMDR_OFF as usize + pos as usize;
        let _ = self.region.fill(abs, len as usize, 0);
        let len_op = tcmu_len_op(len, 3);
        let _ = self.region.write_u32(abs + HDR_LEN_OP, len_op);
        self.publish_entry(pos, len_op);
        self.pending_notify += 1;
        Ok(())
    }

    /// Mapping offset of the entry of in-flight command `cmd_id`, for tests
    /// that corrupt it (with [`poke`](Self::poke)) before the device sees it.
    pub fn entry_offset(&self, cmd_id: u16) -> Option<usize> {
        let cmd = &self.cmds[usize::from(cmd_id)];
        cmd.in_flight
            .then_some(CMDR_OFF as usize + cmd.entry as usize)
    }

    /// Writes raw bytes into the mapping (fault injection).
    pub fn poke(&mut self, offset: usize, bytes: &[u8]) -> Result<(), TcmuError> {
        self.region.write_bytes(offset, bytes)
    }
}
