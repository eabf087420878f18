//! Pinned per-core event loops, the [`Poller`] contract and lock-free SPSC
//! rings.
//!
//! Nothing in this crate knows about SCSI or block devices: a reactor runs
//! pollers, pollers report work done, and SPSC rings carry values between
//! pollers on different (or the same) reactors.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod poller;
pub mod spsc;
pub mod waker;

pub use poller::Poller;
pub use waker::Waker;
