//! The completion coalescing keys both frontends take, with the same names
//! and meaning: `doorbell_batch`, `coalesce_max_hold_us` and
//! `completion_coalesce_us`.

use crate::frontend::CoalesceConfig;

use super::error::{err, ConfigError};

/// Default of `doorbell_batch` (`[tcmu]` and `[[scst]]`).
pub const DEFAULT_DOORBELL_BATCH: usize = 32;
/// Largest `doorbell_batch`.
pub const MAX_DOORBELL_BATCH: usize = 65535;
/// Largest `completion_coalesce_us` (100 ms).
pub const MAX_COMPLETION_COALESCE_US: u64 = 100_000;
/// Default of `coalesce_max_hold_us` (see [`CoalesceConfig::max_hold`]).
pub const DEFAULT_COALESCE_MAX_HOLD_US: u64 = CoalesceConfig::DEFAULT_MAX_HOLD.as_micros() as u64;
/// Largest `coalesce_max_hold_us` (100 ms).
pub const MAX_COALESCE_MAX_HOLD_US: u64 = 100_000;

pub(super) fn default_doorbell_batch() -> usize {
    DEFAULT_DOORBELL_BATCH
}

pub(super) fn default_coalesce_max_hold_us() -> u64 {
    DEFAULT_COALESCE_MAX_HOLD_US
}

/// The coalescing keys of `[tcmu]` or an `[[scst]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CoalesceKeys {
    pub doorbell_batch: usize,
    pub coalesce_max_hold_us: u64,
    pub coalesce_hold_us: Option<u64>,
    pub completion_coalesce_us: u64,
}

impl CoalesceKeys {
    /// The device coalescing settings.
    pub fn config(&self) -> CoalesceConfig {
        CoalesceConfig {
            batch: self.doorbell_batch,
            max_hold: std::time::Duration::from_micros(self.coalesce_max_hold_us),
            fixed_hold: self.coalesce_hold_us.map(std::time::Duration::from_micros),
            window: std::time::Duration::from_micros(self.completion_coalesce_us),
        }
    }

    /// Checks the keys (`at` names the table).
    pub fn check(&self, at: &str) -> Result<(), ConfigError> {
        check_coalesce(at, self)
    }
}

fn check_coalesce(at: &str, keys: &CoalesceKeys) -> Result<(), ConfigError> {
    let CoalesceKeys {
        doorbell_batch,
        coalesce_max_hold_us,
        coalesce_hold_us,
        completion_coalesce_us,
    } = *keys;
    for (key, us) in [
        ("coalesce_max_hold_us", Some(coalesce_max_hold_us)),
        ("coalesce_hold_us", coalesce_hold_us),
    ] {
        if let Some(us) = us.filter(|&us| us > MAX_COALESCE_MAX_HOLD_US) {
            return err(format!(
                "{at}.{key}: {us} is above {MAX_COALESCE_MAX_HOLD_US} (100 ms)"
            ));
        }
    }
    if doorbell_batch == 0 || doorbell_batch > MAX_DOORBELL_BATCH {
        return err(format!(
            "{at}.doorbell_batch: {doorbell_batch} is not between 1 and {MAX_DOORBELL_BATCH}"
        ));
    }
    if completion_coalesce_us > MAX_COMPLETION_COALESCE_US {
        return err(format!(
            "{at}.completion_coalesce_us: {completion_coalesce_us} is above \
             {MAX_COMPLETION_COALESCE_US} (100 ms)"
        ));
    }
    Ok(())
}
