//! Tests: VERIFY and WRITE AND VERIFY (medium verification and the byte
//! check modes).

use bdev::{IoError, IoOp};

use crate::exec::Response;
use crate::scsi::ScsiError;

use super::harness::{cdb10, cdb16, check, pattern, Harness};

#[test]
fn verify_byte_check_modes() {
    let mut h = Harness::new();
    let data = pattern(20 * 512, 21);
    h.disk.write_blocks(50, &data);
    // BYTCHK 01b, matching and miscomparing (across scratch pieces).
    let mut buf = data.clone();
    assert_eq!(
        h.exec(&cdb10(0x2F, 0x02, 50, 20), &mut buf),
        Response::good(0)
    );
    buf[17 * 512 + 100] ^= 0xFF;
    assert_eq!(
        h.exec(&cdb16(0x8F, 0x02, 50, 20), &mut buf),
        check(ScsiError::Miscompare {
            offset: 17 * 512 + 100
        })
    );
    // BYTCHK 00b: medium verification reads the range.
    h.disk.clear_log();
    assert_eq!(h.exec(&cdb10(0x2F, 0, 50, 20), &mut []), Response::good(0));
    assert_eq!(h.disk.log().iter().map(|l| l.blocks).sum::<u32>(), 20);
    h.disk.fault(IoOp::Read, 60, 61, IoError::Read(5));
    assert_eq!(
        h.exec(&cdb10(0x2F, 0, 50, 20), &mut []),
        check(ScsiError::UnrecoveredReadError)
    );
    // BYTCHK 11b: one block compared with every block of the range.
    let block = pattern(512, 22);
    h.disk.write_blocks(200, &block.repeat(12));
    let mut one = block.clone();
    assert_eq!(
        h.exec(&cdb10(0x2F, 0x06, 200, 12), &mut one),
        Response::good(0)
    );
    let mut other = block.clone();
    other[0] ^= 1;
    h.disk.write_blocks(210, &other);
    assert_eq!(
        h.exec(&cdb16(0x8F, 0x06, 200, 12), &mut one),
        check(ScsiError::Miscompare { offset: 10 * 512 })
    );
    // BYTCHK 10b is reserved.
    assert_eq!(
        h.exec(&cdb10(0x2F, 0x04, 0, 1), &mut one),
        check(ScsiError::cdb_bit(1, 2))
    );
}

#[test]
fn write_and_verify() {
    let mut h = Harness::new();
    let data = pattern(10 * 512, 31);
    let mut buf = data.clone();
    assert_eq!(
        h.exec(&cdb10(0x2E, 0x02, 300, 10), &mut buf),
        Response::good(0)
    );
    assert_eq!(h.disk.blocks(300, 10), data);
    let log = h.disk.log();
    assert_eq!(
        (log[0].op, log[0].fua, log[0].blocks),
        (IoOp::Write, true, 10)
    );
    assert_eq!(
        log[1..]
            .iter()
            .map(|l| (l.op, l.lba, l.blocks))
            .collect::<Vec<_>>(),
        [(IoOp::Read, 300, 8), (IoOp::Read, 308, 2)]
    );
    h.disk.clear_log();
    assert_eq!(
        h.exec(&cdb16(0x8E, 0, 400, 3), &mut buf[..3 * 512]),
        Response::good(0)
    );
    assert_eq!(h.disk.log().len(), 2);
    // A write error stops before the verification.
    h.disk.clear_log();
    h.disk.fault(IoOp::Write, 500, 501, IoError::Write(5));
    assert_eq!(
        h.exec(&cdb10(0x2E, 0x02, 500, 1), &mut buf[..512]),
        check(ScsiError::WriteError)
    );
    assert_eq!(h.disk.log().len(), 1);
    assert_eq!(
        h.exec(&cdb10(0x2E, 0x06, 0, 1), &mut buf[..512]),
        check(ScsiError::cdb_bit(1, 2))
    );
}
