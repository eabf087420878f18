//! Data transfers between a command's staging buffer (the target driver's
//! copy of its data) and handler memory, batched per driver call: data-out
//! into buffers taken from the cache before their EXEC, data-in out of the
//! handler's buffer when its EXEC reply is processed. Checked copies go
//! through `process_vm_readv`/`process_vm_writev` (`crate::scst::copy`);
//! in trusted mode copies to and from pinned buffers are plain memory
//! copies, and a GOOD command's data-in may stay in its pinned buffer until
//! the initiator reaps it (`Cmd::in_remote`).

use super::State;
use crate::scst::copy::Dir;
use dataplane::scsi::sense::key;
use dataplane::scsi::Asc;

/// A copy between a command's staging buffer and handler memory.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingCopy {
    /// The command whose staging buffer is copied.
    pub(super) slot: u32,
    /// The handler buffer's address.
    pub(super) remote: u64,
    /// Bytes to copy, from the start of both.
    pub(super) len: usize,
    /// The buffer came from the SGV cache: the kernel mapped (pinned) it
    /// when the handler first supplied it, and reuses the pinned pages
    /// without looking at the handler's address space again.
    pub(super) pinned: bool,
}

impl State {
    /// Performs `list`; `self.failed` gets the indices (into `list`, in
    /// order) of the copies that faulted.
    fn run_copies(&mut self, dir: Dir, list: &[PendingCopy]) {
        self.copy_list.clear();
        self.copy_index.clear();
        self.failed.clear();
        for (i, p) in list.iter().enumerate() {
            let c = &mut self.cmds[p.slot as usize];
            debug_assert!(p.len <= c.staging.len());
            let staging = &mut c.staging[..p.len];
            if self.trust_pinned && p.pinned {
                let remote = p.remote as usize as *mut u8;
                match dir {
                    // SAFETY: `trust_mapped_buffers`' contract: a pinned
                    // buffer (one the handler supplied earlier, not yet
                    // released by ON_FREE_CMD or ON_CACHED_MEM_FREE) stays
                    // mapped, readable and writable, for at least the
                    // length it was supplied with (≥ `len`, the command's
                    // transfer), and the handler does not touch it while
                    // the kernel owns it; `staging` is this command's own
                    // buffer, so the ranges do not overlap.
                    Dir::FromHandler => unsafe {
                        std::ptr::copy_nonoverlapping(remote, staging.as_mut_ptr(), p.len);
                    },
                    // SAFETY: as above.
                    Dir::ToHandler => unsafe {
                        std::ptr::copy_nonoverlapping(staging.as_ptr(), remote, p.len);
                    },
                }
                continue;
            }
            self.copy_list
                .push((staging.as_mut_ptr() as usize, p.remote, p.len));
            self.copy_index.push(i);
        }
        let failed = &mut self.failed;
        let index = &self.copy_index;
        // SAFETY: each local pointer is the start of a distinct command's
        // staging buffer (one copy per command per batch), valid for `len`
        // bytes (checked when the copy was queued), and nothing touches
        // those buffers until `run` returns.
        unsafe {
            self.batch
                .run(dir, &self.copy_list, |i| failed.push(index[i]));
        }
        self.copy_list.clear();
    }

    /// Data-in copies of EXEC replies (`dev_user_map_buf` + the transfer).
    /// A fault fails the command with ABORTED COMMAND 44/00.
    pub(super) fn flush_in(&mut self) {
        let list = std::mem::take(&mut self.pending_in);
        self.run_copies(Dir::FromHandler, &list);
        for i in 0..self.failed.len() {
            let slot = list[self.failed[i]].slot;
            self.stats.copy_faults += 1;
            self.set_error(
                slot,
                key::ABORTED_COMMAND,
                Asc::INTERNAL_TARGET_FAILURE,
                None,
            );
        }
        self.pending_in = list;
        self.pending_in.clear();
    }

    /// Data-out copies into cached buffers; then EXEC. A fault fails the
    /// command with HARDWARE ERROR 44/00 (like a failed mapping).
    pub(super) fn flush_out(&mut self) {
        let list = std::mem::take(&mut self.pending_out);
        self.run_copies(Dir::ToHandler, &list);
        let mut f = 0;
        for (i, p) in list.iter().enumerate() {
            if f < self.failed.len() && self.failed[f] == i {
                f += 1;
                self.stats.copy_faults += 1;
                self.complete_error(p.slot, key::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE);
            } else {
                self.exec_stage(p.slot);
            }
        }
        self.pending_out = list;
        self.pending_out.clear();
    }

    /// Moves a command's data-in from its pinned handler buffer into
    /// `staging` (for the simulator's own use of it, or before the handler
    /// goes away).
    pub(super) fn materialize_in(&mut self, slot: u32) {
        let c = &mut self.cmds[slot as usize];
        if c.in_remote == 0 {
            return;
        }
        let remote = c.in_remote as usize as *const u8;
        // SAFETY: `in_remote` is only set in trusted mode for a pinned
        // buffer of this command, which is not freed yet (the command
        // holds it until `free_cmd`) and, by `trust_mapped_buffers`'
        // contract, stays mapped for at least `in_len` bytes while the
        // driver exists (the driver's drop materializes first); `staging`
        // holds `exp_len` ≥ `in_len` bytes and is this command's own.
        unsafe {
            std::ptr::copy_nonoverlapping(remote, c.staging.as_mut_ptr(), c.in_len);
        }
        c.in_remote = 0;
    }

    /// Moves every deferred data-in into staging: the handler's memory is
    /// about to go.
    pub(super) fn materialize_all_in(&mut self) {
        for slot in 0..self.cmds.len() as u32 {
            self.materialize_in(slot);
        }
    }
}
