//! How completions reach the kernel: coalescing, one doorbell per poll,
//! budget, attach and pick-up, backpressure, ordering, shutdown, READ_LEN,
//! sense and notification acknowledgement.

use super::*;

#[test]
fn coalescing_window_batches_commands_that_arrive_one_by_one() {
    let mut sim = sim_with(4096, 0xf);
    let config = TcmuDeviceConfig {
        coalesce: CoalesceConfig {
            window: std::time::Duration::from_millis(200),
            batch: 3,
            ..CoalesceConfig::default()
        },
        ..TcmuDeviceConfig::default()
    };
    let mut dev = attach_with(&sim, TestExec::new(8, 64, 1, 0), config);
    // Three commands, each arriving alone and completing at once: the first
    // two are held (no doorbell, the poll still reports work so the reactor
    // stays awake), the third fills the batch.
    for i in 0..3u32 {
        sim.submit(&read1(i), SimData::In(BLOCK), u64::from(i))
            .unwrap();
        sim.notify();
        assert!(dev.poll() > 0);
        let rung = dev.stats().snapshot().doorbells;
        assert_eq!(rung, u64::from(i == 2), "after command {i}");
    }
    assert_eq!(reap_all(&mut sim).len(), 3);
    // A lone command is published once the window closes.
    sim.submit(&read1(5), SimData::In(BLOCK), 5).unwrap();
    sim.notify();
    dev.poll();
    assert_eq!(dev.stats().snapshot().doorbells, 1);
    std::thread::sleep(std::time::Duration::from_millis(250));
    dev.poll();
    assert_eq!(dev.stats().snapshot().doorbells, 2);
    assert_eq!(reap_all(&mut sim).len(), 1);
}

#[test]
fn moving_the_tail_without_a_doorbell_completes_nothing() {
    let mut sim = sim_with(4096, 0xf);
    let (region, bell) = sim.device_endpoint().unwrap();
    let id = sim.submit(&TUR, SimData::None, 5).unwrap();
    // Play the device by hand: GOOD, tail over the entry, no kick.
    region.write_u8(128 + 8, status::GOOD).unwrap();
    region.store_cmd_tail(120);
    assert_eq!(reap_all(&mut sim).len(), 0);
    assert_eq!(sim.in_flight(), 1);
    assert_eq!(sim.last_cleaned(), 0);
    bell.ring().unwrap();
    let got = reap_all(&mut sim);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, got[0].1), (id, status::GOOD));
    assert_eq!(sim.doorbells(), 1);
}

#[test]
fn one_doorbell_per_poll_for_a_whole_batch() {
    let mut sim = sim_with(8192, 0xf);
    let mut dev = attach(&sim, TestExec::new(32, 64, 1, 0));
    for i in 0..20 {
        sim.submit(&read1(i), SimData::In(BLOCK), u64::from(i))
            .unwrap();
    }
    assert!(sim.notify());
    assert!(!sim.notify(), "nothing new to notify");
    assert_eq!(sim.notifications(), 1);
    assert_eq!(dev.poll(), 40);
    assert_eq!(dev.stats().snapshot().doorbells, 1);
    assert_eq!(reap_all(&mut sim).len(), 20);
    assert_eq!(sim.doorbells(), 1);
    // Idle polls ring nothing.
    assert_eq!(dev.poll(), 0);
    assert_eq!(dev.poll(), 0);
    let st = dev.stats().snapshot();
    assert_eq!((st.doorbells, st.polls_with_work), (1, 1));
    assert_eq!((st.commands_received, st.commands_completed), (20, 20));
    assert_eq!((st.data_bytes, st.data_in_bytes), (20 * 512, 20 * 512));
}

#[test]
fn budget_limits_the_work_per_poll() {
    let mut sim = sim_with(8192, 0xf);
    let config = TcmuDeviceConfig {
        budget: 3,
        ..TcmuDeviceConfig::default()
    };
    let mut dev = attach_with(&sim, TestExec::new(32, 64, 1, 0), config);
    for i in 0..7 {
        sim.submit(&TUR, SimData::None, i).unwrap();
    }
    sim.notify();
    assert_eq!(dev.poll(), 6);
    assert_eq!(dev.poll(), 6);
    assert_eq!(dev.poll(), 2);
    assert_eq!(reap_all(&mut sim).len(), 7);
}

#[test]
fn attach_checks_the_mailbox() {
    let sim = sim_with(4096, 0xf);
    let check = |poke_at: usize, bytes: &[u8]| -> TcmuError {
        let sim = sim_with(4096, 0xf);
        sim.region().write_bytes(poke_at, bytes).unwrap();
        let (region, bell) = sim.device_endpoint().unwrap();
        TcmuDevice::attach(
            region,
            bell,
            TestExec::new(4, 8, 1, 0),
            TcmuDeviceConfig::default(),
        )
        .unwrap_err()
    };
    assert!(matches!(
        check(0, &1u16.to_ne_bytes()),
        TcmuError::MailboxVersion { found: 1 }
    ));
    assert!(matches!(
        check(4, &256u32.to_ne_bytes()),
        TcmuError::CmdrOff { found: 256 }
    ));
    assert!(matches!(
        check(8, &(1u32 << 30).to_ne_bytes()),
        TcmuError::CmdrSize { .. }
    ));
    assert!(matches!(
        check(8, &4092u32.to_ne_bytes()),
        TcmuError::CmdrSize {
            cmdr_size: 4092,
            ..
        }
    ));
    assert!(matches!(
        check(64, &12u32.to_ne_bytes()),
        TcmuError::TailInvalid { tail: 12, .. }
    ));
    let (region, bell) = sim.device_endpoint().unwrap();
    let e = TcmuDevice::attach(
        region,
        bell,
        TestExec::new(0, 8, 1, 0),
        TcmuDeviceConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(e, TcmuError::NoTaskSlots));
    assert!(e.to_string().contains("no task slots"));
}

#[test]
fn a_new_device_picks_up_everything_from_cmd_tail() {
    let mut sim = sim_with(4096, 0xf);
    let ids: Vec<u16> = (0..6)
        .map(|i| {
            sim.submit(&read1(i), SimData::In(BLOCK), u64::from(i))
                .unwrap()
        })
        .collect();
    sim.notify();
    {
        // Device A completes the first two in order, takes the rest and dies.
        let config = TcmuDeviceConfig {
            allow_out_of_order: false,
            ..TcmuDeviceConfig::default()
        };
        let mut a = attach_with(&sim, TestExec::holding(), config);
        assert_eq!(a.poll(), 6);
        let ex = a.executor_mut();
        ex.hold_all = false; // tasks keep hold 0: slots 0 and 1 first
        ex.pending.retain(|t| t.slot < 2);
        a.poll();
        assert_eq!(a.stats().snapshot().commands_completed, 2);
    }
    let got = reap_all(&mut sim);
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), ids[..2]);
    // Device B starts at cmd_tail: the four A had received are still ahead.
    let mut b = attach(&sim, TestExec::new(8, 64, 1, 0));
    assert_eq!(b.poll(), 4 + 4);
    let mut rest: Vec<u16> = reap_all(&mut sim).iter().map(|g| g.0).collect();
    rest.sort_unstable();
    assert_eq!(rest, ids[2..]);
    assert_eq!(sim.in_flight(), 0);
}

#[test]
fn backpressure_when_all_slots_are_busy() {
    let mut sim = sim_with(8192, 0xf);
    let mut dev = attach(&sim, TestExec::new(2, 64, 1, 0));
    dev.executor_mut().hold_all = true;
    for i in 0..5 {
        sim.submit(&TUR, SimData::None, i).unwrap();
    }
    sim.notify();
    assert_eq!(dev.poll(), 2);
    assert_eq!(dev.in_flight(), 2);
    assert_eq!(dev.poll(), 0, "no slot: the walker waits");
    dev.executor_mut().release_all();
    let mut total = 0;
    for _ in 0..10 {
        dev.poll();
        total += reap_all(&mut sim).len();
    }
    assert_eq!(total, 5);
    assert_eq!(dev.stats().snapshot().commands_received, 5);
}

/// Commands finish in reverse order; returns the order the initiator sees.
fn completion_order(allow_out_of_order: bool) -> (Vec<u16>, Vec<u16>) {
    let mut sim = sim_with(8192, 0xf);
    let config = TcmuDeviceConfig {
        allow_out_of_order,
        ..TcmuDeviceConfig::default()
    };
    let mut dev = attach_with(&sim, TestExec::holding(), config);
    let ids: Vec<u16> = (0..5)
        .map(|i| sim.submit(&TUR, SimData::None, i).unwrap())
        .collect();
    sim.notify();
    dev.poll();
    let mut seen = Vec::new();
    for slot in (0..5).rev() {
        let ex = dev.executor_mut();
        let t = ex.pending.iter_mut().find(|t| t.slot == slot).unwrap();
        t.aborted = true; // finishes at the next poll
        dev.poll();
        seen.extend(reap_all(&mut sim).iter().map(|g| g.0));
    }
    (ids, seen)
}

#[test]
fn in_order_mode_completes_in_ring_order() {
    let (ids, seen) = completion_order(false);
    assert_eq!(seen, ids);
}

#[test]
fn out_of_order_mode_completes_as_commands_finish() {
    let (ids, seen) = completion_order(true);
    let reversed: Vec<u16> = ids.iter().rev().copied().collect();
    assert_eq!(seen, reversed);
}

#[test]
fn shutdown_stops_walking_but_finishes_in_flight_commands() {
    let mut sim = sim_with(8192, 0xf);
    let mut dev = attach(&sim, TestExec::holding());
    for i in 0..3 {
        sim.submit(&TUR, SimData::None, i).unwrap();
    }
    sim.notify();
    dev.poll();
    dev.begin_shutdown();
    let late: Vec<u16> = (3..5)
        .map(|i| sim.submit(&TUR, SimData::None, i).unwrap())
        .collect();
    sim.notify();
    assert!(!dev.is_drained());
    dev.executor_mut().release_all();
    dev.poll();
    assert!(dev.is_drained());
    assert_eq!(reap_all(&mut sim).len(), 3);
    assert_eq!(sim.in_flight(), 2);
    drop(dev);
    // The next owner takes the commands that arrived during shutdown.
    let mut next = attach(&sim, TestExec::new(8, 64, 1, 0));
    next.poll();
    let mut got: Vec<u16> = reap_all(&mut sim).iter().map(|g| g.0).collect();
    got.sort_unstable();
    assert_eq!(got, late);
}

fn short_read(flags: u16) -> (u8, Vec<u8>, u8, u32, usize) {
    let mut sim = sim_with(4096, flags);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    dev.executor_mut().disk[..2 * BLOCK].fill(0x77);
    let id = sim
        .submit(&rw10(READ_10, 0, 2, SHORT_READ), SimData::In(2 * BLOCK), 0)
        .unwrap();
    let at = sim.entry_offset(id).unwrap();
    sim.notify();
    dev.poll();
    let uflags = sim.region().read_u8(at + 7).unwrap();
    let read_len = sim.region().read_u32(at + 12).unwrap();
    let got = reap_all(&mut sim);
    assert_eq!(got.len(), 1);
    (got[0].1, got[0].3.clone(), uflags, read_len, got[0].3.len())
}

#[test]
fn read_len_reports_short_reads() {
    let (st, data, uflags, read_len, n) = short_read(0xf);
    assert_eq!(
        (st, uflags, read_len, n),
        (status::GOOD, TCMU_UFLAG_READ_LEN, 512, 512)
    );
    assert!(data.iter().all(|&b| b == 0x77));
    // Without CAP_READ_LEN the field stays 0 and the kernel returns it all.
    let (st, data, uflags, read_len, n) = short_read(TCMU_MAILBOX_FLAG_CAP_OOOC);
    assert_eq!((st, uflags, read_len, n), (status::GOOD, 0, 0, 1024));
    assert!(data[..512].iter().all(|&b| b == 0x77));
}

#[test]
fn check_condition_with_data_returns_both_under_read_len() {
    let mut sim = sim_with(4096, 0xf);
    let mut dev = attach(&sim, TestExec::new(8, 64, 1, 0));
    let cdb = [CC_WITH_DATA, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    sim.submit(&cdb, SimData::In(300), 0).unwrap();
    // A plain CHECK CONDITION on a read: sense, no data.
    sim.submit(&[0x00; 6], SimData::In(100), 1).unwrap();
    sim.notify();
    dev.poll();
    let got = reap_all(&mut sim);
    assert_eq!(got.len(), 2);
    for (id, st, sense, data) in got {
        assert_eq!(st, status::CHECK_CONDITION);
        if id == 1 {
            assert_eq!(sense, sense96(0x01, 0, 0));
            assert_eq!(data, vec![0x5A; 300]);
        } else {
            assert_eq!(sense, sense96(0x05, 0x20, 0));
            assert!(data.is_empty());
        }
    }
}

#[test]
fn acknowledge_on_idle_drains_the_notification_once() {
    let mut sim = sim_with(4096, 0xf);
    let mut plain = attach(&sim, TestExec::new(8, 64, 1, 0));
    sim.submit(&TUR, SimData::None, 0).unwrap();
    sim.notify();
    plain.poll();
    plain.poll();
    // Busy polling never reads the notification.
    assert!(plain.acknowledge_doorbell().unwrap());
    assert!(!plain.acknowledge_doorbell().unwrap());
    drop(plain);
    reap_all(&mut sim);

    let config = TcmuDeviceConfig {
        acknowledge_on_idle: true,
        ..TcmuDeviceConfig::default()
    };
    let mut dev = attach_with(&sim, TestExec::new(8, 64, 1, 0), config);
    sim.submit(&TUR, SimData::None, 1).unwrap();
    sim.notify();
    assert_eq!(dev.poll(), 2);
    assert_eq!(dev.poll(), 0); // idle: acknowledges, looks again
    assert!(!dev.acknowledge_doorbell().unwrap(), "already drained");
    assert_eq!(reap_all(&mut sim).len(), 1);
}

#[test]
fn response_sense_is_copied_whole_and_padded() {
    // A response longer than the fixed 18 bytes: all valid bytes, then zeros.
    let mut r = Response::with_status(status::CHECK_CONDITION);
    r.sense_len = SENSE_BUFFER_SIZE as u8;
    for (i, b) in r.sense.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    let mut sim = sim_with(4096, 0xf);
    let (region, bell) = sim.device_endpoint().unwrap();
    let mut dev = TcmuDevice::attach(
        region,
        bell,
        Immediate::new(4).answering(r),
        TcmuDeviceConfig::default(),
    )
    .unwrap();
    sim.submit(&TUR, SimData::None, 0).unwrap();
    sim.notify();
    dev.poll();
    let mut seen = Vec::new();
    sim.reap(|c| seen = c.sense.to_vec()).unwrap();
    assert_eq!(seen, r.sense.to_vec());
}
