//! Resolving a generic netlink family through the controller (`nlctrl`):
//! the `CTRL_CMD_GETFAMILY` request and the walk of its answer.

use netlink_packet_core::{
    parse_string, parse_u16, parse_u32, DecodeError, NetlinkBuffer, NlasIterator, NLMSG_ERROR,
    NLM_F_REQUEST,
};
use netlink_packet_generic::constants::{
    CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME, CTRL_ATTR_MCAST_GROUPS, CTRL_ATTR_MCAST_GRP_ID,
    CTRL_ATTR_MCAST_GRP_NAME, CTRL_ATTR_VERSION, CTRL_CMD_NEWFAMILY, GENL_HDRLEN, GENL_ID_CTRL,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlHeader, GenlMessage};

use super::error::NetlinkError;
use super::wire::{encode_genl, error_code};

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
