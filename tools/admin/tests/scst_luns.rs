//! `admin::scst` (LUNs of registered devices) against a fake
//! kernel: a temporary tree laid out like /sys/kernel/scst_tgt, /sys and
//! /dev, and a [`FakeFs`] that records every write, with a [`Kernel`] model
//! that plays SCST's part (`luns/mgmt` add/del with their errnos, the
//! scst_local disk appearing, `delete` of a SCSI device, EAGAIN +
//! `last_sysfs_mgmt_res`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

use admin::scst::ScstAdminError;
use admin::scst::{AdminProgress, LunSpec, ScstAdmin};
use dataplane::kernfs::{FsOp, Roots};
use test_support::fake_fs::{errno, FakeFs, Kernel};

/// The fake kernel: SCST, scst_local and the SCSI layer.
struct FakeScst {
    roots: Roots,
    /// `add` fails with this errno (e.g. EFAULT: the handler did not answer
    /// ATTACH_SESS).
    add_errno: Option<i32>,
    /// Writes answer EAGAIN and the result shows up in
    /// `last_sysfs_mgmt_res` as this.
    eagain_result: Option<i32>,
    /// The scst_local disk appears on `add`.
    disk_appears: bool,
    next_disk: u8,
}

impl FakeScst {
    fn luns_mgmt(&mut self, luns: &Path, value: &str) -> io::Result<()> {
        let words: Vec<&str> = value.split_whitespace().collect();
        match words.as_slice() {
            ["add", device, lun] => {
                let dev_dir = self.roots.scst_devices_dir().join(device);
                if !dev_dir.is_dir() {
                    return Err(errno(libc::EINVAL));
                }
                let lun_dir = luns.join(lun);
                if lun_dir.exists() {
                    return Err(errno(libc::EEXIST));
                }
                if let Some(e) = self.add_errno {
                    return Err(errno(e));
                }
                std::fs::create_dir(&lun_dir).unwrap();
                std::os::unix::fs::symlink(&dev_dir, lun_dir.join("device")).unwrap();
                let exported = dev_dir.join("exported");
                std::fs::create_dir_all(&exported).unwrap();
                let k = std::fs::read_dir(&exported).unwrap().count();
                std::os::unix::fs::symlink(&lun_dir, exported.join(format!("export{k}"))).unwrap();
                // scst_local: every session's host scans the new LUN.
                let target_dir = luns.parent().unwrap();
                if self.disk_appears && target_dir.parent().unwrap().ends_with("scst_local") {
                    for sess in std::fs::read_dir(target_dir.join("sessions")).unwrap() {
                        let host = std::fs::read_link(sess.unwrap().path().join("host")).unwrap();
                        let h: u32 = host.file_name().unwrap().to_str().unwrap()[4..]
                            .parse()
                            .unwrap();
                        let name = format!("sd{}", char::from(b'a' + self.next_disk));
                        self.next_disk += 1;
                        let scsi = self.roots.scsi_devices_dir().join(format!("{h}:0:0:{lun}"));
                        std::fs::create_dir_all(scsi.join("block").join(&name)).unwrap();
                        std::fs::write(scsi.join("delete"), "").unwrap();
                        // scst_local's depth on kernels from 3.19 on.
                        std::fs::write(scsi.join("queue_depth"), "3\n").unwrap();
                        std::fs::write(self.roots.dev.join(&name), "").unwrap();
                    }
                }
                Ok(())
            }
            ["del", lun] => {
                let lun_dir = luns.join(lun);
                if !lun_dir.is_dir() {
                    return Err(errno(libc::EINVAL));
                }
                let dev = std::fs::read_link(lun_dir.join("device")).unwrap();
                for e in std::fs::read_dir(dev.join("exported")).unwrap() {
                    let e = e.unwrap();
                    if std::fs::read_link(e.path()).unwrap() == lun_dir {
                        std::fs::remove_file(e.path()).unwrap();
                    }
                }
                std::fs::remove_dir_all(&lun_dir).unwrap();
                Ok(())
            }
            _ => Err(errno(libc::EINVAL)),
        }
    }
}

impl Kernel for FakeScst {
    fn apply(&mut self, op: &FsOp) -> io::Result<()> {
        // `dataplane scst` only writes attributes.
        let FsOp::Write { path, value } = op else {
            return Err(errno(libc::EPERM));
        };
        let name = path.file_name().unwrap().to_str().unwrap();
        let result = match name {
            "mgmt" if path.parent().unwrap().ends_with("luns") => {
                let luns = path.parent().unwrap().to_path_buf();
                self.luns_mgmt(&luns, value)
            }
            "queue_depth" if value.parse::<u32>().is_ok_and(|d| d > 0) => {
                std::fs::write(path, format!("{value}\n")).unwrap();
                Ok(())
            }
            "delete" if value == "1" => {
                let scsi = path.parent().unwrap();
                for e in std::fs::read_dir(scsi.join("block")).unwrap() {
                    let _ = std::fs::remove_file(self.roots.dev.join(e.unwrap().file_name()));
                }
                std::fs::remove_dir_all(scsi).unwrap();
                Ok(())
            }
            _ => Err(errno(libc::ENOENT)),
        };
        match (self.eagain_result, name) {
            (Some(_), "mgmt") => {
                let code = match &result {
                    Ok(()) => 0,
                    Err(e) => -e.raw_os_error().unwrap(),
                };
                let forced = self.eagain_result.filter(|&r| r != 0).unwrap_or(code);
                std::fs::write(self.roots.scst_mgmt_result(), format!("{forced}\n")).unwrap();
                Err(errno(libc::EAGAIN))
            }
            _ => result,
        }
    }
}

/// A machine with SCST, scst_user device `disk0` (and vdisk `vd0`),
/// scst_local with its default target and one session on host 7, and an
/// iSCSI target.
struct Machine {
    _tmp: TempDir,
    admin: ScstAdmin<FakeFs<FakeScst>>,
    progress: Vec<String>,
}

const IQN: &str = "iqn.2026-01.example:t1";

impl Machine {
    fn new() -> Self {
        Self::with_euid(0)
    }

    fn with_euid(euid: u32) -> Self {
        let tmp = TempDir::new().unwrap();
        let base = tmp.path().to_path_buf();
        let roots = Roots::under(&base);
        let s = |rel: &str| roots.scst.join(rel);
        for dir in [
            "handlers/disk0",
            "handlers/ftgt0",
            "handlers/vdisk_fileio",
            "devices/disk0/exported",
            "devices/ftgt0/exported",
            "devices/vd0/exported",
            "sgv/dataplane.disk0",
            "sgv/ftgt0",
            "targets/scst_local/scst_local_tgt/luns",
            "targets/scst_local/scst_local_tgt/sessions/scst_local_host",
            &format!("targets/iscsi/{IQN}/luns"),
        ] {
            std::fs::create_dir_all(s(dir)).unwrap();
        }
        std::os::unix::fs::symlink(s("handlers/disk0"), s("devices/disk0/handler")).unwrap();
        std::fs::write(s("devices/disk0/commands"), "").unwrap();
        std::fs::write(s("devices/disk0/max_tgt_dev_commands"), "64\n").unwrap();
        // Another scst_user handler's device (fileio_tgt's): its pool has
        // the device's own name.
        std::os::unix::fs::symlink(s("handlers/ftgt0"), s("devices/ftgt0/handler")).unwrap();
        std::fs::write(s("devices/ftgt0/commands"), "").unwrap();
        std::os::unix::fs::symlink(s("handlers/vdisk_fileio"), s("devices/vd0/handler")).unwrap();
        std::fs::write(s("targets/scst_local/scst_local_tgt/luns/mgmt"), "").unwrap();
        std::fs::write(s(&format!("targets/iscsi/{IQN}/luns/mgmt")), "").unwrap();
        let host = base.join("sys/devices/platform/scst_local/host7");
        std::fs::create_dir_all(&host).unwrap();
        std::os::unix::fs::symlink(
            &host,
            s("targets/scst_local/scst_local_tgt/sessions/scst_local_host/host"),
        )
        .unwrap();
        std::fs::create_dir_all(roots.scsi_devices_dir()).unwrap();
        std::fs::create_dir_all(&roots.dev).unwrap();
        let fake = FakeScst {
            roots: roots.clone(),
            add_errno: None,
            eagain_result: None,
            disk_appears: true,
            next_disk: 0,
        };
        let mut admin = ScstAdmin::with_fs(roots, FakeFs::new(base, fake), euid);
        admin.timeout = Duration::from_millis(300);
        admin.mgmt_timeout = Duration::from_millis(300);
        admin.poll_interval = Duration::from_millis(5);
        Self {
            _tmp: tmp,
            admin,
            progress: Vec::new(),
        }
    }

    fn add(&mut self, spec: &LunSpec) -> Result<Vec<PathBuf>, ScstAdminError> {
        let mut lines = Vec::new();
        let out = self
            .admin
            .add_lun(spec, &mut |p: &AdminProgress| lines.push(p.to_string()));
        self.progress.extend(lines);
        out.map(|a| a.disks)
    }

    fn del(&mut self, device: &str, lun: Option<u64>) -> Result<Vec<u64>, ScstAdminError> {
        self.del_in(device, "scst_local", "scst_local_tgt", lun)
    }

    fn del_in(
        &mut self,
        device: &str,
        driver: &str,
        target: &str,
        lun: Option<u64>,
    ) -> Result<Vec<u64>, ScstAdminError> {
        let mut lines = Vec::new();
        let out = self.admin.del_lun(device, driver, target, lun, &mut |p| {
            lines.push(p.to_string())
        });
        self.progress.extend(lines);
        out
    }

    fn s(&self, rel: &str) -> PathBuf {
        self.admin.roots().scst.join(rel)
    }

    fn log(&self) -> Vec<String> {
        self.admin.fs().log().to_vec()
    }

    fn kernel(&mut self) -> &mut FakeScst {
        self.admin.fs_mut().kernel_mut()
    }
}

#[test]
fn add_lun_on_scst_local_reports_the_disk() {
    let mut m = Machine::new();
    let disks = m.add(&LunSpec::new("disk0")).unwrap();
    let sda = m.admin.roots().dev.join("sda");
    assert_eq!(disks, vec![sda.clone()]);
    assert_eq!(
        m.progress,
        vec![
            "lun: scst_local/scst_local_tgt/0".to_owned(),
            format!("disk: {}", sda.display()),
            format!("queue depth: {} 3 -> 64", sda.display()),
        ]
    );
    assert_eq!(
        m.log(),
        vec![
            "write sys/kernel/scst_tgt/targets/scst_local/scst_local_tgt/luns/mgmt add disk0 0",
            "write sys/bus/scsi/devices/7:0:0:0/queue_depth 64",
        ]
    );
    let depth = m
        .admin
        .roots()
        .scsi_devices_dir()
        .join("7:0:0:0/queue_depth");
    assert_eq!(std::fs::read_to_string(&depth).unwrap(), "64\n");
    assert_eq!(
        std::fs::read_link(m.s("targets/scst_local/scst_local_tgt/luns/0/device")).unwrap(),
        m.s("devices/disk0")
    );

    // A second LUN gets its own disk.
    let mut spec = LunSpec::new("disk0");
    spec.lun = 5;
    let disks = m.add(&spec).unwrap();
    assert_eq!(disks, vec![m.admin.roots().dev.join("sdb")]);

    // A device whose LUNs may hold no more than the disk already does: the
    // depth is left alone.
    std::fs::write(m.s("devices/disk0/max_tgt_dev_commands"), "3\n[key]\n").unwrap();
    m.progress.clear();
    spec.lun = 6;
    m.add(&spec).unwrap();
    assert_eq!(m.progress.len(), 2, "{:?}", m.progress);
    assert!(m.progress[1].starts_with("disk: "));

    // A refused write is reported, and the LUN stays added.
    std::fs::write(m.s("devices/disk0/max_tgt_dev_commands"), "64\n").unwrap();
    m.admin.fs_mut().fail_on(
        "write sys/bus/scsi/devices/7:0:0:7/queue_depth 64",
        libc::EACCES,
    );
    m.progress.clear();
    spec.lun = 7;
    let disks = m.add(&spec).unwrap();
    assert_eq!(disks.len(), 1);
    let line = &m.progress[2];
    assert!(
        line.starts_with(&format!(
            "queue depth: {} 3, not raised to 64: ",
            disks[0].display()
        )),
        "{line}"
    );
    assert!(
        line.contains("queue_depth"),
        "the error names the file: {line}"
    );
}

#[test]
fn add_lun_checks_in_order_and_touches_nothing_on_failure() {
    let mut m = Machine::new();
    // Not root.
    let mut user = Machine::with_euid(1000);
    assert_eq!(
        user.add(&LunSpec::new("disk0")).unwrap_err().to_string(),
        "must run as root (effective uid is 1000): /sys/kernel/scst_tgt is writable by root only"
    );
    // Device not registered.
    let e = m.add(&LunSpec::new("disk9")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "no SCST device named \"disk9\" ({} does not exist): is `dataplane serve` running \
             with an [[scst]] device named \"disk9\"?",
            m.s("devices/disk9").display()
        )
    );
    // Target missing (scst_local gives the add_target recipe).
    let mut spec = LunSpec::new("disk0");
    spec.target = "other_tgt".into();
    let e = m.add(&spec).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "SCST target driver scst_local has no target \"other_tgt\" ({} does not exist): \
             scst_local creates scst_local_tgt when loaded with add_default_tgt=1",
            m.s("targets/scst_local/other_tgt").display()
        )),
        "{e}"
    );
    assert!(e.contains("add_target other_tgt session_name=scst_local_host"));
    // Driver missing.
    let mut spec = LunSpec::new("disk0");
    spec.driver = "qla2x00t".into();
    assert_eq!(
        m.add(&spec).unwrap_err().to_string(),
        format!(
            "SCST target driver qla2x00t is not loaded ({} does not exist): modprobe qla2x00tgt",
            m.s("targets/qla2x00t").display()
        )
    );
    // Bad values.
    let mut spec = LunSpec::new("disk0");
    spec.lun = 20000;
    assert!(m
        .add(&spec)
        .unwrap_err()
        .to_string()
        .starts_with("LUN 20000 is out of range"));
    assert!(m.log().is_empty());

    // LUN in use, naming the device that has it.
    m.add(&LunSpec::new("disk0")).unwrap();
    let e = m.add(&LunSpec::new("disk0")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "LUN 0 of scst_local/scst_local_tgt is in use by device \"disk0\" ({}); choose \
             another --lun or remove it with `dataplane scst del-lun disk0 --driver scst_local \
             --target scst_local_tgt --lun 0`",
            m.s("targets/scst_local/scst_local_tgt/luns/0").display()
        )
    );
    // The first add's two writes (the LUN, its disk's queue depth) only.
    assert_eq!(m.log().len(), 2);
}

#[test]
fn scst_not_loaded_and_iscsi_driver_missing() {
    let mut m = Machine::new();
    std::fs::remove_dir_all(m.s("targets/iscsi")).unwrap();
    let mut spec = LunSpec::new("disk0");
    spec.driver = "iscsi".into();
    spec.target = IQN.into();
    assert!(m
        .add(&spec)
        .unwrap_err()
        .to_string()
        .ends_with("does not exist): modprobe iscsi-scst"));
    std::fs::remove_dir_all(&m.admin.roots().scst).unwrap();
    assert_eq!(
        m.add(&LunSpec::new("disk0")).unwrap_err().to_string(),
        format!(
            "SCST is not loaded ({} does not exist): modprobe scst",
            m.admin.roots().scst.display()
        )
    );
    assert!(matches!(
        m.admin.list(false).unwrap_err(),
        ScstAdminError::ScstNotLoaded { .. }
    ));
}

#[test]
fn a_handler_that_does_not_answer_attach_is_named() {
    let mut m = Machine::new();
    m.kernel().add_errno = Some(libc::EFAULT);
    let e = m.add(&LunSpec::new("disk0")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "writing \"add disk0 0\" to {} failed: Bad address (os error 14); the handler of \
             \"disk0\" did not answer ATTACH_SESS within 5 s: is `dataplane serve` running and \
             polling it?",
            m.s("targets/scst_local/scst_local_tgt/luns/mgmt").display()
        )
    );
    assert!(m.progress.is_empty());
}

#[test]
fn slow_mgmt_commands_are_polled_in_last_sysfs_mgmt_res() {
    let mut m = Machine::new();
    m.kernel().eagain_result = Some(0);
    m.add(&LunSpec::new("disk0")).unwrap();
    assert_eq!(m.progress[0], "lun: scst_local/scst_local_tgt/0");

    let mut m = Machine::new();
    m.kernel().eagain_result = Some(-libc::EBUSY);
    let e = m.add(&LunSpec::new("disk0")).unwrap_err().to_string();
    assert!(
        e.ends_with(
            "failed: Device or resource busy (os error 16); SCST could not suspend activity \
             within 90 s (a hung device?); try again"
        ),
        "{e}"
    );
}

#[test]
fn without_a_session_or_a_disk_the_lun_stays_and_says_so() {
    let mut m = Machine::new();
    std::fs::remove_dir_all(m.s("targets/scst_local/scst_local_tgt/sessions/scst_local_host"))
        .unwrap();
    let e = m.add(&LunSpec::new("disk0")).unwrap_err().to_string();
    assert!(
        e.starts_with(
            "LUN 0 was added, but target \"scst_local_tgt\" of scst_local has no session"
        ),
        "{e}"
    );
    assert!(e.contains("add_session scst_local_tgt scst_local_host"));

    let mut m = Machine::new();
    m.kernel().disk_appears = false;
    let e = m.add(&LunSpec::new("disk0")).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "LUN 0 of scst_local/scst_local_tgt was added but no disk appeared under {} within \
             0.3 s; the LUN is left in place (remove it with `dataplane scst del-lun disk0 \
             --target scst_local_tgt --lun 0`)",
            m.admin.roots().scsi_devices_dir().display()
        )
    );
    assert_eq!(m.progress, vec!["lun: scst_local/scst_local_tgt/0"]);
}

#[test]
fn iscsi_luns_have_no_local_disk() {
    let mut m = Machine::new();
    let mut spec = LunSpec::new("disk0");
    spec.driver = "iscsi".into();
    spec.target = IQN.into();
    assert!(m.add(&spec).unwrap().is_empty());
    assert_eq!(m.progress, vec![format!("lun: iscsi/{IQN}/0")]);
    let e = {
        let mut spec = spec.clone();
        spec.target = "iqn.none".into();
        m.add(&spec).unwrap_err().to_string()
    };
    assert!(
        e.contains("create it with `echo \"add_target iqn.none\" >"),
        "{e}"
    );
    assert!(e.ends_with("iscsi-scstd must be running"), "{e}");
    m.progress.clear();
    assert_eq!(m.del_in("disk0", "iscsi", IQN, None).unwrap(), vec![0]);
    assert_eq!(m.progress, vec![format!("deleted: iscsi/{IQN}/0")]);
}

#[test]
fn del_lun_removes_the_disk_first() {
    let mut m = Machine::new();
    m.add(&LunSpec::new("disk0")).unwrap();
    let mut spec = LunSpec::new("disk0");
    spec.lun = 2;
    m.add(&spec).unwrap();
    m.progress.clear();
    let dev = m.admin.roots().dev.clone();
    assert_eq!(m.del("disk0", None).unwrap(), vec![0, 2]);
    assert_eq!(
        m.progress,
        vec![
            format!("removed: {}", dev.join("sda").display()),
            "deleted: scst_local/scst_local_tgt/0".to_owned(),
            format!("removed: {}", dev.join("sdb").display()),
            "deleted: scst_local/scst_local_tgt/2".to_owned(),
        ]
    );
    // After the two adds' writes (each: the LUN, the disk's queue depth).
    assert_eq!(
        m.log()[4..],
        [
            "write sys/bus/scsi/devices/7:0:0:0/delete 1",
            "write sys/kernel/scst_tgt/targets/scst_local/scst_local_tgt/luns/mgmt del 0",
            "write sys/bus/scsi/devices/7:0:0:2/delete 1",
            "write sys/kernel/scst_tgt/targets/scst_local/scst_local_tgt/luns/mgmt del 2",
        ]
    );
    assert!(!dev.join("sda").exists());
    assert!(!m.s("targets/scst_local/scst_local_tgt/luns/0").exists());

    let e = m.del("disk0", None).unwrap_err().to_string();
    assert!(
        e.starts_with("device \"disk0\" is not a LUN of scst_local/scst_local_tgt"),
        "{e}"
    );
}

#[test]
fn del_lun_with_a_number_checks_whose_it_is() {
    let mut m = Machine::new();
    let mut spec = LunSpec::new("disk0");
    spec.lun = 1;
    m.add(&spec).unwrap();
    let e = m.del("other", Some(1)).unwrap_err().to_string();
    assert_eq!(
        e,
        "LUN 1 of scst_local/scst_local_tgt is device \"disk0\", not \"other\""
    );
    let e = m.del("disk0", Some(3)).unwrap_err().to_string();
    assert!(
        e.starts_with("LUN 3 of scst_local/scst_local_tgt does not exist"),
        "{e}"
    );
    assert_eq!(m.del("disk0", Some(1)).unwrap(), vec![1]);
    // Not root.
    let mut user = Machine::with_euid(7);
    assert!(matches!(
        user.del("disk0", Some(1)).unwrap_err(),
        ScstAdminError::NotRoot { euid: 7 }
    ));
}

#[test]
fn list_shows_scst_user_devices_and_their_luns() {
    let mut m = Machine::new();
    m.add(&LunSpec::new("disk0")).unwrap();
    let mut spec = LunSpec::new("disk0");
    spec.driver = "iscsi".into();
    spec.target = IQN.into();
    spec.lun = 3;
    m.add(&spec).unwrap();
    let devices = m.admin.list(false).unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].name, "disk0");
    assert_eq!(devices[0].handler.as_deref(), Some("disk0"));
    assert!(devices[0].scst_user);
    assert!(devices[0].dataplane);
    assert_eq!(
        devices[0].luns,
        vec![
            format!("iscsi/{IQN}/3"),
            "scst_local/scst_local_tgt/0".to_owned()
        ]
    );
    let all = m.admin.list(true).unwrap();
    let names: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["disk0", "ftgt0", "vd0"]);
    assert!(all[1].scst_user, "fileio_tgt's device is scst_user");
    assert!(!all[1].dataplane, "but not the dataplane's");
    assert_eq!(all[2].handler.as_deref(), Some("vdisk_fileio"));
    assert!(!all[2].scst_user);
    assert!(!all[2].dataplane);
    assert!(all[2].luns.is_empty());
    // Listing needs no root.
    let user = Machine::with_euid(1000);
    assert_eq!(user.admin.list(false).unwrap().len(), 1);
}

/// What `dataplane serve` runs after (re-)registering a device with
/// `[[scst.export]]`: adds the LUN once, finds it there the next time,
/// refuses a LUN another device holds and a missing target.
#[test]
fn export_lun_adds_once_then_finds_it() {
    use dataplane::scst::export::{export_lun, ExportError, Exported, LunAddress};
    use dataplane::scst::local_disk::{deepen_new_disks, NewDisks, QueueDepthChange};
    let mut m = Machine::new();
    let roots = m.admin.roots().clone();
    let at = LunAddress {
        driver: "scst_local".into(),
        target: "scst_local_tgt".into(),
        lun: 0,
    };
    let t = Duration::from_millis(300);
    let fs = m.admin.fs_mut();
    assert_eq!(
        export_lun(fs, &roots, "disk0", &at, t).unwrap(),
        Exported::Added
    );
    assert_eq!(
        export_lun(fs, &roots, "disk0", &at, t).unwrap(),
        Exported::AlreadyThere
    );
    assert_eq!(
        m.log(),
        vec!["write sys/kernel/scst_tgt/targets/scst_local/scst_local_tgt/luns/mgmt add disk0 0"],
        "one add"
    );
    // What serve does next for scst_local: the new disk gets its depth.
    let fs = m.admin.fs_mut();
    let report = deepen_new_disks(fs, &roots, "disk0", &at, t);
    assert_eq!(
        report,
        NewDisks {
            changes: vec![QueueDepthChange {
                disk: roots.dev.join("sda"),
                from: 3,
                to: 64,
                error: None,
            }],
            not_appeared: vec![],
        }
    );
    assert_eq!(
        deepen_new_disks(m.admin.fs_mut(), &roots, "disk0", &at, t),
        NewDisks::default(),
        "deep enough already"
    );
    // A LUN whose disk never shows up on the session's host (host7) is named.
    let elsewhere = LunAddress {
        lun: 7,
        ..at.clone()
    };
    assert_eq!(
        deepen_new_disks(m.admin.fs_mut(), &roots, "disk0", &elsewhere, t).not_appeared,
        vec![7],
        "the host whose disk did not appear"
    );
    let fs = m.admin.fs_mut();
    let taken = export_lun(fs, &roots, "vd0", &at, t).unwrap_err();
    assert!(
        matches!(&taken, ExportError::Taken { device, .. } if device == "disk0"),
        "{taken}"
    );
    let nowhere = LunAddress {
        target: "nosuch".into(),
        ..at.clone()
    };
    let missing = export_lun(fs, &roots, "disk0", &nowhere, t).unwrap_err();
    assert!(missing.to_string().starts_with("no target "), "{missing}");
    // The kernel's refusal comes back with the command.
    m.kernel().add_errno = Some(libc::EFAULT);
    let lun1 = LunAddress { lun: 1, ..at };
    let fs = m.admin.fs_mut();
    let refused = export_lun(fs, &roots, "disk0", &lun1, t).unwrap_err();
    assert!(
        refused.to_string().starts_with("`add disk0 1` to "),
        "{refused}"
    );
}
