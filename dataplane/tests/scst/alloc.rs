//! `ScstDevice::poll` does not allocate in steady state. The counting
//! allocator counts the allocations of this thread, except while the fake
//! kernel runs inside the driver call (it pauses counting), so only the
//! device's own work is measured.

use std::collections::VecDeque;
use std::os::fd::RawFd;

use dataplane::scst::abi::*;
use dataplane::scst::device::{ScstDevice, ScstDeviceConfig};
use dataplane::scst::driver::{MultiBuf, ScstDriver};
use dataplane::scst::pool::{BufferPool, PoolConfig};
use nix::errno::Errno;
use test_support::alloc::{paused, thread_allocations};
use test_support::exec::Immediate;
use test_support::rng::{seeded, Rng};

/// A kernel with memory reuse ALL and ON_FREE_CMD CALL that keeps `depth`
/// commands going: reads (with a cached buffer or `pbuf` 0) and writes
/// (ALLOC_MEM, then EXEC, or EXEC on a cached buffer), an ON_FREE_CMD per
/// finished command and an eviction every 8 completions. Preallocated; it does not
/// allocate either, but counting is paused while it runs anyway.
struct LoopKernel {
    depth: usize,
    queue: VecDeque<ScstUserGetCmd>,
    /// Buffers the kernel caches and no command uses.
    cached: Vec<u64>,
    /// cmd_h -> (buffer the command uses, 0 = none / to come with the reply).
    buffer_of: Vec<u64>,
    in_flight: usize,
    next_h: u32,
    rng: Rng,
    completed: u64,
    ioctls: u64,
}

const HANDLES: usize = 1 << 16;

impl LoopKernel {
    fn new(depth: usize) -> Self {
        Self {
            depth,
            queue: VecDeque::with_capacity(4 * depth + 64),
            cached: Vec::with_capacity(4096),
            buffer_of: vec![0; HANDLES],
            in_flight: 0,
            next_h: 0,
            rng: seeded(0x9E37_79B9_7F4A_7C15),
            completed: 0,
            ioctls: 0,
        }
    }

    fn handle(&mut self) -> u32 {
        let h = self.next_h;
        self.next_h = (self.next_h + 1) % HANDLES as u32;
        h
    }

    fn exec(&mut self, cmd_h: u32, write: bool, pbuf: u64) {
        let cdb = if write {
            [0x2A, 0, 0, 0, 0, 1, 0, 0, 1, 0]
        } else {
            [0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0]
        };
        let mut e = ScstUserScsiCmdExec {
            sess_h: 1,
            cdb_len: 10,
            data_direction: if write {
                SCST_DATA_WRITE
            } else {
                SCST_DATA_READ
            },
            bufflen: 4096,
            data_len: 4096,
            alloc_len: if pbuf == 0 { 4096 } else { 0 },
            pbuf,
            ..Default::default()
        };
        e.cdb[..10].copy_from_slice(&cdb);
        let mut cmd = ScstUserGetCmd {
            cmd_h,
            subcode: subcode::EXEC,
            ..Default::default()
        };
        cmd.set_exec_cmd(&e);
        self.buffer_of[cmd_h as usize] = pbuf;
        self.queue.push_back(cmd);
    }

    fn start_command(&mut self) {
        let h = self.handle();
        let write = self.rng.bool();
        let pbuf = self.cached.pop().unwrap_or(0);
        if write && pbuf == 0 {
            let mut cmd = ScstUserGetCmd {
                cmd_h: h,
                subcode: subcode::ALLOC_MEM,
                ..Default::default()
            };
            cmd.set_alloc_cmd(&ScstUserScsiCmdAllocMem {
                sess_h: 1,
                alloc_len: 4096,
                data_direction: SCST_DATA_WRITE,
                ..Default::default()
            });
            self.queue.push_back(cmd);
        } else {
            self.exec(h, write, pbuf);
        }
        self.in_flight += 1;
    }

    fn simple(&mut self, subcode: u32, fill: impl FnOnce(&mut ScstUserGetCmd)) {
        let h = self.handle();
        let mut cmd = ScstUserGetCmd {
            cmd_h: h,
            subcode,
            ..Default::default()
        };
        fill(&mut cmd);
        self.queue.push_back(cmd);
    }
}

impl ScstDriver for LoopKernel {
    fn register(&mut self, _: &ScstUserDevDesc) -> Result<(), Errno> {
        Ok(())
    }
    fn set_options(&mut self, _: &ScstUserOpt) -> Result<(), Errno> {
        Ok(())
    }
    fn get_options(&mut self) -> Result<ScstUserOpt, Errno> {
        Ok(ScstUserOpt {
            memory_reuse_type: SCST_USER_MEM_REUSE_ALL,
            on_free_cmd_type: SCST_USER_ON_FREE_CMD_CALL,
            ..Default::default()
        })
    }

    fn reply_and_get_multi(
        &mut self,
        buf: &mut MultiBuf,
        replies: &[ScstUserReplyCmd],
    ) -> Result<(), Errno> {
        // The fake kernel's own work is not counted.
        paused(|| {
            self.ioctls += 1;
            for r in replies {
                match r.subcode {
                    subcode::ALLOC_MEM => {
                        let pbuf = r.alloc_reply().pbuf;
                        assert_ne!(pbuf, 0, "pool too small for the test");
                        self.exec(r.cmd_h, true, pbuf);
                    }
                    subcode::EXEC => {
                        let e = r.exec_reply();
                        assert_eq!(e.status, 0);
                        let pbuf = if e.pbuf != 0 {
                            e.pbuf
                        } else {
                            self.buffer_of[r.cmd_h as usize]
                        };
                        assert_ne!(pbuf, 0);
                        self.cached.push(pbuf);
                        self.in_flight -= 1;
                        self.completed += 1;
                        // ON_FREE_CMD CALL: the kernel tells about every command.
                        self.simple(subcode::ON_FREE_CMD, |c| {
                            c.set_on_free_cmd(&ScstUserScsiOnFreeCmd {
                                pbuf,
                                buffer_cached: 1,
                                ..Default::default()
                            })
                        });
                        if self.completed.is_multiple_of(8) {
                            if let Some(evict) = self.cached.pop() {
                                self.simple(subcode::ON_CACHED_MEM_FREE, |c| {
                                    c.set_on_cached_mem_free(&ScstUserOnCachedMemFree {
                                        pbuf: evict,
                                    })
                                });
                            }
                        }
                    }
                    _ => {}
                }
            }
            buf.header_mut().replies_done = replies.len() as i16;
            while self.in_flight < self.depth {
                self.start_command();
            }
            let want = buf.header().cmds_cnt as usize;
            let n = want.min(self.queue.len());
            for i in 0..n {
                buf.cmds_mut()[i] = self.queue.pop_front().unwrap();
            }
            buf.header_mut().cmds_cnt = n as i16;
            if n == 0 {
                Err(Errno::EAGAIN)
            } else {
                Ok(())
            }
        })
    }

    fn reply_cmd(&mut self, _: &ScstUserReplyCmd) -> Result<(), Errno> {
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
        self.ioctls
    }
}

#[test]
fn steady_state_polls_do_not_allocate() {
    let pool = BufferPool::new(PoolConfig {
        max_bytes: 64 << 20,
        max_buffer_bytes: 1 << 20,
        populate: false,
    })
    .unwrap();
    // Touching each buffer: the pool's buffers reach the executor live.
    let exec = Immediate::new(128).touching_data();
    let config = ScstDeviceConfig {
        budget: 128,
        ..ScstDeviceConfig::default()
    };
    let mut dev = ScstDevice::new(LoopKernel::new(100), exec, pool, config).unwrap();
    // Warm up: the latency histogram and the pool's split state settle.
    while dev.driver().completed < 20_000 {
        dev.poll();
    }
    let before = thread_allocations();
    let start = dev.driver().completed;
    while dev.driver().completed - start < 100_000 {
        dev.poll();
    }
    assert_eq!(thread_allocations() - before, 0, "device polls allocated");
    let st = dev.stats().snapshot();
    assert_eq!(st.bad_frees, 0);
    assert_eq!(st.bad_pbufs, 0);
    assert_eq!(st.busy, 0);
    assert!(st.on_cached_mem_free > 1000);
    assert!(st.alloc_mem > 1000);
}
