//! The real host: UIO devices from sysfs, facts and actions in configfs,
//! and `/dev/scst_user` for SCST devices. Paths come from a [`Roots`];
//! configfs is changed through an [`Fs`] ([`RealFs`] unless testing).

use super::host::{DeviceFacts, FoundDevice, Host, HostError};
use crate::kernfs::{Fs, RealFs, Roots};
use crate::scst::abi::DEV_USER_NAME;
use crate::scst::driver::ScstDriver;
use crate::scst::error::ScstError;
use crate::scst::ioctl::ScstFd;
use crate::tcmu::discovery::{self, RingReset, TcmuUioName};
use crate::tcmu::{open_uio_node, uio_map0_size, Doorbell, SharedRegion, TcmuError};

/// The machine's sysfs, configfs and /dev (or trees under other roots),
/// changing configfs through `F`.
#[derive(Debug, Clone, Default)]
pub struct SysHost<F: Fs = RealFs> {
    roots: Roots,
    fs: F,
    /// UIO entries that could not be read, reported once each.
    skipped_reported: Vec<String>,
}

impl SysHost<RealFs> {
    /// A host over `roots`, on the real filesystem.
    pub fn new(roots: Roots) -> Self {
        Self::with_fs(roots, RealFs)
    }
}

impl<F: Fs> SysHost<F> {
    /// A host over `roots` that changes configfs through `fs` (for tests).
    pub fn with_fs(roots: Roots, fs: F) -> Self {
        Self {
            roots,
            fs,
            skipped_reported: Vec::new(),
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
}

impl<F: Fs + Send> Host for SysHost<F> {
    fn scan(&mut self) -> Vec<FoundDevice> {
        let scan = discovery::scan(&self.roots);
        for (path, error) in &scan.skipped {
            let line = format!("{}: {error}", path.display());
            if !self.skipped_reported.contains(&line) {
                tracing::warn!(target: "dataplane serve", "skipping UIO entry {line}");
                self.skipped_reported.push(line);
            }
        }
        scan.devices
            .into_iter()
            .map(|d| FoundDevice {
                minor: d.minor,
                uio_name: d.name,
            })
            .collect()
    }

    fn facts(&mut self, name: &TcmuUioName) -> Result<DeviceFacts, HostError> {
        let facts = discovery::device_facts(&self.roots, name.hba, &name.name)?;
        Ok(DeviceFacts {
            block_size: facts.hw_block_size,
            max_sectors: facts.hw_max_sectors,
            size: facts.dev_size,
        })
    }

    /// Any process but this one in `<proc>/*/fd` (see
    /// [`discovery::uio_holders`]; complete only as root, and the open
    /// that follows fails with `EBUSY` anyway if a holder was missed).
    fn is_held(&mut self, device: &FoundDevice) -> bool {
        let me = std::process::id();
        discovery::uio_holders(&self.roots, device.minor)
            .into_iter()
            .any(|pid| pid != me)
    }

    fn open(&mut self, device: &FoundDevice) -> Result<(SharedRegion, Doorbell), HostError> {
        let sysfs_dir = self
            .roots
            .uio_class_dir()
            .join(format!("uio{}", device.minor));
        let len = uio_map0_size(&sysfs_dir)?;
        match open_uio_node(&self.roots.uio_node(device.minor), len) {
            Ok(opened) => Ok(opened),
            Err(TcmuError::Open { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
                Err(HostError::Busy)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn recover(&mut self, name: &TcmuUioName) -> Result<(), HostError> {
        let (fs, roots) = (&mut self.fs, &self.roots);
        discovery::block_dev(fs, roots, name.hba, &name.name, true)?;
        discovery::reset_ring(fs, roots, name.hba, &name.name, RingReset::Busy)?;
        Ok(())
    }

    fn unblock(&mut self, name: &TcmuUioName) -> Result<(), HostError> {
        discovery::block_dev(&mut self.fs, &self.roots, name.hba, &name.name, false)?;
        Ok(())
    }

    fn loopback_dir(&self) -> Option<std::path::PathBuf> {
        Some(self.roots.loopback_dir())
    }

    /// `<dev>/scst_user`, opened `O_RDWR | O_NONBLOCK | O_CLOEXEC`; a
    /// missing node is told apart from a module not loaded through
    /// `<sysfs>/module/scst_user`.
    fn open_scst(&mut self, _name: &str) -> Result<Box<dyn ScstDriver>, ScstError> {
        let node = self.roots.dev.join(DEV_USER_NAME);
        Ok(Box::new(ScstFd::open_with_sysfs(&node, &self.roots.sysfs)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernfs::FsOp;

    /// Records the changes instead of making them.
    #[derive(Debug, Default)]
    struct Recorder(Vec<FsOp>);

    impl Fs for Recorder {
        fn apply(&mut self, op: &FsOp) -> std::io::Result<()> {
            self.0.push(op.clone());
            Ok(())
        }
    }

    #[test]
    fn recovery_blocks_resets_then_unblocks_through_the_fs() {
        let roots = Roots::under(std::path::Path::new("/fake"));
        let mut host = SysHost::with_fs(roots, Recorder::default());
        let name = TcmuUioName::parse("tcm-user/1/disk0/dataplane/ram0").unwrap();
        host.recover(&name).unwrap();
        host.unblock(&name).unwrap();
        let action = "/fake/sys/kernel/config/target/core/user_1/disk0/action";
        assert_eq!(
            host.fs().0,
            [
                FsOp::write(format!("{action}/block_dev"), "1"),
                FsOp::write(format!("{action}/reset_ring"), "1"),
                FsOp::write(format!("{action}/block_dev"), "0"),
            ]
        );
    }

    #[test]
    fn a_failed_action_names_the_file() {
        let tmp = tempfile::TempDir::new().unwrap();
        let mut host = SysHost::new(Roots::under(tmp.path()));
        let name = TcmuUioName::parse("tcm-user/0/ghost/dataplane/ram0").unwrap();
        let err = host.recover(&name).unwrap_err().to_string();
        assert!(err.starts_with("cannot write \"1\" to "), "{err}");
        assert!(
            err.ends_with("user_0/ghost/action/block_dev: No such file or directory (os error 2)"),
            "{err}"
        );
    }
}
