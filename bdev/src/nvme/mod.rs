//! The `nvme` bdev: an NVMe namespace driven by NVMe commands passed
//! through the kernel on its generic character device (`/dev/ngXnY`), one
//! io_uring per channel ([`crate::uring`]) with `IORING_OP_URING_CMD`,
//! 128-byte SQEs and 32-byte CQEs. No block layer, filesystem or page cache
//! between the SCSI command and the controller: each request is one NVMe
//! command (or a few, when it is larger than the controller takes at once).
//!
//! Linux 5.19 or later (vectored commands: 6.1); on Linux before 6.2 the
//! kernel allows passthrough only to CAP_SYS_ADMIN.
//!
//! # What is reported, and from where
//! At open, through `NVME_IOCTL_ADMIN_CMD` on the ng device itself (its
//! `ioctl` hands the admin commands to the namespace's controller, so the
//! controller's `/dev/nvmeX` is not needed; Linux 6.1 asks for
//! CAP_SYS_ADMIN, 6.2+ lets anyone who opened the device send these two
//! Identify commands), Identify Controller (CNS 01h) and Identify Namespace
//! (CNS 00h, the NSID from `NVME_IOCTL_ID`) give:
//! - **capacity**: NSZE blocks of the LBA format FLBAS selects (LBA Data
//!   Size). A format with metadata (with or without protection
//!   information) is refused, as is a write-protected namespace (NSATTR).
//! - **largest command**: MDTS, in units of the controller's minimum page
//!   size CAP.MPSMIN, which passthrough cannot read: taken as 4 KiB, and
//!   capped by the kernel's limits for the namespace's queue
//!   (`/sys/block/nvmeXnY/queue/max_hw_sectors_kb`, computed from the real
//!   CAP, and `max_segments`: the kernel maps a passthrough buffer one page
//!   per segment), 64 Ki blocks at most. A read or write larger than that
//!   is split into several commands; the bdev's own limit
//!   ([`Capabilities::max_transfer_blocks`], advertised in VPD B0) is
//!   [`NvmeOptions::max_transfer_bytes`].
//! - **volatile cache** (VWC bit 0): [`Capabilities::volatile_cache`], so
//!   the LUN reports WCE and SYNCHRONIZE CACHE sends a Flush; without one a
//!   flush completes at once.
//! - **unmap and write zeroes** from ONCS (bit 2 Dataset Management, bit 3
//!   Write Zeroes; Write Zeroes is not used when the kernel turned it off
//!   for the device, `write_zeroes_max_bytes` 0) and DLFEAT: see the table
//!   below and [`UnmapMode`]. LBPRZ (`unmap_reads_zeroes`) is reported only
//!   when an unmap is a Write Zeroes, which reads back zeroes whatever the
//!   controller does; a Dataset Management deallocation is advisory (the
//!   controller may keep the data), so it never claims LBPRZ.
//! - **topology**: the physical block from NPWG capped by the atomic write
//!   unit (NAWUPF, else AWUPF), the unmap granularity from NPDG, the
//!   optimal boundary from NOIOB, when NSFEAT bit 4 says the NVMe 1.4
//!   optimal I/O fields are valid (as Linux reports them for the block
//!   device).
//!
//! At open the bdev also reads block 0 through the passthrough path (and
//! once more as a vectored command, to learn whether the kernel takes
//! them), so a kernel without passthrough, a permission refused or a dead
//! namespace are said at open, not on the first I/O.
//!
//! # How SCSI maps onto it
//! | request | NVMe command |
//! | --- | --- |
//! | `Read`/`Write` | Read (02h) / Write (01h), split at the largest command; one buffer as `NVME_URING_CMD_IO`, several iovecs as `NVME_URING_CMD_IO_VEC`, a buffer inside registered memory as a fixed-buffer command (`IORING_URING_CMD_FIXED`, Linux 6.1; the memory registered in pieces of at most `max_segments - 1` pages, as `uring/fixed.rs` explains) |
//! | `Write` with FUA | Write with FUA (CDW12 bit 30) |
//! | `Flush` | Flush (00h) of the namespace; completes at once without a volatile cache |
//! | `Unmap` (UNMAP, and WRITE SAME with UNMAP when LBPRZ is reported) | [`UnmapMode::Auto`]: Write Zeroes with Deallocate (CDW12 bit 25) when DLFEAT says it deallocates and reads back zeroes (bit 3 and 001b), else Dataset Management (09h) with Attribute Deallocate over one range |
//! | `WriteZeroes` (WRITE SAME of zeroes without UNMAP) | Write Zeroes (08h) without Deallocate, FUA when asked |
//!
//! The LUN sends an `Unmap` for a WRITE SAME with the UNMAP bit only when
//! the bdev reports LBPRZ, and a `WriteZeroes` otherwise: so an `Unmap` is
//! exactly "deallocate, and the blocks must then read as zeroes" whenever
//! the bdev promised that, which is how the bdev knows to set Deallocate on
//! a Write Zeroes. Every command is asynchronous through the ring.
//!
//! A buffer goes straight to the controller when the kernel can map it
//! (4-byte aligned addresses and lengths; several iovecs joined at 4 KiB
//! boundaries); otherwise through the channel's preallocated bounce pool
//! (counted in [`NvmeStats::bounced`]), rather than through pages the
//! kernel would allocate per request.
//!
//! # Durability
//! The [crate's contract](crate#durability), kept by the NVMe commands'
//! own semantics:
//! - a write completes when the controller has completed the Write: the
//!   data may sit in its volatile write cache;
//! - a FUA write completes once the data is in non-volatile media (NVMe
//!   Force Unit Access);
//! - a `Flush` is an NVMe Flush of the namespace: it completes once every
//!   write completed before it was submitted is in non-volatile media. The
//!   caller orders flushes after the writes they cover. Without a volatile
//!   cache every completed write already is, and a flush completes at
//!   once.
//!
//! # Where the unsafe code is
//! `channel.rs` pushes SQEs under [`Ring::push`](crate::uring::Ring::push)'s
//! contract (the memory they name lives until their CQE is reaped),
//! `bounce.rs` copies between the pool and a request's memory under the
//! [`SgList`](crate::SgList) contract, `open.rs` calls the NVMe `ioctl`s and pushes the
//! probe's SQEs. The ABI structs (`cmd.rs`) are plain data, checked against
//! the kernel's header at compile time and in a test.
//!
//! # Errors
//! Open errors ([`Error::Open`]) name the bdev, the path and the problem:
//! missing, not an NVMe generic character device (a file, a block device,
//! the controller's device, another character device), no passthrough in
//! this kernel, permission, an unsupported LBA format, a write-protected
//! namespace, a failed Identify or probe read. A failed command maps its
//! NVMe status or errno in one place (`status.rs`, with the table from the
//! NVM Express SCSI translation reference); the SCSI layer turns the
//! [`IoError`](crate::IoError) into sense.

mod bounce;
mod channel;
pub mod cmd;
mod identify;
mod open;
mod plan;
mod profile;
mod stats;
pub mod status;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::uring::{RefusalNotice, Ring, RingConfig};
use crate::{Bdev, BdevChannel, Capabilities, Error, Geometry, OpenProblem, Topology};

pub use profile::UnmapMode;
pub use stats::NvmeStats;

use channel::NvmeChannel;
use profile::Profile;
use stats::ChannelCounters;

/// How to open an `nvme` bdev. [`NvmeOptions::new`] sets the defaults
/// documented on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeOptions {
    /// The namespace's generic character device, `/dev/ngXnY`.
    pub path: PathBuf,
    /// Commands each channel keeps in its io_uring at once (the ring's SQ
    /// size; more requests wait in the channel), 1..=32768. Default 128.
    pub queue_depth: u32,
    /// `IORING_SETUP_IOPOLL`: completions are polled from the controller's
    /// poll queues (the nvme driver's `poll_queues` parameter) by an
    /// `io_uring_enter` on every poll with commands in flight. Refused at
    /// open when the namespace's queue has no poll queues. Default false.
    pub iopoll: bool,
    /// Largest read or write in bytes (the bdev's `max_transfer_blocks`);
    /// larger than one command's, it is split. Default 1 MiB.
    pub max_transfer_bytes: u32,
    /// Bounce pool per channel, in bytes (at least one buffer per command
    /// of the largest request). Default 4 MiB.
    pub bounce_bytes: usize,
    /// Which command an unmap is. Default [`UnmapMode::Auto`].
    pub unmap: UnmapMode,
}

impl NvmeOptions {
    /// The defaults for `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            queue_depth: 128,
            iopoll: false,
            max_transfer_bytes: 1 << 20,
            bounce_bytes: 4 << 20,
            unmap: UnmapMode::Auto,
        }
    }
}

/// Who the controller and namespace are (from Identify), for reports and
/// inquiry data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeIdentity {
    /// Model Number.
    pub model: String,
    /// Serial Number.
    pub serial: String,
    /// Firmware Revision.
    pub firmware: String,
    /// NVMe version the controller implements, "major.minor".
    pub version: String,
    /// The namespace ID.
    pub nsid: u32,
    /// The in-use LBA format's index.
    pub lba_format: u8,
    /// MDTS in bytes (taking the minimum page as 4 KiB); `None`: no limit.
    pub mdts_bytes: Option<u64>,
    /// Largest command this bdev sends, in bytes.
    pub command_bytes: u64,
    /// Deallocated blocks read back as zeroes (DLFEAT 001b), whatever
    /// command deallocated them.
    pub deallocated_reads_zeroes: bool,
    /// The kernel takes vectored passthrough commands (Linux 6.1+).
    pub vectored: bool,
}

/// A bdev over an NVMe namespace through I/O passthrough.
#[derive(Debug)]
pub struct NvmeBdev {
    shared: Arc<Shared>,
}

/// What the bdev and its channels share: the open device and what it is.
#[derive(Debug)]
struct Shared {
    name: String,
    options: NvmeOptions,
    file: File,
    nsid: u32,
    profile: Profile,
    vectored: bool,
    /// Largest fixed buffer to register (see `uring/fixed.rs`).
    fixed_piece_bytes: usize,
    identity: NvmeIdentity,
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

impl NvmeBdev {
    /// Opens the NVMe namespace at `options.path` (`/dev/ngXnY`) as the
    /// bdev `name`.
    ///
    /// Errors: [`Error::Open`] naming the bdev, the path and the problem
    /// (see the [module docs](self#errors)); [`Error::InvalidParameter`]
    /// for options out of range.
    pub fn open(name: impl Into<String>, options: NvmeOptions) -> Result<Self, Error> {
        let name = name.into();
        if options.queue_depth == 0 || options.queue_depth > 32768 {
            return Err(Error::InvalidParameter(format!(
                "bdev {name}: queue depth {} is not within 1..=32768",
                options.queue_depth
            )));
        }
        let fail = |problem| Error::Open {
            name: name.clone(),
            path: options.path.clone(),
            problem,
        };
        // Before touching the path: a kernel without io_uring is the
        // clearest thing to report.
        if let Err(e) = Ring::<io_uring::squeue::Entry>::new(RingConfig {
            entries: 2,
            iopoll: false,
            sqpoll_idle_ms: None,
        }) {
            return Err(fail(OpenProblem::NoIoUring(e)));
        }
        let opened = open::open(&options.path).map_err(fail)?;
        let profile = profile::profile(
            &opened.controller,
            &opened.namespace,
            &opened.queue,
            options.unmap,
            options.max_transfer_bytes,
        )
        .map_err(fail)?;
        let bs = profile.geometry.block_size;
        if options.max_transfer_bytes < bs {
            return Err(Error::InvalidParameter(format!(
                "bdev {name}: max transfer {} bytes is less than one block of {bs}",
                options.max_transfer_bytes
            )));
        }
        if options.iopoll {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            let release = release.trim();
            if polled_passthrough_is_unsafe(release) {
                return Err(fail(OpenProblem::IopollUnsafeKernel(release.to_owned())));
            }
        }
        if options.iopoll && opened.queue.io_poll == Some(false) {
            return Err(fail(OpenProblem::IopollRefused(format!(
                "the namespace's queue has no poll queues ({}/io_poll is 0; load nvme with \
                 poll_queues=N)",
                opened.queue_dir.display()
            ))));
        }
        let vectored =
            open::probe(&opened.file, opened.nsid, bs, options.iopoll).map_err(|problem| {
                match problem {
                    OpenProblem::ProbeFailed(why) if options.iopoll => {
                        fail(OpenProblem::IopollRefused(why))
                    }
                    other => fail(other),
                }
            })?;
        let (ctrl, ns) = (&opened.controller, &opened.namespace);
        let identity = NvmeIdentity {
            model: ctrl.model.clone(),
            serial: ctrl.serial.clone(),
            firmware: ctrl.firmware.clone(),
            version: ctrl.version_text(),
            nsid: opened.nsid,
            lba_format: ns.format_index,
            mdts_bytes: profile.mdts_bytes,
            command_bytes: u64::from(profile.command_blocks) * u64::from(bs),
            deallocated_reads_zeroes: profile.deallocated_reads_zeroes,
            vectored,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                name,
                options,
                file: opened.file,
                nsid: opened.nsid,
                profile,
                vectored,
                fixed_piece_bytes: fixed_piece_bytes(&opened.queue),
                identity,
                channels: Mutex::new(Vec::new()),
                refusal: RefusalNotice::default(),
            }),
        })
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.shared.options.path
    }

    /// The controller's and namespace's identity and what the bdev made of
    /// them.
    pub fn identity(&self) -> &NvmeIdentity {
        &self.shared.identity
    }

    /// What its channels did so far, summed (each channel publishes at the
    /// end of its polls).
    pub fn stats(&self) -> NvmeStats {
        let channels = self
            .shared
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        NvmeStats::sum(channels.iter().map(|c| c.as_ref()))
    }
}

/// Bytes of the pieces registered memory is cut into: `max_segments - 1`
/// pages of the queue (see `uring/fixed.rs`).
fn fixed_piece_bytes(queue: &profile::QueueLimits) -> usize {
    let segments = queue.max_segments.unwrap_or(127).max(2) as usize;
    ((segments - 1) * profile::CTRL_PAGE).min(1 << 30)
}

impl Bdev for NvmeBdev {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn geometry(&self) -> Geometry {
        self.shared.profile.geometry
    }

    fn capabilities(&self) -> Capabilities {
        self.shared.profile.capabilities
    }

    fn topology(&self) -> Topology {
        self.shared.profile.topology
    }

    fn open_channel(&self, queue_depth: usize) -> Result<Box<dyn BdevChannel>, Error> {
        Ok(Box::new(NvmeChannel::new(
            Arc::clone(&self.shared),
            queue_depth,
        )?))
    }
}

/// True for a kernel release (`uname -r`) before 6.5, whose polled NVMe
/// passthrough can crash: there a command without data (flush, write
/// zeroes) gets a request the poller cannot poll, and when it completes
/// its completion callback is stored where the poller reads its bio
/// cookie (one union in `struct io_uring_cmd`); a poll of the same ring
/// at that moment follows the callback's address as a bio. Seen in the
/// VM test on 6.1.0-57: a general protection fault in `bio_poll` from
/// `nvme_ns_chr_uring_cmd_iopoll`. Linux 6.5 polls the request, kept
/// apart from that union, instead ("nvme: use blk-mq polling for uring
/// commands").
/// A release that does not parse is not refused.
pub fn polled_passthrough_is_unsafe(release: &str) -> bool {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) < (6, 5),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::polled_passthrough_is_unsafe;

    #[test]
    fn polled_passthrough_is_refused_before_linux_6_5() {
        for unsafe_release in ["6.1.0-57-amd64", "5.19.0", "6.4.16-arch1", "4.19.0"] {
            assert!(
                polled_passthrough_is_unsafe(unsafe_release),
                "{unsafe_release}"
            );
        }
        for safe in ["6.5.0", "6.18.44", "7.0-rc1", "10.1.2"] {
            assert!(!polled_passthrough_is_unsafe(safe), "{safe}");
        }
        assert!(!polled_passthrough_is_unsafe(""), "unparsed: not refused");
        assert!(
            !polled_passthrough_is_unsafe("custom"),
            "unparsed: not refused"
        );
    }
}
