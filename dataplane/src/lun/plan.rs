//! Starting a command: decode the CDB, check the data buffer against it,
//! answer an emulated command at once, or plan a media command as the steps
//! of its job.

use bdev::IoOp;

use super::step::{Compare, FillHow, FillStep, FlushStep, Step, UnmapStep};
use super::Lun;
use crate::scsi::{self, cdb, unmap, ByteCheck, Command, ScsiError};

impl Lun {
    /// Finishes `slot` at once with `error`.
    pub(super) fn fail_now(&mut self, slot: u32, error: ScsiError) {
        let task = &mut self.tasks[slot as usize];
        task.error = Some(error);
        self.finish(slot);
    }

    /// Starts the command `cdb_bytes` in the active task `slot`, whose data
    /// buffer is set: answers it, fails it, or plans it and hands it to the
    /// scheduler.
    pub(super) fn start(&mut self, slot: u32, cdb_bytes: &[u8]) {
        let command = match cdb::decode(cdb_bytes, &self.unit) {
            Ok(command) => command,
            Err(error) => return self.fail_now(slot, error),
        };
        let buf_len = self.tasks[slot as usize].data.len() as u64;
        if let Err(error) =
            cdb::check_data_out(cdb_bytes[0], &command, self.unit.block_size, buf_len)
        {
            return self.fail_now(slot, error);
        }
        if command.is_emulated() {
            return self.emulate(slot, &command);
        }
        self.plan(slot, command);
        self.schedule(slot);
    }

    /// Answers an emulated command from the unit's description and mode
    /// state; MODE SELECT reads its parameter list from the data buffer.
    fn emulate(&mut self, slot: u32, command: &Command) {
        let task = &self.tasks[slot as usize];
        let param_len = match *command {
            Command::ModeSelect { param_len, .. } => param_len as usize,
            _ => 0,
        };
        // `param_len <= buf_len` was checked and fits `param_buf` (16 bits).
        let copied = task.data.read_at(0, &mut self.param_buf[..param_len]);
        debug_assert_eq!(copied, param_len);
        match scsi::emulate(
            command,
            &self.unit,
            &mut self.mode,
            &self.param_buf[..param_len],
            &mut self.response_buf,
        ) {
            Ok(len) => {
                let task = &mut self.tasks[slot as usize];
                let written = task.data.write_at(0, &self.response_buf[..len]);
                task.data_in_len = written as u32;
                self.finish(slot);
            }
            Err(error) => self.fail_now(slot, error),
        }
    }

    /// Sets the task's steps for media command `command`; leaves the step
    /// Idle when there is nothing to do, or sets an error.
    fn plan(&mut self, slot: u32, command: Command) {
        let bs = self.block_size();
        let write_through = self.unit.volatile_cache && !self.mode.current.write_cache;
        let unit_caps = (self.unit.unmap, self.unit.unmap_reads_zeroes);
        let write_zeroes = self.write_zeroes;
        let task = &mut self.tasks[slot as usize];
        task.step = Step::Idle;
        task.next = Step::Idle;
        match command {
            Command::Read { lba, blocks, .. } => {
                // A short buffer reads the whole blocks that fit.
                let fit = (task.data.len() / bs).min(blocks as usize) as u32;
                if fit > 0 {
                    task.data_in_len = (fit as usize * bs) as u32;
                    task.step = Step::transfer(IoOp::Read, lba, fit, false, 0);
                }
            }
            Command::Write {
                lba, blocks, fua, ..
            } if blocks > 0 => {
                task.step = Step::transfer(IoOp::Write, lba, blocks, fua || write_through, 0);
            }
            Command::WriteAndVerify {
                lba,
                blocks,
                byte_check,
                ..
            } if blocks > 0 => {
                task.step = Step::transfer(IoOp::Write, lba, blocks, true, 0);
                let compare = if byte_check {
                    Compare::Bytes { buf_offset: 0 }
                } else {
                    Compare::Nothing
                };
                task.next = Step::check(lba, blocks, compare);
            }
            Command::Verify {
                lba,
                blocks,
                byte_check,
                ..
            } if blocks > 0 => {
                let compare = match byte_check {
                    ByteCheck::None => Compare::Nothing,
                    ByteCheck::Bytes => Compare::Bytes { buf_offset: 0 },
                    ByteCheck::SameBlock => Compare::SameBlock,
                };
                task.step = Step::check(lba, blocks, compare);
            }
            Command::CompareAndWrite {
                lba, blocks, fua, ..
            } if blocks > 0 => {
                task.step = Step::check(lba, blocks, Compare::Bytes { buf_offset: 0 });
                task.next = Step::transfer(
                    IoOp::Write,
                    lba,
                    blocks,
                    fua || write_through,
                    blocks as usize * bs,
                );
                task.exclusive = true;
            }
            // Without a volatile cache there is nothing to flush.
            Command::SynchronizeCache { lba, blocks } if self.unit.volatile_cache => {
                // 0 blocks = to the end: ask for the whole device.
                let (lba, blocks) = if blocks == 0 { (0, 0) } else { (lba, blocks) };
                task.step = Step::Flush(FlushStep {
                    lba,
                    blocks,
                    staged: false,
                });
            }
            Command::WriteSame {
                lba,
                blocks,
                unmap,
                ndob,
            } => {
                // Without NDOB the data buffer holds the block (checked
                // against `data_out_len`).
                let zero = ndob || task.data.is_zero(0, bs);
                let (can_unmap, unmap_zeroes) = unit_caps;
                let how = if zero && unmap && can_unmap && unmap_zeroes {
                    FillHow::Unmap
                } else if zero && write_zeroes {
                    FillHow::WriteZeroes
                } else {
                    FillHow::Pattern {
                        from_buffer: !ndob,
                        filled: false,
                    }
                };
                task.step = Step::Fill(FillStep {
                    how,
                    lba,
                    left: u64::from(blocks),
                    fua: write_through,
                });
            }
            Command::Unmap { param_len } if param_len > 0 => {
                let param_len = param_len as usize;
                // `param_len <= buf_len` was checked. The list is validated
                // and its descriptors kept from this one private copy.
                task.data.read_at(0, &mut self.param_buf[..param_len]);
                let list = &self.param_buf[..param_len];
                match unmap::validate(list, &self.unit) {
                    Ok(count) => {
                        let most = self.unit.max_unmap_descriptors as usize;
                        if task.unmap.capacity() < most {
                            task.unmap.reserve_exact(most);
                        }
                        task.unmap.clear();
                        let ranges = unmap::descriptors(list, count).filter(|d| d.blocks > 0);
                        task.unmap.extend(ranges);
                        if !task.unmap.is_empty() {
                            task.step = Step::Unmap(UnmapStep {
                                next: 0,
                                count: task.unmap.len() as u32,
                                lba: 0,
                                left: 0,
                            });
                        }
                    }
                    Err(error) => task.error = Some(error),
                }
            }
            _ => {}
        }
    }
}
