//! The device events `target_core_user` multicasts ([`TcmuEvent`]) and
//! the requests a daemon may send back (`*_DONE` replies,
//! `SET_FEATURES`).

use netlink_packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_generic::{GenlHeader, GenlMessage};

use super::error::NetlinkError;
use super::wire::{
    encode_genl, TcmuAttr, TcmuGenlMessage, TCMU_CMD_ADDED_DEVICE, TCMU_CMD_ADDED_DEVICE_DONE,
    TCMU_CMD_RECONFIG_DEVICE, TCMU_CMD_RECONFIG_DEVICE_DONE, TCMU_CMD_REMOVED_DEVICE,
    TCMU_CMD_REMOVED_DEVICE_DONE, TCMU_CMD_SET_FEATURES,
};

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

    pub(super) fn done_name(self) -> &'static str {
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
    /// Kind of the event, for
    /// [`TcmuNetlink::reply_done`](super::TcmuNetlink::reply_done).
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
