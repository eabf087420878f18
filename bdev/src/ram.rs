//! RAM bdev: see issue 2 (in progress).
