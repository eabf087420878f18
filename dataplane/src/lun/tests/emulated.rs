//! Tests: emulated commands answered through the unit (INQUIRY, READ
//! CAPACITY, MODE SENSE/SELECT, REQUEST SENSE and the commands without data).

use crate::exec::Response;
use crate::scsi::{ControlMode, ScsiError, SenseFormat};

use super::harness::{caps, cdb10, cdb16, check, Harness};

#[test]
fn inquiry_through_split_buffer_and_truncation() {
    let mut h = Harness::new();
    let mut buf = [0xEEu8; 128];
    h.submit_split(3, &[0x12, 0, 0, 0, 0xFF, 0], &mut buf, &[1, 7, 20, 60]);
    h.run();
    assert_eq!(h.take(3), Response::good(96));
    let mut expected = vec![0, 0, 6, 0x12, 91, 0, 0, 2];
    expected.extend_from_slice(b"DATAPLN DATAPLANE DISK  0001");
    expected.resize(58, 0);
    expected.extend_from_slice(&[0x04, 0x60, 0x04, 0xC0]);
    expected.resize(96, 0);
    assert_eq!(&buf[..96], &expected[..]);
    assert_eq!(buf[96], 0xEE);
    // Data buffer shorter than the allocation length and the data.
    let mut small = [0u8; 10];
    assert_eq!(
        h.exec(&[0x12, 0, 0, 0, 0xFF, 0], &mut small),
        Response::good(10)
    );
    assert_eq!(&small[..], &expected[..10]);
    // Allocation length shorter than both.
    let mut buf = [0u8; 64];
    assert_eq!(h.exec(&[0x12, 0, 0, 0, 4, 0], &mut buf), Response::good(4));
    // Serial number derived from nothing else: the configured lu_id.
    let mut buf = [0u8; 64];
    assert_eq!(
        h.exec(&[0x12, 1, 0x80, 0, 64, 0], &mut buf),
        Response::good(20)
    );
    assert_eq!(&buf[..20], b"\x00\x80\x00\x101122334455667788");
    // No buffer at all.
    assert_eq!(
        h.exec(&[0x12, 0, 0, 0, 0xFF, 0], &mut []),
        Response::good(0)
    );
}

#[test]
fn read_capacity_through_unit_reflects_exposed_blocks() {
    let mut h = Harness::with(caps(), 16, 1, |c| c.num_blocks = 1000);
    let mut buf = [0u8; 8];
    assert_eq!(
        h.exec(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &mut buf),
        Response::good(8)
    );
    assert_eq!(buf, [0, 0, 0x03, 0xE7, 0, 0, 2, 0]);
    let mut buf = [0u8; 32];
    let mut rc16 = cdb16(0x9E, 0x10, 0, 32);
    assert_eq!(h.exec(&rc16, &mut buf), Response::good(32));
    assert_eq!(
        &buf[..16],
        [0, 0, 0, 0, 0, 0, 0x03, 0xE7, 0, 0, 2, 0, 0x10, 0, 0xC0, 0]
    );
    rc16[13] = 0;
    assert_eq!(h.exec(&rc16, &mut buf), Response::good(0));
    // LBPME = 1 above, so GET LBA STATUS answers: the rest of the exposed
    // blocks, mapped or unknown.
    let mut buf = [0xEEu8; 32];
    assert_eq!(
        h.exec(&cdb16(0x9E, 0x12, 990, 32), &mut buf),
        Response::good(24)
    );
    assert_eq!(
        buf[..24],
        [0, 0, 0, 20, 0, 0, 0, 0x06, 0, 0, 0, 0, 0, 0, 0x03, 0xDE, 0, 0, 0, 10, 0, 0, 0, 0]
    );
    assert_eq!(
        h.exec(&cdb16(0x9E, 0x12, 1000, 32), &mut buf),
        check(ScsiError::LbaOutOfRange)
    );
    // The range check uses the exposed size.
    assert_eq!(
        h.exec(&cdb10(0x28, 0, 1000, 1), &mut [0; 512]),
        check(ScsiError::LbaOutOfRange)
    );
}

#[test]
fn mode_select_switches_sense_format_and_write_cache() {
    let mut h = Harness::new();
    let bad = [0xFFu8, 0, 0, 0, 0, 0];
    assert_eq!(
        h.exec(&bad, &mut []).sense_bytes(),
        [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0]
    );
    // Read the current control page and set D_SENSE.
    let mut page = [0u8; 16];
    assert_eq!(
        h.exec(&[0x1A, 0x08, 0x0A, 0, 16, 0], &mut page),
        Response::good(16)
    );
    let mut list = page;
    list[0] = 0;
    list[4 + 2] |= 0x04;
    assert_eq!(
        h.exec(&[0x15, 0x10, 0, 0, 16, 0], &mut list),
        Response::good(0)
    );
    assert_eq!(h.lun.sense_format(), SenseFormat::Descriptor);
    assert_eq!(
        h.exec(&bad, &mut []).sense_bytes(),
        [0x72, 5, 0x20, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        h.exec(&cdb10(0x28, 0x20, 0, 1), &mut []).sense_bytes(),
        [0x72, 5, 0x24, 0, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xCF, 0, 1, 0]
    );
    // Turn the write cache off: writes become FUA.
    let mut caching = [0u8; 24];
    assert_eq!(
        h.exec(&[0x1A, 0x08, 0x08, 0, 24, 0], &mut caching),
        Response::good(24)
    );
    caching[0] = 0;
    caching[4 + 2] &= !0x04;
    assert_eq!(
        h.exec(&[0x15, 0x10, 0, 0, 24, 0], &mut caching),
        Response::good(0)
    );
    assert!(!h.lun.mode().current.write_cache);
    h.disk.clear_log();
    assert_eq!(
        h.exec(&cdb10(0x2A, 0, 5, 1), &mut [1; 512]),
        Response::good(0)
    );
    assert!(h.disk.log()[0].fua);
    // A parameter list shorter than the CDB says: INVALID FIELD IN CDB.
    assert_eq!(
        h.exec(&[0x15, 0x10, 0, 0, 24, 0], &mut [0; 20])
            .sense_bytes(),
        [0x72, 5, 0x24, 0, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xC0, 0, 4, 0]
    );
    // A bad list changes nothing and reports the field.
    let mut list = [0u8; 16];
    list[4..16].copy_from_slice(&page[4..16]);
    list[4 + 3] = 0;
    assert_eq!(
        h.exec(&[0x15, 0x10, 0, 0, 16, 0], &mut list).sense_bytes(),
        [0x72, 5, 0x26, 0, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0x8C, 0, 7, 0]
    );
    assert_eq!(h.lun.sense_format(), SenseFormat::Descriptor);
}

/// The Control mode page reports what the kernel's target core does (it
/// runs task sets, QErr and TAS, not the unit): SCST registered with tst 1,
/// tas 0, qerr 1, swp 1, whose core keeps the sense format of its own
/// errors, so D_SENSE is not changeable there.
#[test]
fn control_page_reports_the_configured_task_set_model() {
    let control = ControlMode {
        tst: 1,
        queue_alg: 0,
        qerr: 1,
        tas: false,
        swp: true,
        d_sense_changeable: false,
    };
    let mut h = Harness::with(caps(), 16, 1, |c| c.control = control);
    let mut page = [0u8; 16];
    assert_eq!(
        h.exec(&[0x1A, 0x08, 0x0A, 0, 16, 0], &mut page),
        Response::good(16)
    );
    // WP in the header (SWP), TST 001b, QAM 0 with QERR 01b, SWP, TAS 0.
    assert_eq!(
        page,
        [15, 0, 0x90, 0, 0x0A, 10, 0x20, 0x02, 0x08, 0, 0, 0, 0xFF, 0xFF, 0, 0]
    );
    assert_eq!(
        h.exec(&[0x1A, 0x08, 0x4A, 0, 16, 0], &mut page),
        Response::good(16)
    );
    assert_eq!(page[4..], [0x0A, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // Changing D_SENSE: the bit is not changeable.
    assert_eq!(
        h.exec(&[0x1A, 0x08, 0x0A, 0, 16, 0], &mut page),
        Response::good(16)
    );
    let mut list = page;
    list[0] = 0;
    list[2] = 0;
    list[4 + 2] |= 0x04;
    assert_eq!(
        h.exec(&[0x15, 0x10, 0, 0, 16, 0], &mut list),
        check(ScsiError::param_bit(6, 2))
    );
    assert_eq!(h.lun.sense_format(), SenseFormat::Fixed);
    // Sending the page back unchanged is fine.
    let mut list = page;
    list[0] = 0;
    list[2] = 0;
    assert_eq!(
        h.exec(&[0x15, 0x10, 0, 0, 16, 0], &mut list),
        Response::good(0)
    );
    // SWP: the unit is write protected, as the core treats it.
    assert_eq!(
        h.exec(&cdb10(0x2A, 0, 0, 1), &mut [0; 512]),
        check(ScsiError::WriteProtected)
    );
    // The default model is LIO's (TCMU): TST 000b, QAM 1, TAS 1.
    let mut h = Harness::new();
    assert_eq!(
        h.exec(&[0x1A, 0x08, 0x0A, 0, 16, 0], &mut page),
        Response::good(16)
    );
    assert_eq!(page[4 + 2..4 + 6], [0, 0x10, 0, 0x40]);
}

#[test]
fn descriptor_sense_by_configuration() {
    let mut h = Harness::with(caps(), 16, 1, |c| c.sense_format = SenseFormat::Descriptor);
    assert_eq!(
        h.exec(&cdb10(0x28, 0, 4096, 1), &mut [0; 512])
            .sense_bytes(),
        [0x72, 5, 0x21, 0, 0, 0, 0, 0]
    );
    let mut page = [0u8; 16];
    assert_eq!(
        h.exec(&[0x1A, 0x08, 0x0A, 0, 16, 0], &mut page),
        Response::good(16)
    );
    assert_eq!(page[4 + 2], 0x04);
}

#[test]
fn request_sense_and_simple_commands() {
    let mut h = Harness::new();
    let mut buf = [0xEEu8; 32];
    assert_eq!(
        h.exec(&[0x03, 0, 0, 0, 32, 0], &mut buf),
        Response::good(18)
    );
    assert_eq!(
        &buf[..18],
        [0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(h.exec(&[0, 0, 0, 0, 0, 0], &mut []), Response::good(0));
    assert_eq!(h.exec(&[0x1B, 1, 0, 0, 1, 0], &mut []), Response::good(0));
    assert_eq!(
        h.exec(&[0x1B, 0, 0, 0, 3, 0], &mut []),
        check(ScsiError::cdb_bit(4, 1))
    );
    assert_eq!(h.exec(&[0x1E, 0, 0, 0, 1, 0], &mut []), Response::good(0));
    assert!(h.disk.log().is_empty());
}
