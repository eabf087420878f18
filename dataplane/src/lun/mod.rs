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
mod tests;
