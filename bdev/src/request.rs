//! The generic request layer: what every bdev does with a request apart from
//! its own work, so that a bdev module holds only what is particular to it.
//!
//! # What a channel owes its caller
//! The [crate-level contract](crate#the-io-contract) in terms of the helpers
//! here:
//! - **Validation happens at submit, on the whole request.** A channel runs
//!   [`check_request`] (the range lies on the device, a read or write carries
//!   a buffer of at least `blocks * block_size` bytes) and, unless it does
//!   every operation, [`check_supported`] (the bdev advertises the operation
//!   in its [`Capabilities`]) before it does anything else with a request.
//!   A request that fails is not executed and completes, deferred like any
//!   other, with the [`IoError`] the check returned; it is never a panic, and
//!   never a `submit` error (`Err` from `submit` only ever means "full").
//!   A bdev built on children (`striped`) validates the parent request
//!   before it splits, so its children only see requests that pass.
//! - **Completion is deferred and exactly once.** `submit` never calls back:
//!   a channel keeps what it finished (or failed at submit) in a
//!   [`CompletionQueue`] and hands it over in `poll`, in the order it was
//!   queued, each completion carrying its request's tag unchanged.
//! - **Nothing allocates per request.** A channel sizes its queues for the
//!   queue depth it was opened with and holds at most that many requests
//!   (`in_flight` counts requests submitted and not yet delivered, including
//!   failed ones waiting in the completion queue), so pushing never grows
//!   them.
//!
//! A bdev that needs more than this (io_uring completions, child requests)
//! still validates here first and completes through the same `poll` rule.
//! Splitting a request that exceeds a child's or a device's limits
//! (`max_transfer_blocks`, `max_unmap_blocks`, a strip boundary) is done by
//! the bdev that has the limit today (`striped`); a generic splitter, when
//! another bdev needs one, belongs in this module.

use crate::{Capabilities, Geometry, IoCompletion, IoError, IoOp, IoRequest};

/// Validates a request against a geometry: the range lies on the device and a
/// read or write carries a buffer of at least `blocks * block_size` bytes.
///
/// Errors: [`IoError::OutOfRange`] when `lba + blocks` overflows or passes
/// the last block, [`IoError::ShortBuffer`] when the scatter-gather list of a
/// read or write is too short. A zero-block request within the device (and
/// a whole-device flush, 0/0) passes.
pub fn check_request(geometry: &Geometry, request: &IoRequest) -> Result<(), IoError> {
    let end = request
        .lba
        .checked_add(u64::from(request.blocks))
        .ok_or(IoError::OutOfRange)?;
    if end > geometry.num_blocks {
        return Err(IoError::OutOfRange);
    }
    if matches!(request.op, IoOp::Read | IoOp::Write) {
        let needed = u64::from(request.blocks) << geometry.block_shift();
        if (request.sgl.total_len() as u64) < needed {
            return Err(IoError::ShortBuffer);
        }
    }
    Ok(())
}

/// Fails with [`IoError::Unsupported`] an unmap or write-zeroes that
/// `capabilities` does not advertise. Reads, writes and flushes are always
/// supported (a bdev without a volatile cache completes a flush at once).
pub fn check_supported(capabilities: &Capabilities, request: &IoRequest) -> Result<(), IoError> {
    match request.op {
        IoOp::Unmap if !capabilities.unmap => Err(IoError::Unsupported),
        IoOp::WriteZeroes if !capabilities.write_zeroes => Err(IoError::Unsupported),
        _ => Ok(()),
    }
}

/// Completions waiting for the next `poll`, delivered in the order they were
/// pushed.
///
/// Preallocated for the channel's queue depth: as long as the channel keeps
/// at most `depth` requests in flight (which its `submit` enforces), pushing
/// never allocates.
#[derive(Debug)]
pub struct CompletionQueue {
    done: Vec<IoCompletion>,
    depth: usize,
}

impl CompletionQueue {
    /// An empty queue with room for `depth` completions (at least one).
    pub fn new(depth: usize) -> Self {
        let depth = depth.max(1);
        Self {
            done: Vec::with_capacity(depth),
            depth,
        }
    }

    /// Queues the completion of the request tagged `tag`.
    #[inline]
    pub fn complete(&mut self, tag: u64, result: Result<(), IoError>) {
        debug_assert!(self.done.len() < self.depth, "more completions than depth");
        self.done.push(IoCompletion { tag, result });
    }

    /// Completions queued and not yet delivered.
    #[inline]
    pub fn len(&self) -> usize {
        self.done.len()
    }

    /// True when nothing is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// True when `depth` completions are queued.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.done.len() == self.depth
    }

    /// Hands every queued completion to `done`, oldest first, and returns how
    /// many there were.
    #[inline]
    pub fn deliver(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
        let n = self.done.len();
        for completion in self.done.drain(..) {
            done(completion);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IoVec, SgList};

    const GEOMETRY: Geometry = Geometry {
        block_size: 512,
        num_blocks: 16,
    };

    #[test]
    fn check_request_range_and_buffer() {
        let mut buf = vec![0u8; 1024];
        let iov = [IoVec::from_slice(&mut buf)];
        // SAFETY: the requests are only checked, never executed.
        let sgl = unsafe { SgList::from_slice(&iov) };
        let check = |op, lba, blocks, sgl| {
            check_request(&GEOMETRY, &IoRequest::new(op, lba, blocks, sgl, 0))
        };
        assert_eq!(check(IoOp::Read, 14, 2, sgl), Ok(()));
        assert_eq!(check(IoOp::Read, 15, 2, sgl), Err(IoError::OutOfRange));
        assert_eq!(
            check(IoOp::Read, u64::MAX, 2, sgl),
            Err(IoError::OutOfRange)
        );
        assert_eq!(check(IoOp::Write, 0, 3, sgl), Err(IoError::ShortBuffer));
        assert_eq!(
            check(IoOp::Read, 0, 1, SgList::EMPTY),
            Err(IoError::ShortBuffer)
        );
        assert_eq!(check(IoOp::Unmap, 0, 16, SgList::EMPTY), Ok(()));
        assert_eq!(
            check(IoOp::WriteZeroes, 10, 7, SgList::EMPTY),
            Err(IoError::OutOfRange)
        );
        assert_eq!(check(IoOp::Flush, 0, 0, SgList::EMPTY), Ok(()));
        assert_eq!(check(IoOp::Read, 16, 0, SgList::EMPTY), Ok(()));
    }

    #[test]
    fn check_supported_follows_capabilities() {
        let none = Capabilities {
            volatile_cache: false,
            unmap: false,
            unmap_reads_zeroes: false,
            write_zeroes: false,
            max_transfer_blocks: 0,
            max_unmap_blocks: 0,
            optimal_boundary_blocks: 0,
        };
        let all = Capabilities {
            unmap: true,
            write_zeroes: true,
            ..none
        };
        let request = |op| IoRequest::new(op, 0, 1, SgList::EMPTY, 0);
        for op in [IoOp::Read, IoOp::Write, IoOp::Flush] {
            assert_eq!(check_supported(&none, &request(op)), Ok(()));
        }
        for op in [IoOp::Unmap, IoOp::WriteZeroes] {
            assert_eq!(
                check_supported(&none, &request(op)),
                Err(IoError::Unsupported)
            );
            assert_eq!(check_supported(&all, &request(op)), Ok(()));
        }
    }

    #[test]
    fn completion_queue_delivers_in_order() {
        let mut queue = CompletionQueue::new(0);
        assert!(queue.is_empty() && !queue.is_full());
        queue.complete(7, Ok(()));
        assert!(queue.is_full(), "depth 0 is taken as 1");
        assert_eq!(queue.deliver(&mut |_| {}), 1);

        let mut queue = CompletionQueue::new(3);
        queue.complete(1, Ok(()));
        queue.complete(2, Err(IoError::OutOfRange));
        assert_eq!((queue.len(), queue.is_full()), (2, false));
        queue.complete(3, Ok(()));
        assert!(queue.is_full());
        let mut got = Vec::new();
        assert_eq!(queue.deliver(&mut |c| got.push((c.tag, c.result))), 3);
        assert_eq!(
            got,
            [(1, Ok(())), (2, Err(IoError::OutOfRange)), (3, Ok(()))]
        );
        assert!(queue.is_empty());
        assert_eq!(queue.deliver(&mut |_| unreachable!()), 0);
    }
}
