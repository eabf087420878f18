//! What the workspace's tests share, so that each helper exists once.
//!
//! - [`rng`]: the seeded generator every randomised test draws from.
//! - [`alloc`]: the counting global allocator of the zero-allocation tests,
//!   counting per thread and process-wide.
//! - [`skip`]: how a test that cannot run here says so, and when it must
//!   run anyway (`CI=true`).
//! - [`scratch`]: scratch directories on a disk filesystem (O_DIRECT).
//! - [`ceph`]: a Ceph cluster for the tests that need one (the process's
//!   own, started by `tests/ceph/cluster.sh`, or CI's) and RBD images in it.
//!
//! With the `dataplane` feature, the fixtures built on the data path:
//! - `exec`: test executors (`CommandExecutor`s);
//! - `scst`: scst_user fixtures (options, device descriptions,
//!   registration);
//! - `fake_fs`: a fake sysfs/configfs.
//!
//! Only tests depend on this crate (as a dev-dependency). It never depends
//! on the simulators, the bench or the tools: `dataplane`'s own tests use
//! it, and a fixture that needs a simulator lives in the simulator's crate
//! or in the one test binary that uses it.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod alloc;
pub mod ceph;
pub mod rng;
pub mod scratch;
pub mod skip;

#[cfg(feature = "dataplane")]
pub mod exec;
#[cfg(feature = "dataplane")]
pub mod fake_fs;
#[cfg(feature = "dataplane")]
pub mod scst;
