//! Opening the file or block device behind a `file` bdev and finding out
//! what it is: size, logical and physical block, O_DIRECT alignment, cache
//! and deallocation support. Control path only.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{Capabilities, Error, Geometry, OpenProblem, Topology};

use super::FileOptions;

/// `_IOR(0x12, 114, size_t)`: the device's size in bytes.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// `_IO(0x12, 94)`: whether the device is read-only.
const BLKROGET: libc::c_ulong = 0x125E;
/// `_IO(0x12, 104)`: the logical block size.
const BLKSSZGET: libc::c_ulong = 0x1268;
/// `_IO(0x12, 123)`: the physical block size.
const BLKPBSZGET: libc::c_ulong = 0x127B;

/// Alignment O_DIRECT needs: buffer addresses to `mem`, file offsets and
/// lengths (of every iovec) to `offset`. Both 1 without O_DIRECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alignment {
    /// Buffer address alignment in bytes (a power of two).
    pub mem: u32,
    /// Offset and length alignment in bytes (a power of two).
    pub offset: u32,
}

/// What a file or block device turned out to be.
#[derive(Debug)]
pub(super) struct Opened {
    pub file: File,
    pub block_device: bool,
    pub geometry: Geometry,
    pub topology: Topology,
    pub capabilities: Capabilities,
    pub alignment: Alignment,
}

/// Opens (creating a sparse file if asked) and probes `options.path`.
pub(super) fn open(name: &str, options: &FileOptions) -> Result<Opened, Error> {
    let path = &options.path;
    let fail = |problem| Error::Open {
        name: name.to_string(),
        path: path.clone(),
        problem,
    };
    let os = |what, source| fail(OpenProblem::Os { what, source });
    if let Some(bs) = options.block_size {
        if bs < 512 || !bs.is_power_of_two() {
            return Err(fail(OpenProblem::BadBlockSize(bs)));
        }
    }
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => match options.size {
            Some(size) => {
                create_sparse(path, size, options.block_size.unwrap_or(512)).map_err(fail)?;
                fs::metadata(path).map_err(|e| os("stat", e))?
            }
            None => return Err(fail(OpenProblem::Missing)),
        },
        Err(e) => return Err(os("stat", e)),
    };
    let kind = meta.file_type();
    let block_device = kind.is_block_device();
    if !kind.is_file() && !block_device {
        return Err(fail(OpenProblem::WrongType(type_name(&kind))));
    }

    let file = open_rw(path, options.direct).map_err(fail)?;
    let fd = file.as_raw_fd();
    let (geometry, topology, capabilities) = if block_device {
        if ioctl_int(fd, BLKROGET).map_err(|e| os("BLKROGET", e))? != 0 {
            return Err(fail(OpenProblem::ReadOnly(
                "the block device is set read-only (blockdev --setro)".into(),
            )));
        }
        probe_block_device(fd, meta.rdev(), options).map_err(fail)?
    } else {
        probe_regular(&file, meta.len(), meta.blksize(), options).map_err(fail)?
    };
    let alignment = if options.direct {
        let alignment = direct_alignment(fd, block_device, geometry.block_size).map_err(fail)?;
        if !geometry.block_size.is_multiple_of(alignment.offset) {
            return Err(fail(OpenProblem::BlockSizeBelowAlignment {
                block_size: geometry.block_size,
                align: alignment.offset,
            }));
        }
        alignment
    } else {
        Alignment { mem: 1, offset: 1 }
    };
    Ok(Opened {
        file,
        block_device,
        geometry,
        topology,
        capabilities: Capabilities {
            max_transfer_blocks: (options.max_transfer_bytes / geometry.block_size).max(1),
            ..capabilities
        },
        alignment,
    })
}

/// Creates a sparse regular file of `size` bytes (a whole number of
/// `block_size` blocks).
fn create_sparse(path: &Path, size: u64, block_size: u32) -> Result<(), OpenProblem> {
    if size == 0 {
        return Err(OpenProblem::Empty);
    }
    if !size.is_multiple_of(u64::from(block_size)) {
        return Err(OpenProblem::MisalignedSize { size, block_size });
    }
    let os = |what, source| OpenProblem::Os { what, source };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| os("create", e))?;
    file.set_len(size).map_err(|e| os("set the size of", e))
}

/// Opens read-write, telling a read-only file and a refused O_DIRECT
/// apart from other failures.
fn open_rw(path: &Path, direct: bool) -> Result<File, OpenProblem> {
    let flags = libc::O_CLOEXEC | if direct { libc::O_DIRECT } else { 0 };
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(path)
    {
        Ok(file) => Ok(file),
        Err(e) => match e.raw_os_error() {
            Some(libc::EACCES | libc::EROFS | libc::EPERM | libc::ETXTBSY) => {
                Err(OpenProblem::ReadOnly(e.to_string()))
            }
            Some(libc::EINVAL) if direct && open_rw(path, false).is_ok() => {
                Err(OpenProblem::DirectRefused(e.to_string()))
            }
            _ => Err(OpenProblem::Os {
                what: "open",
                source: e,
            }),
        },
    }
}

fn type_name(kind: &fs::FileType) -> &'static str {
    if kind.is_dir() {
        "directory"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Size from the file; physical block and unmap granularity from the
/// filesystem block; a volatile cache (the page cache and the disk's);
/// unmap and write-zeroes as far as the filesystem does them.
fn probe_regular(
    file: &File,
    size: u64,
    fs_block: u64,
    options: &FileOptions,
) -> Result<(Geometry, Topology, Capabilities), OpenProblem> {
    let block_size = options.block_size.unwrap_or(512);
    if size == 0 {
        return Err(OpenProblem::Empty);
    }
    if !size.is_multiple_of(u64::from(block_size)) {
        return Err(OpenProblem::MisalignedSize { size, block_size });
    }
    let geometry = Geometry {
        block_size,
        num_blocks: size / u64::from(block_size),
    };
    let fs_block = u32::try_from(fs_block).unwrap_or(0);
    let physical = if fs_block.is_power_of_two() && fs_block > block_size {
        fs_block.min(block_size << 15)
    } else {
        block_size
    };
    let fd = file.as_raw_fd();
    let keep = libc::FALLOC_FL_KEEP_SIZE;
    // Both probes act past the end of the file, where they change no data:
    // punching a hole there is a no-op; zeroing a range there may allocate
    // blocks beyond EOF, which truncating to the same size frees again.
    let probe_len = i64::from(block_size);
    let unmap = fallocate(fd, libc::FALLOC_FL_PUNCH_HOLE | keep, size, probe_len).is_ok();
    let write_zeroes = fallocate(fd, libc::FALLOC_FL_ZERO_RANGE | keep, size, probe_len).is_ok();
    if write_zeroes {
        file.set_len(size).map_err(|source| OpenProblem::Os {
            what: "truncate after probing FALLOC_FL_ZERO_RANGE",
            source,
        })?;
    }
    Ok((
        geometry,
        Topology {
            physical_block_size: physical,
            unmap_granularity_blocks: physical / block_size,
        },
        Capabilities {
            volatile_cache: true,
            unmap,
            unmap_reads_zeroes: true,
            write_zeroes,
            max_transfer_blocks: 0,
            max_unmap_blocks: 0,
            optimal_boundary_blocks: 0,
        },
    ))
}

/// Size and block sizes from the block layer's ioctls, the cache and the
/// deallocation limits from the queue's sysfs attributes.
fn probe_block_device(
    fd: libc::c_int,
    rdev: u64,
    options: &FileOptions,
) -> Result<(Geometry, Topology, Capabilities), OpenProblem> {
    let os = |what, source| OpenProblem::Os { what, source };
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points
    // to a live u64.
    if unsafe { libc::ioctl(fd, BLKGETSIZE64 as _, &mut size as *mut u64) } != 0 {
        return Err(os("BLKGETSIZE64", io::Error::last_os_error()));
    }
    let logical = ioctl_int(fd, BLKSSZGET).map_err(|e| os("BLKSSZGET", e))? as u32;
    let physical =
        (ioctl_int(fd, BLKPBSZGET).map_err(|e| os("BLKPBSZGET", e))? as u32).max(logical);
    let block_size = match options.block_size {
        None => logical,
        Some(bs) if bs >= logical && bs.is_multiple_of(logical) => bs,
        Some(bs) => {
            return Err(OpenProblem::BlockSizeBelowAlignment {
                block_size: bs,
                align: logical,
            })
        }
    };
    if size == 0 {
        return Err(OpenProblem::Empty);
    }
    if !size.is_multiple_of(u64::from(block_size)) {
        return Err(OpenProblem::MisalignedSize { size, block_size });
    }
    let physical = physical.max(block_size).min(block_size << 15);
    let queue = QueueLimits::read(rdev);
    // Punching a hole in a block device is a write-zeroes that may unmap
    // (blkdev_fallocate: blkdev_issue_zeroout without fallback), so it
    // needs write-zeroes support; deallocated or not, the range reads back
    // zeroes. FALLOC_FL_ZERO_RANGE falls back to writing zero pages.
    let unmap = queue.write_zeroes_max_bytes > 0;
    let granularity = if queue.discard_max_bytes > 0 && queue.discard_granularity > 0 {
        u32::try_from(queue.discard_granularity / u64::from(block_size))
            .unwrap_or(1)
            .max(1)
    } else {
        physical / block_size
    };
    Ok((
        Geometry {
            block_size,
            num_blocks: size / u64::from(block_size),
        },
        Topology {
            physical_block_size: physical,
            unmap_granularity_blocks: granularity,
        },
        Capabilities {
            volatile_cache: queue.write_back,
            unmap,
            unmap_reads_zeroes: true,
            write_zeroes: true,
            max_transfer_blocks: 0,
            max_unmap_blocks: 0,
            optimal_boundary_blocks: 0,
        },
    ))
}

/// What `/sys/dev/block/MAJ:MIN/queue` says about a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QueueLimits {
    /// `write_cache` is "write back" (or unknown: then flushes are sent).
    write_back: bool,
    discard_granularity: u64,
    discard_max_bytes: u64,
    write_zeroes_max_bytes: u64,
}

impl QueueLimits {
    fn read(rdev: u64) -> Self {
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        let dev = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
        Self::read_dir(&dev)
    }

    /// Reads the queue directory of the device at `dev` (a partition's is
    /// its disk's).
    fn read_dir(dev: &Path) -> Self {
        let queue = if dev.join("queue").is_dir() {
            dev.join("queue")
        } else {
            dev.join("../queue")
        };
        let read = |name: &str| fs::read_to_string(queue.join(name)).ok();
        let number = |name: &str| {
            read(name)
                .and_then(|text| text.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Self {
            write_back: read("write_cache").is_none_or(|text| text.trim() != "write through"),
            discard_granularity: number("discard_granularity"),
            discard_max_bytes: number("discard_max_bytes"),
            write_zeroes_max_bytes: number("write_zeroes_max_bytes"),
        }
    }
}

/// O_DIRECT alignment from `statx(STATX_DIOALIGN)` (Linux 6.1+). Without
/// it: the logical block size of a block device for both; for a regular
/// file, page-aligned buffers and 512-byte offsets.
fn direct_alignment(
    fd: libc::c_int,
    block_device: bool,
    logical: u32,
) -> Result<Alignment, OpenProblem> {
    // SAFETY: an all-zero `statx` is a valid value of this plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid NUL-terminated string, `stx` a live statx
    // the kernel fills; AT_EMPTY_PATH makes it describe `fd` itself.
    let rc = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc == 0 && stx.stx_mask & libc::STATX_DIOALIGN != 0 {
        if stx.stx_dio_offset_align == 0 {
            return Err(OpenProblem::DirectRefused(
                "statx reports no direct I/O support".into(),
            ));
        }
        return Ok(Alignment {
            mem: stx.stx_dio_mem_align.max(1),
            offset: stx.stx_dio_offset_align,
        });
    }
    Ok(if block_device {
        Alignment {
            mem: logical,
            offset: logical,
        }
    } else {
        Alignment {
            mem: 4096,
            offset: 512,
        }
    })
}

/// An ioctl that returns an `int` through its argument.
fn ioctl_int(fd: libc::c_int, request: libc::c_ulong) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    // SAFETY: the block ioctls used here write at most one int through the
    // pointer, which points to a live c_int.
    if unsafe { libc::ioctl(fd, request as _, &mut value as *mut libc::c_int) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn fallocate(fd: libc::c_int, mode: libc::c_int, offset: u64, len: i64) -> io::Result<()> {
    // SAFETY: fallocate takes no pointers; a bad fd or range is an error.
    if unsafe { libc::fallocate(fd, mode, offset as libc::off_t, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_limits_from_sysfs_files() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        let part = disk.join("part1");
        fs::create_dir_all(disk.join("queue")).unwrap();
        fs::create_dir_all(&part).unwrap();
        let write =
            |name: &str, text: &str| fs::write(disk.join("queue").join(name), text).unwrap();
        write("write_cache", "write through\n");
        write("discard_granularity", "4096\n");
        write("discard_max_bytes", "2199023255040\n");
        write("write_zeroes_max_bytes", "0\n");
        let expected = QueueLimits {
            write_back: false,
            discard_granularity: 4096,
            discard_max_bytes: 2_199_023_255_040,
            write_zeroes_max_bytes: 0,
        };
        assert_eq!(QueueLimits::read_dir(&disk), expected);
        // A partition has no queue of its own: its disk's counts.
        assert_eq!(QueueLimits::read_dir(&part), expected);
        write("write_cache", "write back\n");
        assert!(QueueLimits::read_dir(&disk).write_back);
        // Nothing readable: assume a volatile cache and no deallocation.
        let none = QueueLimits::read_dir(&dir.path().join("missing"));
        assert!(none.write_back && none.write_zeroes_max_bytes == 0);
    }
}
