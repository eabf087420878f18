//! What the workspace's tests share, so that each helper exists once.
//!
//! Only tests depend on this crate (as a dev-dependency). It depends on
//! `dataplane`, never on the simulators or the bench: `dataplane`'s own
//! tests use it too.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod fake_fs;
