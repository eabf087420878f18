//! Statistics of `dataplane serve`: per device and per reactor, over an
//! interval, and per bdev (`bdev_stats.rs`: the huge pages of RAM bdevs,
//! read at each report; the I/O, system calls and fixed buffers of file
//! and nvme bdevs over the interval, and an NVMe namespace's identity; why
//! a bdev is unavailable; what a fault bdev injected, `fault_stats.rs`), as
//! text and JSON; and the warning serve gives at
//! start when RAM bdevs are not wholly on huge pages.

mod bdev_stats;
mod fault_stats;
mod totals;

use std::fmt::Write as _;

use bdev::ram::huge_page_percent as percent;
use reactor::stats::ReactorLoad;
use serde::Serialize;

use crate::latency::{us, LatencySummary};
use crate::tcmu::discovery::TcmuUioName;

pub(super) use bdev_stats::Tracked;
pub use bdev_stats::{
    unmap_mode_name, BdevStats, NvmeBdevStats, NvmeNamespace, UringBdev, UringCounters,
    UringIoStats,
};
pub use fault_stats::FaultBdevStats;
pub use totals::DeviceTotals;

/// Which frontend serves a device.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// LIO through TCMU (a UIO ring).
    Tcmu,
    /// SCST through scst_user.
    Scst,
}

impl DeviceKind {
    /// `"tcmu"` or `"scst"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Tcmu => "tcmu",
            DeviceKind::Scst => "scst",
        }
    }
}

/// Which device a report is about and where it runs: what the interval
/// statistics and the totals share.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// Device name: LIO's (TCMU) or SCST's.
    pub name: String,
    /// The frontend.
    pub kind: DeviceKind,
    /// LIO HBA number (`user_<hba>`); TCMU only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hba: Option<u32>,
    /// UIO device, e.g. `uio0`; TCMU only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uio: Option<String>,
    /// Bdev behind the LUN.
    pub bdev: String,
    /// Reactor index.
    pub reactor: usize,
}

impl DeviceIdentity {
    /// A TCMU device `name` on UIO `minor`, on `reactor`.
    pub fn tcmu(name: &TcmuUioName, minor: u32, reactor: usize) -> Self {
        Self {
            name: name.name.clone(),
            kind: DeviceKind::Tcmu,
            hba: Some(name.hba),
            uio: Some(format!("uio{minor}")),
            bdev: name.cfg.clone(),
            reactor,
        }
    }

    /// An SCST device `name` over `bdev`, on `reactor`.
    pub fn scst(name: &str, bdev: &str, reactor: usize) -> Self {
        Self {
            name: name.to_owned(),
            kind: DeviceKind::Scst,
            hba: None,
            uio: None,
            bdev: bdev.to_owned(),
            reactor,
        }
    }
}

/// Doorbells (TCMU) or ioctls (SCST) per completed command over an
/// interval (0 when nothing completed).
pub fn doorbells_per_io(doorbells: u64, commands: u64) -> f64 {
    if commands == 0 {
        0.0
    } else {
        doorbells as f64 / commands as f64
    }
}

/// One device over the interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceStats {
    /// Which device, and where (serialized as its own keys).
    #[serde(flatten)]
    pub device: DeviceIdentity,
    /// Commands completed in the interval.
    pub commands: u64,
    /// Commands per second.
    pub iops: f64,
    /// Data bytes per second (buffer sizes of received commands).
    pub bytes_per_sec: f64,
    /// Doorbells in the interval: 4-byte writes to the UIO fd (TCMU), or
    /// `SCST_USER_REPLY_AND_GET_MULTI` ioctls (SCST).
    pub doorbells: u64,
    /// Doorbells (TCMU) or ioctls (SCST) per completed command.
    pub doorbells_per_io: f64,
    /// Latency inside the dataplane (ring walk or EXEC received to
    /// response), ns.
    pub latency_ns: LatencySummary,
    /// Commands completed since attach.
    pub commands_total: u64,
    /// Doorbells (TCMU) or ioctls (SCST) since attach: with
    /// `commands_total`, the figure per I/O over any span between two
    /// reports.
    pub doorbells_total: u64,
    /// The completion hold in force, in microseconds: how long completions
    /// (TCMU) or replies (SCST) may wait to share one doorbell or ioctl,
    /// as the device's hold tuner chose it (0: at once).
    pub hold_us: u64,
    /// Commands received since attach (TCMU: ring entries; SCST: EXEC
    /// subcommands); minus `commands_total`, the commands in flight.
    pub received_total: u64,
    /// Malformed ring entries (TCMU), or subcommands naming a buffer the
    /// device did not hand out or of unknown subcode (SCST), since attach.
    pub malformed_total: u64,
    /// Commands the kernel's task management asked to abort while they
    /// ran, since attach (TCMU: ids listed in TMR entries, sent with
    /// `tmr_notification` on; SCST: commands a TASK_MGMT_RECEIVED
    /// affects); their backend I/O was aborted.
    pub aborts_total: u64,
    /// SCST: commands answered BUSY because the buffer pool was exhausted,
    /// since attach (raise `pool_mb` if it grows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_total: Option<u64>,
    /// SCST: REPLY_AND_GET_MULTI ioctls since attach that found no new
    /// command (EAGAIN). An idle device asks the kernel every
    /// `idle_poll_us`; those asks count as idle time of its reactor (its
    /// `busy_fraction` counts only polls that did work), so with `idle =
    /// "busy"` a reactor can spend a whole CPU here at a busy fraction of 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_ioctls_total: Option<u64>,
    /// SCST: sessions (initiator nexuses) attached to the device now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u64>,
    /// Why the device stopped talking to the kernel (TCMU: a ring fault;
    /// SCST: the errno scst_user answered), while it is faulted: from the
    /// fault until serve recovered it, or for good once serve gave up and
    /// left it blocked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// TCMU behind a tcm_loop WWN whose completion CPU serve switches
    /// (`completion_affinity = "auto"`): `"completing"` (the reactor's
    /// CPU, under concurrent load) or `"submitting"` (the initiator's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_cpu: Option<&'static str>,
    /// With `completion_cpu`: how often serve switched it since it took the
    /// WWN (a figure that grows by several a second means the load sits on
    /// the threshold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_switches_total: Option<u64>,
    /// Faults of the device since serve started (across its recoveries).
    pub faults_total: u64,
    /// Recoveries of the device since serve started: re-attached after a
    /// fault (TCMU: ring reset; SCST: registered again).
    pub recoveries_total: u64,
}

/// A statistics report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatsReport {
    /// Milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// Length of the interval in seconds.
    pub interval_s: f64,
    /// Attached devices.
    pub devices: Vec<DeviceStats>,
    /// Reactors over the interval (busy, idle and sleep time only).
    pub reactors: Vec<ReactorLoad>,
    /// Every configured bdev, by name.
    pub bdevs: Vec<BdevStats>,
}

/// The warning serve logs at start when RAM bdevs are not wholly on huge
/// pages: `short` names them with their fractions; `huge_page_bytes` is
/// the memory of all RAM bdevs, which the fix must cover. `None` when
/// `short` is empty.
pub(super) fn huge_page_warning(short: &[(String, f64)], huge_page_bytes: u64) -> Option<String> {
    if short.is_empty() {
        return None;
    }
    let list: Vec<String> = short
        .iter()
        .map(|(name, f)| format!("{name} {}", percent(*f)))
        .collect();
    Some(format!(
        "warning: RAM bdev memory not wholly on huge pages ({}): TLB misses there cost \
         page walks, which can make its I/O several times slower; to fix, {}",
        list.join(", "),
        bdev::ram::huge_page_remedy(huge_page_bytes)
    ))
}

impl StatsReport {
    /// Human-readable lines.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "stats over {:.1} s: {} device(s)",
            self.interval_s,
            self.devices.len()
        );
        for d in &self.devices {
            let l = &d.latency_ns;
            let (place, doorbells) = match d.device.kind {
                DeviceKind::Tcmu => (d.device.uio.clone().unwrap_or_default(), "doorbells"),
                DeviceKind::Scst => ("scst".to_owned(), "ioctls"),
            };
            let mut extra = String::new();
            if let Some(sessions) = d.sessions {
                let _ = write!(extra, ", {sessions} session(s)");
            }
            if let Some(busy) = d.busy_total.filter(|&b| b > 0) {
                let _ = write!(extra, ", {busy} BUSY (pool exhausted) since start");
            }
            if let (Some(cpu), Some(switches)) = (d.completion_cpu, d.completion_switches_total) {
                let _ = write!(
                    extra,
                    ", completions on the {cpu} CPU ({switches} switch(es))"
                );
            }
            if let Some(f) = &d.fault {
                let _ = write!(extra, ", FAULTED: {f}");
            }
            if d.faults_total > 0 {
                let _ = write!(
                    extra,
                    ", {} fault(s) and {} recovery(ies) since start",
                    d.faults_total, d.recoveries_total
                );
            }
            let _ = writeln!(
                s,
                "  {} ({place}, bdev {}, reactor {}): {:.0} IOPS, {:.1} MiB/s, latency p50 {} us p99 {} us p99.9 {} us, {:.3} {doorbells}/IO{extra}",
                d.device.name,
                d.device.bdev,
                d.device.reactor,
                d.iops,
                d.bytes_per_sec / (1 << 20) as f64,
                us(l.p50),
                us(l.p99),
                us(l.p999),
                d.doorbells_per_io,
            );
        }
        for b in &self.bdevs {
            b.render(&mut s);
        }
        for r in &self.reactors {
            let core = r.core.map_or_else(|| "-".into(), |c| c.to_string());
            let _ = writeln!(
                s,
                "  {} (CPU {core}): busy {:.1}%, asleep {:.1}%",
                r.name,
                r.busy_fraction * 100.0,
                r.sleep_ns as f64 / (r.busy_ns + r.idle_ns + r.sleep_ns).max(1) as f64 * 100.0
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(kind: DeviceKind) -> DeviceStats {
        let tcmu = kind == DeviceKind::Tcmu;
        DeviceStats {
            device: DeviceIdentity {
                name: "disk0".into(),
                kind,
                hba: tcmu.then_some(2),
                uio: tcmu.then(|| "uio3".to_owned()),
                bdev: "ram0".into(),
                reactor: 1,
            },
            commands: 2000,
            iops: 1000.0,
            bytes_per_sec: 4.0 * (1 << 20) as f64,
            doorbells: 50,
            doorbells_per_io: 0.025,
            latency_ns: LatencySummary {
                p50: 2_000,
                p99: 9_000,
                p999: 30_000,
                ..LatencySummary::default()
            },
            hold_us: 25,
            commands_total: 5000,
            doorbells_total: 125,
            received_total: 5001,
            malformed_total: 0,
            aborts_total: 0,
            busy_total: (!tcmu).then_some(7),
            sessions: (!tcmu).then_some(1),
            empty_ioctls_total: (!tcmu).then_some(3),
            fault: None,
            completion_cpu: None,
            completion_switches_total: None,
            faults_total: 0,
            recoveries_total: 0,
        }
    }

    #[test]
    fn both_kinds_render_as_text() {
        let report = StatsReport {
            time_unix_ms: 1,
            interval_s: 2.0,
            devices: vec![
                device(DeviceKind::Tcmu),
                device(DeviceKind::Scst),
                DeviceStats {
                    completion_cpu: Some("completing"),
                    completion_switches_total: Some(3),
                    ..device(DeviceKind::Tcmu)
                },
            ],
            reactors: Vec::new(),
            bdevs: vec![
                BdevStats {
                    name: "ram0".into(),
                    huge_page_fraction: Some(0.99951),
                    file: None,
                    nvme: None,
                    fault: None,
                    unavailable: None,
                },
                BdevStats {
                    name: "null0".into(),
                    huge_page_fraction: None,
                    file: None,
                    nvme: None,
                    fault: None,
                    unavailable: None,
                },
            ],
        };
        let text = report.render_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "stats over 2.0 s: 3 device(s)");
        assert!(
            lines[1].starts_with("  disk0 (uio3, bdev ram0, reactor 1): 1000 IOPS, 4.0 MiB/s")
                && lines[1].ends_with(", 0.025 doorbells/IO"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("  disk0 (scst, bdev ram0, reactor 1): 1000 IOPS, 4.0 MiB/s")
                && lines[2].ends_with(
                    ", 0.025 ioctls/IO, 1 session(s), 7 BUSY (pool exhausted) since start"
                ),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].ends_with(
                ", 0.025 doorbells/IO, completions on the completing CPU (3 switch(es))"
            ),
            "{}",
            lines[3]
        );
        assert_eq!(lines[4], "  bdev ram0: 99.9% on huge pages");
        assert_eq!(lines.len(), 5, "no line for a bdev without memory");
        assert_eq!(DeviceKind::Scst.as_str(), "scst");
        assert_eq!(DeviceKind::Tcmu.as_str(), "tcmu");
    }

    #[test]
    fn huge_page_warning_names_the_bdevs_and_the_fix() {
        assert_eq!(huge_page_warning(&[], 1 << 30), None);
        let warning =
            huge_page_warning(&[("ram0".into(), 0.375), ("ram1".into(), 0.0)], 2 << 30).unwrap();
        assert_eq!(
            warning,
            "warning: RAM bdev memory not wholly on huge pages (ram0 37.5%, ram1 0.0%): TLB \
             misses there cost page walks, which can make its I/O several times slower; to \
             fix, reserve huge pages (`sysctl vm.nr_hugepages=1024` for 2 GiB, more if other \
             programs use huge pages) or compact memory (`echo 1 > /proc/sys/vm/compact_memory`) \
             and retry"
        );
    }
}
