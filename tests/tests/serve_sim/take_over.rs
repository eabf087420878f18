//! Taking a ring over at attach, decided from the ring and its holder.

use super::*;

/// What happened to three READs queued on a device before serve attached
/// it: their statuses, and whether the ring was reset.
fn take_over(state_dir: bool, state_file: Option<&str>) -> (Vec<u8>, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let host = SimHost::default();
    let sim = host.add(0, "tcm-user/0/disk0/dataplane/ram0", facts(512, 64 * MIB));
    for lba in 0..3 {
        sim.lock()
            .unwrap()
            .submit(&read10(lba), SimData::In(512), u64::from(lba))
            .unwrap();
    }
    sim.lock().unwrap().notify();
    if let Some(text) = state_file {
        std::fs::write(tmp.path().join("tcmu-0-disk0.state"), text).unwrap();
    }
    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config: config(),
        state_dir: state_dir.then(|| tmp.path().to_owned()),
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    server.rescan();
    assert_eq!(server.attached().len(), 1, "{}", logs.dump());
    let reset = !host.actions.lock().unwrap().is_empty();
    let mut statuses = host.reset_statuses.lock().unwrap().clone();
    if !reset {
        reap_until(&sim, 3, |s| statuses.push(s));
    }
    // Either way the device serves afterwards.
    verified_job(&sim, 64 * MIB / 512, 512, 100);
    assert!(server.shutdown());
    (statuses, reset)
}

#[test]
fn a_crash_record_with_this_process_pid_still_resets_the_ring() {
    // What a detach whose drain timed out leaves: this very process's pid.
    let record = format!("pid={}\nstate=attached\n", std::process::id());
    assert_eq!(take_over(true, Some(&record)), (vec![0x08; 3], true));
}

#[test]
fn a_crash_record_whose_pid_was_reused_still_resets_the_ring() {
    // pid 1 is alive (init, or the next serve in a container).
    assert_eq!(
        take_over(true, Some("pid=1\nstate=attached\n")),
        (vec![0x08; 3], true)
    );
}

#[test]
fn without_a_state_directory_waiting_entries_are_reset() {
    assert_eq!(take_over(false, None), (vec![0x08; 3], true));
    assert_eq!(take_over(true, None), (vec![0x08; 3], true), "no record");
}

#[test]
fn after_a_clean_detach_waiting_entries_are_picked_up() {
    assert_eq!(
        take_over(true, Some("pid=1\nstate=clean\n")),
        (vec![0; 3], false)
    );
}

#[test]
fn an_idle_ring_is_taken_without_a_reset_whatever_the_record() {
    let host = SimHost::default();
    let sim = host.add(0, "tcm-user/0/disk0/dataplane/ram0", facts(512, 64 * MIB));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("tcmu-0-disk0.state"),
        "pid=999999999\nstate=attached\n",
    )
    .unwrap();
    let (_logs, log) = Logs::new();
    let options = ServeOptions {
        config: config(),
        state_dir: Some(tmp.path().to_owned()),
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    server.rescan();
    assert_eq!(server.attached().len(), 1);
    assert!(host.actions.lock().unwrap().is_empty(), "nothing to reset");
    verified_job(&sim, 64 * MIB / 512, 512, 100);
    assert!(server.shutdown());
}

#[test]
fn a_second_serve_of_the_same_subtype_leaves_a_held_ring_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let host = SimHost::default();
    let sim = host.add(0, "tcm-user/0/disk0/dataplane/ram0", facts(512, 64 * MIB));
    let start = |host: SimHost, state_dir: Option<std::path::PathBuf>| {
        let (logs, log) = Logs::new();
        let options = ServeOptions {
            config: config(),
            state_dir,
        };
        (Server::start(options, host, log).unwrap(), logs)
    };
    let (mut first, _first_logs) = start(host.clone(), Some(tmp.path().to_owned()));
    first.rescan();
    assert_eq!(first.attached().len(), 1);
    // Commands in flight in the first serve's ring while the second looks.
    for lba in 0..3 {
        sim.lock()
            .unwrap()
            .submit(&read10(lba), SimData::In(512), u64::from(lba))
            .unwrap();
    }
    // The second serve, without a state directory (the first one's record
    // would not help it either): the ring has waiting entries and no clean
    // record, but another process holds it.
    let (mut second, second_logs) = start(host.as_process(2), None);
    second.rescan();
    second.rescan();
    assert!(second.attached().is_empty());
    assert_eq!(
        second_logs.count("cannot attach disk0 (uio0) yet: another process has it open"),
        1,
        "{}",
        second_logs.dump()
    );
    assert!(host.actions.lock().unwrap().is_empty(), "never reset");
    sim.lock().unwrap().notify();
    let mut good = 0;
    reap_until(&sim, 3, |s| good += usize::from(s == 0));
    assert_eq!(good, 3, "the first serve kept serving");

    // The first serve stops (the device is idle) and its process exits: the
    // second takes the ring over as it is.
    assert!(first.shutdown());
    host.release(0);
    second.rescan();
    assert_eq!(second.attached().len(), 1);
    assert!(host.actions.lock().unwrap().is_empty(), "an idle ring");
    verified_job(&sim, 64 * MIB / 512, 512, 100);
    assert!(second.shutdown());
}
