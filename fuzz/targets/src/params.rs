//! The `param_lists` target: MODE SELECT and UNMAP parameter lists.
//!
//! Checks: no panic; an error encodes to well-formed sense whose field
//! pointer lies inside the list; an accepted UNMAP list has the count of
//! descriptors it reports, each inside the unit, within the unit's limits;
//! after an accepted MODE SELECT, MODE SENSE of the Caching and Control
//! pages, sent back as MODE SELECT, is accepted and changes nothing.

use dataplane::scsi::mode::{select, sense, SenseRequest};
use dataplane::scsi::unmap::{validate, Descriptor};
use dataplane::scsi::{ModeState, PageControl, UnitInfo, RESPONSE_BUFFER_LEN};

use crate::input::Input;
use crate::scsi::check_error;
use crate::unit::{mode, unit};

/// The target.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let unit = unit(&mut input);
    let mut state = mode(&mut input);
    let unmap = input.chance(50);
    let ten = input.chance(50);
    let list = input.rest();
    if unmap {
        check_unmap(list, &unit);
    } else {
        let before = state.current;
        match select(&unit, &mut state, ten, list) {
            Ok(()) => round_trip(&unit, &mut state),
            Err(error) => {
                check_error(&error, if ten { 10 } else { 6 }, list.len());
                assert_eq!(
                    state.current, before,
                    "a refused MODE SELECT changed the mode"
                );
            }
        }
    }
}

fn check_unmap(list: &[u8], unit: &UnitInfo) {
    match validate(list, unit) {
        Ok(count) => {
            let descriptor_len = usize::from(u16::from_be_bytes([list[2], list[3]]));
            assert_eq!(count as usize, descriptor_len / 16);
            assert!(count <= unit.max_unmap_descriptors);
            let mut total = 0u64;
            for i in 0..count as usize {
                let at = 8 + 16 * i;
                let bytes: [u8; 16] = list[at..at + 16].try_into().unwrap();
                let d = Descriptor::decode(&bytes);
                assert!(d
                    .lba
                    .checked_add(u64::from(d.blocks))
                    .is_some_and(|e| e <= unit.num_blocks));
                total += u64::from(d.blocks);
            }
            assert!(total <= u64::from(unit.max_unmap_lba_count));
        }
        Err(error) => check_error(&error, 10, list.len()),
    }
}

/// MODE SENSE of each changeable page, fed back to MODE SELECT, is
/// accepted and leaves the mode as it was.
fn round_trip(unit: &UnitInfo, state: &mut ModeState) {
    for (ten, page) in [(false, 0x08), (true, 0x08), (false, 0x0A), (true, 0x0A)] {
        let request = SenseRequest {
            ten,
            dbd: true,
            llbaa: false,
            pc: PageControl::Current,
            page,
        };
        let mut out = [0u8; RESPONSE_BUFFER_LEN];
        let n = sense(unit, state, request, &mut out);
        let before = state.current;
        if let Err(e) = select(unit, state, ten, &out[..n]) {
            panic!(
                "MODE SENSE data of page {page:#x} refused by MODE SELECT: {e:?} {:02x?}",
                &out[..n]
            );
        }
        assert_eq!(
            state.current, before,
            "MODE SELECT of the current values changed them"
        );
    }
}
