//! The `file` bdev on a real file: data read back (straight and bounced),
//! FUA, flush, unmap and write-zeroes, queueing beyond the ring, fixed
//! buffers, open errors, zero allocations per request and at most one
//! `io_uring_enter` per poll.
//!
//! Files live in `/var/tmp` (a disk filesystem: tmpfs may refuse O_DIRECT).
//! Every test needs io_uring and skips, saying so, where the kernel has
//! none.

mod common;

use common::{aligned, run, rw, sgl_of};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bdev::{
    Bdev, BdevChannel, Error, FileBdev, FileOptions, IoError, IoOp, IoRequest, IoVec, OpenProblem,
    SgList,
};
use test_support::alloc::{thread_allocations, CountingAlloc};
use test_support::skip::{can_run, Need};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const MIB: u64 = 1 << 20;

fn io_uring() -> bool {
    can_run(&[Need::IoUring])
}

/// A temporary directory on a disk filesystem.
fn scratch_dir() -> tempfile::TempDir {
    test_support::scratch::disk_dir("file-bdev-")
}

/// A file bdev on a new sparse file of `size` bytes.
fn bdev_in(dir: &Path, size: u64, tune: impl FnOnce(&mut FileOptions)) -> FileBdev {
    let mut options = FileOptions::new(dir.join("disk"));
    options.size = Some(size);
    tune(&mut options);
    FileBdev::open("f0", options).unwrap()
}

/// One single-iovec list per 4 KiB page of `mem`.
fn pages(mem: &mut [u8]) -> Vec<[IoVec; 1]> {
    mem.chunks_mut(4096)
        .map(|page| [IoVec::from_slice(page)])
        .collect()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn geometry_capabilities_and_topology_of_a_new_sparse_file() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let bdev = bdev_in(dir.path(), 8 * MIB, |_| {});
    assert_eq!(
        std::fs::metadata(dir.path().join("disk")).unwrap().len(),
        8 * MIB
    );
    let g = bdev.geometry();
    assert_eq!((g.block_size, g.num_blocks), (512, 8 * MIB / 512));
    let caps = bdev.capabilities();
    assert!(
        caps.volatile_cache,
        "a file has the page cache and the disk's cache"
    );
    assert!(
        caps.unmap && caps.unmap_reads_zeroes && caps.write_zeroes,
        "{caps:?}"
    );
    assert_eq!(caps.max_transfer_blocks, 2048);
    let topology = bdev.topology();
    assert!(topology.is_valid_for(512), "{topology:?}");
    assert!(!bdev.is_block_device());
    // The probes past the end left the size alone.
    assert_eq!(
        std::fs::metadata(dir.path().join("disk")).unwrap().len(),
        8 * MIB
    );
}

#[test]
fn aligned_data_reads_back_straight_from_the_buffers() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let bdev = bdev_in(dir.path(), 16 * MIB, |_| {});
    let mut ch = bdev.open_channel(8).unwrap();
    let mut mem = aligned(3 * 65536);
    // One buffer, then three iovecs cut at 4 KiB multiples.
    let data = pattern(65536, 1);
    mem[..65536].copy_from_slice(&data);
    let one = [IoVec {
        base: mem.as_mut_ptr(),
        len: 65536,
    }];
    rw(ch.as_mut(), IoOp::Write, 1000, 128, &one).unwrap();
    let base = mem.as_mut_ptr();
    // SAFETY: the offsets stay inside the 192 KiB mapping.
    let three = unsafe {
        [
            IoVec {
                base: base.add(65536),
                len: 4096,
            },
            IoVec {
                base: base.add(65536 + 8192),
                len: 57344,
            },
            IoVec {
                base: base.add(2 * 65536),
                len: 4096,
            },
        ]
    };
    rw(ch.as_mut(), IoOp::Read, 1000, 128, &three).unwrap();
    let mut got = Vec::new();
    got.extend_from_slice(&mem[65536..65536 + 4096]);
    got.extend_from_slice(&mem[65536 + 8192..2 * 65536]);
    got.extend_from_slice(&mem[2 * 65536..2 * 65536 + 4096]);
    assert_eq!(got, data);
    // A buffer longer than the transfer: only the transfer moves.
    mem[..8192].fill(0xEE);
    let long = [IoVec {
        base: mem.as_mut_ptr(),
        len: 65536,
    }];
    rw(ch.as_mut(), IoOp::Read, 1000, 8, &long).unwrap();
    assert_eq!(&mem[..4096], &data[..4096]);
    assert!(mem[4096..8192].iter().all(|&b| b == 0xEE));
    assert_eq!(bdev.stats().bounced, 0);
    assert_eq!(bdev.stats().completed, 3);
}

/// A reactor sleeping in epoll with I/O in flight wakes when it completes:
/// the channel's wait descriptor (its ring's fd, registered edge-triggered
/// as the reactor does) signals a completion posted after it was
/// registered. A flush is the case that needs it: io_uring runs fsync in a
/// worker thread, whose completion does not interrupt the submitter's sleep
/// (a read's or write's task work does, with EINTR, which the reactor also
/// takes as "poll again").
#[test]
fn the_wait_descriptor_signals_completions() {
    use nix::errno::Errno;
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    use std::os::fd::BorrowedFd;
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let bdev = bdev_in(dir.path(), 4 * MIB, |_| {});
    let mut ch = bdev.open_channel(4).unwrap();
    let fds = ch.wait_fds();
    assert_eq!(fds.len(), 1, "one ring, one descriptor");
    let mut mem = aligned(4096);
    let buf = [IoVec {
        base: mem.as_mut_ptr(),
        len: 4096,
    }];
    run(
        ch.as_mut(),
        IoRequest::new(IoOp::Write, 0, 8, sgl_of(&buf), 1),
    )
    .unwrap();
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
    // SAFETY: the channel owns the ring's fd and outlives `epoll`'s use.
    let fd = unsafe { BorrowedFd::borrow_raw(fds[0]) };
    epoll
        .add(
            fd,
            EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 7),
        )
        .unwrap();
    ch.submit(IoRequest::new(IoOp::Flush, 0, 0, SgList::EMPTY, 2))
        .unwrap();
    let mut done = Vec::new();
    ch.poll(&mut |c| done.push(c));
    if done.is_empty() {
        let mut events = [EpollEvent::empty(); 1];
        let woken = loop {
            match epoll.wait(&mut events, EpollTimeout::from(5000u16)) {
                Err(Errno::EINTR) => continue,
                other => break other.unwrap(),
            }
        };
        assert_eq!(
            (woken, events[0].data()),
            (1, 7),
            "the flush signals the fd"
        );
    }
    while ch.in_flight() > 0 {
        ch.poll(&mut |c| done.push(c));
    }
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].tag, done[0].result), (2, Ok(())));
}

#[test]
fn misaligned_buffers_go_through_the_bounce_pool() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let bdev = bdev_in(dir.path(), 4 * MIB, |_| {});
    let mut ch = bdev.open_channel(4).unwrap();
    // Off by one byte from any alignment, and split mid-block.
    let mut heap = vec![0u8; 3 * 4096 + 1];
    let data = pattern(3 * 4096, 9);
    heap[1..].copy_from_slice(&data);
    let (a, b) = heap[1..].split_at_mut(1000);
    let iovs = [IoVec::from_slice(a), IoVec::from_slice(b)];
    rw(ch.as_mut(), IoOp::Write, 7, 24, &iovs).unwrap();
    let mut back = vec![0u8; 3 * 4096 + 3];
    let iov = [IoVec::from_slice(&mut back[3..])];
    rw(ch.as_mut(), IoOp::Read, 7, 24, &iov).unwrap();
    assert_eq!(&back[3..], &data[..]);
    // And straight back through an aligned buffer: the bytes are on disk.
    let mut mem = aligned(3 * 4096);
    let iov = [IoVec {
        base: mem.as_mut_ptr(),
        len: 3 * 4096,
    }];
    rw(ch.as_mut(), IoOp::Read, 7, 24, &iov).unwrap();
    assert_eq!(&mem[..], &data[..]);
    assert_eq!(bdev.stats().bounced, 2);
}

#[test]
fn fua_flush_unmap_and_write_zeroes() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let bdev = bdev_in(dir.path(), 4 * MIB, |_| {});
    let mut ch = bdev.open_channel(4).unwrap();
    let mut mem = aligned(65536);
    mem.copy_from_slice(&pattern(65536, 3));
    let iov = [IoVec {
        base: mem.as_mut_ptr(),
        len: 65536,
    }];
    let mut fua = IoRequest::new(IoOp::Write, 0, 128, sgl_of(&iov), 1);
    fua.fua = true;
    run(ch.as_mut(), fua).unwrap();
    rw(ch.as_mut(), IoOp::Write, 128, 128, &iov).unwrap();
    run(
        ch.as_mut(),
        IoRequest::new(IoOp::Flush, 0, 0, SgList::EMPTY, 2),
    )
    .unwrap();
    // Unmap 8 KiB (whole filesystem blocks) and zero 1.5 KiB inside the
    // second copy: both read back zeroes, their neighbours unchanged.
    run(
        ch.as_mut(),
        IoRequest::new(IoOp::Unmap, 16, 16, SgList::EMPTY, 3),
    )
    .unwrap();
    run(
        ch.as_mut(),
        IoRequest::new(IoOp::WriteZeroes, 129, 3, SgList::EMPTY, 4),
    )
    .unwrap();
    let mut back = aligned(2 * 65536);
    let iov = [IoVec {
        base: back.as_mut_ptr(),
        len: 2 * 65536,
    }];
    rw(ch.as_mut(), IoOp::Read, 0, 256, &iov).unwrap();
    let mut expected = [pattern(65536, 3), pattern(65536, 3)].concat();
    expected[16 * 512..32 * 512].fill(0);
    expected[65536 + 512..65536 + 4 * 512].fill(0);
    assert_eq!(&back[..], &expected[..]);
    // The hole is a hole: the file holds less than it did.
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(dir.path().join("disk")).unwrap().blocks() * 512;
    assert!(allocated < 2 * 65536, "allocated {allocated} bytes");
}

#[test]
fn requests_beyond_the_ring_wait_in_the_channel() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let bdev = bdev_in(dir.path(), 4 * MIB, |o| {
        o.queue_depth = 4;
        o.bounce_bytes = 0; // one largest transfer's worth: 16 chunks
    });
    const N: usize = 64;
    let mut ch = bdev.open_channel(N).unwrap();
    let mut mem = aligned(N * 4096);
    for i in 0..N {
        mem[i * 4096..(i + 1) * 4096].fill(i as u8 + 1);
    }
    let iovs = pages(&mut mem);
    for (i, iov) in iovs.iter().enumerate() {
        let request = IoRequest::new(IoOp::Write, i as u64 * 8, 8, sgl_of(iov), i as u64);
        ch.submit(request).unwrap();
    }
    assert!(
        ch.submit(IoRequest::new(IoOp::Flush, 0, 0, SgList::EMPTY, 99))
            .is_err(),
        "full"
    );
    let mut tags = Vec::new();
    while ch.in_flight() > 0 {
        ch.poll(&mut |c| {
            assert_eq!(c.result, Ok(()));
            tags.push(c.tag);
        });
    }
    tags.sort_unstable();
    assert_eq!(tags, (0..N as u64).collect::<Vec<_>>());
    let stats = bdev.stats();
    assert!(stats.waited >= (N - 4) as u64, "{stats:?}");
    // Read everything back through misaligned buffers: more than the
    // pool holds at once, so some wait for bounce chunks too.
    let mut heap = vec![0u8; N * 4096 + 1];
    let (_, body) = heap.split_at_mut(1);
    let iovs: Vec<[IoVec; 1]> = body
        .chunks_mut(4096)
        .map(|c| [IoVec::from_slice(c)])
        .collect();
    for (i, iov) in iovs.iter().enumerate() {
        ch.submit(IoRequest::new(
            IoOp::Read,
            i as u64 * 8,
            8,
            sgl_of(iov),
            i as u64,
        ))
        .unwrap();
    }
    while ch.in_flight() > 0 {
        ch.poll(&mut |c| assert_eq!(c.result, Ok(())));
    }
    for i in 0..N {
        assert!(heap[1 + i * 4096..1 + (i + 1) * 4096]
            .iter()
            .all(|&b| b == i as u8 + 1));
    }
    assert_eq!(bdev.stats().bounced, N as u64);
}

#[test]
fn at_most_one_enter_per_poll_and_one_per_batch() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let bdev = bdev_in(dir.path(), 4 * MIB, |_| {});
    let mut ch = bdev.open_channel(32).unwrap();
    let mut mem = aligned(32 * 4096);
    let iovs = pages(&mut mem);
    // Idle polls make no system call.
    for _ in 0..10 {
        assert_eq!(ch.poll(&mut |_| {}), 0);
    }
    assert_eq!(bdev.stats().submit_syscalls, 0);
    for (i, iov) in iovs.iter().enumerate() {
        ch.submit(IoRequest::new(
            IoOp::Read,
            i as u64 * 8,
            8,
            sgl_of(iov),
            i as u64,
        ))
        .unwrap();
    }
    assert_eq!(
        bdev.stats().submit_syscalls,
        0,
        "submit makes no system call"
    );
    ch.poll(&mut |_| {});
    assert_eq!(bdev.stats().submit_syscalls, 1, "32 SQEs, one enter");
    while ch.in_flight() > 0 {
        ch.poll(&mut |c| assert_eq!(c.result, Ok(())));
    }
    let stats = bdev.stats();
    assert_eq!(
        stats.submit_syscalls, 1,
        "completions are reaped without entering: {stats:?}"
    );
    assert!(stats.submit_syscalls <= stats.polls);
}

#[test]
fn registered_memory_is_used_as_fixed_buffers() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let bdev = bdev_in(dir.path(), 4 * MIB, |_| {});
    let mut ch = bdev.open_channel(4).unwrap();
    let mut region = aligned(1 << 20);
    let whole = [IoVec {
        base: region.as_mut_ptr(),
        len: region.len(),
    }];
    // SAFETY: `region` stays mapped until after the channel is dropped.
    let registered = unsafe { ch.register_memory(&whole) }.unwrap();
    if !registered {
        eprintln!("the kernel refused fixed buffers here; READV/WRITEV were used");
    }
    let data = pattern(8192, 5);
    region[4096..4096 + 8192].copy_from_slice(&data);
    let iov = [IoVec::from_slice(&mut region[4096..4096 + 8192])];
    rw(ch.as_mut(), IoOp::Write, 64, 16, &iov).unwrap();
    region[4096..4096 + 8192].fill(0);
    rw(ch.as_mut(), IoOp::Read, 64, 16, &iov).unwrap();
    assert_eq!(&region[4096..4096 + 8192], &data[..]);
    // A buffer outside the region goes the ordinary way.
    let mut other = aligned(8192);
    let iov = [IoVec {
        base: other.as_mut_ptr(),
        len: 8192,
    }];
    rw(ch.as_mut(), IoOp::Read, 64, 16, &iov).unwrap();
    assert_eq!(&other[..], &data[..]);
    assert_eq!(bdev.stats().fixed, if registered { 2 } else { 0 });
    drop(ch);
}

#[test]
fn memory_the_kernel_will_not_pin_falls_back_to_plain_io() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let bdev = bdev_in(dir.path(), 4 * MIB, |_| {});
    let mut ch = bdev.open_channel(4).unwrap();
    // A shared mapping of a file on a disk filesystem: long-term pinning
    // of such pages is refused (as it may be for a UIO mapping).
    let backing = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("mapped"))
        .unwrap();
    backing.set_len(65536).unwrap();
    // SAFETY: the file is this test's own and nobody else maps or resizes it.
    let mut region = unsafe { memmap2::MmapMut::map_mut(&backing) }.unwrap();
    let whole = [IoVec {
        base: region.as_mut_ptr(),
        len: region.len(),
    }];
    // SAFETY: `region` stays mapped until after the channel is dropped.
    let registered = unsafe { ch.register_memory(&whole) }.unwrap();
    let data = pattern(4096, 11);
    region[..4096].copy_from_slice(&data);
    let iov = [IoVec::from_slice(&mut region[..4096])];
    rw(ch.as_mut(), IoOp::Write, 8, 8, &iov).unwrap();
    region[..4096].fill(0);
    rw(ch.as_mut(), IoOp::Read, 8, 8, &iov).unwrap();
    assert_eq!(&region[..4096], &data[..]);
    let fixed = bdev.stats().fixed;
    if registered {
        eprintln!("this kernel pinned a file-backed mapping");
        assert_eq!(fixed, 2);
    } else {
        assert_eq!(fixed, 0, "refused: plain READ/WRITE");
    }
    drop(ch);
}

#[test]
fn bad_requests_fail_with_the_right_error() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let bdev = bdev_in(dir.path(), MIB, |o| o.max_transfer_bytes = 64 << 10);
    let mut ch = bdev.open_channel(4).unwrap();
    let mut mem = aligned(256 << 10);
    let iov = [IoVec {
        base: mem.as_mut_ptr(),
        len: mem.len(),
    }];
    assert_eq!(
        rw(ch.as_mut(), IoOp::Read, 2047, 2, &iov),
        Err(IoError::OutOfRange)
    );
    assert_eq!(
        rw(ch.as_mut(), IoOp::Read, 0, 256, &iov),
        Err(IoError::TooLarge)
    );
    let short = [IoVec {
        base: mem.as_mut_ptr(),
        len: 512,
    }];
    assert_eq!(
        rw(ch.as_mut(), IoOp::Write, 0, 2, &short),
        Err(IoError::ShortBuffer)
    );
    assert_eq!(rw(ch.as_mut(), IoOp::Read, 0, 0, &[]), Ok(()));
}

#[test]
fn a_full_filesystem_is_no_space() {
    if !io_uring() || !can_run(&[Need::Root]) {
        return;
    }
    // A tiny tmpfs: root can mount one; where even root may not (a
    // container), there is nothing to show.
    let dir = scratch_dir();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        test_support::skip::report(Need::Privilege("mount a tmpfs"));
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let mut options = FileOptions::new(mnt.join("disk"));
    options.size = Some(4 * MIB);
    options.direct = false; // tmpfs before 6.6 has no O_DIRECT
    let bdev = FileBdev::open("full", options).unwrap();
    let mut ch = bdev.open_channel(1).unwrap();
    let mut mem = aligned(65536);
    let iov = [IoVec {
        base: mem.as_mut_ptr(),
        len: 65536,
    }];
    let mut last = Ok(());
    for i in 0..64 {
        last = rw(ch.as_mut(), IoOp::Write, i * 128, 128, &iov);
        if last.is_err() {
            break;
        }
    }
    assert!(
        matches!(last, Err(IoError::NoSpace(libc::ENOSPC))),
        "{last:?}"
    );
}

fn open_error(options: FileOptions) -> OpenProblem {
    match FileBdev::open("bad0", options) {
        Err(Error::Open { name, problem, .. }) => {
            assert_eq!(name, "bad0");
            problem
        }
        other => panic!("expected an open error, got {other:?}"),
    }
}

#[test]
fn open_errors_name_the_bdev_and_the_problem() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let missing = FileOptions::new(dir.path().join("nothing"));
    let problem = open_error(missing.clone());
    assert!(matches!(problem, OpenProblem::Missing), "{problem}");
    let message = FileBdev::open("bad0", missing).unwrap_err().to_string();
    assert!(
        message.starts_with("bdev bad0: ") && message.contains("nothing"),
        "{message}"
    );
    assert!(message.contains("does not exist"), "{message}");

    let problem = open_error(FileOptions::new(dir.path()));
    assert!(
        matches!(problem, OpenProblem::WrongType("directory")),
        "{problem}"
    );
    let problem = open_error(FileOptions::new("/dev/null"));
    assert!(
        matches!(problem, OpenProblem::WrongType("character device")),
        "{problem}"
    );

    let odd = dir.path().join("odd");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    let problem = open_error(FileOptions::new(&odd));
    assert!(
        matches!(
            problem,
            OpenProblem::MisalignedSize {
                size: 1000,
                block_size: 512
            }
        ),
        "{problem}"
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        open_error(FileOptions::new(&empty)),
        OpenProblem::Empty
    ));
    let mut bad_size = FileOptions::new(dir.path().join("new"));
    bad_size.size = Some(1000);
    assert!(matches!(
        open_error(bad_size),
        OpenProblem::MisalignedSize { .. }
    ));
    assert!(
        !dir.path().join("new").exists(),
        "nothing created for a bad size"
    );
    let mut bad_block = FileOptions::new(&odd);
    bad_block.block_size = Some(1000);
    assert!(matches!(
        open_error(bad_block),
        OpenProblem::BadBlockSize(1000)
    ));
}

#[test]
fn a_read_only_file_is_refused_for_what_it_is() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let path = dir.path().join("ro");
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    // Root ignores permission bits: make the file immutable instead.
    let root = Need::Root.met();
    if root {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            test_support::skip::report(Need::Privilege("make a file immutable (chattr +i)"));
            return;
        }
    } else {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    let problem = open_error(FileOptions::new(&path));
    if root {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&path)
            .status();
    }
    assert!(matches!(problem, OpenProblem::ReadOnly(_)), "{problem}");
    assert!(problem.to_string().contains("read-only"), "{problem}");
}

/// Runs `rounds` batches of `bufs.len()` 4 KiB reads and writes.
fn batches(ch: &mut dyn BdevChannel, rounds: u64, bufs: &[[IoVec; 1]]) {
    for round in 0..rounds {
        for (i, iov) in bufs.iter().enumerate() {
            let op = if (round + i as u64).is_multiple_of(2) {
                IoOp::Read
            } else {
                IoOp::Write
            };
            let lba = (round * 97 + i as u64 * 16) % 8000;
            ch.submit(IoRequest::new(op, lba, 8, sgl_of(iov), i as u64))
                .unwrap();
        }
        while ch.in_flight() > 0 {
            ch.poll(&mut |c| assert_eq!(c.result, Ok(())));
        }
    }
}

#[test]
fn no_allocation_per_request_in_steady_state() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let bdev = bdev_in(dir.path(), 4 * MIB, |o| o.queue_depth = 8);
    let mut ch = bdev.open_channel(16).unwrap();
    let mut mem = aligned(16 * 4096);
    let straight = pages(&mut mem);
    let mut heap = vec![0u8; 16 * 4096 + 1];
    let bounced: Vec<[IoVec; 1]> = heap[1..]
        .chunks_mut(4096)
        .map(|c| [IoVec::from_slice(c)])
        .collect();
    for bufs in [&straight, &bounced] {
        batches(ch.as_mut(), 4, bufs);
        let before = thread_allocations();
        batches(ch.as_mut(), 200, bufs);
        assert_eq!(
            thread_allocations() - before,
            0,
            "allocations on the data path"
        );
    }
    let stats = bdev.stats();
    assert!(stats.bounced >= 200 * 16 && stats.waited > 0, "{stats:?}");
}

/// Writes 16 pages, flushes, unmaps the first two pages' blocks and zeroes
/// the next two, and reads everything back.
fn exercise(bdev: &FileBdev) {
    let block = bdev.geometry().block_size as u64;
    let per_page = 4096 / block;
    let mut ch = bdev.open_channel(16).unwrap();
    let mut mem = aligned(16 * 4096);
    for (i, page) in mem.chunks_mut(4096).enumerate() {
        page.fill(i as u8 + 1);
    }
    let blocks = per_page as u32;
    let bufs = pages(&mut mem);
    for (i, iov) in bufs.iter().enumerate() {
        let lba = i as u64 * per_page;
        ch.submit(IoRequest::new(
            IoOp::Write,
            lba,
            blocks,
            sgl_of(iov),
            i as u64,
        ))
        .unwrap();
    }
    while ch.in_flight() > 0 {
        ch.poll(&mut |c| assert_eq!(c.result, Ok(())));
    }
    run(
        ch.as_mut(),
        IoRequest::new(IoOp::Flush, 0, 0, SgList::EMPTY, 100),
    )
    .unwrap();
    let two = 2 * blocks;
    run(
        ch.as_mut(),
        IoRequest::new(IoOp::Unmap, 0, two, SgList::EMPTY, 101),
    )
    .unwrap();
    let zeroes = IoRequest::new(IoOp::WriteZeroes, 2 * per_page, two, SgList::EMPTY, 102);
    run(ch.as_mut(), zeroes).unwrap();
    mem.fill(0xFF);
    let bufs = pages(&mut mem);
    for (i, iov) in bufs.iter().enumerate() {
        let lba = i as u64 * per_page;
        ch.submit(IoRequest::new(
            IoOp::Read,
            lba,
            blocks,
            sgl_of(iov),
            i as u64,
        ))
        .unwrap();
    }
    while ch.in_flight() > 0 {
        ch.poll(&mut |c| assert_eq!(c.result, Ok(())));
    }
    for (i, page) in mem.chunks(4096).enumerate() {
        let expected = if i < 4 { 0 } else { i as u8 + 1 };
        assert!(page.iter().all(|&b| b == expected), "page {i}");
    }
}

/// With SQPOLL the kernel's thread picks SQEs up by itself and the channel
/// enters only to wake it. How often it sleeps depends on scheduling (a
/// loaded machine may keep it off the CPU past its idle time), so what is
/// asserted is what always holds: the data, and at most one enter per poll;
/// the enters per I/O are printed.
#[test]
fn sqpoll_serves_requests_with_at_most_one_enter_per_poll() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let bdev = bdev_in(dir.path(), 4 * MIB, |o| o.sqpoll = true);
    exercise(&bdev);
    let stats = bdev.stats();
    assert!(stats.submit_syscalls <= stats.polls, "{stats:?}");
    eprintln!(
        "sqpoll: {} enters for {} requests",
        stats.submit_syscalls, stats.completed
    );
}

#[test]
fn iopoll_is_for_block_devices() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let mut options = FileOptions::new(dir.path().join("disk"));
    options.size = Some(MIB);
    options.iopoll = true;
    let problem = open_error(options);
    assert!(
        matches!(problem, OpenProblem::IopollRefused(_)),
        "{problem}"
    );
}

/// A loop device over a new sparse file, detached on drop.
struct LoopDevice {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopDevice {
    fn new(size: u64, read_only: bool) -> Option<Self> {
        let dir = scratch_dir();
        let backing = dir.path().join("backing");
        std::fs::File::create(&backing)
            .unwrap()
            .set_len(size)
            .unwrap();
        let mut losetup = std::process::Command::new("losetup");
        if read_only {
            losetup.arg("-r");
        }
        let out = losetup.args(["-f", "--show"]).arg(&backing).output().ok()?;
        if !out.status.success() {
            eprintln!("losetup failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        Some(Self { path, _dir: dir })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.path)
            .status();
    }
}

fn loop_device(size: u64, read_only: bool) -> Option<LoopDevice> {
    if !io_uring() || !can_run(&[Need::Root, Need::Tool("losetup")]) {
        return None;
    }
    let device = LoopDevice::new(size, read_only);
    if device.is_none() {
        test_support::skip::report(Need::Privilege("set up a loop device"));
    }
    device
}

#[test]
fn a_block_device_reports_what_the_kernel_says_and_keeps_data() {
    let Some(device) = loop_device(16 * MIB, false) else {
        return;
    };
    let bdev = FileBdev::open("blk", FileOptions::new(&device.path)).unwrap();
    assert!(bdev.is_block_device());
    let sys = |name: &str| {
        let dev = device
            .path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        std::fs::read_to_string(format!("/sys/block/{dev}/queue/{name}"))
            .unwrap()
            .trim()
            .to_string()
    };
    let logical: u32 = sys("logical_block_size").parse().unwrap();
    let g = bdev.geometry();
    assert_eq!(
        (g.block_size, g.num_blocks),
        (logical, 16 * MIB / u64::from(logical))
    );
    let caps = bdev.capabilities();
    assert_eq!(caps.volatile_cache, sys("write_cache") == "write back");
    let write_zeroes_max: u64 = sys("write_zeroes_max_bytes").parse().unwrap();
    assert_eq!(caps.unmap, write_zeroes_max > 0);
    assert!(caps.unmap_reads_zeroes && caps.write_zeroes);
    let physical: u32 = sys("physical_block_size").parse().unwrap();
    assert_eq!(bdev.topology().physical_block_size, physical.max(logical));
    let discard: u64 = sys("discard_granularity").parse().unwrap();
    if caps.unmap && discard > 0 {
        assert_eq!(
            u64::from(bdev.topology().unmap_granularity_blocks),
            discard / u64::from(logical)
        );
    }
    if caps.unmap {
        exercise(&bdev);
    }
    drop(bdev);
    // A larger block than the device's, and a smaller one refused.
    let mut options = FileOptions::new(&device.path);
    options.block_size = Some(4096);
    let big = FileBdev::open("blk", options.clone()).unwrap();
    assert_eq!(big.geometry().num_blocks, 16 * MIB / 4096);
    if logical > 512 {
        options.block_size = Some(512);
        assert!(matches!(
            open_error(options),
            OpenProblem::BlockSizeBelowAlignment { .. }
        ));
    }
}

#[test]
fn iopoll_on_a_block_device_polls_or_says_why_not() {
    let Some(device) = loop_device(4 * MIB, false) else {
        return;
    };
    let mut options = FileOptions::new(&device.path);
    options.iopoll = true;
    match FileBdev::open("blk", options) {
        Ok(bdev) => {
            if bdev.capabilities().unmap {
                exercise(&bdev);
            }
            let stats = bdev.stats();
            assert!(stats.submit_syscalls <= 2 * stats.polls, "{stats:?}");
        }
        Err(Error::Open {
            problem: OpenProblem::IopollRefused(why),
            ..
        }) => eprintln!("this kernel does not poll a loop device: {why}"),
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn a_read_only_block_device_is_refused() {
    let Some(device) = loop_device(MIB, true) else {
        return;
    };
    let problem = open_error(FileOptions::new(&device.path));
    assert!(matches!(problem, OpenProblem::ReadOnly(_)), "{problem}");
}

#[test]
fn buffered_io_without_o_direct_takes_any_buffer() {
    if !io_uring() {
        return;
    }
    let dir = scratch_dir();
    let bdev = bdev_in(dir.path(), MIB, |o| o.direct = false);
    assert_eq!((bdev.alignment().mem, bdev.alignment().offset), (1, 1));
    let mut ch = bdev.open_channel(2).unwrap();
    let mut heap = vec![0u8; 1025];
    heap[1..].copy_from_slice(&pattern(1024, 8));
    let iov = [IoVec::from_slice(&mut heap[1..])];
    rw(ch.as_mut(), IoOp::Write, 3, 2, &iov).unwrap();
    let mut back = vec![0u8; 1024];
    let iov = [IoVec::from_slice(&mut back)];
    rw(ch.as_mut(), IoOp::Read, 3, 2, &iov).unwrap();
    assert_eq!(back, pattern(1024, 8));
    assert_eq!(bdev.stats().bounced, 0);
}
