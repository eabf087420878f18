//! The server: bdevs, reactors, device attach and detach, crash recovery and
//! statistics.
//!
//! # Lifecycle of a device
//! 1. Found by a rescan of the UIO devices (at start, every
//!    `rescan_interval_ms`, and at once when a netlink event says something
//!    changed). Devices of another subtype are not ours and are ignored.
//! 2. Checked: the bdev named by its `dev_config` exists and is not a child of
//!    a striped bdev; its block size equals the bdev's; its size fits the
//!    bdev. A device that fails a check is refused with one log line and left
//!    alone (it is looked at again only if it disappears and comes back).
//! 3. Recovered if needed: a state file per device (in `state_dir`) records
//!    which process attached it. If that process died without detaching (a
//!    crash or `kill -9`), completions it wrote into the ring may not have
//!    been published, so the ring cannot be trusted: the device is blocked,
//!    its ring reset (in-flight commands complete with BUSY, which the
//!    initiator retries) and unblocked after attach — what tcmu-runner does.
//!    Otherwise commands waiting in the ring (queued while no handler ran) are
//!    picked up as they are.
//! 4. Attached: a LUN over the bdev and a [`TcmuDevice`] on a reactor (pinned
//!    by configuration or round-robin), with a port to that reactor's bdev
//!    poller for the bdev (created on first use).
//! 5. Detached when it disappears: the device poller is removed from its
//!    reactor, which drains in-flight commands first (up to a deadline).
//!
//! SIGTERM/SIGINT stop every reactor, which drains every device; the state
//! files then say "clean" so the next start picks up waiting commands.
//!
//! # SCST devices
//! Each `[[scst]]` entry is registered with scst_user at
//! [`Server::start`] (see [`super::scst`]) and placed on its reactor like a
//! TCMU device (configured `reactor`, else the same round-robin), sharing
//! that reactor's bdev poller for its bdev. A device that cannot be
//! registered makes the start fail. They stay until shutdown, which drains
//! them like the TCMU devices: the device stops asking scst_user for new
//! commands, answers every command it received, and only then is its fd
//! closed (which unregisters it).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bdev::null::NullBdev;
use bdev::ram::RamBdev;
use bdev::striped::StripedBdev;
use bdev::BdevRef;
use reactor::stats::ReactorLoad;
use reactor::{PollerId, Reactor, ReactorConfig, ReactorHandle, ReactorStats};

use super::config::{BdevConfig, ConfigError, ServeConfig};
use super::scst;
use super::stats::{DeviceKind, DeviceStats, StatsReport};
use crate::latency::SharedLatency;
use crate::lun::{Lun, LunConfig};
use crate::port::{port_pair, BdevPoller, BdevPollerHandle};
use crate::scst::device::{ScstStats, ScstStatsSnapshot};
use crate::scst::driver::ScstDriver;
use crate::scst::error::ScstError;
use crate::scst::version::{VersionSearch, VersionSource};
use crate::tcmu::discovery::TcmuUioName;
use crate::tcmu::{
    Doorbell, SharedRegion, TcmuDevice, TcmuDeviceConfig, TcmuStats, TcmuStatsSnapshot,
};

/// Largest transfer a LUN accepts, whatever the device's `hw_max_sectors`.
pub const MAX_TRANSFER_BYTES: u64 = 8 << 20;
/// Task slots per LUN.
const MAX_TASKS: u32 = 1024;
/// Queue depth of a bdev channel shared by the devices of one reactor.
const CHANNEL_DEPTH: usize = 4096;

/// A UIO device as found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundDevice {
    /// UIO minor (`uio<minor>`).
    pub minor: u32,
    /// Its UIO name, e.g. `tcm-user/0/disk0/dataplane/ram0`.
    pub uio_name: String,
}

/// What configfs says about a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceFacts {
    /// `hw_block_size`.
    pub block_size: u32,
    /// `hw_max_sectors` (in blocks).
    pub max_sectors: u32,
    /// `dev_size` in bytes.
    pub size: u64,
}

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the UIO device.
    #[error("the device is held by another process")]
    Busy,
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

/// The system the server runs on: where devices come from (TCMU's UIO
/// devices and configfs, SCST's `/dev/scst_user`).
/// [`SysHost`](super::SysHost) is the real one; tests provide simulated
/// devices.
pub trait Host: Send {
    /// Every UIO device present now.
    fn scan(&mut self) -> Vec<FoundDevice>;
    /// Block size, max sectors and size of a TCMU device.
    fn facts(&mut self, name: &TcmuUioName) -> Result<DeviceFacts, String>;
    /// Opens and maps the device.
    fn open(&mut self, device: &FoundDevice) -> Result<(SharedRegion, Doorbell), OpenError>;
    /// Blocks the device and resets its ring (in-flight commands complete
    /// with BUSY).
    fn recover(&mut self, name: &TcmuUioName) -> Result<(), String>;
    /// Unblocks a device blocked by `recover`.
    fn unblock(&mut self, name: &TcmuUioName) -> Result<(), String>;
    /// Opens a new scst_user fd (`/dev/scst_user`, non-blocking) for the
    /// `[[scst]]` device `name`: one fd per device.
    fn open_scst(&mut self, name: &str) -> Result<Box<dyn ScstDriver>, ScstError>;
    /// The DEV_USER_VERSION to register SCST devices with: `configured`
    /// (a device's `version`) as given, else found on the machine
    /// ([`VersionSearch::system`]).
    fn dev_user_version(
        &mut self,
        configured: Option<&str>,
    ) -> Result<(String, VersionSource), ScstError> {
        VersionSearch::system().find(configured)
    }
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bdev could not be created.
    #[error("bdev {name}: {source}")]
    Bdev {
        /// Bdev name.
        name: String,
        /// Why.
        source: bdev::Error,
    },
    /// A reactor could not be started or stopped.
    #[error("reactor: {0}")]
    Reactor(#[from] reactor::Error),
    /// An `[[scst]]` device could not be opened, registered or set up.
    #[error("scst {device:?}: {message}")]
    Scst {
        /// The SCST device name.
        device: String,
        /// What failed and what to do about it (the SCST layer's message).
        message: String,
    },
}

/// Options of a server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The validated configuration.
    pub config: ServeConfig,
    /// Directory of per-device state files (crash detection); `None` turns
    /// crash detection off.
    pub state_dir: Option<PathBuf>,
}

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
    last: TcmuStatsSnapshot,
    state_file: Option<PathBuf>,
}

/// An `[[scst]]` device on its reactor.
struct AttachedScst {
    name: String,
    bdev: String,
    reactor: usize,
    stats: Arc<ScstStats>,
    latency: Option<Arc<SharedLatency>>,
    last: ScstStatsSnapshot,
}

/// The server. See the module docs.
pub struct Server<H: Host> {
    options: ServeOptions,
    host: H,
    bdevs: HashMap<String, BdevRef>,
    reactors: Vec<ReactorHandle>,
    bdev_pollers: HashMap<(usize, String), BdevPollerHandle>,
    devices: BTreeMap<u32, Attached>,
    /// `[[scst]]` devices, in configuration order.
    scst_devices: Vec<AttachedScst>,
    /// Devices refused or not ours, by minor, with the name they had: looked
    /// at again only if the name under that minor changes.
    ignored: HashMap<u32, String>,
    /// The last "try again" reason logged per minor, so a device waiting for
    /// something is logged once, not at every rescan.
    retrying: HashMap<u32, String>,
    next_reactor: usize,
    last_reactor_stats: Vec<ReactorStats>,
    last_stats_at: Instant,
    log: Box<dyn FnMut(&str) + Send>,
}

impl<H: Host> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("reactors", &self.reactors.len())
            .field("devices", &self.devices.keys().collect::<Vec<_>>())
            .field(
                "scst_devices",
                &self
                    .scst_devices
                    .iter()
                    .map(|d| &d.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn make_bdevs(config: &ServeConfig) -> Result<HashMap<String, BdevRef>, ServeError> {
    let mut bdevs: HashMap<String, BdevRef> = HashMap::new();
    let wrap = |name: &str| {
        let name = name.to_string();
        move |source| ServeError::Bdev { name, source }
    };
    // Plain bdevs first, then the striped ones over them.
    for b in &config.bdevs {
        let bdev: BdevRef = match b {
            BdevConfig::Ram {
                name,
                size,
                block_size,
            } => {
                let ram = RamBdev::new(name.clone(), *block_size, size.0 / u64::from(*block_size))
                    .map_err(wrap(name))?;
                // Commit the memory now, so first writes do not page-fault on
                // the data path.
                ram.prefault();
                Arc::new(ram)
            }
            BdevConfig::Null {
                name,
                size,
                block_size,
            } => Arc::new(
                NullBdev::new(name.clone(), *block_size, size.0 / u64::from(*block_size))
                    .map_err(wrap(name))?,
            ),
            BdevConfig::Striped { .. } => continue,
        };
        bdevs.insert(b.name().to_string(), bdev);
    }
    for b in &config.bdevs {
        if let BdevConfig::Striped {
            name,
            children,
            chunk,
        } = b
        {
            let kids: Vec<BdevRef> = children.iter().map(|c| Arc::clone(&bdevs[c])).collect();
            let block_size = u64::from(kids[0].geometry().block_size);
            let striped = StripedBdev::new(name.clone(), kids, (chunk.0 / block_size) as u32)
                .map_err(wrap(name))?;
            bdevs.insert(name.clone(), Arc::new(striped));
        }
    }
    Ok(bdevs)
}

/// A stable, non-zero 64-bit id of a LIO device (for VPD 0x83).
fn lu_id(name: &TcmuUioName) -> u64 {
    // FNV-1a: stable across runs and builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.hba.to_le_bytes().iter().chain(name.name.as_bytes()) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// What a state file says: the pid that attached the device, and whether it
/// detached cleanly.
fn read_state(path: &Path) -> Option<(u32, bool)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut pid = None;
    let mut clean = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("pid=") {
            pid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("state=") {
            clean = Some(v.trim() == "clean");
        }
    }
    Some((pid?, clean?))
}

fn write_state(path: &Path, clean: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!(
            "pid={}\nstate={}\n",
            std::process::id(),
            if clean { "clean" } else { "attached" }
        ),
    )?;
    std::fs::rename(tmp, path)
}

impl<H: Host> Server<H> {
    /// Creates the bdevs, starts the reactors and registers the `[[scst]]`
    /// devices (any failure is an error: [`ServeError::Scst`] names the
    /// device); attaches no TCMU device yet (see [`rescan`](Self::rescan)).
    /// `log` receives one line per event.
    pub fn start(
        options: ServeOptions,
        host: H,
        log: Box<dyn FnMut(&str) + Send>,
    ) -> Result<Self, ServeError> {
        let config = &options.config;
        let bdevs = make_bdevs(config)?;
        let idle = config.reactors.idle_policy();
        let mut reactors = Vec::with_capacity(config.reactors.cores.len());
        for (i, &core) in config.reactors.cores.iter().enumerate() {
            let reactor_config = ReactorConfig::new(format!("reactor{i}"))
                .with_core(core)
                .with_idle(idle);
            reactors.push(Reactor::spawn(reactor_config, Vec::new())?);
        }
        if let Some(dir) = &options.state_dir {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return Err(ServeError::Config(ConfigError(format!(
                    "state directory {}: {e}",
                    dir.display()
                ))));
            }
        }
        let last_reactor_stats = reactors.iter().map(ReactorHandle::stats).collect();
        let mut server = Self {
            options,
            host,
            bdevs,
            reactors,
            bdev_pollers: HashMap::new(),
            devices: BTreeMap::new(),
            scst_devices: Vec::new(),
            ignored: HashMap::new(),
            retrying: HashMap::new(),
            next_reactor: 0,
            last_reactor_stats,
            last_stats_at: Instant::now(),
            log,
        };
        // On error the server is dropped: its reactors stop, draining the
        // SCST devices already attached, whose fds then close.
        server.attach_scst_devices()?;
        Ok(server)
    }

    /// Registers every `[[scst]]` device and puts it on its reactor.
    fn attach_scst_devices(&mut self) -> Result<(), ServeError> {
        let configs = self.options.config.scst.clone();
        // Discovered once: every device talks to the same kernel.
        let mut discovered: Option<(String, VersionSource)> = None;
        for config in &configs {
            let fail = |message: String| ServeError::Scst {
                device: config.name.clone(),
                message,
            };
            // Open first: without scst_user, "not loaded" is the message
            // that helps, not a failed version search.
            let driver = self
                .host
                .open_scst(&config.name)
                .map_err(|e| fail(e.to_string()))?;
            let (version, source) = match (&config.version, &discovered) {
                (None, Some(found)) => found.clone(),
                (configured, _) => {
                    let found = self
                        .host
                        .dev_user_version(configured.as_deref())
                        .map_err(|e| fail(e.to_string()))?;
                    if configured.is_none() {
                        discovered = Some(found.clone());
                    }
                    found
                }
            };
            let bdev = self.bdevs.get(&config.bdev).cloned().ok_or_else(|| {
                fail(format!(
                    "bdev {:?} is not in the configuration",
                    config.bdev
                ))
            })?;
            let (device, end) =
                scst::build_device(config, &bdev, driver, &version, &source).map_err(fail)?;
            let reactor = config.reactor.unwrap_or_else(|| self.round_robin());
            let stats = device.stats();
            let latency = device.latency();
            let handle = self
                .bdev_poller(reactor, &config.bdev, &bdev)
                .map_err(|r| fail(r.reason()))?;
            handle.attach(end);
            self.reactors[reactor]
                .add_poller(Box::new(device))
                .map_err(|e| fail(format!("reactor: {e}")))?;
            self.log(format!(
                "registered SCST device {} (bdev {}, {}-byte blocks, DEV_USER_VERSION from \
                 {source}, {}) on reactor {reactor}",
                config.name,
                config.bdev,
                bdev.geometry().block_size,
                config.options()
            ));
            self.scst_devices.push(AttachedScst {
                name: config.name.clone(),
                bdev: config.bdev.clone(),
                reactor,
                stats,
                latency,
                last: ScstStatsSnapshot::default(),
            });
        }
        Ok(())
    }

    /// The next reactor of the round-robin placement (TCMU and SCST devices
    /// share it).
    fn round_robin(&mut self) -> usize {
        let r = self.next_reactor % self.reactors.len();
        self.next_reactor += 1;
        r
    }

    /// The bdev poller of `reactor` for bdev `name`, created on first use.
    fn bdev_poller(
        &mut self,
        reactor: usize,
        name: &str,
        bdev: &BdevRef,
    ) -> Result<BdevPollerHandle, Refusal> {
        let key = (reactor, name.to_owned());
        if let Some(handle) = self.bdev_pollers.get(&key) {
            return Ok(handle.clone());
        }
        let channel = bdev
            .open_channel(CHANNEL_DEPTH)
            .map_err(|e| Refusal::Refuse(format!("bdev channel: {e}")))?;
        let poller = BdevPoller::new(format!("bdev:{name}"), channel, 256);
        let mut handle = poller.handle();
        handle.set_waker(Some(self.reactors[reactor].waker().clone()));
        self.reactors[reactor]
            .add_poller(Box::new(poller))
            .map_err(|e| Refusal::Retry(format!("reactor: {e}")))?;
        self.bdev_pollers.insert(key, handle.clone());
        Ok(handle)
    }

    /// The `[[scst]]` devices, with their reactors.
    pub fn scst_devices(&self) -> Vec<(String, usize)> {
        self.scst_devices
            .iter()
            .map(|d| (d.name.clone(), d.reactor))
            .collect()
    }

    /// The reactors (for signal handling).
    pub fn reactors(&self) -> &[ReactorHandle] {
        &self.reactors
    }

    /// Attached devices by UIO minor.
    pub fn attached(&self) -> Vec<(u32, String)> {
        self.devices
            .iter()
            .map(|(minor, a)| (*minor, a.name.name.clone()))
            .collect()
    }

    fn log(&mut self, line: String) {
        (self.log)(&line);
    }

    /// Attaches new devices and detaches vanished ones.
    pub fn rescan(&mut self) {
        let found = self.host.scan();
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
            self.detach(minor, "it disappeared");
        }
        let reshaped: Vec<u32> = self
            .devices
            .iter()
            .filter(|(_, a)| {
                self.host.facts(&a.name).is_ok_and(|now| {
                    now.size != a.facts.size || now.block_size != a.facts.block_size
                })
            })
            .map(|(minor, _)| *minor)
            .collect();
        for minor in reshaped {
            // Detached cleanly, it is attached again below with the new shape.
            self.detach(minor, "its size or block size changed; re-attaching");
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
            self.consider(device);
        }
    }

    /// Looks at a device not attached yet.
    fn consider(&mut self, device: FoundDevice) {
        let subtype = &self.options.config.tcmu.subtype;
        let Some(name) = TcmuUioName::parse(&device.uio_name).filter(|n| &n.subtype == subtype)
        else {
            // Not ours: another handler's, or not TCMU at all.
            self.ignored.insert(device.minor, device.uio_name);
            return;
        };
        match self.attach(&device, &name) {
            Ok(reactor) => {
                self.retrying.remove(&device.minor);
                let line = format!(
                    "attached {} (uio{}, bdev {}) to reactor {reactor}",
                    name.name, device.minor, name.cfg
                );
                self.log(line);
            }
            Err(Refusal::Retry(why)) => {
                if self.retrying.get(&device.minor) != Some(&why) {
                    let line = format!(
                        "cannot attach {} (uio{}) yet: {why}; will retry",
                        name.name, device.minor
                    );
                    self.log(line);
                    self.retrying.insert(device.minor, why);
                }
            }
            Err(Refusal::Refuse(why)) => {
                let line = format!(
                    "refusing {} (uio{}): {why}; the device is left alone",
                    name.name, device.minor
                );
                self.log(line);
                self.ignored.insert(device.minor, device.uio_name);
            }
        }
    }

    fn check(&mut self, name: &TcmuUioName) -> Result<(BdevRef, DeviceFacts), Refusal> {
        let config = &self.options.config;
        if let Err(e) = name.bdev() {
            return Err(Refusal::Refuse(e.to_string()));
        }
        let Some(bdev) = self.bdevs.get(&name.cfg).cloned() else {
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
        let facts = self
            .host
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

    fn state_file(&self, name: &TcmuUioName) -> Option<PathBuf> {
        self.options
            .state_dir
            .as_ref()
            .map(|dir| dir.join(format!("tcmu-{}-{}.state", name.hba, name.name)))
    }

    /// True if the last process that attached the device died without
    /// detaching it.
    fn needs_recovery(&self, name: &TcmuUioName) -> bool {
        let Some(path) = self.state_file(name) else {
            return false;
        };
        match read_state(&path) {
            Some((pid, clean)) => !clean && pid != std::process::id() && !process_alive(pid),
            None => false,
        }
    }

    fn attach(&mut self, device: &FoundDevice, name: &TcmuUioName) -> Result<usize, Refusal> {
        let (bdev, facts) = self.check(name)?;
        let recovering = self.needs_recovery(name);
        if recovering {
            let line = format!(
                "{}: the previous handler died while attached; resetting the ring (in-flight commands complete with BUSY and are retried)",
                name.name
            );
            self.log(line);
            self.host
                .recover(name)
                .map_err(|e| Refusal::Retry(format!("ring reset failed: {e}")))?;
        }
        let (region, doorbell) = match self.host.open(device) {
            Ok(opened) => opened,
            Err(OpenError::Busy) => {
                return Err(Refusal::Retry(
                    "another process has it open (is another handler running?)".into(),
                ))
            }
            Err(OpenError::Failed(e)) => return Err(Refusal::Retry(e)),
        };
        let reactor = self
            .options
            .config
            .pinned_reactor(&name.name)
            .unwrap_or_else(|| self.round_robin());

        let mut lun_config = LunConfig::for_bdev(bdev.as_ref());
        lun_config.num_blocks = facts.size / u64::from(facts.block_size);
        lun_config.serial = name.name.chars().take(32).collect();
        lun_config.lu_id = lu_id(name);
        lun_config.max_tasks = MAX_TASKS;
        let max_transfer = (u64::from(facts.max_sectors) * u64::from(facts.block_size))
            .clamp(u64::from(facts.block_size), MAX_TRANSFER_BYTES);
        lun_config.max_transfer_bytes = lun_config.max_transfer_bytes.min(max_transfer as u32);
        let depth = MAX_TASKS.next_power_of_two() as usize;
        let (port, end) = port_pair(depth).map_err(|e| Refusal::Refuse(e.to_string()))?;
        let lun = Lun::new(lun_config, port)
            .map_err(|e| Refusal::Refuse(format!("LUN configuration: {e}")))?;
        let tcmu = TcmuDevice::attach(
            region,
            doorbell,
            lun,
            TcmuDeviceConfig {
                name: format!("tcmu:{}", name.name),
                coalesce: self.options.config.tcmu.coalesce(),
                ..TcmuDeviceConfig::default()
            },
        )
        .map_err(|e| Refusal::Refuse(format!("cannot attach to its ring: {e}")))?;
        let stats = tcmu.stats();
        let latency = tcmu.latency();

        // The bdev poller of this reactor for this bdev (created on first use).
        let handle = self.bdev_poller(reactor, &name.cfg, &bdev)?;
        handle.attach(end);
        let poller = self.reactors[reactor]
            .add_poller(Box::new(tcmu))
            .map_err(|e| Refusal::Retry(format!("reactor: {e}")))?;

        let state_file = self.state_file(name);
        if let Some(path) = &state_file {
            if let Err(e) = write_state(path, false) {
                let line = format!("{}: cannot write {}: {e}", name.name, path.display());
                self.log(line);
            }
        }
        if recovering {
            if let Err(e) = self.host.unblock(name) {
                let line = format!("{}: cannot unblock after the ring reset: {e}", name.name);
                self.log(line);
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

    /// Detaches the device on UIO minor `minor`, draining it first.
    pub fn detach(&mut self, minor: u32, why: &str) {
        let Some(attached) = self.devices.remove(&minor) else {
            return;
        };
        let name = attached.name.name.clone();
        match self.reactors[attached.reactor].remove_poller(attached.poller) {
            Ok(removed) => {
                let drained = removed.drained;
                drop(removed);
                if let Some(path) = &attached.state_file {
                    if drained {
                        let _ = write_state(path, true);
                    }
                }
                self.log(format!(
                    "detached {name} (uio{minor}): {why}{}",
                    if drained {
                        ""
                    } else {
                        "; in-flight commands did not finish in time"
                    }
                ));
            }
            Err(e) => self.log(format!("detaching {name} (uio{minor}): {e}")),
        }
    }

    /// Statistics since the previous call.
    pub fn stats(&mut self) -> StatsReport {
        let now = Instant::now();
        let interval = now
            .duration_since(self.last_stats_at)
            .as_secs_f64()
            .max(1e-9);
        self.last_stats_at = now;
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
        for a in &mut self.scst_devices {
            let snap = a.stats.snapshot();
            let commands = snap.commands_completed - a.last.commands_completed;
            // One REPLY_AND_GET_MULTI carries a batch of replies: the
            // ioctls are the doorbells.
            let ioctls = snap.ioctls - a.last.ioctls;
            let bytes = snap.data_bytes - a.last.data_bytes;
            let latency = a.latency.as_ref().map(|l| l.take()).unwrap_or_default();
            devices.push(DeviceStats {
                name: a.name.clone(),
                kind: DeviceKind::Scst,
                hba: None,
                uio: None,
                bdev: a.bdev.clone(),
                reactor: a.reactor,
                commands,
                iops: commands as f64 / interval,
                bytes_per_sec: bytes as f64 / interval,
                doorbells: ioctls,
                doorbells_per_io: if commands == 0 {
                    0.0
                } else {
                    ioctls as f64 / commands as f64
                },
                latency_ns: latency.summary,
                commands_total: snap.commands_completed,
                received_total: snap.exec,
                malformed_total: snap.bad_pbufs + snap.bad_frees + snap.unknown_subcodes,
                busy_total: Some(snap.busy),
                sessions: Some(snap.sessions),
                fault: None,
            });
            a.last = snap;
        }
        let mut reactors = Vec::with_capacity(self.reactors.len());
        for (i, handle) in self.reactors.iter().enumerate() {
            let stats = handle.stats();
            reactors.push(ReactorLoad::between(&self.last_reactor_stats[i], &stats));
            self.last_reactor_stats[i] = stats;
        }
        StatsReport {
            time_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            interval_s: interval,
            devices,
            reactors,
        }
    }

    /// True once every reactor stopped (a signal stopped them).
    pub fn is_stopped(&self) -> bool {
        self.reactors.iter().all(ReactorHandle::is_finished)
    }

    /// Stops every reactor (draining every device), joins them and marks the
    /// devices clean. Returns true if everything drained.
    pub fn shutdown(mut self) -> bool {
        let mut drained = true;
        for handle in std::mem::take(&mut self.reactors) {
            match handle.shutdown() {
                Ok(report) => drained &= report.drained,
                Err(e) => {
                    drained = false;
                    (self.log)(&format!("reactor: {e}"));
                }
            }
        }
        for a in self.devices.values() {
            if let (Some(path), true) = (&a.state_file, drained) {
                let _ = write_state(path, true);
            }
        }
        drained
    }
}

/// Why a device was not attached.
#[derive(Debug)]
enum Refusal {
    /// Try again at the next rescan (maybe transient).
    Retry(String),
    /// Leave the device alone until it changes.
    Refuse(String),
}

impl Refusal {
    fn reason(self) -> String {
        match self {
            Refusal::Retry(why) | Refusal::Refuse(why) => why,
        }
    }
}
