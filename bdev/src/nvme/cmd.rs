//! The kernel's NVMe passthrough ABI and the NVMe commands this bdev sends,
//! encoded. Pure data: no system call, no unsafe code. The I/O commands
//! and their SQE encoding are public, so that a loop outside the bdev (the
//! bench's raw io_uring reference) sends exactly the commands it sends.
//!
//! # The ABI (`include/uapi/linux/nvme_ioctl.h`)
//! - `struct nvme_passthru_cmd` (72 bytes) is the argument of
//!   `NVME_IOCTL_ADMIN_CMD` (`_IOWR('N', 0x41, ...)`): [`AdminCmd`].
//! - `struct nvme_uring_cmd` (72 bytes, Linux 5.19+) is what an
//!   `IORING_OP_URING_CMD` SQE carries in its command area (the 80 bytes
//!   from offset 48 of a 128-byte SQE) with `cmd_op` [`URING_CMD_IO`]
//!   (`_IOWR('N', 0x80, ...)`) or, since Linux 6.1, [`URING_CMD_IO_VEC`]
//!   (`_IOWR('N', 0x81, ...)`): [`UringCmd`]. The two structs have the same
//!   layout; the last word is `result` in the first and reserved in the
//!   second.
//! - Fields are host-endian: the kernel reads them (`READ_ONCE`) and
//!   converts each command dword to little-endian itself
//!   (`nvme_uring_cmd_io`, `drivers/nvme/host/ioctl.c`). `flags` must be 0
//!   (the kernel picks PRPs or SGLs), `nsid` must be the namespace's own
//!   (`nvme_validate_passthru_nsid`), `metadata` is not used (formats with
//!   metadata are refused at open).
//! - Data: `addr`/`data_len` name one buffer, or with `URING_CMD_IO_VEC` an
//!   `iovec` array and its length in elements. The transfer's direction
//!   follows bit 0 of the opcode (`nvme_is_write`): Write and Dataset
//!   Management send data, Read receives it, Flush and Write Zeroes move
//!   none.
//!
//! # The commands (NVM Express 1.4, NVM command set)
//! | command | opcode | dwords |
//! | --- | --- | --- |
//! | Flush | 00h | none |
//! | Write | 01h | CDW10/11 SLBA, CDW12 bits 15:0 NLB (0-based), bit 30 FUA |
//! | Read | 02h | CDW10/11 SLBA, CDW12 bits 15:0 NLB (0-based) |
//! | Write Zeroes | 08h | CDW10/11 SLBA, CDW12 bits 15:0 NLB (0-based), bit 25 DEAC, bit 30 FUA |
//! | Dataset Management | 09h | CDW10 bits 7:0 NR (ranges, 0-based), CDW11 bit 2 AD (deallocate); data: 16-byte ranges, little-endian: context attributes, NLB (1-based), SLBA |
//! | Identify (admin) | 06h | CDW10 bits 7:0 CNS: 00h namespace, 01h controller; 4096 bytes of data |

use std::mem::{offset_of, size_of};

/// Flush (NVM command set).
pub const OP_FLUSH: u8 = 0x00;
/// Write.
pub const OP_WRITE: u8 = 0x01;
/// Read.
pub const OP_READ: u8 = 0x02;
/// Write Zeroes.
pub(super) const OP_WRITE_ZEROES: u8 = 0x08;
/// Dataset Management.
pub(super) const OP_DSM: u8 = 0x09;
/// Identify (admin command set).
pub(super) const OP_IDENTIFY: u8 = 0x06;

/// Identify CNS 00h: the namespace named by NSID.
pub(super) const CNS_NAMESPACE: u32 = 0x00;
/// Identify CNS 01h: the controller.
pub(super) const CNS_CONTROLLER: u32 = 0x01;
/// Bytes an Identify returns.
pub(super) const IDENTIFY_LEN: usize = 4096;

/// CDW12 bit 30 of Read, Write and Write Zeroes: Force Unit Access.
pub const CDW12_FUA: u32 = 1 << 30;
/// CDW12 bit 25 of Write Zeroes: Deallocate.
pub(super) const CDW12_DEAC: u32 = 1 << 25;
/// CDW11 bit 2 of Dataset Management: Attribute – Deallocate.
pub(super) const CDW11_AD: u32 = 1 << 2;
/// Bytes of one Dataset Management range.
pub(super) const DSM_RANGE_LEN: usize = 16;
/// Bytes of range list a Dataset Management command hands the device:
/// one page, as Linux does (`nvme_setup_discard`: some devices read 256
/// ranges whatever NR says), the first range used and the rest zero.
pub(super) const DSM_LIST_LEN: usize = 4096;
/// Most logical blocks one Read, Write or Write Zeroes moves (NLB is a
/// 16-bit 0-based count).
pub const MAX_NLB: u32 = 1 << 16;

/// `struct nvme_uring_cmd`: what an `IORING_OP_URING_CMD` SQE for the
/// NVMe driver carries.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UringCmd {
    pub opcode: u8,
    pub flags: u8,
    pub rsvd1: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub metadata: u64,
    pub addr: u64,
    pub metadata_len: u32,
    /// Bytes at `addr`, or iovecs there for `URING_CMD_IO_VEC`.
    pub data_len: u32,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
    /// 0: the driver's default I/O timeout.
    pub timeout_ms: u32,
    pub rsvd2: u32,
}

/// `struct nvme_passthru_cmd`: the argument of `NVME_IOCTL_ADMIN_CMD`.
/// The kernel writes the completion's dword 0 into `result`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct AdminCmd {
    pub opcode: u8,
    pub flags: u8,
    pub rsvd1: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub metadata: u64,
    pub addr: u64,
    pub metadata_len: u32,
    pub data_len: u32,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
    pub timeout_ms: u32,
    pub result: u32,
}

// The layout of include/uapi/linux/nvme_ioctl.h, checked at compile time
// (and against the installed header by the tests below).
const _: () = {
    assert!(size_of::<UringCmd>() == 72);
    assert!(offset_of!(UringCmd, opcode) == 0);
    assert!(offset_of!(UringCmd, flags) == 1);
    assert!(offset_of!(UringCmd, nsid) == 4);
    assert!(offset_of!(UringCmd, cdw2) == 8);
    assert!(offset_of!(UringCmd, metadata) == 16);
    assert!(offset_of!(UringCmd, addr) == 24);
    assert!(offset_of!(UringCmd, metadata_len) == 32);
    assert!(offset_of!(UringCmd, data_len) == 36);
    assert!(offset_of!(UringCmd, cdw10) == 40);
    assert!(offset_of!(UringCmd, cdw11) == 44);
    assert!(offset_of!(UringCmd, cdw12) == 48);
    assert!(offset_of!(UringCmd, cdw13) == 52);
    assert!(offset_of!(UringCmd, cdw15) == 60);
    assert!(offset_of!(UringCmd, timeout_ms) == 64);
    assert!(offset_of!(UringCmd, rsvd2) == 68);
    // It fits the command area of a 128-byte SQE.
    assert!(size_of::<UringCmd>() <= URING_CMD_AREA);
    assert!(size_of::<AdminCmd>() == 72);
    assert!(offset_of!(AdminCmd, addr) == 24);
    assert!(offset_of!(AdminCmd, data_len) == 36);
    assert!(offset_of!(AdminCmd, cdw10) == 40);
    assert!(offset_of!(AdminCmd, result) == 68);
};

/// Bytes of command an `IORING_SETUP_SQE128` SQE carries (`sqe->cmd`).
pub const URING_CMD_AREA: usize = 80;

const NVME_IOCTL_TYPE: u32 = b'N' as u32;

/// `NVME_IOCTL_ID`: `_IO('N', 0x40)`, the namespace ID of the device.
pub(super) const IOCTL_ID: libc::Ioctl = libc::_IO(NVME_IOCTL_TYPE, 0x40);
/// `NVME_IOCTL_ADMIN_CMD`: `_IOWR('N', 0x41, struct nvme_passthru_cmd)`.
pub(super) const IOCTL_ADMIN_CMD: libc::Ioctl = libc::_IOWR::<AdminCmd>(NVME_IOCTL_TYPE, 0x41);
/// `NVME_URING_CMD_IO`: `_IOWR('N', 0x80, struct nvme_uring_cmd)`, one
/// buffer (Linux 5.19+).
pub const URING_CMD_IO: u32 = libc::_IOWR::<UringCmd>(NVME_IOCTL_TYPE, 0x80) as u32;
/// `NVME_URING_CMD_IO_VEC`: `_IOWR('N', 0x81, struct nvme_uring_cmd)`, an
/// iovec array (Linux 6.1+).
pub const URING_CMD_IO_VEC: u32 = libc::_IOWR::<UringCmd>(NVME_IOCTL_TYPE, 0x81) as u32;

/// Where a command's data is: one buffer of `len` bytes, or `len` iovecs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data {
    pub addr: u64,
    pub len: u32,
}

impl UringCmd {
    /// The 80 bytes of an SQE's command area holding this command.
    pub fn to_bytes(self) -> [u8; URING_CMD_AREA] {
        let mut out = [0u8; URING_CMD_AREA];
        let mut put = |at: usize, bytes: &[u8]| out[at..at + bytes.len()].copy_from_slice(bytes);
        put(offset_of!(UringCmd, opcode), &[self.opcode]);
        put(offset_of!(UringCmd, flags), &[self.flags]);
        put(offset_of!(UringCmd, rsvd1), &self.rsvd1.to_ne_bytes());
        put(offset_of!(UringCmd, nsid), &self.nsid.to_ne_bytes());
        put(offset_of!(UringCmd, cdw2), &self.cdw2.to_ne_bytes());
        put(offset_of!(UringCmd, cdw3), &self.cdw3.to_ne_bytes());
        put(offset_of!(UringCmd, metadata), &self.metadata.to_ne_bytes());
        put(offset_of!(UringCmd, addr), &self.addr.to_ne_bytes());
        put(
            offset_of!(UringCmd, metadata_len),
            &self.metadata_len.to_ne_bytes(),
        );
        put(offset_of!(UringCmd, data_len), &self.data_len.to_ne_bytes());
        put(offset_of!(UringCmd, cdw10), &self.cdw10.to_ne_bytes());
        put(offset_of!(UringCmd, cdw11), &self.cdw11.to_ne_bytes());
        put(offset_of!(UringCmd, cdw12), &self.cdw12.to_ne_bytes());
        put(offset_of!(UringCmd, cdw13), &self.cdw13.to_ne_bytes());
        put(offset_of!(UringCmd, cdw14), &self.cdw14.to_ne_bytes());
        put(offset_of!(UringCmd, cdw15), &self.cdw15.to_ne_bytes());
        put(
            offset_of!(UringCmd, timeout_ms),
            &self.timeout_ms.to_ne_bytes(),
        );
        put(offset_of!(UringCmd, rsvd2), &self.rsvd2.to_ne_bytes());
        out
    }
}

/// SLBA split into CDW10 (low) and CDW11 (high).
fn slba(lba: u64) -> (u32, u32) {
    (lba as u32, (lba >> 32) as u32)
}

/// CDW12's NLB for `blocks` (1..=[`MAX_NLB`]): 0-based.
fn nlb(blocks: u32) -> u32 {
    debug_assert!((1..=MAX_NLB).contains(&blocks), "{blocks} blocks");
    blocks - 1
}

/// Read `blocks` blocks at `lba` into `data`.
pub fn read(nsid: u32, lba: u64, blocks: u32, data: Data) -> UringCmd {
    let (cdw10, cdw11) = slba(lba);
    UringCmd {
        opcode: OP_READ,
        nsid,
        addr: data.addr,
        data_len: data.len,
        cdw10,
        cdw11,
        cdw12: nlb(blocks),
        ..UringCmd::default()
    }
}

/// Write `blocks` blocks at `lba` from `data`, with Force Unit Access when
/// `fua`.
pub fn write(nsid: u32, lba: u64, blocks: u32, fua: bool, data: Data) -> UringCmd {
    let (cdw10, cdw11) = slba(lba);
    UringCmd {
        opcode: OP_WRITE,
        nsid,
        addr: data.addr,
        data_len: data.len,
        cdw10,
        cdw11,
        cdw12: nlb(blocks) | if fua { CDW12_FUA } else { 0 },
        ..UringCmd::default()
    }
}

/// Flush the namespace's volatile write cache.
pub fn flush(nsid: u32) -> UringCmd {
    UringCmd {
        opcode: OP_FLUSH,
        nsid,
        ..UringCmd::default()
    }
}

/// Write Zeroes over `blocks` blocks at `lba`, asking the controller to
/// deallocate them when `deallocate` (DEAC), durable at completion when
/// `fua`.
pub(super) fn write_zeroes(
    nsid: u32,
    lba: u64,
    blocks: u32,
    deallocate: bool,
    fua: bool,
) -> UringCmd {
    let (cdw10, cdw11) = slba(lba);
    let mut cdw12 = nlb(blocks);
    if deallocate {
        cdw12 |= CDW12_DEAC;
    }
    if fua {
        cdw12 |= CDW12_FUA;
    }
    UringCmd {
        opcode: OP_WRITE_ZEROES,
        nsid,
        cdw10,
        cdw11,
        cdw12,
        ..UringCmd::default()
    }
}

/// Dataset Management with the Deallocate attribute over one range, whose
/// list (see [`dsm_range`]) is in `list`.
pub(super) fn deallocate(nsid: u32, list: Data) -> UringCmd {
    UringCmd {
        opcode: OP_DSM,
        nsid,
        addr: list.addr,
        data_len: list.len,
        cdw10: 0, // NR: one range
        cdw11: CDW11_AD,
        ..UringCmd::default()
    }
}

/// One Dataset Management range (little-endian, read by the device):
/// context attributes 0, `blocks` blocks (1-based), starting at `lba`.
pub(super) fn dsm_range(lba: u64, blocks: u32) -> [u8; DSM_RANGE_LEN] {
    let mut range = [0u8; DSM_RANGE_LEN];
    range[4..8].copy_from_slice(&blocks.to_le_bytes());
    range[8..16].copy_from_slice(&lba.to_le_bytes());
    range
}

/// Identify with `cns` for namespace `nsid` (0 for the controller) into
/// the 4096 bytes at `buffer`.
pub(super) fn identify(cns: u32, nsid: u32, buffer: u64) -> AdminCmd {
    AdminCmd {
        opcode: OP_IDENTIFY,
        nsid,
        addr: buffer,
        data_len: IDENTIFY_LEN as u32,
        cdw10: cns,
        ..AdminCmd::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ioctl request number (`c_ulong` with glibc, `c_int` with musl).
    #[allow(clippy::unnecessary_cast)]
    fn number(request: libc::Ioctl) -> u64 {
        request as u64
    }

    fn dword(bytes: &[u8; URING_CMD_AREA], at: usize) -> u32 {
        u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn ioctl_numbers_are_the_headers() {
        // _IOWR: direction 3 in bits 31:30, size 72 in bits 29:16, 'N' in
        // bits 15:8 (the asm-generic encoding of x86 and arm64).
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert_eq!(URING_CMD_IO, 0xC048_4E80);
            assert_eq!(URING_CMD_IO_VEC, 0xC048_4E81);
            assert_eq!(number(IOCTL_ADMIN_CMD), 0xC048_4E41);
            assert_eq!(number(IOCTL_ID), 0x4E40);
        }
    }

    #[test]
    fn read_and_write_encode_slba_nlb_and_fua() {
        let data = Data {
            addr: 0x7f00_1234_5000,
            len: 8 * 512,
        };
        let lba = 0x1_2345_6789;
        let r = read(1, lba, 8, data);
        assert_eq!((r.opcode, r.nsid, r.flags), (0x02, 1, 0));
        assert_eq!((r.cdw10, r.cdw11, r.cdw12), (0x2345_6789, 0x1, 7));
        assert_eq!((r.addr, r.data_len), (data.addr, 4096));
        let w = write(3, lba, 1, false, data);
        assert_eq!((w.opcode, w.nsid, w.cdw12), (0x01, 3, 0), "NLB 0 = 1 block");
        let fua = write(3, 5, MAX_NLB, true, data);
        assert_eq!(fua.cdw12, 0xFFFF | 1 << 30);
        assert_eq!((fua.cdw10, fua.cdw11), (5, 0));
        // Read has no FUA here and both leave the rest zero.
        assert_eq!(
            (r.cdw13, r.cdw14, r.cdw15, r.metadata, r.timeout_ms),
            (0, 0, 0, 0, 0)
        );
        // The opcode's bit 0 gives the kernel the direction.
        assert_eq!(r.opcode & 1, 0);
        assert_eq!(w.opcode & 1, 1);
    }

    #[test]
    fn flush_write_zeroes_and_deallocate() {
        let f = flush(2);
        assert_eq!(
            f,
            UringCmd {
                opcode: 0,
                nsid: 2,
                ..UringCmd::default()
            }
        );
        let z = write_zeroes(1, 1 << 32, 16, false, false);
        assert_eq!((z.opcode, z.cdw10, z.cdw11, z.cdw12), (0x08, 0, 1, 15));
        assert_eq!((z.addr, z.data_len), (0, 0), "no data");
        let deac = write_zeroes(1, 0, 16, true, false);
        assert_eq!(deac.cdw12, 15 | 1 << 25);
        let fua = write_zeroes(1, 0, 1, false, true);
        assert_eq!(fua.cdw12, 1 << 30);
        let list = Data {
            addr: 0x1000,
            len: 4096,
        };
        let d = deallocate(7, list);
        assert_eq!((d.opcode, d.nsid, d.cdw10, d.cdw11), (0x09, 7, 0, 1 << 2));
        assert_eq!((d.addr, d.data_len), (0x1000, 4096));
        assert_eq!(d.opcode & 1, 1, "DSM sends its range list");
        // NLB in a range is 1-based, all fields little-endian.
        assert_eq!(
            dsm_range(0x0102_0304_0506_0708, 0x10),
            [0, 0, 0, 0, 0x10, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]
        );
    }

    #[test]
    fn identify_asks_for_4096_bytes() {
        let c = identify(CNS_CONTROLLER, 0, 0x5000);
        assert_eq!((c.opcode, c.nsid, c.cdw10, c.data_len), (0x06, 0, 1, 4096));
        let n = identify(CNS_NAMESPACE, 1, 0x5000);
        assert_eq!((n.nsid, n.cdw10, n.addr), (1, 0, 0x5000));
    }

    #[test]
    fn command_bytes_follow_the_struct_layout() {
        let cmd = write(
            9,
            0xAABB_CCDD_EEFF,
            2,
            true,
            Data {
                addr: 0x1122_3344_5566_7788,
                len: 1024,
            },
        );
        let bytes = cmd.to_bytes();
        assert_eq!(bytes[0], 0x01);
        assert_eq!(bytes[1], 0);
        assert_eq!(dword(&bytes, 4), 9);
        assert_eq!(
            u64::from_ne_bytes(bytes[24..32].try_into().unwrap()),
            0x1122_3344_5566_7788
        );
        assert_eq!(dword(&bytes, 36), 1024);
        assert_eq!(dword(&bytes, 40), 0xCCDD_EEFF);
        assert_eq!(dword(&bytes, 44), 0xAABB);
        assert_eq!(dword(&bytes, 48), 1 | 1 << 30);
        assert!(bytes[72..].iter().all(|&b| b == 0), "past the struct");
    }

    /// Compiles a program against the installed UAPI header and compares
    /// the layout and ioctl numbers it prints with ours.
    #[test]
    fn layout_matches_the_installed_header() {
        use test_support::skip::{can_run, Need};
        if !can_run(&[Need::UapiHeader("linux/nvme_ioctl.h"), Need::Tool("cc")]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("abi.c");
        std::fs::write(
            &source,
            r#"#include <stdio.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <linux/nvme_ioctl.h>
#define OFF(s, f) printf(#s "." #f " %zu\n", offsetof(struct s, f))
int main(void) {
    printf("uring_cmd %zu\n", sizeof(struct nvme_uring_cmd));
    printf("passthru_cmd %zu\n", sizeof(struct nvme_passthru_cmd));
    OFF(nvme_uring_cmd, nsid); OFF(nvme_uring_cmd, addr);
    OFF(nvme_uring_cmd, data_len); OFF(nvme_uring_cmd, cdw10);
    OFF(nvme_uring_cmd, cdw12); OFF(nvme_uring_cmd, timeout_ms);
    OFF(nvme_passthru_cmd, addr); OFF(nvme_passthru_cmd, result);
    printf("io %lu\n", (unsigned long)NVME_URING_CMD_IO);
    printf("io_vec %lu\n", (unsigned long)NVME_URING_CMD_IO_VEC);
    printf("admin %lu\n", (unsigned long)NVME_IOCTL_ADMIN_CMD);
    printf("id %lu\n", (unsigned long)NVME_IOCTL_ID);
    return 0;
}
"#,
        )
        .unwrap();
        let exe = dir.path().join("abi");
        let built = std::process::Command::new("cc")
            .arg(&source)
            .arg("-o")
            .arg(&exe)
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let out = std::process::Command::new(&exe).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let value = |key: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{key} missing in {text}"))
        };
        assert_eq!(value("uring_cmd"), size_of::<UringCmd>() as u64);
        assert_eq!(value("passthru_cmd"), size_of::<AdminCmd>() as u64);
        assert_eq!(
            value("nvme_uring_cmd.nsid"),
            offset_of!(UringCmd, nsid) as u64
        );
        assert_eq!(
            value("nvme_uring_cmd.addr"),
            offset_of!(UringCmd, addr) as u64
        );
        assert_eq!(
            value("nvme_uring_cmd.data_len"),
            offset_of!(UringCmd, data_len) as u64
        );
        assert_eq!(
            value("nvme_uring_cmd.cdw10"),
            offset_of!(UringCmd, cdw10) as u64
        );
        assert_eq!(
            value("nvme_uring_cmd.cdw12"),
            offset_of!(UringCmd, cdw12) as u64
        );
        assert_eq!(
            value("nvme_uring_cmd.timeout_ms"),
            offset_of!(UringCmd, timeout_ms) as u64
        );
        assert_eq!(
            value("nvme_passthru_cmd.addr"),
            offset_of!(AdminCmd, addr) as u64
        );
        assert_eq!(
            value("nvme_passthru_cmd.result"),
            offset_of!(AdminCmd, result) as u64
        );
        assert_eq!(value("io"), u64::from(URING_CMD_IO));
        assert_eq!(value("io_vec"), u64::from(URING_CMD_IO_VEC));
        assert_eq!(value("admin"), number(IOCTL_ADMIN_CMD));
        assert_eq!(value("id"), number(IOCTL_ID));
    }
}
