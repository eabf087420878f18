//! [`Lio`]: LIO configfs management over one machine's trees, with the
//! change and wait primitives every operation shares.

use std::time::Duration;

use dataplane::kernfs::{Fs, FsOp, RealFs, Roots};

use super::error::LioError;

/// LIO configfs management over a set of [`Roots`], changing the filesystem
/// through an [`Fs`] ([`RealFs`] unless testing).
#[derive(Debug)]
pub struct Lio<F: Fs = RealFs> {
    pub(super) roots: Roots,
    pub(super) fs: F,
    euid: u32,
    /// How long `create` waits for the UIO device after `enable` (default
    /// 5 s; the kernel creates it during the write).
    pub uio_timeout: Duration,
    /// How long `create` waits for a handler to open the UIO device, and
    /// then for the disk (default 15 s each).
    pub timeout: Duration,
    /// Pause between two looks while waiting (default 50 ms).
    pub poll_interval: Duration,
}

impl Lio<RealFs> {
    /// The real filesystem, with the process's effective uid.
    pub fn new(roots: Roots) -> Self {
        let euid = nix::unistd::geteuid().as_raw();
        Self::with_fs(roots, RealFs, euid)
    }
}

impl<F: Fs> Lio<F> {
    /// A custom [`Fs`] and effective uid (for tests).
    pub fn with_fs(roots: Roots, fs: F, euid: u32) -> Self {
        Self {
            roots,
            fs,
            euid,
            uio_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
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

    /// Applies one change; on failure, the error names it.
    pub(super) fn apply(&mut self, op: FsOp, hint: &str) -> Result<(), LioError> {
        match self.fs.apply(&op) {
            Ok(()) => Ok(()),
            Err(error) => Err(LioError::Step {
                op,
                error,
                hint: hint.to_owned(),
            }),
        }
    }

    pub(super) fn check_root(&self) -> Result<(), LioError> {
        if self.euid == 0 {
            Ok(())
        } else {
            Err(LioError::NotRoot { euid: self.euid })
        }
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
