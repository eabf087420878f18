//! The reference loop for runs over real storage: a raw io_uring loop, the
//! counterpart of the memcpy reference of RAM runs.
//!
//! The least any handler must do to serve the run's I/O from its storage:
//! one thread on a reactor's CPU keeps `iodepth` reads (or writes, as the
//! pattern says) in flight on one ring over the same files or namespaces,
//! at offsets drawn like the run's (random or sequential, `io_size`-aligned,
//! over the same range; several targets are addressed as one range, one
//! after the other), with the run's ring setup (IOPOLL, SQPOLL) and, when
//! the run offers its frontend's memory, its buffers registered as fixed
//! buffers. Like the data path it busy-polls: one `io_uring_enter` per loop
//! iteration to submit, completions read from the CQ without a system call.
//! It is fio's `io_uring` (or `io_uring_cmd`) engine reduced to its loop,
//! in the same process, on the engine the bdevs use ([`bdev::uring::Ring`]);
//! `dataplane bench --reference` runs it before and after the run and
//! reports the dataplane's IOPS as a ratio of it, and the latencies side by
//! side.
//!
//! What one I/O is on the target is a [`RawTarget`]: reads and writes of
//! files and block devices here ([`FileTarget`]), NVMe commands through
//! passthrough in [`raw_nvme`](crate::raw_nvme). [`RawLoop`] owns the ring,
//! the buffers and the slots, and is the only place the loop's SQEs reach
//! the kernel.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bdev::uring::{FixedRegions, Ring, RingConfig, MAX_FIXED_BUFFER};
use bdev::IoVec;
use dataplane::latency::Latencies;
use fastrand::Rng;
use io_uring::squeue::EntryMarker as _;
use io_uring::{cqueue, opcode, squeue, types};
use memmap2::MmapMut;

use crate::initiator::{Pattern, Workload};

/// What the loop does, whatever its target.
#[derive(Debug, Clone)]
pub struct RawLoopConfig {
    /// Bytes addressed in each file or namespace (from offset 0).
    pub range: u64,
    /// Bytes per I/O (a multiple of the target's alignment).
    pub io_size: u64,
    /// I/Os in flight.
    pub iodepth: u32,
    /// The access pattern (reads, writes or both).
    pub pattern: Pattern,
    /// Percent reads for randrw.
    pub rwmix_read: u32,
    /// IORING_SETUP_IOPOLL.
    pub iopoll: bool,
    /// IORING_SETUP_SQPOLL.
    pub sqpoll: bool,
    /// Register the buffers as fixed buffers (the kernel may refuse: then
    /// they go without, and [`RawLoop::fixed_buffers`] says so).
    pub fixed_buffers: bool,
    /// How long one [`RawLoop::run`] lasts.
    pub runtime: Duration,
    /// Seed of the offsets.
    pub seed: u64,
}

/// One run of the loop.
#[derive(Debug, Clone)]
pub struct RawLoopResult {
    /// I/Os completed.
    pub ios: u64,
    /// From the first submission to the last completion.
    pub elapsed: Duration,
    /// Submission to completion, per I/O.
    pub latencies: Latencies,
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// I/Os that failed (one of their SQEs did).
    pub errors: u64,
    /// The first failure, described.
    pub first_error: Option<String>,
}

impl RawLoopResult {
    /// I/Os per second.
    pub fn rate(&self) -> f64 {
        self.ios as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One I/O of the loop, as a [`RawTarget`] turns it into SQEs.
#[derive(Debug, Clone, Copy)]
pub struct RawIo {
    /// A write (else a read).
    pub write: bool,
    /// Which file or namespace (index into the target's).
    pub target: usize,
    /// Byte offset in it.
    pub offset: u64,
    /// The I/O's buffer: `len` bytes, the loop's own memory.
    pub buf: *mut u8,
    /// Bytes.
    pub len: u32,
}

/// What one I/O is on a kind of storage: its SQEs and what their
/// completions mean.
///
/// # Safety
/// [`RawLoop`] pushes what [`build`](Self::build) hands it under
/// [`Ring::push`]'s contract, so an implementation must build SQEs that
/// name only: the I/O's buffer (`io.buf`, `io.len` bytes) or parts of it;
/// descriptors it owns, open until it is dropped; and fixed buffer
/// indices that `fixed` returned ([`FixedRegions::find`]) for the range
/// the SQE uses. No other memory, nothing the kernel could write outside
/// the buffer.
pub unsafe trait RawTarget {
    /// The ring's SQE (64 or 128 bytes).
    type Sqe: squeue::EntryMarker;
    /// The ring's CQE (16 or 32 bytes).
    type Cqe: cqueue::EntryMarker;
    /// What `reference.kind` says in a report.
    const KIND: &'static str;
    /// Files or namespaces, addressed one after the other.
    fn count(&self) -> usize;
    /// SQEs one I/O of `len` bytes takes, at most.
    fn sqes_per_io(&self, len: u32) -> u32;
    /// Largest piece of the loop's memory registered as one fixed buffer.
    fn fixed_piece(&self) -> usize;
    /// Hands the SQEs of `io` to `push`, in order, without `user_data`
    /// (the loop sets it).
    fn build(&self, io: &RawIo, fixed: &FixedRegions, push: &mut dyn FnMut(Self::Sqe));
    /// Whether a CQE's `res` for an SQE of an I/O of `len` bytes is a
    /// success, or the failure described.
    fn check(&self, res: i32, len: u32) -> Result<(), String>;
}

/// Reads and writes of files or block devices (`Read`/`Write`, or
/// `ReadFixed`/`WriteFixed` inside registered memory): the `file` bdev's
/// operations.
#[derive(Debug)]
pub struct FileTarget {
    files: Vec<File>,
}

impl FileTarget {
    /// Opens `paths`, for writing too when `writes`, O_DIRECT when
    /// `direct`; the error names the path.
    pub fn open(paths: &[PathBuf], direct: bool, writes: bool) -> Result<Self, String> {
        let flags = libc::O_CLOEXEC | if direct { libc::O_DIRECT } else { 0 };
        let files = paths
            .iter()
            .map(|path| {
                OpenOptions::new()
                    .read(true)
                    .write(writes)
                    .custom_flags(flags)
                    .open(path)
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { files })
    }
}

// SAFETY: each SQE names the I/O's buffer whole, one of `files` (owned,
// open until the target is dropped) and, for a fixed operation, the index
// `fixed.find` gave for exactly that buffer.
unsafe impl RawTarget for FileTarget {
    type Sqe = squeue::Entry;
    type Cqe = cqueue::Entry;
    const KIND: &'static str = "io_uring";

    fn count(&self) -> usize {
        self.files.len()
    }

    fn sqes_per_io(&self, _len: u32) -> u32 {
        1
    }

    fn fixed_piece(&self) -> usize {
        MAX_FIXED_BUFFER
    }

    fn build(&self, io: &RawIo, fixed: &FixedRegions, push: &mut dyn FnMut(Self::Sqe)) {
        let fd = types::Fd(self.files[io.target].as_raw_fd());
        let (buf, len) = (io.buf, io.len);
        push(match (io.write, fixed.find(buf, len as usize)) {
            (true, Some(index)) => opcode::WriteFixed::new(fd, buf, len, index)
                .offset(io.offset)
                .build(),
            (false, Some(index)) => opcode::ReadFixed::new(fd, buf, len, index)
                .offset(io.offset)
                .build(),
            (true, None) => opcode::Write::new(fd, buf, len).offset(io.offset).build(),
            (false, None) => opcode::Read::new(fd, buf, len).offset(io.offset).build(),
        });
    }

    fn check(&self, res: i32, len: u32) -> Result<(), String> {
        if res < 0 {
            Err(std::io::Error::from_raw_os_error(-res).to_string())
        } else if res as u32 != len {
            Err(format!("{res} bytes moved instead of {len}"))
        } else {
            Ok(())
        }
    }
}

/// Per in-flight I/O.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// When it was submitted.
    at: Option<Instant>,
    /// Its SQEs whose CQE has not been reaped.
    left: u32,
    /// One of its SQEs failed.
    failed: bool,
}

/// The ring, the target and the buffers of the loop.
pub struct RawLoop<T: RawTarget> {
    // Declared first, so dropped first: dropping a ring waits for every
    // outstanding I/O, so the target's descriptors and the buffers below
    // outlive the kernel's use of them.
    ring: Ring<T::Sqe, T::Cqe>,
    target: T,
    /// `iodepth` buffers of `io_size` bytes, page-aligned.
    buffers: MmapMut,
    /// The registered pieces of `buffers` (empty: none).
    fixed: FixedRegions,
    slots: Vec<Slot>,
    free: Vec<u32>,
    config: RawLoopConfig,
    rng: Rng,
    workload: Workload,
    cursor: u64,
}

impl<T: RawTarget> std::fmt::Debug for RawLoop<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawLoop")
            .field("kind", &T::KIND)
            .field("targets", &self.target.count())
            .field("iodepth", &self.config.iodepth)
            .field("fixed", &!self.fixed.is_empty())
            .finish_non_exhaustive()
    }
}

impl<T: RawTarget> RawLoop<T> {
    /// Sets the ring and the buffers up over `target` (filled with a
    /// non-zero byte, so writes do not write zeroes a filesystem or a
    /// controller could skip).
    pub fn new(target: T, config: RawLoopConfig) -> Result<Self, String> {
        let depth = config.iodepth.max(1);
        let sqes = target.sqes_per_io(config.io_size as u32).max(1);
        let ring = Ring::new(RingConfig {
            entries: depth.saturating_mul(sqes),
            iopoll: config.iopoll,
            sqpoll_idle_ms: config.sqpoll.then_some(1000),
        })
        .map_err(|e| format!("cannot set up an io_uring: {e}"))?;
        let bytes = depth as usize * config.io_size as usize;
        let mut buffers =
            MmapMut::map_anon(bytes).map_err(|e| format!("cannot map {bytes} bytes: {e}"))?;
        buffers.fill(0x5a);
        let mut this = Self {
            ring,
            target,
            buffers,
            fixed: FixedRegions::default(),
            slots: vec![Slot::default(); depth as usize],
            free: (0..depth).rev().collect(),
            rng: Rng::with_seed(config.seed),
            workload: Workload {
                pattern: config.pattern,
                block_size: 512,
                io_size: config.io_size,
                iodepth: depth,
                size: config.range,
                rwmix_read: config.rwmix_read,
                seed: config.seed,
            },
            cursor: 0,
            config,
        };
        if this.config.fixed_buffers {
            let region = [IoVec {
                base: this.buffers.as_mut_ptr(),
                len: this.buffers.len(),
            }];
            let piece = this.target.fixed_piece();
            // SAFETY: the buffers are this loop's own anonymous mapping,
            // which lives (declared after the ring) until the ring is
            // dropped.
            if let Ok(table) = unsafe { this.ring.register_fixed(&region, piece) } {
                this.fixed = table;
            }
        }
        Ok(this)
    }

    /// Whether the buffers are registered as fixed buffers.
    pub fn fixed_buffers(&self) -> bool {
        !self.fixed.is_empty()
    }

    /// What the loop sends: `"io_uring"` reads and writes, or
    /// `"nvme_uring_cmd"` NVMe commands.
    pub fn kind(&self) -> &'static str {
        T::KIND
    }

    /// The next I/O: (write, target, offset).
    fn next(&mut self) -> (bool, usize, u64) {
        let units = self.workload.units();
        let total = units * self.target.count() as u64;
        let (write, unit) = match self.config.pattern {
            Pattern::Read | Pattern::Write => {
                let unit = self.cursor;
                self.cursor = (unit + 1) % total;
                (self.config.pattern == Pattern::Write, unit)
            }
            Pattern::RandRead => (false, self.rng.u64(..total)),
            Pattern::RandWrite => (true, self.rng.u64(..total)),
            Pattern::RandRw => (
                self.rng.u32(..100) >= self.config.rwmix_read,
                self.rng.u64(..total),
            ),
        };
        (
            write,
            (unit / units) as usize,
            unit % units * self.config.io_size,
        )
    }

    /// Puts one I/O in flight in a free slot.
    fn submit(&mut self, now: Instant) {
        let Some(index) = self.free.pop() else {
            return;
        };
        let (write, target, offset) = self.next();
        let len = self.config.io_size as u32;
        // In bounds: `index` < depth and the mapping holds depth buffers.
        let buf = self
            .buffers
            .as_mut_ptr()
            .wrapping_add(index as usize * len as usize);
        let io = RawIo {
            write,
            target,
            offset,
            buf,
            len,
        };
        let Self {
            ring,
            target,
            fixed,
            slots,
            ..
        } = self;
        let slot = &mut slots[index as usize];
        *slot = Slot {
            at: Some(now),
            left: 0,
            failed: false,
        };
        target.build(&io, fixed, &mut |mut sqe| {
            sqe.set_user_data(u64::from(index));
            // SAFETY: `RawTarget`'s contract: the SQE names slot `index`'s
            // part of `buffers`, the target's own descriptors and fixed
            // indices of `fixed`, all of which outlive the ring (field
            // order); a slot is reused only after the CQEs of all its SQEs
            // are reaped.
            let pushed = unsafe { ring.push(&sqe) };
            debug_assert!(pushed, "the ring holds depth x sqes_per_io SQEs");
            slot.left += u32::from(pushed);
        });
        if slot.left == 0 {
            // Nothing went to the kernel: the slot is free again.
            slot.at = None;
            self.free.push(index);
        }
    }

    /// Runs for the configured time, then waits for the I/Os in flight.
    pub fn run(&mut self) -> RawLoopResult {
        let mut result = RawLoopResult {
            ios: 0,
            elapsed: Duration::ZERO,
            latencies: Latencies::new(),
            enters: 0,
            errors: 0,
            first_error: None,
        };
        let enters_before = self.ring.enters();
        let start = Instant::now();
        let end = start + self.config.runtime;
        for _ in 0..self.free.len() {
            self.submit(start);
        }
        let len = self.config.io_size as u32;
        let mut iterations = 0u32;
        let mut running = true;
        while running || self.ring.outstanding() > 0 {
            self.ring.publish();
            let now = Instant::now();
            let Self {
                ring,
                target,
                slots,
                free,
                ..
            } = self;
            ring.reap(|cqe| {
                let cqe: cqueue::Entry = cqe.into();
                let index = cqe.user_data() as u32;
                let slot = &mut slots[index as usize];
                if let Err(why) = target.check(cqe.result(), len) {
                    slot.failed = true;
                    result.first_error.get_or_insert(why);
                }
                slot.left -= 1;
                if slot.left > 0 {
                    return;
                }
                if let Some(at) = slot.at.take() {
                    result
                        .latencies
                        .record(now.saturating_duration_since(at).as_nanos() as u64);
                }
                result.errors += u64::from(slot.failed);
                result.ios += 1;
                free.push(index);
            });
            iterations = iterations.wrapping_add(1);
            if running && iterations.is_multiple_of(64) && now >= end {
                running = false;
            }
            if running {
                for _ in 0..self.free.len() {
                    self.submit(now);
                }
            }
        }
        result.elapsed = start.elapsed();
        result.enters = self.ring.enters() - enters_before;
        result
    }
}

/// A raw loop of any target, as a run measures it before and after.
pub trait RawReference {
    /// One run of the loop.
    fn run(&mut self) -> RawLoopResult;
    /// Whether its buffers are registered.
    fn fixed_buffers(&self) -> bool;
    /// What it sends (`reference.kind`).
    fn kind(&self) -> &'static str;
}

impl<T: RawTarget> RawReference for RawLoop<T> {
    fn run(&mut self) -> RawLoopResult {
        RawLoop::run(self)
    }

    fn fixed_buffers(&self) -> bool {
        RawLoop::fixed_buffers(self)
    }

    fn kind(&self) -> &'static str {
        T::KIND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_files_at_the_configured_depth() {
        if !test_support::skip::can_run(&[test_support::skip::Need::IoUring]) {
            return;
        }
        let dir = tempfile::Builder::new()
            .prefix("raw-uring-")
            .tempdir_in(if std::path::Path::new("/var/tmp").is_dir() {
                PathBuf::from("/var/tmp")
            } else {
                std::env::current_dir().unwrap()
            })
            .unwrap();
        let files: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("{i}"))).collect();
        for f in &files {
            std::fs::write(f, vec![0u8; 1 << 20]).unwrap();
        }
        let config = RawLoopConfig {
            range: 1 << 20,
            io_size: 4096,
            iodepth: 8,
            pattern: Pattern::RandWrite,
            rwmix_read: 50,
            iopoll: false,
            sqpoll: false,
            fixed_buffers: true,
            runtime: Duration::from_millis(50),
            seed: 1,
        };
        let target = FileTarget::open(&files, true, true).unwrap();
        let mut writes = RawLoop::new(target, config.clone()).unwrap();
        assert_eq!(writes.kind(), "io_uring");
        let w = writes.run();
        assert!(w.ios > 0 && w.errors == 0, "{w:?}");
        assert_eq!(w.latencies.count(), w.ios);
        assert!(w.enters > 0 && w.enters <= w.ios, "{w:?}");
        drop(writes);
        // Writes landed in both files (0x5a bytes).
        for f in &files {
            assert!(std::fs::read(f).unwrap().contains(&0x5a));
        }
        let target = FileTarget::open(&files, true, false).unwrap();
        let mut reads = RawLoop::new(
            target,
            RawLoopConfig {
                pattern: Pattern::Read,
                fixed_buffers: false,
                ..config
            },
        )
        .unwrap();
        assert!(!reads.fixed_buffers());
        let r = reads.run();
        assert!(r.ios > 0 && r.errors == 0 && r.rate() > 0.0, "{r:?}");
        // Past the end of the files: short reads, counted and described.
        let target = FileTarget::open(&files[..1], true, false).unwrap();
        let mut short = RawLoop::new(
            target,
            RawLoopConfig {
                range: 2 << 20,
                pattern: Pattern::RandRead,
                iodepth: 1,
                ..config
            },
        )
        .unwrap();
        let s = short.run();
        assert!(s.errors > 0, "{s:?}");
        assert_eq!(
            s.first_error.as_deref(),
            Some("0 bytes moved instead of 4096")
        );
    }
}
