//! Kernel target administration for the `dataplane` command: everything the
//! data path does not need.
//!
//! - [`lio`]: TCMU devices in LIO's configfs (`dataplane lio create | delete
//!   | list`), optionally with a tcm_loop LUN.
//! - [`scst`]: LUNs of scst_user devices in SCST's sysfs (`dataplane scst
//!   add-lun | del-lun | list`).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod lio;
pub mod scst;
