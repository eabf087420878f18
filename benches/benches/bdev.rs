//! Bdev channel cost: 4 KiB random reads and writes on one channel, driven on
//! the bench thread.
//!
//! - `null`: 256 MiB null bdev (no data touched): the floor of the contract.
//! - `ram`: 256 MiB ram bdev (prefilled, so no page faults are measured).
//! - `striped4`: RAID0 over 4 ram bdevs of 64 MiB, 16 KiB chunks (aligned
//!   4 KiB I/O never spans a chunk: one child request per parent, which
//!   takes the parent's list as it is).
//! - `striped4_null`: the same over 4 null bdevs: the striping overhead alone.
//!
//! For each: `*_qd1` submits one request and polls until it completes (the
//! time is one request's round trip through the channel); `*_batch32`
//! submits 32 requests then polls them all (throughput with batched
//! completion). LBAs are uniformly random, 4 KiB aligned, from a fixed
//! table; buffers are page aligned, one per slot. Throughput is in requests.
//!
//! `ram` and `striped4` also run `*64k_qd1`: 64 KiB random reads and writes
//! at 64 KiB-aligned LBAs, one at a time. On `striped4` each spans four
//! strips, one per child, so it measures the split-and-gather path against
//! the same copy on `ram`; throughput is in bytes.
//!
//! Run: `cargo bench -p benches --bench bdev` (about two minutes).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bdev::{Bdev, BdevRef, IoOp, IoRequest, IoVec, NullBdev, RamBdev, SgList, StripedBdev};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const IO_SIZE: usize = 4096;
const BATCH: usize = 32;
const DEVICE_BYTES: u64 = 256 << 20;
/// Random LBAs used in turn.
const LBA_TABLE: usize = 1 << 14;
/// Size of the large transfers.
const LARGE_IO: usize = 64 << 10;

/// Page-aligned buffers of `size` bytes, one per in-flight request, and
/// their iovecs.
struct Buffers {
    _memory: Vec<u8>,
    iovs: Vec<[IoVec; 1]>,
}

impl Buffers {
    fn new(count: usize, size: usize) -> Self {
        let mut memory = vec![0x5Au8; count * size + 4096];
        let skew = memory.as_ptr().align_offset(4096);
        let iovs = memory[skew..]
            .chunks_exact_mut(size)
            .take(count)
            .map(|chunk| [IoVec::from_slice(chunk)])
            .collect();
        Self {
            _memory: memory,
            iovs,
        }
    }

    fn sgl(&self, slot: usize) -> SgList {
        // SAFETY: the iovecs and the memory they name live as long as
        // `self`, which outlives every request of the benchmark; each slot's
        // buffer is used by one request at a time.
        unsafe { SgList::from_slice(&self.iovs[slot]) }
    }
}

/// Uniformly random `io_size`-aligned LBAs, the same in every run.
fn lba_table(num_blocks: u64, block_size: u32, io_size: usize) -> Vec<u64> {
    let per_io = (io_size / block_size as usize) as u64;
    let slots = num_blocks / per_io;
    let mut rng = fastrand::Rng::with_seed(0x2545_F491_4F6C_DD1D);
    (0..LBA_TABLE).map(|_| rng.u64(..slots) * per_io).collect()
}

/// Writes the whole device once so the measured I/O does not fault pages in.
fn prefill(bdev: &dyn Bdev) {
    let geometry = bdev.geometry();
    let chunk_blocks = (1u64 << 20) / u64::from(geometry.block_size);
    let mut data = vec![0xC3u8; 1 << 20];
    let iov = [IoVec::from_slice(&mut data)];
    // SAFETY: `iov` and `data` outlive the requests, each polled to
    // completion before the next.
    let sgl = unsafe { SgList::from_slice(&iov) };
    let mut ch = bdev.open_channel(1).unwrap();
    let mut lba = 0;
    while lba < geometry.num_blocks {
        let blocks = chunk_blocks.min(geometry.num_blocks - lba) as u32;
        let request = IoRequest {
            op: IoOp::Write,
            fua: false,
            lba,
            blocks,
            sgl,
            tag: 0,
        };
        ch.submit(request).unwrap();
        while ch.poll(&mut |c| assert_eq!(c.result, Ok(()))) == 0 {}
        lba += u64::from(blocks);
    }
}

fn bench_bdev(c: &mut Criterion, name: &str, bdev: &dyn Bdev) {
    prefill(bdev);
    let geometry = bdev.geometry();
    let blocks = (IO_SIZE / geometry.block_size as usize) as u32;
    let lbas = &lba_table(geometry.num_blocks, geometry.block_size, IO_SIZE);
    let buffers = Buffers::new(BATCH, IO_SIZE);
    let mut ch = bdev.open_channel(BATCH).unwrap();
    let mut group = c.benchmark_group(name);

    for (op, op_name) in [(IoOp::Read, "read"), (IoOp::Write, "write")] {
        let mut next = 0usize;
        let mut request = move |slot: usize, buffers: &Buffers| {
            next = (next + 1) % LBA_TABLE;
            IoRequest {
                op,
                fua: false,
                lba: lbas[next],
                blocks,
                sgl: buffers.sgl(slot),
                tag: slot as u64,
            }
        };

        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{op_name}_qd1"), |b| {
            b.iter(|| {
                ch.submit(request(0, &buffers)).unwrap();
                let mut completed = 0;
                while completed == 0 {
                    completed = ch.poll(&mut |c| {
                        black_box(c);
                    });
                }
            })
        });

        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(format!("{op_name}_batch{BATCH}"), |b| {
            b.iter(|| {
                for slot in 0..BATCH {
                    ch.submit(request(slot, &buffers)).unwrap();
                }
                let mut completed = 0;
                while completed < BATCH {
                    completed += ch.poll(&mut |c| {
                        black_box(c);
                    });
                }
            })
        });
    }
    group.finish();
}

/// 64 KiB random reads and writes, one at a time.
fn bench_large(c: &mut Criterion, name: &str, bdev: &dyn Bdev) {
    let geometry = bdev.geometry();
    let blocks = (LARGE_IO / geometry.block_size as usize) as u32;
    let lbas = &lba_table(geometry.num_blocks, geometry.block_size, LARGE_IO);
    let buffers = Buffers::new(1, LARGE_IO);
    let mut ch = bdev.open_channel(1).unwrap();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(LARGE_IO as u64));
    for (op, op_name) in [(IoOp::Read, "read"), (IoOp::Write, "write")] {
        let mut next = 0usize;
        group.bench_function(format!("{op_name}64k_qd1"), |b| {
            b.iter(|| {
                next = (next + 1) % LBA_TABLE;
                let request = IoRequest {
                    op,
                    fua: false,
                    lba: lbas[next],
                    blocks,
                    sgl: buffers.sgl(0),
                    tag: 0,
                };
                ch.submit(request).unwrap();
                while ch.poll(&mut |c| {
                    black_box(c);
                }) == 0
                {}
            })
        });
    }
    group.finish();
}

fn bdevs(c: &mut Criterion) {
    let null = NullBdev::new("null", 512, DEVICE_BYTES / 512).unwrap();
    bench_bdev(c, "null", &null);

    let ram = RamBdev::new("ram", 512, DEVICE_BYTES / 512).unwrap();
    eprintln!("ram backing: {:?}", ram.backing());
    bench_bdev(c, "ram", &ram);
    bench_large(c, "ram", &ram);
    drop(ram);

    let children: Vec<BdevRef> = (0..4)
        .map(|i| {
            Arc::new(RamBdev::new(format!("ram{i}"), 512, DEVICE_BYTES / 4 / 512).unwrap())
                as BdevRef
        })
        .collect();
    let striped = StripedBdev::new("striped4", children, 32).unwrap();
    bench_bdev(c, "striped4", &striped);
    bench_large(c, "striped4", &striped);
    drop(striped);

    let children: Vec<BdevRef> = (0..4)
        .map(|i| {
            Arc::new(NullBdev::new(format!("null{i}"), 512, DEVICE_BYTES / 4 / 512).unwrap())
                as BdevRef
        })
        .collect();
    let striped = StripedBdev::new("striped4_null", children, 32).unwrap();
    bench_bdev(c, "striped4_null", &striped);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2));
    targets = bdevs
}
criterion_main!(benches);
