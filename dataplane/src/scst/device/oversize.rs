//! [`Oversize`]: buffers of their own for data-out transfers larger than
//! the pool's largest buffer.
//!
//! # Why
//! For a write, the kernel asks for its buffer with ALLOC_MEM before the
//! handler sees the command, and the reply can only give a buffer or
//! `pbuf = 0`, which the kernel answers with BUSY: the initiator retries
//! the same write for ever. The precise answer to a transfer beyond the
//! unit's MAXIMUM TRANSFER LENGTH is CHECK CONDITION, ILLEGAL REQUEST,
//! INVALID FIELD IN CDB on the transfer length (SBC-4, READ (10) and the
//! other transfer commands), and scst_user carries sense only in the
//! replies to PARSE (not sent with the standard parser) and EXEC. So the
//! write gets a buffer of its own, the kernel moves the data into it and
//! sends the EXEC, and the executor answers it (the LUN refuses a transfer
//! beyond its limit before touching the bdev).
//!
//! # Contract
//! - Not the hot path: only a command that ignores the Block Limits VPD
//!   page comes here, and each costs an `mmap` and a `munmap`.
//! - At most [`MAX_OVERSIZE`] such buffers live at once (the kernel may
//!   cache them until it evicts them); beyond that ALLOC_MEM answers BUSY,
//!   which is transient: they go as the kernel frees them.
//! - A buffer is unmapped only when the kernel gives it back (ON_FREE_CMD
//!   of a buffer it does not cache, ON_CACHED_MEM_FREE), or when the device
//!   is dropped with its driver closed and no command in the executor (the
//!   device's `Drop` decides, as for the pool).

use bdev::IoVec;
use memmap2::{MmapOptions, MmapRaw};

/// Most oversize buffers alive at once.
pub const MAX_OVERSIZE: usize = 8;

/// The live oversize buffers (see the module docs).
pub(super) struct Oversize {
    maps: Vec<MmapRaw>,
}

impl Oversize {
    /// None alive; room for [`MAX_OVERSIZE`] preallocated.
    pub(super) fn new() -> Self {
        Self {
            maps: Vec::with_capacity(MAX_OVERSIZE),
        }
    }

    /// A page-aligned buffer of `len` bytes (`len > 0`), or `None` when
    /// [`MAX_OVERSIZE`] are alive or the mapping fails.
    pub(super) fn alloc(&mut self, len: usize) -> Option<u64> {
        if len == 0 || self.maps.len() >= MAX_OVERSIZE {
            return None;
        }
        let map = MmapRaw::from(MmapOptions::new().len(len).map_anon().ok()?);
        let pbuf = map.as_mut_ptr() as u64;
        self.maps.push(map);
        Some(pbuf)
    }

    /// The first `len` bytes of the buffer at `pbuf`, if it is one of these
    /// and that long.
    pub(super) fn iovec(&self, pbuf: u64, len: usize) -> Option<IoVec> {
        let map = self.maps.iter().find(|m| m.as_mut_ptr() as u64 == pbuf)?;
        (len <= map.len()).then(|| IoVec {
            base: map.as_mut_ptr(),
            len,
        })
    }

    /// Whether `pbuf` is one of these buffers.
    pub(super) fn owns(&self, pbuf: u64) -> bool {
        self.maps.iter().any(|m| m.as_mut_ptr() as u64 == pbuf)
    }

    /// Unmaps the buffer at `pbuf`; false if it is not one of these.
    pub(super) fn free(&mut self, pbuf: u64) -> bool {
        match self.maps.iter().position(|m| m.as_mut_ptr() as u64 == pbuf) {
            Some(at) => {
                self.maps.swap_remove(at);
                true
            }
            None => false,
        }
    }

    /// Buffers alive.
    pub(super) fn len(&self) -> usize {
        self.maps.len()
    }
}
