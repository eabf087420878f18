//! What a failed io_uring operation means for the request: the one place a
//! `file` bdev turns an errno into an [`IoError`], which the SCSI layer then
//! turns into sense data.

use crate::{IoError, IoOp};

/// The error a request of kind `op` completes with when the kernel
/// answered `-errno`:
/// - `ENOSPC`, `EDQUOT` → [`IoError::NoSpace`] (SPACE ALLOCATION FAILED);
/// - `EOPNOTSUPP` → [`IoError::Unsupported`];
/// - `EAGAIN`, `ENOMEM`, `EBUSY` → [`IoError::NoResources`] (BUSY: retry);
/// - `ECANCELED`, `EINTR` → [`IoError::Aborted`];
/// - anything else (`EIO` above all) → [`IoError::Read`] for a read,
///   [`IoError::Write`] for a write, flush, unmap or write-zeroes (MEDIUM
///   ERROR).
pub(super) fn io_error(op: IoOp, errno: i32) -> IoError {
    match errno {
        libc::ENOSPC | libc::EDQUOT => IoError::NoSpace(errno),
        libc::EOPNOTSUPP => IoError::Unsupported,
        libc::EAGAIN | libc::ENOMEM | libc::EBUSY => IoError::NoResources,
        libc::ECANCELED | libc::EINTR => IoError::Aborted,
        _ if op == IoOp::Read => IoError::Read(errno),
        _ => IoError::Write(errno),
    }
}

/// The error of a read or write that moved fewer bytes than asked without
/// an errno (a file truncated under the bdev, a device that ended early).
pub(super) fn short_transfer(op: IoOp) -> IoError {
    io_error(op, libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_by_operation() {
        assert_eq!(io_error(IoOp::Read, libc::EIO), IoError::Read(libc::EIO));
        assert_eq!(io_error(IoOp::Write, libc::EIO), IoError::Write(libc::EIO));
        assert_eq!(io_error(IoOp::Flush, libc::EIO), IoError::Write(libc::EIO));
        assert_eq!(
            io_error(IoOp::Write, libc::ENOSPC),
            IoError::NoSpace(libc::ENOSPC)
        );
        assert_eq!(
            io_error(IoOp::WriteZeroes, libc::EDQUOT),
            IoError::NoSpace(libc::EDQUOT)
        );
        assert_eq!(
            io_error(IoOp::Unmap, libc::EOPNOTSUPP),
            IoError::Unsupported
        );
        assert_eq!(io_error(IoOp::Read, libc::EAGAIN), IoError::NoResources);
        assert_eq!(io_error(IoOp::Read, libc::ECANCELED), IoError::Aborted);
        assert_eq!(short_transfer(IoOp::Read), IoError::Read(libc::EIO));
    }
}
