//! Task management and slot exhaustion: aborts, their scopes,
//! TASK_MGMT_DONE held until its commands finish, EXECs waiting for slots.

use super::*;

#[test]
fn task_management_aborts_and_holds_task_mgmt_done_until_commands_finish() {
    let (k, mut dev) = device();
    let a: Vec<u32> = (0..3)
        .map(|_| k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0))
        .collect();
    let b = k.exec(SESS_B, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll();
    assert_eq!(dev.executor().submitted.len(), 4);
    let tm = ScstUserTm {
        sess_h: SESS_A,
        fn_: SCST_ABORT_TASK_SET,
        ..Default::default()
    };
    let received = k.queue(subcode::TASK_MGMT_RECEIVED, |c| c.set_tm_cmd(&tm));
    dev.poll();
    let mut aborted = dev.executor().aborted.clone();
    aborted.sort_unstable();
    assert_eq!(aborted, vec![0, 1, 2], "session A's commands only");
    let done = k.queue(subcode::TASK_MGMT_DONE, |c| c.set_tm_cmd(&tm));
    dev.poll();
    let replies = k.last_call().replies;
    assert_eq!(replies.len(), 1);
    assert_eq!(
        (replies[0].reply.cmd_h, replies[0].reply.result()),
        (received, 0)
    );
    // Two of session A's commands finish: TASK_MGMT_DONE still waits.
    dev.executor_mut()
        .finish(0, Response::with_status(status::TASK_ABORTED));
    dev.executor_mut().finish(3, Response::good(0));
    dev.executor_mut()
        .finish(1, Response::with_status(status::TASK_ABORTED));
    dev.poll();
    let sent: Vec<u32> = k
        .last_call()
        .replies
        .iter()
        .map(|r| r.reply.cmd_h)
        .collect();
    assert_eq!(sent, vec![a[0], b, a[1]]);
    dev.poll();
    assert!(k.last_call().replies.is_empty());
    assert!(!dev.is_drained());
    // The last one finishes: its reply and then TASK_MGMT_DONE.
    dev.executor_mut()
        .finish(2, Response::with_status(status::TASK_ABORTED));
    dev.poll();
    let replies = k.last_call().replies;
    let sent: Vec<u32> = replies.iter().map(|r| r.reply.cmd_h).collect();
    assert_eq!(sent, vec![a[2], done]);
    assert_eq!(replies[1].reply.subcode, subcode::TASK_MGMT_DONE);
    assert_eq!(replies[1].reply.result(), SCST_MGMT_STATUS_SUCCESS);
    assert_eq!(replies[0].exec().status, status::TASK_ABORTED);
    assert_eq!(dev.stats().snapshot().aborts, 3);
    assert!(dev.is_drained());
}

#[test]
fn abort_task_and_lun_reset_scopes() {
    let (k, mut dev) = device();
    let a0 = k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    k.exec(SESS_B, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll();
    // ABORT TASK of a0 named with the wrong session aborts nothing.
    let wrong = ScstUserTm {
        sess_h: SESS_B,
        fn_: SCST_ABORT_TASK,
        cmd_h_to_abort: a0,
        ..Default::default()
    };
    let h = k.queue(subcode::TASK_MGMT_DONE, |c| c.set_tm_cmd(&wrong));
    dev.poll();
    assert!(dev.executor().aborted.is_empty());
    dev.poll();
    assert_eq!(
        k.last_call().replies[0].reply.cmd_h,
        h,
        "nothing to wait for"
    );
    let right = ScstUserTm {
        sess_h: SESS_A,
        ..wrong
    };
    k.queue(subcode::TASK_MGMT_RECEIVED, |c| c.set_tm_cmd(&right));
    dev.poll();
    assert_eq!(dev.executor().aborted, vec![0]);
    let reset = ScstUserTm {
        sess_h: SESS_B,
        fn_: SCST_LUN_RESET,
        ..Default::default()
    };
    k.queue(subcode::TASK_MGMT_RECEIVED, |c| c.set_tm_cmd(&reset));
    dev.poll();
    assert_eq!(dev.executor().aborted, vec![0, 1, 2], "each aborted once");
    let aca = ScstUserTm {
        fn_: SCST_CLEAR_ACA,
        ..reset
    };
    k.queue(subcode::TASK_MGMT_RECEIVED, |c| c.set_tm_cmd(&aca));
    dev.poll();
    assert_eq!(dev.executor().aborted.len(), 3);
}

#[test]
fn execs_wait_for_slots_in_order_and_the_device_asks_for_fewer() {
    // 2 slots, budget 4: at most 2 + 2 * 4 = 10 subcommands held.
    let (k, mut dev) = device_with(default_options(), 2, 4, small_pool(4 << 20, 1 << 20), None);
    let h: Vec<u32> = (0..12u8)
        .map(|i| {
            let mut cdb = WRITE_10;
            cdb[5] = i;
            k.exec(SESS_A, &cdb, SCST_DATA_NONE, 0, 0)
        })
        .collect();
    dev.poll(); // 4 arrive: 2 run, 2 wait
    dev.poll(); // 4 more wait
    dev.poll(); // 2 more: 10 held, the limit
    dev.poll(); // asks for nothing, so no ioctl
    let calls = k.calls();
    let asked: Vec<usize> = calls.iter().map(|c| c.asked).collect();
    assert_eq!(asked, vec![4, 4, 2]);
    assert_eq!(dev.outstanding(), 10);
    assert_eq!(dev.executing(), 2);
    assert_eq!(dev.stats().snapshot().held, 8);
    // Finish whatever runs, poll, repeat: everything completes, in order.
    for _ in 0..20 {
        dev.executor_mut().finish_all(Response::good(0));
        dev.poll();
    }
    let order: Vec<u32> = k
        .calls()
        .iter()
        .flat_map(|c| c.replies.iter().map(|r| r.reply.cmd_h).collect::<Vec<_>>())
        .collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, h, "every command answered exactly once");
    assert_eq!(k.awaiting(), 0);
    assert!(dev.is_drained());
    // They started in arrival order.
    let started: Vec<u32> = dev.executor().submitted.iter().map(|s| s.lba).collect();
    assert_eq!(started, (0..12).collect::<Vec<u32>>());
}

#[test]
fn task_management_answers_waiting_execs_with_task_aborted() {
    let (k, mut dev) = device_with(default_options(), 1, 8, small_pool(4 << 20, 1 << 20), None);
    let run = k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    let wait_a = k.exec(SESS_A, &WRITE_10, SCST_DATA_NONE, 0, 0);
    let wait_b = k.exec(SESS_B, &WRITE_10, SCST_DATA_NONE, 0, 0);
    dev.poll();
    let tm = ScstUserTm {
        sess_h: SESS_A,
        fn_: SCST_ABORT_TASK_SET,
        ..Default::default()
    };
    let tm_h = k.queue(subcode::TASK_MGMT_RECEIVED, |c| c.set_tm_cmd(&tm));
    dev.poll();
    dev.poll();
    let replies = k.last_call().replies;
    let sent: Vec<u32> = replies.iter().map(|r| r.reply.cmd_h).collect();
    assert_eq!(sent, vec![wait_a, tm_h]);
    assert_eq!(replies[0].exec().status, status::TASK_ABORTED);
    assert_eq!(dev.executor().aborted, vec![0]);
    dev.executor_mut()
        .finish(0, Response::with_status(status::TASK_ABORTED));
    dev.poll();
    dev.executor_mut().finish_all(Response::good(0));
    dev.poll();
    let sent: Vec<u32> = k
        .calls()
        .iter()
        .flat_map(|c| c.replies.iter().map(|r| r.reply.cmd_h).collect::<Vec<_>>())
        .collect();
    assert!(sent.ends_with(&[run, wait_b]), "{sent:?}");
    assert_eq!(
        dev.executor().submitted.len(),
        2,
        "the aborted one never ran"
    );
}
