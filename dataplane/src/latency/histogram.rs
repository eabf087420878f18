//! Latency histograms (HDR) in nanoseconds and their summary.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in nanoseconds, as reports print them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Smallest latency.
    pub min: u64,
    /// Mean latency.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest latency.
    pub max: u64,
}

/// A latency histogram from 1 ns to 60 s with 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// Highest trackable latency: 60 s.
    pub const MAX_NS: u64 = 60_000_000_000;

    /// An empty histogram (allocates its buckets now, never later).
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, Self::MAX_NS, 3)
            .expect("constant histogram bounds are valid");
        Self { histogram }
    }

    /// Records one latency (clamped to the trackable range).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.histogram.saturating_record(ns.clamp(1, Self::MAX_NS));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        self.histogram.reset();
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// A percentile (0..=100) in ns; 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.histogram.is_empty() {
            return 0;
        }
        self.histogram.value_at_percentile(p)
    }

    /// The underlying HDR histogram (values in nanoseconds), for writers
    /// of standard histogram formats.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// The percentiles and extremes.
    pub fn summary(&self) -> LatencySummary {
        if self.histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            min: self.histogram.min(),
            mean: self.histogram.mean(),
            p50: self.histogram.value_at_percentile(50.0),
            p99: self.histogram.value_at_percentile(99.0),
            p999: self.histogram.value_at_percentile(99.9),
            max: self.histogram.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_samples() {
        let mut l = Latencies::new();
        assert_eq!(l.summary(), LatencySummary::default());
        for ns in 1..=1000u64 {
            l.record(ns * 1000);
        }
        let s = l.summary();
        assert_eq!(l.count(), 1000);
        assert_eq!(s.min, 1000);
        // 3 significant digits: values are exact to within 0.1 %.
        assert!((499_000..=501_000).contains(&s.p50), "{s:?}");
        assert!((989_000..=991_000).contains(&s.p99), "{s:?}");
        assert!((998_000..=1_001_000).contains(&s.max), "{s:?}");
        let mut m = Latencies::new();
        m.record(5);
        m.merge(&l);
        assert_eq!(m.count(), 1001);
        assert_eq!(m.summary().min, 5);
    }
}
