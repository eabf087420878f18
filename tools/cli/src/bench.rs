//! `dataplane bench`: flags, progress lines and the final report.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use bench::initiator::{Pattern, SizeSplit};
use bench::outputs::Outputs;
use bench::{self, BdevKind, BenchConfig, FileConfig, Frontend, Progress, RbdConfig};
use clap::{Args, ValueEnum};
use reactor::IdlePolicy;

use crate::args::parse_size;

/// Flags of `dataplane bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Kernel interface to simulate.
    #[arg(long, value_enum, default_value_t = FrontendArg::Tcmu)]
    frontend: FrontendArg,
    /// Block device behind each LUN.
    #[arg(long, value_enum, default_value_t = BdevArg::Ram)]
    bdev: BdevArg,
    /// Size of each device (e.g. 1GiB, 512M).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    size: u64,
    /// Logical block size of the devices in bytes (for --bdev nvme, the
    /// namespace's LBA size instead).
    #[arg(long, default_value_t = 4096)]
    block_size: u32,
    /// Children of a striped bdev (each a RAM bdev of size/width, or a
    /// file bdev with --path).
    #[arg(long, default_value_t = 4)]
    stripe_width: u32,
    /// Files of --bdev file (and of striped children): a file or block
    /// device; a directory, where the bench uses or creates
    /// dataplane-bench-<device>[.<child>].img; or a comma-separated list,
    /// one path per file (devices x stripe width, device by device).
    /// Missing files are created sparse, of --size (divided by the stripe
    /// width for a child). For --bdev nvme: an NVMe namespace's generic
    /// character device (/dev/ngXnY) per device.
    #[arg(long, value_delimiter = ',', value_name = "PATH")]
    path: Vec<PathBuf>,
    /// For --bdev rbd: the ceph.conf naming the monitors and the keyring
    /// (default: librados' search, $CEPH_CONF then /etc/ceph/ceph.conf).
    #[arg(long, value_name = "FILE")]
    ceph_conf: Option<PathBuf>,
    /// For --bdev rbd: the pool holding the images.
    #[arg(long, default_value = "rbd")]
    pool: String,
    /// For --bdev rbd: an existing RBD image per device (comma-separated),
    /// each at least --size.
    #[arg(long, value_delimiter = ',', value_name = "IMAGE")]
    image: Vec<String>,
    /// For --bdev rbd: the Ceph client id (client.<ID>; default admin).
    #[arg(long, value_name = "ID")]
    ceph_user: Option<String>,
    /// For --bdev rbd: the keyring with the client's key (default: what
    /// the configuration names).
    #[arg(long, value_name = "FILE")]
    keyring: Option<PathBuf>,
    /// Let a pattern that writes (write, randwrite, randrw) write to a
    /// device (a block device, an NVMe namespace, an RBD image): the data
    /// on it is lost.
    /// Without it such a run is refused.
    #[arg(long)]
    destroy_data: bool,
    /// O_DIRECT for file bdevs (the default).
    #[arg(long, overrides_with = "no_direct")]
    direct: bool,
    /// No O_DIRECT: file bdevs go through the page cache.
    #[arg(long, overrides_with = "direct")]
    no_direct: bool,
    /// IORING_SETUP_IOPOLL for file and nvme bdevs (devices with poll
    /// queues: nvme.poll_queues).
    #[arg(long)]
    iopoll: bool,
    /// IORING_SETUP_SQPOLL for file bdevs (a kernel submission thread each).
    #[arg(long)]
    sqpoll: bool,
    /// Do not offer the frontend's data memory to file and nvme bdevs as
    /// io_uring fixed buffers.
    #[arg(long)]
    no_fixed_buffers: bool,
    /// Strip (chunk) size of a striped bdev; a power of two.
    #[arg(long, default_value = "128KiB", value_parser = parse_size)]
    chunk: u64,
    /// Access pattern: read, write, randread, randwrite, randrw.
    #[arg(long, default_value = "randread")]
    rw: Pattern,
    /// Percent of reads for randrw.
    #[arg(long, default_value_t = 50)]
    rwmix_read: u32,
    /// Bytes per I/O (e.g. 4k, 64KiB, 1M); a multiple of --block-size.
    #[arg(long, default_value = "4KiB", value_parser = parse_size, conflicts_with = "bssplit")]
    bs: u64,
    /// A mix of I/O sizes instead of --bs, as fio's bssplit: SIZE/WEIGHT
    /// entries joined by ':' (e.g. 4k/50:64k/30:1m/20; a missing weight
    /// shares what the others leave of 100). Each a multiple of
    /// --block-size; the device is addressed in units of the largest.
    #[arg(long, value_name = "SPLIT", value_parser = SizeSplit::parse)]
    bssplit: Option<SizeSplit>,
    /// I/Os kept in flight per device.
    #[arg(long, default_value_t = 128)]
    iodepth: u32,
    /// Measured time in seconds (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    runtime: f64,
    /// Warm-up time in seconds before measuring.
    #[arg(long, default_value_t = 1.0)]
    ramp: f64,
    /// CPUs for the reactors, e.g. "1" or "1,2" or "1-3" (default: the last CPU).
    #[arg(long)]
    cores: Option<String>,
    /// CPU for the simulated kernel and initiator (default: the first CPU not
    /// used by a reactor).
    #[arg(long)]
    sim_core: Option<usize>,
    /// Devices (command rings) to drive (default: one per reactor).
    #[arg(long)]
    devices: Option<usize>,
    /// Reactor idle policy.
    #[arg(long, value_enum, default_value_t = IdleArg::Busy)]
    idle: IdleArg,
    /// With --idle adaptive: idle polls in a row before a reactor sleeps
    /// (as serve's reactors.idle_polls_before_sleep). Fewer leave more CPU
    /// to a bdev's own threads; more keep a reactor awake through the
    /// gaps of a QD 1 stream.
    #[arg(long, default_value_t = IdlePolicy::DEFAULT_IDLE_POLLS_BEFORE_SLEEP)]
    idle_polls: u32,
    /// With --idle adaptive: the shortest spin in microseconds after a
    /// reactor's last work before it sleeps (as serve's
    /// reactors.min_spin_us).
    #[arg(long, default_value_t = IdlePolicy::DEFAULT_MIN_SPIN.as_micros() as u64)]
    min_spin_us: u64,
    /// The simulated kernel's idle policy (TCMU): busy spins while
    /// commands are in flight; adaptive waits on the devices' doorbells
    /// after a run of idle iterations, leaving the CPU to a bdev's own
    /// threads (rbd: librbd and a local cluster on a small host).
    #[arg(long, value_enum, default_value_t = IdleArg::Busy)]
    sim_idle: IdleArg,
    /// Check every block read against per-block checksums of what was written.
    #[arg(long)]
    verify: bool,
    /// Print one JSON object on stdout instead of the text report.
    #[arg(long)]
    json: bool,
    /// Also run the reference loop (before and after the run) and report
    /// the ratio against it: the copy loop for RAM, a raw io_uring loop of
    /// the same pattern, depth and files for file bdevs, of NVMe commands
    /// (IORING_OP_URING_CMD) on the same namespaces for nvme bdevs.
    #[arg(long)]
    reference: bool,
    /// First measure how often the platform stalls a spinning thread on the
    /// bench's CPUs (the floor under tail latency).
    #[arg(long)]
    jitter: bool,
    /// Then run the other frontend (tcmu <-> scst) with the same settings in
    /// the same process and report the ratio.
    #[arg(long)]
    compare: bool,
    /// Simulated kernel work per command, in nanoseconds, spent on the
    /// simulated kernel's thread (half at submission, half at completion,
    /// and as much again for each batch of completions taken), as a real
    /// kernel's paths run on the initiator's CPU: commands then arrive one
    /// by one, and batching completions saves the initiator's time.
    /// Default 1000; 0 with --reference (and for `0`): a kernel that costs
    /// nothing, the handler's own ceiling.
    #[arg(long, value_name = "NS")]
    kernel_ns: Option<u64>,
    /// Seed for offsets and data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// TCMU command ring size (mailbox included), like cmd_ring_size_mb.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    ring_size: u64,
    /// TCMU data area size (default: enough for iodepth x bs, at least 64 MiB).
    #[arg(long, value_parser = parse_size)]
    data_area: Option<u64>,
    /// Serve Prometheus metrics of the running devices at
    /// http://ADDR/metrics (port 0 picks a free port; the address is
    /// logged at start).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Write the run's end-to-end latency distribution to FILE in
    /// HdrHistogram's percentile-distribution text format (microseconds).
    /// With --compare, one file per frontend: the frontend's name goes
    /// before the extension (run.hgrm -> run.tcmu.hgrm, run.scst.hgrm).
    #[arg(long, value_name = "FILE")]
    histogram: Option<PathBuf>,
    /// Draw IOPS over time and the latency percentile curve to FILE.svg
    /// (both frontends on one chart with --compare).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FrontendArg {
    /// LIO's TCMU command ring.
    Tcmu,
    /// SCST's scst_user (doorbells count ioctls).
    Scst,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BdevArg {
    /// Anonymous memory.
    Ram,
    /// Completes without touching data.
    Null,
    /// RAID0 over RAM children (file children with --path).
    Striped,
    /// A file or block device through io_uring (needs --path).
    File,
    /// An NVMe namespace through I/O passthrough (needs --path /dev/ngXnY).
    Nvme,
    /// A Ceph RBD image through librbd (needs --image, and --ceph-conf
    /// unless /etc/ceph/ceph.conf names the cluster).
    Rbd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum IdleArg {
    /// Spin: lowest latency, one CPU per reactor.
    Busy,
    /// Sleep in epoll after a run of idle polls.
    Adaptive,
}

/// Parses "1", "1,3", "0-2,5" into a list of CPU numbers.
pub fn parse_cores(list: &str) -> Result<Vec<usize>> {
    let mut cores = Vec::new();
    for part in list.split(',').map(str::trim) {
        if part.is_empty() {
            bail!("--cores {list:?}: empty entry");
        }
        let parse = |s: &str| -> Result<usize> {
            s.trim()
                .parse()
                .with_context(|| format!("--cores {list:?}: {s:?} is not a CPU number"))
        };
        if let Some((a, b)) = part.split_once('-') {
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                bail!("--cores {list:?}: range {part} is reversed");
            }
            cores.extend(a..=b);
        } else {
            cores.push(parse(part)?);
        }
    }
    let mut sorted = cores.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != cores.len() {
        bail!("--cores {list:?}: a CPU is listed twice");
    }
    Ok(cores)
}

fn seconds(flag: &str, value: f64, allow_zero: bool) -> Result<Duration> {
    if !value.is_finite() || value < 0.0 || (!allow_zero && value == 0.0) {
        bail!("--{flag} {value}: must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

impl BenchArgs {
    fn into_config(self) -> Result<(BenchConfig, Flags)> {
        let cores = match &self.cores {
            Some(list) => parse_cores(list)?,
            None => Vec::new(),
        };
        if !matches!(self.bdev, BdevArg::Rbd) {
            let rbd_flags = [
                ("--ceph-conf", self.ceph_conf.is_some()),
                ("--image", !self.image.is_empty()),
                ("--ceph-user", self.ceph_user.is_some()),
                ("--keyring", self.keyring.is_some()),
                ("--pool", self.pool != "rbd"),
            ];
            if let Some((flag, _)) = rbd_flags.iter().find(|(_, given)| *given) {
                bail!("{flag} is for --bdev rbd");
            }
        }
        let config = BenchConfig {
            frontend: match self.frontend {
                FrontendArg::Tcmu => Frontend::Tcmu,
                FrontendArg::Scst => Frontend::Scst,
            },
            bdev: match self.bdev {
                BdevArg::Ram => BdevKind::Ram,
                BdevArg::Null => BdevKind::Null,
                BdevArg::Striped => BdevKind::Striped {
                    width: self.stripe_width,
                    chunk: self.chunk,
                },
                BdevArg::File => BdevKind::File,
                BdevArg::Nvme => BdevKind::Nvme,
                BdevArg::Rbd => BdevKind::Rbd,
            },
            size: self.size,
            block_size: self.block_size,
            pattern: self.rw,
            rwmix_read: self.rwmix_read,
            io_size: match &self.bssplit {
                Some(split) => split.largest(),
                None => self.bs,
            },
            bssplit: self.bssplit,
            iodepth: self.iodepth,
            runtime: seconds("runtime", self.runtime, false)?,
            ramp: seconds("ramp", self.ramp, true)?,
            cores,
            sim_core: self.sim_core,
            devices: self.devices,
            idle: match self.idle {
                IdleArg::Busy => IdlePolicy::Busy,
                IdleArg::Adaptive => IdlePolicy::Adaptive {
                    idle_polls_before_sleep: self.idle_polls,
                    min_spin: Duration::from_micros(self.min_spin_us),
                    max_sleep: IdlePolicy::DEFAULT_MAX_SLEEP,
                },
            },
            sim_idle: match self.sim_idle {
                IdleArg::Busy => IdlePolicy::Busy,
                // A short spin: the simulated kernel wakes on the doorbell.
                IdleArg::Adaptive => IdlePolicy::Adaptive {
                    idle_polls_before_sleep: 100,
                    min_spin: Duration::ZERO,
                    max_sleep: Duration::from_millis(1),
                },
            },
            verify: self.verify,
            kernel_cost: Duration::from_nanos(self.kernel_ns.unwrap_or(if self.reference {
                0
            } else {
                BenchConfig::DEFAULT_KERNEL_NS
            })),
            reference: self.reference,
            jitter: self.jitter,
            compare: self.compare,
            seed: self.seed,
            ring_size: self.ring_size,
            data_area: self.data_area,
            file: FileConfig {
                paths: self.path,
                direct: !self.no_direct,
                iopoll: self.iopoll,
                sqpoll: self.sqpoll,
                fixed_buffers: !self.no_fixed_buffers,
                destroy_data: self.destroy_data,
            },
            rbd: RbdConfig {
                conf: self.ceph_conf,
                pool: self.pool,
                images: self.image,
                user: self.ceph_user,
                keyring: self.keyring,
            },
        };
        let flags = Flags {
            json: self.json,
            quiet: self.quiet,
            histogram: self.histogram,
            plot: self.plot,
        };
        Ok((config, flags))
    }
}

/// The flags that shape the output rather than the run.
struct Flags {
    json: bool,
    quiet: bool,
    histogram: Option<PathBuf>,
    plot: Option<PathBuf>,
}

fn progress_line(p: &Progress) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "[{:>5.1}s] {:>10.0} IOPS {:>9.1} MiB/s  p99 {:>8} us  errors {}  mismatches {}{}",
        p.elapsed.as_secs_f64(),
        p.iops,
        p.bytes_per_sec / (1 << 20) as f64,
        dataplane::latency::us(p.p99_ns),
        p.errors,
        p.verify_mismatches,
        if p.ramping { "  (warm-up)" } else { "" },
    );
}

/// Runs `dataplane bench`.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let metrics_listen = args.metrics_listen.clone();
    let (config, flags) = args.into_config()?;
    let quiet = flags.quiet;
    let metrics = match &metrics_listen {
        Some(addr) => {
            let (endpoint, catalog) = crate::metrics::listen(addr)?;
            tracing::info!(
                target: "dataplane bench",
                "metrics at http://{}/metrics",
                endpoint.local_addr()
            );
            Some((endpoint, catalog))
        }
        None => None,
    };
    // Opened now: a bad path fails here, not after the run.
    let outputs = Outputs::open(
        flags.histogram.as_deref(),
        flags.plot.as_deref(),
        config.frontend,
        config.compare,
    )?;
    let catalog = metrics.as_ref().map(|(_, catalog)| catalog.as_ref());
    let (report, traces) = match bench::run_traced(&config, catalog, |p| {
        if !quiet {
            progress_line(p);
        }
    }) {
        Ok(run) => run,
        Err(e) => {
            outputs.discard();
            return Err(e.into());
        }
    };
    if flags.json {
        let text = serde_json::to_string_pretty(&report).context("encoding the report")?;
        println!("{text}");
    } else {
        print!("{}", report.render_text());
    }
    // Whatever --quiet says: without it the figures mislead.
    if let Some(warning) = report.huge_page_warning(config.huge_page_bytes(report.devices)) {
        tracing::warn!(target: "dataplane bench", "{warning}");
    }
    // After the report: a file that cannot be written loses no figures.
    for path in outputs.write(&report, &traces)? {
        if !quiet {
            tracing::info!(target: "dataplane bench", "wrote {}", path.display());
        }
    }
    // Data errors make the run fail, so scripts and CI notice them.
    let compared_bad = report
        .compare
        .as_ref()
        .is_some_and(|c| c.errors != 0 || c.verify_mismatches != 0);
    if report.errors != 0 || report.verify_mismatches != 0 || compared_bad {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists() {
        assert_eq!(parse_cores("1").unwrap(), [1]);
        assert_eq!(parse_cores("0-2, 5").unwrap(), [0, 1, 2, 5]);
        assert!(parse_cores("2-1").is_err());
        assert!(parse_cores("1,1").is_err());
        assert!(parse_cores("a").is_err());
        assert!(parse_cores("1,").is_err());
    }
}
