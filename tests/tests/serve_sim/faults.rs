//! Fault bdevs under serve: what they inject shows in the statistics, so a
//! soak run tells the failures it asked for from any other.

use super::*;

fn fault_config() -> ServeConfig {
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
ops = ["read"]
range = [0, 8]
error = "medium"
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
        config: fault_config(),
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
