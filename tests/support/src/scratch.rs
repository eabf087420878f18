//! Scratch directories for tests that open files with O_DIRECT.

use std::path::{Path, PathBuf};

/// A temporary directory named `<prefix>...` on a disk filesystem: under
/// `/var/tmp` where there is one (tmpfs, where `std::env::temp_dir` often
/// is, may refuse O_DIRECT), else under the current directory. Removed when
/// dropped.
pub fn disk_dir(prefix: &str) -> tempfile::TempDir {
    let base = if Path::new("/var/tmp").is_dir() {
        PathBuf::from("/var/tmp")
    } else {
        std::env::current_dir().expect("a current directory")
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("a scratch directory")
}
