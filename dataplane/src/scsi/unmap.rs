//! The UNMAP parameter list (SBC-4 5.31.2): an 8-byte header followed by
//! 16-byte block descriptors.

use super::sense::ScsiError;
use super::unit::UnitInfo;

/// Length of the parameter list header.
pub const HEADER_LEN: usize = 8;
/// Length of one UNMAP block descriptor.
pub const DESCRIPTOR_LEN: usize = 16;
/// Longest parameter list (PARAMETER LIST LENGTH is 16 bits).
pub const MAX_PARAM_LEN: usize = 0xFFFF;

/// One UNMAP block descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// UNMAP LOGICAL BLOCK ADDRESS.
    pub lba: u64,
    /// NUMBER OF LOGICAL BLOCKS (0 is allowed and does nothing).
    pub blocks: u32,
}

impl Descriptor {
    /// Decodes the 16 bytes of a descriptor (bytes 12-15 are reserved).
    pub fn decode(bytes: &[u8; DESCRIPTOR_LEN]) -> Self {
        let mut lba = [0u8; 8];
        lba.copy_from_slice(&bytes[0..8]);
        Self {
            lba: u64::from_be_bytes(lba),
            blocks: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        }
    }
}

/// Validates a whole UNMAP parameter list (`list` holds exactly PARAMETER
/// LIST LENGTH bytes, at least one) and returns the number of descriptors,
/// which start at [`HEADER_LEN`]:
/// - shorter than the header, or UNMAP BLOCK DESCRIPTOR DATA LENGTH
///   reaching past the list: PARAMETER LIST LENGTH ERROR;
/// - UNMAP DATA LENGTH too small to cover the descriptors: INVALID FIELD IN
///   PARAMETER LIST at byte 0;
/// - more descriptors than MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT: INVALID
///   FIELD IN PARAMETER LIST at byte 2;
/// - a range beyond the last block: LOGICAL BLOCK ADDRESS OUT OF RANGE;
/// - more blocks in total than MAXIMUM UNMAP LBA COUNT: INVALID FIELD IN
///   PARAMETER LIST at the NUMBER OF LOGICAL BLOCKS of the descriptor that
///   went over.
///
/// A descriptor data length that is not a multiple of 16 leaves an
/// incomplete last descriptor, which is ignored (SBC-4).
pub fn validate(list: &[u8], unit: &UnitInfo) -> Result<u32, ScsiError> {
    if list.len() < HEADER_LEN {
        return Err(ScsiError::ParameterListLengthError);
    }
    let data_len = usize::from(u16::from_be_bytes([list[0], list[1]]));
    let descriptor_data_len = usize::from(u16::from_be_bytes([list[2], list[3]]));
    if HEADER_LEN + descriptor_data_len > list.len() {
        return Err(ScsiError::ParameterListLengthError);
    }
    if data_len + 2 < HEADER_LEN + descriptor_data_len {
        return Err(ScsiError::param_byte(0));
    }
    let count = descriptor_data_len / DESCRIPTOR_LEN;
    if count > unit.max_unmap_descriptors as usize {
        return Err(ScsiError::param_byte(2));
    }
    let mut total: u64 = 0;
    for i in 0..count {
        let at = HEADER_LEN + i * DESCRIPTOR_LEN;
        let mut bytes = [0u8; DESCRIPTOR_LEN];
        bytes.copy_from_slice(&list[at..at + DESCRIPTOR_LEN]);
        let descriptor = Descriptor::decode(&bytes);
        match descriptor.lba.checked_add(u64::from(descriptor.blocks)) {
            Some(end) if end <= unit.num_blocks => {}
            _ => return Err(ScsiError::LbaOutOfRange),
        }
        total += u64::from(descriptor.blocks);
        if total > u64::from(unit.max_unmap_lba_count) {
            return Err(ScsiError::param_byte((at + 8) as u16));
        }
    }
    Ok(count as u32)
}

/// The first `count` descriptors of `list`, as [`validate`] returned it for
/// this same `list`. Decode from the bytes that were validated (a private
/// copy), never from memory another party can change in between.
pub fn descriptors(list: &[u8], count: u32) -> impl Iterator<Item = Descriptor> + '_ {
    list[HEADER_LEN..]
        .chunks_exact(DESCRIPTOR_LEN)
        .take(count as usize)
        .map(|bytes| {
            let mut descriptor = [0u8; DESCRIPTOR_LEN];
            descriptor.copy_from_slice(bytes);
            Descriptor::decode(&descriptor)
        })
}

#[cfg(test)]
mod tests {
    use super::super::unit::test_unit;
    use super::*;

    fn list(descriptors: &[(u64, u32)]) -> Vec<u8> {
        let bd = (descriptors.len() * 16) as u16;
        let mut list = Vec::new();
        list.extend_from_slice(&(bd + 6).to_be_bytes());
        list.extend_from_slice(&bd.to_be_bytes());
        list.extend_from_slice(&[0xAA; 4]); // reserved, ignored
        for &(lba, blocks) in descriptors {
            list.extend_from_slice(&lba.to_be_bytes());
            list.extend_from_slice(&blocks.to_be_bytes());
            list.extend_from_slice(&[0xBB; 4]); // reserved, ignored
        }
        list
    }

    #[test]
    fn valid_lists() {
        let unit = test_unit();
        assert_eq!(validate(&list(&[]), &unit), Ok(0));
        assert_eq!(validate(&list(&[(0, 8), (100, 0)]), &unit), Ok(2));
        let l = list(&[(unit.num_blocks - 4, 4)]);
        assert_eq!(validate(&l, &unit), Ok(1));
        assert_eq!(
            descriptors(&l, 1).collect::<Vec<_>>(),
            [Descriptor {
                lba: unit.num_blocks - 4,
                blocks: 4
            }]
        );
        assert_eq!(
            Descriptor::decode(l[8..24].try_into().unwrap()),
            Descriptor {
                lba: unit.num_blocks - 4,
                blocks: 4
            }
        );
        // An incomplete last descriptor is ignored; extra bytes too.
        let mut l = list(&[(0, 1), (2, 3)]);
        l[3] -= 1;
        l.extend_from_slice(&[0; 7]);
        assert_eq!(validate(&l, &unit), Ok(1));
    }

    #[test]
    fn length_errors() {
        let unit = test_unit();
        assert_eq!(
            validate(&[0; 7], &unit),
            Err(ScsiError::ParameterListLengthError)
        );
        let mut l = list(&[(0, 1)]);
        l.pop();
        assert_eq!(
            validate(&l, &unit),
            Err(ScsiError::ParameterListLengthError)
        );
        let mut l = list(&[(0, 1)]);
        l[1] = 21; // UNMAP DATA LENGTH one short
        assert_eq!(validate(&l, &unit), Err(ScsiError::param_byte(0)));
    }

    #[test]
    fn limit_and_range_errors() {
        let unit = test_unit();
        let five: Vec<(u64, u32)> = (0..5).map(|i| (i * 10, 1)).collect();
        assert_eq!(validate(&list(&five), &unit), Err(ScsiError::param_byte(2)));
        assert_eq!(
            validate(&list(&[(0, 1), (unit.num_blocks + 1, 0)]), &unit),
            Err(ScsiError::LbaOutOfRange)
        );
        assert_eq!(
            validate(&list(&[(u64::MAX, 2)]), &unit),
            Err(ScsiError::LbaOutOfRange)
        );
        // A zero-block descriptor ending exactly at the capacity is fine.
        assert_eq!(validate(&list(&[(unit.num_blocks, 0)]), &unit), Ok(1));
        let max = unit.max_unmap_lba_count;
        assert_eq!(validate(&list(&[(0, max)]), &unit), Ok(1));
        assert_eq!(
            validate(&list(&[(0, max - 1), (max as u64, 2)]), &unit),
            Err(ScsiError::param_byte(8 + 16 + 8))
        );
    }
}
