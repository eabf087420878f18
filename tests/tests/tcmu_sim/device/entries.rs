//! Entries other than plain commands (TMR, unknown op, PAD), malformed
//! command entries (which fail that command) and ring faults (which break
//! the device).

use super::*;

#[test]
fn tmr_entry_aborts_listed_commands_which_still_complete() {
    let mut sim = sim_with(4096, 0xf);
    // Publish at every poll: this test is about TMR, not doorbell batching
    // (which would hold the two aborts while two commands still execute).
    let config = TcmuDeviceConfig {
        coalesce: CoalesceConfig {
            batch: 1,
            ..CoalesceConfig::default()
        },
        ..TcmuDeviceConfig::default()
    };
    let mut dev = attach_with(&sim, TestExec::holding(), config);
    let ids: Vec<u16> = (0..4)
        .map(|i| {
            sim.submit(&read1(i), SimData::In(BLOCK), u64::from(i))
                .unwrap()
        })
        .collect();
    sim.notify();
    assert_eq!(dev.poll(), 4);
    // 999 is not in flight and is ignored.
    sim.inject_tmr(TCMU_TMR_ABORT_TASK, &[ids[1], ids[3], 999])
        .unwrap();
    assert_eq!(
        dev.poll(),
        1 + 2,
        "TMR walked, two aborted commands completed"
    );
    assert_eq!(dev.executor().aborted, vec![1, 3]);
    let got = reap_all(&mut sim);
    let statuses: Vec<(u16, u8)> = got.iter().map(|g| (g.0, g.1)).collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.contains(&(ids[1], status::TASK_ABORTED)));
    assert!(statuses.contains(&(ids[3], status::TASK_ABORTED)));
    dev.executor_mut().release_all();
    dev.poll();
    let got = reap_all(&mut sim);
    let mut rest: Vec<(u16, u8)> = got.iter().map(|g| (g.0, g.1)).collect();
    rest.sort_unstable();
    assert_eq!(rest, vec![(ids[0], status::GOOD), (ids[2], status::GOOD)]);
    let st = dev.stats().snapshot();
    assert_eq!((st.tmr_entries, st.aborts), (1, 2));
    assert_eq!(sim.in_flight(), 0);
}

#[test]
fn unknown_opcode_entries_are_flagged_and_passed() {
    let mut sim = sim_with(4096, 0xf);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    let a = sim.submit(&TUR, SimData::None, 1).unwrap();
    let unknown_at = 128 + sim.cmd_head() as usize;
    sim.inject_unknown_op(24).unwrap();
    let b = sim.submit(&read1(0), SimData::In(BLOCK), 2).unwrap();
    sim.notify();
    assert_eq!(dev.poll(), 3 + 2);
    let flags = sim.region().read_u8(unknown_at + 7).unwrap();
    assert_eq!(flags, TCMU_UFLAG_UNKNOWN_OP);
    let len_op = sim.region().read_u32(unknown_at).unwrap();
    assert_eq!(len_op, tcmu_len_op(24, 3), "len_op untouched");
    let got = reap_all(&mut sim);
    let ids: Vec<u16> = got.iter().map(|g| g.0).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&a) && ids.contains(&b));
    assert_eq!(dev.stats().snapshot().unknown_entries, 1);
    assert_eq!(sim.region().load_cmd_tail(), sim.cmd_head());
}

#[test]
fn eight_byte_pad_at_the_ring_end() {
    // TUR entries are 120 bytes; a 368-byte ring leaves 8 bytes after three.
    let mut sim = sim_with(368, 0xf);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    for round in 0..5u64 {
        for i in 0..3 {
            match sim.submit(&TUR, SimData::None, round * 10 + i) {
                Ok(_) | Err(SimSubmitError::RingFull) => {}
                Err(e) => panic!("{e}"),
            }
        }
        sim.notify();
        dev.poll();
        for (_, st, _, _) in reap_all(&mut sim) {
            assert_eq!(st, status::CHECK_CONDITION);
        }
    }
    assert_eq!(sim.smallest_pad(), Some(8));
    assert!(dev.stats().snapshot().pad_entries >= 1);
    assert_eq!(dev.fault(), None);
    assert_eq!(sim.in_flight(), 0);
}

/// Submits three READs, corrupts the middle one with `corrupt`, and checks
/// that only it fails, with `expected` sense.
fn corrupt_middle(corrupt: impl FnOnce(&mut TcmuSim, usize), expected: [u8; 96]) {
    let mut sim = sim_with(4096, 0xf);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    let a = sim.submit(&read1(0), SimData::In(BLOCK), 1).unwrap();
    let b = sim.submit(&read1(1), SimData::In(BLOCK), 2).unwrap();
    let c = sim.submit(&read1(2), SimData::In(BLOCK), 3).unwrap();
    let at = sim.entry_offset(b).unwrap();
    corrupt(&mut sim, at);
    sim.notify();
    dev.poll();
    assert_eq!(dev.fault(), None);
    assert_eq!(
        dev.executor().submitted.len(),
        2,
        "the bad command never ran"
    );
    let got = reap_all(&mut sim);
    assert_eq!(got.len(), 3);
    for (id, st, sense, data) in got {
        if id == b {
            assert_eq!(st, status::CHECK_CONDITION);
            assert_eq!(sense, expected);
            assert!(data.is_empty());
        } else {
            assert!(id == a || id == c);
            assert_eq!((st, data.len()), (status::GOOD, BLOCK));
        }
    }
    assert_eq!(dev.stats().snapshot().malformed_commands, 1);
}

fn hw_error() -> [u8; 96] {
    sense96(0x04, 0x44, 0x00)
}

#[test]
fn iovec_outside_the_data_area_fails_that_command() {
    // Base inside the ring.
    corrupt_middle(
        |sim, at| sim.poke(at + 48, &200u64.to_ne_bytes()).unwrap(),
        hw_error(),
    );
    // Length running past the end of the mapping.
    corrupt_middle(
        |sim, at| {
            let len = sim.region().len() as u64;
            sim.poke(at + 56, &len.to_ne_bytes()).unwrap()
        },
        hw_error(),
    );
    // base + len overflows u64.
    corrupt_middle(
        |sim, at| sim.poke(at + 56, &u64::MAX.to_ne_bytes()).unwrap(),
        hw_error(),
    );
}

#[test]
fn iovec_count_beyond_the_entry_fails_that_command() {
    corrupt_middle(
        |sim, at| sim.poke(at + 8, &6u32.to_ne_bytes()).unwrap(),
        hw_error(),
    );
    corrupt_middle(
        |sim, at| sim.poke(at + 12, &u32::MAX.to_ne_bytes()).unwrap(),
        hw_error(),
    );
}

#[test]
fn cdb_offset_outside_the_entry_fails_that_command() {
    corrupt_middle(
        |sim, at| sim.poke(at + 24, &0u64.to_ne_bytes()).unwrap(),
        hw_error(),
    );
    // Inside the entry, but the 10-byte CDB would run past its end.
    corrupt_middle(
        |sim, at| {
            sim.poke(at + 24, &((at + 124) as u64).to_ne_bytes())
                .unwrap()
        },
        hw_error(),
    );
}

#[test]
fn cdb_longer_than_16_bytes_is_an_invalid_opcode() {
    let mut sim = sim_with(4096, 0xf);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    let mut cdb = [0u8; 32];
    cdb[0] = 0x7F;
    cdb[7] = 24; // 32 bytes
    let id = sim.submit(&cdb, SimData::None, 1).unwrap();
    // 16 bytes (additional length 8) is accepted and reaches the executor.
    let mut cdb16 = [0u8; 16];
    cdb16[0] = 0x7F;
    cdb16[7] = 8;
    let ok = sim.submit(&cdb16, SimData::None, 2).unwrap();
    sim.notify();
    dev.poll();
    assert_eq!(dev.executor().submitted, vec![(1, cdb16.to_vec())]);
    let got = reap_all(&mut sim);
    let long = got.iter().find(|g| g.0 == id).unwrap();
    assert_eq!(
        (long.1, &long.2[..]),
        (status::CHECK_CONDITION, &sense96(0x05, 0x20, 0x00)[..])
    );
    let short = got.iter().find(|g| g.0 == ok).unwrap();
    assert_eq!(
        short.1,
        status::CHECK_CONDITION,
        "executor answers 0x7F itself"
    );
}

/// Corrupts the ring so it cannot be walked and checks the device breaks
/// without touching it any more.
fn breaks_with(corrupt: impl FnOnce(&mut TcmuSim, usize), fault: RingFault) {
    let mut sim = sim_with(4096, 0xf);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    let a = sim.submit(&read1(0), SimData::In(BLOCK), 1).unwrap();
    sim.notify();
    assert_eq!(dev.poll(), 2);
    let b = sim.submit(&read1(1), SimData::In(BLOCK), 2).unwrap();
    let at = sim.entry_offset(b).unwrap();
    corrupt(&mut sim, at);
    sim.notify();
    let tail = sim.region().load_cmd_tail();
    dev.poll();
    assert_eq!(dev.fault(), Some(fault));
    for _ in 0..3 {
        assert_eq!(dev.poll(), 0);
    }
    assert_eq!(
        sim.region().load_cmd_tail(),
        tail,
        "broken device wrote the tail"
    );
    // `a` was completed before; `b` never will be.
    let got = reap_all(&mut sim);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, a);
    assert_eq!(sim.in_flight(), 1);
    assert!(dev.is_drained());
}

#[test]
fn bad_len_op_breaks_the_device() {
    let e = 128u32; // ring offset of the second entry (the first is 128 bytes)
    breaks_with(
        |sim, at| {
            sim.poke(at, &tcmu_len_op(0, TCMU_OP_CMD).to_ne_bytes())
                .unwrap()
        },
        RingFault::ZeroLengthEntry { offset: e },
    );
    breaks_with(
        |sim, at| {
            sim.poke(at, &tcmu_len_op(8192, TCMU_OP_CMD).to_ne_bytes())
                .unwrap()
        },
        RingFault::EntryCrossesRingEnd {
            offset: e,
            len: 8192,
        },
    );
    breaks_with(
        |sim, at| {
            sim.poke(at, &tcmu_len_op(256, TCMU_OP_CMD).to_ne_bytes())
                .unwrap()
        },
        RingFault::EntryBeyondHead {
            offset: e,
            len: 256,
            head: 256,
        },
    );
    breaks_with(
        |sim, at| {
            let lo = tcmu_len_op(64, TCMU_OP_CMD);
            sim.poke(at, &lo.to_ne_bytes()).unwrap();
            // Keep the ring walkable after it so only the length is wrong.
            let pad = tcmu_len_op(64, TCMU_OP_PAD);
            sim.poke(at + 64, &pad.to_ne_bytes()).unwrap();
        },
        RingFault::CmdEntryTooShort { offset: e, len: 64 },
    );
}

#[test]
fn bad_cmd_head_breaks_the_device() {
    breaks_with(
        |sim, _| sim.poke(12, &13u32.to_ne_bytes()).unwrap(),
        RingFault::HeadMisaligned { head: 13 },
    );
    breaks_with(
        |sim, _| sim.poke(12, &4096u32.to_ne_bytes()).unwrap(),
        RingFault::HeadOutOfRange {
            head: 4096,
            cmdr_size: 4096,
        },
    );
}

#[test]
fn duplicate_or_zero_cmd_id_breaks_the_device() {
    let mut sim = sim_with(4096, 0xf);
    let mut dev = attach(&sim, TestExec::holding());
    let a = sim.submit(&TUR, SimData::None, 1).unwrap();
    let b = sim.submit(&TUR, SimData::None, 2).unwrap();
    sim.poke(sim.entry_offset(b).unwrap() + 4, &a.to_ne_bytes())
        .unwrap();
    sim.notify();
    dev.poll();
    assert_eq!(dev.fault(), Some(RingFault::DuplicateCmdId { cmd_id: a }));
    // Broken: the executor is drained, the ring is left alone.
    dev.executor_mut().release_all();
    assert_eq!(dev.poll(), 1);
    assert!(dev.is_drained());
    assert_eq!(sim.region().load_cmd_tail(), 0);

    breaks_with(
        |sim, at| sim.poke(at + 4, &0u16.to_ne_bytes()).unwrap(),
        RingFault::InvalidCmdId { offset: 128 },
    );
}

#[test]
fn a_reset_of_cmd_tail_breaks_the_device() {
    let mut sim = sim_with(4096, 0xf);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    sim.submit(&read1(0), SimData::In(BLOCK), 1).unwrap();
    sim.notify();
    assert_eq!(dev.poll(), 2);
    assert_eq!(reap_all(&mut sim).len(), 1);
    // Only the device writes cmd_tail; the kernel's reset_ring zeroes it.
    sim.poke(64, &0u32.to_ne_bytes()).unwrap();
    sim.submit(&read1(1), SimData::In(BLOCK), 2).unwrap();
    sim.notify();
    assert_eq!(dev.poll(), 0);
    assert_eq!(
        dev.fault(),
        Some(RingFault::TailMovedByPeer {
            expected: 128,
            found: 0
        })
    );
    assert_eq!(dev.executor().submitted.len(), 1);
    assert_eq!(sim.region().load_cmd_tail(), 0);
}

#[test]
fn a_head_that_moves_backwards_breaks_the_device_before_it_walks_stale_entries() {
    // Entries of `len` bytes tile a ring of 32 entries exactly, so the tail
    // comes back to 0 after a lap.
    let len = {
        let mut probe = sim_with(4096, 0xf);
        probe.submit(&read1(0), SimData::In(BLOCK), 0).unwrap();
        probe.cmd_head()
    };
    let mut sim = sim_with(32 * len, 0xf);
    let config = TcmuDeviceConfig {
        coalesce: CoalesceConfig {
            batch: 1,
            ..CoalesceConfig::default()
        },
        ..TcmuDeviceConfig::default()
    };
    let mut dev = attach_with(&sim, TestExec::new(64, 64, 1, 0), config);
    // One lap: the ring is full of entries of commands already completed.
    for lba in 0..32 {
        sim.submit(&read1(lba), SimData::In(BLOCK), u64::from(lba))
            .unwrap();
        sim.notify();
        while reap_all(&mut sim).is_empty() {
            dev.poll();
        }
    }
    assert_eq!(sim.region().load_cmd_tail(), 0, "a lap ends at 0");
    // Three commands walked and still executing: the published tail stays 0
    // while the device has walked past it.
    dev.executor_mut().hold_all = true;
    for lba in 0..3 {
        sim.submit(&read1(lba), SimData::In(BLOCK), 100).unwrap();
    }
    sim.notify();
    assert_eq!(dev.poll(), 3);
    let submitted = dev.executor().submitted.len();
    // reset_ring: the tail it writes (0) is the one the device published,
    // so only the head (now behind what the device walked) tells.
    let mut busy = 0;
    sim.reset_ring(1, |c| busy += usize::from(c.status == status::BUSY));
    assert_eq!(busy, 3);
    sim.submit(&read1(7), SimData::In(BLOCK), 200).unwrap();
    sim.notify();
    assert_eq!(dev.poll(), 0, "nothing walked");
    assert_eq!(
        dev.fault(),
        Some(RingFault::HeadMovedBackwards {
            head: len,
            walked: 3 * len,
        })
    );
    assert_eq!(
        dev.executor().submitted.len(),
        submitted,
        "no stale entry of the previous lap was executed"
    );
}

#[test]
fn a_reset_while_commands_execute_is_not_overwritten() {
    let mut sim = sim_with(4096, 0xf);
    let config = TcmuDeviceConfig {
        coalesce: CoalesceConfig {
            batch: 1,
            ..CoalesceConfig::default()
        },
        ..TcmuDeviceConfig::default()
    };
    let mut dev = attach_with(&sim, TestExec::holding(), config);
    sim.submit(&read1(0), SimData::In(BLOCK), 1).unwrap();
    sim.notify();
    dev.executor_mut().release_all();
    assert_eq!(dev.poll(), 2);
    assert_eq!(reap_all(&mut sim).len(), 1);
    let published = sim.region().load_cmd_tail();
    assert_ne!(published, 0);
    // Walked, executing; then the ring is reset.
    dev.executor_mut().hold_all = true;
    sim.submit(&read1(1), SimData::In(BLOCK), 2).unwrap();
    sim.notify();
    assert_eq!(dev.poll(), 1);
    assert_eq!(sim.reset_ring(1, |_| {}), 1);
    dev.executor_mut().release_all();
    dev.poll();
    assert_eq!(
        dev.fault(),
        Some(RingFault::TailMovedByPeer {
            expected: published,
            found: 0
        })
    );
    assert_eq!(
        sim.region().load_cmd_tail(),
        0,
        "the reset's tail is left as it is"
    );
    assert!(dev.is_drained());
}
