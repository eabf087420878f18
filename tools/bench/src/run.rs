//! `dataplane bench`: the full dataplane against the built-in kernel simulator.
//!
//! For each device: a bdev (`ram`, `null` or `striped` over RAM children), a
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
//! resolves its files (`files.rs`: created sparse when missing), which the
//! devices of every frontend it runs and the raw io_uring reference loop
//! share.
//!
//! [`run`] checks the configuration, measures what is asked beside the run
//! (platform stalls, the reference loop: the copy loop, or the raw io_uring
//! loop for a file-backed run), and runs each frontend asked for: its
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
use reactor::stats::ReactorLoad;
use reactor::{IdlePolicy, Reactor, ReactorConfig};

use crate::affinity::{pin_current_thread, AffinityGuard};
use dataplane::latency::Latencies;
use dataplane::port::FixedBuffers;

use crate::config::{BenchConfig, Frontend, Placement, MAX_IO_BYTES};
use crate::devices::{build_device, BenchDevice};
use crate::error::{BenchError, ScstSetupError};
use crate::files::{self, BenchFile};
use crate::frontends::BenchInitiator;
use crate::initiator::{Initiator, JobSnapshot, Workload};
use crate::raw_uring::{RawLoop, RawLoopConfig, RawLoopResult};
use crate::reference::{ReferenceBuffers, ReferenceConfig};
use crate::report::{
    BenchReport, CompareReport, FileReport, RawLoopReport, Reference, ReferenceReport,
};
use crate::window::{drive, Progress, Window};

/// The reference measured before the run, to be measured again after it.
enum Before {
    Copy(ReferenceBuffers, crate::reference::ReferenceResult),
    IoUring(Box<RawLoop>, RawLoopResult),
}

/// The raw io_uring loop over the run's files, at the run's total depth.
fn raw_loop(config: &BenchConfig, files: &[Vec<BenchFile>]) -> Result<RawLoop, BenchError> {
    let all: Vec<&BenchFile> = files.iter().flatten().collect();
    RawLoop::new(RawLoopConfig {
        files: all.iter().map(|f| f.path.clone()).collect(),
        range: all.first().map_or(0, |f| f.range),
        io_size: config.io_size,
        iodepth: config.iodepth * files.len() as u32,
        pattern: config.pattern,
        rwmix_read: config.rwmix_read,
        direct: config.file.direct,
        iopoll: config.file.iopoll,
        sqpoll: config.file.sqpoll,
        fixed_buffers: config.file.fixed_buffers,
        runtime: (config.runtime / 2).clamp(Duration::from_millis(500), Duration::from_secs(3)),
        seed: config.seed ^ 0x5eed,
    })
    .map_err(BenchError::RawLoop)
}

/// Runs the bench; calls `progress` about once a second.
pub fn run(
    config: &BenchConfig,
    mut progress: impl FnMut(&Progress),
) -> Result<BenchReport, BenchError> {
    config.check()?;
    let Placement {
        cores,
        sim_core,
        devices: device_count,
    } = config.placement()?;
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
    let files = if config.file_backed() {
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
    // The reference loop runs on a reactor core (the core the dataplane's
    // copy, or its io_uring, runs on), half before and half after the run,
    // so a drift of the machine during the run shows up in both figures.
    let mut reference = if !config.reference {
        None
    } else if config.file_backed() {
        let mut raw = raw_loop(config, &files)?;
        pin_current_thread(cores[0])?;
        let before = raw.run();
        Some(Before::IoUring(Box::new(raw), before))
    } else {
        let buffers = ReferenceBuffers::try_new(ReferenceConfig {
            io_size: config.io_size as usize,
            runtime: (config.runtime / 2).clamp(Duration::from_millis(500), Duration::from_secs(3)),
            ..ReferenceConfig::default()
        })?;
        pin_current_thread(cores[0])?;
        let mut buffers = buffers;
        let before = buffers.run();
        Some(Before::Copy(buffers, before))
    };

    let mut report = run_frontend(
        config,
        config.frontend,
        &cores,
        sim_core,
        &files,
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
    if config.compare {
        affinity.restore();
        // The first run wrote to the files: they no longer read as zeroes.
        let mut written = files.clone();
        for file in written.iter_mut().flatten() {
            file.created = false;
        }
        let other = run_frontend(
            config,
            config.frontend.other(),
            &cores,
            sim_core,
            &written,
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
            ram_huge_page_fraction: other.ram_huge_page_fraction,
        });
    }
    match reference.as_mut() {
        Some(Before::Copy(buffers, before)) => {
            pin_current_thread(cores[0])?;
            let after = buffers.run();
            let mean = (before.rate() + after.rate()) / 2.0;
            report.reference = Some(Reference::Copy(ReferenceReport {
                copies_per_sec: mean,
                before_copies_per_sec: before.rate(),
                after_copies_per_sec: after.rate(),
                ratio: report.iops / mean,
                huge_page_fraction: buffers.huge_page_fraction(),
            }));
            if report.ram_huge_page_collapse.is_none() {
                report.ram_huge_page_collapse = buffers
                    .collapse()
                    .failure()
                    .map(|why| format!("reference buffer: {why}"));
            }
        }
        Some(Before::IoUring(raw, before)) => {
            pin_current_thread(cores[0])?;
            let after = raw.run();
            let mean = (before.rate() + after.rate()) / 2.0;
            let mut latencies = Latencies::new();
            latencies.merge(&before.latencies);
            latencies.merge(&after.latencies);
            let ios = before.ios + after.ios;
            let latency_ns = latencies.summary();
            if let Some(why) = before.first_error.as_ref().or(after.first_error.as_ref()) {
                report.notes.push(format!("raw io_uring loop: {why}"));
            }
            report.reference = Some(Reference::IoUring(RawLoopReport {
                kind: "io_uring".into(),
                ios_per_sec: mean,
                before_ios_per_sec: before.rate(),
                after_ios_per_sec: after.rate(),
                ratio: if mean > 0.0 { report.iops / mean } else { 0.0 },
                p50_excess_ns: report.latency_ns.p50 as i64 - latency_ns.p50 as i64,
                latency_ns,
                iodepth: config.iodepth * device_count as u32,
                fixed_buffers: raw.fixed_buffers(),
                submit_syscalls_per_io: if ios == 0 {
                    0.0
                } else {
                    (before.enters + after.enters) as f64 / ios as f64
                },
                errors: before.errors + after.errors,
            }));
        }
        None => {}
    }
    report.jitter = jitter;
    Ok(report)
}

/// Builds, runs and reports one frontend's devices, one per entry of
/// `files` (each device's files; empty unless file-backed).
fn run_frontend(
    config: &BenchConfig,
    frontend: Frontend,
    cores: &[usize],
    sim_core: usize,
    files: &[Vec<BenchFile>],
    progress: &mut impl FnMut(&Progress),
) -> Result<BenchReport, BenchError> {
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
        file_end,
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
    let submit_syscalls = file_end.submit_syscalls - base.file.submit_syscalls;
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
        bdev_ios: file_end.completed - base.file.completed,
        submit_syscalls,
        channel_polls: file_end.polls - base.file.polls,
        bounced: file_end.bounced - base.file.bounced,
        fixed_ios: file_end.fixed - base.file.fixed,
        waits: file_end.waited - base.file.waited,
        enter_errors: file_end.enter_errors - base.file.enter_errors,
        fixed_buffers_offered: config.file.fixed_buffers,
        memory_registered: devices
            .iter()
            .all(|d| d.poller.fixed_buffers() == FixedBuffers::Registered),
    });
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
        ram_huge_page_fraction,
        ram_huge_page_collapse,
        submit_syscalls_per_io: per_io(submit_syscalls as f64),
        file,
        reference: None,
        compare: None,
        jitter: None,
        notes,
    })
}
