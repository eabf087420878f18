//! `dataplane bench` end to end, at small scale: the real reactor threads,
//! the TCMU and SCST simulators and every bdev, with data verification.

use std::time::Duration;

use bench::initiator::Pattern;
use bench::{self, BdevKind, BenchConfig, BenchError, Frontend};
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
        Err(e @ (BenchError::Config(_) | BenchError::Job(_))) => e.to_string(),
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
