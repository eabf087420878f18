//! One device's workload loop: submit, reap, verify, measure.

use std::time::{Duration, Instant};

use super::verify::{Mismatch, VerifyModel};
use super::workload::{Generator, SizeSplit, Workload, WorkloadError};
use super::{Completion, Initiator, IoData, SubmitError};
use dataplane::exec::status;
use dataplane::latency::Latencies;
use fastrand::Rng;

/// Most error and mismatch descriptions a job keeps for the report.
const MAX_NOTES: usize = 16;

/// Why a job stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The workload is invalid.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// The kernel side failed.
    #[error("{0}")]
    Initiator(#[from] SubmitError),
    /// A completion named a tag the job did not submit.
    #[error("completion for unknown tag {0}")]
    UnknownTag(u64),
    /// I/Os were still in flight at the drain deadline.
    #[error("{0} I/Os did not complete within the drain timeout")]
    DrainTimeout(usize),
}

/// Counters of a job, cumulative since the last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobSnapshot {
    /// I/Os completed (successfully or not).
    pub ios: u64,
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
    /// Bytes transferred by successful I/Os.
    pub bytes: u64,
    /// I/Os that completed with a status other than GOOD.
    pub errors: u64,
    /// Blocks whose data did not match the verify model.
    pub verify_mismatches: u64,
}

#[derive(Debug)]
struct Slot {
    /// Offset of this slot's buffer in `Job::buffers`.
    offset: usize,
    lba: u64,
    unit: u64,
    /// Bytes of this I/O: the workload's `io_size`, or one of its split.
    len: usize,
    write: bool,
    start: Instant,
}

/// Runs a [`Workload`] against one [`Initiator`].
#[derive(Debug)]
pub struct Job<I: Initiator> {
    initiator: I,
    workload: Workload,
    generator: Generator,
    rng: Rng,
    slots: Vec<Slot>,
    /// One `io_size` buffer per slot, contiguous.
    buffers: Vec<u8>,
    free: Vec<u32>,
    /// Units with an I/O in flight (only tracked when verifying).
    busy_units: Vec<u64>,
    verify: Option<VerifyModel>,
    write_seq: u64,
    counters: JobSnapshot,
    latencies: Latencies,
    interval: Latencies,
    notes: Vec<String>,
    /// Simulated kernel work per command, spent on this thread: half after
    /// each submission, half for each completion (see
    /// [`with_kernel_cost`](Self::with_kernel_cost)).
    kernel_half: Duration,
    /// The mix of sizes, if the I/Os are not all `io_size`.
    split: Option<SizeSplit>,
}

impl<I: Initiator> Job<I> {
    /// A job for `workload` on `initiator`; with `verify`, every read is
    /// checked against the model and every write recorded in it. `max_io` is
    /// the largest transfer the target accepts.
    pub fn new(
        initiator: I,
        workload: Workload,
        verify: Option<VerifyModel>,
        max_io: u64,
    ) -> Result<Self, JobError> {
        workload.validate(max_io)?;
        let depth = workload.iodepth as usize;
        let io_size = workload.io_size as usize;
        let now = Instant::now();
        let slots = (0..depth)
            .map(|i| Slot {
                offset: i * io_size,
                lba: 0,
                unit: 0,
                len: io_size,
                write: false,
                start: now,
            })
            .collect();
        let busy_words = if verify.is_some() {
            workload.units().div_ceil(64) as usize
        } else {
            0
        };
        Ok(Self {
            initiator,
            generator: Generator::new(&workload),
            rng: Rng::with_seed(workload.seed),
            slots,
            buffers: vec![0u8; depth * io_size],
            free: (0..depth as u32).rev().collect(),
            busy_units: vec![0; busy_words],
            verify,
            write_seq: 0,
            counters: JobSnapshot::default(),
            latencies: Latencies::new(),
            interval: Latencies::new(),
            notes: Vec::new(),
            kernel_half: Duration::ZERO,
            split: None,
            workload,
        })
    }

    /// Draws each I/O's size from `split` (whose sizes the workload's
    /// `io_size` bounds) instead of always `io_size`.
    pub fn with_size_split(mut self, split: SizeSplit) -> Result<Self, JobError> {
        split.check(&self.workload)?;
        self.split = Some(split);
        Ok(self)
    }

    /// Makes the job spend `per_command` of the simulated kernel's time on
    /// its own thread for each command, half after submitting it and half
    /// when reaping it, the way a real kernel's submission and completion
    /// paths run on the initiator's CPU, plus `per_command` once for each
    /// batch of completions it takes (the wake-up of the initiator's side
    /// that each publication causes). Commands then reach the handler one by
    /// one as they are submitted, not in batches of the queue depth, and
    /// publishing fewer, larger batches saves the initiator time: what a
    /// real kernel showed, where a handler that publishes at every poll
    /// publishes about one command at a time. Zero (the default) models a
    /// kernel that costs nothing: the handler's own ceiling.
    pub fn with_kernel_cost(mut self, per_command: Duration) -> Self {
        self.kernel_half = per_command / 2;
        self
    }

    /// The workload.
    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    /// The kernel side.
    pub fn initiator(&self) -> &I {
        &self.initiator
    }

    /// The kernel side, for setup (e.g. attaching a session) before the
    /// job runs.
    pub fn initiator_mut(&mut self) -> &mut I {
        &mut self.initiator
    }

    /// I/Os in flight.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Counters since the last [`reset_counters`](Self::reset_counters).
    pub fn snapshot(&self) -> JobSnapshot {
        self.counters
    }

    /// Latencies since the last reset.
    pub fn latencies(&self) -> &Latencies {
        &self.latencies
    }

    /// Latencies since the last call (for a progress line).
    pub fn take_interval(&mut self, into: &mut Latencies) {
        into.merge(&self.interval);
        self.interval.reset();
    }

    /// Descriptions of the first errors and mismatches seen.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Starts a new measurement window (after a ramp).
    pub fn reset_counters(&mut self) {
        self.counters = JobSnapshot::default();
        self.latencies.reset();
        self.interval.reset();
    }

    /// One round: reap what finished, then (if `submit`) refill the queue and
    /// announce the batch. Returns completions plus submissions.
    pub fn step(&mut self, submit: bool) -> Result<usize, JobError> {
        let reaped = self.reap()?;
        let submitted = if submit { self.refill()? } else { 0 };
        if submitted != 0 {
            self.initiator.notify();
        }
        Ok(reaped + submitted)
    }

    /// Stops submitting and waits for every I/O in flight.
    pub fn drain(&mut self, timeout: Duration) -> Result<(), JobError> {
        let deadline = Instant::now() + timeout;
        while self.in_flight() != 0 {
            if Instant::now() > deadline {
                return Err(JobError::DrainTimeout(self.in_flight()));
            }
            if self.step(false)? == 0 {
                std::hint::spin_loop();
            }
        }
        Ok(())
    }

    fn note(notes: &mut Vec<String>, make: impl FnOnce() -> String) {
        if notes.len() < MAX_NOTES {
            notes.push(make());
        }
    }

    fn reap(&mut self) -> Result<usize, JobError> {
        let block_size = self.workload.block_size as usize;
        let Self {
            initiator,
            slots,
            buffers,
            free,
            busy_units,
            verify,
            counters,
            latencies,
            interval,
            notes,
            kernel_half,
            ..
        } = self;
        let kernel_half = *kernel_half;
        let mut unknown_tag = None;
        initiator.reap(&mut |c: &dyn Completion| {
            let tag = c.tag();
            let Some(slot) = slots.get(tag as usize) else {
                unknown_tag = Some(tag);
                return;
            };
            let ns = slot.start.elapsed().as_nanos() as u64;
            latencies.record(ns);
            interval.record(ns);
            counters.ios += 1;
            let io_size = slot.len;
            let blocks = (io_size / block_size) as u64;
            let buf = &mut buffers[slot.offset..slot.offset + io_size];
            if slot.write {
                counters.writes += 1;
            } else {
                counters.reads += 1;
            }
            if c.status() == status::GOOD {
                counters.bytes += io_size as u64;
                if slot.write {
                    if let Some(model) = verify.as_mut() {
                        model.record_write(buf, slot.lba);
                    }
                } else {
                    let copied = c.copy_data_in(buf);
                    if let Some(model) = verify.as_ref() {
                        if copied < io_size {
                            counters.verify_mismatches += blocks;
                            Self::note(notes, || {
                                format!("read at lba {} returned {copied} of {io_size} bytes", slot.lba)
                            });
                        } else {
                            counters.verify_mismatches +=
                                model.check_read(buf, slot.lba, |m: Mismatch| {
                                    Self::note(notes, || {
                                        format!(
                                            "mismatch at lba {}: expected crc32c {:#010x}, read {:#010x}",
                                            m.lba, m.expected, m.actual
                                        )
                                    })
                                });
                        }
                    }
                }
            } else {
                counters.errors += 1;
                if slot.write {
                    if let Some(model) = verify.as_mut() {
                        model.invalidate(slot.lba, blocks);
                    }
                }
                Self::note(notes, || {
                    format!(
                        "{} at lba {} failed: status {:#04x} sense {:02x?}",
                        if slot.write { "write" } else { "read" },
                        slot.lba,
                        c.status(),
                        c.sense()
                    )
                });
            }
            if !busy_units.is_empty() {
                busy_units[(slot.unit / 64) as usize] &= !(1 << (slot.unit % 64));
            }
            free.push(tag as u32);
            spin(kernel_half);
        })
        .map_err(JobError::from)
        .and_then(|n| match unknown_tag {
            Some(tag) => Err(JobError::UnknownTag(tag)),
            None => Ok(n),
        })
        .inspect(|&n| {
            if n > 0 {
                // Taking a batch of completions: one wake-up of the
                // initiator's side, whatever the batch's size.
                spin(kernel_half * 2);
            }
        })
    }

    /// Picks the next I/O; with verify, avoids units already in flight.
    fn pick(&mut self) -> Option<(bool, u64)> {
        for _ in 0..8 {
            let (write, unit) = self.generator.next(&mut self.rng);
            if self.busy_units.is_empty() {
                return Some((write, unit));
            }
            let (word, bit) = ((unit / 64) as usize, 1u64 << (unit % 64));
            if self.busy_units[word] & bit == 0 {
                self.busy_units[word] |= bit;
                return Some((write, unit));
            }
        }
        None
    }

    fn refill(&mut self) -> Result<usize, JobError> {
        let unit_size = self.workload.io_size as usize;
        let block_size = self.workload.block_size as usize;
        let mut submitted = 0;
        while let Some(&tag) = self.free.last() {
            let Some((write, unit)) = self.pick() else {
                break;
            };
            let lba = unit * (self.workload.io_size / u64::from(self.workload.block_size));
            let io_size = match &self.split {
                Some(split) => split.draw(&mut self.rng) as usize,
                None => unit_size,
            };
            let blocks = (io_size / block_size) as u32;
            let slot = &mut self.slots[tag as usize];
            slot.lba = lba;
            slot.unit = unit;
            slot.len = io_size;
            slot.write = write;
            let buf = &mut self.buffers[slot.offset..slot.offset + io_size];
            if write {
                if let Some(model) = self.verify.as_ref() {
                    self.write_seq += 1;
                    model.fill(buf, lba, self.write_seq);
                }
            }
            let (cdb, len) = rw_cdb(write, lba, blocks);
            let data = if write {
                IoData::Out(buf)
            } else {
                IoData::In(io_size)
            };
            slot.start = Instant::now();
            match self.initiator.submit(&cdb[..len], data, u64::from(tag)) {
                Ok(()) => {
                    self.free.pop();
                    submitted += 1;
                    spin(self.kernel_half);
                }
                Err(SubmitError::Full) => {
                    if !self.busy_units.is_empty() {
                        self.busy_units[(unit / 64) as usize] &= !(1 << (unit % 64));
                    }
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(submitted)
    }
}

/// Busy-waits `d` (nothing for zero): simulated kernel work on the
/// initiator's thread.
#[inline]
fn spin(d: Duration) {
    if d.is_zero() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// A READ or WRITE CDB: the 10-byte form when LBA and length fit, else 16.
pub fn rw_cdb(write: bool, lba: u64, blocks: u32) -> ([u8; 16], usize) {
    let mut cdb = [0u8; 16];
    if lba <= u64::from(u32::MAX) && blocks <= u32::from(u16::MAX) {
        cdb[0] = if write { 0x2a } else { 0x28 };
        cdb[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
        cdb[7..9].copy_from_slice(&(blocks as u16).to_be_bytes());
        (cdb, 10)
    } else {
        cdb[0] = if write { 0x8a } else { 0x88 };
        cdb[2..10].copy_from_slice(&lba.to_be_bytes());
        cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
        (cdb, 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initiator::{Pattern, Workload};
    use std::collections::VecDeque;

    /// A kernel side that serves READ/WRITE 10 from a Vec, completing in
    /// reverse order of submission per reap, optionally corrupting reads.
    struct FakeKernel {
        disk: Vec<u8>,
        block_size: usize,
        queue: VecDeque<(u64, bool, u64, Vec<u8>)>,
        depth: usize,
        corrupt_reads: bool,
        notifies: u64,
    }

    struct FakeCompletion<'a> {
        tag: u64,
        data: &'a [u8],
    }

    impl Completion for FakeCompletion<'_> {
        fn tag(&self) -> u64 {
            self.tag
        }
        fn status(&self) -> u8 {
            0
        }
        fn sense(&self) -> &[u8] {
            &[]
        }
        fn copy_data_in(&self, dst: &mut [u8]) -> usize {
            let n = dst.len().min(self.data.len());
            dst[..n].copy_from_slice(&self.data[..n]);
            n
        }
    }

    impl Initiator for FakeKernel {
        fn submit(&mut self, cdb: &[u8], data: IoData<'_>, tag: u64) -> Result<(), SubmitError> {
            if self.queue.len() == self.depth {
                return Err(SubmitError::Full);
            }
            assert_eq!(cdb.len(), 10);
            let lba = u64::from(u32::from_be_bytes(cdb[2..6].try_into().unwrap()));
            let payload = match data {
                IoData::Out(d) => d.to_vec(),
                IoData::In(n) => vec![0; n],
                IoData::None => Vec::new(),
            };
            self.queue.push_back((tag, cdb[0] == 0x2a, lba, payload));
            Ok(())
        }
        fn notify(&mut self) {
            self.notifies += 1;
        }
        fn reap(&mut self, done: &mut dyn FnMut(&dyn Completion)) -> Result<usize, SubmitError> {
            let mut n = 0;
            while let Some((tag, write, lba, mut payload)) = self.queue.pop_back() {
                let off = lba as usize * self.block_size;
                if write {
                    self.disk[off..off + payload.len()].copy_from_slice(&payload);
                } else {
                    let len = payload.len();
                    payload.copy_from_slice(&self.disk[off..off + len]);
                    if self.corrupt_reads {
                        payload[len / 2] ^= 0xff;
                    }
                }
                done(&FakeCompletion {
                    tag,
                    data: &payload,
                });
                n += 1;
            }
            Ok(n)
        }
        fn doorbells(&self) -> u64 {
            0
        }
    }

    fn job(corrupt_reads: bool) -> Job<FakeKernel> {
        let workload = Workload {
            pattern: Pattern::RandRw,
            block_size: 512,
            io_size: 4096,
            iodepth: 16,
            size: 256 * 1024,
            rwmix_read: 50,
            seed: 9,
        };
        let kernel = FakeKernel {
            disk: vec![0; 256 * 1024],
            block_size: 512,
            queue: VecDeque::new(),
            depth: 16,
            corrupt_reads,
            notifies: 0,
        };
        let model = VerifyModel::new(512, 512, true);
        Job::new(kernel, workload, Some(model), 1 << 20).unwrap()
    }

    #[test]
    fn verified_run_is_clean_on_a_correct_kernel() {
        let mut job = job(false);
        for _ in 0..500 {
            job.step(true).unwrap();
        }
        job.drain(Duration::from_secs(5)).unwrap();
        let s = job.snapshot();
        assert!(s.ios >= 500 * 8, "{s:?}");
        assert_eq!(s.reads + s.writes, s.ios);
        assert!(s.reads > 0 && s.writes > 0);
        assert_eq!((s.errors, s.verify_mismatches), (0, 0), "{:?}", job.notes());
        assert_eq!(job.latencies().count(), s.ios);
        assert!(job.initiator().notifies > 0);
    }

    #[test]
    fn corrupted_reads_are_counted() {
        let mut job = job(true);
        // Write everything once first so every block is non-zero, then read.
        for _ in 0..2000 {
            job.step(true).unwrap();
        }
        job.drain(Duration::from_secs(5)).unwrap();
        let s = job.snapshot();
        assert!(s.verify_mismatches > 0);
        assert!(
            job.notes()[0].contains("mismatch at lba"),
            "{:?}",
            job.notes()
        );
    }

    #[test]
    fn the_kernel_cost_is_spent_on_the_initiator_thread() {
        let mut job = job(false).with_kernel_cost(Duration::from_micros(100));
        let start = Instant::now();
        job.step(true).unwrap(); // submits 16: 50 µs each
        job.step(true).unwrap(); // reaps the 16 (50 µs each, 100 µs for the batch), submits 16
        let spent = start.elapsed();
        assert!(
            spent >= Duration::from_micros(3 * 16 * 50 + 100),
            "{spent:?}"
        );
        job.drain(Duration::from_secs(5)).unwrap();
        let s = job.snapshot();
        assert_eq!(s.ios, 32);
        assert_eq!((s.errors, s.verify_mismatches), (0, 0));
    }

    #[test]
    fn cdb_forms() {
        let (cdb, len) = rw_cdb(false, 0x0102_0304, 8);
        assert_eq!(&cdb[..len], &[0x28, 0, 1, 2, 3, 4, 0, 0, 8, 0]);
        let (cdb, len) = rw_cdb(true, 1 << 33, 70_000);
        assert_eq!(len, 16);
        assert_eq!(
            &cdb[..len],
            &[0x8a, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x11, 0x70, 0, 0]
        );
    }
}
