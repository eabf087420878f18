//! The command counters a unit publishes for the metrics: commands by
//! kind, responses by status and sense key, bdev errors and requests
//! outstanding, published at the end of a poll.

use bdev::{IoError, IoOp};

use super::harness::{cdb10, Harness};
use crate::scsi::opcodes;

#[test]
fn commands_by_kind_and_responses_by_sense_key_reach_the_shared_counters() {
    let mut h = Harness::new();
    let counters = h.lun.counters();
    let mut block = vec![0u8; 512];
    let mut none = [0u8; 0];
    h.disk.fault(IoOp::Read, 100, 101, IoError::Read(libc::EIO));

    h.exec(&cdb10(opcodes::WRITE_10, 0, 7, 1), &mut block);
    h.exec(&cdb10(opcodes::READ_10, 0, 7, 1), &mut block);
    h.exec(&cdb10(opcodes::READ_10, 0, 100, 1), &mut block);
    // Beyond the 4096 blocks: ILLEGAL REQUEST, no bdev request.
    h.exec(&cdb10(opcodes::READ_10, 0, 5000, 1), &mut block);
    h.exec(&[opcodes::TEST_UNIT_READY, 0, 0, 0, 0, 0], &mut none);
    // An unknown operation code.
    h.exec(&[0xC7, 0, 0, 0, 0, 0], &mut none);

    let c = counters.snapshot();
    assert_eq!((c.reads, c.writes, c.others), (3, 1, 2));
    assert_eq!(c.good, 3);
    assert_eq!(c.medium_error, 1);
    assert_eq!(c.illegal_request, 2);
    assert_eq!(c.bdev_errors, 1);
    assert_eq!(c.bdev_outstanding, 0);
    let errors: u64 = c.by_sense_key().iter().map(|(_, n)| n).sum();
    assert_eq!(errors, 3, "{c:?}");
}

#[test]
fn requests_outstanding_show_while_the_bdev_holds_them() {
    let mut h = Harness::new();
    let counters = h.lun.counters();
    let mut block = vec![0u8; 512];
    h.disk.set_hold(true);
    h.submit(0, &cdb10(opcodes::READ_10, 0, 3, 1), &mut block);
    h.step();
    h.step();
    let c = counters.snapshot();
    assert_eq!(c.reads, 1);
    assert_eq!(c.bdev_outstanding, 1, "{c:?}");
    assert_eq!(c.good, 0);
    h.disk.set_hold(false);
    h.run();
    let response = h.take(0);
    assert_eq!(response.status, 0);
    let c = counters.snapshot();
    assert_eq!((c.good, c.bdev_outstanding), (1, 0), "{c:?}");
}
