//! [`Host`]: the system the server runs on, where its devices come from
//! (TCMU's UIO devices and configfs, SCST's `/dev/scst_user`).
//! [`SysHost`](super::SysHost) is the real one; tests provide hosts
//! whose devices are in-process kernel sides.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;

use crate::kernfs::{RealFs, Roots};
use crate::scst::driver::ScstDriver;
use crate::scst::error::ScstError;
use crate::scst::export::{export_lun, ExportError, Exported, LunAddress};
use crate::scst::ioctl::ScstFd;
use crate::scst::local_disk;
use crate::scst::version::{VersionSearch, VersionSource};
use crate::tcmu::discovery::{DiscoveryError, TcmuUioName};
use crate::tcmu::{Doorbell, SharedRegion, TcmuError};

/// A UIO device as found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundDevice {
    /// UIO minor (`uio<minor>`).
    pub minor: u32,
    /// Its UIO name, e.g. `tcm-user/0/disk0/dataplane/ram0`.
    pub uio_name: String,
}

/// What configfs says about a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceFacts {
    /// `hw_block_size`.
    pub block_size: u32,
    /// `hw_max_sectors` (in blocks).
    pub max_sectors: u32,
    /// `dev_size` in bytes.
    pub size: u64,
}

/// Why the host could not read, open, reset or unblock a TCMU device.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Another process holds the UIO device.
    #[error("the device is held by another process")]
    Busy,
    /// The device is not on the host (any more).
    #[error("no such device")]
    NoDevice,
    /// Reading sysfs or configfs, or writing a configfs action, failed.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// Opening or mapping the UIO device failed.
    #[error(transparent)]
    Tcmu(#[from] TcmuError),
}

/// The system the server runs on: where devices come from (TCMU's UIO
/// devices and configfs, SCST's `/dev/scst_user`).
pub trait Host: Send {
    /// Every UIO device present now.
    fn scan(&mut self) -> Vec<FoundDevice>;
    /// Block size, max sectors and size of a TCMU device.
    fn facts(&mut self, name: &TcmuUioName) -> Result<DeviceFacts, HostError>;
    /// True if another process holds the UIO device open (a handler is
    /// attached to it). Such a device is never opened, let alone reset.
    fn is_held(&mut self, device: &FoundDevice) -> bool;
    /// Opens and maps the device ([`HostError::Busy`] if another process
    /// holds it).
    fn open(&mut self, device: &FoundDevice) -> Result<(SharedRegion, Doorbell), HostError>;
    /// Blocks the device and resets its ring (in-flight commands complete
    /// with BUSY). Called only while this process holds the device.
    fn recover(&mut self, name: &TcmuUioName) -> Result<(), HostError>;
    /// Unblocks a device blocked by `recover`.
    fn unblock(&mut self, name: &TcmuUioName) -> Result<(), HostError>;
    /// The tcm_loop fabric's configfs directory, whose WWNs' completion
    /// CPU serve may switch with the load (see `serve::tcmu::affinity`);
    /// `None` (the default) where there is none to manage.
    fn loopback_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// Opens a new scst_user fd (`/dev/scst_user`, non-blocking) for the
    /// `[[scst]]` device `name`: one fd per device.
    fn open_scst(&mut self, name: &str) -> Result<Box<dyn ScstDriver>, ScstError>;
    /// Takes the fd of the `[[scst]]` device `name`, registered by a
    /// previous server that handed it over (see `handoff.rs`).
    fn adopt_scst(&mut self, name: &str, fd: OwnedFd) -> Result<Box<dyn ScstDriver>, ScstError> {
        let _ = name;
        Ok(Box::new(ScstFd::adopt(
            fd,
            Path::new(crate::scst::abi::DEV_USER_PATH),
        )?))
    }
    /// `SCST_USER_FLUSH_CACHE` on the fd of a device being handed over
    /// (from the control thread while its reactor serves it; see
    /// [`crate::scst::ioctl::flush_cache`]).
    fn flush_scst(&mut self, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        crate::scst::ioctl::flush_cache(fd)
    }
    /// The DEV_USER_VERSION to register SCST devices with: `configured`
    /// (a device's `version`) as given, else found on the machine
    /// ([`VersionSearch::system`]).
    fn dev_user_version(
        &mut self,
        configured: Option<&str>,
    ) -> Result<(String, VersionSource), ScstError> {
        VersionSearch::system().find(configured)
    }
    /// Exports the registered SCST device `device` as `at` (while it is
    /// polled: the kernel asks it to attach the target's sessions), unless
    /// that LUN maps it already ([`export_lun`] on the machine's sysfs).
    /// A LUN added to scst_local gets its local disks' queue depth raised
    /// once they appear, by a thread of its own (see
    /// [`crate::scst::local_disk`]).
    fn export_scst_lun(&mut self, device: &str, at: &LunAddress) -> Result<Exported, ExportError> {
        let exported = export_lun(&mut RealFs, &Roots::default(), device, at, EXPORT_TIMEOUT)?;
        if exported == Exported::Added && at.driver == local_disk::DRIVER {
            let (device, lun) = (device.to_owned(), at.clone());
            let spawned = std::thread::Builder::new()
                .name("scst-disk-depth".into())
                .spawn(move || {
                    let roots = Roots::default();
                    let at = lun;
                    let report =
                        local_disk::deepen_new_disks(&mut RealFs, &roots, &device, &at, DISK_WAIT);
                    for host in report.not_appeared {
                        tracing::warn!(
                            target: "dataplane serve",
                            "no disk of {device} ({at}) appeared on SCSI host{host} within {} s: \
                             its queue depth stays the kernel's (raise it in \
                             /sys/bus/scsi/devices/{host}:*/queue_depth)",
                            DISK_WAIT.as_secs()
                        );
                    }
                    for c in report.changes {
                        match c.error {
                            None => tracing::info!(
                                target: "dataplane serve",
                                "raised the queue depth of {} ({at}) from {} to {}",
                                c.disk.display(), c.from, c.to
                            ),
                            Some(e) => tracing::warn!(
                                target: "dataplane serve",
                                "the queue depth of {} ({at}) stays {}: {e}",
                                c.disk.display(), c.from
                            ),
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(target: "dataplane serve", "cannot watch the disks of {at}: {e}");
            }
        }
        Ok(exported)
    }
}

/// How long an `add` that SCST answers "pending" is waited for.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the local disks of a LUN added to scst_local are waited for.
const DISK_WAIT: Duration = Duration::from_secs(15);
