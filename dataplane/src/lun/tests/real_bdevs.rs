//! Tests: the unit over the real null and ram bdevs.

use bdev::{Bdev, IoVec};
use reactor::Poller;

use crate::exec::{CommandExecutor, Response};
use crate::port::{port_pair, BdevPoller};
use crate::scsi::ScsiError;

use super::super::{Lun, LunConfig};
use super::harness::{caw, cdb10, cdb16, check, pattern, unmap_cdb, unmap_list};

#[test]
fn works_over_the_null_bdev() {
    let null = bdev::null::NullBdev::new("null", 4096, 1 << 16).unwrap();
    let config = LunConfig::for_bdev(&null);
    let (port, end) = port_pair(32).unwrap();
    let mut poller = BdevPoller::new("null", null.open_channel(32).unwrap(), 32);
    poller.attach(end).unwrap();
    let mut lun = Lun::new(config, port).unwrap();
    let mut buf = vec![0u8; 8 * 4096];
    // SAFETY: `buf` outlives the command, which completes below.
    unsafe { lun.submit(0, &cdb10(0x28, 0, 0, 8), &[IoVec::from_slice(&mut buf)]) };
    // SAFETY: as above.
    unsafe { lun.submit(1, &cdb10(0x35, 0, 0, 0), &[]) };
    let mut got = Vec::new();
    for _ in 0..10 {
        lun.flush();
        poller.poll();
        lun.poll(16, &mut |s, r| got.push((s, *r)));
    }
    got.sort_by_key(|g| g.0);
    assert_eq!(got, [(0, Response::good(8 * 4096)), (1, Response::good(0))]);
    assert_eq!(lun.unit().num_blocks, 1 << 16);
}

/// Runs one command on a unit over a real bdev.
fn exec_on(lun: &mut Lun, poller: &mut BdevPoller, cdb: &[u8], buf: &mut [u8]) -> Response {
    // SAFETY: `buf` outlives the command, which completes in the loop.
    unsafe { lun.submit(0, cdb, &[IoVec::from_slice(buf)]) };
    let mut got = None;
    for _ in 0..1000 {
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
fn works_over_the_ram_bdev() {
    let ram = bdev::ram::RamBdev::new("ram", 512, 2048).unwrap();
    let mut config = LunConfig::for_bdev(&ram);
    config.max_compare_write_blocks = 8;
    let (port, end) = port_pair(32).unwrap();
    let mut poller = BdevPoller::new("ram", ram.open_channel(32).unwrap(), 32);
    poller.attach(end).unwrap();
    let mut lun = Lun::new(config, port).unwrap();
    let l = &mut lun;
    let p = &mut poller;
    let data = pattern(16 * 512, 51);
    assert_eq!(
        exec_on(l, p, &cdb10(0x2A, 0x08, 100, 16), &mut data.clone()),
        Response::good(0)
    );
    let mut back = vec![0u8; 16 * 512];
    assert_eq!(
        exec_on(l, p, &cdb16(0x88, 0, 100, 16), &mut back),
        Response::good(16 * 512)
    );
    assert_eq!(back, data);
    // VERIFY, COMPARE AND WRITE, WRITE SAME and UNMAP against real memory.
    assert_eq!(
        exec_on(l, p, &cdb10(0x2F, 0x02, 100, 16), &mut data.clone()),
        Response::good(0)
    );
    let mut caw_buf = data[..8 * 512].to_vec();
    caw_buf.extend_from_slice(&[0x33; 8 * 512]);
    assert_eq!(
        exec_on(l, p, &caw(100, 8, false), &mut caw_buf),
        Response::good(0)
    );
    assert_eq!(
        exec_on(l, p, &caw(100, 8, false), &mut caw_buf),
        check(ScsiError::Miscompare { offset: 0 })
    );
    let block = pattern(512, 52);
    assert_eq!(
        exec_on(l, p, &cdb16(0x93, 0, 200, 300), &mut block.clone()),
        Response::good(0)
    );
    assert_eq!(
        exec_on(l, p, &cdb10(0x2F, 0x06, 200, 300), &mut block.clone()),
        Response::good(0)
    );
    let mut list = unmap_list(&[(200, 300)]);
    assert_eq!(exec_on(l, p, &unmap_cdb(24), &mut list), Response::good(0));
    let mut zeroes = vec![0xEEu8; 300 * 512];
    assert_eq!(
        exec_on(l, p, &cdb10(0x28, 0, 200, 300), &mut zeroes),
        Response::good(300 * 512)
    );
    if lun.unit().lbprz() {
        assert!(zeroes.iter().all(|&b| b == 0));
    }
    assert_eq!(
        exec_on(&mut lun, &mut poller, &cdb10(0x35, 0, 0, 0), &mut []),
        Response::good(0)
    );
}
