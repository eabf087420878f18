//! The data path and the server: SCSI emulation, the LUN engine, the port
//! between a LUN and a bdev, the kernel frontends (LIO's TCMU and SCST's
//! scst_user) and `dataplane serve`.
//!
//! This crate is what runs in production and nothing else: the frontends
//! see the kernel only through their own contracts ([`tcmu::SharedRegion`]
//! and [`tcmu::Doorbell`], [`scst::driver::ScstDriver`]), which a kernel
//! side in another crate may implement as well as the real kernel does.
//!
//! Data path: a frontend poller receives a command from the kernel, gives it a
//! task slot and hands it to the SCSI logical unit ([`lun::Lun`], through the
//! [`exec::CommandExecutor`] contract). The unit answers emulated commands
//! itself and turns media commands into [`bdev::IoRequest`]s on a
//! [`port::BdevPort`]; a [`port::BdevPoller`] runs the bdev channel. Responses
//! flow back through the unit to the frontend, which completes them to the
//! kernel in batches. What both frontends share (completion coalescing,
//! statistics, drain) is in [`frontend`]; [`stack`] assembles the chain
//! (bdev, port, bdev poller, LUN, frontend device) wherever one is built.
//! [`wait`] is the one `poll` on several descriptors that the control
//! plane's waits share (serve's control loop, the netlink socket).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod exec;
pub mod frontend;
pub mod kernfs;
pub mod latency;
pub mod lun;
pub mod port;
pub mod scsi;
pub mod scst;
pub mod serve;
pub mod stack;
pub mod tcmu;
pub mod wait;
