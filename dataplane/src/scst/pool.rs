//! [`BufferPool`]: the page-aligned data buffers an scst_user device hands to
//! the kernel.
//!
//! scst_user moves data through buffers of the handler's own memory: the
//! handler answers ALLOC_MEM (writes) and EXEC with `pbuf == 0` (reads) with
//! the address of a buffer, the kernel pins its pages, and with memory reuse
//! it keeps the buffer cached ("SGV cache") and hands it back as `pbuf` of
//! later commands until it evicts it with ON_CACHED_MEM_FREE. Non-cached
//! buffers come back with ON_FREE_CMD. So the pool must
//! - give page-aligned buffers (the kernel refuses an unaligned `pbuf` for a
//!   cached buffer) of the power-of-two sizes the SGV cache works in;
//! - know every buffer by its address, because the kernel names buffers
//!   only by `pbuf`, and refuse an address it did not hand out (a bad `pbuf`
//!   from the kernel must never corrupt the pool);
//! - keep working with many buffers outstanding for a long time (cached
//!   buffers stay pinned until the kernel evicts them);
//! - never allocate per command, and have a hard cap: when it is exhausted
//!   [`BufferPool::alloc`] returns `None` and the device answers BUSY.
//!
//! # Layout: a buddy allocator over one arena
//! One anonymous mapping of [`PoolConfig::max_bytes`] (the hard cap, rounded
//! down to a multiple of the largest buffer), `madvise(MADV_DONTFORK)`ed as
//! the scst_user documentation asks (a child of a `fork` must not get
//! copy-on-write pages the kernel has pinned) and `MADV_NOHUGEPAGE` (it is
//! touched lazily, a buffer at a time: a first touch must not zero a whole
//! huge page inside one command). It is split like a buddy
//! allocator: the arena is a row of blocks of the largest class; a request
//! takes the smallest free block of its class or larger, splitting larger
//! ones in halves; a freed block merges with its buddy when that is free
//! too.
//!
//! Metadata is fixed at construction: one state byte and one stack position
//! per 4 KiB page, and per class a stack of free block numbers whose capacity
//! is the most blocks of that class the arena can hold. `alloc` and `free`
//! are O(number of classes) and never allocate.
//!
//! Trade-off against per-class arenas (each class its own fixed share of the
//! mapping): the buddy arena lets any mix of sizes use the whole cap (a
//! workload of only 1 MiB transfers is not limited to the 1 MiB share), with
//! no per-class tuning. Its cost is fragmentation: small buffers that the
//! kernel keeps cached, scattered over the arena, can leave no free block of
//! a large class although enough bytes are free; those allocations then fail
//! (BUSY) until the kernel evicts cached buffers (its purge interval, memory
//! pressure, or FLUSH_CACHE). Freed blocks are reused last-in first-out,
//! which keeps a steady workload in the same, already split, blocks.
//! Size the cap at least at the kernel's per-device cache limit
//! (`scst_max_dev_cmd_mem`) plus the in-flight data, so the kernel evicts
//! before the pool runs dry.

use std::fmt;
use std::sync::Arc;

use bdev::IoVec;
use memmap2::{Advice, MmapOptions, MmapRaw};

/// Size of the smallest buffer and the alignment of every buffer.
pub const PAGE_SIZE: usize = 4096;

/// Errors of [`BufferPool::new`].
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A configuration value is out of range; the message names it.
    #[error("invalid buffer pool configuration: {0}")]
    InvalidConfig(String),
    /// The system page size is not 4 KiB.
    #[error("the buffer pool needs 4 KiB pages; this system uses {0}-byte pages")]
    PageSize(usize),
    /// The anonymous mapping could not be created or advised.
    #[error("cannot map the buffer pool ({bytes} bytes): {source}")]
    Map {
        /// Size of the mapping.
        bytes: usize,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Buffer pool settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// The hard cap: bytes of the mapping, rounded down to a multiple of
    /// `max_buffer_bytes` (at least one such buffer). Default 256 MiB.
    pub max_bytes: usize,
    /// The largest buffer: a power of two of at least 4 KiB, at least the
    /// largest transfer the device accepts. Default 8 MiB.
    pub max_buffer_bytes: usize,
    /// Fault every page in at construction (`MAP_POPULATE`), so the first
    /// use of a buffer does not take page faults. Default false (pages are
    /// faulted in on first use, by the executor or by the kernel pinning
    /// them).
    pub populate: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            max_buffer_bytes: 8 << 20,
            populate: false,
        }
    }
}

/// A buffer handed out by the pool: its address (the `pbuf` the kernel
/// sees) and its size (the size of its class, at least what was asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolBuf {
    /// Address of the first byte, page aligned.
    pub pbuf: u64,
    /// Usable bytes: the class size.
    pub len: usize,
}

/// Usage of one size class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassUsage {
    /// The class's buffer size in bytes.
    pub size: usize,
    /// Buffers of this class handed out and not freed.
    pub in_use: u64,
    /// Free blocks of exactly this class (larger free blocks can still be
    /// split for it).
    pub free_blocks: u64,
}

/// Pool counters (see [`BufferPool::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Size of the arena (the hard cap).
    pub capacity_bytes: u64,
    /// Bytes of the buffers handed out and not freed (class sizes).
    pub bytes_in_use: u64,
    /// Buffers handed out and not freed.
    pub buffers_in_use: u64,
    /// Successful `alloc` calls.
    pub allocs: u64,
    /// Successful `free` calls.
    pub frees: u64,
    /// `alloc` calls that returned `None` (exhausted, or larger than the
    /// largest buffer, or 0 bytes).
    pub failed_allocs: u64,
    /// `free` calls refused: an address that is not a buffer handed out
    /// (unknown, inside a buffer, or already free).
    pub bad_frees: u64,
    /// Per class, smallest first.
    pub classes: Vec<ClassUsage>,
}

/// `page_state` values: 0 = not the first page of a block.
const FREE_HEAD: u8 = 0x80;
const USED_HEAD: u8 = 0x40;
const ORDER_MASK: u8 = 0x1F;

/// Keeps a pool's arena mapped while it lives, even after the pool is
/// dropped ([`BufferPool::arena`]).
pub struct PoolMapping(Arc<MmapRaw>);

impl fmt::Debug for PoolMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PoolMapping({:p}+{})", self.0.as_ptr(), self.0.len())
    }
}

/// The buddy-allocated buffer arena. See the module docs.
///
/// Single-threaded (owned by the device's reactor thread); the memory it
/// hands out is accessed by others (the kernel, bdev channels) through raw
/// addresses, which is why the mapping is an [`MmapRaw`]. The mapping is
/// shared with [`PoolMapping`]s, so that memory registered with a bdev
/// channel outlives the pool as long as the channel needs it.
pub struct BufferPool {
    map: Arc<MmapRaw>,
    base: u64,
    len: usize,
    /// Largest order: blocks of `PAGE_SIZE << max_order` bytes.
    max_order: u8,
    /// Per page: FREE_HEAD/USED_HEAD | order for the first page of a block,
    /// 0 for the other pages.
    page_state: Box<[u8]>,
    /// Per page: position in the free stack of its order (free heads only).
    stack_pos: Box<[u32]>,
    /// Per order: first pages of the free blocks of that order.
    free_stacks: Box<[Vec<u32>]>,
    /// Per order: blocks handed out.
    in_use: Box<[u64]>,
    bytes_in_use: u64,
    buffers_in_use: u64,
    allocs: u64,
    frees: u64,
    failed_allocs: u64,
    bad_frees: u64,
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("base", &format_args!("{:#x}", self.base))
            .field("len", &self.len)
            .field("max_buffer_bytes", &self.max_buffer_bytes())
            .field("bytes_in_use", &self.bytes_in_use)
            .field("buffers_in_use", &self.buffers_in_use)
            .finish()
    }
}

impl BufferPool {
    /// Maps the arena and builds the free lists. The only allocations of
    /// the pool's life happen here.
    pub fn new(config: PoolConfig) -> Result<Self, PoolError> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page != PAGE_SIZE as libc::c_long {
            return Err(PoolError::PageSize(page.max(0) as usize));
        }
        let max_buffer = config.max_buffer_bytes;
        if max_buffer < PAGE_SIZE || !max_buffer.is_power_of_two() {
            return Err(PoolError::InvalidConfig(format!(
                "max_buffer_bytes {max_buffer} must be a power of two of at least {PAGE_SIZE}"
            )));
        }
        let max_order = (max_buffer / PAGE_SIZE).trailing_zeros();
        if max_order > u32::from(ORDER_MASK) {
            return Err(PoolError::InvalidConfig(format!(
                "max_buffer_bytes {max_buffer} is too large"
            )));
        }
        let len = config.max_bytes / max_buffer * max_buffer;
        if len == 0 {
            return Err(PoolError::InvalidConfig(format!(
                "max_bytes {} must hold at least one buffer of max_buffer_bytes {max_buffer}",
                config.max_bytes
            )));
        }
        let pages = len / PAGE_SIZE;
        if u32::try_from(pages).is_err() {
            return Err(PoolError::InvalidConfig(format!(
                "max_bytes {} is too large (at most 2^32 pages)",
                config.max_bytes
            )));
        }
        let map_err = |source| PoolError::Map { bytes: len, source };
        let mut options = MmapOptions::new();
        options.len(len);
        if config.populate {
            options.populate();
        }
        let map = MmapRaw::from(options.map_anon().map_err(map_err)?);
        map.advise(Advice::DontFork).map_err(map_err)?;
        // Base pages, not transparent huge pages: the arena is touched
        // lazily, a buffer at a time, and under THP `always` the first touch
        // of each 2 MiB would zero a whole huge page inside that command
        // (measured in the VM test's TCG guest under THP `always`: the first
        // 41 commands after a LUN appeared, p50 6.6-10.2 ms; with base pages
        // p50 14 us, max 1.9 ms).
        // Advisory: a kernel without THP refuses it, which changes nothing.
        let _ = map.advise(Advice::NoHugePage);
        let max_order = max_order as u8;
        let orders = usize::from(max_order) + 1;
        let free_stacks = (0..orders)
            .map(|order| Vec::with_capacity(pages >> order))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let mut pool = Self {
            base: map.as_ptr() as u64,
            map: Arc::new(map),
            len,
            max_order,
            page_state: vec![0; pages].into_boxed_slice(),
            stack_pos: vec![0; pages].into_boxed_slice(),
            free_stacks,
            in_use: vec![0; orders].into_boxed_slice(),
            bytes_in_use: 0,
            buffers_in_use: 0,
            allocs: 0,
            frees: 0,
            failed_allocs: 0,
            bad_frees: 0,
        };
        // Highest address pushed first, so the lowest one is taken first.
        let top = 1usize << max_order;
        for page in (0..pages).step_by(top).rev() {
            pool.push_free(page as u32, max_order);
        }
        Ok(pool)
    }

    /// Size of the arena: the hard cap.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// The whole arena as one region, and what keeps it mapped: every
    /// buffer the pool hands out lies in it. For a bdev channel to register
    /// (the pages are this process's anonymous memory and stay put).
    pub fn arena(&self) -> (IoVec, PoolMapping) {
        let region = IoVec {
            base: self.map.as_mut_ptr(),
            len: self.len,
        };
        (region, PoolMapping(Arc::clone(&self.map)))
    }

    /// The largest buffer.
    pub fn max_buffer_bytes(&self) -> usize {
        PAGE_SIZE << self.max_order
    }

    /// Bytes of the buffers handed out and not freed.
    pub fn bytes_in_use(&self) -> u64 {
        self.bytes_in_use
    }

    /// Buffers handed out and not freed.
    pub fn buffers_in_use(&self) -> u64 {
        self.buffers_in_use
    }

    /// `alloc` calls that returned `None`.
    pub fn failed_allocs(&self) -> u64 {
        self.failed_allocs
    }

    /// `free` calls refused.
    pub fn bad_frees(&self) -> u64 {
        self.bad_frees
    }

    /// The size of the class that serves `len` bytes, or `None` if `len`
    /// is 0 or larger than the largest buffer.
    pub fn class_size(&self, len: usize) -> Option<usize> {
        order_for(len, self.max_order).map(|order| PAGE_SIZE << order)
    }

    /// A page-aligned buffer of at least `len` bytes (the smallest class
    /// that holds it), or `None` when `len` is 0, larger than the largest
    /// buffer, or no block of that class or larger is free (the hard cap).
    pub fn alloc(&mut self, len: usize) -> Option<PoolBuf> {
        let Some(order) = order_for(len, self.max_order) else {
            self.failed_allocs += 1;
            return None;
        };
        let Some(mut have) =
            (order..=self.max_order).find(|&o| !self.free_stacks[usize::from(o)].is_empty())
        else {
            self.failed_allocs += 1;
            return None;
        };
        let page = self.pop_free(have);
        while have > order {
            have -= 1;
            self.push_free(page + (1 << have), have);
        }
        self.page_state[page as usize] = USED_HEAD | order;
        let size = PAGE_SIZE << order;
        self.in_use[usize::from(order)] += 1;
        self.bytes_in_use += size as u64;
        self.buffers_in_use += 1;
        self.allocs += 1;
        Some(PoolBuf {
            pbuf: self.base + (page as u64) * PAGE_SIZE as u64,
            len: size,
        })
    }

    /// Returns the buffer at `pbuf` to the pool. False (and nothing
    /// changes) if `pbuf` is not the address of a buffer handed out: outside
    /// the arena, inside a buffer, or already free.
    pub fn free(&mut self, pbuf: u64) -> bool {
        let Some((mut page, mut order)) = self.used_head(pbuf) else {
            self.bad_frees += 1;
            return false;
        };
        self.page_state[page] = 0;
        let size = PAGE_SIZE << order;
        self.in_use[usize::from(order)] -= 1;
        self.bytes_in_use -= size as u64;
        self.buffers_in_use -= 1;
        self.frees += 1;
        while order < self.max_order {
            let buddy = page ^ (1 << order);
            if self.page_state[buddy] != FREE_HEAD | order {
                break;
            }
            self.remove_free(buddy as u32, order);
            self.page_state[buddy] = 0;
            page = page.min(buddy);
            order += 1;
        }
        self.push_free(page as u32, order);
        true
    }

    /// The buffer handed out at `pbuf`, if `pbuf` is the address of one.
    pub fn get(&self, pbuf: u64) -> Option<PoolBuf> {
        self.used_head(pbuf).map(|(_, order)| PoolBuf {
            pbuf,
            len: PAGE_SIZE << order,
        })
    }

    /// An iovec for the first `len` bytes of the buffer handed out at
    /// `pbuf`, or `None` if `pbuf` is not a buffer handed out or `len` is
    /// larger than it. The pointer is derived from the mapping.
    pub fn iovec(&self, pbuf: u64, len: usize) -> Option<IoVec> {
        let buf = self.get(pbuf)?;
        if len > buf.len {
            return None;
        }
        let offset = (pbuf - self.base) as usize;
        Some(IoVec {
            base: self.map.as_mut_ptr().wrapping_add(offset),
            len,
        })
    }

    /// All counters and per-class usage (allocates the class list; not for
    /// the hot path).
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            capacity_bytes: self.len as u64,
            bytes_in_use: self.bytes_in_use,
            buffers_in_use: self.buffers_in_use,
            allocs: self.allocs,
            frees: self.frees,
            failed_allocs: self.failed_allocs,
            bad_frees: self.bad_frees,
            classes: (0..=self.max_order)
                .map(|order| ClassUsage {
                    size: PAGE_SIZE << order,
                    in_use: self.in_use[usize::from(order)],
                    free_blocks: self.free_stacks[usize::from(order)].len() as u64,
                })
                .collect(),
        }
    }

    /// (page, order) of the buffer handed out at `pbuf`.
    fn used_head(&self, pbuf: u64) -> Option<(usize, u8)> {
        let offset = pbuf.checked_sub(self.base)?;
        if offset >= self.len as u64 || offset % PAGE_SIZE as u64 != 0 {
            return None;
        }
        let page = (offset / PAGE_SIZE as u64) as usize;
        let state = self.page_state[page];
        (state & USED_HEAD != 0).then_some((page, state & ORDER_MASK))
    }

    fn push_free(&mut self, page: u32, order: u8) {
        let stack = &mut self.free_stacks[usize::from(order)];
        debug_assert!(stack.len() < stack.capacity(), "free stack overflow");
        self.stack_pos[page as usize] = stack.len() as u32;
        stack.push(page);
        self.page_state[page as usize] = FREE_HEAD | order;
    }

    fn pop_free(&mut self, order: u8) -> u32 {
        let page = self.free_stacks[usize::from(order)]
            .pop()
            .expect("caller checked the stack is not empty");
        self.page_state[page as usize] = 0;
        page
    }

    fn remove_free(&mut self, page: u32, order: u8) {
        let stack = &mut self.free_stacks[usize::from(order)];
        let pos = self.stack_pos[page as usize] as usize;
        debug_assert_eq!(stack[pos], page);
        let last = stack.pop().expect("the block is on this stack");
        if last != page {
            stack[pos] = last;
            self.stack_pos[last as usize] = pos as u32;
        }
    }
}

/// Order of the class serving `len` bytes.
fn order_for(len: usize, max_order: u8) -> Option<u8> {
    if len == 0 {
        return None;
    }
    let pages = len.div_ceil(PAGE_SIZE);
    let order = pages.checked_next_power_of_two()?.trailing_zeros();
    (order <= u32::from(max_order)).then_some(order as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_bytes: usize, max_buffer_bytes: usize) -> BufferPool {
        BufferPool::new(PoolConfig {
            max_bytes,
            max_buffer_bytes,
            populate: false,
        })
        .unwrap()
    }

    #[test]
    fn buffers_are_page_aligned_and_sized_by_class() {
        let mut p = pool(1 << 20, 256 << 10);
        for (ask, class) in [
            (1, 4096),
            (4096, 4096),
            (4097, 8192),
            (12288, 16384),
            (65536, 65536),
            (65537, 131072),
            (256 << 10, 256 << 10),
        ] {
            let b = p.alloc(ask).unwrap();
            assert_eq!(b.len, class, "ask {ask}");
            assert_eq!(b.pbuf % PAGE_SIZE as u64, 0);
            assert_eq!(p.get(b.pbuf), Some(b));
            assert_eq!(p.class_size(ask), Some(class));
            assert!(p.free(b.pbuf));
        }
        assert_eq!(p.alloc(0), None);
        assert_eq!(p.alloc((256 << 10) + 1), None);
        assert_eq!(p.class_size(0), None);
        assert_eq!(p.failed_allocs(), 2);
        assert_eq!(p.bytes_in_use(), 0);
    }

    #[test]
    fn arena_is_rounded_to_the_largest_buffer_and_split_exactly() {
        let mut p = pool((1 << 20) + 5000, 256 << 10);
        assert_eq!(p.capacity(), 1 << 20);
        // Exactly 256 one-page buffers fit, at 256 distinct addresses that
        // cover the arena.
        let mut addrs: Vec<u64> = (0..256).map(|_| p.alloc(4096).unwrap().pbuf).collect();
        assert_eq!(p.alloc(1), None);
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), 256);
        assert_eq!(addrs[255] - addrs[0], 255 * 4096);
        assert_eq!(p.bytes_in_use(), 1 << 20);
        let stats = p.stats();
        assert_eq!(stats.classes[0].in_use, 256);
        assert_eq!(stats.buffers_in_use, 256);
        for a in &addrs {
            assert!(p.free(*a));
        }
        // Everything merged back: four largest buffers fit again.
        let big: Vec<_> = (0..4).map(|_| p.alloc(256 << 10).unwrap()).collect();
        assert_eq!(p.alloc(4096), None);
        assert_eq!(p.stats().classes[6].in_use, 4);
        for b in big {
            assert!(p.free(b.pbuf));
        }
        let stats = p.stats();
        assert_eq!(stats.classes[6].free_blocks, 4);
        assert_eq!(stats.classes.iter().map(|c| c.in_use).sum::<u64>(), 0);
    }

    #[test]
    fn exhaustion_returns_none_and_recovers_after_free() {
        let mut p = pool(512 << 10, 256 << 10);
        let a = p.alloc(256 << 10).unwrap();
        let b = p.alloc(200 << 10).unwrap();
        assert_eq!(p.alloc(4096), None);
        assert_eq!(p.failed_allocs(), 1);
        assert!(p.free(a.pbuf));
        let c = p.alloc(64 << 10).unwrap();
        assert_eq!(c.pbuf, a.pbuf, "the freed block is reused");
        assert_eq!(p.bytes_in_use(), (256 + 64) << 10);
        assert!(p.free(b.pbuf));
        assert!(p.free(c.pbuf));
        assert_eq!(p.stats().classes[6].free_blocks, 2);
    }

    #[test]
    fn bad_and_double_frees_are_refused_without_damage() {
        let mut p = pool(1 << 20, 256 << 10);
        let a = p.alloc(8192).unwrap();
        let b = p.alloc(8192).unwrap();
        assert!(!p.free(0));
        assert!(!p.free(a.pbuf + 4096), "inside a buffer");
        assert!(!p.free(a.pbuf + 1), "unaligned");
        assert!(!p.free(a.pbuf + (64 << 20)), "outside the arena");
        assert!(!p.free(a.pbuf.wrapping_sub(4096)), "below the arena");
        assert_eq!(p.get(a.pbuf + 4096), None);
        assert!(p.free(a.pbuf));
        assert!(!p.free(a.pbuf), "double free");
        assert_eq!(p.get(a.pbuf), None);
        assert_eq!(p.bad_frees(), 6);
        // The pool still accounts exactly: b is the only buffer out.
        assert_eq!(p.buffers_in_use(), 1);
        assert_eq!(p.get(b.pbuf), Some(b));
        assert!(p.free(b.pbuf));
        let all: Vec<_> = (0..4).map(|_| p.alloc(256 << 10).unwrap()).collect();
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn reuse_is_last_in_first_out() {
        let mut p = pool(1 << 20, 256 << 10);
        let a = p.alloc(4096).unwrap();
        let b = p.alloc(4096).unwrap();
        assert_ne!(a.pbuf, b.pbuf);
        assert!(p.free(a.pbuf));
        assert_eq!(p.alloc(4096).unwrap().pbuf, a.pbuf);
    }

    #[test]
    fn iovec_points_into_the_buffer() {
        let mut p = pool(1 << 20, 256 << 10);
        let a = p.alloc(10_000).unwrap();
        let v = p.iovec(a.pbuf, 10_000).unwrap();
        assert_eq!(v.base as u64, a.pbuf);
        assert_eq!(v.len, 10_000);
        assert!(p.iovec(a.pbuf, a.len + 1).is_none());
        assert!(p.iovec(a.pbuf + 4096, 1).is_none());
        // SAFETY: the iovec names 10 000 bytes of a live, private mapping
        // that nothing else accesses in this test.
        let bytes = unsafe { std::slice::from_raw_parts_mut(v.base, v.len) };
        bytes.fill(0x5A);
        assert!(bytes.iter().all(|&x| x == 0x5A));
    }

    #[test]
    fn random_alloc_free_keeps_the_accounting_exact() {
        let mut p = pool(2 << 20, 512 << 10);
        let mut live: Vec<PoolBuf> = Vec::new();
        let mut rng = test_support::rng::seeded(0x2545_F491_4F6C_DD1D);
        for _ in 0..20_000 {
            // Two allocations for every free.
            if rng.u32(..3) != 0 || live.is_empty() {
                let len = rng.usize(1..=300 << 10);
                if let Some(b) = p.alloc(len) {
                    // No overlap with any live buffer.
                    for l in &live {
                        assert!(b.pbuf + b.len as u64 <= l.pbuf || l.pbuf + l.len as u64 <= b.pbuf);
                    }
                    assert_eq!(b.pbuf % PAGE_SIZE as u64, 0);
                    live.push(b);
                }
            } else {
                let i = rng.usize(..live.len());
                let b = live.swap_remove(i);
                assert!(p.free(b.pbuf));
            }
            let bytes: u64 = live.iter().map(|b| b.len as u64).sum();
            assert_eq!(p.bytes_in_use(), bytes);
        }
        for b in live.drain(..) {
            assert!(p.free(b.pbuf));
        }
        assert_eq!(p.stats().classes[7].free_blocks, 4);
    }

    #[test]
    fn invalid_configurations_are_refused() {
        let bad = |max_bytes, max_buffer_bytes| {
            BufferPool::new(PoolConfig {
                max_bytes,
                max_buffer_bytes,
                populate: false,
            })
            .unwrap_err()
            .to_string()
        };
        assert!(bad(1 << 20, 3 << 12).contains("power of two"));
        assert!(bad(1 << 20, 2048).contains("power of two"));
        assert!(bad(1 << 20, 2 << 20).contains("at least one buffer"));
    }
}
