//! The contract between the SCST frontend and the kernel side of one
//! scst_user device.
//!
//! [`ScstDriver`] is what the frontend ([`super::device`]) calls: the real
//! `/dev/scst_user` file descriptor (`super::ioctl`) or a kernel side in the
//! same process. Both take exactly the ABI structs, so the same frontend code
//! serves both, and an in-process kernel side can check everything the
//! kernel would.
//!
//! Errors are errno values, as the ioctls return them; the frontend maps them
//! to actions (EAGAIN = nothing new, ESRCH/EINVAL on a reply = that reply was
//! refused, ...).

use std::os::fd::{BorrowedFd, RawFd};

use nix::errno::Errno;

use super::abi::{
    ScstUserDevDesc, ScstUserGetCmd, ScstUserGetMulti, ScstUserOpt, ScstUserReplyCmd,
};

/// The buffer of one `SCST_USER_REPLY_AND_GET_MULTI`: the
/// [`ScstUserGetMulti`] header immediately followed by room for `capacity`
/// [`ScstUserGetCmd`]s, in one allocation (the kernel writes the commands
/// right after the header). Allocated once per device; reused every poll.
#[derive(Debug)]
pub struct MultiBuf {
    /// Backing store: 8-aligned, header then commands.
    words: Box<[u64]>,
    capacity: usize,
}

const HEADER_WORDS: usize = std::mem::size_of::<ScstUserGetMulti>() / 8;
const CMD_WORDS: usize = std::mem::size_of::<ScstUserGetCmd>() / 8;
const _: () = assert!(HEADER_WORDS * 8 == 16 && CMD_WORDS * 8 == 544);

impl MultiBuf {
    /// Room for `capacity` commands per call (at most `i16::MAX`).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, i16::MAX as usize);
        Self {
            words: vec![0u64; HEADER_WORDS + capacity * CMD_WORDS].into_boxed_slice(),
            capacity,
        }
    }

    /// Commands one call can return.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The header.
    pub fn header(&self) -> &ScstUserGetMulti {
        // SAFETY: the buffer starts with HEADER_WORDS u64s (8-aligned, 16
        // bytes), exactly a ScstUserGetMulti, which is plain data.
        unsafe { &*self.words.as_ptr().cast::<ScstUserGetMulti>() }
    }

    /// The header, for writing.
    pub fn header_mut(&mut self) -> &mut ScstUserGetMulti {
        // SAFETY: as in `header`; `&mut self` gives exclusive access.
        unsafe { &mut *self.words.as_mut_ptr().cast::<ScstUserGetMulti>() }
    }

    /// All command slots (valid ones: the first `header().cmds_cnt` after a
    /// successful call).
    pub fn cmds(&self) -> &[ScstUserGetCmd] {
        // SAFETY: after the header come `capacity` slots of CMD_WORDS u64s
        // each; ScstUserGetCmd is 544 bytes, align 8, plain data.
        unsafe {
            std::slice::from_raw_parts(
                self.words
                    .as_ptr()
                    .add(HEADER_WORDS)
                    .cast::<ScstUserGetCmd>(),
                self.capacity,
            )
        }
    }

    /// All command slots, for writing (the kernel side fills them).
    pub fn cmds_mut(&mut self) -> &mut [ScstUserGetCmd] {
        // SAFETY: as in `cmds`; `&mut self` gives exclusive access.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.words
                    .as_mut_ptr()
                    .add(HEADER_WORDS)
                    .cast::<ScstUserGetCmd>(),
                self.capacity,
            )
        }
    }

    /// The whole buffer as the ioctl argument.
    pub fn as_mut_ptr(&mut self) -> *mut ScstUserGetMulti {
        self.words.as_mut_ptr().cast()
    }
}

/// The kernel side of one scst_user device. See the module docs.
pub trait ScstDriver: Send {
    /// `SCST_USER_REGISTER_DEVICE`. The strings behind `desc.version_str`
    /// and `desc.license_str` must stay readable for the call.
    fn register(&mut self, desc: &ScstUserDevDesc) -> Result<(), Errno>;

    /// `SCST_USER_SET_OPTIONS`.
    fn set_options(&mut self, opt: &ScstUserOpt) -> Result<(), Errno>;

    /// `SCST_USER_GET_OPTIONS`.
    fn get_options(&mut self) -> Result<ScstUserOpt, Errno>;

    /// `SCST_USER_REPLY_AND_GET_MULTI` with `buf`'s header prepared by the
    /// caller: `preplies`/`replies_cnt` describe `replies` (the caller sets
    /// them from the slice), `cmds_cnt` is how many commands it wants
    /// (at most `buf.capacity()`). On return `replies_done` says how many
    /// replies were processed and `cmds_cnt` how many commands were written.
    /// `Err(EAGAIN)` in non-blocking mode: no command, replies were still
    /// processed (`replies_done` valid).
    fn reply_and_get_multi(
        &mut self,
        buf: &mut MultiBuf,
        replies: &[ScstUserReplyCmd],
    ) -> Result<(), Errno>;

    /// `SCST_USER_REPLY_CMD`.
    fn reply_cmd(&mut self, reply: &ScstUserReplyCmd) -> Result<(), Errno>;

    /// `SCST_USER_FLUSH_CACHE`.
    fn flush_cache(&mut self) -> Result<(), Errno>;

    /// `SCST_USER_DEVICE_CAPACITY_CHANGED`.
    fn capacity_changed(&mut self) -> Result<(), Errno>;

    /// `SCST_USER_PREALLOC_BUFFER`: returns the handle the kernel will name
    /// the buffer by in `ON_CACHED_MEM_FREE`.
    fn prealloc_buffer(&mut self, pbuf: u64, len: u32, for_clust_pool: bool) -> Result<u32, Errno>;

    /// A file descriptor that becomes readable when commands are waiting
    /// (`poll` on /dev/scst_user), for the adaptive idle policy.
    fn wait_fd(&self) -> Option<RawFd>;

    /// ioctls issued so far (the frontend's doorbells).
    fn ioctls(&self) -> u64;

    /// Whether an ask for work with nothing to answer is worth an ioctl
    /// now (clock ticks `now`), given that the device asks every
    /// `interval` ticks while idle: `false` only when the driver knows, as
    /// of at most `interval` ago, that nothing is queued (the real fd's
    /// [`IdleWatch`](super::idle_watch)). The default: always ask.
    fn may_have_work(&mut self, now: u64, interval: u64) -> bool {
        let _ = (now, interval);
        true
    }

    /// The `/dev/scst_user` file descriptor itself, which another process
    /// can be given to take the registered device over (see
    /// `device/handoff.rs`); `None` for a kernel side that is not a file.
    fn handoff_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// A driver chosen at run time (the real fd or an in-process kernel side,
/// as `dataplane serve`'s hosts do): every call forwards, one indirect call per ioctl.
impl<T: ScstDriver + ?Sized> ScstDriver for Box<T> {
    fn register(&mut self, desc: &ScstUserDevDesc) -> Result<(), Errno> {
        (**self).register(desc)
    }

    fn set_options(&mut self, opt: &ScstUserOpt) -> Result<(), Errno> {
        (**self).set_options(opt)
    }

    fn get_options(&mut self) -> Result<ScstUserOpt, Errno> {
        (**self).get_options()
    }

    fn reply_and_get_multi(
        &mut self,
        buf: &mut MultiBuf,
        replies: &[ScstUserReplyCmd],
    ) -> Result<(), Errno> {
        (**self).reply_and_get_multi(buf, replies)
    }

    fn reply_cmd(&mut self, reply: &ScstUserReplyCmd) -> Result<(), Errno> {
        (**self).reply_cmd(reply)
    }

    fn flush_cache(&mut self) -> Result<(), Errno> {
        (**self).flush_cache()
    }

    fn capacity_changed(&mut self) -> Result<(), Errno> {
        (**self).capacity_changed()
    }

    fn prealloc_buffer(&mut self, pbuf: u64, len: u32, for_clust_pool: bool) -> Result<u32, Errno> {
        (**self).prealloc_buffer(pbuf, len, for_clust_pool)
    }

    fn wait_fd(&self) -> Option<RawFd> {
        (**self).wait_fd()
    }

    fn ioctls(&self) -> u64 {
        (**self).ioctls()
    }

    fn may_have_work(&mut self, now: u64, interval: u64) -> bool {
        (**self).may_have_work(now, interval)
    }

    fn handoff_fd(&self) -> Option<BorrowedFd<'_>> {
        (**self).handoff_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_buffer_layout() {
        let mut b = MultiBuf::new(3);
        assert_eq!(b.capacity(), 3);
        b.header_mut().cmds_cnt = 3;
        b.cmds_mut()[2].cmd_h = 42;
        let base = b.as_mut_ptr() as usize;
        assert_eq!(base % 8, 0);
        assert_eq!(b.cmds().as_ptr() as usize - base, 16);
        assert_eq!(&b.cmds()[2] as *const _ as usize - base, 16 + 2 * 544);
        assert_eq!(b.header().cmds_cnt, 3);
        assert_eq!(b.cmds()[2].cmd_h, 42);
        assert_eq!(MultiBuf::new(0).capacity(), 1);
    }
}
