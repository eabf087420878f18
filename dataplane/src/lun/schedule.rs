//! Scheduling: the scratch queue, the ready queue with its FIFO head,
//! COMPARE AND WRITE running alone, and finishing tasks (see "Scheduling" in
//! the module docs of [`lun`](super)).

use super::step::Step;
use super::task::{Queued, TaskState};
use super::Lun;
use crate::exec::{status, Response};

/// What staging requests for a task's step achieved.
pub(super) enum Progress {
    /// The port is full and requests remain: keep the head of the queue.
    Blocked,
    /// Everything possible is staged; continue when completions arrive.
    Waiting,
    /// The task has finished (error, abort or all steps done).
    Finished,
}

impl Lun {
    /// Schedules a task whose steps were just planned: finishes it if it has
    /// nothing to do, makes it wait for scratch memory if it needs some and
    /// none is free, and otherwise lets it stage at once when nothing is
    /// queued ahead of it, or queues it.
    pub(super) fn schedule(&mut self, slot: u32) {
        let task = &mut self.tasks[slot as usize];
        if task.step == Step::Idle {
            // Nothing to do (zero-length transfer and the like).
            return self.finish(slot);
        }
        if task.step.needs_scratch() || task.next.needs_scratch() {
            if self.scratch_wait.is_empty() {
                task.chunk = self.scratch.take();
            }
            if task.chunk.is_none() {
                task.queued = Queued::Scratch;
                self.scratch_wait.push_back(slot);
                self.stats.scratch_waits += 1;
                return;
            }
        }
        if self.ready.is_empty() && self.exclusive.is_none() {
            // Fast path: nothing is queued ahead of this task, so advancing it
            // now is what `run_ready` would do with it alone in the queue.
            match self.advance(slot) {
                Progress::Blocked => {
                    self.stats.head_blocked += 1;
                    self.tasks[slot as usize].queued = Queued::Ready;
                    self.ready.push_back(slot);
                }
                Progress::Waiting => {}
                Progress::Finished => self.finish(slot),
            }
            return;
        }
        task.queued = Queued::Ready;
        self.ready.push_back(slot);
        self.run_ready();
    }

    /// Lets the tasks at the head of the ready queue stage requests, in FIFO
    /// order, until one must wait for port room.
    pub(super) fn run_ready(&mut self) {
        while let Some(&slot) = self.ready.front() {
            if let Some(owner) = self.exclusive {
                if owner != slot {
                    break;
                }
            }
            match self.advance(slot) {
                Progress::Blocked => {
                    self.stats.head_blocked += 1;
                    break;
                }
                Progress::Waiting => {
                    self.ready.pop_front();
                    self.tasks[slot as usize].queued = Queued::No;
                }
                Progress::Finished => {
                    self.ready.pop_front();
                    self.tasks[slot as usize].queued = Queued::No;
                    self.finish(slot);
                }
            }
        }
    }

    /// Stages what the task's current step allows, moving to its next step
    /// when one is complete.
    fn advance(&mut self, slot: u32) -> Progress {
        loop {
            let task = &mut self.tasks[slot as usize];
            if task.aborted || task.error.is_some() {
                return if task.outstanding == 0 {
                    Progress::Finished
                } else {
                    Progress::Waiting
                };
            }
            if task.exclusive && self.exclusive != Some(slot) {
                // COMPARE AND WRITE starts only when nothing else is in the
                // bdev.
                if self.port.outstanding() > 0 {
                    return Progress::Blocked;
                }
                self.exclusive = Some(slot);
            }
            if task.step.has_more() {
                if self.stage_step(slot) {
                    return Progress::Blocked;
                }
                let task = &self.tasks[slot as usize];
                if task.outstanding > 0 || task.step.has_more() {
                    return Progress::Waiting;
                }
            } else if task.outstanding > 0 {
                return Progress::Waiting;
            }
            // Step complete.
            let task = &mut self.tasks[slot as usize];
            if task.next == Step::Idle {
                return Progress::Finished;
            }
            task.step = task.next;
            task.next = Step::Idle;
        }
    }

    /// Finishes a task: detaches its data buffer, builds its response,
    /// releases its scratch chunk and queues it for delivery.
    pub(super) fn finish(&mut self, slot: u32) {
        let format = self.sense_format();
        let task = &mut self.tasks[slot as usize];
        debug_assert_eq!(task.outstanding, 0);
        task.response = if task.aborted {
            Response::with_status(status::TASK_ABORTED)
        } else if let Some(error) = task.error {
            error.to_response(format)
        } else {
            Response::good(task.data_in_len)
        };
        task.state = TaskState::Done;
        task.step = Step::Idle;
        task.next = Step::Idle;
        if self.exclusive == Some(slot) {
            self.exclusive = None;
        }
        task.data.detach();
        if let Some(chunk) = task.chunk.take() {
            self.scratch.put(chunk);
            self.grant_scratch();
        }
        self.done.push_back(slot);
    }

    /// Gives free scratch chunks to waiting tasks, in order.
    fn grant_scratch(&mut self) {
        while self.scratch.has_free() {
            let Some(slot) = self.scratch_wait.pop_front() else {
                break;
            };
            let task = &mut self.tasks[slot as usize];
            task.chunk = self.scratch.take();
            task.queued = Queued::Ready;
            self.ready.push_back(slot);
        }
    }

    /// Removes `slot` from whichever queue holds it.
    pub(super) fn unqueue(&mut self, slot: u32) {
        let task = &mut self.tasks[slot as usize];
        let queue = match task.queued {
            Queued::No => return,
            Queued::Ready => &mut self.ready,
            Queued::Scratch => &mut self.scratch_wait,
        };
        if let Some(at) = queue.iter().position(|&s| s == slot) {
            queue.remove(at);
        }
        task.queued = Queued::No;
    }
}
