//! The device's poll (and the simulator's submit/notify/reap) do not
//! allocate in steady state, counted by the counting allocator per thread.

use dataplane::frontend::CoalesceConfig;
use dataplane::tcmu::{TcmuDevice, TcmuDeviceConfig};
use sim::tcmu::{SimConfig, SimData, SimSubmitError, TcmuSim};
use test_support::alloc::thread_allocations;
use test_support::exec::Immediate;

#[test]
fn steady_state_polls_do_not_allocate() {
    let mut sim = TcmuSim::new(SimConfig {
        cmdr_size: 2048,
        data_area_size: 512 << 10,
        data_block_size: 4096,
        ..SimConfig::default()
    })
    .unwrap();
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
    let (in_device, in_sim, completed) = run(5000, &mut sim, &mut dev, true);
    assert!(completed > 5000, "only {completed} completions");
    assert_eq!(in_device, 0, "device polls allocated");
    assert_eq!(in_sim, 0, "simulator allocated");
}
