//! SPSC ring comparison: ours (`reactor::spsc`) against `rtrb` 0.3 and
//! crossbeam's `ArrayQueue` (an MPMC queue, the "just use crossbeam" option).
//!
//! Every measurement runs between two threads pinned to different cores
//! (`PRODUCER_CORE`, `CONSUMER_CORE`) and times the work with `iter_custom`
//! after both threads passed a `Barrier`, as rtrb's own two-thread benches do:
//! - `stream_*`: the producer pushes `iters` items one at a time (spinning
//!   while the ring is full), the consumer pops them one at a time and checks
//!   the sequence. Throughput is items per second.
//! - `stream_batch32_*`: the same with batches of 32: `stage` x32 + `publish`
//!   and `pop_batch(32)` for ours, `write_chunk_uninit` + `fill_from_iter` and
//!   `read_chunk` for rtrb (ArrayQueue has no batch API).
//! - `ping_pong_*`: one item goes out on ring A, the other thread echoes it
//!   back on ring B; the time per iteration is one round trip.
//!
//! Items are a `u64` and a 40-byte `#[repr(C)]` struct the size of
//! `bdev::IoRequest`.
//!
//! Run: `cargo bench -p benches --bench spsc` (criterion, about two
//! minutes), or `SPSC_AB=15 cargo bench -p benches --bench spsc` for an
//! interleaved min/median table that holds up better on a shared machine
//! (see [`interleaved`]).

use std::hint::{black_box, spin_loop};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

/// Ring capacity for the streaming benchmarks.
const CAPACITY: usize = 1024;
/// Ring capacity for the ping-pong benchmark (never more than one item in it).
const PING_PONG_CAPACITY: usize = 64;
/// Batch size of the batched streaming benchmark.
const BATCH: usize = 32;
const PRODUCER_CORE: usize = 0;
const CONSUMER_CORE: usize = 1;

/// A value that carries a sequence number, so the consumer can check order.
trait Item: Copy + Send + 'static {
    fn from_seq(seq: u64) -> Self;
    fn seq(&self) -> u64;
}

impl Item for u64 {
    #[inline(always)]
    fn from_seq(seq: u64) -> Self {
        seq
    }
    #[inline(always)]
    fn seq(&self) -> u64 {
        *self
    }
}

/// Shaped like an `IoRequest`: 40 bytes.
#[derive(Clone, Copy)]
#[repr(C)]
struct Request40 {
    op: u64,
    lba: u64,
    blocks: u64,
    sgl: u64,
    tag: u64,
}

const _: () = assert!(std::mem::size_of::<Request40>() == 40);

impl Item for Request40 {
    #[inline(always)]
    fn from_seq(seq: u64) -> Self {
        Request40 {
            op: 1,
            lba: seq.wrapping_mul(8),
            blocks: 8,
            sgl: 0,
            tag: seq,
        }
    }
    #[inline(always)]
    fn seq(&self) -> u64 {
        self.tag
    }
}

/// The operations every contender offers.
trait Ring<T: Item> {
    type Tx: Send;
    type Rx: Send;
    fn new(capacity: usize) -> (Self::Tx, Self::Rx);
    fn push(tx: &mut Self::Tx, value: T) -> Result<(), T>;
    fn pop(rx: &mut Self::Rx) -> Option<T>;
}

/// Batch operations: publish/consume many items with one index update.
trait BatchRing<T: Item>: Ring<T> {
    /// Pushes the items with sequence numbers `start..start + n` (fewer if the
    /// ring is full) as one batch; returns how many were pushed.
    fn push_batch(tx: &mut Self::Tx, start: u64, n: usize) -> usize;
    /// Pops up to `max` items as one batch, handing each to `f`.
    fn pop_batch(rx: &mut Self::Rx, max: usize, f: impl FnMut(T)) -> usize;
}

struct Ours;

impl<T: Item> Ring<T> for Ours {
    type Tx = reactor::spsc::Producer<T>;
    type Rx = reactor::spsc::Consumer<T>;
    fn new(capacity: usize) -> (Self::Tx, Self::Rx) {
        reactor::spsc::channel(capacity).expect("power-of-two capacity")
    }
    #[inline(always)]
    fn push(tx: &mut Self::Tx, value: T) -> Result<(), T> {
        tx.push(value)
    }
    #[inline(always)]
    fn pop(rx: &mut Self::Rx) -> Option<T> {
        rx.pop()
    }
}

impl<T: Item> BatchRing<T> for Ours {
    #[inline(always)]
    fn push_batch(tx: &mut Self::Tx, start: u64, n: usize) -> usize {
        let mut pushed = 0;
        while pushed < n {
            if tx.stage(T::from_seq(start + pushed as u64)).is_err() {
                break;
            }
            pushed += 1;
        }
        tx.publish();
        pushed
    }
    #[inline(always)]
    fn pop_batch(rx: &mut Self::Rx, max: usize, f: impl FnMut(T)) -> usize {
        rx.pop_batch(max, f)
    }
}

struct Rtrb;

impl<T: Item> Ring<T> for Rtrb {
    type Tx = rtrb::Producer<T>;
    type Rx = rtrb::Consumer<T>;
    fn new(capacity: usize) -> (Self::Tx, Self::Rx) {
        rtrb::RingBuffer::new(capacity)
    }
    #[inline(always)]
    fn push(tx: &mut Self::Tx, value: T) -> Result<(), T> {
        tx.push(value).map_err(|rtrb::PushError::Full(v)| v)
    }
    #[inline(always)]
    fn pop(rx: &mut Self::Rx) -> Option<T> {
        rx.pop().ok()
    }
}

impl<T: Item> BatchRing<T> for Rtrb {
    #[inline(always)]
    fn push_batch(tx: &mut Self::Tx, start: u64, n: usize) -> usize {
        let chunk = match tx.write_chunk_uninit(n) {
            Ok(chunk) => chunk,
            Err(rtrb::chunks::ChunkError::TooFewSlots(0)) => return 0,
            Err(rtrb::chunks::ChunkError::TooFewSlots(free)) => tx
                .write_chunk_uninit(free)
                .expect("free slots were counted"),
        };
        chunk.fill_from_iter((start..).map(T::from_seq))
    }
    #[inline(always)]
    fn pop_batch(rx: &mut Self::Rx, max: usize, mut f: impl FnMut(T)) -> usize {
        let chunk = match rx.read_chunk(max) {
            Ok(chunk) => chunk,
            Err(rtrb::chunks::ChunkError::TooFewSlots(0)) => return 0,
            Err(rtrb::chunks::ChunkError::TooFewSlots(ready)) => {
                rx.read_chunk(ready).expect("ready slots were counted")
            }
        };
        let n = chunk.len();
        for value in chunk {
            f(value);
        }
        n
    }
}

struct Crossbeam;

impl<T: Item> Ring<T> for Crossbeam {
    type Tx = Arc<ArrayQueue<T>>;
    type Rx = Arc<ArrayQueue<T>>;
    fn new(capacity: usize) -> (Self::Tx, Self::Rx) {
        let queue = Arc::new(ArrayQueue::new(capacity));
        (Arc::clone(&queue), queue)
    }
    #[inline(always)]
    fn push(tx: &mut Self::Tx, value: T) -> Result<(), T> {
        tx.push(value)
    }
    #[inline(always)]
    fn pop(rx: &mut Self::Rx) -> Option<T> {
        rx.pop()
    }
}

static PIN_WARNED: AtomicBool = AtomicBool::new(false);

fn pin(core: usize) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core })
        && !PIN_WARNED.swap(true, Ordering::Relaxed)
    {
        eprintln!("warning: cannot pin to core {core}; results are unpinned");
    }
}

#[inline(always)]
fn push_spin<T: Item, R: Ring<T>>(tx: &mut R::Tx, mut value: T) {
    loop {
        match R::push(tx, value) {
            Ok(()) => return,
            Err(back) => {
                value = back;
                spin_loop();
            }
        }
    }
}

#[inline(always)]
fn pop_spin<T: Item, R: Ring<T>>(rx: &mut R::Rx) -> T {
    loop {
        if let Some(value) = R::pop(rx) {
            return value;
        }
        spin_loop();
    }
}

#[inline(always)]
fn check_seq(got: u64, want: u64) {
    if got != want {
        panic!("out of order: got {got}, want {want}");
    }
}

/// Runs `produce` and `consume` on two pinned threads released by one
/// barrier; returns the time from the earlier start to the consumer's end.
///
/// The closures own their ring ends (see [`padded_ends`]).
fn two_threads(
    produce: impl FnOnce() + Send,
    consume: impl FnOnce() + Send,
    producer_core: usize,
    consumer_core: usize,
) -> Duration {
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        let barrier = &barrier;
        let producer = s.spawn(move || {
            pin(producer_core);
            barrier.wait();
            let start = Instant::now();
            produce();
            start
        });
        let consumer = s.spawn(move || {
            pin(consumer_core);
            barrier.wait();
            let start = Instant::now();
            consume();
            (start, Instant::now())
        });
        let producer_start = producer.join().expect("producer panicked");
        let (consumer_start, stop) = consumer.join().expect("consumer panicked");
        stop.duration_since(producer_start.min(consumer_start))
    })
}

/// Creates a ring and pads each end to its own cache lines. Every contender
/// keeps its local indices in the end struct and writes them on each
/// operation; two ends side by side in one cache line (on a stack or in two
/// neighbouring boxed closures) would falsely share it, and the numbers then
/// depend on where the allocator happened to put them (we saw 3-8x swings).
fn padded_ends<T: Item, R: Ring<T>>(capacity: usize) -> (CachePadded<R::Tx>, CachePadded<R::Rx>) {
    let (tx, rx) = R::new(capacity);
    (CachePadded::new(tx), CachePadded::new(rx))
}

fn stream<T: Item, R: Ring<T>>(iters: u64) -> Duration {
    let (mut tx, mut rx) = padded_ends::<T, R>(CAPACITY);
    two_threads(
        move || {
            for seq in 0..iters {
                push_spin::<T, R>(&mut tx, T::from_seq(seq));
            }
        },
        move || {
            for seq in 0..iters {
                let value = pop_spin::<T, R>(&mut rx);
                check_seq(value.seq(), seq);
                black_box(value);
            }
        },
        PRODUCER_CORE,
        CONSUMER_CORE,
    )
}

fn stream_batched<T: Item, R: BatchRing<T>>(iters: u64) -> Duration {
    let (mut tx, mut rx) = padded_ends::<T, R>(CAPACITY);
    two_threads(
        move || {
            let mut sent = 0;
            while sent < iters {
                let n = BATCH.min((iters - sent) as usize);
                let pushed = R::push_batch(&mut tx, sent, n);
                if pushed == 0 {
                    spin_loop();
                }
                sent += pushed as u64;
            }
        },
        move || {
            let mut next = 0;
            while next < iters {
                let popped = R::pop_batch(&mut rx, BATCH, |value| {
                    check_seq(value.seq(), next);
                    next += 1;
                    black_box(value);
                });
                if popped == 0 {
                    spin_loop();
                }
            }
        },
        PRODUCER_CORE,
        CONSUMER_CORE,
    )
}

fn ping_pong<T: Item, R: Ring<T>>(iters: u64) -> Duration {
    let (mut ping_tx, mut ping_rx) = padded_ends::<T, R>(PING_PONG_CAPACITY);
    let (mut pong_tx, mut pong_rx) = padded_ends::<T, R>(PING_PONG_CAPACITY);
    // The "producer" sends pings and waits for each pong; the "consumer"
    // echoes. The measured span runs to the echo thread's end, which is just
    // after the last pong was pushed.
    two_threads(
        move || {
            for seq in 0..iters {
                push_spin::<T, R>(&mut ping_tx, T::from_seq(seq));
                let pong = pop_spin::<T, R>(&mut pong_rx);
                check_seq(pong.seq(), seq);
            }
        },
        move || {
            for _ in 0..iters {
                let ping = pop_spin::<T, R>(&mut ping_rx);
                push_spin::<T, R>(&mut pong_tx, ping);
            }
        },
        PRODUCER_CORE,
        CONSUMER_CORE,
    )
}

fn stream_group<T: Item>(c: &mut Criterion, name: &str) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.bench_function("ours", |b| b.iter_custom(stream::<T, Ours>));
    group.bench_function("rtrb", |b| b.iter_custom(stream::<T, Rtrb>));
    group.bench_function("ArrayQueue", |b| b.iter_custom(stream::<T, Crossbeam>));
    group.finish();
}

fn stream_batch_group<T: Item>(c: &mut Criterion, name: &str) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.bench_function("ours", |b| b.iter_custom(stream_batched::<T, Ours>));
    group.bench_function("rtrb", |b| b.iter_custom(stream_batched::<T, Rtrb>));
    group.finish();
}

fn ping_pong_group<T: Item>(c: &mut Criterion, name: &str) {
    let mut group = c.benchmark_group(name);
    group.bench_function("ours", |b| b.iter_custom(ping_pong::<T, Ours>));
    group.bench_function("rtrb", |b| b.iter_custom(ping_pong::<T, Rtrb>));
    group.bench_function("ArrayQueue", |b| b.iter_custom(ping_pong::<T, Crossbeam>));
    group.finish();
}

fn benches(c: &mut Criterion) {
    stream_group::<u64>(c, "stream_u64");
    stream_group::<Request40>(c, "stream_req40");
    stream_batch_group::<u64>(c, "stream_batch32_u64");
    stream_batch_group::<Request40>(c, "stream_batch32_req40");
    ping_pong_group::<u64>(c, "ping_pong_u64");
    ping_pong_group::<Request40>(c, "ping_pong_req40");
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = spsc;
    config = config();
    targets = benches
}

/// One contender in the interleaved comparison: a name and a run of `iters`.
type Contender = (&'static str, fn(u64) -> Duration);

/// The interleaved comparison (`SPSC_AB=<rounds>`): each scenario runs every
/// contender once per round, rotating the order, and reports the minimum and
/// the median ns per item (per round trip for ping-pong). On a machine that
/// other jobs share, criterion's means swing with the background load; the
/// minimum over interleaved rounds is what the ring can do, and the median
/// shows how steady it is.
fn interleaved(rounds: usize) {
    let scenarios: [(&str, u64, Vec<Contender>); 6] = [
        (
            "stream_u64",
            2_000_000,
            vec![
                ("ours", stream::<u64, Ours>),
                ("rtrb", stream::<u64, Rtrb>),
                ("ArrayQueue", stream::<u64, Crossbeam>),
            ],
        ),
        (
            "stream_req40",
            1_000_000,
            vec![
                ("ours", stream::<Request40, Ours>),
                ("rtrb", stream::<Request40, Rtrb>),
                ("ArrayQueue", stream::<Request40, Crossbeam>),
            ],
        ),
        (
            "stream_batch32_u64",
            4_000_000,
            vec![
                ("ours", stream_batched::<u64, Ours>),
                ("rtrb", stream_batched::<u64, Rtrb>),
            ],
        ),
        (
            "stream_batch32_req40",
            2_000_000,
            vec![
                ("ours", stream_batched::<Request40, Ours>),
                ("rtrb", stream_batched::<Request40, Rtrb>),
            ],
        ),
        (
            "ping_pong_u64",
            100_000,
            vec![
                ("ours", ping_pong::<u64, Ours>),
                ("rtrb", ping_pong::<u64, Rtrb>),
                ("ArrayQueue", ping_pong::<u64, Crossbeam>),
            ],
        ),
        (
            "ping_pong_req40",
            100_000,
            vec![
                ("ours", ping_pong::<Request40, Ours>),
                ("rtrb", ping_pong::<Request40, Rtrb>),
                ("ArrayQueue", ping_pong::<Request40, Crossbeam>),
            ],
        ),
    ];
    println!("interleaved comparison, {rounds} rounds: min / median ns per item");
    for (scenario, iters, contenders) in scenarios {
        let mut samples = vec![Vec::with_capacity(rounds); contenders.len()];
        for round in 0..rounds {
            for k in 0..contenders.len() {
                let index = (round + k) % contenders.len();
                let elapsed = (contenders[index].1)(iters);
                samples[index].push(elapsed.as_nanos() as f64 / iters as f64);
            }
        }
        let mut line = format!("{scenario:22}");
        for ((name, _), mut times) in contenders.iter().zip(samples) {
            times.sort_by(f64::total_cmp);
            let (min, median) = (times[0], times[times.len() / 2]);
            line += &format!(" | {name} {min:8.2} / {median:8.2}");
        }
        println!("{line}");
    }
}

fn main() {
    if let Some(rounds) = std::env::var("SPSC_AB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        interleaved(rounds.max(1));
        return;
    }
    spsc();
    Criterion::default().configure_from_args().final_summary();
}
