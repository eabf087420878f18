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

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use dataplane::exec::status;
use dataplane::scsi::{ScsiError, SenseFormat};
use dataplane::tcmu::abi::*;
use dataplane::tcmu::{scsi_command_size, Doorbell, RingFault, SharedRegion, TcmuError};

/// Simulator geometry and capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    /// Bytes of command ring after the 128-byte mailbox (a non-zero multiple
    /// of 8). The kernel's default is 8 MiB - 128.
    pub cmdr_size: u32,
    /// Bytes of data area (a multiple of `data_block_size`).
    pub data_area_size: usize,
    /// Data block size (the kernel's `data_pages_per_blk * PAGE_SIZE`; a
    /// non-zero multiple of 8 here, so tests can use tiny blocks).
    pub data_block_size: u32,
    /// Mailbox flags (`TCMU_MAILBOX_FLAG_CAP_*`). The current kernel sets all
    /// four (0xf).
    pub flags: u16,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            cmdr_size: (8 << 20) - CMDR_OFF,
            data_area_size: 64 << 20,
            data_block_size: 4096,
            flags: TCMU_MAILBOX_FLAG_CAP_OOOC
                | TCMU_MAILBOX_FLAG_CAP_READ_LEN
                | TCMU_MAILBOX_FLAG_CAP_TMR
                | TCMU_MAILBOX_FLAG_CAP_KEEP_BUF,
        }
    }
}

/// A command's data buffer.
#[derive(Debug, Clone, Copy)]
pub enum SimData<'a> {
    /// No data.
    None,
    /// Data-out (a write): copied into the data area at submission.
    Out(&'a [u8]),
    /// Data-in (a read) of this many bytes: copied out at completion with
    /// [`SimCompletion::copy_data_in`].
    In(usize),
}

/// Why a command could not be queued. `RingFull`, `DataAreaFull` and
/// `NoCmdId` are flow control: reap completions and try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimSubmitError {
    /// Not enough free ring space (counted from the last reaped position).
    #[error("command ring full")]
    RingFull,
    /// Not enough free data blocks.
    #[error("data area full")]
    DataAreaFull,
    /// Larger than the whole data area, or the entry is larger than half the
    /// ring (the kernel fails these with INVALID CDB FIELD).
    #[error("command too large for this ring or data area")]
    TooLarge,
    /// All 65535 cmd_ids are in use.
    #[error("no free cmd_id")]
    NoCmdId,
    /// The CDB is empty or shorter than its opcode says.
    #[error("CDB shorter than its opcode requires")]
    BadCdb,
    /// An injected entry length is not a non-zero multiple of 8.
    #[error("entry length must be a non-zero multiple of 8")]
    InvalidLength,
    /// The ring is broken (see [`TcmuSim::fault`]).
    #[error("ring broken")]
    Broken,
}

/// Errors of [`TcmuSim::reap`].
pub type SimError = TcmuError;

/// One completed command, as the kernel would report it to the initiator.
#[derive(Debug)]
pub struct SimCompletion<'a> {
    /// The tag given to [`TcmuSim::submit`].
    pub tag: u64,
    /// The command's id.
    pub cmd_id: u16,
    /// SAM status.
    pub status: u8,
    /// The 96-byte sense buffer for CHECK CONDITION, else empty.
    pub sense: &'a [u8],
    /// Bytes of data-in returned to the initiator.
    pub data_in_len: usize,
    region: &'a SharedRegion,
    blocks: &'a [u32],
    data_off: usize,
    block_size: usize,
}

impl SimCompletion<'_> {
    /// Copies the command's data-in bytes (at most `data_in_len`, at most
    /// `dst.len()`) out of the data area, like the kernel's
    /// `gather_data_area`. Returns the number of bytes copied.
    pub fn copy_data_in(&self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.data_in_len);
        let mut done = 0;
        for &block in self.blocks {
            if done == n {
                break;
            }
            let chunk = self.block_size.min(n - done);
            let at = self.data_off + block as usize * self.block_size;
            if self
                .region
                .read_bytes(at, &mut dst[done..done + chunk])
                .is_err()
            {
                break;
            }
            done += chunk;
        }
        done
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    None,
    Out,
    In,
}

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

/// An entry the simulator wrote and has not reaped yet.
#[derive(Debug, Clone, Copy)]
struct Record {
    offset: u32,
    len_op: u32,
}

/// Lowest-first allocator over a bitmap (set bit = in use).
#[derive(Debug)]
struct Bitmap {
    words: Vec<u64>,
    bits: usize,
    /// No word below this one has a clear bit.
    first_free_word: usize,
}

impl Bitmap {
    fn new(bits: usize) -> Self {
        let mut words = vec![0u64; bits.div_ceil(64)];
        // Bits past the end are permanently "in use".
        if !bits.is_multiple_of(64) {
            if let Some(last) = words.last_mut() {
                *last = !0u64 << (bits % 64);
            }
        }
        Self {
            words,
            bits,
            first_free_word: 0,
        }
    }

    fn alloc(&mut self) -> Option<u32> {
        while self.first_free_word < self.words.len() {
            let w = self.words[self.first_free_word];
            if w != u64::MAX {
                let bit = w.trailing_ones() as usize;
                self.words[self.first_free_word] |= 1 << bit;
                let index = self.first_free_word * 64 + bit;
                debug_assert!(index < self.bits);
                return Some(index as u32);
            }
            self.first_free_word += 1;
        }
        None
    }

    fn set(&mut self, index: u32) {
        let i = index as usize;
        self.words[i / 64] |= 1 << (i % 64);
    }

    fn free(&mut self, index: u32) {
        let i = index as usize;
        self.words[i / 64] &= !(1 << (i % 64));
        self.first_free_word = self.first_free_word.min(i / 64);
    }
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
    /// Scratch block list for `submit` (swapped into the command).
    scratch_blocks: Vec<u32>,
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

    #[inline]
    fn advance(&self, off: u32, len: u32) -> u32 {
        (off % self.config.cmdr_size + len) % self.config.cmdr_size
    }

    #[inline]
    fn used(&self) -> u32 {
        let size = self.config.cmdr_size;
        (self.head + size - self.last_cleaned) % size
    }

    /// `is_ring_space_avail`: room for `size` bytes, plus a PAD to the ring
    /// end if the entry does not fit before it.
    fn ring_space_avail(&self, size: u32) -> bool {
        let to_end = self.config.cmdr_size - self.head;
        let needed = if to_end >= size {
            u64::from(size)
        } else {
            u64::from(size) + u64::from(to_end)
        };
        let free = u64::from(self.config.cmdr_size) - u64::from(self.used()) - 1;
        free >= needed
    }

    /// `ring_insert_padding`: returns the position for an entry of `size`.
    fn insert_padding(&mut self, size: u32) -> u32 {
        let to_end = self.config.cmdr_size - self.head;
        if to_end < size {
            let abs = CMDR_OFF as usize + self.head as usize;
            let len_op = tcmu_len_op(to_end, TCMU_OP_PAD);
            // Only the header is written, like the kernel.
            let _ = self.region.write_u32(abs + HDR_LEN_OP, len_op);
            let _ = self.region.write_u16(abs + HDR_CMD_ID, 0);
            let _ = self.region.write_u8(abs + HDR_KFLAGS, 0);
            let _ = self.region.write_u8(abs + HDR_UFLAGS, 0);
            self.records.push_back(Record {
                offset: self.head,
                len_op,
            });
            self.head = self.advance(self.head, to_end);
            self.region.store_cmd_head(self.head);
            self.pads += 1;
            self.smallest_pad = Some(self.smallest_pad.map_or(to_end, |p| p.min(to_end)));
        }
        self.head
    }

    /// Publishes an entry of `len_op` just written at `pos`.
    fn publish_entry(&mut self, pos: u32, len_op: u32) {
        self.records.push_back(Record {
            offset: pos,
            len_op,
        });
        self.head = self.advance(pos, tcmu_hdr_get_len(len_op));
        self.region.store_cmd_head(self.head);
    }

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

    /// Queues one command, like `queue_cmd_ring`, and returns its `cmd_id`.
    /// The device learns of it at the next [`notify`](Self::notify) (or by
    /// polling `cmd_head`).
    pub fn submit(
        &mut self,
        cdb: &[u8],
        data: SimData<'_>,
        tag: u64,
    ) -> Result<u16, SimSubmitError> {
        if self.fault.is_some() {
            return Err(SimSubmitError::Broken);
        }
        let cdb_len = scsi_command_size(cdb)
            .filter(|&n| n <= cdb.len())
            .ok_or(SimSubmitError::BadCdb)?;
        let (dir, data_len, out) = match data {
            SimData::None => (Direction::None, 0, None),
            SimData::Out(bytes) => (Direction::Out, bytes.len(), Some(bytes)),
            SimData::In(n) => (Direction::In, n, None),
        };
        let bs = self.config.data_block_size as usize;
        let nblocks = data_len.div_ceil(bs);
        if nblocks > self.max_blocks as usize {
            return Err(SimSubmitError::TooLarge);
        }
        if nblocks > self.free_blocks as usize {
            return Err(SimSubmitError::DataAreaFull);
        }
        // Data blocks first (tcmu_alloc_data_space), lowest free first.
        self.scratch_blocks.clear();
        let mut iov_cnt = 0usize;
        let mut prev: Option<u32> = None;
        for _ in 0..nblocks {
            let Some(b) = self.blocks.alloc() else {
                self.release_blocks(None);
                return Err(SimSubmitError::DataAreaFull);
            };
            self.free_blocks -= 1;
            if prev.is_none_or(|p| p + 1 != b) {
                iov_cnt += 1;
            }
            prev = Some(b);
            self.scratch_blocks.push(b);
        }
        let base = cmd_base_size(iov_cnt);
        let size = base + round_up_op(cdb_len);
        if size > self.config.cmdr_size as usize / 2 {
            self.release_blocks(None);
            return Err(SimSubmitError::TooLarge);
        }
        let size = size as u32;
        if !self.ring_space_avail(size) {
            self.release_blocks(None);
            return Err(SimSubmitError::RingFull);
        }
        let Some(cmd_id) = self.ids.alloc() else {
            self.release_blocks(None);
            return Err(SimSubmitError::NoCmdId);
        };
        let cmd_id = cmd_id as u16;
        let pos = self.insert_padding(size);
        let abs = CMDR_OFF as usize + pos as usize;

        let _ = self.region.fill(abs, size as usize, 0);
        // Iovecs: merged runs of adjacent blocks; each block adds
        // min(remaining, block size) bytes (new_block_to_iov).
        let mut iov_index = 0usize;
        let mut remaining = data_len;
        let mut run_start: Option<u32> = None;
        let mut run_len = 0usize;
        let mut prev: Option<u32> = None;
        for i in 0..self.scratch_blocks.len() {
            let b = self.scratch_blocks[i];
            let chunk = remaining.min(bs);
            if prev.is_some_and(|p| p + 1 == b) {
                run_len += chunk;
            } else {
                if let Some(start) = run_start {
                    self.write_iovec(abs, iov_index, start, run_len);
                    iov_index += 1;
                }
                run_start = Some(b);
                run_len = chunk;
            }
            if let Some(bytes) = out {
                let from = data_len - remaining;
                let at = self.data_off + b as usize * bs;
                let _ = self.region.write_bytes(at, &bytes[from..from + chunk]);
            }
            remaining -= chunk;
            prev = Some(b);
        }
        if let Some(start) = run_start {
            self.write_iovec(abs, iov_index, start, run_len);
        }
        let _ = self.region.write_u32(abs + REQ_IOV_CNT, iov_cnt as u32);
        let _ = self.region.write_u32(abs + REQ_IOV_BIDI_CNT, 0);
        let cdb_off = abs + base;
        let _ = self.region.write_bytes(cdb_off, &cdb[..cdb_len]);
        let _ = self.region.write_u64(abs + REQ_CDB_OFF, cdb_off as u64);
        let _ = self.region.write_u16(abs + HDR_CMD_ID, cmd_id);
        let len_op = tcmu_len_op(size, TCMU_OP_CMD);
        let _ = self.region.write_u32(abs + HDR_LEN_OP, len_op);

        let cmd = &mut self.cmds[usize::from(cmd_id)];
        std::mem::swap(&mut cmd.blocks, &mut self.scratch_blocks);
        cmd.in_flight = true;
        cmd.kept = false;
        cmd.tag = tag;
        cmd.dir = dir;
        cmd.data_len = data_len;
        cmd.entry = pos;
        self.in_flight += 1;
        self.pending_notify += 1;
        self.publish_entry(pos, len_op);
        Ok(cmd_id)
    }

    fn write_iovec(&self, abs: usize, index: usize, first_block: u32, len: usize) {
        let at = abs + REQ_IOV + index * IOVEC_SIZE;
        let base = self.data_off + first_block as usize * self.config.data_block_size as usize;
        let _ = self.region.write_u64(at + IOVEC_BASE, base as u64);
        let _ = self.region.write_u64(at + IOVEC_LEN, len as u64);
    }

    /// Signals the device once for everything queued since the last call
    /// (`uio_event_notify`, batched as under plugging). Returns true if a
    /// notification was written.
    pub fn notify(&mut self) -> bool {
        if self.pending_notify == 0 {
            return false;
        }
        if nix::unistd::write(&self.notify, &1u64.to_ne_bytes()).is_err() {
            return false; // counter overflow (impossible in practice): retry later
        }
        self.pending_notify = 0;
        self.notifications += 1;
        true
    }

    /// Reads (and clears) the kick eventfd; returns the kicks counted.
    fn take_kicks(&mut self) -> Result<u64, SimError> {
        let mut buf = [0u8; 8];
        match nix::unistd::read(self.kick.as_raw_fd(), &mut buf) {
            Ok(8) => {
                let n = u64::from_ne_bytes(buf);
                self.doorbells += n;
                Ok(n)
            }
            Ok(_) => Ok(0),
            Err(Errno::EAGAIN) => Ok(0),
            Err(e) => Err(TcmuError::Doorbell(e.into())),
        }
    }

    /// If the device rang since the last call, reaps completions like
    /// `tcmu_handle_completions` and hands each to `f`; data blocks are freed
    /// after `f` returns. Returns the number of commands completed (0 if the
    /// device did not ring, even if it moved `cmd_tail`).
    pub fn reap(&mut self, f: impl FnMut(&SimCompletion<'_>)) -> Result<usize, SimError> {
        if let Some(fault) = self.fault {
            return Err(fault.into());
        }
        // Nothing can be reaped while the tail has not moved, so skip the
        // eventfd read (a syscall) then. Kicks accumulate in the eventfd and
        // are counted by the read that follows the next tail move; the device
        // stores the tail before it rings, so a kick is never missed. This
        // keeps the kernel's rule: completions are reaped only after a kick.
        if self.region.load_cmd_tail() == self.last_cleaned {
            return Ok(0);
        }
        if self.take_kicks()? == 0 {
            return Ok(0);
        }
        self.handle_completions(f)
    }

    /// Reaps whether or not the device rang (like the kernel's other callers
    /// of `tcmu_handle_completions`: `block_dev` and the unmap worker).
    pub fn force_reap(&mut self, f: impl FnMut(&SimCompletion<'_>)) -> Result<usize, SimError> {
        if let Some(fault) = self.fault {
            return Err(fault.into());
        }
        self.take_kicks()?;
        self.handle_completions(f)
    }

    fn broken(&mut self, fault: RingFault) -> SimError {
        self.fault = Some(fault);
        fault.into()
    }

    fn handle_completions(
        &mut self,
        mut f: impl FnMut(&SimCompletion<'_>),
    ) -> Result<usize, SimError> {
        let tail = self.region.load_cmd_tail();
        if tail >= self.config.cmdr_size || !tail.is_multiple_of(8) {
            return Err(self.broken(RingFault::TailOutOfRange { tail }));
        }
        // How many recorded entries the tail passed; it must land exactly on
        // a boundary.
        let mut passed = 0usize;
        let mut pos = self.last_cleaned;
        while pos != tail {
            let Some(rec) = self.records.get(passed) else {
                return Err(self.broken(RingFault::TailNotOnBoundary { tail }));
            };
            pos = self.advance(rec.offset, tcmu_hdr_get_len(rec.len_op));
            passed += 1;
        }
        let mut completed = 0;
        for _ in 0..passed {
            let Some(rec) = self.records.front().copied() else {
                break;
            };
            let abs = CMDR_OFF as usize + rec.offset as usize;
            let len_op = self.region.read_u32(abs + HDR_LEN_OP).unwrap_or(0);
            if len_op != rec.len_op {
                return Err(self.broken(RingFault::EntryHeaderChanged { offset: rec.offset }));
            }
            let uflags = self.region.read_u8(abs + HDR_UFLAGS).unwrap_or(0);
            match tcmu_hdr_get_op(len_op) {
                TCMU_OP_PAD | TCMU_OP_TMR => {}
                TCMU_OP_CMD => {
                    self.complete_entry(abs, uflags, &mut f)?;
                    completed += 1;
                }
                _ => {
                    if uflags & TCMU_UFLAG_UNKNOWN_OP == 0 {
                        return Err(
                            self.broken(RingFault::UnknownOpNotFlagged { offset: rec.offset })
                        );
                    }
                }
            }
            self.records.pop_front();
            self.last_cleaned = self.advance(rec.offset, tcmu_hdr_get_len(len_op));
        }
        Ok(completed)
    }

    /// `tcmu_handle_completion` for the CMD entry at `abs`.
    fn complete_entry(
        &mut self,
        abs: usize,
        uflags: u8,
        f: &mut impl FnMut(&SimCompletion<'_>),
    ) -> Result<(), SimError> {
        let cmd_id = self.region.read_u16(abs + HDR_CMD_ID).unwrap_or(0);
        let cmd = &self.cmds[usize::from(cmd_id)];
        if cmd.kept {
            return Err(self.broken(RingFault::KeepBufCompletedTwice { cmd_id }));
        }
        if cmd_id == 0 || !cmd.in_flight {
            return Err(self.broken(RingFault::UnknownCmdId { cmd_id }));
        }
        let (status, sense_len, data_in_len) = if uflags & TCMU_UFLAG_UNKNOWN_OP != 0 {
            // The kernel answers UNKNOWN_OP entries with INVALID COMMAND
            // OPERATION CODE in fixed format.
            let r = ScsiError::InvalidCommandOperationCode.to_response(SenseFormat::Fixed);
            self.sense.copy_from_slice(&r.sense);
            (status::CHECK_CONDITION, TCMU_SENSE_BUFFERSIZE, 0)
        } else {
            let scsi_status = self.region.read_u8(abs + RSP_SCSI_STATUS).unwrap_or(0);
            let read_len = self.region.read_u32(abs + RSP_READ_LEN).unwrap_or(0) as usize;
            // A kernel without CAP_READ_LEN has `__pad3` here and ignores it.
            let read_len_valid = self.config.flags & TCMU_MAILBOX_FLAG_CAP_READ_LEN != 0
                && cmd.dir == Direction::In
                && uflags & TCMU_UFLAG_READ_LEN != 0
                && read_len != 0;
            let mut data_in = if cmd.dir == Direction::In {
                cmd.data_len
            } else {
                0
            };
            if read_len_valid {
                data_in = data_in.min(read_len);
            }
            if scsi_status == status::CHECK_CONDITION {
                let _ = self.region.read_bytes(abs + RSP_SENSE, &mut self.sense);
                if !read_len_valid {
                    data_in = 0; // no gather_data_area
                }
                (scsi_status, TCMU_SENSE_BUFFERSIZE, data_in)
            } else {
                (scsi_status, 0, data_in)
            }
        };
        let keep_buf = uflags & TCMU_UFLAG_KEEP_BUF != 0;
        let cmd = &self.cmds[usize::from(cmd_id)];
        f(&SimCompletion {
            tag: cmd.tag,
            cmd_id,
            status,
            sense: &self.sense[..sense_len],
            data_in_len,
            region: &self.region,
            blocks: &cmd.blocks,
            data_off: self.data_off,
            block_size: self.config.data_block_size as usize,
        });
        self.in_flight -= 1;
        let cmd = &mut self.cmds[usize::from(cmd_id)];
        cmd.in_flight = false;
        if keep_buf {
            cmd.kept = true;
        } else {
            self.release_blocks(Some(cmd_id));
            self.ids.free(u32::from(cmd_id));
        }
        Ok(())
    }

    /// `action/reset_ring` (`tcmu_reset_ring`): completes every command in
    /// flight without looking at the ring — with BUSY for `mode` 1 (the
    /// initiator retries), CHECK CONDITION for `mode` 2 — and hands each to
    /// `f`; frees their data blocks and ids (kept buffers too); then sets
    /// `cmd_head` = `cmd_tail` = 0 and clears the broken state. The handler
    /// must (re)attach afterwards. Returns the number of commands completed.
    pub fn reset_ring(&mut self, mode: u8, mut f: impl FnMut(&SimCompletion<'_>)) -> usize {
        let status = if mode == 1 {
            status::BUSY
        } else {
            status::CHECK_CONDITION
        };
        let mut completed = 0;
        for id in 1..self.cmds.len() {
            let cmd = &self.cmds[id];
            if cmd.in_flight {
                f(&SimCompletion {
                    tag: cmd.tag,
                    cmd_id: id as u16,
                    status,
                    sense: &[],
                    data_in_len: 0,
                    region: &self.region,
                    blocks: &cmd.blocks,
                    data_off: self.data_off,
                    block_size: self.config.data_block_size as usize,
                });
                completed += 1;
            }
            let cmd = &mut self.cmds[id];
            if cmd.in_flight || cmd.kept {
                cmd.in_flight = false;
                cmd.kept = false;
                self.release_blocks(Some(id as u16));
                self.ids.free(id as u32);
            }
        }
        self.in_flight = 0;
        self.records.clear();
        self.head = 0;
        self.last_cleaned = 0;
        self.region.store_cmd_head(0);
        self.region.store_cmd_tail(0);
        self.fault = None;
        completed
    }

    /// `action/free_kept_buf`: releases a command completed with KEEP_BUF.
    /// Returns false if `cmd_id` is not such a command.
    pub fn free_kept_buf(&mut self, cmd_id: u16) -> bool {
        let cmd = &mut self.cmds[usize::from(cmd_id)];
        if !cmd.kept {
            return false;
        }
        cmd.kept = false;
        self.release_blocks(Some(cmd_id));
        self.ids.free(u32::from(cmd_id));
        true
    }

    /// Queues a `TCMU_OP_TMR` entry listing `cmd_ids` (like `queue_tmr_ring`
    /// with `tmr_notification=1`) and notifies the device at once, as the
    /// kernel does. The kernel lists only commands on the ring; the ids are
    /// written as given.
    pub fn inject_tmr(&mut self, tmr_type: u8, cmd_ids: &[u16]) -> Result<(), SimSubmitError> {
        if self.fault.is_some() {
            return Err(SimSubmitError::Broken);
        }
        let size = round_up_op(TMR_ENTRY_SIZE + 2 * cmd_ids.len());
        if size > self.config.cmdr_size as usize {
            return Err(SimSubmitError::TooLarge);
        }
        let size = size as u32;
        if !self.ring_space_avail(size) {
            return Err(SimSubmitError::RingFull);
        }
        let pos = self.insert_padding(size);
        let abs = CMDR_OFF as usize + pos as usize;
        let _ = self.region.fill(abs, size as usize, 0);
        let len_op = tcmu_len_op(size, TCMU_OP_TMR);
        let _ = self.region.write_u32(abs + HDR_LEN_OP, len_op);
        let _ = self.region.write_u8(abs + TMR_TYPE, tmr_type);
        let _ = self
            .region
            .write_u32(abs + TMR_CMD_CNT, cmd_ids.len() as u32);
        for (i, &id) in cmd_ids.iter().enumerate() {
            let _ = self.region.write_u16(abs + TMR_CMD_IDS + 2 * i, id);
        }
        self.publish_entry(pos, len_op);
        self.pending_notify += 1;
        self.notify();
        Ok(())
    }

    /// Queues an entry of `len` bytes with opcode 3 (unknown to this ABI);
    /// the device must pass it with `TCMU_UFLAG_UNKNOWN_OP`. Not notified.
    pub fn inject_unknown_op(&mut self, len: u32) -> Result<(), SimSubmitError> {
        if self.fault.is_some() {
            return Err(SimSubmitError::Broken);
        }
        if len == 0 || !(len as usize).is_multiple_of(TCMU_OP_ALIGN_SIZE) {
            return Err(SimSubmitError::InvalidLength);
        }
        if len > self.config.cmdr_size / 2 {
            return Err(SimSubmitError::TooLarge);
        }
        if !self.ring_space_avail(len) {
            return Err(SimSubmitError::RingFull);
        }
        let pos = self.insert_padding(len);
        let abs = CMDR_OFF as usize + pos as usize;
        let _ = self.region.fill(abs, len as usize, 0);
        let len_op = tcmu_len_op(len, 3);
        let _ = self.region.write_u32(abs + HDR_LEN_OP, len_op);
        self.publish_entry(pos, len_op);
        self.pending_notify += 1;
        Ok(())
    }

    /// Mapping offset of the entry of in-flight command `cmd_id`, for tests
    /// that corrupt it (with [`poke`](Self::poke)) before the device sees it.
    pub fn entry_offset(&self, cmd_id: u16) -> Option<usize> {
        let cmd = &self.cmds[usize::from(cmd_id)];
        cmd.in_flight
            .then_some(CMDR_OFF as usize + cmd.entry as usize)
    }

    /// Writes raw bytes into the mapping (fault injection).
    pub fn poke(&mut self, offset: usize, bytes: &[u8]) -> Result<(), TcmuError> {
        self.region.write_bytes(offset, bytes)
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

#[cfg(test)]
mod tests {
    use super::*;

    const READ10: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0];
    const TUR: [u8; 6] = [0; 6];

    fn small(cmdr_size: u32, data_area_size: usize, block: u32) -> TcmuSim {
        TcmuSim::new(SimConfig {
            cmdr_size,
            data_area_size,
            data_block_size: block,
            ..SimConfig::default()
        })
        .unwrap()
    }

    fn word(sim: &TcmuSim, at: usize) -> u64 {
        sim.region().read_u64(at).unwrap()
    }

    #[test]
    fn mailbox_is_initialised_like_the_kernel() {
        let sim = small(1024, 8192, 4096);
        let r = sim.region();
        assert_eq!(r.len(), 128 + 1024 + 8192);
        assert_eq!(r.mailbox_version(), 2);
        assert_eq!(r.mailbox_flags(), 0xf);
        assert_eq!(r.mailbox_cmdr_off(), 128);
        assert_eq!(r.mailbox_cmdr_size(), 1024);
        assert_eq!((r.load_cmd_head(), r.load_cmd_tail()), (0, 0));
        assert_eq!(sim.data_off(), 1152);
    }

    #[test]
    fn entry_layout_matches_queue_cmd_ring() {
        let mut sim = small(4096, 64 * 512, 512);
        // 1500 bytes in 512-byte blocks: 3 adjacent blocks, one iovec.
        let id = sim.submit(&READ10, SimData::In(1500), 7).unwrap();
        assert_eq!(id, 1);
        let e = 128;
        let r = sim.region().clone();
        // 1 iov: base 112 (max(64,112)) + 16 (10-byte CDB rounded) = 128.
        assert_eq!(r.read_u32(e).unwrap(), tcmu_len_op(128, TCMU_OP_CMD));
        assert_eq!(r.read_u16(e + 4).unwrap(), 1);
        assert_eq!(r.read_u32(e + 8).unwrap(), 1); // iov_cnt
        assert_eq!(r.read_u32(e + 12).unwrap(), 0); // bidi
        assert_eq!(word(&sim, e + 24), (e + 112) as u64); // cdb_off
        assert_eq!(word(&sim, e + 48), sim.data_off() as u64);
        assert_eq!(word(&sim, e + 56), 1500);
        let mut cdb = [0u8; 10];
        r.read_bytes(e + 112, &mut cdb).unwrap();
        assert_eq!(cdb, READ10);
        assert_eq!(r.load_cmd_head(), 128);
        assert_eq!(sim.free_blocks(), 61);
        // Next command: lowest free id, next blocks.
        assert_eq!(sim.submit(&TUR, SimData::None, 8).unwrap(), 2);
        assert_eq!(
            r.read_u32(128 + 128).unwrap(),
            tcmu_len_op(120, TCMU_OP_CMD)
        );
    }

    #[test]
    fn non_adjacent_blocks_make_separate_iovecs() {
        let mut sim = small(4096, 4 * 512, 512);
        let a = sim.submit(&READ10, SimData::In(512), 0).unwrap(); // block 0
        let _b = sim.submit(&READ10, SimData::In(512), 0).unwrap(); // block 1
                                                                    // Complete `a` by hand (tail over its entry), freeing block 0.
        sim.region().store_cmd_tail(128);
        sim.region().write_u8(128 + 8, 0).unwrap();
        assert_eq!(sim.force_reap(|c| assert_eq!(c.cmd_id, a)).unwrap(), 1);
        // 3 blocks: 0, 2, 3 -> iovecs [0] and [2,3].
        let c = sim.submit(&READ10, SimData::In(1536), 0).unwrap();
        assert_eq!(c, a, "lowest free cmd_id is reused");
        let e = sim.entry_offset(c).unwrap();
        assert_eq!(sim.region().read_u32(e + 8).unwrap(), 2);
        let d = sim.data_off() as u64;
        assert_eq!((word(&sim, e + 48), word(&sim, e + 56)), (d, 512));
        assert_eq!((word(&sim, e + 64), word(&sim, e + 72)), (d + 1024, 1024));
    }

    #[test]
    fn pad_fills_the_ring_end_and_space_counts_from_last_cleaned() {
        // 3 entries of 128 bytes leave 8 bytes at the end of a 392-byte ring.
        let mut sim = small(392, 64 * 512, 512);
        for _ in 0..2 {
            sim.submit(&READ10, SimData::In(512), 0).unwrap();
        }
        // used 256, free 392-256-1 = 135 >= 128.
        sim.submit(&READ10, SimData::In(512), 0).unwrap();
        assert_eq!(sim.cmd_head(), 384);
        // Full: 7 bytes free.
        assert_eq!(
            sim.submit(&READ10, SimData::In(512), 0),
            Err(SimSubmitError::RingFull)
        );
        // The device moves the tail but does not ring: nothing is reaped,
        // so the ring is still full.
        sim.region().store_cmd_tail(256);
        assert_eq!(sim.reap(|_| {}).unwrap(), 0);
        assert_eq!(
            sim.submit(&READ10, SimData::In(512), 0),
            Err(SimSubmitError::RingFull)
        );
        assert_eq!(sim.force_reap(|_| {}).unwrap(), 2);
        // Now: 8-byte PAD at 384, entry at 0.
        let id = sim.submit(&READ10, SimData::In(512), 0).unwrap();
        assert_eq!(sim.entry_offset(id), Some(128));
        assert_eq!(
            sim.region().read_u32(128 + 384).unwrap(),
            tcmu_len_op(8, TCMU_OP_PAD)
        );
        assert_eq!(sim.smallest_pad(), Some(8));
        assert_eq!(sim.cmd_head(), 128);
    }

    #[test]
    fn size_limits_are_enforced() {
        let mut sim = small(256, 4 * 512, 512);
        assert_eq!(
            sim.submit(&READ10, SimData::In(5 * 512), 0),
            Err(SimSubmitError::TooLarge)
        );
        // 120-byte entry fits half of 256; 4 separate iovecs would not.
        assert!(sim.submit(&TUR, SimData::None, 0).is_ok());
        let long = [0x7F, 0, 0, 0, 0, 0, 0, 24, 0, 0];
        assert_eq!(
            sim.submit(&long, SimData::None, 0),
            Err(SimSubmitError::BadCdb)
        );
        assert_eq!(
            sim.submit(&[], SimData::None, 0),
            Err(SimSubmitError::BadCdb)
        );
        assert_eq!(sim.free_blocks(), 4);
        let mut sim = small(4096, 2 * 512, 512);
        sim.submit(&READ10, SimData::In(1024), 0).unwrap();
        assert_eq!(
            sim.submit(&READ10, SimData::In(1), 0),
            Err(SimSubmitError::DataAreaFull)
        );
    }

    #[test]
    fn unknown_cmd_id_in_a_completion_breaks_the_ring() {
        let mut sim = small(1024, 4 * 512, 512);
        sim.submit(&TUR, SimData::None, 0).unwrap();
        sim.poke(128 + 4, &77u16.to_ne_bytes()).unwrap();
        sim.region().store_cmd_tail(120);
        let err = sim.force_reap(|_| {}).unwrap_err();
        assert!(matches!(
            err,
            TcmuError::RingBroken(RingFault::UnknownCmdId { cmd_id: 77 })
        ));
        assert!(sim.is_broken());
        assert_eq!(
            sim.submit(&TUR, SimData::None, 0),
            Err(SimSubmitError::Broken)
        );
    }

    #[test]
    fn tail_between_entries_breaks_the_ring() {
        let mut sim = small(1024, 4 * 512, 512);
        sim.submit(&TUR, SimData::None, 0).unwrap();
        sim.region().store_cmd_tail(64);
        assert!(matches!(
            sim.force_reap(|_| {}),
            Err(TcmuError::RingBroken(RingFault::TailNotOnBoundary {
                tail: 64
            }))
        ));
    }

    #[test]
    fn keep_buf_keeps_blocks_until_freed_and_second_completion_breaks() {
        let mut sim = small(1024, 4 * 512, 512);
        let id = sim.submit(&READ10, SimData::In(512), 0).unwrap();
        let e = sim.entry_offset(id).unwrap();
        sim.poke(e + 7, &[TCMU_UFLAG_KEEP_BUF]).unwrap();
        sim.poke(e + 8, &[0]).unwrap();
        sim.region().store_cmd_tail(128);
        assert_eq!(sim.force_reap(|_| {}).unwrap(), 1);
        assert_eq!((sim.in_flight(), sim.free_blocks()), (0, 3));
        assert!(sim.free_kept_buf(id));
        assert!(!sim.free_kept_buf(id));
        assert_eq!(sim.free_blocks(), 4);
    }

    #[test]
    fn read_len_limits_data_in_and_returns_data_with_check_condition() {
        let mut sim = small(1024, 8 * 512, 512);
        let id = sim.submit(&READ10, SimData::In(1024), 0).unwrap();
        let e = sim.entry_offset(id).unwrap();
        sim.poke(sim.data_off(), &[0xAB; 1024]).unwrap();
        sim.poke(e + 7, &[TCMU_UFLAG_READ_LEN]).unwrap();
        let mut rsp = [0u8; 8];
        rsp[0] = status::CHECK_CONDITION;
        rsp[4..8].copy_from_slice(&100u32.to_ne_bytes());
        sim.poke(e + 8, &rsp).unwrap();
        sim.poke(e + 16, &[0x70, 0, 0x03]).unwrap();
        sim.region().store_cmd_tail(128);
        let mut seen = None;
        sim.force_reap(|c| {
            let mut buf = [0u8; 2048];
            let n = c.copy_data_in(&mut buf);
            seen = Some((
                c.status,
                c.sense.len(),
                c.sense[2],
                c.data_in_len,
                n,
                buf[99],
                buf[100],
            ));
        })
        .unwrap();
        assert_eq!(seen, Some((2, 96, 3, 100, 100, 0xAB, 0)));
    }
}
