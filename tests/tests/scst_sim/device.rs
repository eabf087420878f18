//! `ScstDevice` end to end on the SCST simulator: initiator → simulated
//! kernel → `ScstDevice` → `Lun` → `BdevPort` → `BdevPoller` → RAM bdev.
//! Thousands of random commands (READ, WRITE, WRITE SAME, COMPARE AND WRITE,
//! SYNCHRONIZE CACHE, INQUIRY, out-of-range reads) are checked byte for
//! byte against a model disk, for each memory-reuse / ON_FREE_CMD / parse
//! combination, with cache evictions; task management through the
//! simulator; and the ioctls per I/O at a deep queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bdev::ram::RamBdev;
use bdev::BdevRef;
use dataplane::exec::status;
use dataplane::exec::CommandExecutor;
use dataplane::frontend::CoalesceConfig;
use dataplane::lun::{Lun, LunConfig};
use dataplane::port::{port_pair, BdevPoller, ChannelEnd, MemoryOffer};
use dataplane::scst::abi::*;
use dataplane::scst::device::{ScstDevice, ScstDeviceConfig};
use dataplane::scst::pool::{BufferPool, PoolConfig};
use reactor::Poller;
use sim::scst::{
    ScstSim, ScstSimConfig, ScstSimDriver, ScstSimInitiator, SimCompletion, SimData,
    SimSubmitError, DEV_USER_VERSION_3_11,
};
use test_support::rng::{seeded, Rng};
use test_support::scst::{options, register};

const BS: usize = 4096;
const BLOCKS: u64 = 4096; // 16 MiB

type Dev = ScstDevice<ScstSimDriver, Lun>;

/// The whole SCST stack over a RAM bdev, with one session attached.
pub(crate) struct Rig {
    pub(crate) init: ScstSimInitiator,
    pub(crate) dev: Dev,
    pub(crate) poller: BdevPoller,
    pub(crate) sess: u64,
}

impl Rig {
    fn new(opt: ScstUserOpt, sim: ScstSimConfig, config: ScstDeviceConfig) -> Self {
        Self::with_bdev_budget(opt, sim, config, 256)
    }

    /// A rig whose simulator copies pinned buffers directly (see
    /// `ScstSimDriver::trust_mapped_buffers`), as `dataplane bench` runs it.
    fn trusting(opt: ScstUserOpt, sim: ScstSimConfig, config: ScstDeviceConfig) -> Self {
        Self::build(opt, sim, config, 256, true, BLOCKS)
    }

    /// `bdev_budget`: requests the bdev poller completes per poll.
    fn with_bdev_budget(
        opt: ScstUserOpt,
        sim: ScstSimConfig,
        config: ScstDeviceConfig,
        bdev_budget: usize,
    ) -> Self {
        Self::build(opt, sim, config, bdev_budget, false, BLOCKS)
    }

    /// A RAM bdev of `blocks` 4 KiB blocks, the port and a bdev poller
    /// completing `bdev_budget` requests per poll, a `Lun` with 256 tasks,
    /// the simulator registered with `opt` (pinned buffers copied directly
    /// if `trust`), a device with `config` and a 64 MiB pool.
    pub(crate) fn build(
        opt: ScstUserOpt,
        sim: ScstSimConfig,
        config: ScstDeviceConfig,
        bdev_budget: usize,
        trust: bool,
        blocks: u64,
    ) -> Self {
        let bdev: BdevRef = Arc::new(RamBdev::new("ram", BS as u32, blocks).unwrap());
        Self::over(bdev, opt, sim, config, bdev_budget, trust)
    }

    /// The same rig over `bdev` (4 KiB blocks), with the pool's arena
    /// offered to the bdev poller as the stack offers it.
    pub(crate) fn over(
        bdev: BdevRef,
        opt: ScstUserOpt,
        sim: ScstSimConfig,
        config: ScstDeviceConfig,
        bdev_budget: usize,
        trust: bool,
    ) -> Self {
        let (port, mut end) = port_pair(256).unwrap();
        let mut lun_config = LunConfig::for_bdev(bdev.as_ref());
        lun_config.max_tasks = 256;
        let lun = Lun::new(lun_config, port).unwrap();
        let (mut driver, mut init) = ScstSim::new(sim).unwrap();
        register(&mut driver, DEV_USER_VERSION_3_11, BS as u32, opt).unwrap();
        if trust {
            // SAFETY: the driver goes into an `ScstDevice`, which keeps its
            // pool's buffers mapped and untouched while the kernel holds
            // them and closes the driver before unmapping the pool.
            unsafe { driver.trust_mapped_buffers() };
        }
        let pool = offered_pool(&mut end);
        let mut poller = BdevPoller::new("bdev", bdev.open_channel(256).unwrap(), bdev_budget);
        poller.attach(end).unwrap();
        let config = ScstDeviceConfig {
            unit: Some(lun.unit().clone()),
            ..config
        };
        let mut dev = ScstDevice::new(driver, lun, pool, config).unwrap();
        let sess = init
            .attach_session_with(0, "iqn.2026-01.test:init", || {
                dev.poll();
            })
            .unwrap();
        Rig {
            init,
            dev,
            poller,
            sess,
        }
    }

    /// One round of the data path: the device takes new work, the bdev
    /// runs, the device answers.
    pub(crate) fn turn(&mut self) {
        self.init.notify();
        self.dev.poll();
        self.poller.poll();
        self.dev.poll();
    }
}

#[derive(Debug)]
enum Op {
    Read {
        lba: u64,
        blocks: u64,
    },
    Write {
        lba: u64,
        data: Vec<u8>,
    },
    WriteSame {
        lba: u64,
        blocks: u64,
        block: Vec<u8>,
    },
    CompareAndWrite {
        lba: u64,
        compare: Vec<u8>,
        write: Vec<u8>,
        matches: bool,
    },
    OutOfRange,
    Other,
}

impl Op {
    fn range(&self) -> Option<(u64, u64)> {
        match self {
            Op::Read { lba, blocks } | Op::WriteSame { lba, blocks, .. } => Some((*lba, *blocks)),
            Op::Write { lba, data } => Some((*lba, (data.len() / BS) as u64)),
            Op::CompareAndWrite { lba, .. } => Some((*lba, 1)),
            Op::OutOfRange | Op::Other => None,
        }
    }
}

/// The initiator's random workload and the model disk.
struct Workload {
    rng: Rng,
    model: Vec<u8>,
    /// Per block: some command in flight uses it.
    busy: Vec<bool>,
    inflight: HashMap<u64, Op>,
    next_tag: u64,
    completed: u64,
    checked_bytes: u64,
    buf: Vec<u8>,
}

fn cdb16(opcode: u8, lba: u64, blocks: u32) -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = opcode;
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

pub(crate) fn cdb10(opcode: u8, lba: u64, blocks: u16) -> [u8; 10] {
    let mut cdb = [0u8; 10];
    cdb[0] = opcode;
    cdb[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

impl Workload {
    fn new(seed: u64) -> Self {
        Self {
            rng: seeded(seed),
            model: vec![0; BLOCKS as usize * BS],
            busy: vec![false; BLOCKS as usize],
            inflight: HashMap::new(),
            next_tag: 1,
            completed: 0,
            checked_bytes: 0,
            buf: vec![0; 1 << 20],
        }
    }

    /// A random range of up to `max_blocks` that no command in flight
    /// touches.
    fn free_range(&mut self, max_blocks: u64) -> Option<(u64, u64)> {
        for _ in 0..8 {
            let blocks = 1 + self.rng.u64(..max_blocks);
            let lba = self.rng.u64(..BLOCKS - blocks + 1);
            let r = lba as usize..(lba + blocks) as usize;
            if !self.busy[r].iter().any(|b| *b) {
                return Some((lba, blocks));
            }
        }
        None
    }

    fn mark(&mut self, range: Option<(u64, u64)>, busy: bool) {
        if let Some((lba, blocks)) = range {
            self.busy[lba as usize..(lba + blocks) as usize].fill(busy);
        }
    }

    /// Submits one random command; false if the simulator is full or no
    /// free range was found.
    fn submit_one(&mut self, init: &mut ScstSimInitiator, sess: u64, io_mix: bool) -> bool {
        let tag = self.next_tag;
        let pick = self.rng.u64(..100);
        let (op, result) = if !io_mix || pick < 40 {
            let Some((lba, blocks)) = self.free_range(64) else {
                return false;
            };
            let cdb = cdb10(0x28, lba, blocks as u16);
            let r = init.submit(sess, &cdb, SimData::In(blocks as usize * BS), tag);
            (Op::Read { lba, blocks }, r)
        } else if pick < 80 {
            let Some((lba, blocks)) = self.free_range(64) else {
                return false;
            };
            let mut data = vec![0u8; blocks as usize * BS];
            self.rng.fill(&mut data);
            let cdb = cdb16(0x8A, lba, blocks as u32);
            let r = init.submit(sess, &cdb, SimData::Out(&data), tag);
            (Op::Write { lba, data }, r)
        } else if pick < 86 {
            let Some((lba, blocks)) = self.free_range(256) else {
                return false;
            };
            let mut block = vec![0u8; BS];
            if self.rng.u64(..3) != 0 {
                self.rng.fill(&mut block);
            }
            let cdb = cdb16(0x93, lba, blocks as u32);
            let r = init.submit(sess, &cdb, SimData::Out(&block), tag);
            (Op::WriteSame { lba, blocks, block }, r)
        } else if pick < 90 {
            let Some((lba, _)) = self.free_range(1) else {
                return false;
            };
            let mut compare = self.model[lba as usize * BS..(lba as usize + 1) * BS].to_vec();
            let matches = self.rng.u64(..4) != 0;
            if !matches {
                compare[17] ^= 0x5A;
            }
            let mut write = vec![0u8; BS];
            self.rng.fill(&mut write);
            let mut out = compare.clone();
            out.extend_from_slice(&write);
            let mut cdb = [0u8; 16];
            cdb[0] = 0x89;
            cdb[2..10].copy_from_slice(&lba.to_be_bytes());
            cdb[13] = 1;
            let r = init.submit(sess, &cdb, SimData::Out(&out), tag);
            (
                Op::CompareAndWrite {
                    lba,
                    compare,
                    write,
                    matches,
                },
                r,
            )
        } else if pick < 93 {
            let cdb = cdb10(0x28, BLOCKS - 1, 2);
            let r = init.submit(sess, &cdb, SimData::In(2 * BS), tag);
            (Op::OutOfRange, r)
        } else if pick < 96 {
            let cdb = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            (Op::Other, init.submit(sess, &cdb, SimData::None, tag))
        } else {
            let cdb = [0x12, 0, 0, 0, 96, 0];
            (Op::Other, init.submit(sess, &cdb, SimData::In(96), tag))
        };
        match result {
            Ok(()) => {
                self.mark(op.range(), true);
                self.inflight.insert(tag, op);
                self.next_tag += 1;
                true
            }
            Err(SimSubmitError::Full) => false,
            Err(e) => panic!("submit: {e}"),
        }
    }

    fn check(&mut self, c: &SimCompletion<'_>) {
        let op = self
            .inflight
            .remove(&c.tag)
            .unwrap_or_else(|| panic!("unknown tag {}", c.tag));
        assert!(!c.aborted, "tag {} aborted", c.tag);
        self.mark(op.range(), false);
        self.completed += 1;
        match op {
            Op::Read { lba, blocks } => {
                assert_eq!(c.status, status::GOOD, "read {lba}+{blocks}: {:?}", c.sense);
                let len = blocks as usize * BS;
                assert_eq!(c.data_in_len, len);
                let n = c.copy_data_in(&mut self.buf[..len]);
                assert_eq!(n, len);
                let at = lba as usize * BS;
                if self.buf[..len] != self.model[at..at + len] {
                    let first = (0..len)
                        .find(|&i| self.buf[i] != self.model[at + i])
                        .unwrap();
                    panic!("read {lba}+{blocks}: first difference at byte {first}");
                }
                self.checked_bytes += len as u64;
            }
            Op::Write { lba, data } => {
                assert_eq!(c.status, status::GOOD, "write: {:?}", c.sense);
                let at = lba as usize * BS;
                self.model[at..at + data.len()].copy_from_slice(&data);
            }
            Op::WriteSame { lba, blocks, block } => {
                assert_eq!(c.status, status::GOOD, "write same: {:?}", c.sense);
                for b in lba..lba + blocks {
                    let at = b as usize * BS;
                    self.model[at..at + BS].copy_from_slice(&block);
                }
            }
            Op::CompareAndWrite {
                lba,
                compare,
                write,
                matches,
            } => {
                let at = lba as usize * BS;
                assert_eq!(self.model[at..at + BS] == compare[..], matches);
                if matches {
                    assert_eq!(c.status, status::GOOD, "caw: {:?}", c.sense);
                    self.model[at..at + BS].copy_from_slice(&write);
                } else {
                    assert_eq!(c.status, status::CHECK_CONDITION);
                    assert_eq!(c.sense[2] & 0x0F, 0x0E, "MISCOMPARE");
                    assert_eq!((c.sense[12], c.sense[13]), (0x1D, 0x00));
                }
            }
            Op::OutOfRange => {
                assert_eq!(c.status, status::CHECK_CONDITION);
                assert_eq!(c.sense[2] & 0x0F, 0x05);
                assert_eq!((c.sense[12], c.sense[13]), (0x21, 0x00));
                assert_eq!(c.data_in_len, 0);
            }
            Op::Other => assert_eq!(c.status, status::GOOD, "{:?}", c.sense),
        }
    }

    /// Runs `total` commands at queue depth `depth`; `purge_every` > 0
    /// evicts the whole cache every that many rounds.
    fn run(&mut self, rig: &mut Rig, total: u64, depth: usize, io_mix: bool, purge_every: u64) {
        let mut submitted = 0u64;
        let mut rounds = 0u64;
        while self.completed < total {
            while self.inflight.len() < depth
                && submitted < total
                && self.submit_one(&mut rig.init, rig.sess, io_mix)
            {
                submitted += 1;
            }
            rig.turn();
            rig.init.reap(|c| self.check(c)).unwrap();
            rounds += 1;
            if purge_every > 0 && rounds.is_multiple_of(purge_every) {
                rig.init.purge_cache();
            }
            assert!(rounds < 50 * total + 10_000, "no progress");
        }
    }
}

fn main_options() -> Vec<(&'static str, ScstUserOpt)> {
    vec![
        (
            "reuse all, on_free call",
            options(
                SCST_USER_MEM_REUSE_ALL,
                SCST_USER_ON_FREE_CMD_CALL,
                SCST_USER_PARSE_STANDARD,
            ),
        ),
        (
            "reuse all, on_free ignore",
            options(
                SCST_USER_MEM_REUSE_ALL,
                SCST_USER_ON_FREE_CMD_IGNORE,
                SCST_USER_PARSE_STANDARD,
            ),
        ),
        (
            "no reuse, on_free call",
            options(
                SCST_USER_MEM_NO_REUSE,
                SCST_USER_ON_FREE_CMD_CALL,
                SCST_USER_PARSE_STANDARD,
            ),
        ),
        (
            "reuse read, on_free call",
            options(
                SCST_USER_MEM_REUSE_READ,
                SCST_USER_ON_FREE_CMD_CALL,
                SCST_USER_PARSE_STANDARD,
            ),
        ),
        (
            "reuse write, parse call",
            options(
                SCST_USER_MEM_REUSE_WRITE,
                SCST_USER_ON_FREE_CMD_CALL,
                SCST_USER_PARSE_CALL,
            ),
        ),
        (
            "reuse all, parse exception",
            options(
                SCST_USER_MEM_REUSE_ALL,
                SCST_USER_ON_FREE_CMD_CALL,
                SCST_USER_PARSE_EXCEPTION,
            ),
        ),
    ]
}

fn small_cache_sim() -> ScstSimConfig {
    ScstSimConfig {
        // A small SGV cache: buffers are evicted (ON_CACHED_MEM_FREE) all
        // the time.
        sgv_cache_bytes: 2 << 20,
        ..ScstSimConfig::default()
    }
}

/// A 64 MiB buffer pool (1 MiB largest buffer), its arena offered to the
/// bdev end of the port as the stack offers it.
pub(crate) fn offered_pool(end: &mut ChannelEnd) -> BufferPool {
    let pool = BufferPool::new(PoolConfig {
        max_bytes: 64 << 20,
        max_buffer_bytes: 1 << 20,
        populate: false,
    })
    .unwrap();
    let (arena, mapping) = pool.arena();
    // SAFETY: the arena is the pool's anonymous mapping, kept mapped by
    // `mapping`, whose pages are never replaced.
    end.offer_memory(unsafe { MemoryOffer::new(vec![arena], Box::new(mapping)) });
    pool
}

/// Lets every ON_FREE_CMD be answered (with CALL a cached buffer returns
/// to the cache only then), evicts everything the kernel caches, and lets
/// the device answer the evictions.
pub(crate) fn settle(rig: &mut Rig) {
    turn_for(rig, SETTLE);
    rig.init.purge_cache();
    turn_for(rig, SETTLE);
    // On a loaded machine the turns above may all fall before a held
    // exchange is due: go on until the purged buffers came back, within
    // a bound (the callers' assertions say what is missing past it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while rig.init.stats().cached_buffers != 0 && std::time::Instant::now() < deadline {
        rig.turn();
    }
}

/// How long `settle` turns after each of its steps: several times the
/// coalescer's longest hold (the device's exchanges are timed, so a fixed
/// number of turns may end before a held exchange is due).
const SETTLE: std::time::Duration = std::time::Duration::from_millis(10);

/// Turns the rig at least 8 times and for at least `d`.
fn turn_for(rig: &mut Rig, d: std::time::Duration) {
    let start = std::time::Instant::now();
    let mut turns = 0;
    while turns < 8 || start.elapsed() < d {
        rig.turn();
        turns += 1;
    }
}

#[test]
fn random_commands_match_the_model_disk_for_every_option_set() {
    random_commands_match_the_model_disk(false);
}

#[test]
fn random_commands_match_the_model_disk_with_trusted_pinned_buffers() {
    random_commands_match_the_model_disk(true);
}

fn random_commands_match_the_model_disk(trust: bool) {
    for (i, (name, opt)) in main_options().into_iter().enumerate() {
        let mut rig = if trust {
            Rig::trusting(opt, small_cache_sim(), ScstDeviceConfig::default())
        } else {
            Rig::new(opt, small_cache_sim(), ScstDeviceConfig::default())
        };
        let mut w = Workload::new(0x1234_5678 + i as u64);
        w.run(&mut rig, 3000, 32, true, 97);
        assert_eq!(w.completed, 3000, "{name}");
        assert!(w.checked_bytes > 1 << 20, "{name}: reads checked");
        settle(&mut rig);
        let st = rig.dev.stats().snapshot();
        let sim = rig.init.stats();
        assert_eq!(
            (
                st.bad_pbufs,
                st.bad_frees,
                st.reply_failures,
                st.ioctl_errors
            ),
            (0, 0, 0, 0),
            "{name}: {st:?}"
        );
        assert_eq!(
            (
                sim.replies_einval,
                sim.replies_esrch,
                sim.replies_efault,
                sim.unjammed,
                sim.copy_faults
            ),
            (0, 0, 0, 0, 0),
            "{name}: {sim:?}"
        );
        assert_eq!(st.busy, 0, "{name}");
        // Every command was executed (COMPARE AND WRITE and WRITE SAME as
        // several internal commands) or, with PARSE CALL, refused at PARSE.
        assert!(
            st.commands_completed + st.parse_errors >= 3000,
            "{name}: {st:?}"
        );
        assert!(
            sim.evictions > 0 || opt.memory_reuse_type == SCST_USER_MEM_NO_REUSE,
            "{name}"
        );
        // Every buffer came back: the kernel caches none after the purge,
        // and the pool has none out.
        assert_eq!(sim.cached_buffers, 0, "{name}");
        assert_eq!(rig.dev.pool().buffers_in_use(), 0, "{name}: pool leak");
        assert_eq!(rig.dev.outstanding(), 0, "{name}");
        assert!(rig.dev.is_drained(), "{name}");
        match opt.parse_type {
            SCST_USER_PARSE_CALL => assert!(st.parse >= 3000, "{name}: {}", st.parse),
            SCST_USER_PARSE_STANDARD => assert_eq!(st.parse, 0, "{name}"),
            _ => {}
        }
        if opt.on_free_cmd_type == SCST_USER_ON_FREE_CMD_CALL {
            assert!(st.on_free_cmd > 0, "{name}");
        } else {
            assert_eq!(st.on_free_cmd, 0, "{name}");
        }
    }
}

/// Submits `cdb` and turns the rig until the device has answered it
/// (the completion waits in the simulator, unreaped): eight turns and past
/// the longest hold of a reply.
fn run_unreaped(rig: &mut Rig, cdb: &[u8], data: SimData<'_>, tag: u64) {
    rig.init.submit(rig.sess, cdb, data, tag).unwrap();
    turn_for(rig, PAST_THE_HOLD);
}

/// Longer than the default longest hold of a reply (400 µs).
const PAST_THE_HOLD: std::time::Duration = std::time::Duration::from_millis(2);

#[test]
fn data_in_left_in_pinned_buffers_survives_the_handler() {
    let opt = options(
        SCST_USER_MEM_REUSE_ALL,
        SCST_USER_ON_FREE_CMD_IGNORE,
        SCST_USER_PARSE_STANDARD,
    );
    let mut rig = Rig::trusting(opt, ScstSimConfig::default(), ScstDeviceConfig::default());
    let pattern: Vec<u8> = (0..8 * BS).map(|i| (i * 7 + 3) as u8).collect();
    run_unreaped(&mut rig, &cdb16(0x8A, 16, 8), SimData::Out(&pattern), 1);
    // The first read's buffer comes from the handler; once freed it is
    // cached, and the second read gets it pinned.
    run_unreaped(&mut rig, &cdb16(0x88, 16, 8), SimData::In(8 * BS), 2);
    assert_eq!(
        rig.init
            .reap(|c| assert_eq!(c.status, status::GOOD))
            .unwrap(),
        2
    );
    run_unreaped(&mut rig, &cdb16(0x88, 16, 8), SimData::In(8 * BS), 3);
    assert!(rig.init.stats().cache_hits > 0, "{:?}", rig.init.stats());
    // The handler goes away (its pool is unmapped) before the initiator
    // collects the second read.
    let Rig { mut init, dev, .. } = rig;
    assert!(
        dev.pool().buffers_in_use() >= 1,
        "the kernel holds the read's buffer"
    );
    assert_eq!(dev.executor().in_flight(), 0, "so the pool is unmapped");
    drop(dev);
    let mut got = vec![0u8; 8 * BS];
    let n = init
        .reap(|c| {
            assert_eq!((c.tag, c.status, c.data_in_len), (3, status::GOOD, 8 * BS));
            assert_eq!(c.copy_data_in(&mut got), 8 * BS);
        })
        .unwrap();
    assert_eq!(n, 1);
    assert!(got == pattern, "the data-in survived the handler");
}

#[test]
fn session_attach_and_detach_reach_the_device() {
    let opt = options(SCST_USER_MEM_REUSE_ALL, SCST_USER_ON_FREE_CMD_IGNORE, 0);
    // Ask the kernel at every poll, so that each turn below is one exchange.
    let eager = ScstDeviceConfig {
        idle_poll_interval: Duration::ZERO,
        ..ScstDeviceConfig::default()
    };
    let mut rig = Rig::new(opt, ScstSimConfig::default(), eager);
    assert_eq!(rig.dev.sessions().len(), 1);
    assert_eq!(rig.dev.sessions()[0].sess_h, rig.sess);
    assert_eq!(
        rig.dev.sessions()[0].initiator_name,
        "iqn.2026-01.test:init"
    );
    let dev = &mut rig.dev;
    let second = rig
        .init
        .attach_session_with(1, "iqn.2026-01.test:other", || {
            dev.poll();
        })
        .unwrap();
    assert_eq!(rig.dev.sessions().len(), 2);
    rig.init.detach_session(second).unwrap();
    rig.turn();
    rig.turn();
    assert_eq!(rig.dev.sessions().len(), 1);
    assert_eq!(rig.dev.stats().snapshot().sessions, 1);
}

#[test]
fn task_management_through_the_simulator() {
    let opt = options(SCST_USER_MEM_REUSE_ALL, SCST_USER_ON_FREE_CMD_CALL, 0);
    let mut rig = Rig::new(opt, ScstSimConfig::default(), ScstDeviceConfig::default());
    // 8 writes reach the executor and the bdev queue, but the bdev does not
    // run yet.
    let data = vec![0xA5u8; 8 * BS];
    for tag in 0..8u64 {
        let cdb = cdb10(0x2A, tag * 8, 8);
        rig.init
            .submit(rig.sess, &cdb, SimData::Out(&data), tag)
            .unwrap();
    }
    rig.init.notify();
    rig.dev.poll();
    rig.dev.poll();
    assert_eq!(rig.dev.executing(), 8);
    let tm = rig
        .init
        .task_mgmt(rig.sess, SCST_ABORT_TASK_SET, None)
        .unwrap();
    // TASK_MGMT_RECEIVED: every command is aborted. Eight in hand opened
    // the concurrency gate, so it is fetched at the end of a hold.
    let start = std::time::Instant::now();
    while rig.dev.stats().snapshot().aborts < 8 && start.elapsed() < 100 * PAST_THE_HOLD {
        rig.dev.poll();
    }
    assert_eq!(rig.dev.stats().snapshot().aborts, 8);
    assert_eq!(rig.init.tm_result(tm), None, "waits for the commands");
    // The replies may be held as well.
    let mut reaped = 0;
    let start = std::time::Instant::now();
    while (reaped < 8 || rig.init.tm_result(tm).is_none()) && start.elapsed() < 100 * PAST_THE_HOLD
    {
        rig.turn();
        reaped += rig
            .init
            .reap(|c| assert!(c.aborted || c.status == status::GOOD))
            .unwrap();
    }
    assert_eq!(reaped, 8);
    assert_eq!(rig.init.tm_result(tm), Some(SCST_MGMT_STATUS_SUCCESS));
    let st = rig.dev.stats().snapshot();
    assert_eq!((st.tm_received, st.tm_done), (1, 1));
    settle(&mut rig);
    assert!(rig.dev.is_drained());
    assert_eq!(rig.dev.pool().buffers_in_use(), 0);
}

/// 4 KiB random reads and writes at queue depth `depth` for `total`
/// commands, the bdev completing at most `bdev_budget` requests per turn;
/// returns (ioctls, completions).
fn deep_queue(
    config: ScstDeviceConfig,
    depth: usize,
    total: u64,
    bdev_budget: usize,
) -> (u64, u64) {
    let opt = options(SCST_USER_MEM_REUSE_ALL, SCST_USER_ON_FREE_CMD_IGNORE, 0);
    let sim = ScstSimConfig {
        max_cmds: 1024,
        ..ScstSimConfig::default()
    };
    let mut rig = Rig::with_bdev_budget(opt, sim, config, bdev_budget);
    let mut rng = seeded(0x5EED);
    let data = vec![0x3Cu8; BS];
    let mut in_flight = 0usize;
    let (mut submitted, mut completed) = (0u64, 0u64);
    let mut tag = 0u64;
    let mut measure = |rig: &mut Rig, count: u64| {
        let start_ioctls = rig.init.ioctls();
        let start = completed;
        while completed - start < count {
            while in_flight < depth {
                let lba = rng.u64(..BLOCKS);
                let r = if rng.u64(..2) == 0 {
                    rig.init
                        .submit(rig.sess, &cdb10(0x28, lba, 1), SimData::In(BS), tag)
                } else {
                    rig.init
                        .submit(rig.sess, &cdb10(0x2A, lba, 1), SimData::Out(&data), tag)
                };
                r.unwrap();
                tag += 1;
                in_flight += 1;
                submitted += 1;
            }
            rig.turn();
            let n = rig
                .init
                .reap(|c| assert_eq!(c.status, status::GOOD, "{:?}", c.sense))
                .unwrap();
            in_flight -= n;
            completed += n as u64;
        }
        (rig.init.ioctls() - start_ioctls, completed - start)
    };
    measure(&mut rig, 5_000); // warm-up: the kernel's buffer cache fills
    let r = measure(&mut rig, total);
    assert!(submitted >= completed);
    r
}

#[test]
fn ioctls_per_io_at_queue_depth_128() {
    let no_timer = ScstDeviceConfig {
        coalesce: CoalesceConfig {
            // A fixed hold that never expires: under load only the batch
            // rule applies, so the count is deterministic.
            fixed_hold: Some(Duration::from_secs(3600)),
            ..CoalesceConfig::default()
        },
        ..ScstDeviceConfig::default()
    };
    let uncoalesced = ScstDeviceConfig {
        coalesce: CoalesceConfig {
            batch: 1,
            max_hold: Duration::ZERO,
            ..CoalesceConfig::default()
        },
        ..ScstDeviceConfig::default()
    };
    let ratio = |(ioctls, ios): (u64, u64)| ioctls as f64 / ios as f64;
    // The bdev finishes everything each turn, then completions trickle in
    // 8 per turn (the device polled between bdev polls, as on a reactor).
    for bdev_budget in [256, 8] {
        let batched = deep_queue(no_timer.clone(), 128, 50_000, bdev_budget);
        let defaults = deep_queue(ScstDeviceConfig::default(), 128, 50_000, bdev_budget);
        let every_poll = deep_queue(uncoalesced.clone(), 128, 50_000, bdev_budget);
        eprintln!(
            "QD128 4 KiB randrw, bdev {bdev_budget}/turn: ioctls per I/O: coalesce.batch 32 \
             without timer {:.4} ({} / {}), defaults {:.4}, no coalescing {:.4}",
            ratio(batched),
            batched.0,
            batched.1,
            ratio(defaults),
            ratio(every_poll)
        );
        assert!(ratio(batched) <= 0.05, "{}", ratio(batched));
    }
}

#[test]
fn the_device_is_a_poller() {
    let opt = options(SCST_USER_MEM_REUSE_ALL, SCST_USER_ON_FREE_CMD_IGNORE, 0);
    let mut rig = Rig::new(opt, ScstSimConfig::default(), ScstDeviceConfig::default());
    let fds = Poller::wait_fds(&rig.dev);
    assert_eq!(fds.len(), 1, "the simulator's wait eventfd");
    assert_eq!(Poller::name(&rig.dev), "scst");
    // A READ (a cache miss: EXEC with pbuf 0, no ALLOC_MEM) reaches the
    // device before shutdown begins. (A WRITE would need ALLOC_MEM and then
    // EXEC: if shutdown began in between, its EXEC would stay with the
    // kernel, which answers BUSY when the fd closes.)
    rig.init
        .submit(rig.sess, &cdb10(0x28, 0, 1), SimData::In(BS), 1)
        .unwrap();
    rig.init.notify();
    Poller::poll(&mut rig.dev);
    assert_eq!(rig.dev.executing(), 1);
    Poller::begin_shutdown(&mut rig.dev);
    let data = vec![1u8; BS];
    // A command submitted after shutdown began is not taken.
    rig.init
        .submit(rig.sess, &cdb10(0x2A, 1, 1), SimData::Out(&data), 2)
        .unwrap();
    for _ in 0..10 {
        rig.poller.poll();
        Poller::poll(&mut rig.dev);
    }
    assert!(Poller::is_drained(&rig.dev));
    let mut tags = Vec::new();
    rig.init.reap(|c| tags.push(c.tag)).unwrap();
    assert_eq!(tags, vec![1]);
    assert_eq!(rig.init.in_flight(), 1);
}

/// A device that exchanges at every poll with something to send or ask
/// for: rig turns are then steps, whatever the time they take.
fn stepwise() -> ScstDeviceConfig {
    ScstDeviceConfig {
        idle_poll_interval: Duration::ZERO,
        coalesce: CoalesceConfig {
            batch: 1,
            max_hold: Duration::ZERO,
            ..CoalesceConfig::default()
        },
        ..ScstDeviceConfig::default()
    }
}

/// A write larger than the pool's largest buffer (and the LUN's MAXIMUM
/// TRANSFER LENGTH), through the simulated kernel and the LUN: ILLEGAL
/// REQUEST, INVALID FIELD IN CDB on the TRANSFER LENGTH, not a BUSY the
/// initiator would retry for ever; the buffer it got goes back when the
/// kernel evicts it, and the device keeps serving.
#[test]
fn a_write_beyond_the_largest_buffer_is_an_invalid_field_in_cdb() {
    for reuse in [SCST_USER_MEM_REUSE_ALL, SCST_USER_MEM_NO_REUSE] {
        let opt = options(reuse, SCST_USER_ON_FREE_CMD_CALL, SCST_USER_PARSE_STANDARD);
        let mut rig = Rig::new(opt, ScstSimConfig::default(), stepwise());
        let data = vec![0x5Au8; 2 << 20];
        run_unreaped(
            &mut rig,
            &cdb16(0x8A, 0, (data.len() / BS) as u32),
            SimData::Out(&data),
            1,
        );
        let mut seen = 0;
        rig.init
            .reap(|c| {
                seen += 1;
                assert_eq!(c.status, status::CHECK_CONDITION, "{:?}", c.sense);
                assert_eq!(c.sense[2] & 0x0F, 0x05, "ILLEGAL REQUEST");
                assert_eq!((c.sense[12], c.sense[13]), (0x24, 0x00));
                // SKSV, C/D: TRANSFER LENGTH at byte 10.
                assert_eq!((c.sense[15], c.sense[16], c.sense[17]), (0xC0, 0, 10));
            })
            .unwrap();
        assert_eq!(seen, 1);
        // ON_FREE_CMD, then (cached) the eviction's ON_CACHED_MEM_FREE.
        for _ in 0..4 {
            rig.turn();
        }
        rig.init.purge_cache();
        for _ in 0..4 {
            rig.turn();
        }
        assert_eq!(rig.dev.oversize_buffers(), 0, "reuse {reuse}");
        let st = rig.dev.stats().snapshot();
        assert_eq!((st.oversize_buffers, st.busy, st.bad_frees), (1, 0, 0));
        // Still serving.
        run_unreaped(&mut rig, &cdb16(0x8A, 0, 1), SimData::Out(&data[..BS]), 2);
        rig.init
            .reap(|c| assert_eq!(c.status, status::GOOD, "{:?}", c.sense))
            .unwrap();
    }
}

/// LBPME is 1 over a RAM bdev, so GET LBA STATUS is served through SCST
/// too (its core parses it as data-in of ALLOCATION LENGTH bytes): the rest
/// of the medium, mapped or unknown.
#[test]
fn get_lba_status_through_the_simulator() {
    let opt = options(
        SCST_USER_MEM_REUSE_ALL,
        SCST_USER_ON_FREE_CMD_IGNORE,
        SCST_USER_PARSE_STANDARD,
    );
    let mut rig = Rig::new(opt, ScstSimConfig::default(), stepwise());
    let mut cdb = [0u8; 16];
    cdb[0] = 0x9E;
    cdb[1] = 0x12;
    cdb[2..10].copy_from_slice(&100u64.to_be_bytes());
    cdb[10..14].copy_from_slice(&32u32.to_be_bytes());
    run_unreaped(&mut rig, &cdb, SimData::In(32), 1);
    let mut got = [0u8; 32];
    let mut seen = 0;
    rig.init
        .reap(|c| {
            seen += 1;
            assert_eq!(
                (c.status, c.data_in_len),
                (status::GOOD, 24),
                "{:?}",
                c.sense
            );
            c.copy_data_in(&mut got);
        })
        .unwrap();
    assert_eq!(seen, 1);
    let mut expected = vec![0, 0, 0, 20, 0, 0, 0, 0x06];
    expected.extend_from_slice(&100u64.to_be_bytes());
    expected.extend_from_slice(&((BLOCKS - 100) as u32).to_be_bytes());
    expected.extend_from_slice(&[0; 4]);
    assert_eq!(got[..24], expected[..]);
}
