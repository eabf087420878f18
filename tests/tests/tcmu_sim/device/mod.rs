//! The TCMU device against the kernel simulator.
//!
//! A test executor implements READ(10)/WRITE(10) over an in-memory disk and
//! holds completions for a random number of polls, so they finish out of
//! order; the initiator (driving the simulator) keeps a model of the disk and
//! checks every byte it reads back.
//!
//! This file holds the shared pieces (helpers, the test executor, the
//! initiator model); the tests are in `stress` (random commands against the
//! model disk), `entries` (TMR, unknown-op and PAD entries, malformed
//! entries and ring faults) and `publishing` (coalescing, doorbells, budget,
//! attach, ordering, shutdown, READ_LEN, sense).

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

mod entries;
mod publishing;
mod stress;
