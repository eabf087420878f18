//! The handler's end: [`ScstSimDriver`] implements [`ScstDriver`], the
//! ioctls of `/dev/scst_user` (`dev_user_ioctl` in scst_user.c), over the
//! shared state.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use nix::errno::Errno;

use super::copy;
use super::shared::Shared;
use super::state::{Dev, State};
use dataplane::scst::abi::*;
use dataplane::scst::driver::{MultiBuf, ScstDriver};

/// The handler's end: a simulated `/dev/scst_user` fd. Dropping it is the
/// handler closing the fd (or dying). See the module docs.
#[derive(Debug)]
pub struct ScstSimDriver {
    shared: Arc<Shared>,
}

/// `__dev_user_set_opt`'s checks.
fn check_opt(opt: &ScstUserOpt) -> Result<(), Errno> {
    let bad = opt.parse_type > SCST_USER_PARSE_EXCEPTION
        || opt.on_free_cmd_type > SCST_USER_ON_FREE_CMD_IGNORE
        || opt.memory_reuse_type > SCST_USER_MEM_REUSE_ALL
        || opt.partial_transfers_type > SCST_USER_PARTIAL_TRANSFERS_SUPPORTED
        || opt.tst > 1
        || opt.queue_alg > 1
        || !matches!(opt.qerr, 0 | 1 | 3)
        || opt.swp > 1
        || opt.tas > 1
        || opt.has_own_order_mgmt > 1
        || opt.d_sense > 1
        || opt.tmf_only > 1
        || opt.ext_copy_remap_supported > 1;
    if bad {
        Err(Errno::EINVAL)
    } else {
        Ok(())
    }
}

/// The C string at the start of `bytes` (up to the first NUL).
fn c_str(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..n]
}

impl ScstSimDriver {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Copies to and from buffers the kernel has pinned (taken from the
    /// SGV cache) become plain memory copies, as in the kernel, which maps
    /// a cached buffer's pages once and reuses them; buffers the handler
    /// supplies in a reply are still checked (and fault cleanly) the first
    /// time. Without this every transfer goes through
    /// `process_vm_readv`/`process_vm_writev`, whose page pinning per call
    /// costs more than the copy itself: right for tests of a handler, too
    /// slow to benchmark one.
    ///
    /// # Safety
    /// The handler keeps every buffer it supplies (ALLOC_MEM and EXEC
    /// replies, PREALLOC_BUFFER) mapped, readable and writable for the
    /// length it was supplied for, and does not access it, until the
    /// simulator releases it (ON_FREE_CMD for an uncached buffer,
    /// ON_CACHED_MEM_FREE for a cached one) or this driver is dropped —
    /// the scst_user contract, which a real kernel enforces by pinning and
    /// this simulator, in this mode, trusts.
    pub unsafe fn trust_mapped_buffers(&mut self) {
        self.shared.lock().trust_pinned = true;
    }

    /// Another handle on the same open file, as `dup(2)` or a descriptor
    /// received over a unix socket gives: it reaches the same device, and
    /// the device is released only when every handle is dropped. (The
    /// trusted-copy mode of [`Self::trust_mapped_buffers`] belongs to the
    /// file and carries over.)
    pub fn duplicate(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Self::new(Arc::clone(&self.shared))
    }

    fn count_ioctl(&self) {
        self.shared.ioctls.fetch_add(1, Ordering::Relaxed);
    }

    /// `scst_suspend_activity`: waits until no command is in flight.
    fn suspend<'a>(&self, mut st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>, Errno> {
        let deadline = Instant::now() + st.cfg.suspend_timeout;
        while st.busy() {
            st.suspend_waiters += 1;
            let (g, timed_out) = self.shared.wait_until(st, deadline);
            st = g;
            st.suspend_waiters -= 1;
            if timed_out && st.busy() {
                return Err(Errno::EBUSY);
            }
        }
        Ok(st)
    }

    /// Ends a driver call: wakes waiters, and rings the wait fd when the
    /// call left subcommands it did not return.
    fn finish(&self, st: MutexGuard<'_, State>, left_work: bool) {
        let ring = left_work && st.has_work();
        self.shared.kick(&st);
        drop(st);
        if ring {
            self.shared.ring();
        }
    }
}

impl ScstDriver for ScstSimDriver {
    fn register(&mut self, desc: &ScstUserDevDesc) -> Result<(), Errno> {
        self.count_ioctl();
        let mut st = self.shared.lock();
        // dev_user_check_version: max(sizeof(DEV_USER_VERSION), 20) bytes
        // of each string, the license first.
        let len = (st.cfg.version.len() + 1).max(20);
        let mut buf = vec![0u8; len];
        state_copy_read(&mut buf, desc.license_str)?;
        buf[len - 1] = 0;
        let license = c_str(&buf);
        if !matches!(
            license,
            b"GPL" | b"GPL v2" | b"Dual BSD/GPL" | b"Dual MIT/GPL" | b"Dual MPL/GPL"
        ) {
            return Err(Errno::EPERM);
        }
        state_copy_read(&mut buf, desc.version_str)?;
        buf[len - 1] = 0;
        if c_str(&buf) != st.cfg.version.as_bytes() {
            // dmesg: "Incorrect version of user device .. Expected: .."
            return Err(Errno::EINVAL);
        }
        if matches!(desc.type_, TYPE_DISK | 0x05 | 0x07) {
            let bs = desc.block_size;
            if bs < 512 || !bs.is_power_of_two() {
                return Err(Errno::EINVAL);
            }
        }
        check_opt(&desc.opt)?;
        if st.dev.is_some() {
            // "Device already registered".
            return Err(Errno::EINVAL);
        }
        let mut name = desc.name;
        name[SCST_MAX_NAME - 1] = 0;
        let name = c_str(&name);
        let name = &name[..name.len().min(SCST_MAX_NAME - 2)];
        let mut opt = desc.opt;
        opt._pad = [0; 3];
        let blocking = !st.cfg.nonblocking;
        st.dev = Some(Dev {
            name: String::from_utf8_lossy(name).into_owned(),
            type_: desc.type_,
            block_size: desc.block_size,
            opt,
            blocking,
        });
        Ok(())
    }

    fn set_options(&mut self, opt: &ScstUserOpt) -> Result<(), Errno> {
        self.count_ioctl();
        let st = self.shared.lock();
        if st.dev.is_none() {
            return Err(Errno::ENODEV);
        }
        let mut st = self.suspend(st)?;
        check_opt(opt)?;
        let mut opt = *opt;
        opt._pad = [0; 3];
        if let Some(dev) = st.dev.as_mut() {
            dev.opt = opt;
        }
        Ok(())
    }

    fn get_options(&mut self) -> Result<ScstUserOpt, Errno> {
        self.count_ioctl();
        let st = self.shared.lock();
        st.dev.as_ref().map(|d| d.opt).ok_or(Errno::ENODEV)
    }

    fn reply_and_get_multi(
        &mut self,
        buf: &mut MultiBuf,
        replies: &[ScstUserReplyCmd],
    ) -> Result<(), Errno> {
        self.count_ioctl();
        let mut st = self.shared.lock();
        let Some(blocking) = st.dev.as_ref().map(|d| d.blocking) else {
            return Err(Errno::ENODEV);
        };
        let hdr = *buf.header();
        let count = hdr.replies_cnt.max(0) as usize;
        let result =
            if count > replies.len() || (count > 0 && hdr.preplies != replies.as_ptr() as u64) {
                // The kernel would read `replies_cnt` entries at `preplies`:
                // the slice does not back them.
                buf.header_mut().replies_done = 0;
                Err(Errno::EFAULT)
            } else {
                st.queued_since = false;
                st.prefetch_replies(&replies[..count]);
                let mut done = 0usize;
                let mut err = None;
                for r in &replies[..count] {
                    match st.process_reply(r) {
                        Ok(()) => done += 1,
                        Err(e) => {
                            err = Some(e);
                            break;
                        }
                    }
                }
                st.settle();
                buf.header_mut().replies_done = done as i16;
                err.map_or(Ok(()), Err)
            };
        if let Err(e) = result {
            buf.header_mut().cmds_cnt = 0;
            self.finish(st, true);
            return Err(e);
        }
        let want = (hdr.cmds_cnt.max(0) as usize).min(buf.capacity());
        let mut n = 0usize;
        let mut outcome = Ok(());
        let deadline = Instant::now() + st.cfg.blocking_wait;
        while n < want {
            st.process_active();
            if let Some(ui) = st.fetch_one() {
                st.write_cmd(ui, &mut buf.cmds_mut()[n]);
                n += 1;
                continue;
            }
            st.settle();
            if n > 0 {
                break; // only the first command may block
            }
            if !blocking {
                outcome = Err(Errno::EAGAIN);
                break;
            }
            st.fetch_waiters += 1;
            let (g, timed_out) = self.shared.wait_until(st, deadline);
            st = g;
            st.fetch_waiters -= 1;
            if timed_out && !st.has_work() {
                outcome = Err(Errno::EINTR);
                break;
            }
        }
        st.settle();
        buf.header_mut().cmds_cnt = n as i16;
        self.finish(st, false);
        outcome
    }

    fn reply_cmd(&mut self, reply: &ScstUserReplyCmd) -> Result<(), Errno> {
        self.count_ioctl();
        let mut st = self.shared.lock();
        if st.dev.is_none() {
            return Err(Errno::ENODEV);
        }
        st.queued_since = false;
        let res = st.process_reply(reply);
        st.settle();
        let left = st.queued_since;
        self.finish(st, left);
        res
    }

    fn flush_cache(&mut self) -> Result<(), Errno> {
        self.count_ioctl();
        let st = self.shared.lock();
        if st.dev.is_none() {
            return Err(Errno::ENODEV);
        }
        let mut st = self.suspend(st)?;
        st.queued_since = false;
        st.flush_idle();
        let left = st.queued_since;
        self.finish(st, left);
        Ok(())
    }

    fn capacity_changed(&mut self) -> Result<(), Errno> {
        self.count_ioctl();
        let mut st = self.shared.lock();
        if st.dev.is_none() {
            return Err(Errno::ENODEV);
        }
        st.capacity_changed();
        Ok(())
    }

    fn prealloc_buffer(&mut self, pbuf: u64, len: u32, for_clust_pool: bool) -> Result<u32, Errno> {
        let _ = for_clust_pool; // one pool (see the module docs)
        self.count_ioctl();
        let mut st = self.shared.lock();
        if st.dev.is_none() {
            return Err(Errno::ENODEV);
        }
        st.queued_since = false;
        let res = st.prealloc(pbuf, len);
        let left = st.queued_since;
        self.finish(st, left);
        res
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.shared.wake.as_raw_fd())
    }

    fn ioctls(&self) -> u64 {
        self.shared.ioctls.load(Ordering::Relaxed)
    }
}

fn state_copy_read(buf: &mut [u8], addr: u64) -> Result<(), Errno> {
    copy::read_remote(buf, addr)
}

impl Drop for ScstSimDriver {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) > 1 {
            return; // another handle keeps the file open
        }
        let mut st = self.shared.lock();
        // The initiator may be reading pinned buffers, which the handler
        // may unmap once this returns: let it finish (it needs no lock for
        // that, and takes it once to end).
        while st.reaping {
            drop(st);
            std::thread::yield_now();
            st = self.shared.lock();
        }
        st.release();
        drop(st);
        self.shared.cond.notify_all();
    }
}
