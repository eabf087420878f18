//! `dataplane serve` from the command line: configuration errors name the
//! key and exit non-zero; a file or nvme bdev that cannot be opened is
//! logged and left out while the server runs; a running server stops
//! cleanly on SIGTERM.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("dataplane-cli-{}-{name}.toml", std::process::id()));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap();
    path
}

fn refused(name: &str, text: &str) -> String {
    let path = config_file(name, text);
    let out = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args([
            "serve",
            "--state-dir",
            "none",
            "--rpc-socket",
            "none",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{name}: accepted");
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    stderr
}

#[test]
fn bad_configurations_name_the_problem() {
    assert!(
        refused("unknown-key", "[reactors]\ncores = [0]\nturbo = true\n")
            .contains("unknown field `turbo`")
    );
    assert!(refused("missing-bdev", "[reactors]\ncores = [0]\n[[bdev]]\nname = \"s\"\ntype = \"striped\"\nchildren = [\"ghost\"]\nchunk = \"64KiB\"\n")
        .contains("bdev[0] (\"s\").children[0]: no bdev named \"ghost\""));
    assert!(refused(
        "bad-size",
        "[reactors]\ncores = [0]\n[[bdev]]\nname = \"r\"\ntype = \"ram\"\nsize = \"lots\"\n"
    )
    .contains("size \"lots\""));
    assert!(refused("no-core", "[reactors]\ncores = [4096]\n")
        .contains("reactors.cores[0]: CPU 4096 does not exist"));
    assert!(refused(
        "no-reactors",
        "[[bdev]]\nname = \"r\"\ntype = \"ram\"\nsize = 4096\n"
    )
    .contains("missing field `reactors`"));
    let out = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(["serve", "--config", "/nonexistent/dataplane.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/dataplane.toml")
    );
}

#[test]
fn bad_scst_devices_name_the_key() {
    let with = |scst: &str| {
        format!(
            "[reactors]\ncores = [0]\n[[bdev]]\nname = \"ram0\"\ntype = \"ram\"\nsize = \"16MiB\"\n\
             [[scst]]\n{scst}\n"
        )
    };
    let err = refused(
        "scst-unknown-key",
        &with("name = \"disk0\"\nbdev = \"ram0\"\nqueue_depth = 64"),
    );
    assert!(err.contains("unknown field `queue_depth`"), "{err}");
    let err = refused("scst-no-bdev", &with("name = \"disk0\"\nbdev = \"ghost\""));
    assert!(
        err.contains("scst[0] (\"disk0\").bdev: no [[bdev]] named \"ghost\""),
        "{err}"
    );
    let err = refused(
        "scst-block-size",
        &with("name = \"disk0\"\nbdev = \"ram0\"\nblock_size = 4096"),
    );
    assert!(
        err.contains("scst[0] (\"disk0\").block_size: 4096 differs from the block size of bdev"),
        "{err}"
    );
    let err = refused(
        "scst-parse",
        &with("name = \"disk0\"\nbdev = \"ram0\"\nparse_type = \"sometimes\""),
    );
    assert!(
        err.contains("parse_type = \"sometimes\"") && err.contains("unknown variant `sometimes`"),
        "{err}"
    );
}

#[test]
fn scst_devices_without_scst_user_fail_to_start() {
    // Validation passes; opening /dev/scst_user fails (no root needed).
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path();
    let path = config_file(
        "scst-only",
        "[reactors]\ncores = [0]\n[[bdev]]\nname = \"ram0\"\ntype = \"ram\"\nsize = \"16MiB\"\n\
         [[scst]]\nname = \"disk0\"\nbdev = \"ram0\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args([
            "serve",
            "--no-netlink",
            "--state-dir",
            "none",
            "--rpc-socket",
            "none",
        ])
        .arg("--config")
        .arg(&path)
        .args(["--sysfs-root", empty.to_str().unwrap()])
        .args(["--dev-root", empty.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "dataplane: error: starting the server: scst \"disk0\": scst_user is not loaded (no \
             {}/scst_user; modprobe scst_user)",
            empty.display()
        )),
        "{stderr}"
    );
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path();
    let path = config_file(
        "good",
        "[reactors]\ncores = [0]\n[[bdev]]\nname = \"ram0\"\ntype = \"ram\"\nsize = \"16MiB\"\n[tcmu]\nrescan_interval_ms = 50\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args([
            "serve",
            "--no-netlink",
            "--state-dir",
            "none",
            "--rpc-socket",
            "none",
            "--stats-json",
            "--config",
        ])
        .arg(&path)
        .args([
            "--sysfs-root",
            empty.to_str().unwrap(),
            "--configfs-root",
            empty.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("all devices drained"), "{stderr}");
    // The final statistics report is one JSON object per line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(last["reactors"].is_array());
    // The RAM bdev's huge pages, read again for the report (how many the
    // machine gave is its business: serve warned at start if not all).
    assert_eq!(last["bdevs"][0]["name"], "ram0");
    let fraction = last["bdevs"][0]["huge_page_fraction"].as_f64();
    if std::path::Path::new("/proc/self/smaps").exists() {
        let f = fraction.expect("a RAM bdev reports its huge pages");
        assert!((0.0..=1.0).contains(&f), "{f}");
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn bad_file_bdev_keys_are_configuration_errors() {
    let with = |body: &str| {
        format!("[reactors]\ncores = [0]\n[[bdev]]\nname = \"f0\"\ntype = \"file\"\n{body}\n")
    };
    let err = refused("file-no-path", &with("size = \"1MiB\""));
    assert!(err.contains("missing field `path`"), "{err}");
    let err = refused("file-size", &with("path = \"/var/tmp/x.img\"\nsize = 1000"));
    assert!(
        err.contains("bdev[0] (\"f0\").size: 1000 is not a multiple of block_size 512"),
        "{err}"
    );
    let err = refused(
        "file-iopoll",
        &with("path = \"/var/tmp/x.img\"\ndirect = false\niopoll = true"),
    );
    assert!(
        err.contains("bdev[0] (\"f0\").iopoll: polled I/O needs direct = true"),
        "{err}"
    );
}

/// Runs `dataplane serve` with the configuration `text` (and no TCMU nor
/// SCST on the host) for a moment, checks that it kept running and stopped
/// cleanly on SIGTERM, and returns its stderr and its last statistics
/// report.
fn serve_briefly(name: &str, text: &str) -> (String, serde_json::Value) {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path();
    let path = config_file(name, text);
    let mut child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args([
            "serve",
            "--no-netlink",
            "--state-dir",
            "none",
            "--rpc-socket",
            "none",
            "--stats-json",
            "--config",
        ])
        .arg(&path)
        .args([
            "--sysfs-root",
            empty.to_str().unwrap(),
            "--configfs-root",
            empty.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(child.try_wait().unwrap().is_none(), "serve keeps running");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    // The final report lists the bdevs left out, with why.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    (stderr, last)
}

/// The statistics of bdev `name` in a report.
fn bdev<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["bdevs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

#[test]
fn a_file_bdev_that_cannot_open_is_left_out_and_serve_runs_on() {
    // Without io_uring every file bdev is left out for that reason first.
    if !test_support::skip::can_run(&[test_support::skip::Need::IoUring]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.img");
    let (stderr, last) = serve_briefly(
        "file-missing",
        &format!(
            "[reactors]\ncores = [0]\n\
             [[bdev]]\nname = \"ram0\"\ntype = \"ram\"\nsize = \"16MiB\"\n\
             [[bdev]]\nname = \"f0\"\ntype = \"file\"\npath = \"{}\"\n\
             [[bdev]]\nname = \"dir\"\ntype = \"file\"\npath = \"{}\"\n\
             [tcmu]\nrescan_interval_ms = 50\n",
            missing.display(),
            tmp.path().display()
        ),
    );
    assert!(
        stderr.contains(&format!(
            "dataplane serve: bdev f0: {}: does not exist (give a size to create a sparse file \
             there); the bdev is left out, and devices naming it are refused",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("dataplane serve: bdev dir: ")
            && stderr.contains("is a directory, not a regular file or a block device"),
        "{stderr}"
    );
    assert!(!missing.exists(), "nothing created without a size");
    assert!(bdev(&last, "f0")["unavailable"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    assert!(bdev(&last, "ram0")["unavailable"].is_null());
}

#[test]
fn bad_nvme_bdev_keys_are_configuration_errors() {
    let with = |body: &str| {
        format!("[reactors]\ncores = [0]\n[[bdev]]\nname = \"n0\"\ntype = \"nvme\"\n{body}\n")
    };
    let err = refused("nvme-no-path", &with("queue_depth = 32"));
    assert!(err.contains("missing field `path`"), "{err}");
    let err = refused(
        "nvme-depth",
        &with("path = \"/dev/ng0n1\"\nqueue_depth = 0"),
    );
    assert!(
        err.contains("bdev[0] (\"n0\").queue_depth: 0 is not between 1 and 32768"),
        "{err}"
    );
    let err = refused(
        "nvme-transfer",
        &with("path = \"/dev/ng0n1\"\nmax_transfer = \"100\""),
    );
    assert!(
        err.contains("bdev[0] (\"n0\").max_transfer: 100 is not a multiple of 512"),
        "{err}"
    );
    let err = refused(
        "nvme-unmap",
        &with("path = \"/dev/ng0n1\"\nunmap = \"discard\""),
    );
    assert!(err.contains("unknown variant `discard`"), "{err}");
    let err = refused("nvme-size", &with("path = \"/dev/ng0n1\"\nsize = \"1GiB\""));
    assert!(err.contains("unknown field `size`"), "{err}");
}

#[test]
fn an_nvme_bdev_that_cannot_open_is_left_out_and_serve_runs_on() {
    // Without io_uring every nvme bdev is left out for that reason first.
    if !test_support::skip::can_run(&[test_support::skip::Need::IoUring]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("disk.img");
    std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
    let (stderr, last) = serve_briefly(
        "nvme-bad",
        &format!(
            "[reactors]\ncores = [0]\n\
             [[bdev]]\nname = \"ram0\"\ntype = \"ram\"\nsize = \"16MiB\"\n\
             [[bdev]]\nname = \"n0\"\ntype = \"nvme\"\npath = \"/dev/null\"\n\
             [[bdev]]\nname = \"n1\"\ntype = \"nvme\"\npath = \"{}\"\nunmap = \"deallocate\"\n\
             [tcmu]\nrescan_interval_ms = 50\n",
            file.display()
        ),
    );
    let not_ng = "not an NVMe namespace's generic character device (/dev/ngXnY)";
    let left_out = "; the bdev is left out, and devices naming it are refused";
    assert!(
        stderr.contains("dataplane serve: bdev n0: /dev/null: is a character device")
            && stderr.contains(&format!("{not_ng}{left_out}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "dataplane serve: bdev n1: {}: is a regular file (the `file` bdev serves files), \
             {not_ng}{left_out}",
            file.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("with bdevs [\"ram0\"] ([\"n0\", \"n1\"] left out)"),
        "{stderr}"
    );
    for name in ["n0", "n1"] {
        let b = bdev(&last, name);
        assert!(b["unavailable"].as_str().unwrap().contains(not_ng), "{b}");
        assert!(b.get("nvme").is_none(), "{b}");
    }
    assert!(bdev(&last, "ram0")["unavailable"].is_null());
}
