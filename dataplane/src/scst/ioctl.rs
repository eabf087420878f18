//! The real driver: [`ScstFd`] owns one `/dev/scst_user` file descriptor
//! and implements [`ScstDriver`] with raw ioctls (request numbers from
//! [`abi::ioctl`]).
//!
//! The fd is opened `O_RDWR | O_NONBLOCK | O_CLOEXEC`: scst_user latches
//! blocking vs. non-blocking at REGISTER_DEVICE from the open flags, so
//! O_NONBLOCK must be there from the start (a later `fcntl` has no effect).
//! One device per fd; closing the fd unregisters the device (the kernel
//! then completes whatever is in flight with errors).
//!
//! Every ioctl issued is counted ([`ScstDriver::ioctls`]): these are the
//! frontend's doorbells.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::abi::{
    self, ScstUserDevDesc, ScstUserOpt, ScstUserPreallocBuffer, ScstUserPreallocBufferIn,
    ScstUserReplyCmd,
};
use super::driver::{MultiBuf, ScstDriver};
use super::error::ScstError;
use super::idle_watch::WatchEntry;
use super::wake::WakeSet;

/// The raw ioctl wrappers (nix's `*_bad!` macros take the full request
/// number, here the values checked in [`abi::ioctl`]).
mod raw {
    use super::abi::{
        ioctl, ScstUserDevDesc, ScstUserGetMulti, ScstUserOpt, ScstUserPreallocBuffer,
        ScstUserReplyCmd,
    };

    nix::ioctl_write_ptr_bad!(
        /// `SCST_USER_REGISTER_DEVICE`: the kernel reads the 160-byte
        /// description and then `max(sizeof(DEV_USER_VERSION), 20)` bytes
        /// from each of its `license_str` and `version_str` pointers.
        ///
        /// # Safety
        /// `data` points to a readable `ScstUserDevDesc`.
        register_device,
        ioctl::REGISTER_DEVICE,
        ScstUserDevDesc
    );
    nix::ioctl_write_ptr_bad!(
        /// `SCST_USER_SET_OPTIONS`: the kernel reads 20 bytes.
        ///
        /// # Safety
        /// `data` points to a readable `ScstUserOpt`.
        set_options,
        ioctl::SET_OPTIONS,
        ScstUserOpt
    );
    nix::ioctl_read_bad!(
        /// `SCST_USER_GET_OPTIONS`: the kernel writes 20 bytes.
        ///
        /// # Safety
        /// `data` points to a writable `ScstUserOpt`.
        get_options,
        ioctl::GET_OPTIONS,
        ScstUserOpt
    );
    nix::ioctl_readwrite_bad!(
        /// `SCST_USER_REPLY_AND_GET_MULTI`: the kernel reads the 16-byte
        /// header and `replies_cnt` replies from `preplies`, writes
        /// `replies_done`, up to `cmds_cnt` 544-byte commands right after
        /// the header, and `cmds_cnt`.
        ///
        /// # Safety
        /// `data` points to a header followed by writable room for
        /// `cmds_cnt` commands.
        reply_and_get_multi,
        ioctl::REPLY_AND_GET_MULTI,
        ScstUserGetMulti
    );
    nix::ioctl_write_ptr_bad!(
        /// `SCST_USER_REPLY_CMD`: the kernel reads 56 bytes.
        ///
        /// # Safety
        /// `data` points to a readable `ScstUserReplyCmd`.
        reply_cmd,
        ioctl::REPLY_CMD,
        ScstUserReplyCmd
    );
    nix::ioctl_none_bad!(
        /// `SCST_USER_FLUSH_CACHE` (no argument).
        flush_cache,
        ioctl::FLUSH_CACHE
    );
    nix::ioctl_none_bad!(
        /// `SCST_USER_DEVICE_CAPACITY_CHANGED` (no argument).
        capacity_changed,
        ioctl::DEVICE_CAPACITY_CHANGED
    );
    nix::ioctl_readwrite_bad!(
        /// `SCST_USER_PREALLOC_BUFFER`: the kernel reads the 16-byte `in`
        /// member and writes the 4-byte `out` member of the union.
        ///
        /// # Safety
        /// `data` points to a readable and writable
        /// `ScstUserPreallocBuffer`.
        prealloc_buffer,
        ioctl::PREALLOC_BUFFER,
        ScstUserPreallocBuffer
    );
}

/// `SCST_USER_FLUSH_CACHE` on `fd`, from a thread other than the one
/// serving the device: the kernel suspends SCST's activity until every
/// command in flight has finished (up to 90 s), which needs the serving
/// thread to keep answering, then frees every buffer it caches (an
/// ON_CACHED_MEM_FREE each) — how a device being handed over gets its
/// memory back (see `device/handoff.rs`).
pub fn flush_cache(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: no argument; `fd` is open for the call (borrowed).
    unsafe { raw::flush_cache(fd.as_raw_fd()) }.map(drop)
}

/// One open `/dev/scst_user`: the kernel side of one scst_user device.
#[derive(Debug)]
pub struct ScstFd {
    fd: OwnedFd,
    path: PathBuf,
    ioctls: u64,
    /// What a sleeping reactor waits on (see [`WakeSet`]).
    wake: WakeSet,
    /// Its place in the idle watch of the polling thread (see
    /// [`IdleWatch`](super::idle_watch)).
    watch: WatchEntry,
}

impl ScstFd {
    /// Opens `path` (normally [`abi::DEV_USER_PATH`]) read-write,
    /// non-blocking, close-on-exec. A missing node gives
    /// [`ScstError::ModuleNotLoaded`] ("scst_user is not loaded (no
    /// /dev/scst_user; modprobe scst_user)") or, if `/sys/module/scst_user`
    /// exists, [`ScstError::DeviceNodeMissing`].
    pub fn open(path: &Path) -> Result<Self, ScstError> {
        Self::open_with_sysfs(path, Path::new("/sys"))
    }

    /// [`ScstFd::open`] with another sysfs root, where `module/scst_user`
    /// tells "module not loaded" from "node missing" (for tests).
    pub fn open_with_sysfs(path: &Path, sysfs: &Path) -> Result<Self, ScstError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
                ScstError::from_open_errno(
                    path.to_path_buf(),
                    errno,
                    sysfs.join("module").join(abi::DEV_USER_NAME),
                )
            })?;
        Self::adopt(OwnedFd::from(file), path)
    }

    /// Wraps an open `/dev/scst_user` fd: one opened here, or one received
    /// from another process (SCM_RIGHTS) that registered its device and
    /// handed it over; `path` names it in messages. The registration, its
    /// options and the non-blocking mode belong to the open file and carry
    /// over with it.
    pub fn adopt(fd: OwnedFd, path: &Path) -> Result<Self, ScstError> {
        let wake = WakeSet::new().map_err(|errno| ScstError::Open {
            path: path.to_path_buf(),
            errno,
            hint: "; creating the epoll set the reactor sleeps on failed",
        })?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            ioctls: 0,
            wake,
            watch: WatchEntry::new(),
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for ScstFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for ScstFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl ScstDriver for ScstFd {
    fn register(&mut self, desc: &ScstUserDevDesc) -> Result<(), Errno> {
        self.ioctls += 1;
        // SAFETY: `desc` is a live, readable 160-byte ScstUserDevDesc (the
        // size encoded in the request). The kernel only reads through the
        // `version_str`/`license_str` pointers inside (copy_from_user: a
        // bad pointer gives EFAULT, never a write into this process); the
        // trait's contract keeps them readable for the call.
        unsafe { raw::register_device(self.raw(), desc) }.map(drop)
    }

    fn set_options(&mut self, opt: &ScstUserOpt) -> Result<(), Errno> {
        self.ioctls += 1;
        // SAFETY: `opt` is a live, readable 20-byte ScstUserOpt; the kernel
        // only reads it.
        unsafe { raw::set_options(self.raw(), opt) }.map(drop)
    }

    fn get_options(&mut self) -> Result<ScstUserOpt, Errno> {
        let mut opt = ScstUserOpt::default();
        self.ioctls += 1;
        // SAFETY: `opt` is a live, writable 20-byte ScstUserOpt on our
        // stack; the kernel writes exactly sizeof(struct scst_user_opt) = 20
        // bytes into it, all of which are plain integers.
        unsafe { raw::get_options(self.raw(), &mut opt) }?;
        Ok(opt)
    }

    fn reply_and_get_multi(
        &mut self,
        buf: &mut MultiBuf,
        replies: &[ScstUserReplyCmd],
    ) -> Result<(), Errno> {
        let replies_cnt = i16::try_from(replies.len()).map_err(|_| Errno::EINVAL)?;
        let capacity = buf.capacity();
        let header = buf.header_mut();
        // The kernel writes up to `cmds_cnt` commands after the header:
        // never let it go past the buffer.
        if usize::try_from(header.cmds_cnt).map_or(true, |n| n > capacity) {
            return Err(Errno::EINVAL);
        }
        header.preplies = if replies.is_empty() {
            0
        } else {
            replies.as_ptr() as u64
        };
        header.replies_cnt = replies_cnt;
        // Kernels before commit 40f36a687 leave it alone when replies_cnt
        // is 0.
        header.replies_done = 0;
        self.ioctls += 1;
        // SAFETY: `buf` is one allocation of a 16-byte header followed by
        // `capacity` 544-byte command slots (MultiBuf's invariant), and
        // `cmds_cnt <= capacity` was checked above, so every byte the kernel
        // writes (header fields and at most `cmds_cnt` commands) is inside
        // it; `&mut buf` makes the access exclusive for the call. `preplies`
        // points to `replies.len()` live 56-byte replies that the kernel
        // only reads during the call. Buffers named by `pbuf` inside the
        // replies are pinned and filled by the kernel later: keeping them
        // alive until ON_FREE_CMD / ON_CACHED_MEM_FREE is the frontend's
        // pool contract.
        let result = unsafe { raw::reply_and_get_multi(self.raw(), buf.as_mut_ptr()) }.map(drop);
        if result == Err(Errno::EAGAIN) {
            // Nothing queued: the moment to arm the wake set (once).
            self.wake.on_idle(self.fd.as_fd());
        }
        result
    }

    fn reply_cmd(&mut self, reply: &ScstUserReplyCmd) -> Result<(), Errno> {
        self.ioctls += 1;
        // SAFETY: `reply` is a live, readable 56-byte ScstUserReplyCmd that
        // the kernel only reads; `pbuf` buffers: as in reply_and_get_multi.
        unsafe { raw::reply_cmd(self.raw(), reply) }.map(drop)
    }

    fn flush_cache(&mut self) -> Result<(), Errno> {
        self.ioctls += 1;
        // SAFETY: no argument; the fd is ours and open.
        unsafe { raw::flush_cache(self.raw()) }.map(drop)
    }

    fn capacity_changed(&mut self) -> Result<(), Errno> {
        self.ioctls += 1;
        // SAFETY: no argument; the fd is ours and open.
        unsafe { raw::capacity_changed(self.raw()) }.map(drop)
    }

    fn prealloc_buffer(&mut self, pbuf: u64, len: u32, for_clust_pool: bool) -> Result<u32, Errno> {
        let mut arg = ScstUserPreallocBuffer::default();
        arg.set_input(&ScstUserPreallocBufferIn {
            pbuf,
            bufflen: len,
            for_clust_pool: u8::from(for_clust_pool),
            ..Default::default()
        });
        self.ioctls += 1;
        // SAFETY: `arg` is a live 16-byte union on our stack; the kernel
        // reads 16 bytes (`in`) and writes 4 (`out.cmd_h`). It pins `pbuf`
        // for its SGV cache: the caller keeps that buffer alive until the
        // matching ON_CACHED_MEM_FREE (the frontend's pool contract).
        unsafe { raw::prealloc_buffer(self.raw(), &mut arg) }?;
        Ok(arg.output().cmd_h)
    }

    fn wait_fd(&self) -> Option<RawFd> {
        // Not the scst_user fd itself: see `WakeSet`.
        Some(self.wake.fd())
    }

    fn ioctls(&self) -> u64 {
        self.ioctls
    }

    fn may_have_work(&mut self, now: u64, interval: u64) -> bool {
        // Only an armed set says reliably that nothing is queued.
        !self.wake.armed() || self.watch.may_have_work(self.wake.as_fd(), now, interval)
    }

    fn handoff_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_node_without_the_module_says_modprobe() {
        let e = ScstFd::open_with_sysfs(
            Path::new("/nonexistent-dataplane/scst_user"),
            Path::new("/nonexistent-dataplane/sys"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "scst_user is not loaded (no /nonexistent-dataplane/scst_user; modprobe scst_user): \
             /nonexistent-dataplane/sys/module/scst_user does not exist either (load scst \
             first if needed: modprobe scst)"
        );
    }

    /// An fd that is not /dev/scst_user: every ioctl fails with ENOTTY (the
    /// request reached the kernel) and is counted.
    #[test]
    fn ioctls_on_another_file_fail_with_enotty_and_are_counted() {
        let mut fd = ScstFd::open_with_sysfs(Path::new("/dev/null"), Path::new("/sys")).unwrap();
        assert_eq!(fd.path(), Path::new("/dev/null"));
        // The reactor sleeps on the wake set, not on the fd itself.
        assert!(fd.wait_fd().is_some());
        assert_ne!(fd.wait_fd(), Some(fd.as_raw_fd()));
        // SAFETY: F_GETFL on our own open fd.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        assert_ne!(flags & libc::O_NONBLOCK, 0);
        assert_eq!(flags & libc::O_ACCMODE, libc::O_RDWR);
        // SAFETY: F_GETFD on our own open fd.
        let fdflags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(fdflags & libc::FD_CLOEXEC, 0);

        assert_eq!(fd.get_options(), Err(Errno::ENOTTY));
        assert_eq!(fd.set_options(&ScstUserOpt::default()), Err(Errno::ENOTTY));
        assert_eq!(fd.flush_cache(), Err(Errno::ENOTTY));
        assert_eq!(fd.capacity_changed(), Err(Errno::ENOTTY));
        assert_eq!(
            fd.reply_cmd(&ScstUserReplyCmd::default()),
            Err(Errno::ENOTTY)
        );
        assert_eq!(fd.prealloc_buffer(0, 4096, false), Err(Errno::ENOTTY));
        let mut buf = MultiBuf::new(4);
        buf.header_mut().cmds_cnt = 4;
        let replies = [ScstUserReplyCmd::default(); 2];
        assert_eq!(
            fd.reply_and_get_multi(&mut buf, &replies),
            Err(Errno::ENOTTY)
        );
        assert_eq!(buf.header().replies_cnt, 2);
        assert_eq!(buf.header().preplies, replies.as_ptr() as u64);
        assert_eq!(fd.ioctls(), 7);
        // Asking for more commands than the buffer holds never reaches the
        // kernel.
        buf.header_mut().cmds_cnt = 5;
        assert_eq!(fd.reply_and_get_multi(&mut buf, &[]), Err(Errno::EINVAL));
        buf.header_mut().cmds_cnt = -1;
        assert_eq!(fd.reply_and_get_multi(&mut buf, &[]), Err(Errno::EINVAL));
        assert_eq!(fd.ioctls(), 7);
        buf.header_mut().cmds_cnt = 0;
        assert_eq!(fd.reply_and_get_multi(&mut buf, &[]), Err(Errno::ENOTTY));
        assert_eq!(buf.header().preplies, 0);
        assert_eq!(buf.header().replies_cnt, 0);
        assert_eq!(fd.ioctls(), 8);
    }
}
