//! [`ScstDevice`]: one scst_user device driven by a polled executor.
//!
//! # Per poll
//! 1. **Collect**: `executor.poll(budget)`; every finished command becomes
//!    an EXEC reply (type COMPLETED) in the reply queue and frees its slot.
//! 2. **Held work**: EXEC subcommands that found no free slot, and
//!    TASK_MGMT_DONEs that found no free wait entry, are retried in arrival
//!    order.
//! 3. **Exchange**: one `SCST_USER_REPLY_AND_GET_MULTI` carries every reply
//!    queued since the last call and asks for up to `budget` new
//!    subcommands (fewer when the device is close to its limit of
//!    subcommands held, none while shutting down). No ioctl at all when
//!    there is nothing to send and nothing may be asked for, or while
//!    replies are being coalesced (commands are executing, fewer than
//!    `coalesce.batch` non-urgent replies are queued and `coalesce.max_hold`
//!    has not passed: see [`ScstDevice::poll`] and
//!    [`ScstDeviceConfig::coalesce`]).
//!    - Success: all replies were consumed; `cmds_cnt` commands arrived.
//!    - `EAGAIN` (non-blocking, nothing queued): the replies were still
//!      consumed (`replies_done`); no command.
//!    - A refused reply (`ESRCH`, `EINVAL`, `EFAULT` with `replies_done`
//!      short): the kernel processed the replies before it, stopped at
//!      `replies[replies_done]` and already completed that command itself
//!      (with an error sense) or forgot it; that reply is dropped (never
//!      resent) and the ones after it are resent at the next poll.
//!    - Any other error: the unconsumed replies are kept and resent.
//!      `ENODEV`, `EBADF`, `ENOTTY` and `ENXIO` mean the fd is no longer a
//!      registered device: the device is *faulted*, drops its replies,
//!      stops calling the driver and only drains the executor.
//!    - Whatever the error, commands the kernel returned with it are
//!      handled: it writes `cmds_cnt` once it got to fetching, so a count
//!      below the one asked for (e.g. `EFAULT` copying the next command
//!      out, which the kernel requeues) names commands now held here.
//! 4. **Handle** each new subcommand (below); replies that can be given at
//!    once are queued for the next exchange, EXECs go to the executor.
//! 5. `executor.flush()` publishes the staged bdev requests.
//!
//! # Subcommands
//! - **ATTACH_SESS / DETACH_SESS**: the session table is updated and the
//!   reply (result 0) goes out with the next exchange, well within the
//!   kernel's 5 s.
//! - **PARSE** (parse type CALL, or EXCEPTION for what SCST's own parser
//!   could not size): the CDB is decoded by [`crate::scsi::cdb::decode`]
//!   against [`ScstDeviceConfig::unit`]; the reply gives the data direction,
//!   LBA, `data_len` (the medium range in bytes), `bufflen` and `op_flags`
//!   (SCST's pre-parse flags plus `SCST_INFO_VALID`, `SCST_WRITE_MEDIUM` for
//!   commands that write the medium, `SCST_LBA_NOT_VALID` for commands
//!   without an LBA). A command the decoder rejects is answered with CHECK
//!   CONDITION and its sense. Commands SCST's core executes itself (its
//!   pre-parse marked them `SCST_LOCAL_CMD`, e.g. REPORT LUNS, PERSISTENT
//!   RESERVE IN/OUT, RESERVE/RELEASE) are passed back with the core's own
//!   values when the decoder does not know them: they are not
//!   re-implemented here.
//! - **ALLOC_MEM**: a pool buffer of `alloc_len` bytes; `pbuf = 0` when the
//!   pool is exhausted, which the kernel answers with BUSY (transient). A
//!   write larger than the pool's largest buffer gets a buffer of its own
//!   (`oversize.rs`): the reply cannot carry sense and BUSY would be
//!   retried for ever, so the EXEC comes and the executor answers it (the
//!   LUN: ILLEGAL REQUEST, INVALID FIELD IN CDB on the transfer length).
//! - **EXEC**: the data buffer is `pbuf` (a buffer given at ALLOC_MEM or an
//!   earlier EXEC and cached by the kernel), looked up in the pool (and the
//!   oversize buffers) by address: an address the pool did not hand out fails the command with
//!   HARDWARE ERROR / INTERNAL TARGET FAILURE without touching memory. For a
//!   data-in command with `pbuf == 0` a buffer of `alloc_len` bytes is
//!   allocated (exhausted pool: BUSY status; larger than the largest
//!   buffer: INVALID FIELD IN CDB on the transfer length). The executor
//!   gets one iovec of `bufflen` bytes. The reply is COMPLETED with the
//!   status, `resp_data_len` = the response's `data_in_len` (at most
//!   `bufflen`) for READ-direction commands and 0 for the others (the kernel
//!   refuses anything else), the sense through `psense_buffer`, and `pbuf`
//!   when the buffer was allocated at EXEC and data is returned (with no
//!   data the kernel ignores `pbuf`, so the buffer goes straight back to
//!   the pool).
//! - **ON_FREE_CMD**: a buffer the kernel does not cache
//!   (`buffer_cached == 0`) goes back to the pool. **ON_CACHED_MEM_FREE**:
//!   the evicted buffer goes back to the pool (the kernel has already
//!   unpinned it when it sends this). Unknown addresses are counted and
//!   otherwise ignored.
//! - **TASK_MGMT_RECEIVED**: `executor.abort` for every affected command in
//!   flight (see [`tm_affects`] for the scope of each function); affected
//!   EXECs still waiting for a slot are answered TASK ABORTED without
//!   running. Replied at once (the kernel ignores the result).
//!   **TASK_MGMT_DONE**: the same abort pass, then the reply (SUCCESS) is
//!   held until every affected command still in flight has completed and
//!   its EXEC reply is queued ahead of it. (SCST sends TASK_MGMT_DONE only
//!   after the affected commands finished, so the hold is a safety net.)
//! - **EXT_COPY_REMAP** (only sent when `ext_copy_remap_supported` is set,
//!   which this device never asks for): answered with the identity remap
//!   (the one descriptor as given), so SCST copies the range itself.
//! - **Unknown subcodes** (none exist in this ABI version): the reply echoes
//!   `cmd_h` and `subcode` with `result = -EINVAL`, so a future kernel
//!   fails the operation rather than taking zeros for a success.
//!
//! # Decisions
//! - **WRITE SAME**: always executed by the executor and answered
//!   COMPLETED, never DO_WRITE_SAME. SCST's core implements DO_WRITE_SAME
//!   (`scst_write_same`, scst_lib.c) by issuing internal WRITE commands to
//!   the same device, which for an scst_user device come back through this
//!   fd as ordinary EXECs with ALLOC_MEM and pool buffers: a round trip per
//!   piece and a copy of the pattern per piece. The logical unit already
//!   does strictly less work: write-zeroes or unmap for a zero block, or one
//!   scratch chunk holding the repeated block written straight to the bdev.
//!   There is no bdev for which handing the work back to the kernel saves
//!   anything.
//! - **Task management scope**: commands are matched by `sess_h` (the
//!   kernel's I_T_L nexus, one session's view of this device) and `cmd_h`:
//!   ABORT TASK = that command of that session; ABORT TASK SET, CLEAR TASK
//!   SET and the session-wide functions (NEXUS LOSS SESS, ABORT ALL TASKS
//!   SESS, UNREG SESS) = every command of the session; LUN RESET, TARGET
//!   RESET, NEXUS LOSS, ABORT ALL TASKS and PR ABORT ALL = every command of
//!   the device; CLEAR ACA and unknown functions abort nothing.
//! - **Slot exhaustion**: the device holds at most `slots + 2 × budget`
//!   subcommands (received and not yet answered). An EXEC that finds no
//!   free slot waits, in order, and the device asks the kernel for fewer
//!   subcommands (`budget` minus what it already holds beyond that limit),
//!   down to none until slots free up; nothing is lost or refused.
//! - **Shutdown** ([`ScstDevice::begin_shutdown`]): the device stops asking
//!   for subcommands and keeps exchanging until every command it received
//!   is answered. Subcommands still queued in the kernel stay there; when
//!   the fd closes the kernel fails them with BUSY — including the EXEC of
//!   a write whose ALLOC_MEM was answered before shutdown began (the write
//!   did not happen; the initiator retries).
//! - **Coalescing** (the [`Coalescer`] both frontends use): at a deep queue
//!   most replies are EXEC completions that nothing waits for but the
//!   initiator; holding them until `coalesce.batch` are queued (while other
//!   commands still execute) turns one ioctl per poll into one per batch. At
//!   queue depth 128 with completions trickling in 8 at a time this is
//!   0.031 ioctls per I/O instead of 0.25. Replies that a
//!   command or the kernel waits on (PARSE, ALLOC_MEM, sessions, task
//!   management) are never held, and nothing is held when no command
//!   executes unless a coalescing window (`coalesce.window`, off by
//!   default) is set.
//! - **Read-only sessions**: SCST's core refuses commands flagged
//!   `SCST_WRITE_MEDIUM` on a read-only LUN (`scst_do_local_exec`), so the
//!   device does not check `rd_only` again; PARSE sets that flag.
//! - **Refused replies keep their buffers**: when the kernel refuses an
//!   ALLOC_MEM or EXEC reply that carried a fresh buffer, it may or may not
//!   have mapped it, so the buffer is not returned to the pool (a leak
//!   rather than a buffer in two places). Correct replies are never
//!   refused.
//!
//! # Options
//! [`ScstDevice::new`] reads the registered options (GET_OPTIONS) and
//! refuses combinations it cannot serve: partial transfers (not
//! implemented by SCST either), ON_FREE_CMD IGNORE without memory reuse ALL
//! (buffers the kernel does not cache would never come back), PARSE CALL or
//! EXCEPTION without [`ScstDeviceConfig::unit`]. `d_sense` selects the sense
//! format of the errors the device itself reports. The other options
//! (tst, queue_alg, qerr, tas, swp) are SCST core behaviour, which the
//! unit's Control mode page reports: build the LUN with
//! `LunConfig::control` = [`control_mode`] of the registered options (which
//! also makes D_SENSE unchangeable, since SCST keeps its own).
//!
//! # Hot path
//! No allocation (slots, the reply queue and its sense storage, the held
//! queue, the wait table and the REPLY_AND_GET_MULTI buffer are allocated in
//! `new`; only ATTACH_SESS, a control operation, may grow the session
//! table), no lock, and no syscall except the one ioctl per poll.
//!
//! # Files
//! The settings and their checks are in `config.rs`, the counters in
//! `stats.rs`, the reply queue in `reply_queue.rs`, the poll cycle in
//! `poller.rs`, one handler per subcommand kind in `subcommands.rs` (PARSE in
//! `parse.rs`, task management in `task_mgmt.rs`).

mod config;
mod handoff;
mod oversize;
mod parse;
mod poller;
mod reply_queue;
mod stats;
mod subcommands;
mod task_mgmt;

pub use config::{
    control_mode, DeviceError, ScstDeviceConfig, MAX_BUDGET, MAX_SLOTS, MAX_TM_WAITS,
};
pub use handoff::HandOff;
pub use oversize::MAX_OVERSIZE;
pub use stats::{ScstStats, ScstStatsSnapshot};
pub use task_mgmt::tm_affects;

use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::os::fd::RawFd;
use std::sync::Arc;

use nix::errno::Errno;
use reactor::{clock, Poller};

use self::config::check_options;
use self::oversize::Oversize;
use self::reply_queue::ReplyQueue;
use super::abi::*;
use super::driver::{MultiBuf, ScstDriver};
use super::pool::BufferPool;
use crate::exec::{CommandExecutor, Response};
use crate::frontend::{Coalescer, Drain, SharedFault};
use crate::latency::{LatencyRecorder, SharedLatency};
use crate::scsi::SenseFormat;

/// An attached session (one I_T nexus's view of this device).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// The kernel's handle (`sess_h` of every command of the session).
    pub sess_h: u64,
    /// The LUN the device has in the session's target.
    pub lun: u64,
    /// The LUN is read-only for this session (SCST's core enforces it).
    pub rd_only: bool,
    /// The initiator's name.
    pub initiator_name: String,
    /// The target's name.
    pub target_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Submitted to the executor.
    Executing,
    /// Response collected this poll, reply not yet queued.
    Done,
}

/// One command in the executor.
struct Slot {
    state: SlotState,
    cmd_h: u32,
    sess_h: u64,
    data_direction: u8,
    bufflen: u32,
    /// The EXEC's `pbuf` (0 when allocated at EXEC or without data).
    pbuf: u64,
    /// Buffer allocated at EXEC (`pbuf == 0`), 0 otherwise.
    exec_pbuf: u64,
    /// Clock ticks when the EXEC arrived (latency).
    received_at: u64,
    /// Bit i: wait entry i (a TASK_MGMT_DONE) waits for this command.
    tm_waiters: u64,
    aborted: bool,
    response: Response,
}

/// Work that could not be done when it arrived.
enum Held {
    /// An EXEC waiting for a free slot.
    Exec {
        cmd_h: u32,
        exec: ScstUserScsiCmdExec,
        received_at: u64,
    },
    /// A TASK_MGMT_DONE waiting for a free wait entry.
    TmDone { cmd_h: u32, tm: ScstUserTm },
}

#[derive(Debug, Clone, Copy, Default)]
struct TmWait {
    cmd_h: u32,
    /// Affected commands still executing.
    remaining: u32,
}

/// One scst_user device (one registered `/dev/scst_user` fd, one LUN),
/// owned by one reactor thread. See the module docs.
///
/// Dropping the device with commands still in the executor leaks the
/// buffer pool's mapping (never unmaps it), because the executor may still
/// access those buffers.
pub struct ScstDevice<D: ScstDriver, E: CommandExecutor> {
    // Drop: the driver (the fd) is closed first, in `Drop::drop`; then the
    // pool is unmapped unless I/O is still in flight; then the fields.
    executor: E,
    pool: ManuallyDrop<BufferPool>,
    /// Buffers of writes larger than the pool's largest; dropped with the
    /// pool.
    oversize: ManuallyDrop<Oversize>,
    /// Dropped (the fd closed) before the pool is unmapped: until then the
    /// kernel may still own pool buffers.
    driver: ManuallyDrop<D>,
    config: ScstDeviceConfig,
    options: ScstUserOpt,
    sense_format: SenseFormat,
    multi: MultiBuf,
    replies: ReplyQueue,
    /// Subcommands received and not yet answered by a consumed reply.
    outstanding: usize,
    /// Most subcommands held at once (the reply queue's capacity).
    limit: usize,
    slots: Box<[Slot]>,
    free: Vec<u32>,
    done: Vec<u32>,
    held: VecDeque<Held>,
    tm_waits: [TmWait; MAX_TM_WAITS],
    tm_used: u64,
    sessions: Vec<Session>,
    drain: Drain,
    fault: Option<Errno>,
    /// `fault`, for the control plane (set where the device faulted).
    shared_fault: Arc<SharedFault<Errno>>,
    /// Holds replies back; its hold starts at each exchange (so it also
    /// tells the time since the last exchange).
    coalescer: Coalescer,
    /// The last exchange filled the command buffer: more may be waiting.
    last_filled: bool,
    /// The last exchange returned at least one subcommand.
    last_got: bool,
    /// An exchange happened: the coalescer's age is the time since the
    /// last one (before the first it means nothing).
    exchanged: bool,
    /// `config.idle_poll_interval` in clock ticks.
    idle_poll_ticks: u64,
    /// `config.idle_backstop` in clock ticks.
    idle_backstop_ticks: u64,
    /// Shared with the control plane (see [`HandOff`]).
    handoff: Arc<HandOff>,
    /// A hand-off is requested: no buffer is handed out (read from
    /// `handoff` once per poll).
    quiescing: bool,
    stats: Arc<ScstStats>,
    latency: Option<LatencyRecorder>,
}

impl<D: ScstDriver, E: CommandExecutor> std::fmt::Debug for ScstDevice<D, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScstDevice")
            .field("name", &self.config.name)
            .field("outstanding", &self.outstanding)
            .field("executing", &(self.slots.len() - self.free.len()))
            .field("held", &self.held.len())
            .field("replies", &self.replies.len())
            .field("sessions", &self.sessions.len())
            .field("fault", &self.fault)
            .finish()
    }
}

impl<D: ScstDriver, E: CommandExecutor> ScstDevice<D, E> {
    /// Builds the device for a driver whose device is already registered.
    ///
    /// Reads the registered options (one GET_OPTIONS) and checks them (see
    /// the module docs), checks the configuration, and preallocates
    /// everything the poll loop needs.
    pub fn new(
        mut driver: D,
        executor: E,
        pool: BufferPool,
        config: ScstDeviceConfig,
    ) -> Result<Self, DeviceError> {
        if config.budget == 0 || config.budget > MAX_BUDGET {
            return Err(DeviceError::InvalidConfig(format!(
                "budget {} must be 1..={MAX_BUDGET}",
                config.budget
            )));
        }
        if config.coalesce.batch == 0 {
            return Err(DeviceError::InvalidConfig(
                "coalesce.batch must be at least 1".to_owned(),
            ));
        }
        let options = driver.get_options().map_err(DeviceError::GetOptions)?;
        check_options(&options, config.unit.is_some())?;
        if let Some(unit) = &config.unit {
            let max_transfer = u64::from(unit.max_transfer_blocks) * u64::from(unit.block_size);
            if max_transfer > pool.max_buffer_bytes() as u64 {
                return Err(DeviceError::InvalidConfig(format!(
                    "the unit's maximum transfer ({max_transfer} bytes) exceeds the pool's \
                     largest buffer ({} bytes): raise max_buffer_bytes",
                    pool.max_buffer_bytes()
                )));
            }
        }
        let mut slots = executor.max_tasks() as usize;
        if config.max_tasks > 0 {
            slots = slots.min(config.max_tasks as usize);
        }
        let slots = slots.min(MAX_SLOTS);
        if slots == 0 {
            return Err(DeviceError::NoTaskSlots);
        }
        let limit = slots + 2 * config.budget;
        let sense_format = if options.d_sense != 0 {
            SenseFormat::Descriptor
        } else {
            SenseFormat::Fixed
        };
        let slot_table = (0..slots)
            .map(|_| Slot {
                state: SlotState::Free,
                cmd_h: 0,
                sess_h: 0,
                data_direction: SCST_DATA_NONE,
                bufflen: 0,
                pbuf: 0,
                exec_pbuf: 0,
                received_at: 0,
                tm_waiters: 0,
                aborted: false,
                response: Response::good(0),
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Ok(Self {
            executor,
            pool: ManuallyDrop::new(pool),
            oversize: ManuallyDrop::new(Oversize::new()),
            driver: ManuallyDrop::new(driver),
            options,
            sense_format,
            multi: MultiBuf::new(config.budget),
            replies: ReplyQueue::new(limit),
            outstanding: 0,
            limit,
            slots: slot_table,
            // Pop order: slot 0 first.
            free: (0..slots as u32).rev().collect(),
            done: Vec::with_capacity(slots),
            held: VecDeque::with_capacity(limit),
            tm_waits: [TmWait::default(); MAX_TM_WAITS],
            tm_used: 0,
            sessions: Vec::with_capacity(16),
            drain: Drain::default(),
            fault: None,
            shared_fault: Arc::default(),
            coalescer: Coalescer::new(&config.coalesce),
            last_filled: false,
            last_got: false,
            exchanged: false,
            idle_poll_ticks: clock::duration_to_ticks(config.idle_poll_interval),
            idle_backstop_ticks: clock::duration_to_ticks(config.idle_backstop),
            handoff: Arc::default(),
            quiescing: false,
            stats: Arc::new(ScstStats::default()),
            latency: config.track_latency.then(LatencyRecorder::new),
            config,
        })
    }
    /// The counters (shareable with other threads).
    pub fn stats(&self) -> Arc<ScstStats> {
        Arc::clone(&self.stats)
    }

    /// The device's latency histogram (EXEC received to response
    /// collected), if tracked.
    pub fn latency(&self) -> Option<Arc<SharedLatency>> {
        self.latency.as_ref().map(LatencyRecorder::shared)
    }

    /// The options the kernel reported at construction.
    pub fn options(&self) -> &ScstUserOpt {
        &self.options
    }

    /// The attached sessions.
    pub fn sessions(&self) -> &[Session] {
        &self.sessions
    }

    /// Takes over the sessions a predecessor's device had attached (on the
    /// fd it handed over: the kernel does not send ATTACH_SESS again).
    pub fn adopt_sessions(&mut self, sessions: Vec<Session>) {
        self.sessions = sessions;
    }

    /// The hand-off state, for the control plane (see [`HandOff`]).
    pub fn handoff(&self) -> Arc<HandOff> {
        Arc::clone(&self.handoff)
    }

    /// Subcommands received and not yet answered by a consumed reply.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Commands in the executor.
    pub fn executing(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Task slots.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Why the device stopped talking to the kernel, if it did.
    pub fn fault(&self) -> Option<Errno> {
        self.fault
    }

    /// [`fault`](Self::fault) for other threads: set when the device
    /// faulted.
    pub fn shared_fault(&self) -> Arc<SharedFault<Errno>> {
        Arc::clone(&self.shared_fault)
    }

    /// The buffer pool.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// Buffers given to writes larger than the pool's largest buffer and
    /// not yet freed by the kernel (see [`MAX_OVERSIZE`]).
    pub fn oversize_buffers(&self) -> usize {
        self.oversize.len()
    }

    /// The executor.
    pub fn executor(&self) -> &E {
        &self.executor
    }

    /// The executor, mutably.
    pub fn executor_mut(&mut self) -> &mut E {
        &mut self.executor
    }

    /// The driver.
    pub fn driver(&self) -> &D {
        &self.driver
    }

    /// The driver, mutably (control ioctls such as FLUSH_CACHE).
    pub fn driver_mut(&mut self) -> &mut D {
        &mut self.driver
    }

    /// Stops asking the kernel for new subcommands; commands already
    /// received keep executing and their replies keep going out.
    pub fn begin_shutdown(&mut self) {
        self.drain.begin();
    }

    /// True when nothing is in the executor, nothing waits, and every reply
    /// has been consumed by the kernel (faulted: when the executor is
    /// empty).
    pub fn is_drained(&self) -> bool {
        Drain::drained(self.executor.in_flight(), self.fault.is_some(), || {
            self.free.len() == self.slots.len()
                && self.held.is_empty()
                && self.tm_used == 0
                && self.replies.len() == 0
        })
    }
}

impl<D: ScstDriver, E: CommandExecutor> Drop for ScstDevice<D, E> {
    fn drop(&mut self) {
        // SAFETY: the driver is dropped exactly once, here, and not used
        // afterwards.
        unsafe { ManuallyDrop::drop(&mut self.driver) };
        if self.executor.in_flight() == 0 {
            // SAFETY: the pool and the oversize buffers are dropped exactly
            // once, here, and not used afterwards (the device is being
            // dropped).
            unsafe {
                ManuallyDrop::drop(&mut self.pool);
                ManuallyDrop::drop(&mut self.oversize);
            }
        }
        // Otherwise the executor (or a bdev behind it) may still access
        // pool buffers: leave the mapping in place.
    }
}

impl<D: ScstDriver, E: CommandExecutor + Send> Poller for ScstDevice<D, E> {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn poll(&mut self) -> usize {
        ScstDevice::poll(self)
    }

    fn wait_fds(&self) -> Vec<RawFd> {
        self.driver.wait_fd().into_iter().collect()
    }

    fn begin_shutdown(&mut self) {
        ScstDevice::begin_shutdown(self);
    }

    fn is_drained(&self) -> bool {
        ScstDevice::is_drained(self)
    }
}
