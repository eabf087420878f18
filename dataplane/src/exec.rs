//! The contract between a frontend (TCMU ring, SCST fd) and the SCSI layer.
//!
//! A frontend receives commands from the kernel, gives each a task slot, and
//! hands the CDB and the command's data buffer to a [`CommandExecutor`] (the
//! SCSI logical unit, [`crate::lun::Lun`]). Later it collects a [`Response`]
//! per slot from [`CommandExecutor::poll`] and reports it to the kernel in a
//! batch. Every response comes out of `poll`, including those of commands that
//! were answered without I/O, so the frontend has one completion path.

use bdev::IoVec;

/// Size of the sense buffer a response can carry (TCMU's
/// `TCMU_SENSE_BUFFERSIZE`; SCST accepts up to 252).
pub const SENSE_BUFFER_SIZE: usize = 96;

/// SAM status codes used by the dataplane.
pub mod status {
    /// GOOD.
    pub const GOOD: u8 = 0x00;
    /// CHECK CONDITION: sense data describes the error.
    pub const CHECK_CONDITION: u8 = 0x02;
    /// CONDITION MET.
    pub const CONDITION_MET: u8 = 0x04;
    /// BUSY.
    pub const BUSY: u8 = 0x08;
    /// RESERVATION CONFLICT.
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    /// TASK SET FULL.
    pub const TASK_SET_FULL: u8 = 0x28;
    /// ACA ACTIVE.
    pub const ACA_ACTIVE: u8 = 0x30;
    /// TASK ABORTED.
    pub const TASK_ABORTED: u8 = 0x40;
}

/// The outcome of one SCSI command as the frontend reports it to the kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// SAM status byte.
    pub status: u8,
    /// Valid sense bytes in `sense` (0 unless CHECK CONDITION).
    pub sense_len: u8,
    /// Sense data, fixed or descriptor format.
    pub sense: [u8; SENSE_BUFFER_SIZE],
    /// Bytes of data-in actually placed in the command's buffer (for TCMU's
    /// READ_LEN and SCST's `resp_data_len`); 0 for commands without data-in.
    pub data_in_len: u32,
}

impl Response {
    /// GOOD status with `data_in_len` bytes of data-in.
    pub const fn good(data_in_len: u32) -> Self {
        Self {
            status: status::GOOD,
            sense_len: 0,
            sense: [0; SENSE_BUFFER_SIZE],
            data_in_len,
        }
    }

    /// A status without sense data (BUSY, TASK SET FULL, TASK ABORTED, ...).
    pub const fn with_status(status: u8) -> Self {
        Self {
            status,
            sense_len: 0,
            sense: [0; SENSE_BUFFER_SIZE],
            data_in_len: 0,
        }
    }

    /// The valid sense bytes.
    pub fn sense_bytes(&self) -> &[u8] {
        &self.sense[..usize::from(self.sense_len).min(SENSE_BUFFER_SIZE)]
    }
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &format_args!("{:#04x}", self.status))
            .field("sense", &self.sense_bytes())
            .field("data_in_len", &self.data_in_len)
            .finish()
    }
}

/// Executes SCSI commands for one frontend device. Owned by the frontend's
/// poller; single-threaded.
pub trait CommandExecutor {
    /// Number of task slots; a slot is an index below this.
    fn max_tasks(&self) -> u32;

    /// Starts the command `cdb` in task slot `slot`, which must be free (no
    /// response pending for it). `data` is the command's whole data buffer
    /// (data-out for writes, data-in space for reads); the executor copies the
    /// iovec list itself, so `data` may be reused after this returns. The
    /// response comes later from [`poll`](Self::poll). A slot out of range or
    /// already busy is a frontend bug: the command is answered with BUSY.
    ///
    /// # Safety
    /// The memory named by `data` must stay valid, and must not be accessed by
    /// the frontend, until the response for `slot` has been delivered by
    /// `poll`.
    unsafe fn submit(&mut self, slot: u32, cdb: &[u8], data: &[IoVec]);

    /// Best-effort abort of the command in `slot`: if it has not reached the
    /// bdev it completes with TASK ABORTED at the next `poll`; if it has, the
    /// bdev is asked to abort its requests (`BdevChannel::abort`, which a bdev
    /// that cannot abort ignores) and it completes when the bdev returns them.
    /// Unknown slots are ignored.
    fn abort(&mut self, slot: u32);

    /// Publishes the bdev requests staged by `submit` and `poll` (call once at
    /// the end of each frontend poll).
    fn flush(&mut self);

    /// Advances in-flight commands and hands up to `max` finished ones to
    /// `done` as `(slot, response)`. Returns how many were delivered.
    fn poll(&mut self, max: usize, done: &mut dyn FnMut(u32, &Response)) -> usize;

    /// Commands submitted whose responses have not been delivered yet.
    fn in_flight(&self) -> usize;
}
