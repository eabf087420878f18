//! The `ram` bdev: a block device in anonymous memory.
//!
//! All blocks live in one private anonymous mapping, obtained once at
//! construction (a [`RamMapping`]: hugetlbfs pages when reserved, else
//! transparent huge pages collapsed at [`prefault`](RamBdev::prefault), see
//! its module for the policy) and zero at start. How much of it is on huge
//! pages is measured, not assumed: [`Bdev::huge_page_fraction`].
//! Nothing is ever allocated, locked or system-called per request, except that
//! an unmap or write-zeroes covering at least [`DISCARD_MIN_BYTES`] of whole
//! discard units (2 MiB huge pages, or base pages for a [`Backing::Normal`]
//! mapping) hands those units back to the kernel with one `madvise(MADV_DONTNEED)`,
//! which both zeroes them and returns the memory; the unaligned edges are
//! zeroed by hand.
//!
//! # Channels
//! A channel checks each request in [`BdevChannel::submit`] and queues it;
//! [`BdevChannel::poll`] executes the queued batch in order (one `memcpy` per
//! contiguous run between the bdev memory and the request's iovecs, with the
//! device ranges of the next requests prefetched) and completes it, so
//! completion is deferred and batched like the `null` bdev's (and SPDK's
//! malloc bdev).
//!
//! # Concurrency contract
//! Any number of channels, on any threads, may use one `RamBdev` at once: the
//! memory is shared through a raw pointer (the mapping is owned by an `Arc`
//! that the bdev and every channel hold), and there are no locks. As on a real
//! disk, **the initiator orders overlapping I/O**: while a write to some blocks
//! is in flight, another write to or read of any of those blocks (from any
//! channel) leaves their contents, and the data read, unspecified (a mix of
//! old and new bytes at any granularity). Requests that do not overlap never
//! affect each other. The bytes have no validity invariant (`u8`) and no Rust
//! reference to the mapping is ever created, so a torn block is garbage data,
//! never a broken Rust value; the SCSI layer never issues overlapping writes
//! without ordering them, exactly as it would not to a disk.
//!
//! # Files
//! `mapping` holds the mapping under its huge-page policy (allocation,
//! prefault and collapse, the huge-page fraction; also used by the bench's
//! reference loop), reading `/proc/self/smaps` in `smaps`; `fraction`
//! combines fractions over bdevs and words the fix; `memory` is the bdev's
//! view of the mapping (discard); `channel` the per-reactor request
//! execution; this file the bdev itself.

mod channel;
mod fraction;
mod mapping;
mod memory;
mod smaps;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::{Bdev, BdevChannel, Capabilities, Error, Geometry};
use channel::RamChannel;
pub use fraction::{
    combined_huge_page_fraction, huge_page_percent, huge_page_remedy, huge_pages_for,
};
pub use mapping::{Backing, Collapse, HugePages, RamMapping, HUGE_PAGE_SIZE};
use memory::RamMemory;
pub use memory::DISCARD_MIN_BYTES;
pub use smaps::one_read as one_smaps_read;

/// A block device in anonymous memory. See the [module docs](self) for the
/// backing and the concurrency contract.
#[derive(Debug)]
pub struct RamBdev {
    name: String,
    geometry: Geometry,
    memory: Arc<RamMemory>,
}

impl RamBdev {
    /// A zeroed ram bdev of `num_blocks` blocks of `block_size` bytes, backed
    /// by huge pages when available ([`HugePages::Auto`]).
    ///
    /// Fails with [`Error::InvalidParameter`] for a bad geometry and with
    /// [`Error::Allocation`] when the memory cannot be mapped (for example
    /// more than the machine can commit).
    pub fn new(name: impl Into<String>, block_size: u32, num_blocks: u64) -> Result<Self, Error> {
        Self::with_huge_pages(name, block_size, num_blocks, HugePages::Auto)
    }

    /// As [`RamBdev::new`], choosing the huge-page policy.
    pub fn with_huge_pages(
        name: impl Into<String>,
        block_size: u32,
        num_blocks: u64,
        huge_pages: HugePages,
    ) -> Result<Self, Error> {
        let name = name.into();
        let geometry = Geometry::checked(block_size, num_blocks)?;
        let size = num_blocks
            .checked_mul(u64::from(block_size))
            .and_then(|bytes| usize::try_from(bytes).ok())
            .filter(|&bytes| bytes <= isize::MAX as usize)
            .ok_or_else(|| {
                Error::InvalidParameter(format!(
                    "ram bdev {name}: {num_blocks} blocks of {block_size} bytes do not fit in the address space"
                ))
            })?;
        let memory = RamMemory::new(&name, size, huge_pages)?;
        Ok(Self {
            name,
            geometry,
            memory: Arc::new(memory),
        })
    }

    /// What backs the memory (decided once, at construction).
    pub fn backing(&self) -> Backing {
        self.memory.mapping().backing()
    }

    /// Bytes mapped (the device size, rounded up to whole huge pages when
    /// huge pages are used).
    pub fn mapped_bytes(&self) -> usize {
        self.memory.mapping().len()
    }

    /// Commits all of the device's memory now, so that I/O never takes a
    /// page fault, and brings it onto huge pages where the kernel can (for
    /// benchmarks and latency-sensitive setups). Contents are unchanged, so
    /// it may be called at any time, even with I/O in flight; it may take a
    /// while (reclaim and compaction), so never on a reactor.
    ///
    /// Uses one `madvise(MADV_POPULATE_WRITE)` (Linux 5.14+; if the kernel
    /// refuses it, touches every page with an atomic no-op write instead),
    /// then, for transparent huge pages not all in place, one
    /// `madvise(MADV_COLLAPSE)` (Linux 6.1+), whose outcome is returned.
    /// A later unmap hands large ranges back to the kernel again.
    pub fn prefault(&self) -> Collapse {
        self.memory.prefault()
    }
}

impl Bdev for RamBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            volatile_cache: false,
            unmap: true,
            unmap_reads_zeroes: true,
            write_zeroes: true,
            max_transfer_blocks: 0,
            max_unmap_blocks: 0,
            optimal_boundary_blocks: 0,
        }
    }

    /// 1.0 on hugetlbfs pages; on transparent huge pages, measured now from
    /// `/proc/self/smaps` ([`RamMapping::huge_page_fraction`]); `None` with
    /// [`HugePages::Off`] or below one huge page, where huge pages do not
    /// apply.
    fn huge_page_fraction(&self) -> Option<f64> {
        self.memory.mapping().huge_page_fraction()
    }

    fn open_channel(&self, queue_depth: usize) -> Result<Box<dyn BdevChannel>, Error> {
        Ok(Box::new(RamChannel::new(
            Arc::clone(&self.memory),
            self.geometry,
            queue_depth.max(1),
        )))
    }
}
