//! The `rbd` bdev against a real Ceph cluster: the process's test cluster
//! from `test_support::ceph` (CI's, named by `DATAPLANE_CEPH_CONF`, or one
//! started for this process); without one each test says why it skipped.
//! The OSD-failure test starts a cluster of its own, since it stops the
//! OSD.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bdev::{
    Bdev, BdevChannel, Error, IoError, IoOp, IoRequest, IoVec, RbdBdev, RbdOptions, SgList,
};
use test_support::alloc::{thread_allocations, CountingAlloc};
use test_support::ceph::{self, CephCluster, RbdImage};

// Per-thread counting (see `allocations_per_io`); other tests are not
// disturbed by it.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// How long a batch may take before the test fails instead of hanging.
const BATCH_DEADLINE: Duration = Duration::from_secs(120);

/// The process's cluster and a fresh image of `size` bytes in it.
fn image(label: &str, size: u64) -> Option<(&'static CephCluster, RbdImage)> {
    let cluster = ceph::cluster()?;
    let image = cluster.create_image(label, size);
    Some((cluster, image))
}

fn options(cluster: &CephCluster, image: &RbdImage) -> RbdOptions {
    let mut options = RbdOptions::new(image.name(), image.pool(), image.name());
    options.conf = Some(cluster.conf().to_path_buf());
    options
}

fn open(cluster: &CephCluster, image: &RbdImage) -> RbdBdev {
    RbdBdev::open(options(cluster, image)).expect("open the rbd bdev")
}

/// A request's buffer split into iovecs, kept alive until it completes.
struct Buffer {
    data: Vec<u8>,
    iovs: Vec<IoVec>,
}

impl Buffer {
    /// `len` bytes of `fill` in pieces of the given lengths (the last takes
    /// the rest).
    fn new(len: usize, fill: impl FnMut(usize) -> u8, pieces: &[usize]) -> Self {
        let mut data: Vec<u8> = (0..len).map(fill).collect();
        let mut iovs = Vec::new();
        let base = data.as_mut_ptr();
        let mut at = 0;
        for &piece in pieces {
            let piece = piece.min(len - at);
            if piece == 0 || at + piece == len {
                break;
            }
            // SAFETY: `at + piece < len`: inside `data`.
            let start = unsafe { base.add(at) };
            iovs.push(IoVec {
                base: start,
                len: piece,
            });
            at += piece;
        }
        // SAFETY: `at <= len`: the rest of `data`.
        let start = unsafe { base.add(at) };
        iovs.push(IoVec {
            base: start,
            len: len - at,
        });
        Self { data, iovs }
    }

    fn sgl(&self) -> SgList {
        // SAFETY: the buffer outlives the request: every caller keeps it
        // until `run` returned the request's completion.
        unsafe { SgList::from_slice(&self.iovs) }
    }
}

/// Submits every request (retrying while the channel is full) and polls
/// until all completed; the results by tag. Fails past the deadline
/// rather than hang.
fn run(channel: &mut dyn BdevChannel, requests: &[IoRequest]) -> HashMap<u64, Result<(), IoError>> {
    let deadline = Instant::now() + BATCH_DEADLINE;
    let mut results = HashMap::new();
    let mut next = 0;
    while results.len() < requests.len() {
        while next < requests.len() && channel.submit(requests[next]).is_ok() {
            next += 1;
        }
        channel.poll(&mut |c| {
            assert!(
                results.insert(c.tag, c.result).is_none(),
                "tag {} completed twice",
                c.tag
            );
        });
        assert!(
            Instant::now() < deadline,
            "{} of {} requests still in flight after {BATCH_DEADLINE:?}",
            requests.len() - results.len(),
            requests.len()
        );
        std::hint::spin_loop();
    }
    assert_eq!(channel.in_flight(), 0);
    results
}

/// One request, run alone.
fn run_one(channel: &mut dyn BdevChannel, request: IoRequest) -> Result<(), IoError> {
    run(channel, &[request])[&request.tag]
}

fn read(channel: &mut dyn BdevChannel, lba: u64, blocks: u32, block_size: u32) -> Vec<u8> {
    let buffer = Buffer::new((blocks * block_size) as usize, |_| 0xEE, &[]);
    let request = IoRequest::new(IoOp::Read, lba, blocks, buffer.sgl(), 1);
    assert_eq!(run_one(channel, request), Ok(()), "read {lba}+{blocks}");
    buffer.data
}

fn pattern(seed: u64) -> impl FnMut(usize) -> u8 {
    move |i| (i as u64).wrapping_mul(31).wrapping_add(seed * 7 + 1) as u8
}

#[test]
fn geometry_and_object_size_come_from_the_image() {
    let Some((cluster, image)) = image("geometry", 48 << 20) else {
        return;
    };
    let bdev = open(cluster, &image);
    assert_eq!(bdev.name(), image.name());
    let geometry = bdev.geometry();
    assert_eq!(geometry.block_size, 512);
    assert_eq!(geometry.num_blocks, (48 << 20) / 512);
    assert_eq!(bdev.image_size(), 48 << 20);
    assert_eq!(bdev.object_size(), 4 << 20, "rbd's default object size");
    let topology = bdev.topology();
    assert_eq!(topology.physical_block_size, 512);
    assert_eq!(topology.unmap_granularity_blocks, 8192, "one object");
    assert!(topology.is_valid_for(512));
    let caps = bdev.capabilities();
    assert!(caps.unmap && caps.unmap_reads_zeroes && caps.write_zeroes);
    assert!(caps.volatile_cache, "librbd's cache is on by default");
    assert_eq!(caps.optimal_boundary_blocks, 8192);
    assert_eq!(caps.max_transfer_blocks, (4 << 20) / 512);
    assert_eq!(bdev.librbd_version().0, 1);
    assert_eq!(bdev.cache(), (true, "writearound"));

    let mut options = options(cluster, &image);
    options.block_size = 4096;
    let bdev = RbdBdev::open(options).unwrap();
    assert_eq!(bdev.geometry().num_blocks, (48 << 20) / 4096);
    assert_eq!(bdev.topology().unmap_granularity_blocks, 1024);
}

#[test]
fn random_writes_read_back_across_iovec_lists() {
    const SIZE: u64 = 32 << 20;
    const REGIONS: u64 = 16;
    let Some((cluster, image)) = image("random-rw", SIZE) else {
        return;
    };
    let bdev = open(cluster, &image);
    let bs = bdev.geometry().block_size;
    let mut channel = bdev.open_channel(32).unwrap();
    let mut model = vec![0u8; SIZE as usize];
    let mut rng = test_support::rng::seeded(0x7262_6431);
    let region_blocks = SIZE / u64::from(bs) / REGIONS;
    let mut tag = 0;
    let pieces = |rng: &mut test_support::rng::Rng, len: usize| -> Vec<usize> {
        (0..rng.usize(0..4)).map(|_| rng.usize(1..=len)).collect()
    };
    for round in 0..12 {
        // Concurrent writes, one per region so that none overlap.
        let mut buffers = Vec::new();
        let mut requests = Vec::new();
        for region in 0..REGIONS {
            let blocks = rng.u32(1..=256);
            let lba = region * region_blocks + rng.u64(0..region_blocks - u64::from(blocks));
            let len = (blocks * bs) as usize;
            let seed = round * 100 + region;
            let buffer = Buffer::new(len, pattern(seed), &pieces(&mut rng, len));
            let start = (lba * u64::from(bs)) as usize;
            model[start..start + len].copy_from_slice(&buffer.data);
            tag += 1;
            let mut request = IoRequest::new(IoOp::Write, lba, blocks, buffer.sgl(), tag);
            request.fua = rng.bool();
            requests.push(request);
            buffers.push(buffer);
        }
        for (tag, result) in run(channel.as_mut(), &requests) {
            assert_eq!(result, Ok(()), "write tag {tag}");
        }
        drop(buffers);
        // Concurrent reads anywhere, checked against the model.
        let mut reads = Vec::new();
        let mut requests = Vec::new();
        for _ in 0..24 {
            let blocks = rng.u32(1..=512);
            let lba = rng.u64(0..SIZE / u64::from(bs) - u64::from(blocks));
            let len = (blocks * bs) as usize;
            let buffer = Buffer::new(len, |_| 0xA5, &pieces(&mut rng, len));
            tag += 1;
            requests.push(IoRequest::new(IoOp::Read, lba, blocks, buffer.sgl(), tag));
            reads.push((lba, buffer));
        }
        let results = run(channel.as_mut(), &requests);
        for (request, (lba, buffer)) in requests.iter().zip(&reads) {
            assert_eq!(results[&request.tag], Ok(()));
            let start = (lba * u64::from(bs)) as usize;
            assert!(
                buffer.data == model[start..start + buffer.data.len()],
                "round {round}: read of {} blocks at {lba} ({} iovecs) differs from what was written",
                request.blocks,
                buffer.iovs.len()
            );
        }
    }
    let stats = bdev.stats();
    assert_eq!(stats.errors, 0);
    assert_eq!(stats.completed, tag);
    assert_eq!(stats.handed_over, 0, "one channel");
}

#[test]
fn a_list_longer_than_the_transfer_is_trimmed() {
    let Some((cluster, image)) = image("trim", 8 << 20) else {
        return;
    };
    let bdev = open(cluster, &image);
    let mut channel = bdev.open_channel(4).unwrap();
    // 3 blocks from a 5-block list of 12 pieces: librbd must write 1536
    // bytes, not the whole list.
    let long = Buffer::new(2560, pattern(3), &[100; 11]);
    let write = IoRequest::new(IoOp::Write, 10, 3, long.sgl(), 1);
    assert_eq!(run_one(channel.as_mut(), write), Ok(()));
    let back = read(channel.as_mut(), 9, 5, 512);
    assert!(back[..512].iter().all(|&b| b == 0));
    assert!(back[512..2048] == long.data[..1536]);
    assert!(
        back[2048..].iter().all(|&b| b == 0),
        "written past the transfer"
    );
    // A read into a longer list fills only the transfer.
    let into = Buffer::new(2560, |_| 0xEE, &[100; 11]);
    let request = IoRequest::new(IoOp::Read, 10, 3, into.sgl(), 2);
    assert_eq!(run_one(channel.as_mut(), request), Ok(()));
    assert!(into.data[..1536] == long.data[..1536]);
    assert!(into.data[1536..].iter().all(|&b| b == 0xEE));
}

#[test]
fn flush_and_fua_writes_complete() {
    let Some((cluster, image)) = image("flush-fua", 8 << 20) else {
        return;
    };
    for cache in [true, false] {
        let mut options = options(cluster, &image);
        if !cache {
            options.config.push(("rbd_cache".into(), "false".into()));
        }
        let bdev = RbdBdev::open(options).unwrap();
        assert_eq!(bdev.capabilities().volatile_cache, cache);
        let mut channel = bdev.open_channel(8).unwrap();
        let one = Buffer::new(4096, pattern(1), &[]);
        let several = Buffer::new(8192, pattern(2), &[1000, 3000, 96]);
        let mut fua_one = IoRequest::new(IoOp::Write, 0, 8, one.sgl(), 1);
        fua_one.fua = true;
        let mut fua_several = IoRequest::new(IoOp::Write, 64, 16, several.sgl(), 2);
        fua_several.fua = true;
        let flush = IoRequest::new(IoOp::Flush, 0, 0, SgList::EMPTY, 3);
        let results = run(channel.as_mut(), &[fua_one, fua_several]);
        assert_eq!(results[&1], Ok(()));
        assert_eq!(results[&2], Ok(()));
        assert_eq!(run_one(channel.as_mut(), flush), Ok(()));
        assert!(read(channel.as_mut(), 0, 8, 512) == one.data);
        assert!(read(channel.as_mut(), 64, 16, 512) == several.data);
        // A FUA write done as a write and a flush makes two librbd calls,
        // one buffer with the cache's FUA flag one.
        let submitted = bdev.stats().submitted;
        let expected = if cache { 1 + 2 + 1 + 2 } else { 1 + 1 + 1 + 2 };
        assert_eq!(submitted, expected, "cache {cache}");
    }
}

#[test]
fn unmap_and_write_zeroes_read_back_zeroes() {
    let Some((cluster, image)) = image("unmap", 16 << 20) else {
        return;
    };
    let bdev = open(cluster, &image);
    let mut channel = bdev.open_channel(8).unwrap();
    let blocks = (12u32 << 20) / 512;
    let data = Buffer::new((blocks * 512) as usize, pattern(5), &[]);
    // Larger than one transfer: write it in pieces.
    let max = bdev.capabilities().max_transfer_blocks;
    let mut requests = Vec::new();
    let mut lba = 0;
    let mut buffers = Vec::new();
    while lba < u64::from(blocks) {
        let n = max.min(blocks - lba as u32);
        let start = (lba * 512) as usize;
        // SAFETY: inside `data`, which outlives the run.
        let base = unsafe { data.data.as_ptr().cast_mut().add(start) };
        let iov = vec![IoVec {
            base,
            len: n as usize * 512,
        }];
        // SAFETY: `iov` is kept in `buffers` until the run is over.
        let sgl = unsafe { SgList::from_slice(&iov) };
        requests.push(IoRequest::new(IoOp::Write, lba, n, sgl, lba + 10));
        buffers.push(iov);
        lba += u64::from(n);
    }
    for result in run(channel.as_mut(), &requests).values() {
        assert_eq!(*result, Ok(()));
    }
    // An unaligned unmap inside the first object, one across the whole
    // second object (8192..16384) and into its neighbours, an unaligned
    // write-zeroes.
    let unmaps = [
        IoRequest::new(IoOp::Unmap, 3, 4000, SgList::EMPTY, 1),
        IoRequest::new(IoOp::Unmap, 8092, 8192 + 200, SgList::EMPTY, 2),
        IoRequest::new(IoOp::WriteZeroes, 20000, 777, SgList::EMPTY, 3),
    ];
    for (tag, result) in run(channel.as_mut(), &unmaps) {
        assert_eq!(result, Ok(()), "tag {tag}");
    }
    let mut back = Vec::new();
    let mut lba = 0;
    while lba < u64::from(blocks) {
        let n = max.min(blocks - lba as u32);
        back.extend(read(channel.as_mut(), lba, n, 512));
        lba += u64::from(n);
    }
    let mut expected = data.data.clone();
    for request in &unmaps {
        let start = (request.lba * 512) as usize;
        expected[start..start + request.blocks as usize * 512].fill(0);
    }
    let first_diff = back.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "first byte that differs");
    assert_eq!(back.len(), expected.len());
}

#[test]
fn bad_requests_complete_with_errors() {
    let Some((cluster, image)) = image("bad", 4 << 20) else {
        return;
    };
    let bdev = open(cluster, &image);
    let blocks = bdev.geometry().num_blocks;
    let mut channel = bdev.open_channel(8).unwrap();
    let buffer = Buffer::new(4096, |_| 0, &[]);
    let requests = [
        IoRequest::new(IoOp::Read, blocks - 1, 8, buffer.sgl(), 1),
        IoRequest::new(IoOp::Write, u64::MAX - 2, 8, buffer.sgl(), 2),
        IoRequest::new(IoOp::Unmap, blocks, 1, SgList::EMPTY, 3),
        IoRequest::new(IoOp::Read, 0, 9, buffer.sgl(), 4),
        IoRequest::new(IoOp::WriteZeroes, 0, u32::MAX, SgList::EMPTY, 5),
        IoRequest::new(IoOp::Read, blocks, 0, SgList::EMPTY, 6),
    ];
    let results = run(channel.as_mut(), &requests);
    assert_eq!(results[&1], Err(IoError::OutOfRange));
    assert_eq!(results[&2], Err(IoError::OutOfRange));
    assert_eq!(results[&3], Err(IoError::OutOfRange));
    assert_eq!(results[&4], Err(IoError::ShortBuffer));
    assert_eq!(results[&5], Err(IoError::OutOfRange));
    assert_eq!(results[&6], Ok(()), "a zero-block request at the end");
    assert_eq!(bdev.stats().errors, 5);
    assert!(!channel.abort(1), "librbd cannot abort");
}

#[test]
fn two_channels_on_two_threads_get_their_own_completions() {
    const SIZE: u64 = 16 << 20;
    let Some((cluster, image)) = image("two-channels", SIZE) else {
        return;
    };
    let bdev = Arc::new(open(cluster, &image));
    let half = SIZE / 512 / 2;
    let threads: Vec<_> = (0..2u64)
        .map(|side| {
            let bdev = Arc::clone(&bdev);
            std::thread::spawn(move || {
                let mut channel = bdev.open_channel(32).unwrap();
                let base = side * half;
                let tag_base = (side + 1) << 32;
                for round in 0..20u64 {
                    let buffers: Vec<Buffer> = (0..32u64)
                        .map(|i| Buffer::new(4096, pattern(side * 1000 + round * 32 + i), &[1024]))
                        .collect();
                    let writes: Vec<IoRequest> = buffers
                        .iter()
                        .enumerate()
                        .map(|(i, b)| {
                            let lba = base + (round * 32 + i as u64) * 8 % (half - 8);
                            IoRequest::new(IoOp::Write, lba, 8, b.sgl(), tag_base + i as u64)
                        })
                        .collect();
                    let results = run(channel.as_mut(), &writes);
                    for (tag, result) in results {
                        assert_eq!(tag >> 32, side + 1, "another channel's completion");
                        assert_eq!(result, Ok(()));
                    }
                    for (request, buffer) in writes.iter().zip(&buffers) {
                        let back = read(channel.as_mut(), request.lba, 8, 512);
                        assert!(back == buffer.data, "side {side} round {round}");
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = bdev.stats();
    assert_eq!(stats.errors, 0);
    assert_eq!(stats.completed, 2 * 20 * 64);
    eprintln!(
        "two channels: {} of {} completions handed over",
        stats.handed_over, stats.completed
    );
}

#[test]
fn allocations_per_io() {
    let Some((cluster, image)) = image("alloc", 16 << 20) else {
        return;
    };
    let bdev = open(cluster, &image);
    let mut channel = bdev.open_channel(32).unwrap();
    let buffers: Vec<Buffer> = (0..32)
        .map(|i| Buffer::new(4096, pattern(i), &[]))
        .collect();
    // Preallocated outside the count: the requests, and room for their
    // completions.
    let mut requests: Vec<IoRequest> = Vec::with_capacity(32);
    let mut completed = 0u64;
    let mut round = |channel: &mut dyn BdevChannel, op: IoOp, n: u64| {
        requests.clear();
        for (i, buffer) in buffers.iter().enumerate() {
            let lba = (n * 37 + i as u64 * 8) % (16 << 20 >> 9);
            let lba = lba - lba % 8;
            requests.push(IoRequest::new(op, lba, 8, buffer.sgl(), i as u64));
        }
        let mut submitted = 0;
        let mut done = 0;
        let deadline = Instant::now() + BATCH_DEADLINE;
        while done < requests.len() {
            while submitted < requests.len() && channel.submit(requests[submitted]).is_ok() {
                submitted += 1;
            }
            done += channel.poll(&mut |c| assert!(c.result.is_ok()));
            assert!(Instant::now() < deadline);
        }
        done as u64
    };
    for n in 0..20 {
        completed += round(channel.as_mut(), IoOp::Write, n);
        completed += round(channel.as_mut(), IoOp::Read, n);
    }
    // Counted on this thread, through Rust's global allocator: what the
    // channel's submit and poll allocate. librbd's own allocations (its C++
    // `new`: the AIO completion, its request objects, the copy of written
    // data) go to the C heap directly, never through Rust's allocator, and
    // its threads run no Rust code, so they are not counted.
    let before = thread_allocations();
    let start = completed;
    for n in 20..220 {
        completed += round(channel.as_mut(), IoOp::Write, n);
        completed += round(channel.as_mut(), IoOp::Read, n);
        let flush = IoRequest::new(IoOp::Flush, 0, 0, SgList::EMPTY, 99);
        channel.submit(flush).unwrap();
        let mut flushed = 0;
        while flushed == 0 {
            flushed = channel.poll(&mut |c| assert!(c.result.is_ok()));
        }
        completed += 1;
    }
    let allocations = thread_allocations() - before;
    let ios = completed - start;
    assert!(ios > 12_000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations by the channel in {ios} I/Os"
    );
}

#[test]
fn open_errors_say_what_is_wrong() {
    let Some((cluster, image)) = image("open-errors", 1 << 20) else {
        return;
    };
    let message = |options: RbdOptions| -> String {
        match RbdBdev::open(options) {
            Ok(_) => panic!("opened"),
            Err(e) => {
                eprintln!("open error: {e}");
                e.to_string()
            }
        }
    };
    let mut missing = options(cluster, &image);
    missing.image = "no-such-image".into();
    let text = message(missing);
    assert!(
        text.contains("rbd_open") && text.contains("`no-such-image` does not exist in pool `rbd`"),
        "{text}"
    );
    assert!(text.contains("rbd:rbd/no-such-image"), "{text}");

    let mut pool = options(cluster, &image);
    pool.pool = "no-such-pool".into();
    let text = message(pool);
    assert!(
        text.contains("pool `no-such-pool` does not exist"),
        "{text}"
    );

    let mut conf = options(cluster, &image);
    conf.conf = Some(PathBuf::from("/nonexistent/ceph.conf"));
    let text = message(conf);
    assert!(
        text.contains("reading the configuration") && text.contains("/nonexistent/ceph.conf"),
        "{text}"
    );

    let mut keyring = options(cluster, &image);
    keyring.keyring = Some(PathBuf::from("/nonexistent/keyring"));
    let text = message(keyring);
    assert!(text.contains("/nonexistent/keyring"), "{text}");

    let mut user = options(cluster, &image);
    user.user = Some("nobody".into());
    user.op_timeout = Duration::from_secs(5);
    let text = message(user);
    assert!(text.contains("rados_connect"), "{text}");

    // No monitor behind `mon host`: an error after the timeout, not a hang.
    let dir = tempfile::tempdir().unwrap();
    let keyring = std::fs::read_to_string(cluster.conf())
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("keyring = ").map(str::to_owned))
        .expect("the test cluster's conf names its keyring");
    let dead = dir.path().join("ceph.conf");
    std::fs::write(
        &dead,
        format!("[global]\nmon host = [v2:127.0.0.1:9]\nkeyring = {keyring}\n"),
    )
    .unwrap();
    let mut nobody_home = options(cluster, &image);
    nobody_home.conf = Some(dead);
    nobody_home.op_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let text = message(nobody_home);
    assert!(
        text.contains("no monitor answered within the 2 s timeout"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    let mut block = options(cluster, &image);
    block.block_size = 1024;
    assert!(matches!(
        RbdBdev::open(block),
        Err(Error::InvalidParameter(_))
    ));

    // 1 MiB + 512 bytes is not a whole number of 4 KiB blocks.
    let odd = cluster.create_image("odd-size", (1 << 20) + 512);
    let mut options = options(cluster, &odd);
    options.block_size = 4096;
    let text = message(options);
    assert!(
        text.contains("not a multiple of the block size 4096"),
        "{text}"
    );
}

#[test]
fn a_dead_osd_gives_errors_within_the_timeout() {
    // Needs a cluster whose OSD it may stop: its own, when the process's
    // cluster can be had at all.
    if ceph::cluster().is_none() {
        return;
    }
    let cluster = ceph::OwnCluster::start();
    cluster.rbd(&["create", "--size", "16M", "rbd/dead-osd"]);
    let mut options = RbdOptions::new("dead-osd", "rbd", "dead-osd");
    options.conf = Some(cluster.conf().to_path_buf());
    options.op_timeout = Duration::from_secs(5);
    let bdev = RbdBdev::open(options).unwrap();
    let mut channel = bdev.open_channel(8).unwrap();
    let data = Buffer::new(4096, pattern(9), &[]);
    let write = IoRequest::new(IoOp::Write, 0, 8, data.sgl(), 1);
    assert_eq!(run_one(channel.as_mut(), write), Ok(()));

    cluster.script("osd-stop");
    let into = Buffer::new(4096, |_| 0, &[]);
    let started = Instant::now();
    let requests = [
        IoRequest::new(IoOp::Read, 64, 8, into.sgl(), 2),
        IoRequest::new(IoOp::Write, 128, 8, data.sgl(), 3),
        IoRequest::new(IoOp::Flush, 0, 0, SgList::EMPTY, 4),
    ];
    let results = run(channel.as_mut(), &requests);
    let took = started.elapsed();
    eprintln!("with the OSD down: {results:?} after {took:?}");
    assert_eq!(results[&2], Err(IoError::NotReady), "the read");
    assert!(results[&3].is_err() || results[&4].is_err(), "{results:?}");
    assert!(
        took < Duration::from_secs(5 * 3),
        "errors after {took:?}, timeout 5 s"
    );

    cluster.script("osd-start");
    let write = IoRequest::new(IoOp::Write, 256, 8, data.sgl(), 5);
    assert_eq!(
        run_one(channel.as_mut(), write),
        Ok(()),
        "after the OSD is back"
    );
}

/// 4 KiB random reads at queue depth 32 through one channel, for the
/// comparison with `fio --ioengine=rbd` on the same image (not run by
/// default: `DATAPLANE_RBD_BENCH=pool/image cargo test --release -p bdev
/// --test rbd -- --ignored --nocapture randread`; the image must be
/// written all over first, or librbd answers reads of objects that do not
/// exist without asking an OSD). With `DATAPLANE_RBD_BENCH_SLEEP=1` the
/// loop sleeps in `epoll` on the channel's wait fds whenever a poll finds
/// nothing, as an adaptive reactor would; otherwise it busy-polls.
#[test]
#[ignore = "a measurement, not a test"]
fn randread_4k_qd32_iops() {
    let Some(cluster) = ceph::cluster() else {
        return;
    };
    let spec = std::env::var("DATAPLANE_RBD_BENCH").expect("DATAPLANE_RBD_BENCH=pool/image");
    let (pool, name) = spec.split_once('/').expect("pool/image");
    let mut options = RbdOptions::new("bench", pool, name);
    options.conf = Some(cluster.conf().to_path_buf());
    let bdev = RbdBdev::open(options).unwrap();
    let sleep = std::env::var_os("DATAPLANE_RBD_BENCH_SLEEP").is_some();
    let seconds: u64 = std::env::var("DATAPLANE_RBD_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut channel = bdev.open_channel(32).unwrap();
    let epoll = nix::sys::epoll::Epoll::new(nix::sys::epoll::EpollCreateFlags::empty()).unwrap();
    for fd in channel.wait_fds() {
        // SAFETY: the channel's descriptors stay open while it lives,
        // which is longer than the epoll's use here.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let flags = nix::sys::epoll::EpollFlags::EPOLLIN | nix::sys::epoll::EpollFlags::EPOLLET;
        epoll
            .add(fd, nix::sys::epoll::EpollEvent::new(flags, 0))
            .unwrap();
    }
    let blocks = bdev.geometry().num_blocks / 8;
    let buffers: Vec<Buffer> = (0..32).map(|_| Buffer::new(4096, |_| 0, &[])).collect();
    let mut rng = test_support::rng::seeded(0x6265_6e63);
    let mut free: Vec<u64> = (0..32).collect();
    let mut completed = 0u64;
    let mut polls = 0u64;
    let mut sleeps = 0u64;
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut events = [nix::sys::epoll::EpollEvent::empty(); 4];
    while Instant::now() < end {
        while let Some(tag) = free.pop() {
            let lba = rng.u64(0..blocks) * 8;
            let sgl = buffers[tag as usize].sgl();
            channel
                .submit(IoRequest::new(IoOp::Read, lba, 8, sgl, tag))
                .unwrap();
        }
        polls += 1;
        let n = channel.poll(&mut |c| {
            assert_eq!(c.result, Ok(()));
            free.push(c.tag);
        });
        completed += n as u64;
        if n == 0 && sleep {
            sleeps += 1;
            let _ = epoll.wait(&mut events, 10u16);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    eprintln!(
        "rbd bdev: 4 KiB randread QD32 on {spec}: {:.0} IOPS over {elapsed:.1} s ({} polls, {} sleeps, {})",
        completed as f64 / elapsed,
        polls,
        sleeps,
        if sleep { "epoll when idle" } else { "busy polling" }
    );
}

#[test]
fn skipping_partial_discards_is_not_lbprz() {
    let Some((cluster, image)) = image("skip-partial", 8 << 20) else {
        return;
    };
    let mut options = options(cluster, &image);
    options
        .config
        .push(("rbd_skip_partial_discard".into(), "true".into()));
    let bdev = RbdBdev::open(options).unwrap();
    assert!(
        !bdev.capabilities().unmap_reads_zeroes,
        "discards that may skip unaligned extents do not read back zeroes"
    );
    let mut channel = bdev.open_channel(4).unwrap();
    let data = Buffer::new(64 << 10, pattern(4), &[]);
    let write = IoRequest::new(IoOp::Write, 0, 128, data.sgl(), 1);
    assert_eq!(run_one(channel.as_mut(), write), Ok(()));
    let unmap = IoRequest::new(IoOp::Unmap, 3, 100, SgList::EMPTY, 2);
    assert_eq!(run_one(channel.as_mut(), unmap), Ok(()));
    let back = read(channel.as_mut(), 3, 100, 512);
    eprintln!(
        "with rbd_skip_partial_discard: an unaligned discard left {} of {} bytes unzeroed",
        back.iter().filter(|&&b| b != 0).count(),
        back.len()
    );
}

#[test]
fn dropping_a_channel_waits_for_its_io() {
    let Some((cluster, image)) = image("drop", 8 << 20) else {
        return;
    };
    let bdev = open(cluster, &image);
    let buffers: Vec<Buffer> = (0..32)
        .map(|i| Buffer::new(8192, pattern(i), &[]))
        .collect();
    let mut channel = bdev.open_channel(32).unwrap();
    for (i, buffer) in buffers.iter().enumerate() {
        let op = if i % 2 == 0 { IoOp::Write } else { IoOp::Read };
        let request = IoRequest::new(op, i as u64 * 16, 16, buffer.sgl(), i as u64);
        channel.submit(request).unwrap();
    }
    assert_eq!(channel.in_flight(), 32);
    let started = Instant::now();
    drop(channel);
    // librbd is done with the buffers once the drop returns: they may go.
    assert!(started.elapsed() < BATCH_DEADLINE);
    let stats = bdev.stats();
    assert_eq!((stats.completed, stats.errors), (32, 0), "{stats:?}");
    drop(buffers);
    let mut channel = bdev.open_channel(4).unwrap();
    let back = read(channel.as_mut(), 0, 16, 512);
    assert!(back == Buffer::new(8192, pattern(0), &[]).data);
}
