//! The simulated kernel: the SCST core as far as one scst_user device sees
//! it, and scst_user.c itself. Everything here runs under the simulator's
//! one mutex (the kernel's `cmd_list_lock` and friends rolled into one).
//!
//! Names follow `scst_user.c`: a `Ucmd` is a `struct scst_user_cmd` (one per
//! SCSI command, plus one per management message and per preallocated
//! buffer), a `Cmd` is the `struct scst_cmd` the target driver submitted.
//! Both live in preallocated tables and are named by their index ("slot"
//! for a `Cmd`, "ui" for a `Ucmd`); [`NONE`] is no index.
//!
//! [`State`] is the whole of it. Its methods are spread over one file per
//! concept of the simulated kernel:
//! - `cmd`: the SCSI command record, where it is, and how it finishes
//!   (status, sense, completion);
//! - `ucmd`: the ucmd record, its states (`UCMD_STATE_*`), its handle and
//!   the ready list (`dev_user_add_to_ready`);
//! - `sgv`: the SGV buffer cache (reuse, eviction, PREALLOC_BUFFER,
//!   FLUSH_CACHE);
//! - `session`: ATTACH_SESS/DETACH_SESS and per-session unit attentions;
//! - `flow`: a command's way through the core: submission, parse, memory,
//!   EXEC, completion, and ON_FREE_CMD when it is freed;
//! - `local`: what the core executes itself (REPORT LUNS, REQUEST SENSE,
//!   COMPARE AND WRITE, the internal writes of DO_WRITE_SAME);
//! - `transfer`: the batched copies between commands and handler memory;
//! - `fetch`: what REPLY_AND_GET_MULTI hands out (`__dev_user_get_next_cmd`);
//! - `reply`: processing replies (`dev_user_process_reply*`) and their
//!   error rules;
//! - `reap`: completions to the initiator;
//! - `tm`: task management;
//! - `unjam`: finishing ucmds without the handler, and the handler's
//!   release (`dev_user_unjam_cmd`, `dev_user_release`).

mod cmd;
mod fetch;
mod flow;
mod local;
mod reap;
mod reply;
mod session;
mod sgv;
mod tm;
mod transfer;
mod ucmd;
mod unjam;

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use self::cmd::Cmd;
use self::session::Session;
use self::sgv::SGV_ORDERS;
use self::tm::Tm;
use self::transfer::PendingCopy;
use self::ucmd::{HandleHasher, Ucmd};
use crate::scst::config::ScstSimConfig;
use crate::scst::copy::CopyBatch;
use crate::scst::stats::SimStats;
use dataplane::scsi::SenseFormat;
use dataplane::scst::abi::ScstUserOpt;

pub(in crate::scst) use self::reap::DeferredReap;
pub(in crate::scst) use self::session::SessState;

/// "No index".
const NONE: u32 = u32::MAX;
/// Page size of the simulated kernel (x86_64).
const PAGE_SIZE: usize = 4096;

/// The registered device.
#[derive(Debug, Clone)]
pub(in crate::scst) struct Dev {
    pub(in crate::scst) name: String,
    pub(in crate::scst) type_: u8,
    pub(in crate::scst) block_size: u32,
    pub(in crate::scst) opt: ScstUserOpt,
    pub(in crate::scst) blocking: bool,
}

/// The whole simulated kernel side of one scst_user fd.
#[derive(Debug)]
pub(in crate::scst) struct State {
    pub(in crate::scst) cfg: ScstSimConfig,
    pub(in crate::scst) dev: Option<Dev>,
    /// The handler closed the fd (the driver was dropped).
    pub(in crate::scst) gone: bool,
    cmds: Vec<Cmd>,
    free_ext: Vec<u32>,
    free_int: Vec<u32>,
    /// `active_cmd_list`: commands the core has not processed yet.
    active: VecDeque<u32>,
    /// Finished commands for the initiator, in completion order.
    done: VecDeque<u32>,
    /// Commands finished during the current call, not yet processed.
    completing: VecDeque<u32>,
    ucmds: Vec<Ucmd>,
    free_ucmds: Vec<u32>,
    by_h: HashMap<u32, u32, BuildHasherDefault<HandleHasher>>,
    handle_counter: u32,
    /// `ready_cmd_list` (ucmd indices); mgmt ucmds are always a prefix.
    ready: VecDeque<u32>,
    mgmt_prefix: usize,
    /// SGV cache idle lists per order, oldest first: (idle sequence, owner
    /// ucmd, the buffer's address — kept here so that a cache hit need not
    /// touch the owner).
    idle: Vec<VecDeque<(u64, u32, u64)>>,
    idle_seq: u64,
    idle_bytes: usize,
    sessions: Vec<Session>,
    tms: Vec<Tm>,
    pending_in: Vec<PendingCopy>,
    pending_out: Vec<PendingCopy>,
    copy_list: Vec<(usize, u64, usize)>,
    /// The ucmds of the replies being processed (capacity kept).
    reply_ucmds: Vec<u32>,
    /// For each entry of `copy_list`, its index in the pending list.
    copy_index: Vec<usize>,
    failed: Vec<usize>,
    batch: CopyBatch,
    /// Copies to and from pinned buffers are plain memory copies (see
    /// `ScstSimDriver::trust_mapped_buffers`); otherwise every copy is
    /// checked by `process_vm_readv`/`process_vm_writev`.
    pub(in crate::scst) trust_pinned: bool,
    /// A ucmd was put on the ready list during the current call.
    pub(in crate::scst) queued_since: bool,
    /// Commands submitted since the last `notify`.
    pub(in crate::scst) unnotified: usize,
    pub(in crate::scst) fetch_waiters: usize,
    pub(in crate::scst) attach_waiters: usize,
    pub(in crate::scst) suspend_waiters: usize,
    /// Commands in flight (external and internal).
    in_use_cmds: usize,
    /// The initiator is reading deferred completions' pinned buffers
    /// outside the lock: the handler's release waits for it.
    pub(in crate::scst) reaping: bool,
    pub(in crate::scst) stats: SimStats,
}

/// Starts loading the cache lines of `cmd` (a hint: never faults).
#[inline]
fn prefetch_cmd(cmd: &Cmd) {
    prefetch(cmd);
}

/// Starts loading the cache lines of `*value` (a hint: never faults).
#[inline]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        let base = (value as *const T).cast::<u8>();
        let mut at = 0;
        while at < std::mem::size_of::<T>() {
            // SAFETY: `base + at` lies inside `*value` (a live reference);
            // a prefetch is a hint that never faults or changes memory.
            unsafe {
                std::arch::x86_64::_mm_prefetch(
                    base.add(at).cast::<i8>(),
                    std::arch::x86_64::_MM_HINT_T0,
                );
            }
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

impl State {
    pub(in crate::scst) fn new(cfg: ScstSimConfig) -> Self {
        let n = cfg.max_cmds.max(1);
        let total = 2 * n;
        let mut cmds = Vec::with_capacity(total);
        cmds.resize_with(total, Cmd::new);
        let free_ext = (0..n as u32).rev().collect();
        let free_int = (n as u32..total as u32).rev().collect();
        let mut ucmds = Vec::with_capacity(4 * n);
        ucmds.resize_with(4 * n, Ucmd::new);
        let free_ucmds = (0..4 * n as u32).rev().collect();
        let mut by_h = HashMap::default();
        by_h.reserve(8 * n);
        Self {
            cfg,
            dev: None,
            gone: false,
            cmds,
            free_ext,
            free_int,
            active: VecDeque::with_capacity(total),
            done: VecDeque::with_capacity(total),
            completing: VecDeque::with_capacity(total),
            ucmds,
            free_ucmds,
            by_h,
            handle_counter: 0,
            ready: VecDeque::with_capacity(4 * n),
            mgmt_prefix: 0,
            idle: (0..SGV_ORDERS)
                .map(|_| VecDeque::with_capacity(n))
                .collect(),
            idle_seq: 0,
            idle_bytes: 0,
            sessions: Vec::new(),
            tms: Vec::new(),
            pending_in: Vec::with_capacity(total),
            pending_out: Vec::with_capacity(total),
            copy_list: Vec::with_capacity(total),
            reply_ucmds: Vec::with_capacity(total),
            copy_index: Vec::with_capacity(total),
            failed: Vec::with_capacity(total),
            batch: CopyBatch::with_capacity(total),
            trust_pinned: false,
            queued_since: false,
            unnotified: 0,
            fetch_waiters: 0,
            attach_waiters: 0,
            suspend_waiters: 0,
            in_use_cmds: 0,
            reaping: false,
            stats: SimStats::default(),
        }
    }

    fn dev(&self) -> &Dev {
        self.dev
            .as_ref()
            .expect("commands exist only on a registered device")
    }

    fn sense_format(&self) -> SenseFormat {
        match &self.dev {
            Some(d) if d.opt.d_sense != 0 => SenseFormat::Descriptor,
            _ => SenseFormat::Fixed,
        }
    }

    /// Commands in flight (for `scst_suspend_activity`).
    pub(in crate::scst) fn busy(&self) -> bool {
        self.in_use_cmds > 0
    }

    /// Whether the ready or active list has work (`dev_user_poll`).
    pub(in crate::scst) fn has_work(&self) -> bool {
        !self.ready.is_empty() || !self.active.is_empty()
    }
}
