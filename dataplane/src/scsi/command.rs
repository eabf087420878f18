//! The decoded form of a CDB: [`Command`] and its field types.
//!
//! The decoder ([`super::cdb`]) produces these values; the emulation
//! ([`super::emulation`], [`super::mode`], ...) and the logical unit consume
//! them. This module depends on nothing else in `scsi`, so every other part
//! can depend on it.

/// BYTCHK of VERIFY and WRITE AND VERIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteCheck {
    /// 00b: medium verification only, no data-out.
    None,
    /// 01b: compare the data-out buffer (one block per LBA) with the medium.
    Bytes,
    /// 11b (VERIFY only): the data-out buffer holds one block, compared with
    /// every block of the range.
    SameBlock,
}

/// PC field of MODE SENSE (saved values are rejected while decoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageControl {
    /// 00b: current values.
    Current,
    /// 01b: changeable values (a mask).
    Changeable,
    /// 10b: default values.
    Default,
}

/// A decoded, validated command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// TEST UNIT READY.
    TestUnitReady,
    /// REQUEST SENSE.
    RequestSense {
        /// DESC: descriptor format requested.
        descriptor: bool,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// INQUIRY.
    Inquiry {
        /// EVPD.
        evpd: bool,
        /// PAGE CODE (0 when `evpd` is false).
        page: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// MODE SENSE (6) or (10).
    ModeSense {
        /// MODE SENSE (10): 8-byte header.
        ten: bool,
        /// DBD: no block descriptor.
        dbd: bool,
        /// LLBAA (10 only): long LBA block descriptor.
        llbaa: bool,
        /// PC.
        pc: PageControl,
        /// PAGE CODE: 08h, 0Ah or 3Fh.
        page: u8,
        /// SUBPAGE CODE: 00h or FFh.
        subpage: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// MODE SELECT (6) or (10), PF = 1, SP = 0.
    ModeSelect {
        /// MODE SELECT (10): 8-byte header.
        ten: bool,
        /// PARAMETER LIST LENGTH.
        param_len: u32,
    },
    /// START STOP UNIT with POWER CONDITION 0 and LOEJ 0.
    StartStopUnit {
        /// START.
        start: bool,
    },
    /// PREVENT ALLOW MEDIUM REMOVAL.
    PreventAllowMediumRemoval,
    /// READ CAPACITY (10).
    ReadCapacity10,
    /// READ CAPACITY (16).
    ReadCapacity16 {
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// GET LBA STATUS (16); REPORT TYPE is not evaluated.
    GetLbaStatus {
        /// STARTING LOGICAL BLOCK ADDRESS (within the medium).
        lba: u64,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// REPORT SUPPORTED OPERATION CODES.
    ReportSupportedOperationCodes {
        /// RCTD: include command timeouts descriptors.
        rctd: bool,
        /// REPORTING OPTIONS (0..=3).
        options: u8,
        /// REQUESTED OPERATION CODE.
        opcode: u8,
        /// REQUESTED SERVICE ACTION.
        service_action: u16,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// READ (6/10/12/16).
    Read {
        /// First LBA.
        lba: u64,
        /// Blocks (READ (6) with 0 in the CDB reads 256).
        blocks: u32,
        /// FUA.
        fua: bool,
        /// DPO (SBC-4, READ (10)): the blocks get the lowest retention priority
        /// in a cache. The unit keeps no cache above its bdev, so no block
        /// is ever retained longer than that: honoured by doing nothing.
        dpo: bool,
    },
    /// WRITE (6/10/12/16).
    Write {
        /// First LBA.
        lba: u64,
        /// Blocks.
        blocks: u32,
        /// FUA.
        fua: bool,
        /// DPO (SBC-4, READ (10)): the blocks get the lowest retention priority
        /// in a cache. The unit keeps no cache above its bdev, so no block
        /// is ever retained longer than that: honoured by doing nothing.
        dpo: bool,
    },
    /// WRITE AND VERIFY (10/16).
    WriteAndVerify {
        /// First LBA.
        lba: u64,
        /// Blocks.
        blocks: u32,
        /// BYTCHK = 01b: compare what was written with the data-out buffer.
        byte_check: bool,
        /// DPO (SBC-4, READ (10)): the blocks get the lowest retention priority
        /// in a cache. The unit keeps no cache above its bdev, so no block
        /// is ever retained longer than that: honoured by doing nothing.
        dpo: bool,
    },
    /// VERIFY (10/16).
    Verify {
        /// First LBA.
        lba: u64,
        /// VERIFICATION LENGTH in blocks.
        blocks: u32,
        /// BYTCHK.
        byte_check: ByteCheck,
        /// DPO (SBC-4, READ (10)): the blocks get the lowest retention priority
        /// in a cache. The unit keeps no cache above its bdev, so no block
        /// is ever retained longer than that: honoured by doing nothing.
        dpo: bool,
    },
    /// SYNCHRONIZE CACHE (10/16).
    SynchronizeCache {
        /// First LBA.
        lba: u64,
        /// Blocks; 0 = to the last block.
        blocks: u32,
    },
    /// WRITE SAME (10/16).
    WriteSame {
        /// First LBA.
        lba: u64,
        /// Blocks (1..=MAXIMUM WRITE SAME LENGTH).
        blocks: u32,
        /// UNMAP: deallocate if possible.
        unmap: bool,
        /// NDOB (16 only): no data-out buffer, the block is all zeroes.
        ndob: bool,
    },
    /// UNMAP.
    Unmap {
        /// PARAMETER LIST LENGTH.
        param_len: u32,
    },
    /// COMPARE AND WRITE.
    CompareAndWrite {
        /// First LBA.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS.
        blocks: u32,
        /// FUA (of the write).
        fua: bool,
        /// DPO (SBC-4, READ (10)): the blocks get the lowest retention priority
        /// in a cache. The unit keeps no cache above its bdev, so no block
        /// is ever retained longer than that: honoured by doing nothing.
        dpo: bool,
    },
}

/// Data-out bytes a command needs from the data buffer, for a unit with
/// `block_size`-byte blocks.
pub fn data_out_len(command: &Command, block_size: u32) -> u64 {
    let bs = u64::from(block_size);
    match *command {
        Command::Write { blocks, .. } | Command::WriteAndVerify { blocks, .. } => {
            u64::from(blocks) * bs
        }
        Command::Verify {
            blocks, byte_check, ..
        } => match byte_check {
            ByteCheck::None => 0,
            ByteCheck::Bytes => u64::from(blocks) * bs,
            ByteCheck::SameBlock if blocks == 0 => 0,
            ByteCheck::SameBlock => bs,
        },
        Command::WriteSame { ndob, .. } => {
            if ndob {
                0
            } else {
                bs
            }
        }
        Command::CompareAndWrite { blocks, .. } => 2 * u64::from(blocks) * bs,
        Command::Unmap { param_len } | Command::ModeSelect { param_len, .. } => {
            u64::from(param_len)
        }
        _ => 0,
    }
}

impl Command {
    /// Whether the command is answered by [`emulate`](super::emulate) (no
    /// bdev I/O).
    pub fn is_emulated(&self) -> bool {
        matches!(
            self,
            Command::TestUnitReady
                | Command::RequestSense { .. }
                | Command::Inquiry { .. }
                | Command::ModeSense { .. }
                | Command::ModeSelect { .. }
                | Command::StartStopUnit { .. }
                | Command::PreventAllowMediumRemoval
                | Command::ReadCapacity10
                | Command::ReadCapacity16 { .. }
                | Command::GetLbaStatus { .. }
                | Command::ReportSupportedOperationCodes { .. }
        )
    }
}
