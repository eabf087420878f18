//! When to recover a faulted device, and when to stop trying.
//!
//! A device that faulted (a TCMU ring that cannot be walked, an scst_user
//! fd that refuses the device) is recovered by the server: detached,
//! reset (TCMU: block, `reset_ring`; SCST: a new fd, registered again) and
//! attached again. [`Health`] keeps, per device, what happened across
//! those re-attaches: the faults and recoveries since start (statistics),
//! the fault the device is in, and the *streak*: faults and failed
//! attempts in a row. A fault more than [`RecoveryPolicy::stable`] after
//! the last recovery starts a new streak. The first attempt of a streak is
//! made at once, each later one after a back-off that doubles from
//! [`RecoveryPolicy::first_retry`] up to [`RecoveryPolicy::max_retry`];
//! after [`RecoveryPolicy::attempts`] attempts the server gives up and
//! leaves the device blocked, with its fault in the statistics, while the
//! other devices keep serving.
//!
//! Pure logic: the caller passes the time.

use std::time::{Duration, Instant};

/// How often and how fast the server recovers a device that faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPolicy {
    /// Attempts in a row before the device is left blocked (at least 1).
    pub attempts: u32,
    /// Back-off before the second attempt of a streak (the first is
    /// immediate); doubles at each further attempt.
    pub first_retry: Duration,
    /// Longest back-off.
    pub max_retry: Duration,
    /// A device that served this long since its last recovery starts a
    /// new streak when it faults.
    pub stable: Duration,
}

impl Default for RecoveryPolicy {
    /// 5 attempts; back-off 100 ms, 200 ms, 400 ms, 800 ms (at most 5 s);
    /// a new streak after 60 s of service.
    fn default() -> Self {
        Self {
            attempts: 5,
            first_retry: Duration::from_millis(100),
            max_retry: Duration::from_secs(5),
            stable: Duration::from_secs(60),
        }
    }
}

impl RecoveryPolicy {
    /// The wait before attempt `n` (1-based) of a streak.
    pub fn backoff(&self, n: u32) -> Duration {
        if n <= 1 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(n - 2).unwrap_or(u32::MAX);
        self.first_retry
            .checked_mul(factor)
            .unwrap_or(self.max_retry)
            .min(self.max_retry)
    }
}

/// What to do about a device after a fault or a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Attempt `attempt` (of `of`) at `at`.
    Retry { at: Instant, attempt: u32, of: u32 },
    /// Too many in a row: leave the device blocked.
    GiveUp { attempts: u32 },
}

/// A device's faults and recoveries across re-attaches. See the module
/// docs.
#[derive(Debug, Clone, Default)]
pub(super) struct Health {
    /// Faults since start.
    pub faults: u64,
    /// Successful recoveries since start.
    pub recoveries: u64,
    /// The fault the device is in (until it is recovered), or why it was
    /// left blocked.
    pub fault: Option<String>,
    /// Attempts in the current streak.
    streak: u32,
    last_recovered: Option<Instant>,
}

impl Health {
    /// The device faulted at `now` for `why`.
    pub(super) fn fault(&mut self, now: Instant, why: String, policy: &RecoveryPolicy) -> Next {
        self.faults += 1;
        self.fault = Some(why);
        let stable = self
            .last_recovered
            .is_none_or(|t| now.saturating_duration_since(t) >= policy.stable);
        if stable {
            self.streak = 0;
        }
        self.next(now, policy)
    }

    /// An attempt to recover failed at `now`.
    pub(super) fn attempt_failed(&mut self, now: Instant, policy: &RecoveryPolicy) -> Next {
        self.next(now, policy)
    }

    /// The device was recovered at `now`.
    pub(super) fn recovered(&mut self, now: Instant) {
        self.recoveries += 1;
        self.fault = None;
        self.last_recovered = Some(now);
    }

    fn next(&mut self, now: Instant, policy: &RecoveryPolicy) -> Next {
        let of = policy.attempts.max(1);
        if self.streak >= of {
            return Next::GiveUp { attempts: of };
        }
        self.streak += 1;
        Next::Retry {
            at: now + policy.backoff(self.streak),
            attempt: self.streak,
            of,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> RecoveryPolicy {
        RecoveryPolicy {
            attempts: 3,
            first_retry: 100 * MS,
            max_retry: 150 * MS,
            stable: 1000 * MS,
        }
    }

    #[test]
    fn backoff_starts_immediate_then_doubles_up_to_the_cap() {
        let p = RecoveryPolicy::default();
        let got: Vec<u128> = (1..=8).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(got, [0, 100, 200, 400, 800, 1600, 3200, 5000]);
        assert_eq!(p.backoff(200), p.max_retry);
    }

    #[test]
    fn a_streak_of_attempts_ends_in_giving_up() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = Health::default();
        assert_eq!(
            h.fault(t0, "bad".into(), &p),
            Next::Retry {
                at: t0,
                attempt: 1,
                of: 3
            }
        );
        assert_eq!(
            h.attempt_failed(t0, &p),
            Next::Retry {
                at: t0 + 100 * MS,
                attempt: 2,
                of: 3
            }
        );
        h.recovered(t0 + 100 * MS);
        assert_eq!((h.recoveries, h.fault.as_deref()), (1, None));
        // Faults again soon: the streak goes on.
        let t1 = t0 + 200 * MS;
        assert_eq!(
            h.fault(t1, "again".into(), &p),
            Next::Retry {
                at: t1 + 150 * MS,
                attempt: 3,
                of: 3
            }
        );
        assert_eq!(h.attempt_failed(t1, &p), Next::GiveUp { attempts: 3 });
        assert_eq!((h.faults, h.fault.as_deref()), (2, Some("again")));
    }

    #[test]
    fn a_fault_after_stable_service_starts_a_new_streak() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = Health::default();
        h.fault(t0, "a".into(), &p);
        h.attempt_failed(t0, &p);
        h.recovered(t0);
        let later = t0 + 1000 * MS;
        assert_eq!(
            h.fault(later, "b".into(), &p),
            Next::Retry {
                at: later,
                attempt: 1,
                of: 3
            }
        );
    }
}
