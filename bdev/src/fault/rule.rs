//! Fault rules: which requests a rule selects (operations, an LBA range, a
//! probability) and what it does to them (an error, a delay, or holding the
//! request until it is aborted).

use crate::{Error, IoError, IoOp, IoRequest};

/// A set of operations, as bits of [`IoOp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSet(u8);

impl OpSet {
    /// Every operation.
    pub const ALL: OpSet = OpSet(0x1F);
    /// No operation.
    pub const NONE: OpSet = OpSet(0);

    fn bit(op: IoOp) -> u8 {
        match op {
            IoOp::Read => 1,
            IoOp::Write => 2,
            IoOp::Flush => 4,
            IoOp::Unmap => 8,
            IoOp::WriteZeroes => 16,
        }
    }

    /// This set with `op` added.
    pub fn with(self, op: IoOp) -> OpSet {
        OpSet(self.0 | Self::bit(op))
    }

    /// Whether `op` is in the set.
    pub fn contains(self, op: IoOp) -> bool {
        self.0 & Self::bit(op) != 0
    }

    /// The operation named `name` (`read`, `write`, `flush`, `unmap`,
    /// `write-zeroes`).
    pub fn parse_op(name: &str) -> Option<IoOp> {
        Some(match name {
            "read" => IoOp::Read,
            "write" => IoOp::Write,
            "flush" => IoOp::Flush,
            "unmap" => IoOp::Unmap,
            "write-zeroes" => IoOp::WriteZeroes,
            _ => return None,
        })
    }
}

/// The error a rule injects. Each is an [`IoError`] the SCSI layer maps to
/// its own sense (see `dataplane::scsi::sense`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultError {
    /// A medium error at the first block of the request in the rule's
    /// range: [`IoError::ReadAt`] for a read, [`IoError::WriteAt`]
    /// otherwise (MEDIUM ERROR with the LBA in INFORMATION).
    Medium,
    /// [`IoError::NoSpace`] (ENOSPC): out of space (DATA PROTECT, SPACE
    /// ALLOCATION FAILED WRITE PROTECT).
    NoSpace,
    /// [`IoError::NotReady`] (NOT READY).
    NotReady,
    /// [`IoError::WriteProtected`] (DATA PROTECT, WRITE PROTECTED).
    WriteProtected,
    /// [`IoError::DeviceFailure`] (HARDWARE ERROR).
    Hardware,
    /// [`IoError::Aborted`] (ABORTED COMMAND).
    Aborted,
    /// [`IoError::NoResources`] (BUSY).
    Busy,
    /// [`IoError::InvalidField`] (ILLEGAL REQUEST).
    InvalidField,
}

impl FaultError {
    /// Every kind with its configuration name.
    pub const NAMES: [(&'static str, FaultError); 8] = [
        ("medium", FaultError::Medium),
        ("no-space", FaultError::NoSpace),
        ("not-ready", FaultError::NotReady),
        ("write-protected", FaultError::WriteProtected),
        ("hardware", FaultError::Hardware),
        ("aborted", FaultError::Aborted),
        ("busy", FaultError::Busy),
        ("invalid-field", FaultError::InvalidField),
    ];

    /// The kind named `name` (see [`FaultError::NAMES`]).
    pub fn parse(name: &str) -> Option<FaultError> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, kind)| *kind)
    }

    /// The error a request of `op` fails with, `lba` its first block in
    /// the rule's range.
    pub fn io_error(self, op: IoOp, lba: u64) -> IoError {
        match self {
            FaultError::Medium if op == IoOp::Read => IoError::ReadAt(lba),
            FaultError::Medium => IoError::WriteAt(lba),
            FaultError::NoSpace => IoError::NoSpace(libc::ENOSPC),
            FaultError::NotReady => IoError::NotReady,
            FaultError::WriteProtected => IoError::WriteProtected,
            FaultError::Hardware => IoError::DeviceFailure,
            FaultError::Aborted => IoError::Aborted,
            FaultError::Busy => IoError::NoResources,
            FaultError::InvalidField => IoError::InvalidField,
        }
    }
}

/// What a rule does to a request it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Fail the request with this error, without passing it to the base
    /// bdev (the data buffer is not touched).
    Fail(FaultError),
    /// Pass the request to the base bdev and hold its completion for a delay
    /// drawn uniformly from `min_us..=max_us` microseconds.
    Delay {
        /// Shortest delay, microseconds.
        min_us: u64,
        /// Longest delay, microseconds (at least `min_us`).
        max_us: u64,
    },
    /// Keep the request, never passing it to the base bdev, until it is
    /// aborted ([`BdevChannel::abort`](crate::BdevChannel::abort)).
    Stick,
}

/// One rule: requests of `ops` that overlap `range` are selected with
/// `probability`, and then `action` applies.
///
/// Invariants (checked by [`FaultRule::check`]): `range`, when given, is not
/// empty; `probability` is within 0..=1; a delay's `min_us <= max_us`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRule {
    /// The operations selected.
    pub ops: OpSet,
    /// The blocks `start..end` (end exclusive): a request is selected when
    /// it overlaps them; a whole-device flush (0 blocks) overlaps any range.
    /// `None`: the whole device.
    pub range: Option<(u64, u64)>,
    /// The chance that a matching request is selected (1.0: always).
    pub probability: f64,
    /// What happens to a selected request.
    pub action: FaultAction,
}

impl FaultRule {
    /// A rule selecting every request of `ops`, always.
    pub fn new(ops: OpSet, action: FaultAction) -> Self {
        Self {
            ops,
            range: None,
            probability: 1.0,
            action,
        }
    }

    /// This rule restricted to the blocks `start..end`.
    pub fn in_range(self, start: u64, end: u64) -> Self {
        Self {
            range: Some((start, end)),
            ..self
        }
    }

    /// This rule applied with `probability`.
    pub fn with_probability(self, probability: f64) -> Self {
        Self {
            probability,
            ..self
        }
    }

    /// Checks the invariants; the error names rule `index` of bdev `name`
    /// and the field.
    pub fn check(&self, name: &str, index: usize) -> Result<(), Error> {
        let bad = |what: String| {
            Err(Error::InvalidParameter(format!(
                "fault bdev {name}: rule {index}: {what}"
            )))
        };
        if let Some((start, end)) = self.range {
            if start >= end {
                return bad(format!("range {start}..{end} is empty"));
            }
        }
        if !(0.0..=1.0).contains(&self.probability) {
            return bad(format!(
                "probability {} is not between 0 and 1",
                self.probability
            ));
        }
        if let FaultAction::Delay { min_us, max_us } = self.action {
            if min_us > max_us {
                return bad(format!(
                    "latency {min_us} us is more than its maximum {max_us} us"
                ));
            }
        }
        Ok(())
    }

    /// The first block of `request` in the rule's range (the request's
    /// first block without a range).
    pub(super) fn first_block(&self, request: &IoRequest) -> u64 {
        match self.range {
            Some((start, _)) => request.lba.max(start),
            None => request.lba,
        }
    }

    /// Whether the rule's operations and range select `request` (the
    /// probability is drawn by the caller).
    pub(super) fn matches(&self, request: &IoRequest) -> bool {
        if !self.ops.contains(request.op) {
            return false;
        }
        match self.range {
            None => true,
            Some(_) if request.blocks == 0 => request.op == IoOp::Flush,
            Some((start, end)) => {
                let last = request.lba.saturating_add(u64::from(request.blocks));
                request.lba < end && start < last
            }
        }
    }
}
