//! The block-device ("bdev") contract and its modules.
//!
//! A [`Bdev`] describes a device (block size, block count, capabilities) and
//! opens one [`BdevChannel`] per reactor that uses it (SPDK's io_channel idea):
//! everything a channel holds (queues, child channels, io_uring) belongs to one
//! thread and is never shared, so the data path takes no locks.
//!
//! # The I/O contract
//! - A caller hands an [`IoRequest`] to [`BdevChannel::submit`]. Data moves
//!   through the request's scatter-gather list ([`SgList`]), which points into
//!   the caller's memory (the TCMU data area, an SCST buffer): the bdev copies
//!   straight from and to it.
//! - Completion is always deferred: `submit` never calls back. The caller
//!   collects [`IoCompletion`]s from [`BdevChannel::poll`], in any order; each
//!   submitted request completes exactly once, carrying its `tag` unchanged.
//! - Requests are checked by the bdev: an LBA range beyond the device, a
//!   scatter-gather list shorter than `blocks * block_size`, or an operation
//!   the bdev does not support completes with an [`IoError`], never a panic.
//! - A request in flight may be aborted ([`BdevChannel::abort`]): a channel
//!   that can abort it completes it, still exactly once and from `poll`,
//!   with [`IoError::Aborted`]; one that cannot says so, and the request
//!   completes as it would have.
//!
//! # Durability
//! - A write completes successfully only once the device has accepted it:
//!   a later read returns its data, but unless the device has no volatile
//!   cache ([`Capabilities::volatile_cache`] false) it may not survive a
//!   power loss yet.
//! - A write with [`IoRequest::fua`] completes only once its data is on
//!   stable media, as far as the device promises.
//! - A completed [`IoOp::Flush`] makes every write that completed before the
//!   flush was submitted durable in the same sense. Writes still in flight
//!   when it is submitted are not covered: the caller orders (the SCSI layer
//!   submits SYNCHRONIZE CACHE's flush after the writes it must cover have
//!   completed, and answers only when the flush has).
//!
//! [`request`] is the generic request layer every bdev shares: the checks
//! ([`check_request`], [`check_supported`]) and the deferred completion
//! queue ([`CompletionQueue`]), with the contract above spelled out for a
//! channel's implementer.
//!
//! Modules: [`ram`] (anonymous memory), [`null`] (completes without touching
//! data), [`striped`] (RAID0 over child bdevs), [`file`](mod@file) (a regular file
//! or a block device through io_uring, on the engine in [`uring`]) and
//! [`nvme`] (an NVMe namespace through NVMe passthrough on the same engine),
//! [`rbd`] (a Ceph RBD image through librbd, loaded at run time), and
//! [`fault`] (injects errors, delays and stuck I/O into another bdev).
//! [`parse_size`] reads the sizes that configuration and command lines give
//! them.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod channel_stats;
pub mod error;
pub mod fault;
pub mod file;
pub mod io;
pub mod null;
pub mod nvme;
pub mod ram;
pub mod rbd;
pub mod request;
mod size;
pub mod striped;
pub mod uring;

use std::fmt;
use std::sync::Arc;

pub use error::{Error, IoError, OpenProblem};
pub use fault::FaultBdev;
pub use file::{FileBdev, FileOptions, FileStats};
pub use io::{IoCompletion, IoOp, IoRequest, IoVec, SgList};
pub use null::NullBdev;
pub use nvme::{NvmeBdev, NvmeIdentity, NvmeOptions, NvmeStats, UnmapMode};
pub use ram::{Backing, HugePages, RamBdev};
pub use rbd::{RbdBdev, RbdOptions, RbdStats};
pub use request::{check_request, check_supported, CompletionQueue};
pub use size::parse_size;
pub use striped::StripedBdev;

/// Shape of a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Logical block size in bytes: a power of two, at least 512.
    pub block_size: u32,
    /// Number of logical blocks.
    pub num_blocks: u64,
}

impl Geometry {
    /// The geometry of `num_blocks` blocks of `block_size` bytes, checked
    /// for what every bdev needs: a power-of-two block size of at least 512
    /// and at least one block ([`Error::InvalidParameter`] otherwise).
    pub(crate) fn checked(block_size: u32, num_blocks: u64) -> Result<Self, Error> {
        if block_size < 512 || !block_size.is_power_of_two() {
            return Err(Error::InvalidParameter(format!(
                "block size {block_size} is not a power of two of at least 512"
            )));
        }
        if num_blocks == 0 {
            return Err(Error::InvalidParameter("size is zero blocks".into()));
        }
        Ok(Self {
            block_size,
            num_blocks,
        })
    }

    /// Capacity in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.num_blocks * u64::from(self.block_size)
    }

    /// log2 of the block size.
    pub fn block_shift(&self) -> u32 {
        self.block_size.trailing_zeros()
    }
}

/// What a bdev can do beyond reads and writes, and its limits. The SCSI layer
/// advertises exactly these (VPD B0/B2, READ CAPACITY's LBPME, the caching
/// mode page), so they must be true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The device has a volatile write cache: `Flush` and FUA do real work.
    /// When false, flush completes at once and FUA needs nothing.
    pub volatile_cache: bool,
    /// `Unmap` is supported (deallocates; see `unmap_reads_zeroes`).
    pub unmap: bool,
    /// Blocks read back as zeroes after `Unmap` (SCSI LBPRZ).
    pub unmap_reads_zeroes: bool,
    /// `WriteZeroes` is supported natively (without a data buffer).
    pub write_zeroes: bool,
    /// Largest transfer in blocks for one `Read`/`Write` (0 = no limit).
    pub max_transfer_blocks: u32,
    /// Largest `Unmap`/`WriteZeroes` range in blocks for one request
    /// (0 = no limit).
    pub max_unmap_blocks: u32,
    /// I/O that stays within aligned runs of this many blocks is cheapest
    /// (the strip of a striped bdev); 0 = no preference.
    pub optimal_boundary_blocks: u32,
}

/// How the medium below the logical blocks is organised, as far as it
/// matters to an initiator: the SCSI layer reports it in READ CAPACITY (16)
/// (LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT) and the Block Limits VPD page
/// (OPTIMAL TRANSFER LENGTH GRANULARITY, OPTIMAL UNMAP GRANULARITY).
///
/// Invariants (checked by [`Topology::is_valid_for`]): `physical_block_size`
/// is a power of two, a multiple of the logical block size and at most 2^15
/// logical blocks; `unmap_granularity_blocks` is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// Bytes the device writes atomically and without a read-modify-write
    /// (the physical sector of a disk, the block of a filesystem).
    pub physical_block_size: u32,
    /// Logical blocks in the smallest unit the device deallocates: an
    /// `Unmap` of a smaller or misaligned range may only zero part of it.
    pub unmap_granularity_blocks: u32,
}

impl Topology {
    /// One physical block per logical block, unmapping at any block: what a
    /// bdev without a medium of its own (memory, null) reports.
    pub fn flat(block_size: u32) -> Self {
        Self {
            physical_block_size: block_size,
            unmap_granularity_blocks: 1,
        }
    }

    /// log2 of the logical blocks per physical block.
    pub fn physical_block_exponent(&self, block_size: u32) -> u32 {
        (self.physical_block_size / block_size.max(1)).trailing_zeros()
    }

    /// Whether the invariants hold for logical blocks of `block_size`.
    pub fn is_valid_for(&self, block_size: u32) -> bool {
        let phys = self.physical_block_size;
        block_size != 0
            && phys.is_power_of_two()
            && phys >= block_size
            && phys.is_multiple_of(block_size)
            && phys / block_size <= 1 << 15
            && self.unmap_granularity_blocks >= 1
    }
}

/// A block device. Shared between reactors (`Arc<dyn Bdev>`); all per-thread
/// state lives in the channels it opens.
pub trait Bdev: Send + Sync + fmt::Debug {
    /// The bdev's configured name.
    fn name(&self) -> &str;

    /// Block size and count.
    fn geometry(&self) -> Geometry;

    /// Supported operations and limits.
    fn capabilities(&self) -> Capabilities;

    /// The medium's physical block and unmap granularity. By default
    /// [`Topology::flat`]: a bdev over a real device says what the device
    /// reports.
    fn topology(&self) -> Topology {
        Topology::flat(self.geometry().block_size)
    }

    /// The fraction (0.0 to 1.0) of the bdev's memory backed by huge pages
    /// now, for a bdev that keeps its blocks in memory (`ram`; a `striped`
    /// bdev weighs its children's with
    /// [`ram::combined_huge_page_fraction`]). `None` (the default) when the
    /// bdev has no such memory or it cannot be known. May read `/proc`: a
    /// control-path call, never for a reactor.
    fn huge_page_fraction(&self) -> Option<f64> {
        None
    }

    /// Opens a channel for the calling reactor. `queue_depth` is the most
    /// requests the caller will keep in flight on it; the channel preallocates
    /// for that many so the data path never allocates.
    fn open_channel(&self, queue_depth: usize) -> Result<Box<dyn BdevChannel>, Error>;
}

/// Shared handle to a bdev.
pub type BdevRef = Arc<dyn Bdev>;

/// Per-reactor access to a bdev. Owned by one thread; never shared.
pub trait BdevChannel: Send + fmt::Debug {
    /// Queues one request. Returns it back if the channel already holds
    /// `queue_depth` requests; the caller retries after `poll`.
    fn submit(&mut self, request: IoRequest) -> Result<(), IoRequest>;

    /// Makes progress and hands every finished request to `done`. Returns the
    /// number of completions delivered.
    fn poll(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize;

    /// Requests submitted and not yet delivered by `poll`.
    fn in_flight(&self) -> usize;

    /// Asks to abort the request in flight tagged `tag` (the first one if
    /// the caller reused a tag). Returns true when the channel found it and
    /// will complete it with [`IoError::Aborted`] from a later `poll`
    /// (exactly once, as always; its buffer is not touched after that
    /// completion, and its slot in the channel is free once it is
    /// delivered). Returns false (the default, for a channel that cannot
    /// abort) when no such request is in flight or it cannot be aborted:
    /// then it completes as it would have, and the caller waits for that.
    /// Never allocates.
    fn abort(&mut self, tag: u64) -> bool {
        let _ = tag;
        false
    }

    /// Descriptors that become readable when the kernel completes this
    /// channel's I/O (an io_uring fd), so that a reactor may sleep with I/O
    /// in flight and wake on its completion. Empty (the default) for a
    /// channel that completes in its own `poll`. Queried once, on the
    /// control path.
    fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
        Vec::new()
    }

    /// Offers the memory a frontend will name in its requests' buffers (its
    /// whole data mapping) so that the channel can register it with the
    /// kernel once, for I/O without a per-request page walk (io_uring fixed
    /// buffers). Returns whether the memory is now registered: `Ok(false)`
    /// when the channel has no use for it (the default: memory-backed bdevs)
    /// or when the kernel refused (then the channel works as before and says
    /// so once on stderr). Call it before submitting requests; a later call
    /// replaces the earlier registration.
    ///
    /// # Safety
    /// Each region must stay mapped to the same memory until the channel is
    /// dropped or a later call replaces the registration (which the channel
    /// makes only with no request in flight): the kernel keeps the pages it
    /// registered, and a request whose buffer lies in a region is done on
    /// those pages.
    unsafe fn register_memory(&mut self, regions: &[IoVec]) -> Result<bool, Error> {
        let _ = regions;
        Ok(false)
    }
}
