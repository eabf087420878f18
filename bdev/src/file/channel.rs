//! A channel of the `file` bdev: one io_uring, the requests' slots, the
//! queue of requests waiting for room and the bounce pool.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types};

use super::bounce::BouncePool;
use super::errno;
use super::open::Alignment;
use super::stats::{ChannelCounters, FileStats};
use super::Shared;
use crate::request::{check_request, check_supported, CompletionQueue};
use crate::uring::{FixedRegions, MAX_FIXED_BUFFER};
use crate::uring::{Ring, RingConfig, Slots};
use crate::{
    BdevChannel, Capabilities, Error, Geometry, IoCompletion, IoError, IoOp, IoRequest, IoVec,
    SgList,
};

/// Most iovecs one READV/WRITEV takes (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// What a request in the kernel needs at its completion. (No `Debug`: a
/// free slot's list is not printed, and an in-use one names caller memory.)
#[derive(Clone, Copy)]
struct Slot {
    tag: u64,
    op: IoOp,
    /// Bytes a read or write must move.
    bytes: u32,
    /// The request's buffer (a bounced read copies into it at completion);
    /// [`SgList::EMPTY`] while the slot is free.
    sgl: SgList,
    /// The transfer went through the bounce pool (the slot holds a lease).
    bounced: bool,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            tag: 0,
            op: IoOp::Read,
            bytes: 0,
            sgl: SgList::EMPTY,
            bounced: false,
        }
    }
}

/// How a read or write reaches the device.
enum Path {
    /// One buffer holds the whole transfer: READ/WRITE (or their fixed
    /// forms) on it.
    Single(*mut u8),
    /// The first `n` iovecs are exactly the transfer: READV/WRITEV on the
    /// request's own iovec array.
    Vector(u32),
    /// Misaligned for O_DIRECT, or not expressible without copying the
    /// iovec array: through the bounce pool.
    Bounce,
}

/// One channel. Owned by one thread.
///
/// Invariants: `in_flight` = requests in `ready` + in `waiting` + in slots
/// in use, at most `depth`; every slot in use has exactly one SQE pushed on
/// `ring` (or `aux`) whose CQE is not yet reaped.
pub(super) struct FileChannel {
    /// Reads and writes (and everything else unless IOPOLL).
    ring: Ring,
    /// With IOPOLL, which takes only reads and writes: the ring for flush,
    /// unmap and write-zeroes.
    aux: Option<Ring>,
    shared: Arc<Shared>,
    fd: RawFd,
    geometry: Geometry,
    capabilities: Capabilities,
    alignment: Alignment,
    slots: Slots<Slot>,
    /// Accepted requests not yet in the kernel, oldest first (capacity
    /// `depth`: pushing never allocates).
    waiting: VecDeque<IoRequest>,
    /// Requests finished without the kernel (failed checks, zero length).
    ready: CompletionQueue,
    in_flight: usize,
    depth: usize,
    bounce: BouncePool,
    fixed: FixedRegions,
    stats: FileStats,
    counters: Arc<ChannelCounters>,
}

impl FileChannel {
    /// A channel for `depth` requests, with a ring of at most the bdev's
    /// queue depth.
    pub fn new(shared: Arc<Shared>, depth: usize) -> Result<Self, Error> {
        let depth = depth.max(1);
        let options = &shared.options;
        let entries = (options.queue_depth as usize).min(depth).max(1) as u32;
        let config = RingConfig {
            entries,
            iopoll: options.iopoll,
            sqpoll_idle_ms: options.sqpoll.then_some(1000),
        };
        let ring = Ring::new(config)?;
        let aux = if options.iopoll {
            Some(Ring::new(RingConfig {
                iopoll: false,
                sqpoll_idle_ms: None,
                ..config
            })?)
        } else {
            None
        };
        let slots = entries as usize * if options.iopoll { 2 } else { 1 };
        let geometry = shared.geometry;
        let max_transfer =
            shared.capabilities.max_transfer_blocks as usize * geometry.block_size as usize;
        let bounce = BouncePool::new(options.bounce_bytes, max_transfer, slots)?;
        let counters = Arc::new(ChannelCounters::default());
        shared.register_counters(&counters);
        Ok(Self {
            ring,
            aux,
            fd: shared.file.as_raw_fd(),
            geometry,
            capabilities: shared.capabilities,
            alignment: shared.alignment,
            shared,
            slots: Slots::new(slots),
            waiting: VecDeque::with_capacity(depth),
            ready: CompletionQueue::new(depth),
            in_flight: 0,
            depth,
            bounce,
            fixed: FixedRegions::default(),
            stats: FileStats::default(),
            counters,
        })
    }

    /// The checks every request passes before anything else.
    fn check(&self, request: &IoRequest) -> Result<(), IoError> {
        check_request(&self.geometry, request)?;
        check_supported(&self.capabilities, request)?;
        let max = self.capabilities.max_transfer_blocks;
        if matches!(request.op, IoOp::Read | IoOp::Write) && request.blocks > max {
            return Err(IoError::TooLarge);
        }
        Ok(())
    }

    /// How `bytes` of `sgl` reach the device.
    fn path(&self, sgl: &SgList, bytes: usize) -> Path {
        let mem_mask = self.alignment.mem as usize - 1;
        let len_mask = self.alignment.offset as usize - 1;
        let aligned = |v: &IoVec| (v.base as usize & mem_mask) == 0 && (v.len & len_mask) == 0;
        let iovs = sgl.iovs();
        let first = &iovs[0];
        if first.len >= bytes {
            let ok = (first.base as usize & mem_mask) == 0 && (bytes & len_mask) == 0;
            return if ok {
                Path::Single(first.base)
            } else {
                Path::Bounce
            };
        }
        let mut sum = 0;
        for (i, iov) in iovs.iter().enumerate().take(IOV_MAX) {
            if !aligned(iov) {
                return Path::Bounce;
            }
            sum += iov.len;
            if sum == bytes {
                return Path::Vector(i as u32 + 1);
            }
            if sum > bytes {
                break;
            }
        }
        Path::Bounce
    }

    /// Puts `request` into the kernel's SQ, or returns false (changing
    /// nothing) when the ring, the slots or the bounce pool have no room.
    fn start(&mut self, request: &IoRequest) -> bool {
        let data = matches!(request.op, IoOp::Read | IoOp::Write);
        if self.ring_for(data).room() == 0 {
            return false;
        }
        let Some(index) = self.slots.take() else {
            return false;
        };
        let fd = types::Fd(self.fd);
        let shift = self.geometry.block_shift();
        let offset = request.lba << shift;
        let bytes = u64::from(request.blocks) << shift;
        let mut bounced = false;
        let sqe: squeue::Entry = match request.op {
            IoOp::Read | IoOp::Write => {
                // At most `max_transfer_blocks` blocks (checked): fits u32.
                let len = bytes as u32;
                let write = request.op == IoOp::Write;
                let flags = if write && request.fua {
                    libc::RWF_DSYNC
                } else {
                    0
                };
                match self.path(&request.sgl, len as usize) {
                    Path::Single(base) => match self.fixed.find(base, len as usize) {
                        Some(buf) if write => {
                            self.stats.fixed += 1;
                            opcode::WriteFixed::new(fd, base, len, buf)
                                .offset(offset)
                                .rw_flags(flags)
                                .build()
                        }
                        Some(buf) => {
                            self.stats.fixed += 1;
                            opcode::ReadFixed::new(fd, base, len, buf)
                                .offset(offset)
                                .build()
                        }
                        None if write => opcode::Write::new(fd, base, len)
                            .offset(offset)
                            .rw_flags(flags)
                            .build(),
                        None => opcode::Read::new(fd, base, len).offset(offset).build(),
                    },
                    Path::Vector(n) => {
                        let iovs = request.sgl.iovs().as_ptr().cast::<libc::iovec>();
                        if write {
                            opcode::Writev::new(fd, iovs, n)
                                .offset(offset)
                                .rw_flags(flags)
                                .build()
                        } else {
                            opcode::Readv::new(fd, iovs, n).offset(offset).build()
                        }
                    }
                    Path::Bounce => {
                        let Some((iovs, n)) = self.bounce.lease(index, len as usize) else {
                            self.slots.release(index);
                            return false;
                        };
                        bounced = true;
                        self.stats.bounced += 1;
                        if write {
                            self.bounce.copy_in(index, &request.sgl, len as usize);
                            opcode::Writev::new(fd, iovs, n)
                                .offset(offset)
                                .rw_flags(flags)
                                .build()
                        } else {
                            opcode::Readv::new(fd, iovs, n).offset(offset).build()
                        }
                    }
                }
            }
            IoOp::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            IoOp::Unmap => opcode::Fallocate::new(fd, bytes)
                .offset(offset)
                .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
            IoOp::WriteZeroes => opcode::Fallocate::new(fd, bytes)
                .offset(offset)
                .mode(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
        };
        *self.slots.slot_mut(index) = Slot {
            tag: request.tag,
            op: request.op,
            bytes: bytes as u32,
            sgl: request.sgl,
            bounced,
        };
        let sqe = sqe.user_data(u64::from(index));
        // SAFETY: what the SQE names stays valid until its CQE is reaped:
        // the request's buffers and iovec array by the `SgList` contract
        // (the request completes only when `reap` has seen this CQE); the
        // bounce chunks and their iovec row are leased to this slot until
        // then and the pool outlives the ring (`Drop` waits for the ring
        // first); a fixed buffer index comes from `FixedRegions::find`, so
        // the range lies in a registered piece; the fd is the bdev's open
        // file, held by `shared` for the channel's life.
        let pushed = unsafe { self.ring_for(data).push(&sqe) };
        debug_assert!(pushed, "room was checked");
        true
    }

    /// The ring that takes reads and writes (`data`) or the other
    /// operations.
    fn ring_for(&mut self, data: bool) -> &mut Ring {
        match &mut self.aux {
            Some(aux) if !data => aux,
            _ => &mut self.ring,
        }
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

    /// Delivers every completion the kernel has posted.
    fn reap(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
        let Self {
            ring,
            aux,
            slots,
            bounce,
            stats,
            in_flight,
            ..
        } = self;
        let mut complete = |cqe: cqueue::Entry| {
            let index = cqe.user_data();
            let Some(slot) = slots.get_mut(index) else {
                return;
            };
            let index = index as u32;
            let res = cqe.result();
            let data = matches!(slot.op, IoOp::Read | IoOp::Write);
            let result = if res < 0 {
                Err(errno::io_error(slot.op, -res))
            } else if data && res as u32 != slot.bytes {
                Err(errno::short_transfer(slot.op))
            } else {
                Ok(())
            };
            if slot.bounced {
                if result.is_ok() && slot.op == IoOp::Read {
                    bounce.copy_out(index, &slot.sgl, slot.bytes as usize);
                }
                bounce.release(index);
            }
            let tag = slot.tag;
            *slot = Slot::default();
            slots.release(index);
            *in_flight -= 1;
            stats.completed += 1;
            done(IoCompletion { tag, result });
        };
        let mut n = ring.reap(&mut complete);
        if let Some(aux) = aux {
            n += aux.reap(&mut complete);
        }
        n
    }
}

impl BdevChannel for FileChannel {
    fn submit(&mut self, request: IoRequest) -> Result<(), IoRequest> {
        if self.in_flight >= self.depth {
            return Err(request);
        }
        self.in_flight += 1;
        if let Err(error) = self.check(&request) {
            self.ready.complete(request.tag, Err(error));
            return Ok(());
        }
        if request.blocks == 0 && request.op != IoOp::Flush {
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
        let mut enters = self.ring.publish();
        if let Some(aux) = &mut self.aux {
            enters += aux.publish();
        }
        if enters > 0 {
            // Operations the kernel finished inside the enter.
            n += self.reap(done);
        }
        let aux = self.aux.as_ref();
        self.stats.submit_syscalls = self.ring.enters() + aux.map_or(0, |r| r.enters());
        self.stats.enter_errors = self.ring.enter_errors() + aux.map_or(0, |r| r.enter_errors());
        self.counters.publish(&self.stats);
        n
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The ring's fd (with IOPOLL the reactor never sleeps with I/O in
    /// flight: each poll enters to reap, so it is busy; the aux ring of
    /// flushes and unmaps completes on its own).
    fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
        let mut fds = vec![self.ring.fd()];
        fds.extend(self.aux.as_ref().map(Ring::fd));
        fds
    }

    unsafe fn register_memory(&mut self, regions: &[IoVec]) -> Result<bool, Error> {
        if self.ring.outstanding() > 0 {
            return Err(Error::InvalidParameter(format!(
                "bdev {}: memory can be registered only with no request in flight",
                self.shared.name
            )));
        }
        self.fixed = FixedRegions::default();
        // SAFETY: this function's contract: the regions stay mapped to the
        // same memory for the channel's life, which is the ring's.
        match unsafe { self.ring.register_fixed(regions, MAX_FIXED_BUFFER) } {
            Ok(table) => {
                self.fixed = table;
                Ok(!self.fixed.is_empty())
            }
            Err(refused) => {
                let name = &self.shared.name;
                self.shared
                    .refusal
                    .report(name, &refused, "reads and writes");
                Ok(false)
            }
        }
    }
}

impl Drop for FileChannel {
    fn drop(&mut self) {
        // The kernel may still be reading or writing bounce chunks and
        // iovec rows of requests in flight: wait for it before they go.
        self.ring.wait_idle();
        if let Some(aux) = &mut self.aux {
            aux.wait_idle();
        }
    }
}

impl fmt::Debug for FileChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileChannel")
            .field("bdev", &self.shared.name)
            .field("ring", &self.ring)
            .field("in_flight", &self.in_flight)
            .field("waiting", &self.waiting.len())
            .field("stats", &self.stats)
            .finish()
    }
}
