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
//! - With `--fd-store`: at stop, the `[[scst]]` devices are quiesced and
//!   their fds stored in systemd's fd store ([`FdStore`]) instead of being
//!   closed, so the LUNs stay in SCST across `systemctl restart`; at start,
//!   stored fds are taken over ([`take_stored`]) and then dropped from the
//!   store, so a crash later closes them as usual.
//!
//! Outside systemd (`$NOTIFY_SOCKET` unset) every call does nothing.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dataplane::serve::handoff::{HandedDevice, HandoffError, HandoffSink, ReceivedDevice};
use dataplane::serve::reload::ReloadReport;
use dataplane::serve::StatsReport;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use sd_notify::NotifyState;

/// The notifications of one `serve` process. See the module docs.
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    /// Half the watchdog interval, when systemd asked for pings.
    ping_every: Option<Duration>,
    next_ping: Instant,
    ready: bool,
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
    /// ping when due.
    pub fn turn(&mut self, status: &str) {
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
    }

    /// `STOPPING=1`: a signal ended the control loop (its
    /// `RunOptions::on_stop`, called once), the devices drain next.
    pub fn stopping(&self) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: draining"),
        ]);
    }

    /// `STATUS=` after a reload (SIGHUP): what changed, or why it was
    /// refused.
    pub fn reloaded(&self, outcome: Result<&ReloadReport, &str>) {
        if !self.enabled {
            return;
        }
        let status = match outcome {
            Ok(report) if report.failed.is_empty() => {
                format!("reloaded: {}", report.plan.summary())
            }
            Ok(report) => format!("reloaded, {} step(s) failed", report.failed.len()),
            Err(why) => format!("reload refused: {why}"),
        };
        self.send(&[NotifyState::Status(&status)]);
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

/// The prefix of the fd store names of `[[scst]]` devices.
const FD_NAME_PREFIX: &str = "scst-";

/// The service manager's file descriptor store as the place the `[[scst]]`
/// devices go when serve stops (`--fd-store`; the unit's
/// `FileDescriptorStoreMax=`): each device's fd is sent with `FDSTORE=1`
/// and `FDNAME=scst-<name>`, its sessions written to the state directory,
/// and the next serve of the unit gets the fds back ([`take_stored`]).
///
/// The messages are sent here with `sendmsg` to the given socket rather
/// than through `sd_notify::notify_with_fds`, which reads
/// `$NOTIFY_SOCKET` itself: an explicit socket can be tested without
/// changing the process environment.
#[derive(Debug)]
pub struct FdStore {
    socket: PathBuf,
    state_dir: Option<PathBuf>,
    /// Names stored so far (removed again if a later one fails).
    stored: Vec<String>,
}

impl FdStore {
    /// The store behind `$NOTIFY_SOCKET`; an error if serve does not run
    /// under a service manager.
    pub fn from_env(state_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
            anyhow::bail!(
                "--fd-store: $NOTIFY_SOCKET is not set; the fd store is systemd's \
                 (Type=notify with FileDescriptorStoreMax= in the unit)"
            );
        };
        Ok(Self::at(PathBuf::from(socket), state_dir))
    }

    /// The store behind `socket` (a path; `@name` for the abstract
    /// namespace is not supported).
    pub fn at(socket: PathBuf, state_dir: Option<PathBuf>) -> Self {
        Self {
            socket,
            state_dir,
            stored: Vec::new(),
        }
    }

    fn notify(&self, message: &str, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(&self.socket)?;
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
        let iov = [std::io::IoSlice::new(message.as_bytes())];
        let sent = sendmsg::<()>(socket.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)?;
        if sent != message.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "short notification",
            ));
        }
        Ok(())
    }

    /// Asks the service manager to drop the stored fds of `names` (after
    /// they were taken back, or when storing the others failed).
    pub fn forget(&self, names: &[String]) {
        for name in names {
            let message = format!("FDSTOREREMOVE=1\nFDNAME={name}\n");
            if let Err(e) = self.notify(&message, &[]) {
                tracing::warn!(target: "dataplane serve", "fd store: removing {name}: {e}");
            }
        }
    }

    fn sessions_file(&self, name: &str) -> Option<PathBuf> {
        self.state_dir
            .as_ref()
            .map(|d| d.join(format!("{FD_NAME_PREFIX}{name}.sessions.json")))
    }
}

impl HandoffSink for FdStore {
    fn send(&mut self, devices: &[(HandedDevice, BorrowedFd<'_>)]) -> Result<(), HandoffError> {
        // systemd takes printable ASCII names without ':' (which the
        // configuration already refuses): check all before storing any.
        if let Some((d, _)) = devices
            .iter()
            .find(|(d, _)| !d.name.bytes().all(|b| b.is_ascii_graphic()) || d.name.len() > 240)
        {
            return Err(HandoffError::Device {
                device: d.name.clone(),
                why: "its name is not one systemd's fd store takes (printable ASCII)".into(),
            });
        }
        for (d, fd) in devices {
            let name = format!("{FD_NAME_PREFIX}{}", d.name);
            if let Some(path) = self.sessions_file(&d.name) {
                let json = serde_json::to_vec(d).expect("a device serializes");
                if let Err(e) = std::fs::write(&path, json) {
                    tracing::warn!(
                        target: "dataplane serve",
                        "fd store: writing {}: {e}; {} comes back without its sessions",
                        path.display(),
                        d.name
                    );
                }
            }
            let message = format!("FDSTORE=1\nFDNAME={name}\n");
            if let Err(e) = self.notify(&message, &[*fd]) {
                let stored = std::mem::take(&mut self.stored);
                self.forget(&stored);
                return Err(HandoffError::Device {
                    device: d.name.clone(),
                    why: format!("sending its fd to the service manager: {e}"),
                });
            }
            self.stored.push(name);
        }
        Ok(())
    }

    fn refuse(&mut self, _why: &str) -> Result<(), HandoffError> {
        Ok(()) // nobody waits: the devices are closed as usual
    }
}

/// The `[[scst]]` devices the service manager kept in its fd store for this
/// process (`$LISTEN_FDS` with names `scst-<name>`), each with the
/// sessions recorded in `state_dir`; the variables are removed. Other fds
/// are closed. A malformed environment is logged and yields nothing.
pub fn take_stored(state_dir: Option<&Path>) -> Vec<ReceivedDevice> {
    let fds = match sd_notify::listen_fds_with_names(true) {
        Ok(fds) => fds,
        Err(e) => {
            tracing::warn!(target: "dataplane serve", "fds from the service manager: {e}");
            return Vec::new();
        }
    };
    let mut received = Vec::new();
    for (raw, fd_name) in fds {
        // SAFETY: the service manager passed this fd to this process
        // (LISTEN_PID matched) for it alone; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let Some(name) = fd_name.strip_prefix(FD_NAME_PREFIX) else {
            tracing::warn!(
                target: "dataplane serve",
                "fd store: closing {fd_name:?}, which is not an SCST device of serve"
            );
            continue;
        };
        let file = state_dir.map(|d| d.join(format!("{FD_NAME_PREFIX}{name}.sessions.json")));
        let sessions = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|json| serde_json::from_slice::<HandedDevice>(&json).ok())
            .filter(|d| d.name == name)
            .map(|d| d.sessions)
            .unwrap_or_default();
        if let Some(f) = &file {
            let _ = std::fs::remove_file(f);
        }
        received.push(ReceivedDevice {
            device: HandedDevice {
                name: name.to_owned(),
                sessions,
            },
            fd,
        });
    }
    received
}

/// The fd store names of `received`, for [`FdStore::forget`] once the
/// server runs on them.
pub fn stored_names(received: &[ReceivedDevice]) -> Vec<String> {
    received
        .iter()
        .map(|r| format!("{FD_NAME_PREFIX}{}", r.device.name))
        .collect()
}

#[cfg(test)]
mod tests;
