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

use std::collections::VecDeque;

use crate::request::{check_request, check_supported, CompletionQueue};
use crate::{
    Bdev, BdevChannel, BdevRef, Capabilities, Error, Geometry, IoCompletion, IoError, IoOp,
    IoRequest, IoVec, SgList,
};

/// Iovecs preallocated per child in each parent slot.
const IOVS_PER_CHILD: usize = 8;

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

    fn open_channel(&self, queue_depth: usize) -> Result<Box<dyn BdevChannel>, Error> {
        Ok(Box::new(self.open_striped_channel(queue_depth)?))
    }
}

impl StripedBdev {
    fn open_striped_channel(&self, queue_depth: usize) -> Result<StripedChannel, Error> {
        let depth = queue_depth.max(1);
        let n = self.children.len();
        let mut children = Vec::with_capacity(n);
        let mut limits = Vec::with_capacity(n);
        for child in &self.children {
            children.push(child.open_channel(depth)?);
            let caps = child.capabilities();
            limits.push(ChildLimits {
                rw: nonzero_or_max(caps.max_transfer_blocks),
                unmap: nonzero_or_max(caps.max_unmap_blocks),
            });
        }
        let slots = (0..depth).map(|_| ParentIo::new(n)).collect();
        Ok(StripedChannel {
            geometry: self.geometry,
            capabilities: self.capabilities,
            chunk_shift: self.chunk_shift,
            children,
            limits,
            slots,
            free: (0..depth as u32).rev().collect(),
            held: VecDeque::with_capacity(depth),
            done: CompletionQueue::new(depth),
            open: vec![NO_REQUEST; n],
            depth,
        })
    }
}

fn nonzero_or_max(limit: u32) -> u32 {
    if limit == 0 {
        u32::MAX
    } else {
        limit
    }
}

/// Largest request a child accepts, in blocks.
#[derive(Debug, Clone, Copy)]
struct ChildLimits {
    rw: u32,
    unmap: u32,
}

/// One child request of a parent.
#[derive(Debug, Clone, Copy)]
struct ChildIo {
    child: u32,
    lba: u64,
    blocks: u32,
    /// Its iovecs: `child_iovs[child][iov_start..iov_end]` of the parent slot.
    iov_start: u32,
    iov_end: u32,
}

/// A parent request in flight: one preallocated slot of the channel.
#[derive(Debug)]
struct ParentIo {
    tag: u64,
    op: IoOp,
    fua: bool,
    /// The parent's own list while it is in flight, for a child request that
    /// takes it unchanged ([`WHOLE_PARENT_SGL`]); [`SgList::EMPTY`] when the
    /// slot is free, so that nothing (not even `Debug`) reads a stale list.
    sgl: SgList,
    /// Child requests submitted and not yet completed.
    in_children: u32,
    /// Index in `child_ios` of the first child request not yet submitted.
    next_submit: usize,
    /// The first child error.
    error: Option<IoError>,
    child_ios: Vec<ChildIo>,
    /// Per child, the gathered iovecs of its requests. Not modified while any
    /// of the slot's child requests is in flight, so the `SgList`s handed to
    /// the children stay valid.
    child_iovs: Vec<Vec<IoVec>>,
}

impl ParentIo {
    fn new(children: usize) -> Self {
        Self {
            tag: 0,
            op: IoOp::Flush,
            fua: false,
            sgl: SgList::EMPTY,
            in_children: 0,
            next_submit: 0,
            error: None,
            child_ios: Vec::with_capacity(children),
            child_iovs: (0..children)
                .map(|_| Vec::with_capacity(IOVS_PER_CHILD))
                .collect(),
        }
    }

    fn all_done(&self) -> bool {
        self.in_children == 0 && self.next_submit == self.child_ios.len()
    }
}

/// `ChildIo::iov_start`/`iov_end` of a child request that takes the
/// parent's scatter-gather list unchanged (a parent within one strip).
const WHOLE_PARENT_SGL: u32 = u32::MAX;

/// `StripedChannel::open` entry for "no request being built for this child".
const NO_REQUEST: u32 = u32::MAX;

/// A channel of the striped bdev.
#[derive(Debug)]
struct StripedChannel {
    geometry: Geometry,
    capabilities: Capabilities,
    chunk_shift: u32,
    /// One channel per child, in stripe order.
    children: Vec<Box<dyn BdevChannel>>,
    limits: Vec<ChildLimits>,
    /// `depth` parent slots; a child request's tag is its slot's index.
    slots: Vec<ParentIo>,
    /// Free slot indexes.
    free: Vec<u32>,
    /// Slots with child requests not yet submitted (a child was full), oldest
    /// first.
    held: VecDeque<u32>,
    /// Parent completions not yet delivered.
    done: CompletionQueue,
    /// While splitting: per child, the index in `child_ios` of the request
    /// being built, or `NO_REQUEST`.
    open: Vec<u32>,
    depth: usize,
}

/// Walks a scatter-gather list front to back.
struct SgCursor<'a> {
    iovs: &'a [IoVec],
    index: usize,
    offset: usize,
}

impl SgCursor<'_> {
    /// Appends the next `bytes` bytes of the list to `out` as iovecs, merging
    /// with `out`'s last element from `merge_from` on when adjacent in memory.
    fn take(&mut self, mut bytes: usize, out: &mut Vec<IoVec>, merge_from: usize) {
        while bytes > 0 {
            let Some(iov) = self.iovs.get(self.index) else {
                // check_request guaranteed the length; nothing more to give.
                debug_assert!(false, "scatter-gather list shorter than checked");
                return;
            };
            let available = iov.len - self.offset;
            if available == 0 {
                self.index += 1;
                self.offset = 0;
                continue;
            }
            let n = available.min(bytes);
            // Address arithmetic only; the result stays inside the iovec.
            let base = iov.base.wrapping_add(self.offset);
            let mergeable = out.len() > merge_from;
            match out.last_mut() {
                Some(last) if mergeable && last.base.wrapping_add(last.len) == base => {
                    last.len += n;
                }
                _ => out.push(IoVec { base, len: n }),
            }
            self.offset += n;
            bytes -= n;
        }
    }
}

impl StripedChannel {
    fn check(&self, request: &IoRequest) -> Result<(), IoError> {
        check_request(&self.geometry, request)?;
        check_supported(&self.capabilities, request)
    }

    /// Fills `slot`'s child requests for a checked request.
    fn split(&mut self, slot: usize, request: &IoRequest) {
        let Self {
            slots,
            open,
            limits,
            chunk_shift,
            geometry,
            ..
        } = self;
        let parent = &mut slots[slot];
        parent.tag = request.tag;
        parent.op = request.op;
        parent.fua = request.fua;
        let n = open.len() as u64;
        let shift = *chunk_shift;
        let strip = request.lba >> shift;
        let end = request.lba + u64::from(request.blocks);
        if matches!(request.op, IoOp::Read | IoOp::Write)
            && request.blocks > 0
            && (end - 1) >> shift == strip
            && request.blocks <= limits[(strip % n) as usize].rw
        {
            // The common case, I/O within one strip: one child request that
            // takes the parent's list as it is (no gathering).
            parent.sgl = request.sgl;
            parent.child_ios.push(ChildIo {
                child: (strip % n) as u32,
                lba: ((strip / n) << shift) + (request.lba & ((1 << shift) - 1)),
                blocks: request.blocks,
                iov_start: WHOLE_PARENT_SGL,
                iov_end: WHOLE_PARENT_SGL,
            });
            return;
        }
        open.fill(NO_REQUEST);
        match request.op {
            IoOp::Read | IoOp::Write => {
                let mut cursor = SgCursor {
                    iovs: request.sgl.iovs(),
                    index: 0,
                    offset: 0,
                };
                let block_shift = geometry.block_shift();
                let mut lba = request.lba;
                while lba < end {
                    let strip = lba >> shift;
                    let piece_end = end.min((strip + 1) << shift);
                    let child = (strip % n) as usize;
                    let child_lba = ((strip / n) << shift) + (lba & ((1 << shift) - 1));
                    append(
                        parent,
                        open,
                        child,
                        child_lba,
                        piece_end - lba,
                        limits[child].rw,
                        Some((&mut cursor, block_shift)),
                    );
                    lba = piece_end;
                }
            }
            IoOp::Unmap | IoOp::WriteZeroes => {
                for (child, limit) in limits.iter().enumerate() {
                    let first = blocks_on_child(request.lba, child as u64, n, shift);
                    let last = blocks_on_child(end, child as u64, n, shift);
                    if last > first {
                        append(parent, open, child, first, last - first, limit.unmap, None);
                    }
                }
            }
            IoOp::Flush => {
                for child in 0..open.len() {
                    parent.child_ios.push(ChildIo {
                        child: child as u32,
                        lba: 0,
                        blocks: 0,
                        iov_start: 0,
                        iov_end: 0,
                    });
                }
            }
        }
    }

    /// Submits the slot's remaining child requests in order until a child is
    /// full. Returns whether all are submitted.
    fn submit_children(&mut self, slot: usize) -> bool {
        let parent = &mut self.slots[slot];
        while let Some(io) = parent.child_ios.get(parent.next_submit) {
            let sgl = match parent.op {
                // The parent's list, which its submitter keeps valid until the
                // parent completes, after all its children.
                IoOp::Read | IoOp::Write if io.iov_start == WHOLE_PARENT_SGL => parent.sgl,
                IoOp::Read | IoOp::Write => {
                    let iovs = &parent.child_iovs[io.child as usize]
                        [io.iov_start as usize..io.iov_end as usize];
                    // SAFETY: `iovs` lives in this slot's `child_iovs`, which
                    // is not modified (so not moved or freed) until the slot is
                    // released, and that happens only after every child
                    // request of the slot has completed. Each iovec names a
                    // sub-range of the parent request's buffers, which its
                    // submitter keeps valid (and unaliased, except reads of a
                    // write's buffer) until the parent completes, after all
                    // its children. Child requests of one parent name disjoint
                    // parent bytes, so they do not alias each other.
                    unsafe { SgList::from_slice(iovs) }
                }
                _ => SgList::EMPTY,
            };
            let child_request = IoRequest {
                op: parent.op,
                fua: parent.fua,
                lba: io.lba,
                blocks: io.blocks,
                sgl,
                tag: slot as u64,
            };
            if self.children[io.child as usize]
                .submit(child_request)
                .is_err()
            {
                return false;
            }
            parent.in_children += 1;
            parent.next_submit += 1;
        }
        true
    }

    /// Submits held child requests, oldest parent first, while children take
    /// them.
    fn submit_held(&mut self) {
        while let Some(&slot) = self.held.front() {
            if !self.submit_children(slot as usize) {
                return;
            }
            self.held.pop_front();
        }
    }
}

/// Number of blocks of child `child` that hold parent LBAs below `lba`, which
/// is also the child LBA where the parent range starting at `lba` begins on
/// that child.
fn blocks_on_child(lba: u64, child: u64, n: u64, shift: u32) -> u64 {
    let strip = lba >> shift;
    let offset = lba & ((1 << shift) - 1);
    let full_strips = strip / n + u64::from(child < strip % n);
    let partial = if strip % n == child { offset } else { 0 };
    (full_strips << shift) + partial
}

/// Adds `blocks` blocks at `child_lba` on `child` to the parent's child
/// requests: extends the request being built for that child (the pieces of
/// one parent on one child are contiguous) or starts a new one when there is
/// none or it reached the child's `limit`. For reads and writes, gathers the
/// matching bytes from the parent's list.
fn append(
    parent: &mut ParentIo,
    open: &mut [u32],
    child: usize,
    mut child_lba: u64,
    mut blocks: u64,
    limit: u32,
    mut data: Option<(&mut SgCursor<'_>, u32)>,
) {
    while blocks > 0 {
        let current = open[child] as usize;
        let index = match parent.child_ios.get(current) {
            Some(io) if io.blocks < limit => current,
            _ => {
                let iov_at = parent.child_iovs[child].len() as u32;
                parent.child_ios.push(ChildIo {
                    child: child as u32,
                    lba: child_lba,
                    blocks: 0,
                    iov_start: iov_at,
                    iov_end: iov_at,
                });
                open[child] = (parent.child_ios.len() - 1) as u32;
                parent.child_ios.len() - 1
            }
        };
        let io = &mut parent.child_ios[index];
        debug_assert_eq!(io.lba + u64::from(io.blocks), child_lba);
        // `blocks` comes from a u32 parent request, so `take` fits.
        let take = blocks.min(u64::from(limit - io.blocks)) as u32;
        io.blocks += take;
        if let Some((cursor, block_shift)) = data.as_mut() {
            let iovs = &mut parent.child_iovs[child];
            cursor.take((take as usize) << *block_shift, iovs, io.iov_start as usize);
            io.iov_end = iovs.len() as u32;
        }
        child_lba += u64::from(take);
        blocks -= u64::from(take);
    }
}

impl BdevChannel for StripedChannel {
    fn submit(&mut self, request: IoRequest) -> Result<(), IoRequest> {
        if self.in_flight() >= self.depth {
            return Err(request);
        }
        if let Err(error) = self.check(&request) {
            self.done.complete(request.tag, Err(error));
            return Ok(());
        }
        let Some(slot) = self.free.pop() else {
            return Err(request);
        };
        let slot = slot as usize;
        self.split(slot, &request);
        if self.slots[slot].child_ios.is_empty() {
            // Zero blocks: nothing to do.
            finish(&mut self.slots[slot], slot, &mut self.free, &mut self.done);
            return Ok(());
        }
        // Keep parents in order behind ones already waiting for room.
        if !self.held.is_empty() || !self.submit_children(slot) {
            self.held.push_back(slot as u32);
        }
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
        let Self {
            children,
            slots,
            free,
            done: finished,
            ..
        } = self;
        for child in children.iter_mut() {
            child.poll(&mut |completion| {
                let slot = completion.tag as usize;
                let Some(parent) = slots.get_mut(slot) else {
                    debug_assert!(false, "child completion with unknown tag {slot}");
                    return;
                };
                if parent.in_children == 0 {
                    debug_assert!(false, "child completion for idle slot {slot}");
                    return;
                }
                parent.in_children -= 1;
                if let Err(error) = completion.result {
                    parent.error.get_or_insert(error);
                }
                if parent.all_done() {
                    finish(parent, slot, free, finished);
                }
            });
        }
        // Completions made room in the children.
        self.submit_held();
        self.done.deliver(done)
    }

    fn in_flight(&self) -> usize {
        (self.depth - self.free.len()) + self.done.len()
    }
}

/// Completes a parent whose child requests are all done and frees its slot.
fn finish(parent: &mut ParentIo, slot: usize, free: &mut Vec<u32>, done: &mut CompletionQueue) {
    done.complete(parent.tag, parent.error.take().map_or(Ok(()), Err));
    for io in &parent.child_ios {
        parent.child_iovs[io.child as usize].clear();
    }
    parent.sgl = SgList::EMPTY;
    parent.child_ios.clear();
    parent.next_submit = 0;
    free.push(slot as u32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NullBdev, RamBdev};
    use std::sync::Arc;

    fn ram(name: &str, bs: u32, blocks: u64) -> BdevRef {
        Arc::new(RamBdev::new(name, bs, blocks).unwrap())
    }

    #[test]
    fn geometry_and_validation() {
        let s = StripedBdev::new(
            "s",
            vec![ram("a", 512, 100), ram("b", 512, 70), ram("c", 512, 90)],
            16,
        )
        .unwrap();
        // min 70 rounded down to 64, times 3.
        assert_eq!(s.geometry().num_blocks, 192);
        assert_eq!(s.geometry().block_size, 512);
        assert_eq!(s.chunk_blocks(), 16);
        let caps = s.capabilities();
        assert_eq!(
            caps,
            Capabilities {
                volatile_cache: false,
                unmap: true,
                unmap_reads_zeroes: true,
                write_zeroes: true,
                max_transfer_blocks: 0,
                max_unmap_blocks: 0,
                optimal_boundary_blocks: 16,
            }
        );

        let err = StripedBdev::new("s", vec![ram("a", 512, 64), ram("b", 4096, 64)], 8)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "striped bdev s: child b has block size 4096 but child a has 512"
        );
        let a = ram("a", 512, 64);
        let err = StripedBdev::new("s", vec![a.clone(), ram("b", 512, 64), a], 8)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "striped bdev s: child a is listed twice (also as a)");
        let err = StripedBdev::new("s", vec![ram("a", 512, 64), ram("b", 512, 7)], 8)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "striped bdev s: child b has 7 blocks, fewer than one chunk of 8"
        );
        assert!(matches!(
            StripedBdev::new("s", vec![], 8),
            Err(Error::InvalidParameter(_))
        ));
        assert!(matches!(
            StripedBdev::new("s", vec![ram("a", 512, 64)], 12),
            Err(Error::InvalidParameter(_))
        ));
        assert!(matches!(
            StripedBdev::new("s", vec![ram("a", 512, 64)], 0),
            Err(Error::InvalidParameter(_))
        ));
        // Null children do not read back zeroes after unmap.
        let null: BdevRef = Arc::new(NullBdev::new("n", 512, 64).unwrap());
        let mixed = StripedBdev::new("s", vec![ram("a", 512, 64), null], 8).unwrap();
        assert!(mixed.capabilities().unmap && !mixed.capabilities().unmap_reads_zeroes);
    }

    #[test]
    fn blocks_on_child_matches_mapping() {
        // Count by brute force: child c's blocks among parent LBAs below x.
        for n in 1..=4u64 {
            for shift in 0..=3u32 {
                for x in 0..((5 * n) << shift) {
                    for c in 0..n {
                        let brute = (0..x).filter(|l| (l >> shift) % n == c).count() as u64;
                        assert_eq!(
                            blocks_on_child(x, c, n, shift),
                            brute,
                            "{n} {shift} {x} {c}"
                        );
                    }
                }
            }
        }
    }

    fn iov_at(buf: &mut [u8], offset: usize, len: usize) -> IoVec {
        IoVec::from_slice(&mut buf[offset..offset + len])
    }

    #[test]
    fn merges_pieces_per_child_and_splits_iovecs() {
        let children = vec![ram("a", 512, 64), ram("b", 512, 64)];
        let s = StripedBdev::new("s", children, 4).unwrap();
        let mut ch = s.open_striped_channel(2).unwrap();
        // Three separate pieces of memory: 1000 + 24 + 9216 bytes = 20 blocks.
        let mut buf = vec![0u8; 12_000];
        let base = buf.as_mut_ptr();
        let iovs = [
            iov_at(&mut buf, 0, 1000),
            iov_at(&mut buf, 1100, 24),
            iov_at(&mut buf, 1200, 9216),
        ];
        // SAFETY: `iovs` and `buf` outlive the request, completed below.
        let sgl = unsafe { SgList::from_slice(&iovs) };
        let request = IoRequest {
            op: IoOp::Write,
            fua: true,
            lba: 2,
            blocks: 20,
            sgl,
            tag: 5,
        };
        // LBA 2..22 = strips 0 (2..4), 1, 2, 3, 4, 5 (20..22): three pieces on
        // each child, merged into one request per child.
        ch.split(0, &request);
        let slot = &ch.slots[0];
        let ios: Vec<_> = slot
            .child_ios
            .iter()
            .map(|io| (io.child, io.lba, io.blocks))
            .collect();
        assert_eq!(ios, [(0, 2, 10), (1, 0, 10)]);
        let iovs_of = |child: usize| -> Vec<(usize, usize)> {
            slot.child_iovs[child]
                .iter()
                .map(|v| (v.base as usize - base as usize, v.len))
                .collect()
        };
        // Child 0: parent bytes 0..1024 (a, all of b), 3072..5120, 7168..9216.
        assert_eq!(
            iovs_of(0),
            [
                (0, 1000),
                (1100, 24),
                (1200 + 2048, 2048),
                (1200 + 6144, 2048)
            ]
        );
        // Child 1: parent bytes 1024..3072, 5120..7168, 9216..10240.
        assert_eq!(
            iovs_of(1),
            [(1200, 2048), (1200 + 4096, 2048), (1200 + 8192, 1024)]
        );
        assert!(ch.submit_children(0));
        ch.free.retain(|&s| s != 0);
        let mut got = Vec::new();
        assert_eq!(ch.poll(&mut |c| got.push(c)), 1);
        assert_eq!(
            got,
            [IoCompletion {
                tag: 5,
                result: Ok(())
            }]
        );
        assert_eq!(ch.in_flight(), 0);
    }

    #[test]
    fn within_one_strip_passes_the_parent_list() {
        let s = StripedBdev::new("s", vec![ram("a", 512, 64), ram("b", 512, 64)], 8).unwrap();
        let mut ch = s.open_striped_channel(2).unwrap();
        let mut buf = vec![0u8; 4096];
        let iovs = [iov_at(&mut buf, 0, 1000), iov_at(&mut buf, 1000, 3096)];
        // SAFETY: `iovs` and `buf` outlive the split requests (never submitted).
        let sgl = unsafe { SgList::from_slice(&iovs) };
        // LBAs 9..16: strip 1, child 1, child LBAs 1..8.
        let request = IoRequest {
            op: IoOp::Write,
            fua: false,
            lba: 9,
            blocks: 7,
            sgl,
            tag: 1,
        };
        ch.split(0, &request);
        let slot = &ch.slots[0];
        let ios: Vec<_> = slot
            .child_ios
            .iter()
            .map(|io| (io.child, io.lba, io.blocks, io.iov_start))
            .collect();
        assert_eq!(ios, [(1, 1, 7, WHOLE_PARENT_SGL)]);
        assert!(slot.child_iovs.iter().all(Vec::is_empty));
        assert_eq!(slot.sgl.iovs().as_ptr(), iovs.as_ptr());
        finish(
            &mut ch.slots[0],
            0,
            &mut Vec::new(),
            &mut CompletionQueue::new(1),
        );
        assert_eq!(ch.slots[0].sgl.count(), 0, "a free slot keeps no list");

        // One block more crosses into strip 2: gathered, one request per child.
        ch.split(
            0,
            &IoRequest {
                blocks: 8,
                ..request
            },
        );
        let ios: Vec<_> = ch.slots[0]
            .child_ios
            .iter()
            .map(|io| (io.child, io.lba, io.blocks, io.iov_start, io.iov_end))
            .collect();
        // Child 1's 3584 bytes span both (adjacent) iovecs: coalesced to one.
        assert_eq!(ios, [(1, 1, 7, 0, 1), (0, 8, 1, 0, 1)]);
    }

    #[test]
    fn coalesces_adjacent_memory_and_honours_child_limits() {
        let s = StripedBdev::new("s", vec![ram("a", 512, 64)], 1).unwrap();
        let mut ch = s.open_striped_channel(1).unwrap();
        let mut buf = vec![0u8; 512 * 8];
        let base = buf.as_mut_ptr() as usize;
        let iovs = [
            iov_at(&mut buf, 0, 100),
            iov_at(&mut buf, 100, 1000),
            iov_at(&mut buf, 1100, 2996),
        ];
        // SAFETY: `iovs` and `buf` outlive the split requests (never submitted).
        let sgl = unsafe { SgList::from_slice(&iovs) };
        let request = IoRequest {
            op: IoOp::Read,
            fua: false,
            lba: 3,
            blocks: 8,
            sgl,
            tag: 1,
        };
        // Eight one-block strips on one child, adjacent in memory: one child
        // request with one iovec.
        ch.split(0, &request);
        let slot = &ch.slots[0];
        assert_eq!(slot.child_ios.len(), 1);
        assert_eq!((slot.child_ios[0].lba, slot.child_ios[0].blocks), (3, 8));
        let v = slot.child_iovs[0][0];
        assert_eq!((v.base as usize - base, v.len), (0, 4096));
        assert_eq!(slot.child_iovs[0].len(), 1);
        finish(
            &mut ch.slots[0],
            0,
            &mut Vec::new(),
            &mut CompletionQueue::new(1),
        );

        // A child taking at most 3 blocks per request: 3 + 3 + 2, each with
        // its own iovecs.
        ch.limits[0].rw = 3;
        ch.split(0, &request);
        let slot = &ch.slots[0];
        let ios: Vec<_> = slot
            .child_ios
            .iter()
            .map(|io| (io.lba, io.blocks, io.iov_start, io.iov_end))
            .collect();
        assert_eq!(ios, [(3, 3, 0, 1), (6, 3, 1, 2), (9, 2, 2, 3)]);
        let lens: Vec<_> = slot.child_iovs[0]
            .iter()
            .map(|v| (v.base as usize - base, v.len))
            .collect();
        assert_eq!(lens, [(0, 1536), (1536, 1536), (3072, 1024)]);
    }

    #[test]
    fn unmap_split_per_child() {
        let null = |name| -> BdevRef { Arc::new(NullBdev::new(name, 512, 1 << 20).unwrap()) };
        let children = vec![null("a"), null("b"), null("c")];
        let s = StripedBdev::new("s", children, 8).unwrap();
        let mut ch = s.open_striped_channel(1).unwrap();
        ch.limits[2].unmap = 1000;
        // Parent LBAs 5 .. 3_000_005, split per child in O(children).
        let request = IoRequest {
            op: IoOp::Unmap,
            fua: false,
            lba: 5,
            blocks: 3_000_000,
            sgl: SgList::EMPTY,
            tag: 1,
        };
        ch.split(0, &request);
        let ios: Vec<_> = ch.slots[0]
            .child_ios
            .iter()
            .map(|io| (io.child, io.lba, io.blocks))
            .collect();
        let end = 5 + 3_000_000u64;
        let expect_child = |c: u64| {
            let a = blocks_on_child(5, c, 3, 3);
            let b = blocks_on_child(end, c, 3, 3);
            (a, b - a)
        };
        let (a0, n0) = expect_child(0);
        let (a1, n1) = expect_child(1);
        let (a2, n2) = expect_child(2);
        assert_eq!(ios[0], (0, a0, n0 as u32));
        assert_eq!(ios[1], (1, a1, n1 as u32));
        assert_eq!(n0 + n1 + n2, 3_000_000);
        // Child 2 is cut into requests of at most 1000 blocks.
        let rest = &ios[2..];
        assert_eq!(rest.len() as u64, n2.div_ceil(1000));
        let mut lba = a2;
        for &(child, l, b) in rest {
            assert_eq!(child, 2);
            assert_eq!(l, lba);
            assert!(b <= 1000);
            lba += u64::from(b);
        }
        assert_eq!(lba, a2 + n2);
    }
}
