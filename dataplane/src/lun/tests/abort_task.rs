//! Tests: `Lun::abort_task`, the task-management entry point: what it finds
//! in a slot, that the slot is free and the unit keeps serving afterwards,
//! and that nothing leaks (task slots, scratch chunks, bdev requests).

use reactor::Poller;

use crate::exec::{status, CommandExecutor, Response};

use super::super::{Lun, TaskAbort};
use super::harness::{cdb10, Harness};

/// Free scratch chunks, counted by taking them all and giving them back.
fn free_chunks(lun: &mut Lun) -> usize {
    let mut taken = Vec::new();
    while let Some(chunk) = lun.scratch.take() {
        taken.push(chunk);
    }
    let n = taken.len();
    for chunk in taken {
        lun.scratch.put(chunk);
    }
    n
}

fn aborted() -> Response {
    Response::with_status(status::TASK_ABORTED)
}

#[test]
fn finds_only_active_tasks() {
    let mut h = Harness::new();
    assert_eq!(h.lun.abort_task(0), TaskAbort::NotFound, "free slot");
    assert_eq!(h.lun.abort_task(9999), TaskAbort::NotFound, "no such slot");
    let mut buf = vec![0u8; 512];
    h.submit(3, &cdb10(0x28, 0, 5, 1), &mut buf);
    let mut delivered = 0;
    for _ in 0..10 {
        h.lun.flush();
        h.poller.poll();
        // Takes the completions in, delivers nothing.
        delivered += h.lun.poll(0, &mut |_, _| {});
    }
    assert_eq!((delivered, h.lun.in_flight()), (0, 1));
    assert_eq!(
        h.lun.abort_task(3),
        TaskAbort::NotFound,
        "finished, its response waiting: too late to abort"
    );
    h.run();
    assert_eq!(h.take(3), Response::good(512));
    assert_eq!(h.lun.abort_task(3), TaskAbort::NotFound, "delivered");
}

#[test]
fn a_task_in_the_bdev_is_reported_and_freed_when_its_io_returns() {
    let mut h = Harness::new();
    let chunks = free_chunks(&mut h.lun);
    h.disk.set_hold(true);
    let mut read = vec![0u8; 4 * 512];
    let mut verify = vec![0u8; 0];
    h.submit(5, &cdb10(0x28, 0, 40, 4), &mut read);
    // VERIFY (BYTCHK 0) reads into a scratch chunk.
    h.submit(6, &cdb10(0x2F, 0, 80, 2), &mut verify);
    h.step();
    assert_eq!(h.lun.outstanding_requests(), 2);
    let TaskAbort::InBdev { tag, requests } = h.lun.abort_task(5) else {
        panic!("the read is in the bdev");
    };
    assert_eq!(requests, 1);
    assert_eq!(
        h.lun.abort_task(5),
        TaskAbort::InBdev { tag, requests },
        "asking again changes nothing"
    );
    assert!(matches!(
        h.lun.abort_task(6),
        TaskAbort::InBdev { requests: 1, .. }
    ));
    assert_ne!(h.lun.abort_task(6), TaskAbort::InBdev { tag, requests });
    assert_eq!(free_chunks(&mut h.lun), chunks - 1, "the verify holds one");
    for _ in 0..5 {
        h.step();
    }
    assert!(h.responses.is_empty(), "nothing freed under the bdev");
    h.disk.set_hold(false);
    h.run();
    assert_eq!(h.take(5), aborted());
    assert_eq!(h.take(6), aborted());
    // Nothing leaks, and both slots serve again.
    assert_eq!(h.lun.in_flight(), 0);
    assert_eq!(h.lun.outstanding_requests(), 0);
    assert_eq!(free_chunks(&mut h.lun), chunks);
    h.submit(5, &cdb10(0x28, 0, 40, 4), &mut read);
    h.submit(6, &cdb10(0x2F, 0, 80, 2), &mut verify);
    h.run();
    assert_eq!(h.take(5), Response::good(4 * 512));
    assert_eq!(h.take(6), Response::good(0));
}

#[test]
fn a_task_waiting_for_room_finishes_at_once() {
    // A port of depth 2: the third read waits in the unit.
    let mut h = Harness::with(super::harness::caps(), 2, 3, |_| {});
    h.disk.set_hold(true);
    let mut bufs: Vec<Vec<u8>> = (0..3).map(|_| vec![0u8; 512]).collect();
    for (i, buf) in bufs.iter_mut().enumerate() {
        h.submit(i as u32, &cdb10(0x28, 0, i as u32 + 1, 1), buf);
    }
    h.step();
    assert_eq!(h.lun.abort_task(2), TaskAbort::Finished);
    assert_eq!(h.lun.abort_task(2), TaskAbort::NotFound, "already finished");
    h.step();
    assert_eq!(h.take(2), aborted());
    // Its slot is free: a new command there runs.
    h.submit(2, &cdb10(0x28, 0, 9, 1), &mut bufs[2]);
    h.disk.set_hold(false);
    h.run();
    for slot in 0..3 {
        assert_eq!(h.take(slot), Response::good(512));
    }
    let mut lbas: Vec<u64> = h.disk.log().iter().map(|l| l.lba).collect();
    lbas.sort();
    assert_eq!(lbas, [1, 2, 9], "the aborted read never reached the bdev");
    assert_eq!(h.lun.in_flight(), 0);
}

#[test]
fn a_stuck_read_on_a_fault_bdev_is_aborted_in_the_bdev() {
    use bdev::fault::{FaultAction, FaultBdev, FaultRule, OpSet};
    use bdev::{Bdev, IoOp, IoVec};

    use super::super::LunConfig;
    use crate::port::{port_pair, BdevPoller};

    let ram = std::sync::Arc::new(bdev::ram::RamBdev::new("ram", 512, 1024).unwrap());
    let stuck = FaultRule::new(OpSet::NONE.with(IoOp::Read), FaultAction::Stick).in_range(7, 8);
    let fault = FaultBdev::new("f", ram, vec![stuck], 1).unwrap();
    let (port, end) = port_pair(8).unwrap();
    let mut poller = BdevPoller::new("f", fault.open_channel(8).unwrap(), 8);
    poller.attach(end).unwrap();
    let mut config = LunConfig::for_bdev(&fault);
    config.max_tasks = 4;
    let mut lun = Lun::new(config, port).unwrap();
    let chunks = free_chunks(&mut lun);
    let mut got = Vec::new();
    let step = |lun: &mut Lun, poller: &mut BdevPoller, got: &mut Vec<(u32, Response)>| {
        for _ in 0..10 {
            lun.flush();
            poller.poll();
            lun.poll(usize::MAX, &mut |s, r| got.push((s, *r)));
        }
    };
    let mut stuck_buf = vec![0xEEu8; 2 * 512];
    let mut other = vec![0u8; 512];
    // SAFETY: the buffers outlive the commands, which complete below.
    unsafe {
        lun.submit(
            1,
            &cdb10(0x28, 0, 6, 2),
            &[IoVec::from_slice(&mut stuck_buf)],
        )
    };
    step(&mut lun, &mut poller, &mut got);
    assert!(got.is_empty(), "stuck");
    assert!(matches!(
        lun.abort_task(1),
        TaskAbort::InBdev { requests: 1, .. }
    ));
    step(&mut lun, &mut poller, &mut got);
    assert_eq!(got, [(1, aborted())]);
    assert!(stuck_buf.iter().all(|&b| b == 0xEE), "no data moved");
    // Nothing leaks; the slot and the unit serve on.
    assert_eq!((lun.in_flight(), lun.outstanding_requests()), (0, 0));
    assert_eq!(free_chunks(&mut lun), chunks);
    assert_eq!(fault.stats().aborted, 1);
    got.clear();
    // SAFETY: as above.
    unsafe { lun.submit(1, &cdb10(0x28, 0, 100, 1), &[IoVec::from_slice(&mut other)]) };
    step(&mut lun, &mut poller, &mut got);
    assert_eq!(got, [(1, Response::good(512))]);
}
