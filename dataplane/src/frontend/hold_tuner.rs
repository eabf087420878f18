//! [`HoldTuner`]: picks how long a device may hold completions back, by
//! measuring what each hold does to its throughput.
//!
//! Whether holding completions pays depends on where the time goes. When
//! the initiator's side is short of CPU (each publication wakes its core,
//! and it spends more time taking completions one at a time than it would
//! in batches), fewer, larger batches raise the device's throughput. When
//! the initiator waits on the device instead (latency-bound: a fast host,
//! a queue the device drains at once), every microsecond held is a
//! microsecond added to each command and throughput falls. Which case a
//! host is in cannot be told from the device's side alone, so the tuner
//! tries: an online comparison of hold levels.
//!
//! # The sweep
//! The levels are 0, `max_hold`/8, /4, /2 and `max_hold`. A sweep runs one
//! epoch ([`EPOCH`]) at each level up and one at each level down again
//! (0, 1, 2, 3, 4, 4, 3, 2, 1, 0: a drift of the load over the sweep
//! weighs on every level alike) and measures the completions per second of
//! each epoch after its first [`SETTLE`] (the queue adapting to the new
//! level). Then it keeps the level with the most throughput over its two
//! epochs, where a higher level must beat the best lower one by
//! [`MARGIN_PERCENT`] (holding that does not clearly pay is not worth its
//! latency), for [`STAY_EPOCHS`] epochs, and sweeps again; sooner if the
//! throughput at the kept level moves by more than [`DRIFT_PERCENT`] (the
//! workload changed).
//!
//! # Cost
//! Two additions per call, and an epoch's end once per [`EPOCH`]; no
//! allocation, no lock, no clock read (the caller passes its time).

use std::time::Duration;

use reactor::clock;

/// The hold levels a sweep tries, as fractions of `max_hold`: 0, 1/8, 1/4,
/// 1/2 and 1.
pub const LEVELS: usize = 5;
/// Length of one measuring epoch.
pub const EPOCH: Duration = Duration::from_millis(50);
/// The start of an epoch that is not counted.
pub const SETTLE: Duration = Duration::from_millis(10);
/// Epochs at the kept level between sweeps (5 s; a sweep takes 0.5 s).
pub const STAY_EPOCHS: u32 = 100;
/// How much more throughput a higher level needs to be kept.
pub const MARGIN_PERCENT: u64 = 3;
/// A throughput change at the kept level that starts a new sweep.
pub const DRIFT_PERCENT: u64 = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Measuring step `index` of a sweep (`0..2 * LEVELS`, see
    /// [`sweep_level`]).
    Sweeping { index: usize },
    /// Holding the kept level for `epochs_left` more epochs.
    Keeping { epochs_left: u32 },
}

/// See the module docs. Owned by one device.
#[derive(Debug, Clone)]
pub struct HoldTuner {
    /// The levels in clock ticks.
    level_ticks: [u64; LEVELS],
    epoch_ticks: u64,
    settle_ticks: u64,
    phase: Phase,
    /// Index of the level in force.
    level: usize,
    /// Clock ticks the current epoch began at.
    epoch_start: u64,
    /// Completions counted in the current epoch after its settling time.
    counted: u64,
    /// Throughput of each level in the last sweep (completions per
    /// millisecond × 1024).
    rates: [u64; LEVELS],
    /// Throughput of the kept level when it was chosen.
    kept_rate: u64,
    /// Sweeps finished (for statistics and tests).
    sweeps: u64,
    /// Pinned by configuration: no sweep, every level the same.
    pinned: bool,
}

/// The level measured at step `index` of a sweep: up, then down.
fn sweep_level(index: usize) -> usize {
    if index < LEVELS {
        index
    } else {
        2 * LEVELS - 1 - index
    }
}

impl HoldTuner {
    /// A tuner whose highest level is `max_hold`, starting a sweep at
    /// tick 0.
    pub fn new(max_hold: Duration) -> Self {
        let max = clock::duration_to_ticks(max_hold);
        Self {
            level_ticks: [0, max / 8, max / 4, max / 2, max],
            epoch_ticks: clock::duration_to_ticks(EPOCH),
            settle_ticks: clock::duration_to_ticks(SETTLE),
            phase: Phase::Sweeping { index: 0 },
            level: 0,
            epoch_start: 0,
            counted: 0,
            rates: [0; LEVELS],
            kept_rate: 0,
            sweeps: 0,
            pinned: false,
        }
    }

    /// A tuner that always holds `hold` (no sweep): the level pinned by
    /// configuration.
    pub fn pinned(hold: Duration) -> Self {
        let mut t = Self::new(hold);
        t.level_ticks = [clock::duration_to_ticks(hold); LEVELS];
        t.pinned = true;
        t
    }

    /// Starts a sweep at `now`, from level 0 (nothing for a pinned tuner).
    pub fn start(&mut self, now: u64) {
        if self.pinned {
            return;
        }
        self.phase = Phase::Sweeping { index: 0 };
        self.level = 0;
        self.begin_epoch(now);
    }

    /// The hold in force, in clock ticks.
    #[inline]
    pub fn hold_ticks(&self) -> u64 {
        self.level_ticks[self.level]
    }

    /// The highest level, in clock ticks: `max_hold`, or the pinned hold.
    #[inline]
    pub fn max_hold_ticks(&self) -> u64 {
        self.level_ticks[LEVELS - 1]
    }

    /// The index of the level in force (0: no hold).
    #[inline]
    pub fn level(&self) -> usize {
        self.level
    }

    /// Sweeps finished so far.
    pub fn sweeps(&self) -> u64 {
        self.sweeps
    }

    /// Counts `n` completions given to the kernel at `now`, and ends the
    /// epoch when it is over.
    #[inline]
    pub fn completed(&mut self, n: usize, now: u64) {
        if self.pinned {
            return;
        }
        let age = now.wrapping_sub(self.epoch_start);
        if age >= self.settle_ticks {
            self.counted += n as u64;
        }
        if age >= self.epoch_ticks {
            self.end_epoch(now, age);
        }
    }

    fn begin_epoch(&mut self, now: u64) {
        self.epoch_start = now;
        self.counted = 0;
    }

    fn end_epoch(&mut self, now: u64, age: u64) {
        let measured = clock::ticks_to_ns(age.saturating_sub(self.settle_ticks)).max(1);
        // Completions per millisecond, × 1024 for resolution.
        let rate =
            u64::try_from(u128::from(self.counted) * 1_000_000 * 1024 / u128::from(measured))
                .unwrap_or(u64::MAX);
        match self.phase {
            Phase::Sweeping { index } => {
                let level = sweep_level(index);
                self.rates[level] = if index < LEVELS {
                    rate
                } else {
                    self.rates[level].saturating_add(rate)
                };
                if index + 1 < 2 * LEVELS {
                    self.phase = Phase::Sweeping { index: index + 1 };
                    self.level = sweep_level(index + 1);
                } else {
                    self.keep_best();
                }
            }
            Phase::Keeping { epochs_left } => {
                let drift = rate.abs_diff(self.kept_rate) * 100;
                if epochs_left <= 1 || drift > self.kept_rate.saturating_mul(DRIFT_PERCENT) {
                    self.phase = Phase::Sweeping { index: 0 };
                    self.level = 0;
                } else {
                    self.phase = Phase::Keeping {
                        epochs_left: epochs_left - 1,
                    };
                }
            }
        }
        self.begin_epoch(now);
    }

    /// Ends a sweep: keeps the level with the most throughput, a higher
    /// one only when it beats the best lower one by the margin.
    fn keep_best(&mut self) {
        let mut best = 0;
        for (i, &rate) in self.rates.iter().enumerate().skip(1) {
            if rate * 100 > self.rates[best] * (100 + MARGIN_PERCENT) {
                best = i;
            }
        }
        self.level = best;
        // Two epochs were summed per level.
        self.kept_rate = self.rates[best] / 2;
        self.sweeps += 1;
        self.phase = Phase::Keeping {
            epochs_left: STAY_EPOCHS,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `epochs` epochs in which level `i` completes `rate(i)`
    /// commands per millisecond; returns the tick after them.
    fn run(t: &mut HoldTuner, mut now: u64, epochs: usize, rate: impl Fn(usize) -> u64) -> u64 {
        // A "millisecond" of ticks such that EPOCH of them make exactly one
        // epoch or a tick more (the ticks of 1 ms × 50 may fall short of
        // the ticks of 50 ms).
        let ms = clock::duration_to_ticks(EPOCH).div_ceil(EPOCH.as_millis() as u64);
        for _ in 0..epochs {
            for _ in 0..EPOCH.as_millis() as u64 {
                now += ms;
                t.completed(rate(t.level()) as usize, now);
            }
        }
        now
    }

    /// A tuner of `max_hold` 200 µs after one sweep in which level `i`
    /// completed `rates[i]` per millisecond, and the tick after it.
    fn swept(rates: [u64; LEVELS]) -> (HoldTuner, u64) {
        let mut t = HoldTuner::new(Duration::from_micros(200));
        t.start(1);
        let now = run(&mut t, 1, 2 * LEVELS, |i| rates[i]);
        (t, now)
    }

    #[test]
    fn keeps_the_level_with_the_most_throughput() {
        let (t, _) = swept([100, 110, 130, 125, 90]);
        assert_eq!(t.sweeps(), 1);
        assert_eq!(t.level(), 2);
        assert_eq!(
            t.hold_ticks(),
            clock::duration_to_ticks(Duration::from_micros(50))
        );
    }

    #[test]
    fn holding_that_does_not_clearly_pay_is_not_kept() {
        // Latency-bound: every hold costs throughput.
        let (t, _) = swept([100, 90, 80, 60, 40]);
        assert_eq!(t.level(), 0);
        assert_eq!(t.hold_ticks(), 0);
        // Within the margin: the lower level wins.
        let (t, _) = swept([100, 102, 102, 101, 100]);
        assert_eq!(t.level(), 0);
    }

    #[test]
    fn a_pinned_tuner_holds_its_level() {
        let hold = Duration::from_micros(80);
        let mut t = HoldTuner::pinned(hold);
        t.start(1);
        run(&mut t, 1, 6 * LEVELS, |i| [100, 10, 10, 10, 10][i]);
        assert_eq!(t.hold_ticks(), clock::duration_to_ticks(hold));
        assert_eq!(t.sweeps(), 0);
    }

    #[test]
    fn sweeps_again_after_a_while_or_when_the_load_changes() {
        let (mut t, now) = swept([100, 110, 130, 125, 90]);
        let now = run(&mut t, now, STAY_EPOCHS as usize - 1, |_| 130);
        assert_eq!(t.sweeps(), 1);
        assert_eq!(t.level(), 2, "kept");
        let now = run(&mut t, now, 1, |_| 130);
        assert_eq!(t.level(), 0, "a new sweep starts at level 0");
        run(&mut t, now, 2 * LEVELS, |i| [100, 90, 80, 60, 40][i]);
        assert_eq!((t.sweeps(), t.level()), (2, 0));
        // A drift of the throughput at the kept level starts a sweep.
        let (mut t, now) = swept([100, 110, 130, 125, 90]);
        run(&mut t, now, 1, |_| 60);
        assert!(matches!(t.phase, Phase::Sweeping { index: 0 }));
    }
}
