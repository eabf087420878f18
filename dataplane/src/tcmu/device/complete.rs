//! Steps 2 to 4 of the poll: collecting the executor's responses into
//! their slots, writing them into the ring, and publishing the tail with
//! one doorbell (or holding the batch back, see [`Coalescer`]).
//!
//! [`Coalescer`]: crate::frontend::Coalescer

use super::{SlotState, TcmuDevice, TcmuStatsSnapshot, Walked, NO_SLOT};
use crate::exec::{CommandExecutor, Response};
use crate::tcmu::{ring, RingFault};
use reactor::clock;

impl<E: CommandExecutor> TcmuDevice<E> {
    /// Collects executor completions into their slots (step 2).
    pub(super) fn collect(&mut self) {
        let slots = &mut self.slots;
        let done = &mut self.done;
        let mut latency = self
            .latency
            .as_mut()
            .filter(|_| self.executor.in_flight() != 0);
        // Read at the first response only: an idle poll (an I/O still in
        // flight) takes no clock reading.
        let mut now = None;
        self.executor
            .poll(self.config.budget, &mut |slot, response: &Response| {
                if let Some(s) = slots.get_mut(slot as usize) {
                    if s.state == SlotState::Executing {
                        s.response = *response;
                        s.state = SlotState::Done;
                        done.push(slot);
                        if let Some(latency) = latency.as_deref_mut() {
                            let now = *now.get_or_insert_with(clock::recent);
                            latency.record(now.wrapping_sub(s.received_at));
                        }
                    }
                }
            });
        if let (Some(latency), Some(now)) = (latency, now) {
            latency.maybe_flush(now);
        }
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
    pub(super) fn write_completions(&mut self, c: &mut TcmuStatsSnapshot) -> usize {
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
            self.coalescer.restart(clock::recent());
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
    /// [`TcmuDeviceConfig::coalesce`](super::TcmuDeviceConfig::coalesce)).
    /// Returns true while completions are held.
    pub(super) fn publish(&mut self, c: &mut TcmuStatsSnapshot) -> bool {
        if self.tail != self.published_tail {
            // Draining: nothing is held.
            if self
                .coalescer
                .hold(self.unpublished, self.drain.is_draining())
            {
                return true;
            }
            // A tail moved under the device (a reset since the walk) must
            // not be overwritten: the kernel's ring starts over there.
            let found = self.region.load_cmd_tail();
            if found != self.published_tail {
                self.fault = Some(RingFault::TailMovedByPeer {
                    expected: self.published_tail,
                    found,
                });
                return false;
            }
            self.region.store_cmd_tail(self.tail);
            self.published_tail = self.tail;
            self.coalescer.completed(self.unpublished, clock::recent());
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
        false
    }

    /// Broken ring: drain the executor so its memory use ends, discard the
    /// responses, touch nothing in the ring.
    pub(super) fn drain_broken(&mut self) -> usize {
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
}
