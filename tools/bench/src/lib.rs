//! `dataplane bench`: the whole dataplane driven through the kernel
//! simulators by an fio-like initiator.
//!
//! - [`initiator`]: the workload engine ([`initiator::Job`]) that drives a
//!   simulated kernel the way fio drives a LUN, with verification and
//!   latency histograms.
//! - [`run`](mod@run): runs a bench job ([`BenchConfig`], checked and placed
//!   on CPUs by `config.rs`): builds its devices (`devices.rs`, with
//!   [`dataplane::stack`]), reactors and simulators (`frontends.rs`),
//!   drives them through the measured window (`window.rs`) and reports
//!   ([`report`]). The bench thread's CPU is handled by `affinity.rs`;
//!   what can go wrong is in [`error`].
//! - [`reference`](mod@reference), [`raw_uring`] (with [`raw_nvme`]),
//!   [`jitter`]: the reference copy loop (RAM), the raw io_uring loop
//!   (bdevs over storage: reads and writes on the files `files.rs`
//!   resolves and creates, NVMe commands on the namespaces `namespaces.rs`
//!   opens) and the platform stall floor, measured beside a run
//!   (`reference_run.rs`).
//! - [`trace`], [`histogram_file`], [`plot`], [`outputs`]: what a run
//!   leaves beside its report (latencies and the completion rate over
//!   time, sampled by the bench's thread), written as HdrHistogram
//!   percentile-distribution files (`--histogram`) and an SVG picture
//!   (`--plot`), to files opened before the run.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod affinity;
mod config;
mod devices;
pub mod error;
mod files;
mod frontends;
pub mod histogram_file;
pub mod initiator;
pub mod jitter;
mod namespaces;
pub mod outputs;
pub mod plot;
pub mod raw_nvme;
pub mod raw_uring;
pub mod reference;
mod reference_run;
pub mod report;
pub mod run;
pub mod trace;
mod window;

pub use config::{BdevKind, BenchConfig, FileConfig, Frontend, RbdConfig, MAX_IO_BYTES};
pub use error::{BenchConfigError, BenchError, ScstSetupError};
pub use frontends::{BenchInitiator, ScstInitiator, TcmuInitiator};
pub use run::{run, run_traced};
pub use window::Progress;
