//! The kernel's control filesystems as the control plane sees them: LIO's
//! configfs, sysfs (UIO devices, modules, SCSI disks, SCST's
//! `/sys/kernel/scst_tgt`), procfs and `/dev`.
//!
//! # Contract
//! - [`Roots`]: where each of them is. Every path is built from one value,
//!   so the same code administers the real machine ([`Roots::default`]) or a
//!   temporary tree laid out like it ([`Roots::under`]).
//! - Changes are values ([`FsOp`]: mkdir, rmdir, one attribute write,
//!   symlink, unlink) applied through the [`Fs`] trait: [`RealFs`] performs
//!   them; the test fake (`test_support::fake_fs`) records them and plays
//!   the kernel's part. Code that changes configfs or sysfs takes an `Fs`,
//!   never calls `std::fs` to write.
//! - Reads go straight to the filesystem under the roots ([`read_trimmed`],
//!   [`parse_u64_auto`], [`link_name`]): a fake kernel keeps its tree as the
//!   kernel would show it, so what the code reads is what it would read on
//!   a real machine.
//! - LIO's fabric LUNs and the backstores they export are walked by
//!   [`lun_links`] and [`wwn_lun_links`].
//! - Errors name the file ([`KernfsError`]).
//! - Waiting for what a write makes appear is polling ([`poll_until`]);
//!   SCST's management commands, which may answer "pending", are
//!   [`scst_mgmt`].
//!
//! Off the hot path: used by `serve` (TCMU discovery and recovery actions)
//! and by the LIO and SCST administration tools.

mod error;
mod fs;
mod lun;
mod read;
mod roots;
mod scst_mgmt;
mod wait;

pub use error::KernfsError;
pub use fs::{Fs, FsOp, RealFs};
pub use lun::{lun_links, numbered_subdirs, subdirs, wwn_lun_links, LunLink};
pub use read::{link_name, parse_u64_auto, read_trimmed};
pub use roots::Roots;
pub use scst_mgmt::{scst_mgmt, MgmtError};
pub use wait::poll_until;
