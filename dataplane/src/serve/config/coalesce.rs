//! The completion coalescing keys both frontends take, with the same names
//! and meaning: `doorbell_batch` and `completion_coalesce_us`.

use crate::frontend::CoalesceConfig;

use super::error::{err, ConfigError};

/// Default of `doorbell_batch` (`[tcmu]` and `[[scst]]`).
pub const DEFAULT_DOORBELL_BATCH: usize = 32;
/// Largest `doorbell_batch`.
pub const MAX_DOORBELL_BATCH: usize = 65535;
/// Largest `completion_coalesce_us` (100 ms).
pub const MAX_COMPLETION_COALESCE_US: u64 = 100_000;

pub(super) fn default_doorbell_batch() -> usize {
    DEFAULT_DOORBELL_BATCH
}

/// The device coalescing settings for `doorbell_batch` and
/// `completion_coalesce_us` (the hold limit keeps its default).
pub(super) fn coalesce_config(
    doorbell_batch: usize,
    completion_coalesce_us: u64,
) -> CoalesceConfig {
    CoalesceConfig {
        batch: doorbell_batch,
        window: std::time::Duration::from_micros(completion_coalesce_us),
        ..CoalesceConfig::default()
    }
}

/// Checks `doorbell_batch` and `completion_coalesce_us` of `[tcmu]` or an
/// `[[scst]]` (`at` names the table).
pub(super) fn check_coalesce(
    at: &str,
    doorbell_batch: usize,
    completion_coalesce_us: u64,
) -> Result<(), ConfigError> {
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
