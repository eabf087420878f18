//! Reading and writing ring entries in untrusted shared memory.
//!
//! Every function here validates what it reads before using it as an offset
//! or length, and reads nothing outside the entry it was given (whose bounds
//! the caller validated against the ring and `cmd_head`). The CDB and iovecs
//! are copied out into caller-owned storage, because out-of-order completion
//! later overwrites the entry with another command's response.

use bdev::IoVec;

use super::abi::*;
use super::region::SharedRegion;
use super::{scsi_command_size, RingFault, TcmuError, MAX_CDB_LEN};
use crate::exec::{status, Response};

/// Where the ring and the data area are, from a validated mailbox.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingGeometry {
    /// Ring size in bytes (a non-zero multiple of 8).
    pub cmdr_size: u32,
    /// First byte of the data area: `cmdr_off + cmdr_size`.
    pub data_off: usize,
    /// Length of the mapping; the data area ends here.
    pub map_len: usize,
}

impl RingGeometry {
    /// Validates the mailbox's ring description against the mapping.
    pub fn from_mailbox(region: &SharedRegion) -> Result<Self, TcmuError> {
        let cmdr_off = region.mailbox_cmdr_off();
        if cmdr_off != CMDR_OFF {
            return Err(TcmuError::CmdrOff { found: cmdr_off });
        }
        let cmdr_size = region.mailbox_cmdr_size();
        let map_len = region.len();
        let fits = (CMDR_OFF as usize)
            .checked_add(cmdr_size as usize)
            .is_some_and(|end| end <= map_len);
        if cmdr_size == 0 || !(cmdr_size as usize).is_multiple_of(TCMU_OP_ALIGN_SIZE) || !fits {
            return Err(TcmuError::CmdrSize { cmdr_size, map_len });
        }
        Ok(Self {
            cmdr_size,
            data_off: CMDR_OFF as usize + cmdr_size as usize,
            map_len,
        })
    }

    /// True if `off` can be a ring position (`cmd_head`, `cmd_tail`).
    #[inline]
    pub fn is_position(&self, off: u32) -> bool {
        off < self.cmdr_size && (off as usize).is_multiple_of(TCMU_OP_ALIGN_SIZE)
    }

    /// Mapping offset of ring position `off`.
    #[inline]
    pub fn entry_abs(&self, off: u32) -> usize {
        CMDR_OFF as usize + off as usize
    }

    /// The ring position after an entry of `len` bytes at `off`
    /// (`off + len <= cmdr_size`).
    #[inline]
    pub fn advance(&self, off: u32, len: u32) -> u32 {
        let next = off + len;
        if next >= self.cmdr_size {
            next - self.cmdr_size
        } else {
            next
        }
    }

    /// Bytes from `from` to `to` going forward around the ring.
    #[inline]
    pub fn distance(&self, from: u32, to: u32) -> u32 {
        if to >= from {
            to - from
        } else {
            self.cmdr_size - from + to
        }
    }
}

/// A validated entry header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryHeader {
    /// Length in bytes (non-zero, within the ring, not past the head).
    pub len: u32,
    /// `TCMU_OP_*` (or an unknown value 3..=7).
    pub op: u32,
    /// `hdr.cmd_id` (meaningful for CMD only).
    pub cmd_id: u16,
}

/// Reads the header of the entry at ring position `off` and checks that the
/// entry lies inside the ring and before `head`. `off` and `head` must be
/// valid positions and differ.
pub(crate) fn read_header(
    region: &SharedRegion,
    geo: &RingGeometry,
    off: u32,
    head: u32,
) -> Result<EntryHeader, RingFault> {
    let abs = geo.entry_abs(off);
    // The 8-byte header always fits: `off` is 8-aligned and below
    // `cmdr_size`, a multiple of 8, and the ring lies inside the mapping. A
    // failed read (impossible) reads as length 0, which is refused below.
    let len_op = region.read_u32(abs + HDR_LEN_OP).unwrap_or(0);
    let cmd_id = region.read_u16(abs + HDR_CMD_ID).unwrap_or(0);
    let len = tcmu_hdr_get_len(len_op);
    let op = tcmu_hdr_get_op(len_op);
    if len == 0 {
        return Err(RingFault::ZeroLengthEntry { offset: off });
    }
    if u64::from(off) + u64::from(len) > u64::from(geo.cmdr_size) {
        return Err(RingFault::EntryCrossesRingEnd { offset: off, len });
    }
    if len > geo.distance(off, head) {
        return Err(RingFault::EntryBeyondHead {
            offset: off,
            len,
            head,
        });
    }
    Ok(EntryHeader { len, op, cmd_id })
}

/// What is wrong with a CMD entry whose length is fine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmdDefect {
    /// `iov_cnt + iov_bidi_cnt` iovecs do not fit in the entry.
    IovecsOverflowEntry,
    /// An iovec is not inside the data area.
    IovecOutsideDataArea,
    /// `cdb_off` is not inside the entry, or the CDB does not fit in it.
    CdbOutsideEntry,
}

/// The result of copying a CMD entry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmdParse {
    /// CDB and iovecs copied.
    Ok {
        /// CDB length.
        cdb_len: u8,
        /// Sum of all iovec lengths.
        data_len: u64,
        /// Sum of the data-in iovec lengths: the BIDI ones if any, else all
        /// (for a non-BIDI command the entry does not say which direction
        /// its buffer has).
        data_in_capacity: u64,
    },
    /// Malformed: fail the command with HARDWARE ERROR.
    Malformed(CmdDefect),
    /// The CDB is longer than [`MAX_CDB_LEN`]: fail with INVALID COMMAND
    /// OPERATION CODE.
    CdbTooLong,
}

/// Copies the CDB and the iovecs of the CMD entry at mapping offset `abs`
/// (`len` bytes, already validated to lie inside the ring) into `cdb` and
/// `iovs`. Iovecs become pointers into the data area, each checked to lie
/// within `[data_off, map_len)`. On anything but `Ok`, `iovs` is left empty.
pub(crate) fn parse_cmd(
    region: &SharedRegion,
    geo: &RingGeometry,
    abs: usize,
    len: u32,
    cdb: &mut [u8; MAX_CDB_LEN],
    iovs: &mut Vec<IoVec>,
) -> CmdParse {
    iovs.clear();
    let parsed = copy_out(region, geo, abs, abs + len as usize, cdb, iovs);
    match parsed {
        Ok(ok) => ok,
        Err(bad) => {
            iovs.clear();
            bad
        }
    }
}

/// The body of [`parse_cmd`]; `Err` carries the failure to report. Every
/// read stays inside `[abs, end)`, which is inside the ring, so the accessors
/// cannot fail; if one did, that reads as a malformed entry, not a panic.
fn copy_out(
    region: &SharedRegion,
    geo: &RingGeometry,
    abs: usize,
    end: usize,
    cdb: &mut [u8; MAX_CDB_LEN],
    iovs: &mut Vec<IoVec>,
) -> Result<CmdParse, CmdParse> {
    use CmdDefect::*;
    let malformed = |d| CmdParse::Malformed(d);

    let iov_cnt = region
        .read_u32(abs + REQ_IOV_CNT)
        .map_err(|_| malformed(IovecsOverflowEntry))?;
    let iov_bidi_cnt = region
        .read_u32(abs + REQ_IOV_BIDI_CNT)
        .map_err(|_| malformed(IovecsOverflowEntry))?;
    let total = u64::from(iov_cnt) + u64::from(iov_bidi_cnt);
    let room = ((end - abs).saturating_sub(REQ_IOV) / IOVEC_SIZE) as u64;
    if total > room {
        return Err(malformed(IovecsOverflowEntry));
    }
    let (mut data_len, mut bidi_len) = (0u64, 0u64);
    for i in 0..total as usize {
        let at = abs + REQ_IOV + i * IOVEC_SIZE;
        let base = region.read_u64(at + IOVEC_BASE);
        let iov_len = region.read_u64(at + IOVEC_LEN);
        let (Ok(base), Ok(iov_len)) = (base, iov_len) else {
            return Err(malformed(IovecsOverflowEntry));
        };
        let inside = base >= geo.data_off as u64
            && base <= geo.map_len as u64
            && iov_len <= geo.map_len as u64 - base;
        if !inside {
            return Err(malformed(IovecOutsideDataArea));
        }
        let ptr = region
            .ptr_at(base as usize, iov_len as usize)
            .map_err(|_| malformed(IovecOutsideDataArea))?;
        iovs.push(IoVec {
            base: ptr,
            len: iov_len as usize,
        });
        data_len += iov_len;
        if i >= iov_cnt as usize {
            bidi_len += iov_len;
        }
    }

    // The CDB: `cdb_off` inside the entry, its length from the opcode, all
    // of it inside the entry.
    let cdb_off = region.read_u64(abs + REQ_CDB_OFF).unwrap_or(u64::MAX);
    if cdb_off < abs as u64 || cdb_off >= end as u64 {
        return Err(malformed(CdbOutsideEntry));
    }
    let cdb_off = cdb_off as usize;
    let avail = end - cdb_off;
    if avail >= MAX_CDB_LEN {
        // Common case: the entry holds 16 bytes from `cdb_off` (the kernel
        // pads the CDB to 8 bytes and 6/10/12/16-byte CDBs leave room), so
        // one fixed-size read gets the whole CDB.
        let bytes: [u8; MAX_CDB_LEN] = region
            .read_array(cdb_off)
            .map_err(|_| malformed(CdbOutsideEntry))?;
        let cdb_len = scsi_command_size(&bytes)
            .filter(|&n| n <= avail)
            .ok_or(malformed(CdbOutsideEntry))?;
        if cdb_len > MAX_CDB_LEN {
            return Err(CmdParse::CdbTooLong);
        }
        *cdb = bytes;
        return Ok(CmdParse::Ok {
            cdb_len: cdb_len as u8,
            data_len,
            data_in_capacity: if iov_bidi_cnt > 0 { bidi_len } else { data_len },
        });
    }
    let mut first = [0u8; 8];
    let peek = avail.min(first.len());
    region
        .read_bytes(cdb_off, &mut first[..peek])
        .map_err(|_| malformed(CdbOutsideEntry))?;
    let cdb_len = scsi_command_size(&first[..peek])
        .filter(|&n| n <= avail)
        .ok_or(malformed(CdbOutsideEntry))?;
    if cdb_len > MAX_CDB_LEN {
        return Err(CmdParse::CdbTooLong);
    }
    region
        .read_bytes(cdb_off, &mut cdb[..cdb_len])
        .map_err(|_| malformed(CdbOutsideEntry))?;
    Ok(CmdParse::Ok {
        cdb_len: cdb_len as u8,
        data_len,
        data_in_capacity: if iov_bidi_cnt > 0 { bidi_len } else { data_len },
    })
}

/// The type and id count of the TMR entry at `abs` (`len` bytes), if its
/// ids fit inside it.
pub(crate) fn parse_tmr(region: &SharedRegion, abs: usize, len: u32) -> Option<(u8, u32)> {
    let len = len as usize;
    if len < TMR_ENTRY_SIZE {
        return None;
    }
    let tmr_type = region.read_u8(abs + TMR_TYPE).ok()?;
    let cmd_cnt = region.read_u32(abs + TMR_CMD_CNT).ok()?;
    let need = TMR_CMD_IDS as u64 + 2 * u64::from(cmd_cnt);
    (need <= len as u64).then_some((tmr_type, cmd_cnt))
}

/// The `i`-th id of a TMR entry validated by [`parse_tmr`].
#[inline]
pub(crate) fn tmr_cmd_id(region: &SharedRegion, abs: usize, i: u32) -> u16 {
    region
        .read_u16(abs + TMR_CMD_IDS + 2 * i as usize)
        .unwrap_or(0)
}

/// Sets `TCMU_UFLAG_UNKNOWN_OP` in the entry at `abs`.
pub(crate) fn flag_unknown_op(region: &SharedRegion, abs: usize) {
    let uflags = region.read_u8(abs + HDR_UFLAGS).unwrap_or(0);
    let _ = region.write_u8(abs + HDR_UFLAGS, uflags | TCMU_UFLAG_UNKNOWN_OP);
}

/// Writes a completion into the CMD entry at `abs` (at least
/// [`CMD_ENTRY_SIZE`] bytes): `hdr.cmd_id = cmd_id`, `uflags` = READ_LEN or
/// nothing, `rsp` = status, `read_len` and (for CHECK CONDITION) the sense
/// bytes, zero-padded to 96. `len_op` and `kflags` are left alone.
pub(crate) fn write_response(
    region: &SharedRegion,
    abs: usize,
    cmd_id: u16,
    response: &Response,
    read_len: Option<u32>,
) {
    let uflags = if read_len.is_some() {
        TCMU_UFLAG_READ_LEN
    } else {
        0
    };
    if response.status != status::CHECK_CONDITION {
        // The kernel reads the sense only for CHECK CONDITION: write the
        // 8 bytes of status, padding and read_len as one u64.
        let mut head = [0u8; 8];
        head[0] = response.status;
        let at = RSP_READ_LEN - RSP_SCSI_STATUS;
        head[at..at + 4].copy_from_slice(&read_len.unwrap_or(0).to_ne_bytes());
        let _ = region.write_u64(abs + RSP_SCSI_STATUS, u64::from_ne_bytes(head));
        let _ = region.write_u16(abs + HDR_CMD_ID, cmd_id);
        let _ = region.write_u8(abs + HDR_UFLAGS, uflags);
        return;
    }
    let mut rsp = [0u8; CMD_ENTRY_SIZE - RSP_SCSI_STATUS];
    rsp[0] = response.status;
    if let Some(n) = read_len {
        let at = RSP_READ_LEN - RSP_SCSI_STATUS;
        rsp[at..at + 4].copy_from_slice(&n.to_ne_bytes());
    }
    let sense = response.sense_bytes();
    let at = RSP_SENSE - RSP_SCSI_STATUS;
    rsp[at..at + sense.len()].copy_from_slice(sense);
    // `abs..abs + CMD_ENTRY_SIZE` is inside the ring (the caller checked the
    // entry length), so these cannot fail.
    let _ = region.write_bytes(abs + RSP_SCSI_STATUS, &rsp);
    let _ = region.write_u16(abs + HDR_CMD_ID, cmd_id);
    let _ = region.write_u8(abs + HDR_UFLAGS, uflags);
}
