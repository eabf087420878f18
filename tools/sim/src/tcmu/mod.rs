//! A simulator of the kernel side of TCMU (`drivers/target/target_core_user.c`),
//! which is also the initiator for tests and `dataplane bench`.
//!
//! It lays out a shared region exactly like the kernel: the 128-byte mailbox
//! (version 2, `flags`, `cmdr_off` 128, `cmdr_size`), the command ring, and
//! the data area at `128 + cmdr_size` cut into blocks. Two eventfds stand in
//! for UIO: the simulator writes "notify" (the kernel's `uio_event_notify`)
//! and reads "kick" (the device's 4-byte `write`, which runs
//! `tcmu_irqcontrol`).
//!
//! Faithful to the kernel:
//! - [`TcmuSim::submit`] follows `queue_cmd_ring`: data blocks first (lowest
//!   free block, adjacent blocks merged into one iovec, each block
//!   contributing `min(remaining, block_size)` bytes), entry size
//!   `max(offsetof(req.iov[iov_cnt]), 112) + round_up(cdb_len, 8)`, entries
//!   larger than `cmdr_size / 2` refused, free space `size - used - 1`
//!   measured from the last *reaped* position, a PAD to the ring end when
//!   the entry does not fit before it, the lowest free `cmd_id` in
//!   1..=0xFFFF, data-out copied into the data area, the CDB at
//!   `128 + head + base_size`, and a release store of `cmd_head` (also after
//!   the PAD).
//! - [`TcmuSim::reap`] follows `tcmu_handle_completions`, and only runs when
//!   the device rang: moving `cmd_tail` without a doorbell completes nothing.
//!   PAD and TMR entries are passed; a CMD entry is looked up by the
//!   `cmd_id` written in it (unknown id: the ring is broken); `UNKNOWN_OP`
//!   gives CHECK CONDITION; `READ_LEN` with a non-zero `read_len` limits the
//!   data-in of data-in commands (and makes CHECK CONDITION return data);
//!   CHECK CONDITION carries the 96-byte sense; `KEEP_BUF` keeps the id and
//!   the blocks until [`TcmuSim::free_kept_buf`].
//!
//! Not modelled: the qfull queue and its timeouts (a full ring or data area
//! is reported to the caller as [`SimSubmitError::RingFull`] /
//! [`SimSubmitError::DataAreaFull`]; the initiator retries after reaping),
//! command timeouts, BIDI commands, lazy allocation of data pages (the sim's
//! memory is all there; the real kernel raises SIGBUS on pages it has not
//! allocated), `dbi_thresh`, the global page limit and the unmap worker.
//!
//! Stricter than the kernel (each a "broken" ring here, where the kernel
//! would misbehave more quietly): `cmd_tail` must land on an entry boundary
//! between the last reaped position and the head; an entry's `len_op` must
//! not be changed by the device; an entry of unknown opcode must carry
//! `UNKNOWN_OP` when passed (the kernel never writes such entries; only
//! [`TcmuSim::inject_unknown_op`] does).
//!
//! The simulator is single-threaded and owned by the initiator; the device
//! may run on another thread and shares only the mapping and the two fds.
//!
//! # Where things are
//! - `config.rs`: [`SimConfig`]; `error.rs`: [`SimSubmitError`] and
//!   [`SimError`]; `completion.rs`: [`SimCompletion`].
//! - `ring.rs`: the command ring's geometry (free space, PAD entries,
//!   publishing `cmd_head`); `bitmap.rs`: the lowest-first allocator of
//!   data blocks and `cmd_id`s.
//! - `submit.rs`: queueing commands ([`SimData`], `queue_cmd_ring`) and
//!   notifying the device; `complete.rs`: the doorbell and
//!   `tcmu_handle_completions`.
//! - `action.rs`: the configfs actions `reset_ring` and `free_kept_buf`;
//!   `inject.rs`: TMR and unknown-opcode entries and raw writes into the
//!   mapping, for tests of the device.

mod action;
mod bitmap;
mod complete;
mod completion;
mod config;
mod error;
mod inject;
mod ring;
mod submit;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use nix::sys::eventfd::{EfdFlags, EventFd};

use self::bitmap::Bitmap;
use self::ring::Record;
use dataplane::tcmu::abi::*;
use dataplane::tcmu::{Doorbell, RingFault, SharedRegion, TcmuError};

pub use self::completion::SimCompletion;
pub use self::config::SimConfig;
pub use self::error::{SimError, SimSubmitError};
pub use self::submit::SimData;

/// A command's data direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    None,
    Out,
    In,
}

/// A command slot, indexed by `cmd_id`.
#[derive(Debug)]
struct SimCmd {
    in_flight: bool,
    /// Completed with KEEP_BUF: id and blocks kept.
    kept: bool,
    tag: u64,
    dir: Direction,
    data_len: usize,
    /// Ring position of the command's own entry.
    entry: u32,
    /// Data blocks in data order. Capacity is kept across reuse.
    blocks: Vec<u32>,
}

/// The kernel side of one TCMU device, plus the initiator. See the module
/// docs.
#[derive(Debug)]
pub struct TcmuSim {
    config: SimConfig,
    region: SharedRegion,
    /// Read by the simulator; the device writes it.
    kick: OwnedFd,
    /// Written by the simulator; the device waits on it.
    notify: OwnedFd,
    data_off: usize,
    max_blocks: u32,
    free_blocks: u32,
    blocks: Bitmap,
    ids: Bitmap,
    cmds: Vec<SimCmd>,
    /// Scratch block list for `submit` (swapped into the command: lists
    /// circulate between command ids).
    scratch_blocks: Vec<u32>,
    /// What a block list grows to at once when it is too short (the data
    /// area's blocks, at most 256).
    block_list_cap: usize,
    head: u32,
    last_cleaned: u32,
    records: VecDeque<Record>,
    in_flight: usize,
    pending_notify: usize,
    notifications: u64,
    doorbells: u64,
    pads: u64,
    smallest_pad: Option<u32>,
    fault: Option<RingFault>,
    sense: [u8; TCMU_SENSE_BUFFERSIZE],
}

impl TcmuSim {
    /// Creates the shared region (mailbox initialised, `cmd_head` =
    /// `cmd_tail` = 0) and the two eventfds.
    pub fn new(config: SimConfig) -> Result<Self, TcmuError> {
        if config.cmdr_size == 0 || !(config.cmdr_size as usize).is_multiple_of(TCMU_OP_ALIGN_SIZE)
        {
            return Err(TcmuError::InvalidConfig(
                "cmdr_size must be a non-zero multiple of 8",
            ));
        }
        let bs = config.data_block_size as usize;
        if bs == 0 || !bs.is_multiple_of(8) {
            return Err(TcmuError::InvalidConfig(
                "data_block_size must be a non-zero multiple of 8",
            ));
        }
        if !config.data_area_size.is_multiple_of(bs) {
            return Err(TcmuError::InvalidConfig(
                "data_area_size must be a multiple of data_block_size",
            ));
        }
        let max_blocks = u32::try_from(config.data_area_size / bs)
            .map_err(|_| TcmuError::InvalidConfig("too many data blocks"))?;
        let data_off = CMDR_OFF as usize + config.cmdr_size as usize;
        let len = data_off
            .checked_add(config.data_area_size)
            .ok_or(TcmuError::InvalidConfig("region too large"))?;
        let region = SharedRegion::anonymous(len)?;
        region.write_u16(MB_VERSION, TCMU_MAILBOX_VERSION)?;
        region.write_u16(MB_FLAGS, config.flags)?;
        region.write_u32(MB_CMDR_OFF, CMDR_OFF)?;
        region.write_u32(MB_CMDR_SIZE, config.cmdr_size)?;
        region.store_cmd_tail(0);
        region.store_cmd_head(0);

        let flags = EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC;
        let new_eventfd = || {
            EventFd::from_value_and_flags(0, flags)
                .map(OwnedFd::from)
                .map_err(|e| TcmuError::Doorbell(e.into()))
        };
        let kick = new_eventfd()?;
        let notify = new_eventfd()?;

        let mut ids = Bitmap::new(1 << 16);
        ids.set(0); // cmd_id 0 is never allocated
        let cmds = (0..1usize << 16)
            .map(|_| SimCmd {
                in_flight: false,
                kept: false,
                tag: 0,
                dir: Direction::None,
                data_len: 0,
                entry: 0,
                blocks: Vec::new(),
            })
            .collect();
        let records_cap = (config.cmdr_size as usize / 64).clamp(64, 1 << 17);
        Ok(Self {
            config,
            region,
            kick,
            notify,
            data_off,
            max_blocks,
            free_blocks: max_blocks,
            blocks: Bitmap::new(max_blocks as usize),
            ids,
            cmds,
            scratch_blocks: Vec::new(),
            block_list_cap: (max_blocks as usize).min(256),
            head: 0,
            last_cleaned: 0,
            records: VecDeque::with_capacity(records_cap),
            in_flight: 0,
            pending_notify: 0,
            notifications: 0,
            doorbells: 0,
            pads: 0,
            smallest_pad: None,
            fault: None,
            sense: [0; TCMU_SENSE_BUFFERSIZE],
        })
    }

    /// What a device attaches to: a clone of the region and a doorbell on
    /// duplicates of the two eventfds.
    pub fn device_endpoint(&self) -> Result<(SharedRegion, Doorbell), TcmuError> {
        let kick = self.kick.try_clone().map_err(TcmuError::Doorbell)?;
        let notify = self.notify.try_clone().map_err(TcmuError::Doorbell)?;
        Ok((self.region.clone(), Doorbell::event_fds(kick, notify)))
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The shared region (for tests that inspect or corrupt it).
    pub fn region(&self) -> &SharedRegion {
        &self.region
    }

    /// Offset of the data area in the mapping.
    pub fn data_off(&self) -> usize {
        self.data_off
    }

    /// Frees the data blocks of command `blocks_of`, or of `submit`'s
    /// scratch list (`None`).
    fn release_blocks(&mut self, blocks_of: Option<u16>) {
        let list = match blocks_of {
            Some(id) => &mut self.cmds[usize::from(id)].blocks,
            None => &mut self.scratch_blocks,
        };
        for &b in list.iter() {
            self.blocks.free(b);
        }
        self.free_blocks += list.len() as u32;
        list.clear();
    }

    /// The kick eventfd, readable once the device rang: an initiator with
    /// nothing to do may wait on it (`poll`) instead of spinning. Only
    /// [`TcmuSim::reap`] reads it.
    pub fn doorbell_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.kick)
    }

    /// Doorbells (kicks) observed so far.
    pub fn doorbells(&self) -> u64 {
        self.doorbells
    }

    /// Notifications written so far.
    pub fn notifications(&self) -> u64 {
        self.notifications
    }

    /// Commands queued and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// True once the kernel side considers the ring broken.
    pub fn is_broken(&self) -> bool {
        self.fault.is_some()
    }

    /// Why the ring is broken.
    pub fn fault(&self) -> Option<RingFault> {
        self.fault
    }

    /// The simulator's `cmd_head`.
    pub fn cmd_head(&self) -> u32 {
        self.head
    }

    /// The last reaped ring position (`cmdr_last_cleaned`).
    pub fn last_cleaned(&self) -> u32 {
        self.last_cleaned
    }

    /// Free data blocks.
    pub fn free_blocks(&self) -> u32 {
        self.free_blocks
    }

    /// PAD entries inserted so far.
    pub fn pads_inserted(&self) -> u64 {
        self.pads
    }

    /// The shortest PAD inserted so far.
    pub fn smallest_pad(&self) -> Option<u32> {
        self.smallest_pad
    }
}
