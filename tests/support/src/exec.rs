//! Test executors: [`CommandExecutor`]s that stand in for the LUN where a
//! test is about the frontend.

use bdev::IoVec;
use dataplane::exec::{CommandExecutor, Response};

/// Completes every command at the next poll (at most `max` per poll, in
/// submission order), with GOOD and the whole buffer as data-in, or with
/// the one response given to [`Immediate::answering`]. Preallocated: it
/// never allocates after construction, so it suits the zero-allocation
/// tests.
#[derive(Debug)]
pub struct Immediate {
    max_tasks: u32,
    /// Answer every command with this instead of GOOD.
    response: Option<Response>,
    /// Write a byte into each command's first buffer at submission.
    touch: bool,
    /// (slot, data-in length) of the commands to complete.
    finished: Vec<(u32, u32)>,
}

impl Immediate {
    /// An executor with `max_tasks` slots.
    pub fn new(max_tasks: u32) -> Self {
        Self {
            max_tasks,
            response: None,
            touch: false,
            finished: Vec::with_capacity(max_tasks as usize),
        }
    }

    /// Answers every command with `response` instead.
    pub fn answering(mut self, response: Response) -> Self {
        self.response = Some(response);
        self
    }

    /// Writes the slot number into the first byte of each command's first
    /// buffer when it is submitted: the buffer the frontend hands over must
    /// be live and writable.
    pub fn touching_data(mut self) -> Self {
        self.touch = true;
        self
    }
}

impl CommandExecutor for Immediate {
    fn max_tasks(&self) -> u32 {
        self.max_tasks
    }

    unsafe fn submit(&mut self, slot: u32, _cdb: &[u8], data: &[IoVec]) {
        let len: usize = data.iter().map(|v| v.len).sum();
        if self.touch {
            if let Some(v) = data.first().filter(|v| v.len > 0) {
                // SAFETY: the `submit` contract: each iovec names `v.len`
                // bytes the command owns and that stay valid until its
                // response is delivered; `v.len > 0`.
                unsafe { v.base.write(slot as u8) };
            }
        }
        self.finished.push((slot, len as u32));
    }

    fn abort(&mut self, _slot: u32) {}

    fn flush(&mut self) {}

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(u32, &Response)) -> usize {
        let n = self.finished.len().min(max);
        for &(slot, len) in &self.finished[..n] {
            match &self.response {
                Some(response) => done(slot, response),
                None => done(slot, &Response::good(len)),
            }
        }
        self.finished.drain(..n);
        n
    }

    fn in_flight(&self) -> usize {
        self.finished.len()
    }
}
