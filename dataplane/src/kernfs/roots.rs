//! [`Roots`]: where the kernel's control filesystems are mounted.

use std::path::{Path, PathBuf};

/// Where the kernel interfaces live. [`Roots::default`] is the real system;
/// tests point every root into a temporary directory ([`Roots::under`]).
///
/// Every path the control plane touches is built from these roots by the
/// methods below, so that one value decides which machine (real or fake)
/// is administered. Nothing here checks that a path exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// LIO's configfs directory (`/sys/kernel/config/target`). Its parent is
    /// the configfs mount point.
    pub configfs: PathBuf,
    /// sysfs (`/sys`): `class/uio`, `module/*`, `bus/scsi/devices`.
    pub sysfs: PathBuf,
    /// Device nodes (`/dev`): `uioN`, `sdX`, `scst_user`.
    pub dev: PathBuf,
    /// procfs (`/proc`): `self/mounts`, `<pid>/fd/*`.
    pub proc: PathBuf,
    /// SCST's sysfs root (`/sys/kernel/scst_tgt`): `devices`, `targets`,
    /// `last_sysfs_mgmt_res`.
    pub scst: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            configfs: PathBuf::from("/sys/kernel/config/target"),
            sysfs: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
            proc: PathBuf::from("/proc"),
            scst: PathBuf::from("/sys/kernel/scst_tgt"),
        }
    }
}

impl Roots {
    /// Every root under one directory, laid out like a real system:
    /// `<base>/sys/kernel/config/target`, `<base>/sys`, `<base>/dev`,
    /// `<base>/proc`, `<base>/sys/kernel/scst_tgt`. For tests; creates
    /// nothing.
    pub fn under(base: &Path) -> Self {
        Self {
            configfs: base.join("sys/kernel/config/target"),
            sysfs: base.join("sys"),
            dev: base.join("dev"),
            proc: base.join("proc"),
            scst: base.join("sys/kernel/scst_tgt"),
        }
    }

    // ---- LIO (configfs) ----

    /// `<configfs>/core`.
    pub fn core_dir(&self) -> PathBuf {
        self.configfs.join("core")
    }

    /// `<configfs>/core/user_<hba>`: the TCMU HBA directory.
    pub fn hba_dir(&self, hba: u32) -> PathBuf {
        self.core_dir().join(format!("user_{hba}"))
    }

    /// `<configfs>/core/user_<hba>/<name>`: one TCMU device.
    pub fn device_dir(&self, hba: u32, name: &str) -> PathBuf {
        self.hba_dir(hba).join(name)
    }

    /// `<configfs>/loopback`: the tcm_loop fabric.
    pub fn loopback_dir(&self) -> PathBuf {
        self.configfs.join("loopback")
    }

    // ---- sysfs, /dev ----

    /// `<sysfs>/class/uio`.
    pub fn uio_class_dir(&self) -> PathBuf {
        self.sysfs.join("class/uio")
    }

    /// `<sysfs>/module/<module>`: exists while the module is loaded (and for
    /// built-in modules that have parameters).
    pub fn module_dir(&self, module: &str) -> PathBuf {
        self.sysfs.join("module").join(module)
    }

    /// `<sysfs>/bus/scsi/devices`: one `H:C:T:L` directory per SCSI device,
    /// its disk under `block/<sdX>`.
    pub fn scsi_devices_dir(&self) -> PathBuf {
        self.sysfs.join("bus/scsi/devices")
    }

    /// `<dev>/uio<minor>`.
    pub fn uio_node(&self, minor: u32) -> PathBuf {
        self.dev.join(format!("uio{minor}"))
    }

    // ---- SCST (sysfs) ----

    /// `<scst>/devices`: one directory per registered SCST device.
    pub fn scst_devices_dir(&self) -> PathBuf {
        self.scst.join("devices")
    }

    /// `<scst>/targets/<driver>`.
    pub fn scst_driver_dir(&self, driver: &str) -> PathBuf {
        self.scst.join("targets").join(driver)
    }

    /// `<scst>/targets/<driver>/<target>`.
    pub fn scst_target_dir(&self, driver: &str, target: &str) -> PathBuf {
        self.scst_driver_dir(driver).join(target)
    }

    /// `<scst>/last_sysfs_mgmt_res`: the result of the last `mgmt` command
    /// that answered EAGAIN.
    pub fn scst_mgmt_result(&self) -> PathBuf {
        self.scst.join("last_sysfs_mgmt_res")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_roots_by_default() {
        let r = Roots::default();
        assert_eq!(
            r.device_dir(0, "d"),
            Path::new("/sys/kernel/config/target/core/user_0/d")
        );
        assert_eq!(r.uio_class_dir(), Path::new("/sys/class/uio"));
        assert_eq!(r.uio_node(3), Path::new("/dev/uio3"));
        assert_eq!(r.module_dir("tcm_loop"), Path::new("/sys/module/tcm_loop"));
        assert_eq!(
            r.loopback_dir(),
            Path::new("/sys/kernel/config/target/loopback")
        );
        assert_eq!(r.scsi_devices_dir(), Path::new("/sys/bus/scsi/devices"));
        assert_eq!(
            r.scst_target_dir("scst_local", "t"),
            Path::new("/sys/kernel/scst_tgt/targets/scst_local/t")
        );
        assert_eq!(
            r.scst_mgmt_result(),
            Path::new("/sys/kernel/scst_tgt/last_sysfs_mgmt_res")
        );
        assert_eq!(
            r.scst_devices_dir(),
            Path::new("/sys/kernel/scst_tgt/devices")
        );
    }

    #[test]
    fn under_a_base_is_laid_out_like_the_real_system() {
        let base = Path::new("/tmp/x");
        let r = Roots::under(base);
        let real = Roots::default();
        for (fake, real) in [
            (&r.configfs, &real.configfs),
            (&r.sysfs, &real.sysfs),
            (&r.dev, &real.dev),
            (&r.proc, &real.proc),
            (&r.scst, &real.scst),
        ] {
            assert_eq!(fake, &base.join(real.strip_prefix("/").unwrap()));
        }
    }
}
