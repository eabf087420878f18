//! Random commands checked byte for byte against the model disk, across
//! ring sizes, flags, coalescing, TMRs and threads.

use super::*;

#[derive(Debug, Clone, Copy)]
struct Stress {
    cmdr_size: u32,
    data_area_size: usize,
    data_block_size: u32,
    flags: u16,
    allow_out_of_order: bool,
    max_tasks: u32,
    max_hold: u32,
    max_blocks: u64,
    steps: usize,
    tmr: bool,
    unknown_ops: bool,
    /// `TcmuDeviceConfig::coalesce.batch`: 1 publishes after every poll.
    doorbell_batch: usize,
    seed: u64,
}

const DISK_BLOCKS: usize = 4096; // 2 MiB

impl Default for Stress {
    fn default() -> Self {
        Self {
            cmdr_size: 1000,
            data_area_size: 256 << 10,
            data_block_size: 4096,
            flags: 0xf,
            allow_out_of_order: true,
            max_tasks: 32,
            max_hold: 6,
            max_blocks: 128, // 64 KiB
            steps: 5000,
            tmr: false,
            unknown_ops: false,
            doorbell_batch: 1,
            seed: 1,
        }
    }
}

fn sim_config(s: &Stress) -> SimConfig {
    SimConfig {
        cmdr_size: s.cmdr_size,
        data_area_size: s.data_area_size,
        data_block_size: s.data_block_size,
        flags: s.flags,
    }
}

fn device_config(s: &Stress) -> TcmuDeviceConfig {
    TcmuDeviceConfig {
        name: "tcmu:test".into(),
        budget: 16,
        allow_out_of_order: s.allow_out_of_order,
        iovecs_per_slot: 4,
        acknowledge_on_idle: false,
        coalesce: CoalesceConfig {
            batch: s.doorbell_batch,
            // A fixed hold (behind the concurrency gate): completions wait
            // for the batch or 20 µs (a few steps), whatever the tuner
            // would choose.
            fixed_hold: Some(std::time::Duration::from_micros(20)),
            ..CoalesceConfig::default()
        },
        track_latency: true,
    }
}

/// Device and simulator in one thread, alternating deterministically.
fn run_stress(s: Stress) -> Tally {
    let sim = TcmuSim::new(sim_config(&s)).unwrap();
    let (region, bell) = sim.device_endpoint().unwrap();
    let exec = TestExec::new(s.max_tasks, DISK_BLOCKS, s.seed ^ 0xABCD, s.max_hold);
    let mut dev = TcmuDevice::attach(region.clone(), bell, exec, device_config(&s)).unwrap();
    let stats = dev.stats();
    let mut init = Initiator::new(sim, DISK_BLOCKS, s.seed, s.max_blocks);

    let step = |init: &mut Initiator, dev: &mut TcmuDevice<TestExec>, submit: bool| {
        if submit {
            for _ in 0..init.rng.u64(..6) {
                if !init.submit_random() {
                    break;
                }
            }
            if s.unknown_ops && init.rng.u64(..20) == 0 {
                let len = 8 * (1 + init.rng.u64(..4) as u32);
                if init.sim.inject_unknown_op(len).is_ok() {
                    init.tally.unknown_ops += 1;
                }
            }
            init.sim.notify();
            if s.tmr && !init.inflight.is_empty() && init.rng.u64(..8) == 0 {
                init.inject_tmr();
            }
        }
        let before = stats.snapshot();
        let tail_before = region.load_cmd_tail();
        dev.poll();
        let after = stats.snapshot();
        let tail_moved = region.load_cmd_tail() != tail_before;
        // Exactly one doorbell per poll that moved the tail, none otherwise.
        assert_eq!(after.doorbells - before.doorbells, u64::from(tail_moved));
        if after.commands_completed > before.commands_completed && s.doorbell_batch == 1 {
            assert!(tail_moved);
        }
        init.reap();
    };

    for _ in 0..s.steps {
        step(&mut init, &mut dev, true);
    }
    let mut spins = 0;
    while init.sim.in_flight() > 0 || !dev.is_drained() {
        step(&mut init, &mut dev, false);
        spins += 1;
        assert!(spins < 100_000, "did not drain: {:?}", dev);
    }

    assert_eq!(dev.fault(), None);
    assert!(!init.sim.is_broken());
    assert!(init.inflight.is_empty());
    let t = init.tally;
    assert_eq!(t.completed, t.submitted);
    assert_eq!(
        t.good_reads + t.good_writes + t.aborted + t.checks,
        t.submitted
    );
    assert!(
        dev.executor().disk == init.model,
        "executor disk differs from the initiator's model"
    );
    let st = stats.snapshot();
    assert_eq!(st.commands_received, t.submitted);
    assert_eq!(st.commands_completed, t.submitted);
    assert_eq!(st.doorbells, init.sim.doorbells());
    assert_eq!(st.malformed_commands, 0);
    assert_eq!(st.unknown_entries, t.unknown_ops);
    assert_eq!(st.tmr_entries, t.tmrs);
    assert_eq!(st.pad_entries, init.sim.pads_inserted());
    assert_eq!(
        init.sim.free_blocks() as usize,
        s.data_area_size / s.data_block_size as usize
    );
    assert_eq!(region.load_cmd_tail(), init.sim.cmd_head());
    assert_eq!(dev.in_flight(), 0);
    // Enough commands to mean something (tiny rings admit fewer per step).
    assert!(t.submitted >= 2000, "only {} commands", t.submitted);
    t
}

#[test]
fn random_commands_out_of_order_with_read_len_across_ring_sizes() {
    for (i, &cmdr_size) in [392u32, 1000, 4096].iter().enumerate() {
        let t = run_stress(Stress {
            cmdr_size,
            seed: 11 + i as u64,
            ..Stress::default()
        });
        assert!(t.good_reads > 100 && t.good_writes > 100, "{t:?}");
    }
}

#[test]
fn random_commands_with_doorbell_coalescing() {
    // Completions are held while commands keep arriving; every byte must still
    // check out, in and out of order, and the tail must be published (so the
    // run drains) once the initiator stops submitting.
    for (i, allow_out_of_order) in [true, false].into_iter().enumerate() {
        let t = run_stress(Stress {
            doorbell_batch: 8,
            allow_out_of_order,
            max_tasks: 48,
            seed: 31 + i as u64,
            ..Stress::default()
        });
        assert!(t.good_reads > 100 && t.good_writes > 100, "{t:?}");
    }
}

#[test]
fn random_commands_with_tiny_blocks_and_many_iovecs() {
    // 512-byte blocks fragment the data area: many iovecs per command.
    run_stress(Stress {
        cmdr_size: 4096,
        data_area_size: 192 << 10,
        data_block_size: 512,
        max_blocks: 64,
        seed: 5,
        ..Stress::default()
    });
}

#[test]
fn random_commands_in_order_when_the_mailbox_lacks_oooc() {
    run_stress(Stress {
        flags: TCMU_MAILBOX_FLAG_CAP_READ_LEN | TCMU_MAILBOX_FLAG_CAP_TMR,
        seed: 21,
        ..Stress::default()
    });
}

#[test]
fn random_commands_in_order_by_configuration() {
    run_stress(Stress {
        allow_out_of_order: false,
        cmdr_size: 392,
        seed: 22,
        ..Stress::default()
    });
}

#[test]
fn random_commands_without_read_len() {
    let t = run_stress(Stress {
        flags: TCMU_MAILBOX_FLAG_CAP_OOOC | TCMU_MAILBOX_FLAG_CAP_TMR,
        seed: 31,
        ..Stress::default()
    });
    assert!(t.good_reads > 0);
}

#[test]
fn random_commands_with_tmr_aborts_and_unknown_ops() {
    for (i, ooo) in [true, false].into_iter().enumerate() {
        let t = run_stress(Stress {
            tmr: true,
            unknown_ops: true,
            allow_out_of_order: ooo,
            max_hold: 10,
            seed: 41 + i as u64,
            ..Stress::default()
        });
        assert!(t.aborted > 0 && t.tmrs > 0 && t.unknown_ops > 0, "{t:?}");
    }
}

#[test]
fn random_commands_with_the_device_on_its_own_thread() {
    let s = Stress {
        cmdr_size: 2048,
        seed: 77,
        ..Stress::default()
    };
    let sim = TcmuSim::new(sim_config(&s)).unwrap();
    let (region, bell) = sim.device_endpoint().unwrap();
    let exec = TestExec::new(s.max_tasks, DISK_BLOCKS, 99, s.max_hold);
    let mut dev = TcmuDevice::attach(region.clone(), bell, exec, device_config(&s)).unwrap();
    let stats = dev.stats();
    let mut init = Initiator::new(sim, DISK_BLOCKS, s.seed, s.max_blocks);
    let stop = AtomicBool::new(false);
    let target = 8000u64;

    let dev = std::thread::scope(|scope| {
        let device_thread = scope.spawn(|| {
            while !(stop.load(Ordering::Acquire) && dev.is_drained()) {
                if dev.poll() == 0 {
                    std::thread::yield_now();
                }
            }
            dev
        });
        // Liveness guard only (a hang would otherwise never end).
        let deadline = Instant::now() + Duration::from_secs(300);
        while init.tally.submitted < target {
            for _ in 0..init.rng.u64(..8) {
                if !init.submit_random() {
                    break;
                }
            }
            init.sim.notify();
            if init.reap() == 0 {
                std::thread::yield_now();
            }
            assert!(Instant::now() < deadline, "no progress");
        }
        while init.sim.in_flight() > 0 {
            if init.reap() == 0 {
                std::thread::yield_now();
            }
            assert!(Instant::now() < deadline, "did not drain");
        }
        stop.store(true, Ordering::Release);
        device_thread.join().unwrap()
    });

    assert_eq!(dev.fault(), None);
    let t = init.tally;
    assert_eq!(t.completed, t.submitted);
    assert!(
        dev.executor().disk == init.model,
        "disk differs from the model"
    );
    let st = stats.snapshot();
    assert_eq!(st.commands_completed, t.submitted);
    // The last kicks may have landed after the final reap.
    init.sim.force_reap(|_| panic!("nothing left")).unwrap();
    assert_eq!(st.doorbells, init.sim.doorbells());
    assert_eq!(region.load_cmd_tail(), init.sim.cmd_head());
}
