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
//! Ignored bits: DPO, RARC, FUA_NV and other obsolete bits, GROUP NUMBER,
//! IMMED of SYNCHRONIZE CACHE and START STOP UNIT, NO_FLUSH, the PREVENT
//! field, PMI and the obsolete LBA of READ CAPACITY, the LINK bit, and every
//! reserved bit. The CDB usage data in [`super::opcodes::SUPPORTED`] reports
//! exactly the bits this module evaluates.

use super::opcodes::{self, has_service_actions, lookup};
use super::sense::{FieldPointer, ScsiError};
use super::unit::UnitInfo;

/// Largest CDB accepted.
pub const MAX_CDB_LEN: usize = 16;

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
    },
    /// WRITE (6/10/12/16).
    Write {
        /// First LBA.
        lba: u64,
        /// Blocks.
        blocks: u32,
        /// FUA.
        fua: bool,
    },
    /// WRITE AND VERIFY (10/16).
    WriteAndVerify {
        /// First LBA.
        lba: u64,
        /// Blocks.
        blocks: u32,
        /// BYTCHK = 01b: compare what was written with the data-out buffer.
        byte_check: bool,
    },
    /// VERIFY (10/16).
    Verify {
        /// First LBA.
        lba: u64,
        /// VERIFICATION LENGTH in blocks.
        blocks: u32,
        /// BYTCHK.
        byte_check: ByteCheck,
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
            if (!evpd && page != 0) || (evpd && !super::inquiry::VPD_PAGES.contains(&page)) {
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
            if !super::mode::PAGES.contains(&page) {
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
                }
            } else {
                check_writable(unit)?;
                Command::Write {
                    lba,
                    blocks,
                    fua: false,
                }
            }
        }
        READ_10 | WRITE_10 | READ_12 | WRITE_12 | READ_16 | WRITE_16 => {
            no_protection(cdb)?;
            let fua = cdb[1] & 0x08 != 0;
            let (lba, blocks, length_byte) = match opcode {
                READ_10 | WRITE_10 => (u64::from(be32(cdb, 2)), be16(cdb, 7), 7),
                READ_12 | WRITE_12 => (u64::from(be32(cdb, 2)), be32(cdb, 6), 6),
                _ => (be64(cdb, 2), be32(cdb, 10), 10),
            };
            check_transfer(unit, blocks, length_byte)?;
            unit.check_range(lba, u64::from(blocks))?;
            if matches!(opcode, READ_10 | READ_12 | READ_16) {
                Command::Read { lba, blocks, fua }
            } else {
                check_writable(unit)?;
                Command::Write { lba, blocks, fua }
            }
        }
        WRITE_AND_VERIFY_10 | WRITE_AND_VERIFY_16 | VERIFY_10 | VERIFY_16 => {
            no_protection(cdb)?;
            let bytchk = (cdb[1] >> 1) & 0x03;
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
                }
            } else {
                check_writable(unit)?;
                Command::WriteAndVerify {
                    lba,
                    blocks,
                    byte_check: byte_check == ByteCheck::Bytes,
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
            }
        }
        // `lookup` only returns operation codes handled above.
        _ => return Err(ScsiError::InvalidCommandOperationCode),
    };
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::super::test_unit;
    use super::*;

    fn dec(cdb: &[u8]) -> Result<Command, ScsiError> {
        decode(cdb, &test_unit())
    }

    #[test]
    fn read_write_6() {
        assert_eq!(
            dec(&[0x08, 0x01, 0x02, 0x03, 0x00, 0x00]),
            Ok(Command::Read {
                lba: 0x010203,
                blocks: 256,
                fua: false
            })
        );
        // Bits 7-5 of byte 1 are reserved and ignored.
        assert_eq!(
            dec(&[0x0A, 0xE0, 0x00, 0x10, 0x08, 0x00]),
            Ok(Command::Write {
                lba: 0x10,
                blocks: 8,
                fua: false
            })
        );
    }

    #[test]
    fn read_write_10_12_16_fields() {
        assert_eq!(
            dec(&[0x28, 0x08, 0, 0, 0x01, 0x00, 0, 0, 0x10, 0]),
            Ok(Command::Read {
                lba: 0x100,
                blocks: 16,
                fua: true
            })
        );
        assert_eq!(
            dec(&[0xAA, 0x10, 0, 0, 0, 0x20, 0, 0, 0, 0x04, 0, 0]),
            Ok(Command::Write {
                lba: 0x20,
                blocks: 4,
                fua: false
            })
        );
        let mut cdb = [0u8; 16];
        cdb[0] = 0x8A;
        cdb[1] = 0x08;
        cdb[9] = 0x30;
        cdb[13] = 0x02;
        assert_eq!(
            dec(&cdb),
            Ok(Command::Write {
                lba: 0x30,
                blocks: 2,
                fua: true
            })
        );
        // Zero-length transfers are valid.
        assert_eq!(
            dec(&[0x28, 0, 0, 0, 0, 5, 0, 0, 0, 0]),
            Ok(Command::Read {
                lba: 5,
                blocks: 0,
                fua: false
            })
        );
    }

    #[test]
    fn protection_and_limits() {
        assert_eq!(
            dec(&[0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0]),
            Err(ScsiError::cdb_bit(1, 7))
        );
        let unit = test_unit();
        let too_many = (unit.max_transfer_blocks + 1) as u16;
        let [hi, lo] = too_many.to_be_bytes();
        assert_eq!(
            dec(&[0x28, 0, 0, 0, 0, 0, 0, hi, lo, 0]),
            Err(ScsiError::cdb_byte(7))
        );
        let mut cdb = [0u8; 12];
        cdb[0] = 0xA8;
        cdb[6..10].copy_from_slice(&(unit.max_transfer_blocks + 1).to_be_bytes());
        assert_eq!(dec(&cdb), Err(ScsiError::cdb_byte(6)));
    }

    #[test]
    fn lba_range() {
        let unit = test_unit();
        let last = unit.num_blocks - 1;
        let mut cdb = [0u8; 16];
        cdb[0] = 0x88;
        cdb[2..10].copy_from_slice(&last.to_be_bytes());
        cdb[13] = 1;
        assert!(dec(&cdb).is_ok());
        cdb[13] = 2;
        assert_eq!(dec(&cdb), Err(ScsiError::LbaOutOfRange));
        // Zero blocks at an LBA past the end is still out of range.
        cdb[2..10].copy_from_slice(&unit.num_blocks.to_be_bytes());
        cdb[13] = 0;
        assert_eq!(dec(&cdb), Err(ScsiError::LbaOutOfRange));
        // Overflowing LBA + length.
        cdb[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        cdb[13] = 2;
        assert_eq!(dec(&cdb), Err(ScsiError::LbaOutOfRange));
    }

    #[test]
    fn bad_cdbs() {
        assert_eq!(dec(&[]), Err(ScsiError::InvalidCommandOperationCode));
        assert_eq!(
            dec(&[0x28; 17]),
            Err(ScsiError::InvalidCommandOperationCode)
        );
        assert_eq!(
            dec(&[0xFF, 0, 0, 0, 0, 0]),
            Err(ScsiError::InvalidCommandOperationCode)
        );
        assert_eq!(dec(&[0x28, 0, 0]), Err(ScsiError::InvalidFieldInCdb(None)));
        assert_eq!(dec(&[0x9E]), Err(ScsiError::InvalidFieldInCdb(None)));
        // Unsupported service action of a supported operation code.
        let mut cdb = [0u8; 16];
        cdb[0] = 0x9E;
        cdb[1] = 0x11;
        assert_eq!(dec(&cdb), Err(ScsiError::cdb_bit(1, 4)));
        // NACA.
        assert_eq!(dec(&[0, 0, 0, 0, 0, 0x04]), Err(ScsiError::cdb_bit(5, 2)));
        // LINK is obsolete and ignored; longer CDBs use their prefix.
        assert_eq!(dec(&[0, 0, 0, 0, 0, 0x01]), Ok(Command::TestUnitReady));
        assert_eq!(dec(&[0, 0, 0, 0, 0, 0, 0xFF]), Ok(Command::TestUnitReady));
        // REPORT LUNS is the kernel's.
        assert_eq!(
            dec(&[0xA0; 12]),
            Err(ScsiError::InvalidCommandOperationCode)
        );
    }

    #[test]
    fn verify_and_write_verify_bytchk() {
        let cdb = |op: u8, bytchk: u8| [op, bytchk << 1, 0, 0, 0, 1, 0, 0, 4, 0];
        assert_eq!(
            dec(&cdb(0x2F, 0)),
            Ok(Command::Verify {
                lba: 1,
                blocks: 4,
                byte_check: ByteCheck::None
            })
        );
        assert_eq!(
            dec(&cdb(0x2F, 1)),
            Ok(Command::Verify {
                lba: 1,
                blocks: 4,
                byte_check: ByteCheck::Bytes
            })
        );
        assert_eq!(dec(&cdb(0x2F, 2)), Err(ScsiError::cdb_bit(1, 2)));
        assert_eq!(
            dec(&cdb(0x2F, 3)),
            Ok(Command::Verify {
                lba: 1,
                blocks: 4,
                byte_check: ByteCheck::SameBlock
            })
        );
        assert_eq!(
            dec(&cdb(0x2E, 1)),
            Ok(Command::WriteAndVerify {
                lba: 1,
                blocks: 4,
                byte_check: true
            })
        );
        assert_eq!(dec(&cdb(0x2E, 2)), Err(ScsiError::cdb_bit(1, 2)));
        assert_eq!(dec(&cdb(0x2E, 3)), Err(ScsiError::cdb_bit(1, 2)));
    }

    #[test]
    fn write_same_fields() {
        let ws10 = |b1: u8, blocks: u16| {
            let [hi, lo] = blocks.to_be_bytes();
            [0x41, b1, 0, 0, 0, 8, 0, hi, lo, 0]
        };
        assert_eq!(
            dec(&ws10(0x08, 4)),
            Ok(Command::WriteSame {
                lba: 8,
                blocks: 4,
                unmap: true,
                ndob: false
            })
        );
        assert_eq!(dec(&ws10(0, 0)), Err(ScsiError::cdb_byte(7)));
        assert_eq!(dec(&ws10(0x10, 1)), Err(ScsiError::cdb_bit(1, 4)));
        assert_eq!(dec(&ws10(0x04, 1)), Err(ScsiError::cdb_bit(1, 2)));
        assert_eq!(dec(&ws10(0x02, 1)), Err(ScsiError::cdb_bit(1, 1)));
        // Bit 0 is reserved in WRITE SAME (10).
        assert_eq!(
            dec(&ws10(0x01, 1)),
            Ok(Command::WriteSame {
                lba: 8,
                blocks: 1,
                unmap: false,
                ndob: false
            })
        );
        let mut ws16 = [0u8; 16];
        ws16[0] = 0x93;
        ws16[1] = 0x09;
        ws16[13] = 3;
        assert_eq!(
            dec(&ws16),
            Ok(Command::WriteSame {
                lba: 0,
                blocks: 3,
                unmap: true,
                ndob: true
            })
        );
        let unit = test_unit();
        ws16[10..14].copy_from_slice(&(unit.max_write_same_blocks + 1).to_be_bytes());
        assert_eq!(dec(&ws16), Err(ScsiError::cdb_byte(10)));
    }

    #[test]
    fn write_protect_comes_after_range_checks() {
        let unit = UnitInfo {
            read_only: true,
            ..test_unit()
        };
        assert_eq!(
            decode(&[0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], &unit),
            Err(ScsiError::WriteProtected)
        );
        let mut cdb = [0x2A, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 1, 0];
        assert_eq!(decode(&cdb, &unit), Err(ScsiError::LbaOutOfRange));
        cdb[1] = 0x20;
        assert_eq!(decode(&cdb, &unit), Err(ScsiError::cdb_bit(1, 7)));
        // Reads, verifies and cache flushes are allowed.
        assert!(decode(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &unit).is_ok());
        assert!(decode(&[0x2F, 0, 0, 0, 0, 0, 0, 0, 1, 0], &unit).is_ok());
        assert!(decode(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &unit).is_ok());
        assert_eq!(
            decode(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &unit),
            Err(ScsiError::WriteProtected)
        );
    }

    #[test]
    fn unmap_requires_support() {
        let unit = UnitInfo {
            unmap: false,
            ..test_unit()
        };
        assert_eq!(
            decode(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &unit),
            Err(ScsiError::InvalidCommandOperationCode)
        );
        assert_eq!(
            dec(&[0x42, 1, 0, 0, 0, 0, 0, 0, 24, 0]),
            Err(ScsiError::cdb_bit(1, 0))
        );
    }

    #[test]
    fn compare_and_write_length() {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x89;
        cdb[9] = 2;
        cdb[13] = test_unit().max_compare_write_blocks;
        assert!(dec(&cdb).is_ok());
        cdb[13] += 1;
        assert_eq!(dec(&cdb), Err(ScsiError::cdb_byte(13)));
        cdb[13] = 0;
        assert_eq!(
            dec(&cdb),
            Ok(Command::CompareAndWrite {
                lba: 2,
                blocks: 0,
                fua: false
            })
        );
    }

    #[test]
    fn start_stop_and_mode_select_fields() {
        assert_eq!(
            dec(&[0x1B, 0x01, 0, 0x0F, 0x05, 0]),
            Ok(Command::StartStopUnit { start: true })
        );
        assert_eq!(
            dec(&[0x1B, 0, 0, 0, 0x02, 0]),
            Err(ScsiError::cdb_bit(4, 1))
        );
        assert_eq!(
            dec(&[0x1B, 0, 0, 0, 0x11, 0]),
            Err(ScsiError::cdb_bit(4, 7))
        );
        assert_eq!(
            dec(&[0x15, 0x00, 0, 0, 12, 0]),
            Err(ScsiError::cdb_bit(1, 4))
        );
        assert_eq!(
            dec(&[0x15, 0x11, 0, 0, 12, 0]),
            Err(ScsiError::cdb_bit(1, 0))
        );
        assert_eq!(
            dec(&[0x55, 0x10, 0, 0, 0, 0, 0, 0x01, 0x02, 0]),
            Ok(Command::ModeSelect {
                ten: true,
                param_len: 0x102
            })
        );
    }

    #[test]
    fn mode_sense_fields() {
        assert_eq!(
            dec(&[0x1A, 0x08, 0x3F, 0xFF, 0xC0, 0]),
            Ok(Command::ModeSense {
                ten: false,
                dbd: true,
                llbaa: false,
                pc: PageControl::Current,
                page: 0x3F,
                subpage: 0xFF,
                alloc_len: 0xC0
            })
        );
        assert_eq!(
            dec(&[0x1A, 0, 0x01, 0, 0xFF, 0]),
            Err(ScsiError::cdb_bit(2, 5))
        );
        assert_eq!(
            dec(&[0x1A, 0, 0x08, 0x01, 0xFF, 0]),
            Err(ScsiError::cdb_byte(3))
        );
        assert_eq!(
            dec(&[0x1A, 0, 0xC8, 0, 0xFF, 0]),
            Err(ScsiError::SavingParametersNotSupported)
        );
        assert_eq!(
            dec(&[0x5A, 0x10, 0x4A, 0, 0, 0, 0, 0x01, 0x00, 0]),
            Ok(Command::ModeSense {
                ten: true,
                dbd: false,
                llbaa: true,
                pc: PageControl::Changeable,
                page: 0x0A,
                subpage: 0,
                alloc_len: 0x100
            })
        );
    }

    #[test]
    fn inquiry_fields() {
        assert_eq!(
            dec(&[0x12, 0, 0x80, 0, 0xFF, 0]),
            Err(ScsiError::cdb_byte(2))
        );
        assert_eq!(
            dec(&[0x12, 1, 0x81, 0, 0xFF, 0]),
            Err(ScsiError::cdb_byte(2))
        );
        assert_eq!(
            dec(&[0x12, 2, 0, 0, 0xFF, 0]),
            Err(ScsiError::cdb_bit(1, 1))
        );
        assert_eq!(
            dec(&[0x12, 1, 0xB0, 0x01, 0x00, 0]),
            Ok(Command::Inquiry {
                evpd: true,
                page: 0xB0,
                alloc_len: 0x100
            })
        );
    }

    #[test]
    fn report_opcodes_fields() {
        let rsoc = |b2: u8, op: u8| [0xA3, 0x0C, b2, op, 0, 0, 0, 0, 1, 0, 0, 0];
        assert_eq!(dec(&rsoc(4, 0)), Err(ScsiError::cdb_bit(2, 2)));
        assert_eq!(dec(&rsoc(1, 0x9E)), Err(ScsiError::cdb_bit(2, 2)));
        assert_eq!(dec(&rsoc(2, 0x28)), Err(ScsiError::cdb_bit(2, 2)));
        assert_eq!(
            dec(&rsoc(0x83, 0x28)),
            Ok(Command::ReportSupportedOperationCodes {
                rctd: true,
                options: 3,
                opcode: 0x28,
                service_action: 0,
                alloc_len: 256
            })
        );
        assert_eq!(
            dec(&[0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]),
            Err(ScsiError::cdb_bit(1, 4))
        );
    }

    #[test]
    fn synchronize_cache_range() {
        assert_eq!(
            dec(&[0x35, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]),
            Ok(Command::SynchronizeCache { lba: 0, blocks: 0 })
        );
        let unit = test_unit();
        let mut cdb = [0u8; 16];
        cdb[0] = 0x91;
        cdb[2..10].copy_from_slice(&unit.num_blocks.to_be_bytes());
        assert_eq!(dec(&cdb), Err(ScsiError::LbaOutOfRange));
    }

    /// Every CDB usage bit in the opcode table matches the decoder: flipping a
    /// bit reported as unused never changes the outcome, flipping a used bit
    /// always does.
    #[test]
    fn usage_data_matches_decoder() {
        let unit = test_unit();
        for info in opcodes::SUPPORTED {
            let base = valid_cdb(info.opcode, info.cdb_len());
            let decoded = decode(&base, &unit);
            assert!(
                decoded.is_ok(),
                "{}: base CDB rejected: {decoded:?}",
                info.name
            );
            for byte in 1..info.cdb_len() {
                for bit in 0..8 {
                    let mut cdb = base.clone();
                    cdb[byte] ^= 1 << bit;
                    let flipped = decode(&cdb, &unit);
                    let used = info.usage[byte] & (1 << bit) != 0;
                    if used {
                        assert_ne!(
                            flipped, decoded,
                            "{} byte {byte} bit {bit} is reported used",
                            info.name
                        );
                    } else {
                        assert_eq!(
                            flipped, decoded,
                            "{} byte {byte} bit {bit} is reported unused",
                            info.name
                        );
                    }
                }
            }
        }
    }

    /// A valid CDB for `opcode` whose fields are all in the middle of their
    /// ranges, so that flipping any one used bit changes the outcome.
    fn valid_cdb(opcode: u8, len: usize) -> Vec<u8> {
        use opcodes::*;
        let mut cdb = vec![0u8; len];
        cdb[0] = opcode;
        match opcode {
            READ_6 | WRITE_6 => {
                cdb[1] = 0x01;
                cdb[4] = 0x40;
            }
            REQUEST_SENSE => cdb[4] = 0x20,
            INQUIRY => cdb[4] = 0x60,
            MODE_SELECT_6 => {
                cdb[1] = 0x10;
                cdb[4] = 0x20;
            }
            MODE_SENSE_6 => {
                cdb[2] = 0x08;
                cdb[4] = 0x20;
            }
            MODE_SELECT_10 => {
                cdb[1] = 0x10;
                cdb[8] = 0x20;
            }
            MODE_SENSE_10 => {
                cdb[2] = 0x08;
                cdb[8] = 0x20;
            }
            START_STOP_UNIT => cdb[4] = 0x01,
            READ_10 | WRITE_10 | WRITE_AND_VERIFY_10 | VERIFY_10 | SYNCHRONIZE_CACHE_10
            | WRITE_SAME_10 => {
                cdb[3] = 0x01;
                cdb[8] = 0x02;
            }
            UNMAP => cdb[8] = 24,
            READ_12 | WRITE_12 => {
                cdb[3] = 0x01;
                cdb[9] = 0x02;
            }
            READ_16 | WRITE_16 | WRITE_AND_VERIFY_16 | VERIFY_16 | SYNCHRONIZE_CACHE_16
            | WRITE_SAME_16 => {
                cdb[7] = 0x01;
                cdb[13] = 0x02;
            }
            COMPARE_AND_WRITE => {
                cdb[7] = 0x01;
                cdb[13] = 0x01;
            }
            SERVICE_ACTION_IN_16 => {
                cdb[1] = 0x10;
                cdb[13] = 0x20;
            }
            MAINTENANCE_IN => {
                cdb[1] = 0x0C;
                cdb[9] = 0x20;
            }
            _ => {}
        }
        cdb
    }
}
