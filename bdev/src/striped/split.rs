//! Cutting a parent request into child requests (see the striped module's
//! [splitting rules]): a [`ParentIo`] slot holds the child requests of one
//! parent and the iovecs gathered for them; a [`Splitter`] fills it.
//!
//! [splitting rules]: super#splitting-one-child-request-per-child-not-per-strip

use super::layout::{blocks_on_child, locate};
use crate::{Capabilities, IoError, IoOp, IoRequest, IoVec, SgList};

/// Iovecs preallocated per child in each parent slot.
const IOVS_PER_CHILD: usize = 8;

/// `ChildIo::iov_start`/`iov_end` of a child request that takes the
/// parent's scatter-gather list unchanged (a parent within one strip).
pub(super) const WHOLE_PARENT_SGL: u32 = u32::MAX;

/// `Splitter::open` entry for "no request being built for this child".
const NO_REQUEST: u32 = u32::MAX;

/// Largest request a child accepts, in blocks.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChildLimits {
    /// For reads and writes.
    pub(super) rw: u32,
    /// For unmap and write-zeroes.
    pub(super) unmap: u32,
}

impl ChildLimits {
    /// A child's limits from its capabilities (0 there means no limit).
    pub(super) fn of(capabilities: &Capabilities) -> Self {
        Self {
            rw: nonzero_or_max(capabilities.max_transfer_blocks),
            unmap: nonzero_or_max(capabilities.max_unmap_blocks),
        }
    }
}

fn nonzero_or_max(limit: u32) -> u32 {
    if limit == 0 {
        u32::MAX
    } else {
        limit
    }
}

/// One child request of a parent.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChildIo {
    pub(super) child: u32,
    pub(super) lba: u64,
    pub(super) blocks: u32,
    /// Its iovecs: `child_iovs[child][iov_start..iov_end]` of the parent slot.
    pub(super) iov_start: u32,
    pub(super) iov_end: u32,
}

/// A parent request in flight: one preallocated slot of the channel.
#[derive(Debug)]
pub(super) struct ParentIo {
    pub(super) tag: u64,
    pub(super) op: IoOp,
    pub(super) fua: bool,
    /// The parent's own list while it is in flight, for a child request that
    /// takes it unchanged ([`WHOLE_PARENT_SGL`]); [`SgList::EMPTY`] when the
    /// slot is free, so that nothing (not even `Debug`) reads a stale list.
    pub(super) sgl: SgList,
    /// Child requests submitted and not yet completed.
    pub(super) in_children: u32,
    /// Index in `child_ios` of the first child request not yet submitted.
    pub(super) next_submit: usize,
    /// The first child error.
    pub(super) error: Option<IoError>,
    pub(super) child_ios: Vec<ChildIo>,
    /// Per child, the gathered iovecs of its requests. Not modified while any
    /// of the slot's child requests is in flight, so the `SgList`s handed to
    /// the children stay valid.
    pub(super) child_iovs: Vec<Vec<IoVec>>,
}

impl ParentIo {
    /// A free slot for a bdev with `children` children.
    pub(super) fn new(children: usize) -> Self {
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

    /// True when every child request was submitted and has completed.
    pub(super) fn all_done(&self) -> bool {
        self.in_children == 0 && self.next_submit == self.child_ios.len()
    }

    /// The scatter-gather list of child request `io`, one of this slot's.
    pub(super) fn child_sgl(&self, io: &ChildIo) -> SgList {
        match self.op {
            // The parent's list, which its submitter keeps valid until the
            // parent completes, after all its children.
            IoOp::Read | IoOp::Write if io.iov_start == WHOLE_PARENT_SGL => self.sgl,
            IoOp::Read | IoOp::Write => {
                let iovs =
                    &self.child_iovs[io.child as usize][io.iov_start as usize..io.iov_end as usize];
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
        }
    }

    /// Frees the slot of a parent whose child requests are all done; returns
    /// the parent's result (the first child error, if any).
    pub(super) fn release(&mut self) -> Result<(), IoError> {
        let result = self.error.take().map_or(Ok(()), Err);
        for io in &self.child_ios {
            self.child_iovs[io.child as usize].clear();
        }
        self.sgl = SgList::EMPTY;
        self.child_ios.clear();
        self.next_submit = 0;
        result
    }
}

/// Fills parent slots with child requests: the stripe layout, the children's
/// limits, and the scratch of the split in progress.
#[derive(Debug)]
pub(super) struct Splitter {
    chunk_shift: u32,
    block_shift: u32,
    /// Per child, in stripe order.
    pub(super) limits: Vec<ChildLimits>,
    /// While splitting: per child, the index in `child_ios` of the request
    /// being built, or `NO_REQUEST`.
    open: Vec<u32>,
}

impl Splitter {
    /// A splitter for children with `limits`, strips of `1 << chunk_shift`
    /// blocks of `1 << block_shift` bytes.
    pub(super) fn new(chunk_shift: u32, block_shift: u32, limits: Vec<ChildLimits>) -> Self {
        let open = vec![NO_REQUEST; limits.len()];
        Self {
            chunk_shift,
            block_shift,
            limits,
            open,
        }
    }

    /// Fills `parent`'s child requests for a checked request.
    pub(super) fn split(&mut self, parent: &mut ParentIo, request: &IoRequest) {
        let Self {
            open,
            limits,
            chunk_shift,
            block_shift,
        } = self;
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
            let (child, child_lba) = locate(request.lba, n, shift);
            parent.sgl = request.sgl;
            parent.child_ios.push(ChildIo {
                child: child as u32,
                lba: child_lba,
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
                let mut lba = request.lba;
                while lba < end {
                    let piece_end = end.min(((lba >> shift) + 1) << shift);
                    let (child, child_lba) = locate(lba, n, shift);
                    let child = child as usize;
                    append(
                        parent,
                        open,
                        child,
                        child_lba,
                        piece_end - lba,
                        limits[child].rw,
                        Some((&mut cursor, *block_shift)),
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
