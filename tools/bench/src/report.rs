//! What `dataplane bench` reports: the JSON object and its text rendering.

use std::fmt::Write as _;

use serde::Serialize;

use dataplane::latency::{us, LatencySummary};
use reactor::stats::ReactorLoad;

/// The reference loop measured in the same run (`--reference`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReferenceReport {
    /// Copies per second of the reference loop: the mean of the runs before
    /// and after the dataplane run.
    pub copies_per_sec: f64,
    /// Copies per second measured before the dataplane run.
    pub before_copies_per_sec: f64,
    /// Copies per second measured after the dataplane run.
    pub after_copies_per_sec: f64,
    /// The dataplane's IOPS divided by `copies_per_sec`.
    pub ratio: f64,
}

/// The other frontend, run with the same settings in the same process
/// (`--compare`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompareReport {
    /// Its frontend.
    pub frontend: String,
    /// Its IOPS.
    pub iops: f64,
    /// Its doorbells (TCMU: 4-byte writes; SCST: ioctls) per I/O.
    pub doorbells_per_io: f64,
    /// Its failed I/Os.
    pub errors: u64,
    /// Its verify mismatches.
    pub verify_mismatches: u64,
    /// This run's IOPS divided by its IOPS.
    pub ratio: f64,
}

/// The result of one bench run. The field names are the JSON keys.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchReport {
    /// `tcmu` (or `scst`).
    pub frontend: String,
    /// `ram`, `null` or `striped`.
    pub bdev: String,
    /// Access pattern.
    pub rw: String,
    /// Bytes per I/O (fio's `bs`).
    pub block_size: u64,
    /// The device's logical block size.
    pub device_block_size: u32,
    /// I/Os in flight per device.
    pub iodepth: u32,
    /// Devices (rings) driven.
    pub devices: usize,
    /// Percent of reads (randrw).
    pub rwmix_read: u32,
    /// Length of the measured window in seconds.
    pub runtime_s: f64,
    /// I/Os completed in the window.
    pub ios: u64,
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
    /// I/Os per second.
    pub iops: f64,
    /// Bytes per second.
    pub bytes_per_sec: f64,
    /// I/Os that did not complete with GOOD status.
    pub errors: u64,
    /// Blocks whose data did not verify (0 without `--verify`).
    pub verify_mismatches: u64,
    /// True if data was verified.
    pub verify: bool,
    /// Completion latency seen by the initiator.
    pub latency_ns: LatencySummary,
    /// Completion doorbells rung by the dataplane in the window.
    pub doorbells: u64,
    /// Doorbells per I/O.
    pub doorbells_per_io: f64,
    /// Notifications the simulated kernel sent (kernel → dataplane).
    pub notifications: u64,
    /// Busy time / wall time, averaged over reactors.
    pub reactor_busy_fraction: f64,
    /// Reactor busy nanoseconds per I/O (all reactors).
    pub reactor_ns_per_io: f64,
    /// Reactor idle policy.
    pub idle: String,
    /// Per-reactor detail over the measured window, with the loop and
    /// poller figures.
    pub reactors: Vec<ReactorLoad>,
    /// The reference loop, when requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceReport>,
    /// The other frontend in the same process, when requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareReport>,
    /// Stalls of a bare spinning thread on each CPU, when requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Vec<crate::jitter::CoreJitter>>,
    /// First errors and mismatches, described.
    pub notes: Vec<String>,
}

fn human_rate(bytes_per_sec: f64) -> String {
    format!("{:.1} MiB/s", bytes_per_sec / (1 << 20) as f64)
}

impl BenchReport {
    /// A readable multi-line summary.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "dataplane bench: frontend={} bdev={} rw={} bs={} iodepth={} devices={} idle={}{}",
            self.frontend,
            self.bdev,
            self.rw,
            self.block_size,
            self.iodepth,
            self.devices,
            self.idle,
            if self.verify { " verify" } else { "" }
        );
        let _ = writeln!(
            s,
            "  {:.0} IOPS, {} over {:.2} s ({} I/Os: {} reads, {} writes)",
            self.iops,
            human_rate(self.bytes_per_sec),
            self.runtime_s,
            self.ios,
            self.reads,
            self.writes
        );
        let l = &self.latency_ns;
        let _ = writeln!(
            s,
            "  latency (us): min {} mean {:.1} p50 {} p99 {} p99.9 {} max {}",
            us(l.min),
            l.mean / 1000.0,
            us(l.p50),
            us(l.p99),
            us(l.p999),
            us(l.max)
        );
        let _ = writeln!(
            s,
            "  doorbells {} ({:.4} per I/O), kernel notifications {}",
            self.doorbells, self.doorbells_per_io, self.notifications
        );
        let _ = writeln!(
            s,
            "  reactors: busy {:.1}%, {:.1} ns busy per I/O",
            self.reactor_busy_fraction * 100.0,
            self.reactor_ns_per_io
        );
        for r in &self.reactors {
            let core = r.core.map_or_else(|| "-".to_string(), |c| c.to_string());
            let (iterations, busy_iterations) = r
                .detail
                .as_ref()
                .map_or((0, 0), |d| (d.iterations, d.busy_iterations));
            let _ = writeln!(
                s,
                "    {} (core {}): busy {:.1}%, sleep {:.1} ms, {} iterations ({} busy)",
                r.name,
                core,
                r.busy_fraction * 100.0,
                r.sleep_ns as f64 / 1e6,
                iterations,
                busy_iterations
            );
            for p in r.detail.iter().flat_map(|d| &d.pollers) {
                let _ = writeln!(
                    s,
                    "      {}: {:.1} ms busy, {} work items",
                    p.name,
                    p.busy_ns as f64 / 1e6,
                    p.work
                );
            }
        }
        if let Some(reference) = &self.reference {
            let _ = writeln!(
                s,
                "  reference copy loop: {:.0} copies/s (before {:.0}, after {:.0}); dataplane/reference = {:.2}",
                reference.copies_per_sec,
                reference.before_copies_per_sec,
                reference.after_copies_per_sec,
                reference.ratio
            );
        }
        if let Some(c) = &self.compare {
            let _ = writeln!(
                s,
                "  {} in the same run: {:.0} IOPS, {:.4} doorbells per I/O, errors {}, mismatches {}; {}/{} = {:.2}",
                c.frontend,
                c.iops,
                c.doorbells_per_io,
                c.errors,
                c.verify_mismatches,
                self.frontend,
                c.frontend,
                c.ratio
            );
        }
        for j in self.jitter.iter().flatten() {
            let _ = writeln!(
                s,
                "  platform stalls on CPU {}: {:.0}/s over 5 us, {:.0}/s over 20 us, {:.0}/s over 100 us, longest {} us",
                j.core,
                j.gaps_over_5us_per_sec,
                j.gaps_over_20us_per_sec,
                j.gaps_over_100us_per_sec,
                us(j.max_gap_ns)
            );
        }
        let _ = writeln!(
            s,
            "  errors {}, verify mismatches {}",
            self.errors, self.verify_mismatches
        );
        for note in &self.notes {
            let _ = writeln!(s, "  ! {note}");
        }
        s
    }
}
