//! Latency: HDR histograms in nanoseconds with their summary
//! ([`Latencies`], [`LatencySummary`]), and the per-command recorder a
//! frontend keeps on its reactor ([`LatencyRecorder`]) with the shared
//! window the statistics thread reads and the cumulative buckets a metrics
//! thread reads ([`SharedLatency`]).

mod histogram;
mod recorder;

pub use histogram::{Latencies, LatencySummary};
pub use recorder::{CumulativeLatency, LatencyRecorder, LatencyWindow, SharedLatency};

/// Nanoseconds as microseconds with one decimal, as reports print them.
pub fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}
