//! Handing a registered device over (the fd passed to a successor) while
//! an initiator keeps writing and reading: the device quiesces, the
//! kernel's cached buffers are flushed from another thread, the device
//! drains, and a new device (its own pool and LUN over the same bdev) on a
//! duplicate of the fd serves on. The simulated kernel never releases the
//! device, nothing but BUSY (which initiators retry) is ever seen, and
//! every block reads back what was last written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bdev::ram::RamBdev;
use bdev::BdevRef;
use dataplane::exec::status;
use dataplane::lun::{Lun, LunConfig};
use dataplane::port::port_pair;
use dataplane::scst::abi::*;
use dataplane::scst::device::{ScstDevice, ScstDeviceConfig};
use dataplane::scst::driver::ScstDriver;
use sim::scst::{ScstSimConfig, ScstSimDriver, SimData};
use test_support::scst::options;

use super::device::{cdb10, offered_pool, Rig};

const BS: usize = 4096;
const BLOCKS: u64 = 256;
/// Blocks the traffic writes and reads (one command each, so no two
/// commands in flight share a block).
const SPAN: u64 = 16;

/// One command of the traffic: a write of a pattern or a read to check.
#[derive(Clone, Copy)]
enum Io {
    Write { lba: u64, gen: u64 },
    Read { lba: u64 },
}

/// An initiator that retries BUSY as the SCSI midlayer does and checks
/// every read against what it last wrote.
struct Traffic {
    inflight: HashMap<u64, Io>,
    /// Per block: the generation of the last write that completed.
    written: Vec<Option<u64>>,
    next_tag: u64,
    gen: u64,
    good: u64,
    busy: u64,
}

fn pattern(lba: u64, gen: u64) -> Vec<u8> {
    (0..BS)
        .map(|i| (lba as usize * 31 + gen as usize * 7 + i) as u8)
        .collect()
}

impl Traffic {
    fn new() -> Self {
        Self {
            inflight: HashMap::new(),
            written: vec![None; BLOCKS as usize],
            next_tag: 1,
            gen: 0,
            good: 0,
            busy: 0,
        }
    }

    fn submit(&mut self, rig: &mut Rig, io: Io) {
        let tag = self.next_tag;
        self.next_tag += 1;
        match io {
            Io::Write { lba, gen } => {
                let data = pattern(lba, gen);
                let cdb = cdb10(0x2a, lba, 1);
                rig.init
                    .submit(rig.sess, &cdb, SimData::Out(&data), tag)
                    .unwrap();
            }
            Io::Read { lba } => {
                let cdb = cdb10(0x28, lba, 1);
                rig.init
                    .submit(rig.sess, &cdb, SimData::In(BS), tag)
                    .unwrap();
            }
        }
        self.inflight.insert(tag, io);
    }

    /// A write or a read of every block of the span not busy, alternating.
    fn refill(&mut self, rig: &mut Rig) {
        let busy: Vec<u64> = self
            .inflight
            .values()
            .map(|io| match *io {
                Io::Write { lba, .. } | Io::Read { lba } => lba,
            })
            .collect();
        for lba in 0..SPAN {
            if busy.contains(&lba) {
                continue;
            }
            self.gen += 1;
            let io = if (lba + self.gen).is_multiple_of(2) || self.written[lba as usize].is_none() {
                Io::Write { lba, gen: self.gen }
            } else {
                Io::Read { lba }
            };
            self.submit(rig, io);
        }
    }

    /// Turns the rig once and handles the completions: GOOD is recorded
    /// (a read checked), BUSY resubmitted, anything else fails the test.
    fn pump(&mut self, rig: &mut Rig) {
        rig.turn();
        let mut done = Vec::new();
        let mut buf = vec![0u8; BS];
        rig.init
            .reap(|c| {
                let mut data = None;
                if c.status == status::GOOD && c.data_in_len > 0 {
                    c.copy_data_in(&mut buf);
                    data = Some(buf.clone());
                }
                done.push((c.tag, c.status, c.aborted, data));
            })
            .unwrap();
        for (tag, st, aborted, data) in done {
            let io = self.inflight.remove(&tag).expect("a completion of ours");
            assert!(!aborted, "nothing is aborted in a hand-off");
            match st {
                status::GOOD => {
                    self.good += 1;
                    match io {
                        Io::Write { lba, gen } => self.written[lba as usize] = Some(gen),
                        Io::Read { lba } => {
                            let gen = self.written[lba as usize].expect("read after a write");
                            assert!(
                                data.as_deref() == Some(&pattern(lba, gen)[..]),
                                "block {lba} does not read back generation {gen}"
                            );
                        }
                    }
                }
                status::BUSY => {
                    self.busy += 1;
                    self.submit(rig, io);
                }
                other => panic!("status {other:#x}: only GOOD or BUSY may be seen"),
            }
        }
    }
}

/// A device like the rig's (its own LUN over `bdev`, its own pool, its
/// port on the rig's bdev poller) on `driver`, an fd handed over.
fn successor(
    rig: &mut Rig,
    bdev: &BdevRef,
    driver: ScstSimDriver,
) -> ScstDevice<ScstSimDriver, Lun> {
    let (port, mut end) = port_pair(256).unwrap();
    let mut lun_config = LunConfig::for_bdev(bdev.as_ref());
    lun_config.max_tasks = 256;
    let lun = Lun::new(lun_config, port).unwrap();
    let pool = offered_pool(&mut end);
    rig.poller.attach(end).unwrap();
    let config = ScstDeviceConfig {
        unit: Some(lun.unit().clone()),
        ..ScstDeviceConfig::default()
    };
    ScstDevice::new(driver, lun, pool, config).unwrap()
}

fn hand_over(opt: ScstUserOpt) {
    let bdev: BdevRef = Arc::new(RamBdev::new("ram", BS as u32, BLOCKS).unwrap());
    let mut rig = Rig::over(
        Arc::clone(&bdev),
        opt,
        ScstSimConfig::default(),
        ScstDeviceConfig::default(),
        256,
        false,
    );
    let mut traffic = Traffic::new();
    let deadline = Instant::now() + Duration::from_secs(20);

    // Serving: buffers end up cached by the kernel.
    while traffic.good < 200 {
        assert!(Instant::now() < deadline, "no progress before the hand-off");
        traffic.refill(&mut rig);
        traffic.pump(&mut rig);
    }
    assert!(rig.dev.pool().buffers_in_use() > 0 || opt.memory_reuse_type == 0);

    // Quiesce, flush from another thread while serving on.
    let handoff = rig.dev.handoff();
    let kept = rig.dev.driver().duplicate();
    handoff.request();
    while !handoff.quiescing() {
        assert!(Instant::now() < deadline, "the device never quiesced");
        traffic.pump(&mut rig);
    }
    let mut flusher = rig.dev.driver().duplicate();
    let flush = std::thread::spawn(move || flusher.flush_cache());
    while !(flush.is_finished() && handoff.is_clean()) {
        assert!(Instant::now() < deadline, "the device never came clean");
        traffic.refill(&mut rig);
        traffic.pump(&mut rig);
    }
    assert_eq!(flush.join().unwrap(), Ok(()));
    assert_eq!(rig.dev.pool().buffers_in_use(), 0);
    let good_before = traffic.good;

    // Drain the old device and swap in the successor on the kept handle.
    // The old device takes new commands first, so that replies to some
    // (ALLOC_MEM above all) go out while it drains and the commands'
    // next steps reach the successor.
    traffic.refill(&mut rig);
    rig.init.notify();
    rig.dev.poll();
    rig.dev.begin_shutdown();
    while !rig.dev.is_drained() {
        assert!(Instant::now() < deadline, "the device never drained");
        traffic.pump(&mut rig);
    }
    let sessions = handoff.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].sess_h, rig.sess);
    let mut next = successor(&mut rig, &bdev, kept);
    next.adopt_sessions(sessions);
    drop(std::mem::replace(&mut rig.dev, next));

    // The successor serves the same LUN: every block reads back.
    let target = traffic.good + 300;
    while traffic.good < target || !traffic.inflight.is_empty() {
        assert!(Instant::now() < deadline, "no progress after the hand-off");
        if traffic.good < target {
            traffic.refill(&mut rig);
        }
        traffic.pump(&mut rig);
    }
    for lba in 0..SPAN {
        traffic.submit(&mut rig, Io::Read { lba });
    }
    while !traffic.inflight.is_empty() {
        assert!(Instant::now() < deadline, "final reads never completed");
        traffic.pump(&mut rig);
    }
    assert!(traffic.good > good_before + 300);
    assert_eq!(rig.dev.sessions().len(), 1);
    assert_eq!(rig.dev.stats().snapshot().bad_pbufs, 0);
    assert_eq!(rig.dev.stats().snapshot().bad_frees, 0);
    eprintln!(
        "hand-off: {} commands GOOD, {} BUSY retried",
        traffic.good, traffic.busy
    );
}

#[test]
fn a_device_handed_over_under_io_keeps_every_write_with_memory_reuse() {
    hand_over(options(
        SCST_USER_MEM_REUSE_ALL,
        SCST_USER_ON_FREE_CMD_IGNORE,
        0,
    ));
}

#[test]
fn a_device_handed_over_under_io_keeps_every_write_without_memory_reuse() {
    hand_over(options(
        SCST_USER_MEM_NO_REUSE,
        SCST_USER_ON_FREE_CMD_CALL,
        0,
    ));
}
