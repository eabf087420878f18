//! The measured window of a run: the initiators' loop over every device
//! (warm-up, measurement, drain), the progress samples it gives each
//! second, the completion rate it samples for pictures (`trace.rs`), and
//! the counters at its start and end.

use std::time::{Duration, Instant};

use bdev::nvme::NvmeStats;
use dataplane::latency::Latencies;
use dataplane::serve::stats::{UringBdev, UringCounters};
use reactor::{IdlePolicy, ReactorHandle, ReactorStats};

use crate::config::BenchConfig;
use crate::devices::BenchDevice;
use crate::error::BenchError;
use crate::initiator::{Initiator, JobSnapshot};
use crate::trace::{IopsSample, IopsSampler};

/// One progress sample (every second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Time since the start of the run (ramp included).
    pub elapsed: Duration,
    /// True while warming up.
    pub ramping: bool,
    /// IOPS over the last interval.
    pub iops: f64,
    /// Bytes per second over the last interval.
    pub bytes_per_sec: f64,
    /// p99 latency over the last interval.
    pub p99_ns: u64,
    /// Errors so far (in the measured window).
    pub errors: u64,
    /// Verify mismatches so far (in the measured window).
    pub verify_mismatches: u64,
}

/// Counters at the start of the measured window.
pub(crate) struct Baseline {
    /// When the window started.
    pub at: Instant,
    /// Reactor counters then.
    pub reactors: Vec<ReactorStats>,
    /// Doorbells the dataplane had rung.
    pub doorbells: u64,
    /// Notifications the simulated kernels had sent.
    pub notifications: u64,
    /// The counters of the bdevs over storage (`file`, `nvme`), summed.
    pub storage: UringCounters,
    /// Each `nvme` bdev's own counters, device by device.
    pub nvme: Vec<NvmeStats>,
}

/// The counters of every bdev over storage of `devices`, summed.
pub(crate) fn storage_counters(devices: &[BenchDevice]) -> UringCounters {
    let mut sum = UringCounters::default();
    for bdev in devices.iter().flat_map(|d| &d.storage) {
        sum.add(&bdev.counters());
    }
    sum
}

/// The counters of every `nvme` bdev of `devices`, device by device.
pub(crate) fn nvme_stats(devices: &[BenchDevice]) -> Vec<NvmeStats> {
    devices
        .iter()
        .flat_map(|d| &d.storage)
        .filter_map(UringBdev::nvme_stats)
        .collect()
}

fn baseline(reactors: &[ReactorHandle], devices: &[BenchDevice]) -> Baseline {
    Baseline {
        storage: storage_counters(devices),
        nvme: nvme_stats(devices),
        at: Instant::now(),
        reactors: reactors.iter().map(ReactorHandle::stats).collect(),
        doorbells: devices.iter().map(|d| d.job.initiator().doorbells()).sum(),
        notifications: devices
            .iter()
            .map(|d| d.job.initiator().notifications())
            .sum(),
    }
}

/// The measured window.
pub(crate) struct Window {
    /// Counters at its start.
    pub base: Baseline,
    /// Reactor counters when the last I/O of the window completed.
    pub reactor_end: Vec<ReactorStats>,
    /// The counters of the bdevs over storage then, summed.
    pub storage_end: UringCounters,
    /// Each `nvme` bdev's own counters then.
    pub nvme_end: Vec<NvmeStats>,
    /// From the start of the window to the last completion.
    pub elapsed: Duration,
    /// Completion latencies of every device in the window.
    pub latencies: Latencies,
    /// The completion rate of all devices over the window, per interval.
    pub iops: Vec<IopsSample>,
}

/// How the initiator loop waits when it found nothing to do: spins, or
/// (adaptive policy, every device with a completion fd) after a run of
/// idle iterations waits in `poll(2)` on the devices' completion fds, at
/// most the policy's longest sleep.
struct IdleWait {
    /// Idle iterations before waiting; `None`: always spin.
    before_wait: Option<u32>,
    max_wait_ms: i32,
    idle_iterations: u32,
    fds: Vec<libc::pollfd>,
}

impl IdleWait {
    fn new(policy: IdlePolicy, devices: &[BenchDevice]) -> Self {
        let fds: Option<Vec<libc::pollfd>> = devices
            .iter()
            .map(|d| {
                d.job.initiator().completion_fd().map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
            })
            .collect();
        match (policy, fds) {
            (
                IdlePolicy::Adaptive {
                    idle_polls_before_sleep,
                    max_sleep,
                    ..
                },
                Some(fds),
            ) => Self {
                before_wait: Some(idle_polls_before_sleep),
                max_wait_ms: max_sleep.as_millis().clamp(1, 1000) as i32,
                idle_iterations: 0,
                fds,
            },
            _ => Self {
                before_wait: None,
                max_wait_ms: 0,
                idle_iterations: 0,
                fds: Vec::new(),
            },
        }
    }

    fn busy(&mut self) {
        self.idle_iterations = 0;
    }

    fn idle(&mut self) {
        let Some(before_wait) = self.before_wait else {
            std::hint::spin_loop();
            return;
        };
        self.idle_iterations += 1;
        if self.idle_iterations < before_wait {
            std::hint::spin_loop();
            return;
        }
        self.idle_iterations = 0;
        // SAFETY: `fds` is a live array of `fds.len()` pollfds; the fds
        // are the devices' doorbell eventfds, open while the devices are.
        // An error (EINTR) only ends the wait early.
        unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                self.max_wait_ms,
            )
        };
    }
}

/// The initiator loop: ramp, measure, drain.
pub(crate) fn drive(
    config: &BenchConfig,
    reactors: &[ReactorHandle],
    devices: &mut [BenchDevice],
    progress: &mut impl FnMut(&Progress),
) -> Result<Window, BenchError> {
    let start = Instant::now();
    let ramp_end = start + config.ramp;
    let mut ramping = !config.ramp.is_zero();
    let mut base = baseline(reactors, devices);
    let mut window_end = if ramping {
        None
    } else {
        Some(start + config.runtime)
    };
    let mut next_report = start + Duration::from_secs(1);
    let mut interval = Latencies::new();
    let mut last = JobSnapshot::default();
    let mut last_at = start;
    let mut iterations = 0u32;
    // Reserved now: sampling in the window does not allocate.
    let mut sampler = IopsSampler::new(config.runtime);
    let mut idle = IdleWait::new(config.sim_idle, devices);
    loop {
        let mut work = 0;
        for d in devices.iter_mut() {
            work += d.job.step(true)?;
        }
        if work == 0 {
            idle.idle();
        } else {
            idle.busy();
        }
        iterations = iterations.wrapping_add(1);
        if !iterations.is_multiple_of(64) {
            continue;
        }
        let now = Instant::now();
        if !ramping && sampler.due(now.duration_since(base.at)) {
            let ios = devices.iter().map(|d| d.job.snapshot().ios).sum();
            sampler.sample(now.duration_since(base.at), ios);
        }
        if now >= next_report {
            next_report += Duration::from_secs(1);
            let mut totals = JobSnapshot::default();
            for d in devices.iter_mut() {
                d.job.take_interval(&mut interval);
                let s = d.job.snapshot();
                totals.ios += s.ios;
                totals.bytes += s.bytes;
                totals.errors += s.errors;
                totals.verify_mismatches += s.verify_mismatches;
            }
            let dt = now.duration_since(last_at).as_secs_f64().max(1e-9);
            progress(&Progress {
                elapsed: now.duration_since(start),
                ramping,
                iops: totals.ios.saturating_sub(last.ios) as f64 / dt,
                bytes_per_sec: totals.bytes.saturating_sub(last.bytes) as f64 / dt,
                p99_ns: interval.percentile(99.0),
                errors: totals.errors,
                verify_mismatches: totals.verify_mismatches,
            });
            interval.reset();
            last = totals;
            last_at = now;
        }
        if ramping && now >= ramp_end {
            ramping = false;
            for d in devices.iter_mut() {
                d.job.reset_counters();
            }
            base = baseline(reactors, devices);
            window_end = Some(base.at + config.runtime);
            last = JobSnapshot::default();
            last_at = base.at;
        }
        if window_end.is_some_and(|end| now >= end) {
            break;
        }
    }
    // I/Os issued in the window complete before it closes: the window ends
    // at the last completion, and everything in it is counted.
    for d in devices.iter_mut() {
        d.job.drain(Duration::from_secs(10))?;
    }
    let elapsed = base.at.elapsed();
    let reactor_end = reactors.iter().map(ReactorHandle::stats).collect();
    let storage_end = storage_counters(devices);
    let nvme_end = nvme_stats(devices);
    let mut latencies = Latencies::new();
    for d in devices.iter() {
        latencies.merge(d.job.latencies());
    }
    Ok(Window {
        base,
        reactor_end,
        storage_end,
        nvme_end,
        elapsed,
        latencies,
        iops: sampler.finish(),
    })
}
