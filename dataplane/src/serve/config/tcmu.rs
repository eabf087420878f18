//! `[tcmu]`: which UIO devices are ours, how often to look for them, where
//! they run and how their completions are coalesced.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::frontend::CoalesceConfig;

use super::coalesce::{default_coalesce_max_hold_us, default_doorbell_batch, CoalesceKeys};
use super::error::{err, ConfigError};
use super::value::check_name;

/// How devices are spread over reactors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// In order of discovery, reactor 0, 1, ..., wrapping.
    #[default]
    RoundRobin,
}

/// `completion_affinity`: who sets where tcm_loop runs the completion work
/// of serve's LUNs (the WWN's `param/cmd_completion_affinity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompletionAffinityMode {
    /// Serve switches it with the load: the completing CPU (the reactor's)
    /// while a LUN's commands overlap, the submitting CPU otherwise; only
    /// on tcm_loop WWNs all of whose LUNs are serve's (see
    /// `serve::tcmu::affinity`).
    #[default]
    Auto,
    /// Serve never writes it: what the kernel, `dataplane lio create
    /// --completion-cpu` or an operator set stays.
    Kernel,
}

/// One `[[tcmu.pin]]`: a device placed on a given reactor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pin: Vec<Pin>,
    /// Most completions one doorbell carries, the cap of the adaptive batch
    /// target ([`CoalesceConfig::batch`]); 1 turns holding off.
    #[serde(default = "default_doorbell_batch")]
    pub doorbell_batch: usize,
    /// Longest adaptive hold of a completion in microseconds
    /// ([`CoalesceConfig::max_hold`]).
    #[serde(default = "default_coalesce_max_hold_us")]
    pub coalesce_max_hold_us: u64,
    /// A fixed hold in microseconds instead of the tuner's choice
    /// ([`CoalesceConfig::fixed_hold`]); unset: the tuner picks.
    #[serde(default)]
    pub coalesce_hold_us: Option<u64>,
    /// Completion coalescing window in microseconds (0 = off): see
    /// [`CoalesceConfig::window`]. For hosts short of CPU.
    #[serde(default)]
    pub completion_coalesce_us: u64,
    /// Who sets tcm_loop's completion CPU for serve's LUNs.
    #[serde(default)]
    pub completion_affinity: CompletionAffinityMode,
}

impl TcmuConfig {
    /// The devices' completion coalescing settings.
    pub fn coalesce(&self) -> CoalesceConfig {
        self.coalesce_keys().config()
    }

    fn coalesce_keys(&self) -> CoalesceKeys {
        CoalesceKeys {
            doorbell_batch: self.doorbell_batch,
            coalesce_max_hold_us: self.coalesce_max_hold_us,
            coalesce_hold_us: self.coalesce_hold_us,
            completion_coalesce_us: self.completion_coalesce_us,
        }
    }

    /// The reactor a device is pinned to.
    pub fn pinned_reactor(&self, device: &str) -> Option<usize> {
        self.pin
            .iter()
            .find(|p| p.device == device)
            .map(|p| p.reactor)
    }

    /// Checks the subtype, the rescan interval, the coalescing keys and the
    /// pins against the number of `reactors`.
    pub(super) fn check(&self, reactors: usize) -> Result<(), ConfigError> {
        check_name("tcmu.subtype", &self.subtype)?;
        if self.rescan_interval_ms < 10 || self.rescan_interval_ms > 3_600_000 {
            return err(format!(
                "tcmu.rescan_interval_ms: {} is not between 10 and 3600000",
                self.rescan_interval_ms
            ));
        }
        self.coalesce_keys().check("tcmu")?;
        let mut pinned = HashSet::new();
        for (i, pin) in self.pin.iter().enumerate() {
            check_name(&format!("tcmu.pin[{i}].device"), &pin.device)?;
            if pin.reactor >= reactors {
                return err(format!(
                    "tcmu.pin[{i}].reactor: {} is not a reactor index (reactors.cores has {reactors})",
                    pin.reactor
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
}

impl Default for TcmuConfig {
    fn default() -> Self {
        Self {
            subtype: default_subtype(),
            placement: Placement::default(),
            rescan_interval_ms: default_rescan(),
            pin: Vec::new(),
            doorbell_batch: default_doorbell_batch(),
            coalesce_max_hold_us: default_coalesce_max_hold_us(),
            coalesce_hold_us: None,
            completion_coalesce_us: 0,
            completion_affinity: CompletionAffinityMode::default(),
        }
    }
}
