//! Completions: a bdev completion ends its request's loan of memory,
//! advances its task (the first error is kept, a checked piece is compared)
//! and either finishes the task or queues it to stage more.

use bdev::IoCompletion;

use super::step::{Carries, CheckStep, Compare, Step};
use super::task::{untag, Queued, TaskState};
use super::Lun;
use crate::scsi::{cdb, ScsiError};

impl Lun {
    /// Ends the loan of the memory a request of the task's current step
    /// carried: the request completed, or the port refused it.
    pub(super) fn end_loan(&mut self, slot: u32) {
        let task = &mut self.tasks[slot as usize];
        match task.step.carries() {
            Carries::Nothing => {}
            Carries::DataBuffer => task.data.give_back(),
            Carries::ScratchChunk => {
                let chunk = task.chunk.as_ref().expect("step holds a scratch chunk");
                self.scratch.give_back(chunk);
            }
        }
    }

    /// Handles one bdev completion. A tag that names no outstanding request
    /// of a live task is counted as stray and ignored.
    pub(super) fn complete(&mut self, completion: IoCompletion) {
        let (slot, generation) = untag(completion.tag);
        let bs = self.block_size();
        let Some(task) = self.tasks.get_mut(slot as usize) else {
            self.stats.stray_completions += 1;
            return;
        };
        if task.state != TaskState::Active || task.generation != generation || task.outstanding == 0
        {
            self.stats.stray_completions += 1;
            return;
        }
        task.outstanding -= 1;
        // The step that staged the request is still the task's step: it only
        // moves on when nothing is outstanding.
        self.end_loan(slot);
        let task = &mut self.tasks[slot as usize];
        match completion.result {
            Err(error) => {
                self.tally.bdev_errors += 1;
                if task.error.is_none() {
                    let field = cdb::transfer_length_field(task.cdb[0]);
                    task.error = Some(ScsiError::from_io(error, field));
                }
            }
            Ok(()) => {
                if let Step::Check(check) = task.step {
                    let chunk = task
                        .chunk
                        .as_ref()
                        .expect("check step holds a scratch chunk");
                    // The only request on this chunk (one piece at a time)
                    // has just completed.
                    let got = &self.scratch.bytes(chunk)[..check.piece as usize * bs];
                    let start = check.done as usize * bs;
                    // The data buffer holds the compared bytes (checked
                    // against `data_out_len`; one block for SameBlock).
                    let mismatch = match check.compare {
                        Compare::Nothing => None,
                        Compare::Bytes { buf_offset } => task
                            .data
                            .first_difference(buf_offset + start, got)
                            .map(|at| start + at),
                        Compare::SameBlock => got.chunks(bs).enumerate().find_map(|(i, block)| {
                            task.data
                                .first_difference(0, block)
                                .map(|at| start + i * bs + at)
                        }),
                    };
                    if let Some(offset) = mismatch {
                        task.error = Some(ScsiError::Miscompare {
                            offset: offset as u64,
                        });
                    }
                    task.step = Step::Check(CheckStep {
                        done: check.done + check.piece,
                        piece: 0,
                        ..check
                    });
                }
            }
        }
        if task.outstanding > 0 || task.queued != Queued::No {
            // More completions to come, or the task is queued and the queue
            // will continue it.
            if task.outstanding == 0 && (task.aborted || task.error.is_some()) {
                self.unqueue(slot);
                self.finish(slot);
            }
            return;
        }
        if task.aborted
            || task.error.is_some()
            || (!task.step.has_more() && task.next == Step::Idle)
        {
            return self.finish(slot);
        }
        task.queued = Queued::Ready;
        if self.exclusive == Some(slot) {
            self.ready.push_front(slot);
        } else {
            self.ready.push_back(slot);
        }
    }
}
