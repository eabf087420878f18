//! Aborting one task for task management (ABORT TASK and the like): the
//! entry point a frontend calls when the kernel aborts a command, saying
//! whether the task was found and what is left of it in the bdev.
//!
//! SAM-5 5.6: an aborted task gets no status of its own; the logical unit
//! only has to stop it and free its slot. Here the task's response becomes
//! TASK ABORTED (which a frontend may drop or pass on, as its kernel
//! interface wants), its data buffer is detached and its slot is free once
//! `poll` has delivered that response. A task with requests in the bdev
//! cannot be freed before they complete (the bdev may still write into its
//! buffer): the unit asks the bdev to abort them, all under one tag,
//! through its port ([`BdevPort::abort`](crate::port::BdevPort::abort), once
//! per request, the first time the task is aborted). A bdev that can abort
//! them ([`bdev::BdevChannel::abort`]) completes them with
//! [`IoError::Aborted`](bdev::IoError::Aborted) and the task finishes at
//! once; otherwise it finishes when they complete as they would have.

use super::task::{tag, TaskState};
use super::Lun;

/// What [`Lun::abort_task`] found in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAbort {
    /// No task to abort: the slot is free, out of range, or its task has
    /// finished (its response waits for `poll`).
    NotFound,
    /// The task had no request in the bdev: it finished at once with TASK
    /// ABORTED, delivered by the next `poll`, which frees the slot.
    Finished,
    /// The task has `requests` requests in the bdev (or staged for it),
    /// all tagged `tag`, and their abort was sent to the bdev; it finishes
    /// with TASK ABORTED when the last one completes. It stages nothing
    /// more. Asking again returns the same and sends nothing more.
    InBdev {
        /// The tag of the task's bdev requests (port-local: the port adds
        /// its routing bits).
        tag: u64,
        /// How many are outstanding.
        requests: u32,
    },
}

impl Lun {
    /// Aborts the task in `slot` (see the module docs). Never allocates.
    pub fn abort_task(&mut self, slot: u32) -> TaskAbort {
        let Some(task) = self.tasks.get_mut(slot as usize) else {
            return TaskAbort::NotFound;
        };
        if task.state != TaskState::Active {
            return TaskAbort::NotFound;
        }
        let first = !task.aborted;
        task.aborted = true;
        if task.outstanding == 0 {
            self.unqueue(slot);
            self.finish(slot);
            self.run_ready();
            return TaskAbort::Finished;
        }
        let tag = tag(slot, task.generation);
        if first {
            for _ in 0..task.outstanding {
                self.port.abort(tag);
            }
        }
        TaskAbort::InBdev {
            tag,
            requests: task.outstanding,
        }
    }
}
