//! Tests of the striped bdev's construction, splitting and channel.

use std::sync::Arc;

use super::channel::finish;
use super::layout::blocks_on_child;
use super::split::WHOLE_PARENT_SGL;
use super::*;
use crate::request::CompletionQueue;
use crate::{IoCompletion, IoOp, IoRequest, IoVec, NullBdev, RamBdev, SgList};

fn ram(name: &str, bs: u32, blocks: u64) -> BdevRef {
    Arc::new(RamBdev::new(name, bs, blocks).unwrap())
}

#[test]
fn geometry_and_validation() {
    let s = StripedBdev::new(
        "s",
        vec![ram("a", 512, 100), ram("b", 512, 70), ram("c", 512, 90)],
        16,
    )
    .unwrap();
    // min 70 rounded down to 64, times 3.
    assert_eq!(s.geometry().num_blocks, 192);
    assert_eq!(s.geometry().block_size, 512);
    assert_eq!(s.chunk_blocks(), 16);
    let caps = s.capabilities();
    assert_eq!(
        caps,
        Capabilities {
            volatile_cache: false,
            unmap: true,
            unmap_reads_zeroes: true,
            write_zeroes: true,
            max_transfer_blocks: 0,
            max_unmap_blocks: 0,
            optimal_boundary_blocks: 16,
        }
    );

    let err = StripedBdev::new("s", vec![ram("a", 512, 64), ram("b", 4096, 64)], 8)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "striped bdev s: child b has block size 4096 but child a has 512"
    );
    let a = ram("a", 512, 64);
    let err = StripedBdev::new("s", vec![a.clone(), ram("b", 512, 64), a], 8)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "striped bdev s: child a is listed twice (also as a)");
    let err = StripedBdev::new("s", vec![ram("a", 512, 64), ram("b", 512, 7)], 8)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "striped bdev s: child b has 7 blocks, fewer than one chunk of 8"
    );
    assert!(matches!(
        StripedBdev::new("s", vec![], 8),
        Err(Error::InvalidParameter(_))
    ));
    assert!(matches!(
        StripedBdev::new("s", vec![ram("a", 512, 64)], 12),
        Err(Error::InvalidParameter(_))
    ));
    assert!(matches!(
        StripedBdev::new("s", vec![ram("a", 512, 64)], 0),
        Err(Error::InvalidParameter(_))
    ));
    // Null children do not read back zeroes after unmap.
    let null: BdevRef = Arc::new(NullBdev::new("n", 512, 64).unwrap());
    let mixed = StripedBdev::new("s", vec![ram("a", 512, 64), null], 8).unwrap();
    assert!(mixed.capabilities().unmap && !mixed.capabilities().unmap_reads_zeroes);
}

fn iov_at(buf: &mut [u8], offset: usize, len: usize) -> IoVec {
    IoVec::from_slice(&mut buf[offset..offset + len])
}

#[test]
fn merges_pieces_per_child_and_splits_iovecs() {
    let children = vec![ram("a", 512, 64), ram("b", 512, 64)];
    let s = StripedBdev::new("s", children, 4).unwrap();
    let mut ch = s.open_striped_channel(2).unwrap();
    // Three separate pieces of memory: 1000 + 24 + 9216 bytes = 20 blocks.
    let mut buf = vec![0u8; 12_000];
    let base = buf.as_mut_ptr();
    let iovs = [
        iov_at(&mut buf, 0, 1000),
        iov_at(&mut buf, 1100, 24),
        iov_at(&mut buf, 1200, 9216),
    ];
    // SAFETY: `iovs` and `buf` outlive the request, completed below.
    let sgl = unsafe { SgList::from_slice(&iovs) };
    let request = IoRequest {
        op: IoOp::Write,
        fua: true,
        lba: 2,
        blocks: 20,
        sgl,
        tag: 5,
    };
    // LBA 2..22 = strips 0 (2..4), 1, 2, 3, 4, 5 (20..22): three pieces on
    // each child, merged into one request per child.
    ch.split(0, &request);
    let slot = &ch.slots[0];
    let ios: Vec<_> = slot
        .child_ios
        .iter()
        .map(|io| (io.child, io.lba, io.blocks))
        .collect();
    assert_eq!(ios, [(0, 2, 10), (1, 0, 10)]);
    let iovs_of = |child: usize| -> Vec<(usize, usize)> {
        slot.child_iovs[child]
            .iter()
            .map(|v| (v.base as usize - base as usize, v.len))
            .collect()
    };
    // Child 0: parent bytes 0..1024 (a, all of b), 3072..5120, 7168..9216.
    assert_eq!(
        iovs_of(0),
        [
            (0, 1000),
            (1100, 24),
            (1200 + 2048, 2048),
            (1200 + 6144, 2048)
        ]
    );
    // Child 1: parent bytes 1024..3072, 5120..7168, 9216..10240.
    assert_eq!(
        iovs_of(1),
        [(1200, 2048), (1200 + 4096, 2048), (1200 + 8192, 1024)]
    );
    assert!(ch.submit_children(0));
    ch.free.retain(|&s| s != 0);
    let mut got = Vec::new();
    assert_eq!(ch.poll(&mut |c| got.push(c)), 1);
    assert_eq!(
        got,
        [IoCompletion {
            tag: 5,
            result: Ok(())
        }]
    );
    assert_eq!(ch.in_flight(), 0);
}

#[test]
fn within_one_strip_passes_the_parent_list() {
    let s = StripedBdev::new("s", vec![ram("a", 512, 64), ram("b", 512, 64)], 8).unwrap();
    let mut ch = s.open_striped_channel(2).unwrap();
    let mut buf = vec![0u8; 4096];
    let iovs = [iov_at(&mut buf, 0, 1000), iov_at(&mut buf, 1000, 3096)];
    // SAFETY: `iovs` and `buf` outlive the split requests (never submitted).
    let sgl = unsafe { SgList::from_slice(&iovs) };
    // LBAs 9..16: strip 1, child 1, child LBAs 1..8.
    let request = IoRequest {
        op: IoOp::Write,
        fua: false,
        lba: 9,
        blocks: 7,
        sgl,
        tag: 1,
    };
    ch.split(0, &request);
    let slot = &ch.slots[0];
    let ios: Vec<_> = slot
        .child_ios
        .iter()
        .map(|io| (io.child, io.lba, io.blocks, io.iov_start))
        .collect();
    assert_eq!(ios, [(1, 1, 7, WHOLE_PARENT_SGL)]);
    assert!(slot.child_iovs.iter().all(Vec::is_empty));
    assert_eq!(slot.sgl.iovs().as_ptr(), iovs.as_ptr());
    finish(
        &mut ch.slots[0],
        0,
        &mut Vec::new(),
        &mut CompletionQueue::new(1),
    );
    assert_eq!(ch.slots[0].sgl.count(), 0, "a free slot keeps no list");

    // One block more crosses into strip 2: gathered, one request per child.
    ch.split(
        0,
        &IoRequest {
            blocks: 8,
            ..request
        },
    );
    let ios: Vec<_> = ch.slots[0]
        .child_ios
        .iter()
        .map(|io| (io.child, io.lba, io.blocks, io.iov_start, io.iov_end))
        .collect();
    // Child 1's 3584 bytes span both (adjacent) iovecs: coalesced to one.
    assert_eq!(ios, [(1, 1, 7, 0, 1), (0, 8, 1, 0, 1)]);
}

#[test]
fn coalesces_adjacent_memory_and_honours_child_limits() {
    let s = StripedBdev::new("s", vec![ram("a", 512, 64)], 1).unwrap();
    let mut ch = s.open_striped_channel(1).unwrap();
    let mut buf = vec![0u8; 512 * 8];
    let base = buf.as_mut_ptr() as usize;
    let iovs = [
        iov_at(&mut buf, 0, 100),
        iov_at(&mut buf, 100, 1000),
        iov_at(&mut buf, 1100, 2996),
    ];
    // SAFETY: `iovs` and `buf` outlive the split requests (never submitted).
    let sgl = unsafe { SgList::from_slice(&iovs) };
    let request = IoRequest {
        op: IoOp::Read,
        fua: false,
        lba: 3,
        blocks: 8,
        sgl,
        tag: 1,
    };
    // Eight one-block strips on one child, adjacent in memory: one child
    // request with one iovec.
    ch.split(0, &request);
    let slot = &ch.slots[0];
    assert_eq!(slot.child_ios.len(), 1);
    assert_eq!((slot.child_ios[0].lba, slot.child_ios[0].blocks), (3, 8));
    let v = slot.child_iovs[0][0];
    assert_eq!((v.base as usize - base, v.len), (0, 4096));
    assert_eq!(slot.child_iovs[0].len(), 1);
    finish(
        &mut ch.slots[0],
        0,
        &mut Vec::new(),
        &mut CompletionQueue::new(1),
    );

    // A child taking at most 3 blocks per request: 3 + 3 + 2, each with
    // its own iovecs.
    ch.splitter.limits[0].rw = 3;
    ch.split(0, &request);
    let slot = &ch.slots[0];
    let ios: Vec<_> = slot
        .child_ios
        .iter()
        .map(|io| (io.lba, io.blocks, io.iov_start, io.iov_end))
        .collect();
    assert_eq!(ios, [(3, 3, 0, 1), (6, 3, 1, 2), (9, 2, 2, 3)]);
    let lens: Vec<_> = slot.child_iovs[0]
        .iter()
        .map(|v| (v.base as usize - base, v.len))
        .collect();
    assert_eq!(lens, [(0, 1536), (1536, 1536), (3072, 1024)]);
}

#[test]
fn unmap_split_per_child() {
    let null = |name| -> BdevRef { Arc::new(NullBdev::new(name, 512, 1 << 20).unwrap()) };
    let children = vec![null("a"), null("b"), null("c")];
    let s = StripedBdev::new("s", children, 8).unwrap();
    let mut ch = s.open_striped_channel(1).unwrap();
    ch.splitter.limits[2].unmap = 1000;
    // Parent LBAs 5 .. 3_000_005, split per child in O(children).
    let request = IoRequest {
        op: IoOp::Unmap,
        fua: false,
        lba: 5,
        blocks: 3_000_000,
        sgl: SgList::EMPTY,
        tag: 1,
    };
    ch.split(0, &request);
    let ios: Vec<_> = ch.slots[0]
        .child_ios
        .iter()
        .map(|io| (io.child, io.lba, io.blocks))
        .collect();
    let end = 5 + 3_000_000u64;
    let expect_child = |c: u64| {
        let a = blocks_on_child(5, c, 3, 3);
        let b = blocks_on_child(end, c, 3, 3);
        (a, b - a)
    };
    let (a0, n0) = expect_child(0);
    let (a1, n1) = expect_child(1);
    let (a2, n2) = expect_child(2);
    assert_eq!(ios[0], (0, a0, n0 as u32));
    assert_eq!(ios[1], (1, a1, n1 as u32));
    assert_eq!(n0 + n1 + n2, 3_000_000);
    // Child 2 is cut into requests of at most 1000 blocks.
    let rest = &ios[2..];
    assert_eq!(rest.len() as u64, n2.div_ceil(1000));
    let mut lba = a2;
    for &(child, l, b) in rest {
        assert_eq!(child, 2);
        assert_eq!(l, lba);
        assert!(b <= 1000);
        lba += u64::from(b);
    }
    assert_eq!(lba, a2 + n2);
}
