//! The listener's encoders and decoders on hand-built messages (shaped
//! like the kernel's), and round trips through the real kernel's
//! controller family.
//!
//! The helpers here build raw netlink bytes the way the kernel does; each
//! file tests one part: `family` (controller request and answer), `event`
//! (events, replies), `wire` (datagram walk, malformed input), `kernel`
//! (the real socket).

mod event;
mod family;
mod kernel;
mod wire;

use netlink_packet_core::NLMSG_ERROR;
use netlink_packet_generic::constants::{
    CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME, CTRL_ATTR_MCAST_GROUPS, CTRL_ATTR_MCAST_GRP_ID,
    CTRL_ATTR_MCAST_GRP_NAME, CTRL_ATTR_VERSION, CTRL_CMD_NEWFAMILY, GENL_ID_CTRL,
};

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

/// NLMSG_ERROR: error code then the echoed request header.
fn nlmsg_error(seq: u32, code: i32) -> Vec<u8> {
    let mut v = nlmsghdr(16 + 4 + 16, NLMSG_ERROR, 0, seq);
    v.extend_from_slice(&code.to_ne_bytes());
    v.extend_from_slice(&nlmsghdr(36, GENL_ID_CTRL, 1, seq));
    v
}
