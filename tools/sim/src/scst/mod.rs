//! A simulator of the kernel side of scst_user
//! (`scst/src/dev_handlers/scst_user.c` plus the parts of the SCST core and
//! a target driver that a user-space device sees), which is also the
//! initiator for tests and `dataplane bench`.
//!
//! [`ScstSim::new`] gives the two ends: [`ScstSimDriver`] implements
//! [`ScstDriver`](dataplane::scst::driver::ScstDriver) (what the frontend device calls instead of ioctls on
//! `/dev/scst_user`; it may move to a reactor thread) and
//! [`ScstSimInitiator`] submits SCSI commands, attaches sessions, issues task
//! management and reaps completions. They share one state behind one lock,
//! taken once per driver call ("ioctl") and once per initiator call; like
//! the kernel's spinlocks it spins (then yields) when contended and never
//! sleeps on the data path.
//!
//! # Where things are
//! - [`ScstSimConfig`], [`SimData`] and [`SimCompletion`], [`SimError`] and
//!   [`SimSubmitError`], [`SimStats`] and [`DeviceInfo`]: the public types
//!   (`config.rs`, `io.rs`, `error.rs`, `stats.rs`).
//! - `driver.rs`: the handler's end, one method per ioctl; `initiator.rs`:
//!   the initiator's end; `shared.rs`: what both hold (the state, its lock,
//!   the wait fd).
//! - `state/`: the simulated kernel itself, one file per concept (see its
//!   module docs); `parse.rs`: the core's CDB table; `copy.rs`: access to
//!   handler memory.
//!
//! # What is modelled
//! The simulator follows SCST's sources: `scst/src/dev_handlers/scst_user.c`
//! (the function names below are its own), the core in
//! `scst/src/scst_targ.c` and `scst/src/scst_lib.c`, and the SGV cache in
//! `scst/src/scst_mem.c`, with the ABI of `scst/include/scst_user.h` as
//! `dataplane::scst::abi` declares it.
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
//! [`ScstDriver::wait_fd`](dataplane::scst::driver::ScstDriver::wait_fd) is
//! an eventfd. The simulator adds 1 to it whenever it makes a subcommand
//! ready while the handler may be idle: at [`ScstSimInitiator::notify`] for
//! the commands submitted since the last one (one write per batch), at once
//! for ATTACH/DETACH/TM and for ON_FREE_CMD / ON_CACHED_MEM_FREE made ready
//! by a reap or purge, and at the end of a driver call that left subcommands
//! it did not return (REPLY_CMD, FLUSH_CACHE, PREALLOC_BUFFER, a failing
//! REPLY_AND_GET_MULTI). A REPLY_AND_GET_MULTI that returned as many
//! commands as asked may leave more ready: call again before sleeping. The
//! device may drain the eventfd (any read resets it) or not: every write is
//! an edge, so an edge-triggered registration needs no draining.
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
//! REPLY_AND_GET_CMD (not in `ScstDriver`) and GET_EXTENDED_CDB (CDBs are
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

mod config;
mod copy;
mod driver;
mod error;
mod initiator;
mod io;
mod parse;
mod shared;
mod state;
mod stats;

use std::sync::Arc;

pub use self::config::{ScstSimConfig, DEV_USER_VERSION_3_11};
pub use self::driver::ScstSimDriver;
pub use self::error::{SimError, SimSubmitError};
pub use self::initiator::{ScstSimInitiator, TmHandle};
pub use self::io::{SimCompletion, SimData};
pub use self::stats::{DeviceInfo, SimStats};

use self::shared::Shared;

/// Creates simulators.
#[derive(Debug)]
pub struct ScstSim;

impl ScstSim {
    /// A simulated `/dev/scst_user` fd (opened, not registered) and the
    /// initiator side of the same kernel.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(config: ScstSimConfig) -> Result<(ScstSimDriver, ScstSimInitiator), SimError> {
        let shared = Arc::new(Shared::new(config)?);
        Ok((
            ScstSimDriver::new(Arc::clone(&shared)),
            ScstSimInitiator::new(shared),
        ))
    }
}
