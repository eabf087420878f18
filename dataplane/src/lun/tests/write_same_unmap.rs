//! Tests: UNMAP and WRITE SAME (the choice between Unmap, WriteZeroes and
//! a pattern written through scratch memory).

use bdev::{Capabilities, IoOp};

use crate::exec::Response;
use crate::scsi::ScsiError;

use super::harness::{caps, cdb10, cdb16, check, pattern, unmap_cdb, unmap_list, Harness};

#[test]
fn unmap_splits_descriptors_and_checks_the_list() {
    let mut h = Harness::new();
    h.disk.write_blocks(0, &vec![0xFF; 4096 * 512]);
    let mut list = unmap_list(&[(10, 100), (500, 0), (1000, 64), (2000, 1)]);
    assert_eq!(
        h.exec(&unmap_cdb(list.len() as u16), &mut list),
        Response::good(0)
    );
    let mut ops: Vec<_> = h
        .disk
        .log()
        .iter()
        .map(|l| (l.op, l.lba, l.blocks))
        .collect();
    ops.sort_by_key(|o| o.1);
    assert_eq!(
        ops,
        [
            (IoOp::Unmap, 10, 64),
            (IoOp::Unmap, 74, 36),
            (IoOp::Unmap, 1000, 64),
            (IoOp::Unmap, 2000, 1)
        ]
    );
    assert_eq!(h.disk.blocks(10, 100), vec![0; 100 * 512]);
    assert_eq!(h.disk.blocks(110, 1), vec![0xFF; 512]);
    h.disk.clear_log();
    let cases: Vec<(Vec<u8>, u16, Response)> = vec![
        (vec![0; 7], 7, check(ScsiError::ParameterListLengthError)),
        (
            unmap_list(&[(4095, 2)]),
            24,
            check(ScsiError::LbaOutOfRange),
        ),
        (
            unmap_list(&[(0, 1); 9]),
            8 + 9 * 16,
            check(ScsiError::param_byte(2)),
        ),
        (
            unmap_list(&[(0, 2000), (3000, 49)]),
            40,
            check(ScsiError::param_byte(32)),
        ),
        (
            unmap_list(&[(0, 1)])[..20].to_vec(),
            20,
            check(ScsiError::ParameterListLengthError),
        ),
    ];
    for (mut list, len, expected) in cases {
        assert_eq!(h.exec(&unmap_cdb(len), &mut list), expected);
    }
    assert!(h.disk.log().is_empty());
    assert_eq!(
        h.exec(&cdb10(0x42, 1, 0, 24), &mut unmap_list(&[(0, 1)])),
        check(ScsiError::cdb_bit(1, 0))
    );
    // A bdev that cannot unmap: the command does not exist.
    let mut h = Harness::with(
        Capabilities {
            unmap: false,
            ..caps()
        },
        16,
        1,
        |_| {},
    );
    assert_eq!(
        h.exec(&unmap_cdb(24), &mut unmap_list(&[(0, 1)])),
        check(ScsiError::InvalidCommandOperationCode)
    );
}

#[test]
fn write_same_chooses_the_right_operation() {
    let mut h = Harness::new();
    h.disk.write_blocks(0, &vec![0xFF; 4096 * 512]);
    let ops = |h: &Harness| {
        let mut v: Vec<_> = h
            .disk
            .log()
            .iter()
            .map(|l| (l.op, l.lba, l.blocks))
            .collect();
        v.sort_by_key(|o| o.1);
        h.disk.clear_log();
        v
    };
    // Zero block with UNMAP on an LBPRZ device: Unmap.
    assert_eq!(
        h.exec(&cdb10(0x41, 0x08, 0, 100), &mut [0; 512]),
        Response::good(0)
    );
    assert_eq!(ops(&h), [(IoOp::Unmap, 0, 64), (IoOp::Unmap, 64, 36)]);
    // NDOB + UNMAP: Unmap.
    assert_eq!(
        h.exec(&cdb16(0x93, 0x09, 200, 10), &mut []),
        Response::good(0)
    );
    assert_eq!(ops(&h), [(IoOp::Unmap, 200, 10)]);
    // Zero block without UNMAP: WriteZeroes, FUA-free while WCE = 1.
    assert_eq!(
        h.exec(&cdb16(0x93, 0, 300, 70), &mut [0; 512]),
        Response::good(0)
    );
    assert_eq!(
        ops(&h),
        [(IoOp::WriteZeroes, 300, 64), (IoOp::WriteZeroes, 364, 6)]
    );
    assert_eq!(h.disk.blocks(300, 70), vec![0; 70 * 512]);
    // A pattern: written in scratch-chunk pieces (8 blocks).
    let block = pattern(512, 9);
    let mut buf = block.clone();
    buf.extend_from_slice(&[0xEE; 100]); // a longer buffer: its first block is used
    assert_eq!(
        h.exec(&cdb10(0x41, 0x08, 1000, 20), &mut buf),
        Response::good(0)
    );
    assert_eq!(
        ops(&h),
        [
            (IoOp::Write, 1000, 8),
            (IoOp::Write, 1008, 8),
            (IoOp::Write, 1016, 4)
        ]
    );
    assert_eq!(h.disk.blocks(1000, 20), block.repeat(20));
    assert_eq!(h.disk.blocks(1020, 1), vec![0xFF; 512]);
    // Limits and fields.
    assert_eq!(
        h.exec(&cdb10(0x41, 0, 0, 0), &mut [0; 512]),
        check(ScsiError::cdb_byte(7))
    );
    assert_eq!(
        h.exec(&cdb16(0x93, 0, 0, 1025), &mut [0; 512]),
        check(ScsiError::cdb_byte(10))
    );
    assert_eq!(
        h.exec(&cdb16(0x93, 0x10, 0, 1), &mut [0; 512]),
        check(ScsiError::cdb_bit(1, 4))
    );
    assert_eq!(
        h.exec(&cdb16(0x93, 0, 4090, 7), &mut [0; 512]),
        check(ScsiError::LbaOutOfRange)
    );
    assert!(ops(&h).is_empty());
}

#[test]
fn write_same_without_unmap_or_write_zeroes_writes_zeroes() {
    let caps = Capabilities {
        unmap: false,
        unmap_reads_zeroes: false,
        write_zeroes: false,
        ..caps()
    };
    let mut h = Harness::with(caps, 16, 1, |_| {});
    h.disk.write_blocks(0, &vec![0xFF; 64 * 512]);
    assert_eq!(
        h.exec(&cdb16(0x93, 0x09, 4, 12), &mut []),
        Response::good(0)
    );
    assert_eq!(h.disk.blocks(4, 12), vec![0; 12 * 512]);
    assert_eq!(h.disk.blocks(3, 1), vec![0xFF; 512]);
    assert!(h.disk.log().iter().all(|l| l.op == IoOp::Write));
    // LBPRZ = 0 with unmap: UNMAP=1 with zeroes must still read zeroes.
    let caps = Capabilities {
        unmap_reads_zeroes: false,
        ..super::harness::caps()
    };
    let mut h = Harness::with(caps, 16, 1, |_| {});
    assert_eq!(
        h.exec(&cdb10(0x41, 0x08, 0, 4), &mut [0; 512]),
        Response::good(0)
    );
    assert!(h.disk.log().iter().all(|l| l.op == IoOp::WriteZeroes));
}

#[test]
fn write_through_mode_makes_fills_fua() {
    let mut h = Harness::with(caps(), 16, 1, |c| c.write_cache = false);
    assert_eq!(
        h.exec(&cdb16(0x93, 0, 0, 20), &mut [3; 512]),
        Response::good(0)
    );
    assert_eq!(
        h.exec(&cdb16(0x93, 0, 0, 20), &mut [0; 512]),
        Response::good(0)
    );
    assert_eq!(
        h.exec(&cdb16(0x93, 0x08, 0, 20), &mut [0; 512]),
        Response::good(0)
    );
    let log = h.disk.log();
    assert!(log.iter().filter(|l| l.op != IoOp::Unmap).all(|l| l.fua));
    assert!(log.iter().filter(|l| l.op == IoOp::Unmap).all(|l| !l.fua));
    assert!(log.iter().any(|l| l.op == IoOp::Unmap));
}

/// The descriptors staged are the ones validated: the data buffer is the
/// frontend's shared memory, and changing it after the command started
/// (a second descriptor rewritten to wrap past 2^64 while the first is
/// still being unmapped) must change nothing.
#[test]
fn unmap_stages_the_descriptors_it_validated() {
    // Depth 2: the two pieces of the first descriptor fill the port; the
    // second descriptor is staged only after they complete.
    let mut h = Harness::with(caps(), 2, 1, |_| {});
    h.disk.write_blocks(0, &vec![0xFF; 4096 * 512]);
    let mut list = unmap_list(&[(10, 100), (1000, 1)]);
    let len = list.len() as u16;
    h.submit(0, &unmap_cdb(len), &mut list);
    // The peer rewrites the list in the shared buffer.
    let evil = unmap_list(&[(u64::MAX - 1, 4), (u64::MAX - 1, 4)]);
    list.copy_from_slice(&evil);
    h.run();
    assert_eq!(h.take(0), Response::good(0));
    let mut ops: Vec<_> = h
        .disk
        .log()
        .iter()
        .map(|l| (l.op, l.lba, l.blocks))
        .collect();
    ops.sort_by_key(|o| o.1);
    assert_eq!(
        ops,
        [
            (IoOp::Unmap, 10, 64),
            (IoOp::Unmap, 74, 36),
            (IoOp::Unmap, 1000, 1)
        ]
    );
    assert_eq!(h.disk.blocks(1000, 1), vec![0; 512]);
}
