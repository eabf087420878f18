//! The sources a scrape reads, as the control plane last set them.

use std::sync::{Arc, Mutex, MutexGuard};

use reactor::StatsReader;

use crate::latency::SharedLatency;
use crate::lun::LunCounters;
use crate::scst::device::ScstStats;
use crate::serve::stats::UringBdev;
use crate::tcmu::TcmuStats;

/// The shared counters of one device's frontend.
#[derive(Debug, Clone)]
pub enum DeviceCounters {
    /// A TCMU device's.
    Tcmu(Arc<TcmuStats>),
    /// An SCST device's.
    Scst(Arc<ScstStats>),
}

impl DeviceCounters {
    /// `"tcmu"` or `"scst"` (the `frontend` label).
    pub fn frontend(&self) -> &'static str {
        match self {
            DeviceCounters::Tcmu(_) => "tcmu",
            DeviceCounters::Scst(_) => "scst",
        }
    }
}

/// One device: its labels and what it publishes.
#[derive(Debug, Clone)]
pub struct DeviceSource {
    /// Device name (the `device` label): LIO's or SCST's.
    pub name: String,
    /// The bdev behind its LUN (the `bdev` label).
    pub bdev: String,
    /// Its counters (the `frontend` label follows from them).
    pub counters: DeviceCounters,
    /// Its LUN's command counters (kinds, outcomes, bdev side).
    pub lun: Arc<LunCounters>,
    /// Its latency histogram, if it records one.
    pub latency: Option<Arc<SharedLatency>>,
}

/// One bdev; only bdevs over io_uring (`file`, `nvme`) count I/O of their
/// own, the others are listed by name.
#[derive(Debug, Clone)]
pub struct BdevSource {
    /// The bdev's name (the `bdev` label).
    pub name: String,
    /// Its io_uring counters, for a `file` or `nvme` bdev.
    pub uring: Option<UringBdev>,
}

/// What a scrape reads.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Devices, in the order they are exported.
    pub devices: Vec<DeviceSource>,
    /// Reactors, in the order they are exported.
    pub reactors: Vec<StatsReader>,
    /// Bdevs, in the order they are exported.
    pub bdevs: Vec<BdevSource>,
}

/// The lists of sources, shared between the control plane (which sets
/// them) and the metrics thread (which reads them at each scrape).
///
/// Invariant: the lock is held only to replace or clone the lists, never
/// while a counter is read or text is encoded; no reactor takes it.
#[derive(Debug, Default)]
pub struct MetricsCatalog {
    sources: Mutex<Sources>,
}

impl MetricsCatalog {
    /// An empty catalog, ready to share.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Sources> {
        self.sources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the devices.
    pub fn set_devices(&self, devices: Vec<DeviceSource>) {
        self.lock().devices = devices;
    }

    /// Replaces the reactors.
    pub fn set_reactors(&self, reactors: Vec<StatsReader>) {
        self.lock().reactors = reactors;
    }

    /// Replaces the bdevs.
    pub fn set_bdevs(&self, bdevs: Vec<BdevSource>) {
        self.lock().bdevs = bdevs;
    }

    /// A copy of the lists (`Arc` clones), taken under the lock.
    pub fn sources(&self) -> Sources {
        self.lock().clone()
    }
}
