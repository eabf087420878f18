//! Fault bdevs under serve: what they inject shows in the statistics, so a
//! soak run tells the failures it asked for from any other.

use super::*;

/// A fault bdev `f0` over `ram0` whose rule is `rule` (TOML lines).
fn fault_config(rule: &str) -> ServeConfig {
    let core = reactor::available_cores()[0];
    let text = format!(
        r#"
[reactors]
cores = [{core}]

[[bdev]]
name = "ram0"
type = "ram"
size = "8MiB"

[[bdev]]
name = "f0"
type = "fault"
base = "ram0"
space = "1MiB"

[[bdev.rules]]
{rule}
"#
    );
    let config = ServeConfig::parse(&text).unwrap();
    config.validate(&reactor::available_cores()).unwrap();
    config
}

#[test]
fn injected_faults_are_counted_in_the_statistics() {
    let host = SimHost::default();
    let sim = host.add(0, "tcm-user/0/disk0/dataplane/f0", facts(512, 8 * MIB));
    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config: fault_config("ops = [\"read\"]\nrange = [0, 8]\nerror = \"medium\""),
        state_dir: None,
    };
    let mut server = Server::start(options, host, log).unwrap();
    server.rescan();
    assert_eq!(server.attached().len(), 1, "{}", logs.dump());

    // Three reads in the failing range, one outside it.
    for (tag, lba) in [(1, 0), (2, 7), (3, 3), (4, 100)] {
        let mut sim = sim.lock().unwrap();
        sim.submit(&read10(lba), SimData::In(512), tag).unwrap();
        sim.notify();
    }
    let mut statuses = Vec::new();
    reap_until(&sim, 4, |status| statuses.push(status));
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [0x00, 0x02, 0x02, 0x02],
        "GOOD, then CHECK CONDITION"
    );

    let report = server.stats();
    let f0 = report.bdevs.iter().find(|b| b.name == "f0").unwrap();
    let fault = f0
        .fault
        .as_ref()
        .expect("a fault bdev reports what it injected");
    assert_eq!((fault.base.as_str(), fault.rules), ("ram0", 1));
    assert_eq!(
        (
            fault.failed,
            fault.delayed,
            fault.stuck,
            fault.aborted,
            fault.no_space
        ),
        (3, 0, 0, 0, 0)
    );
    assert_eq!(fault.space_used_blocks, Some(0));
    let json = serde_json::to_value(&report).unwrap();
    let f0 = json["bdevs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "f0")
        .unwrap();
    assert_eq!(f0["fault"]["failed"], 3);
    assert!(report
        .render_text()
        .contains("  bdev f0 (fault over ram0, 1 rules): injected 3 failed, "));
    let ram0 = report.bdevs.iter().find(|b| b.name == "ram0").unwrap();
    assert!(ram0.fault.is_none());
    assert!(server.shutdown());
}

/// A command stuck in the fault bdev is ended by the kernel's ABORT TASK
/// (a TMR entry, as LIO sends with `tmr_notification` on): the abort
/// reaches the bdev, the command completes with TASK ABORTED, nothing stays
/// in flight, and the LUN serves on.
#[test]
fn an_abort_task_ends_a_stuck_command_and_the_lun_serves_on() {
    let host = SimHost::default();
    let sim = host.add(0, "tcm-user/0/disk0/dataplane/f0", facts(512, 8 * MIB));
    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config: fault_config("ops = [\"read\"]\nrange = [100, 101]\nstuck = true"),
        state_dir: None,
    };
    let mut server = Server::start(options, host, log).unwrap();
    server.rescan();
    assert_eq!(server.attached().len(), 1, "{}", logs.dump());

    let id = {
        let mut sim = sim.lock().unwrap();
        let id = sim.submit(&read10(100), SimData::In(512), 1).unwrap();
        sim.notify();
        id
    };
    // Until the bdev holds it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = server.stats();
        let f0 = report.bdevs.iter().find(|b| b.name == "f0").unwrap();
        if f0.fault.as_ref().unwrap().stuck == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the read never reached the bdev");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut statuses = Vec::new();
    assert_eq!(
        sim.lock()
            .unwrap()
            .reap(|c| statuses.push(c.status))
            .unwrap(),
        0
    );

    sim.lock()
        .unwrap()
        .inject_tmr(dataplane::tcmu::abi::TCMU_TMR_ABORT_TASK, &[id])
        .unwrap();
    reap_until(&sim, 1, |status| statuses.push(status));
    assert_eq!(statuses, [0x40], "TASK ABORTED");

    let report = server.stats();
    let d0 = device(&report, "disk0");
    assert_eq!(d0.aborts_total, 1);
    assert_eq!(d0.received_total, d0.commands_total, "nothing in flight");
    let f0 = report.bdevs.iter().find(|b| b.name == "f0").unwrap();
    let fault = f0.fault.as_ref().unwrap();
    assert_eq!((fault.stuck, fault.aborted), (1, 1));

    // The LUN serves on: the block beside the stuck one reads GOOD.
    {
        let mut sim = sim.lock().unwrap();
        sim.submit(&read10(101), SimData::In(512), 2).unwrap();
        sim.notify();
    }
    statuses.clear();
    reap_until(&sim, 1, |status| statuses.push(status));
    assert_eq!(statuses, [0x00]);
    assert!(server.shutdown());
}
