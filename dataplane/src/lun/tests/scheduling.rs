//! Tests: scheduling (FIFO order when the port is full, scratch
//! exhaustion), slots, delivery, stray completions and dropping a busy unit.

use bdev::{IoCompletion, IoOp};

use crate::exec::{status, CommandExecutor, Response};
use crate::scsi::ScsiError;

use super::super::task::tag;
use super::super::Lun;
use super::harness::{caps, cdb10, check, pattern, Harness};

#[test]
fn port_full_keeps_fifo_order() {
    let mut h = Harness::with(caps(), 2, 4, |_| {});
    let mut bufs: Vec<Vec<u8>> = (0..20).map(|_| vec![0u8; 512]).collect();
    for (i, buf) in bufs.iter_mut().enumerate() {
        h.submit(i as u32, &cdb10(0x28, 0, i as u32, 1), buf);
    }
    assert_eq!(h.lun.outstanding_requests(), 2);
    h.run();
    assert_eq!(h.responses.len(), 20);
    let lbas: Vec<u64> = h.disk.log().iter().map(|l| l.lba).collect();
    assert_eq!(lbas, (0..20).collect::<Vec<_>>());
    assert!(h.disk.log().iter().all(|l| l.in_flight < 2));
    assert!(h.lun.stats().head_blocked > 0);
}

#[test]
fn scratch_exhaustion_waits_in_order_and_large_commands_work_in_pieces() {
    // One 8-block chunk for everyone.
    let mut h = Harness::with(caps(), 16, 6, |c| c.scratch_bytes = 4096);
    let data = pattern(64 * 512, 41);
    h.disk.write_blocks(0, &data);
    let mut bufs: Vec<Vec<u8>> = (0..6)
        .map(|i| data[i * 10 * 512..(i * 10 + 10) * 512].to_vec())
        .collect();
    bufs[3][5] ^= 1;
    for (i, buf) in bufs.iter_mut().enumerate() {
        h.submit(i as u32, &cdb10(0x2F, 0x02, i as u32 * 10, 10), buf);
    }
    let mut write = pattern(512, 42);
    h.submit(6, &cdb10(0x41, 0, 100, 40), &mut write);
    h.run();
    for slot in 0..6 {
        let expected = if slot == 3 {
            check(ScsiError::Miscompare { offset: 5 })
        } else {
            Response::good(0)
        };
        assert_eq!(h.take(slot), expected);
    }
    assert_eq!(h.take(6), Response::good(0));
    assert_eq!(h.disk.blocks(100, 40), write.repeat(40));
    assert!(h.lun.stats().scratch_waits >= 5);
    // The tasks got the chunk in submission order.
    let verify_order: Vec<u64> = h
        .disk
        .log()
        .iter()
        .filter(|l| l.op == IoOp::Read)
        .map(|l| l.lba / 10)
        .collect();
    let mut sorted = verify_order.clone();
    sorted.sort();
    assert_eq!(verify_order, sorted);
}

#[test]
fn busy_and_out_of_range_slots_get_busy() {
    let mut h = Harness::new();
    h.disk.set_hold(true);
    let mut buf = vec![0u8; 512];
    h.submit(1, &cdb10(0x28, 0, 0, 1), &mut buf);
    h.submit(1, &[0, 0, 0, 0, 0, 0], &mut []);
    h.submit(32, &[0, 0, 0, 0, 0, 0], &mut []);
    assert_eq!(h.lun.in_flight(), 3);
    h.step();
    assert_eq!(
        h.responses,
        [
            (1, Response::with_status(status::BUSY)),
            (32, Response::with_status(status::BUSY))
        ]
    );
    h.responses.clear();
    h.disk.set_hold(false);
    h.run();
    assert_eq!(h.take(1), Response::good(512));
}

#[test]
fn poll_delivers_at_most_max_in_completion_order() {
    let mut h = Harness::new();
    for slot in 0..5 {
        h.submit(slot, &[0, 0, 0, 0, 0, 0], &mut []);
    }
    let mut got = Vec::new();
    assert_eq!(h.lun.poll(2, &mut |s, _| got.push(s)), 2);
    assert_eq!(h.lun.poll(10, &mut |s, _| got.push(s)), 3);
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert_eq!(h.lun.in_flight(), 0);
}

#[test]
fn lun_can_move_to_a_reactor_thread() {
    fn send<T: Send>() {}
    send::<Lun>();
}

#[test]
fn stray_completions_are_ignored() {
    let mut h = Harness::new();
    h.lun.complete(IoCompletion {
        tag: 7,
        result: Ok(()),
    });
    h.lun.complete(IoCompletion {
        tag: tag(1000, 0),
        result: Ok(()),
    });
    assert_eq!(h.lun.stats().stray_completions, 2);
}

#[test]
fn dropping_with_io_outstanding_does_not_free_memory_under_the_bdev() {
    let mut h = Harness::new();
    h.disk.set_hold(true);
    let mut buf = vec![0u8; 512];
    h.submit(0, &cdb10(0x2F, 0x02, 0, 1), &mut buf);
    h.step();
    let Harness { lun, poller, .. } = h;
    assert_eq!(lun.outstanding_requests(), 1);
    drop(lun);
    drop(poller);
}
