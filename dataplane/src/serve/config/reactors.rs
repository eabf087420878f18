//! `[reactors]`: the CPUs, one reactor each, and their idle policy.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::error::{err, ConfigError};

/// Reactor idle policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Idle {
    /// Spin: lowest latency, one CPU per reactor always busy.
    Busy,
    /// Sleep in epoll after a run of idle polls.
    #[default]
    Adaptive,
}

/// `[reactors]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReactorsConfig {
    /// One reactor per CPU, in this order (reactor i runs on `cores[i]`).
    pub cores: Vec<usize>,
    /// Idle policy of every reactor.
    #[serde(default)]
    pub idle: Idle,
    /// Adaptive policy: idle polls in a row before a reactor sleeps
    /// (default 10000, about 0.1-1 ms of spinning). Lower it where CPU time is
    /// scarce (a small VM shared with the initiator); raise it for latency.
    #[serde(default)]
    pub idle_polls_before_sleep: Option<u32>,
    /// Adaptive policy: the shortest spin in microseconds after a reactor's
    /// last work before it sleeps, however fast its polls run (0 to
    /// 100000; default 0: the poll count alone decides). A floor keeps a
    /// reactor awake through the gaps of a queue-depth-1 stream on a host
    /// whose polls are cheap or slow alike.
    #[serde(default)]
    pub min_spin_us: Option<u64>,
    /// Adaptive policy: longest single sleep in milliseconds (default 10).
    #[serde(default)]
    pub max_sleep_ms: Option<u64>,
}

impl ReactorsConfig {
    /// The reactor idle policy this section describes.
    pub fn idle_policy(&self) -> reactor::IdlePolicy {
        match self.idle {
            Idle::Busy => reactor::IdlePolicy::Busy,
            Idle::Adaptive => reactor::IdlePolicy::Adaptive {
                idle_polls_before_sleep: self
                    .idle_polls_before_sleep
                    .unwrap_or(reactor::IdlePolicy::DEFAULT_IDLE_POLLS_BEFORE_SLEEP),
                min_spin: self
                    .min_spin_us
                    .map(std::time::Duration::from_micros)
                    .unwrap_or(reactor::IdlePolicy::DEFAULT_MIN_SPIN),
                max_sleep: self
                    .max_sleep_ms
                    .map(std::time::Duration::from_millis)
                    .unwrap_or(reactor::IdlePolicy::DEFAULT_MAX_SLEEP),
            },
        }
    }
}

impl ReactorsConfig {
    /// Checks the CPUs against those `available` to this process, and the
    /// idle policy's settings.
    pub(super) fn check(&self, available: &[usize]) -> Result<(), ConfigError> {
        let cores = &self.cores;
        if cores.is_empty() {
            return err("reactors.cores: at least one CPU is required");
        }
        let mut seen = HashSet::new();
        for (i, core) in cores.iter().enumerate() {
            if !available.contains(core) {
                return err(format!(
                    "reactors.cores[{i}]: CPU {core} does not exist or is not available (available: {available:?})"
                ));
            }
            if !seen.insert(core) {
                return err(format!("reactors.cores[{i}]: CPU {core} is listed twice"));
            }
        }

        if self.idle == Idle::Busy
            && (self.idle_polls_before_sleep.is_some()
                || self.max_sleep_ms.is_some()
                || self.min_spin_us.is_some())
        {
            return err("reactors.idle_polls_before_sleep / reactors.min_spin_us / reactors.max_sleep_ms: only meaningful with idle = \"adaptive\"");
        }
        if let Some(us) = self.min_spin_us {
            if us > 100_000 {
                return err(format!(
                    "reactors.min_spin_us: {us} is not between 0 and 100000"
                ));
            }
        }
        if self.idle_polls_before_sleep == Some(0) {
            return err("reactors.idle_polls_before_sleep: must be at least 1");
        }
        if let Some(ms) = self.max_sleep_ms {
            if ms == 0 || ms > 1000 {
                return err(format!(
                    "reactors.max_sleep_ms: {ms} is not between 1 and 1000"
                ));
            }
        }
        Ok(())
    }
}
