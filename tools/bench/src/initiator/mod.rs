//! The initiator side of the simulators: a workload generator that drives a
//! simulated kernel (TCMU or SCST) the way fio drives a LUN, with data
//! verification and latency histograms.
//!
//! A [`Job`] owns `iodepth` I/O slots, each with a preallocated buffer. Its
//! loop, run on the simulator's thread, is: reap completions from the
//! [`Initiator`] (recording latency, checking read data), refill free slots
//! with new I/Os from the [`Workload`], tell the kernel side about the batch,
//! repeat. Nothing in the loop allocates.
//!
//! Verification (`verify`): every logical block of the device has an expected
//! CRC32C in a [`VerifyModel`]. Writes fill their buffer with data derived from
//! the LBA and a sequence number and, on success, record the CRCs of its
//! blocks; reads compare the CRC of every block they return. No two in-flight
//! I/Os touch the same block when one of them writes, so the expectation is
//! always exact.

mod job;
mod verify;
mod workload;

pub use job::{Job, JobError, JobSnapshot};
pub use verify::VerifyModel;
pub use workload::{Pattern, SizeSplit, Workload, WorkloadError};

/// The data phase of a command, as the initiator hands it to the kernel side.
#[derive(Debug, Clone, Copy)]
pub enum IoData<'a> {
    /// No data.
    None,
    /// Data-out: bytes the kernel copies to the handler.
    Out(&'a [u8]),
    /// Data-in: a buffer of this many bytes to be filled by the handler.
    In(usize),
}

/// Why a command could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// No room now (ring, data area or tags full); retry after reaping.
    #[error("kernel queue full")]
    Full,
    /// The kernel side can take no more commands (e.g. a broken ring).
    #[error("kernel side failed: {0}")]
    Failed(String),
}

/// One finished command as the kernel side reports it.
pub trait Completion {
    /// The tag given at submission.
    fn tag(&self) -> u64;
    /// SAM status byte.
    fn status(&self) -> u8;
    /// Sense bytes (empty unless CHECK CONDITION).
    fn sense(&self) -> &[u8];
    /// Copies the data-in bytes into `dst`; returns how many were copied.
    fn copy_data_in(&self, dst: &mut [u8]) -> usize;
}

/// What the initiator needs from a simulated kernel.
pub trait Initiator {
    /// Queues one command (not yet announced to the handler).
    fn submit(&mut self, cdb: &[u8], data: IoData<'_>, tag: u64) -> Result<(), SubmitError>;

    /// Announces the commands queued since the last call (one notification).
    fn notify(&mut self);

    /// Collects finished commands, calling `done` for each.
    fn reap(&mut self, done: &mut dyn FnMut(&dyn Completion)) -> Result<usize, SubmitError>;

    /// Completion doorbells the handler has rung so far (TCMU: 4-byte
    /// writes; SCST: ioctls).
    fn doorbells(&self) -> u64;

    /// An fd that becomes readable when the handler completed commands,
    /// for an initiator with nothing to do to wait on; `None` if there is
    /// none (the initiator then spins).
    fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}
