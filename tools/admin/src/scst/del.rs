//! `dataplane scst del-lun`.

use std::path::Path;

use dataplane::kernfs::{link_name, Fs, FsOp};
use dataplane::scst::local_disk::{find_disk, session_hosts};

use super::admin::ScstAdmin;
use super::error::ScstAdminError;
use super::progress::AdminProgress;
use super::spec::{check_component, check_lun, DEFAULT_DRIVER};

impl<F: Fs> ScstAdmin<F> {
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
            session_hosts(&target_dir)
        } else {
            Vec::new()
        };
        for &lun in &luns {
            for &host in &hosts {
                let Some((scsi_dir, disk)) = find_disk(&self.roots, host, lun) else {
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
