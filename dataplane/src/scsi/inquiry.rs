//! INQUIRY data: standard (SPC-4 6.6.2) and the vital product data pages
//! (SPC-4 7.8, SBC-4 6.6).
//!
//! Builders write the whole response into `out` (at least
//! [`super::RESPONSE_BUFFER_LEN`] bytes) and return its length; the caller
//! truncates to the allocation length.

use super::unit::UnitInfo;

/// Supported VPD pages, ascending.
pub const VPD_PAGES: [u8; 6] = [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2];

/// VERSION of the standard data: SPC-4.
pub const VERSION_SPC4: u8 = 0x06;

/// Length of the standard INQUIRY data: through the version descriptors
/// (bytes 58..74) and the reserved bytes up to the vendor-specific
/// parameters at byte 96, the length LIO and most disks return.
pub const STANDARD_LEN: usize = 96;

/// Version descriptors of the standard data (SPC-4 6.6.2, table "Version
/// descriptor values"), in the order SPC-4 recommends (command set, then
/// the command set of the device type):
/// - SPC-4 (0460h, no version claimed), as VERSION 06h says;
/// - SBC-3 (04C0h, no version claimed): the Block Limits page is SBC-3's
///   (3Ch long; SBC-2's is 08h) and READ CAPACITY (16), the Logical Block
///   Provisioning page, UNMAP and WRITE SAME (16) are SBC-3's, so the unit
///   claims the standard whose pages it returns. (SBC-4 adds nothing an
///   initiator needs from this unit that SBC-3 lacks.)
///
/// No architecture model or transport descriptor: task management and the
/// transport are the kernel target's, which the unit does not see.
pub const VERSION_DESCRIPTORS: [u16; 2] = [0x0460, 0x04C0];

/// Writes the standard INQUIRY data: direct-access block device (type 0),
/// not removable, SPC-4, response data format 2 with HISUP, CMDQUE, and
/// the [`VERSION_DESCRIPTORS`].
pub fn standard(unit: &UnitInfo, out: &mut [u8]) -> usize {
    let data = &mut out[..STANDARD_LEN];
    data.fill(0);
    data[0] = 0x00; // peripheral qualifier 000b, device type 00h
    data[1] = 0x00; // RMB = 0
    data[2] = VERSION_SPC4;
    data[3] = 0x10 | 0x02; // HISUP, RESPONSE DATA FORMAT 2
    data[4] = (STANDARD_LEN - 5) as u8; // ADDITIONAL LENGTH
    data[7] = 0x02; // CMDQUE
    data[8..16].copy_from_slice(&unit.vendor);
    data[16..32].copy_from_slice(&unit.product);
    data[32..36].copy_from_slice(&unit.revision);
    for (i, descriptor) in VERSION_DESCRIPTORS.iter().enumerate() {
        data[58 + 2 * i..60 + 2 * i].copy_from_slice(&descriptor.to_be_bytes());
    }
    STANDARD_LEN
}

/// Writes VPD page `page` (one of [`VPD_PAGES`]); returns its length, or 0
/// for a page that is not supported (the decoder rejects those).
pub fn vpd(unit: &UnitInfo, page: u8, out: &mut [u8]) -> usize {
    let body_len = match page {
        0x00 => supported_pages(&mut out[4..]),
        0x80 => unit_serial_number(unit, &mut out[4..]),
        0x83 => device_identification(unit, &mut out[4..]),
        0xB0 => block_limits(unit, &mut out[4..]),
        0xB1 => block_device_characteristics(&mut out[4..]),
        0xB2 => logical_block_provisioning(unit, &mut out[4..]),
        _ => return 0,
    };
    out[0] = 0x00; // peripheral qualifier and device type
    out[1] = page;
    out[2..4].copy_from_slice(&(body_len as u16).to_be_bytes());
    4 + body_len
}

fn supported_pages(out: &mut [u8]) -> usize {
    out[..VPD_PAGES.len()].copy_from_slice(&VPD_PAGES);
    VPD_PAGES.len()
}

fn unit_serial_number(unit: &UnitInfo, out: &mut [u8]) -> usize {
    let serial = unit.serial.as_bytes();
    out[..serial.len()].copy_from_slice(serial);
    serial.len()
}

/// Device Identification: an NAA IEEE Registered Extended designator (type
/// 3, NAA 6: OUI, a zero 36-bit vendor specific identifier, and the 64-bit
/// logical unit id as the extension) and a T10 vendor ID designator (type 1:
/// vendor identification followed by the serial number), both associated
/// with the logical unit.
fn device_identification(unit: &UnitInfo, out: &mut [u8]) -> usize {
    // NAA 6 designator.
    out[0] = 0x01; // PROTOCOL IDENTIFIER 0, CODE SET binary
    out[1] = 0x03; // PIV 0, ASSOCIATION LU, DESIGNATOR TYPE NAA
    out[2] = 0;
    out[3] = 16;
    let oui = unit.ieee_company_id & 0x00FF_FFFF;
    let naa = &mut out[4..20];
    naa[0] = 0x60 | (oui >> 20) as u8;
    naa[1] = (oui >> 12) as u8;
    naa[2] = (oui >> 4) as u8;
    naa[3] = ((oui & 0x0F) << 4) as u8; // + top 4 bits of the zero VSID
    naa[4..8].fill(0);
    naa[8..16].copy_from_slice(&unit.lu_id.to_be_bytes());
    // T10 vendor ID designator.
    let serial = unit.serial.as_bytes();
    let t10 = &mut out[20..];
    t10[0] = 0x02; // CODE SET ASCII
    t10[1] = 0x01; // ASSOCIATION LU, DESIGNATOR TYPE T10 vendor ID
    t10[2] = 0;
    t10[3] = (8 + serial.len()) as u8;
    t10[4..12].copy_from_slice(&unit.vendor);
    t10[12..12 + serial.len()].copy_from_slice(serial);
    20 + 4 + 8 + serial.len()
}

/// Block Limits (page length 3Ch).
fn block_limits(unit: &UnitInfo, out: &mut [u8]) -> usize {
    let body = &mut out[..0x3C];
    body.fill(0);
    body[0] = 0x01; // WSNZ
    body[1] = unit.max_compare_write_blocks;
    // OPTIMAL TRANSFER LENGTH GRANULARITY: the optimal run (a strip) or,
    // without one, the physical block (smaller I/O is read-modify-write).
    let run = u16::try_from(unit.optimal_granularity_blocks).unwrap_or(0);
    let granularity = if run != 0 {
        run
    } else {
        (1u16 << unit.physical_block_exponent.min(15)) & !1
    };
    body[2..4].copy_from_slice(&granularity.to_be_bytes());
    body[4..8].copy_from_slice(&unit.max_transfer_blocks.to_be_bytes());
    // OPTIMAL TRANSFER LENGTH: a whole optimal run (e.g. a strip), if any.
    let optimal = if run == 0 {
        0
    } else {
        unit.optimal_granularity_blocks
            .min(unit.max_transfer_blocks)
    };
    body[8..12].copy_from_slice(&optimal.to_be_bytes());
    // bytes 12..16: MAXIMUM PREFETCH LENGTH 0
    if unit.unmap {
        body[16..20].copy_from_slice(&unit.max_unmap_lba_count.to_be_bytes());
        body[20..24].copy_from_slice(&unit.max_unmap_descriptors.to_be_bytes());
        let unmap_granularity = unit.unmap_granularity_blocks.max(1);
        body[24..28].copy_from_slice(&unmap_granularity.to_be_bytes()); // OPTIMAL UNMAP GRANULARITY
    }
    // bytes 28..32: UGAVALID 0, UNMAP GRANULARITY ALIGNMENT 0
    body[32..40].copy_from_slice(&u64::from(unit.max_write_same_blocks).to_be_bytes());
    // bytes 40..60: atomic transfer fields, 0 (no atomic writes)
    0x3C
}

/// Block Device Characteristics (page length 3Ch): non-rotating medium.
fn block_device_characteristics(out: &mut [u8]) -> usize {
    let body = &mut out[..0x3C];
    body.fill(0);
    body[0..2].copy_from_slice(&1u16.to_be_bytes()); // MEDIUM ROTATION RATE
    0x3C
}

/// Logical Block Provisioning (page length 4, no provisioning group
/// descriptor).
fn logical_block_provisioning(unit: &UnitInfo, out: &mut [u8]) -> usize {
    let body = &mut out[..4];
    body.fill(0);
    body[0] = 0; // THRESHOLD EXPONENT
    if unit.unmap {
        body[1] = 0x80 | 0x40 | 0x20; // LBPU, LBPWS, LBPWS10
        if unit.lbprz() {
            body[1] |= 0x04; // LBPRZ = 001b
        }
        body[2] = 0x02; // PROVISIONING TYPE: thin
    }
    4
}

#[cfg(test)]
mod tests {
    use super::super::unit::test_unit;
    use super::super::RESPONSE_BUFFER_LEN;
    use super::*;

    fn page(unit: &UnitInfo, code: u8) -> Vec<u8> {
        let mut out = [0xEEu8; RESPONSE_BUFFER_LEN];
        let len = vpd(unit, code, &mut out);
        out[..len].to_vec()
    }

    #[test]
    fn standard_data() {
        let mut out = [0xEEu8; RESPONSE_BUFFER_LEN];
        let len = standard(&test_unit(), &mut out);
        let mut expected = vec![0x00, 0x00, 0x06, 0x12, 91, 0x00, 0x00, 0x02];
        expected.extend_from_slice(b"TESTVEND");
        expected.extend_from_slice(b"TEST PRODUCT    ");
        expected.extend_from_slice(b"1.0 ");
        expected.resize(58, 0);
        expected.extend_from_slice(&[0x04, 0x60, 0x04, 0xC0]);
        expected.resize(96, 0);
        assert_eq!(&out[..len], &expected[..]);
    }

    /// The standard data claims the standards whose pages and fields the
    /// unit returns: SPC-4 (also VERSION 06h) and SBC-3, which defines the
    /// 3Ch-long Block Limits page (SBC-2's page is 08h long), so an
    /// initiator reading the descriptors knows what the page holds.
    #[test]
    fn standard_data_claims_spc4_and_sbc3() {
        let mut out = [0xEEu8; RESPONSE_BUFFER_LEN];
        let len = standard(&test_unit(), &mut out);
        assert!(len >= 74, "{len}: no room for version descriptors");
        assert_eq!(usize::from(out[4]) + 5, len, "ADDITIONAL LENGTH");
        let descriptors: Vec<u16> = out[58..74]
            .chunks(2)
            .map(|d| u16::from_be_bytes([d[0], d[1]]))
            .filter(|&d| d != 0)
            .collect();
        assert!(descriptors.contains(&0x0460), "SPC-4: {descriptors:x?}");
        assert!(descriptors.contains(&0x04C0), "SBC-3: {descriptors:x?}");
        assert_eq!(page(&test_unit(), 0xB0)[3], 0x3C);
    }

    #[test]
    fn supported_pages_page() {
        assert_eq!(
            page(&test_unit(), 0x00),
            [0, 0x00, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]
        );
    }

    #[test]
    fn serial_number_page() {
        let mut expected = vec![0, 0x80, 0, 8];
        expected.extend_from_slice(b"SER12345");
        assert_eq!(page(&test_unit(), 0x80), expected);
    }

    #[test]
    fn device_identification_page() {
        let mut expected = vec![0, 0x83, 0, 40];
        expected.extend_from_slice(&[0x01, 0x03, 0x00, 0x10]);
        // NAA 6, OUI 0x001405, VSID 0, extension = lu_id.
        expected.extend_from_slice(&[0x60, 0x01, 0x40, 0x50, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF]);
        expected.extend_from_slice(&[0x02, 0x01, 0x00, 16]);
        expected.extend_from_slice(b"TESTVEND");
        expected.extend_from_slice(b"SER12345");
        assert_eq!(page(&test_unit(), 0x83), expected);
    }

    #[test]
    fn block_limits_page_with_unmap() {
        let unit = test_unit();
        let data = page(&unit, 0xB0);
        let mut expected = vec![0u8; 64];
        expected[1] = 0xB0;
        expected[3] = 0x3C;
        expected[4] = 0x01; // WSNZ
        expected[5] = 8; // MAXIMUM COMPARE AND WRITE LENGTH
        expected[6..8].copy_from_slice(&16u16.to_be_bytes()); // granularity
        expected[8..12].copy_from_slice(&2048u32.to_be_bytes()); // max transfer
        expected[12..16].copy_from_slice(&16u32.to_be_bytes()); // optimal transfer
        expected[20..24].copy_from_slice(&0x10000u32.to_be_bytes()); // max unmap LBA count
        expected[24..28].copy_from_slice(&4u32.to_be_bytes()); // max unmap descriptors
        expected[28..32].copy_from_slice(&1u32.to_be_bytes()); // optimal unmap granularity
        expected[36..44].copy_from_slice(&0x8000u64.to_be_bytes()); // max write same
        assert_eq!(data, expected);
    }

    #[test]
    fn block_limits_page_reports_the_physical_block_and_unmap_granularity() {
        // 512-byte blocks on a 4 KiB-block medium that deallocates 64 KiB.
        let unit = UnitInfo {
            physical_block_exponent: 3,
            optimal_granularity_blocks: 0,
            unmap_granularity_blocks: 128,
            ..test_unit()
        };
        let data = page(&unit, 0xB0);
        assert_eq!(
            &data[6..8],
            8u16.to_be_bytes(),
            "granularity: one physical block"
        );
        assert_eq!(&data[12..16], [0; 4], "no optimal transfer length");
        assert_eq!(
            &data[28..32],
            128u32.to_be_bytes(),
            "optimal unmap granularity"
        );
        // A strip, when there is one, is the granularity.
        let striped = UnitInfo {
            optimal_granularity_blocks: 256,
            ..unit
        };
        assert_eq!(&page(&striped, 0xB0)[6..8], 256u16.to_be_bytes());
    }

    #[test]
    fn block_limits_page_without_unmap() {
        let unit = UnitInfo {
            unmap: false,
            optimal_granularity_blocks: 0x10000, // does not fit: not reported
            ..test_unit()
        };
        let data = page(&unit, 0xB0);
        assert_eq!(data.len(), 64);
        assert_eq!(&data[6..8], [0, 0]);
        assert_eq!(&data[12..16], [0, 0, 0, 0]);
        assert_eq!(&data[20..36], [0; 16]);
        assert_eq!(&data[36..44], 0x8000u64.to_be_bytes());
    }

    #[test]
    fn block_device_characteristics_page() {
        let mut expected = vec![0u8; 64];
        expected[1] = 0xB1;
        expected[3] = 0x3C;
        expected[5] = 0x01;
        assert_eq!(page(&test_unit(), 0xB1), expected);
    }

    #[test]
    fn logical_block_provisioning_page() {
        let unit = test_unit();
        assert_eq!(page(&unit, 0xB2), [0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0]);
        let no_lbprz = UnitInfo {
            unmap_reads_zeroes: false,
            ..test_unit()
        };
        assert_eq!(page(&no_lbprz, 0xB2), [0, 0xB2, 0, 4, 0, 0xE0, 0x02, 0]);
        let no_unmap = UnitInfo {
            unmap: false,
            ..test_unit()
        };
        assert_eq!(page(&no_unmap, 0xB2), [0, 0xB2, 0, 4, 0, 0, 0, 0]);
    }

    #[test]
    fn longest_serial_fits_the_response_buffer() {
        let unit = UnitInfo {
            serial: "S".repeat(super::super::unit::MAX_SERIAL_LEN),
            ..test_unit()
        };
        for code in VPD_PAGES {
            let data = page(&unit, code);
            assert_eq!(
                usize::from(u16::from_be_bytes([data[2], data[3]])) + 4,
                data.len()
            );
        }
        assert_eq!(page(&unit, 0x83).len(), 4 + 20 + 12 + 128);
    }
}
