//! Ring faults under serve: logged, counted and recovered, or left blocked.

use super::*;

/// Calls `heal` (as the control loop does) until `done`, failing after a
/// generous deadline with the log.
fn heal_until(
    server: &mut Server<SimHost>,
    logs: &Logs,
    what: &str,
    mut done: impl FnMut(&mut Server<SimHost>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(server) {
        assert!(Instant::now() < deadline, "{what}: {}", logs.dump());
        server.heal();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Breaks an attached device's ring the way `echo 1 > action/reset_ring`
/// does (the kernel sets `cmd_tail` under the device) and makes the device
/// look at it.
fn break_ring(sim: &SharedSim, lba: u32) {
    let mut sim = sim.lock().unwrap();
    let tail = sim.region().load_cmd_tail();
    sim.region().store_cmd_tail(if tail == 0 { 8 } else { 0 });
    sim.submit(&read10(lba), SimData::In(512), u64::from(lba))
        .unwrap();
    sim.notify();
}

#[test]
fn a_ring_reset_under_the_device_is_logged_counted_and_recovered() {
    let host = SimHost::default();
    let disk0 = host.add(0, "tcm-user/0/disk0/dataplane/ram0", facts(512, 64 * MIB));
    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config: config(),
        state_dir: None,
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    server.rescan();
    verified_job(&disk0, 64 * MIB / 512, 512, 500);

    // The administrator resets the ring while the device is attached; two
    // commands are queued after it.
    {
        let mut sim = disk0.lock().unwrap();
        assert_eq!(sim.reset_ring(1, |_| {}), 0);
        for lba in 0..2 {
            sim.submit(&read10(lba), SimData::In(512), u64::from(lba))
                .unwrap();
        }
        sim.notify();
    }
    heal_until(&mut server, &logs, "recovered", |_| {
        logs.count("recovered disk0 (uio0)") == 1
    });
    assert_eq!(
        logs.count("ring fault: cmd_tail moved from "),
        1,
        "logged once, with the device and the reason: {}",
        logs.dump()
    );
    assert_eq!(
        logs.count("disk0 (uio0): ring fault: cmd_tail moved from "),
        1
    );
    assert_eq!(
        logs.count(
            "disk0 (uio0): recovering from its ring fault; blocking it and resetting its ring"
        ),
        1
    );
    assert_eq!(
        host.actions.lock().unwrap().as_slice(),
        ["recover disk0", "unblock disk0"],
        "blocked, ring reset, unblocked"
    );
    // The two commands the faulted device never walked were completed by
    // the recovery's reset with BUSY: the initiator retries them.
    assert_eq!(host.reset_statuses.lock().unwrap().as_slice(), [0x08, 0x08]);
    let mut busy = 0;
    disk0.lock().unwrap().reap(|_| busy += 1).unwrap();
    assert_eq!(busy, 0, "nothing else completed them");

    // Serving again (the disk holds the first job's data), and the
    // statistics tell.
    verified_job_over(&disk0, 64 * MIB / 512, 512, 500, false);
    let report = server.stats();
    let d = device(&report, "disk0");
    assert_eq!((d.faults_total, d.recoveries_total), (1, 1), "{d:?}");
    assert_eq!(d.fault, None);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["devices"][0]["faults_total"], 1);
    assert_eq!(json["devices"][0]["recoveries_total"], 1);
    assert!(report
        .render_text()
        .contains("1 fault(s) and 1 recovery(ies) since start"));
    assert!(server.shutdown());
}

#[test]
fn a_device_that_keeps_faulting_is_left_blocked_while_the_others_serve() {
    let host = SimHost::default();
    let disk0 = host.add(0, "tcm-user/0/disk0/dataplane/ram0", facts(512, 64 * MIB));
    let other = host.add(1, "tcm-user/0/other/dataplane/ram0", facts(512, 64 * MIB));
    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config: config(),
        state_dir: None,
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    server.set_recovery_policy(serve::RecoveryPolicy {
        attempts: 3,
        first_retry: Duration::from_millis(1),
        max_retry: Duration::from_millis(4),
        stable: Duration::from_secs(3600),
    });
    server.rescan();
    let mut breaks = 0;
    heal_until(&mut server, &logs, "given up", |server| {
        let attached = server.attached().iter().any(|(m, _)| *m == 0);
        if attached && logs.count("recovered disk0") == breaks {
            break_ring(&disk0, breaks as u32);
            breaks += 1;
        }
        logs.count("giving up on disk0 (uio0) after 3 recoveries in a row") == 1
    });
    assert_eq!(breaks, 4, "{}", logs.dump());
    assert!(!server.attached().iter().any(|(m, _)| *m == 0));
    // Blocked and reset for good: no unblock after the last reset.
    let actions = host.actions.lock().unwrap().clone();
    assert_eq!(actions.last().map(String::as_str), Some("recover disk0"));
    assert_eq!(actions.iter().filter(|a| *a == "recover disk0").count(), 4);
    // A rescan does not attach it again.
    server.rescan();
    server.heal();
    assert!(!server.attached().iter().any(|(m, _)| *m == 0));

    verified_job(&other, 64 * MIB / 512, 512, 500);
    let report = server.stats();
    let d = device(&report, "disk0");
    assert_eq!((d.faults_total, d.recoveries_total), (4, 3), "{d:?}");
    let fault = d.fault.as_deref().unwrap();
    assert!(fault.contains("ring fault: cmd_tail moved"), "{fault}");
    assert!(
        fault.contains("left blocked after 3 recoveries in a row"),
        "{fault}"
    );
    assert!(report.render_text().contains("FAULTED: ring fault"));
    let o = device(&report, "other");
    assert_eq!((o.fault.as_deref(), o.faults_total), (None, 0));
    assert!(o.commands >= 500);
    assert!(server.shutdown());
}
