//! [`TcmuDevice`]: one TCMU command ring driven by a polled executor.
//!
//! # Per poll
//! 1. **Walk** from the receive position up to `cmd_head` (acquire load), at
//!    most `budget` entries. PAD: pass. CMD: copy the CDB and iovecs into a
//!    free slot and `submit` it (or fail it directly if malformed). TMR:
//!    `abort` every listed command we hold. Anything else: set
//!    `TCMU_UFLAG_UNKNOWN_OP` and pass. With no free slot the walk stops
//!    (backpressure) and resumes at the next poll.
//! 2. `executor.flush()`, then `executor.poll(budget)`: finished commands
//!    land in their slots.
//! 3. **Complete.** With out-of-order completion (OOOC in the mailbox and
//!    [`DeviceConfig::allow_out_of_order`]) each finished command's response
//!    and `cmd_id` are written into the oldest walked CMD entry not yet
//!    passed by the tail ("stealing" it; PAD/TMR/unknown entries in front are
//!    passed). In order, a finished command waits until its own entry is at
//!    the front.
//! 4. **Publish.** If the local tail moved: one release store of `cmd_tail`
//!    and one doorbell for the whole batch.
//!
//! Every CDB and iovec list is copied out during step 1, before any response
//! of the same poll is written in step 3, so stealing a slot never destroys a
//! command that is still needed.
//!
//! # READ_LEN
//! When the mailbox advertises `CAP_READ_LEN` and a response has
//! `data_in_len > 0`, the device sets `TCMU_UFLAG_READ_LEN` and `read_len =
//! data_in_len` (clamped to the command's data-in buffer). The kernel honours
//! it only for data-in (`DMA_FROM_DEVICE`) commands and a non-zero value, so
//! it is harmless for others; with `read_len` equal to the buffer length it
//! behaves exactly as without the flag; with CHECK CONDITION it returns the
//! data together with the sense. A `data_in_len` of 0 cannot be expressed (0
//! means "not set"): the kernel then returns the whole buffer for a GOOD
//! read, or no data for CHECK CONDITION.
//!
//! # Hot path
//! No allocation (slots, the id table, the walked-entry FIFO and the done
//! list are preallocated at attach; a slot's iovec list grows only the first
//! time a command has more iovecs than any before in that slot), no lock, and
//! no syscall except the one doorbell per poll that completed something.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bdev::IoVec;
use reactor::{clock, Poller};

use super::abi::*;
use super::doorbell::Doorbell;
use super::region::SharedRegion;
use super::ring::{self, CmdParse, RingGeometry};
use super::{internal_target_failure, invalid_command_opcode, RingFault, TcmuError, MAX_CDB_LEN};
use crate::exec::{CommandExecutor, Response};
use crate::latency::{LatencyRecorder, SharedLatency};

/// Device settings.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Poller name (statistics, logs), e.g. `tcmu:disk0`.
    pub name: String,
    /// Most ring entries walked, and most executor completions collected,
    /// per poll. Default 128.
    pub budget: usize,
    /// Use out-of-order completion when the mailbox offers it. Default true;
    /// false completes strictly in ring order.
    pub allow_out_of_order: bool,
    /// Iovecs preallocated per slot. A command with more still works (the
    /// slot's list grows once). Default 32.
    pub iovecs_per_slot: usize,
    /// Acknowledge the notification fd on the first idle poll after work (one
    /// `read` per busy-to-idle transition, then the ring is checked again).
    /// Needed under the adaptive idle policy while the reactor has no
    /// "woke up" hook that calls [`TcmuDevice::acknowledge_doorbell`];
    /// pointless when the reactor only busy-polls. Default false.
    pub acknowledge_on_idle: bool,
    /// Doorbell coalescing: while new commands keep arriving and others are
    /// still executing, completions are held (not yet published) until this
    /// many are waiting. A poll that finds no new command, or leaves nothing
    /// executing, publishes whatever is waiting, so a lone command never
    /// waits: the hold only applies while the initiator keeps the queue
    /// busy. Default 32; 1 rings after every poll that completed something.
    pub doorbell_batch: usize,
    /// Longest time a completion may be held by `doorbell_batch`.
    /// Default 20 µs.
    pub doorbell_max_hold: Duration,
    /// Completion coalescing window: when non-zero, a completion may wait up
    /// to this long for others to join its doorbell even when no new command
    /// arrives (up to `doorbell_batch` completions), like NVMe interrupt
    /// aggregation. Each doorbell makes the kernel complete the batch and wake
    /// the initiator side once, so on a host short of CPU (a small VM shared
    /// with the initiator) fewer, larger batches leave more CPU for I/O; it
    /// adds up to this much latency per command. The reactor stays awake
    /// while a completion is held. Default 0 (off).
    pub completion_coalesce: Duration,
    /// Record each command's latency inside the dataplane (ring walk to
    /// response) for statistics ([`TcmuDevice::latency`]). Costs one
    /// histogram increment per command and two clock reads per poll.
    /// Default true.
    pub track_latency: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            name: "tcmu".to_owned(),
            budget: 128,
            allow_out_of_order: true,
            iovecs_per_slot: 32,
            acknowledge_on_idle: false,
            doorbell_batch: 32,
            doorbell_max_hold: Duration::from_micros(20),
            completion_coalesce: Duration::ZERO,
            track_latency: true,
        }
    }
}

/// Device counters, readable from any thread. Updated once per poll with
/// relaxed batched adds.
#[derive(Debug, Default)]
pub struct TcmuStats {
    commands_received: AtomicU64,
    commands_completed: AtomicU64,
    data_bytes: AtomicU64,
    data_in_bytes: AtomicU64,
    doorbells: AtomicU64,
    doorbell_errors: AtomicU64,
    polls_with_work: AtomicU64,
    malformed_commands: AtomicU64,
    tmr_entries: AtomicU64,
    aborts: AtomicU64,
    unknown_entries: AtomicU64,
    pad_entries: AtomicU64,
}

/// A copy of [`TcmuStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcmuStatsSnapshot {
    /// CMD entries taken from the ring (including malformed ones).
    pub commands_received: u64,
    /// Responses written to the ring.
    pub commands_completed: u64,
    /// Bytes of data buffer (sum of iovec lengths) of received commands.
    pub data_bytes: u64,
    /// Bytes of data-in reported by completed commands (`data_in_len`).
    pub data_in_bytes: u64,
    /// Doorbells rung.
    pub doorbells: u64,
    /// Doorbell writes that failed (retried at the next poll).
    pub doorbell_errors: u64,
    /// Polls that did any work.
    pub polls_with_work: u64,
    /// Commands failed because their entry was malformed (bad iovec,
    /// `cdb_off`, or a CDB longer than 16 bytes).
    pub malformed_commands: u64,
    /// TMR entries seen.
    pub tmr_entries: u64,
    /// `executor.abort` calls made for TMR entries.
    pub aborts: u64,
    /// Entries of unknown opcode passed with UNKNOWN_OP.
    pub unknown_entries: u64,
    /// PAD entries passed.
    pub pad_entries: u64,
}

impl TcmuStats {
    /// Reads every counter (relaxed; not an atomic snapshot of all of them).
    pub fn snapshot(&self) -> TcmuStatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TcmuStatsSnapshot {
            commands_received: r(&self.commands_received),
            commands_completed: r(&self.commands_completed),
            data_bytes: r(&self.data_bytes),
            data_in_bytes: r(&self.data_in_bytes),
            doorbells: r(&self.doorbells),
            doorbell_errors: r(&self.doorbell_errors),
            polls_with_work: r(&self.polls_with_work),
            malformed_commands: r(&self.malformed_commands),
            tmr_entries: r(&self.tmr_entries),
            aborts: r(&self.aborts),
            unknown_entries: r(&self.unknown_entries),
            pad_entries: r(&self.pad_entries),
        }
    }

    /// Adds a poll's counts. Only the device's own thread writes, so a plain
    /// load and store suffice (no locked read-modify-write per counter).
    fn add(&self, c: &TcmuStatsSnapshot) {
        let add = |a: &AtomicU64, v: u64| {
            if v != 0 {
                a.store(a.load(Ordering::Relaxed) + v, Ordering::Relaxed);
            }
        };
        add(&self.commands_received, c.commands_received);
        add(&self.commands_completed, c.commands_completed);
        add(&self.data_bytes, c.data_bytes);
        add(&self.data_in_bytes, c.data_in_bytes);
        add(&self.doorbells, c.doorbells);
        add(&self.doorbell_errors, c.doorbell_errors);
        add(&self.polls_with_work, c.polls_with_work);
        add(&self.malformed_commands, c.malformed_commands);
        add(&self.tmr_entries, c.tmr_entries);
        add(&self.aborts, c.aborts);
        add(&self.unknown_entries, c.unknown_entries);
        add(&self.pad_entries, c.pad_entries);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Submitted to the executor.
    Executing,
    /// Response known (from the executor or a direct failure), not yet
    /// written to the ring.
    Done,
}

/// A command slot: what was copied out of the ring, and the response.
struct Slot {
    cmd_id: u16,
    state: SlotState,
    cdb: [u8; MAX_CDB_LEN],
    iovs: Vec<IoVec>,
    data_in_capacity: u64,
    response: Response,
    /// Clock ticks when the command was walked (latency tracking).
    received_at: u64,
}

/// A walked entry the tail has not passed yet.
#[derive(Debug, Clone, Copy)]
struct Walked {
    offset: u32,
    len: u32,
    /// `Some` for a CMD entry (its original id), `None` for entries that are
    /// only passed (PAD, TMR, unknown op).
    cmd_id: Option<u16>,
}

const NO_SLOT: u32 = u32::MAX;

/// One TCMU device (one ring, one LUN), owned by one reactor thread.
///
/// See the module docs for the poll cycle. Dropping the device with commands
/// still in the executor leaks the mapping (never unmaps it), because the
/// executor may still write into the data area.
pub struct TcmuDevice<E: CommandExecutor> {
    // Field order matters for Drop: the executor goes before the mapping.
    executor: E,
    region: SharedRegion,
    doorbell: Doorbell,
    config: DeviceConfig,
    geo: RingGeometry,
    mailbox_flags: u16,
    out_of_order: bool,
    read_len_cap: bool,
    /// Next ring position to walk.
    recv: u32,
    /// Local tail: everything before it has been completed or passed.
    tail: u32,
    /// Last value stored to `cmd_tail`.
    published_tail: u32,
    slots: Box<[Slot]>,
    /// cmd_id -> slot index, or `NO_SLOT`.
    slot_of_id: Box<[u32]>,
    free: Vec<u32>,
    /// Slots whose responses are known, in completion order (OOOC only).
    done: Vec<u32>,
    walked: VecDeque<Walked>,
    fault: Option<RingFault>,
    shutting_down: bool,
    doorbell_pending: bool,
    /// Completions written into the ring but not yet published.
    unpublished: usize,
    /// Clock ticks when the oldest unpublished completion was written.
    held_since: u64,
    /// `doorbell_max_hold` in clock ticks.
    max_hold_ticks: u64,
    /// `completion_coalesce` in clock ticks (0 = off).
    coalesce_ticks: u64,
    acknowledged: bool,
    stats: Arc<TcmuStats>,
    /// Per-command latency, when tracked.
    latency: Option<LatencyRecorder>,
    /// Clock ticks at the start of the current walk (latency tracking).
    walk_clock: u64,
}

impl<E: CommandExecutor> std::fmt::Debug for TcmuDevice<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcmuDevice")
            .field("name", &self.config.name)
            .field("cmdr_size", &self.geo.cmdr_size)
            .field("mailbox_flags", &self.mailbox_flags)
            .field("out_of_order", &self.out_of_order)
            .field("recv", &self.recv)
            .field("tail", &self.tail)
            .field("in_flight", &self.in_flight())
            .field("fault", &self.fault)
            .finish()
    }
}

impl<E: CommandExecutor> TcmuDevice<E> {
    /// Attaches to a region and its doorbell.
    ///
    /// Checks the mailbox (version 2, `cmdr_off` 128, a ring that fits the
    /// mapping, a valid `cmd_tail`), reads the capability flags, and starts
    /// receiving at the current `cmd_tail`, so commands a previous process
    /// left on the ring are picked up. Preallocates one slot per executor
    /// task (at most 65535, the number of cmd_ids).
    pub fn attach(
        region: SharedRegion,
        doorbell: Doorbell,
        executor: E,
        config: DeviceConfig,
    ) -> Result<Self, TcmuError> {
        let version = region.mailbox_version();
        if version != TCMU_MAILBOX_VERSION {
            return Err(TcmuError::MailboxVersion { found: version });
        }
        let geo = RingGeometry::from_mailbox(&region)?;
        let mailbox_flags = region.mailbox_flags();
        let tail = region.load_cmd_tail();
        if !geo.is_position(tail) {
            return Err(TcmuError::TailInvalid {
                tail,
                cmdr_size: geo.cmdr_size,
            });
        }
        if config.budget == 0 {
            return Err(TcmuError::InvalidConfig("budget must be at least 1"));
        }
        let max_tasks = executor.max_tasks().min(0xFFFF);
        if max_tasks == 0 {
            return Err(TcmuError::NoTaskSlots);
        }
        doorbell.set_nonblocking().map_err(TcmuError::Doorbell)?;

        let slots = (0..max_tasks)
            .map(|_| Slot {
                cmd_id: 0,
                state: SlotState::Free,
                cdb: [0; MAX_CDB_LEN],
                iovs: Vec::with_capacity(config.iovecs_per_slot),
                data_in_capacity: 0,
                response: Response::good(0),
                received_at: 0,
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        // Pop order: slot 0 first.
        let free = (0..max_tasks).rev().collect::<Vec<u32>>();
        let out_of_order =
            config.allow_out_of_order && mailbox_flags & TCMU_MAILBOX_FLAG_CAP_OOOC != 0;
        Ok(Self {
            executor,
            doorbell,
            geo,
            mailbox_flags,
            out_of_order,
            read_len_cap: mailbox_flags & TCMU_MAILBOX_FLAG_CAP_READ_LEN != 0,
            recv: tail,
            tail,
            published_tail: tail,
            slots,
            slot_of_id: vec![NO_SLOT; 1 << 16].into_boxed_slice(),
            free,
            done: Vec::with_capacity(max_tasks as usize),
            walked: VecDeque::with_capacity(2 * max_tasks as usize + 64),
            fault: None,
            shutting_down: false,
            doorbell_pending: false,
            unpublished: 0,
            held_since: 0,
            max_hold_ticks: clock::ns_to_ticks(
                u64::try_from(config.doorbell_max_hold.as_nanos()).unwrap_or(u64::MAX),
            ),
            coalesce_ticks: clock::ns_to_ticks(
                u64::try_from(config.completion_coalesce.as_nanos()).unwrap_or(u64::MAX),
            ),
            acknowledged: false,
            stats: Arc::new(TcmuStats::default()),
            latency: config.track_latency.then(LatencyRecorder::new),
            walk_clock: 0,
            region,
            config,
        })
    }

    /// One poll: walk, submit, collect, complete, publish. Returns the work
    /// done (entries walked plus responses written, or responses drained
    /// while broken).
    pub fn poll(&mut self) -> usize {
        let mut work = self.poll_once();
        if work > 0 {
            self.acknowledged = false;
        } else if self.config.acknowledge_on_idle && !self.acknowledged {
            // Going idle: drain the notification, then look once more so a
            // command whose notification was just drained is not missed.
            self.acknowledged = true;
            let _ = self.doorbell.acknowledge();
            work = self.poll_once();
            if work > 0 {
                self.acknowledged = false;
            }
        }
        work
    }

    fn poll_once(&mut self) -> usize {
        let mut c = TcmuStatsSnapshot::default();
        let work = if self.fault.is_some() {
            self.drain_broken()
        } else {
            let mut walked = 0;
            if !self.shutting_down {
                walked = self.walk(&mut c);
            }
            self.executor.flush();
            self.collect();
            // The executor contract asks for a flush at the end of the poll
            // too: `poll` may stage follow-up requests.
            self.executor.flush();
            let mut work = walked;
            if self.fault.is_none() {
                work += self.write_completions(&mut c);
                self.publish(walked, &mut c);
                if self.coalesce_ticks != 0 && self.tail != self.published_tail {
                    // A completion is held: keep the reactor polling (not
                    // asleep) until the window closes.
                    work = work.max(1);
                }
            }
            work
        };
        if work > 0 {
            c.polls_with_work = 1;
        }
        self.stats.add(&c);
        work
    }

    /// Walks new entries (step 1). Returns the number of entries walked.
    fn walk(&mut self, c: &mut TcmuStatsSnapshot) -> usize {
        // Only this device writes cmd_tail; a different value means the ring
        // was reset or taken over, and nothing walked so far is valid.
        let found = self.region.load_cmd_tail();
        if found != self.published_tail {
            self.fault = Some(RingFault::TailMovedByPeer {
                expected: self.published_tail,
                found,
            });
            return 0;
        }
        let head = self.region.load_cmd_head();
        if head >= self.geo.cmdr_size {
            self.fault = Some(RingFault::HeadOutOfRange {
                head,
                cmdr_size: self.geo.cmdr_size,
            });
            return 0;
        }
        if !(head as usize).is_multiple_of(TCMU_OP_ALIGN_SIZE) {
            self.fault = Some(RingFault::HeadMisaligned { head });
            return 0;
        }
        if self.recv != head && self.latency.is_some() {
            self.walk_clock = clock::now();
        }
        let mut walked = 0;
        while self.recv != head && walked < self.config.budget {
            let off = self.recv;
            let hdr = match ring::read_header(&self.region, &self.geo, off, head) {
                Ok(h) => h,
                Err(fault) => {
                    self.fault = Some(fault);
                    return walked;
                }
            };
            let abs = self.geo.entry_abs(off);
            let mut cmd_id = None;
            match hdr.op {
                TCMU_OP_PAD => c.pad_entries += 1,
                TCMU_OP_CMD => {
                    if (hdr.len as usize) < CMD_ENTRY_SIZE {
                        self.fault = Some(RingFault::CmdEntryTooShort {
                            offset: off,
                            len: hdr.len,
                        });
                        return walked;
                    }
                    if hdr.cmd_id == 0 {
                        self.fault = Some(RingFault::InvalidCmdId { offset: off });
                        return walked;
                    }
                    if self.slot_of_id[usize::from(hdr.cmd_id)] != NO_SLOT {
                        self.fault = Some(RingFault::DuplicateCmdId { cmd_id: hdr.cmd_id });
                        return walked;
                    }
                    let Some(slot) = self.free.pop() else {
                        break; // backpressure: resume when a slot frees up
                    };
                    self.receive_command(slot, hdr.cmd_id, abs, hdr.len, c);
                    cmd_id = Some(hdr.cmd_id);
                }
                TCMU_OP_TMR => self.handle_tmr(abs, hdr.len, c),
                _ => {
                    ring::flag_unknown_op(&self.region, abs);
                    c.unknown_entries += 1;
                }
            }
            self.walked.push_back(Walked {
                offset: off,
                len: hdr.len,
                cmd_id,
            });
            self.recv = self.geo.advance(off, hdr.len);
            walked += 1;
        }
        walked
    }

    /// Copies a CMD entry into `slot` and submits it, or fails it directly.
    fn receive_command(
        &mut self,
        slot: u32,
        cmd_id: u16,
        abs: usize,
        len: u32,
        c: &mut TcmuStatsSnapshot,
    ) {
        let s = &mut self.slots[slot as usize];
        s.cmd_id = cmd_id;
        s.received_at = self.walk_clock;
        self.slot_of_id[usize::from(cmd_id)] = slot;
        c.commands_received += 1;
        match ring::parse_cmd(&self.region, &self.geo, abs, len, &mut s.cdb, &mut s.iovs) {
            CmdParse::Ok {
                cdb_len,
                data_len,
                data_in_capacity,
            } => {
                s.data_in_capacity = data_in_capacity;
                s.state = SlotState::Executing;
                c.data_bytes += data_len;
                // SAFETY: every iovec was checked to lie inside the data area
                // of the mapping, which stays mapped while commands are in
                // flight (`self.region` holds it, and `Drop` leaks it if the
                // executor still has commands). The device never touches the
                // data area, and the kernel does not touch a command's data
                // blocks until the command is completed through the ring,
                // which happens only after the executor delivered the
                // response for `slot`. (Overlapping iovecs from a
                // misbehaving kernel can only garble data bytes, which the
                // executor accesses through raw pointers.)
                unsafe {
                    self.executor
                        .submit(slot, &s.cdb[..usize::from(cdb_len)], &s.iovs);
                }
            }
            CmdParse::Malformed(_) => {
                s.response = internal_target_failure();
                s.data_in_capacity = 0;
                s.state = SlotState::Done;
                self.done.push(slot);
                c.malformed_commands += 1;
            }
            CmdParse::CdbTooLong => {
                s.response = invalid_command_opcode();
                s.data_in_capacity = 0;
                s.state = SlotState::Done;
                self.done.push(slot);
                c.malformed_commands += 1;
            }
        }
    }

    /// Asks the executor to abort every listed command this device holds.
    /// The aborted commands still complete through `poll`.
    fn handle_tmr(&mut self, abs: usize, len: u32, c: &mut TcmuStatsSnapshot) {
        c.tmr_entries += 1;
        let Some((_tmr_type, cmd_cnt)) = ring::parse_tmr(&self.region, abs, len) else {
            return; // malformed: ids do not fit; nothing to abort
        };
        for i in 0..cmd_cnt {
            let id = ring::tmr_cmd_id(&self.region, abs, i);
            let slot = self.slot_of_id[usize::from(id)];
            if slot != NO_SLOT && self.slots[slot as usize].state == SlotState::Executing {
                self.executor.abort(slot);
                c.aborts += 1;
            }
        }
    }

    /// Collects executor completions into their slots (step 2).
    fn collect(&mut self) {
        let slots = &mut self.slots;
        let done = &mut self.done;
        let mut latency = self
            .latency
            .as_mut()
            .filter(|_| self.executor.in_flight() != 0);
        let now = if latency.is_some() { clock::now() } else { 0 };
        self.executor
            .poll(self.config.budget, &mut |slot, response: &Response| {
                if let Some(s) = slots.get_mut(slot as usize) {
                    if s.state == SlotState::Executing {
                        s.response = *response;
                        s.state = SlotState::Done;
                        done.push(slot);
                        if let Some(latency) = latency.as_deref_mut() {
                            latency.record(now.wrapping_sub(s.received_at));
                        }
                    }
                }
            });
        if let Some(latency) = latency {
            latency.maybe_flush(now);
        }
    }

    /// The device's latency histogram (walk to response), if tracked.
    pub fn latency(&self) -> Option<Arc<SharedLatency>> {
        self.latency.as_ref().map(LatencyRecorder::shared)
    }

    /// Passes PAD/TMR/unknown entries at the front of the walked FIFO.
    fn pass_non_commands(&mut self) {
        while let Some(front) = self.walked.front() {
            if front.cmd_id.is_some() {
                break;
            }
            self.tail = self.geo.advance(front.offset, front.len);
            self.walked.pop_front();
        }
    }

    /// Writes the known responses into the ring (step 3). Returns how many.
    fn write_completions(&mut self, c: &mut TcmuStatsSnapshot) -> usize {
        let mut written = 0;
        if self.out_of_order {
            for i in 0..self.done.len() {
                let slot = self.done[i];
                self.pass_non_commands();
                // Every slot in `done` owns one CMD entry still in the FIFO,
                // so there is always a CMD entry at the front here.
                let Some(front) = self.walked.pop_front() else {
                    debug_assert!(false, "completion without a walked entry");
                    break;
                };
                self.complete_into(front, slot, c);
                written += 1;
            }
        } else {
            loop {
                self.pass_non_commands();
                let Some(&front) = self.walked.front() else {
                    break;
                };
                let id = front.cmd_id.unwrap_or(0);
                let slot = self.slot_of_id[usize::from(id)];
                if slot == NO_SLOT || self.slots[slot as usize].state != SlotState::Done {
                    break;
                }
                self.walked.pop_front();
                self.complete_into(front, slot, c);
                written += 1;
            }
        }
        self.done.clear();
        self.pass_non_commands();
        written
    }

    /// Writes `slot`'s response into the entry `entry` and frees the slot.
    fn complete_into(&mut self, entry: Walked, slot: u32, c: &mut TcmuStatsSnapshot) {
        let s = &mut self.slots[slot as usize];
        let data_in = u64::from(s.response.data_in_len).min(s.data_in_capacity);
        let read_len = (self.read_len_cap && data_in > 0).then_some(data_in as u32);
        ring::write_response(
            &self.region,
            self.geo.entry_abs(entry.offset),
            s.cmd_id,
            &s.response,
            read_len,
        );
        self.tail = self.geo.advance(entry.offset, entry.len);
        if self.unpublished == 0 {
            self.held_since = clock::now();
        }
        self.unpublished += 1;
        c.commands_completed += 1;
        c.data_in_bytes += data_in;
        self.slot_of_id[usize::from(s.cmd_id)] = NO_SLOT;
        s.state = SlotState::Free;
        self.free.push(slot);
    }

    /// Publishes the tail and rings the doorbell once (step 4), unless the
    /// completions are held back to batch them (see
    /// [`DeviceConfig::doorbell_batch`]). `walked` is the number of new
    /// entries this poll found.
    fn publish(&mut self, walked: usize, c: &mut TcmuStatsSnapshot) {
        if self.tail != self.published_tail {
            let batching = !self.shutting_down && self.unpublished < self.config.doorbell_batch;
            let hold = batching && {
                let age = clock::now().wrapping_sub(self.held_since);
                // Commands keep arriving while others execute: a batch is
                // building up by itself.
                (walked != 0 && self.executor.in_flight() != 0 && age < self.max_hold_ticks)
                    // The configured coalescing window.
                    || age < self.coalesce_ticks
            };
            if hold {
                return;
            }
            self.region.store_cmd_tail(self.tail);
            self.published_tail = self.tail;
            self.unpublished = 0;
            self.doorbell_pending = true;
        }
        if self.doorbell_pending {
            match self.doorbell.ring() {
                Ok(()) => {
                    self.doorbell_pending = false;
                    c.doorbells += 1;
                }
                Err(_) => c.doorbell_errors += 1,
            }
        }
    }

    /// Broken ring: drain the executor so its memory use ends, discard the
    /// responses, touch nothing in the ring.
    fn drain_broken(&mut self) -> usize {
        let slots = &mut self.slots;
        let slot_of_id = &mut self.slot_of_id;
        let free = &mut self.free;
        let n = self
            .executor
            .poll(self.config.budget, &mut |slot, _response: &Response| {
                if let Some(s) = slots.get_mut(slot as usize) {
                    if s.state == SlotState::Executing {
                        s.state = SlotState::Free;
                        slot_of_id[usize::from(s.cmd_id)] = NO_SLOT;
                        free.push(slot);
                    }
                }
            });
        self.executor.flush();
        n
    }

    /// Drains the notification fd (see [`Doorbell::acknowledge`]). Call after
    /// the reactor woke up from sleep, before polling.
    pub fn acknowledge_doorbell(&mut self) -> Result<bool, TcmuError> {
        self.doorbell.acknowledge().map_err(TcmuError::Doorbell)
    }

    /// Why the ring is broken, if it is. A broken device no longer reads or
    /// writes the ring.
    pub fn fault(&self) -> Option<RingFault> {
        self.fault
    }

    /// The counters (shareable with other threads).
    pub fn stats(&self) -> Arc<TcmuStats> {
        Arc::clone(&self.stats)
    }

    /// Commands received and not yet completed to the ring.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Mailbox capability flags.
    pub fn mailbox_flags(&self) -> u16 {
        self.mailbox_flags
    }

    /// True if completions are written out of order.
    pub fn out_of_order(&self) -> bool {
        self.out_of_order
    }

    /// The executor.
    pub fn executor(&self) -> &E {
        &self.executor
    }

    /// The executor, mutably.
    pub fn executor_mut(&mut self) -> &mut E {
        &mut self.executor
    }

    /// The shared region.
    pub fn region(&self) -> &SharedRegion {
        &self.region
    }

    /// Stops walking the ring (entries that arrive stay on it for the next
    /// owner) while in-flight commands keep completing.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
    }

    /// True when no command is in flight and every completion is published
    /// and rung.
    pub fn is_drained(&self) -> bool {
        if self.fault.is_some() {
            return self.executor.in_flight() == 0;
        }
        self.executor.in_flight() == 0
            && self.free.len() == self.slots.len()
            && self.tail == self.published_tail
            && !self.doorbell_pending
    }
}

impl<E: CommandExecutor> Drop for TcmuDevice<E> {
    fn drop(&mut self) {
        if self.executor.in_flight() > 0 {
            // The executor (or a bdev behind it) may still write into the
            // data area: never unmap it.
            std::mem::forget(self.region.clone());
        }
    }
}

impl<E: CommandExecutor + Send> Poller for TcmuDevice<E> {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn poll(&mut self) -> usize {
        TcmuDevice::poll(self)
    }

    fn wait_fds(&self) -> Vec<RawFd> {
        vec![self.doorbell.wait_fd()]
    }

    fn begin_shutdown(&mut self) {
        TcmuDevice::begin_shutdown(self);
    }

    fn is_drained(&self) -> bool {
        TcmuDevice::is_drained(self)
    }
}
