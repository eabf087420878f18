//! [`KernfsError`]: a configfs, sysfs or procfs file could not be read,
//! written or understood.

use std::io;
use std::path::PathBuf;

/// A file of the kernel's control filesystems could not be read, written
/// or parsed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum KernfsError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// An attribute could not be written.
    #[error("cannot write {value:?} to {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A file's content is not what the kernel writes there.
    #[error("{}: cannot parse {content:?}: {why}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it contained (trimmed).
        content: String,
        /// What was expected.
        why: &'static str,
    },
}

impl KernfsError {
    /// Whether this is a read that failed because the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, KernfsError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}
