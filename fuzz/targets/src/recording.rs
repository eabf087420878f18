//! [`Recording`]: a bdev wrapper that checks every request it is given
//! against the bdev's geometry and capabilities and keeps a log of them.
//!
//! Checks (a violation panics, which the fuzzer reports as a crash): the
//! range `[lba, lba + blocks)` lies inside the bdev; a read or write
//! carries at least `blocks * block_size` bytes of scatter-gather list
//! (the contract of `bdev::check_request`) and respects
//! `max_transfer_blocks`; an unmap or write-zeroes respects
//! `max_unmap_blocks` (and an unmap is advertised).

use std::sync::{Arc, Mutex};

use bdev::{Bdev, BdevChannel, BdevRef, Capabilities, Geometry, IoCompletion, IoOp, IoRequest};

/// One request as the wrapped bdev saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    /// Operation.
    pub op: IoOp,
    /// First block.
    pub lba: u64,
    /// Block count.
    pub blocks: u32,
}

/// The request log shared by a [`Recording`] bdev and its channels.
pub type Log = Arc<Mutex<Vec<Logged>>>;

/// A bdev that checks and logs the requests on its channels.
#[derive(Debug)]
pub struct Recording {
    inner: BdevRef,
    capabilities: Capabilities,
    log: Log,
}

impl Recording {
    /// Wraps `inner`.
    pub fn new(inner: BdevRef) -> Self {
        Self {
            capabilities: inner.capabilities(),
            inner,
            log: Log::default(),
        }
    }

    /// Wraps `inner`, advertising (and enforcing) these transfer limits
    /// instead of its own (0 = none).
    pub fn with_limits(inner: BdevRef, max_transfer_blocks: u32, max_unmap_blocks: u32) -> Self {
        let mut bdev = Self::new(inner);
        bdev.capabilities.max_transfer_blocks = max_transfer_blocks;
        bdev.capabilities.max_unmap_blocks = max_unmap_blocks;
        bdev
    }

    /// The log of every request submitted so far.
    pub fn log(&self) -> Log {
        Arc::clone(&self.log)
    }
}

impl Bdev for Recording {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn open_channel(&self, queue_depth: usize) -> Result<Box<dyn BdevChannel>, bdev::Error> {
        Ok(Box::new(RecordingChannel {
            inner: self.inner.open_channel(queue_depth)?,
            geometry: self.inner.geometry(),
            capabilities: self.capabilities,
            log: Arc::clone(&self.log),
        }))
    }
}

#[derive(Debug)]
struct RecordingChannel {
    inner: Box<dyn BdevChannel>,
    geometry: Geometry,
    capabilities: Capabilities,
    log: Log,
}

impl RecordingChannel {
    fn check(&self, r: &IoRequest) {
        let g = self.geometry;
        let end = r.lba.checked_add(u64::from(r.blocks));
        let inside = end.is_some_and(|end| end <= g.num_blocks);
        let c = self.capabilities;
        match r.op {
            IoOp::Read | IoOp::Write => {
                assert!(inside, "{r:?} outside {g:?}");
                let want = u64::from(r.blocks) * u64::from(g.block_size);
                assert!(r.sgl.total_len() as u64 >= want, "short sgl in {r:?}");
                assert!(
                    c.max_transfer_blocks == 0 || r.blocks <= c.max_transfer_blocks,
                    "{r:?} over max_transfer_blocks {}",
                    c.max_transfer_blocks
                );
            }
            IoOp::Unmap | IoOp::WriteZeroes => {
                assert!(inside, "{r:?} outside {g:?}");
                assert!(
                    c.max_unmap_blocks == 0 || r.blocks <= c.max_unmap_blocks,
                    "{r:?} over max_unmap_blocks {}",
                    c.max_unmap_blocks
                );
                assert!(r.op != IoOp::Unmap || c.unmap, "unmap not supported");
            }
            IoOp::Flush => {}
        }
    }
}

impl BdevChannel for RecordingChannel {
    fn submit(&mut self, request: IoRequest) -> Result<(), IoRequest> {
        self.check(&request);
        let logged = Logged {
            op: request.op,
            lba: request.lba,
            blocks: request.blocks,
        };
        self.inner.submit(request)?;
        self.log.lock().unwrap().push(logged);
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
        self.inner.poll(done)
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
}
