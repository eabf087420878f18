//! The hand-off socket: how a running server gives its `[[scst]]` devices
//! (their open `/dev/scst_user` fds) to a successor, so that an upgrade or
//! a restart with a new configuration never takes a LUN out of SCST.
//!
//! # Why the fd
//! scst_user unregisters a device (and SCST removes its LUNs from every
//! target, so initiators see LOGICAL UNIT NOT SUPPORTED) when the last fd
//! on it closes. An fd passed over a unix socket (SCM_RIGHTS) is the same
//! open file: while the successor holds it the device, its LUNs and the
//! initiators' sessions stay. The fd does not carry this process's memory,
//! which is why each device is quiesced before it goes (see
//! `scst/device/handoff.rs` and `scst/handoff.rs`).
//!
//! # Protocol (one exchange per connection)
//! 1. The successor (`serve --take-over PATH`) connects and writes
//!    [`HELLO`].
//! 2. The predecessor (`serve --handoff-socket PATH`) quiesces and drains
//!    its SCST devices, then writes one header — magic [`MAGIC`], the
//!    length of the JSON that follows and the number of fds, both `u32`
//!    little-endian — carrying the fds as SCM_RIGHTS, then the JSON: a
//!    [`Handover`] whose `devices` are in the order of the fds, or whose
//!    `error` says why nothing was handed over (then no fd comes).
//! 3. The predecessor shuts down (its TCMU devices drain and detach; the
//!    successor attaches them once they are free). If the successor dies
//!    before it took the fds, they close with the connection: the devices
//!    unregister, as if the predecessor had crashed.
//!
//! Everything here is control plane: it runs on the main thread.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use crate::scst::device::Session;

/// What the successor writes first.
pub const HELLO: &[u8; 8] = b"DPHOVER1";
/// The first bytes of the predecessor's header.
pub const MAGIC: &[u8; 4] = b"DPH1";
/// Header: magic, JSON length, fd count.
const HEADER_LEN: usize = 12;
/// Most fds one SCM_RIGHTS message carries (the kernel's `SCM_MAX_FD`).
pub const MAX_DEVICES: usize = 253;
/// Largest JSON accepted (sessions of 253 devices fit easily).
const MAX_JSON: usize = 16 << 20;

/// Why a hand-off failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// The socket could not be set up or used.
    #[error("hand-off socket {path}: {what}: {error}")]
    Socket {
        path: PathBuf,
        what: &'static str,
        #[source]
        error: std::io::Error,
    },
    /// Another server answers on the path.
    #[error("hand-off socket {0}: a live server is listening there already")]
    InUse(PathBuf),
    /// The peer broke the protocol.
    #[error("hand-off: {0}")]
    Protocol(String),
    /// The predecessor could not hand its devices over.
    #[error("the running server did not hand its devices over: {0}")]
    Refused(String),
    /// A device could not be made ready to go (nothing was handed over).
    #[error("SCST device {device}: {why}")]
    Device { device: String, why: String },
}

/// One device in the hand-off message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedDevice {
    /// The device's name (as registered, and as in `[[scst]]`).
    pub name: String,
    /// Its attached sessions (the kernel does not announce them again).
    pub sessions: Vec<Session>,
}

/// The JSON of the hand-off message.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Handover {
    /// The devices, in the order of the fds.
    #[serde(default)]
    pub devices: Vec<HandedDevice>,
    /// Set when nothing is handed over, saying why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A device received from the predecessor: still registered, its LUNs in
/// place.
#[derive(Debug)]
pub struct ReceivedDevice {
    /// The device and its sessions.
    pub device: HandedDevice,
    /// Its `/dev/scst_user` fd.
    pub fd: OwnedFd,
}

/// The predecessor's end: a listening socket, polled by the control loop.
/// The socket file is removed when this is dropped.
#[derive(Debug)]
pub struct HandoffListener {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's device and inode: removed at drop only if the
    /// path still names it (a successor may have bound its own there).
    file: (u64, u64),
}

impl AsFd for HandoffListener {
    /// The listening socket: readable when a successor connects.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

/// The device and inode `path` names, if it exists.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl HandoffListener {
    /// Listens on `path` (mode 0600, non-blocking). A socket file nobody
    /// answers on (left by a server that died) is replaced; one a live
    /// server answers on is refused.
    pub fn bind(path: &Path) -> Result<Self, HandoffError> {
        let socket_err = |what, error| HandoffError::Socket {
            path: path.to_path_buf(),
            what,
            error,
        };
        if UnixStream::connect(path).is_ok() {
            return Err(HandoffError::InUse(path.to_path_buf()));
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(socket_err("removing a stale socket", e)),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| socket_err("creating its directory", e))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| socket_err("binding", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| socket_err("setting mode 0600", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| socket_err("setting non-blocking", e))?;
        let file = file_id(path).ok_or_else(|| {
            socket_err(
                "finding the socket file",
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            file,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A successor that connected and said [`HELLO`] (within `timeout`),
    /// if one did. A connection that says something else is closed.
    pub fn accept(&self, timeout: Duration) -> Result<Option<UnixStream>, HandoffError> {
        let stream = match self.listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
            Err(error) => {
                return Err(HandoffError::Socket {
                    path: self.path.clone(),
                    what: "accepting",
                    error,
                })
            }
        };
        let io = |what, error| HandoffError::Socket {
            path: self.path.clone(),
            what,
            error,
        };
        stream
            .set_nonblocking(false)
            .map_err(|e| io("setting blocking", e))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| io("setting a timeout", e))?;
        let mut hello = [0u8; HELLO.len()];
        match (&stream).read_exact(&mut hello) {
            Ok(()) => {}
            // A probe (`bind` checking for a live server) says nothing.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io("reading the successor's hello", e)),
        }
        if &hello != HELLO {
            return Err(HandoffError::Protocol(format!(
                "a client on {} sent {hello:?}, not the hand-off hello",
                self.path.display()
            )));
        }
        Ok(Some(stream))
    }
}

impl Drop for HandoffListener {
    fn drop(&mut self) {
        if file_id(&self.path) == Some(self.file) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where handed-over devices go: a successor on the hand-off socket
/// ([`Successor`]), or a service manager's file descriptor store (the
/// binary's; the library knows no service manager).
pub trait HandoffSink {
    /// Sends the devices with their fds (duplicates: the sink may keep
    /// them open as long as it needs; they close when the call returns).
    fn send(&mut self, devices: &[(HandedDevice, BorrowedFd<'_>)]) -> Result<(), HandoffError>;
    /// Tells the receiver that nothing is handed over, and why.
    fn refuse(&mut self, why: &str) -> Result<(), HandoffError>;
}

/// A successor connected to the hand-off socket.
#[derive(Debug)]
pub struct Successor<'a>(pub &'a UnixStream);

impl HandoffSink for Successor<'_> {
    fn send(&mut self, devices: &[(HandedDevice, BorrowedFd<'_>)]) -> Result<(), HandoffError> {
        send(self.0, devices, None)
    }

    fn refuse(&mut self, why: &str) -> Result<(), HandoffError> {
        send(self.0, &[], Some(why.to_owned()))
    }
}

/// Writes the hand-off message: `devices` with their fds, or `error`.
pub fn send(
    stream: &UnixStream,
    devices: &[(HandedDevice, BorrowedFd<'_>)],
    error: Option<String>,
) -> Result<(), HandoffError> {
    if devices.len() > MAX_DEVICES {
        return Err(HandoffError::Protocol(format!(
            "{} devices: at most {MAX_DEVICES} go in one hand-off",
            devices.len()
        )));
    }
    let handover = Handover {
        devices: devices.iter().map(|(d, _)| d.clone()).collect(),
        error,
    };
    let json = serde_json::to_vec(&handover)
        .map_err(|e| HandoffError::Protocol(format!("encoding the message: {e}")))?;
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(MAGIC);
    header[4..8].copy_from_slice(&(json.len() as u32).to_le_bytes());
    header[8..].copy_from_slice(&(devices.len() as u32).to_le_bytes());
    let fds: Vec<RawFd> = devices.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let iov = [std::io::IoSlice::new(&header)];
    let sent = sendmsg::<()>(stream.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
        .map_err(|e| HandoffError::Protocol(format!("sending the fds: {e}")))?;
    if sent != HEADER_LEN {
        // A 12-byte send on a fresh stream socket is never short.
        return Err(HandoffError::Protocol(format!(
            "sent {sent} of {HEADER_LEN} header bytes"
        )));
    }
    (&*stream)
        .write_all(&json)
        .map_err(|e| HandoffError::Protocol(format!("sending the device list: {e}")))
}

/// The successor's end: connects to `path`, asks for the devices and
/// receives them (waiting up to `timeout` for the predecessor to quiesce
/// them).
pub fn receive(path: &Path, timeout: Duration) -> Result<Vec<ReceivedDevice>, HandoffError> {
    let io = |what, error| HandoffError::Socket {
        path: path.to_path_buf(),
        what,
        error,
    };
    let mut stream = UnixStream::connect(path).map_err(|e| io("connecting", e))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| io("setting a timeout", e))?;
    stream
        .write_all(HELLO)
        .map_err(|e| io("writing the hello", e))?;
    let mut header = [0u8; HEADER_LEN];
    let mut space = nix::cmsg_space!([RawFd; MAX_DEVICES]);
    let (got, fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut header)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_WAITALL,
        )
        .map_err(|e| io("receiving the fds", e.into()))?;
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs().map_err(|e| io("reading the fds", e.into()))? {
            if let ControlMessageOwned::ScmRights(rights) = cmsg {
                // SAFETY: each fd of an SCM_RIGHTS message is a new
                // descriptor installed in this process for us alone.
                fds.extend(
                    rights
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (msg.bytes, fds)
    };
    if got == 0 {
        return Err(HandoffError::Protocol(format!(
            "{} closed the connection without handing anything over",
            path.display()
        )));
    }
    if got != HEADER_LEN || &header[..4] != MAGIC {
        return Err(HandoffError::Protocol(format!(
            "{} answered {:?}, not a hand-off header",
            path.display(),
            &header[..got]
        )));
    }
    let json_len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let count = u32::from_le_bytes(header[8..].try_into().expect("4 bytes")) as usize;
    if json_len > MAX_JSON {
        return Err(HandoffError::Protocol(format!(
            "a device list of {json_len} bytes (at most {MAX_JSON})"
        )));
    }
    let mut json = vec![0u8; json_len];
    stream
        .read_exact(&mut json)
        .map_err(|e| io("reading the device list", e))?;
    let handover: Handover = serde_json::from_slice(&json)
        .map_err(|e| HandoffError::Protocol(format!("the device list: {e}")))?;
    if let Some(error) = handover.error {
        return Err(HandoffError::Refused(error));
    }
    if fds.len() != count || handover.devices.len() != count {
        return Err(HandoffError::Protocol(format!(
            "{} fds and {} devices received, {count} announced",
            fds.len(),
            handover.devices.len()
        )));
    }
    Ok(handover
        .devices
        .into_iter()
        .zip(fds)
        .map(|(device, fd)| ReceivedDevice { device, fd })
        .collect())
}

#[cfg(test)]
mod tests;
