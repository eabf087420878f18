//! The commands answered without bdev I/O: [`emulate`] builds their
//! response data (INQUIRY, MODE SENSE/SELECT, READ CAPACITY, GET LBA STATUS,
//! REQUEST SENSE, REPORT SUPPORTED OPERATION CODES, and the commands with no
//! data at all).

use super::command::Command;
use super::sense::{self, ScsiError};
use super::unit::{ModeState, UnitInfo};
use super::{capacity, inquiry, lba_status, mode, opcodes};

/// Size of the buffer emulated responses are built in: larger than the
/// longest response (REPORT SUPPORTED OPERATION CODES with timeouts
/// descriptors, about 600 bytes).
pub const RESPONSE_BUFFER_LEN: usize = 1024;

/// Writes REQUEST SENSE parameter data: the unit never holds pending sense
/// (sense is always returned with the failing command), so this is NO SENSE,
/// 00/00, in fixed format (18 bytes) or, with DESC, descriptor format (8
/// bytes). Returns the length.
pub fn request_sense_data(descriptor: bool, out: &mut [u8]) -> usize {
    if descriptor {
        out[..8].copy_from_slice(&[0x72, 0, 0, 0, 0, 0, 0, 0]);
        8
    } else {
        let data = &mut out[..sense::FIXED_SENSE_LEN];
        data.fill(0);
        data[0] = 0x70;
        data[7] = (sense::FIXED_SENSE_LEN - 8) as u8;
        sense::FIXED_SENSE_LEN
    }
}

/// Executes an emulated command (see [`Command::is_emulated`]).
///
/// `data_out` is the parameter list of MODE SELECT (exactly PARAMETER LIST
/// LENGTH bytes; empty for other commands). The response is built in `out`;
/// the returned length is already cut to the command's allocation length
/// (READ CAPACITY (10) has none and returns 8 bytes). A media command given
/// here returns INTERNAL TARGET FAILURE.
pub fn emulate(
    command: &Command,
    unit: &UnitInfo,
    mode: &mut ModeState,
    data_out: &[u8],
    out: &mut [u8; RESPONSE_BUFFER_LEN],
) -> Result<usize, ScsiError> {
    let (len, alloc_len) = match *command {
        Command::TestUnitReady
        | Command::StartStopUnit { .. }
        | Command::PreventAllowMediumRemoval => (0, 0),
        Command::RequestSense {
            descriptor,
            alloc_len,
        } => (request_sense_data(descriptor, out), alloc_len),
        Command::Inquiry {
            evpd,
            page,
            alloc_len,
        } => {
            let len = if evpd {
                inquiry::vpd(unit, page, out)
            } else {
                inquiry::standard(unit, out)
            };
            (len, alloc_len)
        }
        Command::ModeSense {
            ten,
            dbd,
            llbaa,
            pc,
            page,
            alloc_len,
            ..
        } => {
            let request = mode::SenseRequest {
                ten,
                dbd,
                llbaa,
                pc,
                page,
            };
            (mode::sense(unit, mode, request, out), alloc_len)
        }
        Command::ModeSelect { ten, .. } => {
            mode::select(unit, mode, ten, data_out)?;
            (0, 0)
        }
        Command::ReadCapacity10 => {
            let len = capacity::read_capacity_10(unit, out);
            (len, len as u32)
        }
        Command::ReadCapacity16 { alloc_len } => (capacity::read_capacity_16(unit, out), alloc_len),
        Command::GetLbaStatus { lba, alloc_len } => {
            (lba_status::get_lba_status(unit, lba, out), alloc_len)
        }
        Command::ReportSupportedOperationCodes {
            rctd,
            options,
            opcode,
            service_action,
            alloc_len,
        } => (
            opcodes::report_supported(unit.unmap, rctd, options, opcode, service_action, out),
            alloc_len,
        ),
        _ => return Err(ScsiError::InternalTargetFailure),
    };
    Ok(len.min(alloc_len as usize))
}

#[cfg(test)]
mod tests {
    use super::super::cdb::decode;
    use super::super::unit::{test_unit, ModeValues};
    use super::*;

    fn run(cdb: &[u8]) -> Result<Vec<u8>, ScsiError> {
        let unit = test_unit();
        let mut mode = ModeState::new(ModeValues {
            write_cache: true,
            descriptor_sense: false,
        });
        let command = decode(cdb, &unit)?;
        assert!(command.is_emulated());
        let mut out = [0u8; RESPONSE_BUFFER_LEN];
        let len = emulate(&command, &unit, &mut mode, &[], &mut out)?;
        Ok(out[..len].to_vec())
    }

    #[test]
    fn allocation_length_truncates() {
        assert_eq!(run(&[0x12, 0, 0, 0, 5, 0]).unwrap(), [0, 0, 6, 0x12, 91]);
        assert_eq!(run(&[0x12, 0, 0, 0, 0, 0]).unwrap(), [0u8; 0]);
        assert_eq!(run(&[0x12, 0, 0, 0x10, 0, 0]).unwrap().len(), 96);
        assert_eq!(
            run(&[0x12, 1, 0x00, 0, 6, 0]).unwrap(),
            [0, 0, 0, 6, 0, 0x80]
        );
        let mut rc16 = [0u8; 16];
        rc16[0] = 0x9E;
        rc16[1] = 0x10;
        rc16[13] = 12;
        assert_eq!(
            run(&rc16).unwrap(),
            [0, 0, 0, 0, 0, 0x0F, 0xFF, 0xFF, 0, 0, 2, 0]
        );
        rc16[13] = 0;
        assert_eq!(run(&rc16).unwrap(), [0u8; 0]);
        rc16[12] = 1;
        assert_eq!(run(&rc16).unwrap().len(), 32);
        assert_eq!(run(&[0x1A, 0x08, 0x0A, 0, 3, 0]).unwrap(), [15, 0, 0x10]);
    }

    fn get_lba_status(lba: u64, alloc: u32) -> Result<Vec<u8>, ScsiError> {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x9E;
        cdb[1] = 0x12;
        cdb[2..10].copy_from_slice(&lba.to_be_bytes());
        cdb[10..14].copy_from_slice(&alloc.to_be_bytes());
        run(&cdb)
    }

    /// LBPME = 1 requires GET LBA STATUS (SBC-4 4.7.3.1). The unit cannot
    /// tell which blocks its bdev has mapped, so one descriptor covers the
    /// rest of the medium with PROVISIONING STATUS 0h (mapped or unknown).
    #[test]
    fn get_lba_status_reports_the_rest_as_mapped_or_unknown() {
        let unit = test_unit();
        let data = get_lba_status(100, 64).unwrap();
        let mut expected = vec![0, 0, 0, 20, 0, 0, 0, 0x06];
        expected.extend_from_slice(&100u64.to_be_bytes());
        expected.extend_from_slice(&((unit.num_blocks - 100) as u32).to_be_bytes());
        expected.extend_from_slice(&[0; 4]);
        assert_eq!(data, expected);
        // The last block; truncated by the allocation length.
        let data = get_lba_status(unit.num_blocks - 1, 24).unwrap();
        assert_eq!(&data[16..20], [0, 0, 0, 1]);
        assert_eq!(get_lba_status(0, 6).unwrap(), [0, 0, 0, 20, 0, 0]);
        assert_eq!(
            get_lba_status(unit.num_blocks, 24),
            Err(ScsiError::LbaOutOfRange)
        );
        // More blocks than the descriptor's 32-bit field: as many as fit,
        // and no claim that the medium's end was reached.
        let huge = UnitInfo {
            num_blocks: 1 << 40,
            ..test_unit()
        };
        let command = decode(
            &[0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0],
            &huge,
        )
        .unwrap();
        let mut mode = ModeState::new(ModeValues {
            write_cache: true,
            descriptor_sense: false,
        });
        let mut out = [0u8; RESPONSE_BUFFER_LEN];
        let len = emulate(&command, &huge, &mut mode, &[], &mut out).unwrap();
        assert_eq!(len, 24);
        assert_eq!(out[7], 0);
        assert_eq!(&out[16..20], [0xFF; 4]);
        // Without logical block provisioning the command is not supported.
        let thick = UnitInfo {
            unmap: false,
            ..test_unit()
        };
        assert_eq!(
            decode(
                &[0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0],
                &thick
            ),
            Err(ScsiError::cdb_bit(1, 4))
        );
    }

    #[test]
    fn simple_commands() {
        assert_eq!(run(&[0, 0, 0, 0, 0, 0]).unwrap(), [0u8; 0]);
        assert_eq!(run(&[0x1B, 0, 0, 0, 0, 0]).unwrap(), [0u8; 0]);
        assert_eq!(run(&[0x1E, 0, 0, 0, 3, 0]).unwrap(), [0u8; 0]);
        assert_eq!(
            run(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
            [0, 0x0F, 0xFF, 0xFF, 0, 0, 2, 0]
        );
    }

    #[test]
    fn request_sense() {
        assert_eq!(
            run(&[0x03, 0, 0, 0, 0xFF, 0]).unwrap(),
            [0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            run(&[0x03, 1, 0, 0, 0xFF, 0]).unwrap(),
            [0x72, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(run(&[0x03, 0, 0, 0, 4, 0]).unwrap(), [0x70, 0, 0, 0]);
    }

    #[test]
    fn media_commands_are_not_emulated() {
        let unit = test_unit();
        let command = decode(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &unit).unwrap();
        assert!(!command.is_emulated());
        let mut mode = ModeState::new(ModeValues {
            write_cache: false,
            descriptor_sense: false,
        });
        let mut out = [0u8; RESPONSE_BUFFER_LEN];
        assert_eq!(
            emulate(&command, &unit, &mut mode, &[], &mut out),
            Err(ScsiError::InternalTargetFailure)
        );
    }

    fn rsoc(b2: u8, opcode: u8, sa: u16, alloc: u32) -> Vec<u8> {
        let mut cdb = [0u8; 12];
        cdb[0] = 0xA3;
        cdb[1] = 0x0C;
        cdb[2] = b2;
        cdb[3] = opcode;
        cdb[4..6].copy_from_slice(&sa.to_be_bytes());
        cdb[6..10].copy_from_slice(&alloc.to_be_bytes());
        run(&cdb).unwrap()
    }

    #[test]
    fn report_all_commands() {
        let data = rsoc(0, 0, 0, 4096);
        let n = opcodes::SUPPORTED.len();
        assert_eq!(data.len(), 4 + 8 * n);
        assert_eq!(&data[0..4], ((8 * n) as u32).to_be_bytes());
        // First descriptor: TEST UNIT READY, 6 bytes.
        assert_eq!(&data[4..12], [0x00, 0, 0, 0, 0, 0, 0, 6]);
        // READ CAPACITY (16): service action 10h, SERVACTV.
        let at = 4 + 8 * opcodes::SUPPORTED
            .iter()
            .position(|i| i.opcode == 0x9E)
            .unwrap();
        assert_eq!(&data[at..at + 8], [0x9E, 0, 0, 0x10, 0, 0x01, 0, 16]);
        // With RCTD: 20-byte descriptors with CTDP and a timeouts descriptor.
        let data = rsoc(0x80, 0, 0, 4096);
        assert_eq!(data.len(), 4 + 20 * n);
        assert_eq!(
            &data[4..24],
            [0x00, 0, 0, 0, 0, 0x02, 0, 6, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        // Truncated by the allocation length.
        assert_eq!(rsoc(0, 0, 0, 6), [0, 0, 0, (8 * n) as u8, 0x00, 0]);
    }

    #[test]
    fn report_one_command() {
        // 001b: READ (10).
        assert_eq!(
            rsoc(1, 0x28, 0, 64),
            [0, 0x03, 0, 10, 0x28, 0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0x04]
        );
        // 001b: unsupported operation code.
        assert_eq!(rsoc(1, 0x04, 0, 64), [0, 0x01, 0, 0]);
        // 010b: READ CAPACITY (16) with RCTD.
        let data = rsoc(0x82, 0x9E, 0x10, 64);
        assert_eq!(&data[0..4], [0, 0x83, 0, 16]);
        assert_eq!(
            data[4..20],
            *opcodes::lookup(0x9E, Some(0x10), true).unwrap().usage
        );
        assert_eq!(&data[20..], [0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // 010b: unsupported service action.
        assert_eq!(rsoc(2, 0x9E, 0x11, 64), [0, 0x01, 0, 0]);
        // 011b: exact pairs.
        assert_eq!(rsoc(3, 0x28, 0, 64)[..4], [0, 0x03, 0, 10]);
        assert_eq!(rsoc(3, 0x28, 1, 64), [0, 0x01, 0, 0]);
        assert_eq!(rsoc(3, 0xA3, 0x0C, 64)[..4], [0, 0x03, 0, 12]);
        assert_eq!(rsoc(3, 0xA3, 0x0A, 64), [0, 0x01, 0, 0]);
    }

    /// MODE SENSE says DPOFUA (the unit takes DPO and FUA), so the CDB
    /// usage data of every command with a DPO bit shows it as evaluated
    /// (SPC-4 6.35.3), and those with FUA show FUA.
    #[test]
    fn usage_data_shows_dpo_and_fua_where_dpofua_is_set() {
        let header = run(&[0x1A, 0x08, 0x3F, 0, 4, 0]).unwrap();
        assert_eq!(header[2] & 0x10, 0x10, "DPOFUA");
        for (opcode, fua) in [
            (0x28, true),  // READ (10)
            (0x2A, true),  // WRITE (10)
            (0x2E, false), // WRITE AND VERIFY (10)
            (0x2F, false), // VERIFY (10)
            (0x88, true),  // READ (16)
            (0x89, true),  // COMPARE AND WRITE
            (0x8A, true),  // WRITE (16)
            (0x8E, false), // WRITE AND VERIFY (16)
            (0x8F, false), // VERIFY (16)
            (0xA8, true),  // READ (12)
            (0xAA, true),  // WRITE (12)
        ] {
            let data = rsoc(1, opcode, 0, 64);
            assert_eq!(data[1] & 0x07, 0x03, "{opcode:#04x} supported");
            assert_eq!(data[4], opcode);
            assert_eq!(data[5] & 0x10, 0x10, "{opcode:#04x}: DPO");
            assert_eq!(data[5] & 0x08 != 0, fua, "{opcode:#04x}: FUA");
        }
    }

    #[test]
    fn report_without_unmap_omits_unmap() {
        let unit = UnitInfo {
            unmap: false,
            ..test_unit()
        };
        let mut out = [0u8; RESPONSE_BUFFER_LEN];
        let len = opcodes::report_supported(false, false, 0, 0, 0, &mut out);
        assert_eq!(len, 4 + 8 * (opcodes::SUPPORTED.len() - 2));
        assert!(out[4..len].chunks(8).all(|d| d[0] != 0x42));
        assert!(out[4..len].chunks(8).all(|d| d[0..4] != [0x9E, 0, 0, 0x12]));
        let len = opcodes::report_supported(unit.unmap, false, 1, 0x42, 0, &mut out);
        assert_eq!(&out[..len], [0, 0x01, 0, 0]);
    }
}
