//! The scst_user ABI (`scst_user.h`, `scst_const.h`) for x86_64: ioctl
//! numbers, subcommand codes, constants and `#[repr(C)]` structs with
//! compile-time size and offset assertions (in `abi/layout.rs`).
//!
//! The layouts are those gcc gives the SCST 3.10/3.11 headers on x86_64
//! (`aligned_u64` is a plain 8-aligned `u64` there). Unions of the C headers
//! are modelled as byte arrays of the union's size with typed accessors, so
//! that only the member the kernel wrote is ever read.

#![allow(missing_docs)] // field names are the C header's; see scst_user.h

use std::mem::size_of;

/// Name of the character device.
pub const DEV_USER_NAME: &str = "scst_user";
/// Path of the character device.
pub const DEV_USER_PATH: &str = "/dev/scst_user";

pub const SCST_MAX_CDB_SIZE: usize = 16;
pub const SCST_MAX_LONG_CDB_SIZE: usize = 65536;
pub const SCST_MAX_NAME: usize = 50;
pub const SCST_MAX_EXTERNAL_NAME: usize = 256;
pub const SCST_SENSE_BUFFERSIZE: usize = 252;
pub const SCST_STANDARD_SENSE_LEN: usize = 18;
/// Bytes the kernel copies from both `version_str` and `license_str`:
/// `max(sizeof(DEV_USER_VERSION), 20)` = 91 for 3.10/3.11.
pub const DEV_USER_VERSION_COPY_LEN: usize = 91;

/// SCSI peripheral device type of a disk.
pub const TYPE_DISK: u8 = 0x00;

// parse_type
pub const SCST_USER_PARSE_STANDARD: u8 = 0;
pub const SCST_USER_PARSE_CALL: u8 = 1;
pub const SCST_USER_PARSE_EXCEPTION: u8 = 2;
// on_free_cmd_type
pub const SCST_USER_ON_FREE_CMD_CALL: u8 = 0;
pub const SCST_USER_ON_FREE_CMD_IGNORE: u8 = 1;
// memory_reuse_type
pub const SCST_USER_MEM_NO_REUSE: u8 = 0;
pub const SCST_USER_MEM_REUSE_READ: u8 = 1;
pub const SCST_USER_MEM_REUSE_WRITE: u8 = 2;
pub const SCST_USER_MEM_REUSE_ALL: u8 = 3;
// partial_transfers_type
pub const SCST_USER_PARTIAL_TRANSFERS_NOT_SUPPORTED: u8 = 0;
pub const SCST_USER_PARTIAL_TRANSFERS_SUPPORTED_ORDERED: u8 = 1;
pub const SCST_USER_PARTIAL_TRANSFERS_SUPPORTED: u8 = 2;
// exec reply_type
pub const SCST_EXEC_REPLY_BACKGROUND: u8 = 0;
pub const SCST_EXEC_REPLY_COMPLETED: u8 = 1;
pub const SCST_EXEC_REPLY_DO_WRITE_SAME: u8 = 2;
// data_direction
pub const SCST_DATA_UNKNOWN: u8 = 0;
pub const SCST_DATA_WRITE: u8 = 1;
pub const SCST_DATA_READ: u8 = 2;
pub const SCST_DATA_BIDI: u8 = 3;
pub const SCST_DATA_NONE: u8 = 4;
// queue_type
pub const SCST_CMD_QUEUE_UNTAGGED: u8 = 0;
pub const SCST_CMD_QUEUE_SIMPLE: u8 = 1;
pub const SCST_CMD_QUEUE_ORDERED: u8 = 2;
pub const SCST_CMD_QUEUE_HEAD_OF_QUEUE: u8 = 3;
pub const SCST_CMD_QUEUE_ACA: u8 = 4;
// task management functions (scst_user_tm.fn)
pub const SCST_ABORT_TASK: u32 = 0;
pub const SCST_ABORT_TASK_SET: u32 = 1;
pub const SCST_CLEAR_ACA: u32 = 2;
pub const SCST_CLEAR_TASK_SET: u32 = 3;
pub const SCST_LUN_RESET: u32 = 4;
pub const SCST_TARGET_RESET: u32 = 5;
pub const SCST_NEXUS_LOSS_SESS: u32 = 6;
pub const SCST_ABORT_ALL_TASKS_SESS: u32 = 7;
pub const SCST_NEXUS_LOSS: u32 = 8;
pub const SCST_ABORT_ALL_TASKS: u32 = 9;
pub const SCST_UNREG_SESS_TM: u32 = 10;
pub const SCST_PR_ABORT_ALL: u32 = 11;
// task management results
pub const SCST_MGMT_STATUS_SUCCESS: i32 = 0;
pub const SCST_MGMT_STATUS_TASK_NOT_EXIST: i32 = -1;
pub const SCST_MGMT_STATUS_LUN_NOT_EXIST: i32 = -2;
pub const SCST_MGMT_STATUS_FN_NOT_SUPPORTED: i32 = -5;
pub const SCST_MGMT_STATUS_REJECTED: i32 = -255;
pub const SCST_MGMT_STATUS_FAILED: i32 = -129;
// scst_cdb_flags (op_flags)
pub const SCST_SMALL_TIMEOUT: u32 = 0x1;
pub const SCST_LONG_TIMEOUT: u32 = 0x2;
pub const SCST_TRANSFER_LEN_TYPE_FIXED: u32 = 0x4;
pub const SCST_UNKNOWN_LBA: u32 = 0x8;
pub const SCST_UNKNOWN_LENGTH: u32 = 0x10;
pub const SCST_INFO_VALID: u32 = 0x20;
pub const SCST_LBA_NOT_VALID: u32 = 0x40;
pub const SCST_IMPLICIT_HQ: u32 = 0x80;
pub const SCST_SKIP_UA: u32 = 0x100;
pub const SCST_WRITE_MEDIUM: u32 = 0x200;
pub const SCST_LOCAL_CMD: u32 = 0x400;
pub const SCST_FULLY_LOCAL_CMD: u32 = 0x800;
pub const SCST_SERIALIZED: u32 = 0x10000;
pub const SCST_STRICTLY_SERIALIZED: u32 = 0x30000;
pub const SCST_DESCRIPTORS_BASED: u32 = 0x80000;
pub const SCST_SCSI_ATOMIC: u32 = 0x100000;
// on_free_cmd delivery_status
pub const SCST_CMD_DELIVERY_SUCCESS: i8 = 0;
pub const SCST_CMD_DELIVERY_FAILED: i8 = -1;
pub const SCST_CMD_DELIVERY_ABORTED: i8 = -2;

/// The Linux `_IOC` encoding (x86_64: 2 direction bits, 14 size bits).
const fn ioc(dir: u32, kind: u8, nr: u8, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((kind as u32) << 8) | nr as u32
}
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// ioctl request numbers (magic `'u'`).
pub mod ioctl {
    use super::*;

    pub const REGISTER_DEVICE: u32 = ioc(IOC_WRITE, b'u', 1, size_of::<ScstUserDevDesc>());
    pub const UNREGISTER_DEVICE: u32 = ioc(IOC_NONE, b'u', 2, 0);
    pub const SET_OPTIONS: u32 = ioc(IOC_WRITE, b'u', 3, size_of::<ScstUserOpt>());
    pub const GET_OPTIONS: u32 = ioc(IOC_READ, b'u', 4, size_of::<ScstUserOpt>());
    pub const REPLY_AND_GET_CMD: u32 =
        ioc(IOC_READ | IOC_WRITE, b'u', 5, size_of::<ScstUserGetCmd>());
    pub const REPLY_CMD: u32 = ioc(IOC_WRITE, b'u', 6, size_of::<ScstUserReplyCmd>());
    pub const FLUSH_CACHE: u32 = ioc(IOC_NONE, b'u', 7, 0);
    pub const DEVICE_CAPACITY_CHANGED: u32 = ioc(IOC_NONE, b'u', 8, 0);
    pub const GET_EXTENDED_CDB: u32 = ioc(
        IOC_READ | IOC_WRITE,
        b'u',
        9,
        size_of::<ScstUserGetExtCdb>(),
    );
    pub const PREALLOC_BUFFER: u32 = ioc(
        IOC_READ | IOC_WRITE,
        b'u',
        10,
        size_of::<ScstUserPreallocBuffer>(),
    );
    pub const REPLY_AND_GET_MULTI: u32 = ioc(
        IOC_READ | IOC_WRITE,
        b'u',
        11,
        size_of::<ScstUserGetMulti>(),
    );

    const _: () = assert!(REGISTER_DEVICE == 0x40a0_7501);
    const _: () = assert!(UNREGISTER_DEVICE == 0x0000_7502);
    const _: () = assert!(SET_OPTIONS == 0x4014_7503);
    const _: () = assert!(GET_OPTIONS == 0x8014_7504);
    const _: () = assert!(REPLY_AND_GET_CMD == 0xc220_7505);
    const _: () = assert!(REPLY_CMD == 0x4038_7506);
    const _: () = assert!(FLUSH_CACHE == 0x0000_7507);
    const _: () = assert!(DEVICE_CAPACITY_CHANGED == 0x0000_7508);
    const _: () = assert!(GET_EXTENDED_CDB == 0xc010_7509);
    const _: () = assert!(PREALLOC_BUFFER == 0xc010_750a);
    const _: () = assert!(REPLY_AND_GET_MULTI == 0xc010_750b);
}

/// Subcommand codes (`scst_user_get_cmd.subcode`, magic `'s'`); the number
/// is the kernel's `UCMD_STATE_*`. A reply echoes the exact code.
pub mod subcode {
    use super::*;

    pub const ATTACH_SESS: u32 = ioc(IOC_READ, b's', 0x20, size_of::<ScstUserSess>());
    pub const DETACH_SESS: u32 = ioc(IOC_READ, b's', 0x21, size_of::<ScstUserSess>());
    pub const PARSE: u32 = ioc(
        IOC_READ | IOC_WRITE,
        b's',
        1,
        size_of::<ScstUserScsiCmdParse>(),
    );
    pub const ALLOC_MEM: u32 = ioc(
        IOC_READ | IOC_WRITE,
        b's',
        2,
        size_of::<ScstUserScsiCmdAllocMem>(),
    );
    pub const EXEC: u32 = ioc(
        IOC_READ | IOC_WRITE,
        b's',
        3,
        size_of::<ScstUserScsiCmdExec>(),
    );
    pub const ON_FREE_CMD: u32 = ioc(IOC_READ, b's', 4, size_of::<ScstUserScsiOnFreeCmd>());
    pub const ON_CACHED_MEM_FREE: u32 =
        ioc(IOC_READ, b's', 5, size_of::<ScstUserOnCachedMemFree>());
    pub const EXT_COPY_REMAP: u32 = ioc(
        IOC_READ | IOC_WRITE,
        b's',
        6,
        size_of::<ScstUserExtCopyRemap>(),
    );
    pub const TASK_MGMT_RECEIVED: u32 = ioc(IOC_READ | IOC_WRITE, b's', 8, size_of::<ScstUserTm>());
    pub const TASK_MGMT_DONE: u32 = ioc(IOC_READ | IOC_WRITE, b's', 9, size_of::<ScstUserTm>());

    const _: () = assert!(ATTACH_SESS == 0x8218_7320);
    const _: () = assert!(DETACH_SESS == 0x8218_7321);
    const _: () = assert!(PARSE == 0xc050_7301);
    const _: () = assert!(ALLOC_MEM == 0xc028_7302);
    const _: () = assert!(EXEC == 0xc068_7303);
    const _: () = assert!(ON_FREE_CMD == 0x8010_7304);
    const _: () = assert!(ON_CACHED_MEM_FREE == 0x8008_7305);
    const _: () = assert!(EXT_COPY_REMAP == 0xc030_7306);
    const _: () = assert!(TASK_MGMT_RECEIVED == 0xc018_7308);
    const _: () = assert!(TASK_MGMT_DONE == 0xc018_7309);

    /// `_IOC_NR` of a subcode: the `UCMD_STATE_*` number.
    pub const fn state_nr(subcode: u32) -> u8 {
        (subcode & 0xff) as u8
    }

    /// Bytes of `scst_user_get_cmd` the kernel copies for a subcode
    /// (`user_cmd_payload_len`): 8 (cmd_h, subcode) + the payload. Bytes
    /// beyond are stale.
    pub const fn payload_len(subcode: u32) -> usize {
        match subcode {
            ATTACH_SESS | DETACH_SESS => 8 + size_of::<ScstUserSess>(),
            PARSE => 8 + size_of::<ScstUserScsiCmdParse>(),
            ALLOC_MEM => 8 + size_of::<ScstUserScsiCmdAllocMem>(),
            EXEC => 8 + size_of::<ScstUserScsiCmdExec>(),
            ON_FREE_CMD => 8 + size_of::<ScstUserScsiOnFreeCmd>(),
            ON_CACHED_MEM_FREE => 8 + size_of::<ScstUserOnCachedMemFree>(),
            TASK_MGMT_RECEIVED | TASK_MGMT_DONE => 8 + size_of::<ScstUserTm>(),
            EXT_COPY_REMAP => 8 + size_of::<ScstUserExtCopyRemap>(),
            _ => 8,
        }
    }

    const _: () = assert!(payload_len(ATTACH_SESS) == 544);
    const _: () = assert!(payload_len(PARSE) == 88);
    const _: () = assert!(payload_len(ALLOC_MEM) == 48);
    const _: () = assert!(payload_len(EXEC) == 112);
    const _: () = assert!(payload_len(ON_FREE_CMD) == 24);
    const _: () = assert!(payload_len(ON_CACHED_MEM_FREE) == 16);
    const _: () = assert!(payload_len(TASK_MGMT_RECEIVED) == 32);
    const _: () = assert!(payload_len(EXT_COPY_REMAP) == 56);
}

/// `struct scst_user_opt` (20 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScstUserOpt {
    pub parse_type: u8,
    pub on_free_cmd_type: u8,
    pub memory_reuse_type: u8,
    pub partial_transfers_type: u8,
    pub partial_len: i32,
    pub tst: u8,
    pub tmf_only: u8,
    pub queue_alg: u8,
    pub qerr: u8,
    pub tas: u8,
    pub swp: u8,
    pub d_sense: u8,
    pub has_own_order_mgmt: u8,
    pub ext_copy_remap_supported: u8,
    pub _pad: [u8; 3],
}

/// `struct scst_user_dev_desc` (160 bytes). `version_str` and `license_str`
/// are user-space pointers to NUL-terminated strings, each backed by at
/// least [`DEV_USER_VERSION_COPY_LEN`] readable bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ScstUserDevDesc {
    pub version_str: u64,
    pub license_str: u64,
    pub type_: u8,
    pub sgv_shared: u8,
    pub sgv_disable_clustered_pool: u8,
    pub _pad0: u8,
    pub sgv_single_alloc_pages: i32,
    pub sgv_purge_interval: i32,
    pub opt: ScstUserOpt,
    pub block_size: u32,
    pub enable_pr_cmds_notifications: u8,
    pub name: [u8; SCST_MAX_NAME],
    pub sgv_name: [u8; SCST_MAX_NAME],
    pub _pad1: [u8; 7],
}

/// `struct scst_user_sess` (536 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ScstUserSess {
    pub sess_h: u64,
    pub lun: u64,
    pub threads_num: u16,
    pub rd_only: u8,
    pub _pad0: u8,
    pub scsi_transport_version: u16,
    pub phys_transport_version: u16,
    pub initiator_name: [u8; SCST_MAX_EXTERNAL_NAME],
    pub target_name: [u8; SCST_MAX_EXTERNAL_NAME],
}

/// `struct scst_user_scsi_cmd_parse` (80 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserScsiCmdParse {
    pub sess_h: u64,
    pub cdb: [u8; SCST_MAX_CDB_SIZE],
    pub cdb_len: u16,
    pub _pad0: [u8; 6],
    pub lba: i64,
    pub data_len: i64,
    pub bufflen: i32,
    pub out_bufflen: i32,
    pub timeout: i32,
    pub op_flags: u32,
    pub queue_type: u8,
    pub data_direction: u8,
    pub expected_values_set: u8,
    pub expected_data_direction: u8,
    pub expected_transfer_len: i32,
    pub expected_out_transfer_len: i32,
    pub sn: u32,
}

/// `struct scst_user_scsi_cmd_alloc_mem` (40 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserScsiCmdAllocMem {
    pub sess_h: u64,
    pub cdb: [u8; SCST_MAX_CDB_SIZE],
    pub cdb_len: u16,
    pub _pad0: [u8; 2],
    pub alloc_len: i32,
    pub queue_type: u8,
    pub data_direction: u8,
    pub _pad1: [u8; 2],
    pub sn: u32,
}

/// `struct scst_user_scsi_cmd_exec` (104 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserScsiCmdExec {
    pub sess_h: u64,
    pub cdb: [u8; SCST_MAX_CDB_SIZE],
    pub cdb_len: u16,
    pub _pad0: [u8; 6],
    pub lba: i64,
    pub data_len: i64,
    pub bufflen: i32,
    pub alloc_len: i32,
    pub pbuf: u64,
    pub queue_type: u8,
    pub data_direction: u8,
    pub partial: u8,
    pub _pad1: u8,
    pub timeout: i32,
    pub p_out_buf: u64,
    pub out_bufflen: i32,
    pub sn: u32,
    pub parent_cmd_h: u32,
    pub parent_cmd_data_len: i32,
    pub partial_offset: u32,
    pub _pad2: [u8; 4],
}

/// `struct scst_user_scsi_on_free_cmd` (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserScsiOnFreeCmd {
    pub pbuf: u64,
    pub resp_data_len: i32,
    pub buffer_cached: u8,
    pub aborted: u8,
    pub status: u8,
    pub delivery_status: i8,
}

/// `struct scst_user_on_cached_mem_free` (8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserOnCachedMemFree {
    pub pbuf: u64,
}

/// `struct scst_user_tm` (24 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserTm {
    pub sess_h: u64,
    pub fn_: u32,
    pub cmd_h_to_abort: u32,
    pub cmd_sn: u32,
    pub cmd_sn_set: u8,
    pub _pad0: [u8; 3],
}

/// `struct scst_user_ext_copy_data_descr` (24 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserExtCopyDataDescr {
    pub src_lba: u64,
    pub dst_lba: u64,
    pub data_len: i32,
    pub _pad0: [u8; 4],
}

/// `struct scst_user_ext_copy_remap` (48 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserExtCopyRemap {
    pub sess_h: u64,
    pub src_sess_h: u64,
    pub dst_sess_h: u64,
    pub data_descr: ScstUserExtCopyDataDescr,
}

/// Size of the union in `struct scst_user_get_cmd` (its largest member,
/// `scst_user_sess`).
pub const GET_CMD_UNION_SIZE: usize = size_of::<ScstUserSess>();

/// `struct scst_user_get_cmd` (544 bytes): `cmd_h`, `subcode` and a union
/// selected by `subcode`. Read the union only through the accessor of the
/// member `subcode` names.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct ScstUserGetCmd {
    pub cmd_h: u32,
    pub subcode: u32,
    pub payload: [u8; GET_CMD_UNION_SIZE],
}

impl Default for ScstUserGetCmd {
    fn default() -> Self {
        Self {
            cmd_h: 0,
            subcode: 0,
            payload: [0; GET_CMD_UNION_SIZE],
        }
    }
}

impl std::fmt::Debug for ScstUserGetCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScstUserGetCmd")
            .field("cmd_h", &self.cmd_h)
            .field("subcode", &format_args!("{:#x}", self.subcode))
            .finish()
    }
}

/// Reads a plain-data struct from the start of a byte array.
fn read_pod<T: Copy + Pod>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: `bytes` holds at least size_of::<T>() bytes (asserted) and `T`
    // is plain old data (the `Pod` marker: integers and arrays only, every
    // bit pattern valid); `read_unaligned` copies without alignment needs.
    unsafe { bytes.as_ptr().cast::<T>().read_unaligned() }
}

/// Writes a plain-data struct to the start of a byte array.
fn write_pod<T: Copy + Pod>(bytes: &mut [u8], value: &T) {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: `bytes` has room for size_of::<T>() bytes (asserted);
    // `write_unaligned` copies the value's bytes without alignment needs.
    unsafe { bytes.as_mut_ptr().cast::<T>().write_unaligned(*value) }
}

/// Marker for the ABI structs: `#[repr(C)]`, integers and byte arrays only,
/// so every bit pattern is a valid value and they can be copied to and from
/// bytes.
///
/// # Safety
/// Implement only for such types.
pub unsafe trait Pod {}

macro_rules! pod {
    ($($t:ty),*) => {$(
        // SAFETY: a #[repr(C)] struct of integers and byte arrays (see its
        // definition above); every bit pattern is a valid value.
        unsafe impl Pod for $t {}
    )*};
}
pod!(
    ScstUserOpt,
    ScstUserDevDesc,
    ScstUserSess,
    ScstUserScsiCmdParse,
    ScstUserScsiCmdAllocMem,
    ScstUserScsiCmdExec,
    ScstUserScsiOnFreeCmd,
    ScstUserOnCachedMemFree,
    ScstUserTm,
    ScstUserExtCopyDataDescr,
    ScstUserExtCopyRemap,
    ScstUserGetCmd,
    ScstUserScsiCmdReplyParse,
    ScstUserScsiCmdReplyAllocMem,
    ScstUserDataDescriptor,
    ScstUserScsiCmdReplyExec,
    ScstUserExtCopyReplyRemap,
    ScstUserReplyCmd,
    ScstUserGetExtCdb,
    ScstUserPreallocBufferIn,
    ScstUserPreallocBufferOut,
    ScstUserPreallocBuffer,
    ScstUserGetMulti
);

macro_rules! union_accessors {
    ($owner:ty, $field:ident, $( $get:ident / $set:ident : $t:ty ),* $(,)?) => {
        impl $owner {
            $(
                #[doc = concat!("The union as `", stringify!($t), "`.")]
                pub fn $get(&self) -> $t {
                    read_pod(&self.$field)
                }
                #[doc = concat!("Sets the union to a `", stringify!($t), "`.")]
                pub fn $set(&mut self, value: &$t) {
                    write_pod(&mut self.$field, value)
                }
            )*
        }
    };
}

union_accessors!(ScstUserGetCmd, payload,
    preply / set_preply: u64,
    sess / set_sess: ScstUserSess,
    parse_cmd / set_parse_cmd: ScstUserScsiCmdParse,
    alloc_cmd / set_alloc_cmd: ScstUserScsiCmdAllocMem,
    exec_cmd / set_exec_cmd: ScstUserScsiCmdExec,
    on_free_cmd / set_on_free_cmd: ScstUserScsiOnFreeCmd,
    on_cached_mem_free / set_on_cached_mem_free: ScstUserOnCachedMemFree,
    tm_cmd / set_tm_cmd: ScstUserTm,
    remap_cmd / set_remap_cmd: ScstUserExtCopyRemap,
);

// SAFETY: u64 is plain data.
unsafe impl Pod for u64 {}
// SAFETY: i32 is plain data.
unsafe impl Pod for i32 {}

/// `struct scst_user_scsi_cmd_reply_parse` (48 bytes): `status`, then a
/// union of the parse results (status 0) or the sense (status != 0).
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub struct ScstUserScsiCmdReplyParse {
    pub status: u8,
    pub _pad0: [u8; 7],
    pub payload: [u8; 40],
}

impl Default for ScstUserScsiCmdReplyParse {
    fn default() -> Self {
        Self {
            status: 0,
            _pad0: [0; 7],
            payload: [0; 40],
        }
    }
}

/// The parse results in [`ScstUserScsiCmdReplyParse`] (at offset 8).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseResult {
    pub queue_type: u8,
    pub data_direction: u8,
    pub cdb_len: u16,
    pub _pad0: [u8; 4],
    pub lba: i64,
    pub data_len: i64,
    pub bufflen: i32,
    pub op_flags: u32,
    pub out_bufflen: i32,
    pub _pad1: [u8; 4],
}

impl ParseResult {
    /// The kernel's own parse of `p` handed back unchanged: the reply a
    /// handler gives to a command it leaves as SCST's core sized it.
    pub fn passthrough(p: &ScstUserScsiCmdParse) -> Self {
        Self {
            queue_type: p.queue_type,
            data_direction: p.data_direction,
            cdb_len: p.cdb_len,
            lba: p.lba,
            data_len: p.data_len,
            bufflen: p.bufflen,
            op_flags: p.op_flags,
            out_bufflen: p.out_bufflen,
            ..Default::default()
        }
    }
}

/// Sense of a reply (`sense_len`, `psense_buffer`), the second member of
/// the parse and exec reply unions.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplySense {
    pub sense_len: u8,
    pub _pad0: [u8; 7],
    pub psense_buffer: u64,
}

/// WRITE SAME descriptors of an exec reply (`ws_descriptors_len`,
/// `ws_descriptors`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplyWriteSame {
    pub ws_descriptors_len: u16,
    pub _pad0: [u8; 6],
    pub ws_descriptors: u64,
}

// SAFETY: #[repr(C)] structs of integers and byte arrays.
unsafe impl Pod for ParseResult {}
// SAFETY: as above.
unsafe impl Pod for ReplySense {}
// SAFETY: as above.
unsafe impl Pod for ReplyWriteSame {}

union_accessors!(ScstUserScsiCmdReplyParse, payload,
    result / set_result: ParseResult,
    sense / set_sense: ReplySense,
);

/// `struct scst_user_scsi_cmd_reply_alloc_mem` (8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserScsiCmdReplyAllocMem {
    pub pbuf: u64,
}

/// `struct scst_user_data_descriptor` (16 bytes): one WRITE SAME range; a
/// list ends with `usdd_blocks == 0`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserDataDescriptor {
    pub usdd_lba: u64,
    pub usdd_blocks: u64,
}

/// `struct scst_user_scsi_cmd_reply_exec` (40 bytes).
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserScsiCmdReplyExec {
    pub resp_data_len: i32,
    pub _pad0: [u8; 4],
    pub pbuf: u64,
    pub reply_type: u8,
    pub status: u8,
    pub _pad1: [u8; 6],
    pub payload: [u8; 16],
}

union_accessors!(ScstUserScsiCmdReplyExec, payload,
    sense / set_sense: ReplySense,
    write_same / set_write_same: ReplyWriteSame,
);

/// `struct scst_user_ext_copy_reply_remap` (24 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserExtCopyReplyRemap {
    pub remap_descriptors: u64,
    pub remap_descriptors_len: u16,
    pub status: u8,
    pub sense_len: u8,
    pub _pad0: [u8; 4],
    pub psense_buffer: u64,
}

/// Size of the union in `struct scst_user_reply_cmd`.
pub const REPLY_CMD_UNION_SIZE: usize = size_of::<ScstUserScsiCmdReplyParse>();

/// `struct scst_user_reply_cmd` (56 bytes).
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub struct ScstUserReplyCmd {
    pub cmd_h: u32,
    pub subcode: u32,
    pub payload: [u8; REPLY_CMD_UNION_SIZE],
}

impl Default for ScstUserReplyCmd {
    fn default() -> Self {
        Self {
            cmd_h: 0,
            subcode: 0,
            payload: [0; REPLY_CMD_UNION_SIZE],
        }
    }
}

union_accessors!(ScstUserReplyCmd, payload,
    result / set_result: i32,
    parse_reply / set_parse_reply: ScstUserScsiCmdReplyParse,
    alloc_reply / set_alloc_reply: ScstUserScsiCmdReplyAllocMem,
    exec_reply / set_exec_reply: ScstUserScsiCmdReplyExec,
    remap_reply / set_remap_reply: ScstUserExtCopyReplyRemap,
);

/// `struct scst_user_get_ext_cdb` (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserGetExtCdb {
    pub cmd_h: u32,
    pub _pad0: [u8; 4],
    pub ext_cdb_buffer: u64,
}

/// `struct scst_user_prealloc_buffer_in` (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserPreallocBufferIn {
    pub pbuf: u64,
    pub bufflen: u32,
    pub for_clust_pool: u8,
    pub _pad0: [u8; 3],
}

/// `struct scst_user_prealloc_buffer_out` (4 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserPreallocBufferOut {
    pub cmd_h: u32,
}

/// `union scst_user_prealloc_buffer` (16 bytes): `in` on entry, `out` on
/// return.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserPreallocBuffer {
    pub bytes: [u8; 16],
}

union_accessors!(ScstUserPreallocBuffer, bytes,
    input / set_input: ScstUserPreallocBufferIn,
    output / set_output: ScstUserPreallocBufferOut,
);

/// `struct scst_user_get_multi` (16 bytes), followed in memory by
/// `cmds_cnt` [`ScstUserGetCmd`]s (stride 544).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ScstUserGetMulti {
    pub preplies: u64,
    pub replies_cnt: i16,
    pub replies_done: i16,
    pub cmds_cnt: i16,
    pub _pad0: i16,
}

// Size and offset assertions of every struct above.
mod layout;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_members_round_trip_at_the_c_offsets() {
        let mut reply = ScstUserReplyCmd {
            cmd_h: 7,
            subcode: subcode::EXEC,
            ..Default::default()
        };
        let mut exec = ScstUserScsiCmdReplyExec {
            resp_data_len: 4096,
            pbuf: 0x1000,
            reply_type: SCST_EXEC_REPLY_COMPLETED,
            status: 2,
            ..Default::default()
        };
        exec.set_sense(&ReplySense {
            sense_len: 18,
            psense_buffer: 0xdead_beef,
            ..Default::default()
        });
        reply.set_exec_reply(&exec);
        // SAFETY: ScstUserReplyCmd is Pod, 56 bytes; viewing it as bytes is
        // valid for its whole size.
        let bytes: [u8; 56] = unsafe { std::mem::transmute(reply) };
        assert_eq!(&bytes[0..4], &7u32.to_ne_bytes());
        assert_eq!(&bytes[8..12], &4096i32.to_ne_bytes()); // resp_data_len
        assert_eq!(&bytes[16..24], &0x1000u64.to_ne_bytes()); // pbuf
        assert_eq!(bytes[24], SCST_EXEC_REPLY_COMPLETED); // reply_type
        assert_eq!(bytes[25], 2); // status
        assert_eq!(bytes[32], 18); // sense_len
        assert_eq!(&bytes[40..48], &0xdead_beefu64.to_ne_bytes()); // psense_buffer
        let back = reply.exec_reply();
        assert_eq!(back.sense().psense_buffer, 0xdead_beef);
        assert_eq!(subcode::state_nr(subcode::EXEC), 3);
    }
}
