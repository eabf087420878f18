//! The command ring's geometry, as the kernel keeps it: free space counted
//! from the last reaped position, a PAD entry to the ring end when an entry
//! does not fit before it, and the entries written and not reaped yet.

use super::TcmuSim;
use dataplane::tcmu::abi::*;

/// An entry the simulator wrote and has not reaped yet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Record {
    /// Ring offset of the entry.
    pub(super) offset: u32,
    /// Its header as written.
    pub(super) len_op: u32,
}

impl TcmuSim {
    #[inline]
    pub(super) fn advance(&self, off: u32, len: u32) -> u32 {
        (off % self.config.cmdr_size + len) % self.config.cmdr_size
    }

    #[inline]
    pub(super) fn used(&self) -> u32 {
        let size = self.config.cmdr_size;
        (self.head + size - self.last_cleaned) % size
    }

    /// `is_ring_space_avail`: room for `size` bytes, plus a PAD to the ring
    /// end if the entry does not fit before it.
    pub(super) fn ring_space_avail(&self, size: u32) -> bool {
        let to_end = self.config.cmdr_size - self.head;
        let needed = if to_end >= size {
            u64::from(size)
        } else {
            u64::from(size) + u64::from(to_end)
        };
        let free = u64::from(self.config.cmdr_size) - u64::from(self.used()) - 1;
        free >= needed
    }

    /// `ring_insert_padding`: returns the position for an entry of `size`.
    pub(super) fn insert_padding(&mut self, size: u32) -> u32 {
        let to_end = self.config.cmdr_size - self.head;
        if to_end < size {
            let abs = CMDR_OFF as usize + self.head as usize;
            let len_op = tcmu_len_op(to_end, TCMU_OP_PAD);
            // Only the header is written, like the kernel.
            let _ = self.region.write_u32(abs + HDR_LEN_OP, len_op);
            let _ = self.region.write_u16(abs + HDR_CMD_ID, 0);
            let _ = self.region.write_u8(abs + HDR_KFLAGS, 0);
            let _ = self.region.write_u8(abs + HDR_UFLAGS, 0);
            self.records.push_back(Record {
                offset: self.head,
                len_op,
            });
            self.head = self.advance(self.head, to_end);
            self.region.store_cmd_head(self.head);
            self.pads += 1;
            self.smallest_pad = Some(self.smallest_pad.map_or(to_end, |p| p.min(to_end)));
        }
        self.head
    }

    /// Publishes an entry of `len_op` just written at `pos`.
    pub(super) fn publish_entry(&mut self, pos: u32, len_op: u32) {
        self.records.push_back(Record {
            offset: pos,
            len_op,
        });
        self.head = self.advance(pos, tcmu_hdr_get_len(len_op));
        self.region.store_cmd_head(self.head);
    }
}
