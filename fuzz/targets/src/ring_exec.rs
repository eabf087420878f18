//! [`RecordingExecutor`]: the executor behind the ring walker target. It
//! records every command the device hands it, checks that each iovec lies
//! inside the data area and writes into it, and completes commands when
//! the script says so.

use bdev::IoVec;
use dataplane::exec::{status, CommandExecutor, Response};

/// A command handed over by the device and not completed yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    slot: u32,
    data_len: usize,
}

/// Records commands; completes them on [`complete`](Self::complete).
#[derive(Debug)]
pub struct RecordingExecutor {
    max_tasks: u32,
    /// Start and end address of the data area.
    data: (usize, usize),
    pending: Vec<Pending>,
    finished: Vec<(u32, Response)>,
    busy: Vec<bool>,
    /// Commands received over the whole run.
    pub received: usize,
    /// Data may come in one buffer of its own outside the data area (an
    /// SCST device's oversize buffer, which the device maps itself).
    own_buffers: bool,
}

impl RecordingExecutor {
    /// An executor with `max_tasks` slots; iovecs must lie in
    /// `[data.0, data.1)` (addresses).
    pub fn new(max_tasks: u32, data: (usize, usize)) -> Self {
        Self {
            max_tasks,
            data,
            pending: Vec::new(),
            finished: Vec::new(),
            busy: vec![false; max_tasks as usize],
            own_buffers: false,
            received: 0,
        }
    }

    /// Completes the pending command at `index` (modulo the number
    /// pending) with GOOD and `data_in` bytes (at most its buffer), or
    /// with CHECK CONDITION; false if none is pending.
    pub fn complete(&mut self, index: usize, data_in: usize, good: bool) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let p = self.pending.remove(index % self.pending.len());
        let response = if good {
            Response::good(data_in.min(p.data_len) as u32)
        } else {
            let mut r = Response::with_status(status::CHECK_CONDITION);
            r.sense[0] = 0x70;
            r.sense[2] = 0x05;
            r.sense[7] = 10;
            r.sense_len = 18;
            r
        };
        self.finished.push((p.slot, response));
        true
    }

    /// Commands handed over and not yet completed by the script.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

impl RecordingExecutor {
    /// Also accepts data in one iovec outside the data area: an SCST
    /// device's oversize buffer (a mapping of its own for a write larger
    /// than the pool's largest buffer, so that the unit can refuse it; an
    /// EXEC may use the first part of it).
    pub fn allowing_own_buffers(mut self) -> Self {
        self.own_buffers = true;
        self
    }
}

impl CommandExecutor for RecordingExecutor {
    fn max_tasks(&self) -> u32 {
        self.max_tasks
    }

    unsafe fn submit(&mut self, slot: u32, cdb: &[u8], data: &[IoVec]) {
        assert!(slot < self.max_tasks, "slot {slot} out of range");
        assert!(!self.busy[slot as usize], "slot {slot} handed over twice");
        assert!(!cdb.is_empty() && cdb.len() <= 16, "cdb {cdb:02x?}");
        self.busy[slot as usize] = true;
        self.received += 1;
        let mut data_len = 0;
        let own_buffer = data.len() == 1 && self.own_buffers;
        for v in data {
            let start = v.base as usize;
            let end = start.checked_add(v.len).expect("iovec wraps");
            assert!(
                own_buffer || (start >= self.data.0 && end <= self.data.1),
                "iovec {v:?} outside the data area {:#x}..{:#x}",
                self.data.0,
                self.data.1
            );
            if v.len > 0 {
                // SAFETY: the submit contract: the iovec names `v.len`
                // writable bytes owned by this command until its response;
                // checked above to lie inside the data area of the mapping.
                unsafe {
                    v.base.write(slot as u8);
                    v.base.add(v.len - 1).write(slot as u8);
                }
            }
            data_len += v.len;
        }
        self.pending.push(Pending { slot, data_len });
    }

    fn abort(&mut self, slot: u32) {
        if let Some(at) = self.pending.iter().position(|p| p.slot == slot) {
            let p = self.pending.remove(at);
            self.finished
                .push((p.slot, Response::with_status(status::TASK_ABORTED)));
        }
    }

    fn flush(&mut self) {}

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(u32, &Response)) -> usize {
        let n = self.finished.len().min(max);
        for (slot, response) in self.finished.drain(..n) {
            self.busy[slot as usize] = false;
            done(slot, &response);
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.pending.len() + self.finished.len()
    }
}
