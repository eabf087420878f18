//! What the TCMU devices report: their counters for the metrics, their
//! totals for the control socket, and their statistics over an interval.

use std::sync::Arc;

use super::TcmuDevices;
use crate::serve::heal::Health;
use crate::serve::metrics::{DeviceCounters, DeviceSource};
use crate::serve::stats::{doorbells_per_io, DeviceIdentity, DeviceStats, DeviceTotals};
use crate::tcmu::discovery::TcmuUioName;

impl TcmuDevices {
    /// The attached devices' counters, by UIO minor, for the metrics.
    pub(in crate::serve) fn metric_sources(&self) -> Vec<DeviceSource> {
        self.devices
            .values()
            .map(|a| DeviceSource {
                name: a.name.name.clone(),
                bdev: a.name.cfg.clone(),
                counters: DeviceCounters::Tcmu(Arc::clone(&a.stats)),
                lun: Arc::clone(&a.lun),
                latency: a.latency.clone(),
            })
            .collect()
    }

    /// Each device's counters since attach (faulted ones with zeroes and
    /// their fault), by minor; reads counters only.
    pub(in crate::serve) fn totals(&self) -> Vec<DeviceTotals> {
        let mut devices = Vec::with_capacity(self.devices.len() + self.faulted.len());
        for (&minor, a) in &self.devices {
            let snap = a.stats.snapshot();
            devices.push((
                minor,
                DeviceTotals {
                    received_total: snap.commands_received,
                    commands_total: snap.commands_completed,
                    data_bytes_total: snap.data_bytes,
                    data_in_bytes_total: snap.data_in_bytes,
                    doorbells_total: snap.doorbells,
                    aborts_total: snap.aborts,
                    fault: a.fault.get().map(|f| format!("ring fault: {f}")),
                    ..idle_totals(&a.name, minor, a.reactor)
                },
            ));
        }
        for (&minor, f) in &self.faulted {
            let health = self.health.get(&minor);
            devices.push((
                minor,
                DeviceTotals {
                    fault: Some(
                        health
                            .and_then(|h| h.fault.clone())
                            .unwrap_or_else(|| "ring fault".into()),
                    ),
                    ..idle_totals(&f.name, minor, f.reactor)
                },
            ));
        }
        devices.sort_by_key(|(minor, _)| *minor);
        devices.into_iter().map(|(_, d)| d).collect()
    }

    /// Each device over the `interval` (seconds) since the previous call,
    /// the faulted ones (commands 0, their fault said) included.
    pub(in crate::serve) fn stats(&mut self, interval: f64) -> Vec<DeviceStats> {
        let mut devices = Vec::with_capacity(self.devices.len() + self.faulted.len());
        for (&minor, a) in &mut self.devices {
            let snap = a.stats.snapshot();
            let commands = snap.commands_completed - a.last.commands_completed;
            let doorbells = snap.doorbells - a.last.doorbells;
            let bytes = snap.data_bytes - a.last.data_bytes;
            let latency = a.latency.as_ref().map(|l| l.take()).unwrap_or_default();
            let health = self.health.get(&minor).cloned().unwrap_or_default();
            let fault = a.fault.get().map(|f| format!("ring fault: {f}"));
            devices.push((
                minor,
                DeviceStats {
                    commands,
                    iops: commands as f64 / interval,
                    bytes_per_sec: bytes as f64 / interval,
                    doorbells,
                    doorbells_per_io: doorbells_per_io(doorbells, commands),
                    latency_ns: latency.summary,
                    hold_us: snap.hold_us,
                    commands_total: snap.commands_completed,
                    doorbells_total: snap.doorbells,
                    received_total: snap.commands_received,
                    malformed_total: snap.malformed_commands,
                    aborts_total: snap.aborts,
                    // A fault the server has not handled yet counts already.
                    completion_cpu: None,
                    completion_switches_total: None,
                    faults_total: health.faults + u64::from(fault.is_some()),
                    fault,
                    ..device_stats(&a.name, minor, a.reactor, &health)
                },
            ));
            a.last = snap;
        }
        for (&minor, f) in &self.faulted {
            let health = self.health.get(&minor).cloned().unwrap_or_default();
            devices.push((
                minor,
                DeviceStats {
                    fault: Some(health.fault.clone().unwrap_or_else(|| "ring fault".into())),
                    ..device_stats(&f.name, minor, f.reactor, &health)
                },
            ));
        }
        devices.sort_by_key(|(minor, _)| *minor);
        devices.into_iter().map(|(_, d)| d).collect()
    }
}

/// The totals of a device that did nothing since attach.
fn idle_totals(name: &TcmuUioName, minor: u32, reactor: usize) -> DeviceTotals {
    DeviceTotals {
        device: DeviceIdentity::tcmu(name, minor, reactor),
        received_total: 0,
        commands_total: 0,
        data_bytes_total: 0,
        data_in_bytes_total: 0,
        doorbells_total: 0,
        aborts_total: 0,
        fault: None,
    }
}

/// The statistics of a device that did nothing over the interval.
fn device_stats(name: &TcmuUioName, minor: u32, reactor: usize, health: &Health) -> DeviceStats {
    DeviceStats {
        device: DeviceIdentity::tcmu(name, minor, reactor),
        commands: 0,
        iops: 0.0,
        bytes_per_sec: 0.0,
        doorbells: 0,
        doorbells_per_io: 0.0,
        latency_ns: Default::default(),
        hold_us: 0,
        commands_total: 0,
        doorbells_total: 0,
        received_total: 0,
        malformed_total: 0,
        aborts_total: 0,
        busy_total: None,
        sessions: None,
        empty_ioctls_total: None,
        fault: None,
        completion_cpu: None,
        completion_switches_total: None,
        faults_total: health.faults,
        recoveries_total: health.recoveries,
    }
}
