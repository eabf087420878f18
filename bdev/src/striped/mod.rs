//! The `striped` bdev: RAID0 over child bdevs.
//!
//! # Layout
//! The parent address space is cut into strips (chunks) of `chunk_blocks`
//! blocks, a power of two, dealt round-robin over the `n` children, as in
//! SPDK's raid0:
//!
//! ```text
//! strip     = lba >> chunk_shift
//! child     = strip % n
//! child_lba = ((strip / n) << chunk_shift) + (lba & (chunk_blocks - 1))
//! ```
//!
//! Every child contributes the same number of blocks: the smallest child's
//! block count rounded down to a whole number of chunks, so the capacity is
//! `n` times that. All children must have the same block size. One child is
//! allowed (a passthrough).
//!
//! # Splitting: one child request per child, not per strip
//! A read or write is cut at strip boundaries, and **all pieces that land on
//! the same child are merged into one child request** with a gathered
//! scatter-gather list. Strips `k` and `k + n` are adjacent on their child, so
//! the pieces of one parent request on one child always form one contiguous
//! child range. (SPDK's raid0 instead issues one child I/O per strip, because
//! its generic layer splits at the strip boundary before raid0 sees the I/O.)
//! Merging means:
//! - at most `n` child requests per parent, however long the parent, instead
//!   of one per strip (a 128 KiB write over 4 children with 4 KiB chunks is 4
//!   child I/Os, not 32): less per-I/O work in the children and larger
//!   sequential child I/Os for file-backed children;
//! - a bounded fan-out, which bounds the child queue depth: a parent sends at
//!   most one request to each child, so child channels opened with the
//!   parent's queue depth can never be full (see below).
//!
//! A parent that lies within one strip (the common case when the initiator
//! honours `optimal_boundary_blocks`) becomes one child request that takes
//! the parent's scatter-gather list unchanged: nothing is gathered.
//!
//! The gathered iovecs point into the parent's buffers; an iovec that
//! straddles a strip boundary is split, iovecs may have any length, and
//! pieces that turn out adjacent in memory are coalesced. They live in
//! per-parent-slot storage that the channel owns and reuses (capacity kept;
//! it grows to a steady state and then never allocates).
//!
//! Unmap and write-zeroes are split the same way (each child's share of the
//! range is computed directly, in O(n), however large the range). Flush goes
//! to every child (as a whole-device flush). FUA passes through.
//!
//! A child's own limits (`max_transfer_blocks`, `max_unmap_blocks`) are
//! honoured by cutting its merged request into several; so the parent has no
//! limit of its own (both are 0).
//!
//! # Completion
//! The parent completes when every child request has completed, with the
//! first child error if any failed (the other child requests still run to
//! completion before the parent slot is reused). Range and buffer checks are
//! done on the parent, before splitting, with [`check_request`]; an unmap or
//! write-zeroes that not all children support fails with
//! [`IoError::Unsupported`] ([`check_supported`]) without reaching them.
//!
//! # Queue depths
//! A channel opened with queue depth `d` preallocates `d` parent slots and
//! opens each child channel with depth `d`: with one request per child per
//! parent that is always enough. If a child channel is full anyway (a child
//! whose limits force several requests per parent, or one that caps its own
//! depth), the remaining child requests are held, in order, and submitted
//! from `poll` as room appears: nothing is lost and nothing panics. When all
//! `d` slots are taken, `submit` hands the request back.
//!
//! # Files
//! `layout` holds the address mapping, `split` the cutting of a parent into
//! child requests (parent slots, gathered iovecs, child limits), `channel`
//! the submission to the children and the completion of parents; this file
//! the bdev itself (children checked and combined at construction).
//!
//! [`check_request`]: crate::request::check_request
//! [`check_supported`]: crate::request::check_supported
//! [`IoError::Unsupported`]: crate::IoError::Unsupported

mod channel;
mod layout;
mod split;
#[cfg(test)]
mod tests;

use crate::{Bdev, BdevChannel, BdevRef, Capabilities, Error, Geometry};
use channel::StripedChannel;

/// RAID0 over child bdevs. See the [module docs](self).
#[derive(Debug)]
pub struct StripedBdev {
    name: String,
    geometry: Geometry,
    children: Vec<BdevRef>,
    chunk_shift: u32,
    capabilities: Capabilities,
}

impl StripedBdev {
    /// Stripes `children` with strips of `chunk_blocks` blocks.
    ///
    /// Fails with [`Error::InvalidParameter`] for no children or a chunk size
    /// that is not a power of two, and with [`Error::IncompatibleChildren`]
    /// when the children differ in block size, one is listed twice, or the
    /// smallest is shorter than one chunk.
    pub fn new(
        name: impl Into<String>,
        children: Vec<BdevRef>,
        chunk_blocks: u32,
    ) -> Result<Self, Error> {
        let name = name.into();
        let incompatible = |reason: String| Error::IncompatibleChildren {
            name: name.clone(),
            reason,
        };
        let Some(first) = children.first() else {
            return Err(Error::InvalidParameter(format!(
                "striped bdev {name}: needs at least one child"
            )));
        };
        if !chunk_blocks.is_power_of_two() {
            return Err(Error::InvalidParameter(format!(
                "striped bdev {name}: chunk size {chunk_blocks} blocks is not a power of two"
            )));
        }
        let block_size = first.geometry().block_size;
        for (i, child) in children.iter().enumerate() {
            let child_bs = child.geometry().block_size;
            if child_bs != block_size {
                return Err(incompatible(format!(
                    "child {} has block size {child_bs} but child {} has {block_size}",
                    child.name(),
                    first.name()
                )));
            }
            if let Some(twin) = children[..i].iter().find(|c| same_bdev(c, child)) {
                return Err(incompatible(format!(
                    "child {} is listed twice (also as {})",
                    child.name(),
                    twin.name()
                )));
            }
        }
        let smallest = children
            .iter()
            .min_by_key(|c| c.geometry().num_blocks)
            .expect("children is not empty");
        let smallest_blocks = smallest.geometry().num_blocks;
        let chunk = u64::from(chunk_blocks);
        let per_child = smallest_blocks - smallest_blocks % chunk;
        if per_child == 0 {
            return Err(incompatible(format!(
                "child {} has {smallest_blocks} blocks, fewer than one chunk of {chunk_blocks}",
                smallest.name()
            )));
        }
        let num_blocks = per_child
            .checked_mul(children.len() as u64)
            .ok_or_else(|| {
                Error::InvalidParameter(format!("striped bdev {name}: capacity overflows"))
            })?;

        let child_caps: Vec<Capabilities> = children.iter().map(|c| c.capabilities()).collect();
        let capabilities = Capabilities {
            volatile_cache: child_caps.iter().any(|c| c.volatile_cache),
            unmap: child_caps.iter().all(|c| c.unmap),
            unmap_reads_zeroes: child_caps.iter().all(|c| c.unmap && c.unmap_reads_zeroes),
            write_zeroes: child_caps.iter().all(|c| c.write_zeroes),
            max_transfer_blocks: 0,
            max_unmap_blocks: 0,
            optimal_boundary_blocks: chunk_blocks,
        };
        Ok(Self {
            name,
            geometry: Geometry {
                block_size,
                num_blocks,
            },
            children,
            chunk_shift: chunk_blocks.trailing_zeros(),
            capabilities,
        })
    }

    /// The children, in stripe order.
    pub fn children(&self) -> &[BdevRef] {
        &self.children
    }

    /// Strip size in blocks.
    pub fn chunk_blocks(&self) -> u32 {
        1 << self.chunk_shift
    }
}

/// Whether two handles name the same bdev object.
fn same_bdev(a: &BdevRef, b: &BdevRef) -> bool {
    std::ptr::addr_eq(std::sync::Arc::as_ptr(a), std::sync::Arc::as_ptr(b))
}

impl Bdev for StripedBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// The size-weighted fraction of the children's.
    fn huge_page_fraction(&self) -> Option<f64> {
        crate::ram::combined_huge_page_fraction(&self.children)
    }

    fn open_channel(&self, queue_depth: usize) -> Result<Box<dyn BdevChannel>, Error> {
        Ok(Box::new(self.open_striped_channel(queue_depth)?))
    }
}

impl StripedBdev {
    fn open_striped_channel(&self, queue_depth: usize) -> Result<StripedChannel, Error> {
        StripedChannel::open(
            &self.children,
            self.geometry,
            self.capabilities,
            self.chunk_shift,
            queue_depth.max(1),
        )
    }
}
