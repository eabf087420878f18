//! The simulated SCST core's CDB table: what `scst_get_cdb_info` and
//! `scst_sbc_generic_parse` compute for a disk (data direction, LBA, media
//! data length, buffer length, `op_flags`), and which commands the core
//! executes itself (`scst_local_fns[]`, scst_targ.c).
//!
//! This is the one place the simulator knows opcodes. It covers every
//! command the dataplane's SCSI layer supports (`dataplane::scsi::opcodes`) plus
//! the core-local ones. Anything else is "unknown": PARSE_STANDARD fails it
//! with INVALID COMMAND OPERATION CODE, PARSE_EXCEPTION sends it to the
//! handler as a PARSE.

use dataplane::scst::abi::*;

/// How the SCST core executes a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Local {
    /// Executed by the handler (EXEC).
    No,
    /// `SCST_FULLY_LOCAL_CMD`: answered by the core without the device
    /// handler at all (REPORT LUNS, REQUEST SENSE).
    Fully,
    /// COMPARE AND WRITE: parsed and allocated through the handler, then the
    /// core issues an internal READ and, if the data match, an internal
    /// WRITE to the handler.
    CompareAndWrite,
    /// RESERVE/RELEASE (6/10): parsed and allocated through the handler,
    /// executed by the core. Reservations are not modelled: GOOD.
    Reserve,
    /// PERSISTENT RESERVE IN/OUT, EXTENDED COPY, RECEIVE COPY RESULTS,
    /// MAINTENANCE IN (REPORT TARGET PORT GROUPS) and MAINTENANCE OUT:
    /// core-local in SCST, not modelled here (INVALID COMMAND OPERATION
    /// CODE after the handler's PARSE/ALLOC_MEM).
    NotModelled,
}

/// The decoded command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CdbInfo {
    /// `SCST_DATA_*`.
    pub direction: u8,
    /// First LBA (0 when the command has none).
    pub lba: i64,
    /// Bytes of medium the command covers (`cmd->data_len`).
    pub data_len: i64,
    /// Bytes of data buffer (`cmd->bufflen`).
    pub bufflen: i32,
    /// `scst_cdb_flags`, always with `SCST_INFO_VALID`.
    pub op_flags: u32,
    /// `cmd->timeout / HZ`, seconds.
    pub timeout: i32,
    /// Who executes it.
    pub local: Local,
}

/// Why the standard parser gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ParseFail {
    /// Opcode (or service action) not in the table.
    UnknownOpcode,
    /// A field makes the command impossible (buffer length beyond `i32`).
    InvalidField,
}

/// CDB length from the opcode's group code (SPC-4 4.2.5.1); for the
/// reserved and vendor groups, the length the initiator gave.
pub(super) fn cdb_len(opcode: u8, given: usize) -> usize {
    dataplane::scsi::opcodes::cdb_len(opcode).unwrap_or(given)
}

/// SCST_GENERIC_DISK_{SMALL,REG,LONG}_TIMEOUT in seconds.
const SMALL_TIMEOUT_S: i32 = 3;
const REG_TIMEOUT_S: i32 = 60;
const LONG_TIMEOUT_S: i32 = 3600;

fn be(cdb: &[u8], at: usize, len: usize) -> u64 {
    cdb[at..at + len]
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// How the transfer length is found.
#[derive(Clone, Copy)]
enum Len {
    /// No data.
    None,
    /// A fixed number of bytes.
    Bytes(u32),
    /// A byte count (allocation/parameter list length) at (offset, size).
    ByteField(usize, usize),
    /// A block count at (offset, size); media data = buffer.
    Blocks(usize, usize),
}

/// Decodes `cdb` (at least `cdb_len` bytes) for a disk with `block_size`.
pub(super) fn parse(cdb: &[u8], block_size: u32) -> Result<CdbInfo, ParseFail> {
    use Local as L;
    let op = cdb[0];
    let bs = u64::from(block_size);
    // (direction, lba (offset, size), length, flags, local)
    let (mut dir, lba_at, len, mut flags, local): (u8, Option<(usize, usize)>, Len, u32, Local) =
        match op {
            0x00 => (SCST_DATA_NONE, None, Len::None, SCST_SMALL_TIMEOUT, L::No), // TEST UNIT READY
            0x03 => (
                // REQUEST SENSE
                SCST_DATA_READ,
                None,
                Len::ByteField(4, 1),
                SCST_SMALL_TIMEOUT | SCST_SKIP_UA | SCST_LOCAL_CMD | SCST_FULLY_LOCAL_CMD,
                L::Fully,
            ),
            0x08 | 0x0A => {
                // READ(6) / WRITE(6): 21-bit LBA, 0 blocks means 256.
                let lba = be(cdb, 1, 3) & 0x1F_FFFF;
                let blocks = if cdb[4] == 0 { 256 } else { u64::from(cdb[4]) };
                let (dir, flags) = if op == 0x08 {
                    (SCST_DATA_READ, 0)
                } else {
                    (SCST_DATA_WRITE, SCST_WRITE_MEDIUM)
                };
                return finish(dir, lba, blocks * bs, blocks * bs, flags, L::No);
            }
            0x12 => (
                // INQUIRY
                SCST_DATA_READ,
                None,
                Len::ByteField(3, 2),
                SCST_SMALL_TIMEOUT | SCST_IMPLICIT_HQ | SCST_SKIP_UA,
                L::No,
            ),
            0x15 => (SCST_DATA_WRITE, None, Len::ByteField(4, 1), 0, L::No), // MODE SELECT(6)
            0x16 | 0x17 | 0x56 | 0x57 => (
                // RESERVE/RELEASE (6/10)
                SCST_DATA_NONE,
                None,
                Len::None,
                SCST_SMALL_TIMEOUT | SCST_LOCAL_CMD | SCST_SERIALIZED,
                L::Reserve,
            ),
            0x1A => (
                SCST_DATA_READ,
                None,
                Len::ByteField(4, 1),
                SCST_SMALL_TIMEOUT | SCST_SKIP_UA,
                L::No,
            ), // MODE SENSE(6)
            0x1B => (SCST_DATA_NONE, None, Len::None, SCST_LONG_TIMEOUT, L::No), // START STOP UNIT
            0x1E => (SCST_DATA_NONE, None, Len::None, SCST_SMALL_TIMEOUT, L::No), // PREVENT ALLOW
            0x25 => (
                // READ CAPACITY(10)
                SCST_DATA_READ,
                None,
                Len::Bytes(8),
                SCST_SMALL_TIMEOUT | SCST_IMPLICIT_HQ,
                L::No,
            ),
            0x28 => (SCST_DATA_READ, Some((2, 4)), Len::Blocks(7, 2), 0, L::No), // READ(10)
            0x2A | 0x2E => (
                // WRITE(10), WRITE AND VERIFY(10)
                SCST_DATA_WRITE,
                Some((2, 4)),
                Len::Blocks(7, 2),
                SCST_WRITE_MEDIUM,
                L::No,
            ),
            0x2F => return verify(cdb, bs, (2, 4), (7, 2)), // VERIFY(10)
            0x35 => (
                // SYNCHRONIZE CACHE(10): no data; data_len = the range
                SCST_DATA_NONE,
                Some((2, 4)),
                Len::None,
                SCST_LONG_TIMEOUT,
                L::No,
            ),
            0x41 => return write_same(cdb, bs, (2, 4), (7, 2), false), // WRITE SAME(10)
            0x42 => (
                // UNMAP
                SCST_DATA_WRITE,
                None,
                Len::ByteField(7, 2),
                SCST_WRITE_MEDIUM | SCST_DESCRIPTORS_BASED,
                L::No,
            ),
            0x55 => (SCST_DATA_WRITE, None, Len::ByteField(7, 2), 0, L::No), // MODE SELECT(10)
            0x5A => (
                SCST_DATA_READ,
                None,
                Len::ByteField(7, 2),
                SCST_SMALL_TIMEOUT | SCST_SKIP_UA,
                L::No,
            ), // MODE SENSE(10)
            0x5E => (
                // PERSISTENT RESERVE IN
                SCST_DATA_READ,
                None,
                Len::ByteField(7, 2),
                SCST_LOCAL_CMD | SCST_SERIALIZED,
                L::NotModelled,
            ),
            0x5F => (
                // PERSISTENT RESERVE OUT
                SCST_DATA_WRITE,
                None,
                Len::ByteField(5, 4),
                SCST_LOCAL_CMD | SCST_SERIALIZED,
                L::NotModelled,
            ),
            0x83 => (
                // EXTENDED COPY
                SCST_DATA_WRITE,
                None,
                Len::ByteField(10, 4),
                SCST_LOCAL_CMD,
                L::NotModelled,
            ),
            0x84 => (
                // RECEIVE COPY RESULTS
                SCST_DATA_READ,
                None,
                Len::ByteField(10, 4),
                SCST_LOCAL_CMD,
                L::NotModelled,
            ),
            0x88 => (SCST_DATA_READ, Some((2, 8)), Len::Blocks(10, 4), 0, L::No), // READ(16)
            0x89 => {
                // COMPARE AND WRITE: N blocks compared, N written; the
                // data-out buffer holds both (2N blocks).
                let lba = be(cdb, 2, 8);
                let blocks = u64::from(cdb[13]);
                return finish(
                    SCST_DATA_WRITE,
                    lba,
                    blocks * bs,
                    2 * blocks * bs,
                    SCST_WRITE_MEDIUM | SCST_LOCAL_CMD | SCST_SERIALIZED,
                    L::CompareAndWrite,
                );
            }
            0x8A | 0x8E => (
                // WRITE(16), WRITE AND VERIFY(16)
                SCST_DATA_WRITE,
                Some((2, 8)),
                Len::Blocks(10, 4),
                SCST_WRITE_MEDIUM,
                L::No,
            ),
            0x8F => return verify(cdb, bs, (2, 8), (10, 4)), // VERIFY(16)
            0x91 => (
                // SYNCHRONIZE CACHE(16)
                SCST_DATA_NONE,
                Some((2, 8)),
                Len::None,
                SCST_LONG_TIMEOUT,
                L::No,
            ),
            0x93 => return write_same(cdb, bs, (2, 8), (10, 4), cdb[1] & 0x01 != 0), // WRITE SAME(16)
            0x9E if cdb[1] & 0x1F == 0x10 => (
                // READ CAPACITY(16)
                SCST_DATA_READ,
                None,
                Len::ByteField(10, 4),
                SCST_SMALL_TIMEOUT | SCST_IMPLICIT_HQ,
                L::No,
            ),
            0x9E if cdb[1] & 0x1F == 0x12 => (
                // GET LBA STATUS (`get_cdb_info_serv_act_in`): the
                // starting LBA, ALLOCATION LENGTH bytes of data-in.
                SCST_DATA_READ,
                Some((2, 8)),
                Len::ByteField(10, 4),
                0,
                L::No,
            ),
            0xA0 => (
                // REPORT LUNS
                SCST_DATA_READ,
                None,
                Len::ByteField(6, 4),
                SCST_SMALL_TIMEOUT
                    | SCST_IMPLICIT_HQ
                    | SCST_SKIP_UA
                    | SCST_LOCAL_CMD
                    | SCST_FULLY_LOCAL_CMD,
                L::Fully,
            ),
            0xA3 => match cdb[1] & 0x1F {
                // MAINTENANCE IN
                0x0A => (
                    // REPORT TARGET PORT GROUPS
                    SCST_DATA_READ,
                    None,
                    Len::ByteField(6, 4),
                    SCST_LOCAL_CMD,
                    L::NotModelled,
                ),
                0x0C | 0x0D => (
                    // REPORT SUPPORTED OPERATION CODES / TASK MANAGEMENT FUNCTIONS
                    SCST_DATA_READ,
                    None,
                    Len::ByteField(6, 4),
                    SCST_SMALL_TIMEOUT,
                    L::No,
                ),
                _ => return Err(ParseFail::UnknownOpcode),
            },
            0xA4 => (
                // MAINTENANCE OUT
                SCST_DATA_WRITE,
                None,
                Len::ByteField(6, 4),
                SCST_LOCAL_CMD,
                L::NotModelled,
            ),
            0xA8 => (SCST_DATA_READ, Some((2, 4)), Len::Blocks(6, 4), 0, L::No), // READ(12)
            0xAA | 0xAE => (
                // WRITE(12), WRITE AND VERIFY(12)
                SCST_DATA_WRITE,
                Some((2, 4)),
                Len::Blocks(6, 4),
                SCST_WRITE_MEDIUM,
                L::No,
            ),
            0xAF => return verify(cdb, bs, (2, 4), (6, 4)), // VERIFY(12)
            _ => return Err(ParseFail::UnknownOpcode),
        };
    let lba = lba_at.map_or(0, |(at, n)| be(cdb, at, n));
    let (data_len, bufflen) = match len {
        Len::None => {
            // SYNCHRONIZE CACHE covers a range without data.
            let blocks = match op {
                0x35 => be(cdb, 7, 2),
                0x91 => be(cdb, 10, 4),
                _ => 0,
            };
            (blocks * bs, 0)
        }
        Len::Bytes(n) => (u64::from(n), u64::from(n)),
        Len::ByteField(at, n) => {
            let v = be(cdb, at, n);
            (v, v)
        }
        Len::Blocks(at, n) => {
            let v = be(cdb, at, n) * bs;
            (v, v)
        }
    };
    if lba_at.is_none() {
        flags |= SCST_LBA_NOT_VALID;
    }
    if bufflen == 0 && dir != SCST_DATA_NONE && !matches!(len, Len::Blocks(..)) {
        dir = SCST_DATA_NONE;
    }
    finish(dir, lba, data_len, bufflen, flags, local)
}

fn finish(
    direction: u8,
    lba: u64,
    data_len: u64,
    bufflen: u64,
    flags: u32,
    local: Local,
) -> Result<CdbInfo, ParseFail> {
    let bufflen = i32::try_from(bufflen).map_err(|_| ParseFail::InvalidField)?;
    let data_len = i64::try_from(data_len).map_err(|_| ParseFail::InvalidField)?;
    let lba = i64::try_from(lba).map_err(|_| ParseFail::InvalidField)?;
    let timeout = if flags & SCST_LONG_TIMEOUT != 0 {
        LONG_TIMEOUT_S
    } else if flags & SCST_SMALL_TIMEOUT != 0 {
        SMALL_TIMEOUT_S
    } else {
        REG_TIMEOUT_S
    };
    Ok(CdbInfo {
        direction,
        lba,
        data_len,
        bufflen,
        op_flags: flags | SCST_INFO_VALID,
        timeout,
        local,
    })
}

/// VERIFY: BYTCHK 00b no data, 01b compare the whole range, 11b one block.
fn verify(
    cdb: &[u8],
    bs: u64,
    lba: (usize, usize),
    len: (usize, usize),
) -> Result<CdbInfo, ParseFail> {
    let lba = be(cdb, lba.0, lba.1);
    let blocks = be(cdb, len.0, len.1);
    let (dir, bufflen) = match (cdb[1] >> 1) & 0x03 {
        0b00 => (SCST_DATA_NONE, 0),
        0b01 => (SCST_DATA_WRITE, blocks * bs),
        0b11 => (SCST_DATA_WRITE, bs),
        _ => return Err(ParseFail::InvalidField),
    };
    finish(dir, lba, blocks * bs, bufflen, 0, Local::No)
}

/// WRITE SAME: one block of data-out (none with NDOB); data_len = range.
fn write_same(
    cdb: &[u8],
    bs: u64,
    lba: (usize, usize),
    len: (usize, usize),
    ndob: bool,
) -> Result<CdbInfo, ParseFail> {
    let lba = be(cdb, lba.0, lba.1);
    let blocks = be(cdb, len.0, len.1);
    let (dir, bufflen) = if ndob {
        (SCST_DATA_NONE, 0)
    } else {
        (SCST_DATA_WRITE, bs)
    };
    finish(dir, lba, blocks * bs, bufflen, SCST_WRITE_MEDIUM, Local::No)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_commands_decode_lba_and_lengths() {
        let read10 = [0x28, 0, 0, 0, 0x10, 0x00, 0, 0, 8, 0];
        let i = parse(&read10, 512).unwrap();
        assert_eq!(
            (i.direction, i.lba, i.data_len, i.bufflen),
            (SCST_DATA_READ, 0x1000, 4096, 4096)
        );
        assert_eq!(i.op_flags, SCST_INFO_VALID);
        assert_eq!(i.timeout, 60);
        let write6 = [0x0A, 0x01, 0x02, 0x03, 0, 0];
        let i = parse(&write6, 4096).unwrap();
        assert_eq!(
            (i.direction, i.lba, i.bufflen),
            (SCST_DATA_WRITE, 0x10203, 256 * 4096)
        );
        assert_ne!(i.op_flags & SCST_WRITE_MEDIUM, 0);
        let mut read16 = [0u8; 16];
        read16[0] = 0x88;
        read16[9] = 7;
        read16[13] = 2;
        let i = parse(&read16, 512).unwrap();
        assert_eq!((i.lba, i.bufflen), (7, 1024));
        // READ(10) of 0 blocks: READ direction with an empty buffer; the
        // core turns it into a no-data command (dev_user_parse `done:`).
        let i = parse(&[0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0], 512).unwrap();
        assert_eq!((i.direction, i.bufflen), (SCST_DATA_READ, 0));
    }

    #[test]
    fn special_commands() {
        let mut ws16 = [0u8; 16];
        ws16[0] = 0x93;
        ws16[13] = 100;
        let i = parse(&ws16, 512).unwrap();
        assert_eq!(
            (i.direction, i.bufflen, i.data_len),
            (SCST_DATA_WRITE, 512, 51200)
        );
        ws16[1] = 1; // NDOB
        assert_eq!(parse(&ws16, 512).unwrap().direction, SCST_DATA_NONE);
        let mut caw = [0u8; 16];
        caw[0] = 0x89;
        caw[13] = 2;
        let i = parse(&caw, 512).unwrap();
        assert_eq!(
            (i.bufflen, i.data_len, i.local),
            (2048, 1024, Local::CompareAndWrite)
        );
        let luns = [0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0];
        let i = parse(&luns, 512).unwrap();
        assert_eq!((i.local, i.bufflen), (Local::Fully, 16));
        assert_ne!(i.op_flags & SCST_FULLY_LOCAL_CMD, 0);
        assert_eq!(
            parse(&[0xC0, 0, 0, 0, 0, 0], 512),
            Err(ParseFail::UnknownOpcode)
        );
        let mut rc16 = [0u8; 16];
        rc16[0] = 0x9E;
        rc16[1] = 0x11;
        assert_eq!(parse(&rc16, 512), Err(ParseFail::UnknownOpcode));
        let mut glbas = [0u8; 16];
        glbas[0] = 0x9E;
        glbas[1] = 0x12;
        glbas[9] = 7;
        glbas[13] = 24;
        let i = parse(&glbas, 512).unwrap();
        assert_eq!((i.direction, i.bufflen, i.lba), (SCST_DATA_READ, 24, 7));
        let mut big = [0u8; 16];
        big[0] = 0x88;
        big[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse(&big, 4096), Err(ParseFail::InvalidField));
        // VERIFY(10) BYTCHK=01b carries data-out.
        let v = parse(&[0x2F, 0x02, 0, 0, 0, 1, 0, 0, 2, 0], 512).unwrap();
        assert_eq!((v.direction, v.bufflen, v.lba), (SCST_DATA_WRITE, 1024, 1));
    }
}
