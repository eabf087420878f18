//! The test bdev: a `Vec`-backed disk that logs every request, completes
//! a random subset in random order, holds completions on demand and injects
//! failures.

use std::sync::{Arc, Mutex};

use bdev::check_request;
use bdev::{
    Bdev, BdevChannel, Capabilities, Error as BdevError, Geometry, IoCompletion, IoError, IoOp,
    IoRequest,
};

use test_support::rng::{seeded, Rng};

use super::super::memory::DataBuffer;

/// A logged request, as the bdev saw it at submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Logged {
    pub(super) op: IoOp,
    pub(super) lba: u64,
    pub(super) blocks: u32,
    pub(super) fua: bool,
    /// Requests already in the channel when this one arrived.
    pub(super) in_flight: usize,
}

/// An injected failure: requests of `op` overlapping `lba..end` fail with
/// `error`, `count` times.
#[derive(Debug, Clone, Copy)]
struct Fault {
    op: IoOp,
    lba: u64,
    end: u64,
    error: IoError,
    count: u32,
}

#[derive(Debug)]
pub(super) struct DiskState {
    geometry: Geometry,
    caps: Capabilities,
    data: Vec<u8>,
    faults: Vec<Fault>,
    log: Vec<Logged>,
    /// While set, the channel completes nothing.
    hold: bool,
    /// Complete a random subset in random order (else all, FIFO).
    pub(super) shuffle: bool,
    rng: Rng,
    in_flight: usize,
}

#[derive(Debug, Clone)]
pub(super) struct TestDisk(Arc<Mutex<DiskState>>);

impl TestDisk {
    pub(super) fn new(block_size: u32, num_blocks: u64, caps: Capabilities, seed: u64) -> Self {
        TestDisk(Arc::new(Mutex::new(DiskState {
            geometry: Geometry {
                block_size,
                num_blocks,
            },
            caps,
            data: vec![0; (num_blocks * u64::from(block_size)) as usize],
            faults: Vec::new(),
            log: Vec::new(),
            hold: false,
            shuffle: true,
            rng: seeded(seed),
            in_flight: 0,
        })))
    }
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.0.lock().unwrap()
    }
    pub(super) fn log(&self) -> Vec<Logged> {
        self.state().log.clone()
    }
    pub(super) fn clear_log(&self) {
        self.state().log.clear();
    }
    pub(super) fn set_hold(&self, hold: bool) {
        self.state().hold = hold;
    }
    pub(super) fn fault(&self, op: IoOp, lba: u64, end: u64, error: IoError) {
        self.state().faults.push(Fault {
            op,
            lba,
            end,
            error,
            count: u32::MAX,
        });
    }
    pub(super) fn blocks(&self, lba: u64, blocks: u64) -> Vec<u8> {
        let s = self.state();
        let bs = u64::from(s.geometry.block_size);
        s.data[(lba * bs) as usize..((lba + blocks) * bs) as usize].to_vec()
    }
    pub(super) fn write_blocks(&self, lba: u64, bytes: &[u8]) {
        let mut s = self.state();
        let at = (lba * u64::from(s.geometry.block_size)) as usize;
        s.data[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

impl Bdev for TestDisk {
    fn name(&self) -> &str {
        "testdisk"
    }
    fn geometry(&self) -> Geometry {
        self.state().geometry
    }
    fn capabilities(&self) -> Capabilities {
        self.state().caps
    }
    fn open_channel(&self, queue_depth: usize) -> Result<Box<dyn BdevChannel>, BdevError> {
        Ok(Box::new(TestChannel {
            disk: self.clone(),
            depth: queue_depth,
            pending: Vec::new(),
            chosen: Vec::new(),
        }))
    }
}

#[derive(Debug)]
struct TestChannel {
    disk: TestDisk,
    depth: usize,
    pending: Vec<IoRequest>,
    chosen: Vec<IoRequest>,
}

/// The memory `request` carries, for the bdev's copy.
fn request_memory(request: &IoRequest) -> DataBuffer {
    let mut memory = DataBuffer::new();
    // SAFETY: the Lun lends the SgList's memory to this request alone until
    // it completes, which is right after the copy; the buffer is dropped
    // before that.
    unsafe { memory.attach(request.sgl.iovs()) };
    memory
}

fn execute(s: &mut DiskState, request: &IoRequest) -> Result<(), IoError> {
    check_request(&s.geometry, request)?;
    // A whole-device flush (0/0) still matches faults at its LBA.
    let end = request.lba + u64::from(request.blocks.max(1));
    for fault in s.faults.iter_mut() {
        if fault.op == request.op && fault.count > 0 && request.lba < fault.end && fault.lba < end {
            fault.count -= 1;
            return Err(fault.error);
        }
    }
    let bs = s.geometry.block_size as usize;
    let at = request.lba as usize * bs;
    let len = request.blocks as usize * bs;
    match request.op {
        IoOp::Read => {
            let src = &s.data[at..at + len];
            let copied = request_memory(request).write_at(0, src);
            assert_eq!(copied, len);
        }
        IoOp::Write => {
            let copied = request_memory(request).read_at(0, &mut s.data[at..at + len]);
            assert_eq!(copied, len);
        }
        IoOp::Flush => {}
        IoOp::Unmap => {
            if !s.caps.unmap {
                return Err(IoError::Unsupported);
            }
            let fill = if s.caps.unmap_reads_zeroes { 0 } else { 0xA5 };
            s.data[at..at + len].fill(fill);
        }
        IoOp::WriteZeroes => {
            if !s.caps.write_zeroes {
                return Err(IoError::Unsupported);
            }
            s.data[at..at + len].fill(0);
        }
    }
    Ok(())
}

impl BdevChannel for TestChannel {
    fn submit(&mut self, request: IoRequest) -> Result<(), IoRequest> {
        if self.pending.len() == self.depth {
            return Err(request);
        }
        let mut s = self.disk.state();
        let in_flight = s.in_flight;
        s.log.push(Logged {
            op: request.op,
            lba: request.lba,
            blocks: request.blocks,
            fua: request.fua,
            in_flight,
        });
        s.in_flight += 1;
        self.pending.push(request);
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
        let mut s = self.disk.state();
        if s.hold || self.pending.is_empty() {
            return 0;
        }
        self.chosen.clear();
        if s.shuffle {
            let mut i = 0;
            while i < self.pending.len() {
                if s.rng.u64(..100) < 50 {
                    self.chosen.push(self.pending.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            // Shuffle the chosen ones.
            for i in (1..self.chosen.len()).rev() {
                let j = s.rng.u64(..i as u64 + 1) as usize;
                self.chosen.swap(i, j);
            }
        } else {
            self.chosen.append(&mut self.pending);
        }
        let n = self.chosen.len();
        for request in self.chosen.drain(..) {
            let result = execute(&mut s, &request);
            s.in_flight -= 1;
            done(IoCompletion {
                tag: request.tag,
                result,
            });
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.pending.len()
    }
}
