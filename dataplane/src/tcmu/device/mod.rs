//! [`TcmuDevice`]: one TCMU command ring driven by a polled executor.
//!
//! # Per poll
//! 1. **Walk** from the receive position up to `cmd_head` (acquire load), at
//!    most `budget` entries. First the ring is checked (else it is broken,
//!    [`RingFault`]): `cmd_tail` is still the one the device published
//!    (only it writes `cmd_tail`; a reset or another process changed it),
//!    and `cmd_head` is a valid position not behind the walk position
//!    counted from the published tail (the kernel never fills the ring, so
//!    `distance(tail, head) >= distance(tail, walked)`; a head behind was
//!    reset while the published tail happened to equal the reset's 0). PAD: pass. CMD: copy the CDB and iovecs into a
//!    free slot and `submit` it (or fail it directly if malformed). TMR:
//!    `abort` every listed command we hold. Anything else: set
//!    `TCMU_UFLAG_UNKNOWN_OP` and pass. With no free slot the walk stops
//!    (backpressure) and resumes at the next poll.
//! 2. `executor.flush()`, then `executor.poll(budget)`: finished commands
//!    land in their slots.
//! 3. **Complete.** With out-of-order completion (OOOC in the mailbox and
//!    [`TcmuDeviceConfig::allow_out_of_order`]) each finished command's
//!    response and `cmd_id` are written into the oldest walked CMD entry not yet
//!    passed by the tail ("stealing" it; PAD/TMR/unknown entries in front are
//!    passed). In order, a finished command waits until its own entry is at
//!    the front.
//! 4. **Publish.** If the local tail moved and the [`Coalescer`] does not
//!    hold the completions back ([`TcmuDeviceConfig::coalesce`]): one
//!    release store of `cmd_tail` and one doorbell for the whole batch,
//!    unless `cmd_tail` moved under the device since (a reset: the ring is
//!    broken and the reset's tail is left as it is).
//!
//! A broken device touches the ring no more and only drains its executor;
//! its fault is in [`TcmuDevice::fault`] and, for the control plane, in
//! [`TcmuDevice::shared_fault`] (`serve` recovers the device).
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
//!
//! # Files
//! Walking (step 1) is in `walk.rs`; collecting, completing and publishing
//! (steps 2 to 4) in `complete.rs`; the settings in `config.rs`, the
//! counters in `stats.rs`.

mod complete;
mod config;
mod stats;
mod walk;

pub use config::TcmuDeviceConfig;
pub use stats::{TcmuStats, TcmuStatsSnapshot};

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;

use bdev::IoVec;
use reactor::{clock, Poller};

use super::abi::*;
use super::doorbell::Doorbell;
use super::region::SharedRegion;
use super::ring::RingGeometry;
use super::{RingFault, TcmuError, MAX_CDB_LEN};
use crate::exec::{CommandExecutor, Response};
use crate::frontend::{Coalescer, Drain, SharedFault};
use crate::latency::{LatencyRecorder, SharedLatency};

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
    config: TcmuDeviceConfig,
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
    /// `fault`, for the control plane (set at the poll that faulted).
    shared_fault: Arc<SharedFault<RingFault>>,
    drain: Drain,
    doorbell_pending: bool,
    /// Completions written into the ring but not yet published.
    unpublished: usize,
    /// Holds completions back; its hold starts when the first unpublished
    /// completion is written.
    coalescer: Coalescer,
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
        config: TcmuDeviceConfig,
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
            shared_fault: Arc::default(),
            drain: Drain::default(),
            doorbell_pending: false,
            unpublished: 0,
            coalescer: Coalescer::new(&config.coalesce),
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
            if self.drain.accepting() {
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
                if self.publish(&mut c) {
                    // A completion is held: keep the reactor polling (not
                    // asleep) until the hold ends.
                    work = work.max(1);
                }
            }
            work
        };
        if work > 0 {
            c.polls_with_work = 1;
        }
        c.hold_us = clock::ticks_to_ns(self.coalescer.hold_limit()) / 1000;
        self.stats.publish(&c);
        if let Some(fault) = self.fault {
            if self.shared_fault.get().is_none() {
                self.shared_fault.set(fault);
            }
        }
        work
    }

    /// The device's latency histogram (walk to response), if tracked.
    pub fn latency(&self) -> Option<Arc<SharedLatency>> {
        self.latency.as_ref().map(LatencyRecorder::shared)
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

    /// [`fault`](Self::fault) for other threads: set at the end of the
    /// poll that broke the ring.
    pub fn shared_fault(&self) -> Arc<SharedFault<RingFault>> {
        Arc::clone(&self.shared_fault)
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

    /// The data area: its offset in the region and its length. Every
    /// command's data iovecs lie in it.
    pub fn data_area(&self) -> (usize, usize) {
        (self.geo.data_off, self.geo.map_len - self.geo.data_off)
    }

    /// Stops walking the ring (entries that arrive stay on it for the next
    /// owner) while in-flight commands keep completing.
    pub fn begin_shutdown(&mut self) {
        self.drain.begin();
    }

    /// True when no command is in flight and every completion is published
    /// and rung (broken ring: when the executor is empty).
    pub fn is_drained(&self) -> bool {
        Drain::drained(self.executor.in_flight(), self.fault.is_some(), || {
            self.free.len() == self.slots.len()
                && self.tail == self.published_tail
                && !self.doorbell_pending
        })
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
