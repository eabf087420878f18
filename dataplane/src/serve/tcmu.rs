//! The TCMU devices of the server: found by a rescan, checked, recovered
//! if needed, attached and detached (see the lifecycle in [`super::server`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use bdev::BdevRef;
use reactor::PollerId;

use super::config::ServeConfig;
use super::error::PlacementError;
use super::host::{DeviceFacts, FoundDevice, Host, HostError};
use super::lu_id;
use super::recovery::{write_state, StateFiles};
use super::resources::Resources;
use super::stats::{DeviceKind, DeviceStats};
use crate::latency::SharedLatency;
use crate::stack::{LunSpec, MaxTransfer, Stack};
use crate::tcmu::discovery::TcmuUioName;
use crate::tcmu::{TcmuDeviceConfig, TcmuStats, TcmuStatsSnapshot};

/// Task slots per LUN.
const MAX_TASKS: u32 = 1024;

/// An attached device.
struct Attached {
    found: FoundDevice,
    name: TcmuUioName,
    /// What configfs said at attach; a change (e.g. `dev_size` reconfigured)
    /// makes the device re-attach with a LUN of the new shape.
    facts: DeviceFacts,
    reactor: usize,
    poller: PollerId,
    stats: Arc<TcmuStats>,
    latency: Option<Arc<SharedLatency>>,
    /// Counters at the previous statistics report.
    last: TcmuStatsSnapshot,
    state_file: Option<PathBuf>,
}

/// Why a device was not attached.
#[derive(Debug)]
enum Refusal {
    /// Try again at the next rescan (maybe transient).
    Retry(String),
    /// Leave the device alone until it changes.
    Refuse(String),
}

impl From<PlacementError> for Refusal {
    /// A bdev that refuses a channel will refuse it again; a reactor that
    /// refused a poller (stopping) is retried.
    fn from(e: PlacementError) -> Self {
        match e {
            PlacementError::Channel(_) => Refusal::Refuse(e.to_string()),
            PlacementError::Reactor(_) => Refusal::Retry(e.to_string()),
        }
    }
}

/// The TCMU devices: attached ones by UIO minor, and those looked at and
/// left alone.
///
/// Invariant: a minor is in at most one of `devices` and `ignored`.
pub(super) struct TcmuDevices {
    state: StateFiles,
    devices: BTreeMap<u32, Attached>,
    /// Devices refused or not ours, by minor, with the name they had: looked
    /// at again only if the name under that minor changes.
    ignored: HashMap<u32, String>,
    /// The last "try again" reason logged per minor, so a device waiting for
    /// something is logged once, not at every rescan.
    retrying: HashMap<u32, String>,
}

impl TcmuDevices {
    /// No device yet; state files in `state_dir` (`None`: no crash
    /// detection).
    pub(super) fn new(state_dir: Option<PathBuf>) -> Self {
        Self {
            state: StateFiles::new(state_dir),
            devices: BTreeMap::new(),
            ignored: HashMap::new(),
            retrying: HashMap::new(),
        }
    }

    /// Attached devices: UIO minor and LIO name.
    pub(super) fn attached(&self) -> Vec<(u32, String)> {
        self.devices
            .iter()
            .map(|(minor, a)| (*minor, a.name.name.clone()))
            .collect()
    }

    /// Attaches new devices and detaches vanished or reshaped ones.
    pub(super) fn rescan<H: Host>(
        &mut self,
        host: &mut H,
        resources: &mut Resources,
        config: &ServeConfig,
        log: &mut dyn FnMut(&str),
    ) {
        let found = host.scan();
        let gone: Vec<u32> = self
            .devices
            .iter()
            .filter(|(minor, a)| {
                !found
                    .iter()
                    .any(|f| f.minor == **minor && f.uio_name == a.found.uio_name)
            })
            .map(|(minor, _)| *minor)
            .collect();
        for minor in gone {
            self.detach(resources, minor, "it disappeared", log);
        }
        let reshaped: Vec<u32> = self
            .devices
            .iter()
            .filter(|(_, a)| {
                host.facts(&a.name).is_ok_and(|now| {
                    now.size != a.facts.size || now.block_size != a.facts.block_size
                })
            })
            .map(|(minor, _)| *minor)
            .collect();
        for minor in reshaped {
            // Detached cleanly, it is attached again below with the new shape.
            self.detach(
                resources,
                minor,
                "its size or block size changed; re-attaching",
                log,
            );
        }
        self.ignored.retain(|minor, name| {
            found
                .iter()
                .any(|f| f.minor == *minor && f.uio_name == *name)
        });
        self.retrying
            .retain(|minor, _| found.iter().any(|f| f.minor == *minor));
        for device in found {
            if self.devices.contains_key(&device.minor) || self.ignored.contains_key(&device.minor)
            {
                continue;
            }
            self.consider(host, resources, config, device, log);
        }
    }

    /// Looks at a device not attached yet.
    fn consider<H: Host>(
        &mut self,
        host: &mut H,
        resources: &mut Resources,
        config: &ServeConfig,
        device: FoundDevice,
        log: &mut dyn FnMut(&str),
    ) {
        let subtype = &config.tcmu.subtype;
        let Some(name) = TcmuUioName::parse(&device.uio_name).filter(|n| &n.subtype == subtype)
        else {
            // Not ours: another handler's, or not TCMU at all.
            self.ignored.insert(device.minor, device.uio_name);
            return;
        };
        match self.attach(host, resources, config, &device, &name, log) {
            Ok(reactor) => {
                self.retrying.remove(&device.minor);
                log(&format!(
                    "attached {} (uio{}, bdev {}) to reactor {reactor}",
                    name.name, device.minor, name.cfg
                ));
            }
            Err(Refusal::Retry(why)) => {
                if self.retrying.get(&device.minor) != Some(&why) {
                    log(&format!(
                        "cannot attach {} (uio{}) yet: {why}; will retry",
                        name.name, device.minor
                    ));
                    self.retrying.insert(device.minor, why);
                }
            }
            Err(Refusal::Refuse(why)) => {
                log(&format!(
                    "refusing {} (uio{}): {why}; the device is left alone",
                    name.name, device.minor
                ));
                self.ignored.insert(device.minor, device.uio_name);
            }
        }
    }

    /// The device's bdev and facts, if it may be served: the bdev exists
    /// and is not a striped bdev's child, the block sizes match, the size
    /// fits.
    fn check<H: Host>(
        host: &mut H,
        resources: &Resources,
        config: &ServeConfig,
        name: &TcmuUioName,
    ) -> Result<(BdevRef, DeviceFacts), Refusal> {
        if let Err(e) = name.bdev() {
            return Err(Refusal::Refuse(e.to_string()));
        }
        if let Some(why) = resources.unavailable(&name.cfg) {
            return Err(Refusal::Refuse(format!(
                "its dev_config names bdev {:?}, which is unavailable ({why})",
                name.cfg
            )));
        }
        let Some(bdev) = resources.bdev(&name.cfg).cloned() else {
            return Err(Refusal::Refuse(format!(
                "its dev_config names bdev {:?}, which is not in the configuration",
                name.cfg
            )));
        };
        if let Some(parent) = config.parent_of(&name.cfg) {
            return Err(Refusal::Refuse(format!(
                "bdev {:?} is a child of striped bdev {parent:?} and cannot back a LUN",
                name.cfg
            )));
        }
        let facts = host
            .facts(name)
            .map_err(|e| Refusal::Retry(format!("cannot read its configfs attributes: {e}")))?;
        let geometry = bdev.geometry();
        if facts.block_size != geometry.block_size {
            return Err(Refusal::Refuse(format!(
                "its hw_block_size is {} but bdev {:?} has {}-byte blocks",
                facts.block_size, name.cfg, geometry.block_size
            )));
        }
        if facts.size == 0 || facts.size % u64::from(facts.block_size) != 0 {
            return Err(Refusal::Refuse(format!(
                "its dev_size {} is not a positive multiple of its block size {}",
                facts.size, facts.block_size
            )));
        }
        if facts.size > geometry.size_bytes() {
            return Err(Refusal::Refuse(format!(
                "its dev_size {} is larger than bdev {:?} ({} bytes)",
                facts.size,
                name.cfg,
                geometry.size_bytes()
            )));
        }
        Ok((bdev, facts))
    }

    /// Checks, recovers if needed, and attaches a device; returns its
    /// reactor.
    fn attach<H: Host>(
        &mut self,
        host: &mut H,
        resources: &mut Resources,
        config: &ServeConfig,
        device: &FoundDevice,
        name: &TcmuUioName,
        log: &mut dyn FnMut(&str),
    ) -> Result<usize, Refusal> {
        let (bdev, facts) = Self::check(host, resources, config, name)?;
        let recovering = self.state.needs_recovery(name);
        if recovering {
            log(&format!(
                "{}: the previous handler died while attached; resetting the ring (in-flight commands complete with BUSY and are retried)",
                name.name
            ));
            host.recover(name)
                .map_err(|e| Refusal::Retry(format!("ring reset failed: {e}")))?;
        }
        let (region, doorbell) = match host.open(device) {
            Ok(opened) => opened,
            Err(HostError::Busy) => {
                return Err(Refusal::Retry(
                    "another process has it open (is another handler running?)".into(),
                ))
            }
            Err(e) => return Err(Refusal::Retry(e.to_string())),
        };
        let reactor = config
            .pinned_reactor(&name.name)
            .unwrap_or_else(|| resources.round_robin());

        let stack = Stack::tcmu(
            bdev.as_ref(),
            &lun_spec(name, &facts),
            region,
            doorbell,
            TcmuDeviceConfig {
                name: format!("tcmu:{}", name.name),
                coalesce: config.tcmu.coalesce(),
                ..TcmuDeviceConfig::default()
            },
        )
        .map_err(|e| Refusal::Refuse(e.to_string()))?;
        let stack = if config.fixed_buffers(&name.cfg) {
            stack
        } else {
            stack.without_fixed_buffers()
        };
        let stats = stack.device().stats();
        let latency = stack.device().latency();
        // The bdev poller of this reactor for this bdev (created on first use).
        let handle = resources.bdev_poller(reactor, &name.cfg, &bdev)?;
        let poller = resources.add_poller(reactor, Box::new(stack.attach_to(&handle)))?;

        let state_file = self.state.path(name);
        if let Some(path) = &state_file {
            if let Err(e) = write_state(path, false) {
                log(&format!(
                    "{}: cannot write {}: {e}",
                    name.name,
                    path.display()
                ));
            }
        }
        if recovering {
            if let Err(e) = host.unblock(name) {
                log(&format!(
                    "{}: cannot unblock after the ring reset: {e}",
                    name.name
                ));
            }
        }
        self.devices.insert(
            device.minor,
            Attached {
                found: device.clone(),
                name: name.clone(),
                facts,
                reactor,
                poller,
                stats,
                latency,
                last: TcmuStatsSnapshot::default(),
                state_file,
            },
        );
        Ok(reactor)
    }

    /// Detaches the device on UIO minor `minor`, draining it first, and
    /// marks it clean if it drained.
    pub(super) fn detach(
        &mut self,
        resources: &Resources,
        minor: u32,
        why: &str,
        log: &mut dyn FnMut(&str),
    ) {
        let Some(attached) = self.devices.remove(&minor) else {
            return;
        };
        let name = attached.name.name.clone();
        match resources.remove_poller(attached.reactor, attached.poller) {
            Ok(removed) => {
                let drained = removed.drained;
                drop(removed);
                if let Some(path) = &attached.state_file {
                    if drained {
                        let _ = write_state(path, true);
                    }
                }
                log(&format!(
                    "detached {name} (uio{minor}): {why}{}",
                    if drained {
                        ""
                    } else {
                        "; in-flight commands did not finish in time"
                    }
                ));
            }
            Err(e) => log(&format!("detaching {name} (uio{minor}): {e}")),
        }
    }

    /// Marks every attached device clean (after every reactor drained).
    pub(super) fn mark_clean(&self) {
        for a in self.devices.values() {
            if let Some(path) = &a.state_file {
                let _ = write_state(path, true);
            }
        }
    }

    /// Each device over the `interval` (seconds) since the previous call.
    pub(super) fn stats(&mut self, interval: f64) -> Vec<DeviceStats> {
        let mut devices = Vec::with_capacity(self.devices.len());
        for a in self.devices.values_mut() {
            let snap = a.stats.snapshot();
            let commands = snap.commands_completed - a.last.commands_completed;
            let doorbells = snap.doorbells - a.last.doorbells;
            let bytes = snap.data_bytes - a.last.data_bytes;
            let latency = a.latency.as_ref().map(|l| l.take()).unwrap_or_default();
            devices.push(DeviceStats {
                name: a.name.name.clone(),
                kind: DeviceKind::Tcmu,
                hba: Some(a.name.hba),
                uio: Some(format!("uio{}", a.found.minor)),
                bdev: a.name.cfg.clone(),
                reactor: a.reactor,
                commands,
                iops: commands as f64 / interval,
                bytes_per_sec: bytes as f64 / interval,
                doorbells,
                doorbells_per_io: if commands == 0 {
                    0.0
                } else {
                    doorbells as f64 / commands as f64
                },
                latency_ns: latency.summary,
                commands_total: snap.commands_completed,
                received_total: snap.commands_received,
                malformed_total: snap.malformed_commands,
                busy_total: None,
                sessions: None,
                fault: None,
            });
            a.last = snap;
        }
        devices
    }
}

/// The LUN of a TCMU device: named after it (the serial keeps at most 32
/// characters), of the size and with at most the transfer configfs gives.
fn lun_spec(name: &TcmuUioName, facts: &DeviceFacts) -> LunSpec {
    let block_size = u64::from(facts.block_size);
    LunSpec {
        num_blocks: Some(facts.size / block_size),
        max_transfer: MaxTransfer::DeviceLimit(u64::from(facts.max_sectors) * block_size),
        ..LunSpec::new(
            name.name.chars().take(32).collect::<String>(),
            lu_id::tcmu(name),
            MAX_TASKS,
        )
    }
}
