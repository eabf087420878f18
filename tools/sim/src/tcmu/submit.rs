//! Queueing commands (`queue_cmd_ring`) and notifying the device
//! (`uio_event_notify`).

use super::{Direction, TcmuSim};
use crate::tcmu::error::SimSubmitError;
use dataplane::tcmu::abi::*;
use dataplane::tcmu::scsi_command_size;

/// A command's data buffer.
#[derive(Debug, Clone, Copy)]
pub enum SimData<'a> {
    /// No data.
    None,
    /// Data-out (a write): copied into the data area at submission.
    Out(&'a [u8]),
    /// Data-in (a read) of this many bytes: copied out at completion with
    /// [`SimCompletion::copy_data_in`](super::SimCompletion::copy_data_in).
    In(usize),
}

impl TcmuSim {
    /// Queues one command, like `queue_cmd_ring`, and returns its `cmd_id`.
    /// The device learns of it at the next [`notify`](Self::notify) (or by
    /// polling `cmd_head`).
    pub fn submit(
        &mut self,
        cdb: &[u8],
        data: SimData<'_>,
        tag: u64,
    ) -> Result<u16, SimSubmitError> {
        if self.fault.is_some() {
            return Err(SimSubmitError::Broken);
        }
        let cdb_len = scsi_command_size(cdb)
            .filter(|&n| n <= cdb.len())
            .ok_or(SimSubmitError::BadCdb)?;
        let (dir, data_len, out) = match data {
            SimData::None => (Direction::None, 0, None),
            SimData::Out(bytes) => (Direction::Out, bytes.len(), Some(bytes)),
            SimData::In(n) => (Direction::In, n, None),
        };
        let bs = self.config.data_block_size as usize;
        let nblocks = data_len.div_ceil(bs);
        if nblocks > self.max_blocks as usize {
            return Err(SimSubmitError::TooLarge);
        }
        if nblocks > self.free_blocks as usize {
            return Err(SimSubmitError::DataAreaFull);
        }
        // Data blocks first (tcmu_alloc_data_space), lowest free first.
        self.scratch_blocks.clear();
        // A short list grows once, to what commands of up to 256 blocks
        // need: lists circulate between command ids, and growing each by
        // what one command needed would allocate again whenever a short one
        // met a larger command, long after a load's start. A steady load
        // then allocates only for command ids it had not used yet.
        if self.scratch_blocks.capacity() < nblocks {
            self.scratch_blocks
                .reserve_exact(nblocks.max(self.block_list_cap));
        }
        let mut iov_cnt = 0usize;
        let mut prev: Option<u32> = None;
        for _ in 0..nblocks {
            let Some(b) = self.blocks.alloc() else {
                self.release_blocks(None);
                return Err(SimSubmitError::DataAreaFull);
            };
            self.free_blocks -= 1;
            if prev.is_none_or(|p| p + 1 != b) {
                iov_cnt += 1;
            }
            prev = Some(b);
            self.scratch_blocks.push(b);
        }
        let base = cmd_base_size(iov_cnt);
        let size = base + round_up_op(cdb_len);
        if size > self.config.cmdr_size as usize / 2 {
            self.release_blocks(None);
            return Err(SimSubmitError::TooLarge);
        }
        let size = size as u32;
        if !self.ring_space_avail(size) {
            self.release_blocks(None);
            return Err(SimSubmitError::RingFull);
        }
        let Some(cmd_id) = self.ids.alloc() else {
            self.release_blocks(None);
            return Err(SimSubmitError::NoCmdId);
        };
        let cmd_id = cmd_id as u16;
        let pos = self.insert_padding(size);
        let abs = CMDR_OFF as usize + pos as usize;

        let _ = self.region.fill(abs, size as usize, 0);
        // Iovecs: merged runs of adjacent blocks; each block adds
        // min(remaining, block size) bytes (new_block_to_iov).
        let mut iov_index = 0usize;
        let mut remaining = data_len;
        let mut run_start: Option<u32> = None;
        let mut run_len = 0usize;
        let mut prev: Option<u32> = None;
        for i in 0..self.scratch_blocks.len() {
            let b = self.scratch_blocks[i];
            let chunk = remaining.min(bs);
            if prev.is_some_and(|p| p + 1 == b) {
                run_len += chunk;
            } else {
                if let Some(start) = run_start {
                    self.write_iovec(abs, iov_index, start, run_len);
                    iov_index += 1;
                }
                run_start = Some(b);
                run_len = chunk;
            }
            if let Some(bytes) = out {
                let from = data_len - remaining;
                let at = self.data_off + b as usize * bs;
                let _ = self.region.write_bytes(at, &bytes[from..from + chunk]);
            }
            remaining -= chunk;
            prev = Some(b);
        }
        if let Some(start) = run_start {
            self.write_iovec(abs, iov_index, start, run_len);
        }
        let _ = self.region.write_u32(abs + REQ_IOV_CNT, iov_cnt as u32);
        let _ = self.region.write_u32(abs + REQ_IOV_BIDI_CNT, 0);
        let cdb_off = abs + base;
        let _ = self.region.write_bytes(cdb_off, &cdb[..cdb_len]);
        let _ = self.region.write_u64(abs + REQ_CDB_OFF, cdb_off as u64);
        let _ = self.region.write_u16(abs + HDR_CMD_ID, cmd_id);
        let len_op = tcmu_len_op(size, TCMU_OP_CMD);
        let _ = self.region.write_u32(abs + HDR_LEN_OP, len_op);

        let cmd = &mut self.cmds[usize::from(cmd_id)];
        std::mem::swap(&mut cmd.blocks, &mut self.scratch_blocks);
        cmd.in_flight = true;
        cmd.kept = false;
        cmd.tag = tag;
        cmd.dir = dir;
        cmd.data_len = data_len;
        cmd.entry = pos;
        self.in_flight += 1;
        self.pending_notify += 1;
        self.publish_entry(pos, len_op);
        Ok(cmd_id)
    }

    fn write_iovec(&self, abs: usize, index: usize, first_block: u32, len: usize) {
        let at = abs + REQ_IOV + index * IOVEC_SIZE;
        let base = self.data_off + first_block as usize * self.config.data_block_size as usize;
        let _ = self.region.write_u64(at + IOVEC_BASE, base as u64);
        let _ = self.region.write_u64(at + IOVEC_LEN, len as u64);
    }

    /// Signals the device once for everything queued since the last call
    /// (`uio_event_notify`, batched as under plugging). Returns true if a
    /// notification was written.
    pub fn notify(&mut self) -> bool {
        if self.pending_notify == 0 {
            return false;
        }
        if nix::unistd::write(&self.notify, &1u64.to_ne_bytes()).is_err() {
            return false; // counter overflow (impossible in practice): retry later
        }
        self.pending_notify = 0;
        self.notifications += 1;
        true
    }
}
