//! Helpers the device tests of the io_uring bdevs (`file.rs`, `nvme.rs`)
//! share: memory like a frontend's, and one request run to completion.

use bdev::{BdevChannel, IoCompletion, IoError, IoOp, IoRequest, IoVec, SgList};
use memmap2::MmapMut;

/// Page-aligned memory (what the TCMU data area and SCST buffers are).
pub fn aligned(len: usize) -> MmapMut {
    MmapMut::map_anon(len).unwrap()
}

/// `iovs` as a request's scatter-gather list.
pub fn sgl_of(iovs: &[IoVec]) -> SgList {
    // SAFETY: every caller keeps `iovs` and the memory they name alive and
    // untouched until the request has completed (`run` waits for it).
    unsafe { SgList::from_slice(iovs) }
}

/// Submits one request and polls until it completes.
pub fn run(ch: &mut dyn BdevChannel, request: IoRequest) -> Result<(), IoError> {
    ch.submit(request).expect("room");
    let mut result = None;
    while result.is_none() {
        ch.poll(&mut |c: IoCompletion| {
            assert_eq!(c.tag, request.tag);
            result = Some(c.result);
        });
    }
    result.unwrap()
}

/// A read or write of `blocks` blocks at `lba` through `iovs`, tagged `lba`.
pub fn rw(
    ch: &mut dyn BdevChannel,
    op: IoOp,
    lba: u64,
    blocks: u32,
    iovs: &[IoVec],
) -> Result<(), IoError> {
    run(ch, IoRequest::new(op, lba, blocks, sgl_of(iovs), lba))
}
