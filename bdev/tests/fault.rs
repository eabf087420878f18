//! The fault bdev: each injected error, rules by operation, range and
//! probability, delays released in `poll` on a manual clock, stuck requests
//! aborted, abort through a striped bdev, and a data path that does not
//! allocate.

use std::sync::Arc;

use bdev::fault::{Clock, FaultAction, FaultError, FaultRule, ManualTime, OpSet};
use bdev::{
    Bdev, BdevChannel, BdevRef, FaultBdev, IoCompletion, IoError, IoOp, IoRequest, IoVec, RamBdev,
    SgList, StripedBdev,
};
use test_support::alloc::{thread_allocations, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const BS: u32 = 512;

fn ram(name: &str, blocks: u64) -> BdevRef {
    Arc::new(RamBdev::new(name, BS, blocks).unwrap())
}

fn fault(rules: Vec<FaultRule>) -> (FaultBdev, ManualTime) {
    let (clock, time) = Clock::manual();
    (
        FaultBdev::with_clock("f", ram("r", 1024), rules, 42, clock).unwrap(),
        time,
    )
}

struct Buf {
    _mem: Vec<u8>,
    iov: [IoVec; 1],
}

impl Buf {
    fn new(blocks: u32, fill: u8) -> Box<Buf> {
        let mut mem = vec![fill; (blocks * BS) as usize];
        let iov = [IoVec::from_slice(&mut mem)];
        Box::new(Buf { _mem: mem, iov })
    }
    fn sgl(&self) -> SgList {
        // SAFETY: every test keeps its buffers alive until its requests
        // completed.
        unsafe { SgList::from_slice(&self.iov) }
    }
}

fn req(op: IoOp, lba: u64, blocks: u32, buf: &Buf, tag: u64) -> IoRequest {
    let sgl = if matches!(op, IoOp::Read | IoOp::Write) {
        buf.sgl()
    } else {
        SgList::EMPTY
    };
    IoRequest::new(op, lba, blocks, sgl, tag)
}

fn drain(ch: &mut dyn BdevChannel) -> Vec<IoCompletion> {
    let mut got = Vec::new();
    ch.poll(&mut |c| got.push(c));
    got.sort_by_key(|c| c.tag);
    got
}

fn results(got: &[IoCompletion]) -> Vec<(u64, Result<(), IoError>)> {
    got.iter().map(|c| (c.tag, c.result)).collect()
}

#[test]
fn each_error_kind_on_its_range_and_ops() {
    for (name, kind) in FaultError::NAMES {
        let rule = FaultRule::new(
            OpSet::NONE.with(IoOp::Read).with(IoOp::Write),
            FaultAction::Fail(kind),
        )
        .in_range(100, 108);
        let (bdev, _) = fault(vec![rule]);
        let mut ch = bdev.open_channel(8).unwrap();
        let buf = Buf::new(4, 0);
        ch.submit(req(IoOp::Read, 96, 4, &buf, 1)).unwrap(); // before
        ch.submit(req(IoOp::Read, 98, 4, &buf, 2)).unwrap(); // overlaps
        ch.submit(req(IoOp::Write, 107, 1, &buf, 3)).unwrap(); // last block
        ch.submit(req(IoOp::Write, 108, 4, &buf, 4)).unwrap(); // after
        ch.submit(req(IoOp::Unmap, 100, 4, &buf, 5)).unwrap(); // other op
        let got = drain(ch.as_mut());
        assert_eq!(
            results(&got),
            [
                (1, Ok(())),
                (2, Err(kind.io_error(IoOp::Read, 100))),
                (3, Err(kind.io_error(IoOp::Write, 107))),
                (4, Ok(())),
                (5, Ok(())),
            ],
            "{name}"
        );
        assert_eq!(ch.in_flight(), 0);
        assert_eq!(bdev.stats().failed, 2);
    }
    assert_eq!(
        FaultError::Medium.io_error(IoOp::Read, 7),
        IoError::ReadAt(7)
    );
    assert_eq!(
        FaultError::NoSpace.io_error(IoOp::Write, 7),
        IoError::NoSpace(libc::ENOSPC)
    );
}

#[test]
fn unselected_requests_reach_the_base_and_data_survives() {
    let rule = FaultRule::new(OpSet::ALL, FaultAction::Fail(FaultError::Medium)).in_range(0, 1);
    let (bdev, _) = fault(vec![rule]);
    let mut ch = bdev.open_channel(4).unwrap();
    let data = Buf::new(2, 0xAB);
    ch.submit(req(IoOp::Write, 10, 2, &data, 1)).unwrap();
    assert_eq!(results(&drain(ch.as_mut())), [(1, Ok(()))]);
    let back = Buf::new(2, 0);
    ch.submit(req(IoOp::Read, 10, 2, &back, 2)).unwrap();
    assert_eq!(results(&drain(ch.as_mut())), [(2, Ok(()))]);
    assert!(back._mem.iter().all(|&b| b == 0xAB));
    // A whole-device flush overlaps the range; out-of-range is checked
    // first, as by any bdev.
    ch.submit(req(IoOp::Flush, 0, 0, &back, 3)).unwrap();
    ch.submit(req(IoOp::Read, 1024, 1, &back, 4)).unwrap();
    assert_eq!(
        results(&drain(ch.as_mut())),
        [(3, Err(IoError::WriteAt(0))), (4, Err(IoError::OutOfRange))]
    );
}

#[test]
fn probability_is_seeded_and_reproducible() {
    let rule =
        FaultRule::new(OpSet::ALL, FaultAction::Fail(FaultError::NotReady)).with_probability(0.3);
    let run = || {
        let (bdev, _) = fault(vec![rule]);
        let mut ch = bdev.open_channel(1).unwrap();
        let buf = Buf::new(1, 0);
        (0..1000)
            .map(|i| {
                ch.submit(req(IoOp::Read, i % 1024, 1, &buf, i)).unwrap();
                drain(ch.as_mut())[0].result.is_err()
            })
            .collect::<Vec<_>>()
    };
    let a = run();
    assert_eq!(a, run(), "same seed, same faults");
    let failed = a.iter().filter(|&&f| f).count();
    assert!((200..400).contains(&failed), "{failed} of 1000 at p=0.3");
}

#[test]
fn delays_hold_completions_until_due_without_blocking() {
    let rules = vec![
        FaultRule::new(
            OpSet::NONE.with(IoOp::Read),
            FaultAction::Delay {
                min_us: 100,
                max_us: 100,
            },
        )
        .in_range(0, 8),
        FaultRule::new(
            OpSet::NONE.with(IoOp::Write),
            FaultAction::Delay {
                min_us: 200,
                max_us: 300,
            },
        ),
    ];
    let (bdev, time) = fault(rules);
    let mut ch = bdev.open_channel(8).unwrap();
    let buf = Buf::new(1, 0);
    ch.submit(req(IoOp::Read, 0, 1, &buf, 1)).unwrap();
    ch.submit(req(IoOp::Read, 8, 1, &buf, 2)).unwrap();
    ch.submit(req(IoOp::Write, 20, 1, &buf, 3)).unwrap();
    // Only the undelayed read completes; the others wait in the channel.
    assert_eq!(results(&drain(ch.as_mut())), [(2, Ok(()))]);
    assert_eq!(ch.in_flight(), 2);
    time.advance_us(99);
    assert_eq!(drain(ch.as_mut()).len(), 0);
    time.advance_us(1);
    assert_eq!(results(&drain(ch.as_mut())), [(1, Ok(()))]);
    time.advance_us(99);
    assert_eq!(
        drain(ch.as_mut()).len(),
        0,
        "the write waits at least 200 us"
    );
    time.advance_us(101);
    assert_eq!(results(&drain(ch.as_mut())), [(3, Ok(()))]);
    assert_eq!(ch.in_flight(), 0);
    assert_eq!(bdev.stats().delayed, 2);
}

#[test]
fn stuck_requests_complete_only_when_aborted() {
    let rule = FaultRule::new(OpSet::NONE.with(IoOp::Read), FaultAction::Stick).in_range(5, 6);
    let (bdev, time) = fault(vec![rule]);
    let mut ch = bdev.open_channel(2).unwrap();
    let buf = Buf::new(1, 0x11);
    ch.submit(req(IoOp::Read, 5, 1, &buf, 7)).unwrap();
    for _ in 0..100 {
        time.advance_us(1_000_000);
        assert_eq!(drain(ch.as_mut()).len(), 0);
    }
    assert_eq!(ch.in_flight(), 1);
    assert!(!ch.abort(8), "unknown tag");
    // The other slot still serves.
    let other = Buf::new(1, 0);
    ch.submit(req(IoOp::Read, 6, 1, &other, 9)).unwrap();
    assert_eq!(results(&drain(ch.as_mut())), [(9, Ok(()))]);
    assert!(ch.abort(7));
    assert!(!ch.abort(7), "already aborted");
    assert_eq!(results(&drain(ch.as_mut())), [(7, Err(IoError::Aborted))]);
    assert!(buf._mem.iter().all(|&b| b == 0x11), "buffer untouched");
    assert_eq!(ch.in_flight(), 0);
    // Both slots are free again.
    ch.submit(req(IoOp::Read, 5, 1, &buf, 10)).unwrap();
    ch.submit(req(IoOp::Read, 5, 1, &buf, 11)).unwrap();
    assert!(ch.submit(req(IoOp::Read, 0, 1, &buf, 12)).is_err(), "full");
    assert!(ch.abort(10) && ch.abort(11));
    assert_eq!(drain(ch.as_mut()).len(), 2);
    let stats = bdev.stats();
    assert_eq!((stats.stuck, stats.aborted), (3, 3));
}

#[test]
fn a_delayed_request_can_be_aborted() {
    let rule = FaultRule::new(
        OpSet::ALL,
        FaultAction::Delay {
            min_us: 1000,
            max_us: 1000,
        },
    );
    let (bdev, _) = fault(vec![rule]);
    let mut ch = bdev.open_channel(2).unwrap();
    let buf = Buf::new(1, 0);
    ch.submit(req(IoOp::Write, 0, 1, &buf, 3)).unwrap();
    assert_eq!(drain(ch.as_mut()).len(), 0);
    assert!(ch.abort(3));
    assert_eq!(results(&drain(ch.as_mut())), [(3, Err(IoError::Aborted))]);
    assert_eq!(ch.in_flight(), 0);
}

#[test]
fn channels_without_abort_say_so() {
    let r = ram("r", 64);
    let mut ch = r.open_channel(2).unwrap();
    let buf = Buf::new(1, 0);
    ch.submit(req(IoOp::Read, 0, 1, &buf, 1)).unwrap();
    assert!(!ch.abort(1));
    assert_eq!(results(&drain(ch.as_mut())), [(1, Ok(()))]);
}

#[test]
fn a_striped_bdev_forwards_aborts_to_its_children() {
    let (clock, _) = Clock::manual();
    let stuck = FaultRule::new(OpSet::NONE.with(IoOp::Read), FaultAction::Stick);
    let kids: Vec<BdevRef> = (0..2)
        .map(|i| {
            let f = FaultBdev::with_clock(
                format!("f{i}"),
                ram(&format!("r{i}"), 256),
                vec![stuck],
                i,
                clock.clone(),
            )
            .unwrap();
            Arc::new(f) as BdevRef
        })
        .collect();
    let striped = StripedBdev::new("s", kids, 8).unwrap();
    let mut ch = striped.open_channel(4).unwrap();
    let buf = Buf::new(16, 0);
    // Spans both children.
    ch.submit(req(IoOp::Read, 4, 16, &buf, 77)).unwrap();
    ch.submit(req(IoOp::Write, 0, 16, &buf, 78)).unwrap();
    assert_eq!(results(&drain(ch.as_mut())), [(78, Ok(()))]);
    assert_eq!(ch.in_flight(), 1);
    assert!(!ch.abort(5));
    assert!(ch.abort(77));
    assert_eq!(results(&drain(ch.as_mut())), [(77, Err(IoError::Aborted))]);
    assert_eq!(ch.in_flight(), 0);
    // All parent slots serve again.
    for tag in 0..4 {
        ch.submit(req(IoOp::Write, 0, 1, &buf, tag)).unwrap();
    }
    assert_eq!(drain(ch.as_mut()).len(), 4);
}

#[test]
fn a_striped_bdev_reports_medium_errors_at_its_own_lba() {
    // Child 1 fails its block 9: with 8-block strips over two children,
    // that is parent block 8 * 3 + 1 = 25.
    let medium = FaultRule::new(OpSet::ALL, FaultAction::Fail(FaultError::Medium)).in_range(9, 10);
    let kids: Vec<BdevRef> = vec![
        ram("r0", 64),
        Arc::new(FaultBdev::new("f1", ram("r1", 64), vec![medium], 0).unwrap()),
    ];
    let striped = StripedBdev::new("s", kids, 8).unwrap();
    let mut ch = striped.open_channel(4).unwrap();
    let buf = Buf::new(16, 0);
    ch.submit(req(IoOp::Read, 16, 16, &buf, 1)).unwrap();
    ch.submit(req(IoOp::Write, 20, 8, &buf, 2)).unwrap();
    assert_eq!(
        results(&drain(ch.as_mut())),
        [
            (1, Err(IoError::ReadAt(25))),
            (2, Err(IoError::WriteAt(25)))
        ]
    );
}

#[test]
fn bad_rules_are_refused_naming_the_field() {
    let fail = FaultAction::Fail(FaultError::Medium);
    let bad = [
        (
            FaultRule::new(OpSet::ALL, fail).in_range(5, 5),
            "range 5..5 is empty",
        ),
        (
            FaultRule::new(OpSet::ALL, fail).with_probability(1.5),
            "probability 1.5",
        ),
        (
            FaultRule::new(
                OpSet::ALL,
                FaultAction::Delay {
                    min_us: 9,
                    max_us: 3,
                },
            ),
            "latency 9 us",
        ),
    ];
    for (rule, what) in bad {
        let e = FaultBdev::new("f", ram("r", 8), vec![rule], 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fault bdev f: rule 0: ") && e.contains(what),
            "{e}"
        );
    }
}

#[test]
fn the_data_path_does_not_allocate() {
    let rules = vec![
        FaultRule::new(
            OpSet::NONE.with(IoOp::Read),
            FaultAction::Fail(FaultError::Medium),
        )
        .in_range(0, 16)
        .with_probability(0.5),
        FaultRule::new(
            OpSet::NONE.with(IoOp::Write),
            FaultAction::Delay {
                min_us: 0,
                max_us: 20,
            },
        ),
        FaultRule::new(OpSet::NONE.with(IoOp::Flush), FaultAction::Stick),
    ];
    let (bdev, time) = fault(rules);
    // Room for some of the writes: both outcomes run.
    let bdev = bdev.with_space_limit(10);
    let mut ch = bdev.open_channel(32).unwrap();
    let bufs: Vec<Box<Buf>> = (0..32).map(|_| Buf::new(2, 1)).collect();
    let round = |ch: &mut dyn BdevChannel| {
        for (i, buf) in bufs.iter().enumerate() {
            let i = i as u64;
            let op = [IoOp::Read, IoOp::Write, IoOp::Flush, IoOp::Unmap][(i % 4) as usize];
            ch.submit(req(op, (i * 7) % 1000, 2, buf, i)).unwrap();
        }
        for i in (2..32).step_by(4) {
            assert!(ch.abort(i));
        }
        let mut n = 0;
        while ch.in_flight() > 0 {
            time.advance_us(5);
            n += ch.poll(&mut |_| {});
        }
        assert_eq!(n, 32);
    };
    for _ in 0..5 {
        round(ch.as_mut());
    }
    let before = thread_allocations();
    for _ in 0..100 {
        round(ch.as_mut());
    }
    assert_eq!(
        thread_allocations() - before,
        0,
        "the fault channel allocated"
    );
}

#[test]
fn an_abort_reaches_a_fault_bdev_under_another() {
    // The outer bdev delays, the inner one holds: the abort passes through
    // the outer channel to the request in its base, and the completion is
    // not delayed on top.
    let (clock, _) = Clock::manual();
    let stuck = FaultRule::new(OpSet::ALL, FaultAction::Stick);
    let inner: BdevRef = Arc::new(
        FaultBdev::with_clock("inner", ram("r", 64), vec![stuck], 0, clock.clone()).unwrap(),
    );
    let delay = FaultRule::new(
        OpSet::ALL,
        FaultAction::Delay {
            min_us: 1000,
            max_us: 1000,
        },
    );
    let outer = FaultBdev::with_clock("outer", inner, vec![delay], 0, clock).unwrap();
    let mut ch = outer.open_channel(2).unwrap();
    let buf = Buf::new(1, 0);
    ch.submit(req(IoOp::Read, 3, 1, &buf, 5)).unwrap();
    assert_eq!(drain(ch.as_mut()).len(), 0);
    assert!(ch.abort(5));
    assert_eq!(results(&drain(ch.as_mut())), [(5, Err(IoError::Aborted))]);
    assert_eq!(ch.in_flight(), 0);
}

#[test]
fn a_space_limit_fails_writes_that_would_pass_it() {
    let (bdev, _) = fault(Vec::new());
    let bdev = bdev.with_space_limit(16);
    let mut ch = bdev.open_channel(4).unwrap();
    let buf = Buf::new(8, 3);
    ch.submit(req(IoOp::Write, 0, 8, &buf, 1)).unwrap();
    ch.submit(req(IoOp::Write, 4, 8, &buf, 2)).unwrap(); // 4 new blocks
    ch.submit(req(IoOp::WriteZeroes, 100, 8, &buf, 3)).unwrap(); // 8 more: 20
    ch.submit(req(IoOp::Write, 0, 8, &buf, 4)).unwrap(); // rewrite: free
    assert_eq!(
        results(&drain(ch.as_mut())),
        [
            (1, Ok(())),
            (2, Ok(())),
            (3, Err(IoError::NoSpace(libc::ENOSPC))),
            (4, Ok(())),
        ]
    );
    assert_eq!(bdev.space_used(), Some(12));
    // Reads still work; an unmap gives room back.
    ch.submit(req(IoOp::Read, 100, 8, &buf, 5)).unwrap();
    ch.submit(req(IoOp::Unmap, 0, 4, &buf, 6)).unwrap();
    ch.submit(req(IoOp::WriteZeroes, 100, 8, &buf, 7)).unwrap();
    assert_eq!(
        results(&drain(ch.as_mut())),
        [(5, Ok(())), (6, Ok(())), (7, Ok(()))]
    );
    assert_eq!(bdev.space_used(), Some(16));
    assert_eq!(bdev.stats().no_space, 1);
}
