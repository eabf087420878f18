//! LIO configfs management for `dataplane lio`: create, delete and list TCMU
//! devices (`/sys/kernel/config/target/core/user_<hba>/<name>`), optionally
//! exported through a tcm_loop LUN so that a local `/dev/sdX` appears.
//!
//! # Create ([`Lio::create`])
//! Checks first, each with its own error: valid values ([`CreateSpec`]),
//! root, configfs mounted, `target_core_mod` / `target_core_user` (and
//! `tcm_loop` with `--loopback`) loaded, the name free. Modules are never
//! loaded implicitly: the error prints the `modprobe` command. Then, in
//! order (every change is one [`FsOp`]):
//! 1. `mkdir core/user_<hba>` (if missing) and `core/user_<hba>/<name>`;
//! 2. `control`, one item per write: `dev_config=<subtype>/<bdev>`,
//!    `dev_size=`, `hw_block_size=`, `hw_max_sectors=`,
//!    `nl_reply_supported=-1` (so enable never waits for a netlink reply),
//!    `max_data_area_mb=` (pre-enable only);
//! 3. `attrib/cmd_time_out` (it cannot change once the device is exported);
//! 4. `enable` = 1, then wait for the UIO device `tcm-user/<hba>/<name>/...`
//!    ([`Progress::Uio`]).
//!
//! With loopback, before anything is exported, wait until a handler has the
//! UIO device open (the kernel's SCSI scan sends INQUIRY while the LUN is
//! being linked, and would hang without one); then `mkdir
//! loopback/<wwn>/tpgt_1/lun/lun_<n>`, write `tpgt_1/nexus` (if no nexus
//! yet), symlink `lun_<n>/<name>` → the device, read `tpgt_1/address`
//! (`H:C:T`) and wait for `<sysfs>/bus/scsi/devices/H:C:T:n/block/<sdX>`
//! ([`Progress::Disk`]).
//!
//! If any step up to the link fails, what was created is undone in reverse
//! order and the error says which step failed, with the OS error, and what
//! was undone ([`LioError::RolledBack`]). If the disk does not appear in
//! time, everything is left in place ([`LioError::NoDisk`]).
//!
//! # Delete ([`Lio::delete`])
//! If no process has the UIO device open, `action/reset_ring` = 2 first (else
//! unlinking the LUN waits on commands nobody will complete); then for every
//! tcm_loop LUN of the device: unlink, `rmdir lun_<n>`, `tpgt_<t>` if it has
//! no LUN left, `<wwn>` if it has no TPG left; then `rmdir` the device and
//! `core/user_<hba>` if it has no device left. A device exported through
//! another fabric (e.g. iSCSI) is refused, naming the LUN.
//!
//! # List ([`Lio::list`])
//! Every TCMU device (or those of one subtype) with its configuration, UIO
//! device and tcm_loop disk.

mod create;
mod delete;
mod list;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dataplane::kernfs::{Fs, FsOp, KernfsError, RealFs, Roots};
pub use list::LioDevice;

/// The subtype `dataplane serve` handles unless configured otherwise.
pub const DEFAULT_SUBTYPE: &str = "dataplane";

/// Logical block sizes `create` accepts.
pub const BLOCK_SIZES: [u32; 4] = [512, 1024, 2048, 4096];

/// The kernel's limit on `dev_config` (`TCMU_CONFIG_LEN`, NUL included).
const DEV_CONFIG_MAX: usize = 255;

/// What to create: one TCMU device, optionally exported through tcm_loop.
/// [`CreateSpec::new`] fills in the defaults of `dataplane lio create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSpec {
    /// The configfs device name (`core/user_<hba>/<name>`).
    pub name: String,
    /// The bdev that `dataplane serve` serves it from (`dev_config`'s cfg).
    pub bdev: String,
    /// Size in bytes; a non-zero multiple of `block_size`.
    pub size: u64,
    /// Logical block size: 512, 1024, 2048 or 4096.
    pub block_size: u32,
    /// The TCMU HBA index N of `core/user_N`.
    pub hba: u32,
    /// Handler subtype (`dev_config=<subtype>/<bdev>`).
    pub subtype: String,
    /// `hw_max_sectors`: the largest command in blocks.
    pub max_sectors: u32,
    /// `max_data_area_mb`: the ring's data area.
    pub max_data_area_mb: u32,
    /// `attrib/cmd_time_out` in seconds (0 = no timeout: a dead handler then
    /// hangs I/O and LUN removal forever).
    pub cmd_time_out: u32,
    /// Export through tcm_loop.
    pub loopback: bool,
    /// tcm_loop target WWN (`naa.` + 16 hex digits); `None` derives one from
    /// the HBA and name ([`default_wwn`]).
    pub wwn: Option<String>,
}

impl CreateSpec {
    /// A spec with the defaults of `dataplane lio create`: block size 512,
    /// HBA 0, subtype `dataplane`, 2048 max sectors (1 MiB at 512 B),
    /// 64 MiB data area, 30 s command timeout, no loopback.
    pub fn new(name: impl Into<String>, bdev: impl Into<String>, size: u64) -> Self {
        Self {
            name: name.into(),
            bdev: bdev.into(),
            size,
            block_size: 512,
            hba: 0,
            subtype: DEFAULT_SUBTYPE.to_owned(),
            max_sectors: 2048,
            max_data_area_mb: 64,
            cmd_time_out: 30,
            loopback: false,
            wwn: None,
        }
    }

    /// `<subtype>/<bdev>`.
    pub fn dev_config(&self) -> String {
        format!("{}/{}", self.subtype, self.bdev)
    }

    /// Checks every value; the error names the value and says what is wrong.
    pub fn validate(&self) -> Result<(), LioError> {
        validate_name("device name", &self.name)?;
        validate_name("bdev name", &self.bdev)?;
        validate_name("subtype", &self.subtype)?;
        let dev_config = self.dev_config();
        if dev_config.len() > DEV_CONFIG_MAX {
            return Err(LioError::Invalid(format!(
                "dev_config {dev_config:?} is {} bytes; the kernel keeps at most {DEV_CONFIG_MAX}",
                dev_config.len()
            )));
        }
        if !BLOCK_SIZES.contains(&self.block_size) {
            return Err(LioError::Invalid(format!(
                "block size {} is not one of 512, 1024, 2048, 4096",
                self.block_size
            )));
        }
        if self.size == 0 {
            return Err(LioError::Invalid("size must be greater than zero".into()));
        }
        if !self.size.is_multiple_of(u64::from(self.block_size)) {
            return Err(LioError::Invalid(format!(
                "size {} is not a multiple of the block size {}",
                self.size, self.block_size
            )));
        }
        if self.max_sectors == 0 {
            return Err(LioError::Invalid(
                "max sectors must be greater than zero".into(),
            ));
        }
        if self.max_data_area_mb == 0 {
            return Err(LioError::Invalid(
                "max data area must be at least 1 MiB".into(),
            ));
        }
        let largest = u64::from(self.max_sectors) * u64::from(self.block_size);
        if largest > u64::from(self.max_data_area_mb) << 20 {
            return Err(LioError::Invalid(format!(
                "max sectors {} x block size {} = {largest} bytes per command does not fit \
                 the {} MiB data area",
                self.max_sectors, self.block_size, self.max_data_area_mb
            )));
        }
        if let Some(wwn) = &self.wwn {
            parse_wwn(wwn)?;
        }
        Ok(())
    }
}

/// Checks a name that goes into a configfs path or `dev_config`: not empty,
/// at most 255 bytes, not `.` or `..`, and none of `/` (a path separator),
/// `:` (not allowed in `dev_config`), `,` (separates `control` items),
/// whitespace or control characters.
pub fn validate_name(what: &str, name: &str) -> Result<(), LioError> {
    let why = if name.is_empty() {
        "is empty".to_owned()
    } else if name.len() > 255 {
        format!("is {} bytes long (at most 255)", name.len())
    } else if name == "." || name == ".." {
        "is not a name".to_owned()
    } else if let Some(c) = name
        .chars()
        .find(|&c| matches!(c, '/' | ':' | ',') || c.is_whitespace() || c.is_control())
    {
        format!("contains {c:?} (not allowed: '/', ':', ',', whitespace)")
    } else {
        return Ok(());
    };
    Err(LioError::Invalid(format!("{what} {name:?} {why}")))
}

/// Checks a tcm_loop WWN of the form `naa.` + 16 hex digits and returns it
/// in lower case.
pub fn parse_wwn(wwn: &str) -> Result<String, LioError> {
    let ok = wwn
        .strip_prefix("naa.")
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(wwn.to_ascii_lowercase())
    } else {
        Err(LioError::Invalid(format!(
            "WWN {wwn:?} is not of the form naa.<16 hex digits> (e.g. naa.5001405000000001)"
        )))
    }
}

/// The default tcm_loop target WWN of device `user_<hba>/<name>`:
/// `naa.5001405` (the NAA-5 prefix LIO uses) + 9 hex digits of the FNV-1a
/// hash of `<hba>/<name>`. Deterministic, so a re-create gets the same WWN.
pub fn default_wwn(hba: u32, name: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{hba}/{name}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("naa.5001405{:09x}", hash & 0xf_ffff_ffff)
}

/// The initiator WWN written to `nexus` for target WWN `wwn`: the same with
/// the last hex digit's lowest bit flipped (so it always differs).
pub fn initiator_wwn(wwn: &str) -> String {
    let mut out = wwn.to_owned();
    if let Some(last) = out.pop() {
        let digit = last.to_digit(16).unwrap_or(0) ^ 1;
        out.push(char::from_digit(digit, 16).unwrap_or('1'));
    }
    out
}

/// Something `create` reports as soon as it is known (the stable output
/// lines of `dataplane lio create`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The UIO device appeared (`uio0`). Displays as `uio: uio0`.
    Uio(String),
    /// The tcm_loop disk appeared. Displays as `disk: /dev/sda`.
    Disk(PathBuf),
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Uio(uio) => write!(f, "uio: {uio}"),
            Progress::Disk(path) => write!(f, "disk: {}", path.display()),
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

/// LIO configfs management over a set of [`Roots`], changing the filesystem
/// through an [`Fs`] ([`RealFs`] unless testing).
#[derive(Debug)]
pub struct Lio<F: Fs = RealFs> {
    roots: Roots,
    fs: F,
    euid: u32,
    /// How long `create` waits for the UIO device after `enable` (default
    /// 5 s; the kernel creates it during the write).
    pub uio_timeout: Duration,
    /// How long `create` waits for a handler to open the UIO device, and
    /// then for the disk (default 15 s each).
    pub timeout: Duration,
    /// Pause between two looks while waiting (default 50 ms).
    pub poll_interval: Duration,
}

impl Lio<RealFs> {
    /// The real filesystem, with the process's effective uid.
    pub fn new(roots: Roots) -> Self {
        let euid = nix::unistd::geteuid().as_raw();
        Self::with_fs(roots, RealFs, euid)
    }
}

impl<F: Fs> Lio<F> {
    /// A custom [`Fs`] and effective uid (for tests).
    pub fn with_fs(roots: Roots, fs: F, euid: u32) -> Self {
        Self {
            roots,
            fs,
            euid,
            uio_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
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

    /// Applies one change; on failure, the error names it.
    fn apply(&mut self, op: FsOp, hint: &str) -> Result<(), LioError> {
        match self.fs.apply(&op) {
            Ok(()) => Ok(()),
            Err(error) => Err(LioError::Step {
                op,
                error,
                hint: hint.to_owned(),
            }),
        }
    }

    fn check_root(&self) -> Result<(), LioError> {
        if self.euid == 0 {
            Ok(())
        } else {
            Err(LioError::NotRoot { euid: self.euid })
        }
    }

    /// LIO's configfs directory and its `core` exist; otherwise says whether
    /// configfs is mounted (from `<proc>/self/mounts`) or `target_core_mod`
    /// is missing.
    fn check_target_core(&self) -> Result<(), LioError> {
        let target = &self.roots.configfs;
        if target.is_dir() {
            let core = self.roots.core_dir();
            if core.is_dir() {
                return Ok(());
            }
            return Err(LioError::ModuleNotLoaded {
                module: "target_core_mod",
                why: format!("{} does not exist", core.display()),
            });
        }
        let mount_point = target.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mounts = self.roots.proc.join("self/mounts");
        let mounted = std::fs::read_to_string(mounts)
            .ok()
            .is_some_and(|m| is_mounted(&m, &mount_point, "configfs"));
        if mounted {
            Err(LioError::ModuleNotLoaded {
                module: "target_core_mod",
                why: format!(
                    "configfs is mounted on {} but {} does not exist",
                    mount_point.display(),
                    target.display()
                ),
            })
        } else {
            Err(LioError::ConfigfsNotMounted {
                mount_point_missing: !mount_point.is_dir(),
                mount_point,
                target: target.clone(),
            })
        }
    }

    /// TCMU support: `<sysfs>/module/target_core_user` exists (it has
    /// module parameters, so it is there even when built in), or some
    /// `core/user_*` HBA does (which only the loaded backend allows).
    fn check_tcmu_module(&self) -> Result<(), LioError> {
        let module = self.roots.module_dir("target_core_user");
        if module.is_dir() || !list::user_hbas(&self.roots).is_empty() {
            return Ok(());
        }
        Err(LioError::ModuleNotLoaded {
            module: "target_core_user",
            why: format!("{} does not exist", module.display()),
        })
    }

    /// tcm_loop: `<configfs>/loopback` exists (someone registered the
    /// fabric) or `<sysfs>/module/tcm_loop` does. `mkdir loopback` would
    /// load the module through the kernel's request_module; we don't rely on
    /// that.
    fn check_tcm_loop(&self) -> Result<(), LioError> {
        let module = self.roots.module_dir("tcm_loop");
        if self.roots.loopback_dir().is_dir() || module.is_dir() {
            return Ok(());
        }
        Err(LioError::ModuleNotLoaded {
            module: "tcm_loop",
            why: format!(
                "neither {} nor {} exists",
                module.display(),
                self.roots.loopback_dir().display()
            ),
        })
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

/// Whether `/proc/self/mounts` text `mounts` has a mount of type `fstype` on
/// `mount_point` (octal escapes in the mount point are decoded).
fn is_mounted(mounts: &str, mount_point: &Path, fstype: &str) -> bool {
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_, Some(point), Some(kind)) = (fields.next(), fields.next(), fields.next()) else {
            return false;
        };
        kind == fstype && Path::new(&unescape_mount_field(point)) == mount_point
    })
}

/// Decodes the `\ooo` octal escapes the kernel uses in `/proc/*/mounts`.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(digits) = bytes.get(i + 1..i + 4) {
                if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let value = digits
                        .iter()
                        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                    if let Ok(byte) = u8::try_from(value) {
                        out.push(byte);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["disk0", "ram-1", "a.b_c", "X"] {
            validate_name("bdev name", good).unwrap();
        }
        let msg = |n: &str| validate_name("bdev name", n).unwrap_err().to_string();
        assert_eq!(msg(""), "bdev name \"\" is empty");
        assert_eq!(
            msg("a/b"),
            "bdev name \"a/b\" contains '/' (not allowed: '/', ':', ',', whitespace)"
        );
        assert!(msg("a:b").contains("contains ':'"));
        assert!(msg("a,b").contains("contains ','"));
        assert!(msg("a b").contains("contains ' '"));
        assert!(msg("a\nb").contains("contains '\\n'"));
        assert_eq!(msg(".."), "bdev name \"..\" is not a name");
        assert!(msg(&"x".repeat(256)).contains("is 256 bytes long (at most 255)"));
    }

    #[test]
    fn specs_are_validated() {
        let spec = CreateSpec::new("disk0", "ram0", 1 << 30);
        spec.validate().unwrap();
        assert_eq!(spec.dev_config(), "dataplane/ram0");
        let msg = |f: &dyn Fn(&mut CreateSpec)| {
            let mut s = spec.clone();
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert_eq!(msg(&|s| s.size = 0), "size must be greater than zero");
        assert_eq!(
            msg(&|s| s.size = 1000),
            "size 1000 is not a multiple of the block size 512"
        );
        assert_eq!(
            msg(&|s| {
                s.block_size = 4096;
                s.size = 4096 * 3 + 512;
            }),
            "size 12800 is not a multiple of the block size 4096"
        );
        assert_eq!(
            msg(&|s| s.block_size = 520),
            "block size 520 is not one of 512, 1024, 2048, 4096"
        );
        assert_eq!(
            msg(&|s| s.max_sectors = 0),
            "max sectors must be greater than zero"
        );
        assert_eq!(
            msg(&|s| s.max_data_area_mb = 0),
            "max data area must be at least 1 MiB"
        );
        assert_eq!(
            msg(&|s| {
                s.max_data_area_mb = 1;
                s.max_sectors = 4096;
            }),
            "max sectors 4096 x block size 512 = 2097152 bytes per command does not fit the 1 MiB data area"
        );
        assert!(msg(&|s| s.name = "a/b".into()).starts_with("device name \"a/b\""));
        assert!(msg(&|s| s.bdev = String::new()).starts_with("bdev name \"\" is empty"));
        assert!(msg(&|s| s.subtype = "x:y".into()).starts_with("subtype \"x:y\""));
        assert!(msg(&|s| {
            s.subtype = "s".repeat(200);
            s.bdev = "b".repeat(60);
        })
        .contains("is 261 bytes; the kernel keeps at most 255"));
        assert!(msg(&|s| s.wwn = Some("naa.123".into())).contains("naa.<16 hex digits>"));
        for block_size in BLOCK_SIZES {
            let mut s = spec.clone();
            s.block_size = block_size;
            s.validate().unwrap();
        }
    }

    #[test]
    fn wwns() {
        assert_eq!(
            parse_wwn("naa.5001405ABCDEF012").unwrap(),
            "naa.5001405abcdef012"
        );
        for bad in [
            "",
            "naa.",
            "naa.5001405abcdef01",
            "naa.5001405abcdef0123",
            "iqn.2003-01.x",
            "naa.5001405abcdef01g",
            "NAA.5001405abcdef012",
        ] {
            assert!(parse_wwn(bad).is_err(), "{bad}");
        }
        let w = default_wwn(0, "disk0");
        assert!(w.starts_with("naa.5001405"), "{w}");
        assert_eq!(parse_wwn(&w).unwrap(), w);
        assert_eq!(default_wwn(0, "disk0"), w, "deterministic");
        assert_ne!(default_wwn(1, "disk0"), w);
        assert_ne!(default_wwn(0, "disk1"), w);
        // FNV-1a of "0/disk0", low 36 bits.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in b"0/disk0" {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
        assert_eq!(w, format!("naa.5001405{:09x}", h & 0xfffffffff));

        assert_eq!(
            initiator_wwn("naa.5001405000000001"),
            "naa.5001405000000000"
        );
        assert_eq!(
            initiator_wwn("naa.500140500000000e"),
            "naa.500140500000000f"
        );
        assert_eq!(
            initiator_wwn("naa.500140500000000f"),
            "naa.500140500000000e"
        );
    }

    #[test]
    fn mount_table() {
        let m = "sysfs /sys sysfs rw 0 0\nnone /sys/kernel/config configfs rw,relatime 0 0\n\
                 x /mnt/with\\040space configfs rw 0 0\n";
        assert!(is_mounted(m, Path::new("/sys/kernel/config"), "configfs"));
        assert!(!is_mounted(m, Path::new("/sys"), "configfs"));
        assert!(is_mounted(m, Path::new("/mnt/with space"), "configfs"));
        assert!(!is_mounted("", Path::new("/sys/kernel/config"), "configfs"));
        assert_eq!(unescape_mount_field("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_mount_field("a\\9"), "a\\9");
        assert_eq!(unescape_mount_field("end\\"), "end\\");
    }

    #[test]
    fn progress_lines_are_stable() {
        assert_eq!(Progress::Uio("uio3".into()).to_string(), "uio: uio3");
        assert_eq!(
            Progress::Disk("/dev/sdb".into()).to_string(),
            "disk: /dev/sdb"
        );
    }
}
