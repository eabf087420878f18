//! What a run leaves beside its report for pictures and histogram files:
//! every completion latency of the measured window and the completion rate
//! sampled at a fixed interval ([`RunTrace`]).
//!
//! The rate is sampled by the bench's own thread (the initiator loop of
//! `window.rs`), from the completion counters it keeps anyway: a reactor
//! never does any of this work, and nothing is done per command. The
//! samples' storage is reserved before the window opens, so taking one is a
//! sum over the devices' counters and a push that does not allocate.

use std::time::Duration;

use dataplane::latency::Latencies;

/// Completions per second over one sampling interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IopsSample {
    /// End of the interval, from the start of the measured window.
    pub at: Duration,
    /// Completions in the interval divided by its length.
    pub iops: f64,
}

/// One frontend's run: its latencies and its completion rate over time.
#[derive(Debug, Clone)]
pub struct RunTrace {
    /// The frontend's name (`tcmu`, `scst`), as the report names it.
    pub frontend: String,
    /// Every completion latency of the measured window (the histogram the
    /// report's `latency_ns` summarises; its count is the report's `ios`).
    pub latencies: Latencies,
    /// The completion rate, one sample per [`IopsSampler::interval`] of the
    /// measured window, in time order. Only whole intervals are sampled:
    /// the drain at the end of the window (no new submissions) is not.
    pub iops: Vec<IopsSample>,
}

/// Takes [`IopsSample`]s from a running total of completions.
#[derive(Debug)]
pub(crate) struct IopsSampler {
    interval: Duration,
    next: Duration,
    last_ios: u64,
    last_at: Duration,
    samples: Vec<IopsSample>,
}

impl IopsSampler {
    /// About this many samples per run (exactly so for runs of 2 s to
    /// 200 s), at least [`Self::MIN_INTERVAL`] and at most
    /// [`Self::MAX_INTERVAL`] apart.
    const TARGET_SAMPLES: u32 = 200;
    const MIN_INTERVAL: Duration = Duration::from_millis(10);
    const MAX_INTERVAL: Duration = Duration::from_secs(1);

    /// The sampling interval of a window of `runtime`: about 200 samples,
    /// between 10 ms and 1 s apart.
    pub fn interval(runtime: Duration) -> Duration {
        (runtime / Self::TARGET_SAMPLES).clamp(Self::MIN_INTERVAL, Self::MAX_INTERVAL)
    }

    /// A sampler for a window of `runtime`, with room for all its samples.
    pub fn new(runtime: Duration) -> Self {
        let interval = Self::interval(runtime);
        let capacity = (runtime.as_nanos() / interval.as_nanos()).min(1 << 20) as usize + 2;
        Self {
            interval,
            next: interval,
            last_ios: 0,
            last_at: Duration::ZERO,
            samples: Vec::with_capacity(capacity),
        }
    }

    /// True once the current interval is over at `elapsed` (time since the
    /// window opened).
    #[inline]
    pub fn due(&self, elapsed: Duration) -> bool {
        elapsed >= self.next
    }

    /// Records the interval ending at `elapsed`, given the completions of
    /// the window so far.
    pub fn sample(&mut self, elapsed: Duration, total_ios: u64) {
        let dt = elapsed.saturating_sub(self.last_at).as_secs_f64();
        if dt > 0.0 {
            self.samples.push(IopsSample {
                at: elapsed,
                iops: total_ios.saturating_sub(self.last_ios) as f64 / dt,
            });
        }
        self.last_ios = total_ios;
        self.last_at = elapsed;
        // A late sample (the loop was busy) does not make the next ones
        // pile up: the next interval starts at this one's end.
        while self.next <= elapsed {
            self.next += self.interval;
        }
    }

    /// The samples taken, in time order.
    pub fn finish(self) -> Vec<IopsSample> {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_bounded() {
        assert_eq!(
            IopsSampler::interval(Duration::from_millis(200)),
            Duration::from_millis(10)
        );
        assert_eq!(
            IopsSampler::interval(Duration::from_secs(10)),
            Duration::from_millis(50)
        );
        assert_eq!(
            IopsSampler::interval(Duration::from_secs(3600)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn samples_rates_per_interval() {
        let mut s = IopsSampler::new(Duration::from_secs(1));
        let ms = Duration::from_millis;
        assert!(!s.due(ms(5)));
        assert!(s.due(ms(10)));
        s.sample(ms(10), 100);
        assert!(!s.due(ms(15)));
        // A late sample covers the whole time since the last one.
        s.sample(ms(40), 400);
        assert!(!s.due(ms(45)));
        assert!(s.due(ms(50)));
        let samples = s.finish();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].at, ms(10));
        assert!((samples[0].iops - 10_000.0).abs() < 1e-6);
        assert!((samples[1].iops - 10_000.0).abs() < 1e-6);
    }
}
