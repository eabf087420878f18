//! Command latency inside the dataplane, recorded on a reactor and read by
//! `serve`'s statistics.
//!
//! A frontend records, per command, the clock ticks from receiving it to
//! handing its response back to the kernel. Recording goes into a histogram
//! owned by the frontend's reactor thread ([`LatencyRecorder`]); about every
//! 50 ms that histogram is merged into a [`SharedLatency`] under a mutex that
//! readers (the statistics report, the metrics endpoint) hold only for an
//! O(1) swap. So the per-command cost is one histogram increment, and the
//! lock is taken twenty times a second, not per command.
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

/// Latencies published by one recorder, read by the statistics thread
/// (windows: [`take`](Self::take)) and a metrics thread (everything since
/// the recorder started: [`cumulative`](Self::cumulative)).
///
/// Two locks, so that a reader never holds the one the recorder takes for
/// longer than an O(1) swap: the recorder adds into `fresh`; a reader,
/// under `read`, swaps `fresh` with an empty spare and then, without
/// holding `fresh`, adds what it took into the window and the total.
/// Invariant: every value recorded and published is in `fresh` or in both
/// `window` (until taken) and `total`, never counted twice.
#[derive(Debug)]
pub struct SharedLatency {
    fresh: Mutex<Histogram<u64>>,
    read: Mutex<ReadSide>,
}

/// The readers' histograms, all of the same bounds as `fresh`.
#[derive(Debug)]
struct ReadSide {
    /// Empty except while a fold moves what it took from `fresh`.
    spare: Histogram<u64>,
    /// Since the last [`SharedLatency::take`].
    window: Histogram<u64>,
    /// Since the recorder started.
    total: Histogram<u64>,
}

/// Latencies taken from a [`SharedLatency`], in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencyWindow {
    /// Commands recorded.
    pub count: u64,
    /// Percentiles and extremes.
    pub summary: LatencySummary,
}

/// Every latency a recorder published, as cumulative buckets (the shape of
/// a Prometheus histogram).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CumulativeLatency {
    /// Commands recorded.
    pub count: u64,
    /// Sum of their latencies in nanoseconds (mean times count: within the
    /// histogram's 1 % precision).
    pub sum_ns: f64,
    /// Per upper bound asked for (ns, ascending): the commands whose
    /// latency was at most that bound (within 1 %).
    pub buckets: Vec<(u64, u64)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SharedLatency {
    fn new() -> Self {
        Self {
            fresh: Mutex::new(new_histogram()),
            read: Mutex::new(ReadSide {
                spare: new_histogram(),
                window: new_histogram(),
                total: new_histogram(),
            }),
        }
    }

    /// Moves what the recorder published into the window and the total;
    /// holds the recorder's lock only for a swap.
    fn fold(&self, read: &mut ReadSide) {
        std::mem::swap(&mut *lock(&self.fresh), &mut read.spare);
        if read.spare.is_empty() {
            return;
        }
        // Same bounds everywhere, so adding cannot fail.
        let _ = read.window.add(&read.spare);
        let _ = read.total.add(&read.spare);
        read.spare.reset();
    }

    /// Returns what was recorded since the last call and starts afresh.
    pub fn take(&self) -> LatencyWindow {
        let mut read = lock(&self.read);
        self.fold(&mut read);
        let h = &mut read.window;
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

    /// Everything published since the recorder started, counted into
    /// `bounds_ns` (upper bounds in nanoseconds, ascending). Does not
    /// disturb [`take`](Self::take)'s windows.
    pub fn cumulative(&self, bounds_ns: &[u64]) -> CumulativeLatency {
        let mut read = lock(&self.read);
        self.fold(&mut read);
        let h = &read.total;
        let mut buckets: Vec<(u64, u64)> = bounds_ns.iter().map(|&b| (b, 0)).collect();
        if !h.is_empty() {
            for v in h.iter_recorded() {
                let ns = clock::ticks_to_ns(v.value_iterated_to());
                let first = buckets.partition_point(|&(bound, _)| bound < ns);
                if let Some(bucket) = buckets.get_mut(first) {
                    bucket.1 += v.count_at_value();
                }
            }
            let mut running = 0;
            for bucket in &mut buckets {
                running += bucket.1;
                bucket.1 = running;
            }
        }
        CumulativeLatency {
            count: h.len(),
            sum_ns: if h.is_empty() {
                0.0
            } else {
                clock::ticks_to_ns(h.mean() as u64) as f64 * h.len() as f64
            },
            buckets,
        }
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
            shared: Arc::new(SharedLatency::new()),
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
        let _ = lock(&self.shared.fresh).add(&self.local);
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

    #[test]
    fn cumulative_counts_everything_without_disturbing_windows() {
        let mut r = LatencyRecorder::new();
        let shared = r.shared();
        let us = clock::ns_to_ticks(1_000);
        for i in 1..=100 {
            r.record(i * us);
        }
        r.flush(clock::now());
        let bounds = [10_500, 50_500, 1_000_000_000];
        let c = shared.cumulative(&bounds);
        assert_eq!(c.count, 100);
        let got: Vec<u64> = c.buckets.iter().map(|b| b.1).collect();
        // Within 1 % of 10 and 50 (tick conversion may move a value over).
        assert!(
            (9..=11).contains(&got[0]) && (49..=51).contains(&got[1]),
            "{c:?}"
        );
        assert_eq!(got[2], 100);
        let sum_us = c.sum_ns / 1_000.0;
        assert!((sum_us - 5_050.0).abs() < 5_050.0 * 0.02, "{c:?}");
        assert_eq!(shared.take().count, 100, "the window is still whole");
        r.record(us);
        r.flush(clock::now());
        assert_eq!(
            shared.cumulative(&bounds).count,
            101,
            "cumulative keeps counting"
        );
        assert_eq!(shared.take().count, 1);
        assert_eq!(shared.cumulative(&[]).buckets, []);
    }
}
