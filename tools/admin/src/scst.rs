//! SCST LUN management for `dataplane scst`, through SCST's sysfs tree
//! (`/sys/kernel/scst_tgt`): export a registered dataplane device as a LUN
//! of scst_local (a local `/dev/sdX`) or of an iSCSI target, remove it, and
//! list devices.
//!
//! # The tree (scst_sysfs.c, scst_local)
//! - `devices/<name>/handler` → `handlers/<handler>`. scst_user registers
//!   one handler per device, named like the device, and gives the device a
//!   `commands` attribute; `devices/<name>/exported/exportK` → each LUN.
//! - `targets/<driver>/<target>/luns/mgmt`: `add <device> <lun>`,
//!   `del <lun>`; `luns/<lun>/device` → `devices/<name>`.
//! - `targets/scst_local/<target>/sessions/<session>/host` → the SCSI host
//!   (`hostN`) of that session; its disks are
//!   `<sysfs>/bus/scsi/devices/N:C:T:<lun>/block/<sdX>`.
//! - A `mgmt` write returns the command's result as the write's errno, or
//!   EAGAIN if it takes longer than 15 s; the result is then polled from
//!   `last_sysfs_mgmt_res` (EAGAIN while pending, then `<errno or 0>`).
//!
//! # add-lun ([`ScstAdmin::add_lun`])
//! Checks first, each with its own error: the values, root, SCST loaded
//! (`modprobe scst`), the target driver loaded (`modprobe scst_local` /
//! `iscsi-scst`), the target present, the device registered (is `dataplane
//! serve` running with that `[[scst]]` device?), the LUN free. Then `add
//! <device> <lun>`: the kernel sends ATTACH_SESS to the handler and waits
//! up to 5 s for its answer inside the write. With scst_local, waits for
//! the disk of each session and reports it (`disk: /dev/sdX`).
//!
//! # del-lun ([`ScstAdmin::del_lun`])
//! With scst_local, first deletes the local SCSI disk of each LUN
//! (`<scsi device>/delete`: `del` alone leaves a dead `/dev/sdX`, and
//! unloading scst_local while it exists oopses), then `del <lun>`.
//!
//! Paths come from a [`Roots`]; writes go through an [`Fs`] so that tests
//! can play the kernel.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use dataplane::kernfs::{link_name, Fs, FsOp, KernfsError, RealFs, Roots};

/// The default target driver.
pub const DEFAULT_DRIVER: &str = "scst_local";
/// The target scst_local creates when loaded with `add_default_tgt=1` (the
/// default).
pub const DEFAULT_LOCAL_TARGET: &str = "scst_local_tgt";
/// The largest LUN SCST accepts (`SCST_MAX_LUN`, 14 bits).
pub const MAX_LUN: u64 = (1 << 14) - 1;

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

/// The kernel module that provides a target driver (for the
/// "modprobe ..." advice).
pub fn driver_module(driver: &str) -> &str {
    match driver {
        "iscsi" => "iscsi-scst",
        "qla2x00t" => "qla2x00tgt",
        other => other,
    }
}

/// The default target of a driver, if it has one (scst_local's
/// `scst_local_tgt`).
pub fn default_target(driver: &str) -> Option<&'static str> {
    (driver == DEFAULT_DRIVER).then_some(DEFAULT_LOCAL_TARGET)
}

/// One LUN to add: `<driver>/<target>/luns/<lun>` → `<device>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunSpec {
    /// The SCST device (a dataplane `[[scst]]` device name).
    pub device: String,
    /// The target driver (`scst_local`, `iscsi`, ...).
    pub driver: String,
    /// The target (`scst_local_tgt`, an IQN, ...).
    pub target: String,
    /// The LUN number.
    pub lun: u64,
}

impl LunSpec {
    /// LUN 0 of scst_local's default target.
    pub fn new(device: impl Into<String>) -> Self {
        Self {
            device: device.into(),
            driver: DEFAULT_DRIVER.to_owned(),
            target: DEFAULT_LOCAL_TARGET.to_owned(),
            lun: 0,
        }
    }

    /// Checks the names (they go into paths and a whitespace-separated
    /// command) and the LUN range.
    pub fn validate(&self) -> Result<(), ScstAdminError> {
        check_component("device name", &self.device)?;
        check_component("target driver", &self.driver)?;
        check_component("target name", &self.target)?;
        check_lun(self.lun)
    }
}

fn check_lun(lun: u64) -> Result<(), ScstAdminError> {
    if lun > MAX_LUN {
        return Err(ScstAdminError::Invalid(format!(
            "LUN {lun} is out of range (SCST allows 0 to {MAX_LUN})"
        )));
    }
    Ok(())
}

/// A name used as a path component and a `mgmt` word.
fn check_component(what: &str, name: &str) -> Result<(), ScstAdminError> {
    let why = if name.is_empty() {
        "is empty".to_owned()
    } else if name == "." || name == ".." {
        "is not a name".to_owned()
    } else if let Some(c) = name.chars().find(|&c| !c.is_ascii_graphic() || c == '/') {
        format!("contains {c:?} (allowed: printable ASCII without spaces and '/')")
    } else {
        return Ok(());
    };
    Err(ScstAdminError::Invalid(format!("{what} {name:?} {why}")))
}

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

/// One entry of SCST's `devices/` directory: a device registered with SCST
/// (by a dataplane scst_user handler or another handler), with where it is
/// exported. A row of `dataplane scst list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScstDeviceEntry {
    /// The device name.
    pub name: String,
    /// Its handler (`devices/<name>/handler`'s target).
    pub handler: Option<String>,
    /// Served through scst_user (its handler is the per-device one, or it
    /// has the scst_user `commands` attribute).
    pub scst_user: bool,
    /// Where it is exported: `<driver>/<target>/<lun>` (ini_groups LUNs as
    /// `<driver>/<target>/ini_groups/<group>/<lun>`), sorted.
    pub luns: Vec<String>,
}

/// SCST LUN management over a set of [`Roots`], writing through an [`Fs`]
/// ([`RealFs`] unless testing).
#[derive(Debug)]
pub struct ScstAdmin<F: Fs = RealFs> {
    roots: Roots,
    fs: F,
    euid: u32,
    /// How long `add_lun` waits for the local disk (default 15 s).
    pub timeout: Duration,
    /// How long a `mgmt` command that answered EAGAIN is polled for in
    /// `last_sysfs_mgmt_res` (default 120 s: SCST suspends activity for up
    /// to 90 s).
    pub mgmt_timeout: Duration,
    /// Pause between two looks while waiting (default 50 ms).
    pub poll_interval: Duration,
}

impl ScstAdmin<RealFs> {
    /// The real filesystem, with the process's effective uid.
    pub fn new(roots: Roots) -> Self {
        let euid = nix::unistd::geteuid().as_raw();
        Self::with_fs(roots, RealFs, euid)
    }
}

impl<F: Fs> ScstAdmin<F> {
    /// A custom [`Fs`] and effective uid (for tests).
    pub fn with_fs(roots: Roots, fs: F, euid: u32) -> Self {
        Self {
            roots,
            fs,
            euid,
            timeout: Duration::from_secs(15),
            mgmt_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(50),
        }
    }

    /// The roots.
    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    /// The [`Fs`].
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// The [`Fs`], mutably.
    pub fn fs_mut(&mut self) -> &mut F {
        &mut self.fs
    }

    /// Adds `spec.device` as LUN `spec.lun` of `spec.driver/spec.target`
    /// and, with scst_local, waits for its disks. See the module docs.
    pub fn add_lun(
        &mut self,
        spec: &LunSpec,
        progress: &mut dyn FnMut(&AdminProgress),
    ) -> Result<AddedLun, ScstAdminError> {
        spec.validate()?;
        self.check_root()?;
        let target_dir = self.check_target(&spec.driver, &spec.target)?;
        let device_dir = self.roots.scst_devices_dir().join(&spec.device);
        if !device_dir.is_dir() {
            return Err(ScstAdminError::DeviceNotRegistered {
                name: spec.device.clone(),
                dir: device_dir,
            });
        }
        let luns = target_dir.join("luns");
        let lun_dir = luns.join(spec.lun.to_string());
        if lun_dir.symlink_metadata().is_ok() {
            return Err(ScstAdminError::LunInUse {
                driver: spec.driver.clone(),
                target: spec.target.clone(),
                lun: spec.lun,
                device: link_name(&lun_dir.join("device")).unwrap_or_else(|| "?".into()),
                dir: lun_dir,
            });
        }
        let command = format!("add {} {}", spec.device, spec.lun);
        self.mgmt(&luns.join("mgmt"), &command, |errno| {
            add_hint(errno, &spec.device)
        })?;
        progress(&AdminProgress::Lun {
            driver: spec.driver.clone(),
            target: spec.target.clone(),
            lun: spec.lun,
        });
        let mut added = AddedLun {
            lun_dir,
            disks: Vec::new(),
        };
        if spec.driver != DEFAULT_DRIVER {
            return Ok(added);
        }
        let hosts = self.session_hosts(&target_dir);
        if hosts.is_empty() {
            return Err(ScstAdminError::NoSession {
                target: spec.target.clone(),
                lun: spec.lun,
                sessions: target_dir.join("sessions"),
                mgmt: self.roots.scst_driver_dir(DEFAULT_DRIVER).join("mgmt"),
            });
        }
        for host in hosts {
            let found = self.wait_for(self.timeout, || self.find_disk(host, spec.lun));
            let Some((_, disk)) = found else {
                return Err(ScstAdminError::NoDisk {
                    device: spec.device.clone(),
                    target: spec.target.clone(),
                    lun: spec.lun,
                    looked: self.roots.scsi_devices_dir(),
                    secs: self.timeout.as_secs_f64(),
                });
            };
            // sysfs shows the disk a moment before devtmpfs has its node;
            // wait for it briefly, but report the disk either way.
            let node_wait = self.timeout.min(Duration::from_secs(2));
            self.wait_for(node_wait, || disk.exists().then_some(()));
            progress(&AdminProgress::Disk(disk.clone()));
            added.disks.push(disk);
        }
        Ok(added)
    }

    /// Removes the LUNs of `device` in `driver/target` (only LUN `lun` if
    /// given; it must be that device's). With scst_local, the local disk of
    /// each LUN is deleted first. Returns the LUNs deleted.
    pub fn del_lun(
        &mut self,
        device: &str,
        driver: &str,
        target: &str,
        lun: Option<u64>,
        progress: &mut dyn FnMut(&AdminProgress),
    ) -> Result<Vec<u64>, ScstAdminError> {
        check_component("device name", device)?;
        check_component("target driver", driver)?;
        check_component("target name", target)?;
        if let Some(lun) = lun {
            check_lun(lun)?;
        }
        self.check_root()?;
        let target_dir = self.check_target(driver, target)?;
        let luns_dir = target_dir.join("luns");
        let luns: Vec<u64> = match lun {
            Some(lun) => {
                let dir = luns_dir.join(lun.to_string());
                if !dir.is_dir() {
                    return Err(ScstAdminError::NoSuchLun {
                        what: format!(
                            "LUN {lun} of {driver}/{target} does not exist ({} is missing)",
                            dir.display()
                        ),
                    });
                }
                match link_name(&dir.join("device")) {
                    Some(name) if name == device => vec![lun],
                    other => {
                        return Err(ScstAdminError::NoSuchLun {
                            what: format!(
                                "LUN {lun} of {driver}/{target} is device {:?}, not {device:?}",
                                other.unwrap_or_else(|| "?".into())
                            ),
                        })
                    }
                }
            }
            None => {
                let found: Vec<u64> = numbered_subdirs(&luns_dir)
                    .into_iter()
                    .filter(|n| {
                        link_name(&luns_dir.join(n.to_string()).join("device")).as_deref()
                            == Some(device)
                    })
                    .collect();
                if found.is_empty() {
                    return Err(ScstAdminError::NoSuchLun {
                        what: format!(
                            "device {device:?} is not a LUN of {driver}/{target} (no {}/*/device \
                             links to it)",
                            luns_dir.display()
                        ),
                    });
                }
                found
            }
        };
        let hosts = if driver == DEFAULT_DRIVER {
            self.session_hosts(&target_dir)
        } else {
            Vec::new()
        };
        for &lun in &luns {
            for &host in &hosts {
                let Some((scsi_dir, disk)) = self.find_disk(host, lun) else {
                    continue;
                };
                let delete = scsi_dir.join("delete");
                self.fs.apply(&FsOp::write(&delete, "1")).map_err(|error| {
                    ScstAdminError::Mgmt {
                        path: delete.clone(),
                        command: "1".into(),
                        error,
                        hint: "; the local disk could not be deleted, so the LUN was left in \
                               place"
                            .into(),
                    }
                })?;
                progress(&AdminProgress::DiskRemoved(disk));
            }
            self.mgmt(&luns_dir.join("mgmt"), &format!("del {lun}"), |_| {
                String::new()
            })?;
            progress(&AdminProgress::Deleted {
                driver: driver.to_owned(),
                target: target.to_owned(),
                lun,
            });
        }
        Ok(luns)
    }

    /// The SCST devices (only scst_user ones unless `all`), sorted by name.
    pub fn list(&self, all: bool) -> Result<Vec<ScstDeviceEntry>, ScstAdminError> {
        let devices_dir = self.roots.scst_devices_dir();
        if !self.roots.scst.is_dir() {
            return Err(ScstAdminError::ScstNotLoaded {
                root: self.roots.scst.clone(),
            });
        }
        let entries = std::fs::read_dir(&devices_dir).map_err(|error| {
            ScstAdminError::File(KernfsError::Read {
                path: devices_dir.clone(),
                source: error,
            })
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let handler = link_name(&path.join("handler"));
            let scst_user =
                handler.as_deref() == Some(name.as_str()) || path.join("commands").is_file();
            if !all && !scst_user {
                continue;
            }
            let mut luns: Vec<String> = std::fs::read_dir(path.join("exported"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|target| export_name(&target))
                .collect();
            luns.sort();
            out.push(ScstDeviceEntry {
                name,
                handler,
                scst_user,
                luns,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn check_root(&self) -> Result<(), ScstAdminError> {
        if self.euid == 0 {
            Ok(())
        } else {
            Err(ScstAdminError::NotRoot { euid: self.euid })
        }
    }

    /// SCST loaded, the driver loaded, the target present: the target's
    /// directory.
    fn check_target(&self, driver: &str, target: &str) -> Result<PathBuf, ScstAdminError> {
        if !self.roots.scst.is_dir() {
            return Err(ScstAdminError::ScstNotLoaded {
                root: self.roots.scst.clone(),
            });
        }
        let driver_dir = self.roots.scst_driver_dir(driver);
        if !driver_dir.is_dir() {
            return Err(ScstAdminError::TargetDriverMissing {
                driver: driver.to_owned(),
                dir: driver_dir,
                module: driver_module(driver).to_owned(),
            });
        }
        let target_dir = driver_dir.join(target);
        if !target_dir.is_dir() {
            let mgmt = driver_dir.join("mgmt");
            let hint = match driver {
                DEFAULT_DRIVER => format!(
                    ": scst_local creates {DEFAULT_LOCAL_TARGET} when loaded with \
                     add_default_tgt=1 (the default); otherwise `echo \"add_target {target} \
                     session_name=scst_local_host\" > {}`",
                    mgmt.display()
                ),
                "iscsi" => format!(
                    ": create it with `echo \"add_target {target}\" > {}` and enable it (`echo 1 \
                     > {}/enabled`, and `echo 1 > {}/enabled` for the driver), or with \
                     scstadmin; iscsi-scstd must be running",
                    mgmt.display(),
                    target_dir.display(),
                    driver_dir.display()
                ),
                _ => String::new(),
            };
            return Err(ScstAdminError::TargetMissing {
                driver: driver.to_owned(),
                target: target.to_owned(),
                dir: target_dir,
                hint,
            });
        }
        Ok(target_dir)
    }

    /// Writes a `mgmt` command; on EAGAIN polls `last_sysfs_mgmt_res` for
    /// its result. `hint` words the advice for a failing errno.
    fn mgmt(
        &mut self,
        path: &Path,
        command: &str,
        hint: impl Fn(i32) -> String,
    ) -> Result<(), ScstAdminError> {
        let fail = |error: io::Error| {
            let h = error.raw_os_error().map(&hint).unwrap_or_default();
            ScstAdminError::Mgmt {
                path: path.to_path_buf(),
                command: command.to_owned(),
                error,
                hint: h,
            }
        };
        match self.fs.apply(&FsOp::write(path, command)) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                let result = self.roots.scst_mgmt_result();
                let outcome = self.wait_for(self.mgmt_timeout, || {
                    match std::fs::read_to_string(&result) {
                        Ok(text) => Some(parse_mgmt_result(&text)),
                        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => None,
                        Err(e) => Some(Err(e)),
                    }
                });
                match outcome {
                    Some(Ok(())) => Ok(()),
                    Some(Err(e)) => Err(fail(e)),
                    None => Err(ScstAdminError::Mgmt {
                        path: path.to_path_buf(),
                        command: command.to_owned(),
                        error: io::Error::from_raw_os_error(libc::EAGAIN),
                        hint: format!(
                            "; still pending in {} after {} s",
                            result.display(),
                            self.mgmt_timeout.as_secs()
                        ),
                    }),
                }
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// SCSI host numbers of the target's sessions
    /// (`sessions/*/host` → `hostN`), sorted.
    fn session_hosts(&self, target_dir: &Path) -> Vec<u32> {
        let mut hosts: Vec<u32> = std::fs::read_dir(target_dir.join("sessions"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| link_name(&e.path().join("host")))
            .filter_map(|name| name.strip_prefix("host")?.parse().ok())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts
    }

    /// The disk of LUN `lun` on SCSI host `host`:
    /// `<sysfs>/bus/scsi/devices/<host>:C:T:<lun>` and `<dev>/<sdX>` from its
    /// `block` directory.
    fn find_disk(&self, host: u32, lun: u64) -> Option<(PathBuf, PathBuf)> {
        let dir = self.roots.scsi_devices_dir();
        let mut matches: Vec<PathBuf> = std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(parse_hctl)
                    .is_some_and(|(h, _, _, l)| h == host && l == lun)
            })
            .map(|e| e.path())
            .collect();
        matches.sort();
        for scsi_dir in matches {
            let block = std::fs::read_dir(scsi_dir.join("block")).ok()?;
            let mut names: Vec<String> = block
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect();
            names.sort();
            if let Some(name) = names.into_iter().next() {
                let disk = self.roots.dev.join(name);
                return Some((scsi_dir, disk));
            }
        }
        None
    }

    /// Polls `probe` every `poll_interval` until it gives a value or
    /// `timeout` has passed (it is always tried at least once).
    fn wait_for<T>(&self, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
        let start = Instant::now();
        loop {
            if let Some(value) = probe() {
                return Some(value);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(self.poll_interval);
        }
    }
}

/// Advice for a failed `add <device> <lun>`.
fn add_hint(errno: i32, device: &str) -> String {
    match errno {
        libc::EEXIST => "; the LUN number is already in use".into(),
        libc::EINVAL => "; the kernel refused it (device not found, LUN out of range or a bad \
                         parameter): dmesg says which"
            .into(),
        libc::EFAULT => format!(
            "; the handler of {device:?} did not answer ATTACH_SESS within 5 s: is `dataplane \
             serve` running and polling it?"
        ),
        libc::EBUSY => {
            "; SCST could not suspend activity within 90 s (a hung device?); try again".into()
        }
        _ => format!(
            "; if this is the answer of {device:?}'s handler to ATTACH_SESS, see the `dataplane \
             serve` log"
        ),
    }
}

/// `last_sysfs_mgmt_res` text: `0` or a negative errno.
fn parse_mgmt_result(text: &str) -> io::Result<()> {
    match text.trim().parse::<i32>() {
        Ok(0) => Ok(()),
        Ok(code) => Err(io::Error::from_raw_os_error(code.saturating_abs())),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("last_sysfs_mgmt_res reads {:?}", text.trim()),
        )),
    }
}

/// `H:C:T:L` of a SCSI device directory name.
fn parse_hctl(name: &str) -> Option<(u32, u32, u32, u64)> {
    let mut parts = name.split(':');
    let h = parts.next()?.parse().ok()?;
    let c = parts.next()?.parse().ok()?;
    let t = parts.next()?.parse().ok()?;
    let l = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((h, c, t, l))
}

/// Numeric subdirectory names, sorted.
fn numbered_subdirs(dir: &Path) -> Vec<u64> {
    let mut out: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    out.sort_unstable();
    out
}

/// `…/targets/<driver>/<target>/luns/<lun>` → `<driver>/<target>/<lun>`
/// (ini_groups keep their `ini_groups/<group>` part).
fn export_name(target: &Path) -> Option<String> {
    let text = target.to_str()?;
    let (_, rest) = text.rsplit_once("targets/")?;
    let parts: Vec<&str> = rest
        .split('/')
        .filter(|p| !p.is_empty() && *p != "luns")
        .collect();
    (parts.len() >= 3).then(|| parts.join("/"))
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

    #[test]
    fn helpers_parse_what_sysfs_shows() {
        assert_eq!(parse_hctl("12:0:0:3"), Some((12, 0, 0, 3)));
        assert_eq!(parse_hctl("host12"), None);
        assert_eq!(parse_hctl("1:2:3"), None);
        assert_eq!(parse_hctl("1:2:3:4:5"), None);
        assert_eq!(parse_hctl("target1:0:0"), None);
        assert!(parse_mgmt_result("0\n").is_ok());
        assert_eq!(
            parse_mgmt_result("-17\n").unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
        assert!(parse_mgmt_result("x").is_err());
        assert_eq!(
            export_name(Path::new(
                "../../../targets/scst_local/scst_local_tgt/luns/0"
            )),
            Some("scst_local/scst_local_tgt/0".into())
        );
        assert_eq!(
            export_name(Path::new("../../targets/iscsi/iqn.a:b/ini_groups/g/luns/7")),
            Some("iscsi/iqn.a:b/ini_groups/g/7".into())
        );
        assert_eq!(export_name(Path::new("../../elsewhere/0")), None);
        assert_eq!(driver_module("iscsi"), "iscsi-scst");
        assert_eq!(driver_module("scst_local"), "scst_local");
        assert_eq!(default_target("scst_local"), Some("scst_local_tgt"));
        assert_eq!(default_target("iscsi"), None);
    }

    #[test]
    fn lun_specs_are_validated() {
        LunSpec::new("disk0").validate().unwrap();
        let msg = |f: &dyn Fn(&mut LunSpec)| {
            let mut s = LunSpec::new("disk0");
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert_eq!(
            msg(&|s| s.lun = 16384),
            "LUN 16384 is out of range (SCST allows 0 to 16383)"
        );
        assert_eq!(
            msg(&|s| s.device = "a b".into()),
            "device name \"a b\" contains ' ' (allowed: printable ASCII without spaces and '/')"
        );
        assert_eq!(
            msg(&|s| s.target = "..".into()),
            "target name \"..\" is not a name"
        );
        assert_eq!(
            msg(&|s| s.driver = String::new()),
            "target driver \"\" is empty"
        );
    }
}
