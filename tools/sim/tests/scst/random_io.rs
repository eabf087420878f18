//! The SCST simulator end to end: thousands of random READ/WRITE commands
//! across sessions through the simulated kernel and a handler written
//! against the ABI (the `handler` module), every byte checked against a
//! model disk, for every parse type, ON_FREE_CMD type and memory-reuse
//! type, with cache evictions and FLUSH_CACHE; plus the same load with the
//! handler on its own thread sleeping on the wait fd.

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::handler::*;
use dataplane::scst::abi::*;
use dataplane::scst::driver::ScstDriver;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use sim::scst::{ScstSim, ScstSimConfig, ScstSimInitiator, SimData, SimSubmitError};
use test_support::rng::{seeded, Rng};

const BS: usize = 512;
const BLOCKS: usize = 4096;

struct Io {
    write: bool,
    lba: u64,
    blocks: u64,
    data: Vec<u8>,
}

/// The initiator side of the random workload: submits non-conflicting
/// commands, checks completions against the model.
struct Workload {
    rng: Rng,
    model: Vec<u8>,
    /// Per block: -1 writer, n > 0 readers.
    busy: Vec<i32>,
    inflight: HashMap<u64, Io>,
    next_tag: u64,
    sessions: Vec<u64>,
    submitted: usize,
    completed: usize,
    reads: usize,
    writes: usize,
}

impl Workload {
    fn new(seed: u64, sessions: Vec<u64>) -> Self {
        Self {
            rng: seeded(seed),
            model: vec![0; BLOCKS * BS],
            busy: vec![0; BLOCKS],
            inflight: HashMap::new(),
            next_tag: 1,
            sessions,
            submitted: 0,
            completed: 0,
            reads: 0,
            writes: 0,
        }
    }

    /// Tries to submit one random command; false if it picked a range in
    /// conflict or the simulator is full.
    fn submit_one(&mut self, ini: &mut ScstSimInitiator) -> bool {
        let write = self.rng.u64(..2) == 0;
        let size = [6usize, 10, 12, 16][self.rng.u64(..4) as usize];
        // Mostly small, sometimes up to 256 blocks (128 KiB).
        let blocks = if self.rng.u64(..8) == 0 {
            1 + self.rng.u64(..256)
        } else {
            1 + self.rng.u64(..16)
        };
        let lba = self.rng.u64(..(BLOCKS as u64) - blocks + 1);
        let range = lba as usize..(lba + blocks) as usize;
        let clash = if write {
            self.busy[range.clone()].iter().any(|&b| b != 0)
        } else {
            self.busy[range.clone()].iter().any(|&b| b < 0)
        };
        if clash {
            return false;
        }
        let tag = self.next_tag;
        let sess = self.sessions[self.rng.u64(..self.sessions.len() as u64) as usize];
        let cdb = rw_cdb(write, size, lba, blocks as u32);
        let len = blocks as usize * BS;
        let data = if write { pattern(tag, len) } else { Vec::new() };
        let sim_data = if write {
            SimData::Out(&data)
        } else {
            SimData::In(len)
        };
        match ini.submit(sess, &cdb, sim_data, tag) {
            Ok(()) => {}
            Err(SimSubmitError::Full) => return false,
            Err(e) => panic!("submit: {e}"),
        }
        self.next_tag += 1;
        for b in &mut self.busy[range] {
            *b = if write { -1 } else { *b + 1 };
        }
        self.inflight.insert(
            tag,
            Io {
                write,
                lba,
                blocks,
                data,
            },
        );
        self.submitted += 1;
        true
    }

    fn reap(&mut self, ini: &mut ScstSimInitiator) {
        let mut done = Vec::new();
        ini.reap(|c| {
            let mut data = vec![0u8; c.data_in_len];
            assert_eq!(c.copy_data_in(&mut data), c.data_in_len);
            done.push((c.tag, c.status, c.sense.to_vec(), data));
        })
        .unwrap();
        for (tag, status, sense, data) in done {
            let io = self.inflight.remove(&tag).expect("known tag");
            assert_eq!(status, 0, "tag {tag} failed with sense {sense:02x?}");
            let at = io.lba as usize * BS;
            let len = io.blocks as usize * BS;
            let range = io.lba as usize..(io.lba + io.blocks) as usize;
            if io.write {
                self.model[at..at + len].copy_from_slice(&io.data);
                self.writes += 1;
                for b in &mut self.busy[range] {
                    *b = 0;
                }
            } else {
                assert_eq!(data.len(), len, "tag {tag}: short read");
                assert!(
                    data == self.model[at..at + len],
                    "tag {tag}: read of lba {} x{} differs from the model",
                    io.lba,
                    io.blocks
                );
                self.reads += 1;
                for b in &mut self.busy[range] {
                    *b -= 1;
                }
            }
            self.completed += 1;
        }
    }
}

/// Runs `count` random commands with queue depth `qd` through a handler
/// with `opt`; returns the handler, the initiator and the workload.
fn run_random(
    opt: ScstUserOpt,
    cache_bytes: usize,
    count: usize,
    qd: usize,
    seed: u64,
    misalign_uncached: bool,
) -> (Handler, ScstSimInitiator, Workload) {
    let config = ScstSimConfig {
        sgv_cache_bytes: cache_bytes,
        max_cmds: 256,
        ..ScstSimConfig::default()
    };
    let (mut h, mut ini, s0) = setup(config, opt, BLOCKS, BS);
    h.misalign_uncached = misalign_uncached;
    let s1 = ini
        .attach_session_with(1, "iqn.2024-01.test:init1", || {
            h.poll();
        })
        .unwrap();
    let s2 = ini
        .attach_session_with(2, "iqn.2024-01.test:init2", || {
            h.poll();
        })
        .unwrap();
    let mut w = Workload::new(seed, vec![s0, s1, s2]);
    let mut rounds = 0;
    while w.completed < count {
        let mut tries = 0;
        while w.inflight.len() < qd && w.submitted < count && tries < 4 * qd {
            w.submit_one(&mut ini);
            tries += 1;
        }
        ini.notify();
        h.budget = 1 + (rounds % 24);
        h.poll();
        w.reap(&mut ini);
        rounds += 1;
        assert!(rounds < 200 * count, "no progress");
        assert!(h.errors.is_empty(), "handler saw: {:?}", h.errors);
    }
    h.run_until_idle();
    w.reap(&mut ini);
    assert!(h.errors.is_empty(), "handler saw: {:?}", h.errors);
    assert!(h.disk == w.model, "handler disk differs from the model");
    (h, ini, w)
}

/// After FLUSH_CACHE and the ON_CACHED_MEM_FREEs, the handler holds no
/// buffer when it learns about every buffer (ON_FREE_CMD_CALL, or all
/// memory cached).
fn check_no_leak(h: &mut Handler, ini: &ScstSimInitiator, opt: ScstUserOpt) {
    h.drv.flush_cache().unwrap();
    h.run_until_idle();
    let stats = ini.stats();
    assert_eq!(stats.cached_buffers, 0);
    assert_eq!(stats.cached_bytes, 0);
    if opt.on_free_cmd_type == SCST_USER_ON_FREE_CMD_CALL
        || opt.memory_reuse_type == SCST_USER_MEM_REUSE_ALL
    {
        assert_eq!(h.live_buffers(), 0, "handler buffers left after the flush");
        // Only the session ucmds' handles are gone too: none live.
        assert_eq!(stats.live_handles, 0);
    }
    assert!(h.errors.is_empty(), "handler saw: {:?}", h.errors);
}

#[test]
fn random_io_every_option_combination() {
    let parses = [
        SCST_USER_PARSE_STANDARD,
        SCST_USER_PARSE_CALL,
        SCST_USER_PARSE_EXCEPTION,
    ];
    let frees = [SCST_USER_ON_FREE_CMD_CALL, SCST_USER_ON_FREE_CMD_IGNORE];
    let reuses = [
        SCST_USER_MEM_REUSE_ALL,
        SCST_USER_MEM_REUSE_READ,
        SCST_USER_MEM_REUSE_WRITE,
        SCST_USER_MEM_NO_REUSE,
    ];
    let mut seed = 1;
    for &parse in &parses {
        for &on_free in &frees {
            for &reuse in &reuses {
                let opt = options(reuse, on_free, parse);
                seed += 1;
                let (mut h, ini, w) = run_random(opt, 1 << 20, 800, 32, seed, false);
                let stats = ini.stats();
                assert_eq!(stats.submitted, 800);
                assert_eq!(stats.reaped, 800);
                assert!(w.reads > 100 && w.writes > 100);
                if parse == SCST_USER_PARSE_CALL {
                    assert_eq!(h.counts.parse, 800, "CALL parses every command");
                } else {
                    assert_eq!(h.counts.parse, 0, "{parse}: the core knows READ/WRITE");
                }
                // ON_FREE_CMD only with CALL.
                if on_free == SCST_USER_ON_FREE_CMD_IGNORE {
                    assert_eq!(h.counts.on_free, 0);
                } else {
                    assert_eq!(h.counts.on_free, 800);
                }
                // Reuse: cached writes need no ALLOC_MEM on a hit.
                let writes_cached =
                    matches!(reuse, SCST_USER_MEM_REUSE_ALL | SCST_USER_MEM_REUSE_WRITE);
                if writes_cached {
                    assert!(stats.cache_hits > 0, "reuse {reuse}: no cache hit");
                    assert!(h.counts.alloc < w.writes as u64);
                } else {
                    assert_eq!(h.counts.alloc, w.writes as u64, "every write allocates");
                }
                if reuse == SCST_USER_MEM_NO_REUSE {
                    assert_eq!(stats.cache_hits + stats.cache_misses, 0);
                }
                check_no_leak(&mut h, &ini, opt);
            }
        }
    }
}

#[test]
fn many_random_commands_with_defaults_and_a_small_cache() {
    // Reuse ALL + IGNORE (the frontend's default), a 64 KiB cache budget:
    // buffers are evicted all the time, and ON_CACHED_MEM_FREE must name
    // the command that supplied each buffer (checked by the handler).
    let opt = options(
        SCST_USER_MEM_REUSE_ALL,
        SCST_USER_ON_FREE_CMD_IGNORE,
        SCST_USER_PARSE_STANDARD,
    );
    let (mut h, ini, w) = run_random(opt, 64 << 10, 6000, 64, 99, false);
    let stats = ini.stats();
    assert!(stats.evictions > 100, "evictions {}", stats.evictions);
    assert_eq!(h.counts.cached_free, stats.evictions);
    assert!(stats.cached_bytes <= 64 << 10);
    assert!(stats.cache_hits > 1000);
    assert_eq!(w.completed, 6000);
    // Far fewer ioctls than commands: replies and new commands share them.
    assert!(stats.ioctls < 6000, "ioctls {}", stats.ioctls);
    check_no_leak(&mut h, &ini, opt);
}

#[test]
fn uncached_buffers_may_be_unaligned() {
    // Without reuse any alignment works (only cached pbufs must be
    // page-aligned).
    let opt = options(
        SCST_USER_MEM_NO_REUSE,
        SCST_USER_ON_FREE_CMD_CALL,
        SCST_USER_PARSE_STANDARD,
    );
    let (mut h, ini, _) = run_random(opt, 1 << 20, 600, 16, 7, true);
    assert_eq!(ini.stats().replies_einval, 0);
    check_no_leak(&mut h, &ini, opt);
}

#[test]
fn handler_on_its_own_thread_sleeps_on_the_wait_fd() {
    let opt = options(
        SCST_USER_MEM_REUSE_ALL,
        SCST_USER_ON_FREE_CMD_CALL,
        SCST_USER_PARSE_STANDARD,
    );
    let config = ScstSimConfig {
        sgv_cache_bytes: 256 << 10,
        max_cmds: 128,
        ..ScstSimConfig::default()
    };
    let (drv, mut ini) = ScstSim::new(config).unwrap();
    let mut h = Handler::new(drv, opt, BLOCKS, BS);
    h.register().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        let fd = h.drv.wait_fd().unwrap();
        let mut sleeps = 0u64;
        while !stop2.load(Ordering::Acquire) {
            let n = h.poll();
            if n == 0 && h.pending.is_empty() {
                // Drain the eventfd, then sleep until it is written.
                let mut b = [0u8; 8];
                let _ = nix::unistd::read(fd, &mut b);
                // SAFETY: the fd belongs to the driver, alive in `h`.
                let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
                let mut fds = [PollFd::new(bfd, PollFlags::POLLIN)];
                // A poll after draining: anything made ready after our
                // last call rang the fd, so the wait cannot miss it. The
                // timeout only bounds a lost wake-up (it would show as a
                // slow test, never a wrong one).
                let _ = poll(&mut fds, PollTimeout::from(1000u16));
                sleeps += 1;
            }
        }
        h.run_until_idle();
        (h, sleeps)
    });
    let sess = ini.attach_session(0, "iqn.2024-01.test:threaded").unwrap();
    let mut w = Workload::new(5, vec![sess]);
    while w.completed < 3000 {
        while w.inflight.len() < 32 && w.submitted < 3000 {
            if !w.submit_one(&mut ini) {
                break;
            }
        }
        ini.notify();
        w.reap(&mut ini);
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Release);
    let wake = ini.notifications();
    // Ring once more so a sleeping handler sees the stop flag.
    ini.begin_attach_session(1, "iqn.2024-01.test:stop")
        .unwrap();
    let (mut h, sleeps) = thread.join().unwrap();
    assert!(wake > 0);
    assert!(sleeps > 0, "the handler never slept");
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    assert!(h.disk == w.model);
    check_no_leak(&mut h, &ini, opt);
}
