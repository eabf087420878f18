//! The `ram` bdev: a block device in anonymous memory.
//!
//! All blocks live in one private anonymous mapping, obtained once at
//! construction (see [`Backing`] for the huge-page policy) and zero at start.
//! Nothing is ever allocated, locked or system-called per request, except that
//! an unmap or write-zeroes covering at least [`DISCARD_MIN_BYTES`] of whole
//! discard units (2 MiB huge pages, or base pages for a [`Backing::Normal`]
//! mapping) hands those units back to the kernel with one `madvise(MADV_DONTNEED)`,
//! which both zeroes them and returns the memory; the unaligned edges are
//! zeroed by hand.
//!
//! # Channels
//! A channel executes each request inside [`BdevChannel::submit`] (one
//! `memcpy` per contiguous run between the bdev memory and the request's
//! iovecs) and queues its completion; [`BdevChannel::poll`] delivers the
//! queued completions, so completion is deferred and batched like the `null`
//! bdev's (and SPDK's malloc bdev).
//!
//! # Concurrency contract
//! Any number of channels, on any threads, may use one `RamBdev` at once: the
//! memory is shared through a raw pointer (the mapping is owned by an `Arc`
//! that the bdev and every channel hold), and there are no locks. As on a real
//! disk, **the initiator orders overlapping I/O**: while a write to some blocks
//! is in flight, another write to or read of any of those blocks (from any
//! channel) leaves their contents, and the data read, unspecified (a mix of
//! old and new bytes at any granularity). Requests that do not overlap never
//! affect each other. The bytes have no validity invariant (`u8`) and no Rust
//! reference to the mapping is ever created, so a torn block is garbage data,
//! never a broken Rust value; the SCSI layer never issues overlapping writes
//! without ordering them, exactly as it would not to a disk.

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use memmap2::{Advice, MmapOptions, MmapRaw, UncheckedAdvice};

use crate::request::check_request;
use crate::{
    Bdev, BdevChannel, Capabilities, Error, Geometry, IoCompletion, IoError, IoOp, IoRequest,
    SgList,
};

/// Size of a huge page (x86-64 and aarch64 with 4 KiB base pages): the
/// granularity in which huge-page backed memory is mapped and discarded.
pub const HUGE_PAGE_SIZE: usize = 2 << 20;

/// An unmap/write-zeroes hands memory back to the kernel (one `madvise`) only
/// when it covers at least this many bytes of whole discard units; smaller
/// ranges are cheaper to zero with `memset` than a syscall plus TLB shootdown.
pub const DISCARD_MIN_BYTES: usize = 2 << 20;

/// `log2(HUGE_PAGE_SIZE)`, the `MAP_HUGE_*` size selector (`MAP_HUGE_2MB`).
const HUGE_PAGE_SHIFT: u8 = 21;

/// What kind of memory backs a [`RamBdev`].
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

/// Whether a [`RamBdev`] should try huge pages.
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
struct RamMemory {
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
    fn new(name: &str, size: usize, huge: HugePages) -> Result<Self, Error> {
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
    fn zero(&self, offset: usize, len: usize) {
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
            // overlapping I/O is unspecified by the module's concurrency
            // contract, as for the memset path.
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
        // the module's concurrency contract; no Rust reference to them exists.
        unsafe { zero_bytes(base.add(offset), len) };
    }
}

/// Writes `len` zero bytes at `ptr`.
///
/// # Safety
/// `ptr..ptr + len` must be valid for writes (the bdev mapping, within the
/// device); other threads touching these bytes at the same time is allowed
/// only in the sense of the module's concurrency contract.
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

/// A block device in anonymous memory. See the [module docs](self) for the
/// backing and the concurrency contract.
#[derive(Debug)]
pub struct RamBdev {
    name: String,
    geometry: Geometry,
    memory: Arc<RamMemory>,
}

impl RamBdev {
    /// A zeroed ram bdev of `num_blocks` blocks of `block_size` bytes, backed
    /// by huge pages when available ([`HugePages::Auto`]).
    ///
    /// Fails with [`Error::InvalidParameter`] for a bad geometry and with
    /// [`Error::Allocation`] when the memory cannot be mapped (for example
    /// more than the machine can commit).
    pub fn new(name: impl Into<String>, block_size: u32, num_blocks: u64) -> Result<Self, Error> {
        Self::with_huge_pages(name, block_size, num_blocks, HugePages::Auto)
    }

    /// As [`RamBdev::new`], choosing the huge-page policy.
    pub fn with_huge_pages(
        name: impl Into<String>,
        block_size: u32,
        num_blocks: u64,
        huge_pages: HugePages,
    ) -> Result<Self, Error> {
        let name = name.into();
        let geometry = Geometry::checked(block_size, num_blocks)?;
        let size = num_blocks
            .checked_mul(u64::from(block_size))
            .and_then(|bytes| usize::try_from(bytes).ok())
            .filter(|&bytes| bytes <= isize::MAX as usize)
            .ok_or_else(|| {
                Error::InvalidParameter(format!(
                    "ram bdev {name}: {num_blocks} blocks of {block_size} bytes do not fit in the address space"
                ))
            })?;
        let memory = RamMemory::new(&name, size, huge_pages)?;
        Ok(Self {
            name,
            geometry,
            memory: Arc::new(memory),
        })
    }

    /// What backs the memory (decided once, at construction).
    pub fn backing(&self) -> Backing {
        self.memory.backing
    }

    /// Bytes mapped (the device size, rounded up to whole huge pages when
    /// huge pages are used).
    pub fn mapped_bytes(&self) -> usize {
        self.memory.map.len()
    }

    /// Commits all of the device's memory now, so that I/O never takes a
    /// page fault (for benchmarks and latency-sensitive setups). Contents are
    /// unchanged, so it may be called at any time, even with I/O in flight.
    ///
    /// Uses one `madvise(MADV_POPULATE_WRITE)` (Linux 5.14+); if the kernel
    /// refuses it, touches every page with an atomic no-op write instead.
    /// A later unmap hands large ranges back to the kernel again.
    pub fn prefault(&self) {
        let memory = &self.memory;
        if memory
            .map
            .advise_range(Advice::PopulateWrite, 0, memory.size)
            .is_ok()
        {
            return;
        }
        self.touch_pages();
    }

    /// Commits every page by an atomic no-op write to one byte of it.
    fn touch_pages(&self) {
        let memory = &self.memory;
        let base = memory.map.as_mut_ptr();
        let step = base_page_size();
        for offset in (0..memory.size).step_by(step) {
            // SAFETY: `offset < size`, so the byte is inside the mapping,
            // which lives as long as `memory`; u8 is always valid and the
            // mapping's bytes are suitably aligned for AtomicU8. The atomic
            // `fetch_or(0)` stores the value it read, so it changes nothing,
            // even racing with a channel's copy of the same byte (which the
            // concurrency contract already leaves to the initiator).
            let byte = unsafe { AtomicU8::from_ptr(base.add(offset)) };
            byte.fetch_or(0, Ordering::Relaxed);
        }
    }
}

impl Bdev for RamBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            volatile_cache: false,
            unmap: true,
            unmap_reads_zeroes: true,
            write_zeroes: true,
            max_transfer_blocks: 0,
            max_unmap_blocks: 0,
            optimal_boundary_blocks: 0,
        }
    }

    fn open_channel(&self, queue_depth: usize) -> Result<Box<dyn BdevChannel>, Error> {
        let depth = queue_depth.max(1);
        Ok(Box::new(RamChannel {
            memory: Arc::clone(&self.memory),
            geometry: self.geometry,
            depth,
            queued: Vec::with_capacity(depth),
        }))
    }
}

/// A request accepted by `submit`: `result` is `Err` if it failed its checks
/// (it is then completed without touching memory).
#[derive(Debug)]
struct Queued {
    request: IoRequest,
    result: Result<(), IoError>,
}

/// A channel of the ram bdev: `submit` checks and queues, `poll` executes the
/// batch in order and completes it.
///
/// Executing in `poll` lets the channel see the next request while it copies
/// the current one: it prefetches the next request's device range, so the
/// cache and TLB misses of random access overlap with the copy in progress
/// instead of stalling it.
#[derive(Debug)]
struct RamChannel {
    memory: Arc<RamMemory>,
    geometry: Geometry,
    depth: usize,
    /// Requests not yet executed and completed; capacity `depth`, never
    /// exceeded.
    queued: Vec<Queued>,
}

/// Bytes of a request's device range prefetched ahead of its copy: enough
/// to start the page walk and the first cache-line fills; the hardware
/// prefetcher streams the rest once the copy runs. Measured on the RAM-bdev
/// randread bench: 512 bytes cut the copy of a random 4 KiB from ~830 ns to
/// ~600 ns, while prefetching all 4 KiB was no better than none.
const PREFETCH_BYTES: usize = 512;

/// How many requests ahead of the copy in progress the prefetch runs.
const PREFETCH_DISTANCE: usize = 2;

/// Which way a copy goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Bdev memory to the iovecs.
    Read,
    /// Iovecs to bdev memory.
    Write,
}

impl RamChannel {
    /// Hints the CPU to fetch the first bytes of a read's device range.
    #[inline]
    fn prefetch(&self, request: &IoRequest) {
        #[cfg(target_arch = "x86_64")]
        if request.op == IoOp::Read {
            let shift = self.geometry.block_shift();
            let offset = (request.lba << shift) as usize;
            let len = ((u64::from(request.blocks) << shift) as usize).min(PREFETCH_BYTES);
            let base = self.memory.map.as_ptr();
            for line in (0..len).step_by(64) {
                // SAFETY: `prefetch` is only called for requests that passed
                // `check_request`, so `offset + line` lies inside the mapping;
                // a prefetch is a hint that never faults or changes memory.
                unsafe {
                    std::arch::x86_64::_mm_prefetch(
                        base.add(offset + line).cast::<i8>(),
                        std::arch::x86_64::_MM_HINT_T0,
                    )
                };
            }
        }
    }

    /// Executes a request that passed `check_request`.
    fn execute(&self, request: &IoRequest) {
        let shift = self.geometry.block_shift();
        // Both fit in usize: the range is on the device, whose size does.
        let offset = (request.lba << shift) as usize;
        let len = (u64::from(request.blocks) << shift) as usize;
        match request.op {
            IoOp::Read => self.copy(Direction::Read, offset, len, &request.sgl),
            IoOp::Write => self.copy(Direction::Write, offset, len, &request.sgl),
            // RAM has no volatile cache: a completed write is as durable as it
            // will ever be.
            IoOp::Flush => {}
            IoOp::Unmap | IoOp::WriteZeroes => self.memory.zero(offset, len),
        }
    }

    /// Copies `len` bytes between the device at `offset` and the front of
    /// `sgl`, walking the contiguous device range and the iovecs together.
    /// The caller checked that the range is on the device and that `sgl` holds
    /// at least `len` bytes.
    fn copy(&self, direction: Direction, offset: usize, len: usize, sgl: &SgList) {
        let base = self.memory.map.as_mut_ptr();
        let mut device_pos = offset;
        let mut remaining = len;
        for iov in sgl.iovs() {
            if remaining == 0 {
                break;
            }
            let n = iov.len.min(remaining);
            if n == 0 {
                continue;
            }
            // SAFETY: `device_pos + n <= offset + len <= size`, so the device
            // side lies inside the mapping this channel keeps alive through its
            // Arc. The iovec side is `n <= iov.len` bytes at `iov.base`, which
            // the SgList contract makes valid for reads and writes and
            // unaliased until this request completes (for a write, others may
            // only read it, and we only read it). The two never overlap: the
            // mapping is private to the bdev and never handed out. Another
            // channel may copy to or from the same device bytes at the same
            // time only if the initiator issued overlapping I/O concurrently;
            // the module's concurrency contract leaves those bytes unspecified
            // then (plain bytes with no invariant, no Rust reference to them).
            unsafe {
                let device = base.add(device_pos);
                match direction {
                    Direction::Read => std::ptr::copy_nonoverlapping(device, iov.base, n),
                    Direction::Write => std::ptr::copy_nonoverlapping(iov.base, device, n),
                }
            }
            device_pos += n;
            remaining -= n;
        }
        debug_assert_eq!(remaining, 0, "check_request guarantees the buffer");
    }
}

impl BdevChannel for RamChannel {
    fn submit(&mut self, request: IoRequest) -> Result<(), IoRequest> {
        if self.queued.len() == self.depth {
            return Err(request);
        }
        let result = check_request(&self.geometry, &request);
        if result.is_ok() && self.queued.len() < PREFETCH_DISTANCE {
            self.prefetch(&request);
        }
        self.queued.push(Queued { request, result });
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
        let n = self.queued.len();
        for i in 0..n {
            if let Some(ahead) = self.queued.get(i + PREFETCH_DISTANCE) {
                if ahead.result.is_ok() {
                    self.prefetch(&ahead.request);
                }
            }
            let queued = &self.queued[i];
            if queued.result.is_ok() {
                self.execute(&queued.request);
            }
            done(IoCompletion {
                tag: queued.request.tag,
                result: queued.result,
            });
        }
        self.queued.clear();
        n
    }

    fn in_flight(&self) -> usize {
        self.queued.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IoError, IoVec};

    /// Submits one request and polls its completion.
    fn run(ch: &mut dyn BdevChannel, req: IoRequest) -> Result<(), IoError> {
        ch.submit(req).expect("channel has room");
        let mut got = None;
        assert_eq!(ch.poll(&mut |c| got = Some(c)), 1);
        let c = got.unwrap();
        assert_eq!(c.tag, req.tag);
        c.result
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    /// Splits `buf` into iovecs of the given lengths (the last takes the rest).
    fn split(buf: &mut [u8], lens: &[usize]) -> Vec<IoVec> {
        let mut iovs = Vec::new();
        let mut rest = buf;
        for &len in lens {
            let (head, tail) = rest.split_at_mut(len);
            iovs.push(IoVec::from_slice(head));
            rest = tail;
        }
        iovs.push(IoVec::from_slice(rest));
        iovs
    }

    fn read_all(ch: &mut dyn BdevChannel, bs: usize, lba: u64, blocks: u32) -> Vec<u8> {
        let mut buf = vec![0xEEu8; bs * blocks as usize];
        let iov = [IoVec::from_slice(&mut buf)];
        // SAFETY: `iov` and `buf` outlive the request, completed inside `run`.
        let sgl = unsafe { SgList::from_slice(&iov) };
        run(ch, IoRequest::new(IoOp::Read, lba, blocks, sgl, 99)).unwrap();
        buf
    }

    fn write_all(ch: &mut dyn BdevChannel, lba: u64, data: &mut [u8], bs: usize) {
        let blocks = (data.len() / bs) as u32;
        let iov = [IoVec::from_slice(data)];
        // SAFETY: `iov` and `data` outlive the request, completed inside `run`.
        let sgl = unsafe { SgList::from_slice(&iov) };
        run(ch, IoRequest::new(IoOp::Write, lba, blocks, sgl, 98)).unwrap();
    }

    #[test]
    fn geometry_capabilities_and_zero_start() {
        let bdev = RamBdev::new("r0", 512, 100).unwrap();
        assert_eq!(bdev.name(), "r0");
        assert_eq!(
            bdev.geometry(),
            Geometry {
                block_size: 512,
                num_blocks: 100
            }
        );
        let caps = bdev.capabilities();
        assert!(!caps.volatile_cache && caps.unmap && caps.unmap_reads_zeroes && caps.write_zeroes);
        // Smaller than a huge page: base pages.
        assert_eq!(bdev.backing(), Backing::Normal);
        assert_eq!(bdev.mapped_bytes(), 51_200);
        let mut ch = bdev.open_channel(4).unwrap();
        assert_eq!(read_all(ch.as_mut(), 512, 0, 100), vec![0u8; 51_200]);
    }

    #[test]
    fn backing_policy() {
        let bdev = RamBdev::with_huge_pages("r", 4096, 1000, HugePages::Off).unwrap();
        assert_eq!(bdev.backing(), Backing::Normal);
        assert_eq!(bdev.mapped_bytes(), 1000 * 4096);
        // 3 MiB + 1 block with huge pages when the machine has them: the
        // mapping is rounded up to whole huge pages.
        let bdev = RamBdev::new("r", 4096, 769).unwrap();
        match bdev.backing() {
            Backing::HugeTlb | Backing::TransparentHuge => {
                assert_eq!(bdev.mapped_bytes(), 4 << 20)
            }
            Backing::Normal => assert_eq!(bdev.mapped_bytes(), 769 * 4096),
        }
    }

    #[test]
    fn rejects_bad_geometry_and_reports_allocation_failure() {
        assert!(matches!(
            RamBdev::new("r", 1000, 8),
            Err(Error::InvalidParameter(_))
        ));
        assert!(matches!(
            RamBdev::new("r", 512, 0),
            Err(Error::InvalidParameter(_))
        ));
        assert!(matches!(
            RamBdev::new("r", 4096, u64::MAX / 1024),
            Err(Error::InvalidParameter(_))
        ));
        // 4 EiB: more than any user address space, whatever the overcommit
        // policy.
        for policy in [HugePages::Auto, HugePages::Off] {
            let err = RamBdev::with_huge_pages("huge", 4096, 1 << 50, policy).unwrap_err();
            match &err {
                Error::Allocation { name, bytes, .. } => {
                    assert_eq!(name, "huge");
                    assert_eq!(*bytes, 1 << 62);
                }
                other => panic!("expected an allocation error, got {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.starts_with("cannot allocate 4611686018427387904 bytes for bdev huge: "));
        }
    }

    #[test]
    fn prefault_keeps_contents() {
        let bs = 4096usize;
        let bdev = RamBdev::new("r", bs as u32, 1024).unwrap();
        let mut ch = bdev.open_channel(1).unwrap();
        let mut data = pattern(8 * bs, 4);
        let written = data.clone();
        write_all(ch.as_mut(), 100, &mut data, bs);
        let mut expected = vec![0u8; 1024 * bs];
        expected[100 * bs..108 * bs].copy_from_slice(&written);
        bdev.prefault();
        assert!(read_all(ch.as_mut(), bs, 0, 1024) == expected);
        // The fallback for kernels without MADV_POPULATE_WRITE.
        bdev.touch_pages();
        assert!(read_all(ch.as_mut(), bs, 0, 1024) == expected);
    }

    #[test]
    fn scattered_round_trip() {
        let bs = 512;
        let bdev = RamBdev::new("r", bs as u32, 64).unwrap();
        let mut ch = bdev.open_channel(8).unwrap();
        // 5 blocks written through odd-length iovecs, including an empty one.
        let mut data = pattern(5 * bs, 7);
        let expected = data.clone();
        let iovs = split(&mut data, &[1, 0, 511, 3, 1000, 7]);
        // SAFETY: `iovs` and `data` outlive the request, completed in `run`.
        let sgl = unsafe { SgList::from_slice(&iovs) };
        run(ch.as_mut(), IoRequest::new(IoOp::Write, 10, 5, sgl, 1)).unwrap();

        // Read back through a different split, with a longer buffer than needed.
        let mut back = vec![0xAAu8; 5 * bs + 100];
        let iovs = split(&mut back, &[700, 1, 1, 1300, 3]);
        // SAFETY: as above.
        let sgl = unsafe { SgList::from_slice(&iovs) };
        run(ch.as_mut(), IoRequest::new(IoOp::Read, 10, 5, sgl, 2)).unwrap();
        assert_eq!(&back[..5 * bs], &expected[..]);
        assert_eq!(&back[5 * bs..], &[0xAAu8; 100][..], "tail untouched");

        // Neighbours untouched.
        assert_eq!(read_all(ch.as_mut(), bs, 9, 1), vec![0u8; bs]);
        assert_eq!(read_all(ch.as_mut(), bs, 15, 1), vec![0u8; bs]);
        assert_eq!(read_all(ch.as_mut(), bs, 10, 5), expected);
    }

    #[test]
    fn unmap_and_write_zeroes_small_ranges() {
        let bs = 4096;
        let bdev = RamBdev::with_huge_pages("r", bs as u32, 32, HugePages::Off).unwrap();
        let mut ch = bdev.open_channel(4).unwrap();
        let mut data = pattern(32 * bs, 3);
        let all = data.clone();
        write_all(ch.as_mut(), 0, &mut data, bs);
        run(
            ch.as_mut(),
            IoRequest::new(IoOp::Unmap, 3, 2, SgList::EMPTY, 1),
        )
        .unwrap();
        run(
            ch.as_mut(),
            IoRequest::new(IoOp::WriteZeroes, 20, 1, SgList::EMPTY, 2),
        )
        .unwrap();
        let mut expected = all;
        expected[3 * bs..5 * bs].fill(0);
        expected[20 * bs..21 * bs].fill(0);
        assert_eq!(read_all(ch.as_mut(), bs, 0, 32), expected);
    }

    /// Zeroes `range` (in blocks) with `op` on a bdev full of a pattern and
    /// checks the exact result, for ranges large enough to be discarded with
    /// madvise and with unaligned edges.
    fn check_large_zeroing(policy: HugePages, op: IoOp) {
        let bs = 512usize;
        let blocks = 24 << 11; // 24 MiB
        let bdev = RamBdev::with_huge_pages("r", bs as u32, blocks, policy).unwrap();
        let mut ch = bdev.open_channel(4).unwrap();
        let mut data = pattern(blocks as usize * bs, 9);
        let mut expected = data.clone();
        write_all(ch.as_mut(), 0, &mut data, bs);
        // From 1 MiB + 3 blocks to 19 MiB - 5 blocks: whole huge pages inside,
        // unaligned edges outside.
        let lba = (1 << 11) + 3;
        let end = (19 << 11) - 5;
        run(
            ch.as_mut(),
            IoRequest::new(op, lba, (end - lba) as u32, SgList::EMPTY, 1),
        )
        .unwrap();
        expected[lba as usize * bs..end as usize * bs].fill(0);
        assert!(read_all(ch.as_mut(), bs, 0, blocks as u32) == expected);
        // Unmapped memory is usable again.
        let mut again = pattern(8 * bs, 5);
        let written = again.clone();
        write_all(ch.as_mut(), 4 << 11, &mut again, bs);
        assert_eq!(read_all(ch.as_mut(), bs, 4 << 11, 8), written);
    }

    #[test]
    fn large_unmap_reads_zeroes() {
        check_large_zeroing(HugePages::Auto, IoOp::Unmap);
        check_large_zeroing(HugePages::Off, IoOp::Unmap);
    }

    #[test]
    fn large_write_zeroes_reads_zeroes() {
        check_large_zeroing(HugePages::Auto, IoOp::WriteZeroes);
        check_large_zeroing(HugePages::Off, IoOp::WriteZeroes);
    }

    #[test]
    fn whole_device_unmap() {
        let bs = 4096usize;
        let blocks = 1024u64; // 4 MiB
        let bdev = RamBdev::new("r", bs as u32, blocks).unwrap();
        let mut ch = bdev.open_channel(1).unwrap();
        let mut data = pattern(blocks as usize * bs, 1);
        write_all(ch.as_mut(), 0, &mut data, bs);
        run(
            ch.as_mut(),
            IoRequest::new(IoOp::Unmap, 0, blocks as u32, SgList::EMPTY, 1),
        )
        .unwrap();
        assert!(read_all(ch.as_mut(), bs, 0, blocks as u32) == vec![0u8; blocks as usize * bs]);
    }

    #[test]
    fn range_and_buffer_errors() {
        let bs = 512usize;
        let bdev = RamBdev::new("r", bs as u32, 16).unwrap();
        let mut ch = bdev.open_channel(8).unwrap();
        let mut buf = pattern(2 * bs, 1);
        let iov = [IoVec::from_slice(&mut buf)];
        // SAFETY: `iov` and `buf` outlive the requests, completed below.
        let sgl = unsafe { SgList::from_slice(&iov) };
        let cases = [
            (
                IoRequest::new(IoOp::Write, 15, 2, sgl, 1),
                Err(IoError::OutOfRange),
            ),
            (
                IoRequest::new(IoOp::Read, 16, 1, sgl, 2),
                Err(IoError::OutOfRange),
            ),
            (
                IoRequest::new(IoOp::Read, u64::MAX, 2, sgl, 3),
                Err(IoError::OutOfRange),
            ),
            (
                IoRequest::new(IoOp::Write, 0, 3, sgl, 4),
                Err(IoError::ShortBuffer),
            ),
            (
                IoRequest::new(IoOp::Read, 0, 1, SgList::EMPTY, 5),
                Err(IoError::ShortBuffer),
            ),
            (
                IoRequest::new(IoOp::Unmap, 10, 7, SgList::EMPTY, 6),
                Err(IoError::OutOfRange),
            ),
            (
                IoRequest::new(IoOp::WriteZeroes, 17, 0, SgList::EMPTY, 7),
                Err(IoError::OutOfRange),
            ),
            (IoRequest::new(IoOp::Flush, 0, 0, SgList::EMPTY, 8), Ok(())),
        ];
        for (req, _) in &cases {
            ch.submit(*req).unwrap();
        }
        let mut got = Vec::new();
        assert_eq!(ch.poll(&mut |c| got.push((c.tag, c.result))), cases.len());
        let expected: Vec<_> = cases.iter().map(|(r, res)| (r.tag, *res)).collect();
        assert_eq!(got, expected);
        // Nothing was written by the failed requests.
        assert_eq!(read_all(ch.as_mut(), bs, 0, 16), vec![0u8; 16 * bs]);
    }

    #[test]
    fn channel_full_returns_request() {
        let bdev = RamBdev::new("r", 512, 16).unwrap();
        let mut ch = bdev.open_channel(2).unwrap();
        let flush = |tag| IoRequest::new(IoOp::Flush, 0, 0, SgList::EMPTY, tag);
        ch.submit(flush(1)).unwrap();
        ch.submit(flush(2)).unwrap();
        let back = ch.submit(flush(3)).unwrap_err();
        assert_eq!(back.tag, 3);
        assert_eq!(ch.in_flight(), 2);
        let mut tags = Vec::new();
        assert_eq!(ch.poll(&mut |c| tags.push(c.tag)), 2);
        assert_eq!(tags, [1, 2]);
        assert_eq!(ch.in_flight(), 0);
        ch.submit(back).unwrap();
        assert_eq!(ch.poll(&mut |c| tags.push(c.tag)), 1);
        assert_eq!(tags, [1, 2, 3]);
    }

    #[test]
    fn two_threads_disjoint_ranges() {
        let bs = 512usize;
        let bdev: crate::BdevRef = Arc::new(RamBdev::new("r", bs as u32, 256).unwrap());
        let workers: Vec<_> = (0..2u64)
            .map(|t| {
                let bdev = Arc::clone(&bdev);
                std::thread::spawn(move || {
                    let mut ch = bdev.open_channel(4).unwrap();
                    // Each thread owns the blocks with lba % 2 == t.
                    for round in 0..50u8 {
                        for lba in (t..256).step_by(2) {
                            let mut data = pattern(bs, round ^ lba as u8);
                            write_all(ch.as_mut(), lba, &mut data, bs);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let mut ch = bdev.open_channel(1).unwrap();
        for lba in 0..256u64 {
            assert_eq!(
                read_all(ch.as_mut(), bs, lba, 1),
                pattern(bs, 49 ^ lba as u8),
                "block {lba}"
            );
        }
    }
}
