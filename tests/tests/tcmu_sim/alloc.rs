//! The device's poll (and the simulator's submit/notify/reap) do not
//! allocate in steady state, counted by the counting allocator per thread.

use dataplane::frontend::CoalesceConfig;
use dataplane::tcmu::{TcmuDevice, TcmuDeviceConfig};
use sim::tcmu::{SimConfig, SimData, SimSubmitError, TcmuSim};
use test_support::alloc::thread_allocations;
use test_support::exec::Immediate;

#[test]
fn steady_state_polls_do_not_allocate() {
    let mut sim = small_sim();
    let (region, bell) = sim.device_endpoint().unwrap();
    let exec = Immediate::new(64);
    // A fixed hold keeps the pattern of publications steady (the tuner's
    // sweeps would change how many commands are in flight, and with it the
    // simulator's working sizes, after the warm-up).
    let config = TcmuDeviceConfig {
        coalesce: CoalesceConfig {
            fixed_hold: Some(std::time::Duration::from_micros(20)),
            ..CoalesceConfig::default()
        },
        ..TcmuDeviceConfig::default()
    };
    let mut dev = TcmuDevice::attach(region, bell, exec, config).unwrap();
    let read = [0x28, 0, 0, 0, 0, 0, 0, 0, 16, 0];
    let write = [0x2A, 0, 0, 0, 0, 0, 0, 0, 16, 0];
    let payload = vec![0xA5u8; 64 << 10];
    let mut buf = vec![0u8; 64 << 10];
    let mut rng = test_support::rng::seeded(0x1234_5678);

    // `traced`: a backtrace is printed for each allocation of the device's
    // polls, so that a failure says where.
    let mut run =
        |rounds: usize, sim: &mut TcmuSim, dev: &mut TcmuDevice<Immediate>, traced: bool| {
            let (mut in_device, mut in_sim, mut completed) = (0, 0, 0);
            for _ in 0..rounds {
                let before = thread_allocations();
                for _ in 0..4 {
                    let tag = rng.u64(..);
                    let len = 512 * rng.usize(1..=128);
                    let r = if rng.bool() {
                        sim.submit(&read, SimData::In(len), tag)
                    } else {
                        sim.submit(&write, SimData::Out(&payload[..len]), tag)
                    };
                    match r {
                        Ok(_) | Err(SimSubmitError::RingFull | SimSubmitError::DataAreaFull) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                sim.notify();
                let mid = thread_allocations();
                test_support::alloc::traced_if(traced, || dev.poll());
                let after_poll = thread_allocations();
                completed += sim
                    .reap(|c| {
                        c.copy_data_in(&mut buf);
                    })
                    .unwrap();
                in_device += after_poll - mid;
                in_sim += (mid - before) + (thread_allocations() - after_poll);
            }
            (in_device, in_sim, completed)
        };

    // Warm up: slot iovec lists and the simulator's per-id block lists reach
    // their working sizes.
    let (_, _, warm) = run(3000, &mut sim, &mut dev, false);
    assert!(warm > 1000);
    // And every command id the ring can hold at once has been used (ids
    // are taken lowest first, and the first use of one gives the simulator
    // a block list to allocate): how many the rounds below keep in flight
    // depends on timing (the hold), so a new peak could come at any time.
    saturate(&mut sim, &mut dev);
    let (in_device, in_sim, completed) = run(5000, &mut sim, &mut dev, true);
    assert!(completed > 5000, "only {completed} completions");
    assert_eq!(in_device, 0, "device polls allocated");
    assert_eq!(in_sim, 0, "simulator allocated");
}

/// Fills the ring with the smallest commands the rounds use (one block
/// each: the most that fit at once), after completing what was in flight,
/// then completes and reaps them all.
fn saturate(sim: &mut TcmuSim, dev: &mut TcmuDevice<Immediate>) {
    let read = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    drain(sim, dev);
    let mut submitted = 0;
    loop {
        match sim.submit(&read, SimData::In(512), 0) {
            Ok(_) => submitted += 1,
            Err(SimSubmitError::RingFull | SimSubmitError::DataAreaFull) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(submitted > 4, "only {submitted} fit in the ring");
    sim.notify();
    drain(sim, dev);
}

/// Polls and reaps until nothing is in flight (the device's hold is
/// 20 µs; the bound is for a stuck test only).
fn drain(sim: &mut TcmuSim, dev: &mut TcmuDevice<Immediate>) {
    let mut buf = [0u8; 512];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sim.in_flight() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} commands still in flight",
            sim.in_flight()
        );
        dev.poll();
        sim.reap(|c| {
            c.copy_data_in(&mut buf);
        })
        .unwrap();
    }
}

#[test]
fn the_simulators_block_lists_do_not_grow_again_for_larger_commands() {
    let mut sim = small_sim();
    let (region, bell) = sim.device_endpoint().unwrap();
    let mut dev = TcmuDevice::attach(
        region,
        bell,
        Immediate::new(64),
        TcmuDeviceConfig::default(),
    )
    .unwrap();
    let mut buf = vec![0u8; 64 << 10];
    // Two commands at a time: one block each, then sixteen. The lists of
    // the two command ids (and the scratch list) were made by the first.
    let mut sim_allocations = |sim: &mut TcmuSim, dev: &mut TcmuDevice<Immediate>, len: usize| {
        let read = [0x28, 0, 0, 0, 0, 0, 0, 0, (len / 512) as u8, 0];
        let mut in_sim = 0;
        for _ in 0..100 {
            let before = thread_allocations();
            for tag in 0..2 {
                sim.submit(&read, SimData::In(len), tag).unwrap();
            }
            sim.notify();
            in_sim += thread_allocations() - before;
            let mut reaped = 0;
            while reaped < 2 {
                dev.poll();
                let before = thread_allocations();
                reaped += sim
                    .reap(|c| {
                        c.copy_data_in(&mut buf);
                    })
                    .unwrap();
                in_sim += thread_allocations() - before;
            }
        }
        in_sim
    };
    sim_allocations(&mut sim, &mut dev, 512);
    assert_eq!(sim_allocations(&mut sim, &mut dev, 64 << 10), 0);
}

/// A simulator with a small ring (2 KiB: a few dozen commands at most) and
/// data area (128 blocks of 4 KiB).
fn small_sim() -> TcmuSim {
    TcmuSim::new(SimConfig {
        cmdr_size: 2048,
        data_area_size: 512 << 10,
        data_block_size: 4096,
        ..SimConfig::default()
    })
    .unwrap()
}
