//! Raw access to the memory named by a command's iovecs.

use bdev::IoVec;

/// Copies `src` into the memory named by `iovs`, starting `offset` bytes in;
/// returns the bytes copied (less than `src.len()` if the iovecs end first).
///
/// # Safety
/// Every iovec must name memory valid for writes for its whole length that
/// nothing else accesses during the call.
pub(in crate::lun) unsafe fn copy_to_iovs(iovs: &[IoVec], mut offset: usize, src: &[u8]) -> usize {
    let mut done = 0;
    for iov in iovs {
        if done == src.len() {
            break;
        }
        if offset >= iov.len {
            offset -= iov.len;
            continue;
        }
        let n = (iov.len - offset).min(src.len() - done);
        // SAFETY: the caller guarantees `iov` names `iov.len` writable bytes
        // nobody else touches; `offset + n <= iov.len` and `done + n <=
        // src.len()`, and `src` cannot overlap that memory while it is
        // borrowed as a shared slice by our caller.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().add(done), iov.base.add(offset), n) };
        done += n;
        offset = 0;
    }
    done
}

/// Copies from the memory named by `iovs`, starting `offset` bytes in, into
/// `dst`; returns the bytes copied.
///
/// # Safety
/// Every iovec must name memory valid for reads for its whole length that
/// nothing writes during the call.
pub(in crate::lun) unsafe fn copy_from_iovs(
    iovs: &[IoVec],
    mut offset: usize,
    dst: &mut [u8],
) -> usize {
    let mut done = 0;
    for iov in iovs {
        if done == dst.len() {
            break;
        }
        if offset >= iov.len {
            offset -= iov.len;
            continue;
        }
        let n = (iov.len - offset).min(dst.len() - done);
        // SAFETY: the caller guarantees `iov` names `iov.len` readable bytes;
        // `offset + n <= iov.len`, `done + n <= dst.len()`, and `dst` is an
        // exclusive borrow, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(iov.base.add(offset), dst.as_mut_ptr().add(done), n)
        };
        done += n;
        offset = 0;
    }
    done
}

/// Walks `len` bytes of the memory named by `iovs` from `offset` in
/// contiguous runs, handing each run and its position to `f`; stops early
/// when `f` returns `Some`.
///
/// # Safety
/// Every iovec must name memory valid for reads for its whole length that
/// nothing writes during the call.
pub(in crate::lun) unsafe fn scan_iovs<T>(
    iovs: &[IoVec],
    mut offset: usize,
    len: usize,
    mut f: impl FnMut(usize, &[u8]) -> Option<T>,
) -> Option<T> {
    let mut done = 0;
    for iov in iovs {
        if done == len {
            break;
        }
        if offset >= iov.len {
            offset -= iov.len;
            continue;
        }
        let n = (iov.len - offset).min(len - done);
        // SAFETY: the caller guarantees `iov` names `iov.len` readable bytes
        // that nobody writes during the call; `offset + n <= iov.len`.
        let run = unsafe { std::slice::from_raw_parts(iov.base.add(offset), n) };
        if let Some(found) = f(done, run) {
            return Some(found);
        }
        done += n;
        offset = 0;
    }
    None
}

/// Index of the first byte where the memory named by `iovs` (from
/// `offset`) differs from `expected`.
///
/// # Safety
/// As for [`scan_iovs`]; the iovecs must cover `offset + expected.len()`
/// bytes.
pub(in crate::lun) unsafe fn first_difference(
    iovs: &[IoVec],
    offset: usize,
    expected: &[u8],
) -> Option<usize> {
    // SAFETY: forwarded from the caller.
    unsafe {
        scan_iovs(iovs, offset, expected.len(), |at, run| {
            let want = &expected[at..at + run.len()];
            if run == want {
                None
            } else {
                run.iter()
                    .zip(want)
                    .position(|(a, b)| a != b)
                    .map(|i| at + i)
            }
        })
    }
}

/// Builds in `dst` the iovecs naming `len` bytes of `src` from `offset`.
pub(in crate::lun) fn slice_iovs(
    src: &[IoVec],
    mut offset: usize,
    mut len: usize,
    dst: &mut Vec<IoVec>,
) {
    dst.clear();
    for iov in src {
        if len == 0 {
            break;
        }
        if offset >= iov.len {
            offset -= iov.len;
            continue;
        }
        let n = (iov.len - offset).min(len);
        dst.push(IoVec {
            base: iov.base.wrapping_add(offset),
            len: n,
        });
        len -= n;
        offset = 0;
    }
}
