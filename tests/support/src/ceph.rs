//! A Ceph cluster for the tests that need one (the `rbd` bdev), and RBD
//! images in it that no two tests share.
//!
//! ```no_run
//! # fn a_test() {
//! let Some(cluster) = test_support::ceph::cluster() else {
//!     return; // skipped, and said why
//! };
//! let image = cluster.create_image("my_test", 64 << 20);
//! // ... open `image.name()` in pool `image.pool()` with `cluster.conf()` ...
//! // `image` is removed when dropped.
//! # }
//! ```
//!
//! The cluster is the one `DATAPLANE_CEPH_CONF` names ([`CONF_VAR`]; CI's,
//! started by `.ci/run`), else one this process starts at its first call
//! with `tests/ceph/cluster.sh` under a temporary directory (a single-node
//! cluster: see `tests/ceph/README.md`), shared by all the tests of the
//! process and stopped when the process exits: by an `atexit` handler, and
//! by the script's watcher when the process is killed. Where neither is
//! possible, the test skips through [`crate::skip`], which makes it a
//! failure under `CI=true`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::skip::{self, Need};

pub use crate::skip::{CEPH_CONF_VAR as CONF_VAR, CEPH_PROGRAMS};

/// The pool the tests' images are created in.
pub const POOL: &str = "rbd";

/// Seconds an `rbd` command may take before it counts as hung.
const RBD_TIMEOUT_SECS: u32 = 60;

/// The script that starts and stops a test cluster.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ceph/cluster.sh")
}

/// A running cluster.
#[derive(Debug)]
pub struct CephCluster {
    conf: PathBuf,
    /// The directory of a cluster this process started (and stops).
    own_dir: Option<PathBuf>,
}

impl CephCluster {
    /// Its `ceph.conf`, for `rados_conf_read_file` or `-c`: it names the
    /// monitor and client.admin's keyring.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// Whether this process started it (else [`CONF_VAR`] named it).
    pub fn started_here(&self) -> bool {
        self.own_dir.is_some()
    }

    /// Creates an image of `size` bytes (a multiple of 512) in [`POOL`],
    /// named after `label` (say, the test's name) and made unique in the
    /// cluster; it is removed when the returned value drops.
    ///
    /// # Panics
    /// When `rbd create` fails, with what it said.
    pub fn create_image(&self, label: &str, size: u64) -> RbdImage {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(48)
            .collect();
        // Unique among this process's images, and against other processes
        // (and earlier runs) by the pid and the time.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "dp-{label}-{}-{}-{nanos:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let size_arg = format!("{size}B");
        let out = rbd(&self.conf, &["create", "--size", &size_arg, &spec(&name)]);
        match out {
            Ok(out) if out.status.success() => RbdImage {
                conf: self.conf.clone(),
                name,
                size,
            },
            Ok(out) => panic!(
                "rbd create --size {size_arg} {} -c {} failed ({}): {}",
                spec(&name),
                self.conf.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("rbd create {}: {e}", spec(&name)),
        }
    }
}

/// An RBD image of a test, removed (`rbd rm`) when dropped.
#[derive(Debug)]
pub struct RbdImage {
    conf: PathBuf,
    name: String,
    size: u64,
}

impl RbdImage {
    /// The pool it is in, [`POOL`].
    pub fn pool(&self) -> &str {
        POOL
    }

    /// Its name in the pool.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `pool/name`, as `rbd` takes it.
    pub fn spec(&self) -> String {
        spec(&self.name)
    }

    /// Its size in bytes, as created.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for RbdImage {
    fn drop(&mut self) {
        // A removal that fails is said, not a panic (which, while
        // unwinding, would abort the test binary).
        let failure = match rbd(&self.conf, &["rm", "--no-progress", &self.spec()]) {
            Ok(out) if out.status.success() => return,
            Ok(out) => format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => e,
        };
        let _ = writeln!(
            std::io::stderr().lock(),
            "warning: rbd rm {} -c {} failed: {failure}",
            self.spec(),
            self.conf.display()
        );
    }
}

fn spec(name: &str) -> String {
    format!("{POOL}/{name}")
}

/// Runs `rbd -c CONF ARGS`, killed after [`RBD_TIMEOUT_SECS`] (`timeout`).
fn rbd(conf: &Path, args: &[&str]) -> Result<Output, String> {
    Command::new("timeout")
        .arg(RBD_TIMEOUT_SECS.to_string())
        .arg("rbd")
        .arg("-c")
        .arg(conf)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `timeout rbd`: {e}"))
}

/// The process's cluster, when there can be one: [`CONF_VAR`]'s, else one
/// started now (once per process; other tests wait for it). Otherwise
/// reports why through [`skip::report`] (a failure under `CI=true`) and
/// returns `None`, and the test returns.
pub fn cluster() -> Option<&'static CephCluster> {
    if !skip::can_run(&[Need::CephCluster]) {
        return None;
    }
    static SHARED: OnceLock<Result<CephCluster, String>> = OnceLock::new();
    match SHARED.get_or_init(find_or_start) {
        Ok(cluster) => Some(cluster),
        Err(why) => {
            skip::report(Need::CephClusterStarted(why));
            None
        }
    }
}

/// [`CONF_VAR`]'s cluster, else a new one of this process.
fn find_or_start() -> Result<CephCluster, String> {
    if let Some(conf) = std::env::var_os(CONF_VAR) {
        return Ok(CephCluster {
            conf: PathBuf::from(conf),
            own_dir: None,
        });
    }
    let dir = own_dir()?;
    let conf = start_in(&dir)?;
    STOP_DIR.set(dir.clone()).expect("one cluster per process");
    // SAFETY: `stop_at_exit` is an `extern "C" fn()` that lives as long as
    // the program, which is all `atexit` asks.
    let registered = unsafe { nix::libc::atexit(stop_at_exit) };
    if registered != 0 {
        // The script's watcher still stops it when this process is gone.
        let _ = writeln!(
            std::io::stderr().lock(),
            "warning: atexit failed; the Ceph cluster in {} stops when its watcher sees this \
             process gone",
            dir.display()
        );
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "test-support: started a Ceph cluster for this process: {}",
        conf.display()
    );
    Ok(CephCluster {
        conf,
        own_dir: Some(dir),
    })
}

/// The directory of the cluster this process started, for [`stop_at_exit`].
static STOP_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Starts a cluster in `dir` with the script (stopped by its watcher
/// when this process is gone): its `ceph.conf`, or why it did not start.
fn start_in(dir: &Path) -> Result<PathBuf, String> {
    let out = Command::new("bash")
        .arg(script())
        .arg("start")
        .arg(dir)
        .arg("--watch-pid")
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let _ = std::fs::remove_dir(dir);
        // All the script said (the daemons' log tails) once, straight to
        // stderr; the skip reason is its error line.
        let _ = writeln!(
            std::io::stderr().lock(),
            "---- {} start {} ----\n{}\n----",
            script().display(),
            dir.display(),
            stderr.trim_end()
        );
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
        return Err(format!(
            "{} start {} failed ({}): {}",
            script().display(),
            dir.display(),
            out.status,
            if errors.is_empty() {
                stderr.lines().last().unwrap_or_default().to_owned()
            } else {
                errors.join("; ")
            }
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let conf = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    if !conf.is_file() {
        return Err(format!(
            "{} start printed `{}` as its conf, which is no file",
            script().display(),
            conf.display()
        ));
    }
    Ok(conf)
}

/// A cluster of one test's own in a temporary directory under
/// `/var/tmp`, for a test that disturbs it (stops the OSD); stopped when
/// dropped, and by the script's watcher if the process dies. Start it only
/// once [`cluster`] said Ceph can run here.
#[derive(Debug)]
pub struct OwnCluster {
    dir: PathBuf,
    conf: PathBuf,
}

impl OwnCluster {
    /// Starts one; panics with the script's reason if it cannot.
    pub fn start() -> Self {
        let dir = own_dir().unwrap_or_else(|e| panic!("{e}"));
        let conf = start_in(&dir).unwrap_or_else(|e| panic!("{e}"));
        Self { dir, conf }
    }

    /// Its `ceph.conf`.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// Runs `cluster.sh COMMAND DIR` (e.g. `osd-stop`, `osd-start`);
    /// panics with its output if it fails.
    pub fn script(&self, command: &str) {
        let out = Command::new("bash")
            .arg(script())
            .arg(command)
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()));
        assert!(
            out.status.success(),
            "cluster.sh {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `rbd -c CONF ARGS`; panics with its output if it fails.
    pub fn rbd(&self, args: &[&str]) {
        match rbd(&self.conf, args) {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "rbd {args:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("{e}"),
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
    }
}

/// Stops this process's cluster, as the process exits.
extern "C" fn stop_at_exit() {
    let Some(dir) = STOP_DIR.get() else { return };
    let stopped = Command::new("bash")
        .arg(script())
        .arg("stop")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !stopped.as_ref().is_ok_and(|s| s.success()) {
        let _ = writeln!(
            std::io::stderr().lock(),
            "warning: {} stop {} failed: {stopped:?}",
            script().display(),
            dir.display()
        );
    }
}

/// A new, empty directory for a cluster, with a path short enough for the
/// daemons' admin sockets: under `/var/tmp` (a disk filesystem, where the
/// OSD's O_DIRECT works), else the temporary directory.
fn own_dir() -> Result<PathBuf, String> {
    let base = if Path::new("/var/tmp").is_dir() {
        PathBuf::from("/var/tmp")
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix("dp-ceph-")
        .tempdir_in(&base)
        .map(tempfile::TempDir::keep)
        .map_err(|e| format!("cannot make a directory under {}: {e}", base.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_created_and_removed() {
        let Some(cluster) = cluster() else { return };
        assert!(cluster.conf().is_file(), "{}", cluster.conf().display());
        let image = cluster.create_image("test-support image", 64 << 20);
        assert!(
            image.name().starts_with("dp-test-support_image-"),
            "{}",
            image.name()
        );
        assert_eq!(image.size(), 64 << 20);
        let info = rbd(cluster.conf(), &["info", "--format", "json", &image.spec()]).unwrap();
        assert!(
            info.status.success(),
            "{}",
            String::from_utf8_lossy(&info.stderr)
        );
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains(&format!("\"size\":{}", 64 << 20)), "{info}");
        // A second image has another name.
        let other = cluster.create_image("test-support image", 1 << 20);
        assert_ne!(other.name(), image.name());
        let spec = image.spec();
        drop(image);
        let gone = rbd(cluster.conf(), &["info", &spec]).unwrap();
        assert!(
            !gone.status.success(),
            "{spec} is still there after the drop"
        );
        let list = rbd(cluster.conf(), &["ls", POOL]).unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(list.lines().any(|l| l == other.name()), "{list}");
    }
}
