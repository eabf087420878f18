//! Statistics of the bdevs: the huge pages of RAM bdevs, the I/O of the
//! bdevs over io_uring (`file` and `nvme`), in one shape where the two mean
//! the same, plus an NVMe namespace's own figures and identity, and why a
//! bdev is unavailable.
//!
//! [`UringBdev`] and [`UringCounters`] are what `file` and `nvme` bdevs
//! have in common for a report: the bench sums the same counters over its
//! devices, and reports the same [`NvmeNamespace`].

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use bdev::file::{FileBdev, FileStats};
use bdev::nvme::{NvmeBdev, NvmeStats, UnmapMode};
use bdev::ram::huge_page_percent as percent;
use bdev::{Bdev, BdevRef};
use serde::Serialize;

/// A bdev over the io_uring engine, whose I/O is reported.
#[derive(Debug, Clone)]
pub enum UringBdev {
    /// A `file` bdev.
    File(Arc<FileBdev>),
    /// An `nvme` bdev, with the unmap mode it was opened with.
    Nvme {
        /// The bdev.
        bdev: Arc<NvmeBdev>,
        /// Its configured unmap mode.
        unmap: UnmapMode,
    },
}

impl UringBdev {
    /// The file, block device or generic NVMe device it is over.
    pub fn path(&self) -> &Path {
        match self {
            UringBdev::File(file) => file.path(),
            UringBdev::Nvme { bdev, .. } => bdev.path(),
        }
    }

    /// The bdev.
    pub fn bdev(&self) -> BdevRef {
        match self {
            UringBdev::File(file) => Arc::clone(file) as BdevRef,
            UringBdev::Nvme { bdev, .. } => Arc::clone(bdev) as BdevRef,
        }
    }

    /// What its channels did so far.
    pub fn counters(&self) -> UringCounters {
        match self {
            UringBdev::File(file) => file.stats().into(),
            UringBdev::Nvme { bdev, .. } => bdev.stats().into(),
        }
    }

    /// The nvme bdev's own counters, for an nvme bdev.
    pub fn nvme_stats(&self) -> Option<NvmeStats> {
        match self {
            UringBdev::File(_) => None,
            UringBdev::Nvme { bdev, .. } => Some(bdev.stats()),
        }
    }
}

/// The counters `file` and `nvme` bdevs both keep, with the same meaning
/// (see [`FileStats`] and [`NvmeStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UringCounters {
    /// Requests completed.
    pub completed: u64,
    /// `io_uring_enter` calls.
    pub submit_syscalls: u64,
    /// Polls of the channels.
    pub polls: u64,
    /// Requests (file) or commands (nvme) whose data went through the
    /// bounce pool.
    pub bounced: u64,
    /// Requests (file) or commands (nvme) on registered fixed buffers.
    pub fixed: u64,
    /// Requests that waited in a channel before they went to the kernel.
    pub waited: u64,
    /// Failed (retried) enters.
    pub enter_errors: u64,
}

impl From<FileStats> for UringCounters {
    fn from(s: FileStats) -> Self {
        Self {
            completed: s.completed,
            submit_syscalls: s.submit_syscalls,
            polls: s.polls,
            bounced: s.bounced,
            fixed: s.fixed,
            waited: s.waited,
            enter_errors: s.enter_errors,
        }
    }
}

impl From<NvmeStats> for UringCounters {
    fn from(s: NvmeStats) -> Self {
        Self {
            completed: s.completed,
            submit_syscalls: s.submit_syscalls,
            polls: s.polls,
            bounced: s.bounced,
            fixed: s.fixed,
            waited: s.waited,
            enter_errors: s.enter_errors,
        }
    }
}

impl UringCounters {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &UringCounters) {
        self.completed += other.completed;
        self.submit_syscalls += other.submit_syscalls;
        self.polls += other.polls;
        self.bounced += other.bounced;
        self.fixed += other.fixed;
        self.waited += other.waited;
        self.enter_errors += other.enter_errors;
    }

    /// What was counted since `earlier` (counters only grow).
    pub fn since(&self, earlier: &UringCounters) -> UringCounters {
        UringCounters {
            completed: self.completed.saturating_sub(earlier.completed),
            submit_syscalls: self.submit_syscalls.saturating_sub(earlier.submit_syscalls),
            polls: self.polls.saturating_sub(earlier.polls),
            bounced: self.bounced.saturating_sub(earlier.bounced),
            fixed: self.fixed.saturating_sub(earlier.fixed),
            waited: self.waited.saturating_sub(earlier.waited),
            enter_errors: self.enter_errors.saturating_sub(earlier.enter_errors),
        }
    }

    /// `io_uring_enter` calls per completed request (0 with none).
    pub fn submit_syscalls_per_io(&self) -> f64 {
        if self.completed == 0 {
            0.0
        } else {
            self.submit_syscalls as f64 / self.completed as f64
        }
    }
}

/// One bdev, now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BdevStats {
    /// The bdev's configured name.
    pub name: String,
    /// Fraction (0 to 1) of its memory backed by huge pages, read when the
    /// report is made (RAM bdevs of at least one huge page; absent for the
    /// others). It can fall after start: an UNMAP of whole huge pages
    /// returns them to the kernel, and the memory written again later may
    /// come back on base pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub huge_page_fraction: Option<f64>,
    /// A `file` bdev's I/O over the interval (absent for the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<UringIoStats>,
    /// An `nvme` bdev's I/O over the interval and its namespace (absent
    /// for the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvme: Option<NvmeBdevStats>,
    /// What a `fault` bdev injected since start (absent for the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<super::FaultBdevStats>,
    /// Why the bdev could not be made at start (its file or device could
    /// not be opened, or a child of a striped bdev could not): devices
    /// naming it are refused. Absent for the bdevs that serve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// What an io_uring bdev's channels did over the interval (every channel:
/// one per reactor that serves a device over the bdev): the `file` object,
/// and the part of the `nvme` object with the same meaning.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UringIoStats {
    /// The file, block device or generic NVMe device.
    pub path: String,
    /// Requests completed in the interval.
    pub ios: u64,
    /// Requests completed since start.
    pub ios_total: u64,
    /// `io_uring_enter` calls per request completed in the interval (at
    /// most one per poll, none while idle; 0 with no request).
    pub submit_syscalls_per_io: f64,
    /// `io_uring_enter` calls in the interval.
    pub submit_syscalls: u64,
    /// Data that went through the bounce pool in the interval: reads and
    /// writes whose buffers do not meet the O_DIRECT alignment (file), NVMe
    /// commands whose buffers the kernel could not map (nvme).
    pub bounced: u64,
    /// Reads and writes (file) or NVMe commands (nvme) on registered fixed
    /// buffers, in the interval.
    pub fixed_ios: u64,
    /// Requests that waited in a channel for ring room, a slot or bounce
    /// buffers, in the interval.
    pub waits: u64,
    /// Failed `io_uring_enter` calls (retried), in the interval.
    pub enter_errors: u64,
    /// Whether the frontends' memory is registered as io_uring fixed
    /// buffers: absent until a device offered it, false when the kernel
    /// refused (the reason went to stderr once) or a poller declined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_registered: Option<bool>,
}

impl UringIoStats {
    /// The figures of the bdev at `path` between its counters `last` and
    /// `now` (without `memory_registered`, which its pollers know).
    pub fn between(path: &Path, last: &UringCounters, now: &UringCounters) -> Self {
        let d = now.since(last);
        Self {
            path: path.display().to_string(),
            ios: d.completed,
            ios_total: now.completed,
            submit_syscalls_per_io: d.submit_syscalls_per_io(),
            submit_syscalls: d.submit_syscalls,
            bounced: d.bounced,
            fixed_ios: d.fixed,
            waits: d.waited,
            enter_errors: d.enter_errors,
            memory_registered: None,
        }
    }
}

/// What an `nvme` bdev did over the interval: the figures it shares with a
/// `file` bdev, its own, and its namespace.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NvmeBdevStats {
    /// The figures with the `file` object's meaning (same keys).
    #[serde(flatten)]
    pub io: UringIoStats,
    /// NVMe commands completed in the interval (more than `ios` when
    /// requests were split).
    pub commands: u64,
    /// Reads and writes larger than one command (MDTS), sent as several,
    /// in the interval.
    pub splits: u64,
    /// Commands sent vectored (several iovecs, no copy), in the interval.
    pub vectored: u64,
    /// Commands the controller completed with an error status, in the
    /// interval.
    pub status_errors: u64,
    /// The last error status since start, described (absent if none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
    /// Who the namespace is and what the bdev made of it.
    pub namespace: NvmeNamespace,
}

impl NvmeBdevStats {
    /// The figures of `bdev` (opened with `unmap`) between its counters
    /// `last` and `now` (without `memory_registered`).
    pub fn between(bdev: &NvmeBdev, unmap: UnmapMode, last: &NvmeStats, now: &NvmeStats) -> Self {
        Self {
            io: UringIoStats::between(
                bdev.path(),
                &UringCounters::from(*last),
                &UringCounters::from(*now),
            ),
            commands: now.commands.saturating_sub(last.commands),
            splits: now.split.saturating_sub(last.split),
            vectored: now.vectored.saturating_sub(last.vectored),
            status_errors: now.status_errors.saturating_sub(last.status_errors),
            last_status: (now.last_status != 0)
                .then(|| bdev::nvme::status::describe(now.last_status as i32)),
            namespace: NvmeNamespace::of(bdev, unmap),
        }
    }
}

/// An NVMe namespace as an `nvme` bdev found it at open (Identify
/// Controller and Namespace, the kernel's queue limits) and serves it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NvmeNamespace {
    /// Model Number.
    pub model: String,
    /// Serial Number.
    pub serial: String,
    /// Firmware Revision.
    pub firmware: String,
    /// NVMe version of the controller, "major.minor".
    pub version: String,
    /// Namespace ID.
    pub nsid: u32,
    /// Bytes per logical block (the LBA format's data size).
    pub lba_size: u32,
    /// Index of the LBA format in use.
    pub lba_format: u8,
    /// Namespace size in bytes.
    pub capacity_bytes: u64,
    /// MDTS in bytes (with 4 KiB pages); absent: the controller sets no
    /// limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mdts_bytes: Option<u64>,
    /// Largest read or write command the bdev sends (MDTS and the kernel's
    /// limits); larger requests are split.
    pub command_bytes: u64,
    /// The controller has a volatile write cache (VWC): the LUN reports
    /// WCE and SYNCHRONIZE CACHE sends a Flush.
    pub volatile_write_cache: bool,
    /// The configured `unmap`: `auto`, `deallocate` or `write-zeroes`.
    pub unmap_mode: &'static str,
    /// What an UNMAP is on this namespace: `write-zeroes`, `deallocate`, or
    /// `none` (the controller has neither command).
    pub unmap: &'static str,
    /// Unmapped blocks read back as zeroes (SCSI LBPRZ), reported only
    /// when an UNMAP is a Write Zeroes.
    pub lbprz: bool,
    /// The kernel takes vectored passthrough commands (Linux 6.1+).
    pub vectored: bool,
}

/// The name of an unmap mode, as the configuration writes it.
pub fn unmap_mode_name(mode: UnmapMode) -> &'static str {
    match mode {
        UnmapMode::Auto => "auto",
        UnmapMode::Deallocate => "deallocate",
        UnmapMode::WriteZeroes => "write-zeroes",
    }
}

impl NvmeNamespace {
    /// What `bdev`, opened with `unmap`, reports of its namespace.
    pub fn of(bdev: &NvmeBdev, unmap: UnmapMode) -> Self {
        let id = bdev.identity();
        let g = bdev.geometry();
        let caps = bdev.capabilities();
        Self {
            model: id.model.clone(),
            serial: id.serial.clone(),
            firmware: id.firmware.clone(),
            version: id.version.clone(),
            nsid: id.nsid,
            lba_size: g.block_size,
            lba_format: id.lba_format,
            capacity_bytes: g.size_bytes(),
            mdts_bytes: id.mdts_bytes,
            command_bytes: id.command_bytes,
            volatile_write_cache: caps.volatile_cache,
            unmap_mode: unmap_mode_name(unmap),
            // An unmap that reads back zeroes is a Write Zeroes (the bdev
            // never claims LBPRZ for a Dataset Management deallocation).
            unmap: match (caps.unmap, caps.unmap_reads_zeroes) {
                (false, _) => "none",
                (true, true) => "write-zeroes",
                (true, false) => "deallocate",
            },
            lbprz: caps.unmap && caps.unmap_reads_zeroes,
            vectored: id.vectored,
        }
    }

    /// One line: who it is and how it is served.
    pub fn describe(&self) -> String {
        let mdts = self
            .mdts_bytes
            .map_or_else(|| "no MDTS".to_string(), |b| format!("MDTS {}", kib(b)));
        format!(
            "{} (serial {}, firmware {}, NVMe {}), namespace {}, {} bytes, {}-byte LBAs \
             (format {}), {mdts}, commands of up to {}, {}, unmap {}{}{}",
            self.model,
            self.serial,
            self.firmware,
            self.version,
            self.nsid,
            self.capacity_bytes,
            self.lba_size,
            self.lba_format,
            kib(self.command_bytes),
            if self.volatile_write_cache {
                "volatile write cache (FUA and Flush sent)"
            } else {
                "no volatile write cache"
            },
            self.unmap,
            if self.lbprz { " (LBPRZ)" } else { "" },
            if self.unmap_mode == "auto" {
                String::new()
            } else {
                format!(" as configured ({})", self.unmap_mode)
            },
        )
    }
}

/// Bytes as KiB.
fn kib(bytes: u64) -> String {
    format!("{} KiB", bytes >> 10)
}

/// An io_uring bdev with its counters at the previous report: what turns
/// its totals into interval figures.
#[derive(Debug)]
pub(in crate::serve) struct Tracked {
    bdev: UringBdev,
    last: UringCounters,
    last_nvme: NvmeStats,
}

impl Tracked {
    /// The bdev.
    pub fn bdev(&self) -> &UringBdev {
        &self.bdev
    }

    /// From zero, as at start.
    pub fn new(bdev: UringBdev) -> Self {
        Self {
            bdev,
            last: UringCounters::default(),
            last_nvme: NvmeStats::default(),
        }
    }

    /// The `file` or `nvme` figures since the previous call, with whether
    /// the frontends' memory is registered.
    pub fn report(
        &mut self,
        memory_registered: Option<bool>,
    ) -> (Option<UringIoStats>, Option<NvmeBdevStats>) {
        match &self.bdev {
            UringBdev::File(file) => {
                let now = UringCounters::from(file.stats());
                let mut io = UringIoStats::between(file.path(), &self.last, &now);
                io.memory_registered = memory_registered;
                self.last = now;
                (Some(io), None)
            }
            UringBdev::Nvme { bdev, unmap } => {
                let now = bdev.stats();
                let mut stats = NvmeBdevStats::between(bdev, *unmap, &self.last_nvme, &now);
                stats.io.memory_registered = memory_registered;
                self.last_nvme = now;
                (None, Some(stats))
            }
        }
    }
}

impl BdevStats {
    /// The bdev's lines of the text report (none for a bdev with nothing
    /// to say).
    pub(super) fn render(&self, s: &mut String) {
        if let Some(f) = self.huge_page_fraction {
            let _ = writeln!(s, "  bdev {}: {} on huge pages", self.name, percent(f));
        }
        if let Some(f) = &self.file {
            let _ = writeln!(s, "  bdev {} ({}): {}", self.name, f.path, io_line(f, ""));
        }
        if let Some(n) = &self.nvme {
            let mut extra = format!(", {} commands, {} split", n.commands, n.splits);
            if n.status_errors > 0 {
                let _ = write!(extra, ", {} failed", n.status_errors);
            }
            let _ = writeln!(
                s,
                "  bdev {} ({}, nvme): {}",
                self.name,
                n.io.path,
                io_line(&n.io, &extra)
            );
            let _ = writeln!(s, "    {}", n.namespace.describe());
            if let Some(status) = &n.last_status {
                let _ = writeln!(s, "    last error: {status}");
            }
        }
        if let Some(f) = &self.fault {
            f.render(&self.name, s);
        }
        if let Some(why) = &self.unavailable {
            let _ = writeln!(s, "  bdev {}: UNAVAILABLE: {why}", self.name);
        }
    }
}

/// The I/O figures an io_uring bdev's line shows, `extra` after the count.
fn io_line(f: &UringIoStats, extra: &str) -> String {
    let fixed = match f.memory_registered {
        Some(true) => ", memory registered",
        Some(false) => ", memory not registered",
        None => "",
    };
    format!(
        "{} I/Os{extra}, {:.3} io_uring_enter/IO, {} fixed, {} bounced, {} waited{fixed}",
        f.ios, f.submit_syscalls_per_io, f.fixed_ios, f.bounced, f.waits
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_both_bdevs_add_and_subtract() {
        let file = UringCounters::from(FileStats {
            completed: 10,
            submit_syscalls: 4,
            polls: 20,
            bounced: 1,
            fixed: 9,
            waited: 2,
            enter_errors: 0,
        });
        let nvme = UringCounters::from(NvmeStats {
            completed: 6,
            commands: 8,
            split: 1,
            submit_syscalls: 2,
            polls: 5,
            bounced: 3,
            fixed: 5,
            vectored: 0,
            waited: 1,
            enter_errors: 1,
            status_errors: 0,
            last_status: 0,
        });
        let mut sum = file;
        sum.add(&nvme);
        assert_eq!(
            sum,
            UringCounters {
                completed: 16,
                submit_syscalls: 6,
                polls: 25,
                bounced: 4,
                fixed: 14,
                waited: 3,
                enter_errors: 1,
            }
        );
        assert_eq!(sum.since(&file), nvme);
        assert!((sum.submit_syscalls_per_io() - 0.375).abs() < 1e-9);
        assert_eq!(UringCounters::default().submit_syscalls_per_io(), 0.0);
        let io = UringIoStats::between(Path::new("/dev/ng0n1"), &file, &sum);
        assert_eq!((io.ios, io.ios_total, io.fixed_ios), (6, 16, 5));
        assert!((io.submit_syscalls_per_io - 2.0 / 6.0).abs() < 1e-9);
    }

    fn namespace() -> NvmeNamespace {
        NvmeNamespace {
            model: "QEMU NVMe Ctrl".into(),
            serial: "deadbeef".into(),
            firmware: "8.0.0".into(),
            version: "1.4".into(),
            nsid: 1,
            lba_size: 512,
            lba_format: 0,
            capacity_bytes: 1 << 30,
            mdts_bytes: Some(512 << 10),
            command_bytes: 508 << 10,
            volatile_write_cache: true,
            unmap_mode: "auto",
            unmap: "write-zeroes",
            lbprz: true,
            vectored: true,
        }
    }

    #[test]
    fn nvme_bdevs_render_with_their_namespace() {
        let io = UringIoStats {
            path: "/dev/ng0n1".into(),
            ios: 100,
            ios_total: 300,
            submit_syscalls_per_io: 0.25,
            submit_syscalls: 25,
            bounced: 0,
            fixed_ios: 100,
            waits: 3,
            enter_errors: 0,
            memory_registered: Some(true),
        };
        let stats = BdevStats {
            name: "nvme0".into(),
            huge_page_fraction: None,
            file: None,
            nvme: Some(NvmeBdevStats {
                io,
                commands: 104,
                splits: 2,
                vectored: 0,
                status_errors: 1,
                last_status: Some("NVMe status type 0x2 code 0x81".into()),
                namespace: namespace(),
            }),
            fault: None,
            unavailable: None,
        };
        let mut text = String::new();
        stats.render(&mut text);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "  bdev nvme0 (/dev/ng0n1, nvme): 100 I/Os, 104 commands, 2 split, 1 failed, 0.250 \
             io_uring_enter/IO, 100 fixed, 0 bounced, 3 waited, memory registered"
        );
        assert_eq!(
            lines[1],
            "    QEMU NVMe Ctrl (serial deadbeef, firmware 8.0.0, NVMe 1.4), namespace 1, \
             1073741824 bytes, 512-byte LBAs (format 0), MDTS 512 KiB, commands of up to 508 \
             KiB, volatile write cache (FUA and Flush sent), unmap write-zeroes (LBPRZ)"
        );
        assert_eq!(lines[2], "    last error: NVMe status type 0x2 code 0x81");
    }
}
