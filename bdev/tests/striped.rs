//! Striped (RAID0) bdev against a reference model, with reordering, full
//! child channels, child transfer limits and injected child failures.

use std::sync::{Arc, Mutex};

use bdev::{
    Bdev, BdevChannel, BdevRef, Capabilities, Error, Geometry, IoCompletion, IoError, IoOp,
    IoRequest, IoVec, RamBdev, SgList, StripedBdev,
};
use test_support::rng::{seeded, Rng};

/// What a test wrapper saw; shared between the bdev and its channels.
#[derive(Debug, Default)]
struct Stats {
    submitted: usize,
    completed: usize,
    /// Requests larger than the advertised limits.
    limit_violations: usize,
    /// (op, fua, lba, blocks) of every accepted request, if `log` is on.
    log: Vec<(IoOp, bool, u64, u32)>,
}

/// Fails requests of `op` that touch child blocks `first..end`.
#[derive(Debug, Clone, Copy)]
struct FailRule {
    op: IoOp,
    first: u64,
    end: u64,
    error: IoError,
}

/// A test-only wrapper around a child bdev: caps its channels' depth, may
/// advertise transfer limits (and counts violations), delivers completions in
/// a random order spread over several polls, and may fail requests.
#[derive(Debug)]
struct TestBdev {
    inner: BdevRef,
    name: String,
    channel_cap: usize,
    max_transfer_blocks: u32,
    max_unmap_blocks: u32,
    fail: Option<FailRule>,
    reorder: bool,
    log: bool,
    stats: Arc<Mutex<Stats>>,
}

impl TestBdev {
    fn new(inner: BdevRef) -> Self {
        Self {
            name: format!("test({})", inner.name()),
            inner,
            channel_cap: usize::MAX,
            max_transfer_blocks: 0,
            max_unmap_blocks: 0,
            fail: None,
            reorder: false,
            log: false,
            stats: Arc::default(),
        }
    }
}

impl Bdev for TestBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_transfer_blocks: self.max_transfer_blocks,
            max_unmap_blocks: self.max_unmap_blocks,
            ..self.inner.capabilities()
        }
    }

    fn open_channel(&self, queue_depth: usize) -> Result<Box<dyn BdevChannel>, Error> {
        let cap = self.channel_cap.min(queue_depth.max(1));
        Ok(Box::new(TestChannel {
            inner: self.inner.open_channel(cap)?,
            cap,
            held: Vec::new(),
            rng: Rng::with_seed(
                self.name.len() as u64 ^ 0x5eed ^ (Arc::as_ptr(&self.stats) as u64),
            ),
            max_transfer_blocks: self.max_transfer_blocks,
            max_unmap_blocks: self.max_unmap_blocks,
            fail: self.fail,
            reorder: self.reorder,
            log: self.log,
            stats: Arc::clone(&self.stats),
        }))
    }
}

#[derive(Debug)]
struct TestChannel {
    inner: Box<dyn BdevChannel>,
    cap: usize,
    /// Completions taken from `inner` (or failed here) and not yet delivered.
    held: Vec<IoCompletion>,
    rng: Rng,
    max_transfer_blocks: u32,
    max_unmap_blocks: u32,
    fail: Option<FailRule>,
    reorder: bool,
    log: bool,
    stats: Arc<Mutex<Stats>>,
}

impl BdevChannel for TestChannel {
    fn submit(&mut self, request: IoRequest) -> Result<(), IoRequest> {
        if self.in_flight() >= self.cap {
            return Err(request);
        }
        let mut stats = self.stats.lock().unwrap();
        let limit = match request.op {
            IoOp::Read | IoOp::Write => self.max_transfer_blocks,
            IoOp::Unmap | IoOp::WriteZeroes => self.max_unmap_blocks,
            IoOp::Flush => 0,
        };
        if limit != 0 && request.blocks > limit {
            stats.limit_violations += 1;
        }
        if let Some(rule) = self.fail {
            let end = request.lba + u64::from(request.blocks);
            if rule.op == request.op && request.lba < rule.end && end > rule.first {
                self.held.push(IoCompletion {
                    tag: request.tag,
                    result: Err(rule.error),
                });
                stats.submitted += 1;
                return Ok(());
            }
        }
        self.inner.submit(request)?;
        stats.submitted += 1;
        if self.log {
            stats
                .log
                .push((request.op, request.fua, request.lba, request.blocks));
        }
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
        let held = &mut self.held;
        self.inner.poll(&mut |c| held.push(c));
        let mut delivered = 0;
        let mut i = 0;
        while i < self.held.len() {
            if self.reorder && self.rng.u64(..100) < 50 {
                i += 1;
                continue;
            }
            let pick = if self.reorder {
                i + self.rng.usize(..self.held.len() - i)
            } else {
                i
            };
            let c = if self.reorder {
                self.held.swap_remove(pick)
            } else {
                self.held.remove(pick)
            };
            done(c);
            delivered += 1;
        }
        self.stats.lock().unwrap().completed += delivered;
        delivered
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight() + self.held.len()
    }
}

/// A request's buffer: the transfer as one logical byte stream, scattered over
/// iovecs at random places of `backing` with canary gaps between them.
struct Scattered {
    backing: Vec<u8>,
    /// (offset in backing, len) of each iovec.
    pieces: Vec<(usize, usize)>,
    iovs: Vec<IoVec>,
}

const CANARY: u8 = 0xA5;

impl Scattered {
    /// `len` bytes (plus sometimes a few spare bytes at the end) in 1..=6
    /// iovecs of random, mostly odd lengths, some empty, some adjacent.
    fn new(rng: &mut Rng, len: usize) -> Self {
        let total = len
            + if rng.u64(..100) < 20 {
                rng.u64(1..=9) as usize
            } else {
                0
            };
        let count = rng.u64(1..=6) as usize;
        let mut cuts: Vec<usize> = (1..count)
            .map(|_| rng.u64(0..=total as u64) as usize)
            .collect();
        cuts.push(0);
        cuts.push(total);
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut at = 0;
        for w in cuts.windows(2) {
            let piece = w[1] - w[0];
            at += rng.choice([0usize, 0, 1, 3, 8]).unwrap();
            pieces.push((at, piece));
            at += piece;
        }
        let mut backing = vec![CANARY; at + 8];
        let base = backing.as_mut_ptr();
        let iovs = pieces
            .iter()
            // Address arithmetic inside `backing`; used through the SgList.
            .map(|&(off, len)| IoVec {
                base: base.wrapping_add(off),
                len,
            })
            .collect();
        Self {
            backing,
            pieces,
            iovs,
        }
    }

    fn sgl(&self) -> SgList {
        // SAFETY: `iovs` and `backing` live in this `Scattered`, which the
        // test keeps (without touching them) until the request completes;
        // their heap buffers do not move when the struct does.
        unsafe { SgList::from_slice(&self.iovs) }
    }

    /// Writes `data` as the logical stream (its length may be below the
    /// total).
    fn scatter(&mut self, data: &[u8]) {
        let mut rest = data;
        for &(off, len) in &self.pieces {
            let n = len.min(rest.len());
            self.backing[off..off + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }

    /// The first `len` bytes of the logical stream; panics if a canary gap
    /// was written.
    fn gather(&self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut expect_at = 0;
        for &(off, plen) in &self.pieces {
            assert!(
                self.backing[expect_at..off].iter().all(|&b| b == CANARY),
                "gap before iovec at {off} overwritten"
            );
            out.extend_from_slice(&self.backing[off..off + plen]);
            expect_at = off + plen;
        }
        assert!(self.backing[expect_at..].iter().all(|&b| b == CANARY));
        out.truncate(len);
        out
    }
}

/// A request in flight in the model test.
struct Pending {
    tag: u64,
    op: IoOp,
    lba: u64,
    blocks: u32,
    buffer: Option<Scattered>,
    /// For reads: the model's bytes at submission.
    expected_data: Option<Vec<u8>>,
    expected_result: Result<(), IoError>,
}

struct Config {
    children: usize,
    chunk: u32,
    block_size: u32,
    seed: u64,
}

/// Runs random I/O against a striped bdev and a flat model.
fn run_model(cfg: &Config) {
    let mut rng = seeded(cfg.seed);
    let bs = cfg.block_size as usize;
    let chunk = u64::from(cfg.chunk);
    let n = cfg.children as u64;
    let stripes = (128 / chunk).max(3);
    // Children of slightly different sizes: the tail beyond the smallest
    // whole-chunk size is unused.
    let rams: Vec<Arc<RamBdev>> = (0..cfg.children)
        .map(|i| {
            let blocks = stripes * chunk + rng.u64(..chunk);
            Arc::new(RamBdev::new(format!("ram{i}"), cfg.block_size, blocks).unwrap())
        })
        .collect();
    let per_child = rams.iter().map(|r| r.geometry().num_blocks).min().unwrap() / chunk * chunk;
    let wrappers: Vec<Arc<TestBdev>> = rams
        .iter()
        .map(|r| {
            let mut t = TestBdev::new(r.clone());
            t.channel_cap = rng.choice([1, 2, 3, usize::MAX, usize::MAX]).unwrap();
            t.max_transfer_blocks = rng.choice([0, 0, 0, 1, 5, 17]).unwrap();
            t.max_unmap_blocks = rng.choice([0, 0, 3, 9]).unwrap();
            t.reorder = true;
            Arc::new(t)
        })
        .collect();
    let children: Vec<BdevRef> = wrappers.iter().map(|w| w.clone() as BdevRef).collect();
    let striped = StripedBdev::new("s", children, cfg.chunk).unwrap();
    let capacity = striped.geometry().num_blocks;
    assert_eq!(capacity, per_child * n);
    let qd = rng.choice([1usize, 4, 16]).unwrap();
    let mut ch = striped.open_channel(qd).unwrap();
    let mut model = vec![0u8; capacity as usize * bs];
    let mut pending: Vec<Pending> = Vec::new();
    let mut completed = 0usize;
    let max_len = (n + 1) * chunk + 2;
    let ops = 1500;

    let handle = |c: IoCompletion, pending: &mut Vec<Pending>, completed: &mut usize| {
        let i = pending
            .iter()
            .position(|p| p.tag == c.tag)
            .expect("completion for a pending tag");
        let p = pending.swap_remove(i);
        assert_eq!(c.result, p.expected_result, "tag {} {:?}", p.tag, p.op);
        if let (Some(expected), Some(buf)) = (&p.expected_data, &p.buffer) {
            let got = buf.gather(expected.len());
            assert!(
                got == *expected,
                "read lba {} blocks {} differs from the model",
                p.lba,
                p.blocks
            );
        } else if let Some(buf) = &p.buffer {
            // Writes and failed reads leave the buffer's gaps alone.
            buf.gather(0);
        }
        *completed += 1;
    };

    for tag in 0..ops as u64 {
        // Pick an operation and a range that overlaps nothing in flight.
        let (op, lba, blocks, expected_result) = loop {
            let op = match rng.u64(..100) {
                0..=34 => IoOp::Read,
                35..=69 => IoOp::Write,
                70..=79 => IoOp::Unmap,
                80..=89 => IoOp::WriteZeroes,
                _ => IoOp::Flush,
            };
            if op == IoOp::Flush {
                break (op, 0, 0, Ok(()));
            }
            let blocks = match rng.u64(..10) {
                0..=3 => rng.u64(1..=(2 * chunk).min(capacity)),
                4..=7 => rng.u64(1..=max_len.min(capacity)),
                8 => rng.u64(1..=4.min(capacity)),
                _ => rng.u64(0..=capacity),
            };
            if rng.u64(..100) < 3 {
                // Out of range.
                let blocks = blocks.max(1);
                let lba = capacity - rng.u64(..blocks);
                break (op, lba, blocks as u32, Err(IoError::OutOfRange));
            }
            let lba = rng.u64(0..=capacity - blocks);
            let end = lba + blocks;
            let overlaps = pending
                .iter()
                .any(|p| p.op != IoOp::Flush && lba < p.lba + u64::from(p.blocks) && p.lba < end);
            if !overlaps {
                break (op, lba, blocks as u32, Ok(()));
            }
            ch.poll(&mut |c| handle(c, &mut pending, &mut completed));
        };
        let len = blocks as usize * bs;
        let mut p = Pending {
            tag,
            op,
            lba,
            blocks,
            buffer: None,
            expected_data: None,
            expected_result,
        };
        let range = lba as usize * bs..lba as usize * bs + len;
        match op {
            IoOp::Read | IoOp::Write => {
                let short = expected_result.is_ok() && len > 0 && rng.u64(..100) < 3;
                let mut buf = Scattered::new(&mut rng, if short { len - 1 } else { len });
                if short {
                    let total: usize = buf.pieces.iter().map(|p| p.1).sum();
                    if total < len {
                        p.expected_result = Err(IoError::ShortBuffer);
                    }
                }
                if p.expected_result.is_ok() {
                    if op == IoOp::Write {
                        let mut data = vec![0u8; len];
                        rng.fill(&mut data);
                        buf.scatter(&data);
                        model[range].copy_from_slice(&data);
                    } else {
                        p.expected_data = Some(model[range].to_vec());
                    }
                }
                p.buffer = Some(buf);
            }
            IoOp::Unmap | IoOp::WriteZeroes => {
                if expected_result.is_ok() {
                    model[range].fill(0);
                }
            }
            IoOp::Flush => {}
        }
        let request = IoRequest {
            op,
            fua: rng.u64(..100) < 30,
            lba,
            blocks,
            sgl: p.buffer.as_ref().map_or(SgList::EMPTY, Scattered::sgl),
            tag,
        };
        pending.push(p);
        let mut request = request;
        loop {
            match ch.submit(request) {
                Ok(()) => break,
                Err(back) => {
                    assert_eq!(back.tag, tag);
                    assert_eq!(ch.in_flight(), qd, "rejected only when full");
                    request = back;
                    ch.poll(&mut |c| handle(c, &mut pending, &mut completed));
                }
            }
        }
        assert!(ch.in_flight() <= qd);
        if rng.u64(..100) < 40 {
            ch.poll(&mut |c| handle(c, &mut pending, &mut completed));
        }
    }
    while ch.in_flight() > 0 {
        ch.poll(&mut |c| handle(c, &mut pending, &mut completed));
    }
    assert!(pending.is_empty());
    assert_eq!(completed, ops);

    // The whole device through the striped bdev.
    let mut whole = vec![0u8; model.len()];
    let iov = [IoVec::from_slice(&mut whole)];
    // SAFETY: `iov` and `whole` outlive the request, drained below.
    let sgl = unsafe { SgList::from_slice(&iov) };
    let mut big = striped.open_channel(1).unwrap();
    big.submit(IoRequest {
        op: IoOp::Read,
        fua: false,
        lba: 0,
        blocks: capacity as u32,
        sgl,
        tag: 1,
    })
    .unwrap();
    let mut results = Vec::new();
    while big.in_flight() > 0 {
        big.poll(&mut |c| results.push(c.result));
    }
    assert_eq!(results, [Ok(())]);
    assert!(whole == model, "full read differs from the model");

    // Each child holds exactly the RAID0 mapping of the model.
    for (c, ram) in rams.iter().enumerate() {
        let child_blocks = ram.geometry().num_blocks;
        let mut data = vec![0u8; child_blocks as usize * bs];
        let iov = [IoVec::from_slice(&mut data)];
        // SAFETY: `iov` and `data` outlive the request, polled below.
        let sgl = unsafe { SgList::from_slice(&iov) };
        let mut rch = ram.open_channel(1).unwrap();
        rch.submit(IoRequest {
            op: IoOp::Read,
            fua: false,
            lba: 0,
            blocks: child_blocks as u32,
            sgl,
            tag: 0,
        })
        .unwrap();
        assert_eq!(rch.poll(&mut |c| assert_eq!(c.result, Ok(()))), 1);
        for b in 0..child_blocks {
            let got = &data[b as usize * bs..][..bs];
            if b >= per_child {
                assert!(got.iter().all(|&x| x == 0), "unused tail of child {c}");
                continue;
            }
            let strip = (b / chunk) * n + c as u64;
            let parent = strip * chunk + b % chunk;
            let want = &model[parent as usize * bs..][..bs];
            assert!(got == want, "child {c} block {b} (parent lba {parent})");
        }
    }

    for w in &wrappers {
        let stats = w.stats.lock().unwrap();
        assert_eq!(stats.limit_violations, 0, "{}", w.name);
        assert_eq!(stats.submitted, stats.completed, "{}", w.name);
    }
}

#[test]
fn striped_matches_reference_model() {
    let mut seed = 1;
    for children in 1..=4 {
        for chunk in [1, 8, 64] {
            for block_size in [512, 4096] {
                seed += 1;
                run_model(&Config {
                    children,
                    chunk,
                    block_size,
                    seed,
                });
            }
        }
    }
}

fn ram(name: &str, blocks: u64) -> Arc<RamBdev> {
    Arc::new(RamBdev::new(name, 512, blocks).unwrap())
}

fn poll_all(ch: &mut dyn BdevChannel) -> Vec<IoCompletion> {
    let mut got = Vec::new();
    while ch.in_flight() > 0 {
        ch.poll(&mut |c| got.push(c));
    }
    got.sort_by_key(|c| c.tag);
    got
}

#[test]
fn child_failure_fails_parent_and_frees_slot() {
    // Three children, chunk 4: parent strip s lives on child s % 3.
    let rams = [ram("a", 64), ram("b", 64), ram("c", 64)];
    let mut wrappers: Vec<TestBdev> = rams.iter().map(|r| TestBdev::new(r.clone())).collect();
    // Child 1 fails writes to its blocks 4..8 (parent strip 4: LBAs 16..20),
    // child 2 fails writes to its blocks 4..8 (parent strip 5: LBAs 20..24)
    // and reads of its blocks 0..4 (parent strip 2: LBAs 8..12).
    wrappers[1].fail = Some(FailRule {
        op: IoOp::Write,
        first: 4,
        end: 8,
        error: IoError::Write(5),
    });
    wrappers[2].fail = Some(FailRule {
        op: IoOp::Write,
        first: 4,
        end: 8,
        error: IoError::Write(6),
    });
    let read_fail = TestBdev {
        fail: Some(FailRule {
            op: IoOp::Read,
            first: 0,
            end: 4,
            error: IoError::Read(61),
        }),
        ..TestBdev::new(rams[2].clone())
    };
    let stats: Vec<_> = wrappers.iter().map(|w| w.stats.clone()).collect();
    let children: Vec<BdevRef> = wrappers
        .into_iter()
        .map(|w| Arc::new(w) as BdevRef)
        .collect();
    let striped = StripedBdev::new("s", children, 4).unwrap();
    let qd = 4;
    let mut ch = striped.open_channel(qd).unwrap();

    // A write over strips 3..=5 (LBAs 12..24): child 0 succeeds, children 1
    // and 2 fail; children are polled in order, so child 1's error is first.
    let mut data: Vec<u8> = (0..12 * 512).map(|i| (i % 251) as u8 + 1).collect();
    let iov = [IoVec::from_slice(&mut data)];
    // SAFETY: `iov` and `data` outlive every request below, all drained.
    let sgl = unsafe { SgList::from_slice(&iov) };
    ch.submit(IoRequest::new(IoOp::Write, 12, 12, sgl, 1))
        .unwrap();
    // A write that touches only healthy blocks, in flight at the same time.
    ch.submit(IoRequest::new(IoOp::Write, 0, 12, sgl, 2))
        .unwrap();
    // A write whose only failing child is child 2.
    ch.submit(IoRequest::new(IoOp::Write, 20, 4, sgl, 3))
        .unwrap();
    let results: Vec<_> = poll_all(ch.as_mut())
        .iter()
        .map(|c| (c.tag, c.result))
        .collect();
    assert_eq!(
        results,
        [
            (1, Err(IoError::Write(5))),
            (2, Ok(())),
            (3, Err(IoError::Write(6)))
        ]
    );
    assert_eq!(ch.in_flight(), 0);
    for s in &stats {
        let s = s.lock().unwrap();
        assert_eq!(s.submitted, s.completed);
    }
    // Child 0's share of the failed write (strip 3 = its blocks 4..8) was
    // written: RAID0 does not roll back.
    let mut back = vec![0u8; 4 * 512];
    let biov = [IoVec::from_slice(&mut back)];
    // SAFETY: `biov` and `back` outlive the request, drained below.
    let bsgl = unsafe { SgList::from_slice(&biov) };
    let mut rch = rams[0].open_channel(1).unwrap();
    rch.submit(IoRequest::new(IoOp::Read, 4, 4, bsgl, 9))
        .unwrap();
    assert_eq!(poll_all(rch.as_mut())[0].result, Ok(()));
    assert_eq!(back, data[..4 * 512]);

    // No slot leaked: all `qd` slots take healthy requests, one more is
    // handed back, and all complete.
    for tag in 10..10 + qd as u64 {
        ch.submit(IoRequest::new(IoOp::Read, 0, 12, sgl, tag))
            .unwrap();
    }
    let back_req = ch
        .submit(IoRequest::new(IoOp::Read, 0, 1, sgl, 99))
        .unwrap_err();
    assert_eq!(back_req.tag, 99);
    let results = poll_all(ch.as_mut());
    assert_eq!(results.len(), qd);
    assert!(results.iter().all(|c| c.result.is_ok()));
    assert_eq!(ch.in_flight(), 0);

    // A read failure on one child fails the parent that reads it.
    let children: Vec<BdevRef> = vec![rams[0].clone(), rams[1].clone(), Arc::new(read_fail)];
    let striped = StripedBdev::new("r", children, 4).unwrap();
    let mut ch = striped.open_channel(2).unwrap();
    ch.submit(IoRequest::new(IoOp::Read, 4, 8, sgl, 1)).unwrap();
    ch.submit(IoRequest::new(IoOp::Read, 12, 8, sgl, 2))
        .unwrap();
    let results: Vec<_> = poll_all(ch.as_mut())
        .iter()
        .map(|c| (c.tag, c.result))
        .collect();
    assert_eq!(results, [(1, Err(IoError::Read(61))), (2, Ok(()))]);
}

#[test]
fn full_children_hold_requests_until_poll() {
    // Children that take one request at a time: parents that span all of
    // them wait in the striped channel and go out from poll.
    let rams = [ram("a", 64), ram("b", 64)];
    let children: Vec<BdevRef> = rams
        .iter()
        .map(|r| {
            let mut t = TestBdev::new(r.clone());
            t.channel_cap = 1;
            Arc::new(t) as BdevRef
        })
        .collect();
    let striped = StripedBdev::new("s", children, 2).unwrap();
    let qd = 4;
    let mut ch = striped.open_channel(qd).unwrap();
    let mut bufs: Vec<Vec<u8>> = (0..qd).map(|i| vec![i as u8 + 1; 8 * 512]).collect();
    let iovs: Vec<[IoVec; 1]> = bufs.iter_mut().map(|b| [IoVec::from_slice(b)]).collect();
    for (i, iov) in iovs.iter().enumerate() {
        // SAFETY: `iovs` and `bufs` outlive the requests, drained below.
        let sgl = unsafe { SgList::from_slice(iov) };
        ch.submit(IoRequest::new(IoOp::Write, 8 * i as u64, 8, sgl, i as u64))
            .unwrap();
    }
    assert_eq!(ch.in_flight(), qd);
    let results = poll_all(ch.as_mut());
    assert_eq!(results.len(), qd);
    assert!(results.iter().all(|c| c.result.is_ok()));
    // Every block holds its writer's byte: parent LBA l on child (l/2)%2.
    for (c, r) in rams.iter().enumerate() {
        let mut data = vec![0u8; 64 * 512];
        let iov = [IoVec::from_slice(&mut data)];
        // SAFETY: `iov` and `data` outlive the request, drained below.
        let sgl = unsafe { SgList::from_slice(&iov) };
        let mut rch = r.open_channel(1).unwrap();
        rch.submit(IoRequest::new(IoOp::Read, 0, 64, sgl, 0))
            .unwrap();
        poll_all(rch.as_mut());
        for b in 0..16u64 {
            let parent = ((b / 2) * 2 + c as u64) * 2 + b % 2;
            let want = (parent / 8) as u8 + 1;
            assert!(data[b as usize * 512..][..512].iter().all(|&x| x == want));
        }
    }
}

#[test]
fn flush_fans_out_and_fua_passes_through() {
    let wrappers: Vec<TestBdev> = (0..3)
        .map(|i| {
            let mut t = TestBdev::new(ram(&format!("r{i}"), 32));
            t.log = true;
            t
        })
        .collect();
    let stats: Vec<_> = wrappers.iter().map(|w| w.stats.clone()).collect();
    let children: Vec<BdevRef> = wrappers
        .into_iter()
        .map(|w| Arc::new(w) as BdevRef)
        .collect();
    let striped = StripedBdev::new("s", children, 8).unwrap();
    let mut ch = striped.open_channel(4).unwrap();
    ch.submit(IoRequest::new(IoOp::Flush, 0, 0, SgList::EMPTY, 1))
        .unwrap();
    let mut data = vec![3u8; 32 * 512];
    let iov = [IoVec::from_slice(&mut data)];
    // SAFETY: `iov` and `data` outlive the request, drained below.
    let sgl = unsafe { SgList::from_slice(&iov) };
    ch.submit(IoRequest {
        fua: true,
        ..IoRequest::new(IoOp::Write, 4, 32, sgl, 2)
    })
    .unwrap();
    ch.submit(IoRequest::new(IoOp::WriteZeroes, 40, 2, SgList::EMPTY, 3))
        .unwrap();
    let results: Vec<_> = poll_all(ch.as_mut()).iter().map(|c| c.result).collect();
    assert_eq!(results, [Ok(()), Ok(()), Ok(())]);
    let logs: Vec<_> = stats
        .iter()
        .map(|s| s.lock().unwrap().log.clone())
        .collect();
    // LBAs 4..36 = strips 0 (4..8) and 3 (24..32) on child 0, whose child
    // LBAs 4..8 and 8..16 are contiguous: one request 4..16; strips 1 (8..16)
    // and 4 (32..36) on child 1: child LBAs 0..12; strip 2 on child 2: 0..8.
    // LBAs 40..42: strip 5 -> child 2 at child LBA 8.
    assert_eq!(
        logs[0],
        [(IoOp::Flush, false, 0, 0), (IoOp::Write, true, 4, 12)]
    );
    assert_eq!(
        logs[1],
        [(IoOp::Flush, false, 0, 0), (IoOp::Write, true, 0, 12)]
    );
    assert_eq!(
        logs[2],
        [
            (IoOp::Flush, false, 0, 0),
            (IoOp::Write, true, 0, 8),
            (IoOp::WriteZeroes, false, 8, 2)
        ]
    );
}

#[test]
fn unsupported_and_invalid_parent_requests() {
    let null: BdevRef = Arc::new(bdev::NullBdev::new("n", 512, 64).unwrap());
    let striped = StripedBdev::new("s", vec![ram("a", 64) as BdevRef, null], 8).unwrap();
    let mut ch = striped.open_channel(4).unwrap();
    let mut data = vec![0u8; 512];
    let iov = [IoVec::from_slice(&mut data)];
    // SAFETY: `iov` and `data` outlive the requests, drained below.
    let sgl = unsafe { SgList::from_slice(&iov) };
    ch.submit(IoRequest::new(IoOp::Read, 127, 2, sgl, 1))
        .unwrap();
    ch.submit(IoRequest::new(IoOp::Read, 0, 2, sgl, 2)).unwrap();
    ch.submit(IoRequest::new(IoOp::Read, 0, 0, sgl, 3)).unwrap();
    ch.submit(IoRequest::new(IoOp::Unmap, 0, 0, SgList::EMPTY, 4))
        .unwrap();
    let results: Vec<_> = poll_all(ch.as_mut())
        .iter()
        .map(|c| (c.tag, c.result))
        .collect();
    assert_eq!(
        results,
        [
            (1, Err(IoError::OutOfRange)),
            (2, Err(IoError::ShortBuffer)),
            (3, Ok(())),
            (4, Ok(())),
        ]
    );

    // A child without write-zeroes support makes the parent refuse it.
    #[derive(Debug)]
    struct NoZeroes(BdevRef);
    impl Bdev for NoZeroes {
        fn name(&self) -> &str {
            "nz"
        }
        fn geometry(&self) -> Geometry {
            self.0.geometry()
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                write_zeroes: false,
                ..self.0.capabilities()
            }
        }
        fn open_channel(&self, depth: usize) -> Result<Box<dyn BdevChannel>, Error> {
            self.0.open_channel(depth)
        }
    }
    let striped = StripedBdev::new(
        "s",
        vec![ram("a", 64) as BdevRef, Arc::new(NoZeroes(ram("b", 64)))],
        8,
    )
    .unwrap();
    assert!(!striped.capabilities().write_zeroes);
    let mut ch = striped.open_channel(1).unwrap();
    ch.submit(IoRequest::new(IoOp::WriteZeroes, 0, 16, SgList::EMPTY, 7))
        .unwrap();
    assert_eq!(poll_all(ch.as_mut())[0].result, Err(IoError::Unsupported));
}
