//! The mutating filesystem operations of `dataplane lio`, as values.
//!
//! Every change `lio` makes to configfs is one [`FsOp`] applied through the
//! [`Fs`] trait: [`RealFs`] performs it, a test fake records it (and plays
//! the kernel's part). Reads go straight to the filesystem.

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;

/// One change to configfs.
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
                // No O_CREAT: configfs attributes exist or the write is wrong.
                let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
                file.write_all(value.as_bytes())
            }
            FsOp::Symlink { target, link } => std::os::unix::fs::symlink(target, link),
            FsOp::Unlink(p) => std::fs::remove_file(p),
        }
    }
}
