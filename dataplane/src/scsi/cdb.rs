//! CDB decoding and validation.
//!
//! [`decode`] turns CDB bytes into a [`Command`] or the [`ScsiError`] to
//! report, checking everything that can be checked from the CDB and the
//! unit's description alone, in this order:
//! 1. the CDB: at most 16 bytes, a supported operation code (and service
//!    action), at least as long as the operation code's CDB, NACA clear;
//! 2. field values: **reserved bits are ignored, unsupported features are
//!    rejected** (RDPROTECT/WRPROTECT/VRPROTECT other than 0, ANCHOR, PBDATA,
//!    LBDATA, BYTCHK 10b, EVPD pages we lack, LOEJ, power conditions, ...)
//!    with INVALID FIELD IN CDB pointing at the field;
//! 3. limits (MAXIMUM TRANSFER LENGTH, MAXIMUM WRITE SAME LENGTH, MAXIMUM
//!    COMPARE AND WRITE LENGTH), also INVALID FIELD IN CDB;
//! 4. the LBA range (LOGICAL BLOCK ADDRESS OUT OF RANGE);
//! 5. write protection (DATA PROTECT, WRITE PROTECTED).
//!
//! DPO is decoded and needs nothing: the unit keeps no cache above its
//! bdev, so every block already has the lowest retention priority (see
//! [`Command::Read`]).
//!
//! Ignored bits: RARC, FUA_NV and other obsolete bits, GROUP NUMBER,
//! IMMED of SYNCHRONIZE CACHE and START STOP UNIT, NO_FLUSH, the PREVENT
//! field, PMI and the obsolete LBA of READ CAPACITY, the LINK bit, and every
//! reserved bit. The CDB usage data in [`super::opcodes::SUPPORTED`] reports
//! exactly the bits this module evaluates.

use super::opcodes::{self, has_service_actions, lookup};
use super::sense::{FieldPointer, ScsiError};
use super::unit::UnitInfo;
use super::{inquiry, mode};

pub use super::command::{data_out_len, ByteCheck, Command, PageControl};

/// Largest CDB accepted.
pub const MAX_CDB_LEN: usize = 16;

/// Where the field that sets the data transfer length of `opcode` lies (for
/// INVALID FIELD IN CDB when the data buffer does not match it), if the
/// command has one.
pub fn transfer_length_field(opcode: u8) -> Option<FieldPointer> {
    let byte = match opcode {
        opcodes::READ_6 | opcodes::WRITE_6 | opcodes::MODE_SELECT_6 => 4,
        opcodes::READ_10
        | opcodes::WRITE_10
        | opcodes::WRITE_AND_VERIFY_10
        | opcodes::VERIFY_10
        | opcodes::UNMAP
        | opcodes::MODE_SELECT_10 => 7,
        opcodes::READ_12 | opcodes::WRITE_12 => 6,
        opcodes::READ_16
        | opcodes::WRITE_16
        | opcodes::WRITE_AND_VERIFY_16
        | opcodes::VERIFY_16 => 10,
        opcodes::COMPARE_AND_WRITE => 13,
        _ => return None,
    };
    Some(FieldPointer::byte(byte))
}

/// Checks the data-out buffer (`buf_len` bytes) given with `command`, whose
/// operation code is `opcode`, against what the CDB transfers
/// ([`data_out_len`]):
/// - shorter: INVALID FIELD IN CDB on the transfer length field, for every
///   command (nothing may be written from data that never arrived);
/// - longer: accepted and used from its start (the transport reports the
///   residual), except for COMPARE AND WRITE.
///
/// COMPARE AND WRITE (SBC-4 5.3) takes a Data-Out Buffer of two instances
/// of NUMBER OF LOGICAL BLOCKS blocks each, the verify instance and then
/// the write instance: the CDB's length is what splits them, so a buffer
/// of any other length means the initiator and the unit disagree on where
/// the write instance starts, and writing would store data the initiator
/// did not mean for those blocks. It fails with INVALID FIELD IN CDB on
/// NUMBER OF LOGICAL BLOCKS, the field the buffer disagrees with (LIO's
/// own SBC emulation likewise refuses every write whose data length
/// differs from its CDB). This includes a NUMBER OF LOGICAL BLOCKS of 0
/// with data (an initiator that put 256 into the 8-bit field sends that);
/// 0 blocks with no data is no error.
pub fn check_data_out(
    opcode: u8,
    command: &Command,
    block_size: u32,
    buf_len: u64,
) -> Result<(), ScsiError> {
    let needed = data_out_len(command, block_size);
    let exact = matches!(command, Command::CompareAndWrite { .. });
    if buf_len < needed || (exact && buf_len != needed) {
        return Err(ScsiError::InvalidFieldInCdb(transfer_length_field(opcode)));
    }
    Ok(())
}

fn be16(cdb: &[u8], at: usize) -> u32 {
    u32::from(u16::from_be_bytes([cdb[at], cdb[at + 1]]))
}

fn be32(cdb: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([cdb[at], cdb[at + 1], cdb[at + 2], cdb[at + 3]])
}

fn be64(cdb: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&cdb[at..at + 8]);
    u64::from_be_bytes(bytes)
}

/// Rejects a non-zero RDPROTECT/WRPROTECT/VRPROTECT (byte 1, bits 7-5): the
/// unit has no protection information.
fn no_protection(cdb: &[u8]) -> Result<(), ScsiError> {
    if cdb[1] & 0xE0 != 0 {
        return Err(ScsiError::cdb_bit(1, 7));
    }
    Ok(())
}

fn check_transfer(unit: &UnitInfo, blocks: u32, length_byte: u16) -> Result<(), ScsiError> {
    if blocks > unit.max_transfer_blocks {
        return Err(ScsiError::cdb_byte(length_byte));
    }
    Ok(())
}

fn check_writable(unit: &UnitInfo) -> Result<(), ScsiError> {
    if unit.read_only {
        return Err(ScsiError::WriteProtected);
    }
    Ok(())
}

/// Decodes and validates `cdb` for `unit` (see the module docs for the order
/// of the checks). Never panics, whatever the bytes.
pub fn decode(cdb: &[u8], unit: &UnitInfo) -> Result<Command, ScsiError> {
    if cdb.is_empty() || cdb.len() > MAX_CDB_LEN {
        return Err(ScsiError::InvalidCommandOperationCode);
    }
    let opcode = cdb[0];
    let service_action = if has_service_actions(opcode) {
        let Some(&byte1) = cdb.get(1) else {
            return Err(ScsiError::InvalidFieldInCdb(None));
        };
        Some(u16::from(byte1 & 0x1F))
    } else {
        None
    };
    let Some(info) = lookup(opcode, service_action, unit.unmap) else {
        if service_action.is_some() {
            // Both operation codes with service actions are supported, for
            // one service action each: point at the SERVICE ACTION field.
            return Err(ScsiError::cdb_bit(1, 4));
        }
        return Err(ScsiError::InvalidCommandOperationCode);
    };
    let len = info.cdb_len();
    if cdb.len() < len {
        return Err(ScsiError::InvalidFieldInCdb(None));
    }
    let cdb = &cdb[..len];
    if cdb[len - 1] & 0x04 != 0 {
        // NACA = 1 but NormACA = 0.
        return Err(ScsiError::cdb_bit((len - 1) as u16, 2));
    }
    decode_fields(cdb, opcode, unit)
}

fn decode_fields(cdb: &[u8], opcode: u8, unit: &UnitInfo) -> Result<Command, ScsiError> {
    use opcodes::*;
    let command = match opcode {
        TEST_UNIT_READY => Command::TestUnitReady,
        REQUEST_SENSE => Command::RequestSense {
            descriptor: cdb[1] & 0x01 != 0,
            alloc_len: u32::from(cdb[4]),
        },
        INQUIRY => {
            if cdb[1] & 0x02 != 0 {
                return Err(ScsiError::cdb_bit(1, 1)); // CMDDT
            }
            let evpd = cdb[1] & 0x01 != 0;
            let page = cdb[2];
            if (!evpd && page != 0) || (evpd && !inquiry::VPD_PAGES.contains(&page)) {
                return Err(ScsiError::cdb_byte(2));
            }
            Command::Inquiry {
                evpd,
                page,
                alloc_len: be16(cdb, 3),
            }
        }
        MODE_SENSE_6 | MODE_SENSE_10 => {
            let ten = opcode == MODE_SENSE_10;
            let page = cdb[2] & 0x3F;
            let subpage = cdb[3];
            if !mode::PAGES.contains(&page) {
                return Err(ScsiError::cdb_bit(2, 5));
            }
            if subpage != 0x00 && subpage != 0xFF {
                return Err(ScsiError::cdb_byte(3));
            }
            let pc = match cdb[2] >> 6 {
                0 => PageControl::Current,
                1 => PageControl::Changeable,
                2 => PageControl::Default,
                _ => return Err(ScsiError::SavingParametersNotSupported),
            };
            Command::ModeSense {
                ten,
                dbd: cdb[1] & 0x08 != 0,
                llbaa: ten && cdb[1] & 0x10 != 0,
                pc,
                page,
                subpage,
                alloc_len: if ten { be16(cdb, 7) } else { u32::from(cdb[4]) },
            }
        }
        MODE_SELECT_6 | MODE_SELECT_10 => {
            if cdb[1] & 0x10 == 0 {
                return Err(ScsiError::cdb_bit(1, 4)); // PF must be 1
            }
            if cdb[1] & 0x01 != 0 {
                return Err(ScsiError::cdb_bit(1, 0)); // SP: no saved pages
            }
            let ten = opcode == MODE_SELECT_10;
            Command::ModeSelect {
                ten,
                param_len: if ten { be16(cdb, 7) } else { u32::from(cdb[4]) },
            }
        }
        START_STOP_UNIT => {
            if cdb[4] & 0xF0 != 0 {
                return Err(ScsiError::cdb_bit(4, 7)); // POWER CONDITION
            }
            if cdb[4] & 0x02 != 0 {
                return Err(ScsiError::cdb_bit(4, 1)); // LOEJ: nothing to load or eject
            }
            Command::StartStopUnit {
                start: cdb[4] & 0x01 != 0,
            }
        }
        PREVENT_ALLOW_MEDIUM_REMOVAL => Command::PreventAllowMediumRemoval,
        READ_CAPACITY_10 => Command::ReadCapacity10,
        SERVICE_ACTION_IN_16 if u16::from(cdb[1] & 0x1F) == SA_GET_LBA_STATUS => {
            let lba = be64(cdb, 2);
            unit.check_range(lba, 1)?;
            Command::GetLbaStatus {
                lba,
                alloc_len: be32(cdb, 10),
            }
        }
        SERVICE_ACTION_IN_16 => Command::ReadCapacity16 {
            alloc_len: be32(cdb, 10),
        },
        MAINTENANCE_IN => {
            let options = cdb[2] & 0x07;
            if options > 3 {
                return Err(ScsiError::cdb_bit(2, 2));
            }
            let requested = cdb[3];
            // 001b: the operation code must not have service actions; 010b:
            // it must have them.
            if (options == 1 && has_service_actions(requested))
                || (options == 2 && !has_service_actions(requested))
            {
                return Err(ScsiError::cdb_bit(2, 2));
            }
            Command::ReportSupportedOperationCodes {
                rctd: cdb[2] & 0x80 != 0,
                options,
                opcode: requested,
                service_action: be16(cdb, 4) as u16,
                alloc_len: be32(cdb, 6),
            }
        }
        READ_6 | WRITE_6 => {
            let lba = u64::from(be32(cdb, 0) & 0x001F_FFFF);
            let blocks = match cdb[4] {
                0 => 256,
                n => u32::from(n),
            };
            check_transfer(unit, blocks, 4)?;
            unit.check_range(lba, u64::from(blocks))?;
            if opcode == READ_6 {
                Command::Read {
                    lba,
                    blocks,
                    fua: false,
                    dpo: false,
                }
            } else {
                check_writable(unit)?;
                Command::Write {
                    lba,
                    blocks,
                    fua: false,
                    dpo: false,
                }
            }
        }
        READ_10 | WRITE_10 | READ_12 | WRITE_12 | READ_16 | WRITE_16 => {
            no_protection(cdb)?;
            let fua = cdb[1] & 0x08 != 0;
            let dpo = cdb[1] & 0x10 != 0;
            let (lba, blocks, length_byte) = match opcode {
                READ_10 | WRITE_10 => (u64::from(be32(cdb, 2)), be16(cdb, 7), 7),
                READ_12 | WRITE_12 => (u64::from(be32(cdb, 2)), be32(cdb, 6), 6),
                _ => (be64(cdb, 2), be32(cdb, 10), 10),
            };
            check_transfer(unit, blocks, length_byte)?;
            unit.check_range(lba, u64::from(blocks))?;
            if matches!(opcode, READ_10 | READ_12 | READ_16) {
                Command::Read {
                    lba,
                    blocks,
                    fua,
                    dpo,
                }
            } else {
                check_writable(unit)?;
                Command::Write {
                    lba,
                    blocks,
                    fua,
                    dpo,
                }
            }
        }
        WRITE_AND_VERIFY_10 | WRITE_AND_VERIFY_16 | VERIFY_10 | VERIFY_16 => {
            no_protection(cdb)?;
            let bytchk = (cdb[1] >> 1) & 0x03;
            let dpo = cdb[1] & 0x10 != 0;
            let verify = matches!(opcode, VERIFY_10 | VERIFY_16);
            let byte_check = match bytchk {
                0 => ByteCheck::None,
                1 => ByteCheck::Bytes,
                3 if verify => ByteCheck::SameBlock,
                _ => return Err(ScsiError::cdb_bit(1, 2)),
            };
            let (lba, blocks, length_byte) = match opcode {
                WRITE_AND_VERIFY_10 | VERIFY_10 => (u64::from(be32(cdb, 2)), be16(cdb, 7), 7),
                _ => (be64(cdb, 2), be32(cdb, 10), 10),
            };
            check_transfer(unit, blocks, length_byte)?;
            unit.check_range(lba, u64::from(blocks))?;
            if verify {
                Command::Verify {
                    lba,
                    blocks,
                    byte_check,
                    dpo,
                }
            } else {
                check_writable(unit)?;
                Command::WriteAndVerify {
                    lba,
                    blocks,
                    byte_check: byte_check == ByteCheck::Bytes,
                    dpo,
                }
            }
        }
        SYNCHRONIZE_CACHE_10 | SYNCHRONIZE_CACHE_16 => {
            let (lba, blocks) = if opcode == SYNCHRONIZE_CACHE_10 {
                (u64::from(be32(cdb, 2)), be16(cdb, 7))
            } else {
                (be64(cdb, 2), be32(cdb, 10))
            };
            unit.check_range(lba, u64::from(blocks))?;
            Command::SynchronizeCache { lba, blocks }
        }
        WRITE_SAME_10 | WRITE_SAME_16 => {
            no_protection(cdb)?;
            if cdb[1] & 0x10 != 0 {
                return Err(ScsiError::cdb_bit(1, 4)); // ANCHOR: ANC_SUP = 0
            }
            if cdb[1] & 0x04 != 0 {
                return Err(ScsiError::cdb_bit(1, 2)); // PBDATA
            }
            if cdb[1] & 0x02 != 0 {
                return Err(ScsiError::cdb_bit(1, 1)); // LBDATA
            }
            let unmap = cdb[1] & 0x08 != 0;
            let (lba, blocks, length_byte, ndob) = if opcode == WRITE_SAME_10 {
                (u64::from(be32(cdb, 2)), be16(cdb, 7), 7, false)
            } else {
                (be64(cdb, 2), be32(cdb, 10), 10, cdb[1] & 0x01 != 0)
            };
            // WSNZ = 1: zero blocks is not "to the end of the medium".
            if blocks == 0 || blocks > unit.max_write_same_blocks {
                return Err(ScsiError::cdb_byte(length_byte));
            }
            unit.check_range(lba, u64::from(blocks))?;
            check_writable(unit)?;
            Command::WriteSame {
                lba,
                blocks,
                unmap,
                ndob,
            }
        }
        UNMAP => {
            if cdb[1] & 0x01 != 0 {
                return Err(ScsiError::cdb_bit(1, 0)); // ANCHOR: ANC_SUP = 0
            }
            check_writable(unit)?;
            Command::Unmap {
                param_len: be16(cdb, 7),
            }
        }
        COMPARE_AND_WRITE => {
            no_protection(cdb)?;
            let blocks = u32::from(cdb[13]);
            if blocks > u32::from(unit.max_compare_write_blocks) {
                return Err(ScsiError::cdb_byte(13));
            }
            let lba = be64(cdb, 2);
            unit.check_range(lba, u64::from(blocks))?;
            check_writable(unit)?;
            Command::CompareAndWrite {
                lba,
                blocks,
                fua: cdb[1] & 0x08 != 0,
                dpo: cdb[1] & 0x10 != 0,
            }
        }
        // `lookup` only returns operation codes handled above.
        _ => return Err(ScsiError::InvalidCommandOperationCode),
    };
    Ok(command)
}

#[cfg(test)]
mod tests;
