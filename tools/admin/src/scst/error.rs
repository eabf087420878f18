//! [`ScstAdminError`]: what can go wrong in `dataplane scst`, each worded
//! to say what to do about it.

use std::io;
use std::path::PathBuf;

use dataplane::kernfs::KernfsError;

/// Errors of `dataplane scst` (LUN management through SCST's sysfs). Each
/// message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ScstAdminError {
    /// A value is invalid; the message names it and says what is wrong.
    #[error("{0}")]
    Invalid(String),
    /// Not running as root.
    #[error(
        "must run as root (effective uid is {euid}): /sys/kernel/scst_tgt is writable by root only"
    )]
    NotRoot {
        /// The effective uid.
        euid: u32,
    },
    /// `/sys/kernel/scst_tgt` does not exist.
    #[error("SCST is not loaded ({} does not exist): modprobe scst", root.display())]
    ScstNotLoaded {
        /// The SCST sysfs root.
        root: PathBuf,
    },
    /// The target driver's directory does not exist.
    #[error(
        "SCST target driver {driver} is not loaded ({} does not exist): modprobe {module}",
        dir.display()
    )]
    TargetDriverMissing {
        /// `scst_local`, `iscsi`, ...
        driver: String,
        /// `<root>/targets/<driver>`.
        dir: PathBuf,
        /// The module to load.
        module: String,
    },
    /// The target does not exist.
    #[error("SCST target driver {driver} has no target {target:?} ({} does not exist){hint}", dir.display())]
    TargetMissing {
        /// The driver.
        driver: String,
        /// The target name.
        target: String,
        /// `<root>/targets/<driver>/<target>`.
        dir: PathBuf,
        /// How to create it (starts with ": " when present).
        hint: String,
    },
    /// No SCST device of that name.
    #[error(
        "no SCST device named {name:?} ({} does not exist): is `dataplane serve` running with an \
         [[scst]] device named {name:?}?",
        dir.display()
    )]
    DeviceNotRegistered {
        /// The device name.
        name: String,
        /// `<root>/devices/<name>`.
        dir: PathBuf,
    },
    /// The LUN number is taken.
    #[error(
        "LUN {lun} of {driver}/{target} is in use by device {device:?} ({}); choose another \
         --lun or remove it with `dataplane scst del-lun {device} --driver {driver} --target \
         {target} --lun {lun}`",
        dir.display()
    )]
    LunInUse {
        /// The driver.
        driver: String,
        /// The target.
        target: String,
        /// The LUN.
        lun: u64,
        /// The device that has it (`?` if unknown).
        device: String,
        /// `.../luns/<lun>`.
        dir: PathBuf,
    },
    /// The device has no such LUN in the target.
    #[error("{what}")]
    NoSuchLun {
        /// The full message.
        what: String,
    },
    /// A management command failed.
    #[error("writing {command:?} to {} failed: {error}{hint}", path.display())]
    Mgmt {
        /// The `mgmt` file.
        path: PathBuf,
        /// What was written.
        command: String,
        /// The OS error (or the result from `last_sysfs_mgmt_res`).
        error: io::Error,
        /// Extra advice (starts with "; " when present).
        hint: String,
    },
    /// A file under sysfs could not be read.
    #[error(transparent)]
    File(#[from] KernfsError),
    /// The scst_local target has no session, so no disk can appear.
    #[error(
        "LUN {lun} was added, but target {target:?} of scst_local has no session ({} is empty), \
         so no local disk appears: add one with `echo \"add_session {target} scst_local_host\" > \
         {}`",
        sessions.display(), mgmt.display()
    )]
    NoSession {
        /// The target.
        target: String,
        /// The LUN.
        lun: u64,
        /// `<target>/sessions`.
        sessions: PathBuf,
        /// `targets/scst_local/mgmt`.
        mgmt: PathBuf,
    },
    /// The LUN was added but no disk appeared in time.
    #[error(
        "LUN {lun} of scst_local/{target} was added but no disk appeared under {} within {secs} \
         s; the LUN is left in place (remove it with `dataplane scst del-lun {device} --target \
         {target} --lun {lun}`)",
        looked.display()
    )]
    NoDisk {
        /// The device.
        device: String,
        /// The target.
        target: String,
        /// The LUN.
        lun: u64,
        /// Where disks were looked for.
        looked: PathBuf,
        /// How long it waited.
        secs: f64,
    },
}
