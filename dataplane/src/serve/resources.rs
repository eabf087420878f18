//! What the devices of both frontends share: the bdevs (and those left
//! out), the reactors, the bdev poller of each (reactor, bdev) pair, and
//! the round-robin placement.

use std::collections::HashMap;
use std::sync::Arc;

use bdev::{BdevRef, FaultBdev};
use reactor::{Poller, PollerId, Reactor, ReactorConfig, ReactorHandle, RemovedPoller};

use super::bdevs::{make_at_run_time, make_bdevs};
use super::config::{BdevConfig, ServeConfig};
use super::error::{BdevChangeError, PlacementError, ServeError};
use super::metrics::BdevSource;
use super::stats::{BdevStats, FaultBdevStats, Tracked};
use crate::port::{BdevPollerHandle, FixedBuffers};
use crate::stack::bdev_poller;

/// Queue depth of a bdev channel shared by the devices of one reactor.
const CHANNEL_DEPTH: usize = 4096;

/// The bdevs and reactors, and the pollers placed on them.
///
/// Invariant: there is at most one bdev poller per (reactor, bdev), made on
/// first use and kept until the reactor stops; ports are added to it while
/// it runs.
pub(super) struct Resources {
    bdevs: HashMap<String, BdevRef>,
    /// The `file` and `nvme` bdevs among `bdevs`, with their counters at
    /// the previous statistics report.
    rings: HashMap<String, Tracked>,
    /// The `fault` bdevs among `bdevs` (for their statistics).
    faults: HashMap<String, Arc<FaultBdev>>,
    /// Bdevs of the configuration that could not be made, with why.
    unavailable: HashMap<String, String>,
    reactors: Vec<ReactorHandle>,
    bdev_pollers: HashMap<(usize, String), (BdevPollerHandle, PollerId)>,
    /// The next round-robin placement (before taking it modulo the number
    /// of reactors).
    next_reactor: usize,
}

impl Resources {
    /// Creates the bdevs of `config` (logging to `log` what went wrong with
    /// their huge pages, and the file and nvme bdevs left out), then starts one
    /// reactor per configured CPU (`reactor<i>`), with the configured idle
    /// policy.
    pub(super) fn start(
        config: &ServeConfig,
        log: &mut dyn FnMut(&str),
    ) -> Result<Self, ServeError> {
        let made = make_bdevs(config, log)?;
        let idle = config.reactors.idle_policy();
        let mut reactors = Vec::with_capacity(config.reactors.cores.len());
        for (i, &core) in config.reactors.cores.iter().enumerate() {
            let reactor_config = ReactorConfig::new(format!("reactor{i}"))
                .with_core(core)
                .with_idle(idle);
            reactors.push(Reactor::spawn(reactor_config, Vec::new())?);
        }
        Ok(Self {
            bdevs: made.bdevs,
            rings: made
                .rings
                .into_iter()
                .map(|(name, ring)| (name, Tracked::new(ring)))
                .collect(),
            faults: made.faults,
            unavailable: made.unavailable,
            reactors,
            bdev_pollers: HashMap::new(),
            next_reactor: 0,
        })
    }

    /// The bdev named `name`.
    pub(super) fn bdev(&self, name: &str) -> Option<&BdevRef> {
        self.bdevs.get(name)
    }

    /// The names of the bdevs made, sorted.
    pub(super) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.bdevs.keys().cloned().collect();
        names.sort();
        names
    }

    /// Why the configured bdev `name` could not be made, if it could not.
    pub(super) fn unavailable(&self, name: &str) -> Option<&str> {
        self.unavailable.get(name).map(String::as_str)
    }

    /// The names of the bdevs left out, sorted.
    pub(super) fn unavailable_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.unavailable.keys().cloned().collect();
        names.sort();
        names
    }

    /// The bdevs made, by name, for the metrics.
    pub(super) fn metric_bdevs(&self) -> Vec<BdevSource> {
        let mut bdevs: Vec<BdevSource> = self
            .bdevs
            .keys()
            .map(|name| BdevSource {
                name: name.clone(),
                uring: self.rings.get(name).map(|t| t.bdev().clone()),
            })
            .collect();
        bdevs.sort_by(|a, b| a.name.cmp(&b.name));
        bdevs
    }

    /// Every configured bdev's statistics, by name, those left out
    /// included; a file or nvme bdev's I/O figures are since the previous
    /// call. Reads `/proc/self/smaps` once for the RAM bdevs: a
    /// control-path call.
    pub(super) fn bdev_stats(&mut self) -> Vec<BdevStats> {
        bdev::ram::one_smaps_read(|| self.bdev_stats_now())
    }

    fn bdev_stats_now(&mut self) -> Vec<BdevStats> {
        let mut stats: Vec<BdevStats> = Vec::with_capacity(self.bdevs.len());
        for (name, bdev) in &self.bdevs {
            let fixed_buffers = self.fixed_buffers(name);
            let (file, nvme) = self
                .rings
                .get_mut(name)
                .map_or((None, None), |ring| ring.report(fixed_buffers));
            stats.push(BdevStats {
                name: name.clone(),
                huge_page_fraction: bdev.huge_page_fraction(),
                file,
                nvme,
                fault: self.faults.get(name).map(|f| FaultBdevStats::of(f)),
                unavailable: None,
            });
        }
        for (name, why) in &self.unavailable {
            stats.push(BdevStats {
                name: name.clone(),
                huge_page_fraction: None,
                file: None,
                nvme: None,
                fault: None,
                unavailable: Some(why.clone()),
            });
        }
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        stats
    }

    /// Whether the memory offered to the pollers of bdev `name` is
    /// registered with their channels: `None` while none was offered (or
    /// its registration is pending), true when every poller with offers
    /// registered them.
    fn fixed_buffers(&self, name: &str) -> Option<bool> {
        let mut registered = None;
        for ((_, bdev), (handle, _)) in &self.bdev_pollers {
            if bdev != name {
                continue;
            }
            match handle.fixed_buffers() {
                FixedBuffers::Registered => registered = Some(registered.unwrap_or(true)),
                FixedBuffers::Declined => registered = Some(false),
                FixedBuffers::NotOffered | FixedBuffers::Pending => {}
            }
        }
        registered
    }

    /// Makes bdev `b` (any kind but `fault`; a striped one over bdevs
    /// made) while the server runs; the configuration with it was validated
    /// and it has a new name.
    pub(super) fn add_bdev(
        &mut self,
        b: &BdevConfig,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), BdevChangeError> {
        let (bdev, ring) = make_at_run_time(b, &self.bdevs, log)?;
        let name = b.name().to_string();
        if let Some(ring) = ring {
            self.rings.insert(name.clone(), Tracked::new(ring));
        }
        self.bdevs.insert(name, bdev);
        Ok(())
    }

    /// Forgets bdev `name` (made or left out), which nothing stands on any
    /// more: its bdev pollers are taken off their reactors (draining them),
    /// so a bdev made later under the name gets pollers of its own. A
    /// poller that does not come off is logged.
    pub(super) fn remove_bdev(&mut self, name: &str, log: &mut dyn FnMut(&str)) {
        let keys: Vec<(usize, String)> = self
            .bdev_pollers
            .keys()
            .filter(|(_, b)| b == name)
            .cloned()
            .collect();
        for key in keys {
            if let Some((_, id)) = self.bdev_pollers.remove(&key) {
                if let Err(e) = self.remove_poller(key.0, id) {
                    log(&format!(
                        "bdev {name}: its poller on reactor {}: {e}",
                        key.0
                    ));
                }
            }
        }
        self.bdevs.remove(name);
        self.rings.remove(name);
        self.faults.remove(name);
        self.unavailable.remove(name);
    }

    /// The reactors, in configuration order.
    pub(super) fn reactors(&self) -> &[ReactorHandle] {
        &self.reactors
    }

    /// The next reactor of the round-robin placement (TCMU and SCST devices
    /// share it).
    pub(super) fn round_robin(&mut self) -> usize {
        let r = self.next_reactor % self.reactors.len();
        self.next_reactor += 1;
        r
    }

    /// The bdev poller of `reactor` for bdev `name`, created on first use
    /// (over a channel of [`CHANNEL_DEPTH`] requests).
    pub(super) fn bdev_poller(
        &mut self,
        reactor: usize,
        name: &str,
        bdev: &BdevRef,
    ) -> Result<BdevPollerHandle, PlacementError> {
        let key = (reactor, name.to_owned());
        if let Some((handle, _)) = self.bdev_pollers.get(&key) {
            return Ok(handle.clone());
        }
        let poller = bdev_poller(bdev.as_ref(), CHANNEL_DEPTH).map_err(PlacementError::Channel)?;
        let mut handle = poller.handle();
        handle.set_waker(Some(self.reactors[reactor].waker().clone()));
        let id = self.add_poller(reactor, Box::new(poller))?;
        self.bdev_pollers.insert(key, (handle.clone(), id));
        Ok(handle)
    }

    /// Puts `poller` on `reactor`.
    pub(super) fn add_poller(
        &self,
        reactor: usize,
        poller: Box<dyn Poller>,
    ) -> Result<PollerId, PlacementError> {
        self.reactors[reactor]
            .add_poller(poller)
            .map_err(PlacementError::Reactor)
    }

    /// Takes poller `id` off `reactor`, draining it first.
    pub(super) fn remove_poller(
        &self,
        reactor: usize,
        id: PollerId,
    ) -> Result<RemovedPoller, reactor::Error> {
        self.reactors[reactor].remove_poller(id)
    }

    /// True once every reactor stopped.
    pub(super) fn is_stopped(&self) -> bool {
        self.reactors.iter().all(ReactorHandle::is_finished)
    }

    /// Stops every reactor (each drains its pollers) and joins them;
    /// returns true if everything drained. A reactor that fails to stop is
    /// logged.
    pub(super) fn shutdown(&mut self, log: &mut dyn FnMut(&str)) -> bool {
        let mut drained = true;
        for handle in std::mem::take(&mut self.reactors) {
            match handle.shutdown() {
                Ok(report) => drained &= report.drained,
                Err(e) => {
                    drained = false;
                    log(&format!("reactor: {e}"));
                }
            }
        }
        drained
    }
}
