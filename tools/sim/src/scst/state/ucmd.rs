//! ucmds (`struct scst_user_cmd`): the unit of conversation with the
//! handler. Every subcommand the handler sees is a ucmd in some state, named
//! by its handle (`cmd_h`); a SCSI command keeps one ucmd from PARSE to
//! ON_FREE_CMD, and so does a cached buffer until ON_CACHED_MEM_FREE (the
//! handle of the command that supplied it). A ucmd is freed when nothing
//! references it any more (`ucmd_put`); only then may its handle be reused.
//!
//! The ready list (`ready_cmd_list`) holds the ucmds waiting for the
//! handler, in the order `dev_user_add_to_ready` gives them.

use std::hash::Hasher;

use super::{State, NONE};
use dataplane::scst::abi::*;

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
pub(super) enum UState {
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
pub(super) struct OwnBuf {
    pub(super) pbuf: u64,
    pub(super) order: u8,
}

/// `struct scst_user_cmd`.
#[derive(Debug)]
pub(super) struct Ucmd {
    pub(super) in_use: bool,
    pub(super) h: u32,
    pub(super) state: UState,
    /// `user_cmd.subcode` of the current state.
    pub(super) subcode: u32,
    /// On the ready list.
    pub(super) queued: bool,
    /// `sent_to_user`.
    pub(super) sent: bool,
    /// `seen_by_user`.
    pub(super) seen: bool,
    /// `this_state_unjammed`.
    pub(super) unjammed: bool,
    /// `background_exec`.
    pub(super) background: bool,
    /// `aborted` (reported in ON_FREE_CMD).
    pub(super) aborted: bool,
    /// The SCSI command (`ucmd->cmd`), or NONE.
    pub(super) cmd: u32,
    /// `ubuff`: the data buffer of the command.
    pub(super) ubuff: u64,
    /// `buff_cached`.
    pub(super) buff_cached: bool,
    /// `buf_ucmd`: the ucmd that owns `ubuff` in the SGV cache, or NONE.
    pub(super) buf_owner: u32,
    /// The buffer this ucmd supplied, while the cache holds it.
    pub(super) own: Option<OwnBuf>,
    /// `alloc_len` of ALLOC_MEM / EXEC.
    pub(super) alloc_len: i32,
    /// ON_FREE_CMD payload, captured when the command was freed.
    pub(super) on_free: ScstUserScsiOnFreeCmd,
    /// Session index (ATTACH/DETACH) or TM index.
    pub(super) mgmt: u32,
}

impl Ucmd {
    pub(super) fn new() -> Self {
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

impl State {
    /// `dev_user_alloc_ucmd` + `cmd_insert_hash`: the next handle from the
    /// per-device counter that no live ucmd holds.
    pub(super) fn alloc_ucmd(&mut self) -> u32 {
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
    pub(super) fn maybe_free_ucmd(&mut self, ui: u32) {
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
    pub(super) fn add_to_ready(&mut self, ui: u32, state: UState, subcode: u32) {
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

    /// Takes the ucmd at the head of the ready list.
    pub(super) fn pop_ready(&mut self) -> Option<u32> {
        let ui = self.ready.pop_front()?;
        if self.mgmt_prefix > 0 {
            self.mgmt_prefix -= 1;
        }
        self.ucmds[ui as usize].queued = false;
        Some(ui)
    }

    /// Takes the ucmd at position `i` of the ready list.
    pub(super) fn remove_ready_at(&mut self, i: usize) -> u32 {
        let ui = self.ready.remove(i).expect("index in range");
        if i < self.mgmt_prefix {
            self.mgmt_prefix -= 1;
        }
        self.ucmds[ui as usize].queued = false;
        ui
    }

    /// Live ucmds (for tests of handle bookkeeping).
    pub(in crate::scst) fn live_ucmds(&self) -> usize {
        self.by_h.len()
    }
}
