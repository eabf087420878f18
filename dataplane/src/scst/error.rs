//! [`ScstError`]: every error of the SCST control path (opening
//! `/dev/scst_user`, finding DEV_USER_VERSION, registering a device), each
//! worded to say what to do about it. The reasons the DEV_USER_VERSION
//! search gives ([`KernelStringError`], [`VersionMiss`]) are its own, in
//! [`super::version`].
//!
//! The errno-to-message mapping of the control ioctls lives here, in
//! [`ScstError::from_register_errno`], [`ScstError::from_open_errno`] and
//! [`ScstError::from_ioctl_errno`]; the hot-path ioctl
//! (REPLY_AND_GET_MULTI) reports plain errnos to the frontend instead.

use std::path::PathBuf;

use nix::errno::Errno;

use super::version::{KernelStringError, VersionMiss};

/// Errors of the SCST control path. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ScstError {
    /// `/dev/scst_user` does not exist and neither does
    /// `/sys/module/scst_user`: the module is not loaded.
    #[error(
        "scst_user is not loaded (no {}; modprobe scst_user): {} does not exist either \
         (load scst first if needed: modprobe scst)",
        path.display(), sysfs_module.display()
    )]
    ModuleNotLoaded {
        /// The device node that was opened.
        path: PathBuf,
        /// `<sysfs>/module/scst_user`.
        sysfs_module: PathBuf,
    },
    /// The module is loaded but the device node is missing.
    #[error(
        "scst_user is loaded ({} exists) but {} is missing: is devtmpfs mounted on /dev / udev \
         running? The node is a character device whose major is listed as scst_user in \
         /proc/devices (mknod {} c <major> 0)",
        sysfs_module.display(), path.display(), path.display()
    )]
    DeviceNodeMissing {
        /// The device node that was opened.
        path: PathBuf,
        /// `<sysfs>/module/scst_user`.
        sysfs_module: PathBuf,
    },
    /// Any other failure to open the device node.
    #[error("cannot open {}: {}{hint}", path.display(), errno_text(*.errno))]
    Open {
        /// The device node.
        path: PathBuf,
        /// The error.
        errno: Errno,
        /// Extra advice (starts with "; " when present).
        hint: &'static str,
    },
    /// A value in the device's configuration is invalid; the message names
    /// the option and its allowed values.
    #[error("{0}")]
    Invalid(String),
    /// REGISTER_DEVICE returned EINVAL: almost always a DEV_USER_VERSION
    /// mismatch.
    #[error(
        "registering SCST device {device:?} failed with EINVAL: DEV_USER_VERSION mismatch: this \
         handler offered {offered:?} (from {origin}); the kernel logs the version it expects in \
         dmesg ('Incorrect version of user device {device} (...). Expected: ...'); set it with \
         `version = \"...\"` in the device's [[scst]] config. EINVAL also means that this \
         /dev/scst_user fd already has a registered device, or that the kernel refused the block \
         size {block_size} or an option; dmesg names the cause"
    )]
    VersionMismatch {
        /// The device name.
        device: String,
        /// The version string passed to the kernel.
        offered: String,
        /// Where it came from.
        origin: String,
        /// The block size passed to the kernel.
        block_size: u32,
    },
    /// REGISTER_DEVICE returned EPERM: the license string was refused.
    #[error(
        "registering SCST device {device:?} failed with EPERM: scst_user refused the license \
         {license:?} (it accepts \"GPL\", \"GPL v2\", \"Dual BSD/GPL\", \"Dual MIT/GPL\", \
         \"Dual MPL/GPL\"; dmesg: 'Unsupported license of user device')"
    )]
    LicenseRefused {
        /// The device name.
        device: String,
        /// The license string passed to the kernel.
        license: String,
    },
    /// REGISTER_DEVICE returned EEXIST.
    #[error(
        "a device named {name:?} is already registered with SCST (another `dataplane serve`, a \
         fileio_tgt, or a vdisk device of that name: see /sys/kernel/scst_tgt/devices/{name}); \
         choose another name or remove the other device"
    )]
    NameTaken {
        /// The device name.
        name: String,
    },
    /// Another control ioctl failed.
    #[error("{op} of SCST device {device:?} failed: {}{hint}", errno_text(*.errno))]
    Ioctl {
        /// The ioctl (`REGISTER_DEVICE`, `SET_OPTIONS`, ...).
        op: &'static str,
        /// The device name.
        device: String,
        /// The error.
        errno: Errno,
        /// Extra advice (starts with "; " when present).
        hint: &'static str,
    },
    /// GET_OPTIONS after SET_OPTIONS returned different values.
    #[error("SCST device {device:?}: the kernel did not keep the options: {mismatches}")]
    OptionsNotKept {
        /// The device name.
        device: String,
        /// `option: set X, kernel has Y`, comma-separated.
        mismatches: String,
    },
    /// DEV_USER_VERSION was not configured and could not be found.
    #[error(
        "cannot find the DEV_USER_VERSION of the installed SCST: {}; set it with \
         `version = \"...\"` in the device's [[scst]] config (the kernel prints the expected \
         string in dmesg after a failed registration)",
        looked.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    VersionNotFound {
        /// What was looked at, and why each did not give the version.
        looked: Vec<VersionMiss>,
    },
    /// A module file holds several different DEV_USER_VERSION candidates.
    #[error(
        "{} holds several DEV_USER_VERSION candidates ({}); set the right one with \
         `version = \"...\"` in the device's [[scst]] config",
        path.display(), candidates.join(", ")
    )]
    VersionAmbiguous {
        /// The module file(s).
        path: PathBuf,
        /// The distinct candidates.
        candidates: Vec<String>,
    },
    /// A version string cannot be passed to the kernel.
    #[error("DEV_USER_VERSION {version:?} ({origin}) is unusable: {why}")]
    VersionUnusable {
        /// The string.
        version: String,
        /// Where it came from.
        origin: String,
        /// What is wrong with it.
        why: KernelStringError,
    },
}

/// `EINVAL: Invalid argument`: the errno's name and the C library's
/// description (nix's own descriptions differ, e.g. "Not a typewriter").
pub fn errno_text(errno: Errno) -> String {
    let described = std::io::Error::from_raw_os_error(errno as i32).to_string();
    let described = match described.rfind(" (os error ") {
        Some(i) => &described[..i],
        None => &described,
    };
    format!("{errno:?}: {described}")
}

/// Where a failed open/ioctl happened, for [`ScstError::from_ioctl_errno`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOp {
    /// `SCST_USER_SET_OPTIONS`.
    SetOptions,
    /// `SCST_USER_GET_OPTIONS`.
    GetOptions,
    /// `SCST_USER_FLUSH_CACHE`.
    FlushCache,
    /// `SCST_USER_DEVICE_CAPACITY_CHANGED`.
    CapacityChanged,
    /// `SCST_USER_PREALLOC_BUFFER`.
    PreallocBuffer,
}

impl ControlOp {
    /// The ioctl's name.
    pub fn name(self) -> &'static str {
        match self {
            ControlOp::SetOptions => "SET_OPTIONS",
            ControlOp::GetOptions => "GET_OPTIONS",
            ControlOp::FlushCache => "FLUSH_CACHE",
            ControlOp::CapacityChanged => "DEVICE_CAPACITY_CHANGED",
            ControlOp::PreallocBuffer => "PREALLOC_BUFFER",
        }
    }
}

/// What a REGISTER_DEVICE call offered, for [`ScstError::from_register_errno`].
#[derive(Debug, Clone, Copy)]
pub struct RegisterAttempt<'a> {
    /// The device name.
    pub device: &'a str,
    /// The DEV_USER_VERSION string passed.
    pub version: &'a str,
    /// Where the version came from (for the message).
    pub origin: &'a str,
    /// The license string passed.
    pub license: &'a str,
    /// The block size passed.
    pub block_size: u32,
}

impl ScstError {
    /// The error for a failed `open("/dev/scst_user")`. ENOENT is told
    /// apart by whether `sysfs_module` (`/sys/module/scst_user`) exists.
    pub fn from_open_errno(path: PathBuf, errno: Errno, sysfs_module: PathBuf) -> Self {
        match errno {
            Errno::ENOENT if sysfs_module.exists() => {
                ScstError::DeviceNodeMissing { path, sysfs_module }
            }
            Errno::ENOENT => ScstError::ModuleNotLoaded { path, sysfs_module },
            Errno::EACCES | Errno::EPERM => ScstError::Open {
                path,
                errno,
                hint: "; the node is root-only: run as root",
            },
            Errno::ENXIO | Errno::ENODEV => ScstError::Open {
                path,
                errno,
                hint: "; the node exists but no driver answers it (stale node after \
                       rmmod scst_user?): modprobe scst_user",
            },
            _ => ScstError::Open {
                path,
                errno,
                hint: "",
            },
        }
    }

    /// The error for a failed `SCST_USER_REGISTER_DEVICE` (reading of
    /// `dev_user_register_dev` / `dev_user_check_version` in scst_user.c:
    /// the license is checked before the version).
    pub fn from_register_errno(errno: Errno, attempt: &RegisterAttempt<'_>) -> Self {
        let device = attempt.device.to_owned();
        match errno {
            Errno::EINVAL => ScstError::VersionMismatch {
                device,
                offered: attempt.version.to_owned(),
                origin: attempt.origin.to_owned(),
                block_size: attempt.block_size,
            },
            Errno::EPERM => ScstError::LicenseRefused {
                device,
                license: attempt.license.to_owned(),
            },
            Errno::EEXIST => ScstError::NameTaken { name: device },
            Errno::EFAULT => ScstError::Ioctl {
                op: "REGISTER_DEVICE",
                device,
                errno,
                hint: "; the kernel could not read the device description or the version / \
                       license strings (they must be readable for 91 bytes)",
            },
            Errno::ENOTTY => ScstError::Ioctl {
                op: "REGISTER_DEVICE",
                device,
                errno,
                hint: "; the file is not /dev/scst_user",
            },
            _ => ScstError::Ioctl {
                op: "REGISTER_DEVICE",
                device,
                errno,
                hint: "",
            },
        }
    }

    /// The error for another failed control ioctl of a registered device.
    pub fn from_ioctl_errno(op: ControlOp, device: &str, errno: Errno) -> Self {
        let hint = match (op, errno) {
            (_, Errno::ENODEV) => "; no device is registered on this fd",
            (ControlOp::SetOptions, Errno::EINVAL) => {
                "; the kernel refused an option value (dmesg: 'Invalid option' or \
                 'Invalid SCSI option')"
            }
            (ControlOp::SetOptions | ControlOp::FlushCache, Errno::EBUSY) => {
                "; SCST could not suspend activity within 90 s (a hung device or a busy \
                 target); try again"
            }
            (ControlOp::PreallocBuffer, Errno::EINVAL) => "; the buffer is not page aligned",
            (ControlOp::PreallocBuffer, Errno::ENOMEM) => {
                "; the per-device SCST memory limit (scst_max_dev_cmd_mem) is reached"
            }
            _ => "",
        };
        ScstError::Ioctl {
            op: op.name(),
            device: device.to_owned(),
            errno,
            hint,
        }
    }

    /// The errno behind an ioctl error, if this is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            ScstError::Open { errno, .. } | ScstError::Ioctl { errno, .. } => Some(*errno),
            ScstError::ModuleNotLoaded { .. } | ScstError::DeviceNodeMissing { .. } => {
                Some(Errno::ENOENT)
            }
            ScstError::VersionMismatch { .. } => Some(Errno::EINVAL),
            ScstError::LicenseRefused { .. } => Some(Errno::EPERM),
            ScstError::NameTaken { .. } => Some(Errno::EEXIST),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt() -> RegisterAttempt<'static> {
        RegisterAttempt {
            device: "disk0",
            version: "3.11.0-preX",
            origin: "the configuration",
            license: "GPL",
            block_size: 4096,
        }
    }

    #[test]
    fn register_errnos_map_to_their_messages() {
        let e = ScstError::from_register_errno(Errno::EINVAL, &attempt());
        let msg = e.to_string();
        assert!(msg.starts_with(
            "registering SCST device \"disk0\" failed with EINVAL: DEV_USER_VERSION mismatch: \
             this handler offered \"3.11.0-preX\" (from the configuration); the kernel logs the \
             version it expects in dmesg ('Incorrect version of user device disk0 (...). \
             Expected: ...'); set it with `version = \"...\"`"
        ));
        assert!(msg.contains("already has a registered device"));
        assert!(msg.contains("block size 4096"));
        assert_eq!(e.errno(), Some(Errno::EINVAL));

        let msg = ScstError::from_register_errno(Errno::EPERM, &attempt()).to_string();
        assert!(msg.contains("refused the license \"GPL\""), "{msg}");
        let msg = ScstError::from_register_errno(Errno::EEXIST, &attempt()).to_string();
        assert!(
            msg.starts_with("a device named \"disk0\" is already registered"),
            "{msg}"
        );
        let msg = ScstError::from_register_errno(Errno::ENOMEM, &attempt()).to_string();
        assert_eq!(
            msg,
            "REGISTER_DEVICE of SCST device \"disk0\" failed: ENOMEM: Cannot allocate memory"
        );
    }

    #[test]
    fn open_enoent_tells_module_from_node() {
        let missing = PathBuf::from("/nonexistent/sys/module/scst_user");
        let e = ScstError::from_open_errno("/x/scst_user".into(), Errno::ENOENT, missing);
        assert!(e
            .to_string()
            .starts_with("scst_user is not loaded (no /x/scst_user; modprobe scst_user)"));
        // A directory that exists stands for a loaded module.
        let e = ScstError::from_open_errno("/x/scst_user".into(), Errno::ENOENT, "/".into());
        assert!(e
            .to_string()
            .starts_with("scst_user is loaded (/ exists) but /x/scst_user is missing"));
        let e = ScstError::from_open_errno("/x".into(), Errno::EACCES, "/".into());
        assert!(e.to_string().ends_with("run as root"), "{e}");
    }

    #[test]
    fn control_ioctl_hints() {
        let e = ScstError::from_ioctl_errno(ControlOp::SetOptions, "d", Errno::EBUSY);
        assert!(e.to_string().starts_with(
            "SET_OPTIONS of SCST device \"d\" failed: EBUSY: Device or resource busy; SCST \
             could not suspend activity"
        ));
        let e = ScstError::from_ioctl_errno(ControlOp::GetOptions, "d", Errno::ENODEV);
        assert!(e
            .to_string()
            .ends_with("no device is registered on this fd"));
        assert_eq!(e.errno(), Some(Errno::ENODEV));
    }
}
