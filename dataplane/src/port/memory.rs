//! The frontend memory a bdev poller offers its channel
//! ([`BdevChannel::register_memory`]): what a port brings ([`MemoryOffer`]),
//! and when and how the poller registers the offers of all its ports
//! ([`Registration`]).
//!
//! # Contract
//! A frontend names its data mapping once, when its chain is assembled
//! ([`crate::stack`]): the TCMU data area, the SCST buffer pool. The offer
//! travels with the port's bdev end to the poller, which registers the
//! memory of **every** port it serves in one call (the channel's
//! registration replaces the previous one, so the set is always complete),
//! on the reactor that owns the channel, with no request in the channel.
//!
//! - **When**: the set changes when a port with an offer is adopted, and
//!   when a port whose memory is registered is released. The poller then
//!   stops moving new requests into the channel until the channel is empty
//!   (an I/O latency at most), registers the new set and carries on. A
//!   change of devices is rare (attach, detach); the data path pays one
//!   flag test per poll.
//! - **Kept mapped**: an offer holds what keeps its memory mapped (a clone
//!   of the TCMU region, the pool's mapping). The poller keeps the offer
//!   while the memory may be registered: in its port, then, once the port is
//!   released, until the next registration (which no longer includes it) or
//!   until the channel is dropped (the poller drops its channel before its
//!   ports and retired offers). So the kernel's pinned pages and the
//!   mapping at those addresses never part while the registration lasts.
//! - **Declined**: when the channel does not register a non-empty set (a
//!   bdev without use for it, or the kernel refused, which the bdev says
//!   once on stderr), nothing is registered and later offers are not
//!   passed: nothing can go stale, and no change pauses the channel again.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bdev::{BdevChannel, IoVec};

/// Memory a frontend's requests will name, offered to the bdev channel as
/// fixed buffers, and what keeps it mapped.
pub struct MemoryOffer {
    regions: Vec<IoVec>,
    /// Keeps the regions mapped; never accessed.
    _keep: Box<dyn Send>,
}

impl MemoryOffer {
    /// An offer of `regions`, kept mapped by `keep`.
    ///
    /// # Safety
    /// Each region must stay mapped to the same pages until `keep` is
    /// dropped, and nothing may replace those pages behind the mapping
    /// (the kernel's TCMU data area does, when it reclaims idle blocks:
    /// never offer it). Requests whose buffers lie in a region are then
    /// done on the pages registered.
    pub unsafe fn new(regions: Vec<IoVec>, keep: Box<dyn Send>) -> Self {
        Self {
            regions,
            _keep: keep,
        }
    }

    /// The regions offered.
    pub fn regions(&self) -> &[IoVec] {
        &self.regions
    }
}

impl fmt::Debug for MemoryOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryOffer")
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

/// Whether the memory a poller's ports offered is registered with its
/// channel, as last decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixedBuffers {
    /// No port offered memory (or none is left).
    NotOffered,
    /// Memory offered and not registered yet (the channel is emptying).
    Pending,
    /// Every offer is registered as fixed buffers.
    Registered,
    /// The channel did not register the offers: a bdev with no use for
    /// them, or the kernel refused (the bdev said why on stderr).
    Declined,
}

impl FixedBuffers {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Pending,
            2 => Self::Registered,
            3 => Self::Declined,
            _ => Self::NotOffered,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::NotOffered => 0,
            Self::Pending => 1,
            Self::Registered => 2,
            Self::Declined => 3,
        }
    }
}

/// A [`FixedBuffers`] published by the poller's reactor, readable anywhere.
#[derive(Debug, Clone, Default)]
pub struct FixedBuffersStatus(Arc<AtomicU8>);

impl FixedBuffersStatus {
    /// The state now.
    pub fn get(&self) -> FixedBuffers {
        FixedBuffers::from_u8(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, state: FixedBuffers) {
        self.0.store(state.as_u8(), Ordering::Relaxed);
    }
}

/// The poller's side of the contract (module docs): whether the set of
/// offers changed, the offers of released ports that may still be
/// registered, and what the channel said last.
#[derive(Debug, Default)]
pub(super) struct Registration {
    /// The offers changed since the last registration: requests wait until
    /// the channel is empty and the new set is registered.
    dirty: bool,
    /// The channel declined a non-empty set: offers are no longer passed.
    declined: bool,
    /// The last registration holds memory.
    registered: bool,
    /// Offers of released ports, kept until the next registration.
    retired: Vec<MemoryOffer>,
    /// The regions of one registration (reused).
    scratch: Vec<IoVec>,
    status: FixedBuffersStatus,
}

impl Registration {
    /// Readable from other threads.
    pub fn status(&self) -> FixedBuffersStatus {
        self.status.clone()
    }

    /// True while requests must wait for a registration.
    #[inline]
    pub fn is_pending(&self) -> bool {
        self.dirty
    }

    /// A port with `offer` was adopted.
    pub fn adopted(&mut self, offer: Option<&MemoryOffer>) {
        if offer.is_some() && !self.declined {
            self.dirty = true;
            self.status.set(FixedBuffers::Pending);
        }
    }

    /// A port with `offer` was released: its memory is kept until a
    /// registration without it, if it may be registered now.
    pub fn released(&mut self, offer: Option<MemoryOffer>) {
        if let Some(offer) = offer {
            if self.registered {
                self.retired.push(offer);
                self.dirty = true;
            }
        }
    }

    /// Registers the offers of every port (`offers`) if the set changed and
    /// `channel` holds no request; returns whether requests may flow.
    pub fn register<'a>(
        &mut self,
        channel: &mut dyn BdevChannel,
        offers: impl Iterator<Item = &'a MemoryOffer>,
    ) -> bool {
        if !self.dirty {
            return true;
        }
        if channel.in_flight() != 0 {
            return false;
        }
        self.scratch.clear();
        if !self.declined {
            for offer in offers {
                self.scratch.extend_from_slice(offer.regions());
            }
        }
        // SAFETY: each region belongs to an offer the poller keeps (in its
        // port, or in `retired` until the registration after this one) and
        // whose constructor's contract keeps it mapped to the same pages
        // while it lives; the poller drops its channel before its offers.
        // The channel holds no request (checked above).
        let result = unsafe { channel.register_memory(&self.scratch) };
        let registered = match result {
            Ok(registered) => registered,
            Err(error) => {
                tracing::warn!("bdev poller: fixed buffers not registered: {error}");
                // Whatever the failed call left registered goes: an empty
                // set replaces it.
                // SAFETY: an empty set names no memory.
                let _ = unsafe { channel.register_memory(&[]) };
                false
            }
        };
        let offered = !self.scratch.is_empty();
        self.declined |= offered && !registered;
        self.registered = registered;
        self.status.set(match (offered, registered) {
            (false, _) if !self.declined => FixedBuffers::NotOffered,
            (_, true) => FixedBuffers::Registered,
            _ => FixedBuffers::Declined,
        });
        self.retired.clear();
        self.dirty = false;
        true
    }
}
