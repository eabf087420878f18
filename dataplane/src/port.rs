//! The SPSC pair between a frontend's logical unit and a bdev channel.
//!
//! A frontend device never calls a bdev channel directly: it stages
//! [`IoRequest`]s on its [`BdevPort`] and publishes them once per poll; the
//! [`BdevPoller`] owning the bdev channel (on the same reactor or another one)
//! drains them into the channel and returns [`IoCompletion`]s over the second
//! ring. One `BdevPoller` serves any number of ports on its reactor.
//!
//! # Invariants
//! - Both rings of a pair have the same capacity `depth`, and the port never
//!   has more than `depth` requests outstanding (staged, queued or in the
//!   bdev). So the completion ring always has room for every completion the
//!   poller will produce for that port, and pushing one cannot fail.
//! - Aborts travel on a third ring ([`BdevPort::abort`]): the poller hands
//!   one to the channel ([`BdevChannel::abort`]) only once every request the
//!   port staged before it has reached the channel, so it cannot miss its
//!   request.
//! - Tags travel through the poller with their top [`PORT_TAG_BITS`] bits
//!   replaced by the port index and restored on the way back: a port's tags
//!   must fit in the low `64 - PORT_TAG_BITS` bits.
//!
//! # Fixed buffers
//! A port's bdev end can carry the frontend's data mapping
//! ([`ChannelEnd::offer_memory`]); the poller registers the memory of all
//! its ports with its channel, on its reactor (the contract is in
//! `memory.rs`: [`MemoryOffer`], [`FixedBuffers`]).

mod memory;

pub use memory::{FixedBuffers, FixedBuffersStatus, MemoryOffer};

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bdev::{BdevChannel, IoCompletion, IoRequest};
use reactor::spsc::{self, Consumer, Producer};
use reactor::{Poller, Waker};

use crate::frontend::Drain;
use memory::Registration;

/// High tag bits the bdev poller uses to route completions to their port.
pub const PORT_TAG_BITS: u32 = 16;
/// Mask of the tag bits a port may use.
pub const PORT_TAG_MASK: u64 = (1 << (64 - PORT_TAG_BITS)) - 1;
/// Most ports one bdev poller can serve.
pub const MAX_PORTS: usize = 1 << PORT_TAG_BITS;

/// The frontend's end of a port.
#[derive(Debug)]
pub struct BdevPort {
    submit: Producer<IoRequest>,
    aborts: Producer<u64>,
    complete: Consumer<IoCompletion>,
    outstanding: usize,
    depth: usize,
    /// Wakes the reactor running the bdev poller, if it may sleep.
    peer_waker: Option<Waker>,
}

/// The bdev poller's end of a port.
#[derive(Debug)]
pub struct ChannelEnd {
    submit: Consumer<IoRequest>,
    aborts: Consumer<u64>,
    complete: Producer<IoCompletion>,
    /// Wakes the reactor running the frontend, if it may sleep.
    peer_waker: Option<Waker>,
    /// The frontend's memory, for the channel to register.
    memory: Option<MemoryOffer>,
}

/// Creates a port whose rings hold `depth` entries (a power of two).
pub fn port_pair(depth: usize) -> Result<(BdevPort, ChannelEnd), spsc::RingError> {
    let (submit_tx, submit_rx) = spsc::channel(depth)?;
    let (complete_tx, complete_rx) = spsc::channel(depth)?;
    let (abort_tx, abort_rx) = spsc::channel(depth)?;
    Ok((
        BdevPort {
            submit: submit_tx,
            aborts: abort_tx,
            complete: complete_rx,
            outstanding: 0,
            depth,
            peer_waker: None,
        },
        ChannelEnd {
            submit: submit_rx,
            aborts: abort_rx,
            complete: complete_tx,
            peer_waker: None,
            memory: None,
        },
    ))
}

impl BdevPort {
    /// Most requests outstanding at once.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Requests staged or in flight whose completion has not been taken.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Room for this many more requests.
    pub fn room(&self) -> usize {
        self.depth - self.outstanding
    }

    /// Sets the waker of the reactor that runs the bdev poller.
    pub fn set_peer_waker(&mut self, waker: Option<Waker>) {
        self.peer_waker = waker;
    }

    /// Stages one request (invisible to the poller until [`publish`]).
    /// Returns it back when `depth` requests are already outstanding.
    ///
    /// [`publish`]: Self::publish
    #[inline]
    pub fn stage(&mut self, request: IoRequest) -> Result<(), IoRequest> {
        debug_assert_eq!(request.tag & !PORT_TAG_MASK, 0, "tag uses routing bits");
        if self.outstanding == self.depth {
            return Err(request);
        }
        // Cannot fail: the ring holds `depth` and fewer than `depth` requests
        // are outstanding, so fewer than `depth` can be in the ring.
        self.submit.stage(request)?;
        self.outstanding += 1;
        Ok(())
    }

    /// Stages the abort of the requests tagged `tag` that are outstanding
    /// (one [`BdevChannel::abort`] per call; invisible until [`publish`]).
    /// Returns false when `depth` aborts wait already.
    ///
    /// [`publish`]: Self::publish
    pub fn abort(&mut self, tag: u64) -> bool {
        debug_assert_eq!(tag & !PORT_TAG_MASK, 0, "tag uses routing bits");
        self.aborts.stage(tag).is_ok()
    }

    /// Publishes staged requests and aborts with one release store each and
    /// wakes the bdev reactor if it sleeps.
    #[inline]
    pub fn publish(&mut self) {
        let aborts = self.aborts.staged() != 0;
        if aborts {
            self.aborts.publish();
        }
        if self.submit.staged() != 0 || aborts {
            self.submit.publish();
            if let Some(waker) = &self.peer_waker {
                waker.kick();
            }
        }
    }

    /// Takes up to `max` completions.
    #[inline]
    pub fn poll(&mut self, max: usize, mut f: impl FnMut(IoCompletion)) -> usize {
        let n = self.complete.pop_batch(max, &mut f);
        self.outstanding -= n;
        n
    }
}

impl ChannelEnd {
    /// Sets the waker of the reactor that runs the frontend.
    pub fn set_peer_waker(&mut self, waker: Option<Waker>) {
        self.peer_waker = waker;
    }

    /// Offers the memory the frontend's requests will name: the poller
    /// that adopts this end registers it with its channel (replacing an
    /// earlier offer).
    pub fn offer_memory(&mut self, offer: MemoryOffer) {
        self.memory = Some(offer);
    }

    /// The memory offered, if any.
    pub fn memory(&self) -> Option<&MemoryOffer> {
        self.memory.as_ref()
    }

    /// Withdraws the offer (before the end is attached).
    pub fn withdraw_memory(&mut self) -> Option<MemoryOffer> {
        self.memory.take()
    }
}

/// A bdev poller already serves [`MAX_PORTS`] ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a bdev poller serves at most {MAX_PORTS} ports")]
pub struct TooManyPorts;

/// One attached port: its rings and the requests of it inside the channel.
#[derive(Debug)]
struct PortSlot {
    end: ChannelEnd,
    /// A request popped from the port that the channel refused (full); it
    /// goes first at the next poll.
    held: Option<IoRequest>,
    /// Requests of this port submitted to the channel and not yet completed.
    in_channel: usize,
}

impl PortSlot {
    /// The frontend dropped its end and nothing of it is left anywhere.
    fn is_finished(&mut self) -> bool {
        self.end.submit.is_abandoned()
            && self.in_channel == 0
            && self.held.is_none()
            && self.end.submit.is_empty()
    }
}

/// Lets other threads attach ports to a [`BdevPoller`] that already runs on
/// a reactor. The poller adopts them at its next poll (one relaxed load per
/// poll when nothing is pending).
#[derive(Debug, Clone)]
pub struct BdevPollerHandle {
    inbox: Arc<Mutex<Vec<ChannelEnd>>>,
    pending: Arc<AtomicBool>,
    /// Wakes the reactor running the poller (adaptive idle policy).
    waker: Option<Waker>,
    fixed_buffers: FixedBuffersStatus,
}

impl BdevPollerHandle {
    /// Queues `end` for the poller; it serves the port from its next poll.
    pub fn attach(&self, end: ChannelEnd) {
        self.inbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(end);
        self.pending.store(true, Ordering::Release);
        if let Some(waker) = &self.waker {
            waker.wake();
        }
    }

    /// Sets the waker of the reactor that runs the poller.
    pub fn set_waker(&mut self, waker: Option<Waker>) {
        self.waker = waker;
    }

    /// Whether the memory its ports offered is registered with its channel.
    pub fn fixed_buffers(&self) -> FixedBuffers {
        self.fixed_buffers.get()
    }
}

/// Runs one bdev channel for every port attached to it on this reactor.
///
/// Ports can be attached at construction ([`attach`](Self::attach)) or while
/// the poller runs ([`BdevPollerHandle::attach`]). A port whose frontend end
/// was dropped is released once nothing of it is left in the channel; its
/// index (the routing bits of its tags) is then reused.
#[derive(Debug)]
pub struct BdevPoller {
    name: String,
    channel: Box<dyn BdevChannel>,
    ports: Vec<Option<PortSlot>>,
    /// Attached ports (the `Some` entries of `ports`).
    active: usize,
    /// Most requests moved from the ports per poll.
    budget: usize,
    inbox: Arc<Mutex<Vec<ChannelEnd>>>,
    pending: Arc<AtomicBool>,
    /// Polls so far (wrapping).
    polls: u64,
    /// Shutdown state. The poller keeps moving requests while draining:
    /// the frontends it serves are draining too and still complete theirs.
    drain: Drain,
    /// The fixed-buffer registration of the ports' offers.
    memory: Registration,
}

/// Polls between two looks for ports whose frontend went away.
const MAINTAIN_EVERY: u64 = 4096;

impl BdevPoller {
    /// A poller for `channel`, taking at most `budget` requests per poll.
    pub fn new(name: impl Into<String>, channel: Box<dyn BdevChannel>, budget: usize) -> Self {
        Self {
            name: name.into(),
            channel,
            ports: Vec::new(),
            active: 0,
            budget: budget.max(1),
            inbox: Arc::new(Mutex::new(Vec::new())),
            pending: Arc::new(AtomicBool::new(false)),
            polls: 0,
            drain: Drain::default(),
            memory: Registration::default(),
        }
    }

    /// A handle that attaches ports from other threads.
    pub fn handle(&self) -> BdevPollerHandle {
        BdevPollerHandle {
            inbox: Arc::clone(&self.inbox),
            pending: Arc::clone(&self.pending),
            waker: None,
            fixed_buffers: self.memory.status(),
        }
    }

    /// Ports currently attached.
    pub fn ports(&self) -> usize {
        self.active
    }

    /// Whether the memory its ports offered is registered with its channel.
    pub fn fixed_buffers(&self) -> FixedBuffers {
        self.memory.status().get()
    }

    /// Attaches a port; returns its index. Fails past [`MAX_PORTS`] (the
    /// port is then dropped, which its frontend sees as an abandoned ring).
    /// Memory it offers is registered at the next poll with an empty
    /// channel.
    pub fn attach(&mut self, end: ChannelEnd) -> Result<usize, TooManyPorts> {
        let slot = PortSlot {
            end,
            held: None,
            in_channel: 0,
        };
        let index = match self.ports.iter().position(Option::is_none) {
            Some(free) => free,
            None if self.ports.len() == MAX_PORTS => return Err(TooManyPorts),
            None => {
                self.ports.push(None);
                self.ports.len() - 1
            }
        };
        self.memory.adopted(slot.end.memory.as_ref());
        self.ports[index] = Some(slot);
        self.active += 1;
        Ok(index)
    }

    /// Adopts ports queued through handles, and releases finished ones.
    fn maintain(&mut self) {
        if self.pending.swap(false, Ordering::Acquire) {
            let ends = std::mem::take(
                &mut *self
                    .inbox
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            for end in ends {
                // Past MAX_PORTS the end is dropped: its frontend sees an
                // abandoned ring and fails its commands.
                let _ = self.attach(end);
            }
        }
        for port in &mut self.ports {
            if port.as_mut().is_some_and(PortSlot::is_finished) {
                let released = port.take().and_then(|mut p| p.end.memory.take());
                self.memory.released(released);
                self.active -= 1;
            }
        }
    }

    /// Registers the ports' offers when they changed and the channel is
    /// empty; returns whether requests may move into the channel.
    fn register_memory(&mut self) -> bool {
        let offers = self
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.end.memory.as_ref());
        self.memory.register(self.channel.as_mut(), offers)
    }

    fn reap(&mut self) -> usize {
        let ports = &mut self.ports;
        self.channel.poll(&mut |completion: IoCompletion| {
            let index = (completion.tag >> (64 - PORT_TAG_BITS)) as usize;
            let Some(Some(port)) = ports.get_mut(index) else {
                debug_assert!(false, "completion for a released port");
                return;
            };
            port.in_channel -= 1;
            let restored = IoCompletion {
                tag: completion.tag & PORT_TAG_MASK,
                result: completion.result,
            };
            // Cannot fail (module invariant: the completion ring has room for
            // every outstanding request of its port).
            let pushed = port.end.complete.stage(restored);
            debug_assert!(pushed.is_ok(), "completion ring overflow");
        })
    }

    /// Hands the port's aborts to the channel once nothing it staged
    /// before them waits outside the channel.
    fn abort_from(&mut self, index: usize) {
        let Some(port) = self.ports[index].as_mut() else {
            return;
        };
        if port.held.is_some() || !port.end.submit.is_empty() {
            return;
        }
        let route = (index as u64) << (64 - PORT_TAG_BITS);
        while let Some(tag) = port.end.aborts.pop() {
            self.channel.abort(tag | route);
        }
    }

    fn submit_from(&mut self, index: usize, budget: usize) -> usize {
        let Some(port) = self.ports[index].as_mut() else {
            return 0;
        };
        let mut moved = 0;
        if let Some(request) = port.held.take() {
            if let Err(request) = self.channel.submit(request) {
                port.held = Some(request);
                return 0;
            }
            port.in_channel += 1;
            moved += 1;
        }
        let route = (index as u64) << (64 - PORT_TAG_BITS);
        while moved < budget {
            let Some(request) = port.end.submit.pop() else {
                break;
            };
            let routed = IoRequest {
                tag: request.tag | route,
                ..request
            };
            if let Err(request) = self.channel.submit(routed) {
                port.held = Some(request);
                break;
            }
            port.in_channel += 1;
            moved += 1;
        }
        moved
    }
}

impl Poller for BdevPoller {
    fn name(&self) -> &str {
        &self.name
    }

    /// The channel's (an io_uring fd): an adaptive reactor sleeping with
    /// I/O in flight wakes when the kernel completes it.
    fn wait_fds(&self) -> Vec<RawFd> {
        self.channel.wait_fds()
    }

    fn poll(&mut self) -> usize {
        self.polls = self.polls.wrapping_add(1);
        // New ports are adopted at once; released ones are looked for now and
        // then (a dropped port is no hurry, it only holds an index).
        if self.pending.load(Ordering::Relaxed) || self.polls.is_multiple_of(MAINTAIN_EVERY) {
            self.maintain();
        }
        let mut work = 0;
        // While offers wait for registration, requests wait in their ports
        // and the channel is reaped first, so that it can empty (only while
        // a device is being attached).
        if self.memory.is_pending() {
            work += self.reap();
        }
        if !self.memory.is_pending() || self.register_memory() {
            let per_port = (self.budget / self.active.max(1)).max(1);
            for index in 0..self.ports.len() {
                work += self.submit_from(index, per_port);
                self.abort_from(index);
            }
        }
        // One channel poll per poll, after the submissions: it hands them to
        // the device (for an io_uring bdev, its one `io_uring_enter` of this
        // poll) and delivers every completion there is, those of synchronous
        // bdevs included.
        work += self.reap();
        for port in self.ports.iter_mut().flatten() {
            if port.end.complete.staged() != 0 {
                port.end.complete.publish();
                if let Some(waker) = &port.end.peer_waker {
                    waker.kick();
                }
            }
        }
        work
    }

    fn begin_shutdown(&mut self) {
        self.drain.begin();
    }

    /// Drained once the channel holds no request and no port has one held
    /// back (what is still in a port's ring is its frontend's to drain).
    fn is_drained(&self) -> bool {
        Drain::drained(self.channel.in_flight(), false, || {
            self.ports.iter().flatten().all(|p| p.held.is_none())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bdev::null::NullBdev;
    use bdev::{Bdev, IoOp, SgList};

    fn flush(tag: u64) -> IoRequest {
        IoRequest {
            op: IoOp::Flush,
            fua: false,
            lba: 0,
            blocks: 0,
            sgl: SgList::EMPTY,
            tag,
        }
    }

    fn poller() -> BdevPoller {
        let bdev = NullBdev::new("n", 512, 64).unwrap();
        BdevPoller::new("bdev:n", bdev.open_channel(8).unwrap(), 8)
    }

    #[test]
    fn routes_completions_back_to_their_port() {
        let mut p = poller();
        let (mut a, end_a) = port_pair(4).unwrap();
        let (mut b, end_b) = port_pair(4).unwrap();
        assert_eq!(p.attach(end_a), Ok(0));
        // A port attached through a handle is adopted at the next poll.
        p.handle().attach(end_b);
        a.stage(flush(7)).unwrap();
        b.stage(flush(9)).unwrap();
        a.publish();
        b.publish();
        assert_eq!(p.poll(), 4, "two submitted, two completed");
        assert_eq!(p.ports(), 2);
        let mut got_a = Vec::new();
        let mut got_b = Vec::new();
        a.poll(8, |c| got_a.push(c.tag));
        b.poll(8, |c| got_b.push(c.tag));
        assert_eq!((got_a, got_b), (vec![7], vec![9]));
        assert_eq!((a.outstanding(), b.outstanding()), (0, 0));
    }

    #[test]
    fn a_dropped_port_is_released_and_its_index_reused() {
        let mut p = poller();
        let (a, end_a) = port_pair(4).unwrap();
        let (mut b, end_b) = port_pair(4).unwrap();
        p.attach(end_a).unwrap();
        p.attach(end_b).unwrap();
        drop(a);
        for _ in 0..MAINTAIN_EVERY {
            p.poll();
        }
        assert_eq!(p.ports(), 1);
        let (mut c, end_c) = port_pair(4).unwrap();
        assert_eq!(p.attach(end_c), Ok(0), "index 0 is free again");
        c.stage(flush(1)).unwrap();
        c.publish();
        b.stage(flush(2)).unwrap();
        b.publish();
        p.poll();
        let mut got = Vec::new();
        c.poll(8, |x| got.push(x.tag));
        b.poll(8, |x| got.push(x.tag));
        assert_eq!(got, [1, 2]);
        assert!(p.is_drained());
    }

    #[test]
    fn a_draining_poller_still_serves_its_ports() {
        let mut p = poller();
        let (mut a, end_a) = port_pair(4).unwrap();
        p.attach(end_a).unwrap();
        a.stage(flush(3)).unwrap();
        a.publish();
        p.begin_shutdown();
        assert_eq!(p.poll(), 2, "submitted and completed while draining");
        assert!(p.is_drained());
        let mut got = Vec::new();
        a.poll(8, |c| got.push(c.tag));
        assert_eq!(got, [3]);
    }

    #[test]
    fn an_abort_reaches_the_channel_after_its_request() {
        use bdev::fault::{FaultAction, FaultBdev, FaultRule, OpSet};
        let stuck = FaultRule::new(OpSet::ALL, FaultAction::Stick);
        let base = std::sync::Arc::new(NullBdev::new("n", 512, 64).unwrap());
        let fault = FaultBdev::new("f", base, vec![stuck], 0).unwrap();
        // A budget of one request per poll: the second waits in the ring.
        let mut p = BdevPoller::new("bdev:f", fault.open_channel(8).unwrap(), 1);
        let (mut a, end) = port_pair(4).unwrap();
        p.attach(end).unwrap();
        a.stage(flush(1)).unwrap();
        a.stage(flush(2)).unwrap();
        assert!(a.abort(2));
        assert!(a.abort(1));
        a.publish();
        let mut got = Vec::new();
        for _ in 0..4 {
            p.poll();
            a.poll(8, |c| got.push((c.tag, c.result)));
        }
        got.sort_by_key(|g| g.0);
        let aborted = Err(bdev::IoError::Aborted);
        assert_eq!(got, [(1, aborted), (2, aborted)]);
        assert_eq!(a.outstanding(), 0);
        assert!(p.is_drained());
    }

    #[test]
    fn port_depth_bounds_outstanding_requests() {
        let (mut a, _end) = port_pair(2).unwrap();
        a.stage(flush(1)).unwrap();
        a.stage(flush(2)).unwrap();
        assert!(a.stage(flush(3)).is_err());
        assert_eq!((a.outstanding(), a.room()), (2, 0));
    }

    /// A channel that completes requests only when told, and records the
    /// memory registered with it.
    #[derive(Debug)]
    struct Fake {
        queued: std::collections::VecDeque<u64>,
        release: Arc<AtomicBool>,
        registered: Arc<Mutex<Vec<Vec<usize>>>>,
        accept: bool,
    }

    impl BdevChannel for Fake {
        fn submit(&mut self, request: IoRequest) -> Result<(), IoRequest> {
            self.queued.push_back(request.tag);
            Ok(())
        }
        fn poll(&mut self, done: &mut dyn FnMut(IoCompletion)) -> usize {
            if !self.release.load(Ordering::Relaxed) {
                return 0;
            }
            let n = self.queued.len();
            for tag in self.queued.drain(..) {
                done(IoCompletion {
                    tag,
                    result: Ok(()),
                });
            }
            n
        }
        fn in_flight(&self) -> usize {
            self.queued.len()
        }
        unsafe fn register_memory(&mut self, regions: &[bdev::IoVec]) -> Result<bool, bdev::Error> {
            let mut starts: Vec<usize> = regions.iter().map(|r| r.base as usize).collect();
            starts.sort_unstable();
            self.registered.lock().unwrap().push(starts);
            Ok(self.accept && !regions.is_empty())
        }
    }

    type Log = Arc<Mutex<Vec<Vec<usize>>>>;

    fn fake(accept: bool) -> (BdevPoller, Arc<AtomicBool>, Log) {
        let release = Arc::new(AtomicBool::new(true));
        let registered = Log::default();
        let channel = Fake {
            queued: Default::default(),
            release: Arc::clone(&release),
            registered: Arc::clone(&registered),
            accept,
        };
        (
            BdevPoller::new("bdev:f", Box::new(channel), 8),
            release,
            registered,
        )
    }

    /// A port offering `len` bytes at `base`, with what keeps it "mapped".
    fn offering(base: usize) -> (BdevPort, ChannelEnd, Arc<()>) {
        let (port, mut end) = port_pair(4).unwrap();
        let keep = Arc::new(());
        let region = bdev::IoVec {
            base: base as *mut u8,
            len: 4096,
        };
        // SAFETY: the fake channel never touches the memory.
        end.offer_memory(unsafe { MemoryOffer::new(vec![region], Box::new(Arc::clone(&keep))) });
        (port, end, keep)
    }

    #[test]
    fn offers_of_all_ports_are_registered_together_on_an_empty_channel() {
        let (mut p, release, registered) = fake(true);
        assert_eq!(p.fixed_buffers(), FixedBuffers::NotOffered);
        let (mut a, end_a, _keep_a) = offering(0x10000);
        p.attach(end_a).unwrap();
        assert_eq!(p.fixed_buffers(), FixedBuffers::Pending);
        a.stage(flush(1)).unwrap();
        a.publish();
        p.poll();
        assert_eq!(*registered.lock().unwrap(), [vec![0x10000]]);
        assert_eq!(p.fixed_buffers(), FixedBuffers::Registered);
        a.poll(8, |_| {});

        // A second port while the channel holds a request of the first:
        // nothing new goes in until the channel is empty.
        release.store(false, Ordering::Relaxed);
        a.stage(flush(2)).unwrap();
        a.publish();
        p.poll();
        let (mut b, end_b, _keep_b) = offering(0x20000);
        p.handle().attach(end_b);
        b.stage(flush(3)).unwrap();
        b.publish();
        p.poll();
        p.poll();
        assert_eq!(registered.lock().unwrap().len(), 1, "the channel is busy");
        assert_eq!(p.channel.in_flight(), 1, "b's request waits in its port");
        release.store(true, Ordering::Relaxed);
        p.poll();
        assert_eq!(
            registered.lock().unwrap().last().unwrap(),
            &vec![0x10000, 0x20000],
            "one registration holds both"
        );
        p.poll();
        let mut got = Vec::new();
        a.poll(8, |c| got.push(c.tag));
        b.poll(8, |c| got.push(c.tag));
        assert_eq!(got, [2, 3]);
    }

    #[test]
    fn a_released_port_stays_mapped_until_registered_without_it() {
        let (mut p, _release, registered) = fake(true);
        let (a, end_a, keep_a) = offering(0x10000);
        let (_b, end_b, _keep_b) = offering(0x20000);
        p.attach(end_a).unwrap();
        p.attach(end_b).unwrap();
        p.poll();
        assert_eq!(registered.lock().unwrap().len(), 1);
        drop(a);
        for _ in 0..MAINTAIN_EVERY {
            p.poll();
        }
        assert_eq!(p.ports(), 1);
        assert_eq!(
            registered.lock().unwrap().last().unwrap(),
            &vec![0x20000],
            "registered again without the released port"
        );
        assert_eq!(Arc::strong_count(&keep_a), 1, "its memory is let go");
    }

    #[test]
    fn a_declined_offer_is_not_passed_again() {
        let (mut p, _release, registered) = fake(false);
        let (_a, end_a, keep_a) = offering(0x10000);
        p.attach(end_a).unwrap();
        p.poll();
        assert_eq!(p.fixed_buffers(), FixedBuffers::Declined);
        let (_b, end_b, _keep_b) = offering(0x20000);
        p.attach(end_b).unwrap();
        p.poll();
        assert_eq!(registered.lock().unwrap().len(), 1, "not asked again");
        assert_eq!(Arc::strong_count(&keep_a), 2, "the port still holds it");
        // A poller whose ports offer nothing never registers.
        let (mut q, _release, registered) = fake(true);
        let (_c, end_c) = port_pair(4).unwrap();
        q.attach(end_c).unwrap();
        q.poll();
        assert!(registered.lock().unwrap().is_empty());
        assert_eq!(q.fixed_buffers(), FixedBuffers::NotOffered);
    }
}
