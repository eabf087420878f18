//! Command latency inside the dataplane, recorded on a reactor and read by
//! `serve`'s statistics.
//!
//! A frontend records, per command, the clock ticks from receiving it to
//! handing its response back to the kernel. Recording goes into a histogram
//! owned by the frontend's reactor thread ([`LatencyRecorder`]); about every
//! 50 ms that histogram is merged into a [`SharedLatency`] under a mutex the
//! statistics thread also takes. So the per-command cost is one histogram
//! increment, and the lock is taken twenty times a second, not per command.
//!
//! Values are clock ticks ([`reactor::clock`]); they are converted to
//! nanoseconds when read.

use std::sync::{Arc, Mutex, MutexGuard};

use hdrhistogram::Histogram;
use reactor::clock;

use super::LatencySummary;

/// Longest latency tracked: 60 s (longer ones are clamped).
const MAX_NS: u64 = 60_000_000_000;
/// How often a recorder publishes into its shared histogram.
const FLUSH_EVERY_NS: u64 = 50_000_000;

fn new_histogram() -> Histogram<u64> {
    let max_ticks = clock::ns_to_ticks(MAX_NS).max(2);
    // Two significant digits (1 % precision) keep the histogram small (a few
    // tens of KiB) so recording stays in cache.
    Histogram::new_with_bounds(1, max_ticks, 2).expect("constant bounds are valid")
}

/// Latencies published by one recorder, read by the statistics thread.
#[derive(Debug)]
pub struct SharedLatency {
    histogram: Mutex<Histogram<u64>>,
}

/// Latencies taken from a [`SharedLatency`], in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencyWindow {
    /// Commands recorded.
    pub count: u64,
    /// Percentiles and extremes.
    pub summary: LatencySummary,
}

impl SharedLatency {
    fn lock(&self) -> MutexGuard<'_, Histogram<u64>> {
        self.histogram
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns what was recorded since the last call and starts afresh.
    pub fn take(&self) -> LatencyWindow {
        let mut h = self.lock();
        let window = if h.is_empty() {
            LatencyWindow::default()
        } else {
            let ns = |ticks: u64| clock::ticks_to_ns(ticks);
            LatencyWindow {
                count: h.len(),
                summary: LatencySummary {
                    min: ns(h.min()),
                    mean: ns(h.mean() as u64) as f64,
                    p50: ns(h.value_at_percentile(50.0)),
                    p99: ns(h.value_at_percentile(99.0)),
                    p999: ns(h.value_at_percentile(99.9)),
                    max: ns(h.max()),
                },
            }
        };
        h.reset();
        window
    }
}

/// Records latencies on the frontend's thread; see the module docs.
#[derive(Debug)]
pub struct LatencyRecorder {
    local: Histogram<u64>,
    shared: Arc<SharedLatency>,
    last_flush: u64,
    flush_ticks: u64,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// A recorder with an empty shared histogram.
    pub fn new() -> Self {
        Self {
            local: new_histogram(),
            shared: Arc::new(SharedLatency {
                histogram: Mutex::new(new_histogram()),
            }),
            last_flush: clock::now(),
            flush_ticks: clock::ns_to_ticks(FLUSH_EVERY_NS),
        }
    }

    /// The histogram the statistics thread reads.
    pub fn shared(&self) -> Arc<SharedLatency> {
        Arc::clone(&self.shared)
    }

    /// Records one latency of `ticks` clock ticks.
    #[inline]
    pub fn record(&mut self, ticks: u64) {
        self.local.saturating_record(ticks.max(1));
    }

    /// Publishes if the last publication is older than ~50 ms; `now` is the
    /// caller's current clock reading.
    #[inline]
    pub fn maybe_flush(&mut self, now: u64) {
        if now.wrapping_sub(self.last_flush) >= self.flush_ticks {
            self.flush(now);
        }
    }

    /// Publishes what was recorded so far.
    pub fn flush(&mut self, now: u64) {
        self.last_flush = now;
        if self.local.is_empty() {
            return;
        }
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.shared.lock().add(&self.local);
        self.local.reset();
    }
}

impl Drop for LatencyRecorder {
    fn drop(&mut self) {
        self.flush(clock::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_and_takes_windows() {
        let mut r = LatencyRecorder::new();
        let shared = r.shared();
        let us = clock::ns_to_ticks(1_000);
        for i in 1..=100 {
            r.record(i * us);
        }
        assert_eq!(shared.take().count, 0, "nothing published yet");
        r.flush(clock::now());
        let w = shared.take();
        assert_eq!(w.count, 100);
        // 2 significant digits: within 1 % (plus tick conversion rounding).
        let near = |ns: u64, want: u64| ns.abs_diff(want) <= want / 50 + 10;
        assert!(near(w.summary.p50, 50_000), "{w:?}");
        assert!(near(w.summary.max, 100_000), "{w:?}");
        assert!(near(w.summary.min, 1_000), "{w:?}");
        assert_eq!(shared.take(), LatencyWindow::default(), "taking resets");
        r.record(us);
        drop(r);
        assert_eq!(shared.take().count, 1, "drop publishes the rest");
    }
}
