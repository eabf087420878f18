//! [`ScstAdmin`]: LUN management over one machine's SCST sysfs tree, and
//! the checks and waits every operation shares.

use std::path::PathBuf;
use std::time::Duration;

use dataplane::kernfs::{Fs, RealFs, Roots};

use super::error::ScstAdminError;
use super::spec::{driver_module, DEFAULT_DRIVER, DEFAULT_LOCAL_TARGET};

/// SCST LUN management over a set of [`Roots`], writing through an [`Fs`]
/// ([`RealFs`] unless testing).
#[derive(Debug)]
pub struct ScstAdmin<F: Fs = RealFs> {
    pub(super) roots: Roots,
    pub(super) fs: F,
    euid: u32,
    /// How long `add_lun` waits for the local disk (default 15 s).
    pub timeout: Duration,
    /// How long a `mgmt` command that answered EAGAIN is polled for in
    /// `last_sysfs_mgmt_res` (default 120 s: SCST suspends activity for up
    /// to 90 s).
    pub mgmt_timeout: Duration,
    /// Pause between two looks while waiting (default 50 ms).
    pub poll_interval: Duration,
}

impl ScstAdmin<RealFs> {
    /// The real filesystem, with the process's effective uid.
    pub fn new(roots: Roots) -> Self {
        let euid = nix::unistd::geteuid().as_raw();
        Self::with_fs(roots, RealFs, euid)
    }
}

impl<F: Fs> ScstAdmin<F> {
    /// A custom [`Fs`] and effective uid (for tests).
    pub fn with_fs(roots: Roots, fs: F, euid: u32) -> Self {
        Self {
            roots,
            fs,
            euid,
            timeout: Duration::from_secs(15),
            mgmt_timeout: Duration::from_secs(120),
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

    pub(super) fn check_root(&self) -> Result<(), ScstAdminError> {
        if self.euid == 0 {
            Ok(())
        } else {
            Err(ScstAdminError::NotRoot { euid: self.euid })
        }
    }

    /// SCST loaded, the driver loaded, the target present: the target's
    /// directory.
    pub(super) fn check_target(
        &self,
        driver: &str,
        target: &str,
    ) -> Result<PathBuf, ScstAdminError> {
        if !self.roots.scst.is_dir() {
            return Err(ScstAdminError::ScstNotLoaded {
                root: self.roots.scst.clone(),
            });
        }
        let driver_dir = self.roots.scst_driver_dir(driver);
        if !driver_dir.is_dir() {
            return Err(ScstAdminError::TargetDriverMissing {
                driver: driver.to_owned(),
                dir: driver_dir,
                module: driver_module(driver).to_owned(),
            });
        }
        let target_dir = driver_dir.join(target);
        if !target_dir.is_dir() {
            let mgmt = driver_dir.join("mgmt");
            let hint = match driver {
                DEFAULT_DRIVER => format!(
                    ": scst_local creates {DEFAULT_LOCAL_TARGET} when loaded with \
                     add_default_tgt=1 (the default); otherwise `echo \"add_target {target} \
                     session_name=scst_local_host\" > {}`",
                    mgmt.display()
                ),
                "iscsi" => format!(
                    ": create it with `echo \"add_target {target}\" > {}` and enable it (`echo 1 \
                     > {}/enabled`, and `echo 1 > {}/enabled` for the driver), or with \
                     scstadmin; iscsi-scstd must be running",
                    mgmt.display(),
                    target_dir.display(),
                    driver_dir.display()
                ),
                _ => String::new(),
            };
            return Err(ScstAdminError::TargetMissing {
                driver: driver.to_owned(),
                target: target.to_owned(),
                dir: target_dir,
                hint,
            });
        }
        Ok(target_dir)
    }

    /// Polls `probe` every `poll_interval` until it gives a value or
    /// `timeout` has passed ([`poll_until`](dataplane::kernfs::poll_until)).
    pub(super) fn wait_for<T>(
        &self,
        timeout: Duration,
        probe: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        dataplane::kernfs::poll_until(timeout, self.poll_interval, probe)
    }
}
