//! TCMU device discovery: which UIO devices are TCMU rings, whose they are,
//! and what LIO's configfs says about them.
//!
//! Off the hot path; used by `dataplane serve` (attach, rescan, crash
//! recovery) and by `dataplane lio`.
//!
//! # Sources
//! - `<sysfs>/class/uio/uioN/name`: the kernel names a TCMU ring
//!   `tcm-user/<hba>/<name>/<dev_config>`, and `dev_config` is by convention
//!   `<subtype>/<cfg>` ([`TcmuUioName`]). Ours is `<subtype>/<bdev name>`.
//! - `<sysfs>/class/uio/uioN/maps/map0/size`: the exact mmap length.
//! - `<configfs>/core/user_<hba>/<name>/`: `attrib/*`, `info`, `enable`,
//!   `action/*` ([`device_facts`], [`block_dev`], [`reset_ring`]).
//!
//! Every path comes from a [`Roots`] so the code runs against fake trees in
//! tests; the recovery actions change configfs through an [`Fs`]
//! ([`crate::kernfs`]).
//!
//! # Layout
//! `uio_name.rs` parses the kernel's UIO names ([`TcmuUioName`]);
//! `scan.rs` lists the TCMU rings in `class/uio` ([`scan`]); `facts.rs`
//! reads a device's configfs attributes ([`device_facts`]); `actions.rs`
//! writes its recovery actions ([`block_dev`], [`reset_ring`]);
//! `holders.rs` finds who has a ring open ([`uio_holders`]);
//! [`DiscoveryError`] is in `error.rs`.
//!
//! [`Roots`]: crate::kernfs::Roots
//! [`Fs`]: crate::kernfs::Fs

mod actions;
mod error;
mod facts;
mod holders;
mod scan;
mod uio_name;

#[cfg(test)]
mod tests;

pub use actions::{block_dev, reset_ring, reset_ring_op, RingReset};
pub use error::DiscoveryError;
pub use facts::{device_facts, TcmuDeviceFacts};
pub use holders::{is_uio_open, uio_holders};
pub use scan::{find_uio, scan, UioDevice, UioScan};
pub use uio_name::{parse_tcmu_ident, TcmuUioName, TCMU_UIO_PREFIX};
