//! The `striped` target: the striped bdev's split against a model RAID0.
//!
//! Children are RAM bdevs of different sizes behind [`Recording`]
//! wrappers with transfer limits from the input; the script writes, reads,
//! unmaps, zeroes and flushes arbitrary ranges (inside the bdev or not)
//! with scatter-gather lists cut anywhere.
//!
//! Checks: no panic; a request inside the bdev succeeds and one outside
//! fails with nothing written; every child request lies inside its child
//! and within its limits ([`Recording`]); reads return the model's bytes;
//! at the end every child holds exactly the bytes the model RAID0 layout
//! (`child = strip % n`, `child_lba = (strip / n) * chunk + offset`)
//! puts there.

use std::sync::Arc;

use bdev::{Bdev, BdevChannel, BdevRef, IoOp, IoRequest, IoVec, RamBdev, SgList, StripedBdev};

use crate::input::Input;
use crate::recording::Recording;

const BS: usize = 512;

/// Runs `request` on `channel` to completion; its result.
fn run_one(channel: &mut dyn BdevChannel, request: IoRequest) -> Result<(), bdev::IoError> {
    channel
        .submit(request)
        .expect("an idle channel takes a request");
    let mut result = None;
    for _ in 0..1000 {
        channel.poll(&mut |c| {
            assert_eq!(c.tag, request.tag);
            assert!(result.replace(c.result).is_none(), "two completions");
        });
        if let Some(r) = result {
            assert_eq!(channel.in_flight(), 0);
            return r;
        }
    }
    panic!("{request:?} never completed");
}

/// The target.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let n = 1 + input.below(4);
    let chunk = 1u64 << input.below(5);
    let mut rams = Vec::new();
    let mut children: Vec<BdevRef> = Vec::new();
    for i in 0..n {
        let blocks = chunk + input.below(64) as u64;
        let ram: BdevRef = Arc::new(RamBdev::new(format!("c{i}"), BS as u32, blocks).unwrap());
        let limit = |input: &mut Input<'_>| {
            if input.chance(50) {
                0
            } else {
                1 + input.below(16) as u32
            }
        };
        let (rw, unmap) = (limit(&mut input), limit(&mut input));
        children.push(Arc::new(Recording::with_limits(
            Arc::clone(&ram),
            rw,
            unmap,
        )));
        rams.push(ram);
    }
    let striped = match StripedBdev::new("s", children, chunk as u32) {
        Ok(s) => s,
        Err(e) => panic!("valid children refused: {e}"),
    };
    let per_child = rams.iter().map(|r| r.geometry().num_blocks).min().unwrap() / chunk * chunk;
    let total = per_child * n as u64;
    assert_eq!(striped.geometry().num_blocks, total);
    let locate = |lba: u64| -> (usize, u64) {
        let strip = lba / chunk;
        (
            (strip % n as u64) as usize,
            (strip / n as u64) * chunk + lba % chunk,
        )
    };
    // The model: each child's bytes.
    let mut model: Vec<Vec<u8>> = rams
        .iter()
        .map(|r| vec![0u8; r.geometry().num_blocks as usize * BS])
        .collect();
    let mut channel = striped.open_channel(4).unwrap();
    let mut tag = 0;
    let mut rounds = 0;
    while !input.is_empty() && rounds < 64 {
        rounds += 1;
        tag += 1;
        let op = [
            IoOp::Read,
            IoOp::Write,
            IoOp::Unmap,
            IoOp::WriteZeroes,
            IoOp::Flush,
        ][input.below(5)];
        let inside = input.chance(90);
        let (lba, blocks) = if inside {
            let lba = input.below(total as usize) as u64;
            (lba, input.below((total - lba) as usize + 1) as u32)
        } else {
            (
                input.u64() >> input.below(64),
                input.u32() >> input.below(32),
            )
        };
        let ok = lba
            .checked_add(u64::from(blocks))
            .is_some_and(|e| e <= total);
        let rw = matches!(op, IoOp::Read | IoOp::Write);
        let len = if rw && ok { blocks as usize * BS } else { 0 };
        let mut buf = vec![0u8; len];
        if op == IoOp::Write {
            input.fill(&mut buf[..len.min(64)]);
            let seed = input.u8();
            for (i, b) in buf.iter_mut().enumerate().skip(64) {
                *b = (i as u8).wrapping_mul(31) ^ seed;
            }
        }
        let iovs = if len > 0 {
            input.iovecs(&mut buf, 6)
        } else {
            Vec::new()
        };
        // SAFETY: `iovs` and `buf` outlive the request, which completes in
        // `run_one` before either is touched again.
        let sgl = unsafe { SgList::from_slice(&iovs) };
        let result = run_one(channel.as_mut(), IoRequest::new(op, lba, blocks, sgl, tag));
        if !ok {
            assert!(
                result.is_err(),
                "{op:?} {lba}+{blocks} beyond {total} blocks succeeded"
            );
            continue;
        }
        assert_eq!(result, Ok(()), "{op:?} {lba}+{blocks} of {total}");
        for b in 0..u64::from(blocks) {
            let (child, clba) = locate(lba + b);
            let at = clba as usize * BS;
            let theirs = &mut model[child][at..at + BS];
            let ours = &buf.get(b as usize * BS..(b as usize + 1) * BS);
            match op {
                IoOp::Write => theirs.copy_from_slice(ours.unwrap()),
                IoOp::Read => assert_eq!(ours.unwrap(), theirs, "read of block {}", lba + b),
                IoOp::Unmap | IoOp::WriteZeroes => theirs.fill(0),
                IoOp::Flush => {}
            }
        }
    }
    // Every child holds what the model says, read directly.
    for (ram, want) in rams.iter().zip(&model) {
        let blocks = ram.geometry().num_blocks;
        let mut got = vec![0u8; blocks as usize * BS];
        let iov = [IoVec::from_slice(&mut got)];
        let mut channel = ram.open_channel(1).unwrap();
        // SAFETY: `iov` and `got` outlive the request, which completes
        // inside `run_one`.
        let sgl = unsafe { SgList::from_slice(&iov) };
        let r = run_one(
            channel.as_mut(),
            IoRequest::new(IoOp::Read, 0, blocks as u32, sgl, 0),
        );
        assert_eq!(r, Ok(()));
        assert!(
            got == *want,
            "child {} differs from the model RAID0",
            ram.name()
        );
    }
}
