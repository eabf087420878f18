//! I/O requests, scatter-gather lists and completions.

use std::fmt;

use crate::error::IoError;

/// One scatter-gather element: `len` bytes at `base` in the submitter's
/// memory. Same layout as `struct iovec`, so a list can go to `preadv`/io_uring
/// unchanged.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IoVec {
    /// Start of the buffer.
    pub base: *mut u8,
    /// Length in bytes.
    pub len: usize,
}

// SAFETY: an IoVec is a plain address and length; what may be done with the
// memory it names is governed by the `SgList` contract, not by the thread.
unsafe impl Send for IoVec {}

impl IoVec {
    /// An element describing `buf`.
    pub fn from_slice(buf: &mut [u8]) -> Self {
        Self {
            base: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }
}

impl fmt::Debug for IoVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IoVec({:p}+{})", self.base, self.len)
    }
}

/// A borrowed view of a scatter-gather list: `count` [`IoVec`]s at `ptr`.
///
/// Creating one is `unsafe` because the bdev will read and write the memory it
/// names from whichever thread runs the channel, until the request completes.
#[derive(Clone, Copy)]
pub struct SgList {
    ptr: *const IoVec,
    count: u32,
}

// SAFETY: the creator of an SgList promised (see `from_raw`) that the iovec
// array and the memory it names stay valid and unaliased until completion,
// whichever thread performs the I/O.
unsafe impl Send for SgList {}

impl SgList {
    /// An empty list (for flush, unmap and write-zeroes).
    pub const EMPTY: SgList = SgList {
        ptr: std::ptr::NonNull::dangling().as_ptr(),
        count: 0,
    };

    /// Wraps `count` iovecs at `ptr`.
    ///
    /// # Safety
    /// Until the request carrying this list has completed (its
    /// [`IoCompletion`] was delivered by `poll`):
    /// - `ptr` must point to `count` initialised `IoVec`s that do not change;
    /// - every `IoVec` must name memory that is valid for reads and writes for
    ///   `len` bytes and that nobody else reads or writes while the request is
    ///   in flight (for a write request, others may read it).
    pub unsafe fn from_raw(ptr: *const IoVec, count: u32) -> Self {
        Self { ptr, count }
    }

    /// Wraps a slice of iovecs.
    ///
    /// # Safety
    /// As for [`SgList::from_raw`]: `iovs` and the memory it names must stay
    /// valid and unaliased until the request completes, even though the
    /// borrow of `iovs` ends when this returns.
    pub unsafe fn from_slice(iovs: &[IoVec]) -> Self {
        Self {
            ptr: iovs.as_ptr(),
            count: iovs.len() as u32,
        }
    }

    /// Number of elements.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The elements.
    pub fn iovs(&self) -> &[IoVec] {
        if self.count == 0 {
            return &[];
        }
        // SAFETY: `from_raw`'s contract guarantees `count` initialised iovecs
        // at `ptr` for as long as the request (and so this list) is live.
        unsafe { std::slice::from_raw_parts(self.ptr, self.count as usize) }
    }

    /// Total bytes described.
    pub fn total_len(&self) -> usize {
        self.iovs().iter().map(|v| v.len).sum()
    }
}

impl fmt::Debug for SgList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iovs()).finish()
    }
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// Read `blocks` blocks at `lba` into the scatter-gather list.
    Read,
    /// Write `blocks` blocks at `lba` from the scatter-gather list.
    Write,
    /// Make all completed writes durable. `lba`/`blocks` name the range of
    /// interest (0/0 = whole device); a bdev may flush more.
    Flush,
    /// Deallocate `blocks` blocks at `lba`; no data buffer.
    Unmap,
    /// Write zeroes to `blocks` blocks at `lba`; no data buffer.
    WriteZeroes,
}

/// One I/O request. Small and `Copy` so it travels through SPSC rings by value.
#[derive(Debug, Clone, Copy)]
pub struct IoRequest {
    /// The operation.
    pub op: IoOp,
    /// Force unit access: the write is durable when it completes.
    pub fua: bool,
    /// First logical block.
    pub lba: u64,
    /// Number of logical blocks.
    pub blocks: u32,
    /// Data buffer for reads and writes; [`SgList::EMPTY`] otherwise.
    pub sgl: SgList,
    /// Opaque to the bdev; returned unchanged in the completion.
    pub tag: u64,
}

impl IoRequest {
    /// A request without FUA.
    pub fn new(op: IoOp, lba: u64, blocks: u32, sgl: SgList, tag: u64) -> Self {
        Self {
            op,
            fua: false,
            lba,
            blocks,
            sgl,
            tag,
        }
    }
}

/// The outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoCompletion {
    /// The request's tag.
    pub tag: u64,
    /// `Ok(())` or why it failed.
    pub result: Result<(), IoError>,
}
