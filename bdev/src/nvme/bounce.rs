//! The bounce pool: aligned, contiguous buffers for the pieces whose
//! memory the kernel would otherwise copy (see `plan.rs`).
//!
//! One anonymous mapping, allocated at channel open, cut into buffers of
//! one command's largest transfer each (rounded up to 4 KiB, so every
//! buffer is page-aligned and the kernel maps it straight). A bounced
//! command leases one buffer and goes to the device as a single-buffer
//! command on it, which needs no vectored passthrough; when none is free
//! the request waits in the channel. Nothing is allocated per request.

use memmap2::MmapMut;

use super::plan::Cursor;
use super::profile::CTRL_PAGE;
use crate::{Error, IoVec};

/// Preallocated buffers and who holds them.
///
/// Invariants: a buffer is either on `free` or leased by exactly one
/// command slot (`lease[slot]`).
#[derive(Debug)]
pub(super) struct BouncePool {
    memory: MmapMut,
    buffer_len: usize,
    free: Vec<u32>,
    /// Per command slot: the buffer it holds.
    lease: Vec<Option<u32>>,
}

impl BouncePool {
    /// `count` buffers (at least one) of `buffer_len` bytes for `slots`
    /// command slots.
    pub fn new(count: usize, buffer_len: usize, slots: usize) -> Result<Self, Error> {
        let buffer_len = buffer_len.max(1).next_multiple_of(CTRL_PAGE);
        let count = count.max(1);
        let memory = MmapMut::map_anon(count * buffer_len)?;
        Ok(Self {
            memory,
            buffer_len,
            free: (0..count as u32).rev().collect(),
            lease: vec![None; slots],
        })
    }

    /// Buffers not leased.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Leases a buffer to command slot `slot` and returns its address, or
    /// `None` when none is free.
    pub fn lease(&mut self, slot: u32) -> Option<*mut u8> {
        debug_assert!(self.lease[slot as usize].is_none());
        let buffer = self.free.pop()?;
        self.lease[slot as usize] = Some(buffer);
        Some(self.address(buffer))
    }

    /// Returns `slot`'s buffer, if it holds one.
    pub fn release(&mut self, slot: u32) {
        if let Some(buffer) = self.lease[slot as usize].take() {
            self.free.push(buffer);
        }
    }

    fn address(&mut self, buffer: u32) -> *mut u8 {
        // SAFETY: `buffer` < count, so the offset lies inside the mapping.
        unsafe {
            self.memory
                .as_mut_ptr()
                .add(buffer as usize * self.buffer_len)
        }
    }

    /// Copies `len` bytes of `iovs` from `at` into `slot`'s buffer (a
    /// write).
    pub fn copy_in(&mut self, slot: u32, iovs: &[IoVec], at: Cursor, len: usize) {
        self.copy(slot, iovs, at, len, Direction::IntoBuffer);
    }

    /// Copies the first `len` bytes of `slot`'s buffer into `iovs` from
    /// `at` (a read).
    pub fn copy_out(&mut self, slot: u32, iovs: &[IoVec], at: Cursor, len: usize) {
        self.copy(slot, iovs, at, len, Direction::OutOfBuffer);
    }

    fn copy(&mut self, slot: u32, iovs: &[IoVec], at: Cursor, len: usize, direction: Direction) {
        let Some(buffer) = self.lease[slot as usize] else {
            debug_assert!(false, "slot {slot} holds no bounce buffer");
            return;
        };
        let len = len.min(self.buffer_len);
        let buffer = self.address(buffer);
        let (mut index, mut offset) = (at.index, at.offset);
        let mut done = 0;
        while done < len {
            let Some(v) = iovs.get(index) else {
                break;
            };
            let n = v.len.saturating_sub(offset).min(len - done);
            if n > 0 {
                // SAFETY: the buffer is leased to this slot only and holds
                // `buffer_len >= len` bytes; the iovec names memory valid
                // for `v.len` bytes that the bdev may read and write until
                // the request completes (the `SgList` contract), and
                // `offset + n <= v.len`; the pool's mapping is its own, so
                // the two never overlap.
                unsafe {
                    let ours = buffer.add(done);
                    let theirs = v.base.add(offset);
                    match direction {
                        Direction::IntoBuffer => std::ptr::copy_nonoverlapping(theirs, ours, n),
                        Direction::OutOfBuffer => std::ptr::copy_nonoverlapping(ours, theirs, n),
                    }
                }
            }
            done += n;
            index += 1;
            offset = 0;
        }
    }
}

#[derive(Clone, Copy)]
enum Direction {
    IntoBuffer,
    OutOfBuffer,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_copy_and_release() {
        let mut pool = BouncePool::new(2, 5000, 3).unwrap();
        assert_eq!((pool.free(), pool.buffer_len), (2, 8192));
        let a = pool.lease(0).unwrap();
        let b = pool.lease(2).unwrap();
        assert_eq!(a as usize % 4096, 0);
        assert_eq!(b as usize % 4096, 0);
        assert_ne!(a, b);
        assert!(pool.lease(1).is_none(), "both leased");

        // Scatter from odd pieces, starting inside the second iovec.
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let mut x = vec![0u8; 100];
        let mut y = data[..1000].to_vec();
        let mut z = data[1000..].to_vec();
        let mut y_head = vec![0xAAu8; 10];
        y_head.extend_from_slice(&y);
        y = y_head;
        let src = [
            IoVec::from_slice(&mut x),
            IoVec::from_slice(&mut y),
            IoVec::from_slice(&mut z),
        ];
        pool.copy_in(
            2,
            &src,
            Cursor {
                index: 1,
                offset: 10,
            },
            3000,
        );
        let mut out = vec![0u8; 3000];
        let (p, q) = out.split_at_mut(1234);
        let dst = [IoVec::from_slice(p), IoVec::from_slice(q)];
        pool.copy_out(2, &dst, Cursor::default(), 3000);
        assert_eq!(out, data);

        pool.release(2);
        pool.release(2); // nothing held: no-op
        assert_eq!(pool.free(), 1);
        assert_eq!(pool.lease(1), Some(b));
        pool.release(0);
        pool.release(1);
        assert_eq!(pool.free(), 2);
    }
}
