//! The TCMU devices of the server: found by a rescan, checked, reset if
//! needed, attached and detached, and recovered when their ring faults (see
//! the lifecycle in [`super::server`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bdev::BdevRef;
use reactor::PollerId;

use super::config::ServeConfig;
use super::error::PlacementError;
use super::heal::{Health, Next, RecoveryPolicy};
use super::host::{DeviceFacts, FoundDevice, Host, HostError};
use super::lu_id;
use super::recovery::{reset_reason, write_state, StateFiles};
use super::resources::Resources;
use crate::frontend::SharedFault;
use crate::latency::SharedLatency;
use crate::lun::LunCounters;
use crate::stack::{LunSpec, MaxTransfer, Stack};
use crate::tcmu::discovery::TcmuUioName;
use crate::tcmu::{
    Doorbell, RingFault, SharedRegion, TcmuDeviceConfig, TcmuStats, TcmuStatsSnapshot,
};

pub(super) mod affinity;
mod report;

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
    lun: Arc<LunCounters>,
    latency: Option<Arc<SharedLatency>>,
    /// Set by the device when its ring breaks.
    fault: Arc<SharedFault<RingFault>>,
    /// Counters at the previous statistics report.
    last: TcmuStatsSnapshot,
    state_file: Option<PathBuf>,
}

/// A device detached because its ring faulted, not attached again yet.
struct Faulted {
    found: FoundDevice,
    name: TcmuUioName,
    /// The reactor it was on (statistics).
    reactor: usize,
    /// When to try again; `None`: given up, the device is left blocked.
    retry_at: Option<Instant>,
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

/// The TCMU devices: attached ones by UIO minor, faulted ones waiting for
/// (or given up by) recovery, and those looked at and left alone.
///
/// Invariant: a minor is in at most one of `devices`, `faulted` and
/// `ignored`.
pub(super) struct TcmuDevices {
    state: StateFiles,
    devices: BTreeMap<u32, Attached>,
    faulted: BTreeMap<u32, Faulted>,
    /// Faults and recoveries per minor, kept across re-attaches while the
    /// device exists.
    health: HashMap<u32, Health>,
    policy: RecoveryPolicy,
    /// Devices refused or not ours, by minor, with the name they had: looked
    /// at again only if the name under that minor changes.
    ignored: HashMap<u32, String>,
    /// The last "try again" reason logged per minor, so a device waiting for
    /// something is logged once, not at every rescan.
    retrying: HashMap<u32, String>,
    /// Devices attached or detached so far (what the metrics catalog
    /// follows).
    changes: u64,
}

impl TcmuDevices {
    /// No device yet; state files in `state_dir` (`None`: no clean detach
    /// is recorded, see `recovery.rs`).
    pub(super) fn new(state_dir: Option<PathBuf>) -> Self {
        Self {
            state: StateFiles::new(state_dir),
            devices: BTreeMap::new(),
            faulted: BTreeMap::new(),
            health: HashMap::new(),
            policy: RecoveryPolicy::default(),
            ignored: HashMap::new(),
            retrying: HashMap::new(),
            changes: 0,
        }
    }

    /// Devices attached or detached so far.
    pub(super) fn changes(&self) -> u64 {
        self.changes
    }

    /// Attached devices: UIO minor and LIO name.
    pub(super) fn attached(&self) -> Vec<(u32, String)> {
        self.devices
            .iter()
            .map(|(minor, a)| (*minor, a.name.name.clone()))
            .collect()
    }

    /// Commands received by the attached device `core/user_<hba>/<name>`
    /// so far, and how many of them arrived behind an open concurrency
    /// gate; `None` if no such device is attached.
    pub(super) fn load(&self, hba: u32, name: &str) -> Option<(u64, u64)> {
        self.devices
            .values()
            .find(|a| a.name.hba == hba && a.name.name == name)
            .map(|a| {
                let s = a.stats.snapshot();
                (s.commands_received, s.concurrent_commands)
            })
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
        self.faulted.retain(|minor, f| {
            found
                .iter()
                .any(|d| d.minor == *minor && d.uio_name == f.found.uio_name)
        });
        let devices = &self.devices;
        let faulted = &self.faulted;
        self.health
            .retain(|minor, _| devices.contains_key(minor) || faulted.contains_key(minor));
        for device in found {
            if self.devices.contains_key(&device.minor)
                || self.faulted.contains_key(&device.minor)
                || self.ignored.contains_key(&device.minor)
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
        match self.attach(host, resources, config, &device, &name, None, log) {
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

    /// Checks, resets the ring if needed (always when `force_reset` gives a
    /// reason, else as `recovery.rs` decides) and attaches a device;
    /// returns its reactor. A device another process holds is neither
    /// opened nor reset.
    #[allow(clippy::too_many_arguments)]
    fn attach<H: Host>(
        &mut self,
        host: &mut H,
        resources: &mut Resources,
        config: &ServeConfig,
        device: &FoundDevice,
        name: &TcmuUioName,
        force_reset: Option<&str>,
        log: &mut dyn FnMut(&str),
    ) -> Result<usize, Refusal> {
        let (bdev, facts) = Self::check(host, resources, config, name)?;
        let held =
            || Refusal::Retry("another process has it open (is another handler running?)".into());
        if host.is_held(device) {
            return Err(held());
        }
        // From here on this process holds the device: nobody else can
        // touch the ring while it is looked at and reset.
        let (region, doorbell) = match host.open(device) {
            Ok(opened) => opened,
            Err(HostError::Busy) => return Err(held()),
            Err(e) => return Err(Refusal::Retry(e.to_string())),
        };
        let reset = match force_reset {
            Some(why) => Some(why.to_owned()),
            None => reset_reason(&region, self.state.detached_cleanly(name)),
        };
        if let Some(why) = &reset {
            log(&format!(
                "{} (uio{}): {why}; blocking it and resetting its ring (in-flight commands complete with BUSY and are retried)",
                name.name, device.minor
            ));
            host.recover(name)
                .map_err(|e| Refusal::Retry(format!("ring reset failed: {e}")))?;
        }
        let attached = self.attach_stack(
            resources,
            config,
            device,
            name,
            (bdev, facts),
            (region, doorbell),
            log,
        );
        if reset.is_some() {
            // Unblocked whether or not the attach worked: a device left
            // blocked would queue commands until they time out.
            if let Err(e) = host.unblock(name) {
                log(&format!(
                    "{}: cannot unblock after the ring reset: {e}",
                    name.name
                ));
            }
        }
        attached
    }

    /// Builds the device's stack on the opened ring and puts it on a
    /// reactor.
    #[allow(clippy::too_many_arguments)]
    fn attach_stack(
        &mut self,
        resources: &mut Resources,
        config: &ServeConfig,
        device: &FoundDevice,
        name: &TcmuUioName,
        (bdev, facts): (BdevRef, DeviceFacts),
        (region, doorbell): (SharedRegion, Doorbell),
        log: &mut dyn FnMut(&str),
    ) -> Result<usize, Refusal> {
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
        let lun = stack.device().executor().counters();
        let fault = stack.device().shared_fault();
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
        self.changes += 1;
        self.devices.insert(
            device.minor,
            Attached {
                found: device.clone(),
                name: name.clone(),
                facts,
                reactor,
                poller,
                stats,
                lun,
                latency,
                fault,
                last: TcmuStatsSnapshot::default(),
                state_file,
            },
        );
        Ok(reactor)
    }

    /// The recovery policy.
    pub(super) fn set_policy(&mut self, policy: RecoveryPolicy) {
        self.policy = policy;
    }

    /// Recovers the devices whose ring faulted (when: see `heal.rs`). A new
    /// fault is logged once with the device and the reason and counted;
    /// the device is detached (its executor drained) and, now or after a
    /// back-off, attached again with its ring reset. After the policy's
    /// attempts in a row the device is left blocked, its fault in the
    /// statistics, until it disappears.
    pub(super) fn heal<H: Host>(
        &mut self,
        host: &mut H,
        resources: &mut Resources,
        config: &ServeConfig,
        now: Instant,
        log: &mut dyn FnMut(&str),
    ) {
        let broken: Vec<(u32, RingFault)> = self
            .devices
            .iter()
            .filter_map(|(minor, a)| a.fault.get().map(|f| (*minor, *f)))
            .collect();
        for (minor, fault) in broken {
            let a = &self.devices[&minor];
            let faulted = Faulted {
                found: a.found.clone(),
                name: a.name.clone(),
                reactor: a.reactor,
                retry_at: None,
            };
            let health = self.health.entry(minor).or_default();
            let next = health.fault(now, format!("ring fault: {fault}"), &self.policy);
            log(&format!(
                "{} (uio{minor}): ring fault: {fault}; {}",
                faulted.name.name,
                match next {
                    Next::Retry { attempt, of, .. } =>
                        format!("recovering it (attempt {attempt} of {of})"),
                    Next::GiveUp { .. } => "it faulted too often to recover again".into(),
                }
            ));
            self.detach(resources, minor, "its ring faulted", log);
            self.faulted.insert(minor, faulted);
            self.schedule(host, minor, next, log);
        }
        let due: Vec<u32> = self
            .faulted
            .iter()
            .filter(|(_, f)| f.retry_at.is_some_and(|at| at <= now))
            .map(|(minor, _)| *minor)
            .collect();
        for minor in due {
            let Some(f) = self.faulted.remove(&minor) else {
                continue;
            };
            let why = "recovering from its ring fault";
            match self.attach(host, resources, config, &f.found, &f.name, Some(why), log) {
                Ok(reactor) => {
                    self.health.entry(minor).or_default().recovered(now);
                    self.retrying.remove(&minor);
                    log(&format!(
                        "recovered {} (uio{minor}): ring reset, attached again to reactor {reactor}",
                        f.name.name
                    ));
                }
                Err(Refusal::Retry(e) | Refusal::Refuse(e)) => {
                    let next = self
                        .health
                        .entry(minor)
                        .or_default()
                        .attempt_failed(now, &self.policy);
                    log(&format!(
                        "recovering {} (uio{minor}) failed: {e}",
                        f.name.name
                    ));
                    self.faulted.insert(minor, f);
                    self.schedule(host, minor, next, log);
                }
            }
        }
    }

    /// Sets when the faulted device on `minor` is tried again, or gives it
    /// up: blocked (commands queue in the kernel and time out there), its
    /// ring reset so the commands in it complete with BUSY, unless another
    /// process holds it.
    fn schedule<H: Host>(
        &mut self,
        host: &mut H,
        minor: u32,
        next: Next,
        log: &mut dyn FnMut(&str),
    ) {
        let Some(f) = self.faulted.get_mut(&minor) else {
            return;
        };
        match next {
            Next::Retry { at, .. } => f.retry_at = Some(at),
            Next::GiveUp { attempts } => {
                f.retry_at = None;
                let health = self.health.entry(minor).or_default();
                let why = health.fault.take().unwrap_or_else(|| "ring fault".into());
                health.fault = Some(format!(
                    "{why}; left blocked after {attempts} recoveries in a row"
                ));
                let blocked = if host.is_held(&f.found) {
                    "another process holds it, so it is left as it is".to_owned()
                } else {
                    match host.recover(&f.name) {
                        Ok(()) => "it is left blocked".to_owned(),
                        Err(e) => format!("blocking it failed: {e}"),
                    }
                };
                log(&format!(
                    "giving up on {} (uio{minor}) after {attempts} recoveries in a row: {why}; \
                     {blocked}; the other devices keep serving",
                    f.name.name
                ));
            }
        }
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
        self.changes += 1;
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

    /// Whether a device (attached or faulted) stands on bdev `name`.
    pub(super) fn uses_bdev(&self, name: &str) -> Vec<String> {
        let attached = self.devices.values().map(|a| &a.name);
        let faulted = self.faulted.values().map(|f| &f.name);
        attached
            .chain(faulted)
            .filter(|n| n.cfg == name)
            .map(|n| n.name.clone())
            .collect()
    }

    /// Forgets the devices refused so far, so that the next rescan looks at
    /// them again (a bdev they named may exist now).
    pub(super) fn forget_refused(&mut self) {
        self.ignored.clear();
        self.retrying.clear();
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
