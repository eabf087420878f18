//! Steady state of the SCST path allocates nothing per command: the
//! simulated kernel (inside the device's driver calls), `ScstDevice`, the
//! `Lun`, the port and the bdev poller over a RAM bdev, under the counting
//! allocator, counting this thread's allocations. After a warm-up, 100 000+
//! commands (4 KiB to 64 KiB random reads and writes at queue depth 64,
//! with kernel buffer-cache evictions) must complete without a single
//! allocation in the device's polls. The same over a `file` bdev, its
//! io_uring given the pool's arena as fixed buffers.

use std::sync::Arc;

use bdev::file::{FileBdev, FileOptions};
use bdev::BdevRef;
use dataplane::exec::status;
use dataplane::port::FixedBuffers;
use dataplane::scst::abi::*;
use dataplane::scst::device::ScstDeviceConfig;
use reactor::Poller;
use sim::scst::{ScstSimConfig, SimData};
use test_support::alloc::thread_allocations;
use test_support::skip::{can_run, Need};

use crate::device::Rig;

const BS: usize = 4096;
const BLOCKS: u64 = 16384; // 64 MiB

#[test]
fn steady_state_allocates_nothing_per_command() {
    steady_state(false, None);
}

/// As `dataplane bench` runs it: pinned buffers copied directly, data-in
/// read at reap outside the simulator's lock.
#[test]
fn steady_state_with_trusted_buffers_allocates_nothing_per_command() {
    steady_state(true, None);
}

#[test]
fn steady_state_over_a_file_bdev_allocates_nothing_per_command() {
    if !can_run(&[Need::IoUring]) {
        return;
    }
    let dir = test_support::scratch::disk_dir("scst-alloc-");
    let mut options = FileOptions::new(dir.path().join("disk"));
    options.size = Some(BLOCKS * BS as u64);
    options.block_size = Some(BS as u32);
    let file = Arc::new(FileBdev::open("file", options).unwrap());
    steady_state(true, Some(file));
}

/// Over a RAM bdev, or over `file`.
fn steady_state(trust: bool, file: Option<Arc<FileBdev>>) {
    let sim = ScstSimConfig {
        // Small enough that buffers are evicted (ON_CACHED_MEM_FREE) and
        // fresh ones allocated from the pool throughout.
        sgv_cache_bytes: 1 << 20,
        ..ScstSimConfig::default()
    };
    // Memory reuse ALL with ON_FREE_CMD CALL: every subcommand kind of the
    // data path (ALLOC_MEM, EXEC with and without pbuf, ON_FREE_CMD,
    // ON_CACHED_MEM_FREE) occurs.
    let opt = ScstUserOpt {
        memory_reuse_type: SCST_USER_MEM_REUSE_ALL,
        on_free_cmd_type: SCST_USER_ON_FREE_CMD_CALL,
        tst: 1,
        queue_alg: 1,
        ..Default::default()
    };
    let config = ScstDeviceConfig::default();
    let mut rig = match &file {
        Some(file) => Rig::over(Arc::clone(file) as BdevRef, opt, sim, config, 256, trust),
        None => Rig::build(opt, sim, config, 256, trust, BLOCKS),
    };

    let payload = vec![0x5Au8; 64 << 10];
    let mut data_in = vec![0u8; 64 << 10];
    let mut rng = test_support::rng::seeded(0x1234_5678_9ABC_DEF1);
    let mut tag = 0u64;
    let mut in_flight = 0usize;
    let mut completed = 0u64;
    // Returns (device allocations, initiator allocations) over `commands`
    // completions; `traced`: a backtrace is printed for each allocation of
    // the device path, so that a failure says where.
    let mut run = |rig: &mut Rig, commands: u64, traced: bool| -> (u64, u64) {
        let (mut device_allocs, mut initiator_allocs) = (0, 0);
        let start = completed;
        while completed - start < commands {
            let before = thread_allocations();
            while in_flight < 64 {
                let blocks = rng.u64(1..=16);
                let lba = rng.u64(..BLOCKS - blocks);
                let mut cdb = [0u8; 10];
                cdb[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
                cdb[7..9].copy_from_slice(&(blocks as u16).to_be_bytes());
                let len = blocks as usize * BS;
                let r = if rng.bool() {
                    cdb[0] = 0x28;
                    rig.init.submit(rig.sess, &cdb, SimData::In(len), tag)
                } else {
                    cdb[0] = 0x2A;
                    rig.init
                        .submit(rig.sess, &cdb, SimData::Out(&payload[..len]), tag)
                };
                r.unwrap();
                tag += 1;
                in_flight += 1;
            }
            rig.init.notify();
            let mid = thread_allocations();
            test_support::alloc::traced_if(traced, || {
                rig.dev.poll();
                rig.poller.poll();
                rig.dev.poll();
            });
            let after = thread_allocations();
            let n = rig
                .init
                .reap(|c| {
                    assert_eq!(c.status, status::GOOD);
                    c.copy_data_in(&mut data_in);
                })
                .unwrap();
            in_flight -= n;
            completed += n as u64;
            device_allocs += after - mid;
            initiator_allocs += (mid - before) + (thread_allocations() - after);
        }
        assert!(completed - start >= commands);
        (device_allocs, initiator_allocs)
    };
    // Warm up: the kernel's cache, the pool's split state, the latency
    // histogram and every preallocated list reach their working sizes.
    run(&mut rig, 20_000, false);
    let (device_allocs, initiator_allocs) = run(&mut rig, 100_000, true);
    eprintln!(
        "100 000 commands: {device_allocs} allocations in the device path, {initiator_allocs} \
         in the simulated initiator"
    );
    assert_eq!(device_allocs, 0, "device path allocated");
    let st = rig.dev.stats().snapshot();
    let sim = rig.init.stats();
    assert!(sim.evictions > 1000 && sim.cache_misses > 1000, "{sim:?}");
    assert!(
        st.alloc_mem > 500 && st.on_cached_mem_free > 1000 && st.on_free_cmd > 100_000,
        "{st:?}"
    );
    assert_eq!((st.bad_pbufs, st.bad_frees, st.busy), (0, 0, 0));
    if let Some(file) = file {
        let stats = file.stats();
        assert!(stats.completed >= 120_000, "{stats:?}");
        if rig.poller.fixed_buffers() == FixedBuffers::Registered {
            assert!(
                stats.fixed >= 100_000,
                "pool buffers are fixed buffers: {stats:?}"
            );
        }
    }
}
