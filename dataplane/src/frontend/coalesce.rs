//! [`Coalescer`]: publish completions now, or hold them so that one
//! doorbell (TCMU) or one REPLY_AND_GET_MULTI (SCST) carries more of them.
//!
//! # Why
//! Each publication costs a system call, and on the kernel side it
//! completes the batch and wakes the initiator's CPU once (an IPI when the
//! initiator runs on another core). Measured under a real kernel, a device
//! that publishes at every poll that completed something publishes about
//! one command at a time at queue depth 32: commands trickle in one by one
//! as the initiator resubmits them, and a fast poll loop answers each alone.
//! Holding completions back until several are ready cuts the calls per
//! command several times over, but a hold that no other command joins is
//! pure latency: at queue depth 1 nothing joins, so nothing may be held.
//!
//! # The rule
//! - **Concurrency gate.** Nothing is held unless the device has seen a
//!   command arrive while it held another (`in_hand` ≥ 2, see
//!   [`Coalescer::arrived`]). A device that publishes at once rarely holds
//!   two commands even at queue depth 32 (they reach it one by one), so the
//!   gate is tested with a **probe**: every [`PROBE_EVERY`] arrivals one
//!   completion is held up to `max_hold`. If a command arrives meanwhile
//!   the gate opens; if none does, it closes. At queue depth 1 no probe is
//!   ever joined (the initiator waits for the held completion), so the
//!   gate stays closed and the cost there is one `max_hold` delay per
//!   [`PROBE_EVERY`] commands.
//! - **Unjoined holds of one command close the gate**: a hold that ran
//!   its full length with a single completion and without a command
//!   arriving meanwhile is evidence that the concurrency is gone (TCMU:
//!   [`Coalescer::hold`] sees it; SCST, which learns of arrivals only in
//!   its next exchange: [`Coalescer::unjoined`]). [`UNJOINED_TO_CLOSE`] of
//!   them in a row, with no arrival joining a hold in between, close it
//!   (a failed probe counts as one). One alone is no evidence: a busy
//!   stream's arrivals come in bursts (the initiator takes a batch of
//!   completions, then submits a batch), and in the VM test's guest, at
//!   queue depth 32, single unjoined holds closed the gate about 15 times
//!   a second when one was enough, a tenth of the time closed, answering
//!   each command alone meanwhile. A hold
//!   shorter than `max_hold` is weaker evidence (a busy stream's arrivals
//!   may be further apart than a short level: in the VM test's guest, at
//!   queue depth 32, TCMU's gate was closed most of the time): after one,
//!   the next hold is a probe, and that one counts if nothing joins it.
//!   So a queue-depth-1 stream that follows a busy spell pays a few holds
//!   (at most [`UNJOINED_TO_CLOSE`] probes and as many shorter holds), not
//!   a hold per command until the next probe. A
//!   hold that carries several completions is concurrency itself, joined
//!   or not: with an initiator short of CPU, taking one batch of
//!   completions can keep it from submitting for longer than the next
//!   hold (measured with SCST at queue depth 32 in the VM test's guest,
//!   where closing the gate on such holds kept it closed most of the
//!   time).
//! - **Hold level.** Behind the gate a [`HoldTuner`] picks how long
//!   completions may wait, between 0 and [`CoalesceConfig::max_hold`], by
//!   measuring the device's throughput at each level and keeping the one
//!   that pays (see its module docs): where batching frees the initiator's
//!   CPU the hold rises, where the initiator waits on the device it stays 0.
//! - Completions are **held** while the hold is younger than that level
//!   and fewer than [`CoalesceConfig::batch`] are pending, unless something
//!   must go out now (`urgent`: the device is draining, or an SCST reply is
//!   waited for).
//!
//! A fixed coalescing window ([`CoalesceConfig::window`], off by default)
//! holds completions even without concurrency, like NVMe interrupt
//! aggregation.
//!
//! TCMU holds completions written to the ring behind an unpublished tail
//! (it sees new commands in the shared ring without a system call). SCST,
//! where one ioctl both answers and fetches, exchanges once per hold
//! ([`Coalescer::due`]) so that each exchange answers a batch and fetches
//! one.
//!
//! # Cost
//! A few integers and one timestamp: no allocation, no lock, no clock read
//! of its own beyond the thread's [`clock::recent`] time.

use std::time::Duration;

use reactor::clock;

use super::hold_tuner::HoldTuner;

/// How completions are coalesced; the same settings for both frontends
/// (`doorbell_batch`, `coalesce_max_hold_us` and `completion_coalesce_us`
/// in `serve`'s `[tcmu]` and `[[scst]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceConfig {
    /// The largest batch: this many pending completions always go out.
    /// Default 32; 1 publishes at every poll that completed something (no
    /// hold); 0 never holds.
    pub batch: usize,
    /// The highest hold level the tuner tries (see the module docs).
    /// Default 400 µs: several commands' worth where arrivals are tens of
    /// microseconds apart (a small VM); the tuner keeps a lower level, or
    /// none, where holding costs throughput. SCST exchanges once per hold,
    /// so its calls per command cannot fall below 1 / (IOPS × hold): 0.2
    /// at 200 µs and 25k IOPS (the VM test's guest), 0.1 at 400 µs.
    pub max_hold: Duration,
    /// A fixed hold instead of the tuner's choice (still behind the
    /// concurrency gate). Default `None`: the tuner picks.
    pub fixed_hold: Option<Duration>,
    /// Completion coalescing window: when non-zero, completions may wait up
    /// to this long for others to join them even without evidence of
    /// concurrency (up to `batch` of them), like NVMe interrupt
    /// aggregation. It adds up to this much latency per command. The device
    /// keeps its reactor awake while a completion is held. Default 0 (off).
    pub window: Duration,
}

impl CoalesceConfig {
    /// Default [`max_hold`](Self::max_hold): 400 µs.
    pub const DEFAULT_MAX_HOLD: Duration = Duration::from_micros(400);
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        Self {
            batch: 32,
            max_hold: Self::DEFAULT_MAX_HOLD,
            fixed_hold: None,
            window: Duration::ZERO,
        }
    }
}

/// Decides, at the end of each poll, whether pending completions are
/// published now or held. See the module docs for the rule. Owned by the
/// device (one reactor thread).
#[derive(Debug, Clone)]
pub struct Coalescer {
    /// [`CoalesceConfig::batch`].
    cap: usize,
    /// `window` in clock ticks (0 = off).
    window_ticks: u64,
    /// [`COLD_AFTER`] in clock ticks.
    cold_ticks: u64,
    /// Clock ticks the current hold is measured from.
    since: u64,
    /// The concurrency gate is open.
    concurrent: bool,
    /// Arrivals until the next probe.
    to_probe: u64,
    /// A probe is running: the next hold lasts up to `max_hold`.
    probing: bool,
    /// Clock ticks the gate last closed at (0: never opened).
    closed_at: u64,
    /// A command arrived while another was held, since the hold began
    /// ([`Coalescer::restart`]).
    joined: bool,
    /// Unjoined full-length holds of one completion in a row (see
    /// [`UNJOINED_TO_CLOSE`]).
    unjoined_run: u32,
    /// Picks the hold level behind the gate.
    tuner: HoldTuner,
}

/// Arrivals between two probes of the concurrency gate.
pub const PROBE_EVERY: u64 = 1024;
/// Unjoined full-length holds of a single completion in a row (failed
/// probes among them) that close the gate.
pub const UNJOINED_TO_CLOSE: u32 = 3;
/// Arrivals before a new device's first probe.
pub const FIRST_PROBE: u64 = 64;
/// How long after the gate closed the tuner still counts completions: a
/// brief closing belongs to the level in force, a longer one to another
/// workload (a queue-depth-1 stream, or none).
pub const COLD_AFTER: Duration = Duration::from_secs(1);

impl Coalescer {
    /// A coalescer with `config`, the gate closed.
    pub fn new(config: &CoalesceConfig) -> Self {
        Self {
            cap: config.batch,
            window_ticks: clock::duration_to_ticks(config.window),
            cold_ticks: clock::duration_to_ticks(COLD_AFTER),
            since: 0,
            concurrent: false,
            to_probe: FIRST_PROBE,
            probing: false,
            closed_at: 0,
            joined: false,
            unjoined_run: 0,
            tuner: match config.fixed_hold {
                Some(hold) => HoldTuner::pinned(hold),
                None => HoldTuner::new(config.max_hold),
            },
        }
    }

    /// Starts measuring the hold at `now` (clock ticks).
    #[inline]
    pub fn restart(&mut self, now: u64) {
        self.since = now;
        self.joined = false;
    }

    /// Clock ticks from the start of the hold to `now`.
    #[inline]
    pub fn age(&self, now: u64) -> u64 {
        now.wrapping_sub(self.since)
    }

    /// True while the concurrency gate is open.
    #[inline]
    pub fn concurrent(&self) -> bool {
        self.concurrent
    }

    /// The hold tuner (its level, for statistics).
    pub fn tuner(&self) -> &HoldTuner {
        &self.tuner
    }

    /// Records that a poll at `now` found `n` new commands while the device
    /// held `in_hand` commands in all (the `n` included, with completions
    /// held back): `in_hand` ≥ 2 opens the gate (and ends a probe). The
    /// first opening starts the tuner's first search; later ones resume
    /// the tuner where it was, however long the gate was closed (a pause
    /// is not a new workload, and the tuner searches again when its stay
    /// ends or the throughput drifts). Every `PROBE_EVERY` arrivals a
    /// probe starts.
    #[inline]
    pub fn arrived(&mut self, n: usize, in_hand: usize, now: u64) {
        if n == 0 || self.cap < 2 {
            return;
        }
        if in_hand >= 2 {
            self.joined = true;
            self.unjoined_run = 0;
            self.probing = false;
            if !self.concurrent {
                self.concurrent = true;
                if self.closed_at == 0 {
                    // The first opening: closed_at is set by every closing.
                    self.tuner.start(now);
                }
            }
        }
        self.to_probe = self.to_probe.saturating_sub(n as u64);
        if self.to_probe == 0 && !self.probing {
            self.probing = true;
            self.to_probe = PROBE_EVERY;
        }
    }

    /// Records `n` completions given to the kernel at `now` (published
    /// behind a tail, or replied): the tuner's measure. Counted while the
    /// gate is open and for `COLD_AFTER` after it closed: a level whose
    /// holds close the gate now and then must be measured by everything
    /// the device completed under it, not only what it completed while
    /// the gate happened to be open (that made such a level look slower
    /// than no hold, which never closes it). An exchange that replied
    /// nothing (SCST's idle polls) is no completion: an idle device's
    /// epochs do not end, so a pause stays a pause for the tuner.
    #[inline]
    pub fn completed(&mut self, n: usize, now: u64) {
        if n > 0
            && (self.concurrent
                || (self.closed_at != 0 && now.wrapping_sub(self.closed_at) < self.cold_ticks))
        {
            self.tuner.completed(n, now);
        }
    }

    /// How long (clock ticks) completions may be held now: `max_hold`
    /// during a probe, else the tuner's level behind an open gate, else 0.
    #[inline]
    pub fn hold_limit(&self) -> u64 {
        let level = if self.concurrent {
            self.tuner.hold_ticks()
        } else {
            0
        };
        if self.probing {
            level.max(self.tuner.max_hold_ticks())
        } else {
            level
        }
    }

    /// True to hold `pending` completions, false to publish them now
    /// (`urgent`: something must go out now). A probe whose hold ran out
    /// here closes the gate.
    #[inline]
    pub fn hold(&mut self, pending: usize, urgent: bool) -> bool {
        if urgent || pending >= self.cap {
            return false;
        }
        let limit = self.hold_limit();
        if limit == 0 && self.window_ticks == 0 {
            return false;
        }
        let now = clock::recent();
        let age = self.age(now);
        let held = age < limit || age < self.window_ticks;
        if !held && limit > 0 && !self.joined {
            self.unjoined_hold(limit, pending, now);
        }
        held
    }

    /// A hold of `limit` ticks (a probe's: `max_hold`) that carried
    /// `carried` completions ended with no arrival. Several completions
    /// are concurrency itself: the gate stays as it is, a probe ends and
    /// the run of unjoined holds too. One counts towards
    /// [`UNJOINED_TO_CLOSE`] if the hold lasted `max_hold` (the last of
    /// the run closes the gate), else makes the next hold a probe (a short
    /// hold may end between two arrivals of a busy stream; `max_hold`
    /// without one, again and again, is a queue-depth-1 stream).
    #[inline]
    fn unjoined_hold(&mut self, limit: u64, carried: usize, now: u64) {
        if carried > 1 {
            self.probing = false;
            self.unjoined_run = 0;
        } else if limit >= self.tuner.max_hold_ticks() {
            self.probing = false;
            self.unjoined_run += 1;
            if self.unjoined_run >= UNJOINED_TO_CLOSE {
                self.close(now);
            }
        } else {
            self.probing = true;
        }
    }

    /// SCST: the exchange that ended a hold (it carried `carried` held
    /// replies) fetched no command, so none arrived while it lasted. If it
    /// carried only one, it counts towards closing the gate, or makes the
    /// next hold a probe when it was shorter than `max_hold` (see the
    /// module docs).
    #[inline]
    pub fn unjoined(&mut self, carried: usize, now: u64) {
        self.unjoined_hold(self.hold_limit(), carried, now);
    }

    /// Closes the gate at `now`, if open; the run of unjoined holds starts
    /// over.
    #[inline]
    fn close(&mut self, now: u64) {
        self.unjoined_run = 0;
        if self.concurrent {
            self.concurrent = false;
            self.closed_at = now;
        }
    }

    /// SCST, where one exchange both answers and fetches: true when the
    /// next exchange is due at `now` with `pending` replies queued: `batch`
    /// of them are queued, or the hold has passed since the last exchange
    /// (and, for queued replies, the coalescing window). A probe whose hold
    /// ran out here closes the gate.
    #[inline]
    pub fn due(&mut self, pending: usize, now: u64) -> bool {
        if pending >= self.cap {
            return true;
        }
        let age = self.age(now);
        let due = age >= self.hold_limit() && (pending == 0 || age >= self.window_ticks);
        if due && self.probing {
            // The probe's hold (`max_hold`) ran out before this exchange.
            self.unjoined_hold(self.tuner.max_hold_ticks(), pending, now);
        }
        due
    }

    /// True if a coalescing window is configured: a device holding
    /// completions then reports work, so its reactor does not go to sleep
    /// before the window closes.
    #[inline]
    pub fn has_window(&self) -> bool {
        self.window_ticks != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn coalescer(batch: usize, max_hold: Duration, window: Duration) -> Coalescer {
        let mut c = Coalescer::new(&CoalesceConfig {
            batch,
            max_hold,
            fixed_hold: None,
            window,
        });
        c.restart(clock::now());
        c
    }

    /// Runs the tuner's search in which level `i` completes `rate[i]`
    /// commands per millisecond, arrivals showing `in_hand` commands (at
    /// most 40 epochs: a closed gate runs no search); returns the tick
    /// after it.
    fn search(c: &mut Coalescer, in_hand: usize, rate: [usize; 5]) -> u64 {
        let ms = clock::duration_to_ticks(Duration::from_millis(1));
        let mut now = ms;
        c.arrived(1, in_hand, now);
        let epoch = super::super::hold_tuner::EPOCH.as_millis() as usize + 1;
        let before = c.tuner().searches();
        for _ in 0..40 * epoch {
            now += ms;
            c.arrived(1, in_hand, now);
            c.completed(rate[c.tuner().level()], now);
            if c.tuner().searches() != before {
                break;
            }
        }
        now
    }

    #[test]
    fn defaults_are_a_batch_of_32_a_400us_cap_and_no_window() {
        let d = CoalesceConfig::default();
        assert_eq!(d.batch, 32);
        assert_eq!(d.max_hold, Duration::from_micros(400));
        assert_eq!(d.window, Duration::ZERO);
        let c = Coalescer::new(&d);
        assert!(!c.has_window());
        assert!(!c.concurrent());
        assert_eq!(c.hold_limit(), 0);
    }

    #[test]
    fn a_lone_command_stream_is_never_held_beyond_its_probes() {
        // Queue depth 1: each command arrives when the device holds no
        // other; whatever would pay, the gate stays closed.
        let mut c = coalescer(32, HOUR, Duration::ZERO);
        search(&mut c, 1, [10, 20, 30, 40, 50]);
        assert!(!c.concurrent());
        assert_eq!(c.tuner().searches(), 0);
    }

    #[test]
    fn behind_the_gate_the_paying_level_holds() {
        let mut c = coalescer(32, HOUR, Duration::ZERO);
        search(&mut c, 2, [100, 110, 140, 120, 90]);
        assert!(c.concurrent());
        assert_eq!(c.tuner().level(), 2);
        assert_eq!(c.hold_limit(), clock::duration_to_ticks(HOUR) / 4);
        c.restart(clock::now());
        assert!(c.hold(1, false), "held");
        assert!(!c.hold(1, true), "urgent goes out");
        assert!(!c.hold(32, false), "a full batch goes out");
        let now = clock::now();
        c.restart(now);
        assert!(!c.due(0, now + 1000));
        assert!(c.due(32, now + 1000), "a full batch");
        assert!(c.due(0, now + c.hold_limit()));
    }

    #[test]
    fn where_holding_costs_nothing_is_held() {
        let mut c = coalescer(32, HOUR, Duration::ZERO);
        search(&mut c, 8, [100, 80, 60, 40, 20]);
        assert!(c.concurrent());
        assert_eq!(c.hold_limit(), 0);
        assert!(!c.hold(1, false));
    }

    #[test]
    fn a_probe_opens_the_gate_only_if_joined() {
        let mut c = coalescer(32, Duration::from_micros(200), Duration::ZERO);
        let probe = clock::duration_to_ticks(Duration::from_micros(200));
        let gap = probe * 4;
        let mut now = 1_000_000;
        // Queue depth 1: the probes come, hold, and are never joined.
        for _ in 0..3 * PROBE_EVERY {
            now += gap;
            c.arrived(1, 1, now);
            if c.hold_limit() > 0 {
                assert_eq!(c.hold_limit(), probe, "a probe holds max_hold");
                c.restart(now);
                assert!(c.due(1, now + probe));
            }
            assert!(!c.concurrent());
        }
        // A probe joined by an arrival opens the gate.
        while c.hold_limit() == 0 {
            now += gap;
            c.arrived(1, 1, now);
        }
        c.arrived(1, 2, now + 10);
        assert!(c.concurrent());
        assert_eq!(c.hold_limit(), 0, "the tuner's first epoch holds nothing");
    }

    /// Lone arrivals `gap` apart from `now`, each probe's hold running
    /// out unjoined, until [`UNJOINED_TO_CLOSE`] probes failed: the gate
    /// is closed (open before the last). Returns the tick of the last
    /// arrival.
    fn fail_probes(c: &mut Coalescer, mut now: u64, gap: u64) -> u64 {
        for failed in 0..UNJOINED_TO_CLOSE {
            assert!(c.concurrent(), "open after {failed} failed probes");
            while !c.probing {
                now += gap;
                c.arrived(1, 1, now);
            }
            c.restart(now);
            assert!(c.due(0, now + c.hold_limit()));
        }
        assert!(!c.concurrent());
        now
    }

    #[test]
    fn failed_probes_close_the_gate_and_a_quick_reopening_resumes() {
        let mut c = coalescer(32, Duration::from_micros(200), Duration::ZERO);
        let mut now = search(&mut c, 2, [100, 110, 140, 120, 90]);
        assert_eq!(c.tuner().level(), 2);
        // Queue depth 1 from now on: the next probes fail and close it.
        let gap = clock::duration_to_ticks(Duration::from_micros(300));
        now = fail_probes(&mut c, now, gap);
        assert_eq!(c.hold_limit(), 0);
        // Concurrency soon after: the tuner's choice resumes.
        c.arrived(1, 2, now + gap);
        assert!(c.concurrent());
        assert_eq!(c.tuner().level(), 2, "no new search");
        // After a long quiet spell as well: a pause is not a new workload.
        now = fail_probes(&mut c, now, gap);
        c.arrived(1, 2, now + 10 * clock::duration_to_ticks(COLD_AFTER));
        assert!(c.concurrent());
        assert_eq!(c.tuner().level(), 2, "no new search");
        assert_eq!(c.tuner().searches(), 1);
    }

    #[test]
    fn unjoined_holds_in_a_row_close_the_gate() {
        let mut c = coalescer(32, Duration::from_micros(200), Duration::ZERO);
        search(&mut c, 2, [100, 100, 100, 100, 100]);
        assert!(c.concurrent());
        assert_eq!(c.tuner().level(), 4, "among equals, the highest");
        let past_the_hold = || {
            std::thread::sleep(Duration::from_millis(1));
            clock::refresh()
        };
        // TCMU: a hold joined by an arrival keeps the gate open.
        let start = clock::refresh();
        c.restart(start);
        c.arrived(1, 2, start);
        past_the_hold();
        assert!(!c.hold(1, false), "the hold is over");
        assert!(c.concurrent(), "joined: still open");
        // Holds that nothing joined close it, once there were enough of
        // them in a row.
        let unjoined = |c: &mut Coalescer| {
            c.restart(clock::refresh());
            past_the_hold();
            assert!(!c.hold(1, false));
        };
        for _ in 1..UNJOINED_TO_CLOSE {
            unjoined(&mut c);
            assert!(c.concurrent(), "not yet enough unjoined holds");
        }
        // A joined hold in between: the run starts over.
        c.arrived(1, 2, clock::refresh());
        for _ in 1..UNJOINED_TO_CLOSE {
            unjoined(&mut c);
        }
        assert!(c.concurrent(), "the run started over");
        unjoined(&mut c);
        assert!(!c.concurrent(), "unjoined, enough in a row: closed");
        assert_eq!(c.hold_limit(), 0, "the next completion goes out at once");
        // Concurrency soon after reopens it at the tuner's level.
        c.arrived(1, 2, clock::refresh());
        assert!(c.concurrent());
        assert_eq!(c.tuner().level(), 4, "no new search");
        // SCST learns it from exchanges that fetched nothing.
        for _ in 1..UNJOINED_TO_CLOSE {
            c.unjoined(1, clock::refresh());
        }
        assert!(c.concurrent());
        c.unjoined(1, clock::refresh());
        assert!(!c.concurrent());
    }

    #[test]
    fn the_tuner_counts_completions_while_the_gate_is_briefly_closed() {
        let mut c = coalescer(32, Duration::from_micros(200), Duration::ZERO);
        let ms = clock::duration_to_ticks(Duration::from_millis(1));
        let mut now = ms;
        c.arrived(2, 2, now);
        assert!(c.concurrent());
        // The top level's epochs of its trial: the gate is closed most of
        // each one, and the device completes 100 per ms all the same, as
        // in level 0's. The trial ends early, the top level kept.
        let before = c.tuner().searches();
        for _ in 0..4 * (super::super::hold_tuner::EPOCH.as_millis() + 1) {
            now += ms;
            if c.tuner().level() == 4 {
                for _ in 0..UNJOINED_TO_CLOSE {
                    c.unjoined(1, now);
                }
                assert!(!c.concurrent());
            }
            c.completed(100, now);
            c.arrived(2, 2, now);
        }
        assert_eq!(c.tuner().searches(), before + 1);
        assert_eq!(c.tuner().level(), 4);
    }

    #[test]
    fn an_unjoined_short_hold_makes_the_next_one_a_probe() {
        let mut c = coalescer(32, Duration::from_millis(10), Duration::ZERO);
        // Level 1 (1.25 ms) pays; the top does not.
        search(&mut c, 2, [100, 100, 90, 85, 80]);
        assert_eq!(c.tuner().level(), 1);
        let level = c.hold_limit();
        let past = |ticks: u64| {
            let start = clock::refresh();
            while clock::refresh() < start + ticks {
                std::hint::spin_loop();
            }
            clock::refresh()
        };
        c.restart(clock::refresh());
        past(level);
        assert!(!c.hold(1, false));
        assert!(c.concurrent(), "a short hold: still open");
        assert_eq!(
            c.hold_limit(),
            c.tuner().max_hold_ticks(),
            "the next hold is a probe"
        );
        // An arrival joins the probe: open, at the tuner's level again.
        c.restart(clock::refresh());
        c.arrived(1, 2, clock::refresh());
        assert_eq!(c.hold_limit(), level);
        // Short holds, each followed by a probe, none joined: closed after
        // enough failed probes.
        for failed in 0..UNJOINED_TO_CLOSE {
            assert!(c.concurrent(), "open after {failed} failed probes");
            c.restart(clock::refresh());
            past(level);
            assert!(!c.hold(1, false));
            assert_eq!(c.hold_limit(), c.tuner().max_hold_ticks(), "a probe");
            c.restart(clock::refresh());
            past(c.hold_limit());
            assert!(!c.hold(1, false));
        }
        assert!(!c.concurrent());
        // SCST the same way: a short hold's exchange fetched nothing.
        c.arrived(1, 2, clock::refresh());
        assert!(c.concurrent());
        for _ in 0..UNJOINED_TO_CLOSE {
            assert!(c.concurrent());
            c.unjoined(1, clock::refresh());
            assert!(c.concurrent(), "a short hold: the next one is a probe");
            c.unjoined(1, clock::refresh());
        }
        assert!(!c.concurrent(), "the probes' exchanges fetched nothing too");
    }

    #[test]
    fn empty_exchanges_of_an_idle_device_do_not_run_the_tuner() {
        let mut c = coalescer(32, Duration::from_micros(200), Duration::ZERO);
        search(&mut c, 2, [100, 100, 100, 100, 100]);
        let before = c.tuner().clone();
        // Ten seconds of idle exchanges, one per millisecond.
        let ms = clock::duration_to_ticks(Duration::from_millis(1));
        let mut now = clock::duration_to_ticks(Duration::from_secs(100));
        for _ in 0..10_000 {
            now += ms;
            c.completed(0, now);
        }
        assert_eq!(format!("{:?}", c.tuner()), format!("{before:?}"));
    }

    #[test]
    fn a_hold_of_several_completions_keeps_the_gate_open_unjoined() {
        // An initiator short of CPU, busy taking the last batch, submits
        // nothing while the next one is held.
        let mut c = coalescer(32, Duration::from_micros(200), Duration::ZERO);
        search(&mut c, 2, [100, 100, 100, 100, 100]);
        assert!(c.concurrent());
        let past_the_hold = || {
            std::thread::sleep(Duration::from_millis(1));
            clock::refresh()
        };
        c.restart(clock::refresh());
        past_the_hold();
        assert!(!c.hold(5, false), "the hold is over");
        assert!(c.concurrent(), "five carried: still open");
        c.unjoined(5, clock::refresh());
        assert!(c.concurrent(), "SCST: five carried, still open");
        // A probe that carries several: still open.
        while !c.probing {
            c.arrived(1, 2, clock::refresh());
        }
        let now = clock::refresh();
        c.restart(now);
        assert!(c.due(4, now + c.hold_limit()));
        assert!(!c.probing, "the probe is over");
        assert!(c.concurrent(), "four carried: still open");
        // One carried, in enough holds in a row: closed.
        for _ in 0..UNJOINED_TO_CLOSE {
            c.restart(clock::refresh());
            past_the_hold();
            assert!(!c.hold(1, false));
        }
        assert!(!c.concurrent());
    }

    #[test]
    fn a_window_holds_even_without_concurrency() {
        let mut c = coalescer(4, Duration::ZERO, HOUR);
        assert!(c.has_window());
        assert!(c.hold(1, false));
        assert!(!c.hold(4, false), "up to a batch");
        assert!(!c.hold(1, true), "urgent goes out");
        let now = clock::now();
        assert!(c.due(0, now), "fetching is not windowed");
        assert!(!c.due(1, now), "a queued reply waits for the window");
    }

    #[test]
    fn batch_one_or_zero_never_holds() {
        for batch in [0, 1] {
            let mut c = coalescer(batch, HOUR, Duration::ZERO);
            search(&mut c, 8, [100, 200, 300, 400, 500]);
            assert!(!c.concurrent());
            assert!(!c.hold(0, false));
            assert!(!c.hold(1, false));
        }
    }
}
