//! [`NetlinkError`]: what can go wrong with the TCM-USER listener, and
//! which errors leave it usable.

use std::io;
use std::time::Duration;

/// Errors of the TCM-USER netlink listener.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// `socket(AF_NETLINK, SOCK_DGRAM, NETLINK_GENERIC)` failed.
    #[error("cannot open a NETLINK_GENERIC socket: {0}")]
    Socket(#[source] io::Error),
    /// A socket operation failed; `op` names it (bind, send, recv, poll, ...).
    #[error("netlink {op} failed: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The controller does not know the family. For `TCM-USER` this means
    /// the `target_core_user` module is not loaded: fall back to rescanning
    /// `/sys/class/uio`.
    #[error(
        "generic netlink family {family:?} is not registered in the kernel \
         (for TCM-USER: the target_core_user module is not loaded)"
    )]
    FamilyNotFound {
        /// The family asked for.
        family: String,
    },
    /// The family exists but has no multicast group of that name.
    #[error("generic netlink family {family:?} has no multicast group {group:?}")]
    GroupNotFound {
        /// The family.
        family: String,
        /// The group asked for.
        group: String,
    },
    /// The kernel answered a request with an error (e.g. `EPERM` without
    /// `CAP_NET_ADMIN`, `ENODEV` for a `*_DONE` naming a device that waits
    /// for no reply, `EINVAL` for a reply to the wrong command).
    #[error("the kernel rejected {request}: {}", io::Error::from_raw_os_error(*errno))]
    Kernel {
        /// The request, e.g. `"TCMU_CMD_ADDED_DEVICE_DONE"`.
        request: &'static str,
        /// The positive errno.
        errno: i32,
    },
    /// The kernel did not answer a request in
    /// [`REPLY_TIMEOUT`](super::REPLY_TIMEOUT).
    #[error("no answer from the kernel to {request} within {timeout:?}")]
    NoReply {
        /// The request.
        request: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
    /// The socket's receive buffer overran (`ENOBUFS`): the kernel dropped
    /// events. Rescan the devices; the listener goes on.
    #[error("netlink receive buffer overrun: device events were lost (rescan the devices)")]
    EventsLost,
    /// A message could not be decoded; it was skipped and the listener goes
    /// on.
    #[error("malformed netlink message: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
}

impl NetlinkError {
    /// True if the listener is still usable after this error (a skipped
    /// message, lost events, a rejected or unanswered request); false if the
    /// socket itself failed or could not be set up, so the caller should fall
    /// back to rescanning.
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            NetlinkError::Kernel { .. }
                | NetlinkError::NoReply { .. }
                | NetlinkError::EventsLost
                | NetlinkError::Malformed { .. }
        )
    }

    pub(super) fn malformed(reason: impl std::fmt::Display) -> Self {
        NetlinkError::Malformed {
            reason: reason.to_string(),
        }
    }
}
