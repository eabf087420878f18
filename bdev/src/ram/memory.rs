//! The memory of a ram bdev: one private anonymous mapping, the huge-page
//! policy that chose it, and the two operations that treat it as pages
//! rather than bytes (zeroing with `MADV_DONTNEED`, prefaulting).
//!
//! Only raw pointers into the mapping are ever taken (see the [concurrency
//! contract](super#concurrency-contract)); channels copy through
//! [`RamMemory::base`].

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};

use memmap2::{Advice, MmapOptions, MmapRaw, UncheckedAdvice};

use crate::Error;

/// Size of a huge page (x86-64 and aarch64 with 4 KiB base pages): the
/// granularity in which huge-page backed memory is mapped and discarded.
pub const HUGE_PAGE_SIZE: usize = 2 << 20;

/// An unmap/write-zeroes hands memory back to the kernel (one `madvise`) only
/// when it covers at least this many bytes of whole discard units; smaller
/// ranges are cheaper to zero with `memset` than a syscall plus TLB shootdown.
pub const DISCARD_MIN_BYTES: usize = 2 << 20;

/// `log2(HUGE_PAGE_SIZE)`, the `MAP_HUGE_*` size selector (`MAP_HUGE_2MB`).
const HUGE_PAGE_SHIFT: u8 = 21;

/// What kind of memory backs a [`RamBdev`](super::RamBdev).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Reserved hugetlbfs pages (`MAP_HUGETLB`, 2 MiB); the length was rounded
    /// up to a whole number of huge pages.
    HugeTlb,
    /// A normal anonymous mapping marked `madvise(MADV_HUGEPAGE)` while
    /// transparent huge pages are not disabled: the kernel backs it with 2 MiB
    /// pages where it can (the length was rounded up to a whole number of huge
    /// pages so the tail can be too).
    TransparentHuge,
    /// Base pages only.
    Normal,
}

/// Whether a [`RamBdev`](super::RamBdev) should try huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugePages {
    /// `MAP_HUGETLB` first; if that fails (no reserved pages), a normal mapping
    /// with `MADV_HUGEPAGE`; if transparent huge pages are unavailable, base
    /// pages. A device smaller than one huge page always uses base pages.
    #[default]
    Auto,
    /// Base pages only (no `MAP_HUGETLB`, no `MADV_HUGEPAGE`).
    Off,
}

/// The mapping shared by a bdev and its channels.
#[derive(Debug)]
pub(super) struct RamMemory {
    /// The mapping; only raw pointers into it are ever taken.
    map: MmapRaw,
    /// Bytes of the device (`num_blocks * block_size`), at most the mapping's
    /// length.
    size: usize,
    /// Unit (power of two, address-aligned) in which whole pages may be
    /// discarded with `MADV_DONTNEED`.
    discard_unit: usize,
    backing: Backing,
}

impl RamMemory {
    /// Maps `size` zeroed bytes for bdev `name` under the huge-page policy
    /// `huge` (see [`HugePages`]).
    pub(super) fn new(name: &str, size: usize, huge: HugePages) -> Result<Self, Error> {
        let alloc_error = |bytes: usize, source: io::Error| Error::Allocation {
            name: name.to_owned(),
            bytes: bytes as u64,
            source,
        };
        let huge_len = size
            .checked_next_multiple_of(HUGE_PAGE_SIZE)
            .ok_or_else(|| alloc_error(size, io::ErrorKind::OutOfMemory.into()))?;
        let base_page = base_page_size();

        // A device smaller than one huge page gains nothing from huge pages
        // and would commit a whole one.
        if huge == HugePages::Auto && size >= HUGE_PAGE_SIZE {
            if let Ok(map) = MmapOptions::new()
                .len(huge_len)
                .huge(Some(HUGE_PAGE_SHIFT))
                .map_anon()
            {
                return Ok(Self {
                    map: map.into(),
                    size,
                    discard_unit: HUGE_PAGE_SIZE,
                    backing: Backing::HugeTlb,
                });
            }
            if transparent_huge_pages_enabled() {
                let map = MmapOptions::new()
                    .len(huge_len)
                    .map_anon()
                    .map_err(|e| alloc_error(huge_len, e))?;
                if map.advise(Advice::HugePage).is_ok() {
                    return Ok(Self {
                        map: map.into(),
                        size,
                        // Discarding less than a whole huge page would split it.
                        discard_unit: HUGE_PAGE_SIZE,
                        backing: Backing::TransparentHuge,
                    });
                }
                return Ok(Self {
                    map: map.into(),
                    size,
                    discard_unit: base_page,
                    backing: Backing::Normal,
                });
            }
        }
        let map = MmapOptions::new()
            .len(size)
            .map_anon()
            .map_err(|e| alloc_error(size, e))?;
        Ok(Self {
            map: map.into(),
            size,
            discard_unit: base_page,
            backing: Backing::Normal,
        })
    }

    /// Zeroes `len` bytes at `offset`: by hand for small ranges and the
    /// unaligned edges, with `MADV_DONTNEED` for large runs of whole discard
    /// units (which also returns that memory to the kernel).
    ///
    /// The caller has checked that `offset + len <= self.size`.
    pub(super) fn zero(&self, offset: usize, len: usize) {
        debug_assert!(offset + len <= self.size);
        let base = self.map.as_mut_ptr();
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
            // device, itself inside our private anonymous mapping, and both
            // ends are aligned to the discard unit (the page size, or the huge
            // page size, which is a multiple of it). MADV_DONTNEED on a private
            // anonymous mapping makes those pages read back as zeroes: the
            // same effect as writing zeroes there, which is what the request
            // asks for. No Rust reference to the mapping exists; concurrent
            // overlapping I/O is unspecified by the ram module's
            // concurrency contract, as for the memset path.
            let discarded = unsafe {
                self.map
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, inner_offset, inner_len)
            };
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
        self.map.as_mut_ptr()
    }

    /// What backs the memory.
    pub(super) fn backing(&self) -> Backing {
        self.backing
    }

    /// Bytes mapped (the device size, rounded up to whole huge pages when
    /// huge pages are used).
    pub(super) fn mapped_bytes(&self) -> usize {
        self.map.len()
    }

    /// Commits every page of the device: one `madvise(MADV_POPULATE_WRITE)`,
    /// or [`touch_pages`](Self::touch_pages) if the kernel refuses it.
    /// Contents are unchanged.
    pub(super) fn prefault(&self) {
        if self
            .map
            .advise_range(Advice::PopulateWrite, 0, self.size)
            .is_ok()
        {
            return;
        }
        self.touch_pages();
    }

    /// Commits every page by an atomic no-op write to one byte of it.
    pub(super) fn touch_pages(&self) {
        let base = self.map.as_mut_ptr();
        let step = base_page_size();
        for offset in (0..self.size).step_by(step) {
            // SAFETY: `offset < size`, so the byte is inside the mapping,
            // which lives as long as `self`; u8 is always valid and the
            // mapping's bytes are suitably aligned for AtomicU8. The atomic
            // `fetch_or(0)` stores the value it read, so it changes nothing,
            // even racing with a channel's copy of the same byte (which the
            // concurrency contract already leaves to the initiator).
            let byte = unsafe { AtomicU8::from_ptr(base.add(offset)) };
            byte.fetch_or(0, Ordering::Relaxed);
        }
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

fn base_page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 && (page as usize).is_power_of_two() {
        page as usize
    } else {
        4096
    }
}

/// False when the kernel has transparent huge pages disabled (`[never]`) or
/// does not have them at all.
fn transparent_huge_pages_enabled() -> bool {
    match std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled") {
        Ok(setting) => !setting.contains("[never]"),
        Err(_) => false,
    }
}
