//! The reference of a run (`--reference`), measured beside it: the copy
//! loop for runs from memory ([`crate::reference`]), the raw io_uring loop
//! over the same files ([`crate::raw_uring`]) or NVMe namespaces
//! ([`crate::raw_nvme`]) for runs over storage. It runs on a reactor core
//! (the core the dataplane's copy, or its io_uring, runs on), half before
//! and half after the run, so a drift of the machine during the run shows
//! up in both figures; the report gets the mean and the ratio.

use std::time::Duration;

use dataplane::latency::Latencies;

use crate::affinity::pin_current_thread;
use crate::config::{BdevKind, BenchConfig};
use crate::error::BenchError;
use crate::files::BenchFile;
use crate::raw_nvme::NvmeTarget;
use crate::raw_uring::{FileTarget, RawLoop, RawLoopConfig, RawLoopResult, RawReference};
use crate::reference::{ReferenceBuffers, ReferenceConfig, ReferenceResult};
use crate::report::{BenchReport, RawLoopReport, Reference, ReferenceReport};

/// The reference measured before the run, to be measured again after it.
pub(crate) enum Before {
    /// The copy loop.
    Copy(ReferenceBuffers, ReferenceResult),
    /// The raw loop over files or namespaces.
    Raw(Box<dyn RawReference>, RawLoopResult),
}

/// How long each half of the reference runs.
fn half(config: &BenchConfig) -> Duration {
    (config.runtime / 2).clamp(Duration::from_millis(500), Duration::from_secs(3))
}

/// The raw loop over the run's files or namespaces (`files`, device by
/// device), at the run's total depth.
fn raw_loop(
    config: &BenchConfig,
    files: &[Vec<BenchFile>],
) -> Result<Box<dyn RawReference>, BenchError> {
    let all: Vec<&BenchFile> = files.iter().flatten().collect();
    let paths: Vec<_> = all.iter().map(|f| f.path.clone()).collect();
    let raw = RawLoopConfig {
        range: all.first().map_or(0, |f| f.range),
        io_size: config.io_size,
        iodepth: config.iodepth * files.len() as u32,
        pattern: config.pattern,
        rwmix_read: config.rwmix_read,
        iopoll: config.file.iopoll,
        sqpoll: config.file.sqpoll,
        fixed_buffers: config.file.fixed_buffers,
        runtime: half(config),
        seed: config.seed ^ 0x5eed,
    };
    let writes = config.pattern.writes();
    Ok(if config.bdev == BdevKind::Nvme {
        let target = NvmeTarget::open(&paths, writes).map_err(BenchError::RawLoop)?;
        Box::new(RawLoop::new(target, raw).map_err(BenchError::RawLoop)?)
    } else {
        let target =
            FileTarget::open(&paths, config.file.direct, writes).map_err(BenchError::RawLoop)?;
        Box::new(RawLoop::new(target, raw).map_err(BenchError::RawLoop)?)
    })
}

/// Sets the reference up and measures its first half on `core` (this
/// thread is pinned there); `None` without `--reference`.
pub(crate) fn before(
    config: &BenchConfig,
    files: &[Vec<BenchFile>],
    core: usize,
) -> Result<Option<Before>, BenchError> {
    if !config.reference {
        return Ok(None);
    }
    Ok(Some(if config.storage_backed() {
        let mut raw = raw_loop(config, files)?;
        pin_current_thread(core)?;
        let result = raw.run();
        Before::Raw(raw, result)
    } else {
        let mut buffers = ReferenceBuffers::try_new(ReferenceConfig {
            io_size: config.io_size as usize,
            runtime: half(config),
            ..ReferenceConfig::default()
        })?;
        pin_current_thread(core)?;
        let result = buffers.run();
        Before::Copy(buffers, result)
    }))
}

/// Measures the second half on `core` and puts the reference, and the
/// run's ratio to it, in `report` (`devices` devices of the run).
pub(crate) fn after(
    before: Before,
    config: &BenchConfig,
    devices: usize,
    core: usize,
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    pin_current_thread(core)?;
    match before {
        Before::Copy(mut buffers, before) => {
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
        Before::Raw(mut raw, before) => {
            let after = raw.run();
            let mean = (before.rate() + after.rate()) / 2.0;
            let mut latencies = Latencies::new();
            latencies.merge(&before.latencies);
            latencies.merge(&after.latencies);
            let ios = before.ios + after.ios;
            let latency_ns = latencies.summary();
            if let Some(why) = before.first_error.as_ref().or(after.first_error.as_ref()) {
                report.notes.push(format!("raw {} loop: {why}", raw.kind()));
            }
            report.reference = Some(Reference::IoUring(RawLoopReport {
                kind: raw.kind().into(),
                ios_per_sec: mean,
                before_ios_per_sec: before.rate(),
                after_ios_per_sec: after.rate(),
                ratio: if mean > 0.0 { report.iops / mean } else { 0.0 },
                p50_excess_ns: report.latency_ns.p50 as i64 - latency_ns.p50 as i64,
                latency_ns,
                iodepth: config.iodepth * devices as u32,
                fixed_buffers: raw.fixed_buffers(),
                submit_syscalls_per_io: if ios == 0 {
                    0.0
                } else {
                    (before.enters + after.enters) as f64 / ios as f64
                },
                errors: before.errors + after.errors,
            }));
        }
    }
    Ok(())
}
