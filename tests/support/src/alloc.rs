//! The counting global allocator of the zero-allocation tests.
//!
//! A test binary installs it with one line:
//! ```
//! #[global_allocator]
//! static ALLOC: test_support::alloc::CountingAlloc = test_support::alloc::CountingAlloc;
//! # fn main() {
//! # let before = test_support::alloc::thread_allocations();
//! # std::hint::black_box(vec![0u8; 8]);
//! # assert_eq!(test_support::alloc::thread_allocations() - before, 1);
//! # }
//! ```
//! It hands every call to the system allocator unchanged and counts
//! allocations and reallocations (frees are not counted) two ways at once:
//! - **per thread**: [`thread_allocations`] is what the calling thread has
//!   allocated so far, leaving out what it did inside [`paused`] (a fake
//!   kernel inside the measured call, say). Other threads never disturb it,
//!   so a binary with this allocator may hold any other tests.
//! - **process-wide**: while a [`ProcessCount`] is [`counting`], every
//!   thread's allocations are counted. Whatever else runs meanwhile is
//!   counted too, other tests of the binary included, so a test measured
//!   this way lives in a binary whose tests all measure this way: taking the
//!   [`ProcessCount`] makes them run one at a time.
//!
//! [`traced`] also prints where each of the calling thread's allocations
//! happened, for a window that must not allocate.
//!
//! Counting never allocates: the per-thread state is const-initialised
//! thread-locals without destructors, the process-wide state atomics.
//!
//! [`counting`]: ProcessCount::counting

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::LocalKey;

/// The counting allocator (see the module docs); a unit struct to install
/// as the `#[global_allocator]`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

thread_local! {
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static THREAD_PAUSED: Cell<bool> = const { Cell::new(false) };
    static THREAD_TRACED: Cell<bool> = const { Cell::new(false) };
}

/// Set while a [`ProcessCount`] counts.
static PROCESS_COUNTING: AtomicBool = AtomicBool::new(false);
/// Allocations counted process-wide.
static PROCESS_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Held by the one [`ProcessCount`] that exists.
static PROCESS_OWNER: Mutex<()> = Mutex::new(());

/// Counts one allocation. `try_with`: a thread-local may be unreachable
/// while its thread exits; that allocation is not counted per thread.
fn count() {
    if PROCESS_COUNTING.load(Ordering::Relaxed) {
        PROCESS_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
    let _ = THREAD_PAUSED.try_with(|paused| {
        if !paused.get() {
            let _ = THREAD_ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
            if THREAD_TRACED.try_with(Cell::get).unwrap_or(false) {
                paused.set(true);
                eprintln!(
                    "ALLOCATION:\n{}",
                    std::backtrace::Backtrace::force_capture()
                );
                paused.set(false);
            }
        }
    });
}

// SAFETY: every call goes to the system allocator with the caller's
// arguments unchanged, so its guarantees are the system allocator's;
// `count` neither allocates nor panics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract for `alloc` is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations (and reallocations) the calling thread made so far, except
/// those inside [`paused`]. Zero in a binary without [`CountingAlloc`].
pub fn thread_allocations() -> u64 {
    THREAD_ALLOCATIONS.with(Cell::get)
}

/// Runs `f`, printing to stderr a backtrace of each allocation the calling
/// thread makes in it (not those inside [`paused`]): a measured window run
/// this way says where it allocated when its test fails, and costs nothing
/// while it does not allocate. The printing itself is not counted.
pub fn traced<T>(f: impl FnOnce() -> T) -> T {
    with_flag(&THREAD_TRACED, f)
}

/// [`traced`] when `on`, else `f` as it is: for a loop whose warm-up
/// allocates on purpose and whose measured window must not.
pub fn traced_if<T>(on: bool, f: impl FnOnce() -> T) -> T {
    if on {
        traced(f)
    } else {
        f()
    }
}

/// Runs `f` without counting the calling thread's allocations (other
/// threads and the process-wide count are unaffected).
pub fn paused<T>(f: impl FnOnce() -> T) -> T {
    with_flag(&THREAD_PAUSED, f)
}

/// Runs `f` with the thread's `flag` set, then puts its previous value
/// back, also when `f` panics.
fn with_flag<T>(flag: &'static LocalKey<Cell<bool>>, f: impl FnOnce() -> T) -> T {
    struct Restore(&'static LocalKey<Cell<bool>>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            self.0.with(|v| v.set(self.1));
        }
    }
    let _restore = Restore(flag, flag.with(|v| v.replace(true)));
    f()
}

/// The process-wide count. One exists at a time: [`ProcessCount::take`]
/// waits until the previous one is dropped.
#[derive(Debug)]
pub struct ProcessCount {
    _only_one: MutexGuard<'static, ()>,
}

impl ProcessCount {
    /// Takes the process-wide count, at zero and not counting. (A test that
    /// panicked while holding it leaves it usable.)
    pub fn take() -> Self {
        let only_one = PROCESS_OWNER.lock().unwrap_or_else(|e| e.into_inner());
        PROCESS_COUNTING.store(false, Ordering::SeqCst);
        PROCESS_ALLOCATIONS.store(0, Ordering::SeqCst);
        Self {
            _only_one: only_one,
        }
    }

    /// Runs `f`, counting the allocations of every thread meanwhile.
    pub fn counting<T>(&self, f: impl FnOnce() -> T) -> T {
        /// Puts the previous state back, also when `f` panics.
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                PROCESS_COUNTING.store(self.0, Ordering::SeqCst);
            }
        }
        let _restore = Restore(PROCESS_COUNTING.swap(true, Ordering::SeqCst));
        f()
    }

    /// Allocations counted so far.
    pub fn allocations(&self) -> u64 {
        PROCESS_ALLOCATIONS.load(Ordering::SeqCst)
    }

    /// Sets the count back to zero; returns what it was.
    pub fn reset(&self) -> u64 {
        PROCESS_ALLOCATIONS.swap(0, Ordering::SeqCst)
    }
}

impl Drop for ProcessCount {
    fn drop(&mut self) {
        PROCESS_COUNTING.store(false, Ordering::SeqCst);
    }
}
