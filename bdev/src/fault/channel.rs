//! A channel of the fault bdev: the base bdev's channel, a preallocated
//! slot per request it holds, and the completions waiting out a delay.
//!
//! A request occupies either a slot (passed to the base, stuck, or
//! waiting out its delay) or an entry of the completion queue (failed at
//! submit, or finished): so `in_flight` is both, and never more than the
//! depth. Requests go to the base tagged with their slot index.
//!
//! The channel waits on its base's descriptors (`wait_fds`), so a reactor
//! that sleeps wakes when the base completes; a delayed completion is
//! released by the first `poll` after its time, so under an idle policy
//! that sleeps it may come up to one sleep late (the reactor's
//! `max_sleep_ms`).

use std::sync::Arc;

use super::clock::Clock;
use super::rng::SplitMix;
use super::rule::{FaultAction, FaultRule};
use super::space::Space;
use super::stats::Counters;
use crate::request::{check_request, CompletionQueue};
use crate::{BdevChannel, Error, Geometry, IoCompletion, IoError, IoOp, IoRequest, IoVec};

/// Where a slot's request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    /// In the base bdev; then held for `delay_ns`.
    InBase {
        delay_ns: u64,
    },
    /// Held until aborted.
    Stuck,
    /// Finished; delivered once the clock reaches `due_ns`.
    Waiting {
        due_ns: u64,
        result: Result<(), IoError>,
    },
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    tag: u64,
    state: State,
}

/// A channel of the fault bdev.
#[derive(Debug)]
pub(super) struct FaultChannel {
    base: Box<dyn BdevChannel>,
    geometry: Geometry,
    rules: Arc<[FaultRule]>,
    rng: SplitMix,
    clock: Clock,
    counters: Arc<Counters>,
    space: Option<Arc<Space>>,
    slots: Vec<Slot>,
    /// Free slot indexes.
    free: Vec<u32>,
    /// Slots in [`State::Waiting`], in no order.
    waiting: Vec<u32>,
    done: CompletionQueue,
    depth: usize,
}

impl FaultChannel {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        base: Box<dyn BdevChannel>,
        geometry: Geometry,
        rules: Arc<[FaultRule]>,
        seed: u64,
        clock: Clock,
        counters: Arc<Counters>,
        space: Option<Arc<Space>>,
        depth: usize,
    ) -> Self {
        Self {
            base,
            geometry,
            rules,
            rng: SplitMix::new(seed),
            clock,
            counters,
            space,
            slots: vec![
                Slot {
                    tag: 0,
                    state: State::Free
                };
                depth
            ],
            free: (0..depth as u32).rev().collect(),
            waiting: Vec::with_capacity(depth),
            done: CompletionQueue::new(depth),
            depth,
        }
    }

    /// The first rule that selects `request`, drawing its probability:
    /// its action and the request's first block in its range.
    fn select(&mut self, request: &IoRequest) -> Option<(FaultAction, u64)> {
        let rules = &self.rules;
        for rule in rules.iter() {
            if rule.matches(request) && self.rng.chance(rule.probability) {
                return Some((rule.action, rule.first_block(request)));
            }
        }
        None
    }

    /// Allocates what a write needs, or releases what an unmap frees,
    /// under the space limit; false when a write does not fit.
    fn has_space(&self, request: &IoRequest) -> bool {
        let Some(space) = &self.space else {
            return true;
        };
        let blocks = u64::from(request.blocks);
        match request.op {
            IoOp::Write | IoOp::WriteZeroes => space.allocate(request.lba, blocks),
            IoOp::Unmap => {
                space.release(request.lba, blocks);
                true
            }
            IoOp::Read | IoOp::Flush => true,
        }
    }

    fn release(&mut self, slot: u32) {
        self.slots[slot as usize].state = State::Free;
        self.free.push(slot);
    }

    /// Delivers the waiting completions whose time has come.
    fn release_due(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let now = self.clock.now_ns();
        let mut i = 0;
        while i < self.waiting.len() {
            let slot = self.waiting[i];
            let Slot { tag, state } = self.slots[slot as usize];
            match state {
                State::Waiting { due_ns, result } if due_ns <= now => {
                    self.waiting.swap_remove(i);
                    self.done.complete(tag, result);
                    self.release(slot);
                }
                _ => i += 1,
            }
        }
    }
}

impl BdevChannel for FaultChannel {
    fn submit(&mut self, request: IoRequest) -> Result<(), IoRequest> {
        if self.in_flight() >= self.depth {
            return Err(request);
        }
        if let Err(error) = check_request(&self.geometry, &request) {
            self.done.complete(request.tag, Err(error));
            return Ok(());
        }
        let action = self.select(&request);
        let delay_ns = match action {
            Some((FaultAction::Fail(kind), lba)) => {
                Counters::bump(&self.counters.failed);
                self.done
                    .complete(request.tag, Err(kind.io_error(request.op, lba)));
                return Ok(());
            }
            Some((FaultAction::Delay { min_us, max_us }, _)) => {
                self.rng.between(min_us, max_us).saturating_mul(1000)
            }
            Some((FaultAction::Stick, _)) | None => 0,
        };
        let stick = matches!(action, Some((FaultAction::Stick, _)));
        if !stick && !self.has_space(&request) {
            Counters::bump(&self.counters.no_space);
            self.done
                .complete(request.tag, Err(IoError::NoSpace(libc::ENOSPC)));
            return Ok(());
        }
        let Some(slot) = self.free.pop() else {
            return Err(request);
        };
        let state = if stick {
            Counters::bump(&self.counters.stuck);
            State::Stuck
        } else {
            let to_base = IoRequest {
                tag: u64::from(slot),
                ..request
            };
            if self.base.submit(to_base).is_err() {
                self.free.push(slot);
                return Err(request);
            }
            State::InBase { delay_ns }
        };
        self.slots[slot as usize] = Slot {
            tag: request.tag,
            state,
        };
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
        let Self {
            base,
            slots,
            free,
            waiting,
            done: finished,
            clock,
            counters,
            ..
        } = self;
        base.poll(&mut |completion| {
            let index = completion.tag as usize;
            let Some(slot) = slots.get_mut(index) else {
                debug_assert!(false, "base completion with unknown tag {index}");
                return;
            };
            let State::InBase { delay_ns } = slot.state else {
                debug_assert!(false, "base completion for slot {index} not in the base");
                return;
            };
            if delay_ns == 0 {
                finished.complete(slot.tag, completion.result);
                slot.state = State::Free;
                free.push(index as u32);
            } else {
                Counters::bump(&counters.delayed);
                slot.state = State::Waiting {
                    due_ns: clock.now_ns().saturating_add(delay_ns),
                    result: completion.result,
                };
                waiting.push(index as u32);
            }
        });
        self.release_due();
        self.done.deliver(done)
    }

    fn in_flight(&self) -> usize {
        (self.depth - self.free.len()) + self.done.len()
    }

    /// A stuck request, or one waiting out its delay, completes with
    /// [`IoError::Aborted`] at the next `poll`; one in the base bdev is
    /// aborted there if the base can.
    fn abort(&mut self, tag: u64) -> bool {
        let Some(index) = self
            .slots
            .iter()
            .position(|s| s.tag == tag && s.state != State::Free)
        else {
            return false;
        };
        match self.slots[index].state {
            State::InBase { .. } => {
                let aborted = self.base.abort(index as u64);
                if aborted {
                    // Its completion is the abort: no delay on top.
                    self.slots[index].state = State::InBase { delay_ns: 0 };
                }
                aborted
            }
            State::Stuck | State::Waiting { .. } => {
                if let Some(at) = self.waiting.iter().position(|&s| s as usize == index) {
                    self.waiting.swap_remove(at);
                }
                Counters::bump(&self.counters.aborted);
                self.done.complete(tag, Err(IoError::Aborted));
                self.release(index as u32);
                true
            }
            State::Free => false,
        }
    }

    fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.base.wait_fds()
    }

    /// The base's memory is the caller's: offered to the base.
    unsafe fn register_memory(&mut self, regions: &[IoVec]) -> Result<bool, Error> {
        // SAFETY: this function's contract, passed on unchanged: the base
        // channel lives exactly as long as this one.
        unsafe { self.base.register_memory(regions) }
    }
}
