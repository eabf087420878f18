//! [`HoldTuner`]: picks how long a device may hold completions back, by
//! measuring what each hold does to its throughput.
//!
//! Whether holding completions pays depends on where the time goes. When
//! the initiator's side is short of CPU (each publication wakes its core,
//! and it spends more time taking completions one at a time than it would
//! in batches), fewer, larger batches raise the device's throughput, or
//! leave it as it was and cut the system calls per command several times
//! over. When the initiator waits on the device instead (latency-bound: a
//! fast host, a queue the device drains at once), every microsecond held
//! is a microsecond added to each command and throughput falls. Which case
//! a host is in cannot be told from the device's side alone, so the tuner
//! tries.
//!
//! # The search
//! The levels are 0, `max_hold`/8, /4, /2 and `max_hold`. A search tries
//! them from the top down, each in a **trial against level 0**: epochs
//! ([`EPOCH`]) at the candidate level and at level 0 alternate as
//! 0, candidate, candidate, 0, ... ([`TRIAL_PAIRS`] of each; the order
//! cancels a steady drift of the load, and a new workload's first epoch
//! holds nothing), and the completions per second of each epoch after its
//! first [`SETTLE`] are measured. Each pair of adjacent epochs gives the
//! candidate's gain over level 0 in percent; the trial judges their mean
//! against its standard error (a paired test). The candidate is given up
//! only if it costs more than [`TOLERANCE_PERCENT`] **and** more than
//! [`SIGNIFICANCE_T`] standard errors: then the next level down is tried,
//! or the one below it when the cost passed [`HEAVY_COST_PERCENT`] too.
//! Otherwise it is kept. After [`EARLY_PAIRS`] pairs a trial ends early
//! both ways: a candidate at least as fast as level 0 (and not paying) is
//! kept, one that cost more than [`HEAVY_COST_PERCENT`] in every pair is
//! given up. Level 0 needs no trial: it is what is kept when every level
//! above it costs. A kept level that beat level 0 by more than the
//! tolerance, beyond the noise (holding pays), is tried once more against
//! the level below it, in the same way, and gives way to it only if that
//! one beats it likewise: where a hold long enough to stall the
//! initiator's queue pays less than a shorter one, the shorter one holds.
//!
//! Why a paired test, not the tolerance alone: on a quiet host the pairs
//! agree, the standard error is small and the tolerance decides. In the
//! VM test's emulated guest a trial of four pairs still judged a free
//! hold costly now and then (SCST's ioctls per command at queue depth 32
//! ranged 0.18-0.34 between boots, the worst where the tuner had dropped
//! to no hold for seconds at a time); a cost the pairs disagree on is
//! such noise, and holding is kept through it.
//!
//! The kept level stays for [`STAY_EPOCHS`] epochs, twice as long each
//! time a search keeps the same level again (up to [`MAX_STAY_EPOCHS`]),
//! and then a search runs again; sooner if the throughput at the kept
//! level moves by more than [`DRIFT_PERCENT`], the same way, over
//! [`DRIFT_WINDOWS`] windows of [`DRIFT_EPOCHS`] in a row (the workload
//! changed: the stay starts over from [`STAY_EPOCHS`]). The throughput it
//! moves from is the first window's after the search, not the trial's few
//! epochs. One epoch says little: in the VM test's emulated guest,
//! consecutive 100 ms epochs at one level differ by up to half, and whole
//! 1 s windows nearly twofold (8k to 15k completions per second in one
//! traced run): measured from the trial's epochs and on one window, the
//! drift started a search every 1-2 s there (each spends two epochs
//! holding nothing), where the load never changed. An epoch
//! that ran past twice its length is not judged: the device was idle in
//! it (the caller reports completions only as they happen), and a pause is
//! not a change of workload, so after it the kept level still holds and a
//! trial goes on where it was.
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
//! Why trials against level 0, not one pass over all levels: in a noisy
//! host (an emulated guest measured ±10-20 % between 100 ms epochs) the
//! best of five noisy figures is biased upwards, and a level that costs
//! nothing then often falls outside the tolerance of that lucky best; a
//! trial compares two levels over interleaved epochs, which the noise
//! and the drift weigh on alike.
//!
//! # Cost
//! Two additions per call, and an epoch's end once per [`EPOCH`]; no
//! allocation, no lock, no clock read (the caller passes its time).

use std::time::Duration;

use reactor::clock;

/// The hold levels, as fractions of `max_hold`: 0, 1/8, 1/4, 1/2 and 1.
pub const LEVELS: usize = 5;
/// Length of one measuring epoch.
pub const EPOCH: Duration = Duration::from_millis(100);
/// The start of an epoch that is not counted.
pub const SETTLE: Duration = Duration::from_millis(10);
/// Epochs at the candidate level in a trial, and as many at level 0.
pub const TRIAL_PAIRS: usize = 4;
/// Pairs after which a trial ends if its candidate was at least as fast
/// as the reference, or cost more than [`HEAVY_COST_PERCENT`].
pub const EARLY_PAIRS: usize = 2;
/// Epochs at the kept level after a search that kept a new level (5 s).
pub const STAY_EPOCHS: u32 = 50;
/// The longest stay, reached by searches that keep keeping the same level
/// (60 s).
pub const MAX_STAY_EPOCHS: u32 = 600;
/// How much less throughput than level 0's a level may have and still be
/// kept (the noise of a trial's measurement on a quiet host, about).
pub const TOLERANCE_PERCENT: u64 = 8;
/// How many standard errors of the trial's paired differences a cost (or
/// a gain) must exceed to count, besides [`TOLERANCE_PERCENT`]: Student's
/// t for [`TRIAL_PAIRS`] − 1 = 3 degrees of freedom, one-sided 95 %. On a
/// quiet host the pairs agree and the tolerance decides; on a noisy one a
/// cost the pairs disagree on is noise, and a free hold is not given up
/// for it.
pub const SIGNIFICANCE_T: f64 = 2.35;
// SIGNIFICANCE_T is the t quantile for TRIAL_PAIRS; a new pair count needs
// its own (2.92 for 3 pairs, 2.13 for 5, 1.94 for 7).
const _: () = assert!(
    TRIAL_PAIRS == 4,
    "SIGNIFICANCE_T is t(0.95) for 3 degrees of freedom"
);
/// A cost that ends a trial early and skips the next level down.
pub const HEAVY_COST_PERCENT: u64 = 30;
/// A throughput change at the kept level, over [`DRIFT_EPOCHS`], that
/// starts a new search.
pub const DRIFT_PERCENT: u64 = 25;
/// The window of epochs over which the kept level's throughput is
/// compared with its first window's (1 s).
pub const DRIFT_EPOCHS: u32 = 10;
/// Windows in a row, off the same way by more than [`DRIFT_PERCENT`],
/// that start a new search.
pub const DRIFT_WINDOWS: u32 = 2;

/// One pair of a trial's epochs, adjacent in time: the throughput at the
/// candidate level and at the reference level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pair {
    candidate: u64,
    reference: u64,
}

impl Pair {
    /// The candidate's throughput relative to the reference's, in percent
    /// (positive: faster).
    fn gain_percent(&self) -> f64 {
        let reference = self.reference.max(1) as f64;
        (self.candidate as f64 - reference) * 100.0 / reference
    }
}

/// How a trial's candidate compared with its reference over the pairs
/// measured so far: the mean of the pairs' gains and its standard error.
#[derive(Debug, Clone, Copy)]
struct Comparison {
    mean: f64,
    standard_error: f64,
    /// Every pair's gain was below −[`HEAVY_COST_PERCENT`].
    every_pair_heavy: bool,
}

impl Comparison {
    fn of(pairs: &[Pair]) -> Self {
        let n = pairs.len().max(1) as f64;
        let mean = pairs.iter().map(Pair::gain_percent).sum::<f64>() / n;
        let variance = if pairs.len() > 1 {
            pairs
                .iter()
                .map(|p| (p.gain_percent() - mean).powi(2))
                .sum::<f64>()
                / (n - 1.0)
        } else {
            0.0
        };
        Self {
            mean,
            standard_error: (variance / n).sqrt(),
            every_pair_heavy: pairs
                .iter()
                .all(|p| p.gain_percent() < -(HEAVY_COST_PERCENT as f64)),
        }
    }

    /// The candidate costs more than `percent`, beyond the noise.
    fn costs_more_than(&self, percent: u64) -> bool {
        -self.mean > percent as f64 && -self.mean > SIGNIFICANCE_T * self.standard_error
    }

    /// The candidate pays more than the tolerance, beyond the noise.
    fn pays(&self) -> bool {
        self.mean > TOLERANCE_PERCENT as f64 && self.mean > SIGNIFICANCE_T * self.standard_error
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Trying level `candidate` (≥ 1) against level `reference`: 0 while
    /// the search goes down, `candidate + 1` when it checks whether a
    /// paying hold pays more one level lower. `step` epochs of the trial
    /// are done (see [`trial_level`]).
    Trial {
        candidate: usize,
        reference: usize,
        step: usize,
    },
    /// Holding the kept level for `epochs_left` more epochs; `window`
    /// epochs of the current drift window are done, their throughputs
    /// summed in `window_sum`.
    Keeping {
        epochs_left: u32,
        window: u32,
        window_sum: u64,
    },
}

/// The level measured at step `step` of a trial of `candidate` against
/// `reference`: reference, candidate, candidate, reference, reference, ...
/// (A new workload's first epoch holds nothing: it meets the reference.)
fn trial_level(candidate: usize, reference: usize, step: usize) -> usize {
    if matches!(step % 4, 0 | 3) {
        reference
    } else {
        candidate
    }
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
    /// The trial's pairs so far: the candidate's and the reference's
    /// throughput (completions per millisecond × 1024) in each (pair `i` is
    /// steps `2i` and `2i + 1`).
    pairs: [Pair; TRIAL_PAIRS],
    /// Throughput of the kept level over the first drift window after the
    /// search kept it (0: that window is not over yet).
    kept_rate: u64,
    /// Drift windows in a row off `kept_rate` by more than
    /// [`DRIFT_PERCENT`]: positive upwards, negative downwards.
    drift_run: i32,
    /// The level the last search kept (None: none since the workload
    /// changed), and the stay it was given.
    last_kept: Option<usize>,
    stay: u32,
    /// Searches finished (for statistics and tests).
    searches: u64,
    /// Pinned by configuration: no search, every level the same.
    pinned: bool,
}

impl HoldTuner {
    /// A tuner whose highest level is `max_hold`, starting a search at
    /// tick 0.
    pub fn new(max_hold: Duration) -> Self {
        let max = clock::duration_to_ticks(max_hold);
        let mut t = Self {
            level_ticks: [0, max / 8, max / 4, max / 2, max],
            epoch_ticks: clock::duration_to_ticks(EPOCH),
            settle_ticks: clock::duration_to_ticks(SETTLE),
            phase: Phase::Keeping {
                epochs_left: 0,
                window: 0,
                window_sum: 0,
            },
            level: 0,
            epoch_start: 0,
            counted: 0,
            pairs: [Pair::default(); TRIAL_PAIRS],
            kept_rate: 0,
            drift_run: 0,
            last_kept: None,
            stay: STAY_EPOCHS,
            searches: 0,
            pinned: false,
        };
        t.begin_trial(LEVELS - 1, 0);
        t
    }

    /// A tuner that always holds `hold` (no search): the level pinned by
    /// configuration.
    pub fn pinned(hold: Duration) -> Self {
        let mut t = Self::new(hold);
        t.level_ticks = [clock::duration_to_ticks(hold); LEVELS];
        t.pinned = true;
        t
    }

    /// Starts a search for a new workload at `now`, from the top level
    /// (nothing for a pinned tuner).
    pub fn start(&mut self, now: u64) {
        if self.pinned {
            return;
        }
        self.last_kept = None;
        self.begin_trial(LEVELS - 1, 0);
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

    /// Searches finished so far.
    pub fn searches(&self) -> u64 {
        self.searches
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

    fn begin_trial(&mut self, candidate: usize, reference: usize) {
        self.pairs = [Pair::default(); TRIAL_PAIRS];
        self.phase = Phase::Trial {
            candidate,
            reference,
            step: 0,
        };
        self.level = trial_level(candidate, reference, 0);
    }

    fn end_epoch(&mut self, now: u64, age: u64) {
        let measured = clock::ticks_to_ns(age.saturating_sub(self.settle_ticks)).max(1);
        // Completions per millisecond, × 1024 for resolution.
        let rate =
            u64::try_from(u128::from(self.counted) * 1_000_000 * 1024 / u128::from(measured))
                .unwrap_or(u64::MAX);
        match self.phase {
            Phase::Trial {
                candidate,
                reference,
                step,
            } => self.trial_epoch(candidate, reference, step, rate),
            Phase::Keeping {
                epochs_left,
                window,
                window_sum,
            } => {
                let (mut window, mut window_sum) = (window + 1, window_sum.saturating_add(rate));
                if window == DRIFT_EPOCHS {
                    if self.drifted(window_sum / u64::from(DRIFT_EPOCHS)) {
                        // The workload changed: the stay starts over.
                        self.last_kept = None;
                        self.begin_trial(LEVELS - 1, 0);
                        self.begin_epoch(now);
                        return;
                    }
                    (window, window_sum) = (0, 0);
                }
                if epochs_left <= 1 {
                    self.begin_trial(LEVELS - 1, 0);
                } else {
                    self.phase = Phase::Keeping {
                        epochs_left: epochs_left - 1,
                        window,
                        window_sum,
                    };
                }
            }
        }
        self.begin_epoch(now);
    }

    /// Judges a drift window whose mean throughput was `mean`: the first
    /// after a search sets the kept level's throughput; true when
    /// [`DRIFT_WINDOWS`] in a row are off it by more than
    /// [`DRIFT_PERCENT`], the same way.
    fn drifted(&mut self, mean: u64) -> bool {
        if self.kept_rate == 0 {
            self.kept_rate = mean.max(1);
            return false;
        }
        let off = mean.abs_diff(self.kept_rate).saturating_mul(100)
            > self.kept_rate.saturating_mul(DRIFT_PERCENT);
        let way = match (off, mean > self.kept_rate) {
            (false, _) => 0,
            (true, true) => 1,
            (true, false) => -1,
        };
        self.drift_run = if way != 0 && self.drift_run.signum() == way {
            self.drift_run + way
        } else {
            way
        };
        self.drift_run.unsigned_abs() >= DRIFT_WINDOWS
    }

    /// Counts epoch `step` of the trial of `candidate` against
    /// `reference`, which measured `rate`, and judges the trial when it is
    /// over.
    fn trial_epoch(&mut self, candidate: usize, reference: usize, step: usize, rate: u64) {
        let pair = &mut self.pairs[step / 2];
        if trial_level(candidate, reference, step) == candidate {
            pair.candidate = rate;
        } else {
            pair.reference = rate;
        }
        let done = step + 1;
        if done % 2 == 1 {
            return self.next_step(candidate, reference, done);
        }
        let pairs = done / 2;
        // Equal numbers of epochs at both levels after every fourth step.
        let judged = pairs == TRIAL_PAIRS;
        let comparison = Comparison::of(&self.pairs[..pairs]);
        let going_down = reference == 0;
        if going_down && pairs == EARLY_PAIRS {
            if comparison.every_pair_heavy {
                return self.reject(candidate.saturating_sub(2));
            }
            if comparison.mean >= 0.0 && comparison.mean <= TOLERANCE_PERCENT as f64 {
                // As fast as no hold, and not paying enough to look lower.
                return self.keep(candidate);
            }
        }
        if !judged {
            return self.next_step(candidate, reference, done);
        }
        let pays = comparison.pays();
        if going_down {
            if comparison.costs_more_than(HEAVY_COST_PERCENT) {
                self.reject(candidate.saturating_sub(2));
            } else if comparison.costs_more_than(TOLERANCE_PERCENT) {
                self.reject(candidate - 1);
            } else if pays && candidate > 1 {
                // Holding pays: might it pay more one level lower?
                self.begin_trial(candidate - 1, candidate);
            } else {
                self.keep(candidate);
            }
        } else if !pays {
            self.keep(reference);
        } else if candidate > 1 {
            self.begin_trial(candidate - 1, candidate);
        } else {
            self.keep(candidate);
        }
    }

    /// Goes on to step `step` of the trial.
    fn next_step(&mut self, candidate: usize, reference: usize, step: usize) {
        self.phase = Phase::Trial {
            candidate,
            reference,
            step,
        };
        self.level = trial_level(candidate, reference, step);
    }

    /// A trial going down failed: tries `next`, or keeps level 0 when
    /// `next` is 0.
    fn reject(&mut self, next: usize) {
        if next == 0 {
            self.keep(0);
        } else {
            self.begin_trial(next, 0);
        }
    }

    /// Ends a search: `level` holds (its throughput is measured over the
    /// first drift window).
    fn keep(&mut self, level: usize) {
        self.stay = if self.last_kept == Some(level) {
            self.stay.saturating_mul(2).min(MAX_STAY_EPOCHS)
        } else {
            STAY_EPOCHS
        };
        self.last_kept = Some(level);
        self.level = level;
        self.kept_rate = 0;
        self.drift_run = 0;
        self.searches += 1;
        self.phase = Phase::Keeping {
            epochs_left: self.stay,
            window: 0,
            window_sum: 0,
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
        // epoch or a tick more (the ticks of 1 ms × 100 may fall short of
        // the ticks of 100 ms).
        let ms = clock::duration_to_ticks(EPOCH).div_ceil(EPOCH.as_millis() as u64);
        for _ in 0..epochs {
            for _ in 0..EPOCH.as_millis() as u64 {
                now += ms;
                t.completed(rate(t.level()) as usize, now);
            }
        }
        now
    }

    /// Epochs until a search ends, at most `limit`.
    fn search(t: &mut HoldTuner, mut now: u64, rates: [u64; LEVELS]) -> (u64, usize) {
        let before = t.searches();
        let mut epochs = 0;
        while t.searches() == before {
            assert!(epochs < 64, "the search does not end");
            now = run(t, now, 1, |i| rates[i]);
            epochs += 1;
        }
        (now, epochs)
    }

    /// A tuner of `max_hold` 200 µs after one search in which level `i`
    /// completed `rates[i]` per millisecond, the tick after it and the
    /// epochs it took.
    fn searched(rates: [u64; LEVELS]) -> (HoldTuner, u64, usize) {
        let mut t = HoldTuner::new(Duration::from_micros(200));
        t.start(1);
        let (now, epochs) = search(&mut t, 1, rates);
        (t, now, epochs)
    }

    #[test]
    fn a_trial_interleaves_the_candidate_with_its_reference() {
        let levels: Vec<usize> = (0..8).map(|step| trial_level(4, 0, step)).collect();
        assert_eq!(levels, [0, 4, 4, 0, 0, 4, 4, 0]);
        let mut t = HoldTuner::new(Duration::from_micros(200));
        t.start(1);
        assert_eq!(t.level(), 0, "a search starts with the reference");
        let mut seen = Vec::new();
        let mut now = 1;
        for _ in 0..8 {
            seen.push(t.level());
            // A little slower at the top: no early end.
            now = run(&mut t, now, 1, |i| if i == 4 { 95 } else { 100 });
        }
        assert_eq!(seen, levels);
        assert_eq!((t.searches(), t.level()), (1, 4));
    }

    #[test]
    fn a_trial_ends_early_when_the_candidate_costs_nothing() {
        let (t, _, epochs) = searched([100, 100, 100, 100, 102]);
        assert_eq!((t.level(), epochs), (4, 2 * EARLY_PAIRS));
    }

    #[test]
    fn among_equals_the_highest_level_is_kept() {
        // Initiator-bound: the levels differ by noise only.
        let (t, _, epochs) = searched([100, 102, 97, 101, 95]);
        assert_eq!((t.searches(), t.level(), epochs), (1, 4, 2 * TRIAL_PAIRS));
        assert_eq!(
            t.hold_ticks(),
            clock::duration_to_ticks(Duration::from_micros(200))
        );
    }

    /// Runs one trial of the top level against level 0 from a new search:
    /// level 0 completes 100 per millisecond in every epoch, the top level
    /// `top[i]` in pair `i`. Returns the tuner after it (or after its
    /// early end).
    fn trial_of_the_top(top: [u64; TRIAL_PAIRS]) -> HoldTuner {
        let mut t = HoldTuner::new(Duration::from_micros(200));
        t.start(1);
        let mut now = 1;
        for step in 0..2 * TRIAL_PAIRS {
            if !matches!(t.phase, Phase::Trial { candidate: 4, .. }) {
                break; // ended early
            }
            now = run(&mut t, now, 1, |i| if i == 0 { 100 } else { top[step / 2] });
        }
        t
    }

    #[test]
    fn a_cost_the_pairs_disagree_on_is_noise() {
        // Pairs -30 %, +15 %, -25 %, 0 %: a mean cost of 10 %, past the
        // tolerance, but within 1 standard error of nothing.
        let t = trial_of_the_top([70, 115, 75, 100]);
        assert_eq!((t.searches(), t.level()), (1, 4), "kept");
        // The same mean cost in every pair is a cost.
        let t = trial_of_the_top([90, 90, 90, 90]);
        assert_eq!(t.searches(), 0);
        assert!(matches!(t.phase, Phase::Trial { candidate: 3, .. }));
        // One heavy pair of two does not end the trial early; a heavy
        // cost in every pair does, and skips a level.
        let t = trial_of_the_top([40, 105, 100, 100]);
        assert_eq!((t.searches(), t.level()), (1, 4), "kept");
        let t = trial_of_the_top([60, 65, 100, 100]);
        assert!(matches!(
            t.phase,
            Phase::Trial {
                candidate: 2,
                step: 0,
                ..
            }
        ));
    }

    #[test]
    fn a_level_that_costs_gives_way_to_the_next_one_down() {
        let (t, _, epochs) = searched([100, 100, 100, 95, 85]);
        assert_eq!((t.level(), epochs), (3, 4 * TRIAL_PAIRS));
    }

    #[test]
    fn holding_that_costs_throughput_is_not_kept() {
        // Latency-bound: every hold costs. The top costs 60 %: its trial
        // ends early and the search skips level 3.
        let (t, _, epochs) = searched([100, 90, 80, 60, 40]);
        assert_eq!(t.level(), 0);
        assert_eq!(t.hold_ticks(), 0);
        assert_eq!(epochs, 2 * EARLY_PAIRS + 2 * 2 * TRIAL_PAIRS);
        // Just past the tolerance at every level.
        let (t, _, epochs) = searched([100, 91, 91, 91, 91]);
        assert_eq!((t.level(), epochs), (0, 4 * 2 * TRIAL_PAIRS));
    }

    #[test]
    fn where_holding_pays_the_level_that_pays_most_is_kept() {
        // The top stalls the queue; level 3 pays, level 2 more, level 1 less.
        let (t, _, _) = searched([100, 110, 130, 115, 90]);
        assert_eq!(t.level(), 2);
        // Paying more and more up to the top.
        let (t, _, epochs) = searched([100, 110, 120, 130, 140]);
        assert_eq!((t.level(), epochs), (4, 4 * TRIAL_PAIRS));
    }

    #[test]
    fn a_pinned_tuner_holds_its_level() {
        let hold = Duration::from_micros(80);
        let mut t = HoldTuner::pinned(hold);
        t.start(1);
        run(&mut t, 1, 40, |i| [100, 10, 10, 10, 10][i]);
        assert_eq!(t.hold_ticks(), clock::duration_to_ticks(hold));
        assert_eq!(t.searches(), 0);
    }

    #[test]
    fn searches_again_after_a_stay_that_grows_while_they_agree() {
        let rates = [100, 100, 100, 100, 100];
        let (mut t, mut now, _) = searched(rates);
        assert_eq!(t.level(), 4);
        for stay in [STAY_EPOCHS * 2, STAY_EPOCHS * 4] {
            let (after, _) = search(&mut t, now, rates);
            // The search began after the stay: the next one after twice it.
            now = run(&mut t, after, stay as usize - 1, |i| rates[i]);
            assert!(matches!(t.phase, Phase::Keeping { epochs_left: 1, .. }));
        }
        let before = t.searches();
        now = run(&mut t, now, 1, |i| rates[i]);
        assert!(matches!(t.phase, Phase::Trial { candidate: 4, .. }));
        // A search that keeps another level: the stay starts over.
        let (now, _) = search(&mut t, now, [100, 90, 80, 60, 40]);
        assert_eq!((t.searches(), t.level()), (before + 1, 0));
        run(&mut t, now, STAY_EPOCHS as usize, |_| 100);
        assert!(matches!(t.phase, Phase::Trial { candidate: 4, .. }));
    }

    /// Runs one drift window whose epochs complete `rate` per millisecond.
    fn window(t: &mut HoldTuner, now: u64, rate: u64) -> u64 {
        run(t, now, DRIFT_EPOCHS as usize, |_| rate)
    }

    fn keeping_at_window_start(t: &HoldTuner) -> bool {
        matches!(t.phase, Phase::Keeping { window: 0, .. })
    }

    #[test]
    fn a_passing_dip_is_no_drift() {
        let (mut t, mut now, _) = searched([100, 100, 100, 100, 100]);
        // The first window after the search sets the throughput the kept
        // level is judged by: 200, where the trial measured 100.
        now = window(&mut t, now, 200);
        assert!(keeping_at_window_start(&t));
        // Odd epochs are noise: the window's mean holds.
        for _ in 0..DRIFT_EPOCHS / 2 {
            now = run(&mut t, now, 1, |_| 120);
            now = run(&mut t, now, 1, |_| 280);
        }
        assert!(keeping_at_window_start(&t));
        // One window off by more than DRIFT_PERCENT, then one as before.
        now = window(&mut t, now, 120);
        window(&mut t, now, 200);
        assert!(keeping_at_window_start(&t));
        assert_eq!(t.searches(), 1);
    }

    #[test]
    fn drift_the_same_way_over_windows_in_a_row_starts_a_search() {
        assert_eq!(DRIFT_WINDOWS, 2, "the windows below");
        let (mut t, mut now, _) = searched([100, 100, 100, 100, 100]);
        now = window(&mut t, now, 200);
        // Off one way, then the other: no drift.
        now = window(&mut t, now, 120);
        now = window(&mut t, now, 280);
        assert!(keeping_at_window_start(&t));
        // Off the same way a second window in a row: a new search, at the
        // window's end.
        now = run(&mut t, now, DRIFT_EPOCHS as usize - 1, |_| 280);
        let last = DRIFT_EPOCHS - 1;
        assert!(matches!(t.phase, Phase::Keeping { window, .. } if window == last));
        run(&mut t, now, 1, |_| 280);
        assert!(matches!(
            t.phase,
            Phase::Trial {
                candidate: 4,
                step: 0,
                ..
            }
        ));
    }

    #[test]
    fn a_pause_is_not_a_change_of_workload() {
        let (mut t, now, _) = searched([100, 110, 130, 115, 90]);
        assert_eq!(t.level(), 2);
        // Nothing completes for a second, then the same load resumes.
        let later = now + clock::duration_to_ticks(Duration::from_secs(1));
        t.completed(1, later);
        let after = run(&mut t, later, 3, |_| 130);
        assert_eq!(t.level(), 2, "kept through the pause");
        assert!(matches!(t.phase, Phase::Keeping { .. }));
        assert_eq!(t.searches(), 1);
        // A pause in the middle of a trial: the trial goes on where it was.
        t.start(after);
        let mid = run(&mut t, after, 2, |_| 100);
        assert!(matches!(t.phase, Phase::Trial { step: 2, .. }));
        let later = mid + clock::duration_to_ticks(Duration::from_secs(1));
        t.completed(1, later);
        assert!(matches!(t.phase, Phase::Trial { step: 2, .. }));
        run(&mut t, later, 2 * TRIAL_PAIRS - 2, |_| 100);
        assert_eq!((t.searches(), t.level()), (2, 4));
    }
}
