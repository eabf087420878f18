//! Staging: turning a task's current step into bdev requests on the port,
//! one function per kind of step. Each stages at most one request and says
//! what happened; [`Lun::stage_step`] repeats until the step has nothing
//! more to stage now or the port is full.
//!
//! A request that carries memory takes a loan of it (the data buffer's or
//! the scratch chunk's) when it is built; if the port refuses the request,
//! the loan ends at once, before the step changes.

use bdev::{IoOp, IoRequest, SgList};

use super::step::{CheckStep, FillHow, FillStep, FlushStep, Step, TransferStep, UnmapStep};
use super::task::tag;
use super::Lun;
use crate::scsi::ScsiError;

/// What one call of a staging function did.
enum Staged {
    /// Staged one request; the step may have more.
    One,
    /// The port is full and the step has requests left.
    PortFull,
    /// The step has nothing (more) to stage now.
    Nothing,
}

impl Lun {
    /// Stages requests for the current step; returns true if the port filled
    /// up while requests remained.
    pub(super) fn stage_step(&mut self, slot: u32) -> bool {
        loop {
            let step = self.tasks[slot as usize].step;
            if self.port.room() == 0 {
                return step.has_more();
            }
            let staged = match step {
                Step::Idle => Staged::Nothing,
                Step::Transfer(transfer) => self.stage_transfer(slot, transfer),
                Step::Flush(flush) => self.stage_flush(slot, flush),
                Step::Check(check) => self.stage_check(slot, check),
                Step::Unmap(unmap) => self.stage_unmap(slot, unmap),
                Step::Fill(fill) => self.stage_fill(slot, fill),
            };
            match staged {
                Staged::One => {}
                Staged::PortFull => return true,
                Staged::Nothing => return false,
            }
        }
    }

    /// Stages one request of the task in `slot`, counting it outstanding;
    /// false if the port is full.
    fn stage(
        &mut self,
        slot: u32,
        op: IoOp,
        lba: u64,
        blocks: u32,
        fua: bool,
        sgl: SgList,
    ) -> bool {
        let task = &mut self.tasks[slot as usize];
        let request = IoRequest {
            op,
            fua,
            lba,
            blocks,
            sgl,
            tag: tag(slot, task.generation),
        };
        if self.port.stage(request).is_err() {
            return false;
        }
        task.outstanding += 1;
        self.stats.requests += 1;
        true
    }

    /// The read or write over the data buffer (or, for the write of COMPARE
    /// AND WRITE, the part of it from `buf_offset`).
    fn stage_transfer(&mut self, slot: u32, transfer: TransferStep) -> Staged {
        if transfer.staged {
            return Staged::Nothing;
        }
        let len = transfer.blocks as usize * self.block_size();
        let data = &mut self.tasks[slot as usize].data;
        let sgl = if transfer.buf_offset == 0 {
            data.lend()
        } else {
            data.lend_range(transfer.buf_offset, len)
        };
        let TransferStep {
            op,
            lba,
            blocks,
            fua,
            ..
        } = transfer;
        if !self.stage(slot, op, lba, blocks, fua, sgl) {
            self.end_loan(slot);
            return Staged::PortFull;
        }
        self.tasks[slot as usize].step = Step::Transfer(TransferStep {
            staged: true,
            ..transfer
        });
        Staged::One
    }

    /// The flush of SYNCHRONIZE CACHE.
    fn stage_flush(&mut self, slot: u32, flush: FlushStep) -> Staged {
        if flush.staged {
            return Staged::Nothing;
        }
        if !self.stage(
            slot,
            IoOp::Flush,
            flush.lba,
            flush.blocks,
            false,
            SgList::EMPTY,
        ) {
            return Staged::PortFull;
        }
        self.tasks[slot as usize].step = Step::Flush(FlushStep {
            staged: true,
            ..flush
        });
        Staged::One
    }

    /// The read of the next piece of a check into the task's scratch chunk
    /// (one piece at a time; the completion compares it).
    fn stage_check(&mut self, slot: u32, check: CheckStep) -> Staged {
        if check.piece > 0 || check.done == check.blocks {
            return Staged::Nothing;
        }
        let n = (check.blocks - check.done).min(self.chunk_blocks());
        let chunk = self.tasks[slot as usize].chunk.as_ref();
        let sgl = self
            .scratch
            .lend_to_fill(chunk.expect("check step holds a scratch chunk"));
        let lba = check.lba + u64::from(check.done);
        if !self.stage(slot, IoOp::Read, lba, n, false, sgl) {
            self.end_loan(slot);
            return Staged::PortFull;
        }
        self.tasks[slot as usize].step = Step::Check(CheckStep { piece: n, ..check });
        Staged::One
    }

    /// The next Unmap request of UNMAP: takes the task's validated
    /// descriptors in order as the previous ones are used up, and splits
    /// each into pieces the bdev accepts. Never reads the data buffer.
    fn stage_unmap(&mut self, slot: u32, unmap: UnmapStep) -> Staged {
        let UnmapStep {
            mut next,
            count,
            mut lba,
            mut left,
        } = unmap;
        let task = &mut self.tasks[slot as usize];
        while left == 0 && next < count {
            let Some(descriptor) = task.unmap.get(next as usize) else {
                break;
            };
            lba = descriptor.lba;
            left = u64::from(descriptor.blocks);
            next += 1;
        }
        let n = left.min(u64::from(self.max_unmap_piece)) as u32;
        // Validated: `lba + left` is at most the capacity, so cannot wrap;
        // checked all the same.
        let after = lba.checked_add(u64::from(n));
        let Some(after) = after.filter(|_| left > 0) else {
            if left > 0 {
                task.error = Some(ScsiError::LbaOutOfRange);
            }
            task.step = Step::Unmap(UnmapStep {
                next: count,
                count,
                lba,
                left: 0,
            });
            return Staged::Nothing;
        };
        let staged = self.stage(slot, IoOp::Unmap, lba, n, false, SgList::EMPTY);
        let (lba, left) = if staged {
            (after, left - u64::from(n))
        } else {
            (lba, left)
        };
        self.tasks[slot as usize].step = Step::Unmap(UnmapStep {
            next,
            count,
            lba,
            left,
        });
        if staged {
            Staged::One
        } else {
            Staged::PortFull
        }
    }

    /// The next request of WRITE SAME: an Unmap or WriteZeroes piece, or a
    /// write of the pattern repeated in the task's scratch chunk (filled
    /// before the first write is staged).
    fn stage_fill(&mut self, slot: u32, fill: FillStep) -> Staged {
        if fill.left == 0 {
            return Staged::Nothing;
        }
        let bs = self.block_size();
        let chunk_blocks = self.chunk_blocks();
        let max_unmap_piece = u64::from(self.max_unmap_piece);
        let (op, n, sgl, how) = match fill.how {
            FillHow::WriteZeroes => (
                IoOp::WriteZeroes,
                fill.left.min(max_unmap_piece) as u32,
                SgList::EMPTY,
                fill.how,
            ),
            FillHow::Unmap => (
                IoOp::Unmap,
                fill.left.min(max_unmap_piece) as u32,
                SgList::EMPTY,
                fill.how,
            ),
            FillHow::Pattern {
                from_buffer,
                filled,
            } => {
                let task = &self.tasks[slot as usize];
                let chunk = task.chunk.as_ref();
                let chunk = chunk.expect("pattern fill holds a scratch chunk");
                if !filled {
                    // The pattern is written before the first write is staged.
                    let memory = self.scratch.bytes_mut(chunk);
                    if from_buffer {
                        // The data buffer holds a block.
                        task.data.read_at(0, &mut memory[..bs]);
                    } else {
                        memory[..bs].fill(0);
                    }
                    let mut have = bs;
                    while have < memory.len() {
                        let n = have.min(memory.len() - have);
                        memory.copy_within(0..n, have);
                        have += n;
                    }
                }
                // Writes only read the chunk, so several may share it.
                let sgl = self.scratch.lend_to_write(chunk);
                (
                    IoOp::Write,
                    fill.left.min(u64::from(chunk_blocks)) as u32,
                    sgl,
                    FillHow::Pattern {
                        from_buffer,
                        filled: true,
                    },
                )
            }
        };
        let fua = fill.fua && op != IoOp::Unmap;
        let staged = self.stage(slot, op, fill.lba, n, fua, sgl);
        if !staged {
            self.end_loan(slot);
        }
        let n = if staged { u64::from(n) } else { 0 };
        self.tasks[slot as usize].step = Step::Fill(FillStep {
            how,
            lba: fill.lba + n,
            left: fill.left - n,
            fua: fill.fua,
        });
        if staged {
            Staged::One
        } else {
            Staged::PortFull
        }
    }
}
