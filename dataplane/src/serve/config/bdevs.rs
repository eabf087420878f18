//! `[[bdev]]`: the block devices, and lookups and checks across them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use bdev::fault::{FaultAction, FaultError, FaultRule, OpSet};
use bdev::UnmapMode;
use serde::{Deserialize, Serialize};

use super::error::{err, ConfigError};
use super::value::{check_name, Size};

fn default_block_size() -> u32 {
    512
}

/// Default of a file bdev's `queue_depth`.
pub const DEFAULT_FILE_QUEUE_DEPTH: u32 = 128;
/// Largest `queue_depth` of a file or nvme bdev.
pub const MAX_QUEUE_DEPTH: u32 = 32768;

fn default_queue_depth() -> u32 {
    DEFAULT_FILE_QUEUE_DEPTH
}

fn yes() -> bool {
    true
}

/// Default of an nvme bdev's `queue_depth`.
pub const DEFAULT_NVME_QUEUE_DEPTH: u32 = 128;
/// Default of an nvme bdev's `max_transfer`: 1 MiB.
pub const DEFAULT_NVME_MAX_TRANSFER: u64 = 1 << 20;

/// Default of an rbd bdev's `op_timeout_secs`.
pub const DEFAULT_RBD_OP_TIMEOUT_SECS: u64 = 30;

fn default_rbd_op_timeout() -> u64 {
    DEFAULT_RBD_OP_TIMEOUT_SECS
}

fn default_nvme_queue_depth() -> u32 {
    DEFAULT_NVME_QUEUE_DEPTH
}

fn default_nvme_max_transfer() -> Size {
    Size(DEFAULT_NVME_MAX_TRANSFER)
}

/// An nvme bdev's `unmap`: which NVMe command an UNMAP becomes
/// ([`bdev::UnmapMode`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnmapConfig {
    /// Write Zeroes with Deallocate where the namespace promises zeroes
    /// after a deallocation (LBPRZ reported), else Dataset Management.
    #[default]
    Auto,
    /// Always Dataset Management (deallocate); LBPRZ not reported.
    Deallocate,
    /// Always Write Zeroes (with Deallocate where supported); LBPRZ
    /// reported.
    WriteZeroes,
}

impl UnmapConfig {
    /// The bdev's mode.
    pub fn mode(self) -> UnmapMode {
        match self {
            UnmapConfig::Auto => UnmapMode::Auto,
            UnmapConfig::Deallocate => UnmapMode::Deallocate,
            UnmapConfig::WriteZeroes => UnmapMode::WriteZeroes,
        }
    }
}

/// One `[[bdev]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum BdevConfig {
    /// Anonymous memory.
    Ram {
        /// Unique name.
        name: String,
        /// Bytes.
        size: Size,
        /// Logical block size.
        #[serde(default = "default_block_size")]
        block_size: u32,
    },
    /// Completes without storing data.
    Null {
        /// Unique name.
        name: String,
        /// Bytes.
        size: Size,
        /// Logical block size.
        #[serde(default = "default_block_size")]
        block_size: u32,
    },
    /// A regular file or a block device, through io_uring
    /// ([`bdev::file`]).
    File {
        /// Unique name.
        name: String,
        /// The file or block device.
        path: PathBuf,
        /// Bytes: when `path` does not exist, a sparse regular file of this
        /// size is created; an existing file or device must have it.
        #[serde(default)]
        size: Option<Size>,
        /// Logical block size. Regular files: default 512. Block devices:
        /// default the device's; if given, a multiple of it.
        #[serde(default)]
        block_size: Option<u32>,
        /// Requests each channel keeps in its io_uring (more wait in the
        /// channel).
        #[serde(default = "default_queue_depth")]
        queue_depth: u32,
        /// O_DIRECT (bypass the page cache).
        #[serde(default = "yes")]
        direct: bool,
        /// IORING_SETUP_IOPOLL: block devices with poll queues only.
        #[serde(default)]
        iopoll: bool,
        /// IORING_SETUP_SQPOLL: a kernel thread per channel submits.
        #[serde(default)]
        sqpoll: bool,
        /// Register the frontends' data memory as io_uring fixed buffers.
        #[serde(default = "yes")]
        fixed_buffers: bool,
    },
    /// An NVMe namespace through NVMe passthrough on its generic character
    /// device ([`bdev::nvme`]).
    Nvme {
        /// Unique name.
        name: String,
        /// The namespace's generic character device, `/dev/ngXnY`.
        path: PathBuf,
        /// Commands each channel keeps in its io_uring (more wait in the
        /// channel).
        #[serde(default = "default_nvme_queue_depth")]
        queue_depth: u32,
        /// IORING_SETUP_IOPOLL: completions polled from the controller's
        /// poll queues (the nvme driver's `poll_queues`).
        #[serde(default)]
        iopoll: bool,
        /// Largest read or write the bdev takes, in bytes (larger than one
        /// NVMe command, it is split).
        #[serde(default = "default_nvme_max_transfer")]
        max_transfer: Size,
        /// Which command an UNMAP is.
        #[serde(default)]
        unmap: UnmapConfig,
        /// Register the frontends' data memory as io_uring fixed buffers.
        #[serde(default = "yes")]
        fixed_buffers: bool,
    },
    /// A Ceph RBD image through librbd ([`bdev::rbd`]), loaded at run
    /// time: a host without `librbd1` leaves the bdev out.
    Rbd {
        /// Unique name.
        name: String,
        /// The pool holding the image.
        pool: String,
        /// The image (its size is the bdev's).
        image: String,
        /// The RADOS namespace in the pool (default: none).
        #[serde(default)]
        namespace: Option<String>,
        /// The `ceph.conf` to read (default: librados' search,
        /// `$CEPH_CONF` then `/etc/ceph/ceph.conf`).
        #[serde(default)]
        conf: Option<PathBuf>,
        /// The client id, `client.<user>` (default `admin`).
        #[serde(default)]
        user: Option<String>,
        /// The keyring with the user's key (default: what the
        /// configuration names).
        #[serde(default)]
        keyring: Option<PathBuf>,
        /// Logical block size: 512 or 4096.
        #[serde(default = "default_block_size")]
        block_size: u32,
        /// Seconds the cluster may leave an operation unanswered before it
        /// fails (the initiator then sees NOT READY), 1 to 3600.
        #[serde(default = "default_rbd_op_timeout")]
        op_timeout_secs: u64,
        /// More client options for librados/librbd (e.g. `rbd_cache =
        /// "false"`), set after the configuration file is read.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        options: BTreeMap<String, String>,
    },
    /// Injects faults into another bdev's I/O ([`bdev::fault`]).
    Fault {
        /// Unique name.
        name: String,
        /// The bdev the faults are injected into (any other of this file).
        base: String,
        /// Seed of the probabilities and delays drawn: the same seed
        /// replays the same faults.
        #[serde(default)]
        seed: u64,
        /// Bytes of room, as a thin device: a write that would allocate
        /// past it fails with out of space; unmaps give room back.
        #[serde(default)]
        space: Option<Size>,
        /// `[[bdev.rules]]`, tried in order; the first that selects a
        /// request applies.
        #[serde(default)]
        rules: Vec<FaultRuleConfig>,
    },
    /// RAID0 over other bdevs of this file.
    Striped {
        /// Unique name.
        name: String,
        /// Names of `ram`, `null`, `file` or `nvme` bdevs.
        children: Vec<String>,
        /// Strip size in bytes (a power of two).
        chunk: Size,
    },
}

/// One `[[bdev.rules]]` of a fault bdev: which requests it selects and
/// what it does (exactly one of `error`, `latency_us` or `stuck`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRuleConfig {
    /// Operations selected: `read`, `write`, `flush`, `unmap`,
    /// `write-zeroes` (default: all).
    #[serde(default)]
    pub ops: Option<Vec<String>>,
    /// Blocks `[start, end]`, end exclusive (default: the whole device).
    #[serde(default)]
    pub range: Option<[u64; 2]>,
    /// Chance that a matching request is selected, 0 to 1 (default 1).
    #[serde(default)]
    pub probability: Option<Probability>,
    /// Fail with this error: one of [`FaultError::NAMES`].
    #[serde(default)]
    pub error: Option<String>,
    /// Delay the completion by this many microseconds (or, with
    /// `latency_max_us`, by a uniform draw between the two).
    #[serde(default)]
    pub latency_us: Option<u64>,
    /// Longest delay of a uniform draw, microseconds.
    #[serde(default)]
    pub latency_max_us: Option<u64>,
    /// Hold the request until it is aborted.
    #[serde(default)]
    pub stuck: bool,
}

/// A probability as written in the file (compared bit for bit, so that the
/// configuration stays `Eq`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Probability(pub f64);

impl PartialEq for Probability {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Probability {}

impl FaultRuleConfig {
    /// The rule, checked; errors name the key under `at` (the rule's own
    /// key, `bdev[i] ("name").rules[j]`).
    pub fn rule(&self, at: &str) -> Result<FaultRule, ConfigError> {
        let mut ops = OpSet::NONE;
        match &self.ops {
            None => ops = OpSet::ALL,
            Some(names) => {
                if names.is_empty() {
                    return err(format!("{at}.ops: must name at least one operation"));
                }
                for (k, name) in names.iter().enumerate() {
                    let Some(op) = OpSet::parse_op(name) else {
                        return err(format!(
                            "{at}.ops[{k}]: unknown operation {name:?}; one of read, write, \
                             flush, unmap, write-zeroes"
                        ));
                    };
                    ops = ops.with(op);
                }
            }
        }
        let range = match self.range {
            Some([start, end]) if start >= end => {
                return err(format!(
                    "{at}.range: [{start}, {end}] is empty (the end is exclusive)"
                ))
            }
            Some([start, end]) => Some((start, end)),
            None => None,
        };
        let probability = self.probability.map_or(1.0, |p| p.0);
        if !(0.0..=1.0).contains(&probability) {
            return err(format!(
                "{at}.probability: {probability} is not between 0 and 1"
            ));
        }
        let given = usize::from(self.error.is_some())
            + usize::from(self.latency_us.is_some())
            + usize::from(self.stuck);
        if given != 1 {
            return err(format!(
                "{at}: give exactly one of error, latency_us or stuck = true"
            ));
        }
        if self.latency_max_us.is_some() && self.latency_us.is_none() {
            return err(format!("{at}.latency_max_us: needs latency_us"));
        }
        let action = if let Some(name) = &self.error {
            let Some(kind) = FaultError::parse(name) else {
                let names: Vec<&str> = FaultError::NAMES.iter().map(|(n, _)| *n).collect();
                return err(format!(
                    "{at}.error: unknown error {name:?}; one of {}",
                    names.join(", ")
                ));
            };
            FaultAction::Fail(kind)
        } else if let Some(min_us) = self.latency_us {
            let max_us = self.latency_max_us.unwrap_or(min_us);
            if max_us < min_us {
                return err(format!(
                    "{at}.latency_max_us: {max_us} is less than latency_us {min_us}"
                ));
            }
            FaultAction::Delay { min_us, max_us }
        } else {
            FaultAction::Stick
        };
        Ok(FaultRule {
            ops,
            range,
            probability,
            action,
        })
    }
}

impl BdevConfig {
    /// The bdev's name.
    pub fn name(&self) -> &str {
        match self {
            BdevConfig::Ram { name, .. }
            | BdevConfig::Null { name, .. }
            | BdevConfig::File { name, .. }
            | BdevConfig::Nvme { name, .. }
            | BdevConfig::Rbd { name, .. }
            | BdevConfig::Fault { name, .. }
            | BdevConfig::Striped { name, .. } => name,
        }
    }

    /// The bdev's type as the file names it (`ram`, `null`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            BdevConfig::Ram { .. } => "ram",
            BdevConfig::Null { .. } => "null",
            BdevConfig::File { .. } => "file",
            BdevConfig::Nvme { .. } => "nvme",
            BdevConfig::Rbd { .. } => "rbd",
            BdevConfig::Fault { .. } => "fault",
            BdevConfig::Striped { .. } => "striped",
        }
    }

    /// The logical block size the configuration gives: `ram` and `null`
    /// always, `file` when `block_size` is set (else known only once the
    /// file or device is open), `nvme` never (its namespace's LBA format),
    /// `striped` and `fault` never (their children's, their base's).
    fn own_block_size(&self) -> Option<u32> {
        match self {
            BdevConfig::Ram { block_size, .. }
            | BdevConfig::Null { block_size, .. }
            | BdevConfig::Rbd { block_size, .. } => Some(*block_size),
            BdevConfig::File { block_size, .. } => *block_size,
            BdevConfig::Nvme { .. } | BdevConfig::Striped { .. } | BdevConfig::Fault { .. } => None,
        }
    }

    /// Whether the bdev opens a file, device or image at start (`file`,
    /// `nvme`, `rbd`): then it can fail for reasons of the machine or the
    /// cluster, and is left out rather than stop the start.
    pub fn opens_device(&self) -> bool {
        matches!(
            self,
            BdevConfig::File { .. } | BdevConfig::Nvme { .. } | BdevConfig::Rbd { .. }
        )
    }

    /// Whether devices over it offer it their memory as io_uring fixed
    /// buffers: false for a `file` or `nvme` bdev with `fixed_buffers =
    /// false`, true otherwise (a striped bdev decides for itself).
    pub fn fixed_buffers(&self) -> bool {
        !matches!(
            self,
            BdevConfig::File {
                fixed_buffers: false,
                ..
            } | BdevConfig::Nvme {
                fixed_buffers: false,
                ..
            }
        )
    }
}

impl fmt::Display for BdevConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bdev {:?}", self.kind(), self.name())
    }
}

fn check_block_size(at: &str, block_size: u32) -> Result<(), ConfigError> {
    if !(512..=65536).contains(&block_size) || !block_size.is_power_of_two() {
        return err(format!(
            "{at}.block_size: {block_size} is not a power of two between 512 and 65536"
        ));
    }
    Ok(())
}

fn check_size(at: &str, size: u64, block_size: u32) -> Result<(), ConfigError> {
    if size == 0 {
        return err(format!("{at}.size: must be greater than zero"));
    }
    if !size.is_multiple_of(u64::from(block_size)) {
        return err(format!(
            "{at}.size: {size} is not a multiple of block_size {block_size}"
        ));
    }
    Ok(())
}

/// Checks what `file` and `nvme` bdevs share: a path and a queue depth.
fn check_device(at: &str, path: &Path, queue_depth: u32) -> Result<(), ConfigError> {
    if path.as_os_str().is_empty() {
        return err(format!("{at}.path: must not be empty"));
    }
    if queue_depth == 0 || queue_depth > MAX_QUEUE_DEPTH {
        return err(format!(
            "{at}.queue_depth: {queue_depth} is not between 1 and {MAX_QUEUE_DEPTH}"
        ));
    }
    Ok(())
}

/// Checks the names (valid, unique), sizes and block sizes, the keys of
/// file and nvme bdevs (what can be checked without opening them), the
/// children and chunk of every striped bdev, and the base (another bdev, no
/// cycle) and rules of every fault bdev.
pub(super) fn check_bdevs(bdevs: &[BdevConfig]) -> Result<(), ConfigError> {
    let mut by_name: HashMap<&str, &BdevConfig> = HashMap::new();
    for (i, b) in bdevs.iter().enumerate() {
        let key = format!("bdev[{i}].name");
        check_name(&key, b.name())?;
        if by_name.insert(b.name(), b).is_some() {
            return err(format!("{key}: {:?} is defined twice", b.name()));
        }
    }
    let mut children_of: HashMap<&str, &str> = HashMap::new();
    for (i, b) in bdevs.iter().enumerate() {
        let at = format!("bdev[{i}] ({:?})", b.name());
        match b {
            BdevConfig::Ram {
                size, block_size, ..
            }
            | BdevConfig::Null {
                size, block_size, ..
            } => {
                check_block_size(&at, *block_size)?;
                check_size(&at, size.0, *block_size)?;
            }
            BdevConfig::File {
                path,
                size,
                block_size,
                queue_depth,
                direct,
                iopoll,
                ..
            } => {
                check_device(&at, path, *queue_depth)?;
                if let Some(bs) = block_size {
                    check_block_size(&at, *bs)?;
                }
                if let Some(size) = size {
                    check_size(&at, size.0, block_size.unwrap_or(512))?;
                }
                if *iopoll && !direct {
                    return err(format!("{at}.iopoll: polled I/O needs direct = true"));
                }
            }
            BdevConfig::Nvme {
                path,
                queue_depth,
                max_transfer,
                ..
            } => {
                check_device(&at, path, *queue_depth)?;
                let max = crate::stack::MAX_TRANSFER_BYTES;
                if !(512..=max).contains(&max_transfer.0) || !max_transfer.0.is_multiple_of(512) {
                    return err(format!(
                        "{at}.max_transfer: {} is not a multiple of 512 between 512 and {max}",
                        max_transfer.0
                    ));
                }
            }
            BdevConfig::Rbd {
                pool,
                image,
                namespace,
                block_size,
                op_timeout_secs,
                ..
            } => {
                for (key, value) in [("pool", Some(pool)), ("image", Some(image))]
                    .into_iter()
                    .chain([("namespace", namespace.as_ref())])
                {
                    if value.is_some_and(|v| v.is_empty()) {
                        return err(format!("{at}.{key}: must not be empty"));
                    }
                }
                if ![512, 4096].contains(block_size) {
                    return err(format!("{at}.block_size: {block_size} is not 512 or 4096"));
                }
                if !(1..=3600).contains(op_timeout_secs) {
                    return err(format!(
                        "{at}.op_timeout_secs: {op_timeout_secs} is not between 1 and 3600"
                    ));
                }
            }
            BdevConfig::Fault {
                base, rules, space, ..
            } => {
                if space.is_some_and(|s| s.0 == 0) {
                    return err(format!("{at}.space: must be greater than zero"));
                }
                let key = format!("{at}.base");
                if base == b.name() {
                    return err(format!("{key}: a fault bdev cannot wrap itself"));
                }
                if !by_name.contains_key(base.as_str()) {
                    return err(format!("{key}: no bdev named {base:?}"));
                }
                // A chain of fault bdevs must end at another kind.
                let mut next = base.as_str();
                for _ in 0..bdevs.len() {
                    match by_name.get(next) {
                        Some(BdevConfig::Fault { base, .. }) if base == b.name() => {
                            return err(format!(
                                "{key}: {next:?} wraps {:?} in turn: fault bdevs form a cycle",
                                b.name()
                            ))
                        }
                        Some(BdevConfig::Fault { base, .. }) => next = base,
                        _ => break,
                    }
                }
                for (j, rule) in rules.iter().enumerate() {
                    rule.rule(&format!("{at}.rules[{j}]"))?;
                }
            }
            BdevConfig::Striped {
                name,
                children,
                chunk,
            } => {
                if children.is_empty() {
                    return err(format!("{at}.children: at least one child is required"));
                }
                let mut block_size = None;
                for (j, child) in children.iter().enumerate() {
                    let key = format!("{at}.children[{j}]");
                    let Some(c) = by_name.get(child.as_str()) else {
                        return err(format!("{key}: no bdev named {child:?}"));
                    };
                    if let BdevConfig::Striped { .. } = c {
                        return err(format!(
                            "{key}: {child:?} is striped; children must be ram, null, file, nvme, rbd or fault"
                        ));
                    }
                    if let Some(other) = children_of.insert(child, name) {
                        return err(format!("{key}: {child:?} is already a child of {other:?}"));
                    }
                    // A file bdev without `block_size`, or an nvme bdev,
                    // has its device's, checked when the striped bdev is
                    // made.
                    match (block_size, unwrap_faults(bdevs, c).own_block_size()) {
                        (None, bs) => block_size = bs,
                        (Some(first), Some(bs)) if first != bs => {
                            return err(format!(
                                "{key}: block size {bs} differs from the first child's {first}"
                            ))
                        }
                        _ => {}
                    }
                }
                let bs = u64::from(block_size.unwrap_or(512));
                if chunk.0 < bs || !chunk.0.is_power_of_two() || chunk.0 / bs > u64::from(u32::MAX)
                {
                    return err(format!(
                        "{at}.chunk: {} is not a power of two of at least the block size {bs}",
                        chunk.0
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The bdev named `name`.
pub(super) fn find<'a>(bdevs: &'a [BdevConfig], name: &str) -> Option<&'a BdevConfig> {
    bdevs.iter().find(|b| b.name() == name)
}

/// The parent of `name` if it is a child of a striped bdev.
pub(super) fn parent_of<'a>(bdevs: &'a [BdevConfig], name: &str) -> Option<&'a str> {
    bdevs.iter().find_map(|b| match b {
        BdevConfig::Striped {
            name: parent,
            children,
            ..
        } if children.iter().any(|c| c == name) => Some(parent.as_str()),
        _ => None,
    })
}

/// The logical block size of `bdev` as configured (a striped bdev's is its
/// children's, a fault bdev's its base's); `None` for a striped bdev without valid children, for a
/// file bdev without `block_size` and for an nvme bdev (or a striped bdev
/// over only such bdevs), whose block size is known only once its device is
/// open.
pub(super) fn block_size_of(bdevs: &[BdevConfig], bdev: &BdevConfig) -> Option<u32> {
    match unwrap_faults(bdevs, bdev) {
        BdevConfig::Striped { children, .. } => children
            .iter()
            .filter_map(|c| find(bdevs, c))
            .map(|c| unwrap_faults(bdevs, c))
            .find_map(BdevConfig::own_block_size),
        other => other.own_block_size(),
    }
}

/// The bdev under `bdev`'s fault bdevs (`bdev` itself if it is not one);
/// a base that is missing or a cycle (refused by the checks) stops the
/// walk.
fn unwrap_faults<'a>(bdevs: &'a [BdevConfig], mut bdev: &'a BdevConfig) -> &'a BdevConfig {
    for _ in 0..bdevs.len() {
        match bdev {
            BdevConfig::Fault { base, .. } => match find(bdevs, base) {
                Some(b) => bdev = b,
                None => break,
            },
            _ => break,
        }
    }
    bdev
}

/// Whether the block size of `bdev` is known only once it is open (see
/// [`block_size_of`]).
pub(super) fn block_size_at_open(bdevs: &[BdevConfig], bdev: &BdevConfig) -> bool {
    let at_open = |b: &BdevConfig| {
        let b = unwrap_faults(bdevs, b);
        b.opens_device() && b.own_block_size().is_none()
    };
    match unwrap_faults(bdevs, bdev) {
        BdevConfig::Striped { children, .. } => {
            children.iter().filter_map(|c| find(bdevs, c)).any(at_open)
        }
        other => at_open(other),
    }
}
