//! Simulators of the kernel sides of the dataplane's two frontends, so that
//! everything but the real kernel can be tested and benchmarked without
//! root.
//!
//! - [`tcmu`]: LIO's `target_core_user` ring, laid out and driven as the
//!   kernel does ([`tcmu::TcmuSim`]).
//! - [`scst`]: scst_user's ioctls and the parts of the SCST core a user-space
//!   device sees ([`scst::ScstSim`]).
//!
//! Each is also the initiator that submits SCSI commands. Where the real
//! kernel and a simulator disagree, the kernel wins and the simulator gets a
//! test for it. Nothing in the `dataplane` crate depends on this one.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod scst;
pub mod tcmu;
