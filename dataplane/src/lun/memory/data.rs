//! [`DataBuffer`]: a command's data buffer, the frontend's memory named by
//! the iovecs given to `submit`.

use std::fmt;

use bdev::{IoVec, SgList};

/// Iovecs a buffer holds without growing its arrays; a longer list grows
/// them once (their capacity is kept), so steady state does not allocate.
const INITIAL_IOVS: usize = 8;

/// The data buffer of one task slot: the memory named by the iovecs of the
/// command in the slot, with safe operations on it.
///
/// # Invariants
/// - **Attached** (from [`attach`](Self::attach) to [`detach`](Self::detach)):
///   every iovec in `iovs` names memory that is valid for reads and writes
///   for its whole length, and nothing accesses that memory but this buffer
///   and the bdev requests it lends it to. `len` is the sum of the lengths.
///   This is what `CommandExecutor::submit` promises for the command's
///   data until its response is delivered; the one `unsafe` call of
///   `attach`, at the submit boundary, carries the promise over, and the
///   task detaches its buffer when it finishes, before the response goes
///   out.
/// - **Detached**: `iovs` is empty and `len` is 0, so every operation sees
///   no bytes.
/// - **Lent** (`lent`): one bdev request holds an [`SgList`] pointing at
///   `iovs` or `sub_iovs` and reads or writes the memory until it completes.
///   Meanwhile the buffer touches neither the bytes nor the two arrays: the
///   byte operations, a second loan, `attach` and `detach` panic. The task
///   ends the loan with [`give_back`](Self::give_back) when the request's
///   completion has been delivered (the port's contract: after that the
///   bdev no longer touches the memory). Dropped while lent, the buffer
///   leaks its arrays rather than free them under the bdev.
pub(in crate::lun) struct DataBuffer {
    iovs: Vec<IoVec>,
    /// The iovecs of a sub-range lent by [`lend_range`](Self::lend_range).
    sub_iovs: Vec<IoVec>,
    len: usize,
    lent: bool,
}

impl DataBuffer {
    /// A detached buffer with its iovec arrays preallocated.
    pub(in crate::lun) fn new() -> Self {
        Self {
            iovs: Vec::with_capacity(INITIAL_IOVS),
            sub_iovs: Vec::with_capacity(INITIAL_IOVS),
            len: 0,
            lent: false,
        }
    }

    /// Attaches the memory named by `data` (copying the iovec list, so
    /// `data` itself may be reused once this returns).
    ///
    /// # Safety
    /// Until [`detach`](Self::detach) (or the buffer is dropped), the memory
    /// named by `data` must stay valid for reads and writes, and nothing but
    /// this buffer and the bdev requests it lends may access it: this is the
    /// contract of [`CommandExecutor::submit`](crate::exec::CommandExecutor::submit)
    /// for a command whose task detaches before its response is delivered.
    ///
    /// # Panics
    /// If the buffer is lent.
    pub(in crate::lun) unsafe fn attach(&mut self, data: &[IoVec]) {
        assert!(!self.lent, "attach while the data buffer is lent");
        self.iovs.clear();
        self.iovs.extend_from_slice(data);
        self.len = data.iter().map(|iov| iov.len).sum();
    }

    /// Forgets the memory: from here on the buffer sees no bytes.
    ///
    /// # Panics
    /// If the buffer is lent.
    pub(in crate::lun) fn detach(&mut self) {
        assert!(!self.lent, "detach while the data buffer is lent");
        self.iovs.clear();
        self.len = 0;
    }

    /// Total bytes.
    pub(in crate::lun) fn len(&self) -> usize {
        self.len
    }

    /// Copies `src` into the buffer from `offset`; returns the bytes copied
    /// (fewer than `src.len()` if the buffer ends first).
    ///
    /// # Panics
    /// If the buffer is lent.
    pub(in crate::lun) fn write_at(&mut self, mut offset: usize, src: &[u8]) -> usize {
        assert!(!self.lent, "write to a lent data buffer");
        let mut done = 0;
        for iov in &self.iovs {
            if done == src.len() {
                break;
            }
            if offset >= iov.len {
                offset -= iov.len;
                continue;
            }
            let n = (iov.len - offset).min(src.len() - done);
            // SAFETY: by the invariant `iov` names `iov.len` bytes valid for
            // writes that only this buffer accesses (it is not lent), and
            // `offset + n <= iov.len`, `done + n <= src.len()`. `src` cannot
            // overlap that memory: the buffer never hands out references into
            // it, and nothing else may access it.
            unsafe {
                std::ptr::copy_nonoverlapping(src.as_ptr().add(done), iov.base.add(offset), n)
            };
            done += n;
            offset = 0;
        }
        done
    }

    /// Copies from the buffer, starting `offset` bytes in, into `dst`;
    /// returns the bytes copied (fewer than `dst.len()` if the buffer ends
    /// first).
    ///
    /// # Panics
    /// If the buffer is lent.
    pub(in crate::lun) fn read_at(&self, offset: usize, dst: &mut [u8]) -> usize {
        let mut copied = 0;
        self.scan(offset, dst.len(), |at, run| {
            dst[at..at + run.len()].copy_from_slice(run);
            copied += run.len();
            None::<()>
        });
        copied
    }

    /// Whether the `len` bytes from `offset` (as many of them as the buffer
    /// has) are all zero.
    ///
    /// # Panics
    /// If the buffer is lent.
    pub(in crate::lun) fn is_zero(&self, offset: usize, len: usize) -> bool {
        self.scan(offset, len, |_, run| {
            run.iter().any(|&b| b != 0).then_some(())
        })
        .is_none()
    }

    /// Index (from `offset`) of the first byte where the buffer differs from
    /// `expected`, looking at as many of `expected.len()` bytes as the buffer
    /// has from `offset`.
    ///
    /// # Panics
    /// If the buffer is lent.
    pub(in crate::lun) fn first_difference(&self, offset: usize, expected: &[u8]) -> Option<usize> {
        self.scan(offset, expected.len(), |at, run| {
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

    /// Walks `len` bytes from `offset` in contiguous runs, handing each run
    /// and its position (from `offset`) to `f`; stops early when `f`
    /// returns `Some`.
    fn scan<T>(
        &self,
        mut offset: usize,
        len: usize,
        mut f: impl FnMut(usize, &[u8]) -> Option<T>,
    ) -> Option<T> {
        assert!(!self.lent, "read from a lent data buffer");
        let mut done = 0;
        for iov in &self.iovs {
            if done == len {
                break;
            }
            if offset >= iov.len {
                offset -= iov.len;
                continue;
            }
            let n = (iov.len - offset).min(len - done);
            // SAFETY: by the invariant `iov` names `iov.len` readable bytes
            // that nothing writes while the buffer is not lent and `&self` is
            // borrowed (writes need `&mut self`); `offset + n <= iov.len`.
            let run = unsafe { std::slice::from_raw_parts(iov.base.add(offset), n) };
            if let Some(found) = f(done, run) {
                return Some(found);
            }
            done += n;
            offset = 0;
        }
        None
    }

    /// Lends the whole buffer to one bdev request: the list to put in it.
    ///
    /// # Panics
    /// If the buffer is already lent.
    pub(in crate::lun) fn lend(&mut self) -> SgList {
        assert!(!self.lent, "data buffer lent twice");
        self.lent = true;
        // SAFETY: the memory is valid and ours alone (invariant); from now
        // until `give_back` the buffer neither touches it nor changes or
        // frees `iovs` (lent; dropping leaks), so the request may use both
        // until it completes, which is when the task gives the loan back.
        unsafe { SgList::from_slice(&self.iovs) }
    }

    /// Lends `len` bytes from `offset` to one bdev request (fewer if the
    /// buffer ends first): the list to put in it.
    ///
    /// # Panics
    /// If the buffer is already lent.
    pub(in crate::lun) fn lend_range(&mut self, mut offset: usize, mut len: usize) -> SgList {
        assert!(!self.lent, "data buffer lent twice");
        self.sub_iovs.clear();
        for iov in &self.iovs {
            if len == 0 {
                break;
            }
            if offset >= iov.len {
                offset -= iov.len;
                continue;
            }
            let n = (iov.len - offset).min(len);
            self.sub_iovs.push(IoVec {
                base: iov.base.wrapping_add(offset),
                len: n,
            });
            len -= n;
            offset = 0;
        }
        self.lent = true;
        // SAFETY: `sub_iovs` names parts of the attached memory, valid and
        // ours alone (invariant); as for `lend`, neither the memory nor
        // `sub_iovs` is touched, changed or freed until `give_back`.
        unsafe { SgList::from_slice(&self.sub_iovs) }
    }

    /// Ends the loan: the request the buffer was lent to has completed.
    pub(in crate::lun) fn give_back(&mut self) {
        debug_assert!(self.lent, "give_back without a loan");
        self.lent = false;
    }
}

impl Drop for DataBuffer {
    fn drop(&mut self) {
        if self.lent {
            // A bdev may still read the iovec arrays: leak them rather than
            // free memory under it.
            std::mem::forget(std::mem::take(&mut self.iovs));
            std::mem::forget(std::mem::take(&mut self.sub_iovs));
        }
    }
}

impl fmt::Debug for DataBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataBuffer")
            .field("iovs", &self.iovs.len())
            .field("len", &self.len)
            .field("lent", &self.lent)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer over `memory` cut into iovecs at `cuts`.
    fn attached(memory: &mut [u8], cuts: &[usize]) -> DataBuffer {
        let mut iovs = Vec::new();
        let mut rest = memory;
        let mut at = 0;
        for &cut in cuts {
            let (head, tail) = rest.split_at_mut(cut - at);
            iovs.push(IoVec::from_slice(head));
            rest = tail;
            at = cut;
        }
        iovs.push(IoVec::from_slice(rest));
        let mut buffer = DataBuffer::new();
        // SAFETY: every test drops the buffer before it touches `memory`
        // again.
        unsafe { buffer.attach(&iovs) };
        buffer
    }

    #[test]
    fn copies_across_iovecs_and_stops_at_the_end() {
        let mut memory = [0u8; 9];
        let mut buffer = attached(&mut memory, &[3, 4]);
        assert_eq!(buffer.len(), 9);
        assert_eq!(buffer.write_at(2, &[1, 2, 3, 4, 5]), 5);
        assert_eq!(buffer.write_at(7, &[8, 9, 10]), 2);
        assert_eq!(buffer.write_at(20, &[1]), 0);
        let mut out = [0xEE; 10];
        assert_eq!(buffer.read_at(1, &mut out), 8);
        assert_eq!(out, [0, 1, 2, 3, 4, 5, 8, 9, 0xEE, 0xEE]);
        assert_eq!(buffer.first_difference(2, &[1, 2, 3, 4, 5]), None);
        assert_eq!(buffer.first_difference(2, &[1, 2, 3, 0, 5]), Some(3));
        assert!(buffer.is_zero(0, 2));
        assert!(!buffer.is_zero(0, 3));
        buffer.detach();
        assert_eq!(buffer.len(), 0);
        assert_eq!(buffer.read_at(0, &mut out), 0);
        drop(buffer);
        assert_eq!(memory, [0, 0, 1, 2, 3, 4, 5, 8, 9]);
    }

    #[test]
    fn lends_the_whole_buffer_or_a_range() {
        let mut memory = [0u8; 9];
        let base = memory.as_mut_ptr();
        let mut buffer = attached(&mut memory, &[3, 4]);
        assert_eq!(buffer.lend().total_len(), 9);
        buffer.give_back();
        let range = buffer.lend_range(2, 5);
        let iovs: Vec<_> = range.iovs().iter().map(|v| (v.base, v.len)).collect();
        assert_eq!(
            iovs,
            [
                (base.wrapping_add(2), 1),
                (base.wrapping_add(3), 1),
                (base.wrapping_add(4), 3)
            ]
        );
        buffer.give_back();
        assert_eq!(buffer.write_at(0, &[1]), 1);
    }

    #[test]
    #[should_panic(expected = "lent")]
    fn a_lent_buffer_is_not_touched() {
        let mut memory = [0u8; 4];
        let mut buffer = attached(&mut memory, &[]);
        let _sgl = buffer.lend();
        buffer.read_at(0, &mut [0; 4]);
    }
}
