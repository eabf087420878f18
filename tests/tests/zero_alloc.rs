//! Steady state of the whole data path allocates nothing per command.
//!
//! The full path of `dataplane bench` — the initiator job, the simulated TCMU
//! kernel, the TCMU device, the SCSI logical unit, the SPSC port, the bdev
//! poller and each bdev module — runs in this thread under a counting global
//! allocator. After a warm-up (buffers reach their steady-state capacity),
//! 100 000+ commands must complete without a single heap allocation.
//!
//! The `file` and `nvme` bdevs' paths are assembled by [`dataplane::stack`],
//! as the bench and the server do, so the TCMU data area is offered to
//! their io_uring as fixed buffers; their tests also check that the bdev
//! makes at most one `io_uring_enter` per poll of its bdev poller. The
//! `nvme` test needs an NVMe namespace it may overwrite
//! (`DATAPLANE_TEST_NVME`); it runs in the VM test on an emulated drive.
//! The `rbd` test runs against the test cluster (`test_support::ceph`).

use std::path::Path;
use std::sync::Arc;

use bdev::file::{FileBdev, FileOptions};
use bdev::null::NullBdev;
use bdev::nvme::{NvmeBdev, NvmeOptions};
use bdev::ram::RamBdev;
use bdev::rbd::{RbdBdev, RbdOptions};
use bdev::striped::StripedBdev;
use bdev::BdevRef;
use bench::initiator::{Job, Pattern, VerifyModel, Workload};
use bench::TcmuInitiator;
use dataplane::lun::{Lun, LunConfig};
use dataplane::port::{port_pair, BdevPoller, FixedBuffers};
use dataplane::stack::{LunSpec, Stack};
use dataplane::tcmu::{TcmuDevice, TcmuDeviceConfig};
use reactor::Poller;
use sim::tcmu::{SimConfig, TcmuSim};
use test_support::alloc::{CountingAlloc, ProcessCount};
use test_support::skip::{can_run, nvme_device, Need};

// The count is process-wide, so that an allocation on any thread the path
// may use is caught. Any other test running meanwhile would be counted
// too, so this binary holds only tests that measure this way: each takes
// the one `ProcessCount`, which runs them one at a time.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const BLOCK: u32 = 4096;
const SIZE: u64 = 64 << 20;

/// Builds the whole path for `bdev` and returns (job, device, bdev poller).
fn path(
    bdev: BdevRef,
    pattern: Pattern,
    io_size: u64,
    verify: bool,
) -> (Job<TcmuInitiator>, TcmuDevice<Lun>, BdevPoller) {
    let (port, end) = port_pair(256).unwrap();
    let mut poller = BdevPoller::new("bdev", bdev.open_channel(256).unwrap(), 256);
    poller.attach(end).unwrap();
    let mut config = LunConfig::for_bdev(bdev.as_ref());
    config.max_tasks = 256;
    let lun = Lun::new(config, port).unwrap();
    let sim = TcmuSim::new(SimConfig {
        cmdr_size: (1 << 20) - 128,
        data_area_size: 16 << 20,
        ..SimConfig::default()
    })
    .unwrap();
    let (region, doorbell) = sim.device_endpoint().unwrap();
    let device = TcmuDevice::attach(region, doorbell, lun, TcmuDeviceConfig::default()).unwrap();
    let geometry = bdev.geometry();
    let workload = Workload {
        pattern,
        block_size: geometry.block_size,
        io_size,
        iodepth: 64,
        size: geometry.size_bytes(),
        rwmix_read: 50,
        seed: 7,
    };
    let model =
        verify.then(|| VerifyModel::new(geometry.num_blocks, geometry.block_size as usize, true));
    let job = Job::new(TcmuInitiator::new(sim), workload, model, 1 << 20).unwrap();
    (job, device, poller)
}

/// The same path assembled by [`Stack`] (its port carries the data area to
/// the bdev poller), verified, over a bdev that starts as zeroes when
/// `zeroed` (a new sparse file) or holds data no one knows (a namespace
/// other tests wrote): then only what the job wrote is checked.
fn stacked_path(
    bdev: BdevRef,
    pattern: Pattern,
    io_size: u64,
    zeroed: bool,
) -> (Job<TcmuInitiator>, TcmuDevice<Lun>, BdevPoller) {
    let sim = TcmuSim::new(SimConfig {
        cmdr_size: (1 << 20) - 128,
        data_area_size: 16 << 20,
        ..SimConfig::default()
    })
    .unwrap();
    let (region, doorbell) = sim.device_endpoint().unwrap();
    let spec = LunSpec::new("zero", 1, 256);
    let stack = Stack::tcmu(
        bdev.as_ref(),
        &spec,
        region,
        doorbell,
        TcmuDeviceConfig::default(),
    )
    .unwrap();
    assert!(stack.memory_offer().is_some(), "the data area is offered");
    let (device, poller) = stack
        .with_own_poller(bdev.as_ref(), spec.port_depth())
        .unwrap();
    let geometry = bdev.geometry();
    let workload = Workload {
        pattern,
        block_size: geometry.block_size,
        io_size,
        iodepth: 64,
        size: geometry.size_bytes(),
        rwmix_read: 50,
        seed: 7,
    };
    let model = VerifyModel::new(geometry.num_blocks, geometry.block_size as usize, zeroed);
    let job = Job::new(TcmuInitiator::new(sim), workload, Some(model), 1 << 20).unwrap();
    (job, device, poller)
}

/// Runs `commands` completions through the path; returns them and the
/// polls of the bdev poller.
fn run(
    job: &mut Job<TcmuInitiator>,
    device: &mut TcmuDevice<Lun>,
    poller: &mut BdevPoller,
    commands: u64,
) -> (u64, u64) {
    let start = job.snapshot().ios;
    let mut polls = 0;
    while job.snapshot().ios - start < commands {
        job.step(true).unwrap();
        device.poll();
        poller.poll();
        polls += 1;
        device.poll();
    }
    (job.snapshot().ios - start, polls)
}

/// Warms the path up, then counts allocations over `commands` completions.
fn allocations_in_steady_state(bdev: BdevRef, pattern: Pattern, io_size: u64, verify: bool) -> u64 {
    let count = ProcessCount::take();
    let (mut job, mut device, mut poller) = path(bdev, pattern, io_size, verify);
    steady_state(&count, &mut job, &mut device, &mut poller, DEFAULT_COUNTS).0
}

/// Windows a steady state is measured over at most.
const WINDOWS: usize = 3;

/// Completions of the warm-up and of each measured window.
#[derive(Clone, Copy)]
struct Counts {
    warm: u64,
    window: u64,
}

/// 20 000 to warm up, windows of 100 000.
const DEFAULT_COUNTS: Counts = Counts {
    warm: 20_000,
    window: 100_000,
};

/// Through the VM test's emulated NVMe drive, where the default counts
/// took 29 s of the guest's time: 5 000 to warm up, windows of 20 000 (the
/// same pattern and paths; a per-command allocation shows in a window's
/// first commands).
const EMULATED_DRIVE_COUNTS: Counts = Counts {
    warm: 5_000,
    window: 20_000,
};

/// Warms a path up, then counts allocations over a window of completions
/// (`counts`); returns them and the bdev poller's polls meanwhile.
///
/// The count is process-wide, so the test harness reporting the previous
/// test's result can land in the window (seen on a loaded machine: 3-5
/// allocations, none on this thread). So a window in which this thread
/// (the whole path but librbd's callbacks) allocated counts at once, and
/// one in which only other threads did is measured again, up to
/// [`WINDOWS`] in all: a path that allocates on another thread does it in
/// every window.
fn steady_state(
    count: &ProcessCount,
    job: &mut Job<TcmuInitiator>,
    device: &mut TcmuDevice<Lun>,
    poller: &mut BdevPoller,
    counts: Counts,
) -> (u64, u64) {
    run(job, device, poller, counts.warm);
    let mut window = 0;
    let (done, polls) = loop {
        window += 1;
        count.reset();
        let mine = test_support::alloc::thread_allocations();
        // Traced: a failure prints where this thread allocated.
        let measured = count
            .counting(|| test_support::alloc::traced(|| run(job, device, poller, counts.window)));
        let on_this_thread = test_support::alloc::thread_allocations() - mine;
        if count.allocations() == 0 || on_this_thread > 0 || window == WINDOWS {
            break measured;
        }
    };
    let snapshot = job.snapshot();
    assert!(done >= counts.window);
    assert_eq!(
        (snapshot.errors, snapshot.verify_mismatches),
        (0, 0),
        "{:?}",
        job.notes()
    );
    (count.allocations(), polls)
}

fn ram() -> BdevRef {
    Arc::new(RamBdev::new("ram", BLOCK, SIZE / u64::from(BLOCK)).unwrap())
}

#[test]
fn ram_randrw_with_verify_allocates_nothing_per_command() {
    assert_eq!(
        allocations_in_steady_state(ram(), Pattern::RandRw, 4096, true),
        0
    );
}

#[test]
fn ram_large_transfers_allocate_nothing_per_command() {
    assert_eq!(
        allocations_in_steady_state(ram(), Pattern::RandRw, 128 << 10, false),
        0
    );
}

#[test]
fn null_randread_allocates_nothing_per_command() {
    let null: BdevRef = Arc::new(NullBdev::new("null", BLOCK, SIZE / u64::from(BLOCK)).unwrap());
    assert_eq!(
        allocations_in_steady_state(null, Pattern::RandRead, 4096, false),
        0
    );
}

#[test]
fn striped_randrw_allocates_nothing_per_command() {
    let children: Vec<BdevRef> = (0..4)
        .map(|i| {
            Arc::new(RamBdev::new(format!("c{i}"), BLOCK, SIZE / 4 / u64::from(BLOCK)).unwrap())
                as BdevRef
        })
        .collect();
    // 8-block chunks: 64 KiB I/Os span several strips and all children.
    let striped: BdevRef = Arc::new(StripedBdev::new("striped", children, 8).unwrap());
    assert_eq!(
        allocations_in_steady_state(striped, Pattern::RandRw, 64 << 10, true),
        0
    );
}

/// A file bdev on a new sparse file of `size` bytes in `dir` (on a disk
/// filesystem: tmpfs has no O_DIRECT).
fn file_bdev(dir: &Path, name: &str, size: u64) -> Arc<FileBdev> {
    let mut options = FileOptions::new(dir.join(name));
    options.size = Some(size);
    options.block_size = Some(BLOCK);
    Arc::new(FileBdev::open(name, options).unwrap())
}

#[test]
fn file_randrw_with_verify_allocates_nothing_and_enters_once_per_poll_at_most() {
    // The count is taken first: a skip's report allocates, and must not
    // land in another test's counting window.
    let count = ProcessCount::take();
    if !can_run(&[Need::IoUring]) {
        return;
    }
    let dir = test_support::scratch::disk_dir("zero-alloc-");
    let file = file_bdev(dir.path(), "file", SIZE);
    let bdev: BdevRef = file.clone();
    let (mut job, mut device, mut poller) = stacked_path(bdev, Pattern::RandRw, 4096, true);
    let before = file.stats();
    let (allocations, polls) =
        steady_state(&count, &mut job, &mut device, &mut poller, DEFAULT_COUNTS);
    let stats = file.stats();
    assert_eq!(allocations, 0);
    let enters = stats.submit_syscalls - before.submit_syscalls;
    assert!(
        enters <= polls,
        "{enters} io_uring_enter calls in {polls} bdev poller polls: {stats:?}"
    );
    assert!(enters > 0 && stats.enter_errors == 0, "{stats:?}");
    // The simulator's data area (a memfd) can be pinned: every aligned
    // read and write used it as a fixed buffer.
    match poller.fixed_buffers() {
        FixedBuffers::Registered => assert!(stats.fixed - before.fixed >= 100_000, "{stats:?}"),
        other => eprintln!("fixed buffers {other:?} here: plain reads and writes were counted"),
    }
    assert_eq!(
        stats.bounced, 0,
        "the data area meets the O_DIRECT alignment"
    );
}

#[test]
fn striped_file_randrw_allocates_nothing_per_command() {
    // The count is taken first: a skip's report allocates, and must not
    // land in another test's counting window.
    let count = ProcessCount::take();
    if !can_run(&[Need::IoUring]) {
        return;
    }
    let dir = test_support::scratch::disk_dir("zero-alloc-");
    let children: Vec<BdevRef> = (0..2)
        .map(|i| file_bdev(dir.path(), &format!("c{i}"), SIZE / 2) as BdevRef)
        .collect();
    let striped: BdevRef = Arc::new(StripedBdev::new("striped", children, 8).unwrap());
    let (mut job, mut device, mut poller) = path(striped, Pattern::RandRw, 64 << 10, true);
    let (allocations, _) = steady_state(&count, &mut job, &mut device, &mut poller, DEFAULT_COUNTS);
    assert_eq!(allocations, 0);
}

#[test]
fn nvme_randrw_with_verify_allocates_nothing_and_enters_once_per_poll_at_most() {
    // The count is taken first: a skip's report allocates, and must not
    // land in another test's counting window.
    let count = ProcessCount::take();
    if !can_run(&[Need::IoUring, Need::NvmeGeneric]) {
        return;
    }
    let path = nvme_device().expect("checked by can_run");
    let nvme =
        Arc::new(NvmeBdev::open("nvme", NvmeOptions::new(&path)).unwrap_or_else(|e| panic!("{e}")));
    let bdev: BdevRef = nvme.clone();
    let (mut job, mut device, mut poller) = stacked_path(bdev, Pattern::RandRw, 4096, false);
    let before = nvme.stats();
    let (allocations, polls) = steady_state(
        &count,
        &mut job,
        &mut device,
        &mut poller,
        EMULATED_DRIVE_COUNTS,
    );
    let stats = nvme.stats();
    assert_eq!(allocations, 0);
    // Counted from before the warm-up, as the channel's polls: the bdev
    // poller polls its channel once per poll (and `polls` counts the
    // measured window only).
    let enters = stats.submit_syscalls - before.submit_syscalls;
    let channel_polls = stats.polls - before.polls;
    assert!(
        channel_polls >= polls,
        "{channel_polls} channel polls in {polls} bdev poller polls"
    );
    assert!(
        enters <= channel_polls,
        "{enters} io_uring_enter calls in {channel_polls} polls: {stats:?}"
    );
    assert!(
        enters > 0 && stats.enter_errors == 0 && stats.status_errors == 0,
        "{stats:?}"
    );
    match poller.fixed_buffers() {
        FixedBuffers::Registered => assert!(
            stats.fixed - before.fixed >= EMULATED_DRIVE_COUNTS.window,
            "{stats:?}"
        ),
        other => eprintln!("fixed buffers {other:?} here: plain commands were counted"),
    }
    assert_eq!(stats.bounced, 0, "the data area is page-aligned");
}

#[test]
fn rbd_randrw_with_verify_allocates_nothing_per_command() {
    // The count first (see the file test); librbd's own allocations (the
    // AIO completion, its requests, the copy of each write's data) are
    // C++ `new`s on librbd's heap, which this Rust allocator does not see:
    // what is counted is the dataplane's side, the whole path of it.
    let count = ProcessCount::take();
    let Some(cluster) = test_support::ceph::cluster() else {
        return;
    };
    let image = cluster.create_image("zero_alloc", SIZE);
    let mut options = RbdOptions::new("rbd", image.pool(), image.name());
    options.conf = Some(cluster.conf().to_owned());
    options.block_size = BLOCK;
    let bdev: BdevRef = Arc::new(RbdBdev::open(options).unwrap());
    let (mut job, mut device, mut poller) = stacked_path(bdev, Pattern::RandRw, 4096, true);
    let (allocations, _) = steady_state(&count, &mut job, &mut device, &mut poller, DEFAULT_COUNTS);
    assert_eq!(allocations, 0);
}

#[test]
fn the_counter_sees_allocations() {
    // Guards against a counter that could never fail.
    let count = ProcessCount::take();
    let v = count.counting(|| std::hint::black_box(vec![1u8; 100]));
    drop(v);
    assert!(count.allocations() >= 1);
}
