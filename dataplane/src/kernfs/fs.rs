//! Changes to the kernel's control filesystems, as values.
//!
//! Every change the control plane makes to configfs or sysfs is one
//! [`FsOp`] applied through the [`Fs`] trait: [`RealFs`] performs it, a test
//! fake records it (and plays the kernel's part). Reads go straight to the
//! filesystem (see [`read_trimmed`](super::read_trimmed)): tests lay out a
//! temporary tree under [`Roots::under`](super::Roots::under) that the fake
//! keeps up to date as the kernel would.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::KernfsError;

/// One change to configfs or sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsOp {
    /// `mkdir(2)` (not recursive).
    Mkdir(PathBuf),
    /// `rmdir(2)`.
    Rmdir(PathBuf),
    /// One `write(2)` of `value` (no newline) to an existing attribute file,
    /// as `echo -n value > path`.
    Write {
        /// The attribute file.
        path: PathBuf,
        /// What is written.
        value: String,
    },
    /// `symlink(2)`: `link` pointing at `target`.
    Symlink {
        /// What the link points at.
        target: PathBuf,
        /// The link to create.
        link: PathBuf,
    },
    /// `unlink(2)` of a symlink.
    Unlink(PathBuf),
}

impl FsOp {
    /// A [`FsOp::Write`] of `value` to `path`.
    pub fn write(path: impl Into<PathBuf>, value: impl Into<String>) -> Self {
        FsOp::Write {
            path: path.into(),
            value: value.into(),
        }
    }
}

impl fmt::Display for FsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsOp::Mkdir(p) => write!(f, "mkdir {}", p.display()),
            FsOp::Rmdir(p) => write!(f, "rmdir {}", p.display()),
            FsOp::Write { path, value } => write!(f, "write {value:?} to {}", path.display()),
            FsOp::Symlink { target, link } => {
                write!(f, "symlink {} -> {}", link.display(), target.display())
            }
            FsOp::Unlink(p) => write!(f, "unlink {}", p.display()),
        }
    }
}

/// Applies [`FsOp`]s. Implemented by [`RealFs`] and by test fakes.
pub trait Fs {
    /// Performs `op`, returning the OS error unchanged on failure.
    fn apply(&mut self, op: &FsOp) -> io::Result<()>;

    /// Writes `value` to the existing attribute `path` (one [`FsOp::Write`]);
    /// the error names the file and the value.
    fn write_attr(&mut self, path: &Path, value: &str) -> Result<(), KernfsError> {
        self.apply(&FsOp::write(path, value))
            .map_err(|source| KernfsError::Write {
                path: path.to_path_buf(),
                value: value.to_owned(),
                source,
            })
    }
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl Fs for RealFs {
    fn apply(&mut self, op: &FsOp) -> io::Result<()> {
        match op {
            FsOp::Mkdir(p) => std::fs::create_dir(p),
            FsOp::Rmdir(p) => std::fs::remove_dir(p),
            FsOp::Write { path, value } => {
                // No O_CREAT: configfs and sysfs attributes exist or the
                // write is wrong.
                let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
                file.write_all(value.as_bytes())
            }
            FsOp::Symlink { target, link } => std::os::unix::fs::symlink(target, link),
            FsOp::Unlink(p) => std::fs::remove_file(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_display_what_they_do() {
        assert_eq!(FsOp::Mkdir("/a/b".into()).to_string(), "mkdir /a/b");
        assert_eq!(FsOp::Rmdir("/a".into()).to_string(), "rmdir /a");
        assert_eq!(
            FsOp::write("/a/enable", "1").to_string(),
            "write \"1\" to /a/enable"
        );
        assert_eq!(
            FsOp::Symlink {
                target: "/t".into(),
                link: "/l".into()
            }
            .to_string(),
            "symlink /l -> /t"
        );
        assert_eq!(FsOp::Unlink("/l".into()).to_string(), "unlink /l");
    }

    #[test]
    fn real_fs_writes_only_existing_attributes() {
        let tmp = tempfile::TempDir::new().unwrap();
        let attr = tmp.path().join("attr");
        std::fs::write(&attr, "").unwrap();
        RealFs.write_attr(&attr, "1").unwrap();
        assert_eq!(std::fs::read_to_string(&attr).unwrap(), "1");
        let missing = tmp.path().join("missing");
        let err = RealFs.write_attr(&missing, "2").unwrap_err().to_string();
        assert!(err.starts_with("cannot write \"2\" to "), "{err}");
        assert!(!missing.exists());

        let dir = tmp.path().join("d");
        let mut fs = RealFs;
        fs.apply(&FsOp::Mkdir(dir.clone())).unwrap();
        fs.apply(&FsOp::Symlink {
            target: dir.clone(),
            link: tmp.path().join("l"),
        })
        .unwrap();
        fs.apply(&FsOp::Unlink(tmp.path().join("l"))).unwrap();
        fs.apply(&FsOp::Rmdir(dir.clone())).unwrap();
        assert!(!dir.exists());
    }
}
