//! The `dataplane serve` configuration file (TOML).
//!
//! ```toml
//! [reactors]
//! cores = [1]              # CPUs, one reactor each (required)
//! idle = "adaptive"        # "busy" | "adaptive" (default)
//! idle_polls_before_sleep = 10000  # adaptive: spin this many idle polls
//! max_sleep_ms = 10        # adaptive: longest sleep
//!
//! [[bdev]]
//! name = "ram0"            # what LIO's dev_config=<subtype>/<name> names
//! type = "ram"             # "ram" | "null" | "striped"
//! size = "1GiB"
//! block_size = 512         # default 512
//!
//! [[bdev]]
//! name = "fast0"
//! type = "striped"
//! children = ["ram1", "ram2"]
//! chunk = "128KiB"
//!
//! [tcmu]
//! subtype = "dataplane"    # default
//! placement = "round-robin"
//! rescan_interval_ms = 1000
//! doorbell_batch = 32      # most completions per doorbell
//! completion_coalesce_us = 0  # completion coalescing window (0 = off)
//!
//! [[tcmu.pin]]
//! device = "disk0"         # LIO device name (configfs directory)
//! reactor = 0              # index into reactors.cores
//!
//! [[scst]]
//! name = "disk1"           # SCST device name (/sys/kernel/scst_tgt/devices/disk1)
//! bdev = "ram0"            # a [[bdev]] (not a striped bdev's child)
//! # block_size = 512       # default: the bdev's (must equal it)
//! # version = "..."        # DEV_USER_VERSION; default: found at run time
//! # reactor = 0            # default: round-robin with the TCMU devices
//! # parse_type = "standard"   # "standard" | "call" | "exception"
//! # memory_reuse = "all"   # "all" | "read" | "write" | "none"
//! # on_free_cmd = "ignore" # default: "ignore" with memory_reuse "all", else "call"
//! # tst = 1, queue_alg = 1, qerr = 0, tas = 0, swp = 0, d_sense = 0
//! # pool_mb = 256          # cap of the device's buffer pool
//! # idle_poll_us = 5       # an idle device asks the kernel this often
//! # doorbell_batch = 32    # most replies held for one ioctl
//! # completion_coalesce_us = 0  # completion coalescing window (0 = off)
//! ```
//!
//! Parsing rejects unknown keys; [`ServeConfig::validate`] checks values and
//! cross-references. Every error names the key it is about.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::frontend::CoalesceConfig;
use crate::scst::register::{MemoryReuse, OnFreeCmd, ParseType, RegisterSpec, ScstOptions};
use crate::scst::version::check_version_string;

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// A byte count written as an integer or a size string ("64KiB", "1G").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Int(n) => Ok(Size(n)),
            Raw::Text(s) => bdev::parse_size(&s)
                .map(Size)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Reactor idle policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Idle {
    /// Spin: lowest latency, one CPU per reactor always busy.
    Busy,
    /// Sleep in epoll after a run of idle polls.
    #[default]
    Adaptive,
}

/// `[reactors]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
                max_sleep: self
                    .max_sleep_ms
                    .map(std::time::Duration::from_millis)
                    .unwrap_or(reactor::IdlePolicy::DEFAULT_MAX_SLEEP),
            },
        }
    }
}

fn default_block_size() -> u32 {
    512
}

/// One `[[bdev]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum BdevConfig {
    /// Anonymous memory.
    Ram {
        /// Unique name.
        name: String,
        /// Bytes.
        size: Size,
        /// Logical block size.
        #[serde(default = "default_block_size")]
        block_size: u32,
    },
    /// Completes without storing data.
    Null {
        /// Unique name.
        name: String,
        /// Bytes.
        size: Size,
        /// Logical block size.
        #[serde(default = "default_block_size")]
        block_size: u32,
    },
    /// RAID0 over other bdevs of this file.
    Striped {
        /// Unique name.
        name: String,
        /// Names of `ram` or `null` bdevs.
        children: Vec<String>,
        /// Strip size in bytes (a power of two).
        chunk: Size,
    },
}

impl BdevConfig {
    /// The bdev's name.
    pub fn name(&self) -> &str {
        match self {
            BdevConfig::Ram { name, .. }
            | BdevConfig::Null { name, .. }
            | BdevConfig::Striped { name, .. } => name,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            BdevConfig::Ram { .. } => "ram",
            BdevConfig::Null { .. } => "null",
            BdevConfig::Striped { .. } => "striped",
        }
    }
}

/// How devices are spread over reactors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// In order of discovery, reactor 0, 1, ..., wrapping.
    #[default]
    RoundRobin,
}

/// One `[[tcmu.pin]]`: a device placed on a given reactor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// LIO device name (the configfs directory under `core/user_<hba>/`).
    pub device: String,
    /// Index into `reactors.cores`.
    pub reactor: usize,
}

fn default_subtype() -> String {
    "dataplane".into()
}

fn default_rescan() -> u64 {
    1000
}

/// `[tcmu]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcmuConfig {
    /// Our subtype: devices whose `dev_config` starts with `<subtype>/`.
    #[serde(default = "default_subtype")]
    pub subtype: String,
    /// Placement of devices on reactors.
    #[serde(default)]
    pub placement: Placement,
    /// Period of the /sys/class/uio rescan (the fallback to netlink events).
    #[serde(default = "default_rescan")]
    pub rescan_interval_ms: u64,
    /// Devices pinned to reactors.
    #[serde(default)]
    pub pin: Vec<Pin>,
    /// Most completions one doorbell carries while a batch builds up
    /// ([`CoalesceConfig::batch`]).
    #[serde(default = "default_doorbell_batch")]
    pub doorbell_batch: usize,
    /// Completion coalescing window in microseconds (0 = off): see
    /// [`CoalesceConfig::window`]. For hosts short of CPU.
    #[serde(default)]
    pub completion_coalesce_us: u64,
}

/// Default of `doorbell_batch` (`[tcmu]` and `[[scst]]`).
pub const DEFAULT_DOORBELL_BATCH: usize = 32;
/// Largest `doorbell_batch`.
pub const MAX_DOORBELL_BATCH: usize = 65535;
/// Largest `completion_coalesce_us` (100 ms).
pub const MAX_COMPLETION_COALESCE_US: u64 = 100_000;

fn default_doorbell_batch() -> usize {
    DEFAULT_DOORBELL_BATCH
}

/// The device coalescing settings for `doorbell_batch` and
/// `completion_coalesce_us` (the hold limit keeps its default).
fn coalesce_config(doorbell_batch: usize, completion_coalesce_us: u64) -> CoalesceConfig {
    CoalesceConfig {
        batch: doorbell_batch,
        window: std::time::Duration::from_micros(completion_coalesce_us),
        ..CoalesceConfig::default()
    }
}

/// Checks `doorbell_batch` and `completion_coalesce_us` of `[tcmu]` or an
/// `[[scst]]` (`at` names the table).
fn check_coalesce(
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

impl TcmuConfig {
    /// The devices' completion coalescing settings.
    pub fn coalesce(&self) -> CoalesceConfig {
        coalesce_config(self.doorbell_batch, self.completion_coalesce_us)
    }
}

impl Default for TcmuConfig {
    fn default() -> Self {
        Self {
            subtype: default_subtype(),
            placement: Placement::default(),
            rescan_interval_ms: default_rescan(),
            pin: Vec::new(),
            doorbell_batch: default_doorbell_batch(),
            completion_coalesce_us: 0,
        }
    }
}

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
/// ([`crate::serve::server::MAX_TRANSFER_BYTES`], 8 MiB).
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    /// With nothing to answer and nothing executing, the device asks the
    /// kernel for new commands this often, in microseconds (default
    /// [`DEFAULT_SCST_IDLE_POLL_US`]; 0 = at every poll). Every ask is an
    /// ioctl: this bounds the system-call rate of an idle busy-polled
    /// device, and is the most a command arriving at an idle device waits
    /// (see `scst::device::ScstDeviceConfig::idle_poll_interval`).
    #[serde(default)]
    pub idle_poll_us: Option<u64>,
    /// Most replies held for one REPLY_AND_GET_MULTI while a batch builds
    /// up (default [`DEFAULT_DOORBELL_BATCH`]): the same key and meaning as
    /// `[tcmu] doorbell_batch` ([`CoalesceConfig::batch`]).
    #[serde(default)]
    pub doorbell_batch: Option<usize>,
    /// Completion coalescing window in microseconds (default 0 = off): the
    /// same key and meaning as `[tcmu] completion_coalesce_us`
    /// ([`CoalesceConfig::window`]). For hosts short of CPU.
    #[serde(default)]
    pub completion_coalesce_us: Option<u64>,
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
        coalesce_config(
            self.doorbell_batch.unwrap_or(DEFAULT_DOORBELL_BATCH),
            self.completion_coalesce_us.unwrap_or(0),
        )
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// `[reactors]`.
    pub reactors: ReactorsConfig,
    /// `[[bdev]]` entries.
    #[serde(default, rename = "bdev")]
    pub bdevs: Vec<BdevConfig>,
    /// `[tcmu]`.
    #[serde(default)]
    pub tcmu: TcmuConfig,
    /// `[[scst]]` devices.
    #[serde(default)]
    pub scst: Vec<ScstConfig>,
}

/// A name LIO's `dev_config` can carry: non-empty, no `/` or `:` or spaces.
fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return err(format!("{key}: must not be empty"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return err(format!(
            "{key}: {name:?} contains {c:?}; names may not contain '/', ':' or spaces"
        ));
    }
    Ok(())
}

impl ServeConfig {
    /// Parses TOML text (syntax and key names only; see [`validate`]).
    ///
    /// [`validate`]: Self::validate
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string().trim_end().to_string()))
    }

    /// Reads, parses and validates a file against the CPUs `available`.
    pub fn load(path: &Path, available: &[usize]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let config =
            Self::parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))?;
        config
            .validate(available)
            .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))?;
        Ok(config)
    }

    /// Checks values and cross-references; `available` are the CPUs this
    /// process may run on.
    pub fn validate(&self, available: &[usize]) -> Result<(), ConfigError> {
        let cores = &self.reactors.cores;
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

        if self.reactors.idle == Idle::Busy
            && (self.reactors.idle_polls_before_sleep.is_some()
                || self.reactors.max_sleep_ms.is_some())
        {
            return err("reactors.idle_polls_before_sleep / reactors.max_sleep_ms: only meaningful with idle = \"adaptive\"");
        }
        if self.reactors.idle_polls_before_sleep == Some(0) {
            return err("reactors.idle_polls_before_sleep: must be at least 1");
        }
        if let Some(ms) = self.reactors.max_sleep_ms {
            if ms == 0 || ms > 1000 {
                return err(format!(
                    "reactors.max_sleep_ms: {ms} is not between 1 and 1000"
                ));
            }
        }
        let mut by_name: HashMap<&str, &BdevConfig> = HashMap::new();
        for (i, b) in self.bdevs.iter().enumerate() {
            let key = format!("bdev[{i}].name");
            check_name(&key, b.name())?;
            if by_name.insert(b.name(), b).is_some() {
                return err(format!("{key}: {:?} is defined twice", b.name()));
            }
        }
        let mut children_of: HashMap<&str, &str> = HashMap::new();
        for (i, b) in self.bdevs.iter().enumerate() {
            let at = format!("bdev[{i}] ({:?})", b.name());
            match b {
                BdevConfig::Ram {
                    size, block_size, ..
                }
                | BdevConfig::Null {
                    size, block_size, ..
                } => {
                    if *block_size < 512 || *block_size > 65536 || !block_size.is_power_of_two() {
                        return err(format!(
                            "{at}.block_size: {block_size} is not a power of two between 512 and 65536"
                        ));
                    }
                    if size.0 == 0 {
                        return err(format!("{at}.size: must be greater than zero"));
                    }
                    if size.0 % u64::from(*block_size) != 0 {
                        return err(format!(
                            "{at}.size: {} is not a multiple of block_size {block_size}",
                            size.0
                        ));
                    }
                }
                BdevConfig::Striped {
                    name,
                    children,
                    chunk,
                } => {
                    if children.is_empty() {
                        return err(format!("{at}.children: at least one child is required"));
                    }
                    let mut block_size = None;
                    for (j, child) in children.iter().enumerate() {
                        let key = format!("{at}.children[{j}]");
                        let Some(c) = by_name.get(child.as_str()) else {
                            return err(format!("{key}: no bdev named {child:?}"));
                        };
                        let bs = match c {
                            BdevConfig::Ram { block_size, .. }
                            | BdevConfig::Null { block_size, .. } => *block_size,
                            BdevConfig::Striped { .. } => {
                                return err(format!(
                                    "{key}: {child:?} is striped; children must be ram or null"
                                ))
                            }
                        };
                        if let Some(other) = children_of.insert(child, name) {
                            return err(format!(
                                "{key}: {child:?} is already a child of {other:?}"
                            ));
                        }
                        match block_size {
                            None => block_size = Some(bs),
                            Some(first) if first != bs => {
                                return err(format!(
                                    "{key}: block size {bs} differs from the first child's {first}"
                                ))
                            }
                            Some(_) => {}
                        }
                    }
                    let bs = u64::from(block_size.unwrap_or(512));
                    if chunk.0 < bs
                        || !chunk.0.is_power_of_two()
                        || chunk.0 / bs > u64::from(u32::MAX)
                    {
                        return err(format!(
                            "{at}.chunk: {} is not a power of two of at least the block size {bs}",
                            chunk.0
                        ));
                    }
                }
            }
        }

        let tcmu = &self.tcmu;
        check_name("tcmu.subtype", &tcmu.subtype)?;
        if tcmu.rescan_interval_ms < 10 || tcmu.rescan_interval_ms > 3_600_000 {
            return err(format!(
                "tcmu.rescan_interval_ms: {} is not between 10 and 3600000",
                tcmu.rescan_interval_ms
            ));
        }
        check_coalesce("tcmu", tcmu.doorbell_batch, tcmu.completion_coalesce_us)?;
        let mut pinned = HashSet::new();
        for (i, pin) in tcmu.pin.iter().enumerate() {
            check_name(&format!("tcmu.pin[{i}].device"), &pin.device)?;
            if pin.reactor >= cores.len() {
                return err(format!(
                    "tcmu.pin[{i}].reactor: {} is not a reactor index (reactors.cores has {})",
                    pin.reactor,
                    cores.len()
                ));
            }
            if !pinned.insert(pin.device.as_str()) {
                return err(format!(
                    "tcmu.pin[{i}].device: {:?} is pinned twice",
                    pin.device
                ));
            }
        }
        self.validate_scst()
    }

    /// Checks the `[[scst]]` devices (after the bdevs and reactors).
    fn validate_scst(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, s) in self.scst.iter().enumerate() {
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
            let Some(bdev) = self.bdev(&s.bdev) else {
                return err(format!("{at}.bdev: no [[bdev]] named {:?}", s.bdev));
            };
            if let Some(parent) = self.parent_of(&s.bdev) {
                return err(format!(
                    "{at}.bdev: {:?} is a child of striped bdev {parent:?} and cannot back a LUN",
                    s.bdev
                ));
            }
            let bdev_block_size = self.block_size_of(bdev);
            if let Some(bs) = s.block_size {
                if Some(bs) != bdev_block_size {
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
                if r >= self.reactors.cores.len() {
                    return err(format!(
                        "{at}.reactor: {r} is not a reactor index (reactors.cores has {})",
                        self.reactors.cores.len()
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
            check_coalesce(
                &at,
                s.doorbell_batch.unwrap_or(DEFAULT_DOORBELL_BATCH),
                s.completion_coalesce_us.unwrap_or(0),
            )?;
        }
        Ok(())
    }

    /// The logical block size of a bdev of this file (a striped bdev's is
    /// its children's); `None` for a striped bdev without valid children.
    pub fn block_size_of(&self, bdev: &BdevConfig) -> Option<u32> {
        match bdev {
            BdevConfig::Ram { block_size, .. } | BdevConfig::Null { block_size, .. } => {
                Some(*block_size)
            }
            BdevConfig::Striped { children, .. } => children
                .first()
                .and_then(|c| self.bdev(c))
                .and_then(|c| match c {
                    BdevConfig::Ram { block_size, .. } | BdevConfig::Null { block_size, .. } => {
                        Some(*block_size)
                    }
                    BdevConfig::Striped { .. } => None,
                }),
        }
    }

    /// The bdev named `name`.
    pub fn bdev(&self, name: &str) -> Option<&BdevConfig> {
        self.bdevs.iter().find(|b| b.name() == name)
    }

    /// The parent of `name` if it is a child of a striped bdev.
    pub fn parent_of(&self, name: &str) -> Option<&str> {
        self.bdevs.iter().find_map(|b| match b {
            BdevConfig::Striped {
                name: parent,
                children,
                ..
            } if children.iter().any(|c| c == name) => Some(parent.as_str()),
            _ => None,
        })
    }

    /// The reactor a device is pinned to.
    pub fn pinned_reactor(&self, device: &str) -> Option<usize> {
        self.tcmu
            .pin
            .iter()
            .find(|p| p.device == device)
            .map(|p| p.reactor)
    }
}

impl fmt::Display for BdevConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bdev {:?}", self.kind(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[reactors]
cores = [0]
idle = "busy"

[[bdev]]
name = "ram0"
type = "ram"
size = "64MiB"

[[bdev]]
name = "r1"
type = "ram"
size = 1048576
block_size = 4096

[[bdev]]
name = "r2"
type = "null"
size = "1M"
block_size = 4096

[[bdev]]
name = "fast"
type = "striped"
children = ["r1", "r2"]
chunk = "64KiB"

[tcmu]
subtype = "dataplane"
rescan_interval_ms = 500

[[tcmu.pin]]
device = "disk0"
reactor = 0
"#;

    fn check(text: &str) -> Result<ServeConfig, ConfigError> {
        let c = ServeConfig::parse(text)?;
        c.validate(&[0, 1])?;
        Ok(c)
    }

    #[test]
    fn good_config_parses() {
        let c = check(GOOD).unwrap();
        assert_eq!(c.reactors.idle, Idle::Busy);
        assert_eq!(c.bdevs.len(), 4);
        assert_eq!(
            c.bdev("ram0"),
            Some(&BdevConfig::Ram {
                name: "ram0".into(),
                size: Size(64 << 20),
                block_size: 512
            })
        );
        assert_eq!(c.parent_of("r2"), Some("fast"));
        assert_eq!(c.pinned_reactor("disk0"), Some(0));
        assert_eq!(c.tcmu.rescan_interval_ms, 500);
        let minimal = check("[reactors]\ncores = [1]\n").unwrap();
        assert_eq!(minimal.reactors.idle, Idle::Adaptive);
        assert_eq!(minimal.tcmu.subtype, "dataplane");
    }

    fn error(text: &str) -> String {
        check(text).unwrap_err().0
    }

    #[test]
    fn every_error_names_its_key() {
        assert!(error("[reactors]\ncores = [1]\nspeed = 3\n").contains("unknown field `speed`"));
        assert!(error("[reactor]\ncores = [1]\n").contains("unknown field `reactor`"));
        assert!(error("").contains("missing field `reactors`"));
        assert!(error("[reactors]\ncores = []\n").contains("reactors.cores: at least one CPU"));
        assert!(
            error("[reactors]\ncores = [7]\n").contains("reactors.cores[0]: CPU 7 does not exist")
        );
        assert!(error("[reactors]\ncores = [1, 1]\n")
            .contains("reactors.cores[1]: CPU 1 is listed twice"));
        assert!(
            error("[reactors]\ncores = [1]\nidle = \"lazy\"\n").contains("unknown variant `lazy`")
        );
        let bdev = |body: &str| format!("[reactors]\ncores = [1]\n[[bdev]]\n{body}\n");
        assert!(error(&bdev("name = \"a\"\ntype = \"disk\"\nsize = 1"))
            .contains("unknown variant `disk`"));
        assert!(
            error(&bdev("name = \"a\"\ntype = \"ram\"\nsize = \"1Q\"")).contains("unknown unit")
        );
        assert!(error(&bdev("name = \"a\"\ntype = \"ram\"\nsize = 0"))
            .contains("bdev[0] (\"a\").size: must be greater than zero"));
        assert!(error(&bdev("name = \"a\"\ntype = \"ram\"\nsize = 1000"))
            .contains("bdev[0] (\"a\").size: 1000 is not a multiple of block_size 512"));
        assert!(error(&bdev(
            "name = \"a\"\ntype = \"ram\"\nsize = 4096\nblock_size = 1000"
        ))
        .contains("bdev[0] (\"a\").block_size: 1000"));
        assert!(error(&bdev("name = \"a/b\"\ntype = \"ram\"\nsize = 4096"))
            .contains("bdev[0].name: \"a/b\" contains '/'"));
        assert!(error(&bdev(
            "name = \"a\"\ntype = \"ram\"\nsize = 4096\ncolor = 1"
        ))
        .contains("unknown field `color`"));
        assert!(error(&bdev(
            "name = \"s\"\ntype = \"striped\"\nchildren = [\"x\"]\nchunk = 4096"
        ))
        .contains("bdev[0] (\"s\").children[0]: no bdev named \"x\""));
        let dup = format!(
            "{}[[bdev]]\nname = \"a\"\ntype = \"null\"\nsize = 4096\n",
            bdev("name = \"a\"\ntype = \"ram\"\nsize = 4096")
        );
        assert!(error(&dup).contains("bdev[1].name: \"a\" is defined twice"));
        let bad_chunk = GOOD.replace("chunk = \"64KiB\"", "chunk = 3000");
        assert!(error(&bad_chunk).contains("bdev[3] (\"fast\").chunk: 3000 is not a power of two"));
        let mixed = GOOD.replace(
            "block_size = 4096\n\n[[bdev]]\nname = \"fast\"",
            "block_size = 512\n\n[[bdev]]\nname = \"fast\"",
        );
        assert!(error(&mixed)
            .contains("children[1]: block size 512 differs from the first child's 4096"));
        let bad_pin = GOOD.replace("reactor = 0", "reactor = 3");
        assert!(error(&bad_pin).contains("tcmu.pin[0].reactor: 3 is not a reactor index"));
        let bad_subtype = GOOD.replace("subtype = \"dataplane\"", "subtype = \"\"");
        assert!(error(&bad_subtype).contains("tcmu.subtype: must not be empty"));
        let bad_rescan = GOOD.replace("rescan_interval_ms = 500", "rescan_interval_ms = 1");
        assert!(error(&bad_rescan).contains("tcmu.rescan_interval_ms: 1 is not between"));
    }

    /// GOOD plus one `[[scst]]` with `body` (and a second reactor).
    fn scst(body: &str) -> String {
        format!(
            "{}\n[[scst]]\n{body}\n",
            GOOD.replace("cores = [0]", "cores = [0, 1]")
        )
    }

    #[test]
    fn scst_devices_parse_with_defaults() {
        let c = check(&scst("name = \"disk1\"\nbdev = \"ram0\"")).unwrap();
        assert_eq!(c.scst.len(), 1);
        let d = &c.scst[0];
        assert_eq!((d.name.as_str(), d.bdev.as_str()), ("disk1", "ram0"));
        assert_eq!(
            (d.block_size, d.reactor, d.version.as_deref()),
            (None, None, None)
        );
        assert_eq!(d.options(), ScstOptions::default());
        assert_eq!(d.pool_bytes(), 256 << 20);
        assert_eq!(d.idle_poll_interval(), std::time::Duration::from_micros(5));
        assert_eq!(d.coalesce(), CoalesceConfig::default());
        let c = check(&scst(
            "name = \"disk1\"\nbdev = \"fast\"\nblock_size = 4096\nreactor = 1\n\
             version = \"3.10.0abc\"\nparse_type = \"call\"\nmemory_reuse = \"read\"\n\
             tst = 0\nqueue_alg = false\nqerr = 3\ntas = true\nswp = 1\nd_sense = true\n\
             pool_mb = 64\nidle_poll_us = 0",
        ))
        .unwrap();
        let d = &c.scst[0];
        assert_eq!((d.block_size, d.reactor), (Some(4096), Some(1)));
        assert_eq!(d.version.as_deref(), Some("3.10.0abc"));
        assert_eq!(
            d.options(),
            ScstOptions {
                parse_type: ParseType::Call,
                memory_reuse: MemoryReuse::Read,
                on_free_cmd: None,
                tst: 0,
                queue_alg: 0,
                qerr: 3,
                tas: 1,
                swp: 1,
                d_sense: 1,
            }
        );
        assert_eq!(d.options().effective_on_free_cmd(), OnFreeCmd::Call);
        assert_eq!(d.pool_bytes(), 64 << 20);
        assert_eq!(d.idle_poll_interval(), std::time::Duration::ZERO);
        // `parse` is another name of `parse_type`.
        let c = check(&scst(
            "name = \"d\"\nbdev = \"ram0\"\nparse = \"exception\"\non_free_cmd = \"call\"",
        ))
        .unwrap();
        assert_eq!(c.scst[0].options().parse_type, ParseType::Exception);
        assert_eq!(c.scst[0].options().on_free_cmd, Some(OnFreeCmd::Call));
        assert_eq!(c.block_size_of(c.bdev("fast").unwrap()), Some(4096));
    }

    #[test]
    fn scst_errors_name_their_key() {
        let dev = |extra: &str| scst(&format!("name = \"disk1\"\nbdev = \"ram0\"\n{extra}"));
        assert!(error(&dev("colour = 1")).contains("unknown field `colour`"));
        assert!(error(&scst("bdev = \"ram0\"")).contains("missing field `name`"));
        assert!(error(&scst("name = \"d\"")).contains("missing field `bdev`"));
        assert_eq!(
            error(&scst("name = \"d\"\nbdev = \"x\"")),
            "scst[0] (\"d\").bdev: no [[bdev]] named \"x\""
        );
        assert_eq!(
            error(&scst("name = \"d\"\nbdev = \"r1\"")),
            "scst[0] (\"d\").bdev: \"r1\" is a child of striped bdev \"fast\" and cannot back \
             a LUN"
        );
        assert_eq!(
            error(&dev("block_size = 4096")),
            "scst[0] (\"disk1\").block_size: 4096 differs from the block size of bdev \"ram0\" \
             (512); leave it out or make them equal"
        );
        assert_eq!(
            error(&dev("reactor = 2")),
            "scst[0] (\"disk1\").reactor: 2 is not a reactor index (reactors.cores has 2)"
        );
        let parse = error(&dev("parse_type = \"sometimes\""));
        assert!(
            parse.contains("parse_type = \"sometimes\"")
                && parse.contains(
                    "unknown variant `sometimes`, expected one of `standard`, `call`, `exception`"
                ),
            "{parse}"
        );
        let reuse = error(&dev("memory_reuse = \"most\""));
        assert!(
            reuse.contains("memory_reuse = \"most\"") && reuse.contains("unknown variant `most`"),
            "{reuse}"
        );
        assert_eq!(
            error(&dev("qerr = 2")),
            "scst[0] (\"disk1\"): SCST option qerr = 2 is invalid: allowed values are 0, 1 and 3"
        );
        assert_eq!(
            error(&dev("tst = 7")),
            "scst[0] (\"disk1\"): SCST option tst = 7 is invalid: allowed values are 0 (one task \
             set) and 1 (separate task sets)"
        );
        assert!(error(&dev("d_sense = 300")).contains("300 is out of range"));
        assert!(error(&dev("swp = -1")).contains("-1 is out of range"));
        assert!(
            error(&dev("on_free_cmd = \"ignore\"\nmemory_reuse = \"none\"")).starts_with(
                "scst[0] (\"disk1\"): SCST option on_free_cmd = ignore needs memory_reuse = all"
            )
        );
        assert_eq!(
            error(&dev("idle_poll_us = 2000000")),
            "scst[0] (\"disk1\").idle_poll_us: 2000000 is more than 1000000 (one second)"
        );
        assert_eq!(
            error(&dev("pool_mb = 4")),
            "scst[0] (\"disk1\").pool_mb: 4 is not between 8 (one buffer of the largest \
             transfer) and 1048576"
        );
        assert_eq!(
            error(&dev("version = \"3.11 pre\"")),
            "scst[0] (\"disk1\").version: it contains ' ' (a DEV_USER_VERSION has no spaces)"
        );
        assert_eq!(
            error(&scst(&format!(
                "name = \"{}\"\nbdev = \"ram0\"",
                "d".repeat(49)
            ))),
            format!(
                "scst[0].name: SCST device name \"{}\" is 49 bytes long (at most 48)",
                "d".repeat(49)
            )
        );
        assert!(check(&scst(&format!(
            "name = \"{}\"\nbdev = \"ram0\"",
            "d".repeat(48)
        )))
        .is_ok());
        assert_eq!(
            error(&scst("name = \"a:b\"\nbdev = \"ram0\"")),
            "scst[0].name: \"a:b\" contains ':'; names may not contain '/', ':' or spaces"
        );
        assert_eq!(
            error(&scst("name = \"dìsk\"\nbdev = \"ram0\"")),
            "scst[0].name: SCST device name \"dìsk\" contains 'ì' (allowed: printable ASCII \
             without spaces and '/')"
        );
        assert!(error(&scst("name = \"\"\nbdev = \"ram0\""))
            .contains("scst[0].name: must not be empty"));
        let twice = format!("{}[[scst]]\nname = \"disk1\"\nbdev = \"fast\"\n", dev(""));
        assert_eq!(error(&twice), "scst[1].name: \"disk1\" is defined twice");
    }

    #[test]
    fn both_frontends_take_the_same_coalescing_keys() {
        let defaults = check(&scst("name = \"disk1\"\nbdev = \"ram0\"")).unwrap();
        assert_eq!(defaults.tcmu.coalesce(), CoalesceConfig::default());
        assert_eq!(defaults.scst[0].coalesce(), CoalesceConfig::default());
        let expected = CoalesceConfig {
            batch: 8,
            window: std::time::Duration::from_micros(50),
            ..CoalesceConfig::default()
        };
        let keys = "doorbell_batch = 8\ncompletion_coalesce_us = 50";
        let tcmu = GOOD.replace(
            "rescan_interval_ms = 500",
            &format!("rescan_interval_ms = 500\n{keys}"),
        );
        assert_eq!(check(&tcmu).unwrap().tcmu.coalesce(), expected);
        let c = check(&scst(&format!("name = \"disk1\"\nbdev = \"ram0\"\n{keys}"))).unwrap();
        assert_eq!(c.scst[0].coalesce(), expected);

        let bad_batch = GOOD.replace(
            "rescan_interval_ms = 500",
            "rescan_interval_ms = 500\ndoorbell_batch = 0",
        );
        assert_eq!(
            error(&bad_batch),
            "tcmu.doorbell_batch: 0 is not between 1 and 65535"
        );
        let bad_window = GOOD.replace(
            "rescan_interval_ms = 500",
            "rescan_interval_ms = 500\ncompletion_coalesce_us = 100001",
        );
        assert_eq!(
            error(&bad_window),
            "tcmu.completion_coalesce_us: 100001 is above 100000 (100 ms)"
        );
        let dev = |extra: &str| scst(&format!("name = \"disk1\"\nbdev = \"ram0\"\n{extra}"));
        assert_eq!(
            error(&dev("doorbell_batch = 65536")),
            "scst[0] (\"disk1\").doorbell_batch: 65536 is not between 1 and 65535"
        );
        assert_eq!(
            error(&dev("completion_coalesce_us = 100001")),
            "scst[0] (\"disk1\").completion_coalesce_us: 100001 is above 100000 (100 ms)"
        );
    }
}
