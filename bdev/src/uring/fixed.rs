//! The regions registered as io_uring fixed buffers, and the lookup that
//! tells whether a request's buffer lies inside one; shared by the bdevs
//! over the engine.
//!
//! A frontend offers its data memory once
//! ([`BdevChannel::register_memory`](crate::BdevChannel::register_memory)).
//! It is cut into pieces, sorted by address and registered in that order,
//! so that a piece's position is its buffer index; a request whose one
//! buffer lies inside a piece names it (`READ_FIXED`/`WRITE_FIXED`, or
//! `IORING_URING_CMD_FIXED` for passthrough), which spares the kernel
//! pinning its pages on every request. A buffer that straddles two pieces
//! goes without a fixed buffer.
//!
//! # How large a piece
//! - Reads and writes (`file`): at most [`MAX_FIXED_BUFFER`], the kernel's
//!   limit per fixed buffer.
//! - NVMe passthrough (`nvme`): at most `max_segments - 1` pages. A
//!   fixed-buffer passthrough command is mapped from the registered
//!   buffer's page list starting at the command's offset, and Linux 6.1's
//!   `blk_rq_map_user_bvec` refuses it with `EINVAL` when that list, to the
//!   end of the registered buffer, has more entries than the queue has
//!   segments (127 for nvme-pci), however short the command.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::IoVec;

/// Largest fixed buffer the kernel takes (1 GiB).
pub const MAX_FIXED_BUFFER: usize = 1 << 30;

/// Most fixed buffers per ring (`IORING_MAX_REG_BUFFERS`).
const MAX_BUFFERS: usize = 1 << 14;

/// Why offered memory was not registered: the kernel refused it (memory it
/// cannot pin, `RLIMIT_MEMLOCK`) or it would take more buffers than a ring
/// holds. The channel then goes without fixed buffers.
#[derive(Debug)]
pub struct FixedRefused {
    /// Bytes offered.
    pub bytes: usize,
    /// The kernel's error, or why the plan failed.
    pub error: io::Error,
}

/// Says once per bdev, in the log, that its channels go without fixed
/// buffers (every channel of a bdev is offered the same memory).
#[derive(Debug, Default)]
pub struct RefusalNotice(AtomicBool);

impl RefusalNotice {
    /// Prints the refusal the first time; `without` says what goes on
    /// without fixed buffers ("reads and writes", "commands").
    pub fn report(&self, bdev: &str, refused: &FixedRefused, without: &str) {
        if !self.0.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "bdev {bdev}: the kernel refused to register {} bytes of frontend memory \
                 as io_uring fixed buffers ({}); {without} go without them",
                refused.bytes,
                refused.error
            );
        }
    }
}

/// Registered pieces, sorted by start address. Empty when nothing is
/// registered.
#[derive(Debug, Default)]
pub struct FixedRegions {
    /// `(start, end)` addresses of each piece; index = buffer index.
    pieces: Vec<(usize, usize)>,
}

impl FixedRegions {
    /// The pieces of at most `piece` bytes `regions` are cut into, sorted
    /// by address, as iovecs for `IORING_REGISTER_BUFFERS`; `None` when
    /// there would be more than the kernel takes. Empty regions are
    /// skipped.
    pub fn plan(regions: &[IoVec], piece: usize) -> Option<Vec<libc::iovec>> {
        let piece = piece.max(1);
        let count: usize = regions.iter().map(|r| r.len.div_ceil(piece)).sum();
        if count > MAX_BUFFERS {
            return None;
        }
        let mut pieces = Vec::with_capacity(count);
        for region in regions {
            let mut at = 0;
            while at < region.len {
                let len = (region.len - at).min(piece);
                pieces.push(libc::iovec {
                    iov_base: region.base.wrapping_add(at).cast(),
                    iov_len: len,
                });
                at += len;
            }
        }
        pieces.sort_by_key(|p| p.iov_base as usize);
        Some(pieces)
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The table for pieces that were registered as planned.
    pub fn registered(pieces: &[libc::iovec]) -> Self {
        Self {
            pieces: pieces
                .iter()
                .map(|p| (p.iov_base as usize, p.iov_base as usize + p.iov_len))
                .collect(),
        }
    }

    /// The buffer index of the piece holding all of `len` bytes at `base`.
    #[inline]
    pub fn find(&self, base: *const u8, len: usize) -> Option<u16> {
        if self.pieces.is_empty() {
            return None;
        }
        let start = base as usize;
        let end = start.checked_add(len)?;
        let after = self.pieces.partition_point(|&(s, _)| s <= start);
        let index = after.checked_sub(1)?;
        let (s, e) = self.pieces[index];
        (start >= s && end <= e).then_some(index as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(base: usize, len: usize) -> IoVec {
        IoVec {
            base: base as *mut u8,
            len,
        }
    }

    #[test]
    fn plan_cuts_sorts_and_find_looks_up() {
        let piece = 126 * 4096;
        let big = 0x1_0000_0000usize;
        let pieces =
            FixedRegions::plan(&[iov(big, 2 * piece + 4096), iov(0x1000, 8192)], piece).unwrap();
        let spans: Vec<_> = pieces
            .iter()
            .map(|p| (p.iov_base as usize, p.iov_len))
            .collect();
        assert_eq!(
            spans,
            [
                (0x1000, 8192),
                (big, piece),
                (big + piece, piece),
                (big + 2 * piece, 4096)
            ]
        );
        let table = FixedRegions::registered(&pieces);
        assert_eq!(table.find(0x1000 as *const u8, 8192), Some(0));
        assert_eq!(table.find(0x2000 as *const u8, 4096), Some(0));
        assert_eq!(table.find(0x2000 as *const u8, 4097), None, "runs past");
        assert_eq!(table.find(0x800 as *const u8, 16), None, "before all");
        assert_eq!(table.find((big + 512) as *const u8, 4096), Some(1));
        assert_eq!(table.find((big + piece) as *const u8, 4096), Some(2));
        assert_eq!(
            table.find((big + piece - 512) as *const u8, 4096),
            None,
            "straddles two pieces"
        );
        assert_eq!(table.find((big + 2 * piece) as *const u8, 4096), Some(3));
        assert_eq!(FixedRegions::default().find(0x1000 as *const u8, 1), None);
        // More pieces than the kernel registers.
        assert!(FixedRegions::plan(&[iov(0, 4096 * (MAX_BUFFERS + 1))], 4096).is_none());
        assert_eq!(FixedRegions::plan(&[iov(0, 0)], 4096).unwrap().len(), 0);
    }
}
