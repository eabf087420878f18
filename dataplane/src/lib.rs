//! SCSI emulation, the kernel frontends (TCMU, and later SCST) with simulators
//! of their kernel sides, and the glue that joins a frontend to a bdev.
//!
//! Data path: a frontend poller receives a command from the kernel, gives it a
//! task slot and hands it to the SCSI logical unit ([`lun::Lun`], through the
//! [`exec::CommandExecutor`] contract). The unit answers emulated commands
//! itself and turns media commands into [`bdev::IoRequest`]s on a
//! [`port::BdevPort`]; a [`port::BdevPoller`] runs the bdev channel. Responses
//! flow back through the unit to the frontend, which completes them to the
//! kernel in batches.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod bench;
pub mod exec;
pub mod initiator;
pub mod latency;
pub mod lio;
pub mod lun;
pub mod port;
pub mod scsi;
pub mod scst;
pub mod serve;
pub mod tcmu;
