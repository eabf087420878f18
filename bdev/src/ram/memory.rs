//! The memory of a ram bdev: a [`RamMapping`] (its huge-page policy,
//! prefault and collapse, the measure of its huge pages) and the one
//! operation that treats it as pages rather than bytes on the data path:
//! zeroing, with `MADV_DONTNEED` for large aligned runs.
//!
//! Only raw pointers into the mapping are ever taken (see the [concurrency
//! contract](super#concurrency-contract)); channels copy through
//! [`RamMemory::base`].

use super::mapping::{base_page_size, Backing, Collapse, HugePages, RamMapping, HUGE_PAGE_SIZE};
use crate::Error;

/// An unmap/write-zeroes hands memory back to the kernel (one `madvise`) only
/// when it covers at least this many bytes of whole discard units; smaller
/// ranges are cheaper to zero with `memset` than a syscall plus TLB shootdown.
pub const DISCARD_MIN_BYTES: usize = 2 << 20;

/// The mapping shared by a bdev and its channels.
#[derive(Debug)]
pub(super) struct RamMemory {
    /// The mapping; only raw pointers into it are ever taken.
    mapping: RamMapping,
    /// Bytes of the device (`num_blocks * block_size`), at most the mapping's
    /// length.
    size: usize,
    /// Unit (power of two, address-aligned) in which whole pages may be
    /// discarded with `MADV_DONTNEED`: a huge page for a huge-page backing
    /// (discarding less would split it), else a base page.
    discard_unit: usize,
}

impl RamMemory {
    /// Maps `size` zeroed bytes for bdev `name` under the huge-page policy
    /// `huge` (see [`HugePages`]).
    pub(super) fn new(name: &str, size: usize, huge: HugePages) -> Result<Self, Error> {
        let mapping = RamMapping::new(name, size, huge)?;
        let discard_unit = match mapping.backing() {
            Backing::HugeTlb | Backing::TransparentHuge => HUGE_PAGE_SIZE,
            Backing::Normal => base_page_size(),
        };
        Ok(Self {
            mapping,
            size,
            discard_unit,
        })
    }

    /// Zeroes `len` bytes at `offset`: by hand for small ranges and the
    /// unaligned edges, with `MADV_DONTNEED` for large runs of whole discard
    /// units (which also returns that memory to the kernel).
    ///
    /// The caller has checked that `offset + len <= self.size`.
    pub(super) fn zero(&self, offset: usize, len: usize) {
        debug_assert!(offset + len <= self.size);
        let base = self.mapping.as_ptr();
        let start = base as usize + offset;
        let end = start + len;
        let unit = self.discard_unit;
        let inner_start = start.next_multiple_of(unit);
        let inner_end = end & !(unit - 1);
        if inner_end > inner_start && inner_end - inner_start >= DISCARD_MIN_BYTES {
            let inner_offset = inner_start - base as usize;
            let inner_len = inner_end - inner_start;
            // SAFETY: [inner_offset, inner_offset + inner_len) lies inside
            // [offset, offset + len), which the caller checked is inside the
            // device, itself inside the mapping's usable range, and both ends
            // are aligned to the discard unit (the base of the mapping is
            // aligned to it too). MADV_DONTNEED on a private anonymous
            // mapping makes those pages read back as zeroes: the same effect
            // as writing zeroes there, which is what the request asks for. No
            // Rust reference to the mapping exists; concurrent overlapping
            // I/O is unspecified by the ram module's concurrency contract, as
            // for the memset path.
            let discarded = unsafe { self.mapping.discard(inner_offset, inner_len) };
            if discarded.is_ok() {
                // SAFETY: as for `write_bytes` below, on the two edges.
                unsafe {
                    zero_bytes(base.add(offset), inner_offset - offset);
                    zero_bytes(base.add(inner_offset + inner_len), end - inner_end);
                }
                return;
            }
        }
        // SAFETY: [offset, offset + len) is inside the device (checked by the
        // caller), which is inside the mapping we own for as long as `self`
        // lives. Concurrent overlapping I/O on these bytes is unspecified by
        // the ram module's concurrency contract; no Rust reference to them
        // exists.
        unsafe { zero_bytes(base.add(offset), len) };
    }

    /// Start of the device's bytes. Only raw pointers into the mapping are
    /// ever taken; the bytes from here to `size` are the device.
    #[inline]
    pub(super) fn base(&self) -> *mut u8 {
        self.mapping.as_ptr()
    }

    /// The mapping (its backing, length, prefault and huge-page fraction).
    pub(super) fn mapping(&self) -> &RamMapping {
        &self.mapping
    }

    /// Commits every page and collapses it onto huge pages where it can
    /// ([`RamMapping::prefault`]). Contents are unchanged.
    pub(super) fn prefault(&self) -> Collapse {
        self.mapping.prefault()
    }
}

/// Writes `len` zero bytes at `ptr`.
///
/// # Safety
/// `ptr..ptr + len` must be valid for writes (the bdev mapping, within the
/// device); other threads touching these bytes at the same time is allowed
/// only in the sense of the ram module's concurrency contract.
unsafe fn zero_bytes(ptr: *mut u8, len: usize) {
    // SAFETY: forwarded to the caller.
    unsafe { std::ptr::write_bytes(ptr, 0, len) };
}
