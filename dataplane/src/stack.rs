//! One way to assemble what serves a LUN:
//!
//! ```text
//! bdev ── channel ── BdevPoller ══ port ══ Lun ── TcmuDevice | ScstDevice
//! ```
//!
//! Every user builds this chain the same way; what differs between them
//! (`serve`, a load-generating rig) is a parameter here, not a copy:
//! - **The LUN** ([`LunSpec`]): identity (serial, `lu_id`), task slots, the
//!   capacity and transfer limit the device advertises. Everything else
//!   comes from the bdev ([`LunSpec::lun_config`] is the one place a
//!   [`LunConfig`] is derived); the sense format is the frontend's (fixed
//!   for TCMU, the registered `d_sense` for SCST).
//! - **The frontend device**: a TCMU ring needs its region and doorbell
//!   ([`Stack::tcmu`]); an scst_user device needs its driver, registration
//!   ([`ScstRegistration`]) and buffer pool ([`Stack::scst`]).
//! - **The bdev poller**: a [`Stack`] holds the bdev end of its LUN's
//!   port until it is given a poller: one that already runs and serves
//!   other ports (`serve` shares one per bdev and reactor:
//!   [`Stack::attach_to`]), or one of its own ([`Stack::with_own_poller`],
//!   for a chain that is alone on its bdev).
//!
//! - **Fixed buffers**: the frontend's whole data mapping travels with the
//!   port to the bdev poller, which registers it with its channel on its
//!   reactor ([`crate::port`]'s `memory.rs` has the contract): the SCST
//!   buffer pool's arena, and a TCMU data area whose pages stay put (the
//!   simulator's). A real TCMU device's UIO data area is not offered:
//!   target_core_user frees idle data blocks and gives them new pages
//!   later, and a page pinned by the registration would then take reads
//!   the kernel never sees. [`Stack::without_fixed_buffers`] withdraws the
//!   offer.
//!
//! The port's depth is the LUN's task slots rounded up to a power of two,
//! so the port never refuses a request the LUN accepted.

use bdev::Bdev;
use reactor::spsc::RingError;

use bdev::IoVec;

use crate::lun::{Lun, LunConfig, LunError};
use crate::port::{port_pair, BdevPoller, BdevPollerHandle, ChannelEnd, MemoryOffer};
use crate::scsi::SenseFormat;
use crate::scst::device::{DeviceError, ScstDevice, ScstDeviceConfig};
use crate::scst::driver::ScstDriver;
use crate::scst::error::ScstError;
use crate::scst::pool::{BufferPool, PoolConfig, PoolError};
use crate::scst::register::{dataplane_sgv_name, register_with_version, RegisterSpec, ScstOptions};
use crate::scst::version::VersionSource;
use crate::tcmu::{Doorbell, SharedRegion, TcmuDevice, TcmuDeviceConfig, TcmuError};

/// Largest transfer a LUN built here accepts, whatever its device allows
/// (a TCMU device's `hw_max_sectors`), and the largest buffer an SCST
/// device's pool must hand out.
pub const MAX_TRANSFER_BYTES: u64 = 8 << 20;

/// Most requests a bdev poller moves from its ports per poll.
pub const BDEV_POLLER_BUDGET: usize = 256;

/// A LUN's MAXIMUM TRANSFER LENGTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTransfer {
    /// [`LunConfig`]'s default: 1 MiB, or the bdev's limit if lower.
    Default,
    /// The default, or the device's own limit in bytes if lower (at least
    /// one block, at most [`MAX_TRANSFER_BYTES`]).
    DeviceLimit(u64),
    /// Exactly this many bytes (the LUN checks it against the bdev).
    Bytes(u32),
}

/// What the device carrying a LUN says about it; the rest comes from the
/// bdev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunSpec {
    /// Unit serial number (VPD 80h).
    pub serial: String,
    /// Logical unit identifier (VPD 83h), unique among the units served.
    pub lu_id: u64,
    /// Task slots; the port's depth is this rounded up to a power of two.
    pub max_tasks: u32,
    /// Blocks the device exposes; `None` exposes the whole bdev.
    pub num_blocks: Option<u64>,
    /// The transfer limit.
    pub max_transfer: MaxTransfer,
}

impl LunSpec {
    /// A LUN over the whole bdev with the default transfer limit.
    pub fn new(serial: impl Into<String>, lu_id: u64, max_tasks: u32) -> Self {
        Self {
            serial: serial.into(),
            lu_id,
            max_tasks,
            num_blocks: None,
            max_transfer: MaxTransfer::Default,
        }
    }

    /// Entries of each ring of the LUN's port.
    pub fn port_depth(&self) -> usize {
        self.max_tasks.next_power_of_two() as usize
    }

    /// The LUN configuration over `bdev`, answering in `sense_format`.
    pub fn lun_config(&self, bdev: &dyn Bdev, sense_format: SenseFormat) -> LunConfig {
        let mut config = LunConfig::for_bdev(bdev);
        config.serial = self.serial.clone();
        config.lu_id = self.lu_id;
        config.max_tasks = self.max_tasks;
        config.sense_format = sense_format;
        if let Some(blocks) = self.num_blocks {
            config.num_blocks = blocks;
        }
        let block_size = u64::from(config.bdev_geometry.block_size);
        config.max_transfer_bytes = match self.max_transfer {
            MaxTransfer::Default => config.max_transfer_bytes,
            MaxTransfer::DeviceLimit(bytes) => config
                .max_transfer_bytes
                .min(bytes.clamp(block_size, MAX_TRANSFER_BYTES) as u32),
            MaxTransfer::Bytes(bytes) => bytes,
        };
        config
    }

    /// A LUN over `bdev` and the bdev end of its port.
    fn build(
        &self,
        bdev: &dyn Bdev,
        sense_format: SenseFormat,
    ) -> Result<(Lun, ChannelEnd), StackError> {
        self.build_with(self.lun_config(bdev, sense_format))
    }

    /// The unit of `config` (from [`lun_config`](Self::lun_config), then
    /// adjusted) and the bdev side of its port.
    fn build_with(&self, config: LunConfig) -> Result<(Lun, ChannelEnd), StackError> {
        let (port, end) = port_pair(self.port_depth())?;
        let lun = Lun::new(config, port).map_err(StackError::Lun)?;
        Ok((lun, end))
    }
}

/// How an scst_user device registers: its name and options (the block
/// size is the bdev's), and the DEV_USER_VERSION with where it came from
/// (for the error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScstRegistration {
    /// The SCST device name.
    pub name: String,
    /// The scst_user options; `d_sense` also sets the LUN's sense format.
    pub options: ScstOptions,
    /// DEV_USER_VERSION.
    pub version: String,
    /// Where `version` came from.
    pub source: VersionSource,
}

/// Why a stack could not be assembled. The messages are those
/// `dataplane serve` logs.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The port's rings could not be made.
    #[error(transparent)]
    Port(#[from] RingError),
    /// The LUN refused its configuration.
    #[error("LUN configuration: {0}")]
    Lun(LunError),
    /// The TCMU device could not attach to its ring.
    #[error("cannot attach to its ring: {0}")]
    Tcmu(TcmuError),
    /// The scst_user device could not be registered.
    #[error(transparent)]
    Register(ScstError),
    /// The SCST buffer pool could not be made.
    #[error(transparent)]
    Pool(PoolError),
    /// The SCST device refused its settings or the registered options.
    #[error(transparent)]
    ScstDevice(DeviceError),
    /// The bdev channel of a stack's own poller could not be opened.
    #[error(transparent)]
    Channel(bdev::Error),
}

/// A frontend device over its LUN, and the bdev end of the LUN's port,
/// which a bdev poller must serve before the device can do I/O.
#[derive(Debug)]
pub struct Stack<D> {
    device: D,
    end: ChannelEnd,
}

impl Stack<TcmuDevice<Lun>> {
    /// A LUN over `bdev` and a [`TcmuDevice`] on the ring of `region` and
    /// `doorbell`.
    pub fn tcmu(
        bdev: &dyn Bdev,
        lun: &LunSpec,
        region: SharedRegion,
        doorbell: Doorbell,
        config: TcmuDeviceConfig,
    ) -> Result<Self, StackError> {
        let (lun, mut end) = lun.build(bdev, SenseFormat::Fixed)?;
        let device = TcmuDevice::attach(region, doorbell, lun, config).map_err(StackError::Tcmu)?;
        let region = device.region();
        if region.pages_are_stable() {
            let (offset, len) = device.data_area();
            let area = IoVec {
                base: region.base_ptr().wrapping_add(offset),
                len,
            };
            // SAFETY: the data area lies in the region (the device checked
            // the mailbox against the mapping), the clone keeps the mapping
            // alive, and its pages are never replaced (`pages_are_stable`).
            end.offer_memory(unsafe { MemoryOffer::new(vec![area], Box::new(region.clone())) });
        }
        Ok(Self { device, end })
    }
}

impl<Drv: ScstDriver> Stack<ScstDevice<Drv, Lun>> {
    /// Registers the device on `driver` (REGISTER_DEVICE, SET_OPTIONS,
    /// GET_OPTIONS: [`register_with_version`]), then builds the rest as
    /// [`Stack::scst_registered`] does.
    pub fn scst(
        bdev: &dyn Bdev,
        lun: &LunSpec,
        mut driver: Drv,
        registration: &ScstRegistration,
        pool: PoolConfig,
        config: ScstDeviceConfig,
    ) -> Result<Self, StackError> {
        let mut spec = RegisterSpec::new(registration.name.clone(), bdev.geometry().block_size);
        spec.version = Some(registration.version.clone());
        spec.options = registration.options;
        // The pool name marks the device as this dataplane's (see
        // `DATAPLANE_SGV_PREFIX`).
        spec.sgv_name = dataplane_sgv_name(&registration.name);
        register_with_version(
            &mut driver,
            &spec,
            &registration.version,
            &registration.source,
        )
        .map_err(StackError::Register)?;
        Self::scst_registered(bdev, lun, driver, pool, config)
    }

    /// Builds, on a `driver` whose device is registered already (by this
    /// process, or by a predecessor that handed the fd over), a LUN over
    /// `bdev` answering in the registered sense format, a [`BufferPool`]
    /// and the [`ScstDevice`]. The options are read back (GET_OPTIONS);
    /// `config.unit` is set to the LUN's.
    pub fn scst_registered(
        bdev: &dyn Bdev,
        lun: &LunSpec,
        mut driver: Drv,
        pool: PoolConfig,
        mut config: ScstDeviceConfig,
    ) -> Result<Self, StackError> {
        let options = driver
            .get_options()
            .map_err(|e| StackError::ScstDevice(DeviceError::GetOptions(e)))?;
        let sense_format = if options.d_sense != 0 {
            SenseFormat::Descriptor
        } else {
            SenseFormat::Fixed
        };
        // The Control mode page says what the kernel was registered to do
        // (task set model, TAS, D_SENSE not changeable behind its back).
        let mut lun_config = lun.lun_config(bdev, sense_format);
        lun_config.control = crate::scst::device::control_mode(&options);
        let (lun, mut end) = lun.build_with(lun_config)?;
        config.unit = Some(lun.unit().clone());
        let pool = BufferPool::new(pool).map_err(StackError::Pool)?;
        let (arena, mapping) = pool.arena();
        // SAFETY: the arena is the pool's anonymous mapping, kept mapped by
        // `mapping`; its pages are this process's and never replaced.
        end.offer_memory(unsafe { MemoryOffer::new(vec![arena], Box::new(mapping)) });
        let device = ScstDevice::new(driver, lun, pool, config).map_err(StackError::ScstDevice)?;
        Ok(Self { device, end })
    }

    /// The device, mutably (before it goes on its reactor).
    pub fn device_mut(&mut self) -> &mut ScstDevice<Drv, Lun> {
        &mut self.device
    }
}

impl<D> Stack<D> {
    /// The frontend device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The memory offered to the bdev channel for fixed buffers (see the
    /// module docs), if any.
    pub fn memory_offer(&self) -> Option<&MemoryOffer> {
        self.end.memory()
    }

    /// Withdraws the offer of the frontend's memory: the bdev channel does
    /// its I/O without fixed buffers.
    pub fn without_fixed_buffers(mut self) -> Self {
        self.end.withdraw_memory();
        self
    }

    /// Hands the port to a poller that already runs (it adopts the port at
    /// its next poll) and returns the device, ready to go on a reactor.
    pub fn attach_to(self, poller: &BdevPollerHandle) -> D {
        poller.attach(self.end);
        self.device
    }

    /// A poller of its own for the port, over a new channel of `bdev` of
    /// `channel_depth` requests; returns the device and the poller.
    pub fn with_own_poller(
        self,
        bdev: &dyn Bdev,
        channel_depth: usize,
    ) -> Result<(D, BdevPoller), StackError> {
        let mut poller = bdev_poller(bdev, channel_depth).map_err(StackError::Channel)?;
        let attached = poller.attach(self.end);
        debug_assert!(attached.is_ok(), "a new poller has room for a port");
        Ok((self.device, poller))
    }
}

/// A [`BdevPoller`] named `bdev:<name>` over a new channel of `bdev` of
/// `channel_depth` requests, moving at most [`BDEV_POLLER_BUDGET`]
/// requests per poll.
pub fn bdev_poller(bdev: &dyn Bdev, channel_depth: usize) -> Result<BdevPoller, bdev::Error> {
    let channel = bdev.open_channel(channel_depth)?;
    Ok(BdevPoller::new(
        format!("bdev:{}", bdev.name()),
        channel,
        BDEV_POLLER_BUDGET,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bdev::null::NullBdev;

    fn bdev() -> NullBdev {
        NullBdev::new("n0", 512, 1 << 20).unwrap()
    }

    #[test]
    fn the_lun_config_comes_from_the_bdev_and_the_spec() {
        let bdev = bdev();
        let spec = LunSpec::new("disk0", 7, 1000);
        assert_eq!(spec.port_depth(), 1024);
        let c = spec.lun_config(&bdev, SenseFormat::Descriptor);
        let default = LunConfig::for_bdev(&bdev);
        assert_eq!(
            (c.serial.as_str(), c.lu_id, c.max_tasks),
            ("disk0", 7, 1000)
        );
        assert_eq!(c.sense_format, SenseFormat::Descriptor);
        assert_eq!(c.num_blocks, 1 << 20);
        assert_eq!(c.max_transfer_bytes, default.max_transfer_bytes);

        let sized = LunSpec {
            num_blocks: Some(100),
            ..spec.clone()
        };
        assert_eq!(sized.lun_config(&bdev, SenseFormat::Fixed).num_blocks, 100);
        let transfer = |max_transfer| {
            LunSpec {
                max_transfer,
                ..spec.clone()
            }
            .lun_config(&bdev, SenseFormat::Fixed)
            .max_transfer_bytes
        };
        // A device limit only lowers the default, and is at least a block.
        assert_eq!(transfer(MaxTransfer::DeviceLimit(64 << 10)), 64 << 10);
        assert_eq!(
            transfer(MaxTransfer::DeviceLimit(64 << 20)),
            default.max_transfer_bytes
        );
        assert_eq!(transfer(MaxTransfer::DeviceLimit(0)), 512);
        assert_eq!(transfer(MaxTransfer::Bytes(8 << 20)), 8 << 20);
    }

    #[test]
    fn its_own_poller_is_named_for_the_bdev_and_holds_the_port() {
        let bdev = bdev();
        let spec = LunSpec::new("disk0", 7, 4);
        let (lun, end) = spec.build(&bdev, SenseFormat::Fixed).unwrap();
        let (lun, poller) = Stack { device: lun, end }
            .with_own_poller(&bdev, spec.port_depth())
            .unwrap();
        assert_eq!(lun.unit().serial, "disk0");
        assert_eq!(reactor::Poller::name(&poller), "bdev:n0");
        assert_eq!(poller.ports(), 1);
    }
}
