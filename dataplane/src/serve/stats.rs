//! Statistics of `dataplane serve`: per device and per reactor, over an
//! interval, as text and JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::bench::report::us;
use crate::initiator::LatencySummary;

/// One device over the interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceStats {
    /// LIO device name.
    pub name: String,
    /// LIO HBA number (`user_<hba>`).
    pub hba: u32,
    /// UIO device, e.g. `uio0`.
    pub uio: String,
    /// Bdev behind the LUN.
    pub bdev: String,
    /// Reactor index.
    pub reactor: usize,
    /// Commands completed in the interval.
    pub commands: u64,
    /// Commands per second.
    pub iops: f64,
    /// Data bytes per second (buffer sizes of received commands).
    pub bytes_per_sec: f64,
    /// Doorbells rung in the interval.
    pub doorbells: u64,
    /// Doorbells per completed command.
    pub doorbells_per_io: f64,
    /// Latency inside the dataplane (ring walk to response), ns.
    pub latency_ns: LatencySummary,
    /// Commands completed since attach.
    pub commands_total: u64,
    /// Malformed ring entries since attach.
    pub malformed_total: u64,
    /// Set when the ring could not be walked any more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// One reactor over the interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReactorLoad {
    /// Reactor name.
    pub name: String,
    /// Pinned CPU.
    pub core: Option<usize>,
    /// Busy time / wall time.
    pub busy_fraction: f64,
    /// Busy nanoseconds.
    pub busy_ns: u64,
    /// Idle nanoseconds.
    pub idle_ns: u64,
    /// Nanoseconds asleep.
    pub sleep_ns: u64,
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
    /// Reactors.
    pub reactors: Vec<ReactorLoad>,
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
            let _ = writeln!(
                s,
                "  {} ({}, bdev {}, reactor {}): {:.0} IOPS, {:.1} MiB/s, latency p50 {} us p99 {} us p99.9 {} us, {:.3} doorbells/IO{}",
                d.name,
                d.uio,
                d.bdev,
                d.reactor,
                d.iops,
                d.bytes_per_sec / (1 << 20) as f64,
                us(l.p50),
                us(l.p99),
                us(l.p999),
                d.doorbells_per_io,
                d.fault
                    .as_ref()
                    .map(|f| format!(", RING BROKEN: {f}"))
                    .unwrap_or_default()
            );
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
