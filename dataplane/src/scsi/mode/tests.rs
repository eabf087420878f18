//! Tests of MODE SENSE and MODE SELECT.

use super::super::unit::test_unit;
use super::super::RESPONSE_BUFFER_LEN;
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
