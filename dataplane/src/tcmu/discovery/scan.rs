//! Which UIO devices are TCMU rings: a scan of `<sysfs>/class/uio`.

use std::path::{Path, PathBuf};

use crate::kernfs::{parse_u64_auto, read_trimmed, KernfsError, Roots};

use super::error::DiscoveryError;
use super::uio_name::{parse_tcmu_ident, TcmuUioName, TCMU_UIO_PREFIX};

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
