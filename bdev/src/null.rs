//! The `null` bdev: completes every request without touching data.
//!
//! It measures the overhead of everything above the bdev. Like SPDK's null
//! bdev it never completes inline: `submit` queues the completion and `poll`
//! delivers the whole batch. Requests are still checked (range, buffer length,
//! with [`check_request`]) so that callers see the same errors as with a real
//! bdev. Reads leave the buffer as it was.

use crate::request::{check_request, CompletionQueue};
use crate::{Bdev, BdevChannel, Capabilities, Error, Geometry, IoCompletion, IoRequest};

/// A bdev with no storage behind it.
#[derive(Debug)]
pub struct NullBdev {
    name: String,
    geometry: Geometry,
}

impl NullBdev {
    /// A null bdev of `num_blocks` blocks of `block_size` bytes.
    pub fn new(name: impl Into<String>, block_size: u32, num_blocks: u64) -> Result<Self, Error> {
        Ok(Self {
            name: name.into(),
            geometry: Geometry::checked(block_size, num_blocks)?,
        })
    }
}

impl Bdev for NullBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            volatile_cache: false,
            unmap: true,
            unmap_reads_zeroes: false,
            write_zeroes: true,
            max_transfer_blocks: 0,
            max_unmap_blocks: 0,
            optimal_boundary_blocks: 0,
        }
    }

    fn open_channel(&self, queue_depth: usize) -> Result<Box<dyn BdevChannel>, Error> {
        Ok(Box::new(NullChannel {
            geometry: self.geometry,
            done: CompletionQueue::new(queue_depth),
        }))
    }
}

/// A channel of the null bdev: a queue of finished requests, as deep as the
/// channel.
#[derive(Debug)]
struct NullChannel {
    geometry: Geometry,
    done: CompletionQueue,
}

impl BdevChannel for NullChannel {
    fn submit(&mut self, request: IoRequest) -> Result<(), IoRequest> {
        if self.done.is_full() {
            return Err(request);
        }
        self.done
            .complete(request.tag, check_request(&self.geometry, &request));
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
        self.done.deliver(done)
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IoError, IoOp, IoVec, SgList};

    #[test]
    fn rejects_bad_geometry() {
        assert!(NullBdev::new("n", 1000, 8).is_err());
        assert!(NullBdev::new("n", 256, 8).is_err());
        assert!(NullBdev::new("n", 512, 0).is_err());
    }

    #[test]
    fn completes_in_poll_with_checks() {
        let bdev = NullBdev::new("n", 512, 16).unwrap();
        let mut ch = bdev.open_channel(4).unwrap();
        let mut buf = vec![0u8; 1024];
        let iov = [IoVec::from_slice(&mut buf)];
        // SAFETY: `iov` and `buf` outlive the requests, which complete below.
        let sgl = unsafe { SgList::from_slice(&iov) };
        ch.submit(IoRequest::new(IoOp::Read, 14, 2, sgl, 1))
            .unwrap();
        ch.submit(IoRequest::new(IoOp::Read, 15, 2, sgl, 2))
            .unwrap();
        ch.submit(IoRequest::new(IoOp::Write, 0, 3, sgl, 3))
            .unwrap();
        ch.submit(IoRequest::new(IoOp::Unmap, 0, 16, SgList::EMPTY, 4))
            .unwrap();
        assert!(ch
            .submit(IoRequest::new(IoOp::Flush, 0, 0, SgList::EMPTY, 5))
            .is_err());
        assert_eq!(ch.in_flight(), 4);
        let mut got = Vec::new();
        assert_eq!(ch.poll(&mut |c| got.push(c)), 4);
        let results: Vec<_> = got.iter().map(|c| (c.tag, c.result)).collect();
        assert_eq!(
            results,
            [
                (1, Ok(())),
                (2, Err(IoError::OutOfRange)),
                (3, Err(IoError::ShortBuffer)),
                (4, Ok(())),
            ]
        );
        assert_eq!(ch.in_flight(), 0);
    }
}
