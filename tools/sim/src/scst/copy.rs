//! Access to handler memory, the way the kernel reaches it: through
//! `process_vm_readv`/`process_vm_writev` on our own process, so that a bad
//! pointer from the handler gives `EFAULT` (like `copy_from_user` or a failed
//! `get_user_pages`) instead of undefined behaviour.
//!
//! Data buffers are copied in batches (one system call for every buffer of
//! one handler call, split at `IOV_MAX`), so the simulator adds no system
//! call per command. Small one-off reads (version strings, sense, WRITE SAME
//! descriptors) use [`read_remote`].

use std::io::{IoSlice, IoSliceMut};

use nix::errno::Errno;
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;

/// Most iovecs one `process_vm_*` call takes (`IOV_MAX` / `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Reads `dst.len()` bytes of handler memory at `addr` (`copy_from_user`).
/// All or nothing: a fault anywhere in the range is `EFAULT`.
pub(super) fn read_remote(dst: &mut [u8], addr: u64) -> Result<(), Errno> {
    if dst.is_empty() {
        return Ok(());
    }
    let len = dst.len();
    let remote = [RemoteIoVec {
        base: usize::try_from(addr).map_err(|_| Errno::EFAULT)?,
        len,
    }];
    match process_vm_readv(Pid::this(), &mut [IoSliceMut::new(dst)], &remote) {
        Ok(n) if n == len => Ok(()),
        Ok(_) => Err(Errno::EFAULT),
        Err(e) => Err(e),
    }
}

/// Writes `src` to handler memory at `addr` (`copy_to_user`, or a write
/// into pages pinned with `FOLL_WRITE`). All or nothing, like
/// [`read_remote`].
pub(super) fn write_remote(src: &[u8], addr: u64) -> Result<(), Errno> {
    if src.is_empty() {
        return Ok(());
    }
    let len = src.len();
    let remote = [RemoteIoVec {
        base: usize::try_from(addr).map_err(|_| Errno::EFAULT)?,
        len,
    }];
    match process_vm_writev(Pid::this(), &[IoSlice::new(src)], &remote) {
        Ok(n) if n == len => Ok(()),
        Ok(_) => Err(Errno::EFAULT),
        Err(e) => Err(e),
    }
}

/// Checks that every page of `[addr, addr + len)` is readable and writable
/// (what `get_user_pages(FOLL_WRITE)` needs): reads one byte of each page
/// and writes it back unchanged. Used for buffers the handler hands over
/// without data in them (`PREALLOC_BUFFER`).
pub(super) fn probe_writable(addr: u64, len: usize, page_size: usize) -> Result<(), Errno> {
    let start = usize::try_from(addr).map_err(|_| Errno::EFAULT)?;
    let end = start.checked_add(len).ok_or(Errno::EFAULT)?;
    let mut at = start;
    while at < end {
        let mut byte = [0u8; 1];
        read_remote(&mut byte, at as u64)?;
        write_remote(&byte, at as u64)?;
        at = (at - at % page_size) + page_size;
    }
    Ok(())
}

/// One `struct iovec` with plain integers, so that the scratch arrays can
/// live in the `Send` simulator state (libc's `iovec` holds a raw pointer).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RawIov {
    base: usize,
    len: usize,
}

const _: () = {
    assert!(std::mem::size_of::<RawIov>() == std::mem::size_of::<libc::iovec>());
    assert!(std::mem::align_of::<RawIov>() == std::mem::align_of::<libc::iovec>());
};

/// Direction of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dir {
    /// Handler memory → simulator buffer.
    FromHandler,
    /// Simulator buffer → handler memory.
    ToHandler,
}

/// Scratch iovec arrays for batched copies, allocated once
/// ([`CopyBatch::with_capacity`]) and reused.
#[derive(Debug)]
pub(super) struct CopyBatch {
    local: Vec<RawIov>,
    remote: Vec<RawIov>,
}

impl CopyBatch {
    /// Arrays for `copies` copies per call (at most [`IOV_MAX`]: one system
    /// call takes no more), so that [`run`](Self::run) never grows them.
    /// Grown on demand instead, they grew whenever timing made a batch
    /// larger than any before, in the middle of a steady state.
    pub(super) fn with_capacity(copies: usize) -> Self {
        let n = copies.min(IOV_MAX);
        Self {
            local: Vec::with_capacity(n),
            remote: Vec::with_capacity(n),
        }
    }

    /// Performs `copies` (local address, remote address, length) in `dir`
    /// with as few system calls as possible and calls `failed(i)` for each
    /// copy `i` that faulted (it copied nothing useful; the others are
    /// complete). Zero-length copies always succeed.
    ///
    /// # Safety
    /// Every local address must be valid for `len` bytes — for reads (in
    /// `FromHandler`) writable, and not accessed by anything else — until
    /// this returns.
    pub(super) unsafe fn run(
        &mut self,
        dir: Dir,
        copies: &[(usize, u64, usize)],
        mut failed: impl FnMut(usize),
    ) {
        let mut first = 0;
        while first < copies.len() {
            self.local.clear();
            self.remote.clear();
            // Indices (into `copies`) of the entries in this call.
            let mut end = first;
            let mut total = 0usize;
            while end < copies.len() && self.remote.len() < IOV_MAX {
                let (local, remote, len) = copies[end];
                end += 1;
                if len == 0 {
                    continue;
                }
                let Ok(base) = usize::try_from(remote) else {
                    failed(end - 1);
                    continue;
                };
                self.local.push(RawIov { base: local, len });
                self.remote.push(RawIov { base, len });
                total += len;
            }
            if self.remote.is_empty() {
                first = end;
                continue;
            }
            let pid = Pid::this().as_raw();
            let (lp, lc) = (self.local.as_ptr().cast::<libc::iovec>(), self.local.len());
            let (rp, rc) = (
                self.remote.as_ptr().cast::<libc::iovec>(),
                self.remote.len(),
            );
            let n = match dir {
                // SAFETY: `local`/`remote` are RawIov arrays laid out like
                // `struct iovec` (checked above) with `lc`/`rc` entries. The
                // local ranges are valid, writable and unaliased for the call
                // (caller's contract); the remote ranges are only interpreted
                // by the kernel, which checks them and reports EFAULT.
                Dir::FromHandler => unsafe {
                    libc::process_vm_readv(pid, lp, lc as _, rp, rc as _, 0)
                },
                // SAFETY: as above; the local ranges are only read.
                Dir::ToHandler => unsafe {
                    libc::process_vm_writev(pid, lp, lc as _, rp, rc as _, 0)
                },
            };
            if n >= 0 && n as usize == total {
                first = end;
                continue;
            }
            // The kernel never splits one iovec element: every element
            // before the returned count is complete; the next one faulted.
            // Anything else than EFAULT (ESRCH, EPERM, ENOMEM) fails the
            // first element too; the rest are retried.
            let mut done = if n > 0 { n as usize } else { 0 };
            let mut i = first;
            while i < end {
                let len = copies[i].2;
                if len != 0 && usize::try_from(copies[i].1).is_ok() {
                    if done >= len {
                        done -= len;
                    } else {
                        failed(i);
                        break;
                    }
                }
                i += 1;
            }
            // Past the faulting element (if the count stopped inside one
            // — which the kernel does not do — that element failed too).
            first = if i < end { i + 1 } else { end };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_reports_exactly_the_faulting_copy() {
        let src_a = [1u8; 64];
        let src_c = [3u8; 32];
        let mut dst = [[0u8; 64]; 3];
        let bad = 8u64; // never mapped
        let copies = [
            (dst[0].as_mut_ptr() as usize, src_a.as_ptr() as u64, 64),
            (dst[1].as_mut_ptr() as usize, bad, 16),
            (dst[2].as_mut_ptr() as usize, src_c.as_ptr() as u64, 32),
        ];
        let mut failures = Vec::new();
        // SAFETY: the local pointers are into `dst`, live and unaliased.
        unsafe {
            CopyBatch::with_capacity(copies.len())
                .run(Dir::FromHandler, &copies, |i| failures.push(i));
        }
        assert_eq!(failures, vec![1]);
        assert_eq!(dst[0], [1u8; 64]);
        assert_eq!(&dst[2][..32], &[3u8; 32]);
        assert_eq!(dst[1], [0u8; 64]);
    }

    #[test]
    fn remote_reads_fault_instead_of_crashing() {
        let mut buf = [0u8; 4];
        assert_eq!(read_remote(&mut buf, 16), Err(Errno::EFAULT));
        let src = *b"GPL\0";
        read_remote(&mut buf, src.as_ptr() as u64).unwrap();
        assert_eq!(&buf, b"GPL\0");
        let text = "read only";
        assert_eq!(
            write_remote(b"x", text.as_ptr() as u64),
            Err(Errno::EFAULT),
            "string literals live in read-only pages"
        );
    }
}
