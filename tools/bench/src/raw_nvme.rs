//! The raw loop's NVMe target: each I/O is NVMe Read or Write commands
//! passed through the namespace's generic character device with
//! `IORING_OP_URING_CMD` (`NVME_URING_CMD_IO`, 128-byte SQEs, 32-byte
//! CQEs), encoded by [`bdev::nvme::cmd`], so the loop sends exactly the
//! commands the `nvme` bdev sends for a request in one buffer: one per
//! I/O, or several when the I/O is larger than the namespace's largest
//! command (MDTS and the kernel's limits), cut where the bdev cuts. Inside
//! registered memory a command names its fixed buffer
//! (`IORING_URING_CMD_FIXED`), registered in pieces no larger than one
//! command, which the kernel maps whole (see `bdev::uring`'s fixed
//! buffers). It is fio's `io_uring_cmd` engine reduced to its loop.
//!
//! The namespace, its ID, LBA size and largest command come from opening
//! it as an `nvme` bdev does ([`NvmeBdev::open`]: Identify, a probe read),
//! so a path the bdev refuses is refused here with the same words.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bdev::nvme::cmd::{self, Data, UringCmd, URING_CMD_IO};
use bdev::nvme::{NvmeBdev, NvmeOptions};
use bdev::uring::FixedRegions;
use bdev::Bdev as _;
use io_uring::{cqueue, opcode, squeue, types};

use crate::raw_uring::{RawIo, RawTarget};

/// One namespace of the loop.
#[derive(Debug)]
struct Namespace {
    device: File,
    nsid: u32,
    block_size: u32,
    /// Bytes of the largest command (a whole number of blocks).
    command_bytes: u32,
}

/// NVMe namespaces through I/O passthrough.
#[derive(Debug)]
pub struct NvmeTarget {
    namespaces: Vec<Namespace>,
}

impl NvmeTarget {
    /// Opens the namespaces at `paths` (`/dev/ngXnY`), for writing too
    /// when `writes`; the error names the path and the problem.
    pub fn open(paths: &[PathBuf], writes: bool) -> Result<Self, String> {
        let namespaces = paths
            .iter()
            .map(|path| open_one(path, writes))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { namespaces })
    }

    /// The NVMe commands of `io`, in order, each with the fixed buffer it
    /// names (cut at the namespace's largest command).
    fn commands(
        &self,
        io: &RawIo,
        fixed: &FixedRegions,
        each: &mut dyn FnMut(UringCmd, Option<u16>),
    ) {
        let ns = &self.namespaces[io.target];
        let bs = u64::from(ns.block_size);
        let mut at = 0u32;
        while at < io.len {
            let len = (io.len - at).min(ns.command_bytes);
            let buf = io.buf.wrapping_add(at as usize);
            let data = Data {
                addr: buf as u64,
                len,
            };
            let lba = (io.offset + u64::from(at)) / bs;
            let blocks = (u64::from(len) / bs) as u32;
            let command = if io.write {
                cmd::write(ns.nsid, lba, blocks, false, data)
            } else {
                cmd::read(ns.nsid, lba, blocks, data)
            };
            each(command, fixed.find(buf, len as usize));
            at += len;
        }
    }

    /// The smallest largest command of the namespaces, in bytes.
    fn command_bytes(&self) -> u32 {
        self.namespaces
            .iter()
            .map(|n| n.command_bytes)
            .min()
            .unwrap_or(4096)
    }
}

fn open_one(path: &Path, writes: bool) -> Result<Namespace, String> {
    let bdev = NvmeBdev::open("reference", NvmeOptions::new(path)).map_err(|e| match e {
        bdev::Error::Open { path, problem, .. } => format!("{}: {problem}", path.display()),
        other => format!("{}: {other}", path.display()),
    })?;
    let block_size = bdev.geometry().block_size;
    let command_bytes = bdev.identity().command_bytes.min(u64::from(u32::MAX)) as u32;
    let device = OpenOptions::new()
        .read(true)
        .write(writes)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Namespace {
        device,
        nsid: bdev.identity().nsid,
        block_size,
        // Whole blocks (the identity's figure is).
        command_bytes: command_bytes / block_size * block_size,
    })
}

// SAFETY: each command names a part of the I/O's buffer (`at..at + len`
// inside `io.len`), the namespace's own open device and, when fixed, the
// index `fixed.find` gave for exactly that part.
unsafe impl RawTarget for NvmeTarget {
    type Sqe = squeue::Entry128;
    type Cqe = cqueue::Entry32;
    const KIND: &'static str = "nvme_uring_cmd";

    fn count(&self) -> usize {
        self.namespaces.len()
    }

    fn sqes_per_io(&self, len: u32) -> u32 {
        len.div_ceil(self.command_bytes().max(1))
    }

    fn fixed_piece(&self) -> usize {
        // Page multiples no larger than a command: the kernel maps a
        // fixed passthrough buffer from the command's offset to the end of
        // its piece, within the queue's segments.
        (self.command_bytes() as usize / 4096 * 4096).max(4096)
    }

    fn build(&self, io: &RawIo, fixed: &FixedRegions, push: &mut dyn FnMut(Self::Sqe)) {
        let fd = types::Fd(self.namespaces[io.target].device.as_raw_fd());
        self.commands(io, fixed, &mut |command, index| {
            push(
                opcode::UringCmd80::new(fd, URING_CMD_IO)
                    .cmd(command.to_bytes())
                    .buf_index(index)
                    .build(),
            );
        });
    }

    fn check(&self, res: i32, _len: u32) -> Result<(), String> {
        if res == 0 {
            Ok(())
        } else {
            Err(bdev::nvme::status::describe(res))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initiator::Pattern;
    use crate::raw_uring::{RawLoop, RawLoopConfig};
    use std::time::Duration;
    use test_support::skip::{can_run, nvme_device, Need};

    fn target(command_bytes: u32) -> NvmeTarget {
        NvmeTarget {
            namespaces: vec![Namespace {
                device: File::open("/dev/null").unwrap(),
                nsid: 3,
                block_size: 512,
                command_bytes,
            }],
        }
    }

    /// The commands of one I/O and their fixed buffers.
    fn commands(t: &NvmeTarget, io: &RawIo, fixed: &FixedRegions) -> Vec<(UringCmd, Option<u16>)> {
        let mut out = Vec::new();
        t.commands(io, fixed, &mut |c, i| out.push((c, i)));
        out
    }

    #[test]
    fn an_io_is_the_bdevs_commands_cut_at_the_largest() {
        let t = target(64 << 10);
        assert_eq!(t.sqes_per_io(4096), 1);
        assert_eq!(t.sqes_per_io(160 << 10), 3);
        assert_eq!(t.fixed_piece(), 64 << 10);
        let mut buffer = vec![0u8; 160 << 10];
        let base = buffer.as_ptr() as u64;
        let io = RawIo {
            write: true,
            target: 0,
            offset: 1 << 20,
            buf: buffer.as_mut_ptr(),
            len: 160 << 10,
        };
        // What `cmd::write` encodes for each piece, in order.
        let piece = |at: u32, blocks: u32| {
            cmd::write(
                3,
                (1 << 20) / 512 + u64::from(at / 512),
                blocks,
                false,
                Data {
                    addr: base + u64::from(at),
                    len: blocks * 512,
                },
            )
        };
        let expected = [piece(0, 128), piece(64 << 10, 128), piece(128 << 10, 64)];
        let none = FixedRegions::default();
        let got = commands(&t, &io, &none);
        assert_eq!(got, expected.map(|c| (c, None)));
        // Inside registered memory, in pieces of one command: each command
        // names its own piece.
        let pieces =
            FixedRegions::plan(&[bdev::IoVec::from_slice(&mut buffer)], t.fixed_piece()).unwrap();
        let fixed = FixedRegions::registered(&pieces);
        let indices: Vec<_> = commands(&t, &io, &fixed).iter().map(|c| c.1).collect();
        assert_eq!(indices, [Some(0), Some(1), Some(2)]);
        // A read is a Read of the same blocks.
        let read = commands(
            &t,
            &RawIo {
                write: false,
                len: 4096,
                ..io
            },
            &none,
        );
        let data = Data {
            addr: base,
            len: 4096,
        };
        assert_eq!(read, [(cmd::read(3, (1 << 20) / 512, 8, data), None)]);
        // One SQE per command.
        let mut sqes = 0;
        t.build(&io, &none, &mut |_| sqes += 1);
        assert_eq!(sqes, 3);
        // A failed command is described as the bdev describes it.
        assert!(t.check(0, 4096).is_ok());
        assert_eq!(
            t.check(-libc::EIO, 4096).unwrap_err(),
            bdev::nvme::status::describe(-libc::EIO)
        );
    }

    #[test]
    fn paths_that_are_not_namespaces_are_refused_by_name() {
        if !can_run(&[Need::IoUring]) {
            return;
        }
        let err = NvmeTarget::open(&["/dev/null".into()], false).unwrap_err();
        assert!(
            err.starts_with("/dev/null: is a character device") && err.contains("/dev/ngXnY"),
            "{err}"
        );
        let err = NvmeTarget::open(&["/nonexistent/ng0n1".into()], false).unwrap_err();
        assert!(
            err.starts_with("/nonexistent/ng0n1: does not exist"),
            "{err}"
        );
    }

    /// On the namespace `DATAPLANE_TEST_NVME` names (the VM test's
    /// emulated drive): writes, then reads, without a failed command.
    #[test]
    fn writes_and_reads_a_namespace() {
        if !can_run(&[Need::IoUring, Need::NvmeGeneric]) {
            return;
        }
        let device = nvme_device().unwrap();
        let config = RawLoopConfig {
            range: 8 << 20,
            io_size: 8192,
            iodepth: 8,
            pattern: Pattern::RandWrite,
            rwmix_read: 50,
            iopoll: false,
            sqpoll: false,
            fixed_buffers: true,
            runtime: Duration::from_millis(200),
            seed: 1,
        };
        let target = NvmeTarget::open(std::slice::from_ref(&device), true).unwrap();
        let mut writes = RawLoop::new(target, config.clone()).unwrap();
        assert_eq!(writes.kind(), "nvme_uring_cmd");
        let w = writes.run();
        assert!(w.ios > 0 && w.errors == 0, "{w:?}");
        assert!(w.enters > 0 && w.enters <= w.ios, "{w:?}");
        let target = NvmeTarget::open(std::slice::from_ref(&device), false).unwrap();
        let mut reads = RawLoop::new(
            target,
            RawLoopConfig {
                pattern: Pattern::RandRead,
                fixed_buffers: false,
                ..config
            },
        )
        .unwrap();
        assert!(!reads.fixed_buffers());
        let r = reads.run();
        assert!(r.ios > 0 && r.errors == 0, "{r:?}");
    }
}
