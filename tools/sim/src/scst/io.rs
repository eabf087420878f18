//! One command as the initiator sees it: the data it submits with it
//! ([`SimData`]) and the completion it reaps ([`SimCompletion`]).

/// A command's data buffer, as the initiator gives it.
#[derive(Debug, Clone, Copy)]
pub enum SimData<'a> {
    /// No data.
    None,
    /// Data-out (copied at submission).
    Out(&'a [u8]),
    /// Room for this many bytes of data-in.
    In(usize),
}

/// One finished command as the target driver sees it.
#[derive(Debug)]
pub struct SimCompletion<'a> {
    /// The tag given to [`ScstSimInitiator::submit`](super::ScstSimInitiator::submit).
    pub tag: u64,
    /// SAM status (TASK ABORTED for aborted commands).
    pub status: u8,
    /// Sense bytes for CHECK CONDITION (up to 252), else empty.
    pub sense: &'a [u8],
    /// Bytes of data-in available (at most what the initiator asked for).
    pub data_in_len: usize,
    /// The command was aborted by task management (or the handler's death
    /// while aborted); it has no response in SCSI terms.
    pub aborted: bool,
    pub(super) data: DataIn<'a>,
}

/// Where a completion's data-in is.
#[derive(Debug)]
pub(super) enum DataIn<'a> {
    /// In the simulator's own buffer.
    Staged(&'a [u8]),
    /// Still in the command's pinned handler buffer at this address
    /// (`data_in_len` bytes; trusted mode only).
    Pinned(u64),
}

impl SimCompletion<'_> {
    /// Copies the data-in (at most `data_in_len`, at most `dst.len()`
    /// bytes) into `dst`; returns the number of bytes copied.
    pub fn copy_data_in(&self, dst: &mut [u8]) -> usize {
        match self.data {
            DataIn::Staged(data) => {
                let n = dst.len().min(data.len());
                dst[..n].copy_from_slice(&data[..n]);
                n
            }
            DataIn::Pinned(addr) => {
                let n = dst.len().min(self.data_in_len);
                // SAFETY: a completion lives only inside `reap`, before its
                // command is freed: the buffer is still the command's,
                // pinned, and (by `ScstSimDriver::trust_mapped_buffers`'
                // contract) mapped for at least `data_in_len` bytes, since
                // dropping the driver first waits for a reap in progress
                // (`reaping`) and moves the data of unreaped commands out
                // of handler memory. `dst` is the caller's own slice.
                unsafe {
                    std::ptr::copy_nonoverlapping(addr as usize as *const u8, dst.as_mut_ptr(), n);
                }
                n
            }
        }
    }
}
