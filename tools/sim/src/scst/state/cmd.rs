//! SCSI commands (`struct scst_cmd`): what the target driver submitted, or
//! an internal command of the core, with the target driver's copy of its
//! data. A command is in one [`Stage`] at a time; whatever finishes it sets
//! its result here and marks it complete, and `flow` processes the
//! completion at the end of the current call (`State::settle`).

use super::{State, NONE};
use crate::scst::parse::Local;
use dataplane::exec::{status, SENSE_BUFFER_SIZE};
use dataplane::scsi::{Asc, Sense};
use dataplane::scst::abi::*;

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Free,
    /// On the active list, waiting for the core (a handler call).
    Active,
    /// Owned by the core / the handler.
    InCore,
    /// Finished; its completion is being processed in this call.
    Completing,
    /// Finished and waiting for the initiator to reap it.
    Done,
}

/// `struct scst_cmd`, plus what the target driver and initiator hold.
#[derive(Debug)]
pub(super) struct Cmd {
    pub(super) stage: Stage,
    pub(super) tag: u64,
    /// Parent command of an internal (core-made) command, or NONE.
    pub(super) parent: u32,
    pub(super) sess: u32,
    pub(super) cdb: [u8; SCST_MAX_CDB_SIZE],
    pub(super) cdb_len: u16,
    pub(super) queue_type: u8,
    pub(super) sn: u32,
    /// Expected values from the initiator's data buffer.
    pub(super) exp_dir: u8,
    pub(super) exp_len: usize,
    // Values of the parse.
    pub(super) dir: u8,
    pub(super) lba: i64,
    pub(super) data_len: i64,
    pub(super) bufflen: i32,
    pub(super) out_bufflen: i32,
    pub(super) op_flags: u32,
    pub(super) timeout: i32,
    pub(super) local: Local,
    pub(super) ucmd: u32,
    /// The target driver's copy of the data: data-out from the initiator,
    /// data-in for the initiator. Grows to the largest transfer, never
    /// shrinks.
    pub(super) staging: Vec<u8>,
    /// Valid data-out bytes in `staging`.
    pub(super) out_len: usize,
    /// Valid data-in bytes in `staging`, or at `in_remote`.
    pub(super) in_len: usize,
    /// Non-zero: the data-in is still in this pinned handler buffer (the
    /// command's own until it is freed) and goes straight from there to
    /// the initiator at reap, as a target driver sends from the command's
    /// pages; see [`State::materialize_in`]. Zero: it is in `staging`.
    pub(super) in_remote: u64,
    pub(super) status: u8,
    pub(super) sense: [u8; SCST_SENSE_BUFFERSIZE],
    pub(super) sense_len: u8,
    pub(super) resp_data_len: i32,
    pub(super) aborted: bool,
    /// TMs waiting for this command to finish.
    pub(super) tm_waiters: Vec<u32>,
    /// Internal command in flight for this one (COMPARE AND WRITE, WRITE
    /// SAME), or NONE.
    pub(super) child: u32,
    /// COMPARE AND WRITE: 0 = reading, 1 = writing.
    pub(super) caw_phase: u8,
    /// DO_WRITE_SAME ranges (lba, blocks) still to write; capacity kept.
    pub(super) ws_ranges: Vec<(u64, u64)>,
    pub(super) ws_idx: usize,
}

impl Cmd {
    /// The command has no data-in (any it had is dropped, wherever it was).
    pub(super) fn drop_data_in(&mut self) {
        self.in_len = 0;
        self.in_remote = 0;
    }

    pub(super) fn new() -> Self {
        Self {
            stage: Stage::Free,
            tag: 0,
            parent: NONE,
            sess: NONE,
            cdb: [0; SCST_MAX_CDB_SIZE],
            cdb_len: 0,
            queue_type: SCST_CMD_QUEUE_SIMPLE,
            sn: 0,
            exp_dir: SCST_DATA_NONE,
            exp_len: 0,
            dir: SCST_DATA_NONE,
            lba: 0,
            data_len: 0,
            bufflen: 0,
            out_bufflen: 0,
            op_flags: 0,
            timeout: 0,
            local: Local::No,
            ucmd: NONE,
            staging: Vec::new(),
            out_len: 0,
            in_len: 0,
            in_remote: 0,
            status: 0,
            sense: [0; SCST_SENSE_BUFFERSIZE],
            sense_len: 0,
            resp_data_len: 0,
            aborted: false,
            tm_waiters: Vec::new(),
            child: NONE,
            caw_phase: 0,
            ws_ranges: Vec::new(),
            ws_idx: 0,
        }
    }

    /// Clears what a previous use of the slot left: result, ucmd, internal
    /// command and TM waiters.
    pub(super) fn reset_result(&mut self) {
        self.drop_data_in();
        self.status = status::GOOD;
        self.sense_len = 0;
        self.resp_data_len = 0;
        self.aborted = false;
        self.ucmd = NONE;
        self.child = NONE;
        self.caw_phase = 0;
        self.ws_ranges.clear();
        self.ws_idx = 0;
        self.tm_waiters.clear();
    }
}

impl State {
    /// CHECK CONDITION with this sense, in the device's sense format; the
    /// command's data-in is dropped.
    pub(super) fn set_error(&mut self, slot: u32, sense_key: u8, code: Asc, info: Option<u64>) {
        let format = self.sense_format();
        let c = &mut self.cmds[slot as usize];
        let mut sense = Sense::new(sense_key, code);
        sense.information = info;
        let mut buf = [0u8; SENSE_BUFFER_SIZE];
        let n = sense.encode(format, &mut buf);
        c.status = status::CHECK_CONDITION;
        c.sense.fill(0);
        c.sense[..n].copy_from_slice(&buf[..n]);
        c.sense_len = n as u8;
        c.resp_data_len = 0;
        c.drop_data_in();
    }

    /// `scst_set_busy`.
    fn set_busy(&mut self, slot: u32) {
        let c = &mut self.cmds[slot as usize];
        c.status = status::BUSY;
        c.sense_len = 0;
        c.resp_data_len = 0;
        c.drop_data_in();
    }

    /// GOOD, without sense.
    pub(super) fn set_good(&mut self, slot: u32) {
        let c = &mut self.cmds[slot as usize];
        c.status = status::GOOD;
        c.sense_len = 0;
    }

    /// Marks a command finished; it is processed by `settle`.
    pub(super) fn complete(&mut self, slot: u32) {
        let c = &mut self.cmds[slot as usize];
        if matches!(c.stage, Stage::InCore | Stage::Active) {
            c.stage = Stage::Completing;
            self.completing.push_back(slot);
        }
    }

    /// [`set_error`](Self::set_error) without INFORMATION, then
    /// [`complete`](Self::complete).
    pub(super) fn complete_error(&mut self, slot: u32, sense_key: u8, code: Asc) {
        self.set_error(slot, sense_key, code, None);
        self.complete(slot);
    }

    /// BUSY, then [`complete`](Self::complete).
    pub(super) fn complete_busy(&mut self, slot: u32) {
        self.set_busy(slot);
        self.complete(slot);
    }

    /// Finishes an aborted command without executing it (its status stays
    /// as it was; the initiator sees it as aborted).
    pub(super) fn complete_aborted(&mut self, slot: u32) {
        let c = &mut self.cmds[slot as usize];
        c.sense_len = 0;
        c.resp_data_len = 0;
        c.drop_data_in();
        self.complete(slot);
    }
}
