//! A command stuck in a fault bdev under the SCST path, ended by the
//! kernel's task management: TASK_MGMT_RECEIVED (ABORT TASK) reaches the
//! bdev, the command completes aborted, its slot and buffer are freed, the
//! task management function succeeds and the LUN serves on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bdev::fault::{FaultAction, FaultRule, OpSet};
use bdev::{BdevRef, FaultBdev, IoOp, RamBdev};
use dataplane::exec::status;
use dataplane::scst::abi::*;
use dataplane::scst::device::ScstDeviceConfig;
use sim::scst::{ScstSimConfig, SimData};
use test_support::scst::options;

use super::device::{cdb10, settle, Rig};

const BS: u32 = 4096;
const STUCK_LBA: u64 = 100;

type Done = (u64, u8, bool);

/// Turns the rig until `n` more commands completed (tag, status, aborted),
/// failing after 10 s. The device may hold replies for a while (reply
/// coalescing is timed), so a fixed number of turns would be a race.
fn reap(rig: &mut Rig, n: usize) -> Vec<Done> {
    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {done:?} of {n} completions"
        );
        rig.turn();
        rig.init
            .reap(|c| done.push((c.tag, c.status, c.aborted)))
            .unwrap();
    }
    done
}

#[test]
fn abort_task_ends_a_command_stuck_in_the_bdev() {
    let ram: BdevRef = Arc::new(RamBdev::new("ram", BS, 1024).unwrap());
    let rule = FaultRule::new(OpSet::NONE.with(IoOp::Read), FaultAction::Stick)
        .in_range(STUCK_LBA, STUCK_LBA + 1);
    let fault = Arc::new(FaultBdev::new("f0", ram, vec![rule], 1).unwrap());
    let opt = options(SCST_USER_MEM_REUSE_ALL, SCST_USER_ON_FREE_CMD_CALL, 0);
    let mut rig = Rig::over(
        Arc::clone(&fault) as BdevRef,
        opt,
        ScstSimConfig::default(),
        ScstDeviceConfig::default(),
        256,
        false,
    );

    // The stuck read and three others.
    for (tag, lba) in [(1, STUCK_LBA), (2, 0), (3, 1), (4, STUCK_LBA + 1)] {
        let cdb = cdb10(0x28, lba, 1);
        rig.init
            .submit(rig.sess, &cdb, SimData::In(BS as usize), tag)
            .unwrap();
    }
    let mut done = reap(&mut rig, 3);
    for _ in 0..20 {
        rig.turn();
    }
    rig.init
        .reap(|c| done.push((c.tag, c.status, c.aborted)))
        .unwrap();
    done.sort_unstable();
    assert_eq!(
        done,
        [
            (2, status::GOOD, false),
            (3, status::GOOD, false),
            (4, status::GOOD, false)
        ],
        "the others complete; the stuck one waits"
    );
    assert_eq!(rig.dev.executing(), 1);
    assert_eq!((fault.stats().stuck, fault.stats().aborted), (1, 0));

    let tm = rig
        .init
        .task_mgmt(rig.sess, SCST_ABORT_TASK, Some(1))
        .unwrap();
    let done = reap(&mut rig, 1);
    assert_eq!(done[0].0, 1);
    assert!(
        done[0].2 || done[0].1 == status::TASK_ABORTED,
        "aborted: {done:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.init.tm_result(tm).is_none() {
        assert!(
            Instant::now() < deadline,
            "the task management never finished"
        );
        rig.turn();
    }
    assert_eq!(rig.init.tm_result(tm), Some(SCST_MGMT_STATUS_SUCCESS));
    assert_eq!(rig.dev.stats().snapshot().aborts, 1);
    assert_eq!(fault.stats().aborted, 1, "the abort reached the bdev");

    // Nothing leaks, and the LUN serves on.
    settle(&mut rig);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rig.dev.is_drained() {
        assert!(Instant::now() < deadline, "the device did not drain");
        rig.turn();
    }
    assert_eq!(rig.dev.executing(), 0);
    assert_eq!(rig.dev.pool().buffers_in_use(), 0);
    let cdb = cdb10(0x28, 5, 1);
    rig.init
        .submit(rig.sess, &cdb, SimData::In(BS as usize), 9)
        .unwrap();
    assert_eq!(reap(&mut rig, 1), [(9, status::GOOD, false)]);
}
