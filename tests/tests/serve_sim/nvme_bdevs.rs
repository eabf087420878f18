//! Nvme bdevs under serve: those that cannot open are left out, their
//! statistics, and one on a real namespace when the VM test names it.

use super::*;

/// A configuration with a RAM bdev and nvme bdevs that cannot open here
/// (this machine has no NVMe namespace for them): `/dev/null`, a regular
/// file, a directory, a missing path, and a striped bdev over one of them.
fn bad_nvme_config(dir: &std::path::Path) -> ServeConfig {
    let core = reactor::available_cores()[0];
    std::fs::write(dir.join("plain.img"), vec![0u8; 1 << 20]).unwrap();
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
name = "nnull"
type = "nvme"
path = "/dev/null"

[[bdev]]
name = "nfile"
type = "nvme"
path = "{plain}"
queue_depth = 32
unmap = "write-zeroes"

[[bdev]]
name = "ndir"
type = "nvme"
path = "{dir}"

[[bdev]]
name = "nmissing"
type = "nvme"
path = "{missing}"
fixed_buffers = false

[[bdev]]
name = "nstripe"
type = "striped"
children = ["nfile"]
chunk = "64KiB"
"#,
        plain = dir.join("plain.img").display(),
        dir = dir.display(),
        missing = dir.join("ng9n9").display(),
    );
    let config = ServeConfig::parse(&text).unwrap();
    config.validate(&reactor::available_cores()).unwrap();
    config
}

#[test]
fn nvme_bdevs_that_cannot_open_are_left_out_while_the_rest_serves() {
    // Without io_uring every nvme bdev is left out for that reason first.
    if !test_support::skip::can_run(&[test_support::skip::Need::IoUring]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = SimHost::default();
    let ram = host.add(0, "tcm-user/0/mem/dataplane/ram0", facts(512, 8 * MIB));
    host.add(1, "tcm-user/0/nvnull/dataplane/nnull", facts(512, MIB));
    host.add(2, "tcm-user/0/nvstripe/dataplane/nstripe", facts(512, MIB));

    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config: bad_nvme_config(dir.path()),
        state_dir: None,
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    // Each bad bdev: one line naming it, its path and the problem.
    let left_out = "; the bdev is left out, and devices naming it are refused";
    let not_ng = "not an NVMe namespace's generic character device (/dev/ngXnY)";
    let plain = dir.path().join("plain.img");
    for (bdev, path, problem) in [
        ("nnull", "/dev/null".to_string(), "is a character device"),
        (
            "nfile",
            plain.display().to_string(),
            "is a regular file (the `file` bdev serves files), not an NVMe",
        ),
        ("ndir", dir.path().display().to_string(), "is a directory"),
        (
            "nmissing",
            dir.path().join("ng9n9").display().to_string(),
            "does not exist (an NVMe namespace's generic character device is /dev/ngXnY",
        ),
        ("nstripe", String::new(), "its child nfile is unavailable"),
    ] {
        let start = format!("bdev {bdev}: {path}");
        let lines: Vec<String> = logs
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(&start) && l.contains(problem) && l.ends_with(left_out))
            .cloned()
            .collect();
        assert_eq!(lines.len(), 1, "{bdev}: {}", logs.dump());
        if bdev != "nstripe" && bdev != "nmissing" {
            assert!(lines[0].contains(not_ng), "{}", lines[0]);
        }
    }

    server.rescan();
    let attached: Vec<_> = server.attached().into_iter().map(|(m, _)| m).collect();
    assert_eq!(attached, [0], "{}", logs.dump());
    assert_eq!(
        logs.count(
            "refusing nvnull (uio1): its dev_config names bdev \"nnull\", which is unavailable \
             (bdev nnull: /dev/null: is a character device"
        ),
        1,
        "{}",
        logs.dump()
    );
    assert_eq!(
        logs.count(
            "refusing nvstripe (uio2): its dev_config names bdev \"nstripe\", which is \
             unavailable (bdev nstripe: its child nfile is unavailable)"
        ),
        1,
        "{}",
        logs.dump()
    );
    verified_job(&ram, 8 * MIB / 512, 512, 1000);

    let report = server.stats();
    let names: Vec<&str> = report.bdevs.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        ["ndir", "nfile", "nmissing", "nnull", "nstripe", "ram0"]
    );
    for b in &report.bdevs {
        assert!(b.nvme.is_none() && b.file.is_none(), "{b:?}");
        assert_eq!(b.unavailable.is_some(), b.name != "ram0", "{b:?}");
    }
    let json = serde_json::to_value(&report).unwrap();
    let nnull = &json["bdevs"][3];
    assert_eq!(nnull["name"], "nnull");
    assert!(nnull.get("nvme").is_none(), "{nnull}");
    assert!(
        nnull["unavailable"].as_str().unwrap().contains(not_ng),
        "{nnull}"
    );
    let text = report.render_text();
    assert!(
        text.contains("  bdev nnull: UNAVAILABLE: bdev nnull: /dev/null: is a character device"),
        "{text}"
    );
    assert!(server.shutdown());
}

/// The `nvme` object of a bdev's statistics has the `file` object's keys,
/// with the same meaning, at its top level, and its own beside them.
#[test]
fn nvme_statistics_share_the_file_keys() {
    use dataplane::serve::stats::{BdevStats, NvmeBdevStats, NvmeNamespace, UringIoStats};
    let io = UringIoStats {
        path: "/dev/ng0n1".into(),
        ios: 10,
        ios_total: 20,
        submit_syscalls_per_io: 0.5,
        submit_syscalls: 5,
        bounced: 1,
        fixed_ios: 9,
        waits: 0,
        enter_errors: 0,
        memory_registered: Some(true),
    };
    let nvme = BdevStats {
        name: "nvme0".into(),
        huge_page_fraction: None,
        file: None,
        nvme: Some(NvmeBdevStats {
            io: io.clone(),
            commands: 12,
            splits: 1,
            vectored: 0,
            status_errors: 0,
            last_status: None,
            namespace: NvmeNamespace {
                model: "QEMU NVMe Ctrl".into(),
                serial: "1234".into(),
                firmware: "8.0.0".into(),
                version: "1.4".into(),
                nsid: 1,
                lba_size: 512,
                lba_format: 0,
                capacity_bytes: 1 << 30,
                mdts_bytes: None,
                command_bytes: 508 << 10,
                volatile_write_cache: false,
                unmap_mode: "auto",
                unmap: "deallocate",
                lbprz: false,
                vectored: true,
            },
        }),
        fault: None,
        unavailable: None,
    };
    let file = BdevStats {
        name: "f0".into(),
        file: Some(io),
        nvme: None,
        ..nvme.clone()
    };
    let nvme_json = serde_json::to_value(&nvme).unwrap();
    let file_json = serde_json::to_value(&file).unwrap();
    assert!(nvme_json.get("file").is_none() && file_json.get("nvme").is_none());
    let file_keys = file_json["file"].as_object().unwrap();
    for (key, value) in file_keys {
        assert_eq!(&nvme_json["nvme"][key], value, "{key}");
    }
    for key in [
        "commands",
        "splits",
        "vectored",
        "status_errors",
        "namespace",
    ] {
        assert!(nvme_json["nvme"].get(key).is_some(), "{key}: {nvme_json}");
    }
    assert!(nvme_json["nvme"].get("last_status").is_none());
    let ns = &nvme_json["nvme"]["namespace"];
    for key in [
        "model",
        "serial",
        "firmware",
        "nsid",
        "lba_size",
        "command_bytes",
        "volatile_write_cache",
        "unmap_mode",
        "unmap",
        "lbprz",
    ] {
        assert!(ns.get(key).is_some(), "{key}: {ns}");
    }
    assert!(ns.get("mdts_bytes").is_none(), "no MDTS: absent");
}

/// An nvme bdev on the namespace `DATAPLANE_TEST_NVME` names (the VM test's
/// emulated drive; it overwrites the first 16 MiB): data through TCMU
/// verified, and its statistics and namespace reported.
#[test]
fn an_nvme_bdev_serves_and_reports_its_namespace() {
    use bdev::Bdev as _;
    use test_support::skip::{can_run, nvme_device, Need};
    if !can_run(&[Need::IoUring, Need::NvmeGeneric]) {
        return;
    }
    let device = nvme_device().unwrap();
    let lba = bdev::NvmeBdev::open("probe", bdev::NvmeOptions::new(&device))
        .unwrap_or_else(|e| panic!("{e}"))
        .geometry()
        .block_size;
    let core = reactor::available_cores()[0];
    let text = format!(
        "[reactors]\ncores = [{core}]\nidle = \"adaptive\"\n\
         [[bdev]]\nname = \"nvme0\"\ntype = \"nvme\"\npath = \"{}\"\nqueue_depth = 64\n",
        device.display()
    );
    let config = ServeConfig::parse(&text).unwrap();
    config.validate(&reactor::available_cores()).unwrap();
    let host = SimHost::default();
    let disk = host.add(0, "tcm-user/0/nv/dataplane/nvme0", facts(lba, 16 * MIB));
    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config,
        state_dir: None,
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    assert_eq!(
        logs.count(&format!(
            "bdev nvme0: {} (NVMe passthrough: ",
            device.display()
        )),
        1,
        "{}",
        logs.dump()
    );
    server.rescan();
    assert_eq!(server.attached().len(), 1, "{}", logs.dump());
    verified_job_over(&disk, 16 * MIB / u64::from(lba), lba, 2000, false);
    let report = server.stats();
    let nvme = report.bdevs[0].nvme.clone().expect("nvme statistics");
    assert!(nvme.io.ios >= 2000, "{nvme:?}");
    assert!(
        nvme.io.submit_syscalls > 0 && nvme.io.submit_syscalls <= nvme.io.ios,
        "{nvme:?}"
    );
    assert!(nvme.commands >= nvme.io.ios, "{nvme:?}");
    assert_eq!(nvme.io.path, device.display().to_string());
    assert_eq!(nvme.namespace.lba_size, lba);
    assert!(nvme.namespace.nsid >= 1 && !nvme.namespace.model.is_empty());
    assert_eq!(nvme.namespace.unmap_mode, "auto");
    // The simulator's memfd was offered: registered where the kernel pins
    // it, refused elsewhere.
    match nvme.io.memory_registered {
        Some(true) => assert!(nvme.io.fixed_ios > 0, "{nvme:?}"),
        Some(false) => assert_eq!(nvme.io.fixed_ios, 0, "{nvme:?}"),
        None => panic!("the data area was offered: {nvme:?}"),
    }
    let text = report.render_text();
    assert!(text.contains("  bdev nvme0 ("), "{text}");
    assert!(server.shutdown());
}
