//! Bounded lock-free single-producer/single-consumer ring.
//!
//! This is the channel between a frontend poller and a bdev channel poller
//! (and back). It is written by hand rather than taken from `rtrb` because the
//! data path needs *staged* pushes: a poller stages every request it produces
//! during one poll and publishes them with a single release store at the end
//! (`stage` + `publish`), and the consumer drains a batch with one release
//! store (`pop_batch`). The criterion benchmark in `benches/benches/spsc.rs`
//! compares it with `rtrb` and crossbeam's `ArrayQueue`.
//!
//! # Design
//! - Capacity is a power of two; indices are free-running `usize` counters and
//!   a slot is `index & mask`.
//! - `head` (next slot to read, written by the consumer) and `tail` (next slot
//!   to write, written by the producer) each sit on their own cache line.
//! - Each side keeps a cached copy of the other side's index and reloads it
//!   (acquire) only when the cache says "full" / "empty", so a run of
//!   operations touches no shared cache line except the slots themselves.
//! - The endpoint structs themselves are 128-byte aligned, so each side's
//!   local indices never share a cache line with the other side's, wherever
//!   the user puts the two ends.
//! - Slot indexing is unchecked (`index & mask` is always in bounds), through
//!   a copy of the slot array's address and mask in each endpoint.
//! - The slot array has 128 bytes of unused slots at both ends (as Rigtorp's
//!   SPSCQueue), so ring slots never share a cache line with neighbouring
//!   allocations.
//!
//! # Performance
//! `cargo bench -p benches --bench spsc` compares it with `rtrb` 0.3 and
//! crossbeam's `ArrayQueue` between two pinned threads (criterion, or
//! `SPSC_AB=<rounds>` for an interleaved min/median table). On the 2-vCPU
//! development VM: streaming `u64` and batched (32) streaming are as fast as
//! `rtrb` or faster, streaming 40-byte items is on par, and `ArrayQueue` is
//! 2-4x slower. One-item ping-pong round trips come out 5-10% slower than
//! `rtrb`'s at the median with equal minima; both rings do the same loads
//! and stores per operation (ours compiles to fewer instructions), and the
//! ring as first written showed the same gap, so it is not from the layout
//! changes. The data path publishes and drains in batches.
//!
//! # Invariants
//! - `shared.head <= consumer.head <= shared.tail <= producer.tail` (wrapping),
//!   and `producer.tail - shared.head <= capacity`.
//! - Slots in `[shared.head, shared.tail)` hold initialised values owned by the
//!   ring; every other slot is uninitialised.

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

/// Why a ring could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The requested capacity is zero or not a power of two.
    #[error("ring capacity {0} is not a power of two of at least 2")]
    BadCapacity(usize),
}

struct Shared<T> {
    /// Next index the consumer will read; published by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Next index the producer will write; published by the producer.
    tail: CachePadded<AtomicUsize>,
    /// `capacity - 1`.
    mask: usize,
    /// `pad` unused slots, the `capacity` ring slots, `pad` unused slots.
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// Unused slots at each end of `slots`: at least 128 bytes, so that no
    /// ring slot shares a cache line (or an adjacent-line prefetch pair)
    /// with whatever the allocator put next to the array.
    pad: usize,
}

impl<T> Shared<T> {
    /// The slot for free-running `index` (checked; for the cold drop path).
    fn slot(&self, index: usize) -> *mut MaybeUninit<T> {
        self.slots[self.pad + (index & self.mask)].get()
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both endpoints are gone and each published its index on drop, so the
        // live values are exactly those in [head, tail).
        let mut head = *self.head.get_mut();
        let tail = *self.tail.get_mut();
        while head != tail {
            // SAFETY: slots in [head, tail) are initialised (module invariant)
            // and nobody else can access them any more (we have `&mut self`).
            unsafe { (*self.slot(head)).assume_init_drop() };
            head = head.wrapping_add(1);
        }
    }
}

/// An endpoint's copy of the slot array's address and mask, for unchecked
/// slot access on the hot path.
///
/// Indexing `Shared::slots` costs a bounds check per operation (the compiler
/// cannot see that the length is `mask + 1`) and two loads through the `Arc`
/// that it cannot hoist out of a batch loop (a write into a slot, an
/// `UnsafeCell`, might as far as it knows change `Shared::mask`). Copies in
/// the endpoint, which is borrowed `&mut`, stay in registers.
struct SlotView<T> {
    /// The first ring slot, `&shared.slots[shared.pad]`; valid as long as the
    /// endpoint's `Arc<Shared>`.
    base: NonNull<UnsafeCell<MaybeUninit<T>>>,
    /// `shared.mask`.
    mask: usize,
}

impl<T> SlotView<T> {
    fn new(shared: &Shared<T>) -> Self {
        SlotView {
            // From the whole slice, so the pointer may reach every slot.
            base: NonNull::from(&shared.slots[shared.pad..]).cast(),
            mask: shared.mask,
        }
    }

    /// The slot for free-running `index`.
    #[inline(always)]
    fn slot(&self, index: usize) -> *mut MaybeUninit<T> {
        // SAFETY: `base` points to the first of `mask + 1` ring slots (followed
        // by `pad` more) of the boxed slice in `Shared`, which lives while the
        // endpoint holding this view holds its `Arc<Shared>`; `index & mask <=
        // mask` stays in bounds.
        UnsafeCell::raw_get(unsafe { self.base.as_ptr().add(index & self.mask) })
    }
}

/// Bytes of unused slots before and after the ring slots (two cache lines:
/// Intel's spatial prefetcher pulls lines in 128-byte pairs).
const PAD_BYTES: usize = 128;

/// Creates a ring of `capacity` slots (a power of two of at least 2).
pub fn channel<T>(capacity: usize) -> Result<(Producer<T>, Consumer<T>), RingError> {
    if capacity < 2 || !capacity.is_power_of_two() {
        return Err(RingError::BadCapacity(capacity));
    }
    let pad = match std::mem::size_of::<T>() {
        0 => 0,
        size => PAD_BYTES.div_ceil(size),
    };
    let slots = (0..capacity + 2 * pad)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect::<Vec<_>>()
        .into_boxed_slice();
    let shared = Arc::new(Shared {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        mask: capacity - 1,
        slots,
        pad,
    });
    let producer = Producer {
        slots: SlotView::new(&shared),
        shared: Arc::clone(&shared),
        tail: 0,
        published: 0,
        cached_head: 0,
    };
    let consumer = Consumer {
        slots: SlotView::new(&shared),
        shared,
        head: 0,
        cached_tail: 0,
    };
    Ok((producer, consumer))
}

/// The writing end of a ring. Not `Clone`: there is exactly one producer.
///
/// Aligned (and so padded) to 128 bytes, like the shared indices: the
/// producer rewrites its local indices on every operation, and the other end
/// of the ring, created in the same breath, is easily placed right next to
/// it. Sharing a cache line with it measured 3-8x slower.
#[repr(align(128))]
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    slots: SlotView<T>,
    /// Local tail: one past the last staged value.
    tail: usize,
    /// The tail value last stored to `shared.tail`.
    published: usize,
    /// Last observed `shared.head`.
    cached_head: usize,
}

// SAFETY: the producer only moves `T` values into the ring; moving the producer
// to another thread keeps exactly one thread on the producer side.
unsafe impl<T: Send> Send for Producer<T> {}

impl<T> Producer<T> {
    /// Ring capacity in slots.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.slots.mask + 1
    }

    #[inline]
    fn has_room(&mut self) -> bool {
        if self.tail.wrapping_sub(self.cached_head) < self.capacity() {
            return true;
        }
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        self.tail.wrapping_sub(self.cached_head) < self.capacity()
    }

    /// Writes `value` into the next slot without making it visible to the
    /// consumer; call [`publish`](Self::publish) once per batch. Returns the
    /// value back if the ring is full.
    #[inline]
    pub fn stage(&mut self, value: T) -> Result<(), T> {
        if !self.has_room() {
            return Err(value);
        }
        // SAFETY: `has_room` proved the slot at `tail` is outside
        // [shared.head, tail), so it is uninitialised and the consumer will not
        // read it until we publish a tail beyond it.
        unsafe { (*self.slots.slot(self.tail)).write(value) };
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    /// Makes every staged value visible to the consumer with one release store.
    #[inline]
    pub fn publish(&mut self) {
        if self.published != self.tail {
            self.shared.tail.store(self.tail, Ordering::Release);
            self.published = self.tail;
        }
    }

    /// Stages and publishes one value (together with anything staged before).
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), T> {
        self.stage(value)?;
        // `stage` just advanced the tail, so there is always something to
        // publish: skip `publish`'s emptiness test.
        self.shared.tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
        Ok(())
    }

    /// Number of values staged but not yet published.
    #[inline]
    pub fn staged(&self) -> usize {
        self.tail.wrapping_sub(self.published)
    }

    /// Free slots, refreshing the consumer's index.
    #[inline]
    pub fn free_slots(&mut self) -> usize {
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        self.capacity() - self.tail.wrapping_sub(self.cached_head)
    }

    /// True once the consumer has been dropped.
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Staged values belong to the ring; publish them so they are either
        // consumed or dropped with the ring, never leaked.
        self.publish();
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("tail", &self.tail)
            .field("published", &self.published)
            .finish()
    }
}

/// The reading end of a ring. Not `Clone`: there is exactly one consumer.
///
/// Aligned to 128 bytes for the same reason as [`Producer`].
#[repr(align(128))]
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    slots: SlotView<T>,
    /// Local head: next index to read. Published after each pop or batch.
    head: usize,
    /// Last observed `shared.tail`.
    cached_tail: usize,
}

// SAFETY: the consumer only moves `T` values out of the ring; moving the
// consumer to another thread keeps exactly one thread on the consumer side.
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T> Consumer<T> {
    /// Ring capacity in slots.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.slots.mask + 1
    }

    /// Number of values readable now, at most `want`, refreshing the
    /// producer's index only if the cached one cannot satisfy `want`.
    #[inline]
    fn available(&mut self, want: usize) -> usize {
        let cached = self.cached_tail.wrapping_sub(self.head);
        if cached >= want {
            return want;
        }
        self.cached_tail = self.shared.tail.load(Ordering::Acquire);
        self.cached_tail.wrapping_sub(self.head).min(want)
    }

    /// Takes the next value, publishing the new head at once.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.available(1) == 0 {
            return None;
        }
        // SAFETY: `available` showed head < shared.tail, so the slot holds an
        // initialised value the producer will not touch until we publish a
        // head beyond it; we move it out exactly once.
        let value = unsafe { (*self.slots.slot(self.head)).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        self.shared.head.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Takes up to `max` values, handing each to `f`, and publishes the new
    /// head once at the end. Returns how many values were taken.
    #[inline]
    pub fn pop_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let n = self.available(max);
        for _ in 0..n {
            // SAFETY: as in `pop`: the n slots from head are initialised and
            // owned by the consumer until the head is published.
            let value = unsafe { (*self.slots.slot(self.head)).assume_init_read() };
            // Advance before calling `f` so a panic in `f` cannot make the
            // ring drop this value a second time.
            self.head = self.head.wrapping_add(1);
            f(value);
        }
        if n != 0 {
            self.shared.head.store(self.head, Ordering::Release);
        }
        n
    }

    /// The next value without taking it.
    #[inline]
    pub fn peek(&mut self) -> Option<&T> {
        if self.available(1) == 0 {
            return None;
        }
        // SAFETY: the slot at head is initialised (see `pop`) and stays so
        // while `&mut self` is borrowed, because only we can advance the head.
        Some(unsafe { (*self.slots.slot(self.head)).assume_init_ref() })
    }

    /// Number of values readable now (refreshes the producer's index).
    #[inline]
    pub fn len(&mut self) -> usize {
        self.cached_tail = self.shared.tail.load(Ordering::Acquire);
        self.cached_tail.wrapping_sub(self.head)
    }

    /// True if nothing is readable now.
    #[inline]
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// True once the producer has been dropped.
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // Publish our head so the ring's own drop sees exactly the live values.
        self.shared.head.store(self.head, Ordering::Release);
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity())
            .field("head", &self.head)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_capacity() {
        assert_eq!(channel::<u8>(0).unwrap_err(), RingError::BadCapacity(0));
        assert_eq!(channel::<u8>(1).unwrap_err(), RingError::BadCapacity(1));
        assert_eq!(channel::<u8>(12).unwrap_err(), RingError::BadCapacity(12));
    }

    #[test]
    fn staged_values_are_invisible_until_published() {
        let (mut p, mut c) = channel::<u32>(4).unwrap();
        p.stage(1).unwrap();
        p.stage(2).unwrap();
        assert_eq!(p.staged(), 2);
        assert_eq!(c.pop(), None);
        p.publish();
        assert_eq!(p.staged(), 0);
        assert_eq!(c.pop(), Some(1));
        assert_eq!(c.pop(), Some(2));
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn full_ring_returns_the_value() {
        let (mut p, mut c) = channel::<u32>(2).unwrap();
        p.push(1).unwrap();
        p.push(2).unwrap();
        assert_eq!(p.push(3), Err(3));
        assert_eq!(c.pop(), Some(1));
        p.push(3).unwrap();
        let mut got = Vec::new();
        assert_eq!(c.pop_batch(8, |v| got.push(v)), 2);
        assert_eq!(got, [2, 3]);
    }

    #[test]
    fn drops_every_value_exactly_once() {
        use std::rc::Rc;
        let marker = Rc::new(());
        {
            let (mut p, mut c) = channel::<Rc<()>>(8).unwrap();
            for _ in 0..6 {
                p.stage(Rc::clone(&marker)).unwrap();
            }
            p.publish();
            drop(c.pop());
            p.stage(Rc::clone(&marker)).unwrap(); // staged, never published
            assert_eq!(Rc::strong_count(&marker), 7);
        }
        assert_eq!(Rc::strong_count(&marker), 1);
    }
}
