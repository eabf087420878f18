//! Simulator flows beyond plain I/O: task management, the handler's death
//! (unjam), sessions, the SGV cache (reuse, eviction, FLUSH_CACHE,
//! PREALLOC_BUFFER), ON_FREE_CMD contents, WRITE SAME offload, COMPARE AND
//! WRITE, commands the core answers itself, unit attentions, READ CAPACITY
//! snooping and the ready-list order.

use std::time::Duration;

use crate::handler::*;
use dataplane::scst::abi::*;
use dataplane::scst::driver::ScstDriver;
use nix::errno::Errno;
use sim::scst::{ScstSim, ScstSimConfig, ScstSimInitiator, SimData, SimError, SimSubmitError};

/// The completions waiting, by tag.
fn reap(ini: &mut ScstSimInitiator) -> Vec<Done> {
    let mut done = reap_all(ini);
    done.sort_by_key(|d| d.tag);
    done
}

fn config() -> ScstSimConfig {
    ScstSimConfig {
        suspend_timeout: Duration::from_millis(20),
        ..ScstSimConfig::default()
    }
}

fn opt(on_free: u8, reuse: u8) -> ScstUserOpt {
    options(reuse, on_free, SCST_USER_PARSE_STANDARD)
}

const TUR: [u8; 6] = [0; 6];

fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    rw_cdb(false, 10, u64::from(lba), u32::from(blocks))
}

fn write10(lba: u32, blocks: u16) -> Vec<u8> {
    rw_cdb(true, 10, u64::from(lba), u32::from(blocks))
}

#[test]
fn abort_task_of_a_command_in_the_handler() {
    for (handler_result, expected) in [
        (0, SCST_MGMT_STATUS_SUCCESS),
        (SCST_MGMT_STATUS_TASK_NOT_EXIST, SCST_MGMT_STATUS_SUCCESS),
        (SCST_MGMT_STATUS_REJECTED, SCST_MGMT_STATUS_REJECTED),
    ] {
        let (mut h, mut ini, s) = setup(
            config(),
            opt(SCST_USER_ON_FREE_CMD_CALL, SCST_USER_MEM_REUSE_ALL),
            64,
            512,
        );
        h.hold_exec = true;
        h.tm_done_result = handler_result;
        ini.submit(s, &read10(0, 1), SimData::In(512), 42).unwrap();
        h.poll();
        assert_eq!(h.held.len(), 1);
        let exec_h = h.held[0].cmd_h;
        let tm = ini.task_mgmt(s, SCST_ABORT_TASK, Some(42)).unwrap();
        h.poll();
        assert_eq!(h.tm_log.len(), 1);
        let (sub, t) = h.tm_log[0];
        assert_eq!(sub, subcode::TASK_MGMT_RECEIVED);
        assert_eq!(
            (t.fn_, t.cmd_h_to_abort, t.sess_h),
            (SCST_ABORT_TASK, exec_h, s)
        );
        // The command is still the handler's: no TASK_MGMT_DONE yet.
        h.run_until_idle();
        assert_eq!(h.counts.tm_done, 0);
        assert_eq!(ini.tm_result(tm), None);
        // The handler finishes it; the initiator sees it aborted (no
        // response), and only then TASK_MGMT_DONE comes.
        h.release_held();
        h.run_until_idle();
        assert_eq!(h.counts.tm_done, 1);
        assert_eq!(h.tm_log[1].0, subcode::TASK_MGMT_DONE);
        assert_eq!(ini.tm_result(tm), Some(expected));
        let d = reap(&mut ini);
        assert_eq!(d.len(), 1);
        assert!(d[0].aborted);
        assert_eq!((d[0].status, d[0].data.len()), (0x40, 0));
        // ON_FREE_CMD reports the delivery as aborted.
        h.hold_exec = false;
        let (res, _, cmds) = h.raw(&[], 4);
        assert_eq!(res, Ok(()));
        let f = cmds[0].on_free_cmd();
        assert_eq!(cmds[0].subcode, subcode::ON_FREE_CMD);
        assert_eq!(
            (f.delivery_status, f.buffer_cached),
            (SCST_CMD_DELIVERY_ABORTED, 1)
        );
    }
}

#[test]
fn aborted_commands_the_handler_has_not_seen_never_reach_it() {
    let (mut h, mut ini, s) = setup(
        config(),
        opt(SCST_USER_ON_FREE_CMD_CALL, SCST_USER_MEM_NO_REUSE),
        64,
        512,
    );
    h.hold_exec = true;
    for tag in 0..3 {
        ini.submit(s, &TUR, SimData::None, tag).unwrap();
    }
    // One EXEC fetched; the other two are ready but unseen.
    h.budget = 1;
    h.poll();
    assert_eq!(h.held.len(), 1);
    let seen_h = h.held[0].cmd_h;
    // A fourth command not even processed by the core yet.
    ini.submit(s, &TUR, SimData::None, 3).unwrap();
    let tm = ini.task_mgmt(s, SCST_ABORT_TASK_SET, None).unwrap();
    // The unseen ones finished at once, aborted.
    let d = reap(&mut ini);
    assert_eq!(d.iter().map(|d| d.tag).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(d.iter().all(|d| d.aborted && d.status == 0x40));
    h.budget = 16;
    h.run_until_idle();
    // The handler saw only the first EXEC and TASK_MGMT_RECEIVED.
    assert_eq!(h.counts.exec, 1);
    assert_eq!(h.counts.tm_received, 1);
    assert_eq!(h.tm_log[0].1.cmd_h_to_abort, 0);
    assert_eq!(ini.tm_result(tm), None);
    h.release_held();
    h.run_until_idle();
    assert_eq!(ini.tm_result(tm), Some(0));
    let d = reap(&mut ini);
    assert!(d[0].aborted);
    h.run_until_idle();
    // Unseen commands get no ON_FREE_CMD: only the seen one.
    assert_eq!(h.counts.on_free, 1);
    assert!(h
        .log
        .iter()
        .any(|&(ch, sc)| ch == seen_h && sc == subcode::ON_FREE_CMD));
}

#[test]
fn tm_without_commands_and_abort_of_an_unknown_tag() {
    let (mut h, mut ini, s) = setup(
        config(),
        opt(SCST_USER_ON_FREE_CMD_IGNORE, SCST_USER_MEM_REUSE_ALL),
        64,
        512,
    );
    let tm = ini.task_mgmt(s, SCST_ABORT_TASK, Some(999)).unwrap();
    assert_eq!(ini.tm_result(tm), Some(SCST_MGMT_STATUS_TASK_NOT_EXIST));
    h.run_until_idle();
    assert_eq!(h.tm_log.len(), 0, "the core answers it alone");
    let tm = ini.task_mgmt(s, SCST_LUN_RESET, None).unwrap();
    h.run_until_idle();
    assert_eq!(
        h.tm_log.iter().map(|t| (t.0, t.1.fn_)).collect::<Vec<_>>(),
        vec![
            (subcode::TASK_MGMT_RECEIVED, SCST_LUN_RESET),
            (subcode::TASK_MGMT_DONE, SCST_LUN_RESET)
        ]
    );
    assert_eq!(ini.tm_result(tm), Some(0));
    let tm = ini.task_mgmt(s, 77, None).unwrap();
    assert_eq!(ini.tm_result(tm), Some(SCST_MGMT_STATUS_FN_NOT_SUPPORTED));
}

#[test]
fn lun_reset_waits_for_every_session() {
    let (mut h, mut ini, s0) = setup(
        config(),
        opt(SCST_USER_ON_FREE_CMD_IGNORE, SCST_USER_MEM_REUSE_ALL),
        64,
        512,
    );
    let s1 = ini
        .attach_session_with(1, "second", || {
            h.poll();
        })
        .unwrap();
    h.run_until_idle();
    h.hold_exec = true;
    ini.submit(s0, &TUR, SimData::None, 1).unwrap();
    ini.submit(s1, &TUR, SimData::None, 2).unwrap();
    h.poll();
    assert_eq!(h.held.len(), 2);
    let tm = ini.task_mgmt(s0, SCST_LUN_RESET, None).unwrap();
    h.run_until_idle();
    assert_eq!(ini.tm_result(tm), None);
    // One finished is not enough.
    let last = h.held.pop().unwrap();
    h.release_held();
    h.run_until_idle();
    assert_eq!(ini.tm_result(tm), None);
    h.held.push(last);
    h.release_held();
    h.run_until_idle();
    assert_eq!(ini.tm_result(tm), Some(0));
    assert!(reap(&mut ini).iter().all(|d| d.aborted));
}

#[test]
fn handler_death_unjams_everything() {
    let (mut h, mut ini, s) = setup(
        config(),
        opt(SCST_USER_ON_FREE_CMD_CALL, SCST_USER_MEM_REUSE_ALL),
        64,
        512,
    );
    // A cached buffer in the pool.
    ini.submit(s, &write10(0, 1), SimData::Out(&[1; 512]), 100)
        .unwrap();
    h.run_until_idle();
    reap(&mut ini);
    h.run_until_idle();
    assert_eq!(ini.stats().cached_buffers, 1);
    h.hold_exec = true;
    ini.submit(s, &read10(0, 1), SimData::In(512), 1).unwrap(); // sent
    ini.submit(s, &TUR, SimData::None, 2).unwrap(); // queued
    h.budget = 1;
    h.poll();
    assert_eq!(h.held.len(), 1);
    ini.submit(s, &TUR, SimData::None, 3).unwrap(); // not processed
    ini.submit(s, &TUR, SimData::None, 4).unwrap(); // will be aborted
    let tm = ini.task_mgmt(s, SCST_ABORT_TASK, Some(4)).unwrap();
    let pending = ini.begin_attach_session(9, "late").unwrap();
    // A completed command not reaped yet keeps its data.
    drop(h);
    assert!(ini.is_gone());
    let d = reap(&mut ini);
    let by_tag = |t: u64| d.iter().find(|d| d.tag == t).unwrap().clone();
    assert_eq!(kcq(&by_tag(1)), (5, 0x25, 0), "sent: ILLEGAL REQUEST 25/00");
    assert_eq!(by_tag(2).status, 0x08, "queued: BUSY");
    assert_eq!(by_tag(3).status, 0x08, "unprocessed: BUSY");
    assert!(by_tag(4).aborted);
    assert_eq!(ini.tm_result(tm), Some(SCST_MGMT_STATUS_FAILED));
    assert_eq!(ini.poll_attach(pending), Err(SimError::AttachFailed(-14)));
    assert_eq!(
        ini.submit(s, &TUR, SimData::None, 5),
        Err(SimSubmitError::NoDevice)
    );
    assert_eq!(ini.begin_attach_session(0, "x"), Err(SimError::DeviceGone));
    let stats = ini.stats();
    assert_eq!((stats.cached_buffers, stats.live_handles), (0, 0));
    assert_eq!(ini.in_flight(), 0);
}

#[test]
fn completed_data_survives_the_handler() {
    let (mut h, mut ini, s) = setup(
        config(),
        opt(SCST_USER_ON_FREE_CMD_CALL, SCST_USER_MEM_NO_REUSE),
        64,
        512,
    );
    h.disk[..512].copy_from_slice(&pattern(3, 512));
    ini.submit(s, &read10(0, 1), SimData::In(512), 1).unwrap();
    h.run_until_idle();
    drop(h); // unmaps every handler buffer
    let d = reap(&mut ini);
    assert_eq!((d[0].status, &d[0].data), (0, &pattern(3, 512)));
}

#[test]
fn sessions_attach_and_detach() {
    let (drv, mut ini) = ScstSim::new(ScstSimConfig {
        attach_timeout: Duration::from_millis(30),
        ..config()
    })
    .unwrap();
    let mut h = Handler::new(
        drv,
        opt(SCST_USER_ON_FREE_CMD_IGNORE, SCST_USER_MEM_REUSE_ALL),
        64,
        512,
    );
    assert_eq!(
        ini.begin_attach_session(0, "a"),
        Err(SimError::NotRegistered)
    );
    h.register().unwrap();
    let s = ini
        .attach_session_with(7, "iqn.x:a", || {
            h.poll();
        })
        .unwrap();
    assert_eq!(h.sessions.get(&s), Some(&7));
    let first = h.log.iter().find(|l| l.1 == subcode::ATTACH_SESS).unwrap();
    let _ = first;
    // A refused attach.
    h.attach_result = -12;
    assert_eq!(
        ini.attach_session_with(1, "b", || {
            h.poll();
        }),
        Err(SimError::AttachFailed(-12))
    );
    // No answer in time.
    h.answer_attach = false;
    let res = ini.attach_session_with(2, "c", || {
        h.poll();
    });
    assert_eq!(res, Err(SimError::AttachTimeout));
    h.answer_attach = true;
    h.attach_result = 0;
    // REPORT LUNS and REQUEST SENSE are the core's: the handler sees
    // nothing.
    let before = h.log.len();
    let luns = [0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0];
    ini.submit(s, &luns, SimData::In(16), 1).unwrap();
    let rs = [0x03, 0, 0, 0, 18, 0];
    ini.submit(s, &rs, SimData::In(18), 2).unwrap();
    let short = [0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0];
    ini.submit(s, &short, SimData::In(8), 3).unwrap();
    h.run_until_idle();
    assert_eq!(h.log.len(), before);
    let d = reap(&mut ini);
    assert_eq!(d[0].data, [0, 0, 0, 8, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0]);
    assert_eq!((d[1].data[0], d[1].data[2], d[1].data.len()), (0x70, 0, 18));
    assert_eq!(kcq(&d[2]), (5, 0x24, 0));
    // Detach: not with commands in flight.
    h.hold_exec = true;
    ini.submit(s, &TUR, SimData::None, 4).unwrap();
    h.poll();
    assert_eq!(ini.detach_session(s), Err(SimError::SessionBusy));
    h.release_held();
    h.run_until_idle();
    reap(&mut ini);
    ini.detach_session(s).unwrap();
    h.run_until_idle();
    assert_eq!(h.counts.detach, 1);
    assert!(!h.sessions.contains_key(&s));
    assert_eq!(
        ini.submit(s, &TUR, SimData::None, 5),
        Err(SimSubmitError::UnknownSession)
    );
}

#[test]
fn attach_blocks_while_another_thread_polls() {
    let (drv, mut ini) = ScstSim::new(config()).unwrap();
    let mut h = Handler::new(
        drv,
        opt(SCST_USER_ON_FREE_CMD_IGNORE, SCST_USER_MEM_REUSE_ALL),
        64,
        512,
    );
    h.register().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let t = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Acquire) {
            if h.poll() == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        h
    });
    let s = ini.attach_session(3, "threaded").unwrap();
    stop.store(true, std::sync::atomic::Ordering::Release);
    let h = t.join().unwrap();
    assert_eq!(h.sessions.get(&s), Some(&3));
}

#[test]
fn cached_buffers_are_reused_and_evicted_by_their_owner() {
    let (mut h, mut ini, s) = setup(
        ScstSimConfig {
            sgv_cache_bytes: 8192,
            ..config()
        },
        opt(SCST_USER_ON_FREE_CMD_IGNORE, SCST_USER_MEM_REUSE_ALL),
        64,
        512,
    );
    // Write 1: ALLOC_MEM (class 4 KiB); its buffer is cached at free.
    ini.submit(s, &write10(0, 1), SimData::Out(&[1; 512]), 1)
        .unwrap();
    h.run_until_idle();
    reap(&mut ini);
    assert_eq!((h.counts.alloc, ini.stats().cached_buffers), (1, 1));
    let alloc_h = h.log.iter().find(|l| l.1 == subcode::ALLOC_MEM).unwrap().0;
    // Write 2 of the same class (8 blocks = 4 KiB): no ALLOC_MEM, the EXEC
    // carries the cached pbuf.
    ini.submit(s, &write10(8, 8), SimData::Out(&[2; 4096]), 2)
        .unwrap();
    h.run_until_idle();
    assert_eq!(h.counts.alloc, 1);
    // Both EXECs carried a pbuf: the ALLOC_MEM one, then the cached one.
    assert_eq!(h.counts.exec_cached_pbuf, 2);
    reap(&mut ini);
    // A read of the class reuses it too (reuse ALL).
    ini.submit(s, &read10(8, 8), SimData::In(4096), 3).unwrap();
    h.run_until_idle();
    let d = reap(&mut ini);
    assert_eq!(d[0].data, vec![2u8; 4096]);
    // Two more buffers of other classes, 8 and 16 KiB, with an 8 KiB
    // budget. Their ALLOC_MEMs go to the head of the ready list (LIFO), so
    // the 16 KiB command completes first: 4 + 16 KiB idle → the 4 KiB
    // buffer (the oldest) goes, then the 16 KiB one (over budget alone);
    // the 8 KiB one then fits. Each eviction names the command that
    // supplied the buffer.
    ini.submit(s, &write10(16, 16), SimData::Out(&[3; 8192]), 4)
        .unwrap();
    ini.submit(s, &write10(32, 32), SimData::Out(&[4; 16384]), 5)
        .unwrap();
    h.run_until_idle();
    let allocs: Vec<u32> = h
        .log
        .iter()
        .filter(|l| l.1 == subcode::ALLOC_MEM)
        .map(|l| l.0)
        .collect();
    assert_eq!(allocs.len(), 3);
    let d = reap(&mut ini);
    assert!(d.iter().all(|d| d.status == 0));
    h.run_until_idle();
    let stats = ini.stats();
    assert_eq!(
        (stats.evictions, stats.cached_buffers, stats.cached_bytes),
        (2, 1, 8192)
    );
    let freed: Vec<u32> = h
        .log
        .iter()
        .filter(|l| l.1 == subcode::ON_CACHED_MEM_FREE)
        .map(|l| l.0)
        .collect();
    // allocs[1] is tag 5's (fetched first), allocs[2] tag 4's.
    assert_eq!(freed, vec![alloc_h, allocs[1]]);
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    assert_eq!(h.live_buffers(), 1);
    h.drv.flush_cache().unwrap();
    h.run_until_idle();
    assert_eq!(h.live_buffers(), 0);
}

#[test]
fn flush_cache_evicts_everything_when_idle() {
    let (mut h, mut ini, s) = setup(
        config(),
        opt(SCST_USER_ON_FREE_CMD_CALL, SCST_USER_MEM_REUSE_ALL),
        64,
        512,
    );
    for i in 0..4u16 {
        ini.submit(
            s,
            &write10(u32::from(i) * 8, 1 << i),
            SimData::Out(&vec![5; 512 << i]),
            u64::from(i),
        )
        .unwrap();
    }
    h.run_until_idle();
    // Commands in flight (completed, not reaped): EBUSY after the suspend
    // timeout.
    assert_eq!(h.drv.flush_cache(), Err(Errno::EBUSY));
    reap(&mut ini);
    h.run_until_idle();
    let cached = ini.stats().cached_buffers;
    assert!(cached >= 1);
    h.drv.flush_cache().unwrap();
    assert_eq!(ini.stats().cached_buffers, 0);
    h.run_until_idle();
    assert_eq!(h.counts.cached_free, cached);
    assert_eq!(h.live_buffers(), 0);
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    // The SGV purge from the initiator side works the same way.
    ini.submit(s, &write10(0, 1), SimData::Out(&[1; 512]), 9)
        .unwrap();
    h.run_until_idle();
    reap(&mut ini);
    h.run_until_idle();
    assert_eq!(ini.purge_cache(), 1);
    h.run_until_idle();
    assert_eq!(h.live_buffers(), 0);
}

#[test]
fn prealloc_buffers_serve_commands_and_come_back_by_their_handle() {
    let (mut h, mut ini, s) = setup(
        config(),
        opt(SCST_USER_ON_FREE_CMD_IGNORE, SCST_USER_MEM_REUSE_ALL),
        64,
        512,
    );
    let bad = h.alloc(8192, false);
    assert_eq!(h.drv.prealloc_buffer(bad, 4096, false), Err(Errno::EINVAL));
    let odd = h.alloc(3 * 4096, true);
    assert_eq!(
        h.drv.prealloc_buffer(odd, 3 * 4096, false),
        Err(Errno::ENOMEM)
    );
    assert_eq!(
        h.drv.prealloc_buffer(0x1000, 4096, false),
        Err(Errno::EFAULT)
    );
    let pbuf = h.alloc(8192, true);
    let handle = h.drv.prealloc_buffer(pbuf, 8192, false).unwrap();
    h.own(pbuf, handle);
    assert_eq!(ini.stats().cached_buffers, 1);
    // An 8 KiB write takes it: no ALLOC_MEM.
    ini.submit(s, &write10(0, 16), SimData::Out(&pattern(1, 8192)), 1)
        .unwrap();
    h.run_until_idle();
    assert_eq!(h.counts.alloc, 0);
    let exec = h.log.iter().find(|l| l.1 == subcode::EXEC).unwrap();
    let _ = exec;
    assert_eq!(h.counts.exec_cached_pbuf, 1);
    reap(&mut ini);
    assert_eq!(&h.disk[..8192], &pattern(1, 8192)[..]);
    h.drv.flush_cache().unwrap();
    h.run_until_idle();
    assert!(h
        .log
        .iter()
        .any(|&(ch, sc)| ch == handle && sc == subcode::ON_CACHED_MEM_FREE));
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    assert_eq!(h.live_buffers(), 2); // `bad` and `odd`, never accepted
}

#[test]
fn on_free_cmd_reports_the_command() {
    let (mut h, mut ini, s) = setup(
        config(),
        opt(SCST_USER_ON_FREE_CMD_CALL, SCST_USER_MEM_NO_REUSE),
        64,
        512,
    );
    ini.submit(s, &read10(0, 2), SimData::In(1024), 1).unwrap();
    h.poll(); // EXEC; the handler allocates in its reply
    h.poll(); // the reply
    let given = {
        let (ch, _) = *h.log.iter().find(|l| l.1 == subcode::EXEC).unwrap();
        ch
    };
    reap(&mut ini);
    let pending = std::mem::take(&mut h.pending);
    let (res, _, cmds) = h.raw(&pending, 4);
    assert_eq!(res, Ok(()));
    assert_eq!(
        (cmds[0].cmd_h, cmds[0].subcode),
        (given, subcode::ON_FREE_CMD)
    );
    let f = cmds[0].on_free_cmd();
    assert_ne!(f.pbuf, 0);
    assert_eq!(
        (
            f.resp_data_len,
            f.buffer_cached,
            f.aborted,
            f.status,
            f.delivery_status
        ),
        (1024, 0, 0, 0, SCST_CMD_DELIVERY_SUCCESS)
    );
    h.handle(&cmds[0]);
    h.run_until_idle();
    assert_eq!(h.live_buffers(), 0);
}

#[test]
fn write_same_offloaded_to_the_core() {
    let (mut h, mut ini, s) = setup(
        ScstSimConfig {
            ws_max_write_bytes: 4096,
            ..config()
        },
        opt(SCST_USER_ON_FREE_CMD_CALL, SCST_USER_MEM_REUSE_ALL),
        256,
        512,
    );
    h.ws_offload = true;
    // WRITE SAME(16) of 20 blocks at 10, descriptors for two sub-ranges.
    h.ws_ranges = vec![(10, 3), (20, 10)];
    let mut ws = [0u8; 16];
    ws[0] = 0x93;
    ws[9] = 10;
    ws[13] = 20;
    let block = pattern(8, 512);
    ini.submit(s, &ws, SimData::Out(&block), 1).unwrap();
    h.run_until_idle();
    let d = reap(&mut ini);
    assert_eq!(d[0].status, 0);
    for b in 0..256usize {
        let want = if (10..13).contains(&b) || (20..30).contains(&b) {
            block.clone()
        } else {
            vec![0u8; 512]
        };
        assert_eq!(h.disk[b * 512..(b + 1) * 512], want[..], "block {b}");
    }
    // 3 blocks in one write, 10 blocks in 8 + 2 (4 KiB writes).
    assert_eq!(ini.stats().internal_cmds, 3);
    // Descriptor length 0: SCST writes the CDB's range; NDOB writes zeros.
    h.ws_ranges.clear();
    let mut ws10 = [0x41, 0, 0, 0, 0, 100, 0, 0, 4, 0];
    ini.submit(s, &ws10, SimData::Out(&block), 2).unwrap();
    h.run_until_idle();
    assert_eq!(reap(&mut ini)[0].status, 0);
    assert!(h.disk[100 * 512..104 * 512]
        .chunks(512)
        .all(|c| c == &block[..]));
    let mut ndob = [0u8; 16];
    ndob[0] = 0x93;
    ndob[1] = 0x01;
    ndob[9] = 101;
    ndob[13] = 2;
    ini.submit(s, &ndob, SimData::None, 3).unwrap();
    h.run_until_idle();
    assert_eq!(reap(&mut ini)[0].status, 0);
    assert!(h.disk[101 * 512..103 * 512].iter().all(|&b| b == 0));
    assert_eq!(&h.disk[100 * 512..101 * 512], &block[..]);
    // Internal EXECs name their parent.
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    // DO_WRITE_SAME on anything but WRITE SAME is refused.
    ws10[0] = 0x2A;
    let _ = ws10;
}

#[test]
fn do_write_same_replies_are_validated() {
    let (mut h, mut ini, s) = setup(
        config(),
        opt(SCST_USER_ON_FREE_CMD_IGNORE, SCST_USER_MEM_NO_REUSE),
        64,
        512,
    );
    let ws = [0x41, 0, 0, 0, 0, 1, 0, 0, 2, 0];
    let w = write10(0, 1);
    for (cdb, descs, status, want) in [
        (&ws[..], vec![(1u64, 1u64)], 0u8, Err(Errno::EINVAL)), // no terminator
        (&ws[..], vec![(1, 1), (0, 0)], 2, Err(Errno::EINVAL)), // status
        (&w[..], vec![(0, 0)], 0, Err(Errno::EINVAL)),          // not WRITE SAME
        (&ws[..], vec![(1, 2), (0, 0)], 0, Ok(())),
    ] {
        ini.submit(s, cdb, SimData::Out(&[6; 512]), 1).unwrap();
        let (_, _, cmds) = h.raw(&[], 4);
        let mut r = ScstUserReplyCmd {
            cmd_h: cmds[0].cmd_h,
            subcode: cmds[0].subcode,
            ..Default::default()
        };
        let pbuf = h.alloc(512, true);
        r.set_alloc_reply(&ScstUserScsiCmdReplyAllocMem { pbuf });
        let (_, _, cmds) = h.raw(&[r], 4);
        assert_eq!(cmds[0].subcode, subcode::EXEC);
        let d: Vec<ScstUserDataDescriptor> = descs
            .iter()
            .map(|&(usdd_lba, usdd_blocks)| ScstUserDataDescriptor {
                usdd_lba,
                usdd_blocks,
            })
            .collect();
        let mut er = ScstUserScsiCmdReplyExec {
            reply_type: SCST_EXEC_REPLY_DO_WRITE_SAME,
            status,
            ..Default::default()
        };
        er.set_write_same(&ReplyWriteSame {
            ws_descriptors_len: (d.len() * 16) as u16,
            ws_descriptors: d.as_ptr() as u64,
            ..Default::default()
        });
        let mut r = ScstUserReplyCmd {
            cmd_h: cmds[0].cmd_h,
            subcode: cmds[0].subcode,
            ..Default::default()
        };
        r.set_exec_reply(&er);
        let (res, _, _) = h.raw(&[r], 0);
        assert_eq!(res, want);
        h.run_until_idle();
        let done = reap(&mut ini);
        if want.is_ok() {
            assert_eq!(done[0].status, 0);
            assert!(h.disk[512..1536].iter().all(|&b| b == 6));
        } else {
            assert_eq!(kcq(&done[0]), (0x0B, 0x44, 0));
        }
    }
}

#[test]
fn compare_and_write_through_internal_commands() {
    let (mut h, mut ini, s) = setup(
        config(),
        opt(SCST_USER_ON_FREE_CMD_CALL, SCST_USER_MEM_REUSE_ALL),
        64,
        512,
    );
    let old = pattern(1, 1024);
    h.disk[4 * 512..6 * 512].copy_from_slice(&old);
    let new = pattern(2, 1024);
    let mut caw = [0u8; 16];
    caw[0] = 0x89;
    caw[9] = 4;
    caw[13] = 2;
    let mut data = old.clone();
    data.extend_from_slice(&new);
    ini.submit(s, &caw, SimData::Out(&data), 1).unwrap();
    h.run_until_idle();
    let d = reap(&mut ini);
    assert_eq!(d[0].status, 0, "{d:?}");
    assert_eq!(&h.disk[4 * 512..6 * 512], &new[..]);
    // The handler saw the parent's ALLOC_MEM (or a cached buffer), then a
    // READ(16) and a WRITE(16) with the parent's handle.
    assert_eq!(ini.stats().internal_cmds, 2);
    // A miscompare at byte 700: MISCOMPARE 1D/00, INFORMATION = 700, and
    // nothing written.
    let mut data = new.clone();
    data[700] ^= 0xFF;
    data.extend_from_slice(&old);
    ini.submit(s, &caw, SimData::Out(&data), 2).unwrap();
    h.run_until_idle();
    let d = reap(&mut ini);
    assert_eq!(kcq(&d[0]), (0x0E, 0x1D, 0x00));
    assert_eq!(d[0].sense[0], 0xF0); // VALID
    assert_eq!(
        u32::from_be_bytes(d[0].sense[3..7].try_into().unwrap()),
        700
    );
    assert_eq!(&h.disk[4 * 512..6 * 512], &new[..]);
    h.run_until_idle();
    assert!(h.errors.is_empty(), "{:?}", h.errors);
}

#[test]
fn capacity_change_is_a_unit_attention_and_block_size_follows_read_capacity() {
    let (mut h, mut ini, s) = setup(
        config(),
        opt(SCST_USER_ON_FREE_CMD_IGNORE, SCST_USER_MEM_REUSE_ALL),
        64,
        512,
    );
    h.drv.capacity_changed().unwrap();
    // INQUIRY skips unit attentions; the next READ gets it, once.
    let inq = [0x12, 0, 0, 0, 36, 0];
    ini.submit(s, &inq, SimData::In(36), 1).unwrap();
    h.run_until_idle();
    let d = reap(&mut ini);
    // (The test handler does not implement INQUIRY: INVALID OPCODE.)
    assert_eq!(kcq(&d[0]), (5, 0x20, 0), "INQUIRY carries no UA");
    ini.submit(s, &read10(0, 1), SimData::In(512), 2).unwrap();
    h.run_until_idle();
    assert_eq!(kcq(&reap(&mut ini)[0]), (6, 0x2A, 0x09));
    ini.submit(s, &read10(0, 1), SimData::In(512), 3).unwrap();
    h.run_until_idle();
    assert_eq!(reap(&mut ini)[0].status, 0);
    // READ CAPACITY(10) data says 4096-byte blocks: the core's parser
    // follows (a 1-block READ is now 4096 bytes).
    h.report_bs = 4096;
    ini.submit(s, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::In(8), 4)
        .unwrap();
    h.run_until_idle();
    assert_eq!(reap(&mut ini)[0].data[4..8], 4096u32.to_be_bytes());
    assert_eq!(ini.device().unwrap().block_size, 4096);
    ini.submit(s, &read10(0, 1), SimData::In(4096), 5).unwrap();
    let (_, _, cmds) = h.raw(&[], 4);
    assert_eq!(cmds[0].exec_cmd().bufflen, 4096);
}

#[test]
fn ready_order_management_first_then_head_of_queue() {
    let (mut h, mut ini, s) = setup(
        config(),
        opt(SCST_USER_ON_FREE_CMD_IGNORE, SCST_USER_MEM_NO_REUSE),
        64,
        512,
    );
    for tag in 0..3 {
        ini.submit(s, &TUR, SimData::None, tag).unwrap();
    }
    // The core processes all three; one EXEC is fetched.
    let (_, _, first) = h.raw(&[], 1);
    let pending = ini.begin_attach_session(5, "second").unwrap();
    let tm = ini.task_mgmt(s, SCST_CLEAR_ACA, None).unwrap();
    ini.submit_with_queue_type(s, &TUR, SimData::None, 10, SCST_CMD_QUEUE_HEAD_OF_QUEUE)
        .unwrap();
    let (res, _, cmds) = h.raw(&[], 16);
    assert_eq!(res, Ok(()));
    let order: Vec<u32> = cmds.iter().map(|c| c.subcode).collect();
    assert_eq!(
        order,
        vec![
            subcode::ATTACH_SESS,
            subcode::TASK_MGMT_RECEIVED,
            subcode::EXEC, // HEAD OF QUEUE
            subcode::EXEC,
            subcode::EXEC,
        ]
    );
    assert_eq!(cmds[2].exec_cmd().queue_type, SCST_CMD_QUEUE_HEAD_OF_QUEUE);
    for c in first.iter().chain(cmds.iter()) {
        h.handle(c);
    }
    h.run_until_idle();
    assert!(ini.poll_attach(pending).unwrap());
    assert_eq!(ini.tm_result(tm), Some(0));
    assert_eq!(reap(&mut ini).len(), 4);
}

#[test]
fn cmd_handles_are_unique_and_parse_call_sees_every_field() {
    let (mut h, mut ini, s) = setup(
        config(),
        options(
            SCST_USER_MEM_REUSE_ALL,
            SCST_USER_ON_FREE_CMD_CALL,
            SCST_USER_PARSE_CALL,
        ),
        64,
        512,
    );
    ini.submit(s, &write10(3, 2), SimData::Out(&[1; 1024]), 1)
        .unwrap();
    let (_, _, cmds) = h.raw(&[], 4);
    let owner = cmds[0].cmd_h;
    let p = cmds[0].parse_cmd();
    assert_eq!(cmds[0].subcode, subcode::PARSE);
    assert_eq!(
        (
            p.sess_h,
            p.cdb_len,
            p.lba,
            p.data_len,
            p.bufflen,
            p.data_direction,
            p.expected_values_set,
            p.expected_data_direction,
            p.expected_transfer_len,
            p.queue_type,
            p.timeout
        ),
        (
            s,
            10,
            3,
            1024,
            1024,
            SCST_DATA_WRITE,
            1,
            SCST_DATA_WRITE,
            1024,
            1,
            60
        )
    );
    assert_eq!(&p.cdb[..10], &write10(3, 2)[..]);
    assert_ne!(p.op_flags & SCST_WRITE_MEDIUM, 0);
    h.handle(&cmds[0]);
    h.run_until_idle();
    reap(&mut ini);
    h.run_until_idle();
    // Every handle the handler saw for a live ucmd was distinct: the
    // buffer owner's handle is still live (its buffer is cached), so the
    // next command gets another.
    ini.submit(s, &TUR, SimData::None, 2).unwrap();
    let (_, _, cmds) = h.raw(&[], 4);
    assert_ne!(cmds[0].cmd_h, owner);
    assert_eq!(ini.stats().live_handles, 2);
}
