//! The `scst_device` target: an [`ScstDevice`] against a scripted
//! scst_user kernel ([`ScriptedKernel`]): sessions, writes (ALLOC_MEM,
//! EXEC, ON_FREE_CMD), reads (EXEC with or without a cached buffer),
//! cache evictions, task management and failing exchanges, in an order
//! and with sizes, buffers and errnos from the input.
//!
//! Checks: no panic; every subcommand is answered exactly once (a reply
//! to something not awaiting one fails at once; at the end nothing awaits
//! an answer); a buffer handed to the kernel is not one it still holds
//! (in a live command or its cache); `resp_data_len` fits the buffer;
//! every iovec given to the executor lies inside the pool's arena; when
//! every command is freed and the cache evicted, the pool has no buffer
//! in use and refused no free.

use std::time::Duration;

use dataplane::frontend::CoalesceConfig;
use dataplane::scst::abi::*;
use dataplane::scst::device::{ScstDevice, ScstDeviceConfig};
use dataplane::scst::pool::{BufferPool, PoolConfig};
use nix::errno::Errno;

use crate::input::Input;
use crate::ring_exec::RecordingExecutor;
use crate::scst_kernel::{KCmd, ScriptedKernel, Stage};

const SESS: u64 = 0x5E55;
const READ_10: [u8; 10] = [0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0];
const WRITE_10: [u8; 10] = [0x2A, 0, 0, 0, 0, 8, 0, 0, 1, 0];

type Device = ScstDevice<ScriptedKernel, RecordingExecutor>;

fn exec_cmd(cmd: &KCmd, alloc_len: i32) -> ScstUserScsiCmdExec {
    let cdb = if cmd.write { WRITE_10 } else { READ_10 };
    let mut e = ScstUserScsiCmdExec {
        sess_h: SESS,
        cdb_len: 10,
        data_direction: if cmd.write {
            SCST_DATA_WRITE
        } else {
            SCST_DATA_READ
        },
        bufflen: cmd.len,
        data_len: i64::from(cmd.len),
        alloc_len,
        pbuf: cmd.pbuf,
        queue_type: SCST_CMD_QUEUE_SIMPLE,
        ..Default::default()
    };
    e.cdb[..10].copy_from_slice(&cdb);
    e
}

/// Queues the next subcommand of a command whose last one was answered.
fn advance(k: &ScriptedKernel, cmd_h: u32, cached: bool) {
    let mut s = k.state();
    let Some(mut cmd) = s.cmds.get(&cmd_h).copied() else {
        return;
    };
    if !cmd.replied {
        return;
    }
    let mut get = ScstUserGetCmd {
        cmd_h,
        ..Default::default()
    };
    match cmd.stage {
        Stage::Alloc if cmd.pbuf == 0 => {
            // No memory: the core answers BUSY; the command is gone.
            s.cmds.remove(&cmd_h);
            return;
        }
        Stage::Alloc => {
            get.subcode = subcode::EXEC;
            get.set_exec_cmd(&exec_cmd(&cmd, 0));
            cmd.stage = Stage::Exec;
        }
        Stage::Exec => {
            get.subcode = subcode::ON_FREE_CMD;
            get.set_on_free_cmd(&ScstUserScsiOnFreeCmd {
                pbuf: cmd.pbuf,
                buffer_cached: u8::from(cached && cmd.pbuf != 0),
                ..Default::default()
            });
            if cached && cmd.pbuf != 0 {
                s.cached.insert(cmd.pbuf);
            }
            cmd.stage = Stage::Free;
        }
        Stage::Free => return,
    }
    cmd.replied = false;
    s.cmds.insert(cmd_h, cmd);
    s.queue.push_back(get);
}

fn poll(dev: &mut Device) {
    reactor::Poller::poll(dev);
}

/// The target.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let reuse = input.below(4) as u8;
    let options = ScstUserOpt {
        parse_type: SCST_USER_PARSE_STANDARD,
        on_free_cmd_type: SCST_USER_ON_FREE_CMD_CALL,
        memory_reuse_type: reuse,
        partial_transfers_type: SCST_USER_PARTIAL_TRANSFERS_NOT_SUPPORTED,
        tst: 1,
        queue_alg: 1,
        ..Default::default()
    };
    let max_buffer = 4096usize << input.below(4);
    let Ok(pool) = BufferPool::new(PoolConfig {
        max_bytes: max_buffer * (1 + input.below(4)),
        max_buffer_bytes: max_buffer,
        populate: false,
    }) else {
        return;
    };
    let (arena, _mapping) = pool.arena();
    let area = (arena.base as usize, arena.base as usize + arena.len);
    let kernel = ScriptedKernel::new(options);
    let config = ScstDeviceConfig {
        name: "fuzz".into(),
        budget: 1 + input.below(8),
        coalesce: CoalesceConfig {
            max_hold: Duration::ZERO,
            ..CoalesceConfig::default()
        },
        idle_poll_interval: Duration::ZERO,
        track_latency: false,
        ..ScstDeviceConfig::default()
    };
    let executor = RecordingExecutor::new(1 + input.below(8) as u32, area).allowing_own_buffers();
    let Ok(mut dev) = ScstDevice::new(kernel.clone(), executor, pool, config) else {
        return;
    };
    {
        let mut s = kernel.state();
        let h = s.next_h();
        let mut get = ScstUserGetCmd {
            cmd_h: h,
            subcode: subcode::ATTACH_SESS,
            ..Default::default()
        };
        get.set_sess(&ScstUserSess {
            sess_h: SESS,
            lun: 0,
            threads_num: 0,
            rd_only: 0,
            _pad0: 0,
            scsi_transport_version: 0,
            phys_transport_version: 0,
            initiator_name: [0; SCST_MAX_EXTERNAL_NAME],
            target_name: [0; SCST_MAX_EXTERNAL_NAME],
        });
        s.queue.push_back(get);
    }
    let mut rounds = 0;
    while !input.is_empty() && rounds < 256 {
        rounds += 1;
        match input.below(16) {
            0..=2 => {
                // A new command: a write starts with ALLOC_MEM, a read with
                // EXEC (a cached buffer, or none and ALLOC_LEN).
                let write = input.chance(50);
                let len = 512 * (1 + input.below(2 * max_buffer / 512)) as i32;
                let mut s = kernel.state();
                let h = s.next_h();
                let cached = s.cached.iter().nth(input.below(8)).copied();
                let reuse_cached = !write && cached.is_some() && input.chance(50);
                let mut cmd = KCmd {
                    stage: Stage::Alloc,
                    replied: false,
                    pbuf: 0,
                    len,
                    write,
                };
                let mut get = ScstUserGetCmd {
                    cmd_h: h,
                    ..Default::default()
                };
                if write {
                    get.subcode = subcode::ALLOC_MEM;
                    let mut a = ScstUserScsiCmdAllocMem {
                        sess_h: SESS,
                        cdb_len: 10,
                        alloc_len: len,
                        data_direction: SCST_DATA_WRITE,
                        queue_type: SCST_CMD_QUEUE_SIMPLE,
                        ..Default::default()
                    };
                    a.cdb[..10].copy_from_slice(&WRITE_10);
                    get.set_alloc_cmd(&a);
                } else {
                    if reuse_cached {
                        // The kernel takes the buffer out of its cache.
                        let pbuf = cached.unwrap();
                        s.cached.remove(&pbuf);
                        cmd.pbuf = pbuf;
                        // Every pool buffer holds at least one page.
                        cmd.len = cmd.len.min(4096);
                    }
                    get.subcode = subcode::EXEC;
                    get.set_exec_cmd(&exec_cmd(&cmd, if cmd.pbuf == 0 { len } else { 0 }));
                    cmd.stage = Stage::Exec;
                }
                s.cmds.insert(h, cmd);
                s.queue.push_back(get);
            }
            3..=5 => {
                let handles: Vec<u32> = kernel.state().cmds.keys().copied().collect();
                if !handles.is_empty() {
                    let h = handles[input.below(handles.len())];
                    advance(&kernel, h, reuse != 0 && input.chance(50));
                }
            }
            6..=8 => {
                let (index, len, good) = (input.below(16), input.below(1 << 16), input.chance(90));
                dev.executor_mut().complete(index, len, good);
            }
            9 => {
                // Evict a cached buffer.
                let mut s = kernel.state();
                if let Some(pbuf) = s.cached.iter().nth(input.below(8)).copied() {
                    s.cached.remove(&pbuf);
                    let h = s.next_h();
                    let mut get = ScstUserGetCmd {
                        cmd_h: h,
                        subcode: subcode::ON_CACHED_MEM_FREE,
                        ..Default::default()
                    };
                    get.set_on_cached_mem_free(&ScstUserOnCachedMemFree { pbuf });
                    s.queue.push_back(get);
                }
            }
            10 => {
                // Task management: abort one command or all.
                let mut s = kernel.state();
                let target = s.cmds.keys().nth(input.below(8)).copied().unwrap_or(0);
                let tm = ScstUserTm {
                    sess_h: SESS,
                    fn_: if input.chance(50) {
                        SCST_ABORT_TASK
                    } else {
                        SCST_ABORT_TASK_SET
                    },
                    cmd_h_to_abort: target,
                    ..Default::default()
                };
                for sub in [subcode::TASK_MGMT_RECEIVED, subcode::TASK_MGMT_DONE] {
                    let h = s.next_h();
                    let mut get = ScstUserGetCmd {
                        cmd_h: h,
                        subcode: sub,
                        ..Default::default()
                    };
                    get.set_tm_cmd(&tm);
                    s.queue.push_back(get);
                }
            }
            11 => {
                let errno = [Errno::EINTR, Errno::ENOMEM, Errno::EFAULT][input.below(3)];
                kernel.state().fail_next = Some(errno);
            }
            _ => poll(&mut dev),
        }
    }
    drain(&kernel, &mut dev);
}

/// Completes everything, frees every command and evicts the cache, then
/// checks that nothing awaits an answer and the pool is empty.
fn drain(kernel: &ScriptedKernel, dev: &mut Device) {
    for _ in 0..10_000 {
        {
            let s = kernel.state();
            let quiet = s.queue.is_empty()
                && s.awaiting.is_empty()
                && s.cmds.is_empty()
                && s.cached.is_empty();
            if quiet && dev.executor().pending() == 0 && dev.outstanding() == 0 {
                break;
            }
        }
        while dev.executor_mut().complete(0, usize::MAX, true) {}
        let handles: Vec<u32> = kernel.state().cmds.keys().copied().collect();
        for h in handles {
            advance(kernel, h, false);
        }
        {
            let mut s = kernel.state();
            let cached: Vec<u64> = std::mem::take(&mut s.cached).into_iter().collect();
            for pbuf in cached {
                let h = s.next_h();
                let mut get = ScstUserGetCmd {
                    cmd_h: h,
                    subcode: subcode::ON_CACHED_MEM_FREE,
                    ..Default::default()
                };
                get.set_on_cached_mem_free(&ScstUserOnCachedMemFree { pbuf });
                s.queue.push_back(get);
            }
        }
        poll(dev);
    }
    if dev.fault().is_some() {
        return;
    }
    let s = kernel.state();
    assert!(
        s.queue.is_empty(),
        "{} subcommands never taken: {dev:?}",
        s.queue.len()
    );
    assert!(
        s.awaiting.is_empty(),
        "subcommands never answered: {:?}",
        s.awaiting
    );
    assert!(s.cmds.is_empty(), "commands left: {:?}", s.cmds);
    drop(s);
    assert_eq!(dev.pool().bad_frees(), 0, "the pool refused a free");
    assert_eq!(dev.pool().buffers_in_use(), 0, "buffers leaked");
}
