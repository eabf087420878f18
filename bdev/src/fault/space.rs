//! Out of space: a thin-provisioning model. The bdev has room for `limit`
//! allocated blocks; a block is allocated by its first write (or write
//! zeroes) and released by an unmap. A write that would allocate past the
//! limit fails whole with out of space (ENOSPC), allocating nothing.
//!
//! One bit per block, in atomic words shared by every channel of the bdev
//! (allocated once, when the limit is set), and a count of the bits set.
//! A write first reserves the blocks it would allocate in the count, then
//! sets their bits, giving back those another channel set meanwhile; so a
//! write racing another over the same blocks may be refused while the two
//! together would have fitted (never the reverse: the limit holds).

use std::sync::atomic::{AtomicU64, Ordering};

/// Allocated blocks and the limit. See the module docs.
#[derive(Debug)]
pub(super) struct Space {
    limit: u64,
    used: AtomicU64,
    bits: Box<[AtomicU64]>,
}

/// Calls `f(word, mask)` for the words and bits of blocks `lba..lba + n`.
fn words(lba: u64, n: u64, mut f: impl FnMut(usize, u64)) {
    let mut at = lba;
    let end = lba + n;
    while at < end {
        let word = at / 64;
        let first = at % 64;
        let count = (64 - first).min(end - at);
        let mask = if count == 64 {
            u64::MAX
        } else {
            ((1u64 << count) - 1) << first
        };
        f(word as usize, mask);
        at += count;
    }
}

impl Space {
    /// Room for `limit` blocks of a device of `num_blocks` blocks.
    pub(super) fn new(limit: u64, num_blocks: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            bits: (0..num_blocks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Blocks allocated now.
    pub(super) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Allocates blocks `lba..lba + n` (in range: checked by the caller);
    /// false, allocating nothing, when that would pass the limit.
    pub(super) fn allocate(&self, lba: u64, n: u64) -> bool {
        let mut new = 0;
        words(lba, n, |w, mask| {
            new += u64::from((!self.bits[w].load(Ordering::Relaxed) & mask).count_ones());
        });
        if new == 0 {
            return true;
        }
        let before = self.used.fetch_add(new, Ordering::AcqRel);
        if before + new > self.limit {
            self.used.fetch_sub(new, Ordering::AcqRel);
            return false;
        }
        let mut set = 0;
        words(lba, n, |w, mask| {
            let old = self.bits[w].fetch_or(mask, Ordering::AcqRel);
            set += u64::from((!old & mask).count_ones());
        });
        // Blocks another channel allocated meanwhile were reserved twice.
        if set < new {
            self.used.fetch_sub(new - set, Ordering::AcqRel);
        }
        true
    }

    /// Releases blocks `lba..lba + n`.
    pub(super) fn release(&self, lba: u64, n: u64) {
        words(lba, n, |w, mask| {
            let old = self.bits[w].fetch_and(!mask, Ordering::AcqRel);
            let cleared = u64::from((old & mask).count_ones());
            if cleared != 0 {
                self.used.fetch_sub(cleared, Ordering::AcqRel);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_once_releases_and_refuses_past_the_limit() {
        let s = Space::new(100, 1000);
        assert!(s.allocate(60, 70));
        assert_eq!(s.used(), 70);
        assert!(s.allocate(60, 70), "already allocated: free");
        assert!(s.allocate(100, 60), "30 new blocks");
        assert_eq!(s.used(), 100);
        assert!(!s.allocate(0, 1), "full");
        assert!(!s.allocate(150, 20), "partly new, too many");
        assert_eq!(s.used(), 100, "a refused write allocates nothing");
        s.release(0, 64);
        assert_eq!(s.used(), 96);
        assert!(s.allocate(990, 4));
        assert!(!s.allocate(994, 1));
        s.release(0, 1000);
        assert_eq!(s.used(), 0);
        assert!(s.allocate(0, 100));
    }
}
