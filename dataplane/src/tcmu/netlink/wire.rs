//! The `TCM-USER` wire format: command and attribute numbers, the
//! attributes ([`TcmuAttr`]) and the message body ([`TcmuGenlMessage`]) as
//! `netlink-packet-generic` types, the walk over the messages of one
//! datagram ([`messages`]), and generic message framing.

use std::fmt::Debug;

use netlink_packet_core::{
    parse_i32, parse_string, parse_u32, parse_u64, parse_u8, DecodeError, DefaultNla, Emitable,
    ErrorBuffer, NetlinkBuffer, NetlinkMessage, Nla, NlaBuffer, NlasIterator, Parseable,
    ParseableParametrized,
};
use netlink_packet_generic::traits::GenlFamily;
use netlink_packet_generic::{GenlHeader, GenlMessage};

use super::error::NetlinkError;

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
pub(super) fn encode_genl<F>(genl: GenlMessage<F>, flags: u16, seq: u32) -> Vec<u8>
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

/// The positive errno of an `NLMSG_ERROR` payload (0 for an ACK).
pub(super) fn error_code(payload: &[u8]) -> Result<i32, NetlinkError> {
    let error = ErrorBuffer::new_checked(payload).map_err(NetlinkError::malformed)?;
    Ok(error.code().map_or(0, |code| code.get().saturating_neg()))
}
