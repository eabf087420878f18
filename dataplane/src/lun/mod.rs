//! The SCSI logical unit: executes commands for one frontend device against a
//! bdev, through a [`BdevPort`].
//!
//! [`Lun`] implements [`CommandExecutor`]. Emulated commands (INQUIRY, MODE
//! SENSE, ...) are answered inside `submit`; media commands become
//! [`IoRequest`]s staged on the port. Every response is delivered by `poll`,
//! in the order the commands finished.
//!
//! # Tasks
//! A task slot holds a copy of the CDB and of the data buffer's iovec list,
//! the command's job (a sequence of at most two steps, e.g. "read and
//! compare, then write" for COMPARE AND WRITE), the number of its requests
//! outstanding in the bdev and its first error. Request tags carry the slot
//! in bits 0-31 and a per-slot generation in bits 32-47 (within
//! [`PORT_TAG_MASK`]).
//!
//! # Scheduling
//! - Tasks that want to stage requests wait in one FIFO (`ready`). Only its
//!   head stages; when the port is full the head waits for room, and the
//!   tasks behind it wait too (FIFO fairness: a large command is not
//!   overtaken forever by small ones).
//! - Commands that need scratch memory (VERIFY, WRITE AND VERIFY, COMPARE
//!   AND WRITE, WRITE SAME with a pattern) first take a scratch chunk, in
//!   FIFO order, and hold it until they finish; a command larger than a
//!   chunk works through it in pieces. A task holding a chunk only ever waits
//!   for port room, which completions always free, so there is no deadlock.
//! - COMPARE AND WRITE runs alone: at the head of the queue it waits until
//!   no request of this unit is outstanding, then runs its read, compare and
//!   write while no other task stages anything. So no other command of this
//!   unit can observe or change the blocks between the compare and the write.
//!   (Other units sharing the bdev are not held off.)
//!
//! # Decisions where SBC/SPC leave a choice
//! - SYNCHRONIZE CACHE: IMMED is ignored; status is returned after the flush
//!   completed, so a flush error is reported and "GOOD" always means durable.
//!   Without a volatile cache it completes at once.
//! - READ with a data buffer shorter than the transfer: the whole blocks that
//!   fit are read and `data_in_len` says how many bytes (the kernel reports
//!   the residual). A buffer smaller than one block reads nothing and
//!   completes GOOD with `data_in_len` 0.
//! - Commands with data-out (WRITE, WRITE AND VERIFY, VERIFY with BYTCHK,
//!   COMPARE AND WRITE, WRITE SAME without NDOB, UNMAP, MODE SELECT): a
//!   buffer shorter than the CDB requires fails with INVALID FIELD IN CDB on
//!   the transfer length (no pointer for WRITE SAME) before anything is
//!   written; a longer buffer is used from its start.
//! - VERIFY and WRITE AND VERIFY with BYTCHK 00b really read the range back
//!   (medium verification), through scratch memory. The write of WRITE AND
//!   VERIFY is FUA, so the verification reads the medium.
//! - MISCOMPARE INFORMATION: the offset of the first differing byte from the
//!   start of the compared data (the data-out buffer for BYTCHK 01b, the
//!   verify half for COMPARE AND WRITE, the verified range for BYTCHK 11b).
//! - Writes are FUA when the CDB says so or when WCE is 0 on a device with a
//!   volatile cache. FUA on reads is accepted and needs nothing.
//! - WRITE SAME: NDOB or an all-zero block with UNMAP=1 on a device that
//!   unmaps to zeroes → Unmap; otherwise an all-zero block on a device with
//!   write-zeroes → WriteZeroes; otherwise the block is repeated in a scratch
//!   chunk and written in pieces.
//! - `abort`: see [`CommandExecutor::abort`]; a task between two steps (no
//!   request outstanding) completes with TASK ABORTED at once.
//! - A slot out of range or busy at `submit` is answered with BUSY from the
//!   next `poll` (at most `max_tasks` such answers are queued; more are
//!   dropped).

use std::collections::VecDeque;
use std::fmt;

use bdev::{Bdev, Capabilities, Geometry, IoCompletion, IoOp, IoRequest, IoVec, SgList};

use crate::exec::{status, CommandExecutor, Response};
use crate::port::{BdevPort, PORT_TAG_MASK};
use crate::scsi::unit::{ascii_field, MAX_SERIAL_LEN};
use crate::scsi::{
    self, cdb, unmap, ByteCheck, Command, ModeState, ModeValues, ScsiError, SenseFormat, UnitInfo,
    RESPONSE_BUFFER_LEN,
};

/// Errors of the logical unit's control path.
#[derive(Debug, thiserror::Error)]
pub enum LunError {
    /// The configuration is inconsistent; the message names the field.
    #[error("invalid LUN configuration: {0}")]
    InvalidConfig(String),
}

/// Most task slots a unit may have.
pub const MAX_TASKS: u32 = 1 << 20;

/// Configuration of a logical unit. Build it with [`LunConfig::new`] or
/// [`LunConfig::for_bdev`] (which set the defaults documented on each field)
/// and change what you need; [`Lun::new`] validates it.
///
/// The unit's block size is the bdev's (LBAs are not translated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunConfig {
    /// T10 VENDOR IDENTIFICATION: printable ASCII, 1..=8 bytes. Default
    /// `"DATAPLN"`.
    pub vendor: String,
    /// PRODUCT IDENTIFICATION: printable ASCII, 1..=16 bytes. Default
    /// `"DATAPLANE DISK"`.
    pub product: String,
    /// PRODUCT REVISION LEVEL: printable ASCII, 1..=4 bytes. Default `"0001"`.
    pub revision: String,
    /// Unit serial number (VPD 80h): printable ASCII without spaces, at most
    /// 128 bytes. Default empty, meaning the 16 hex digits of `lu_id`.
    pub serial: String,
    /// 64-bit logical unit identifier, the extension of the NAA 6
    /// designator (VPD 83h). Must be unique among your units. Default 1.
    pub lu_id: u64,
    /// 24-bit IEEE company identifier of the NAA designator. Default
    /// 0x001405 (the Linux-IO OUI that LIO itself uses); set your own.
    pub ieee_company_id: u32,
    /// The bdev's geometry.
    pub bdev_geometry: Geometry,
    /// The bdev's capabilities (advertised as they are).
    pub capabilities: Capabilities,
    /// Blocks exposed, 1..=the bdev's. Default: all of the bdev.
    pub num_blocks: u64,
    /// Sense format at start (D_SENSE default). Default fixed.
    pub sense_format: SenseFormat,
    /// WCE at start; only allowed when the bdev has a volatile cache.
    /// Default: the bdev's `volatile_cache`.
    pub write_cache: bool,
    /// Writes fail with DATA PROTECT. Default false.
    pub read_only: bool,
    /// MAXIMUM TRANSFER LENGTH in bytes (a multiple of the block size, at
    /// most the bdev's limit). Larger transfers fail with INVALID FIELD IN
    /// CDB. Default 1 MiB or the bdev's limit if smaller.
    pub max_transfer_bytes: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT, 1..=4095. Default 64.
    pub max_unmap_descriptors: u32,
    /// MAXIMUM UNMAP LBA COUNT (total per UNMAP), at least 1. Default 2^22.
    pub max_unmap_lba_count: u32,
    /// MAXIMUM WRITE SAME LENGTH in blocks, at least 1. Default 2^22.
    pub max_write_same_blocks: u32,
    /// MAXIMUM COMPARE AND WRITE LENGTH in blocks, 1..=255, and at most the
    /// maximum transfer length. Default 1.
    pub max_compare_write_blocks: u8,
    /// Task slots, 1..=[`MAX_TASKS`]. Default 256.
    pub max_tasks: u32,
    /// Scratch memory for multi-step commands, in bytes; at least one chunk.
    /// Default 4 MiB.
    pub scratch_bytes: usize,
    /// Size of one scratch chunk (a multiple of the block size, at most the
    /// bdev's transfer limit): the piece size of VERIFY and of WRITE SAME
    /// with a pattern. Default 256 KiB, or less if the bdev's limit is lower.
    pub scratch_chunk_bytes: usize,
}

impl LunConfig {
    /// The default configuration for a bdev with `geometry` and
    /// `capabilities`.
    pub fn new(geometry: Geometry, capabilities: Capabilities) -> Self {
        let block = u64::from(geometry.block_size.max(1));
        let bdev_limit = match capabilities.max_transfer_blocks {
            0 => u64::MAX,
            blocks => u64::from(blocks) * block,
        };
        let round = |bytes: u64| (bytes / block).max(1) * block;
        let max_transfer_bytes =
            round((1u64 << 20).min(bdev_limit)).min(u64::from(u32::MAX) / block * block) as u32;
        let scratch_chunk_bytes = round((256u64 << 10).min(bdev_limit)) as usize;
        Self {
            vendor: "DATAPLN".into(),
            product: "DATAPLANE DISK".into(),
            revision: "0001".into(),
            serial: String::new(),
            lu_id: 1,
            ieee_company_id: 0x001405,
            bdev_geometry: geometry,
            capabilities,
            num_blocks: geometry.num_blocks,
            sense_format: SenseFormat::Fixed,
            write_cache: capabilities.volatile_cache,
            read_only: false,
            max_transfer_bytes,
            max_unmap_descriptors: 64,
            max_unmap_lba_count: 1 << 22,
            max_write_same_blocks: 1 << 22,
            max_compare_write_blocks: 1,
            max_tasks: 256,
            scratch_bytes: (4usize << 20).max(scratch_chunk_bytes),
            scratch_chunk_bytes,
        }
    }

    /// The default configuration for `bdev`.
    pub fn for_bdev(bdev: &dyn Bdev) -> Self {
        Self::new(bdev.geometry(), bdev.capabilities())
    }

    /// Checks the configuration and derives the unit description.
    pub fn validate(&self) -> Result<UnitInfo, LunError> {
        let bad = |msg: String| Err(LunError::InvalidConfig(msg));
        let ascii = |name: &str, value: &str, max: usize| -> Result<(), LunError> {
            if value.is_empty()
                || value.len() > max
                || !value.bytes().all(|b| (0x20..0x7F).contains(&b))
            {
                return Err(LunError::InvalidConfig(format!(
                    "{name} {value:?} must be 1..={max} printable ASCII characters"
                )));
            }
            Ok(())
        };
        ascii("vendor", &self.vendor, 8)?;
        ascii("product", &self.product, 16)?;
        ascii("revision", &self.revision, 4)?;
        let serial = if self.serial.is_empty() {
            format!("{:016x}", self.lu_id)
        } else {
            self.serial.clone()
        };
        if serial.len() > MAX_SERIAL_LEN || !serial.bytes().all(|b| (0x21..0x7F).contains(&b)) {
            return bad(format!(
                "serial {serial:?} must be at most {MAX_SERIAL_LEN} printable ASCII characters without spaces"
            ));
        }
        if self.ieee_company_id > 0x00FF_FFFF {
            return bad(format!(
                "ieee_company_id {:#x} exceeds 24 bits",
                self.ieee_company_id
            ));
        }
        let bs = self.bdev_geometry.block_size;
        if bs < 512 || !bs.is_power_of_two() {
            return bad(format!(
                "bdev block size {bs} is not a power of two of at least 512"
            ));
        }
        if self.num_blocks == 0 || self.num_blocks > self.bdev_geometry.num_blocks {
            return bad(format!(
                "num_blocks {} must be 1..={} (the bdev's)",
                self.num_blocks, self.bdev_geometry.num_blocks
            ));
        }
        let caps = self.capabilities;
        if self.write_cache && !caps.volatile_cache {
            return bad("write_cache needs a bdev with a volatile cache".into());
        }
        let bdev_limit = match caps.max_transfer_blocks {
            0 => u64::MAX,
            blocks => u64::from(blocks) * u64::from(bs),
        };
        let max_transfer = u64::from(self.max_transfer_bytes);
        if max_transfer < u64::from(bs)
            || max_transfer & (u64::from(bs) - 1) != 0
            || max_transfer > bdev_limit
        {
            return bad(format!(
                "max_transfer_bytes {max_transfer} must be a multiple of the block size {bs} and at most the bdev's limit {bdev_limit}"
            ));
        }
        if self.max_compare_write_blocks == 0
            || u64::from(self.max_compare_write_blocks) * u64::from(bs) > max_transfer
        {
            return bad(format!(
                "max_compare_write_blocks {} must be 1..=255 and fit the maximum transfer",
                self.max_compare_write_blocks
            ));
        }
        if caps.unmap {
            let most = ((unmap::MAX_PARAM_LEN - unmap::HEADER_LEN) / unmap::DESCRIPTOR_LEN) as u32;
            if self.max_unmap_descriptors == 0 || self.max_unmap_descriptors > most {
                return bad(format!(
                    "max_unmap_descriptors {} must be 1..={most}",
                    self.max_unmap_descriptors
                ));
            }
            if self.max_unmap_lba_count == 0 {
                return bad("max_unmap_lba_count must be at least 1".into());
            }
        }
        if self.max_write_same_blocks == 0 {
            return bad("max_write_same_blocks must be at least 1".into());
        }
        if self.max_tasks == 0 || self.max_tasks > MAX_TASKS {
            return bad(format!(
                "max_tasks {} must be 1..={MAX_TASKS}",
                self.max_tasks
            ));
        }
        let chunk = self.scratch_chunk_bytes as u64;
        if chunk < u64::from(bs)
            || chunk & (u64::from(bs) - 1) != 0
            || chunk > bdev_limit
            || chunk > u64::from(u32::MAX)
        {
            return bad(format!(
                "scratch_chunk_bytes {chunk} must be a multiple of the block size {bs} and at most the bdev's limit {bdev_limit}"
            ));
        }
        if self.scratch_bytes < self.scratch_chunk_bytes {
            return bad(format!(
                "scratch_bytes {} must hold at least one chunk of {chunk}",
                self.scratch_bytes
            ));
        }
        Ok(UnitInfo {
            vendor: ascii_field(&self.vendor),
            product: ascii_field(&self.product),
            revision: ascii_field(&self.revision),
            serial,
            lu_id: self.lu_id,
            ieee_company_id: self.ieee_company_id,
            block_size: bs,
            num_blocks: self.num_blocks,
            read_only: self.read_only,
            volatile_cache: caps.volatile_cache,
            unmap: caps.unmap,
            unmap_reads_zeroes: caps.unmap_reads_zeroes,
            optimal_granularity_blocks: caps.optimal_boundary_blocks,
            max_transfer_blocks: (max_transfer / u64::from(bs)) as u32,
            max_unmap_lba_count: if caps.unmap {
                self.max_unmap_lba_count
            } else {
                0
            },
            max_unmap_descriptors: if caps.unmap {
                self.max_unmap_descriptors
            } else {
                0
            },
            max_write_same_blocks: self.max_write_same_blocks,
            max_compare_write_blocks: self.max_compare_write_blocks,
        })
    }
}

// ---------------------------------------------------------------------------
// Access to the frontend's data buffers and the scratch memory.

/// Copies `src` into the memory named by `iovs`, starting `offset` bytes in;
/// returns the bytes copied (less than `src.len()` if the iovecs end first).
///
/// # Safety
/// Every iovec must name memory valid for writes for its whole length that
/// nothing else accesses during the call.
unsafe fn copy_to_iovs(iovs: &[IoVec], mut offset: usize, src: &[u8]) -> usize {
    let mut done = 0;
    for iov in iovs {
        if done == src.len() {
            break;
        }
        if offset >= iov.len {
            offset -= iov.len;
            continue;
        }
        let n = (iov.len - offset).min(src.len() - done);
        // SAFETY: the caller guarantees `iov` names `iov.len` writable bytes
        // nobody else touches; `offset + n <= iov.len` and `done + n <=
        // src.len()`, and `src` cannot overlap that memory while it is
        // borrowed as a shared slice by our caller.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().add(done), iov.base.add(offset), n) };
        done += n;
        offset = 0;
    }
    done
}

/// Copies from the memory named by `iovs`, starting `offset` bytes in, into
/// `dst`; returns the bytes copied.
///
/// # Safety
/// Every iovec must name memory valid for reads for its whole length that
/// nothing writes during the call.
unsafe fn copy_from_iovs(iovs: &[IoVec], mut offset: usize, dst: &mut [u8]) -> usize {
    let mut done = 0;
    for iov in iovs {
        if done == dst.len() {
            break;
        }
        if offset >= iov.len {
            offset -= iov.len;
            continue;
        }
        let n = (iov.len - offset).min(dst.len() - done);
        // SAFETY: the caller guarantees `iov` names `iov.len` readable bytes;
        // `offset + n <= iov.len`, `done + n <= dst.len()`, and `dst` is an
        // exclusive borrow, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(iov.base.add(offset), dst.as_mut_ptr().add(done), n)
        };
        done += n;
        offset = 0;
    }
    done
}

/// Walks `len` bytes of the memory named by `iovs` from `offset` in
/// contiguous runs, handing each run and its position to `f`; stops early
/// when `f` returns `Some`.
///
/// # Safety
/// Every iovec must name memory valid for reads for its whole length that
/// nothing writes during the call.
unsafe fn scan_iovs<T>(
    iovs: &[IoVec],
    mut offset: usize,
    len: usize,
    mut f: impl FnMut(usize, &[u8]) -> Option<T>,
) -> Option<T> {
    let mut done = 0;
    for iov in iovs {
        if done == len {
            break;
        }
        if offset >= iov.len {
            offset -= iov.len;
            continue;
        }
        let n = (iov.len - offset).min(len - done);
        // SAFETY: the caller guarantees `iov` names `iov.len` readable bytes
        // that nobody writes during the call; `offset + n <= iov.len`.
        let run = unsafe { std::slice::from_raw_parts(iov.base.add(offset), n) };
        if let Some(found) = f(done, run) {
            return Some(found);
        }
        done += n;
        offset = 0;
    }
    None
}

/// Index of the first byte where the memory named by `iovs` (from
/// `offset`) differs from `expected`.
///
/// # Safety
/// As for [`scan_iovs`]; the iovecs must cover `offset + expected.len()`
/// bytes.
unsafe fn first_difference(iovs: &[IoVec], offset: usize, expected: &[u8]) -> Option<usize> {
    // SAFETY: forwarded from the caller.
    unsafe {
        scan_iovs(iovs, offset, expected.len(), |at, run| {
            let want = &expected[at..at + run.len()];
            if run == want {
                None
            } else {
                run.iter()
                    .zip(want)
                    .position(|(a, b)| a != b)
                    .map(|i| at + i)
            }
        })
    }
}

/// Builds in `dst` the iovecs naming `len` bytes of `src` from `offset`.
fn slice_iovs(src: &[IoVec], mut offset: usize, mut len: usize, dst: &mut Vec<IoVec>) {
    dst.clear();
    for iov in src {
        if len == 0 {
            break;
        }
        if offset >= iov.len {
            offset -= iov.len;
            continue;
        }
        let n = (iov.len - offset).min(len);
        dst.push(IoVec {
            base: iov.base.wrapping_add(offset),
            len: n,
        });
        len -= n;
        offset = 0;
    }
}

/// The scratch memory: `chunks` chunks of `chunk_len` bytes, each lent to one
/// task at a time. Accessed only through raw pointers, chunk by chunk, so a
/// chunk a bdev is filling is never covered by a Rust reference.
struct Scratch {
    /// Owns the memory; never touched through a reference after `base` was
    /// taken.
    memory: Vec<u8>,
    base: *mut u8,
    chunk_len: usize,
    /// One iovec per chunk (stable addresses for the bdev's SgLists).
    iovs: Vec<IoVec>,
    free: Vec<u32>,
}

impl fmt::Debug for Scratch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scratch")
            .field("bytes", &self.memory.len())
            .field("chunk_len", &self.chunk_len)
            .field("free", &self.free.len())
            .finish()
    }
}

impl Scratch {
    fn new(bytes: usize, chunk_len: usize) -> Self {
        let chunks = bytes / chunk_len;
        let mut memory = vec![0u8; chunks * chunk_len];
        let base = memory.as_mut_ptr();
        let iovs = (0..chunks)
            .map(|i| IoVec {
                base: base.wrapping_add(i * chunk_len),
                len: chunk_len,
            })
            .collect();
        Self {
            memory,
            base,
            chunk_len,
            iovs,
            free: (0..chunks as u32).rev().collect(),
        }
    }

    /// The bytes of chunk `chunk`.
    ///
    /// # Safety
    /// No bdev request on this chunk may be outstanding, and no other slice
    /// of it may be live.
    #[allow(clippy::mut_from_ref)]
    unsafe fn chunk(&self, chunk: u32) -> &mut [u8] {
        // SAFETY: `chunk < chunks` (indexes come from `free`), so the range
        // lies in `memory`, which lives as long as `self`; the caller
        // guarantees exclusive access.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.add(chunk as usize * self.chunk_len),
                self.chunk_len,
            )
        }
    }
}

// SAFETY: `base` points into `memory`, which the Scratch owns; moving the
// Scratch to another thread moves that ownership with it.
unsafe impl Send for Scratch {}

// ---------------------------------------------------------------------------
// Tasks.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    Free,
    Active,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    No,
    Ready,
    Scratch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    /// Medium verification only.
    Nothing,
    /// Compare with the data buffer from `buf_offset`.
    Bytes { buf_offset: usize },
    /// Compare every block with the first block of the data buffer.
    SameBlock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FillHow {
    WriteZeroes,
    Unmap,
    /// Write the pattern block repeated in the scratch chunk; `from_buffer`:
    /// the block comes from the data buffer (else zeroes).
    Pattern {
        from_buffer: bool,
        filled: bool,
    },
}

/// One step of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Idle,
    /// One read or write over the data buffer from `buf_offset`.
    Transfer {
        op: IoOp,
        lba: u64,
        blocks: u32,
        fua: bool,
        buf_offset: usize,
        staged: bool,
    },
    /// One flush.
    Flush {
        lba: u64,
        blocks: u32,
        staged: bool,
    },
    /// Read `blocks` at `lba` into scratch a piece at a time and compare;
    /// `done` blocks are checked, `piece` blocks are being read.
    Check {
        lba: u64,
        blocks: u32,
        done: u32,
        piece: u32,
        compare: Compare,
    },
    /// Deallocate the ranges of the UNMAP descriptors (read from the data
    /// buffer): `next` is the next descriptor to read, `lba`/`left` the rest
    /// of the current one.
    Unmap {
        next: u32,
        count: u32,
        lba: u64,
        left: u64,
    },
    /// WRITE SAME: `left` blocks from `lba` still to stage.
    Fill {
        how: FillHow,
        lba: u64,
        left: u64,
        fua: bool,
    },
}

impl Step {
    /// Whether requests remain to be staged.
    fn has_more(&self) -> bool {
        match *self {
            Step::Idle => false,
            Step::Transfer { staged, .. } | Step::Flush { staged, .. } => !staged,
            Step::Check { blocks, done, .. } => done < blocks,
            Step::Unmap {
                next, count, left, ..
            } => left > 0 || next < count,
            Step::Fill { left, .. } => left > 0,
        }
    }

    fn needs_scratch(&self) -> bool {
        matches!(
            self,
            Step::Check { .. }
                | Step::Fill {
                    how: FillHow::Pattern { .. },
                    ..
                }
        )
    }
}

struct Task {
    state: TaskState,
    generation: u16,
    cdb: [u8; cdb::MAX_CDB_LEN],
    iovs: Vec<IoVec>,
    buf_len: usize,
    /// A sub-range of the data buffer for a request that does not start at
    /// its beginning (the write of COMPARE AND WRITE).
    sub_iovs: Vec<IoVec>,
    step: Step,
    next: Step,
    /// COMPARE AND WRITE: must run alone.
    exclusive: bool,
    outstanding: u32,
    error: Option<ScsiError>,
    aborted: bool,
    queued: Queued,
    chunk: Option<u32>,
    data_in_len: u32,
    response: Response,
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("state", &self.state)
            .field("opcode", &format_args!("{:#04x}", self.cdb[0]))
            .field("step", &self.step)
            .field("next", &self.next)
            .field("outstanding", &self.outstanding)
            .field("error", &self.error)
            .field("aborted", &self.aborted)
            .finish()
    }
}

/// Iovecs a task holds without growing its arrays; a longer list grows them
/// once (their capacity is kept), so steady state does not allocate.
const INITIAL_IOVS: usize = 8;

impl Task {
    fn new() -> Self {
        Self {
            state: TaskState::Free,
            generation: 0,
            cdb: [0; cdb::MAX_CDB_LEN],
            iovs: Vec::with_capacity(INITIAL_IOVS),
            buf_len: 0,
            sub_iovs: Vec::with_capacity(INITIAL_IOVS),
            step: Step::Idle,
            next: Step::Idle,
            exclusive: false,
            outstanding: 0,
            error: None,
            aborted: false,
            queued: Queued::No,
            chunk: None,
            data_in_len: 0,
            response: Response::good(0),
        }
    }
}

/// What staging requests for a task's step achieved.
enum Progress {
    /// The port is full and requests remain: keep the head of the queue.
    Blocked,
    /// Everything possible is staged; continue when completions arrive.
    Waiting,
    /// The task has finished (error, abort or all steps done).
    Finished,
}

/// Counters for tests and statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LunStats {
    /// Commands submitted (including rejected ones).
    pub submitted: u64,
    /// Bdev requests staged.
    pub requests: u64,
    /// Times the head of the ready queue had to wait (port full, or a
    /// COMPARE AND WRITE waiting for the bdev to drain).
    pub head_blocked: u64,
    /// Times a task waited for scratch memory.
    pub scratch_waits: u64,
    /// Completions whose tag matched no outstanding request (ignored).
    pub stray_completions: u64,
}

/// A SCSI logical unit over one [`BdevPort`]. See the module docs.
pub struct Lun {
    unit: UnitInfo,
    mode: ModeState,
    port: BdevPort,
    /// Largest Unmap/WriteZeroes request in blocks.
    max_unmap_piece: u32,
    /// The bdev writes zeroes natively.
    write_zeroes: bool,
    tasks: Vec<Task>,
    ready: VecDeque<u32>,
    scratch_wait: VecDeque<u32>,
    done: VecDeque<u32>,
    rejected: VecDeque<u32>,
    /// The COMPARE AND WRITE running alone.
    exclusive: Option<u32>,
    scratch: Scratch,
    response_buf: Box<[u8; RESPONSE_BUFFER_LEN]>,
    param_buf: Box<[u8]>,
    completions: Vec<IoCompletion>,
    in_flight: usize,
    stats: LunStats,
}

impl fmt::Debug for Lun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lun")
            .field("unit", &self.unit)
            .field("mode", &self.mode)
            .field("in_flight", &self.in_flight)
            .field("ready", &self.ready.len())
            .field("scratch_wait", &self.scratch_wait.len())
            .field("done", &self.done.len())
            .field("scratch", &self.scratch)
            .field("stats", &self.stats)
            .finish()
    }
}

const SLOT_BITS: u32 = 32;
const GENERATION_MASK: u64 = 0xFFFF;
const _: () = assert!(((GENERATION_MASK << SLOT_BITS) | 0xFFFF_FFFF) & !PORT_TAG_MASK == 0);

fn tag(slot: u32, generation: u16) -> u64 {
    (u64::from(generation) << SLOT_BITS) | u64::from(slot)
}

impl Lun {
    /// A logical unit executing commands on `port` as `config` says.
    /// Preallocates the task table, the scratch memory and the response
    /// buffers.
    pub fn new(config: LunConfig, port: BdevPort) -> Result<Lun, LunError> {
        let unit = config.validate()?;
        let mode = ModeState::new(ModeValues {
            write_cache: config.write_cache,
            descriptor_sense: config.sense_format == SenseFormat::Descriptor,
        });
        let max_tasks = config.max_tasks as usize;
        let depth = port.depth();
        Ok(Lun {
            unit,
            mode,
            port,
            max_unmap_piece: match config.capabilities.max_unmap_blocks {
                0 => u32::MAX,
                blocks => blocks,
            },
            write_zeroes: config.capabilities.write_zeroes,
            tasks: (0..max_tasks).map(|_| Task::new()).collect(),
            ready: VecDeque::with_capacity(max_tasks),
            scratch_wait: VecDeque::with_capacity(max_tasks),
            done: VecDeque::with_capacity(max_tasks),
            rejected: VecDeque::with_capacity(max_tasks),
            exclusive: None,
            scratch: Scratch::new(config.scratch_bytes, config.scratch_chunk_bytes),
            response_buf: Box::new([0; RESPONSE_BUFFER_LEN]),
            param_buf: vec![0; unmap::MAX_PARAM_LEN].into_boxed_slice(),
            completions: Vec::with_capacity(depth),
            in_flight: 0,
            stats: LunStats::default(),
        })
    }

    /// The unit's description.
    pub fn unit(&self) -> &UnitInfo {
        &self.unit
    }

    /// The current and default mode parameters.
    pub fn mode(&self) -> &ModeState {
        &self.mode
    }

    /// The sense format in use (D_SENSE).
    pub fn sense_format(&self) -> SenseFormat {
        self.mode.current.sense_format()
    }

    /// The port (e.g. to set its peer waker).
    pub fn port_mut(&mut self) -> &mut BdevPort {
        &mut self.port
    }

    /// Requests staged or in the bdev.
    pub fn outstanding_requests(&self) -> usize {
        self.port.outstanding()
    }

    /// Counters.
    pub fn stats(&self) -> LunStats {
        self.stats
    }

    fn block_size(&self) -> usize {
        self.unit.block_size as usize
    }

    fn chunk_blocks(&self) -> u32 {
        (self.scratch.chunk_len / self.block_size()) as u32
    }

    // -- starting commands ---------------------------------------------------

    /// Finishes `slot` at once with `error`.
    fn fail_now(&mut self, slot: u32, error: ScsiError) {
        let task = &mut self.tasks[slot as usize];
        task.error = Some(error);
        self.finish(slot);
    }

    fn start(&mut self, slot: u32, cdb_bytes: &[u8]) {
        let command = match cdb::decode(cdb_bytes, &self.unit) {
            Ok(command) => command,
            Err(error) => return self.fail_now(slot, error),
        };
        let task = &self.tasks[slot as usize];
        let buf_len = task.buf_len as u64;
        let bs = self.unit.block_size;
        // Data-out must be supplied in full.
        if cdb::data_out_len(&command, bs) > buf_len {
            let field = cdb::transfer_length_field(cdb_bytes[0]);
            return self.fail_now(slot, ScsiError::InvalidFieldInCdb(field));
        }
        if command.is_emulated() {
            return self.emulate(slot, &command);
        }
        self.plan(slot, command);
        let task = &mut self.tasks[slot as usize];
        if task.step == Step::Idle {
            // Nothing to do (zero-length transfer and the like).
            return self.finish(slot);
        }
        if task.step.needs_scratch() || task.next.needs_scratch() {
            if self.scratch_wait.is_empty() {
                if let Some(chunk) = self.scratch.free.pop() {
                    task.chunk = Some(chunk);
                }
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

    fn emulate(&mut self, slot: u32, command: &Command) {
        let task = &self.tasks[slot as usize];
        let param_len = match *command {
            Command::ModeSelect { param_len, .. } => param_len as usize,
            _ => 0,
        };
        // SAFETY: the submit contract keeps the data buffer valid and
        // untouched by the frontend until the response is delivered;
        // `param_len <= buf_len` was checked and fits `param_buf` (16 bits).
        let copied = unsafe { copy_from_iovs(&task.iovs, 0, &mut self.param_buf[..param_len]) };
        debug_assert_eq!(copied, param_len);
        match scsi::emulate(
            command,
            &self.unit,
            &mut self.mode,
            &self.param_buf[..param_len],
            &mut self.response_buf,
        ) {
            Ok(len) => {
                // SAFETY: as above; the buffer is data-in space of the command.
                let written = unsafe { copy_to_iovs(&task.iovs, 0, &self.response_buf[..len]) };
                self.tasks[slot as usize].data_in_len = written as u32;
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
                let fit = (task.buf_len / bs).min(blocks as usize) as u32;
                if fit > 0 {
                    task.data_in_len = (fit as usize * bs) as u32;
                    task.step = transfer(IoOp::Read, lba, fit, false, 0);
                }
            }
            Command::Write { lba, blocks, fua } if blocks > 0 => {
                task.step = transfer(IoOp::Write, lba, blocks, fua || write_through, 0);
            }
            Command::WriteAndVerify {
                lba,
                blocks,
                byte_check,
            } if blocks > 0 => {
                task.step = transfer(IoOp::Write, lba, blocks, true, 0);
                let compare = if byte_check {
                    Compare::Bytes { buf_offset: 0 }
                } else {
                    Compare::Nothing
                };
                task.next = check(lba, blocks, compare);
            }
            Command::Verify {
                lba,
                blocks,
                byte_check,
            } if blocks > 0 => {
                let compare = match byte_check {
                    ByteCheck::None => Compare::Nothing,
                    ByteCheck::Bytes => Compare::Bytes { buf_offset: 0 },
                    ByteCheck::SameBlock => Compare::SameBlock,
                };
                task.step = check(lba, blocks, compare);
            }
            Command::CompareAndWrite { lba, blocks, fua } if blocks > 0 => {
                task.step = check(lba, blocks, Compare::Bytes { buf_offset: 0 });
                task.next = transfer(
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
                task.step = Step::Flush {
                    lba,
                    blocks,
                    staged: false,
                };
            }
            Command::WriteSame {
                lba,
                blocks,
                unmap,
                ndob,
            } => {
                // SAFETY: the data buffer holds at least one block (checked
                // against `data_out_len`) and stays valid until the response.
                let zero = ndob
                    || unsafe {
                        scan_iovs(&task.iovs, 0, bs, |_, run| {
                            run.iter().any(|&b| b != 0).then_some(())
                        })
                    }
                    .is_none();
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
                task.step = Step::Fill {
                    how,
                    lba,
                    left: u64::from(blocks),
                    fua: write_through,
                };
            }
            Command::Unmap { param_len } if param_len > 0 => {
                let param_len = param_len as usize;
                // SAFETY: as above; `param_len <= buf_len` was checked.
                unsafe { copy_from_iovs(&task.iovs, 0, &mut self.param_buf[..param_len]) };
                match unmap::validate(&self.param_buf[..param_len], &self.unit) {
                    Ok(count) if count > 0 => {
                        task.step = Step::Unmap {
                            next: 0,
                            count,
                            lba: 0,
                            left: 0,
                        };
                    }
                    Ok(_) => {}
                    Err(error) => task.error = Some(error),
                }
            }
            _ => {}
        }
    }

    // -- scheduling ----------------------------------------------------------

    /// Lets the tasks at the head of the ready queue stage requests, in FIFO
    /// order, until one must wait for port room.
    fn run_ready(&mut self) {
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

    /// Stages requests for the current step; returns true if the port filled
    /// up while requests remained.
    fn stage_step(&mut self, slot: u32) -> bool {
        let bs = self.block_size();
        let chunk_blocks = self.chunk_blocks();
        let max_unmap_piece = self.max_unmap_piece;
        let Lun {
            tasks,
            port,
            scratch,
            stats,
            ..
        } = self;
        let task = &mut tasks[slot as usize];
        let generation = task.generation;
        let mut stage = |port: &mut BdevPort, task: &mut Task, request: IoRequest| -> bool {
            if port.stage(request).is_err() {
                return false;
            }
            task.outstanding += 1;
            stats.requests += 1;
            true
        };
        let make = |op: IoOp, lba: u64, blocks: u32, fua: bool, sgl: SgList| IoRequest {
            op,
            fua,
            lba,
            blocks,
            sgl,
            tag: tag(slot, generation),
        };
        loop {
            if port.room() == 0 {
                return task.step.has_more();
            }
            match task.step {
                Step::Idle => return false,
                Step::Transfer {
                    op,
                    lba,
                    blocks,
                    fua,
                    buf_offset,
                    staged,
                } => {
                    if staged {
                        return false;
                    }
                    let sgl = if buf_offset == 0 {
                        // SAFETY: the task's iovecs are not modified until the
                        // task is delivered, which is after this request
                        // completes; the memory they name stays valid by the
                        // submit contract.
                        unsafe { SgList::from_slice(&task.iovs) }
                    } else {
                        slice_iovs(
                            &task.iovs,
                            buf_offset,
                            blocks as usize * bs,
                            &mut task.sub_iovs,
                        );
                        // SAFETY: as above, for `sub_iovs`, which is only
                        // rebuilt when a new request is staged, after this one
                        // completed (one Transfer per step).
                        unsafe { SgList::from_slice(&task.sub_iovs) }
                    };
                    if !stage(port, task, make(op, lba, blocks, fua, sgl)) {
                        return true;
                    }
                    task.step = Step::Transfer {
                        op,
                        lba,
                        blocks,
                        fua,
                        buf_offset,
                        staged: true,
                    };
                }
                Step::Flush {
                    lba,
                    blocks,
                    staged,
                } => {
                    if staged {
                        return false;
                    }
                    if !stage(
                        port,
                        task,
                        make(IoOp::Flush, lba, blocks, false, SgList::EMPTY),
                    ) {
                        return true;
                    }
                    task.step = Step::Flush {
                        lba,
                        blocks,
                        staged: true,
                    };
                }
                Step::Check {
                    lba,
                    blocks,
                    done,
                    piece,
                    compare,
                } => {
                    if piece > 0 || done == blocks {
                        return false; // one piece at a time
                    }
                    let chunk = task.chunk.expect("check step holds a scratch chunk");
                    let n = (blocks - done).min(chunk_blocks);
                    // SAFETY: the chunk is lent to this task alone until it
                    // finishes, and stays allocated while requests are
                    // outstanding (see `Drop`).
                    let sgl = unsafe { SgList::from_raw(&scratch.iovs[chunk as usize], 1) };
                    if !stage(
                        port,
                        task,
                        make(IoOp::Read, lba + u64::from(done), n, false, sgl),
                    ) {
                        return true;
                    }
                    task.step = Step::Check {
                        lba,
                        blocks,
                        done,
                        piece: n,
                        compare,
                    };
                }
                Step::Unmap {
                    mut next,
                    count,
                    mut lba,
                    mut left,
                } => {
                    while left == 0 && next < count {
                        let mut bytes = [0u8; unmap::DESCRIPTOR_LEN];
                        let at = unmap::HEADER_LEN + next as usize * unmap::DESCRIPTOR_LEN;
                        // SAFETY: the parameter list was validated from this
                        // buffer, which the submit contract keeps valid.
                        unsafe { copy_from_iovs(&task.iovs, at, &mut bytes) };
                        let descriptor = unmap::Descriptor::decode(&bytes);
                        lba = descriptor.lba;
                        left = u64::from(descriptor.blocks);
                        next += 1;
                    }
                    if left == 0 {
                        task.step = Step::Unmap {
                            next,
                            count,
                            lba,
                            left,
                        };
                        return false;
                    }
                    let n = left.min(u64::from(max_unmap_piece)) as u32;
                    if !stage(port, task, make(IoOp::Unmap, lba, n, false, SgList::EMPTY)) {
                        task.step = Step::Unmap {
                            next,
                            count,
                            lba,
                            left,
                        };
                        return true;
                    }
                    task.step = Step::Unmap {
                        next,
                        count,
                        lba: lba + u64::from(n),
                        left: left - u64::from(n),
                    };
                }
                Step::Fill {
                    how,
                    lba,
                    left,
                    fua,
                } => {
                    if left == 0 {
                        return false;
                    }
                    let (op, n, sgl, how) = match how {
                        FillHow::WriteZeroes => (
                            IoOp::WriteZeroes,
                            left.min(u64::from(max_unmap_piece)) as u32,
                            SgList::EMPTY,
                            how,
                        ),
                        FillHow::Unmap => (
                            IoOp::Unmap,
                            left.min(u64::from(max_unmap_piece)) as u32,
                            SgList::EMPTY,
                            how,
                        ),
                        FillHow::Pattern {
                            from_buffer,
                            filled,
                        } => {
                            let chunk = task.chunk.expect("pattern fill holds a scratch chunk");
                            if !filled {
                                // SAFETY: no request on this chunk is
                                // outstanding yet (the pattern is written
                                // before the first write is staged).
                                let memory = unsafe { scratch.chunk(chunk) };
                                if from_buffer {
                                    // SAFETY: the data buffer holds a block.
                                    unsafe { copy_from_iovs(&task.iovs, 0, &mut memory[..bs]) };
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
                            // SAFETY: as for the check step; writes only read
                            // the chunk, so several may share it.
                            let sgl = unsafe { SgList::from_raw(&scratch.iovs[chunk as usize], 1) };
                            (
                                IoOp::Write,
                                left.min(u64::from(chunk_blocks)) as u32,
                                sgl,
                                FillHow::Pattern {
                                    from_buffer,
                                    filled: true,
                                },
                            )
                        }
                    };
                    let staged = stage(port, task, make(op, lba, n, fua && op != IoOp::Unmap, sgl));
                    task.step = Step::Fill {
                        how,
                        lba: if staged { lba + u64::from(n) } else { lba },
                        left: if staged { left - u64::from(n) } else { left },
                        fua,
                    };
                    if !staged {
                        return true;
                    }
                }
            }
        }
    }

    /// Finishes a task: builds its response, releases its scratch chunk and
    /// queues it for delivery.
    fn finish(&mut self, slot: u32) {
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
        if let Some(chunk) = task.chunk.take() {
            self.scratch.free.push(chunk);
            self.grant_scratch();
        }
        self.done.push_back(slot);
    }

    /// Gives free scratch chunks to waiting tasks, in order.
    fn grant_scratch(&mut self) {
        while !self.scratch.free.is_empty() {
            let Some(slot) = self.scratch_wait.pop_front() else {
                break;
            };
            let chunk = self.scratch.free.pop();
            let task = &mut self.tasks[slot as usize];
            task.chunk = chunk;
            task.queued = Queued::Ready;
            self.ready.push_back(slot);
        }
    }

    /// Handles one bdev completion.
    fn complete(&mut self, completion: IoCompletion) {
        let slot = (completion.tag & 0xFFFF_FFFF) as u32;
        let generation = ((completion.tag >> SLOT_BITS) & GENERATION_MASK) as u16;
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
        match completion.result {
            Err(error) => {
                if task.error.is_none() {
                    let field = cdb::transfer_length_field(task.cdb[0]);
                    task.error = Some(ScsiError::from_io(error, field));
                }
            }
            Ok(()) => {
                if let Step::Check {
                    lba,
                    blocks,
                    done,
                    piece,
                    compare,
                } = task.step
                {
                    let chunk = task.chunk.expect("check step holds a scratch chunk");
                    // SAFETY: the only request on this chunk (one piece at a
                    // time) has just completed.
                    let memory = unsafe { self.scratch.chunk(chunk) };
                    let got = &memory[..piece as usize * bs];
                    let start = done as usize * bs;
                    let mismatch = match compare {
                        Compare::Nothing => None,
                        Compare::Bytes { buf_offset } => {
                            // SAFETY: the data buffer holds the compared bytes
                            // (checked against `data_out_len`) and is valid
                            // until the response.
                            unsafe { first_difference(&task.iovs, buf_offset + start, got) }
                                .map(|at| start + at)
                        }
                        Compare::SameBlock => got.chunks(bs).enumerate().find_map(|(i, block)| {
                            // SAFETY: as above; the buffer holds one block.
                            unsafe { first_difference(&task.iovs, 0, block) }
                                .map(|at| start + i * bs + at)
                        }),
                    };
                    if let Some(offset) = mismatch {
                        task.error = Some(ScsiError::Miscompare {
                            offset: offset as u64,
                        });
                    }
                    task.step = Step::Check {
                        lba,
                        blocks,
                        done: done + piece,
                        piece: 0,
                        compare,
                    };
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

    /// Removes `slot` from whichever queue holds it.
    fn unqueue(&mut self, slot: u32) {
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

fn transfer(op: IoOp, lba: u64, blocks: u32, fua: bool, buf_offset: usize) -> Step {
    Step::Transfer {
        op,
        lba,
        blocks,
        fua,
        buf_offset,
        staged: false,
    }
}

fn check(lba: u64, blocks: u32, compare: Compare) -> Step {
    Step::Check {
        lba,
        blocks,
        done: 0,
        piece: 0,
        compare,
    }
}

impl CommandExecutor for Lun {
    fn max_tasks(&self) -> u32 {
        self.tasks.len() as u32
    }

    unsafe fn submit(&mut self, slot: u32, cdb_bytes: &[u8], data: &[IoVec]) {
        self.stats.submitted += 1;
        let busy = !matches!(
            self.tasks.get(slot as usize),
            Some(task) if task.state == TaskState::Free
        );
        if busy {
            if self.rejected.len() < self.tasks.len() {
                self.rejected.push_back(slot);
                self.in_flight += 1;
            }
            return;
        }
        self.in_flight += 1;
        let task = &mut self.tasks[slot as usize];
        task.state = TaskState::Active;
        task.generation = task.generation.wrapping_add(1);
        let len = cdb_bytes.len().min(cdb::MAX_CDB_LEN);
        task.cdb = [0; cdb::MAX_CDB_LEN];
        task.cdb[..len].copy_from_slice(&cdb_bytes[..len]);
        task.iovs.clear();
        task.iovs.extend_from_slice(data);
        task.buf_len = data.iter().map(|iov| iov.len).sum();
        task.step = Step::Idle;
        task.next = Step::Idle;
        task.exclusive = false;
        task.outstanding = 0;
        task.error = None;
        task.aborted = false;
        task.queued = Queued::No;
        task.chunk = None;
        task.data_in_len = 0;
        self.start(slot, cdb_bytes);
    }

    fn abort(&mut self, slot: u32) {
        let Some(task) = self.tasks.get_mut(slot as usize) else {
            return;
        };
        if task.state != TaskState::Active || task.aborted {
            return;
        }
        task.aborted = true;
        if task.outstanding == 0 {
            self.unqueue(slot);
            self.finish(slot);
            self.run_ready();
        }
    }

    fn flush(&mut self) {
        self.port.publish();
    }

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(u32, &Response)) -> usize {
        let Lun {
            port, completions, ..
        } = self;
        completions.clear();
        port.poll(usize::MAX, |completion| completions.push(completion));
        for i in 0..self.completions.len() {
            let completion = self.completions[i];
            self.complete(completion);
        }
        self.run_ready();
        let mut delivered = 0;
        while delivered < max {
            if let Some(slot) = self.rejected.pop_front() {
                done(slot, &Response::with_status(status::BUSY));
            } else if let Some(slot) = self.done.pop_front() {
                let task = &mut self.tasks[slot as usize];
                task.state = TaskState::Free;
                done(slot, &task.response);
            } else {
                break;
            }
            self.in_flight -= 1;
            delivered += 1;
        }
        delivered
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl Drop for Lun {
    fn drop(&mut self) {
        if self.port.outstanding() > 0 {
            // A bdev may still read or write the scratch memory and the
            // tasks' iovec arrays: leak them rather than free memory under it.
            std::mem::forget(std::mem::take(&mut self.scratch.memory));
            std::mem::forget(std::mem::take(&mut self.scratch.iovs));
            std::mem::forget(std::mem::take(&mut self.tasks));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bdev::null::check_request;
    use bdev::{BdevChannel, Error as BdevError, IoError};
    use reactor::Poller;

    use super::*;
    use crate::port::{port_pair, BdevPoller};

    // -- a deterministic PRNG ------------------------------------------------

    #[derive(Debug, Clone)]
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        fn next(&mut self) -> u64 {
            // xorshift64*
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn range(&mut self, lo: u64, hi: u64) -> u64 {
            lo + self.below(hi - lo + 1)
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.next() as u8;
            }
        }
    }

    // -- a Vec-backed test bdev -----------------------------------------------

    /// A logged request, as the bdev saw it at submission.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Logged {
        op: IoOp,
        lba: u64,
        blocks: u32,
        fua: bool,
        /// Requests already in the channel when this one arrived.
        in_flight: usize,
    }

    /// An injected failure: requests of `op` overlapping `lba..end` fail with
    /// `error`, `count` times.
    #[derive(Debug, Clone, Copy)]
    struct Fault {
        op: IoOp,
        lba: u64,
        end: u64,
        error: IoError,
        count: u32,
    }

    #[derive(Debug)]
    struct DiskState {
        geometry: Geometry,
        caps: Capabilities,
        data: Vec<u8>,
        faults: Vec<Fault>,
        log: Vec<Logged>,
        /// While set, the channel completes nothing.
        hold: bool,
        /// Complete a random subset in random order (else all, FIFO).
        shuffle: bool,
        rng: Rng,
        in_flight: usize,
    }

    #[derive(Debug, Clone)]
    struct TestDisk(Arc<Mutex<DiskState>>);

    impl TestDisk {
        fn new(block_size: u32, num_blocks: u64, caps: Capabilities, seed: u64) -> Self {
            TestDisk(Arc::new(Mutex::new(DiskState {
                geometry: Geometry {
                    block_size,
                    num_blocks,
                },
                caps,
                data: vec![0; (num_blocks * u64::from(block_size)) as usize],
                faults: Vec::new(),
                log: Vec::new(),
                hold: false,
                shuffle: true,
                rng: Rng::new(seed),
                in_flight: 0,
            })))
        }
        fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
            self.0.lock().unwrap()
        }
        fn log(&self) -> Vec<Logged> {
            self.state().log.clone()
        }
        fn clear_log(&self) {
            self.state().log.clear();
        }
        fn set_hold(&self, hold: bool) {
            self.state().hold = hold;
        }
        fn fault(&self, op: IoOp, lba: u64, end: u64, error: IoError) {
            self.state().faults.push(Fault {
                op,
                lba,
                end,
                error,
                count: u32::MAX,
            });
        }
        fn blocks(&self, lba: u64, blocks: u64) -> Vec<u8> {
            let s = self.state();
            let bs = u64::from(s.geometry.block_size);
            s.data[(lba * bs) as usize..((lba + blocks) * bs) as usize].to_vec()
        }
        fn write_blocks(&self, lba: u64, bytes: &[u8]) {
            let mut s = self.state();
            let at = (lba * u64::from(s.geometry.block_size)) as usize;
            s.data[at..at + bytes.len()].copy_from_slice(bytes);
        }
    }

    impl Bdev for TestDisk {
        fn name(&self) -> &str {
            "testdisk"
        }
        fn geometry(&self) -> Geometry {
            self.state().geometry
        }
        fn capabilities(&self) -> Capabilities {
            self.state().caps
        }
        fn open_channel(&self, queue_depth: usize) -> Result<Box<dyn BdevChannel>, BdevError> {
            Ok(Box::new(TestChannel {
                disk: self.clone(),
                depth: queue_depth,
                pending: Vec::new(),
                chosen: Vec::new(),
            }))
        }
    }

    #[derive(Debug)]
    struct TestChannel {
        disk: TestDisk,
        depth: usize,
        pending: Vec<IoRequest>,
        chosen: Vec<IoRequest>,
    }

    fn execute(s: &mut DiskState, request: &IoRequest) -> Result<(), IoError> {
        check_request(&s.geometry, request)?;
        // A whole-device flush (0/0) still matches faults at its LBA.
        let end = request.lba + u64::from(request.blocks.max(1));
        for fault in s.faults.iter_mut() {
            if fault.op == request.op
                && fault.count > 0
                && request.lba < fault.end
                && fault.lba < end
            {
                fault.count -= 1;
                return Err(fault.error);
            }
        }
        let bs = s.geometry.block_size as usize;
        let at = request.lba as usize * bs;
        let len = request.blocks as usize * bs;
        match request.op {
            IoOp::Read => {
                let src = &s.data[at..at + len];
                // SAFETY: the Lun guarantees the SgList names valid, unaliased
                // memory until this request completes (which is right after).
                let copied = unsafe { copy_to_iovs(request.sgl.iovs(), 0, src) };
                assert_eq!(copied, len);
            }
            IoOp::Write => {
                // SAFETY: as above; a write's buffer is only read.
                let copied =
                    unsafe { copy_from_iovs(request.sgl.iovs(), 0, &mut s.data[at..at + len]) };
                assert_eq!(copied, len);
            }
            IoOp::Flush => {}
            IoOp::Unmap => {
                if !s.caps.unmap {
                    return Err(IoError::Unsupported);
                }
                let fill = if s.caps.unmap_reads_zeroes { 0 } else { 0xA5 };
                s.data[at..at + len].fill(fill);
            }
            IoOp::WriteZeroes => {
                if !s.caps.write_zeroes {
                    return Err(IoError::Unsupported);
                }
                s.data[at..at + len].fill(0);
            }
        }
        Ok(())
    }

    impl BdevChannel for TestChannel {
        fn submit(&mut self, request: IoRequest) -> Result<(), IoRequest> {
            if self.pending.len() == self.depth {
                return Err(request);
            }
            let mut s = self.disk.state();
            let in_flight = s.in_flight;
            s.log.push(Logged {
                op: request.op,
                lba: request.lba,
                blocks: request.blocks,
                fua: request.fua,
                in_flight,
            });
            s.in_flight += 1;
            self.pending.push(request);
            Ok(())
        }

        fn poll(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
            let mut s = self.disk.state();
            if s.hold || self.pending.is_empty() {
                return 0;
            }
            self.chosen.clear();
            if s.shuffle {
                let mut i = 0;
                while i < self.pending.len() {
                    if s.rng.chance(50) {
                        self.chosen.push(self.pending.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
                // Shuffle the chosen ones.
                for i in (1..self.chosen.len()).rev() {
                    let j = s.rng.below(i as u64 + 1) as usize;
                    self.chosen.swap(i, j);
                }
            } else {
                self.chosen.append(&mut self.pending);
            }
            let n = self.chosen.len();
            for request in self.chosen.drain(..) {
                let result = execute(&mut s, &request);
                s.in_flight -= 1;
                done(IoCompletion {
                    tag: request.tag,
                    result,
                });
            }
            n
        }

        fn in_flight(&self) -> usize {
            self.pending.len()
        }
    }

    // -- harness --------------------------------------------------------------

    fn caps() -> Capabilities {
        Capabilities {
            volatile_cache: true,
            unmap: true,
            unmap_reads_zeroes: true,
            write_zeroes: true,
            max_transfer_blocks: 256,
            max_unmap_blocks: 64,
            optimal_boundary_blocks: 8,
        }
    }

    struct Harness {
        lun: Lun,
        poller: BdevPoller,
        disk: TestDisk,
        responses: Vec<(u32, Response)>,
    }

    impl Harness {
        fn with(
            caps: Capabilities,
            depth: usize,
            seed: u64,
            configure: impl FnOnce(&mut LunConfig),
        ) -> Self {
            let disk = TestDisk::new(512, 4096, caps, seed);
            let mut config = LunConfig::for_bdev(&disk);
            config.max_tasks = 32;
            config.scratch_chunk_bytes = 4096;
            config.scratch_bytes = 4 * 4096;
            config.max_compare_write_blocks = 16;
            config.max_unmap_descriptors = 8;
            config.max_unmap_lba_count = 2048;
            config.max_write_same_blocks = 1024;
            config.max_transfer_bytes = 128 * 1024;
            config.lu_id = 0x1122_3344_5566_7788;
            configure(&mut config);
            let (port, end) = port_pair(depth).unwrap();
            let channel = disk.open_channel(depth).unwrap();
            let mut poller = BdevPoller::new("test", channel, 64);
            poller.attach(end).unwrap();
            let lun = Lun::new(config, port).unwrap();
            Harness {
                lun,
                poller,
                disk,
                responses: Vec::new(),
            }
        }

        fn new() -> Self {
            Self::with(caps(), 16, 1, |_| {})
        }

        /// Submits with the data buffer split at `cuts`.
        fn submit_split(&mut self, slot: u32, cdb: &[u8], buf: &mut [u8], cuts: &[usize]) {
            let iovs = split(buf, cuts);
            // SAFETY: every caller keeps `buf` alive and untouched until the
            // response for `slot` has been collected.
            unsafe { self.lun.submit(slot, cdb, &iovs) };
        }

        fn submit(&mut self, slot: u32, cdb: &[u8], buf: &mut [u8]) {
            self.submit_split(slot, cdb, buf, &[]);
        }

        fn step(&mut self) {
            self.lun.flush();
            self.poller.poll();
            let responses = &mut self.responses;
            self.lun
                .poll(usize::MAX, &mut |slot, r| responses.push((slot, *r)));
        }

        fn run(&mut self) {
            for _ in 0..100_000 {
                if self.lun.in_flight() == 0 {
                    return;
                }
                self.step();
            }
            panic!("the unit did not drain: {:?}", self.lun);
        }

        fn take(&mut self, slot: u32) -> Response {
            let at = self
                .responses
                .iter()
                .position(|(s, _)| *s == slot)
                .unwrap_or_else(|| panic!("no response for slot {slot}"));
            self.responses.remove(at).1
        }

        /// Runs one command to completion.
        fn exec(&mut self, cdb: &[u8], buf: &mut [u8]) -> Response {
            self.submit(0, cdb, buf);
            self.run();
            assert_eq!(self.responses.len(), 1);
            self.take(0)
        }
    }

    fn split(buf: &mut [u8], cuts: &[usize]) -> Vec<IoVec> {
        let mut iovs = Vec::new();
        let mut rest = buf;
        let mut at = 0;
        for &cut in cuts {
            let (head, tail) = rest.split_at_mut(cut - at);
            iovs.push(IoVec::from_slice(head));
            rest = tail;
            at = cut;
        }
        iovs.push(IoVec::from_slice(rest));
        iovs
    }

    fn cdb10(op: u8, b1: u8, lba: u32, len: u16) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[0] = op;
        c[1] = b1;
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&len.to_be_bytes());
        c
    }

    fn cdb16(op: u8, b1: u8, lba: u64, len: u32) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0] = op;
        c[1] = b1;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[10..14].copy_from_slice(&len.to_be_bytes());
        c
    }

    fn caw(lba: u64, blocks: u8, fua: bool) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0] = 0x89;
        c[1] = if fua { 0x08 } else { 0 };
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[13] = blocks;
        c
    }

    fn unmap_list(descriptors: &[(u64, u32)]) -> Vec<u8> {
        let bd = (descriptors.len() * 16) as u16;
        let mut list = Vec::new();
        list.extend_from_slice(&(bd + 6).to_be_bytes());
        list.extend_from_slice(&bd.to_be_bytes());
        list.extend_from_slice(&[0; 4]);
        for &(lba, blocks) in descriptors {
            list.extend_from_slice(&lba.to_be_bytes());
            list.extend_from_slice(&blocks.to_be_bytes());
            list.extend_from_slice(&[0; 4]);
        }
        list
    }

    fn unmap_cdb(len: u16) -> [u8; 10] {
        cdb10(0x42, 0, 0, len)
    }

    fn check(error: ScsiError) -> Response {
        error.to_response(SenseFormat::Fixed)
    }

    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0; len];
        Rng::new(seed).fill(&mut v);
        v
    }

    // -- configuration ----------------------------------------------------------

    #[test]
    fn config_defaults() {
        let geometry = Geometry {
            block_size: 4096,
            num_blocks: 1 << 20,
        };
        let config = LunConfig::new(geometry, caps());
        assert_eq!(config.max_transfer_bytes, 256 * 4096 / 256 * 256); // 1 MiB
        assert_eq!(config.scratch_chunk_bytes, 256 * 1024);
        assert_eq!(config.num_blocks, 1 << 20);
        assert!(config.write_cache);
        let unit = config.validate().unwrap();
        assert_eq!(unit.serial, "0000000000000001");
        assert_eq!(&unit.vendor, b"DATAPLN ");
        assert_eq!(unit.max_transfer_blocks, 256);
        // A bdev with a small transfer limit lowers the defaults.
        let small = LunConfig::new(
            geometry,
            Capabilities {
                max_transfer_blocks: 8,
                ..caps()
            },
        );
        assert_eq!(small.max_transfer_bytes, 8 * 4096);
        assert_eq!(small.scratch_chunk_bytes, 8 * 4096);
        assert!(small.validate().is_ok());
        // Null bdev: no volatile cache, so no write cache.
        let null = bdev::null::NullBdev::new("n", 512, 1000).unwrap();
        let config = LunConfig::for_bdev(&null);
        assert!(!config.write_cache);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn config_validation() {
        let base = LunConfig::new(
            Geometry {
                block_size: 512,
                num_blocks: 1000,
            },
            caps(),
        );
        type Change = Box<dyn Fn(&mut LunConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            ("vendor", Box::new(|c| c.vendor = "TOO LONG V".into())),
            ("vendor", Box::new(|c| c.vendor = String::new())),
            ("product", Box::new(|c| c.product = "x".repeat(17))),
            ("revision", Box::new(|c| c.revision = "é".into())),
            ("serial", Box::new(|c| c.serial = "has space".into())),
            ("serial", Box::new(|c| c.serial = "s".repeat(129))),
            ("ieee_company_id", Box::new(|c| c.ieee_company_id = 1 << 24)),
            ("num_blocks", Box::new(|c| c.num_blocks = 1001)),
            ("num_blocks", Box::new(|c| c.num_blocks = 0)),
            (
                "block size",
                Box::new(|c| c.bdev_geometry.block_size = 1000),
            ),
            (
                "write_cache",
                Box::new(|c| {
                    c.capabilities.volatile_cache = false;
                    c.write_cache = true;
                }),
            ),
            (
                "max_transfer_bytes",
                Box::new(|c| c.max_transfer_bytes = 1000),
            ),
            (
                "max_transfer_bytes",
                Box::new(|c| c.max_transfer_bytes = 257 * 512),
            ),
            (
                "max_compare_write_blocks",
                Box::new(|c| c.max_compare_write_blocks = 0),
            ),
            (
                "max_compare_write_blocks",
                Box::new(|c| {
                    c.max_transfer_bytes = 4096;
                    c.max_compare_write_blocks = 9;
                }),
            ),
            (
                "max_unmap_descriptors",
                Box::new(|c| c.max_unmap_descriptors = 0),
            ),
            (
                "max_unmap_descriptors",
                Box::new(|c| c.max_unmap_descriptors = 4096),
            ),
            (
                "max_unmap_lba_count",
                Box::new(|c| c.max_unmap_lba_count = 0),
            ),
            (
                "max_write_same_blocks",
                Box::new(|c| c.max_write_same_blocks = 0),
            ),
            ("max_tasks", Box::new(|c| c.max_tasks = 0)),
            ("max_tasks", Box::new(|c| c.max_tasks = MAX_TASKS + 1)),
            (
                "scratch_chunk_bytes",
                Box::new(|c| c.scratch_chunk_bytes = 1000),
            ),
            (
                "scratch_chunk_bytes",
                Box::new(|c| c.scratch_chunk_bytes = 257 * 512),
            ),
            (
                "scratch_bytes",
                Box::new(|c| c.scratch_bytes = c.scratch_chunk_bytes - 1),
            ),
        ];
        for (field, change) in cases {
            let mut config = base.clone();
            change(&mut config);
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(field), "{field}: {error}");
            let (port, _end) = port_pair(4).unwrap();
            assert!(Lun::new(config, port).is_err());
        }
        // Unmap limits do not matter when the bdev cannot unmap.
        let mut config = base.clone();
        config.capabilities.unmap = false;
        config.max_unmap_descriptors = 0;
        let unit = config.validate().unwrap();
        assert_eq!(
            (unit.max_unmap_descriptors, unit.max_unmap_lba_count),
            (0, 0)
        );
    }

    // -- emulated commands through the unit --------------------------------------

    #[test]
    fn inquiry_through_split_buffer_and_truncation() {
        let mut h = Harness::new();
        let mut buf = [0xEEu8; 64];
        h.submit_split(3, &[0x12, 0, 0, 0, 0xFF, 0], &mut buf, &[1, 7, 20]);
        h.run();
        assert_eq!(h.take(3), Response::good(36));
        let mut expected = vec![0, 0, 6, 0x12, 31, 0, 0, 2];
        expected.extend_from_slice(b"DATAPLN DATAPLANE DISK  0001");
        assert_eq!(&buf[..36], &expected[..]);
        assert_eq!(buf[36], 0xEE);
        // Data buffer shorter than the allocation length and the data.
        let mut small = [0u8; 10];
        assert_eq!(
            h.exec(&[0x12, 0, 0, 0, 0xFF, 0], &mut small),
            Response::good(10)
        );
        assert_eq!(&small[..], &expected[..10]);
        // Allocation length shorter than both.
        let mut buf = [0u8; 64];
        assert_eq!(h.exec(&[0x12, 0, 0, 0, 4, 0], &mut buf), Response::good(4));
        // Serial number derived from nothing else: the configured lu_id.
        let mut buf = [0u8; 64];
        assert_eq!(
            h.exec(&[0x12, 1, 0x80, 0, 64, 0], &mut buf),
            Response::good(20)
        );
        assert_eq!(&buf[..20], b"\x00\x80\x00\x101122334455667788");
        // No buffer at all.
        assert_eq!(
            h.exec(&[0x12, 0, 0, 0, 0xFF, 0], &mut []),
            Response::good(0)
        );
    }

    #[test]
    fn read_capacity_through_unit_reflects_exposed_blocks() {
        let mut h = Harness::with(caps(), 16, 1, |c| c.num_blocks = 1000);
        let mut buf = [0u8; 8];
        assert_eq!(
            h.exec(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &mut buf),
            Response::good(8)
        );
        assert_eq!(buf, [0, 0, 0x03, 0xE7, 0, 0, 2, 0]);
        let mut buf = [0u8; 32];
        let mut rc16 = cdb16(0x9E, 0x10, 0, 32);
        assert_eq!(h.exec(&rc16, &mut buf), Response::good(32));
        assert_eq!(
            &buf[..16],
            [0, 0, 0, 0, 0, 0, 0x03, 0xE7, 0, 0, 2, 0, 0x10, 0, 0xC0, 0]
        );
        rc16[13] = 0;
        assert_eq!(h.exec(&rc16, &mut buf), Response::good(0));
        // The range check uses the exposed size.
        assert_eq!(
            h.exec(&cdb10(0x28, 0, 1000, 1), &mut [0; 512]),
            check(ScsiError::LbaOutOfRange)
        );
    }

    #[test]
    fn mode_select_switches_sense_format_and_write_cache() {
        let mut h = Harness::new();
        let bad = [0xFFu8, 0, 0, 0, 0, 0];
        assert_eq!(
            h.exec(&bad, &mut []).sense_bytes(),
            [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0]
        );
        // Read the current control page and set D_SENSE.
        let mut page = [0u8; 16];
        assert_eq!(
            h.exec(&[0x1A, 0x08, 0x0A, 0, 16, 0], &mut page),
            Response::good(16)
        );
        let mut list = page;
        list[0] = 0;
        list[4 + 2] |= 0x04;
        assert_eq!(
            h.exec(&[0x15, 0x10, 0, 0, 16, 0], &mut list),
            Response::good(0)
        );
        assert_eq!(h.lun.sense_format(), SenseFormat::Descriptor);
        assert_eq!(
            h.exec(&bad, &mut []).sense_bytes(),
            [0x72, 5, 0x20, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            h.exec(&cdb10(0x28, 0x20, 0, 1), &mut []).sense_bytes(),
            [0x72, 5, 0x24, 0, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xCF, 0, 1, 0]
        );
        // Turn the write cache off: writes become FUA.
        let mut caching = [0u8; 24];
        assert_eq!(
            h.exec(&[0x1A, 0x08, 0x08, 0, 24, 0], &mut caching),
            Response::good(24)
        );
        caching[0] = 0;
        caching[4 + 2] &= !0x04;
        assert_eq!(
            h.exec(&[0x15, 0x10, 0, 0, 24, 0], &mut caching),
            Response::good(0)
        );
        assert!(!h.lun.mode().current.write_cache);
        h.disk.clear_log();
        assert_eq!(
            h.exec(&cdb10(0x2A, 0, 5, 1), &mut [1; 512]),
            Response::good(0)
        );
        assert!(h.disk.log()[0].fua);
        // A parameter list shorter than the CDB says: INVALID FIELD IN CDB.
        assert_eq!(
            h.exec(&[0x15, 0x10, 0, 0, 24, 0], &mut [0; 20])
                .sense_bytes(),
            [0x72, 5, 0x24, 0, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xC0, 0, 4, 0]
        );
        // A bad list changes nothing and reports the field.
        let mut list = [0u8; 16];
        list[4..16].copy_from_slice(&page[4..16]);
        list[4 + 3] = 0;
        assert_eq!(
            h.exec(&[0x15, 0x10, 0, 0, 16, 0], &mut list).sense_bytes(),
            [0x72, 5, 0x26, 0, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0x8C, 0, 7, 0]
        );
        assert_eq!(h.lun.sense_format(), SenseFormat::Descriptor);
    }

    #[test]
    fn descriptor_sense_by_configuration() {
        let mut h = Harness::with(caps(), 16, 1, |c| c.sense_format = SenseFormat::Descriptor);
        assert_eq!(
            h.exec(&cdb10(0x28, 0, 4096, 1), &mut [0; 512])
                .sense_bytes(),
            [0x72, 5, 0x21, 0, 0, 0, 0, 0]
        );
        let mut page = [0u8; 16];
        assert_eq!(
            h.exec(&[0x1A, 0x08, 0x0A, 0, 16, 0], &mut page),
            Response::good(16)
        );
        assert_eq!(page[4 + 2], 0x04);
    }

    #[test]
    fn request_sense_and_simple_commands() {
        let mut h = Harness::new();
        let mut buf = [0xEEu8; 32];
        assert_eq!(
            h.exec(&[0x03, 0, 0, 0, 32, 0], &mut buf),
            Response::good(18)
        );
        assert_eq!(
            &buf[..18],
            [0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(h.exec(&[0, 0, 0, 0, 0, 0], &mut []), Response::good(0));
        assert_eq!(h.exec(&[0x1B, 1, 0, 0, 1, 0], &mut []), Response::good(0));
        assert_eq!(
            h.exec(&[0x1B, 0, 0, 0, 3, 0], &mut []),
            check(ScsiError::cdb_bit(4, 1))
        );
        assert_eq!(h.exec(&[0x1E, 0, 0, 0, 1, 0], &mut []), Response::good(0));
        assert!(h.disk.log().is_empty());
    }

    // -- media commands ------------------------------------------------------------

    #[test]
    fn write_then_read_with_fua_and_split_buffers() {
        let mut h = Harness::new();
        let data = pattern(4 * 512, 7);
        let mut out = data.clone();
        h.submit_split(1, &cdb10(0x2A, 0x08, 100, 4), &mut out, &[100, 513, 1500]);
        h.run();
        assert_eq!(h.take(1), Response::good(0));
        assert_eq!(h.disk.blocks(100, 4), data);
        let mut back = vec![0u8; 4 * 512];
        h.submit_split(2, &cdb16(0x88, 0, 100, 4), &mut back, &[1, 2, 2047]);
        h.run();
        assert_eq!(h.take(2), Response::good(2048));
        assert_eq!(back, data);
        let log = h.disk.log();
        assert_eq!(
            log.iter()
                .map(|l| (l.op, l.lba, l.blocks, l.fua))
                .collect::<Vec<_>>(),
            [(IoOp::Write, 100, 4, true), (IoOp::Read, 100, 4, false)]
        );
        // READ (6) with 0 = 256 blocks and WRITE (12).
        let mut big = vec![0u8; 256 * 512];
        assert_eq!(
            h.exec(&[0x08, 0, 0, 0, 0, 0], &mut big),
            Response::good(256 * 512)
        );
        let mut w12 = [0u8; 12];
        w12[0] = 0xAA;
        w12[5] = 9;
        w12[9] = 1;
        assert_eq!(h.exec(&w12, &mut [0x5A; 512]), Response::good(0));
        assert_eq!(h.disk.blocks(9, 1), vec![0x5A; 512]);
        assert!(!h.disk.log().last().unwrap().fua);
    }

    #[test]
    fn zero_length_transfers_do_no_io() {
        let mut h = Harness::new();
        for cdb in [
            cdb10(0x28, 0, 5, 0),
            cdb10(0x2A, 0, 5, 0),
            cdb10(0x2E, 0x02, 5, 0),
            cdb10(0x2F, 0x02, 5, 0),
        ] {
            assert_eq!(h.exec(&cdb, &mut []), Response::good(0));
        }
        assert_eq!(h.exec(&caw(5, 0, false), &mut []), Response::good(0));
        assert_eq!(h.exec(&unmap_cdb(0), &mut []), Response::good(0));
        assert_eq!(
            h.exec(&unmap_cdb(8), &mut unmap_list(&[])),
            Response::good(0)
        );
        assert_eq!(
            h.exec(&unmap_cdb(24), &mut unmap_list(&[(7, 0)])),
            Response::good(0)
        );
        assert!(h.disk.log().is_empty());
        // But the LBA is still checked.
        assert_eq!(
            h.exec(&cdb10(0x28, 0, 4096, 0), &mut []),
            check(ScsiError::LbaOutOfRange)
        );
    }

    #[test]
    fn short_read_buffer_reads_whole_blocks_that_fit() {
        let mut h = Harness::new();
        let data = pattern(8 * 512, 3);
        h.disk.write_blocks(10, &data);
        let mut buf = vec![0xEEu8; 3 * 512 + 100];
        assert_eq!(
            h.exec(&cdb10(0x28, 0, 10, 8), &mut buf),
            Response::good(3 * 512)
        );
        assert_eq!(&buf[..3 * 512], &data[..3 * 512]);
        assert_eq!(&buf[3 * 512..], &[0xEE; 100][..]);
        assert_eq!(h.disk.log()[0].blocks, 3);
        // Less than a block: nothing.
        let mut tiny = [0xEEu8; 100];
        assert_eq!(h.exec(&cdb10(0x28, 0, 10, 8), &mut tiny), Response::good(0));
        assert_eq!(tiny, [0xEE; 100]);
        // A longer buffer reads only the CDB's blocks.
        let mut long = vec![0xEEu8; 4 * 512];
        assert_eq!(
            h.exec(&cdb10(0x28, 0, 10, 2), &mut long),
            Response::good(1024)
        );
        assert_eq!(&long[1024..], &vec![0xEE; 1024][..]);
    }

    #[test]
    fn short_write_buffers_are_rejected_before_any_io() {
        let mut h = Harness::new();
        let cases: Vec<(Vec<u8>, usize, Response)> = vec![
            (
                cdb10(0x2A, 0, 0, 2).to_vec(),
                1023,
                check(ScsiError::cdb_byte(7)),
            ),
            (
                vec![0x0A, 0, 0, 0, 2, 0],
                512,
                check(ScsiError::cdb_byte(4)),
            ),
            (
                cdb16(0x8A, 0, 0, 2).to_vec(),
                0,
                check(ScsiError::cdb_byte(10)),
            ),
            (
                cdb10(0x2E, 0, 0, 2).to_vec(),
                1000,
                check(ScsiError::cdb_byte(7)),
            ),
            (
                cdb10(0x2F, 0x02, 0, 2).to_vec(),
                1000,
                check(ScsiError::cdb_byte(7)),
            ),
            (
                cdb10(0x2F, 0x06, 0, 2).to_vec(),
                511,
                check(ScsiError::cdb_byte(7)),
            ),
            (
                caw(0, 2, false).to_vec(),
                2047,
                check(ScsiError::cdb_byte(13)),
            ),
            (
                cdb10(0x41, 0, 0, 4).to_vec(),
                511,
                check(ScsiError::InvalidFieldInCdb(None)),
            ),
            (unmap_cdb(24).to_vec(), 23, check(ScsiError::cdb_byte(7))),
        ];
        for (cdb, len, expected) in cases {
            let mut buf = vec![0x77u8; len];
            assert_eq!(h.exec(&cdb, &mut buf), expected, "{cdb:02x?}");
        }
        assert!(h.disk.log().is_empty());
        // VERIFY BYTCHK=0 and WRITE SAME with NDOB need no buffer.
        assert_eq!(h.exec(&cdb10(0x2F, 0, 0, 2), &mut []), Response::good(0));
        assert_eq!(h.exec(&cdb16(0x93, 0x01, 0, 2), &mut []), Response::good(0));
    }

    #[test]
    fn transfer_limit_is_enforced() {
        let mut h = Harness::new();
        let mut buf = vec![0u8; 257 * 512];
        assert_eq!(
            h.exec(&cdb10(0x28, 0, 0, 257), &mut buf),
            check(ScsiError::cdb_byte(7))
        );
        assert_eq!(
            h.exec(&cdb16(0x8F, 0, 0, 257), &mut buf),
            check(ScsiError::cdb_byte(10))
        );
        assert_eq!(
            h.exec(&cdb10(0x28, 0, 0, 256), &mut buf),
            Response::good(256 * 512)
        );
    }

    #[test]
    fn read_only_unit_protects_writes() {
        let mut h = Harness::with(caps(), 16, 1, |c| c.read_only = true);
        let mut buf = vec![0u8; 512];
        for cdb in [
            cdb10(0x2A, 0, 0, 1).to_vec(),
            cdb10(0x2E, 0, 0, 1).to_vec(),
            cdb10(0x41, 0, 0, 1).to_vec(),
            unmap_cdb(24).to_vec(),
            caw(0, 1, false).to_vec(),
            vec![0x0A, 0, 0, 0, 1, 0],
        ] {
            assert_eq!(
                h.exec(&cdb, &mut buf).sense_bytes(),
                [0x70, 0, 7, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x27, 0, 0, 0, 0, 0]
            );
        }
        assert_eq!(h.exec(&cdb10(0x28, 0, 0, 1), &mut buf), Response::good(512));
        let mut mode = [0u8; 4];
        assert_eq!(
            h.exec(&[0x1A, 0x08, 0x3F, 0, 4, 0], &mut mode),
            Response::good(4)
        );
        assert_eq!(mode[2], 0x90);
    }

    #[test]
    fn synchronize_cache_flushes() {
        let mut h = Harness::new();
        assert_eq!(h.exec(&cdb10(0x35, 0x02, 0, 0), &mut []), Response::good(0));
        assert_eq!(h.exec(&cdb16(0x91, 0, 8, 16), &mut []), Response::good(0));
        assert_eq!(h.exec(&cdb16(0x91, 0, 8, 0), &mut []), Response::good(0));
        assert_eq!(
            h.disk
                .log()
                .iter()
                .map(|l| (l.op, l.lba, l.blocks))
                .collect::<Vec<_>>(),
            [
                (IoOp::Flush, 0, 0),
                (IoOp::Flush, 8, 16),
                (IoOp::Flush, 0, 0)
            ]
        );
        // IMMED is ignored: GOOD only after the flush completed.
        h.disk.set_hold(true);
        h.submit(0, &cdb10(0x35, 0x02, 0, 0), &mut []);
        for _ in 0..10 {
            h.step();
        }
        assert!(h.responses.is_empty());
        h.disk.set_hold(false);
        h.run();
        assert_eq!(h.take(0), Response::good(0));
        // A flush error is reported.
        h.disk.fault(IoOp::Flush, 0, u64::MAX, IoError::Write(5));
        assert_eq!(
            h.exec(&cdb10(0x35, 0, 0, 0), &mut []),
            check(ScsiError::WriteError)
        );
        // Without a volatile cache there is nothing to flush.
        let mut h = Harness::with(
            Capabilities {
                volatile_cache: false,
                ..caps()
            },
            16,
            1,
            |_| {},
        );
        assert_eq!(h.exec(&cdb10(0x35, 0, 0, 0), &mut []), Response::good(0));
        assert!(h.disk.log().is_empty());
    }

    #[test]
    fn unmap_splits_descriptors_and_checks_the_list() {
        let mut h = Harness::new();
        h.disk.write_blocks(0, &vec![0xFF; 4096 * 512]);
        let mut list = unmap_list(&[(10, 100), (500, 0), (1000, 64), (2000, 1)]);
        assert_eq!(
            h.exec(&unmap_cdb(list.len() as u16), &mut list),
            Response::good(0)
        );
        let mut ops: Vec<_> = h
            .disk
            .log()
            .iter()
            .map(|l| (l.op, l.lba, l.blocks))
            .collect();
        ops.sort_by_key(|o| o.1);
        assert_eq!(
            ops,
            [
                (IoOp::Unmap, 10, 64),
                (IoOp::Unmap, 74, 36),
                (IoOp::Unmap, 1000, 64),
                (IoOp::Unmap, 2000, 1)
            ]
        );
        assert_eq!(h.disk.blocks(10, 100), vec![0; 100 * 512]);
        assert_eq!(h.disk.blocks(110, 1), vec![0xFF; 512]);
        h.disk.clear_log();
        let cases: Vec<(Vec<u8>, u16, Response)> = vec![
            (vec![0; 7], 7, check(ScsiError::ParameterListLengthError)),
            (
                unmap_list(&[(4095, 2)]),
                24,
                check(ScsiError::LbaOutOfRange),
            ),
            (
                unmap_list(&[(0, 1); 9]),
                8 + 9 * 16,
                check(ScsiError::param_byte(2)),
            ),
            (
                unmap_list(&[(0, 2000), (3000, 49)]),
                40,
                check(ScsiError::param_byte(32)),
            ),
            (
                unmap_list(&[(0, 1)])[..20].to_vec(),
                20,
                check(ScsiError::ParameterListLengthError),
            ),
        ];
        for (mut list, len, expected) in cases {
            assert_eq!(h.exec(&unmap_cdb(len), &mut list), expected);
        }
        assert!(h.disk.log().is_empty());
        assert_eq!(
            h.exec(&cdb10(0x42, 1, 0, 24), &mut unmap_list(&[(0, 1)])),
            check(ScsiError::cdb_bit(1, 0))
        );
        // A bdev that cannot unmap: the command does not exist.
        let mut h = Harness::with(
            Capabilities {
                unmap: false,
                ..caps()
            },
            16,
            1,
            |_| {},
        );
        assert_eq!(
            h.exec(&unmap_cdb(24), &mut unmap_list(&[(0, 1)])),
            check(ScsiError::InvalidCommandOperationCode)
        );
    }

    #[test]
    fn write_same_chooses_the_right_operation() {
        let mut h = Harness::new();
        h.disk.write_blocks(0, &vec![0xFF; 4096 * 512]);
        let ops = |h: &Harness| {
            let mut v: Vec<_> = h
                .disk
                .log()
                .iter()
                .map(|l| (l.op, l.lba, l.blocks))
                .collect();
            v.sort_by_key(|o| o.1);
            h.disk.clear_log();
            v
        };
        // Zero block with UNMAP on an LBPRZ device: Unmap.
        assert_eq!(
            h.exec(&cdb10(0x41, 0x08, 0, 100), &mut [0; 512]),
            Response::good(0)
        );
        assert_eq!(ops(&h), [(IoOp::Unmap, 0, 64), (IoOp::Unmap, 64, 36)]);
        // NDOB + UNMAP: Unmap.
        assert_eq!(
            h.exec(&cdb16(0x93, 0x09, 200, 10), &mut []),
            Response::good(0)
        );
        assert_eq!(ops(&h), [(IoOp::Unmap, 200, 10)]);
        // Zero block without UNMAP: WriteZeroes, FUA-free while WCE = 1.
        assert_eq!(
            h.exec(&cdb16(0x93, 0, 300, 70), &mut [0; 512]),
            Response::good(0)
        );
        assert_eq!(
            ops(&h),
            [(IoOp::WriteZeroes, 300, 64), (IoOp::WriteZeroes, 364, 6)]
        );
        assert_eq!(h.disk.blocks(300, 70), vec![0; 70 * 512]);
        // A pattern: written in scratch-chunk pieces (8 blocks).
        let block = pattern(512, 9);
        let mut buf = block.clone();
        buf.extend_from_slice(&[0xEE; 100]); // a longer buffer: its first block is used
        assert_eq!(
            h.exec(&cdb10(0x41, 0x08, 1000, 20), &mut buf),
            Response::good(0)
        );
        assert_eq!(
            ops(&h),
            [
                (IoOp::Write, 1000, 8),
                (IoOp::Write, 1008, 8),
                (IoOp::Write, 1016, 4)
            ]
        );
        assert_eq!(h.disk.blocks(1000, 20), block.repeat(20));
        assert_eq!(h.disk.blocks(1020, 1), vec![0xFF; 512]);
        // Limits and fields.
        assert_eq!(
            h.exec(&cdb10(0x41, 0, 0, 0), &mut [0; 512]),
            check(ScsiError::cdb_byte(7))
        );
        assert_eq!(
            h.exec(&cdb16(0x93, 0, 0, 1025), &mut [0; 512]),
            check(ScsiError::cdb_byte(10))
        );
        assert_eq!(
            h.exec(&cdb16(0x93, 0x10, 0, 1), &mut [0; 512]),
            check(ScsiError::cdb_bit(1, 4))
        );
        assert_eq!(
            h.exec(&cdb16(0x93, 0, 4090, 7), &mut [0; 512]),
            check(ScsiError::LbaOutOfRange)
        );
        assert!(ops(&h).is_empty());
    }

    #[test]
    fn write_same_without_unmap_or_write_zeroes_writes_zeroes() {
        let caps = Capabilities {
            unmap: false,
            unmap_reads_zeroes: false,
            write_zeroes: false,
            ..caps()
        };
        let mut h = Harness::with(caps, 16, 1, |_| {});
        h.disk.write_blocks(0, &vec![0xFF; 64 * 512]);
        assert_eq!(
            h.exec(&cdb16(0x93, 0x09, 4, 12), &mut []),
            Response::good(0)
        );
        assert_eq!(h.disk.blocks(4, 12), vec![0; 12 * 512]);
        assert_eq!(h.disk.blocks(3, 1), vec![0xFF; 512]);
        assert!(h.disk.log().iter().all(|l| l.op == IoOp::Write));
        // LBPRZ = 0 with unmap: UNMAP=1 with zeroes must still read zeroes.
        let caps = Capabilities {
            unmap_reads_zeroes: false,
            ..super::tests::caps()
        };
        let mut h = Harness::with(caps, 16, 1, |_| {});
        assert_eq!(
            h.exec(&cdb10(0x41, 0x08, 0, 4), &mut [0; 512]),
            Response::good(0)
        );
        assert!(h.disk.log().iter().all(|l| l.op == IoOp::WriteZeroes));
    }

    #[test]
    fn write_through_mode_makes_fills_fua() {
        let mut h = Harness::with(caps(), 16, 1, |c| c.write_cache = false);
        assert_eq!(
            h.exec(&cdb16(0x93, 0, 0, 20), &mut [3; 512]),
            Response::good(0)
        );
        assert_eq!(
            h.exec(&cdb16(0x93, 0, 0, 20), &mut [0; 512]),
            Response::good(0)
        );
        assert_eq!(
            h.exec(&cdb16(0x93, 0x08, 0, 20), &mut [0; 512]),
            Response::good(0)
        );
        let log = h.disk.log();
        assert!(log.iter().filter(|l| l.op != IoOp::Unmap).all(|l| l.fua));
        assert!(log.iter().filter(|l| l.op == IoOp::Unmap).all(|l| !l.fua));
        assert!(log.iter().any(|l| l.op == IoOp::Unmap));
    }

    #[test]
    fn compare_and_write_matches_and_miscompares() {
        let mut h = Harness::new();
        let old = pattern(4 * 512, 11);
        let new = pattern(4 * 512, 12);
        h.disk.write_blocks(40, &old);
        // Matching: the second half is written, FUA as asked.
        let mut buf = old.clone();
        buf.extend_from_slice(&new);
        assert_eq!(h.exec(&caw(40, 4, true), &mut buf), Response::good(0));
        assert_eq!(h.disk.blocks(40, 4), new);
        let log = h.disk.log();
        assert_eq!(
            log.iter()
                .map(|l| (l.op, l.lba, l.blocks, l.fua))
                .collect::<Vec<_>>(),
            [(IoOp::Read, 40, 4, false), (IoOp::Write, 40, 4, true)]
        );
        h.disk.clear_log();
        // Miscomparing at byte 1234 of the verify data: nothing written.
        let mut buf = new.clone();
        buf[1234] ^= 0x40;
        buf.extend_from_slice(&old);
        let r = h.exec(&caw(40, 4, false), &mut buf);
        assert_eq!(r, check(ScsiError::Miscompare { offset: 1234 }));
        assert_eq!(
            r.sense_bytes(),
            [0xF0, 0, 0x0E, 0, 0, 0x04, 0xD2, 10, 0, 0, 0, 0, 0x1D, 0, 0, 0, 0, 0]
        );
        assert_eq!(h.disk.blocks(40, 4), new);
        assert_eq!(h.disk.log().len(), 1);
        // Larger than a scratch chunk (8 blocks): compared in pieces.
        let old = pattern(16 * 512, 13);
        h.disk.write_blocks(100, &old);
        let mut buf = old.clone();
        buf[9 * 512 + 3] ^= 1;
        buf.extend_from_slice(&pattern(16 * 512, 14));
        assert_eq!(
            h.exec(&caw(100, 16, false), &mut buf),
            check(ScsiError::Miscompare {
                offset: 9 * 512 + 3
            })
        );
        assert_eq!(h.disk.blocks(100, 16), old);
    }

    #[test]
    fn compare_and_write_runs_alone() {
        let mut h = Harness::with(caps(), 16, 5, |_| {});
        let old = pattern(2 * 512, 1);
        h.disk.write_blocks(2000, &old);
        let mut caw_buf = old.clone();
        caw_buf.extend_from_slice(&pattern(2 * 512, 2));
        let mut reads: Vec<Vec<u8>> = (0..12).map(|_| vec![0u8; 8 * 512]).collect();
        for (i, buf) in reads.iter_mut().enumerate().take(6) {
            h.submit(i as u32 + 1, &cdb10(0x28, 0, i as u32 * 8, 8), buf);
        }
        h.submit(0, &caw(2000, 2, false), &mut caw_buf);
        for (i, buf) in reads.iter_mut().enumerate().skip(6) {
            h.submit(i as u32 + 1, &cdb10(0x28, 0, i as u32 * 8, 8), buf);
        }
        h.run();
        for slot in 0..13 {
            assert_eq!(h.take(slot).status, status::GOOD);
        }
        let log = h.disk.log();
        let read = log
            .iter()
            .position(|l| l.lba == 2000 && l.op == IoOp::Read)
            .unwrap();
        let write = log
            .iter()
            .position(|l| l.lba == 2000 && l.op == IoOp::Write)
            .unwrap();
        // Nothing else was in the bdev when the compare started, the write
        // followed it directly, and the earlier reads all came first.
        assert_eq!(log[read].in_flight, 0);
        assert_eq!(write, read + 1);
        assert_eq!(log[write].in_flight, 0);
        assert_eq!(read, 6);
        assert_eq!(log.len(), 14);
    }

    #[test]
    fn verify_byte_check_modes() {
        let mut h = Harness::new();
        let data = pattern(20 * 512, 21);
        h.disk.write_blocks(50, &data);
        // BYTCHK 01b, matching and miscomparing (across scratch pieces).
        let mut buf = data.clone();
        assert_eq!(
            h.exec(&cdb10(0x2F, 0x02, 50, 20), &mut buf),
            Response::good(0)
        );
        buf[17 * 512 + 100] ^= 0xFF;
        assert_eq!(
            h.exec(&cdb16(0x8F, 0x02, 50, 20), &mut buf),
            check(ScsiError::Miscompare {
                offset: 17 * 512 + 100
            })
        );
        // BYTCHK 00b: medium verification reads the range.
        h.disk.clear_log();
        assert_eq!(h.exec(&cdb10(0x2F, 0, 50, 20), &mut []), Response::good(0));
        assert_eq!(h.disk.log().iter().map(|l| l.blocks).sum::<u32>(), 20);
        h.disk.fault(IoOp::Read, 60, 61, IoError::Read(5));
        assert_eq!(
            h.exec(&cdb10(0x2F, 0, 50, 20), &mut []),
            check(ScsiError::UnrecoveredReadError)
        );
        // BYTCHK 11b: one block compared with every block of the range.
        let block = pattern(512, 22);
        h.disk.write_blocks(200, &block.repeat(12));
        let mut one = block.clone();
        assert_eq!(
            h.exec(&cdb10(0x2F, 0x06, 200, 12), &mut one),
            Response::good(0)
        );
        let mut other = block.clone();
        other[0] ^= 1;
        h.disk.write_blocks(210, &other);
        assert_eq!(
            h.exec(&cdb16(0x8F, 0x06, 200, 12), &mut one),
            check(ScsiError::Miscompare { offset: 10 * 512 })
        );
        // BYTCHK 10b is reserved.
        assert_eq!(
            h.exec(&cdb10(0x2F, 0x04, 0, 1), &mut one),
            check(ScsiError::cdb_bit(1, 2))
        );
    }

    #[test]
    fn write_and_verify() {
        let mut h = Harness::new();
        let data = pattern(10 * 512, 31);
        let mut buf = data.clone();
        assert_eq!(
            h.exec(&cdb10(0x2E, 0x02, 300, 10), &mut buf),
            Response::good(0)
        );
        assert_eq!(h.disk.blocks(300, 10), data);
        let log = h.disk.log();
        assert_eq!(
            (log[0].op, log[0].fua, log[0].blocks),
            (IoOp::Write, true, 10)
        );
        assert_eq!(
            log[1..]
                .iter()
                .map(|l| (l.op, l.lba, l.blocks))
                .collect::<Vec<_>>(),
            [(IoOp::Read, 300, 8), (IoOp::Read, 308, 2)]
        );
        h.disk.clear_log();
        assert_eq!(
            h.exec(&cdb16(0x8E, 0, 400, 3), &mut buf[..3 * 512]),
            Response::good(0)
        );
        assert_eq!(h.disk.log().len(), 2);
        // A write error stops before the verification.
        h.disk.clear_log();
        h.disk.fault(IoOp::Write, 500, 501, IoError::Write(5));
        assert_eq!(
            h.exec(&cdb10(0x2E, 0x02, 500, 1), &mut buf[..512]),
            check(ScsiError::WriteError)
        );
        assert_eq!(h.disk.log().len(), 1);
        assert_eq!(
            h.exec(&cdb10(0x2E, 0x06, 0, 1), &mut buf[..512]),
            check(ScsiError::cdb_bit(1, 2))
        );
    }

    #[test]
    fn bdev_errors_map_to_sense() {
        let mut h = Harness::new();
        let cases = [
            (
                IoError::Read(5),
                IoOp::Read,
                check(ScsiError::UnrecoveredReadError),
            ),
            (IoError::Write(5), IoOp::Write, check(ScsiError::WriteError)),
            (
                IoError::OutOfRange,
                IoOp::Read,
                check(ScsiError::LbaOutOfRange),
            ),
            (
                IoError::Aborted,
                IoOp::Write,
                check(ScsiError::AbortedCommand),
            ),
            (
                IoError::NoResources,
                IoOp::Read,
                Response::with_status(status::BUSY),
            ),
            (
                IoError::Unsupported,
                IoOp::Write,
                check(ScsiError::InvalidCommandOperationCode),
            ),
            (IoError::TooLarge, IoOp::Read, check(ScsiError::cdb_byte(7))),
            (
                IoError::ShortBuffer,
                IoOp::Write,
                check(ScsiError::cdb_byte(7)),
            ),
        ];
        for (i, (error, op, expected)) in cases.into_iter().enumerate() {
            let lba = 10 * i as u32;
            h.disk.fault(op, u64::from(lba), u64::from(lba) + 1, error);
            let code = if op == IoOp::Read { 0x28 } else { 0x2A };
            assert_eq!(
                h.exec(&cdb10(code, 0, lba, 2), &mut [0; 1024]),
                expected,
                "{error:?}"
            );
        }
        assert_eq!(
            check(ScsiError::UnrecoveredReadError).sense_bytes(),
            [0x70, 0, 3, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x11, 0, 0, 0, 0, 0]
        );
        // READ (16) points at its own transfer length field.
        h.disk.fault(IoOp::Read, 900, 901, IoError::TooLarge);
        assert_eq!(
            h.exec(&cdb16(0x88, 0, 900, 1), &mut [0; 512]),
            check(ScsiError::cdb_byte(10))
        );
    }

    #[test]
    fn multi_request_command_waits_for_all_and_reports_first_error() {
        let mut h = Harness::with(caps(), 16, 3, |_| {});
        h.disk.state().shuffle = false;
        h.disk.fault(IoOp::WriteZeroes, 64, 65, IoError::Write(5));
        h.disk.fault(IoOp::WriteZeroes, 128, 129, IoError::Aborted);
        // 4 pieces of 64 blocks: the second fails first (FIFO completion).
        assert_eq!(
            h.exec(&cdb16(0x93, 0, 0, 256), &mut [0; 512]),
            check(ScsiError::WriteError)
        );
        assert_eq!(h.disk.log().len(), 4);
        assert_eq!(h.lun.outstanding_requests(), 0);
    }

    #[test]
    fn port_full_keeps_fifo_order() {
        let mut h = Harness::with(caps(), 2, 4, |_| {});
        let mut bufs: Vec<Vec<u8>> = (0..20).map(|_| vec![0u8; 512]).collect();
        for (i, buf) in bufs.iter_mut().enumerate() {
            h.submit(i as u32, &cdb10(0x28, 0, i as u32, 1), buf);
        }
        assert_eq!(h.lun.outstanding_requests(), 2);
        h.run();
        assert_eq!(h.responses.len(), 20);
        let lbas: Vec<u64> = h.disk.log().iter().map(|l| l.lba).collect();
        assert_eq!(lbas, (0..20).collect::<Vec<_>>());
        assert!(h.disk.log().iter().all(|l| l.in_flight < 2));
        assert!(h.lun.stats().head_blocked > 0);
    }

    #[test]
    fn scratch_exhaustion_waits_in_order_and_large_commands_work_in_pieces() {
        // One 8-block chunk for everyone.
        let mut h = Harness::with(caps(), 16, 6, |c| c.scratch_bytes = 4096);
        let data = pattern(64 * 512, 41);
        h.disk.write_blocks(0, &data);
        let mut bufs: Vec<Vec<u8>> = (0..6)
            .map(|i| data[i * 10 * 512..(i * 10 + 10) * 512].to_vec())
            .collect();
        bufs[3][5] ^= 1;
        for (i, buf) in bufs.iter_mut().enumerate() {
            h.submit(i as u32, &cdb10(0x2F, 0x02, i as u32 * 10, 10), buf);
        }
        let mut write = pattern(512, 42);
        h.submit(6, &cdb10(0x41, 0, 100, 40), &mut write);
        h.run();
        for slot in 0..6 {
            let expected = if slot == 3 {
                check(ScsiError::Miscompare { offset: 5 })
            } else {
                Response::good(0)
            };
            assert_eq!(h.take(slot), expected);
        }
        assert_eq!(h.take(6), Response::good(0));
        assert_eq!(h.disk.blocks(100, 40), write.repeat(40));
        assert!(h.lun.stats().scratch_waits >= 5);
        // The tasks got the chunk in submission order.
        let verify_order: Vec<u64> = h
            .disk
            .log()
            .iter()
            .filter(|l| l.op == IoOp::Read)
            .map(|l| l.lba / 10)
            .collect();
        let mut sorted = verify_order.clone();
        sorted.sort();
        assert_eq!(verify_order, sorted);
    }

    #[test]
    fn abort_before_the_bdev() {
        let mut h = Harness::with(caps(), 2, 7, |_| {});
        h.disk.set_hold(true);
        let mut bufs: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; 512]).collect();
        for (i, buf) in bufs.iter_mut().enumerate() {
            h.submit(i as u32, &cdb10(0x28, 0, i as u32, 1), buf);
        }
        h.step();
        // Slots 2 and 3 wait for port room; abort 2.
        h.lun.abort(2);
        h.lun.abort(2);
        h.lun.abort(99);
        h.step();
        assert_eq!(
            h.responses,
            [(2, Response::with_status(status::TASK_ABORTED))]
        );
        h.responses.clear();
        h.disk.set_hold(false);
        h.run();
        for slot in [0, 1, 3] {
            assert_eq!(h.take(slot), Response::good(512));
        }
        assert_eq!(
            h.disk.log().iter().map(|l| l.lba).collect::<Vec<_>>(),
            [0, 1, 3]
        );
        // A task waiting for scratch.
        let mut h = Harness::with(caps(), 16, 7, |c| c.scratch_bytes = 4096);
        h.disk.set_hold(true);
        let mut a = vec![0u8; 512];
        let mut b = vec![0u8; 512];
        h.submit(0, &cdb10(0x2F, 0x02, 0, 1), &mut a);
        h.submit(1, &cdb10(0x2F, 0x02, 1, 1), &mut b);
        h.lun.abort(1);
        h.step();
        assert_eq!(h.take(1), Response::with_status(status::TASK_ABORTED));
        h.disk.set_hold(false);
        h.run();
        assert_eq!(h.take(0), Response::good(0));
        assert_eq!(h.disk.log().len(), 1);
    }

    #[test]
    fn abort_after_the_bdev_waits_for_the_io() {
        let mut h = Harness::new();
        h.disk.set_hold(true);
        let mut buf = vec![9u8; 512];
        h.submit(5, &cdb10(0x2A, 0, 77, 1), &mut buf);
        h.step();
        h.lun.abort(5);
        for _ in 0..5 {
            h.step();
        }
        assert!(h.responses.is_empty());
        assert_eq!(h.lun.in_flight(), 1);
        h.disk.set_hold(false);
        h.run();
        assert_eq!(h.take(5), Response::with_status(status::TASK_ABORTED));
        // A multi-step command aborted mid-way issues no further steps.
        h.disk.clear_log();
        h.disk.set_hold(true);
        let mut buf = vec![0u8; 2 * 512];
        h.submit(6, &caw(10, 1, false), &mut buf);
        h.step();
        h.lun.abort(6);
        h.disk.set_hold(false);
        h.run();
        assert_eq!(h.take(6), Response::with_status(status::TASK_ABORTED));
        assert_eq!(
            h.disk.log().iter().map(|l| l.op).collect::<Vec<_>>(),
            [IoOp::Read]
        );
        // The slot is usable again.
        assert_eq!(h.exec(&[0, 0, 0, 0, 0, 0], &mut []), Response::good(0));
    }

    #[test]
    fn busy_and_out_of_range_slots_get_busy() {
        let mut h = Harness::new();
        h.disk.set_hold(true);
        let mut buf = vec![0u8; 512];
        h.submit(1, &cdb10(0x28, 0, 0, 1), &mut buf);
        h.submit(1, &[0, 0, 0, 0, 0, 0], &mut []);
        h.submit(32, &[0, 0, 0, 0, 0, 0], &mut []);
        assert_eq!(h.lun.in_flight(), 3);
        h.step();
        assert_eq!(
            h.responses,
            [
                (1, Response::with_status(status::BUSY)),
                (32, Response::with_status(status::BUSY))
            ]
        );
        h.responses.clear();
        h.disk.set_hold(false);
        h.run();
        assert_eq!(h.take(1), Response::good(512));
    }

    #[test]
    fn poll_delivers_at_most_max_in_completion_order() {
        let mut h = Harness::new();
        for slot in 0..5 {
            h.submit(slot, &[0, 0, 0, 0, 0, 0], &mut []);
        }
        let mut got = Vec::new();
        assert_eq!(h.lun.poll(2, &mut |s, _| got.push(s)), 2);
        assert_eq!(h.lun.poll(10, &mut |s, _| got.push(s)), 3);
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert_eq!(h.lun.in_flight(), 0);
    }

    #[test]
    fn lun_can_move_to_a_reactor_thread() {
        fn send<T: Send>() {}
        send::<Lun>();
    }

    #[test]
    fn stray_completions_are_ignored() {
        let mut h = Harness::new();
        h.lun.complete(IoCompletion {
            tag: 7,
            result: Ok(()),
        });
        h.lun.complete(IoCompletion {
            tag: tag(1000, 0),
            result: Ok(()),
        });
        assert_eq!(h.lun.stats().stray_completions, 2);
    }

    #[test]
    fn works_over_the_null_bdev() {
        let null = bdev::null::NullBdev::new("null", 4096, 1 << 16).unwrap();
        let config = LunConfig::for_bdev(&null);
        let (port, end) = port_pair(32).unwrap();
        let mut poller = BdevPoller::new("null", null.open_channel(32).unwrap(), 32);
        poller.attach(end).unwrap();
        let mut lun = Lun::new(config, port).unwrap();
        let mut buf = vec![0u8; 8 * 4096];
        // SAFETY: `buf` outlives the command, which completes below.
        unsafe { lun.submit(0, &cdb10(0x28, 0, 0, 8), &[IoVec::from_slice(&mut buf)]) };
        // SAFETY: as above.
        unsafe { lun.submit(1, &cdb10(0x35, 0, 0, 0), &[]) };
        let mut got = Vec::new();
        for _ in 0..10 {
            lun.flush();
            poller.poll();
            lun.poll(16, &mut |s, r| got.push((s, *r)));
        }
        got.sort_by_key(|g| g.0);
        assert_eq!(got, [(0, Response::good(8 * 4096)), (1, Response::good(0))]);
        assert_eq!(lun.unit().num_blocks, 1 << 16);
    }

    /// Runs one command on a unit over a real bdev.
    fn exec_on(lun: &mut Lun, poller: &mut BdevPoller, cdb: &[u8], buf: &mut [u8]) -> Response {
        // SAFETY: `buf` outlives the command, which completes in the loop.
        unsafe { lun.submit(0, cdb, &[IoVec::from_slice(buf)]) };
        let mut got = None;
        for _ in 0..1000 {
            lun.flush();
            poller.poll();
            lun.poll(1, &mut |_, r| got = Some(*r));
            if let Some(response) = got {
                return response;
            }
        }
        panic!("no response");
    }

    #[test]
    fn works_over_the_ram_bdev() {
        let ram = bdev::ram::RamBdev::new("ram", 512, 2048).unwrap();
        let mut config = LunConfig::for_bdev(&ram);
        config.max_compare_write_blocks = 8;
        let (port, end) = port_pair(32).unwrap();
        let mut poller = BdevPoller::new("ram", ram.open_channel(32).unwrap(), 32);
        poller.attach(end).unwrap();
        let mut lun = Lun::new(config, port).unwrap();
        let l = &mut lun;
        let p = &mut poller;
        let data = pattern(16 * 512, 51);
        assert_eq!(
            exec_on(l, p, &cdb10(0x2A, 0x08, 100, 16), &mut data.clone()),
            Response::good(0)
        );
        let mut back = vec![0u8; 16 * 512];
        assert_eq!(
            exec_on(l, p, &cdb16(0x88, 0, 100, 16), &mut back),
            Response::good(16 * 512)
        );
        assert_eq!(back, data);
        // VERIFY, COMPARE AND WRITE, WRITE SAME and UNMAP against real memory.
        assert_eq!(
            exec_on(l, p, &cdb10(0x2F, 0x02, 100, 16), &mut data.clone()),
            Response::good(0)
        );
        let mut caw_buf = data[..8 * 512].to_vec();
        caw_buf.extend_from_slice(&[0x33; 8 * 512]);
        assert_eq!(
            exec_on(l, p, &caw(100, 8, false), &mut caw_buf),
            Response::good(0)
        );
        assert_eq!(
            exec_on(l, p, &caw(100, 8, false), &mut caw_buf),
            check(ScsiError::Miscompare { offset: 0 })
        );
        let block = pattern(512, 52);
        assert_eq!(
            exec_on(l, p, &cdb16(0x93, 0, 200, 300), &mut block.clone()),
            Response::good(0)
        );
        assert_eq!(
            exec_on(l, p, &cdb10(0x2F, 0x06, 200, 300), &mut block.clone()),
            Response::good(0)
        );
        let mut list = unmap_list(&[(200, 300)]);
        assert_eq!(exec_on(l, p, &unmap_cdb(24), &mut list), Response::good(0));
        let mut zeroes = vec![0xEEu8; 300 * 512];
        assert_eq!(
            exec_on(l, p, &cdb10(0x28, 0, 200, 300), &mut zeroes),
            Response::good(300 * 512)
        );
        if lun.unit().lbprz() {
            assert!(zeroes.iter().all(|&b| b == 0));
        }
        assert_eq!(
            exec_on(&mut lun, &mut poller, &cdb10(0x35, 0, 0, 0), &mut []),
            Response::good(0)
        );
    }

    #[test]
    fn dropping_with_io_outstanding_does_not_free_memory_under_the_bdev() {
        let mut h = Harness::new();
        h.disk.set_hold(true);
        let mut buf = vec![0u8; 512];
        h.submit(0, &cdb10(0x2F, 0x02, 0, 1), &mut buf);
        h.step();
        let Harness { lun, poller, .. } = h;
        assert_eq!(lun.outstanding_requests(), 1);
        drop(lun);
        drop(poller);
    }

    // -- model-disk test ----------------------------------------------------------

    /// A command in flight in the model test.
    struct Pending {
        buf: Vec<u8>,
        /// Blocks the command may touch (no other command overlaps them).
        range: (u64, u64),
        expected: Response,
        /// Expected data-in bytes.
        data_in: Option<Vec<u8>>,
        what: String,
    }

    struct Model {
        data: Vec<u8>,
        bs: usize,
        blocks: u64,
    }

    impl Model {
        fn get(&self, lba: u64, blocks: u64) -> &[u8] {
            &self.data[lba as usize * self.bs..(lba + blocks) as usize * self.bs]
        }
        fn put(&mut self, lba: u64, bytes: &[u8]) {
            let at = lba as usize * self.bs;
            self.data[at..at + bytes.len()].copy_from_slice(bytes);
        }
    }

    fn overlaps(busy: &[(u64, u64)], lba: u64, end: u64) -> bool {
        busy.iter().any(|&(a, b)| lba < b && a < end)
    }

    /// Picks `len` free blocks, or None.
    fn pick(
        rng: &mut Rng,
        model: &Model,
        busy: &[(u64, u64)],
        len: u64,
        limit: u64,
    ) -> Option<u64> {
        for _ in 0..10 {
            let lba = rng.below(limit.min(model.blocks) - len + 1);
            if !overlaps(busy, lba, lba + len) {
                return Some(lba);
            }
        }
        None
    }

    fn rw_cdb(rng: &mut Rng, write: bool, lba: u64, blocks: u32, fua: bool) -> Vec<u8> {
        let small = lba < (1 << 21) && blocks <= 256;
        match rng.below(4) {
            0 if small => {
                let n = if blocks == 256 { 0 } else { blocks as u8 };
                vec![
                    if write { 0x0A } else { 0x08 },
                    (lba >> 16) as u8,
                    (lba >> 8) as u8,
                    lba as u8,
                    n,
                    0,
                ]
            }
            1 if blocks <= 0xFFFF => cdb10(
                if write { 0x2A } else { 0x28 },
                if fua { 8 } else { 0 },
                lba as u32,
                blocks as u16,
            )
            .to_vec(),
            2 => {
                let mut c = vec![0u8; 12];
                c[0] = if write { 0xAA } else { 0xA8 };
                c[1] = if fua { 8 } else { 0 };
                c[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
                c[6..10].copy_from_slice(&blocks.to_be_bytes());
                c
            }
            _ => cdb16(
                if write { 0x8A } else { 0x88 },
                if fua { 8 } else { 0 },
                lba,
                blocks,
            )
            .to_vec(),
        }
    }

    /// Generates a random command over free blocks, updating the model with
    /// its effect (the blocks are reserved until it completes).
    fn generate(
        rng: &mut Rng,
        model: &mut Model,
        busy: &[(u64, u64)],
        unmap: bool,
    ) -> Option<(Vec<u8>, Pending)> {
        let bs = model.bs;
        let good = Response::good(0);
        let kind = rng.below(12);
        if kind == 5 && !unmap {
            return None;
        }
        let pending = |buf: Vec<u8>,
                       range: (u64, u64),
                       expected: Response,
                       data_in: Option<Vec<u8>>,
                       what: String| Pending {
            buf,
            range,
            expected,
            data_in,
            what,
        };
        let ab = |rng: &mut Rng, a: u8, b: u8| if rng.chance(50) { a } else { b };
        Some(match kind {
            0 | 1 => {
                // READ, sometimes into a short buffer.
                let blocks = rng.range(1, 64) as u32;
                let lba = pick(rng, model, busy, u64::from(blocks), model.blocks)?;
                let fua = rng.chance(30);
                let cdb = rw_cdb(rng, false, lba, blocks, fua);
                let fit = if rng.chance(20) {
                    rng.below(u64::from(blocks)) as u32
                } else {
                    blocks
                };
                let len = fit as usize * bs
                    + rng.below(if fit < blocks { bs as u64 } else { 700 }) as usize;
                let expected = model.get(lba, u64::from(fit)).to_vec();
                let what = format!("READ {lba}+{blocks} into {len}");
                (
                    cdb,
                    pending(
                        vec![0xEE; len],
                        (lba, lba + u64::from(blocks)),
                        Response::good((fit as usize * bs) as u32),
                        Some(expected),
                        what,
                    ),
                )
            }
            2 | 3 => {
                let blocks = rng.range(1, 64) as u32;
                let lba = pick(rng, model, busy, u64::from(blocks), model.blocks)?;
                let fua = rng.chance(30);
                let cdb = rw_cdb(rng, true, lba, blocks, fua);
                let mut buf = vec![0u8; blocks as usize * bs + rng.below(300) as usize];
                rng.fill(&mut buf);
                model.put(lba, &buf[..blocks as usize * bs]);
                (
                    cdb,
                    pending(
                        buf,
                        (lba, lba + u64::from(blocks)),
                        good,
                        None,
                        format!("WRITE {lba}+{blocks}"),
                    ),
                )
            }
            4 => {
                // WRITE SAME: zero/pattern, UNMAP bit, NDOB.
                let blocks = rng.range(1, 200) as u32;
                let lba = pick(rng, model, busy, u64::from(blocks), model.blocks)?;
                let unmap = rng.chance(50);
                let ndob = rng.chance(20);
                let mut block = vec![0u8; bs];
                if !ndob && rng.chance(60) {
                    rng.fill(&mut block);
                }
                let b1 = (if unmap { 0x08 } else { 0 }) | u8::from(ndob);
                let cdb = if ndob || rng.chance(50) {
                    cdb16(0x93, b1, lba, blocks).to_vec()
                } else {
                    cdb10(0x41, b1, lba as u32, blocks as u16).to_vec()
                };
                model.put(lba, &block.repeat(blocks as usize));
                let buf = if ndob { Vec::new() } else { block };
                let what = format!("WRITE SAME {lba}+{blocks} unmap={unmap} ndob={ndob}");
                (
                    cdb,
                    pending(buf, (lba, lba + u64::from(blocks)), good, None, what),
                )
            }
            5 => {
                // UNMAP of up to 4 pieces of a range, maybe with empty ones.
                let span = rng.range(4, 256);
                let lba = pick(rng, model, busy, span, model.blocks)?;
                let mut descriptors = Vec::new();
                let mut at = lba;
                for _ in 0..rng.range(1, 4) {
                    let gap = rng.below(3);
                    let len = rng.below(span / 4 + 1);
                    if at + gap + len > lba + span {
                        break;
                    }
                    descriptors.push((at + gap, len as u32));
                    model.put(at + gap, &vec![0; len as usize * bs]);
                    at += gap + len;
                }
                let list = unmap_list(&descriptors);
                let cdb = unmap_cdb(list.len() as u16).to_vec();
                (
                    cdb,
                    pending(
                        list,
                        (lba, lba + span),
                        good,
                        None,
                        format!("UNMAP {descriptors:?}"),
                    ),
                )
            }
            6 | 7 => {
                // COMPARE AND WRITE, matching or not.
                let blocks = rng.range(1, 16);
                let lba = pick(rng, model, busy, blocks, model.blocks)?;
                let len = blocks as usize * bs;
                let mut buf = model.get(lba, blocks).to_vec();
                let mut new = vec![0u8; len];
                rng.fill(&mut new);
                let expected = if rng.chance(40) {
                    let offset = rng.below(len as u64) as usize;
                    buf[offset] ^= 1 << rng.below(8);
                    check(ScsiError::Miscompare {
                        offset: offset as u64,
                    })
                } else {
                    model.put(lba, &new);
                    good
                };
                buf.extend_from_slice(&new);
                let cdb = caw(lba, blocks as u8, rng.chance(50)).to_vec();
                (
                    cdb,
                    pending(
                        buf,
                        (lba, lba + blocks),
                        expected,
                        None,
                        format!("CAW {lba}+{blocks}"),
                    ),
                )
            }
            8 => {
                // VERIFY BYTCHK 01b / 11b / 00b.
                let blocks = rng.range(1, 40);
                let lba = pick(rng, model, busy, blocks, model.blocks)?;
                let mode = rng.below(3);
                let (b1, mut buf) = match mode {
                    0 => (0x02, model.get(lba, blocks).to_vec()),
                    1 => (0x06, model.get(lba, 1).to_vec()),
                    _ => (0x00, Vec::new()),
                };
                if !buf.is_empty() && rng.chance(50) {
                    let offset = rng.below(buf.len() as u64) as usize;
                    buf[offset] ^= 0x80;
                }
                let expected = match mode {
                    0 => model
                        .get(lba, blocks)
                        .iter()
                        .zip(&buf)
                        .position(|(a, b)| a != b)
                        .map_or(good, |o| check(ScsiError::Miscompare { offset: o as u64 })),
                    1 => (0..blocks as usize)
                        .find_map(|i| {
                            model
                                .get(lba + i as u64, 1)
                                .iter()
                                .zip(&buf)
                                .position(|(a, b)| a != b)
                                .map(|o| i * bs + o)
                        })
                        .map_or(good, |o| check(ScsiError::Miscompare { offset: o as u64 })),
                    _ => good,
                };
                let cdb = if rng.chance(50) {
                    cdb10(0x2F, b1, lba as u32, blocks as u16).to_vec()
                } else {
                    cdb16(0x8F, b1, lba, blocks as u32).to_vec()
                };
                (
                    cdb,
                    pending(
                        buf,
                        (lba, lba + blocks),
                        expected,
                        None,
                        format!("VERIFY {lba}+{blocks} mode {mode}"),
                    ),
                )
            }
            9 => {
                let blocks = rng.range(1, 40);
                let lba = pick(rng, model, busy, blocks, model.blocks)?;
                let mut buf = vec![0u8; blocks as usize * bs];
                rng.fill(&mut buf);
                model.put(lba, &buf);
                let b1 = ab(rng, 0x02, 0x00);
                let cdb = if rng.chance(50) {
                    cdb10(0x2E, b1, lba as u32, blocks as u16).to_vec()
                } else {
                    cdb16(0x8E, b1, lba, blocks as u32).to_vec()
                };
                (
                    cdb,
                    pending(
                        buf,
                        (lba, lba + blocks),
                        good,
                        None,
                        format!("WRITE AND VERIFY {lba}+{blocks}"),
                    ),
                )
            }
            10 => {
                let cdb = if rng.chance(50) {
                    cdb10(0x35, 0x02, 0, 0).to_vec()
                } else {
                    cdb16(0x91, 0, 10, 100).to_vec()
                };
                (
                    cdb,
                    pending(Vec::new(), (0, 0), good, None, "SYNCHRONIZE CACHE".into()),
                )
            }
            _ => {
                let last = (model.blocks - 1) as u32;
                let mut expected = last.to_be_bytes().to_vec();
                expected.extend_from_slice(&(bs as u32).to_be_bytes());
                let cdb = vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                (
                    cdb,
                    pending(
                        vec![0; 8],
                        (0, 0),
                        Response::good(8),
                        Some(expected),
                        "READ CAPACITY".into(),
                    ),
                )
            }
        })
    }

    fn random_cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
        let mut cuts: Vec<usize> = (0..rng.below(4))
            .filter(|_| len > 1)
            .map(|_| rng.range(1, len as u64 - 1) as usize)
            .collect();
        cuts.sort();
        cuts.dedup();
        cuts
    }

    /// Drives `commands` random commands, many in flight, through a unit
    /// over the test bdev (random, out-of-order completions) and checks
    /// every response and, at the end, every byte against the model.
    fn model_run(
        seed: u64,
        commands: usize,
        caps: Capabilities,
        depth: usize,
    ) -> (LunStats, Vec<IoOp>) {
        let mut rng = Rng::new(seed);
        let mut h = Harness::with(caps, depth, seed, |_| {});
        let mut model = Model {
            data: vec![0; 4096 * 512],
            bs: 512,
            blocks: 4096,
        };
        rng.fill(&mut model.data);
        h.disk.write_blocks(0, &model.data);
        let max_tasks = h.lun.max_tasks() as usize;
        let mut slots: Vec<Option<Pending>> = (0..max_tasks).map(|_| None).collect();
        let mut submitted = 0;
        let mut checked = 0;
        let mut steps = 0;
        while submitted < commands || h.lun.in_flight() > 0 {
            steps += 1;
            assert!(steps < 1_000_000, "stuck: {:?}", h.lun);
            let burst = rng.below(8);
            for _ in 0..burst {
                if submitted == commands {
                    break;
                }
                let Some(slot) = (0..max_tasks).find(|&s| slots[s].is_none()) else {
                    break;
                };
                let busy: Vec<(u64, u64)> = slots.iter().flatten().map(|p| p.range).collect();
                let Some((cdb, pending)) = generate(&mut rng, &mut model, &busy, caps.unmap) else {
                    continue;
                };
                let pending = slots[slot].insert(pending);
                let cuts = random_cuts(&mut rng, pending.buf.len());
                let iovs = split(&mut pending.buf, &cuts);
                // SAFETY: the buffer lives in `slots[slot]` (its heap memory
                // does not move) until the response is collected below.
                unsafe { h.lun.submit(slot as u32, &cdb, &iovs) };
                submitted += 1;
            }
            h.step();
            for (slot, response) in h.responses.drain(..) {
                let pending = slots[slot as usize]
                    .take()
                    .expect("response for an idle slot");
                assert_eq!(response, pending.expected, "seed {seed}: {}", pending.what);
                if let Some(data) = pending.data_in {
                    assert_eq!(
                        &pending.buf[..data.len()],
                        &data[..],
                        "seed {seed}: {}",
                        pending.what
                    );
                }
                checked += 1;
            }
        }
        assert_eq!(checked, commands);
        assert_eq!(h.lun.outstanding_requests(), 0);
        assert!(
            h.disk.blocks(0, 4096) == model.data,
            "seed {seed}: disk differs from the model"
        );
        let mut ops: Vec<IoOp> = Vec::new();
        for logged in h.disk.log() {
            if !ops.contains(&logged.op) {
                ops.push(logged.op);
            }
        }
        (h.lun.stats(), ops)
    }

    #[test]
    fn model_disk_random_commands() {
        for seed in 1..=3 {
            let (stats, ops) = model_run(seed, 3000, caps(), 8);
            // The port-full and scratch-exhaustion paths were exercised, and
            // every kind of request.
            assert!(
                stats.head_blocked > 0 && stats.scratch_waits > 0,
                "{stats:?}"
            );
            assert_eq!(ops.len(), 5, "{ops:?}");
        }
    }

    #[test]
    fn model_disk_without_unmap_write_zeroes_or_cache_and_a_deep_port() {
        let caps = Capabilities {
            unmap: false,
            unmap_reads_zeroes: false,
            write_zeroes: false,
            volatile_cache: false,
            ..caps()
        };
        let (stats, mut ops) = model_run(99, 2000, caps, 64);
        assert!(stats.scratch_waits > 0, "{stats:?}");
        ops.sort_by_key(|op| *op as u8);
        assert_eq!(ops, [IoOp::Read, IoOp::Write]);
    }

    // -- fuzz ---------------------------------------------------------------------

    fn well_formed(response: &Response, buf_len: usize) {
        assert!(response.data_in_len as usize <= buf_len, "{response:?}");
        match response.status {
            status::GOOD => assert_eq!(response.sense_len, 0),
            status::CHECK_CONDITION => {
                let sense = response.sense_bytes();
                assert_eq!(response.data_in_len, 0);
                match sense[0] & 0x7F {
                    0x70 => assert_eq!(sense.len(), 18),
                    0x72 => assert_eq!(sense.len(), 8 + usize::from(sense[7])),
                    _ => panic!("bad sense {sense:02x?}"),
                }
            }
            status::BUSY | status::TASK_ABORTED => assert_eq!(response.sense_len, 0),
            other => panic!("unexpected status {other:#x}"),
        }
    }

    #[test]
    fn random_cdbs_never_panic() {
        let mut rng = Rng::new(12345);
        let mut h = Harness::with(caps(), 8, 77, |_| {});
        let opcodes: Vec<u8> = crate::scsi::opcodes::SUPPORTED
            .iter()
            .map(|i| i.opcode)
            .collect();
        let mut bufs: Vec<Option<Vec<u8>>> = (0..32).map(|_| None).collect();
        let mut good = 0;
        for round in 0..20_000 {
            let mut cdb = vec![0u8; rng.below(21) as usize];
            rng.fill(&mut cdb);
            if rng.chance(80) {
                // A supported operation code with its CDB length.
                let opcode = opcodes[rng.below(opcodes.len() as u64) as usize];
                let len = crate::scsi::opcodes::cdb_len(opcode).unwrap();
                cdb.resize(len, 0);
                rng.fill(&mut cdb);
                cdb[0] = opcode;
                if rng.chance(70) {
                    // Tame it: small LBAs and lengths, fewer unsupported bits.
                    let c = &mut cdb;
                    match len {
                        6 => {
                            c[1] &= 0x01;
                            c[2] &= 0x0F;
                            c[4] &= 0x07;
                        }
                        10 => {
                            c[1] &= 0x1F;
                            c[2] = 0;
                            c[3] = 0;
                            c[4] &= 0x0F;
                            c[7] = 0;
                            c[8] &= 0x3F;
                        }
                        12 => {
                            c[2] = 0;
                            c[3] = 0;
                            c[4] &= 0x0F;
                            c[6..9].fill(0);
                            c[9] &= 0x07;
                        }
                        _ => {
                            c[2..8].fill(0);
                            c[8] &= 0x0F;
                            c[10..13].fill(0);
                            c[13] &= 0x07;
                        }
                    }
                    if opcode != 0x9E && opcode != 0xA3 {
                        c[1] &= 0x0F;
                    }
                    c[len - 1] = 0;
                }
            }
            let slot = rng.below(32) as usize;
            if bufs[slot].is_none() {
                let mut buf = vec![0u8; rng.below(6 * 512) as usize];
                rng.fill(&mut buf);
                let buf = bufs[slot].insert(buf);
                let cuts = random_cuts(&mut rng, buf.len());
                let iovs = split(buf, &cuts);
                // SAFETY: the buffer stays in `bufs[slot]` until its response.
                unsafe { h.lun.submit(slot as u32, &cdb, &iovs) };
            }
            if round % 4 == 0 {
                h.step();
            }
            if rng.chance(2) {
                h.lun.abort(rng.below(40) as u32);
            }
            for (slot, response) in h.responses.drain(..) {
                let buf = bufs[slot as usize].take().unwrap();
                well_formed(&response, buf.len());
                if response.status == status::GOOD {
                    good += 1;
                }
            }
        }
        h.run();
        for (slot, response) in h.responses.drain(..) {
            let buf = bufs[slot as usize].take().unwrap();
            well_formed(&response, buf.len());
        }
        assert!(bufs.iter().all(Option::is_none));
        assert_eq!(h.lun.outstanding_requests(), 0);
        // The fuzz reached every kind of bdev operation, not only the decoder.
        let log = h.disk.log();
        for op in [
            IoOp::Read,
            IoOp::Write,
            IoOp::Flush,
            IoOp::Unmap,
            IoOp::WriteZeroes,
        ] {
            assert!(log.iter().any(|l| l.op == op), "no {op:?} reached the bdev");
        }
        assert!(
            log.len() > 2000,
            "only {} requests reached the bdev",
            log.len()
        );
        assert!(good > 3000, "only {good} commands succeeded");
    }
}
