//! File bdevs under serve: the good ones serve, the bad ones are left out.

use super::*;

/// A configuration of file bdevs in `dir`: good ones (`f0`, the striped
/// `fs` over `f1` and `f2`), bad ones, and a RAM bdev.
fn file_config(dir: &std::path::Path) -> ServeConfig {
    let core = reactor::available_cores()[0];
    let p = |name: &str| dir.join(name).display().to_string();
    std::fs::write(dir.join("short.img"), vec![0u8; 1000]).unwrap();
    std::fs::write(dir.join("mismatch.img"), vec![0u8; 1 << 20]).unwrap();
    let text = format!(
        r#"
[reactors]
cores = [{core}]
idle = "adaptive"

[[bdev]]
name = "ram0"
type = "ram"
size = "8MiB"

[[bdev]]
name = "f0"
type = "file"
path = "{f0}"
size = "16MiB"

[[bdev]]
name = "f1"
type = "file"
path = "{f1}"
size = "8MiB"
queue_depth = 16

[[bdev]]
name = "f2"
type = "file"
path = "{f2}"
size = "8MiB"
fixed_buffers = false

[[bdev]]
name = "fs"
type = "striped"
children = ["f1", "f2"]
chunk = "64KiB"

[[bdev]]
name = "missing"
type = "file"
path = "{missing}"

[[bdev]]
name = "dir"
type = "file"
path = "{dir}"

[[bdev]]
name = "chr"
type = "file"
path = "/dev/null"

[[bdev]]
name = "short"
type = "file"
path = "{short}"

[[bdev]]
name = "mismatch"
type = "file"
path = "{mismatch}"
size = "2MiB"

[[bdev]]
name = "gone"
type = "file"
path = "{gone}"

[[bdev]]
name = "f3"
type = "file"
path = "{f3}"
size = "1MiB"

[[bdev]]
name = "sgone"
type = "striped"
children = ["gone", "f3"]
chunk = "64KiB"
"#,
        f0 = p("f0.img"),
        f1 = p("f1.img"),
        f2 = p("f2.img"),
        missing = p("missing.img"),
        dir = dir.display(),
        short = p("short.img"),
        mismatch = p("mismatch.img"),
        gone = p("gone/x.img"),
        f3 = p("f3.img"),
    );
    let config = ServeConfig::parse(&text).unwrap();
    config.validate(&reactor::available_cores()).unwrap();
    config
}

#[test]
fn file_bdevs_serve_and_bad_ones_are_left_out_while_the_rest_serves() {
    if !test_support::skip::can_run(&[test_support::skip::Need::IoUring]) {
        return;
    }
    let dir = test_support::scratch::disk_dir("serve-file-");
    let host = SimHost::default();
    let disk0 = host.add(0, "tcm-user/0/disk0/dataplane/f0", facts(512, 16 * MIB));
    let striped = host.add(1, "tcm-user/0/stripe/dataplane/fs", facts(512, 16 * MIB));
    let ram = host.add(2, "tcm-user/0/mem/dataplane/ram0", facts(512, 8 * MIB));
    host.add(3, "tcm-user/0/nofile/dataplane/missing", facts(512, MIB));
    host.add(4, "tcm-user/0/nostripe/dataplane/sgone", facts(512, MIB));

    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config: file_config(dir.path()),
        state_dir: None,
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    let f0 = dir.path().join("f0.img");
    assert_eq!(std::fs::metadata(&f0).unwrap().len(), 16 * MIB, "created");
    // Each bad bdev: one line naming it, its path and the problem.
    let left_out = "; the bdev is left out, and devices naming it are refused";
    for (bdev, problem) in [
        (
            "missing",
            "does not exist (give a size to create a sparse file there)",
        ),
        (
            "dir",
            "is a directory, not a regular file or a block device",
        ),
        (
            "chr",
            "/dev/null: is a character device, not a regular file or a block device",
        ),
        (
            "short",
            "its size 1000 bytes is not a multiple of the block size 512",
        ),
        ("mismatch", "the file is 1048576 bytes but size is 2097152"),
        ("gone", "gone/x.img"),
        ("sgone", "its child gone is unavailable"),
    ] {
        let line = format!("bdev {bdev}: ");
        assert_eq!(
            logs.0
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.starts_with(&line) && l.contains(problem) && l.ends_with(left_out))
                .count(),
            1,
            "{bdev}: {}",
            logs.dump()
        );
    }
    assert_eq!(logs.count("bdev f0: "), 1, "{}", logs.dump());
    assert!(logs
        .dump()
        .contains("regular file, 16777216 bytes, 512-byte blocks"));

    server.rescan();
    let attached: Vec<_> = server.attached().into_iter().map(|(m, _)| m).collect();
    assert_eq!(attached, [0, 1, 2], "{}", logs.dump());
    assert_eq!(
        logs.count("refusing nofile (uio3): its dev_config names bdev \"missing\", which is unavailable (bdev missing: "),
        1,
        "{}",
        logs.dump()
    );
    assert_eq!(logs.count("refusing nostripe (uio4): its dev_config names bdev \"sgone\", which is unavailable (bdev sgone: its child gone is unavailable)"), 1);

    // Data through the file, the striped files and the RAM, verified.
    verified_job(&disk0, 16 * MIB / 512, 512, 2000);
    verified_job(&striped, 16 * MIB / 512, 512, 2000);
    verified_job(&ram, 8 * MIB / 512, 512, 1000);

    let report = server.stats();
    let bdev = |name: &str| {
        report
            .bdevs
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("{name} in {:?}", report.bdevs))
            .clone()
    };
    let f0_stats = bdev("f0").file.expect("file statistics");
    assert!(f0_stats.ios >= 2000, "{f0_stats:?}");
    assert_eq!(f0_stats.ios_total, f0_stats.ios);
    assert_eq!(f0_stats.path, f0.display().to_string());
    assert!(
        f0_stats.submit_syscalls > 0 && f0_stats.submit_syscalls <= f0_stats.ios,
        "{f0_stats:?}"
    );
    assert_eq!(f0_stats.bounced, 0, "{f0_stats:?}");
    // The simulator's data area (a memfd) was offered: registered and
    // used, or refused by a kernel that will not pin shared memory (then
    // plain reads and writes).
    match f0_stats.memory_registered {
        Some(true) => assert!(f0_stats.fixed_ios > 0, "{f0_stats:?}"),
        Some(false) => {
            eprintln!("this kernel refused to register the simulator's memfd");
            assert_eq!(f0_stats.fixed_ios, 0, "{f0_stats:?}");
        }
        None => panic!("the data area was offered: {f0_stats:?}"),
    }
    // The children of the striped bdev served through it: the striped
    // channel passes the offered memory on to them (registered where the
    // kernel registered f0's), and the children have no poller of their own
    // to report the registration.
    let f1_stats = bdev("f1").file.unwrap();
    assert!(f1_stats.ios > 0, "{f1_stats:?}");
    assert_eq!(
        f1_stats.fixed_ios > 0,
        f0_stats.memory_registered == Some(true),
        "{f1_stats:?}"
    );
    assert_eq!(f1_stats.memory_registered, None);
    assert!(bdev("missing")
        .unavailable
        .unwrap()
        .contains("does not exist"));
    assert!(bdev("ram0").file.is_none() && bdev("ram0").unavailable.is_none());
    let json = serde_json::to_value(&report).unwrap();
    let f0_json = json["bdevs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "f0")
        .unwrap()
        .clone();
    assert!(
        f0_json["file"]["submit_syscalls_per_io"].is_f64(),
        "{f0_json}"
    );
    assert!(
        f0_json["file"]["memory_registered"].is_boolean(),
        "{f0_json}"
    );
    let text = report.render_text();
    assert!(text.contains("  bdev f0 ("), "{text}");
    assert!(
        text.contains("  bdev missing: UNAVAILABLE: bdev missing: "),
        "{text}"
    );
    // Interval figures: nothing more happened since.
    let again = server.stats();
    let f0_again = again.bdevs.iter().find(|b| b.name == "f0").unwrap();
    assert_eq!(f0_again.file.as_ref().unwrap().ios, 0);

    // What was acknowledged is in the file, read by another process's
    // means once the server stopped.
    let mut write = [0u8; 10];
    write[0] = 0x2a;
    write[2..6].copy_from_slice(&100u32.to_be_bytes());
    write[8] = 1;
    let data: Vec<u8> = (0..512).map(|i| (i * 7 + 3) as u8).collect();
    disk0
        .lock()
        .unwrap()
        .submit(&write, SimData::Out(&data), 1)
        .unwrap();
    disk0.lock().unwrap().notify();
    let mut statuses = Vec::new();
    reap_until(&disk0, 1, |s| statuses.push(s));
    assert_eq!(statuses, [0]);
    assert!(server.shutdown());
    let on_disk = std::fs::read(&f0).unwrap();
    assert_eq!(&on_disk[100 * 512..101 * 512], &data[..]);
}
