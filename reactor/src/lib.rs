//! Pinned per-core event loops, the [`Poller`] contract and lock-free SPSC
//! rings.
//!
//! Nothing in this crate knows about SCSI or block devices: a reactor runs
//! pollers, pollers report work done, and SPSC rings carry values between
//! pollers on different (or the same) reactors.
//!
//! - [`reactor`]: [`Reactor::spawn`] starts a pinned loop over pollers;
//!   [`ReactorHandle`] adds/removes pollers, runs tasks on it, reads stats,
//!   stops and joins it. The module docs state the loop's contract.
//! - [`poller`]: the [`Poller`] trait and [`PollerId`].
//! - [`waker`]: [`Waker`], the eventfd + `sleeping` flag handshake that wakes
//!   a sleeping reactor without losing a wake-up.
//! - [`spsc`]: the bounded single-producer/single-consumer ring.
//! - [`stats`]: [`ReactorStats`] / [`PollerStats`] busy/idle accounting.
//! - [`clock`]: the TSC tick source the accounting uses.
//! - [`signals`]: [`ShutdownSignals`], SIGINT/SIGTERM to stop reactors.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod clock;
mod error;
pub mod poller;
pub mod reactor;
pub mod signals;
mod sleep;
pub mod spsc;
pub mod stats;
pub mod waker;

pub use error::Error;
pub use poller::{Poller, PollerId};
pub use reactor::{
    available_cores, IdlePolicy, Reactor, ReactorConfig, ReactorContext, ReactorExit,
    ReactorHandle, RemovedPoller, StatsReader, Stopper, IDLE_CLOCK_EVERY,
};
pub use signals::{ShutdownCause, ShutdownSignals};
pub use stats::{PollerStats, ReactorState, ReactorStats};
pub use waker::Waker;
