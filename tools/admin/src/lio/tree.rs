//! Walks of LIO's configfs tree shared by create, delete and list: the
//! TCMU HBAs, numbered subdirectories, and the fabric LUN links that point
//! at TCMU devices.

use std::path::{Path, PathBuf};

use dataplane::kernfs::{read_trimmed, Roots};

/// The `core/user_<N>` directories, sorted by N.
pub(super) fn user_hbas(roots: &Roots) -> Vec<(u32, PathBuf)> {
    let mut out: Vec<(u32, PathBuf)> = subdirs(&roots.core_dir())
        .into_iter()
        .filter_map(|name| {
            let n = name.strip_prefix("user_")?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((n.parse().ok()?, roots.core_dir().join(&name)))
        })
        .collect();
    out.sort();
    out
}

/// Names of the real subdirectories of `dir` (symlinks excluded), sorted.
/// Empty if `dir` cannot be read.
pub(super) fn subdirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    out
}

/// `attrib/<attr>` of TCMU device directory `dir`, else the token after
/// `info_key` in its `info`.
pub(super) fn attrib_or_info(dir: &Path, attr: &str, info_key: &str) -> Option<String> {
    if let Ok(value) = read_trimmed(&dir.join("attrib").join(attr)) {
        return Some(value);
    }
    let info = read_trimmed(&dir.join("info")).ok()?;
    let mut tokens = info.split_whitespace();
    while let Some(token) = tokens.next() {
        if token == info_key {
            return tokens.next().map(str::to_owned);
        }
    }
    None
}

/// The handler subtype and cfg of TCMU device directory `dir`, from its
/// `dev_config` (`<subtype>/<cfg>`; the whole value is the subtype if it
/// has no `/`); both `None` when it was never configured.
pub(super) fn dev_config(dir: &Path) -> (Option<String>, Option<String>) {
    let config = attrib_or_info(dir, "dev_config", "Config:");
    match config.filter(|c| !c.is_empty() && c != "NULL") {
        Some(c) => match c.split_once('/') {
            Some((s, b)) => (Some(s.to_owned()), Some(b.to_owned())),
            None => (Some(c), None),
        },
        None => (None, None),
    }
}

/// Subdirectory names of `dir` that are `<prefix><number>`, as numbers.
pub(super) fn numbered_subdirs(dir: &Path, prefix: &str) -> Vec<u64> {
    let mut out: Vec<u64> = subdirs(dir)
        .iter()
        .filter_map(|n| {
            let digits = n.strip_prefix(prefix)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        })
        .collect();
    out.sort_unstable();
    out
}

/// A LUN symlink `<configfs>/<fabric>/<wwn>/tpgt_<t>/lun/lun_<n>/<link>`
/// that points at a TCMU device `core/user_<hba>/<device>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LunLink {
    /// The fabric directory name (`loopback`, `iscsi`, ...).
    pub fabric: String,
    /// `<configfs>/<fabric>/<wwn>`.
    pub wwn_dir: PathBuf,
    /// `.../tpgt_<t>`.
    pub tpgt_dir: PathBuf,
    /// `.../lun/lun_<n>`.
    pub lun_dir: PathBuf,
    /// The LUN number n.
    pub lun: u64,
    /// The symlink.
    pub link: PathBuf,
    /// The device's HBA.
    pub hba: u32,
    /// The device's name.
    pub device: String,
}

impl LunLink {
    /// `<sysfs>/bus/scsi/devices/H:C:T:L/block` from the TPG's `address`
    /// (`H:C:T`, tcm_loop only) and the LUN number.
    pub fn scsi_block_dir(&self, roots: &Roots) -> Option<(String, PathBuf)> {
        let address = read_trimmed(&self.tpgt_dir.join("address")).ok()?;
        let parts: Vec<&str> = address.split(':').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.parse::<u32>().is_err()) {
            return None;
        }
        let hctl = format!("{address}:{}", self.lun);
        let dir = roots.scsi_devices_dir().join(&hctl).join("block");
        Some((hctl, dir))
    }

    /// The disk's device node (`<dev>/sdX`), if the SCSI disk exists.
    pub fn disk(&self, roots: &Roots) -> Option<PathBuf> {
        let (_, dir) = self.scsi_block_dir(roots)?;
        subdirs(&dir)
            .into_iter()
            .next()
            .map(|sd| roots.dev.join(sd))
    }
}

/// Every LUN symlink under every fabric that points at a TCMU device.
pub(super) fn lun_links(roots: &Roots) -> Vec<LunLink> {
    let mut out = Vec::new();
    for fabric in subdirs(&roots.configfs) {
        if fabric == "core" {
            continue;
        }
        let fabric_dir = roots.configfs.join(&fabric);
        for wwn in subdirs(&fabric_dir) {
            let wwn_dir = fabric_dir.join(&wwn);
            for tpgt in numbered_subdirs(&wwn_dir, "tpgt_") {
                let tpgt_dir = wwn_dir.join(format!("tpgt_{tpgt}"));
                for lun in numbered_subdirs(&tpgt_dir.join("lun"), "lun_") {
                    let lun_dir = tpgt_dir.join(format!("lun/lun_{lun}"));
                    let Ok(entries) = std::fs::read_dir(&lun_dir) else {
                        continue;
                    };
                    for entry in entries.flatten() {
                        if !entry.file_type().is_ok_and(|t| t.is_symlink()) {
                            continue;
                        }
                        let link = entry.path();
                        let Some((hba, device)) = std::fs::read_link(&link)
                            .ok()
                            .and_then(|t| tcmu_device_of(&t))
                        else {
                            continue;
                        };
                        out.push(LunLink {
                            fabric: fabric.clone(),
                            wwn_dir: wwn_dir.clone(),
                            tpgt_dir: tpgt_dir.clone(),
                            lun_dir: lun_dir.clone(),
                            lun,
                            link,
                            hba,
                            device,
                        });
                    }
                }
            }
        }
    }
    out
}

/// `(hba, name)` from a link target ending in `user_<hba>/<name>` (configfs
/// gives relative targets such as `../../../../../../target/core/user_0/d`).
fn tcmu_device_of(target: &Path) -> Option<(u32, String)> {
    let name = target.file_name()?.to_str()?;
    let hba = target
        .parent()?
        .file_name()?
        .to_str()?
        .strip_prefix("user_")?;
    if hba.is_empty() || !hba.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((hba.parse().ok()?, name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets() {
        assert_eq!(
            tcmu_device_of(Path::new("../../../../../../target/core/user_0/disk0")),
            Some((0, "disk0".into()))
        );
        assert_eq!(
            tcmu_device_of(Path::new("/sys/kernel/config/target/core/user_12/d")),
            Some((12, "d".into()))
        );
        assert_eq!(tcmu_device_of(Path::new("core/iblock_0/d")), None);
        assert_eq!(tcmu_device_of(Path::new("core/user_/d")), None);
        assert_eq!(tcmu_device_of(Path::new("d")), None);
    }
}
