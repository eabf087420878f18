//! `dataplane lio`: create, delete and list TCMU devices in LIO's configfs.
//!
//! The work is done by [`admin::lio`]; this is the command line. Output
//! lines meant for scripts: `uio: uioN` and `disk: /dev/sdX` from `create`,
//! `deleted: NAME` from `delete`, and `list --json`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use admin::lio::{CompletionCpu, CreateSpec, Lio, LioDevice, Progress, DEFAULT_SUBTYPE};
use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use dataplane::kernfs::Roots;

use crate::args::{parse_seconds, parse_size};

/// Flags of `dataplane lio`.
#[derive(Debug, Args)]
pub struct LioArgs {
    #[command(subcommand)]
    command: LioCommand,
    /// LIO's configfs directory (tests point it into a fake tree).
    #[arg(
        long,
        global = true,
        hide = true,
        default_value = "/sys/kernel/config/target"
    )]
    configfs_root: PathBuf,
    /// sysfs root.
    #[arg(long, global = true, hide = true, default_value = "/sys")]
    sysfs_root: PathBuf,
    /// Device node directory.
    #[arg(long, global = true, hide = true, default_value = "/dev")]
    dev_root: PathBuf,
    /// procfs root.
    #[arg(long, global = true, hide = true, default_value = "/proc")]
    proc_root: PathBuf,
}

#[derive(Debug, Subcommand)]
enum LioCommand {
    /// Create a TCMU device served by `dataplane serve` (with --loopback, also
    /// a local SCSI disk through tcm_loop).
    #[command(after_help = CREATE_AFTER_HELP)]
    Create(CreateArgs),
    /// Delete a TCMU device and its tcm_loop LUNs (reverse order of create).
    Delete(DeleteArgs),
    /// List TCMU devices.
    List(ListArgs),
}

const CREATE_AFTER_HELP: &str = "\
Prints `uio: uioN` once the device is enabled and, with --loopback,
`disk: /dev/sdX` once the disk appears. With --loopback, `dataplane serve`
(with a bdev named BDEV) must be running: the LUN is linked only once a
handler has the UIO device open. Kernel modules are never loaded
implicitly: target_core_user (and tcm_loop for --loopback) must be loaded.";

#[derive(Debug, Args)]
struct CreateArgs {
    /// The device's configfs name: core/user_<HBA>/<NAME>.
    name: String,
    /// The bdev (a [[bdev]] name in serve's config) that serves the device.
    #[arg(long)]
    bdev: String,
    /// Device size (e.g. 1GiB, 512MiB, 1073741824); a multiple of the block size.
    #[arg(long, value_parser = parse_size)]
    size: u64,
    /// Logical block size in bytes: 512, 1024, 2048 or 4096.
    #[arg(long, default_value_t = 512)]
    block_size: u32,
    /// TCMU HBA index (core/user_<HBA>).
    #[arg(long, default_value_t = 0)]
    hba: u32,
    /// Handler subtype: dev_config=<SUBTYPE>/<BDEV>.
    #[arg(long, default_value = DEFAULT_SUBTYPE)]
    subtype: String,
    /// hw_max_sectors: the largest command in blocks [default: 1 MiB in blocks, the
    /// LUN's default transfer limit: 2048 at 512 B, 256 at 4 KiB].
    #[arg(long)]
    max_sectors: Option<u32>,
    /// max_data_area_mb: the ring's data area in MiB.
    #[arg(long, default_value_t = 64)]
    max_data_area_mb: u32,
    /// cmd_time_out in seconds (0 = never; a dead handler then hangs I/O).
    #[arg(long, default_value_t = 30)]
    cmd_time_out: u32,
    /// Export the device through a tcm_loop LUN and print the disk.
    #[arg(long)]
    loopback: bool,
    /// tcm_loop target WWN (naa. + 16 hex digits); default: derived from HBA and NAME.
    #[arg(long, requires = "loopback")]
    wwn: Option<String>,
    /// Where the tcm_loop target runs its commands' completions:
    /// `submitter` (the initiator's CPU, the kernel's default), `completer`
    /// (the reactor's core, which frees the initiator's CPUs: more IOPS at
    /// queue depth, more latency at QD 1) or a CPU number. Applies to every
    /// LUN of the WWN; needs Linux 5.14. `dataplane serve` switches between
    /// the first two with the load unless its `[tcmu] completion_affinity`
    /// is "kernel".
    #[arg(long, requires = "loopback", default_value = "submitter")]
    completion_cpu: CompletionCpu,
    /// Seconds to wait for a handler to open the UIO device, and then for the disk.
    #[arg(long, default_value_t = 15.0, value_parser = parse_seconds)]
    timeout: f64,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    /// The device's configfs name.
    name: String,
    /// TCMU HBA index (default: the only HBA that has a device NAME).
    #[arg(long)]
    hba: Option<u32>,
    /// The handler subtype the device must have (dev_config=<SUBTYPE>/...):
    /// another handler's device is refused.
    #[arg(long, default_value = DEFAULT_SUBTYPE)]
    subtype: String,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
    /// Only devices of this handler subtype.
    #[arg(long, default_value = DEFAULT_SUBTYPE)]
    subtype: String,
    /// Every TCMU device, whatever its subtype.
    #[arg(long, conflicts_with = "subtype")]
    all: bool,
}

/// Runs `dataplane lio`.
pub fn run(args: LioArgs) -> Result<ExitCode> {
    let roots = Roots {
        configfs: args.configfs_root,
        sysfs: args.sysfs_root,
        dev: args.dev_root,
        proc: args.proc_root,
        ..Roots::default()
    };
    let mut lio = Lio::new(roots);
    // Errors are printed by their Display alone (which already includes
    // the OS error), not as an anyhow chain that would repeat it.
    match args.command {
        LioCommand::Create(c) => {
            lio.timeout = Duration::from_secs_f64(c.timeout);
            let spec = CreateSpec {
                name: c.name,
                bdev: c.bdev,
                size: c.size,
                block_size: c.block_size,
                hba: c.hba,
                subtype: c.subtype,
                max_sectors: c.max_sectors,
                max_data_area_mb: c.max_data_area_mb,
                cmd_time_out: c.cmd_time_out,
                loopback: c.loopback,
                wwn: c.wwn,
                completion_cpu: c.completion_cpu,
            };
            let mut report = |p: &Progress| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{p}");
                let _ = out.flush();
            };
            lio.create(&spec, &mut report).map_err(|e| anyhow!("{e}"))?;
        }
        LioCommand::Delete(d) => {
            lio.delete_of_subtype(&d.name, d.hba, &d.subtype)
                .map_err(|e| anyhow!("{e}"))?;
            println!("deleted: {}", d.name);
        }
        LioCommand::List(l) => {
            let subtype = (!l.all).then_some(l.subtype.as_str());
            let devices = lio.list(subtype).map_err(|e| anyhow!("{e}"))?;
            if l.json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                print!("{}", table(&devices));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The text form of `list`: a header and one aligned row per device, `-`
/// for unknown values.
fn table(devices: &[LioDevice]) -> String {
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let mut rows: Vec<[String; 8]> = vec![[
        "NAME", "HBA", "SUBTYPE", "BDEV", "SIZE", "BLOCK", "UIO", "DISK",
    ]
    .map(str::to_owned)];
    for d in devices {
        rows.push([
            d.name.clone(),
            d.hba.to_string(),
            dash(d.subtype.clone()),
            dash(d.bdev.clone()),
            dash(d.size.map(|s| s.to_string())),
            dash(d.block_size.map(|b| b.to_string())),
            dash(d.uio.clone()),
            dash(d.disk.clone()),
        ]);
    }
    crate::table::aligned(&rows)
}
