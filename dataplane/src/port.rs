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
//! - Tags travel through the poller with their top [`PORT_TAG_BITS`] bits
//!   replaced by the port index and restored on the way back: a port's tags
//!   must fit in the low `64 - PORT_TAG_BITS` bits.

use bdev::{BdevChannel, IoCompletion, IoRequest};
use reactor::spsc::{self, Consumer, Producer};
use reactor::{Poller, Waker};

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
    complete: Producer<IoCompletion>,
    /// Wakes the reactor running the frontend, if it may sleep.
    peer_waker: Option<Waker>,
}

/// Creates a port whose rings hold `depth` entries (a power of two).
pub fn port_pair(depth: usize) -> Result<(BdevPort, ChannelEnd), spsc::RingError> {
    let (submit_tx, submit_rx) = spsc::channel(depth)?;
    let (complete_tx, complete_rx) = spsc::channel(depth)?;
    Ok((
        BdevPort {
            submit: submit_tx,
            complete: complete_rx,
            outstanding: 0,
            depth,
            peer_waker: None,
        },
        ChannelEnd {
            submit: submit_rx,
            complete: complete_tx,
            peer_waker: None,
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

    /// Publishes staged requests with one release store and wakes the bdev
    /// reactor if it sleeps.
    #[inline]
    pub fn publish(&mut self) {
        if self.submit.staged() != 0 {
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
}

/// A bdev poller already serves [`MAX_PORTS`] ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a bdev poller serves at most {MAX_PORTS} ports")]
pub struct TooManyPorts;

/// Runs one bdev channel for every port attached to it on this reactor.
#[derive(Debug)]
pub struct BdevPoller {
    name: String,
    channel: Box<dyn BdevChannel>,
    ends: Vec<ChannelEnd>,
    /// A request popped from a port that the channel refused (full); it goes
    /// first at the next poll. At most one per port.
    held: Vec<Option<IoRequest>>,
    /// Most requests moved from the ports per poll.
    budget: usize,
    shutting_down: bool,
}

impl BdevPoller {
    /// A poller for `channel`, taking at most `budget` requests per poll.
    pub fn new(name: impl Into<String>, channel: Box<dyn BdevChannel>, budget: usize) -> Self {
        Self {
            name: name.into(),
            channel,
            ends: Vec::new(),
            held: Vec::new(),
            budget: budget.max(1),
            shutting_down: false,
        }
    }

    /// Attaches a port; returns its index. Fails past [`MAX_PORTS`] (the
    /// port is then dropped, which its frontend sees as an abandoned ring).
    pub fn attach(&mut self, end: ChannelEnd) -> Result<usize, TooManyPorts> {
        if self.ends.len() == MAX_PORTS {
            return Err(TooManyPorts);
        }
        self.ends.push(end);
        self.held.push(None);
        Ok(self.ends.len() - 1)
    }

    fn reap(&mut self) -> usize {
        let ends = &mut self.ends;
        self.channel.poll(&mut |completion: IoCompletion| {
            let port = (completion.tag >> (64 - PORT_TAG_BITS)) as usize;
            let restored = IoCompletion {
                tag: completion.tag & PORT_TAG_MASK,
                result: completion.result,
            };
            // Cannot fail (module invariant: the completion ring has room for
            // every outstanding request of its port).
            let pushed = ends[port].complete.stage(restored);
            debug_assert!(pushed.is_ok(), "completion ring overflow");
        })
    }

    fn submit_from(&mut self, port: usize, budget: usize) -> usize {
        let mut moved = 0;
        if let Some(request) = self.held[port].take() {
            if let Err(request) = self.channel.submit(request) {
                self.held[port] = Some(request);
                return 0;
            }
            moved += 1;
        }
        let route = (port as u64) << (64 - PORT_TAG_BITS);
        while moved < budget {
            let Some(request) = self.ends[port].submit.pop() else {
                break;
            };
            let routed = IoRequest {
                tag: request.tag | route,
                ..request
            };
            if let Err(request) = self.channel.submit(routed) {
                self.held[port] = Some(request);
                break;
            }
            moved += 1;
        }
        moved
    }
}

impl Poller for BdevPoller {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self) -> usize {
        let mut work = self.reap();
        let per_port = (self.budget / self.ends.len().max(1)).max(1);
        for port in 0..self.ends.len() {
            work += self.submit_from(port, per_port);
        }
        // Completions of synchronous bdevs are ready at once: deliver them in
        // this poll rather than the next.
        work += self.reap();
        for end in &mut self.ends {
            if end.complete.staged() != 0 {
                end.complete.publish();
                if let Some(waker) = &end.peer_waker {
                    waker.kick();
                }
            }
        }
        work
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down = true;
    }

    fn is_drained(&self) -> bool {
        self.channel.in_flight() == 0 && self.held.iter().all(Option::is_none)
    }
}
