//! Whether a TCMU ring can be taken over as it is, or must be reset first.
//!
//! A handler that stopped without draining (a crash, `kill -9`, a detach
//! whose drain timed out) may have walked entries it never completed, and
//! with out-of-order completion written responses into entries it had not
//! published: the entries between `cmd_tail` and `cmd_head` cannot be
//! trusted. Nothing else can: a recorded pid may be reused, belong to this
//! very process, or be 1 in a container, and a state file may be lost with
//! a non-persistent `/run`. So the decision ([`reset_reason`]) rests on
//! what the ring and the kernel say, taken while this process holds the
//! UIO device (TCMU allows one opener, so nobody else can touch the ring
//! meanwhile; a device another process holds is never opened, let alone
//! reset):
//! - `cmd_head` or `cmd_tail` is not a valid ring position: reset.
//! - `cmd_head == cmd_tail`: no entry waits; the ring is taken as it is.
//! - Entries wait: they are picked up as they are only if a handler of
//!   ours detached the device cleanly (it drained: it walked nothing it did
//!   not complete and publish) and recorded so in the state directory;
//!   otherwise the ring is reset (the commands complete with BUSY, which
//!   the initiator retries; the cost of a wrong "reset" is a retry, the
//!   cost of a wrong "take over" is a stale or lost command).
//!
//! The state file is `tcmu-<hba>-<name>.state` in the state directory:
//! `state=attached` or `state=clean` (and, for people, the `pid=` that
//! wrote it, which no decision reads), replaced atomically.

use std::io;
use std::path::{Path, PathBuf};

use crate::tcmu::discovery::TcmuUioName;
use crate::tcmu::SharedRegion;

/// The state directory, if any.
#[derive(Debug, Clone, Default)]
pub(super) struct StateFiles {
    dir: Option<PathBuf>,
}

impl StateFiles {
    /// State files in `dir`; `None`: no clean detach is ever recorded, so a
    /// ring with waiting entries is always reset.
    pub(super) fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// The state file of a device.
    pub(super) fn path(&self, name: &TcmuUioName) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("tcmu-{}-{}.state", name.hba, name.name)))
    }

    /// True if the state file says the last handler detached the device
    /// cleanly.
    pub(super) fn detached_cleanly(&self, name: &TcmuUioName) -> bool {
        self.path(name)
            .and_then(|path| std::fs::read_to_string(path).ok())
            .is_some_and(|text| text.lines().any(|l| l.trim() == "state=clean"))
    }
}

/// Why the ring of `region` must be reset before it is attached, or `None`
/// if it can be taken as it is (see the module docs). `detached_cleanly`:
/// the state file records a clean detach.
pub(super) fn reset_reason(region: &SharedRegion, detached_cleanly: bool) -> Option<String> {
    let size = region.mailbox_cmdr_size();
    let (head, tail) = (region.load_cmd_head(), region.load_cmd_tail());
    let valid = |p: u32| p < size && p.is_multiple_of(8);
    if !valid(head) || !valid(tail) {
        return Some(format!(
            "its mailbox's cmd_head {head} or cmd_tail {tail} is not a position in the \
             {size}-byte ring"
        ));
    }
    if head == tail || detached_cleanly {
        return None;
    }
    Some(format!(
        "entries wait in its ring (cmd_tail {tail}, cmd_head {head}) and no clean detach \
         of it is recorded, so a handler may have walked them"
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcmu::abi::{CMDR_OFF, MB_CMDR_OFF, MB_CMDR_SIZE};

    fn ring(head: u32, tail: u32) -> SharedRegion {
        let r = SharedRegion::anonymous(4096).unwrap();
        r.write_u32(MB_CMDR_OFF, CMDR_OFF).unwrap();
        r.write_u32(MB_CMDR_SIZE, 1024).unwrap();
        r.store_cmd_head(head);
        r.store_cmd_tail(tail);
        r
    }

    #[test]
    fn an_idle_ring_is_taken_as_it_is() {
        assert_eq!(reset_reason(&ring(0, 0), false), None);
        assert_eq!(reset_reason(&ring(512, 512), false), None);
    }

    #[test]
    fn waiting_entries_are_reset_unless_a_clean_detach_is_recorded() {
        let why = reset_reason(&ring(256, 128), false).unwrap();
        assert!(why.contains("cmd_tail 128, cmd_head 256"), "{why}");
        assert_eq!(reset_reason(&ring(256, 128), true), None);
    }

    #[test]
    fn invalid_positions_are_reset_even_after_a_clean_detach() {
        assert!(reset_reason(&ring(1024, 0), true).is_some());
        assert!(reset_reason(&ring(0, 12), true).is_some());
    }

    #[test]
    fn only_a_clean_state_counts_and_no_pid_is_read() {
        let tmp = tempfile::TempDir::new().unwrap();
        let files = StateFiles::new(Some(tmp.path().to_owned()));
        let name = TcmuUioName::parse("tcm-user/3/disk/dataplane/ram0").unwrap();
        assert!(!files.detached_cleanly(&name), "no file");
        let path = files.path(&name).unwrap();
        assert!(path.ends_with("tcmu-3-disk.state"));
        write_state(&path, false).unwrap();
        assert!(!files.detached_cleanly(&name));
        write_state(&path, true).unwrap();
        assert!(files.detached_cleanly(&name));
        // Another (dead, live or reused) pid changes nothing.
        std::fs::write(&path, "pid=1\nstate=clean\n").unwrap();
        assert!(files.detached_cleanly(&name));
        assert!(!StateFiles::new(None).detached_cleanly(&name));
    }
}
