//! The TCMU user ABI: `include/uapi/linux/target_core_user.h`.
//!
//! Structs are `#[repr(C)]` with compile-time size and offset assertions
//! against the numbers in `reference/tcmu-kernel-interface.md` §1.2 (x86_64,
//! checked with gcc `offsetof`). They document the layout and give the offset
//! constants the ring code uses; the ring code itself never forms a reference
//! to ring memory (see [`super::SharedRegion`]), because the other side may write it
//! concurrently and a PAD entry can be as short as 8 bytes.
//!
//! Differences from C that do not matter for the ABI: the C entry structs are
//! `__packed` (align 1) while these have their natural alignment (8), which is
//! harmless because every ring offset is 8-aligned; C's `cmd_ids[]` and
//! `iov[]` flexible arrays are zero-length arrays here.

use core::mem::{align_of, offset_of, size_of};
use std::sync::atomic::AtomicU32;

/// `TCMU_VERSION`.
pub const TCMU_VERSION: &str = "2.0";
/// `TCMU_MAILBOX_VERSION`: the only mailbox version this code accepts.
pub const TCMU_MAILBOX_VERSION: u16 = 2;
/// `ALIGN_SIZE`: alignment of `cmd_tail` (its own cache line).
pub const ALIGN_SIZE: usize = 64;

/// Mailbox flag: out-of-order completion supported.
pub const TCMU_MAILBOX_FLAG_CAP_OOOC: u16 = 1 << 0;
/// Mailbox flag: `rsp.read_len` with `TCMU_UFLAG_READ_LEN` is honoured.
pub const TCMU_MAILBOX_FLAG_CAP_READ_LEN: u16 = 1 << 1;
/// Mailbox flag: TMR notifications (`TCMU_OP_TMR` entries) may appear.
pub const TCMU_MAILBOX_FLAG_CAP_TMR: u16 = 1 << 2;
/// Mailbox flag: `TCMU_UFLAG_KEEP_BUF` is supported.
pub const TCMU_MAILBOX_FLAG_CAP_KEEP_BUF: u16 = 1 << 3;

/// Entry opcode: padding up to the ring end; skip it.
pub const TCMU_OP_PAD: u32 = 0;
/// Entry opcode: a SCSI command ([`TcmuCmdEntry`]).
pub const TCMU_OP_CMD: u32 = 1;
/// Entry opcode: a task-management notification ([`TcmuTmrEntry`]).
pub const TCMU_OP_TMR: u32 = 2;
/// Mask of the opcode bits in `len_op`.
pub const TCMU_OP_MASK: u32 = 0x7;
/// Entries and their lengths are multiples of this (`sizeof(__u64)`).
pub const TCMU_OP_ALIGN_SIZE: usize = 8;

/// uflag: userspace did not handle this entry's opcode.
pub const TCMU_UFLAG_UNKNOWN_OP: u8 = 0x1;
/// uflag: `rsp.read_len` is valid.
pub const TCMU_UFLAG_READ_LEN: u8 = 0x2;
/// uflag: keep the data buffer after completion (until `free_kept_buf`).
pub const TCMU_UFLAG_KEEP_BUF: u8 = 0x4;

/// Size of `rsp.sense_buffer`.
pub const TCMU_SENSE_BUFFERSIZE: usize = 96;

/// TMR type: unknown.
pub const TCMU_TMR_UNKNOWN: u8 = 0;
/// TMR type: ABORT TASK.
pub const TCMU_TMR_ABORT_TASK: u8 = 1;
/// TMR type: ABORT TASK SET.
pub const TCMU_TMR_ABORT_TASK_SET: u8 = 2;
/// TMR type: CLEAR ACA.
pub const TCMU_TMR_CLEAR_ACA: u8 = 3;
/// TMR type: CLEAR TASK SET.
pub const TCMU_TMR_CLEAR_TASK_SET: u8 = 4;
/// TMR type: LUN RESET.
pub const TCMU_TMR_LUN_RESET: u8 = 5;
/// TMR type: TARGET WARM RESET.
pub const TCMU_TMR_TARGET_WARM_RESET: u8 = 6;
/// TMR type: TARGET COLD RESET.
pub const TCMU_TMR_TARGET_COLD_RESET: u8 = 7;
/// TMR type: pseudo LUN reset caused by a PR OUT.
pub const TCMU_TMR_LUN_RESET_PRO: u8 = 128;

/// The kernel's `CMDR_OFF`: the ring starts right after the mailbox.
pub const CMDR_OFF: u32 = size_of::<TcmuMailbox>() as u32;

/// Opcode of a `len_op` (`tcmu_hdr_get_op`).
#[inline]
pub const fn tcmu_hdr_get_op(len_op: u32) -> u32 {
    len_op & TCMU_OP_MASK
}

/// Length in bytes of a `len_op` (`tcmu_hdr_get_len`; no shift).
#[inline]
pub const fn tcmu_hdr_get_len(len_op: u32) -> u32 {
    len_op & !TCMU_OP_MASK
}

/// Encodes `len` (a multiple of 8) and `op` into a `len_op`.
#[inline]
pub const fn tcmu_len_op(len: u32, op: u32) -> u32 {
    (len & !TCMU_OP_MASK) | (op & TCMU_OP_MASK)
}

/// `struct tcmu_mailbox`: 128 bytes, align 64, at offset 0 of the mapping.
///
/// `cmd_head` is written by the kernel (`smp_store_release`) and `cmd_tail` by
/// userspace, so both are atomics; the other fields are written once by the
/// kernel at configuration time.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct TcmuMailbox {
    /// Mailbox version (2).
    pub version: u16,
    /// `TCMU_MAILBOX_FLAG_*`.
    pub flags: u16,
    /// Offset of the command ring from the start of the mapping (128).
    pub cmdr_off: u32,
    /// Size of the command ring in bytes (not necessarily a power of two).
    pub cmdr_size: u32,
    /// Byte offset into the ring where the kernel will write the next entry.
    pub cmd_head: AtomicU32,
    /// Padding up to `cmd_tail`'s cache line.
    pub pad0: [u8; 48],
    /// Byte offset into the ring of the oldest entry not completed by
    /// userspace.
    pub cmd_tail: AtomicU32,
    /// Padding to 128 bytes.
    pub pad1: [u8; 60],
}

/// `struct tcmu_cmd_entry_hdr` (8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcmuCmdEntryHdr {
    /// Length (multiple of 8) in the high bits, opcode in the low 3 bits.
    pub len_op: u32,
    /// Command id (1..=0xFFFF for CMD; 0 for PAD).
    pub cmd_id: u16,
    /// Kernel flags (none defined; always 0).
    pub kflags: u8,
    /// `TCMU_UFLAG_*`, set by userspace.
    pub uflags: u8,
}

/// `struct iovec` as TCMU uses it: `iov_base` is an offset from the start of
/// the mapping, not a pointer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcmuIovec {
    /// Offset from the start of the mapping.
    pub iov_base: u64,
    /// Length in bytes.
    pub iov_len: u64,
}

/// The request half of the entry union (kernel → user). Not packed in C, so
/// there is a 4-byte hole before `cdb_off`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TcmuCmdReq {
    /// Data-out (or data-in, for non-BIDI commands) iovecs.
    pub iov_cnt: u32,
    /// Data-in iovecs of a BIDI command, after the `iov_cnt` ones.
    pub iov_bidi_cnt: u32,
    /// Never set by the kernel.
    pub iov_dif_cnt: u32,
    /// Offset of the CDB from the start of the mapping.
    pub cdb_off: u64,
    /// Unused.
    pub pad1: u64,
    /// Unused.
    pub pad2: u64,
    /// `iov_cnt + iov_bidi_cnt` iovecs follow.
    pub iov: [TcmuIovec; 0],
}

/// The response half of the entry union (user → kernel), overlaying `req`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TcmuCmdRsp {
    /// SAM status.
    pub scsi_status: u8,
    /// Unused.
    pub pad1: u8,
    /// Unused.
    pub pad2: u16,
    /// Bytes of data-in produced (with `TCMU_UFLAG_READ_LEN`; was `__pad3`).
    pub read_len: u32,
    /// Sense data for CHECK CONDITION.
    pub sense_buffer: [u8; TCMU_SENSE_BUFFERSIZE],
}

/// The anonymous union of `struct tcmu_cmd_entry`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union TcmuCmdEntryBody {
    /// Request view.
    pub req: TcmuCmdReq,
    /// Response view.
    pub rsp: TcmuCmdRsp,
}

impl std::fmt::Debug for TcmuCmdEntryBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Which view is live depends on who wrote last; show neither.
        f.write_str("TcmuCmdEntryBody { .. }")
    }
}

/// `struct tcmu_cmd_entry` (112 bytes without the iovecs and CDB that follow).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TcmuCmdEntry {
    /// Header.
    pub hdr: TcmuCmdEntryHdr,
    /// `req` or `rsp`.
    pub body: TcmuCmdEntryBody,
}

/// `struct tcmu_tmr_entry` (32 bytes, then `cmd_cnt` u16 ids).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TcmuTmrEntry {
    /// Header.
    pub hdr: TcmuCmdEntryHdr,
    /// `TCMU_TMR_*`.
    pub tmr_type: u8,
    /// Unused.
    pub pad1: u8,
    /// Unused.
    pub pad2: u16,
    /// Number of ids in `cmd_ids`.
    pub cmd_cnt: u32,
    /// Unused.
    pub pad3: u64,
    /// Unused.
    pub pad4: u64,
    /// Ids of the affected commands still on the ring.
    pub cmd_ids: [u16; 0],
}

// ---- Byte offsets used by the ring code (relative to an entry start). ----

/// `hdr.len_op`.
pub const HDR_LEN_OP: usize = offset_of!(TcmuCmdEntryHdr, len_op);
/// `hdr.cmd_id`.
pub const HDR_CMD_ID: usize = offset_of!(TcmuCmdEntryHdr, cmd_id);
/// `hdr.kflags`.
pub const HDR_KFLAGS: usize = offset_of!(TcmuCmdEntryHdr, kflags);
/// `hdr.uflags`.
pub const HDR_UFLAGS: usize = offset_of!(TcmuCmdEntryHdr, uflags);
/// Size of the header.
pub const HDR_SIZE: usize = size_of::<TcmuCmdEntryHdr>();

const BODY: usize = offset_of!(TcmuCmdEntry, body);
/// `req.iov_cnt`.
pub const REQ_IOV_CNT: usize = BODY + offset_of!(TcmuCmdReq, iov_cnt);
/// `req.iov_bidi_cnt`.
pub const REQ_IOV_BIDI_CNT: usize = BODY + offset_of!(TcmuCmdReq, iov_bidi_cnt);
/// `req.iov_dif_cnt`.
pub const REQ_IOV_DIF_CNT: usize = BODY + offset_of!(TcmuCmdReq, iov_dif_cnt);
/// `req.cdb_off`.
pub const REQ_CDB_OFF: usize = BODY + offset_of!(TcmuCmdReq, cdb_off);
/// `req.iov[0]`.
pub const REQ_IOV: usize = BODY + offset_of!(TcmuCmdReq, iov);
/// Size of one iovec.
pub const IOVEC_SIZE: usize = size_of::<TcmuIovec>();
/// `iov_base` within an iovec.
pub const IOVEC_BASE: usize = offset_of!(TcmuIovec, iov_base);
/// `iov_len` within an iovec.
pub const IOVEC_LEN: usize = offset_of!(TcmuIovec, iov_len);
/// `rsp.scsi_status`.
pub const RSP_SCSI_STATUS: usize = BODY + offset_of!(TcmuCmdRsp, scsi_status);
/// `rsp.read_len`.
pub const RSP_READ_LEN: usize = BODY + offset_of!(TcmuCmdRsp, read_len);
/// `rsp.sense_buffer`.
pub const RSP_SENSE: usize = BODY + offset_of!(TcmuCmdRsp, sense_buffer);
/// `sizeof(struct tcmu_cmd_entry)`: the minimum length of a CMD entry.
pub const CMD_ENTRY_SIZE: usize = size_of::<TcmuCmdEntry>();
/// `tmr.tmr_type`.
pub const TMR_TYPE: usize = offset_of!(TcmuTmrEntry, tmr_type);
/// `tmr.cmd_cnt`.
pub const TMR_CMD_CNT: usize = offset_of!(TcmuTmrEntry, cmd_cnt);
/// `tmr.cmd_ids[0]`.
pub const TMR_CMD_IDS: usize = offset_of!(TcmuTmrEntry, cmd_ids);
/// `sizeof(struct tcmu_tmr_entry)`.
pub const TMR_ENTRY_SIZE: usize = size_of::<TcmuTmrEntry>();

/// Mailbox field offsets.
pub const MB_VERSION: usize = offset_of!(TcmuMailbox, version);
/// `flags`.
pub const MB_FLAGS: usize = offset_of!(TcmuMailbox, flags);
/// `cmdr_off`.
pub const MB_CMDR_OFF: usize = offset_of!(TcmuMailbox, cmdr_off);
/// `cmdr_size`.
pub const MB_CMDR_SIZE: usize = offset_of!(TcmuMailbox, cmdr_size);
/// `cmd_head`.
pub const MB_CMD_HEAD: usize = offset_of!(TcmuMailbox, cmd_head);
/// `cmd_tail`.
pub const MB_CMD_TAIL: usize = offset_of!(TcmuMailbox, cmd_tail);

/// Base size of a CMD entry with `iov_cnt` iovecs, before the CDB
/// (`tcmu_cmd_get_base_cmd_size`: `max(offsetof(req.iov[iov_cnt]), 112)`).
pub const fn cmd_base_size(iov_cnt: usize) -> usize {
    let with_iovs = REQ_IOV + iov_cnt * IOVEC_SIZE;
    if with_iovs > CMD_ENTRY_SIZE {
        with_iovs
    } else {
        CMD_ENTRY_SIZE
    }
}

/// Rounds `n` up to a multiple of [`TCMU_OP_ALIGN_SIZE`].
pub const fn round_up_op(n: usize) -> usize {
    (n + TCMU_OP_ALIGN_SIZE - 1) & !(TCMU_OP_ALIGN_SIZE - 1)
}

// ---- Compile-time layout checks (reference §1.2). ----
const _: () = assert!(size_of::<TcmuMailbox>() == 128);
const _: () = assert!(align_of::<TcmuMailbox>() == ALIGN_SIZE);
const _: () = assert!(MB_VERSION == 0);
const _: () = assert!(MB_FLAGS == 2);
const _: () = assert!(MB_CMDR_OFF == 4);
const _: () = assert!(MB_CMDR_SIZE == 8);
const _: () = assert!(MB_CMD_HEAD == 12);
const _: () = assert!(MB_CMD_TAIL == 64);
const _: () = assert!(CMDR_OFF == 128);

const _: () = assert!(HDR_SIZE == 8);
const _: () = assert!(HDR_LEN_OP == 0);
const _: () = assert!(HDR_CMD_ID == 4);
const _: () = assert!(HDR_KFLAGS == 6);
const _: () = assert!(HDR_UFLAGS == 7);

const _: () = assert!(size_of::<TcmuCmdEntry>() == 112);
const _: () = assert!(BODY == 8);
const _: () = assert!(REQ_IOV_CNT == 8);
const _: () = assert!(REQ_IOV_BIDI_CNT == 12);
const _: () = assert!(REQ_IOV_DIF_CNT == 16);
const _: () = assert!(REQ_CDB_OFF == 24);
const _: () = assert!(BODY + offset_of!(TcmuCmdReq, pad1) == 32);
const _: () = assert!(BODY + offset_of!(TcmuCmdReq, pad2) == 40);
const _: () = assert!(REQ_IOV == 48);
const _: () = assert!(IOVEC_SIZE == 16 && IOVEC_BASE == 0 && IOVEC_LEN == 8);
const _: () = assert!(RSP_SCSI_STATUS == 8);
const _: () = assert!(BODY + offset_of!(TcmuCmdRsp, pad1) == 9);
const _: () = assert!(BODY + offset_of!(TcmuCmdRsp, pad2) == 10);
const _: () = assert!(RSP_READ_LEN == 12);
const _: () = assert!(RSP_SENSE == 16);
const _: () = assert!(RSP_SENSE + TCMU_SENSE_BUFFERSIZE == CMD_ENTRY_SIZE);

const _: () = assert!(TMR_ENTRY_SIZE == 32);
const _: () = assert!(TMR_TYPE == 8);
const _: () = assert!(offset_of!(TcmuTmrEntry, pad1) == 9);
const _: () = assert!(offset_of!(TcmuTmrEntry, pad2) == 10);
const _: () = assert!(TMR_CMD_CNT == 12);
const _: () = assert!(offset_of!(TcmuTmrEntry, pad3) == 16);
const _: () = assert!(offset_of!(TcmuTmrEntry, pad4) == 24);
const _: () = assert!(TMR_CMD_IDS == 32);

const _: () = assert!(cmd_base_size(0) == 112 && cmd_base_size(4) == 112);
const _: () = assert!(cmd_base_size(5) == 128);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn len_op_round_trips() {
        let lo = tcmu_len_op(128, TCMU_OP_CMD);
        assert_eq!(lo, 0x81);
        assert_eq!(tcmu_hdr_get_op(lo), TCMU_OP_CMD);
        assert_eq!(tcmu_hdr_get_len(lo), 128);
        // The 8-byte PAD at the ring end.
        let pad = tcmu_len_op(8, TCMU_OP_PAD);
        assert_eq!((tcmu_hdr_get_len(pad), tcmu_hdr_get_op(pad)), (8, 0));
        // No shift: the length keeps its low bits cleared, never `>> 3`.
        assert_eq!(tcmu_hdr_get_len(0x1_0002), 0x1_0000);
        assert_eq!(tcmu_hdr_get_op(0x1_0002), TCMU_OP_TMR);
    }

    /// Cross-checks a few constants against the installed header.
    #[test]
    fn constants_match_installed_header() {
        use test_support::skip::{can_run, Need};
        if !can_run(&[Need::UapiHeader("linux/target_core_user.h")]) {
            return;
        }
        let path = "/usr/include/linux/target_core_user.h";
        let text = std::fs::read_to_string(path).unwrap();
        let define = |name: &str| -> Option<String> {
            text.lines().find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some("#define") && it.next() == Some(name))
                    .then(|| it.next().map(str::to_owned))
                    .flatten()
            })
        };
        assert_eq!(define("TCMU_MAILBOX_VERSION").as_deref(), Some("2"));
        assert_eq!(define("ALIGN_SIZE").as_deref(), Some("64"));
        assert_eq!(define("TCMU_SENSE_BUFFERSIZE").as_deref(), Some("96"));
        assert_eq!(define("TCMU_OP_MASK").as_deref(), Some("0x7"));
        assert_eq!(define("TCMU_UFLAG_UNKNOWN_OP").as_deref(), Some("0x1"));
        assert_eq!(define("TCMU_UFLAG_READ_LEN").as_deref(), Some("0x2"));
        assert_eq!(define("TCMU_UFLAG_KEEP_BUF").as_deref(), Some("0x4"));
        assert_eq!(define("TCMU_TMR_LUN_RESET").as_deref(), Some("5"));
        assert_eq!(define("TCMU_TMR_LUN_RESET_PRO").as_deref(), Some("128"));
        // The flags are written as `(1 << n)` / `(1<<n)`.
        let flag = |name: &str| -> Option<u32> {
            let line = text
                .lines()
                .find(|l| l.contains("#define") && l.contains(name))?;
            let shift = line.split("<<").nth(1)?;
            let digits: String = shift
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u32>().ok().map(|s| 1 << s)
        };
        assert_eq!(
            flag("TCMU_MAILBOX_FLAG_CAP_OOOC"),
            Some(u32::from(TCMU_MAILBOX_FLAG_CAP_OOOC))
        );
        assert_eq!(
            flag("TCMU_MAILBOX_FLAG_CAP_READ_LEN"),
            Some(u32::from(TCMU_MAILBOX_FLAG_CAP_READ_LEN))
        );
        assert_eq!(
            flag("TCMU_MAILBOX_FLAG_CAP_TMR"),
            Some(u32::from(TCMU_MAILBOX_FLAG_CAP_TMR))
        );
        assert_eq!(
            flag("TCMU_MAILBOX_FLAG_CAP_KEEP_BUF"),
            Some(u32::from(TCMU_MAILBOX_FLAG_CAP_KEEP_BUF))
        );
    }
}
