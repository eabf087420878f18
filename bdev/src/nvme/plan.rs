//! How a request becomes commands: the pieces of a read or write larger
//! than one command, and how each piece's data reaches the device. Pure:
//! no memory is touched but the iovec rows it fills.
//!
//! # What the kernel takes without copying (Linux 6.1, `blk_rq_map_user_iov`)
//! The NVMe driver's queues have a DMA alignment of 4 bytes
//! (`blk_queue_dma_alignment(q, 3)`) and a virtual boundary of 4 KiB
//! (`NVME_CTRL_PAGE_SIZE`). A passthrough buffer is mapped straight to the
//! device (its pages pinned) when every iovec's address and length are
//! multiples of 4 and, between iovecs, the one before ends and the one
//! after starts on a 4 KiB boundary. Anything else is not an error: the
//! kernel copies through pages it allocates for the request. This bdev
//! copies through its own preallocated bounce buffers instead (counted),
//! so the kernel allocates nothing per request either.
//!
//! Several iovecs go as one vectored command (`NVME_URING_CMD_IO_VEC`,
//! Linux 6.1) with a copy of the piece's iovecs in the command's row;
//! without vectored passthrough (5.19, 6.0) they are bounced.

use super::profile::CTRL_PAGE;
use crate::IoVec;

/// Addresses and lengths of iovecs the kernel maps straight.
const DMA_MASK: usize = 3;
const PAGE_MASK: usize = CTRL_PAGE - 1;

/// A position in a scatter-gather list: `offset` bytes into iovec
/// `index`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Cursor {
    pub index: usize,
    pub offset: usize,
}

/// How one command's data reaches the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    /// One buffer holds the piece: a command on it.
    Single(*mut u8),
    /// The piece is this many iovecs, copied into the command's row: a
    /// vectored command on the row.
    Vector(u32),
    /// Through a bounce buffer.
    Bounce,
}

/// The blocks of piece `k` of a transfer of `blocks` blocks cut into
/// commands of at most `per_command` blocks.
#[inline]
pub(super) fn piece_blocks(blocks: u32, per_command: u32, k: u32) -> u32 {
    (blocks - k * per_command).min(per_command)
}

/// How `len` bytes at `at` in `iovs` reach the device, and the position
/// after them. `vectored`: the kernel takes vectored commands. When the
/// answer is [`Placement::Vector`] and `row` is given, the piece's iovecs
/// are written into it; a piece of more iovecs than `row_capacity` is
/// bounced.
///
/// `iovs` must hold at least `len` bytes from `at` (the request was
/// checked against its buffer); if it does not, the piece is bounced.
pub(super) fn place(
    iovs: &[IoVec],
    at: Cursor,
    len: usize,
    vectored: bool,
    row_capacity: usize,
    mut row: Option<&mut [IoVec]>,
) -> (Placement, Cursor) {
    let mut cursor = at;
    // Past exhausted and empty iovecs.
    while iovs
        .get(cursor.index)
        .is_some_and(|v| cursor.offset >= v.len)
    {
        cursor = Cursor {
            index: cursor.index + 1,
            offset: 0,
        };
    }
    let Some(first) = iovs.get(cursor.index) else {
        return (Placement::Bounce, cursor);
    };
    if first.len - cursor.offset >= len {
        let base = first.base.wrapping_add(cursor.offset);
        let after = Cursor {
            index: cursor.index,
            offset: cursor.offset + len,
        };
        let placement = if base as usize & DMA_MASK == 0 && len & DMA_MASK == 0 {
            Placement::Single(base)
        } else {
            Placement::Bounce
        };
        return (placement, after);
    }
    let mut straight = vectored;
    let mut n = 0usize;
    let mut left = len;
    while left > 0 {
        let Some(v) = iovs.get(cursor.index) else {
            return (Placement::Bounce, cursor);
        };
        if cursor.offset >= v.len {
            cursor = Cursor {
                index: cursor.index + 1,
                offset: 0,
            };
            continue;
        }
        let base = v.base.wrapping_add(cursor.offset);
        let take = (v.len - cursor.offset).min(left);
        let (start, end) = (base as usize, base as usize + take);
        if straight {
            let aligned = (start | take) & DMA_MASK == 0;
            let joins_before = n == 0 || start & PAGE_MASK == 0;
            let joins_after = take == left || end & PAGE_MASK == 0;
            if !aligned || !joins_before || !joins_after || n >= row_capacity {
                straight = false;
            } else if let Some(row) = row.as_deref_mut() {
                row[n] = IoVec { base, len: take };
            }
        }
        n += 1;
        left -= take;
        cursor.offset += take;
    }
    if straight {
        (Placement::Vector(n as u32), cursor)
    } else {
        (Placement::Bounce, cursor)
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

    const PAGE: usize = 4096;

    #[test]
    fn pieces_of_a_split_transfer() {
        assert_eq!(piece_blocks(2048, 1008, 0), 1008);
        assert_eq!(piece_blocks(2048, 1008, 1), 1008);
        assert_eq!(piece_blocks(2048, 1008, 2), 32);
        assert_eq!(piece_blocks(8, 1008, 0), 8);
        assert_eq!(2048u32.div_ceil(1008), 3);
    }

    #[test]
    fn one_buffer_goes_straight_when_4_byte_aligned() {
        let iovs = [iov(0x10_0000, 8192)];
        let (p, after) = place(&iovs, Cursor::default(), 4096, true, 4, None);
        assert_eq!(p, Placement::Single(0x10_0000 as *mut u8));
        assert_eq!(
            after,
            Cursor {
                index: 0,
                offset: 4096
            }
        );
        // The next piece starts inside the same iovec.
        let (p, after) = place(&iovs, after, 4096, true, 4, None);
        assert_eq!(p, Placement::Single((0x10_0000 + 4096) as *mut u8));
        assert_eq!(
            after,
            Cursor {
                index: 0,
                offset: 8192
            }
        );
        // Any 4-byte alignment will do for one buffer; odd ones bounce.
        let (p, _) = place(
            &[iov(0x10_0204, 512)],
            Cursor::default(),
            512,
            false,
            4,
            None,
        );
        assert_eq!(p, Placement::Single(0x10_0204 as *mut u8));
        let (p, _) = place(
            &[iov(0x10_0001, 512)],
            Cursor::default(),
            512,
            true,
            4,
            None,
        );
        assert_eq!(p, Placement::Bounce);
    }

    #[test]
    fn page_joined_iovecs_go_as_a_vector() {
        // TCMU-like: separate pages, the first and last partly used.
        let iovs = [
            iov(0x10_0800, 2048),
            iov(0x20_0000, PAGE),
            iov(0x30_0000, 1024),
        ];
        let mut row = [iov(0, 0); 4];
        let (p, after) = place(
            &iovs,
            Cursor::default(),
            2048 + PAGE + 1024,
            true,
            4,
            Some(&mut row),
        );
        assert_eq!(p, Placement::Vector(3));
        assert_eq!(row[..3], iovs);
        assert_eq!(
            after,
            Cursor {
                index: 2,
                offset: 1024
            }
        );
        // Without vectored passthrough, or with too small a row: bounced.
        let len = 2048 + PAGE + 1024;
        assert_eq!(
            place(&iovs, Cursor::default(), len, false, 4, None).0,
            Placement::Bounce
        );
        assert_eq!(
            place(&iovs, Cursor::default(), len, true, 2, None).0,
            Placement::Bounce
        );
    }

    #[test]
    fn gaps_off_the_page_boundary_bounce() {
        // The first iovec ends inside a page: the kernel would copy.
        let iovs = [iov(0x10_0000, 1000), iov(0x20_0000, 3096)];
        assert_eq!(
            place(&iovs, Cursor::default(), 4096, true, 4, None).0,
            Placement::Bounce
        );
        // The second starts inside a page.
        let iovs = [iov(0x10_0000, PAGE), iov(0x20_0010, PAGE)];
        assert_eq!(
            place(&iovs, Cursor::default(), 8192, true, 4, None).0,
            Placement::Bounce
        );
        // Adjacent pieces of one page-aligned region are fine.
        let iovs = [iov(0x10_0000, PAGE), iov(0x10_1000, PAGE)];
        assert_eq!(
            place(&iovs, Cursor::default(), 8192, true, 4, None).0,
            Placement::Vector(2)
        );
    }

    #[test]
    fn a_split_transfer_cuts_iovecs_where_pieces_end() {
        // Three 12 KiB iovecs cut into 8 KiB commands: each piece's row
        // holds the parts of the iovecs it covers.
        let iovs = [
            iov(0x10_0000, 3 * PAGE),
            iov(0x20_0000, 3 * PAGE),
            iov(0x30_0000, 3 * PAGE),
        ];
        let mut at = Cursor::default();
        let mut rows = Vec::new();
        for _ in 0..4 {
            let mut row = [iov(0, 0); 4];
            let (p, next) = place(&iovs, at, 2 * PAGE, true, 4, Some(&mut row));
            match p {
                Placement::Single(base) => rows.push(vec![iov(base as usize, 2 * PAGE)]),
                Placement::Vector(n) => rows.push(row[..n as usize].to_vec()),
                Placement::Bounce => panic!("aligned pieces bounce"),
            }
            at = next;
        }
        assert_eq!(
            rows,
            [
                vec![iov(0x10_0000, 2 * PAGE)],
                vec![iov(0x10_2000, PAGE), iov(0x20_0000, PAGE)],
                vec![iov(0x20_1000, 2 * PAGE)],
                vec![iov(0x30_0000, 2 * PAGE)],
            ]
        );
        // The last piece: what is left.
        let (p, end) = place(&iovs, at, PAGE, true, 4, None);
        assert_eq!(p, Placement::Single(0x30_2000 as *mut u8));
        assert_eq!(
            end,
            Cursor {
                index: 2,
                offset: 3 * PAGE
            }
        );
    }

    #[test]
    fn empty_iovecs_are_skipped_and_a_short_list_bounces() {
        let iovs = [
            iov(0x10_0000, 0),
            iov(0x20_0000, PAGE),
            iov(0x30_0000, 0),
            iov(0x40_0000, PAGE),
        ];
        let mut row = [iov(0, 0); 4];
        let (p, _) = place(&iovs, Cursor::default(), 2 * PAGE, true, 4, Some(&mut row));
        assert_eq!(p, Placement::Vector(2));
        assert_eq!(row[..2], [iov(0x20_0000, PAGE), iov(0x40_0000, PAGE)]);
        let (p, _) = place(&iovs, Cursor::default(), 3 * PAGE, true, 4, None);
        assert_eq!(p, Placement::Bounce);
        assert_eq!(
            place(&[], Cursor::default(), 512, true, 4, None).0,
            Placement::Bounce
        );
    }
}
