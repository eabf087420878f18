//! `dataplane serve`: serve real LIO/TCMU devices and SCST scst_user
//! devices.
//!
//! [`config`] is the configuration file, [`server`] attaches devices to
//! reactors through a [`Host`] ([`host`]; the real one is [`sys`]),
//! [`stats`] reports on them, and [`run`] is the control loop that ties
//! them to signals, netlink events and timers. Everything here is control
//! plane: it runs on the main thread, never on a reactor.
//!
//! # Files
//! - `server.rs`: [`Server`], which owns the rest.
//! - `resources.rs`: the bdevs (made by `bdevs.rs`), the reactors, their
//!   bdev pollers and the round-robin placement, shared by both frontends.
//! - `tcmu.rs`: the TCMU device table: rescan, checks, attach, detach,
//!   recovery of faulted rings; `recovery.rs`: whether a ring found at
//!   attach is taken as it is or reset; `heal.rs`: when a faulted device
//!   is recovered and when serve gives up ([`RecoveryPolicy`]).
//! - `scst.rs`: the `[[scst]]` devices, registered at start (or taken
//!   over), added and removed by a reload; `scst/handoff.rs`: handing
//!   them to a successor or an fd store.
//! - [`handoff`]: the hand-off socket's protocol and [`handoff::HandoffSink`].
//! - [`reload`]: what a reload of the configuration file changes
//!   ([`Server::reload`] applies it).
//! - `lu_id.rs`: the stable LUN ids of both.
//! - [`rpc`]: the control socket (JSON-RPC 2.0), served by its own
//!   threads; its calls reach the server through [`run`].
//! - [`error`]: why the server, an SCST device or a placement failed.
//!
//! Each device's chain (bdev, port, bdev poller, LUN, device) is assembled
//! by [`crate::stack`].

mod bdevs;
pub mod config;
pub mod error;
pub mod handoff;
mod heal;
pub mod host;
mod lu_id;
pub mod metrics;
mod rbd;
mod recovery;
pub mod reload;
mod resources;
pub mod rpc;
mod scst;
pub mod server;
pub mod stats;
pub mod sys;
mod tcmu;

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reactor::ShutdownSignals;

pub use crate::tcmu::discovery::TcmuUioName;
pub use error::{BdevChangeError, PlacementError, ScstStartError, ServeError};
pub use heal::RecoveryPolicy;
pub use host::{DeviceFacts, FoundDevice, Host, HostError};
pub use server::{ServeOptions, Server};
pub use stats::{BdevStats, DeviceKind, DeviceStats, DeviceTotals, StatsReport};
pub use sys::SysHost;

/// The control loop's wait ([`RunOptions::wait_event`]): the longest
/// wait, the descriptors that end it; true to rescan now.
pub type WaitEvent<'a> = dyn FnMut(Duration, &[BorrowedFd<'_>]) -> bool + 'a;

/// Timers and hooks of the control loop.
pub struct RunOptions<'a> {
    /// Period of the UIO rescan.
    pub rescan_interval: Duration,
    /// Period of the statistics report; `None` = only on request.
    pub stats_interval: Option<Duration>,
    /// Set by SIGUSR1 (or a test): report statistics now.
    pub stats_requested: Arc<AtomicBool>,
    /// Receives each statistics report.
    pub on_stats: Box<dyn FnMut(&StatsReport) + 'a>,
    /// Waits up to the given time for a device event (netlink) or until
    /// one of the given descriptors is readable (a control-socket call, a
    /// successor at the hand-off socket: see [`crate::wait::wait_readable`]), and
    /// returns true if the devices should be rescanned now. Without netlink
    /// it waits on those descriptors alone. A wait that ignores them still
    /// works, but answers calls and successors only at its timeout.
    pub wait_event: Box<WaitEvent<'a>>,
    /// Where a successor asks for the `[[scst]]` devices (see [`handoff`]);
    /// after handing them over the server shuts down.
    pub handoff: Option<handoff::HandoffListener>,
    /// Where the `[[scst]]` devices go when a signal stops the server
    /// (a service manager's fd store), instead of being closed.
    pub store_on_stop: Option<Box<dyn handoff::HandoffSink + 'a>>,
    /// The control socket's calls ([`rpc::RpcServer::start`]), answered at
    /// each wake-up; each call wakes the loop ([`rpc::Requests::wake_fd`]).
    pub rpc: Option<rpc::Requests>,
    /// Configuration reloads (SIGHUP), if the caller offers them.
    pub reload: Option<Reload<'a>>,
    /// Called once when a signal has ended the loop, before the final
    /// statistics report and the drain (for systemd's `STOPPING=1`):
    /// wherever in the loop's turn the signal came, in a wait or not.
    pub on_stop: Option<Box<dyn FnMut() + 'a>>,
}

/// How the control loop reloads the configuration: when `requested` is set
/// (SIGHUP), `load` reads and validates the file again; a file that does
/// not load is refused with its error and the running configuration stays
/// ([`Server::reload`] for what a reload changes).
pub struct Reload<'a> {
    /// Set by SIGHUP (or a test).
    pub requested: Arc<AtomicBool>,
    /// Reads and validates the configuration file.
    pub load: Box<dyn FnMut() -> Result<config::ServeConfig, String> + 'a>,
    /// Told each reload's outcome (for systemd's STATUS=).
    pub done: Box<dyn FnMut(ReloadOutcome<'_>) + 'a>,
}

/// A reload's outcome: what it did, or why it was refused.
pub type ReloadOutcome<'r> = Result<&'r reload::ReloadReport, &'r str>;

impl std::fmt::Debug for Reload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reload")
            .field("requested", &self.requested)
            .finish()
    }
}

/// Reloads the configuration if a reload was asked for.
fn maybe_reload<H: Host>(server: &mut Server<H>, reload: &mut Reload<'_>) {
    if !reload.requested.swap(false, Ordering::Relaxed) {
        return;
    }
    let outcome = match (reload.load)() {
        Ok(new) => server.reload(new).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match &outcome {
        Ok(report) if report.failed.is_empty() => {
            server.log(&format!("reloaded: {}", report.plan.summary()))
        }
        Ok(report) => server.log(&format!(
            "reloaded with {} step(s) failed: {}",
            report.failed.len(),
            report.failed.join("; ")
        )),
        Err(e) => server.log(&format!(
            "reload refused, the running configuration stays: {e}"
        )),
    }
    (reload.done)(outcome.as_ref().map_err(String::as_str));
}

impl std::fmt::Debug for RunOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("rescan_interval", &self.rescan_interval)
            .field("stats_interval", &self.stats_interval)
            .finish()
    }
}

/// What [`hand_off`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandOff {
    /// No successor asked, or the hand-off was refused: serving on.
    None,
    /// The `[[scst]]` devices were handed over: the server shuts down.
    Done,
    /// Taking a connection failed (out of descriptors, or a client that
    /// did not say the hand-off hello):
    /// the listener may stay readable, so the loop leaves it alone for
    /// [`HANDOFF_RETRY`] rather than turn without waiting.
    AcceptFailed,
}

/// How long the control loop leaves the hand-off socket alone after
/// taking a connection on it failed.
const HANDOFF_RETRY: Duration = Duration::from_secs(1);

/// Serves a successor waiting on `listener`, if one is.
fn hand_off<H: Host>(server: &mut Server<H>, listener: &handoff::HandoffListener) -> HandOff {
    let stream = match listener.accept(Duration::from_secs(5)) {
        Ok(Some(stream)) => stream,
        Ok(None) => return HandOff::None,
        Err(e) => {
            server.log(&format!("{e}"));
            return HandOff::AcceptFailed;
        }
    };
    server.log("a successor asked for the SCST devices: quiescing them");
    let began = Instant::now();
    match server.hand_off(&mut handoff::Successor(&stream)) {
        Ok(names) => {
            server.log(&format!(
                "handed over SCST device(s) {} in {} ms; shutting down",
                if names.is_empty() {
                    "(none)".to_owned()
                } else {
                    names.join(", ")
                },
                began.elapsed().as_millis()
            ));
            HandOff::Done
        }
        Err(e) => {
            server.log(&format!("hand-off refused: {e}; serving on"));
            HandOff::None
        }
    }
}

/// The longest the control loop waits: signals (checked as a flag),
/// SIGUSR1, SIGHUP, recovery retries and the completion affinity's look at
/// the load are noticed within this. Calls on the control socket and a
/// successor's hand-off request wake it at once.
pub const MAX_WAIT: Duration = Duration::from_millis(100);

/// Runs the control loop until `signals` fire (or the reactors stop), then
/// shuts down: every reactor drains its devices and the state files are
/// marked clean. Returns true if everything drained.
pub fn run<H: Host>(
    mut server: Server<H>,
    signals: &ShutdownSignals,
    mut options: RunOptions<'_>,
) -> bool {
    server.rescan();
    let mut next_rescan = Instant::now() + options.rescan_interval;
    let mut next_stats = options.stats_interval.map(|i| Instant::now() + i);
    // Set after taking a hand-off connection failed: until then the
    // hand-off socket is neither watched nor served.
    let mut handoff_retry_at: Option<Instant> = None;
    while !signals.is_triggered() && !server.is_stopped() {
        let now = Instant::now();
        let handoff = options
            .handoff
            .as_ref()
            .filter(|_| handoff_retry_at.is_none_or(|at| now >= at));
        let mut deadline = next_rescan;
        if let Some(at) = next_stats {
            deadline = deadline.min(at);
        }
        let wait = deadline.saturating_duration_since(now).min(MAX_WAIT);
        // Calls and successors end the wait at once.
        let watched: Vec<BorrowedFd<'_>> = options
            .rpc
            .iter()
            .map(rpc::Requests::wake_fd)
            .chain(handoff.map(AsFd::as_fd))
            .collect();
        let event = (options.wait_event)(wait, &watched);
        drop(watched);
        if let Some(rpc) = &options.rpc {
            rpc.serve(&mut server);
        }
        let now = Instant::now();
        if event || now >= next_rescan {
            server.rescan();
            next_rescan = now + options.rescan_interval;
        }
        server.heal();
        server.follow_load();
        if let Some(reload) = options.reload.as_mut() {
            maybe_reload(&mut server, reload);
        }
        if let Some(listener) = handoff {
            match hand_off(&mut server, listener) {
                HandOff::Done => {
                    // Free the path for the successor's own listener now.
                    options.handoff = None;
                    break;
                }
                HandOff::AcceptFailed => handoff_retry_at = Some(now + HANDOFF_RETRY),
                HandOff::None => handoff_retry_at = None,
            }
        }
        let due = next_stats.is_some_and(|at| now >= at);
        if due || options.stats_requested.swap(false, Ordering::Relaxed) {
            let report = server.stats();
            (options.on_stats)(&report);
            if let Some(interval) = options.stats_interval {
                next_stats = Some(now + interval);
            }
        }
    }
    // Read once: whether a signal ended the loop decides both what is said
    // (`on_stop`) and what is done (the fd store), even should one come
    // during the final report.
    let signalled = signals.is_triggered();
    if signalled {
        if let Some(on_stop) = options.on_stop.as_mut() {
            on_stop();
        }
    }
    let report = server.stats();
    (options.on_stats)(&report);
    if signalled {
        if let Some(sink) = options.store_on_stop.as_mut() {
            match server.hand_off(sink.as_mut()) {
                Ok(names) if !names.is_empty() => server.log(&format!(
                    "stored SCST device(s) {} in the service manager's fd store",
                    names.join(", ")
                )),
                Ok(_) => {}
                Err(e) => server.log(&format!(
                    "storing the SCST devices failed ({e}): closing them (SCST removes their LUNs)"
                )),
            }
        }
    }
    server.shutdown()
}
