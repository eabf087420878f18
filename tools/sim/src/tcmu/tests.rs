//! The simulator against the kernel's layout and rules: mailbox, entry
//! layout, iovec merging, PAD entries, size limits, broken rings, KEEP_BUF
//! and READ_LEN.

use super::*;
use dataplane::exec::status;
use dataplane::tcmu::abi::*;

const READ10: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0];
const TUR: [u8; 6] = [0; 6];

fn small(cmdr_size: u32, data_area_size: usize, block: u32) -> TcmuSim {
    TcmuSim::new(SimConfig {
        cmdr_size,
        data_area_size,
        data_block_size: block,
        ..SimConfig::default()
    })
    .unwrap()
}

fn word(sim: &TcmuSim, at: usize) -> u64 {
    sim.region().read_u64(at).unwrap()
}

#[test]
fn mailbox_is_initialised_like_the_kernel() {
    let sim = small(1024, 8192, 4096);
    let r = sim.region();
    assert_eq!(r.len(), 128 + 1024 + 8192);
    assert_eq!(r.mailbox_version(), 2);
    assert_eq!(r.mailbox_flags(), 0xf);
    assert_eq!(r.mailbox_cmdr_off(), 128);
    assert_eq!(r.mailbox_cmdr_size(), 1024);
    assert_eq!((r.load_cmd_head(), r.load_cmd_tail()), (0, 0));
    assert_eq!(sim.data_off(), 1152);
}

#[test]
fn entry_layout_matches_queue_cmd_ring() {
    let mut sim = small(4096, 64 * 512, 512);
    // 1500 bytes in 512-byte blocks: 3 adjacent blocks, one iovec.
    let id = sim.submit(&READ10, SimData::In(1500), 7).unwrap();
    assert_eq!(id, 1);
    let e = 128;
    let r = sim.region().clone();
    // 1 iov: base 112 (max(64,112)) + 16 (10-byte CDB rounded) = 128.
    assert_eq!(r.read_u32(e).unwrap(), tcmu_len_op(128, TCMU_OP_CMD));
    assert_eq!(r.read_u16(e + 4).unwrap(), 1);
    assert_eq!(r.read_u32(e + 8).unwrap(), 1); // iov_cnt
    assert_eq!(r.read_u32(e + 12).unwrap(), 0); // bidi
    assert_eq!(word(&sim, e + 24), (e + 112) as u64); // cdb_off
    assert_eq!(word(&sim, e + 48), sim.data_off() as u64);
    assert_eq!(word(&sim, e + 56), 1500);
    let mut cdb = [0u8; 10];
    r.read_bytes(e + 112, &mut cdb).unwrap();
    assert_eq!(cdb, READ10);
    assert_eq!(r.load_cmd_head(), 128);
    assert_eq!(sim.free_blocks(), 61);
    // Next command: lowest free id, next blocks.
    assert_eq!(sim.submit(&TUR, SimData::None, 8).unwrap(), 2);
    assert_eq!(
        r.read_u32(128 + 128).unwrap(),
        tcmu_len_op(120, TCMU_OP_CMD)
    );
}

#[test]
fn non_adjacent_blocks_make_separate_iovecs() {
    let mut sim = small(4096, 4 * 512, 512);
    let a = sim.submit(&READ10, SimData::In(512), 0).unwrap(); // block 0
    let _b = sim.submit(&READ10, SimData::In(512), 0).unwrap(); // block 1

    // Complete `a` by hand (tail over its entry), freeing block 0.
    sim.region().store_cmd_tail(128);
    sim.region().write_u8(128 + 8, 0).unwrap();
    assert_eq!(sim.force_reap(|c| assert_eq!(c.cmd_id, a)).unwrap(), 1);
    // 3 blocks: 0, 2, 3 -> iovecs [0] and [2,3].
    let c = sim.submit(&READ10, SimData::In(1536), 0).unwrap();
    assert_eq!(c, a, "lowest free cmd_id is reused");
    let e = sim.entry_offset(c).unwrap();
    assert_eq!(sim.region().read_u32(e + 8).unwrap(), 2);
    let d = sim.data_off() as u64;
    assert_eq!((word(&sim, e + 48), word(&sim, e + 56)), (d, 512));
    assert_eq!((word(&sim, e + 64), word(&sim, e + 72)), (d + 1024, 1024));
}

#[test]
fn pad_fills_the_ring_end_and_space_counts_from_last_cleaned() {
    // 3 entries of 128 bytes leave 8 bytes at the end of a 392-byte ring.
    let mut sim = small(392, 64 * 512, 512);
    for _ in 0..2 {
        sim.submit(&READ10, SimData::In(512), 0).unwrap();
    }
    // used 256, free 392-256-1 = 135 >= 128.
    sim.submit(&READ10, SimData::In(512), 0).unwrap();
    assert_eq!(sim.cmd_head(), 384);
    // Full: 7 bytes free.
    assert_eq!(
        sim.submit(&READ10, SimData::In(512), 0),
        Err(SimSubmitError::RingFull)
    );
    // The device moves the tail but does not ring: nothing is reaped,
    // so the ring is still full.
    sim.region().store_cmd_tail(256);
    assert_eq!(sim.reap(|_| {}).unwrap(), 0);
    assert_eq!(
        sim.submit(&READ10, SimData::In(512), 0),
        Err(SimSubmitError::RingFull)
    );
    assert_eq!(sim.force_reap(|_| {}).unwrap(), 2);
    // Now: 8-byte PAD at 384, entry at 0.
    let id = sim.submit(&READ10, SimData::In(512), 0).unwrap();
    assert_eq!(sim.entry_offset(id), Some(128));
    assert_eq!(
        sim.region().read_u32(128 + 384).unwrap(),
        tcmu_len_op(8, TCMU_OP_PAD)
    );
    assert_eq!(sim.smallest_pad(), Some(8));
    assert_eq!(sim.cmd_head(), 128);
}

#[test]
fn size_limits_are_enforced() {
    let mut sim = small(256, 4 * 512, 512);
    assert_eq!(
        sim.submit(&READ10, SimData::In(5 * 512), 0),
        Err(SimSubmitError::TooLarge)
    );
    // 120-byte entry fits half of 256; 4 separate iovecs would not.
    assert!(sim.submit(&TUR, SimData::None, 0).is_ok());
    let long = [0x7F, 0, 0, 0, 0, 0, 0, 24, 0, 0];
    assert_eq!(
        sim.submit(&long, SimData::None, 0),
        Err(SimSubmitError::BadCdb)
    );
    assert_eq!(
        sim.submit(&[], SimData::None, 0),
        Err(SimSubmitError::BadCdb)
    );
    assert_eq!(sim.free_blocks(), 4);
    let mut sim = small(4096, 2 * 512, 512);
    sim.submit(&READ10, SimData::In(1024), 0).unwrap();
    assert_eq!(
        sim.submit(&READ10, SimData::In(1), 0),
        Err(SimSubmitError::DataAreaFull)
    );
}

#[test]
fn unknown_cmd_id_in_a_completion_breaks_the_ring() {
    let mut sim = small(1024, 4 * 512, 512);
    sim.submit(&TUR, SimData::None, 0).unwrap();
    sim.poke(128 + 4, &77u16.to_ne_bytes()).unwrap();
    sim.region().store_cmd_tail(120);
    let err = sim.force_reap(|_| {}).unwrap_err();
    assert!(matches!(
        err,
        TcmuError::RingBroken(RingFault::UnknownCmdId { cmd_id: 77 })
    ));
    assert!(sim.is_broken());
    assert_eq!(
        sim.submit(&TUR, SimData::None, 0),
        Err(SimSubmitError::Broken)
    );
}

#[test]
fn tail_between_entries_breaks_the_ring() {
    let mut sim = small(1024, 4 * 512, 512);
    sim.submit(&TUR, SimData::None, 0).unwrap();
    sim.region().store_cmd_tail(64);
    assert!(matches!(
        sim.force_reap(|_| {}),
        Err(TcmuError::RingBroken(RingFault::TailNotOnBoundary {
            tail: 64
        }))
    ));
}

#[test]
fn keep_buf_keeps_blocks_until_freed_and_second_completion_breaks() {
    let mut sim = small(1024, 4 * 512, 512);
    let id = sim.submit(&READ10, SimData::In(512), 0).unwrap();
    let e = sim.entry_offset(id).unwrap();
    sim.poke(e + 7, &[TCMU_UFLAG_KEEP_BUF]).unwrap();
    sim.poke(e + 8, &[0]).unwrap();
    sim.region().store_cmd_tail(128);
    assert_eq!(sim.force_reap(|_| {}).unwrap(), 1);
    assert_eq!((sim.in_flight(), sim.free_blocks()), (0, 3));
    assert!(sim.free_kept_buf(id));
    assert!(!sim.free_kept_buf(id));
    assert_eq!(sim.free_blocks(), 4);
}

#[test]
fn read_len_limits_data_in_and_returns_data_with_check_condition() {
    let mut sim = small(1024, 8 * 512, 512);
    let id = sim.submit(&READ10, SimData::In(1024), 0).unwrap();
    let e = sim.entry_offset(id).unwrap();
    sim.poke(sim.data_off(), &[0xAB; 1024]).unwrap();
    sim.poke(e + 7, &[TCMU_UFLAG_READ_LEN]).unwrap();
    let mut rsp = [0u8; 8];
    rsp[0] = status::CHECK_CONDITION;
    rsp[4..8].copy_from_slice(&100u32.to_ne_bytes());
    sim.poke(e + 8, &rsp).unwrap();
    sim.poke(e + 16, &[0x70, 0, 0x03]).unwrap();
    sim.region().store_cmd_tail(128);
    let mut seen = None;
    sim.force_reap(|c| {
        let mut buf = [0u8; 2048];
        let n = c.copy_data_in(&mut buf);
        seen = Some((
            c.status,
            c.sense.len(),
            c.sense[2],
            c.data_in_len,
            n,
            buf[99],
            buf[100],
        ));
    })
    .unwrap();
    assert_eq!(seen, Some((2, 96, 3, 100, 100, 0xAB, 0)));
}
