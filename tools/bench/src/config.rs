//! What a bench run is: the frontend, the bdev (and for bdevs over
//! storage, where their files or namespaces are: [`FileConfig`]), the
//! workload, the CPUs
//! ([`BenchConfig`]), the checks of its values and where its reactors,
//! simulator and devices go ([`Placement`]).

use std::path::PathBuf;
use std::time::Duration;

use bdev::ram::HUGE_PAGE_SIZE;
use reactor::IdlePolicy;

use crate::error::BenchConfigError;
use crate::initiator::{Pattern, SizeSplit};
use crate::reference::ReferenceConfig;

/// The largest transfer the bench's LUNs accept.
pub const MAX_IO_BYTES: u64 = dataplane::stack::MAX_TRANSFER_BYTES;

/// Kernel interface the bench simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// LIO's TCMU command ring.
    Tcmu,
    /// SCST's scst_user.
    Scst,
}

impl Frontend {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Frontend::Tcmu => "tcmu",
            Frontend::Scst => "scst",
        }
    }

    /// The other frontend (for `--compare`).
    pub fn other(self) -> Self {
        match self {
            Frontend::Tcmu => Frontend::Scst,
            Frontend::Scst => Frontend::Tcmu,
        }
    }
}

/// Block device behind each LUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BdevKind {
    /// Anonymous memory.
    Ram,
    /// Completes without touching data.
    Null,
    /// RAID0 over `width` children with a `chunk`-byte strip: RAM bdevs, or
    /// `file` bdevs when [`FileConfig::paths`] is given.
    Striped {
        /// Number of children.
        width: u32,
        /// Strip size in bytes (a power of two, a multiple of the block size).
        chunk: u64,
    },
    /// A regular file or a block device through io_uring
    /// ([`bdev::file`]), at [`FileConfig::paths`].
    File,
    /// An NVMe namespace through I/O passthrough ([`bdev::nvme`]), at
    /// [`FileConfig::paths`] (`/dev/ngXnY`, one per device).
    Nvme,
    /// A Ceph RBD image through librbd ([`bdev::rbd`]), one of
    /// [`RbdConfig::images`] per device.
    Rbd,
}

impl BdevKind {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            BdevKind::Ram => "ram",
            BdevKind::Null => "null",
            BdevKind::Striped { .. } => "striped",
            BdevKind::File => "file",
            BdevKind::Nvme => "nvme",
            BdevKind::Rbd => "rbd",
        }
    }
}

/// Where the `file` bdevs of a run are (`--bdev file`, or the children of
/// `--bdev striped` when paths are given), or the namespaces of its `nvme`
/// bdevs, and how they are opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// `--path`: one regular file or block device; or a directory, where
    /// the bench uses (and creates when missing) `dataplane-bench-<device>.img`
    /// files, `dataplane-bench-<device>.<child>.img` for a striped bdev's
    /// children; or one path per file needed (devices x stripe width,
    /// device by device). A missing file is created sparse, of `--size`
    /// (divided by the stripe width for a child). For `--bdev nvme`: one
    /// NVMe namespace's generic character device (`/dev/ngXnY`) per
    /// device.
    pub paths: Vec<PathBuf>,
    /// O_DIRECT (`--no-direct` turns it off). Default true.
    pub direct: bool,
    /// IORING_SETUP_IOPOLL (block devices and NVMe namespaces with poll
    /// queues).
    pub iopoll: bool,
    /// IORING_SETUP_SQPOLL (a kernel submission thread per channel).
    pub sqpoll: bool,
    /// Offer the frontend's data memory to the bdev as io_uring fixed
    /// buffers (`--no-fixed-buffers` turns it off). Default true.
    pub fixed_buffers: bool,
    /// A pattern that writes may write to devices (block devices, NVMe
    /// namespaces), destroying the data on them (`--destroy-data`).
    /// Default false: such a run is refused.
    pub destroy_data: bool,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            direct: true,
            iopoll: false,
            sqpoll: false,
            fixed_buffers: true,
            destroy_data: false,
        }
    }
}

/// Where the images of `--bdev rbd` are and how the bench connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdConfig {
    /// `--ceph-conf`: the `ceph.conf` (default: librados' search).
    pub conf: Option<PathBuf>,
    /// `--pool` (default `rbd`).
    pub pool: String,
    /// `--image`: one existing image per device, each at least `--size`.
    pub images: Vec<String>,
    /// `--ceph-user`: the client id (default `admin`).
    pub user: Option<String>,
    /// `--keyring` (default: what the configuration names).
    pub keyring: Option<PathBuf>,
}

impl Default for RbdConfig {
    fn default() -> Self {
        Self {
            conf: None,
            pool: "rbd".to_string(),
            images: Vec::new(),
            user: None,
            keyring: None,
        }
    }
}

/// Everything `dataplane bench` needs to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Kernel interface.
    pub frontend: Frontend,
    /// Bdev type.
    pub bdev: BdevKind,
    /// Bytes per device.
    pub size: u64,
    /// Logical block size of the devices.
    pub block_size: u32,
    /// Access pattern.
    pub pattern: Pattern,
    /// Percent reads for randrw.
    pub rwmix_read: u32,
    /// Bytes per I/O; with `bssplit`, the largest size of the split.
    pub io_size: u64,
    /// A mix of I/O sizes (`--bssplit`), each at most `io_size`.
    pub bssplit: Option<SizeSplit>,
    /// I/Os in flight per device.
    pub iodepth: u32,
    /// Measured time.
    pub runtime: Duration,
    /// Warm-up before measuring.
    pub ramp: Duration,
    /// Reactor cores; empty = the last available core.
    pub cores: Vec<usize>,
    /// Core of the simulated kernel; `None` = first core without a reactor.
    pub sim_core: Option<usize>,
    /// Devices; `None` = one per reactor.
    pub devices: Option<usize>,
    /// Reactor idle policy.
    pub idle: IdlePolicy,
    /// The simulated kernel's idle policy: `Busy` spins while commands
    /// are in flight (the default); `Adaptive` waits on the devices'
    /// completion doorbells after that many idle iterations (TCMU only;
    /// SCST's simulator has no such fd and spins). For bdevs whose
    /// latency is milliseconds (rbd) on hosts with few CPUs, where the
    /// spinning would take a CPU from the storage.
    pub sim_idle: IdlePolicy,
    /// Check data with per-block checksums.
    pub verify: bool,
    /// Simulated kernel work per command on the simulated kernel's thread
    /// (see `Job::with_kernel_cost`); zero = a free kernel.
    pub kernel_cost: Duration,
    /// Also run the reference copy loop (before and after the run).
    pub reference: bool,
    /// Measure the platform's own stalls on the bench's CPUs first.
    pub jitter: bool,
    /// Also run the other frontend with the same settings, in the same
    /// process, and report the ratio.
    pub compare: bool,
    /// Seed for offsets and data.
    pub seed: u64,
    /// Simulated TCMU ring size including the 128-byte mailbox.
    pub ring_size: u64,
    /// Simulated TCMU data area; `None` = automatic.
    pub data_area: Option<u64>,
    /// The files of file-backed bdevs.
    pub file: FileConfig,
    /// The images of rbd bdevs.
    pub rbd: RbdConfig,
}

impl BenchConfig {
    /// `dataplane bench`'s default simulated kernel work per command:
    /// 1 µs, about what a real kernel's SCSI path through tcm_loop or
    /// scst_local costs per command on the initiator's side. Enough that a
    /// handler's poll outruns the arrivals, as on a real kernel.
    pub const DEFAULT_KERNEL_NS: u64 = 1000;
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            frontend: Frontend::Tcmu,
            bdev: BdevKind::Ram,
            size: 1 << 30,
            block_size: 4096,
            pattern: Pattern::RandRead,
            rwmix_read: 50,
            io_size: 4096,
            bssplit: None,
            iodepth: 128,
            runtime: Duration::from_secs(10),
            ramp: Duration::from_secs(1),
            cores: Vec::new(),
            sim_core: None,
            devices: None,
            idle: IdlePolicy::Busy,
            sim_idle: IdlePolicy::Busy,
            verify: false,
            kernel_cost: Duration::ZERO,
            reference: false,
            jitter: false,
            compare: false,
            seed: 1,
            ring_size: 8 << 20,
            data_area: None,
            file: FileConfig::default(),
            rbd: RbdConfig::default(),
        }
    }
}

/// Where a run's threads and devices go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Reactor CPUs, one reactor each.
    pub cores: Vec<usize>,
    /// CPU of the simulated kernel and the initiator.
    pub sim_core: usize,
    /// Devices, spread round-robin over the reactors.
    pub devices: usize,
}

impl BenchConfig {
    /// Checks the values of the configuration; the error names the flag.
    pub(crate) fn check(&self) -> Result<(), BenchConfigError> {
        if self.size == 0 {
            return Err(BenchConfigError::ZeroSize);
        }
        if self.block_size < 512 || !self.block_size.is_power_of_two() {
            return Err(BenchConfigError::BlockSize(self.block_size));
        }
        if !self.size.is_multiple_of(u64::from(self.block_size)) {
            return Err(BenchConfigError::SizeNotBlocks {
                size: self.size,
                block_size: self.block_size,
            });
        }
        if self.verify && self.bdev == BdevKind::Null {
            return Err(BenchConfigError::VerifyNull);
        }
        match self.bdev {
            BdevKind::File if self.file.paths.is_empty() => {
                return Err(BenchConfigError::NoPath);
            }
            BdevKind::Nvme if self.file.paths.is_empty() => {
                return Err(BenchConfigError::NvmeNoPath);
            }
            BdevKind::Ram | BdevKind::Null | BdevKind::Rbd if !self.file.paths.is_empty() => {
                return Err(BenchConfigError::PathNotFile(self.bdev.name()));
            }
            BdevKind::Rbd if self.rbd.images.is_empty() => {
                return Err(BenchConfigError::RbdNoImage);
            }
            _ => {}
        }
        if self.bdev == BdevKind::Nvme {
            if self.file.sqpoll {
                return Err(BenchConfigError::NotForNvme("--sqpoll"));
            }
            if !self.file.direct {
                return Err(BenchConfigError::NotForNvme("--no-direct"));
            }
            // A namespace is a device: whatever it holds, writes destroy.
            if self.pattern.writes() && !self.file.destroy_data {
                return Err(BenchConfigError::WritesDevice {
                    path: self.file.paths[0].clone(),
                    rw: self.pattern.name(),
                });
            }
        }
        if self.bdev == BdevKind::Rbd {
            for (flag, given) in [
                ("--reference", self.reference),
                ("--iopoll", self.file.iopoll),
                ("--sqpoll", self.file.sqpoll),
            ] {
                if given {
                    return Err(BenchConfigError::NotForRbd(flag));
                }
            }
            // An image is somebody's data: writes destroy it.
            if self.pattern.writes() && !self.file.destroy_data {
                return Err(BenchConfigError::WritesImage {
                    image: self.rbd.images[0].clone(),
                    rw: self.pattern.name(),
                });
            }
        }
        if self.file.iopoll && !self.file.direct {
            return Err(BenchConfigError::IopollNeedsDirect);
        }
        if let BdevKind::Striped { width, chunk } = self.bdev {
            if width == 0 {
                return Err(BenchConfigError::StripeWidth);
            }
            if chunk < u64::from(self.block_size) || !chunk.is_power_of_two() {
                return Err(BenchConfigError::Chunk {
                    chunk,
                    block_size: self.block_size,
                });
            }
            let per_child = self.size / u64::from(width);
            if per_child < chunk || !self.size.is_multiple_of(u64::from(width) * chunk) {
                return Err(BenchConfigError::Stripes {
                    size: self.size,
                    width,
                    chunk,
                });
            }
        }
        if self.ring_size < 64 << 10
            || self.ring_size > 256 << 20
            || !self.ring_size.is_multiple_of(8)
        {
            return Err(BenchConfigError::RingSize(self.ring_size));
        }
        Ok(())
    }

    /// The reactor CPUs (default: the last available), the simulator's
    /// (default: the first available one without a reactor) and the number
    /// of devices (default: one per reactor), checked against the CPUs this
    /// thread may run on.
    pub(crate) fn placement(&self) -> Result<Placement, BenchConfigError> {
        let available = reactor::available_cores();
        let Some(&last) = available.last() else {
            return Err(BenchConfigError::NoCpu);
        };
        let cores = if self.cores.is_empty() {
            vec![last]
        } else {
            self.cores.clone()
        };
        for &core in &cores {
            if !available.contains(&core) {
                return Err(BenchConfigError::CoreNotAvailable { core, available });
            }
        }
        let sim_core = match self.sim_core {
            Some(core) if !available.contains(&core) => {
                return Err(BenchConfigError::SimCoreNotAvailable { core, available })
            }
            Some(core) => core,
            None => available
                .iter()
                .copied()
                .find(|c| !cores.contains(c))
                .unwrap_or(available[0]),
        };
        let devices = self.devices.unwrap_or(cores.len());
        if devices == 0 {
            return Err(BenchConfigError::NoDevices);
        }
        if self.bdev == BdevKind::Rbd && self.rbd.images.len() != devices {
            return Err(BenchConfigError::RbdImages {
                given: self.rbd.images.len(),
                needed: devices,
            });
        }
        Ok(Placement {
            cores,
            sim_core,
            devices,
        })
    }

    /// Whether the devices' bdevs are `file` bdevs (or striped over them).
    pub fn file_backed(&self) -> bool {
        match self.bdev {
            BdevKind::File => true,
            BdevKind::Striped { .. } => !self.file.paths.is_empty(),
            BdevKind::Ram | BdevKind::Null | BdevKind::Nvme | BdevKind::Rbd => false,
        }
    }

    /// Whether the devices' bdevs are over storage (files, block devices
    /// or NVMe namespaces) rather than memory: their reference is a raw
    /// io_uring loop, and what they hold is not known to be zeroes.
    pub fn storage_backed(&self) -> bool {
        self.file_backed() || matches!(self.bdev, BdevKind::Nvme | BdevKind::Rbd)
    }

    /// Files (or block devices) per device: the stripe width of a striped
    /// bdev over files, else 1.
    pub(crate) fn files_per_device(&self) -> u32 {
        match self.bdev {
            BdevKind::Striped { width, .. } => width.max(1),
            _ => 1,
        }
    }

    /// Bytes of memory a run over `devices` devices wants on huge pages:
    /// every RAM bdev as it is mapped (each RAM bdev, or each child of a
    /// striped one, rounded up to whole huge pages; none for `null` and
    /// bdevs over storage), and the reference copy loop's source buffer
    /// when it is asked for (the reference of a run over storage is a raw
    /// io_uring loop instead). What `vm.nr_hugepages` has to cover.
    pub fn huge_page_bytes(&self, devices: usize) -> u64 {
        if self.storage_backed() {
            return 0;
        }
        let mapped = |bytes: u64| bytes.next_multiple_of(HUGE_PAGE_SIZE as u64);
        let block = u64::from(self.block_size.max(1));
        let per_device = match self.bdev {
            BdevKind::Null | BdevKind::File | BdevKind::Nvme | BdevKind::Rbd => 0,
            BdevKind::Ram => mapped(self.size),
            BdevKind::Striped { width, .. } => {
                let width = u64::from(width.max(1));
                width * mapped(self.size / block / width * block)
            }
        };
        let reference = if self.reference {
            ReferenceConfig::default().source_size as u64
        } else {
            0
        };
        per_device * devices as u64 + reference
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_page_bytes_cover_every_mapping() {
        let ram = BenchConfig {
            size: 3 << 20,
            ..BenchConfig::default()
        };
        // Rounded up to whole huge pages, per device.
        assert_eq!(ram.huge_page_bytes(2), 8 << 20);
        let striped = BenchConfig {
            bdev: BdevKind::Striped {
                width: 4,
                chunk: 128 << 10,
            },
            size: 1 << 30,
            reference: true,
            ..BenchConfig::default()
        };
        assert_eq!(striped.huge_page_bytes(1), 2 << 30);
        let null = BenchConfig {
            bdev: BdevKind::Null,
            ..BenchConfig::default()
        };
        assert_eq!(null.huge_page_bytes(4), 0);
        // Files: no RAM, and a raw io_uring loop as the reference.
        let file = BenchConfig {
            bdev: BdevKind::File,
            reference: true,
            file: FileConfig {
                paths: vec!["/var/tmp/x".into()],
                ..FileConfig::default()
            },
            ..BenchConfig::default()
        };
        assert!(file.file_backed());
        assert_eq!(file.huge_page_bytes(1), 0);
        let striped_files = BenchConfig {
            bdev: BdevKind::Striped {
                width: 2,
                chunk: 1 << 20,
            },
            ..file
        };
        assert!(striped_files.file_backed());
        assert_eq!(striped_files.files_per_device(), 2);
    }
}
