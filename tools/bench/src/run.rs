//! `dataplane bench`: the full dataplane against the built-in kernel simulator.
//!
//! For each device: a bdev (`ram`, `null` or `striped` over RAM children), a
//! [`BdevPoller`] running its channel, a SCSI [`Lun`] joined to it by an SPSC
//! [`port`](crate::port), a frontend device serving a simulated kernel (a
//! [`TcmuDevice`] on a TCMU ring, or an [`ScstDevice`] on scst_user), and a
//! [`Job`] that drives the simulated kernel like fio drives a LUN. Devices
//! are spread round-robin over the reactors (one pinned thread per core in
//! `cores`); the simulated kernel and initiator run on the calling thread,
//! pinned to `sim_core`. Everything between the ring and the bdev is the
//! production data path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bdev::null::NullBdev;
use bdev::ram::RamBdev;
use bdev::striped::StripedBdev;
use bdev::{BdevRef, Geometry};
use reactor::stats::ReactorLoad;
use reactor::{IdlePolicy, Reactor, ReactorConfig, ReactorHandle, ReactorStats};

use crate::initiator::{Initiator, Job, JobError, JobSnapshot, Pattern, VerifyModel, Workload};
use dataplane::latency::Latencies;
use dataplane::lun::{Lun, LunConfig, LunError};
use dataplane::port::{port_pair, BdevPoller};
use dataplane::scst::device::{ScstDevice, ScstDeviceConfig};
use dataplane::scst::pool::{BufferPool, PoolConfig};
use dataplane::scst::register::{register_device, RegisterSpec};
use dataplane::tcmu::{TcmuDevice, TcmuDeviceConfig, TcmuError};
use sim::scst::{ScstSim, ScstSimConfig};
use sim::tcmu::{SimConfig, TcmuSim};

use crate::frontends::{BenchInitiator, ScstInitiator, TcmuInitiator};
use crate::reference::{ReferenceBuffers, ReferenceConfig};
use crate::report::{BenchReport, CompareReport, ReferenceReport};

/// Kernel interface the bench simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// LIO's TCMU command ring.
    Tcmu,
    /// SCST's scst_user.
    Scst,
}

impl Frontend {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Frontend::Tcmu => "tcmu",
            Frontend::Scst => "scst",
        }
    }

    /// The other frontend (for `--compare`).
    pub fn other(self) -> Self {
        match self {
            Frontend::Tcmu => Frontend::Scst,
            Frontend::Scst => Frontend::Tcmu,
        }
    }
}

/// Block device behind each LUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BdevKind {
    /// Anonymous memory.
    Ram,
    /// Completes without touching data.
    Null,
    /// RAID0 over `width` RAM children with a `chunk`-byte strip.
    Striped {
        /// Number of children.
        width: u32,
        /// Strip size in bytes (a power of two, a multiple of the block size).
        chunk: u64,
    },
}

impl BdevKind {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            BdevKind::Ram => "ram",
            BdevKind::Null => "null",
            BdevKind::Striped { .. } => "striped",
        }
    }
}

/// Everything `dataplane bench` needs to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Kernel interface.
    pub frontend: Frontend,
    /// Bdev type.
    pub bdev: BdevKind,
    /// Bytes per device.
    pub size: u64,
    /// Logical block size of the devices.
    pub block_size: u32,
    /// Access pattern.
    pub pattern: Pattern,
    /// Percent reads for randrw.
    pub rwmix_read: u32,
    /// Bytes per I/O.
    pub io_size: u64,
    /// I/Os in flight per device.
    pub iodepth: u32,
    /// Measured time.
    pub runtime: Duration,
    /// Warm-up before measuring.
    pub ramp: Duration,
    /// Reactor cores; empty = the last available core.
    pub cores: Vec<usize>,
    /// Core of the simulated kernel; `None` = first core without a reactor.
    pub sim_core: Option<usize>,
    /// Devices; `None` = one per reactor.
    pub devices: Option<usize>,
    /// Reactor idle policy.
    pub idle: IdlePolicy,
    /// Check data with per-block checksums.
    pub verify: bool,
    /// Also run the reference copy loop (before and after the run).
    pub reference: bool,
    /// Measure the platform's own stalls on the bench's CPUs first.
    pub jitter: bool,
    /// Also run the other frontend with the same settings, in the same
    /// process, and report the ratio.
    pub compare: bool,
    /// Seed for offsets and data.
    pub seed: u64,
    /// Simulated TCMU ring size including the 128-byte mailbox.
    pub ring_size: u64,
    /// Simulated TCMU data area; `None` = automatic.
    pub data_area: Option<u64>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            frontend: Frontend::Tcmu,
            bdev: BdevKind::Ram,
            size: 1 << 30,
            block_size: 4096,
            pattern: Pattern::RandRead,
            rwmix_read: 50,
            io_size: 4096,
            iodepth: 128,
            runtime: Duration::from_secs(10),
            ramp: Duration::from_secs(1),
            cores: Vec::new(),
            sim_core: None,
            devices: None,
            idle: IdlePolicy::Busy,
            verify: false,
            reference: false,
            jitter: false,
            compare: false,
            seed: 1,
            ring_size: 8 << 20,
            data_area: None,
        }
    }
}

/// One progress sample (every second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Time since the start of the run (ramp included).
    pub elapsed: Duration,
    /// True while warming up.
    pub ramping: bool,
    /// IOPS over the last interval.
    pub iops: f64,
    /// Bytes per second over the last interval.
    pub bytes_per_sec: f64,
    /// p99 latency over the last interval.
    pub p99_ns: u64,
    /// Errors so far (in the measured window).
    pub errors: u64,
    /// Verify mismatches so far (in the measured window).
    pub verify_mismatches: u64,
}

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag or combination of flags is invalid; the message names it.
    #[error("{0}")]
    Config(String),
    /// A bdev could not be created.
    #[error("bdev: {0}")]
    Bdev(bdev::Error),
    /// A reactor could not be started.
    #[error("{0}")]
    Reactor(reactor::Error),
    /// The logical unit rejected its configuration.
    #[error("LUN: {0}")]
    Lun(LunError),
    /// The TCMU simulator or device failed.
    #[error("TCMU: {0}")]
    Tcmu(TcmuError),
    /// The SCST simulator or device failed.
    #[error("SCST: {0}")]
    Scst(String),
    /// The workload failed.
    #[error("workload: {0}")]
    Job(JobError),
}

// The wrapped errors are part of the message, not a `source`: a source would
// print the same words twice in an error chain.
macro_rules! bench_error_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for BenchError {
            fn from(e: $t) -> Self {
                BenchError::$v(e)
            }
        }
    )*};
}
bench_error_from!(bdev::Error => Bdev, reactor::Error => Reactor, LunError => Lun, TcmuError => Tcmu, JobError => Job);

/// The calling thread's CPU affinity, restored on drop. The bench pins its
/// thread to the simulator's CPU; [`reactor::available_cores`] (and so
/// reactor placement) reads the calling thread's affinity, which must be the
/// original one when reactors are spawned again (`--compare`).
struct AffinityGuard(libc::cpu_set_t);

impl AffinityGuard {
    fn save() -> Self {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
        // writes at most sizeof(cpu_set_t) bytes into it for this thread (0).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            Self(set)
        }
    }

    fn restore(&self) {
        // SAFETY: passes a valid cpu_set_t of the right size for this thread.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0);
        }
    }
}

impl Drop for AffinityGuard {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The largest transfer the bench's LUNs accept.
pub const MAX_IO_BYTES: u64 = 8 << 20;
/// Most requests in flight between one LUN and its bdev channel.
const PORT_DEPTH_MIN: usize = 256;

/// Validates a configuration and resolves the placement: (reactor cores,
/// simulator core, number of devices).
fn placement(config: &BenchConfig) -> Result<(Vec<usize>, usize, usize), BenchError> {
    let available = reactor::available_cores();
    let Some(&last) = available.last() else {
        return Err(BenchError::Config(
            "no CPU is available to this process".into(),
        ));
    };
    let cores = if config.cores.is_empty() {
        vec![last]
    } else {
        config.cores.clone()
    };
    for core in &cores {
        if !available.contains(core) {
            return Err(BenchError::Config(format!(
                "--cores: CPU {core} is not available (available: {available:?})"
            )));
        }
    }
    let sim_core = match config.sim_core {
        Some(core) if !available.contains(&core) => {
            return Err(BenchError::Config(format!(
                "--sim-core: CPU {core} is not available (available: {available:?})"
            )))
        }
        Some(core) => core,
        None => available
            .iter()
            .copied()
            .find(|c| !cores.contains(c))
            .unwrap_or(available[0]),
    };
    let devices = config.devices.unwrap_or(cores.len());
    if devices == 0 {
        return Err(BenchError::Config("--devices must be at least 1".into()));
    }
    Ok((cores, sim_core, devices))
}

fn check_config(config: &BenchConfig) -> Result<(), BenchError> {
    let bad = |msg: String| Err(BenchError::Config(msg));
    if config.size == 0 {
        return bad("--size must be greater than zero".into());
    }
    if config.block_size < 512 || !config.block_size.is_power_of_two() {
        return bad(format!(
            "--block-size {} is not a power of two of at least 512",
            config.block_size
        ));
    }
    if !config.size.is_multiple_of(u64::from(config.block_size)) {
        return bad(format!(
            "--size {} is not a multiple of the block size {}",
            config.size, config.block_size
        ));
    }
    if config.verify && config.bdev == BdevKind::Null {
        return bad("--verify needs a bdev that stores data (ram or striped), not null".into());
    }
    if let BdevKind::Striped { width, chunk } = config.bdev {
        if width == 0 {
            return bad("--stripe-width must be at least 1".into());
        }
        if chunk < u64::from(config.block_size) || !chunk.is_power_of_two() {
            return bad(format!(
                "--chunk {chunk} is not a power of two of at least the block size {}",
                config.block_size
            ));
        }
        let per_child = config.size / u64::from(width);
        if per_child < chunk || !config.size.is_multiple_of(u64::from(width) * chunk) {
            return bad(format!(
                "--size {} is not a whole number of stripes ({width} x {chunk} bytes)",
                config.size
            ));
        }
    }
    if config.ring_size < 64 << 10
        || config.ring_size > 256 << 20
        || !config.ring_size.is_multiple_of(8)
    {
        return bad(format!(
            "--ring-size {} must be a multiple of 8 between 64 KiB and 256 MiB",
            config.ring_size
        ));
    }
    Ok(())
}

fn make_bdev(config: &BenchConfig, index: usize) -> Result<BdevRef, BenchError> {
    let blocks = config.size / u64::from(config.block_size);
    let name = format!("{}{index}", config.bdev.name());
    Ok(match config.bdev {
        BdevKind::Null => Arc::new(NullBdev::new(name, config.block_size, blocks)?),
        BdevKind::Ram => {
            let ram = RamBdev::new(name, config.block_size, blocks)?;
            ram.prefault();
            Arc::new(ram)
        }
        BdevKind::Striped { width, chunk } => {
            let child_blocks = blocks / u64::from(width);
            let children = (0..width)
                .map(|c| {
                    let ram = RamBdev::new(format!("{name}.{c}"), config.block_size, child_blocks)?;
                    ram.prefault();
                    Ok(Arc::new(ram) as BdevRef)
                })
                .collect::<Result<Vec<_>, bdev::Error>>()?;
            let chunk_blocks = (chunk / u64::from(config.block_size)) as u32;
            Arc::new(StripedBdev::new(name, children, chunk_blocks)?)
        }
    })
}

/// The data area the simulator gets: room for two full queues of I/O.
fn data_area_size(config: &BenchConfig) -> usize {
    let need = 2 * u64::from(config.iodepth) * config.io_size;
    let size = config.data_area.unwrap_or_else(|| need.max(64 << 20));
    size.next_multiple_of(4096) as usize
}

/// The initiator's side of one device (the rest runs on a reactor).
struct DeviceParts {
    job: Job<BenchInitiator>,
}

/// Builds one device for `frontend`: bdev, bdev poller, LUN and frontend
/// device (pushed to `pollers`), and the job that drives it.
fn build_device(
    config: &BenchConfig,
    frontend: Frontend,
    index: usize,
    pollers: &mut Vec<Box<dyn reactor::Poller>>,
) -> Result<DeviceParts, BenchError> {
    let bdev = make_bdev(config, index)?;
    let geometry: Geometry = bdev.geometry();
    let max_tasks = config.iodepth.next_power_of_two().max(256);
    let port_depth = (max_tasks as usize).max(PORT_DEPTH_MIN);
    let channel = bdev.open_channel(port_depth)?;
    let (port, end) = port_pair(port_depth)
        .map_err(|e| BenchError::Config(format!("port depth {port_depth}: {e}")))?;
    let mut bdev_poller = BdevPoller::new(format!("bdev:{}", bdev.name()), channel, 256);
    bdev_poller
        .attach(end)
        .map_err(|_| BenchError::Config("too many ports on one bdev poller".into()))?;

    let mut lun_config = LunConfig::for_bdev(bdev.as_ref());
    lun_config.serial = format!("bench{index:04}");
    lun_config.lu_id = 0x1000 + index as u64;
    lun_config.max_tasks = max_tasks;
    lun_config.max_transfer_bytes = MAX_IO_BYTES as u32;
    let lun = Lun::new(lun_config, port)?;

    let initiator = match frontend {
        Frontend::Tcmu => {
            let sim = TcmuSim::new(SimConfig {
                cmdr_size: (config.ring_size - 128) as u32,
                data_area_size: data_area_size(config),
                ..SimConfig::default()
            })?;
            let (region, doorbell) = sim.device_endpoint()?;
            let device = TcmuDevice::attach(
                region,
                doorbell,
                lun,
                TcmuDeviceConfig {
                    name: format!("tcmu:dev{index}"),
                    // The reactor registers wait fds edge-triggered, so an
                    // unread notification never keeps it awake.
                    ..TcmuDeviceConfig::default()
                },
            )?;
            pollers.push(Box::new(device));
            BenchInitiator::Tcmu(Box::new(TcmuInitiator::new(sim)))
        }
        Frontend::Scst => {
            let in_flight_bytes = 2 * u64::from(config.iodepth) * config.io_size;
            let sim_config = ScstSimConfig {
                max_cmds: (config.iodepth as usize * 2).max(1024),
                max_transfer_bytes: MAX_IO_BYTES as usize,
                // The kernel's SGV cache keeps the buffers of finished
                // commands for reuse: room for two full queues.
                sgv_cache_bytes: (in_flight_bytes as usize).max(64 << 20),
                ..ScstSimConfig::default()
            };
            let version = sim_config.version.clone();
            let (mut driver, sim) =
                ScstSim::new(sim_config).map_err(|e| BenchError::Scst(e.to_string()))?;
            let mut spec = RegisterSpec::new(format!("bench{index}"), geometry.block_size);
            spec.version = Some(version);
            register_device(&mut driver, &spec).map_err(|e| BenchError::Scst(e.to_string()))?;
            // SAFETY: the driver goes into an `ScstDevice` below, which
            // hands the kernel only buffers of its pool, never touches one
            // the kernel holds (the pool tracks them until ON_FREE_CMD or
            // ON_CACHED_MEM_FREE), and closes the driver before it unmaps
            // the pool (or leaks the pool when I/O is still in flight).
            unsafe { driver.trust_mapped_buffers() };
            // Cached buffers plus those in flight, with slack for size
            // classes: the pool must never be what limits the queue.
            let pool_bytes = (4 * in_flight_bytes + (128 << 20)).next_power_of_two();
            let pool = BufferPool::new(PoolConfig {
                max_bytes: pool_bytes as usize,
                max_buffer_bytes: MAX_IO_BYTES as usize,
                populate: true,
            })
            .map_err(|e| BenchError::Scst(e.to_string()))?;
            let unit = lun.unit().clone();
            let device = ScstDevice::new(
                driver,
                lun,
                pool,
                ScstDeviceConfig {
                    name: format!("scst:dev{index}"),
                    unit: Some(unit),
                    ..ScstDeviceConfig::default()
                },
            )
            .map_err(|e| BenchError::Scst(e.to_string()))?;
            pollers.push(Box::new(device));
            BenchInitiator::Scst(ScstInitiator::new(sim))
        }
    };
    pollers.push(Box::new(bdev_poller));

    let workload = Workload {
        pattern: config.pattern,
        block_size: geometry.block_size,
        io_size: config.io_size,
        iodepth: config.iodepth,
        size: config.size,
        rwmix_read: config.rwmix_read,
        seed: config.seed.wrapping_add(index as u64),
    };
    let model = config
        .verify
        .then(|| VerifyModel::new(geometry.num_blocks, geometry.block_size as usize, true));
    let job = Job::new(initiator, workload, model, MAX_IO_BYTES)?;
    Ok(DeviceParts { job })
}

/// Counters at the start of the measured window.
struct Baseline {
    at: Instant,
    reactors: Vec<ReactorStats>,
    doorbells: u64,
    notifications: u64,
}

fn baseline(reactors: &[ReactorHandle], devices: &[DeviceParts]) -> Baseline {
    Baseline {
        at: Instant::now(),
        reactors: reactors.iter().map(ReactorHandle::stats).collect(),
        doorbells: devices.iter().map(|d| d.job.initiator().doorbells()).sum(),
        notifications: devices
            .iter()
            .map(|d| d.job.initiator().notifications())
            .sum(),
    }
}

fn pin_current_thread(core: usize) -> Result<(), BenchError> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        Ok(())
    } else {
        Err(BenchError::Config(format!(
            "cannot pin the bench thread to CPU {core}"
        )))
    }
}

/// Runs the bench; calls `progress` about once a second.
pub fn run(
    config: &BenchConfig,
    mut progress: impl FnMut(&Progress),
) -> Result<BenchReport, BenchError> {
    check_config(config)?;
    let (cores, sim_core, device_count) = placement(config)?;
    // Validate the workload before allocating gigabytes.
    Workload {
        pattern: config.pattern,
        block_size: config.block_size,
        io_size: config.io_size,
        iodepth: config.iodepth,
        size: config.size,
        rwmix_read: config.rwmix_read,
        seed: config.seed,
    }
    .validate(MAX_IO_BYTES)
    .map_err(|e| BenchError::Job(e.into()))?;
    let affinity = AffinityGuard::save();

    let jitter = if config.jitter {
        let mut all = cores.clone();
        if !all.contains(&sim_core) {
            all.push(sim_core);
        }
        Some(crate::jitter::measure(&all, Duration::from_secs(1)))
    } else {
        None
    };
    // The reference loop runs on a reactor core (the core the dataplane's
    // copy runs on), half before and half after the run, so a drift of the
    // machine during the run shows up in both figures.
    let mut reference = if config.reference {
        let buffers = ReferenceBuffers::new(ReferenceConfig {
            io_size: config.io_size as usize,
            runtime: (config.runtime / 2).clamp(Duration::from_millis(500), Duration::from_secs(3)),
            ..ReferenceConfig::default()
        });
        pin_current_thread(cores[0])?;
        let mut buffers = buffers;
        let before = buffers.run();
        Some((buffers, before))
    } else {
        None
    };

    let mut report = run_frontend(
        config,
        config.frontend,
        &cores,
        sim_core,
        device_count,
        &mut progress,
    )?;
    if config.compare {
        affinity.restore();
        let other = run_frontend(
            config,
            config.frontend.other(),
            &cores,
            sim_core,
            device_count,
            &mut progress,
        )?;
        report.compare = Some(CompareReport {
            frontend: other.frontend.clone(),
            iops: other.iops,
            doorbells_per_io: other.doorbells_per_io,
            errors: other.errors,
            verify_mismatches: other.verify_mismatches,
            ratio: if other.iops > 0.0 {
                report.iops / other.iops
            } else {
                0.0
            },
        });
    }
    if let Some((buffers, before)) = reference.as_mut() {
        pin_current_thread(cores[0])?;
        let after = buffers.run();
        let mean = (before.rate() + after.rate()) / 2.0;
        report.reference = Some(ReferenceReport {
            copies_per_sec: mean,
            before_copies_per_sec: before.rate(),
            after_copies_per_sec: after.rate(),
            ratio: report.iops / mean,
        });
    }
    report.jitter = jitter;
    Ok(report)
}

/// Builds, runs and reports one frontend's devices.
fn run_frontend(
    config: &BenchConfig,
    frontend: Frontend,
    cores: &[usize],
    sim_core: usize,
    device_count: usize,
    progress: &mut impl FnMut(&Progress),
) -> Result<BenchReport, BenchError> {
    let mut pollers: Vec<Vec<Box<dyn reactor::Poller>>> =
        (0..cores.len()).map(|_| Vec::new()).collect();
    let mut devices = Vec::with_capacity(device_count);
    for index in 0..device_count {
        devices.push(build_device(
            config,
            frontend,
            index,
            &mut pollers[index % cores.len()],
        )?);
    }
    let mut reactors = Vec::with_capacity(cores.len());
    for (i, (core, pollers)) in cores.iter().zip(pollers).enumerate() {
        let reactor_config = ReactorConfig::new(format!("reactor{i}"))
            .with_core(*core)
            .with_idle(config.idle);
        reactors.push(Reactor::spawn(reactor_config, pollers)?);
    }
    pin_current_thread(sim_core)?;
    // An SCST device answers ATTACH_SESS from its reactor: attach now.
    for device in &mut devices {
        if let BenchInitiator::Scst(scst) = device.job.initiator_mut() {
            if let Err(e) = scst.attach("iqn.2026-11.bench:initiator") {
                for reactor in reactors {
                    let _ = reactor.shutdown();
                }
                return Err(BenchError::Scst(e));
            }
        }
    }

    let outcome = drive(config, &reactors, &mut devices, progress);
    // Faults of the simulated kernels while the devices were running (an
    // SCST device is gone once its reactor has stopped: that is no fault).
    let faults: Vec<String> = devices
        .iter()
        .filter_map(|d| d.job.initiator().fault())
        .collect();
    // Stop the reactors whatever happened, then report the first error.
    for reactor in reactors {
        reactor.shutdown()?;
    }
    let Window {
        base,
        reactor_end,
        elapsed,
        latencies,
    } = outcome?;

    let mut totals = JobSnapshot::default();
    let mut notes = Vec::new();
    for d in &devices {
        let s = d.job.snapshot();
        totals.ios += s.ios;
        totals.reads += s.reads;
        totals.writes += s.writes;
        totals.bytes += s.bytes;
        totals.errors += s.errors;
        totals.verify_mismatches += s.verify_mismatches;
        notes.extend(d.job.notes().iter().cloned());
    }
    notes.extend(faults);
    let doorbells = devices
        .iter()
        .map(|d| d.job.initiator().doorbells())
        .sum::<u64>()
        - base.doorbells;
    let notifications = devices
        .iter()
        .map(|d| d.job.initiator().notifications())
        .sum::<u64>()
        - base.notifications;
    let secs = elapsed.as_secs_f64();
    let ios = totals.ios;
    let per_io = |x: f64| if ios == 0 { 0.0 } else { x / ios as f64 };

    let reactor_reports: Vec<ReactorLoad> = base
        .reactors
        .iter()
        .zip(&reactor_end)
        .map(|(start, end)| ReactorLoad::with_detail(start, end))
        .collect();
    let busy_total: u64 = reactor_reports.iter().map(|r| r.busy_ns).sum();
    let fraction_sum = reactor_reports
        .iter()
        .fold(0.0, |sum, r| sum + r.busy_fraction);
    let iops = ios as f64 / secs;
    Ok(BenchReport {
        frontend: frontend.name().into(),
        bdev: config.bdev.name().into(),
        rw: config.pattern.name().into(),
        block_size: config.io_size,
        device_block_size: config.block_size,
        iodepth: config.iodepth,
        devices: device_count,
        rwmix_read: config.rwmix_read,
        runtime_s: secs,
        ios,
        reads: totals.reads,
        writes: totals.writes,
        iops,
        bytes_per_sec: totals.bytes as f64 / secs,
        errors: totals.errors,
        verify_mismatches: totals.verify_mismatches,
        verify: config.verify,
        latency_ns: latencies.summary(),
        doorbells,
        doorbells_per_io: per_io(doorbells as f64),
        notifications,
        reactor_busy_fraction: fraction_sum / reactor_reports.len().max(1) as f64,
        reactor_ns_per_io: per_io(busy_total as f64),
        idle: match config.idle {
            IdlePolicy::Busy => "busy".into(),
            IdlePolicy::Adaptive { .. } => "adaptive".into(),
        },
        reactors: reactor_reports,
        reference: None,
        compare: None,
        jitter: None,
        notes,
    })
}

/// The measured window.
struct Window {
    base: Baseline,
    /// Reactor counters when the last I/O of the window completed.
    reactor_end: Vec<ReactorStats>,
    /// From the start of the window to the last completion.
    elapsed: Duration,
    latencies: Latencies,
}

/// The initiator loop: ramp, measure, drain.
fn drive(
    config: &BenchConfig,
    reactors: &[ReactorHandle],
    devices: &mut [DeviceParts],
    progress: &mut impl FnMut(&Progress),
) -> Result<Window, BenchError> {
    let start = Instant::now();
    let ramp_end = start + config.ramp;
    let mut ramping = !config.ramp.is_zero();
    let mut base = baseline(reactors, devices);
    let mut window_end = if ramping {
        None
    } else {
        Some(start + config.runtime)
    };
    let mut next_report = start + Duration::from_secs(1);
    let mut interval = Latencies::new();
    let mut last = JobSnapshot::default();
    let mut last_at = start;
    let mut iterations = 0u32;
    loop {
        let mut work = 0;
        for d in devices.iter_mut() {
            work += d.job.step(true)?;
        }
        if work == 0 {
            std::hint::spin_loop();
        }
        iterations = iterations.wrapping_add(1);
        if !iterations.is_multiple_of(64) {
            continue;
        }
        let now = Instant::now();
        if now >= next_report {
            next_report += Duration::from_secs(1);
            let mut totals = JobSnapshot::default();
            for d in devices.iter_mut() {
                d.job.take_interval(&mut interval);
                let s = d.job.snapshot();
                totals.ios += s.ios;
                totals.bytes += s.bytes;
                totals.errors += s.errors;
                totals.verify_mismatches += s.verify_mismatches;
            }
            let dt = now.duration_since(last_at).as_secs_f64().max(1e-9);
            progress(&Progress {
                elapsed: now.duration_since(start),
                ramping,
                iops: totals.ios.saturating_sub(last.ios) as f64 / dt,
                bytes_per_sec: totals.bytes.saturating_sub(last.bytes) as f64 / dt,
                p99_ns: interval.percentile(99.0),
                errors: totals.errors,
                verify_mismatches: totals.verify_mismatches,
            });
            interval.reset();
            last = totals;
            last_at = now;
        }
        if ramping && now >= ramp_end {
            ramping = false;
            for d in devices.iter_mut() {
                d.job.reset_counters();
            }
            base = baseline(reactors, devices);
            window_end = Some(base.at + config.runtime);
            last = JobSnapshot::default();
            last_at = base.at;
        }
        if window_end.is_some_and(|end| now >= end) {
            break;
        }
    }
    // I/Os issued in the window complete before it closes: the window ends
    // at the last completion, and everything in it is counted.
    for d in devices.iter_mut() {
        d.job.drain(Duration::from_secs(10))?;
    }
    let elapsed = base.at.elapsed();
    let reactor_end = reactors.iter().map(ReactorHandle::stats).collect();
    let mut latencies = Latencies::new();
    for d in devices.iter() {
        latencies.merge(d.job.latencies());
    }
    Ok(Window {
        base,
        reactor_end,
        elapsed,
        latencies,
    })
}
