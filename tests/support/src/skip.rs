//! How a test that cannot run here says so, and when it must run anyway.
//!
//! A test that needs something a machine may lack asks first and returns
//! when told no:
//! ```
//! use test_support::skip::{can_run, Need};
//! # fn a_test() {
//! if !can_run(&[Need::KernelModule("scst_user")]) {
//!     return;
//! }
//! # }
//! # a_test();
//! ```
//! A need that is not met is reported as `skipped: <test>: <reason>` on
//! stderr, written past the test harness's output capture so that every
//! run shows it. But when the environment variable `CI` is `true` and CI
//! provides that need, the test fails with the reason instead: CI must run
//! every test it can. What CI provides is written down here, in
//! [`Need::provided_by_ci`], and nowhere else: CI runs `.ci/run` as root on
//! a Debian 12 machine with two CPUs, and `.ci/run` installs
//! build-essential, xz-utils and linux-libc-dev (the kernel's UAPI headers)
//! before the tests; its host kernel has io_uring enabled but neither
//! LIO/TCMU nor SCST loaded, and no NVMe device (the real kernel, and an
//! emulated NVMe drive, run in the VM test). `.ci/run` also installs
//! Debian's Ceph (ceph-mon, ceph-mgr, ceph-osd, ceph-common, librbd-dev,
//! librados-dev), starts a single-node cluster with
//! `tests/ceph/cluster.sh` before the tests and names its `ceph.conf` in
//! [`CEPH_CONF_VAR`], so [`Need::CephCluster`] is met there.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Programs on every CI machine when the tests run (`.ci/run` installs
/// build-essential, xz-utils, mount (losetup) and e2fsprogs (chattr)
/// before `cargo test`; util-linux (unshare) is in every Debian).
pub const CI_TOOLS: &[&str] = &["cc", "make", "xz", "losetup", "chattr", "mount", "unshare"];

/// CPUs of the CI machine.
pub const CI_CPUS: usize = 2;

/// The environment variable naming the NVMe namespace's generic character
/// device (`/dev/ngXnY`) that tests needing [`Need::NvmeGeneric`] use, and
/// overwrite.
pub const NVME_DEVICE_VAR: &str = "DATAPLANE_TEST_NVME";

/// The environment variable naming the `ceph.conf` of a running Ceph
/// cluster with a pool `rbd` and a client.admin keyring, which tests
/// needing [`Need::CephCluster`] share (`.ci/run` sets it; see
/// `crate::ceph`).
pub const CEPH_CONF_VAR: &str = "DATAPLANE_CEPH_CONF";

/// The programs that start a test cluster of a process's own when
/// [`CEPH_CONF_VAR`] is unset (Debian: ceph-mon ceph-mgr ceph-osd
/// ceph-common).
pub const CEPH_PROGRAMS: &[&str] = &["ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "rbd"];

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Effective user id 0.
    Root,
    /// Any user but root: the test checks what other users are told.
    NotRoot,
    /// A program on `PATH`.
    Tool(&'static str),
    /// A kernel UAPI header, relative to `/usr/include` (package
    /// linux-libc-dev).
    UapiHeader(&'static str),
    /// A loaded kernel module (`/sys/module/<name>`).
    KernelModule(&'static str),
    /// At least this many CPUs this process may run on.
    Cpus(usize),
    /// The kernel sets up an io_uring for this process (not compiled out,
    /// not disabled by `kernel.io_uring_disabled`, not blocked by seccomp).
    IoUring,
    /// At least this many free reserved (hugetlbfs) huge pages
    /// (`HugePages_Free` in `/proc/meminfo`). Reserving them changes the
    /// machine for every program, so neither tests nor CI do it.
    ReservedHugePages(u64),
    /// Transparent huge pages available to `madvise` (the kernel has them
    /// and `enabled` is not `never`).
    TransparentHugePages,
    /// An NVMe namespace's generic character device (`/dev/ngXnY`) that the
    /// test may overwrite, named by [`NVME_DEVICE_VAR`] (see
    /// [`nvme_device`]). CI's host has none; the VM test boots with an
    /// emulated NVMe drive and runs these tests there.
    NvmeGeneric,
    /// A Ceph cluster to make RBD images in (`crate::ceph::cluster`): the
    /// one [`CEPH_CONF_VAR`] names, else one the test process starts, for
    /// which [`CEPH_PROGRAMS`] must be installed.
    CephCluster,
    /// The Ceph cluster of [`Need::CephCluster`] could not be started; the
    /// error. Never met by asking: `crate::ceph::cluster` reports it.
    CephClusterStarted(&'static str),
    /// A privileged action that root can do on a whole machine but not
    /// always in a container (mount a tmpfs, set up a loop device, make a
    /// file immutable). Never met by asking: a test reports it with
    /// [`report`] when the action failed.
    Privilege(&'static str),
}

impl Need {
    /// Whether this machine meets the need.
    pub fn met(&self) -> bool {
        match *self {
            Need::Root => nix::unistd::geteuid().is_root(),
            Need::NotRoot => !nix::unistd::geteuid().is_root(),
            Need::Tool(name) => on_path(name),
            Need::UapiHeader(header) => Path::new("/usr/include").join(header).is_file(),
            Need::KernelModule(name) => Path::new("/sys/module").join(name).exists(),
            Need::Cpus(n) => usable_cpus() >= n,
            Need::IoUring => io_uring_works(),
            Need::ReservedHugePages(n) => free_reserved_huge_pages() >= n,
            Need::TransparentHugePages => {
                std::fs::read_to_string(THP_ENABLED).is_ok_and(|s| !s.contains("[never]"))
            }
            Need::NvmeGeneric => nvme_device().is_some(),
            Need::CephCluster => match std::env::var_os(CEPH_CONF_VAR) {
                Some(conf) => Path::new(&conf).is_file(),
                None => missing_ceph_program().is_none(),
            },
            Need::CephClusterStarted(_) => false,
            Need::Privilege(_) => false,
        }
    }

    /// Whether CI meets the need (see the module docs).
    pub fn provided_by_ci(&self) -> bool {
        match *self {
            Need::Root => true,
            Need::NotRoot => false,
            Need::Tool(name) => CI_TOOLS.contains(&name),
            Need::UapiHeader(_) => true,
            Need::KernelModule(_) => false,
            Need::Cpus(n) => n <= CI_CPUS,
            Need::IoUring => true,
            Need::ReservedHugePages(_) => false,
            Need::TransparentHugePages => true,
            Need::NvmeGeneric => false,
            Need::CephCluster | Need::CephClusterStarted(_) => true,
            // CI is root on a whole Debian machine, not a container.
            Need::Privilege(_) => true,
        }
    }

    /// What is missing, in words.
    pub fn reason(&self) -> String {
        match *self {
            Need::Root => format!(
                "needs root (running as uid {})",
                nix::unistd::geteuid().as_raw()
            ),
            Need::NotRoot => "checks what a user other than root is told; running as root".into(),
            Need::Tool(name) => format!("needs the program `{name}` on PATH"),
            Need::UapiHeader(header) => {
                format!("needs the kernel header /usr/include/{header} (package linux-libc-dev)")
            }
            Need::KernelModule(name) => {
                format!("needs the kernel module {name} loaded (no /sys/module/{name})")
            }
            Need::Cpus(n) => format!(
                "needs {n} CPUs to run on; this process may use {}",
                usable_cpus()
            ),
            Need::IoUring => format!(
                "needs io_uring, which this kernel refuses ({})",
                io_uring_setup().err().unwrap_or_default()
            ),
            Need::ReservedHugePages(n) => format!(
                "needs {n} free reserved huge pages, {} here (HugePages_Free in /proc/meminfo; \
                 `sysctl vm.nr_hugepages={n}`)",
                free_reserved_huge_pages()
            ),
            Need::TransparentHugePages => format!(
                "needs transparent huge pages ({THP_ENABLED}: {})",
                std::fs::read_to_string(THP_ENABLED)
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_else(|e| e.to_string())
            ),
            Need::NvmeGeneric => match std::env::var_os(NVME_DEVICE_VAR) {
                None => format!(
                    "needs an NVMe namespace's generic character device it may overwrite, \
                     named by {NVME_DEVICE_VAR} (e.g. {NVME_DEVICE_VAR}=/dev/ng0n1; the VM \
                     test runs these tests on its emulated drive)"
                ),
                Some(path) => format!(
                    "{NVME_DEVICE_VAR}={} is not a character device",
                    Path::new(&path).display()
                ),
            },
            Need::CephCluster => match std::env::var_os(CEPH_CONF_VAR) {
                Some(conf) => format!(
                    "needs a Ceph cluster: {CEPH_CONF_VAR}={} is not a file",
                    Path::new(&conf).display()
                ),
                None => format!(
                    "needs a Ceph cluster: {CEPH_CONF_VAR} names none and `{}` is not \
                     installed to start one (Debian: apt-get install ceph-mon ceph-mgr \
                     ceph-osd ceph-common; or {CEPH_CONF_VAR}=DIR/ceph.conf from \
                     tests/ceph/cluster.sh start DIR)",
                    missing_ceph_program().unwrap_or("?")
                ),
            },
            Need::CephClusterStarted(why) => {
                format!("needs a Ceph cluster, which would not start: {why}")
            }
            Need::Privilege(action) => format!("needs to {action}, which failed here"),
        }
    }
}

/// The device [`NVME_DEVICE_VAR`] names, when it names a character
/// device.
pub fn nvme_device() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let path = std::path::PathBuf::from(std::env::var_os(NVME_DEVICE_VAR)?);
    std::fs::metadata(&path)
        .is_ok_and(|m| m.file_type().is_char_device())
        .then_some(path)
}

/// The first of [`CEPH_PROGRAMS`] not on `PATH`.
fn missing_ceph_program() -> Option<&'static str> {
    CEPH_PROGRAMS.iter().copied().find(|name| !on_path(name))
}

/// Where the kernel says whether transparent huge pages are on.
const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// Free reserved huge pages (`HugePages_Free`), 0 when unknown.
fn free_reserved_huge_pages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("HugePages_Free:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Whether the calling test can run here: true when every need is met.
/// Otherwise [`report`]s the first need that is not and returns false, and
/// the test returns.
///
/// # Panics
/// Under `CI=true`, when that need is one CI provides.
pub fn can_run(needs: &[Need]) -> bool {
    match needs.iter().find(|need| !need.met()) {
        None => true,
        Some(need) => {
            report(*need);
            false
        }
    }
}

/// Reports that the calling test skips (some of) its work for want of
/// `need`: prints `skipped: <test>: <reason>` on stderr.
///
/// # Panics
/// Under `CI=true`, when CI provides `need`: there the test must run.
pub fn report(need: Need) {
    let test = test_name();
    let reason = need.reason();
    if on_ci() && need.provided_by_ci() {
        panic!("{test}: {reason}; CI provides this (CI=true), so the test must run");
    }
    // Straight to the process's stderr: the harness captures only the
    // print macros, and a skip must show in every run.
    let _ = writeln!(std::io::stderr().lock(), "skipped: {test}: {reason}");
}

/// Whether this run is CI's (`CI=true`).
pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The running test's name: the harness runs each test on a thread named
/// after it.
fn test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => "(unnamed test thread)".to_owned(),
    }
}

/// Whether an executable file `name` is in a `PATH` directory.
fn on_path(name: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Whether `io_uring_setup` gives this process a ring.
fn io_uring_works() -> bool {
    io_uring_setup().is_ok()
}

/// Sets up (and closes) a two-entry io_uring; the error is the kernel's.
fn io_uring_setup() -> Result<(), String> {
    use nix::libc;
    // `struct io_uring_params` is 120 bytes; all zero asks for defaults.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup reads and writes the 120-byte params struct
    // through the pointer, which points to 120 zeroed, live bytes.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: `fd` is the ring's descriptor, owned here and closed once.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// CPUs in this process's affinity mask.
fn usable_cpus() -> usize {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
        return 0;
    };
    (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_not_root_are_exclusive() {
        assert_ne!(Need::Root.met(), Need::NotRoot.met());
        assert!(Need::Root.provided_by_ci());
        assert!(!Need::NotRoot.provided_by_ci());
    }

    #[test]
    fn what_ci_provides() {
        assert!(Need::Tool("xz").provided_by_ci());
        assert!(!Need::Tool("no-such-tool").provided_by_ci());
        assert!(Need::UapiHeader("linux/target_core_user.h").provided_by_ci());
        assert!(!Need::KernelModule("scst_user").provided_by_ci());
        assert!(Need::Cpus(2).provided_by_ci());
        assert!(!Need::Cpus(3).provided_by_ci());
        assert!(Need::IoUring.provided_by_ci());
        assert!(!Need::NvmeGeneric.provided_by_ci());
        assert!(Need::CephCluster.provided_by_ci());
        assert!(Need::CephClusterStarted("mon timed out").provided_by_ci());
    }

    #[test]
    fn needs_are_checked_on_this_machine() {
        assert!(Need::Tool("sh").met(), "every Unix machine has sh");
        assert!(!Need::Tool("dp-no-such-tool").met());
        assert!(!Need::UapiHeader("dp-no-such-header.h").met());
        assert!(!Need::KernelModule("dp_no_such_module").met());
        assert!(!Need::CephClusterStarted("mon timed out").met());
        assert!(Need::CephClusterStarted("mon timed out")
            .reason()
            .ends_with("would not start: mon timed out"));
        assert!(Need::Cpus(1).met());
        assert!(!Need::Cpus(1 << 20).met());
        assert!(Need::Cpus(1 << 20)
            .reason()
            .starts_with("needs 1048576 CPUs"));
    }

    #[test]
    fn a_need_not_met_is_reported_and_skips() {
        // Not one CI provides: reported, never a failure.
        assert!(!can_run(&[
            Need::Cpus(1),
            Need::KernelModule("dp_no_such_module")
        ]));
        assert!(can_run(&[]));
        assert_eq!(
            test_name(),
            "skip::tests::a_need_not_met_is_reported_and_skips"
        );
    }
}
