//! The regions registered as io_uring fixed buffers and the lookup that
//! tells whether a request's buffer lies inside one.
//!
//! A frontend offers its whole data mapping once
//! ([`BdevChannel::register_memory`](crate::BdevChannel::register_memory));
//! it is cut into pieces of at most [`MAX_BUFFER`] bytes (the kernel's limit
//! per fixed buffer), sorted by address and registered in that order, so a
//! piece's position is its buffer index. A read or write with one buffer
//! inside a piece goes as `READ_FIXED`/`WRITE_FIXED`, which spares the
//! kernel pinning its pages on every request.

use crate::IoVec;

/// Largest fixed buffer the kernel takes (1 GiB).
pub(super) const MAX_BUFFER: usize = 1 << 30;
/// Most fixed buffers per ring (`IORING_MAX_REG_BUFFERS`).
pub(super) const MAX_BUFFERS: usize = 1 << 14;

/// Registered pieces, sorted by start address. Empty when nothing is
/// registered.
#[derive(Debug, Default)]
pub(super) struct FixedRegions {
    /// `(start, end)` addresses of each piece; index = buffer index.
    pieces: Vec<(usize, usize)>,
}

impl FixedRegions {
    /// The pieces `regions` cut into, sorted by address, as iovecs for
    /// `IORING_REGISTER_BUFFERS`; `None` when there would be more than the
    /// kernel takes. Empty regions are skipped.
    pub fn plan(regions: &[IoVec]) -> Option<Vec<libc::iovec>> {
        let mut pieces = Vec::new();
        for region in regions {
            let mut at = 0;
            while at < region.len {
                let len = (region.len - at).min(MAX_BUFFER);
                pieces.push(libc::iovec {
                    iov_base: region.base.wrapping_add(at).cast(),
                    iov_len: len,
                });
                at += len;
            }
        }
        pieces.sort_by_key(|piece| piece.iov_base as usize);
        (pieces.len() <= MAX_BUFFERS).then_some(pieces)
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
        let big = 0x1_0000_0000usize;
        let pieces = FixedRegions::plan(&[iov(big, MAX_BUFFER + 4096), iov(0x1000, 8192)]).unwrap();
        let spans: Vec<_> = pieces
            .iter()
            .map(|p| (p.iov_base as usize, p.iov_len))
            .collect();
        assert_eq!(
            spans,
            [(0x1000, 8192), (big, MAX_BUFFER), (big + MAX_BUFFER, 4096)]
        );
        let table = FixedRegions::registered(&pieces);
        assert_eq!(table.find(0x1000 as *const u8, 8192), Some(0));
        assert_eq!(table.find(0x2000 as *const u8, 4096), Some(0));
        assert_eq!(table.find(0x2000 as *const u8, 4097), None, "runs past");
        assert_eq!(table.find(0x800 as *const u8, 16), None, "before all");
        assert_eq!(table.find((big + 512) as *const u8, 4096), Some(1));
        assert_eq!(table.find((big + MAX_BUFFER) as *const u8, 4096), Some(2));
        assert_eq!(
            table.find((big + MAX_BUFFER - 512) as *const u8, 4096),
            None,
            "straddles two pieces"
        );
        assert_eq!(FixedRegions::default().find(0x1000 as *const u8, 1), None);
        assert!(FixedRegions::plan(&[iov(0, MAX_BUFFER * (MAX_BUFFERS + 1))]).is_none());
    }
}
