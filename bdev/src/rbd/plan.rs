//! How a request maps onto librbd: the checks every request passes, then
//! the one librbd call (or the write-then-flush pair) that does it. Pure:
//! the channel carries a [`Plan`] out with the AIO calls, and the tests
//! check the mapping without a cluster.
//!
//! | request | librbd |
//! | --- | --- |
//! | `Read` | `rbd_aio_readv` on the request's iovecs |
//! | `Write` | `rbd_aio_writev` |
//! | `Write` with FUA, one buffer, a cache that honours FUA | `rbd_aio_write2` with `LIBRADOS_OP_FLAG_FADVISE_FUA` (the write bypasses the cache) |
//! | `Write` with FUA otherwise | `rbd_aio_writev`, then `rbd_aio_flush` once it succeeded (no flush without a cache) |
//! | `Flush` | `rbd_aio_flush` |
//! | `Unmap` | `rbd_aio_discard` |
//! | `WriteZeroes` | `rbd_aio_write_zeroes` |

use crate::request::{check_request, check_supported};
use crate::{Capabilities, Geometry, IoError, IoOp, IoRequest, IoVec, SgList};

/// What the plan of a channel depends on: the bdev's shape and limits and
/// how librbd's cache treats FUA.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rules {
    pub geometry: Geometry,
    pub capabilities: Capabilities,
    /// librbd's cache is on: a FUA write needs the cache bypassed or a
    /// flush after it.
    pub cache: bool,
    /// The cache honours `LIBRADOS_OP_FLAG_FADVISE_FUA`.
    pub fua_native: bool,
}

/// The first `count` iovecs of a request's list carry the transfer; when
/// `trimmed`, the last of them only for `last_len` bytes (the list is
/// longer than the transfer), so librbd is given a trimmed copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Iovs {
    pub count: u32,
    pub last_len: usize,
    pub trimmed: bool,
}

impl Iovs {
    /// The iovecs of `sgl` that carry the first `bytes` bytes.
    pub fn of(sgl: &SgList, bytes: u64) -> Self {
        let mut sum = 0u64;
        for (i, iov) in sgl.iovs().iter().enumerate() {
            sum += iov.len as u64;
            if sum >= bytes {
                let last_len = iov.len - (sum - bytes) as usize;
                return Self {
                    count: i as u32 + 1,
                    last_len,
                    trimmed: sum > bytes,
                };
            }
        }
        // `check_request` saw at least `bytes`; a zero-byte transfer never
        // gets here.
        Self {
            count: sgl.count(),
            last_len: sgl.iovs().last().map_or(0, |v| v.len),
            trimmed: false,
        }
    }

    /// Copies the iovecs into `scratch` (cleared first), the last one cut
    /// to `last_len`. Allocates only when `scratch` is too small, and then
    /// keeps the room.
    pub fn copy_trimmed(&self, sgl: &SgList, scratch: &mut Vec<IoVec>) {
        scratch.clear();
        scratch.extend_from_slice(&sgl.iovs()[..self.count as usize]);
        if let Some(last) = scratch.last_mut() {
            last.len = self.last_len;
        }
    }
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// Complete without librbd: a failed check, or nothing to do.
    Done(Result<(), IoError>),
    /// `rbd_aio_readv`.
    Read { offset: u64, bytes: u64, iovs: Iovs },
    /// `rbd_aio_writev`, then `rbd_aio_flush` when `flush_after`.
    Write {
        offset: u64,
        bytes: u64,
        iovs: Iovs,
        flush_after: bool,
    },
    /// `rbd_aio_write2` of one buffer with the FUA flag.
    WriteFua {
        offset: u64,
        bytes: u64,
        base: *const u8,
    },
    /// `rbd_aio_flush`.
    Flush,
    /// `rbd_aio_discard`.
    Discard { offset: u64, bytes: u64 },
    /// `rbd_aio_write_zeroes`.
    WriteZeroes { offset: u64, bytes: u64 },
}

/// The plan of `request`.
pub(super) fn plan(rules: &Rules, request: &IoRequest) -> Plan {
    if let Err(error) = check(rules, request) {
        return Plan::Done(Err(error));
    }
    if request.blocks == 0 && request.op != IoOp::Flush {
        return Plan::Done(Ok(()));
    }
    let offset = request.lba << rules.geometry.block_shift();
    let bytes = u64::from(request.blocks) << rules.geometry.block_shift();
    match request.op {
        IoOp::Read => Plan::Read {
            offset,
            bytes,
            iovs: Iovs::of(&request.sgl, bytes),
        },
        IoOp::Write => {
            let fua = request.fua && rules.cache;
            let iovs = Iovs::of(&request.sgl, bytes);
            if fua && rules.fua_native && iovs.count == 1 {
                Plan::WriteFua {
                    offset,
                    bytes,
                    base: request.sgl.iovs()[0].base,
                }
            } else {
                Plan::Write {
                    offset,
                    bytes,
                    iovs,
                    flush_after: fua,
                }
            }
        }
        IoOp::Flush => Plan::Flush,
        IoOp::Unmap => Plan::Discard { offset, bytes },
        IoOp::WriteZeroes => Plan::WriteZeroes { offset, bytes },
    }
}

/// The shared checks, then the bdev's limits.
fn check(rules: &Rules, request: &IoRequest) -> Result<(), IoError> {
    check_request(&rules.geometry, request)?;
    check_supported(&rules.capabilities, request)?;
    let caps = &rules.capabilities;
    let limit = match request.op {
        IoOp::Read | IoOp::Write => caps.max_transfer_blocks,
        IoOp::Unmap | IoOp::WriteZeroes => caps.max_unmap_blocks,
        IoOp::Flush => 0,
    };
    if limit != 0 && request.blocks > limit {
        return Err(IoError::TooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(cache: bool, fua_native: bool) -> Rules {
        Rules {
            geometry: Geometry {
                block_size: 512,
                num_blocks: 1024,
            },
            capabilities: Capabilities {
                volatile_cache: cache,
                unmap: true,
                unmap_reads_zeroes: true,
                write_zeroes: true,
                max_transfer_blocks: 64,
                max_unmap_blocks: 512,
                optimal_boundary_blocks: 8192,
            },
            cache,
            fua_native,
        }
    }

    #[test]
    fn operations_map_to_librbd_calls() {
        let mut a = vec![0u8; 1024];
        let mut b = vec![0u8; 2048];
        let iov = [IoVec::from_slice(&mut a), IoVec::from_slice(&mut b)];
        // SAFETY: the requests are only planned, never executed.
        let two = unsafe { SgList::from_slice(&iov) };
        // SAFETY: as above.
        let one = unsafe { SgList::from_slice(&iov[1..]) };
        let r = rules(true, true);
        let req = |op, lba, blocks, sgl| IoRequest::new(op, lba, blocks, sgl, 7);
        let whole = Iovs {
            count: 2,
            last_len: 2048,
            trimmed: false,
        };
        assert_eq!(
            plan(&r, &req(IoOp::Read, 10, 6, two)),
            Plan::Read {
                offset: 5120,
                bytes: 3072,
                iovs: whole
            }
        );
        assert_eq!(
            plan(&r, &req(IoOp::Write, 0, 6, two)),
            Plan::Write {
                offset: 0,
                bytes: 3072,
                iovs: whole,
                flush_after: false
            }
        );
        // A list longer than the transfer is trimmed.
        assert_eq!(
            plan(&r, &req(IoOp::Read, 0, 3, two)),
            Plan::Read {
                offset: 0,
                bytes: 1536,
                iovs: Iovs {
                    count: 2,
                    last_len: 512,
                    trimmed: true
                }
            }
        );
        // FUA: one buffer through the cache's FUA flag; several buffers,
        // or a cache that ignores the flag, as a write and a flush; no
        // cache, a plain write.
        let mut fua = req(IoOp::Write, 2, 4, one);
        fua.fua = true;
        assert_eq!(
            plan(&r, &fua),
            Plan::WriteFua {
                offset: 1024,
                bytes: 2048,
                base: iov[1].base
            }
        );
        let mut fua_two = req(IoOp::Write, 2, 6, two);
        fua_two.fua = true;
        assert!(matches!(
            plan(&r, &fua_two),
            Plan::Write {
                flush_after: true,
                ..
            }
        ));
        assert!(matches!(
            plan(&rules(true, false), &fua),
            Plan::Write {
                flush_after: true,
                ..
            }
        ));
        assert!(matches!(
            plan(&rules(false, true), &fua),
            Plan::Write {
                flush_after: false,
                ..
            }
        ));
        let empty = SgList::EMPTY;
        assert_eq!(plan(&r, &req(IoOp::Flush, 0, 0, empty)), Plan::Flush);
        assert_eq!(
            plan(&r, &req(IoOp::Unmap, 8, 8, empty)),
            Plan::Discard {
                offset: 4096,
                bytes: 4096
            }
        );
        assert_eq!(
            plan(&r, &req(IoOp::WriteZeroes, 1016, 8, empty)),
            Plan::WriteZeroes {
                offset: 1016 * 512,
                bytes: 4096
            }
        );
    }

    #[test]
    fn bad_requests_complete_without_librbd() {
        let r = rules(true, true);
        let empty = SgList::EMPTY;
        let req = |op, lba, blocks| IoRequest::new(op, lba, blocks, empty, 1);
        assert_eq!(
            plan(&r, &req(IoOp::Read, 1020, 8)),
            Plan::Done(Err(IoError::OutOfRange))
        );
        assert_eq!(
            plan(&r, &req(IoOp::Unmap, u64::MAX, 2)),
            Plan::Done(Err(IoError::OutOfRange))
        );
        assert_eq!(
            plan(&r, &req(IoOp::Write, 0, 1)),
            Plan::Done(Err(IoError::ShortBuffer))
        );
        assert_eq!(
            plan(&r, &req(IoOp::Unmap, 0, 513)),
            Plan::Done(Err(IoError::TooLarge))
        );
        let mut big = vec![0u8; 65 * 512];
        let iov = [IoVec::from_slice(&mut big)];
        // SAFETY: only planned.
        let sgl = unsafe { SgList::from_slice(&iov) };
        assert_eq!(
            plan(&r, &IoRequest::new(IoOp::Read, 0, 65, sgl, 1)),
            Plan::Done(Err(IoError::TooLarge))
        );
        assert_eq!(plan(&r, &req(IoOp::Read, 1024, 0)), Plan::Done(Ok(())));
        let mut none = r;
        none.capabilities.write_zeroes = false;
        assert_eq!(
            plan(&none, &req(IoOp::WriteZeroes, 0, 1)),
            Plan::Done(Err(IoError::Unsupported))
        );
    }

    #[test]
    fn trimmed_copies_cut_the_last_iovec() {
        let mut a = vec![0u8; 100];
        let mut b = vec![0u8; 100];
        let iov = [IoVec::from_slice(&mut a), IoVec::from_slice(&mut b)];
        // SAFETY: only inspected.
        let sgl = unsafe { SgList::from_slice(&iov) };
        let iovs = Iovs::of(&sgl, 150);
        assert_eq!(
            iovs,
            Iovs {
                count: 2,
                last_len: 50,
                trimmed: true
            }
        );
        let mut scratch = Vec::with_capacity(4);
        iovs.copy_trimmed(&sgl, &mut scratch);
        assert_eq!(scratch.len(), 2);
        assert_eq!((scratch[0].len, scratch[1].len), (100, 50));
        assert_eq!(
            Iovs::of(&sgl, 100),
            Iovs {
                count: 1,
                last_len: 100,
                trimmed: false
            }
        );
    }
}
