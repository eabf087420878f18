//! Tests of CDB decoding.

use super::super::unit::test_unit;
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
            fua: false,
            dpo: false
        })
    );
    // Bits 7-5 of byte 1 are reserved and ignored.
    assert_eq!(
        dec(&[0x0A, 0xE0, 0x00, 0x10, 0x08, 0x00]),
        Ok(Command::Write {
            lba: 0x10,
            blocks: 8,
            fua: false,
            dpo: false
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
            fua: true,
            dpo: false
        })
    );
    assert_eq!(
        dec(&[0xAA, 0x10, 0, 0, 0, 0x20, 0, 0, 0, 0x04, 0, 0]),
        Ok(Command::Write {
            lba: 0x20,
            blocks: 4,
            fua: false,
            dpo: true
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
            fua: true,
            dpo: false
        })
    );
    // Zero-length transfers are valid.
    assert_eq!(
        dec(&[0x28, 0, 0, 0, 0, 5, 0, 0, 0, 0]),
        Ok(Command::Read {
            lba: 5,
            blocks: 0,
            fua: false,
            dpo: false
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
            byte_check: ByteCheck::None,
            dpo: false
        })
    );
    assert_eq!(
        dec(&cdb(0x2F, 1)),
        Ok(Command::Verify {
            lba: 1,
            blocks: 4,
            byte_check: ByteCheck::Bytes,
            dpo: false
        })
    );
    assert_eq!(dec(&cdb(0x2F, 2)), Err(ScsiError::cdb_bit(1, 2)));
    assert_eq!(
        dec(&cdb(0x2F, 3)),
        Ok(Command::Verify {
            lba: 1,
            blocks: 4,
            byte_check: ByteCheck::SameBlock,
            dpo: false
        })
    );
    assert_eq!(
        dec(&cdb(0x2E, 1)),
        Ok(Command::WriteAndVerify {
            lba: 1,
            blocks: 4,
            byte_check: true,
            dpo: false
        })
    );
    assert_eq!(dec(&cdb(0x2E, 2)), Err(ScsiError::cdb_bit(1, 2)));
    assert_eq!(dec(&cdb(0x2E, 3)), Err(ScsiError::cdb_bit(1, 2)));
}

/// DPO is taken by every command that has it (MODE SENSE reports DPOFUA).
#[test]
fn dpo_is_decoded() {
    let dpo = |command: Command| match command {
        Command::Read { dpo, .. }
        | Command::Write { dpo, .. }
        | Command::Verify { dpo, .. }
        | Command::WriteAndVerify { dpo, .. }
        | Command::CompareAndWrite { dpo, .. } => dpo,
        other => panic!("{other:?}"),
    };
    for op in [0x28, 0x2A, 0x2E, 0x2F] {
        let cdb = [op, 0x10, 0, 0, 0, 1, 0, 0, 1, 0];
        assert!(dpo(dec(&cdb).unwrap()), "{op:#04x}");
        assert!(!dpo(dec(&[op, 0, 0, 0, 0, 1, 0, 0, 1, 0]).unwrap()));
    }
    for op in [0x88, 0x89, 0x8A, 0x8E, 0x8F] {
        let mut cdb = [0u8; 16];
        cdb[0] = op;
        cdb[1] = 0x10;
        cdb[13] = 1;
        assert!(dpo(dec(&cdb).unwrap()), "{op:#04x}");
    }
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
            fua: false,
            dpo: false
        })
    );
}

/// The data-out buffer: too short is refused for every command (on the
/// transfer length field), longer is accepted, except for COMPARE AND
/// WRITE, whose buffer must be exactly its two halves.
#[test]
fn data_out_buffer_length() {
    let bs = 512;
    let write = dec(&[0x2A, 0, 0, 0, 0, 1, 0, 0, 2, 0]).unwrap();
    assert_eq!(check_data_out(0x2A, &write, bs, 1024), Ok(()));
    assert_eq!(check_data_out(0x2A, &write, bs, 4096), Ok(()));
    assert_eq!(
        check_data_out(0x2A, &write, bs, 1023),
        Err(ScsiError::cdb_byte(7))
    );
    let mut cdb = [0u8; 16];
    cdb[0] = 0x89;
    cdb[13] = 2;
    let caw = dec(&cdb).unwrap();
    assert_eq!(check_data_out(0x89, &caw, bs, 2048), Ok(()));
    for len in [0, 2047, 2049, 4096] {
        assert_eq!(
            check_data_out(0x89, &caw, bs, len),
            Err(ScsiError::cdb_byte(13)),
            "{len}"
        );
    }
    // 256 blocks do not fit the 8-bit field: an initiator that wraps them
    // to 0 still sends 2 x 256 blocks of data.
    cdb[13] = 0;
    let caw = dec(&cdb).unwrap();
    assert_eq!(check_data_out(0x89, &caw, bs, 0), Ok(()));
    assert_eq!(
        check_data_out(0x89, &caw, bs, 2 * 256 * 512),
        Err(ScsiError::cdb_byte(13))
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
        let base = valid_cdb(info.opcode, info.service_action, info.cdb_len());
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
fn valid_cdb(opcode: u8, service_action: Option<u16>, len: usize) -> Vec<u8> {
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
            cdb[1] = service_action.unwrap_or(0) as u8;
            cdb[7] = 0x01;
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
