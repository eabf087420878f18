//! The TCMU device against the kernel simulator.
//!
//! A test executor implements READ(10)/WRITE(10) over an in-memory disk and
//! holds completions for a random number of polls, so they finish out of
//! order; the initiator (driving the simulator) keeps a model of the disk and
//! checks every byte it reads back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bdev::IoVec;
use dataplane::exec::{status, CommandExecutor, Response, SENSE_BUFFER_SIZE};
use dataplane::frontend::CoalesceConfig;
use dataplane::tcmu::abi::*;
use dataplane::tcmu::{RingFault, TcmuDevice, TcmuDeviceConfig, TcmuError};
use sim::tcmu::{SimCompletion, SimConfig, SimData, SimSubmitError, TcmuSim};
use test_support::exec::Immediate;
use test_support::rng::{seeded, Rng};

// ---------------------------------------------------------------- helpers --

const BLOCK: usize = 512;
const READ_10: u8 = 0x28;
const WRITE_10: u8 = 0x2A;
/// Vendor opcode: CHECK CONDITION (RECOVERED ERROR) with a full data-in
/// buffer of 0x5A.
const CC_WITH_DATA: u8 = 0xC1;
/// Control-byte vendor bit: the executor returns only the first half.
const SHORT_READ: u8 = 0x40;

fn rw10(opcode: u8, lba: u32, blocks: u16, control: u8) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [opcode, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], control]
}

fn check_condition(key: u8, asc: u8, ascq: u8) -> Response {
    let mut r = Response::with_status(status::CHECK_CONDITION);
    r.sense[0] = 0x70;
    r.sense[2] = key;
    r.sense[7] = 10;
    r.sense[12] = asc;
    r.sense[13] = ascq;
    r.sense_len = 18;
    r
}

/// The 96-byte sense the kernel would see for fixed-format `key/asc/ascq`.
fn sense96(key: u8, asc: u8, ascq: u8) -> [u8; 96] {
    let mut s = [0u8; 96];
    s[..18].copy_from_slice(&check_condition(key, asc, ascq).sense[..18]);
    s
}

fn iov_total(iovs: &[IoVec]) -> usize {
    iovs.iter().map(|v| v.len).sum()
}

/// Copies `src` into the memory named by `iovs`.
fn copy_to_iovs(iovs: &[IoVec], src: &[u8]) -> usize {
    let mut done = 0;
    for v in iovs {
        let n = v.len.min(src.len() - done);
        // SAFETY: the device validated that each iovec lies inside the data
        // area of the live mapping, and the command owns it until its
        // response is delivered; `src` is a separate Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(src[done..].as_ptr(), v.base, n) };
        done += n;
        if done == src.len() {
            break;
        }
    }
    done
}

/// Copies the memory named by `iovs` into `dst`.
fn copy_from_iovs(iovs: &[IoVec], dst: &mut [u8]) -> usize {
    let mut done = 0;
    for v in iovs {
        let n = v.len.min(dst.len() - done);
        // SAFETY: as in `copy_to_iovs`.
        unsafe { std::ptr::copy_nonoverlapping(v.base, dst[done..].as_mut_ptr(), n) };
        done += n;
        if done == dst.len() {
            break;
        }
    }
    done
}

// --------------------------------------------------------------- executor --

struct Task {
    slot: u32,
    hold: u32,
    aborted: bool,
    cdb: Vec<u8>,
    iovs: Vec<IoVec>,
}

/// READ(10)/WRITE(10) over an in-memory disk; other opcodes fail with
/// ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE. I/O happens when the
/// command completes, so an aborted command has no effect.
struct TestExec {
    max_tasks: u32,
    disk: Vec<u8>,
    rng: Rng,
    /// Completions are held for 0..=max_hold polls.
    max_hold: u32,
    /// Hold everything until `release_all` (aborted commands still finish).
    hold_all: bool,
    pending: Vec<Task>,
    submitted: Vec<(u32, Vec<u8>)>,
    aborted: Vec<u32>,
    /// Slots in completion order.
    completed: Vec<u32>,
}

impl TestExec {
    fn new(max_tasks: u32, disk_blocks: usize, seed: u64, max_hold: u32) -> Self {
        Self {
            max_tasks,
            disk: vec![0; disk_blocks * BLOCK],
            rng: seeded(seed),
            max_hold,
            hold_all: false,
            pending: Vec::new(),
            submitted: Vec::new(),
            aborted: Vec::new(),
            completed: Vec::new(),
        }
    }

    fn holding() -> Self {
        let mut e = Self::new(64, 64, 1, 0);
        e.hold_all = true;
        e
    }

    fn release_all(&mut self) {
        self.hold_all = false;
        for t in &mut self.pending {
            t.hold = 0;
        }
    }

    fn execute(&mut self, t: &Task) -> Response {
        if t.aborted {
            return Response::with_status(status::TASK_ABORTED);
        }
        let cdb = &t.cdb;
        match cdb[0] {
            READ_10 | WRITE_10 => {
                let lba = u32::from_be_bytes([cdb[2], cdb[3], cdb[4], cdb[5]]) as usize;
                let blocks = u16::from_be_bytes([cdb[7], cdb[8]]) as usize;
                let len = blocks * BLOCK;
                if (lba + blocks) * BLOCK > self.disk.len() {
                    return check_condition(0x05, 0x21, 0x00);
                }
                if iov_total(&t.iovs) != len {
                    return check_condition(0x05, 0x24, 0x00);
                }
                let range = lba * BLOCK..lba * BLOCK + len;
                if cdb[0] == READ_10 {
                    let n = if cdb[9] & SHORT_READ != 0 {
                        len / 2
                    } else {
                        len
                    };
                    copy_to_iovs(&t.iovs, &self.disk[range.start..range.start + n]);
                    Response::good(n as u32)
                } else {
                    copy_from_iovs(&t.iovs, &mut self.disk[range]);
                    Response::good(0)
                }
            }
            CC_WITH_DATA => {
                let buf = vec![0x5A; iov_total(&t.iovs)];
                copy_to_iovs(&t.iovs, &buf);
                let mut r = check_condition(0x01, 0x00, 0x00);
                r.data_in_len = buf.len() as u32;
                r
            }
            _ => check_condition(0x05, 0x20, 0x00),
        }
    }
}

impl CommandExecutor for TestExec {
    fn max_tasks(&self) -> u32 {
        self.max_tasks
    }

    unsafe fn submit(&mut self, slot: u32, cdb: &[u8], data: &[IoVec]) {
        assert!(slot < self.max_tasks, "slot {slot} out of range");
        assert!(
            self.pending.iter().all(|t| t.slot != slot),
            "slot {slot} submitted twice"
        );
        let hold = if self.max_hold == 0 {
            0
        } else {
            self.rng.u64(..u64::from(self.max_hold) + 1) as u32
        };
        self.submitted.push((slot, cdb.to_vec()));
        self.pending.push(Task {
            slot,
            hold,
            aborted: false,
            cdb: cdb.to_vec(),
            iovs: data.to_vec(),
        });
    }

    fn abort(&mut self, slot: u32) {
        self.aborted.push(slot);
        if let Some(t) = self.pending.iter_mut().find(|t| t.slot == slot) {
            t.aborted = true;
        }
    }

    fn flush(&mut self) {}

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(u32, &Response)) -> usize {
        if !self.hold_all {
            for t in &mut self.pending {
                t.hold = t.hold.saturating_sub(1);
            }
        }
        let mut delivered = 0;
        let mut i = 0;
        while i < self.pending.len() && delivered < max {
            let t = &self.pending[i];
            let ready = t.aborted || (!self.hold_all && t.hold == 0);
            if ready {
                let t = self.pending.swap_remove(i);
                let r = self.execute(&t);
                self.completed.push(t.slot);
                done(t.slot, &r);
                delivered += 1;
            } else {
                i += 1;
            }
        }
        delivered
    }

    fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

// -------------------------------------------------------------- initiator --

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read { short: bool },
    Write,
    Other,
}

#[derive(Debug)]
struct Op {
    kind: Kind,
    cmd_id: u16,
    lba: usize,
    blocks: usize,
    data: Vec<u8>,
}

impl Op {
    fn overlaps(&self, kind: Kind, lba: usize, blocks: usize) -> bool {
        let writes = self.kind == Kind::Write || kind == Kind::Write;
        writes
            && self.kind != Kind::Other
            && lba < self.lba + self.blocks
            && self.lba < lba + blocks
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    submitted: u64,
    completed: u64,
    good_reads: u64,
    good_writes: u64,
    aborted: u64,
    checks: u64,
    too_large: u64,
    tmrs: u64,
    unknown_ops: u64,
}

/// Drives the simulator with random commands and checks their results.
struct Initiator {
    sim: TcmuSim,
    model: Vec<u8>,
    inflight: HashMap<u64, Op>,
    next_tag: u64,
    rng: Rng,
    /// The mailbox offers READ_LEN (so short reads come back short).
    read_len: bool,
    max_blocks: u64,
    tally: Tally,
    scratch: Vec<u8>,
}

impl Initiator {
    fn new(sim: TcmuSim, disk_blocks: usize, seed: u64, max_blocks: u64) -> Self {
        let read_len = sim.config().flags & TCMU_MAILBOX_FLAG_CAP_READ_LEN != 0;
        Self {
            sim,
            model: vec![0; disk_blocks * BLOCK],
            inflight: HashMap::new(),
            next_tag: 1,
            rng: seeded(seed),
            read_len,
            max_blocks,
            tally: Tally::default(),
            scratch: vec![0; 1 << 20],
        }
    }

    /// Submits one random command. False if the ring or data area is full.
    fn submit_random(&mut self) -> bool {
        let disk_blocks = self.model.len() / BLOCK;
        let pick = self.rng.u64(..100);
        let kind = match pick {
            0..=44 => Kind::Read { short: false },
            45..=49 => Kind::Read { short: true },
            50..=95 => Kind::Write,
            _ => Kind::Other,
        };
        let blocks = 1 + self.rng.u64(..self.max_blocks) as usize;
        let lba = self.rng.u64(..(disk_blocks - blocks + 1) as u64) as usize;
        if self
            .inflight
            .values()
            .any(|op| op.overlaps(kind, lba, blocks))
        {
            return true; // would race with an in-flight command; skip
        }
        let tag = self.next_tag;
        let mut data = Vec::new();
        let result = match kind {
            Kind::Read { short } => {
                let control = if short { SHORT_READ } else { 0 };
                let cdb = rw10(READ_10, lba as u32, blocks as u16, control);
                self.sim.submit(&cdb, SimData::In(blocks * BLOCK), tag)
            }
            Kind::Write => {
                data = vec![0; blocks * BLOCK];
                self.rng.fill(&mut data);
                let cdb = rw10(WRITE_10, lba as u32, blocks as u16, 0);
                self.sim.submit(&cdb, SimData::Out(&data), tag)
            }
            Kind::Other => self.sim.submit(&[0x00, 0, 0, 0, 0, 0], SimData::None, tag),
        };
        match result {
            Ok(cmd_id) => {
                self.next_tag += 1;
                self.tally.submitted += 1;
                self.inflight.insert(
                    tag,
                    Op {
                        kind,
                        cmd_id,
                        lba,
                        blocks,
                        data,
                    },
                );
                true
            }
            Err(SimSubmitError::TooLarge) => {
                self.tally.too_large += 1;
                true
            }
            Err(SimSubmitError::RingFull | SimSubmitError::DataAreaFull) => false,
            Err(e) => panic!("submit failed: {e}"),
        }
    }

    /// Aborts a random subset of the in-flight commands through a TMR entry.
    fn inject_tmr(&mut self) {
        let mut ids: Vec<u16> = self.inflight.values().map(|op| op.cmd_id).collect();
        ids.sort_unstable();
        let keep = self.rng.u64(..ids.len() as u64 + 1) as usize;
        let start = self.rng.u64(..(ids.len() - keep) as u64 + 1) as usize;
        let chosen = &ids[start..start + keep];
        if self.sim.inject_tmr(TCMU_TMR_ABORT_TASK, chosen).is_ok() {
            self.tally.tmrs += 1;
        }
    }

    fn reap(&mut self) -> usize {
        let Self {
            sim,
            model,
            inflight,
            read_len,
            tally,
            scratch,
            ..
        } = self;
        let n = sim
            .reap(|c| check_completion(c, model, inflight, *read_len, tally, scratch))
            .expect("reap");
        tally.completed += n as u64;
        n
    }
}

fn check_completion(
    c: &SimCompletion<'_>,
    model: &mut [u8],
    inflight: &mut HashMap<u64, Op>,
    read_len: bool,
    tally: &mut Tally,
    scratch: &mut [u8],
) {
    let op = inflight
        .remove(&c.tag)
        .expect("completion for an unknown tag");
    assert_eq!(
        c.cmd_id, op.cmd_id,
        "tag {} came back with another cmd_id",
        c.tag
    );
    let range = op.lba * BLOCK..(op.lba + op.blocks) * BLOCK;
    if c.status == status::TASK_ABORTED {
        // Aborted by a TMR before it ran: no effect, no sense.
        assert!(c.sense.is_empty());
        tally.aborted += 1;
        return;
    }
    match op.kind {
        Kind::Write => {
            assert_eq!(c.status, status::GOOD, "write tag {}", c.tag);
            assert!(c.sense.is_empty());
            assert_eq!(c.data_in_len, 0);
            model[range].copy_from_slice(&op.data);
            tally.good_writes += 1;
        }
        Kind::Read { short } => {
            assert_eq!(c.status, status::GOOD, "read tag {}", c.tag);
            assert!(c.sense.is_empty());
            let len = range.len();
            let valid = if short { len / 2 } else { len };
            let expected = if short && read_len { len / 2 } else { len };
            assert_eq!(c.data_in_len, expected, "read tag {} data_in_len", c.tag);
            let buf = &mut scratch[..len];
            assert_eq!(c.copy_data_in(buf), expected);
            assert!(
                buf[..valid] == model[range.start..range.start + valid],
                "read tag {} (lba {}, {} blocks) returned wrong data",
                c.tag,
                op.lba,
                op.blocks
            );
            tally.good_reads += 1;
        }
        Kind::Other => {
            assert_eq!(c.status, status::CHECK_CONDITION);
            assert_eq!(c.sense, &sense96(0x05, 0x20, 0x00)[..]);
            assert_eq!(c.data_in_len, 0);
            tally.checks += 1;
        }
    }
}

// ----------------------------------------------------------------- stress --

#[derive(Debug, Clone, Copy)]
struct Stress {
    cmdr_size: u32,
    data_area_size: usize,
    data_block_size: u32,
    flags: u16,
    allow_out_of_order: bool,
    max_tasks: u32,
    max_hold: u32,
    max_blocks: u64,
    steps: usize,
    tmr: bool,
    unknown_ops: bool,
    /// `TcmuDeviceConfig::coalesce.batch`: 1 publishes after every poll.
    doorbell_batch: usize,
    seed: u64,
}

const DISK_BLOCKS: usize = 4096; // 2 MiB

impl Default for Stress {
    fn default() -> Self {
        Self {
            cmdr_size: 1000,
            data_area_size: 256 << 10,
            data_block_size: 4096,
            flags: 0xf,
            allow_out_of_order: true,
            max_tasks: 32,
            max_hold: 6,
            max_blocks: 128, // 64 KiB
            steps: 5000,
            tmr: false,
            unknown_ops: false,
            doorbell_batch: 1,
            seed: 1,
        }
    }
}

fn sim_config(s: &Stress) -> SimConfig {
    SimConfig {
        cmdr_size: s.cmdr_size,
        data_area_size: s.data_area_size,
        data_block_size: s.data_block_size,
        flags: s.flags,
    }
}

fn device_config(s: &Stress) -> TcmuDeviceConfig {
    TcmuDeviceConfig {
        name: "tcmu:test".into(),
        budget: 16,
        allow_out_of_order: s.allow_out_of_order,
        iovecs_per_slot: 4,
        acknowledge_on_idle: false,
        coalesce: CoalesceConfig {
            batch: s.doorbell_batch,
            // Long enough that only the batch size and idleness decide.
            max_hold: std::time::Duration::from_secs(60),
            window: std::time::Duration::ZERO,
        },
        track_latency: true,
    }
}

/// Device and simulator in one thread, alternating deterministically.
fn run_stress(s: Stress) -> Tally {
    let sim = TcmuSim::new(sim_config(&s)).unwrap();
    let (region, bell) = sim.device_endpoint().unwrap();
    let exec = TestExec::new(s.max_tasks, DISK_BLOCKS, s.seed ^ 0xABCD, s.max_hold);
    let mut dev = TcmuDevice::attach(region.clone(), bell, exec, device_config(&s)).unwrap();
    let stats = dev.stats();
    let mut init = Initiator::new(sim, DISK_BLOCKS, s.seed, s.max_blocks);

    let step = |init: &mut Initiator, dev: &mut TcmuDevice<TestExec>, submit: bool| {
        if submit {
            for _ in 0..init.rng.u64(..6) {
                if !init.submit_random() {
                    break;
                }
            }
            if s.unknown_ops && init.rng.u64(..20) == 0 {
                let len = 8 * (1 + init.rng.u64(..4) as u32);
                if init.sim.inject_unknown_op(len).is_ok() {
                    init.tally.unknown_ops += 1;
                }
            }
            init.sim.notify();
            if s.tmr && !init.inflight.is_empty() && init.rng.u64(..8) == 0 {
                init.inject_tmr();
            }
        }
        let before = stats.snapshot();
        let tail_before = region.load_cmd_tail();
        dev.poll();
        let after = stats.snapshot();
        let tail_moved = region.load_cmd_tail() != tail_before;
        // Exactly one doorbell per poll that moved the tail, none otherwise.
        assert_eq!(after.doorbells - before.doorbells, u64::from(tail_moved));
        if after.commands_completed > before.commands_completed && s.doorbell_batch == 1 {
            assert!(tail_moved);
        }
        init.reap();
    };

    for _ in 0..s.steps {
        step(&mut init, &mut dev, true);
    }
    let mut spins = 0;
    while init.sim.in_flight() > 0 || !dev.is_drained() {
        step(&mut init, &mut dev, false);
        spins += 1;
        assert!(spins < 100_000, "did not drain: {:?}", dev);
    }

    assert_eq!(dev.fault(), None);
    assert!(!init.sim.is_broken());
    assert!(init.inflight.is_empty());
    let t = init.tally;
    assert_eq!(t.completed, t.submitted);
    assert_eq!(
        t.good_reads + t.good_writes + t.aborted + t.checks,
        t.submitted
    );
    assert!(
        dev.executor().disk == init.model,
        "executor disk differs from the initiator's model"
    );
    let st = stats.snapshot();
    assert_eq!(st.commands_received, t.submitted);
    assert_eq!(st.commands_completed, t.submitted);
    assert_eq!(st.doorbells, init.sim.doorbells());
    assert_eq!(st.malformed_commands, 0);
    assert_eq!(st.unknown_entries, t.unknown_ops);
    assert_eq!(st.tmr_entries, t.tmrs);
    assert_eq!(st.pad_entries, init.sim.pads_inserted());
    assert_eq!(
        init.sim.free_blocks() as usize,
        s.data_area_size / s.data_block_size as usize
    );
    assert_eq!(region.load_cmd_tail(), init.sim.cmd_head());
    assert_eq!(dev.in_flight(), 0);
    // Enough commands to mean something (tiny rings admit fewer per step).
    assert!(t.submitted >= 2000, "only {} commands", t.submitted);
    t
}

#[test]
fn random_commands_out_of_order_with_read_len_across_ring_sizes() {
    for (i, &cmdr_size) in [392u32, 1000, 4096].iter().enumerate() {
        let t = run_stress(Stress {
            cmdr_size,
            seed: 11 + i as u64,
            ..Stress::default()
        });
        assert!(t.good_reads > 100 && t.good_writes > 100, "{t:?}");
    }
}

#[test]
fn random_commands_with_doorbell_coalescing() {
    // Completions are held while commands keep arriving; every byte must still
    // check out, in and out of order, and the tail must be published (so the
    // run drains) once the initiator stops submitting.
    for (i, allow_out_of_order) in [true, false].into_iter().enumerate() {
        let t = run_stress(Stress {
            doorbell_batch: 8,
            allow_out_of_order,
            max_tasks: 48,
            seed: 31 + i as u64,
            ..Stress::default()
        });
        assert!(t.good_reads > 100 && t.good_writes > 100, "{t:?}");
    }
}

#[test]
fn random_commands_with_tiny_blocks_and_many_iovecs() {
    // 512-byte blocks fragment the data area: many iovecs per command.
    run_stress(Stress {
        cmdr_size: 4096,
        data_area_size: 192 << 10,
        data_block_size: 512,
        max_blocks: 64,
        seed: 5,
        ..Stress::default()
    });
}

#[test]
fn random_commands_in_order_when_the_mailbox_lacks_oooc() {
    run_stress(Stress {
        flags: TCMU_MAILBOX_FLAG_CAP_READ_LEN | TCMU_MAILBOX_FLAG_CAP_TMR,
        seed: 21,
        ..Stress::default()
    });
}

#[test]
fn random_commands_in_order_by_configuration() {
    run_stress(Stress {
        allow_out_of_order: false,
        cmdr_size: 392,
        seed: 22,
        ..Stress::default()
    });
}

#[test]
fn random_commands_without_read_len() {
    let t = run_stress(Stress {
        flags: TCMU_MAILBOX_FLAG_CAP_OOOC | TCMU_MAILBOX_FLAG_CAP_TMR,
        seed: 31,
        ..Stress::default()
    });
    assert!(t.good_reads > 0);
}

#[test]
fn random_commands_with_tmr_aborts_and_unknown_ops() {
    for (i, ooo) in [true, false].into_iter().enumerate() {
        let t = run_stress(Stress {
            tmr: true,
            unknown_ops: true,
            allow_out_of_order: ooo,
            max_hold: 10,
            seed: 41 + i as u64,
            ..Stress::default()
        });
        assert!(t.aborted > 0 && t.tmrs > 0 && t.unknown_ops > 0, "{t:?}");
    }
}

#[test]
fn random_commands_with_the_device_on_its_own_thread() {
    let s = Stress {
        cmdr_size: 2048,
        seed: 77,
        ..Stress::default()
    };
    let sim = TcmuSim::new(sim_config(&s)).unwrap();
    let (region, bell) = sim.device_endpoint().unwrap();
    let exec = TestExec::new(s.max_tasks, DISK_BLOCKS, 99, s.max_hold);
    let mut dev = TcmuDevice::attach(region.clone(), bell, exec, device_config(&s)).unwrap();
    let stats = dev.stats();
    let mut init = Initiator::new(sim, DISK_BLOCKS, s.seed, s.max_blocks);
    let stop = AtomicBool::new(false);
    let target = 8000u64;

    let dev = std::thread::scope(|scope| {
        let device_thread = scope.spawn(|| {
            while !(stop.load(Ordering::Acquire) && dev.is_drained()) {
                if dev.poll() == 0 {
                    std::thread::yield_now();
                }
            }
            dev
        });
        // Liveness guard only (a hang would otherwise never end).
        let deadline = Instant::now() + Duration::from_secs(300);
        while init.tally.submitted < target {
            for _ in 0..init.rng.u64(..8) {
                if !init.submit_random() {
                    break;
                }
            }
            init.sim.notify();
            if init.reap() == 0 {
                std::thread::yield_now();
            }
            assert!(Instant::now() < deadline, "no progress");
        }
        while init.sim.in_flight() > 0 {
            if init.reap() == 0 {
                std::thread::yield_now();
            }
            assert!(Instant::now() < deadline, "did not drain");
        }
        stop.store(true, Ordering::Release);
        device_thread.join().unwrap()
    });

    assert_eq!(dev.fault(), None);
    let t = init.tally;
    assert_eq!(t.completed, t.submitted);
    assert!(
        dev.executor().disk == init.model,
        "disk differs from the model"
    );
    let st = stats.snapshot();
    assert_eq!(st.commands_completed, t.submitted);
    // The last kicks may have landed after the final reap.
    init.sim.force_reap(|_| panic!("nothing left")).unwrap();
    assert_eq!(st.doorbells, init.sim.doorbells());
    assert_eq!(region.load_cmd_tail(), init.sim.cmd_head());
}

// --------------------------------------------------------------- targeted --

fn sim_with(cmdr_size: u32, flags: u16) -> TcmuSim {
    TcmuSim::new(SimConfig {
        cmdr_size,
        data_area_size: 256 << 10,
        data_block_size: 4096,
        flags,
    })
    .unwrap()
}

fn attach(sim: &TcmuSim, exec: TestExec) -> TcmuDevice<TestExec> {
    attach_with(sim, exec, TcmuDeviceConfig::default())
}

fn attach_with(sim: &TcmuSim, exec: TestExec, config: TcmuDeviceConfig) -> TcmuDevice<TestExec> {
    let (region, bell) = sim.device_endpoint().unwrap();
    TcmuDevice::attach(region, bell, exec, config).unwrap()
}

/// Reaps and returns (cmd_id, status, sense, data_in bytes).
fn reap_all(sim: &mut TcmuSim) -> Vec<(u16, u8, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    sim.reap(|c| {
        let mut data = vec![0; c.data_in_len];
        c.copy_data_in(&mut data);
        out.push((c.cmd_id, c.status, c.sense.to_vec(), data));
    })
    .unwrap();
    out
}

const TUR: [u8; 6] = [0; 6];
fn read1(lba: u32) -> [u8; 10] {
    rw10(READ_10, lba, 1, 0)
}

#[test]
fn tmr_entry_aborts_listed_commands_which_still_complete() {
    let mut sim = sim_with(4096, 0xf);
    // Publish at every poll: this test is about TMR, not doorbell batching
    // (which would hold the two aborts while two commands still execute).
    let config = TcmuDeviceConfig {
        coalesce: CoalesceConfig {
            batch: 1,
            ..CoalesceConfig::default()
        },
        ..TcmuDeviceConfig::default()
    };
    let mut dev = attach_with(&sim, TestExec::holding(), config);
    let ids: Vec<u16> = (0..4)
        .map(|i| {
            sim.submit(&read1(i), SimData::In(BLOCK), u64::from(i))
                .unwrap()
        })
        .collect();
    sim.notify();
    assert_eq!(dev.poll(), 4);
    // 999 is not in flight and is ignored.
    sim.inject_tmr(TCMU_TMR_ABORT_TASK, &[ids[1], ids[3], 999])
        .unwrap();
    assert_eq!(
        dev.poll(),
        1 + 2,
        "TMR walked, two aborted commands completed"
    );
    assert_eq!(dev.executor().aborted, vec![1, 3]);
    let got = reap_all(&mut sim);
    let statuses: Vec<(u16, u8)> = got.iter().map(|g| (g.0, g.1)).collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.contains(&(ids[1], status::TASK_ABORTED)));
    assert!(statuses.contains(&(ids[3], status::TASK_ABORTED)));
    dev.executor_mut().release_all();
    dev.poll();
    let got = reap_all(&mut sim);
    let mut rest: Vec<(u16, u8)> = got.iter().map(|g| (g.0, g.1)).collect();
    rest.sort_unstable();
    assert_eq!(rest, vec![(ids[0], status::GOOD), (ids[2], status::GOOD)]);
    let st = dev.stats().snapshot();
    assert_eq!((st.tmr_entries, st.aborts), (1, 2));
    assert_eq!(sim.in_flight(), 0);
}

#[test]
fn unknown_opcode_entries_are_flagged_and_passed() {
    let mut sim = sim_with(4096, 0xf);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    let a = sim.submit(&TUR, SimData::None, 1).unwrap();
    let unknown_at = 128 + sim.cmd_head() as usize;
    sim.inject_unknown_op(24).unwrap();
    let b = sim.submit(&read1(0), SimData::In(BLOCK), 2).unwrap();
    sim.notify();
    assert_eq!(dev.poll(), 3 + 2);
    let flags = sim.region().read_u8(unknown_at + 7).unwrap();
    assert_eq!(flags, TCMU_UFLAG_UNKNOWN_OP);
    let len_op = sim.region().read_u32(unknown_at).unwrap();
    assert_eq!(len_op, tcmu_len_op(24, 3), "len_op untouched");
    let got = reap_all(&mut sim);
    let ids: Vec<u16> = got.iter().map(|g| g.0).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&a) && ids.contains(&b));
    assert_eq!(dev.stats().snapshot().unknown_entries, 1);
    assert_eq!(sim.region().load_cmd_tail(), sim.cmd_head());
}

#[test]
fn eight_byte_pad_at_the_ring_end() {
    // TUR entries are 120 bytes; a 368-byte ring leaves 8 bytes after three.
    let mut sim = sim_with(368, 0xf);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    for round in 0..5u64 {
        for i in 0..3 {
            match sim.submit(&TUR, SimData::None, round * 10 + i) {
                Ok(_) | Err(SimSubmitError::RingFull) => {}
                Err(e) => panic!("{e}"),
            }
        }
        sim.notify();
        dev.poll();
        for (_, st, _, _) in reap_all(&mut sim) {
            assert_eq!(st, status::CHECK_CONDITION);
        }
    }
    assert_eq!(sim.smallest_pad(), Some(8));
    assert!(dev.stats().snapshot().pad_entries >= 1);
    assert_eq!(dev.fault(), None);
    assert_eq!(sim.in_flight(), 0);
}

/// Submits three READs, corrupts the middle one with `corrupt`, and checks
/// that only it fails, with `expected` sense.
fn corrupt_middle(corrupt: impl FnOnce(&mut TcmuSim, usize), expected: [u8; 96]) {
    let mut sim = sim_with(4096, 0xf);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    let a = sim.submit(&read1(0), SimData::In(BLOCK), 1).unwrap();
    let b = sim.submit(&read1(1), SimData::In(BLOCK), 2).unwrap();
    let c = sim.submit(&read1(2), SimData::In(BLOCK), 3).unwrap();
    let at = sim.entry_offset(b).unwrap();
    corrupt(&mut sim, at);
    sim.notify();
    dev.poll();
    assert_eq!(dev.fault(), None);
    assert_eq!(
        dev.executor().submitted.len(),
        2,
        "the bad command never ran"
    );
    let got = reap_all(&mut sim);
    assert_eq!(got.len(), 3);
    for (id, st, sense, data) in got {
        if id == b {
            assert_eq!(st, status::CHECK_CONDITION);
            assert_eq!(sense, expected);
            assert!(data.is_empty());
        } else {
            assert!(id == a || id == c);
            assert_eq!((st, data.len()), (status::GOOD, BLOCK));
        }
    }
    assert_eq!(dev.stats().snapshot().malformed_commands, 1);
}

fn hw_error() -> [u8; 96] {
    sense96(0x04, 0x44, 0x00)
}

#[test]
fn iovec_outside_the_data_area_fails_that_command() {
    // Base inside the ring.
    corrupt_middle(
        |sim, at| sim.poke(at + 48, &200u64.to_ne_bytes()).unwrap(),
        hw_error(),
    );
    // Length running past the end of the mapping.
    corrupt_middle(
        |sim, at| {
            let len = sim.region().len() as u64;
            sim.poke(at + 56, &len.to_ne_bytes()).unwrap()
        },
        hw_error(),
    );
    // base + len overflows u64.
    corrupt_middle(
        |sim, at| sim.poke(at + 56, &u64::MAX.to_ne_bytes()).unwrap(),
        hw_error(),
    );
}

#[test]
fn iovec_count_beyond_the_entry_fails_that_command() {
    corrupt_middle(
        |sim, at| sim.poke(at + 8, &6u32.to_ne_bytes()).unwrap(),
        hw_error(),
    );
    corrupt_middle(
        |sim, at| sim.poke(at + 12, &u32::MAX.to_ne_bytes()).unwrap(),
        hw_error(),
    );
}

#[test]
fn cdb_offset_outside_the_entry_fails_that_command() {
    corrupt_middle(
        |sim, at| sim.poke(at + 24, &0u64.to_ne_bytes()).unwrap(),
        hw_error(),
    );
    // Inside the entry, but the 10-byte CDB would run past its end.
    corrupt_middle(
        |sim, at| {
            sim.poke(at + 24, &((at + 124) as u64).to_ne_bytes())
                .unwrap()
        },
        hw_error(),
    );
}

#[test]
fn cdb_longer_than_16_bytes_is_an_invalid_opcode() {
    let mut sim = sim_with(4096, 0xf);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    let mut cdb = [0u8; 32];
    cdb[0] = 0x7F;
    cdb[7] = 24; // 32 bytes
    let id = sim.submit(&cdb, SimData::None, 1).unwrap();
    // 16 bytes (additional length 8) is accepted and reaches the executor.
    let mut cdb16 = [0u8; 16];
    cdb16[0] = 0x7F;
    cdb16[7] = 8;
    let ok = sim.submit(&cdb16, SimData::None, 2).unwrap();
    sim.notify();
    dev.poll();
    assert_eq!(dev.executor().submitted, vec![(1, cdb16.to_vec())]);
    let got = reap_all(&mut sim);
    let long = got.iter().find(|g| g.0 == id).unwrap();
    assert_eq!(
        (long.1, &long.2[..]),
        (status::CHECK_CONDITION, &sense96(0x05, 0x20, 0x00)[..])
    );
    let short = got.iter().find(|g| g.0 == ok).unwrap();
    assert_eq!(
        short.1,
        status::CHECK_CONDITION,
        "executor answers 0x7F itself"
    );
}

/// Corrupts the ring so it cannot be walked and checks the device breaks
/// without touching it any more.
fn breaks_with(corrupt: impl FnOnce(&mut TcmuSim, usize), fault: RingFault) {
    let mut sim = sim_with(4096, 0xf);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    let a = sim.submit(&read1(0), SimData::In(BLOCK), 1).unwrap();
    sim.notify();
    assert_eq!(dev.poll(), 2);
    let b = sim.submit(&read1(1), SimData::In(BLOCK), 2).unwrap();
    let at = sim.entry_offset(b).unwrap();
    corrupt(&mut sim, at);
    sim.notify();
    let tail = sim.region().load_cmd_tail();
    dev.poll();
    assert_eq!(dev.fault(), Some(fault));
    for _ in 0..3 {
        assert_eq!(dev.poll(), 0);
    }
    assert_eq!(
        sim.region().load_cmd_tail(),
        tail,
        "broken device wrote the tail"
    );
    // `a` was completed before; `b` never will be.
    let got = reap_all(&mut sim);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, a);
    assert_eq!(sim.in_flight(), 1);
    assert!(dev.is_drained());
}

#[test]
fn bad_len_op_breaks_the_device() {
    let e = 128u32; // ring offset of the second entry (the first is 128 bytes)
    breaks_with(
        |sim, at| {
            sim.poke(at, &tcmu_len_op(0, TCMU_OP_CMD).to_ne_bytes())
                .unwrap()
        },
        RingFault::ZeroLengthEntry { offset: e },
    );
    breaks_with(
        |sim, at| {
            sim.poke(at, &tcmu_len_op(8192, TCMU_OP_CMD).to_ne_bytes())
                .unwrap()
        },
        RingFault::EntryCrossesRingEnd {
            offset: e,
            len: 8192,
        },
    );
    breaks_with(
        |sim, at| {
            sim.poke(at, &tcmu_len_op(256, TCMU_OP_CMD).to_ne_bytes())
                .unwrap()
        },
        RingFault::EntryBeyondHead {
            offset: e,
            len: 256,
            head: 256,
        },
    );
    breaks_with(
        |sim, at| {
            let lo = tcmu_len_op(64, TCMU_OP_CMD);
            sim.poke(at, &lo.to_ne_bytes()).unwrap();
            // Keep the ring walkable after it so only the length is wrong.
            let pad = tcmu_len_op(64, TCMU_OP_PAD);
            sim.poke(at + 64, &pad.to_ne_bytes()).unwrap();
        },
        RingFault::CmdEntryTooShort { offset: e, len: 64 },
    );
}

#[test]
fn bad_cmd_head_breaks_the_device() {
    breaks_with(
        |sim, _| sim.poke(12, &13u32.to_ne_bytes()).unwrap(),
        RingFault::HeadMisaligned { head: 13 },
    );
    breaks_with(
        |sim, _| sim.poke(12, &4096u32.to_ne_bytes()).unwrap(),
        RingFault::HeadOutOfRange {
            head: 4096,
            cmdr_size: 4096,
        },
    );
}

#[test]
fn duplicate_or_zero_cmd_id_breaks_the_device() {
    let mut sim = sim_with(4096, 0xf);
    let mut dev = attach(&sim, TestExec::holding());
    let a = sim.submit(&TUR, SimData::None, 1).unwrap();
    let b = sim.submit(&TUR, SimData::None, 2).unwrap();
    sim.poke(sim.entry_offset(b).unwrap() + 4, &a.to_ne_bytes())
        .unwrap();
    sim.notify();
    dev.poll();
    assert_eq!(dev.fault(), Some(RingFault::DuplicateCmdId { cmd_id: a }));
    // Broken: the executor is drained, the ring is left alone.
    dev.executor_mut().release_all();
    assert_eq!(dev.poll(), 1);
    assert!(dev.is_drained());
    assert_eq!(sim.region().load_cmd_tail(), 0);

    breaks_with(
        |sim, at| sim.poke(at + 4, &0u16.to_ne_bytes()).unwrap(),
        RingFault::InvalidCmdId { offset: 128 },
    );
}

#[test]
fn a_reset_of_cmd_tail_breaks_the_device() {
    let mut sim = sim_with(4096, 0xf);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    sim.submit(&read1(0), SimData::In(BLOCK), 1).unwrap();
    sim.notify();
    assert_eq!(dev.poll(), 2);
    assert_eq!(reap_all(&mut sim).len(), 1);
    // Only the device writes cmd_tail; the kernel's reset_ring zeroes it.
    sim.poke(64, &0u32.to_ne_bytes()).unwrap();
    sim.submit(&read1(1), SimData::In(BLOCK), 2).unwrap();
    sim.notify();
    assert_eq!(dev.poll(), 0);
    assert_eq!(
        dev.fault(),
        Some(RingFault::TailMovedByPeer {
            expected: 128,
            found: 0
        })
    );
    assert_eq!(dev.executor().submitted.len(), 1);
    assert_eq!(sim.region().load_cmd_tail(), 0);
}

#[test]
fn coalescing_window_batches_commands_that_arrive_one_by_one() {
    let mut sim = sim_with(4096, 0xf);
    let config = TcmuDeviceConfig {
        coalesce: CoalesceConfig {
            window: std::time::Duration::from_millis(200),
            batch: 3,
            ..CoalesceConfig::default()
        },
        ..TcmuDeviceConfig::default()
    };
    let mut dev = attach_with(&sim, TestExec::new(8, 64, 1, 0), config);
    // Three commands, each arriving alone and completing at once: the first
    // two are held (no doorbell, the poll still reports work so the reactor
    // stays awake), the third fills the batch.
    for i in 0..3u32 {
        sim.submit(&read1(i), SimData::In(BLOCK), u64::from(i))
            .unwrap();
        sim.notify();
        assert!(dev.poll() > 0);
        let rung = dev.stats().snapshot().doorbells;
        assert_eq!(rung, u64::from(i == 2), "after command {i}");
    }
    assert_eq!(reap_all(&mut sim).len(), 3);
    // A lone command is published once the window closes.
    sim.submit(&read1(5), SimData::In(BLOCK), 5).unwrap();
    sim.notify();
    dev.poll();
    assert_eq!(dev.stats().snapshot().doorbells, 1);
    std::thread::sleep(std::time::Duration::from_millis(250));
    dev.poll();
    assert_eq!(dev.stats().snapshot().doorbells, 2);
    assert_eq!(reap_all(&mut sim).len(), 1);
}

#[test]
fn moving_the_tail_without_a_doorbell_completes_nothing() {
    let mut sim = sim_with(4096, 0xf);
    let (region, bell) = sim.device_endpoint().unwrap();
    let id = sim.submit(&TUR, SimData::None, 5).unwrap();
    // Play the device by hand: GOOD, tail over the entry, no kick.
    region.write_u8(128 + 8, status::GOOD).unwrap();
    region.store_cmd_tail(120);
    assert_eq!(reap_all(&mut sim).len(), 0);
    assert_eq!(sim.in_flight(), 1);
    assert_eq!(sim.last_cleaned(), 0);
    bell.ring().unwrap();
    let got = reap_all(&mut sim);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, got[0].1), (id, status::GOOD));
    assert_eq!(sim.doorbells(), 1);
}

#[test]
fn one_doorbell_per_poll_for_a_whole_batch() {
    let mut sim = sim_with(8192, 0xf);
    let mut dev = attach(&sim, TestExec::new(32, 64, 1, 0));
    for i in 0..20 {
        sim.submit(&read1(i), SimData::In(BLOCK), u64::from(i))
            .unwrap();
    }
    assert!(sim.notify());
    assert!(!sim.notify(), "nothing new to notify");
    assert_eq!(sim.notifications(), 1);
    assert_eq!(dev.poll(), 40);
    assert_eq!(dev.stats().snapshot().doorbells, 1);
    assert_eq!(reap_all(&mut sim).len(), 20);
    assert_eq!(sim.doorbells(), 1);
    // Idle polls ring nothing.
    assert_eq!(dev.poll(), 0);
    assert_eq!(dev.poll(), 0);
    let st = dev.stats().snapshot();
    assert_eq!((st.doorbells, st.polls_with_work), (1, 1));
    assert_eq!((st.commands_received, st.commands_completed), (20, 20));
    assert_eq!((st.data_bytes, st.data_in_bytes), (20 * 512, 20 * 512));
}

#[test]
fn budget_limits_the_work_per_poll() {
    let mut sim = sim_with(8192, 0xf);
    let config = TcmuDeviceConfig {
        budget: 3,
        ..TcmuDeviceConfig::default()
    };
    let mut dev = attach_with(&sim, TestExec::new(32, 64, 1, 0), config);
    for i in 0..7 {
        sim.submit(&TUR, SimData::None, i).unwrap();
    }
    sim.notify();
    assert_eq!(dev.poll(), 6);
    assert_eq!(dev.poll(), 6);
    assert_eq!(dev.poll(), 2);
    assert_eq!(reap_all(&mut sim).len(), 7);
}

#[test]
fn attach_checks_the_mailbox() {
    let sim = sim_with(4096, 0xf);
    let check = |poke_at: usize, bytes: &[u8]| -> TcmuError {
        let sim = sim_with(4096, 0xf);
        sim.region().write_bytes(poke_at, bytes).unwrap();
        let (region, bell) = sim.device_endpoint().unwrap();
        TcmuDevice::attach(
            region,
            bell,
            TestExec::new(4, 8, 1, 0),
            TcmuDeviceConfig::default(),
        )
        .unwrap_err()
    };
    assert!(matches!(
        check(0, &1u16.to_ne_bytes()),
        TcmuError::MailboxVersion { found: 1 }
    ));
    assert!(matches!(
        check(4, &256u32.to_ne_bytes()),
        TcmuError::CmdrOff { found: 256 }
    ));
    assert!(matches!(
        check(8, &(1u32 << 30).to_ne_bytes()),
        TcmuError::CmdrSize { .. }
    ));
    assert!(matches!(
        check(8, &4092u32.to_ne_bytes()),
        TcmuError::CmdrSize {
            cmdr_size: 4092,
            ..
        }
    ));
    assert!(matches!(
        check(64, &12u32.to_ne_bytes()),
        TcmuError::TailInvalid { tail: 12, .. }
    ));
    let (region, bell) = sim.device_endpoint().unwrap();
    let e = TcmuDevice::attach(
        region,
        bell,
        TestExec::new(0, 8, 1, 0),
        TcmuDeviceConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(e, TcmuError::NoTaskSlots));
    assert!(e.to_string().contains("no task slots"));
}

#[test]
fn a_new_device_picks_up_everything_from_cmd_tail() {
    let mut sim = sim_with(4096, 0xf);
    let ids: Vec<u16> = (0..6)
        .map(|i| {
            sim.submit(&read1(i), SimData::In(BLOCK), u64::from(i))
                .unwrap()
        })
        .collect();
    sim.notify();
    {
        // Device A completes the first two in order, takes the rest and dies.
        let config = TcmuDeviceConfig {
            allow_out_of_order: false,
            ..TcmuDeviceConfig::default()
        };
        let mut a = attach_with(&sim, TestExec::holding(), config);
        assert_eq!(a.poll(), 6);
        let ex = a.executor_mut();
        ex.hold_all = false; // tasks keep hold 0: slots 0 and 1 first
        ex.pending.retain(|t| t.slot < 2);
        a.poll();
        assert_eq!(a.stats().snapshot().commands_completed, 2);
    }
    let got = reap_all(&mut sim);
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), ids[..2]);
    // Device B starts at cmd_tail: the four A had received are still ahead.
    let mut b = attach(&sim, TestExec::new(8, 64, 1, 0));
    assert_eq!(b.poll(), 4 + 4);
    let mut rest: Vec<u16> = reap_all(&mut sim).iter().map(|g| g.0).collect();
    rest.sort_unstable();
    assert_eq!(rest, ids[2..]);
    assert_eq!(sim.in_flight(), 0);
}

#[test]
fn backpressure_when_all_slots_are_busy() {
    let mut sim = sim_with(8192, 0xf);
    let mut dev = attach(&sim, TestExec::new(2, 64, 1, 0));
    dev.executor_mut().hold_all = true;
    for i in 0..5 {
        sim.submit(&TUR, SimData::None, i).unwrap();
    }
    sim.notify();
    assert_eq!(dev.poll(), 2);
    assert_eq!(dev.in_flight(), 2);
    assert_eq!(dev.poll(), 0, "no slot: the walker waits");
    dev.executor_mut().release_all();
    let mut total = 0;
    for _ in 0..10 {
        dev.poll();
        total += reap_all(&mut sim).len();
    }
    assert_eq!(total, 5);
    assert_eq!(dev.stats().snapshot().commands_received, 5);
}

/// Commands finish in reverse order; returns the order the initiator sees.
fn completion_order(allow_out_of_order: bool) -> (Vec<u16>, Vec<u16>) {
    let mut sim = sim_with(8192, 0xf);
    let config = TcmuDeviceConfig {
        allow_out_of_order,
        ..TcmuDeviceConfig::default()
    };
    let mut dev = attach_with(&sim, TestExec::holding(), config);
    let ids: Vec<u16> = (0..5)
        .map(|i| sim.submit(&TUR, SimData::None, i).unwrap())
        .collect();
    sim.notify();
    dev.poll();
    let mut seen = Vec::new();
    for slot in (0..5).rev() {
        let ex = dev.executor_mut();
        let t = ex.pending.iter_mut().find(|t| t.slot == slot).unwrap();
        t.aborted = true; // finishes at the next poll
        dev.poll();
        seen.extend(reap_all(&mut sim).iter().map(|g| g.0));
    }
    (ids, seen)
}

#[test]
fn in_order_mode_completes_in_ring_order() {
    let (ids, seen) = completion_order(false);
    assert_eq!(seen, ids);
}

#[test]
fn out_of_order_mode_completes_as_commands_finish() {
    let (ids, seen) = completion_order(true);
    let reversed: Vec<u16> = ids.iter().rev().copied().collect();
    assert_eq!(seen, reversed);
}

#[test]
fn shutdown_stops_walking_but_finishes_in_flight_commands() {
    let mut sim = sim_with(8192, 0xf);
    let mut dev = attach(&sim, TestExec::holding());
    for i in 0..3 {
        sim.submit(&TUR, SimData::None, i).unwrap();
    }
    sim.notify();
    dev.poll();
    dev.begin_shutdown();
    let late: Vec<u16> = (3..5)
        .map(|i| sim.submit(&TUR, SimData::None, i).unwrap())
        .collect();
    sim.notify();
    assert!(!dev.is_drained());
    dev.executor_mut().release_all();
    dev.poll();
    assert!(dev.is_drained());
    assert_eq!(reap_all(&mut sim).len(), 3);
    assert_eq!(sim.in_flight(), 2);
    drop(dev);
    // The next owner takes the commands that arrived during shutdown.
    let mut next = attach(&sim, TestExec::new(8, 64, 1, 0));
    next.poll();
    let mut got: Vec<u16> = reap_all(&mut sim).iter().map(|g| g.0).collect();
    got.sort_unstable();
    assert_eq!(got, late);
}

fn short_read(flags: u16) -> (u8, Vec<u8>, u8, u32, usize) {
    let mut sim = sim_with(4096, flags);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    dev.executor_mut().disk[..2 * BLOCK].fill(0x77);
    let id = sim
        .submit(&rw10(READ_10, 0, 2, SHORT_READ), SimData::In(2 * BLOCK), 0)
        .unwrap();
    let at = sim.entry_offset(id).unwrap();
    sim.notify();
    dev.poll();
    let uflags = sim.region().read_u8(at + 7).unwrap();
    let read_len = sim.region().read_u32(at + 12).unwrap();
    let got = reap_all(&mut sim);
    assert_eq!(got.len(), 1);
    (got[0].1, got[0].3.clone(), uflags, read_len, got[0].3.len())
}

#[test]
fn read_len_reports_short_reads() {
    let (st, data, uflags, read_len, n) = short_read(0xf);
    assert_eq!(
        (st, uflags, read_len, n),
        (status::GOOD, TCMU_UFLAG_READ_LEN, 512, 512)
    );
    assert!(data.iter().all(|&b| b == 0x77));
    // Without CAP_READ_LEN the field stays 0 and the kernel returns it all.
    let (st, data, uflags, read_len, n) = short_read(TCMU_MAILBOX_FLAG_CAP_OOOC);
    assert_eq!((st, uflags, read_len, n), (status::GOOD, 0, 0, 1024));
    assert!(data[..512].iter().all(|&b| b == 0x77));
}

#[test]
fn check_condition_with_data_returns_both_under_read_len() {
    let mut sim = sim_with(4096, 0xf);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    let cdb = [CC_WITH_DATA, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    sim.submit(&cdb, SimData::In(300), 0).unwrap();
    // A plain CHECK CONDITION on a read: sense, no data.
    sim.submit(&[0x00; 6], SimData::In(100), 1).unwrap();
    sim.notify();
    dev.poll();
    let got = reap_all(&mut sim);
    assert_eq!(got.len(), 2);
    for (id, st, sense, data) in got {
        assert_eq!(st, status::CHECK_CONDITION);
        if id == 1 {
            assert_eq!(sense, sense96(0x01, 0, 0));
            assert_eq!(data, vec![0x5A; 300]);
        } else {
            assert_eq!(sense, sense96(0x05, 0x20, 0));
            assert!(data.is_empty());
        }
    }
}

#[test]
fn acknowledge_on_idle_drains_the_notification_once() {
    let mut sim = sim_with(4096, 0xf);
    let mut plain = attach(&sim, TestExec::new(8, 64, 1, 0));
    sim.submit(&TUR, SimData::None, 0).unwrap();
    sim.notify();
    plain.poll();
    plain.poll();
    // Busy polling never reads the notification.
    assert!(plain.acknowledge_doorbell().unwrap());
    assert!(!plain.acknowledge_doorbell().unwrap());
    drop(plain);
    reap_all(&mut sim);

    let config = TcmuDeviceConfig {
        acknowledge_on_idle: true,
        ..TcmuDeviceConfig::default()
    };
    let mut dev = attach_with(&sim, TestExec::new(8, 64, 1, 0), config);
    sim.submit(&TUR, SimData::None, 1).unwrap();
    sim.notify();
    assert_eq!(dev.poll(), 2);
    assert_eq!(dev.poll(), 0); // idle: acknowledges, looks again
    assert!(!dev.acknowledge_doorbell().unwrap(), "already drained");
    assert_eq!(reap_all(&mut sim).len(), 1);
}

#[test]
fn response_sense_is_copied_whole_and_padded() {
    // A response longer than the fixed 18 bytes: all valid bytes, then zeros.
    let mut r = Response::with_status(status::CHECK_CONDITION);
    r.sense_len = SENSE_BUFFER_SIZE as u8;
    for (i, b) in r.sense.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    let mut sim = sim_with(4096, 0xf);
    let (region, bell) = sim.device_endpoint().unwrap();
    let mut dev = TcmuDevice::attach(
        region,
        bell,
        Immediate::new(4).answering(r),
        TcmuDeviceConfig::default(),
    )
    .unwrap();
    sim.submit(&TUR, SimData::None, 0).unwrap();
    sim.notify();
    dev.poll();
    let mut seen = Vec::new();
    sim.reap(|c| seen = c.sense.to_vec()).unwrap();
    assert_eq!(seen, r.sense.to_vec());
}
