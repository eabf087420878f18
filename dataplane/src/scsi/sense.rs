//! Sense data and the one place where failures become SCSI status and sense.
//!
//! Every failure of a command, whether found while decoding the CDB, while
//! parsing a parameter list or reported by the bdev, is a [`ScsiError`].
//! [`ScsiError::sense`] and [`ScsiError::to_response`] turn it into a
//! [`Response`] with the status and the sense bytes (fixed format, response
//! code 70h, or descriptor format, 72h: SPC-4 4.5) selected for the logical
//! unit.

use bdev::IoError;

use crate::exec::{status, Response, SENSE_BUFFER_SIZE};

/// Sense keys (SPC-4 table 27).
pub mod key {
    /// NO SENSE.
    pub const NO_SENSE: u8 = 0x0;
    /// RECOVERED ERROR.
    pub const RECOVERED_ERROR: u8 = 0x1;
    /// NOT READY.
    pub const NOT_READY: u8 = 0x2;
    /// MEDIUM ERROR.
    pub const MEDIUM_ERROR: u8 = 0x3;
    /// HARDWARE ERROR.
    pub const HARDWARE_ERROR: u8 = 0x4;
    /// ILLEGAL REQUEST.
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    /// UNIT ATTENTION.
    pub const UNIT_ATTENTION: u8 = 0x6;
    /// DATA PROTECT.
    pub const DATA_PROTECT: u8 = 0x7;
    /// ABORTED COMMAND.
    pub const ABORTED_COMMAND: u8 = 0xB;
    /// MISCOMPARE.
    pub const MISCOMPARE: u8 = 0xE;
}

/// An additional sense code and qualifier (ASC/ASCQ, SPC-4 table 28).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asc {
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
}

impl Asc {
    /// NO ADDITIONAL SENSE INFORMATION (00/00).
    pub const NO_ADDITIONAL_SENSE: Asc = Asc::new(0x00, 0x00);
    /// LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE (04/00).
    pub const LOGICAL_UNIT_NOT_READY: Asc = Asc::new(0x04, 0x00);
    /// WRITE ERROR (0C/00).
    pub const WRITE_ERROR: Asc = Asc::new(0x0C, 0x00);
    /// UNRECOVERED READ ERROR (11/00).
    pub const UNRECOVERED_READ_ERROR: Asc = Asc::new(0x11, 0x00);
    /// PARAMETER LIST LENGTH ERROR (1A/00).
    pub const PARAMETER_LIST_LENGTH_ERROR: Asc = Asc::new(0x1A, 0x00);
    /// MISCOMPARE DURING VERIFY OPERATION (1D/00).
    pub const MISCOMPARE_DURING_VERIFY: Asc = Asc::new(0x1D, 0x00);
    /// INVALID COMMAND OPERATION CODE (20/00).
    pub const INVALID_COMMAND_OPERATION_CODE: Asc = Asc::new(0x20, 0x00);
    /// LOGICAL BLOCK ADDRESS OUT OF RANGE (21/00).
    pub const LBA_OUT_OF_RANGE: Asc = Asc::new(0x21, 0x00);
    /// INVALID FIELD IN CDB (24/00).
    pub const INVALID_FIELD_IN_CDB: Asc = Asc::new(0x24, 0x00);
    /// INVALID FIELD IN PARAMETER LIST (26/00).
    pub const INVALID_FIELD_IN_PARAMETER_LIST: Asc = Asc::new(0x26, 0x00);
    /// WRITE PROTECTED (27/00).
    pub const WRITE_PROTECTED: Asc = Asc::new(0x27, 0x00);
    /// SPACE ALLOCATION FAILED WRITE PROTECT (27/07).
    pub const SPACE_ALLOCATION_FAILED: Asc = Asc::new(0x27, 0x07);
    /// SAVING PARAMETERS NOT SUPPORTED (39/00).
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: Asc = Asc::new(0x39, 0x00);
    /// INTERNAL TARGET FAILURE (44/00).
    pub const INTERNAL_TARGET_FAILURE: Asc = Asc::new(0x44, 0x00);

    /// An ASC/ASCQ pair.
    pub const fn new(asc: u8, ascq: u8) -> Self {
        Self { asc, ascq }
    }
}

/// Format of the sense data a logical unit returns: selected per logical unit
/// by configuration and by the D_SENSE bit of the Control mode page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SenseFormat {
    /// Fixed format, response code 70h, 18 bytes.
    #[default]
    Fixed,
    /// Descriptor format, response code 72h.
    Descriptor,
}

/// Points at the field in error: byte `byte` of the CDB or parameter list
/// and, when the error concerns a bit field, the bit `bit` (0..=7) of its most
/// significant bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPointer {
    /// Byte offset in the CDB or the parameter list.
    pub byte: u16,
    /// Bit within that byte (BPV = 1), or `None` for the whole byte (BPV = 0).
    pub bit: Option<u8>,
}

impl FieldPointer {
    /// Points at byte `byte` as a whole.
    pub const fn byte(byte: u16) -> Self {
        Self { byte, bit: None }
    }

    /// Points at bit `bit` of byte `byte`.
    pub const fn bit(byte: u16, bit: u8) -> Self {
        Self {
            byte,
            bit: Some(bit & 7),
        }
    }
}

/// The SENSE KEY SPECIFIC information a [`Sense`] may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenseKeySpecific {
    /// Field pointer (ILLEGAL REQUEST, SPC-4 4.5.2.4.2): `in_cdb` is the C/D
    /// bit (true: the CDB; false: the parameter list).
    FieldPointer {
        /// C/D: the error is in the CDB (true) or the parameter data (false).
        in_cdb: bool,
        /// Where.
        pointer: FieldPointer,
    },
}

impl SenseKeySpecific {
    /// The three SENSE KEY SPECIFIC bytes with SKSV set.
    pub fn bytes(&self) -> [u8; 3] {
        match *self {
            SenseKeySpecific::FieldPointer { in_cdb, pointer } => {
                let mut first = 0x80; // SKSV
                if in_cdb {
                    first |= 0x40; // C/D
                }
                if let Some(bit) = pointer.bit {
                    first |= 0x08 | (bit & 7); // BPV + BIT POINTER
                }
                let [hi, lo] = pointer.byte.to_be_bytes();
                [first, hi, lo]
            }
        }
    }
}

/// Sense data before encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    /// Sense key ([`key`]).
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
    /// INFORMATION field (e.g. the offset of the first miscompared byte).
    pub information: Option<u64>,
    /// SENSE KEY SPECIFIC field.
    pub sense_key_specific: Option<SenseKeySpecific>,
}

/// Length of fixed-format sense data (additional sense length 0Ah).
pub const FIXED_SENSE_LEN: usize = 18;

impl Sense {
    /// Sense with a key and ASC/ASCQ only.
    pub const fn new(key: u8, code: Asc) -> Self {
        Self {
            key,
            asc: code.asc,
            ascq: code.ascq,
            information: None,
            sense_key_specific: None,
        }
    }

    /// Encodes into `out` in `format`; returns the number of bytes written.
    ///
    /// Fixed format (SPC-4 4.5.3) is always 18 bytes: the VALID bit is set
    /// only when an INFORMATION value is given and fits in its 4 bytes.
    /// Descriptor format (SPC-4 4.5.2) is an 8-byte header followed by an
    /// information descriptor (type 00h, 12 bytes) and a sense key specific
    /// descriptor (type 02h, 8 bytes) when those are present.
    pub fn encode(&self, format: SenseFormat, out: &mut [u8; SENSE_BUFFER_SIZE]) -> usize {
        out.fill(0);
        match format {
            SenseFormat::Fixed => {
                out[0] = 0x70;
                if let Some(info) = self.information {
                    if let Ok(info) = u32::try_from(info) {
                        out[0] |= 0x80; // VALID
                        out[3..7].copy_from_slice(&info.to_be_bytes());
                    }
                }
                out[2] = self.key & 0x0F;
                out[7] = (FIXED_SENSE_LEN - 8) as u8;
                out[12] = self.asc;
                out[13] = self.ascq;
                if let Some(sks) = self.sense_key_specific {
                    out[15..18].copy_from_slice(&sks.bytes());
                }
                FIXED_SENSE_LEN
            }
            SenseFormat::Descriptor => {
                out[0] = 0x72;
                out[1] = self.key & 0x0F;
                out[2] = self.asc;
                out[3] = self.ascq;
                let mut len = 8;
                if let Some(info) = self.information {
                    out[len] = 0x00; // information descriptor
                    out[len + 1] = 0x0A;
                    out[len + 2] = 0x80; // VALID
                    out[len + 4..len + 12].copy_from_slice(&info.to_be_bytes());
                    len += 12;
                }
                if let Some(sks) = self.sense_key_specific {
                    out[len] = 0x02; // sense key specific descriptor
                    out[len + 1] = 0x06;
                    out[len + 4..len + 7].copy_from_slice(&sks.bytes());
                    len += 8;
                }
                out[7] = (len - 8) as u8;
                len
            }
        }
    }

    /// A CHECK CONDITION response carrying this sense.
    pub fn to_response(&self, format: SenseFormat) -> Response {
        let mut response = Response::with_status(status::CHECK_CONDITION);
        let len = self.encode(format, &mut response.sense);
        response.sense_len = len as u8;
        response
    }
}

/// Why a command failed. Each variant maps to exactly one status and sense
/// (see [`ScsiError::sense`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScsiError {
    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE (20/00).
    InvalidCommandOperationCode,
    /// ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00), with a field pointer
    /// (C/D = 1) when known.
    InvalidFieldInCdb(Option<FieldPointer>),
    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST (26/00), with a field
    /// pointer (C/D = 0) when known.
    InvalidFieldInParameterList(Option<FieldPointer>),
    /// ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR (1A/00).
    ParameterListLengthError,
    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (21/00).
    LbaOutOfRange,
    /// MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION (1D/00); INFORMATION =
    /// offset of the first byte that differed.
    Miscompare {
        /// Byte offset from the start of the compared data.
        offset: u64,
    },
    /// ILLEGAL REQUEST, SAVING PARAMETERS NOT SUPPORTED (39/00).
    SavingParametersNotSupported,
    /// DATA PROTECT, WRITE PROTECTED (27/00).
    WriteProtected,
    /// DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (27/07): a thin
    /// or file-backed unit ran out of space for a write.
    SpaceAllocationFailed,
    /// MEDIUM ERROR, UNRECOVERED READ ERROR (11/00).
    UnrecoveredReadError,
    /// MEDIUM ERROR, WRITE ERROR (0C/00).
    WriteError,
    /// MEDIUM ERROR, UNRECOVERED READ ERROR (11/00); INFORMATION = the LBA
    /// of the first block that could not be read (SBC-4 4.18.1).
    UnrecoveredReadErrorAt(u64),
    /// MEDIUM ERROR, WRITE ERROR (0C/00); INFORMATION = the LBA of the
    /// first block that could not be written.
    WriteErrorAt(u64),
    /// ABORTED COMMAND (00/00): the bdev gave up on the request.
    AbortedCommand,
    /// BUSY status, no sense: out of resources for now, retry.
    Busy,
    /// HARDWARE ERROR, INTERNAL TARGET FAILURE (44/00).
    InternalTargetFailure,
    /// NOT READY, LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE (04/00).
    NotReady,
}

impl ScsiError {
    /// INVALID FIELD IN CDB pointing at byte `byte`.
    pub const fn cdb_byte(byte: u16) -> Self {
        ScsiError::InvalidFieldInCdb(Some(FieldPointer::byte(byte)))
    }

    /// INVALID FIELD IN CDB pointing at bit `bit` of byte `byte`.
    pub const fn cdb_bit(byte: u16, bit: u8) -> Self {
        ScsiError::InvalidFieldInCdb(Some(FieldPointer::bit(byte, bit)))
    }

    /// INVALID FIELD IN PARAMETER LIST pointing at byte `byte`.
    pub const fn param_byte(byte: u16) -> Self {
        ScsiError::InvalidFieldInParameterList(Some(FieldPointer::byte(byte)))
    }

    /// INVALID FIELD IN PARAMETER LIST pointing at bit `bit` of byte `byte`.
    pub const fn param_bit(byte: u16, bit: u8) -> Self {
        ScsiError::InvalidFieldInParameterList(Some(FieldPointer::bit(byte, bit)))
    }

    /// Maps a bdev failure, pointing INVALID FIELD IN CDB errors at the
    /// command's transfer length field `transfer_length`.
    ///
    /// - `OutOfRange` → LOGICAL BLOCK ADDRESS OUT OF RANGE.
    /// - `Read` → MEDIUM ERROR, UNRECOVERED READ ERROR.
    /// - `Write` → MEDIUM ERROR, WRITE ERROR.
    /// - `ReadAt`, `WriteAt` → the same, with the LBA in the INFORMATION
    ///   field (SBC-4: the first logical block in error).
    /// - `Unsupported` → ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE: the
    ///   device cannot perform this kind of operation at all, no field value
    ///   would help; it is what that ASC means, and initiators react to it by
    ///   no longer using the command (Linux sd turns off discard or WRITE
    ///   SAME), which is the right recovery. The logical unit only sends
    ///   operations the bdev's capabilities claim, so this only happens when
    ///   they are wrong.
    /// - `ShortBuffer`, `TooLarge` → INVALID FIELD IN CDB on the transfer
    ///   length.
    /// - `Aborted` → ABORTED COMMAND (the initiator may retry).
    /// - `NoResources` → BUSY status.
    /// - `NoSpace` → DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT
    ///   (SBC-4 4.7.3.6: what a thin-provisioned unit reports when it cannot
    ///   allocate for a write; Linux fails the write without retrying).
    /// - `NotReady` → NOT READY, LOGICAL UNIT NOT READY, CAUSE NOT
    ///   REPORTABLE (what the NVM Express SCSI translation reference gives
    ///   for Namespace Not Ready).
    /// - `WriteProtected` → DATA PROTECT, WRITE PROTECTED.
    /// - `InvalidField` → ILLEGAL REQUEST, INVALID FIELD IN CDB without a
    ///   field pointer (the device refused a field of the command the bdev
    ///   built, which names no field of the CDB).
    /// - `DeviceFailure` → HARDWARE ERROR, INTERNAL TARGET FAILURE.
    pub fn from_io(error: IoError, transfer_length: Option<FieldPointer>) -> Self {
        match error {
            IoError::OutOfRange => ScsiError::LbaOutOfRange,
            IoError::Read(_) => ScsiError::UnrecoveredReadError,
            IoError::Write(_) => ScsiError::WriteError,
            IoError::ReadAt(lba) => ScsiError::UnrecoveredReadErrorAt(lba),
            IoError::WriteAt(lba) => ScsiError::WriteErrorAt(lba),
            IoError::Unsupported => ScsiError::InvalidCommandOperationCode,
            IoError::ShortBuffer | IoError::TooLarge => {
                ScsiError::InvalidFieldInCdb(transfer_length)
            }
            IoError::Aborted => ScsiError::AbortedCommand,
            IoError::NoResources => ScsiError::Busy,
            IoError::NoSpace(_) => ScsiError::SpaceAllocationFailed,
            IoError::NotReady => ScsiError::NotReady,
            IoError::WriteProtected => ScsiError::WriteProtected,
            IoError::InvalidField => ScsiError::InvalidFieldInCdb(None),
            IoError::DeviceFailure => ScsiError::InternalTargetFailure,
        }
    }

    /// The SAM status this error is reported with.
    pub fn status(&self) -> u8 {
        match self {
            ScsiError::Busy => status::BUSY,
            _ => status::CHECK_CONDITION,
        }
    }

    /// The sense data, or `None` for errors reported by status alone.
    pub fn sense(&self) -> Option<Sense> {
        let field = |in_cdb: bool, pointer: &Option<FieldPointer>| {
            pointer.map(|pointer| SenseKeySpecific::FieldPointer { in_cdb, pointer })
        };
        let sense = match self {
            ScsiError::InvalidCommandOperationCode => {
                Sense::new(key::ILLEGAL_REQUEST, Asc::INVALID_COMMAND_OPERATION_CODE)
            }
            ScsiError::InvalidFieldInCdb(pointer) => Sense {
                sense_key_specific: field(true, pointer),
                ..Sense::new(key::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB)
            },
            ScsiError::InvalidFieldInParameterList(pointer) => Sense {
                sense_key_specific: field(false, pointer),
                ..Sense::new(key::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_PARAMETER_LIST)
            },
            ScsiError::ParameterListLengthError => {
                Sense::new(key::ILLEGAL_REQUEST, Asc::PARAMETER_LIST_LENGTH_ERROR)
            }
            ScsiError::LbaOutOfRange => Sense::new(key::ILLEGAL_REQUEST, Asc::LBA_OUT_OF_RANGE),
            ScsiError::Miscompare { offset } => Sense {
                information: Some(*offset),
                ..Sense::new(key::MISCOMPARE, Asc::MISCOMPARE_DURING_VERIFY)
            },
            ScsiError::SavingParametersNotSupported => {
                Sense::new(key::ILLEGAL_REQUEST, Asc::SAVING_PARAMETERS_NOT_SUPPORTED)
            }
            ScsiError::WriteProtected => Sense::new(key::DATA_PROTECT, Asc::WRITE_PROTECTED),
            ScsiError::SpaceAllocationFailed => {
                Sense::new(key::DATA_PROTECT, Asc::SPACE_ALLOCATION_FAILED)
            }
            ScsiError::UnrecoveredReadError => {
                Sense::new(key::MEDIUM_ERROR, Asc::UNRECOVERED_READ_ERROR)
            }
            ScsiError::WriteError => Sense::new(key::MEDIUM_ERROR, Asc::WRITE_ERROR),
            ScsiError::UnrecoveredReadErrorAt(lba) => Sense {
                information: Some(*lba),
                ..Sense::new(key::MEDIUM_ERROR, Asc::UNRECOVERED_READ_ERROR)
            },
            ScsiError::WriteErrorAt(lba) => Sense {
                information: Some(*lba),
                ..Sense::new(key::MEDIUM_ERROR, Asc::WRITE_ERROR)
            },
            ScsiError::AbortedCommand => Sense::new(key::ABORTED_COMMAND, Asc::NO_ADDITIONAL_SENSE),
            ScsiError::Busy => return None,
            ScsiError::InternalTargetFailure => {
                Sense::new(key::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE)
            }
            ScsiError::NotReady => Sense::new(key::NOT_READY, Asc::LOGICAL_UNIT_NOT_READY),
        };
        Some(sense)
    }

    /// The response reporting this error in sense format `format`.
    pub fn to_response(&self, format: SenseFormat) -> Response {
        match self.sense() {
            Some(sense) => sense.to_response(format),
            None => Response::with_status(self.status()),
        }
    }
}

impl From<IoError> for ScsiError {
    /// As [`ScsiError::from_io`] without a transfer length field pointer.
    fn from(error: IoError) -> Self {
        ScsiError::from_io(error, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(error: ScsiError) -> Vec<u8> {
        error.to_response(SenseFormat::Fixed).sense_bytes().to_vec()
    }

    fn descriptor(error: ScsiError) -> Vec<u8> {
        error
            .to_response(SenseFormat::Descriptor)
            .sense_bytes()
            .to_vec()
    }

    #[test]
    fn invalid_opcode_fixed_and_descriptor() {
        let r = ScsiError::InvalidCommandOperationCode.to_response(SenseFormat::Fixed);
        assert_eq!(r.status, status::CHECK_CONDITION);
        assert_eq!(r.data_in_len, 0);
        assert_eq!(
            r.sense_bytes(),
            [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            descriptor(ScsiError::InvalidCommandOperationCode),
            [0x72, 5, 0x20, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn invalid_field_in_cdb_with_byte_and_bit_pointer() {
        // Byte pointer: SKSV | C/D, field pointer 0x0002.
        assert_eq!(
            fixed(ScsiError::cdb_byte(2)),
            [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xC0, 0, 2]
        );
        // Bit pointer: SKSV | C/D | BPV | bit 4, byte 1.
        assert_eq!(
            fixed(ScsiError::cdb_bit(1, 4)),
            [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xCC, 0, 1]
        );
        assert_eq!(
            descriptor(ScsiError::cdb_bit(1, 4)),
            [0x72, 5, 0x24, 0, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xCC, 0, 1, 0]
        );
        // No pointer: SKSV clear.
        assert_eq!(
            fixed(ScsiError::InvalidFieldInCdb(None)),
            [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            descriptor(ScsiError::InvalidFieldInCdb(None)),
            [0x72, 5, 0x24, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn invalid_field_in_parameter_list_has_cd_clear() {
        assert_eq!(
            fixed(ScsiError::param_byte(0x1234)),
            [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x26, 0, 0, 0x80, 0x12, 0x34]
        );
        assert_eq!(
            fixed(ScsiError::param_bit(9, 2)),
            [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x26, 0, 0, 0x8A, 0, 9]
        );
        assert_eq!(
            descriptor(ScsiError::param_byte(3)),
            [0x72, 5, 0x26, 0, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0x80, 0, 3, 0]
        );
    }

    #[test]
    fn miscompare_carries_information() {
        assert_eq!(
            fixed(ScsiError::Miscompare { offset: 0x1234 }),
            [0xF0, 0, 0x0E, 0, 0, 0x12, 0x34, 10, 0, 0, 0, 0, 0x1D, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            descriptor(ScsiError::Miscompare { offset: 0x1234 }),
            [
                0x72, 0x0E, 0x1D, 0, 0, 0, 0, 12, // header
                0x00, 0x0A, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34 // information
            ]
        );
        // An offset beyond 32 bits cannot be reported in fixed format.
        assert_eq!(
            fixed(ScsiError::Miscompare { offset: 1 << 32 }),
            [0x70, 0, 0x0E, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x1D, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            descriptor(ScsiError::Miscompare { offset: 1 << 32 })[8..],
            [0x00, 0x0A, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 0]
        );
    }

    #[test]
    fn information_and_sense_key_specific_together() {
        let sense = Sense {
            information: Some(7),
            sense_key_specific: Some(SenseKeySpecific::FieldPointer {
                in_cdb: true,
                pointer: FieldPointer::byte(5),
            }),
            ..Sense::new(key::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB)
        };
        let r = sense.to_response(SenseFormat::Descriptor);
        assert_eq!(
            r.sense_bytes(),
            [
                0x72, 5, 0x24, 0, 0, 0, 0, 20, // header
                0x00, 0x0A, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 7, // information
                0x02, 0x06, 0, 0, 0xC0, 0, 5, 0 // sense key specific
            ]
        );
        let r = sense.to_response(SenseFormat::Fixed);
        assert_eq!(
            r.sense_bytes(),
            [0xF0, 0, 5, 0, 0, 0, 7, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xC0, 0, 5]
        );
    }

    #[test]
    fn every_error_maps_to_its_key_and_code() {
        let cases = [
            (ScsiError::ParameterListLengthError, 0x05, 0x1A, 0x00),
            (ScsiError::LbaOutOfRange, 0x05, 0x21, 0x00),
            (ScsiError::SavingParametersNotSupported, 0x05, 0x39, 0x00),
            (ScsiError::WriteProtected, 0x07, 0x27, 0x00),
            (ScsiError::SpaceAllocationFailed, 0x07, 0x27, 0x07),
            (ScsiError::UnrecoveredReadError, 0x03, 0x11, 0x00),
            (ScsiError::WriteError, 0x03, 0x0C, 0x00),
            (ScsiError::AbortedCommand, 0x0B, 0x00, 0x00),
            (ScsiError::InternalTargetFailure, 0x04, 0x44, 0x00),
            (ScsiError::NotReady, 0x02, 0x04, 0x00),
        ];
        for (error, sense_key, asc, ascq) in cases {
            assert_eq!(
                fixed(error),
                [0x70, 0, sense_key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0],
                "{error:?}"
            );
            assert_eq!(
                descriptor(error),
                [0x72, sense_key, asc, ascq, 0, 0, 0, 0],
                "{error:?}"
            );
        }
    }

    #[test]
    fn medium_errors_carry_the_lba() {
        let r = ScsiError::from(IoError::ReadAt(0x1234)).to_response(SenseFormat::Fixed);
        assert_eq!(
            r.sense_bytes(),
            [0xF0, 0, 3, 0, 0, 0x12, 0x34, 10, 0, 0, 0, 0, 0x11, 0, 0, 0, 0, 0]
        );
        let r = ScsiError::from(IoError::WriteAt(1 << 40)).to_response(SenseFormat::Descriptor);
        assert_eq!(
            r.sense_bytes(),
            [0x72, 3, 0x0C, 0, 0, 0, 0, 12, 0, 0x0A, 0x80, 0, 0, 0, 1, 0, 0, 0, 0, 0]
        );
        // Beyond 32 bits, fixed format cannot carry it: VALID stays 0.
        let r = ScsiError::WriteErrorAt(1 << 40).to_response(SenseFormat::Fixed);
        assert_eq!(r.sense_bytes()[0], 0x70);
    }

    #[test]
    fn busy_has_status_and_no_sense() {
        let r = ScsiError::Busy.to_response(SenseFormat::Fixed);
        assert_eq!(r.status, status::BUSY);
        assert_eq!(r.sense_len, 0);
        assert_eq!(r, Response::with_status(status::BUSY));
    }

    #[test]
    fn io_errors_map_in_one_place() {
        let length = Some(FieldPointer::byte(7));
        let cases = [
            (IoError::OutOfRange, ScsiError::LbaOutOfRange),
            (IoError::Read(5), ScsiError::UnrecoveredReadError),
            (IoError::Write(5), ScsiError::WriteError),
            (IoError::ReadAt(9), ScsiError::UnrecoveredReadErrorAt(9)),
            (IoError::WriteAt(9), ScsiError::WriteErrorAt(9)),
            (IoError::Unsupported, ScsiError::InvalidCommandOperationCode),
            (IoError::ShortBuffer, ScsiError::cdb_byte(7)),
            (IoError::TooLarge, ScsiError::cdb_byte(7)),
            (IoError::Aborted, ScsiError::AbortedCommand),
            (IoError::NoResources, ScsiError::Busy),
            (IoError::NoSpace(28), ScsiError::SpaceAllocationFailed),
            (IoError::NotReady, ScsiError::NotReady),
            (IoError::WriteProtected, ScsiError::WriteProtected),
            (IoError::InvalidField, ScsiError::InvalidFieldInCdb(None)),
            (IoError::DeviceFailure, ScsiError::InternalTargetFailure),
        ];
        for (io, expected) in cases {
            assert_eq!(ScsiError::from_io(io, length), expected, "{io:?}");
        }
        assert_eq!(
            ScsiError::from(IoError::TooLarge),
            ScsiError::InvalidFieldInCdb(None)
        );
    }
}
