//! A simulator of the kernel side of scst_user
//! (`scst/src/dev_handlers/scst_user.c` plus the parts of the SCST core and
//! a target driver that a user-space device sees), which is also the
//! initiator for tests and `dataplane bench`.
//!
//! [`ScstSim::new`] gives the two ends: [`ScstSimDriver`] implements
//! [`ScstDriver`] (what the frontend device calls instead of ioctls on
//! `/dev/scst_user`; it may move to a reactor thread) and
//! [`ScstSimInitiator`] submits SCSI commands, attaches sessions, issues task
//! management and reaps completions. They share one state behind one lock,
//! taken once per driver call ("ioctl") and once per initiator call; like
//! the kernel's spinlocks it spins (then yields) when contended and never
//! sleeps on the data path.
//!
//! # What is modelled, following scst_user.c and the reference
//! (`shared/reference/scst-user-interface.md`)
//! - **Registration** (`dev_user_register_dev`, `dev_user_check_version`):
//!   `max(sizeof(DEV_USER_VERSION), 20)` bytes (91 for 3.10/3.11) are read
//!   from *both* `license_str` and `version_str` through the raw pointers
//!   (EFAULT if any byte is unreadable), the license first (EPERM unless
//!   "GPL", "GPL v2", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL"), then
//!   the version (EINVAL unless it equals [`ScstSimConfig::version`]); disks,
//!   CD-ROMs and MO need a power-of-two block size ≥ 512 (EINVAL); the
//!   options are checked as `__dev_user_set_opt` does (EINVAL); one device
//!   per fd (a second REGISTER: EINVAL). Blocking mode is latched here from
//!   [`ScstSimConfig::nonblocking`]. Every other call before REGISTER:
//!   ENODEV.
//! - **The command flow** per command: the core's standard parser
//!   (`parse.rs`, one table) or a PARSE subcommand (parse type CALL, or
//!   EXCEPTION for what the table does not know); memory from the SGV cache
//!   when the memory-reuse type covers the direction (the most recently
//!   freed buffer of the same power-of-two page class, `pbuf` in EXEC, no
//!   ALLOC_MEM), else ALLOC_MEM for WRITE/BIDI and core-local commands
//!   (`alloc_len` = the class size when cached, `bufflen` otherwise; pbuf 0 →
//!   BUSY) and EXEC with `pbuf` 0 for reads (the handler returns the buffer
//!   in the reply); EXEC; ON_FREE_CMD (ON_FREE_CMD_CALL and seen by the
//!   handler) with `pbuf`, `resp_data_len`, `buffer_cached`, `aborted`,
//!   `status`, `delivery_status`. With CALL a cached buffer returns to the
//!   cache when ON_FREE_CMD is answered; with IGNORE when the command is
//!   freed. Over [`ScstSimConfig::sgv_cache_bytes`] of idle buffers the
//!   oldest are evicted: ON_CACHED_MEM_FREE with the handle of the command
//!   (or PREALLOC_BUFFER) that supplied the buffer. Cached buffers must be
//!   page-aligned.
//! - **Commands the core executes itself** are not sent to the handler:
//!   REPORT LUNS and REQUEST SENSE (`SCST_FULLY_LOCAL_CMD`) are answered
//!   without it; COMPARE AND WRITE goes through PARSE/ALLOC_MEM, then the
//!   core issues an internal READ(16) to the handler, compares, and issues
//!   an internal WRITE(16) (MISCOMPARE 1D/00 with the offset otherwise);
//!   RESERVE/RELEASE answer GOOD; PERSISTENT RESERVE IN/OUT, EXTENDED COPY,
//!   RECEIVE COPY RESULTS and MAINTENANCE IN(REPORT TARGET PORT GROUPS)/OUT
//!   are not modelled (INVALID COMMAND OPERATION CODE after PARSE/ALLOC_MEM).
//! - **Replies** (`dev_user_process_reply*`): unknown handle → ESRCH; not
//!   sent to the handler → EINVAL; subcode not echoed or `_IOC_NR(subcode)`
//!   not the state → EINVAL and the ucmd is unjammed (its command fails
//!   with ILLEGAL REQUEST 25/00, and a later reply to it is ignored); a
//!   reply to an unjammed ucmd is accepted and ignored. PARSE replies:
//!   status 0 with queue_type ≤ 4, direction in {1,2,3,4}, bufflen ≠ 0
//!   unless NONE, no negative field, cdb_len ≤ the original, op_flags with
//!   `SCST_INFO_VALID`; else EINVAL and HARDWARE ERROR 44/00; a non-zero
//!   status completes the command with it and `min(252, sense_len)` bytes of
//!   sense. EXEC replies: COMPLETED with `resp_data_len` ≤ bufflen and 0
//!   unless the direction is exactly READ; BACKGROUND only for commands
//!   without READ in the direction and `resp_data_len` 0 (GOOD goes out
//!   now, the final COMPLETED is any later reply to that handle);
//!   DO_WRITE_SAME only for WRITE SAME(10/16), status 0, descriptors ≤ a
//!   page ending with `usdd_blocks` 0 (length 0: the CDB's range), after
//!   which the core writes the ranges as internal WRITE(16)s of at most
//!   [`ScstSimConfig::ws_max_write_bytes`] to the handler; anything else is
//!   EINVAL and ABORTED COMMAND 44/00. A sense that cannot be read is
//!   EFAULT.
//! - **REPLY_AND_GET_MULTI** (`dev_user_reply_get_multi`): replies in
//!   order; the first failure stops (`replies_done` = the replies before
//!   it, `cmds_cnt` = 0, the errno returned); `replies_done` is always
//!   written (0 for no replies); then up to `cmds_cnt` subcommands, where
//!   only the first may block; with nothing ready in non-blocking mode:
//!   EAGAIN with the replies consumed. In blocking mode the call waits for
//!   work up to [`ScstSimConfig::blocking_wait`] and then returns EINTR, as
//!   if a signal had arrived (the replies are consumed). `preplies` must
//!   point at the replies slice (else EFAULT, as the kernel would fault
//!   reading them); a `cmds_cnt` beyond the buffer's capacity is clamped
//!   (the kernel would write past it). Every driver call counts as one
//!   ioctl, failed ones included.
//! - **Order** (`dev_user_add_to_ready`): ATTACH/DETACH/TM at the head
//!   (after earlier management messages), PARSE/ALLOC_MEM and HEAD OF QUEUE
//!   commands after those, the rest FIFO.
//! - **Sessions**: ATTACH_SESS must be answered within
//!   [`ScstSimConfig::attach_timeout`] (5 s, `DEV_USER_ATTACH_TIMEOUT`);
//!   result 0 attaches, anything else or the timeout fails the session.
//!   DETACH_SESS is queued; its result is ignored.
//! - **Task management**: the core aborts the affected commands; those not
//!   yet processed and those ready but unseen by the handler
//!   (`dev_user_abort_ready_commands`) finish as aborted at once and never
//!   reach it; then TASK_MGMT_RECEIVED (`cmd_h_to_abort` for ABORT TASK),
//!   and after the handler answered it and every affected command finished,
//!   TASK_MGMT_DONE, whose result is the TM's (TASK_NOT_EXIST → SUCCESS).
//!   ABORT TASK of an unknown tag is TASK_NOT_EXIST at once. Aborted
//!   commands complete to the initiator with TASK ABORTED and
//!   [`SimCompletion::aborted`].
//! - **Handler death** (dropping the driver: `dev_user_release` → the
//!   cleanup thread): idle cached buffers are forgotten, commands sent to
//!   the handler fail with ILLEGAL REQUEST 25/00 (or as aborted), commands
//!   not yet sent with BUSY, TASK_MGMT_DONE with FAILED, a pending ATTACH
//!   fails; sessions are gone and new commands are refused.
//! - **FLUSH_CACHE** runs inside `scst_suspend_activity`: it waits for the
//!   commands in flight up to [`ScstSimConfig::suspend_timeout`] (90 s in
//!   the kernel) and fails with EBUSY if they do not finish — a handler with
//!   one thread cannot finish them while it waits, so flush when idle. Then
//!   every idle buffer is evicted (ON_CACHED_MEM_FREE each), which the
//!   handler must answer. SET_OPTIONS suspends the same way.
//! - **DEVICE_CAPACITY_CHANGED** queues a CAPACITY DATA HAS CHANGED unit
//!   attention (2A/09) for every session, delivered to the next command that
//!   reaches EXEC without `SCST_SKIP_UA` (`scst_check_local_events`).
//!
//! # The wait fd (`poll` on /dev/scst_user)
//! [`ScstDriver::wait_fd`] is an eventfd. The simulator adds 1 to it
//! whenever it makes a subcommand ready while the handler may be idle: at
//! [`ScstSimInitiator::notify`] for the commands submitted since the last
//! one (one write per batch), at once for ATTACH/DETACH/TM and for
//! ON_FREE_CMD / ON_CACHED_MEM_FREE made ready by a reap or purge, and at the
//! end of a driver call that left subcommands it did not return (REPLY_CMD,
//! FLUSH_CACHE, PREALLOC_BUFFER, a failing REPLY_AND_GET_MULTI). A
//! REPLY_AND_GET_MULTI that returned as many commands as asked may leave
//! more ready: call again before sleeping. The device may drain the eventfd
//! (any read resets it) or not: every write is an edge, so an edge-triggered
//! registration needs no draining.
//!
//! # Handler memory
//! The simulator touches handler buffers like the kernel touches pinned
//! pages: data-out is copied into `pbuf` before EXEC, data-in is copied out
//! of it when the EXEC reply is processed, sense and WRITE SAME descriptors
//! are read through their pointers, version and license strings at
//! REGISTER. All of it goes through `process_vm_readv`/`process_vm_writev`
//! on our own process (batched: one system call per driver call), so a bad
//! pointer is EFAULT or a failed command (HARDWARE ERROR 44/00 for a buffer
//! given in ALLOC_MEM or taken from the cache, ABORTED COMMAND 44/00 for
//! data-in) instead of undefined behaviour. The handler keeps a buffer
//! valid, and does not touch it, from the reply that hands it over until
//! ON_FREE_CMD (not cached) or ON_CACHED_MEM_FREE (cached); the simulator
//! never accesses more than it asked for (`alloc_len`/`bufflen`). Data the
//! initiator has not reaped is held in the simulator's own buffers, so it
//! survives the handler.
//!
//! With [`ScstSimDriver::trust_mapped_buffers`] (an `unsafe` promise that
//! the handler keeps that contract, which `dataplane bench` makes for its
//! own device), buffers reused from the SGV cache — pinned when the handler
//! first supplied them — are copied with plain memory copies, as the kernel
//! copies pinned pages, and a GOOD command's data-in stays in its pinned
//! buffer until the initiator reaps it, which reads it there without the
//! lock (as a target driver sends from the command's pages). Dropping the
//! driver waits for a reap in progress and first moves every unreaped
//! data-in into the simulator's buffers, so it still survives the handler.
//!
//! # Not modelled
//! Duplicate device names across simulators (EEXIST), UNREGISTER_DEVICE,
//! REPLY_AND_GET_CMD (not in [`ScstDriver`]) and GET_EXTENDED_CDB (CDBs are
//! at most 16 bytes), EXT_COPY_REMAP, partial transfers (`partial` is always
//! 0), BIDI data phases (a BIDI parse is accepted; no data is copied), the
//! clustered SGV pool (`for_clust_pool` is ignored; one pool), the SGV purge
//! timer and shrinker (see [`ScstSimInitiator::purge_cache`]) and the
//! per-device memory limit, SCST's reconciliation of the expected transfer
//! length with the CDB (data-out must match the buffer exactly, else
//! INVALID FIELD IN CDB; data-in is cut to what the initiator asked for),
//! reservations, persistent reservations, ALUA, unit attentions other than
//! capacity changes, command timeouts (the kernel has none for user
//! devices), `sn`-based ordering (`sn` is per session and increasing), and
//! parsers of device types other than disk (they behave as PARSE_CALL).

mod copy;
mod parse;
mod state;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};

use crossbeam_utils::Backoff;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use self::state::{DeferredReap, SessState, State};
use dataplane::exec::status;
use dataplane::scst::abi::*;
use dataplane::scst::driver::{MultiBuf, ScstDriver};

/// `DEV_USER_VERSION` of SCST 3.11.0-pre (master): `SCST_VERSION_NAME` +
/// sha1 of scst_user.h + sha1 of scst_const.h.
pub const DEV_USER_VERSION_3_11: &str =
    "3.11.0-pre230a30730ec749a9738ef33d6d17b1e6739bd195f03678ef2265294f64bc9fca39567ca80671f7d8";

/// The simulator's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScstSimConfig {
    /// The fd is opened with `O_NONBLOCK` (latched at REGISTER).
    pub nonblocking: bool,
    /// The `DEV_USER_VERSION` this "kernel" was built with.
    pub version: String,
    /// Budget of idle cached buffers (bytes); beyond it the oldest are
    /// evicted with ON_CACHED_MEM_FREE.
    pub sgv_cache_bytes: usize,
    /// Commands the initiator can have in flight (and as many internal
    /// commands of the core).
    pub max_cmds: usize,
    /// Largest data buffer one command may carry.
    pub max_transfer_bytes: usize,
    /// `DEV_USER_ATTACH_TIMEOUT`.
    pub attach_timeout: Duration,
    /// `SCST_SUSPEND_TIMEOUT_USER` (FLUSH_CACHE, SET_OPTIONS).
    pub suspend_timeout: Duration,
    /// How long a blocking REPLY_AND_GET_MULTI waits for work before it
    /// returns EINTR.
    pub blocking_wait: Duration,
    /// Target name in ATTACH_SESS.
    pub target_name: String,
    /// Largest internal WRITE the core issues for DO_WRITE_SAME.
    pub ws_max_write_bytes: usize,
}

impl Default for ScstSimConfig {
    fn default() -> Self {
        Self {
            nonblocking: true,
            version: DEV_USER_VERSION_3_11.to_string(),
            sgv_cache_bytes: 64 << 20,
            max_cmds: 1024,
            max_transfer_bytes: 8 << 20,
            attach_timeout: Duration::from_secs(5),
            suspend_timeout: Duration::from_secs(90),
            blocking_wait: Duration::from_secs(1),
            target_name: "scst_local_tgt".to_string(),
            ws_max_write_bytes: 1 << 20,
        }
    }
}

/// A command's data buffer, as the initiator gives it.
#[derive(Debug, Clone, Copy)]
pub enum SimData<'a> {
    /// No data.
    None,
    /// Data-out (copied at submission).
    Out(&'a [u8]),
    /// Room for this many bytes of data-in.
    In(usize),
}

/// Why a command was not queued. `Full` is flow control: reap and retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimSubmitError {
    /// Every command slot is in use.
    #[error("too many commands in flight")]
    Full,
    /// The data buffer is larger than `max_transfer_bytes`.
    #[error("data buffer too large")]
    TooLarge,
    /// Empty, longer than 16 bytes, or shorter than its opcode's group
    /// requires.
    #[error("bad CDB")]
    BadCdb,
    /// No attached session with this handle.
    #[error("unknown session")]
    UnknownSession,
    /// No device registered, or its handler closed the fd.
    #[error("no device")]
    NoDevice,
}

/// Errors of the initiator's management calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No device registered yet.
    #[error("no device registered")]
    NotRegistered,
    /// The handler closed the fd.
    #[error("the device is gone")]
    DeviceGone,
    /// No session (or no attached session) with this handle.
    #[error("unknown session")]
    UnknownSession,
    /// The session has commands in flight.
    #[error("session has commands in flight")]
    SessionBusy,
    /// The handler answered ATTACH_SESS with this result.
    #[error("ATTACH_SESS failed with {0}")]
    AttachFailed(i32),
    /// No answer to ATTACH_SESS in time.
    #[error("ATTACH_SESS timed out")]
    AttachTimeout,
    /// Creating the wait eventfd failed.
    #[error("eventfd: {0}")]
    Eventfd(Errno),
}

/// One finished command as the target driver sees it.
#[derive(Debug)]
pub struct SimCompletion<'a> {
    /// The tag given to [`ScstSimInitiator::submit`].
    pub tag: u64,
    /// SAM status (TASK ABORTED for aborted commands).
    pub status: u8,
    /// Sense bytes for CHECK CONDITION (up to 252), else empty.
    pub sense: &'a [u8],
    /// Bytes of data-in available (at most what the initiator asked for).
    pub data_in_len: usize,
    /// The command was aborted by task management (or the handler's death
    /// while aborted); it has no response in SCSI terms.
    pub aborted: bool,
    data: DataIn<'a>,
}

/// Where a completion's data-in is.
#[derive(Debug)]
enum DataIn<'a> {
    /// In the simulator's own buffer.
    Staged(&'a [u8]),
    /// Still in the command's pinned handler buffer at this address
    /// (`data_in_len` bytes; trusted mode only).
    Pinned(u64),
}

impl SimCompletion<'_> {
    /// Copies the data-in (at most `data_in_len`, at most `dst.len()`
    /// bytes) into `dst`; returns the number of bytes copied.
    pub fn copy_data_in(&self, dst: &mut [u8]) -> usize {
        match self.data {
            DataIn::Staged(data) => {
                let n = dst.len().min(data.len());
                dst[..n].copy_from_slice(&data[..n]);
                n
            }
            DataIn::Pinned(addr) => {
                let n = dst.len().min(self.data_in_len);
                // SAFETY: a completion lives only inside `reap`, before its
                // command is freed: the buffer is still the command's,
                // pinned, and (by `ScstSimDriver::trust_mapped_buffers`'
                // contract) mapped for at least `data_in_len` bytes, since
                // dropping the driver first waits for a reap in progress
                // (`reaping`) and moves the data of unreaped commands out
                // of handler memory. `dst` is the caller's own slice.
                unsafe {
                    std::ptr::copy_nonoverlapping(addr as usize as *const u8, dst.as_mut_ptr(), n);
                }
                n
            }
        }
    }
}

/// A task management function in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TmHandle(u32);

/// Counters of the simulator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Driver calls (ioctls), failed ones included.
    pub ioctls: u64,
    /// Writes to the wait eventfd.
    pub notifications: u64,
    /// Commands submitted by the initiator.
    pub submitted: u64,
    /// Commands reaped by the initiator.
    pub reaped: u64,
    /// Commands finished (initiator and internal).
    pub completed: u64,
    /// Internal commands issued by the core (COMPARE AND WRITE, WRITE SAME).
    pub internal_cmds: u64,
    /// DO_WRITE_SAME replies executed by the core.
    pub write_same_offloaded: u64,
    /// Subcommands queued, by kind.
    pub parse_sent: u64,
    /// ALLOC_MEM subcommands queued.
    pub alloc_mem_sent: u64,
    /// EXEC subcommands queued.
    pub exec_sent: u64,
    /// ON_FREE_CMD subcommands queued.
    pub on_free_sent: u64,
    /// TASK_MGMT_RECEIVED and TASK_MGMT_DONE subcommands queued.
    pub tm_sent: u64,
    /// ATTACH_SESS subcommands queued.
    pub attach_sent: u64,
    /// DETACH_SESS subcommands queued.
    pub detach_sent: u64,
    /// Cached buffers reused.
    pub cache_hits: u64,
    /// Cached-direction commands that found no buffer.
    pub cache_misses: u64,
    /// Buffers evicted (ON_CACHED_MEM_FREE).
    pub evictions: u64,
    /// Idle cached buffers now.
    pub cached_buffers: u64,
    /// Bytes of idle cached buffers now.
    pub cached_bytes: u64,
    /// Replies refused with EINVAL.
    pub replies_einval: u64,
    /// Replies refused with ESRCH.
    pub replies_esrch: u64,
    /// Replies refused with EFAULT.
    pub replies_efault: u64,
    /// Handler buffers the simulator could not read or write.
    pub copy_faults: u64,
    /// ucmds unjammed.
    pub unjammed: u64,
    /// Live cmd_h handles.
    pub live_handles: u64,
}

/// The registered device, as the simulated kernel knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device name.
    pub name: String,
    /// SCSI device type.
    pub type_: u8,
    /// Block size (follows READ CAPACITY data for disks).
    pub block_size: u32,
    /// Current options.
    pub options: ScstUserOpt,
    /// Blocking mode latched at REGISTER.
    pub blocking: bool,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    wake: OwnedFd,
    ioctls: AtomicU64,
    notifications: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("wake", &self.wake)
            .field("ioctls", &self.ioctls)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Takes the state lock. The kernel's locks on this path (the device's
    /// `cmd_lists_lock`, the session and command locks) are spinlocks: a
    /// contended caller spins, it does not sleep. So does this one: it
    /// spins with exponential backoff, then yields the CPU between
    /// attempts (so that a holder preempted in user space can run), and
    /// never sleeps in the mutex: a futex sleep and wake-up on every
    /// collision would charge both sides costs the kernel never pays.
    /// (Only the condition variable of blocking mode sleeps.)
    fn lock(&self) -> MutexGuard<'_, State> {
        let backoff = Backoff::new();
        loop {
            match self.state.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => backoff.snooze(),
            }
        }
    }

    /// Adds 1 to the wait eventfd.
    fn ring(&self) {
        // EAGAIN only at a counter of 2^64 - 2: a handler that never reads
        // it still sees the fd readable then.
        let _ = nix::unistd::write(&self.wake, &1u64.to_ne_bytes());
        self.notifications.fetch_add(1, Ordering::Relaxed);
    }

    /// Wakes threads blocked in the simulator (a blocking fetch, an attach
    /// or a suspend) if there are any.
    fn kick(&self, st: &State) {
        if st.fetch_waiters + st.attach_waiters + st.suspend_waiters > 0 {
            self.cond.notify_all();
        }
    }

    fn wait_until<'a>(
        &self,
        st: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> (MutexGuard<'a, State>, bool) {
        let now = Instant::now();
        if now >= deadline {
            return (st, true);
        }
        let (st, res) = self
            .cond
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(PoisonError::into_inner);
        (st, res.timed_out())
    }
}

/// Creates simulators.
#[derive(Debug)]
pub struct ScstSim;

impl ScstSim {
    /// A simulated `/dev/scst_user` fd (opened, not registered) and the
    /// initiator side of the same kernel.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(config: ScstSimConfig) -> Result<(ScstSimDriver, ScstSimInitiator), SimError> {
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map(OwnedFd::from)
            .map_err(SimError::Eventfd)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(config)),
            cond: Condvar::new(),
            wake,
            ioctls: AtomicU64::new(0),
            notifications: AtomicU64::new(0),
        });
        Ok((
            ScstSimDriver {
                shared: Arc::clone(&shared),
            },
            ScstSimInitiator {
                shared,
                deferred: Vec::new(),
            },
        ))
    }
}

/// The handler's end: a simulated `/dev/scst_user` fd. Dropping it is the
/// handler closing the fd (or dying). See the module docs.
#[derive(Debug)]
pub struct ScstSimDriver {
    shared: Arc<Shared>,
}

/// `__dev_user_set_opt`'s checks.
fn check_opt(opt: &ScstUserOpt) -> Result<(), Errno> {
    let bad = opt.parse_type > SCST_USER_PARSE_EXCEPTION
        || opt.on_free_cmd_type > SCST_USER_ON_FREE_CMD_IGNORE
        || opt.memory_reuse_type > SCST_USER_MEM_REUSE_ALL
        || opt.partial_transfers_type > SCST_USER_PARTIAL_TRANSFERS_SUPPORTED
        || opt.tst > 1
        || opt.queue_alg > 1
        || !matches!(opt.qerr, 0 | 1 | 3)
        || opt.swp > 1
        || opt.tas > 1
        || opt.has_own_order_mgmt > 1
        || opt.d_sense > 1
        || opt.tmf_only > 1
        || opt.ext_copy_remap_supported > 1;
    if bad {
        Err(Errno::EINVAL)
    } else {
        Ok(())
    }
}

/// The C string at the start of `bytes` (up to the first NUL).
fn c_str(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..n]
}

impl ScstSimDriver {
    /// Copies to and from buffers the kernel has pinned (taken from the
    /// SGV cache) become plain memory copies, as in the kernel, which maps
    /// a cached buffer's pages once and reuses them; buffers the handler
    /// supplies in a reply are still checked (and fault cleanly) the first
    /// time. Without this every transfer goes through
    /// `process_vm_readv`/`process_vm_writev`, whose page pinning per call
    /// costs more than the copy itself: right for tests of a handler, too
    /// slow to benchmark one.
    ///
    /// # Safety
    /// The handler keeps every buffer it supplies (ALLOC_MEM and EXEC
    /// replies, PREALLOC_BUFFER) mapped, readable and writable for the
    /// length it was supplied for, and does not access it, until the
    /// simulator releases it (ON_FREE_CMD for an uncached buffer,
    /// ON_CACHED_MEM_FREE for a cached one) or this driver is dropped —
    /// the scst_user contract, which a real kernel enforces by pinning and
    /// this simulator, in this mode, trusts.
    pub unsafe fn trust_mapped_buffers(&mut self) {
        self.shared.lock().trust_pinned = true;
    }

    fn count_ioctl(&self) {
        self.shared.ioctls.fetch_add(1, Ordering::Relaxed);
    }

    /// `scst_suspend_activity`: waits until no command is in flight.
    fn suspend<'a>(&self, mut st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>, Errno> {
        let deadline = Instant::now() + st.cfg.suspend_timeout;
        while st.busy() {
            st.suspend_waiters += 1;
            let (g, timed_out) = self.shared.wait_until(st, deadline);
            st = g;
            st.suspend_waiters -= 1;
            if timed_out && st.busy() {
                return Err(Errno::EBUSY);
            }
        }
        Ok(st)
    }

    /// Ends a driver call: wakes waiters, and rings the wait fd when the
    /// call left subcommands it did not return.
    fn finish(&self, st: MutexGuard<'_, State>, left_work: bool) {
        let ring = left_work && st.has_work();
        self.shared.kick(&st);
        drop(st);
        if ring {
            self.shared.ring();
        }
    }
}

impl ScstDriver for ScstSimDriver {
    fn register(&mut self, desc: &ScstUserDevDesc) -> Result<(), Errno> {
        self.count_ioctl();
        let mut st = self.shared.lock();
        // dev_user_check_version: max(sizeof(DEV_USER_VERSION), 20) bytes
        // of each string, the license first.
        let len = (st.cfg.version.len() + 1).max(20);
        let mut buf = vec![0u8; len];
        state_copy_read(&mut buf, desc.license_str)?;
        buf[len - 1] = 0;
        let license = c_str(&buf);
        if !matches!(
            license,
            b"GPL" | b"GPL v2" | b"Dual BSD/GPL" | b"Dual MIT/GPL" | b"Dual MPL/GPL"
        ) {
            return Err(Errno::EPERM);
        }
        state_copy_read(&mut buf, desc.version_str)?;
        buf[len - 1] = 0;
        if c_str(&buf) != st.cfg.version.as_bytes() {
            // dmesg: "Incorrect version of user device .. Expected: .."
            return Err(Errno::EINVAL);
        }
        if matches!(desc.type_, TYPE_DISK | 0x05 | 0x07) {
            let bs = desc.block_size;
            if bs < 512 || !bs.is_power_of_two() {
                return Err(Errno::EINVAL);
            }
        }
        check_opt(&desc.opt)?;
        if st.dev.is_some() {
            // "Device already registered".
            return Err(Errno::EINVAL);
        }
        let mut name = desc.name;
        name[SCST_MAX_NAME - 1] = 0;
        let name = c_str(&name);
        let name = &name[..name.len().min(SCST_MAX_NAME - 2)];
        let mut opt = desc.opt;
        opt._pad = [0; 3];
        let blocking = !st.cfg.nonblocking;
        st.dev = Some(state::Dev {
            name: String::from_utf8_lossy(name).into_owned(),
            type_: desc.type_,
            block_size: desc.block_size,
            opt,
            blocking,
        });
        Ok(())
    }

    fn set_options(&mut self, opt: &ScstUserOpt) -> Result<(), Errno> {
        self.count_ioctl();
        let st = self.shared.lock();
        if st.dev.is_none() {
            return Err(Errno::ENODEV);
        }
        let mut st = self.suspend(st)?;
        check_opt(opt)?;
        let mut opt = *opt;
        opt._pad = [0; 3];
        if let Some(dev) = st.dev.as_mut() {
            dev.opt = opt;
        }
        Ok(())
    }

    fn get_options(&mut self) -> Result<ScstUserOpt, Errno> {
        self.count_ioctl();
        let st = self.shared.lock();
        st.dev.as_ref().map(|d| d.opt).ok_or(Errno::ENODEV)
    }

    fn reply_and_get_multi(
        &mut self,
        buf: &mut MultiBuf,
        replies: &[ScstUserReplyCmd],
    ) -> Result<(), Errno> {
        self.count_ioctl();
        let mut st = self.shared.lock();
        let Some(blocking) = st.dev.as_ref().map(|d| d.blocking) else {
            return Err(Errno::ENODEV);
        };
        let hdr = *buf.header();
        let count = hdr.replies_cnt.max(0) as usize;
        let result =
            if count > replies.len() || (count > 0 && hdr.preplies != replies.as_ptr() as u64) {
                // The kernel would read `replies_cnt` entries at `preplies`:
                // the slice does not back them.
                buf.header_mut().replies_done = 0;
                Err(Errno::EFAULT)
            } else {
                st.queued_since = false;
                st.prefetch_replies(&replies[..count]);
                let mut done = 0usize;
                let mut err = None;
                for r in &replies[..count] {
                    match st.process_reply(r) {
                        Ok(()) => done += 1,
                        Err(e) => {
                            err = Some(e);
                            break;
                        }
                    }
                }
                st.settle();
                buf.header_mut().replies_done = done as i16;
                err.map_or(Ok(()), Err)
            };
        if let Err(e) = result {
            buf.header_mut().cmds_cnt = 0;
            self.finish(st, true);
            return Err(e);
        }
        let want = (hdr.cmds_cnt.max(0) as usize).min(buf.capacity());
        let mut n = 0usize;
        let mut outcome = Ok(());
        let deadline = Instant::now() + st.cfg.blocking_wait;
        while n < want {
            st.process_active();
            if let Some(ui) = st.fetch_one() {
                st.write_cmd(ui, &mut buf.cmds_mut()[n]);
                n += 1;
                continue;
            }
            st.settle();
            if n > 0 {
                break; // only the first command may block
            }
            if !blocking {
                outcome = Err(Errno::EAGAIN);
                break;
            }
            st.fetch_waiters += 1;
            let (g, timed_out) = self.shared.wait_until(st, deadline);
            st = g;
            st.fetch_waiters -= 1;
            if timed_out && !st.has_work() {
                outcome = Err(Errno::EINTR);
                break;
            }
        }
        st.settle();
        buf.header_mut().cmds_cnt = n as i16;
        self.finish(st, false);
        outcome
    }

    fn reply_cmd(&mut self, reply: &ScstUserReplyCmd) -> Result<(), Errno> {
        self.count_ioctl();
        let mut st = self.shared.lock();
        if st.dev.is_none() {
            return Err(Errno::ENODEV);
        }
        st.queued_since = false;
        let res = st.process_reply(reply);
        st.settle();
        let left = st.queued_since;
        self.finish(st, left);
        res
    }

    fn flush_cache(&mut self) -> Result<(), Errno> {
        self.count_ioctl();
        let st = self.shared.lock();
        if st.dev.is_none() {
            return Err(Errno::ENODEV);
        }
        let mut st = self.suspend(st)?;
        st.queued_since = false;
        st.flush_idle();
        let left = st.queued_since;
        self.finish(st, left);
        Ok(())
    }

    fn capacity_changed(&mut self) -> Result<(), Errno> {
        self.count_ioctl();
        let mut st = self.shared.lock();
        if st.dev.is_none() {
            return Err(Errno::ENODEV);
        }
        st.capacity_changed();
        Ok(())
    }

    fn prealloc_buffer(&mut self, pbuf: u64, len: u32, for_clust_pool: bool) -> Result<u32, Errno> {
        let _ = for_clust_pool; // one pool (see the module docs)
        self.count_ioctl();
        let mut st = self.shared.lock();
        if st.dev.is_none() {
            return Err(Errno::ENODEV);
        }
        st.queued_since = false;
        let res = st.prealloc(pbuf, len);
        let left = st.queued_since;
        self.finish(st, left);
        res
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.shared.wake.as_raw_fd())
    }

    fn ioctls(&self) -> u64 {
        self.shared.ioctls.load(Ordering::Relaxed)
    }
}

fn state_copy_read(buf: &mut [u8], addr: u64) -> Result<(), Errno> {
    copy::read_remote(buf, addr)
}

impl Drop for ScstSimDriver {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        // The initiator may be reading pinned buffers, which the handler
        // may unmap once this returns: let it finish (it needs no lock for
        // that, and takes it once to end).
        while st.reaping {
            drop(st);
            std::thread::yield_now();
            st = self.shared.lock();
        }
        st.release();
        drop(st);
        self.shared.cond.notify_all();
    }
}

/// Ends a reap's unlocked phase: frees the deferred commands and clears
/// `reaping`, on the normal path and when the completion callback panics.
struct FinishReap<'a> {
    shared: &'a Shared,
    deferred: &'a [DeferredReap],
}

impl Drop for FinishReap<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        for d in self.deferred {
            st.finish_reap(d);
        }
        st.reaping = false;
    }
}

/// The SCST core, a target driver and its initiator: submits commands and
/// collects their completions. See the module docs.
#[derive(Debug)]
pub struct ScstSimInitiator {
    shared: Arc<Shared>,
    /// Completions being reaped outside the lock (capacity kept).
    deferred: Vec<DeferredReap>,
}

impl ScstSimInitiator {
    /// Starts adding a session (`attach_tgt`): queues ATTACH_SESS and
    /// returns its `sess_h`. Commands can be submitted once
    /// [`poll_attach`](Self::poll_attach) says it is attached.
    pub fn begin_attach_session(&mut self, lun: u64, initiator: &str) -> Result<u64, SimError> {
        let mut st = self.shared.lock();
        let sess_h = st.begin_attach(lun, initiator)?;
        self.shared.kick(&st);
        drop(st);
        self.shared.ring();
        Ok(sess_h)
    }

    /// Whether the ATTACH_SESS of `sess_h` was answered: `Ok(true)` once
    /// attached, `Ok(false)` while waiting, an error if the handler refused
    /// it or did not answer within the attach timeout.
    pub fn poll_attach(&mut self, sess_h: u64) -> Result<bool, SimError> {
        let mut st = self.shared.lock();
        let sess = st.session_index(sess_h).ok_or(SimError::UnknownSession)?;
        match st.session_state(sess) {
            SessState::Active => Ok(true),
            SessState::Failed(r) => Err(SimError::AttachFailed(r)),
            SessState::TimedOut => Err(SimError::AttachTimeout),
            SessState::Gone => Err(SimError::UnknownSession),
            SessState::Attaching => {
                if Instant::now() > st.session_deadline(sess) {
                    st.attach_timed_out(sess);
                    Err(SimError::AttachTimeout)
                } else {
                    Ok(false)
                }
            }
        }
    }

    /// Adds a session and waits (up to the attach timeout) for the handler's
    /// answer. The device must be polled by another thread meanwhile; on
    /// one thread use [`attach_session_with`](Self::attach_session_with).
    pub fn attach_session(&mut self, lun: u64, initiator: &str) -> Result<u64, SimError> {
        let sess_h = self.begin_attach_session(lun, initiator)?;
        loop {
            if self.poll_attach(sess_h)? {
                return Ok(sess_h);
            }
            let mut st = self.shared.lock();
            let Some(sess) = st.session_index(sess_h) else {
                return Err(SimError::UnknownSession);
            };
            if st.session_state(sess) != SessState::Attaching {
                continue;
            }
            let deadline = st.session_deadline(sess);
            st.attach_waiters += 1;
            let (mut st, _) = self.shared.wait_until(st, deadline);
            st.attach_waiters -= 1;
        }
    }

    /// Adds a session, calling `poll` (which should run the device once)
    /// until the handler answered or the attach timeout passed.
    pub fn attach_session_with(
        &mut self,
        lun: u64,
        initiator: &str,
        mut poll: impl FnMut(),
    ) -> Result<u64, SimError> {
        let sess_h = self.begin_attach_session(lun, initiator)?;
        loop {
            poll();
            if self.poll_attach(sess_h)? {
                return Ok(sess_h);
            }
        }
    }

    /// Removes a session (`detach_tgt`): queues DETACH_SESS. The session
    /// must have no command in flight.
    pub fn detach_session(&mut self, sess_h: u64) -> Result<(), SimError> {
        let mut st = self.shared.lock();
        let sess = st.session_index(sess_h).ok_or(SimError::UnknownSession)?;
        st.queued_since = false;
        st.detach(sess)?;
        let ring = st.queued_since;
        self.shared.kick(&st);
        drop(st);
        if ring {
            self.shared.ring();
        }
        Ok(())
    }

    /// Submits a SIMPLE command on session `sess_h`. The handler learns of
    /// it at its next call; [`notify`](Self::notify) wakes it.
    pub fn submit(
        &mut self,
        sess_h: u64,
        cdb: &[u8],
        data: SimData<'_>,
        tag: u64,
    ) -> Result<(), SimSubmitError> {
        self.submit_with_queue_type(sess_h, cdb, data, tag, SCST_CMD_QUEUE_SIMPLE)
    }

    /// [`submit`](Self::submit) with a queue type (`SCST_CMD_QUEUE_*`).
    pub fn submit_with_queue_type(
        &mut self,
        sess_h: u64,
        cdb: &[u8],
        data: SimData<'_>,
        tag: u64,
        queue_type: u8,
    ) -> Result<(), SimSubmitError> {
        let mut st = self.shared.lock();
        st.submit(sess_h, cdb, data, tag, queue_type)?;
        if st.fetch_waiters > 0 {
            self.shared.cond.notify_all();
        }
        Ok(())
    }

    /// Rings the wait fd once for the commands submitted since the last
    /// call. Returns whether it rang.
    pub fn notify(&mut self) -> bool {
        let mut st = self.shared.lock();
        if st.unnotified == 0 {
            return false;
        }
        st.unnotified = 0;
        drop(st);
        self.shared.ring();
        true
    }

    /// Hands every finished command to `f` and then frees it (which may
    /// queue ON_FREE_CMD or evict cached buffers). Returns the number of
    /// commands.
    pub fn reap(&mut self, mut f: impl FnMut(&SimCompletion<'_>)) -> Result<usize, SimError> {
        let mut st = self.shared.lock();
        st.queued_since = false;
        let mut deferred = std::mem::take(&mut self.deferred);
        let mut n = st.reap(&mut f, &mut deferred);
        if !deferred.is_empty() {
            // Data still in pinned handler buffers is read without the
            // lock (a target driver sends it from the command's pages
            // without holding the device's locks); the commands stay
            // allocated, and the handler's release waits, until then.
            st.reaping = true;
            drop(st);
            {
                // Frees the commands and ends `reaping` even if `f` panics
                // (a handler being dropped waits for that).
                let _finish = FinishReap {
                    shared: &self.shared,
                    deferred: &deferred,
                };
                for d in &deferred {
                    f(&SimCompletion {
                        tag: d.tag,
                        status: status::GOOD,
                        sense: &[],
                        data_in_len: d.data_in_len,
                        aborted: false,
                        data: DataIn::Pinned(d.addr),
                    });
                }
            }
            st = self.shared.lock();
            n += deferred.len();
            deferred.clear();
        }
        self.deferred = deferred;
        let ring = st.queued_since;
        self.shared.kick(&st);
        drop(st);
        if ring {
            self.shared.ring();
        }
        Ok(n)
    }

    /// A task management function on session `sess_h` (`SCST_ABORT_TASK`
    /// needs `tag_to_abort`). Its result comes from
    /// [`tm_result`](Self::tm_result).
    pub fn task_mgmt(
        &mut self,
        sess_h: u64,
        fn_: u32,
        tag_to_abort: Option<u64>,
    ) -> Result<TmHandle, SimError> {
        let mut st = self.shared.lock();
        let sess = st.session_index(sess_h).ok_or(SimError::UnknownSession)?;
        st.queued_since = false;
        let index = st.task_mgmt(sess, fn_, tag_to_abort)?;
        let ring = st.queued_since;
        self.shared.kick(&st);
        drop(st);
        if ring {
            self.shared.ring();
        }
        Ok(TmHandle(index))
    }

    /// The TM's result (`SCST_MGMT_STATUS_*`) once it finished.
    pub fn tm_result(&self, tm: TmHandle) -> Option<i32> {
        self.shared.lock().tm_result(tm.0)
    }

    /// The SGV purge timer / shrinker: evicts every idle cached buffer
    /// (ON_CACHED_MEM_FREE each). Returns how many.
    pub fn purge_cache(&mut self) -> usize {
        let mut st = self.shared.lock();
        st.queued_since = false;
        let n = st.flush_idle();
        let ring = st.queued_since;
        drop(st);
        if ring {
            self.shared.ring();
        }
        n
    }

    /// Driver calls so far (the handler's doorbells).
    pub fn ioctls(&self) -> u64 {
        self.shared.ioctls.load(Ordering::Relaxed)
    }

    /// Writes to the wait fd so far.
    pub fn notifications(&self) -> u64 {
        self.shared.notifications.load(Ordering::Relaxed)
    }

    /// Commands submitted and not reaped yet.
    pub fn in_flight(&self) -> usize {
        let st = self.shared.lock();
        (st.stats.submitted - st.stats.reaped) as usize
    }

    /// The counters.
    pub fn stats(&self) -> SimStats {
        let st = self.shared.lock();
        let mut s = st.stats;
        s.ioctls = self.ioctls();
        s.notifications = self.notifications();
        s.cached_buffers = st.idle_buffers() as u64;
        s.cached_bytes = st.idle_bytes() as u64;
        s.live_handles = st.live_ucmds() as u64;
        s
    }

    /// The registered device, if any.
    pub fn device(&self) -> Option<DeviceInfo> {
        let st = self.shared.lock();
        st.dev.as_ref().map(|d| DeviceInfo {
            name: d.name.clone(),
            type_: d.type_,
            block_size: d.block_size,
            options: d.opt,
            blocking: d.blocking,
        })
    }

    /// Whether the handler closed the fd.
    pub fn is_gone(&self) -> bool {
        self.shared.lock().gone
    }
}
