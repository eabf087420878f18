//! Operation codes, service actions and the table of supported commands.
//!
//! [`SUPPORTED`] lists every command the decoder accepts with its CDB usage
//! data (SPC-4 6.35.3): a bit is set exactly where the decoder evaluates the
//! CDB bit, either to use its value or to reject a value it does not support.
//! Reserved, obsolete and ignored bits (group number, IMMED of SYNCHRONIZE
//! CACHE, ...) are clear. DPO is set wherever the CDB has it: MODE SENSE
//! reports DPOFUA, so the unit takes the bit and honours it (see
//! [`super::command::Command::Read`]). A unit test checks every bit of every
//! entry against the decoder. The same table answers REPORT SUPPORTED
//! OPERATION CODES.

/// TEST UNIT READY.
pub const TEST_UNIT_READY: u8 = 0x00;
/// REQUEST SENSE.
pub const REQUEST_SENSE: u8 = 0x03;
/// READ (6).
pub const READ_6: u8 = 0x08;
/// WRITE (6).
pub const WRITE_6: u8 = 0x0A;
/// INQUIRY.
pub const INQUIRY: u8 = 0x12;
/// MODE SELECT (6).
pub const MODE_SELECT_6: u8 = 0x15;
/// MODE SENSE (6).
pub const MODE_SENSE_6: u8 = 0x1A;
/// START STOP UNIT.
pub const START_STOP_UNIT: u8 = 0x1B;
/// PREVENT ALLOW MEDIUM REMOVAL.
pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1E;
/// READ CAPACITY (10).
pub const READ_CAPACITY_10: u8 = 0x25;
/// READ (10).
pub const READ_10: u8 = 0x28;
/// WRITE (10).
pub const WRITE_10: u8 = 0x2A;
/// WRITE AND VERIFY (10).
pub const WRITE_AND_VERIFY_10: u8 = 0x2E;
/// VERIFY (10).
pub const VERIFY_10: u8 = 0x2F;
/// SYNCHRONIZE CACHE (10).
pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
/// WRITE SAME (10).
pub const WRITE_SAME_10: u8 = 0x41;
/// UNMAP.
pub const UNMAP: u8 = 0x42;
/// MODE SELECT (10).
pub const MODE_SELECT_10: u8 = 0x55;
/// MODE SENSE (10).
pub const MODE_SENSE_10: u8 = 0x5A;
/// READ (16).
pub const READ_16: u8 = 0x88;
/// COMPARE AND WRITE.
pub const COMPARE_AND_WRITE: u8 = 0x89;
/// WRITE (16).
pub const WRITE_16: u8 = 0x8A;
/// WRITE AND VERIFY (16).
pub const WRITE_AND_VERIFY_16: u8 = 0x8E;
/// VERIFY (16).
pub const VERIFY_16: u8 = 0x8F;
/// SYNCHRONIZE CACHE (16).
pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
/// WRITE SAME (16).
pub const WRITE_SAME_16: u8 = 0x93;
/// SERVICE ACTION IN (16).
pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
/// MAINTENANCE IN.
pub const MAINTENANCE_IN: u8 = 0xA3;
/// READ (12).
pub const READ_12: u8 = 0xA8;
/// WRITE (12).
pub const WRITE_12: u8 = 0xAA;
/// REPORT LUNS (answered by the kernel targets, not by the logical unit).
pub const REPORT_LUNS: u8 = 0xA0;

/// SERVICE ACTION IN (16) service action READ CAPACITY (16).
pub const SA_READ_CAPACITY_16: u16 = 0x10;
/// SERVICE ACTION IN (16) service action GET LBA STATUS (16).
pub const SA_GET_LBA_STATUS: u16 = 0x12;
/// MAINTENANCE IN service action REPORT SUPPORTED OPERATION CODES.
pub const SA_REPORT_SUPPORTED_OPERATION_CODES: u16 = 0x0C;

/// Usage bits of the CONTROL byte: NACA is evaluated (and rejected, since
/// NormACA is 0); LINK is obsolete and ignored.
pub const CONTROL_USAGE: u8 = 0x04;

/// A supported command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandInfo {
    /// Operation code.
    pub opcode: u8,
    /// Service action, for operation codes that have them.
    pub service_action: Option<u16>,
    /// Command name as in SPC/SBC.
    pub name: &'static str,
    /// CDB usage data; its length is the CDB length.
    pub usage: &'static [u8],
    /// Only supported when the unit can unmap.
    pub requires_unmap: bool,
}

impl CommandInfo {
    /// CDB length in bytes.
    pub fn cdb_len(&self) -> usize {
        self.usage.len()
    }
}

const fn cmd(opcode: u8, name: &'static str, usage: &'static [u8]) -> CommandInfo {
    CommandInfo {
        opcode,
        service_action: None,
        name,
        usage,
        requires_unmap: false,
    }
}

const C: u8 = CONTROL_USAGE;

/// Every supported command, ordered by operation code then service action.
pub const SUPPORTED: &[CommandInfo] = &[
    cmd(TEST_UNIT_READY, "TEST UNIT READY", &[0x00, 0, 0, 0, 0, C]),
    cmd(REQUEST_SENSE, "REQUEST SENSE", &[0x03, 0x01, 0, 0, 0xFF, C]),
    cmd(READ_6, "READ (6)", &[0x08, 0x1F, 0xFF, 0xFF, 0xFF, C]),
    cmd(WRITE_6, "WRITE (6)", &[0x0A, 0x1F, 0xFF, 0xFF, 0xFF, C]),
    cmd(INQUIRY, "INQUIRY", &[0x12, 0x03, 0xFF, 0xFF, 0xFF, C]),
    cmd(
        MODE_SELECT_6,
        "MODE SELECT (6)",
        &[0x15, 0x11, 0, 0, 0xFF, C],
    ),
    cmd(
        MODE_SENSE_6,
        "MODE SENSE (6)",
        &[0x1A, 0x08, 0xFF, 0xFF, 0xFF, C],
    ),
    cmd(
        START_STOP_UNIT,
        "START STOP UNIT",
        &[0x1B, 0, 0, 0, 0xF3, C],
    ),
    cmd(
        PREVENT_ALLOW_MEDIUM_REMOVAL,
        "PREVENT ALLOW MEDIUM REMOVAL",
        &[0x1E, 0, 0, 0, 0, C],
    ),
    cmd(
        READ_CAPACITY_10,
        "READ CAPACITY (10)",
        &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, C],
    ),
    cmd(
        READ_10,
        "READ (10)",
        &[0x28, 0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, C],
    ),
    cmd(
        WRITE_10,
        "WRITE (10)",
        &[0x2A, 0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, C],
    ),
    cmd(
        WRITE_AND_VERIFY_10,
        "WRITE AND VERIFY (10)",
        &[0x2E, 0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, C],
    ),
    cmd(
        VERIFY_10,
        "VERIFY (10)",
        &[0x2F, 0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, C],
    ),
    cmd(
        SYNCHRONIZE_CACHE_10,
        "SYNCHRONIZE CACHE (10)",
        &[0x35, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, C],
    ),
    cmd(
        WRITE_SAME_10,
        "WRITE SAME (10)",
        &[0x41, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF, 0xFF, C],
    ),
    CommandInfo {
        requires_unmap: true,
        ..cmd(UNMAP, "UNMAP", &[0x42, 0x01, 0, 0, 0, 0, 0, 0xFF, 0xFF, C])
    },
    cmd(
        MODE_SELECT_10,
        "MODE SELECT (10)",
        &[0x55, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, C],
    ),
    cmd(
        MODE_SENSE_10,
        "MODE SENSE (10)",
        &[0x5A, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, C],
    ),
    cmd(
        READ_16,
        "READ (16)",
        &[
            0x88, 0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0,
            C,
        ],
    ),
    cmd(
        COMPARE_AND_WRITE,
        "COMPARE AND WRITE",
        &[
            0x89, 0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0, C,
        ],
    ),
    cmd(
        WRITE_16,
        "WRITE (16)",
        &[
            0x8A, 0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0,
            C,
        ],
    ),
    cmd(
        WRITE_AND_VERIFY_16,
        "WRITE AND VERIFY (16)",
        &[
            0x8E, 0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0,
            C,
        ],
    ),
    cmd(
        VERIFY_16,
        "VERIFY (16)",
        &[
            0x8F, 0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0,
            C,
        ],
    ),
    cmd(
        SYNCHRONIZE_CACHE_16,
        "SYNCHRONIZE CACHE (16)",
        &[
            0x91, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, C,
        ],
    ),
    cmd(
        WRITE_SAME_16,
        "WRITE SAME (16)",
        &[
            0x93, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0,
            C,
        ],
    ),
    CommandInfo {
        service_action: Some(SA_READ_CAPACITY_16),
        ..cmd(
            SERVICE_ACTION_IN_16,
            "READ CAPACITY (16)",
            &[
                0x9E, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, C,
            ],
        )
    },
    // REPORT TYPE (byte 14, SBC-4) is not evaluated: the response says so
    // with RTP = 0.
    CommandInfo {
        service_action: Some(SA_GET_LBA_STATUS),
        requires_unmap: true,
        ..cmd(
            SERVICE_ACTION_IN_16,
            "GET LBA STATUS (16)",
            &[
                0x9E, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                0, C,
            ],
        )
    },
    CommandInfo {
        service_action: Some(SA_REPORT_SUPPORTED_OPERATION_CODES),
        ..cmd(
            MAINTENANCE_IN,
            "REPORT SUPPORTED OPERATION CODES",
            &[
                0xA3, 0x1F, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, C,
            ],
        )
    },
    cmd(
        READ_12,
        "READ (12)",
        &[
            0xA8, 0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, C,
        ],
    ),
    cmd(
        WRITE_12,
        "WRITE (12)",
        &[
            0xAA, 0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, C,
        ],
    ),
];

/// Whether commands with operation code `opcode` carry a service action.
pub fn has_service_actions(opcode: u8) -> bool {
    matches!(opcode, SERVICE_ACTION_IN_16 | MAINTENANCE_IN)
}

/// Index + 1 into [`SUPPORTED`] of the first entry of each operation code
/// (0: not supported). The entries of one operation code (one per service
/// action) follow each other.
const INDEX: [u8; 256] = {
    let mut index = [0u8; 256];
    let mut i = SUPPORTED.len();
    while i > 0 {
        i -= 1;
        index[SUPPORTED[i].opcode as usize] = (i + 1) as u8;
    }
    index
};

/// The entry for `opcode` (and `service_action`, for operation codes that
/// have them), if the unit supports it. `unmap` says whether the unit can
/// unmap (UNMAP and GET LBA STATUS are supported only then). Constant time
/// (an operation code has at most a few service actions).
pub fn lookup(
    opcode: u8,
    service_action: Option<u16>,
    unmap: bool,
) -> Option<&'static CommandInfo> {
    let at = INDEX[usize::from(opcode)];
    if at == 0 {
        return None;
    }
    SUPPORTED[usize::from(at) - 1..]
        .iter()
        .take_while(|info| info.opcode == opcode)
        .find(|info| info.service_action == service_action)
        .filter(|info| unmap || !info.requires_unmap)
}

/// CDB length implied by the group code of `opcode` (SPC-4 4.2.5.1), or
/// `None` for the reserved group 3 (variable length and 32-byte CDBs) and
/// the vendor-specific groups 6 and 7. A frontend that must know how many
/// CDB bytes the kernel passed can use this.
pub fn cdb_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

/// Length of a command timeouts descriptor (SPC-4 6.35.4).
const TIMEOUTS_DESCRIPTOR_LEN: usize = 12;

/// Writes a command timeouts descriptor: no nominal or recommended timeout
/// is specified (both 0).
fn timeouts_descriptor(out: &mut [u8]) -> usize {
    out[..TIMEOUTS_DESCRIPTOR_LEN].fill(0);
    out[0..2].copy_from_slice(&((TIMEOUTS_DESCRIPTOR_LEN - 2) as u16).to_be_bytes());
    TIMEOUTS_DESCRIPTOR_LEN
}

/// Writes the REPORT SUPPORTED OPERATION CODES parameter data (SPC-4 6.35)
/// into `out`; returns its length.
///
/// - `options` 000b: every supported command (`all_commands` format, 8-byte
///   descriptors, 20 with `rctd`).
/// - 001b (no service action), 010b (with one), 011b (exact pair, a command
///   without service actions matching only service action 0): the
///   `one_command` format with SUPPORT 011b and the CDB usage data, or
///   SUPPORT 001b (not supported) and no usage data. The decoder has already
///   rejected 001b/010b requests that do not fit the operation code.
pub fn report_supported(
    unmap: bool,
    rctd: bool,
    options: u8,
    opcode: u8,
    service_action: u16,
    out: &mut [u8],
) -> usize {
    let ctdp = u8::from(rctd);
    if options == 0 {
        let mut len = 4;
        for info in SUPPORTED.iter().filter(|i| unmap || !i.requires_unmap) {
            let d = &mut out[len..len + 8];
            d[0] = info.opcode;
            d[1] = 0;
            d[2..4].copy_from_slice(&info.service_action.unwrap_or(0).to_be_bytes());
            d[4] = 0;
            d[5] = (ctdp << 1) | u8::from(info.service_action.is_some()); // CTDP, SERVACTV
            d[6..8].copy_from_slice(&(info.cdb_len() as u16).to_be_bytes());
            len += 8;
            if rctd {
                len += timeouts_descriptor(&mut out[len..]);
            }
        }
        out[0..4].copy_from_slice(&((len - 4) as u32).to_be_bytes());
        return len;
    }
    let wanted_sa = match options {
        1 => None,
        2 => Some(service_action),
        _ if has_service_actions(opcode) => Some(service_action),
        _ if service_action == 0 => None,
        _ => {
            // 011b with a non-zero service action for an operation code that
            // has none: not supported.
            out[..4].copy_from_slice(&[0, 0x01, 0, 0]);
            return 4;
        }
    };
    match lookup(opcode, wanted_sa, unmap) {
        None => {
            out[..4].copy_from_slice(&[0, 0x01, 0, 0]); // SUPPORT 001b
            4
        }
        Some(info) => {
            let cdb_len = info.cdb_len();
            out[0] = 0;
            out[1] = (ctdp << 7) | 0x03; // CTDP, SUPPORT 011b
            out[2..4].copy_from_slice(&(cdb_len as u16).to_be_bytes());
            out[4..4 + cdb_len].copy_from_slice(info.usage);
            let mut len = 4 + cdb_len;
            if rctd {
                len += timeouts_descriptor(&mut out[len..]);
            }
            len
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut previous: Option<(u8, u16)> = None;
        for info in SUPPORTED {
            assert_eq!(info.usage[0], info.opcode, "{}", info.name);
            assert_eq!(Some(info.cdb_len()), cdb_len(info.opcode), "{}", info.name);
            assert_eq!(
                info.service_action.is_some(),
                has_service_actions(info.opcode),
                "{}",
                info.name
            );
            assert_eq!(*info.usage.last().unwrap(), CONTROL_USAGE, "{}", info.name);
            let key = (info.opcode, info.service_action.unwrap_or(0));
            // Sorted by operation code and service action, each pair once
            // (the index relies on it).
            assert!(
                !matches!(previous, Some(p) if p >= key),
                "table not sorted at {}",
                info.name
            );
            assert_eq!(lookup(info.opcode, info.service_action, true), Some(info));
            previous = Some(key);
        }
    }

    #[test]
    fn lookup_honours_unmap_support() {
        assert!(lookup(UNMAP, None, true).is_some());
        assert!(lookup(UNMAP, None, false).is_none());
        assert!(lookup(READ_10, None, false).is_some());
        assert!(lookup(SERVICE_ACTION_IN_16, Some(0x10), false).is_some());
        assert!(lookup(SERVICE_ACTION_IN_16, Some(0x11), false).is_none());
        assert!(lookup(SERVICE_ACTION_IN_16, Some(0x12), true).is_some());
        assert!(lookup(SERVICE_ACTION_IN_16, Some(0x12), false).is_none());
        assert!(lookup(SERVICE_ACTION_IN_16, None, false).is_none());
        assert!(lookup(REPORT_LUNS, None, true).is_none());
    }

    #[test]
    fn group_codes_give_cdb_lengths() {
        assert_eq!(cdb_len(0x00), Some(6));
        assert_eq!(cdb_len(0x28), Some(10));
        assert_eq!(cdb_len(0x5A), Some(10));
        assert_eq!(cdb_len(0x7F), None);
        assert_eq!(cdb_len(0x88), Some(16));
        assert_eq!(cdb_len(0xA8), Some(12));
        assert_eq!(cdb_len(0xC0), None);
    }
}
