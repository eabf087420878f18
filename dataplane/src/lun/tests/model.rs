//! Tests: random commands, many in flight, against a model of the disk.

use bdev::{Capabilities, IoOp};
use test_support::rng::{seeded, Rng};

use crate::exec::{CommandExecutor, Response};
use crate::scsi::ScsiError;

use super::super::LunStats;
use super::harness::{
    caps, caw, cdb10, cdb16, check, random_cuts, split, unmap_cdb, unmap_list, Harness,
};

/// A command in flight in the model test.
struct Pending {
    buf: Vec<u8>,
    /// Blocks the command may touch (no other command overlaps them).
    range: (u64, u64),
    expected: Response,
    /// Expected data-in bytes.
    data_in: Option<Vec<u8>>,
    what: String,
}

struct Model {
    data: Vec<u8>,
    bs: usize,
    blocks: u64,
}

impl Model {
    fn get(&self, lba: u64, blocks: u64) -> &[u8] {
        &self.data[lba as usize * self.bs..(lba + blocks) as usize * self.bs]
    }
    fn put(&mut self, lba: u64, bytes: &[u8]) {
        let at = lba as usize * self.bs;
        self.data[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

fn overlaps(busy: &[(u64, u64)], lba: u64, end: u64) -> bool {
    busy.iter().any(|&(a, b)| lba < b && a < end)
}

/// Picks `len` free blocks, or None.
fn pick(rng: &mut Rng, model: &Model, busy: &[(u64, u64)], len: u64, limit: u64) -> Option<u64> {
    for _ in 0..10 {
        let lba = rng.u64(..limit.min(model.blocks) - len + 1);
        if !overlaps(busy, lba, lba + len) {
            return Some(lba);
        }
    }
    None
}

fn rw_cdb(rng: &mut Rng, write: bool, lba: u64, blocks: u32, fua: bool) -> Vec<u8> {
    let small = lba < (1 << 21) && blocks <= 256;
    match rng.u64(..4) {
        0 if small => {
            let n = if blocks == 256 { 0 } else { blocks as u8 };
            vec![
                if write { 0x0A } else { 0x08 },
                (lba >> 16) as u8,
                (lba >> 8) as u8,
                lba as u8,
                n,
                0,
            ]
        }
        1 if blocks <= 0xFFFF => cdb10(
            if write { 0x2A } else { 0x28 },
            if fua { 8 } else { 0 },
            lba as u32,
            blocks as u16,
        )
        .to_vec(),
        2 => {
            let mut c = vec![0u8; 12];
            c[0] = if write { 0xAA } else { 0xA8 };
            c[1] = if fua { 8 } else { 0 };
            c[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
            c[6..10].copy_from_slice(&blocks.to_be_bytes());
            c
        }
        _ => cdb16(
            if write { 0x8A } else { 0x88 },
            if fua { 8 } else { 0 },
            lba,
            blocks,
        )
        .to_vec(),
    }
}

/// Generates a random command over free blocks, updating the model with
/// its effect (the blocks are reserved until it completes).
fn generate(
    rng: &mut Rng,
    model: &mut Model,
    busy: &[(u64, u64)],
    unmap: bool,
) -> Option<(Vec<u8>, Pending)> {
    let bs = model.bs;
    let good = Response::good(0);
    let kind = rng.u64(..12);
    if kind == 5 && !unmap {
        return None;
    }
    let pending = |buf: Vec<u8>,
                   range: (u64, u64),
                   expected: Response,
                   data_in: Option<Vec<u8>>,
                   what: String| Pending {
        buf,
        range,
        expected,
        data_in,
        what,
    };
    let ab = |rng: &mut Rng, a: u8, b: u8| if rng.u64(..100) < 50 { a } else { b };
    Some(match kind {
        0 | 1 => {
            // READ, sometimes into a short buffer.
            let blocks = rng.u64(1..=64) as u32;
            let lba = pick(rng, model, busy, u64::from(blocks), model.blocks)?;
            let fua = rng.u64(..100) < 30;
            let cdb = rw_cdb(rng, false, lba, blocks, fua);
            let fit = if rng.u64(..100) < 20 {
                rng.u64(..u64::from(blocks)) as u32
            } else {
                blocks
            };
            let len =
                fit as usize * bs + rng.u64(..if fit < blocks { bs as u64 } else { 700 }) as usize;
            let expected = model.get(lba, u64::from(fit)).to_vec();
            let what = format!("READ {lba}+{blocks} into {len}");
            (
                cdb,
                pending(
                    vec![0xEE; len],
                    (lba, lba + u64::from(blocks)),
                    Response::good((fit as usize * bs) as u32),
                    Some(expected),
                    what,
                ),
            )
        }
        2 | 3 => {
            let blocks = rng.u64(1..=64) as u32;
            let lba = pick(rng, model, busy, u64::from(blocks), model.blocks)?;
            let fua = rng.u64(..100) < 30;
            let cdb = rw_cdb(rng, true, lba, blocks, fua);
            let mut buf = vec![0u8; blocks as usize * bs + rng.u64(..300) as usize];
            rng.fill(&mut buf);
            model.put(lba, &buf[..blocks as usize * bs]);
            (
                cdb,
                pending(
                    buf,
                    (lba, lba + u64::from(blocks)),
                    good,
                    None,
                    format!("WRITE {lba}+{blocks}"),
                ),
            )
        }
        4 => {
            // WRITE SAME: zero/pattern, UNMAP bit, NDOB.
            let blocks = rng.u64(1..=200) as u32;
            let lba = pick(rng, model, busy, u64::from(blocks), model.blocks)?;
            let unmap = rng.u64(..100) < 50;
            let ndob = rng.u64(..100) < 20;
            let mut block = vec![0u8; bs];
            if !ndob && rng.u64(..100) < 60 {
                rng.fill(&mut block);
            }
            let b1 = (if unmap { 0x08 } else { 0 }) | u8::from(ndob);
            let cdb = if ndob || rng.u64(..100) < 50 {
                cdb16(0x93, b1, lba, blocks).to_vec()
            } else {
                cdb10(0x41, b1, lba as u32, blocks as u16).to_vec()
            };
            model.put(lba, &block.repeat(blocks as usize));
            let buf = if ndob { Vec::new() } else { block };
            let what = format!("WRITE SAME {lba}+{blocks} unmap={unmap} ndob={ndob}");
            (
                cdb,
                pending(buf, (lba, lba + u64::from(blocks)), good, None, what),
            )
        }
        5 => {
            // UNMAP of up to 4 pieces of a range, maybe with empty ones.
            let span = rng.u64(4..=256);
            let lba = pick(rng, model, busy, span, model.blocks)?;
            let mut descriptors = Vec::new();
            let mut at = lba;
            for _ in 0..rng.u64(1..=4) {
                let gap = rng.u64(..3);
                let len = rng.u64(..span / 4 + 1);
                if at + gap + len > lba + span {
                    break;
                }
                descriptors.push((at + gap, len as u32));
                model.put(at + gap, &vec![0; len as usize * bs]);
                at += gap + len;
            }
            let list = unmap_list(&descriptors);
            let cdb = unmap_cdb(list.len() as u16).to_vec();
            (
                cdb,
                pending(
                    list,
                    (lba, lba + span),
                    good,
                    None,
                    format!("UNMAP {descriptors:?}"),
                ),
            )
        }
        6 | 7 => {
            // COMPARE AND WRITE, matching or not.
            let blocks = rng.u64(1..=16);
            let lba = pick(rng, model, busy, blocks, model.blocks)?;
            let len = blocks as usize * bs;
            let mut buf = model.get(lba, blocks).to_vec();
            let mut new = vec![0u8; len];
            rng.fill(&mut new);
            let expected = if rng.u64(..100) < 40 {
                let offset = rng.u64(..len as u64) as usize;
                buf[offset] ^= 1 << rng.u64(..8);
                check(ScsiError::Miscompare {
                    offset: offset as u64,
                })
            } else {
                model.put(lba, &new);
                good
            };
            buf.extend_from_slice(&new);
            let cdb = caw(lba, blocks as u8, rng.u64(..100) < 50).to_vec();
            (
                cdb,
                pending(
                    buf,
                    (lba, lba + blocks),
                    expected,
                    None,
                    format!("CAW {lba}+{blocks}"),
                ),
            )
        }
        8 => {
            // VERIFY BYTCHK 01b / 11b / 00b.
            let blocks = rng.u64(1..=40);
            let lba = pick(rng, model, busy, blocks, model.blocks)?;
            let mode = rng.u64(..3);
            let (b1, mut buf) = match mode {
                0 => (0x02, model.get(lba, blocks).to_vec()),
                1 => (0x06, model.get(lba, 1).to_vec()),
                _ => (0x00, Vec::new()),
            };
            if !buf.is_empty() && rng.u64(..100) < 50 {
                let offset = rng.u64(..buf.len() as u64) as usize;
                buf[offset] ^= 0x80;
            }
            let expected = match mode {
                0 => model
                    .get(lba, blocks)
                    .iter()
                    .zip(&buf)
                    .position(|(a, b)| a != b)
                    .map_or(good, |o| check(ScsiError::Miscompare { offset: o as u64 })),
                1 => (0..blocks as usize)
                    .find_map(|i| {
                        model
                            .get(lba + i as u64, 1)
                            .iter()
                            .zip(&buf)
                            .position(|(a, b)| a != b)
                            .map(|o| i * bs + o)
                    })
                    .map_or(good, |o| check(ScsiError::Miscompare { offset: o as u64 })),
                _ => good,
            };
            let cdb = if rng.u64(..100) < 50 {
                cdb10(0x2F, b1, lba as u32, blocks as u16).to_vec()
            } else {
                cdb16(0x8F, b1, lba, blocks as u32).to_vec()
            };
            (
                cdb,
                pending(
                    buf,
                    (lba, lba + blocks),
                    expected,
                    None,
                    format!("VERIFY {lba}+{blocks} mode {mode}"),
                ),
            )
        }
        9 => {
            let blocks = rng.u64(1..=40);
            let lba = pick(rng, model, busy, blocks, model.blocks)?;
            let mut buf = vec![0u8; blocks as usize * bs];
            rng.fill(&mut buf);
            model.put(lba, &buf);
            let b1 = ab(rng, 0x02, 0x00);
            let cdb = if rng.u64(..100) < 50 {
                cdb10(0x2E, b1, lba as u32, blocks as u16).to_vec()
            } else {
                cdb16(0x8E, b1, lba, blocks as u32).to_vec()
            };
            (
                cdb,
                pending(
                    buf,
                    (lba, lba + blocks),
                    good,
                    None,
                    format!("WRITE AND VERIFY {lba}+{blocks}"),
                ),
            )
        }
        10 => {
            let cdb = if rng.u64(..100) < 50 {
                cdb10(0x35, 0x02, 0, 0).to_vec()
            } else {
                cdb16(0x91, 0, 10, 100).to_vec()
            };
            (
                cdb,
                pending(Vec::new(), (0, 0), good, None, "SYNCHRONIZE CACHE".into()),
            )
        }
        _ => {
            let last = (model.blocks - 1) as u32;
            let mut expected = last.to_be_bytes().to_vec();
            expected.extend_from_slice(&(bs as u32).to_be_bytes());
            let cdb = vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            (
                cdb,
                pending(
                    vec![0; 8],
                    (0, 0),
                    Response::good(8),
                    Some(expected),
                    "READ CAPACITY".into(),
                ),
            )
        }
    })
}

/// Drives `commands` random commands, many in flight, through a unit
/// over the test bdev (random, out-of-order completions) and checks
/// every response and, at the end, every byte against the model.
fn model_run(
    seed: u64,
    commands: usize,
    caps: Capabilities,
    depth: usize,
) -> (LunStats, Vec<IoOp>) {
    let mut rng = seeded(seed);
    let mut h = Harness::with(caps, depth, seed, |_| {});
    let mut model = Model {
        data: vec![0; 4096 * 512],
        bs: 512,
        blocks: 4096,
    };
    rng.fill(&mut model.data);
    h.disk.write_blocks(0, &model.data);
    let max_tasks = h.lun.max_tasks() as usize;
    let mut slots: Vec<Option<Pending>> = (0..max_tasks).map(|_| None).collect();
    let mut submitted = 0;
    let mut checked = 0;
    let mut steps = 0;
    while submitted < commands || h.lun.in_flight() > 0 {
        steps += 1;
        assert!(steps < 1_000_000, "stuck: {:?}", h.lun);
        let burst = rng.u64(..8);
        for _ in 0..burst {
            if submitted == commands {
                break;
            }
            let Some(slot) = (0..max_tasks).find(|&s| slots[s].is_none()) else {
                break;
            };
            let busy: Vec<(u64, u64)> = slots.iter().flatten().map(|p| p.range).collect();
            let Some((cdb, pending)) = generate(&mut rng, &mut model, &busy, caps.unmap) else {
                continue;
            };
            let pending = slots[slot].insert(pending);
            let cuts = random_cuts(&mut rng, pending.buf.len());
            let iovs = split(&mut pending.buf, &cuts);
            // SAFETY: the buffer lives in `slots[slot]` (its heap memory
            // does not move) until the response is collected below.
            unsafe { h.lun.submit(slot as u32, &cdb, &iovs) };
            submitted += 1;
        }
        h.step();
        for (slot, response) in h.responses.drain(..) {
            let pending = slots[slot as usize]
                .take()
                .expect("response for an idle slot");
            assert_eq!(response, pending.expected, "seed {seed}: {}", pending.what);
            if let Some(data) = pending.data_in {
                assert_eq!(
                    &pending.buf[..data.len()],
                    &data[..],
                    "seed {seed}: {}",
                    pending.what
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, commands);
    assert_eq!(h.lun.outstanding_requests(), 0);
    assert!(
        h.disk.blocks(0, 4096) == model.data,
        "seed {seed}: disk differs from the model"
    );
    let mut ops: Vec<IoOp> = Vec::new();
    for logged in h.disk.log() {
        if !ops.contains(&logged.op) {
            ops.push(logged.op);
        }
    }
    (h.lun.stats(), ops)
}

#[test]
fn model_disk_random_commands() {
    for seed in 1..=3 {
        let (stats, ops) = model_run(seed, 3000, caps(), 8);
        // The port-full and scratch-exhaustion paths were exercised, and
        // every kind of request.
        assert!(
            stats.head_blocked > 0 && stats.scratch_waits > 0,
            "{stats:?}"
        );
        assert_eq!(ops.len(), 5, "{ops:?}");
    }
}

#[test]
fn model_disk_without_unmap_write_zeroes_or_cache_and_a_deep_port() {
    let caps = Capabilities {
        unmap: false,
        unmap_reads_zeroes: false,
        write_zeroes: false,
        volatile_cache: false,
        ..caps()
    };
    let (stats, mut ops) = model_run(99, 2000, caps, 64);
    assert!(stats.scratch_waits > 0, "{stats:?}");
    ops.sort_by_key(|op| *op as u8);
    assert_eq!(ops, [IoOp::Read, IoOp::Write]);
}
