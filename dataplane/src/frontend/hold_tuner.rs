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
//! level). Then it keeps the **highest level whose throughput over its two
//! epochs is within [`TOLERANCE_PERCENT`] of the best level's**, for
//! [`STAY_EPOCHS`] epochs, and sweeps again; sooner if the throughput at
//! the kept level moves by more than [`DRIFT_PERCENT`] (the workload
//! changed). An epoch that ran past twice its length is not judged: the
//! device was idle in it (the caller reports completions only as they
//! happen), and a pause is not a change of workload, so after it the kept
//! level still holds and a sweep goes on where it was.
//!
//! Why the highest level that costs (nearly) nothing, not the best one:
//! where the initiator's side is the limit (its CPU, not the device), the
//! levels' throughputs are equal but for noise, and a hold then cuts the
//! system calls per command several times over for free (measured with
//! SCST at queue depth 32 in a small VM: 100 µs held, 0.19-0.22 ioctls per
//! command instead of 0.53-0.67, at the same throughput). Picking the
//! measured best there would pick at random among equals. Where the
//! initiator waits on the device, every level above 0 costs well beyond
//! the tolerance (half the throughput at 100 µs with 3 commands in
//! flight), so nothing is held.
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
pub const EPOCH: Duration = Duration::from_millis(100);
/// The start of an epoch that is not counted.
pub const SETTLE: Duration = Duration::from_millis(10);
/// Epochs at the kept level between sweeps (5 s; a sweep takes 1 s).
pub const STAY_EPOCHS: u32 = 50;
/// How much less throughput than the best level's a higher level may have
/// and still be kept (the noise of a sweep's measurement, about).
pub const TOLERANCE_PERCENT: u64 = 8;
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
        if age > 2 * self.epoch_ticks {
            // Idle for part of it: start the epoch again, unjudged.
            self.begin_epoch(now);
            return;
        }
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

    /// Ends a sweep: keeps the highest level within the tolerance of the
    /// best one.
    fn keep_best(&mut self) {
        let best = self.rates.iter().copied().max().unwrap_or(0);
        let floor = u128::from(best) * u128::from(100 - TOLERANCE_PERCENT);
        let kept = (0..LEVELS)
            .rev()
            .find(|&i| u128::from(self.rates[i]) * 100 >= floor)
            .unwrap_or(0);
        self.level = kept;
        // Two epochs were summed per level.
        self.kept_rate = self.rates[kept] / 2;
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
        let (t, _) = swept([100, 110, 130, 115, 90]);
        assert_eq!(t.sweeps(), 1);
        assert_eq!(t.level(), 2);
        assert_eq!(
            t.hold_ticks(),
            clock::duration_to_ticks(Duration::from_micros(50))
        );
    }

    #[test]
    fn holding_that_costs_throughput_is_not_kept() {
        // Latency-bound: every hold costs throughput.
        let (t, _) = swept([100, 90, 80, 60, 40]);
        assert_eq!(t.level(), 0);
        assert_eq!(t.hold_ticks(), 0);
        // Just past the tolerance at every level.
        let (t, _) = swept([100, 91, 91, 91, 91]);
        assert_eq!(t.level(), 0);
    }

    #[test]
    fn among_equals_the_highest_level_is_kept() {
        // Initiator-bound: the levels differ by noise only.
        let (t, _) = swept([100, 102, 97, 101, 95]);
        assert_eq!(t.level(), 4);
        // A higher level within the tolerance of a better one.
        let (t, _) = swept([100, 110, 130, 125, 90]);
        assert_eq!(t.level(), 3);
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
        let (mut t, now) = swept([100, 110, 130, 115, 90]);
        let now = run(&mut t, now, STAY_EPOCHS as usize - 1, |_| 130);
        assert_eq!(t.sweeps(), 1);
        assert_eq!(t.level(), 2, "kept");
        let now = run(&mut t, now, 1, |_| 130);
        assert_eq!(t.level(), 0, "a new sweep starts at level 0");
        run(&mut t, now, 2 * LEVELS, |i| [100, 90, 80, 60, 40][i]);
        assert_eq!((t.sweeps(), t.level()), (2, 0));
        // A drift of the throughput at the kept level starts a sweep.
        let (mut t, now) = swept([100, 110, 130, 115, 90]);
        run(&mut t, now, 1, |_| 60);
        assert!(matches!(t.phase, Phase::Sweeping { index: 0 }));
    }

    #[test]
    fn a_pause_is_not_a_change_of_workload() {
        let (mut t, now) = swept([100, 110, 130, 115, 90]);
        assert_eq!(t.level(), 2);
        // Nothing completes for a second, then the same load resumes.
        let later = now + clock::duration_to_ticks(Duration::from_secs(1));
        t.completed(1, later);
        let after = run(&mut t, later, 3, |_| 130);
        assert_eq!(t.level(), 2, "kept through the pause");
        assert!(matches!(t.phase, Phase::Keeping { .. }));
        assert_eq!(t.sweeps(), 1);
        // A pause in the middle of a sweep: the sweep goes on where it was.
        t.start(after);
        let mid = run(&mut t, after, 2, |i| [100, 100, 100, 100, 100][i]);
        assert!(matches!(t.phase, Phase::Sweeping { index: 2 }));
        let later = mid + clock::duration_to_ticks(Duration::from_secs(1));
        t.completed(1, later);
        assert!(matches!(t.phase, Phase::Sweeping { index: 2 }));
        run(&mut t, later, 2 * LEVELS - 2, |i| {
            [100, 100, 100, 100, 100][i]
        });
        assert_eq!((t.sweeps(), t.level()), (2, 4));
    }
}
