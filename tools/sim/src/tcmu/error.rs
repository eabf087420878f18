//! Why the simulator's calls fail.

use dataplane::tcmu::TcmuError;

/// Why a command could not be queued. `RingFull`, `DataAreaFull` and
/// `NoCmdId` are flow control: reap completions and try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimSubmitError {
    /// Not enough free ring space (counted from the last reaped position).
    #[error("command ring full")]
    RingFull,
    /// Not enough free data blocks.
    #[error("data area full")]
    DataAreaFull,
    /// Larger than the whole data area, or the entry is larger than half the
    /// ring (the kernel fails these with INVALID CDB FIELD).
    #[error("command too large for this ring or data area")]
    TooLarge,
    /// All 65535 cmd_ids are in use.
    #[error("no free cmd_id")]
    NoCmdId,
    /// The CDB is empty or shorter than its opcode says.
    #[error("CDB shorter than its opcode requires")]
    BadCdb,
    /// An injected entry length is not a non-zero multiple of 8.
    #[error("entry length must be a non-zero multiple of 8")]
    InvalidLength,
    /// The ring is broken (see [`TcmuSim::fault`](super::TcmuSim::fault)).
    #[error("ring broken")]
    Broken,
}

/// Errors of [`TcmuSim::reap`](super::TcmuSim::reap).
pub type SimError = TcmuError;
