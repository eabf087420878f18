//! The `fault` bdev: wraps another bdev and injects faults into its I/O,
//! for tests of everything above (the SCSI layer's sense, task management,
//! recovery).
//!
//! # Rules
//! A fault bdev has an ordered list of [`FaultRule`]s. For each request that
//! passes the usual checks ([`check_request`](crate::check_request)), the
//! first rule that selects it (its operation is in the rule's [`OpSet`], it
//! overlaps the rule's LBA range, and the rule's probability draws true)
//! decides what happens ([`FaultAction`]):
//! - `Fail(kind)`: the request completes with the [`IoError`](crate::IoError)
//!   of `kind` ([`FaultError`]: medium error, out of space, not ready, write
//!   protected, hardware failure, aborted, busy, invalid field), without
//!   reaching the base bdev;
//! - `Delay`: the request runs on the base bdev and its completion is held
//!   for a fixed or uniformly drawn delay; the channel releases it in a
//!   `poll` once the delay has passed (no sleeping, no thread);
//! - `Stick`: the request is held, never reaching the base bdev, until
//!   [`BdevChannel::abort`] names it; then it completes with
//!   [`IoError::Aborted`](crate::IoError::Aborted).
//!
//! A request no rule selects goes to the base bdev unchanged, unless the
//! bdev has a space limit ([`FaultBdev::with_space_limit`], `space`): then
//! a write or write zeroes that would allocate blocks past it fails with
//! out of space ([`IoError::NoSpace`](crate::IoError::NoSpace)), as a thin
//! device that ran out of room does; unmaps give room back.
//!
//! # Determinism
//! Probabilities and delays are drawn from a SplitMix64 generator seeded
//! with the bdev's seed mixed with the channel's number (channels are
//! numbered in the order they are opened): the same seed and the same
//! sequence of requests give the same faults. Delays are measured on a
//! [`Clock`], monotonic or manual (tests move a manual clock by hand).
//!
//! # Hot path
//! A channel preallocates a slot per request of its queue depth, its
//! completion queue and its list of delayed completions at open: `submit`,
//! `poll` and `abort` never allocate. Counters ([`FaultStats`]) are relaxed
//! atomics shared by the channels.
//!
//! # Files
//! `rule` holds the rules, `rng` the generator, `clock` the time, `space`
//! the space limit, `stats` the counters, `channel` the channel; this file
//! the bdev.

mod channel;
mod clock;
mod rng;
mod rule;
mod space;
mod stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{Bdev, BdevChannel, BdevRef, Capabilities, Error, Geometry, Topology};
use channel::FaultChannel;
use space::Space;
use stats::Counters;

pub use clock::{Clock, ManualTime};
pub use rule::{FaultAction, FaultError, FaultRule, OpSet};
pub use stats::FaultStats;

/// A bdev that injects faults into another's I/O. See the
/// [module docs](self).
#[derive(Debug)]
pub struct FaultBdev {
    name: String,
    base: BdevRef,
    rules: Arc<[FaultRule]>,
    seed: u64,
    clock: Clock,
    counters: Arc<Counters>,
    space: Option<Arc<Space>>,
    /// Channels opened so far (mixed into their seeds).
    opened: AtomicU64,
}

impl FaultBdev {
    /// A fault bdev `name` over `base` applying `rules` in order, drawing
    /// from `seed`, with delays on the monotonic clock.
    ///
    /// Fails with [`Error::InvalidParameter`], naming the rule and the
    /// field, when a rule's range is empty, its probability is outside
    /// 0..=1 or its shortest delay exceeds its longest.
    pub fn new(
        name: impl Into<String>,
        base: BdevRef,
        rules: Vec<FaultRule>,
        seed: u64,
    ) -> Result<Self, Error> {
        Self::with_clock(name, base, rules, seed, Clock::monotonic())
    }

    /// As [`FaultBdev::new`], measuring delays on `clock`.
    pub fn with_clock(
        name: impl Into<String>,
        base: BdevRef,
        rules: Vec<FaultRule>,
        seed: u64,
        clock: Clock,
    ) -> Result<Self, Error> {
        let name = name.into();
        for (i, rule) in rules.iter().enumerate() {
            rule.check(&name, i)?;
        }
        Ok(Self {
            name,
            base,
            rules: rules.into(),
            seed,
            clock,
            counters: Arc::default(),
            space: None,
            opened: AtomicU64::new(0),
        })
    }

    /// This bdev with room for `blocks` allocated blocks (see the module
    /// docs); nothing is allocated at first.
    pub fn with_space_limit(self, blocks: u64) -> Self {
        let num_blocks = self.base.geometry().num_blocks;
        Self {
            space: Some(Arc::new(Space::new(blocks, num_blocks))),
            ..self
        }
    }

    /// Blocks allocated now, with a space limit.
    pub fn space_used(&self) -> Option<u64> {
        self.space.as_ref().map(|s| s.used())
    }

    /// The bdev the faults are injected into.
    pub fn base(&self) -> &BdevRef {
        &self.base
    }

    /// The rules, in the order they are tried.
    pub fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    /// What was injected so far, over all channels.
    pub fn stats(&self) -> FaultStats {
        self.counters.snapshot()
    }
}

impl Bdev for FaultBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn geometry(&self) -> Geometry {
        self.base.geometry()
    }

    fn capabilities(&self) -> Capabilities {
        self.base.capabilities()
    }

    fn topology(&self) -> Topology {
        self.base.topology()
    }

    fn huge_page_fraction(&self) -> Option<f64> {
        self.base.huge_page_fraction()
    }

    fn open_channel(&self, queue_depth: usize) -> Result<Box<dyn BdevChannel>, Error> {
        let depth = queue_depth.max(1);
        let number = self.opened.fetch_add(1, Ordering::Relaxed);
        let seed = self.seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Ok(Box::new(FaultChannel::new(
            self.base.open_channel(depth)?,
            self.base.geometry(),
            Arc::clone(&self.rules),
            seed,
            self.clock.clone(),
            Arc::clone(&self.counters),
            self.space.clone(),
            depth,
        )))
    }
}
