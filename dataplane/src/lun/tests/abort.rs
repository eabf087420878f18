//! Tests: aborting tasks before and after they reached the bdev.

use bdev::IoOp;

use crate::exec::{status, CommandExecutor, Response};

use super::harness::{caps, caw, cdb10, Harness};

#[test]
fn abort_before_the_bdev() {
    let mut h = Harness::with(caps(), 2, 7, |_| {});
    h.disk.set_hold(true);
    let mut bufs: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; 512]).collect();
    for (i, buf) in bufs.iter_mut().enumerate() {
        h.submit(i as u32, &cdb10(0x28, 0, i as u32, 1), buf);
    }
    h.step();
    // Slots 2 and 3 wait for port room; abort 2.
    h.lun.abort(2);
    h.lun.abort(2);
    h.lun.abort(99);
    h.step();
    assert_eq!(
        h.responses,
        [(2, Response::with_status(status::TASK_ABORTED))]
    );
    h.responses.clear();
    h.disk.set_hold(false);
    h.run();
    for slot in [0, 1, 3] {
        assert_eq!(h.take(slot), Response::good(512));
    }
    assert_eq!(
        h.disk.log().iter().map(|l| l.lba).collect::<Vec<_>>(),
        [0, 1, 3]
    );
    // A task waiting for scratch.
    let mut h = Harness::with(caps(), 16, 7, |c| c.scratch_bytes = 4096);
    h.disk.set_hold(true);
    let mut a = vec![0u8; 512];
    let mut b = vec![0u8; 512];
    h.submit(0, &cdb10(0x2F, 0x02, 0, 1), &mut a);
    h.submit(1, &cdb10(0x2F, 0x02, 1, 1), &mut b);
    h.lun.abort(1);
    h.step();
    assert_eq!(h.take(1), Response::with_status(status::TASK_ABORTED));
    h.disk.set_hold(false);
    h.run();
    assert_eq!(h.take(0), Response::good(0));
    assert_eq!(h.disk.log().len(), 1);
}

#[test]
fn abort_after_the_bdev_waits_for_the_io() {
    let mut h = Harness::new();
    h.disk.set_hold(true);
    let mut buf = vec![9u8; 512];
    h.submit(5, &cdb10(0x2A, 0, 77, 1), &mut buf);
    h.step();
    h.lun.abort(5);
    for _ in 0..5 {
        h.step();
    }
    assert!(h.responses.is_empty());
    assert_eq!(h.lun.in_flight(), 1);
    h.disk.set_hold(false);
    h.run();
    assert_eq!(h.take(5), Response::with_status(status::TASK_ABORTED));
    // A multi-step command aborted mid-way issues no further steps.
    h.disk.clear_log();
    h.disk.set_hold(true);
    let mut buf = vec![0u8; 2 * 512];
    h.submit(6, &caw(10, 1, false), &mut buf);
    h.step();
    h.lun.abort(6);
    h.disk.set_hold(false);
    h.run();
    assert_eq!(h.take(6), Response::with_status(status::TASK_ABORTED));
    assert_eq!(
        h.disk.log().iter().map(|l| l.op).collect::<Vec<_>>(),
        [IoOp::Read]
    );
    // The slot is usable again.
    assert_eq!(h.exec(&[0, 0, 0, 0, 0, 0], &mut []), Response::good(0));
}
