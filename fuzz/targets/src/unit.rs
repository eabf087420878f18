//! A [`UnitInfo`] drawn from the input, within the invariants
//! `Lun::new` enforces.

use dataplane::scsi::unit::ascii_field;
use dataplane::scsi::{ControlMode, ModeState, ModeValues, UnitInfo};

use crate::input::Input;

/// A unit with geometry, capabilities and limits from the input.
pub fn unit(input: &mut Input<'_>) -> UnitInfo {
    let block_size = 512u32 << input.below(4);
    UnitInfo {
        vendor: ascii_field("FUZZ"),
        product: ascii_field("FUZZ UNIT"),
        revision: ascii_field("1.0"),
        serial: "FUZZ0001".into(),
        lu_id: input.u64(),
        ieee_company_id: 0x001405,
        block_size,
        num_blocks: 1 + (input.u64() >> input.below(64)),
        read_only: input.chance(10),
        volatile_cache: input.chance(50),
        unmap: input.chance(70),
        unmap_reads_zeroes: input.chance(50),
        physical_block_exponent: input.below(4) as u8,
        optimal_granularity_blocks: u32::from(input.u8()),
        unmap_granularity_blocks: 1 + u32::from(input.u8()),
        max_transfer_blocks: 1 + u32::from(input.u16()),
        max_unmap_lba_count: 1 + input.u32() % 0x10_0000,
        max_unmap_descriptors: 1 + input.below(16) as u32,
        max_write_same_blocks: 1 + u32::from(input.u16()),
        max_compare_write_blocks: 1 + input.below(255) as u8,
        control: ControlMode {
            tst: input.below(2) as u8,
            queue_alg: input.below(2) as u8,
            qerr: [0, 1, 3][input.below(3)],
            tas: input.chance(50),
            swp: input.chance(10),
            d_sense_changeable: input.chance(50),
        },
    }
}

/// Mode state with values from the input.
pub fn mode(input: &mut Input<'_>) -> ModeState {
    ModeState::new(ModeValues {
        write_cache: input.chance(50),
        descriptor_sense: input.chance(50),
    })
}
