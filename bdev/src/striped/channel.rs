//! A channel of the striped bdev: parent slots, the child channels, the
//! child requests held while a child is full, and the completion of parents
//! (see [Completion](super#completion) and [Queue depths](super#queue-depths)).

use std::collections::VecDeque;

use super::layout::parent_lba;
use super::split::{ChildLimits, ParentIo, Splitter};
use crate::request::{check_request, check_supported, CompletionQueue};
use crate::{
    BdevChannel, BdevRef, Capabilities, Error, Geometry, IoCompletion, IoError, IoRequest, IoVec,
};

/// A channel of the striped bdev.
#[derive(Debug)]
pub(super) struct StripedChannel {
    geometry: Geometry,
    capabilities: Capabilities,
    /// One channel per child, in stripe order.
    children: Vec<Box<dyn BdevChannel>>,
    /// Cuts parents into child requests.
    pub(super) splitter: Splitter,
    /// `depth` parent slots; a child request's tag is its slot's index.
    pub(super) slots: Vec<ParentIo>,
    /// Free slot indexes.
    pub(super) free: Vec<u32>,
    /// Slots with child requests not yet submitted (a child was full), oldest
    /// first.
    held: VecDeque<u32>,
    /// Parent completions not yet delivered.
    done: CompletionQueue,
    depth: usize,
    /// log2 of the strip in blocks.
    chunk_shift: u32,
}

impl StripedChannel {
    /// Opens a channel of depth `depth` (at least 1) on a striped bdev of
    /// `geometry` and `capabilities` over `children` with strips of
    /// `1 << chunk_shift` blocks: one channel of the same depth per child and
    /// `depth` parent slots.
    pub(super) fn open(
        children: &[BdevRef],
        geometry: Geometry,
        capabilities: Capabilities,
        chunk_shift: u32,
        depth: usize,
    ) -> Result<Self, Error> {
        let n = children.len();
        let mut channels = Vec::with_capacity(n);
        let mut limits = Vec::with_capacity(n);
        for child in children {
            channels.push(child.open_channel(depth)?);
            limits.push(ChildLimits::of(&child.capabilities()));
        }
        Ok(StripedChannel {
            geometry,
            capabilities,
            children: channels,
            splitter: Splitter::new(chunk_shift, geometry.block_shift(), limits),
            slots: (0..depth).map(|_| ParentIo::new(n)).collect(),
            free: (0..depth as u32).rev().collect(),
            held: VecDeque::with_capacity(depth),
            done: CompletionQueue::new(depth),
            depth,
            chunk_shift,
        })
    }

    fn check(&self, request: &IoRequest) -> Result<(), IoError> {
        check_request(&self.geometry, request)?;
        check_supported(&self.capabilities, request)
    }

    /// Fills `slot`'s child requests for a checked request.
    pub(super) fn split(&mut self, slot: usize, request: &IoRequest) {
        self.splitter.split(&mut self.slots[slot], request);
    }

    /// Submits the slot's remaining child requests in order until a child is
    /// full. Returns whether all are submitted.
    pub(super) fn submit_children(&mut self, slot: usize) -> bool {
        let parent = &mut self.slots[slot];
        while let Some(io) = parent.child_ios.get(parent.next_submit) {
            let child_request = IoRequest {
                op: parent.op,
                fua: parent.fua,
                lba: io.lba,
                blocks: io.blocks,
                sgl: parent.child_sgl(io),
                tag: slot as u64,
            };
            if self.children[io.child as usize]
                .submit(child_request)
                .is_err()
            {
                return false;
            }
            parent.in_children += 1;
            parent.next_submit += 1;
        }
        true
    }

    /// Submits held child requests, oldest parent first, while children take
    /// them.
    fn submit_held(&mut self) {
        while let Some(&slot) = self.held.front() {
            if !self.submit_children(slot as usize) {
                return;
            }
            self.held.pop_front();
        }
    }
}

impl BdevChannel for StripedChannel {
    fn submit(&mut self, request: IoRequest) -> Result<(), IoRequest> {
        if self.in_flight() >= self.depth {
            return Err(request);
        }
        if let Err(error) = self.check(&request) {
            self.done.complete(request.tag, Err(error));
            return Ok(());
        }
        let Some(slot) = self.free.pop() else {
            return Err(request);
        };
        let slot = slot as usize;
        self.split(slot, &request);
        if self.slots[slot].child_ios.is_empty() {
            // Zero blocks: nothing to do.
            finish(&mut self.slots[slot], slot, &mut self.free, &mut self.done);
            return Ok(());
        }
        // Keep parents in order behind ones already waiting for room.
        if !self.held.is_empty() || !self.submit_children(slot) {
            self.held.push_back(slot as u32);
        }
        Ok(())
    }

    fn poll(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
        let n = self.children.len() as u64;
        let shift = self.chunk_shift;
        let Self {
            children,
            slots,
            free,
            done: finished,
            ..
        } = self;
        for (index, child) in children.iter_mut().enumerate() {
            let index = index as u64;
            child.poll(&mut |completion| {
                let slot = completion.tag as usize;
                let Some(parent) = slots.get_mut(slot) else {
                    debug_assert!(false, "child completion with unknown tag {slot}");
                    return;
                };
                if parent.in_children == 0 {
                    debug_assert!(false, "child completion for idle slot {slot}");
                    return;
                }
                parent.in_children -= 1;
                if let Err(error) = completion.result {
                    // A medium error names a child block: report the
                    // parent's.
                    let error = match error {
                        IoError::ReadAt(lba) => IoError::ReadAt(parent_lba(index, lba, n, shift)),
                        IoError::WriteAt(lba) => IoError::WriteAt(parent_lba(index, lba, n, shift)),
                        other => other,
                    };
                    parent.error.get_or_insert(error);
                }
                if parent.all_done() {
                    finish(parent, slot, free, finished);
                }
            });
        }
        // Completions made room in the children.
        self.submit_held();
        self.done.deliver(done)
    }

    fn in_flight(&self) -> usize {
        (self.depth - self.free.len()) + self.done.len()
    }

    /// Aborts the parent's child requests: those held back are dropped,
    /// those in the children are aborted there (each child is asked once per
    /// request of the parent it holds). True when any was, and then the
    /// parent completes with [`IoError::Aborted`] once its other child
    /// requests have completed.
    fn abort(&mut self, tag: u64) -> bool {
        let Some(slot) = (0..self.slots.len())
            .find(|&s| self.slots[s].tag == tag && !self.free.contains(&(s as u32)))
        else {
            return false;
        };
        let parent = &mut self.slots[slot];
        let mut aborted = false;
        let submitted_end = parent.next_submit;
        if parent.next_submit < parent.child_ios.len() {
            parent.next_submit = parent.child_ios.len();
            if let Some(at) = self.held.iter().position(|&h| h as usize == slot) {
                self.held.remove(at);
            }
            aborted = true;
        }
        for child in 0..self.children.len() {
            let submitted = parent.child_ios[..submitted_end]
                .iter()
                .filter(|io| io.child as usize == child)
                .count();
            for _ in 0..submitted {
                if !self.children[child].abort(slot as u64) {
                    break;
                }
                aborted = true;
            }
        }
        if aborted {
            parent.error = Some(IoError::Aborted);
            if parent.all_done() {
                finish(parent, slot, &mut self.free, &mut self.done);
            }
        }
        aborted
    }

    /// Every child's.
    fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.children.iter().flat_map(|c| c.wait_fds()).collect()
    }

    /// Offers the memory to every child (the parent's buffers are the
    /// children's); true if any registered it.
    unsafe fn register_memory(&mut self, regions: &[IoVec]) -> Result<bool, Error> {
        let mut any = false;
        for child in &mut self.children {
            // SAFETY: this function's contract, passed on unchanged: the
            // children live exactly as long as this channel.
            any |= unsafe { child.register_memory(regions)? };
        }
        Ok(any)
    }
}

/// Completes a parent whose child requests are all done and frees its slot.
pub(super) fn finish(
    parent: &mut ParentIo,
    slot: usize,
    free: &mut Vec<u32>,
    done: &mut CompletionQueue,
) {
    done.complete(parent.tag, parent.release());
    free.push(slot as u32);
}
