//! SCSI for a direct-access block device: CDB decoding, the emulated
//! commands and sense data. Pure code: no I/O, no allocation on the command
//! path.
//!
//! - [`command`]: the decoded form of a CDB ([`Command`] and its field
//!   types), which every other part depends on and which depends on none;
//! - [`cdb`]: [`decode`] a CDB into a validated [`Command`];
//! - [`sense`]: [`ScsiError`] → status + sense ([`Sense`], fixed or
//!   descriptor format), the one place where failures are mapped;
//! - [`opcodes`]: operation codes, the supported-command table with CDB usage
//!   data, REPORT SUPPORTED OPERATION CODES data;
//! - [`inquiry`], [`mode`], [`capacity`], [`lba_status`]: response data of
//!   INQUIRY (standard and VPD), MODE SENSE/SELECT, READ CAPACITY, GET LBA
//!   STATUS;
//! - [`unmap`]: the UNMAP parameter list;
//! - [`unit` module](mod@unit): the unit's description ([`UnitInfo`]) and mode state.
//!
//! - [`emulation`]: [`emulate`] answers every command that needs no bdev
//!   I/O, with the builders above.
//!
//! The logical unit ([`crate::lun::Lun`]) executes the media commands.
//! Dependencies between these files point one way: `command`, `sense` and
//! `unit` at the bottom, the decoder and the response builders above them,
//! `emulation` on top; this file only declares and re-exports.

pub mod capacity;
pub mod cdb;
pub mod command;
pub mod emulation;
pub mod inquiry;
pub mod lba_status;
pub mod mode;
pub mod opcodes;
pub mod sense;
pub mod unit;
pub mod unmap;

pub use cdb::decode;
pub use command::{ByteCheck, Command, PageControl};
pub use emulation::{emulate, request_sense_data, RESPONSE_BUFFER_LEN};
pub use sense::{Asc, FieldPointer, ScsiError, Sense, SenseFormat, SenseKeySpecific};
pub use unit::{ControlMode, ModeState, ModeValues, UnitInfo};
