//! The SCSI logical unit: executes commands for one frontend device against a
//! bdev, through a [`BdevPort`].
//!
//! [`Lun`] implements [`CommandExecutor`]. Emulated commands (INQUIRY, MODE
//! SENSE, ...) are answered inside `submit`; media commands become
//! [`IoRequest`](bdev::IoRequest)s staged on the port. Every response is
//! delivered by `poll`, in the order the commands finished.
//!
//! # Contract
//! - Single-threaded: a unit belongs to its frontend's poller (it is `Send`,
//!   so it can be built on one thread and moved to its reactor).
//! - No allocation, lock or syscall per command: task slots, their iovec
//!   arrays, the queues, the scratch memory and the response buffers are
//!   preallocated by [`Lun::new`] (an iovec list longer than any before
//!   grows its slot's array once).
//! - A slot is busy from `submit` until `poll` delivers its response; each
//!   `submit` gets exactly one response, BUSY included.
//! - The data buffer is only accessed between `submit` and the task's
//!   finish, which comes before its response is delivered, and never while
//!   a bdev request holding it is in flight.
//! - Dropped while requests are outstanding, the unit leaks the memory they
//!   hold (iovec arrays, scratch chunks) rather than free it under the bdev.
//!
//! # Layout
//! - `config`: [`LunConfig`] and its validation;
//! - `task`: the task slots and request tags; `step`: the steps of a job;
//! - `plan`: starting a command (decode, emulate, or plan its steps);
//! - `schedule`: the queues, COMPARE AND WRITE's exclusion, finishing;
//! - `stage`: steps into bdev requests, one function per kind of step;
//! - `complete`: bdev completions into progress and responses;
//! - `memory`: the data buffer and the scratch chunks, the only `unsafe`
//!   code of the unit besides the call in `submit` that hands the
//!   frontend's promise over to the data buffer.
//!
//! # Tasks
//! A task slot holds a copy of the CDB, the command's data buffer (the
//! frontend's memory, attached at `submit` and detached when the task
//! finishes), the command's job (a sequence of at most two steps, e.g.
//! "read and compare, then write" for COMPARE AND WRITE), the number of its
//! requests outstanding in the bdev and its first error. Request tags carry
//! the slot in bits 0-31 and a per-slot generation in bits 32-47 (within
//! [`PORT_TAG_MASK`](crate::port::PORT_TAG_MASK)). A request that carries
//! memory (the data buffer or the task's scratch chunk) holds a loan of it
//! from staging to completion; a task finishes only when none of its
//! requests is outstanding, so when it holds no loan.
//!
//! # Scheduling
//! - Tasks that want to stage requests wait in one FIFO (`ready`). Only its
//!   head stages; when the port is full the head waits for room, and the
//!   tasks behind it wait too (FIFO fairness: a large command is not
//!   overtaken forever by small ones).
//! - Commands that need scratch memory (VERIFY, WRITE AND VERIFY, COMPARE
//!   AND WRITE, WRITE SAME with a pattern) first take a scratch chunk, in
//!   FIFO order, and hold it until they finish; a command larger than a
//!   chunk works through it in pieces. A task holding a chunk only ever waits
//!   for port room, which completions always free, so there is no deadlock.
//! - COMPARE AND WRITE runs alone: at the head of the queue it waits until
//!   no request of this unit is outstanding, then runs its read, compare and
//!   write while no other task stages anything. So no other command of this
//!   unit can observe or change the blocks between the compare and the write.
//!   (Other units sharing the bdev are not held off.)
//!
//! # Decisions where SBC/SPC leave a choice
//! - SYNCHRONIZE CACHE: IMMED is ignored; status is returned after the flush
//!   completed, so a flush error is reported and "GOOD" always means durable.
//!   Without a volatile cache it completes at once.
//! - READ with a data buffer shorter than the transfer: the whole blocks that
//!   fit are read and `data_in_len` says how many bytes (the kernel reports
//!   the residual). A buffer smaller than one block reads nothing and
//!   completes GOOD with `data_in_len` 0.
//! - Commands with data-out (WRITE, WRITE AND VERIFY, VERIFY with BYTCHK,
//!   COMPARE AND WRITE, WRITE SAME without NDOB, UNMAP, MODE SELECT): a
//!   buffer shorter than the CDB requires fails with INVALID FIELD IN CDB on
//!   the transfer length (no pointer for WRITE SAME) before anything is
//!   written; a longer buffer is used from its start, except for COMPARE
//!   AND WRITE, whose buffer must be exactly its verify and write halves
//!   (see [`crate::scsi::cdb::check_data_out`]).
//! - VERIFY and WRITE AND VERIFY with BYTCHK 00b really read the range back
//!   (medium verification), through scratch memory. The write of WRITE AND
//!   VERIFY is FUA, so the verification reads the medium.
//! - MISCOMPARE INFORMATION: the offset of the first differing byte from the
//!   start of the compared data (the data-out buffer for BYTCHK 01b, the
//!   verify half for COMPARE AND WRITE, the verified range for BYTCHK 11b).
//! - Writes are FUA when the CDB says so or when WCE is 0 on a device with a
//!   volatile cache. FUA on reads is accepted and needs nothing.
//! - WRITE SAME: NDOB or an all-zero block with UNMAP=1 on a device that
//!   unmaps to zeroes → Unmap; otherwise an all-zero block on a device with
//!   write-zeroes → WriteZeroes; otherwise the block is repeated in a scratch
//!   chunk and written in pieces.
//! - `abort`: see [`CommandExecutor::abort`] and [`Lun::abort_task`]
//!   (`abort.rs`); a task between two steps (no request outstanding)
//!   completes with TASK ABORTED at once.
//! - A slot out of range or busy at `submit` is answered with BUSY from the
//!   next `poll` (at most `max_tasks` such answers are queued; more are
//!   dropped).

mod abort;
mod complete;
mod config;
mod memory;
mod outcomes;
mod plan;
mod schedule;
mod stage;
mod step;
mod task;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use bdev::{IoCompletion, IoVec};

use crate::exec::{status, CommandExecutor, Response};
use crate::port::BdevPort;
use crate::scsi::{unmap, ModeState, ModeValues, SenseFormat, UnitInfo, RESPONSE_BUFFER_LEN};
use memory::Scratch;
use task::{Task, TaskState};

pub use abort::TaskAbort;
pub use config::{LunConfig, LunError, DEFAULT_MAX_TRANSFER_BYTES, MAX_TASKS};
pub use outcomes::{sense_key, CommandKind, LunCounters, LunCountersSnapshot};

/// Counters for tests and statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LunStats {
    /// Commands submitted (including rejected ones).
    pub submitted: u64,
    /// Bdev requests staged.
    pub requests: u64,
    /// Times the head of the ready queue had to wait (port full, or a
    /// COMPARE AND WRITE waiting for the bdev to drain).
    pub head_blocked: u64,
    /// Times a task waited for scratch memory.
    pub scratch_waits: u64,
    /// Completions whose tag matched no outstanding request (ignored).
    pub stray_completions: u64,
}

/// A SCSI logical unit over one [`BdevPort`]. See the module docs.
///
/// Invariants: `in_flight` is the number of `submit`s whose response has
/// not been delivered (slots not free, plus queued BUSY answers); a slot is
/// in at most one of `ready`, `scratch_wait` and `done`; `exclusive` names
/// the active COMPARE AND WRITE that has the unit to itself, if any.
pub struct Lun {
    unit: UnitInfo,
    mode: ModeState,
    port: BdevPort,
    /// Largest Unmap/WriteZeroes request in blocks.
    max_unmap_piece: u32,
    /// The bdev writes zeroes natively.
    write_zeroes: bool,
    /// The task slots, indexed by slot number; never resized.
    tasks: Vec<Task>,
    /// Tasks that want to stage requests, in FIFO order.
    ready: VecDeque<u32>,
    /// Tasks waiting for a scratch chunk, in FIFO order.
    scratch_wait: VecDeque<u32>,
    /// Finished tasks whose responses `poll` delivers next.
    done: VecDeque<u32>,
    /// Slots answered BUSY at `submit`.
    rejected: VecDeque<u32>,
    /// The COMPARE AND WRITE running alone.
    exclusive: Option<u32>,
    scratch: Scratch,
    /// Where emulated responses are built.
    response_buf: Box<[u8; RESPONSE_BUFFER_LEN]>,
    /// The parameter list of MODE SELECT and UNMAP, copied out of the data
    /// buffer.
    param_buf: Box<[u8]>,
    /// Completions taken from the port in one `poll`.
    completions: Vec<IoCompletion>,
    in_flight: usize,
    stats: LunStats,
    /// What the metrics read, published from `tally` at the end of a poll.
    counters: Arc<LunCounters>,
    /// Commands, responses and bdev errors counted since the last publish.
    tally: LunCountersSnapshot,
    /// Something was counted since the last publish.
    tally_dirty: bool,
}

impl fmt::Debug for Lun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lun")
            .field("unit", &self.unit)
            .field("mode", &self.mode)
            .field("in_flight", &self.in_flight)
            .field("ready", &self.ready.len())
            .field("scratch_wait", &self.scratch_wait.len())
            .field("done", &self.done.len())
            .field("scratch", &self.scratch)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Lun {
    /// A logical unit executing commands on `port` as `config` says.
    /// Preallocates the task table, the scratch memory and the response
    /// buffers.
    pub fn new(config: LunConfig, port: BdevPort) -> Result<Lun, LunError> {
        let unit = config.validate()?;
        let mode = ModeState::new(ModeValues {
            write_cache: config.write_cache,
            descriptor_sense: config.sense_format == SenseFormat::Descriptor,
        });
        let max_tasks = config.max_tasks as usize;
        let depth = port.depth();
        Ok(Lun {
            unit,
            mode,
            port,
            max_unmap_piece: match config.capabilities.max_unmap_blocks {
                0 => u32::MAX,
                blocks => blocks,
            },
            write_zeroes: config.capabilities.write_zeroes,
            tasks: (0..max_tasks).map(|_| Task::new()).collect(),
            ready: VecDeque::with_capacity(max_tasks),
            scratch_wait: VecDeque::with_capacity(max_tasks),
            done: VecDeque::with_capacity(max_tasks),
            rejected: VecDeque::with_capacity(max_tasks),
            exclusive: None,
            scratch: Scratch::new(config.scratch_bytes, config.scratch_chunk_bytes),
            response_buf: Box::new([0; RESPONSE_BUFFER_LEN]),
            param_buf: vec![0; unmap::MAX_PARAM_LEN].into_boxed_slice(),
            completions: Vec::with_capacity(depth),
            in_flight: 0,
            stats: LunStats::default(),
            counters: Arc::default(),
            tally: LunCountersSnapshot::default(),
            tally_dirty: false,
        })
    }

    /// The unit's description.
    pub fn unit(&self) -> &UnitInfo {
        &self.unit
    }

    /// The current and default mode parameters.
    pub fn mode(&self) -> &ModeState {
        &self.mode
    }

    /// The sense format in use (D_SENSE).
    pub fn sense_format(&self) -> SenseFormat {
        self.mode.current.sense_format()
    }

    /// The port (e.g. to set its peer waker).
    pub fn port_mut(&mut self) -> &mut BdevPort {
        &mut self.port
    }

    /// Requests staged or in the bdev.
    pub fn outstanding_requests(&self) -> usize {
        self.port.outstanding()
    }

    /// Counters.
    pub fn stats(&self) -> LunStats {
        self.stats
    }

    /// The command counters the unit publishes at the end of each poll
    /// that saw work (see [`LunCounters`]).
    pub fn counters(&self) -> Arc<LunCounters> {
        Arc::clone(&self.counters)
    }

    /// Publishes the tally of the polls since the last publish.
    fn publish_tally(&mut self) {
        self.tally.bdev_outstanding = self.port.outstanding() as u64;
        self.counters.publish(&self.tally);
        self.tally = LunCountersSnapshot::default();
        self.tally_dirty = false;
    }

    fn block_size(&self) -> usize {
        self.unit.block_size as usize
    }

    fn chunk_blocks(&self) -> u32 {
        (self.scratch.chunk_len() / self.block_size()) as u32
    }
}

impl CommandExecutor for Lun {
    fn max_tasks(&self) -> u32 {
        self.tasks.len() as u32
    }

    unsafe fn submit(&mut self, slot: u32, cdb_bytes: &[u8], data: &[IoVec]) {
        self.stats.submitted += 1;
        self.tally
            .submitted(cdb_bytes.first().copied().unwrap_or(0xFF));
        self.tally_dirty = true;
        let busy = !matches!(
            self.tasks.get(slot as usize),
            Some(task) if task.state == TaskState::Free
        );
        if busy {
            if self.rejected.len() < self.tasks.len() {
                self.rejected.push_back(slot);
                self.in_flight += 1;
            }
            return;
        }
        self.in_flight += 1;
        let task = &mut self.tasks[slot as usize];
        task.begin(cdb_bytes);
        // SAFETY: this function's contract: the memory named by `data` stays
        // valid, and the frontend does not touch it, until the response for
        // `slot` is delivered; the task detaches the buffer when it finishes,
        // before that. The slot was free, so its buffer is not lent.
        unsafe { task.data.attach(data) };
        self.start(slot, cdb_bytes);
    }

    fn abort(&mut self, slot: u32) {
        self.abort_task(slot);
    }

    fn flush(&mut self) {
        self.port.publish();
    }

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(u32, &Response)) -> usize {
        let Lun {
            port, completions, ..
        } = self;
        completions.clear();
        port.poll(usize::MAX, |completion| completions.push(completion));
        self.tally_dirty |= !self.completions.is_empty();
        for i in 0..self.completions.len() {
            let completion = self.completions[i];
            self.complete(completion);
        }
        self.run_ready();
        let mut delivered = 0;
        while delivered < max {
            if let Some(slot) = self.rejected.pop_front() {
                let busy = Response::with_status(status::BUSY);
                self.tally.delivered(&busy);
                done(slot, &busy);
            } else if let Some(slot) = self.done.pop_front() {
                let task = &mut self.tasks[slot as usize];
                task.state = TaskState::Free;
                self.tally.delivered(&task.response);
                done(slot, &task.response);
            } else {
                break;
            }
            self.in_flight -= 1;
            delivered += 1;
        }
        if self.tally_dirty {
            self.publish_tally();
        }
        delivered
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }
}
