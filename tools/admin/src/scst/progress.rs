//! What `add-lun` and `del-lun` report as they go ([`AdminProgress`], the
//! stable output lines of `dataplane scst`) and what `add-lun` made
//! ([`AddedLun`]).

use std::fmt;
use std::path::PathBuf;

use dataplane::scst::local_disk::QueueDepthChange;

/// Something reported as soon as it is known (the stable output lines of
/// `dataplane scst`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminProgress {
    /// The LUN was added. `lun: <driver>/<target>/<lun>`.
    Lun {
        /// Driver.
        driver: String,
        /// Target.
        target: String,
        /// LUN.
        lun: u64,
    },
    /// A local disk appeared. `disk: /dev/sdX`.
    Disk(PathBuf),
    /// A local disk's queue depth was raised to the device's.
    /// `queue depth: /dev/sdX 3 -> 64`, or when the write failed
    /// `queue depth: /dev/sdX 3, not raised to 64: <error>`.
    QueueDepth(QueueDepthChange),
    /// A local disk was deleted. `removed: /dev/sdX`.
    DiskRemoved(PathBuf),
    /// The LUN was deleted. `deleted: <driver>/<target>/<lun>`.
    Deleted {
        /// Driver.
        driver: String,
        /// Target.
        target: String,
        /// LUN.
        lun: u64,
    },
}

impl fmt::Display for AdminProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminProgress::Lun {
                driver,
                target,
                lun,
            } => write!(f, "lun: {driver}/{target}/{lun}"),
            AdminProgress::Disk(p) => write!(f, "disk: {}", p.display()),
            AdminProgress::QueueDepth(QueueDepthChange {
                disk,
                from,
                to,
                error: None,
            }) => write!(f, "queue depth: {} {from} -> {to}", disk.display()),
            AdminProgress::QueueDepth(QueueDepthChange {
                disk,
                from,
                to,
                error: Some(e),
            }) => write!(
                f,
                "queue depth: {} {from}, not raised to {to}: {e}",
                disk.display()
            ),
            AdminProgress::DiskRemoved(p) => write!(f, "removed: {}", p.display()),
            AdminProgress::Deleted {
                driver,
                target,
                lun,
            } => write!(f, "deleted: {driver}/{target}/{lun}"),
        }
    }
}

/// What `add_lun` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedLun {
    /// `<target>/luns/<lun>`.
    pub lun_dir: PathBuf,
    /// The local disks (scst_local: one per session).
    pub disks: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_stable() {
        let lun = AdminProgress::Lun {
            driver: "scst_local".into(),
            target: "scst_local_tgt".into(),
            lun: 3,
        };
        assert_eq!(lun.to_string(), "lun: scst_local/scst_local_tgt/3");
        assert_eq!(
            AdminProgress::Disk("/dev/sdb".into()).to_string(),
            "disk: /dev/sdb"
        );
        let mut change = QueueDepthChange {
            disk: "/dev/sdb".into(),
            from: 3,
            to: 64,
            error: None,
        };
        let depth = AdminProgress::QueueDepth(change.clone());
        assert_eq!(depth.to_string(), "queue depth: /dev/sdb 3 -> 64");
        change.error = Some("Permission denied".into());
        let depth = AdminProgress::QueueDepth(change);
        assert_eq!(
            depth.to_string(),
            "queue depth: /dev/sdb 3, not raised to 64: Permission denied"
        );
        assert_eq!(
            AdminProgress::DiskRemoved("/dev/sdb".into()).to_string(),
            "removed: /dev/sdb"
        );
        let del = AdminProgress::Deleted {
            driver: "iscsi".into(),
            target: "iqn.x".into(),
            lun: 0,
        };
        assert_eq!(del.to_string(), "deleted: iscsi/iqn.x/0");
    }
}
