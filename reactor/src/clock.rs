//! A cheap monotonic tick source for busy/idle accounting.
//!
//! A reactor reads the clock once per poll, so it must cost a few nanoseconds,
//! not a `clock_gettime` call. [`now`] returns *ticks*; [`ticks_to_ns`] and
//! [`ns_to_ticks`] convert. Only differences of ticks are meaningful.
//!
//! # Sources
//! - **TSC** (x86_64): `rdtsc`, about 20 cycles, no syscall, no vDSO. Used
//!   only when `/proc/cpuinfo` lists both `constant_tsc` (the TSC ticks at a
//!   fixed rate whatever the core's frequency) and `nonstop_tsc` (it keeps
//!   ticking in deep C-states, so time asleep in epoll is counted right). The
//!   tick rate is calibrated once against [`Instant`] over about 5 ms, on the
//!   first call of any function here ([`init`] does it ahead of time;
//!   `Reactor::spawn` calls it on the spawning thread).
//! - **Steady TSC** (x86_64, without those flags): `rdtsc` as well, when
//!   reading the OS clock is expensive (at least [`CHEAP_READ_NS`] a read:
//!   a guest whose kernel gave up on the TSC and fell back to `hpet`, as
//!   QEMU TCG guests do) and two calibrations in a row agree on the TSC's
//!   rate within [`STEADY_TOLERANCE_PPM`]. Every `Instant` read there is a
//!   system call plus an emulated device access that takes the emulator's
//!   global lock, so a reactor that reads it at every iteration slows the
//!   other vCPUs (measured in such a guest: the initiator's I/O at queue
//!   depth 1 ran 10-20 % faster with the reactor on the TSC). The kernel's
//!   own reason to distrust the TSC there is that the vCPUs' counters are
//!   not synchronised, which does not matter to a pinned reactor comparing
//!   its own readings; a TSC that stopped in deep idle states would make
//!   sleeps look short, which only skews busy/idle accounting.
//! - **Instant** (everything else, or a calibration that came out absurd):
//!   nanoseconds since a process-wide epoch read through `Instant`; then one
//!   tick is one nanosecond.
//!
//! `DATAPLANE_CLOCK=tsc` or `DATAPLANE_CLOCK=os` in the environment overrides
//! the choice (a TSC that fails its calibration still falls back to `os`).
//!
//! The TSC of different cores is assumed to be synchronised (it is on any
//! CPU with `constant_tsc` under Linux, which otherwise marks the TSC
//! unstable); a reactor only subtracts ticks read on its own pinned core
//! anyway.
//!
//! # When the clock is not cheap
//! `Instant` is a vDSO read only while the kernel's clocksource allows it
//! (tsc, kvm-clock). Under `hpet` or `acpi_pm` (guests without a stable
//! TSC, e.g. under QEMU TCG) every read is a system call plus an emulated
//! device access, microseconds each. [`is_cheap`] tells which case this is
//! (a read measured at calibration under [`CHEAP_READ_NS`]). A reactor on an
//! expensive clock does not time each poller: it reads the clock at the
//! first [`recent`] of an iteration (a device stamping the commands it
//! found, see [`expire_recent`]) and at the end of an iteration that found
//! work, and in a run of idle iterations in which no poller asks for the
//! time only at the end of every
//! [`IDLE_CLOCK_EVERY`](crate::IDLE_CLOCK_EVERY)-th.
//!
//! # Reading the TSC in an emulator
//! The [`ClockSource::SteadyTsc`] never counts as cheap, however fast one
//! read is. It is chosen only where the kernel gave up on the TSC, which
//! is a virtual machine, and under QEMU's TCG each `rdtsc` is a call into
//! the emulator that (in QEMU's `cpu_get_ticks`) takes a lock all vCPUs
//! share. One read took 66-86 ns in the VM test's guest, but a thread
//! spinning on `rdtsc` on CPU 1 cut the 4 KiB queue-depth-1 reads of an
//! rd_mcp LUN on CPU 0 to 0.13-0.52 of their rate with CPU 1 idle (823-2322
//! against 4132-6414 IOPS, three rounds), while the same spin without it
//! left them at 0.92-1.20 and one `rdtsc` every 16 turns at 0.71-1.12. A
//! reactor reading the clock at every iteration slows its initiator's CPU
//! the same way, if less (an iteration is longer than a turn of that
//! spin). In the whole path the change was within the boots' noise on a
//! host with 3-27 % steal time: queue-depth-1 reads at 0.352-0.476 of
//! rd_mcp's rate before, 0.374-0.484 after (four alternating boots each,
//! `tests/vm/README.md`).

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A clock read at or above this many nanoseconds is not cheap.
pub const CHEAP_READ_NS: u64 = 200;

/// How far apart (parts per million) two TSC calibrations may be for a TSC
/// without the invariant-TSC flags to count as steady.
pub const STEADY_TOLERANCE_PPM: u64 = 5_000;

thread_local! {
    /// This thread's last [`refresh`] (0: never).
    static RECENT: Cell<u64> = const { Cell::new(0) };
    /// [`expire_recent`] was called since the last [`refresh`]: the next
    /// [`recent`] reads the clock.
    static EXPIRED: Cell<bool> = const { Cell::new(false) };
}

/// Where the ticks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockSource {
    /// The x86_64 time-stamp counter (`rdtsc`), invariant by the CPU's
    /// flags.
    Tsc,
    /// The time-stamp counter without those flags, chosen because the OS
    /// clock is expensive here and two calibrations agreed (see the module
    /// docs).
    SteadyTsc,
    /// `std::time::Instant`; one tick is one nanosecond.
    Instant,
}

#[derive(Debug)]
struct Clock {
    source: ClockSource,
    /// Nanoseconds per tick as a 32.32 fixed-point number.
    ns_per_tick_q32: u64,
    /// Ticks per nanosecond as a 32.32 fixed-point number.
    ticks_per_ns_q32: u64,
    /// Epoch of the `Instant` source.
    epoch: Instant,
}

static CLOCK: OnceLock<Clock> = OnceLock::new();

/// How long the TSC is measured against `Instant`.
const CALIBRATION: Duration = Duration::from_millis(5);

/// One in fixed point 32.32.
const Q32_ONE: u64 = 1 << 32;

#[inline]
fn clock() -> &'static Clock {
    CLOCK.get_or_init(Clock::detect)
}

impl Clock {
    fn instant() -> Clock {
        Clock {
            source: ClockSource::Instant,
            ns_per_tick_q32: Q32_ONE,
            ticks_per_ns_q32: Q32_ONE,
            epoch: Instant::now(),
        }
    }

    fn detect() -> Clock {
        #[cfg(target_arch = "x86_64")]
        {
            let forced = std::env::var("DATAPLANE_CLOCK").ok();
            let choice = choose_source(forced.as_deref(), tsc_is_invariant(), os_read_cost_ns);
            let clock = match choice {
                Some(ClockSource::Tsc) => Clock::calibrate_tsc(ClockSource::Tsc),
                Some(ClockSource::SteadyTsc) => Clock::steady_tsc(),
                _ => None,
            };
            if let Some(clock) = clock {
                return clock;
            }
        }
        Clock::instant()
    }

    /// Two calibrations in a row whose rates agree within
    /// [`STEADY_TOLERANCE_PPM`]: the second one.
    #[cfg(target_arch = "x86_64")]
    fn steady_tsc() -> Option<Clock> {
        let first = Clock::calibrate_tsc(ClockSource::SteadyTsc)?;
        let second = Clock::calibrate_tsc(ClockSource::SteadyTsc)?;
        rates_agree(first.ticks_per_ns_q32, second.ticks_per_ns_q32).then_some(second)
    }

    #[cfg(target_arch = "x86_64")]
    fn calibrate_tsc(source: ClockSource) -> Option<Clock> {
        let (start, start_ticks) = paired_reading()?;
        std::thread::sleep(CALIBRATION);
        let (end, end_ticks) = paired_reading()?;
        let ticks = end_ticks.checked_sub(start_ticks)?;
        let ns = u64::try_from(end.duration_since(start).as_nanos()).ok()?;
        // Anything outside 0.05 .. 50 GHz is a broken TSC, not a CPU.
        if ns == 0 || ticks < ns / 20 || ticks > ns.saturating_mul(50) {
            return None;
        }
        let ns_per_tick_q32 = ((u128::from(ns) << 32) / u128::from(ticks)) as u64;
        let ticks_per_ns_q32 = ((u128::from(ticks) << 32) / u128::from(ns)) as u64;
        Some(Clock {
            source,
            ns_per_tick_q32,
            ticks_per_ns_q32,
            epoch: start,
        })
    }
}

/// Which source to calibrate: `forced` is `DATAPLANE_CLOCK` (`tsc` or `os`;
/// anything else is ignored), `invariant` whether the CPU's flags promise
/// an invariant TSC, `os_read_ns` the cost of one OS clock read (asked only
/// when it decides). `None`: the OS clock.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn choose_source(
    forced: Option<&str>,
    invariant: bool,
    os_read_ns: impl FnOnce() -> u64,
) -> Option<ClockSource> {
    match forced {
        Some("os") => None,
        Some("tsc") if !invariant => Some(ClockSource::SteadyTsc),
        _ if invariant => Some(ClockSource::Tsc),
        _ if os_read_ns() >= CHEAP_READ_NS => Some(ClockSource::SteadyTsc),
        _ => None,
    }
}

/// True if two rates (32.32 fixed point) differ by at most
/// [`STEADY_TOLERANCE_PPM`] of the first.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn rates_agree(first_q32: u64, second_q32: u64) -> bool {
    let diff = u128::from(first_q32.abs_diff(second_q32));
    diff * 1_000_000 <= u128::from(first_q32) * u128::from(STEADY_TOLERANCE_PPM)
}

/// Mean cost of one `Instant::now()` in nanoseconds.
#[cfg(target_arch = "x86_64")]
fn os_read_cost_ns() -> u64 {
    mean_read_ns(Instant::now)
}

/// An `Instant` and a TSC value read at (nearly) the same moment: the TSC is
/// read between two `Instant`s no more than 20 µs apart, so a preemption in
/// the middle cannot skew the calibration. Gives up after 100 tries.
#[cfg(target_arch = "x86_64")]
fn paired_reading() -> Option<(Instant, u64)> {
    const TIGHT: Duration = Duration::from_micros(20);
    for _ in 0..100 {
        let before = Instant::now();
        let ticks = rdtsc();
        let after = Instant::now();
        let gap = after.duration_since(before);
        if gap <= TIGHT {
            return Some((before + gap / 2, ticks));
        }
    }
    None
}

/// True if `/proc/cpuinfo` lists `constant_tsc` and `nonstop_tsc`.
#[cfg(target_arch = "x86_64")]
fn tsc_is_invariant() -> bool {
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        return false;
    };
    cpuinfo_has_invariant_tsc(&cpuinfo)
}

/// True if the first `flags` line of a `/proc/cpuinfo` text has both flags.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn cpuinfo_has_invariant_tsc(cpuinfo: &str) -> bool {
    let Some(flags) = cpuinfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("flags")
                .and_then(|rest| rest.split_once(':'))
        })
        .map(|(_, flags)| flags)
    else {
        return false;
    };
    let has = |flag: &str| flags.split_ascii_whitespace().any(|f| f == flag);
    has("constant_tsc") && has("nonstop_tsc")
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` exists on every x86_64 CPU, reads no memory and has no
    // side effects; it is only `unsafe` as an intrinsic.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

/// Calibrates the clock now (about 5 ms on the first call, free after).
pub fn init() {
    let _ = clock();
}

/// Which source [`now`] reads.
pub fn source() -> ClockSource {
    clock().source
}

/// Mean cost of one [`now`] in nanoseconds, measured once (64 reads).
pub fn read_cost_ns() -> u64 {
    static COST: OnceLock<u64> = OnceLock::new();
    *COST.get_or_init(|| mean_read_ns(now))
}

/// Mean cost in nanoseconds of one call of `read` over 64 calls, timed
/// with `Instant`.
fn mean_read_ns<T>(mut read: impl FnMut() -> T) -> u64 {
    const READS: u32 = 64;
    let start = Instant::now();
    for _ in 0..READS {
        std::hint::black_box(read());
    }
    u64::try_from(start.elapsed().as_nanos() / u128::from(READS)).unwrap_or(u64::MAX)
}

/// True if [`now`] costs less than [`CHEAP_READ_NS`] and its source is not
/// the [`ClockSource::SteadyTsc`] (see the module docs, "Reading the TSC in
/// an emulator").
pub fn is_cheap() -> bool {
    cheap(source(), read_cost_ns)
}

/// [`is_cheap`] for a `source` whose read costs `read_ns()` (asked only
/// when it decides).
fn cheap(source: ClockSource, read_ns: impl FnOnce() -> u64) -> bool {
    source != ClockSource::SteadyTsc && read_ns() < CHEAP_READ_NS
}

/// Reads the clock and keeps the reading as this thread's [`recent`] time.
#[inline]
pub fn refresh() -> u64 {
    let t = now();
    RECENT.with(|r| r.set(t));
    EXPIRED.with(|e| e.set(false));
    t
}

/// Marks this thread's [`recent`] time out of date: the next [`recent`]
/// reads the clock (once; the calls after it get that reading). A reactor
/// on an expensive clock calls it as each iteration begins, so that the
/// time is read in an iteration only if a poller needs it.
#[inline]
pub fn expire_recent() {
    EXPIRED.with(|e| e.set(true));
}

/// True if [`expire_recent`] was called and no reading was taken since:
/// the next [`recent`] reads the clock.
#[inline]
pub fn expired() -> bool {
    EXPIRED.with(Cell::get)
}

/// This thread's recent time: its last [`refresh`] (a reactor refreshes
/// before every poller when the clock is cheap; on an expensive one at
/// the first `recent` of an iteration, see [`expire_recent`]), or [`now`]
/// on a thread that never refreshed. For timestamps that may lag by one
/// poller's work.
#[inline]
pub fn recent() -> u64 {
    if EXPIRED.with(Cell::get) {
        return refresh();
    }
    let t = RECENT.with(Cell::get);
    if t == 0 {
        now()
    } else {
        t
    }
}

/// The current time in ticks. Monotonic on one core; cheap where the
/// source is (see [`is_cheap`]).
#[inline]
pub fn now() -> u64 {
    let clock = clock();
    match clock.source {
        #[cfg(target_arch = "x86_64")]
        ClockSource::Tsc | ClockSource::SteadyTsc => rdtsc(),
        _ => clock.epoch.elapsed().as_nanos() as u64,
    }
}

/// Converts a tick count (a difference of [`now`] values) to nanoseconds.
#[inline]
pub fn ticks_to_ns(ticks: u64) -> u64 {
    mul_q32(ticks, clock().ns_per_tick_q32)
}

/// Converts nanoseconds to ticks.
#[inline]
pub fn ns_to_ticks(ns: u64) -> u64 {
    mul_q32(ns, clock().ticks_per_ns_q32)
}

/// Converts a duration to ticks (saturating at `u64::MAX`).
#[inline]
pub fn duration_to_ticks(d: Duration) -> u64 {
    ns_to_ticks(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `value * factor / 2^32`, saturating at `u64::MAX`.
#[inline]
fn mul_q32(value: u64, factor_q32: u64) -> u64 {
    let product = (u128::from(value) * u128::from(factor_q32)) >> 32;
    u64::try_from(product).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_is_the_last_refresh_of_this_thread() {
        std::thread::spawn(|| {
            let before = now();
            assert!(recent() >= before, "never refreshed: the current time");
            let t = refresh();
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(recent(), t);
            assert!(now() > t);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_expired_recent_time_is_read_again_once() {
        std::thread::spawn(|| {
            let t = refresh();
            std::thread::sleep(Duration::from_millis(2));
            expire_recent();
            let fresh = recent();
            assert!(fresh > t, "an expired recent time reads the clock");
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(recent(), fresh, "and keeps that reading");
            expire_recent();
            let again = refresh();
            assert_eq!(recent(), again, "a refresh also renews it");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn read_cost_is_measured_once() {
        let cost = read_cost_ns();
        assert_eq!(read_cost_ns(), cost);
        assert_eq!(
            is_cheap(),
            source() != ClockSource::SteadyTsc && cost < CHEAP_READ_NS
        );
    }

    #[test]
    fn a_steady_tsc_is_never_cheap() {
        let never = || -> u64 { panic!("the read cost is not needed") };
        assert!(!cheap(ClockSource::SteadyTsc, never));
        assert!(!cheap(ClockSource::SteadyTsc, || 1));
        assert!(cheap(ClockSource::Tsc, || CHEAP_READ_NS - 1));
        assert!(!cheap(ClockSource::Tsc, || CHEAP_READ_NS));
        assert!(cheap(ClockSource::Instant, || 30));
        assert!(!cheap(ClockSource::Instant, || 2_000));
    }

    #[test]
    fn finds_flags_in_cpuinfo() {
        let both = "processor\t: 0\nflags\t\t: fpu tsc constant_tsc rep_good nonstop_tsc cpuid\n";
        assert!(cpuinfo_has_invariant_tsc(both));
        let constant_only = "flags\t\t: fpu tsc constant_tsc rep_good\n";
        assert!(!cpuinfo_has_invariant_tsc(constant_only));
        // A flag that merely contains the name does not count.
        let lookalike = "flags\t: xconstant_tsc nonstop_tscx\n";
        assert!(!cpuinfo_has_invariant_tsc(lookalike));
        assert!(!cpuinfo_has_invariant_tsc("processor : 0\n"));
    }

    #[test]
    fn chooses_the_tsc_where_the_os_clock_is_expensive() {
        let never = || -> u64 { panic!("the OS clock's cost is not needed") };
        assert_eq!(choose_source(None, true, never), Some(ClockSource::Tsc));
        assert_eq!(
            choose_source(None, false, || CHEAP_READ_NS),
            Some(ClockSource::SteadyTsc),
            "hpet-like: a steady TSC is tried"
        );
        assert_eq!(
            choose_source(None, false, || 30),
            None,
            "vDSO: the OS clock"
        );
        assert_eq!(choose_source(Some("os"), true, never), None);
        assert_eq!(
            choose_source(Some("tsc"), false, never),
            Some(ClockSource::SteadyTsc)
        );
        assert_eq!(
            choose_source(Some("tsc"), true, never),
            Some(ClockSource::Tsc)
        );
        assert_eq!(
            choose_source(Some("bogus"), false, || 30),
            None,
            "an unknown value is ignored"
        );
    }

    #[test]
    fn steady_means_two_rates_within_the_tolerance() {
        let rate = 3 * Q32_ONE;
        let step = rate / 1_000_000 * STEADY_TOLERANCE_PPM;
        assert!(rates_agree(rate, rate));
        assert!(rates_agree(rate, rate + step));
        assert!(rates_agree(rate, rate - step));
        assert!(!rates_agree(rate, rate + 2 * step));
        assert!(!rates_agree(rate, rate / 2));
    }

    #[test]
    fn fixed_point_conversion() {
        assert_eq!(mul_q32(1000, Q32_ONE), 1000);
        assert_eq!(mul_q32(1000, Q32_ONE / 2), 500);
        assert_eq!(mul_q32(3, 3 * Q32_ONE), 9);
        assert_eq!(mul_q32(u64::MAX, 2 * Q32_ONE), u64::MAX);
    }

    #[test]
    fn ticks_follow_instant() {
        // Not a speed assertion: the tick interval lies inside the Instant
        // interval, and a 20 ms sleep lasts at least 20 ms, so the converted
        // ticks must land between the two (with 2% for calibration error).
        let wall = Instant::now();
        let start = now();
        std::thread::sleep(Duration::from_millis(20));
        let ticks = now() - start;
        let wall_ns = wall.elapsed().as_nanos() as u64;
        let ns = ticks_to_ns(ticks);
        assert!(
            ns >= 19_600_000,
            "{ns} ns for a 20 ms sleep ({:?})",
            source()
        );
        assert!(ns <= wall_ns + wall_ns / 50, "{ns} ns vs wall {wall_ns} ns");
        let back = ns_to_ticks(ns);
        assert!(
            back.abs_diff(ticks) <= ticks / 1000 + 2,
            "{back} vs {ticks}"
        );
    }
}
