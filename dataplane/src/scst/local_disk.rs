//! scst_local's local disks: the SCSI host of each of a target's sessions,
//! the disk of a LUN on a host, and that disk's queue depth.
//!
//! scst_local leaves every disk it creates at its host template's
//! `cmd_per_lun`, 3 commands, on kernels from 3.19 on: its `sdev_configure`
//! works out the LUN's depth (and logs "Configuring queue depth 64") but
//! applies it only through `scsi_activate_tcq`, which those kernels no
//! longer have. At depth 3 an initiator that queues 32 commands keeps 3 at
//! the device (measured in the VM test: each REPLY_AND_GET_MULTI then found
//! one or two commands, and no batching could help). [`deepen_queue`] gives
//! the disk the depth of the SCST device (`max_tgt_dev_commands`);
//! `dataplane scst add-lun` does it for the LUNs it adds, `dataplane serve`
//! for those it re-creates ([`deepen_new_disks`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::export::LunAddress;
use crate::kernfs::{link_name, read_trimmed, Fs, Roots};

/// The target driver whose LUNs have local disks.
pub const DRIVER: &str = "scst_local";

/// SCSI host numbers of the target's sessions (`sessions/*/host` →
/// `hostN`), sorted.
pub fn session_hosts(target_dir: &Path) -> Vec<u32> {
    let mut hosts: Vec<u32> = std::fs::read_dir(target_dir.join("sessions"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| link_name(&e.path().join("host")))
        .filter_map(|name| name.strip_prefix("host")?.parse().ok())
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    hosts
}

/// The disk of LUN `lun` on SCSI host `host`: the SCSI device directory
/// `<sysfs>/bus/scsi/devices/<host>:C:T:<lun>` and `<dev>/<sdX>` from its
/// `block` directory.
pub fn find_disk(roots: &Roots, host: u32, lun: u64) -> Option<(PathBuf, PathBuf)> {
    let dir = roots.scsi_devices_dir();
    let mut matches: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(parse_hctl)
                .is_some_and(|(h, _, _, l)| h == host && l == lun)
        })
        .map(|e| e.path())
        .collect();
    matches.sort();
    for scsi_dir in matches {
        let block = std::fs::read_dir(scsi_dir.join("block")).ok()?;
        let mut names: Vec<String> = block
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        names.sort();
        if let Some(name) = names.into_iter().next() {
            let disk = roots.dev.join(name);
            return Some((scsi_dir, disk));
        }
    }
    None
}

/// A disk's queue depth raised (or, with `error`, not) by [`deepen_queue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepthChange {
    /// The disk.
    pub disk: PathBuf,
    /// Its depth before.
    pub from: u32,
    /// The SCST device's `max_tgt_dev_commands`.
    pub to: u32,
    /// Why the write failed, if it did.
    pub error: Option<String>,
}

/// Raises the queue depth of the disk at `scsi_dir` to the
/// `max_tgt_dev_commands` of the SCST device at `device_dir` when it is
/// lower. Nothing when either value is unreadable or the depth is enough.
pub fn deepen_queue(
    fs: &mut dyn Fs,
    scsi_dir: &Path,
    disk: &Path,
    device_dir: &Path,
) -> Option<QueueDepthChange> {
    let depth_file = scsi_dir.join("queue_depth");
    let from: u32 = read_trimmed(&depth_file).ok()?.parse().ok()?;
    // The first line is the number; a second one ("[key]") may follow.
    let limit = read_trimmed(&device_dir.join("max_tgt_dev_commands")).ok()?;
    let to: u32 = limit.split_whitespace().next()?.parse().ok()?;
    if from >= to {
        return None;
    }
    let error = fs
        .write_attr(&depth_file, &to.to_string())
        .err()
        .map(|e| e.to_string());
    Some(QueueDepthChange {
        disk: disk.to_path_buf(),
        from,
        to,
        error,
    })
}

/// What [`deepen_new_disks`] did for one new LUN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewDisks {
    /// The disks whose queue depth was raised (or could not be).
    pub changes: Vec<QueueDepthChange>,
    /// The SCSI hosts (`hostN`) on which the LUN's disk did not appear
    /// within the timeout: their depth is whatever the kernel gave.
    pub not_appeared: Vec<u32>,
}

/// For a LUN just added to scst_local (`at`): waits up to `timeout` for
/// its disk on every session's host and deepens each ([`deepen_queue`]).
/// Disks that did not appear in time are named by their host.
pub fn deepen_new_disks(
    fs: &mut dyn Fs,
    roots: &Roots,
    device: &str,
    at: &LunAddress,
    timeout: Duration,
) -> NewDisks {
    let target_dir = roots.scst_target_dir(&at.driver, &at.target);
    let device_dir = roots.scst_devices_dir().join(device);
    let deadline = Instant::now() + timeout;
    let mut report = NewDisks::default();
    for host in session_hosts(&target_dir) {
        let found = loop {
            if let Some(found) = find_disk(roots, host, at.lun) {
                break Some(found);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        match found {
            Some((scsi_dir, disk)) => {
                report
                    .changes
                    .extend(deepen_queue(fs, &scsi_dir, &disk, &device_dir))
            }
            None => report.not_appeared.push(host),
        }
    }
    report
}

/// `H:C:T:L` of a SCSI device directory name.
fn parse_hctl(name: &str) -> Option<(u32, u32, u32, u64)> {
    let mut parts = name.split(':');
    let h = parts.next()?.parse().ok()?;
    let c = parts.next()?.parse().ok()?;
    let t = parts.next()?.parse().ok()?;
    let l = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((h, c, t, l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scsi_addresses_parse() {
        assert_eq!(parse_hctl("12:0:0:3"), Some((12, 0, 0, 3)));
        assert_eq!(parse_hctl("host12"), None);
        assert_eq!(parse_hctl("1:2:3"), None);
        assert_eq!(parse_hctl("1:2:3:4:5"), None);
        assert_eq!(parse_hctl("target1:0:0"), None);
    }
}
