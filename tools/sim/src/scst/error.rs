//! Why the initiator's calls fail.

use nix::errno::Errno;

/// Why a command was not queued. `Full` is flow control: reap and retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimSubmitError {
    /// Every command slot is in use.
    #[error("too many commands in flight")]
    Full,
    /// The data buffer is larger than `max_transfer_bytes`.
    #[error("data buffer too large")]
    TooLarge,
    /// Empty, longer than 16 bytes, or shorter than its opcode's group
    /// requires.
    #[error("bad CDB")]
    BadCdb,
    /// No attached session with this handle.
    #[error("unknown session")]
    UnknownSession,
    /// No device registered, or its handler closed the fd.
    #[error("no device")]
    NoDevice,
}

/// Errors of the initiator's management calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No device registered yet.
    #[error("no device registered")]
    NotRegistered,
    /// The handler closed the fd.
    #[error("the device is gone")]
    DeviceGone,
    /// No session (or no attached session) with this handle.
    #[error("unknown session")]
    UnknownSession,
    /// The session has commands in flight.
    #[error("session has commands in flight")]
    SessionBusy,
    /// The handler answered ATTACH_SESS with this result.
    #[error("ATTACH_SESS failed with {0}")]
    AttachFailed(i32),
    /// No answer to ATTACH_SESS in time.
    #[error("ATTACH_SESS timed out")]
    AttachTimeout,
    /// Creating the wait eventfd failed.
    #[error("eventfd: {0}")]
    Eventfd(Errno),
}
