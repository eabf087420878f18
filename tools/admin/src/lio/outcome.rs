//! What `create` and `delete` report and return: [`Progress`] (the stable
//! output lines), [`Created`], [`Deleted`], and what a failed `create`
//! undid ([`Rollback`]).

use std::fmt;
use std::io;
use std::path::PathBuf;

use dataplane::kernfs::FsOp;

/// Something `create` reports as soon as it is known (the stable output
/// lines of `dataplane lio create`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The UIO device appeared (`uio0`). Displays as `uio: uio0`.
    Uio(String),
    /// The tcm_loop disk appeared. Displays as `disk: /dev/sda`.
    Disk(PathBuf),
    /// The kernel has no `attrib/tmr_notification` (before Linux 5.11):
    /// aborts and resets end commands in the kernel without telling the
    /// handler, so their backend I/O runs on. Displays as a `note:` line.
    NoTmrNotification,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Uio(uio) => write!(f, "uio: {uio}"),
            Progress::Disk(path) => write!(f, "disk: {}", path.display()),
            Progress::NoTmrNotification => f.write_str(
                "note: this kernel has no attrib/tmr_notification (Linux < 5.11); \
                 task aborts will not reach the handler",
            ),
        }
    }
}

/// What `create` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// `core/user_<hba>/<name>`.
    pub device_dir: PathBuf,
    /// The UIO device (`uio0`).
    pub uio: String,
    /// The tcm_loop export, with `loopback`.
    pub loopback: Option<LoopbackLun>,
}

/// A tcm_loop LUN of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopbackLun {
    /// The target WWN.
    pub wwn: String,
    /// `loopback/<wwn>/tpgt_<t>/lun/lun_<n>`.
    pub lun_dir: PathBuf,
    /// The SCSI address `H:C:T:L`.
    pub scsi_address: String,
    /// The disk (`/dev/sdX`).
    pub disk: PathBuf,
}

/// What `delete` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The HBA the device was in.
    pub hba: u32,
    /// Every change, in order.
    pub ops: Vec<FsOp>,
}

/// What a failed `create` undid.
#[derive(Debug, Default)]
pub struct Rollback {
    /// Undone, in order.
    pub undone: Vec<FsOp>,
    /// Could not be undone (clean up by hand).
    pub failed: Vec<(FsOp, io::Error)>,
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.undone.is_empty() && self.failed.is_empty() {
            return f.write_str("nothing to undo");
        }
        if !self.undone.is_empty() {
            f.write_str("undone: ")?;
            for (i, op) in self.undone.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{op}")?;
            }
        }
        if !self.failed.is_empty() {
            if !self.undone.is_empty() {
                f.write_str("; ")?;
            }
            f.write_str("NOT undone (clean up by hand): ")?;
            for (i, (op, e)) in self.failed.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{op} ({e})")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_stable() {
        assert_eq!(Progress::Uio("uio3".into()).to_string(), "uio: uio3");
        assert_eq!(
            Progress::Disk("/dev/sdb".into()).to_string(),
            "disk: /dev/sdb"
        );
    }
}
