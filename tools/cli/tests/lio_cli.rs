//! `dataplane lio` against fake configfs/sysfs/proc trees (the hidden
//! `--*-root` flags): checks and their messages, rollback when the "kernel"
//! does not answer, delete, and `list` in text and JSON. The full create
//! sequence against a kernel-like fake is tested in
//! `tools/admin/tests/lio_configfs.rs`; the real kernel in `tests/vm/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;
use test_support::skip::{can_run, Need};

/// A fake machine: `<base>/sys/kernel/config/target`, `<base>/sys`,
/// `<base>/dev`, `<base>/proc`.
struct Fake {
    tmp: TempDir,
}

impl Fake {
    /// configfs mounted, target_core_user and tcm_loop loaded.
    fn loaded() -> Self {
        let f = Self::bare();
        for dir in [
            "sys/kernel/config/target/core",
            "sys/module/target_core_user",
            "sys/module/tcm_loop",
            "sys/class/uio",
            "dev",
        ] {
            std::fs::create_dir_all(f.p(dir)).unwrap();
        }
        f.mounts(true);
        f
    }

    /// Nothing at all.
    fn bare() -> Self {
        let f = Self {
            tmp: TempDir::new().unwrap(),
        };
        std::fs::create_dir_all(f.p("proc/self")).unwrap();
        f
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn cfs(&self, rel: &str) -> PathBuf {
        self.p("sys/kernel/config/target").join(rel)
    }

    fn put(&self, rel: &str, content: &str) {
        let path = self.p(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn mounts(&self, configfs: bool) {
        let mut text = format!("sysfs {} sysfs rw 0 0\n", self.p("sys").display());
        if configfs {
            text.push_str(&format!(
                "configfs {} configfs rw 0 0\n",
                self.p("sys/kernel/config").display()
            ));
        }
        self.put("proc/self/mounts", &text);
    }

    /// Runs `dataplane lio ARGS` against this tree.
    fn lio(&self, args: &[&str]) -> Output {
        let roots = [
            format!(
                "--configfs-root={}",
                self.p("sys/kernel/config/target").display()
            ),
            format!("--sysfs-root={}", self.p("sys").display()),
            format!("--dev-root={}", self.p("dev").display()),
            format!("--proc-root={}", self.p("proc").display()),
        ];
        Command::new(env!("CARGO_BIN_EXE_dataplane"))
            .arg("lio")
            .args(args)
            .args(&roots)
            .output()
            .expect("runs the dataplane binary")
    }

    /// Runs a command that must fail; returns stderr.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.lio(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
        stderr
    }

    /// Everything under the base, for before/after comparisons.
    fn snapshot(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
                if p.is_dir() && !p.is_symlink() {
                    walk(&p, base, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.tmp.path(), self.tmp.path(), &mut out);
        out
    }

    /// A TCMU device as the kernel shows it once enabled, with its UIO
    /// device; `disk` adds a tcm_loop LUN with a SCSI disk.
    fn device(
        &self,
        hba: u32,
        name: &str,
        dev_config: &str,
        size: u64,
        minor: u32,
        disk: Option<&str>,
    ) {
        let d = format!("sys/kernel/config/target/core/user_{hba}/{name}");
        self.put(&format!("{d}/attrib/hw_block_size"), "512\n");
        self.put(&format!("{d}/attrib/dev_size"), &format!("{size}\n"));
        self.put(
            &format!("{d}/attrib/dev_config"),
            &format!("{dev_config}\n"),
        );
        self.put(&format!("{d}/enable"), "1\n");
        self.put(
            &format!("sys/class/uio/uio{minor}/name"),
            &format!("tcm-user/{hba}/{name}/{dev_config}\n"),
        );
        self.put(
            &format!("sys/class/uio/uio{minor}/maps/map0/size"),
            "0x40800000\n",
        );
        if let Some(sd) = disk {
            let tpgt = "sys/kernel/config/target/loopback/naa.5001405000000010/tpgt_1";
            std::fs::create_dir_all(self.p(&format!("{tpgt}/lun/lun_0"))).unwrap();
            self.put(&format!("{tpgt}/address"), "3:0:1\n");
            std::os::unix::fs::symlink(self.p(&d), self.p(&format!("{tpgt}/lun/lun_0/{name}")))
                .unwrap();
            std::fs::create_dir_all(self.p(&format!("sys/bus/scsi/devices/3:0:1:0/block/{sd}")))
                .unwrap();
        }
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
    let help = stdout(&f.lio(&["create", "--help"]));
    for flag in [
        "--bdev",
        "--size",
        "--block-size",
        "--hba",
        "--subtype",
        "--max-sectors",
        "--max-data-area-mb",
        "--cmd-time-out",
        "--loopback",
        "--wwn",
        "--timeout",
        "uio: uioN",
        "disk: /dev/sdX",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(!help.contains("root"), "{help}");
    let help = stdout(&f.lio(&["--help"]));
    for sub in ["create", "delete", "list"] {
        assert!(help.contains(sub), "{help}");
    }
}

#[test]
fn create_refuses_bad_values_before_touching_anything() {
    let f = Fake::loaded();
    let before = f.snapshot();
    let create = |extra: &[&str]| {
        let mut args = vec!["create", "disk0"];
        for (flag, default) in [("--bdev", "ram0"), ("--size", "1GiB")] {
            if !extra.contains(&flag) {
                args.extend([flag, default]);
            }
        }
        args.extend_from_slice(extra);
        f.refused(&args)
    };
    assert_eq!(
        create(&["--size", "1000"]),
        "dataplane: error: size 1000 is not a multiple of the block size 512\n"
    );
    assert_eq!(
        create(&["--size", "0"]),
        "dataplane: error: size must be greater than zero\n"
    );
    assert_eq!(
        create(&["--block-size", "8192"]),
        "dataplane: error: block size 8192 is not one of 512, 1024, 2048, 4096\n"
    );
    assert_eq!(
        create(&["--max-sectors", "0"]),
        "dataplane: error: max sectors must be greater than zero\n"
    );
    assert!(create(&["--bdev", "a/b"])
        .contains("bdev name \"a/b\" contains '/' (not allowed: '/', ':', ',', whitespace)"));
    assert!(create(&["--bdev", ""]).contains("bdev name \"\" is empty"));
    assert!(create(&["--loopback", "--wwn", "naa.xyz"])
        .contains("WWN \"naa.xyz\" is not of the form naa.<16 hex digits>"));
    // clap: --wwn needs --loopback; sizes go through bdev::parse_size.
    assert!(create(&["--wwn", "naa.5001405000000001"]).contains("--loopback"));
    assert!(create(&["--size", "12XB"]).contains("unknown unit"));
    assert!(create(&["--timeout=-1"]).contains("is not a number of seconds"));
    assert_eq!(f.snapshot(), before);
}

#[test]
fn create_names_what_is_missing_on_the_machine() {
    let create = ["create", "disk0", "--bdev", "ram0", "--size", "64MiB"];
    let f = Fake::bare();
    let mount_point = f.p("sys/kernel/config");
    assert_eq!(
        f.refused(&create),
        format!(
            "dataplane: error: configfs is not mounted on {0} ({0}/target does not exist): mount \
             it with `mount -t configfs none {0}` (and `modprobe configfs` first: the mount point \
             is missing too)\n",
            mount_point.display()
        )
    );
    std::fs::create_dir_all(&mount_point).unwrap();
    assert!(f.refused(&create).ends_with(&format!(
        "mount it with `mount -t configfs none {}`\n",
        mount_point.display()
    )));
    f.mounts(true);
    assert!(f
        .refused(&create)
        .contains("kernel module target_core_mod is not loaded (configfs is mounted on"));
    std::fs::create_dir_all(f.cfs("core")).unwrap();
    assert_eq!(
        f.refused(&create),
        format!(
            "dataplane: error: kernel module target_core_user is not loaded ({} does not exist): \
             load it with `modprobe target_core_user`\n",
            f.p("sys/module/target_core_user").display()
        )
    );
    std::fs::create_dir_all(f.p("sys/module/target_core_user")).unwrap();
    let mut with_loop = create.to_vec();
    with_loop.push("--loopback");
    assert!(f
        .refused(&with_loop)
        .contains("kernel module tcm_loop is not loaded (neither "));
    assert!(f
        .refused(&with_loop)
        .ends_with("load it with `modprobe tcm_loop`\n"));

    std::fs::create_dir_all(f.cfs("core/user_0/disk0")).unwrap();
    assert_eq!(
        f.refused(&create),
        format!(
            "dataplane: error: TCMU device name \"disk0\" is already in use: {} exists\n",
            f.cfs("core/user_0/disk0").display()
        )
    );
}

#[test]
fn create_without_a_kernel_fails_at_the_first_write_and_rolls_back() {
    // A plain directory tree has no `control` attribute after mkdir: the
    // first write fails and the directories made are removed again.
    let f = Fake::loaded();
    let before = f.snapshot();
    let stderr = f.refused(&["create", "disk0", "--bdev", "ram0", "--size", "64MiB"]);
    assert_eq!(
        stderr,
        format!(
            "dataplane: error: write \"dev_config=dataplane/ram0\" to {} failed: No such file or \
             directory (os error 2); undone: rmdir {}, rmdir {}\n",
            f.cfs("core/user_0/disk0/control").display(),
            f.cfs("core/user_0/disk0").display(),
            f.cfs("core/user_0").display()
        )
    );
    assert_eq!(f.snapshot(), before);
}

#[test]
fn list_in_text_and_json() {
    let f = Fake::loaded();
    f.device(0, "disk0", "dataplane/ram0", 1 << 30, 0, Some("sdc"));
    f.device(1, "vol", "qcow/a/b.qcow2", 1 << 20, 1, None);
    std::fs::create_dir_all(f.cfs("core/user_1/bare")).unwrap();

    let text = stdout(&f.lio(&["list"]));
    let sdc = f.p("dev/sdc").display().to_string();
    assert_eq!(
        text,
        format!(
            "NAME   HBA  SUBTYPE    BDEV  SIZE        BLOCK  UIO   DISK\n\
             disk0  0    dataplane  ram0  1073741824  512    uio0  {sdc}\n"
        )
    );
    let text = stdout(&f.lio(&["list", "--all"]));
    assert_eq!(
        text,
        format!(
            "NAME   HBA  SUBTYPE    BDEV       SIZE        BLOCK  UIO   DISK\n\
             disk0  0    dataplane  ram0       1073741824  512    uio0  {sdc}\n\
             bare   1    -          -          -           -      -     -\n\
             vol    1    qcow       a/b.qcow2  1048576     512    uio1  -\n"
        )
    );
    assert_eq!(
        stdout(&f.lio(&["list", "--subtype", "qcow"])),
        "NAME  HBA  SUBTYPE  BDEV       SIZE     BLOCK  UIO   DISK\n\
         vol   1    qcow     a/b.qcow2  1048576  512    uio1  -\n"
    );
    assert_eq!(
        stdout(&f.lio(&["list", "--subtype", "none"])),
        "NAME  HBA  SUBTYPE  BDEV  SIZE  BLOCK  UIO  DISK\n"
    );

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&f.lio(&["list", "--json"]))).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{
            "name": "disk0", "hba": 0, "subtype": "dataplane", "bdev": "ram0",
            "size": 1073741824u64, "block_size": 512, "enabled": true,
            "uio": "uio0", "disk": sdc,
        }])
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&f.lio(&["list", "--json", "--all"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert_eq!(json[1]["name"], "bare");
    assert_eq!(json[1]["size"], serde_json::Value::Null);
    assert_eq!(json[1]["enabled"], false);

    assert!(f
        .refused(&["list", "--all", "--subtype", "x"])
        .contains("cannot be used with"));
    assert!(Fake::bare()
        .refused(&["list"])
        .contains("configfs is not mounted on"));
}

#[test]
fn delete_removes_the_device_and_its_empty_hba() {
    let f = Fake::loaded();
    // What is left of a device whose attributes the kernel has gone: a bare
    // directory; plain rmdir must work on it.
    std::fs::create_dir_all(f.cfs("core/user_4/disk0")).unwrap();
    std::fs::create_dir_all(f.cfs("core/user_4/disk1")).unwrap();
    let out = f.lio(&["delete", "disk0"]);
    assert_eq!(stdout(&out), "deleted: disk0\n");
    assert!(!f.cfs("core/user_4/disk0").exists());
    assert!(f.cfs("core/user_4").is_dir(), "disk1 still uses user_4");
    assert_eq!(
        stdout(&f.lio(&["delete", "disk1", "--hba", "4"])),
        "deleted: disk1\n"
    );
    assert!(!f.cfs("core/user_4").exists());

    assert_eq!(
        f.refused(&["delete", "disk0"]),
        format!(
            "dataplane: error: no TCMU device named \"disk0\": no {}/user_*/disk0\n",
            f.cfs("core").display()
        )
    );
    assert_eq!(
        f.refused(&["delete", "disk0", "--hba", "2"]),
        format!(
            "dataplane: error: no TCMU device named \"disk0\": {} does not exist\n",
            f.cfs("core/user_2/disk0").display()
        )
    );
}

#[test]
fn not_root_is_refused() {
    // As root, the library test covers the message.
    if !can_run(&[Need::NotRoot]) {
        return;
    }
    let f = Fake::loaded();
    let stderr = f.refused(&["create", "disk0", "--bdev", "ram0", "--size", "64MiB"]);
    assert!(
        stderr.starts_with("dataplane: error: must run as root"),
        "{stderr}"
    );
    let stderr = f.refused(&["delete", "disk0"]);
    assert!(
        stderr.starts_with("dataplane: error: must run as root"),
        "{stderr}"
    );
}
