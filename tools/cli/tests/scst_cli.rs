//! `dataplane scst` against fake /sys/kernel/scst_tgt, /sys and /dev trees
//! (the hidden `--*-root` flags): checks and their messages, add-lun and
//! del-lun writing the right `mgmt` commands and printing the disk, and
//! `list` in text and JSON. The kernel-like fake (LUN directories
//! appearing, errnos) is in `tools/admin/tests/scst_luns.rs`.

use std::path::PathBuf;
use std::process::{Command, Output};
use tempfile::TempDir;
use test_support::skip::{can_run, Need};

/// A fake machine under one directory.
struct Fake {
    tmp: TempDir,
}

impl Fake {
    /// Nothing at all.
    fn bare() -> Self {
        Self {
            tmp: TempDir::new().unwrap(),
        }
    }

    /// SCST with scst_user device disk0 (registered by the dataplane: its
    /// SGV pool carries the marker), scst_local's default target with a
    /// session on host 3, whose LUN 0 disk `sdc` already shows in sysfs.
    fn loaded() -> Self {
        let f = Self::bare();
        for dir in [
            "sys/kernel/scst_tgt/handlers/disk0",
            "sys/kernel/scst_tgt/devices/disk0/exported",
            "sys/kernel/scst_tgt/sgv/dataplane.disk0",
            "sys/kernel/scst_tgt/targets/scst_local/scst_local_tgt/luns",
            "sys/kernel/scst_tgt/targets/scst_local/scst_local_tgt/sessions/scst_local_host",
            "sys/devices/scst_local/host3",
            "sys/bus/scsi/devices/3:0:0:0/block/sdc",
            "dev",
        ] {
            std::fs::create_dir_all(f.p(dir)).unwrap();
        }
        f.link(
            "sys/kernel/scst_tgt/handlers/disk0",
            "sys/kernel/scst_tgt/devices/disk0/handler",
        );
        f.put("sys/kernel/scst_tgt/devices/disk0/commands", "");
        f.put(
            "sys/kernel/scst_tgt/targets/scst_local/scst_local_tgt/luns/mgmt",
            "",
        );
        f.link(
            "sys/devices/scst_local/host3",
            "sys/kernel/scst_tgt/targets/scst_local/scst_local_tgt/sessions/scst_local_host/host",
        );
        f.put("sys/bus/scsi/devices/3:0:0:0/delete", "");
        f.put("dev/sdc", "");
        f
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn put(&self, rel: &str, content: &str) {
        let path = self.p(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn link(&self, target: &str, link: &str) {
        std::os::unix::fs::symlink(self.p(target), self.p(link)).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.p(rel)).unwrap()
    }

    /// Runs `dataplane scst ARGS` against this tree.
    fn scst(&self, args: &[&str]) -> Output {
        let roots = [
            format!("--scst-root={}", self.p("sys/kernel/scst_tgt").display()),
            format!("--sysfs-root={}", self.p("sys").display()),
            format!("--dev-root={}", self.p("dev").display()),
        ];
        Command::new(env!("CARGO_BIN_EXE_dataplane"))
            .arg("scst")
            .args(args)
            .args(&roots)
            .output()
            .expect("runs the dataplane binary")
    }

    /// Runs a command that must fail; returns stderr.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.scst(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
        stderr
    }
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn help_lists_the_flags_but_not_the_test_roots() {
    let f = Fake::bare();
    let help = stdout(&f.scst(&["add-lun", "--help"]));
    for flag in [
        "--driver",
        "--target",
        "--lun",
        "--timeout",
        "lun: DRIVER/TARGET/N",
        "disk: /dev/sdX",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(!help.contains("root"), "{help}");
    let help = stdout(&f.scst(&["--help"]));
    for sub in ["add-lun", "del-lun", "list"] {
        assert!(help.contains(sub), "{help}");
    }
}

#[test]
fn add_lun_names_what_is_missing() {
    // The checks after the root check.
    if !can_run(&[Need::Root]) {
        return;
    }
    let f = Fake::bare();
    let root = f.p("sys/kernel/scst_tgt");
    assert_eq!(
        f.refused(&["add-lun", "disk0"]),
        format!(
            "dataplane: error: SCST is not loaded ({} does not exist): modprobe scst\n",
            root.display()
        )
    );
    std::fs::create_dir_all(&root).unwrap();
    assert_eq!(
        f.refused(&["add-lun", "disk0"]),
        format!(
            "dataplane: error: SCST target driver scst_local is not loaded ({} does not exist): \
             modprobe scst_local\n",
            root.join("targets/scst_local").display()
        )
    );
    assert!(f
        .refused(&["add-lun", "disk0", "--driver", "iscsi", "--target", "iqn.x"])
        .ends_with("modprobe iscsi-scst\n"));
    std::fs::create_dir_all(root.join("targets/scst_local")).unwrap();
    assert!(f.refused(&["add-lun", "disk0"]).starts_with(&format!(
        "dataplane: error: SCST target driver scst_local has no target \"scst_local_tgt\" ({} \
         does not exist): scst_local creates scst_local_tgt when loaded with add_default_tgt=1",
        root.join("targets/scst_local/scst_local_tgt").display()
    )));
    std::fs::create_dir_all(root.join("targets/scst_local/scst_local_tgt/luns")).unwrap();
    assert_eq!(
        f.refused(&["add-lun", "disk0"]),
        format!(
            "dataplane: error: no SCST device named \"disk0\" ({} does not exist): is \
             `dataplane serve` running with an [[scst]] device named \"disk0\"?\n",
            root.join("devices/disk0").display()
        )
    );
}

#[test]
fn bad_values_are_refused_before_anything() {
    let f = Fake::loaded();
    assert_eq!(
        f.refused(&["add-lun", "disk0", "--driver", "iscsi"]),
        "dataplane: error: --target is required with --driver iscsi\n"
    );
    assert!(f
        .refused(&["add-lun", "disk0", "--lun=-1"])
        .contains("invalid value '-1' for '--lun <LUN>'"));
    assert!(f
        .refused(&["add-lun", "disk0", "--timeout", "x"])
        .contains("is not a number of seconds"));
    // Refused after the root check.
    if can_run(&[Need::Root]) {
        assert_eq!(
            f.refused(&["add-lun", "disk0", "--lun", "16384"]),
            "dataplane: error: LUN 16384 is out of range (SCST allows 0 to 16383)\n"
        );
        assert_eq!(
            f.refused(&["add-lun", "a b"]),
            "dataplane: error: device name \"a b\" contains ' ' (allowed: printable ASCII \
             without spaces and '/')\n"
        );
    }
    assert_eq!(
        f.read("sys/kernel/scst_tgt/targets/scst_local/scst_local_tgt/luns/mgmt"),
        ""
    );
}

#[test]
fn add_lun_writes_the_command_and_prints_the_disk() {
    if !can_run(&[Need::Root]) {
        return;
    }
    let f = Fake::loaded();
    let out = stdout(&f.scst(&["add-lun", "disk0", "--timeout", "1"]));
    assert_eq!(
        out,
        format!(
            "lun: scst_local/scst_local_tgt/0\ndisk: {}\n",
            f.p("dev/sdc").display()
        )
    );
    assert_eq!(
        f.read("sys/kernel/scst_tgt/targets/scst_local/scst_local_tgt/luns/mgmt"),
        "add disk0 0"
    );
    // A plain tree never shows a disk for LUN 4: the LUN is reported, then
    // the error says it is left in place.
    let out = f.scst(&["add-lun", "disk0", "--lun", "4", "--timeout", "0.2"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "lun: scst_local/scst_local_tgt/4\n"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "dataplane: error: LUN 4 of scst_local/scst_local_tgt was added but no disk \
             appeared under"
        ),
        "{stderr}"
    );
    assert!(stderr.ends_with(
        "the LUN is left in place (remove it with `dataplane scst del-lun \
         disk0 --target scst_local_tgt --lun 4`)\n"
    ));
}

#[test]
fn lun_in_use_and_del_lun() {
    if !can_run(&[Need::Root]) {
        return;
    }
    let f = Fake::loaded();
    let luns = "sys/kernel/scst_tgt/targets/scst_local/scst_local_tgt/luns";
    std::fs::create_dir_all(f.p(&format!("{luns}/0"))).unwrap();
    f.link(
        "sys/kernel/scst_tgt/devices/disk0",
        &format!("{luns}/0/device"),
    );
    let stderr = f.refused(&["add-lun", "disk0"]);
    assert!(
        stderr.starts_with(
            "dataplane: error: LUN 0 of scst_local/scst_local_tgt is in use by device \"disk0\""
        ),
        "{stderr}"
    );
    assert_eq!(
        f.refused(&["del-lun", "disk1", "--lun", "0"]),
        "dataplane: error: LUN 0 of scst_local/scst_local_tgt is device \"disk0\", not \
         \"disk1\"\n"
    );
    let out = stdout(&f.scst(&["del-lun", "disk0"]));
    assert_eq!(
        out,
        format!(
            "removed: {}\ndeleted: scst_local/scst_local_tgt/0\n",
            f.p("dev/sdc").display()
        )
    );
    assert_eq!(f.read("sys/bus/scsi/devices/3:0:0:0/delete"), "1");
    assert_eq!(f.read(&format!("{luns}/mgmt")), "del 0");
}

#[test]
fn not_root_is_refused() {
    // As root, the library test covers the message.
    if !can_run(&[Need::NotRoot]) {
        return;
    }
    let f = Fake::loaded();
    for args in [&["add-lun", "disk0"][..], &["del-lun", "disk0"][..]] {
        let stderr = f.refused(args);
        assert!(
            stderr.starts_with("dataplane: error: must run as root"),
            "{stderr}"
        );
    }
}

#[test]
fn list_in_text_and_json() {
    let f = Fake::loaded();
    let luns = "sys/kernel/scst_tgt/targets/scst_local/scst_local_tgt/luns";
    std::fs::create_dir_all(f.p(&format!("{luns}/0"))).unwrap();
    f.link(
        &format!("{luns}/0"),
        "sys/kernel/scst_tgt/devices/disk0/exported/export0",
    );
    std::fs::create_dir_all(f.p("sys/kernel/scst_tgt/devices/vd0")).unwrap();
    std::fs::create_dir_all(f.p("sys/kernel/scst_tgt/handlers/vdisk_blockio")).unwrap();
    f.link(
        "sys/kernel/scst_tgt/handlers/vdisk_blockio",
        "sys/kernel/scst_tgt/devices/vd0/handler",
    );
    assert_eq!(
        stdout(&f.scst(&["list"])),
        "NAME   HANDLER  LUNS\ndisk0  disk0    scst_local/scst_local_tgt/0\n"
    );
    assert_eq!(
        stdout(&f.scst(&["list", "--all"])),
        "NAME   HANDLER        LUNS\n\
         disk0  disk0          scst_local/scst_local_tgt/0\n\
         vd0    vdisk_blockio  -\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&f.scst(&["list", "--json"]))).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{
            "name": "disk0", "handler": "disk0", "scst_user": true, "dataplane": true,
            "luns": ["scst_local/scst_local_tgt/0"],
        }])
    );
    assert!(Fake::bare()
        .refused(&["list"])
        .starts_with("dataplane: error: SCST is not loaded"));
}
