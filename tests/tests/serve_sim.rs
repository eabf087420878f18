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
    let d0 = report.devices.iter().find(|d| d.name == "disk0").unwrap();
    assert!(d0.commands >= 3000, "{d0:?}");
    assert!(
        d0.latency_ns.p50 > 0 && d0.latency_ns.p99 >= d0.latency_ns.p50,
        "{d0:?}"
    );
    assert_eq!(
        (d0.kind, d0.uio.as_deref(), d0.bdev.as_str(), d0.hba),
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
                RunOptions {
                    rescan_interval: Duration::from_millis(20),
                    stats_interval: None,
                    stats_requested: requested_in,
                    on_stats: Box::new(move |r| sink.lock().unwrap().push(r.clone())),
                    wait_event: Box::new(|d| {
                        std::thread::sleep(d);
                        false
                    }),
                },
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

/// A directory on a disk filesystem (tmpfs may refuse O_DIRECT).
fn disk_dir() -> tempfile::TempDir {
    let base = if std::path::Path::new("/var/tmp").is_dir() {
        std::path::PathBuf::from("/var/tmp")
    } else {
        std::env::current_dir().unwrap()
    };
    tempfile::Builder::new()
        .prefix("serve-file-")
        .tempdir_in(base)
        .unwrap()
}

/// A configuration of file bdevs in `dir`: good ones (`f0`, the striped
/// `fs` over `f1` and `f2`), bad ones, and a RAM bdev.
fn file_config(dir: &std::path::Path) -> ServeConfig {
    let core = reactor::available_cores()[0];
    let p = |name: &str| dir.join(name).display().to_string();
    std::fs::write(dir.join("short.img"), vec![0u8; 1000]).unwrap();
    std::fs::write(dir.join("mismatch.img"), vec![0u8; 1 << 20]).unwrap();
    let text = format!(
        r#"
[reactors]
cores = [{core}]
idle = "adaptive"

[[bdev]]
name = "ram0"
type = "ram"
size = "8MiB"

[[bdev]]
name = "f0"
type = "file"
path = "{f0}"
size = "16MiB"

[[bdev]]
name = "f1"
type = "file"
path = "{f1}"
size = "8MiB"
queue_depth = 16

[[bdev]]
name = "f2"
type = "file"
path = "{f2}"
size = "8MiB"
fixed_buffers = false

[[bdev]]
name = "fs"
type = "striped"
children = ["f1", "f2"]
chunk = "64KiB"

[[bdev]]
name = "missing"
type = "file"
path = "{missing}"

[[bdev]]
name = "dir"
type = "file"
path = "{dir}"

[[bdev]]
name = "chr"
type = "file"
path = "/dev/null"

[[bdev]]
name = "short"
type = "file"
path = "{short}"

[[bdev]]
name = "mismatch"
type = "file"
path = "{mismatch}"
size = "2MiB"

[[bdev]]
name = "gone"
type = "file"
path = "{gone}"

[[bdev]]
name = "f3"
type = "file"
path = "{f3}"
size = "1MiB"

[[bdev]]
name = "sgone"
type = "striped"
children = ["gone", "f3"]
chunk = "64KiB"
"#,
        f0 = p("f0.img"),
        f1 = p("f1.img"),
        f2 = p("f2.img"),
        missing = p("missing.img"),
        dir = dir.display(),
        short = p("short.img"),
        mismatch = p("mismatch.img"),
        gone = p("gone/x.img"),
        f3 = p("f3.img"),
    );
    let config = ServeConfig::parse(&text).unwrap();
    config.validate(&reactor::available_cores()).unwrap();
    config
}

#[test]
fn file_bdevs_serve_and_bad_ones_are_left_out_while_the_rest_serves() {
    if !test_support::skip::can_run(&[test_support::skip::Need::IoUring]) {
        return;
    }
    let dir = disk_dir();
    let host = SimHost::default();
    let disk0 = host.add(0, "tcm-user/0/disk0/dataplane/f0", facts(512, 16 * MIB));
    let striped = host.add(1, "tcm-user/0/stripe/dataplane/fs", facts(512, 16 * MIB));
    let ram = host.add(2, "tcm-user/0/mem/dataplane/ram0", facts(512, 8 * MIB));
    host.add(3, "tcm-user/0/nofile/dataplane/missing", facts(512, MIB));
    host.add(4, "tcm-user/0/nostripe/dataplane/sgone", facts(512, MIB));

    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config: file_config(dir.path()),
        state_dir: None,
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    let f0 = dir.path().join("f0.img");
    assert_eq!(std::fs::metadata(&f0).unwrap().len(), 16 * MIB, "created");
    // Each bad bdev: one line naming it, its path and the problem.
    let left_out = "; the bdev is left out, and devices naming it are refused";
    for (bdev, problem) in [
        (
            "missing",
            "does not exist (give a size to create a sparse file there)",
        ),
        (
            "dir",
            "is a directory, not a regular file or a block device",
        ),
        (
            "chr",
            "/dev/null: is a character device, not a regular file or a block device",
        ),
        (
            "short",
            "its size 1000 bytes is not a multiple of the block size 512",
        ),
        ("mismatch", "the file is 1048576 bytes but size is 2097152"),
        ("gone", "gone/x.img"),
        ("sgone", "its child gone is unavailable"),
    ] {
        let line = format!("bdev {bdev}: ");
        assert_eq!(
            logs.0
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.starts_with(&line) && l.contains(problem) && l.ends_with(left_out))
                .count(),
            1,
            "{bdev}: {}",
            logs.dump()
        );
    }
    assert_eq!(logs.count("bdev f0: "), 1, "{}", logs.dump());
    assert!(logs
        .dump()
        .contains("regular file, 16777216 bytes, 512-byte blocks"));

    server.rescan();
    let attached: Vec<_> = server.attached().into_iter().map(|(m, _)| m).collect();
    assert_eq!(attached, [0, 1, 2], "{}", logs.dump());
    assert_eq!(
        logs.count("refusing nofile (uio3): its dev_config names bdev \"missing\", which is unavailable (bdev missing: "),
        1,
        "{}",
        logs.dump()
    );
    assert_eq!(logs.count("refusing nostripe (uio4): its dev_config names bdev \"sgone\", which is unavailable (bdev sgone: its child gone is unavailable)"), 1);

    // Data through the file, the striped files and the RAM, verified.
    verified_job(&disk0, 16 * MIB / 512, 512, 2000);
    verified_job(&striped, 16 * MIB / 512, 512, 2000);
    verified_job(&ram, 8 * MIB / 512, 512, 1000);

    let report = server.stats();
    let bdev = |name: &str| {
        report
            .bdevs
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("{name} in {:?}", report.bdevs))
            .clone()
    };
    let f0_stats = bdev("f0").file.expect("file statistics");
    assert!(f0_stats.ios >= 2000, "{f0_stats:?}");
    assert_eq!(f0_stats.ios_total, f0_stats.ios);
    assert_eq!(f0_stats.path, f0.display().to_string());
    assert!(
        f0_stats.submit_syscalls > 0 && f0_stats.submit_syscalls <= f0_stats.ios,
        "{f0_stats:?}"
    );
    assert_eq!(f0_stats.bounced, 0, "{f0_stats:?}");
    // The simulator's data area (a memfd) was offered: registered and
    // used, or refused by a kernel that will not pin shared memory (then
    // plain reads and writes).
    match f0_stats.memory_registered {
        Some(true) => assert!(f0_stats.fixed_ios > 0, "{f0_stats:?}"),
        Some(false) => {
            eprintln!("this kernel refused to register the simulator's memfd");
            assert_eq!(f0_stats.fixed_ios, 0, "{f0_stats:?}");
        }
        None => panic!("the data area was offered: {f0_stats:?}"),
    }
    // The children of the striped bdev served through it: the striped
    // channel passes the offered memory on to them (registered where the
    // kernel registered f0's), and the children have no poller of their own
    // to report the registration.
    let f1_stats = bdev("f1").file.unwrap();
    assert!(f1_stats.ios > 0, "{f1_stats:?}");
    assert_eq!(
        f1_stats.fixed_ios > 0,
        f0_stats.memory_registered == Some(true),
        "{f1_stats:?}"
    );
    assert_eq!(f1_stats.memory_registered, None);
    assert!(bdev("missing")
        .unavailable
        .unwrap()
        .contains("does not exist"));
    assert!(bdev("ram0").file.is_none() && bdev("ram0").unavailable.is_none());
    let json = serde_json::to_value(&report).unwrap();
    let f0_json = json["bdevs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "f0")
        .unwrap()
        .clone();
    assert!(
        f0_json["file"]["submit_syscalls_per_io"].is_f64(),
        "{f0_json}"
    );
    assert!(
        f0_json["file"]["memory_registered"].is_boolean(),
        "{f0_json}"
    );
    let text = report.render_text();
    assert!(text.contains("  bdev f0 ("), "{text}");
    assert!(
        text.contains("  bdev missing: UNAVAILABLE: bdev missing: "),
        "{text}"
    );
    // Interval figures: nothing more happened since.
    let again = server.stats();
    let f0_again = again.bdevs.iter().find(|b| b.name == "f0").unwrap();
    assert_eq!(f0_again.file.as_ref().unwrap().ios, 0);

    // What was acknowledged is in the file, read by another process's
    // means once the server stopped.
    let mut write = [0u8; 10];
    write[0] = 0x2a;
    write[2..6].copy_from_slice(&100u32.to_be_bytes());
    write[8] = 1;
    let data: Vec<u8> = (0..512).map(|i| (i * 7 + 3) as u8).collect();
    disk0
        .lock()
        .unwrap()
        .submit(&write, SimData::Out(&data), 1)
        .unwrap();
    disk0.lock().unwrap().notify();
    let mut statuses = Vec::new();
    reap_until(&disk0, 1, |s| statuses.push(s));
    assert_eq!(statuses, [0]);
    assert!(server.shutdown());
    let on_disk = std::fs::read(&f0).unwrap();
    assert_eq!(&on_disk[100 * 512..101 * 512], &data[..]);
}

/// A configuration with a RAM bdev and nvme bdevs that cannot open here
/// (this machine has no NVMe namespace for them): `/dev/null`, a regular
/// file, a directory, a missing path, and a striped bdev over one of them.
fn bad_nvme_config(dir: &std::path::Path) -> ServeConfig {
    let core = reactor::available_cores()[0];
    std::fs::write(dir.join("plain.img"), vec![0u8; 1 << 20]).unwrap();
    let text = format!(
        r#"
[reactors]
cores = [{core}]
idle = "adaptive"

[[bdev]]
name = "ram0"
type = "ram"
size = "8MiB"

[[bdev]]
name = "nnull"
type = "nvme"
path = "/dev/null"

[[bdev]]
name = "nfile"
type = "nvme"
path = "{plain}"
queue_depth = 32
unmap = "write-zeroes"

[[bdev]]
name = "ndir"
type = "nvme"
path = "{dir}"

[[bdev]]
name = "nmissing"
type = "nvme"
path = "{missing}"
fixed_buffers = false

[[bdev]]
name = "nstripe"
type = "striped"
children = ["nfile"]
chunk = "64KiB"
"#,
        plain = dir.join("plain.img").display(),
        dir = dir.display(),
        missing = dir.join("ng9n9").display(),
    );
    let config = ServeConfig::parse(&text).unwrap();
    config.validate(&reactor::available_cores()).unwrap();
    config
}

#[test]
fn nvme_bdevs_that_cannot_open_are_left_out_while_the_rest_serves() {
    // Without io_uring every nvme bdev is left out for that reason first.
    if !test_support::skip::can_run(&[test_support::skip::Need::IoUring]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = SimHost::default();
    let ram = host.add(0, "tcm-user/0/mem/dataplane/ram0", facts(512, 8 * MIB));
    host.add(1, "tcm-user/0/nvnull/dataplane/nnull", facts(512, MIB));
    host.add(2, "tcm-user/0/nvstripe/dataplane/nstripe", facts(512, MIB));

    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config: bad_nvme_config(dir.path()),
        state_dir: None,
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    // Each bad bdev: one line naming it, its path and the problem.
    let left_out = "; the bdev is left out, and devices naming it are refused";
    let not_ng = "not an NVMe namespace's generic character device (/dev/ngXnY)";
    let plain = dir.path().join("plain.img");
    for (bdev, path, problem) in [
        ("nnull", "/dev/null".to_string(), "is a character device"),
        (
            "nfile",
            plain.display().to_string(),
            "is a regular file (the `file` bdev serves files), not an NVMe",
        ),
        ("ndir", dir.path().display().to_string(), "is a directory"),
        (
            "nmissing",
            dir.path().join("ng9n9").display().to_string(),
            "does not exist (an NVMe namespace's generic character device is /dev/ngXnY",
        ),
        ("nstripe", String::new(), "its child nfile is unavailable"),
    ] {
        let start = format!("bdev {bdev}: {path}");
        let lines: Vec<String> = logs
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(&start) && l.contains(problem) && l.ends_with(left_out))
            .cloned()
            .collect();
        assert_eq!(lines.len(), 1, "{bdev}: {}", logs.dump());
        if bdev != "nstripe" && bdev != "nmissing" {
            assert!(lines[0].contains(not_ng), "{}", lines[0]);
        }
    }

    server.rescan();
    let attached: Vec<_> = server.attached().into_iter().map(|(m, _)| m).collect();
    assert_eq!(attached, [0], "{}", logs.dump());
    assert_eq!(
        logs.count(
            "refusing nvnull (uio1): its dev_config names bdev \"nnull\", which is unavailable \
             (bdev nnull: /dev/null: is a character device"
        ),
        1,
        "{}",
        logs.dump()
    );
    assert_eq!(
        logs.count(
            "refusing nvstripe (uio2): its dev_config names bdev \"nstripe\", which is \
             unavailable (bdev nstripe: its child nfile is unavailable)"
        ),
        1,
        "{}",
        logs.dump()
    );
    verified_job(&ram, 8 * MIB / 512, 512, 1000);

    let report = server.stats();
    let names: Vec<&str> = report.bdevs.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        ["ndir", "nfile", "nmissing", "nnull", "nstripe", "ram0"]
    );
    for b in &report.bdevs {
        assert!(b.nvme.is_none() && b.file.is_none(), "{b:?}");
        assert_eq!(b.unavailable.is_some(), b.name != "ram0", "{b:?}");
    }
    let json = serde_json::to_value(&report).unwrap();
    let nnull = &json["bdevs"][3];
    assert_eq!(nnull["name"], "nnull");
    assert!(nnull.get("nvme").is_none(), "{nnull}");
    assert!(
        nnull["unavailable"].as_str().unwrap().contains(not_ng),
        "{nnull}"
    );
    let text = report.render_text();
    assert!(
        text.contains("  bdev nnull: UNAVAILABLE: bdev nnull: /dev/null: is a character device"),
        "{text}"
    );
    assert!(server.shutdown());
}

/// The `nvme` object of a bdev's statistics has the `file` object's keys,
/// with the same meaning, at its top level, and its own beside them.
#[test]
fn nvme_statistics_share_the_file_keys() {
    use dataplane::serve::stats::{BdevStats, NvmeBdevStats, NvmeNamespace, UringIoStats};
    let io = UringIoStats {
        path: "/dev/ng0n1".into(),
        ios: 10,
        ios_total: 20,
        submit_syscalls_per_io: 0.5,
        submit_syscalls: 5,
        bounced: 1,
        fixed_ios: 9,
        waits: 0,
        enter_errors: 0,
        memory_registered: Some(true),
    };
    let nvme = BdevStats {
        name: "nvme0".into(),
        huge_page_fraction: None,
        file: None,
        nvme: Some(NvmeBdevStats {
            io: io.clone(),
            commands: 12,
            splits: 1,
            vectored: 0,
            status_errors: 0,
            last_status: None,
            namespace: NvmeNamespace {
                model: "QEMU NVMe Ctrl".into(),
                serial: "1234".into(),
                firmware: "8.0.0".into(),
                version: "1.4".into(),
                nsid: 1,
                lba_size: 512,
                lba_format: 0,
                capacity_bytes: 1 << 30,
                mdts_bytes: None,
                command_bytes: 508 << 10,
                volatile_write_cache: false,
                unmap_mode: "auto",
                unmap: "deallocate",
                lbprz: false,
                vectored: true,
            },
        }),
        unavailable: None,
    };
    let file = BdevStats {
        name: "f0".into(),
        file: Some(io),
        nvme: None,
        ..nvme.clone()
    };
    let nvme_json = serde_json::to_value(&nvme).unwrap();
    let file_json = serde_json::to_value(&file).unwrap();
    assert!(nvme_json.get("file").is_none() && file_json.get("nvme").is_none());
    let file_keys = file_json["file"].as_object().unwrap();
    for (key, value) in file_keys {
        assert_eq!(&nvme_json["nvme"][key], value, "{key}");
    }
    for key in [
        "commands",
        "splits",
        "vectored",
        "status_errors",
        "namespace",
    ] {
        assert!(nvme_json["nvme"].get(key).is_some(), "{key}: {nvme_json}");
    }
    assert!(nvme_json["nvme"].get("last_status").is_none());
    let ns = &nvme_json["nvme"]["namespace"];
    for key in [
        "model",
        "serial",
        "firmware",
        "nsid",
        "lba_size",
        "command_bytes",
        "volatile_write_cache",
        "unmap_mode",
        "unmap",
        "lbprz",
    ] {
        assert!(ns.get(key).is_some(), "{key}: {ns}");
    }
    assert!(ns.get("mdts_bytes").is_none(), "no MDTS: absent");
}

/// An nvme bdev on the namespace `DATAPLANE_TEST_NVME` names (the VM test's
/// emulated drive; it overwrites the first 16 MiB): data through TCMU
/// verified, and its statistics and namespace reported.
#[test]
fn an_nvme_bdev_serves_and_reports_its_namespace() {
    use bdev::Bdev as _;
    use test_support::skip::{can_run, nvme_device, Need};
    if !can_run(&[Need::IoUring, Need::NvmeGeneric]) {
        return;
    }
    let device = nvme_device().unwrap();
    let lba = bdev::NvmeBdev::open("probe", bdev::NvmeOptions::new(&device))
        .unwrap_or_else(|e| panic!("{e}"))
        .geometry()
        .block_size;
    let core = reactor::available_cores()[0];
    let text = format!(
        "[reactors]\ncores = [{core}]\nidle = \"adaptive\"\n\
         [[bdev]]\nname = \"nvme0\"\ntype = \"nvme\"\npath = \"{}\"\nqueue_depth = 64\n",
        device.display()
    );
    let config = ServeConfig::parse(&text).unwrap();
    config.validate(&reactor::available_cores()).unwrap();
    let host = SimHost::default();
    let disk = host.add(0, "tcm-user/0/nv/dataplane/nvme0", facts(lba, 16 * MIB));
    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config,
        state_dir: None,
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    assert_eq!(
        logs.count(&format!(
            "bdev nvme0: {} (NVMe passthrough: ",
            device.display()
        )),
        1,
        "{}",
        logs.dump()
    );
    server.rescan();
    assert_eq!(server.attached().len(), 1, "{}", logs.dump());
    verified_job_over(&disk, 16 * MIB / u64::from(lba), lba, 2000, false);
    let report = server.stats();
    let nvme = report.bdevs[0].nvme.clone().expect("nvme statistics");
    assert!(nvme.io.ios >= 2000, "{nvme:?}");
    assert!(
        nvme.io.submit_syscalls > 0 && nvme.io.submit_syscalls <= nvme.io.ios,
        "{nvme:?}"
    );
    assert!(nvme.commands >= nvme.io.ios, "{nvme:?}");
    assert_eq!(nvme.io.path, device.display().to_string());
    assert_eq!(nvme.namespace.lba_size, lba);
    assert!(nvme.namespace.nsid >= 1 && !nvme.namespace.model.is_empty());
    assert_eq!(nvme.namespace.unmap_mode, "auto");
    // The simulator's memfd was offered: registered where the kernel pins
    // it, refused elsewhere.
    match nvme.io.memory_registered {
        Some(true) => assert!(nvme.io.fixed_ios > 0, "{nvme:?}"),
        Some(false) => assert_eq!(nvme.io.fixed_ios, 0, "{nvme:?}"),
        None => panic!("the data area was offered: {nvme:?}"),
    }
    let text = report.render_text();
    assert!(text.contains("  bdev nvme0 ("), "{text}");
    assert!(server.shutdown());
}

// ------------------------------------------------ faults and recovery --

/// Calls `heal` (as the control loop does) until `done`, failing after a
/// generous deadline with the log.
fn heal_until(
    server: &mut Server<SimHost>,
    logs: &Logs,
    what: &str,
    mut done: impl FnMut(&mut Server<SimHost>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(server) {
        assert!(Instant::now() < deadline, "{what}: {}", logs.dump());
        server.heal();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Breaks an attached device's ring the way `echo 1 > action/reset_ring`
/// does (the kernel sets `cmd_tail` under the device) and makes the device
/// look at it.
fn break_ring(sim: &SharedSim, lba: u32) {
    let mut sim = sim.lock().unwrap();
    let tail = sim.region().load_cmd_tail();
    sim.region().store_cmd_tail(if tail == 0 { 8 } else { 0 });
    sim.submit(&read10(lba), SimData::In(512), u64::from(lba))
        .unwrap();
    sim.notify();
}

fn device<'a>(report: &'a serve::StatsReport, name: &str) -> &'a serve::DeviceStats {
    report.devices.iter().find(|d| d.name == name).unwrap()
}

#[test]
fn a_ring_reset_under_the_device_is_logged_counted_and_recovered() {
    let host = SimHost::default();
    let disk0 = host.add(0, "tcm-user/0/disk0/dataplane/ram0", facts(512, 64 * MIB));
    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config: config(),
        state_dir: None,
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    server.rescan();
    verified_job(&disk0, 64 * MIB / 512, 512, 500);

    // The administrator resets the ring while the device is attached; two
    // commands are queued after it.
    {
        let mut sim = disk0.lock().unwrap();
        assert_eq!(sim.reset_ring(1, |_| {}), 0);
        for lba in 0..2 {
            sim.submit(&read10(lba), SimData::In(512), u64::from(lba))
                .unwrap();
        }
        sim.notify();
    }
    heal_until(&mut server, &logs, "recovered", |_| {
        logs.count("recovered disk0 (uio0)") == 1
    });
    assert_eq!(
        logs.count("ring fault: cmd_tail moved from "),
        1,
        "logged once, with the device and the reason: {}",
        logs.dump()
    );
    assert_eq!(
        logs.count("disk0 (uio0): ring fault: cmd_tail moved from "),
        1
    );
    assert_eq!(
        logs.count(
            "disk0 (uio0): recovering from its ring fault; blocking it and resetting its ring"
        ),
        1
    );
    assert_eq!(
        host.actions.lock().unwrap().as_slice(),
        ["recover disk0", "unblock disk0"],
        "blocked, ring reset, unblocked"
    );
    // The two commands the faulted device never walked were completed by
    // the recovery's reset with BUSY: the initiator retries them.
    assert_eq!(host.reset_statuses.lock().unwrap().as_slice(), [0x08, 0x08]);
    let mut busy = 0;
    disk0.lock().unwrap().reap(|_| busy += 1).unwrap();
    assert_eq!(busy, 0, "nothing else completed them");

    // Serving again (the disk holds the first job's data), and the
    // statistics tell.
    verified_job_over(&disk0, 64 * MIB / 512, 512, 500, false);
    let report = server.stats();
    let d = device(&report, "disk0");
    assert_eq!((d.faults_total, d.recoveries_total), (1, 1), "{d:?}");
    assert_eq!(d.fault, None);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["devices"][0]["faults_total"], 1);
    assert_eq!(json["devices"][0]["recoveries_total"], 1);
    assert!(report
        .render_text()
        .contains("1 fault(s) and 1 recovery(ies) since start"));
    assert!(server.shutdown());
}

#[test]
fn a_device_that_keeps_faulting_is_left_blocked_while_the_others_serve() {
    let host = SimHost::default();
    let disk0 = host.add(0, "tcm-user/0/disk0/dataplane/ram0", facts(512, 64 * MIB));
    let other = host.add(1, "tcm-user/0/other/dataplane/ram0", facts(512, 64 * MIB));
    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config: config(),
        state_dir: None,
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    server.set_recovery_policy(serve::RecoveryPolicy {
        attempts: 3,
        first_retry: Duration::from_millis(1),
        max_retry: Duration::from_millis(4),
        stable: Duration::from_secs(3600),
    });
    server.rescan();
    let mut breaks = 0;
    heal_until(&mut server, &logs, "given up", |server| {
        let attached = server.attached().iter().any(|(m, _)| *m == 0);
        if attached && logs.count("recovered disk0") == breaks {
            break_ring(&disk0, breaks as u32);
            breaks += 1;
        }
        logs.count("giving up on disk0 (uio0) after 3 recoveries in a row") == 1
    });
    assert_eq!(breaks, 4, "{}", logs.dump());
    assert!(!server.attached().iter().any(|(m, _)| *m == 0));
    // Blocked and reset for good: no unblock after the last reset.
    let actions = host.actions.lock().unwrap().clone();
    assert_eq!(actions.last().map(String::as_str), Some("recover disk0"));
    assert_eq!(actions.iter().filter(|a| *a == "recover disk0").count(), 4);
    // A rescan does not attach it again.
    server.rescan();
    server.heal();
    assert!(!server.attached().iter().any(|(m, _)| *m == 0));

    verified_job(&other, 64 * MIB / 512, 512, 500);
    let report = server.stats();
    let d = device(&report, "disk0");
    assert_eq!((d.faults_total, d.recoveries_total), (4, 3), "{d:?}");
    let fault = d.fault.as_deref().unwrap();
    assert!(fault.contains("ring fault: cmd_tail moved"), "{fault}");
    assert!(
        fault.contains("left blocked after 3 recoveries in a row"),
        "{fault}"
    );
    assert!(report.render_text().contains("FAULTED: ring fault"));
    let o = device(&report, "other");
    assert_eq!((o.fault.as_deref(), o.faults_total), (None, 0));
    assert!(o.commands >= 500);
    assert!(server.shutdown());
}

// ------------------------------------- taking a ring over at attach --

/// What happened to three READs queued on a device before serve attached
/// it: their statuses, and whether the ring was reset.
fn take_over(state_dir: bool, state_file: Option<&str>) -> (Vec<u8>, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let host = SimHost::default();
    let sim = host.add(0, "tcm-user/0/disk0/dataplane/ram0", facts(512, 64 * MIB));
    for lba in 0..3 {
        sim.lock()
            .unwrap()
            .submit(&read10(lba), SimData::In(512), u64::from(lba))
            .unwrap();
    }
    sim.lock().unwrap().notify();
    if let Some(text) = state_file {
        std::fs::write(tmp.path().join("tcmu-0-disk0.state"), text).unwrap();
    }
    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config: config(),
        state_dir: state_dir.then(|| tmp.path().to_owned()),
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    server.rescan();
    assert_eq!(server.attached().len(), 1, "{}", logs.dump());
    let reset = !host.actions.lock().unwrap().is_empty();
    let mut statuses = host.reset_statuses.lock().unwrap().clone();
    if !reset {
        reap_until(&sim, 3, |s| statuses.push(s));
    }
    // Either way the device serves afterwards.
    verified_job(&sim, 64 * MIB / 512, 512, 100);
    assert!(server.shutdown());
    (statuses, reset)
}

#[test]
fn a_crash_record_with_this_process_pid_still_resets_the_ring() {
    // What a detach whose drain timed out leaves: this very process's pid.
    let record = format!("pid={}\nstate=attached\n", std::process::id());
    assert_eq!(take_over(true, Some(&record)), (vec![0x08; 3], true));
}

#[test]
fn a_crash_record_whose_pid_was_reused_still_resets_the_ring() {
    // pid 1 is alive (init, or the next serve in a container).
    assert_eq!(
        take_over(true, Some("pid=1\nstate=attached\n")),
        (vec![0x08; 3], true)
    );
}

#[test]
fn without_a_state_directory_waiting_entries_are_reset() {
    assert_eq!(take_over(false, None), (vec![0x08; 3], true));
    assert_eq!(take_over(true, None), (vec![0x08; 3], true), "no record");
}

#[test]
fn after_a_clean_detach_waiting_entries_are_picked_up() {
    assert_eq!(
        take_over(true, Some("pid=1\nstate=clean\n")),
        (vec![0; 3], false)
    );
}

#[test]
fn an_idle_ring_is_taken_without_a_reset_whatever_the_record() {
    let host = SimHost::default();
    let sim = host.add(0, "tcm-user/0/disk0/dataplane/ram0", facts(512, 64 * MIB));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("tcmu-0-disk0.state"),
        "pid=999999999\nstate=attached\n",
    )
    .unwrap();
    let (_logs, log) = Logs::new();
    let options = ServeOptions {
        config: config(),
        state_dir: Some(tmp.path().to_owned()),
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    server.rescan();
    assert_eq!(server.attached().len(), 1);
    assert!(host.actions.lock().unwrap().is_empty(), "nothing to reset");
    verified_job(&sim, 64 * MIB / 512, 512, 100);
    assert!(server.shutdown());
}

#[test]
fn a_second_serve_of_the_same_subtype_leaves_a_held_ring_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let host = SimHost::default();
    let sim = host.add(0, "tcm-user/0/disk0/dataplane/ram0", facts(512, 64 * MIB));
    let start = |host: SimHost, state_dir: Option<std::path::PathBuf>| {
        let (logs, log) = Logs::new();
        let options = ServeOptions {
            config: config(),
            state_dir,
        };
        (Server::start(options, host, log).unwrap(), logs)
    };
    let (mut first, _first_logs) = start(host.clone(), Some(tmp.path().to_owned()));
    first.rescan();
    assert_eq!(first.attached().len(), 1);
    // Commands in flight in the first serve's ring while the second looks.
    for lba in 0..3 {
        sim.lock()
            .unwrap()
            .submit(&read10(lba), SimData::In(512), u64::from(lba))
            .unwrap();
    }
    // The second serve, without a state directory (the first one's record
    // would not help it either): the ring has waiting entries and no clean
    // record, but another process holds it.
    let (mut second, second_logs) = start(host.as_process(2), None);
    second.rescan();
    second.rescan();
    assert!(second.attached().is_empty());
    assert_eq!(
        second_logs.count("cannot attach disk0 (uio0) yet: another process has it open"),
        1,
        "{}",
        second_logs.dump()
    );
    assert!(host.actions.lock().unwrap().is_empty(), "never reset");
    sim.lock().unwrap().notify();
    let mut good = 0;
    reap_until(&sim, 3, |s| good += usize::from(s == 0));
    assert_eq!(good, 3, "the first serve kept serving");

    // The first serve stops (the device is idle) and its process exits: the
    // second takes the ring over as it is.
    assert!(first.shutdown());
    host.release(0);
    second.rescan();
    assert_eq!(second.attached().len(), 1);
    assert!(host.actions.lock().unwrap().is_empty(), "an idle ring");
    verified_job(&sim, 64 * MIB / 512, 512, 100);
    assert!(second.shutdown());
}
