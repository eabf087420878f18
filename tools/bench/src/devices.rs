//! The devices of a bench run: per device a bdev (in memory, or over files
//! or NVMe namespaces), the dataplane stack over
//! it ([`dataplane::stack`]: LUN, frontend device, a bdev poller of its
//! own, the frontend's memory offered to it as fixed buffers unless
//! `--no-fixed-buffers`) serving a simulated kernel, and the job that
//! drives that kernel.

use std::sync::Arc;

use bdev::file::{FileBdev, FileOptions};
use bdev::null::NullBdev;
use bdev::nvme::UnmapMode;
use bdev::ram::RamBdev;
use bdev::rbd::{RbdBdev, RbdOptions};
use bdev::striped::StripedBdev;
use bdev::{Bdev, BdevRef};
use dataplane::port::BdevPollerHandle;
use dataplane::scst::device::ScstDeviceConfig;
use dataplane::scst::pool::PoolConfig;
use dataplane::scst::register::ScstOptions;
use dataplane::scst::version::VersionSource;
use dataplane::serve::metrics::{DeviceCounters, DeviceSource};
use dataplane::serve::stats::UringBdev;
use dataplane::stack::{LunSpec, MaxTransfer, ScstRegistration, Stack};
use dataplane::tcmu::TcmuDeviceConfig;
use reactor::Poller;
use sim::scst::{ScstSim, ScstSimConfig};
use sim::tcmu::{SimConfig, TcmuSim};

use crate::config::{BdevKind, BenchConfig, Frontend, MAX_IO_BYTES};
use crate::error::{BenchError, ScstSetupError};
use crate::files::BenchFile;
use crate::frontends::{BenchInitiator, ScstInitiator, TcmuInitiator};
use crate::initiator::{Job, VerifyModel, Workload};
use crate::namespaces;

/// The initiator's side of one device (the rest runs on a reactor).
pub(crate) struct BenchDevice {
    /// The workload over the device's simulated kernel.
    pub job: Job<BenchInitiator>,
    /// The RAM bdevs whose memory serves the device (the bdev itself, or a
    /// striped bdev's children; none for `null`), for their huge pages.
    pub ram: Vec<BdevRef>,
    /// Why `MADV_COLLAPSE` failed on one of them, if it did.
    pub collapse_failure: Option<String>,
    /// The bdevs over storage that serve the device (a `file` or `nvme`
    /// bdev itself, or a striped bdev's `file` children), for their
    /// counters.
    pub storage: Vec<UringBdev>,
    /// The device's bdev poller (whether its memory is registered).
    pub poller: BdevPollerHandle,
    /// The device's counters and latency, for a metrics endpoint.
    pub metrics: DeviceSource,
}

/// A bench device's bdev and what serves it from memory or storage.
struct MadeBdev {
    bdev: BdevRef,
    ram: Vec<BdevRef>,
    collapse_failure: Option<String>,
    storage: Vec<UringBdev>,
}

/// A file bdev over `file`, with the run's block size and ring options;
/// its ring holds the run's queue depth, and it takes the bench's largest
/// transfer (its bounce pool holds at least one).
fn file_bdev(
    name: String,
    config: &BenchConfig,
    file: &BenchFile,
) -> Result<Arc<FileBdev>, BenchError> {
    let options = FileOptions {
        block_size: Some(config.block_size),
        queue_depth: config.iodepth.clamp(1, 32768),
        direct: config.file.direct,
        iopoll: config.file.iopoll,
        sqpoll: config.file.sqpoll,
        max_transfer_bytes: MAX_IO_BYTES as u32,
        ..FileOptions::new(file.path.clone())
    };
    let bdev = FileBdev::open(name, options)?;
    let size = bdev.geometry().size_bytes();
    if size < file.range {
        return Err(BenchError::File {
            path: file.path.clone(),
            problem: format!(
                "holds {size} bytes as a bdev of {}-byte blocks, less than the {} bytes the run \
                 addresses",
                config.block_size, file.range
            ),
        });
    }
    Ok(Arc::new(bdev))
}

/// A RAM bdev, its memory committed and brought onto huge pages where the
/// kernel can (at build time, before the run).
fn ram_bdev(
    name: String,
    config: &BenchConfig,
    blocks: u64,
    collapse_failure: &mut Option<String>,
) -> Result<BdevRef, bdev::Error> {
    let ram = RamBdev::new(name, config.block_size, blocks)?;
    if let Some(why) = ram.prefault().failure() {
        collapse_failure.get_or_insert_with(|| format!("{}: {why}", ram.name()));
    }
    Ok(Arc::new(ram))
}

/// Device `index`'s bdev (`<kind><index>`; a striped bdev's children are
/// `<name>.<child>`), its RAM committed; one over storage over `files`
/// (its files, or its namespace).
fn make_bdev(
    config: &BenchConfig,
    index: usize,
    files: &[BenchFile],
) -> Result<MadeBdev, BenchError> {
    let blocks = config.size / u64::from(config.block_size);
    let name = format!("{}{index}", config.bdev.name());
    let mut collapse_failure = None;
    let mut file_bdevs = Vec::new();
    let mut storage = Vec::new();
    let (bdev, ram): (BdevRef, Vec<BdevRef>) = match config.bdev {
        BdevKind::Null => (
            Arc::new(NullBdev::new(name, config.block_size, blocks)?),
            Vec::new(),
        ),
        BdevKind::Ram => {
            let ram = ram_bdev(name, config, blocks, &mut collapse_failure)?;
            (Arc::clone(&ram), vec![ram])
        }
        BdevKind::File => {
            let file = file_bdev(name, config, &files[0])?;
            file_bdevs.push(Arc::clone(&file));
            (file, Vec::new())
        }
        BdevKind::Nvme => {
            let nvme = Arc::new(namespaces::open(name, config, &files[0].path)?);
            storage.push(UringBdev::Nvme {
                bdev: Arc::clone(&nvme),
                unmap: UnmapMode::Auto,
            });
            (nvme, Vec::new())
        }
        BdevKind::Rbd => (rbd_bdev(name, config, index)?, Vec::new()),
        BdevKind::Striped { width, chunk } if config.file_backed() => {
            for (c, file) in files.iter().enumerate() {
                file_bdevs.push(file_bdev(format!("{name}.{c}"), config, file)?);
            }
            let children: Vec<BdevRef> = file_bdevs
                .iter()
                .map(|f| Arc::clone(f) as BdevRef)
                .collect();
            let chunk_blocks = (chunk / u64::from(config.block_size)) as u32;
            debug_assert_eq!(children.len(), width as usize);
            (
                Arc::new(StripedBdev::new(name, children, chunk_blocks)?),
                Vec::new(),
            )
        }
        BdevKind::Striped { width, chunk } => {
            let child_blocks = blocks / u64::from(width);
            let children = (0..width)
                .map(|c| {
                    ram_bdev(
                        format!("{name}.{c}"),
                        config,
                        child_blocks,
                        &mut collapse_failure,
                    )
                })
                .collect::<Result<Vec<_>, bdev::Error>>()?;
            let chunk_blocks = (chunk / u64::from(config.block_size)) as u32;
            (
                Arc::new(StripedBdev::new(name, children.clone(), chunk_blocks)?),
                children,
            )
        }
    };
    storage.extend(file_bdevs.into_iter().map(UringBdev::File));
    Ok(MadeBdev {
        bdev,
        ram,
        collapse_failure,
        storage,
    })
}

/// Device `index`'s rbd bdev over its image, which must hold `--size`.
fn rbd_bdev(name: String, config: &BenchConfig, index: usize) -> Result<BdevRef, BenchError> {
    let r = &config.rbd;
    let options = RbdOptions {
        conf: r.conf.clone(),
        user: r.user.clone(),
        keyring: r.keyring.clone(),
        block_size: config.block_size,
        // The bench's LUNs take transfers up to MAX_IO_BYTES.
        max_transfer_bytes: MAX_IO_BYTES as u32,
        ..RbdOptions::new(name, r.pool.clone(), r.images[index].clone())
    };
    let rbd = RbdBdev::open(options)?;
    if rbd.image_size() < config.size {
        return Err(BenchError::Bdev(bdev::Error::InvalidParameter(format!(
            "RBD image {}/{} is {} bytes, less than --size {}",
            r.pool,
            r.images[index],
            rbd.image_size(),
            config.size
        ))));
    }
    Ok(Arc::new(rbd))
}

/// The data area the simulator gets: room for two full queues of I/O.
fn data_area_size(config: &BenchConfig) -> usize {
    let need = 2 * u64::from(config.iodepth) * config.io_size;
    let size = config.data_area.unwrap_or_else(|| need.max(64 << 20));
    size.next_multiple_of(4096) as usize
}

/// Offers the frontend's memory to the bdev poller, or not
/// (`--no-fixed-buffers`).
fn fixed_buffers<D>(config: &BenchConfig, stack: Stack<D>) -> Stack<D> {
    if config.file.fixed_buffers {
        stack
    } else {
        stack.without_fixed_buffers()
    }
}

/// Builds device `index` for `frontend`: bdev (over `files` for a run
/// over storage), stack and simulated kernel. The frontend device and
/// then its bdev poller are pushed to `pollers` (polled in that order);
/// returns the job that drives the device.
pub(crate) fn build_device(
    config: &BenchConfig,
    frontend: Frontend,
    index: usize,
    files: &[BenchFile],
    pollers: &mut Vec<Box<dyn Poller>>,
) -> Result<BenchDevice, BenchError> {
    let MadeBdev {
        bdev,
        ram,
        collapse_failure,
        storage,
    } = make_bdev(config, index, files)?;
    let geometry = bdev.geometry();
    let lun = LunSpec {
        max_transfer: MaxTransfer::Bytes(MAX_IO_BYTES as u32),
        ..LunSpec::new(
            format!("bench{index:04}"),
            0x1000 + index as u64,
            config.iodepth.next_power_of_two().max(256),
        )
    };
    let depth = lun.port_depth();
    let stack_error = |e| BenchError::from_stack(e, depth);

    let (initiator, bdev_poller, (counters, lun, latency)) = match frontend {
        Frontend::Tcmu => {
            let sim = TcmuSim::new(SimConfig {
                cmdr_size: (config.ring_size - 128) as u32,
                data_area_size: data_area_size(config),
                ..SimConfig::default()
            })?;
            let (region, doorbell) = sim.device_endpoint()?;
            let stack = Stack::tcmu(
                bdev.as_ref(),
                &lun,
                region,
                doorbell,
                TcmuDeviceConfig {
                    name: format!("tcmu:dev{index}"),
                    // The reactor registers wait fds edge-triggered, so an
                    // unread notification never keeps it awake.
                    ..TcmuDeviceConfig::default()
                },
            )
            .map_err(stack_error)?;
            let counters = DeviceCounters::Tcmu(stack.device().stats());
            let latency = stack.device().latency();
            let lun = stack.device().executor().counters();
            let (device, bdev_poller) = fixed_buffers(config, stack)
                .with_own_poller(bdev.as_ref(), depth)
                .map_err(stack_error)?;
            pollers.push(Box::new(device));
            (
                BenchInitiator::Tcmu(Box::new(TcmuInitiator::new(sim))),
                bdev_poller,
                (counters, lun, latency),
            )
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
            let (mut driver, sim) = ScstSim::new(sim_config).map_err(ScstSetupError::Sim)?;
            // SAFETY: the driver goes into an `ScstDevice` below, which
            // hands the kernel only buffers of its pool, never touches one
            // the kernel holds (the pool tracks them until ON_FREE_CMD or
            // ON_CACHED_MEM_FREE), and closes the driver before it unmaps
            // the pool (or leaks the pool when I/O is still in flight).
            unsafe { driver.trust_mapped_buffers() };
            let stack = Stack::scst(
                bdev.as_ref(),
                &lun,
                driver,
                &ScstRegistration {
                    name: format!("bench{index}"),
                    options: ScstOptions::default(),
                    version,
                    source: VersionSource::Config,
                },
                // Cached buffers plus those in flight, with slack for size
                // classes: the pool must never be what limits the queue.
                PoolConfig {
                    max_bytes: (4 * in_flight_bytes + (128 << 20)).next_power_of_two() as usize,
                    max_buffer_bytes: MAX_IO_BYTES as usize,
                    populate: true,
                },
                ScstDeviceConfig {
                    name: format!("scst:dev{index}"),
                    ..ScstDeviceConfig::default()
                },
            )
            .map_err(stack_error)?;
            let counters = DeviceCounters::Scst(stack.device().stats());
            let latency = stack.device().latency();
            let lun = stack.device().executor().counters();
            let (device, bdev_poller) = fixed_buffers(config, stack)
                .with_own_poller(bdev.as_ref(), depth)
                .map_err(stack_error)?;
            pollers.push(Box::new(device));
            (
                BenchInitiator::Scst(ScstInitiator::new(sim)),
                bdev_poller,
                (counters, lun, latency),
            )
        }
    };
    let poller = bdev_poller.handle();
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
    // New memory and new sparse files read as zeroes; a file that existed,
    // a namespace, or a file the reference loop writes before the run,
    // holds what it holds: its blocks are checked once written.
    let zeroed = if config.storage_backed() {
        files.iter().all(|f| f.created) && !(config.reference && config.pattern.writes())
    } else {
        true
    };
    let model = config
        .verify
        .then(|| VerifyModel::new(geometry.num_blocks, geometry.block_size as usize, zeroed));
    let mut job =
        Job::new(initiator, workload, model, MAX_IO_BYTES)?.with_kernel_cost(config.kernel_cost);
    if let Some(split) = &config.bssplit {
        job = job.with_size_split(split.clone())?;
    }
    Ok(BenchDevice {
        job,
        ram,
        collapse_failure,
        storage,
        poller,
        metrics: DeviceSource {
            name: format!("bench{index}"),
            bdev: bdev.name().to_owned(),
            counters,
            lun,
            latency,
        },
    })
}
