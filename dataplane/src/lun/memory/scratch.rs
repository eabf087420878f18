//! [`Scratch`]: the unit's scratch memory, lent a chunk at a time to the
//! commands that need room of their own (VERIFY, WRITE AND VERIFY, COMPARE
//! AND WRITE, WRITE SAME with a pattern).

use std::fmt;

use bdev::{IoVec, SgList};

/// A scratch chunk, held from [`Scratch::take`] until it is returned with
/// [`Scratch::put`]. Only `Scratch` makes one and it cannot be copied, so a
/// chunk has one holder at a time.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::lun) struct ChunkId(u32);

/// The bdev requests holding a chunk.
#[derive(Debug, Clone, Copy, Default)]
struct Loans {
    /// Requests in flight with an [`SgList`] of the chunk.
    count: u32,
    /// The one request is a read: the bdev writes the chunk.
    filling: bool,
}

/// The scratch memory: `chunks` chunks of `chunk_len` bytes.
///
/// # Invariants
/// - `memory` owns the bytes and is never accessed through after `base` was
///   taken from it: the bytes are reached only through `base`, chunk by
///   chunk, so a chunk a bdev is filling is never covered by a reference.
/// - `iovs[i]` names chunk `i`; neither array changes after construction.
/// - A chunk's bytes are handed out ([`bytes`](Self::bytes),
///   [`bytes_mut`](Self::bytes_mut), borrowing the `Scratch`) only while no
///   request holds it. A request filling it (a bdev read) holds it alone;
///   requests writing from it (bdev writes) may share it. A loan ends with
///   [`give_back`](Self::give_back) when the request's completion has been
///   delivered (the port's contract: after that the bdev no longer touches
///   the memory). Dropped while any chunk is lent, the scratch leaks its
///   memory rather than free it under the bdev.
pub(in crate::lun) struct Scratch {
    memory: Vec<u8>,
    base: *mut u8,
    chunk_len: usize,
    /// One iovec per chunk (stable addresses for the bdev's SgLists).
    iovs: Vec<IoVec>,
    loans: Vec<Loans>,
    free: Vec<u32>,
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
    /// `bytes / chunk_len` chunks of `chunk_len` bytes, all free.
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
            loans: vec![Loans::default(); chunks],
            free: (0..chunks as u32).rev().collect(),
        }
    }

    /// Bytes per chunk.
    pub(in crate::lun) fn chunk_len(&self) -> usize {
        self.chunk_len
    }

    /// Whether a chunk is free.
    pub(in crate::lun) fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// A free chunk, if any.
    pub(in crate::lun) fn take(&mut self) -> Option<ChunkId> {
        self.free.pop().map(ChunkId)
    }

    /// Returns a chunk to the free list.
    ///
    /// # Panics
    /// If a request still holds the chunk.
    pub(in crate::lun) fn put(&mut self, chunk: ChunkId) {
        assert_eq!(
            self.loans[chunk.0 as usize].count, 0,
            "scratch chunk freed while lent"
        );
        self.free.push(chunk.0);
    }

    /// The bytes of `chunk`.
    ///
    /// # Panics
    /// If a request holds the chunk.
    pub(in crate::lun) fn bytes(&self, chunk: &ChunkId) -> &[u8] {
        let at = self.unlent(chunk);
        // SAFETY: `at + chunk_len` lies in `memory` (ChunkIds name chunks
        // below `chunks`), which lives as long as `self`; no request holds
        // the chunk, and `bytes_mut` cannot run while `&self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.base.add(at), self.chunk_len) }
    }

    /// The bytes of `chunk`, to fill.
    ///
    /// # Panics
    /// If a request holds the chunk.
    pub(in crate::lun) fn bytes_mut(&mut self, chunk: &ChunkId) -> &mut [u8] {
        let at = self.unlent(chunk);
        // SAFETY: as for `bytes`; `&mut self` excludes every other slice of
        // the scratch memory.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(at), self.chunk_len) }
    }

    /// The offset of an unlent chunk in the memory.
    fn unlent(&self, chunk: &ChunkId) -> usize {
        assert_eq!(self.loans[chunk.0 as usize].count, 0, "scratch chunk lent");
        chunk.0 as usize * self.chunk_len
    }

    /// Lends `chunk` to a bdev read that fills it: the list to put in the
    /// request.
    ///
    /// # Panics
    /// If a request already holds the chunk.
    pub(in crate::lun) fn lend_to_fill(&mut self, chunk: &ChunkId) -> SgList {
        let loans = &mut self.loans[chunk.0 as usize];
        assert_eq!(loans.count, 0, "scratch chunk filled while lent");
        *loans = Loans {
            count: 1,
            filling: true,
        };
        self.sg_list(chunk)
    }

    /// Lends `chunk` to a bdev write that reads it: the list to put in the
    /// request.
    ///
    /// # Panics
    /// If a read is filling the chunk.
    pub(in crate::lun) fn lend_to_write(&mut self, chunk: &ChunkId) -> SgList {
        let loans = &mut self.loans[chunk.0 as usize];
        assert!(!loans.filling, "scratch chunk written while being filled");
        loans.count += 1;
        self.sg_list(chunk)
    }

    fn sg_list(&self, chunk: &ChunkId) -> SgList {
        // SAFETY: `iovs[chunk]` names the chunk, inside `memory`; neither
        // array changes or is freed while the chunk is lent (dropping leaks
        // them), and the loan just recorded keeps the bytes from being handed
        // out, or filled by another request, until `give_back`.
        unsafe { SgList::from_raw(&self.iovs[chunk.0 as usize], 1) }
    }

    /// Ends one loan of `chunk`: the request it was lent to has completed.
    pub(in crate::lun) fn give_back(&mut self, chunk: &ChunkId) {
        let loans = &mut self.loans[chunk.0 as usize];
        debug_assert!(loans.count > 0, "give_back without a loan");
        loans.count = loans.count.saturating_sub(1);
        if loans.count == 0 {
            loans.filling = false;
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.loans.iter().any(|loans| loans.count > 0) {
            // A bdev may still read or write the memory and read the iovecs:
            // leak them rather than free memory under it.
            std::mem::forget(std::mem::take(&mut self.memory));
            std::mem::forget(std::mem::take(&mut self.iovs));
        }
    }
}

// SAFETY: `base` points into `memory`, which the Scratch owns; moving the
// Scratch to another thread moves that ownership with it.
unsafe impl Send for Scratch {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_have_one_holder_and_come_back() {
        let mut scratch = Scratch::new(3 * 512 + 100, 512);
        let chunks: Vec<ChunkId> = std::iter::from_fn(|| scratch.take()).collect();
        assert_eq!(chunks.len(), 3);
        assert!(!scratch.has_free());
        let [a, b, c] = <[ChunkId; 3]>::try_from(chunks).unwrap();
        scratch.bytes_mut(&a).fill(1);
        scratch.bytes_mut(&b).fill(2);
        assert!(scratch.bytes(&a).iter().all(|&x| x == 1));
        assert!(scratch.bytes(&b).iter().all(|&x| x == 2));
        let sgl = scratch.lend_to_fill(&c);
        assert_eq!(sgl.total_len(), 512);
        scratch.give_back(&c);
        scratch.put(b);
        assert_eq!(scratch.take(), Some(ChunkId(1)));
        scratch.put(a);
        scratch.put(c);
    }

    #[test]
    fn writes_share_a_chunk_and_hold_it_until_all_are_back() {
        let mut scratch = Scratch::new(512, 512);
        let chunk = scratch.take().unwrap();
        scratch.lend_to_write(&chunk);
        scratch.lend_to_write(&chunk);
        scratch.give_back(&chunk);
        assert_eq!(scratch.loans[0].count, 1);
        scratch.give_back(&chunk);
        scratch.lend_to_fill(&chunk);
        scratch.give_back(&chunk);
        scratch.put(chunk);
    }

    #[test]
    #[should_panic(expected = "lent")]
    fn a_lent_chunk_is_not_touched() {
        let mut scratch = Scratch::new(512, 512);
        let chunk = scratch.take().unwrap();
        scratch.lend_to_fill(&chunk);
        scratch.bytes(&chunk);
    }
}
