//! `dataplane lio list`.

use dataplane::kernfs::{read_trimmed, Fs};
use dataplane::tcmu::discovery;

use super::admin::Lio;
use super::error::LioError;
use super::tree::{attrib_or_info, dev_config, lun_links, subdirs, user_hbas};

/// One TCMU device as `dataplane lio list` shows it. Fields that cannot be
/// read are `None`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LioDevice {
    /// The configfs name.
    pub name: String,
    /// The HBA index N of `core/user_N`.
    pub hba: u32,
    /// `dev_config`'s subtype (the whole `dev_config` if it has no `/`).
    pub subtype: Option<String>,
    /// `dev_config`'s cfg: for our subtype, the bdev name.
    pub bdev: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Logical block size in bytes.
    pub block_size: Option<u32>,
    /// `enable` reads 1.
    pub enabled: bool,
    /// The UIO device (`uio0`), once enabled.
    pub uio: Option<String>,
    /// The tcm_loop disk (`/dev/sda`), if exported and present.
    pub disk: Option<String>,
}

impl<F: Fs> Lio<F> {
    /// The TCMU devices whose subtype is `subtype` (all of them with
    /// `None`), sorted by HBA then name. Needs no root.
    pub fn list(&self, subtype: Option<&str>) -> Result<Vec<LioDevice>, LioError> {
        self.check_target_core()?;
        let uios = discovery::scan(&self.roots);
        let links = lun_links(&self.roots);
        let mut out = Vec::new();
        for (hba, hba_dir) in user_hbas(&self.roots) {
            for name in subdirs(&hba_dir) {
                let dir = hba_dir.join(&name);
                let (dev_subtype, bdev) = dev_config(&dir);
                if subtype.is_some_and(|s| dev_subtype.as_deref() != Some(s)) {
                    continue;
                }
                let disk = links
                    .iter()
                    .filter(|l| l.fabric == "loopback" && l.is_tcmu_device(hba, &name))
                    .find_map(|l| l.disk(&self.roots))
                    .map(|d| d.display().to_string());
                out.push(LioDevice {
                    hba,
                    subtype: dev_subtype,
                    bdev,
                    size: attrib_or_info(&dir, "dev_size", "Size:").and_then(|s| s.parse().ok()),
                    block_size: read_trimmed(&dir.join("attrib/hw_block_size"))
                        .ok()
                        .and_then(|s| s.parse().ok()),
                    enabled: read_trimmed(&dir.join("enable")).is_ok_and(|e| e == "1"),
                    uio: uios.find(hba, &name).map(|u| u.uio()),
                    disk,
                    name,
                });
            }
        }
        Ok(out)
    }
}
