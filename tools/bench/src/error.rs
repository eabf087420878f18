//! Why a bench could not run ([`BenchError`]): a bad flag
//! ([`BenchConfigError`]), or a part of the dataplane or of the simulated
//! kernels that failed, in that part's words.
//!
//! The wrapped errors are part of the message, not a `source`: a source
//! would print the same words twice in an error chain.

use dataplane::lun::LunError;
use dataplane::scst::device::DeviceError;
use dataplane::scst::error::ScstError;
use dataplane::scst::pool::PoolError;
use dataplane::stack::StackError;
use dataplane::tcmu::TcmuError;
use reactor::spsc::RingError;
use sim::scst::SimError;

use crate::initiator::JobError;

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag or combination of flags is invalid; the message names it.
    #[error(transparent)]
    Config(#[from] BenchConfigError),
    /// The bench thread could not be pinned.
    #[error("cannot pin the bench thread to CPU {0}")]
    Pin(usize),
    /// A bdev could not be created.
    #[error("bdev: {0}")]
    Bdev(bdev::Error),
    /// A reactor could not be started.
    #[error("{0}")]
    Reactor(reactor::Error),
    /// The port between a LUN and its bdev poller could not be made.
    #[error("port depth {depth}: {error}")]
    Port {
        /// The depth asked for.
        depth: usize,
        /// Why.
        error: RingError,
    },
    /// The logical unit rejected its configuration.
    #[error("LUN: {0}")]
    Lun(LunError),
    /// The TCMU simulator or device failed.
    #[error("TCMU: {0}")]
    Tcmu(TcmuError),
    /// The SCST simulator or device failed.
    #[error("SCST: {0}")]
    Scst(ScstSetupError),
    /// The workload failed.
    #[error("workload: {0}")]
    Job(JobError),
    /// A file of a file-backed run, or a namespace of an nvme run, cannot
    /// be used or created.
    #[error("--path {path}: {problem}", path = path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The raw io_uring (or NVMe passthrough) reference loop could not
    /// run.
    #[error("reference loop: {0}")]
    RawLoop(String),
}

/// A flag, or a combination of flags, the bench cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BenchConfigError {
    /// The process may run on no CPU.
    #[error("no CPU is available to this process")]
    NoCpu,
    /// A reactor CPU is not available.
    #[error("--cores: CPU {core} is not available (available: {available:?})")]
    CoreNotAvailable {
        /// The CPU asked for.
        core: usize,
        /// Those this process may use.
        available: Vec<usize>,
    },
    /// The simulator's CPU is not available.
    #[error("--sim-core: CPU {core} is not available (available: {available:?})")]
    SimCoreNotAvailable {
        /// The CPU asked for.
        core: usize,
        /// Those this process may use.
        available: Vec<usize>,
    },
    /// No device to drive.
    #[error("--devices must be at least 1")]
    NoDevices,
    /// Devices of no size.
    #[error("--size must be greater than zero")]
    ZeroSize,
    /// The block size is not a power of two of at least 512.
    #[error("--block-size {0} is not a power of two of at least 512")]
    BlockSize(u32),
    /// The size is not a whole number of blocks.
    #[error("--size {size} is not a multiple of the block size {block_size}")]
    SizeNotBlocks {
        /// `--size`.
        size: u64,
        /// `--block-size`.
        block_size: u32,
    },
    /// Verification over a bdev that stores nothing.
    #[error("--verify needs a bdev that stores data (ram or striped), not null")]
    VerifyNull,
    /// A striped bdev without children.
    #[error("--stripe-width must be at least 1")]
    StripeWidth,
    /// The strip is not a power of two of at least a block.
    #[error("--chunk {chunk} is not a power of two of at least the block size {block_size}")]
    Chunk {
        /// `--chunk`.
        chunk: u64,
        /// `--block-size`.
        block_size: u32,
    },
    /// The size is not a whole number of stripes.
    #[error("--size {size} is not a whole number of stripes ({width} x {chunk} bytes)")]
    Stripes {
        /// `--size`.
        size: u64,
        /// `--stripe-width`.
        width: u32,
        /// `--chunk`.
        chunk: u64,
    },
    /// The TCMU ring size is out of range.
    #[error("--ring-size {0} must be a multiple of 8 between 64 KiB and 256 MiB")]
    RingSize(u64),
    /// A file bdev without a path.
    #[error("--bdev file needs --path (a file, a block device or a directory)")]
    NoPath,
    /// A path given for a bdev that has no file.
    #[error("--path is for --bdev file, nvme or striped (over files), not {0}")]
    PathNotFile(&'static str),
    /// An nvme bdev without a path.
    #[error("--bdev nvme needs --path (an NVMe namespace's generic character device, /dev/ngXnY)")]
    NvmeNoPath,
    /// An rbd bdev without an image.
    #[error("--bdev rbd needs --image (an existing RBD image in --pool, one per device)")]
    RbdNoImage,
    /// A flag that means nothing to the rbd bdev.
    #[error("{0} is not for --bdev rbd")]
    NotForRbd(&'static str),
    /// The images of an rbd run do not name one image per device.
    #[error("--image: {given} images for {needed} devices; give one image per device")]
    RbdImages {
        /// Images given.
        given: usize,
        /// Devices of the run.
        needed: usize,
    },
    /// A pattern that writes over an RBD image, without `--destroy-data`.
    #[error(
        "--rw {rw} writes to RBD image {image:?}, destroying what it holds; add --destroy-data \
         if that is what you want"
    )]
    WritesImage {
        /// The (first) image.
        image: String,
        /// The pattern.
        rw: &'static str,
    },
    /// A flag that means nothing to the nvme bdev.
    #[error("{0} is for file bdevs; --bdev nvme has no such option")]
    NotForNvme(&'static str),
    /// The paths of an nvme run do not name one namespace per device.
    #[error(
        "--path: {given} namespaces for {needed} devices; give one NVMe generic device \
         (/dev/ngXnY) per device"
    )]
    NvmePathCount {
        /// Paths given.
        given: usize,
        /// Devices.
        needed: usize,
    },
    /// A pattern that writes, on a device, without `--destroy-data`.
    #[error(
        "--path {path}: --rw {rw} writes to this device, destroying the data on it; \
         add --destroy-data if that is what you want",
        path = path.display()
    )]
    WritesDevice {
        /// The device.
        path: std::path::PathBuf,
        /// The pattern.
        rw: &'static str,
    },
    /// IOPOLL without O_DIRECT.
    #[error("--iopoll needs direct I/O (drop --no-direct)")]
    IopollNeedsDirect,
    /// The paths do not name the files the run needs.
    #[error(
        "--path: {given} paths for {needed} files (devices x stripe width); give one \
         path per file, or a directory for the bench's files"
    )]
    PathCount {
        /// Paths given.
        given: usize,
        /// Files needed.
        needed: usize,
    },
}

/// What failed setting up a simulated SCST device, in that part's words.
#[derive(Debug, thiserror::Error)]
pub enum ScstSetupError {
    /// The simulator could not be created.
    #[error(transparent)]
    Sim(SimError),
    /// The device could not be registered.
    #[error(transparent)]
    Register(ScstError),
    /// The buffer pool could not be made.
    #[error(transparent)]
    Pool(PoolError),
    /// The device refused its settings.
    #[error(transparent)]
    Device(DeviceError),
    /// The initiator's session could not be attached.
    #[error("attaching the SCST session: {0}")]
    Session(SimError),
}

macro_rules! bench_error_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for BenchError {
            fn from(e: $t) -> Self {
                BenchError::$v(e)
            }
        }
    )*};
}
bench_error_from!(
    bdev::Error => Bdev,
    reactor::Error => Reactor,
    LunError => Lun,
    TcmuError => Tcmu,
    ScstSetupError => Scst,
    JobError => Job
);

impl BenchError {
    /// The error of a device stack whose port is `depth` deep, worded as
    /// the bench words the part that failed.
    pub(crate) fn from_stack(error: StackError, depth: usize) -> Self {
        match error {
            StackError::Port(error) => BenchError::Port { depth, error },
            StackError::Lun(e) => BenchError::Lun(e),
            StackError::Tcmu(e) => BenchError::Tcmu(e),
            StackError::Register(e) => ScstSetupError::Register(e).into(),
            StackError::Pool(e) => ScstSetupError::Pool(e).into(),
            StackError::ScstDevice(e) => ScstSetupError::Device(e).into(),
            StackError::Channel(e) => BenchError::Bdev(e),
        }
    }
}
