//! TCMU device discovery: which UIO devices are TCMU rings, whose they are,
//! and what LIO's configfs says about them.
//!
//! Off the hot path; used by `dataplane serve` (attach, rescan, crash
//! recovery) and by `dataplane lio`.
//!
//! # Sources
//! - `<sysfs>/class/uio/uioN/name`: the kernel names a TCMU ring
//!   `tcm-user/<hba>/<name>/<dev_config>`, and `dev_config` is by convention
//!   `<subtype>/<cfg>` ([`TcmuUioName`]). Ours is `<subtype>/<bdev name>`.
//! - `<sysfs>/class/uio/uioN/maps/map0/size`: the exact mmap length.
//! - `<configfs>/core/user_<hba>/<name>/`: `attrib/*`, `info`, `enable`,
//!   `action/*` ([`device_facts`], [`block_dev`], [`reset_ring`]).
//!
//! Every path comes from a [`Roots`] so the code runs against fake trees in
//! tests; the recovery actions change configfs through an [`Fs`]
//! ([`crate::kernfs`]).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::kernfs::{parse_u64_auto, read_trimmed, Fs, FsOp, KernfsError, Roots};

/// Errors of discovery and of the configfs recovery actions. Every variant
/// names the file or UIO name involved.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A sysfs or configfs file could not be read, written or parsed.
    #[error(transparent)]
    File(#[from] KernfsError),
    /// The `<cfg>` part of a TCMU UIO name is not a bdev name.
    #[error("UIO name {uio_name:?}: {why}")]
    BadBdevName {
        /// The whole UIO name.
        uio_name: String,
        /// What is wrong with the `<cfg>` part.
        why: &'static str,
    },
}

/// A TCMU UIO device name that follows the `dev_config` convention:
/// `tcm-user/<hba>/<name>/<subtype>/<cfg>`.
///
/// `<name>` is the configfs directory name (never contains `/`); `<subtype>`
/// is the first `/`-separated part of `dev_config`; `<cfg>` is everything
/// after it (it may be empty or contain further `/` for other handlers; for
/// ours it is a bdev name, see [`TcmuUioName::bdev`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcmuUioName {
    /// The HBA index N of `core/user_N`.
    pub hba: u32,
    /// The device's configfs name.
    pub name: String,
    /// The handler subtype (`dataplane` for us).
    pub subtype: String,
    /// The handler configuration string.
    pub cfg: String,
}

/// The prefix of every TCMU UIO device name.
pub const TCMU_UIO_PREFIX: &str = "tcm-user/";

impl TcmuUioName {
    /// Parses a UIO name (a trailing newline is ignored). `None` if it is not
    /// `tcm-user/<u32>/<name>/<subtype>/<cfg>` with a non-empty name and
    /// subtype: not a TCMU device, or one whose `dev_config` does not follow
    /// the `<subtype>/<cfg>` convention. Such a device is simply not ours.
    pub fn parse(uio_name: &str) -> Option<Self> {
        let (hba, name, dev_config) = parse_tcmu_ident(uio_name)?;
        let (subtype, cfg) = dev_config.split_once('/')?;
        if subtype.is_empty() {
            return None;
        }
        Some(Self {
            hba,
            name: name.to_owned(),
            subtype: subtype.to_owned(),
            cfg: cfg.to_owned(),
        })
    }

    /// `<cfg>` as a bdev name: non-empty, without `/`.
    pub fn bdev(&self) -> Result<&str, DiscoveryError> {
        let why = if self.cfg.is_empty() {
            "the handler configuration (bdev name) after the subtype is empty"
        } else if self.cfg.contains('/') {
            "the handler configuration (bdev name) contains '/'"
        } else {
            return Ok(&self.cfg);
        };
        Err(DiscoveryError::BadBdevName {
            uio_name: self.to_string(),
            why,
        })
    }
}

impl fmt::Display for TcmuUioName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TCMU_UIO_PREFIX}{}/{}/{}/{}",
            self.hba, self.name, self.subtype, self.cfg
        )
    }
}

/// Splits `tcm-user/<hba>/<name>[/<dev_config>]` into its parts (trailing
/// newline ignored). `dev_config` is `""` when absent.
pub fn parse_tcmu_ident(uio_name: &str) -> Option<(u32, &str, &str)> {
    let rest = uio_name
        .trim_end_matches('\n')
        .strip_prefix(TCMU_UIO_PREFIX)?;
    let (hba, rest) = rest.split_once('/')?;
    if hba.is_empty() || !hba.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hba = hba.parse().ok()?;
    let (name, dev_config) = rest.split_once('/').unwrap_or((rest, ""));
    if name.is_empty() {
        return None;
    }
    Some((hba, name, dev_config))
}

/// One TCMU UIO device found under `<sysfs>/class/uio`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UioDevice {
    /// The UIO minor (`uio3` → 3).
    pub minor: u32,
    /// `<sysfs>/class/uio/uioN`.
    pub sysfs_dir: PathBuf,
    /// `<dev>/uioN`.
    pub dev_node: PathBuf,
    /// The raw `name` (trailing newline removed): `tcm-user/...`.
    pub name: String,
    /// `maps/map0/size`: the exact length to mmap.
    pub map0_size: u64,
    /// HBA index and configfs device name from the UIO name.
    pub hba: u32,
    /// The device's configfs name.
    pub device: String,
    /// The parsed name, if `dev_config` follows `<subtype>/<cfg>`.
    pub tcmu: Option<TcmuUioName>,
}

impl UioDevice {
    /// `uioN`, the name under `/dev` and `/sys/class/uio`.
    pub fn uio(&self) -> String {
        format!("uio{}", self.minor)
    }

    /// Whether the device's `dev_config` subtype is `subtype`.
    pub fn has_subtype(&self, subtype: &str) -> bool {
        self.tcmu.as_ref().is_some_and(|t| t.subtype == subtype)
    }
}

/// Result of [`scan`]: the TCMU UIO devices that could be read, and the
/// entries that could not (with the reason), for the caller to log.
#[derive(Debug, Default)]
pub struct UioScan {
    /// TCMU devices, in increasing minor order.
    pub devices: Vec<UioDevice>,
    /// Entries skipped because something could not be read or parsed.
    pub skipped: Vec<(PathBuf, DiscoveryError)>,
}

impl UioScan {
    /// The devices of `subtype` (see [`UioDevice::has_subtype`]).
    pub fn with_subtype<'a>(&'a self, subtype: &'a str) -> impl Iterator<Item = &'a UioDevice> {
        self.devices.iter().filter(move |d| d.has_subtype(subtype))
    }

    /// The device of configfs device `user_<hba>/<name>`, if present.
    pub fn find(&self, hba: u32, name: &str) -> Option<&UioDevice> {
        self.devices
            .iter()
            .find(|d| d.hba == hba && d.device == name)
    }
}

/// Lists `<sysfs>/class/uio/uio*` and returns the TCMU devices among them
/// (names starting with `tcm-user/`). Other UIO devices are ignored without a
/// report. A TCMU entry whose `name` or `maps/map0/size` cannot be read or
/// parsed is reported in [`UioScan::skipped`]. A missing `class/uio` (the
/// `uio` module is not loaded) gives an empty scan. Never panics.
pub fn scan(roots: &Roots) -> UioScan {
    let mut out = UioScan::default();
    let class = roots.uio_class_dir();
    let entries = match std::fs::read_dir(&class) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        Err(source) => {
            let error = KernfsError::Read {
                path: class.clone(),
                source,
            };
            out.skipped.push((class, error.into()));
            return out;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(source) => {
                let error = KernfsError::Read {
                    path: class.clone(),
                    source,
                };
                out.skipped.push((class.clone(), error.into()));
                continue;
            }
        };
        let file_name = entry.file_name();
        let Some(minor) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix("uio"))
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        match read_uio(roots, &dir, minor) {
            Ok(Some(device)) => out.devices.push(device),
            Ok(None) => {}
            Err(e) => out.skipped.push((dir, e)),
        }
    }
    out.devices.sort_by_key(|d| d.minor);
    out
}

/// Reads one `class/uio/uioN` directory; `None` if it is not a TCMU device.
fn read_uio(roots: &Roots, dir: &Path, minor: u32) -> Result<Option<UioDevice>, DiscoveryError> {
    let name_path = dir.join("name");
    let name = read_trimmed(&name_path)?;
    if !name.starts_with(TCMU_UIO_PREFIX) {
        return Ok(None);
    }
    let Some((hba, device, _)) = parse_tcmu_ident(&name) else {
        return Err(KernfsError::Parse {
            path: name_path,
            content: name,
            why: "expected tcm-user/<hba>/<name>[/<dev_config>]",
        }
        .into());
    };
    let device = device.to_owned();
    let size_path = dir.join("maps/map0/size");
    let map0_size = parse_u64_auto(&size_path, &read_trimmed(&size_path)?)?;
    let tcmu = TcmuUioName::parse(&name);
    Ok(Some(UioDevice {
        minor,
        sysfs_dir: dir.to_path_buf(),
        dev_node: roots.uio_node(minor),
        name,
        map0_size,
        hba,
        device,
        tcmu,
    }))
}

/// Finds the UIO device of configfs device `user_<hba>/<name>`: a fresh
/// [`scan`] filtered by name. Unreadable entries are ignored.
pub fn find_uio(roots: &Roots, hba: u32, name: &str) -> Option<UioDevice> {
    scan(roots)
        .devices
        .into_iter()
        .find(|d| d.hba == hba && d.device == name)
}

/// What LIO's configfs says about one TCMU device (`core/user_<hba>/<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcmuDeviceFacts {
    /// `attrib/hw_block_size`: the logical block size in bytes.
    pub hw_block_size: u32,
    /// `attrib/hw_max_sectors`: the largest command, in blocks.
    pub hw_max_sectors: u32,
    /// `attrib/dev_size` (or `Size:` in `info`): the size in bytes.
    pub dev_size: u64,
    /// `attrib/cmd_time_out`: seconds, 0 = off.
    pub cmd_time_out: u32,
    /// `attrib/max_data_area_mb`.
    pub max_data_area_mb: u32,
    /// `enable` reads 1.
    pub enabled: bool,
    /// `attrib/dev_config` (or `Config:` in `info`); `None` if unset.
    pub dev_config: Option<String>,
}

/// Reads the facts of TCMU device `user_<hba>/<name>` from configfs. Each
/// error names the file that could not be read or parsed.
pub fn device_facts(
    roots: &Roots,
    hba: u32,
    name: &str,
) -> Result<TcmuDeviceFacts, DiscoveryError> {
    let dir = roots.device_dir(hba, name);
    let attrib = dir.join("attrib");
    let u32_of = |file: &str| -> Result<u32, DiscoveryError> {
        let path = attrib.join(file);
        let text = read_trimmed(&path)?;
        parse_u64_auto(&path, &text)?.try_into().map_err(|_| {
            KernfsError::Parse {
                path,
                content: text,
                why: "value does not fit in 32 bits",
            }
            .into()
        })
    };
    let hw_block_size = u32_of("hw_block_size")?;
    let hw_max_sectors = u32_of("hw_max_sectors")?;
    let cmd_time_out = u32_of("cmd_time_out")?;
    let max_data_area_mb = u32_of("max_data_area_mb")?;

    let info = InfoFile::new(&dir);
    let size_path = attrib.join("dev_size");
    let dev_size = match read_trimmed(&size_path) {
        Ok(text) => parse_u64_auto(&size_path, &text)?,
        Err(e) if e.is_not_found() => info.size()?,
        Err(e) => return Err(e.into()),
    };
    let config_path = attrib.join("dev_config");
    let dev_config = match read_trimmed(&config_path) {
        Ok(text) => Some(text).filter(|t| !t.is_empty()),
        Err(e) if e.is_not_found() => info.config()?,
        Err(e) => return Err(e.into()),
    };
    let enable_path = dir.join("enable");
    let enabled = match read_trimmed(&enable_path)?.as_str() {
        "0" => false,
        "1" => true,
        other => {
            return Err(KernfsError::Parse {
                path: enable_path,
                content: other.to_owned(),
                why: "expected 0 or 1",
            }
            .into())
        }
    };
    Ok(TcmuDeviceFacts {
        hw_block_size,
        hw_max_sectors,
        dev_size,
        cmd_time_out,
        max_data_area_mb,
        enabled,
        dev_config,
    })
}

/// The device's `info` file, read on first use. The kernel writes e.g.
/// `Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 128`
/// then `Config: dataplane/ram0 Size: 67108864 MaxDataAreaMB: 64 ...`.
struct InfoFile {
    path: PathBuf,
}

impl InfoFile {
    fn new(device_dir: &Path) -> Self {
        Self {
            path: device_dir.join("info"),
        }
    }

    /// The whitespace-separated token after the token `key` (exact match, so
    /// `Size:` does not match `SectorSize:`).
    fn value_of(&self, key: &str) -> Result<Option<String>, KernfsError> {
        let text = read_trimmed(&self.path)?;
        let mut tokens = text.split_whitespace();
        while let Some(token) = tokens.next() {
            if token == key {
                return Ok(tokens.next().map(str::to_owned));
            }
        }
        Ok(None)
    }

    fn size(&self) -> Result<u64, KernfsError> {
        match self.value_of("Size:")? {
            Some(v) => parse_u64_auto(&self.path, &v),
            None => Err(KernfsError::Parse {
                path: self.path.clone(),
                content: read_trimmed(&self.path)?,
                why: "no \"Size: N\" (and no attrib/dev_size)",
            }),
        }
    }

    fn config(&self) -> Result<Option<String>, KernfsError> {
        Ok(self
            .value_of("Config:")?
            .filter(|v| v != "NULL" && !v.is_empty()))
    }
}

/// Blocks (`on = true`: `action/block_dev` = 1) or unblocks (0) TCMU device
/// `user_<hba>/<name>`, through `fs`. Blocking reaps finished commands,
/// fails queued ones with BUSY and answers new ones with LUN BUSY; used by
/// serve around a re-attach after a crash.
pub fn block_dev(
    fs: &mut impl Fs,
    roots: &Roots,
    hba: u32,
    name: &str,
    on: bool,
) -> Result<(), DiscoveryError> {
    let path = roots.device_dir(hba, name).join("action/block_dev");
    Ok(fs.write_attr(&path, if on { "1" } else { "0" })?)
}

/// How `action/reset_ring` completes the commands still in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingReset {
    /// 1: with BUSY (the initiator retries).
    Busy = 1,
    /// 2: with CHECK CONDITION.
    CheckCondition = 2,
}

/// The write of `action/reset_ring` of TCMU device `user_<hba>/<name>` that
/// [`reset_ring`] applies, for callers that apply and record their changes
/// themselves.
pub fn reset_ring_op(roots: &Roots, hba: u32, name: &str, mode: RingReset) -> FsOp {
    let path = roots.device_dir(hba, name).join("action/reset_ring");
    FsOp::write(path, (mode as u8).to_string())
}

/// Writes `action/reset_ring` of TCMU device `user_<hba>/<name>` through
/// `fs`: in-flight commands complete as `mode` says, then
/// `cmd_head = cmd_tail = 0` and the broken state is cleared. No handler
/// may be walking the ring meanwhile.
pub fn reset_ring(
    fs: &mut impl Fs,
    roots: &Roots,
    hba: u32,
    name: &str,
    mode: RingReset,
) -> Result<(), DiscoveryError> {
    let path = roots.device_dir(hba, name).join("action/reset_ring");
    Ok(fs.write_attr(&path, &(mode as u8).to_string())?)
}

/// The pids of the processes that have `<dev>/uio<minor>` open, found by
/// reading the `<proc>/<pid>/fd/*` links. Processes that vanish or whose fd
/// table cannot be read (not root) are skipped, so the answer is complete
/// only when run as root. Sorted.
///
/// This is how `dataplane lio` decides whether a handler is attached
/// (TCMU allows one opener at a time, but probing by opening the device
/// would race with a handler that is attaching).
pub fn uio_holders(roots: &Roots, minor: u32) -> Vec<u32> {
    let node = roots.uio_node(minor);
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir(&roots.proc) else {
        return pids;
    };
    for proc_entry in procs.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == node));
        if holds {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// Whether any process has `<dev>/uio<minor>` open (see [`uio_holders`]).
pub fn is_uio_open(roots: &Roots, minor: u32) -> bool {
    !uio_holders(roots, minor).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernfs::RealFs;
    use tempfile::TempDir;

    fn put(path: &Path, content: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn put_uio(roots: &Roots, minor: u32, name: &str, size: &str) {
        let dir = roots.uio_class_dir().join(format!("uio{minor}"));
        put(&dir.join("name"), &format!("{name}\n"));
        put(&dir.join("maps/map0/size"), &format!("{size}\n"));
    }

    #[test]
    fn parses_our_uio_names() {
        let n = TcmuUioName::parse("tcm-user/3/disk0/dataplane/ram0\n").unwrap();
        assert_eq!(
            n,
            TcmuUioName {
                hba: 3,
                name: "disk0".into(),
                subtype: "dataplane".into(),
                cfg: "ram0".into(),
            }
        );
        assert_eq!(n.bdev().unwrap(), "ram0");
        assert_eq!(n.to_string(), "tcm-user/3/disk0/dataplane/ram0");

        // Another handler's cfg may contain '/': parsed, but not a bdev name.
        let n = TcmuUioName::parse("tcm-user/0/vol/qcow/var/lib/a.qcow2").unwrap();
        assert_eq!(n.subtype, "qcow");
        assert_eq!(n.cfg, "var/lib/a.qcow2");
        let err = n.bdev().unwrap_err().to_string();
        assert!(err.contains("contains '/'"), "{err}");
        assert!(err.contains("tcm-user/0/vol/qcow/var/lib/a.qcow2"), "{err}");

        let n = TcmuUioName::parse("tcm-user/0/vol/dataplane/").unwrap();
        assert_eq!(n.cfg, "");
        assert!(n.bdev().unwrap_err().to_string().contains("is empty"));
    }

    #[test]
    fn names_that_are_not_ours_do_not_parse() {
        for name in [
            "",
            "uio_pdrv_genirq",
            "tcm-user",
            "tcm-user/",
            "tcm-user/x/disk0/dataplane/ram0",
            "tcm-user/-1/disk0/dataplane/ram0",
            "tcm-user/99999999999/disk0/dataplane/ram0",
            "tcm-user/0//dataplane/ram0",
            "tcm-user/0/disk0",
            "tcm-user/0/disk0/",
            "tcm-user/0/disk0/noslash",
            "tcm-user/0/disk0//ram0",
            "tcm-users/0/disk0/dataplane/ram0",
        ] {
            assert_eq!(TcmuUioName::parse(name), None, "{name:?}");
        }
        assert_eq!(parse_tcmu_ident("tcm-user/0/disk0"), Some((0, "disk0", "")));
        assert_eq!(
            parse_tcmu_ident("tcm-user/7/d/x/y\n"),
            Some((7, "d", "x/y"))
        );
    }

    #[test]
    fn scan_lists_tcmu_devices_and_reports_unreadable_ones() {
        let tmp = TempDir::new().unwrap();
        let roots = Roots::under(tmp.path());
        put_uio(&roots, 10, "tcm-user/0/disk10/dataplane/ram1", "0x40800000");
        put_uio(&roots, 2, "tcm-user/1/disk2/dataplane/ram0", "8392704");
        put_uio(&roots, 3, "tcm-user/0/other/qcow/a/b", "0x1000");
        put_uio(&roots, 4, "tcm-user/0/raw", "0x1000");
        put_uio(&roots, 5, "some_other_driver", "garbage");
        // A TCMU device with a bad size, one without map0, one without name.
        put_uio(&roots, 6, "tcm-user/0/bad/dataplane/x", "12 MiB");
        put(
            &roots.uio_class_dir().join("uio7/name"),
            "tcm-user/0/nomap/dataplane/x\n",
        );
        std::fs::create_dir_all(roots.uio_class_dir().join("uio8")).unwrap();
        // Not uio<digits>: ignored.
        std::fs::create_dir_all(roots.uio_class_dir().join("uiox")).unwrap();

        let s = scan(&roots);
        let minors: Vec<u32> = s.devices.iter().map(|d| d.minor).collect();
        assert_eq!(minors, [2, 3, 4, 10]);
        let d = &s.devices[3];
        assert_eq!(d.map0_size, 0x4080_0000);
        assert_eq!(d.uio(), "uio10");
        assert_eq!(d.dev_node, tmp.path().join("dev/uio10"));
        assert_eq!(d.sysfs_dir, tmp.path().join("sys/class/uio/uio10"));
        assert_eq!((d.hba, d.device.as_str()), (0, "disk10"));
        assert_eq!(d.tcmu.as_ref().unwrap().cfg, "ram1");
        assert_eq!(s.devices[0].map0_size, 8_392_704);
        assert_eq!(s.devices[2].tcmu, None);
        assert_eq!(s.devices[2].device, "raw");

        let ours: Vec<&str> = s
            .with_subtype("dataplane")
            .map(|d| d.device.as_str())
            .collect();
        assert_eq!(ours, ["disk2", "disk10"]);
        assert_eq!(s.find(1, "disk2").unwrap().minor, 2);
        assert!(s.find(0, "disk2").is_none());

        let mut skipped: Vec<(String, String)> = s
            .skipped
            .iter()
            .map(|(p, e)| {
                (
                    p.file_name().unwrap().to_str().unwrap().to_owned(),
                    e.to_string(),
                )
            })
            .collect();
        skipped.sort();
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert_eq!(skipped[0].0, "uio6");
        assert!(
            skipped[0]
                .1
                .contains("maps/map0/size: cannot parse \"12 MiB\""),
            "{skipped:?}"
        );
        assert_eq!(skipped[1].0, "uio7");
        assert!(skipped[1].1.contains("cannot read"), "{skipped:?}");
        assert!(skipped[1].1.contains("uio7/maps/map0/size"), "{skipped:?}");
        assert_eq!(skipped[2].0, "uio8");
        assert!(skipped[2].1.contains("uio8/name"), "{skipped:?}");

        assert_eq!(find_uio(&roots, 0, "disk10").unwrap().minor, 10);
        assert!(find_uio(&roots, 0, "nope").is_none());
    }

    #[test]
    fn scan_without_uio_class_is_empty() {
        let tmp = TempDir::new().unwrap();
        let s = scan(&Roots::under(tmp.path()));
        assert!(s.devices.is_empty());
        assert!(s.skipped.is_empty());
    }

    fn put_device(roots: &Roots, hba: u32, name: &str) -> PathBuf {
        let dir = roots.device_dir(hba, name);
        put(&dir.join("attrib/hw_block_size"), "4096\n");
        put(&dir.join("attrib/hw_max_sectors"), "2048\n");
        put(&dir.join("attrib/dev_size"), "1073741824\n");
        put(&dir.join("attrib/cmd_time_out"), "30\n");
        put(&dir.join("attrib/max_data_area_mb"), "64\n");
        put(&dir.join("attrib/dev_config"), "dataplane/ram0\n");
        put(&dir.join("enable"), "1\n");
        put(
            &dir.join("info"),
            "Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 4096  HwMaxSectors: 2048\n        Config: dataplane/ram9 Size: 2147483648 MaxDataAreaMB: 64 DataPagesPerBlk: 1 CmdRingSizeMB: 8\n",
        );
        put(&dir.join("action/block_dev"), "");
        put(&dir.join("action/reset_ring"), "");
        dir
    }

    #[test]
    fn device_facts_come_from_attrib() {
        let tmp = TempDir::new().unwrap();
        let roots = Roots::under(tmp.path());
        put_device(&roots, 1, "disk0");
        let f = device_facts(&roots, 1, "disk0").unwrap();
        assert_eq!(
            f,
            TcmuDeviceFacts {
                hw_block_size: 4096,
                hw_max_sectors: 2048,
                dev_size: 1 << 30,
                cmd_time_out: 30,
                max_data_area_mb: 64,
                enabled: true,
                dev_config: Some("dataplane/ram0".into()),
            }
        );
    }

    #[test]
    fn device_facts_fall_back_to_info() {
        let tmp = TempDir::new().unwrap();
        let roots = Roots::under(tmp.path());
        let dir = put_device(&roots, 0, "disk0");
        std::fs::remove_file(dir.join("attrib/dev_size")).unwrap();
        std::fs::remove_file(dir.join("attrib/dev_config")).unwrap();
        put(&dir.join("enable"), "0\n");
        let f = device_facts(&roots, 0, "disk0").unwrap();
        assert_eq!(f.dev_size, 2 << 30);
        assert_eq!(f.dev_config.as_deref(), Some("dataplane/ram9"));
        assert!(!f.enabled);

        put(
            &dir.join("info"),
            "Status: DEACTIVATED SectorSize: 512 Config: NULL\n",
        );
        let err = device_facts(&roots, 0, "disk0").unwrap_err().to_string();
        assert!(err.contains("disk0/info"), "{err}");
        assert!(
            err.contains("no \"Size: N\" (and no attrib/dev_size)"),
            "{err}"
        );
        put(&dir.join("info"), "Config: NULL Size: 512\n");
        let f = device_facts(&roots, 0, "disk0").unwrap();
        assert_eq!((f.dev_size, f.dev_config), (512, None));
    }

    #[test]
    fn device_facts_errors_name_the_file() {
        let tmp = TempDir::new().unwrap();
        let roots = Roots::under(tmp.path());
        let err = device_facts(&roots, 0, "ghost").unwrap_err().to_string();
        assert!(err.starts_with("cannot read "), "{err}");
        assert!(
            err.contains("core/user_0/ghost/attrib/hw_block_size"),
            "{err}"
        );

        let dir = put_device(&roots, 0, "disk0");
        put(&dir.join("attrib/hw_max_sectors"), "lots\n");
        let err = device_facts(&roots, 0, "disk0").unwrap_err().to_string();
        assert!(
            err.contains("attrib/hw_max_sectors: cannot parse \"lots\""),
            "{err}"
        );
        put(&dir.join("attrib/hw_max_sectors"), "0x100000000\n");
        let err = device_facts(&roots, 0, "disk0").unwrap_err().to_string();
        assert!(err.contains("does not fit in 32 bits"), "{err}");
        put(&dir.join("attrib/hw_max_sectors"), "8\n");
        put(&dir.join("enable"), "yes\n");
        let err = device_facts(&roots, 0, "disk0").unwrap_err().to_string();
        assert!(
            err.contains("enable: cannot parse \"yes\": expected 0 or 1"),
            "{err}"
        );
    }

    #[test]
    fn recovery_actions_write_the_action_files() {
        let tmp = TempDir::new().unwrap();
        let roots = Roots::under(tmp.path());
        let dir = put_device(&roots, 2, "disk0");
        let fs = &mut RealFs;
        block_dev(fs, &roots, 2, "disk0", true).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("action/block_dev")).unwrap(),
            "1"
        );
        block_dev(fs, &roots, 2, "disk0", false).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("action/block_dev")).unwrap(),
            "0"
        );
        reset_ring(fs, &roots, 2, "disk0", RingReset::CheckCondition).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("action/reset_ring")).unwrap(),
            "2"
        );
        reset_ring(fs, &roots, 2, "disk0", RingReset::Busy).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("action/reset_ring")).unwrap(),
            "1"
        );

        // The attribute file must exist (configfs has no file creation).
        let err = reset_ring(fs, &roots, 2, "ghost", RingReset::Busy)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot write \"1\" to "), "{err}");
        assert!(err.contains("user_2/ghost/action/reset_ring"), "{err}");
        assert!(!roots.device_dir(2, "ghost").exists());
    }

    /// Records the changes instead of making them.
    #[derive(Default)]
    struct Recorder(Vec<FsOp>);

    impl Fs for Recorder {
        fn apply(&mut self, op: &FsOp) -> std::io::Result<()> {
            self.0.push(op.clone());
            Ok(())
        }
    }

    #[test]
    fn recovery_actions_are_one_change_each() {
        let roots = Roots::default();
        let mut fs = Recorder::default();
        block_dev(&mut fs, &roots, 0, "d", true).unwrap();
        reset_ring(&mut fs, &roots, 0, "d", RingReset::Busy).unwrap();
        block_dev(&mut fs, &roots, 0, "d", false).unwrap();
        let dir = "/sys/kernel/config/target/core/user_0/d/action";
        assert_eq!(
            fs.0,
            [
                FsOp::write(format!("{dir}/block_dev"), "1"),
                FsOp::write(format!("{dir}/reset_ring"), "1"),
                FsOp::write(format!("{dir}/block_dev"), "0"),
            ]
        );
        assert_eq!(
            reset_ring_op(&roots, 0, "d", RingReset::CheckCondition),
            FsOp::write(format!("{dir}/reset_ring"), "2")
        );
    }

    #[test]
    fn uio_holders_reads_proc_fd_links() {
        let tmp = TempDir::new().unwrap();
        let roots = Roots::under(tmp.path());
        let fd_dir = |pid: &str| {
            let d = roots.proc.join(pid).join("fd");
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        std::os::unix::fs::symlink(roots.uio_node(1), fd_dir("300").join("7")).unwrap();
        std::os::unix::fs::symlink("/dev/null", fd_dir("300").join("0")).unwrap();
        std::os::unix::fs::symlink(roots.uio_node(1), fd_dir("42").join("3")).unwrap();
        std::os::unix::fs::symlink(roots.uio_node(10), fd_dir("43").join("3")).unwrap();
        std::fs::create_dir_all(roots.proc.join("self")).unwrap();
        std::fs::create_dir_all(roots.proc.join("44")).unwrap(); // no fd dir
        assert_eq!(uio_holders(&roots, 1), [42, 300]);
        assert_eq!(uio_holders(&roots, 10), [43]);
        assert!(is_uio_open(&roots, 1));
        assert!(!is_uio_open(&roots, 0));
        assert!(!is_uio_open(&Roots::under(&tmp.path().join("nothing")), 1));
    }
}
