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
//!    [`DeviceConfig::reply_batch`] non-urgent replies are queued and
//!    [`DeviceConfig::max_hold`] has not passed: see [`ScstDevice::poll`]).
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
//!   against [`DeviceConfig::unit`]; the reply gives the data direction,
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
//!   pool is exhausted, which the kernel answers with BUSY.
//! - **EXEC**: the data buffer is `pbuf` (a buffer given at ALLOC_MEM or an
//!   earlier EXEC and cached by the kernel), looked up in the pool by
//!   address: an address the pool did not hand out fails the command with
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
//! - **Coalescing**: at a deep queue most replies are EXEC completions that
//!   nothing waits for but the initiator; holding them until
//!   [`DeviceConfig::reply_batch`] are queued (while other commands still
//!   execute) turns one ioctl per poll into one per batch. In the
//!   simulator at queue depth 128 with completions trickling in 8 at a time
//!   this is 0.031 ioctls per I/O instead of 0.25. Replies that a command
//!   or the kernel waits on (PARSE, ALLOC_MEM, sessions, task management)
//!   are never held, and nothing is held when no command executes.
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
//! EXCEPTION without [`DeviceConfig::unit`]. `d_sense` selects the sense
//! format of the errors the device itself reports. The other options
//! (tst, queue_alg, qerr, tas, swp) are SCST core behaviour.
//!
//! # Hot path
//! No allocation (slots, the reply queue and its sense storage, the held
//! queue, the wait table and the REPLY_AND_GET_MULTI buffer are allocated in
//! `new`; only ATTACH_SESS, a control operation, may grow the session
//! table), no lock, and no syscall except the one ioctl per poll.

use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bdev::IoVec;
use nix::errno::Errno;
use reactor::{clock, Poller};

use super::abi::*;
use super::driver::{MultiBuf, ScstDriver};
use super::pool::BufferPool;
use crate::exec::{status, CommandExecutor, Response, SENSE_BUFFER_SIZE};
use crate::latency::{LatencyRecorder, SharedLatency};
use crate::scsi::{cdb, Command, ScsiError, SenseFormat, UnitInfo};

/// Largest `budget` accepted.
pub const MAX_BUDGET: usize = 4096;
/// Most task slots a device uses (more executor tasks are left unused).
pub const MAX_SLOTS: usize = 16384;
/// Most TASK_MGMT_DONEs waiting for their commands at once; more wait in
/// the held queue.
pub const MAX_TM_WAITS: usize = 64;

/// Errors of [`ScstDevice::new`].
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A [`DeviceConfig`] value is out of range; the message names it.
    #[error("invalid SCST device configuration: {0}")]
    InvalidConfig(String),
    /// SCST_USER_GET_OPTIONS failed (is the device registered?).
    #[error("SCST_USER_GET_OPTIONS failed: {0} (the device must be registered first)")]
    GetOptions(Errno),
    /// The registered options ask for something the device does not do.
    #[error("unsupported scst_user options: {0}")]
    UnsupportedOptions(String),
    /// The executor has no task slots.
    #[error("the command executor has no task slots")]
    NoTaskSlots,
}

/// Device settings.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Poller name (statistics, logs), e.g. `scst:disk0`. Default `scst`.
    pub name: String,
    /// Most new subcommands asked for per ioctl (the REPLY_AND_GET_MULTI
    /// buffer's capacity), and most executor completions collected per
    /// poll. 1..=[`MAX_BUDGET`]. Default 128.
    pub budget: usize,
    /// Task slots used, at most the executor's `max_tasks` and
    /// [`MAX_SLOTS`]; 0 = as many as the executor has. Default 0.
    pub max_tasks: u32,
    /// The logical unit's description, used to answer PARSE (required when
    /// the registered parse type is CALL or EXCEPTION) and to check that the
    /// pool's largest buffer covers the unit's maximum transfer. Pass the
    /// executor's (`Lun::unit().clone()`). Default `None`.
    pub unit: Option<UnitInfo>,
    /// Reply coalescing: while commands are executing, replies that need
    /// no prompt answer (EXEC completions, ON_FREE_CMD, ON_CACHED_MEM_FREE)
    /// are held until this many are queued, and the device does not ask
    /// for new subcommands after a call that found none, so that one ioctl
    /// carries many replies. See [`ScstDevice::poll`] for when an exchange
    /// happens at once. Default 32; 1 exchanges at every poll that has a
    /// reply.
    pub reply_batch: usize,
    /// Longest time since the last exchange before the next one happens
    /// anyway (a held reply goes out, or the device looks for new
    /// subcommands). Default 20 µs.
    pub max_hold: Duration,
    /// Record each command's latency (EXEC received to response collected)
    /// for statistics ([`ScstDevice::latency`]). Default true.
    pub track_latency: bool,
    /// Idle polling interval: with no reply to send and no command
    /// executing, a call that found nothing is followed by the next one only
    /// after this long (a call that found something is followed at once).
    /// Every call is a system call, so this bounds the syscall rate of an
    /// idle busy-polled device; a command arriving while idle waits at most
    /// this long. Default 5 µs; 0 asks at every poll.
    pub idle_poll_interval: Duration,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            name: "scst".to_owned(),
            budget: 128,
            max_tasks: 0,
            unit: None,
            reply_batch: 32,
            max_hold: Duration::from_micros(20),
            track_latency: true,
            idle_poll_interval: Duration::from_micros(5),
        }
    }
}

macro_rules! scst_stats {
    (
        counters { $( $(#[$cdoc:meta])* $counter:ident, )* }
        gauges { $( $(#[$gdoc:meta])* $gauge:ident, )* }
    ) => {
        /// Device counters, readable from any thread. Only the device's
        /// thread writes them, once per poll (relaxed loads and stores).
        #[derive(Debug, Default)]
        pub struct ScstStats {
            $( $counter: AtomicU64, )*
            $( $gauge: AtomicU64, )*
        }

        /// A copy of [`ScstStats`]. Counters are totals since the device
        /// was created; gauges are values as of the last poll.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct ScstStatsSnapshot {
            $( $(#[$cdoc])* pub $counter: u64, )*
            $( $(#[$gdoc])* pub $gauge: u64, )*
        }

        impl ScstStats {
            /// Reads every value (relaxed; not an atomic snapshot of all).
            pub fn snapshot(&self) -> ScstStatsSnapshot {
                ScstStatsSnapshot {
                    $( $counter: self.$counter.load(Ordering::Relaxed), )*
                    $( $gauge: self.$gauge.load(Ordering::Relaxed), )*
                }
            }

            /// Adds a poll's counters and stores its gauges.
            fn publish(&self, c: &ScstStatsSnapshot) {
                $(
                    if c.$counter != 0 {
                        let a = &self.$counter;
                        a.store(a.load(Ordering::Relaxed) + c.$counter, Ordering::Relaxed);
                    }
                )*
                $( self.$gauge.store(c.$gauge, Ordering::Relaxed); )*
            }
        }
    };
}

scst_stats! {
    counters {
        /// Polls that did any work.
        polls_with_work,
        /// REPLY_AND_GET_MULTI calls.
        ioctls,
        /// Calls that returned EAGAIN (nothing new; replies consumed).
        eagain,
        /// Calls that failed otherwise (replies kept and resent, except a
        /// refused one).
        ioctl_errors,
        /// Replies the kernel consumed.
        replies_sent,
        /// Replies the kernel refused (dropped, not resent).
        reply_failures,
        /// Subcommands received, all kinds.
        subcommands,
        /// ATTACH_SESS received.
        attach_sess,
        /// DETACH_SESS received.
        detach_sess,
        /// PARSE received.
        parse,
        /// PARSE answered with CHECK CONDITION.
        parse_errors,
        /// ALLOC_MEM received.
        alloc_mem,
        /// EXEC received.
        exec,
        /// ON_FREE_CMD received.
        on_free_cmd,
        /// ON_CACHED_MEM_FREE received.
        on_cached_mem_free,
        /// TASK_MGMT_RECEIVED received.
        tm_received,
        /// TASK_MGMT_DONE received.
        tm_done,
        /// EXT_COPY_REMAP received.
        ext_copy_remap,
        /// Subcommands of unknown subcode.
        unknown_subcodes,
        /// EXEC replies queued (executed or failed directly).
        commands_completed,
        /// `bufflen` of the EXECs received.
        data_bytes,
        /// `resp_data_len` of the EXEC replies.
        data_in_bytes,
        /// BUSY answers because the pool was exhausted (ALLOC_MEM with
        /// `pbuf` 0, or EXEC status BUSY).
        busy,
        /// EXECs failed because their `pbuf` was not a pool buffer.
        bad_pbufs,
        /// ON_FREE_CMD / ON_CACHED_MEM_FREE naming an address the pool did
        /// not hand out (or already free).
        bad_frees,
        /// EXECs that waited for a free slot.
        held,
        /// `executor.abort` calls for task management.
        aborts,
    }
    gauges {
        /// Sessions attached.
        sessions,
        /// Subcommands received and not yet answered (executing, waiting,
        /// or with a reply not yet consumed).
        outstanding,
        /// Commands in the executor.
        executing,
        /// Bytes of pool buffers handed out (in flight or cached by the
        /// kernel).
        pool_bytes_in_use,
        /// Pool buffers handed out.
        pool_buffers_in_use,
        /// Pool allocations that failed (total).
        pool_failed_allocs,
    }
}

/// An attached session (one I_T nexus's view of this device).
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Which commands a task management function affects: `tm` against a
/// command of session `sess_h` with handle `cmd_h`. See the module docs.
pub fn tm_affects(tm: &ScstUserTm, sess_h: u64, cmd_h: u32) -> bool {
    match tm.fn_ {
        SCST_ABORT_TASK => sess_h == tm.sess_h && cmd_h == tm.cmd_h_to_abort,
        SCST_ABORT_TASK_SET
        | SCST_CLEAR_TASK_SET
        | SCST_NEXUS_LOSS_SESS
        | SCST_ABORT_ALL_TASKS_SESS
        | SCST_UNREG_SESS_TM => sess_h == tm.sess_h,
        SCST_LUN_RESET | SCST_TARGET_RESET | SCST_NEXUS_LOSS | SCST_ABORT_ALL_TASKS
        | SCST_PR_ABORT_ALL => true,
        _ => false,
    }
}

/// Storage for the data a reply points to (sense, remap descriptor); one
/// per reply position, so it stays valid until the ioctl carrying the reply
/// returns.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct ReplyPayload([u8; SENSE_BUFFER_SIZE]);

const _: () = assert!(SENSE_BUFFER_SIZE >= std::mem::size_of::<ScstUserExtCopyDataDescr>());

/// The replies queued for the next exchange.
struct ReplyQueue {
    list: Vec<ScstUserReplyCmd>,
    payload: Box<[ReplyPayload]>,
    /// A queued reply lets a command (or the kernel) make progress only
    /// when it arrives: PARSE, ALLOC_MEM, sessions, task management.
    urgent: bool,
}

impl ReplyQueue {
    fn new(capacity: usize) -> Self {
        Self {
            list: Vec::with_capacity(capacity),
            payload: vec![ReplyPayload([0; SENSE_BUFFER_SIZE]); capacity].into_boxed_slice(),
            urgent: false,
        }
    }

    fn push(&mut self, reply: ScstUserReplyCmd) {
        if !matches!(
            reply.subcode,
            subcode::EXEC | subcode::ON_FREE_CMD | subcode::ON_CACHED_MEM_FREE
        ) {
            self.urgent = true;
        }
        self.list.push(reply);
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    /// Copies `bytes` into the payload storage of the next reply; returns
    /// its address and the length stored.
    fn stage_payload(&mut self, bytes: &[u8]) -> (u64, usize) {
        let Some(store) = self.payload.get_mut(self.list.len()) else {
            return (0, 0); // beyond the preallocated capacity: no payload
        };
        let len = bytes.len().min(SENSE_BUFFER_SIZE);
        store.0[..len].copy_from_slice(&bytes[..len]);
        (store.0.as_ptr() as u64, len)
    }

    /// Stages `sense` as a reply's sense (`None` when empty or out of
    /// payload room: the status goes without sense then).
    fn stage_sense(&mut self, sense: &[u8]) -> Option<ReplySense> {
        if sense.is_empty() {
            return None;
        }
        let (psense_buffer, len) = self.stage_payload(sense);
        (len > 0).then(|| ReplySense {
            sense_len: len as u8,
            psense_buffer,
            ..Default::default()
        })
    }

    fn push_result(&mut self, cmd_h: u32, subcode: u32, result: i32) {
        let mut reply = ScstUserReplyCmd {
            cmd_h,
            subcode,
            ..Default::default()
        };
        reply.set_result(&result);
        self.push(reply);
    }

    fn push_alloc(&mut self, cmd_h: u32, pbuf: u64) {
        let mut reply = ScstUserReplyCmd {
            cmd_h,
            subcode: subcode::ALLOC_MEM,
            ..Default::default()
        };
        reply.set_alloc_reply(&ScstUserScsiCmdReplyAllocMem { pbuf });
        self.push(reply);
    }

    fn push_exec(&mut self, cmd_h: u32, resp_data_len: i32, pbuf: u64, status: u8, sense: &[u8]) {
        let mut exec = ScstUserScsiCmdReplyExec {
            resp_data_len,
            pbuf,
            reply_type: SCST_EXEC_REPLY_COMPLETED,
            status,
            ..Default::default()
        };
        if let Some(sense) = self.stage_sense(sense) {
            exec.set_sense(&sense);
        }
        let mut reply = ScstUserReplyCmd {
            cmd_h,
            subcode: subcode::EXEC,
            ..Default::default()
        };
        reply.set_exec_reply(&exec);
        self.push(reply);
    }

    fn push_parse_ok(&mut self, cmd_h: u32, result: &ParseResult) {
        let mut parse = ScstUserScsiCmdReplyParse::default();
        parse.set_result(result);
        let mut reply = ScstUserReplyCmd {
            cmd_h,
            subcode: subcode::PARSE,
            ..Default::default()
        };
        reply.set_parse_reply(&parse);
        self.push(reply);
    }

    fn push_parse_error(&mut self, cmd_h: u32, response: &Response) {
        let mut parse = ScstUserScsiCmdReplyParse {
            status: response.status,
            ..Default::default()
        };
        if let Some(sense) = self.stage_sense(response.sense_bytes()) {
            parse.set_sense(&sense);
        }
        let mut reply = ScstUserReplyCmd {
            cmd_h,
            subcode: subcode::PARSE,
            ..Default::default()
        };
        reply.set_parse_reply(&parse);
        self.push(reply);
    }

    fn push_identity_remap(&mut self, cmd_h: u32, descr: &ScstUserExtCopyDataDescr) {
        // The descriptor as the kernel lays it out: src_lba, dst_lba,
        // data_len, 4 bytes of padding.
        let mut bytes = [0u8; std::mem::size_of::<ScstUserExtCopyDataDescr>()];
        bytes[0..8].copy_from_slice(&descr.src_lba.to_ne_bytes());
        bytes[8..16].copy_from_slice(&descr.dst_lba.to_ne_bytes());
        bytes[16..20].copy_from_slice(&descr.data_len.to_ne_bytes());
        let (remap_descriptors, len) = self.stage_payload(&bytes);
        let remap = ScstUserExtCopyReplyRemap {
            remap_descriptors,
            remap_descriptors_len: len as u16,
            ..Default::default()
        };
        let mut reply = ScstUserReplyCmd {
            cmd_h,
            subcode: subcode::EXT_COPY_REMAP,
            ..Default::default()
        };
        reply.set_remap_reply(&remap);
        self.push(reply);
    }

    /// Removes the first `consumed` replies, and the one after them too if
    /// `drop_next`; the rest move to the front, their payload with them.
    fn retire(&mut self, consumed: usize, drop_next: bool) {
        let n = self.list.len();
        let start = (consumed + usize::from(drop_next)).min(n);
        if start == 0 {
            return;
        }
        for from in start..n {
            self.relocate(from, from - start);
        }
        self.list.truncate(n - start);
        self.urgent = self.urgent && !self.list.is_empty();
    }

    /// Moves reply `from` to position `to` (< `from`), with its payload.
    fn relocate(&mut self, from: usize, to: usize) {
        let mut reply = self.list[from];
        if let (Some(&src), true) = (self.payload.get(from), to < self.payload.len()) {
            let old = self.payload[from].0.as_ptr() as u64;
            self.payload[to] = src;
            let new = self.payload[to].0.as_ptr() as u64;
            let fix = |p: &mut u64| {
                if *p == old {
                    *p = new;
                }
            };
            match reply.subcode {
                subcode::EXEC => {
                    let mut exec = reply.exec_reply();
                    if exec.reply_type != SCST_EXEC_REPLY_DO_WRITE_SAME {
                        let mut sense = exec.sense();
                        fix(&mut sense.psense_buffer);
                        exec.set_sense(&sense);
                        reply.set_exec_reply(&exec);
                    }
                }
                subcode::PARSE => {
                    let mut parse = reply.parse_reply();
                    if parse.status != 0 {
                        let mut sense = parse.sense();
                        fix(&mut sense.psense_buffer);
                        parse.set_sense(&sense);
                        reply.set_parse_reply(&parse);
                    }
                }
                subcode::EXT_COPY_REMAP => {
                    let mut remap = reply.remap_reply();
                    fix(&mut remap.remap_descriptors);
                    fix(&mut remap.psense_buffer);
                    reply.set_remap_reply(&remap);
                }
                _ => {}
            }
        }
        self.list[to] = reply;
    }
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
    /// Dropped (the fd closed) before the pool is unmapped: until then the
    /// kernel may still own pool buffers.
    driver: ManuallyDrop<D>,
    config: DeviceConfig,
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
    shutting_down: bool,
    fault: Option<Errno>,
    /// Clock ticks at the last exchange.
    last_exchange: u64,
    /// The last exchange filled the command buffer: more may be waiting.
    last_filled: bool,
    /// The last exchange returned at least one subcommand.
    last_got: bool,
    /// `config.idle_poll_interval` in clock ticks.
    idle_poll_ticks: u64,
    /// `config.max_hold` in clock ticks.
    max_hold_ticks: u64,
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
        config: DeviceConfig,
    ) -> Result<Self, DeviceError> {
        if config.budget == 0 || config.budget > MAX_BUDGET {
            return Err(DeviceError::InvalidConfig(format!(
                "budget {} must be 1..={MAX_BUDGET}",
                config.budget
            )));
        }
        if config.reply_batch == 0 {
            return Err(DeviceError::InvalidConfig(
                "reply_batch must be at least 1".to_owned(),
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
            shutting_down: false,
            fault: None,
            last_exchange: 0,
            last_filled: false,
            last_got: false,
            idle_poll_ticks: clock::ns_to_ticks(
                u64::try_from(config.idle_poll_interval.as_nanos()).unwrap_or(u64::MAX),
            ),
            max_hold_ticks: clock::ns_to_ticks(
                u64::try_from(config.max_hold.as_nanos()).unwrap_or(u64::MAX),
            ),
            stats: Arc::new(ScstStats::default()),
            latency: config.track_latency.then(LatencyRecorder::new),
            config,
        })
    }

    /// One poll: collect, retry held work, exchange, handle. Returns the
    /// work done (completions, subcommands received and held work started;
    /// responses drained while faulted).
    ///
    /// The exchange (the ioctl) happens when there is a reply to send or a
    /// subcommand may be asked for, and at least one of:
    /// - an urgent reply is queued (PARSE, ALLOC_MEM, sessions, task
    ///   management: a command or the kernel waits for it);
    /// - [`DeviceConfig::reply_batch`] replies are queued;
    /// - no command is executing and a reply is queued, or the last call
    ///   found work (answer and look for more at once, so a lone command is
    ///   never delayed), or [`DeviceConfig::idle_poll_interval`] has passed
    ///   (an idle device asks for work at that rate, not at every poll);
    /// - the device is shutting down;
    /// - the last exchange filled the command buffer (more may be waiting);
    /// - [`DeviceConfig::max_hold`] has passed since the last exchange.
    ///
    /// So while commands execute, completions collect into batches and the
    /// device does not spin on EAGAIN.
    pub fn poll(&mut self) -> usize {
        if self.fault.is_some() {
            return self.drain_faulted();
        }
        let mut c = ScstStatsSnapshot::default();
        let mut work = self.collect(&mut c);
        work += self.run_held(&mut c);
        let room = self.limit.saturating_sub(self.outstanding);
        let want = if self.shutting_down {
            0
        } else {
            room.min(self.multi.capacity())
        };
        let got = if self.exchange_due(want) {
            self.exchange(want, &mut c)
        } else {
            0
        };
        if got > 0 {
            let now = if self.latency.is_some() {
                clock::now()
            } else {
                0
            };
            for i in 0..got {
                self.handle(i, now, &mut c);
            }
            work += got;
        }
        self.executor.flush();
        if work > 0 {
            c.polls_with_work = 1;
        }
        self.publish(&mut c);
        work
    }

    /// Whether this poll calls the driver (see [`ScstDevice::poll`]).
    fn exchange_due(&self, want: usize) -> bool {
        let queued = self.replies.len();
        if queued == 0 && want == 0 {
            return false;
        }
        if self.replies.urgent
            || queued >= self.config.reply_batch
            || self.shutting_down
            || self.last_filled
        {
            return true;
        }
        let since = clock::now().wrapping_sub(self.last_exchange);
        if self.executor.in_flight() == 0 {
            // Nothing to wait for: answer what is queued at once; with
            // nothing to answer, look for work at once after a call that
            // found some, else once per idle polling interval.
            return queued > 0 || self.last_got || since >= self.idle_poll_ticks;
        }
        since >= self.max_hold_ticks
    }

    /// Moves finished commands from the executor into the reply queue.
    fn collect(&mut self, c: &mut ScstStatsSnapshot) -> usize {
        if self.executor.in_flight() == 0 {
            return 0;
        }
        let slots = &mut self.slots;
        let done = &mut self.done;
        let n = self
            .executor
            .poll(self.config.budget, &mut |slot, response: &Response| {
                if let Some(s) = slots.get_mut(slot as usize) {
                    if s.state == SlotState::Executing {
                        s.response = *response;
                        s.state = SlotState::Done;
                        done.push(slot);
                    }
                }
            });
        if self.done.is_empty() {
            return n;
        }
        let now = if self.latency.is_some() {
            clock::now()
        } else {
            0
        };
        for k in 0..self.done.len() {
            let slot = self.done[k];
            self.complete(slot, now, c);
        }
        self.done.clear();
        if let Some(latency) = self.latency.as_mut() {
            latency.maybe_flush(now);
        }
        n
    }

    /// Queues the EXEC reply of a finished command, frees its slot and
    /// releases the TASK_MGMT_DONEs that waited only for it.
    fn complete(&mut self, slot: u32, now: u64, c: &mut ScstStatsSnapshot) {
        let s = &mut self.slots[slot as usize];
        let response = s.response;
        let resp_len = if s.data_direction == SCST_DATA_READ {
            response.data_in_len.min(s.bufflen)
        } else {
            0
        };
        let mut pbuf = 0;
        if s.exec_pbuf != 0 {
            if resp_len > 0 {
                pbuf = s.exec_pbuf;
            } else {
                // The kernel ignores pbuf without data: the buffer is ours.
                self.pool.free(s.exec_pbuf);
            }
        }
        self.replies.push_exec(
            s.cmd_h,
            resp_len as i32,
            pbuf,
            response.status,
            response.sense_bytes(),
        );
        c.commands_completed += 1;
        c.data_in_bytes += u64::from(resp_len);
        if let Some(latency) = self.latency.as_mut() {
            latency.record(now.wrapping_sub(s.received_at));
        }
        let mut waiters = s.tm_waiters;
        s.state = SlotState::Free;
        s.tm_waiters = 0;
        s.aborted = false;
        s.exec_pbuf = 0;
        self.free.push(slot);
        while waiters != 0 {
            let bit = waiters.trailing_zeros() as usize;
            waiters &= waiters - 1;
            let wait = &mut self.tm_waits[bit];
            wait.remaining -= 1;
            if wait.remaining == 0 {
                self.replies.push_result(
                    wait.cmd_h,
                    subcode::TASK_MGMT_DONE,
                    SCST_MGMT_STATUS_SUCCESS,
                );
                self.tm_used &= !(1u64 << bit);
            }
        }
    }

    /// Starts held work, in order, while its resource is free.
    fn run_held(&mut self, c: &mut ScstStatsSnapshot) -> usize {
        let mut started = 0;
        while let Some(front) = self.held.front() {
            match front {
                Held::Exec { .. } if self.free.is_empty() => break,
                Held::TmDone { .. } if self.tm_used == u64::MAX => break,
                _ => {}
            }
            match self.held.pop_front() {
                Some(Held::Exec {
                    cmd_h,
                    exec,
                    received_at,
                }) => self.start_exec(cmd_h, &exec, received_at, c),
                Some(Held::TmDone { cmd_h, tm }) => self.task_mgmt(cmd_h, &tm, true, c),
                None => break,
            }
            started += 1;
        }
        started
    }

    /// The one REPLY_AND_GET_MULTI of the poll. Returns the number of new
    /// subcommands in `self.multi`.
    fn exchange(&mut self, want: usize, c: &mut ScstStatsSnapshot) -> usize {
        let sent = self.replies.len();
        if sent == 0 && want == 0 {
            return 0;
        }
        let header = self.multi.header_mut();
        header.preplies = if sent > 0 {
            self.replies.list.as_ptr() as u64
        } else {
            0
        };
        header.replies_cnt = sent as i16;
        header.replies_done = 0;
        header.cmds_cnt = want as i16;
        let result = self
            .driver
            .reply_and_get_multi(&mut self.multi, &self.replies.list);
        c.ioctls += 1;
        self.last_exchange = clock::now();
        let header = *self.multi.header();
        let consumed = usize::try_from(header.replies_done).unwrap_or(0).min(sent);
        let mut got = 0;
        let mut refused = false;
        match result {
            Ok(()) => {
                got = usize::try_from(header.cmds_cnt).unwrap_or(0).min(want);
            }
            Err(Errno::EAGAIN) => c.eagain += 1,
            Err(Errno::ESRCH | Errno::EINVAL | Errno::EFAULT) if consumed < sent => {
                refused = true;
                c.reply_failures += 1;
            }
            Err(e) => {
                c.ioctl_errors += 1;
                if matches!(
                    e,
                    Errno::ENODEV | Errno::EBADF | Errno::ENOTTY | Errno::ENXIO
                ) {
                    self.fault = Some(e);
                }
            }
        }
        c.replies_sent += consumed as u64;
        let retired = consumed + usize::from(refused);
        self.outstanding -= retired;
        self.replies.retire(consumed, refused);
        if self.fault.is_some() {
            self.outstanding -= self.replies.len();
            self.replies.list.clear();
            self.replies.urgent = false;
            return 0;
        }
        self.outstanding += got;
        self.last_filled = want > 0 && got == want;
        self.last_got = got > 0;
        got
    }

    /// Handles subcommand `i` of the last exchange.
    fn handle(&mut self, i: usize, now: u64, c: &mut ScstStatsSnapshot) {
        let cmd = &self.multi.cmds()[i];
        let (cmd_h, code) = (cmd.cmd_h, cmd.subcode);
        c.subcommands += 1;
        match code {
            subcode::EXEC => {
                let exec = self.multi.cmds()[i].exec_cmd();
                c.exec += 1;
                c.data_bytes += u64::try_from(exec.bufflen).unwrap_or(0);
                if self.free.is_empty() || !self.held.is_empty() {
                    c.held += 1;
                    self.held.push_back(Held::Exec {
                        cmd_h,
                        exec,
                        received_at: now,
                    });
                } else {
                    self.start_exec(cmd_h, &exec, now, c);
                }
            }
            subcode::ALLOC_MEM => {
                let alloc = self.multi.cmds()[i].alloc_cmd();
                c.alloc_mem += 1;
                let buf = usize::try_from(alloc.alloc_len)
                    .ok()
                    .and_then(|len| self.pool.alloc(len));
                if buf.is_none() {
                    c.busy += 1;
                }
                self.replies.push_alloc(cmd_h, buf.map_or(0, |b| b.pbuf));
            }
            subcode::ON_FREE_CMD => {
                let on_free = self.multi.cmds()[i].on_free_cmd();
                c.on_free_cmd += 1;
                if on_free.buffer_cached == 0 && on_free.pbuf != 0 && !self.pool.free(on_free.pbuf)
                {
                    c.bad_frees += 1;
                }
                self.replies.push_result(cmd_h, code, 0);
            }
            subcode::ON_CACHED_MEM_FREE => {
                let pbuf = self.multi.cmds()[i].on_cached_mem_free().pbuf;
                c.on_cached_mem_free += 1;
                if !self.pool.free(pbuf) {
                    c.bad_frees += 1;
                }
                self.replies.push_result(cmd_h, code, 0);
            }
            subcode::PARSE => {
                let parse = self.multi.cmds()[i].parse_cmd();
                c.parse += 1;
                match self.parse(&parse) {
                    Ok(result) => self.replies.push_parse_ok(cmd_h, &result),
                    Err(response) => {
                        c.parse_errors += 1;
                        self.replies.push_parse_error(cmd_h, &response);
                    }
                }
            }
            subcode::TASK_MGMT_RECEIVED | subcode::TASK_MGMT_DONE => {
                let tm = self.multi.cmds()[i].tm_cmd();
                let done = code == subcode::TASK_MGMT_DONE;
                if done {
                    c.tm_done += 1;
                } else {
                    c.tm_received += 1;
                }
                self.task_mgmt(cmd_h, &tm, done, c);
            }
            subcode::ATTACH_SESS => {
                let sess = self.multi.cmds()[i].sess();
                c.attach_sess += 1;
                self.sessions.retain(|s| s.sess_h != sess.sess_h);
                self.sessions.push(Session {
                    sess_h: sess.sess_h,
                    lun: sess.lun,
                    rd_only: sess.rd_only != 0,
                    initiator_name: c_string(&sess.initiator_name),
                    target_name: c_string(&sess.target_name),
                });
                self.replies.push_result(cmd_h, code, 0);
            }
            subcode::DETACH_SESS => {
                let sess_h = self.multi.cmds()[i].sess().sess_h;
                c.detach_sess += 1;
                self.sessions.retain(|s| s.sess_h != sess_h);
                self.replies.push_result(cmd_h, code, 0);
            }
            subcode::EXT_COPY_REMAP => {
                let remap = self.multi.cmds()[i].remap_cmd();
                c.ext_copy_remap += 1;
                self.replies.push_identity_remap(cmd_h, &remap.data_descr);
            }
            _ => {
                c.unknown_subcodes += 1;
                self.replies.push_result(cmd_h, code, -libc::EINVAL);
            }
        }
    }

    /// Answers an EXEC at once (without the executor).
    fn fail_exec(&mut self, cmd_h: u32, response: &Response, c: &mut ScstStatsSnapshot) {
        self.replies
            .push_exec(cmd_h, 0, 0, response.status, response.sense_bytes());
        c.commands_completed += 1;
    }

    /// Finds the EXEC's buffer and submits it into a free slot (the caller
    /// checked there is one), or answers it at once.
    fn start_exec(
        &mut self,
        cmd_h: u32,
        exec: &ScstUserScsiCmdExec,
        received_at: u64,
        c: &mut ScstStatsSnapshot,
    ) {
        let format = self.sense_format;
        let cdb_len = usize::from(exec.cdb_len);
        if cdb_len == 0 || cdb_len > SCST_MAX_CDB_SIZE {
            // Extended CDBs (GET_EXTENDED_CDB) are not supported.
            let response = ScsiError::InvalidCommandOperationCode.to_response(format);
            return self.fail_exec(cmd_h, &response, c);
        }
        let cdb_bytes = &exec.cdb[..cdb_len];
        let (Ok(bufflen), Ok(alloc_len)) =
            (u32::try_from(exec.bufflen), usize::try_from(exec.alloc_len))
        else {
            let response = ScsiError::InternalTargetFailure.to_response(format);
            return self.fail_exec(cmd_h, &response, c);
        };
        let mut exec_pbuf = 0;
        let iov: Option<IoVec> = if exec.data_direction == SCST_DATA_NONE || bufflen == 0 {
            None
        } else if exec.pbuf != 0 {
            match self.pool.iovec(exec.pbuf, bufflen as usize) {
                Some(iov) => Some(iov),
                None => {
                    c.bad_pbufs += 1;
                    let response = ScsiError::InternalTargetFailure.to_response(format);
                    return self.fail_exec(cmd_h, &response, c);
                }
            }
        } else if exec.data_direction & SCST_DATA_READ != 0 {
            let len = alloc_len.max(bufflen as usize);
            match self.pool.alloc(len) {
                Some(buf) => {
                    exec_pbuf = buf.pbuf;
                    self.pool.iovec(buf.pbuf, bufflen as usize)
                }
                None if self.pool.class_size(len).is_none() => {
                    let field = cdb::transfer_length_field(cdb_bytes[0]);
                    let response = ScsiError::InvalidFieldInCdb(field).to_response(format);
                    return self.fail_exec(cmd_h, &response, c);
                }
                None => {
                    c.busy += 1;
                    return self.fail_exec(cmd_h, &Response::with_status(status::BUSY), c);
                }
            }
        } else {
            // Data-out without a buffer: the kernel never does this.
            c.bad_pbufs += 1;
            let response = ScsiError::InternalTargetFailure.to_response(format);
            return self.fail_exec(cmd_h, &response, c);
        };
        let Some(slot) = self.free.pop() else {
            // Callers check for a free slot; never happens.
            if exec_pbuf != 0 {
                self.pool.free(exec_pbuf);
            }
            return self.fail_exec(cmd_h, &Response::with_status(status::BUSY), c);
        };
        let s = &mut self.slots[slot as usize];
        s.state = SlotState::Executing;
        s.cmd_h = cmd_h;
        s.sess_h = exec.sess_h;
        s.data_direction = exec.data_direction;
        s.bufflen = bufflen;
        s.exec_pbuf = exec_pbuf;
        s.received_at = received_at;
        s.tm_waiters = 0;
        s.aborted = false;
        let iovs = match &iov {
            Some(iov) => std::slice::from_ref(iov),
            None => &[],
        };
        // SAFETY: the iovec (if any) lies inside a buffer the pool handed
        // out, in the pool's mapping, which stays mapped while commands are
        // in the executor (`Drop` leaks it if some still are). The buffer
        // stays allocated until the command's reply is queued: a buffer
        // allocated here is freed only in `complete`, and a kernel-supplied
        // one (ALLOC_MEM or cached) only on ON_FREE_CMD / ON_CACHED_MEM_FREE,
        // which the kernel sends only after it has the EXEC reply (commands
        // sent to user space are never completed behind the handler's back).
        // The device itself never touches buffer contents. A misbehaving
        // kernel could at worst get a buffer reused for two commands,
        // garbling data the executor accesses through raw pointers, never
        // memory outside the live mapping.
        unsafe { self.executor.submit(slot, cdb_bytes, iovs) };
    }

    /// TASK_MGMT_RECEIVED (`done` false) or TASK_MGMT_DONE (`done` true).
    fn task_mgmt(&mut self, cmd_h: u32, tm: &ScstUserTm, done: bool, c: &mut ScstStatsSnapshot) {
        let code = if done {
            subcode::TASK_MGMT_DONE
        } else {
            subcode::TASK_MGMT_RECEIVED
        };
        // EXECs still waiting for a slot never run.
        let mut i = 0;
        while i < self.held.len() {
            let aborted = match &self.held[i] {
                Held::Exec { cmd_h, exec, .. } => tm_affects(tm, exec.sess_h, *cmd_h),
                Held::TmDone { .. } => false,
            };
            if aborted {
                if let Some(Held::Exec { cmd_h, .. }) = self.held.remove(i) {
                    let response = Response::with_status(status::TASK_ABORTED);
                    self.fail_exec(cmd_h, &response, c);
                }
            } else {
                i += 1;
            }
        }
        let mut affected = 0u32;
        for (slot, s) in self.slots.iter_mut().enumerate() {
            if s.state == SlotState::Executing && tm_affects(tm, s.sess_h, s.cmd_h) {
                affected += 1;
                if !s.aborted {
                    s.aborted = true;
                    self.executor.abort(slot as u32);
                    c.aborts += 1;
                }
            }
        }
        if !done || affected == 0 {
            self.replies
                .push_result(cmd_h, code, SCST_MGMT_STATUS_SUCCESS);
            return;
        }
        if self.tm_used == u64::MAX {
            self.held.push_back(Held::TmDone { cmd_h, tm: *tm });
            return;
        }
        let bit = (!self.tm_used).trailing_zeros() as usize;
        self.tm_used |= 1u64 << bit;
        self.tm_waits[bit] = TmWait {
            cmd_h,
            remaining: affected,
        };
        for s in self.slots.iter_mut() {
            if s.state == SlotState::Executing && tm_affects(tm, s.sess_h, s.cmd_h) {
                s.tm_waiters |= 1u64 << bit;
            }
        }
    }

    /// The PARSE reply for `p`, or the error response.
    fn parse(&self, p: &ScstUserScsiCmdParse) -> Result<ParseResult, Response> {
        let format = self.sense_format;
        let core_local = p.op_flags & SCST_INFO_VALID != 0 && p.op_flags & SCST_LOCAL_CMD != 0;
        let passthrough = ParseResult {
            queue_type: p.queue_type,
            data_direction: p.data_direction,
            cdb_len: p.cdb_len,
            lba: p.lba,
            data_len: p.data_len,
            bufflen: p.bufflen,
            op_flags: p.op_flags,
            out_bufflen: p.out_bufflen,
            ..Default::default()
        };
        let len = usize::from(p.cdb_len);
        let decoded = match &self.config.unit {
            Some(unit) if (1..=SCST_MAX_CDB_SIZE).contains(&len) => {
                cdb::decode(&p.cdb[..len], unit).map(|command| (command, unit))
            }
            _ => Err(ScsiError::InvalidCommandOperationCode),
        };
        match decoded {
            Ok((command, unit)) => {
                parse_result(&command, unit, p).map_err(|e| e.to_response(format))
            }
            Err(_) if core_local => Ok(passthrough),
            Err(e) => Err(e.to_response(format)),
        }
    }

    /// Stores the poll's counters and the gauges.
    fn publish(&mut self, c: &mut ScstStatsSnapshot) {
        c.sessions = self.sessions.len() as u64;
        c.outstanding = self.outstanding as u64;
        c.executing = (self.slots.len() - self.free.len()) as u64;
        c.pool_bytes_in_use = self.pool.bytes_in_use();
        c.pool_buffers_in_use = self.pool.buffers_in_use();
        c.pool_failed_allocs = self.pool.failed_allocs();
        self.stats.publish(c);
    }

    /// Faulted: drain the executor so its memory use ends; nothing goes to
    /// the kernel any more.
    fn drain_faulted(&mut self) -> usize {
        let slots = &mut self.slots;
        let done = &mut self.done;
        let n = self
            .executor
            .poll(self.config.budget, &mut |slot, _response: &Response| {
                if let Some(s) = slots.get_mut(slot as usize) {
                    if s.state == SlotState::Executing {
                        s.state = SlotState::Done;
                        done.push(slot);
                    }
                }
            });
        for k in 0..self.done.len() {
            let s = &mut self.slots[self.done[k] as usize];
            if s.exec_pbuf != 0 {
                self.pool.free(s.exec_pbuf);
                s.exec_pbuf = 0;
            }
            s.state = SlotState::Free;
            s.tm_waiters = 0;
            self.free.push(self.done[k]);
        }
        self.done.clear();
        self.held.clear();
        self.tm_used = 0;
        self.executor.flush();
        n
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

    /// The buffer pool.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
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
        self.shutting_down = true;
    }

    /// True when nothing is in the executor, nothing waits, and every reply
    /// has been consumed by the kernel (faulted: when the executor is
    /// empty).
    pub fn is_drained(&self) -> bool {
        if self.fault.is_some() {
            return self.executor.in_flight() == 0;
        }
        self.executor.in_flight() == 0
            && self.free.len() == self.slots.len()
            && self.held.is_empty()
            && self.tm_used == 0
            && self.replies.len() == 0
    }
}

impl<D: ScstDriver, E: CommandExecutor> Drop for ScstDevice<D, E> {
    fn drop(&mut self) {
        // SAFETY: the driver is dropped exactly once, here, and not used
        // afterwards.
        unsafe { ManuallyDrop::drop(&mut self.driver) };
        if self.executor.in_flight() == 0 {
            // SAFETY: the pool is dropped exactly once, here, and not used
            // afterwards (the device is being dropped).
            unsafe { ManuallyDrop::drop(&mut self.pool) };
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

/// Refuses option combinations the device cannot serve.
fn check_options(options: &ScstUserOpt, have_unit: bool) -> Result<(), DeviceError> {
    let unsupported = |msg: String| Err(DeviceError::UnsupportedOptions(msg));
    if options.partial_transfers_type != SCST_USER_PARTIAL_TRANSFERS_NOT_SUPPORTED {
        return unsupported(format!(
            "partial_transfers_type {} (only NOT_SUPPORTED is implemented)",
            options.partial_transfers_type
        ));
    }
    if options.parse_type > SCST_USER_PARSE_EXCEPTION {
        return unsupported(format!("parse_type {}", options.parse_type));
    }
    if options.memory_reuse_type > SCST_USER_MEM_REUSE_ALL {
        return unsupported(format!("memory_reuse_type {}", options.memory_reuse_type));
    }
    if options.on_free_cmd_type > SCST_USER_ON_FREE_CMD_IGNORE {
        return unsupported(format!("on_free_cmd_type {}", options.on_free_cmd_type));
    }
    if options.on_free_cmd_type == SCST_USER_ON_FREE_CMD_IGNORE
        && options.memory_reuse_type != SCST_USER_MEM_REUSE_ALL
    {
        return unsupported(format!(
            "on_free_cmd_type IGNORE with memory_reuse_type {}: buffers of the directions the \
             kernel does not cache would never be returned (use ON_FREE_CMD CALL, or memory \
             reuse ALL)",
            options.memory_reuse_type
        ));
    }
    if options.parse_type != SCST_USER_PARSE_STANDARD && !have_unit {
        return Err(DeviceError::InvalidConfig(
            "parse type CALL or EXCEPTION needs DeviceConfig::unit to answer PARSE".to_owned(),
        ));
    }
    Ok(())
}

/// The PARSE answer for a decoded command.
fn parse_result(
    command: &Command,
    unit: &UnitInfo,
    p: &ScstUserScsiCmdParse,
) -> Result<ParseResult, ScsiError> {
    let bs = u64::from(unit.block_size);
    let medium = |lba: u64, blocks: u32| Some((lba, u64::from(blocks) * bs));
    // (data-in bytes, (lba, medium bytes) if the command addresses blocks,
    // writes the medium)
    let (data_in, range, writes): (u64, Option<(u64, u64)>, bool) = match *command {
        Command::RequestSense { alloc_len, .. }
        | Command::Inquiry { alloc_len, .. }
        | Command::ModeSense { alloc_len, .. }
        | Command::ReadCapacity16 { alloc_len }
        | Command::ReportSupportedOperationCodes { alloc_len, .. } => {
            (u64::from(alloc_len), None, false)
        }
        Command::ReadCapacity10 => (8, None, false),
        Command::Read { lba, blocks, .. } => (u64::from(blocks) * bs, medium(lba, blocks), false),
        Command::Write { lba, blocks, .. }
        | Command::WriteAndVerify { lba, blocks, .. }
        | Command::WriteSame { lba, blocks, .. }
        | Command::CompareAndWrite { lba, blocks, .. } => (0, medium(lba, blocks), true),
        Command::Verify { lba, blocks, .. } | Command::SynchronizeCache { lba, blocks } => {
            (0, medium(lba, blocks), false)
        }
        Command::Unmap { .. } => (0, None, true),
        Command::TestUnitReady
        | Command::ModeSelect { .. }
        | Command::StartStopUnit { .. }
        | Command::PreventAllowMediumRemoval => (0, None, false),
    };
    let data_out = cdb::data_out_len(command, unit.block_size);
    let (direction, bufflen) = if data_in > 0 {
        (SCST_DATA_READ, data_in)
    } else if data_out > 0 {
        (SCST_DATA_WRITE, data_out)
    } else {
        (SCST_DATA_NONE, 0)
    };
    let bufflen = i32::try_from(bufflen)
        .map_err(|_| ScsiError::InvalidFieldInCdb(cdb::transfer_length_field(p.cdb[0])))?;
    let (lba, data_len) = range.unwrap_or((0, u64::from(bufflen as u32)));
    let mut op_flags = p.op_flags
        & !(SCST_UNKNOWN_LBA | SCST_UNKNOWN_LENGTH | SCST_LBA_NOT_VALID | SCST_WRITE_MEDIUM);
    op_flags |= SCST_INFO_VALID;
    if writes {
        op_flags |= SCST_WRITE_MEDIUM;
    }
    if range.is_none() {
        op_flags |= SCST_LBA_NOT_VALID;
    }
    Ok(ParseResult {
        queue_type: if p.queue_type <= SCST_CMD_QUEUE_ACA {
            p.queue_type
        } else {
            SCST_CMD_QUEUE_SIMPLE
        },
        data_direction: direction,
        cdb_len: p.cdb_len,
        lba: i64::try_from(lba).unwrap_or(i64::MAX),
        data_len: i64::try_from(data_len).unwrap_or(i64::MAX),
        bufflen,
        op_flags,
        out_bufflen: 0,
        ..Default::default()
    })
}

/// A NUL-terminated name field as a string.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
