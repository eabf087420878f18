//! `[[scst]]`: the scst_user devices registered at start, their options,
//! buffer pool, polling and coalescing.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Deserializer, Serialize};

use crate::frontend::CoalesceConfig;
use crate::scst::export::{default_target, LunAddress, DEFAULT_DRIVER};
use crate::scst::register::{MemoryReuse, OnFreeCmd, ParseType, RegisterSpec, ScstOptions};
use crate::scst::version::check_version_string;

use super::bdevs::{block_size_at_open, block_size_of, find, parent_of, BdevConfig};
use super::coalesce::{CoalesceKeys, DEFAULT_COALESCE_MAX_HOLD_US, DEFAULT_DOORBELL_BATCH};
use super::error::{err, ConfigError};
use super::value::check_name;

/// A control-mode-page option: an integer, or `true`/`false` for 1/0.
fn option_byte<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u8>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bool(bool),
        Int(i64),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Bool(b) => Ok(Some(u8::from(b))),
        Raw::Int(n) => u8::try_from(n).map(Some).map_err(|_| {
            serde::de::Error::custom(format!("{n} is out of range (the SCST options are 0 to 3)"))
        }),
    }
}

/// Default of `[[scst]] pool_mb`.
pub const DEFAULT_SCST_POOL_MB: u64 = 256;
/// Smallest `[[scst]] pool_mb`: one buffer of the largest transfer
/// ([`crate::stack::MAX_TRANSFER_BYTES`], 8 MiB).
pub const MIN_SCST_POOL_MB: u64 = 8;
/// Largest `[[scst]] pool_mb` (1 TiB).
pub const MAX_SCST_POOL_MB: u64 = 1 << 20;
/// Default of `[[scst]] idle_poll_us`.
pub const DEFAULT_SCST_IDLE_POLL_US: u64 = 5;
/// Largest `[[scst]] idle_poll_us` (one second).
pub const MAX_SCST_IDLE_POLL_US: u64 = 1_000_000;

/// One `[[scst]]`: an scst_user device registered at start.
///
/// The scst_user options (`parse_type` to `d_sense`) map onto
/// [`ScstOptions`]; unset ones take its defaults (those of fileio_tgt).
/// Partial transfers are not supported (SCST implements none).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScstConfig {
    /// The SCST device name (`/sys/kernel/scst_tgt/devices/<name>`).
    pub name: String,
    /// The `[[bdev]]` behind the LUN.
    pub bdev: String,
    /// Logical block size; must equal the bdev's (the default).
    #[serde(default)]
    pub block_size: Option<u32>,
    /// DEV_USER_VERSION; `None` = found at run time
    /// ([`crate::scst::version`]).
    #[serde(default)]
    pub version: Option<String>,
    /// Index into `reactors.cores`; `None` = round-robin, shared with the
    /// TCMU devices.
    #[serde(default)]
    pub reactor: Option<usize>,
    /// Who parses CDBs (`parse` is accepted as another name).
    #[serde(default, alias = "parse")]
    pub parse_type: Option<ParseType>,
    /// Which data buffers the kernel caches for reuse.
    #[serde(default)]
    pub memory_reuse: Option<MemoryReuse>,
    /// ON_FREE_CMD; `None` = per memory policy.
    #[serde(default)]
    pub on_free_cmd: Option<OnFreeCmd>,
    /// Control mode page TST.
    #[serde(default, deserialize_with = "option_byte")]
    pub tst: Option<u8>,
    /// Control mode page QUEUE ALGORITHM MODIFIER.
    #[serde(default, deserialize_with = "option_byte")]
    pub queue_alg: Option<u8>,
    /// Control mode page QERR.
    #[serde(default, deserialize_with = "option_byte")]
    pub qerr: Option<u8>,
    /// Control mode page TAS.
    #[serde(default, deserialize_with = "option_byte")]
    pub tas: Option<u8>,
    /// Control mode page SWP.
    #[serde(default, deserialize_with = "option_byte")]
    pub swp: Option<u8>,
    /// Control mode page D_SENSE (also the sense format of the LUN).
    #[serde(default, deserialize_with = "option_byte")]
    pub d_sense: Option<u8>,
    /// Cap of the device's buffer pool in MiB (default
    /// [`DEFAULT_SCST_POOL_MB`]).
    #[serde(default)]
    pub pool_mb: Option<u64>,
    /// With nothing to answer and nothing executing, the device looks for
    /// new commands this often, in microseconds (default
    /// [`DEFAULT_SCST_IDLE_POLL_US`]; 0 = at every poll): the most a
    /// command arriving at an idle device waits. Looking is an ioctl, or,
    /// once the device has been idle, one `epoll_wait` shared by the idle
    /// devices of its reactor (see `scst::idle_watch` and
    /// `scst::device::ScstDeviceConfig::idle_poll_interval`).
    #[serde(default)]
    pub idle_poll_us: Option<u64>,
    /// Most replies one REPLY_AND_GET_MULTI carries, the cap of the
    /// adaptive batch target (default [`DEFAULT_DOORBELL_BATCH`]; 1 turns
    /// holding off): the same key and meaning as `[tcmu] doorbell_batch`
    /// ([`CoalesceConfig::batch`]).
    #[serde(default)]
    pub doorbell_batch: Option<usize>,
    /// Longest adaptive hold in microseconds (default
    /// `DEFAULT_COALESCE_MAX_HOLD_US`): the same key and meaning as
    /// `[tcmu] coalesce_max_hold_us` ([`CoalesceConfig::max_hold`]).
    #[serde(default)]
    pub coalesce_max_hold_us: Option<u64>,
    /// A fixed hold in microseconds instead of the tuner's choice: the
    /// same key and meaning as `[tcmu] coalesce_hold_us`.
    #[serde(default)]
    pub coalesce_hold_us: Option<u64>,
    /// Completion coalescing window in microseconds (default 0 = off): the
    /// same key and meaning as `[tcmu] completion_coalesce_us`
    /// ([`CoalesceConfig::window`]). For hosts short of CPU.
    #[serde(default)]
    pub completion_coalesce_us: Option<u64>,
    /// LUNs to export the device as once it is registered, and again after
    /// every re-registration (`[[scst.export]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export: Vec<ScstExport>,
}

/// One `[[scst.export]]`: a LUN the device is exported as.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScstExport {
    /// Target driver (default `scst_local`).
    #[serde(default)]
    pub driver: Option<String>,
    /// Target (default `scst_local_tgt` with scst_local; required with
    /// another driver).
    #[serde(default)]
    pub target: Option<String>,
    /// LUN number (default 0).
    #[serde(default)]
    pub lun: Option<u64>,
}

impl ScstExport {
    /// The LUN with the defaults filled in; `None` without a target (and
    /// no default one for the driver), which validation refuses.
    pub fn address(&self) -> Option<LunAddress> {
        let driver = self.driver.as_deref().unwrap_or(DEFAULT_DRIVER);
        let target = match &self.target {
            Some(t) => t.clone(),
            None => default_target(driver)?.to_owned(),
        };
        Some(LunAddress {
            driver: driver.to_owned(),
            target,
            lun: self.lun.unwrap_or(0),
        })
    }
}

impl ScstConfig {
    /// The scst_user options: the set ones over [`ScstOptions`]' defaults.
    pub fn options(&self) -> ScstOptions {
        let d = ScstOptions::default();
        ScstOptions {
            parse_type: self.parse_type.unwrap_or(d.parse_type),
            memory_reuse: self.memory_reuse.unwrap_or(d.memory_reuse),
            on_free_cmd: self.on_free_cmd.or(d.on_free_cmd),
            tst: self.tst.unwrap_or(d.tst),
            queue_alg: self.queue_alg.unwrap_or(d.queue_alg),
            qerr: self.qerr.unwrap_or(d.qerr),
            tas: self.tas.unwrap_or(d.tas),
            swp: self.swp.unwrap_or(d.swp),
            d_sense: self.d_sense.unwrap_or(d.d_sense),
        }
    }

    /// The buffer pool cap in bytes.
    pub fn pool_bytes(&self) -> usize {
        (self.pool_mb.unwrap_or(DEFAULT_SCST_POOL_MB) << 20) as usize
    }

    /// The idle polling interval.
    pub fn idle_poll_interval(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.idle_poll_us.unwrap_or(DEFAULT_SCST_IDLE_POLL_US))
    }

    /// The device's completion coalescing settings.
    pub fn coalesce(&self) -> CoalesceConfig {
        self.coalesce_keys().config()
    }

    fn coalesce_keys(&self) -> CoalesceKeys {
        CoalesceKeys {
            doorbell_batch: self.doorbell_batch.unwrap_or(DEFAULT_DOORBELL_BATCH),
            coalesce_max_hold_us: self
                .coalesce_max_hold_us
                .unwrap_or(DEFAULT_COALESCE_MAX_HOLD_US),
            coalesce_hold_us: self.coalesce_hold_us,
            completion_coalesce_us: self.completion_coalesce_us.unwrap_or(0),
        }
    }
}

/// Checks every `[[scst]]` device: its name (SCST's rules too), its bdev
/// (in `bdevs`, not a striped bdev's child, of the same block size), its
/// version, reactor (below `reactors`), options, pool, polling and
/// coalescing.
pub(super) fn check_scst(
    scst: &[ScstConfig],
    bdevs: &[BdevConfig],
    reactors: usize,
) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    let mut exported = HashMap::new();
    for (i, s) in scst.iter().enumerate() {
        let key = format!("scst[{i}].name");
        check_name(&key, &s.name)?;
        // SCST's own rules (printable ASCII, at most 48 bytes): the
        // message of the registration code.
        if let Err(e) = RegisterSpec::new(s.name.clone(), 512).validate() {
            return err(format!("{key}: {e}"));
        }
        if !names.insert(s.name.as_str()) {
            return err(format!("{key}: {:?} is defined twice", s.name));
        }
        let at = format!("scst[{i}] ({:?})", s.name);
        let Some(bdev) = find(bdevs, &s.bdev) else {
            return err(format!("{at}.bdev: no [[bdev]] named {:?}", s.bdev));
        };
        if let Some(parent) = parent_of(bdevs, &s.bdev) {
            return err(format!(
                "{at}.bdev: {:?} is a child of striped bdev {parent:?} and cannot back a LUN",
                s.bdev
            ));
        }
        let bdev_block_size = block_size_of(bdevs, bdev);
        if let Some(bs) = s.block_size {
            // A file bdev's own block size is compared when it is open.
            if Some(bs) != bdev_block_size && !block_size_at_open(bdevs, bdev) {
                return err(format!(
                    "{at}.block_size: {bs} differs from the block size of bdev {:?} ({}); \
                         leave it out or make them equal",
                    s.bdev,
                    bdev_block_size.unwrap_or(0)
                ));
            }
        }
        if let Some(version) = &s.version {
            check_version_string(version)
                .map_err(|why| ConfigError(format!("{at}.version: {why}")))?;
        }
        if let Some(r) = s.reactor {
            if r >= reactors {
                return err(format!(
                    "{at}.reactor: {r} is not a reactor index (reactors.cores has {})",
                    reactors
                ));
            }
        }
        if let Err(e) = s.options().validate() {
            return err(format!("{at}: {e}"));
        }
        if let Some(mb) = s.pool_mb {
            if !(MIN_SCST_POOL_MB..=MAX_SCST_POOL_MB).contains(&mb) {
                return err(format!(
                    "{at}.pool_mb: {mb} is not between {MIN_SCST_POOL_MB} (one buffer of \
                         the largest transfer) and {MAX_SCST_POOL_MB}"
                ));
            }
        }
        if let Some(us) = s.idle_poll_us {
            if us > MAX_SCST_IDLE_POLL_US {
                return err(format!(
                    "{at}.idle_poll_us: {us} is more than {MAX_SCST_IDLE_POLL_US} (one second)"
                ));
            }
        }
        s.coalesce_keys().check(&at)?;
        for (j, e) in s.export.iter().enumerate() {
            let key = format!("{at}.export[{j}]");
            let Some(address) = e.address() else {
                return err(format!(
                    "{key}.target: give the target; driver {:?} has no default one",
                    e.driver.as_deref().unwrap_or_default()
                ));
            };
            address
                .validate()
                .map_err(|why| ConfigError(format!("{key}: {why}")))?;
            if let Some(other) = exported.insert(address.clone(), s.name.as_str()) {
                return err(format!(
                    "{key}: {address} is also an export of SCST device {other:?}"
                ));
            }
        }
    }
    Ok(())
}
