//! [`ServeConfig`]: the whole file, its parsing and its validation, which
//! checks the sections in the order they are written.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::bdevs::{self, BdevConfig};
use super::error::ConfigError;
use super::reactors::ReactorsConfig;
use super::scst::{check_scst, ScstConfig};
use super::tcmu::TcmuConfig;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// `[reactors]`.
    pub reactors: ReactorsConfig,
    /// `[[bdev]]` entries.
    #[serde(default, rename = "bdev", skip_serializing_if = "Vec::is_empty")]
    pub bdevs: Vec<BdevConfig>,
    /// `[tcmu]`.
    #[serde(default)]
    pub tcmu: TcmuConfig,
    /// `[[scst]]` devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scst: Vec<ScstConfig>,
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
    /// process may run on. The first error found is returned.
    pub fn validate(&self, available: &[usize]) -> Result<(), ConfigError> {
        self.reactors.check(available)?;
        bdevs::check_bdevs(&self.bdevs)?;
        let reactors = self.reactors.cores.len();
        self.tcmu.check(reactors)?;
        check_scst(&self.scst, &self.bdevs, reactors)
    }

    /// The logical block size of a bdev of this file (a striped bdev's is
    /// its children's); `None` for a striped bdev without valid children.
    pub fn block_size_of(&self, bdev: &BdevConfig) -> Option<u32> {
        bdevs::block_size_of(&self.bdevs, bdev)
    }

    /// The bdev named `name`.
    pub fn bdev(&self, name: &str) -> Option<&BdevConfig> {
        bdevs::find(&self.bdevs, name)
    }

    /// Whether devices over bdev `name` offer their memory to it as
    /// io_uring fixed buffers: true unless it is a `file` or `nvme` bdev
    /// with `fixed_buffers = false`.
    pub fn fixed_buffers(&self, name: &str) -> bool {
        self.bdev(name).is_none_or(BdevConfig::fixed_buffers)
    }

    /// The parent of `name` if it is a child of a striped bdev.
    pub fn parent_of(&self, name: &str) -> Option<&str> {
        bdevs::parent_of(&self.bdevs, name)
    }

    /// The reactor a device is pinned to.
    pub fn pinned_reactor(&self, device: &str) -> Option<usize> {
        self.tcmu.pinned_reactor(device)
    }
}
