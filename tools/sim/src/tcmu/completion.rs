//! One completed command, as the initiator sees it.

use dataplane::tcmu::SharedRegion;

/// One completed command, as the kernel would report it to the initiator.
#[derive(Debug)]
pub struct SimCompletion<'a> {
    /// The tag given to [`TcmuSim::submit`](super::TcmuSim::submit).
    pub tag: u64,
    /// The command's id.
    pub cmd_id: u16,
    /// SAM status.
    pub status: u8,
    /// The 96-byte sense buffer for CHECK CONDITION, else empty.
    pub sense: &'a [u8],
    /// Bytes of data-in returned to the initiator.
    pub data_in_len: usize,
    /// The mapping the data-in is in.
    pub(super) region: &'a SharedRegion,
    /// The command's data blocks, in data order.
    pub(super) blocks: &'a [u32],
    /// Offset of the data area in the mapping.
    pub(super) data_off: usize,
    /// Bytes per data block.
    pub(super) block_size: usize,
}

impl SimCompletion<'_> {
    /// Copies the command's data-in bytes (at most `data_in_len`, at most
    /// `dst.len()`) out of the data area, like the kernel's
    /// `gather_data_area`. Returns the number of bytes copied.
    pub fn copy_data_in(&self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.data_in_len);
        let mut done = 0;
        for &block in self.blocks {
            if done == n {
                break;
            }
            let chunk = self.block_size.min(n - done);
            let at = self.data_off + block as usize * self.block_size;
            if self
                .region
                .read_bytes(at, &mut dst[done..done + chunk])
                .is_err()
            {
                break;
            }
            done += chunk;
        }
        done
    }
}
