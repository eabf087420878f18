//! `dataplane scst list`.

use std::path::Path;

use serde::Serialize;

use dataplane::kernfs::{link_name, Fs, KernfsError};
use dataplane::scst::register::dataplane_sgv_name;

use super::admin::ScstAdmin;
use super::error::ScstAdminError;

/// One entry of SCST's `devices/` directory: a device registered with SCST
/// (by a dataplane scst_user handler or another handler), with where it is
/// exported. A row of `dataplane scst list`.
///
/// A device whose name is too long for the pool marker (over 39 bytes)
/// cannot be told from another handler's scst_user device: it shows only
/// with `--all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScstDeviceEntry {
    /// The device name.
    pub name: String,
    /// Its handler (`devices/<name>/handler`'s target).
    pub handler: Option<String>,
    /// Served through scst_user (its handler is the per-device one, or it
    /// has the scst_user `commands` attribute).
    pub scst_user: bool,
    /// Registered by `dataplane`: an scst_user device whose SGV pool
    /// carries the dataplane's name (`sgv/dataplane.<name>`; see
    /// `dataplane::scst::register::DATAPLANE_SGV_PREFIX`).
    pub dataplane: bool,
    /// Where it is exported: `<driver>/<target>/<lun>` (ini_groups LUNs as
    /// `<driver>/<target>/ini_groups/<group>/<lun>`), sorted.
    pub luns: Vec<String>,
}

impl<F: Fs> ScstAdmin<F> {
    /// The SCST devices (only the dataplane's unless `all`), sorted by name.
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
            let dataplane = scst_user
                && dataplane_sgv_name(&name)
                    .is_some_and(|pool| self.roots.scst.join("sgv").join(pool).is_dir());
            if !all && !dataplane {
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
                dataplane,
                luns,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
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
    fn export_links_name_driver_target_and_lun() {
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
    }
}
