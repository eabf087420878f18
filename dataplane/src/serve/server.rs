//! The server: bdevs, reactors, device attach and detach, crash recovery and
//! statistics.
//!
//! [`Server`] owns the [`Host`], the shared resources (bdevs, reactors,
//! bdev pollers: `resources.rs`) and the devices of each frontend
//! (`tcmu.rs`, `scst.rs`), and reports on them.
//!
//! # Lifecycle of a device
//! 1. Found by a rescan of the UIO devices (at start, every
//!    `rescan_interval_ms`, and at once when a netlink event says something
//!    changed). Devices of another subtype are not ours and are ignored.
//! 2. Checked: the bdev named by its `dev_config` exists (and could be made:
//!    see "Bdevs left out") and is not a child of a striped bdev; its block
//!    size equals the bdev's; its size fits the bdev. A device that fails a
//!    check is refused with one log line and left alone (it is looked at
//!    again only if it disappears and comes back).
//! 3. Taken over or reset: a device another process holds open (another
//!    handler, a second serve of the same subtype) is left alone and tried
//!    again at the next rescan; it is never opened, let alone reset.
//!    Otherwise it is opened (TCMU allows one opener, so from then on
//!    nobody else touches the ring) and its mailbox decides
//!    (`recovery.rs`): an idle ring (`cmd_head == cmd_tail`) is taken as it
//!    is; waiting entries are picked up as they are only after a clean
//!    detach recorded in `state_dir`; otherwise (a handler that crashed or
//!    whose drain timed out, no state directory, a lost one) the device is
//!    blocked, its ring reset (in-flight commands complete with BUSY, which
//!    the initiator retries) and unblocked after attach. No pid is read.
//! 4. Attached: a LUN over the bdev and a [`TcmuDevice`] on a reactor (pinned
//!    by configuration or round-robin), with a port to that reactor's bdev
//!    poller for the bdev (created on first use); see [`crate::stack`].
//! 5. Detached when it disappears: the device poller is removed from its
//!    reactor, which drains in-flight commands first (up to a deadline). A
//!    device whose size or block size changed is detached the same way and
//!    attached again with a LUN of its new shape.
//!
//! # Faults
//! A device whose ring cannot be walked any more ([`RingFault`]: a
//! `cmd_tail` moved by someone else, e.g. `action/reset_ring`; a bad
//! `len_op`; a `cmd_head` that moved backwards) stops touching the ring and
//! says so ([`SharedFault`]). [`heal`](Server::heal), called by the control
//! loop at every wake-up, logs the fault once with the device and the
//! reason, counts it (`faults_total`, and `fault` while it lasts, in the
//! statistics), detaches the device (draining its executor) and attaches it
//! again with its ring reset (block, `reset_ring`, attach, unblock):
//! `recoveries_total`. Attempts in a row are bounded, with back-off
//! ([`RecoveryPolicy`]); a device that keeps faulting is left blocked with
//! its fault in the statistics, and the other devices keep serving.
//!
//! SIGTERM/SIGINT stop every reactor, which drains every device; the state
//! files then say "clean" so the next start picks up waiting commands.
//!
//! # Huge pages
//! RAM bdevs are prefaulted and collapsed onto huge pages at start (see
//! `bdev::ram`); a collapse that failed is logged, and when any RAM bdev is
//! not wholly on huge pages one warning names them, their fractions and the
//! fix. Every statistics report reads the fractions again (`bdevs`).
//!
//! # Bdevs left out
//! A `file` bdev whose file or device cannot be used (missing without
//! `size`, not a regular file or block device, a size that is not a whole
//! number of blocks or not the configured one, read-only, O_DIRECT
//! refused, no io_uring), and an `nvme` bdev whose namespace cannot be
//! (missing, not an NVMe generic character device, no NVMe passthrough in
//! the kernel, no permission for it, an LBA format with metadata, write
//! protected), is logged with the bdev, the path and the problem and left
//! out, with any striped bdev over it; the server starts and
//! serves everything else. TCMU and SCST devices naming it are refused with
//! a line saying why, and the statistics list it with that reason
//! (`bdevs[].unavailable`). Only an invalid configuration (syntax, keys,
//! values, cross-references) stops `dataplane serve` before it starts.
//!
//! # SCST devices
//! Each `[[scst]]` entry is registered with scst_user at
//! [`Server::start`] (see `scst.rs`) and placed on its reactor like a
//! TCMU device (configured `reactor`, else the same round-robin), sharing
//! that reactor's bdev poller for its bdev. A device whose bdev was left
//! out (or whose `block_size` differs from a file or nvme bdev's device) is not
//! registered, with a line saying why; one that cannot be registered makes
//! the start fail. They stay until shutdown, which drains
//! them like the TCMU devices: the device stops asking scst_user for new
//! commands, answers every command it received, and only then is its fd
//! closed (which unregisters it).
//!
//! [`TcmuDevice`]: crate::tcmu::TcmuDevice
//! [`RingFault`]: crate::tcmu::RingFault
//! [`SharedFault`]: crate::frontend::SharedFault

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use reactor::stats::ReactorLoad;
use reactor::{ReactorHandle, ReactorStats};

use super::config::{BdevConfig, CompletionAffinityMode, ScstConfig, ServeConfig};
use super::error::{BdevChangeError, ScstChangeError, ServeError};
use super::handoff::{HandoffError, HandoffSink, ReceivedDevice};
use super::heal::RecoveryPolicy;
use super::host::Host;
use super::metrics::MetricsCatalog;
use super::reload::{self, ReloadError, ReloadReport};
use super::resources::Resources;
use super::scst::ScstDevices;
use super::stats::{huge_page_warning, DeviceTotals, StatsReport};
use super::tcmu::affinity::CompletionAffinity;
use super::tcmu::TcmuDevices;

/// Options of a server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The validated configuration.
    pub config: ServeConfig,
    /// Directory of per-device state files, which record clean detaches;
    /// `None`: none is recorded, so a ring found with waiting entries is
    /// always reset.
    pub state_dir: Option<PathBuf>,
}

/// The server. See the module docs.
pub struct Server<H: Host> {
    options: ServeOptions,
    host: H,
    resources: Resources,
    tcmu: TcmuDevices,
    scst: ScstDevices,
    /// Reactor counters at the previous statistics report.
    last_reactor_stats: Vec<ReactorStats>,
    last_stats_at: Instant,
    log: Box<dyn FnMut(&str) + Send>,
    /// Where the devices, reactors and bdevs are shared with the metrics
    /// endpoint, if one runs.
    metrics: Option<Arc<MetricsCatalog>>,
    /// The device tables' [`changes`](TcmuDevices::changes) when the
    /// catalog was last published.
    metrics_published: (u64, u64),
    /// The configuration file's content as last applied (at start or by a
    /// reload); the running configuration also has what the control
    /// socket created.
    file_config: ServeConfig,
    /// tcm_loop's completion CPU for serve's LUNs, switched with their
    /// load (`[tcmu] completion_affinity = "auto"`, as at start).
    affinity: Option<CompletionAffinity>,
}

impl<H: Host> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("reactors", &self.resources.reactors().len())
            .field(
                "devices",
                &self
                    .tcmu
                    .attached()
                    .iter()
                    .map(|(m, _)| *m)
                    .collect::<Vec<_>>(),
            )
            .field(
                "scst_devices",
                &self
                    .scst
                    .placed()
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
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
        Self::start_taking_over(options, host, Vec::new(), log)
    }

    /// [`start`](Self::start), with the `[[scst]]` devices a previous
    /// server handed over (see [`super::handoff`]): those are built on
    /// their fds instead of being registered.
    pub fn start_taking_over(
        options: ServeOptions,
        host: H,
        received: Vec<ReceivedDevice>,
        log: Box<dyn FnMut(&str) + Send>,
    ) -> Result<Self, ServeError> {
        let mut log = log;
        let resources = Resources::start(&options.config, &mut *log)?;
        if let Some(warning) = ram_huge_page_warning(&options.config, &resources) {
            log(&warning);
        }
        if let Some(dir) = &options.state_dir {
            if let Err(error) = std::fs::create_dir_all(dir) {
                return Err(ServeError::StateDir {
                    path: dir.clone(),
                    error,
                });
            }
        }
        let last_reactor_stats = resources
            .reactors()
            .iter()
            .map(ReactorHandle::stats)
            .collect();
        let affinity = match options.config.tcmu.completion_affinity {
            CompletionAffinityMode::Auto => host.loopback_dir().map(CompletionAffinity::new),
            CompletionAffinityMode::Kernel => None,
        };
        let mut server = Self {
            tcmu: TcmuDevices::new(options.state_dir.clone()),
            file_config: options.config.clone(),
            affinity,
            options,
            host,
            resources,
            scst: ScstDevices::default(),
            last_reactor_stats,
            last_stats_at: Instant::now(),
            log,
            metrics: None,
            metrics_published: (0, 0),
        };
        // On error the server is dropped: its reactors stop, draining the
        // SCST devices already attached, whose fds then close.
        server.scst.start(
            &mut server.host,
            &mut server.resources,
            &server.options.config,
            received,
            &mut *server.log,
        )?;
        Ok(server)
    }

    /// Logs one line through the server's log.
    pub fn log(&mut self, line: &str) {
        (self.log)(line);
    }

    /// Hands the `[[scst]]` devices to `sink` (a successor on the
    /// hand-off socket, or a service manager's fd store: see
    /// [`super::handoff`]); returns their names. Afterwards the server
    /// still serves its TCMU devices until it is shut down. On an error the
    /// SCST devices serve on here.
    pub fn hand_off(&mut self, sink: &mut dyn HandoffSink) -> Result<Vec<String>, HandoffError> {
        self.scst.hand_off(
            &mut self.host,
            &mut self.resources,
            &self.options.config,
            sink,
            &mut *self.log,
        )
    }

    /// The `[[scst]]` devices, with their reactors.
    pub fn scst_devices(&self) -> Vec<(String, usize)> {
        self.scst.placed()
    }

    /// The configured bdevs left out at start (a file or device that could
    /// not be opened), sorted by name.
    pub fn unavailable_bdevs(&self) -> Vec<String> {
        self.resources.unavailable_names()
    }

    /// The running configuration: the file's, with the bdevs created and
    /// deleted since.
    pub fn config(&self) -> &ServeConfig {
        &self.options.config
    }

    /// The names of the bdevs that serve (made, not left out), sorted.
    pub fn bdev_names(&self) -> Vec<String> {
        self.resources.names()
    }

    /// The bdev named `name`, if it was made.
    pub fn bdev(&self, name: &str) -> Option<&bdev::BdevRef> {
        self.resources.bdev(name)
    }

    /// What stands on bdev `name`: `"tcmu <device>"`, `"scst <device>"`
    /// and `"bdev <name>"` (a striped or fault bdev over it), in that
    /// order.
    pub fn users_of(&self, name: &str) -> Vec<String> {
        self.users(name).describe()
    }

    /// What stands on bdev `name`, by kind.
    fn users(&self, name: &str) -> BdevUsers {
        let scst = self.options.config.scst.iter();
        let over = self.options.config.bdevs.iter().filter(|b| match b {
            BdevConfig::Striped { children, .. } => children.iter().any(|c| c == name),
            BdevConfig::Fault { base, .. } => base == name,
            _ => false,
        });
        BdevUsers {
            tcmu: self.tcmu.uses_bdev(name),
            scst: scst
                .filter(|s| s.bdev == name)
                .map(|s| s.name.clone())
                .collect(),
            bdevs: over.map(|b| b.name().to_owned()).collect(),
        }
    }

    /// Creates bdev `b` (any kind but `fault`) while serving and adds
    /// it to the running configuration. Refused if the name is taken, if
    /// the configuration with it is invalid (the error names the key), or,
    /// for a striped bdev, if a device stands on one of its children (a
    /// child serves only through its parent); a `file` or `nvme` bdev whose
    /// file or device cannot be used is refused, not left out. TCMU devices
    /// refused so far
    /// are looked at again at the next rescan: the bdev they name may be
    /// this one.
    pub fn create_bdev(&mut self, b: BdevConfig) -> Result<(), BdevChangeError> {
        let name = b.name().to_string();
        if self.options.config.bdev(&name).is_some() {
            return Err(BdevChangeError::Exists(name));
        }
        if let BdevConfig::Striped { children, .. } = &b {
            for child in children {
                let users = self.users_of(child);
                if !users.is_empty() {
                    return Err(BdevChangeError::InUse {
                        name: child.clone(),
                        users,
                    });
                }
            }
        }
        let mut config = self.options.config.clone();
        config.bdevs.push(b.clone());
        let cores = config.reactors.cores.clone();
        config.validate(&cores).map_err(BdevChangeError::Invalid)?;
        self.resources.add_bdev(&b, &mut *self.log)?;
        self.options.config = config;
        self.tcmu.forget_refused();
        self.publish_metrics();
        (self.log)(&format!("created {b}"));
        Ok(())
    }

    /// Registers the `[[scst]]` device of `config` while serving (the
    /// control socket's `scst_device_add`) and adds it to the running
    /// configuration: checked like an entry of the file, then registered,
    /// placed and exported as at start.
    pub fn add_scst_device(&mut self, config: ScstConfig) -> Result<(), ScstChangeError> {
        if self
            .options
            .config
            .scst
            .iter()
            .any(|c| c.name == config.name)
        {
            return Err(ScstChangeError::Exists(config.name));
        }
        let mut running = self.options.config.clone();
        running.scst.push(config.clone());
        let cores = running.reactors.cores.clone();
        running.validate(&cores).map_err(ScstChangeError::Invalid)?;
        self.scst
            .add(
                &mut self.host,
                &mut self.resources,
                &running,
                &config,
                &mut *self.log,
            )
            .map_err(|error| ScstChangeError::Start {
                device: config.name.clone(),
                error,
            })?;
        self.options.config = running;
        self.publish_metrics();
        Ok(())
    }

    /// Unregisters `[[scst]]` device `name` while serving (it drains
    /// first; SCST removes its LUNs) and takes it out of the running
    /// configuration.
    pub fn remove_scst_device(&mut self, name: &str) -> Result<(), ScstChangeError> {
        if !self.options.config.scst.iter().any(|c| c.name == name) {
            return Err(ScstChangeError::NoSuchDevice(name.to_owned()));
        }
        self.scst.remove(&mut self.resources, name, &mut *self.log);
        self.options.config.scst.retain(|c| c.name != name);
        self.publish_metrics();
        Ok(())
    }

    /// Applies a new configuration file while serving (SIGHUP): what
    /// changed from the file as last applied ([`reload::plan`]), leaving
    /// alone what the control socket created and every device whose
    /// definition and bdev did not change. Refused, with nothing applied,
    /// if `[reactors]` changed, if a bdev to remove or rebuild is used by
    /// something that stays, or if a new bdev's name is taken; a step that
    /// fails after that (a registration, a bdev that cannot be made) is
    /// logged and reported, and the others are carried out.
    pub fn reload(&mut self, new_file: ServeConfig) -> Result<ReloadReport, ReloadError> {
        let plan = reload::plan(&self.file_config, &new_file)?;
        for name in &plan.bdevs_removed {
            // Those the reload removes as well do not count.
            let mut users = self.users(name);
            users.scst.retain(|d| !plan.scst_removed.contains(d));
            users.bdevs.retain(|b| !plan.bdevs_removed.contains(b));
            let users = users.describe();
            if !users.is_empty() {
                return Err(ReloadError::InUse {
                    bdev: name.clone(),
                    users,
                });
            }
        }
        for b in &plan.bdevs_added {
            let taken = self.options.config.bdev(b.name()).is_some()
                && !plan.bdevs_removed.iter().any(|r| r == b.name());
            if taken {
                return Err(ReloadError::Exists(b.name().to_owned()));
            }
        }
        for c in &plan.scst_added {
            let taken = self.options.config.scst.iter().any(|k| k.name == c.name)
                && !plan.scst_removed.contains(&c.name);
            if taken {
                return Err(ReloadError::DeviceExists(c.name.clone()));
            }
        }
        (self.log)(&format!("reloading the configuration: {}", plan.summary()));
        let mut failed = Vec::new();
        for name in &plan.scst_removed {
            self.scst.remove(&mut self.resources, name, &mut *self.log);
            self.options.config.scst.retain(|c| &c.name != name);
        }
        for name in &plan.bdevs_removed {
            if let Err(e) = self.delete_bdev(name) {
                failed.push(format!("removing bdev {name}: {e}"));
            }
        }
        for b in &plan.bdevs_added {
            if let Err(e) = self.create_bdev(b.clone()) {
                failed.push(format!("making bdev {}: {e}", b.name()));
            }
        }
        for c in &plan.scst_added {
            self.options.config.scst.push(c.clone());
            if let Err(e) = self.scst.add(
                &mut self.host,
                &mut self.resources,
                &self.options.config,
                c,
                &mut *self.log,
            ) {
                self.options.config.scst.retain(|k| k.name != c.name);
                failed.push(format!("registering SCST device {}: {e}", c.name));
            }
        }
        self.options.config.tcmu = new_file.tcmu.clone();
        self.file_config = new_file;
        self.publish_metrics();
        for f in &failed {
            (self.log)(&format!("reload: {f}"));
        }
        Ok(ReloadReport { plan, failed })
    }

    /// Deletes bdev `name` (made or left out) while serving and takes it
    /// out of the running configuration; refused while a device or
    /// another bdev stands on it ([`users_of`](Self::users_of)).
    pub fn delete_bdev(&mut self, name: &str) -> Result<(), BdevChangeError> {
        let Some(i) = self
            .options
            .config
            .bdevs
            .iter()
            .position(|b| b.name() == name)
        else {
            return Err(BdevChangeError::NoSuchBdev(name.to_string()));
        };
        let users = self.users_of(name);
        if !users.is_empty() {
            return Err(BdevChangeError::InUse {
                name: name.to_string(),
                users,
            });
        }
        self.resources.remove_bdev(name, &mut *self.log);
        let b = self.options.config.bdevs.remove(i);
        self.publish_metrics();
        (self.log)(&format!("deleted {b}"));
        Ok(())
    }

    /// Every device's counters since attach (TCMU by minor, then SCST in
    /// configuration order). Reads counters only: the interval figures of
    /// [`stats`](Self::stats) are not disturbed.
    pub fn device_totals(&self) -> Vec<DeviceTotals> {
        let mut devices = self.tcmu.totals();
        devices.extend(self.scst.totals());
        devices
    }

    /// The reactors (for signal handling).
    pub fn reactors(&self) -> &[ReactorHandle] {
        self.resources.reactors()
    }

    /// Attached devices by UIO minor.
    pub fn attached(&self) -> Vec<(u32, String)> {
        self.tcmu.attached()
    }

    /// Attaches new devices and detaches vanished ones.
    pub fn rescan(&mut self) {
        self.tcmu.rescan(
            &mut self.host,
            &mut self.resources,
            &self.options.config,
            &mut *self.log,
        );
        self.publish_metrics_if_changed();
    }

    /// Shares the reactors, bdevs and devices with `catalog` (a metrics
    /// endpoint's) from now on: the devices are published again whenever
    /// a [`rescan`](Self::rescan) or [`heal`](Self::heal) attached,
    /// detached, placed or removed one, and after every change made over
    /// the control socket or by a reload.
    pub fn share_metrics(&mut self, catalog: Arc<MetricsCatalog>) {
        catalog.set_reactors(
            self.resources
                .reactors()
                .iter()
                .map(ReactorHandle::stats_reader)
                .collect(),
        );
        self.metrics = Some(catalog);
        self.publish_metrics();
    }

    /// Publishes the bdevs and the devices on their reactors to the
    /// metrics catalog, if there is one (a few `Arc` clones: control
    /// plane).
    fn publish_metrics(&mut self) {
        let Some(catalog) = &self.metrics else {
            return;
        };
        self.metrics_published = (self.tcmu.changes(), self.scst.changes());
        catalog.set_bdevs(self.resources.metric_bdevs());
        let mut devices = self.tcmu.metric_sources();
        devices.extend(self.scst.metric_sources());
        catalog.set_devices(devices);
    }

    /// [`publish_metrics`](Self::publish_metrics) if a device was attached,
    /// detached, placed or removed since the last time (the control loop
    /// rescans and heals at every wake-up; most change nothing).
    fn publish_metrics_if_changed(&mut self) {
        if self.metrics_published != (self.tcmu.changes(), self.scst.changes()) {
            self.publish_metrics();
        }
    }

    /// Recovers the devices that faulted and whose back-off expired (see
    /// "Faults" in the module docs). Cheap when nothing faulted; the
    /// control loop calls it at every wake-up.
    pub fn heal(&mut self) {
        let now = Instant::now();
        self.tcmu.heal(
            &mut self.host,
            &mut self.resources,
            &self.options.config,
            now,
            &mut *self.log,
        );
        self.scst.heal(
            &mut self.host,
            &mut self.resources,
            &self.options.config,
            now,
            &mut *self.log,
        );
        self.publish_metrics_if_changed();
    }

    /// How faulted devices are recovered (default:
    /// [`RecoveryPolicy::default`]).
    pub fn set_recovery_policy(&mut self, policy: RecoveryPolicy) {
        self.tcmu.set_policy(policy);
        self.scst.set_policy(policy);
    }

    /// Detaches the device on UIO minor `minor`, draining it first.
    pub fn detach(&mut self, minor: u32, why: &str) {
        self.tcmu
            .detach(&self.resources, minor, why, &mut *self.log);
    }

    /// Statistics since the previous call.
    pub fn stats(&mut self) -> StatsReport {
        let now = Instant::now();
        let interval = now
            .duration_since(self.last_stats_at)
            .as_secs_f64()
            .max(1e-9);
        self.last_stats_at = now;
        let mut devices = self.tcmu.stats(interval);
        if let Some(affinity) = &self.affinity {
            for d in &mut devices {
                let Some(hba) = d.device.hba else { continue };
                if let Some(cpu) = affinity.of_device(hba, &d.device.name) {
                    d.completion_cpu = Some(cpu.name());
                    d.completion_switches_total = Some(cpu.switches);
                }
            }
        }
        devices.extend(self.scst.stats(interval));
        let reactors = self
            .resources
            .reactors()
            .iter()
            .zip(&mut self.last_reactor_stats)
            .map(|(handle, last)| {
                let stats = handle.stats();
                let load = ReactorLoad::between(last, &stats);
                *last = stats;
                load
            })
            .collect();
        StatsReport {
            time_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            interval_s: interval,
            devices,
            reactors,
            bdevs: self.resources.bdev_stats(),
        }
    }

    /// True once every reactor stopped (a signal stopped them).
    pub fn is_stopped(&self) -> bool {
        self.resources.is_stopped()
    }

    /// Switches tcm_loop's completion CPU for serve's LUNs with their load
    /// (see `serve::tcmu::affinity`). The control loop calls it at every
    /// wake-up; it reads one gauge per device, scans configfs once a
    /// second and writes it only when a WWN switches.
    pub fn follow_load(&mut self) {
        let Some(affinity) = self.affinity.as_mut() else {
            return;
        };
        let tcmu = &self.tcmu;
        for line in affinity.tick(Instant::now(), |hba, name| tcmu.load(hba, name)) {
            (self.log)(&line);
        }
    }

    /// Stops every reactor (draining every device), joins them and marks the
    /// devices clean. Returns true if everything drained. The completion
    /// CPUs serve switched go back to the kernel's default first.
    pub fn shutdown(mut self) -> bool {
        if let Some(affinity) = self.affinity.as_mut() {
            for line in affinity.restore() {
                (self.log)(&line);
            }
        }
        let drained = self.resources.shutdown(&mut *self.log);
        if drained {
            self.tcmu.mark_clean();
        }
        drained
    }
}

/// The warning for the RAM bdevs of `config` not wholly on huge pages right
/// after they were made (see [`huge_page_warning`]), if any.
fn ram_huge_page_warning(config: &ServeConfig, resources: &Resources) -> Option<String> {
    bdev::ram::one_smaps_read(|| ram_huge_page_warning_now(config, resources))
}

fn ram_huge_page_warning_now(config: &ServeConfig, resources: &Resources) -> Option<String> {
    let mut short = Vec::new();
    let mut bytes = 0;
    for b in &config.bdevs {
        let BdevConfig::Ram { name, size, .. } = b else {
            continue;
        };
        let Some(fraction) = resources.bdev(name).and_then(|r| r.huge_page_fraction()) else {
            continue; // huge pages do not apply to it
        };
        bytes += size.0.next_multiple_of(bdev::ram::HUGE_PAGE_SIZE as u64);
        if fraction < 1.0 {
            short.push((name.clone(), fraction));
        }
    }
    huge_page_warning(&short, bytes)
}

/// What stands on a bdev, by kind (see [`Server::users_of`]).
struct BdevUsers {
    tcmu: Vec<String>,
    scst: Vec<String>,
    bdevs: Vec<String>,
}

impl BdevUsers {
    /// `"tcmu <device>"`, `"scst <device>"`, `"bdev <name>"`, in that order.
    fn describe(self) -> Vec<String> {
        let tcmu = self.tcmu.into_iter().map(|d| format!("tcmu {d}"));
        let scst = self.scst.into_iter().map(|d| format!("scst {d}"));
        let bdevs = self.bdevs.into_iter().map(|b| format!("bdev {b}"));
        tcmu.chain(scst).chain(bdevs).collect()
    }
}
