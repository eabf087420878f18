//! The simulator allocates nothing per command in steady state: submit,
//! notify, reap and REPLY_AND_GET_MULTI are counted with a counting global
//! allocator (the handler here is allocation-free too, but its own code is
//! not counted). This is a test binary of its own, with one test: the
//! counting allocator is the process's global allocator and its counter is
//! process-wide, so any test running beside it would be counted too.

use dataplane::scst::abi::*;
use dataplane::scst::driver::{MultiBuf, ScstDriver};
use memmap2::MmapMut;
use sim::scst::{ScstSim, ScstSimConfig, SimData, DEV_USER_VERSION_3_11};
use test_support::alloc::{CountingAlloc, ProcessCount};
use test_support::scst::{options, register};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const SLOT: usize = 64 << 10;
const SLOTS: usize = 1024;
const BS: usize = 512;
const BLOCKS: u64 = 8192;
const QD: usize = 64;

/// An allocation-free handler: fixed 64 KiB buffer slots in one mapping.
struct Handler {
    region: MmapMut,
    free: Vec<usize>,
    disk: Vec<u8>,
    replies: Vec<ScstUserReplyCmd>,
    buf: MultiBuf,
}

impl Handler {
    fn slot_of(&self, pbuf: u64) -> usize {
        (pbuf as usize - self.region.as_ptr() as usize) / SLOT
    }

    fn pbuf(&self, slot: usize) -> u64 {
        self.region.as_ptr() as u64 + (slot * SLOT) as u64
    }

    fn handle(&mut self, cmd: &ScstUserGetCmd) {
        let mut r = ScstUserReplyCmd {
            cmd_h: cmd.cmd_h,
            subcode: cmd.subcode,
            ..Default::default()
        };
        match cmd.subcode {
            subcode::ALLOC_MEM => {
                assert!(cmd.alloc_cmd().alloc_len as usize <= SLOT);
                let slot = self.free.pop().expect("buffer");
                r.set_alloc_reply(&ScstUserScsiCmdReplyAllocMem {
                    pbuf: self.pbuf(slot),
                });
            }
            subcode::EXEC => {
                let e = cmd.exec_cmd();
                let mut er = ScstUserScsiCmdReplyExec {
                    reply_type: SCST_EXEC_REPLY_COMPLETED,
                    ..Default::default()
                };
                let at = e.lba as usize * BS;
                let len = e.bufflen as usize;
                let mut pbuf = e.pbuf;
                if pbuf == 0 {
                    let slot = self.free.pop().expect("buffer");
                    pbuf = self.pbuf(slot);
                    er.pbuf = pbuf;
                }
                let off = self.slot_of(pbuf) * SLOT;
                if e.data_direction == SCST_DATA_READ {
                    self.region[off..off + len].copy_from_slice(&self.disk[at..at + len]);
                    er.resp_data_len = len as i32;
                } else {
                    self.disk[at..at + len].copy_from_slice(&self.region[off..off + len]);
                }
                r.set_exec_reply(&er);
            }
            subcode::ON_FREE_CMD => {
                let f = cmd.on_free_cmd();
                if f.buffer_cached == 0 && f.pbuf != 0 {
                    let slot = self.slot_of(f.pbuf);
                    self.free.push(slot);
                }
            }
            subcode::ON_CACHED_MEM_FREE => {
                let slot = self.slot_of(cmd.on_cached_mem_free().pbuf);
                self.free.push(slot);
            }
            _ => {}
        }
        self.replies.push(r);
    }
}

#[test]
fn steady_state_allocates_nothing_per_command() {
    for on_free in [SCST_USER_ON_FREE_CMD_IGNORE, SCST_USER_ON_FREE_CMD_CALL] {
        run(on_free);
    }
}

fn run(on_free: u8) {
    let allocs = ProcessCount::take();
    let (mut drv, mut ini) = ScstSim::new(ScstSimConfig {
        max_cmds: 128,
        ..ScstSimConfig::default()
    })
    .unwrap();
    let opt = options(SCST_USER_MEM_REUSE_ALL, on_free, SCST_USER_PARSE_STANDARD);
    register(&mut drv, DEV_USER_VERSION_3_11, BS as u32, opt).unwrap();
    let mut h = Handler {
        region: MmapMut::map_anon(SLOT * SLOTS).unwrap(),
        free: (0..SLOTS).rev().collect(),
        disk: vec![0; BLOCKS as usize * BS],
        replies: Vec::with_capacity(256),
        buf: MultiBuf::new(64),
    };
    let poll = |h: &mut Handler, drv: &mut sim::scst::ScstSimDriver| {
        let hdr = h.buf.header_mut();
        hdr.preplies = h.replies.as_ptr() as u64;
        hdr.replies_cnt = h.replies.len() as i16;
        hdr.cmds_cnt = 64;
        let res = allocs.counting(|| drv.reply_and_get_multi(&mut h.buf, &h.replies));
        assert!(
            matches!(res, Ok(()) | Err(nix::errno::Errno::EAGAIN)),
            "{res:?}"
        );
        assert_eq!(h.buf.header().replies_done as usize, h.replies.len());
        h.replies.clear();
        let n = if res.is_ok() {
            h.buf.header().cmds_cnt as usize
        } else {
            0
        };
        for i in 0..n {
            let cmd = h.buf.cmds()[i];
            h.handle(&cmd);
        }
        n
    };
    let sess = ini.begin_attach_session(0, "alloc").unwrap();
    while !ini.poll_attach(sess).unwrap() {
        poll(&mut h, &mut drv);
    }
    let write_data = vec![0xA5u8; 32 << 10];
    let mut read_buf = vec![0u8; 32 << 10];
    let mut rng = test_support::rng::seeded(0x1234_5678_9abc_def1);
    let mut cdb = [0u8; 16];
    let mut in_flight = 0usize;
    let mut done = 0u64;
    let mut next_tag = 0u64;
    let mut measure = |count: u64,
                       in_flight: &mut usize,
                       done: &mut u64,
                       h: &mut Handler,
                       drv: &mut sim::scst::ScstSimDriver| {
        let target = *done + count;
        while *done < target {
            while *in_flight < QD {
                let blocks = rng.u32(1..=64); // up to 32 KiB
                let lba = rng.u64(..BLOCKS - 64);
                let write = rng.bool();
                cdb[0] = if write { 0x8A } else { 0x88 };
                cdb[2..10].copy_from_slice(&lba.to_be_bytes());
                cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
                let len = blocks as usize * BS;
                let data = if write {
                    SimData::Out(&write_data[..len])
                } else {
                    SimData::In(len)
                };
                allocs
                    .counting(|| ini.submit(sess, &cdb, data, next_tag))
                    .unwrap();
                next_tag += 1;
                *in_flight += 1;
            }
            allocs.counting(|| ini.notify());
            poll(h, drv);
            let n = allocs
                .counting(|| {
                    ini.reap(|c| {
                        assert_eq!(c.status, 0);
                        c.copy_data_in(&mut read_buf);
                    })
                })
                .unwrap();
            *in_flight -= n;
            *done += n as u64;
        }
    };
    // Warm up: buffers, queues, the handle table and the copy scratch
    // reach their steady sizes.
    measure(30_000, &mut in_flight, &mut done, &mut h, &mut drv);
    // The counter works: the warm-up grew the staging buffers.
    assert!(allocs.reset() > 0);
    measure(30_000, &mut in_flight, &mut done, &mut h, &mut drv);
    assert_eq!(allocs.allocations(), 0, "allocations in steady state");
    assert!(ini.stats().cache_hits > 50_000);
}
