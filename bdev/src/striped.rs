//! Striped (RAID0) bdev: see issue 2 (in progress).
