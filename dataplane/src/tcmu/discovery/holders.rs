//! Which processes hold a UIO device open, from `<proc>/<pid>/fd/*`.

use crate::kernfs::Roots;

/// The pids of the processes that have `<dev>/uio<minor>` open, found by
/// reading the `<proc>/<pid>/fd/*` links. Processes that vanish or whose fd
/// table cannot be read (not root) are skipped, so the answer is complete
/// only when run as root. Sorted.
///
/// This is how `dataplane lio` decides whether a handler is attached
/// (TCMU allows one opener at a time, but probing by opening the device
/// would race with a handler that is attaching).
pub fn uio_holders(roots: &Roots, minor: u32) -> Vec<u32> {
    let node = roots.uio_node(minor);
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir(&roots.proc) else {
        return pids;
    };
    for proc_entry in procs.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == node));
        if holds {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// Whether any process has `<dev>/uio<minor>` open (see [`uio_holders`]).
pub fn is_uio_open(roots: &Roots, minor: u32) -> bool {
    !uio_holders(roots, minor).is_empty()
}
