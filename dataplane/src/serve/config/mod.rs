//! The `dataplane serve` configuration file (TOML).
//!
//! ```toml
//! [reactors]
//! cores = [1]              # CPUs, one reactor each (required)
//! idle = "adaptive"        # "busy" | "adaptive" (default)
//! idle_polls_before_sleep = 10000  # adaptive: spin this many idle polls
//! min_spin_us = 0          # adaptive: and at least this long after work
//! max_sleep_ms = 10        # adaptive: longest sleep
//!
//! [[bdev]]
//! name = "ram0"            # what LIO's dev_config=<subtype>/<name> names
//! type = "ram"             # "ram" | "null" | "file" | "nvme" | "striped"
//! size = "1GiB"
//! block_size = 512         # default 512
//!
//! [[bdev]]
//! name = "disk0"
//! type = "file"            # a regular file or a block device, via io_uring
//! path = "/var/lib/dataplane/disk0.img"
//! size = "10GiB"           # optional: create a sparse file if missing;
//!                          # an existing file or device must have this size
//! # block_size = 512       # files: default 512; block devices: theirs
//! #                        # (a multiple of it if given)
//! # queue_depth = 128      # requests in each channel's io_uring
//! # direct = true          # O_DIRECT
//! # iopoll = false         # polled completions (block devices with poll queues)
//! # sqpoll = false         # a kernel submission thread per channel
//! # fixed_buffers = true   # register the frontends' memory with io_uring
//!
//! [[bdev]]
//! name = "nvme0"
//! type = "nvme"            # an NVMe namespace through passthrough (Linux 5.19+)
//! path = "/dev/ng0n1"      # its generic character device
//! # queue_depth = 128      # commands in each channel's io_uring
//! # iopoll = false         # polled completions (nvme poll_queues)
//! # max_transfer = "1MiB"  # largest read/write; split at the namespace's MDTS
//! # unmap = "auto"         # "auto" | "deallocate" | "write-zeroes"
//! # fixed_buffers = true   # register the frontends' memory with io_uring
//!
//! [[bdev]]
//! name = "fast0"
//! type = "striped"
//! children = ["ram1", "ram2"]  # ram, null, file or nvme bdevs of one block size
//! chunk = "128KiB"
//!
//! [tcmu]
//! subtype = "dataplane"    # default
//! placement = "round-robin"
//! rescan_interval_ms = 1000
//! doorbell_batch = 32      # most completions per doorbell (1 = no holding)
//! coalesce_max_hold_us = 400  # longest hold the hold tuner tries
//! # coalesce_hold_us = 50  # a fixed hold instead of the tuner's choice
//! completion_coalesce_us = 0  # completion coalescing window (0 = off)
//! completion_affinity = "auto"  # tcm_loop's completion CPU follows the load ("kernel": never set)
//!
//! [[tcmu.pin]]
//! device = "disk0"         # LIO device name (configfs directory)
//! reactor = 0              # index into reactors.cores
//!
//! [[scst]]
//! name = "disk1"           # SCST device name (/sys/kernel/scst_tgt/devices/disk1)
//! bdev = "ram0"            # a [[bdev]] (not a striped bdev's child)
//! # block_size = 512       # default: the bdev's (must equal it)
//! # version = "..."        # DEV_USER_VERSION; default: found at run time
//! # reactor = 0            # default: round-robin with the TCMU devices
//! # parse_type = "standard"   # "standard" | "call" | "exception"
//! # memory_reuse = "all"   # "all" | "read" | "write" | "none"
//! # on_free_cmd = "ignore" # default: "ignore" with memory_reuse "all", else "call"
//! # tst = 1, queue_alg = 1, qerr = 0, tas = 0, swp = 0, d_sense = 0
//! # pool_mb = 256          # cap of the device's buffer pool
//! # idle_poll_us = 5       # an idle device looks for new commands this often
//! # doorbell_batch = 32    # most replies held for one ioctl
//! # coalesce_max_hold_us = 400, coalesce_hold_us = ...  # as in [tcmu]
//! # completion_coalesce_us = 0  # completion coalescing window (0 = off)
//!
//! [[scst.export]]          # a LUN to export it as, after every registration
//! # driver = "scst_local"  # target driver
//! # target = "scst_local_tgt"  # default with scst_local; required otherwise
//! # lun = 0
//! ```
//!
//! Parsing rejects unknown keys; [`ServeConfig::validate`] checks values and
//! cross-references. Every error names the key it is about. What only the
//! machine can tell (whether a file or nvme bdev's path can be opened, its
//! device's block size) is checked when the server starts, which leaves
//! such a bdev out rather than failing (see [`crate::serve::server`]).
//!
//! # Files
//! One per section: `reactors.rs`, `bdevs.rs`, `tcmu.rs`, `scst.rs`; the
//! coalescing keys both frontends share in `coalesce.rs`; sizes and names
//! in `value.rs`; [`ServeConfig`] (parsing, validation in file order,
//! lookups) in `file.rs`; [`ConfigError`] in `error.rs`.

mod bdevs;
mod coalesce;
mod error;
mod file;
mod reactors;
mod scst;
mod tcmu;
mod value;

#[cfg(test)]
mod tests;

pub use bdevs::{
    BdevConfig, UnmapConfig, DEFAULT_FILE_QUEUE_DEPTH, DEFAULT_NVME_MAX_TRANSFER,
    DEFAULT_NVME_QUEUE_DEPTH, DEFAULT_RBD_OP_TIMEOUT_SECS,
};
pub use coalesce::{DEFAULT_DOORBELL_BATCH, MAX_COMPLETION_COALESCE_US, MAX_DOORBELL_BATCH};
pub use error::ConfigError;
pub use file::ServeConfig;
pub use reactors::{Idle, ReactorsConfig};
pub use scst::{
    ScstConfig, ScstExport, DEFAULT_SCST_IDLE_POLL_US, DEFAULT_SCST_POOL_MB, MAX_SCST_IDLE_POLL_US,
    MAX_SCST_POOL_MB, MIN_SCST_POOL_MB,
};
pub use tcmu::{CompletionAffinityMode, Pin, Placement, TcmuConfig};
pub use value::Size;
