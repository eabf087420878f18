//! The prometheus-client [`Collector`] that reads the sources at scrape
//! time and encodes them (see the module docs of [`super`] for what a
//! scrape costs).
//!
//! Families are always described, even when empty (no device yet), so a
//! dashboard finds every name.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use reactor::ReactorStats;

use super::catalog::{DeviceCounters, DeviceSource, Sources};
use crate::lun::LunCountersSnapshot;
use crate::serve::stats::UringCounters;

/// Upper bounds of the latency buckets, in nanoseconds: 1 µs to 1 s.
pub const LATENCY_BOUNDS_NS: [u64; 19] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// Labels of a sample.
type Labels = Vec<(&'static str, String)>;

/// What one device published, in the terms both frontends share.
#[derive(Debug, Clone, Copy, Default)]
struct DeviceReading {
    received: u64,
    completed: u64,
    data_bytes: u64,
    data_in_bytes: u64,
    doorbells: u64,
    kernel_errors: u64,
    malformed: u64,
    aborts: u64,
    hold_us: u64,
    in_flight: u64,
    busy: Option<u64>,
    sessions: Option<u64>,
}

impl DeviceReading {
    /// Relaxed loads of the device's counters.
    fn of(counters: &DeviceCounters) -> Self {
        match counters {
            DeviceCounters::Tcmu(stats) => {
                let s = stats.snapshot();
                Self {
                    received: s.commands_received,
                    completed: s.commands_completed,
                    data_bytes: s.data_bytes,
                    data_in_bytes: s.data_in_bytes,
                    doorbells: s.doorbells,
                    kernel_errors: s.doorbell_errors,
                    malformed: s.malformed_commands,
                    aborts: s.aborts,
                    hold_us: s.hold_us,
                    in_flight: s.commands_received.saturating_sub(s.commands_completed),
                    busy: None,
                    sessions: None,
                }
            }
            DeviceCounters::Scst(stats) => {
                let s = stats.snapshot();
                Self {
                    received: s.exec,
                    completed: s.commands_completed,
                    data_bytes: s.data_bytes,
                    data_in_bytes: s.data_in_bytes,
                    doorbells: s.ioctls,
                    kernel_errors: s.ioctl_errors + s.reply_failures,
                    malformed: s.bad_pbufs + s.bad_frees + s.unknown_subcodes,
                    aborts: s.aborts,
                    hold_us: s.hold_us,
                    in_flight: s.outstanding,
                    busy: Some(s.busy),
                    sessions: Some(s.sessions),
                }
            }
        }
    }
}

/// Encodes [`Sources`] read at scrape time.
#[derive(Debug)]
struct SourcesCollector {
    sources: Sources,
}

/// The metrics of `sources`, read now, in the OpenMetrics text format.
pub fn render(sources: Sources) -> String {
    let mut registry = Registry::with_prefix("dataplane");
    registry.register_collector(Box::new(SourcesCollector { sources }));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// Writes families to the encoder: each call describes one family (name,
/// help, unit, type) and encodes its samples, possibly none.
struct Family<'e, 'a> {
    encoder: &'e mut DescriptorEncoder<'a>,
}

impl Family<'_, '_> {
    fn counters<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        samples: impl IntoIterator<Item = (L, u64)>,
    ) -> fmt::Result {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, unit, MetricType::Counter)?;
        for (labels, value) in samples {
            ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn seconds_counters<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) -> fmt::Result {
        let mut metric = self.encoder.encode_descriptor(
            name,
            help,
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for (labels, value) in samples {
            ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn gauges<L: EncodeLabelSet, V>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        samples: impl IntoIterator<Item = (L, V)>,
    ) -> fmt::Result
    where
        ConstGauge<V>: EncodeMetric,
    {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, unit, MetricType::Gauge)?;
        for (labels, value) in samples {
            ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// A count as a gauge value (integer gauges are `i64`).
fn gauge_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn device_labels(d: &DeviceSource) -> Labels {
    vec![
        ("device", d.name.clone()),
        ("frontend", d.counters.frontend().to_owned()),
        ("bdev", d.bdev.clone()),
    ]
}

fn reactor_labels(r: &ReactorStats) -> Labels {
    let mut labels = vec![("reactor", r.name.clone())];
    if let Some(core) = r.core {
        labels.push(("core", core.to_string()));
    }
    labels
}

impl SourcesCollector {
    fn encode_devices(&self, f: &mut Family<'_, '_>) -> fmt::Result {
        let readings: Vec<(Labels, DeviceReading)> = self
            .sources
            .devices
            .iter()
            .map(|d| (device_labels(d), DeviceReading::of(&d.counters)))
            .collect();
        let each = |pick: fn(&DeviceReading) -> u64| {
            readings
                .iter()
                .map(move |(labels, r)| (labels.clone(), pick(r)))
        };
        f.counters(
            "device_commands_received",
            "Commands received from the kernel (TCMU: ring entries; SCST: EXEC subcommands).",
            None,
            each(|r| r.received),
        )?;
        f.counters(
            "device_commands_completed",
            "Commands completed back to the kernel.",
            None,
            each(|r| r.completed),
        )?;
        f.counters(
            "device_data",
            "Data buffer bytes of the commands received (reads and writes).",
            Some(&Unit::Bytes),
            each(|r| r.data_bytes),
        )?;
        f.counters(
            "device_data_in",
            "Bytes of data returned to the initiator (data-in of completed commands: reads).",
            Some(&Unit::Bytes),
            each(|r| r.data_in_bytes),
        )?;
        f.counters(
            "device_doorbells",
            "Doorbells: 4-byte writes to the UIO fd (TCMU) or REPLY_AND_GET_MULTI ioctls (SCST).",
            None,
            each(|r| r.doorbells),
        )?;
        f.counters(
            "device_kernel_errors",
            "Failed doorbell writes (TCMU) or failed ioctls and refused replies (SCST).",
            None,
            each(|r| r.kernel_errors),
        )?;
        f.counters(
            "device_malformed",
            "Malformed ring entries (TCMU) or subcommands naming an unknown buffer or subcode (SCST).",
            None,
            each(|r| r.malformed),
        )?;
        f.counters(
            "device_aborts",
            "Commands aborted by the kernel's task management while they ran.",
            None,
            each(|r| r.aborts),
        )?;
        f.counters(
            "device_busy",
            "Commands answered BUSY because the buffer pool was exhausted (SCST).",
            None,
            readings
                .iter()
                .filter_map(|(labels, r)| r.busy.map(|b| (labels.clone(), b))),
        )?;
        f.gauges(
            "device_in_flight",
            "Commands received and not yet completed.",
            None,
            readings
                .iter()
                .map(|(labels, r)| (labels.clone(), gauge_count(r.in_flight))),
        )?;
        f.gauges(
            "device_completion_hold",
            "How long completions may wait to share a doorbell or ioctl, as the hold tuner chose it.",
            Some(&Unit::Seconds),
            readings
                .iter()
                .map(|(labels, r)| (labels.clone(), r.hold_us as f64 / 1e6)),
        )?;
        f.gauges(
            "device_sessions",
            "Sessions (initiator nexuses) attached (SCST).",
            None,
            readings
                .iter()
                .filter_map(|(labels, r)| r.sessions.map(|s| (labels.clone(), gauge_count(s)))),
        )?;
        self.encode_lun_counters(f)?;
        self.encode_latency(f)
    }

    /// The families read from the devices' LUNs: commands by kind,
    /// responses by status, CHECK CONDITIONs by sense key.
    fn encode_lun_counters(&self, f: &mut Family<'_, '_>) -> fmt::Result {
        let luns: Vec<(Labels, LunCountersSnapshot)> = self
            .sources
            .devices
            .iter()
            .map(|d| (device_labels(d), d.lun.snapshot()))
            .collect();
        let with = |labels: &Labels, name: &'static str, value: &'static str| {
            let mut labels = labels.clone();
            labels.push((name, value.to_owned()));
            labels
        };
        f.counters(
            "device_commands",
            "Commands the device's LUN received, by kind: read (READ 6/10/12/16), write \
             (WRITE 6/10/12/16, WRITE AND VERIFY) and other.",
            None,
            luns.iter()
                .flat_map(|(labels, c)| c.by_kind().map(|(op, n)| (with(labels, "op", op), n))),
        )?;
        f.counters(
            "device_responses",
            "Responses the device's LUN gave, by SCSI status.",
            None,
            luns.iter().flat_map(|(labels, c)| {
                let errors: u64 = c.by_sense_key().iter().map(|(_, n)| n).sum();
                [("GOOD", c.good), ("CHECK_CONDITION", errors)]
                    .into_iter()
                    .chain(c.by_status())
                    .map(|(status, n)| (with(labels, "status", status), n))
                    .collect::<Vec<_>>()
            }),
        )?;
        f.counters(
            "device_errors",
            "CHECK CONDITION responses of the device's LUN, by sense key.",
            None,
            luns.iter().flat_map(|(labels, c)| {
                c.by_sense_key()
                    .map(|(key, n)| (with(labels, "sense_key", key), n))
            }),
        )
    }

    fn encode_latency(&self, f: &mut Family<'_, '_>) -> fmt::Result {
        let mut metric = f.encoder.encode_descriptor(
            "device_latency",
            "Command latency inside the dataplane, from receiving a command to handing its response \
             to the kernel (buckets within 1 %).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for d in &self.sources.devices {
            let Some(latency) = &d.latency else {
                continue;
            };
            let c = latency.cumulative(&LATENCY_BOUNDS_NS);
            // The encoder sums the buckets it is given, and writes an upper
            // bound of f64::MAX as +Inf: hand it each bucket's own count.
            let mut below = 0;
            let mut buckets: Vec<(f64, u64)> = c
                .buckets
                .iter()
                .map(|&(bound, cumulative)| {
                    let own = cumulative - below;
                    below = cumulative;
                    (bound as f64 / 1e9, own)
                })
                .collect();
            buckets.push((f64::MAX, c.count - below));
            let labels = device_labels(d);
            metric.encode_family(&labels)?.encode_histogram::<Labels>(
                c.sum_ns / 1e9,
                c.count,
                &buckets,
                None,
            )?;
        }
        Ok(())
    }

    fn encode_reactors(&self, f: &mut Family<'_, '_>) -> fmt::Result {
        let stats: Vec<ReactorStats> = self.sources.reactors.iter().map(|r| r.stats()).collect();
        let seconds = |ns: u64| ns as f64 / 1e9;
        f.seconds_counters(
            "reactor_busy",
            "Time in reactor loop iterations in which some poller did work.",
            stats
                .iter()
                .map(|r| (reactor_labels(r), seconds(r.busy_ns))),
        )?;
        f.seconds_counters(
            "reactor_idle",
            "Time in reactor loop iterations in which no poller did work (spinning).",
            stats
                .iter()
                .map(|r| (reactor_labels(r), seconds(r.idle_ns))),
        )?;
        f.seconds_counters(
            "reactor_sleep",
            "Time the reactor slept in epoll (adaptive idle policy).",
            stats
                .iter()
                .map(|r| (reactor_labels(r), seconds(r.sleep_ns))),
        )?;
        f.counters(
            "reactor_iterations",
            "Reactor loop iterations.",
            None,
            stats.iter().map(|r| (reactor_labels(r), r.iterations)),
        )?;
        f.counters(
            "reactor_sleeps",
            "Times the reactor went to sleep in epoll.",
            None,
            stats.iter().map(|r| (reactor_labels(r), r.sleeps)),
        )
    }

    fn encode_bdevs(&self, f: &mut Family<'_, '_>) -> fmt::Result {
        let uring: Vec<(Labels, UringCounters)> = self
            .sources
            .bdevs
            .iter()
            .filter_map(|b| {
                let counters = b.uring.as_ref()?.counters();
                Some((vec![("bdev", b.name.clone())], counters))
            })
            .collect();
        let each = |pick: fn(&UringCounters) -> u64| {
            uring
                .iter()
                .map(move |(labels, c)| (labels.clone(), pick(c)))
        };
        // What the devices' LUNs saw of each bdev (the bdev a device
        // exports; a striped bdev's children show through their parent).
        // Every bdev has a sample, 0 while no device uses it.
        let mut seen: Vec<(Labels, LunCountersSnapshot)> = self
            .sources
            .bdevs
            .iter()
            .map(|b| {
                (
                    vec![("bdev", b.name.clone())],
                    LunCountersSnapshot::default(),
                )
            })
            .collect();
        for d in &self.sources.devices {
            let c = d.lun.snapshot();
            let labels = vec![("bdev", d.bdev.clone())];
            let at = match seen.iter().position(|(l, _)| *l == labels) {
                Some(at) => at,
                None => {
                    seen.push((labels, LunCountersSnapshot::default()));
                    seen.len() - 1
                }
            };
            let sum = &mut seen[at].1;
            sum.bdev_errors += c.bdev_errors;
            sum.bdev_outstanding += c.bdev_outstanding;
        }
        f.gauges(
            "bdev_queue_depth",
            "Requests the devices' LUNs have staged or in the bdev.",
            None,
            seen.iter()
                .map(|(labels, c)| (labels.clone(), gauge_count(c.bdev_outstanding))),
        )?;
        f.counters(
            "bdev_errors",
            "Requests to the bdev that completed with an error, as the devices' LUNs saw them.",
            None,
            seen.iter()
                .map(|(labels, c)| (labels.clone(), c.bdev_errors)),
        )?;
        f.counters(
            "bdev_completed",
            "Requests a file or nvme bdev completed (successfully or not).",
            None,
            each(|c| c.completed),
        )?;
        f.counters(
            "bdev_submit_syscalls",
            "io_uring_enter calls of a file or nvme bdev.",
            None,
            each(|c| c.submit_syscalls),
        )?;
        f.counters(
            "bdev_waited",
            "Requests that waited in a file or nvme bdev's channel for ring room or buffers.",
            None,
            each(|c| c.waited),
        )?;
        f.counters(
            "bdev_enter_errors",
            "io_uring_enter calls of a file or nvme bdev that failed (and were retried).",
            None,
            each(|c| c.enter_errors),
        )?;
        let mut info = f.encoder.encode_descriptor(
            "bdev",
            "Each bdev served (value 1).",
            None,
            MetricType::Info,
        )?;
        for b in &self.sources.bdevs {
            info.encode_info(&vec![("bdev", b.name.clone())])?;
        }
        Ok(())
    }
}

impl Collector for SourcesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut family = Family {
            encoder: &mut encoder,
        };
        self.encode_devices(&mut family)?;
        self.encode_reactors(&mut family)?;
        self.encode_bdevs(&mut family)
    }
}
