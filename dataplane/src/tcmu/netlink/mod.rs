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
//!
//! # Layout
//! `wire.rs`: command and attribute numbers, [`TcmuAttr`],
//! [`TcmuGenlMessage`], the datagram walk; `family.rs`: the controller
//! request and answer ([`FamilyIds`]); `event.rs`: [`TcmuEvent`] and the
//! `*_DONE` / `SET_FEATURES` requests; `socket.rs`: [`TcmuNetlink`] and
//! the socket primitives; `error.rs`: [`NetlinkError`]. The tests are in
//! `tests/`, by the same topics, plus the real-kernel round trips.
//!
//! [`AsRawFd::as_raw_fd`]: std::os::fd::AsRawFd::as_raw_fd

mod error;
mod event;
mod family;
mod socket;
mod wire;

#[cfg(test)]
mod tests;

pub use error::NetlinkError;
pub use event::{
    decode_event, encode_done, encode_set_features, ReconfigChange, TcmuEvent, TcmuEventKind,
};
pub use family::{decode_family_reply, encode_get_family, FamilyIds};
pub use socket::{resolve_family, TcmuNetlink, REPLY_TIMEOUT};
pub use wire::{
    messages, Messages, TcmuAttr, TcmuGenlMessage, TCMU_ATTR_CMD_STATUS, TCMU_ATTR_DEVICE,
    TCMU_ATTR_DEVICE_ID, TCMU_ATTR_DEV_CFG, TCMU_ATTR_DEV_SIZE, TCMU_ATTR_MINOR, TCMU_ATTR_PAD,
    TCMU_ATTR_SUPP_KERN_CMD_REPLY, TCMU_ATTR_WRITECACHE, TCMU_CMD_ADDED_DEVICE,
    TCMU_CMD_ADDED_DEVICE_DONE, TCMU_CMD_RECONFIG_DEVICE, TCMU_CMD_RECONFIG_DEVICE_DONE,
    TCMU_CMD_REMOVED_DEVICE, TCMU_CMD_REMOVED_DEVICE_DONE, TCMU_CMD_SET_FEATURES, TCMU_CMD_UNSPEC,
    TCMU_GENL_FAMILY, TCMU_GENL_VERSION, TCMU_MCGRP_CONFIG,
};
