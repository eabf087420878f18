//! `dataplane scst add-lun`.

use std::time::Duration;

use dataplane::kernfs::{link_name, Fs};
use dataplane::scst::local_disk::{deepen_queue, find_disk, session_hosts};

use super::admin::ScstAdmin;
use super::error::ScstAdminError;
use super::progress::{AddedLun, AdminProgress};
use super::spec::{LunSpec, DEFAULT_DRIVER};

impl<F: Fs> ScstAdmin<F> {
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
        let hosts = session_hosts(&target_dir);
        if hosts.is_empty() {
            return Err(ScstAdminError::NoSession {
                target: spec.target.clone(),
                lun: spec.lun,
                sessions: target_dir.join("sessions"),
                mgmt: self.roots.scst_driver_dir(DEFAULT_DRIVER).join("mgmt"),
            });
        }
        for host in hosts {
            let found = self.wait_for(self.timeout, || find_disk(&self.roots, host, spec.lun));
            let Some((scsi_dir, disk)) = found else {
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
            // scst_local leaves the disk at depth 3 (see `local_disk`).
            if let Some(raised) = deepen_queue(&mut self.fs, &scsi_dir, &disk, &device_dir) {
                progress(&AdminProgress::QueueDepth(raised));
            }
            added.disks.push(disk);
        }
        Ok(added)
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
