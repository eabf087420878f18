//! `Manual`: an executor that records submissions; the test finishes them.

use super::*;

#[derive(Debug, Clone, Copy)]
pub struct Submitted {
    pub slot: u32,
    /// Bytes 2..6 of the CDB (the LBA of a READ/WRITE (10)).
    pub lba: u32,
    pub iov: Option<(usize, usize)>,
}

/// Records submissions; the test finishes them with `finish`.
pub struct Manual {
    pub tasks: u32,
    pub submitted: Vec<Submitted>,
    pub finished: VecDeque<(u32, Response)>,
    pub aborted: Vec<u32>,
    pub busy: Vec<bool>,
}

impl Manual {
    pub fn new(tasks: u32) -> Self {
        Self {
            tasks,
            submitted: Vec::new(),
            finished: VecDeque::new(),
            aborted: Vec::new(),
            busy: vec![false; tasks as usize],
        }
    }

    pub fn finish(&mut self, slot: u32, response: Response) {
        assert!(self.busy[slot as usize], "slot {slot} not busy");
        self.finished.push_back((slot, response));
    }

    /// Finishes every busy slot not yet finished with `response`.
    pub fn finish_all(&mut self, response: Response) {
        for slot in 0..self.tasks {
            if self.busy[slot as usize] && !self.finished.iter().any(|(s, _)| *s == slot) {
                self.finished.push_back((slot, response));
            }
        }
    }
}

impl CommandExecutor for Manual {
    fn max_tasks(&self) -> u32 {
        self.tasks
    }
    unsafe fn submit(&mut self, slot: u32, cdb: &[u8], data: &[IoVec]) {
        assert!(!self.busy[slot as usize], "slot {slot} reused while busy");
        assert!(data.len() <= 1);
        self.busy[slot as usize] = true;
        self.submitted.push(Submitted {
            slot,
            lba: u32::from_be_bytes([cdb[2], cdb[3], cdb[4], cdb[5]]),
            iov: data.first().map(|v| (v.base as usize, v.len)),
        });
    }
    fn abort(&mut self, slot: u32) {
        self.aborted.push(slot);
    }
    fn flush(&mut self) {}
    fn poll(&mut self, max: usize, done: &mut dyn FnMut(u32, &Response)) -> usize {
        let mut n = 0;
        while n < max {
            let Some((slot, response)) = self.finished.pop_front() else {
                break;
            };
            self.busy[slot as usize] = false;
            done(slot, &response);
            n += 1;
        }
        n
    }
    fn in_flight(&self) -> usize {
        self.busy.iter().filter(|b| **b).count()
    }
}
