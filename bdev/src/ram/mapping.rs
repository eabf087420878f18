//! The memory behind a RAM bdev (and behind the bench's reference copy
//! loop): one private anonymous mapping under a huge-page policy, brought
//! onto huge pages at allocation time, off the data path, and the measure of
//! how much of it the kernel really backs with them.
//!
//! # Why huge pages, and how they are had
//! Random 4 KiB I/O over a gigabyte on 4 KiB pages misses the TLB on nearly
//! every copy and pays a page walk; on 2 MiB pages the same gigabyte is 512
//! TLB entries. Measured, the difference was a factor of 3.3 in the RAM
//! bdev's IOPS on one machine (an Intel Xeon VM) and within the noise on
//! another (an AMD Zen 5 VM): large enough that [`HugePages::Auto`] tries,
//! in order:
//!
//! 1. **hugetlbfs pages** (`MAP_HUGETLB`, 2 MiB) when enough are reserved
//!    (`vm.nr_hugepages`): reserved at `mmap` time, so the whole mapping is
//!    guaranteed huge ([`Backing::HugeTlb`]).
//! 2. **transparent huge pages** ([`Backing::TransparentHuge`]): a mapping
//!    aligned to 2 MiB and marked `MADV_HUGEPAGE`. Whether a page fault gets
//!    a huge page depends on `/sys/kernel/mm/transparent_hugepage/enabled`
//!    (`always` or `madvise`, not `never`) and on free contiguous memory:
//!    `.../defrag` decides whether a fault in a `MADV_HUGEPAGE` range stalls
//!    to reclaim and compact memory (`always`, `madvise`, `defer+madvise`)
//!    or takes base pages at once (`defer`, `never`). So
//!    [`prefault`](RamMapping::prefault) first populates the mapping and
//!    then, if any of it is still on base pages, asks for the rest with
//!    `MADV_COLLAPSE` (Linux 6.1+): the kernel copies the base pages of each
//!    2 MiB region into a new huge page, synchronously, entering direct
//!    reclaim and compaction *whatever `enabled` and `defrag` say* (the man
//!    page and `Documentation/admin-guide/mm/transhuge.rst`); it still
//!    honours `MADV_NOHUGEPAGE` and a process-wide `PR_SET_THP_DISABLE`.
//!    An older kernel answers `EINVAL` and the step is skipped quietly;
//!    `EAGAIN`, `ENOMEM` (no huge page could be had, even after compaction)
//!    and `EBUSY` (cgroup limit) are returned as [`Collapse::Failed`].
//! 3. **base pages** ([`Backing::Normal`]) when the kernel has no
//!    transparent huge pages, and always for [`HugePages::Off`] or a mapping
//!    smaller than one huge page (which would gain nothing and commit a
//!    whole one).
//!
//! Transparent huge pages are a best effort: fragmented memory can leave
//! part of the mapping on base pages. The result is therefore measured,
//! never assumed: [`huge_page_fraction`](RamMapping::huge_page_fraction)
//! reads the mapping's `AnonHugePages` in `/proc/self/smaps` (see
//! `smaps.rs`) — a control-path call, never for a reactor.
//!
//! # Layout of a transparent-huge-page mapping
//! ```text
//! | guard (>= 4 KiB) | usable: len, 2 MiB-aligned, MADV_HUGEPAGE | guard (>= 2 MiB) |
//! ```
//! The kernel only maps a huge page at a 2 MiB-aligned address, so the
//! usable range is aligned by hand inside a mapping 4 MiB longer than it.
//! The two guards stay `PROT_NONE` and never touched: they catch an overrun,
//! and they keep the usable range its own VMA (the kernel never merges it
//! with a neighbouring mapping), so that its line in smaps describes exactly
//! this memory. They cost address space only.

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};

use memmap2::{Advice, MmapOptions, MmapRaw, UncheckedAdvice};

use super::smaps;
use crate::Error;

/// Size of a huge page (x86-64 and aarch64 with 4 KiB base pages): the
/// granularity in which huge-page backed memory is mapped and discarded.
pub const HUGE_PAGE_SIZE: usize = 2 << 20;

/// `log2(HUGE_PAGE_SIZE)`, the `MAP_HUGE_*` size selector (`MAP_HUGE_2MB`).
const HUGE_PAGE_SHIFT: u8 = 21;

/// `madvise` advice: collapse into transparent huge pages (Linux 6.1+;
/// the UAPI value, the same on every architecture).
const MADV_COLLAPSE: libc::c_int = 25;

/// What kind of memory backs a [`RamMapping`] (and so a
/// [`RamBdev`](super::RamBdev)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Reserved hugetlbfs pages (`MAP_HUGETLB`, 2 MiB); the length was rounded
    /// up to a whole number of huge pages.
    HugeTlb,
    /// A 2 MiB-aligned anonymous mapping marked `madvise(MADV_HUGEPAGE)`: the
    /// kernel backs it with 2 MiB pages where it can, and
    /// [`RamMapping::prefault`] collapses what it could not (the length was
    /// rounded up to a whole number of huge pages so the tail can be too).
    TransparentHuge,
    /// Base pages only.
    Normal,
}

/// Whether a [`RamMapping`] (a [`RamBdev`](super::RamBdev)) should try huge
/// pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugePages {
    /// `MAP_HUGETLB` first; if that fails (not enough reserved pages), a
    /// transparent-huge-page mapping; if the kernel has no transparent huge
    /// pages, base pages. A mapping smaller than one huge page always uses
    /// base pages.
    #[default]
    Auto,
    /// Base pages only (no `MAP_HUGETLB`, no `MADV_HUGEPAGE`).
    Off,
}

/// What `MADV_COLLAPSE` did in [`RamMapping::prefault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collapse {
    /// Nothing to collapse: hugetlbfs or base pages by policy, or every huge
    /// page was already in place after populating.
    NotNeeded,
    /// Every 2 MiB region of the mapping is now a huge page.
    Done,
    /// The kernel has no `MADV_COLLAPSE` (before Linux 6.1) or refuses it to
    /// this process (`PR_SET_THP_DISABLE`): `EINVAL`, skipped quietly.
    Unsupported,
    /// The collapse failed for part of the mapping with this errno: `EAGAIN`
    /// (a transient shortage), `ENOMEM` (no huge page could be had, even
    /// after reclaim and compaction) or `EBUSY` (a cgroup limit).
    Failed(i32),
}

impl Collapse {
    /// Why the collapse failed, in words, when it did.
    pub fn failure(&self) -> Option<String> {
        match *self {
            Collapse::Failed(errno) => Some(format!(
                "MADV_COLLAPSE failed: {}",
                io::Error::from_raw_os_error(errno)
            )),
            _ => None,
        }
    }
}

/// A private anonymous mapping under a huge-page policy ([`HugePages`],
/// [`Backing`]; the why and how are in the docs of `ram/mapping.rs`, with
/// what the kernel's THP settings do to it). It owns the memory; only raw pointers into it (or the
/// slices of [`as_slice`](Self::as_slice)/[`as_mut_slice`](Self::as_mut_slice))
/// are ever taken.
#[derive(Debug)]
pub struct RamMapping {
    /// The whole mapping, guards included; unmapped on drop.
    map: MmapRaw,
    /// Offset of the usable range in `map` (2 MiB-aligned address when
    /// huge pages are used).
    offset: usize,
    /// Bytes usable from `offset`: the size asked for, rounded up to whole
    /// huge pages when huge pages are used.
    len: usize,
    backing: Backing,
    /// Huge pages were asked for and apply ([`HugePages::Auto`], at least one
    /// huge page): the fraction is worth reporting.
    huge_wanted: bool,
}

impl RamMapping {
    /// Maps `size` zeroed bytes for `name` (named in errors) under the
    /// huge-page policy `huge`. Fails with [`Error::Allocation`] when the
    /// memory cannot be mapped, and with [`Error::InvalidParameter`] for a
    /// zero size.
    pub fn new(name: &str, size: usize, huge: HugePages) -> Result<Self, Error> {
        if size == 0 {
            return Err(Error::InvalidParameter(format!(
                "{name}: cannot map zero bytes"
            )));
        }
        let alloc_error = |bytes: usize, source: io::Error| Error::Allocation {
            name: name.to_owned(),
            bytes: bytes as u64,
            source,
        };
        if huge == HugePages::Off || size < HUGE_PAGE_SIZE {
            let map = MmapOptions::new()
                .len(size)
                .map_anon()
                .map_err(|e| alloc_error(size, e))?;
            return Ok(Self {
                map: map.into(),
                offset: 0,
                len: size,
                backing: Backing::Normal,
                huge_wanted: false,
            });
        }
        let len = size
            .checked_next_multiple_of(HUGE_PAGE_SIZE)
            .ok_or_else(|| alloc_error(size, io::ErrorKind::OutOfMemory.into()))?;
        if let Ok(map) = MmapOptions::new()
            .len(len)
            .huge(Some(HUGE_PAGE_SHIFT))
            .map_anon()
        {
            return Ok(Self {
                map: map.into(),
                offset: 0,
                len,
                backing: Backing::HugeTlb,
                huge_wanted: true,
            });
        }
        let total = len
            .checked_add(2 * HUGE_PAGE_SIZE)
            .ok_or_else(|| alloc_error(len, io::ErrorKind::OutOfMemory.into()))?;
        let map: MmapRaw = MmapOptions::new()
            .len(total)
            .map_anon()
            .map_err(|e| alloc_error(len, e))?
            .into();
        let start = map.as_ptr() as usize;
        // The first 2 MiB boundary strictly after `start` (which is
        // page-aligned): the head guard is at least a page, the tail guard
        // at least 2 MiB.
        let offset = ((start + HUGE_PAGE_SIZE) & !(HUGE_PAGE_SIZE - 1)) - start;
        protect_guard(&map, 0, offset);
        protect_guard(&map, offset + len, total - offset - len);
        let backing = if map.advise_range(Advice::HugePage, offset, len).is_ok() {
            Backing::TransparentHuge
        } else {
            // No transparent huge pages in this kernel.
            Backing::Normal
        };
        Ok(Self {
            map,
            offset,
            len,
            backing,
            huge_wanted: true,
        })
    }

    /// Start of the usable bytes.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        // SAFETY: `offset` is inside the mapping (it leaves room for `len`
        // bytes and the tail guard), so the result stays in the same
        // allocation.
        unsafe { self.map.as_mut_ptr().add(self.offset) }
    }

    /// The usable bytes. Anyone writing through [`as_ptr`](Self::as_ptr)
    /// meanwhile must not overlap what is read here.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` bytes from `as_ptr` are mapped readable for as long
        // as `self` lives, and initialized (zero at start, then whatever was
        // written; any byte is a valid u8). Writers through the raw pointer
        // take on not to race with this borrow (their unsafe code's
        // contract, as for any raw pointer).
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// The usable bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as for `as_slice`; `&mut self` makes this the only borrow
        // taken through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len) }
    }

    /// Bytes usable: the size asked for, rounded up to whole huge pages
    /// when huge pages are used.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a mapping has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What backs the memory (decided once, at construction).
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// Commits every page now, then brings what is still on base pages onto
    /// huge pages: one
    /// `madvise(MADV_POPULATE_WRITE)` (or, where the kernel refuses it, an
    /// atomic no-op write to every page), then for a
    /// [`TransparentHuge`](Backing::TransparentHuge) mapping not yet wholly
    /// on huge pages one `madvise(MADV_COLLAPSE)`. Contents are unchanged,
    /// so it may be called at any time, even with I/O in flight; it may take
    /// a while (reclaim and compaction): a control-path call.
    pub fn prefault(&self) -> Collapse {
        if self
            .map
            .advise_range(Advice::PopulateWrite, self.offset, self.len)
            .is_err()
        {
            self.touch_pages();
        }
        if self.backing != Backing::TransparentHuge || self.huge_page_fraction() == Some(1.0) {
            return Collapse::NotNeeded;
        }
        // SAFETY: the range is the usable part of our own private anonymous
        // mapping, page-aligned. MADV_COLLAPSE copies the contents of each
        // 2 MiB region into a huge page and maps it in place of the base
        // pages; memory reads back exactly as before (the kernel blocks
        // concurrent access to a region while it is being copied, as for
        // khugepaged), so no Rust-visible state changes.
        let status = unsafe { libc::madvise(self.as_ptr().cast(), self.len, MADV_COLLAPSE) };
        if status == 0 {
            return Collapse::Done;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINVAL) => Collapse::Unsupported,
            Some(errno) => Collapse::Failed(errno),
            None => Collapse::Failed(libc::EIO),
        }
    }

    /// Commits every page by an atomic no-op write to one byte of it (the
    /// fallback of [`prefault`](Self::prefault)).
    pub(super) fn touch_pages(&self) {
        let base = self.as_ptr();
        for offset in (0..self.len).step_by(base_page_size()) {
            // SAFETY: `offset < len`, so the byte is inside the usable
            // range, which lives as long as `self`; u8 is always valid and
            // suitably aligned for AtomicU8. The atomic `fetch_or(0)` stores
            // the value it read, so it changes nothing, even racing with a
            // copy of the same byte (which the RAM bdev's concurrency
            // contract already leaves to the initiator).
            let byte = unsafe { AtomicU8::from_ptr(base.add(offset)) };
            byte.fetch_or(0, Ordering::Relaxed);
        }
    }

    /// Hands `len` bytes at `offset` of the usable range back to the kernel
    /// (`MADV_DONTNEED`): they read back as zeroes.
    ///
    /// # Safety
    /// `offset` and `len` are multiples of the discard unit (the base page
    /// size, or [`HUGE_PAGE_SIZE`] for a huge-page backing) and
    /// `offset + len <= self.len()`; no Rust reference to those bytes
    /// exists (the caller treats the memory through raw pointers only).
    pub(super) unsafe fn discard(&self, offset: usize, len: usize) -> io::Result<()> {
        debug_assert!(offset + len <= self.len);
        // SAFETY: forwarded to the caller: the range is inside our private
        // anonymous mapping and aligned, and nothing holds a reference into
        // it, so zeroing it under Rust's feet breaks no borrow.
        unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, self.offset + offset, len)
        }
    }

    /// The fraction (0.0 to 1.0) of the mapping backed by huge pages, now:
    /// 1.0 for hugetlbfs pages (reserved at `mmap`); for a transparent-huge-page
    /// mapping, the bytes of its `AnonHugePages` in `/proc/self/smaps` over
    /// its length (meaningful once [`prefault`](Self::prefault)ed: memory
    /// never touched is on no page at all). `None` when huge pages do not
    /// apply ([`HugePages::Off`], smaller than a huge page) or when smaps
    /// cannot be read.
    ///
    /// Reads `/proc/self/smaps`: a control-path call, never for a reactor.
    pub fn huge_page_fraction(&self) -> Option<f64> {
        match self.backing {
            Backing::HugeTlb => Some(1.0),
            _ if !self.huge_wanted => None,
            _ => smaps::anon_huge_bytes(self.as_ptr() as usize, self.len)
                .map(|bytes| (bytes as f64 / self.len as f64).min(1.0)),
        }
    }
}

/// Makes `len` bytes at `offset` of `map` inaccessible (a guard). Failing
/// leaves them accessible and unused, which is harmless.
fn protect_guard(map: &MmapRaw, offset: usize, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: the range is inside `map` (the caller computes it from the
    // mapping's layout), page-aligned, and never used: no pointer into it is
    // ever handed out, so revoking access affects nothing else.
    unsafe {
        libc::mprotect(map.as_mut_ptr().add(offset).cast(), len, libc::PROT_NONE);
    }
}

/// The base page size (4 KiB if sysconf does not say).
pub(super) fn base_page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 && (page as usize).is_power_of_two() {
        page as usize
    } else {
        4096
    }
}
