//! Crash detection: a state file per TCMU device says which process
//! attached it and whether it detached cleanly.
//!
//! A device whose last handler died while attached (a crash, `kill -9`)
//! may have completions in its ring that were never published, so the ring
//! cannot be trusted and is reset before the device is attached again.
//! The file is `tcmu-<hba>-<name>.state` in the state directory:
//! `pid=<pid>` and `state=attached` or `state=clean`, replaced atomically.

use std::io;
use std::path::{Path, PathBuf};

use crate::tcmu::discovery::TcmuUioName;

/// The state directory, if crash detection is on.
#[derive(Debug, Clone, Default)]
pub(super) struct StateFiles {
    dir: Option<PathBuf>,
}

impl StateFiles {
    /// State files in `dir`; `None` turns crash detection off.
    pub(super) fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// The state file of a device.
    pub(super) fn path(&self, name: &TcmuUioName) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("tcmu-{}-{}.state", name.hba, name.name)))
    }

    /// True if the last process that attached the device died without
    /// detaching it.
    pub(super) fn needs_recovery(&self, name: &TcmuUioName) -> bool {
        let Some(path) = self.path(name) else {
            return false;
        };
        match read_state(&path) {
            Some((pid, clean)) => !clean && pid != std::process::id() && !process_alive(pid),
            None => false,
        }
    }
}

fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// What a state file says: the pid that attached the device, and whether it
/// detached cleanly.
fn read_state(path: &Path) -> Option<(u32, bool)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut pid = None;
    let mut clean = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("pid=") {
            pid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("state=") {
            clean = Some(v.trim() == "clean");
        }
    }
    Some((pid?, clean?))
}

/// Records that this process attached (`clean` false) or cleanly detached
/// (`clean` true) the device of the state file at `path`.
pub(super) fn write_state(path: &Path, clean: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!(
            "pid={}\nstate={}\n",
            std::process::id(),
            if clean { "clean" } else { "attached" }
        ),
    )?;
    std::fs::rename(tmp, path)
}
