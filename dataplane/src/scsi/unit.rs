//! What the SCSI emulation knows about a logical unit: identity, geometry,
//! capabilities and limits ([`UnitInfo`], fixed for its life) and the mode
//! parameters a MODE SELECT may change ([`ModeState`]).

use super::sense::{ScsiError, SenseFormat};

/// Immutable description of a logical unit, as advertised by INQUIRY, READ
/// CAPACITY, the VPD pages and the mode pages, and enforced by the decoder.
///
/// Invariants (checked by `lun::Lun::new`): `block_size` is a power of two
/// of at least 512, `num_blocks >= 1`, the ASCII fields are printable and
/// space-padded, `max_compare_write_blocks >= 1`, `max_transfer_blocks >= 1`,
/// `physical_block_exponent <= 15`, `unmap_granularity_blocks >= 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitInfo {
    /// T10 VENDOR IDENTIFICATION, space padded.
    pub vendor: [u8; 8],
    /// PRODUCT IDENTIFICATION, space padded.
    pub product: [u8; 16],
    /// PRODUCT REVISION LEVEL, space padded.
    pub revision: [u8; 4],
    /// Unit serial number (VPD 80h), printable ASCII, at most
    /// [`MAX_SERIAL_LEN`] bytes.
    pub serial: String,
    /// 64-bit logical unit identifier: the VENDOR SPECIFIC IDENTIFIER
    /// EXTENSION of the NAA 6 designator in VPD 83h.
    pub lu_id: u64,
    /// 24-bit IEEE company identifier (OUI) of the NAA 6 designator.
    pub ieee_company_id: u32,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Number of logical blocks exposed.
    pub num_blocks: u64,
    /// Writes fail with DATA PROTECT; the WP bit is set in mode data.
    pub read_only: bool,
    /// The device has a volatile write cache (WCE is changeable).
    pub volatile_cache: bool,
    /// UNMAP and WRITE SAME with UNMAP=1 deallocate (LBPME, LBPU, LBPWS).
    pub unmap: bool,
    /// Deallocated blocks read back as zeroes (LBPRZ).
    pub unmap_reads_zeroes: bool,
    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT (READ CAPACITY (16)):
    /// the medium's physical block is `block_size << exponent` bytes.
    pub physical_block_exponent: u8,
    /// OPTIMAL TRANSFER LENGTH GRANULARITY in blocks (0 = not reported).
    pub optimal_granularity_blocks: u32,
    /// OPTIMAL UNMAP GRANULARITY in blocks (at least 1): the unit
    /// deallocates in runs of this many blocks.
    pub unmap_granularity_blocks: u32,
    /// MAXIMUM TRANSFER LENGTH in blocks for READ/WRITE/VERIFY/WRITE AND
    /// VERIFY.
    pub max_transfer_blocks: u32,
    /// MAXIMUM UNMAP LBA COUNT (total over the descriptors of one UNMAP).
    pub max_unmap_lba_count: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
    /// MAXIMUM WRITE SAME LENGTH in blocks.
    pub max_write_same_blocks: u32,
    /// MAXIMUM COMPARE AND WRITE LENGTH in blocks (1..=255).
    pub max_compare_write_blocks: u8,
    /// What the Control mode page reports about the kernel's target core.
    pub control: ControlMode,
}

/// The fields of the Control mode page (SPC-4 7.5.8) that describe how the
/// kernel's target core, not the unit, runs commands: task sets, the queue
/// algorithm, what happens to other commands after an error (QErr) or an
/// abort by another I_T nexus (TAS), software write protection, and whether
/// an initiator may switch the sense format. The unit reports them; they
/// must be what the core really does (LIO for TCMU, the registered
/// `scst_user_opt` for SCST).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMode {
    /// TST: 0 one task set for every I_T nexus, 1 one per I_T nexus.
    pub tst: u8,
    /// QUEUE ALGORITHM MODIFIER: 0 restricted, 1 unrestricted reordering.
    pub queue_alg: u8,
    /// QERR: 0, 1 or 3.
    pub qerr: u8,
    /// TAS: commands aborted by another I_T nexus end with TASK ABORTED.
    pub tas: bool,
    /// SWP: the medium is write protected (the unit refuses writes too).
    pub swp: bool,
    /// D_SENSE is changeable by MODE SELECT. Only where every sense the
    /// initiator sees is built by the unit, or the core follows the unit's
    /// setting.
    pub d_sense_changeable: bool,
}

impl ControlMode {
    /// What LIO's core does for a TCMU device (its own Control page,
    /// `spc_modesense_control`, with the default attributes): one task set,
    /// unrestricted reordering, QErr 0, TAS 1, no software write protection.
    pub const LIO: ControlMode = ControlMode {
        tst: 0,
        queue_alg: 1,
        qerr: 0,
        tas: true,
        swp: false,
        d_sense_changeable: true,
    };
}

impl Default for ControlMode {
    fn default() -> Self {
        Self::LIO
    }
}

/// Longest unit serial number accepted (VPD 80h).
pub const MAX_SERIAL_LEN: usize = 128;

impl UnitInfo {
    /// The last LBA.
    pub fn last_lba(&self) -> u64 {
        self.num_blocks - 1
    }

    /// LBPME / LBPU / LBPWS: the unit deallocates on UNMAP.
    pub fn lbpme(&self) -> bool {
        self.unmap
    }

    /// LBPRZ: the unit deallocates and deallocated blocks read as zeroes.
    pub fn lbprz(&self) -> bool {
        self.unmap && self.unmap_reads_zeroes
    }

    /// Checks that `blocks` blocks at `lba` lie on the unit: the LBA itself
    /// must exist (even for zero blocks) and the range must end by the last
    /// block.
    pub fn check_range(&self, lba: u64, blocks: u64) -> Result<(), ScsiError> {
        match lba.checked_add(blocks) {
            Some(end) if lba < self.num_blocks && end <= self.num_blocks => Ok(()),
            _ => Err(ScsiError::LbaOutOfRange),
        }
    }
}

/// Copies `text` into a space-padded ASCII field.
pub fn ascii_field<const N: usize>(text: &str) -> [u8; N] {
    let mut field = [b' '; N];
    for (dst, src) in field.iter_mut().zip(text.bytes()) {
        *dst = src;
    }
    field
}

/// Values of the changeable mode parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeValues {
    /// WCE of the Caching mode page: writes may complete before they are
    /// durable.
    pub write_cache: bool,
    /// D_SENSE of the Control mode page: descriptor-format sense data.
    pub descriptor_sense: bool,
}

impl ModeValues {
    /// The sense format these values select.
    pub fn sense_format(&self) -> SenseFormat {
        if self.descriptor_sense {
            SenseFormat::Descriptor
        } else {
            SenseFormat::Fixed
        }
    }
}

/// Mode parameters of a logical unit: current and default values. Saved
/// values are not implemented (MODE SENSE with PC=11b fails with SAVING
/// PARAMETERS NOT SUPPORTED; MODE SELECT with SP=1 with INVALID FIELD IN CDB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeState {
    /// Current values.
    pub current: ModeValues,
    /// Default values (the configuration's).
    pub default: ModeValues,
}

impl ModeState {
    /// Mode state starting at `default`.
    pub fn new(default: ModeValues) -> Self {
        Self {
            current: default,
            default,
        }
    }
}

/// The unit the unit tests of the `scsi` modules use.
#[cfg(test)]
pub(crate) fn test_unit() -> UnitInfo {
    UnitInfo {
        vendor: ascii_field("TESTVEND"),
        product: ascii_field("TEST PRODUCT"),
        revision: ascii_field("1.0"),
        serial: "SER12345".into(),
        lu_id: 0x0123_4567_89AB_CDEF,
        ieee_company_id: 0x001405,
        block_size: 512,
        num_blocks: 1 << 20,
        read_only: false,
        volatile_cache: true,
        unmap: true,
        unmap_reads_zeroes: true,
        physical_block_exponent: 0,
        optimal_granularity_blocks: 16,
        unmap_granularity_blocks: 1,
        max_transfer_blocks: 2048,
        max_unmap_lba_count: 0x10000,
        max_unmap_descriptors: 4,
        max_write_same_blocks: 0x8000,
        max_compare_write_blocks: 8,
        control: ControlMode::LIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_fields_are_space_padded_and_truncated() {
        assert_eq!(ascii_field::<8>("ab"), *b"ab      ");
        assert_eq!(ascii_field::<4>("abcdef"), *b"abcd");
    }
}
