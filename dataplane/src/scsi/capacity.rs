//! READ CAPACITY (10) and (16) parameter data (SBC-4 5.20, 5.21).

use super::unit::UnitInfo;

/// Length of the READ CAPACITY (10) parameter data.
pub const READ_CAPACITY_10_LEN: usize = 8;
/// Length of the READ CAPACITY (16) parameter data.
pub const READ_CAPACITY_16_LEN: usize = 32;

/// Writes the READ CAPACITY (10) data: the last LBA (FFFFFFFFh when it does
/// not fit, telling the initiator to use READ CAPACITY (16)) and the block
/// length.
pub fn read_capacity_10(unit: &UnitInfo, out: &mut [u8]) -> usize {
    let last = u32::try_from(unit.last_lba()).unwrap_or(u32::MAX);
    out[0..4].copy_from_slice(&last.to_be_bytes());
    out[4..8].copy_from_slice(&unit.block_size.to_be_bytes());
    READ_CAPACITY_10_LEN
}

/// Writes the READ CAPACITY (16) data: last LBA, block length, RC BASIS 01b
/// (the returned LBA is the last one of the unit), no protection, the
/// unit's logical blocks per physical block exponent, LBPME/LBPRZ from the
/// unit, lowest aligned LBA 0.
pub fn read_capacity_16(unit: &UnitInfo, out: &mut [u8]) -> usize {
    let data = &mut out[..READ_CAPACITY_16_LEN];
    data.fill(0);
    data[0..8].copy_from_slice(&unit.last_lba().to_be_bytes());
    data[8..12].copy_from_slice(&unit.block_size.to_be_bytes());
    data[12] = 0x10; // RC BASIS 01b, P_TYPE 0, PROT_EN 0
                     // P_I_EXPONENT 0, LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT
    data[13] = unit.physical_block_exponent & 0x0F;
    if unit.lbpme() {
        data[14] |= 0x80;
    }
    if unit.lbprz() {
        data[14] |= 0x40;
    }
    READ_CAPACITY_16_LEN
}

#[cfg(test)]
mod tests {
    use super::super::unit::test_unit;
    use super::*;

    #[test]
    fn read_capacity_10_data() {
        let mut out = [0u8; 8];
        read_capacity_10(&test_unit(), &mut out);
        assert_eq!(out, [0x00, 0x0F, 0xFF, 0xFF, 0, 0, 0x02, 0x00]);
        let big = UnitInfo {
            num_blocks: (1 << 32) + 1,
            block_size: 4096,
            ..test_unit()
        };
        read_capacity_10(&big, &mut out);
        assert_eq!(out, [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x10, 0x00]);
        // Exactly 2^32 blocks: the last LBA still fits.
        let edge = UnitInfo {
            num_blocks: 1 << 32,
            ..test_unit()
        };
        read_capacity_10(&edge, &mut out);
        assert_eq!(out, [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x02, 0x00]);
    }

    #[test]
    fn read_capacity_16_data() {
        let mut out = [0xEEu8; 32];
        read_capacity_16(&test_unit(), &mut out);
        let mut expected = [0u8; 32];
        expected[0..8].copy_from_slice(&((1u64 << 20) - 1).to_be_bytes());
        expected[8..12].copy_from_slice(&512u32.to_be_bytes());
        expected[12] = 0x10;
        expected[14] = 0xC0;
        assert_eq!(out, expected);
        let thick = UnitInfo {
            unmap: false,
            ..test_unit()
        };
        read_capacity_16(&thick, &mut out);
        assert_eq!(out[14], 0);
        let no_lbprz = UnitInfo {
            unmap_reads_zeroes: false,
            ..test_unit()
        };
        read_capacity_16(&no_lbprz, &mut out);
        assert_eq!(out[14], 0x80);
        // 512-byte logical blocks on 4 KiB physical blocks: exponent 3.
        let advanced = UnitInfo {
            physical_block_exponent: 3,
            ..test_unit()
        };
        read_capacity_16(&advanced, &mut out);
        assert_eq!(out[13], 0x03);
    }
}
