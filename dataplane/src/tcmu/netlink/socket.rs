//! The listener itself: a non-blocking `NETLINK_GENERIC` socket that
//! joined the `TCM-USER` `"config"` group ([`TcmuNetlink`]), and the
//! send/receive/wait primitives under it.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkBuffer, NLMSG_ERROR};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

use super::error::NetlinkError;
use super::event::{decode_event, encode_done, encode_set_features, TcmuEvent, TcmuEventKind};
use super::family::{decode_family_reply, encode_get_family, FamilyIds};
use super::wire::{error_code, messages, TCMU_GENL_FAMILY, TCMU_MCGRP_CONFIG};

/// How long a request (`GETFAMILY`, `*_DONE`, `SET_FEATURES`) waits for the
/// kernel's answer. The kernel handles generic netlink requests synchronously
/// inside `sendmsg`, so the answer is normally queued before the send returns.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Size of the receive buffer. The kernel builds the events in an
/// `NLMSG_GOODSIZE` (at most 8 KiB) skb; a controller reply is a few hundred
/// bytes. A longer datagram is reported as [`NetlinkError::Malformed`].
const RECV_BUFFER_LEN: usize = 32 * 1024;

/// Waits until `socket` is readable or `deadline` passes (`None`: forever).
/// `Ok(false)` on timeout or when a signal interrupts the wait.
fn wait_readable(socket: &Socket, deadline: Option<Instant>) -> Result<bool, NetlinkError> {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    crate::wait::wait_readable(&[socket.as_fd()], left)
        .map(|ready| ready.is_some())
        .map_err(|source| NetlinkError::Io { op: "poll", source })
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
    pub(super) fn open_family(family: &str, group: &str) -> Result<Self, NetlinkError> {
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
