//! The bounce pool: aligned memory for reads and writes whose buffers
//! O_DIRECT cannot take as they are.
//!
//! One anonymous mapping (page-aligned, so aligned for any O_DIRECT
//! requirement up to a page) cut into chunks of [`CHUNK`] bytes, allocated
//! at channel open. A bounced request leases as many chunks as its transfer
//! needs, not necessarily adjacent, and goes to the kernel as a READV/WRITEV
//! over them: the iovec array lives in the request's slot's row of a
//! preallocated table, so the kernel can read it until completion. When too
//! few chunks are free the request waits in the channel; nothing is ever
//! allocated per request.

use memmap2::MmapMut;

use crate::{Error, IoVec, SgList};

/// Bytes per chunk: a multiple of every O_DIRECT alignment in practice
/// (at most a page).
pub(super) const CHUNK: usize = 64 << 10;

/// Preallocated chunks and, per request slot, the iovecs over its lease.
///
/// Invariants: a chunk is either on `free` or leased by exactly one slot;
/// the rows of `iovs` and `leased` for slot `s` are
/// `s * per_request .. (s + 1) * per_request`, and only the first
/// `lease_len[s]` entries are meaningful.
#[derive(Debug)]
pub(super) struct BouncePool {
    memory: MmapMut,
    free: Vec<u32>,
    per_request: usize,
    iovs: Vec<libc::iovec>,
    leased: Vec<u32>,
    lease_len: Vec<u32>,
}

// SAFETY: the raw pointers in `iovs` point into `memory`, which the pool
// owns and which moves with it; nothing is shared with another thread.
unsafe impl Send for BouncePool {}

impl BouncePool {
    /// A pool of at least `bytes` (and at least one largest transfer of
    /// `max_transfer` bytes) for `slots` request slots.
    pub fn new(bytes: usize, max_transfer: usize, slots: usize) -> Result<Self, Error> {
        let per_request = max_transfer.div_ceil(CHUNK).max(1);
        let chunks = bytes.div_ceil(CHUNK).max(per_request);
        let memory = MmapMut::map_anon(chunks * CHUNK)?;
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Ok(Self {
            memory,
            free: (0..chunks as u32).rev().collect(),
            per_request,
            iovs: vec![empty; slots * per_request],
            leased: vec![0; slots * per_request],
            lease_len: vec![0; slots],
        })
    }

    /// Chunks not leased.
    #[cfg(test)]
    pub fn free_chunks(&self) -> usize {
        self.free.len()
    }

    /// Leases chunks for `bytes` (at most the largest transfer) to `slot`
    /// and returns the iovec array over them (pointer and count, stable
    /// until [`release`](Self::release)), or `None` when too few are free.
    pub fn lease(&mut self, slot: u32, bytes: usize) -> Option<(*const libc::iovec, u32)> {
        let n = bytes.div_ceil(CHUNK);
        debug_assert!(n <= self.per_request);
        if n > self.free.len() || n > self.per_request {
            return None;
        }
        let row = slot as usize * self.per_request;
        let base = self.memory.as_mut_ptr();
        let mut left = bytes;
        for i in 0..n {
            let chunk = self.free.pop()?;
            self.leased[row + i] = chunk;
            self.iovs[row + i] = libc::iovec {
                // SAFETY: `chunk < chunks`, so the offset lies inside the
                // mapping.
                iov_base: unsafe { base.add(chunk as usize * CHUNK) }.cast(),
                iov_len: left.min(CHUNK),
            };
            left -= left.min(CHUNK);
        }
        self.lease_len[slot as usize] = n as u32;
        Some((self.iovs[row..].as_ptr(), n as u32))
    }

    /// Returns `slot`'s chunks to the pool.
    pub fn release(&mut self, slot: u32) {
        let row = slot as usize * self.per_request;
        let n = std::mem::take(&mut self.lease_len[slot as usize]) as usize;
        for i in 0..n {
            self.free.push(self.leased[row + i]);
        }
    }

    /// Copies the first `bytes` of `sgl` into `slot`'s lease (a write).
    pub fn copy_in(&mut self, slot: u32, sgl: &SgList, bytes: usize) {
        let lease = self.lease_iovs(slot);
        copy(lease, sgl.iovs(), bytes, Direction::IntoLease);
    }

    /// Copies the first `bytes` of `slot`'s lease into `sgl` (a read).
    pub fn copy_out(&mut self, slot: u32, sgl: &SgList, bytes: usize) {
        let lease = self.lease_iovs(slot);
        copy(lease, sgl.iovs(), bytes, Direction::OutOfLease);
    }

    fn lease_iovs(&self, slot: u32) -> &[libc::iovec] {
        let row = slot as usize * self.per_request;
        &self.iovs[row..row + self.lease_len[slot as usize] as usize]
    }
}

#[derive(Clone, Copy)]
enum Direction {
    IntoLease,
    OutOfLease,
}

/// Copies `bytes` between the lease's iovecs and the request's, walking
/// both lists.
fn copy(lease: &[libc::iovec], request: &[IoVec], bytes: usize, direction: Direction) {
    let (mut li, mut lo) = (0usize, 0usize);
    let (mut ri, mut ro) = (0usize, 0usize);
    let mut left = bytes;
    while left > 0 && li < lease.len() && ri < request.len() {
        let (l, r) = (&lease[li], &request[ri]);
        let n = left.min(l.iov_len - lo).min(r.len - ro);
        if n > 0 {
            // SAFETY: the lease's chunks lie in the pool's mapping and are
            // leased to this request only; the request's iovec names memory
            // valid for `r.len` bytes that the bdev may read and write until
            // the request completes (the `SgList` contract); `lo + n` and
            // `ro + n` stay within both; the two never overlap (the pool's
            // mapping is its own).
            unsafe {
                let lease_at = l.iov_base.cast::<u8>().add(lo);
                let request_at = r.base.add(ro);
                match direction {
                    Direction::IntoLease => std::ptr::copy_nonoverlapping(request_at, lease_at, n),
                    Direction::OutOfLease => std::ptr::copy_nonoverlapping(lease_at, request_at, n),
                }
            }
        }
        left -= n;
        lo += n;
        ro += n;
        if lo == l.iov_len {
            (li, lo) = (li + 1, 0);
        }
        if ro == r.len {
            (ri, ro) = (ri + 1, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_copy_and_release() {
        let mut pool = BouncePool::new(3 * CHUNK, 2 * CHUNK, 2).unwrap();
        assert_eq!(pool.free_chunks(), 3);
        let (iovs, n) = pool.lease(0, CHUNK + 512).unwrap();
        assert_eq!(n, 2);
        // SAFETY: the lease's iovecs stay valid until release.
        let iovs = unsafe { std::slice::from_raw_parts(iovs, n as usize) };
        assert_eq!((iovs[0].iov_len, iovs[1].iov_len), (CHUNK, 512));
        assert_eq!(iovs[0].iov_base as usize % 4096, 0);
        assert!(pool.lease(1, 2 * CHUNK).is_none(), "one chunk left");

        // Scatter over odd pieces and back.
        let data: Vec<u8> = (0..CHUNK + 512).map(|i| (i * 7) as u8).collect();
        let mut a = data[..1000].to_vec();
        let mut b = data[1000..].to_vec();
        let src = [IoVec::from_slice(&mut a), IoVec::from_slice(&mut b)];
        // SAFETY: `a`, `b` and `src` outlive the copies below.
        let sgl = unsafe { SgList::from_slice(&src) };
        pool.copy_in(0, &sgl, data.len());
        let mut out = vec![0u8; CHUNK + 512];
        let dst = [IoVec::from_slice(&mut out)];
        // SAFETY: `out` and `dst` outlive the copy.
        let out_sgl = unsafe { SgList::from_slice(&dst) };
        pool.copy_out(0, &out_sgl, data.len());
        assert_eq!(out, data);

        pool.release(0);
        assert_eq!(pool.free_chunks(), 3);
        assert!(pool.lease(1, 2 * CHUNK).is_some());
    }
}
