//! Tests: COMPARE AND WRITE (compare, miscompare, and running alone).

use bdev::IoOp;

use crate::exec::{status, Response};
use crate::scsi::ScsiError;

use super::harness::{caps, caw, cdb10, check, pattern, Harness};

#[test]
fn compare_and_write_matches_and_miscompares() {
    let mut h = Harness::new();
    let old = pattern(4 * 512, 11);
    let new = pattern(4 * 512, 12);
    h.disk.write_blocks(40, &old);
    // Matching: the second half is written, FUA as asked.
    let mut buf = old.clone();
    buf.extend_from_slice(&new);
    assert_eq!(h.exec(&caw(40, 4, true), &mut buf), Response::good(0));
    assert_eq!(h.disk.blocks(40, 4), new);
    let log = h.disk.log();
    assert_eq!(
        log.iter()
            .map(|l| (l.op, l.lba, l.blocks, l.fua))
            .collect::<Vec<_>>(),
        [(IoOp::Read, 40, 4, false), (IoOp::Write, 40, 4, true)]
    );
    h.disk.clear_log();
    // Miscomparing at byte 1234 of the verify data: nothing written.
    let mut buf = new.clone();
    buf[1234] ^= 0x40;
    buf.extend_from_slice(&old);
    let r = h.exec(&caw(40, 4, false), &mut buf);
    assert_eq!(r, check(ScsiError::Miscompare { offset: 1234 }));
    assert_eq!(
        r.sense_bytes(),
        [0xF0, 0, 0x0E, 0, 0, 0x04, 0xD2, 10, 0, 0, 0, 0, 0x1D, 0, 0, 0, 0, 0]
    );
    assert_eq!(h.disk.blocks(40, 4), new);
    assert_eq!(h.disk.log().len(), 1);
    // Larger than a scratch chunk (8 blocks): compared in pieces.
    let old = pattern(16 * 512, 13);
    h.disk.write_blocks(100, &old);
    let mut buf = old.clone();
    buf[9 * 512 + 3] ^= 1;
    buf.extend_from_slice(&pattern(16 * 512, 14));
    assert_eq!(
        h.exec(&caw(100, 16, false), &mut buf),
        check(ScsiError::Miscompare {
            offset: 9 * 512 + 3
        })
    );
    assert_eq!(h.disk.blocks(100, 16), old);
}

#[test]
fn compare_and_write_runs_alone() {
    let mut h = Harness::with(caps(), 16, 5, |_| {});
    let old = pattern(2 * 512, 1);
    h.disk.write_blocks(2000, &old);
    let mut caw_buf = old.clone();
    caw_buf.extend_from_slice(&pattern(2 * 512, 2));
    let mut reads: Vec<Vec<u8>> = (0..12).map(|_| vec![0u8; 8 * 512]).collect();
    for (i, buf) in reads.iter_mut().enumerate().take(6) {
        h.submit(i as u32 + 1, &cdb10(0x28, 0, i as u32 * 8, 8), buf);
    }
    h.submit(0, &caw(2000, 2, false), &mut caw_buf);
    for (i, buf) in reads.iter_mut().enumerate().skip(6) {
        h.submit(i as u32 + 1, &cdb10(0x28, 0, i as u32 * 8, 8), buf);
    }
    h.run();
    for slot in 0..13 {
        assert_eq!(h.take(slot).status, status::GOOD);
    }
    let log = h.disk.log();
    let read = log
        .iter()
        .position(|l| l.lba == 2000 && l.op == IoOp::Read)
        .unwrap();
    let write = log
        .iter()
        .position(|l| l.lba == 2000 && l.op == IoOp::Write)
        .unwrap();
    // Nothing else was in the bdev when the compare started, the write
    // followed it directly, and the earlier reads all came first.
    assert_eq!(log[read].in_flight, 0);
    assert_eq!(write, read + 1);
    assert_eq!(log[write].in_flight, 0);
    assert_eq!(read, 6);
    assert_eq!(log.len(), 14);
}

/// The Data-Out Buffer of COMPARE AND WRITE is the verify instance followed
/// by the write instance, NUMBER OF LOGICAL BLOCKS each: a buffer of any
/// other length leaves the split between them undefined, so the command is
/// refused before anything is read or written. This is also what an
/// initiator that encodes 256 blocks gets: the 8-bit field wraps to 0 while
/// 2 x 256 blocks of data arrive.
#[test]
fn compare_and_write_refuses_a_data_out_buffer_of_another_length() {
    let mut h = Harness::new();
    let old = pattern(4 * 512, 21);
    h.disk.write_blocks(60, &old);
    let refused = check(ScsiError::cdb_byte(13));
    // 0 blocks in the CDB, 2 x 2 blocks of data.
    let mut buf = old.clone();
    assert_eq!(h.exec(&caw(60, 0, false), &mut buf), refused);
    // 1 block in the CDB, 2 x 2 blocks of data whose first block matches.
    let mut buf = old.clone();
    assert_eq!(h.exec(&caw(60, 1, false), &mut buf), refused);
    // 2 blocks in the CDB, one byte short of 2 x 2 blocks.
    let mut buf = old.clone();
    buf.extend_from_slice(&pattern(2 * 512 - 1, 22));
    assert_eq!(h.exec(&caw(60, 2, false), &mut buf), refused);
    assert_eq!(h.disk.blocks(60, 4), old);
    assert!(h.disk.log().is_empty(), "{:?}", h.disk.log());
    // 0 blocks and no data: nothing to do, and no error (SBC-4 5.3).
    assert_eq!(h.exec(&caw(60, 0, false), &mut []), Response::good(0));
    assert!(h.disk.log().is_empty());
}
