//! [`VersionMiss`]: one place the DEV_USER_VERSION search looked at without
//! finding the string, and why.

use std::path::PathBuf;

use super::header::HeaderError;
use super::DEV_USER_INTF_VER;

/// One place the DEV_USER_VERSION search looked at without finding it, and
/// why. [`ScstError::VersionNotFound`] lists them in the order looked at.
///
/// [`ScstError::VersionNotFound`]: crate::scst::error::ScstError::VersionNotFound
#[derive(Debug, thiserror::Error)]
pub enum VersionMiss {
    /// An include directory has no `scst_itf_ver.h`.
    #[error("no {}", .0.display())]
    NoHeader(PathBuf),
    /// A header or module file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The headers are there but do not give the version.
    #[error("{} / {}: {error}", itf_ver.display(), scst_const.display())]
    BadHeaders {
        /// `scst_itf_ver.h`.
        itf_ver: PathBuf,
        /// `scst_const.h`.
        scst_const: PathBuf,
        /// The missing or malformed macro.
        error: HeaderError,
    },
    /// No `modinfo` was tried.
    #[error("modinfo not found")]
    NoModinfo,
    /// A program could not be run.
    #[error("cannot run {program}: {error}")]
    CannotRun {
        /// The program.
        program: &'static str,
        /// Why.
        error: std::io::Error,
    },
    /// `modinfo -n scst_user` named no file (e.g. `(builtin)`).
    #[error("modinfo -n scst_user printed {0:?}")]
    ModinfoNoFile(String),
    /// `modinfo -n scst_user` named a file that does not exist.
    #[error("modinfo -n scst_user names {}, which does not exist", .0.display())]
    ModinfoFileMissing(PathBuf),
    /// `modinfo -n scst_user` failed: the first line it printed.
    #[error("modinfo -n scst_user failed: {0}")]
    ModinfoFailed(String),
    /// The running kernel's release, so its module directory, is unknown.
    #[error("the kernel release is unknown (no /proc/sys/kernel/osrelease)")]
    UnknownRelease,
    /// No scst_user module file under the module directory.
    #[error("no scst_user.ko{{,.xz,.zst,.gz}} under {}", .0.display())]
    NoModule(PathBuf),
    /// The decompression tool failed on a module file.
    #[error("{program} could not decompress {}: {stderr}", path.display())]
    Decompress {
        /// The tool.
        program: &'static str,
        /// The module file.
        path: PathBuf,
        /// What the tool said.
        stderr: String,
    },
    /// The decompression tool of a module file could not be run.
    #[error(
        "cannot decompress {}: cannot run {program} ({error}; install {package})",
        path.display()
    )]
    NoDecompressor {
        /// The module file.
        path: PathBuf,
        /// The tool.
        program: &'static str,
        /// The package that has it.
        package: &'static str,
        /// Why it could not run.
        error: std::io::Error,
    },
    /// scst_user is not loaded (no `/sys/module/scst_user/sections`).
    #[error("scst_user is not loaded (no {})", .0.display())]
    NotLoaded(PathBuf),
    /// The loaded module's section addresses read as 0 (not root).
    #[error("{} shows no section addresses (run as root)", .0.display())]
    NoSectionAddresses(PathBuf),
    /// `/proc/kcore` is not what it should be, or does not map the module.
    #[error("{}: {why}", path.display())]
    BadKcore {
        /// The kcore file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The loaded module's read-only data holds no DEV_USER_VERSION string.
    #[error("the loaded scst_user module's read-only data holds no DEV_USER_VERSION string")]
    NotInLoadedModule,
    /// A module file holds no DEV_USER_VERSION string.
    #[error(
        "{} holds no string <version>{DEV_USER_INTF_VER}<40 hex digits>",
        .0.display()
    )]
    NoVersionString(PathBuf),
}
