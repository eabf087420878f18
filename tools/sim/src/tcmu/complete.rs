//! Completions: the device's doorbell and `tcmu_handle_completions`, which
//! checks what the device wrote and hands each completed command to the
//! initiator.

use std::os::fd::AsRawFd;

use nix::errno::Errno;

use super::{Direction, TcmuSim};
use crate::tcmu::completion::SimCompletion;
use crate::tcmu::error::SimError;
use dataplane::exec::status;
use dataplane::scsi::{ScsiError, SenseFormat};
use dataplane::tcmu::abi::*;
use dataplane::tcmu::{RingFault, TcmuError};

impl TcmuSim {
    /// Reads (and clears) the kick eventfd; returns the kicks counted.
    fn take_kicks(&mut self) -> Result<u64, SimError> {
        let mut buf = [0u8; 8];
        match nix::unistd::read(self.kick.as_raw_fd(), &mut buf) {
            Ok(8) => {
                let n = u64::from_ne_bytes(buf);
                self.doorbells += n;
                Ok(n)
            }
            Ok(_) => Ok(0),
            Err(Errno::EAGAIN) => Ok(0),
            Err(e) => Err(TcmuError::Doorbell(e.into())),
        }
    }

    /// If the device rang since the last call, reaps completions like
    /// `tcmu_handle_completions` and hands each to `f`; data blocks are freed
    /// after `f` returns. Returns the number of commands completed (0 if the
    /// device did not ring, even if it moved `cmd_tail`).
    pub fn reap(&mut self, f: impl FnMut(&SimCompletion<'_>)) -> Result<usize, SimError> {
        if let Some(fault) = self.fault {
            return Err(fault.into());
        }
        // Nothing can be reaped while the tail has not moved, so skip the
        // eventfd read (a syscall) then. Kicks accumulate in the eventfd and
        // are counted by the read that follows the next tail move; the device
        // stores the tail before it rings, so a kick is never missed. This
        // keeps the kernel's rule: completions are reaped only after a kick.
        if self.region.load_cmd_tail() == self.last_cleaned {
            return Ok(0);
        }
        if self.take_kicks()? == 0 {
            return Ok(0);
        }
        self.handle_completions(f)
    }

    /// Reaps whether or not the device rang (like the kernel's other callers
    /// of `tcmu_handle_completions`: `block_dev` and the unmap worker).
    pub fn force_reap(&mut self, f: impl FnMut(&SimCompletion<'_>)) -> Result<usize, SimError> {
        if let Some(fault) = self.fault {
            return Err(fault.into());
        }
        self.take_kicks()?;
        self.handle_completions(f)
    }

    fn broken(&mut self, fault: RingFault) -> SimError {
        self.fault = Some(fault);
        fault.into()
    }

    fn handle_completions(
        &mut self,
        mut f: impl FnMut(&SimCompletion<'_>),
    ) -> Result<usize, SimError> {
        let tail = self.region.load_cmd_tail();
        if tail >= self.config.cmdr_size || !tail.is_multiple_of(8) {
            return Err(self.broken(RingFault::TailOutOfRange { tail }));
        }
        // How many recorded entries the tail passed; it must land exactly on
        // a boundary.
        let mut passed = 0usize;
        let mut pos = self.last_cleaned;
        while pos != tail {
            let Some(rec) = self.records.get(passed) else {
                return Err(self.broken(RingFault::TailNotOnBoundary { tail }));
            };
            pos = self.advance(rec.offset, tcmu_hdr_get_len(rec.len_op));
            passed += 1;
        }
        let mut completed = 0;
        for _ in 0..passed {
            let Some(rec) = self.records.front().copied() else {
                break;
            };
            let abs = CMDR_OFF as usize + rec.offset as usize;
            let len_op = self.region.read_u32(abs + HDR_LEN_OP).unwrap_or(0);
            if len_op != rec.len_op {
                return Err(self.broken(RingFault::EntryHeaderChanged { offset: rec.offset }));
            }
            let uflags = self.region.read_u8(abs + HDR_UFLAGS).unwrap_or(0);
            match tcmu_hdr_get_op(len_op) {
                TCMU_OP_PAD | TCMU_OP_TMR => {}
                TCMU_OP_CMD => {
                    self.complete_entry(abs, uflags, &mut f)?;
                    completed += 1;
                }
                _ => {
                    if uflags & TCMU_UFLAG_UNKNOWN_OP == 0 {
                        return Err(
                            self.broken(RingFault::UnknownOpNotFlagged { offset: rec.offset })
                        );
                    }
                }
            }
            self.records.pop_front();
            self.last_cleaned = self.advance(rec.offset, tcmu_hdr_get_len(len_op));
        }
        Ok(completed)
    }

    /// `tcmu_handle_completion` for the CMD entry at `abs`.
    fn complete_entry(
        &mut self,
        abs: usize,
        uflags: u8,
        f: &mut impl FnMut(&SimCompletion<'_>),
    ) -> Result<(), SimError> {
        let cmd_id = self.region.read_u16(abs + HDR_CMD_ID).unwrap_or(0);
        let cmd = &self.cmds[usize::from(cmd_id)];
        if cmd.kept {
            return Err(self.broken(RingFault::KeepBufCompletedTwice { cmd_id }));
        }
        if cmd_id == 0 || !cmd.in_flight {
            return Err(self.broken(RingFault::UnknownCmdId { cmd_id }));
        }
        let (status, sense_len, data_in_len) = if uflags & TCMU_UFLAG_UNKNOWN_OP != 0 {
            // The kernel answers UNKNOWN_OP entries with INVALID COMMAND
            // OPERATION CODE in fixed format.
            let r = ScsiError::InvalidCommandOperationCode.to_response(SenseFormat::Fixed);
            self.sense.copy_from_slice(&r.sense);
            (status::CHECK_CONDITION, TCMU_SENSE_BUFFERSIZE, 0)
        } else {
            let scsi_status = self.region.read_u8(abs + RSP_SCSI_STATUS).unwrap_or(0);
            let read_len = self.region.read_u32(abs + RSP_READ_LEN).unwrap_or(0) as usize;
            // A kernel without CAP_READ_LEN has `__pad3` here and ignores it.
            let read_len_valid = self.config.flags & TCMU_MAILBOX_FLAG_CAP_READ_LEN != 0
                && cmd.dir == Direction::In
                && uflags & TCMU_UFLAG_READ_LEN != 0
                && read_len != 0;
            let mut data_in = if cmd.dir == Direction::In {
                cmd.data_len
            } else {
                0
            };
            if read_len_valid {
                data_in = data_in.min(read_len);
            }
            if scsi_status == status::CHECK_CONDITION {
                let _ = self.region.read_bytes(abs + RSP_SENSE, &mut self.sense);
                if !read_len_valid {
                    data_in = 0; // no gather_data_area
                }
                (scsi_status, TCMU_SENSE_BUFFERSIZE, data_in)
            } else {
                (scsi_status, 0, data_in)
            }
        };
        let keep_buf = uflags & TCMU_UFLAG_KEEP_BUF != 0;
        let cmd = &self.cmds[usize::from(cmd_id)];
        f(&SimCompletion {
            tag: cmd.tag,
            cmd_id,
            status,
            sense: &self.sense[..sense_len],
            data_in_len,
            region: &self.region,
            blocks: &cmd.blocks,
            data_off: self.data_off,
            block_size: self.config.data_block_size as usize,
        });
        self.in_flight -= 1;
        let cmd = &mut self.cmds[usize::from(cmd_id)];
        cmd.in_flight = false;
        if keep_buf {
            cmd.kept = true;
        } else {
            self.release_blocks(Some(cmd_id));
            self.ids.free(u32::from(cmd_id));
        }
        Ok(())
    }
}
