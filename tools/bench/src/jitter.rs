//! The platform's own latency floor: how often a CPU stalls a thread that
//! does nothing but read the clock.
//!
//! On a virtual machine the hypervisor, and on any machine interrupts and
//! other tasks, take a spinning thread off its CPU now and then. Every I/O in
//! flight during such a stall waits for it, so these stalls set a floor under
//! tail latency that no dataplane can beat. `dataplane bench --jitter` spins
//! on every CPU the bench uses, all at once, before the run and reports the
//! stalls next to the measured latencies.

use std::time::Duration;

use reactor::clock;
use serde::Serialize;

/// Stalls seen on one CPU.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CoreJitter {
    /// The CPU.
    pub core: usize,
    /// Gaps longer than 5 µs per second.
    pub gaps_over_5us_per_sec: f64,
    /// Gaps longer than 20 µs per second.
    pub gaps_over_20us_per_sec: f64,
    /// Gaps longer than 100 µs per second.
    pub gaps_over_100us_per_sec: f64,
    /// Longest gap in nanoseconds.
    pub max_gap_ns: u64,
}

/// Spins on `core` for `duration`, counting gaps between consecutive clock
/// reads.
pub fn measure_core(core: usize, duration: Duration) -> CoreJitter {
    // Pinning failure only makes the numbers less specific; keep measuring.
    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: core });
    let thresholds = [5_000, 20_000, 100_000].map(clock::ns_to_ticks);
    let mut counts = [0u64; 3];
    let mut max_gap = 0u64;
    let start = clock::now();
    let end = start + clock::duration_to_ticks(duration);
    let mut last = start;
    loop {
        let now = clock::now();
        let gap = now.wrapping_sub(last);
        if gap > thresholds[0] {
            for (count, &limit) in counts.iter_mut().zip(&thresholds) {
                if gap > limit {
                    *count += 1;
                }
            }
            max_gap = max_gap.max(gap);
        }
        last = now;
        if now >= end {
            break;
        }
    }
    let secs = clock::ticks_to_ns(last - start) as f64 / 1e9;
    CoreJitter {
        core,
        gaps_over_5us_per_sec: counts[0] as f64 / secs,
        gaps_over_20us_per_sec: counts[1] as f64 / secs,
        gaps_over_100us_per_sec: counts[2] as f64 / secs,
        max_gap_ns: clock::ticks_to_ns(max_gap),
    }
}

/// Spins on every core in `cores` at the same time.
pub fn measure(cores: &[usize], duration: Duration) -> Vec<CoreJitter> {
    clock::init();
    std::thread::scope(|s| {
        let handles: Vec<_> = cores
            .iter()
            .map(|&core| s.spawn(move || measure_core(core, duration)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("jitter thread does not panic"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_consistent() {
        let j = measure(&[0], Duration::from_millis(50));
        assert_eq!(j.len(), 1);
        let j = &j[0];
        assert_eq!(j.core, 0);
        assert!(j.gaps_over_5us_per_sec >= j.gaps_over_20us_per_sec);
        assert!(j.gaps_over_20us_per_sec >= j.gaps_over_100us_per_sec);
        if j.gaps_over_5us_per_sec > 0.0 {
            assert!(j.max_gap_ns > 5_000);
        }
    }
}
