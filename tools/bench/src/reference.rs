//! The reference loop the RAM-bdev target is measured against.
//!
//! A plain single-core loop that copies `io_size` bytes from a random
//! `io_size`-aligned offset of a `source_size` buffer into the next slot of a
//! `ring_size` ring — the least work any handler must do to serve a random
//! read from RAM into a shared data area. `dataplane bench --reference` runs it
//! in the same process and reports the dataplane's rate as a ratio of it; the
//! criterion benchmark `benches/benches/reference.rs` runs the same loop.
//!
//! The source buffer is memory exactly like a RAM bdev's: a
//! [`RamMapping`] under the same huge-page policy, prefaulted and collapsed
//! the same way, and its [`huge_page_fraction`](ReferenceBuffers::huge_page_fraction)
//! is reported beside the bdev's, so that the ratio compares like with like
//! (a page walk per copy on one side and not on the other would make it a
//! measure of the TLB).

use std::time::{Duration, Instant};

use bdev::ram::{Collapse, HugePages, RamMapping};
use fastrand::Rng;

/// Parameters of the reference loop.
#[derive(Debug, Clone, Copy)]
pub struct ReferenceConfig {
    /// Bytes of the source buffer (1 GiB in the target).
    pub source_size: usize,
    /// Bytes of the destination ring (8 MiB).
    pub ring_size: usize,
    /// Bytes per copy (4 KiB).
    pub io_size: usize,
    /// How long to run.
    pub runtime: Duration,
}

impl Default for ReferenceConfig {
    fn default() -> Self {
        Self {
            source_size: 1 << 30,
            ring_size: 8 << 20,
            io_size: 4096,
            runtime: Duration::from_secs(3),
        }
    }
}

/// Result of a reference run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReferenceResult {
    /// Copies done.
    pub copies: u64,
    /// Wall time spent copying.
    pub elapsed: Duration,
}

impl ReferenceResult {
    /// Copies per second.
    pub fn rate(&self) -> f64 {
        self.copies as f64 / self.elapsed.as_secs_f64()
    }
}

/// Buffers of the reference loop, allocated and touched up front so the
/// timed loop measures copies, not page faults.
#[derive(Debug)]
pub struct ReferenceBuffers {
    /// The source, mapped like a RAM bdev's memory (at least
    /// `config.source_size` bytes).
    source: RamMapping,
    /// What `MADV_COLLAPSE` did to the source.
    collapse: Collapse,
    ring: Vec<u8>,
    config: ReferenceConfig,
    rng: Rng,
    slot: usize,
}

impl ReferenceBuffers {
    /// Allocates and fills both buffers (non-zero, so no page is shared).
    ///
    /// # Panics
    /// When the source cannot be mapped (as `vec!` would abort); see
    /// [`try_new`](Self::try_new).
    pub fn new(config: ReferenceConfig) -> Self {
        Self::try_new(config).unwrap_or_else(|e| panic!("reference loop: {e}"))
    }

    /// Allocates both buffers, the source as a RAM bdev's memory is
    /// ([`RamMapping`], [`HugePages::Auto`], prefaulted and collapsed onto
    /// huge pages where the kernel can), and fills them (non-zero, so no
    /// page is shared). Fails when the source cannot be mapped.
    pub fn try_new(config: ReferenceConfig) -> Result<Self, bdev::Error> {
        let mut source = RamMapping::new("reference", config.source_size, HugePages::Auto)?;
        let collapse = source.prefault();
        for (i, page) in source.as_mut_slice()[..config.source_size]
            .chunks_mut(4096)
            .enumerate()
        {
            page.fill(i as u8 | 1);
        }
        Ok(Self {
            source,
            collapse,
            ring: vec![2u8; config.ring_size], // even: differs from every source byte
            config,
            rng: Rng::with_seed(0x5eed),
            slot: 0,
        })
    }

    /// The fraction of the source buffer on huge pages, measured now (see
    /// [`RamMapping::huge_page_fraction`]; a control-path call).
    pub fn huge_page_fraction(&self) -> Option<f64> {
        self.source.huge_page_fraction()
    }

    /// What `MADV_COLLAPSE` did to the source buffer.
    pub fn collapse(&self) -> Collapse {
        self.collapse
    }

    /// Does `n` copies; returns a value derived from the data so the copies
    /// cannot be optimised away.
    #[inline]
    pub fn copy_n(&mut self, n: u64) -> u8 {
        let io = self.config.io_size;
        let units = (self.config.source_size / io) as u64;
        let slots = self.config.ring_size / io;
        let source = self.source.as_slice();
        for _ in 0..n {
            let src = self.rng.u64(..units) as usize * io;
            let dst = self.slot * io;
            self.ring[dst..dst + io].copy_from_slice(&source[src..src + io]);
            self.slot += 1;
            if self.slot == slots {
                self.slot = 0;
            }
        }
        self.ring[self.slot * io]
    }

    /// Runs the loop for the configured time.
    pub fn run(&mut self) -> ReferenceResult {
        let start = Instant::now();
        let mut copies = 0u64;
        let mut sink = 0u8;
        while start.elapsed() < self.config.runtime {
            sink ^= self.copy_n(4096);
            copies += 4096;
        }
        std::hint::black_box(sink);
        ReferenceResult {
            copies,
            elapsed: start.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_whole_units_into_consecutive_slots() {
        let config = ReferenceConfig {
            source_size: 64 * 4096,
            ring_size: 4 * 4096,
            io_size: 4096,
            runtime: Duration::from_millis(1),
        };
        let mut r = ReferenceBuffers::new(config);
        r.copy_n(5);
        // Every ring slot now holds one whole source page (a single byte
        // value, odd by construction), and the cursor wrapped to slot 1.
        for slot in r.ring.chunks(4096) {
            assert!(slot.iter().all(|&b| b == slot[0] && b & 1 == 1));
        }
        assert_eq!(r.slot, 1);
        // 256 KiB: below one huge page, so huge pages do not apply.
        assert_eq!(r.huge_page_fraction(), None);
        assert_eq!(r.collapse(), Collapse::NotNeeded);
        let result = r.run();
        assert!(result.copies > 0 && result.rate() > 0.0);
    }
}
