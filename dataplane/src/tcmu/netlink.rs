//! A listener for the kernel's `TCM-USER` generic netlink family: the events
//! `target_core_user` multicasts when a TCMU device is added, removed or
//! reconfigured, and the `*_DONE` / `SET_FEATURES` requests a daemon may send
//! back. It runs on a control thread, never on the data path.
//!
//! # Protocol (`include/uapi/linux/target_core_user.h`, `target_core_user.c`)
//! The family is registered by the `target_core_user` module as `"TCM-USER"`,
//! version 2, no family header, one multicast group `"config"`. Its id and
//! the group's id are assigned at registration, so [`TcmuNetlink::open`]
//! asks the controller (`nlctrl`, `CTRL_CMD_GETFAMILY`) for them. When the
//! module is not loaded the controller answers `ENOENT`, reported as
//! [`NetlinkError::FamilyNotFound`].
//!
//! Kernel → user (multicast on `"config"`): `ADDED_DEVICE` (1),
//! `REMOVED_DEVICE` (2) and `RECONFIG_DEVICE` (3), each with `DEVICE`
//! (string, the UIO name `tcm-user/<hba>/<name>/<dev_config>`), `MINOR`
//! (u32, `/dev/uio<minor>`) and `DEVICE_ID` (u32, `se_dev.dev_index`);
//! `RECONFIG_DEVICE` adds one of `DEV_CFG` (string), `DEV_SIZE` (u64) or
//! `WRITECACHE` (u8). They become [`TcmuEvent`]s.
//!
//! User → kernel (need `CAP_NET_ADMIN`, the family's ops are
//! `GENL_ADMIN_PERM`): `ADDED/REMOVED/RECONFIG_DEVICE_DONE` (4/5/6) with
//! `CMD_STATUS` (s32) and `DEVICE_ID` (u32), both required
//! ([`TcmuNetlink::reply_done`]); `SET_FEATURES` (7) with
//! `SUPP_KERN_CMD_REPLY` (u8) ([`TcmuNetlink::set_features`]).
//!
//! # The reply gotcha
//! The kernel waits for a `*_DONE` reply — with `wait_for_completion`, no
//! timeout — only when both hold: the module-global
//! `tcmu_kern_cmd_reply_supported` is set, and the device's
//! `nl_reply_supported` is > 0 (0, the default, inherits the global; -1 opts
//! out). `SET_FEATURES` sets the *global* flag, and it stays set after the
//! daemon that sent it exits: every later device enable/disable/reconfigure
//! then blocks until somebody replies, for every TCMU user on the machine.
//! `dataplane lio create` writes `nl_reply_supported=-1` before enabling, so
//! our devices never need replies; `serve` therefore does not call
//! [`TcmuNetlink::set_features`] and only listens. The reply functions exist
//! for a deployment that wants the handshake (e.g. to refuse a device whose
//! bdev is missing, failing the enable with the given status).
//!
//! # Reading
//! The socket is always non-blocking. [`TcmuNetlink::recv`] waits (with
//! `poll(2)`) up to a timeout, or forever with `None`;
//! [`TcmuNetlink::try_recv`] never waits. For an event loop register
//! [`AsRawFd::as_raw_fd`] for readability and call `try_recv` until it
//! returns `Ok(None)`; also drain after [`TcmuNetlink::reply_done`] or
//! [`TcmuNetlink::set_features`], which may have read events into the queue
//! while waiting for their acknowledgement ([`TcmuNetlink::pending`]).
//!
//! # Malformed input
//! Everything from the socket is untrusted and never causes a panic.
//! - Datagrams not sent by the kernel (source port id ≠ 0) are dropped: any
//!   local process may unicast to our port.
//! - Messages of other families, netlink control messages, unknown
//!   `TCM-USER` commands (including the user → kernel ones) and unknown
//!   attributes (e.g. `PAD`) are skipped silently: newer kernels may add them.
//! - A message of the family that cannot be decoded (bad header or attribute
//!   lengths, a known attribute of the wrong size, a missing `DEVICE`,
//!   `MINOR` or `DEVICE_ID`, a `RECONFIG_DEVICE` with no or several change
//!   attributes, a non-UTF-8 device name) is returned as
//!   [`NetlinkError::Malformed`] in its place in the stream; a bad
//!   `nlmsghdr` length also ends the walk of its datagram. The listener stays
//!   usable: [`NetlinkError::is_recoverable`].
//! - A receive-buffer overrun (`ENOBUFS`) is [`NetlinkError::EventsLost`]:
//!   events were dropped by the kernel, so the caller must rescan.
//!
//! # Implementation
//! The `rust-netlink` crates do the plumbing: `netlink-sys` owns the socket
//! (no `unsafe` here), `netlink-packet-core` frames messages and attributes,
//! `netlink-packet-generic` provides the genl header and the controller
//! request; [`TcmuGenlMessage`] implements its `GenlFamily` trait for
//! `TCM-USER`. The controller's *reply* is walked here instead of with
//! `GenlCtrl`'s parser, because that parser rejects attribute types it does
//! not know, which a newer kernel could add. All encoders and decoders are
//! pure functions on byte buffers ([`encode_get_family`],
//! [`decode_family_reply`], [`decode_event`], [`encode_done`],
//! [`encode_set_features`], [`messages`]).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    parse_i32, parse_string, parse_u16, parse_u32, parse_u64, parse_u8, DecodeError, DefaultNla,
    Emitable, ErrorBuffer, NetlinkBuffer, NetlinkMessage, NetlinkPayload, Nla, NlaBuffer,
    NlasIterator, Parseable, ParseableParametrized, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_generic::constants::{
    CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME, CTRL_ATTR_MCAST_GROUPS, CTRL_ATTR_MCAST_GRP_ID,
    CTRL_ATTR_MCAST_GRP_NAME, CTRL_ATTR_VERSION, CTRL_CMD_NEWFAMILY, GENL_HDRLEN, GENL_ID_CTRL,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::traits::GenlFamily;
use netlink_packet_generic::{GenlHeader, GenlMessage};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Name of the generic netlink family registered by `target_core_user`.
pub const TCMU_GENL_FAMILY: &str = "TCM-USER";
/// Name of the family's only multicast group, on which the device events
/// arrive.
pub const TCMU_MCGRP_CONFIG: &str = "config";
/// `tcmu_genl_family.version`; put in the genl header of requests. Received
/// messages are decoded whatever their version.
pub const TCMU_GENL_VERSION: u8 = 2;

/// `TCMU_CMD_UNSPEC`.
pub const TCMU_CMD_UNSPEC: u8 = 0;
/// `TCMU_CMD_ADDED_DEVICE`: kernel multicast, a device was enabled.
pub const TCMU_CMD_ADDED_DEVICE: u8 = 1;
/// `TCMU_CMD_REMOVED_DEVICE`: kernel multicast, a device is going away.
pub const TCMU_CMD_REMOVED_DEVICE: u8 = 2;
/// `TCMU_CMD_RECONFIG_DEVICE`: kernel multicast, a device attribute changed.
pub const TCMU_CMD_RECONFIG_DEVICE: u8 = 3;
/// `TCMU_CMD_ADDED_DEVICE_DONE`: user reply to `ADDED_DEVICE`.
pub const TCMU_CMD_ADDED_DEVICE_DONE: u8 = 4;
/// `TCMU_CMD_REMOVED_DEVICE_DONE`: user reply to `REMOVED_DEVICE`.
pub const TCMU_CMD_REMOVED_DEVICE_DONE: u8 = 5;
/// `TCMU_CMD_RECONFIG_DEVICE_DONE`: user reply to `RECONFIG_DEVICE`.
pub const TCMU_CMD_RECONFIG_DEVICE_DONE: u8 = 6;
/// `TCMU_CMD_SET_FEATURES`: user → kernel, sets the global reply flag.
pub const TCMU_CMD_SET_FEATURES: u8 = 7;

/// `TCMU_ATTR_DEVICE`: NUL-terminated string, the UIO name.
pub const TCMU_ATTR_DEVICE: u16 = 1;
/// `TCMU_ATTR_MINOR`: u32, the UIO minor.
pub const TCMU_ATTR_MINOR: u16 = 2;
/// `TCMU_ATTR_PAD`: alignment padding before `DEV_SIZE` (skipped).
pub const TCMU_ATTR_PAD: u16 = 3;
/// `TCMU_ATTR_DEV_CFG`: string, the new `dev_config`.
pub const TCMU_ATTR_DEV_CFG: u16 = 4;
/// `TCMU_ATTR_DEV_SIZE`: u64, the new `dev_size` in bytes.
pub const TCMU_ATTR_DEV_SIZE: u16 = 5;
/// `TCMU_ATTR_WRITECACHE`: u8, the new `emulate_write_cache`.
pub const TCMU_ATTR_WRITECACHE: u16 = 6;
/// `TCMU_ATTR_CMD_STATUS`: s32, the status of a `*_DONE` reply.
pub const TCMU_ATTR_CMD_STATUS: u16 = 7;
/// `TCMU_ATTR_DEVICE_ID`: u32, `se_dev.dev_index`.
pub const TCMU_ATTR_DEVICE_ID: u16 = 8;
/// `TCMU_ATTR_SUPP_KERN_CMD_REPLY`: u8, the `SET_FEATURES` flag.
pub const TCMU_ATTR_SUPP_KERN_CMD_REPLY: u16 = 9;

/// How long a request (`GETFAMILY`, `*_DONE`, `SET_FEATURES`) waits for the
/// kernel's answer. The kernel handles generic netlink requests synchronously
/// inside `sendmsg`, so the answer is normally queued before the send returns.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Size of the receive buffer. The kernel builds the events in an
/// `NLMSG_GOODSIZE` (at most 8 KiB) skb; a controller reply is a few hundred
/// bytes. A longer datagram is reported as [`NetlinkError::Malformed`].
const RECV_BUFFER_LEN: usize = 32 * 1024;

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
    /// The kernel did not answer a request in [`REPLY_TIMEOUT`].
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

    fn malformed(reason: impl std::fmt::Display) -> Self {
        NetlinkError::Malformed {
            reason: reason.to_string(),
        }
    }
}

/// Which kind of event a `*_DONE` reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcmuEventKind {
    /// `ADDED_DEVICE`.
    Added,
    /// `REMOVED_DEVICE`.
    Removed,
    /// `RECONFIG_DEVICE`.
    Reconfig,
}

impl TcmuEventKind {
    /// The kernel's event command (`TCMU_CMD_*_DEVICE`).
    pub fn command(self) -> u8 {
        match self {
            TcmuEventKind::Added => TCMU_CMD_ADDED_DEVICE,
            TcmuEventKind::Removed => TCMU_CMD_REMOVED_DEVICE,
            TcmuEventKind::Reconfig => TCMU_CMD_RECONFIG_DEVICE,
        }
    }

    /// The matching reply command (`TCMU_CMD_*_DEVICE_DONE`).
    pub fn done_command(self) -> u8 {
        match self {
            TcmuEventKind::Added => TCMU_CMD_ADDED_DEVICE_DONE,
            TcmuEventKind::Removed => TCMU_CMD_REMOVED_DEVICE_DONE,
            TcmuEventKind::Reconfig => TCMU_CMD_RECONFIG_DEVICE_DONE,
        }
    }

    fn done_name(self) -> &'static str {
        match self {
            TcmuEventKind::Added => "TCMU_CMD_ADDED_DEVICE_DONE",
            TcmuEventKind::Removed => "TCMU_CMD_REMOVED_DEVICE_DONE",
            TcmuEventKind::Reconfig => "TCMU_CMD_RECONFIG_DEVICE_DONE",
        }
    }
}

/// What a `RECONFIG_DEVICE` event changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconfigChange {
    /// `dev_config` was written (`TCMU_ATTR_DEV_CFG`).
    DevConfig(String),
    /// `dev_size` was written, in bytes (`TCMU_ATTR_DEV_SIZE`).
    DevSize(u64),
    /// `emulate_write_cache` was written (`TCMU_ATTR_WRITECACHE`).
    WriteCache(u8),
}

/// A device event multicast by `target_core_user`.
///
/// `device` is the UIO name, `tcm-user/<hba>/<name>/<dev_config>` (e.g.
/// `tcm-user/0/disk0/dataplane/ram0`); `minor` names `/dev/uio<minor>`;
/// `device_id` is the kernel's `se_dev.dev_index`, which a `*_DONE` reply
/// must quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcmuEvent {
    /// The device was enabled (`ADDED_DEVICE`); its UIO device exists.
    Added {
        /// UIO name.
        device: String,
        /// UIO minor.
        minor: u32,
        /// `se_dev.dev_index`.
        device_id: u32,
    },
    /// The device is being destroyed (`REMOVED_DEVICE`).
    Removed {
        /// UIO name.
        device: String,
        /// UIO minor.
        minor: u32,
        /// `se_dev.dev_index`.
        device_id: u32,
    },
    /// A configfs attribute of an enabled device was written
    /// (`RECONFIG_DEVICE`).
    Reconfig {
        /// UIO name (still the old `dev_config` for a `DevConfig` change).
        device: String,
        /// UIO minor.
        minor: u32,
        /// `se_dev.dev_index`.
        device_id: u32,
        /// The change.
        change: ReconfigChange,
    },
}

impl TcmuEvent {
    /// Kind of the event, for [`TcmuNetlink::reply_done`].
    pub fn kind(&self) -> TcmuEventKind {
        match self {
            TcmuEvent::Added { .. } => TcmuEventKind::Added,
            TcmuEvent::Removed { .. } => TcmuEventKind::Removed,
            TcmuEvent::Reconfig { .. } => TcmuEventKind::Reconfig,
        }
    }

    /// The UIO name (`tcm-user/...`).
    pub fn device(&self) -> &str {
        match self {
            TcmuEvent::Added { device, .. }
            | TcmuEvent::Removed { device, .. }
            | TcmuEvent::Reconfig { device, .. } => device,
        }
    }

    /// The UIO minor.
    pub fn minor(&self) -> u32 {
        match self {
            TcmuEvent::Added { minor, .. }
            | TcmuEvent::Removed { minor, .. }
            | TcmuEvent::Reconfig { minor, .. } => *minor,
        }
    }

    /// The kernel's device index.
    pub fn device_id(&self) -> u32 {
        match self {
            TcmuEvent::Added { device_id, .. }
            | TcmuEvent::Removed { device_id, .. }
            | TcmuEvent::Reconfig { device_id, .. } => *device_id,
        }
    }

    /// The UIO device name under `/dev` and `/sys/class/uio`, `uio<minor>`.
    pub fn uio_name(&self) -> String {
        format!("uio{}", self.minor())
    }
}

/// One `TCM-USER` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcmuAttr {
    /// `TCMU_ATTR_DEVICE`.
    Device(String),
    /// `TCMU_ATTR_MINOR`.
    Minor(u32),
    /// `TCMU_ATTR_DEV_CFG`.
    DevConfig(String),
    /// `TCMU_ATTR_DEV_SIZE`.
    DevSize(u64),
    /// `TCMU_ATTR_WRITECACHE`.
    WriteCache(u8),
    /// `TCMU_ATTR_CMD_STATUS`.
    CmdStatus(i32),
    /// `TCMU_ATTR_DEVICE_ID`.
    DeviceId(u32),
    /// `TCMU_ATTR_SUPP_KERN_CMD_REPLY`.
    SuppKernCmdReply(u8),
    /// Any other attribute (`PAD`, or one a newer kernel added), kept as is.
    Other(DefaultNla),
}

impl Nla for TcmuAttr {
    fn value_len(&self) -> usize {
        match self {
            TcmuAttr::Device(s) | TcmuAttr::DevConfig(s) => s.len() + 1,
            TcmuAttr::Minor(_) | TcmuAttr::CmdStatus(_) | TcmuAttr::DeviceId(_) => 4,
            TcmuAttr::DevSize(_) => 8,
            TcmuAttr::WriteCache(_) | TcmuAttr::SuppKernCmdReply(_) => 1,
            TcmuAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            TcmuAttr::Device(_) => TCMU_ATTR_DEVICE,
            TcmuAttr::Minor(_) => TCMU_ATTR_MINOR,
            TcmuAttr::DevConfig(_) => TCMU_ATTR_DEV_CFG,
            TcmuAttr::DevSize(_) => TCMU_ATTR_DEV_SIZE,
            TcmuAttr::WriteCache(_) => TCMU_ATTR_WRITECACHE,
            TcmuAttr::CmdStatus(_) => TCMU_ATTR_CMD_STATUS,
            TcmuAttr::DeviceId(_) => TCMU_ATTR_DEVICE_ID,
            TcmuAttr::SuppKernCmdReply(_) => TCMU_ATTR_SUPP_KERN_CMD_REPLY,
            TcmuAttr::Other(nla) => nla.kind(),
        }
    }

    /// `buffer` is exactly `value_len()` bytes: netlink-packet-core slices
    /// it so.
    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            TcmuAttr::Device(s) | TcmuAttr::DevConfig(s) => {
                let (text, nul) = buffer.split_at_mut(s.len());
                text.copy_from_slice(s.as_bytes());
                nul.fill(0);
            }
            TcmuAttr::Minor(v) | TcmuAttr::DeviceId(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            TcmuAttr::CmdStatus(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            TcmuAttr::DevSize(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            TcmuAttr::WriteCache(v) | TcmuAttr::SuppKernCmdReply(v) => {
                buffer.copy_from_slice(&[*v])
            }
            TcmuAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for TcmuAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        let named = |name: &str, e: DecodeError| DecodeError::from(format!("{name}: {e}"));
        Ok(match buf.kind() {
            TCMU_ATTR_DEVICE => {
                TcmuAttr::Device(parse_string(value).map_err(|e| named("TCMU_ATTR_DEVICE", e))?)
            }
            TCMU_ATTR_MINOR => {
                TcmuAttr::Minor(parse_u32(value).map_err(|e| named("TCMU_ATTR_MINOR", e))?)
            }
            TCMU_ATTR_DEV_CFG => {
                TcmuAttr::DevConfig(parse_string(value).map_err(|e| named("TCMU_ATTR_DEV_CFG", e))?)
            }
            TCMU_ATTR_DEV_SIZE => {
                TcmuAttr::DevSize(parse_u64(value).map_err(|e| named("TCMU_ATTR_DEV_SIZE", e))?)
            }
            TCMU_ATTR_WRITECACHE => {
                TcmuAttr::WriteCache(parse_u8(value).map_err(|e| named("TCMU_ATTR_WRITECACHE", e))?)
            }
            TCMU_ATTR_CMD_STATUS => {
                TcmuAttr::CmdStatus(parse_i32(value).map_err(|e| named("TCMU_ATTR_CMD_STATUS", e))?)
            }
            TCMU_ATTR_DEVICE_ID => {
                TcmuAttr::DeviceId(parse_u32(value).map_err(|e| named("TCMU_ATTR_DEVICE_ID", e))?)
            }
            TCMU_ATTR_SUPP_KERN_CMD_REPLY => TcmuAttr::SuppKernCmdReply(
                parse_u8(value).map_err(|e| named("TCMU_ATTR_SUPP_KERN_CMD_REPLY", e))?,
            ),
            _ => TcmuAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The body of a `TCM-USER` message (after the genl header): its command
/// and attributes. Implements `netlink-packet-generic`'s [`GenlFamily`], so
/// it travels in a [`GenlMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcmuGenlMessage {
    /// `TCMU_CMD_*`.
    pub cmd: u8,
    /// Attributes in wire order.
    pub attrs: Vec<TcmuAttr>,
}

impl GenlFamily for TcmuGenlMessage {
    fn family_name() -> &'static str {
        TCMU_GENL_FAMILY
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        TCMU_GENL_VERSION
    }
}

impl Emitable for TcmuGenlMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for TcmuGenlMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let attrs = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| TcmuAttr::parse(&nla)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TcmuGenlMessage {
            cmd: header.cmd,
            attrs,
        })
    }
}

/// What the controller told about a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyIds {
    /// The family id (`nlmsg_type` of its messages).
    pub family_id: u16,
    /// The id of the multicast group asked for (what
    /// `NETLINK_ADD_MEMBERSHIP` takes).
    pub group_id: u32,
    /// The family's version (`CTRL_ATTR_VERSION`; 0 if absent).
    pub version: u32,
}

/// Walks the netlink messages of one datagram: each item is one whole
/// message (`nlmsghdr` included, `nlmsg_len` bytes). A header whose length is
/// below 16 or beyond the datagram yields one [`NetlinkError::Malformed`] and
/// ends the walk.
pub fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages {
        datagram,
        offset: 0,
    }
}

/// Iterator returned by [`messages`].
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    datagram: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<&'a [u8], NetlinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.datagram.get(self.offset..)?;
        if rest.is_empty() {
            return None;
        }
        match NetlinkBuffer::new_checked(rest) {
            Ok(header) => {
                let len = header.length() as usize;
                // NLMSG_ALIGN: the next message starts on a 4-byte boundary.
                let step = len.saturating_add(3) & !3;
                self.offset = self.offset.saturating_add(step);
                Some(Ok(&rest[..len]))
            }
            Err(e) => {
                self.offset = self.datagram.len();
                Some(Err(NetlinkError::malformed(format!(
                    "at byte {} of a {}-byte datagram: {e}",
                    self.datagram.len() - rest.len(),
                    self.datagram.len()
                ))))
            }
        }
    }
}

/// Serializes a generic netlink message: `nlmsghdr` (type = family id, the
/// given flags and sequence number, port id 0), genl header, attributes.
fn encode_genl<F>(genl: GenlMessage<F>, flags: u16, seq: u32) -> Vec<u8>
where
    F: GenlFamily + Emitable + Debug,
{
    let mut message = NetlinkMessage::from(genl);
    message.header.flags = flags;
    message.header.sequence_number = seq;
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// `CTRL_CMD_GETFAMILY` for `family` (controller family 0x10, version 2,
/// `NLM_F_REQUEST`, one `CTRL_ATTR_FAMILY_NAME`). The kernel answers with a
/// `CTRL_CMD_NEWFAMILY` or an `NLMSG_ERROR` (`ENOENT` if unknown) carrying
/// `seq`.
pub fn encode_get_family(family: &str, seq: u32) -> Vec<u8> {
    let request = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(family.to_owned())],
    });
    encode_genl(request, NLM_F_REQUEST, seq)
}

/// Decodes one message read after [`encode_get_family`]`(family, seq)`.
///
/// `Ok(None)`: not the answer (another sequence number or type, an ACK);
/// keep reading. `Ok(Some(ids))`: the family's id and the id of multicast
/// group `group`. Errors: [`NetlinkError::FamilyNotFound`] for `ENOENT`,
/// [`NetlinkError::Kernel`] for another errno,
/// [`NetlinkError::GroupNotFound`], [`NetlinkError::Malformed`] (bad
/// lengths, no `CTRL_ATTR_FAMILY_ID`, another family's name). Unknown
/// controller attributes are skipped.
pub fn decode_family_reply(
    message: &[u8],
    seq: u32,
    family: &str,
    group: &str,
) -> Result<Option<FamilyIds>, NetlinkError> {
    let header = NetlinkBuffer::new_checked(message).map_err(NetlinkError::malformed)?;
    if header.sequence_number() != seq {
        return Ok(None);
    }
    match header.message_type() {
        NLMSG_ERROR => match error_code(header.payload())? {
            0 => Ok(None),
            errno if errno == libc::ENOENT => Err(NetlinkError::FamilyNotFound {
                family: family.to_owned(),
            }),
            errno => Err(NetlinkError::Kernel {
                request: "CTRL_CMD_GETFAMILY",
                errno,
            }),
        },
        GENL_ID_CTRL => {
            let payload = header.payload();
            let genl = GenlHeader::parse(payload).map_err(NetlinkError::malformed)?;
            if genl.cmd != CTRL_CMD_NEWFAMILY {
                return Ok(None);
            }
            parse_family_attrs(&payload[GENL_HDRLEN..], family, group).map(Some)
        }
        _ => Ok(None),
    }
}

/// The positive errno of an `NLMSG_ERROR` payload (0 for an ACK).
fn error_code(payload: &[u8]) -> Result<i32, NetlinkError> {
    let error = ErrorBuffer::new_checked(payload).map_err(NetlinkError::malformed)?;
    Ok(error.code().map_or(0, |code| code.get().saturating_neg()))
}

fn parse_family_attrs(attrs: &[u8], family: &str, group: &str) -> Result<FamilyIds, NetlinkError> {
    let bad = |what: &str, e: DecodeError| NetlinkError::malformed(format!("{what}: {e}"));
    let mut family_id = None;
    let mut version = 0;
    let mut group_id = None;
    for nla in NlasIterator::new(attrs) {
        let nla = nla.map_err(|e| bad("controller reply", e))?;
        match nla.kind() {
            CTRL_ATTR_FAMILY_ID => {
                family_id =
                    Some(parse_u16(nla.value()).map_err(|e| bad("CTRL_ATTR_FAMILY_ID", e))?);
            }
            CTRL_ATTR_FAMILY_NAME => {
                let name =
                    parse_string(nla.value()).map_err(|e| bad("CTRL_ATTR_FAMILY_NAME", e))?;
                if name != family {
                    return Err(NetlinkError::malformed(format!(
                        "controller answered for family {name:?}, asked for {family:?}"
                    )));
                }
            }
            CTRL_ATTR_VERSION => {
                version = parse_u32(nla.value()).map_err(|e| bad("CTRL_ATTR_VERSION", e))?;
            }
            CTRL_ATTR_MCAST_GROUPS => {
                for entry in NlasIterator::new(nla.value()) {
                    let entry = entry.map_err(|e| bad("CTRL_ATTR_MCAST_GROUPS", e))?;
                    let mut name = None;
                    let mut id = None;
                    for field in NlasIterator::new(entry.value()) {
                        let field = field.map_err(|e| bad("CTRL_ATTR_MCAST_GROUPS", e))?;
                        match field.kind() {
                            CTRL_ATTR_MCAST_GRP_NAME => {
                                name = Some(
                                    parse_string(field.value())
                                        .map_err(|e| bad("CTRL_ATTR_MCAST_GRP_NAME", e))?,
                                );
                            }
                            CTRL_ATTR_MCAST_GRP_ID => {
                                id = Some(
                                    parse_u32(field.value())
                                        .map_err(|e| bad("CTRL_ATTR_MCAST_GRP_ID", e))?,
                                );
                            }
                            _ => {}
                        }
                    }
                    if name.as_deref() == Some(group) {
                        group_id = id;
                    }
                }
            }
            _ => {}
        }
    }
    let family_id = family_id
        .ok_or_else(|| NetlinkError::malformed("controller reply has no CTRL_ATTR_FAMILY_ID"))?;
    let group_id = group_id.ok_or_else(|| NetlinkError::GroupNotFound {
        family: family.to_owned(),
        group: group.to_owned(),
    })?;
    Ok(FamilyIds {
        family_id,
        group_id,
        version,
    })
}

/// Decodes one message (`nlmsghdr` included) as a `TCM-USER` event.
///
/// `Ok(None)` for a message of another type than `family_id` and for a
/// command that is not an event (`UNSPEC`, the user → kernel commands, a
/// command a newer kernel added). Unknown attributes are skipped; when an
/// attribute repeats the last one wins, as with the kernel's `nla_parse`.
/// Errors ([`NetlinkError::Malformed`]): bad header or attribute lengths, a
/// known attribute of the wrong size or a non-UTF-8 string, no `DEVICE`,
/// `MINOR` or `DEVICE_ID`, a `RECONFIG_DEVICE` without exactly one of
/// `DEV_CFG`, `DEV_SIZE`, `WRITECACHE`.
pub fn decode_event(message: &[u8], family_id: u16) -> Result<Option<TcmuEvent>, NetlinkError> {
    let header = NetlinkBuffer::new_checked(message).map_err(NetlinkError::malformed)?;
    if header.message_type() != family_id {
        return Ok(None);
    }
    let cmd = GenlHeader::parse(header.payload())
        .map_err(NetlinkError::malformed)?
        .cmd;
    if !matches!(
        cmd,
        TCMU_CMD_ADDED_DEVICE | TCMU_CMD_REMOVED_DEVICE | TCMU_CMD_RECONFIG_DEVICE
    ) {
        return Ok(None);
    }
    let parsed = NetlinkMessage::<GenlMessage<TcmuGenlMessage>>::deserialize(message)
        .map_err(|e| NetlinkError::malformed(format!("TCM-USER command {cmd}: {e}")))?;
    let NetlinkPayload::InnerMessage(genl) = parsed.payload else {
        return Ok(None);
    };
    event_from_message(&genl.payload)
        .map_err(|reason| NetlinkError::malformed(format!("TCM-USER command {cmd}: {reason}")))
}

fn event_from_message(message: &TcmuGenlMessage) -> Result<Option<TcmuEvent>, String> {
    let mut device = None;
    let mut minor = None;
    let mut device_id = None;
    let mut changes = Vec::new();
    for attr in &message.attrs {
        match attr {
            TcmuAttr::Device(name) => device = Some(name.clone()),
            TcmuAttr::Minor(v) => minor = Some(*v),
            TcmuAttr::DeviceId(v) => device_id = Some(*v),
            TcmuAttr::DevConfig(cfg) => changes.push(ReconfigChange::DevConfig(cfg.clone())),
            TcmuAttr::DevSize(size) => changes.push(ReconfigChange::DevSize(*size)),
            TcmuAttr::WriteCache(v) => changes.push(ReconfigChange::WriteCache(*v)),
            TcmuAttr::CmdStatus(_) | TcmuAttr::SuppKernCmdReply(_) | TcmuAttr::Other(_) => {}
        }
    }
    let device = device.ok_or("no TCMU_ATTR_DEVICE")?;
    let minor = minor.ok_or("no TCMU_ATTR_MINOR")?;
    let device_id = device_id.ok_or("no TCMU_ATTR_DEVICE_ID")?;
    Ok(Some(match message.cmd {
        TCMU_CMD_ADDED_DEVICE => TcmuEvent::Added {
            device,
            minor,
            device_id,
        },
        TCMU_CMD_REMOVED_DEVICE => TcmuEvent::Removed {
            device,
            minor,
            device_id,
        },
        TCMU_CMD_RECONFIG_DEVICE => {
            if changes.len() != 1 {
                return Err(format!(
                    "RECONFIG_DEVICE for {device:?} carries {} of DEV_CFG/DEV_SIZE/WRITECACHE, \
                     expected exactly 1",
                    changes.len()
                ));
            }
            TcmuEvent::Reconfig {
                device,
                minor,
                device_id,
                change: changes.swap_remove(0),
            }
        }
        _ => return Ok(None),
    }))
}

fn encode_tcmu(family_id: u16, seq: u32, cmd: u8, attrs: Vec<TcmuAttr>) -> Vec<u8> {
    let mut genl = GenlMessage::from_payload(TcmuGenlMessage { cmd, attrs });
    genl.set_resolved_family_id(family_id);
    encode_genl(genl, NLM_F_REQUEST | NLM_F_ACK, seq)
}

/// `TCMU_CMD_<kind>_DEVICE_DONE` with `CMD_STATUS` = `status` (0 = success,
/// or a negative errno that fails the configfs write) and `DEVICE_ID`;
/// flags `NLM_F_REQUEST | NLM_F_ACK`, so the kernel always acknowledges.
pub fn encode_done(
    family_id: u16,
    seq: u32,
    kind: TcmuEventKind,
    device_id: u32,
    status: i32,
) -> Vec<u8> {
    encode_tcmu(
        family_id,
        seq,
        kind.done_command(),
        vec![TcmuAttr::CmdStatus(status), TcmuAttr::DeviceId(device_id)],
    )
}

/// `TCMU_CMD_SET_FEATURES` with `SUPP_KERN_CMD_REPLY` = `cmd_reply` as u8;
/// flags `NLM_F_REQUEST | NLM_F_ACK`. See the module doc before sending it.
pub fn encode_set_features(family_id: u16, seq: u32, cmd_reply: bool) -> Vec<u8> {
    encode_tcmu(
        family_id,
        seq,
        TCMU_CMD_SET_FEATURES,
        vec![TcmuAttr::SuppKernCmdReply(u8::from(cmd_reply))],
    )
}

/// Waits until `socket` is readable or `deadline` passes (`None`: forever).
/// `Ok(false)` on timeout or when a signal interrupts the wait.
fn wait_readable(socket: &Socket, deadline: Option<Instant>) -> Result<bool, NetlinkError> {
    let timeout = match deadline {
        None => PollTimeout::NONE,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            // Round up so a sub-millisecond remainder waits instead of spinning.
            let ms = i32::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX);
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    };
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, timeout) {
        Ok(ready) => Ok(ready > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(errno) => Err(NetlinkError::Io {
            op: "poll",
            source: io::Error::from(errno),
        }),
    }
}

/// What one non-blocking receive produced.
enum Received {
    /// A datagram of this many bytes from the kernel is in the buffer.
    Datagram(usize),
    /// Nothing to read (`EAGAIN`), or a datagram from a user port (dropped).
    Nothing,
    /// `ENOBUFS`.
    Overrun,
}

fn receive(socket: &Socket, buffer: &mut [u8]) -> Result<Received, NetlinkError> {
    let capacity = buffer.len();
    match socket.recv_from(&mut &mut buffer[..], libc::MSG_DONTWAIT | libc::MSG_TRUNC) {
        Ok((len, from)) => {
            if from.port_number() != 0 {
                return Ok(Received::Nothing);
            }
            if len > capacity {
                return Err(NetlinkError::malformed(format!(
                    "a {len}-byte datagram exceeds the {capacity}-byte receive buffer"
                )));
            }
            Ok(Received::Datagram(len))
        }
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(Received::Nothing),
            Some(libc::ENOBUFS) => Ok(Received::Overrun),
            _ => Err(NetlinkError::Io {
                op: "recv",
                source: e,
            }),
        },
    }
}

fn send(socket: &Socket, bytes: &[u8]) -> Result<(), NetlinkError> {
    let kernel = SocketAddr::new(0, 0);
    let sent = socket
        .send_to(bytes, &kernel, 0)
        .map_err(|source| NetlinkError::Io { op: "send", source })?;
    if sent != bytes.len() {
        return Err(NetlinkError::Io {
            op: "send",
            source: io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", bytes.len()),
            ),
        });
    }
    Ok(())
}

/// Opens a non-blocking `NETLINK_GENERIC` socket bound to a kernel-assigned
/// port.
fn open_socket() -> Result<Socket, NetlinkError> {
    let mut socket = Socket::new(NETLINK_GENERIC).map_err(NetlinkError::Socket)?;
    socket
        .bind_auto()
        .map_err(|source| NetlinkError::Io { op: "bind", source })?;
    socket
        .set_non_blocking(true)
        .map_err(|source| NetlinkError::Io {
            op: "set non-blocking",
            source,
        })?;
    Ok(socket)
}

/// Asks the controller for `family` on `socket` and waits for the answer.
fn resolve_on(
    socket: &Socket,
    buffer: &mut [u8],
    seq: u32,
    family: &str,
    group: &str,
) -> Result<FamilyIds, NetlinkError> {
    send(socket, &encode_get_family(family, seq))?;
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        if !wait_readable(socket, Some(deadline))? {
            if Instant::now() >= deadline {
                return Err(NetlinkError::NoReply {
                    request: "CTRL_CMD_GETFAMILY",
                    timeout: REPLY_TIMEOUT,
                });
            }
            continue;
        }
        let len = match receive(socket, buffer)? {
            Received::Datagram(len) => len,
            Received::Nothing | Received::Overrun => continue,
        };
        for message in messages(&buffer[..len]) {
            if let Some(ids) = decode_family_reply(message?, seq, family, group)? {
                return Ok(ids);
            }
        }
    }
}

/// Looks up a generic netlink family and one of its multicast groups on a
/// temporary socket (a diagnostic; [`TcmuNetlink::open`] does this itself).
pub fn resolve_family(family: &str, group: &str) -> Result<FamilyIds, NetlinkError> {
    let socket = open_socket()?;
    let mut buffer = vec![0; RECV_BUFFER_LEN];
    resolve_on(&socket, &mut buffer, 1, family, group)
}

/// A `TCM-USER` listener: a `NETLINK_GENERIC` socket that joined the
/// family's `"config"` multicast group.
///
/// Events come out in the kernel's order, interleaved with recoverable
/// errors for messages that could not be decoded. Single-threaded
/// (`&mut self`); the control thread owns it.
pub struct TcmuNetlink {
    socket: Socket,
    ids: FamilyIds,
    buffer: Vec<u8>,
    /// Decoded but not yet returned, in order.
    pending: VecDeque<Result<TcmuEvent, NetlinkError>>,
    next_seq: u32,
    /// Sequence number of the request waiting for its ACK.
    awaiting: Option<u32>,
    /// The ACK's errno (0 = success), once read.
    ack: Option<i32>,
}

impl Debug for TcmuNetlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcmuNetlink")
            .field("fd", &self.socket.as_raw_fd())
            .field("ids", &self.ids)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl TcmuNetlink {
    /// Opens the listener: socket, `CTRL_CMD_GETFAMILY` for `TCM-USER`, join
    /// group `"config"`. [`NetlinkError::FamilyNotFound`] when
    /// `target_core_user` is not loaded (fall back to rescanning
    /// `/sys/class/uio`). Needs no privilege.
    pub fn open() -> Result<Self, NetlinkError> {
        Self::open_family(TCMU_GENL_FAMILY, TCMU_MCGRP_CONFIG)
    }

    /// [`TcmuNetlink::open`] for any family and group; messages of that
    /// family are decoded as `TCM-USER` ones. Lets the tests drive the real
    /// kernel through the controller family when `TCM-USER` is absent.
    fn open_family(family: &str, group: &str) -> Result<Self, NetlinkError> {
        let socket = open_socket()?;
        let mut buffer = vec![0; RECV_BUFFER_LEN];
        let ids = resolve_on(&socket, &mut buffer, 1, family, group)?;
        socket
            .add_membership(ids.group_id)
            .map_err(|source| NetlinkError::Io {
                op: "join the multicast group",
                source,
            })?;
        Ok(TcmuNetlink {
            socket,
            ids,
            buffer,
            pending: VecDeque::new(),
            next_seq: 2,
            awaiting: None,
            ack: None,
        })
    }

    /// The family id, multicast group id and version found at open.
    pub fn ids(&self) -> FamilyIds {
        self.ids
    }

    /// Number of events (and recoverable errors) already read from the
    /// socket and queued: an event loop must drain them with
    /// [`TcmuNetlink::try_recv`] even when the fd is not readable.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The next event: waits up to `timeout` (`None`: until one arrives).
    /// `Ok(None)` when the timeout passed, or when a signal interrupted the
    /// wait (so a control loop can check its flags). Recoverable errors
    /// ([`NetlinkError::is_recoverable`]) are returned in their place in the
    /// stream; call again to go on.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<TcmuEvent>, NetlinkError> {
        // An unrepresentable deadline (centuries away) waits forever.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if let Some(item) = self.pending.pop_front() {
                return item.map(Some);
            }
            if !self.fill(deadline)? {
                return Ok(None);
            }
        }
    }

    /// The next event if one is queued or readable now; never waits.
    pub fn try_recv(&mut self) -> Result<Option<TcmuEvent>, NetlinkError> {
        self.recv(Some(Duration::ZERO))
    }

    /// Replies `TCMU_CMD_<kind>_DEVICE_DONE` for device `device_id` with
    /// `status` (0, or a negative errno that the kernel returns to the
    /// configfs writer) and waits for the kernel's ACK; events that arrive
    /// meanwhile are queued ([`TcmuNetlink::pending`]).
    ///
    /// Needs `CAP_NET_ADMIN` (else [`NetlinkError::Kernel`] with `EPERM`).
    /// The kernel answers `ENODEV` when no reply is awaited for the device
    /// (its `nl_reply_supported` is -1, as `dataplane lio create` sets it,
    /// or `SET_FEATURES` was never sent) and `EINVAL` when `kind` is not
    /// the pending command.
    pub fn reply_done(
        &mut self,
        kind: TcmuEventKind,
        device_id: u32,
        status: i32,
    ) -> Result<(), NetlinkError> {
        let seq = self.take_seq();
        let bytes = encode_done(self.ids.family_id, seq, kind, device_id, status);
        self.request(&bytes, seq, kind.done_name())
    }

    /// Sends `TCMU_CMD_SET_FEATURES` (`SUPP_KERN_CMD_REPLY` = `cmd_reply`)
    /// and waits for the ACK. Needs `CAP_NET_ADMIN`.
    ///
    /// **Global and sticky**: `true` makes the kernel wait, without timeout,
    /// for a `*_DONE` reply to every add/remove/reconfigure of every TCMU
    /// device whose `nl_reply_supported` is 0 (the default), on the whole
    /// machine, until somebody sends `false`, including after this process
    /// exits. `serve` does not call it; our devices opt out with
    /// `nl_reply_supported=-1`.
    pub fn set_features(&mut self, cmd_reply: bool) -> Result<(), NetlinkError> {
        let seq = self.take_seq();
        let bytes = encode_set_features(self.ids.family_id, seq, cmd_reply);
        self.request(&bytes, seq, "TCMU_CMD_SET_FEATURES")
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(2);
        seq
    }

    /// Sends `bytes` (which ask for an ACK with sequence number `seq`) and
    /// waits for that ACK, queueing whatever else arrives.
    fn request(&mut self, bytes: &[u8], seq: u32, name: &'static str) -> Result<(), NetlinkError> {
        self.awaiting = Some(seq);
        self.ack = None;
        let result = self.send_and_wait_ack(bytes, name);
        self.awaiting = None;
        self.ack = None;
        result
    }

    fn send_and_wait_ack(&mut self, bytes: &[u8], name: &'static str) -> Result<(), NetlinkError> {
        send(&self.socket, bytes)?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            if let Some(errno) = self.ack {
                return match errno {
                    0 => Ok(()),
                    errno => Err(NetlinkError::Kernel {
                        request: name,
                        errno,
                    }),
                };
            }
            if !self.fill(Some(deadline))? && Instant::now() >= deadline {
                return Err(NetlinkError::NoReply {
                    request: name,
                    timeout: REPLY_TIMEOUT,
                });
            }
        }
    }

    /// Waits for and reads one datagram, queueing its events and errors and
    /// noting the awaited ACK. `Ok(false)` on timeout or signal.
    fn fill(&mut self, deadline: Option<Instant>) -> Result<bool, NetlinkError> {
        loop {
            if !wait_readable(&self.socket, deadline)? {
                return Ok(false);
            }
            match receive(&self.socket, &mut self.buffer) {
                Ok(Received::Datagram(len)) => {
                    self.decode_datagram(len);
                    return Ok(true);
                }
                Ok(Received::Nothing) => {
                    // Spurious wake-up or a foreign datagram: wait again
                    // (with a passed deadline the poll returns at once).
                }
                Ok(Received::Overrun) => {
                    self.pending.push_back(Err(NetlinkError::EventsLost));
                    return Ok(true);
                }
                Err(e) if e.is_recoverable() => {
                    self.pending.push_back(Err(e));
                    return Ok(true);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn decode_datagram(&mut self, len: usize) {
        let family_id = self.ids.family_id;
        for message in messages(&self.buffer[..len]) {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    self.pending.push_back(Err(e));
                    break;
                }
            };
            // `messages` yields only checked headers.
            let Ok(header) = NetlinkBuffer::new_checked(message) else {
                continue;
            };
            if header.message_type() == NLMSG_ERROR {
                if self.awaiting == Some(header.sequence_number()) {
                    match error_code(header.payload()) {
                        Ok(errno) => self.ack = Some(errno),
                        Err(e) => self.pending.push_back(Err(e)),
                    }
                }
                continue;
            }
            match decode_event(message, family_id) {
                Ok(Some(event)) => self.pending.push_back(Ok(event)),
                Ok(None) => {}
                Err(e) => self.pending.push_back(Err(e)),
            }
        }
    }
}

impl AsFd for TcmuNetlink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for TcmuNetlink {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nlmsghdr: len, type, flags, seq, port 0.
    fn nlmsghdr(len: u32, kind: u16, flags: u16, seq: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v
    }

    /// One attribute, padded to 4.
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    /// A whole genl message as the kernel builds it (`genlmsg_put`: seq 0,
    /// port 0, flags 0, version = family version).
    fn genl(kind: u16, cmd: u8, seq: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = attrs.concat();
        let mut v = nlmsghdr((16 + 4 + body.len()) as u32, kind, 0, seq);
        v.extend_from_slice(&[cmd, 2, 0, 0]);
        v.extend_from_slice(&body);
        v
    }

    const FAMILY: u16 = 0x1a;

    fn cstr(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    fn event_msg(cmd: u8, extra: &[Vec<u8>]) -> Vec<u8> {
        let mut attrs = vec![
            nla(TCMU_ATTR_DEVICE, &cstr("tcm-user/0/disk0/dataplane/ram0")),
            nla(TCMU_ATTR_MINOR, &3u32.to_ne_bytes()),
            nla(TCMU_ATTR_DEVICE_ID, &7u32.to_ne_bytes()),
        ];
        attrs.extend_from_slice(extra);
        genl(FAMILY, cmd, 0, &attrs)
    }

    #[test]
    fn get_family_request_bytes() {
        let bytes = encode_get_family("TCM-USER", 0x01020304);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &36u32.to_ne_bytes()[..],       // nlmsg_len
            &0x10u16.to_ne_bytes(),         // GENL_ID_CTRL
            &1u16.to_ne_bytes(),            // NLM_F_REQUEST
            &0x01020304u32.to_ne_bytes(),   // seq
            &0u32.to_ne_bytes(),            // port
            &[3, 2, 0, 0],                  // CTRL_CMD_GETFAMILY, version 2
            &13u16.to_ne_bytes(),           // nla_len = 4 + "TCM-USER\0"
            &2u16.to_ne_bytes(),            // CTRL_ATTR_FAMILY_NAME
            b"TCM-USER\0", &[0, 0, 0],      // value + padding to 4
        ]
        .concat();
        assert_eq!(bytes, want);
    }

    /// A NEWFAMILY answer shaped like `ctrl_fill_info`: name, id, version,
    /// hdrsize, maxattr, ops, mcast groups — plus an attribute type no
    /// current kernel sends, which must be skipped.
    fn newfamily(seq: u32, groups: &[(&str, u32)]) -> Vec<u8> {
        let op = [nla(1, &4u32.to_ne_bytes()), nla(2, &0x1u32.to_ne_bytes())].concat();
        let ops = nla(CTRL_ATTR_OPS_FOR_TEST, &nla(1, &op));
        let grps: Vec<u8> = groups
            .iter()
            .enumerate()
            .map(|(i, (name, id))| {
                let inner = [
                    nla(CTRL_ATTR_MCAST_GRP_NAME, &cstr(name)),
                    nla(CTRL_ATTR_MCAST_GRP_ID, &id.to_ne_bytes()),
                ]
                .concat();
                nla(i as u16 + 1, &inner)
            })
            .collect::<Vec<_>>()
            .concat();
        genl(
            GENL_ID_CTRL,
            CTRL_CMD_NEWFAMILY,
            seq,
            &[
                nla(CTRL_ATTR_FAMILY_NAME, &cstr("TCM-USER")),
                nla(CTRL_ATTR_FAMILY_ID, &0x1au16.to_ne_bytes()),
                nla(CTRL_ATTR_VERSION, &2u32.to_ne_bytes()),
                nla(4, &0u32.to_ne_bytes()), // HDRSIZE
                nla(5, &9u32.to_ne_bytes()), // MAXATTR
                ops,
                nla(CTRL_ATTR_MCAST_GROUPS, &grps),
                nla(0x7f, &[1, 2, 3]), // unknown future attribute
            ],
        )
    }

    const CTRL_ATTR_OPS_FOR_TEST: u16 = 6;

    #[test]
    fn newfamily_reply_gives_family_and_group_ids() {
        let msg = newfamily(5, &[("other", 11), ("config", 12)]);
        let ids = decode_family_reply(&msg, 5, "TCM-USER", "config").unwrap();
        assert_eq!(
            ids,
            Some(FamilyIds {
                family_id: 0x1a,
                group_id: 12,
                version: 2
            })
        );
    }

    #[test]
    fn family_reply_with_another_seq_is_not_the_answer() {
        let msg = newfamily(5, &[("config", 12)]);
        assert_eq!(
            decode_family_reply(&msg, 6, "TCM-USER", "config").unwrap(),
            None
        );
    }

    #[test]
    fn family_reply_without_the_group_is_group_not_found() {
        let msg = newfamily(5, &[("other", 11)]);
        let err = decode_family_reply(&msg, 5, "TCM-USER", "config").unwrap_err();
        assert!(
            matches!(&err, NetlinkError::GroupNotFound { family, group }
                if family == "TCM-USER" && group == "config"),
            "{err}"
        );
    }

    #[test]
    fn family_reply_for_another_family_is_malformed() {
        let msg = newfamily(5, &[("config", 12)]);
        let err = decode_family_reply(&msg, 5, "nlctrl", "config").unwrap_err();
        assert!(matches!(err, NetlinkError::Malformed { .. }), "{err}");
    }

    /// NLMSG_ERROR: error code then the echoed request header.
    fn nlmsg_error(seq: u32, code: i32) -> Vec<u8> {
        let mut v = nlmsghdr(16 + 4 + 16, NLMSG_ERROR, 0, seq);
        v.extend_from_slice(&code.to_ne_bytes());
        v.extend_from_slice(&nlmsghdr(36, GENL_ID_CTRL, 1, seq));
        v
    }

    #[test]
    fn enoent_is_family_not_found_and_other_errors_are_kernel_errors() {
        let err = decode_family_reply(&nlmsg_error(9, -libc::ENOENT), 9, "TCM-USER", "config")
            .unwrap_err();
        assert!(
            matches!(&err, NetlinkError::FamilyNotFound { family } if family == "TCM-USER"),
            "{err}"
        );
        assert!(err.to_string().contains("target_core_user"), "{err}");
        assert!(!err.is_recoverable());

        let err = decode_family_reply(&nlmsg_error(9, -libc::EPERM), 9, "TCM-USER", "config")
            .unwrap_err();
        assert!(
            matches!(err, NetlinkError::Kernel { errno, .. } if errno == libc::EPERM),
            "{err}"
        );
        // An ACK (code 0) is not the answer.
        assert_eq!(
            decode_family_reply(&nlmsg_error(9, 0), 9, "TCM-USER", "config").unwrap(),
            None
        );
    }

    #[test]
    fn added_removed_and_reconfig_messages_become_events() {
        let added = event_msg(TCMU_CMD_ADDED_DEVICE, &[]);
        let want_added = TcmuEvent::Added {
            device: "tcm-user/0/disk0/dataplane/ram0".into(),
            minor: 3,
            device_id: 7,
        };
        assert_eq!(
            decode_event(&added, FAMILY).unwrap(),
            Some(want_added.clone())
        );
        assert_eq!(want_added.kind(), TcmuEventKind::Added);
        assert_eq!(want_added.uio_name(), "uio3");

        let removed = event_msg(TCMU_CMD_REMOVED_DEVICE, &[]);
        assert_eq!(
            decode_event(&removed, FAMILY).unwrap(),
            Some(TcmuEvent::Removed {
                device: "tcm-user/0/disk0/dataplane/ram0".into(),
                minor: 3,
                device_id: 7,
            })
        );

        let cfg = event_msg(
            TCMU_CMD_RECONFIG_DEVICE,
            &[nla(TCMU_ATTR_DEV_CFG, &cstr("dataplane/ram1"))],
        );
        let size = event_msg(
            TCMU_CMD_RECONFIG_DEVICE,
            // nla_put_u64_64bit may put an empty PAD first: skipped.
            &[
                nla(TCMU_ATTR_PAD, &[]),
                nla(TCMU_ATTR_DEV_SIZE, &(1u64 << 33).to_ne_bytes()),
            ],
        );
        let wc = event_msg(TCMU_CMD_RECONFIG_DEVICE, &[nla(TCMU_ATTR_WRITECACHE, &[1])]);
        let change = |bytes: &[u8]| match decode_event(bytes, FAMILY).unwrap() {
            Some(TcmuEvent::Reconfig {
                device,
                minor: 3,
                device_id: 7,
                change,
            }) if device == "tcm-user/0/disk0/dataplane/ram0" => change,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            change(&cfg),
            ReconfigChange::DevConfig("dataplane/ram1".into())
        );
        assert_eq!(change(&size), ReconfigChange::DevSize(1 << 33));
        assert_eq!(change(&wc), ReconfigChange::WriteCache(1));
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn exact_bytes_of_an_added_event_decode() {
        // Written out by hand, little-endian x86_64, as the kernel sends it.
        #[rustfmt::skip]
        let bytes: [u8; 60] = [
            60, 0, 0, 0,  0x1a, 0,  0, 0,  0, 0, 0, 0,  0, 0, 0, 0, // nlmsghdr
            1, 2, 0, 0,                                            // ADDED_DEVICE, v2
            15, 0, 1, 0,  b't', b'c', b'm', b'-', b'u', b's', b'e', b'r', b'/', b'0', 0, 0, // DEVICE
            8, 0, 2, 0,   4, 0, 0, 0,                              // MINOR 4
            8, 0, 8, 0,   9, 0, 0, 0,                              // DEVICE_ID 9
            8, 0, 0x40, 0,   0, 0, 0, 0,                           // unknown attr 0x40
        ];
        assert_eq!(
            decode_event(&bytes, 0x1a).unwrap(),
            Some(TcmuEvent::Added {
                device: "tcm-user/0".into(),
                minor: 4,
                device_id: 9
            })
        );
    }

    #[test]
    fn other_families_and_commands_are_skipped() {
        let added = event_msg(TCMU_CMD_ADDED_DEVICE, &[]);
        assert_eq!(decode_event(&added, FAMILY + 1).unwrap(), None);
        for cmd in [
            TCMU_CMD_UNSPEC,
            TCMU_CMD_ADDED_DEVICE_DONE,
            TCMU_CMD_SET_FEATURES,
            42,
        ] {
            assert_eq!(decode_event(&event_msg(cmd, &[]), FAMILY).unwrap(), None);
        }
        // Control messages.
        assert_eq!(decode_event(&nlmsg_error(0, 0), FAMILY).unwrap(), None);
    }

    #[test]
    fn events_missing_attributes_or_with_bad_sizes_are_malformed() {
        let no_minor = genl(
            FAMILY,
            TCMU_CMD_ADDED_DEVICE,
            0,
            &[
                nla(TCMU_ATTR_DEVICE, &cstr("tcm-user/0/a")),
                nla(TCMU_ATTR_DEVICE_ID, &1u32.to_ne_bytes()),
            ],
        );
        let short_minor = genl(
            FAMILY,
            TCMU_CMD_ADDED_DEVICE,
            0,
            &[
                nla(TCMU_ATTR_DEVICE, &cstr("tcm-user/0/a")),
                nla(TCMU_ATTR_MINOR, &[1, 0]),
                nla(TCMU_ATTR_DEVICE_ID, &1u32.to_ne_bytes()),
            ],
        );
        let bad_utf8 = genl(
            FAMILY,
            TCMU_CMD_ADDED_DEVICE,
            0,
            &[
                nla(TCMU_ATTR_DEVICE, &[0xff, 0xfe, 0]),
                nla(TCMU_ATTR_MINOR, &1u32.to_ne_bytes()),
                nla(TCMU_ATTR_DEVICE_ID, &1u32.to_ne_bytes()),
            ],
        );
        let reconfig_without_change = event_msg(TCMU_CMD_RECONFIG_DEVICE, &[]);
        let reconfig_with_two = event_msg(
            TCMU_CMD_RECONFIG_DEVICE,
            &[
                nla(TCMU_ATTR_WRITECACHE, &[1]),
                nla(TCMU_ATTR_DEV_SIZE, &4096u64.to_ne_bytes()),
            ],
        );
        for (name, msg, needle) in [
            ("no minor", no_minor, "TCMU_ATTR_MINOR"),
            ("short minor", short_minor, "TCMU_ATTR_MINOR"),
            ("bad utf8", bad_utf8, "UTF-8"),
            ("no change", reconfig_without_change, "carries 0"),
            ("two changes", reconfig_with_two, "carries 2"),
        ] {
            let err = decode_event(&msg, FAMILY).unwrap_err();
            assert!(
                matches!(&err, NetlinkError::Malformed { reason } if reason.contains(needle)),
                "{name}: {err}"
            );
            assert!(err.is_recoverable());
        }
    }

    #[test]
    fn truncated_and_corrupt_inputs_never_panic() {
        let good = event_msg(
            TCMU_CMD_RECONFIG_DEVICE,
            &[nla(TCMU_ATTR_DEV_SIZE, &4096u64.to_ne_bytes())],
        );
        // Every prefix, as one datagram and as one message.
        for cut in 0..good.len() {
            let prefix = &good[..cut];
            for m in messages(prefix) {
                let _ = m.map(|m| decode_event(m, FAMILY));
            }
            assert!(decode_event(prefix, FAMILY).is_err(), "cut at {cut}");
            let _ = decode_family_reply(prefix, 0, "TCM-USER", "config");
        }
        // Every single-byte corruption of every position.
        for pos in 0..good.len() {
            for value in [0u8, 1, 3, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[pos] = value;
                for m in messages(&bad).flatten() {
                    let _ = decode_event(m, FAMILY);
                    let _ = decode_family_reply(m, 0, "TCM-USER", "config");
                }
            }
        }
        let family = newfamily(1, &[("config", 3)]);
        for cut in 0..family.len() {
            let _ = decode_family_reply(&family[..cut], 1, "TCM-USER", "config");
        }
        // An attribute whose length runs past the message.
        let mut overlong = event_msg(TCMU_CMD_ADDED_DEVICE, &[]);
        overlong[20] = 0xff; // DEVICE nla_len low byte
        overlong[21] = 0x00;
        let err = decode_event(&overlong, FAMILY).unwrap_err();
        assert!(matches!(err, NetlinkError::Malformed { .. }), "{err}");
    }

    #[test]
    fn datagram_walk_splits_aligned_messages_and_stops_at_a_bad_header() {
        let a = event_msg(TCMU_CMD_ADDED_DEVICE, &[]);
        let mut b = event_msg(TCMU_CMD_REMOVED_DEVICE, &[]);
        // A message length that is not a multiple of 4: the next one starts
        // at the aligned offset.
        let mut odd = genl(FAMILY, 99, 0, &[]);
        odd.push(0xaa);
        let odd_len = odd.len() as u32;
        odd[..4].copy_from_slice(&odd_len.to_ne_bytes());
        let mut datagram = [a.clone(), odd.clone()].concat();
        datagram.extend_from_slice(&[0, 0, 0]); // NLMSG_ALIGN padding
        datagram.extend_from_slice(&b);
        let parts: Vec<&[u8]> = messages(&datagram).map(Result::unwrap).collect();
        assert_eq!(parts, vec![&a[..], &odd[..], &b[..]]);

        // A bad nlmsg_len (below 16) yields one error and ends the walk.
        b[..4].copy_from_slice(&8u32.to_ne_bytes());
        let datagram = [a.clone(), b, a.clone()].concat();
        let items: Vec<_> = messages(&datagram).collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap(), &&a[..]);
        assert!(matches!(items[1], Err(NetlinkError::Malformed { .. })));
    }

    #[test]
    fn done_reply_bytes() {
        let bytes = encode_done(0x1a, 77, TcmuEventKind::Added, 9, -libc::ENOENT);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &36u32.to_ne_bytes()[..],       // nlmsg_len
            &0x1au16.to_ne_bytes(),         // family id
            &5u16.to_ne_bytes(),            // NLM_F_REQUEST | NLM_F_ACK
            &77u32.to_ne_bytes(),           // seq
            &0u32.to_ne_bytes(),            // port
            &[4, 2, 0, 0],                  // ADDED_DEVICE_DONE, version 2
            &8u16.to_ne_bytes(), &7u16.to_ne_bytes(), &(-2i32).to_ne_bytes(), // CMD_STATUS
            &8u16.to_ne_bytes(), &8u16.to_ne_bytes(), &9u32.to_ne_bytes(),    // DEVICE_ID
        ]
        .concat();
        assert_eq!(bytes, want);
        assert_eq!(
            encode_done(0x1a, 1, TcmuEventKind::Removed, 9, 0)[16],
            TCMU_CMD_REMOVED_DEVICE_DONE
        );
        assert_eq!(
            encode_done(0x1a, 1, TcmuEventKind::Reconfig, 9, 0)[16],
            TCMU_CMD_RECONFIG_DEVICE_DONE
        );
    }

    #[test]
    fn set_features_bytes() {
        let bytes = encode_set_features(0x1a, 3, true);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &28u32.to_ne_bytes()[..], &0x1au16.to_ne_bytes(), &5u16.to_ne_bytes(),
            &3u32.to_ne_bytes(), &0u32.to_ne_bytes(),
            &[7, 2, 0, 0],                                   // SET_FEATURES
            &5u16.to_ne_bytes(), &9u16.to_ne_bytes(), &[1, 0, 0, 0], // SUPP_KERN_CMD_REPLY
        ]
        .concat();
        assert_eq!(bytes, want);
        assert_eq!(encode_set_features(0x1a, 3, false)[24], 0);
    }

    #[test]
    fn encoded_messages_decode_back() {
        let message = TcmuGenlMessage {
            cmd: TCMU_CMD_RECONFIG_DEVICE,
            attrs: vec![
                TcmuAttr::Device("tcm-user/1/x/dataplane/y".into()),
                TcmuAttr::Minor(12),
                TcmuAttr::DeviceId(34),
                TcmuAttr::DevConfig("dataplane/z".into()),
            ],
        };
        let mut genl = GenlMessage::from_payload(message);
        genl.set_resolved_family_id(FAMILY);
        let bytes = encode_genl(genl, 0, 0);
        assert_eq!(
            decode_event(&bytes, FAMILY).unwrap(),
            Some(TcmuEvent::Reconfig {
                device: "tcm-user/1/x/dataplane/y".into(),
                minor: 12,
                device_id: 34,
                change: ReconfigChange::DevConfig("dataplane/z".into()),
            })
        );
    }

    // The real kernel, through the controller family `nlctrl` (always
    // present): resolve, listen, and a request the kernel rejects, which
    // exercises the send/ACK path without touching TCM-USER.

    #[test]
    fn real_kernel_controller_round_trips() {
        let mut nl = TcmuNetlink::open_family("nlctrl", "notify").expect("open nlctrl");
        // nlctrl has the static id GENL_ID_CTRL and its one group gets the
        // same id.
        assert_eq!(nl.ids().family_id, GENL_ID_CTRL);
        assert_eq!(nl.ids().group_id, u32::from(GENL_ID_CTRL));
        assert!(nl.as_raw_fd() >= 0);
        assert_eq!(nl.try_recv().unwrap(), None);
        assert_eq!(nl.recv(Some(Duration::from_millis(20))).unwrap(), None);
        // Command 4 is no nlctrl op: the kernel answers EOPNOTSUPP.
        let err = nl
            .reply_done(TcmuEventKind::Added, 1, 0)
            .expect_err("nlctrl has no command 4");
        assert!(
            matches!(err, NetlinkError::Kernel { request: "TCMU_CMD_ADDED_DEVICE_DONE", errno }
                if errno == libc::EOPNOTSUPP),
            "{err}"
        );
        assert!(err.is_recoverable());
        assert_eq!(nl.pending(), 0);
    }

    #[test]
    fn real_kernel_unknown_family_is_family_not_found() {
        let err = resolve_family("dp-no-such-fam", "config").unwrap_err();
        assert!(
            matches!(&err, NetlinkError::FamilyNotFound { family }
                if family == "dp-no-such-fam"),
            "{err}"
        );
        let err = resolve_family("nlctrl", "no-such-group").unwrap_err();
        assert!(matches!(err, NetlinkError::GroupNotFound { .. }), "{err}");
    }
}
