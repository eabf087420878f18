//! GET LBA STATUS (16) parameter data (SBC-4 5.8).
//!
//! A unit with LBPME = 1 must support GET LBA STATUS (SBC-4 4.7.3.1). The
//! bdev contract says nothing about which blocks are mapped (a RAM or file
//! bdev could know, a block device cannot tell), so the unit answers what
//! is true for every bdev: one LBA status descriptor from the starting LBA
//! to the end of the medium (as far as the 32-bit NUMBER OF LOGICAL BLOCKS
//! reaches) with PROVISIONING STATUS 0h, "mapped or unknown". That is
//! never wrong, and a block the initiator deallocated still reads as LBPRZ
//! says.
//!
//! REPORT TYPE (added by SBC-4 after the command) is not evaluated; RTP = 0
//! in the response says so, and the descriptor covers every kind of block.

use super::unit::UnitInfo;

/// Length of the parameter data header.
pub const HEADER_LEN: usize = 8;
/// Length of one LBA status descriptor.
pub const DESCRIPTOR_LEN: usize = 16;
/// Length of the parameter data: the header and one descriptor.
pub const LBA_STATUS_LEN: usize = HEADER_LEN + DESCRIPTOR_LEN;

/// PROVISIONING STATUS 0h: mapped or unknown.
const MAPPED_OR_UNKNOWN: u8 = 0x0;
/// COMPLETION CONDITION 011b (byte 7, bits 3-1): the descriptors reach the
/// capacity of the medium.
const COMPLETED_AT_CAPACITY: u8 = 0x3 << 1;

/// Writes the GET LBA STATUS parameter data for `lba` (the decoder checked
/// it is inside the medium) into `out`; returns its length (before the
/// allocation length cuts it).
pub fn get_lba_status(unit: &UnitInfo, lba: u64, out: &mut [u8]) -> usize {
    let data = &mut out[..LBA_STATUS_LEN];
    data.fill(0);
    // PARAMETER DATA LENGTH: the bytes after the field itself.
    data[0..4].copy_from_slice(&((LBA_STATUS_LEN - 4) as u32).to_be_bytes());
    let rest = unit.num_blocks.saturating_sub(lba);
    let blocks = u32::try_from(rest).unwrap_or(u32::MAX);
    if u64::from(blocks) == rest {
        data[7] = COMPLETED_AT_CAPACITY; // RTP = 0
    }
    let descriptor = &mut data[HEADER_LEN..];
    descriptor[0..8].copy_from_slice(&lba.to_be_bytes());
    descriptor[8..12].copy_from_slice(&blocks.to_be_bytes());
    descriptor[12] = MAPPED_OR_UNKNOWN;
    LBA_STATUS_LEN
}
