//! The bodies of the fuzz targets.
//!
//! Each target is a function `fn(&[u8])` that turns arbitrary bytes into a
//! scenario for one parser or component, runs it, and panics when one of
//! the target's checks fails. The cargo-fuzz binaries in `fuzz/fuzz_targets/`
//! are one-line calls into this crate; `tests/replay.rs` runs the same
//! functions on stable over the committed corpus (`fuzz/corpus/<name>/`)
//! and a few thousand seeded random inputs, so CI exercises every target.
//! [`TARGETS`] lists them by name.

pub mod config;
pub mod input;
pub mod lun;
pub mod netlink;
pub mod params;
pub mod pool;
pub mod recording;
pub mod ring;
pub mod ring_exec;
pub mod scsi;
pub mod scst;
pub mod scst_kernel;
pub mod sense_check;
pub mod striped;
pub mod unit;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target: its name (the cargo-fuzz binary and corpus directory)
/// and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("tcmu_ring", ring::run),
    ("lun", lun::run),
    ("scsi_cdb", scsi::run),
    ("param_lists", params::run),
    ("striped", striped::run),
    ("buffer_pool", pool::run),
    ("netlink_event", netlink::run),
    ("serve_config", config::run),
    ("scst_device", scst::run),
];
