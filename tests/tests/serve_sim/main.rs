//! `dataplane serve` against simulated TCMU devices: the server's real code
//! (bdevs, reactors, attach/detach, recovery, statistics, the control loop)
//! with a host whose "UIO devices" are TCMU simulators.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench::initiator::{
    Completion, Initiator, IoData, Job, Pattern, SubmitError, VerifyModel, Workload,
};
use dataplane::scst::driver::ScstDriver;
use dataplane::scst::error::ScstError;
use dataplane::serve::config::ServeConfig;
use dataplane::serve::{
    self, DeviceFacts, DeviceKind, FoundDevice, Host, HostError, RunOptions, ServeOptions, Server,
    TcmuUioName,
};
use dataplane::tcmu::{Doorbell, SharedRegion};
use sim::tcmu::{SimConfig, SimData, TcmuSim};

type SharedSim = Arc<Mutex<TcmuSim>>;

struct SimDevice {
    minor: u32,
    uio_name: String,
    facts: DeviceFacts,
    sim: SharedSim,
    /// The simulated process that has the device open (TCMU allows one).
    holder: Option<u32>,
}

/// Simulated devices, seen by a simulated process (`process`; clones made
/// by [`SimHost::as_process`] share the devices, like two serves on one
/// machine).
#[derive(Clone, Default)]
struct SimHost {
    process: u32,
    devices: Arc<Mutex<Vec<SimDevice>>>,
    /// Names recovered (ring reset) and unblocked, in order.
    actions: Arc<Mutex<Vec<String>>>,
    /// Statuses of the commands completed by ring resets.
    reset_statuses: Arc<Mutex<Vec<u8>>>,
}

impl SimHost {
    fn add(&self, minor: u32, uio_name: &str, facts: DeviceFacts) -> SharedSim {
        let sim = Arc::new(Mutex::new(
            TcmuSim::new(SimConfig {
                cmdr_size: (1 << 20) - 128,
                data_area_size: 16 << 20,
                ..SimConfig::default()
            })
            .unwrap(),
        ));
        self.devices.lock().unwrap().push(SimDevice {
            minor,
            uio_name: uio_name.into(),
            facts,
            sim: Arc::clone(&sim),
            holder: None,
        });
        sim
    }

    /// The same devices, seen by another process.
    fn as_process(&self, process: u32) -> Self {
        Self {
            process,
            ..self.clone()
        }
    }

    /// The process holding device `minor` closed it (it exited).
    fn release(&self, minor: u32) {
        for d in self.devices.lock().unwrap().iter_mut() {
            if d.minor == minor {
                d.holder = None;
            }
        }
    }

    fn set_size(&self, minor: u32, size: u64) {
        for d in self.devices.lock().unwrap().iter_mut() {
            if d.minor == minor {
                d.facts.size = size;
            }
        }
    }

    fn remove(&self, minor: u32) {
        self.devices.lock().unwrap().retain(|d| d.minor != minor);
    }

    fn device<T>(&self, name: &TcmuUioName, f: impl FnOnce(&SimDevice) -> T) -> Option<T> {
        let devices = self.devices.lock().unwrap();
        devices
            .iter()
            .find(|d| TcmuUioName::parse(&d.uio_name).as_ref() == Some(name))
            .map(f)
    }
}

impl Host for SimHost {
    fn scan(&mut self) -> Vec<FoundDevice> {
        self.devices
            .lock()
            .unwrap()
            .iter()
            .map(|d| FoundDevice {
                minor: d.minor,
                uio_name: d.uio_name.clone(),
            })
            .collect()
    }

    fn facts(&mut self, name: &TcmuUioName) -> Result<DeviceFacts, HostError> {
        self.device(name, |d| d.facts).ok_or(HostError::NoDevice)
    }

    fn is_held(&mut self, device: &FoundDevice) -> bool {
        self.devices
            .lock()
            .unwrap()
            .iter()
            .any(|d| d.minor == device.minor && d.holder.is_some_and(|p| p != self.process))
    }

    fn open(&mut self, device: &FoundDevice) -> Result<(SharedRegion, Doorbell), HostError> {
        let mut devices = self.devices.lock().unwrap();
        let d = devices
            .iter_mut()
            .find(|d| d.minor == device.minor)
            .ok_or(HostError::NoDevice)?;
        if d.holder.is_some_and(|p| p != self.process) {
            return Err(HostError::Busy);
        }
        d.holder = Some(self.process);
        let endpoint = d.sim.lock().unwrap().device_endpoint();
        Ok(endpoint?)
    }

    fn recover(&mut self, name: &TcmuUioName) -> Result<(), HostError> {
        let process = self.process;
        let held = self
            .device(name, |d| d.holder.is_some_and(|p| p != process))
            .unwrap_or(false);
        assert!(!held, "{} reset while another process holds it", name.name);
        self.actions
            .lock()
            .unwrap()
            .push(format!("recover {}", name.name));
        let statuses = Arc::clone(&self.reset_statuses);
        self.device(name, |d| {
            d.sim
                .lock()
                .unwrap()
                .reset_ring(1, |c| statuses.lock().unwrap().push(c.status));
        })
        .ok_or(HostError::NoDevice)
    }

    fn unblock(&mut self, name: &TcmuUioName) -> Result<(), HostError> {
        self.actions
            .lock()
            .unwrap()
            .push(format!("unblock {}", name.name));
        Ok(())
    }

    fn open_scst(&mut self, name: &str) -> Result<Box<dyn ScstDriver>, ScstError> {
        // These configurations have no [[scst]] device.
        Err(ScstError::Invalid(format!("no SCST here (device {name})")))
    }
}

/// The initiator side of a shared simulator.
struct SimInitiator(SharedSim);

impl Initiator for SimInitiator {
    fn submit(&mut self, cdb: &[u8], data: IoData<'_>, tag: u64) -> Result<(), SubmitError> {
        let data = match data {
            IoData::None => SimData::None,
            IoData::Out(d) => SimData::Out(d),
            IoData::In(n) => SimData::In(n),
        };
        self.0
            .lock()
            .unwrap()
            .submit(cdb, data, tag)
            .map(|_| ())
            .map_err(|_| SubmitError::Full)
    }
    fn notify(&mut self) {
        self.0.lock().unwrap().notify();
    }
    fn reap(&mut self, done: &mut dyn FnMut(&dyn Completion)) -> Result<usize, SubmitError> {
        self.0
            .lock()
            .unwrap()
            .reap(|c| done(c))
            .map_err(|e| SubmitError::Failed(e.to_string()))
    }
    fn doorbells(&self) -> u64 {
        self.0.lock().unwrap().doorbells()
    }
}

const MIB: u64 = 1 << 20;

fn facts(block_size: u32, size: u64) -> DeviceFacts {
    DeviceFacts {
        block_size,
        max_sectors: 2048,
        size,
    }
}

fn config() -> ServeConfig {
    let core = reactor::available_cores()[0];
    let text = format!(
        r#"
[reactors]
cores = [{core}]
idle = "adaptive"

[[bdev]]
name = "ram0"
type = "ram"
size = "64MiB"

[[bdev]]
name = "ram4k"
type = "ram"
size = "8MiB"
block_size = 4096

[[bdev]]
name = "c1"
type = "ram"
size = "8MiB"

[[bdev]]
name = "c2"
type = "ram"
size = "8MiB"

[[bdev]]
name = "fast"
type = "striped"
children = ["c1", "c2"]
chunk = "64KiB"
"#
    );
    let config = ServeConfig::parse(&text).unwrap();
    config.validate(&reactor::available_cores()).unwrap();
    config
}

struct Logs(Arc<Mutex<Vec<String>>>);

/// The server's log callback.
type LogSink = Box<dyn FnMut(&str) + Send>;

impl Logs {
    fn new() -> (Self, LogSink) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        (
            Self(lines),
            Box::new(move |line: &str| sink.lock().unwrap().push(line.to_string())),
        )
    }

    fn count(&self, needle: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn dump(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

/// Runs a verified random read/write job of `ios` I/Os against a device.
fn verified_job(sim: &SharedSim, blocks: u64, block_size: u32, ios: u64) {
    verified_job_over(sim, blocks, block_size, ios, true);
}

/// [`verified_job`] over a device that reads back zeroes before it is
/// written (`zeroed`: new memory, a new sparse file) or holds whatever it
/// holds (a real NVMe namespace): its blocks are then checked once written.
fn verified_job_over(sim: &SharedSim, blocks: u64, block_size: u32, ios: u64, zeroed: bool) {
    let workload = Workload {
        pattern: Pattern::RandRw,
        block_size,
        io_size: 8192,
        iodepth: 16,
        size: blocks * u64::from(block_size),
        rwmix_read: 50,
        seed: 5,
    };
    let model = VerifyModel::new(blocks, block_size as usize, zeroed);
    let mut job = Job::new(
        SimInitiator(Arc::clone(sim)),
        workload,
        Some(model),
        1 << 20,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while job.snapshot().ios < ios {
        assert!(
            Instant::now() < deadline,
            "job stalled: {:?}",
            job.snapshot()
        );
        job.step(true).unwrap();
    }
    job.drain(Duration::from_secs(10)).unwrap();
    let s = job.snapshot();
    assert_eq!((s.errors, s.verify_mismatches), (0, 0), "{:?}", job.notes());
}

/// Waits until `sim` has reaped `n` completions from commands submitted
/// before, calling `done` for each.
fn reap_until(sim: &SharedSim, n: usize, mut done: impl FnMut(u8)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    while got < n {
        assert!(Instant::now() < deadline, "only {got} of {n} completions");
        got += sim.lock().unwrap().reap(|c| done(c.status)).unwrap();
    }
}

/// The statistics of device `name` in `report`.
fn device<'a>(report: &'a serve::StatsReport, name: &str) -> &'a serve::DeviceStats {
    report
        .devices
        .iter()
        .find(|d| d.device.name == name)
        .unwrap()
}

fn read10(lba: u32) -> [u8; 10] {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x28;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[8] = 1;
    cdb
}

#[test]
fn serves_attaches_refuses_recovers_and_detaches() {
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    let host = SimHost::default();
    let disk0 = host.add(0, "tcm-user/0/disk0/dataplane/ram0", facts(512, 64 * MIB));
    host.add(1, "tcm-user/0/other/otherhandler/x", facts(512, MIB));
    host.add(2, "tcm-user/0/nobdev/dataplane/nosuch", facts(512, MIB));
    host.add(3, "tcm-user/0/wrongbs/dataplane/ram4k", facts(512, MIB));
    host.add(4, "tcm-user/0/toobig/dataplane/ram0", facts(512, 128 * MIB));
    host.add(5, "tcm-user/1/child/dataplane/c1", facts(512, MIB));
    let striped = host.add(6, "tcm-user/1/stripe/dataplane/fast", facts(512, 16 * MIB));

    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config: config(),
        state_dir: Some(state_dir.clone()),
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    server.rescan();
    let attached: Vec<_> = server.attached().into_iter().map(|(m, _)| m).collect();
    assert_eq!(attached, [0, 6], "{}", logs.dump());
    assert_eq!(
        logs.count("other"),
        0,
        "another subtype's device is not ours"
    );
    assert_eq!(
        logs.count("names bdev \"nosuch\", which is not in the configuration"),
        1
    );
    assert_eq!(
        logs.count("its hw_block_size is 512 but bdev \"ram4k\" has 4096-byte blocks"),
        1
    );
    assert_eq!(logs.count("is larger than bdev \"ram0\""), 1);
    assert_eq!(logs.count("is a child of striped bdev \"fast\""), 1);
    server.rescan();
    assert_eq!(
        logs.count("refusing"),
        4,
        "refusals are logged once: {}",
        logs.dump()
    );

    // Data through both LUNs, verified.
    verified_job(&disk0, 64 * MIB / 512, 512, 3000);
    verified_job(&striped, 16 * MIB / 512, 512, 3000);
    let report = server.stats();
    let d0 = device(&report, "disk0");
    assert!(d0.commands >= 3000, "{d0:?}");
    assert!(
        d0.latency_ns.p50 > 0 && d0.latency_ns.p99 >= d0.latency_ns.p50,
        "{d0:?}"
    );
    assert_eq!(
        (
            d0.device.kind,
            d0.device.uio.as_deref(),
            d0.device.bdev.as_str(),
            d0.device.hba
        ),
        (DeviceKind::Tcmu, Some("uio0"), "ram0", Some(0))
    );
    assert!(d0.received_total >= d0.commands_total, "{d0:?}");
    assert_eq!((d0.busy_total, d0.sessions), (None, None));
    assert_eq!(report.reactors.len(), 1);
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["devices"][0]["latency_ns"]["p999"].is_u64());
    assert_eq!(json["devices"][0]["kind"], "tcmu");
    assert_eq!(json["devices"][0]["uio"], "uio0");
    assert!(json["devices"][0].get("busy_total").is_none());
    assert!(report
        .render_text()
        .contains("  disk0 (uio0, bdev ram0, reactor 0): "));

    // Commands queued while no handler ran are picked up after a clean
    // detach (recorded in the state directory).
    std::fs::write(state_dir.join("tcmu-2-early.state"), "state=clean\n").unwrap();
    let early = host.add(7, "tcm-user/2/early/dataplane/ram0", facts(512, MIB));
    for lba in 0..5 {
        early
            .lock()
            .unwrap()
            .submit(&read10(lba), SimData::In(512), u64::from(lba))
            .unwrap();
    }
    early.lock().unwrap().notify();
    server.rescan();
    let mut good = 0;
    reap_until(&early, 5, |status| good += usize::from(status == 0));
    assert_eq!(good, 5);

    // A device whose last handler died while attached gets its ring reset
    // (in-flight commands complete with BUSY) before it is attached.
    let crashed = host.add(8, "tcm-user/2/crashed/dataplane/ram0", facts(512, MIB));
    for lba in 0..3 {
        crashed
            .lock()
            .unwrap()
            .submit(&read10(lba), SimData::In(512), u64::from(lba))
            .unwrap();
    }
    std::fs::write(
        state_dir.join("tcmu-2-crashed.state"),
        "pid=999999999\nstate=attached\n",
    )
    .unwrap();
    server.rescan();
    assert_eq!(
        host.actions.lock().unwrap().as_slice(),
        ["recover crashed", "unblock crashed"]
    );
    assert_eq!(
        host.reset_statuses.lock().unwrap().as_slice(),
        [0x08, 0x08, 0x08],
        "BUSY"
    );
    // After the reset the device serves new commands.
    crashed
        .lock()
        .unwrap()
        .submit(&read10(9), SimData::In(512), 9)
        .unwrap();
    crashed.lock().unwrap().notify();
    let mut statuses = Vec::new();
    reap_until(&crashed, 1, |s| statuses.push(s));
    assert_eq!(statuses, [0]);
    // A device detached cleanly is not reset the next time.
    let state = std::fs::read_to_string(state_dir.join("tcmu-0-disk0.state")).unwrap();
    assert!(state.contains("state=attached"), "{state}");

    // A device whose size changes (netlink RECONFIG, targetcli) re-attaches
    // with a LUN of the new capacity.
    host.set_size(6, 8 * MIB);
    server.rescan();
    assert_eq!(
        logs.count("detached stripe (uio6): its size or block size changed"),
        1,
        "{}",
        logs.dump()
    );
    assert_eq!(logs.count("attached stripe (uio6"), 2);
    let mut capacity = [0u8; 8];
    {
        let mut sim = striped.lock().unwrap();
        sim.submit(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::In(8), 77)
            .unwrap();
        sim.notify();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    while got == 0 {
        assert!(Instant::now() < deadline, "READ CAPACITY not answered");
        got = striped
            .lock()
            .unwrap()
            .reap(|c| {
                assert_eq!(c.status, 0);
                c.copy_data_in(&mut capacity);
            })
            .unwrap();
    }
    let last_lba = u32::from_be_bytes(capacity[..4].try_into().unwrap());
    assert_eq!(
        u64::from(last_lba) + 1,
        8 * MIB / 512,
        "READ CAPACITY(10) shows the new size"
    );

    // Removal detaches, draining first, and marks the state clean.
    host.remove(0);
    server.rescan();
    assert!(!server.attached().iter().any(|(m, _)| *m == 0));
    assert_eq!(
        logs.count("detached disk0 (uio0): it disappeared"),
        1,
        "{}",
        logs.dump()
    );
    let state = std::fs::read_to_string(state_dir.join("tcmu-0-disk0.state")).unwrap();
    assert!(state.contains("state=clean"), "{state}");

    assert!(server.shutdown(), "every reactor drained");
    let state = std::fs::read_to_string(state_dir.join("tcmu-1-stripe.state")).unwrap();
    assert!(state.contains("state=clean"), "{state}");
}

/// A signal that comes while the loop is between two waits (here during a
/// statistics report) still reaches `on_stop`, once, before the final
/// report and the drain: systemd hears STOPPING=1 however the stop was
/// timed.
#[test]
fn a_signal_between_two_waits_still_reaches_on_stop() {
    let (_logs, log) = Logs::new();
    let options = ServeOptions {
        config: config(),
        state_dir: None,
    };
    let server = Server::start(options, SimHost::default(), log).unwrap();
    let signals =
        reactor::ShutdownSignals::install(&server.reactors().iter().collect::<Vec<_>>()).unwrap();
    let events: Arc<Mutex<Vec<&str>>> = Arc::default();
    let reported = Arc::clone(&events);
    let stopped = Arc::clone(&events);
    let signals_in = &signals;
    // A report at the first turn, which stops the server outside any wait.
    let mut options = run_options(
        Arc::new(AtomicBool::new(true)),
        Box::new(move |_| {
            reported.lock().unwrap().push("report");
            signals_in.trigger();
        }),
        None,
    );
    options.on_stop = Some(Box::new(move || stopped.lock().unwrap().push("stop")));
    assert!(serve::run(server, &signals, options), "drained");
    assert_eq!(*events.lock().unwrap(), ["report", "stop", "report"]);
}

#[test]
fn control_loop_reports_stats_and_stops_on_shutdown() {
    let host = SimHost::default();
    let sim = host.add(0, "tcm-user/0/disk0/dataplane/ram0", facts(512, 64 * MIB));
    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config: config(),
        state_dir: None,
    };
    let server = Server::start(options, host, log).unwrap();
    let signals =
        reactor::ShutdownSignals::install(&server.reactors().iter().collect::<Vec<_>>()).unwrap();
    let reports = Arc::new(Mutex::new(Vec::new()));
    let requested = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let sink = Arc::clone(&reports);
        let requested_in = Arc::clone(&requested);
        let signals = &signals;
        let runner = s.spawn(move || {
            serve::run(
                server,
                signals,
                run_options(
                    requested_in,
                    Box::new(move |r| sink.lock().unwrap().push(r.clone())),
                    None,
                ),
            )
        });
        // The loop attaches the device by itself (rescan); I/O flows. (I/O
        // queued before would find a ring with waiting entries and no
        // record of a clean detach: reset, BUSY, which this initiator does
        // not retry.)
        let deadline = Instant::now() + Duration::from_secs(10);
        while logs.count("attached disk0") == 0 {
            assert!(Instant::now() < deadline, "not attached");
            std::thread::sleep(Duration::from_millis(1));
        }
        verified_job(&sim, 64 * MIB / 512, 512, 500);
        // SIGUSR1's flag asks for a report.
        requested.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while reports.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no report");
            std::thread::sleep(Duration::from_millis(10));
        }
        // A shutdown request (as SIGTERM would) ends the loop, drained.
        signals.trigger();
        assert!(runner.join().unwrap(), "drained");
    });
    let reports = reports.lock().unwrap();
    let first = &reports[0];
    assert_eq!(first.devices.len(), 1);
    assert!(first.devices[0].commands >= 500, "{first:?}");
    assert!(reports.len() >= 2, "a final report is printed at shutdown");
}

mod faults;
mod file_bdevs;
mod nvme_bdevs;
mod rbd_bdevs;
mod recovery;
mod rpc;
mod take_over;

/// The control loop's options in these tests: a rescan every 20 ms, each
/// wait on the loop's own descriptors as serve's without netlink,
/// statistics when `requested`, no hand-off, fd store or reload.
pub(crate) fn run_options<'a>(
    requested: Arc<AtomicBool>,
    on_stats: Box<dyn FnMut(&dataplane::serve::StatsReport) + 'a>,
    rpc: Option<dataplane::serve::rpc::Requests>,
) -> RunOptions<'a> {
    RunOptions {
        rescan_interval: Duration::from_millis(20),
        stats_interval: None,
        stats_requested: requested,
        on_stats,
        wait_event: Box::new(|d, watched| {
            dataplane::wait::wait_readable(watched, Some(d)).unwrap();
            false
        }),
        handoff: None,
        store_on_stop: None,
        rpc,
        reload: None,
        on_stop: None,
    }
}
