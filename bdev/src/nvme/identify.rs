//! Reading the Identify Controller (CNS 01h) and Identify Namespace
//! (CNS 00h) data structures: the fields this bdev uses, at the offsets of
//! NVM Express 1.4 (figures 247 and 249; the same as `struct nvme_id_ctrl`
//! and `struct nvme_id_ns` in Linux's `include/linux/nvme.h`). All
//! multi-byte fields are little-endian. Pure parsing, no I/O.

use super::cmd::IDENTIFY_LEN;

/// What this bdev uses of Identify Controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Controller {
    /// Serial Number (bytes 23:04), ASCII, trailing spaces trimmed.
    pub serial: String,
    /// Model Number (bytes 63:24).
    pub model: String,
    /// Firmware Revision (bytes 71:64).
    pub firmware: String,
    /// Maximum Data Transfer Size (byte 77): a power of two in units of
    /// the minimum memory page size (CAP.MPSMIN); 0 = no limit.
    pub mdts: u8,
    /// Version (bytes 83:80): major in bits 31:16, minor in 15:08.
    pub version: u32,
    /// Optional NVM Command Support (bytes 521:520).
    pub oncs: u16,
    /// Volatile Write Cache (byte 525): bit 0 = present.
    pub vwc: u8,
    /// Atomic Write Unit Power Fail (bytes 529:528), 0-based blocks.
    pub awupf: u16,
}

/// ONCS bit 2: Dataset Management.
pub(super) const ONCS_DSM: u16 = 1 << 2;
/// ONCS bit 3: Write Zeroes.
pub(super) const ONCS_WRITE_ZEROES: u16 = 1 << 3;
/// VWC bit 0: a volatile write cache is present.
pub(super) const VWC_PRESENT: u8 = 1 << 0;

/// One LBA Format (Identify Namespace bytes 128 + 4n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LbaFormat {
    /// Metadata Size: bytes of metadata per block.
    pub metadata_size: u16,
    /// LBA Data Size: log2 of the block size (0 = format not in use).
    pub data_shift: u8,
    /// Relative Performance (bits 1:0).
    pub relative_performance: u8,
}

/// What this bdev uses of Identify Namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Namespace {
    /// Namespace Size (bytes 7:0): logical blocks.
    pub nsze: u64,
    /// Namespace Capacity (bytes 15:8).
    pub ncap: u64,
    /// Namespace Features (byte 24).
    pub nsfeat: u8,
    /// Number of LBA Formats (byte 25), 0-based.
    pub nlbaf: u8,
    /// Formatted LBA Size (byte 26).
    pub flbas: u8,
    /// End-to-end Data Protection Type Settings (byte 29).
    pub dps: u8,
    /// Deallocate Logical Block Features (byte 33).
    pub dlfeat: u8,
    /// Namespace Atomic Write Unit Power Fail (bytes 37:36), 0-based.
    pub nawupf: u16,
    /// Namespace Optimal I/O Boundary (bytes 47:46), blocks; 0 = none.
    pub noiob: u16,
    /// Namespace Preferred Write Granularity (bytes 65:64), 0-based.
    pub npwg: u16,
    /// Namespace Preferred Deallocate Granularity (bytes 69:68), 0-based.
    pub npdg: u16,
    /// Namespace Optimal Write Size (bytes 73:72), 0-based.
    pub nows: u16,
    /// Namespace Attributes (byte 99): bit 0 = write protected.
    pub nsattr: u8,
    /// The LBA format FLBAS selects (`None` when it names one past NLBAF).
    pub format: Option<LbaFormat>,
    /// Its index.
    pub format_index: u8,
}

/// NSFEAT bit 1: NAWUN, NAWUPF and NACWU are defined.
pub(super) const NSFEAT_ATOMICS: u8 = 1 << 1;
/// NSFEAT bit 4: NPWG, NPWA, NPDG, NPDA and NOWS are defined (NVMe 1.4).
pub(super) const NSFEAT_OPTPERF: u8 = 1 << 4;
/// DLFEAT bits 2:0: what a deallocated block reads as (001b: zeroes).
pub(super) const DLFEAT_READ_MASK: u8 = 0x7;
/// DLFEAT read behaviour 001b: all bytes zero.
pub(super) const DLFEAT_READS_ZEROES: u8 = 0x1;
/// DLFEAT bit 3: Write Zeroes supports the Deallocate bit.
pub(super) const DLFEAT_WRITE_ZEROES_DEAC: u8 = 1 << 3;
/// NSATTR bit 0: the namespace is write protected.
pub(super) const NSATTR_WRITE_PROTECTED: u8 = 1 << 0;

fn le16(data: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([data[at], data[at + 1]])
}

fn le32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"))
}

/// An ASCII field, trailing spaces and NULs trimmed, anything else
/// replaced.
fn ascii(data: &[u8]) -> String {
    let text: String = data
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    text.trim_end_matches([' ', '?']).trim_start().to_string()
}

impl Controller {
    /// Reads Identify Controller data.
    pub fn parse(data: &[u8; IDENTIFY_LEN]) -> Self {
        Self {
            serial: ascii(&data[4..24]),
            model: ascii(&data[24..64]),
            firmware: ascii(&data[64..72]),
            mdts: data[77],
            version: le32(data, 80),
            oncs: le16(data, 520),
            vwc: data[525],
            awupf: le16(data, 528),
        }
    }

    /// The version as "major.minor" (1.0 when the field is 0: NVMe 1.0
    /// controllers did not report one).
    pub fn version_text(&self) -> String {
        match self.version {
            0 => "1.0".into(),
            v => format!("{}.{}", v >> 16, (v >> 8) & 0xFF),
        }
    }
}

impl Namespace {
    /// Reads Identify Namespace data.
    pub fn parse(data: &[u8; IDENTIFY_LEN]) -> Self {
        let nlbaf = data[25];
        let flbas = data[26];
        // FLBAS bits 3:0 are the index, bits 6:5 its upper bits when there
        // are more than 16 formats (NVMe 2.0; Linux's nvme_lbaf_index).
        let format_index = (flbas & 0x0F) | ((flbas & 0x60) >> 1);
        let format = (format_index <= nlbaf && format_index < 64).then(|| {
            let at = 128 + 4 * usize::from(format_index);
            LbaFormat {
                metadata_size: le16(data, at),
                data_shift: data[at + 2],
                relative_performance: data[at + 3] & 0x3,
            }
        });
        Self {
            nsze: le64(data, 0),
            ncap: le64(data, 8),
            nsfeat: data[24],
            nlbaf,
            flbas,
            dps: data[29],
            dlfeat: data[33],
            nawupf: le16(data, 36),
            noiob: le16(data, 46),
            npwg: le16(data, 64),
            npdg: le16(data, 68),
            nows: le16(data, 72),
            nsattr: data[99],
            format,
            format_index,
        }
    }

    /// Deallocated blocks read back as zeroes (DLFEAT bits 2:0 = 001b).
    pub fn deallocated_reads_zeroes(&self) -> bool {
        self.dlfeat & DLFEAT_READ_MASK == DLFEAT_READS_ZEROES
    }

    /// Write Zeroes with DEAC deallocates and reads back zeroes: DLFEAT
    /// bit 3 and read behaviour 001b (the condition Linux uses for its
    /// `NVME_NS_DEAC`).
    pub fn write_zeroes_deallocates(&self) -> bool {
        self.deallocated_reads_zeroes() && self.dlfeat & DLFEAT_WRITE_ZEROES_DEAC != 0
    }

    /// The optimal I/O fields (NPWG, NPDG, NOWS) are valid.
    pub fn optimal_io_fields(&self) -> bool {
        self.nsfeat & NSFEAT_OPTPERF != 0
    }
}

/// Builders of Identify images for the tests of this module and the
/// others: what QEMU's emulated controller (hw/nvme, QEMU 7.2 as in
/// Debian 12) reports for `-device nvme,serial=...`.
#[cfg(test)]
pub(super) mod images {
    use super::*;

    /// Identify Controller as QEMU's: MDTS 7 (512 KiB with 4 KiB pages),
    /// ONCS with Compare, DSM, Write Zeroes, Save/Select, Timestamp,
    /// Verify and Copy, a volatile write cache (flushable with the
    /// broadcast NSID), NVMe 1.4.
    pub fn qemu_controller() -> [u8; IDENTIFY_LEN] {
        let mut d = [0u8; IDENTIFY_LEN];
        d[0..2].copy_from_slice(&0x1b36u16.to_le_bytes()); // Red Hat
        d[4..24].copy_from_slice(b"deadbeef            ");
        d[24..64].copy_from_slice(b"QEMU NVMe Ctrl                          ");
        d[64..72].copy_from_slice(b"7.2.0   ");
        d[77] = 7;
        d[80..84].copy_from_slice(&0x0001_0400u32.to_le_bytes());
        d[516..520].copy_from_slice(&256u32.to_le_bytes()); // NN
        d[520..522].copy_from_slice(&0x01DDu16.to_le_bytes()); // ONCS
        d[525] = VWC_PRESENT | 0x6; // flush with NSID FFFFFFFFh supported
        d
    }

    /// Identify Namespace as QEMU's for a raw image of `bytes` formatted
    /// with `block` bytes per block: 8 LBA formats (512 and 4096, each
    /// without and with 8, 16 or 64 bytes of metadata), DULBE and the
    /// optimal I/O fields, deallocated blocks reading zeroes, NPDG = 4 KiB.
    pub fn qemu_namespace(bytes: u64, block: u32) -> [u8; IDENTIFY_LEN] {
        let mut d = [0u8; IDENTIFY_LEN];
        let blocks = bytes / u64::from(block);
        d[0..8].copy_from_slice(&blocks.to_le_bytes());
        d[8..16].copy_from_slice(&blocks.to_le_bytes());
        d[16..24].copy_from_slice(&blocks.to_le_bytes());
        d[24] = 0x4 | NSFEAT_OPTPERF;
        d[25] = 7;
        d[26] = if block == 4096 { 4 } else { 0 };
        d[27] = 0x3; // MC: extended and separate metadata
        d[28] = 0x1F; // DPC
        d[33] = DLFEAT_READS_ZEROES;
        let npdg = (4096 / block).max(1) as u16 - 1;
        d[68..70].copy_from_slice(&npdg.to_le_bytes());
        d[70..72].copy_from_slice(&npdg.to_le_bytes());
        for (i, (ds, ms)) in [
            (9u8, 0u16),
            (9, 8),
            (9, 16),
            (9, 64),
            (12, 0),
            (12, 8),
            (12, 16),
            (12, 64),
        ]
        .into_iter()
        .enumerate()
        {
            let at = 128 + 4 * i;
            d[at..at + 2].copy_from_slice(&ms.to_le_bytes());
            d[at + 2] = ds;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::images::*;
    use super::*;

    #[test]
    fn controller_fields() {
        let c = Controller::parse(&qemu_controller());
        assert_eq!(c.serial, "deadbeef");
        assert_eq!(c.model, "QEMU NVMe Ctrl");
        assert_eq!(c.firmware, "7.2.0");
        assert_eq!(c.mdts, 7);
        assert_eq!(c.version_text(), "1.4");
        assert_ne!(c.oncs & ONCS_DSM, 0);
        assert_ne!(c.oncs & ONCS_WRITE_ZEROES, 0);
        assert_eq!(c.vwc & VWC_PRESENT, 1);
        assert_eq!(c.awupf, 0);
        let mut zero = [0u8; IDENTIFY_LEN];
        zero[4] = 0xFF;
        let c = Controller::parse(&zero);
        assert_eq!(c.serial, "");
        assert_eq!(c.version_text(), "1.0");
    }

    #[test]
    fn namespace_fields_and_the_format_in_use() {
        let n = Namespace::parse(&qemu_namespace(1 << 30, 512));
        assert_eq!((n.nsze, n.ncap), (1 << 21, 1 << 21));
        assert_eq!(n.nlbaf, 7);
        assert_eq!(n.format_index, 0);
        assert_eq!(
            n.format,
            Some(LbaFormat {
                metadata_size: 0,
                data_shift: 9,
                relative_performance: 0
            })
        );
        assert!(n.optimal_io_fields());
        assert!(n.deallocated_reads_zeroes() && !n.write_zeroes_deallocates());
        assert_eq!((n.npwg, n.npdg, n.nows), (0, 7, 0));
        assert_eq!(n.nsattr, 0);

        let n = Namespace::parse(&qemu_namespace(1 << 30, 4096));
        assert_eq!(n.nsze, 1 << 18);
        assert_eq!(n.format.unwrap().data_shift, 12);
        assert_eq!(n.npdg, 0);

        // A metadata format, and the upper index bits of FLBAS.
        let mut d = qemu_namespace(1 << 30, 512);
        d[26] = 0x10 | 5; // extended LBA, format 5: 4096 + 8
        let n = Namespace::parse(&d);
        assert_eq!(n.format.unwrap().metadata_size, 8);
        d[25] = 20;
        d[26] = 0x20 | 1; // index 0x11 = 17
        d[128 + 4 * 17 + 2] = 13;
        let n = Namespace::parse(&d);
        assert_eq!(n.format_index, 17);
        assert_eq!(n.format.unwrap().data_shift, 13);
        // An index past NLBAF names no format.
        d[25] = 3;
        assert_eq!(Namespace::parse(&d).format, None);
    }

    #[test]
    fn deallocation_features() {
        let mut d = qemu_namespace(1 << 20, 512);
        d[33] = 0x9; // reads zeroes, Write Zeroes deallocates (older QEMU)
        let n = Namespace::parse(&d);
        assert!(n.deallocated_reads_zeroes() && n.write_zeroes_deallocates());
        d[33] = 0x8 | 0x2; // reads all ones: DEAC would not zero
        let n = Namespace::parse(&d);
        assert!(!n.deallocated_reads_zeroes() && !n.write_zeroes_deallocates());
        d[33] = 0;
        assert!(!Namespace::parse(&d).deallocated_reads_zeroes());
    }
}
