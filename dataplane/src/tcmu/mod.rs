//! The TCMU frontend: LIO's `target_core_user` command ring, driven by a
//! polled [`TcmuDevice`].
//!
//! # Pieces
//! - [`abi`]: the `target_core_user.h` structs and constants, with
//!   compile-time layout checks.
//! - [`SharedRegion`]: the whole mapping (mailbox, ring, data area) with
//!   bounds-checked, reference-free access; from `/dev/uioN` or from a
//!   memfd shared with an in-process kernel side.
//! - [`Doorbell`]: the completion kick (4-byte `write` on `/dev/uioN`, or an
//!   eventfd) and the notification fd the reactor sleeps on.
//! - [`TcmuDevice`]: walks the ring, copies each command out into a
//!   preallocated slot, hands it to a [`CommandExecutor`], and writes the
//!   responses back in batches (one `cmd_tail` release store and one doorbell
//!   per poll). Implements [`reactor::Poller`].
//!
//! # Trust
//! Everything read from the mapping is untrusted: every offset and length is
//! checked against the mapping before use. A malformed *command* fails with
//! CHECK CONDITION; a ring that cannot be walked any more (bad `cmd_head`,
//! bad entry length, duplicate `cmd_id`) puts the device into the broken
//! state ([`RingFault`]): it stops touching the ring and never panics.
//!
//! [`CommandExecutor`]: crate::exec::CommandExecutor

pub mod abi;
mod device;
pub mod discovery;
mod doorbell;
pub mod netlink;
mod region;
mod ring;

use std::io;

pub use device::{TcmuDevice, TcmuDeviceConfig, TcmuStats, TcmuStatsSnapshot};
pub use doorbell::Doorbell;
pub use region::{uio_map0_size, SharedRegion};

use crate::exec::Response;
use crate::scsi::{ScsiError, SenseFormat};

/// Opens the UIO device node `dev_path` read-write and non-blocking and maps
/// exactly `map_len` bytes (its `maps/map0/size`) at offset 0. An `EBUSY`
/// open means another process holds the device (the kernel allows one).
pub fn open_uio_node(
    dev_path: &std::path::Path,
    map_len: usize,
) -> Result<(SharedRegion, Doorbell), TcmuError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(dev_path)
        .map_err(|source| TcmuError::Open {
            path: dev_path.display().to_string(),
            source,
        })?;
    let region = SharedRegion::map_file(&file, map_len)?;
    Ok((region, Doorbell::uio(std::os::fd::OwnedFd::from(file))))
}

/// Why the ring cannot be walked or completed any more. Reported by
/// [`TcmuDevice::fault`] (the device's view) and by a kernel side in the
/// same process (the kernel's view, where the kernel would set `TCMU_DEV_BIT_BROKEN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingFault {
    /// `cmd_head` is not inside the ring.
    #[error("cmd_head {head} is outside the {cmdr_size}-byte ring")]
    HeadOutOfRange {
        /// The value read.
        head: u32,
        /// Ring size.
        cmdr_size: u32,
    },
    /// `cmd_head` is not a multiple of 8.
    #[error("cmd_head {head} is not 8-byte aligned")]
    HeadMisaligned {
        /// The value read.
        head: u32,
    },
    /// `cmd_head` is behind what the device already walked: counted from the
    /// published `cmd_tail`, the kernel's entries end before the device's
    /// walk position. The kernel never fills the ring completely, so its
    /// head never laps the tail; a head that moved backwards means the ring
    /// was reset (e.g. `action/reset_ring` while the published tail was
    /// already 0) and the entries past the head are stale.
    #[error("cmd_head {head} is behind ring offset {walked}, which the device already walked")]
    HeadMovedBackwards {
        /// `cmd_head`.
        head: u32,
        /// The device's walk position.
        walked: u32,
    },
    /// An entry has length 0.
    #[error("entry at ring offset {offset} has length 0")]
    ZeroLengthEntry {
        /// Ring offset of the entry.
        offset: u32,
    },
    /// An entry runs past the end of the ring (entries never wrap).
    #[error("entry at ring offset {offset} of {len} bytes crosses the ring end")]
    EntryCrossesRingEnd {
        /// Ring offset of the entry.
        offset: u32,
        /// Its length.
        len: u32,
    },
    /// An entry runs past `cmd_head`.
    #[error("entry at ring offset {offset} of {len} bytes runs past cmd_head {head}")]
    EntryBeyondHead {
        /// Ring offset of the entry.
        offset: u32,
        /// Its length.
        len: u32,
        /// `cmd_head`.
        head: u32,
    },
    /// A CMD entry is shorter than `struct tcmu_cmd_entry`, so no response
    /// fits in it.
    #[error("CMD entry at ring offset {offset} is only {len} bytes")]
    CmdEntryTooShort {
        /// Ring offset of the entry.
        offset: u32,
        /// Its length.
        len: u32,
    },
    /// A CMD entry carries `cmd_id` 0 (the kernel allocates 1..=0xFFFF).
    #[error("CMD entry at ring offset {offset} has cmd_id 0")]
    InvalidCmdId {
        /// Ring offset of the entry.
        offset: u32,
    },
    /// A CMD entry reuses a `cmd_id` that is still in flight.
    #[error("cmd_id {cmd_id} is already in flight")]
    DuplicateCmdId {
        /// The id.
        cmd_id: u16,
    },
    /// `cmd_tail` changed under the device (only the device writes it, so
    /// the ring was reset, e.g. by `action/reset_ring`, or another process
    /// attached).
    #[error("cmd_tail moved from {expected} to {found} behind the device's back")]
    TailMovedByPeer {
        /// The value the device stored last.
        expected: u32,
        /// The value found.
        found: u32,
    },
    /// Kernel side: a completed entry names a `cmd_id` not in flight.
    #[error("completion names cmd_id {cmd_id}, which is not in flight")]
    UnknownCmdId {
        /// The id.
        cmd_id: u16,
    },
    /// Kernel side: `cmd_tail` is outside the ring or not 8-aligned.
    #[error("cmd_tail {tail} is not a valid ring offset")]
    TailOutOfRange {
        /// The value read.
        tail: u32,
    },
    /// Kernel side (an in-process kernel's check): `cmd_tail` does not land on the
    /// boundary of an entry between the last cleaned position and the head.
    #[error("cmd_tail {tail} is not on an entry boundary")]
    TailNotOnBoundary {
        /// The value read.
        tail: u32,
    },
    /// Kernel side (an in-process kernel's check): userspace changed an entry's `len_op`.
    #[error("len_op of the entry at ring offset {offset} was changed")]
    EntryHeaderChanged {
        /// Ring offset of the entry.
        offset: u32,
    },
    /// Kernel side: an entry of unknown opcode was passed without
    /// `TCMU_UFLAG_UNKNOWN_OP`.
    #[error("unknown-op entry at ring offset {offset} passed without UNKNOWN_OP")]
    UnknownOpNotFlagged {
        /// Ring offset of the entry.
        offset: u32,
    },
    /// Kernel side: a command completed with KEEP_BUF was completed again.
    #[error("cmd_id {cmd_id} completed again after KEEP_BUF")]
    KeepBufCompletedTwice {
        /// The id.
        cmd_id: u16,
    },
}

/// Errors of the TCMU frontend and of an in-process kernel side of its ring.
#[derive(Debug, thiserror::Error)]
pub enum TcmuError {
    /// Opening the UIO device failed.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The device path.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// mmap of the shared region failed.
    #[error("cannot map the TCMU region: {0}")]
    Map(#[source] io::Error),
    /// Reading `/sys/class/uio/uioN/maps/map0/size` failed.
    #[error("cannot read the UIO map size from {path}: {source}")]
    UioMapSize {
        /// The sysfs file.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A doorbell or notification syscall failed.
    #[error("doorbell: {0}")]
    Doorbell(#[source] io::Error),
    /// The mapping is smaller than the mailbox.
    #[error("the region is {len} bytes, smaller than the 128-byte mailbox")]
    RegionTooSmall {
        /// Mapping length.
        len: usize,
    },
    /// The mailbox version is not [`abi::TCMU_MAILBOX_VERSION`].
    #[error("unsupported TCMU mailbox version {found} (this code speaks version 2)")]
    MailboxVersion {
        /// The version found.
        found: u16,
    },
    /// `cmdr_off` is not 128.
    #[error("mailbox cmdr_off is {found}, expected 128")]
    CmdrOff {
        /// The value found.
        found: u32,
    },
    /// `cmdr_size` is 0, not a multiple of 8, or the ring does not fit in the
    /// mapping.
    #[error("mailbox cmdr_size {cmdr_size} does not fit a {map_len}-byte mapping")]
    CmdrSize {
        /// The value found.
        cmdr_size: u32,
        /// Mapping length.
        map_len: usize,
    },
    /// `cmd_tail` at attach is not a valid ring offset.
    #[error("mailbox cmd_tail {tail} is not a valid offset in the {cmdr_size}-byte ring")]
    TailInvalid {
        /// The value found.
        tail: u32,
        /// Ring size.
        cmdr_size: u32,
    },
    /// An access outside the mapping was refused.
    #[error("access of {len} bytes at offset {offset} is outside the mapping")]
    OutOfBounds {
        /// Offset from the start of the mapping.
        offset: usize,
        /// Length of the access.
        len: usize,
    },
    /// A scalar access at a misaligned offset was refused.
    #[error("access at offset {offset} is not {align}-byte aligned")]
    Misaligned {
        /// Offset from the start of the mapping.
        offset: usize,
        /// Required alignment.
        align: usize,
    },
    /// The executor offers no task slots.
    #[error("the command executor has no task slots")]
    NoTaskSlots,
    /// The ring is broken; see the fault.
    #[error("ring broken: {0}")]
    RingBroken(#[from] RingFault),
    /// A device or kernel-side setting is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
}

/// Length of a CDB from its first bytes, as the kernel's
/// `scsi_command_size()` computes it: by opcode group (6, 10, 10, 12, 16, 12,
/// 10, 10 bytes for groups 0..=7), and `8 + additional length` (byte 7) for
/// VARIABLE LENGTH (0x7F). `None` if `cdb` is empty, or is a 0x7F CDB with
/// fewer than 8 bytes available.
pub fn scsi_command_size(cdb: &[u8]) -> Option<usize> {
    const GROUP_SIZE: [usize; 8] = [6, 10, 10, 12, 16, 12, 10, 10];
    let opcode = *cdb.first()?;
    if opcode == 0x7F {
        cdb.get(7).map(|&add| 8 + usize::from(add))
    } else {
        Some(GROUP_SIZE[usize::from(opcode >> 5)])
    }
}

/// Longest CDB the device accepts; longer ones fail with INVALID COMMAND
/// OPERATION CODE.
pub const MAX_CDB_LEN: usize = 16;

/// HARDWARE ERROR / INTERNAL TARGET FAILURE (44/00), fixed format: a
/// malformed ring entry, answered by the device itself (the executor never
/// sees the command, so its sense format setting does not apply).
pub(crate) fn internal_target_failure() -> Response {
    ScsiError::InternalTargetFailure.to_response(SenseFormat::Fixed)
}

/// ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE (20/00), fixed format:
/// a CDB longer than 16 bytes.
pub(crate) fn invalid_command_opcode() -> Response {
    ScsiError::InvalidCommandOperationCode.to_response(SenseFormat::Fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_sizes_follow_the_kernel_table() {
        assert_eq!(scsi_command_size(&[0x12]), Some(6)); // INQUIRY
        assert_eq!(scsi_command_size(&[0x28]), Some(10)); // READ(10)
        assert_eq!(scsi_command_size(&[0x55]), Some(10)); // MODE SELECT(10)
        assert_eq!(scsi_command_size(&[0x60]), Some(12)); // group 3 (reserved)
        assert_eq!(scsi_command_size(&[0x88]), Some(16)); // READ(16)
        assert_eq!(scsi_command_size(&[0xA8]), Some(12)); // READ(12)
        assert_eq!(scsi_command_size(&[0xC0]), Some(10)); // vendor
        assert_eq!(scsi_command_size(&[0x7F, 0, 0, 0, 0, 0, 0, 0x18]), Some(32));
        assert_eq!(scsi_command_size(&[0x7F, 0, 0]), None);
        assert_eq!(scsi_command_size(&[]), None);
    }

    #[test]
    fn open_uio_reports_a_missing_device() {
        let err = open_uio_node(std::path::Path::new("/dev/uio-does-not-exist"), 4096).unwrap_err();
        assert!(matches!(err, TcmuError::Open { .. }), "{err}");
        assert!(err.to_string().contains("/dev/uio-does-not-exist"));
    }

    #[test]
    fn sense_bytes_are_fixed_format() {
        let r = internal_target_failure();
        assert_eq!(r.status, 0x02);
        assert_eq!(
            r.sense_bytes(),
            &[0x70, 0, 0x04, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x44, 0, 0, 0, 0, 0]
        );
        let r = invalid_command_opcode();
        assert_eq!(
            &r.sense_bytes()[..14],
            &[0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0]
        );
    }
}
