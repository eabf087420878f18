//! [`CompletionAffinity`]: where tcm_loop runs the completion work of the
//! dataplane's LUNs, switched with the load (`[tcmu] completion_affinity =
//! "auto"`, the default).
//!
//! LIO finishes a command (the fabric's response: for tcm_loop, the SCSI
//! completion that wakes the initiator) in a work item queued on the CPU
//! that the target WWN's `param/cmd_completion_affinity` names: by default
//! (-1) the CPU that submitted the command, with -2 the CPU that completed
//! it. With tcm_loop the submitting CPU is the initiator's own; for a TCMU
//! LUN the completing CPU is the reactor's, in its doorbell write.
//!
//! Measured in the VM test's 2-vCPU guest (fio on CPU 0, the reactor on
//! CPU 1, 4 KiB random reads against rd_mcp in the same boot): at queue
//! depth 32 the initiator's CPU is the limit, and moving the completion
//! work off it ran 0.95-1.14x rd_mcp instead of 0.70-0.88x; at queue
//! depth 1 the same move costs (about 0.42x instead of 0.55x: the work
//! preempts the reactor on its core before the initiator is woken). So
//! serve switches: the completing CPU while at least
//! 1/[`CONCURRENT_SHARE`] of the WWN's commands arrive behind an open
//! concurrency gate (they overlap, see `frontend::Coalescer`; the devices
//! count them, `concurrent_commands`), the submitting CPU while fewer do,
//! or none arrive. A queue-depth-1 stream never opens the gate (none of
//! its commands count); under a bursty load at queue depth 32 the gate
//! opens and closes many times a second (in the VM test's guest, fewer
//! than half the commands arrived behind it at most looks). So the share
//! over each look is the signal, not the gate's state at that moment.
//!
//! Scope and rules:
//! - Only tcm_loop WWNs every LUN of which is one of serve's attached TCMU
//!   devices: a WWN shared with another backstore keeps what it has.
//! - Only a WWN whose attribute reads -1 or -2 when first seen (the two
//!   values this switches between); a CPU number set by an operator stays.
//! - A state must hold for [`SWITCH_AFTER`] before the attribute follows
//!   it. The control loop looks about every 100 ms; configfs is scanned for
//!   new WWNs every [`SCAN_EVERY`].
//! - A write that fails leaves that WWN alone from then on (logged once);
//!   a kernel without the attribute (before 5.14) has nothing to manage.
//! - At shutdown the kernel's default (-1) is written back.
//!
//! Nothing here runs on a reactor: it reads one gauge per device and
//! writes configfs only when a WWN switches.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::kernfs::{subdirs, wwn_lun_links};

/// How long the WWN's commands must have been mostly concurrent (or not)
/// before the attribute follows.
pub const SWITCH_AFTER: Duration = Duration::from_millis(300);
/// A WWN is concurrent while at least 1/`CONCURRENT_SHARE` of its
/// commands arrive behind an open gate.
pub const CONCURRENT_SHARE: u64 = 8;
/// How often configfs is scanned for tcm_loop WWNs.
pub const SCAN_EVERY: Duration = Duration::from_secs(1);

/// The attribute's value for the submitting CPU (the kernel's default).
const SUBMITTER: &str = "-1";
/// The attribute's value for the completing CPU.
const COMPLETER: &str = "-2";
/// The attribute, under a WWN's directory.
const ATTRIBUTE: &str = "param/cmd_completion_affinity";

/// One managed WWN.
#[derive(Debug)]
struct Wwn {
    /// `(hba, name)` of the TCMU device behind each of its LUNs.
    devices: Vec<(u32, String)>,
    /// The value in force: true for the completing CPU.
    completer: bool,
    /// Commands received, and received behind an open gate, by its devices
    /// at the last look.
    seen: (u64, u64),
    /// Whether most commands were concurrent at the last look, and since
    /// when that has been so.
    open: bool,
    since: Instant,
    /// Writes that moved the attribute while serve managed the WWN.
    switches: u64,
}

/// Where a device's WWN runs its completion work, as serve's stats report
/// it ([`CompletionAffinity::of_device`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletionCpu {
    /// The completing CPU (-2) in force, else the submitting CPU (-1).
    pub completer: bool,
    /// How often serve switched the WWN's attribute since it took the WWN.
    pub switches: u64,
}

impl CompletionCpu {
    /// `"completing"` or `"submitting"`, as the stats name the CPU.
    pub fn name(self) -> &'static str {
        if self.completer {
            "completing"
        } else {
            "submitting"
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct CompletionAffinity {
    /// `<configfs>/loopback`.
    loopback: PathBuf,
    /// Managed WWNs by directory.
    wwns: BTreeMap<PathBuf, Wwn>,
    /// WWNs left alone (an operator's value, or a failed write), by
    /// directory.
    left: BTreeMap<PathBuf, String>,
    next_scan: Option<Instant>,
}

impl CompletionAffinity {
    /// Manages the tcm_loop WWNs under `loopback` (`<configfs>/loopback`).
    pub fn new(loopback: PathBuf) -> Self {
        Self {
            loopback,
            wwns: BTreeMap::new(),
            left: BTreeMap::new(),
            next_scan: None,
        }
    }

    /// The WWNs managed now, and whether each runs completions on the
    /// completing CPU.
    #[cfg(test)]
    fn managed(&self) -> Vec<(PathBuf, bool)> {
        self.wwns
            .iter()
            .map(|(dir, w)| (dir.clone(), w.completer))
            .collect()
    }

    /// Where the WWN of TCMU device `name` on HBA `hba` runs completions,
    /// if serve manages that WWN.
    pub fn of_device(&self, hba: u32, name: &str) -> Option<CompletionCpu> {
        self.wwns
            .values()
            .find(|w| w.devices.iter().any(|(h, n)| *h == hba && n == name))
            .map(|w| CompletionCpu {
                completer: w.completer,
                switches: w.switches,
            })
    }

    /// One look at `now`: scans configfs when due, then moves each managed
    /// WWN's attribute after its LUNs' load. `load(hba, name)` is `None`
    /// for a device that is not one of serve's attached TCMU devices, else
    /// its commands received so far and how many of them arrived behind an
    /// open concurrency gate. Returns what to log.
    pub fn tick(
        &mut self,
        now: Instant,
        load: impl Fn(u32, &str) -> Option<(u64, u64)>,
    ) -> Vec<String> {
        let mut log = Vec::new();
        if self.next_scan.is_none_or(|at| now >= at) {
            self.scan(now, &load, &mut log);
            self.next_scan = Some(now + SCAN_EVERY);
        }
        let mut failed = Vec::new();
        for (dir, wwn) in &mut self.wwns {
            let total = sum_load(&wwn.devices, &load);
            let received = total.0.saturating_sub(wwn.seen.0);
            let concurrent = total.1.saturating_sub(wwn.seen.1);
            wwn.seen = total;
            let open = received > 0 && CONCURRENT_SHARE * concurrent >= received;
            if open != wwn.open {
                wwn.open = open;
                wwn.since = now;
            }
            if open == wwn.completer || now.duration_since(wwn.since) < SWITCH_AFTER {
                continue;
            }
            let value = if open { COMPLETER } else { SUBMITTER };
            match fs::write(dir.join(ATTRIBUTE), value) {
                Ok(()) => {
                    wwn.completer = open;
                    wwn.switches += 1;
                }
                Err(e) => failed.push((dir.clone(), e)),
            }
        }
        for (dir, e) in failed {
            self.wwns.remove(&dir);
            let why = format!("writing {} failed: {e}", dir.join(ATTRIBUTE).display());
            log.push(format!(
                "completion affinity: {why}; {} left as it is",
                dir.display()
            ));
            self.left.insert(dir, why);
        }
        log
    }

    /// Writes the kernel's default back to every WWN switched to the
    /// completing CPU. Returns what to log.
    pub fn restore(&mut self) -> Vec<String> {
        let mut log = Vec::new();
        for (dir, wwn) in &mut self.wwns {
            if wwn.completer {
                match fs::write(dir.join(ATTRIBUTE), SUBMITTER) {
                    Ok(()) => wwn.completer = false,
                    Err(e) => log.push(format!(
                        "completion affinity: restoring {} failed: {e}",
                        dir.join(ATTRIBUTE).display()
                    )),
                }
            }
        }
        log
    }

    /// Finds the WWNs to manage: new ones are taken, vanished ones and
    /// ones no longer all ours are dropped (the latter set back to the
    /// default).
    fn scan(
        &mut self,
        now: Instant,
        load: &impl Fn(u32, &str) -> Option<(u64, u64)>,
        log: &mut Vec<String>,
    ) {
        let mut seen = BTreeMap::new();
        for wwn in subdirs(&self.loopback) {
            let dir = self.loopback.join(wwn);
            if self.left.contains_key(&dir) || !dir.join(ATTRIBUTE).exists() {
                continue;
            }
            let Some(devices) = lun_devices(&dir) else {
                continue;
            };
            if devices.iter().any(|(h, n)| load(*h, n).is_none()) {
                continue;
            }
            seen.insert(dir, devices);
        }
        let gone: Vec<PathBuf> = self
            .wwns
            .keys()
            .filter(|dir| !seen.contains_key(*dir))
            .cloned()
            .collect();
        for dir in gone {
            if let Some(wwn) = self.wwns.remove(&dir) {
                if wwn.completer && dir.exists() {
                    // Still there, but no longer only ours.
                    let _ = fs::write(dir.join(ATTRIBUTE), SUBMITTER);
                }
            }
        }
        self.left.retain(|dir, _| dir.exists());
        for (dir, devices) in seen {
            if let Some(wwn) = self.wwns.get_mut(&dir) {
                wwn.devices = devices;
                continue;
            }
            let value = fs::read_to_string(dir.join(ATTRIBUTE)).unwrap_or_default();
            let completer = match value.trim() {
                SUBMITTER => false,
                COMPLETER => true,
                other => {
                    log.push(format!(
                        "completion affinity: {} is set to {other:?}: left as it is",
                        dir.join(ATTRIBUTE).display()
                    ));
                    self.left.insert(dir, format!("set to {other:?}"));
                    continue;
                }
            };
            log.push(format!(
                "completion affinity: {} follows the load of {} (completing CPU under \
                 concurrency, submitting CPU otherwise)",
                dir.display(),
                devices
                    .iter()
                    .map(|(hba, name)| format!("user_{hba}/{name}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            let seen = sum_load(&devices, load);
            self.wwns.insert(
                dir,
                Wwn {
                    devices,
                    completer,
                    seen,
                    open: completer,
                    since: now,
                    switches: 0,
                },
            );
        }
    }
}

/// The load counters of `devices`, summed (a device not attached counts
/// nothing).
fn sum_load(
    devices: &[(u32, String)],
    load: &impl Fn(u32, &str) -> Option<(u64, u64)>,
) -> (u64, u64) {
    devices
        .iter()
        .filter_map(|(hba, name)| load(*hba, name))
        .fold((0, 0), |(r, c), (dr, dc)| (r + dr, c + dc))
}

/// The TCMU devices behind a tcm_loop WWN's LUNs, `(hba, name)`; `None`
/// if it has no LUN, or one of its LUNs exports another backstore.
fn lun_devices(wwn: &Path) -> Option<Vec<(u32, String)>> {
    let links = wwn_lun_links("loopback", wwn);
    if links.is_empty() {
        return None;
    }
    links
        .iter()
        .map(|l| l.tcmu().map(|(hba, name)| (hba, name.to_owned())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake configfs: `core/user_<hba>/<name>` devices and tcm_loop WWNs.
    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("loopback")).unwrap();
            Self { dir }
        }

        fn loopback(&self) -> PathBuf {
            self.dir.path().join("loopback")
        }

        /// A WWN `wwn` (attribute set to `value`, none if `None`) with one
        /// LUN per backstore in `backstores` (`"user_0/disk"`).
        fn wwn(&self, wwn: &str, value: Option<&str>, backstores: &[&str]) -> PathBuf {
            let dir = self.loopback().join(wwn);
            fs::create_dir_all(dir.join("param")).unwrap();
            if let Some(v) = value {
                fs::write(dir.join(ATTRIBUTE), format!("{v}\n")).unwrap();
            }
            for (i, b) in backstores.iter().enumerate() {
                let store = self.dir.path().join("core").join(b);
                fs::create_dir_all(&store).unwrap();
                let lun = dir.join(format!("tpgt_1/lun/lun_{i}"));
                fs::create_dir_all(&lun).unwrap();
                if fs::read_link(lun.join("link")).is_err() {
                    std::os::unix::fs::symlink(&store, lun.join("link")).unwrap();
                }
            }
            dir
        }
    }

    fn value(dir: &Path) -> String {
        fs::read_to_string(dir.join(ATTRIBUTE))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The load counters of serve's devices, `user_0/disk` and
    /// `user_0/other`: commands received, and received behind an open gate.
    #[derive(Default)]
    struct Load(std::cell::Cell<(u64, u64)>);

    impl Load {
        fn of(&self, hba: u32, name: &str) -> Option<(u64, u64)> {
            (hba == 0 && (name == "disk" || name == "other")).then(|| self.0.get())
        }
    }

    /// A manager over a tree, with its devices' load and a clock start.
    struct Rig {
        a: CompletionAffinity,
        load: Load,
        start: Instant,
    }

    impl Rig {
        fn new(t: &Tree) -> Self {
            Self {
                a: CompletionAffinity::new(t.loopback()),
                load: Load::default(),
                start: Instant::now(),
            }
        }

        /// 100 more commands, 40 of them behind an open gate if
        /// `concurrent`, else 10; then a look `after` the start.
        fn look(&mut self, after: Duration, concurrent: bool) -> Vec<String> {
            let (r, c) = self.load.0.get();
            let more = if concurrent { 40 } else { 10 };
            self.load.0.set((r + 100, c + more));
            self.idle(after)
        }

        /// A look `after` the start with no new command.
        fn idle(&mut self, after: Duration) -> Vec<String> {
            let load = &self.load;
            self.a.tick(self.start + after, |h, n| load.of(h, n))
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn follows_the_load_after_it_held_for_a_while() {
        let t = Tree::new();
        let wwn = t.wwn("naa.1", Some("-1"), &["user_0/disk"]);
        let mut r = Rig::new(&t);
        let log = r.look(ms(0), false);
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(r.a.managed(), [(wwn.clone(), false)]);
        // Open, but not for long yet.
        r.look(ms(100), true);
        r.look(ms(300), true);
        assert_eq!(value(&wwn), "-1");
        r.look(ms(400), true);
        assert_eq!(value(&wwn), "-2");
        let cpu = |r: &Rig| r.a.of_device(0, "disk").map(|c| (c.name(), c.switches));
        assert_eq!(cpu(&r), Some(("completing", 1)));
        assert_eq!(r.a.of_device(0, "other"), None, "not behind a managed WWN");
        // A brief closing changes nothing.
        r.look(ms(500), false);
        r.look(ms(600), true);
        r.look(ms(1000), true);
        assert_eq!(value(&wwn), "-2");
        // Closed for long enough: back to the submitting CPU.
        r.look(ms(1100), false);
        r.look(ms(1500), false);
        assert_eq!(value(&wwn), "-1");
        assert_eq!(cpu(&r), Some(("submitting", 2)));
        // Restore writes the default back.
        r.look(ms(1600), true);
        r.look(ms(2000), true);
        assert_eq!(value(&wwn), "-2");
        assert!(r.a.restore().is_empty());
        assert_eq!(value(&wwn), "-1");
    }

    #[test]
    fn an_idle_wwn_goes_back_to_the_submitting_cpu() {
        let t = Tree::new();
        let wwn = t.wwn("naa.1", Some("-2"), &["user_0/disk"]);
        let mut r = Rig::new(&t);
        r.look(ms(0), true);
        r.look(ms(100), true);
        assert_eq!(value(&wwn), "-2");
        // No command at all from here on.
        r.idle(ms(200));
        r.idle(ms(500));
        assert_eq!(value(&wwn), "-1");
    }

    #[test]
    fn leaves_what_is_not_only_ours_or_set_by_an_operator() {
        let t = Tree::new();
        let shared = t.wwn("naa.1", Some("-1"), &["user_0/disk", "rd_mcp_0/ramdisk"]);
        let pinned = t.wwn("naa.2", Some("3"), &["user_0/other"]);
        let older = t.wwn("naa.3", None, &["user_0/disk"]);
        let empty = t.wwn("naa.4", Some("-1"), &[]);
        let theirs = t.wwn("naa.5", Some("-1"), &["user_1/disk"]);
        let mut r = Rig::new(&t);
        let log = r.look(ms(0), true);
        assert_eq!(log.len(), 1, "only the operator's value is logged: {log:?}");
        assert!(log[0].contains("\"3\""), "{log:?}");
        r.look(Duration::from_secs(1), true);
        assert!(r.a.managed().is_empty());
        assert_eq!(value(&shared), "-1");
        assert_eq!(value(&pinned), "3");
        assert!(!older.join(ATTRIBUTE).exists());
        assert_eq!(value(&empty), "-1");
        assert_eq!(value(&theirs), "-1");
    }

    #[test]
    fn a_wwn_that_stops_being_only_ours_is_given_back() {
        let t = Tree::new();
        let wwn = t.wwn("naa.1", Some("-2"), &["user_0/disk"]);
        let mut r = Rig::new(&t);
        r.look(ms(0), true);
        assert_eq!(r.a.managed(), [(wwn.clone(), true)], "-2 is taken as it is");
        // Another backstore joins the WWN.
        t.wwn("naa.1", None, &["user_0/disk", "rd_mcp_0/ramdisk"]);
        r.look(SCAN_EVERY, true);
        assert!(r.a.managed().is_empty());
        assert_eq!(value(&wwn), "-1");
    }

    #[test]
    fn a_failed_write_leaves_the_wwn_alone() {
        let t = Tree::new();
        let wwn = t.wwn("naa.1", Some("-1"), &["user_0/disk"]);
        let mut r = Rig::new(&t);
        r.look(ms(0), true);
        // The attribute becomes a directory: writing it fails.
        fs::remove_file(wwn.join(ATTRIBUTE)).unwrap();
        fs::create_dir(wwn.join(ATTRIBUTE)).unwrap();
        assert!(r.look(ms(100), true).is_empty());
        let log = r.look(ms(100) + SWITCH_AFTER, true);
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].contains("left as it is"), "{log:?}");
        assert!(r.a.managed().is_empty());
        assert!(r.look(2 * SCAN_EVERY, true).is_empty());
    }
}
