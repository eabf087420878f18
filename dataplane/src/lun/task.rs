//! Task slots: what the unit keeps about each command from `submit` until
//! its response is delivered, and the request tags that name a task.

use std::fmt;

use super::memory::{ChunkId, DataBuffer};
use super::step::Step;
use crate::exec::Response;
use crate::port::PORT_TAG_MASK;
use crate::scsi::{cdb, unmap, ScsiError};

/// Where a slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TaskState {
    /// No command; `submit` may use the slot.
    Free,
    /// A command is executing.
    Active,
    /// Finished: the response waits in the done queue for `poll`.
    Done,
}

/// Which queue of the unit holds the task, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queued {
    No,
    /// The ready queue: it wants to stage requests.
    Ready,
    /// The scratch queue: it waits for a scratch chunk.
    Scratch,
}

/// One task slot.
///
/// Invariants: `outstanding` counts the bdev requests of this task staged
/// and not yet completed; the task finishes (data buffer detached, response
/// built, scratch chunk released) only when it is 0. Each outstanding
/// request that carries memory holds a loan of the data buffer or of the
/// chunk, as its step says ([`Step::carries`]). `queued` says which queue
/// holds the slot, and a slot is in at most one queue.
pub(super) struct Task {
    pub(super) state: TaskState,
    /// Bumped at every `submit`; carried in request tags so that a
    /// completion for an earlier command of this slot is recognised.
    pub(super) generation: u16,
    pub(super) cdb: [u8; cdb::MAX_CDB_LEN],
    /// The command's data buffer: attached at `submit`, detached when the
    /// task finishes.
    pub(super) data: DataBuffer,
    pub(super) step: Step,
    pub(super) next: Step,
    /// COMPARE AND WRITE: must run alone.
    pub(super) exclusive: bool,
    pub(super) outstanding: u32,
    /// The first error; the task stages nothing more once set.
    pub(super) error: Option<ScsiError>,
    pub(super) aborted: bool,
    pub(super) queued: Queued,
    /// The scratch chunk the task holds, from when it got one until it
    /// finishes.
    pub(super) chunk: Option<ChunkId>,
    pub(super) data_in_len: u32,
    /// UNMAP: the descriptors with blocks to deallocate, decoded from the
    /// validated private copy of the parameter list (the data buffer is
    /// shared memory and may change after validation). Grows once, to the
    /// unit's MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT, at the slot's first
    /// UNMAP.
    pub(super) unmap: Vec<unmap::Descriptor>,
    /// Built when the task finishes; delivered by `poll`.
    pub(super) response: Response,
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("state", &self.state)
            .field("opcode", &format_args!("{:#04x}", self.cdb[0]))
            .field("step", &self.step)
            .field("next", &self.next)
            .field("outstanding", &self.outstanding)
            .field("error", &self.error)
            .field("aborted", &self.aborted)
            .finish()
    }
}

impl Task {
    /// A free slot, its arrays preallocated.
    pub(super) fn new() -> Self {
        Self {
            state: TaskState::Free,
            generation: 0,
            cdb: [0; cdb::MAX_CDB_LEN],
            data: DataBuffer::new(),
            step: Step::Idle,
            next: Step::Idle,
            exclusive: false,
            outstanding: 0,
            error: None,
            aborted: false,
            queued: Queued::No,
            chunk: None,
            data_in_len: 0,
            unmap: Vec::new(),
            response: Response::good(0),
        }
    }

    /// Makes a free slot active for the command `cdb` (the data buffer is
    /// attached separately, at the `submit` boundary).
    pub(super) fn begin(&mut self, cdb: &[u8]) {
        self.state = TaskState::Active;
        self.generation = self.generation.wrapping_add(1);
        let len = cdb.len().min(cdb::MAX_CDB_LEN);
        self.cdb = [0; cdb::MAX_CDB_LEN];
        self.cdb[..len].copy_from_slice(&cdb[..len]);
        self.step = Step::Idle;
        self.next = Step::Idle;
        self.exclusive = false;
        self.outstanding = 0;
        self.error = None;
        self.aborted = false;
        self.queued = Queued::No;
        self.chunk = None;
        self.data_in_len = 0;
        self.unmap.clear();
    }
}

/// Request tags: the slot in bits 0-31, the slot's generation in bits
/// 32-47, within [`PORT_TAG_MASK`] (the port owns the top 16 bits).
const SLOT_BITS: u32 = 32;
const GENERATION_MASK: u64 = 0xFFFF;
const _: () = assert!(((GENERATION_MASK << SLOT_BITS) | 0xFFFF_FFFF) & !PORT_TAG_MASK == 0);

/// The tag of the requests of `slot` in `generation`.
pub(super) fn tag(slot: u32, generation: u16) -> u64 {
    (u64::from(generation) << SLOT_BITS) | u64::from(slot)
}

/// The slot and generation a tag names.
pub(super) fn untag(tag: u64) -> (u32, u16) {
    (
        (tag & 0xFFFF_FFFF) as u32,
        ((tag >> SLOT_BITS) & GENERATION_MASK) as u16,
    )
}
