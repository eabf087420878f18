//! The steps a task's job is made of. [`plan`](super::plan) turns a media
//! command into at most two steps, [`stage`](super::stage) turns a step into
//! bdev requests, [`complete`](super::complete) advances it as they finish.
//!
//! A step is plain data: it says what remains to be staged and, for a
//! multi-piece step, where it stands. It never changes while requests it
//! staged are outstanding, except to record progress (`staged`, `piece`,
//! the next LBA), so a completion can tell from the task's current step what
//! its request was.

use bdev::IoOp;

/// What the read-back of a [`CheckStep`] is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compare {
    /// Medium verification only.
    Nothing,
    /// Compare with the data buffer from `buf_offset`.
    Bytes { buf_offset: usize },
    /// Compare every block with the first block of the data buffer.
    SameBlock,
}

/// How a [`FillStep`] writes its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FillHow {
    WriteZeroes,
    Unmap,
    /// Write the pattern block repeated in the scratch chunk; `from_buffer`:
    /// the block comes from the data buffer (else zeroes); `filled`: the
    /// chunk holds the pattern.
    Pattern {
        from_buffer: bool,
        filled: bool,
    },
}

/// One read or write over the data buffer from `buf_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TransferStep {
    pub(super) op: IoOp,
    pub(super) lba: u64,
    pub(super) blocks: u32,
    pub(super) fua: bool,
    pub(super) buf_offset: usize,
    pub(super) staged: bool,
}

/// One flush (`lba`/`blocks` 0/0: the whole device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FlushStep {
    pub(super) lba: u64,
    pub(super) blocks: u32,
    pub(super) staged: bool,
}

/// Read `blocks` at `lba` into scratch a piece at a time and compare;
/// `done` blocks are checked, `piece` blocks are being read (one piece at a
/// time: the chunk holds one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CheckStep {
    pub(super) lba: u64,
    pub(super) blocks: u32,
    pub(super) done: u32,
    pub(super) piece: u32,
    pub(super) compare: Compare,
}

/// Deallocate the ranges of the UNMAP descriptors (the task's validated
/// copy, [`Task::unmap`](super::task::Task::unmap)): `next` indexes the next
/// descriptor to start, `count` how many there are, `lba`/`left` the rest
/// of the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UnmapStep {
    pub(super) next: u32,
    pub(super) count: u32,
    pub(super) lba: u64,
    pub(super) left: u64,
}

/// WRITE SAME: `left` blocks from `lba` still to stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FillStep {
    pub(super) how: FillHow,
    pub(super) lba: u64,
    pub(super) left: u64,
    pub(super) fua: bool,
}

/// The memory the requests of a step carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Carries {
    /// None (flush, unmap, write zeroes).
    Nothing,
    /// The task's data buffer.
    DataBuffer,
    /// The task's scratch chunk.
    ScratchChunk,
}

/// One step of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Idle,
    Transfer(TransferStep),
    Flush(FlushStep),
    Check(CheckStep),
    Unmap(UnmapStep),
    Fill(FillStep),
}

impl Step {
    /// A read or write of `blocks` at `lba` over the data buffer from
    /// `buf_offset`.
    pub(super) fn transfer(op: IoOp, lba: u64, blocks: u32, fua: bool, buf_offset: usize) -> Step {
        Step::Transfer(TransferStep {
            op,
            lba,
            blocks,
            fua,
            buf_offset,
            staged: false,
        })
    }

    /// A read-back of `blocks` at `lba`, compared as `compare` says.
    pub(super) fn check(lba: u64, blocks: u32, compare: Compare) -> Step {
        Step::Check(CheckStep {
            lba,
            blocks,
            done: 0,
            piece: 0,
            compare,
        })
    }

    /// Whether requests remain to be staged.
    pub(super) fn has_more(&self) -> bool {
        match *self {
            Step::Idle => false,
            Step::Transfer(TransferStep { staged, .. }) | Step::Flush(FlushStep { staged, .. }) => {
                !staged
            }
            Step::Check(CheckStep { blocks, done, .. }) => done < blocks,
            Step::Unmap(UnmapStep {
                next, count, left, ..
            }) => left > 0 || next < count,
            Step::Fill(FillStep { left, .. }) => left > 0,
        }
    }

    /// Whether the step works through a scratch chunk.
    pub(super) fn needs_scratch(&self) -> bool {
        self.carries() == Carries::ScratchChunk
    }

    /// The memory the step's requests carry, and so the loan a completion
    /// of one of them ends.
    pub(super) fn carries(&self) -> Carries {
        match self {
            Step::Transfer(_) => Carries::DataBuffer,
            Step::Check(_)
            | Step::Fill(FillStep {
                how: FillHow::Pattern { .. },
                ..
            }) => Carries::ScratchChunk,
            Step::Idle | Step::Flush(_) | Step::Unmap(_) | Step::Fill(_) => Carries::Nothing,
        }
    }
}
