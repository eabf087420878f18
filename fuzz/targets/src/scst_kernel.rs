//! [`ScriptedKernel`]: the scst_user kernel side of the `scst_device`
//! target. The script queues subcommands; every REPLY_AND_GET_MULTI checks
//! the replies against what is awaiting an answer and the buffers they
//! hand over against the buffers the kernel holds, and may fail with an
//! errno the script chose.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use dataplane::scst::abi::*;
use dataplane::scst::driver::{MultiBuf, ScstDriver};
use nix::errno::Errno;

/// Whether this kernel also delivers commands after it failed a reply's
/// sense copy with `EFAULT`. False, because scst_user does not:
/// `dev_user_reply_get_multi` stops at a failed reply, before it fetches,
/// and writes `cmds_cnt` only once it got to fetching (then a count below
/// the one asked for, the commands before one whose copy-out failed).
/// `exchange` takes exactly those (`scst/device/poller.rs`, tested with the
/// fake kernel of `dataplane/tests/scst`). True makes this kernel return
/// `want` commands with the error, which the device cannot tell from "did
/// not fetch" and which the real kernel never does.
pub const EFAULT_CMDS_HANDLED: bool = false;

/// Where a command is in its life, as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// ALLOC_MEM sent, or replied (`pbuf` given, 0 = none).
    Alloc,
    /// EXEC sent or replied.
    Exec,
    /// ON_FREE_CMD sent or replied: the command is gone once replied.
    Free,
}

/// One SCSI command the kernel is running through the handler.
#[derive(Debug, Clone, Copy)]
pub struct KCmd {
    /// Stage of the last subcommand sent.
    pub stage: Stage,
    /// The last subcommand has been answered.
    pub replied: bool,
    /// Data buffer the handler gave (0 = none).
    pub pbuf: u64,
    /// Bytes of the buffer.
    pub len: i32,
    /// Data direction.
    pub write: bool,
}

/// The kernel's state.
#[derive(Debug, Default)]
pub struct KernelState {
    /// Options the device registered.
    pub options: ScstUserOpt,
    /// Subcommands not yet delivered.
    pub queue: VecDeque<ScstUserGetCmd>,
    /// cmd_h -> subcode of every subcommand delivered and not answered.
    pub awaiting: BTreeMap<u32, u32>,
    /// SCSI commands by the cmd_h of their current subcommand.
    pub cmds: BTreeMap<u32, KCmd>,
    /// Buffers in the kernel's SGV cache.
    pub cached: BTreeSet<u64>,
    /// Fail the next exchange with this errno (once).
    pub fail_next: Option<Errno>,
    /// Buffers the handler gave over the run.
    pub buffers_given: usize,
    /// Number of exchanges.
    pub calls: u64,
    next_h: u32,
}

impl KernelState {
    /// A new cmd_h.
    pub fn next_h(&mut self) -> u32 {
        self.next_h = self.next_h.wrapping_add(1);
        self.next_h
    }

    /// True if the kernel holds `pbuf` (a live command's buffer or cached).
    pub fn holds(&self, pbuf: u64) -> bool {
        self.cached.contains(&pbuf)
            || self
                .cmds
                .values()
                .any(|c| c.pbuf == pbuf && c.stage != Stage::Free)
    }

    fn take(&mut self, pbuf: u64, cmd_h: u32) {
        if pbuf == 0 {
            return;
        }
        assert!(
            !self.holds(pbuf),
            "buffer {pbuf:#x} handed out again while in use (cmd_h {cmd_h})"
        );
        self.buffers_given += 1;
    }

    fn answer(&mut self, r: &ScstUserReplyCmd) {
        let Some(sub) = self.awaiting.remove(&r.cmd_h) else {
            panic!(
                "reply to cmd_h {} (subcode {:#x}) that awaits none: answered twice or never asked",
                r.cmd_h, r.subcode
            );
        };
        assert_eq!(
            sub, r.subcode,
            "reply of the wrong subcode to cmd_h {}",
            r.cmd_h
        );
        let Some(mut cmd) = self.cmds.get(&r.cmd_h).copied() else {
            return;
        };
        cmd.replied = true;
        match r.subcode {
            subcode::ALLOC_MEM => {
                let pbuf = r.alloc_reply().pbuf;
                self.take(pbuf, r.cmd_h);
                cmd.pbuf = pbuf;
            }
            subcode::EXEC => {
                let e = r.exec_reply();
                if cmd.pbuf == 0 && e.pbuf != 0 {
                    self.take(e.pbuf, r.cmd_h);
                    cmd.pbuf = e.pbuf;
                } else if cmd.pbuf != 0 && e.pbuf != 0 {
                    assert_eq!(e.pbuf, cmd.pbuf, "EXEC reply names another buffer");
                }
                assert!(
                    e.resp_data_len >= 0 && e.resp_data_len <= cmd.len.max(0),
                    "resp_data_len {} of {}",
                    e.resp_data_len,
                    cmd.len
                );
            }
            subcode::ON_FREE_CMD => {
                self.cmds.remove(&r.cmd_h);
                return;
            }
            _ => {}
        }
        self.cmds.insert(r.cmd_h, cmd);
    }
}

/// The kernel, shared by the target (which scripts it) and the device.
#[derive(Debug, Clone, Default)]
pub struct ScriptedKernel(Arc<Mutex<KernelState>>);

impl ScriptedKernel {
    /// A kernel with the registered `options`.
    pub fn new(options: ScstUserOpt) -> Self {
        let k = Self::default();
        k.state().options = options;
        k
    }

    /// The state.
    pub fn state(&self) -> MutexGuard<'_, KernelState> {
        self.0.lock().unwrap()
    }
}

impl ScstDriver for ScriptedKernel {
    fn register(&mut self, _desc: &ScstUserDevDesc) -> Result<(), Errno> {
        Ok(())
    }

    fn set_options(&mut self, opt: &ScstUserOpt) -> Result<(), Errno> {
        self.state().options = *opt;
        Ok(())
    }

    fn get_options(&mut self) -> Result<ScstUserOpt, Errno> {
        Ok(self.state().options)
    }

    fn reply_and_get_multi(
        &mut self,
        buf: &mut MultiBuf,
        replies: &[ScstUserReplyCmd],
    ) -> Result<(), Errno> {
        let mut s = self.state();
        s.calls += 1;
        let header = *buf.header();
        assert_eq!(header.replies_cnt as usize, replies.len());
        let asked = header.cmds_cnt.max(0) as usize;
        assert!(asked <= buf.capacity());
        buf.header_mut().replies_done = 0;
        buf.header_mut().cmds_cnt = 0;
        match s.fail_next.take() {
            // Nothing looked at.
            Some(e @ (Errno::EINTR | Errno::ENOMEM | Errno::ENODEV)) => return Err(e),
            Some(Errno::EFAULT) if !replies.is_empty() => {
                // A bad sense pointer in the last reply: scst_user has
                // taken the reply's buffer and status by then, fails the
                // sense copy, completes the command itself and stops.
                let bad = replies.len() - 1;
                for r in replies {
                    s.answer(r);
                }
                buf.header_mut().replies_done = bad as i16;
                if EFAULT_CMDS_HANDLED {
                    deliver(&mut s, buf, asked);
                }
                return Err(Errno::EFAULT);
            }
            _ => {}
        }
        for r in replies {
            s.answer(r);
        }
        buf.header_mut().replies_done = replies.len() as i16;
        if deliver(&mut s, buf, asked) == 0 {
            return Err(Errno::EAGAIN);
        }
        Ok(())
    }

    fn reply_cmd(&mut self, _reply: &ScstUserReplyCmd) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }

    fn flush_cache(&mut self) -> Result<(), Errno> {
        Ok(())
    }

    fn capacity_changed(&mut self) -> Result<(), Errno> {
        Ok(())
    }

    fn prealloc_buffer(&mut self, _: u64, _: u32, _: bool) -> Result<u32, Errno> {
        Err(Errno::ENOSYS)
    }

    fn wait_fd(&self) -> Option<RawFd> {
        None
    }

    fn ioctls(&self) -> u64 {
        self.state().calls
    }
}

/// Moves up to `asked` queued subcommands into `buf`; how many.
fn deliver(s: &mut KernelState, buf: &mut MultiBuf, asked: usize) -> usize {
    let n = asked.min(s.queue.len());
    for i in 0..n {
        let cmd = s.queue.pop_front().unwrap();
        s.awaiting.insert(cmd.cmd_h, cmd.subcode);
        buf.cmds_mut()[i] = cmd;
    }
    buf.header_mut().cmds_cnt = n as i16;
    n
}
