//! The `nvme` bdev on a real NVMe namespace: what Identify gave against
//! what the kernel reports for the same namespace, data read back (one
//! buffer, vectored, bounced, split at the command limit), FUA, flush,
//! unmap and write zeroes, queueing beyond the ring, fixed buffers, bad
//! requests, zero allocations per request and at most one
//! `io_uring_enter` per poll. And, on any machine, the open errors.
//!
//! The device tests need an NVMe namespace's generic character device that
//! they may overwrite, named by `DATAPLANE_TEST_NVME` (e.g. `/dev/ng0n1`),
//! of at least 128 MiB, and the right to pass commands through (root on
//! Linux before 6.2). CI's host has no NVMe: they skip there, saying so,
//! and run in the VM test on its emulated drive. Each test works in its
//! own 8 MiB region of the namespace, so they may run in parallel.
//!
//! How the VM runs them: the host builds this binary (`cargo test -p bdev
//! --test nvme --no-run`; the path is the `executable` of its artifact in
//! `--message-format=json`), and the guest, with the `nvme` module loaded
//! and root, runs it through the host's loader as it runs other host
//! programs: `DATAPLANE_TEST_NVME=/dev/ng0n1 "$LD" --library-path "$LIBPATH"
//! /host<executable>`. The unit tests of `bdev::nvme` that need a device
//! (`nvme::open::tests`) run the same way from the crate's unit-test
//! binary, filtered with `nvme::`. The drive needs `discard=unmap` on its
//! QEMU `-drive` for deallocated blocks to read back zeroes, and the nvme
//! module `poll_queues=1` for the IOPOLL test to poll (without, it says
//! why not and passes).

mod common;

use common::{aligned, run, rw, sgl_of};
use std::path::{Path, PathBuf};

use bdev::{
    Bdev, BdevChannel, Error, IoError, IoOp, IoRequest, IoVec, NvmeBdev, NvmeOptions, OpenProblem,
    SgList, UnmapMode,
};
use test_support::alloc::{thread_allocations, CountingAlloc};
use test_support::skip::{can_run, nvme_device, Need};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const MIB: u64 = 1 << 20;
/// Bytes of namespace each test may use.
const REGION: u64 = 8 * MIB;

/// The device under test, when there is one.
fn device() -> Option<PathBuf> {
    if !can_run(&[Need::IoUring, Need::NvmeGeneric]) {
        return None;
    }
    nvme_device()
}

fn open_with(path: &Path, tune: impl FnOnce(&mut NvmeOptions)) -> NvmeBdev {
    let mut options = NvmeOptions::new(path);
    tune(&mut options);
    NvmeBdev::open("nvme0", options).unwrap_or_else(|e| panic!("{e}"))
}

/// The first block of test region `k`.
fn region(bdev: &NvmeBdev, k: u64) -> u64 {
    let lba = k * REGION / u64::from(bdev.geometry().block_size);
    assert!(
        lba + REGION / u64::from(bdev.geometry().block_size) <= bdev.geometry().num_blocks,
        "the namespace is too small for region {k}: give at least 128 MiB"
    );
    lba
}

/// Blocks in `bytes`.
fn blocks(bdev: &NvmeBdev, bytes: usize) -> u32 {
    (bytes / bdev.geometry().block_size as usize) as u32
}

fn one(mem: &mut [u8]) -> [IoVec; 1] {
    [IoVec::from_slice(mem)]
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 12) as u8)
        .collect()
}

fn open_error(options: NvmeOptions) -> OpenProblem {
    match NvmeBdev::open("bad0", options) {
        Err(Error::Open { problem, .. }) => problem,
        other => panic!("expected an open error, got {other:?}"),
    }
}

#[test]
fn open_errors_name_the_bdev_and_the_problem() {
    if !can_run(&[Need::IoUring]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = NvmeOptions::new(dir.path().join("ng9n9"));
    assert!(matches!(
        open_error(missing.clone()),
        OpenProblem::NoSuchDevice
    ));
    let message = NvmeBdev::open("bad0", missing).unwrap_err().to_string();
    assert!(
        message.starts_with("bdev bad0: ")
            && message.contains("ng9n9")
            && message.contains("/dev/ngXnY"),
        "{message}"
    );

    let file = dir.path().join("disk");
    std::fs::write(&file, vec![0u8; 4096]).unwrap();
    let problem = open_error(NvmeOptions::new(&file));
    assert!(
        matches!(&problem, OpenProblem::NotNvmeGeneric(what) if what.contains("regular file")),
        "{problem}"
    );
    let problem = open_error(NvmeOptions::new(dir.path()));
    assert!(
        matches!(&problem, OpenProblem::NotNvmeGeneric(what) if what.contains("directory")),
        "{problem}"
    );
    // A character device that is not NVMe: sysfs gives its class, or
    // without sysfs its name is not ngXnY.
    let problem = open_error(NvmeOptions::new("/dev/null"));
    assert!(
        matches!(&problem, OpenProblem::NotNvmeGeneric(what) if what.contains("character device")),
        "{problem}"
    );
    assert!(
        problem
            .to_string()
            .contains("not an NVMe namespace's generic character device"),
        "{problem}"
    );

    let mut bad_depth = NvmeOptions::new("/dev/null");
    bad_depth.queue_depth = 0;
    assert!(matches!(
        NvmeBdev::open("bad0", bad_depth),
        Err(Error::InvalidParameter(_))
    ));
}

#[test]
fn a_block_device_is_not_a_generic_device() {
    if !can_run(&[Need::IoUring, Need::Root, Need::Tool("losetup")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(MIB)
        .unwrap();
    let out = std::process::Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    if !out.status.success() {
        test_support::skip::report(Need::Privilege("set up a loop device"));
        return;
    }
    let loop_device = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let problem = open_error(NvmeOptions::new(&loop_device));
    let _ = std::process::Command::new("losetup")
        .arg("-d")
        .arg(&loop_device)
        .status();
    assert!(
        matches!(&problem, OpenProblem::NotNvmeGeneric(what)
            if what.contains("block device") && what.contains("`file` bdev")),
        "{problem}"
    );
}

/// Reads a sysfs attribute of the namespace's block device.
fn block_attribute(path: &Path, attribute: &str) -> Option<String> {
    let name = path.file_name()?.to_str()?.strip_prefix("ng")?;
    std::fs::read_to_string(format!("/sys/class/block/nvme{name}/{attribute}"))
        .ok()
        .map(|s| s.trim().to_string())
}

#[test]
fn identify_agrees_with_the_kernels_view_of_the_namespace() {
    let Some(path) = device() else {
        return;
    };
    let bdev = open_with(&path, |_| {});
    let id = bdev.identity();
    eprintln!("{}: {id:?}", path.display());
    eprintln!(
        "geometry {:?}, capabilities {:?}, topology {:?}",
        bdev.geometry(),
        bdev.capabilities(),
        bdev.topology()
    );
    let g = bdev.geometry();
    if let Some(logical) = block_attribute(&path, "queue/logical_block_size") {
        assert_eq!(g.block_size.to_string(), logical);
    }
    if let Some(sectors) = block_attribute(&path, "size") {
        let sectors: u64 = sectors.parse().unwrap();
        assert_eq!(g.size_bytes(), sectors * 512);
    }
    let caps = bdev.capabilities();
    if let Some(cache) = block_attribute(&path, "queue/write_cache") {
        assert_eq!(caps.volatile_cache, cache == "write back");
    }
    if let Some(kb) = block_attribute(&path, "queue/max_hw_sectors_kb") {
        let kb: u64 = kb.parse().unwrap();
        assert!(id.command_bytes <= kb << 10, "{id:?}");
    }
    assert_eq!(
        caps.max_transfer_blocks,
        blocks(&bdev, MIB as usize),
        "the default 1 MiB"
    );
    assert!(bdev.topology().is_valid_for(g.block_size));
    assert!(id.nsid >= 1);
}

#[test]
fn data_reads_back_straight_vectored_and_bounced() {
    let Some(path) = device() else {
        return;
    };
    let bdev = open_with(&path, |_| {});
    let base = region(&bdev, 0);
    let mut ch = bdev.open_channel(8).unwrap();
    // One buffer.
    let mut mem = aligned(64 << 10);
    let data = pattern(64 << 10, 1);
    mem.copy_from_slice(&data);
    let n = blocks(&bdev, 64 << 10);
    rw(ch.as_mut(), IoOp::Write, base, n, &one(&mut mem)).unwrap();
    mem.fill(0);
    rw(ch.as_mut(), IoOp::Read, base, n, &one(&mut mem)).unwrap();
    assert_eq!(&mem[..], &data[..]);
    // Pages apart, joined at page boundaries: one vectored command.
    let mut pages = aligned(3 * (64 << 10));
    let (a, rest) = pages.split_at_mut(64 << 10);
    let (b, c) = rest.split_at_mut(64 << 10);
    let three = [
        IoVec::from_slice(&mut a[4096..8192]),
        IoVec::from_slice(&mut b[..(56 << 10)]),
        IoVec::from_slice(&mut c[..4096]),
    ];
    rw(ch.as_mut(), IoOp::Read, base, n, &three).unwrap();
    let mut got = a[4096..8192].to_vec();
    got.extend_from_slice(&b[..(56 << 10)]);
    got.extend_from_slice(&c[..4096]);
    assert_eq!(got, data);
    // Misaligned by a byte, and cut mid-block: bounced.
    let mut heap = vec![0u8; (64 << 10) + 1];
    let other = pattern(64 << 10, 2);
    heap[1..].copy_from_slice(&other);
    let (x, y) = heap[1..].split_at_mut(1000);
    let odd = [IoVec::from_slice(x), IoVec::from_slice(y)];
    rw(ch.as_mut(), IoOp::Write, base + u64::from(n), n, &odd).unwrap();
    mem.fill(0);
    rw(
        ch.as_mut(),
        IoOp::Read,
        base + u64::from(n),
        n,
        &one(&mut mem),
    )
    .unwrap();
    assert_eq!(&mem[..], &other[..]);
    // Without vectored passthrough (Linux 5.19, 6.0) the three iovecs
    // are bounced too.
    let vectored = bdev.identity().vectored;
    let stats = bdev.stats();
    assert_eq!(stats.bounced, 1 + u64::from(!vectored), "{stats:?}");
    assert_eq!(stats.vectored, u64::from(vectored), "{stats:?}");
    assert_eq!(stats.completed, 5);
    assert_eq!(stats.status_errors, 0);
}

#[test]
fn a_transfer_larger_than_a_command_is_split() {
    let Some(path) = device() else {
        return;
    };
    let bdev = open_with(&path, |o| o.max_transfer_bytes = 4 << 20);
    let base = region(&bdev, 1);
    let command = bdev.identity().command_bytes as usize;
    let len = 4 << 20;
    let n = blocks(&bdev, len);
    let mut ch = bdev.open_channel(4).unwrap();
    let data = pattern(len, 3);
    // Written from one 4 KiB iovec per page, read into one buffer.
    let mut mem = aligned(len);
    mem.copy_from_slice(&data);
    let iovs: Vec<IoVec> = mem.chunks_mut(4096).map(IoVec::from_slice).collect();
    rw(ch.as_mut(), IoOp::Write, base, n, &iovs).unwrap();
    let mut back = aligned(len);
    rw(ch.as_mut(), IoOp::Read, base, n, &one(&mut back)).unwrap();
    assert_eq!(&back[..], &data[..]);
    let stats = bdev.stats();
    let pieces = len.div_ceil(command) as u64;
    assert_eq!(stats.commands, 2 * pieces, "{stats:?}");
    assert_eq!(stats.split, if pieces > 1 { 2 } else { 0 });
}

#[test]
fn fua_writes_and_flush() {
    let Some(path) = device() else {
        return;
    };
    let bdev = open_with(&path, |_| {});
    let base = region(&bdev, 2);
    let mut ch = bdev.open_channel(4).unwrap();
    let mut mem = aligned(16 << 10);
    let data = pattern(16 << 10, 4);
    mem.copy_from_slice(&data);
    let n = blocks(&bdev, 16 << 10);
    let iov = one(&mut mem);
    let mut fua = IoRequest::new(IoOp::Write, base, n, sgl_of(&iov), 1);
    fua.fua = true;
    run(ch.as_mut(), fua).unwrap();
    run(
        ch.as_mut(),
        IoRequest::new(IoOp::Flush, 0, 0, SgList::EMPTY, 2),
    )
    .unwrap();
    let mut back = aligned(16 << 10);
    rw(ch.as_mut(), IoOp::Read, base, n, &one(&mut back)).unwrap();
    assert_eq!(&back[..], &data[..]);
    // A flush without a volatile cache completes without a command.
    let expected = if bdev.capabilities().volatile_cache {
        3
    } else {
        2
    };
    assert_eq!(bdev.stats().commands, expected);
}

/// Writes a pattern over 256 KiB at `lba`, runs `op` over `range` blocks
/// from `lba + skip`, and checks that exactly that range reads back zeroes.
fn zeroes_after(
    bdev: &NvmeBdev,
    ch: &mut dyn BdevChannel,
    op: IoOp,
    lba: u64,
    skip: u32,
    range: u32,
) {
    let bs = bdev.geometry().block_size as usize;
    let len = 256 << 10;
    let n = blocks(bdev, len);
    let mut mem = aligned(len);
    let data = pattern(len, 5);
    mem.copy_from_slice(&data);
    rw(ch, IoOp::Write, lba, n, &one(&mut mem)).unwrap();
    run(
        ch,
        IoRequest::new(op, lba + u64::from(skip), range, SgList::EMPTY, 9),
    )
    .unwrap();
    mem.fill(0xEE);
    rw(ch, IoOp::Read, lba, n, &one(&mut mem)).unwrap();
    let mut expected = data;
    let from = skip as usize * bs;
    expected[from..from + range as usize * bs].fill(0);
    assert!(
        mem[..] == expected[..],
        "{op:?} of {range} blocks at +{skip} did not read back zeroes (an emulated \
         drive deallocates only when its backing discards: QEMU's -drive discard=unmap)"
    );
}

#[test]
fn unmap_and_write_zeroes_read_back_zeroes() {
    let Some(path) = device() else {
        return;
    };
    let bdev = open_with(&path, |_| {});
    let base = region(&bdev, 3);
    let caps = bdev.capabilities();
    let granularity = bdev.topology().unmap_granularity_blocks;
    let mut ch = bdev.open_channel(4).unwrap();
    if caps.write_zeroes {
        zeroes_after(&bdev, ch.as_mut(), IoOp::WriteZeroes, base, 3, 5);
    }
    if caps.unmap && caps.unmap_reads_zeroes {
        zeroes_after(&bdev, ch.as_mut(), IoOp::Unmap, base, 7, 9);
    } else if caps.unmap && bdev.identity().deallocated_reads_zeroes {
        // Dataset Management: deallocated blocks read zeroes (DLFEAT), but
        // the controller may skip a deallocation; over whole preferred
        // granules the emulated drive does it.
        zeroes_after(
            &bdev,
            ch.as_mut(),
            IoOp::Unmap,
            base,
            granularity,
            2 * granularity,
        );
    } else if caps.unmap {
        run(
            ch.as_mut(),
            IoRequest::new(IoOp::Unmap, base, granularity, SgList::EMPTY, 1),
        )
        .unwrap();
    }
    drop(ch);
    // Forced to Write Zeroes, an unmap always reads back zeroes.
    if caps.write_zeroes {
        let bdev = open_with(&path, |o| o.unmap = UnmapMode::WriteZeroes);
        let caps = bdev.capabilities();
        assert!(caps.unmap && caps.unmap_reads_zeroes);
        let mut ch = bdev.open_channel(4).unwrap();
        zeroes_after(&bdev, ch.as_mut(), IoOp::Unmap, base, 1, 17);
    }
    // Forced to Dataset Management, LBPRZ is not claimed.
    let bdev = open_with(&path, |o| o.unmap = UnmapMode::Deallocate);
    assert!(!bdev.capabilities().unmap_reads_zeroes);
}

#[test]
fn requests_beyond_the_ring_wait_in_the_channel() {
    let Some(path) = device() else {
        return;
    };
    let bdev = open_with(&path, |o| {
        o.queue_depth = 4;
        o.bounce_bytes = 0; // as few buffers as the largest request needs
    });
    let base = region(&bdev, 4);
    const N: usize = 64;
    let per = blocks(&bdev, 4096);
    let mut ch = bdev.open_channel(N).unwrap();
    let mut mem = aligned(N * 4096);
    for (i, page) in mem.chunks_mut(4096).enumerate() {
        page.fill(i as u8 + 1);
    }
    let iovs: Vec<[IoVec; 1]> = mem
        .chunks_mut(4096)
        .map(|p| [IoVec::from_slice(p)])
        .collect();
    for (i, iov) in iovs.iter().enumerate() {
        let lba = base + i as u64 * u64::from(per);
        ch.submit(IoRequest::new(IoOp::Write, lba, per, sgl_of(iov), i as u64))
            .unwrap();
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
    assert!(bdev.stats().waited >= (N - 4) as u64);
    // Back through misaligned buffers: more than the pool holds at once.
    let mut heap = vec![0u8; N * 4096 + 1];
    let odd: Vec<[IoVec; 1]> = heap[1..]
        .chunks_mut(4096)
        .map(|c| [IoVec::from_slice(c)])
        .collect();
    for (i, iov) in odd.iter().enumerate() {
        let lba = base + i as u64 * u64::from(per);
        ch.submit(IoRequest::new(IoOp::Read, lba, per, sgl_of(iov), i as u64))
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
    let Some(path) = device() else {
        return;
    };
    let bdev = open_with(&path, |_| {});
    let base = region(&bdev, 5);
    let per = blocks(&bdev, 4096);
    let mut ch = bdev.open_channel(32).unwrap();
    let mut mem = aligned(32 * 4096);
    let iovs: Vec<[IoVec; 1]> = mem
        .chunks_mut(4096)
        .map(|p| [IoVec::from_slice(p)])
        .collect();
    for _ in 0..10 {
        assert_eq!(ch.poll(&mut |_| {}), 0);
    }
    assert_eq!(bdev.stats().submit_syscalls, 0, "idle polls enter nothing");
    for (i, iov) in iovs.iter().enumerate() {
        let lba = base + i as u64 * u64::from(per);
        ch.submit(IoRequest::new(IoOp::Read, lba, per, sgl_of(iov), i as u64))
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
        "reaped without entering: {stats:?}"
    );
    assert!(stats.submit_syscalls <= stats.polls);
}

/// Runs `rounds` batches: 4 KiB reads and writes through `bufs`, and an
/// unmap, a write-zeroes and a flush when the bdev does them.
fn batches(bdev: &NvmeBdev, ch: &mut dyn BdevChannel, base: u64, rounds: u64, bufs: &[Vec<IoVec>]) {
    let caps = bdev.capabilities();
    let per = blocks(bdev, 4096);
    for round in 0..rounds {
        for (i, iov) in bufs.iter().enumerate() {
            let write = (round + i as u64).is_multiple_of(2);
            let op = if write { IoOp::Write } else { IoOp::Read };
            let lba = base + ((round * 7 + i as u64) % 1024) * u64::from(per);
            let len = iov.iter().map(|v| v.len).sum::<usize>() as u32;
            let n = len / bdev.geometry().block_size;
            ch.submit(IoRequest::new(op, lba, n, sgl_of(iov), i as u64))
                .unwrap();
        }
        let extra = [
            (IoOp::Unmap, caps.unmap),
            (IoOp::WriteZeroes, caps.write_zeroes),
            (IoOp::Flush, true),
        ];
        for (k, (op, supported)) in extra.into_iter().enumerate() {
            if supported {
                let lba = base + 1536 * u64::from(per) + k as u64 * u64::from(per);
                ch.submit(IoRequest::new(op, lba, per, SgList::EMPTY, 100 + k as u64))
                    .unwrap();
            }
        }
        while ch.in_flight() > 0 {
            ch.poll(&mut |c| assert_eq!(c.result, Ok(()), "tag {}", c.tag));
        }
    }
}

#[test]
fn no_allocation_per_request_in_steady_state() {
    let Some(path) = device() else {
        return;
    };
    let bdev = open_with(&path, |o| {
        o.queue_depth = 8;
        o.max_transfer_bytes = 4 << 20;
    });
    let base = region(&bdev, 6);
    let mut ch = bdev.open_channel(20).unwrap();
    let mut mem = aligned(16 * 4096);
    let mut heap = vec![0u8; 16 * 4096 + 1];
    let mut big = aligned(4 << 20);
    let straight: Vec<Vec<IoVec>> = mem
        .chunks_mut(4096)
        .map(|p| vec![IoVec::from_slice(p)])
        .collect();
    let bounced: Vec<Vec<IoVec>> = heap[1..]
        .chunks_mut(4096)
        .map(|c| vec![IoVec::from_slice(c)])
        .collect();
    // Split: two requests of 2 MiB, each larger than a command.
    let split: Vec<Vec<IoVec>> = big
        .chunks_mut(2 << 20)
        .map(|half| half.chunks_mut(4096).map(IoVec::from_slice).collect())
        .collect();
    for bufs in [&straight, &bounced, &split] {
        batches(&bdev, ch.as_mut(), base, 4, bufs);
        let before = thread_allocations();
        batches(&bdev, ch.as_mut(), base, 100, bufs);
        assert_eq!(
            thread_allocations() - before,
            0,
            "allocations on the data path"
        );
    }
    let stats = bdev.stats();
    assert!(stats.bounced >= 100 * 16 && stats.waited > 0, "{stats:?}");
    assert_eq!(stats.status_errors, 0);
}

#[test]
fn registered_memory_is_used_as_fixed_buffers() {
    let Some(path) = device() else {
        return;
    };
    let bdev = open_with(&path, |_| {});
    let base = region(&bdev, 7);
    let mut ch = bdev.open_channel(4).unwrap();
    // Larger than the queue's segments, as a TCMU data area is: Linux 6.1
    // refuses a fixed-buffer command whose registered buffer has more
    // pages after it than the queue has segments, so the bdev registers
    // it in pieces.
    let mut region_mem = aligned(4 << 20);
    let whole = [IoVec {
        base: region_mem.as_mut_ptr(),
        len: region_mem.len(),
    }];
    // SAFETY: `region_mem` stays mapped until after the channel is dropped.
    let registered = unsafe { ch.register_memory(&whole) }.unwrap();
    let n = blocks(&bdev, 8192);
    for (k, at) in [4096usize, (2 << 20) + 4096, (4 << 20) - 8192]
        .into_iter()
        .enumerate()
    {
        let data = pattern(8192, 6 + k as u8);
        region_mem[at..at + 8192].copy_from_slice(&data);
        let lba = base + k as u64 * u64::from(n);
        let iov = one(&mut region_mem[at..at + 8192]);
        rw(ch.as_mut(), IoOp::Write, lba, n, &iov).unwrap();
        region_mem[at..at + 8192].fill(0);
        rw(ch.as_mut(), IoOp::Read, lba, n, &iov).unwrap();
        assert_eq!(&region_mem[at..at + 8192], &data[..], "at {at}");
    }
    assert_eq!(bdev.stats().fixed, if registered { 6 } else { 0 });
    // A buffer across two pieces goes without a fixed buffer.
    let piece = bdev.identity().command_bytes as usize;
    let mut straddles = 0;
    for at in (0..(4 << 20) - 8192).step_by(4096) {
        let fixed_before = bdev.stats().fixed;
        let iov = one(&mut region_mem[at..at + 8192]);
        rw(ch.as_mut(), IoOp::Read, base, n, &iov).unwrap();
        straddles += u64::from(bdev.stats().fixed == fixed_before);
        if at > 2 * piece {
            break;
        }
    }
    if registered {
        assert!(straddles >= 1, "some 8 KiB buffer straddles two pieces");
    }
    drop(ch);
}

#[test]
fn bad_requests_fail_with_the_right_error() {
    let Some(path) = device() else {
        return;
    };
    let bdev = open_with(&path, |o| o.max_transfer_bytes = 64 << 10);
    let mut ch = bdev.open_channel(4).unwrap();
    let last = bdev.geometry().num_blocks - 1;
    let mut mem = aligned(256 << 10);
    let iov = one(&mut mem);
    assert_eq!(
        rw(ch.as_mut(), IoOp::Read, last, 2, &iov),
        Err(IoError::OutOfRange)
    );
    let too_many = blocks(&bdev, 128 << 10);
    assert_eq!(
        rw(ch.as_mut(), IoOp::Read, 0, too_many, &iov),
        Err(IoError::TooLarge)
    );
    let short = [IoVec {
        base: mem.as_mut_ptr(),
        len: 16,
    }];
    assert_eq!(
        rw(ch.as_mut(), IoOp::Write, 0, 1, &short),
        Err(IoError::ShortBuffer)
    );
    assert_eq!(rw(ch.as_mut(), IoOp::Read, 0, 0, &[]), Ok(()));
    assert_eq!(bdev.stats().commands, 0, "none reached the device");
}

#[test]
fn iopoll_polls_or_says_why_not() {
    let Some(path) = device() else {
        return;
    };
    let mut options = NvmeOptions::new(&path);
    options.iopoll = true;
    match NvmeBdev::open("nvme0", options) {
        Ok(bdev) => {
            let base = region(&bdev, 8);
            let mut ch = bdev.open_channel(4).unwrap();
            let mut mem = aligned(8192);
            let data = pattern(8192, 7);
            mem.copy_from_slice(&data);
            let n = blocks(&bdev, 8192);
            rw(ch.as_mut(), IoOp::Write, base, n, &one(&mut mem)).unwrap();
            run(
                ch.as_mut(),
                IoRequest::new(IoOp::Flush, 0, 0, SgList::EMPTY, 1),
            )
            .unwrap();
            mem.fill(0);
            rw(ch.as_mut(), IoOp::Read, base, n, &one(&mut mem)).unwrap();
            assert_eq!(&mem[..], &data[..]);
            let stats = bdev.stats();
            assert!(stats.submit_syscalls <= stats.polls, "{stats:?}");
        }
        Err(Error::Open {
            problem: OpenProblem::IopollRefused(why),
            ..
        }) => eprintln!("no polled passthrough here: {why}"),
        // Before Linux 6.5 polled passthrough can crash the kernel (a
        // flush like this test's did, in the VM test on 6.1): refused.
        Err(
            e @ Error::Open {
                problem: OpenProblem::IopollUnsafeKernel(_),
                ..
            },
        ) => {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
            assert!(
                bdev::nvme::polled_passthrough_is_unsafe(release.trim()),
                "refused on {release}: {e}"
            );
            eprintln!("no polled passthrough here: {e}");
        }
        Err(other) => panic!("{other}"),
    }
}
