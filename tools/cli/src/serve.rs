//! `dataplane serve`: serve LIO/TCMU devices and SCST (scst_user) devices
//! from a configuration file.
//!
//! TCMU devices are found (and found again) at run time; without TCMU on
//! the host (no target_core_user, no /sys/class/uio) serve says so and keeps
//! serving its `[[scst]]` devices. `[[scst]]` devices are registered at
//! start: any that cannot be is an error (exit status 1).

use std::io::Write as _;
use std::os::fd::{AsFd as _, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::systemd::{self, FdStore, Notifier};
use anyhow::{bail, Context as _, Result};
use clap::Args;
use dataplane::kernfs::Roots;
use dataplane::serve::config::ServeConfig;
use dataplane::serve::handoff::{self, HandoffError, HandoffListener, HandoffSink, ReceivedDevice};
use dataplane::serve::{self, RunOptions, ServeOptions, Server, StatsReport, SysHost};
use dataplane::tcmu::netlink::{NetlinkError, TcmuNetlink};
use dataplane::wait::wait_readable;
use reactor::ShutdownSignals;

/// Flags of `dataplane serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file (TOML; see the README's config reference).
    #[arg(long, short)]
    config: PathBuf,
    /// Print statistics every SECS seconds (0 = only on SIGUSR1 and at exit).
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    stats_interval: f64,
    /// Print statistics as one JSON object per line instead of text.
    #[arg(long)]
    stats_json: bool,
    /// Also write the latest statistics, as JSON, to this file (replaced
    /// atomically at each report).
    #[arg(long, value_name = "PATH")]
    stats_file: Option<PathBuf>,
    /// Directory of per-device state files, used to detect a handler that
    /// died while attached; "none" turns crash detection off.
    #[arg(long, default_value = "/run/dataplane", value_name = "DIR")]
    state_dir: PathBuf,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9150; port 0 picks a free port, which is logged).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// The control socket (JSON-RPC 2.0; see `dataplane rpc`); "none"
    /// serves none.
    #[arg(long, default_value = serve::rpc::DEFAULT_SOCKET, value_name = "PATH")]
    rpc_socket: PathBuf,
    /// Do not listen to TCM-USER netlink events (rescan only).
    #[arg(long)]
    no_netlink: bool,
    /// Listen on this unix socket for a successor (`serve --take-over`):
    /// hand it the [[scst]] devices without unregistering them, then shut
    /// down.
    #[arg(long, value_name = "PATH")]
    handoff_socket: Option<PathBuf>,
    /// Take the [[scst]] devices over from the server listening on this
    /// hand-off socket instead of registering them (their LUNs never leave
    /// SCST). No server there: the devices are registered as usual.
    #[arg(long, value_name = "PATH")]
    take_over: Option<PathBuf>,
    /// How long to wait for the running server to hand its devices over.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    take_over_timeout: f64,
    /// Under systemd (FileDescriptorStoreMax= in the unit): at stop, keep
    /// the [[scst]] devices registered by storing their fds in systemd's
    /// fd store, so that the next start of the unit takes them over and
    /// their LUNs never leave SCST.
    #[arg(long)]
    fd_store: bool,
    /// Root of configfs' target tree (for tests).
    #[arg(long, hide = true)]
    configfs_root: Option<PathBuf>,
    /// Root of sysfs (for tests).
    #[arg(long, hide = true)]
    sysfs_root: Option<PathBuf>,
    /// Directory of device nodes (for tests).
    #[arg(long, hide = true)]
    dev_root: Option<PathBuf>,
}

fn log(line: &str) {
    crate::logging::serve_line(line);
}

/// How often serve tries to open the netlink family again while it is
/// missing.
const NETLINK_RETRY: Duration = Duration::from_secs(10);

/// Opens the TCM-USER netlink listener; says why not (loudly only the first
/// time) and returns `None` if it cannot.
fn open_netlink(rescan_interval: Duration, first: bool) -> Option<TcmuNetlink> {
    match TcmuNetlink::open() {
        Ok(n) => {
            log("listening to TCM-USER netlink events");
            Some(n)
        }
        Err(e @ NetlinkError::FamilyNotFound { .. }) => {
            if first {
                log(&format!(
                    "{e}; rescanning UIO devices every {} ms and retrying netlink every {} s",
                    rescan_interval.as_millis(),
                    NETLINK_RETRY.as_secs()
                ));
            }
            None
        }
        Err(e) => {
            if first {
                log(&format!(
                    "netlink unavailable ({e}); rescanning UIO devices every {} ms",
                    rescan_interval.as_millis()
                ));
            }
            None
        }
    }
}

fn write_stats_file(path: &Path, report: &StatsReport) -> std::io::Result<()> {
    // Serialized first and written in one call: serde_json writes a token
    // at a time, and unbuffered that was about 700 system calls a report
    // (each a round trip to the server on a network or 9p filesystem).
    let mut json = serde_json::to_vec_pretty(report)?;
    json.push(b'\n');
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(tmp, path)
}

/// Receives the `[[scst]]` devices from the server on `path`; none if no
/// server listens there (it is not running: the devices are registered).
fn take_over(path: &Path, timeout_secs: f64) -> Result<Vec<ReceivedDevice>> {
    if !timeout_secs.is_finite() || timeout_secs <= 0.0 {
        bail!("--take-over-timeout {timeout_secs}: must be a number of seconds above 0");
    }
    match handoff::receive(path, Duration::from_secs_f64(timeout_secs)) {
        Ok(received) => {
            let names: Vec<&str> = received.iter().map(|r| r.device.name.as_str()).collect();
            log(&format!(
                "took over SCST device(s) {names:?} from the server on {}",
                path.display()
            ));
            Ok(received)
        }
        Err(HandoffError::Socket {
            what: "connecting",
            error,
            ..
        }) => {
            log(&format!(
                "no server to take over from on {} ({error}): registering the SCST devices",
                path.display()
            ));
            Ok(Vec::new())
        }
        Err(e) => Err(e).context("taking the SCST devices over"),
    }
}

/// Listens on `path` for a successor. Right after a take-over the previous
/// server may still hold the path for a moment: a live listener there is
/// waited for (10 s) before it counts as another server.
fn listen_for_successor(path: &Path) -> Result<HandoffListener> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match HandoffListener::bind(path) {
            Ok(listener) => {
                log(&format!(
                    "hand-off socket {}: a successor started with --take-over {} gets the \
                     SCST devices",
                    path.display(),
                    path.display()
                ));
                return Ok(listener);
            }
            Err(HandoffError::InUse(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("--handoff-socket"),
        }
    }
}

/// Runs `dataplane serve`.
pub fn run(args: ServeArgs) -> Result<ExitCode> {
    if !args.stats_interval.is_finite() || args.stats_interval < 0.0 {
        bail!(
            "--stats-interval {}: must be a number of seconds, 0 or more",
            args.stats_interval
        );
    }
    let available = reactor::available_cores();
    let config = ServeConfig::load(&args.config, &available)?;
    let mut roots = Roots::default();
    if let Some(p) = args.configfs_root {
        roots.configfs = p;
    }
    if let Some(p) = args.sysfs_root {
        roots.sysfs = p;
    }
    if let Some(p) = args.dev_root {
        roots.dev = p;
    }
    let state_dir = (args.state_dir != Path::new("none")).then_some(args.state_dir);
    let rescan_interval = Duration::from_millis(config.tcmu.rescan_interval_ms);
    let subtype = config.tcmu.subtype.clone();
    let scst_names: Vec<String> = config.scst.iter().map(|s| s.name.clone()).collect();
    let server_bdevs: Vec<String> = config.bdevs.iter().map(|b| b.name().to_string()).collect();

    // Devices a previous start left in systemd's fd store (whatever this
    // start's flags: they must not stay registered unserved). Read first,
    // while this is the only thread: it removes $LISTEN_FDS and friends.
    let stored = systemd::take_stored(state_dir.as_deref());
    let stored_names = systemd::stored_names(&stored);
    if !stored.is_empty() {
        log(&format!(
            "taking over SCST device(s) {stored_names:?} from the service manager's fd store"
        ));
    }
    // Listening first: a bad address fails before any device is touched.
    let metrics = (args.metrics_listen.as_deref())
        .map(crate::metrics::listen)
        .transpose()?;
    let fd_store = if args.fd_store {
        Some(FdStore::from_env(state_dir.clone())?)
    } else {
        None
    };
    let mut received = match &args.take_over {
        Some(path) => take_over(path, args.take_over_timeout)?,
        None => Vec::new(),
    };
    received.extend(stored);
    let taking_over = !received.is_empty();
    let mut server = Server::start_taking_over(
        ServeOptions { config, state_dir },
        SysHost::new(roots),
        received,
        Box::new(log),
    )
    .context("starting the server")?;
    if let Some(socket) = std::env::var_os("NOTIFY_SOCKET").filter(|_| !stored_names.is_empty()) {
        // Serving them now: a crash from here on must close them (drop
        // systemd's copies), as it would any registered device.
        FdStore::at(PathBuf::from(socket), None).forget(&stored_names);
    }
    if let Some((endpoint, catalog)) = &metrics {
        server.share_metrics(Arc::clone(catalog));
        log(&format!(
            "metrics at http://{}/metrics",
            endpoint.local_addr()
        ));
    }
    let handoff = match &args.handoff_socket {
        Some(path) => Some(listen_for_successor(path)?),
        None => None,
    };
    // After a take-over the predecessor holds the socket until it exits.
    let patience = Duration::from_secs(if taking_over { 10 } else { 0 });
    let rpc = (args.rpc_socket != Path::new("none"))
        .then(|| serve::rpc::RpcOptions::new(&args.rpc_socket))
        .map(|options| serve::rpc::RpcServer::start_waiting(options, patience))
        .transpose()
        .context("the control socket")?;
    let (rpc_server, rpc) = rpc.unzip();
    // log_set_level changes this process's log filter.
    let rpc = rpc.map(|requests| {
        requests.with_log_level(Box::new(|spec| match crate::logging::control() {
            Some(control) => control.set_level(spec).map_err(|e| e.to_string()),
            None => Err("no logger is installed".to_owned()),
        }))
    });
    let signals = ShutdownSignals::install(&server.reactors().iter().collect::<Vec<_>>())
        .context("installing signal handlers")?;
    let stats_requested = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&stats_requested))
        .context("installing the SIGUSR1 handler")?;
    let reload_requested = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload_requested))
        .context("installing the SIGHUP handler")?;
    let config_path = args.config.clone();
    // The bdevs that serve, in configuration order, and those left out.
    let left_out = server.unavailable_bdevs();
    let bdev_names: Vec<String> = server_bdevs
        .into_iter()
        .filter(|name| !left_out.contains(name))
        .collect();
    let left_out_part = if left_out.is_empty() {
        String::new()
    } else {
        format!(" ({left_out:?} left out)")
    };
    let scst_part = if scst_names.is_empty() {
        String::new()
    } else {
        format!(" and SCST devices {scst_names:?}")
    };
    log(&format!(
        "serving TCMU subtype {subtype:?}{scst_part} with bdevs {bdev_names:?}{left_out_part} \
         on {} reactor(s); pid {}",
        server.reactors().len(),
        std::process::id()
    ));
    if let Some(socket) = &rpc_server {
        log(&format!("control socket {}", socket.path().display()));
    }
    if reactor::clock::source() == reactor::clock::ClockSource::SteadyTsc {
        log(
            "note: the OS clock is expensive here (a clocksource such as hpet makes each read a \
             system call) and the TSC is steady: reactors time with the TSC, sparingly (in an \
             emulator each read may slow the other vCPUs)",
        );
    }
    if !reactor::clock::is_cheap() {
        log(&format!(
            "note: reactors read the clock only where needed here (a command's timestamp, the \
             end of an iteration with work) and when idle once every {} iterations ({:?} source, \
             {} ns a read)",
            reactor::IDLE_CLOCK_EVERY,
            reactor::clock::source(),
            reactor::clock::read_cost_ns()
        ));
    }

    let use_netlink = !args.no_netlink;
    let mut netlink = if use_netlink {
        open_netlink(rescan_interval, true)
    } else {
        None
    };
    // After the family was missing (module not loaded yet), try again now and
    // then: loading target_core_user later must not need a restart.
    let mut next_netlink_try = std::time::Instant::now() + NETLINK_RETRY;

    let stats_json = args.stats_json;
    let stats_file = args.stats_file;
    // systemd (Type=notify): READY=1 at the loop's first wait (after its
    // first rescan), watchdog pings at each wait, STATUS= from each report,
    // STOPPING=1 when a signal ended the loop.
    let notifier_cell = std::cell::RefCell::new(Notifier::from_env());
    let notifier = &notifier_cell;
    let ready_status = format!(
        "serving{scst_part} with bdevs {bdev_names:?}; TCMU devices attach as LIO creates them"
    );
    let ready_status = ready_status.as_str();
    // The wait on netlink and the loop's own descriptors (on those alone
    // without netlink); true: rescan now.
    let mut wait_for_event = move |timeout: Duration, watched: &[BorrowedFd<'_>]| -> bool {
        if netlink.is_none() && use_netlink && std::time::Instant::now() >= next_netlink_try {
            next_netlink_try = std::time::Instant::now() + NETLINK_RETRY;
            netlink = open_netlink(rescan_interval, false);
            if netlink.is_some() {
                return true; // rescan now: devices may have come with the module
            }
        }
        // Events already read (while a reply awaited its ACK) are taken
        // without waiting.
        if netlink.as_ref().is_none_or(|n| n.pending() == 0) {
            let mut fds = Vec::with_capacity(watched.len() + 1);
            fds.extend(netlink.as_ref().map(|n| n.as_fd()));
            fds.extend_from_slice(watched);
            match wait_readable(&fds, Some(timeout)) {
                Ok(Some(0)) if netlink.is_some() => {}
                // The time passed, or a call or a successor is waiting.
                Ok(_) => return false,
                Err(e) => {
                    log(&format!("waiting: {e}"));
                    std::thread::sleep(timeout);
                    return false;
                }
            }
        }
        let Some(n) = netlink.as_mut() else {
            return false;
        };
        match n.try_recv() {
            Ok(Some(event)) => {
                log(&format!("netlink: {event:?}"));
                // Drain whatever else arrived; one rescan covers all.
                while let Ok(Some(event)) = n.try_recv() {
                    log(&format!("netlink: {event:?}"));
                }
                true
            }
            Ok(None) => false,
            Err(e) if e.is_recoverable() => {
                // Lost or malformed events: look at the devices again.
                log(&format!("netlink: {e}; rescanning"));
                true
            }
            Err(e) => {
                log(&format!("netlink: {e}; falling back to rescanning"));
                netlink = None;
                false
            }
        }
    };
    let drained = serve::run(
        server,
        &signals,
        RunOptions {
            rescan_interval,
            stats_interval: (args.stats_interval > 0.0)
                .then(|| Duration::from_secs_f64(args.stats_interval)),
            stats_requested,
            on_stats: Box::new(move |report| {
                if stats_json {
                    if let Ok(line) = serde_json::to_string(report) {
                        println!("{line}");
                    }
                } else {
                    print!("{}", report.render_text());
                }
                let _ = std::io::stdout().flush();
                notifier.borrow().report(report);
                if let Some(path) = &stats_file {
                    if let Err(e) = write_stats_file(path, report) {
                        log(&format!("cannot write {}: {e}", path.display()));
                    }
                }
            }),
            handoff,
            store_on_stop: fd_store.map(|s| Box::new(s) as Box<dyn HandoffSink>),
            wait_event: Box::new(move |timeout, watched| {
                notifier.borrow_mut().turn(ready_status);
                wait_for_event(timeout, watched)
            }),
            rpc,
            reload: Some(serve::Reload {
                requested: reload_requested,
                load: Box::new(move || {
                    ServeConfig::load(&config_path, &available).map_err(|e| e.to_string())
                }),
                done: Box::new(move |outcome| notifier.borrow().reloaded(outcome)),
            }),
            // Wherever in the loop's turn the signal came.
            on_stop: Some(Box::new(move || notifier.borrow().stopping())),
        },
    );
    if let Some(cause) = signals.cause() {
        log(&format!("stopped by {cause:?}"));
    }
    if drained {
        log("all devices drained; exiting");
        Ok(ExitCode::SUCCESS)
    } else {
        log("some commands did not finish before the drain deadline");
        Ok(ExitCode::FAILURE)
    }
}
