//! Prometheus metrics of the dataplane, served over HTTP by a thread of
//! their own (`dataplane serve --metrics-listen ADDR`, and `dataplane bench`
//! with the same flag).
//!
//! # Contract
//! - **What is read.** A [`MetricsCatalog`] lists the sources: each
//!   device's shared counters ([`TcmuStats`](crate::tcmu::TcmuStats) or
//!   [`ScstStats`](crate::scst::device::ScstStats)) and latency histogram
//!   ([`SharedLatency`](crate::latency::SharedLatency)), each reactor's
//!   [`StatsReader`](reactor::StatsReader), each bdev over io_uring's
//!   counters. The control plane that owns the devices (serve's control
//!   loop, the bench) replaces those lists when devices come and go; the
//!   lists hold `Arc`s, so a source outlives its device until the next
//!   replacement.
//! - **What a scrape costs the reactors.** Nothing but relaxed loads of
//!   counters they already publish: a scrape clones the source lists under
//!   the catalog's lock (which no reactor takes), then loads the counters.
//!   The one exception is the latency histogram, whose recorder lock a
//!   reactor takes about twenty times a second to publish; the scrape holds
//!   it only for an O(1) swap (see [`crate::latency`]). Nothing is added to
//!   the per-command path: only what the devices, reactors and bdevs
//!   already count is exported.
//! - **Why a custom collector** rather than prometheus-client's own
//!   counters: those would have to be incremented on the data path. The
//!   collector ([`collector`]) encodes the values read at scrape time with
//!   prometheus-client's encoder (OpenMetrics text, `# EOF` at the end).
//! - **Counters restart from zero** when a device is attached again (a
//!   re-attach after a fault, a TCMU device found again): Prometheus'
//!   `rate()` treats that as a counter reset.
//! - **The HTTP side** ([`http`]): `GET /metrics` only, see
//!   [`MetricsServer`].
//!
//! # Names
//! Every metric is prefixed `dataplane_`; devices carry the labels
//! `device`, `frontend` (`tcmu`/`scst`) and `bdev`, reactors `reactor`
//! (and `core` when pinned), bdevs `bdev`. The README's "Operating:
//! metrics" section lists them.

mod catalog;
pub mod collector;
pub mod http;

pub use catalog::{BdevSource, DeviceCounters, DeviceSource, MetricsCatalog, Sources};
pub use http::{MetricsError, MetricsServer};

#[cfg(test)]
mod tests;
