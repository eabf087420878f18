//! PARSE: the CDB decoded against the unit, answered with the data
//! direction, LBA, lengths and `op_flags` SCST needs (see the module docs
//! of [`super`]).

use super::{ScstDevice, ScstStatsSnapshot};
use crate::exec::{CommandExecutor, Response};
use crate::scsi::{cdb, Command, ScsiError, UnitInfo};
use crate::scst::abi::*;
use crate::scst::driver::ScstDriver;

impl<D: ScstDriver, E: CommandExecutor> ScstDevice<D, E> {
    /// PARSE: queues the reply (the parse result, or CHECK CONDITION).
    pub(super) fn parse(
        &mut self,
        cmd_h: u32,
        p: &ScstUserScsiCmdParse,
        c: &mut ScstStatsSnapshot,
    ) {
        c.parse += 1;
        match self.parse_reply(p) {
            Ok(result) => self.replies.push_parse_ok(cmd_h, &result),
            Err(response) => {
                c.parse_errors += 1;
                self.replies.push_parse_error(cmd_h, &response);
            }
        }
    }

    /// The PARSE reply for `p`, or the error response.
    fn parse_reply(&self, p: &ScstUserScsiCmdParse) -> Result<ParseResult, Response> {
        let format = self.sense_format;
        let core_local = p.op_flags & SCST_INFO_VALID != 0 && p.op_flags & SCST_LOCAL_CMD != 0;
        let len = usize::from(p.cdb_len);
        let decoded = match &self.config.unit {
            Some(unit) if (1..=SCST_MAX_CDB_SIZE).contains(&len) => {
                cdb::decode(&p.cdb[..len], unit).map(|command| (command, unit))
            }
            _ => Err(ScsiError::InvalidCommandOperationCode),
        };
        match decoded {
            Ok((command, unit)) => {
                parse_result(&command, unit, p).map_err(|e| e.to_response(format))
            }
            Err(_) if core_local => Ok(ParseResult::passthrough(p)),
            Err(e) => Err(e.to_response(format)),
        }
    }
}

/// The PARSE answer for a decoded command.
fn parse_result(
    command: &Command,
    unit: &UnitInfo,
    p: &ScstUserScsiCmdParse,
) -> Result<ParseResult, ScsiError> {
    let bs = u64::from(unit.block_size);
    let medium = |lba: u64, blocks: u32| Some((lba, u64::from(blocks) * bs));
    // (data-in bytes, (lba, medium bytes) if the command addresses blocks,
    // writes the medium)
    let (data_in, range, writes): (u64, Option<(u64, u64)>, bool) = match *command {
        Command::RequestSense { alloc_len, .. }
        | Command::Inquiry { alloc_len, .. }
        | Command::ModeSense { alloc_len, .. }
        | Command::ReadCapacity16 { alloc_len }
        | Command::GetLbaStatus { alloc_len, .. }
        | Command::ReportSupportedOperationCodes { alloc_len, .. } => {
            (u64::from(alloc_len), None, false)
        }
        Command::ReadCapacity10 => (8, None, false),
        Command::Read { lba, blocks, .. } => (u64::from(blocks) * bs, medium(lba, blocks), false),
        Command::Write { lba, blocks, .. }
        | Command::WriteAndVerify { lba, blocks, .. }
        | Command::WriteSame { lba, blocks, .. }
        | Command::CompareAndWrite { lba, blocks, .. } => (0, medium(lba, blocks), true),
        Command::Verify { lba, blocks, .. } | Command::SynchronizeCache { lba, blocks } => {
            (0, medium(lba, blocks), false)
        }
        Command::Unmap { .. } => (0, None, true),
        Command::TestUnitReady
        | Command::ModeSelect { .. }
        | Command::StartStopUnit { .. }
        | Command::PreventAllowMediumRemoval => (0, None, false),
    };
    let data_out = cdb::data_out_len(command, unit.block_size);
    let (direction, bufflen) = if data_in > 0 {
        (SCST_DATA_READ, data_in)
    } else if data_out > 0 {
        (SCST_DATA_WRITE, data_out)
    } else {
        (SCST_DATA_NONE, 0)
    };
    let bufflen = i32::try_from(bufflen)
        .map_err(|_| ScsiError::InvalidFieldInCdb(cdb::transfer_length_field(p.cdb[0])))?;
    let (lba, data_len) = range.unwrap_or((0, u64::from(bufflen as u32)));
    let mut op_flags = p.op_flags
        & !(SCST_UNKNOWN_LBA | SCST_UNKNOWN_LENGTH | SCST_LBA_NOT_VALID | SCST_WRITE_MEDIUM);
    op_flags |= SCST_INFO_VALID;
    if writes {
        op_flags |= SCST_WRITE_MEDIUM;
    }
    if range.is_none() {
        op_flags |= SCST_LBA_NOT_VALID;
    }
    Ok(ParseResult {
        queue_type: if p.queue_type <= SCST_CMD_QUEUE_ACA {
            p.queue_type
        } else {
            SCST_CMD_QUEUE_SIMPLE
        },
        data_direction: direction,
        cdb_len: p.cdb_len,
        lba: i64::try_from(lba).unwrap_or(i64::MAX),
        data_len: i64::try_from(data_len).unwrap_or(i64::MAX),
        bufflen,
        op_flags,
        out_bufflen: 0,
        ..Default::default()
    })
}
