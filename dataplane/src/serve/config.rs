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
//! ```
//!
//! Parsing rejects unknown keys; [`ServeConfig::validate`] checks values and
//! cross-references. Every error names the key it is about.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer};

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
    /// Most completions one doorbell carries while a batch builds up.
    #[serde(default = "default_doorbell_batch")]
    pub doorbell_batch: usize,
    /// Completion coalescing window in microseconds (0 = off): see
    /// `tcmu::DeviceConfig::completion_coalesce`. For hosts short of CPU.
    #[serde(default)]
    pub completion_coalesce_us: u64,
}

fn default_doorbell_batch() -> usize {
    32
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
        if tcmu.doorbell_batch == 0 || tcmu.doorbell_batch > 65535 {
            return err(format!(
                "tcmu.doorbell_batch: {} is not between 1 and 65535",
                tcmu.doorbell_batch
            ));
        }
        if tcmu.completion_coalesce_us > 100_000 {
            return err(format!(
                "tcmu.completion_coalesce_us: {} is above 100000 (100 ms)",
                tcmu.completion_coalesce_us
            ));
        }
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
        Ok(())
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
}
