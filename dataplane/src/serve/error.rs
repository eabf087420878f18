//! Why the server could not start ([`ServeError`]), why an `[[scst]]`
//! device could not ([`ScstStartError`]), and why a device could not be
//! placed on its reactor ([`PlacementError`]).

use std::path::PathBuf;

use super::config::ConfigError;
use crate::scst::error::ScstError;
use crate::stack::StackError;

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state directory could not be created.
    #[error("state directory {}: {error}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why (part of the message, not a source: it would print twice).
        error: std::io::Error,
    },
    /// A bdev could not be created.
    #[error("bdev {name}: {source}")]
    Bdev {
        /// Bdev name.
        name: String,
        /// Why.
        source: bdev::Error,
    },
    /// A reactor could not be started or stopped.
    #[error("reactor: {0}")]
    Reactor(#[from] reactor::Error),
    /// An `[[scst]]` device could not be opened, registered or set up.
    #[error("scst {device:?}: {error}")]
    Scst {
        /// The SCST device name.
        device: String,
        /// What failed (part of the message, not a source: it would print
        /// twice).
        error: ScstStartError,
    },
}

/// Why an `[[scst]]` device could not be started; each message is the
/// failing layer's, which says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ScstStartError {
    /// Opening `/dev/scst_user` or finding DEV_USER_VERSION failed.
    #[error(transparent)]
    Scst(#[from] ScstError),
    /// The device's bdev is not among the server's (validation prevents
    /// it).
    #[error("bdev {0:?} is not in the configuration")]
    NoBdev(String),
    /// Registration, the LUN, the buffer pool or the device failed.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// The device could not be put on its reactor.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// Its bdev cannot serve it (left out at start, or of another block
    /// size than the device's).
    #[error("{0}")]
    Refused(String),
}

/// Why a device could not be put on its reactor.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// The reactor's bdev poller for the device's bdev needed a channel,
    /// which the bdev refused.
    #[error("bdev channel: {0}")]
    Channel(bdev::Error),
    /// The reactor refused a poller (it stopped).
    #[error("reactor: {0}")]
    Reactor(reactor::Error),
}

/// Why a bdev could not be created or deleted while the server runs.
#[derive(Debug, thiserror::Error)]
pub enum BdevChangeError {
    /// A bdev of that name exists already.
    #[error("a bdev named {0:?} exists already")]
    Exists(String),
    /// No bdev of that name.
    #[error("no bdev named {0:?}")]
    NoSuchBdev(String),
    /// The configuration with the new bdev is invalid (the message names
    /// the key).
    #[error(transparent)]
    Invalid(ConfigError),
    /// Something stands on the bdev (or, for a new striped bdev, on one
    /// of its children).
    #[error("bdev {name:?} is in use by {}", users.join(", "))]
    InUse {
        /// The bdev.
        name: String,
        /// What uses it: `tcmu <device>`, `scst <device>`, `bdev <name>`.
        users: Vec<String>,
    },
    /// The bdev could not be made.
    #[error(transparent)]
    Make(ServeError),
    /// A `file` or `nvme` bdev's file or device cannot be used (the
    /// message names the bdev, the path and the problem).
    #[error("{0}")]
    Unavailable(String),
}

/// Why an `[[scst]]` device could not be added or removed while the
/// server runs.
#[derive(Debug, thiserror::Error)]
pub enum ScstChangeError {
    /// A device of that name exists already.
    #[error("an SCST device named {0:?} exists already")]
    Exists(String),
    /// No device of that name.
    #[error("no SCST device named {0:?}")]
    NoSuchDevice(String),
    /// The configuration with the new device is invalid (the message names
    /// the key).
    #[error(transparent)]
    Invalid(ConfigError),
    /// Registering or placing it failed.
    #[error("SCST device {device:?}: {error}")]
    Start {
        /// The device.
        device: String,
        /// Why.
        #[source]
        error: ScstStartError,
    },
}
