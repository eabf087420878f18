//! MODE SENSE and MODE SELECT (SPC-4 6.11-6.14, 7.5) with the Caching (08h)
//! and Control (0Ah) mode pages.
//!
//! Changeable parameters: WCE of the Caching page (only when the device has
//! a volatile cache) and D_SENSE of the Control page (unless the unit's
//! [`ControlMode`](super::unit::ControlMode) says the kernel's core keeps
//! its own). The Control page's other fields report the core's task-set
//! model ([`UnitInfo::control`]). Saved parameters are
//! not implemented. The same page builders serve MODE SENSE and the checks
//! of MODE SELECT, so what a MODE SELECT must send back is exactly what MODE
//! SENSE reported.

use super::command::PageControl;
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

fn control_page(unit: &UnitInfo, values: Values) -> [u8; CONTROL_LEN] {
    let control = unit.control;
    let mut page = [0u8; CONTROL_LEN];
    page[0] = CONTROL_PAGE;
    page[1] = (CONTROL_LEN - 2) as u8;
    match values {
        Values::Of(v) => {
            // TST, TMF_ONLY 0, DPICZ 0, D_SENSE, GLTSD 0, RLEC 0.
            page[2] = (control.tst & 0x07) << 5;
            if v.descriptor_sense {
                page[2] |= 0x04;
            }
            // QUEUE ALGORITHM MODIFIER, QERR.
            page[3] = ((control.queue_alg & 0x0F) << 4) | ((control.qerr & 0x03) << 1);
            if control.swp {
                page[4] = 0x08; // SWP
            }
            if control.tas {
                page[5] = 0x40; // TAS
            }
            page[8..10].copy_from_slice(&0xFFFFu16.to_be_bytes()); // BUSY TIMEOUT PERIOD: unlimited
        }
        Values::Changeable if control.d_sense_changeable => page[2] = 0x04,
        Values::Changeable => {}
    }
    page
}

/// Device-specific parameter of the mode parameter header: WP and DPOFUA.
fn device_specific(unit: &UnitInfo) -> u8 {
    let mut dsp = 0x10; // DPOFUA
    if unit.read_only || unit.control.swp {
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
        out[len..len + CONTROL_LEN].copy_from_slice(&control_page(unit, values));
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
                &control_page(unit, Values::Of(mode.current)),
                &control_page(unit, Values::Changeable),
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
mod tests;
