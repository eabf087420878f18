//! The `rbd` bdev: a Ceph RBD image through librbd's C API, loaded at run
//! time (`ffi.rs`: `dlopen` of `librbd.so.1` and `librados.so.2`, Debian's
//! `librbd1`), so that the dataplane builds and runs without Ceph and only
//! opening an `rbd` bdev needs it.
//!
//! # Opening
//! [`RbdBdev::open`] connects once per bdev (`rados_create2` as
//! `client.<user>`, the `ceph.conf` given or librados' default search, the
//! keyring, `rados_connect`), opens the pool's I/O context (and namespace)
//! and the image (`rbd_open`), and reads its size and object size
//! (`rbd_stat`). The client is configured so that a dead cluster gives
//! errors instead of hangs: `rados_osd_op_timeout`,
//! `rados_mon_op_timeout` and `client_mount_timeout` are set to
//! [`RbdOptions::op_timeout`] (30 s by default), after which an operation
//! the OSDs or monitors do not answer fails with `ETIMEDOUT`, which the
//! LUN reports as NOT READY; and `rbd_skip_partial_discard` is turned off,
//! so a discard zeroes the unaligned parts of its range rather than
//! skipping them and every unmapped block reads back zeroes (LBPRZ; the
//! options may turn it back on, and then the bdev does not claim LBPRZ).
//! `rbd_non_blocking_aio` is forced on: an AIO call hands the request to
//! librbd's threads and returns, so the reactor never waits inside librbd.
//!
//! # What it reports
//! - **Geometry**: the image size in blocks of [`RbdOptions::block_size`]
//!   (512 or 4096; a size that is not a whole number of blocks is refused).
//! - **Object size** (4 MiB by default): the unmap granularity
//!   ([`Topology::unmap_granularity_blocks`]: a discard of whole objects
//!   deletes them) and the optimal I/O boundary
//!   ([`Capabilities::optimal_boundary_blocks`], which the SCSI layer
//!   reports in VPD B0 as OPTIMAL TRANSFER LENGTH (GRANULARITY); capped at
//!   2^15 blocks, the largest power of two the 16-bit granularity field
//!   holds). The physical block is the logical one (an OSD writes any
//!   aligned block without reading the object).
//! - **Cache**: a volatile cache when librbd's cache is on (`rbd_cache`,
//!   the default): flushes do real work.
//!
//! # How SCSI maps onto it
//! See `plan.rs`: `Read`/`Write` → `rbd_aio_readv`/`rbd_aio_writev`;
//! FUA → `rbd_aio_write2` with `LIBRADOS_OP_FLAG_FADVISE_FUA` when the
//! transfer is one buffer and the cache honours the flag (the
//! `writearound` policy, Ceph 15 and later's default), else the write and
//! then `rbd_aio_flush`, chained in the channel; `Flush` →
//! `rbd_aio_flush`; `Unmap` → `rbd_aio_discard`; `WriteZeroes` →
//! `rbd_aio_write_zeroes`. Every request passes the shared checks first.
//!
//! # Completions
//! Each AIO is created with `rbd_aio_create_completion(key, NULL)`: no
//! callback, its argument the address of a per-slot key of the submitting
//! channel. librbd queues finished AIOs on the image's event queue and
//! writes the image's eventfd (`rbd_set_image_notification`);
//! [`BdevChannel::poll`] takes them with `rbd_poll_io_events` (a lock-free
//! queue in librbd, no system call) only while the channel has AIOs in
//! librbd. With several channels on one bdev a channel may take another's
//! completion: it hands it over (`route.rs`). The eventfd is the channel's
//! wait fd, so a reactor may sleep with I/O in flight.
//!
//! # Allocations
//! None on the dataplane's side per request: slots, keys, trimmed iovec
//! copies (up to 8 iovecs; a longer list grows its slot's copy once) and
//! the handover queues are preallocated with the channel. librbd allocates
//! per request with C++ `new` on its own heap: the AIO completion
//! (`rbd_aio_create_completion`), its internal request objects, and a
//! copy of each write's data (`rbd_disable_zero_copy_writes`, on by
//! default).
//!
//! # Aborts and dropping a channel
//! librbd cannot cancel an AIO, so [`BdevChannel::abort`] says it cannot.
//! Dropping a channel with AIOs in librbd waits for them (polling) for up
//! to twice the operation timeout plus 5 s; past that it logs an error and
//! leaks the channel's slots and keys and the image rather than free
//! memory librbd may still write.
//!
//! # Errors
//! Open errors ([`Error::Open`]) name the bdev, `rbd:pool[/namespace]/image`
//! and the step that failed, with the errno explained (a missing pool,
//! image, configuration or keyring, monitors that do not answer, librbd
//! not installed). I/O errors map from librbd's errno in `errno.rs`.

mod channel;
mod cluster;
mod errno;
mod ffi;
mod plan;
mod route;
mod stats;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Bdev, BdevChannel, Capabilities, Error, Geometry, OpenProblem, Topology};

pub use stats::RbdStats;

use channel::RbdChannel;
use cluster::{Connection, Facts};
use plan::Rules;
use stats::ChannelCounters;

/// Largest unmap or write-zeroes in one request, in bytes (the LUN splits
/// larger ones): 1 GiB, 256 objects of the default size, which librbd
/// deletes or zeroes well within an operation timeout.
const MAX_UNMAP_BYTES: u64 = 1 << 30;

/// How to open an `rbd` bdev. [`RbdOptions::new`] sets the defaults
/// documented on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdOptions {
    /// The bdev's name.
    pub name: String,
    /// The pool holding the image.
    pub pool: String,
    /// The image.
    pub image: String,
    /// The RADOS namespace in the pool. Default none (the default
    /// namespace).
    pub namespace: Option<String>,
    /// The `ceph.conf` to read. Default none: librados' own search
    /// (`$CEPH_CONF`, `/etc/ceph/ceph.conf`, `~/.ceph/config`,
    /// `./ceph.conf`).
    pub conf: Option<PathBuf>,
    /// The client id (`client.<user>`). Default none: `admin`.
    pub user: Option<String>,
    /// The keyring holding the user's key. Default none: what the
    /// configuration names.
    pub keyring: Option<PathBuf>,
    /// How long the OSDs and monitors may leave an operation unanswered
    /// before it fails with `ETIMEDOUT` (whole seconds, at least 1;
    /// `rados_osd_op_timeout`, `rados_mon_op_timeout` and
    /// `client_mount_timeout`). Default 30 s: long enough for an OSD to be
    /// marked down and its placement groups to peer elsewhere, short enough
    /// for an initiator's command timeout (typically 30 to 180 s).
    pub op_timeout: Duration,
    /// Logical block size: 512 or 4096. Default 512.
    pub block_size: u32,
    /// Largest read or write in bytes (the bdev's `max_transfer_blocks`).
    /// Default 4 MiB.
    pub max_transfer_bytes: u32,
    /// More client options set with `rados_conf_set` after the
    /// configuration file and the bdev's own settings, before connecting
    /// (e.g. `rbd_cache` = `false`); they may override the timeouts and
    /// `rbd_skip_partial_discard`, not `rbd_non_blocking_aio`. Default
    /// none.
    pub config: Vec<(String, String)>,
}

impl RbdOptions {
    /// The defaults for the bdev `name` over `pool`/`image`.
    pub fn new(name: impl Into<String>, pool: impl Into<String>, image: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            pool: pool.into(),
            image: image.into(),
            namespace: None,
            conf: None,
            user: None,
            keyring: None,
            op_timeout: Duration::from_secs(30),
            block_size: 512,
            max_transfer_bytes: 4 << 20,
            config: Vec::new(),
        }
    }

    /// `pool/image` or `pool/namespace/image`, as the `rbd` tool writes it.
    pub fn spec(&self) -> String {
        format!("{}/{}", self.pool_and_namespace(), self.image)
    }

    /// `pool` or `pool/namespace`.
    fn pool_and_namespace(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{}/{namespace}", self.pool),
            None => self.pool.clone(),
        }
    }

    /// Checks what needs no cluster.
    fn validate(&self) -> Result<(), Error> {
        let bad = |what: String| {
            Err(Error::InvalidParameter(format!(
                "bdev {}: {what}",
                self.name
            )))
        };
        if self.pool.is_empty() || self.image.is_empty() {
            return bad("an rbd bdev needs a pool and an image".into());
        }
        if self.block_size != 512 && self.block_size != 4096 {
            return bad(format!(
                "block size {} is neither 512 nor 4096",
                self.block_size
            ));
        }
        if self.op_timeout < Duration::from_secs(1) {
            return bad(format!(
                "op_timeout {:?} is below one second",
                self.op_timeout
            ));
        }
        if self.max_transfer_bytes < self.block_size {
            return bad(format!(
                "max transfer {} bytes is less than one block of {}",
                self.max_transfer_bytes, self.block_size
            ));
        }
        Ok(())
    }
}

/// A bdev over a Ceph RBD image.
#[derive(Debug)]
pub struct RbdBdev {
    shared: Arc<Shared>,
}

/// What the bdev and its channels share: the open image and what it is.
#[derive(Debug)]
struct Shared {
    name: String,
    options: RbdOptions,
    connection: Connection,
    facts: Facts,
    geometry: Geometry,
    topology: Topology,
    capabilities: Capabilities,
    rules: Rules,
    /// How long a channel's drop waits for its AIOs.
    drain_timeout: Duration,
    /// Every channel's counters, closed channels' included.
    channels: Mutex<Vec<Arc<ChannelCounters>>>,
}

impl Shared {
    fn register_counters(&self, counters: &Arc<ChannelCounters>) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.push(Arc::clone(counters));
    }
}

impl RbdBdev {
    /// Connects to the cluster and opens `options.image` in `options.pool`
    /// (see the module docs).
    ///
    /// Errors: [`Error::InvalidParameter`] for options out of range;
    /// [`Error::Open`] naming the bdev, `rbd:pool[/namespace]/image` and
    /// what failed: librbd not installed, the configuration or keyring
    /// missing, no monitor answering within the timeout, the user refused,
    /// the pool or the image missing, an empty image or one whose size is
    /// not a whole number of blocks.
    pub fn open(options: RbdOptions) -> Result<Self, Error> {
        options.validate()?;
        let (connection, facts) = Connection::open(&options)?;
        let bs = options.block_size;
        let problem = if facts.size == 0 {
            Some(OpenProblem::Empty)
        } else if !facts.size.is_multiple_of(u64::from(bs)) {
            Some(OpenProblem::MisalignedSize {
                size: facts.size,
                block_size: bs,
            })
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(Error::Open {
                name: options.name.clone(),
                path: PathBuf::from(format!("rbd:{}", options.spec())),
                problem,
            });
        }
        let geometry = Geometry::checked(bs, facts.size / u64::from(bs))?;
        let object_blocks = (facts.object_size / u64::from(bs)).max(1);
        let capabilities = Capabilities {
            volatile_cache: facts.cache,
            unmap: true,
            unmap_reads_zeroes: facts.discard_zeroes,
            write_zeroes: true,
            max_transfer_blocks: options.max_transfer_bytes / bs,
            max_unmap_blocks: (MAX_UNMAP_BYTES / u64::from(bs)) as u32,
            optimal_boundary_blocks: object_blocks.min(1 << 15) as u32,
        };
        let topology = Topology {
            physical_block_size: bs,
            unmap_granularity_blocks: object_blocks.min(u64::from(u32::MAX)) as u32,
        };
        let rules = Rules {
            geometry,
            capabilities,
            cache: facts.cache,
            fua_native: facts.fua_native,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                name: options.name.clone(),
                drain_timeout: options.op_timeout * 2 + Duration::from_secs(5),
                options,
                connection,
                facts,
                geometry,
                topology,
                capabilities,
                rules,
                channels: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The options it was opened with.
    pub fn options(&self) -> &RbdOptions {
        &self.shared.options
    }

    /// The image's size in bytes.
    pub fn image_size(&self) -> u64 {
        self.shared.facts.size
    }

    /// The image's object size in bytes.
    pub fn object_size(&self) -> u64 {
        self.shared.facts.object_size
    }

    /// librbd's cache policy as configured (`writearound`, `writeback`,
    /// `writethrough`; empty if librbd did not say), and whether the cache
    /// is on.
    pub fn cache(&self) -> (bool, &str) {
        (self.shared.facts.cache, &self.shared.facts.cache_policy)
    }

    /// The loaded librbd's version, e.g. (1, 16, 0).
    pub fn librbd_version(&self) -> (i32, i32, i32) {
        self.shared.connection.api.version()
    }

    /// What its channels did so far, summed (each channel publishes at the
    /// end of its polls).
    pub fn stats(&self) -> RbdStats {
        let channels = self
            .shared
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        RbdStats::sum(channels.iter().map(|c| c.as_ref()))
    }
}

impl Bdev for RbdBdev {
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
        Ok(Box::new(RbdChannel::new(
            Arc::clone(&self.shared),
            queue_depth,
        )?))
    }
}
