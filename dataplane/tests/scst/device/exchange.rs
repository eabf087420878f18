//! The REPLY_AND_GET_MULTI protocol: one exchange per poll, EAGAIN, refused
//! replies, errors and faults, shutdown, and reply coalescing.

use super::*;

#[test]
fn one_ioctl_per_poll_carries_every_reply_and_fetches_a_batch() {
    let (k, mut dev) = device();
    let handles: Vec<u32> = (0..10)
        .map(|_| k.exec(SESS_A, &READ_10, SCST_DATA_READ, 4096, 0))
        .collect();
    assert_eq!(dev.poll(), 10);
    let call = k.last_call();
    assert_eq!(
        (call.asked, call.delivered, call.replies.len()),
        (32, 10, 0)
    );
    assert_eq!(dev.executor().submitted.len(), 10);
    // Each READ with pbuf 0 got its own page-aligned pool buffer.
    let mut bases: Vec<usize> = dev
        .executor()
        .submitted
        .iter()
        .map(|s| {
            let (base, len) = s.iov.unwrap();
            assert_eq!(len, 4096);
            assert_eq!(base % 4096, 0);
            base
        })
        .collect();
    bases.sort_unstable();
    bases.dedup();
    assert_eq!(bases.len(), 10);
    assert_eq!(dev.pool().buffers_in_use(), 10);

    dev.executor_mut().finish_all(Response::good(4096));
    dev.poll();
    let calls = k.calls();
    assert_eq!(calls.len(), 2, "one ioctl per poll");
    let call = &calls[1];
    assert_eq!(call.replies.len(), 10);
    assert_eq!(call.result, Err(Errno::EAGAIN));
    for (r, h) in call.replies.iter().zip(&handles) {
        assert_eq!(r.reply.cmd_h, *h);
        let e = r.exec();
        assert_eq!(e.reply_type, SCST_EXEC_REPLY_COMPLETED);
        assert_eq!(e.status, status::GOOD);
        assert_eq!(e.resp_data_len, 4096);
        assert!(
            bases.contains(&(e.pbuf as usize)),
            "pbuf is the EXEC buffer"
        );
        assert!(r.sense.is_empty());
    }
    // The buffers now belong to the kernel (cached) until it frees them.
    assert_eq!(dev.pool().buffers_in_use(), 10);
    let st = dev.stats().snapshot();
    assert_eq!(st.ioctls, 2);
    assert_eq!(st.eagain, 1);
    assert_eq!(st.replies_sent, 10);
    assert_eq!(st.commands_completed, 10);
    assert_eq!(st.data_in_bytes, 10 * 4096);
    assert_eq!(st.exec, 10);
    assert_eq!(k.awaiting(), 0);
}

#[test]
fn eagain_still_consumes_the_replies() {
    let (k, mut dev) = device();
    k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll();
    dev.executor_mut().finish_all(Response::good(0));
    dev.poll();
    assert_eq!(k.last_call().result, Err(Errno::EAGAIN));
    assert_eq!(k.last_call().replies.len(), 1);
    assert_eq!(dev.outstanding(), 0);
    // The next poll does not resend it.
    dev.poll();
    assert_eq!(k.last_call().replies.len(), 0);
    assert_eq!(k.calls().len(), 3);
    assert!(dev.is_drained());
}

#[test]
fn a_refused_reply_is_dropped_and_the_later_ones_are_resent() {
    let (k, mut dev) = device();
    let h: Vec<u32> = (0..4)
        .map(|_| k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0))
        .collect();
    dev.poll();
    // Complete in slot order 0..4; the third and fourth with sense, so the
    // relocated replies must carry valid sense pointers.
    let miscompare = ScsiError::Miscompare { offset: 7 }.to_response(SenseFormat::Fixed);
    let range = ScsiError::LbaOutOfRange.to_response(SenseFormat::Fixed);
    dev.executor_mut().finish(0, Response::good(0));
    dev.executor_mut().finish(1, Response::good(0));
    dev.executor_mut().finish(2, miscompare);
    dev.executor_mut().finish(3, range);
    k.state().refuse = Some((h[1], Errno::EINVAL));
    dev.poll();
    let call = k.last_call();
    assert_eq!(call.result, Err(Errno::EINVAL));
    assert_eq!(call.replies.len(), 1, "processed up to the refused one");
    assert_eq!(dev.stats().snapshot().reply_failures, 1);
    // Next poll: the two after the refused one, not the refused one.
    dev.poll();
    let call = k.last_call();
    let sent: Vec<u32> = call.replies.iter().map(|r| r.reply.cmd_h).collect();
    assert_eq!(sent, vec![h[2], h[3]]);
    assert_eq!(call.replies[0].sense, miscompare.sense_bytes());
    assert_eq!(call.replies[0].exec().status, status::CHECK_CONDITION);
    assert_eq!(call.replies[1].sense, fixed_sense(0x05, 0x21, 0x00));
    assert_eq!(dev.outstanding(), 0);
    assert_eq!(k.awaiting(), 0);
    assert!(dev.is_drained());
}

#[test]
fn refusal_of_the_last_reply_resends_nothing() {
    let (k, mut dev) = device();
    let h = k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll();
    dev.executor_mut().finish_all(Response::good(0));
    k.state().refuse = Some((h, Errno::ESRCH));
    dev.poll();
    dev.poll();
    assert_eq!(k.last_call().replies.len(), 0);
    assert_eq!(dev.outstanding(), 0);
}

#[test]
fn shutdown_stops_asking_but_keeps_replying() {
    let (k, mut dev) = device();
    k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll();
    k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.begin_shutdown();
    dev.poll();
    assert_eq!(
        k.calls().len(),
        1,
        "nothing to send, nothing to ask: no ioctl"
    );
    assert!(!dev.is_drained());
    dev.executor_mut().finish_all(Response::good(0));
    dev.poll();
    let call = k.last_call();
    assert_eq!((call.asked, call.replies.len()), (0, 1));
    assert!(dev.is_drained());
    assert_eq!(
        k.state().queue.len(),
        1,
        "the new command stays with the kernel"
    );
}

#[test]
fn a_dead_fd_faults_the_device_and_drains_the_executor() {
    let (k, mut dev) = device();
    k.exec(SESS_A, &READ_10, SCST_DATA_READ, 4096, 0);
    dev.poll();
    k.state().fail_all = Some(Errno::ENODEV);
    dev.poll();
    assert_eq!(dev.fault(), Some(Errno::ENODEV));
    let calls = k.calls().len();
    assert!(!dev.is_drained());
    dev.executor_mut().finish_all(Response::good(4096));
    dev.poll();
    dev.poll();
    assert_eq!(k.calls().len(), calls, "no ioctl once faulted");
    assert!(dev.is_drained());
    assert_eq!(dev.pool().buffers_in_use(), 0);
}

#[test]
fn other_errors_keep_the_replies_for_the_next_call() {
    let (k, mut dev) = device();
    let h = k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll();
    dev.executor_mut().finish_all(Response::good(0));
    k.state().fail_all = Some(Errno::EINTR);
    dev.poll();
    assert_eq!(dev.fault(), None);
    k.state().fail_all = None;
    dev.poll();
    let replies = k.last_call().replies;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].reply.cmd_h, h);
    assert_eq!(dev.stats().snapshot().ioctl_errors, 1);
}

/// The kernel returns the commands it already copied out together with
/// EFAULT for the next one (`dev_user_reply_get_multi`): they are the
/// handler's to answer, and the faulted one comes again.
#[test]
fn commands_delivered_with_an_error_are_handled() {
    let (k, mut dev) = device();
    let handles: Vec<u32> = (0..3)
        .map(|_| k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0))
        .collect();
    k.state().fault_at_cmd = Some(2);
    assert_eq!(dev.poll(), 2);
    assert_eq!(k.last_call().result, Err(Errno::EFAULT));
    assert_eq!(dev.executor().submitted.len(), 2);
    assert_eq!(dev.outstanding(), 2);
    dev.executor_mut().finish_all(Response::good(0));
    dev.poll();
    let call = k.last_call();
    let answered: Vec<u32> = call.replies.iter().map(|r| r.reply.cmd_h).collect();
    assert_eq!(answered, handles[..2]);
    assert_eq!(call.delivered, 1);
    dev.executor_mut().finish_all(Response::good(0));
    dev.poll();
    assert_eq!(k.last_call().replies[0].reply.cmd_h, handles[2]);
    assert_eq!(k.awaiting(), 0);
    assert_eq!(dev.outstanding(), 0);
    // An error before the kernel wrote `cmds_cnt` delivers nothing.
    k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    k.state().fail_all = Some(Errno::EFAULT);
    assert_eq!(dev.poll(), 0);
    assert_eq!(dev.outstanding(), 0);
    k.state().fail_all = None;
    assert_eq!(dev.poll(), 1);
}

#[test]
fn replies_are_held_under_load_until_the_batch_fills() {
    let config = ScstDeviceConfig {
        budget: 32,
        coalesce: CoalesceConfig {
            batch: 4,
            // A fixed hold that never expires during the test: under load
            // only the other rules apply.
            fixed_hold: Some(Duration::from_secs(3600)),
            ..CoalesceConfig::default()
        },
        ..ScstDeviceConfig::default()
    };
    let (k, mut dev) = device_config(default_options(), 16, small_pool(4 << 20, 1 << 20), config);
    let h: Vec<u32> = (0..6)
        .map(|_| k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0))
        .collect();
    let alloc = k.queue(subcode::ALLOC_MEM, |c| {
        c.set_alloc_cmd(&ScstUserScsiCmdAllocMem {
            alloc_len: 4096,
            ..Default::default()
        })
    });
    dev.poll(); // nothing held yet: exchange at once; six at once open the gate
    assert_eq!(k.calls().len(), 1);
    dev.poll(); // the ALLOC_MEM reply is urgent
    assert_eq!(k.calls().len(), 2);
    assert_eq!(k.last_call().replies[0].reply.cmd_h, alloc);
    dev.poll(); // under load, nothing to send: no ioctl before the hold ends
    for slot in 0..3 {
        dev.executor_mut().finish(slot, Response::good(0));
    }
    dev.poll(); // 3 replies < 4
    assert_eq!(k.calls().len(), 2);
    dev.executor_mut().finish(3, Response::good(0));
    dev.poll(); // 4 replies: one ioctl carries them
    assert_eq!(k.calls().len(), 3);
    let sent: Vec<u32> = k
        .last_call()
        .replies
        .iter()
        .map(|r| r.reply.cmd_h)
        .collect();
    assert_eq!(sent, h[..4]);
    dev.executor_mut().finish(4, Response::good(0));
    dev.executor_mut().finish(5, Response::good(0));
    dev.poll();
    assert_eq!(k.calls().len(), 3, "two replies wait for the hold");
    assert!(!dev.is_drained());
    // Draining sends them at once.
    dev.begin_shutdown();
    dev.poll();
    assert_eq!(k.calls().len(), 4);
    assert_eq!(k.last_call().replies.len(), 2);
    assert!(dev.is_drained());
}

#[test]
fn a_full_command_buffer_is_followed_by_another_exchange() {
    let config = ScstDeviceConfig {
        budget: 2,
        coalesce: CoalesceConfig {
            max_hold: Duration::from_secs(3600),
            ..CoalesceConfig::default()
        },
        ..ScstDeviceConfig::default()
    };
    let (k, mut dev) = device_config(default_options(), 16, small_pool(4 << 20, 1 << 20), config);
    for _ in 0..5 {
        k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    }
    for _ in 0..4 {
        dev.poll();
    }
    let delivered: Vec<usize> = k.calls().iter().map(|c| c.delivered).collect();
    assert_eq!(delivered[..3], [2, 2, 1], "{delivered:?}");
    assert!(delivered[3..].iter().all(|&d| d == 0), "{delivered:?}");
    assert_eq!(dev.executing(), 5);
}

#[test]
fn a_coalescing_window_holds_replies_even_when_nothing_executes() {
    let config = ScstDeviceConfig {
        budget: 32,
        coalesce: CoalesceConfig {
            batch: 4,
            max_hold: Duration::ZERO,
            fixed_hold: None,
            // Never closes during the test: only the other rules apply.
            window: Duration::from_secs(3600),
        },
        idle_poll_interval: Duration::ZERO,
        ..ScstDeviceConfig::default()
    };
    let (k, mut dev) = device_config(default_options(), 16, small_pool(4 << 20, 1 << 20), config);
    let h: Vec<u32> = (0..3)
        .map(|_| k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0))
        .collect();
    dev.poll(); // nothing to send: the exchange fetches the three
    assert_eq!(k.calls().len(), 1);
    dev.executor_mut().finish_all(Response::good(0));
    assert_eq!(dev.poll(), 3);
    // Nothing executes any more, yet the three replies wait (fewer than the
    // batch), and the device reports work so that its reactor stays awake.
    assert_eq!(k.calls().len(), 1);
    assert_eq!(dev.poll(), 1);
    assert_eq!(k.calls().len(), 1);
    assert!(!dev.is_drained());
    // Draining sends them at once.
    dev.begin_shutdown();
    dev.poll();
    assert_eq!(k.calls().len(), 2);
    let sent: Vec<u32> = k
        .last_call()
        .replies
        .iter()
        .map(|r| r.reply.cmd_h)
        .collect();
    assert_eq!(sent, h);
    assert!(dev.is_drained());
    assert_eq!(dev.poll(), 0, "nothing held: the reactor may sleep");
}

/// A device whose hold, once its gate opens, is a fixed 200 ms.
fn device_holding_200ms() -> (FakeKernel, Dev) {
    let config = ScstDeviceConfig {
        budget: 32,
        coalesce: CoalesceConfig {
            fixed_hold: Some(Duration::from_millis(200)),
            ..CoalesceConfig::default()
        },
        ..ScstDeviceConfig::default()
    };
    device_config(default_options(), 16, small_pool(4 << 20, 1 << 20), config)
}

#[test]
fn holds_of_one_that_nothing_joined_close_the_gate() {
    let (k, mut dev) = device_holding_200ms();
    for _ in 0..6 {
        k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    }
    dev.poll(); // six at once open the gate
    assert_eq!(k.calls().len(), 1);
    dev.executor_mut().finish_all(Response::good(0));
    dev.poll(); // six replies, fewer than the batch, the hold young: held
    assert_eq!(k.calls().len(), 1);
    std::thread::sleep(Duration::from_millis(250));
    dev.poll(); // the hold is over: the replies go, and nothing had arrived
    assert_eq!(k.calls().len(), 2);
    assert_eq!(k.last_call().replies.len(), 6);
    // Six carried: concurrency, joined or not. A lone command now waits
    // for the next exchange, and its reply for the hold; so do the next
    // ones, until enough such holds in a row close the gate.
    let mut calls = 2;
    for held in 1..=UNJOINED_TO_CLOSE {
        let cmd_h = k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
        std::thread::sleep(Duration::from_millis(250));
        dev.poll();
        calls += 1;
        assert_eq!(k.calls().len(), calls, "fetched once the hold passed");
        dev.executor_mut().finish_all(Response::good(0));
        dev.poll();
        assert_eq!(k.calls().len(), calls, "held: the gate is still open");
        std::thread::sleep(Duration::from_millis(250));
        dev.poll(); // one reply carried, nothing arrived
        calls += 1;
        assert_eq!(k.calls().len(), calls, "unjoined hold {held}");
        assert_eq!(k.last_call().replies[0].reply.cmd_h, cmd_h);
    }
    // The gate is closed: a lone command's reply goes out at once.
    let lone = k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    std::thread::sleep(Duration::from_millis(1)); // past the idle polling interval
    dev.poll();
    assert_eq!(k.calls().len(), calls + 1, "fetched");
    dev.executor_mut().finish_all(Response::good(0));
    dev.poll();
    assert_eq!(k.calls().len(), calls + 2, "answered without a hold");
    assert_eq!(k.last_call().replies[0].reply.cmd_h, lone);
}

#[test]
fn a_reply_and_one_new_command_in_one_exchange_are_no_concurrency() {
    // Queue depth 1 where the initiator resubmits before the exchange that
    // answers fetches: each exchange carries one reply and brings the next
    // command. That opens no gate, and keeps none open.
    let (k, mut dev) = device_holding_200ms();
    k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    std::thread::sleep(Duration::from_millis(1)); // past the idle polling interval
    dev.poll();
    assert_eq!(k.calls().len(), 1, "fetched");
    for round in 0..4 {
        dev.executor_mut().finish_all(Response::good(0));
        k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
        dev.poll(); // the reply goes at once and the next command comes
        assert_eq!(
            k.calls().len(),
            2 + round,
            "round {round}: answered at once"
        );
        assert_eq!(k.last_call().replies.len(), 1);
        assert_eq!(dev.stats().snapshot().exec, 2 + round as u64);
    }
    // With the gate open (six at once), such exchanges end its holds
    // unjoined: enough in a row close it.
    dev.executor_mut().finish_all(Response::good(0));
    for _ in 0..6 {
        k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    }
    dev.poll(); // the last reply goes, six come: open
    let mut calls = k.calls().len();
    dev.executor_mut().finish_all(Response::good(0));
    dev.poll();
    assert_eq!(k.calls().len(), calls, "six replies held: the gate is open");
    std::thread::sleep(Duration::from_millis(250));
    k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll(); // the six go (several: concurrency), one comes
    calls += 1;
    assert_eq!(k.calls().len(), calls);
    for held in 0..UNJOINED_TO_CLOSE {
        dev.executor_mut().finish_all(Response::good(0));
        dev.poll();
        assert_eq!(k.calls().len(), calls, "hold {held}: still open, held");
        std::thread::sleep(Duration::from_millis(250));
        k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
        dev.poll(); // one reply goes, one command comes
        calls += 1;
        assert_eq!(k.calls().len(), calls, "hold {held} over");
    }
    dev.executor_mut().finish_all(Response::good(0));
    dev.poll();
    assert_eq!(k.calls().len(), calls + 1, "closed: the reply went at once");
}

/// A device with no hold and no idle polling interval (it would ask at
/// every poll), whose idle backstop is `backstop`, on a fake kernel whose
/// `may_have_work` answers as `watch` says.
fn device_watched(watch: Watch, backstop: Duration) -> (FakeKernel, Dev) {
    let config = ScstDeviceConfig {
        budget: 32,
        coalesce: CoalesceConfig {
            max_hold: Duration::ZERO,
            ..CoalesceConfig::default()
        },
        idle_poll_interval: Duration::ZERO,
        idle_backstop: backstop,
        ..ScstDeviceConfig::default()
    };
    let (k, dev) = device_config(default_options(), 16, small_pool(4 << 20, 1 << 20), config);
    k.state().watch = watch;
    (k, dev)
}

#[test]
fn an_idle_device_asks_the_kernel_only_when_its_driver_may_have_work() {
    let (k, mut dev) = device_watched(Watch::Truthful, Duration::from_secs(3600));
    dev.poll(); // the first exchange: none before it to count the backstop from
    assert_eq!(k.calls().len(), 1);
    for _ in 0..100 {
        assert_eq!(dev.poll(), 0);
    }
    assert_eq!(k.calls().len(), 1, "nothing queued: no ioctl");
    assert_eq!(k.state().watch_asks, 100, "the driver was asked instead");
    let cmd_h = k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    assert_eq!(dev.poll(), 1);
    assert_eq!(k.calls().len(), 2);
    assert_eq!(k.last_call().delivered, 1);
    // A reply to send goes out whatever the driver says.
    let asks = k.state().watch_asks;
    dev.executor_mut().finish_all(Response::good(0));
    dev.poll();
    assert_eq!(k.calls().len(), 3);
    assert_eq!(k.last_call().replies[0].reply.cmd_h, cmd_h);
    assert_eq!(k.state().watch_asks, asks, "not asked with a reply queued");
    for _ in 0..10 {
        dev.poll();
    }
    assert_eq!(k.calls().len(), 3, "idle again");
}

#[test]
fn a_lost_wake_up_delays_a_command_by_the_backstop_at_most() {
    let (k, mut dev) = device_watched(Watch::Lost, Duration::from_secs(3600));
    dev.poll(); // the first exchange (EAGAIN)
    k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    for _ in 0..100 {
        dev.poll();
    }
    assert_eq!(k.calls().len(), 1, "the driver said nothing was queued");

    let (k, mut dev) = device_watched(Watch::Lost, Duration::from_millis(1));
    dev.poll();
    k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(dev.poll(), 1, "past the backstop: asked anyway");
    assert_eq!(k.last_call().delivered, 1);
}

#[test]
fn a_driver_without_a_watch_is_asked_and_the_kernel_too_at_every_idle_poll() {
    let (k, mut dev) = device_watched(Watch::Absent, Duration::from_secs(3600));
    for _ in 0..5 {
        dev.poll();
    }
    assert_eq!(k.calls().len(), 5);
}
