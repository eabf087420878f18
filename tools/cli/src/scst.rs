//! `dataplane scst`: add a dataplane SCST device as a LUN of scst_local or
//! an iSCSI target through /sys/kernel/scst_tgt, remove it, list devices.
//!
//! The work is done by [`admin::scst`]; this is the command
//! line. Output lines meant for scripts: `lun: DRIVER/TARGET/N`, `disk:
//! /dev/sdX` and `queue depth: /dev/sdX FROM -> TO` from `add-lun`,
//! `removed: /dev/sdX` and `deleted:
//! DRIVER/TARGET/N` from `del-lun`, and `list --json`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use admin::scst::{
    default_target, AdminProgress, LunSpec, ScstAdmin, ScstDeviceEntry, DEFAULT_DRIVER,
};
use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use dataplane::kernfs::Roots;

use crate::args::parse_seconds;

/// Flags of `dataplane scst`.
#[derive(Debug, Args)]
pub struct ScstArgs {
    #[command(subcommand)]
    command: ScstCommand,
    /// SCST's sysfs root (tests point it into a fake tree).
    #[arg(
        long,
        global = true,
        hide = true,
        default_value = "/sys/kernel/scst_tgt"
    )]
    scst_root: PathBuf,
    /// sysfs root.
    #[arg(long, global = true, hide = true, default_value = "/sys")]
    sysfs_root: PathBuf,
    /// Device node directory.
    #[arg(long, global = true, hide = true, default_value = "/dev")]
    dev_root: PathBuf,
}

#[derive(Debug, Subcommand)]
enum ScstCommand {
    /// Export a device registered by `dataplane serve` as a LUN (with
    /// scst_local, also a local SCSI disk).
    #[command(name = "add-lun", after_help = ADD_AFTER_HELP)]
    AddLun(AddLunArgs),
    /// Remove a device's LUNs from a target (with scst_local, deleting the
    /// local disk first).
    #[command(name = "del-lun")]
    DelLun(DelLunArgs),
    /// List the SCST devices `dataplane serve` registered, with their LUNs.
    List(ListArgs),
}

const ADD_AFTER_HELP: &str = "\
Prints `lun: DRIVER/TARGET/N` once the LUN is added and, with scst_local,
`disk: /dev/sdX` once the local disk appears, then `queue depth: /dev/sdX 3
-> 64` when it raises the disk's queue depth to the device's
max_tgt_dev_commands (scst_local leaves its disks at 3 on current kernels).
`dataplane serve` must be
running with an [[scst]] device named DEVICE: adding the LUN makes the
kernel send it ATTACH_SESS and wait up to 5 s for the answer. Kernel
modules are never loaded implicitly: scst, scst_user and scst_local (or
iscsi-scst) must be loaded.";

#[derive(Debug, Args)]
struct AddLunArgs {
    /// The SCST device name (an [[scst]] device of `dataplane serve`).
    device: String,
    /// Target driver: scst_local (a local disk) or iscsi.
    #[arg(long, default_value = DEFAULT_DRIVER)]
    driver: String,
    /// Target name [default: scst_local_tgt with scst_local; required otherwise].
    #[arg(long)]
    target: Option<String>,
    /// LUN number (0 to 16383; each target needs a LUN 0).
    #[arg(long, default_value_t = 0)]
    lun: u64,
    /// Seconds to wait for the local disk (scst_local).
    #[arg(long, default_value_t = 15.0, value_parser = parse_seconds)]
    timeout: f64,
}

#[derive(Debug, Args)]
struct DelLunArgs {
    /// The SCST device name.
    device: String,
    /// Target driver: scst_local or iscsi.
    #[arg(long, default_value = DEFAULT_DRIVER)]
    driver: String,
    /// Target name [default: scst_local_tgt with scst_local; required otherwise].
    #[arg(long)]
    target: Option<String>,
    /// Only this LUN (it must be DEVICE's); default: every LUN of DEVICE in the target.
    #[arg(long)]
    lun: Option<u64>,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
    /// Every SCST device (other handlers' too, fileio_tgt's and the
    /// kernel's), not only the dataplane's.
    #[arg(long)]
    all: bool,
}

/// `--target`, or the driver's default one.
fn target_or_default(driver: &str, target: Option<String>) -> Result<String> {
    match target.or_else(|| default_target(driver).map(str::to_owned)) {
        Some(t) => Ok(t),
        None => bail!("--target is required with --driver {driver}"),
    }
}

/// Runs `dataplane scst`.
pub fn run(args: ScstArgs) -> Result<ExitCode> {
    let roots = Roots {
        scst: args.scst_root,
        sysfs: args.sysfs_root,
        dev: args.dev_root,
        ..Roots::default()
    };
    let mut admin = ScstAdmin::new(roots);
    let mut report = |p: &AdminProgress| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{p}");
        let _ = out.flush();
    };
    // Errors are printed by their Display alone (which already includes
    // the OS error), not as an anyhow chain that would repeat it.
    match args.command {
        ScstCommand::AddLun(a) => {
            admin.timeout = Duration::from_secs_f64(a.timeout);
            let spec = LunSpec {
                device: a.device,
                target: target_or_default(&a.driver, a.target)?,
                driver: a.driver,
                lun: a.lun,
            };
            admin
                .add_lun(&spec, &mut report)
                .map_err(|e| anyhow!("{e}"))?;
        }
        ScstCommand::DelLun(d) => {
            let target = target_or_default(&d.driver, d.target)?;
            admin
                .del_lun(&d.device, &d.driver, &target, d.lun, &mut report)
                .map_err(|e| anyhow!("{e}"))?;
        }
        ScstCommand::List(l) => {
            let devices = admin.list(l.all).map_err(|e| anyhow!("{e}"))?;
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
/// for none.
fn table(devices: &[ScstDeviceEntry]) -> String {
    let mut rows: Vec<[String; 3]> = vec![["NAME", "HANDLER", "LUNS"].map(str::to_owned)];
    for d in devices {
        rows.push([
            d.name.clone(),
            d.handler.clone().unwrap_or_else(|| "-".into()),
            if d.luns.is_empty() {
                "-".into()
            } else {
                d.luns.join(",")
            },
        ]);
    }
    crate::table::aligned(&rows)
}
