//! Errors of the bdev crate.
//!
//! [`Error`] is for the control path (creating bdevs, opening channels).
//! [`IoError`] is the small `Copy` reason carried by a failed
//! [`IoCompletion`](crate::IoCompletion); the SCSI layer maps each variant to
//! sense data in one place (`dataplane::scsi::sense`).

use std::path::PathBuf;

/// Why one I/O request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// The LBA range extends beyond the device.
    #[error("LBA range beyond the end of the device")]
    OutOfRange,
    /// The scatter-gather list is shorter than `blocks * block_size`.
    #[error("data buffer shorter than the transfer")]
    ShortBuffer,
    /// The operation is not supported by this bdev.
    #[error("operation not supported by this bdev")]
    Unsupported,
    /// The transfer exceeds the bdev's limits.
    #[error("transfer too large for this bdev")]
    TooLarge,
    /// The medium could not be read (unrecovered read error).
    #[error("unrecovered read error (errno {0})")]
    Read(i32),
    /// The medium could not be written.
    #[error("write error (errno {0})")]
    Write(i32),
    /// The medium could not be read at block `0`, the first block of the
    /// request that failed, as an LBA of the bdev that completed the request
    /// (a bdev over others translates its children's). The SCSI layer
    /// reports it in the sense data's INFORMATION field.
    #[error("unrecovered read error at LBA {0}")]
    ReadAt(u64),
    /// The medium could not be written at block `0` (as for
    /// [`IoError::ReadAt`]).
    #[error("write error at LBA {0}")]
    WriteAt(u64),
    /// The request was aborted before it finished.
    #[error("aborted")]
    Aborted,
    /// Temporarily out of resources; retry later.
    #[error("out of resources")]
    NoResources,
    /// The device has no space left for the write (a thin or file-backed
    /// device whose filesystem is full, `ENOSPC`/`EDQUOT`).
    #[error("no space left on the backing device (errno {0})")]
    NoSpace(i32),
    /// The device is not ready to do I/O now (an NVMe namespace being
    /// formatted or sanitized, or not ready).
    #[error("the device is not ready")]
    NotReady,
    /// The device refuses writes to the range (write protected).
    #[error("the device is write protected")]
    WriteProtected,
    /// The device refused a field of the command it was sent (an NVMe
    /// Invalid Field in Command), not the operation as a whole.
    #[error("the device refused a field of the command")]
    InvalidField,
    /// The device failed internally (an NVMe Internal Error).
    #[error("internal device failure")]
    DeviceFailure,
}

/// Control-path errors of the bdev crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter is out of range; the message names it.
    #[error("invalid bdev parameter: {0}")]
    InvalidParameter(String),
    /// Memory for the bdev could not be obtained.
    #[error("cannot allocate {bytes} bytes for bdev {name}: {source}")]
    Allocation {
        /// Bdev name.
        name: String,
        /// Bytes requested.
        bytes: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Children of a striped bdev do not fit together.
    #[error("striped bdev {name}: {reason}")]
    IncompatibleChildren {
        /// Bdev name.
        name: String,
        /// What does not match.
        reason: String,
    },
    /// The file, block device or NVMe namespace behind a bdev cannot be used.
    #[error("bdev {name}: {path}: {problem}")]
    Open {
        /// Bdev name.
        name: String,
        /// The path as configured.
        path: PathBuf,
        /// What is wrong (in the message, not a separate source).
        problem: OpenProblem,
    },
    /// An OS error while opening or driving a bdev.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Why a file, a block device or an NVMe namespace cannot back a bdev (see
/// [`Error::Open`]).
#[derive(Debug, thiserror::Error)]
pub enum OpenProblem {
    /// Nothing at the path, and no size to create a file with.
    #[error("does not exist (give a size to create a sparse file there)")]
    Missing,
    /// The path names something else.
    #[error("is a {0}, not a regular file or a block device")]
    WrongType(&'static str),
    /// The file or device has no blocks.
    #[error("is empty")]
    Empty,
    /// A regular file's size does not divide into blocks.
    #[error("its size {size} bytes is not a multiple of the block size {block_size}")]
    MisalignedSize {
        /// Size in bytes.
        size: u64,
        /// Logical block size.
        block_size: u32,
    },
    /// The configured logical block size cannot be used.
    #[error("block size {0} is not a power of two of at least 512")]
    BadBlockSize(u32),
    /// With O_DIRECT, blocks must be a multiple of the file's I/O alignment.
    #[error(
        "block size {block_size} is smaller than the O_DIRECT offset alignment {align} \
         of this file: use a block size of at least {align}, or turn direct I/O off"
    )]
    BlockSizeBelowAlignment {
        /// Logical block size.
        block_size: u32,
        /// The file's O_DIRECT offset alignment.
        align: u32,
    },
    /// Opened for reading and writing, the file or device said no.
    #[error("is read-only ({0}); a file bdev needs read and write access")]
    ReadOnly(String),
    /// The filesystem does not do direct I/O.
    #[error(
        "its filesystem refuses O_DIRECT ({0}); turn direct I/O off \
         (`direct = false`) to go through the page cache"
    )]
    DirectRefused(String),
    /// IOPOLL was asked for and the file or device cannot be polled.
    #[error(
        "refuses polled I/O ({0}): the device needs poll queues (nvme.poll_queues) \
         and the file O_DIRECT; turn IOPOLL off"
    )]
    IopollRefused(String),
    /// IOPOLL was asked for an NVMe passthrough bdev on a kernel whose
    /// polled passthrough can crash (see `nvme::polled_passthrough_is_unsafe`).
    #[error(
        "polled NVMe passthrough can crash Linux {0}: a command without data \
         (flush, write zeroes) that completes while its ring polls leaves the \
         poller a stale pointer (reworked in Linux 6.5); turn iopoll off"
    )]
    IopollUnsafeKernel(String),
    /// The kernel gave no io_uring.
    #[error(
        "cannot set up an io_uring ({0}): the kernel lacks io_uring or has it \
         disabled (sysctl kernel.io_uring_disabled)"
    )]
    NoIoUring(std::io::Error),
    /// Nothing at the path of an `nvme` bdev.
    #[error(
        "does not exist (an NVMe namespace's generic character device is /dev/ngXnY, \
         created by the nvme driver since Linux 5.13)"
    )]
    NoSuchDevice,
    /// An `nvme` bdev's path names something else than an NVMe namespace's
    /// generic character device; the text says what.
    #[error("is {0}, not an NVMe namespace's generic character device (/dev/ngXnY)")]
    NotNvmeGeneric(String),
    /// The kernel cannot pass NVMe commands through io_uring.
    #[error(
        "the kernel cannot pass NVMe commands through io_uring ({0}): NVMe passthrough \
         with IORING_OP_URING_CMD needs Linux 5.19 or later"
    )]
    NoPassthrough(String),
    /// The kernel refused NVMe passthrough for want of privilege.
    #[error(
        "permission denied ({0}): NVMe passthrough needs read and write access to the \
         device and, before Linux 6.2, CAP_SYS_ADMIN (run as root)"
    )]
    PassthroughDenied(String),
    /// The namespace's LBA format cannot be served; the text says why.
    #[error("unsupported LBA format: {0}")]
    UnsupportedFormat(String),
    /// An Identify command at open failed.
    #[error("Identify {what} failed: {detail}")]
    Identify {
        /// Which Identify (controller, namespace).
        what: &'static str,
        /// The errno or NVMe status.
        detail: String,
    },
    /// The NVMe namespace is write protected.
    #[error("is write protected ({0}); an nvme bdev needs read and write access")]
    WriteProtected(String),
    /// A passthrough read of the first block, made at open, failed.
    #[error("a passthrough read of block 0 failed: {0}")]
    ProbeFailed(String),
    /// Another system call failed; the text names it.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}
