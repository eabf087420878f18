//! Opening the device behind an `nvme` bdev and finding out what it is:
//! that it is an NVMe namespace's generic character device, its namespace
//! ID, Identify Controller and Namespace, the kernel's queue limits, and
//! whether passthrough through io_uring works. Control path only.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use io_uring::{opcode, types};
use memmap2::MmapMut;

use super::channel::NvmeRing;
use super::cmd::{self, Data, UringCmd, IDENTIFY_LEN, URING_CMD_IO, URING_CMD_IO_VEC};
use super::identify::{Controller, Namespace};
use super::profile::QueueLimits;
use super::status;
use crate::uring::RingConfig;
use crate::{IoVec, OpenProblem};

/// What the device turned out to be.
#[derive(Debug)]
pub(super) struct Opened {
    pub file: File,
    pub nsid: u32,
    pub controller: Controller,
    pub namespace: Namespace,
    pub queue: QueueLimits,
    /// Where the queue limits were read (or looked for).
    pub queue_dir: PathBuf,
}

/// What sysfs says a character device is.
#[derive(Debug, PartialEq, Eq)]
enum CharKind {
    /// Class `nvme-generic`: a namespace's generic device, by this name.
    NvmeGeneric(String),
    /// Class `nvme`: a controller's device.
    NvmeController(String),
    /// Another class.
    Other(String),
    /// No sysfs entry (sysfs not mounted, say).
    Unknown,
}

/// Opens `path` and reads what the bdev needs to know about it.
pub(super) fn open(path: &Path) -> Result<Opened, OpenProblem> {
    let os = |what, source| OpenProblem::Os { what, source };
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenProblem::NoSuchDevice),
        Err(e) => return Err(os("stat", e)),
    };
    let kind = meta.file_type();
    if !kind.is_char_device() {
        return Err(OpenProblem::NotNvmeGeneric(not_char_device(&kind).into()));
    }
    let rdev = meta.rdev();
    let sys = PathBuf::from(format!(
        "/sys/dev/char/{}:{}",
        libc::major(rdev),
        libc::minor(rdev)
    ));
    let name = match char_kind(&sys) {
        CharKind::NvmeGeneric(name) => name,
        CharKind::NvmeController(name) => {
            return Err(OpenProblem::NotNvmeGeneric(format!(
                "the NVMe controller's character device {name} (give one of its namespaces)"
            )))
        }
        CharKind::Other(class) => {
            return Err(OpenProblem::NotNvmeGeneric(format!(
                "a character device of class {class}"
            )))
        }
        // No sysfs to ask: the name, then NVME_IOCTL_ID, must say it.
        CharKind::Unknown => path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.starts_with("ng"))
            .map(str::to_owned)
            .ok_or_else(|| {
                OpenProblem::NotNvmeGeneric(format!(
                    "a character device that sysfs does not describe ({} is missing) and \
                     not named ngXnY",
                    sys.display()
                ))
            })?,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => {
                OpenProblem::PassthroughDenied(format!("open: {e}"))
            }
            Some(libc::EROFS) => OpenProblem::WriteProtected(e.to_string()),
            Some(libc::ENXIO | libc::ENODEV) => OpenProblem::NoSuchDevice,
            _ => os("open", e),
        })?;
    let fd = file.as_raw_fd();
    let nsid = namespace_id(fd)?;
    let mut page = Box::new(Page([0; IDENTIFY_LEN]));
    identify(fd, cmd::CNS_CONTROLLER, 0, &mut page, "Controller")?;
    let controller = Controller::parse(&page.0);
    page.0.fill(0);
    identify(fd, cmd::CNS_NAMESPACE, nsid, &mut page, "Namespace")?;
    let namespace = Namespace::parse(&page.0);
    // The namespace's block device has the queue the ng device uses:
    // ngXnY and nvmeXnY share X and Y (per controller, or per subsystem
    // for a multipath head).
    let block = format!("nvme{}", name.strip_prefix("ng").unwrap_or(&name));
    let queue_dir = PathBuf::from(format!("/sys/class/block/{block}/queue"));
    let queue = read_queue_limits(&queue_dir);
    Ok(Opened {
        file,
        nsid,
        controller,
        namespace,
        queue,
        queue_dir,
    })
}

fn not_char_device(kind: &fs::FileType) -> &'static str {
    if kind.is_block_device() {
        "a block device (passthrough needs the namespace's generic character device \
         /dev/ngXnY; a block device is served by the `file` bdev)"
    } else if kind.is_file() {
        "a regular file (the `file` bdev serves files)"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// What `/sys/dev/char/MAJ:MIN` (at `sys`) says the device is.
fn char_kind(sys: &Path) -> CharKind {
    let Ok(subsystem) = fs::read_link(sys.join("subsystem")) else {
        return CharKind::Unknown;
    };
    let class = subsystem
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = fs::canonicalize(sys)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    match class.as_str() {
        "nvme-generic" => CharKind::NvmeGeneric(name),
        "nvme" => CharKind::NvmeController(name),
        _ => CharKind::Other(class),
    }
}

/// The queue limits in `dir` (`/sys/class/block/nvmeXnY/queue`), each
/// `None` when unreadable.
fn read_queue_limits(dir: &Path) -> QueueLimits {
    let number = |name: &str| -> Option<u64> {
        fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    };
    QueueLimits {
        max_hw_bytes: number("max_hw_sectors_kb").map(|kb| kb << 10),
        max_segments: number("max_segments").and_then(|n| u32::try_from(n).ok()),
        write_zeroes_max_bytes: number("write_zeroes_max_bytes"),
        io_poll: number("io_poll").map(|n| n != 0),
    }
}

/// A page-aligned Identify buffer (the kernel then maps it straight).
#[repr(C, align(4096))]
struct Page([u8; IDENTIFY_LEN]);

/// `NVME_IOCTL_ID`: the namespace ID of the device.
fn namespace_id(fd: RawFd) -> Result<u32, OpenProblem> {
    // SAFETY: NVME_IOCTL_ID takes no argument and returns the NSID.
    let rc = unsafe { libc::ioctl(fd, cmd::IOCTL_ID) };
    if rc > 0 {
        return Ok(rc as u32);
    }
    let e = io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(libc::ENOTTY | libc::EINVAL) => OpenProblem::NotNvmeGeneric(format!(
            "a character device that does not answer NVME_IOCTL_ID ({e})"
        )),
        _ => OpenProblem::Os {
            what: "NVME_IOCTL_ID",
            source: e,
        },
    })
}

/// Identify with `cns` for `nsid` into `page`, through
/// `NVME_IOCTL_ADMIN_CMD` on the namespace's device.
fn identify(
    fd: RawFd,
    cns: u32,
    nsid: u32,
    page: &mut Page,
    what: &'static str,
) -> Result<(), OpenProblem> {
    let mut command = cmd::identify(cns, nsid, page.0.as_mut_ptr() as u64);
    // SAFETY: the argument is a live `struct nvme_passthru_cmd` (layout
    // checked in cmd.rs) the kernel reads and writes `result` of; its
    // `addr` names `page`, 4096 writable bytes that outlive this
    // synchronous call.
    let rc = unsafe { libc::ioctl(fd, cmd::IOCTL_ADMIN_CMD, &mut command as *mut cmd::AdminCmd) };
    if rc == 0 {
        return Ok(());
    }
    if rc > 0 {
        return Err(OpenProblem::Identify {
            what,
            detail: status::describe(rc),
        });
    }
    let e = io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => {
            OpenProblem::PassthroughDenied(format!("NVME_IOCTL_ADMIN_CMD: {e}"))
        }
        _ => OpenProblem::Identify {
            what,
            detail: e.to_string(),
        },
    })
}

/// Reads block 0 through passthrough (through an IOPOLL ring when
/// `iopoll`), once with one buffer and once as a vectored command.
/// Returns whether the kernel takes vectored commands.
///
/// Errors: io_uring without big SQEs/CQEs, or a file without `uring_cmd`,
/// ([`OpenProblem::NoPassthrough`]); permission
/// ([`OpenProblem::PassthroughDenied`]); the read failed
/// ([`OpenProblem::ProbeFailed`]); no io_uring ([`OpenProblem::NoIoUring`]).
pub(super) fn probe(
    file: &File,
    nsid: u32,
    block_size: u32,
    iopoll: bool,
) -> Result<bool, OpenProblem> {
    let mut ring = NvmeRing::new(RingConfig {
        entries: 2,
        iopoll,
        sqpoll_idle_ms: None,
    })
    .map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) => OpenProblem::NoPassthrough(format!(
            "io_uring refuses 128-byte SQEs and 32-byte CQEs ({e}; Linux 5.19)"
        )),
        _ => OpenProblem::NoIoUring(e),
    })?;
    let mut buffer = MmapMut::map_anon(block_size as usize).map_err(|source| OpenProblem::Os {
        what: "map a probe buffer",
        source,
    })?;
    let fd = file.as_raw_fd();
    let data = Data {
        addr: buffer.as_mut_ptr() as u64,
        len: block_size,
    };
    let res = run(&mut ring, fd, URING_CMD_IO, &cmd::read(nsid, 0, 1, data));
    match res {
        0 => {}
        r if status::is_status(r) => {
            return Err(OpenProblem::ProbeFailed(status::describe(r)));
        }
        r => {
            let detail = format!("NVME_URING_CMD_IO: {}", status::describe(r));
            return Err(match -r {
                libc::EACCES | libc::EPERM => OpenProblem::PassthroughDenied(detail),
                // io_uring without IORING_OP_URING_CMD (EINVAL), a driver
                // without `uring_cmd` (EOPNOTSUPP), or without this command
                // (ENOTTY).
                libc::EINVAL | libc::EOPNOTSUPP | libc::ENOTTY => {
                    OpenProblem::NoPassthrough(detail)
                }
                _ => OpenProblem::ProbeFailed(detail),
            });
        }
    }
    let iov = [IoVec::from_slice(&mut buffer)];
    let list = Data {
        addr: iov.as_ptr() as u64,
        len: 1,
    };
    let vectored = run(
        &mut ring,
        fd,
        URING_CMD_IO_VEC,
        &cmd::read(nsid, 0, 1, list),
    ) == 0;
    // The ring is dropped (waiting for nothing: both commands completed)
    // before `buffer` and `iov`.
    drop(ring);
    Ok(vectored)
}

/// Submits one command and waits for its completion; returns the CQE's
/// `res`.
fn run(ring: &mut NvmeRing, fd: RawFd, cmd_op: u32, command: &UringCmd) -> i32 {
    let sqe = opcode::UringCmd80::new(types::Fd(fd), cmd_op)
        .cmd(command.to_bytes())
        .build()
        .user_data(1);
    // SAFETY: the buffer and iovec the command names are the caller's and
    // outlive this call, which returns only once the CQE is reaped.
    let pushed = unsafe { ring.push(&sqe) };
    debug_assert!(pushed, "an empty ring has room");
    loop {
        ring.publish();
        let mut res = None;
        ring.reap(|cqe| res = Some(cqe.result()));
        if let Some(res) = res {
            return res;
        }
        // The completion comes as task work, run when this thread next
        // enters the kernel: yield to it.
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake `/sys/dev/char/MAJ:MIN` symlink to a device directory of
    /// class `class` named `name`.
    fn fake_char_device(root: &Path, class: &str, name: &str) -> PathBuf {
        let dev = root.join("devices").join(name);
        fs::create_dir_all(&dev).unwrap();
        let class_dir = root.join("class").join(class);
        fs::create_dir_all(&class_dir).unwrap();
        symlink(&class_dir, dev.join("subsystem")).unwrap();
        let link = root.join(format!("char-{name}"));
        symlink(&dev, &link).unwrap();
        link
    }

    #[test]
    fn sysfs_tells_a_generic_device_from_others() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(
            char_kind(&fake_char_device(root, "nvme-generic", "ng0n1")),
            CharKind::NvmeGeneric("ng0n1".into())
        );
        assert_eq!(
            char_kind(&fake_char_device(root, "nvme", "nvme0")),
            CharKind::NvmeController("nvme0".into())
        );
        assert_eq!(
            char_kind(&fake_char_device(root, "mem", "null")),
            CharKind::Other("mem".into())
        );
        assert_eq!(char_kind(&root.join("missing")), CharKind::Unknown);
    }

    #[test]
    fn queue_limits_from_sysfs_files() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        write("max_hw_sectors_kb", "512\n");
        write("max_segments", "127\n");
        write("write_zeroes_max_bytes", "524288\n");
        write("io_poll", "0\n");
        assert_eq!(
            read_queue_limits(dir.path()),
            QueueLimits {
                max_hw_bytes: Some(512 << 10),
                max_segments: Some(127),
                write_zeroes_max_bytes: Some(512 << 10),
                io_poll: Some(false),
            }
        );
        assert_eq!(
            read_queue_limits(&dir.path().join("missing")),
            QueueLimits::default()
        );
    }

    /// On a real namespace: a command the controller fails comes back as
    /// its status in the CQE's `res` (here LBA Out of Range, generic
    /// status 80h), which maps to the SCSI error it should.
    #[test]
    fn a_controller_status_arrives_in_res() {
        use test_support::skip::{can_run, nvme_device, Need};
        if !can_run(&[Need::IoUring, Need::NvmeGeneric]) {
            return;
        }
        let path = nvme_device().unwrap();
        let opened = open(&path).unwrap();
        let block = 1u32 << opened.namespace.format.unwrap().data_shift;
        let mut ring = NvmeRing::new(RingConfig {
            entries: 2,
            iopoll: false,
            sqpoll_idle_ms: None,
        })
        .unwrap();
        let mut buffer = MmapMut::map_anon(block as usize).unwrap();
        let data = Data {
            addr: buffer.as_mut_ptr() as u64,
            len: block,
        };
        let past_the_end = cmd::read(opened.nsid, opened.namespace.nsze, 1, data);
        let fd = opened.file.as_raw_fd();
        let res = run(&mut ring, fd, URING_CMD_IO, &past_the_end);
        assert!(status::is_status(res), "{}", status::describe(res));
        assert_eq!(res & 0x7FF, 0x080, "{}", status::describe(res));
        assert_eq!(
            status::result(crate::IoOp::Read, res),
            Err(crate::IoError::OutOfRange)
        );
        // The NSID must be the namespace's own: the kernel says EINVAL.
        let wrong = cmd::read(opened.nsid + 1, 0, 1, data);
        assert_eq!(run(&mut ring, fd, URING_CMD_IO, &wrong), -libc::EINVAL);
    }

    #[test]
    fn the_system_null_device_is_not_nvme() {
        if !Path::new("/sys/dev/char/1:3").exists() {
            return; // no sysfs here: the bdev test covers the name check
        }
        assert_eq!(
            char_kind(Path::new("/sys/dev/char/1:3")),
            CharKind::Other("mem".into())
        );
    }
}
