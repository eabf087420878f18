//! `admin::lio` against a fake kernel: a temporary directory tree laid
//! out like configfs/sysfs/procfs, and a [`FakeFs`] that records every
//! change, with a [`Kernel`] model that plays LIO's part (default groups and
//! attribute files on mkdir, `control` parsing, the UIO device on `enable`,
//! the SCSI disk on LUN link, refusals where the kernel refuses).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

use admin::lio::{CreateSpec, Lio, LioError, Progress};
use dataplane::kernfs::{FsOp, Roots};
use dataplane::tcmu::discovery;
use test_support::fake_fs::{errno, snapshot, walk, FakeFs, Kernel};

/// `Lio` on the fake kernel.
type FakeLio = Lio<FakeFs<FakeKernel>>;

/// The pid the fake handler runs as.
const HANDLER_PID: u32 = 4242;

/// The fake kernel: LIO, TCMU, tcm_loop and the SCSI layer.
struct FakeKernel {
    roots: Roots,
    /// A handler opens each UIO device as soon as it appears.
    handler_attaches: bool,
    /// The SCSI disk appears when a LUN is linked.
    disk_appears: bool,
    /// `enable` creates the UIO device.
    uio_appears: bool,
    /// The handler dies while the LUN is being linked (after the scan sent
    /// its first commands).
    handler_dies_on_link: bool,
    /// `tpgt_N/address` reads this instead of `H:0:N`.
    address_override: Option<String>,
    /// Devices have `attrib/tmr_notification` (Linux 5.11+).
    tmr_notification: bool,
    /// Devices with SCSI commands in their ring that nobody will complete
    /// (linked while no handler had the UIO device open).
    stuck: BTreeSet<PathBuf>,
    next_minor: u32,
    next_host: u32,
    next_disk: u8,
}

impl FakeKernel {
    fn new(roots: Roots) -> Self {
        Self {
            roots,
            handler_attaches: true,
            disk_appears: true,
            uio_appears: true,
            handler_dies_on_link: false,
            address_override: None,
            tmr_notification: true,
            stuck: BTreeSet::new(),
            next_minor: 0,
            next_host: 2,
            next_disk: 0,
        }
    }

    fn rel<'a>(&self, p: &'a Path) -> &'a Path {
        p.strip_prefix(&self.roots.configfs).unwrap_or(p)
    }

    fn make_file(&mut self, path: PathBuf, content: &str) {
        std::fs::write(path, content).unwrap();
    }

    fn make_dir(&mut self, path: PathBuf) {
        std::fs::create_dir_all(path).unwrap();
    }

    /// Parts of `p` below the configfs root.
    fn parts(&self, p: &Path) -> Vec<String> {
        self.rel(p)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect()
    }

    /// The device directory a LUN link at `link` points at.
    fn links_to(&self, device: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.roots.configfs, &mut |p, kind| {
            if kind == 'l' && std::fs::read_link(p).is_ok_and(|t| t == device) {
                out.push(p.to_path_buf());
            }
        });
        out
    }

    fn mkdir(&mut self, p: &Path) -> io::Result<()> {
        std::fs::create_dir(p)?;
        let parts = self.parts(p);
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        match parts.as_slice() {
            ["core", hba] if hba.starts_with("user_") => {
                self.make_file(
                    p.join("hba_info"),
                    "HBA Index: 1 plugin: user version: v4.0\n",
                );
                self.make_file(p.join("hba_mode"), "0\n");
            }
            ["core", hba, _] if hba.starts_with("user_") => {
                for (file, content) in [
                    ("control", ""),
                    ("enable", "0\n"),
                    ("info", "Status: DEACTIVATED  Max Queue Depth: 0\n"),
                ] {
                    self.make_file(p.join(file), content);
                }
                for group in ["attrib", "action", "pr", "statistics", "alua", "wwn"] {
                    self.make_dir(p.join(group));
                }
                for (file, content) in [
                    ("hw_block_size", "512\n"),
                    ("hw_max_sectors", "128\n"),
                    ("dev_size", "0\n"),
                    ("dev_config", "\n"),
                    ("cmd_time_out", "30\n"),
                    ("qfull_time_out", "-1\n"),
                    ("max_data_area_mb", "1024\n"),
                    ("nl_reply_supported", "0\n"),
                ] {
                    self.make_file(p.join("attrib").join(file), content);
                }
                if self.tmr_notification {
                    self.make_file(p.join("attrib/tmr_notification"), "0\n");
                }
                for file in ["block_dev", "reset_ring", "free_kept_buf"] {
                    self.make_file(p.join("action").join(file), "");
                }
            }
            ["loopback"] => {
                self.make_dir(p.join("discovery_auth"));
                self.make_file(p.join("version"), "TCM Loopback Fabric module v2.1\n");
            }
            ["loopback", wwn] => {
                if !wwn.starts_with("naa.") {
                    std::fs::remove_dir(p)?;
                    return Err(errno(libc::EINVAL));
                }
                self.make_dir(p.join("fabric_statistics"));
                self.make_dir(p.join("param"));
                self.make_file(p.join("param/cmd_completion_affinity"), "-1\n");
            }
            ["loopback", _, tpgt] if tpgt.starts_with("tpgt_") => {
                for group in ["lun", "acls", "attrib", "auth", "np", "param"] {
                    self.make_dir(p.join(group));
                }
                let host = self.next_host;
                self.next_host += 1;
                let t = &tpgt["tpgt_".len()..];
                self.make_file(p.join("nexus"), "");
                let address = self
                    .address_override
                    .clone()
                    .unwrap_or_else(|| format!("{host}:0:{t}\n"));
                self.make_file(p.join("address"), &address);
                self.make_file(p.join("transport_status"), "online\n");
            }
            ["loopback", _, _, "lun", _] => {
                self.make_file(p.join("alua_tg_pt_gp"), "default_tg_pt_gp\n");
                self.make_dir(p.join("statistics"));
            }
            _ => {}
        }
        Ok(())
    }

    fn rmdir(&mut self, p: &Path) -> io::Result<()> {
        if is_kernel_made(p) {
            return Err(errno(libc::EPERM)); // default groups cannot go
        }
        let parts = self.parts(p);
        if parts.len() == 3 && parts[0] == "core" && !self.links_to(p).is_empty() {
            return Err(errno(libc::EBUSY));
        }
        // Anything the user made inside (other than kernel-made entries)
        // keeps the directory.
        let mut user_made = false;
        walk(p, &mut |q, _| {
            if !is_kernel_made(q) {
                user_made = true;
            }
        });
        if user_made {
            return Err(errno(libc::ENOTEMPTY));
        }
        std::fs::remove_dir_all(p)?;
        if parts.len() == 3 && parts[0] == "core" {
            // The UIO device goes with the TCMU device.
            self.remove_uio_of(p);
            self.stuck.remove(p);
        }
        Ok(())
    }

    fn remove_uio_of(&mut self, device_dir: &Path) {
        let parts = self.parts(device_dir);
        let prefix = format!(
            "tcm-user/{}/{}/",
            parts[1].trim_start_matches("user_"),
            parts[2]
        );
        for d in discovery::scan(&self.roots).devices {
            if format!("{}/", d.name).starts_with(&prefix) {
                std::fs::remove_dir_all(&d.sysfs_dir).unwrap();
                let _ = std::fs::remove_file(&d.dev_node);
            }
        }
    }

    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        if !path.is_file() {
            return Err(errno(libc::ENOENT));
        }
        let parts = self.parts(path);
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        match parts.as_slice() {
            ["core", _, _, "control"] => {
                let dir = path.parent().unwrap();
                let enabled = std::fs::read_to_string(dir.join("enable")).unwrap() == "1\n";
                let (key, val) = value.split_once('=').ok_or_else(|| errno(libc::EINVAL))?;
                if value.contains(',') {
                    return Err(errno(libc::EINVAL)); // the test wants one item per write
                }
                match key {
                    "dev_config" | "dev_size" | "hw_block_size" | "hw_max_sectors"
                    | "nl_reply_supported" => {}
                    "max_data_area_mb" if !enabled => {}
                    _ => return Err(errno(libc::EINVAL)),
                }
                std::fs::write(dir.join("attrib").join(key), format!("{val}\n"))?;
            }
            ["core", _, _, "attrib", "tmr_notification"] => match value {
                // The kernel's kstrtou8, then `val > 1` is EINVAL.
                "0" | "1" => std::fs::write(path, format!("{value}\n"))?,
                _ => return Err(errno(libc::EINVAL)),
            },
            ["core", _, _, "attrib", "cmd_time_out"] => {
                let dir = path.parent().unwrap().parent().unwrap();
                if !self.links_to(dir).is_empty() {
                    return Err(errno(libc::EINVAL)); // cannot change while exported
                }
                std::fs::write(path, format!("{value}\n"))?;
            }
            ["core", hba, name, "enable"] => {
                if value != "1" {
                    return Err(errno(libc::EINVAL));
                }
                if std::fs::read_to_string(path)? == "1\n" {
                    return Err(errno(libc::EEXIST));
                }
                std::fs::write(path, "1\n")?;
                if self.uio_appears {
                    let dir = path.parent().unwrap();
                    let dev_config =
                        std::fs::read_to_string(dir.join("attrib/dev_config")).unwrap();
                    let minor = self.next_minor;
                    self.next_minor += 1;
                    let uio = self.roots.uio_class_dir().join(format!("uio{minor}"));
                    std::fs::create_dir_all(uio.join("maps/map0")).unwrap();
                    let hba = hba.trim_start_matches("user_");
                    std::fs::write(
                        uio.join("name"),
                        format!("tcm-user/{hba}/{name}/{}\n", dev_config.trim_end()),
                    )
                    .unwrap();
                    std::fs::write(uio.join("maps/map0/size"), "0x40800000\n").unwrap();
                    std::fs::create_dir_all(&self.roots.dev).unwrap();
                    std::fs::write(self.roots.uio_node(minor), "").unwrap();
                    if self.handler_attaches {
                        attach_handler(&self.roots, minor);
                    }
                }
            }
            ["core", _, _, "action", "reset_ring"] => {
                if value != "1" && value != "2" {
                    return Err(errno(libc::EINVAL));
                }
                self.stuck.remove(path.parent().unwrap().parent().unwrap());
                std::fs::write(path, value)?;
            }
            ["loopback", _, "param", "cmd_completion_affinity"] => {
                // The kernel's values: -1, -2 or an online CPU (0-3 here).
                match value.parse::<i32>() {
                    Ok(-2..=3) => std::fs::write(path, format!("{value}\n"))?,
                    _ => return Err(errno(libc::EINVAL)),
                }
            }
            ["loopback", _, _, "nexus"] => {
                if !std::fs::read_to_string(path)?.is_empty() {
                    return Err(errno(libc::EEXIST));
                }
                if !value.starts_with("naa.") {
                    return Err(errno(libc::EINVAL));
                }
                std::fs::write(path, format!("{value}\n"))?;
            }
            _ => std::fs::write(path, value)?,
        }
        Ok(())
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        let parts = self.parts(link);
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let ["loopback", _, _, "lun", lun, _] = parts.as_slice() else {
            return Err(errno(libc::EPERM));
        };
        std::os::unix::fs::symlink(target, link)?;
        let address = link.parent().unwrap().parent().unwrap().parent().unwrap();
        let address = std::fs::read_to_string(address.join("address")).unwrap();
        let hctl = format!("{}:{}", address.trim_end(), lun.trim_start_matches("lun_"));
        let minor = discovery::scan(&self.roots)
            .devices
            .into_iter()
            .find(|d| self.roots.device_dir(d.hba, &d.device) == target)
            .map(|d| d.minor);
        let mut handled = minor.is_some_and(|m| discovery::is_uio_open(&self.roots, m));
        if self.handler_dies_on_link {
            detach_handler(&self.roots);
            handled = false;
        }
        if !handled {
            self.stuck.insert(target.to_path_buf());
        }
        if self.disk_appears && handled {
            let disk = format!("sd{}", char::from(b'a' + self.next_disk));
            self.next_disk += 1;
            let block = self
                .roots
                .sysfs
                .join("bus/scsi/devices")
                .join(hctl)
                .join("block");
            std::fs::create_dir_all(block.join(&disk)).unwrap();
            std::fs::write(self.roots.dev.join(&disk), "").unwrap();
        }
        Ok(())
    }

    fn unlink(&mut self, link: &Path) -> io::Result<()> {
        let target = std::fs::read_link(link)?;
        if self.stuck.contains(&target) {
            // The kernel would wait for the ring's commands forever.
            return Err(errno(libc::EDEADLK));
        }
        std::fs::remove_file(link)?;
        let address = link.parent().unwrap().parent().unwrap().parent().unwrap();
        let address = std::fs::read_to_string(address.join("address")).unwrap();
        let lun = link
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let hctl = format!("{}:{}", address.trim_end(), lun.trim_start_matches("lun_"));
        let scsi = self.roots.sysfs.join("bus/scsi/devices").join(hctl);
        if let Ok(disks) = std::fs::read_dir(scsi.join("block")) {
            for disk in disks.flatten() {
                let _ = std::fs::remove_file(self.roots.dev.join(disk.file_name()));
            }
        }
        let _ = std::fs::remove_dir_all(scsi);
        Ok(())
    }
}

impl Kernel for FakeKernel {
    fn apply(&mut self, op: &FsOp) -> io::Result<()> {
        match op {
            FsOp::Mkdir(p) => self.mkdir(p),
            FsOp::Rmdir(p) => self.rmdir(p),
            FsOp::Write { path, value } => self.write(path, value),
            FsOp::Symlink { target, link } => self.symlink(target, link),
            FsOp::Unlink(p) => self.unlink(p),
        }
    }
}

/// The kernel's default groups (directories users cannot make or remove).
const DEFAULT_GROUPS: [&str; 13] = [
    "attrib",
    "action",
    "pr",
    "statistics",
    "alua",
    "wwn",
    "lun",
    "acls",
    "auth",
    "np",
    "param",
    "fabric_statistics",
    "discovery_auth",
];

/// Whether the kernel made `p`: configfs users can make only directories
/// and symlinks, so every regular file is an attribute; directories with a
/// default group's name are default groups.
fn is_kernel_made(p: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return false;
    };
    meta.is_file()
        || (meta.is_dir()
            && p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| DEFAULT_GROUPS.contains(&n)))
}

/// Makes the fake handler hold `/dev/uio<minor>` open.
fn attach_handler(roots: &Roots, minor: u32) {
    let fd_dir = roots.proc.join(HANDLER_PID.to_string()).join("fd");
    std::fs::create_dir_all(&fd_dir).unwrap();
    std::os::unix::fs::symlink(roots.uio_node(minor), fd_dir.join((10 + minor).to_string()))
        .unwrap();
}

/// Makes the fake handler close every fd.
fn detach_handler(roots: &Roots) {
    let _ = std::fs::remove_dir_all(roots.proc.join(HANDLER_PID.to_string()));
}

/// A machine with configfs mounted and target_core_user and tcm_loop
/// loaded, no TCMU device yet.
struct Machine {
    tmp: TempDir,
    roots: Roots,
}

impl Machine {
    fn new() -> Self {
        let tmp = TempDir::new().unwrap();
        let roots = Roots::under(tmp.path());
        for dir in [
            roots.core_dir(),
            roots.module_dir("target_core_user"),
            roots.module_dir("tcm_loop"),
            roots.uio_class_dir(),
            roots.dev.clone(),
            roots.proc.join("self"),
            roots.proc.join("1/fd"),
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(
            roots.proc.join("self/mounts"),
            format!(
                "sysfs {} sysfs rw 0 0\nconfigfs {} configfs rw 0 0\n",
                roots.sysfs.display(),
                roots.configfs.parent().unwrap().display()
            ),
        )
        .unwrap();
        Self { tmp, roots }
    }

    fn lio(&self) -> FakeLio {
        self.lio_as(0)
    }

    /// `Lio` running as `euid`, on a fresh fake (empty log).
    fn lio_as(&self, euid: u32) -> FakeLio {
        let fs = FakeFs::new(&self.roots.configfs, FakeKernel::new(self.roots.clone()));
        let mut lio = Lio::with_fs(self.roots.clone(), fs, euid);
        lio.poll_interval = Duration::from_millis(1);
        lio
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.roots.configfs.join(rel)
    }
}

fn create(
    lio: &mut FakeLio,
    spec: &CreateSpec,
) -> (Result<admin::lio::Created, LioError>, Vec<String>) {
    let mut lines = Vec::new();
    let result = lio.create(spec, &mut |p: &Progress| lines.push(p.to_string()));
    (result, lines)
}

fn spec() -> CreateSpec {
    let mut s = CreateSpec::new("disk0", "ram0", 1 << 30);
    s.block_size = 4096;
    s
}

fn loopback_spec() -> CreateSpec {
    let mut s = spec();
    s.loopback = true;
    s.wwn = Some("naa.5001405000000010".into());
    s
}

const BACKSTORE_STEPS: [&str; 11] = [
    "mkdir core/user_0",
    "mkdir core/user_0/disk0",
    "write core/user_0/disk0/control dev_config=dataplane/ram0",
    "write core/user_0/disk0/control dev_size=1073741824",
    "write core/user_0/disk0/control hw_block_size=4096",
    // 1 MiB, the LUN's default transfer, in 4 KiB blocks.
    "write core/user_0/disk0/control hw_max_sectors=256",
    "write core/user_0/disk0/control nl_reply_supported=-1",
    "write core/user_0/disk0/control max_data_area_mb=64",
    "write core/user_0/disk0/attrib/cmd_time_out 30",
    "write core/user_0/disk0/attrib/tmr_notification 1",
    "write core/user_0/disk0/enable 1",
];

const LOOPBACK_STEPS: [&str; 5] = [
    "mkdir loopback/naa.5001405000000010",
    "mkdir loopback/naa.5001405000000010/tpgt_1",
    "mkdir loopback/naa.5001405000000010/tpgt_1/lun/lun_0",
    "write loopback/naa.5001405000000010/tpgt_1/nexus naa.5001405000000011",
    "symlink loopback/naa.5001405000000010/tpgt_1/lun/lun_0/disk0 -> core/user_0/disk0",
];

#[test]
fn create_writes_the_documented_sequence() {
    let m = Machine::new();
    let mut lio = m.lio();
    let (result, lines) = create(&mut lio, &spec());
    let created = result.unwrap();
    assert_eq!(lio.fs().log(), BACKSTORE_STEPS);
    assert_eq!(lines, ["uio: uio0"]);
    assert_eq!(created.uio, "uio0");
    assert_eq!(created.device_dir, m.path("core/user_0/disk0"));
    assert_eq!(created.loopback, None);

    // What serve will read back.
    let facts = discovery::device_facts(&m.roots, 0, "disk0").unwrap();
    assert_eq!(facts.hw_block_size, 4096);
    assert_eq!(facts.hw_max_sectors, 256);
    assert_eq!(facts.dev_size, 1 << 30);
    assert_eq!(facts.max_data_area_mb, 64);
    assert_eq!(facts.cmd_time_out, 30);
    assert!(facts.enabled);
    assert_eq!(facts.dev_config.as_deref(), Some("dataplane/ram0"));
    let uio = discovery::find_uio(&m.roots, 0, "disk0").unwrap();
    assert_eq!(uio.tcmu.unwrap().bdev().unwrap(), "ram0");
    assert_eq!(
        std::fs::read_to_string(m.path("core/user_0/disk0/attrib/nl_reply_supported")).unwrap(),
        "-1\n"
    );

    // A second device in the same HBA does not mkdir user_0 again.
    let mut second = CreateSpec::new("disk1", "ram1", 1 << 20);
    second.hba = 0;
    second.subtype = "other".into();
    second.max_sectors = Some(256);
    second.max_data_area_mb = 8;
    second.cmd_time_out = 0;
    let mut lio = m.lio();
    lio.fs_mut().kernel_mut().next_minor = 1;
    let (result, lines) = create(&mut lio, &second);
    result.unwrap();
    assert_eq!(lines, ["uio: uio1"]);
    assert_eq!(
        lio.fs().log(),
        [
            "mkdir core/user_0/disk1",
            "write core/user_0/disk1/control dev_config=other/ram1",
            "write core/user_0/disk1/control dev_size=1048576",
            "write core/user_0/disk1/control hw_block_size=512",
            "write core/user_0/disk1/control hw_max_sectors=256",
            "write core/user_0/disk1/control nl_reply_supported=-1",
            "write core/user_0/disk1/control max_data_area_mb=8",
            "write core/user_0/disk1/attrib/cmd_time_out 0",
            "write core/user_0/disk1/attrib/tmr_notification 1",
            "write core/user_0/disk1/enable 1",
        ]
    );
}

#[test]
fn create_turns_tmr_notification_on_so_aborts_reach_the_handler() {
    let m = Machine::new();
    let mut lio = m.lio();
    create(&mut lio, &spec()).0.unwrap();
    assert_eq!(
        std::fs::read_to_string(m.path("core/user_0/disk0/attrib/tmr_notification")).unwrap(),
        "1\n"
    );
}

#[test]
fn create_on_a_kernel_without_tmr_notification_says_so_and_goes_on() {
    let m = Machine::new();
    let mut lio = m.lio();
    lio.fs_mut().kernel_mut().tmr_notification = false;
    let (result, lines) = create(&mut lio, &spec());
    result.unwrap();
    assert_eq!(
        lines,
        [
            "note: this kernel has no attrib/tmr_notification (Linux < 5.11); \
             task aborts will not reach the handler",
            "uio: uio0"
        ]
    );
    let expected: Vec<&str> = BACKSTORE_STEPS
        .iter()
        .copied()
        .filter(|step| !step.contains("tmr_notification"))
        .collect();
    assert_eq!(lio.fs().log(), expected);
}

#[test]
fn create_with_loopback_links_a_lun_and_reports_the_disk() {
    let m = Machine::new();
    let mut lio = m.lio();
    let (result, lines) = create(&mut lio, &loopback_spec());
    let created = result.unwrap();
    let mut expected: Vec<&str> = BACKSTORE_STEPS.to_vec();
    expected.push("mkdir loopback");
    expected.extend(LOOPBACK_STEPS);
    assert_eq!(lio.fs().log(), expected);
    let disk = m.roots.dev.join("sda");
    assert_eq!(
        lines,
        ["uio: uio0".to_owned(), format!("disk: {}", disk.display())]
    );
    let lun = created.loopback.unwrap();
    assert_eq!(lun.wwn, "naa.5001405000000010");
    assert_eq!(lun.scsi_address, "2:0:1:0");
    assert_eq!(lun.disk, disk);
    assert_eq!(
        lun.lun_dir,
        m.path("loopback/naa.5001405000000010/tpgt_1/lun/lun_0")
    );
    assert_eq!(
        std::fs::read_link(lun.lun_dir.join("disk0")).unwrap(),
        m.path("core/user_0/disk0")
    );

    // A second device on the same WWN reuses the TPG and its nexus and takes
    // the next LUN.
    let mut second = loopback_spec();
    second.name = "disk1".into();
    second.bdev = "ram1".into();
    let mut lio = m.lio();
    lio.fs_mut().kernel_mut().next_minor = 1;
    lio.fs_mut().kernel_mut().next_disk = 1;
    let (result, lines) = create(&mut lio, &second);
    let lun = result.unwrap().loopback.unwrap();
    assert_eq!(lun.scsi_address, "2:0:1:1");
    assert_eq!(
        lines[1],
        format!("disk: {}", m.roots.dev.join("sdb").display())
    );
    assert_eq!(
        &lio.fs().log()[9..],
        [
            "write core/user_0/disk1/enable 1",
            "mkdir loopback/naa.5001405000000010/tpgt_1/lun/lun_1",
            "symlink loopback/naa.5001405000000010/tpgt_1/lun/lun_1/disk1 -> core/user_0/disk1",
        ]
    );
}

#[test]
fn completion_cpu_is_written_to_the_target_and_checked() {
    use admin::lio::CompletionCpu;
    let m = Machine::new();
    let mut lio = m.lio();
    let (result, _) = create(&mut lio, &loopback_spec());
    result.unwrap();
    let attr = "loopback/naa.5001405000000010/param/cmd_completion_affinity";
    assert!(
        !lio.fs()
            .log()
            .iter()
            .any(|l| l.contains("cmd_completion_affinity")),
        "the default writes nothing"
    );

    let m = Machine::new();
    let mut lio = m.lio();
    let mut s = loopback_spec();
    s.completion_cpu = CompletionCpu::Completer;
    let (result, _) = create(&mut lio, &s);
    result.unwrap();
    let log = lio.fs().log();
    let at = log
        .iter()
        .position(|l| l == &format!("write {attr} -2"))
        .unwrap();
    assert_eq!(log[at - 1], "mkdir loopback/naa.5001405000000010");
    assert_eq!(std::fs::read_to_string(m.path(attr)).unwrap(), "-2\n");

    // A kernel without the attribute (before 5.14): refused, rolled back.
    let m = Machine::new();
    let mut lio = m.lio();
    std::fs::create_dir_all(m.path("loopback/naa.5001405000000010")).unwrap();
    let mut s = loopback_spec();
    s.completion_cpu = CompletionCpu::Cpu(1);
    let (result, _) = create(&mut lio, &s);
    let e = result.unwrap_err().to_string();
    assert!(
        e.contains("cmd_completion_affinity came with Linux 5.14"),
        "{e}"
    );
    assert!(!m.path("core/user_0/disk0").exists(), "rolled back");

    assert_eq!("completer".parse(), Ok(CompletionCpu::Completer));
    assert_eq!("submitter".parse(), Ok(CompletionCpu::Submitter));
    assert_eq!("3".parse(), Ok(CompletionCpu::Cpu(3)));
    assert!("-2"
        .parse::<CompletionCpu>()
        .unwrap_err()
        .contains("a CPU number"));
}

#[test]
fn default_wwn_is_derived_from_the_name() {
    let m = Machine::new();
    let mut lio = m.lio();
    let mut s = loopback_spec();
    s.wwn = None;
    let (result, _) = create(&mut lio, &s);
    let wwn = result.unwrap().loopback.unwrap().wwn;
    assert_eq!(wwn, admin::lio::default_wwn(0, "disk0"));
    assert!(lio.fs().log().contains(&format!("mkdir loopback/{wwn}")));
    assert!(lio.fs().log().contains(&format!(
        "write loopback/{wwn}/tpgt_1/nexus {}",
        admin::lio::initiator_wwn(&wwn)
    )));
}

#[test]
fn every_failing_step_is_rolled_back() {
    let mut all: Vec<&str> = BACKSTORE_STEPS.to_vec();
    all.extend(LOOPBACK_STEPS);
    for (i, step) in all.iter().enumerate() {
        let m = Machine::new();
        // The fabric directory exists already (it is never removed).
        FakeKernel::new(m.roots.clone())
            .mkdir(&m.roots.loopback_dir())
            .unwrap();
        let before = snapshot(m.tmp.path());
        let mut lio = m.lio();
        lio.fs_mut().fail_on(*step, libc::EINVAL);
        let (result, _) = create(&mut lio, &loopback_spec());
        let err = result.unwrap_err();
        let msg = err.to_string();
        let LioError::RolledBack { cause, rollback } = &err else {
            panic!("{step}: not rolled back: {msg}");
        };
        assert!(matches!(**cause, LioError::Step { .. }), "{msg}");
        assert!(rollback.failed.is_empty(), "{msg}");
        assert!(
            msg.contains("failed: Invalid argument (os error 22)"),
            "{msg}"
        );

        // The log is the steps up to the failing one, then their undo in
        // reverse order (a LUN link first gets its ring reset if nobody
        // handles it; here the handler is attached, so no reset).
        let mut expected: Vec<String> = all[..i].iter().map(|s| s.to_string()).collect();
        expected.push(format!("{step} FAILED"));
        let undo: Vec<String> = all[..i]
            .iter()
            .rev()
            .filter_map(|s| {
                let (verb, rest) = s.split_once(' ').unwrap();
                match verb {
                    "mkdir" => Some(format!("rmdir {rest}")),
                    "symlink" => Some(format!("unlink {}", rest.split_once(" -> ").unwrap().0)),
                    _ => None,
                }
            })
            .collect();
        expected.extend(undo.iter().cloned());
        assert_eq!(lio.fs().log(), expected, "failing at {step}");
        assert_eq!(rollback.undone.len(), undo.len());
        if undo.is_empty() {
            assert!(msg.ends_with("; nothing to undo"), "{msg}");
        } else {
            assert!(msg.contains("; undone: rmdir "), "{msg}");
        }
        if step.starts_with("write core/user_0/disk0/control") {
            let value = step.rsplit_once(' ').unwrap().1;
            assert!(msg.contains(&format!("write {value:?} to ")), "{msg}");
            assert!(msg.contains("core/user_0/disk0/control failed"), "{msg}");
        }
        if *step == "mkdir core/user_0" {
            assert!(msg.contains("target_core_user"), "{msg}");
        }
        // The machine is as before (the fake removes the UIO device with
        // its TCMU device, and the handler's fd link stays in /proc).
        detach_handler(&m.roots);
        assert_eq!(snapshot(m.tmp.path()), before, "failing at {step}");
    }
}

#[test]
fn a_failure_after_the_link_resets_an_unattended_ring_before_unlinking() {
    let m = Machine::new();
    let mut lio = m.lio();
    lio.fs_mut().kernel_mut().address_override = Some("garbage\n".into());
    lio.fs_mut().kernel_mut().handler_dies_on_link = true;
    let (result, lines) = create(&mut lio, &loopback_spec());
    let msg = result.unwrap_err().to_string();
    assert_eq!(lines, ["uio: uio0"]);
    assert!(
        msg.starts_with(&format!(
            "{}: cannot parse \"garbage\": expected the SCSI address H:C:T; undone: write \"2\" to ",
            m.path("loopback/naa.5001405000000010/tpgt_1/address").display()
        )),
        "{msg}"
    );
    let mut expected: Vec<&str> = BACKSTORE_STEPS.to_vec();
    expected.push("mkdir loopback");
    expected.extend(LOOPBACK_STEPS);
    expected.extend([
        "write core/user_0/disk0/action/reset_ring 2",
        "unlink loopback/naa.5001405000000010/tpgt_1/lun/lun_0/disk0",
        "rmdir loopback/naa.5001405000000010/tpgt_1/lun/lun_0",
        "rmdir loopback/naa.5001405000000010/tpgt_1",
        "rmdir loopback/naa.5001405000000010",
        "rmdir core/user_0/disk0",
        "rmdir core/user_0",
    ]);
    assert_eq!(lio.fs().log(), expected);

    // With the handler still there, the ring is left alone.
    let m = Machine::new();
    let mut lio = m.lio();
    lio.fs_mut().kernel_mut().address_override = Some("1:0\n".into());
    let (result, _) = create(&mut lio, &loopback_spec());
    let msg = result.unwrap_err().to_string();
    assert!(msg.contains("cannot parse \"1:0\""), "{msg}");
    assert_eq!(
        lio.fs().log()[BACKSTORE_STEPS.len() + 1 + LOOPBACK_STEPS.len()],
        "unlink loopback/naa.5001405000000010/tpgt_1/lun/lun_0/disk0"
    );
}

#[test]
fn create_checks_come_first_and_change_nothing() {
    let m = Machine::new();
    let refused = |lio: &mut FakeLio, s: &CreateSpec| -> String {
        let (result, lines) = create(lio, s);
        assert!(lines.is_empty());
        assert!(lio.fs().log().is_empty(), "{:?}", lio.fs().log());
        result.unwrap_err().to_string()
    };

    let mut lio = m.lio_as(1000);
    assert_eq!(
        refused(&mut lio, &spec()),
        "must run as root (effective uid is 1000): LIO's configfs is writable by root only"
    );

    let mut lio = m.lio();
    let mut s = spec();
    s.size = 4096 * 10 + 512;
    assert_eq!(
        refused(&mut lio, &s),
        "size 41472 is not a multiple of the block size 4096"
    );
    let mut s = spec();
    s.bdev = "ram:0".into();
    assert!(refused(&mut lio, &s).starts_with("bdev name \"ram:0\" contains ':'"));
    let mut s = loopback_spec();
    s.wwn = Some("naa.12".into());
    assert!(refused(&mut lio, &s).contains("naa.<16 hex digits>"));

    // Name in use.
    std::fs::create_dir_all(m.path("core/user_0/disk0")).unwrap();
    let msg = refused(&mut lio, &spec());
    assert_eq!(
        msg,
        format!(
            "TCMU device name \"disk0\" is already in use: {} exists",
            m.path("core/user_0/disk0").display()
        )
    );
    std::fs::remove_dir_all(m.path("core/user_0")).unwrap();

    // tcm_loop missing (only matters with loopback).
    std::fs::remove_dir(m.roots.module_dir("tcm_loop")).unwrap();
    let msg = refused(&mut lio, &loopback_spec());
    assert!(
        msg.starts_with("kernel module tcm_loop is not loaded (neither "),
        "{msg}"
    );
    assert!(
        msg.ends_with("exists): load it with `modprobe tcm_loop`"),
        "{msg}"
    );

    // target_core_user missing.
    std::fs::remove_dir(m.roots.module_dir("target_core_user")).unwrap();
    let msg = refused(&mut lio, &spec());
    assert_eq!(
        msg,
        format!(
            "kernel module target_core_user is not loaded ({} does not exist): load it with \
             `modprobe target_core_user`",
            m.roots.module_dir("target_core_user").display()
        )
    );
    // ... unless a user_N HBA exists (only a loaded backend allows that).
    std::fs::create_dir_all(m.path("core/user_7")).unwrap();
    let (result, _) = create(&mut m.lio(), &spec());
    result.unwrap();

    // target_core_mod missing: configfs mounted, no target/.
    let m = Machine::new();
    let mut lio = m.lio();
    std::fs::remove_dir_all(&m.roots.configfs).unwrap();
    let msg = refused(&mut lio, &spec());
    let mount_point = m.roots.configfs.parent().unwrap();
    assert_eq!(
        msg,
        format!(
            "kernel module target_core_mod is not loaded (configfs is mounted on {} but {} does \
             not exist): load it with `modprobe target_core_mod`",
            mount_point.display(),
            m.roots.configfs.display()
        )
    );
    // configfs not mounted.
    std::fs::write(
        m.roots.proc.join("self/mounts"),
        "sysfs /sys sysfs rw 0 0\n",
    )
    .unwrap();
    let msg = refused(&mut lio, &spec());
    assert_eq!(
        msg,
        format!(
            "configfs is not mounted on {0} ({1} does not exist): mount it with \
             `mount -t configfs none {0}`",
            mount_point.display(),
            m.roots.configfs.display()
        )
    );
    std::fs::remove_dir_all(mount_point).unwrap();
    assert!(refused(&mut lio, &spec())
        .ends_with("(and `modprobe configfs` first: the mount point is missing too)"));
    // target/ without core/.
    std::fs::create_dir_all(&m.roots.configfs).unwrap();
    assert!(refused(&mut lio, &spec()).starts_with("kernel module target_core_mod is not loaded ("));
}

#[test]
fn no_uio_device_rolls_back() {
    let m = Machine::new();
    let mut lio = m.lio();
    lio.uio_timeout = Duration::ZERO;
    lio.fs_mut().kernel_mut().uio_appears = false;
    let (result, lines) = create(&mut lio, &spec());
    let msg = result.unwrap_err().to_string();
    assert!(lines.is_empty());
    assert!(
        msg.starts_with("no UIO device named tcm-user/0/disk0/... appeared under "),
        "{msg}"
    );
    assert!(
        msg.contains(" within 0 s after enable (is the uio module loaded?); undone: rmdir "),
        "{msg}"
    );
    assert_eq!(
        lio.fs().log()[BACKSTORE_STEPS.len()..],
        ["rmdir core/user_0/disk0", "rmdir core/user_0"]
    );
    assert!(!m.path("core/user_0").exists());
}

#[test]
fn no_handler_means_no_lun_and_a_hint() {
    let m = Machine::new();
    let mut lio = m.lio();
    lio.timeout = Duration::ZERO;
    lio.fs_mut().kernel_mut().handler_attaches = false;
    let (result, lines) = create(&mut lio, &loopback_spec());
    let msg = result.unwrap_err().to_string();
    assert_eq!(lines, ["uio: uio0"]);
    assert!(
        msg.starts_with(
            "no process opened /dev/uio0 within 0 s, so the LUN was not exported (the kernel's \
             SCSI scan would hang without a handler): is `dataplane serve` running with subtype \
             \"dataplane\" and a bdev named \"ram0\"?; undone: rmdir "
        ),
        "{msg}"
    );
    assert_eq!(
        lio.fs().log()[BACKSTORE_STEPS.len()..],
        ["rmdir core/user_0/disk0", "rmdir core/user_0"]
    );
    assert!(!m.roots.loopback_dir().exists());
    assert!(discovery::scan(&m.roots).devices.is_empty());
}

#[test]
fn no_disk_leaves_the_lun_in_place() {
    let m = Machine::new();
    let mut lio = m.lio();
    lio.timeout = Duration::ZERO;
    lio.fs_mut().kernel_mut().disk_appears = false;
    let (result, lines) = create(&mut lio, &loopback_spec());
    let msg = result.unwrap_err().to_string();
    assert_eq!(lines, ["uio: uio0"]);
    assert_eq!(
        msg,
        format!(
            "the LUN {} is linked but no disk appeared under {} within 0 s: is `dataplane serve` \
             running with a bdev named \"ram0\"? The device is left in place; remove it with \
             `dataplane lio delete disk0`",
            m.path("loopback/naa.5001405000000010/tpgt_1/lun/lun_0")
                .display(),
            m.roots
                .sysfs
                .join("bus/scsi/devices/2:0:1:0/block")
                .display()
        )
    );
    assert!(m
        .path("loopback/naa.5001405000000010/tpgt_1/lun/lun_0/disk0")
        .exists());
}

#[test]
fn delete_reverses_create_and_resets_an_unattended_ring_first() {
    let m = Machine::new();
    let (result, _) = create(&mut m.lio(), &loopback_spec());
    result.unwrap();
    // The handler died (kill -9): commands stay in the ring.
    detach_handler(&m.roots);
    let mut lio = m.lio();
    lio.fs_mut()
        .kernel_mut()
        .stuck
        .insert(m.path("core/user_0/disk0"));
    let deleted = lio.delete("disk0", None).unwrap();
    let expected = [
        "write core/user_0/disk0/action/reset_ring 2",
        "unlink loopback/naa.5001405000000010/tpgt_1/lun/lun_0/disk0",
        "rmdir loopback/naa.5001405000000010/tpgt_1/lun/lun_0",
        "rmdir loopback/naa.5001405000000010/tpgt_1",
        "rmdir loopback/naa.5001405000000010",
        "rmdir core/user_0/disk0",
        "rmdir core/user_0",
    ];
    assert_eq!(lio.fs().log(), expected);
    assert_eq!(deleted.hba, 0);
    assert_eq!(deleted.ops.len(), expected.len());
    assert_eq!(
        deleted.ops[0],
        FsOp::Write {
            path: m.path("core/user_0/disk0/action/reset_ring"),
            value: "2".into()
        }
    );
    // Back to a machine with only the fabric directory.
    assert!(!m.path("core/user_0").exists());
    assert!(m.roots.loopback_dir().is_dir());
    assert!(discovery::scan(&m.roots).devices.is_empty());
    assert!(!m.roots.sysfs.join("bus/scsi/devices/2:0:1:0").exists());
    assert!(!m.roots.dev.join("sda").exists());
}

#[test]
fn delete_leaves_the_ring_alone_while_a_handler_has_it() {
    let m = Machine::new();
    let (result, _) = create(&mut m.lio(), &loopback_spec());
    result.unwrap();
    let mut lio = m.lio();
    lio.delete("disk0", Some(0)).unwrap();
    assert_eq!(
        lio.fs().log()[0],
        "unlink loopback/naa.5001405000000010/tpgt_1/lun/lun_0/disk0"
    );
    assert!(!lio.fs().log().iter().any(|l| l.contains("reset_ring")));
}

#[test]
fn delete_keeps_what_others_still_use() {
    let m = Machine::new();
    let (result, _) = create(&mut m.lio(), &loopback_spec());
    result.unwrap();
    let mut second = loopback_spec();
    second.name = "disk1".into();
    let mut lio = m.lio();
    lio.fs_mut().kernel_mut().next_minor = 1;
    let (result, _) = create(&mut lio, &second);
    result.unwrap();

    let mut lio = m.lio();
    lio.delete("disk0", None).unwrap();
    assert_eq!(
        lio.fs().log(),
        [
            "unlink loopback/naa.5001405000000010/tpgt_1/lun/lun_0/disk0",
            "rmdir loopback/naa.5001405000000010/tpgt_1/lun/lun_0",
            "rmdir core/user_0/disk0",
        ]
    );
    let mut lio = m.lio();
    lio.delete("disk1", None).unwrap();
    assert_eq!(
        lio.fs().log(),
        [
            "unlink loopback/naa.5001405000000010/tpgt_1/lun/lun_1/disk1",
            "rmdir loopback/naa.5001405000000010/tpgt_1/lun/lun_1",
            "rmdir loopback/naa.5001405000000010/tpgt_1",
            "rmdir loopback/naa.5001405000000010",
            "rmdir core/user_0/disk1",
            "rmdir core/user_0",
        ]
    );
}

#[test]
fn delete_errors() {
    let m = Machine::new();
    let mut lio = m.lio();
    let msg = lio.delete("ghost", None).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "no TCMU device named \"ghost\": no {}/user_*/ghost",
            m.roots.core_dir().display()
        )
    );
    let msg = lio.delete("ghost", Some(3)).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "no TCMU device named \"ghost\": {} does not exist",
            m.path("core/user_3/ghost").display()
        )
    );
    assert!(lio
        .delete("../x", None)
        .unwrap_err()
        .to_string()
        .starts_with("device name \"../x\" contains '/'"));
    let mut lio = m.lio_as(1);
    assert!(lio
        .delete("disk0", None)
        .unwrap_err()
        .to_string()
        .starts_with("must run as root"));

    // The same name in two HBAs.
    for hba in [0, 1] {
        let mut s = spec();
        s.hba = hba;
        let mut lio = m.lio();
        lio.fs_mut().kernel_mut().next_minor = hba;
        create(&mut lio, &s).0.unwrap();
    }
    let mut lio = m.lio();
    let msg = lio.delete("disk0", None).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "TCMU device \"disk0\" exists in several HBAs ({}, {}); choose one with --hba",
            m.path("core/user_0").display(),
            m.path("core/user_1").display()
        )
    );
    lio.delete("disk0", Some(1)).unwrap();
    // The fake handler holds both UIO devices: no ring reset.
    assert_eq!(
        lio.fs().log(),
        ["rmdir core/user_1/disk0", "rmdir core/user_1"]
    );

    // Exported through another fabric: refused before any change.
    let iscsi_lun = m.path("iscsi/iqn.2003-01.org.example:t/tpgt_1/lun/lun_0");
    std::fs::create_dir_all(&iscsi_lun).unwrap();
    std::os::unix::fs::symlink(m.path("core/user_0/disk0"), iscsi_lun.join("x")).unwrap();
    let mut lio = m.lio();
    let msg = lio.delete("disk0", None).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "TCMU device \"disk0\" is exported through {} (not a tcm_loop LUN): remove that LUN first",
            iscsi_lun.join("x").display()
        )
    );
    assert!(lio.fs().log().is_empty());
}

#[test]
fn delete_stops_at_the_first_failure_and_says_what_was_done() {
    let m = Machine::new();
    create(&mut m.lio(), &loopback_spec()).0.unwrap();
    let mut lio = m.lio();
    lio.fs_mut().fail_on("rmdir core/user_0/disk0", libc::EBUSY);
    let msg = lio.delete("disk0", None).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "rmdir {} failed: Device or resource busy (os error 16); LIO refuses while the device \
             is still exported (a LUN link) or held; already done: unlink {}, rmdir {}, rmdir {}, rmdir {}",
            m.path("core/user_0/disk0").display(),
            m.path("loopback/naa.5001405000000010/tpgt_1/lun/lun_0/disk0").display(),
            m.path("loopback/naa.5001405000000010/tpgt_1/lun/lun_0").display(),
            m.path("loopback/naa.5001405000000010/tpgt_1").display(),
            m.path("loopback/naa.5001405000000010").display(),
        )
    );
    assert_eq!(
        lio.fs().log().last().unwrap(),
        "rmdir core/user_0/disk0 FAILED"
    );
}

#[test]
fn list_shows_devices_with_uio_and_disk() {
    let m = Machine::new();
    create(&mut m.lio(), &loopback_spec()).0.unwrap();
    let mut other = CreateSpec::new("vol", "cfg", 1 << 20);
    other.subtype = "qcow".into();
    other.hba = 2;
    let mut lio = m.lio();
    lio.fs_mut().kernel_mut().next_minor = 5;
    create(&mut lio, &other).0.unwrap();
    // A device that was never configured nor enabled.
    FakeKernel::new(m.roots.clone())
        .mkdir(&m.path("core/user_2"))
        .ok();
    FakeKernel::new(m.roots.clone())
        .mkdir(&m.path("core/user_2/bare"))
        .unwrap();

    let lio = m.lio();
    let ours = lio.list(Some("dataplane")).unwrap();
    assert_eq!(ours.len(), 1);
    let d = &ours[0];
    assert_eq!(d.name, "disk0");
    assert_eq!(d.hba, 0);
    assert_eq!(d.subtype.as_deref(), Some("dataplane"));
    assert_eq!(d.bdev.as_deref(), Some("ram0"));
    assert_eq!(d.size, Some(1 << 30));
    assert_eq!(d.block_size, Some(4096));
    assert!(d.enabled);
    assert_eq!(d.uio.as_deref(), Some("uio0"));
    let sda = m.roots.dev.join("sda").display().to_string();
    assert_eq!(d.disk.as_deref(), Some(sda.as_str()));
    assert_eq!(
        serde_json::to_value(&ours).unwrap(),
        serde_json::json!([{
            "name": "disk0", "hba": 0, "subtype": "dataplane", "bdev": "ram0",
            "size": 1073741824u64, "block_size": 4096, "enabled": true,
            "uio": "uio0", "disk": sda,
        }])
    );

    let all = lio.list(None).unwrap();
    let names: Vec<(u32, &str)> = all.iter().map(|d| (d.hba, d.name.as_str())).collect();
    assert_eq!(names, [(0, "disk0"), (2, "bare"), (2, "vol")]);
    let bare = &all[1];
    assert_eq!(
        (bare.subtype.as_deref(), bare.bdev.as_deref()),
        (None, None)
    );
    assert_eq!(
        (bare.size, bare.enabled, bare.uio.as_deref()),
        (Some(0), false, None)
    );
    let vol = &all[2];
    assert_eq!(vol.subtype.as_deref(), Some("qcow"));
    assert_eq!(vol.uio.as_deref(), Some("uio5"));
    assert_eq!(vol.disk, None);
    assert!(lio.list(Some("nothing")).unwrap().is_empty());

    // Listing needs no root, but configfs.
    let lio = m.lio_as(1000);
    assert_eq!(lio.list(None).unwrap().len(), 3);
}

/// A device of another handler (another subtype in `dev_config`) is never
/// deleted by name: the error names both subtypes and nothing changes. A
/// device nobody configured has no handler and may go.
#[test]
fn delete_refuses_another_handlers_device() {
    let m = Machine::new();
    let mut other = CreateSpec::new("vol", "cfg", 1 << 20);
    other.subtype = "qcow".into();
    create(&mut m.lio(), &other).0.unwrap();
    let mut lio = m.lio();
    let msg = lio.delete("vol", None).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "TCMU device \"vol\" ({}) belongs to handler subtype \"qcow\", not \"dataplane\": \
             it is not ours to delete",
            m.path("core/user_0/vol").display()
        )
    );
    assert!(lio.fs().log().is_empty());
    assert!(m.path("core/user_0/vol").is_dir());
    // Asked for that subtype, it goes.
    let mut lio = m.lio();
    lio.delete_of_subtype("vol", None, "qcow").unwrap();
    assert!(!m.path("core/user_0/vol").exists());
    // Ours, asked as another subtype: refused too.
    let mut lio = m.lio();
    lio.fs_mut().kernel_mut().next_minor = 1;
    create(&mut lio, &spec()).0.unwrap();
    let mut lio = m.lio();
    assert!(lio
        .delete_of_subtype("disk0", None, "qcow")
        .unwrap_err()
        .to_string()
        .contains("belongs to handler subtype \"dataplane\", not \"qcow\""));
    lio.delete("disk0", None).unwrap();
    // Never configured: no handler can claim it.
    FakeKernel::new(m.roots.clone())
        .mkdir(&m.path("core/user_2"))
        .ok();
    FakeKernel::new(m.roots.clone())
        .mkdir(&m.path("core/user_2/bare"))
        .unwrap();
    m.lio().delete("bare", None).unwrap();
    assert!(!m.path("core/user_2").exists());
}
