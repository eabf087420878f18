//! `dataplane bench`: the full dataplane against the built-in kernel simulator.
//!
//! For each device: a bdev (`ram`, `null`, `striped` over RAM or file
//! children, `file` or `nvme`), a
//! [`BdevPoller`] running its channel, a SCSI [`Lun`] joined to it by an SPSC
//! [`port`](dataplane::port), a frontend device serving a simulated kernel
//! (a [`TcmuDevice`] on a TCMU ring, or an [`ScstDevice`] on scst_user),
//! all assembled by [`dataplane::stack`], and a [`Job`] that drives the
//! simulated kernel like fio drives a LUN. Devices are spread round-robin
//! over the reactors (one pinned thread per core in `cores`); the simulated
//! kernel and initiator run on the calling thread, pinned to `sim_core`.
//! Everything between the ring and the bdev is the production data path.
//!
//! A file-backed run (`--bdev file`, or `striped` over files) first
//! resolves its files (`files.rs`: created sparse when missing), an nvme
//! run its namespaces (`namespaces.rs`: opened as the bdev opens them,
//! their LBA size the devices' block size), which the devices of every
//! frontend it runs and the raw io_uring reference loop share.
//!
//! [`run`] checks the configuration, measures what is asked beside the run
//! (platform stalls, the reference loop: `reference_run.rs`), and runs
//! each frontend asked for: its
//! devices (`devices.rs`) on fresh reactors, driven through the measured
//! window (`window.rs`), then reported ([`BenchReport`]).
//!
//! [`BdevPoller`]: dataplane::port::BdevPoller
//! [`Lun`]: dataplane::lun::Lun
//! [`TcmuDevice`]: dataplane::tcmu::TcmuDevice
//! [`ScstDevice`]: dataplane::scst::device::ScstDevice
//! [`Job`]: crate::initiator::Job

use std::time::Duration;

use bdev::ram::combined_huge_page_fraction;
use dataplane::serve::metrics::{BdevSource, MetricsCatalog};
use dataplane::serve::stats::{NvmeBdevStats, UringBdev};
use reactor::stats::ReactorLoad;
use reactor::{IdlePolicy, Reactor, ReactorConfig, ReactorHandle};

use crate::affinity::{pin_current_thread, AffinityGuard};
use dataplane::port::FixedBuffers;

use crate::config::{BdevKind, BenchConfig, Frontend, Placement, MAX_IO_BYTES};
use crate::devices::{build_device, BenchDevice};
use crate::error::{BenchError, ScstSetupError};
use crate::files::{self, BenchFile};
use crate::frontends::BenchInitiator;
use crate::initiator::{Initiator, JobSnapshot, Workload};
use crate::namespaces;
use crate::reference_run;
use crate::report::{BenchReport, CompareReport, FileReport, NvmeReport};
use crate::trace::RunTrace;
use crate::window::{drive, Progress, Window};

/// Runs the bench; calls `progress` about once a second.
pub fn run(
    config: &BenchConfig,
    progress: impl FnMut(&Progress),
) -> Result<BenchReport, BenchError> {
    run_traced(config, None, progress).map(|(report, _)| report)
}

/// [`run`], sharing each frontend's devices, reactors and bdevs with
/// `metrics` (a metrics endpoint's catalog) while they run, and also
/// returning each frontend's [`RunTrace`] (latencies and completion rate
/// over time): the frontend asked for first, then, with `compare`, the
/// other one.
pub fn run_traced(
    config: &BenchConfig,
    metrics: Option<&MetricsCatalog>,
    mut progress: impl FnMut(&Progress),
) -> Result<(BenchReport, Vec<RunTrace>), BenchError> {
    config.check()?;
    let Placement {
        cores,
        sim_core,
        devices: device_count,
    } = config.placement()?;
    // An nvme run's devices have their namespaces' block size.
    let namespaces = if config.bdev == BdevKind::Nvme {
        Some(namespaces::prepare(config, device_count)?)
    } else {
        None
    };
    let lba_config;
    let config = match &namespaces {
        Some(n) => {
            lba_config = BenchConfig {
                block_size: n.block_size,
                ..config.clone()
            };
            &lba_config
        }
        None => config,
    };
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
    let files = if let Some(n) = namespaces {
        n.files
    } else if config.file_backed() {
        files::prepare(config, device_count)?
    } else {
        vec![Vec::new(); device_count]
    };
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
    let reference = reference_run::before(config, &files, cores[0])?;

    let (mut report, trace) = run_frontend(
        config,
        config.frontend,
        &cores,
        sim_core,
        &files,
        metrics,
        &mut progress,
    )?;
    let reads = config.pattern != crate::initiator::Pattern::Write
        && config.pattern != crate::initiator::Pattern::RandWrite;
    report.notes.extend(
        files
            .iter()
            .flatten()
            .filter(|f| f.created)
            .map(|f| files::created_note(f, reads)),
    );
    let mut traces = vec![trace];
    if config.compare {
        affinity.restore();
        // The first run wrote to the files: they no longer read as zeroes.
        let mut written = files.clone();
        for file in written.iter_mut().flatten() {
            file.created = false;
        }
        let (other, trace) = run_frontend(
            config,
            config.frontend.other(),
            &cores,
            sim_core,
            &written,
            metrics,
            &mut progress,
        )?;
        traces.push(trace);
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
            ram_huge_page_fraction: other.ram_huge_page_fraction,
        });
    }
    if let Some(before) = reference {
        reference_run::after(before, config, device_count, cores[0], &mut report)?;
    }
    report.jitter = jitter;
    Ok((report, traces))
}

/// Shares the run's reactors, devices and bdevs with a metrics catalog.
fn share_metrics(catalog: &MetricsCatalog, reactors: &[ReactorHandle], devices: &[BenchDevice]) {
    catalog.set_reactors(reactors.iter().map(ReactorHandle::stats_reader).collect());
    catalog.set_devices(devices.iter().map(|d| d.metrics.clone()).collect());
    let mut bdevs: Vec<BdevSource> = Vec::new();
    for d in devices {
        bdevs.push(BdevSource {
            name: d.metrics.bdev.clone(),
            uring: None,
        });
        bdevs.extend(d.storage.iter().map(|s| BdevSource {
            name: s.bdev().name().to_owned(),
            uring: Some(s.clone()),
        }));
    }
    // A file or nvme bdev that is the device's own bdev is listed once,
    // with its counters.
    bdevs.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then(b.uring.is_some().cmp(&a.uring.is_some()))
    });
    bdevs.dedup_by(|later, first| later.name == first.name);
    catalog.set_bdevs(bdevs);
}

/// Builds, runs and reports one frontend's devices, one per entry of
/// `files` (each device's files or namespace; empty for bdevs in memory).
fn run_frontend(
    config: &BenchConfig,
    frontend: Frontend,
    cores: &[usize],
    sim_core: usize,
    files: &[Vec<BenchFile>],
    metrics: Option<&MetricsCatalog>,
    progress: &mut impl FnMut(&Progress),
) -> Result<(BenchReport, RunTrace), BenchError> {
    let device_count = files.len();
    let mut pollers: Vec<Vec<Box<dyn reactor::Poller>>> =
        (0..cores.len()).map(|_| Vec::new()).collect();
    let mut devices = Vec::with_capacity(device_count);
    for (index, files) in files.iter().enumerate() {
        devices.push(build_device(
            config,
            frontend,
            index,
            files,
            &mut pollers[index % cores.len()],
        )?);
    }
    // Measured once the memory is prefaulted and collapsed, before the
    // reactors start (reading smaps is no work for the measured window).
    let ram_huge_page_fraction =
        combined_huge_page_fraction(devices.iter().flat_map(|d: &BenchDevice| &d.ram));
    let ram_huge_page_collapse = devices.iter().find_map(|d| d.collapse_failure.clone());
    let mut reactors = Vec::with_capacity(cores.len());
    for (i, (core, pollers)) in cores.iter().zip(pollers).enumerate() {
        let reactor_config = ReactorConfig::new(format!("reactor{i}"))
            .with_core(*core)
            .with_idle(config.idle);
        reactors.push(Reactor::spawn(reactor_config, pollers)?);
    }
    if let Some(catalog) = metrics {
        share_metrics(catalog, &reactors, &devices);
    }
    pin_current_thread(sim_core)?;
    // An SCST device answers ATTACH_SESS from its reactor: attach now.
    for device in &mut devices {
        if let BenchInitiator::Scst(scst) = device.job.initiator_mut() {
            if let Err(e) = scst.attach("iqn.2026-11.bench:initiator") {
                for reactor in reactors {
                    let _ = reactor.shutdown();
                }
                return Err(ScstSetupError::Session(e).into());
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
        storage_end,
        nvme_end,
        elapsed,
        latencies,
        iops: iops_samples,
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
    let storage = storage_end.since(&base.storage);
    let memory_registered = devices
        .iter()
        .all(|d| d.poller.fixed_buffers() == FixedBuffers::Registered);
    let file = config.file_backed().then(|| FileReport {
        paths: files
            .iter()
            .flatten()
            .map(|f| f.path.display().to_string())
            .collect(),
        created: files
            .iter()
            .flatten()
            .filter(|f| f.created)
            .map(|f| f.path.display().to_string())
            .collect(),
        direct: config.file.direct,
        iopoll: config.file.iopoll,
        sqpoll: config.file.sqpoll,
        queue_depth: config.iodepth,
        bdev_ios: storage.completed,
        submit_syscalls: storage.submit_syscalls,
        channel_polls: storage.polls,
        bounced: storage.bounced,
        fixed_ios: storage.fixed,
        waits: storage.waited,
        enter_errors: storage.enter_errors,
        fixed_buffers_offered: config.file.fixed_buffers,
        memory_registered,
    });
    let nvme = (config.bdev == BdevKind::Nvme).then(|| NvmeReport {
        iopoll: config.file.iopoll,
        queue_depth: config.iodepth,
        fixed_buffers_offered: config.file.fixed_buffers,
        memory_registered,
        bdevs: nvme_window(&devices, &base.nvme, &nvme_end),
    });
    let report = BenchReport {
        frontend: frontend.name().into(),
        bdev: config.bdev.name().into(),
        rw: config.pattern.name().into(),
        block_size: config.io_size,
        device_block_size: config.block_size,
        iodepth: config.iodepth,
        kernel_ns: u64::try_from(config.kernel_cost.as_nanos()).unwrap_or(u64::MAX),
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
        ram_huge_page_fraction,
        ram_huge_page_collapse,
        submit_syscalls_per_io: per_io(storage.submit_syscalls as f64),
        file,
        nvme,
        reference: None,
        compare: None,
        jitter: None,
        notes,
    };
    let trace = RunTrace {
        frontend: frontend.name().into(),
        latencies,
        iops: iops_samples,
    };
    Ok((report, trace))
}

/// Each nvme bdev of `devices` over the window, from its counters at the
/// start (`base`) and the end (`end`), device by device.
fn nvme_window(
    devices: &[BenchDevice],
    base: &[bdev::NvmeStats],
    end: &[bdev::NvmeStats],
) -> Vec<NvmeBdevStats> {
    let bdevs = devices.iter().flat_map(|d| {
        let registered = d.poller.fixed_buffers() == FixedBuffers::Registered;
        d.storage.iter().filter_map(move |s| match s {
            UringBdev::Nvme { bdev, unmap } => Some((bdev, *unmap, registered)),
            UringBdev::File(_) => None,
        })
    });
    bdevs
        .zip(base.iter().zip(end))
        .map(|((bdev, unmap, registered), (base, end))| {
            let mut stats = NvmeBdevStats::between(bdev, unmap, base, end);
            stats.io.memory_registered = Some(registered);
            stats
        })
        .collect()
}
