//! What the two kernel frontends ([`crate::tcmu`] and [`crate::scst`])
//! share: one way to hold completions back so that one doorbell or one ioctl
//! carries many ([`Coalescer`]), one way to declare device statistics
//! (the `device_stats!` macro), one way to stop and drain a device
//! ([`Drain`]), and one way to tell the control plane that a device faulted
//! ([`SharedFault`]).
//!
//! Nothing here knows a kernel interface: each frontend feeds these types
//! the facts of its own poll (completions waiting, whether commands keep
//! arriving, whether the device is faulted) and applies their answers.

mod coalesce;
mod drain;
mod fault;
pub mod hold_tuner;
mod stats;

pub use coalesce::{CoalesceConfig, Coalescer, UNJOINED_TO_CLOSE};
pub use drain::Drain;
pub use fault::SharedFault;
pub use hold_tuner::HoldTuner;
pub(crate) use stats::device_stats;
