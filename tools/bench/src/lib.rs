//! `dataplane bench`: the whole dataplane driven through the kernel
//! simulators by an fio-like initiator.
//!
//! - [`initiator`]: the workload engine ([`initiator::Job`]) that drives a
//!   simulated kernel the way fio drives a LUN, with verification and
//!   latency histograms.
//! - [`run`](mod@run): builds the devices, reactors and simulators of a bench job,
//!   runs it and reports ([`report`]).
//! - [`reference`], [`jitter`]: the reference copy loop and the platform
//!   stall floor measured beside a run.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod frontends;
pub mod initiator;
pub mod jitter;
pub mod reference;
pub mod report;
pub mod run;

pub use frontends::{BenchInitiator, ScstInitiator, TcmuInitiator};
pub use run::{run, BdevKind, BenchConfig, BenchError, Frontend, Progress, MAX_IO_BYTES};
