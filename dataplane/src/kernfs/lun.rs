//! The fabric LUNs of LIO's configfs: every
//! `<configfs>/<fabric>/<wwn>/tpgt_<t>/lun/lun_<n>/` holds a symlink to the
//! backstore device it exports, `core/<hba>/<device>` (a TCMU device's HBA
//! is `user_<N>`; others are `rd_mcp_<N>`, `iblock_<N>`, ...).
//!
//! Read-only walks, shared by the LIO administration tool (which devices a
//! LUN exports, and which disk it became) and serve (which tcm_loop WWNs
//! export only its own devices).

use std::path::{Path, PathBuf};

use super::{read_trimmed, Roots};

/// One LUN symlink `<configfs>/<fabric>/<wwn>/tpgt_<t>/lun/lun_<n>/<link>`
/// and the backstore device it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunLink {
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
    /// The backstore's HBA directory name under `core/` (`user_0`,
    /// `rd_mcp_1`, ...; empty if the link's target has no parent).
    pub hba_dir: String,
    /// The backstore device's name.
    pub device: String,
}

impl LunLink {
    /// `(hba, device)` when the backstore is a TCMU device (`user_<hba>`).
    pub fn tcmu(&self) -> Option<(u32, &str)> {
        let hba = self.hba_dir.strip_prefix("user_")?;
        if hba.is_empty() || !hba.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((hba.parse().ok()?, &self.device))
    }

    /// True if the backstore is TCMU device `user_<hba>/<name>`.
    pub fn is_tcmu_device(&self, hba: u32, name: &str) -> bool {
        self.tcmu() == Some((hba, name))
    }

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

/// Every LUN symlink under every fabric of `configfs` (`core` is no
/// fabric), whatever its backstore.
pub fn lun_links(configfs: &Path) -> Vec<LunLink> {
    let mut out = Vec::new();
    for fabric in subdirs(configfs) {
        if fabric == "core" {
            continue;
        }
        let fabric_dir = configfs.join(&fabric);
        for wwn in subdirs(&fabric_dir) {
            out.extend(wwn_lun_links(&fabric, &fabric_dir.join(wwn)));
        }
    }
    out
}

/// Every LUN symlink of one WWN, `<configfs>/<fabric>/<wwn>`.
pub fn wwn_lun_links(fabric: &str, wwn_dir: &Path) -> Vec<LunLink> {
    let mut out = Vec::new();
    for tpgt in numbered_subdirs(wwn_dir, "tpgt_") {
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
                let Ok(target) = std::fs::read_link(&link) else {
                    continue;
                };
                let (hba_dir, device) = backstore_of(&target);
                out.push(LunLink {
                    fabric: fabric.to_owned(),
                    wwn_dir: wwn_dir.to_owned(),
                    tpgt_dir: tpgt_dir.clone(),
                    lun_dir: lun_dir.clone(),
                    lun,
                    link,
                    hba_dir,
                    device,
                });
            }
        }
    }
    out
}

/// `(hba directory, device)` from a link target ending in
/// `<hba>/<device>` (configfs gives relative targets such as
/// `../../../../../../target/core/user_0/d`).
fn backstore_of(target: &Path) -> (String, String) {
    let name = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    (name(target.parent()), name(Some(target)))
}

/// Names of the real subdirectories of `dir` (symlinks excluded), sorted.
/// Empty if `dir` cannot be read.
pub fn subdirs(dir: &Path) -> Vec<String> {
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

/// Subdirectory names of `dir` that are `<prefix><number>`, as numbers,
/// ascending.
pub fn numbered_subdirs(dir: &Path, prefix: &str) -> Vec<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn link_to(target: &str) -> LunLink {
        let (hba_dir, device) = backstore_of(Path::new(target));
        LunLink {
            fabric: "loopback".into(),
            wwn_dir: PathBuf::new(),
            tpgt_dir: PathBuf::new(),
            lun_dir: PathBuf::new(),
            lun: 0,
            link: PathBuf::new(),
            hba_dir,
            device,
        }
    }

    #[test]
    fn backstores_are_read_from_the_link_target() {
        let l = link_to("../../../../../../target/core/user_0/disk0");
        assert_eq!(l.tcmu(), Some((0, "disk0")));
        assert!(l.is_tcmu_device(0, "disk0"));
        assert!(!l.is_tcmu_device(1, "disk0"));
        let l = link_to("/sys/kernel/config/target/core/user_12/d");
        assert_eq!(l.tcmu(), Some((12, "d")));
        let l = link_to("core/rd_mcp_0/ramdisk");
        assert_eq!(
            (l.hba_dir.as_str(), l.device.as_str()),
            ("rd_mcp_0", "ramdisk")
        );
        assert_eq!(l.tcmu(), None);
        assert_eq!(link_to("core/user_/d").tcmu(), None);
        assert_eq!(link_to("core/user_x1/d").tcmu(), None);
        assert_eq!(link_to("d").tcmu(), None);
    }

    #[test]
    fn luns_of_every_fabric_and_backstore_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let lun = |fabric: &str, wwn: &str, tpgt: u64, n: u64, target: &str| {
            let lun_dir = root.join(format!("{fabric}/{wwn}/tpgt_{tpgt}/lun/lun_{n}"));
            std::fs::create_dir_all(&lun_dir).unwrap();
            std::os::unix::fs::symlink(target, lun_dir.join("link")).unwrap();
        };
        std::fs::create_dir_all(root.join("core/user_0/d0")).unwrap();
        lun("loopback", "naa.1", 1, 0, "../../../../../core/user_0/d0");
        lun("loopback", "naa.1", 1, 2, "../../../../../core/rd_mcp_0/r");
        lun("iscsi", "iqn.x", 3, 1, "../../../../../core/user_0/d0");
        // Not LUNs: a stray directory, and a LUN directory without a link.
        std::fs::create_dir_all(root.join("loopback/naa.1/tpgt_1/lun/other")).unwrap();
        std::fs::create_dir_all(root.join("loopback/naa.2/tpgt_1/lun/lun_0")).unwrap();
        let links = lun_links(root);
        let found: Vec<(&str, u64, &str, &str)> = links
            .iter()
            .map(|l| {
                (
                    l.fabric.as_str(),
                    l.lun,
                    l.hba_dir.as_str(),
                    l.device.as_str(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("iscsi", 1, "user_0", "d0"),
                ("loopback", 0, "user_0", "d0"),
                ("loopback", 2, "rd_mcp_0", "r"),
            ]
        );
        assert_eq!(links[1].wwn_dir, root.join("loopback/naa.1"));
        assert_eq!(links[1].tpgt_dir, root.join("loopback/naa.1/tpgt_1"));
        assert_eq!(
            links[1].lun_dir,
            root.join("loopback/naa.1/tpgt_1/lun/lun_0")
        );
        assert_eq!(wwn_lun_links("loopback", &root.join("loopback/naa.2")), []);
    }
}
