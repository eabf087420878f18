//! The reference loop for file-backed runs: a raw io_uring loop, the
//! counterpart of the memcpy reference of RAM runs.
//!
//! The least any handler must do to serve the run's I/O from its files:
//! one thread on a reactor's CPU keeps `iodepth` reads (or writes, as the
//! pattern says) in flight on one ring over the same files, at offsets
//! drawn like the run's (random or sequential, `io_size`-aligned, over the
//! same range; several files are addressed as one range, file after file),
//! with the run's ring setup (O_DIRECT, IOPOLL, SQPOLL) and, when the run
//! offers its frontend's memory, its buffers registered as fixed buffers.
//! Like the data path it busy-polls: one `io_uring_enter` per loop
//! iteration to submit, completions read from the CQ without a system
//! call. It is fio's `io_uring` engine reduced to its loop, in the same
//! process, on the engine the `file` bdev uses ([`bdev::uring::Ring`]);
//! `dataplane bench --reference` runs it before and after the run and
//! reports the dataplane's IOPS as a ratio of it, and the latencies side
//! by side.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bdev::uring::{Ring, RingConfig};
use dataplane::latency::Latencies;
use fastrand::Rng;
use io_uring::{opcode, types};
use memmap2::MmapMut;

use crate::initiator::{Pattern, Workload};

/// What the loop does.
#[derive(Debug, Clone)]
pub struct RawLoopConfig {
    /// The files (or block devices), each addressed over `range` bytes.
    pub files: Vec<PathBuf>,
    /// Bytes addressed in each file.
    pub range: u64,
    /// Bytes per I/O (a multiple of the O_DIRECT alignment).
    pub io_size: u64,
    /// I/Os in flight.
    pub iodepth: u32,
    /// The access pattern (reads, writes or both).
    pub pattern: Pattern,
    /// Percent reads for randrw.
    pub rwmix_read: u32,
    /// O_DIRECT.
    pub direct: bool,
    /// IORING_SETUP_IOPOLL.
    pub iopoll: bool,
    /// IORING_SETUP_SQPOLL.
    pub sqpoll: bool,
    /// Register the buffers as fixed buffers (the kernel may refuse: then
    /// plain reads and writes are used, and [`RawLoop::fixed_buffers`]
    /// says so).
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
    /// I/Os that failed or moved fewer bytes than asked.
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

/// Per in-flight I/O.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// When it was submitted.
    at: Option<Instant>,
}

/// The ring, the files and the buffers of the loop.
pub struct RawLoop {
    // Declared first, so dropped first: dropping a ring waits for every
    // outstanding I/O, so the files and buffers below outlive the kernel's
    // use of them.
    ring: Ring,
    files: Vec<File>,
    /// `iodepth` buffers of `io_size` bytes, page-aligned.
    buffers: MmapMut,
    fixed: bool,
    slots: Vec<Slot>,
    free: Vec<u32>,
    config: RawLoopConfig,
    rng: Rng,
    workload: Workload,
    cursor: u64,
}

impl std::fmt::Debug for RawLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawLoop")
            .field("files", &self.config.files)
            .field("iodepth", &self.config.iodepth)
            .field("fixed", &self.fixed)
            .finish_non_exhaustive()
    }
}

impl RawLoop {
    /// Opens the files and sets the ring and the buffers up (filled with a
    /// non-zero byte, so writes do not write zeroes the filesystem could
    /// skip).
    pub fn new(config: RawLoopConfig) -> Result<Self, String> {
        let depth = config.iodepth.max(1);
        let ring = Ring::new(RingConfig {
            entries: depth,
            iopoll: config.iopoll,
            sqpoll_idle_ms: config.sqpoll.then_some(1000),
        })
        .map_err(|e| format!("cannot set up an io_uring: {e}"))?;
        let writes = config.pattern.writes();
        let flags = libc::O_CLOEXEC | if config.direct { libc::O_DIRECT } else { 0 };
        let files = config
            .files
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
        let bytes = depth as usize * config.io_size as usize;
        let mut buffers =
            MmapMut::map_anon(bytes).map_err(|e| format!("cannot map {bytes} bytes: {e}"))?;
        buffers.fill(0x5a);
        let mut this = Self {
            ring,
            files,
            buffers,
            fixed: false,
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
            let region = [libc::iovec {
                iov_base: this.buffers.as_mut_ptr().cast(),
                iov_len: this.buffers.len(),
            }];
            // SAFETY: the buffers are this loop's own anonymous mapping,
            // which lives (declared after the ring) until the ring is
            // dropped.
            this.fixed = unsafe { this.ring.register_buffers(&region) }.is_ok();
        }
        Ok(this)
    }

    /// Whether the buffers are registered as fixed buffers.
    pub fn fixed_buffers(&self) -> bool {
        self.fixed
    }

    /// The next I/O: (write, file, offset).
    fn next(&mut self) -> (bool, usize, u64) {
        let units = self.workload.units();
        let files = self.files.len() as u64;
        let total = units * files;
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
        let (write, file, offset) = self.next();
        let len = self.config.io_size as u32;
        // In bounds: `index` < depth and the mapping holds depth buffers.
        let buf = self
            .buffers
            .as_mut_ptr()
            .wrapping_add(index as usize * len as usize);
        let fd = types::Fd(self.files[file].as_raw_fd());
        let sqe = match (write, self.fixed) {
            (true, true) => opcode::WriteFixed::new(fd, buf, len, 0)
                .offset(offset)
                .build(),
            (false, true) => opcode::ReadFixed::new(fd, buf, len, 0)
                .offset(offset)
                .build(),
            (true, false) => opcode::Write::new(fd, buf, len).offset(offset).build(),
            (false, false) => opcode::Read::new(fd, buf, len).offset(offset).build(),
        }
        .user_data(u64::from(index));
        self.slots[index as usize].at = Some(now);
        // SAFETY: the buffer is slot `index`'s part of `buffers` and the fd
        // one of `files`, both of which outlive the ring (field order); a
        // slot is reused only after its CQE is reaped; fixed-buffer
        // operations name buffer 0, the registered mapping, which holds
        // the range.
        let pushed = unsafe { self.ring.push(&sqe) };
        debug_assert!(pushed, "the ring holds depth SQEs and depth CQEs");
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
        while !self.free.is_empty() {
            self.submit(start);
        }
        let expected = self.config.io_size as i32;
        let mut iterations = 0u32;
        let mut running = true;
        while running || self.ring.outstanding() > 0 {
            self.ring.publish();
            let now = Instant::now();
            let Self {
                ring, slots, free, ..
            } = self;
            ring.reap(|cqe| {
                let index = cqe.user_data() as u32;
                let slot = &mut slots[index as usize];
                if let Some(at) = slot.at.take() {
                    result
                        .latencies
                        .record(now.saturating_duration_since(at).as_nanos() as u64);
                }
                let res = cqe.result();
                if res != expected {
                    result.errors += 1;
                    result.first_error.get_or_insert_with(|| {
                        if res < 0 {
                            std::io::Error::from_raw_os_error(-res).to_string()
                        } else {
                            format!("{res} bytes moved instead of {expected}")
                        }
                    });
                }
                result.ios += 1;
                free.push(index);
            });
            iterations = iterations.wrapping_add(1);
            if running && iterations.is_multiple_of(64) && now >= end {
                running = false;
            }
            if running {
                while !self.free.is_empty() {
                    self.submit(now);
                }
            }
        }
        result.elapsed = start.elapsed();
        result.enters = self.ring.enters() - enters_before;
        result
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
            files: files.clone(),
            range: 1 << 20,
            io_size: 4096,
            iodepth: 8,
            pattern: Pattern::RandWrite,
            rwmix_read: 50,
            direct: true,
            iopoll: false,
            sqpoll: false,
            fixed_buffers: true,
            runtime: Duration::from_millis(50),
            seed: 1,
        };
        let mut writes = RawLoop::new(config.clone()).unwrap();
        let w = writes.run();
        assert!(w.ios > 0 && w.errors == 0, "{w:?}");
        assert_eq!(w.latencies.count(), w.ios);
        assert!(w.enters > 0 && w.enters <= w.ios, "{w:?}");
        drop(writes);
        // Writes landed in both files (0x5a bytes).
        for f in &files {
            assert!(std::fs::read(f).unwrap().contains(&0x5a));
        }
        let mut reads = RawLoop::new(RawLoopConfig {
            pattern: Pattern::Read,
            fixed_buffers: false,
            ..config
        })
        .unwrap();
        assert!(!reads.fixed_buffers());
        let r = reads.run();
        assert!(r.ios > 0 && r.errors == 0 && r.rate() > 0.0, "{r:?}");
    }
}
