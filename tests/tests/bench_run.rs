//! `dataplane bench` end to end, at small scale: the real reactor threads,
//! the TCMU and SCST simulators and every bdev, with data verification.

use std::time::Duration;

use bench::initiator::{Pattern, SizeSplit};
use bench::{self, BdevKind, BenchConfig, BenchError, FileConfig, Frontend, RbdConfig};
use reactor::IdlePolicy;

fn small(bdev: BdevKind, pattern: Pattern, verify: bool) -> BenchConfig {
    BenchConfig {
        bdev,
        pattern,
        verify,
        size: 64 << 20,
        iodepth: 32,
        runtime: Duration::from_millis(400),
        ramp: Duration::ZERO,
        ..BenchConfig::default()
    }
}

fn run(config: &BenchConfig) -> bench::report::BenchReport {
    let mut ticks = 0;
    let report = bench::run(config, |_| ticks += 1).expect("bench runs");
    assert!(report.ios > 0, "{report:?}");
    assert_eq!(report.ios, report.reads + report.writes);
    report
}

#[test]
fn ram_randrw_verifies_clean() {
    let r = run(&small(BdevKind::Ram, Pattern::RandRw, true));
    assert_eq!((r.errors, r.verify_mismatches), (0, 0), "{:?}", r.notes);
    assert!(r.reads > 0 && r.writes > 0);
    assert!(r.verify);
}

#[test]
fn mixed_sizes_verify_clean_and_average_between_their_bounds() {
    let mut config = small(BdevKind::Ram, Pattern::RandRw, true);
    let split = SizeSplit::parse("4k/50:32k/30:128k/20").unwrap();
    config.io_size = split.largest();
    config.bssplit = Some(split);
    let r = run(&config);
    assert_eq!((r.errors, r.verify_mismatches), (0, 0), "{:?}", r.notes);
    let per_io = r.bytes_per_sec / r.iops;
    // Drawn 50/30/20: about 37 KiB an I/O, far from either bound.
    assert!(
        per_io > 8192.0 && per_io < 96.0 * 1024.0,
        "{per_io} bytes per I/O"
    );
}

#[test]
fn striped_randrw_verifies_clean_across_strips() {
    let mut config = small(
        BdevKind::Striped {
            width: 3,
            chunk: 8192,
        },
        Pattern::RandRw,
        true,
    );
    config.size = 3 * (16 << 20);
    // 32 KiB I/Os over 8 KiB strips touch every child.
    config.io_size = 32 << 10;
    let r = run(&config);
    assert_eq!((r.errors, r.verify_mismatches), (0, 0), "{:?}", r.notes);
}

#[test]
fn scst_randrw_verifies_clean_and_counts_ioctls() {
    let config = BenchConfig {
        frontend: Frontend::Scst,
        ..small(BdevKind::Ram, Pattern::RandRw, true)
    };
    let r = run(&config);
    assert_eq!((r.errors, r.verify_mismatches), (0, 0), "{:?}", r.notes);
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    assert_eq!(r.frontend, "scst");
    assert!(r.reads > 0 && r.writes > 0);
    // Doorbells are the REPLY_AND_GET_MULTI ioctls (how many per I/O is
    // for the benchmark to report, not for a debug build to assert).
    assert!(r.doorbells > 0);
    assert_eq!(r.doorbells_per_io, r.doorbells as f64 / r.ios as f64);
    assert!(r.compare.is_none());
}

#[test]
fn compare_runs_the_tcmu_path_in_the_same_run() {
    let config = BenchConfig {
        frontend: Frontend::Scst,
        compare: true,
        ..small(BdevKind::Ram, Pattern::RandRead, true)
    };
    let r = run(&config);
    assert_eq!((r.errors, r.verify_mismatches), (0, 0), "{:?}", r.notes);
    let c = r.compare.clone().expect("a compared run");
    assert_eq!(c.frontend, "tcmu");
    assert_eq!((c.errors, c.verify_mismatches), (0, 0));
    assert!(c.iops > 0.0 && c.doorbells_per_io > 0.0);
    assert!((c.ratio - r.iops / c.iops).abs() < 1e-9, "{c:?}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["compare"]["frontend"], "tcmu");
}

#[test]
fn sequential_write_then_adaptive_idle() {
    let mut config = small(BdevKind::Ram, Pattern::Write, true);
    config.idle = IdlePolicy::adaptive();
    config.iodepth = 4;
    let r = run(&config);
    assert_eq!((r.errors, r.verify_mismatches, r.reads), (0, 0, 0));
    assert_eq!(r.idle, "adaptive");
}

#[test]
fn null_report_has_every_documented_json_key() {
    let r = run(&small(BdevKind::Null, Pattern::RandRead, false));
    let json = serde_json::to_value(&r).unwrap();
    for key in [
        "frontend",
        "bdev",
        "rw",
        "block_size",
        "iodepth",
        "runtime_s",
        "ios",
        "iops",
        "bytes_per_sec",
        "errors",
        "verify_mismatches",
        "latency_ns",
        "doorbells",
        "doorbells_per_io",
        "reactor_busy_fraction",
        "reactor_ns_per_io",
        "ram_huge_page_fraction",
    ] {
        assert!(json.get(key).is_some(), "missing key {key}");
    }
    for key in ["min", "mean", "p50", "p99", "p999", "max"] {
        assert!(
            json["latency_ns"].get(key).is_some(),
            "missing latency_ns.{key}"
        );
    }
    assert_eq!(json["frontend"], "tcmu");
    assert_eq!(json["bdev"], "null");
    assert_eq!(json["rw"], "randread");
    assert_eq!(json["block_size"], 4096);
    assert!(r.doorbells > 0 && r.doorbells <= r.ios);
    let l = r.latency_ns;
    assert!(l.min <= l.p50 && l.p50 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
    assert!(r.reactor_busy_fraction > 0.0 && r.reactor_busy_fraction <= 1.0);
    // No memory behind a null bdev: nothing to say about huge pages.
    assert!(json["ram_huge_page_fraction"].is_null());
    assert_eq!(r.huge_page_warning(0), None);
}

/// The huge-page fraction of a bench's RAM memory, whatever the machine
/// gave (it is reported, not asserted: see `huge_page_warning`).
fn check_huge_page_fraction(r: &bench::report::BenchReport) {
    let json = serde_json::to_value(r).unwrap();
    let fraction = json["ram_huge_page_fraction"].as_f64();
    if std::path::Path::new("/proc/self/smaps").exists() {
        let f = fraction.expect("RAM memory reports its huge pages");
        assert!((0.0..=1.0).contains(&f), "{f}");
        assert_eq!(r.huge_page_warning(64 << 20).is_some(), f < 1.0);
    }
}

#[test]
fn ram_and_striped_reports_carry_their_huge_page_fraction() {
    let r = run(&small(BdevKind::Ram, Pattern::RandRead, false));
    check_huge_page_fraction(&r);
    let mut striped = small(
        BdevKind::Striped {
            width: 2,
            chunk: 128 << 10,
        },
        Pattern::RandRead,
        false,
    );
    striped.size = 2 * (16 << 20);
    check_huge_page_fraction(&run(&striped));
}

fn config_error(config: BenchConfig) -> String {
    match bench::run(&config, |_| {}) {
        Err(e @ (BenchError::Config(_) | BenchError::Job(_) | BenchError::File { .. })) => {
            e.to_string()
        }
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(r) => panic!("bad config ran: {r:?}"),
    }
}

#[test]
fn bad_configurations_are_refused_with_a_reason() {
    let base = small(BdevKind::Ram, Pattern::RandRead, false);
    let msg = config_error(BenchConfig {
        size: 0,
        ..base.clone()
    });
    assert!(msg.contains("--size"), "{msg}");
    let msg = config_error(BenchConfig {
        io_size: 1000,
        ..base.clone()
    });
    assert!(
        msg.contains("not a non-zero multiple of the device block size 4096"),
        "{msg}"
    );
    let msg = config_error(BenchConfig {
        iodepth: 0,
        ..base.clone()
    });
    assert!(msg.contains("iodepth 0"), "{msg}");
    let msg = config_error(BenchConfig {
        bdev: BdevKind::Null,
        verify: true,
        ..base.clone()
    });
    assert!(msg.contains("--verify"), "{msg}");
    let msg = config_error(BenchConfig {
        cores: vec![4096],
        ..base.clone()
    });
    assert!(msg.contains("CPU 4096 is not available"), "{msg}");
    let msg = config_error(BenchConfig {
        bdev: BdevKind::Striped {
            width: 3,
            chunk: 1000,
        },
        ..base.clone()
    });
    assert!(msg.contains("--chunk"), "{msg}");
    let msg = config_error(BenchConfig {
        block_size: 1000,
        ..base
    });
    assert!(msg.contains("--block-size"), "{msg}");
}

fn io_uring() -> bool {
    test_support::skip::can_run(&[test_support::skip::Need::IoUring])
}

#[test]
fn file_randrw_verifies_clean_with_fixed_buffers_and_a_raw_reference() {
    if !io_uring() {
        return;
    }
    let dir = test_support::scratch::disk_dir("bench-file-");
    let path = dir.path().join("disk.img");
    let mut config = small(BdevKind::File, Pattern::RandRw, true);
    config.size = 16 << 20;
    config.reference = true;
    config.file = FileConfig {
        paths: vec![path.clone()],
        ..FileConfig::default()
    };
    let r = run(&config);
    assert_eq!((r.errors, r.verify_mismatches), (0, 0), "{:?}", r.notes);
    assert_eq!(r.bdev, "file");
    // Created sparse, and said so.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 << 20);
    assert!(
        r.notes
            .iter()
            .any(|n| n.starts_with(&format!("created sparse file {}", path.display()))),
        "{:?}",
        r.notes
    );
    let f = r.file.clone().expect("file statistics");
    assert_eq!(f.created, [path.display().to_string()]);
    assert!(f.bdev_ios >= r.ios, "{f:?}");
    assert!(f.submit_syscalls > 0, "{f:?}");
    // At most one enter per bdev poller poll (two channel polls each).
    assert!(f.submit_syscalls <= f.channel_polls / 2, "{f:?}");
    assert_eq!(
        r.submit_syscalls_per_io,
        f.submit_syscalls as f64 / r.ios as f64
    );
    // The simulator's data area (a memfd) is registered where the kernel
    // pins shared memory, and then every read and write uses it.
    if f.memory_registered {
        assert_eq!(f.fixed_ios, f.bdev_ios, "{f:?}");
    } else {
        eprintln!("this kernel refused to register the simulator's memfd");
        assert_eq!(f.fixed_ios, 0, "{f:?}");
    }
    let raw = r
        .reference
        .as_ref()
        .and_then(|x| x.io_uring())
        .expect("raw loop");
    assert!(raw.ios_per_sec > 0.0 && raw.errors == 0, "{raw:?}");
    assert_eq!(raw.iodepth, 32);
    assert!((raw.ratio - r.iops / raw.ios_per_sec).abs() < 1e-9);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["reference"]["kind"], "io_uring");
    assert!(json["reference"]["ratio"].is_f64());
    assert!(json["reference"]["latency_ns"]["p50"].is_u64());
    assert!(json["submit_syscalls_per_io"].is_f64());
    assert!(json["file"]["memory_registered"].is_boolean());
    let text = r.render_text();
    assert!(
        text.contains("  raw io_uring loop (QD 32, fixed buffers): "),
        "{text}"
    );
    assert!(text.contains("  file bdev: "), "{text}");

    // The second run finds the file, and without fixed buffers offered
    // still verifies (blocks it did not write this time are not checked).
    config.reference = false;
    config.file.fixed_buffers = false;
    let r = run(&config);
    assert_eq!((r.errors, r.verify_mismatches), (0, 0), "{:?}", r.notes);
    let f = r.file.unwrap();
    assert!(
        f.created.is_empty() && !f.memory_registered && f.fixed_ios == 0,
        "{f:?}"
    );
}

#[test]
fn scst_over_striped_files_verifies_clean() {
    if !io_uring() {
        return;
    }
    let dir = test_support::scratch::disk_dir("bench-file-");
    let mut config = small(
        BdevKind::Striped {
            width: 2,
            chunk: 16384,
        },
        Pattern::RandRw,
        true,
    );
    config.frontend = Frontend::Scst;
    config.size = 16 << 20;
    config.io_size = 32 << 10;
    config.file.paths = vec![dir.path().to_path_buf()];
    let r = run(&config);
    assert_eq!((r.errors, r.verify_mismatches), (0, 0), "{:?}", r.notes);
    let f = r.file.unwrap();
    assert_eq!(f.paths.len(), 2);
    assert!(f.paths[1].ends_with("dataplane-bench-0.1.img"), "{f:?}");
    assert!(f.bdev_ios > r.ios, "32 KiB I/Os over 16 KiB strips: {f:?}");
    // The striped channel passes the SCST pool on to its file children,
    // which register it and use it.
    assert!(f.memory_registered && f.fixed_ios > 0, "{f:?}");
}

#[test]
fn memory_bdevs_make_no_syscalls() {
    let r = run(&small(BdevKind::Ram, Pattern::RandRead, false));
    assert_eq!(r.submit_syscalls_per_io, 0.0);
    assert!(r.file.is_none());
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["submit_syscalls_per_io"], 0.0);
    assert!(json.get("file").is_none());
}

#[test]
fn bad_file_configurations_are_refused_with_a_reason() {
    let base = small(BdevKind::File, Pattern::RandRead, false);
    let msg = config_error(base.clone());
    assert!(msg.contains("--bdev file needs --path"), "{msg}");
    let msg = config_error(BenchConfig {
        bdev: BdevKind::Ram,
        file: FileConfig {
            paths: vec!["/var/tmp/x".into()],
            ..FileConfig::default()
        },
        ..base.clone()
    });
    assert!(
        msg.contains("--path is for --bdev file, nvme or striped"),
        "{msg}"
    );
    let msg = config_error(BenchConfig {
        file: FileConfig {
            paths: vec!["/var/tmp/x".into()],
            direct: false,
            iopoll: true,
            ..FileConfig::default()
        },
        ..base.clone()
    });
    assert!(msg.contains("--iopoll needs direct I/O"), "{msg}");
    let msg = config_error(BenchConfig {
        devices: Some(2),
        file: FileConfig {
            paths: vec!["/var/tmp/x".into()],
            ..FileConfig::default()
        },
        ..base
    });
    assert!(msg.contains("--path: 1 paths for 2 files"), "{msg}");
}

#[test]
fn compare_over_a_file_verifies_both_frontends() {
    if !io_uring() {
        return;
    }
    let dir = test_support::scratch::disk_dir("bench-file-");
    let mut config = small(BdevKind::File, Pattern::RandRw, true);
    config.size = 8 << 20;
    config.compare = true;
    config.file.paths = vec![dir.path().join("disk.img")];
    let r = run(&config);
    assert_eq!((r.errors, r.verify_mismatches), (0, 0), "{:?}", r.notes);
    let c = r.compare.unwrap();
    assert_eq!((c.errors, c.verify_mismatches), (0, 0), "{c:?}");
}

#[test]
fn bad_nvme_configurations_are_refused_with_a_reason() {
    let base = small(BdevKind::Nvme, Pattern::RandRead, false);
    let msg = config_error(base.clone());
    assert!(msg.contains("--bdev nvme needs --path"), "{msg}");
    let on = |path: &str| FileConfig {
        paths: vec![path.into()],
        ..FileConfig::default()
    };
    // Writes to a namespace need consent, asked before it is opened.
    for pattern in [Pattern::Write, Pattern::RandWrite, Pattern::RandRw] {
        let msg = config_error(BenchConfig {
            pattern,
            file: on("/dev/ng0n1"),
            ..base.clone()
        });
        assert_eq!(
            msg,
            format!(
                "--path /dev/ng0n1: --rw {} writes to this device, destroying the data on it; \
                 add --destroy-data if that is what you want",
                pattern.name()
            )
        );
    }
    let msg = config_error(BenchConfig {
        file: FileConfig {
            sqpoll: true,
            ..on("/dev/ng0n1")
        },
        ..base.clone()
    });
    assert_eq!(
        msg,
        "--sqpoll is for file bdevs; --bdev nvme has no such option"
    );
    let msg = config_error(BenchConfig {
        file: FileConfig {
            direct: false,
            ..on("/dev/ng0n1")
        },
        ..base.clone()
    });
    assert!(msg.starts_with("--no-direct is for file bdevs"), "{msg}");
    let msg = config_error(BenchConfig {
        devices: Some(2),
        file: on("/dev/ng0n1"),
        ..base.clone()
    });
    assert!(msg.contains("--path: 1 namespaces for 2 devices"), "{msg}");
    // Not a namespace: the path and the problem (or that the kernel has no
    // io_uring), before anything runs.
    let msg = config_error(BenchConfig {
        file: on("/dev/null"),
        ..base.clone()
    });
    assert!(msg.starts_with("--path /dev/null: "), "{msg}");
    if io_uring() {
        assert!(
            msg.contains("not an NVMe namespace's generic character device"),
            "{msg}"
        );
        let dir = test_support::scratch::disk_dir("bench-file-");
        let file = dir.path().join("disk.img");
        std::fs::write(&file, [0u8; 4096]).unwrap();
        let msg = config_error(BenchConfig {
            file: on(file.to_str().unwrap()),
            ..base
        });
        assert_eq!(
            msg,
            format!(
                "--path {}: is a regular file (the `file` bdev serves files), not an NVMe \
                 namespace's generic character device (/dev/ngXnY)",
                file.display()
            )
        );
    }
}

/// A short nvme bench on the namespace `DATAPLANE_TEST_NVME` names (the VM
/// test's emulated drive; it overwrites the first 16 MiB): data verified
/// through the whole path, the raw passthrough loop beside it, and the
/// bdev's statistics and namespace in the report.
#[test]
fn nvme_randrw_verifies_clean_with_a_passthrough_reference() {
    use test_support::skip::{can_run, nvme_device, Need};
    if !can_run(&[Need::IoUring, Need::NvmeGeneric]) {
        return;
    }
    let device = nvme_device().unwrap();
    let mut config = small(BdevKind::Nvme, Pattern::RandRw, true);
    config.size = 16 << 20;
    config.block_size = 512;
    config.reference = true;
    config.file = FileConfig {
        paths: vec![device.clone()],
        destroy_data: true,
        ..FileConfig::default()
    };
    let r = run(&config);
    assert_eq!((r.errors, r.verify_mismatches), (0, 0), "{:?}", r.notes);
    assert_eq!(r.bdev, "nvme");
    let n = r.nvme.clone().expect("nvme statistics");
    assert!(r.file.is_none());
    assert_eq!(n.bdevs.len(), 1);
    let b = &n.bdevs[0];
    assert_eq!(b.io.path, device.display().to_string());
    // The devices have the namespace's block size.
    assert_eq!(r.device_block_size, b.namespace.lba_size);
    assert!(b.io.ios >= r.ios && b.commands >= b.io.ios, "{b:?}");
    assert_eq!(b.status_errors, 0, "{b:?}");
    assert!(
        b.io.submit_syscalls > 0 && b.io.submit_syscalls <= b.io.ios,
        "{b:?}"
    );
    assert_eq!(
        r.submit_syscalls_per_io,
        b.io.submit_syscalls as f64 / r.ios as f64
    );
    if n.memory_registered {
        assert!(b.io.fixed_ios > 0, "{b:?}");
    } else {
        eprintln!("this kernel refused to register the simulator's memfd");
    }
    let raw = r
        .reference
        .as_ref()
        .and_then(|x| x.io_uring())
        .expect("raw passthrough loop");
    assert_eq!(raw.kind, "nvme_uring_cmd");
    assert!(raw.ios_per_sec > 0.0 && raw.errors == 0, "{raw:?}");
    assert!((raw.ratio - r.iops / raw.ios_per_sec).abs() < 1e-9);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["reference"]["kind"], "nvme_uring_cmd");
    assert!(json["reference"]["ratio"].is_f64());
    assert!(json["submit_syscalls_per_io"].is_f64());
    let bdev = &json["nvme"]["bdevs"][0];
    for key in [
        "path",
        "ios",
        "submit_syscalls_per_io",
        "commands",
        "splits",
    ] {
        assert!(bdev.get(key).is_some(), "{key} missing: {bdev}");
    }
    assert!(bdev["namespace"]["lba_size"].is_u64(), "{bdev}");
    let text = r.render_text();
    assert!(
        text.contains("  raw NVMe passthrough loop (QD 32"),
        "{text}"
    );
    assert!(text.contains("  nvme bdev: "), "{text}");

    // Reads at QD 1 over the SCST frontend, without fixed buffers.
    config.frontend = Frontend::Scst;
    config.pattern = Pattern::RandRead;
    config.iodepth = 1;
    config.file.fixed_buffers = false;
    let r = run(&config);
    assert_eq!((r.errors, r.verify_mismatches), (0, 0), "{:?}", r.notes);
    let raw = r.reference.as_ref().and_then(|x| x.io_uring()).unwrap();
    assert!(raw.errors == 0 && !raw.fixed_buffers, "{raw:?}");
    let n = r.nvme.unwrap();
    assert!(
        !n.memory_registered && n.bdevs[0].io.fixed_ios == 0,
        "{n:?}"
    );
}

#[test]
fn bad_rbd_configurations_are_refused_with_a_reason() {
    let base = small(BdevKind::Rbd, Pattern::RandRead, false);
    let msg = config_error(base.clone());
    assert!(msg.contains("--bdev rbd needs --image"), "{msg}");
    let with_image = BenchConfig {
        rbd: RbdConfig {
            images: vec!["img".into()],
            ..RbdConfig::default()
        },
        ..base.clone()
    };
    let msg = config_error(BenchConfig {
        reference: true,
        ..with_image.clone()
    });
    assert!(msg.contains("--reference is not for --bdev rbd"), "{msg}");
    let msg = config_error(BenchConfig {
        pattern: Pattern::RandWrite,
        ..with_image.clone()
    });
    assert!(
        msg.contains("writes to RBD image \"img\"") && msg.contains("--destroy-data"),
        "{msg}"
    );
    let msg = config_error(BenchConfig {
        devices: Some(2),
        ..with_image.clone()
    });
    assert!(msg.contains("--image: 1 images for 2 devices"), "{msg}");
    let msg = config_error(BenchConfig {
        file: FileConfig {
            paths: vec!["/tmp/x".into()],
            ..FileConfig::default()
        },
        ..with_image
    });
    assert!(msg.contains("--path"), "{msg}");
}

#[test]
fn rbd_randrw_verifies_clean_through_the_cluster() {
    let Some(cluster) = test_support::ceph::cluster() else {
        return;
    };
    let image = cluster.create_image("bench_run", 64 << 20);
    let mut config = small(BdevKind::Rbd, Pattern::RandRw, true);
    config.runtime = Duration::from_secs(1);
    // Mixed sizes, as initiators send them.
    let split = SizeSplit::parse("4k/40:16k/30:64k/20:256k/10").unwrap();
    config.io_size = split.largest();
    config.bssplit = Some(split);
    config.rbd = RbdConfig {
        conf: Some(cluster.conf().to_owned()),
        pool: image.pool().to_owned(),
        images: vec![image.name().to_owned()],
        ..RbdConfig::default()
    };
    config.file.destroy_data = true;
    let r = run(&config);
    assert_eq!((r.errors, r.verify_mismatches), (0, 0), "{:?}", r.notes);
    assert!(r.reads > 0 && r.writes > 0, "{r:?}");
    // An image smaller than --size is refused, naming both.
    config.size = 128 << 20;
    let msg = match bench::run(&config, |_| {}) {
        Err(e) => e.to_string(),
        Ok(r) => panic!("ran over a short image: {r:?}"),
    };
    assert!(msg.contains("less than --size 134217728"), "{msg}");
}
