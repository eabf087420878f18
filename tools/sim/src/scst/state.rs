//! The simulated kernel: the SCST core as far as one scst_user device sees
//! it, and scst_user.c itself. Everything here runs under the simulator's
//! one mutex (the kernel's `cmd_list_lock` and friends rolled into one).
//!
//! Names follow scst_user.c: a `Ucmd` is a `struct scst_user_cmd` (one per
//! SCSI command, plus one per management message and per preallocated
//! buffer), a `Cmd` is the `struct scst_cmd` the target driver submitted.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use nix::errno::Errno;

use super::copy::{self, CopyBatch, Dir};
use super::parse::{self, Local, ParseFail};
use super::{DataIn, ScstSimConfig, SimCompletion, SimData, SimError, SimStats, SimSubmitError};
use dataplane::exec::{status, SENSE_BUFFER_SIZE};
use dataplane::scsi::sense::key;
use dataplane::scsi::{Asc, Sense, SenseFormat};
use dataplane::scst::abi::{subcode, *};

/// "No index".
pub(super) const NONE: u32 = u32::MAX;
/// Page size of the simulated kernel (x86_64).
pub(super) const PAGE_SIZE: usize = 4096;
/// `sess_h` values look like the kernel's `tgt_dev` pointers: opaque and
/// non-zero. Session `i` gets `SESS_H_BASE + (i << 12)`.
const SESS_H_BASE: u64 = 0xffff_8881_0400_0000;
/// Size classes of the SGV cache: orders 0..SGV_ORDERS pages.
const SGV_ORDERS: usize = 20;
/// `-EFAULT` as the kernel passes it to `dev_user_process_reply_sess`.
const EFAULT_RESULT: i32 = -14;
/// REPORT LUNS needs at least this allocation length (SPC).
const REPORT_LUNS_MIN_ALLOC: u32 = 16;

/// A cheap hasher for cmd_h keys (Fibonacci hashing of a u32).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct HandleHasher(u64);

impl Hasher for HandleHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// `UCMD_STATE_*`: the subcommand a ucmd is (or was last) in. The value is
/// `_IOC_NR` of the subcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum UState {
    New = 0,
    Parsing = 1,
    BufAllocing = 2,
    Execing = 3,
    OnFreeing = 4,
    OnCacheFreeing = 5,
    TmReceived = 8,
    TmDone = 9,
    AttachSess = 0x20,
    DetachSess = 0x21,
}

impl UState {
    /// `dev_user_mgmt_ucmd`.
    fn is_mgmt(self) -> bool {
        matches!(
            self,
            UState::TmReceived | UState::TmDone | UState::AttachSess | UState::DetachSess
        )
    }
}

/// A buffer this ucmd supplied and the SGV cache keeps (`buf_ucmd`).
#[derive(Debug, Clone, Copy)]
struct OwnBuf {
    pbuf: u64,
    order: u8,
}

/// `struct scst_user_cmd`.
#[derive(Debug)]
struct Ucmd {
    in_use: bool,
    h: u32,
    state: UState,
    /// `user_cmd.subcode` of the current state.
    subcode: u32,
    /// On the ready list.
    queued: bool,
    /// `sent_to_user`.
    sent: bool,
    /// `seen_by_user`.
    seen: bool,
    /// `this_state_unjammed`.
    unjammed: bool,
    /// `background_exec`.
    background: bool,
    /// `aborted` (reported in ON_FREE_CMD).
    aborted: bool,
    /// The SCSI command (`ucmd->cmd`), or NONE.
    cmd: u32,
    /// `ubuff`: the data buffer of the command.
    ubuff: u64,
    /// `buff_cached`.
    buff_cached: bool,
    /// `buf_ucmd`: the ucmd that owns `ubuff` in the SGV cache, or NONE.
    buf_owner: u32,
    /// The buffer this ucmd supplied, while the cache holds it.
    own: Option<OwnBuf>,
    /// `alloc_len` of ALLOC_MEM / EXEC.
    alloc_len: i32,
    /// ON_FREE_CMD payload, captured when the command was freed.
    on_free: ScstUserScsiOnFreeCmd,
    /// Session index (ATTACH/DETACH) or TM index.
    mgmt: u32,
}

impl Ucmd {
    fn new() -> Self {
        Self {
            in_use: false,
            h: 0,
            state: UState::New,
            subcode: 0,
            queued: false,
            sent: false,
            seen: false,
            unjammed: false,
            background: false,
            aborted: false,
            cmd: NONE,
            ubuff: 0,
            buff_cached: false,
            buf_owner: NONE,
            own: None,
            alloc_len: 0,
            on_free: ScstUserScsiOnFreeCmd::default(),
            mgmt: NONE,
        }
    }
}

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Free,
    /// On the active list, waiting for the core (a handler call).
    Active,
    /// Owned by the core / the handler.
    InCore,
    /// Finished; its completion is being processed in this call.
    Completing,
    /// Finished and waiting for the initiator to reap it.
    Done,
}

/// `struct scst_cmd`, plus what the target driver and initiator hold.
#[derive(Debug)]
struct Cmd {
    stage: Stage,
    tag: u64,
    /// Parent command of an internal (core-made) command, or NONE.
    parent: u32,
    sess: u32,
    cdb: [u8; SCST_MAX_CDB_SIZE],
    cdb_len: u16,
    queue_type: u8,
    sn: u32,
    /// Expected values from the initiator's data buffer.
    exp_dir: u8,
    exp_len: usize,
    // Values of the parse.
    dir: u8,
    lba: i64,
    data_len: i64,
    bufflen: i32,
    out_bufflen: i32,
    op_flags: u32,
    timeout: i32,
    local: Local,
    ucmd: u32,
    /// The target driver's copy of the data: data-out from the initiator,
    /// data-in for the initiator. Grows to the largest transfer, never
    /// shrinks.
    staging: Vec<u8>,
    /// Valid data-out bytes in `staging`.
    out_len: usize,
    /// Valid data-in bytes in `staging`, or at `in_remote`.
    in_len: usize,
    /// Non-zero: the data-in is still in this pinned handler buffer (the
    /// command's own until it is freed) and goes straight from there to
    /// the initiator at reap, as a target driver sends from the command's
    /// pages; see [`State::materialize_in`]. Zero: it is in `staging`.
    in_remote: u64,
    status: u8,
    sense: [u8; SCST_SENSE_BUFFERSIZE],
    sense_len: u8,
    resp_data_len: i32,
    aborted: bool,
    /// TMs waiting for this command to finish.
    tm_waiters: Vec<u32>,
    /// Internal command in flight for this one (COMPARE AND WRITE, WRITE
    /// SAME), or NONE.
    child: u32,
    /// COMPARE AND WRITE: 0 = reading, 1 = writing.
    caw_phase: u8,
    /// DO_WRITE_SAME ranges (lba, blocks) still to write; capacity kept.
    ws_ranges: Vec<(u64, u64)>,
    ws_idx: usize,
}

impl Cmd {
    /// The command has no data-in (any it had is dropped, wherever it was).
    fn drop_data_in(&mut self) {
        self.in_len = 0;
        self.in_remote = 0;
    }

    fn new() -> Self {
        Self {
            stage: Stage::Free,
            tag: 0,
            parent: NONE,
            sess: NONE,
            cdb: [0; SCST_MAX_CDB_SIZE],
            cdb_len: 0,
            queue_type: SCST_CMD_QUEUE_SIMPLE,
            sn: 0,
            exp_dir: SCST_DATA_NONE,
            exp_len: 0,
            dir: SCST_DATA_NONE,
            lba: 0,
            data_len: 0,
            bufflen: 0,
            out_bufflen: 0,
            op_flags: 0,
            timeout: 0,
            local: Local::No,
            ucmd: NONE,
            staging: Vec::new(),
            out_len: 0,
            in_len: 0,
            in_remote: 0,
            status: 0,
            sense: [0; SCST_SENSE_BUFFERSIZE],
            sense_len: 0,
            resp_data_len: 0,
            aborted: false,
            tm_waiters: Vec::new(),
            child: NONE,
            caw_phase: 0,
            ws_ranges: Vec::new(),
            ws_idx: 0,
        }
    }
}

/// State of a session (`tgt_dev`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessState {
    /// ATTACH_SESS queued or sent; `attach_tgt` is waiting.
    Attaching,
    /// Attached; commands can be submitted.
    Active,
    /// The handler answered ATTACH_SESS with this non-zero result (or the
    /// fd was closed: -EFAULT).
    Failed(i32),
    /// No answer within `DEV_USER_ATTACH_TIMEOUT`: `attach_tgt` failed with
    /// -EFAULT.
    TimedOut,
    /// Detached (DETACH_SESS sent) or the device is gone.
    Gone,
}

#[derive(Debug)]
struct Session {
    sess_h: u64,
    lun: u64,
    initiator: [u8; SCST_MAX_EXTERNAL_NAME],
    state: SessState,
    deadline: Instant,
    /// Commands of this session in flight (submitted, not reaped).
    active: u32,
    next_sn: u32,
    /// CAPACITY DATA HAS CHANGED unit attention pending.
    ua_capacity: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TmStage {
    /// TASK_MGMT_RECEIVED queued or sent.
    Received,
    /// Waiting for the affected commands.
    Waiting,
    /// TASK_MGMT_DONE queued or sent.
    Done,
    /// Result known.
    Finished,
}

#[derive(Debug)]
struct Tm {
    sess: u32,
    fn_: u32,
    cmd_h_to_abort: u32,
    stage: TmStage,
    remaining: u32,
    result: Option<i32>,
}

/// The registered device.
#[derive(Debug, Clone)]
pub(super) struct Dev {
    pub(super) name: String,
    pub(super) type_: u8,
    pub(super) block_size: u32,
    pub(super) opt: ScstUserOpt,
    pub(super) blocking: bool,
}

/// A finished GOOD command whose data-in the initiator reads straight from
/// the pinned handler buffer, outside the state lock (see `State::reap`).
#[derive(Debug, Clone, Copy)]
pub(super) struct DeferredReap {
    slot: u32,
    pub(super) tag: u64,
    pub(super) data_in_len: usize,
    pub(super) addr: u64,
}

/// A copy between a command's staging buffer and handler memory.
#[derive(Debug, Clone, Copy)]
struct PendingCopy {
    slot: u32,
    remote: u64,
    len: usize,
    /// The buffer came from the SGV cache: the kernel mapped (pinned) it
    /// when the handler first supplied it, and reuses the pinned pages
    /// without looking at the handler's address space again.
    pinned: bool,
}

/// The whole simulated kernel side of one scst_user fd.
#[derive(Debug)]
pub(super) struct State {
    pub(super) cfg: ScstSimConfig,
    pub(super) dev: Option<Dev>,
    /// The handler closed the fd (the driver was dropped).
    pub(super) gone: bool,
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
    /// SGV cache idle lists per order: (idle sequence, owner ucmd), oldest
    /// first.
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
    pub(super) trust_pinned: bool,
    /// A ucmd was put on the ready list during the current call.
    pub(super) queued_since: bool,
    /// Commands submitted since the last `notify`.
    pub(super) unnotified: usize,
    pub(super) fetch_waiters: usize,
    pub(super) attach_waiters: usize,
    pub(super) suspend_waiters: usize,
    /// Commands in flight (external and internal).
    in_use_cmds: usize,
    /// The initiator is reading deferred completions' pinned buffers
    /// outside the lock: the handler's release waits for it.
    pub(super) reaping: bool,
    pub(super) stats: SimStats,
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

fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

/// Whether a handler address is page-aligned (cached buffers must be).
fn page_aligned(addr: u64) -> bool {
    addr.is_multiple_of(PAGE_SIZE as u64)
}

/// Pages of `len` bytes, rounded up.
fn pages(len: usize) -> usize {
    len.div_ceil(PAGE_SIZE)
}

/// SGV size class (`get_order`) of a buffer of `len` bytes.
fn order_of(len: usize) -> u8 {
    let p = pages(len.max(1)).next_power_of_two();
    p.trailing_zeros() as u8
}

fn class_bytes(order: u8) -> usize {
    PAGE_SIZE << order
}

/// `sense_len` bytes the kernel copies: `min(SCST_SENSE_BUFFERSIZE, n)`.
fn sense_copy_len(n: u8) -> usize {
    usize::from(n).min(SCST_SENSE_BUFFERSIZE)
}

impl State {
    pub(super) fn new(cfg: ScstSimConfig) -> Self {
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
            batch: CopyBatch::default(),
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
    pub(super) fn busy(&self) -> bool {
        self.in_use_cmds > 0
    }

    /// Whether the ready or active list has work (`dev_user_poll`).
    pub(super) fn has_work(&self) -> bool {
        !self.ready.is_empty() || !self.active.is_empty()
    }

    // ----- command results -------------------------------------------------

    fn set_error(&mut self, slot: u32, sense_key: u8, code: Asc, info: Option<u64>) {
        let format = self.sense_format();
        let c = &mut self.cmds[slot as usize];
        let mut sense = Sense::new(sense_key, code);
        sense.information = info;
        let mut buf = [0u8; SENSE_BUFFER_SIZE];
        let n = sense.encode(format, &mut buf);
        c.status = status::CHECK_CONDITION;
        c.sense.fill(0);
        c.sense[..n].copy_from_slice(&buf[..n]);
        c.sense_len = n as u8;
        c.resp_data_len = 0;
        c.drop_data_in();
    }

    /// `scst_set_busy`.
    fn set_busy(&mut self, slot: u32) {
        let c = &mut self.cmds[slot as usize];
        c.status = status::BUSY;
        c.sense_len = 0;
        c.resp_data_len = 0;
        c.drop_data_in();
    }

    fn set_good(&mut self, slot: u32) {
        let c = &mut self.cmds[slot as usize];
        c.status = status::GOOD;
        c.sense_len = 0;
    }

    /// Marks a command finished; it is processed by `settle`.
    fn complete(&mut self, slot: u32) {
        let c = &mut self.cmds[slot as usize];
        if matches!(c.stage, Stage::InCore | Stage::Active) {
            c.stage = Stage::Completing;
            self.completing.push_back(slot);
        }
    }

    fn complete_error(&mut self, slot: u32, sense_key: u8, code: Asc) {
        self.set_error(slot, sense_key, code, None);
        self.complete(slot);
    }

    fn complete_busy(&mut self, slot: u32) {
        self.set_busy(slot);
        self.complete(slot);
    }

    /// Finishes an aborted command without executing it (its status stays
    /// as it was; the initiator sees it as aborted).
    fn complete_aborted(&mut self, slot: u32) {
        let c = &mut self.cmds[slot as usize];
        c.sense_len = 0;
        c.resp_data_len = 0;
        c.drop_data_in();
        self.complete(slot);
    }

    // ----- ucmds and the ready list -----------------------------------------

    /// `dev_user_alloc_ucmd` + `cmd_insert_hash`: the next handle from the
    /// per-device counter that no live ucmd holds.
    fn alloc_ucmd(&mut self) -> u32 {
        let ui = match self.free_ucmds.pop() {
            Some(ui) => ui,
            None => {
                self.ucmds.push(Ucmd::new());
                (self.ucmds.len() - 1) as u32
            }
        };
        let h = loop {
            let h = self.handle_counter;
            self.handle_counter = h.wrapping_add(1);
            if !self.by_h.contains_key(&h) {
                break h;
            }
        };
        self.by_h.insert(h, ui);
        let u = &mut self.ucmds[ui as usize];
        *u = Ucmd {
            in_use: true,
            h,
            on_free: ScstUserScsiOnFreeCmd::default(),
            ..Ucmd::new()
        };
        ui
    }

    /// `ucmd_put` reaching zero: free the ucmd when nothing references it.
    fn maybe_free_ucmd(&mut self, ui: u32) {
        let u = &self.ucmds[ui as usize];
        if !u.in_use || u.cmd != NONE || u.queued || u.sent || u.background || u.own.is_some() {
            return;
        }
        let h = u.h;
        self.by_h.remove(&h);
        self.ucmds[ui as usize].in_use = false;
        self.free_ucmds.push(ui);
    }

    /// `dev_user_add_to_ready`: mgmt ucmds go after the queued mgmt ucmds
    /// at the head, PARSE/ALLOC_MEM and HEAD OF QUEUE commands right after
    /// the mgmt ucmds, everything else to the tail.
    fn add_to_ready(&mut self, ui: u32, state: UState, subcode: u32) {
        let u = &mut self.ucmds[ui as usize];
        u.state = state;
        u.subcode = subcode;
        u.unjammed = false;
        u.queued = true;
        u.sent = false;
        let hoq = state == UState::Execing
            && u.cmd != NONE
            && self.cmds[u.cmd as usize].queue_type == SCST_CMD_QUEUE_HEAD_OF_QUEUE;
        if state.is_mgmt() {
            self.ready.insert(self.mgmt_prefix, ui);
            self.mgmt_prefix += 1;
        } else if matches!(state, UState::Parsing | UState::BufAllocing) || hoq {
            self.ready.insert(self.mgmt_prefix, ui);
        } else {
            self.ready.push_back(ui);
        }
        self.queued_since = true;
    }

    fn pop_ready(&mut self) -> Option<u32> {
        let ui = self.ready.pop_front()?;
        if self.mgmt_prefix > 0 {
            self.mgmt_prefix -= 1;
        }
        self.ucmds[ui as usize].queued = false;
        Some(ui)
    }

    fn remove_ready_at(&mut self, i: usize) -> u32 {
        let ui = self.ready.remove(i).expect("index in range");
        if i < self.mgmt_prefix {
            self.mgmt_prefix -= 1;
        }
        self.ucmds[ui as usize].queued = false;
        ui
    }

    // ----- the SGV cache ------------------------------------------------------

    fn is_buff_cached(&self, dir: u8) -> bool {
        match self.dev().opt.memory_reuse_type {
            SCST_USER_MEM_REUSE_ALL => true,
            SCST_USER_MEM_REUSE_READ => dir == SCST_DATA_READ,
            SCST_USER_MEM_REUSE_WRITE => dir == SCST_DATA_WRITE,
            _ => false,
        }
    }

    /// A cached buffer of `order` (the most recently freed one): its owner
    /// and address.
    fn cache_get(&mut self, order: u8) -> Option<(u32, u64)> {
        let (_, owner, pbuf) = self.idle.get_mut(usize::from(order))?.pop_back()?;
        self.idle_bytes -= class_bytes(order);
        Some((owner, pbuf))
    }

    /// `sgv_pool_free`: the buffer of `owner` goes idle; over budget, the
    /// oldest idle buffers are evicted.
    fn cache_put(&mut self, owner: u32) {
        let Some(own) = self.ucmds[owner as usize].own.as_mut() else {
            return;
        };
        if self.gone {
            // The pools are flushed on release; nothing is cached any more.
            self.ucmds[owner as usize].own = None;
            self.maybe_free_ucmd(owner);
            return;
        }
        let (order, pbuf) = (own.order, own.pbuf);
        self.idle_seq += 1;
        self.idle[usize::from(order)].push_back((self.idle_seq, owner, pbuf));
        self.idle_bytes += class_bytes(order);
        while self.idle_bytes > self.cfg.sgv_cache_bytes {
            if !self.evict_oldest() {
                break;
            }
        }
    }

    fn evict_oldest(&mut self) -> bool {
        let Some(order) = (0..SGV_ORDERS)
            .filter_map(|o| self.idle[o].front().map(|&(seq, _, _)| (seq, o)))
            .min()
            .map(|(_, o)| o)
        else {
            return false;
        };
        let (_, owner, _) = self.idle[order].pop_front().expect("non-empty");
        self.idle_bytes -= class_bytes(order as u8);
        self.evict(owner);
        true
    }

    /// `dev_user_on_cached_mem_free`: tell the handler, by the handle of
    /// the command that supplied the buffer.
    fn evict(&mut self, owner: u32) {
        self.stats.evictions += 1;
        if self.gone {
            self.ucmds[owner as usize].own = None;
            self.maybe_free_ucmd(owner);
            return;
        }
        self.add_to_ready(owner, UState::OnCacheFreeing, subcode::ON_CACHED_MEM_FREE);
    }

    /// `sgv_pool_flush`: evicts every idle buffer. Returns how many.
    pub(super) fn flush_idle(&mut self) -> usize {
        let mut n = 0;
        while self.evict_oldest() {
            n += 1;
        }
        n
    }

    /// `dev_user_free_sgv`: a cached buffer returns to the cache.
    fn free_sgv(&mut self, ui: u32) {
        let u = &mut self.ucmds[ui as usize];
        let owner = u.buf_owner;
        u.buf_owner = NONE;
        if u.buff_cached && owner != NONE {
            self.cache_put(owner);
        }
    }

    // ----- registration -----------------------------------------------------

    pub(super) fn idle_bytes(&self) -> usize {
        self.idle_bytes
    }

    /// `dev_user_prealloc_buffer` after the argument checks: a cached
    /// buffer owned by a new ucmd. Returns its handle.
    pub(super) fn prealloc(&mut self, pbuf: u64, len: u32) -> Result<u32, Errno> {
        let ui = self.alloc_ucmd();
        let fail = |st: &mut State, e: Errno| {
            st.maybe_free_ucmd(ui);
            Err(e)
        };
        if !page_aligned(pbuf) {
            return fail(self, Errno::EINVAL);
        }
        let n = pages(len as usize);
        // The SGV object takes 1 << order pages from the mapped ones; a
        // length that is not a power of two of pages runs out of pages.
        if n == 0 || !n.is_power_of_two() || order_of(len as usize) as usize >= SGV_ORDERS {
            return fail(self, Errno::ENOMEM);
        }
        if let Err(e) = copy::probe_writable(pbuf, len as usize, PAGE_SIZE) {
            return fail(self, e);
        }
        let u = &mut self.ucmds[ui as usize];
        u.buff_cached = true;
        u.ubuff = pbuf;
        u.own = Some(OwnBuf {
            pbuf,
            order: order_of(len as usize),
        });
        let h = u.h;
        self.cache_put(ui);
        Ok(h)
    }

    // ----- sessions -----------------------------------------------------------

    pub(super) fn session_index(&self, sess_h: u64) -> Option<u32> {
        let off = sess_h.checked_sub(SESS_H_BASE)?;
        if !off.is_multiple_of(1 << 12) {
            return None;
        }
        let i = usize::try_from(off >> 12).ok()?;
        (i < self.sessions.len()).then_some(i as u32)
    }

    pub(super) fn session_state(&self, sess: u32) -> SessState {
        self.sessions[sess as usize].state
    }

    pub(super) fn session_deadline(&self, sess: u32) -> Instant {
        self.sessions[sess as usize].deadline
    }

    /// `dev_user_attach_tgt`: queues ATTACH_SESS; the caller waits.
    pub(super) fn begin_attach(&mut self, lun: u64, initiator: &str) -> Result<u64, SimError> {
        if self.gone {
            return Err(SimError::DeviceGone);
        }
        if self.dev.is_none() {
            return Err(SimError::NotRegistered);
        }
        let index = self.sessions.len() as u32;
        let sess_h = SESS_H_BASE + (u64::from(index) << 12);
        let mut name = [0u8; SCST_MAX_EXTERNAL_NAME];
        // strlcpy(.., sizeof - 1): at most 254 bytes and a NUL.
        let n = initiator.len().min(SCST_MAX_EXTERNAL_NAME - 2);
        name[..n].copy_from_slice(&initiator.as_bytes()[..n]);
        self.sessions.push(Session {
            sess_h,
            lun,
            initiator: name,
            state: SessState::Attaching,
            deadline: Instant::now() + self.cfg.attach_timeout,
            active: 0,
            next_sn: 0,
            ua_capacity: false,
        });
        let ui = self.alloc_ucmd();
        self.ucmds[ui as usize].mgmt = index;
        self.add_to_ready(ui, UState::AttachSess, subcode::ATTACH_SESS);
        self.stats.attach_sent += 1;
        Ok(sess_h)
    }

    /// The caller of `attach_tgt` gave up (`DEV_USER_ATTACH_TIMEOUT`).
    pub(super) fn attach_timed_out(&mut self, sess: u32) {
        let s = &mut self.sessions[sess as usize];
        if s.state == SessState::Attaching {
            s.state = SessState::TimedOut;
        }
    }

    /// `dev_user_detach_tgt`: DETACH_SESS is queued; nobody waits for it.
    pub(super) fn detach(&mut self, sess: u32) -> Result<(), SimError> {
        let s = &self.sessions[sess as usize];
        if s.state != SessState::Active {
            return Err(SimError::UnknownSession);
        }
        if s.active > 0 {
            return Err(SimError::SessionBusy);
        }
        self.sessions[sess as usize].state = SessState::Gone;
        if self.gone {
            return Ok(());
        }
        let ui = self.alloc_ucmd();
        self.ucmds[ui as usize].mgmt = sess;
        self.add_to_ready(ui, UState::DetachSess, subcode::DETACH_SESS);
        self.stats.detach_sent += 1;
        Ok(())
    }

    /// `scst_capacity_data_changed`: a unit attention for every session.
    pub(super) fn capacity_changed(&mut self) {
        for s in &mut self.sessions {
            if s.state == SessState::Active {
                s.ua_capacity = true;
            }
        }
    }

    /// `dev_user_process_reply_sess`.
    fn reply_sess(&mut self, ui: u32, result: i32) {
        let u = &self.ucmds[ui as usize];
        if u.state == UState::AttachSess {
            let s = &mut self.sessions[u.mgmt as usize];
            // A reply after the 5 s are over finds nobody waiting.
            if s.state == SessState::Attaching {
                s.state = if Instant::now() > s.deadline {
                    SessState::TimedOut
                } else if result == 0 {
                    SessState::Active
                } else {
                    SessState::Failed(result)
                };
            }
        }
        self.maybe_free_ucmd(ui);
    }

    // ----- submission -----------------------------------------------------------

    /// The target driver hands a command to the core (`scst_cmd_init_done`):
    /// it goes on the active list, processed in the handler's next call.
    pub(super) fn submit(
        &mut self,
        sess_h: u64,
        cdb: &[u8],
        data: SimData<'_>,
        tag: u64,
        queue_type: u8,
    ) -> Result<(), SimSubmitError> {
        if self.gone || self.dev.is_none() {
            return Err(SimSubmitError::NoDevice);
        }
        let sess = self
            .session_index(sess_h)
            .filter(|&s| self.sessions[s as usize].state == SessState::Active)
            .ok_or(SimSubmitError::UnknownSession)?;
        if cdb.is_empty() || cdb.len() > SCST_MAX_CDB_SIZE {
            return Err(SimSubmitError::BadCdb);
        }
        let cdb_len = parse::cdb_len(cdb[0], cdb.len());
        if cdb.len() < cdb_len {
            return Err(SimSubmitError::BadCdb);
        }
        let (exp_dir, exp_len, out) = match data {
            SimData::None | SimData::Out(&[]) => (SCST_DATA_NONE, 0, None),
            SimData::Out(bytes) => (SCST_DATA_WRITE, bytes.len(), Some(bytes)),
            SimData::In(n) => (SCST_DATA_READ, n, None),
        };
        if exp_len > self.cfg.max_transfer_bytes {
            return Err(SimSubmitError::TooLarge);
        }
        let slot = self.free_ext.pop().ok_or(SimSubmitError::Full)?;
        let s = &mut self.sessions[sess as usize];
        s.active += 1;
        let sn = s.next_sn;
        s.next_sn = sn.wrapping_add(1);
        let c = &mut self.cmds[slot as usize];
        c.stage = Stage::Active;
        c.tag = tag;
        c.parent = NONE;
        c.sess = sess;
        c.cdb = [0; SCST_MAX_CDB_SIZE];
        c.cdb[..cdb_len].copy_from_slice(&cdb[..cdb_len]);
        c.cdb_len = cdb_len as u16;
        c.queue_type = queue_type;
        c.sn = sn;
        c.exp_dir = exp_dir;
        c.exp_len = exp_len;
        if c.staging.len() < exp_len {
            c.staging.resize(exp_len, 0);
        }
        c.out_len = 0;
        if let Some(bytes) = out {
            c.staging[..bytes.len()].copy_from_slice(bytes);
            c.out_len = bytes.len();
        }
        Self::reset_result(c);
        self.in_use_cmds += 1;
        self.active.push_back(slot);
        self.unnotified += 1;
        self.stats.submitted += 1;
        Ok(())
    }

    fn reset_result(c: &mut Cmd) {
        c.drop_data_in();
        c.status = status::GOOD;
        c.sense_len = 0;
        c.resp_data_len = 0;
        c.aborted = false;
        c.ucmd = NONE;
        c.child = NONE;
        c.caw_phase = 0;
        c.ws_ranges.clear();
        c.ws_idx = 0;
        c.tm_waiters.clear();
    }

    /// An internal command of the core (COMPARE AND WRITE, WRITE SAME) on
    /// `parent`'s session: READ(16)/WRITE(16) of `blocks` at `lba`. Its
    /// data-out is filled by the caller. Returns None when no slot is free.
    fn new_internal(&mut self, parent: u32, write: bool, lba: u64, blocks: u32) -> Option<u32> {
        let slot = self.free_int.pop()?;
        let bs = self.dev().block_size as usize;
        let sess = self.cmds[parent as usize].sess;
        let s = &mut self.sessions[sess as usize];
        s.active += 1;
        let sn = s.next_sn;
        s.next_sn = sn.wrapping_add(1);
        let len = blocks as usize * bs;
        let c = &mut self.cmds[slot as usize];
        c.stage = Stage::Active;
        c.tag = 0;
        c.parent = parent;
        c.sess = sess;
        c.cdb = [0; SCST_MAX_CDB_SIZE];
        c.cdb[0] = if write { 0x8A } else { 0x88 };
        c.cdb[2..10].copy_from_slice(&lba.to_be_bytes());
        c.cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
        c.cdb_len = 16;
        c.queue_type = SCST_CMD_QUEUE_SIMPLE;
        c.sn = sn;
        c.exp_dir = if write {
            SCST_DATA_WRITE
        } else {
            SCST_DATA_READ
        };
        c.exp_len = len;
        if c.staging.len() < len {
            c.staging.resize(len, 0);
        }
        c.out_len = if write { len } else { 0 };
        Self::reset_result(c);
        self.in_use_cmds += 1;
        self.active.push_back(slot);
        self.cmds[parent as usize].child = slot;
        self.stats.internal_cmds += 1;
        Some(slot)
    }

    // ----- the core's state machine ---------------------------------------------

    /// `dev_user_process_scst_commands`: runs the core for every command on
    /// the active list, then settles copies and completions.
    pub(super) fn process_active(&mut self) {
        // The initiator wrote these commands on another CPU: start fetching
        // all of them before working on the first (a simulator's speed-up;
        // it changes nothing the handler can see).
        for &slot in self.active.iter() {
            prefetch_cmd(&self.cmds[slot as usize]);
        }
        loop {
            while let Some(slot) = self.active.pop_front() {
                self.start_cmd(slot);
            }
            self.settle();
            if self.active.is_empty() {
                break;
            }
        }
    }

    /// `scst_pre_parse` + `dev_user_parse`.
    fn start_cmd(&mut self, slot: u32) {
        self.cmds[slot as usize].stage = Stage::InCore;
        if self.gone {
            return self.complete_busy(slot);
        }
        if self.cmds[slot as usize].aborted {
            return self.complete_aborted(slot);
        }
        let block_size = self.dev().block_size;
        let type_ = self.dev().type_;
        let parse_type = self.dev().opt.parse_type;
        let c = &mut self.cmds[slot as usize];
        let info = parse::parse(&c.cdb[..usize::from(c.cdb_len)], block_size);
        if let Ok(i) = info {
            if i.local == Local::Fully {
                return self.exec_fully_local(slot);
            }
        }
        let c = &mut self.cmds[slot as usize];
        match info {
            Ok(i) => {
                c.dir = i.direction;
                c.lba = i.lba;
                c.data_len = i.data_len;
                c.bufflen = i.bufflen;
                c.op_flags = i.op_flags;
                c.timeout = i.timeout;
                c.local = i.local;
            }
            Err(_) => {
                // What the core knows of an unknown command: the target
                // driver's expected values.
                c.dir = c.exp_dir;
                c.lba = 0;
                c.data_len = 0;
                c.bufflen = i32::try_from(c.exp_len).unwrap_or(i32::MAX);
                c.op_flags = SCST_UNKNOWN_LBA | SCST_UNKNOWN_LENGTH;
                c.timeout = 60;
                c.local = Local::No;
            }
        }
        c.out_bufflen = 0;
        let ui = self.alloc_ucmd();
        self.ucmds[ui as usize].cmd = slot;
        self.cmds[slot as usize].ucmd = ui;
        // Only the SBC parser is modelled: other device types behave as
        // PARSE_CALL (the kernel forces CALL for types it has no parser for).
        let parse_type = if matches!(type_, TYPE_DISK | 0x05 | 0x07) {
            parse_type
        } else {
            SCST_USER_PARSE_CALL
        };
        match (parse_type, info) {
            (SCST_USER_PARSE_STANDARD, Ok(_)) | (SCST_USER_PARSE_EXCEPTION, Ok(_)) => {
                self.after_parse(slot)
            }
            (SCST_USER_PARSE_STANDARD, Err(ParseFail::UnknownOpcode)) => self.complete_error(
                slot,
                key::ILLEGAL_REQUEST,
                Asc::INVALID_COMMAND_OPERATION_CODE,
            ),
            (SCST_USER_PARSE_STANDARD, Err(ParseFail::InvalidField)) => {
                self.complete_error(slot, key::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB)
            }
            _ => {
                self.stats.parse_sent += 1;
                self.add_to_ready(ui, UState::Parsing, subcode::PARSE);
            }
        }
    }

    /// After a successful parse (`dev_user_parse` `done:` and
    /// `scst_parse_cmd`): no buffer → no data direction; then memory.
    fn after_parse(&mut self, slot: u32) {
        let c = &mut self.cmds[slot as usize];
        if c.bufflen == 0 {
            c.dir = SCST_DATA_NONE;
        }
        if c.aborted {
            return self.complete_aborted(slot);
        }
        // The sim does not model SCST's reconciliation of the target
        // driver's expected transfer with the CDB (residuals, overflow):
        // data-out must match the buffer exactly and goes only with
        // WRITE-direction commands.
        let ok = match c.dir {
            SCST_DATA_WRITE => c.exp_dir == SCST_DATA_WRITE && c.out_len == c.bufflen as usize,
            SCST_DATA_BIDI => true,
            _ => c.exp_dir != SCST_DATA_WRITE,
        };
        if !ok {
            return self.complete_error(slot, key::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB);
        }
        if c.dir == SCST_DATA_NONE {
            self.exec_stage(slot);
        } else {
            self.alloc_stage(slot);
        }
    }

    /// Buffer bytes a command needs (`dev_user_alloc_sg`'s `orig_bufflen`):
    /// BIDI puts the data-out after the page-rounded data-in.
    fn buffer_len(c: &Cmd) -> usize {
        let bufflen = c.bufflen.max(0) as usize;
        if c.dir == SCST_DATA_BIDI {
            pages(bufflen) * PAGE_SIZE + c.out_bufflen.max(0) as usize
        } else {
            bufflen
        }
    }

    /// `dev_user_alloc_space`.
    fn alloc_stage(&mut self, slot: u32) {
        let c = &self.cmds[slot as usize];
        let ui = c.ucmd;
        let dir = c.dir;
        let local = c.op_flags & SCST_LOCAL_CMD != 0;
        let len = Self::buffer_len(c);
        let cached = self.is_buff_cached(dir);
        self.ucmds[ui as usize].state = UState::BufAllocing;
        self.ucmds[ui as usize].buff_cached = cached;
        let order = order_of(len);
        if cached && usize::from(order) < SGV_ORDERS {
            if let Some((owner, pbuf)) = self.cache_get(order) {
                self.stats.cache_hits += 1;
                let u = &mut self.ucmds[ui as usize];
                u.ubuff = pbuf;
                u.buf_owner = owner;
                return self.data_out_ready(slot);
            }
            self.stats.cache_misses += 1;
        }
        if dir & SCST_DATA_WRITE == 0 && !local {
            // Delayed allocation: EXEC with pbuf 0, the handler allocates.
            return self.exec_stage(slot);
        }
        let alloc_len = if cached { class_bytes(order) } else { len };
        let u = &mut self.ucmds[ui as usize];
        u.alloc_len = i32::try_from(alloc_len).unwrap_or(i32::MAX);
        self.stats.alloc_mem_sent += 1;
        self.add_to_ready(ui, UState::BufAllocing, subcode::ALLOC_MEM);
    }

    /// The buffer is known: the target driver receives the data-out into
    /// it (copied in the batch at the end of this step), then EXEC.
    fn data_out_ready(&mut self, slot: u32) {
        let c = &self.cmds[slot as usize];
        if c.dir == SCST_DATA_WRITE && c.out_len > 0 {
            let remote = self.ucmds[c.ucmd as usize].ubuff;
            self.pending_out.push(PendingCopy {
                slot,
                remote,
                len: c.out_len,
                // Only cache hits come here; ALLOC_MEM replies copy at once.
                pinned: true,
            });
        } else {
            self.exec_stage(slot);
        }
    }

    /// `dev_user_exec`, or the core's local execution.
    fn exec_stage(&mut self, slot: u32) {
        let c = &self.cmds[slot as usize];
        if c.aborted {
            return self.complete_aborted(slot);
        }
        match c.local {
            Local::No | Local::Fully => {}
            Local::Reserve => {
                self.set_good(slot);
                return self.complete(slot);
            }
            Local::NotModelled => {
                return self.complete_error(
                    slot,
                    key::ILLEGAL_REQUEST,
                    Asc::INVALID_COMMAND_OPERATION_CODE,
                )
            }
            Local::CompareAndWrite => return self.caw_start(slot),
        }
        let ui = c.ucmd;
        let dir = c.dir;
        let len = Self::buffer_len(c);
        let u = &mut self.ucmds[ui as usize];
        u.alloc_len = if u.ubuff == 0 && dir != SCST_DATA_NONE {
            let n = if u.buff_cached {
                class_bytes(order_of(len))
            } else {
                len
            };
            i32::try_from(n).unwrap_or(i32::MAX)
        } else {
            0
        };
        self.stats.exec_sent += 1;
        self.add_to_ready(ui, UState::Execing, subcode::EXEC);
    }

    /// REPORT LUNS and REQUEST SENSE, answered by the core.
    fn exec_fully_local(&mut self, slot: u32) {
        let d_sense = self.dev().opt.d_sense != 0;
        let c = &mut self.cmds[slot as usize];
        let mut out = [0u8; 32];
        let (len, alloc) = match c.cdb[0] {
            0xA0 => {
                let alloc = u32::from_be_bytes([c.cdb[6], c.cdb[7], c.cdb[8], c.cdb[9]]);
                if alloc < REPORT_LUNS_MIN_ALLOC {
                    return self.complete_error(
                        slot,
                        key::ILLEGAL_REQUEST,
                        Asc::INVALID_FIELD_IN_CDB,
                    );
                }
                let lun = self.sessions[c.sess as usize].lun;
                out[0..4].copy_from_slice(&8u32.to_be_bytes());
                if lun < 256 {
                    out[9] = lun as u8;
                } else {
                    // Flat space addressing.
                    out[8] = 0x40 | ((lun >> 8) & 0x3F) as u8;
                    out[9] = lun as u8;
                }
                (16, alloc as usize)
            }
            _ => {
                let desc = c.cdb[1] & 0x01 != 0 || d_sense;
                let n = dataplane::scsi::request_sense_data(desc, &mut out);
                (n, usize::from(c.cdb[4]))
            }
        };
        let n = len.min(alloc);
        let keep = n.min(c.exp_len);
        c.staging[..keep].copy_from_slice(&out[..keep]);
        c.in_len = keep;
        c.resp_data_len = n as i32;
        c.status = status::GOOD;
        self.complete(slot);
    }

    /// Runs the batched copies and the completions of this call, in order:
    /// data-in from the handler first (its commands complete after), then
    /// completions, then data-out into cached buffers (their EXECs are
    /// queued after).
    pub(super) fn settle(&mut self) {
        loop {
            if !self.pending_in.is_empty() {
                self.flush_in();
            }
            if !self.completing.is_empty() {
                self.drain_completions();
                continue;
            }
            if !self.pending_out.is_empty() {
                self.flush_out();
                continue;
            }
            break;
        }
    }

    /// Performs `list`; `self.failed` gets the indices (into `list`, in
    /// order) of the copies that faulted.
    fn run_copies(&mut self, dir: Dir, list: &[PendingCopy]) {
        self.copy_list.clear();
        self.copy_index.clear();
        self.failed.clear();
        for (i, p) in list.iter().enumerate() {
            let c = &mut self.cmds[p.slot as usize];
            debug_assert!(p.len <= c.staging.len());
            let staging = &mut c.staging[..p.len];
            if self.trust_pinned && p.pinned {
                let remote = p.remote as usize as *mut u8;
                match dir {
                    // SAFETY: `trust_mapped_buffers`' contract: a pinned
                    // buffer (one the handler supplied earlier, not yet
                    // released by ON_FREE_CMD or ON_CACHED_MEM_FREE) stays
                    // mapped, readable and writable, for at least the
                    // length it was supplied with (≥ `len`, the command's
                    // transfer), and the handler does not touch it while
                    // the kernel owns it; `staging` is this command's own
                    // buffer, so the ranges do not overlap.
                    Dir::FromHandler => unsafe {
                        std::ptr::copy_nonoverlapping(remote, staging.as_mut_ptr(), p.len);
                    },
                    // SAFETY: as above.
                    Dir::ToHandler => unsafe {
                        std::ptr::copy_nonoverlapping(staging.as_ptr(), remote, p.len);
                    },
                }
                continue;
            }
            self.copy_list
                .push((staging.as_mut_ptr() as usize, p.remote, p.len));
            self.copy_index.push(i);
        }
        let failed = &mut self.failed;
        let index = &self.copy_index;
        // SAFETY: each local pointer is the start of a distinct command's
        // staging buffer (one copy per command per batch), valid for `len`
        // bytes (checked when the copy was queued), and nothing touches
        // those buffers until `run` returns.
        unsafe {
            self.batch
                .run(dir, &self.copy_list, |i| failed.push(index[i]));
        }
        self.copy_list.clear();
    }

    /// Data-in copies of EXEC replies (`dev_user_map_buf` + the transfer).
    /// A fault fails the command with ABORTED COMMAND 44/00.
    fn flush_in(&mut self) {
        let list = std::mem::take(&mut self.pending_in);
        self.run_copies(Dir::FromHandler, &list);
        for i in 0..self.failed.len() {
            let slot = list[self.failed[i]].slot;
            self.stats.copy_faults += 1;
            self.set_error(
                slot,
                key::ABORTED_COMMAND,
                Asc::INTERNAL_TARGET_FAILURE,
                None,
            );
        }
        self.pending_in = list;
        self.pending_in.clear();
    }

    /// Data-out copies into cached buffers; then EXEC. A fault fails the
    /// command with HARDWARE ERROR 44/00 (like a failed mapping).
    fn flush_out(&mut self) {
        let list = std::mem::take(&mut self.pending_out);
        self.run_copies(Dir::ToHandler, &list);
        let mut f = 0;
        for (i, p) in list.iter().enumerate() {
            if f < self.failed.len() && self.failed[f] == i {
                f += 1;
                self.stats.copy_faults += 1;
                self.complete_error(p.slot, key::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE);
            } else {
                self.exec_stage(p.slot);
            }
        }
        self.pending_out = list;
        self.pending_out.clear();
    }

    fn drain_completions(&mut self) {
        while let Some(slot) = self.completing.pop_front() {
            self.finalize(slot);
        }
    }

    /// The command finished (`scst_cmd_done` → `dev_done` → xmit).
    fn finalize(&mut self, slot: u32) {
        self.stats.completed += 1;
        self.snoop_block_size(slot);
        let c = &mut self.cmds[slot as usize];
        c.stage = Stage::Done;
        let waiters = std::mem::take(&mut c.tm_waiters);
        for &tm in &waiters {
            self.tm_cmd_finished(tm);
        }
        let c = &mut self.cmds[slot as usize];
        c.tm_waiters = waiters;
        c.tm_waiters.clear();
        let parent = c.parent;
        if parent == NONE {
            self.done.push_back(slot);
        } else {
            self.child_done(parent, slot);
        }
    }

    /// `scst_block_generic_dev_done`: a disk's block size follows the READ
    /// CAPACITY data the handler returned (not with PARSE_CALL, where
    /// `dev_done` is NULL).
    fn snoop_block_size(&mut self, slot: u32) {
        let Some(dev) = self.dev.as_ref() else {
            return;
        };
        if dev.opt.parse_type == SCST_USER_PARSE_CALL || dev.type_ != TYPE_DISK {
            return;
        }
        let c = &self.cmds[slot as usize];
        if c.status != status::GOOD || c.ucmd == NONE {
            return;
        }
        let at = match (c.cdb[0], c.cdb[1] & 0x1F) {
            (0x25, _) => 4,
            (0x9E, 0x10) => 8,
            _ => return,
        };
        self.materialize_in(slot);
        let c = &self.cmds[slot as usize];
        if c.in_len < at + 4 {
            return;
        }
        let bs = u32::from_be_bytes([
            c.staging[at],
            c.staging[at + 1],
            c.staging[at + 2],
            c.staging[at + 3],
        ]);
        if bs.is_power_of_two() && bs >= 512 {
            if let Some(dev) = self.dev.as_mut() {
                dev.block_size = bs;
            }
        }
    }

    // ----- freeing ------------------------------------------------------------

    /// `dev_user_on_free_cmd` and the release of the command: ON_FREE_CMD
    /// when the handler saw the command and wants it; else the buffer goes
    /// straight back (`dev_user_process_reply_on_free`).
    fn free_cmd(&mut self, slot: u32) {
        let c = &self.cmds[slot as usize];
        let ui = c.ucmd;
        if ui != NONE {
            let on_free = ScstUserScsiOnFreeCmd {
                pbuf: self.ucmds[ui as usize].ubuff,
                resp_data_len: c.resp_data_len,
                buffer_cached: u8::from(self.ucmds[ui as usize].buff_cached),
                aborted: u8::from(self.ucmds[ui as usize].aborted),
                status: c.status,
                delivery_status: if c.aborted {
                    SCST_CMD_DELIVERY_ABORTED
                } else {
                    SCST_CMD_DELIVERY_SUCCESS
                },
            };
            let ignore = self.dev().opt.on_free_cmd_type == SCST_USER_ON_FREE_CMD_IGNORE;
            let u = &mut self.ucmds[ui as usize];
            u.cmd = NONE;
            if ignore || !u.seen || self.gone {
                self.on_free_processed(ui);
            } else {
                u.on_free = on_free;
                self.stats.on_free_sent += 1;
                self.add_to_ready(ui, UState::OnFreeing, subcode::ON_FREE_CMD);
            }
        }
        let c = &mut self.cmds[slot as usize];
        c.stage = Stage::Free;
        c.ucmd = NONE;
        let sess = c.sess as usize;
        if c.parent == NONE {
            self.free_ext.push(slot);
        } else {
            c.parent = NONE;
            self.free_int.push(slot);
        }
        self.sessions[sess].active -= 1;
        self.in_use_cmds -= 1;
    }

    fn on_free_processed(&mut self, ui: u32) {
        self.free_sgv(ui);
        self.maybe_free_ucmd(ui);
    }

    /// Moves a command's data-in from its pinned handler buffer into
    /// `staging` (for the simulator's own use of it, or before the handler
    /// goes away).
    fn materialize_in(&mut self, slot: u32) {
        let c = &mut self.cmds[slot as usize];
        if c.in_remote == 0 {
            return;
        }
        let remote = c.in_remote as usize as *const u8;
        // SAFETY: `in_remote` is only set in trusted mode for a pinned
        // buffer of this command, which is not freed yet (the command
        // holds it until `free_cmd`) and, by `trust_mapped_buffers`'
        // contract, stays mapped for at least `in_len` bytes while the
        // driver exists (the driver's drop materializes first); `staging`
        // holds `exp_len` ≥ `in_len` bytes and is this command's own.
        unsafe {
            std::ptr::copy_nonoverlapping(remote, c.staging.as_mut_ptr(), c.in_len);
        }
        c.in_remote = 0;
    }

    /// Moves every deferred data-in into staging: the handler's memory is
    /// about to go.
    fn materialize_all_in(&mut self) {
        for slot in 0..self.cmds.len() as u32 {
            self.materialize_in(slot);
        }
    }

    // ----- the initiator side ---------------------------------------------------

    /// Hands every finished command to `f`, then frees it (the target
    /// driver's `xmit_response` done → `scst_tgt_cmd_done`) — except a
    /// GOOD command whose data-in is still in its pinned handler buffer:
    /// that one goes to `deferred` (it stays allocated, off every list)
    /// for the caller to complete without the state lock and then hand to
    /// [`finish_reap`](Self::finish_reap). Returns the commands handed to
    /// `f` here.
    pub(super) fn reap(
        &mut self,
        f: &mut dyn FnMut(&SimCompletion<'_>),
        deferred: &mut Vec<DeferredReap>,
    ) -> usize {
        let mut n = 0;
        while let Some(slot) = self.done.pop_front() {
            let c = &self.cmds[slot as usize];
            if c.in_remote != 0 && !c.aborted && c.status == status::GOOD {
                deferred.push(DeferredReap {
                    slot,
                    tag: c.tag,
                    data_in_len: c.in_len,
                    addr: c.in_remote,
                });
                continue;
            }
            // An aborted command has no response (SCST does not send it):
            // the initiator sees TASK ABORTED without data or sense.
            let (status, sense_len, in_len) = if c.aborted {
                (status::TASK_ABORTED, 0, 0)
            } else if c.status == status::CHECK_CONDITION {
                (c.status, usize::from(c.sense_len), c.in_len)
            } else {
                (c.status, 0, c.in_len)
            };
            f(&SimCompletion {
                tag: c.tag,
                status,
                sense: &c.sense[..sense_len],
                data_in_len: in_len,
                aborted: c.aborted,
                data: if c.in_remote != 0 && in_len > 0 {
                    DataIn::Pinned(c.in_remote)
                } else {
                    DataIn::Staged(&c.staging[..in_len])
                },
            });
            self.free_cmd(slot);
            self.stats.reaped += 1;
            n += 1;
        }
        n
    }

    /// Frees a command [`reap`](Self::reap) deferred, once the initiator
    /// has its completion.
    pub(super) fn finish_reap(&mut self, d: &DeferredReap) {
        self.cmds[d.slot as usize].in_remote = 0;
        self.free_cmd(d.slot);
        self.stats.reaped += 1;
    }

    // ----- fetching -------------------------------------------------------------

    /// `__dev_user_get_next_cmd`: the next ready ucmd, after the core
    /// checks that make a command finish instead of reaching the handler.
    pub(super) fn fetch_one(&mut self) -> Option<u32> {
        loop {
            let ui = self.pop_ready()?;
            let u = &self.ucmds[ui as usize];
            if u.cmd != NONE {
                let slot = u.cmd;
                let state = u.state;
                let c = &self.cmds[slot as usize];
                match state {
                    UState::Execing => {
                        // scst_check_local_events: aborted, unit attention.
                        if c.aborted {
                            self.complete_aborted(slot);
                            continue;
                        }
                        let sess = c.sess as usize;
                        if self.sessions[sess].ua_capacity && c.op_flags & SCST_SKIP_UA == 0 {
                            self.sessions[sess].ua_capacity = false;
                            self.complete_error(slot, key::UNIT_ATTENTION, Asc::new(0x2A, 0x09));
                            continue;
                        }
                    }
                    UState::Parsing | UState::BufAllocing if c.aborted => {
                        self.unjam(ui, false);
                        continue;
                    }
                    _ => {}
                }
            }
            let u = &mut self.ucmds[ui as usize];
            u.sent = true;
            u.seen = true;
            return Some(ui);
        }
    }

    /// Writes the subcommand of `ui` into `out` as `copy_to_user` of
    /// `user_cmd_payload_len` bytes: the header and the union member; the
    /// rest of the slot keeps its old bytes.
    pub(super) fn write_cmd(&self, ui: u32, out: &mut ScstUserGetCmd) {
        let u = &self.ucmds[ui as usize];
        out.cmd_h = u.h;
        out.subcode = u.subcode;
        let cmd = (u.cmd != NONE).then(|| &self.cmds[u.cmd as usize]);
        let sess_h = |sess: u32| self.sessions[sess as usize].sess_h;
        match u.state {
            UState::Parsing => {
                let c = cmd.expect("PARSE has a command");
                out.set_parse_cmd(&ScstUserScsiCmdParse {
                    sess_h: sess_h(c.sess),
                    cdb: c.cdb,
                    cdb_len: c.cdb_len,
                    lba: c.lba,
                    data_len: c.data_len,
                    bufflen: c.bufflen,
                    out_bufflen: c.out_bufflen,
                    timeout: c.timeout,
                    op_flags: c.op_flags,
                    queue_type: c.queue_type,
                    data_direction: c.dir,
                    expected_values_set: 1,
                    expected_data_direction: c.exp_dir,
                    expected_transfer_len: i32::try_from(c.exp_len).unwrap_or(i32::MAX),
                    expected_out_transfer_len: 0,
                    sn: c.sn,
                    ..Default::default()
                });
            }
            UState::BufAllocing => {
                let c = cmd.expect("ALLOC_MEM has a command");
                out.set_alloc_cmd(&ScstUserScsiCmdAllocMem {
                    sess_h: sess_h(c.sess),
                    cdb: c.cdb,
                    cdb_len: c.cdb_len,
                    alloc_len: u.alloc_len,
                    queue_type: c.queue_type,
                    data_direction: c.dir,
                    sn: c.sn,
                    ..Default::default()
                });
            }
            UState::Execing => {
                let c = cmd.expect("EXEC has a command");
                let (parent_cmd_h, parent_cmd_data_len) = if c.parent != NONE {
                    let p = &self.cmds[c.parent as usize];
                    let ph = if p.ucmd != NONE {
                        self.ucmds[p.ucmd as usize].h
                    } else {
                        0
                    };
                    (ph, i32::try_from(p.data_len).unwrap_or(i32::MAX))
                } else {
                    (0, 0)
                };
                let in_pages = pages(c.bufflen.max(0) as usize) as u64;
                out.set_exec_cmd(&ScstUserScsiCmdExec {
                    sess_h: sess_h(c.sess),
                    cdb: c.cdb,
                    cdb_len: c.cdb_len,
                    lba: c.lba,
                    data_len: c.data_len,
                    bufflen: c.bufflen,
                    alloc_len: u.alloc_len,
                    pbuf: u.ubuff,
                    queue_type: c.queue_type,
                    data_direction: c.dir,
                    partial: 0,
                    timeout: c.timeout,
                    p_out_buf: if u.ubuff != 0 {
                        u.ubuff + in_pages * PAGE_SIZE as u64
                    } else {
                        0
                    },
                    out_bufflen: c.out_bufflen,
                    sn: c.sn,
                    parent_cmd_h,
                    parent_cmd_data_len,
                    partial_offset: 0,
                    ..Default::default()
                });
            }
            UState::OnFreeing => out.set_on_free_cmd(&u.on_free),
            UState::OnCacheFreeing => out.set_on_cached_mem_free(&ScstUserOnCachedMemFree {
                pbuf: u.own.map_or(u.ubuff, |o| o.pbuf),
            }),
            UState::TmReceived | UState::TmDone => {
                let tm = &self.tms[u.mgmt as usize];
                out.set_tm_cmd(&ScstUserTm {
                    sess_h: sess_h(tm.sess),
                    fn_: tm.fn_,
                    cmd_h_to_abort: tm.cmd_h_to_abort,
                    cmd_sn: 0,
                    cmd_sn_set: 0,
                    ..Default::default()
                });
            }
            UState::AttachSess => {
                let s = &self.sessions[u.mgmt as usize];
                let mut target = [0u8; SCST_MAX_EXTERNAL_NAME];
                let t = self.cfg.target_name.as_bytes();
                let n = t.len().min(SCST_MAX_EXTERNAL_NAME - 2);
                target[..n].copy_from_slice(&t[..n]);
                out.set_sess(&ScstUserSess {
                    sess_h: s.sess_h,
                    lun: s.lun,
                    threads_num: 0,
                    rd_only: 0,
                    _pad0: 0,
                    scsi_transport_version: 0,
                    phys_transport_version: 0,
                    initiator_name: s.initiator,
                    target_name: target,
                });
            }
            UState::DetachSess => {
                out.set_sess(&ScstUserSess {
                    sess_h: self.sessions[u.mgmt as usize].sess_h,
                    lun: 0,
                    threads_num: 0,
                    rd_only: 0,
                    _pad0: 0,
                    scsi_transport_version: 0,
                    phys_transport_version: 0,
                    initiator_name: [0; SCST_MAX_EXTERNAL_NAME],
                    target_name: [0; SCST_MAX_EXTERNAL_NAME],
                });
            }
            UState::New => {}
        }
    }

    // ----- replies ----------------------------------------------------------------

    /// `dev_user_process_reply`.
    /// Starts loading what processing `replies` will read: their ucmds,
    /// then their commands (a simulator's speed-up: the commands were last
    /// touched long ago, many copies back).
    pub(super) fn prefetch_replies(&mut self, replies: &[ScstUserReplyCmd]) {
        self.reply_ucmds.clear();
        for r in replies {
            if let Some(&ui) = self.by_h.get(&r.cmd_h) {
                prefetch(&self.ucmds[ui as usize]);
                self.reply_ucmds.push(ui);
            }
        }
        for &ui in &self.reply_ucmds {
            let slot = self.ucmds[ui as usize].cmd;
            if let Some(c) = self.cmds.get(slot as usize) {
                prefetch_cmd(c);
            }
        }
    }

    pub(super) fn process_reply(&mut self, r: &ScstUserReplyCmd) -> Result<(), Errno> {
        let res = self.process_reply_inner(r);
        match res {
            Err(Errno::EINVAL) => self.stats.replies_einval += 1,
            Err(Errno::ESRCH) => self.stats.replies_esrch += 1,
            Err(Errno::EFAULT) => self.stats.replies_efault += 1,
            _ => {}
        }
        res
    }

    fn process_reply_inner(&mut self, r: &ScstUserReplyCmd) -> Result<(), Errno> {
        let Some(&ui) = self.by_h.get(&r.cmd_h) else {
            return Err(Errno::ESRCH);
        };
        let u = &self.ucmds[ui as usize];
        if u.background {
            // Any reply to a backgrounded command is its final EXEC reply;
            // the subcode is not checked (dev_user_process_reply).
            return self.reply_exec(ui, r);
        }
        if u.unjammed {
            // "Reply on unjammed ucmd, ignoring".
            return Ok(());
        }
        if !u.sent {
            return Err(Errno::EINVAL);
        }
        if r.subcode != u.subcode || subcode::state_nr(r.subcode) != u.state as u8 {
            self.unjam(ui, false);
            return Err(Errno::EINVAL);
        }
        let state = u.state;
        self.ucmds[ui as usize].sent = false;
        match state {
            UState::Parsing => self.reply_parse(ui, r),
            UState::BufAllocing => self.reply_alloc(ui, r),
            UState::Execing => self.reply_exec(ui, r),
            UState::OnFreeing => {
                self.on_free_processed(ui);
                Ok(())
            }
            UState::OnCacheFreeing => {
                self.cache_free_processed(ui);
                Ok(())
            }
            UState::TmReceived => {
                self.tm_received_done(ui);
                Ok(())
            }
            UState::TmDone => {
                self.tm_done(ui, r.result());
                Ok(())
            }
            UState::AttachSess | UState::DetachSess => {
                self.reply_sess(ui, r.result());
                Ok(())
            }
            UState::New => Err(Errno::EINVAL),
        }
    }

    fn cache_free_processed(&mut self, ui: u32) {
        self.ucmds[ui as usize].own = None;
        self.maybe_free_ucmd(ui);
    }

    /// Copies the handler's sense (`min(252, sense_len)` bytes).
    fn copy_sense(&mut self, slot: u32, sense: &ReplySense) -> Result<(), Errno> {
        let n = sense_copy_len(sense.sense_len);
        let c = &mut self.cmds[slot as usize];
        c.sense.fill(0);
        c.sense_len = 0;
        if n > 0 {
            copy::read_remote(&mut c.sense[..n], sense.psense_buffer)?;
        }
        c.sense_len = n as u8;
        Ok(())
    }

    /// `dev_user_process_reply_parse`.
    fn reply_parse(&mut self, ui: u32, r: &ScstUserReplyCmd) -> Result<(), Errno> {
        let slot = self.ucmds[ui as usize].cmd;
        let p = r.parse_reply();
        if p.status != 0 {
            if let Err(e) = self.copy_sense(slot, &p.sense()) {
                self.complete_error(slot, key::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE);
                return Err(e);
            }
            // scst_set_cmd_error_status.
            let c = &mut self.cmds[slot as usize];
            c.status = p.status;
            c.resp_data_len = 0;
            c.drop_data_in();
            self.complete(slot);
            return Ok(());
        }
        let pr = p.result();
        let c = &self.cmds[slot as usize];
        let invalid = pr.queue_type > SCST_CMD_QUEUE_ACA
            || !matches!(
                pr.data_direction,
                SCST_DATA_WRITE | SCST_DATA_READ | SCST_DATA_BIDI | SCST_DATA_NONE
            )
            || (pr.data_direction != SCST_DATA_NONE && pr.bufflen == 0)
            || pr.bufflen < 0
            || pr.out_bufflen < 0
            || pr.data_len < 0
            || pr.lba < 0
            || pr.cdb_len > c.cdb_len
            || pr.op_flags & SCST_INFO_VALID == 0;
        if invalid {
            // "Invalid parse_reply parameters".
            self.complete_error(slot, key::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE);
            return Err(Errno::EINVAL);
        }
        let c = &mut self.cmds[slot as usize];
        c.queue_type = pr.queue_type;
        c.dir = pr.data_direction;
        c.lba = pr.lba;
        c.bufflen = pr.bufflen;
        c.out_bufflen = pr.out_bufflen;
        c.data_len = pr.data_len;
        if pr.cdb_len > 0 {
            c.cdb_len = pr.cdb_len;
        }
        c.op_flags = pr.op_flags;
        self.after_parse(slot);
        Ok(())
    }

    /// `dev_user_process_reply_alloc` + `dev_user_map_buf`: the data-out is
    /// copied into the new buffer right away (a fault is EFAULT here).
    fn reply_alloc(&mut self, ui: u32, r: &ScstUserReplyCmd) -> Result<(), Errno> {
        let slot = self.ucmds[ui as usize].cmd;
        let pbuf = r.alloc_reply().pbuf;
        if pbuf == 0 {
            self.complete_busy(slot);
            return Ok(());
        }
        let cached = self.ucmds[ui as usize].buff_cached;
        if cached && !page_aligned(pbuf) {
            // "Supplied pbuf .. isn't page aligned".
            self.complete_error(slot, key::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE);
            return Err(Errno::EINVAL);
        }
        let c = &self.cmds[slot as usize];
        if c.dir == SCST_DATA_WRITE && c.out_len > 0 {
            if let Err(e) = copy::write_remote(&c.staging[..c.out_len], pbuf) {
                self.stats.copy_faults += 1;
                self.complete_error(slot, key::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE);
                return Err(e);
            }
        }
        let len = Self::buffer_len(c);
        let u = &mut self.ucmds[ui as usize];
        u.ubuff = pbuf;
        if cached {
            u.own = Some(OwnBuf {
                pbuf,
                order: order_of(len),
            });
            u.buf_owner = ui;
        }
        self.exec_stage(slot);
        Ok(())
    }

    /// `dev_user_process_reply_exec`.
    fn reply_exec(&mut self, ui: u32, r: &ScstUserReplyCmd) -> Result<(), Errno> {
        let e = r.exec_reply();
        if self.ucmds[ui as usize].background {
            // The final reply of a BACKGROUND command: only COMPLETED is
            // valid; either way the command's extra reference goes.
            self.ucmds[ui as usize].background = false;
            self.maybe_free_ucmd(ui);
            return if e.reply_type == SCST_EXEC_REPLY_COMPLETED {
                Ok(())
            } else {
                Err(Errno::EINVAL)
            };
        }
        let slot = self.ucmds[ui as usize].cmd;
        let (dir, bufflen) = {
            let c = &self.cmds[slot as usize];
            (c.dir, c.bufflen)
        };
        let resp = e.resp_data_len;
        let valid = match e.reply_type {
            SCST_EXEC_REPLY_COMPLETED => {
                resp >= 0 && resp <= bufflen && (dir == SCST_DATA_READ || resp == 0)
            }
            SCST_EXEC_REPLY_BACKGROUND => dir & SCST_DATA_READ == 0 && resp == 0,
            SCST_EXEC_REPLY_DO_WRITE_SAME => return self.reply_write_same(slot, &e),
            _ => false,
        };
        if !valid {
            return self.exec_inval(slot);
        }
        if e.reply_type == SCST_EXEC_REPLY_BACKGROUND {
            // GOOD goes to the initiator now; COMPLETED comes later.
            self.ucmds[ui as usize].background = true;
            self.set_good(slot);
            self.complete(slot);
            return Ok(());
        }
        let cached = self.ucmds[ui as usize].buff_cached;
        if resp != 0 {
            // A buffer known before this reply came from the cache (or an
            // ALLOC_MEM reply of this command) and is pinned already.
            let pinned = self.ucmds[ui as usize].ubuff != 0;
            if !pinned {
                if e.pbuf == 0 {
                    self.complete_busy(slot);
                    return Ok(());
                }
                if cached && !page_aligned(e.pbuf) {
                    // "Supplied pbuf .. isn't page aligned".
                    return self.exec_inval(slot);
                }
                let len = Self::buffer_len(&self.cmds[slot as usize]);
                let u = &mut self.ucmds[ui as usize];
                u.ubuff = e.pbuf;
                if cached {
                    u.own = Some(OwnBuf {
                        pbuf: e.pbuf,
                        order: order_of(len),
                    });
                    u.buf_owner = ui;
                }
            }
            // The initiator takes at most what it asked for.
            let keep = (resp as usize).min(self.cmds[slot as usize].exp_len);
            let remote = self.ucmds[ui as usize].ubuff;
            let c = &mut self.cmds[slot as usize];
            c.in_len = keep;
            if keep > 0 && self.trust_pinned && pinned && c.parent == NONE {
                // No copy now: the initiator reads the pinned buffer at
                // reap (or the simulator, if it needs the data sooner).
                c.in_remote = remote;
            } else if keep > 0 {
                self.pending_in.push(PendingCopy {
                    slot,
                    remote,
                    len: keep,
                    pinned,
                });
            }
        }
        let c = &mut self.cmds[slot as usize];
        c.resp_data_len = resp;
        c.status = e.status;
        c.sense_len = 0;
        let sense = e.sense();
        if sense.sense_len != 0 {
            if let Err(err) = self.copy_sense(slot, &sense) {
                self.complete_error(slot, key::ABORTED_COMMAND, Asc::INTERNAL_TARGET_FAILURE);
                return Err(err);
            }
        }
        self.complete(slot);
        Ok(())
    }

    /// "Invalid exec_reply parameters": the command fails with ABORTED
    /// COMMAND 44/00 (`scst_sense_internal_failure`) and the reply with
    /// EINVAL.
    fn exec_inval(&mut self, slot: u32) -> Result<(), Errno> {
        self.complete_error(slot, key::ABORTED_COMMAND, Asc::INTERNAL_TARGET_FAILURE);
        Err(Errno::EINVAL)
    }

    /// EXEC reply `SCST_EXEC_REPLY_DO_WRITE_SAME`: the core writes the
    /// ranges itself, as internal WRITE(16) commands to this handler.
    fn reply_write_same(&mut self, slot: u32, e: &ScstUserScsiCmdReplyExec) -> Result<(), Errno> {
        let c = &self.cmds[slot as usize];
        let ws = e.write_same();
        let len = usize::from(ws.ws_descriptors_len);
        if !matches!(c.cdb[0], 0x41 | 0x93)
            || e.status != 0
            || e.resp_data_len != 0
            || len > PAGE_SIZE
            || !len.is_multiple_of(std::mem::size_of::<ScstUserDataDescriptor>())
        {
            self.complete_error(slot, key::ABORTED_COMMAND, Asc::INTERNAL_TARGET_FAILURE);
            return Err(Errno::EINVAL);
        }
        let bs = u64::from(self.dev().block_size);
        let mut ranges = std::mem::take(&mut self.cmds[slot as usize].ws_ranges);
        ranges.clear();
        if len == 0 {
            // SCST writes the whole range of the CDB.
            let c = &self.cmds[slot as usize];
            let blocks = c.data_len as u64 / bs.max(1);
            if blocks == 0 {
                // Up to the end of the medium: the sim does not know the
                // capacity (not modelled).
                self.cmds[slot as usize].ws_ranges = ranges;
                self.complete_error(slot, key::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB);
                return Ok(());
            }
            ranges.push((c.lba as u64, blocks));
        } else {
            let mut raw = [0u8; PAGE_SIZE];
            if let Err(err) = copy::read_remote(&mut raw[..len], ws.ws_descriptors) {
                self.cmds[slot as usize].ws_ranges = ranges;
                self.complete_error(slot, key::ABORTED_COMMAND, Asc::INTERNAL_TARGET_FAILURE);
                return Err(err);
            }
            let mut terminated = false;
            for d in raw[..len].chunks_exact(16) {
                let lba = u64::from_ne_bytes(d[0..8].try_into().expect("8 bytes"));
                let blocks = u64::from_ne_bytes(d[8..16].try_into().expect("8 bytes"));
                if blocks == 0 {
                    terminated = true;
                    break;
                }
                ranges.push((lba, blocks));
            }
            if !terminated {
                self.cmds[slot as usize].ws_ranges = ranges;
                self.complete_error(slot, key::ABORTED_COMMAND, Asc::INTERNAL_TARGET_FAILURE);
                return Err(Errno::EINVAL);
            }
        }
        let c = &mut self.cmds[slot as usize];
        c.ws_ranges = ranges;
        c.ws_idx = 0;
        self.stats.write_same_offloaded += 1;
        self.ws_next(slot);
        Ok(())
    }

    /// Issues the next internal WRITE of a DO_WRITE_SAME, or completes it.
    fn ws_next(&mut self, parent: u32) {
        let bs = self.dev().block_size as usize;
        let max_blocks = (self.cfg.ws_max_write_bytes / bs).max(1) as u64;
        let c = &mut self.cmds[parent as usize];
        let Some(&(lba, blocks)) = c.ws_ranges.get(c.ws_idx) else {
            self.set_good(parent);
            return self.complete(parent);
        };
        let n = blocks.min(max_blocks);
        if n == blocks {
            c.ws_idx += 1;
        } else {
            c.ws_ranges[c.ws_idx] = (lba + n, blocks - n);
        }
        let ndob = c.dir == SCST_DATA_NONE;
        if self.gone {
            return self.complete_busy(parent);
        }
        let Some(child) = self.new_internal(parent, true, lba, n as u32) else {
            return self.complete_busy(parent);
        };
        let (p, ch) = two_mut(&mut self.cmds, parent as usize, child as usize);
        let len = n as usize * bs;
        if ndob {
            ch.staging[..len].fill(0);
        } else {
            for chunk in ch.staging[..len].chunks_exact_mut(bs) {
                chunk.copy_from_slice(&p.staging[..bs]);
            }
        }
    }

    /// COMPARE AND WRITE, executed by the core: an internal READ of the
    /// range first.
    fn caw_start(&mut self, slot: u32) {
        let c = &self.cmds[slot as usize];
        let blocks = u32::from(c.cdb[13]);
        if blocks == 0 {
            self.set_good(slot);
            return self.complete(slot);
        }
        let lba = c.lba as u64;
        self.cmds[slot as usize].caw_phase = 0;
        if self.new_internal(slot, false, lba, blocks).is_none() {
            self.complete_busy(slot);
        }
    }

    /// An internal command finished: continue its parent.
    fn child_done(&mut self, parent: u32, child: u32) {
        let (p, ch) = two_mut(&mut self.cmds, parent as usize, child as usize);
        p.child = NONE;
        let failed = ch.status != status::GOOD;
        if failed {
            p.status = ch.status;
            p.sense = ch.sense;
            p.sense_len = ch.sense_len;
        }
        let mut next_write = None;
        let mut miscompare = None;
        if !failed && p.local == Local::CompareAndWrite && p.caw_phase == 0 {
            let n = ch.exp_len;
            match (0..n).find(|&i| i >= ch.in_len || ch.staging[i] != p.staging[i]) {
                Some(off) => miscompare = Some(off),
                None => next_write = Some((p.lba as u64, u32::from(p.cdb[13]), n)),
            }
        }
        let aborted = p.aborted;
        let is_ws = p.local != Local::CompareAndWrite;
        self.free_cmd(child);
        if aborted {
            return self.complete_aborted(parent);
        }
        if failed {
            return self.complete(parent);
        }
        if let Some(off) = miscompare {
            self.set_error(
                parent,
                key::MISCOMPARE,
                Asc::MISCOMPARE_DURING_VERIFY,
                Some(off as u64),
            );
            return self.complete(parent);
        }
        if let Some((lba, blocks, n)) = next_write {
            if self.gone {
                return self.complete_busy(parent);
            }
            self.cmds[parent as usize].caw_phase = 1;
            let Some(w) = self.new_internal(parent, true, lba, blocks) else {
                return self.complete_busy(parent);
            };
            let (p, wc) = two_mut(&mut self.cmds, parent as usize, w as usize);
            wc.staging[..n].copy_from_slice(&p.staging[n..2 * n]);
            return;
        }
        if is_ws {
            self.ws_next(parent);
        } else {
            self.set_good(parent);
            self.complete(parent);
        }
    }

    // ----- unjam, task management, release ------------------------------------

    /// `dev_user_unjam_cmd`: finishes whatever the ucmd waits for without
    /// the handler. Commands: aborted if they were, else BUSY (`busy`) or
    /// ILLEGAL REQUEST 25/00.
    fn unjam(&mut self, ui: u32, busy: bool) {
        let u = &mut self.ucmds[ui as usize];
        if u.unjammed {
            return;
        }
        u.unjammed = true;
        u.sent = false;
        self.stats.unjammed += 1;
        match u.state {
            UState::Parsing | UState::BufAllocing | UState::Execing => {
                let slot = u.cmd;
                if slot == NONE {
                    return;
                }
                if self.cmds[slot as usize].aborted {
                    self.ucmds[ui as usize].aborted = true;
                    self.complete_aborted(slot);
                } else if busy {
                    self.complete_busy(slot);
                } else {
                    self.complete_error(slot, key::ILLEGAL_REQUEST, Asc::new(0x25, 0x00));
                }
            }
            UState::OnFreeing => self.on_free_processed(ui),
            UState::OnCacheFreeing => self.cache_free_processed(ui),
            UState::TmReceived => self.tm_received_done(ui),
            UState::TmDone => self.tm_done(ui, SCST_MGMT_STATUS_FAILED),
            UState::AttachSess | UState::DetachSess => self.reply_sess(ui, EFAULT_RESULT),
            UState::New => {}
        }
    }

    /// The SCST core receives a task management function. Returns the TM
    /// index.
    pub(super) fn task_mgmt(
        &mut self,
        sess: u32,
        fn_: u32,
        tag: Option<u64>,
    ) -> Result<u32, SimError> {
        if self.gone {
            return Err(SimError::DeviceGone);
        }
        if self.sessions[sess as usize].state != SessState::Active {
            return Err(SimError::UnknownSession);
        }
        let index = self.tms.len() as u32;
        self.tms.push(Tm {
            sess,
            fn_,
            cmd_h_to_abort: 0,
            stage: TmStage::Received,
            remaining: 0,
            result: None,
        });
        let tst_one_set = self.dev().opt.tst == 0;
        #[derive(PartialEq)]
        enum Scope {
            Task(u32),
            Session,
            Device,
            Nothing,
        }
        let scope = match fn_ {
            SCST_ABORT_TASK => {
                let max = self.cfg.max_cmds.max(1);
                let found = tag.and_then(|tag| {
                    (0..max).find(|&i| {
                        let c = &self.cmds[i];
                        c.stage != Stage::Free && c.sess == sess && c.tag == tag
                    })
                });
                match found {
                    Some(i) => Scope::Task(i as u32),
                    None => {
                        // The core finds no such command: answered at once.
                        let tm = &mut self.tms[index as usize];
                        tm.stage = TmStage::Finished;
                        tm.result = Some(SCST_MGMT_STATUS_TASK_NOT_EXIST);
                        return Ok(index);
                    }
                }
            }
            SCST_ABORT_TASK_SET
            | SCST_NEXUS_LOSS_SESS
            | SCST_ABORT_ALL_TASKS_SESS
            | SCST_UNREG_SESS_TM => Scope::Session,
            SCST_CLEAR_TASK_SET if !tst_one_set => Scope::Session,
            SCST_CLEAR_TASK_SET | SCST_LUN_RESET | SCST_TARGET_RESET | SCST_NEXUS_LOSS
            | SCST_ABORT_ALL_TASKS | SCST_PR_ABORT_ALL => Scope::Device,
            SCST_CLEAR_ACA => Scope::Nothing,
            _ => {
                let tm = &mut self.tms[index as usize];
                tm.stage = TmStage::Finished;
                tm.result = Some(SCST_MGMT_STATUS_FN_NOT_SUPPORTED);
                return Ok(index);
            }
        };
        // scst_abort_cmd for every affected command that has not finished;
        // internal commands follow their parent.
        for i in 0..self.cmds.len() {
            let c = &self.cmds[i];
            if !matches!(c.stage, Stage::Active | Stage::InCore) {
                continue;
            }
            let owner = if c.parent != NONE { c.parent } else { i as u32 };
            let hit = match scope {
                Scope::Task(t) => owner == t,
                Scope::Session => c.sess == sess,
                Scope::Device => true,
                Scope::Nothing => false,
            };
            if hit {
                let c = &mut self.cmds[i];
                c.aborted = true;
                c.tm_waiters.push(index);
                self.tms[index as usize].remaining += 1;
            }
        }
        if let Scope::Task(t) = scope {
            let ui = self.cmds[t as usize].ucmd;
            if ui != NONE {
                self.tms[index as usize].cmd_h_to_abort = self.ucmds[ui as usize].h;
            }
        }
        // Commands the core has not started: finished here.
        let mut i = 0;
        while i < self.active.len() {
            let slot = self.active[i];
            if self.cmds[slot as usize].aborted {
                self.active.remove(i);
                self.complete_aborted(slot);
            } else {
                i += 1;
            }
        }
        // dev_user_abort_ready_commands: aborted commands the handler has
        // not seen never reach it.
        let mut i = 0;
        while i < self.ready.len() {
            let ui = self.ready[i];
            let u = &self.ucmds[ui as usize];
            let hit = u.cmd != NONE
                && !u.seen
                && self.cmds[u.cmd as usize].aborted
                && matches!(
                    u.state,
                    UState::Parsing | UState::BufAllocing | UState::Execing
                );
            if hit {
                self.remove_ready_at(i);
                self.unjam(ui, false);
            } else {
                i += 1;
            }
        }
        self.settle();
        let ui = self.alloc_ucmd();
        self.ucmds[ui as usize].mgmt = index;
        self.stats.tm_sent += 1;
        self.add_to_ready(ui, UState::TmReceived, subcode::TASK_MGMT_RECEIVED);
        Ok(index)
    }

    pub(super) fn tm_result(&self, index: u32) -> Option<i32> {
        self.tms.get(index as usize).and_then(|t| t.result)
    }

    fn tm_cmd_finished(&mut self, index: u32) {
        let tm = &mut self.tms[index as usize];
        tm.remaining = tm.remaining.saturating_sub(1);
        if tm.remaining == 0 && tm.stage == TmStage::Waiting {
            self.queue_tm_done(index);
        }
    }

    fn queue_tm_done(&mut self, index: u32) {
        self.tms[index as usize].stage = TmStage::Done;
        let ui = self.alloc_ucmd();
        self.ucmds[ui as usize].mgmt = index;
        self.stats.tm_sent += 1;
        self.add_to_ready(ui, UState::TmDone, subcode::TASK_MGMT_DONE);
    }

    /// The TASK_MGMT_RECEIVED stage completed (its result is ignored).
    fn tm_received_done(&mut self, ui: u32) {
        let index = self.ucmds[ui as usize].mgmt;
        self.maybe_free_ucmd(ui);
        let tm = &mut self.tms[index as usize];
        if tm.stage == TmStage::Received {
            tm.stage = TmStage::Waiting;
            if tm.remaining == 0 {
                self.queue_tm_done(index);
            }
        }
    }

    /// `dev_user_process_reply_tm_exec` for TASK_MGMT_DONE.
    fn tm_done(&mut self, ui: u32, result: i32) {
        let index = self.ucmds[ui as usize].mgmt;
        self.maybe_free_ucmd(ui);
        let tm = &mut self.tms[index as usize];
        tm.stage = TmStage::Finished;
        tm.result = Some(if result == SCST_MGMT_STATUS_TASK_NOT_EXIST {
            SCST_MGMT_STATUS_SUCCESS
        } else {
            result
        });
    }

    /// The handler closed the fd: `dev_user_release` → `dev_user_exit_dev`
    /// → the cleanup thread's `dev_user_unjam_dev` loop.
    pub(super) fn release(&mut self) {
        if self.gone {
            return;
        }
        self.gone = true;
        if self.dev.is_none() {
            return;
        }
        // The handler's memory may go once it is released: data not yet
        // sent to the initiator moves to the target driver's buffers.
        self.materialize_all_in();
        // sgv_pool_flush: every idle buffer (its ON_CACHED_MEM_FREE is
        // unjammed at once: nobody will read it).
        for o in 0..SGV_ORDERS {
            while let Some((_, owner, _)) = self.idle[o].pop_front() {
                self.idle_bytes -= class_bytes(o as u8);
                self.ucmds[owner as usize].own = None;
                self.maybe_free_ucmd(owner);
            }
        }
        // Sent ucmds: unjammed with errors.
        for ui in 0..self.ucmds.len() as u32 {
            let u = &self.ucmds[ui as usize];
            if u.in_use && u.sent {
                self.unjam(ui, false);
            }
        }
        // Commands the core has not started yet, and everything queued:
        // BUSY (unjam with busy = 1).
        loop {
            while let Some(slot) = self.active.pop_front() {
                self.cmds[slot as usize].stage = Stage::InCore;
                self.complete_busy(slot);
            }
            if let Some(ui) = self.pop_ready() {
                self.unjam(ui, true);
            } else if !self.completing.is_empty() {
                self.drain_completions();
            } else {
                break;
            }
        }
        // Backgrounded commands will never be answered; drop their refs.
        for ui in 0..self.ucmds.len() as u32 {
            let u = &mut self.ucmds[ui as usize];
            if u.in_use && u.background {
                u.background = false;
                self.maybe_free_ucmd(ui);
            }
        }
        for s in &mut self.sessions {
            s.state = match s.state {
                SessState::Attaching => SessState::Failed(EFAULT_RESULT),
                SessState::Failed(r) => SessState::Failed(r),
                SessState::TimedOut => SessState::TimedOut,
                _ => SessState::Gone,
            };
        }
        for tm in &mut self.tms {
            if tm.result.is_none() {
                tm.stage = TmStage::Finished;
                tm.result = Some(SCST_MGMT_STATUS_FAILED);
            }
        }
        self.pending_in.clear();
        self.pending_out.clear();
    }

    /// Live ucmds (for tests of handle bookkeeping).
    pub(super) fn live_ucmds(&self) -> usize {
        self.by_h.len()
    }

    /// Idle buffers in the cache.
    pub(super) fn idle_buffers(&self) -> usize {
        self.idle.iter().map(VecDeque::len).sum()
    }
}
