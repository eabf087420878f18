//! `[[scst]]` devices of `dataplane serve`: an scst_user device per entry,
//! registered at start and served until shutdown.
//!
//! # Starting one ([`ScstDevices::start`])
//! 1. The host opens a fresh `/dev/scst_user` fd (`O_NONBLOCK`: scst_user
//!    latches the mode at REGISTER_DEVICE) — [`Host::open_scst`].
//! 2. The DEV_USER_VERSION: the configured one, else found on the machine
//!    ([`Host::dev_user_version`], once for every device).
//! 3. The stack ([`Stack::scst`]): REGISTER_DEVICE with that version, then
//!    SET_OPTIONS / GET_OPTIONS (whose errors say what to do); a LUN over
//!    the bdev (serial = the device name, a stable `lu_id` derived from it,
//!    sense format per `d_sense`), a buffer pool capped at `pool_mb`, and
//!    the device polling both.
//! 4. The device goes on its reactor (configured `reactor`, else the
//!    round-robin it shares with the TCMU devices), its LUN's port to that
//!    reactor's bdev poller for the bdev.
//! 5. Each `[[scst.export]]` LUN is added unless it maps the device already
//!    ([`Host::export_scst_lun`]); a failure is logged and the device
//!    served. The same happens after a re-registration: SCST dropped the
//!    device's LUNs with its old fd.
//!
//! A device whose bdev could not be made at start (a file or nvme bdev left out,
//! see `bdevs.rs`) is not registered: one line says why, and the others
//! are served.
//!
//! Unlike TCMU devices, which come and go with LIO, SCST devices exist
//! because this process registers them: a failure here is fatal at start,
//! and closing the fd (at shutdown, after the device drained) unregisters
//! the device and removes its LUNs from SCST.

mod handoff;

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

use nix::errno::Errno;
use reactor::PollerId;

use super::config::{ScstConfig, ServeConfig};
use super::error::{ScstStartError, ServeError};
use super::handoff::ReceivedDevice;
use super::heal::{Health, Next, RecoveryPolicy};
use super::host::Host;
use super::lu_id;
use super::metrics::{DeviceCounters, DeviceSource};
use super::resources::Resources;
use super::stats::{doorbells_per_io, DeviceIdentity, DeviceStats, DeviceTotals};
use crate::frontend::SharedFault;
use crate::latency::SharedLatency;
use crate::lun::LunCounters;
use crate::scst::device::{HandOff, ScstDeviceConfig, ScstStats, ScstStatsSnapshot};
use crate::scst::export::Exported;
use crate::scst::pool::PoolConfig;
use crate::scst::version::VersionSource;
use crate::stack::{LunSpec, ScstRegistration, Stack, MAX_TRANSFER_BYTES};

/// Task slots of an SCST device's LUN.
const MAX_TASKS: u32 = 1024;

/// An `[[scst]]` device on its reactor.
struct AttachedScst {
    name: String,
    bdev: String,
    reactor: usize,
    /// `None` while the device is off its reactor after a fault.
    poller: Option<PollerId>,
    stats: Arc<ScstStats>,
    lun: Arc<LunCounters>,
    latency: Option<Arc<SharedLatency>>,
    /// Set by the device when scst_user refuses it.
    fault: Arc<SharedFault<Errno>>,
    /// Quiesces the device for a hand-off.
    handoff: Arc<HandOff>,
    /// The device's `/dev/scst_user` fd (owned by the device, open while
    /// it is on its reactor); `None` for a kernel side that is no file.
    fd: Option<RawFd>,
    /// Counters at the previous statistics report.
    last: ScstStatsSnapshot,
    /// Faults and recoveries across re-registrations.
    health: Health,
    /// When to register it again after a fault; `None` with no poller:
    /// given up.
    retry_at: Option<Instant>,
}

/// A registered device on its reactor: what [`ScstDevices`] keeps of it.
struct Placed {
    reactor: usize,
    poller: PollerId,
    stats: Arc<ScstStats>,
    lun: Arc<LunCounters>,
    latency: Option<Arc<SharedLatency>>,
    fault: Arc<SharedFault<Errno>>,
    handoff: Arc<HandOff>,
    fd: Option<RawFd>,
}

impl AttachedScst {
    /// On its reactor and not faulted: a device whose poll runs and sees
    /// what the control plane asks of it (a hand-off).
    fn is_polled(&self) -> bool {
        self.poller.is_some() && self.fault.get().is_none()
    }

    /// Its fault for the reports: one the server has not handled yet
    /// (the device is on its reactor), else, while it is off its reactor,
    /// the one it was taken off for.
    fn fault_now(&self) -> Option<String> {
        match self.poller {
            Some(_) => self
                .fault
                .get()
                .map(|e| format!("scst_user refused the device: {e}")),
            None => self.health.fault.clone(),
        }
    }

    fn placed(&mut self, placed: Placed) {
        self.reactor = placed.reactor;
        self.poller = Some(placed.poller);
        self.stats = placed.stats;
        self.lun = placed.lun;
        self.latency = placed.latency;
        self.fault = placed.fault;
        self.handoff = placed.handoff;
        self.fd = placed.fd;
        self.last = ScstStatsSnapshot::default();
    }
}

/// The `[[scst]]` devices, in configuration order.
#[derive(Default)]
pub(super) struct ScstDevices {
    devices: Vec<AttachedScst>,
    policy: RecoveryPolicy,
    /// Devices placed on or taken off their reactors so far (what the
    /// metrics catalog follows).
    changes: u64,
}

impl ScstDevices {
    /// Devices placed on or taken off their reactors so far.
    pub(super) fn changes(&self) -> u64 {
        self.changes
    }

    /// Registers every `[[scst]]` device of `serve_config` and puts it on
    /// its reactor, its memory offered to the bdev unless the bdev says
    /// `fixed_buffers = false`. A device over a bdev left out (or of
    /// another block size than a file or nvme bdev's device) is skipped with a log
    /// line. The first that fails stops the start, naming the device;
    /// those already attached stay on their reactors (stopping them drains
    /// and closes them).
    ///
    /// A device among `received` (handed over by a previous server, see
    /// `handoff.rs`) is not registered again: it is built on the fd it came
    /// with, its sessions taken over. Received devices the configuration no
    /// longer has are closed, which unregisters them.
    pub(super) fn start<H: Host>(
        &mut self,
        host: &mut H,
        resources: &mut Resources,
        serve_config: &ServeConfig,
        mut received: Vec<ReceivedDevice>,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), ServeError> {
        // Discovered once: every device talks to the same kernel.
        let mut discovered = None;
        for config in &serve_config.scst {
            let adopted = received
                .iter()
                .position(|r| r.device.name == config.name)
                .map(|i| received.swap_remove(i));
            match self.add_one(
                host,
                resources,
                serve_config,
                config,
                adopted,
                &mut discovered,
                log,
            ) {
                Ok(()) => {}
                Err(ScstStartError::Refused(why)) => log(&format!(
                    "not registering SCST device {}: {why}; the other devices are served",
                    config.name
                )),
                Err(error) => {
                    return Err(ServeError::Scst {
                        device: config.name.clone(),
                        error,
                    })
                }
            }
        }
        for r in received {
            log(&format!(
                "SCST device {} was handed over but is not in the configuration: \
                 closing it (SCST unregisters it and removes its LUNs)",
                r.device.name
            ));
        }
        Ok(())
    }

    fn push(&mut self, config: &ScstConfig, placed: Placed) {
        self.changes += 1;
        self.devices.push(AttachedScst {
            name: config.name.clone(),
            bdev: config.bdev.clone(),
            reactor: placed.reactor,
            poller: Some(placed.poller),
            stats: placed.stats,
            lun: placed.lun,
            latency: placed.latency,
            fault: placed.fault,
            handoff: placed.handoff,
            fd: placed.fd,
            last: ScstStatsSnapshot::default(),
            health: Health::default(),
            retry_at: None,
        });
    }

    /// Opens an fd, registers the device and puts it on its reactor; or,
    /// `adopted`, builds it on the fd a previous server handed over.
    fn place<H: Host>(
        host: &mut H,
        resources: &mut Resources,
        config: &ScstConfig,
        fixed_buffers: bool,
        discovered: &mut Option<(String, VersionSource)>,
        adopted: Option<ReceivedDevice>,
        log: &mut dyn FnMut(&str),
    ) -> Result<Placed, ScstStartError> {
        let bdev = resources
            .bdev(&config.bdev)
            .cloned()
            .ok_or_else(|| ScstStartError::NoBdev(config.bdev.clone()))?;
        let lun = LunSpec::new(config.name.clone(), lu_id::scst(&config.name), MAX_TASKS);
        // The largest buffer covers the largest transfer SCST may send
        // (the LUN answers anything beyond its own limit with INVALID
        // FIELD IN CDB); pages are faulted in on first use and then
        // reused.
        let pool = PoolConfig {
            max_bytes: config.pool_bytes(),
            max_buffer_bytes: MAX_TRANSFER_BYTES as usize,
            populate: false,
        };
        let device_config = ScstDeviceConfig {
            name: format!("scst:{}", config.name),
            idle_poll_interval: config.idle_poll_interval(),
            coalesce: config.coalesce(),
            ..ScstDeviceConfig::default()
        };
        let (stack, how) = if let Some(adopted) = adopted {
            let driver = host.adopt_scst(&config.name, adopted.fd)?;
            let mut stack =
                Stack::scst_registered(bdev.as_ref(), &lun, driver, pool, device_config)?;
            let sessions = adopted.device.sessions;
            let how = (
                "took over",
                format!(
                    "{} session(s), its LUNs in place, from the previous server",
                    sessions.len()
                ),
            );
            stack.device_mut().adopt_sessions(sessions);
            (stack, how)
        } else {
            // Open first: without scst_user, "not loaded" is the message
            // that helps, not a failed version search.
            let driver = host.open_scst(&config.name)?;
            let (version, source) = match (&config.version, &*discovered) {
                (None, Some(found)) => found.clone(),
                (configured, _) => {
                    let found = host.dev_user_version(configured.as_deref())?;
                    if configured.is_none() {
                        *discovered = Some(found.clone());
                    }
                    found
                }
            };
            let registration = ScstRegistration {
                name: config.name.clone(),
                options: config.options(),
                version,
                source: source.clone(),
            };
            let stack = Stack::scst(
                bdev.as_ref(),
                &lun,
                driver,
                &registration,
                pool,
                device_config,
            )?;
            let how = (
                "registered",
                format!("DEV_USER_VERSION from {source}, {}", config.options()),
            );
            (stack, how)
        };
        let stack = if fixed_buffers {
            stack
        } else {
            stack.without_fixed_buffers()
        };
        let reactor = config.reactor.unwrap_or_else(|| resources.round_robin());
        let stats = stack.device().stats();
        let latency = stack.device().latency();
        let lun = stack.device().executor().counters();
        let fault = stack.device().shared_fault();
        let handoff = stack.device().handoff();
        let fd = stack
            .device()
            .driver()
            .handoff_fd()
            .map(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd));
        let handle = resources.bdev_poller(reactor, &config.bdev, &bdev)?;
        let poller = resources.add_poller(reactor, Box::new(stack.attach_to(&handle)))?;
        log(&format!(
            "{} SCST device {} (bdev {}, {}-byte blocks, {}) on reactor {reactor}",
            how.0,
            config.name,
            config.bdev,
            bdev.geometry().block_size,
            how.1
        ));
        export(host, config, log);
        Ok(Placed {
            reactor,
            poller,
            stats,
            lun,
            latency,
            fault,
            handoff,
            fd,
        })
    }

    /// The recovery policy.
    pub(super) fn set_policy(&mut self, policy: RecoveryPolicy) {
        self.policy = policy;
    }

    /// Re-registers the devices scst_user refused (when: see `heal.rs`): a
    /// new fault is logged once and counted, the device is taken off its
    /// reactor (drained; its fd closes, which unregisters it) and, now or
    /// after a back-off, registered again on a new fd. After the policy's
    /// attempts in a row it stays unregistered, its fault in the
    /// statistics.
    pub(super) fn heal<H: Host>(
        &mut self,
        host: &mut H,
        resources: &mut Resources,
        serve_config: &ServeConfig,
        now: Instant,
        log: &mut dyn FnMut(&str),
    ) {
        for d in &mut self.devices {
            let Some(poller) = d.poller else { continue };
            let Some(errno) = d.fault.get().copied() else {
                continue;
            };
            let next = d.health.fault(
                now,
                format!("scst_user refused the device: {errno}"),
                &self.policy,
            );
            log(&format!(
                "SCST device {}: scst_user refused it ({errno}); {}",
                d.name,
                match next {
                    Next::Retry { attempt, of, .. } =>
                        format!("registering it again (attempt {attempt} of {of})"),
                    Next::GiveUp { .. } => "it faulted too often to register again".into(),
                }
            ));
            match resources.remove_poller(d.reactor, poller) {
                Ok(removed) => drop(removed),
                Err(e) => log(&format!("removing SCST device {}: {e}", d.name)),
            }
            d.poller = None;
            self.changes += 1;
            Self::schedule(d, next, log);
        }
        let mut discovered = None;
        for d in &mut self.devices {
            if d.poller.is_some() || d.retry_at.is_none_or(|at| at > now) {
                continue;
            }
            let Some(config) = serve_config.scst.iter().find(|c| c.name == d.name) else {
                continue;
            };
            let fixed = serve_config.fixed_buffers(&config.bdev);
            match Self::place(host, resources, config, fixed, &mut discovered, None, log) {
                Ok(placed) => {
                    d.placed(placed);
                    self.changes += 1;
                    d.retry_at = None;
                    d.health.recovered(now);
                    log(&format!(
                        "recovered SCST device {}: registered again",
                        d.name
                    ));
                }
                Err(e) => {
                    log(&format!(
                        "registering SCST device {} again failed: {e}",
                        d.name
                    ));
                    let next = d.health.attempt_failed(now, &self.policy);
                    Self::schedule(d, next, log);
                }
            }
        }
    }

    fn schedule(d: &mut AttachedScst, next: Next, log: &mut dyn FnMut(&str)) {
        match next {
            Next::Retry { at, .. } => d.retry_at = Some(at),
            Next::GiveUp { attempts } => {
                d.retry_at = None;
                let why = d.health.fault.take().unwrap_or_default();
                log(&format!(
                    "giving up on SCST device {} after {attempts} recoveries in a row: {why}; \
                     it stays unregistered, the other devices keep serving",
                    d.name
                ));
                d.health.fault = Some(format!(
                    "{why}; left unregistered after {attempts} recoveries in a row"
                ));
            }
        }
    }

    /// Registers the device of `config` while serving (a reload, the
    /// control socket): as at start, exported as configured.
    pub(super) fn add<H: Host>(
        &mut self,
        host: &mut H,
        resources: &mut Resources,
        serve_config: &ServeConfig,
        config: &ScstConfig,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), ScstStartError> {
        self.add_one(host, resources, serve_config, config, None, &mut None, log)
    }

    /// Registers (or, `adopted`, takes over) the device of `config` and
    /// puts it on its reactor; [`ScstStartError::Refused`] if its bdev
    /// cannot serve it.
    #[allow(clippy::too_many_arguments)] // the server's parts, each once
    fn add_one<H: Host>(
        &mut self,
        host: &mut H,
        resources: &mut Resources,
        serve_config: &ServeConfig,
        config: &ScstConfig,
        adopted: Option<ReceivedDevice>,
        discovered: &mut Option<(String, VersionSource)>,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), ScstStartError> {
        if let Some(why) = refusal(resources, config) {
            return Err(ScstStartError::Refused(why));
        }
        let fixed_buffers = serve_config.fixed_buffers(&config.bdev);
        let placed = Self::place(
            host,
            resources,
            config,
            fixed_buffers,
            discovered,
            adopted,
            log,
        )?;
        self.push(config, placed);
        Ok(())
    }

    /// Takes device `name` off its reactor (it drains) and forgets it; its
    /// fd closes, so scst_user unregisters it and SCST removes its LUNs.
    /// False if there is no such device.
    pub(super) fn remove(
        &mut self,
        resources: &mut Resources,
        name: &str,
        log: &mut dyn FnMut(&str),
    ) -> bool {
        let Some(i) = self.devices.iter().position(|d| d.name == name) else {
            return false;
        };
        let d = self.devices.remove(i);
        self.changes += 1;
        if let Some(poller) = d.poller {
            match resources.remove_poller(d.reactor, poller) {
                Ok(removed) => drop(removed),
                Err(e) => log(&format!("removing SCST device {name}: {e}")),
            }
        }
        log(&format!(
            "removed SCST device {name}: unregistered, its LUNs gone from SCST"
        ));
        true
    }

    /// The devices' names, with their reactors.
    pub(super) fn placed(&self) -> Vec<(String, usize)> {
        self.devices
            .iter()
            .map(|d| (d.name.clone(), d.reactor))
            .collect()
    }

    /// The devices on their reactors' counters, in configuration order,
    /// for the metrics.
    pub(super) fn metric_sources(&self) -> Vec<DeviceSource> {
        self.devices
            .iter()
            .filter(|d| d.poller.is_some())
            .map(|d| DeviceSource {
                name: d.name.clone(),
                bdev: d.bdev.clone(),
                counters: DeviceCounters::Scst(Arc::clone(&d.stats)),
                lun: Arc::clone(&d.lun),
                latency: d.latency.clone(),
            })
            .collect()
    }

    /// Each device's counters since it was registered; reads counters
    /// only.
    pub(super) fn totals(&self) -> Vec<DeviceTotals> {
        self.devices
            .iter()
            .map(|a| {
                let snap = a.stats.snapshot();
                DeviceTotals {
                    device: DeviceIdentity::scst(&a.name, &a.bdev, a.reactor),
                    received_total: snap.exec,
                    commands_total: snap.commands_completed,
                    data_bytes_total: snap.data_bytes,
                    data_in_bytes_total: snap.data_in_bytes,
                    doorbells_total: snap.ioctls,
                    aborts_total: snap.aborts,
                    fault: a.fault_now(),
                }
            })
            .collect()
    }

    /// Each device over the `interval` (seconds) since the previous call.
    pub(super) fn stats(&mut self, interval: f64) -> Vec<DeviceStats> {
        let mut devices = Vec::with_capacity(self.devices.len());
        for a in &mut self.devices {
            let snap = a.stats.snapshot();
            let commands = snap.commands_completed - a.last.commands_completed;
            // One REPLY_AND_GET_MULTI carries a batch of replies: the
            // ioctls are the doorbells.
            let ioctls = snap.ioctls - a.last.ioctls;
            let bytes = snap.data_bytes - a.last.data_bytes;
            let latency = a.latency.as_ref().map(|l| l.take()).unwrap_or_default();
            devices.push(DeviceStats {
                device: DeviceIdentity::scst(&a.name, &a.bdev, a.reactor),
                commands,
                iops: commands as f64 / interval,
                bytes_per_sec: bytes as f64 / interval,
                doorbells: ioctls,
                doorbells_per_io: doorbells_per_io(ioctls, commands),
                latency_ns: latency.summary,
                hold_us: snap.hold_us,
                commands_total: snap.commands_completed,
                doorbells_total: snap.ioctls,
                received_total: snap.exec,
                malformed_total: snap.bad_pbufs + snap.bad_frees + snap.unknown_subcodes,
                aborts_total: snap.aborts,
                busy_total: Some(snap.busy),
                sessions: Some(snap.sessions),
                empty_ioctls_total: Some(snap.eagain),
                fault: a.fault_now(),
                // A fault not handled yet counts already.
                completion_cpu: None,
                completion_switches_total: None,
                faults_total: a.health.faults
                    + u64::from(a.poller.is_some() && a.fault.get().is_some()),
                recoveries_total: a.health.recoveries,
            });
            a.last = snap;
        }
        devices
    }
}

/// Exports the device of `config` (registered and polled) as each of its
/// `[[scst.export]]` LUNs; a LUN that cannot be exported is logged and the
/// device served all the same.
fn export<H: Host>(host: &mut H, config: &ScstConfig, log: &mut dyn FnMut(&str)) {
    for e in &config.export {
        let Some(at) = e.address() else {
            continue; // refused by validation
        };
        match host.export_scst_lun(&config.name, &at) {
            Ok(Exported::Added) => log(&format!("exported SCST device {} as {at}", config.name)),
            Ok(Exported::AlreadyThere) => {
                log(&format!("SCST device {} is {at} already", config.name))
            }
            Err(e) => log(&format!(
                "cannot export SCST device {} as {at}: {e}; the device is served without it",
                config.name
            )),
        }
    }
}

/// Why the device of `config` cannot be served although the configuration
/// is valid: its bdev could not be made at start, or it is a `file` or
/// `nvme` bdev whose block size (its device's) differs from the configured
/// one.
fn refusal(resources: &Resources, config: &ScstConfig) -> Option<String> {
    if let Some(why) = resources.unavailable(&config.bdev) {
        return Some(format!("bdev {:?} is unavailable ({why})", config.bdev));
    }
    let block_size = resources.bdev(&config.bdev)?.geometry().block_size;
    match config.block_size {
        Some(bs) if bs != block_size => Some(format!(
            "its block_size {bs} differs from the block size of bdev {:?} ({block_size}); \
             leave it out or make them equal",
            config.bdev
        )),
        _ => None,
    }
}
