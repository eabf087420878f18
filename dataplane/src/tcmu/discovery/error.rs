//! [`DiscoveryError`]: what discovery and the recovery actions report.

use crate::kernfs::KernfsError;

/// Errors of discovery and of the configfs recovery actions. Every variant
/// names the file or UIO name involved.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A sysfs or configfs file could not be read, written or parsed.
    #[error(transparent)]
    File(#[from] KernfsError),
    /// The `<cfg>` part of a TCMU UIO name is not a bdev name.
    #[error("UIO name {uio_name:?}: {why}")]
    BadBdevName {
        /// The whole UIO name.
        uio_name: String,
        /// What is wrong with the `<cfg>` part.
        why: &'static str,
    },
}
