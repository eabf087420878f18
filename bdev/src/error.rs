//! Errors of the bdev crate.
//!
//! [`Error`] is for the control path (creating bdevs, opening channels).
//! [`IoError`] is the small `Copy` reason carried by a failed
//! [`IoCompletion`](crate::IoCompletion); the SCSI layer maps each variant to
//! sense data in one place (`dataplane::scsi::sense`).

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
    /// The request was aborted before it finished.
    #[error("aborted")]
    Aborted,
    /// Temporarily out of resources; retry later.
    #[error("out of resources")]
    NoResources,
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
    /// An OS error while opening or driving a bdev.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
