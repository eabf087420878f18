//! Tests: the durability order at the unit (the bdev crate's durability
//! contract seen from SCSI). A FUA write reaches the bdev as a write with
//! `fua`; no write is answered before the bdev completed it; SYNCHRONIZE
//! CACHE's flush is submitted after the writes it covers completed, and
//! its GOOD comes only after the flush completed; with the write cache off
//! every write is FUA. Last, the same over the real `file` bdev.

use bdev::{Bdev, FileBdev, FileOptions, IoOp, IoVec};
use reactor::Poller;
use test_support::skip::{can_run, Need};

use crate::exec::{CommandExecutor, Response};
use crate::port::{port_pair, BdevPoller};

use super::super::{Lun, LunConfig};
use super::harness::{caps, cdb10, cdb16, pattern, Harness};

/// Steps `h` a few times with the bdev holding every completion.
fn step_held(h: &mut Harness) {
    for _ in 0..10 {
        h.step();
    }
}

#[test]
fn a_fua_write_reaches_the_bdev_as_fua_and_good_waits_for_it() {
    let mut h = Harness::new();
    h.disk.set_hold(true);
    let mut data = pattern(8 * 512, 3);
    h.submit(1, &cdb10(0x2A, 0x08, 40, 8), &mut data);
    step_held(&mut h);
    assert!(
        h.responses.is_empty(),
        "GOOD before the bdev completed the write"
    );
    let log = h.disk.log();
    assert_eq!(
        log.iter().map(|l| (l.op, l.lba, l.fua)).collect::<Vec<_>>(),
        [(IoOp::Write, 40, true)]
    );
    h.disk.set_hold(false);
    h.run();
    assert_eq!(h.take(1), Response::good(0));
    // WRITE (16) with FUA, and a plain WRITE (10) without.
    let mut data = pattern(512, 4);
    assert_eq!(
        h.exec(&cdb16(0x8A, 0x08, 7, 1), &mut data),
        Response::good(0)
    );
    assert_eq!(h.exec(&cdb10(0x2A, 0, 8, 1), &mut data), Response::good(0));
    let fua: Vec<_> = h.disk.log().iter().map(|l| l.fua).collect();
    assert_eq!(fua, [true, true, false]);
}

#[test]
fn synchronize_cache_flushes_after_the_writes_and_answers_after_the_flush() {
    let mut h = Harness::new();
    let mut data = pattern(8 * 512, 5);
    assert_eq!(h.exec(&cdb10(0x2A, 0, 0, 8), &mut data), Response::good(0));
    assert_eq!(h.exec(&cdb10(0x2A, 0, 64, 8), &mut data), Response::good(0));
    h.disk.set_hold(true);
    h.submit(2, &cdb10(0x35, 0, 0, 0), &mut []);
    step_held(&mut h);
    assert!(h.responses.is_empty(), "GOOD before the flush completed");
    let log = h.disk.log();
    assert_eq!(
        log.iter().map(|l| l.op).collect::<Vec<_>>(),
        [IoOp::Write, IoOp::Write, IoOp::Flush]
    );
    assert_eq!(
        log[2].in_flight, 0,
        "the flush came after the writes completed"
    );
    h.disk.set_hold(false);
    h.run();
    assert_eq!(h.take(2), Response::good(0));
}

#[test]
fn with_the_write_cache_off_every_write_is_fua() {
    let mut h = Harness::with(caps(), 16, 1, |config| config.write_cache = false);
    let mut data = pattern(512, 6);
    assert_eq!(h.exec(&cdb10(0x2A, 0, 3, 1), &mut data), Response::good(0));
    assert!(h.disk.log()[0].fua);
}

/// Runs one command to its response over a real bdev.
fn exec(lun: &mut Lun, poller: &mut BdevPoller, cdb: &[u8], buf: &mut [u8]) -> Response {
    let iovs = [IoVec::from_slice(buf)];
    let iovs: &[IoVec] = if iovs[0].len == 0 { &[] } else { &iovs };
    // SAFETY: `buf` outlives the command, which completes in the loop.
    unsafe { lun.submit(0, cdb, iovs) };
    let mut got = None;
    for _ in 0..1_000_000 {
        lun.flush();
        poller.poll();
        lun.poll(1, &mut |_, r| got = Some(*r));
        if let Some(response) = got {
            return response;
        }
    }
    panic!("no response");
}

#[test]
fn over_the_file_bdev_data_survives_reopening_after_sync_cache() {
    if !can_run(&[Need::IoUring]) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("lun-file-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let mut options = FileOptions::new(dir.path().join("disk"));
    options.size = Some(1 << 20);
    let data = pattern(8 * 512, 7);
    {
        let file = FileBdev::open("f", options.clone()).unwrap();
        let config = LunConfig::for_bdev(&file);
        assert!(config.write_cache, "a file has a volatile cache: WCE on");
        let (port, end) = port_pair(8).unwrap();
        let mut poller = BdevPoller::new("f", file.open_channel(8).unwrap(), 8);
        poller.attach(end).unwrap();
        let mut lun = Lun::new(config, port).unwrap();
        let (l, p) = (&mut lun, &mut poller);
        assert_eq!(
            exec(l, p, &cdb10(0x2A, 0, 16, 8), &mut data.clone()),
            Response::good(0)
        );
        assert_eq!(
            exec(l, p, &cdb10(0x35, 0, 0, 0), &mut []),
            Response::good(0)
        );
        // READ CAPACITY (16): the filesystem's block as the physical block.
        let mut rc = [0u8; 32];
        assert_eq!(
            exec(
                l,
                p,
                &[0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
                &mut rc
            ),
            Response::good(32)
        );
        let exponent = file.topology().physical_block_exponent(512);
        assert_eq!(u32::from(rc[13] & 0x0F), exponent);
        assert_eq!(rc[14] & 0xC0, 0xC0, "LBPME and LBPRZ");
        // Block Limits: the filesystem block as the unmap granularity.
        let mut b0 = [0u8; 64];
        let inquiry = [0x12, 0x01, 0xB0, 0, 64, 0];
        assert_eq!(exec(l, p, &inquiry, &mut b0), Response::good(64));
        let granularity = file.topology().unmap_granularity_blocks;
        assert_eq!(b0[28..32], granularity.to_be_bytes());
        // The Caching mode page: WCE set.
        let mut caching = [0u8; 24];
        let sense = [0x1A, 0x08, 0x08, 0, 24, 0];
        assert_eq!(exec(l, p, &sense, &mut caching), Response::good(24));
        assert_eq!((caching[4], caching[6] & 0x04), (0x08, 0x04));
    }
    let file = FileBdev::open("f", options).unwrap();
    let mut ch = file.open_channel(1).unwrap();
    let mut back = vec![0u8; 8 * 512 + 4096];
    let offset = back.as_ptr().align_offset(4096);
    let buf = &mut back[offset..offset + 8 * 512];
    let iov = [IoVec::from_slice(buf)];
    // SAFETY: `back` and `iov` outlive the request, which completes below.
    let sgl = unsafe { bdev::SgList::from_slice(&iov) };
    ch.submit(bdev::IoRequest::new(IoOp::Read, 16, 8, sgl, 0))
        .unwrap();
    while ch.in_flight() > 0 {
        ch.poll(&mut |c| assert_eq!(c.result, Ok(())));
    }
    assert_eq!(&back[offset..offset + 8 * 512], &data[..]);
}
