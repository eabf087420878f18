//! What a passthrough command's completion means for its request: the one
//! place the `nvme` bdev turns an NVMe status or an errno into an
//! [`IoError`], which the SCSI layer then turns into sense
//! (`dataplane::scsi::sense`).
//!
//! # What the CQE's `res` is (Linux 6.1, `drivers/nvme/host/ioctl.c`)
//! - `0`: the command succeeded.
//! - `> 0`: the controller completed the command with an error: the
//!   16-bit status field of its completion queue entry shifted right by one
//!   (the phase bit dropped; `nvme_req(req)->status`): bits 7:0 Status Code
//!   (SC), bits 10:8 Status Code Type (SCT), bits 12:11 Command Retry Delay,
//!   bit 13 More, bit 14 Do Not Retry. Passthrough commands are never
//!   retried by the driver (`REQ_FAILFAST_DRIVER`): every status arrives
//!   here as the controller gave it.
//! - `< 0`: `-errno` from the kernel: submission refused (`EINVAL`,
//!   `EACCES`, `EOPNOTSUPP`, `EFAULT`), the request cancelled by a timeout
//!   or a controller reset (`EINTR`), or no controller status and a block
//!   layer error (`EIO`, `ENOLINK`, ...).
//!
//! # The mapping
//! It follows the NVM Express SCSI Translation Reference (rev. 1.5, 2015,
//! "Status Mappings"; implemented in Linux's former `nvme-scsi.c`) wherever
//! an [`IoError`] expresses its sense, and says where it departs:
//!
//! | SCT/SC | NVMe status | IoError | SCSI (sense key, ASC/ASCQ) |
//! | --- | --- | --- | --- |
//! | 0/01h | Invalid Command Opcode | `Unsupported` | ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE |
//! | 0/02h | Invalid Field in Command | `InvalidField` | ILLEGAL REQUEST, INVALID FIELD IN CDB |
//! | 0/04h | Data Transfer Error | `Read`/`Write` | MEDIUM ERROR (the reference: no ASC) |
//! | 0/05h, 07h–0Ah | Aborted (power loss, requested, SQ deletion, fused) | `Aborted` | ABORTED COMMAND |
//! | 0/06h | Internal Error | `DeviceFailure` | HARDWARE ERROR, INTERNAL TARGET FAILURE |
//! | 0/0Bh | Invalid Namespace or Format | `DeviceFailure` | the reference: ILLEGAL REQUEST, ACCESS DENIED - INVALID LU IDENTIFIER; here the namespace went away under the bdev: the unit's backing failed |
//! | 0/1Dh, 82h, 84h | Sanitize in Progress, Namespace Not Ready, Format in Progress | `NotReady` | NOT READY, LOGICAL UNIT NOT READY |
//! | 0/20h | Namespace is Write Protected | `WriteProtected` | DATA PROTECT, WRITE PROTECTED |
//! | 0/21h, 22h | Command Interrupted, Transient Transport Error | `NoResources` | BUSY: the initiator retries (NVMe says a retry may succeed) |
//! | 0/80h | LBA Out of Range | `OutOfRange` | ILLEGAL REQUEST, LBA OUT OF RANGE |
//! | 0/81h | Capacity Exceeded | `NoSpace` | DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT: the thin-provisioning answer of SBC-4 (the 2015 reference has MEDIUM ERROR; Linux's block layer makes it `ENOSPC`) |
//! | 0/83h | Reservation Conflict | `Read`/`Write` | MEDIUM ERROR: the bdev takes no NVMe reservations, so another host holds one; no SCSI reservation exists to report a conflict on (the reference: RESERVATION CONFLICT status) |
//! | 1/80h, 81h | Conflicting Attributes, Invalid Protection Information | `InvalidField` | ILLEGAL REQUEST, INVALID FIELD IN CDB |
//! | 1/82h | Attempted Write to Read Only Range | `WriteProtected` | DATA PROTECT, WRITE PROTECTED |
//! | 1/83h | (Linux: ONCS not supported) | `Unsupported` | ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE |
//! | 2/80h | Write Fault | `Write` | MEDIUM ERROR (the reference: PERIPHERAL DEVICE WRITE FAULT; here WRITE ERROR) |
//! | 2/81h | Unrecovered Read Error | `Read` | MEDIUM ERROR, UNRECOVERED READ ERROR |
//! | 3/00h, 03h, 60h, 70h | Path errors, ANA Transition | `NoResources` | BUSY: another path or a later try may succeed |
//! | 3/01h, 02h | ANA Persistent Loss, ANA Inaccessible | `NotReady` | NOT READY |
//! | 3/71h | Command Aborted By Host | `Aborted` | ABORTED COMMAND |
//! | anything else | (incl. end-to-end and compare errors, which cannot occur: metadata formats are refused and Compare is never sent) | `Read`/`Write` | MEDIUM ERROR, like Linux's `BLK_STS_IOERR` |
//!
//! `Read`/`Write` is by operation: `Read` for a read, `Write` for a write,
//! flush, unmap or write-zeroes. Their errno is `EIO` for a status.
//!
//! An errno maps as the `file` bdev's do: `ENOSPC`/`EDQUOT` →
//! `NoSpace`, `EOPNOTSUPP` → `Unsupported`, `EAGAIN`/`ENOMEM`/`EBUSY` →
//! `NoResources`, `ECANCELED`/`EINTR` (a cancelled command) → `Aborted`,
//! anything else → `Read`/`Write` with that errno.

use crate::{IoError, IoOp};

/// Status Code Type: Generic Command Status.
pub(super) const SCT_GENERIC: u16 = 0;
/// Status Code Type: Command Specific Status.
pub(super) const SCT_COMMAND: u16 = 1;
/// Status Code Type: Media and Data Integrity Errors.
pub(super) const SCT_MEDIA: u16 = 2;
/// Status Code Type: Path Related Status.
pub(super) const SCT_PATH: u16 = 3;

/// The outcome of one command whose CQE carried `res`, for a request of
/// kind `op`.
#[inline]
pub(super) fn result(op: IoOp, res: i32) -> Result<(), IoError> {
    match res {
        0 => Ok(()),
        status if status > 0 => Err(from_status(op, status as u16)),
        errno => Err(from_errno(op, -errno)),
    }
}

/// The error of a command the controller completed with `status` (the
/// CQE status field without the phase bit).
pub(super) fn from_status(op: IoOp, status: u16) -> IoError {
    let sct = (status >> 8) & 0x7;
    let sc = status & 0xFF;
    match (sct, sc) {
        (SCT_GENERIC, 0x01) => IoError::Unsupported,
        (SCT_GENERIC, 0x02) => IoError::InvalidField,
        (SCT_GENERIC, 0x05 | 0x07..=0x0A) => IoError::Aborted,
        (SCT_GENERIC, 0x06 | 0x0B) => IoError::DeviceFailure,
        (SCT_GENERIC, 0x1D | 0x82 | 0x84) => IoError::NotReady,
        (SCT_GENERIC, 0x20) => IoError::WriteProtected,
        (SCT_GENERIC, 0x21 | 0x22) => IoError::NoResources,
        (SCT_GENERIC, 0x80) => IoError::OutOfRange,
        (SCT_GENERIC, 0x81) => IoError::NoSpace(libc::ENOSPC),
        (SCT_COMMAND, 0x80 | 0x81) => IoError::InvalidField,
        (SCT_COMMAND, 0x82) => IoError::WriteProtected,
        (SCT_COMMAND, 0x83) => IoError::Unsupported,
        (SCT_MEDIA, 0x80) => IoError::Write(libc::EIO),
        (SCT_MEDIA, 0x81) => IoError::Read(libc::EIO),
        (SCT_PATH, 0x00 | 0x03 | 0x60 | 0x70) => IoError::NoResources,
        (SCT_PATH, 0x01 | 0x02) => IoError::NotReady,
        (SCT_PATH, 0x71) => IoError::Aborted,
        _ => by_operation(op, libc::EIO),
    }
}

/// The error of a command the kernel failed with `errno`.
pub(super) fn from_errno(op: IoOp, errno: i32) -> IoError {
    match errno {
        libc::ENOSPC | libc::EDQUOT => IoError::NoSpace(errno),
        libc::EOPNOTSUPP => IoError::Unsupported,
        libc::EAGAIN | libc::ENOMEM | libc::EBUSY => IoError::NoResources,
        libc::ECANCELED | libc::EINTR => IoError::Aborted,
        _ => by_operation(op, errno),
    }
}

/// A medium error of the kind `op` is.
fn by_operation(op: IoOp, errno: i32) -> IoError {
    if op == IoOp::Read {
        IoError::Read(errno)
    } else {
        IoError::Write(errno)
    }
}

/// Whether a CQE's `res` is an NVMe status (the controller failed the
/// command) rather than success or an errno.
#[inline]
pub(super) fn is_status(res: i32) -> bool {
    res > 0
}

/// `res` described for a message: "NVMe status SCT/SC (DNR)" or the
/// errno's text.
pub fn describe(res: i32) -> String {
    if res > 0 {
        let status = res as u16;
        let dnr = if status & 0x4000 != 0 {
            ", do not retry"
        } else {
            ""
        };
        format!(
            "NVMe status type {:#x} code {:#04x}{dnr}",
            (status >> 8) & 0x7,
            status & 0xFF
        )
    } else {
        std::io::Error::from_raw_os_error(-res).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status field for SCT `sct` and SC `sc`, with DNR and More set
    /// as a controller may (they do not change the mapping).
    fn status(sct: u16, sc: u16) -> i32 {
        i32::from(0x4000 | 0x2000 | sct << 8 | sc)
    }

    #[test]
    fn success_and_errnos() {
        assert_eq!(result(IoOp::Read, 0), Ok(()));
        assert_eq!(
            result(IoOp::Read, -libc::EIO),
            Err(IoError::Read(libc::EIO))
        );
        assert_eq!(
            result(IoOp::Flush, -libc::EIO),
            Err(IoError::Write(libc::EIO))
        );
        assert_eq!(
            result(IoOp::Write, -libc::EINVAL),
            Err(IoError::Write(libc::EINVAL))
        );
        assert_eq!(result(IoOp::Read, -libc::EINTR), Err(IoError::Aborted));
        assert_eq!(result(IoOp::Write, -libc::ECANCELED), Err(IoError::Aborted));
        assert_eq!(result(IoOp::Read, -libc::EAGAIN), Err(IoError::NoResources));
        assert_eq!(
            result(IoOp::Write, -libc::ENOSPC),
            Err(IoError::NoSpace(libc::ENOSPC))
        );
        assert_eq!(
            result(IoOp::Unmap, -libc::EOPNOTSUPP),
            Err(IoError::Unsupported)
        );
    }

    #[test]
    fn generic_statuses() {
        let cases = [
            (0x01, IoError::Unsupported),
            (0x02, IoError::InvalidField),
            (0x04, IoError::Write(libc::EIO)),
            (0x05, IoError::Aborted),
            (0x06, IoError::DeviceFailure),
            (0x07, IoError::Aborted),
            (0x08, IoError::Aborted),
            (0x09, IoError::Aborted),
            (0x0A, IoError::Aborted),
            (0x0B, IoError::DeviceFailure),
            (0x0C, IoError::Write(libc::EIO)),
            (0x1D, IoError::NotReady),
            (0x20, IoError::WriteProtected),
            (0x21, IoError::NoResources),
            (0x22, IoError::NoResources),
            (0x80, IoError::OutOfRange),
            (0x81, IoError::NoSpace(libc::ENOSPC)),
            (0x82, IoError::NotReady),
            (0x83, IoError::Write(libc::EIO)),
            (0x84, IoError::NotReady),
        ];
        for (sc, expected) in cases {
            assert_eq!(
                result(IoOp::Write, status(SCT_GENERIC, sc)),
                Err(expected),
                "generic {sc:#x}"
            );
        }
        // A data transfer error of a read is a read error.
        assert_eq!(
            result(IoOp::Read, status(SCT_GENERIC, 0x04)),
            Err(IoError::Read(libc::EIO))
        );
    }

    #[test]
    fn command_specific_media_and_path_statuses() {
        let cases = [
            (SCT_COMMAND, 0x80, IoError::InvalidField),
            (SCT_COMMAND, 0x81, IoError::InvalidField),
            (SCT_COMMAND, 0x82, IoError::WriteProtected),
            (SCT_COMMAND, 0x83, IoError::Unsupported),
            (SCT_MEDIA, 0x80, IoError::Write(libc::EIO)),
            (SCT_MEDIA, 0x81, IoError::Read(libc::EIO)),
            (SCT_MEDIA, 0x82, IoError::Read(libc::EIO)),
            (SCT_MEDIA, 0x85, IoError::Read(libc::EIO)),
            (SCT_MEDIA, 0x87, IoError::Read(libc::EIO)),
            (SCT_PATH, 0x00, IoError::NoResources),
            (SCT_PATH, 0x01, IoError::NotReady),
            (SCT_PATH, 0x02, IoError::NotReady),
            (SCT_PATH, 0x03, IoError::NoResources),
            (SCT_PATH, 0x60, IoError::NoResources),
            (SCT_PATH, 0x70, IoError::NoResources),
            (SCT_PATH, 0x71, IoError::Aborted),
            (7, 0x80, IoError::Read(libc::EIO)),
        ];
        for (sct, sc, expected) in cases {
            assert_eq!(
                result(IoOp::Read, status(sct, sc)),
                Err(expected),
                "{sct}/{sc:#x}"
            );
        }
        // A write fault reported for a read is still a write fault; an
        // unrecovered read error of a write (read-modify-write) a read one.
        assert_eq!(
            result(IoOp::Read, status(SCT_MEDIA, 0x80)),
            Err(IoError::Write(libc::EIO))
        );
        assert_eq!(
            result(IoOp::Write, status(SCT_MEDIA, 0x81)),
            Err(IoError::Read(libc::EIO))
        );
        // Vendor specific and unknown statuses: a medium error by operation.
        assert_eq!(
            result(IoOp::WriteZeroes, status(7, 0xC0)),
            Err(IoError::Write(libc::EIO))
        );
    }

    #[test]
    fn descriptions() {
        assert!(is_status(status(0, 2)) && !is_status(0) && !is_status(-5));
        assert_eq!(
            describe(status(SCT_MEDIA, 0x81)),
            "NVMe status type 0x2 code 0x81, do not retry"
        );
        assert_eq!(describe(0x02), "NVMe status type 0x0 code 0x02");
        assert!(describe(-libc::EACCES).contains("ermission denied"));
    }
}
