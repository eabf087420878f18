//! Tests: READ, WRITE and SYNCHRONIZE CACHE, data buffers of every shape,
//! limits, write protection and bdev errors.

use bdev::{Capabilities, IoError, IoOp};

use crate::exec::{status, Response};
use crate::scsi::ScsiError;

use super::harness::{caps, caw, cdb10, cdb16, check, pattern, unmap_cdb, unmap_list, Harness};

#[test]
fn write_then_read_with_fua_and_split_buffers() {
    let mut h = Harness::new();
    let data = pattern(4 * 512, 7);
    let mut out = data.clone();
    h.submit_split(1, &cdb10(0x2A, 0x08, 100, 4), &mut out, &[100, 513, 1500]);
    h.run();
    assert_eq!(h.take(1), Response::good(0));
    assert_eq!(h.disk.blocks(100, 4), data);
    let mut back = vec![0u8; 4 * 512];
    h.submit_split(2, &cdb16(0x88, 0, 100, 4), &mut back, &[1, 2, 2047]);
    h.run();
    assert_eq!(h.take(2), Response::good(2048));
    assert_eq!(back, data);
    let log = h.disk.log();
    assert_eq!(
        log.iter()
            .map(|l| (l.op, l.lba, l.blocks, l.fua))
            .collect::<Vec<_>>(),
        [(IoOp::Write, 100, 4, true), (IoOp::Read, 100, 4, false)]
    );
    // READ (6) with 0 = 256 blocks and WRITE (12).
    let mut big = vec![0u8; 256 * 512];
    assert_eq!(
        h.exec(&[0x08, 0, 0, 0, 0, 0], &mut big),
        Response::good(256 * 512)
    );
    let mut w12 = [0u8; 12];
    w12[0] = 0xAA;
    w12[5] = 9;
    w12[9] = 1;
    assert_eq!(h.exec(&w12, &mut [0x5A; 512]), Response::good(0));
    assert_eq!(h.disk.blocks(9, 1), vec![0x5A; 512]);
    assert!(!h.disk.log().last().unwrap().fua);
}

#[test]
fn zero_length_transfers_do_no_io() {
    let mut h = Harness::new();
    for cdb in [
        cdb10(0x28, 0, 5, 0),
        cdb10(0x2A, 0, 5, 0),
        cdb10(0x2E, 0x02, 5, 0),
        cdb10(0x2F, 0x02, 5, 0),
    ] {
        assert_eq!(h.exec(&cdb, &mut []), Response::good(0));
    }
    assert_eq!(h.exec(&caw(5, 0, false), &mut []), Response::good(0));
    assert_eq!(h.exec(&unmap_cdb(0), &mut []), Response::good(0));
    assert_eq!(
        h.exec(&unmap_cdb(8), &mut unmap_list(&[])),
        Response::good(0)
    );
    assert_eq!(
        h.exec(&unmap_cdb(24), &mut unmap_list(&[(7, 0)])),
        Response::good(0)
    );
    assert!(h.disk.log().is_empty());
    // But the LBA is still checked.
    assert_eq!(
        h.exec(&cdb10(0x28, 0, 4096, 0), &mut []),
        check(ScsiError::LbaOutOfRange)
    );
}

#[test]
fn short_read_buffer_reads_whole_blocks_that_fit() {
    let mut h = Harness::new();
    let data = pattern(8 * 512, 3);
    h.disk.write_blocks(10, &data);
    let mut buf = vec![0xEEu8; 3 * 512 + 100];
    assert_eq!(
        h.exec(&cdb10(0x28, 0, 10, 8), &mut buf),
        Response::good(3 * 512)
    );
    assert_eq!(&buf[..3 * 512], &data[..3 * 512]);
    assert_eq!(&buf[3 * 512..], &[0xEE; 100][..]);
    assert_eq!(h.disk.log()[0].blocks, 3);
    // Less than a block: nothing.
    let mut tiny = [0xEEu8; 100];
    assert_eq!(h.exec(&cdb10(0x28, 0, 10, 8), &mut tiny), Response::good(0));
    assert_eq!(tiny, [0xEE; 100]);
    // A longer buffer reads only the CDB's blocks.
    let mut long = vec![0xEEu8; 4 * 512];
    assert_eq!(
        h.exec(&cdb10(0x28, 0, 10, 2), &mut long),
        Response::good(1024)
    );
    assert_eq!(&long[1024..], &vec![0xEE; 1024][..]);
}

#[test]
fn short_write_buffers_are_rejected_before_any_io() {
    let mut h = Harness::new();
    let cases: Vec<(Vec<u8>, usize, Response)> = vec![
        (
            cdb10(0x2A, 0, 0, 2).to_vec(),
            1023,
            check(ScsiError::cdb_byte(7)),
        ),
        (
            vec![0x0A, 0, 0, 0, 2, 0],
            512,
            check(ScsiError::cdb_byte(4)),
        ),
        (
            cdb16(0x8A, 0, 0, 2).to_vec(),
            0,
            check(ScsiError::cdb_byte(10)),
        ),
        (
            cdb10(0x2E, 0, 0, 2).to_vec(),
            1000,
            check(ScsiError::cdb_byte(7)),
        ),
        (
            cdb10(0x2F, 0x02, 0, 2).to_vec(),
            1000,
            check(ScsiError::cdb_byte(7)),
        ),
        (
            cdb10(0x2F, 0x06, 0, 2).to_vec(),
            511,
            check(ScsiError::cdb_byte(7)),
        ),
        (
            caw(0, 2, false).to_vec(),
            2047,
            check(ScsiError::cdb_byte(13)),
        ),
        (
            cdb10(0x41, 0, 0, 4).to_vec(),
            511,
            check(ScsiError::InvalidFieldInCdb(None)),
        ),
        (unmap_cdb(24).to_vec(), 23, check(ScsiError::cdb_byte(7))),
    ];
    for (cdb, len, expected) in cases {
        let mut buf = vec![0x77u8; len];
        assert_eq!(h.exec(&cdb, &mut buf), expected, "{cdb:02x?}");
    }
    assert!(h.disk.log().is_empty());
    // VERIFY BYTCHK=0 and WRITE SAME with NDOB need no buffer.
    assert_eq!(h.exec(&cdb10(0x2F, 0, 0, 2), &mut []), Response::good(0));
    assert_eq!(h.exec(&cdb16(0x93, 0x01, 0, 2), &mut []), Response::good(0));
}

#[test]
fn transfer_limit_is_enforced() {
    let mut h = Harness::new();
    let mut buf = vec![0u8; 257 * 512];
    assert_eq!(
        h.exec(&cdb10(0x28, 0, 0, 257), &mut buf),
        check(ScsiError::cdb_byte(7))
    );
    assert_eq!(
        h.exec(&cdb16(0x8F, 0, 0, 257), &mut buf),
        check(ScsiError::cdb_byte(10))
    );
    assert_eq!(
        h.exec(&cdb10(0x28, 0, 0, 256), &mut buf),
        Response::good(256 * 512)
    );
}

#[test]
fn read_only_unit_protects_writes() {
    let mut h = Harness::with(caps(), 16, 1, |c| c.read_only = true);
    let mut buf = vec![0u8; 512];
    for cdb in [
        cdb10(0x2A, 0, 0, 1).to_vec(),
        cdb10(0x2E, 0, 0, 1).to_vec(),
        cdb10(0x41, 0, 0, 1).to_vec(),
        unmap_cdb(24).to_vec(),
        caw(0, 1, false).to_vec(),
        vec![0x0A, 0, 0, 0, 1, 0],
    ] {
        assert_eq!(
            h.exec(&cdb, &mut buf).sense_bytes(),
            [0x70, 0, 7, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x27, 0, 0, 0, 0, 0]
        );
    }
    assert_eq!(h.exec(&cdb10(0x28, 0, 0, 1), &mut buf), Response::good(512));
    let mut mode = [0u8; 4];
    assert_eq!(
        h.exec(&[0x1A, 0x08, 0x3F, 0, 4, 0], &mut mode),
        Response::good(4)
    );
    assert_eq!(mode[2], 0x90);
}

#[test]
fn synchronize_cache_flushes() {
    let mut h = Harness::new();
    assert_eq!(h.exec(&cdb10(0x35, 0x02, 0, 0), &mut []), Response::good(0));
    assert_eq!(h.exec(&cdb16(0x91, 0, 8, 16), &mut []), Response::good(0));
    assert_eq!(h.exec(&cdb16(0x91, 0, 8, 0), &mut []), Response::good(0));
    assert_eq!(
        h.disk
            .log()
            .iter()
            .map(|l| (l.op, l.lba, l.blocks))
            .collect::<Vec<_>>(),
        [
            (IoOp::Flush, 0, 0),
            (IoOp::Flush, 8, 16),
            (IoOp::Flush, 0, 0)
        ]
    );
    // IMMED is ignored: GOOD only after the flush completed.
    h.disk.set_hold(true);
    h.submit(0, &cdb10(0x35, 0x02, 0, 0), &mut []);
    for _ in 0..10 {
        h.step();
    }
    assert!(h.responses.is_empty());
    h.disk.set_hold(false);
    h.run();
    assert_eq!(h.take(0), Response::good(0));
    // A flush error is reported.
    h.disk.fault(IoOp::Flush, 0, u64::MAX, IoError::Write(5));
    assert_eq!(
        h.exec(&cdb10(0x35, 0, 0, 0), &mut []),
        check(ScsiError::WriteError)
    );
    // Without a volatile cache there is nothing to flush.
    let mut h = Harness::with(
        Capabilities {
            volatile_cache: false,
            ..caps()
        },
        16,
        1,
        |_| {},
    );
    assert_eq!(h.exec(&cdb10(0x35, 0, 0, 0), &mut []), Response::good(0));
    assert!(h.disk.log().is_empty());
}

#[test]
fn bdev_errors_map_to_sense() {
    let mut h = Harness::new();
    let cases = [
        (
            IoError::Read(5),
            IoOp::Read,
            check(ScsiError::UnrecoveredReadError),
        ),
        (IoError::Write(5), IoOp::Write, check(ScsiError::WriteError)),
        (
            IoError::OutOfRange,
            IoOp::Read,
            check(ScsiError::LbaOutOfRange),
        ),
        (
            IoError::Aborted,
            IoOp::Write,
            check(ScsiError::AbortedCommand),
        ),
        (
            IoError::NoResources,
            IoOp::Read,
            Response::with_status(status::BUSY),
        ),
        (
            IoError::Unsupported,
            IoOp::Write,
            check(ScsiError::InvalidCommandOperationCode),
        ),
        (IoError::TooLarge, IoOp::Read, check(ScsiError::cdb_byte(7))),
        (
            IoError::ShortBuffer,
            IoOp::Write,
            check(ScsiError::cdb_byte(7)),
        ),
    ];
    for (i, (error, op, expected)) in cases.into_iter().enumerate() {
        let lba = 10 * i as u32;
        h.disk.fault(op, u64::from(lba), u64::from(lba) + 1, error);
        let code = if op == IoOp::Read { 0x28 } else { 0x2A };
        assert_eq!(
            h.exec(&cdb10(code, 0, lba, 2), &mut [0; 1024]),
            expected,
            "{error:?}"
        );
    }
    assert_eq!(
        check(ScsiError::UnrecoveredReadError).sense_bytes(),
        [0x70, 0, 3, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x11, 0, 0, 0, 0, 0]
    );
    // READ (16) points at its own transfer length field.
    h.disk.fault(IoOp::Read, 900, 901, IoError::TooLarge);
    assert_eq!(
        h.exec(&cdb16(0x88, 0, 900, 1), &mut [0; 512]),
        check(ScsiError::cdb_byte(10))
    );
}

#[test]
fn multi_request_command_waits_for_all_and_reports_first_error() {
    let mut h = Harness::with(caps(), 16, 3, |_| {});
    h.disk.state().shuffle = false;
    h.disk.fault(IoOp::WriteZeroes, 64, 65, IoError::Write(5));
    h.disk.fault(IoOp::WriteZeroes, 128, 129, IoError::Aborted);
    // 4 pieces of 64 blocks: the second fails first (FIFO completion).
    assert_eq!(
        h.exec(&cdb16(0x93, 0, 0, 256), &mut [0; 512]),
        check(ScsiError::WriteError)
    );
    assert_eq!(h.disk.log().len(), 4);
    assert_eq!(h.lun.outstanding_requests(), 0);
}
