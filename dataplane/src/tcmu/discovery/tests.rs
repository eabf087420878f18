//! Discovery against fake sysfs/configfs/procfs trees: the UIO scan, the
//! device facts, the recovery actions and the fd holders.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::*;
use crate::kernfs::{Fs, FsOp, RealFs, Roots};

fn put(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn put_uio(roots: &Roots, minor: u32, name: &str, size: &str) {
    let dir = roots.uio_class_dir().join(format!("uio{minor}"));
    put(&dir.join("name"), &format!("{name}\n"));
    put(&dir.join("maps/map0/size"), &format!("{size}\n"));
}

#[test]
fn scan_lists_tcmu_devices_and_reports_unreadable_ones() {
    let tmp = TempDir::new().unwrap();
    let roots = Roots::under(tmp.path());
    put_uio(&roots, 10, "tcm-user/0/disk10/dataplane/ram1", "0x40800000");
    put_uio(&roots, 2, "tcm-user/1/disk2/dataplane/ram0", "8392704");
    put_uio(&roots, 3, "tcm-user/0/other/qcow/a/b", "0x1000");
    put_uio(&roots, 4, "tcm-user/0/raw", "0x1000");
    put_uio(&roots, 5, "some_other_driver", "garbage");
    // A TCMU device with a bad size, one without map0, one without name.
    put_uio(&roots, 6, "tcm-user/0/bad/dataplane/x", "12 MiB");
    put(
        &roots.uio_class_dir().join("uio7/name"),
        "tcm-user/0/nomap/dataplane/x\n",
    );
    std::fs::create_dir_all(roots.uio_class_dir().join("uio8")).unwrap();
    // Not uio<digits>: ignored.
    std::fs::create_dir_all(roots.uio_class_dir().join("uiox")).unwrap();

    let s = scan(&roots);
    let minors: Vec<u32> = s.devices.iter().map(|d| d.minor).collect();
    assert_eq!(minors, [2, 3, 4, 10]);
    let d = &s.devices[3];
    assert_eq!(d.map0_size, 0x4080_0000);
    assert_eq!(d.uio(), "uio10");
    assert_eq!(d.dev_node, tmp.path().join("dev/uio10"));
    assert_eq!(d.sysfs_dir, tmp.path().join("sys/class/uio/uio10"));
    assert_eq!((d.hba, d.device.as_str()), (0, "disk10"));
    assert_eq!(d.tcmu.as_ref().unwrap().cfg, "ram1");
    assert_eq!(s.devices[0].map0_size, 8_392_704);
    assert_eq!(s.devices[2].tcmu, None);
    assert_eq!(s.devices[2].device, "raw");

    let ours: Vec<&str> = s
        .with_subtype("dataplane")
        .map(|d| d.device.as_str())
        .collect();
    assert_eq!(ours, ["disk2", "disk10"]);
    assert_eq!(s.find(1, "disk2").unwrap().minor, 2);
    assert!(s.find(0, "disk2").is_none());

    let mut skipped: Vec<(String, String)> = s
        .skipped
        .iter()
        .map(|(p, e)| {
            (
                p.file_name().unwrap().to_str().unwrap().to_owned(),
                e.to_string(),
            )
        })
        .collect();
    skipped.sort();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert_eq!(skipped[0].0, "uio6");
    assert!(
        skipped[0]
            .1
            .contains("maps/map0/size: cannot parse \"12 MiB\""),
        "{skipped:?}"
    );
    assert_eq!(skipped[1].0, "uio7");
    assert!(skipped[1].1.contains("cannot read"), "{skipped:?}");
    assert!(skipped[1].1.contains("uio7/maps/map0/size"), "{skipped:?}");
    assert_eq!(skipped[2].0, "uio8");
    assert!(skipped[2].1.contains("uio8/name"), "{skipped:?}");

    assert_eq!(find_uio(&roots, 0, "disk10").unwrap().minor, 10);
    assert!(find_uio(&roots, 0, "nope").is_none());
}

#[test]
fn scan_without_uio_class_is_empty() {
    let tmp = TempDir::new().unwrap();
    let s = scan(&Roots::under(tmp.path()));
    assert!(s.devices.is_empty());
    assert!(s.skipped.is_empty());
}

fn put_device(roots: &Roots, hba: u32, name: &str) -> PathBuf {
    let dir = roots.device_dir(hba, name);
    put(&dir.join("attrib/hw_block_size"), "4096\n");
    put(&dir.join("attrib/hw_max_sectors"), "2048\n");
    put(&dir.join("attrib/dev_size"), "1073741824\n");
    put(&dir.join("attrib/cmd_time_out"), "30\n");
    put(&dir.join("attrib/max_data_area_mb"), "64\n");
    put(&dir.join("attrib/dev_config"), "dataplane/ram0\n");
    put(&dir.join("enable"), "1\n");
    put(
        &dir.join("info"),
        "Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 4096  HwMaxSectors: 2048\n        Config: dataplane/ram9 Size: 2147483648 MaxDataAreaMB: 64 DataPagesPerBlk: 1 CmdRingSizeMB: 8\n",
    );
    put(&dir.join("action/block_dev"), "");
    put(&dir.join("action/reset_ring"), "");
    dir
}

#[test]
fn device_facts_come_from_attrib() {
    let tmp = TempDir::new().unwrap();
    let roots = Roots::under(tmp.path());
    put_device(&roots, 1, "disk0");
    let f = device_facts(&roots, 1, "disk0").unwrap();
    assert_eq!(
        f,
        TcmuDeviceFacts {
            hw_block_size: 4096,
            hw_max_sectors: 2048,
            dev_size: 1 << 30,
            cmd_time_out: 30,
            max_data_area_mb: 64,
            enabled: true,
            dev_config: Some("dataplane/ram0".into()),
        }
    );
}

#[test]
fn device_facts_fall_back_to_info() {
    let tmp = TempDir::new().unwrap();
    let roots = Roots::under(tmp.path());
    let dir = put_device(&roots, 0, "disk0");
    std::fs::remove_file(dir.join("attrib/dev_size")).unwrap();
    std::fs::remove_file(dir.join("attrib/dev_config")).unwrap();
    put(&dir.join("enable"), "0\n");
    let f = device_facts(&roots, 0, "disk0").unwrap();
    assert_eq!(f.dev_size, 2 << 30);
    assert_eq!(f.dev_config.as_deref(), Some("dataplane/ram9"));
    assert!(!f.enabled);

    put(
        &dir.join("info"),
        "Status: DEACTIVATED SectorSize: 512 Config: NULL\n",
    );
    let err = device_facts(&roots, 0, "disk0").unwrap_err().to_string();
    assert!(err.contains("disk0/info"), "{err}");
    assert!(
        err.contains("no \"Size: N\" (and no attrib/dev_size)"),
        "{err}"
    );
    put(&dir.join("info"), "Config: NULL Size: 512\n");
    let f = device_facts(&roots, 0, "disk0").unwrap();
    assert_eq!((f.dev_size, f.dev_config), (512, None));
}

#[test]
fn device_facts_errors_name_the_file() {
    let tmp = TempDir::new().unwrap();
    let roots = Roots::under(tmp.path());
    let err = device_facts(&roots, 0, "ghost").unwrap_err().to_string();
    assert!(err.starts_with("cannot read "), "{err}");
    assert!(
        err.contains("core/user_0/ghost/attrib/hw_block_size"),
        "{err}"
    );

    let dir = put_device(&roots, 0, "disk0");
    put(&dir.join("attrib/hw_max_sectors"), "lots\n");
    let err = device_facts(&roots, 0, "disk0").unwrap_err().to_string();
    assert!(
        err.contains("attrib/hw_max_sectors: cannot parse \"lots\""),
        "{err}"
    );
    put(&dir.join("attrib/hw_max_sectors"), "0x100000000\n");
    let err = device_facts(&roots, 0, "disk0").unwrap_err().to_string();
    assert!(err.contains("does not fit in 32 bits"), "{err}");
    put(&dir.join("attrib/hw_max_sectors"), "8\n");
    put(&dir.join("enable"), "yes\n");
    let err = device_facts(&roots, 0, "disk0").unwrap_err().to_string();
    assert!(
        err.contains("enable: cannot parse \"yes\": expected 0 or 1"),
        "{err}"
    );
}

#[test]
fn recovery_actions_write_the_action_files() {
    let tmp = TempDir::new().unwrap();
    let roots = Roots::under(tmp.path());
    let dir = put_device(&roots, 2, "disk0");
    let fs = &mut RealFs;
    block_dev(fs, &roots, 2, "disk0", true).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("action/block_dev")).unwrap(),
        "1"
    );
    block_dev(fs, &roots, 2, "disk0", false).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("action/block_dev")).unwrap(),
        "0"
    );
    reset_ring(fs, &roots, 2, "disk0", RingReset::CheckCondition).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("action/reset_ring")).unwrap(),
        "2"
    );
    reset_ring(fs, &roots, 2, "disk0", RingReset::Busy).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("action/reset_ring")).unwrap(),
        "1"
    );

    // The attribute file must exist (configfs has no file creation).
    let err = reset_ring(fs, &roots, 2, "ghost", RingReset::Busy)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("cannot write \"1\" to "), "{err}");
    assert!(err.contains("user_2/ghost/action/reset_ring"), "{err}");
    assert!(!roots.device_dir(2, "ghost").exists());
}

/// Records the changes instead of making them.
#[derive(Default)]
struct Recorder(Vec<FsOp>);

impl Fs for Recorder {
    fn apply(&mut self, op: &FsOp) -> std::io::Result<()> {
        self.0.push(op.clone());
        Ok(())
    }
}

#[test]
fn recovery_actions_are_one_change_each() {
    let roots = Roots::default();
    let mut fs = Recorder::default();
    block_dev(&mut fs, &roots, 0, "d", true).unwrap();
    reset_ring(&mut fs, &roots, 0, "d", RingReset::Busy).unwrap();
    block_dev(&mut fs, &roots, 0, "d", false).unwrap();
    let dir = "/sys/kernel/config/target/core/user_0/d/action";
    assert_eq!(
        fs.0,
        [
            FsOp::write(format!("{dir}/block_dev"), "1"),
            FsOp::write(format!("{dir}/reset_ring"), "1"),
            FsOp::write(format!("{dir}/block_dev"), "0"),
        ]
    );
    assert_eq!(
        reset_ring_op(&roots, 0, "d", RingReset::CheckCondition),
        FsOp::write(format!("{dir}/reset_ring"), "2")
    );
}

#[test]
fn uio_holders_reads_proc_fd_links() {
    let tmp = TempDir::new().unwrap();
    let roots = Roots::under(tmp.path());
    let fd_dir = |pid: &str| {
        let d = roots.proc.join(pid).join("fd");
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    std::os::unix::fs::symlink(roots.uio_node(1), fd_dir("300").join("7")).unwrap();
    std::os::unix::fs::symlink("/dev/null", fd_dir("300").join("0")).unwrap();
    std::os::unix::fs::symlink(roots.uio_node(1), fd_dir("42").join("3")).unwrap();
    std::os::unix::fs::symlink(roots.uio_node(10), fd_dir("43").join("3")).unwrap();
    std::fs::create_dir_all(roots.proc.join("self")).unwrap();
    std::fs::create_dir_all(roots.proc.join("44")).unwrap(); // no fd dir
    assert_eq!(uio_holders(&roots, 1), [42, 300]);
    assert_eq!(uio_holders(&roots, 10), [43]);
    assert!(is_uio_open(&roots, 1));
    assert!(!is_uio_open(&roots, 0));
    assert!(!is_uio_open(&Roots::under(&tmp.path().join("nothing")), 1));
}
