//! The `file` bdev: a regular file or a block device, driven through one
//! io_uring per channel ([`crate::uring`]), O_DIRECT by default.
//!
//! # What it reports
//! - **Block devices**: size from `BLKGETSIZE64`, logical and physical block
//!   from `BLKSSZGET`/`BLKPBSZGET` (a configured block size may be a larger
//!   multiple of the logical one), the volatile cache from the queue's
//!   `write_cache`, the unmap granularity from `discard_granularity` (all
//!   under `/sys/dev/block/MAJ:MIN/queue`, a partition's being its disk's).
//! - **Regular files**: size from the file (a whole number of the configured
//!   block size, 512 by default), physical block and unmap granularity from
//!   the filesystem's block, a volatile cache (fdatasync is real work).
//!   Punch-hole and zero-range support are probed at open past the end of
//!   the file, where they change nothing.
//! - **O_DIRECT alignment** from `statx(STATX_DIOALIGN)` where the kernel
//!   has it (6.1+); otherwise the block device's logical block, or
//!   page-aligned buffers and 512-byte offsets for a file.
//!
//! # How SCSI maps onto it
//! | request | io_uring operation |
//! | --- | --- |
//! | `Read`/`Write` | `READ`/`WRITE` on a single buffer, `READV`/`WRITEV` on the request's iovecs, `READ_FIXED`/`WRITE_FIXED` inside registered memory |
//! | `Write` with FUA | the same with `RWF_DSYNC` |
//! | `Flush` | `FSYNC` with `IORING_FSYNC_DATASYNC` (fdatasync) |
//! | `Unmap` | `FALLOCATE` `PUNCH_HOLE \| KEEP_SIZE`: a hole in a file; on a block device the kernel makes it a write-zeroes that may deallocate, so it needs write-zeroes support and reads back zeroes (LBPRZ) |
//! | `WriteZeroes` | `FALLOCATE` `ZERO_RANGE \| KEEP_SIZE` (the kernel writes zeroes itself where the device cannot) |
//!
//! Every one is asynchronous through the ring. A read or write goes straight
//! between the device and the request's buffer (the TCMU data area, the SCST
//! buffer) when each iovec meets the O_DIRECT alignment (address to the
//! memory alignment, length to the offset alignment); otherwise it goes
//! through the channel's preallocated bounce pool (counted in
//! [`FileStats::bounced`]), and waits when the pool is exhausted.
//!
//! # Durability
//! The [crate's contract](crate#durability), which this bdev keeps as
//! follows:
//! - a write completes when the kernel has completed the `pwritev2`: with
//!   O_DIRECT the device has accepted the data (it may sit in the device's
//!   volatile cache); without O_DIRECT it is in the page cache;
//! - a FUA write carries `RWF_DSYNC`: it completes once the data, and the
//!   metadata needed to read it back (a file's block allocation), are on
//!   stable media as far as the device promises (the kernel sends a flush
//!   or FUA write to a device with a volatile cache);
//! - a `Flush` is fdatasync of the whole file or device: when it completes,
//!   every write completed before it was submitted is durable in the same
//!   sense. The caller orders flushes after the writes they cover.
//!
//! # Where the unsafe code is
//! `channel.rs` pushes SQEs under [`Ring::push`]'s contract (the memory
//! they name lives until their CQE is reaped), `bounce.rs` copies between
//! the pool and a request's memory under the [`SgList`] contract, `open.rs`
//! calls `ioctl`, `statx` and `fallocate` at open.
//!
//! # Errors
//! Open errors ([`Error::Open`]) name the bdev, the path and the problem.
//! A failed operation maps its errno in one place (`errno.rs`): `ENOSPC` to
//! [`IoError::NoSpace`](crate::IoError::NoSpace), `EIO` to a read or write
//! error by operation; the SCSI layer turns those into sense.

mod bounce;
mod channel;
mod errno;
mod open;
mod stats;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::uring::{RefusalNotice, Ring, RingConfig};
use crate::{
    Bdev, BdevChannel, Capabilities, Error, Geometry, IoOp, IoRequest, IoVec, OpenProblem, SgList,
    Topology,
};

pub use open::Alignment;
pub use stats::FileStats;

use channel::FileChannel;
use stats::ChannelCounters;

/// How to open a `file` bdev. [`FileOptions::new`] sets the defaults
/// documented on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOptions {
    /// A regular file or a block device.
    pub path: PathBuf,
    /// When the path does not exist: create a sparse regular file of this
    /// many bytes (a whole number of blocks). Default `None`: a missing path
    /// is an error.
    pub size: Option<u64>,
    /// Logical block size. Regular files: default 512. Block devices:
    /// default the device's logical block size; if given, a multiple of it.
    pub block_size: Option<u32>,
    /// Requests each channel keeps in its io_uring at once (the ring's SQ
    /// size; more wait in the channel), 1..=32768. Default 128.
    pub queue_depth: u32,
    /// O_DIRECT: bypass the page cache. Default true.
    pub direct: bool,
    /// `IORING_SETUP_IOPOLL` for block devices with poll queues (needs
    /// `direct`; refused at open for a regular file or a device that
    /// cannot be polled).
    /// Completions are then reaped by an `io_uring_enter` on every poll with
    /// I/O in flight, and flushes and deallocations go through a second,
    /// interrupt-driven ring. Default false.
    pub iopoll: bool,
    /// `IORING_SETUP_SQPOLL`: a kernel thread per channel picks up
    /// submissions, so no enter is made while it is awake (it costs a CPU).
    /// Default false.
    pub sqpoll: bool,
    /// Largest read or write in bytes (the bdev's `max_transfer_blocks`).
    /// Default 1 MiB.
    pub max_transfer_bytes: u32,
    /// Bounce pool per channel, in bytes (at least one largest transfer).
    /// Default 4 MiB.
    pub bounce_bytes: usize,
}

impl FileOptions {
    /// The defaults for `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            size: None,
            block_size: None,
            queue_depth: 128,
            direct: true,
            iopoll: false,
            sqpoll: false,
            max_transfer_bytes: 1 << 20,
            bounce_bytes: 4 << 20,
        }
    }
}

/// A bdev over a regular file or a block device.
#[derive(Debug)]
pub struct FileBdev {
    shared: Arc<Shared>,
}

/// What the bdev and its channels share: the open file and what it is.
#[derive(Debug)]
struct Shared {
    name: String,
    options: FileOptions,
    file: File,
    block_device: bool,
    geometry: Geometry,
    topology: Topology,
    capabilities: Capabilities,
    alignment: Alignment,
    /// Every channel's counters, closed channels' included.
    channels: Mutex<Vec<Arc<ChannelCounters>>>,
    /// Reports once that the kernel refused fixed buffers.
    refusal: RefusalNotice,
}

impl Shared {
    fn register_counters(&self, counters: &Arc<ChannelCounters>) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.push(Arc::clone(counters));
    }
}

impl FileBdev {
    /// Opens `options.path` (creating a sparse file of `options.size`
    /// bytes if it is missing and a size is given) as the bdev `name`.
    ///
    /// Errors: [`Error::Open`] naming the bdev, the path and the problem (a
    /// missing path, neither a regular file nor a block device, empty, a
    /// size that is not a whole number of blocks, read-only, O_DIRECT
    /// refused, no io_uring); [`Error::InvalidParameter`] for options out
    /// of range.
    pub fn open(name: impl Into<String>, options: FileOptions) -> Result<Self, Error> {
        let name = name.into();
        if options.queue_depth == 0 || options.queue_depth > 32768 {
            return Err(Error::InvalidParameter(format!(
                "bdev {name}: queue depth {} is not within 1..=32768",
                options.queue_depth
            )));
        }
        if options.iopoll && !options.direct {
            return Err(Error::InvalidParameter(format!(
                "bdev {name}: IOPOLL needs direct I/O"
            )));
        }
        // Before touching the path: a kernel without io_uring is the
        // clearest thing to report.
        if let Err(e) = Ring::<io_uring::squeue::Entry>::new(RingConfig {
            entries: 2,
            iopoll: false,
            sqpoll_idle_ms: None,
        }) {
            return Err(Error::Open {
                name,
                path: options.path,
                problem: OpenProblem::NoIoUring(e),
            });
        }
        let opened = open::open(&name, &options)?;
        if options.max_transfer_bytes < opened.geometry.block_size {
            return Err(Error::InvalidParameter(format!(
                "bdev {name}: max transfer {} bytes is less than one block of {}",
                options.max_transfer_bytes, opened.geometry.block_size
            )));
        }
        let bdev = Self {
            shared: Arc::new(Shared {
                name,
                options,
                file: opened.file,
                block_device: opened.block_device,
                geometry: opened.geometry,
                topology: opened.topology,
                capabilities: opened.capabilities,
                alignment: opened.alignment,
                channels: Mutex::new(Vec::new()),
                refusal: RefusalNotice::default(),
            }),
        };
        if bdev.shared.options.iopoll {
            if !bdev.shared.block_device {
                // Filesystems poll reads but may refuse polled writes that
                // allocate (ext4 does): only block devices are polled.
                return Err(Error::Open {
                    name: bdev.shared.name.clone(),
                    path: bdev.shared.options.path.clone(),
                    problem: OpenProblem::IopollRefused("it is not a block device".into()),
                });
            }
            bdev.probe_iopoll()?;
        }
        Ok(bdev)
    }

    /// Reads block 0 through an IOPOLL ring: a device that cannot be
    /// polled refuses every read and write there, which is better said at
    /// open.
    fn probe_iopoll(&self) -> Result<(), Error> {
        let shared = &self.shared;
        let mut buffer = memmap2::MmapMut::map_anon(shared.geometry.block_size as usize)?;
        let iov = [IoVec::from_slice(&mut buffer)];
        let result = {
            let mut channel = FileChannel::new(Arc::clone(shared), 1)?;
            // SAFETY: `buffer` and `iov` outlive the request, which is polled
            // to completion (or waited for by the channel's drop) below.
            let sgl = unsafe { SgList::from_slice(&iov) };
            let read = IoRequest::new(IoOp::Read, 0, 1, sgl, 0);
            channel
                .submit(read)
                .expect("an empty channel takes a request");
            let mut result = None;
            while result.is_none() {
                channel.poll(&mut |c| result = Some(c.result));
            }
            result.unwrap_or(Ok(()))
        };
        // The probe is not the bdev's work: forget its counters.
        shared
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        result.map_err(|error| Error::Open {
            name: shared.name.clone(),
            path: shared.options.path.clone(),
            problem: OpenProblem::IopollRefused(error.to_string()),
        })
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.shared.options.path
    }

    /// Whether the path is a block device (else a regular file).
    pub fn is_block_device(&self) -> bool {
        self.shared.block_device
    }

    /// The alignment a buffer needs to go to the device without bouncing
    /// (1/1 without O_DIRECT).
    pub fn alignment(&self) -> Alignment {
        self.shared.alignment
    }

    /// What its channels did so far, summed (each channel publishes at the
    /// end of its polls).
    pub fn stats(&self) -> FileStats {
        let channels = self
            .shared
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        FileStats::sum(channels.iter().map(|c| c.as_ref()))
    }
}

impl Bdev for FileBdev {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn geometry(&self) -> Geometry {
        self.shared.geometry
    }

    fn capabilities(&self) -> Capabilities {
        self.shared.capabilities
    }

    fn topology(&self) -> Topology {
        self.shared.topology
    }

    fn open_channel(&self, queue_depth: usize) -> Result<Box<dyn BdevChannel>, Error> {
        Ok(Box::new(FileChannel::new(
            Arc::clone(&self.shared),
            queue_depth,
        )?))
    }
}
