//! What a unit's commands were and how they ended, for the metrics: commands
//! by kind (read, write, other) counted at `submit`, responses by status and
//! CHECK CONDITIONs by sense key counted as `poll` delivers them, and the
//! bdev's side (failed requests, requests outstanding).
//!
//! The unit counts into a plain [`LunCountersSnapshot`] (the *tally*) as
//! it works and publishes it into the shared [`LunCounters`] once at the
//! end of a `poll` that saw any work: a relaxed load and store per changed
//! counter, nothing per command but an increment in its own memory, and
//! nothing at all in a poll that found nothing to do.

use crate::exec::{status, Response};
use crate::frontend::device_stats;
use crate::scsi::opcodes;
use crate::scsi::sense::key;

device_stats! {
    /// A unit's command counters, shared with the metrics
    /// ([`Lun::counters`](super::Lun::counters)).
    pub struct LunCounters;
    /// A copy of [`LunCounters`] (and the unit's tally of one poll).
    pub struct LunCountersSnapshot;
    counters {
        /// READ (6, 10, 12, 16) commands submitted.
        reads,
        /// WRITE (6, 10, 12, 16) and WRITE AND VERIFY commands submitted.
        writes,
        /// Every other command submitted (emulated ones, SYNCHRONIZE
        /// CACHE, UNMAP, WRITE SAME, COMPARE AND WRITE, VERIFY, ...).
        others,
        /// Responses with status GOOD (or CONDITION MET).
        good,
        /// CHECK CONDITION with sense key NOT READY.
        not_ready,
        /// CHECK CONDITION with sense key MEDIUM ERROR.
        medium_error,
        /// CHECK CONDITION with sense key HARDWARE ERROR.
        hardware_error,
        /// CHECK CONDITION with sense key ILLEGAL REQUEST.
        illegal_request,
        /// CHECK CONDITION with sense key UNIT ATTENTION.
        unit_attention,
        /// CHECK CONDITION with sense key DATA PROTECT.
        data_protect,
        /// CHECK CONDITION with sense key ABORTED COMMAND.
        aborted_command,
        /// CHECK CONDITION with sense key MISCOMPARE.
        miscompare,
        /// CHECK CONDITION with any other sense key, or without sense.
        other_sense,
        /// Responses with status BUSY (a slot the frontend gave twice).
        busy,
        /// Responses with status TASK ABORTED.
        task_aborted,
        /// Responses with any other status.
        other_status,
        /// Bdev requests that completed with an error.
        bdev_errors,
    }
    gauges {
        /// Bdev requests staged or in the bdev, as of the last poll that
        /// saw work.
        bdev_outstanding,
    }
}

/// A command's kind, by its operation code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// READ (6, 10, 12, 16).
    Read,
    /// WRITE (6, 10, 12, 16), WRITE AND VERIFY (10, 16).
    Write,
    /// Anything else.
    Other,
}

impl CommandKind {
    /// The kind of the command with operation code `opcode`.
    pub fn of(opcode: u8) -> Self {
        match opcode {
            opcodes::READ_6 | opcodes::READ_10 | opcodes::READ_12 | opcodes::READ_16 => Self::Read,
            opcodes::WRITE_6
            | opcodes::WRITE_10
            | opcodes::WRITE_12
            | opcodes::WRITE_16
            | opcodes::WRITE_AND_VERIFY_10
            | opcodes::WRITE_AND_VERIFY_16 => Self::Write,
            _ => Self::Other,
        }
    }
}

/// The sense key of CHECK CONDITION sense data, fixed (70h/71h) or
/// descriptor (72h/73h) format; `None` for no or unrecognised sense.
pub fn sense_key(sense: &[u8]) -> Option<u8> {
    match *sense.first()? & 0x7F {
        0x70 | 0x71 => sense.get(2).map(|b| b & 0x0F),
        0x72 | 0x73 => sense.get(1).map(|b| b & 0x0F),
        _ => None,
    }
}

impl LunCountersSnapshot {
    /// Counts a command submitted with operation code `opcode`.
    pub(super) fn submitted(&mut self, opcode: u8) {
        match CommandKind::of(opcode) {
            CommandKind::Read => self.reads += 1,
            CommandKind::Write => self.writes += 1,
            CommandKind::Other => self.others += 1,
        }
    }

    /// Counts a response delivered.
    pub(super) fn delivered(&mut self, response: &Response) {
        match response.status {
            status::GOOD | status::CONDITION_MET => self.good += 1,
            status::CHECK_CONDITION => match sense_key(response.sense_bytes()) {
                Some(key::NOT_READY) => self.not_ready += 1,
                Some(key::MEDIUM_ERROR) => self.medium_error += 1,
                Some(key::HARDWARE_ERROR) => self.hardware_error += 1,
                Some(key::ILLEGAL_REQUEST) => self.illegal_request += 1,
                Some(key::UNIT_ATTENTION) => self.unit_attention += 1,
                Some(key::DATA_PROTECT) => self.data_protect += 1,
                Some(key::ABORTED_COMMAND) => self.aborted_command += 1,
                Some(key::MISCOMPARE) => self.miscompare += 1,
                _ => self.other_sense += 1,
            },
            status::BUSY => self.busy += 1,
            status::TASK_ABORTED => self.task_aborted += 1,
            _ => self.other_status += 1,
        }
    }

    /// CHECK CONDITIONs by sense key, with the label each is exported
    /// under (`sense_key`).
    pub fn by_sense_key(&self) -> [(&'static str, u64); 9] {
        [
            ("NOT_READY", self.not_ready),
            ("MEDIUM_ERROR", self.medium_error),
            ("HARDWARE_ERROR", self.hardware_error),
            ("ILLEGAL_REQUEST", self.illegal_request),
            ("UNIT_ATTENTION", self.unit_attention),
            ("DATA_PROTECT", self.data_protect),
            ("ABORTED_COMMAND", self.aborted_command),
            ("MISCOMPARE", self.miscompare),
            ("OTHER", self.other_sense),
        ]
    }

    /// Responses that were neither GOOD nor CHECK CONDITION, by status,
    /// with the label each is exported under (`status`).
    pub fn by_status(&self) -> [(&'static str, u64); 3] {
        [
            ("BUSY", self.busy),
            ("TASK_ABORTED", self.task_aborted),
            ("OTHER", self.other_status),
        ]
    }

    /// Commands by kind, with the label each is exported under (`op`).
    pub fn by_kind(&self) -> [(&'static str, u64); 3] {
        [
            ("read", self.reads),
            ("write", self.writes),
            ("other", self.others),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::{ScsiError, SenseFormat};

    #[test]
    fn kinds_by_opcode() {
        for op in [0x08, 0x28, 0xA8, 0x88] {
            assert_eq!(CommandKind::of(op), CommandKind::Read, "{op:#x}");
        }
        for op in [0x0A, 0x2A, 0xAA, 0x8A, 0x2E, 0x8E] {
            assert_eq!(CommandKind::of(op), CommandKind::Write, "{op:#x}");
        }
        for op in [0x00, 0x12, 0x35, 0x42, 0x41, 0x89, 0x2F, 0xFF] {
            assert_eq!(CommandKind::of(op), CommandKind::Other, "{op:#x}");
        }
    }

    #[test]
    fn sense_key_in_both_formats() {
        for format in [SenseFormat::Fixed, SenseFormat::Descriptor] {
            let r = ScsiError::UnrecoveredReadError.to_response(format);
            assert_eq!(sense_key(r.sense_bytes()), Some(key::MEDIUM_ERROR));
        }
        assert_eq!(sense_key(&[]), None);
        assert_eq!(sense_key(&[0x70, 0]), None);
        assert_eq!(sense_key(&[0x7F, 0, 5]), None);
    }

    #[test]
    fn responses_by_status_and_key() {
        let mut tally = LunCountersSnapshot::default();
        tally.delivered(&Response::good(0));
        tally.delivered(&Response::with_status(status::BUSY));
        tally.delivered(&Response::with_status(status::TASK_ABORTED));
        tally.delivered(&Response::with_status(status::RESERVATION_CONFLICT));
        tally.delivered(&ScsiError::Miscompare { offset: 3 }.to_response(SenseFormat::Descriptor));
        let mut no_sense = Response::with_status(status::CHECK_CONDITION);
        no_sense.sense_len = 0;
        tally.delivered(&no_sense);
        assert_eq!(tally.good, 1);
        assert_eq!(
            tally.by_status(),
            [("BUSY", 1), ("TASK_ABORTED", 1), ("OTHER", 1)]
        );
        assert_eq!(tally.miscompare, 1);
        assert_eq!(tally.other_sense, 1);
        let errors: u64 = tally.by_sense_key().iter().map(|(_, n)| n).sum();
        assert_eq!(errors, 2);
    }
}
