//! What `dataplane bench` reports: the JSON object and its text rendering.

use std::fmt::Write as _;

use serde::Serialize;

use bdev::ram::huge_page_percent as percent;
use dataplane::latency::{us, LatencySummary};
use dataplane::serve::stats::NvmeBdevStats;
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
    /// Fraction of the source buffer backed by huge pages (it is mapped
    /// like a RAM bdev's memory, so that the ratio compares like with like);
    /// `null` where it cannot be read.
    pub huge_page_fraction: Option<f64>,
}

/// The raw io_uring loop measured in the same run (`--reference` with a
/// bdev over storage; see [`crate::raw_uring`] and [`crate::raw_nvme`]).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RawLoopReport {
    /// What the raw loop sends: `"io_uring"` reads and writes (file
    /// bdevs), `"nvme_uring_cmd"` NVMe commands through passthrough (nvme
    /// bdevs). Either way this is the raw loop, not the copy loop.
    pub kind: String,
    /// I/Os per second of the raw loop: the mean of the runs before and
    /// after the dataplane run.
    pub ios_per_sec: f64,
    /// I/Os per second measured before the dataplane run.
    pub before_ios_per_sec: f64,
    /// I/Os per second measured after the dataplane run.
    pub after_ios_per_sec: f64,
    /// The dataplane's IOPS divided by `ios_per_sec`.
    pub ratio: f64,
    /// The raw loop's latency, submission to completion (both runs).
    pub latency_ns: LatencySummary,
    /// The dataplane's p50 latency minus the raw loop's, in nanoseconds.
    pub p50_excess_ns: i64,
    /// I/Os the raw loop kept in flight (the run's iodepth times its
    /// devices).
    pub iodepth: u32,
    /// Whether the raw loop's buffers were registered as fixed buffers
    /// (as the run's frontend memory is unless `--no-fixed-buffers`).
    pub fixed_buffers: bool,
    /// The raw loop's `io_uring_enter` calls per I/O.
    pub submit_syscalls_per_io: f64,
    /// I/Os of the raw loop that failed.
    pub errors: u64,
}

/// What `--reference` measured beside the run: the copy loop (RAM, null
/// and striped-over-RAM runs) or the raw io_uring loop (runs over files or
/// NVMe namespaces). Both carry `ratio`; in JSON the object is the one or
/// the other.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Reference {
    /// The reference copy loop.
    Copy(ReferenceReport),
    /// The raw io_uring loop.
    IoUring(RawLoopReport),
}

impl Reference {
    /// The dataplane's IOPS divided by the reference's rate.
    pub fn ratio(&self) -> f64 {
        match self {
            Reference::Copy(r) => r.ratio,
            Reference::IoUring(r) => r.ratio,
        }
    }

    /// The copy loop's report, if this is one.
    pub fn copy(&self) -> Option<&ReferenceReport> {
        match self {
            Reference::Copy(r) => Some(r),
            Reference::IoUring(_) => None,
        }
    }

    /// The raw loop's report, if this is one.
    pub fn io_uring(&self) -> Option<&RawLoopReport> {
        match self {
            Reference::Copy(_) => None,
            Reference::IoUring(r) => Some(r),
        }
    }
}

/// What the `file` bdevs of a run did in the measured window (`--bdev
/// file`, or `striped` over files).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FileReport {
    /// The files or block devices, device by device.
    pub paths: Vec<String>,
    /// Files this run created (sparse).
    pub created: Vec<String>,
    /// O_DIRECT.
    pub direct: bool,
    /// IORING_SETUP_IOPOLL.
    pub iopoll: bool,
    /// IORING_SETUP_SQPOLL.
    pub sqpoll: bool,
    /// Each channel's ring depth (the run's iodepth).
    pub queue_depth: u32,
    /// Requests the file bdevs completed (a striped bdev's children count
    /// each piece).
    pub bdev_ios: u64,
    /// `io_uring_enter` calls.
    pub submit_syscalls: u64,
    /// Polls of the file bdevs' channels (the bdev poller polls its
    /// channel twice per poll, so at most one enter per bdev poller poll
    /// means `submit_syscalls` is at most half of this).
    pub channel_polls: u64,
    /// Reads and writes through the bounce pool (misaligned buffers).
    pub bounced: u64,
    /// Reads and writes on registered fixed buffers.
    pub fixed_ios: u64,
    /// Requests that waited in a channel for ring room or bounce chunks.
    pub waits: u64,
    /// Failed (retried) enters.
    pub enter_errors: u64,
    /// The frontend's memory was offered as fixed buffers (not
    /// `--no-fixed-buffers`).
    pub fixed_buffers_offered: bool,
    /// Every device's memory is registered as io_uring fixed buffers (the
    /// kernel may refuse: then one line on stderr said why).
    pub memory_registered: bool,
}

/// What the `nvme` bdevs of a run did in the measured window (`--bdev
/// nvme`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NvmeReport {
    /// IORING_SETUP_IOPOLL.
    pub iopoll: bool,
    /// Each channel's ring depth (the run's iodepth).
    pub queue_depth: u32,
    /// The frontend's memory was offered as fixed buffers (not
    /// `--no-fixed-buffers`).
    pub fixed_buffers_offered: bool,
    /// Every device's memory is registered as io_uring fixed buffers (the
    /// kernel may refuse: then one line on stderr said why).
    pub memory_registered: bool,
    /// Each device's bdev over the window, in the shape `dataplane serve`
    /// reports an nvme bdev: the figures it shares with file bdevs (`path`,
    /// `ios`, `submit_syscalls_per_io`, `submit_syscalls`, `bounced`,
    /// `fixed_ios`, `waits`, `enter_errors`, `memory_registered`), its
    /// `commands`, `splits`, `vectored`, `status_errors`, `last_status`,
    /// and its `namespace` (identity, LBA size, MDTS, largest command,
    /// volatile write cache, unmap).
    pub bdevs: Vec<NvmeBdevStats>,
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
    /// Its RAM bdevs' fraction on huge pages (`null` for `null`).
    pub ram_huge_page_fraction: Option<f64>,
}

/// The result of one bench run. The field names are the JSON keys.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchReport {
    /// `tcmu` (or `scst`).
    pub frontend: String,
    /// `ram`, `null`, `striped`, `file` or `nvme`.
    pub bdev: String,
    /// Access pattern.
    pub rw: String,
    /// Bytes per I/O (fio's `bs`).
    pub block_size: u64,
    /// The device's logical block size.
    pub device_block_size: u32,
    /// I/Os in flight per device.
    pub iodepth: u32,
    /// Simulated kernel work per command, ns (`--kernel-ns`).
    pub kernel_ns: u64,
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
    /// Fraction (0 to 1) of the RAM bdevs' memory backed by huge pages,
    /// measured after it was prefaulted and collapsed, before the run
    /// (`ram`, `striped`; `null` for the `null` bdev). Below 1, TLB misses
    /// cost page walks and RAM-bdev figures are not comparable.
    pub ram_huge_page_fraction: Option<f64>,
    /// Why `MADV_COLLAPSE` could not bring all of it onto huge pages, when
    /// it failed (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ram_huge_page_collapse: Option<String>,
    /// Bdev `io_uring_enter` calls per I/O in the window (0 for bdevs
    /// without a ring: `ram`, `null`).
    pub submit_syscalls_per_io: f64,
    /// What the file bdevs did, for a file-backed run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileReport>,
    /// What the nvme bdevs did, for an nvme run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvme: Option<NvmeReport>,
    /// The reference loop, when requested: the copy loop, or the raw
    /// io_uring loop for a run over files or namespaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
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
    /// The warning for stderr when the RAM bdevs' memory or the reference
    /// buffer is not wholly on huge pages: the fractions, why the figures
    /// are then not comparable, and the fix for `huge_page_bytes` of such
    /// memory ([`BenchConfig::huge_page_bytes`](crate::BenchConfig::huge_page_bytes)).
    /// `None` when everything measured is on huge pages.
    pub fn huge_page_warning(&self, huge_page_bytes: u64) -> Option<String> {
        let mut short = Vec::new();
        if let Some(f) = self.ram_huge_page_fraction.filter(|&f| f < 1.0) {
            short.push(format!("{} of the RAM bdev memory", percent(f)));
        }
        let reference = self
            .reference
            .as_ref()
            .and_then(Reference::copy)
            .and_then(|r| r.huge_page_fraction);
        if let Some(f) = reference.filter(|&f| f < 1.0) {
            short.push(format!("{} of the reference loop's buffer", percent(f)));
        }
        if short.is_empty() {
            return None;
        }
        let why = self
            .ram_huge_page_collapse
            .as_ref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        Some(format!(
            "warning: only {} on huge pages{why}: RAM-bdev figures are then not comparable \
             (TLB misses on the rest cost page walks, which can cut IOPS several-fold); \
             to fix, {}",
            short.join(" and "),
            bdev::ram::huge_page_remedy(huge_page_bytes)
        ))
    }
}

impl BenchReport {
    /// A readable multi-line summary.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "dataplane bench: frontend={} bdev={} rw={} bs={} iodepth={} devices={} kernel_ns={} idle={}{}",
            self.frontend,
            self.bdev,
            self.rw,
            self.block_size,
            self.iodepth,
            self.devices,
            self.kernel_ns,
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
        let reference_huge = self
            .reference
            .as_ref()
            .and_then(Reference::copy)
            .and_then(|r| r.huge_page_fraction);
        if self.ram_huge_page_fraction.is_some() || reference_huge.is_some() {
            let mut parts = Vec::new();
            if let Some(f) = self.ram_huge_page_fraction {
                parts.push(format!("RAM bdev memory {}", percent(f)));
            }
            if let Some(f) = reference_huge {
                parts.push(format!("reference buffer {}", percent(f)));
            }
            let _ = writeln!(s, "  on huge pages: {}", parts.join(", "));
        }
        if let Some(f) = &self.file {
            let _ = writeln!(
                s,
                "  file bdev: {:.4} io_uring_enter per I/O ({} enters, {} channel polls), {} fixed, \
                 {} bounced, {} waited; memory {}{}",
                self.submit_syscalls_per_io,
                f.submit_syscalls,
                f.channel_polls,
                f.fixed_ios,
                f.bounced,
                f.waits,
                if f.memory_registered {
                    "registered as fixed buffers"
                } else if f.fixed_buffers_offered {
                    "not registered (refused)"
                } else {
                    "not offered"
                },
                if f.direct { "" } else { "; buffered (no O_DIRECT)" }
            );
        }
        if let Some(n) = &self.nvme {
            let sum = |f: fn(&NvmeBdevStats) -> u64| n.bdevs.iter().map(f).sum::<u64>();
            let failed = sum(|b| b.status_errors);
            let _ = writeln!(
                s,
                "  nvme bdev: {:.4} io_uring_enter per I/O ({} enters), {} commands ({} split, \
                 {} vectored{}), {} fixed, {} bounced, {} waited; memory {}",
                self.submit_syscalls_per_io,
                sum(|b| b.io.submit_syscalls),
                sum(|b| b.commands),
                sum(|b| b.splits),
                sum(|b| b.vectored),
                if failed > 0 {
                    format!(", {failed} failed")
                } else {
                    String::new()
                },
                sum(|b| b.io.fixed_ios),
                sum(|b| b.io.bounced),
                sum(|b| b.io.waits),
                if n.memory_registered {
                    "registered as fixed buffers"
                } else if n.fixed_buffers_offered {
                    "not registered (refused)"
                } else {
                    "not offered"
                },
            );
            for b in &n.bdevs {
                let _ = writeln!(s, "    {}: {}", b.io.path, b.namespace.describe());
                if let Some(status) = &b.last_status {
                    let _ = writeln!(s, "    last error: {status}");
                }
            }
        }
        match &self.reference {
            Some(Reference::Copy(reference)) => {
                let _ = writeln!(
                    s,
                    "  reference copy loop: {:.0} copies/s (before {:.0}, after {:.0}); dataplane/reference = {:.2}",
                    reference.copies_per_sec,
                    reference.before_copies_per_sec,
                    reference.after_copies_per_sec,
                    reference.ratio
                );
            }
            Some(Reference::IoUring(raw)) => {
                let _ = writeln!(
                    s,
                    "  raw {} loop (QD {}{}): {:.0} IOPS (before {:.0}, after {:.0}), \
                     latency p50 {} us p99 {} us; dataplane/raw = {:.3}, p50 {:+.1} us",
                    if raw.kind == "nvme_uring_cmd" {
                        "NVMe passthrough"
                    } else {
                        "io_uring"
                    },
                    raw.iodepth,
                    if raw.fixed_buffers {
                        ", fixed buffers"
                    } else {
                        ""
                    },
                    raw.ios_per_sec,
                    raw.before_ios_per_sec,
                    raw.after_ios_per_sec,
                    us(raw.latency_ns.p50),
                    us(raw.latency_ns.p99),
                    raw.ratio,
                    raw.p50_excess_ns as f64 / 1000.0
                );
            }
            None => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ram: Option<f64>, reference: Option<f64>) -> BenchReport {
        BenchReport {
            frontend: "tcmu".into(),
            bdev: "ram".into(),
            rw: "randread".into(),
            block_size: 4096,
            device_block_size: 4096,
            iodepth: 128,
            kernel_ns: 0,
            devices: 1,
            rwmix_read: 50,
            runtime_s: 1.0,
            ios: 1000,
            reads: 1000,
            writes: 0,
            iops: 1000.0,
            bytes_per_sec: 4096000.0,
            errors: 0,
            verify_mismatches: 0,
            verify: false,
            latency_ns: LatencySummary::default(),
            doorbells: 10,
            doorbells_per_io: 0.01,
            notifications: 10,
            reactor_busy_fraction: 1.0,
            reactor_ns_per_io: 1000.0,
            idle: "busy".into(),
            reactors: Vec::new(),
            ram_huge_page_fraction: ram,
            ram_huge_page_collapse: None,
            submit_syscalls_per_io: 0.0,
            file: None,
            nvme: None,
            reference: reference.map(|f| {
                Reference::Copy(ReferenceReport {
                    copies_per_sec: 2000.0,
                    before_copies_per_sec: 2000.0,
                    after_copies_per_sec: 2000.0,
                    ratio: 0.5,
                    huge_page_fraction: Some(f),
                })
            }),
            compare: None,
            jitter: None,
            notes: Vec::new(),
        }
    }

    #[test]
    fn no_warning_when_all_memory_is_on_huge_pages() {
        assert_eq!(
            report(Some(1.0), Some(1.0)).huge_page_warning(1 << 31),
            None
        );
        // The null bdev has no memory to speak of.
        assert_eq!(report(None, None).huge_page_warning(0), None);
        let text = report(Some(1.0), Some(1.0)).render_text();
        assert!(
            text.contains("\n  on huge pages: RAM bdev memory 100.0%, reference buffer 100.0%\n"),
            "{text}"
        );
        assert!(!report(None, None).render_text().contains("huge pages"));
    }

    #[test]
    fn warning_names_the_fraction_the_consequence_and_the_fix() {
        let mut r = report(Some(0.3756), None);
        r.ram_huge_page_collapse =
            Some("ram0: MADV_COLLAPSE failed: Cannot allocate memory".into());
        let warning = r.huge_page_warning(1 << 30).unwrap();
        assert_eq!(
            warning,
            "warning: only 37.5% of the RAM bdev memory on huge pages \
             (ram0: MADV_COLLAPSE failed: Cannot allocate memory): RAM-bdev figures are then \
             not comparable (TLB misses on the rest cost page walks, which can cut IOPS \
             several-fold); to fix, reserve huge pages (`sysctl vm.nr_hugepages=512` for 1 GiB, \
             more if other programs use huge pages) or compact memory \
             (`echo 1 > /proc/sys/vm/compact_memory`) and retry"
        );
        // Only the reference buffer short, and just short: not shown as 100%.
        let warning = report(Some(1.0), Some(0.9999))
            .huge_page_warning(3 << 30)
            .unwrap();
        assert!(
            warning
                .starts_with("warning: only 99.9% of the reference loop's buffer on huge pages:"),
            "{warning}"
        );
        assert!(
            warning.contains("`sysctl vm.nr_hugepages=1536` for 3 GiB"),
            "{warning}"
        );
        let both = report(Some(0.0), Some(0.5))
            .huge_page_warning(1 << 30)
            .unwrap();
        assert!(both.starts_with(
            "warning: only 0.0% of the RAM bdev memory and 50.0% of the reference loop's buffer on huge pages:"
        ));
        let text = report(Some(0.0), Some(0.5)).render_text();
        assert!(text.contains("\n  on huge pages: RAM bdev memory 0.0%, reference buffer 50.0%\n"));
    }
}
