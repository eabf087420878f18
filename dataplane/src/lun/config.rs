//! The configuration of a logical unit ([`LunConfig`]), its defaults and
//! its validation into the unit description the SCSI layer works with
//! ([`UnitInfo`]).

use bdev::{Bdev, Capabilities, Geometry, Topology};

use crate::scsi::unit::{ascii_field, MAX_SERIAL_LEN};
use crate::scsi::{unmap, ControlMode, SenseFormat, UnitInfo};

/// Errors of the logical unit's control path.
#[derive(Debug, thiserror::Error)]
pub enum LunError {
    /// The configuration is inconsistent; the message names the field.
    #[error("invalid LUN configuration: {0}")]
    InvalidConfig(String),
}

/// Most task slots a unit may have.
pub const MAX_TASKS: u32 = 1 << 20;

/// The default MAXIMUM TRANSFER LENGTH in bytes, when the bdev allows it
/// ([`LunConfig::max_transfer_bytes`]); tools that size a kernel device's
/// own limit (LIO's `hw_max_sectors`) use it so the two agree.
pub const DEFAULT_MAX_TRANSFER_BYTES: u32 = 1 << 20;

/// Configuration of a logical unit. Build it with [`LunConfig::new`] or
/// [`LunConfig::for_bdev`] (which set the defaults documented on each field)
/// and change what you need; [`Lun::new`](super::Lun::new) validates it.
///
/// The unit's block size is the bdev's (LBAs are not translated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunConfig {
    /// T10 VENDOR IDENTIFICATION: printable ASCII, 1..=8 bytes. Default
    /// `"DATAPLN"`.
    pub vendor: String,
    /// PRODUCT IDENTIFICATION: printable ASCII, 1..=16 bytes. Default
    /// `"DATAPLANE DISK"`.
    pub product: String,
    /// PRODUCT REVISION LEVEL: printable ASCII, 1..=4 bytes. Default `"0001"`.
    pub revision: String,
    /// Unit serial number (VPD 80h): printable ASCII without spaces, at most
    /// 128 bytes. Default empty, meaning the 16 hex digits of `lu_id`.
    pub serial: String,
    /// 64-bit logical unit identifier, the extension of the NAA 6
    /// designator (VPD 83h). Must be unique among your units. Default 1.
    pub lu_id: u64,
    /// 24-bit IEEE company identifier of the NAA designator. Default
    /// 0x001405 (the Linux-IO OUI that LIO itself uses); set your own.
    pub ieee_company_id: u32,
    /// The bdev's geometry.
    pub bdev_geometry: Geometry,
    /// The bdev's capabilities (advertised as they are).
    pub capabilities: Capabilities,
    /// The bdev's physical block and unmap granularity (advertised as they
    /// are). [`LunConfig::new`]: [`Topology::flat`]; [`LunConfig::for_bdev`]:
    /// the bdev's.
    pub bdev_topology: Topology,
    /// Blocks exposed, 1..=the bdev's. Default: all of the bdev.
    pub num_blocks: u64,
    /// Sense format at start (D_SENSE default). Default fixed.
    pub sense_format: SenseFormat,
    /// WCE at start; only allowed when the bdev has a volatile cache.
    /// Default: the bdev's `volatile_cache`.
    pub write_cache: bool,
    /// Writes fail with DATA PROTECT. Default false.
    pub read_only: bool,
    /// The Control mode page's description of the kernel's target core
    /// (task sets, QErr, TAS, SWP, whether D_SENSE may change): what the
    /// core serving this unit really does. Default [`ControlMode::LIO`];
    /// an SCST device's must follow its registered options
    /// (`scst::device::control_mode`). SWP also makes the unit refuse
    /// writes.
    pub control: ControlMode,
    /// MAXIMUM TRANSFER LENGTH in bytes (a multiple of the block size, at
    /// most the bdev's limit). Larger transfers fail with INVALID FIELD IN
    /// CDB. Default [`DEFAULT_MAX_TRANSFER_BYTES`] (1 MiB) or the bdev's
    /// limit if smaller.
    pub max_transfer_bytes: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT, 1..=4095. Default 64.
    pub max_unmap_descriptors: u32,
    /// MAXIMUM UNMAP LBA COUNT (total per UNMAP), at least 1. Default 2^20
    /// (512 MiB at 512-byte blocks, 4 GiB at 4 KiB). SBC-4 sets no bound; a
    /// larger value only saves commands on discards of more than this (an
    /// initiator sends one UNMAP per this many blocks), and initiator test
    /// suites (libiscsi) take a value above 2^20 for a bogus one.
    pub max_unmap_lba_count: u32,
    /// MAXIMUM WRITE SAME LENGTH in blocks, at least 1. Default 0xFFFF, as
    /// LIO's block and file backstores: the largest NUMBER OF LOGICAL
    /// BLOCKS WRITE SAME (10) can carry, so the limit, which applies to
    /// both CDBs, is reachable with either; and it bounds one command's
    /// work when the block is written as a pattern, chunk after chunk (32
    /// MiB at 512-byte blocks, 256 MiB at 4 KiB).
    pub max_write_same_blocks: u32,
    /// MAXIMUM COMPARE AND WRITE LENGTH in blocks, 1..=255, and at most the
    /// maximum transfer length. Default 1.
    pub max_compare_write_blocks: u8,
    /// Task slots, 1..=[`MAX_TASKS`]. Default 256.
    pub max_tasks: u32,
    /// Scratch memory for multi-step commands, in bytes; at least one chunk.
    /// Default 4 MiB.
    pub scratch_bytes: usize,
    /// Size of one scratch chunk (a multiple of the block size, at most the
    /// bdev's transfer limit): the piece size of VERIFY and of WRITE SAME
    /// with a pattern. Default 256 KiB, or less if the bdev's limit is lower.
    pub scratch_chunk_bytes: usize,
}

impl LunConfig {
    /// The default configuration for a bdev with `geometry` and
    /// `capabilities`.
    pub fn new(geometry: Geometry, capabilities: Capabilities) -> Self {
        let block = u64::from(geometry.block_size.max(1));
        let bdev_limit = match capabilities.max_transfer_blocks {
            0 => u64::MAX,
            blocks => u64::from(blocks) * block,
        };
        let round = |bytes: u64| (bytes / block).max(1) * block;
        let max_transfer_bytes = round(u64::from(DEFAULT_MAX_TRANSFER_BYTES).min(bdev_limit))
            .min(u64::from(u32::MAX) / block * block) as u32;
        let scratch_chunk_bytes = round((256u64 << 10).min(bdev_limit)) as usize;
        Self {
            vendor: "DATAPLN".into(),
            product: "DATAPLANE DISK".into(),
            revision: "0001".into(),
            serial: String::new(),
            lu_id: 1,
            ieee_company_id: 0x001405,
            bdev_geometry: geometry,
            capabilities,
            bdev_topology: Topology::flat(geometry.block_size),
            num_blocks: geometry.num_blocks,
            sense_format: SenseFormat::Fixed,
            write_cache: capabilities.volatile_cache,
            read_only: false,
            control: ControlMode::LIO,
            max_transfer_bytes,
            max_unmap_descriptors: 64,
            max_unmap_lba_count: 1 << 20,
            max_write_same_blocks: 0xFFFF,
            max_compare_write_blocks: 1,
            max_tasks: 256,
            scratch_bytes: (4usize << 20).max(scratch_chunk_bytes),
            scratch_chunk_bytes,
        }
    }

    /// The default configuration for `bdev`.
    pub fn for_bdev(bdev: &dyn Bdev) -> Self {
        Self {
            bdev_topology: bdev.topology(),
            ..Self::new(bdev.geometry(), bdev.capabilities())
        }
    }

    /// Checks the configuration and derives the unit description.
    pub fn validate(&self) -> Result<UnitInfo, LunError> {
        let bad = |msg: String| Err(LunError::InvalidConfig(msg));
        let ascii = |name: &str, value: &str, max: usize| -> Result<(), LunError> {
            if value.is_empty()
                || value.len() > max
                || !value.bytes().all(|b| (0x20..0x7F).contains(&b))
            {
                return Err(LunError::InvalidConfig(format!(
                    "{name} {value:?} must be 1..={max} printable ASCII characters"
                )));
            }
            Ok(())
        };
        ascii("vendor", &self.vendor, 8)?;
        ascii("product", &self.product, 16)?;
        ascii("revision", &self.revision, 4)?;
        let serial = if self.serial.is_empty() {
            format!("{:016x}", self.lu_id)
        } else {
            self.serial.clone()
        };
        if serial.len() > MAX_SERIAL_LEN || !serial.bytes().all(|b| (0x21..0x7F).contains(&b)) {
            return bad(format!(
                "serial {serial:?} must be at most {MAX_SERIAL_LEN} printable ASCII characters without spaces"
            ));
        }
        if self.ieee_company_id > 0x00FF_FFFF {
            return bad(format!(
                "ieee_company_id {:#x} exceeds 24 bits",
                self.ieee_company_id
            ));
        }
        let bs = self.bdev_geometry.block_size;
        if bs < 512 || !bs.is_power_of_two() {
            return bad(format!(
                "bdev block size {bs} is not a power of two of at least 512"
            ));
        }
        if self.num_blocks == 0 || self.num_blocks > self.bdev_geometry.num_blocks {
            return bad(format!(
                "num_blocks {} must be 1..={} (the bdev's)",
                self.num_blocks, self.bdev_geometry.num_blocks
            ));
        }
        let topology = self.bdev_topology;
        if !topology.is_valid_for(bs) {
            return bad(format!(
                "bdev physical block {} must be a power-of-two multiple (at most 2^15) of the block size {bs}, and unmap granularity {} at least 1",
                topology.physical_block_size, topology.unmap_granularity_blocks
            ));
        }
        let caps = self.capabilities;
        if self.write_cache && !caps.volatile_cache {
            return bad("write_cache needs a bdev with a volatile cache".into());
        }
        let bdev_limit = match caps.max_transfer_blocks {
            0 => u64::MAX,
            blocks => u64::from(blocks) * u64::from(bs),
        };
        let max_transfer = u64::from(self.max_transfer_bytes);
        if max_transfer < u64::from(bs)
            || max_transfer & (u64::from(bs) - 1) != 0
            || max_transfer > bdev_limit
        {
            return bad(format!(
                "max_transfer_bytes {max_transfer} must be a multiple of the block size {bs} and at most the bdev's limit {bdev_limit}"
            ));
        }
        if self.max_compare_write_blocks == 0
            || u64::from(self.max_compare_write_blocks) * u64::from(bs) > max_transfer
        {
            return bad(format!(
                "max_compare_write_blocks {} must be 1..=255 and fit the maximum transfer",
                self.max_compare_write_blocks
            ));
        }
        if caps.unmap {
            let most = ((unmap::MAX_PARAM_LEN - unmap::HEADER_LEN) / unmap::DESCRIPTOR_LEN) as u32;
            if self.max_unmap_descriptors == 0 || self.max_unmap_descriptors > most {
                return bad(format!(
                    "max_unmap_descriptors {} must be 1..={most}",
                    self.max_unmap_descriptors
                ));
            }
            if self.max_unmap_lba_count == 0 {
                return bad("max_unmap_lba_count must be at least 1".into());
            }
        }
        if self.max_write_same_blocks == 0 {
            return bad("max_write_same_blocks must be at least 1".into());
        }
        let control = self.control;
        if control.tst > 1 || control.queue_alg > 1 || ![0, 1, 3].contains(&control.qerr) {
            return bad(format!(
                "control mode TST {}, queue algorithm {}, QErr {}: TST and the queue \
                 algorithm must be 0 or 1, QErr 0, 1 or 3",
                control.tst, control.queue_alg, control.qerr
            ));
        }
        if self.max_tasks == 0 || self.max_tasks > MAX_TASKS {
            return bad(format!(
                "max_tasks {} must be 1..={MAX_TASKS}",
                self.max_tasks
            ));
        }
        let chunk = self.scratch_chunk_bytes as u64;
        if chunk < u64::from(bs)
            || chunk & (u64::from(bs) - 1) != 0
            || chunk > bdev_limit
            || chunk > u64::from(u32::MAX)
        {
            return bad(format!(
                "scratch_chunk_bytes {chunk} must be a multiple of the block size {bs} and at most the bdev's limit {bdev_limit}"
            ));
        }
        if self.scratch_bytes < self.scratch_chunk_bytes {
            return bad(format!(
                "scratch_bytes {} must hold at least one chunk of {chunk}",
                self.scratch_bytes
            ));
        }
        Ok(UnitInfo {
            vendor: ascii_field(&self.vendor),
            product: ascii_field(&self.product),
            revision: ascii_field(&self.revision),
            serial,
            lu_id: self.lu_id,
            ieee_company_id: self.ieee_company_id,
            block_size: bs,
            num_blocks: self.num_blocks,
            read_only: self.read_only || self.control.swp,
            volatile_cache: caps.volatile_cache,
            unmap: caps.unmap,
            unmap_reads_zeroes: caps.unmap_reads_zeroes,
            physical_block_exponent: topology.physical_block_exponent(bs) as u8,
            optimal_granularity_blocks: caps.optimal_boundary_blocks,
            unmap_granularity_blocks: topology.unmap_granularity_blocks,
            max_transfer_blocks: (max_transfer / u64::from(bs)) as u32,
            max_unmap_lba_count: if caps.unmap {
                self.max_unmap_lba_count
            } else {
                0
            },
            max_unmap_descriptors: if caps.unmap {
                self.max_unmap_descriptors
            } else {
                0
            },
            max_write_same_blocks: self.max_write_same_blocks,
            max_compare_write_blocks: self.max_compare_write_blocks,
            control: self.control,
        })
    }
}
