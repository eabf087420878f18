//! The configfs recovery actions of a TCMU device (`action/block_dev`,
//! `action/reset_ring`), applied through an [`Fs`].

use crate::kernfs::{Fs, FsOp, Roots};

use super::error::DiscoveryError;

/// Blocks (`on = true`: `action/block_dev` = 1) or unblocks (0) TCMU device
/// `user_<hba>/<name>`, through `fs`. Blocking reaps finished commands,
/// fails queued ones with BUSY and answers new ones with LUN BUSY; used by
/// serve around a re-attach after a crash.
pub fn block_dev(
    fs: &mut impl Fs,
    roots: &Roots,
    hba: u32,
    name: &str,
    on: bool,
) -> Result<(), DiscoveryError> {
    let path = roots.device_dir(hba, name).join("action/block_dev");
    Ok(fs.write_attr(&path, if on { "1" } else { "0" })?)
}

/// How `action/reset_ring` completes the commands still in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingReset {
    /// 1: with BUSY (the initiator retries).
    Busy = 1,
    /// 2: with CHECK CONDITION.
    CheckCondition = 2,
}

/// The write of `action/reset_ring` of TCMU device `user_<hba>/<name>` that
/// [`reset_ring`] applies, for callers that apply and record their changes
/// themselves.
pub fn reset_ring_op(roots: &Roots, hba: u32, name: &str, mode: RingReset) -> FsOp {
    let path = roots.device_dir(hba, name).join("action/reset_ring");
    FsOp::write(path, (mode as u8).to_string())
}

/// Writes `action/reset_ring` of TCMU device `user_<hba>/<name>` through
/// `fs`: in-flight commands complete as `mode` says, then
/// `cmd_head = cmd_tail = 0` and the broken state is cleared. No handler
/// may be walking the ring meanwhile.
pub fn reset_ring(
    fs: &mut impl Fs,
    roots: &Roots,
    hba: u32,
    name: &str,
    mode: RingReset,
) -> Result<(), DiscoveryError> {
    let path = roots.device_dir(hba, name).join("action/reset_ring");
    Ok(fs.write_attr(&path, &(mode as u8).to_string())?)
}
