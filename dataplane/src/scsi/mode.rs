//! MODE SENSE and MODE SELECT (SPC-4 6.11-6.14, 7.5) with the Caching (08h)
//! and Control (0Ah) mode pages.
//!
//! Changeable parameters: WCE of the Caching page (only when the device has
//! a volatile cache) and D_SENSE of the Control page. Saved parameters are
//! not implemented. The same page builders serve MODE SENSE and the checks
//! of MODE SELECT, so what a MODE SELECT must send back is exactly what MODE
//! SENSE reported.

use super::cdb::PageControl;
use super::sense::ScsiError;
use super::unit::{ModeState, ModeValues, UnitInfo};

/// Caching mode page code.
pub const CACHING_PAGE: u8 = 0x08;
/// Control mode page code.
pub const CONTROL_PAGE: u8 = 0x0A;
/// "Return all pages" page code.
pub const ALL_PAGES: u8 = 0x3F;
/// Page codes MODE SENSE accepts.
pub const PAGES: [u8; 3] = [CACHING_PAGE, CONTROL_PAGE, ALL_PAGES];

const CACHING_LEN: usize = 20;
const CONTROL_LEN: usize = 12;

/// Which values a page is built with.
#[derive(Clone, Copy)]
enum Values {
    Of(ModeValues),
    Changeable,
}

fn caching_page(unit: &UnitInfo, values: Values) -> [u8; CACHING_LEN] {
    let mut page = [0u8; CACHING_LEN];
    page[0] = CACHING_PAGE; // PS = 0, SPF = 0
    page[1] = (CACHING_LEN - 2) as u8;
    page[2] = match values {
        Values::Of(v) if v.write_cache => 0x04, // WCE; RCD = 0
        Values::Of(_) => 0,
        Values::Changeable if unit.volatile_cache => 0x04,
        Values::Changeable => 0,
    };
    page
}

fn control_page(values: Values) -> [u8; CONTROL_LEN] {
    let mut page = [0u8; CONTROL_LEN];
    page[0] = CONTROL_PAGE;
    page[1] = (CONTROL_LEN - 2) as u8;
    match values {
        Values::Of(v) => {
            // TST 000b, TMF_ONLY 0, DPICZ 0, D_SENSE, GLTSD 0, RLEC 0.
            page[2] = if v.descriptor_sense { 0x04 } else { 0 };
            page[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
            page[5] = 0x40; // TAS
            page[8..10].copy_from_slice(&0xFFFFu16.to_be_bytes()); // BUSY TIMEOUT PERIOD: unlimited
        }
        Values::Changeable => page[2] = 0x04,
    }
    page
}

/// Device-specific parameter of the mode parameter header: WP and DPOFUA.
fn device_specific(unit: &UnitInfo) -> u8 {
    let mut dsp = 0x10; // DPOFUA
    if unit.read_only {
        dsp |= 0x80; // WP
    }
    dsp
}

/// Parameters of a MODE SENSE.
#[derive(Debug, Clone, Copy)]
pub struct SenseRequest {
    /// MODE SENSE (10).
    pub ten: bool,
    /// DBD.
    pub dbd: bool,
    /// LLBAA.
    pub llbaa: bool,
    /// PC.
    pub pc: PageControl,
    /// PAGE CODE.
    pub page: u8,
}

/// Writes the mode parameter data of a MODE SENSE into `out`; returns its
/// length.
pub fn sense(unit: &UnitInfo, mode: &ModeState, request: SenseRequest, out: &mut [u8]) -> usize {
    let header_len = if request.ten { 8 } else { 4 };
    let long_lba = request.ten && request.llbaa;
    let descriptor_len = match (request.dbd, long_lba) {
        (true, _) => 0,
        (false, false) => 8,
        (false, true) => 16,
    };
    let mut len = header_len;
    out[..header_len].fill(0);
    // Block descriptor (current values whatever the PC).
    if descriptor_len == 8 {
        let blocks = u32::try_from(unit.num_blocks).unwrap_or(u32::MAX);
        out[len..len + 4].copy_from_slice(&blocks.to_be_bytes());
        out[len + 4] = 0;
        out[len + 5..len + 8].copy_from_slice(&unit.block_size.to_be_bytes()[1..]);
    } else if descriptor_len == 16 {
        out[len..len + 8].copy_from_slice(&unit.num_blocks.to_be_bytes());
        out[len + 8..len + 12].fill(0);
        out[len + 12..len + 16].copy_from_slice(&unit.block_size.to_be_bytes());
    }
    len += descriptor_len;
    let values = match request.pc {
        PageControl::Current => Values::Of(mode.current),
        PageControl::Default => Values::Of(mode.default),
        PageControl::Changeable => Values::Changeable,
    };
    if matches!(request.page, CACHING_PAGE | ALL_PAGES) {
        out[len..len + CACHING_LEN].copy_from_slice(&caching_page(unit, values));
        len += CACHING_LEN;
    }
    if matches!(request.page, CONTROL_PAGE | ALL_PAGES) {
        out[len..len + CONTROL_LEN].copy_from_slice(&control_page(values));
        len += CONTROL_LEN;
    }
    if request.ten {
        out[0..2].copy_from_slice(&((len - 2) as u16).to_be_bytes());
        out[3] = device_specific(unit);
        out[4] = u8::from(long_lba); // LONGLBA
        out[6..8].copy_from_slice(&(descriptor_len as u16).to_be_bytes());
    } else {
        out[0] = (len - 1) as u8;
        out[2] = device_specific(unit);
        out[3] = descriptor_len as u8;
    }
    len
}

/// Applies a MODE SELECT parameter list (`list`: exactly PARAMETER LIST
/// LENGTH bytes) to `mode`. Either the whole list is valid and applied, or
/// nothing changes:
/// - a list shorter than the header, or truncating a block descriptor or a
///   page: PARAMETER LIST LENGTH ERROR;
/// - MEDIUM TYPE other than 0, a block descriptor length other than 0 or 8
///   (16 with LONGLBA), a block descriptor whose block count (0 = keep) or
///   block length differ from the unit's, a page other than 08h/0Ah, a
///   subpage format, a wrong page length, or a bit that differs from the
///   current value and is not changeable: INVALID FIELD IN PARAMETER LIST
///   pointing at it.
///
/// The PS bit and the header's MODE DATA LENGTH and device-specific
/// parameter are reserved for MODE SELECT and ignored.
pub fn select(
    unit: &UnitInfo,
    mode: &mut ModeState,
    ten: bool,
    list: &[u8],
) -> Result<(), ScsiError> {
    if list.is_empty() {
        return Ok(());
    }
    let header_len = if ten { 8 } else { 4 };
    if list.len() < header_len {
        return Err(ScsiError::ParameterListLengthError);
    }
    let (medium_type_at, descriptor_len, long_lba) = if ten {
        let long_lba = list[4] & 0x01 != 0;
        (
            2,
            usize::from(u16::from_be_bytes([list[6], list[7]])),
            long_lba,
        )
    } else {
        (1, usize::from(list[3]), false)
    };
    if list[medium_type_at] != 0 {
        return Err(ScsiError::param_byte(medium_type_at as u16));
    }
    let expected_descriptor = if long_lba { 16 } else { 8 };
    if descriptor_len != 0 && descriptor_len != expected_descriptor {
        return Err(ScsiError::param_byte(if ten { 6 } else { 3 }));
    }
    if header_len + descriptor_len > list.len() {
        return Err(ScsiError::ParameterListLengthError);
    }
    if descriptor_len != 0 {
        check_block_descriptor(
            unit,
            &list[header_len..header_len + descriptor_len],
            header_len,
            long_lba,
        )?;
    }
    let mut staged = mode.current;
    let mut pos = header_len + descriptor_len;
    while pos < list.len() {
        if pos + 2 > list.len() {
            return Err(ScsiError::ParameterListLengthError);
        }
        let code = list[pos] & 0x3F;
        if list[pos] & 0x40 != 0 {
            return Err(ScsiError::param_bit(pos as u16, 6)); // SPF: no subpages
        }
        let (current, changeable): (&[u8], &[u8]) = match code {
            CACHING_PAGE => (
                &caching_page(unit, Values::Of(mode.current)),
                &caching_page(unit, Values::Changeable),
            ),
            CONTROL_PAGE => (
                &control_page(Values::Of(mode.current)),
                &control_page(Values::Changeable),
            ),
            _ => return Err(ScsiError::param_bit(pos as u16, 5)),
        };
        let page_len = usize::from(list[pos + 1]);
        if page_len != current.len() - 2 {
            return Err(ScsiError::param_byte((pos + 1) as u16));
        }
        if pos + 2 + page_len > list.len() {
            return Err(ScsiError::ParameterListLengthError);
        }
        let page = &list[pos..pos + 2 + page_len];
        for i in 2..page.len() {
            let differs = (page[i] ^ current[i]) & !changeable[i];
            if differs != 0 {
                let bit = 7 - differs.leading_zeros() as u8;
                return Err(ScsiError::param_bit((pos + i) as u16, bit));
            }
        }
        match code {
            CACHING_PAGE => staged.write_cache = page[2] & 0x04 != 0,
            _ => staged.descriptor_sense = page[2] & 0x04 != 0,
        }
        pos += 2 + page_len;
    }
    mode.current = staged;
    Ok(())
}

fn check_block_descriptor(
    unit: &UnitInfo,
    descriptor: &[u8],
    at: usize,
    long_lba: bool,
) -> Result<(), ScsiError> {
    let (blocks, current_blocks, length, length_at) = if long_lba {
        let mut count = [0u8; 8];
        count.copy_from_slice(&descriptor[0..8]);
        (
            u64::from_be_bytes(count),
            unit.num_blocks,
            u32::from_be_bytes([
                descriptor[12],
                descriptor[13],
                descriptor[14],
                descriptor[15],
            ]),
            12,
        )
    } else {
        (
            u64::from(u32::from_be_bytes([
                descriptor[0],
                descriptor[1],
                descriptor[2],
                descriptor[3],
            ])),
            unit.num_blocks.min(u64::from(u32::MAX)),
            u32::from_be_bytes([0, descriptor[5], descriptor[6], descriptor[7]]),
            5,
        )
    };
    if blocks != 0 && blocks != current_blocks {
        return Err(ScsiError::param_byte(at as u16));
    }
    if length != unit.block_size {
        return Err(ScsiError::param_byte((at + length_at) as u16));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{test_unit, RESPONSE_BUFFER_LEN};
    use super::*;

    fn mode() -> ModeState {
        ModeState::new(ModeValues {
            write_cache: true,
            descriptor_sense: false,
        })
    }

    fn run(unit: &UnitInfo, mode: &ModeState, request: SenseRequest) -> Vec<u8> {
        let mut out = [0xEEu8; RESPONSE_BUFFER_LEN];
        let len = sense(unit, mode, request, &mut out);
        out[..len].to_vec()
    }

    fn req(ten: bool, dbd: bool, llbaa: bool, pc: PageControl, page: u8) -> SenseRequest {
        SenseRequest {
            ten,
            dbd,
            llbaa,
            pc,
            page,
        }
    }

    const CACHING_WCE: [u8; 20] = [
        0x08, 0x12, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    const CONTROL_FIXED: [u8; 12] = [0x0A, 0x0A, 0x00, 0x10, 0, 0x40, 0, 0, 0xFF, 0xFF, 0, 0];

    #[test]
    fn mode_sense_6_all_pages_with_block_descriptor() {
        let unit = test_unit();
        let data = run(
            &unit,
            &mode(),
            req(false, false, false, PageControl::Current, 0x3F),
        );
        let mut expected = vec![3 + 8 + 20 + 12, 0, 0x10, 8];
        expected.extend_from_slice(&[0x00, 0x10, 0x00, 0x00, 0, 0x00, 0x02, 0x00]);
        expected.extend_from_slice(&CACHING_WCE);
        expected.extend_from_slice(&CONTROL_FIXED);
        assert_eq!(data, expected);
    }

    #[test]
    fn mode_sense_6_dbd_caching_only_read_only() {
        let unit = UnitInfo {
            read_only: true,
            ..test_unit()
        };
        let data = run(
            &unit,
            &mode(),
            req(false, true, false, PageControl::Current, 0x08),
        );
        let mut expected = vec![23, 0, 0x90, 0];
        expected.extend_from_slice(&CACHING_WCE);
        assert_eq!(data, expected);
    }

    #[test]
    fn mode_sense_10_long_lba_control() {
        let unit = test_unit();
        let data = run(
            &unit,
            &mode(),
            req(true, false, true, PageControl::Current, 0x0A),
        );
        let mut expected = vec![0, 6 + 16 + 12, 0, 0x10, 0x01, 0, 0, 16];
        expected.extend_from_slice(&(1u64 << 20).to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x02, 0x00]);
        expected.extend_from_slice(&CONTROL_FIXED);
        assert_eq!(data, expected);
    }

    #[test]
    fn mode_sense_10_short_descriptor_caps_block_count() {
        let unit = UnitInfo {
            num_blocks: 1 << 33,
            ..test_unit()
        };
        let data = run(
            &unit,
            &mode(),
            req(true, false, false, PageControl::Current, 0x0A),
        );
        assert_eq!(&data[..8], [0, 6 + 8 + 12, 0, 0x10, 0, 0, 0, 8]);
        assert_eq!(&data[8..16], [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x02, 0]);
    }

    #[test]
    fn mode_sense_changeable_and_default() {
        let unit = test_unit();
        let mut state = mode();
        state.current.write_cache = false;
        state.current.descriptor_sense = true;
        let changeable = run(
            &unit,
            &state,
            req(false, true, false, PageControl::Changeable, 0x3F),
        );
        let mut expected = vec![3 + 32, 0, 0x10, 0];
        let mut caching = [0u8; 20];
        caching[0] = 0x08;
        caching[1] = 0x12;
        caching[2] = 0x04;
        expected.extend_from_slice(&caching);
        expected.extend_from_slice(&[0x0A, 0x0A, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(changeable, expected);
        // Without a volatile cache WCE is not changeable.
        let no_cache = UnitInfo {
            volatile_cache: false,
            ..test_unit()
        };
        let changeable = run(
            &no_cache,
            &state,
            req(false, true, false, PageControl::Changeable, 0x08),
        );
        assert_eq!(changeable[4 + 2], 0);
        // Default values come from the configuration, current ones changed.
        let default = run(
            &unit,
            &state,
            req(false, true, false, PageControl::Default, 0x3F),
        );
        assert_eq!(default[4 + 2], 0x04);
        assert_eq!(default[24 + 2], 0x00);
        let current = run(
            &unit,
            &state,
            req(false, true, false, PageControl::Current, 0x3F),
        );
        assert_eq!(current[4 + 2], 0x00);
        assert_eq!(current[24 + 2], 0x04);
    }

    fn select_list(ten: bool, descriptor: &[u8], pages: &[&[u8]]) -> Vec<u8> {
        let mut list = if ten {
            let mut h = vec![0u8; 8];
            h[6..8].copy_from_slice(&(descriptor.len() as u16).to_be_bytes());
            if descriptor.len() == 16 {
                h[4] = 1;
            }
            h
        } else {
            vec![0, 0, 0, descriptor.len() as u8]
        };
        list.extend_from_slice(descriptor);
        for page in pages {
            list.extend_from_slice(page);
        }
        list
    }

    #[test]
    fn mode_select_changes_wce_and_d_sense() {
        let unit = test_unit();
        let mut state = mode();
        let mut caching = CACHING_WCE;
        caching[2] = 0;
        caching[0] |= 0x80; // PS is ignored
        let mut control = CONTROL_FIXED;
        control[2] = 0x04;
        let list = select_list(false, &[], &[&caching, &control]);
        assert_eq!(select(&unit, &mut state, false, &list), Ok(()));
        assert!(!state.current.write_cache);
        assert!(state.current.descriptor_sense);
        assert!(state.default.write_cache);
        // MODE SELECT (10) with a matching long descriptor.
        let mut descriptor = [0u8; 16];
        descriptor[0..8].copy_from_slice(&(1u64 << 20).to_be_bytes());
        descriptor[12..16].copy_from_slice(&512u32.to_be_bytes());
        let list = select_list(true, &descriptor, &[&CACHING_WCE]);
        assert_eq!(select(&unit, &mut state, true, &list), Ok(()));
        assert!(state.current.write_cache);
        assert!(state.current.descriptor_sense);
        // Empty list: nothing happens.
        assert_eq!(select(&unit, &mut state, false, &[]), Ok(()));
    }

    #[test]
    fn mode_select_rejects_and_changes_nothing() {
        let unit = test_unit();
        let original = mode();
        let mut control = CONTROL_FIXED;
        control[2] = 0x04; // a valid change...
        let mut caching_bad = CACHING_WCE;
        caching_bad[2] |= 0x01; // ...and RCD, which is not changeable
        let list = select_list(false, &[], &[&control, &caching_bad]);
        let mut state = original;
        assert_eq!(
            select(&unit, &mut state, false, &list),
            Err(ScsiError::param_bit(4 + 12 + 2, 0))
        );
        assert_eq!(state, original);

        let cases: Vec<(bool, Vec<u8>, ScsiError)> = vec![
            (false, vec![0, 0, 0], ScsiError::ParameterListLengthError),
            (
                true,
                vec![0, 0, 0, 0, 0, 0, 0],
                ScsiError::ParameterListLengthError,
            ),
            (false, vec![0, 1, 0, 0], ScsiError::param_byte(1)),
            (true, vec![0, 0, 5, 0, 0, 0, 0, 0], ScsiError::param_byte(2)),
            (
                false,
                vec![0, 0, 0, 4, 0, 0, 0, 0],
                ScsiError::param_byte(3),
            ),
            (
                true,
                select_list(true, &[0; 8], &[])[..8]
                    .iter()
                    .copied()
                    .chain([0; 4])
                    .collect(),
                ScsiError::ParameterListLengthError,
            ),
            (
                false,
                vec![0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x02],
                ScsiError::ParameterListLengthError,
            ),
            // Block descriptor: wrong count, wrong length; count 0 = keep.
            (
                false,
                select_list(false, &[0, 0, 0, 5, 0, 0, 2, 0], &[]),
                ScsiError::param_byte(4),
            ),
            (
                false,
                select_list(false, &[0, 0x10, 0, 0, 0, 0, 0x10, 0], &[]),
                ScsiError::param_byte(9),
            ),
            // Pages: unknown, subpage format, wrong length, truncated.
            (
                false,
                select_list(false, &[], &[&[0x1C, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]),
                ScsiError::param_bit(4, 5),
            ),
            (
                false,
                select_list(false, &[], &[&[0x48, 0x12]]),
                ScsiError::param_bit(4, 6),
            ),
            (
                false,
                select_list(false, &[], &[&[0x08, 0x13]]),
                ScsiError::param_byte(5),
            ),
            (
                false,
                select_list(false, &[], &[&CACHING_WCE[..10]]),
                ScsiError::ParameterListLengthError,
            ),
            (
                false,
                select_list(false, &[], &[&[0x08]]),
                ScsiError::ParameterListLengthError,
            ),
            // Control page: QAM differs (byte 3 bit 4).
            (
                false,
                select_list(
                    false,
                    &[],
                    &[&[0x0A, 0x0A, 0x00, 0x00, 0, 0x40, 0, 0, 0xFF, 0xFF, 0, 0]],
                ),
                ScsiError::param_bit(4 + 3, 4),
            ),
        ];
        for (ten, list, expected) in cases {
            let mut state = original;
            assert_eq!(
                select(&unit, &mut state, ten, &list),
                Err(expected),
                "{list:02x?}"
            );
            assert_eq!(state, original);
        }
        let mut state = original;
        assert_eq!(
            select(
                &unit,
                &mut state,
                false,
                &select_list(false, &[0, 0, 0, 0, 0, 0, 2, 0], &[])
            ),
            Ok(())
        );
    }

    #[test]
    fn mode_select_wce_not_changeable_without_volatile_cache() {
        let unit = UnitInfo {
            volatile_cache: false,
            ..test_unit()
        };
        let mut state = ModeState::new(ModeValues {
            write_cache: false,
            descriptor_sense: false,
        });
        let list = select_list(false, &[], &[&CACHING_WCE]);
        assert_eq!(
            select(&unit, &mut state, false, &list),
            Err(ScsiError::param_bit(6, 2))
        );
    }
}
