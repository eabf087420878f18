//! `dataplane serve` with `[[scst]]` devices against the SCST simulator:
//! the server's real code (registration, LUN, buffer pool, reactor
//! placement, shared bdev pollers, statistics, shutdown) with a host whose
//! `/dev/scst_user` is an in-process simulated kernel.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataplane::kernfs::Roots;
use dataplane::scst::abi::{ScstUserDevDesc, ScstUserOpt, ScstUserReplyCmd};
use dataplane::scst::abi::{
    SCST_USER_MEM_NO_REUSE, SCST_USER_MEM_REUSE_ALL, SCST_USER_ON_FREE_CMD_CALL,
    SCST_USER_ON_FREE_CMD_IGNORE, SCST_USER_PARSE_CALL, SCST_USER_PARSE_STANDARD,
};
use dataplane::scst::driver::{MultiBuf, ScstDriver};
use dataplane::scst::error::ScstError;
use dataplane::scst::export::{ExportError, Exported, LunAddress};
use dataplane::scst::version::{VersionMiss, VersionSource};
use dataplane::serve::config::ServeConfig;
use dataplane::serve::handoff::{self, HandedDevice, HandoffError, HandoffSink, ReceivedDevice};
use dataplane::serve::{
    DeviceFacts, DeviceKind, DeviceStats, FoundDevice, Host, HostError, ServeOptions, Server,
    SysHost, TcmuUioName,
};
use dataplane::tcmu::{Doorbell, SharedRegion};
use nix::errno::Errno;
use sim::scst::{ScstSim, ScstSimConfig, ScstSimDriver, ScstSimInitiator, SimData};

/// The version the simulated kernels expect unless told otherwise.
const SIM_VERSION: &str = sim::scst::DEV_USER_VERSION_3_11;

type Initiators = Arc<Mutex<Vec<(String, ScstSimInitiator)>>>;

/// The `refuse` switch of each fd opened, by device name.
type Refusals = Arc<Mutex<Vec<(String, Arc<AtomicBool>)>>>;

/// A simulated kernel that, once `refuse` is set, answers every exchange
/// with ENODEV (as scst_user does for a device it dropped).
struct Refusing {
    inner: Box<dyn ScstDriver>,
    refuse: Arc<AtomicBool>,
    /// What it offers as its fd for a hand-off (an eventfd: a file, but
    /// not scst_user's, so FLUSH_CACHE on it fails).
    token: Option<OwnedFd>,
}

impl ScstDriver for Refusing {
    fn register(&mut self, desc: &ScstUserDevDesc) -> Result<(), Errno> {
        self.inner.register(desc)
    }
    fn set_options(&mut self, opt: &ScstUserOpt) -> Result<(), Errno> {
        self.inner.set_options(opt)
    }
    fn get_options(&mut self) -> Result<ScstUserOpt, Errno> {
        self.inner.get_options()
    }
    fn reply_and_get_multi(
        &mut self,
        buf: &mut MultiBuf,
        replies: &[ScstUserReplyCmd],
    ) -> Result<(), Errno> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err(Errno::ENODEV);
        }
        self.inner.reply_and_get_multi(buf, replies)
    }
    fn reply_cmd(&mut self, reply: &ScstUserReplyCmd) -> Result<(), Errno> {
        self.inner.reply_cmd(reply)
    }
    fn flush_cache(&mut self) -> Result<(), Errno> {
        self.inner.flush_cache()
    }
    fn capacity_changed(&mut self) -> Result<(), Errno> {
        self.inner.capacity_changed()
    }
    fn prealloc_buffer(&mut self, pbuf: u64, len: u32, for_clust_pool: bool) -> Result<u32, Errno> {
        self.inner.prealloc_buffer(pbuf, len, for_clust_pool)
    }
    fn wait_fd(&self) -> Option<RawFd> {
        self.inner.wait_fd()
    }
    fn ioctls(&self) -> u64 {
        self.inner.ioctls()
    }
    fn handoff_fd(&self) -> Option<BorrowedFd<'_>> {
        self.token.as_ref().map(|t| t.as_fd())
    }
}

/// A host without TCMU devices whose every `/dev/scst_user` open creates a
/// simulated kernel expecting `kernel_version`.
#[derive(Clone)]
struct ScstSimHost {
    kernel_version: String,
    /// What version discovery finds (for devices without `version`).
    installed_version: Option<String>,
    initiators: Initiators,
    /// The `refuse` switch of each fd opened, in order.
    refusals: Refusals,
    /// Every LUN export asked for: (device, where), in order.
    exports: Arc<Mutex<Vec<(String, LunAddress)>>>,
    /// Drivers offer an eventfd as their fd for a hand-off.
    handoff_tokens: bool,
    /// With `handoff_tokens`: each token's (device, inode) and a duplicate
    /// of its simulated kernel, which FLUSH_CACHE and the adoption of a
    /// handed-over token reach (as a real fd reaches its kernel device).
    handoff_kernels: HandoffKernels,
}

type HandoffKernels = Arc<Mutex<Vec<((u64, u64), ScstSimDriver)>>>;

/// The (device, inode) of an fd.
fn fd_id(fd: BorrowedFd<'_>) -> (u64, u64) {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).unwrap();
    (st.st_dev, st.st_ino)
}

impl ScstSimHost {
    fn new(kernel_version: &str) -> Self {
        Self {
            kernel_version: kernel_version.to_owned(),
            installed_version: Some(kernel_version.to_owned()),
            initiators: Arc::default(),
            refusals: Arc::default(),
            exports: Arc::default(),
            handoff_tokens: false,
            handoff_kernels: Arc::default(),
        }
    }

    /// The simulated kernel a hand-off token stands for.
    fn kernel_of(&self, fd: BorrowedFd<'_>) -> Option<ScstSimDriver> {
        let id = fd_id(fd);
        let list = self.handoff_kernels.lock().unwrap();
        list.iter()
            .find(|(k, _)| *k == id)
            .map(|(_, d)| d.duplicate())
    }

    /// Takes the initiator side of device `name`'s simulated kernel.
    fn take(&self, name: &str) -> ScstSimInitiator {
        let mut list = self.initiators.lock().unwrap();
        let i = list
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} was never opened"));
        list.remove(i).1
    }

    fn opened(&self) -> Vec<String> {
        let list = self.initiators.lock().unwrap();
        list.iter().map(|(n, _)| n.clone()).collect()
    }
}

impl Host for ScstSimHost {
    fn scan(&mut self) -> Vec<FoundDevice> {
        Vec::new()
    }

    // No TCMU here.
    fn facts(&mut self, _name: &TcmuUioName) -> Result<DeviceFacts, HostError> {
        Err(HostError::NoDevice)
    }

    fn is_held(&mut self, _device: &FoundDevice) -> bool {
        false
    }

    fn open(&mut self, _device: &FoundDevice) -> Result<(SharedRegion, Doorbell), HostError> {
        Err(HostError::NoDevice)
    }

    fn recover(&mut self, _name: &TcmuUioName) -> Result<(), HostError> {
        Err(HostError::NoDevice)
    }

    fn unblock(&mut self, _name: &TcmuUioName) -> Result<(), HostError> {
        Err(HostError::NoDevice)
    }

    fn open_scst(&mut self, name: &str) -> Result<Box<dyn ScstDriver>, ScstError> {
        let (driver, initiator) = ScstSim::new(ScstSimConfig {
            version: self.kernel_version.clone(),
            ..ScstSimConfig::default()
        })
        .map_err(|e| ScstError::Invalid(e.to_string()))?;
        self.initiators
            .lock()
            .unwrap()
            .push((name.to_owned(), initiator));
        let refuse = Arc::new(AtomicBool::new(false));
        self.refusals
            .lock()
            .unwrap()
            .push((name.to_owned(), Arc::clone(&refuse)));
        let token = self.handoff_tokens.then(|| {
            let token = OwnedFd::from(nix::sys::eventfd::EventFd::new().expect("an eventfd"));
            self.handoff_kernels
                .lock()
                .unwrap()
                .push((fd_id(token.as_fd()), driver.duplicate()));
            token
        });
        Ok(Box::new(Refusing {
            inner: Box::new(driver),
            refuse,
            token,
        }))
    }

    /// FLUSH_CACHE reaches the simulated kernel behind a token; any other
    /// fd gets the real ioctl (ENOTTY on an eventfd).
    fn flush_scst(&mut self, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        match self.kernel_of(fd) {
            Some(mut kernel) => kernel.flush_cache(),
            None => dataplane::scst::ioctl::flush_cache(fd),
        }
    }

    /// A handed-over token is its simulated kernel again.
    fn adopt_scst(&mut self, name: &str, fd: OwnedFd) -> Result<Box<dyn ScstDriver>, ScstError> {
        let kernel = self
            .kernel_of(fd.as_fd())
            .ok_or_else(|| ScstError::Invalid(format!("{name}: not a token of this host")))?;
        Ok(Box::new(Refusing {
            inner: Box::new(kernel),
            refuse: Arc::new(AtomicBool::new(false)),
            token: Some(fd),
        }))
    }

    /// Records the export and answers `Added` (each registration starts
    /// on a fresh fd, whose LUNs SCST would have dropped).
    fn export_scst_lun(&mut self, device: &str, at: &LunAddress) -> Result<Exported, ExportError> {
        let mut list = self.exports.lock().unwrap();
        list.push((device.to_owned(), at.clone()));
        Ok(Exported::Added)
    }

    fn dev_user_version(
        &mut self,
        configured: Option<&str>,
    ) -> Result<(String, VersionSource), ScstError> {
        if let Some(v) = configured {
            return Ok((v.to_owned(), VersionSource::Config));
        }
        match &self.installed_version {
            Some(v) => Ok((
                v.clone(),
                VersionSource::Module {
                    path: PathBuf::from("/lib/modules/test/scst_user.ko"),
                },
            )),
            None => Err(ScstError::VersionNotFound {
                looked: vec![VersionMiss::UnknownRelease],
            }),
        }
    }
}

fn config(cores: &[usize], scst: &str) -> ServeConfig {
    let text = format!(
        r#"
[reactors]
cores = {cores:?}

[[bdev]]
name = "ram0"
type = "ram"
size = "16MiB"

[[bdev]]
name = "ram4k"
type = "ram"
size = "8MiB"
block_size = 4096

{scst}
"#
    );
    let config = ServeConfig::parse(&text).unwrap();
    config.validate(&reactor::available_cores()).unwrap();
    config
}

fn start(config: ServeConfig, host: ScstSimHost) -> Result<Server<ScstSimHost>, String> {
    let options = ServeOptions {
        config,
        state_dir: None,
    };
    Server::start(options, host, Box::new(|_line: &str| {})).map_err(|e| e.to_string())
}

fn first_core() -> usize {
    reactor::available_cores()[0]
}

fn rw10(opcode: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let mut cdb = [0u8; 10];
    cdb[0] = opcode;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

/// The data written by command `tag`: every byte depends on the tag and
/// its offset.
fn pattern(tag: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(tag * 7 + 1) as u8)
        .collect()
}

/// One finished command.
#[derive(Debug)]
struct Done {
    tag: u64,
    status: u8,
    data: Vec<u8>,
}

/// Reaps until `n` commands finished (each with up to `data_len` bytes of
/// data-in).
fn reap(initiator: &mut ScstSimInitiator, n: usize, data_len: usize) -> Vec<Done> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = Vec::new();
    while done.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} commands finished: {:?}",
            done.len(),
            initiator.stats()
        );
        let got = initiator
            .reap(|c| {
                let mut data = vec![0u8; data_len.min(c.data_in_len)];
                let copied = c.copy_data_in(&mut data);
                data.truncate(copied);
                done.push(Done {
                    tag: c.tag,
                    status: c.status,
                    data,
                });
            })
            .unwrap();
        if got == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    done.sort_by_key(|d| d.tag);
    done
}

/// Statistics of device `name` once `done(stats)` holds, `commands`
/// summed over the reports taken meanwhile.
fn stats_when(
    server: &mut Server<ScstSimHost>,
    name: &str,
    done: impl Fn(&DeviceStats) -> bool,
) -> (DeviceStats, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut commands = 0;
    loop {
        let report = server.stats();
        let d = report
            .devices
            .iter()
            .find(|d| d.device.name == name)
            .unwrap_or_else(|| panic!("{name} is not in {report:?}"))
            .clone();
        commands += d.commands;
        if done(&d) {
            return (d, commands);
        }
        assert!(Instant::now() < deadline, "stats never got there: {d:?}");
        std::thread::yield_now();
    }
}

#[test]
fn scst_devices_serve_data_and_report_statistics() {
    let host = ScstSimHost::new(SIM_VERSION);
    let scst = format!(
        r#"
[[scst]]
name = "disk0"
bdev = "ram0"
version = "{SIM_VERSION}"

[[scst]]
name = "disk1"
bdev = "ram0"
parse_type = "call"
memory_reuse = "none"
d_sense = true
pool_mb = 32
"#
    );
    let mut server = start(config(&[first_core()], &scst), host.clone()).unwrap();
    assert_eq!(
        server.scst_devices(),
        [("disk0".to_owned(), 0), ("disk1".to_owned(), 0)]
    );
    let mut disk0 = host.take("disk0");
    let mut disk1 = host.take("disk1");

    // Registered as configured: a 512-byte disk with the options given
    // (defaults: fileio_tgt's), disk1's version found by discovery.
    let d0 = disk0.device().expect("disk0 registered");
    assert_eq!(
        (d0.name.as_str(), d0.type_, d0.block_size),
        ("disk0", 0, 512)
    );
    assert!(!d0.blocking, "the fd is non-blocking");
    assert_eq!(
        (
            d0.options.parse_type,
            d0.options.memory_reuse_type,
            d0.options.on_free_cmd_type
        ),
        (
            SCST_USER_PARSE_STANDARD,
            SCST_USER_MEM_REUSE_ALL,
            SCST_USER_ON_FREE_CMD_IGNORE
        )
    );
    assert_eq!(
        (d0.options.tst, d0.options.queue_alg, d0.options.d_sense),
        (1, 1, 0)
    );
    let d1 = disk1.device().expect("disk1 registered");
    assert_eq!(
        (
            d1.options.parse_type,
            d1.options.memory_reuse_type,
            d1.options.on_free_cmd_type,
            d1.options.d_sense
        ),
        (
            SCST_USER_PARSE_CALL,
            SCST_USER_MEM_NO_REUSE,
            SCST_USER_ON_FREE_CMD_CALL,
            1
        )
    );

    // Sessions are answered from the reactor.
    let s0 = disk0.attach_session(0, "iqn.2026-11.test:init0").unwrap();
    let s1 = disk1.attach_session(3, "iqn.2026-11.test:init1").unwrap();

    // 16 writes of 4 KiB through disk0, then read back through disk0.
    const N: u64 = 16;
    const LEN: usize = 4096;
    for tag in 0..N {
        let lba = (tag * 8) as u32;
        disk0
            .submit(
                s0,
                &rw10(0x2a, lba, 8),
                SimData::Out(&pattern(tag, LEN)),
                tag,
            )
            .unwrap();
    }
    disk0.notify();
    let writes = reap(&mut disk0, N as usize, 0);
    assert!(writes.iter().all(|d| d.status == 0), "{writes:?}");
    for tag in 0..N {
        let lba = (tag * 8) as u32;
        disk0
            .submit(s0, &rw10(0x28, lba, 8), SimData::In(LEN), 100 + tag)
            .unwrap();
    }
    disk0.notify();
    let reads = reap(&mut disk0, N as usize, LEN);
    for (tag, read) in (0..N).zip(&reads) {
        assert_eq!((read.tag, read.status), (100 + tag, 0));
        assert!(
            read.data == pattern(tag, LEN),
            "read of block {} differs",
            tag * 8
        );
    }

    // disk1 serves the same bdev (through the reactor's one bdev poller):
    // it reads what disk0 wrote, and its writes show through disk0.
    disk1
        .submit(s1, &rw10(0x28, 8, 8), SimData::In(LEN), 1)
        .unwrap();
    disk1
        .submit(s1, &rw10(0x2a, 1000, 8), SimData::Out(&pattern(99, LEN)), 2)
        .unwrap();
    disk1.notify();
    let done = reap(&mut disk1, 2, LEN);
    assert_eq!((done[0].status, done[1].status), (0, 0));
    assert!(done[0].data == pattern(1, LEN));
    disk0
        .submit(s0, &rw10(0x28, 1000, 8), SimData::In(LEN), 7)
        .unwrap();
    disk0.notify();
    let done = reap(&mut disk0, 1, LEN);
    assert!(done[0].status == 0 && done[0].data == pattern(99, LEN));

    // Out of range: a precise sense (descriptor format on disk1, d_sense).
    disk1
        .submit(s1, &rw10(0x28, 32768, 1), SimData::In(512), 3)
        .unwrap();
    disk1.notify();
    let mut sense = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sense.is_empty() {
        assert!(Instant::now() < deadline, "no answer");
        disk1
            .reap(|c| {
                assert_eq!(c.status, 0x02, "CHECK CONDITION");
                sense = c.sense.to_vec();
            })
            .unwrap();
    }
    assert_eq!(
        (sense[0], sense[1], sense[2], sense[3]),
        (0x72, 0x05, 0x21, 0x00),
        "descriptor sense: ILLEGAL REQUEST, LBA OUT OF RANGE"
    );

    // Statistics: both devices, as SCST devices, with every command.
    let (s, commands) = stats_when(&mut server, "disk0", |d| d.commands_total == 2 * N + 1);
    assert_eq!(commands, 2 * N + 1);
    assert_eq!(s.device.kind, DeviceKind::Scst);
    assert_eq!((s.device.uio.as_deref(), s.device.hba), (None, None));
    assert_eq!((s.device.bdev.as_str(), s.device.reactor), ("ram0", 0));
    assert_eq!(s.received_total, 2 * N + 1);
    assert_eq!(
        (s.sessions, s.busy_total, s.malformed_total),
        (Some(1), Some(0), 0)
    );
    // disk1 parses CDBs itself (parse_type "call"): the out-of-range READ
    // was refused at PARSE and never became a command.
    let (s1_stats, _) = stats_when(&mut server, "disk1", |d| d.commands_total == 2);
    assert_eq!(
        (s1_stats.device.kind, s1_stats.received_total),
        (DeviceKind::Scst, 2)
    );
    let report = server.stats();
    let json = serde_json::to_value(&report).unwrap();
    let disk0_json = &json["devices"][0];
    assert_eq!(disk0_json["name"], "disk0");
    assert_eq!(disk0_json["kind"], "scst");
    assert_eq!(disk0_json["commands_total"], 2 * N + 1);
    assert_eq!(disk0_json["sessions"], 1);
    assert!(disk0_json.get("uio").is_none() && disk0_json.get("hba").is_none());
    let text = report.render_text();
    assert!(
        text.contains("  disk0 (scst, bdev ram0, reactor 0): "),
        "{text}"
    );
    assert!(text.contains(" ioctls/IO, 1 session(s)"), "{text}");

    // Reports after more I/O count it, with the ioctls it took and (once
    // the device published its histogram, every ~50 ms while busy) the
    // latency distribution.
    for tag in 0..4u64 {
        disk0
            .submit(s0, &rw10(0x28, 0, 8), SimData::In(LEN), 200 + tag)
            .unwrap();
    }
    disk0.notify();
    reap(&mut disk0, 4, 0);
    let (s, commands) = stats_when(&mut server, "disk0", |d| d.commands_total == 2 * N + 5);
    assert_eq!(commands, 4);
    assert!(s.doorbells > 0 && s.doorbells_per_io > 0.0, "{s:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tag = 300;
    let latency = loop {
        disk0
            .submit(s0, &rw10(0x28, 0, 8), SimData::In(LEN), tag)
            .unwrap();
        disk0.notify();
        reap(&mut disk0, 1, 0);
        tag += 1;
        let report = server.stats();
        let l = report.devices[0].latency_ns;
        if l.p50 > 0 {
            break l;
        }
        assert!(Instant::now() < deadline, "no latency published");
    };
    assert!(
        latency.p99 >= latency.p50 && latency.max >= latency.p99,
        "{latency:?}"
    );

    assert!(server.shutdown(), "drained");
    // Shutdown closed the fds: the devices are unregistered.
    assert!(disk0.is_gone() && disk1.is_gone());
}

#[test]
fn shutdown_answers_every_command_the_device_received() {
    let host = ScstSimHost::new(SIM_VERSION);
    let mut server = start(
        config(
            &[first_core()],
            "[[scst]]\nname = \"disk0\"\nbdev = \"ram0\"\n",
        ),
        host.clone(),
    )
    .unwrap();
    let mut disk0 = host.take("disk0");
    let sess = disk0.attach_session(0, "iqn.2026-11.test:init").unwrap();

    // 12 writes of 1 MiB: once the device has received every EXEC, the
    // server shuts down while the last ones typically still execute or
    // wait for their replies to go out (EXECs arrive one by one, each after
    // its ALLOC_MEM). Draining answers all of them before the fd closes; a
    // device closed early would leave them to the kernel's cleanup, which
    // fails them (ILLEGAL REQUEST 25/00, counted as unjammed).
    const N: u64 = 12;
    const LEN: usize = 1 << 20;
    for tag in 0..N {
        let lba = (tag * 2048) as u32;
        disk0
            .submit(
                sess,
                &rw10(0x2a, lba, 2048),
                SimData::Out(&pattern(tag, LEN)),
                tag,
            )
            .unwrap();
    }
    disk0.notify();
    stats_when(&mut server, "disk0", |d| d.received_total == N);
    assert!(server.shutdown(), "every device drained");
    assert!(disk0.is_gone(), "the fd is closed after the drain");
    let done = reap(&mut disk0, N as usize, 0);
    let statuses: Vec<u8> = done.iter().map(|d| d.status).collect();
    assert_eq!(statuses, vec![0; N as usize], "all GOOD: {done:?}");
    assert_eq!(disk0.stats().unjammed, 0);
}

#[test]
fn registration_failures_stop_the_start_naming_the_device() {
    // The kernel expects another DEV_USER_VERSION than the one configured:
    // EINVAL, worded by the registration code.
    let host = ScstSimHost::new("3.10.0-other-build");
    let scst =
        format!("[[scst]]\nname = \"disk0\"\nbdev = \"ram0\"\nversion = \"{SIM_VERSION}\"\n");
    let err = start(config(&[first_core()], &scst), host.clone()).unwrap_err();
    assert!(
        err.starts_with(&format!(
            "scst \"disk0\": registering SCST device \"disk0\" failed with EINVAL: \
             DEV_USER_VERSION mismatch: this handler offered \"{SIM_VERSION}\" (from the \
             configuration)"
        )),
        "{err}"
    );
    assert!(host.take("disk0").device().is_none(), "not registered");

    // The first device registers, the second does not: the start fails on
    // the second and the first is unregistered again (its fd closed).
    let host = ScstSimHost::new(SIM_VERSION);
    let scst = "[[scst]]\nname = \"good\"\nbdev = \"ram0\"\n\n\
                [[scst]]\nname = \"bad\"\nbdev = \"ram4k\"\nversion = \"3.10.0-old\"\n";
    let err = start(config(&[first_core()], scst), host.clone()).unwrap_err();
    assert!(
        err.starts_with(
            "scst \"bad\": registering SCST device \"bad\" failed with EINVAL: DEV_USER_VERSION \
             mismatch: this handler offered \"3.10.0-old\" (from the configuration)"
        ),
        "{err}"
    );
    let good = host.take("good");
    assert_eq!(good.device().map(|d| d.name), Some("good".to_owned()));
    assert!(good.is_gone(), "the registered device was closed");

    // No version configured and none installed: discovery's message.
    let mut host = ScstSimHost::new(SIM_VERSION);
    host.installed_version = None;
    let err = start(
        config(
            &[first_core()],
            "[[scst]]\nname = \"disk0\"\nbdev = \"ram0\"\n",
        ),
        host,
    )
    .unwrap_err();
    assert!(
        err.starts_with(
            "scst \"disk0\": cannot find the DEV_USER_VERSION of the installed SCST: the kernel \
             release is unknown (no /proc/sys/kernel/osrelease); set it with `version = \"...\"`"
        ),
        "{err}"
    );
}

#[test]
fn without_scst_user_the_real_host_says_to_load_it() {
    let root = tempfile::tempdir().unwrap();
    let dev = root.path().join("dev");
    let sysfs = root.path().join("sys");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::create_dir_all(&sysfs).unwrap();
    let host = SysHost::new(Roots {
        dev: dev.clone(),
        sysfs: sysfs.clone(),
        ..Roots::default()
    });
    let options = ServeOptions {
        config: config(
            &[first_core()],
            "[[scst]]\nname = \"disk0\"\nbdev = \"ram0\"\n",
        ),
        state_dir: None,
    };
    let err = Server::start(options, host, Box::new(|_: &str| {}))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "scst \"disk0\": scst_user is not loaded (no {}; modprobe scst_user): {} does not \
             exist either (load scst first if needed: modprobe scst)",
            dev.join("scst_user").display(),
            sysfs.join("module/scst_user").display()
        )
    );
}

#[test]
fn scst_devices_share_the_round_robin_placement() {
    if !test_support::skip::can_run(&[test_support::skip::Need::Cpus(2)]) {
        return;
    }
    let cores = reactor::available_cores();
    let host = ScstSimHost::new(SIM_VERSION);
    let scst = "[[scst]]\nname = \"a\"\nbdev = \"ram0\"\n\n\
                [[scst]]\nname = \"b\"\nbdev = \"ram0\"\nreactor = 0\n\n\
                [[scst]]\nname = \"c\"\nbdev = \"ram4k\"\n\n\
                [[scst]]\nname = \"d\"\nbdev = \"ram0\"\n";
    let server = start(config(&cores[..2], scst), host.clone()).unwrap();
    assert_eq!(
        server.scst_devices(),
        [
            ("a".to_owned(), 0),
            ("b".to_owned(), 0),
            ("c".to_owned(), 1),
            ("d".to_owned(), 0)
        ]
    );
    assert_eq!(host.opened(), ["a", "b", "c", "d"]);
    assert_eq!(
        host.take("c").device().map(|d| d.block_size),
        Some(4096),
        "the bdev's block size"
    );
    assert!(server.shutdown());
}

#[test]
fn scst_device_over_a_file_bdev_serves_and_one_over_a_bad_bdev_is_skipped() {
    if !test_support::skip::can_run(&[test_support::skip::Need::IoUring]) {
        return;
    }
    let dir = test_support::scratch::disk_dir("serve-scst-file-");
    let text = format!(
        r#"
[reactors]
cores = [{core}]

[[bdev]]
name = "f0"
type = "file"
path = "{f0}"
size = "8MiB"
block_size = 4096

[[bdev]]
name = "bad"
type = "file"
path = "{bad}"

[[bdev]]
name = "f4k"
type = "file"
path = "{f4k}"
size = "1MiB"

[[scst]]
name = "disk0"
bdev = "f0"
version = "{SIM_VERSION}"
pool_mb = 16

[[scst]]
name = "nodisk"
bdev = "bad"
version = "{SIM_VERSION}"

[[scst]]
name = "wrongbs"
bdev = "f4k"
block_size = 4096
version = "{SIM_VERSION}"
"#,
        core = first_core(),
        f0 = dir.path().join("f0.img").display(),
        bad = dir.path().join("bad.img").display(),
        f4k = dir.path().join("f4k.img").display(),
    );
    let config = ServeConfig::parse(&text).unwrap();
    config.validate(&reactor::available_cores()).unwrap();
    let host = ScstSimHost::new(SIM_VERSION);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&lines);
    let mut server = Server::start(
        ServeOptions {
            config,
            state_dir: None,
        },
        host.clone(),
        Box::new(move |line: &str| sink.lock().unwrap().push(line.to_owned())),
    )
    .expect("a bad bdev does not stop the start");
    let log = lines.lock().unwrap().join("\n");
    assert!(
        log.contains("not registering SCST device nodisk: bdev \"bad\" is unavailable (bdev bad: ")
            && log.contains("does not exist"),
        "{log}"
    );
    assert!(
        log.contains(
            "not registering SCST device wrongbs: its block_size 4096 differs from the block \
             size of bdev \"f4k\" (512)"
        ),
        "{log}"
    );
    assert_eq!(host.opened(), ["disk0"], "only disk0 was registered");
    assert_eq!(server.scst_devices(), [("disk0".to_owned(), 0)]);

    let mut disk0 = host.take("disk0");
    assert_eq!(disk0.device().unwrap().block_size, 4096);
    let s0 = disk0.attach_session(0, "iqn.2026-11.test:init0").unwrap();
    const N: u64 = 32;
    const LEN: usize = 8192;
    let rw = |opcode: u8, tag: u64| rw10(opcode, (tag * 2) as u32, 2);
    for tag in 0..N {
        disk0
            .submit(s0, &rw(0x2a, tag), SimData::Out(&pattern(tag, LEN)), tag)
            .unwrap();
    }
    disk0.notify();
    assert!(reap(&mut disk0, N as usize, 0)
        .iter()
        .all(|d| d.status == 0));
    for tag in 0..N {
        disk0
            .submit(s0, &rw(0x28, tag), SimData::In(LEN), 100 + tag)
            .unwrap();
    }
    disk0.notify();
    for (tag, read) in (0..N).zip(reap(&mut disk0, N as usize, LEN)) {
        assert_eq!((read.tag, read.status), (100 + tag, 0));
        assert!(read.data == pattern(tag, LEN), "block {} differs", tag * 2);
    }
    // The file holds what was written.
    let on_disk = std::fs::read(dir.path().join("f0.img")).unwrap();
    assert!(on_disk[3 * LEN..4 * LEN] == pattern(3, LEN));

    let report = server.stats();
    let f0 = report.bdevs.iter().find(|b| b.name == "f0").unwrap();
    let file = f0.file.as_ref().unwrap();
    assert_eq!(file.ios, 2 * N, "{file:?}");
    // The pool's arena (anonymous memory) is registered and used.
    assert_eq!(file.memory_registered, Some(true), "{file:?}");
    assert_eq!(file.fixed_ios, 2 * N, "{file:?}");
    let bad = report.bdevs.iter().find(|b| b.name == "bad").unwrap();
    assert!(bad.unavailable.as_ref().unwrap().contains("does not exist"));
    drop(server);
}

#[test]
fn a_device_scst_user_refuses_is_logged_counted_and_registered_again() {
    let host = ScstSimHost::new(SIM_VERSION);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&lines);
    let options = ServeOptions {
        config: config(
            &[first_core()],
            "[[scst]]\nname = \"disk0\"\nbdev = \"ram0\"\n[[scst.export]]\n\
             [[scst.export]]\ndriver = \"iscsi\"\ntarget = \"iqn.2026-12.test:t\"\nlun = 3\n",
        ),
        state_dir: None,
    };
    let mut server = Server::start(
        options,
        host.clone(),
        Box::new(move |l: &str| sink.lock().unwrap().push(l.to_owned())),
    )
    .unwrap();
    let count = |needle: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    };
    let first = host.take("disk0");
    assert!(first.device().is_some());
    let local = LunAddress {
        driver: "scst_local".into(),
        target: "scst_local_tgt".into(),
        lun: 0,
    };
    let iscsi = LunAddress {
        driver: "iscsi".into(),
        target: "iqn.2026-12.test:t".into(),
        lun: 3,
    };
    let both = [("disk0".to_owned(), local), ("disk0".to_owned(), iscsi)];
    assert_eq!(
        *host.exports.lock().unwrap(),
        both,
        "exported once registered"
    );
    assert_eq!(
        count("exported SCST device disk0 as LUN 0 of scst_local/scst_local_tgt"),
        1
    );
    host.refusals.lock().unwrap()[0]
        .1
        .store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count("recovered SCST device disk0: registered again") == 0 {
        assert!(Instant::now() < deadline, "{:?}", lines.lock().unwrap());
        server.heal();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        count("SCST device disk0: scst_user refused it (ENODEV"),
        1,
        "logged once: {:?}",
        lines.lock().unwrap()
    );
    assert_eq!(host.refusals.lock().unwrap().len(), 2, "a new fd");
    assert_eq!(
        *host.exports.lock().unwrap(),
        [both.clone(), both].concat(),
        "exported again: SCST dropped the LUNs with the old fd"
    );
    // The new registration serves.
    let mut disk0 = host.take("disk0");
    let sess = disk0.attach_session(0, "iqn.2026-11.test:init").unwrap();
    disk0
        .submit(sess, &rw10(0x28, 0, 1), SimData::In(512), 1)
        .unwrap();
    disk0.notify();
    let done = reap(&mut disk0, 1, 512);
    assert_eq!(done[0].status, 0);
    let report = server.stats();
    let d = report
        .devices
        .iter()
        .find(|d| d.device.name == "disk0")
        .unwrap();
    assert_eq!((d.faults_total, d.recoveries_total), (1, 1), "{d:?}");
    assert_eq!(d.fault, None);
    assert!(server.shutdown());
}

/// A hand-off that fails after the device was quiesced (FLUSH_CACHE
/// refused) hands nothing over: the successor is told why, and the device
/// serves on, handing out buffers again (writes would be BUSY for ever if
/// the quiescence stayed).
#[test]
fn a_failed_hand_off_tells_the_successor_and_the_device_serves_on() {
    use dataplane::serve::handoff::HandoffListener;
    let mut host = ScstSimHost::new(SIM_VERSION);
    host.handoff_tokens = true;
    let scst = format!(
        r#"
[[scst]]
name = "disk0"
bdev = "ram0"
version = "{SIM_VERSION}"
"#
    );
    let mut server = start(config(&[first_core()], &scst), host.clone()).unwrap();
    let mut disk0 = host.take("disk0");
    let sess = disk0.attach_session(0, "iqn.2026-12.test:init").unwrap();
    // The token no longer leads to its kernel: FLUSH_CACHE gets the real
    // ioctl on an eventfd, which fails.
    host.handoff_kernels.lock().unwrap().clear();

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("handoff.sock");
    let listener = HandoffListener::bind(&path).unwrap();
    let successor = {
        let path = path.clone();
        std::thread::spawn(move || handoff::receive(&path, Duration::from_secs(30)))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        if let Some(s) = listener.accept(Duration::from_secs(10)).unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the successor never connected");
        std::thread::sleep(Duration::from_millis(1));
    };
    let err = server
        .hand_off(&mut handoff::Successor(&stream))
        .unwrap_err();
    assert!(
        matches!(&err, HandoffError::Device { device, why }
            if device == "disk0" && why.contains("FLUSH_CACHE")),
        "{err}"
    );
    match successor.join().unwrap() {
        Err(HandoffError::Refused(why)) => assert!(why.contains("disk0"), "{why}"),
        other => panic!("the successor got {other:?}"),
    }
    assert_eq!(server.scst_devices(), [("disk0".to_owned(), 0)]);

    // Writes get buffers again and read back.
    const LEN: usize = 4096;
    for tag in 0..8u64 {
        let cdb = rw10(0x2a, (tag * 8) as u32, 8);
        disk0
            .submit(sess, &cdb, SimData::Out(&pattern(tag, LEN)), tag)
            .unwrap();
    }
    disk0.notify();
    let writes = reap(&mut disk0, 8, 0);
    assert!(writes.iter().all(|d| d.status == 0), "{writes:?}");
    for tag in 0..8u64 {
        let cdb = rw10(0x28, (tag * 8) as u32, 8);
        disk0
            .submit(sess, &cdb, SimData::In(LEN), 100 + tag)
            .unwrap();
    }
    disk0.notify();
    for (tag, read) in (0..8u64).zip(reap(&mut disk0, 8, LEN)) {
        assert_eq!(read.status, 0);
        assert_eq!(read.data, pattern(tag, LEN), "block of write {tag}");
    }
    assert!(server.shutdown());
}

/// Receives handed-over devices in this process (what a successor would).
#[derive(Default)]
struct Captured(Vec<ReceivedDevice>);

impl HandoffSink for Captured {
    fn send(&mut self, devices: &[(HandedDevice, BorrowedFd<'_>)]) -> Result<(), HandoffError> {
        for (device, fd) in devices {
            self.0.push(ReceivedDevice {
                device: device.clone(),
                fd: fd.try_clone_to_owned().unwrap(),
            });
        }
        Ok(())
    }

    fn refuse(&mut self, why: &str) -> Result<(), HandoffError> {
        panic!("the hand-off was refused: {why}");
    }
}

/// A hand-off between two servers of this process: the first quiesces
/// disk0 (flushing its simulated kernel's cache), drains it and hands its
/// fd over with the session; the second builds disk0 on that fd without
/// registering it. The simulated kernel never loses the device, the
/// initiator's session goes on, and what was written through the first
/// server reads back through the second (a file bdev both open).
#[test]
fn a_device_handed_from_one_server_to_the_next_keeps_its_session_and_data() {
    if !test_support::skip::can_run(&[test_support::skip::Need::IoUring]) {
        return;
    }
    let dir = test_support::scratch::disk_dir("serve-scst-handoff-");
    let text = format!(
        r#"
[reactors]
cores = [{core}]

[[bdev]]
name = "f0"
type = "file"
path = "{f0}"
size = "8MiB"
direct = false

[[scst]]
name = "disk0"
bdev = "f0"
version = "{SIM_VERSION}"
pool_mb = 16
"#,
        core = first_core(),
        f0 = dir.path().join("f0.img").display(),
    );
    let config = ServeConfig::parse(&text).unwrap();
    config.validate(&reactor::available_cores()).unwrap();
    let mut host = ScstSimHost::new(SIM_VERSION);
    host.handoff_tokens = true;
    let mut first = start(config.clone(), host.clone()).unwrap();
    let mut disk0 = host.take("disk0");
    let sess = disk0.attach_session(0, "iqn.2026-12.test:init").unwrap();

    const LEN: usize = 4096;
    let write = |disk0: &mut ScstSimInitiator, tags: std::ops::Range<u64>| {
        for tag in tags.clone() {
            let cdb = rw10(0x2a, (tag * 8) as u32, 8);
            disk0
                .submit(sess, &cdb, SimData::Out(&pattern(tag, LEN)), tag)
                .unwrap();
        }
        disk0.notify();
        let done = reap(disk0, (tags.end - tags.start) as usize, 0);
        assert!(done.iter().all(|d| d.status == 0), "{done:?}");
    };
    let read_back = |disk0: &mut ScstSimInitiator, tags: std::ops::Range<u64>| {
        for tag in tags.clone() {
            let cdb = rw10(0x28, (tag * 8) as u32, 8);
            disk0
                .submit(sess, &cdb, SimData::In(LEN), 1000 + tag)
                .unwrap();
        }
        disk0.notify();
        let n = (tags.end - tags.start) as usize;
        for (tag, read) in tags.clone().zip(reap(disk0, n, LEN)) {
            assert_eq!(read.status, 0);
            assert_eq!(read.data, pattern(tag, LEN), "block of write {tag}");
        }
    };
    write(&mut disk0, 0..16);
    read_back(&mut disk0, 0..16); // buffers end up cached by the kernel

    let mut captured = Captured::default();
    let names = first.hand_off(&mut captured).unwrap();
    assert_eq!(names, ["disk0"]);
    assert!(
        first.scst_devices().is_empty(),
        "disk0 left the first server"
    );
    assert_eq!(captured.0.len(), 1);
    assert_eq!(captured.0[0].device.sessions.len(), 1);
    assert_eq!(captured.0[0].device.sessions[0].sess_h, sess);
    assert!(first.shutdown());
    assert!(
        !disk0.is_gone(),
        "the simulated kernel still has disk0 registered"
    );

    let options = ServeOptions {
        config,
        state_dir: None,
    };
    let mut second = Server::start_taking_over(
        options,
        host.clone(),
        std::mem::take(&mut captured.0),
        Box::new(|_line: &str| {}),
    )
    .unwrap();
    assert_eq!(second.scst_devices(), [("disk0".to_owned(), 0)]);
    read_back(&mut disk0, 0..16);
    write(&mut disk0, 16..24);
    read_back(&mut disk0, 16..24);
    let (stats, _) = stats_when(&mut second, "disk0", |d| d.commands_total >= 24);
    assert_eq!(stats.sessions, Some(1), "the session came with the fd");
    assert!(second.shutdown());
}

/// A reload (SIGHUP) while serving: a new bdev and SCST device come, the
/// device that did not change is never re-registered and serves on, a
/// removed device is unregistered; a change of `[reactors]`, or one that
/// would pull a bdev from under something the control socket created, is
/// refused with nothing applied.
#[test]
fn a_reload_adds_and_removes_scst_devices_and_leaves_the_others_alone() {
    let host = ScstSimHost::new(SIM_VERSION);
    let disk0 =
        format!("[[scst]]\nname = \"disk0\"\nbdev = \"ram0\"\nversion = \"{SIM_VERSION}\"\n");
    let with_disk9 = format!(
        "{disk0}\n[[bdev]]\nname = \"ram9\"\ntype = \"ram\"\nsize = \"4MiB\"\n\n\
         [[scst]]\nname = \"disk9\"\nbdev = \"ram9\"\nversion = \"{SIM_VERSION}\"\n\n\
         [[bdev]]\nname = \"ram8\"\ntype = \"ram\"\nsize = \"8MiB\"\nblock_size = 4096\n"
    );
    let cores = [first_core()];
    let mut server = start(config(&cores, &disk0), host.clone()).unwrap();
    let mut init0 = host.take("disk0");
    let s0 = init0.attach_session(0, "iqn.2026-12.test:init0").unwrap();
    let io = |init: &mut ScstSimInitiator, sess: u64, tag: u64| {
        let cdb = rw10(0x2a, (tag * 8) as u32, 8);
        init.submit(sess, &cdb, SimData::Out(&pattern(tag, 4096)), tag)
            .unwrap();
        init.notify();
        assert_eq!(reap(init, 1, 0)[0].status, 0);
        let cdb = rw10(0x28, (tag * 8) as u32, 8);
        init.submit(sess, &cdb, SimData::In(4096), 100 + tag)
            .unwrap();
        init.notify();
        assert_eq!(reap(init, 1, 4096)[0].data, pattern(tag, 4096));
    };
    io(&mut init0, s0, 1);

    // Added: ram9 and disk9, registered and served; disk0 untouched.
    let report = server.reload(config(&cores, &with_disk9)).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.plan.scst_added.len(), 1);
    assert!(report.plan.scst_removed.is_empty());
    assert_eq!(
        server.scst_devices(),
        [("disk0".to_owned(), 0), ("disk9".to_owned(), 0)]
    );
    let mut init9 = host.take("disk9");
    let s9 = init9.attach_session(0, "iqn.2026-12.test:init9").unwrap();
    io(&mut init9, s9, 2);
    io(&mut init0, s0, 3);
    let opens = |name: &str| {
        let list = host.refusals.lock().unwrap();
        list.iter().filter(|(n, _)| n == name).count()
    };
    assert_eq!(opens("disk0"), 1, "disk0 was never registered again");

    // Refused, nothing applied: [reactors] changed.
    let mut other = config(&cores, &with_disk9);
    other.reactors.idle_polls_before_sleep = Some(7);
    assert_eq!(
        server.reload(other).unwrap_err(),
        dataplane::serve::reload::ReloadError::Reactors
    );
    // Refused: a striped bdev made over the control socket stands on ram8,
    // which the file would remove.
    let striped = ServeConfig::parse(
        "[reactors]\ncores = [0]\n[[bdev]]\nname = \"s7\"\ntype = \"striped\"\n\
         children = [\"ram4k\", \"ram8\"]\nchunk = \"64KiB\"\n",
    )
    .unwrap()
    .bdevs
    .remove(0);
    server.create_bdev(striped).unwrap();
    match server.reload(config(&cores, &disk0)) {
        Err(dataplane::serve::reload::ReloadError::InUse { bdev, users }) => {
            assert_eq!(bdev, "ram8");
            assert_eq!(users, ["bdev s7"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        server.scst_devices().len(),
        2,
        "the refusals changed nothing"
    );
    server.delete_bdev("s7").unwrap();

    // Removed: disk9 (unregistered: the simulated kernel drops it) and ram9.
    let report = server.reload(config(&cores, &disk0)).unwrap();
    assert_eq!(report.plan.scst_removed, ["disk9"]);
    assert_eq!(report.plan.bdevs_removed, ["ram9", "ram8"]);
    assert_eq!(server.scst_devices(), [("disk0".to_owned(), 0)]);
    assert!(init9.is_gone(), "disk9 is unregistered");
    assert!(!server.bdev_names().contains(&"ram9".to_owned()));
    io(&mut init0, s0, 4);
    assert_eq!(opens("disk0"), 1);
    assert!(server.shutdown());
}

/// SCST devices added and removed while serving (the control socket's
/// `scst_device_add`/`scst_device_remove`): registered and served at once,
/// unregistered on removal; names are unique, and a reload does not take a
/// name the socket holds.
#[test]
fn scst_devices_are_added_and_removed_while_serving() {
    let host = ScstSimHost::new(SIM_VERSION);
    let cores = [first_core()];
    let mut server = start(config(&cores, ""), host.clone()).unwrap();
    let entry = |name: &str| {
        let text = format!(
            "[reactors]\ncores = [0]\n[[scst]]\nname = \"{name}\"\nbdev = \"ram0\"\n\
             version = \"{SIM_VERSION}\"\n"
        );
        ServeConfig::parse(&text).unwrap().scst.remove(0)
    };
    server.add_scst_device(entry("disk5")).unwrap();
    assert_eq!(server.scst_devices(), [("disk5".to_owned(), 0)]);
    let mut init = host.take("disk5");
    let sess = init.attach_session(0, "iqn.2026-12.test:i").unwrap();
    let cdb = rw10(0x2a, 0, 8);
    init.submit(sess, &cdb, SimData::Out(&pattern(1, 4096)), 1)
        .unwrap();
    init.notify();
    assert_eq!(reap(&mut init, 1, 0)[0].status, 0);
    assert!(matches!(
        server.add_scst_device(entry("disk5")),
        Err(dataplane::serve::error::ScstChangeError::Exists(_))
    ));
    // A file that adds a device of that name is refused whole.
    let file =
        format!("[[scst]]\nname = \"disk5\"\nbdev = \"ram0\"\nversion = \"{SIM_VERSION}\"\n");
    assert_eq!(
        server.reload(config(&cores, &file)).unwrap_err(),
        dataplane::serve::reload::ReloadError::DeviceExists("disk5".into())
    );
    server.remove_scst_device("disk5").unwrap();
    assert!(init.is_gone(), "disk5 is unregistered");
    assert!(server.scst_devices().is_empty());
    assert!(matches!(
        server.remove_scst_device("disk5"),
        Err(dataplane::serve::error::ScstChangeError::NoSuchDevice(_))
    ));
    assert!(server.shutdown());
}
