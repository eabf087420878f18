//! A channel of the `nvme` bdev: one io_uring of 128-byte SQEs and 32-byte
//! CQEs, the requests in the kernel and their commands, the queue of
//! requests waiting for room, the bounce pool and the Dataset Management
//! range pages.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types};
use memmap2::MmapMut;

use super::bounce::BouncePool;
use super::cmd::{self, Data, UringCmd, DSM_LIST_LEN, URING_CMD_IO, URING_CMD_IO_VEC};
use super::plan::{self, Cursor, Placement};
use super::profile::{UnmapCommand, CTRL_PAGE};
use super::stats::{ChannelCounters, NvmeStats};
use super::{status, Shared};
use crate::request::{check_request, check_supported, CompletionQueue};
use crate::uring::FixedRegions;
use crate::uring::{Ring, RingConfig, Slots};
use crate::{
    BdevChannel, Capabilities, Error, Geometry, IoCompletion, IoError, IoOp, IoRequest, IoVec,
    SgList,
};

/// The ring NVMe passthrough needs (`nvme_uring_cmd_checks`: both big SQEs
/// and big CQEs, or `EOPNOTSUPP`).
pub(super) type NvmeRing = Ring<squeue::Entry128, cqueue::Entry32>;

/// Most iovecs one vectored command takes (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// A request in the kernel: its tag, and what its commands add up to.
/// (No `Debug`: a free slot's list is not printed, an in-use one names
/// caller memory.)
#[derive(Clone, Copy)]
struct Pending {
    tag: u64,
    op: IoOp,
    /// Commands not completed yet.
    left: u32,
    /// The first error of its commands.
    result: Result<(), IoError>,
    /// Its buffer (bounced reads copy into it at completion);
    /// [`SgList::EMPTY`] while the slot is free.
    sgl: SgList,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            tag: 0,
            op: IoOp::Read,
            left: 0,
            result: Ok(()),
            sgl: SgList::EMPTY,
        }
    }
}

/// One command in the kernel; its index is the SQE's `user_data`.
#[derive(Debug, Clone, Copy, Default)]
struct Command {
    /// The request it is a piece of.
    request: u32,
    /// Where its data starts in the request's buffer.
    at: Cursor,
    /// Bytes it moves.
    bytes: u32,
    /// Its data is in a bounce buffer the slot holds.
    bounced: bool,
}

/// One channel. Owned by one thread.
///
/// Invariants: `in_flight` = requests in `ready` + in `waiting` + in
/// `requests` slots in use, at most `depth`; a request slot in use has
/// `left` commands in use naming it, each with exactly one SQE pushed on
/// `ring` whose CQE is not yet reaped; a command slot's row, DSM page and
/// bounce buffer are only named by that command's SQE.
pub(super) struct NvmeChannel {
    ring: NvmeRing,
    shared: Arc<Shared>,
    fd: RawFd,
    nsid: u32,
    geometry: Geometry,
    capabilities: Capabilities,
    /// Largest Read/Write command in blocks.
    command_blocks: u32,
    vectored: bool,
    unmap: Option<UnmapCommand>,
    requests: Slots<Pending>,
    commands: Slots<Command>,
    /// Per command slot, `row_len` iovecs: a vectored command's list.
    rows: Vec<IoVec>,
    row_len: usize,
    /// Per command slot, one page: a Dataset Management range list.
    dsm: Option<MmapMut>,
    bounce: BouncePool,
    fixed: FixedRegions,
    /// Accepted requests not yet in the kernel, oldest first (capacity
    /// `depth`: pushing never allocates).
    waiting: VecDeque<IoRequest>,
    /// Requests finished without the kernel (failed checks, zero length,
    /// flushes without a volatile cache).
    ready: CompletionQueue,
    in_flight: usize,
    depth: usize,
    stats: NvmeStats,
    counters: Arc<ChannelCounters>,
}

impl NvmeChannel {
    /// A channel for `depth` requests, with a ring of at most the bdev's
    /// queue depth (and at least the commands of its largest request).
    pub fn new(shared: Arc<Shared>, depth: usize) -> Result<Self, Error> {
        let depth = depth.max(1);
        let options = &shared.options;
        let profile = shared.profile;
        let caps = profile.capabilities;
        let most_pieces = caps.max_transfer_blocks.div_ceil(profile.command_blocks) as usize;
        let entries = (options.queue_depth as usize)
            .min(depth)
            .max(most_pieces)
            .max(1);
        let ring = NvmeRing::new(RingConfig {
            entries: entries as u32,
            iopoll: options.iopoll,
            sqpoll_idle_ms: None,
        })?;
        let bs = profile.geometry.block_size as usize;
        let command_bytes = profile.command_blocks as usize * bs;
        // A piece spans at most one page more than its length; a row
        // holds one iovec per page it touches.
        let row_len = (command_bytes / CTRL_PAGE + 2).min(IOV_MAX);
        let buffers = options
            .bounce_bytes
            .div_ceil(command_bytes)
            .max(most_pieces);
        let bounce = BouncePool::new(buffers, command_bytes, entries)?;
        let dsm = match profile.unmap {
            Some(UnmapCommand::Deallocate) => Some(MmapMut::map_anon(entries * DSM_LIST_LEN)?),
            _ => None,
        };
        let counters = Arc::new(ChannelCounters::default());
        shared.register_counters(&counters);
        let empty = IoVec {
            base: std::ptr::null_mut(),
            len: 0,
        };
        Ok(Self {
            ring,
            fd: shared.file.as_raw_fd(),
            nsid: shared.nsid,
            geometry: profile.geometry,
            capabilities: caps,
            command_blocks: profile.command_blocks,
            vectored: shared.vectored,
            unmap: profile.unmap,
            shared,
            requests: Slots::new(depth),
            commands: Slots::new(entries),
            rows: vec![empty; entries * row_len],
            row_len,
            dsm,
            bounce,
            fixed: FixedRegions::default(),
            waiting: VecDeque::with_capacity(depth),
            ready: CompletionQueue::new(depth),
            in_flight: 0,
            depth,
            stats: NvmeStats::default(),
            counters,
        })
    }

    /// The checks every request passes before anything else.
    fn check(&self, request: &IoRequest) -> Result<(), IoError> {
        check_request(&self.geometry, request)?;
        check_supported(&self.capabilities, request)?;
        let caps = &self.capabilities;
        match request.op {
            IoOp::Read | IoOp::Write if request.blocks > caps.max_transfer_blocks => {
                Err(IoError::TooLarge)
            }
            IoOp::Unmap | IoOp::WriteZeroes
                if caps.max_unmap_blocks != 0 && request.blocks > caps.max_unmap_blocks =>
            {
                Err(IoError::TooLarge)
            }
            IoOp::Unmap if self.unmap.is_none() => Err(IoError::Unsupported),
            _ => Ok(()),
        }
    }

    /// Puts `request` into the kernel's SQ, all its commands at once, or
    /// returns false (changing nothing) when the ring, the slots or the
    /// bounce pool have no room for them.
    fn start(&mut self, request: &IoRequest) -> bool {
        match request.op {
            IoOp::Read | IoOp::Write => self.start_transfer(request),
            IoOp::Flush | IoOp::Unmap | IoOp::WriteZeroes => self.start_other(request),
        }
    }

    /// Free command slots and SQ/CQ room for `n` commands, and a request
    /// slot.
    fn room_for(&mut self, n: usize) -> bool {
        let free_commands = self.commands.capacity() - self.commands.in_use();
        !self.requests.is_full() && free_commands >= n && self.ring.room() as usize >= n
    }

    fn start_transfer(&mut self, request: &IoRequest) -> bool {
        let per = self.command_blocks;
        let pieces = request.blocks.div_ceil(per);
        if !self.room_for(pieces as usize) {
            return false;
        }
        let shift = self.geometry.block_shift();
        let iovs = request.sgl.iovs();
        let piece_len = |k: u32| (plan::piece_blocks(request.blocks, per, k) as usize) << shift;
        // First how many bounce buffers it takes, so that a request that
        // cannot start leaves nothing behind.
        let mut bounces = 0;
        let mut at = Cursor::default();
        for k in 0..pieces {
            let (placement, next) =
                plan::place(iovs, at, piece_len(k), self.vectored, self.row_len, None);
            bounces += usize::from(placement == Placement::Bounce);
            at = next;
        }
        if bounces > self.bounce.free() {
            return false;
        }
        let Some(index) = self.requests.take() else {
            return false;
        };
        *self.requests.slot_mut(index) = Pending {
            tag: request.tag,
            op: request.op,
            left: pieces,
            result: Ok(()),
            sgl: request.sgl,
        };
        if pieces > 1 {
            self.stats.split += 1;
        }
        let write = request.op == IoOp::Write;
        let mut at = Cursor::default();
        let mut lba = request.lba;
        for k in 0..pieces {
            let blocks = plan::piece_blocks(request.blocks, per, k);
            let len = piece_len(k);
            let Some(slot) = self.commands.take() else {
                debug_assert!(false, "command slots were counted");
                break;
            };
            let row = slot as usize * self.row_len..(slot as usize + 1) * self.row_len;
            let (placement, next) = plan::place(
                iovs,
                at,
                len,
                self.vectored,
                self.row_len,
                Some(&mut self.rows[row.clone()]),
            );
            let mut fixed = None;
            let (cmd_op, data) = match placement {
                Placement::Single(base) => {
                    fixed = self.fixed.find(base, len);
                    self.stats.fixed += u64::from(fixed.is_some());
                    (
                        URING_CMD_IO,
                        Data {
                            addr: base as u64,
                            len: len as u32,
                        },
                    )
                }
                Placement::Vector(n) => {
                    self.stats.vectored += 1;
                    let list = self.rows[row.start..].as_ptr();
                    (
                        URING_CMD_IO_VEC,
                        Data {
                            addr: list as u64,
                            len: n,
                        },
                    )
                }
                Placement::Bounce => {
                    let Some(buffer) = self.bounce.lease(slot) else {
                        debug_assert!(false, "bounce buffers were counted");
                        break;
                    };
                    if write {
                        self.bounce.copy_in(slot, iovs, at, len);
                    }
                    self.stats.bounced += 1;
                    (
                        URING_CMD_IO,
                        Data {
                            addr: buffer as u64,
                            len: len as u32,
                        },
                    )
                }
            };
            let command = if write {
                cmd::write(self.nsid, lba, blocks, request.fua, data)
            } else {
                cmd::read(self.nsid, lba, blocks, data)
            };
            *self.commands.slot_mut(slot) = Command {
                request: index,
                at,
                bytes: len as u32,
                bounced: placement == Placement::Bounce,
            };
            self.push(slot, cmd_op, &command, fixed);
            at = next;
            lba += u64::from(blocks);
        }
        true
    }

    /// Flush, unmap and write zeroes: one command without a data buffer
    /// (a DSM range list in the command's page).
    fn start_other(&mut self, request: &IoRequest) -> bool {
        if !self.room_for(1) {
            return false;
        }
        let (Some(index), Some(slot)) = (self.requests.take(), self.commands.take()) else {
            debug_assert!(false, "room was checked");
            return false;
        };
        let (nsid, lba, blocks) = (self.nsid, request.lba, request.blocks);
        let command = match request.op {
            IoOp::WriteZeroes => cmd::write_zeroes(nsid, lba, blocks, false, request.fua),
            IoOp::Unmap => match self.unmap.expect("checked at submit") {
                UnmapCommand::WriteZeroesDeallocate => {
                    cmd::write_zeroes(nsid, lba, blocks, true, false)
                }
                UnmapCommand::WriteZeroes => cmd::write_zeroes(nsid, lba, blocks, false, false),
                UnmapCommand::Deallocate => {
                    let page = self.dsm_page(slot);
                    page[..cmd::DSM_RANGE_LEN].copy_from_slice(&cmd::dsm_range(lba, blocks));
                    let list = Data {
                        addr: page.as_ptr() as u64,
                        len: DSM_LIST_LEN as u32,
                    };
                    cmd::deallocate(nsid, list)
                }
            },
            _ => cmd::flush(nsid),
        };
        *self.requests.slot_mut(index) = Pending {
            tag: request.tag,
            op: request.op,
            left: 1,
            result: Ok(()),
            sgl: SgList::EMPTY,
        };
        *self.commands.slot_mut(slot) = Command {
            request: index,
            ..Command::default()
        };
        self.push(slot, URING_CMD_IO, &command, None);
        true
    }

    /// Command slot `slot`'s DSM range page (allocated when unmaps are
    /// Dataset Management commands, which `check` ensures).
    fn dsm_page(&mut self, slot: u32) -> &mut [u8] {
        let dsm = self
            .dsm
            .as_mut()
            .expect("DSM pages exist when unmap deallocates");
        let at = slot as usize * DSM_LIST_LEN;
        &mut dsm[at..at + DSM_LIST_LEN]
    }

    /// Pushes command slot `slot`'s SQE (room was checked).
    fn push(&mut self, slot: u32, cmd_op: u32, command: &UringCmd, fixed: Option<u16>) {
        let sqe = opcode::UringCmd80::new(types::Fd(self.fd), cmd_op)
            .cmd(command.to_bytes())
            .buf_index(fixed)
            .build()
            .user_data(u64::from(slot));
        // SAFETY: what the command names stays valid until its CQE is
        // reaped: the request's buffers and iovecs by the `SgList` contract
        // (the request completes only when `reap` has seen the CQEs of all
        // its commands); the row, the DSM page and the bounce buffer belong
        // to this command slot until then, and the channel drops the ring
        // (waiting for every CQE) before them; a fixed buffer index comes
        // from `FixedRegions::find`, so the range lies in a registered
        // piece; the fd is the bdev's open device, held by `shared` for the
        // channel's life.
        let pushed = unsafe { self.ring.push(&sqe) };
        debug_assert!(pushed, "room was checked");
    }

    /// Starts waiting requests, oldest first, while there is room.
    fn start_waiting(&mut self) {
        while let Some(request) = self.waiting.front().copied() {
            if !self.start(&request) {
                break;
            }
            self.waiting.pop_front();
        }
    }

    /// Delivers every request whose last command the kernel has completed;
    /// returns how many.
    fn reap(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
        let Self {
            ring,
            requests,
            commands,
            bounce,
            stats,
            in_flight,
            ..
        } = self;
        let mut delivered = 0;
        ring.reap(|cqe: cqueue::Entry32| {
            let slot = cqe.user_data();
            let Some(command) = commands.get_mut(slot).map(std::mem::take) else {
                return;
            };
            let slot = slot as u32;
            let res = cqe.result();
            let request = requests.slot_mut(command.request);
            let result = status::result(request.op, res);
            if status::is_status(res) {
                stats.status_errors += 1;
                stats.last_status = res as u64;
            }
            if command.bounced {
                if result.is_ok() && request.op == IoOp::Read {
                    bounce.copy_out(slot, request.sgl.iovs(), command.at, command.bytes as usize);
                }
                bounce.release(slot);
            }
            commands.release(slot);
            stats.commands += 1;
            if request.result.is_ok() {
                request.result = result;
            }
            request.left -= 1;
            if request.left == 0 {
                let completion = IoCompletion {
                    tag: request.tag,
                    result: request.result,
                };
                *request = Pending::default();
                requests.release(command.request);
                *in_flight -= 1;
                stats.completed += 1;
                delivered += 1;
                done(completion);
            }
        });
        delivered
    }
}

impl BdevChannel for NvmeChannel {
    fn submit(&mut self, request: IoRequest) -> Result<(), IoRequest> {
        if self.in_flight >= self.depth {
            return Err(request);
        }
        self.in_flight += 1;
        if let Err(error) = self.check(&request) {
            self.ready.complete(request.tag, Err(error));
            return Ok(());
        }
        let nothing_to_do = match request.op {
            // Without a volatile cache every completed write is durable.
            IoOp::Flush => !self.capabilities.volatile_cache,
            _ => request.blocks == 0,
        };
        if nothing_to_do {
            self.ready.complete(request.tag, Ok(()));
            return Ok(());
        }
        if !self.waiting.is_empty() || !self.start(&request) {
            self.stats.waited += 1;
            self.waiting.push_back(request);
        }
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
        self.stats.polls += 1;
        let ready = self.ready.deliver(done);
        self.in_flight -= ready;
        self.stats.completed += ready as u64;
        let mut n = ready + self.reap(done);
        self.start_waiting();
        if self.ring.publish() > 0 {
            // Commands the kernel finished inside the enter.
            n += self.reap(done);
        }
        self.stats.submit_syscalls = self.ring.enters();
        self.stats.enter_errors = self.ring.enter_errors();
        self.counters.publish(&self.stats);
        n
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
        vec![self.ring.fd()]
    }

    unsafe fn register_memory(&mut self, regions: &[IoVec]) -> Result<bool, Error> {
        if self.ring.outstanding() > 0 {
            return Err(Error::InvalidParameter(format!(
                "bdev {}: memory can be registered only with no request in flight",
                self.shared.name
            )));
        }
        self.fixed = FixedRegions::default();
        let piece = self.shared.fixed_piece_bytes;
        // SAFETY: this function's contract: the regions stay mapped to the
        // same memory for the channel's life, which is the ring's.
        match unsafe { self.ring.register_fixed(regions, piece) } {
            Ok(table) => {
                self.fixed = table;
                Ok(!self.fixed.is_empty())
            }
            Err(refused) => {
                let name = &self.shared.name;
                self.shared.refusal.report(name, &refused, "commands");
                Ok(false)
            }
        }
    }
}

impl Drop for NvmeChannel {
    fn drop(&mut self) {
        // The kernel may still be reading or writing rows, DSM pages and
        // bounce buffers of commands in flight: wait for it before they go.
        self.ring.wait_idle();
    }
}

impl fmt::Debug for NvmeChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmeChannel")
            .field("bdev", &self.shared.name)
            .field("ring", &self.ring)
            .field("in_flight", &self.in_flight)
            .field("waiting", &self.waiting.len())
            .field("stats", &self.stats)
            .finish()
    }
}
