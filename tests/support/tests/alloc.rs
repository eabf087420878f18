//! The counting allocator counts what it should, both ways, and nothing
//! else: the guard against a counter that could never fail.

use std::hint::black_box;

use test_support::alloc::{paused, thread_allocations, CountingAlloc, ProcessCount};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn this_threads_allocations_are_counted_unless_paused() {
    let before = thread_allocations();
    let v = black_box(vec![1u8; 100]);
    let mut grown = black_box(Vec::<u8>::with_capacity(1));
    grown.extend_from_slice(&[0; 64]); // a reallocation
    let zeroed = black_box(vec![0u64; 1000]);
    // Three allocations (one zeroed) and a reallocation.
    assert_eq!(thread_allocations() - before, 4);
    let before = thread_allocations();
    let hidden = paused(|| black_box(vec![2u8; 100]));
    assert_eq!(thread_allocations(), before, "paused");
    drop((v, grown, zeroed, hidden));
    assert_eq!(thread_allocations(), before, "frees are not counted");
    // Another thread's allocations are its own.
    let other = std::thread::spawn(|| {
        let start = thread_allocations();
        black_box(vec![3u8; 10]);
        thread_allocations() - start
    })
    .join()
    .unwrap();
    assert_eq!(other, 1);
}

#[test]
fn every_threads_allocations_are_counted_while_counting() {
    let count = ProcessCount::take();
    assert_eq!(count.allocations(), 0);
    black_box(vec![1u8; 100]);
    // Not counting yet (other tests of this binary may allocate meanwhile,
    // but not while this one does not count).
    assert_eq!(count.allocations(), 0);
    count.counting(|| {
        black_box(vec![1u8; 100]);
        std::thread::scope(|s| {
            s.spawn(|| black_box(vec![2u8; 100]));
        });
    });
    // This thread's vector and the other thread's at least (the thread's
    // own start allocates too).
    assert!(count.allocations() >= 2, "{}", count.allocations());
    assert!(count.reset() >= 2);
    assert_eq!(count.allocations(), 0);
}
