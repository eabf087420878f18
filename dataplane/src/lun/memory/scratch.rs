//! The scratch memory of a unit.

use std::fmt;

use bdev::IoVec;

/// The scratch memory: `chunks` chunks of `chunk_len` bytes, each lent to one
/// task at a time. Accessed only through raw pointers, chunk by chunk, so a
/// chunk a bdev is filling is never covered by a Rust reference.
pub(in crate::lun) struct Scratch {
    /// Owns the memory; never touched through a reference after `base` was
    /// taken.
    pub(in crate::lun) memory: Vec<u8>,
    pub(in crate::lun) base: *mut u8,
    pub(in crate::lun) chunk_len: usize,
    /// One iovec per chunk (stable addresses for the bdev's SgLists).
    pub(in crate::lun) iovs: Vec<IoVec>,
    pub(in crate::lun) free: Vec<u32>,
}

impl fmt::Debug for Scratch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scratch")
            .field("bytes", &self.memory.len())
            .field("chunk_len", &self.chunk_len)
            .field("free", &self.free.len())
            .finish()
    }
}

impl Scratch {
    pub(in crate::lun) fn new(bytes: usize, chunk_len: usize) -> Self {
        let chunks = bytes / chunk_len;
        let mut memory = vec![0u8; chunks * chunk_len];
        let base = memory.as_mut_ptr();
        let iovs = (0..chunks)
            .map(|i| IoVec {
                base: base.wrapping_add(i * chunk_len),
                len: chunk_len,
            })
            .collect();
        Self {
            memory,
            base,
            chunk_len,
            iovs,
            free: (0..chunks as u32).rev().collect(),
        }
    }

    /// The bytes of chunk `chunk`.
    ///
    /// # Safety
    /// No bdev request on this chunk may be outstanding, and no other slice
    /// of it may be live.
    #[allow(clippy::mut_from_ref)]
    pub(in crate::lun) unsafe fn chunk(&self, chunk: u32) -> &mut [u8] {
        // SAFETY: `chunk < chunks` (indexes come from `free`), so the range
        // lies in `memory`, which lives as long as `self`; the caller
        // guarantees exclusive access.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.add(chunk as usize * self.chunk_len),
                self.chunk_len,
            )
        }
    }
}

// SAFETY: `base` points into `memory`, which the Scratch owns; moving the
// Scratch to another thread moves that ownership with it.
unsafe impl Send for Scratch {}
