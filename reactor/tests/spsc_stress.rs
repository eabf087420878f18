//! Two-thread stress tests of `reactor::spsc`.
//!
//! - `sequence_arrives_once_in_order`: tens of millions of sequence numbers
//!   (1/10 of that in debug builds) go through rings of capacity 2, 4, 64 and 1024.
//!   The producer mixes `push` with `stage` runs of random length followed by
//!   `publish`; the consumer mixes `pop`, `pop_batch` with a random `max`,
//!   `peek` and `len`. Every value must arrive exactly once and in order.
//! - `every_value_is_dropped_exactly_once`: many short runs in which the
//!   consumer stops early and both ends are dropped while values are still
//!   queued or staged; a per-value drop counter must read exactly 1 for every
//!   value created.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;

use reactor::spsc::{self, Consumer, Producer};
use test_support::rng::{seeded, Rng};

const CAPACITIES: [usize; 4] = [2, 4, 64, 1024];

/// Values sent through each ring in the ordering test: 33 million in all in
/// release builds, 1/10 of that in debug builds. Tiny rings get fewer: every
/// value through a 2-slot ring costs about one cross-core round trip.
fn values_for(capacity: usize) -> u64 {
    let release = match capacity {
        2 => 1_000_000,
        4 => 2_000_000,
        64 => 10_000_000,
        _ => 20_000_000,
    };
    if cfg!(debug_assertions) {
        release / 10
    } else {
        release
    }
}

/// Runs per capacity in the drop test.
const DROP_ROUNDS: u64 = if cfg!(debug_assertions) { 300 } else { 3_000 };

/// Waits a little after finding the ring full or empty (`idle` counts the
/// failures in a row): spins a few `pause`s (about 140 cycles each on recent
/// Intel cores) and yields every 32nd time, so that a descheduled peer gets a
/// core back soon on a busy machine.
fn back_off(rng: &mut Rng, idle: &mut u32) {
    *idle += 1;
    if *idle & 31 == 0 {
        thread::yield_now();
    } else {
        for _ in 0..rng.u64(..4) {
            spin_loop();
        }
    }
}

fn produce_sequence(mut p: Producer<u64>, total: u64, seed: u64) {
    let mut rng = seeded(seed);
    let capacity = p.capacity() as u64;
    let mut next = 0;
    let mut idle = 0;
    while next < total {
        if rng.u64(..3) == 0 {
            match p.push(next) {
                Ok(()) => {
                    next += 1;
                    idle = 0;
                }
                Err(back) => {
                    assert_eq!(back, next, "push returned another value");
                    back_off(&mut rng, &mut idle);
                }
            }
            continue;
        }
        // A staged run, longer than the ring now and then.
        let run = 1 + rng.u64(..2 * capacity + 1);
        let mut staged = 0;
        while staged < run && next < total {
            match p.stage(next) {
                Ok(()) => {
                    next += 1;
                    staged += 1;
                }
                Err(back) => {
                    assert_eq!(back, next, "stage returned another value");
                    break;
                }
            }
        }
        assert_eq!(p.staged() as u64, staged);
        let free = p.free_slots() as u64;
        assert!(free + staged <= capacity, "free {free} + staged {staged}");
        p.publish();
        assert_eq!(p.staged(), 0);
        if staged == 0 {
            back_off(&mut rng, &mut idle);
        } else {
            idle = 0;
        }
    }
}

fn consume_sequence(mut c: Consumer<u64>, total: u64, seed: u64) -> Consumer<u64> {
    let mut rng = seeded(seed);
    let capacity = c.capacity() as u64;
    let mut expect = 0;
    let mut idle = 0;
    while expect < total {
        let found_nothing = match rng.u64(..6) {
            0 | 1 => match c.pop() {
                Some(value) => {
                    assert_eq!(value, expect, "pop out of order");
                    expect += 1;
                    false
                }
                None => true,
            },
            2 | 3 => {
                let max = rng.u64(..2 * capacity + 2) as usize;
                let taken = c.pop_batch(max, |value| {
                    assert_eq!(value, expect, "pop_batch out of order");
                    expect += 1;
                });
                assert!(taken <= max, "took {taken} > max {max}");
                taken == 0
            }
            4 => match c.peek() {
                Some(&value) => {
                    assert_eq!(value, expect, "peek shows another value");
                    assert_eq!(c.pop(), Some(expect), "pop after peek");
                    expect += 1;
                    false
                }
                None => true,
            },
            _ => {
                let len = c.len() as u64;
                assert!(len <= capacity, "len {len} > capacity {capacity}");
                len == 0
            }
        };
        if found_nothing {
            back_off(&mut rng, &mut idle);
        } else {
            idle = 0;
        }
    }
    c
}

#[test]
fn sequence_arrives_once_in_order() {
    for (i, &capacity) in CAPACITIES.iter().enumerate() {
        let started = std::time::Instant::now();
        let seed = 0x5eed_0000 + i as u64;
        let total = values_for(capacity);
        let (p, c) = spsc::channel::<u64>(capacity).unwrap();
        let mut c = thread::scope(|s| {
            let producer = s.spawn(move || produce_sequence(p, total, seed));
            let consumer = s.spawn(move || consume_sequence(c, total, !seed));
            producer.join().expect("producer panicked");
            consumer.join().expect("consumer panicked")
        });
        // Nothing extra arrived, and the consumer sees the producer is gone.
        assert_eq!(c.pop(), None, "capacity {capacity}: value beyond the end");
        assert!(c.is_abandoned());
        println!(
            "capacity {capacity}: {total} values in {:?}",
            started.elapsed()
        );
    }
}

/// A value that counts its drops in a shared per-value table.
struct Counted {
    seq: usize,
    drops: Arc<[AtomicU32]>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops[self.seq].fetch_add(1, Ordering::Relaxed);
    }
}

/// One drop-test run: the producer creates `total` values and pushes them
/// until the consumer is gone; the consumer takes `consume` of them and drops
/// its end. Values the producer cannot place any more are dropped by the
/// producer; values left in the ring (queued or staged) by the ring.
fn drop_round(capacity: usize, rng: &mut Rng) {
    let total = rng.u64(..4 * capacity as u64 + 8) as usize;
    let consume = rng.u64(..total as u64 + 1) as usize;
    let leave_staged = rng.u64(..2) == 0;
    let seed = rng.u64(..);
    let drops: Arc<[AtomicU32]> = (0..total).map(|_| AtomicU32::new(0)).collect();
    let (mut p, mut c) = spsc::channel::<Counted>(capacity).unwrap();
    thread::scope(|s| {
        let producer_drops = Arc::clone(&drops);
        s.spawn(move || {
            let mut rng = Rng::with_seed(seed);
            let mut idle = 0;
            for seq in 0..total {
                let mut value = Counted {
                    seq,
                    drops: Arc::clone(&producer_drops),
                };
                loop {
                    match p.stage(value) {
                        Ok(()) => break,
                        Err(back) => {
                            if p.is_abandoned() {
                                drop(back);
                                break;
                            }
                            p.publish();
                            value = back;
                            back_off(&mut rng, &mut idle);
                        }
                    }
                }
                let last = seq + 1 == total;
                if rng.u64(..3) == 0 && !(last && leave_staged) {
                    p.publish();
                }
            }
            // Drop with whatever is still staged.
            drop(p);
        });
        s.spawn(move || {
            let mut rng = Rng::with_seed(!seed);
            let mut taken = 0;
            let mut idle = 0;
            while taken < consume {
                if rng.u64(..2) == 0 {
                    match c.pop() {
                        Some(value) => {
                            assert_eq!(value.seq, taken);
                            taken += 1;
                        }
                        None => back_off(&mut rng, &mut idle),
                    }
                } else {
                    let max = rng.u64(..(consume - taken) as u64 + 1) as usize;
                    c.pop_batch(max, |value| {
                        assert_eq!(value.seq, taken);
                        taken += 1;
                    });
                }
            }
            drop(c);
        });
    });
    for (seq, count) in drops.iter().enumerate() {
        assert_eq!(
            count.load(Ordering::Relaxed),
            1,
            "capacity {capacity}: value {seq} of {total} (consumed {consume}) dropped a wrong number of times"
        );
    }
    assert_eq!(Arc::strong_count(&drops), 1, "a value leaked");
}

#[test]
fn every_value_is_dropped_exactly_once() {
    for (i, &capacity) in CAPACITIES.iter().enumerate() {
        let mut rng = seeded(0xd20f + i as u64);
        for _ in 0..DROP_ROUNDS {
            drop_round(capacity, &mut rng);
        }
    }
}
