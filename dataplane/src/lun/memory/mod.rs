//! The memory the unit reads, writes and lends to the bdev.

mod data;
mod scratch;

pub(super) use data::{copy_from_iovs, copy_to_iovs, first_difference, scan_iovs, slice_iovs};
pub(super) use scratch::Scratch;
