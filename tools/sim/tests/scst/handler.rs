//! A small scst_user handler for the simulator tests, written against the
//! ABI structs directly: one REPLY_AND_GET_MULTI per `poll`, replies of the
//! previous round carried in it, a model disk in memory, page-aligned
//! buffers from anonymous mappings. It checks the kernel side as it goes
//! (every pbuf it is handed must be a live buffer of its own, ON_CACHED_MEM_FREE
//! must name the command that supplied the buffer) and records violations
//! in `errors`.

#![allow(dead_code)]

use std::collections::HashMap;

use dataplane::scst::abi::*;
use dataplane::scst::driver::{MultiBuf, ScstDriver};
use memmap2::MmapMut;
use nix::errno::Errno;
use sim::scst::{ScstSim, ScstSimConfig, ScstSimDriver, ScstSimInitiator, DEV_USER_VERSION_3_11};
use test_support::rng::Rng;
use test_support::scst;
pub use test_support::scst::{desc, options, DescStrings};

pub const PAGE: usize = 4096;

/// A buffer the handler allocated.
struct Buf {
    map: MmapMut,
    /// Offset of the pbuf in the mapping (non-zero for misaligned ones).
    off: usize,
    len: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub attach: u64,
    pub detach: u64,
    pub parse: u64,
    pub alloc: u64,
    pub exec: u64,
    pub exec_cached_pbuf: u64,
    pub on_free: u64,
    pub cached_free: u64,
    pub tm_received: u64,
    pub tm_done: u64,
}

pub struct Handler {
    pub drv: ScstSimDriver,
    pub buf: MultiBuf,
    /// Replies to send with the next call.
    pub pending: Vec<ScstUserReplyCmd>,
    senses: HashMap<u32, Box<[u8; 64]>>,
    ws_descs: HashMap<u32, Box<[ScstUserDataDescriptor; 8]>>,
    pub disk: Vec<u8>,
    pub bs: usize,
    pub opt: ScstUserOpt,
    pub budget: usize,
    bufs: HashMap<u64, Buf>,
    /// pbuf → cmd_h of the command (or prealloc) that supplied it, for
    /// buffers the kernel caches.
    owners: HashMap<u64, u32>,
    pub counts: Counts,
    /// TM subcommands seen: (subcode, tm).
    pub tm_log: Vec<(u32, ScstUserTm)>,
    /// Sessions attached (sess_h → lun).
    pub sessions: HashMap<u64, u64>,
    /// Result to give ATTACH_SESS.
    pub attach_result: i32,
    /// Result to give TASK_MGMT_DONE.
    pub tm_done_result: i32,
    /// Answer ATTACH_SESS at all.
    pub answer_attach: bool,
    /// Give uncached buffers a pbuf 512 bytes into a page.
    pub misalign_uncached: bool,
    /// Answer WRITE SAME with DO_WRITE_SAME (ranges per `ws_ranges`, or the
    /// whole range).
    pub ws_offload: bool,
    pub ws_ranges: Vec<(u64, u64)>,
    /// Keep EXECs instead of answering them (for TM tests).
    pub hold_exec: bool,
    pub held: Vec<ScstUserGetCmd>,
    /// Every subcommand fetched, in order: (cmd_h, subcode).
    pub log: Vec<(u32, u32)>,
    /// Protocol violations found.
    pub errors: Vec<String>,
    pub last_result: Result<(), Errno>,
    /// Block length READ CAPACITY(10) reports.
    pub report_bs: u32,
}

impl Handler {
    pub fn new(drv: ScstSimDriver, opt: ScstUserOpt, disk_blocks: usize, bs: usize) -> Self {
        Self {
            drv,
            buf: MultiBuf::new(64),
            pending: Vec::new(),
            senses: HashMap::new(),
            ws_descs: HashMap::new(),
            disk: vec![0; disk_blocks * bs],
            bs,
            opt,
            budget: 16,
            bufs: HashMap::new(),
            owners: HashMap::new(),
            counts: Counts::default(),
            tm_log: Vec::new(),
            sessions: HashMap::new(),
            attach_result: 0,
            tm_done_result: 0,
            answer_attach: true,
            misalign_uncached: false,
            ws_offload: false,
            ws_ranges: Vec::new(),
            hold_exec: false,
            held: Vec::new(),
            log: Vec::new(),
            errors: Vec::new(),
            last_result: Ok(()),
            report_bs: bs as u32,
        }
    }

    /// Registers "disk0" with this handler's options.
    pub fn register(&mut self) -> Result<(), Errno> {
        scst::register(
            &mut self.drv,
            DEV_USER_VERSION_3_11,
            self.bs as u32,
            self.opt,
        )
    }

    /// Handler buffers alive now.
    pub fn live_buffers(&self) -> usize {
        self.bufs.len()
    }

    fn cached(&self, dir: u8) -> bool {
        match self.opt.memory_reuse_type {
            SCST_USER_MEM_REUSE_ALL => true,
            SCST_USER_MEM_REUSE_READ => dir == SCST_DATA_READ,
            SCST_USER_MEM_REUSE_WRITE => dir == SCST_DATA_WRITE,
            _ => false,
        }
    }

    pub fn alloc(&mut self, len: usize, aligned: bool) -> u64 {
        let off = if aligned { 0 } else { 512 };
        let map = MmapMut::map_anon((len + off).max(1)).expect("anonymous mapping");
        let pbuf = map.as_ptr() as u64 + off as u64;
        self.bufs.insert(pbuf, Buf { map, off, len });
        pbuf
    }

    fn buffer(&mut self, pbuf: u64, need: usize, what: &str) -> Option<&mut [u8]> {
        match self.bufs.get_mut(&pbuf) {
            Some(b) if b.len >= need => Some(&mut b.map[b.off..b.off + b.len]),
            Some(b) => {
                let len = b.len;
                self.errors.push(format!(
                    "{what}: pbuf {pbuf:#x} has {len} bytes, need {need}"
                ));
                None
            }
            None => {
                self.errors.push(format!(
                    "{what}: pbuf {pbuf:#x} is not a live handler buffer"
                ));
                None
            }
        }
    }

    fn free(&mut self, pbuf: u64, what: &str) {
        if self.bufs.remove(&pbuf).is_none() {
            self.errors
                .push(format!("{what}: freeing unknown pbuf {pbuf:#x}"));
        }
        self.owners.remove(&pbuf);
    }

    /// A sense buffer for the reply to `cmd_h`, alive until that reply is
    /// consumed.
    fn sense_for(&mut self, cmd_h: u32, key: u8, asc: u8, ascq: u8) -> (u8, u64) {
        let mut s = Box::new([0u8; 64]);
        s[0] = 0x70;
        s[2] = key;
        s[7] = 10;
        s[12] = asc;
        s[13] = ascq;
        let p = s.as_ptr() as u64;
        self.senses.insert(cmd_h, s);
        (18, p)
    }

    /// Sends the pending replies and fetches up to `budget` subcommands;
    /// handles them (their replies go with the next call). Returns the
    /// number fetched. On a reply error the failed reply is dropped and the
    /// ones after it are kept (`replies_done` counts the replies before the
    /// failed one, as `dev_user_reply_get_multi` writes it).
    pub fn poll(&mut self) -> usize {
        let want = self.budget.min(self.buf.capacity()) as i16;
        let hdr = self.buf.header_mut();
        hdr.preplies = self.pending.as_ptr() as u64;
        hdr.replies_cnt = self.pending.len() as i16;
        hdr.replies_done = -1;
        hdr.cmds_cnt = want;
        let res = self.drv.reply_and_get_multi(&mut self.buf, &self.pending);
        self.last_result = res;
        let done = self.buf.header().replies_done;
        if done < 0 || done as usize > self.pending.len() {
            self.errors
                .push(format!("replies_done {done} out of range"));
            self.pending.clear();
            return 0;
        }
        let done = done as usize;
        match res {
            Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => {
                if done != self.pending.len() {
                    self.errors.push(format!(
                        "{res:?} with replies_done {done} of {}",
                        self.pending.len()
                    ));
                }
                self.pending.clear();
            }
            Err(_) => {
                // The failed reply is not resent; the rest are.
                let drop_to = (done + 1).min(self.pending.len());
                self.pending.drain(..drop_to);
            }
        }
        let still: std::collections::HashSet<u32> = self.pending.iter().map(|r| r.cmd_h).collect();
        self.senses.retain(|h, _| still.contains(h));
        self.ws_descs.retain(|h, _| still.contains(h));
        let n = if res.is_ok() {
            self.buf.header().cmds_cnt as usize
        } else {
            0
        };
        for i in 0..n {
            let cmd = self.buf.cmds()[i];
            self.log.push((cmd.cmd_h, cmd.subcode));
            self.handle(&cmd);
        }
        n
    }

    /// One REPLY_AND_GET_MULTI with exactly `replies`, asking for `want`
    /// subcommands, without handling them: (result, replies_done,
    /// subcommands returned).
    pub fn raw(
        &mut self,
        replies: &[ScstUserReplyCmd],
        want: i16,
    ) -> (Result<(), Errno>, i16, Vec<ScstUserGetCmd>) {
        let hdr = self.buf.header_mut();
        hdr.preplies = replies.as_ptr() as u64;
        hdr.replies_cnt = replies.len() as i16;
        hdr.replies_done = -1;
        hdr.cmds_cnt = want;
        let res = self.drv.reply_and_get_multi(&mut self.buf, replies);
        let done = self.buf.header().replies_done;
        let n = if res.is_ok() {
            self.buf.header().cmds_cnt as usize
        } else {
            assert_eq!(self.buf.header().cmds_cnt, 0, "cmds_cnt after {res:?}");
            0
        };
        (res, done, self.buf.cmds()[..n].to_vec())
    }

    /// Polls until a call fetches nothing and no reply is pending.
    pub fn run_until_idle(&mut self) {
        for _ in 0..100_000 {
            let n = self.poll();
            if n == 0 && self.pending.is_empty() {
                return;
            }
        }
        panic!("handler never went idle");
    }

    fn reply(&mut self, cmd_h: u32, subcode: u32) -> ScstUserReplyCmd {
        ScstUserReplyCmd {
            cmd_h,
            subcode,
            ..Default::default()
        }
    }

    pub fn handle(&mut self, cmd: &ScstUserGetCmd) {
        match cmd.subcode {
            subcode::ATTACH_SESS => {
                self.counts.attach += 1;
                let s = cmd.sess();
                self.sessions.insert(s.sess_h, s.lun);
                if self.answer_attach {
                    let mut r = self.reply(cmd.cmd_h, cmd.subcode);
                    r.set_result(&self.attach_result);
                    self.pending.push(r);
                }
            }
            subcode::DETACH_SESS => {
                self.counts.detach += 1;
                self.sessions.remove(&cmd.sess().sess_h);
                let r = self.reply(cmd.cmd_h, cmd.subcode);
                self.pending.push(r);
            }
            subcode::PARSE => {
                self.counts.parse += 1;
                let p = cmd.parse_cmd();
                let mut pr = ScstUserScsiCmdReplyParse::default();
                if p.op_flags & SCST_INFO_VALID == 0 {
                    // Unknown to the core: the handler knows opcode 0xC0
                    // (vendor, no data); anything else is refused.
                    if p.cdb[0] == 0xC0 {
                        pr.set_result(&ParseResult {
                            queue_type: p.queue_type,
                            data_direction: SCST_DATA_NONE,
                            cdb_len: p.cdb_len,
                            op_flags: SCST_INFO_VALID,
                            ..Default::default()
                        });
                    } else {
                        pr.status = 2;
                        let (len, ptr) = self.sense_for(cmd.cmd_h, 5, 0x20, 0);
                        pr.set_sense(&ReplySense {
                            sense_len: len,
                            psense_buffer: ptr,
                            ..Default::default()
                        });
                    }
                } else {
                    pr.set_result(&ParseResult::passthrough(&p));
                }
                let mut r = self.reply(cmd.cmd_h, cmd.subcode);
                r.set_parse_reply(&pr);
                self.pending.push(r);
            }
            subcode::ALLOC_MEM => {
                self.counts.alloc += 1;
                let a = cmd.alloc_cmd();
                let cached = self.cached(a.data_direction);
                let pbuf = self.alloc(a.alloc_len as usize, cached || !self.misalign_uncached);
                if cached {
                    self.owners.insert(pbuf, cmd.cmd_h);
                }
                let mut r = self.reply(cmd.cmd_h, cmd.subcode);
                r.set_alloc_reply(&ScstUserScsiCmdReplyAllocMem { pbuf });
                self.pending.push(r);
            }
            subcode::EXEC => {
                self.counts.exec += 1;
                if self.hold_exec {
                    self.held.push(*cmd);
                    return;
                }
                let r = self.exec(cmd);
                self.pending.push(r);
            }
            subcode::ON_FREE_CMD => {
                self.counts.on_free += 1;
                let f = cmd.on_free_cmd();
                if f.buffer_cached == 0 && f.pbuf != 0 {
                    self.free(f.pbuf, "ON_FREE_CMD");
                }
                let r = self.reply(cmd.cmd_h, cmd.subcode);
                self.pending.push(r);
            }
            subcode::ON_CACHED_MEM_FREE => {
                self.counts.cached_free += 1;
                let pbuf = cmd.on_cached_mem_free().pbuf;
                match self.owners.get(&pbuf) {
                    Some(&owner) if owner == cmd.cmd_h => {}
                    other => self.errors.push(format!(
                        "ON_CACHED_MEM_FREE of {pbuf:#x} with cmd_h {} but owner {other:?}",
                        cmd.cmd_h
                    )),
                }
                self.free(pbuf, "ON_CACHED_MEM_FREE");
                let r = self.reply(cmd.cmd_h, cmd.subcode);
                self.pending.push(r);
            }
            subcode::TASK_MGMT_RECEIVED | subcode::TASK_MGMT_DONE => {
                if cmd.subcode == subcode::TASK_MGMT_RECEIVED {
                    self.counts.tm_received += 1;
                } else {
                    self.counts.tm_done += 1;
                }
                self.tm_log.push((cmd.subcode, cmd.tm_cmd()));
                let mut r = self.reply(cmd.cmd_h, cmd.subcode);
                let result = if cmd.subcode == subcode::TASK_MGMT_DONE {
                    self.tm_done_result
                } else {
                    0
                };
                r.set_result(&result);
                self.pending.push(r);
            }
            other => self.errors.push(format!("unknown subcode {other:#x}")),
        }
    }

    /// Records a buffer supplied in a prealloc as owned by `cmd_h`.
    pub fn own(&mut self, pbuf: u64, cmd_h: u32) {
        self.owners.insert(pbuf, cmd_h);
    }

    /// Executes an EXEC against the model disk; returns the reply.
    pub fn exec(&mut self, cmd: &ScstUserGetCmd) -> ScstUserReplyCmd {
        let e = cmd.exec_cmd();
        let mut er = ScstUserScsiCmdReplyExec {
            reply_type: SCST_EXEC_REPLY_COMPLETED,
            ..Default::default()
        };
        let cdb = &e.cdb[..usize::from(e.cdb_len)];
        let bs = self.bs as u64;
        let nblocks = (self.disk.len() / self.bs) as u64;
        let rw = rw_range(cdb);
        if e.pbuf != 0 {
            self.counts.exec_cached_pbuf += u64::from(self.bufs.contains_key(&e.pbuf));
        }
        match cdb[0] {
            0x00 | 0x35 | 0x91 => {}
            0x25 => {
                let mut data = [0u8; 8];
                data[..4].copy_from_slice(&((nblocks - 1) as u32).to_be_bytes());
                data[4..].copy_from_slice(&self.report_bs.to_be_bytes());
                let mut pbuf = e.pbuf;
                if pbuf == 0 {
                    pbuf = self.alloc(e.alloc_len as usize, true);
                    if self.cached(SCST_DATA_READ) {
                        self.owners.insert(pbuf, cmd.cmd_h);
                    }
                    er.pbuf = pbuf;
                }
                if let Some(b) = self.buffer(pbuf, 8, "READ CAPACITY") {
                    b[..8].copy_from_slice(&data);
                }
                er.resp_data_len = 8;
            }
            0x41 | 0x93 if self.ws_offload => {
                er.reply_type = SCST_EXEC_REPLY_DO_WRITE_SAME;
                if !self.ws_ranges.is_empty() {
                    let mut d = Box::new([ScstUserDataDescriptor::default(); 8]);
                    for (i, &(lba, blocks)) in self.ws_ranges.iter().enumerate().take(7) {
                        d[i] = ScstUserDataDescriptor {
                            usdd_lba: lba,
                            usdd_blocks: blocks,
                        };
                    }
                    let n = self.ws_ranges.len().min(7) + 1;
                    er.set_write_same(&ReplyWriteSame {
                        ws_descriptors_len: (n * 16) as u16,
                        ws_descriptors: d.as_ptr() as u64,
                        ..Default::default()
                    });
                    self.ws_descs.insert(cmd.cmd_h, d);
                }
            }
            0x41 | 0x93 => {
                // Write the pattern block (or zeros with NDOB) ourselves.
                let (lba, blocks) = rw.expect("range");
                let mut pattern = vec![0u8; self.bs];
                if e.pbuf != 0 {
                    if let Some(b) = self.buffer(e.pbuf, self.bs, "WRITE SAME") {
                        let n = pattern.len();
                        pattern.copy_from_slice(&b[..n]);
                    }
                }
                for b in lba..lba + blocks {
                    let at = (b * bs) as usize;
                    self.disk[at..at + self.bs].copy_from_slice(&pattern);
                }
            }
            _ => match rw {
                Some((lba, blocks)) if lba + blocks > nblocks => {
                    er.status = 2;
                    let (len, ptr) = self.sense_for(cmd.cmd_h, 5, 0x21, 0);
                    er.set_sense(&ReplySense {
                        sense_len: len,
                        psense_buffer: ptr,
                        ..Default::default()
                    });
                }
                Some((lba, blocks)) => {
                    let at = (lba * bs) as usize;
                    let len = (blocks * bs) as usize;
                    if e.data_direction == SCST_DATA_READ {
                        let mut pbuf = e.pbuf;
                        if pbuf == 0 && len > 0 {
                            if (e.alloc_len as usize) < len {
                                self.errors
                                    .push(format!("alloc_len {} < bufflen {len}", e.alloc_len));
                            }
                            let cached = self.cached(SCST_DATA_READ);
                            pbuf =
                                self.alloc(e.alloc_len as usize, cached || !self.misalign_uncached);
                            if cached {
                                self.owners.insert(pbuf, cmd.cmd_h);
                            }
                            er.pbuf = pbuf;
                        }
                        let src = self.disk[at..at + len].to_vec();
                        if let Some(b) = self.buffer(pbuf, len, "READ") {
                            b[..len].copy_from_slice(&src);
                        }
                        er.resp_data_len = len as i32;
                    } else if e.data_direction == SCST_DATA_WRITE {
                        let mut data = vec![0u8; len];
                        if let Some(b) = self.buffer(e.pbuf, len, "WRITE") {
                            data.copy_from_slice(&b[..len]);
                        }
                        self.disk[at..at + len].copy_from_slice(&data);
                    }
                }
                None => {
                    // Anything else: INVALID COMMAND OPERATION CODE.
                    er.status = 2;
                    let (len, ptr) = self.sense_for(cmd.cmd_h, 5, 0x20, 0);
                    er.set_sense(&ReplySense {
                        sense_len: len,
                        psense_buffer: ptr,
                        ..Default::default()
                    });
                }
            },
        }
        let mut r = self.reply(cmd.cmd_h, cmd.subcode);
        r.set_exec_reply(&er);
        r
    }

    /// Answers every held EXEC now.
    pub fn release_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        for cmd in &held {
            let r = self.exec(cmd);
            self.pending.push(r);
        }
    }
}

/// (lba, blocks) of a READ/WRITE/WRITE SAME CDB.
pub fn rw_range(cdb: &[u8]) -> Option<(u64, u64)> {
    let be = |r: std::ops::Range<usize>| cdb[r].iter().fold(0u64, |a, &b| a << 8 | u64::from(b));
    Some(match cdb[0] {
        0x08 | 0x0A => {
            let n = u64::from(cdb[4]);
            (be(1..4) & 0x1F_FFFF, if n == 0 { 256 } else { n })
        }
        0x28 | 0x2A | 0x41 => (be(2..6), be(7..9)),
        0xA8 | 0xAA => (be(2..6), be(6..10)),
        0x88 | 0x8A | 0x93 => (be(2..10), be(10..14)),
        _ => return None,
    })
}

/// CDBs for READ/WRITE of `blocks` at `lba` in the given CDB size.
pub fn rw_cdb(write: bool, size: usize, lba: u64, blocks: u32) -> Vec<u8> {
    match size {
        6 => {
            let mut c = vec![if write { 0x0A } else { 0x08 }, 0, 0, 0, 0, 0];
            c[1] = (lba >> 16) as u8 & 0x1F;
            c[2] = (lba >> 8) as u8;
            c[3] = lba as u8;
            c[4] = if blocks == 256 { 0 } else { blocks as u8 };
            c
        }
        10 => {
            let mut c = vec![if write { 0x2A } else { 0x28 }, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            c[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
            c[7..9].copy_from_slice(&(blocks as u16).to_be_bytes());
            c
        }
        12 => {
            let mut c = vec![
                if write { 0xAA } else { 0xA8 },
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ];
            c[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
            c[6..10].copy_from_slice(&blocks.to_be_bytes());
            c
        }
        _ => {
            let mut c = vec![0u8; 16];
            c[0] = if write { 0x8A } else { 0x88 };
            c[2..10].copy_from_slice(&lba.to_be_bytes());
            c[10..14].copy_from_slice(&blocks.to_be_bytes());
            c
        }
    }
}

/// A registered simulator with one attached session (polled on this
/// thread).
pub fn setup(
    config: ScstSimConfig,
    opt: ScstUserOpt,
    disk_blocks: usize,
    bs: usize,
) -> (Handler, ScstSimInitiator, u64) {
    let (drv, mut ini) = ScstSim::new(config).expect("simulator");
    let mut h = Handler::new(drv, opt, disk_blocks, bs);
    h.register().expect("register");
    let sess = ini
        .attach_session_with(0, "iqn.2024-01.test:init0", || {
            h.poll();
        })
        .expect("attach");
    h.run_until_idle();
    (h, ini, sess)
}

/// A completion as the initiator saw it.
#[derive(Debug, Clone)]
pub struct Done {
    pub tag: u64,
    pub status: u8,
    pub sense: Vec<u8>,
    pub data: Vec<u8>,
    pub aborted: bool,
}

/// Every completion waiting, in completion order, with its data-in.
pub fn reap_all(ini: &mut ScstSimInitiator) -> Vec<Done> {
    let mut v = Vec::new();
    ini.reap(|c| {
        let mut data = vec![0u8; c.data_in_len];
        c.copy_data_in(&mut data);
        v.push(Done {
            tag: c.tag,
            status: c.status,
            sense: c.sense.to_vec(),
            data,
            aborted: c.aborted,
        });
    })
    .unwrap();
    v
}

/// (key, asc, ascq) of a CHECK CONDITION's fixed-format sense.
pub fn kcq(d: &Done) -> (u8, u8, u8) {
    assert_eq!(d.status, 2, "{d:?}");
    (d.sense[2] & 0x0F, d.sense[12], d.sense[13])
}

/// Bytes of a deterministic pattern.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    Rng::with_seed(seed).fill(&mut bytes);
    bytes
}
