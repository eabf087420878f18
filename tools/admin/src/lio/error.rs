//! [`LioError`]: what can go wrong in `dataplane lio`, each worded to say
//! what to do about it.

use std::io;
use std::path::PathBuf;

use dataplane::kernfs::{FsOp, KernfsError};

use super::outcome::Rollback;

/// Errors of `dataplane lio`. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LioError {
    /// Not running as root.
    #[error("must run as root (effective uid is {euid}): LIO's configfs is writable by root only")]
    NotRoot {
        /// The effective uid.
        euid: u32,
    },
    /// A value is invalid.
    #[error("{0}")]
    Invalid(String),
    /// configfs is not mounted where LIO's directory should be.
    #[error(
        "configfs is not mounted on {} ({} does not exist): mount it with \
         `mount -t configfs none {}`{}",
        mount_point.display(), target.display(), mount_point.display(),
        if *mount_point_missing { " (and `modprobe configfs` first: the mount point is missing too)" } else { "" }
    )]
    ConfigfsNotMounted {
        /// Where configfs should be mounted (`/sys/kernel/config`).
        mount_point: PathBuf,
        /// LIO's directory (`/sys/kernel/config/target`).
        target: PathBuf,
        /// The mount point itself does not exist.
        mount_point_missing: bool,
    },
    /// A kernel module is not loaded.
    #[error("kernel module {module} is not loaded ({why}): load it with `modprobe {module}`")]
    ModuleNotLoaded {
        /// The module.
        module: &'static str,
        /// How that was detected.
        why: String,
    },
    /// The device name is taken.
    #[error("TCMU device name {name:?} is already in use: {} exists", path.display())]
    NameInUse {
        /// The name.
        name: String,
        /// The existing directory.
        path: PathBuf,
    },
    /// No such device.
    #[error("no TCMU device named {name:?}: {looked_in}")]
    NoSuchDevice {
        /// The name.
        name: String,
        /// Where it was looked for.
        looked_in: String,
    },
    /// The name exists in several HBAs.
    #[error("TCMU device {name:?} exists in several HBAs ({hbas}); choose one with --hba")]
    Ambiguous {
        /// The name.
        name: String,
        /// The HBA directories, comma-separated.
        hbas: String,
    },
    /// The device belongs to another handler (its `dev_config` names
    /// another subtype).
    #[error(
        "TCMU device {name:?} ({}) belongs to handler subtype {theirs:?}, not {ours:?}: it is not \
         ours to delete",
        dir.display()
    )]
    OtherHandler {
        /// The name.
        name: String,
        /// The device directory.
        dir: PathBuf,
        /// The subtype in its `dev_config`.
        theirs: String,
        /// The subtype asked for.
        ours: String,
    },
    /// The device is exported through a fabric `lio` does not manage.
    #[error(
        "TCMU device {name:?} is exported through {} (not a tcm_loop LUN): remove that LUN first",
        link.display()
    )]
    ForeignExport {
        /// The name.
        name: String,
        /// The LUN link.
        link: PathBuf,
    },
    /// A configfs change failed.
    #[error("{op} failed: {error}{hint}")]
    Step {
        /// The change.
        op: FsOp,
        /// The OS error.
        error: io::Error,
        /// Extra advice (starts with "; " when present).
        hint: String,
    },
    /// A file could not be read or parsed.
    #[error(transparent)]
    File(#[from] KernfsError),
    /// No UIO device appeared after `enable`.
    #[error(
        "no UIO device named tcm-user/{hba}/{name}/... appeared under {} within {secs} s \
         after enable (is the uio module loaded?)",
        class.display()
    )]
    NoUio {
        /// HBA.
        hba: u32,
        /// Device name.
        name: String,
        /// `<sysfs>/class/uio`.
        class: PathBuf,
        /// How long it waited.
        secs: f64,
    },
    /// No handler opened the UIO device, so the LUN was not exported.
    #[error(
        "no process opened /dev/{uio} within {secs} s, so the LUN was not exported (the kernel's \
         SCSI scan would hang without a handler): is `dataplane serve` running with subtype \
         {subtype:?} and a bdev named {bdev:?}?"
    )]
    NoHandler {
        /// The UIO device.
        uio: String,
        /// dev_config's subtype.
        subtype: String,
        /// dev_config's bdev.
        bdev: String,
        /// How long it waited.
        secs: f64,
    },
    /// The LUN was linked but no disk appeared; nothing was undone.
    #[error(
        "the LUN {} is linked but no disk appeared under {} within {secs} s: is `dataplane serve` \
         running with a bdev named {bdev:?}? The device is left in place; remove it with \
         `dataplane lio delete {name}`",
        lun_dir.display(), scsi_dir.display()
    )]
    NoDisk {
        /// Device name.
        name: String,
        /// dev_config's bdev.
        bdev: String,
        /// The LUN directory.
        lun_dir: PathBuf,
        /// `<sysfs>/bus/scsi/devices/H:C:T:L/block`.
        scsi_dir: PathBuf,
        /// How long it waited.
        secs: f64,
    },
    /// `create` failed and undid what it had made.
    #[error("{cause}; {rollback}")]
    RolledBack {
        /// Why it failed.
        cause: Box<LioError>,
        /// What was undone.
        rollback: Rollback,
    },
}
