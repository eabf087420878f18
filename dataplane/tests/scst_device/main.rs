//! `ScstDevice` against a scripted fake kernel (`FakeKernel`) and a manual
//! executor: the REPLY_AND_GET_MULTI protocol (batching, EAGAIN, refused
//! replies), the buffer flows, task management, PARSE, options and faults.

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bdev::{Capabilities, Geometry, IoVec};
use dataplane::exec::{status, CommandExecutor, Response};
use dataplane::frontend::CoalesceConfig;
use dataplane::lun::LunConfig;
use dataplane::scsi::{ScsiError, SenseFormat, UnitInfo};
use dataplane::scst::abi::*;
use dataplane::scst::device::{DeviceError, ScstDevice, ScstDeviceConfig};
use dataplane::scst::driver::{MultiBuf, ScstDriver};
use dataplane::scst::pool::{BufferPool, PoolConfig};
use nix::errno::Errno;

// ---- the fake kernel ------------------------------------------------------

/// A reply as the kernel saw it, with the bytes its pointers named at the
/// time of the call.
#[derive(Clone)]
struct SeenReply {
    reply: ScstUserReplyCmd,
    /// Sense bytes (EXEC or PARSE with sense).
    sense: Vec<u8>,
}

impl SeenReply {
    fn exec(&self) -> ScstUserScsiCmdReplyExec {
        assert_eq!(self.reply.subcode, subcode::EXEC);
        self.reply.exec_reply()
    }
}

#[derive(Clone)]
struct Call {
    replies: Vec<SeenReply>,
    asked: usize,
    delivered: usize,
    result: Result<(), Errno>,
}

#[derive(Default)]
struct KernelState {
    options: ScstUserOpt,
    queue: VecDeque<ScstUserGetCmd>,
    /// cmd_h -> subcode of every subcommand delivered and not yet replied.
    awaiting: HashMap<u32, u32>,
    calls: Vec<Call>,
    /// Refuse the reply for this cmd_h with this errno (once).
    refuse: Option<(u32, Errno)>,
    /// Fail every call with this errno before looking at anything.
    fail_all: Option<Errno>,
    next_h: u32,
}

#[derive(Clone, Default)]
struct FakeKernel(Arc<Mutex<KernelState>>);

impl FakeKernel {
    fn new(options: ScstUserOpt) -> Self {
        let k = FakeKernel::default();
        k.state().options = options;
        k
    }

    fn state(&self) -> MutexGuard<'_, KernelState> {
        self.0.lock().unwrap()
    }

    /// Queues a subcommand; returns its cmd_h.
    fn queue(&self, subcode: u32, fill: impl FnOnce(&mut ScstUserGetCmd)) -> u32 {
        let mut s = self.state();
        let cmd_h = s.next_h;
        s.next_h += 1;
        let mut cmd = ScstUserGetCmd {
            cmd_h,
            subcode,
            ..Default::default()
        };
        fill(&mut cmd);
        s.queue.push_back(cmd);
        cmd_h
    }

    fn exec(&self, sess_h: u64, cdb: &[u8], dir: u8, bufflen: i32, pbuf: u64) -> u32 {
        self.queue(subcode::EXEC, |c| {
            let mut e = ScstUserScsiCmdExec {
                sess_h,
                cdb_len: cdb.len() as u16,
                data_direction: dir,
                bufflen,
                data_len: i64::from(bufflen),
                alloc_len: if pbuf == 0 { bufflen } else { 0 },
                pbuf,
                queue_type: SCST_CMD_QUEUE_SIMPLE,
                ..Default::default()
            };
            e.cdb[..cdb.len()].copy_from_slice(cdb);
            c.set_exec_cmd(&e);
        })
    }

    fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    fn last_call(&self) -> Call {
        self.state().calls.last().cloned().unwrap()
    }

    fn awaiting(&self) -> usize {
        self.state().awaiting.len()
    }
}

impl ScstDriver for FakeKernel {
    fn register(&mut self, _desc: &ScstUserDevDesc) -> Result<(), Errno> {
        Ok(())
    }
    fn set_options(&mut self, opt: &ScstUserOpt) -> Result<(), Errno> {
        self.state().options = *opt;
        Ok(())
    }
    fn get_options(&mut self) -> Result<ScstUserOpt, Errno> {
        Ok(self.state().options)
    }

    fn reply_and_get_multi(
        &mut self,
        buf: &mut MultiBuf,
        replies: &[ScstUserReplyCmd],
    ) -> Result<(), Errno> {
        let mut s = self.state();
        let header = *buf.header();
        assert_eq!(header.replies_cnt as usize, replies.len());
        if !replies.is_empty() {
            assert_eq!(header.preplies, replies.as_ptr() as u64);
        }
        let asked = header.cmds_cnt as usize;
        assert!(asked <= buf.capacity());
        let mut call = Call {
            replies: Vec::new(),
            asked,
            delivered: 0,
            result: Ok(()),
        };
        if let Some(e) = s.fail_all {
            call.result = Err(e);
            s.calls.push(call);
            return Err(e);
        }
        for (i, r) in replies.iter().enumerate() {
            let refused = match s.refuse {
                Some((h, e)) if h == r.cmd_h => Some(e),
                _ => None,
            };
            let known = s.awaiting.get(&r.cmd_h).copied();
            let error = refused.or(match known {
                None => Some(Errno::ESRCH),
                Some(sub) if sub != r.subcode => Some(Errno::EINVAL),
                Some(_) => None,
            });
            if let Some(e) = error {
                if refused.is_some() {
                    s.refuse = None;
                    s.awaiting.remove(&r.cmd_h);
                }
                buf.header_mut().replies_done = i as i16;
                buf.header_mut().cmds_cnt = 0;
                call.result = Err(e);
                s.calls.push(call);
                return Err(e);
            }
            s.awaiting.remove(&r.cmd_h);
            call.replies.push(SeenReply {
                reply: *r,
                sense: read_sense(r),
            });
        }
        buf.header_mut().replies_done = replies.len() as i16;
        let n = asked.min(s.queue.len());
        for i in 0..n {
            let cmd = s.queue.pop_front().unwrap();
            s.awaiting.insert(cmd.cmd_h, cmd.subcode);
            buf.cmds_mut()[i] = cmd;
        }
        buf.header_mut().cmds_cnt = n as i16;
        call.delivered = n;
        if n == 0 {
            call.result = Err(Errno::EAGAIN);
        }
        let result = call.result;
        s.calls.push(call);
        result
    }

    fn reply_cmd(&mut self, _reply: &ScstUserReplyCmd) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    fn flush_cache(&mut self) -> Result<(), Errno> {
        Ok(())
    }
    fn capacity_changed(&mut self) -> Result<(), Errno> {
        Ok(())
    }
    fn prealloc_buffer(&mut self, _: u64, _: u32, _: bool) -> Result<u32, Errno> {
        Err(Errno::ENOSYS)
    }
    fn wait_fd(&self) -> Option<RawFd> {
        None
    }
    fn ioctls(&self) -> u64 {
        self.state().calls.len() as u64
    }
}

/// Copies the sense a reply points to, as the kernel does during the call.
fn read_sense(r: &ScstUserReplyCmd) -> Vec<u8> {
    let sense = match r.subcode {
        subcode::EXEC => r.exec_reply().sense(),
        subcode::PARSE if r.parse_reply().status != 0 => r.parse_reply().sense(),
        _ => return Vec::new(),
    };
    if sense.sense_len == 0 {
        return Vec::new();
    }
    assert_ne!(sense.psense_buffer, 0);
    // SAFETY: the device promises that psense_buffer names sense_len
    // readable bytes until the call carrying the reply returns; this is
    // exactly what the test checks (a dangling pointer would read garbage
    // or fault, and the bytes are compared with the expected sense).
    unsafe {
        std::slice::from_raw_parts(
            sense.psense_buffer as *const u8,
            usize::from(sense.sense_len),
        )
        .to_vec()
    }
}

// ---- the manual executor --------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Submitted {
    slot: u32,
    /// Bytes 2..6 of the CDB (the LBA of a READ/WRITE (10)).
    lba: u32,
    iov: Option<(usize, usize)>,
}

/// Records submissions; the test finishes them with `finish`.
struct Manual {
    tasks: u32,
    submitted: Vec<Submitted>,
    finished: VecDeque<(u32, Response)>,
    aborted: Vec<u32>,
    busy: Vec<bool>,
}

impl Manual {
    fn new(tasks: u32) -> Self {
        Self {
            tasks,
            submitted: Vec::new(),
            finished: VecDeque::new(),
            aborted: Vec::new(),
            busy: vec![false; tasks as usize],
        }
    }

    fn finish(&mut self, slot: u32, response: Response) {
        assert!(self.busy[slot as usize], "slot {slot} not busy");
        self.finished.push_back((slot, response));
    }

    /// Finishes every busy slot not yet finished with `response`.
    fn finish_all(&mut self, response: Response) {
        for slot in 0..self.tasks {
            if self.busy[slot as usize] && !self.finished.iter().any(|(s, _)| *s == slot) {
                self.finished.push_back((slot, response));
            }
        }
    }
}

impl CommandExecutor for Manual {
    fn max_tasks(&self) -> u32 {
        self.tasks
    }
    unsafe fn submit(&mut self, slot: u32, cdb: &[u8], data: &[IoVec]) {
        assert!(!self.busy[slot as usize], "slot {slot} reused while busy");
        assert!(data.len() <= 1);
        self.busy[slot as usize] = true;
        self.submitted.push(Submitted {
            slot,
            lba: u32::from_be_bytes([cdb[2], cdb[3], cdb[4], cdb[5]]),
            iov: data.first().map(|v| (v.base as usize, v.len)),
        });
    }
    fn abort(&mut self, slot: u32) {
        self.aborted.push(slot);
    }
    fn flush(&mut self) {}
    fn poll(&mut self, max: usize, done: &mut dyn FnMut(u32, &Response)) -> usize {
        let mut n = 0;
        while n < max {
            let Some((slot, response)) = self.finished.pop_front() else {
                break;
            };
            self.busy[slot as usize] = false;
            done(slot, &response);
            n += 1;
        }
        n
    }
    fn in_flight(&self) -> usize {
        self.busy.iter().filter(|b| **b).count()
    }
}

// ---- helpers --------------------------------------------------------------

const READ_10: [u8; 10] = [0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0];
const WRITE_10: [u8; 10] = [0x2A, 0, 0, 0, 0, 8, 0, 0, 2, 0];
const SESS_A: u64 = 0xA000;
const SESS_B: u64 = 0xB000;

fn options(reuse: u8, on_free: u8, parse: u8) -> ScstUserOpt {
    ScstUserOpt {
        parse_type: parse,
        on_free_cmd_type: on_free,
        memory_reuse_type: reuse,
        partial_transfers_type: SCST_USER_PARTIAL_TRANSFERS_NOT_SUPPORTED,
        tst: 1,
        queue_alg: 1,
        ..Default::default()
    }
}

fn default_options() -> ScstUserOpt {
    options(
        SCST_USER_MEM_REUSE_ALL,
        SCST_USER_ON_FREE_CMD_CALL,
        SCST_USER_PARSE_STANDARD,
    )
}

fn small_pool(max_bytes: usize, max_buffer_bytes: usize) -> BufferPool {
    BufferPool::new(PoolConfig {
        max_bytes,
        max_buffer_bytes,
        populate: false,
    })
    .unwrap()
}

fn unit() -> UnitInfo {
    let geometry = Geometry {
        block_size: 4096,
        num_blocks: 1 << 16,
    };
    let caps = Capabilities {
        volatile_cache: false,
        unmap: true,
        unmap_reads_zeroes: true,
        write_zeroes: true,
        max_transfer_blocks: 0,
        max_unmap_blocks: 0,
        optimal_boundary_blocks: 0,
    };
    LunConfig::new(geometry, caps).validate().unwrap()
}

type Dev = ScstDevice<FakeKernel, Manual>;

fn device_with(
    opts: ScstUserOpt,
    tasks: u32,
    budget: usize,
    pool: BufferPool,
    unit: Option<UnitInfo>,
) -> (FakeKernel, Dev) {
    // No coalescing: every poll with something to send or ask exchanges,
    // which keeps the protocol tests step by step.
    let config = ScstDeviceConfig {
        name: "scst:test".into(),
        budget,
        unit,
        coalesce: CoalesceConfig {
            max_hold: Duration::ZERO,
            ..CoalesceConfig::default()
        },
        idle_poll_interval: Duration::ZERO,
        ..ScstDeviceConfig::default()
    };
    device_config(opts, tasks, pool, config)
}

fn device_config(
    opts: ScstUserOpt,
    tasks: u32,
    pool: BufferPool,
    config: ScstDeviceConfig,
) -> (FakeKernel, Dev) {
    let kernel = FakeKernel::new(opts);
    let dev = ScstDevice::new(kernel.clone(), Manual::new(tasks), pool, config).unwrap();
    (kernel, dev)
}

fn device() -> (FakeKernel, Dev) {
    device_with(
        default_options(),
        16,
        32,
        small_pool(4 << 20, 1 << 20),
        None,
    )
}

fn fixed_sense(key: u8, asc: u8, ascq: u8) -> Vec<u8> {
    let mut s = vec![0u8; 18];
    s[0] = 0x70;
    s[2] = key;
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    s
}

// ---- tests ----------------------------------------------------------------

#[test]
fn one_ioctl_per_poll_carries_every_reply_and_fetches_a_batch() {
    let (k, mut dev) = device();
    let handles: Vec<u32> = (0..10)
        .map(|_| k.exec(SESS_A, &READ_10, SCST_DATA_READ, 4096, 0))
        .collect();
    assert_eq!(dev.poll(), 10);
    let call = k.last_call();
    assert_eq!(
        (call.asked, call.delivered, call.replies.len()),
        (32, 10, 0)
    );
    assert_eq!(dev.executor().submitted.len(), 10);
    // Each READ with pbuf 0 got its own page-aligned pool buffer.
    let mut bases: Vec<usize> = dev
        .executor()
        .submitted
        .iter()
        .map(|s| {
            let (base, len) = s.iov.unwrap();
            assert_eq!(len, 4096);
            assert_eq!(base % 4096, 0);
            base
        })
        .collect();
    bases.sort_unstable();
    bases.dedup();
    assert_eq!(bases.len(), 10);
    assert_eq!(dev.pool().buffers_in_use(), 10);

    dev.executor_mut().finish_all(Response::good(4096));
    dev.poll();
    let calls = k.calls();
    assert_eq!(calls.len(), 2, "one ioctl per poll");
    let call = &calls[1];
    assert_eq!(call.replies.len(), 10);
    assert_eq!(call.result, Err(Errno::EAGAIN));
    for (r, h) in call.replies.iter().zip(&handles) {
        assert_eq!(r.reply.cmd_h, *h);
        let e = r.exec();
        assert_eq!(e.reply_type, SCST_EXEC_REPLY_COMPLETED);
        assert_eq!(e.status, status::GOOD);
        assert_eq!(e.resp_data_len, 4096);
        assert!(
            bases.contains(&(e.pbuf as usize)),
            "pbuf is the EXEC buffer"
        );
        assert!(r.sense.is_empty());
    }
    // The buffers now belong to the kernel (cached) until it frees them.
    assert_eq!(dev.pool().buffers_in_use(), 10);
    let st = dev.stats().snapshot();
    assert_eq!(st.ioctls, 2);
    assert_eq!(st.eagain, 1);
    assert_eq!(st.replies_sent, 10);
    assert_eq!(st.commands_completed, 10);
    assert_eq!(st.data_in_bytes, 10 * 4096);
    assert_eq!(st.exec, 10);
    assert_eq!(k.awaiting(), 0);
}

#[test]
fn eagain_still_consumes_the_replies() {
    let (k, mut dev) = device();
    k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll();
    dev.executor_mut().finish_all(Response::good(0));
    dev.poll();
    assert_eq!(k.last_call().result, Err(Errno::EAGAIN));
    assert_eq!(k.last_call().replies.len(), 1);
    assert_eq!(dev.outstanding(), 0);
    // The next poll does not resend it.
    dev.poll();
    assert_eq!(k.last_call().replies.len(), 0);
    assert_eq!(k.calls().len(), 3);
    assert!(dev.is_drained());
}

#[test]
fn a_refused_reply_is_dropped_and_the_later_ones_are_resent() {
    let (k, mut dev) = device();
    let h: Vec<u32> = (0..4)
        .map(|_| k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0))
        .collect();
    dev.poll();
    // Complete in slot order 0..4; the third and fourth with sense, so the
    // relocated replies must carry valid sense pointers.
    let miscompare = ScsiError::Miscompare { offset: 7 }.to_response(SenseFormat::Fixed);
    let range = ScsiError::LbaOutOfRange.to_response(SenseFormat::Fixed);
    dev.executor_mut().finish(0, Response::good(0));
    dev.executor_mut().finish(1, Response::good(0));
    dev.executor_mut().finish(2, miscompare);
    dev.executor_mut().finish(3, range);
    k.state().refuse = Some((h[1], Errno::EINVAL));
    dev.poll();
    let call = k.last_call();
    assert_eq!(call.result, Err(Errno::EINVAL));
    assert_eq!(call.replies.len(), 1, "processed up to the refused one");
    assert_eq!(dev.stats().snapshot().reply_failures, 1);
    // Next poll: the two after the refused one, not the refused one.
    dev.poll();
    let call = k.last_call();
    let sent: Vec<u32> = call.replies.iter().map(|r| r.reply.cmd_h).collect();
    assert_eq!(sent, vec![h[2], h[3]]);
    assert_eq!(call.replies[0].sense, miscompare.sense_bytes());
    assert_eq!(call.replies[0].exec().status, status::CHECK_CONDITION);
    assert_eq!(call.replies[1].sense, fixed_sense(0x05, 0x21, 0x00));
    assert_eq!(dev.outstanding(), 0);
    assert_eq!(k.awaiting(), 0);
    assert!(dev.is_drained());
}

#[test]
fn refusal_of_the_last_reply_resends_nothing() {
    let (k, mut dev) = device();
    let h = k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll();
    dev.executor_mut().finish_all(Response::good(0));
    k.state().refuse = Some((h, Errno::ESRCH));
    dev.poll();
    dev.poll();
    assert_eq!(k.last_call().replies.len(), 0);
    assert_eq!(dev.outstanding(), 0);
}

#[test]
fn alloc_mem_exec_and_on_free_return_the_buffer() {
    let (k, mut dev) = device();
    let alloc = k.queue(subcode::ALLOC_MEM, |c| {
        c.set_alloc_cmd(&ScstUserScsiCmdAllocMem {
            sess_h: SESS_A,
            alloc_len: 8192,
            data_direction: SCST_DATA_WRITE,
            ..Default::default()
        })
    });
    dev.poll();
    dev.poll();
    let r = k.last_call().replies[0].clone();
    assert_eq!(
        (r.reply.cmd_h, r.reply.subcode),
        (alloc, subcode::ALLOC_MEM)
    );
    let pbuf = r.reply.alloc_reply().pbuf;
    assert_ne!(pbuf, 0);
    assert_eq!(pbuf % 4096, 0);
    assert_eq!(dev.pool().get(pbuf).unwrap().len, 8192);

    // The EXEC of that write uses the buffer.
    let exec = k.exec(SESS_A, &WRITE_10, SCST_DATA_WRITE, 8192, pbuf);
    dev.poll();
    let sub = *dev.executor().submitted.last().unwrap();
    assert_eq!(sub.iov, Some((pbuf as usize, 8192)));
    dev.executor_mut().finish(sub.slot, Response::good(0));
    dev.poll();
    let r = k.last_call().replies[0].clone();
    assert_eq!(r.reply.cmd_h, exec);
    let e = r.exec();
    assert_eq!((e.resp_data_len, e.pbuf, e.status), (0, 0, status::GOOD));
    assert_eq!(dev.pool().buffers_in_use(), 1, "the kernel still has it");

    // Not cached: ON_FREE_CMD returns it.
    k.queue(subcode::ON_FREE_CMD, |c| {
        c.set_on_free_cmd(&ScstUserScsiOnFreeCmd {
            pbuf,
            buffer_cached: 0,
            ..Default::default()
        })
    });
    dev.poll();
    assert_eq!(dev.pool().buffers_in_use(), 0);
    dev.poll();
    let r = k.last_call().replies[0].clone();
    assert_eq!(r.reply.subcode, subcode::ON_FREE_CMD);
    assert_eq!(r.reply.result(), 0);
    assert_eq!(k.awaiting(), 0);
}

#[test]
fn cached_buffers_stay_until_on_cached_mem_free() {
    let (k, mut dev) = device();
    k.exec(SESS_A, &READ_10, SCST_DATA_READ, 4096, 0);
    dev.poll();
    dev.executor_mut().finish_all(Response::good(4096));
    dev.poll();
    let pbuf = k.last_call().replies[0].exec().pbuf;
    assert_ne!(pbuf, 0);
    // Cached: ON_FREE_CMD leaves it with the kernel.
    k.queue(subcode::ON_FREE_CMD, |c| {
        c.set_on_free_cmd(&ScstUserScsiOnFreeCmd {
            pbuf,
            buffer_cached: 1,
            ..Default::default()
        })
    });
    dev.poll();
    assert_eq!(dev.pool().buffers_in_use(), 1);
    // The kernel reuses it for another READ.
    k.exec(SESS_A, &READ_10, SCST_DATA_READ, 4096, pbuf);
    dev.poll();
    let sub = *dev.executor().submitted.last().unwrap();
    assert_eq!(sub.iov, Some((pbuf as usize, 4096)));
    dev.executor_mut().finish(sub.slot, Response::good(4096));
    dev.poll();
    let e = k.last_call().replies.last().unwrap().exec();
    assert_eq!(
        (e.resp_data_len, e.pbuf),
        (4096, 0),
        "no pbuf for a kernel buffer"
    );
    // Eviction.
    k.queue(subcode::ON_CACHED_MEM_FREE, |c| {
        c.set_on_cached_mem_free(&ScstUserOnCachedMemFree { pbuf })
    });
    dev.poll();
    assert_eq!(dev.pool().buffers_in_use(), 0);
    // A second eviction of the same address is refused by the pool and
    // counted, and still answered.
    k.queue(subcode::ON_CACHED_MEM_FREE, |c| {
        c.set_on_cached_mem_free(&ScstUserOnCachedMemFree { pbuf })
    });
    dev.poll();
    dev.poll();
    assert_eq!(dev.stats().snapshot().bad_frees, 1);
    assert_eq!(k.awaiting(), 0);
}

#[test]
fn a_read_that_returns_no_data_gives_its_buffer_back_at_once() {
    let (k, mut dev) = device();
    k.exec(SESS_A, &READ_10, SCST_DATA_READ, 4096, 0);
    dev.poll();
    assert_eq!(dev.pool().buffers_in_use(), 1);
    let range = ScsiError::LbaOutOfRange.to_response(SenseFormat::Fixed);
    dev.executor_mut().finish_all(range);
    dev.poll();
    let r = k.last_call().replies[0].clone();
    let e = r.exec();
    assert_eq!((e.resp_data_len, e.pbuf), (0, 0));
    assert_eq!(e.status, status::CHECK_CONDITION);
    assert_eq!(r.sense, fixed_sense(0x05, 0x21, 0x00));
    assert_eq!(dev.pool().buffers_in_use(), 0);
}

#[test]
fn an_exhausted_pool_answers_busy() {
    let (k, mut dev) = device_with(
        default_options(),
        16,
        32,
        small_pool(1 << 20, 1 << 20),
        None,
    );
    k.queue(subcode::ALLOC_MEM, |c| {
        c.set_alloc_cmd(&ScstUserScsiCmdAllocMem {
            alloc_len: 1 << 20,
            data_direction: SCST_DATA_WRITE,
            ..Default::default()
        })
    });
    k.queue(subcode::ALLOC_MEM, |c| {
        c.set_alloc_cmd(&ScstUserScsiCmdAllocMem {
            alloc_len: 4096,
            data_direction: SCST_DATA_WRITE,
            ..Default::default()
        })
    });
    let read = k.exec(SESS_A, &READ_10, SCST_DATA_READ, 4096, 0);
    dev.poll();
    assert!(dev.executor().submitted.is_empty());
    dev.poll();
    let replies = k.last_call().replies;
    assert_ne!(replies[0].reply.alloc_reply().pbuf, 0);
    assert_eq!(
        replies[1].reply.alloc_reply().pbuf,
        0,
        "pbuf 0: the kernel says BUSY"
    );
    assert_eq!(replies[2].reply.cmd_h, read);
    let e = replies[2].exec();
    assert_eq!((e.status, e.resp_data_len, e.pbuf), (status::BUSY, 0, 0));
    assert!(replies[2].sense.is_empty());
    let st = dev.stats().snapshot();
    assert_eq!(st.busy, 2);
    assert_eq!(st.pool_failed_allocs, 2);
}

#[test]
fn an_exec_larger_than_the_largest_buffer_is_an_invalid_field() {
    let (k, mut dev) = device_with(
        default_options(),
        16,
        32,
        small_pool(1 << 20, 64 << 10),
        None,
    );
    k.exec(SESS_A, &READ_10, SCST_DATA_READ, 128 << 10, 0);
    dev.poll();
    dev.poll();
    let r = k.last_call().replies[0].clone();
    assert_eq!(r.exec().status, status::CHECK_CONDITION);
    // INVALID FIELD IN CDB, field pointer at byte 7 (TRANSFER LENGTH).
    let mut expected = fixed_sense(0x05, 0x24, 0x00);
    expected[15] = 0xC0;
    expected[17] = 7;
    assert_eq!(r.sense, expected);
}

#[test]
fn an_unknown_pbuf_fails_with_hardware_error_without_touching_it() {
    let (k, mut dev) = device();
    let outside = 0x10_0000u64;
    k.exec(SESS_A, &WRITE_10, SCST_DATA_WRITE, 8192, outside);
    // Inside a live buffer, but not its start.
    k.queue(subcode::ALLOC_MEM, |c| {
        c.set_alloc_cmd(&ScstUserScsiCmdAllocMem {
            alloc_len: 16384,
            ..Default::default()
        })
    });
    dev.poll();
    dev.poll();
    let replies = k.last_call().replies;
    assert_eq!(replies[0].exec().status, status::CHECK_CONDITION);
    assert_eq!(replies[0].sense, fixed_sense(0x04, 0x44, 0x00));
    let pbuf = replies[1].reply.alloc_reply().pbuf;
    k.exec(SESS_A, &WRITE_10, SCST_DATA_WRITE, 8192, pbuf + 4096);
    // Larger than the buffer.
    k.exec(SESS_A, &WRITE_10, SCST_DATA_WRITE, 32768, pbuf);
    dev.poll();
    dev.poll();
    let replies = k.last_call().replies;
    assert_eq!(replies.len(), 2);
    for r in &replies {
        assert_eq!(r.sense, fixed_sense(0x04, 0x44, 0x00));
    }
    assert!(dev.executor().submitted.is_empty());
    assert_eq!(dev.stats().snapshot().bad_pbufs, 3);
}

#[test]
fn task_management_aborts_and_holds_task_mgmt_done_until_commands_finish() {
    let (k, mut dev) = device();
    let a: Vec<u32> = (0..3)
        .map(|_| k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0))
        .collect();
    let b = k.exec(SESS_B, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll();
    assert_eq!(dev.executor().submitted.len(), 4);
    let tm = ScstUserTm {
        sess_h: SESS_A,
        fn_: SCST_ABORT_TASK_SET,
        ..Default::default()
    };
    let received = k.queue(subcode::TASK_MGMT_RECEIVED, |c| c.set_tm_cmd(&tm));
    dev.poll();
    let mut aborted = dev.executor().aborted.clone();
    aborted.sort_unstable();
    assert_eq!(aborted, vec![0, 1, 2], "session A's commands only");
    let done = k.queue(subcode::TASK_MGMT_DONE, |c| c.set_tm_cmd(&tm));
    dev.poll();
    let replies = k.last_call().replies;
    assert_eq!(replies.len(), 1);
    assert_eq!(
        (replies[0].reply.cmd_h, replies[0].reply.result()),
        (received, 0)
    );
    // Two of session A's commands finish: TASK_MGMT_DONE still waits.
    dev.executor_mut()
        .finish(0, Response::with_status(status::TASK_ABORTED));
    dev.executor_mut().finish(3, Response::good(0));
    dev.executor_mut()
        .finish(1, Response::with_status(status::TASK_ABORTED));
    dev.poll();
    let sent: Vec<u32> = k
        .last_call()
        .replies
        .iter()
        .map(|r| r.reply.cmd_h)
        .collect();
    assert_eq!(sent, vec![a[0], b, a[1]]);
    dev.poll();
    assert!(k.last_call().replies.is_empty());
    assert!(!dev.is_drained());
    // The last one finishes: its reply and then TASK_MGMT_DONE.
    dev.executor_mut()
        .finish(2, Response::with_status(status::TASK_ABORTED));
    dev.poll();
    let replies = k.last_call().replies;
    let sent: Vec<u32> = replies.iter().map(|r| r.reply.cmd_h).collect();
    assert_eq!(sent, vec![a[2], done]);
    assert_eq!(replies[1].reply.subcode, subcode::TASK_MGMT_DONE);
    assert_eq!(replies[1].reply.result(), SCST_MGMT_STATUS_SUCCESS);
    assert_eq!(replies[0].exec().status, status::TASK_ABORTED);
    assert_eq!(dev.stats().snapshot().aborts, 3);
    assert!(dev.is_drained());
}

#[test]
fn abort_task_and_lun_reset_scopes() {
    let (k, mut dev) = device();
    let a0 = k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    k.exec(SESS_B, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll();
    // ABORT TASK of a0 named with the wrong session aborts nothing.
    let wrong = ScstUserTm {
        sess_h: SESS_B,
        fn_: SCST_ABORT_TASK,
        cmd_h_to_abort: a0,
        ..Default::default()
    };
    let h = k.queue(subcode::TASK_MGMT_DONE, |c| c.set_tm_cmd(&wrong));
    dev.poll();
    assert!(dev.executor().aborted.is_empty());
    dev.poll();
    assert_eq!(
        k.last_call().replies[0].reply.cmd_h,
        h,
        "nothing to wait for"
    );
    let right = ScstUserTm {
        sess_h: SESS_A,
        ..wrong
    };
    k.queue(subcode::TASK_MGMT_RECEIVED, |c| c.set_tm_cmd(&right));
    dev.poll();
    assert_eq!(dev.executor().aborted, vec![0]);
    let reset = ScstUserTm {
        sess_h: SESS_B,
        fn_: SCST_LUN_RESET,
        ..Default::default()
    };
    k.queue(subcode::TASK_MGMT_RECEIVED, |c| c.set_tm_cmd(&reset));
    dev.poll();
    assert_eq!(dev.executor().aborted, vec![0, 1, 2], "each aborted once");
    let aca = ScstUserTm {
        fn_: SCST_CLEAR_ACA,
        ..reset
    };
    k.queue(subcode::TASK_MGMT_RECEIVED, |c| c.set_tm_cmd(&aca));
    dev.poll();
    assert_eq!(dev.executor().aborted.len(), 3);
}

#[test]
fn execs_wait_for_slots_in_order_and_the_device_asks_for_fewer() {
    // 2 slots, budget 4: at most 2 + 2 * 4 = 10 subcommands held.
    let (k, mut dev) = device_with(default_options(), 2, 4, small_pool(4 << 20, 1 << 20), None);
    let h: Vec<u32> = (0..12u8)
        .map(|i| {
            let mut cdb = WRITE_10;
            cdb[5] = i;
            k.exec(SESS_A, &cdb, SCST_DATA_NONE, 0, 0)
        })
        .collect();
    dev.poll(); // 4 arrive: 2 run, 2 wait
    dev.poll(); // 4 more wait
    dev.poll(); // 2 more: 10 held, the limit
    dev.poll(); // asks for nothing, so no ioctl
    let calls = k.calls();
    let asked: Vec<usize> = calls.iter().map(|c| c.asked).collect();
    assert_eq!(asked, vec![4, 4, 2]);
    assert_eq!(dev.outstanding(), 10);
    assert_eq!(dev.executing(), 2);
    assert_eq!(dev.stats().snapshot().held, 8);
    // Finish whatever runs, poll, repeat: everything completes, in order.
    for _ in 0..20 {
        dev.executor_mut().finish_all(Response::good(0));
        dev.poll();
    }
    let order: Vec<u32> = k
        .calls()
        .iter()
        .flat_map(|c| c.replies.iter().map(|r| r.reply.cmd_h).collect::<Vec<_>>())
        .collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, h, "every command answered exactly once");
    assert_eq!(k.awaiting(), 0);
    assert!(dev.is_drained());
    // They started in arrival order.
    let started: Vec<u32> = dev.executor().submitted.iter().map(|s| s.lba).collect();
    assert_eq!(started, (0..12).collect::<Vec<u32>>());
}

#[test]
fn task_management_answers_waiting_execs_with_task_aborted() {
    let (k, mut dev) = device_with(default_options(), 1, 8, small_pool(4 << 20, 1 << 20), None);
    let run = k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    let wait_a = k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    let wait_b = k.exec(SESS_B, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll();
    let tm = ScstUserTm {
        sess_h: SESS_A,
        fn_: SCST_ABORT_TASK_SET,
        ..Default::default()
    };
    let tm_h = k.queue(subcode::TASK_MGMT_RECEIVED, |c| c.set_tm_cmd(&tm));
    dev.poll();
    dev.poll();
    let replies = k.last_call().replies;
    let sent: Vec<u32> = replies.iter().map(|r| r.reply.cmd_h).collect();
    assert_eq!(sent, vec![wait_a, tm_h]);
    assert_eq!(replies[0].exec().status, status::TASK_ABORTED);
    assert_eq!(dev.executor().aborted, vec![0]);
    dev.executor_mut()
        .finish(0, Response::with_status(status::TASK_ABORTED));
    dev.poll();
    dev.executor_mut().finish_all(Response::good(0));
    dev.poll();
    let sent: Vec<u32> = k
        .calls()
        .iter()
        .flat_map(|c| c.replies.iter().map(|r| r.reply.cmd_h).collect::<Vec<_>>())
        .collect();
    assert!(sent.ends_with(&[run, wait_b]), "{sent:?}");
    assert_eq!(
        dev.executor().submitted.len(),
        2,
        "the aborted one never ran"
    );
}

#[test]
fn parse_call_answers_from_the_cdb() {
    let opts = options(
        SCST_USER_MEM_REUSE_ALL,
        SCST_USER_ON_FREE_CMD_CALL,
        SCST_USER_PARSE_CALL,
    );
    let (k, mut dev) = device_with(opts, 16, 32, small_pool(4 << 20, 1 << 20), Some(unit()));
    let parse = |k: &FakeKernel, cdb: &[u8], op_flags: u32| {
        k.queue(subcode::PARSE, |c| {
            let mut p = ScstUserScsiCmdParse {
                sess_h: SESS_A,
                cdb_len: cdb.len() as u16,
                queue_type: SCST_CMD_QUEUE_SIMPLE,
                op_flags,
                ..Default::default()
            };
            p.cdb[..cdb.len()].copy_from_slice(cdb);
            c.set_parse_cmd(&p);
        })
    };
    // READ (10) of 2 blocks at LBA 5.
    parse(&k, &[0x28, 0, 0, 0, 0, 5, 0, 0, 2, 0], 0);
    // WRITE (16) of 3 blocks at LBA 9.
    parse(
        &k,
        &[0x8A, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 3, 0, 0],
        SCST_UNKNOWN_LENGTH,
    );
    // WRITE SAME (16) of 100 blocks: one block of data-out.
    parse(
        &k,
        &[0x93, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 100, 0, 0],
        0,
    );
    // INQUIRY, allocation length 96.
    parse(&k, &[0x12, 0, 0, 0, 96, 0], 0);
    // TEST UNIT READY.
    parse(&k, &[0, 0, 0, 0, 0, 0], 0);
    // A vendor opcode nobody knows.
    parse(&k, &[0xC0, 0, 0, 0, 0, 0], 0);
    // READ beyond the end of the unit.
    parse(&k, &[0x28, 0, 0, 0x01, 0, 0, 0, 0, 1, 0], 0);
    // REPORT LUNS: SCST's core executes it; its pre-parse values go back.
    parse(
        &k,
        &[0xA0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0],
        SCST_INFO_VALID | SCST_LOCAL_CMD,
    );
    dev.poll();
    dev.poll();
    let replies = k.last_call().replies;
    assert_eq!(replies.len(), 8);
    let ok = |i: usize| {
        let p = replies[i].reply.parse_reply();
        assert_eq!(p.status, 0, "reply {i}");
        p.result()
    };
    let r = ok(0);
    assert_eq!(
        (r.data_direction, r.lba, r.data_len, r.bufflen),
        (SCST_DATA_READ, 5, 8192, 8192)
    );
    assert_eq!(r.op_flags, SCST_INFO_VALID);
    assert_eq!((r.queue_type, r.cdb_len), (SCST_CMD_QUEUE_SIMPLE, 10));
    let r = ok(1);
    assert_eq!(
        (r.data_direction, r.lba, r.data_len, r.bufflen),
        (SCST_DATA_WRITE, 9, 3 * 4096, 3 * 4096)
    );
    assert_eq!(r.op_flags, SCST_INFO_VALID | SCST_WRITE_MEDIUM);
    let r = ok(2);
    assert_eq!(
        (r.data_direction, r.lba, r.data_len, r.bufflen),
        (SCST_DATA_WRITE, 1, 100 * 4096, 4096)
    );
    let r = ok(3);
    assert_eq!(
        (r.data_direction, r.bufflen, r.data_len),
        (SCST_DATA_READ, 96, 96)
    );
    assert_eq!(r.op_flags, SCST_INFO_VALID | SCST_LBA_NOT_VALID);
    let r = ok(4);
    assert_eq!((r.data_direction, r.bufflen), (SCST_DATA_NONE, 0));
    let p = replies[5].reply.parse_reply();
    assert_eq!(p.status, status::CHECK_CONDITION);
    assert_eq!(replies[5].sense, fixed_sense(0x05, 0x20, 0x00));
    assert_eq!(replies[6].sense, fixed_sense(0x05, 0x21, 0x00));
    let r = ok(7);
    assert_eq!(r.op_flags, SCST_INFO_VALID | SCST_LOCAL_CMD);
    assert_eq!(dev.stats().snapshot().parse_errors, 2);
}

#[test]
fn sessions_are_tracked_and_answered() {
    let (k, mut dev) = device();
    let attach = |k: &FakeKernel, sess_h: u64, rd_only: u8, name: &str| {
        k.queue(subcode::ATTACH_SESS, |c| {
            let mut s = ScstUserSess {
                sess_h,
                lun: 3,
                threads_num: 0,
                rd_only,
                _pad0: 0,
                scsi_transport_version: 0,
                phys_transport_version: 0,
                initiator_name: [0; SCST_MAX_EXTERNAL_NAME],
                target_name: [0; SCST_MAX_EXTERNAL_NAME],
            };
            s.initiator_name[..name.len()].copy_from_slice(name.as_bytes());
            c.set_sess(&s);
        })
    };
    let a = attach(&k, SESS_A, 0, "iqn.a");
    attach(&k, SESS_B, 1, "iqn.b");
    dev.poll();
    assert_eq!(dev.sessions().len(), 2);
    assert_eq!(dev.sessions()[1].initiator_name, "iqn.b");
    assert!(dev.sessions()[1].rd_only);
    assert_eq!(dev.sessions()[0].lun, 3);
    k.queue(subcode::DETACH_SESS, |c| {
        let mut s = c.sess();
        s.sess_h = SESS_A;
        c.set_sess(&s);
    });
    dev.poll();
    let replies = k.last_call().replies;
    assert_eq!(replies.len(), 2);
    assert_eq!((replies[0].reply.cmd_h, replies[0].reply.result()), (a, 0));
    dev.poll();
    assert_eq!(dev.sessions().len(), 1);
    assert_eq!(dev.sessions()[0].sess_h, SESS_B);
    let st = dev.stats().snapshot();
    assert_eq!((st.attach_sess, st.detach_sess, st.sessions), (2, 1, 1));
}

#[test]
fn unknown_subcodes_get_einval_and_remap_gets_the_identity() {
    let (k, mut dev) = device();
    let odd = k.queue(0x8008_73ff, |_| {});
    let descr = ScstUserExtCopyDataDescr {
        src_lba: 10,
        dst_lba: 20,
        data_len: 4096,
        ..Default::default()
    };
    k.queue(subcode::EXT_COPY_REMAP, |c| {
        c.set_remap_cmd(&ScstUserExtCopyRemap {
            data_descr: descr,
            ..Default::default()
        })
    });
    dev.poll();
    dev.poll();
    let remap_before = k.last_call().replies;
    assert_eq!(remap_before[0].reply.cmd_h, odd);
    assert_eq!(remap_before[0].reply.subcode, 0x8008_73ff);
    assert_eq!(remap_before[0].reply.result(), -libc::EINVAL);
    let remap = remap_before[1].reply.remap_reply();
    assert_eq!(remap.remap_descriptors_len, 24);
    assert_eq!(remap.status, 0);
    assert_ne!(remap.remap_descriptors, 0);
    let st = dev.stats().snapshot();
    assert_eq!((st.unknown_subcodes, st.ext_copy_remap), (1, 1));
}

#[test]
fn shutdown_stops_asking_but_keeps_replying() {
    let (k, mut dev) = device();
    k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll();
    k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.begin_shutdown();
    dev.poll();
    assert_eq!(
        k.calls().len(),
        1,
        "nothing to send, nothing to ask: no ioctl"
    );
    assert!(!dev.is_drained());
    dev.executor_mut().finish_all(Response::good(0));
    dev.poll();
    let call = k.last_call();
    assert_eq!((call.asked, call.replies.len()), (0, 1));
    assert!(dev.is_drained());
    assert_eq!(
        k.state().queue.len(),
        1,
        "the new command stays with the kernel"
    );
}

#[test]
fn a_dead_fd_faults_the_device_and_drains_the_executor() {
    let (k, mut dev) = device();
    k.exec(SESS_A, &READ_10, SCST_DATA_READ, 4096, 0);
    dev.poll();
    k.state().fail_all = Some(Errno::ENODEV);
    dev.poll();
    assert_eq!(dev.fault(), Some(Errno::ENODEV));
    let calls = k.calls().len();
    assert!(!dev.is_drained());
    dev.executor_mut().finish_all(Response::good(4096));
    dev.poll();
    dev.poll();
    assert_eq!(k.calls().len(), calls, "no ioctl once faulted");
    assert!(dev.is_drained());
    assert_eq!(dev.pool().buffers_in_use(), 0);
}

#[test]
fn other_errors_keep_the_replies_for_the_next_call() {
    let (k, mut dev) = device();
    let h = k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll();
    dev.executor_mut().finish_all(Response::good(0));
    k.state().fail_all = Some(Errno::EINTR);
    dev.poll();
    assert_eq!(dev.fault(), None);
    k.state().fail_all = None;
    dev.poll();
    let replies = k.last_call().replies;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].reply.cmd_h, h);
    assert_eq!(dev.stats().snapshot().ioctl_errors, 1);
}

#[test]
fn options_the_device_cannot_serve_are_refused() {
    let make = |opts: ScstUserOpt, unit: Option<UnitInfo>| {
        let config = ScstDeviceConfig {
            unit,
            ..ScstDeviceConfig::default()
        };
        ScstDevice::new(
            FakeKernel::new(opts),
            Manual::new(4),
            small_pool(1 << 20, 1 << 20),
            config,
        )
        .map(|_| ())
    };
    let err = make(
        options(SCST_USER_MEM_NO_REUSE, SCST_USER_ON_FREE_CMD_IGNORE, 0),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, DeviceError::UnsupportedOptions(_)), "{err}");
    assert!(err.to_string().contains("never be returned"));
    let partial = ScstUserOpt {
        partial_transfers_type: SCST_USER_PARTIAL_TRANSFERS_SUPPORTED,
        ..default_options()
    };
    assert!(matches!(
        make(partial, None),
        Err(DeviceError::UnsupportedOptions(_))
    ));
    let call = options(SCST_USER_MEM_REUSE_ALL, 0, SCST_USER_PARSE_CALL);
    assert!(matches!(
        make(call, None),
        Err(DeviceError::InvalidConfig(_))
    ));
    assert!(make(call, Some(unit())).is_ok());
    // IGNORE is fine with reuse ALL: every buffer comes back through
    // ON_CACHED_MEM_FREE.
    assert!(make(
        options(SCST_USER_MEM_REUSE_ALL, SCST_USER_ON_FREE_CMD_IGNORE, 0),
        None
    )
    .is_ok());
    // The unit's maximum transfer must fit the largest buffer.
    let mut big = unit();
    big.max_transfer_blocks = 512; // 2 MiB of 4 KiB blocks
    let err = make(default_options(), Some(big)).unwrap_err();
    assert!(err.to_string().contains("raise max_buffer_bytes"), "{err}");
    // A zero budget.
    let config = ScstDeviceConfig {
        budget: 0,
        ..ScstDeviceConfig::default()
    };
    assert!(matches!(
        ScstDevice::new(
            FakeKernel::new(default_options()),
            Manual::new(4),
            small_pool(1 << 20, 1 << 20),
            config
        ),
        Err(DeviceError::InvalidConfig(_))
    ));
}

#[test]
fn descriptor_sense_follows_d_sense() {
    let opts = ScstUserOpt {
        d_sense: 1,
        ..default_options()
    };
    let (k, mut dev) = device_with(opts, 4, 8, small_pool(1 << 20, 1 << 20), None);
    k.exec(SESS_A, &WRITE_10, SCST_DATA_WRITE, 4096, 0xdead_0000);
    dev.poll();
    dev.poll();
    let r = &k.last_call().replies[0];
    assert_eq!(r.sense, vec![0x72, 0x04, 0x44, 0x00, 0, 0, 0, 0]);
}

#[test]
fn replies_are_coalesced_while_commands_execute() {
    let config = ScstDeviceConfig {
        budget: 32,
        coalesce: CoalesceConfig {
            batch: 4,
            // Never expires during the test: only the other rules apply.
            max_hold: Duration::from_secs(3600),
            ..CoalesceConfig::default()
        },
        ..ScstDeviceConfig::default()
    };
    let (k, mut dev) = device_config(default_options(), 16, small_pool(4 << 20, 1 << 20), config);
    let h: Vec<u32> = (0..6)
        .map(|_| k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0))
        .collect();
    let alloc = k.queue(subcode::ALLOC_MEM, |c| {
        c.set_alloc_cmd(&ScstUserScsiCmdAllocMem {
            alloc_len: 4096,
            ..Default::default()
        })
    });
    dev.poll(); // nothing executing: exchange at once
    assert_eq!(k.calls().len(), 1);
    dev.poll(); // the ALLOC_MEM reply is urgent
    assert_eq!(k.calls().len(), 2);
    assert_eq!(k.last_call().replies[0].reply.cmd_h, alloc);
    dev.poll(); // commands execute, nothing to send: no ioctl
    for slot in 0..3 {
        dev.executor_mut().finish(slot, Response::good(0));
    }
    dev.poll(); // 3 replies < 4
    assert_eq!(k.calls().len(), 2);
    dev.executor_mut().finish(3, Response::good(0));
    dev.poll(); // 4 replies: one ioctl carries them
    assert_eq!(k.calls().len(), 3);
    let sent: Vec<u32> = k
        .last_call()
        .replies
        .iter()
        .map(|r| r.reply.cmd_h)
        .collect();
    assert_eq!(sent, h[..4]);
    dev.executor_mut().finish(4, Response::good(0));
    dev.poll();
    assert_eq!(k.calls().len(), 3);
    dev.executor_mut().finish(5, Response::good(0));
    dev.poll(); // nothing executes any more: flush
    assert_eq!(k.calls().len(), 4);
    assert_eq!(k.last_call().replies.len(), 2);
    assert!(dev.is_drained());
}

#[test]
fn a_full_command_buffer_is_followed_by_another_exchange() {
    let config = ScstDeviceConfig {
        budget: 2,
        coalesce: CoalesceConfig {
            max_hold: Duration::from_secs(3600),
            ..CoalesceConfig::default()
        },
        ..ScstDeviceConfig::default()
    };
    let (k, mut dev) = device_config(default_options(), 16, small_pool(4 << 20, 1 << 20), config);
    for _ in 0..5 {
        k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    }
    for _ in 0..4 {
        dev.poll();
    }
    let delivered: Vec<usize> = k.calls().iter().map(|c| c.delivered).collect();
    assert_eq!(delivered, vec![2, 2, 1], "then no ioctl while they execute");
    assert_eq!(dev.executing(), 5);
}

#[test]
fn a_coalescing_window_holds_replies_even_when_nothing_executes() {
    let config = ScstDeviceConfig {
        budget: 32,
        coalesce: CoalesceConfig {
            batch: 4,
            max_hold: Duration::ZERO,
            // Never closes during the test: only the other rules apply.
            window: Duration::from_secs(3600),
        },
        idle_poll_interval: Duration::ZERO,
        ..ScstDeviceConfig::default()
    };
    let (k, mut dev) = device_config(default_options(), 16, small_pool(4 << 20, 1 << 20), config);
    let h: Vec<u32> = (0..3)
        .map(|_| k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0))
        .collect();
    dev.poll(); // nothing to send: the exchange fetches the three
    assert_eq!(k.calls().len(), 1);
    dev.executor_mut().finish_all(Response::good(0));
    assert_eq!(dev.poll(), 3);
    // Nothing executes any more, yet the three replies wait (fewer than the
    // batch), and the device reports work so that its reactor stays awake.
    assert_eq!(k.calls().len(), 1);
    assert_eq!(dev.poll(), 1);
    assert_eq!(k.calls().len(), 1);
    assert!(!dev.is_drained());
    // Draining sends them at once.
    dev.begin_shutdown();
    dev.poll();
    assert_eq!(k.calls().len(), 2);
    let sent: Vec<u32> = k
        .last_call()
        .replies
        .iter()
        .map(|r| r.reply.cmd_h)
        .collect();
    assert_eq!(sent, h);
    assert!(dev.is_drained());
    assert_eq!(dev.poll(), 0, "nothing held: the reactor may sleep");
}
