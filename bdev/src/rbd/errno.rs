//! What a failed librbd operation means for the request: the one place an
//! `rbd` bdev turns the negative errno of `rbd_aio_get_return_value` (or
//! of a submitting call) into an [`IoError`], which the SCSI layer then
//! turns into sense data.

use crate::{IoError, IoOp};

/// Ceph's `EBLOCKLISTED` (this client was blocklisted by the cluster, e.g.
/// after another client broke its exclusive lock): `ESHUTDOWN` on Linux.
pub(super) const EBLOCKLISTED: i32 = libc::ESHUTDOWN;

/// The error a request of kind `op` completes with when librbd answered
/// `-errno`:
/// - the cluster cannot be reached or gave up on the operation
///   (`ETIMEDOUT`: the `rados_osd_op_timeout` passed, e.g. with the OSDs
///   down; `ENOTCONN`, `ECONNREFUSED`, `ECONNRESET`, `EHOSTUNREACH`,
///   `ENETUNREACH`; `EBLOCKLISTED`; `ENXIO`, the image gone from under the
///   client) → [`IoError::NotReady`] (NOT READY: the LUN reports it
///   instead of hanging);
/// - `EROFS` (a read-only image or snapshot, or an exclusive lock held
///   by another client) → [`IoError::WriteProtected`] (DATA PROTECT);
/// - `ENOSPC`, `EDQUOT` (the pool or a quota is full) →
///   [`IoError::NoSpace`] (SPACE ALLOCATION FAILED);
/// - `EOPNOTSUPP` → [`IoError::Unsupported`];
/// - `EINVAL` (librbd's answer to a range beyond the image, which the
///   shared checks exclude unless the image shrank while open) →
///   [`IoError::OutOfRange`];
/// - `EAGAIN`, `ENOMEM`, `EBUSY` → [`IoError::NoResources`] (BUSY: retry);
/// - `ECANCELED`, `EINTR` → [`IoError::Aborted`];
/// - anything else (`EIO` above all) → [`IoError::Read`] for a read,
///   [`IoError::Write`] for a write, flush, unmap or write-zeroes (MEDIUM
///   ERROR).
pub(super) fn io_error(op: IoOp, errno: i32) -> IoError {
    match errno {
        libc::ETIMEDOUT
        | libc::ENOTCONN
        | libc::ECONNREFUSED
        | libc::ECONNRESET
        | libc::EHOSTUNREACH
        | libc::ENETUNREACH
        | libc::ENXIO
        | EBLOCKLISTED => IoError::NotReady,
        libc::EROFS => IoError::WriteProtected,
        libc::ENOSPC | libc::EDQUOT => IoError::NoSpace(errno),
        libc::EOPNOTSUPP => IoError::Unsupported,
        libc::EINVAL => IoError::OutOfRange,
        libc::EAGAIN | libc::ENOMEM | libc::EBUSY => IoError::NoResources,
        libc::ECANCELED | libc::EINTR => IoError::Aborted,
        _ if op == IoOp::Read => IoError::Read(errno),
        _ => IoError::Write(errno),
    }
}

/// The error of a read that librbd completed with fewer bytes than asked
/// (librbd fills holes with zeroes, so it never should).
pub(super) fn short_read() -> IoError {
    IoError::Read(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_by_operation() {
        assert_eq!(io_error(IoOp::Read, libc::EIO), IoError::Read(libc::EIO));
        assert_eq!(io_error(IoOp::Write, libc::EIO), IoError::Write(libc::EIO));
        assert_eq!(io_error(IoOp::Flush, libc::EIO), IoError::Write(libc::EIO));
        assert_eq!(io_error(IoOp::Unmap, libc::EIO), IoError::Write(libc::EIO));
        for errno in [libc::ETIMEDOUT, libc::ENOTCONN, EBLOCKLISTED, 108] {
            assert_eq!(io_error(IoOp::Read, errno), IoError::NotReady);
            assert_eq!(io_error(IoOp::Flush, errno), IoError::NotReady);
        }
        assert_eq!(io_error(IoOp::Write, libc::EROFS), IoError::WriteProtected);
        assert_eq!(
            io_error(IoOp::WriteZeroes, libc::EDQUOT),
            IoError::NoSpace(libc::EDQUOT)
        );
        assert_eq!(
            io_error(IoOp::Unmap, libc::EOPNOTSUPP),
            IoError::Unsupported
        );
        assert_eq!(io_error(IoOp::Read, libc::EINVAL), IoError::OutOfRange);
        assert_eq!(io_error(IoOp::Write, libc::ENOMEM), IoError::NoResources);
        assert_eq!(io_error(IoOp::Read, libc::ECANCELED), IoError::Aborted);
        assert_eq!(short_read(), IoError::Read(libc::EIO));
    }
}
