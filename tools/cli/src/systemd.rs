//! systemd's service protocol for `dataplane serve` (`Type=notify`; the unit
//! file is `dist/dataplane.service`).
//!
//! - `READY=1` with a `STATUS=` line once the server started: the bdevs are
//!   made, the `[[scst]]` devices registered (or taken over) and the TCMU
//!   devices present at start attached (sent at the control loop's first
//!   wait, which follows its first rescan).
//! - `STATUS=` again at every statistics report: devices, IOPS, faults.
//! - `WATCHDOG=1` every half `WatchdogSec` while the control loop turns
//!   (it waits at most 100 ms between turns; a hand-off or an SCST export
//!   can hold it for seconds, so give `WatchdogSec` a minute).
//! - `STOPPING=1` when a signal asks the server to stop (before it drains).
//!
//! Outside systemd (`$NOTIFY_SOCKET` unset) every call does nothing.

use std::time::{Duration, Instant};

use dataplane::serve::StatsReport;
use sd_notify::NotifyState;

/// The notifications of one `serve` process. See the module docs.
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    /// Half the watchdog interval, when systemd asked for pings.
    ping_every: Option<Duration>,
    next_ping: Instant,
    ready: bool,
    stopping: bool,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (left in the
    /// environment: the reactors' threads only read it).
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let mut usec = 0;
        let ping_every = (enabled && sd_notify::watchdog_enabled(false, &mut usec))
            .then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(1)));
        Self {
            enabled,
            ping_every,
            next_ping: Instant::now(),
            ready: false,
            stopping: false,
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if self.enabled {
            if let Err(e) = sd_notify::notify(false, states) {
                tracing::warn!(target: "dataplane serve", "systemd notification failed: {e}");
            }
        }
    }

    /// One turn of the control loop: `READY=1` the first time, a watchdog
    /// ping when due, `STOPPING=1` once `stopping`.
    pub fn turn(&mut self, status: &str, stopping: bool) {
        if !self.ready {
            self.ready = true;
            self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        }
        if let Some(every) = self.ping_every {
            let now = Instant::now();
            if now >= self.next_ping {
                self.send(&[NotifyState::Watchdog]);
                self.next_ping = now + every;
            }
        }
        if stopping && !self.stopping {
            self.stopping = true;
            self.send(&[
                NotifyState::Stopping,
                NotifyState::Status("stopping: draining"),
            ]);
        }
    }

    /// `STATUS=` from a statistics report.
    pub fn report(&self, report: &StatsReport) {
        if self.enabled {
            self.send(&[NotifyState::Status(&status_line(report))]);
        }
    }
}

/// One line for `systemctl status`: devices, IOPS, faults.
pub fn status_line(report: &StatsReport) -> String {
    let iops: f64 = report.devices.iter().map(|d| d.iops).sum();
    let faulted = report.devices.iter().filter(|d| d.fault.is_some()).count();
    let mut line = format!(
        "{} device(s) on {} reactor(s), {:.0} IOPS",
        report.devices.len(),
        report.reactors.len(),
        iops
    );
    if faulted > 0 {
        line.push_str(&format!(", {faulted} faulted"));
    }
    line
}
