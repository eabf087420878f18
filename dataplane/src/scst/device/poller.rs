//! The poll cycle of [`ScstDevice`]: collect finished commands, retry
//! held work, exchange replies for new subcommands (one
//! REPLY_AND_GET_MULTI, or none while replies are coalesced), hand the new
//! subcommands to their handlers (`subcommands.rs`), publish the
//! statistics. See the module docs of [`super`] for each step.

use nix::errno::Errno;
use reactor::clock;

use super::{Held, ScstDevice, ScstStatsSnapshot, SlotState};
use crate::exec::{CommandExecutor, Response};
use crate::scst::abi::*;
use crate::scst::driver::ScstDriver;

impl<D: ScstDriver, E: CommandExecutor> ScstDevice<D, E> {
    /// One poll: collect, retry held work, exchange, handle. Returns the
    /// work done (completions, subcommands received and held work started;
    /// responses drained while faulted).
    ///
    /// The exchange (the ioctl) happens when there is a reply to send or a
    /// subcommand may be asked for, and at least one of:
    /// - an urgent reply is queued (PARSE, ALLOC_MEM, sessions, task
    ///   management: a command or the kernel waits for it), the device is
    ///   shutting down, or the last exchange filled the command buffer (more
    ///   may be waiting);
    /// - the [`Coalescer`](crate::frontend::Coalescer) holds nothing (no
    ///   concurrency seen, or holding does not pay) and a reply is queued,
    ///   or the last call found work (answer and look for more at once, so
    ///   a lone command is never delayed), or
    ///   [`ScstDeviceConfig::idle_poll_interval`] has passed (an idle device
    ///   asks for work at that rate, not at every poll, and not while the
    ///   driver knows nothing is queued: see
    ///   [`ScstDriver::may_have_work`]; at least once per
    ///   [`ScstDeviceConfig::idle_backstop`]);
    /// - the coalescer holds, and its hold has passed since the last
    ///   exchange or `batch` replies are queued
    ///   ([`Coalescer::due`](crate::frontend::Coalescer::due)).
    ///
    /// So under load one exchange answers a batch and fetches a batch, and
    /// at queue depth 1 every reply goes out at once. See
    /// [`ScstDeviceConfig::coalesce`].
    ///
    /// [`ScstDeviceConfig::idle_poll_interval`]: super::ScstDeviceConfig::idle_poll_interval
    /// [`ScstDeviceConfig::idle_backstop`]: super::ScstDeviceConfig::idle_backstop
    /// [`ScstDeviceConfig::coalesce`]: super::ScstDeviceConfig::coalesce
    pub fn poll(&mut self) -> usize {
        if self.fault.is_some() {
            return self.drain_faulted();
        }
        let quiescing = self.handoff.requested();
        if quiescing != self.quiescing {
            if quiescing {
                self.handoff.publish_sessions(&self.sessions);
            } else {
                // Given up: serving again.
                self.handoff.observe(false, false);
            }
            self.quiescing = quiescing;
        }
        let mut c = ScstStatsSnapshot::default();
        let mut work = self.collect(&mut c);
        work += self.run_held(&mut c);
        let room = self.limit.saturating_sub(self.outstanding);
        let want = if self.drain.accepting() {
            room.min(self.multi.capacity())
        } else {
            0
        };
        // Whether an exchange now ends a hold that ran its full length.
        let limit = self.coalescer.hold_limit();
        let hold_over = limit > 0 && !self.urgent() && self.coalescer.age(clock::recent()) >= limit;
        let (got, replied) = if self.exchange_due(want) {
            self.exchange(want, &mut c)
        } else {
            (0, 0)
        };
        // Held replies went out (`hold_over`): unjoined if the exchange
        // brought no sign of concurrency (see below).
        let ended_hold = hold_over && replied > 0 && want > 0;
        if got > 0 {
            let now = clock::recent();
            // The commands in hand at once (the coalescer's concurrency
            // test): those executing before this fetch, the EXECs it
            // brought, and the replies it carried if there were several.
            // One reply and one new command in the same exchange is also
            // what a queue-depth-1 stream shows when the initiator gets the
            // reply and resubmits before the ioctl, which answers first,
            // fetches: in the VM test's emulated guest that happened often
            // enough to open the gate at queue depth 1 and keep it open,
            // every command held.
            let executing = self.slots.len() - self.free.len();
            let carried = if replied > 1 { replied } else { 0 };
            let received = c.exec;
            for i in 0..got {
                self.handle(i, now, &mut c);
            }
            let execs = (c.exec - received) as usize;
            let in_hand = executing + carried + execs;
            if ended_hold && in_hand < 2 {
                self.coalescer.unjoined(replied, now);
            }
            self.coalescer.arrived(execs, in_hand, now);
            work += got;
        } else if ended_hold {
            // Nothing had arrived meanwhile.
            self.coalescer.unjoined(replied, clock::recent());
        }
        self.executor.flush();
        if self.replies.len() > 0
            && (self.coalescer.has_window() || self.coalescer.hold_limit() > 0)
        {
            // A reply is held: keep the reactor polling (not asleep) until
            // the hold ends.
            work = work.max(1);
        }
        if work > 0 {
            c.polls_with_work = 1;
        }
        self.publish(&mut c);
        work
    }

    /// Whether this poll calls the driver (see [`ScstDevice::poll`]).
    fn exchange_due(&mut self, want: usize) -> bool {
        let queued = self.replies.len();
        if queued == 0 && want == 0 {
            return false;
        }
        // Before the first exchange there is no "last one" to count from.
        if self.urgent() || !self.exchanged {
            return true;
        }
        let now = clock::recent();
        let due = if self.coalescer.hold_limit() > 0 {
            // Under load, where holding pays: one exchange per hold, or
            // at `batch` replies queued.
            self.coalescer.due(queued, now)
        } else if queued > 0 {
            // No concurrency seen: a reply goes out at once (unless a
            // coalescing window holds it).
            return !self.coalescer.hold(queued, false);
        } else {
            // Nothing to answer: look for work at once after a call that
            // found some, else once per idle polling interval.
            self.last_got || self.coalescer.age(now) >= self.idle_poll_ticks
        };
        if !due || queued > 0 || self.last_got {
            return due;
        }
        // Only asking for work: not while the driver knows nothing is
        // queued, unless the last exchange is `idle_backstop` old (see
        // `scst::idle_watch`).
        self.coalescer.age(now) >= self.idle_backstop_ticks
            || self.driver.may_have_work(now, self.idle_poll_ticks)
    }

    /// True when the next exchange must not wait for a hold: an urgent
    /// reply is queued, the device is draining, or the last exchange
    /// filled the command buffer (more may be waiting).
    fn urgent(&self) -> bool {
        self.replies.is_urgent() || self.drain.is_draining() || self.last_filled
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
            clock::recent()
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
    /// subcommands in `self.multi` and of replies the kernel took.
    fn exchange(&mut self, want: usize, c: &mut ScstStatsSnapshot) -> (usize, usize) {
        let sent = self.replies.len();
        if sent == 0 && want == 0 {
            return (0, 0);
        }
        let header = self.multi.header_mut();
        header.preplies = if sent > 0 {
            self.replies.as_slice().as_ptr() as u64
        } else {
            0
        };
        header.replies_cnt = sent as i16;
        header.replies_done = 0;
        header.cmds_cnt = want as i16;
        let result = self
            .driver
            .reply_and_get_multi(&mut self.multi, self.replies.as_slice());
        c.ioctls += 1;
        self.exchanged = true;
        let now = clock::recent();
        self.coalescer.restart(now);
        let header = *self.multi.header();
        let consumed = usize::try_from(header.replies_done).unwrap_or(0).min(sent);
        let returned = usize::try_from(header.cmds_cnt).unwrap_or(0);
        let mut got = 0;
        let mut refused = false;
        match result {
            Ok(()) => got = returned.min(want),
            // The kernel writes `cmds_cnt` whenever it got to fetching
            // commands, errors included: on a failure while copying command
            // i out (EFAULT) the i before it are delivered, and the failed
            // one goes back to its queue. Failing earlier it writes 0 (a
            // refused reply) or leaves the `want` it was given, and fetching
            // stops with i < want. So fewer than asked, with an error, are
            // commands this device now holds and must answer.
            Err(_) if returned < want => got = returned,
            Err(_) => {}
        }
        match result {
            Ok(()) => {}
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
                    self.shared_fault.set(e);
                }
            }
        }
        c.replies_sent += consumed as u64;
        self.coalescer.completed(consumed, now);
        let retired = consumed + usize::from(refused);
        self.outstanding -= retired;
        self.replies.retire(consumed, refused);
        if self.fault.is_some() {
            self.outstanding -= self.replies.len();
            self.replies.clear();
            return (0, consumed);
        }
        self.outstanding += got;
        self.last_filled = want > 0 && got == want;
        self.last_got = got > 0;
        (got, consumed)
    }

    /// Stores the poll's counters and the gauges.
    fn publish(&mut self, c: &mut ScstStatsSnapshot) {
        c.hold_us = clock::ticks_to_ns(self.coalescer.hold_limit()) / 1000;
        c.sessions = self.sessions.len() as u64;
        c.outstanding = self.outstanding as u64;
        c.executing = (self.slots.len() - self.free.len()) as u64;
        c.pool_bytes_in_use = self.pool.bytes_in_use();
        c.pool_buffers_in_use = self.pool.buffers_in_use();
        c.pool_failed_allocs = self.pool.failed_allocs();
        self.stats.publish(c);
        if self.quiescing {
            // Clean: nothing of this process's memory with the kernel or
            // the executor (see `handoff.rs`).
            let clean = c.pool_buffers_in_use == 0 && self.oversize.len() == 0;
            self.handoff.observe(true, clean);
        }
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
}
