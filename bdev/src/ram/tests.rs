//! Tests of the ram bdev: backing policy and huge pages, round trips,
//! zeroing, errors and concurrent channels.

use std::io::Write as _;

use super::*;
use crate::{IoError, IoOp, IoRequest, IoVec, SgList};

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
    assert_eq!(bdev.huge_page_fraction(), None, "huge pages not asked for");
    // 3 MiB + 1 block: huge pages are tried, so the mapping is rounded up to
    // whole huge pages whatever backs it in the end.
    let bdev = RamBdev::new("r", 4096, 769).unwrap();
    assert_eq!(bdev.mapped_bytes(), 4 << 20);
    if bdev.backing() != Backing::HugeTlb {
        // Transparent huge pages need a 2 MiB-aligned address.
        let mapping = bdev.memory.mapping();
        assert_eq!(mapping.as_ptr() as usize % HUGE_PAGE_SIZE, 0);
    }
}

/// The huge pages this machine has reserved and free (`HugePages_Free`).
#[test]
fn huge_page_fraction_is_measured_after_prefault() {
    let bs = 4096usize;
    let blocks = 16 << 8; // 16 MiB
    let bdev = RamBdev::new("r", bs as u32, blocks).unwrap();
    let collapse = bdev.prefault();
    let fraction = bdev.huge_page_fraction();
    // Not asserted beyond its range: it depends on the machine's memory.
    let _ = writeln!(
        std::io::stderr(),
        "ram bdev of 16 MiB: {:?}, collapse {collapse:?}, huge-page fraction {fraction:?}",
        bdev.backing()
    );
    match bdev.backing() {
        Backing::HugeTlb => assert_eq!(fraction, Some(1.0)),
        Backing::TransparentHuge | Backing::Normal => {
            if std::path::Path::new("/proc/self/smaps").exists() {
                assert!(
                    fraction.is_some_and(|f| (0.0..=1.0).contains(&f)),
                    "{fraction:?}"
                );
            }
        }
    }
    if bdev.backing() == Backing::Normal {
        assert_eq!(collapse, Collapse::NotNeeded);
    }
    // Prefault and collapse keep the contents, and the bdev still works.
    let mut ch = bdev.open_channel(1).unwrap();
    let mut data = pattern(8 * bs, 7);
    let written = data.clone();
    write_all(ch.as_mut(), 3000, &mut data, bs);
    bdev.prefault();
    assert_eq!(read_all(ch.as_mut(), bs, 3000, 8), written);
    // Small bdevs stay on base pages and have nothing to report.
    let small = RamBdev::new("s", 4096, 256).unwrap();
    assert_eq!(
        (small.prefault(), small.huge_page_fraction()),
        (Collapse::NotNeeded, None)
    );
}

#[test]
fn hugetlb_backing_is_wholly_huge() {
    // Reserving pages would change the machine for every other program:
    // this test only runs where some are reserved and free already.
    if !test_support::skip::can_run(&[test_support::skip::Need::ReservedHugePages(2)]) {
        return;
    }
    let bs = 4096usize;
    let bdev = RamBdev::new("h", bs as u32, 1024).unwrap();
    assert_eq!(bdev.backing(), Backing::HugeTlb);
    assert_eq!(bdev.prefault(), Collapse::NotNeeded);
    assert_eq!(bdev.huge_page_fraction(), Some(1.0));
    let mut ch = bdev.open_channel(1).unwrap();
    let mut data = pattern(4 * bs, 3);
    let written = data.clone();
    write_all(ch.as_mut(), 600, &mut data, bs);
    assert_eq!(read_all(ch.as_mut(), bs, 600, 4), written);
}

#[test]
fn a_mapping_is_usable_as_a_slice() {
    let mut mapping = RamMapping::new("buffer", 3 << 20, HugePages::Auto).unwrap();
    assert_eq!(mapping.len(), 4 << 20);
    assert!(!mapping.is_empty());
    assert!(mapping.as_slice().iter().all(|&b| b == 0));
    mapping.as_mut_slice()[(4 << 20) - 1] = 7;
    mapping.prefault();
    assert_eq!(mapping.as_slice()[(4 << 20) - 1], 7);
    let fraction = mapping.huge_page_fraction();
    assert!(
        fraction.is_none_or(|f| (0.0..=1.0).contains(&f)),
        "{fraction:?}"
    );
    assert!(matches!(
        RamMapping::new("empty", 0, HugePages::Auto),
        Err(Error::InvalidParameter(_))
    ));
}

#[test]
fn collapse_failures_say_why() {
    assert_eq!(Collapse::Done.failure(), None);
    assert_eq!(Collapse::Unsupported.failure(), None);
    let why = Collapse::Failed(libc::ENOMEM).failure().unwrap();
    assert!(
        why.starts_with("MADV_COLLAPSE failed: Cannot allocate memory"),
        "{why}"
    );
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
    bdev.memory.mapping().touch_pages();
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

#[test]
fn collapse_brings_base_pages_onto_huge_pages() {
    use test_support::skip::{can_run, Need};
    // Reserved hugetlbfs pages take precedence over THP (nothing then to
    // collapse); without either there is nothing to test.
    if !can_run(&[Need::TransparentHugePages]) {
        return;
    }
    let mapping = RamMapping::new("collapse", 8 << 20, HugePages::Auto).unwrap();
    if mapping.backing() == Backing::HugeTlb {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: collapse_brings_base_pages_onto_huge_pages: reserved huge pages back \
             the mapping, so nothing is left to collapse"
        );
        return;
    }
    assert_eq!(mapping.backing(), Backing::TransparentHuge);
    // Fault the memory in on base pages first, as a fragmented machine would.
    let advise = |advice| {
        // SAFETY: the whole usable range of our own private anonymous
        // mapping; (NO)HUGEPAGE and POPULATE_WRITE change which pages back
        // it, never its contents.
        unsafe { libc::madvise(mapping.as_ptr().cast(), mapping.len(), advice) }
    };
    assert_eq!(advise(libc::MADV_NOHUGEPAGE), 0);
    assert_eq!(advise(libc::MADV_POPULATE_WRITE), 0);
    assert_eq!(advise(libc::MADV_HUGEPAGE), 0);
    let before = mapping.huge_page_fraction();
    let collapse = mapping.prefault();
    let after = mapping.huge_page_fraction();
    let _ = writeln!(
        std::io::stderr(),
        "8 MiB on base pages: fraction {before:?}, then {collapse:?}, fraction {after:?}"
    );
    assert_eq!(before, Some(0.0));
    match collapse {
        // The kernel's contract: every 2 MiB region is now a huge page.
        Collapse::Done => assert_eq!(after, Some(1.0)),
        // An older kernel, or no huge page to be had: reported as is.
        Collapse::Unsupported | Collapse::Failed(_) => {
            assert!(after.is_some_and(|f| f < 1.0))
        }
        Collapse::NotNeeded => panic!("base pages needed collapsing"),
    }
    assert!(mapping.as_slice().iter().all(|&b| b == 0));
}
