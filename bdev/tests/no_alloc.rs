//! The data path does not allocate: after a warm-up, submitting and polling
//! requests on ram, null and striped channels makes no heap allocation.

use std::sync::Arc;

use bdev::{
    Bdev, BdevChannel, BdevRef, IoOp, IoRequest, IoVec, NullBdev, RamBdev, SgList, StripedBdev,
};
use test_support::alloc::{thread_allocations, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const BLOCK: usize = 4096;
const DEPTH: usize = 32;

/// Runs `rounds` batches of `DEPTH` mixed requests (8 KiB reads and writes
/// in three iovecs each, unaligned unmaps, flushes) and polls them all.
fn run(ch: &mut dyn BdevChannel, blocks: u64, rounds: u64, bufs: &[Vec<IoVec>]) {
    let mut completed = 0;
    for round in 0..rounds {
        for (i, iovs) in bufs.iter().enumerate() {
            let i = i as u64;
            let op = match (round + i) % 8 {
                0..=2 => IoOp::Read,
                3..=5 => IoOp::Write,
                6 => IoOp::Unmap,
                _ => IoOp::Flush,
            };
            let lba = (round * 37 + i * 11) % (blocks - 2);
            // SAFETY: the iovecs name `Vec`s owned by the test that outlive
            // every request; requests of one batch that share no buffer.
            let sgl = unsafe { SgList::from_slice(iovs) };
            let request = IoRequest {
                op,
                fua: i & 1 == 0,
                lba,
                blocks: 2,
                sgl: if matches!(op, IoOp::Read | IoOp::Write) {
                    sgl
                } else {
                    SgList::EMPTY
                },
                tag: i,
            };
            ch.submit(request).expect("room for a full batch");
        }
        while ch.in_flight() > 0 {
            completed += ch.poll(&mut |c| assert_eq!(c.result, Ok(())));
        }
    }
    assert_eq!(completed, rounds as usize * bufs.len());
}

fn check_no_allocation(bdev: &dyn Bdev) {
    let blocks = bdev.geometry().num_blocks;
    let mut memory: Vec<Vec<u8>> = (0..DEPTH).map(|_| vec![7u8; 2 * BLOCK + 64]).collect();
    // Three iovecs per request, cutting blocks at odd places, with gaps.
    let bufs: Vec<Vec<IoVec>> = memory
        .iter_mut()
        .map(|m| {
            let (a, rest) = m.split_at_mut(1001);
            let (_, rest) = rest.split_at_mut(16);
            let (b, rest) = rest.split_at_mut(3000);
            let (_, c) = rest.split_at_mut(16);
            vec![
                IoVec::from_slice(a),
                IoVec::from_slice(b),
                IoVec::from_slice(c),
            ]
        })
        .collect();
    let mut ch = bdev.open_channel(DEPTH).unwrap();
    run(ch.as_mut(), blocks, 20, &bufs);
    let before = thread_allocations();
    run(ch.as_mut(), blocks, 200, &bufs);
    assert_eq!(
        thread_allocations() - before,
        0,
        "{} allocated on the data path",
        bdev.name()
    );
}

#[test]
fn ram_channel_does_not_allocate() {
    check_no_allocation(&RamBdev::new("ram", BLOCK as u32, 4096).unwrap());
}

#[test]
fn null_channel_does_not_allocate() {
    check_no_allocation(&NullBdev::new("null", BLOCK as u32, 4096).unwrap());
}

#[test]
fn striped_channel_does_not_allocate() {
    let children: Vec<BdevRef> = (0..4)
        .map(|i| Arc::new(RamBdev::new(format!("r{i}"), BLOCK as u32, 1024).unwrap()) as BdevRef)
        .collect();
    // One-block chunks: every 2-block request spans two children.
    check_no_allocation(&StripedBdev::new("striped", children, 1).unwrap());
}
