//! The `dataplane` binary: bad flags give a clear message and a non-zero exit,
//! never a panic; a short bench run prints the JSON report.

use std::process::{Command, Output};

fn dataplane(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(args)
        .output()
        .expect("runs the dataplane binary")
}

/// Runs a bench that must fail, and returns its stderr.
fn refused(args: &[&str]) -> String {
    let mut all = vec!["bench", "--quiet", "--runtime", "0.2", "--ramp", "0"];
    all.extend_from_slice(args);
    let out = dataplane(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed a report");
    stderr
}

#[test]
fn bad_flags_and_values_are_refused_clearly() {
    assert!(refused(&["--bdev", "floppy"]).contains("invalid value 'floppy' for '--bdev"));
    assert!(refused(&["--size", "0"]).contains("--size must be greater than zero"));
    assert!(refused(&["--size", "12XB"]).contains("unknown unit"));
    assert!(refused(&["--bs", "1000"])
        .contains("block size (bs) 1000 is not a non-zero multiple of the device block size 4096"));
    assert!(refused(&["--iodepth", "0"]).contains("iodepth 0 is out of range"));
    assert!(refused(&["--iodepth=-3"]).contains("invalid value '-3' for '--iodepth"));
    assert!(refused(&["--rw", "sideways"]).contains("unknown access pattern 'sideways'"));
    assert!(refused(&["--runtime", "0"]).contains("--runtime"));
    assert!(refused(&["--cores", "4096"]).contains("CPU 4096 is not available"));
    assert!(refused(&["--cores", "1,x"]).contains("is not a CPU number"));
    assert!(
        refused(&["--bdev", "null", "--verify"]).contains("--verify needs a bdev that stores data")
    );
    assert!(refused(&["--rwmix-read", "101", "--rw", "randrw"]).contains("rwmix-read 101"));
}

#[test]
fn nvme_runs_need_a_namespace_and_consent_to_write() {
    assert!(refused(&["--bdev", "nvme"]).contains(
        "--bdev nvme needs --path (an NVMe namespace's generic character device, /dev/ngXnY)"
    ));
    // Refused before the path is looked at: nothing is written.
    let msg = refused(&[
        "--bdev",
        "nvme",
        "--path",
        "/dev/ng0n1",
        "--rw",
        "randwrite",
    ]);
    assert!(
        msg.contains(
            "--path /dev/ng0n1: --rw randwrite writes to this device, destroying the data on \
             it; add --destroy-data if that is what you want"
        ),
        "{msg}"
    );
    let msg = refused(&["--bdev", "nvme", "--path", "/dev/ng0n1", "--sqpoll"]);
    assert!(msg.contains("--sqpoll is for file bdevs"), "{msg}");
    // Paths that are not namespaces: the path and the problem, no panic
    // (or, where the kernel has no io_uring, that).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    std::fs::write(&file, [0u8; 4096]).unwrap();
    let missing = dir.path().join("ng9n9");
    for path in [
        std::path::Path::new("/dev/null"),
        file.as_path(),
        missing.as_path(),
    ] {
        let p = path.to_str().unwrap();
        let msg = refused(&["--bdev", "nvme", "--path", p, "--reference"]);
        assert!(msg.contains(&format!("--path {p}: ")), "{msg}");
    }
    let help = dataplane(&["bench", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--destroy-data") && help.contains("/dev/ngXnY"),
        "{help}"
    );
}

#[test]
fn json_report_of_a_short_run() {
    let out = dataplane(&[
        "bench",
        "--quiet",
        "--json",
        "--bdev",
        "ram",
        "--rw",
        "randrw",
        "--verify",
        "--size",
        "64MiB",
        "--iodepth",
        "16",
        "--runtime",
        "0.3",
        "--ramp",
        "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["errors"], 0);
    assert_eq!(report["verify_mismatches"], 0);
    assert!(report["ios"].as_u64().unwrap() > 0);
}
