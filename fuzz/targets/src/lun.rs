//! The `lun` target: the whole logical unit ([`Lun`]) over a RAM bdev,
//! driven with arbitrary CDBs, data buffers (length, contents, iovec
//! cuts), aborts and polls.
//!
//! Checks: no panic; every response is well formed
//! ([`check_response`]) with `data_in_len` at most the buffer and at most
//! what the command may return (its allocation length, or its blocks for
//! a read); every bdev request lies inside the unit (and is otherwise
//! sound, see [`Recording`]); every command is answered exactly once and
//! the unit drains with no bdev request outstanding.

use std::sync::Arc;

use bdev::RamBdev;
use dataplane::exec::{status, CommandExecutor, Response};
use dataplane::lun::{Lun, LunConfig};
use dataplane::port::{port_pair, BdevPoller};
use dataplane::scsi::{decode, opcodes, Command, SenseFormat, UnitInfo};

use crate::input::Input;
use crate::recording::{Log, Recording};
use crate::sense_check::check_response;

const SLOTS: usize = 8;

/// A command in flight: its CDB length, its buffer and what it may return.
#[derive(Debug)]
struct InFlight {
    cdb_len: usize,
    buf: Vec<u8>,
    max_data_in: u64,
}

/// The most data-in `cdb` may return on `unit`, or `None` if it does not
/// decode (then only the buffer bounds it).
pub fn max_data_in(cdb: &[u8], unit: &UnitInfo) -> Option<u64> {
    let command = decode(cdb, unit).ok()?;
    Some(match command {
        Command::RequestSense { alloc_len, .. }
        | Command::Inquiry { alloc_len, .. }
        | Command::ModeSense { alloc_len, .. }
        | Command::ReadCapacity16 { alloc_len }
        | Command::GetLbaStatus { alloc_len, .. }
        | Command::ReportSupportedOperationCodes { alloc_len, .. } => u64::from(alloc_len),
        Command::ReadCapacity10 => 8,
        Command::Read { blocks, .. } => u64::from(blocks) * u64::from(unit.block_size),
        _ => 0,
    })
}

/// A CDB: mostly a supported operation code with its length, sometimes
/// anything; fields mostly small so that commands reach the bdev.
fn cdb(input: &mut Input<'_>) -> Vec<u8> {
    let raw = input.chance(10);
    let supported = opcodes::SUPPORTED;
    let opcode = if raw {
        input.u8()
    } else {
        supported[input.below(supported.len())].opcode
    };
    let len = match opcodes::cdb_len(opcode) {
        Some(len) if !input.chance(5) => len,
        _ => input.below(33),
    };
    let mut cdb = vec![0u8; len];
    input.fill(&mut cdb);
    if let Some(first) = cdb.first_mut() {
        *first = opcode;
    }
    if !raw && input.chance(70) {
        // Tame the fields towards a small unit: small LBAs, lengths and
        // allocation lengths, few flag bits, a zero control byte.
        let last = len.saturating_sub(1);
        for (i, b) in cdb.iter_mut().enumerate() {
            match i {
                0 => {}
                1 => *b &= 0x0E,
                i if i == last => *b = 0,
                i if i + 2 >= last => *b &= 0x07,
                _ => *b &= 0x01,
            }
        }
    }
    cdb
}

/// The target.
pub fn run(data: &[u8]) {
    exercise(data);
}

/// The target's body; returns the number of commands that completed
/// with GOOD (how deep the input got).
pub fn exercise(data: &[u8]) -> usize {
    let mut input = Input::new(data);
    let block_size = if input.chance(70) { 512 } else { 4096 };
    let bdev_blocks = 1 + input.below(256) as u64;
    let Ok(ram) = RamBdev::new("fuzz", block_size, bdev_blocks) else {
        return 0;
    };
    let bdev = Recording::new(Arc::new(ram));
    let log = bdev.log();
    let mut config = LunConfig::for_bdev(&bdev);
    config.num_blocks = 1 + input.below(bdev_blocks as usize) as u64;
    config.max_tasks = SLOTS as u32;
    config.sense_format = if input.chance(50) {
        SenseFormat::Fixed
    } else {
        SenseFormat::Descriptor
    };
    config.read_only = input.chance(10);
    config.write_cache = input.chance(50) && bdev::Bdev::capabilities(&bdev).volatile_cache;
    config.max_unmap_descriptors = 1 + input.below(8) as u32;
    config.max_unmap_lba_count = 1 + u32::from(input.u16());
    config.max_write_same_blocks = 1 + u32::from(input.u16());
    let transfer_blocks = 1 + input.below(64);
    config.max_transfer_bytes = block_size * transfer_blocks as u32;
    config.max_compare_write_blocks = 1 + input.below(transfer_blocks.min(16)) as u8;
    config.scratch_chunk_bytes = 4096;
    config.scratch_bytes = 4096 * (1 + input.below(4));
    let depth = 4 + input.below(16);
    let Ok((port, end)) = port_pair(depth) else {
        return 0;
    };
    let Ok(channel) = bdev::Bdev::open_channel(&bdev, depth) else {
        return 0;
    };
    let mut poller = BdevPoller::new("fuzz", channel, 64);
    poller.attach(end).expect("one port");
    let mut lun = Lun::new(config, port).expect("a valid configuration");
    let unit = lun.unit().clone();
    let mut slots: Vec<Option<InFlight>> = (0..SLOTS).map(|_| None).collect();
    let mut checked = 0;
    let mut good = 0;

    let mut rounds = 0;
    while !input.is_empty() && rounds < 256 {
        rounds += 1;
        match input.below(8) {
            0..=3 => {
                let slot = input.below(SLOTS);
                if slots[slot].is_some() {
                    continue;
                }
                let cdb = cdb(&mut input);
                let len = if input.chance(50) {
                    input.below(4 * block_size as usize + 1)
                } else {
                    input.below(64)
                };
                let mut buf = vec![0u8; len];
                if input.chance(50) {
                    // Data-out that parses (a parameter list): input bytes
                    // at the start; the rest of the buffer stays zero.
                    let bytes = input.take(len.min(96));
                    buf[..bytes.len()].copy_from_slice(bytes);
                }
                let iovs = input.iovecs(&mut buf, 4);
                let max = max_data_in(&cdb, &unit).unwrap_or(u64::MAX);
                // SAFETY: `buf` moves into `slots[slot]` below (a Vec's heap
                // buffer does not move with it) and stays there, untouched,
                // until the response for `slot` is collected.
                unsafe { lun.submit(slot as u32, &cdb, &iovs) };
                slots[slot] = Some(InFlight {
                    cdb_len: cdb.len(),
                    buf,
                    max_data_in: max,
                });
            }
            4 => lun.abort(input.below(SLOTS + 2) as u32),
            _ => step(&mut lun, &mut poller, &mut slots, &mut good),
        }
        checked = check_log(&log, checked, unit.num_blocks);
    }
    for _ in 0..100_000 {
        if lun.in_flight() == 0 {
            break;
        }
        step(&mut lun, &mut poller, &mut slots, &mut good);
    }
    check_log(&log, checked, unit.num_blocks);
    assert_eq!(lun.in_flight(), 0, "the unit did not drain: {lun:?}");
    assert!(
        slots.iter().all(Option::is_none),
        "a command got no response"
    );
    assert_eq!(lun.outstanding_requests(), 0);
    good
}

fn step(lun: &mut Lun, poller: &mut BdevPoller, slots: &mut [Option<InFlight>], good: &mut usize) {
    lun.flush();
    reactor::Poller::poll(poller);
    lun.poll(usize::MAX, &mut |slot, response: &Response| {
        let done = slots
            .get_mut(slot as usize)
            .and_then(Option::take)
            .unwrap_or_else(|| panic!("response for idle slot {slot}: {response:?}"));
        check_response(response, done.cdb_len, done.buf.len());
        if response.status == status::GOOD {
            *good += 1;
            let len = u64::from(response.data_in_len);
            assert!(len <= done.buf.len() as u64, "{response:?} over the buffer");
            assert!(
                len <= done.max_data_in,
                "{response:?} over {}",
                done.max_data_in
            );
        }
    });
}

/// Checks the requests logged since `from` against the unit's size;
/// returns the new log length.
fn check_log(log: &Log, from: usize, num_blocks: u64) -> usize {
    let log = log.lock().unwrap();
    for r in &log[from..] {
        if r.op != bdev::IoOp::Flush {
            assert!(
                r.lba + u64::from(r.blocks) <= num_blocks,
                "{r:?} beyond the unit's {num_blocks} blocks"
            );
        }
    }
    log.len()
}
