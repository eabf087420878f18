//! The control socket over a real unix socket: every method, the error
//! cases, concurrent and silent clients, the socket file's life, and bdevs
//! created over it then served through the simulator with verify.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use dataplane::serve::rpc::{code, RpcOptions, RpcServer, SocketError};
use serde_json::{json, Value};

use super::*;

/// Waits this long at most for anything (never a speed assertion).
const PATIENCE: Duration = Duration::from_secs(30);

/// A client connection.
struct Client {
    stream: UnixStream,
    answers: serde_json::StreamDeserializer<'static, serde_json::de::IoRead<UnixStream>, Value>,
}

impl Client {
    fn connect(path: &Path) -> Self {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let answers =
            serde_json::Deserializer::from_reader(stream.try_clone().unwrap()).into_iter();
        Self { stream, answers }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next answer; `None` once the server closed the connection.
    fn answer(&mut self) -> Option<Value> {
        self.answers.next().map(|a| a.unwrap())
    }

    /// Whether the server closed the connection (end of stream, or a reset
    /// when it closed with part of our request unread).
    fn closed(&mut self) -> bool {
        match self.answers.next() {
            None => true,
            Some(Err(e)) => e.io_error_kind() == Some(std::io::ErrorKind::ConnectionReset),
            Some(Ok(_)) => false,
        }
    }

    /// Calls `method` and returns the whole response object.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let mut request = json!({"jsonrpc": "2.0", "id": 1, "method": method});
        if !params.is_null() {
            request["params"] = params;
        }
        self.send(request.to_string().as_bytes());
        self.answer().expect("an answer")
    }
}

/// The result of `method`, which must succeed.
fn ok(path: &Path, method: &str, params: Value) -> Value {
    let answer = Client::connect(path).call(method, params);
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

/// The error of `method`, which must fail: (code, message).
fn fails(path: &Path, method: &str, params: Value) -> (i64, String) {
    let answer = Client::connect(path).call(method, params);
    let e = &answer["error"];
    assert!(e.is_object(), "{method} should fail: {answer}");
    (
        e["code"].as_i64().unwrap(),
        e["message"].as_str().unwrap().to_owned(),
    )
}

/// Serves `config` from `host` with a control socket of `options` (given
/// its path), runs `body` with the socket path, then stops the server.
fn serving(
    host: &SimHost,
    options: impl FnOnce(PathBuf) -> RpcOptions,
    body: impl FnOnce(&Path, &Logs),
) -> Logs {
    serving_with(host, options, |_| {}, body)
}

/// [`serving`], with the control loop's options changed by `tune`.
fn serving_with(
    host: &SimHost,
    options: impl FnOnce(PathBuf) -> RpcOptions,
    tune: impl FnOnce(&mut RunOptions<'_>) + Send,
    body: impl FnOnce(&Path, &Logs),
) -> Logs {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("rpc.sock");
    let (rpc, requests) = RpcServer::start(options(path.clone())).unwrap();
    let (logs, log) = Logs::new();
    let server = Server::start(
        ServeOptions {
            config: config(),
            state_dir: None,
        },
        host.clone(),
        log,
    )
    .unwrap();
    let signals =
        reactor::ShutdownSignals::install(&server.reactors().iter().collect::<Vec<_>>()).unwrap();
    std::thread::scope(|s| {
        let signals = &signals;
        let runner = s.spawn(move || {
            let mut options = run_options(
                Arc::new(AtomicBool::new(false)),
                Box::new(|_| {}),
                Some(requests),
            );
            tune(&mut options);
            serve::run(server, signals, options)
        });
        // A failing body must still stop the loop, or the scope never ends.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&path, &logs)));
        signals.trigger();
        let drained = runner.join().unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
        assert!(drained, "drained");
    });
    drop(rpc);
    assert!(!path.exists(), "the socket file is removed at stop");
    logs
}

/// Waits until `tcmu_get_devices` lists exactly `names`.
fn wait_for_devices(path: &Path, names: &[&str]) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let devices = ok(path, "tcmu_get_devices", Value::Null);
        let now: Vec<&str> = devices
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        if now == names {
            return devices;
        }
        assert!(Instant::now() < deadline, "devices {now:?}, not {names:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn names(bdevs: &Value) -> Vec<String> {
    bdevs
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_call_wakes_the_idle_control_loop() {
    // Rescans a minute apart and no statistics: each of the loop's waits is
    // its longest, and only a call's wake-up ends one early.
    let host = SimHost::default();
    let waits: Arc<Mutex<Vec<(Duration, bool)>>> = Arc::default();
    let recorded = Arc::clone(&waits);
    let tune = move |options: &mut RunOptions<'_>| {
        options.rescan_interval = Duration::from_secs(60);
        options.wait_event = Box::new(move |timeout, watched| {
            let woken = dataplane::wait::wait_readable(watched, Some(timeout))
                .unwrap()
                .is_some();
            recorded.lock().unwrap().push((timeout, woken));
            false
        });
    };
    let woken = || waits.lock().unwrap().iter().filter(|w| w.1).count();
    serving_with(&host, RpcOptions::new, tune, |path, _| {
        let deadline = Instant::now() + PATIENCE;
        while waits.lock().unwrap().len() < 3 {
            assert!(Instant::now() < deadline, "the loop does not wait");
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = woken();
        ok(path, "rpc_get_methods", Value::Null);
        assert!(woken() > before, "the call did not wake the loop");
    });
    let waits = waits.lock().unwrap();
    assert!(
        waits
            .iter()
            .all(|w| w.0 == dataplane::serve::MAX_WAIT || w.1),
        "an idle loop waits {:?} each time, not less: {waits:?}",
        dataplane::serve::MAX_WAIT
    );
}

/// A hand-off socket whose `accept` keeps failing while it polls readable
/// (as when the process is out of descriptors; here a listener shut down
/// and made blocking, whose `accept` fails with EINVAL at once) is left
/// alone for a while after each failure: the loop goes on waiting instead
/// of turning without a pause and logging the failure at every turn.
#[test]
fn a_failing_hand_off_socket_does_not_spin_the_control_loop() {
    use dataplane::serve::handoff::HandoffListener;
    use std::os::fd::{AsFd, AsRawFd};

    let host = SimHost::default();
    let tmp = tempfile::tempdir().unwrap();
    let listener = HandoffListener::bind(&tmp.path().join("handoff.sock")).unwrap();
    let fd = listener.as_fd().as_raw_fd();
    nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both).unwrap();
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let blocking = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(blocking)).unwrap();
    let waits = Arc::new(Mutex::new(0usize));
    let counted = Arc::clone(&waits);
    let tune = move |options: &mut RunOptions<'_>| {
        options.handoff = Some(listener);
        options.wait_event = Box::new(move |timeout, watched| {
            dataplane::wait::wait_readable(watched, Some(timeout)).unwrap();
            *counted.lock().unwrap() += 1;
            false
        });
    };
    let began = Instant::now();
    let logs = serving_with(&host, RpcOptions::new, tune, |_, _| {
        let deadline = Instant::now() + PATIENCE;
        while *waits.lock().unwrap() < 20 {
            assert!(Instant::now() < deadline, "the loop does not wait");
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let elapsed = began.elapsed();
    let failures = logs.count("hand-off socket");
    assert!(
        failures >= 1,
        "the failing accept was never tried:\n{}",
        logs.dump()
    );
    // At most one try a second (and the first at once), however slow the
    // machine: never one at each of the 20 turns.
    assert!(
        failures as u64 <= 1 + elapsed.as_secs(),
        "{failures} failed accepts in {elapsed:?} ({} waits):\n{}",
        *waits.lock().unwrap(),
        logs.dump()
    );
}

#[test]
fn every_read_only_method_answers() {
    let host = SimHost::default();
    let disk0 = host.add(0, "tcm-user/3/disk0/dataplane/ram0", facts(512, 64 * MIB));
    serving(&host, RpcOptions::new, |path, _| {
        let methods = ok(path, "rpc_get_methods", Value::Null);
        for m in dataplane::serve::rpc::METHODS {
            assert!(methods.as_array().unwrap().contains(&json!(m.0)), "{m:?}");
        }

        let bdevs = ok(path, "bdev_get_bdevs", Value::Null);
        assert_eq!(names(&bdevs), ["c1", "c2", "fast", "ram0", "ram4k"]);
        let ram4k = ok(path, "bdev_get_bdevs", json!({"name": "ram4k"}));
        assert_eq!(ram4k[0]["block_size"], 4096);
        assert_eq!(ram4k[0]["num_blocks"], 8 * MIB / 4096);
        assert_eq!(ram4k[0]["product_name"], "ram");
        assert_eq!(ram4k[0]["supported_io_types"]["read"], true);
        let c1 = ok(path, "bdev_get_bdevs", json!({"name": "c1"}));
        assert_eq!(c1[0]["claimed"], true);
        assert_eq!(c1[0]["claimed_by"], json!(["bdev fast"]));
        let fast = ok(path, "bdev_get_bdevs", json!({"name": "fast"}));
        assert_eq!(
            fast[0]["driver_specific"]["base_bdevs"],
            json!(["c1", "c2"])
        );
        assert_eq!(fast[0]["driver_specific"]["strip_size_bytes"], 65536);

        let devices = wait_for_devices(path, &["disk0"]);
        let d = &devices[0];
        assert_eq!(
            (&d["kind"], &d["hba"], &d["uio"], &d["bdev"], &d["reactor"]),
            (
                &json!("tcmu"),
                &json!(3),
                &json!("uio0"),
                &json!("ram0"),
                &json!(0)
            )
        );
        let ram0 = ok(path, "bdev_get_bdevs", json!({"name": "ram0"}));
        assert_eq!(ram0[0]["claimed_by"], json!(["tcmu disk0"]));

        verified_job(&disk0, 64 * MIB / 512, 512, 400);
        let io = ok(path, "bdev_get_iostat", json!({"name": "ram0"}));
        let ram0 = &io["bdevs"][0];
        assert_eq!(ram0["name"], "ram0");
        assert_eq!(ram0["devices"], json!(["disk0"]));
        assert!(ram0["num_ops"].as_u64().unwrap() >= 400, "{io}");
        assert!(ram0["bytes_read"].as_u64().unwrap() > 0, "{io}");
        assert!(ram0["bytes_written"].as_u64().unwrap() > 0, "{io}");
        let all = ok(path, "bdev_get_iostat", Value::Null);
        assert_eq!(all["bdevs"].as_array().unwrap().len(), 5);
        let d = &ok(path, "tcmu_get_devices", Value::Null)[0];
        assert!(d["commands_total"].as_u64().unwrap() >= 400, "{d}");
        assert!(d["received_total"].as_u64() >= d["commands_total"].as_u64());

        assert_eq!(ok(path, "scst_get_devices", Value::Null), json!([]));

        let reactors = ok(path, "reactor_get_stats", Value::Null);
        let r = &reactors["reactors"][0];
        assert_eq!(r["name"], "reactor0");
        assert_eq!(r["state"], "running");
        assert!(r["iterations"].as_u64().unwrap() > 0, "{r}");
        assert!(!r["pollers"].as_array().unwrap().is_empty(), "{r}");

        let text = ok(path, "server_get_config", Value::Null);
        let back = ServeConfig::parse(text.as_str().unwrap()).unwrap();
        assert_eq!(back, config());
    });
}

#[test]
fn bdevs_created_over_the_socket_serve_and_are_deleted_when_unused() {
    let host = SimHost::default();
    // A device naming a bdev that does not exist yet is refused...
    let late = host.add(0, "tcm-user/0/late/dataplane/rt", facts(512, 16 * MIB));
    let logs = serving(&host, RpcOptions::new, |path, logs| {
        let deadline = Instant::now() + PATIENCE;
        while logs.count("names bdev \"rt\", which is not in the configuration") == 0 {
            assert!(Instant::now() < deadline, "not refused: {}", logs.dump());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(ok(path, "tcmu_get_devices", Value::Null), json!([]));
        // ... until the bdev is created: the next rescan attaches it.
        let made = ok(
            path,
            "bdev_ram_create",
            json!({"name": "rt", "size": "16MiB"}),
        );
        assert_eq!(made, "rt");
        wait_for_devices(path, &["late"]);
        verified_job(&late, 16 * MIB / 512, 512, 500);

        // Creation errors.
        let (c, m) = fails(path, "bdev_ram_create", json!({"name": "rt", "size": 4096}));
        assert_eq!(
            (c, m.as_str()),
            (code::EXISTS, "a bdev named \"rt\" exists already")
        );
        let (c, m) = fails(path, "bdev_ram_create", json!({"name": "x", "size": 1000}));
        assert_eq!(c, code::INVALID_PARAMS);
        assert!(
            m.contains("size: 1000 is not a multiple of block_size 512"),
            "{m}"
        );
        let (c, m) = fails(path, "bdev_null_create", json!({"name": "x"}));
        assert_eq!(c, code::INVALID_PARAMS);
        assert!(
            m.starts_with("size: give exactly one of size and num_blocks"),
            "{m}"
        );
        let (c, m) = fails(
            path,
            "bdev_striped_create",
            json!({"name": "s", "base_bdevs": ["rt", "ram0"], "strip_size_kb": 64}),
        );
        assert_eq!(c, code::BUSY, "a child a device uses: {m}");
        assert!(m.contains("tcmu late"), "{m}");

        // A striped bdev over new bdevs, and a null one by blocks.
        ok(
            path,
            "bdev_ram_create",
            json!({"name": "a", "size": "4MiB"}),
        );
        ok(
            path,
            "bdev_ram_create",
            json!({"name": "b", "num_blocks": 8192}),
        );
        let s = json!({"name": "s", "base_bdevs": ["a", "b"], "chunk": "64KiB"});
        assert_eq!(ok(path, "bdev_striped_create", s), "s");
        let n = json!({"name": "n", "num_blocks": 16, "block_size": 4096});
        ok(path, "bdev_null_create", n);
        let all = ok(path, "bdev_get_bdevs", Value::Null);
        assert_eq!(
            names(&all),
            ["a", "b", "c1", "c2", "fast", "n", "ram0", "ram4k", "rt", "s"]
        );
        let s = &ok(path, "bdev_get_bdevs", json!({"name": "s"}))[0];
        assert_eq!(s["num_blocks"], 16384);
        let config = ok(path, "server_get_config", Value::Null);
        let config = ServeConfig::parse(config.as_str().unwrap()).unwrap();
        assert!(config.bdev("s").is_some() && config.bdev("n").is_some());

        // Deletion: refused while used, then done.
        let (c, m) = fails(path, "bdev_delete", json!({"name": "rt"}));
        assert_eq!(
            (c, m.as_str()),
            (code::BUSY, "bdev \"rt\" is in use by tcmu late")
        );
        let (c, m) = fails(path, "bdev_delete", json!({"name": "a"}));
        assert_eq!(
            (c, m.as_str()),
            (code::BUSY, "bdev \"a\" is in use by bdev s")
        );
        let (c, _) = fails(path, "bdev_delete", json!({"name": "nope"}));
        assert_eq!(c, code::NO_SUCH_DEVICE);
        for name in ["s", "a", "b", "n"] {
            assert_eq!(ok(path, "bdev_delete", json!({"name": name})), true);
        }
        host.remove(0);
        wait_for_devices(path, &[]);
        assert_eq!(ok(path, "bdev_delete", json!({"name": "rt"})), true);
        let all = ok(path, "bdev_get_bdevs", Value::Null);
        assert_eq!(names(&all), ["c1", "c2", "fast", "ram0", "ram4k"]);

        // Made again under the same name, it is a new, zeroed bdev with a
        // poller of its own (the verify model expects zeroes).
        ok(
            path,
            "bdev_ram_create",
            json!({"name": "rt", "size": "16MiB"}),
        );
        let again = host.add(1, "tcm-user/0/again/dataplane/rt", facts(512, 16 * MIB));
        wait_for_devices(path, &["again"]);
        verified_job(&again, 16 * MIB / 512, 512, 500);
    });
    assert_eq!(logs.count("created ram bdev \"rt\""), 2, "{}", logs.dump());
    assert_eq!(logs.count("deleted ram bdev \"rt\""), 1, "{}", logs.dump());
}

#[test]
fn bad_requests_get_errors_and_the_server_keeps_serving() {
    let host = SimHost::default();
    let small = |path| RpcOptions {
        max_message: 4096,
        ..RpcOptions::new(path)
    };
    serving(&host, small, |path, _| {
        // Not JSON: -32700, and the connection is closed.
        let mut c = Client::connect(path);
        c.send(b"{\"jsonrpc\": nope}");
        let a = c.answer().unwrap();
        assert_eq!(a["error"]["code"], code::PARSE_ERROR, "{a}");
        assert_eq!(a["id"], Value::Null);
        assert!(c.closed(), "closed after a parse error");

        let (c, m) = fails(path, "no_such_method", Value::Null);
        assert_eq!(c, code::METHOD_NOT_FOUND);
        assert!(m.contains("\"no_such_method\""), "{m}");
        let (c, m) = fails(path, "bdev_get_bdevs", json!({"name": 5}));
        assert_eq!(
            (c, m.as_str()),
            (
                code::INVALID_PARAMS,
                "name: expected a string, got a number"
            )
        );
        let (c, m) = fails(path, "bdev_get_bdevs", json!({"nmae": "x"}));
        assert_eq!(
            (c, m.as_str()),
            (
                code::INVALID_PARAMS,
                "nmae: unknown parameter of bdev_get_bdevs"
            )
        );
        let (c, m) = fails(path, "bdev_ram_create", json!({"size": "1MiB"}));
        assert_eq!((c, m.as_str()), (code::INVALID_PARAMS, "name: missing"));
        let (c, m) = fails(path, "bdev_ram_create", json!({"name": "x", "size": true}));
        assert_eq!(c, code::INVALID_PARAMS);
        assert!(m.starts_with("size: expected a byte count"), "{m}");
        let (c, _) = fails(path, "bdev_get_bdevs", json!({"name": "nope"}));
        assert_eq!(c, code::NO_SUCH_DEVICE);

        // Not a request object; a batch.
        let mut c = Client::connect(path);
        c.send(b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rpc_get_methods\"}]");
        let a = c.answer().unwrap();
        assert_eq!(a["error"]["code"], code::INVALID_REQUEST, "{a}");
        c.send(b"{\"id\":2,\"method\":\"rpc_get_methods\"}");
        let a = c.answer().unwrap();
        assert_eq!(
            (&a["id"], &a["error"]["code"]),
            (&json!(2), &json!(code::INVALID_REQUEST))
        );

        // Oversize: an error, and the connection is closed.
        let mut c = Client::connect(path);
        let big = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"bdev_get_bdevs\",\"params\":{{\"name\":\"{}\"}}}}",
            "x".repeat(8192)
        );
        c.send(big.as_bytes());
        let a = c.answer().unwrap();
        assert_eq!(a["error"]["code"], code::INVALID_REQUEST, "{a}");
        assert!(a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 4096 bytes"));
        assert!(c.closed(), "closed after an oversize request");

        // SPDK's framing: objects back to back in one write, no newline; a
        // notification (no id) gets no answer; newline-delimited works too.
        let mut c = Client::connect(path);
        c.send(
            b"{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"rpc_get_methods\"}\
              {\"jsonrpc\":\"2.0\",\"method\":\"rpc_get_methods\"}\
              {\"jsonrpc\":\"2.0\",\"id\":\"b\",\"method\":\"scst_get_devices\"}\n\
              {\"jsonrpc\":\"2.0\",\"id\":\"c\",\"method\":\"scst_get_devices\"}\n",
        );
        for id in ["a", "b", "c"] {
            let a = c.answer().unwrap();
            assert_eq!(a["id"], id, "{a}");
            assert!(a.get("result").is_some(), "{a}");
        }
        // The server still serves.
        assert_eq!(names(&ok(path, "bdev_get_bdevs", Value::Null)).len(), 5);
    });
}

#[test]
fn concurrent_clients_are_served_while_a_silent_one_is_dropped() {
    let host = SimHost::default();
    let short = |path| RpcOptions {
        client_timeout: Duration::from_millis(300),
        ..RpcOptions::new(path)
    };
    serving(&host, short, |path, _| {
        let mut silent = UnixStream::connect(path).unwrap();
        silent.set_read_timeout(Some(PATIENCE)).unwrap();
        std::thread::scope(|s| {
            let clients: Vec<_> = (0..8)
                .map(|i| {
                    s.spawn(move || {
                        // One connection, many requests.
                        let mut c = Client::connect(path);
                        for _ in 0..20 {
                            let a = c.call("bdev_get_bdevs", json!({"name": "ram0"}));
                            assert_eq!(a["result"][0]["name"], "ram0", "client {i}: {a}");
                        }
                    })
                })
                .collect();
            for c in clients {
                c.join().unwrap();
            }
        });
        // The silent client is closed by the server (end of stream).
        let mut buf = [0u8; 64];
        let n = silent.read(&mut buf).unwrap();
        assert_eq!(n, 0, "dropped without an answer");
        assert_eq!(names(&ok(path, "bdev_get_bdevs", Value::Null)).len(), 5);
    });
}

#[test]
fn a_live_socket_is_refused_a_stale_one_replaced_and_a_file_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("run").join("rpc.sock");
    let (first, _requests) = RpcServer::start(RpcOptions::new(&path)).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    match RpcServer::start(RpcOptions::new(&path)) {
        Err(SocketError::InUse { path: p }) => assert_eq!(p, path),
        other => panic!("a live server's socket was taken: {other:?}"),
    }
    assert!(path.exists(), "the live server's socket is left alone");
    drop(first);
    assert!(!path.exists());

    // A socket nobody listens on (its server died) is replaced.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let (second, _requests) = RpcServer::start(RpcOptions::new(&path)).unwrap();
    UnixStream::connect(&path).expect("the new server listens");
    drop(second);

    // Something else at the path is not touched.
    std::fs::write(&path, b"keep me").unwrap();
    match RpcServer::start(RpcOptions::new(&path)) {
        Err(e @ SocketError::NotASocket { .. }) => {
            assert!(e.to_string().contains("not a socket"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

#[test]
fn a_client_over_the_limit_is_told_so() {
    let host = SimHost::default();
    let one = |path| RpcOptions {
        max_clients: 1,
        ..RpcOptions::new(path)
    };
    serving(&host, one, |path, _| {
        let mut first = Client::connect(path);
        assert!(first
            .call("rpc_get_methods", Value::Null)
            .get("result")
            .is_some());
        // The first client is still connected: the next one is refused.
        let mut second = Client::connect(path);
        let a = second.answer().unwrap();
        assert_eq!(a["error"]["code"], code::INTERNAL_ERROR, "{a}");
        assert!(a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many clients (at most 1)"));
        assert!(second.closed());
        // Once the first one leaves, others are served again.
        drop(first);
        let deadline = Instant::now() + PATIENCE;
        loop {
            // While the slot is still taken, the server may close before
            // the request is written: a failed write is a refusal too.
            let mut c = Client::connect(path);
            let request = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rpc_get_methods\"}";
            let sent = c.stream.write_all(request).is_ok();
            if sent && matches!(c.answers.next(), Some(Ok(a)) if a.get("result").is_some()) {
                break;
            }
            assert!(Instant::now() < deadline, "still refused");
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

#[test]
fn a_file_bdev_created_over_the_socket_serves_with_verify() {
    if !test_support::skip::can_run(&[test_support::skip::Need::IoUring]) {
        return;
    }
    let dir = test_support::scratch::disk_dir("serve-rpc-file-");
    let img = dir.path().join("f.img").display().to_string();
    let missing = dir.path().join("missing.img").display().to_string();
    let host = SimHost::default();
    serving(&host, RpcOptions::new, |path, _| {
        // Nothing at the path and no size: refused, not left out.
        let (c, m) = fails(
            path,
            "bdev_file_create",
            json!({"name": "f", "path": missing}),
        );
        assert_eq!(c, code::INVALID);
        assert!(m.contains(&missing), "{m}");
        let (c, m) = fails(
            path,
            "bdev_file_create",
            json!({"name": "f", "path": img, "direct": "yes"}),
        );
        assert_eq!(
            (c, m.as_str()),
            (
                code::INVALID_PARAMS,
                "direct: expected true or false, got a string"
            )
        );
        assert!(!names(&ok(path, "bdev_get_bdevs", Value::Null)).contains(&"f".to_owned()));

        let made = ok(
            path,
            "bdev_file_create",
            json!({"name": "f", "path": img, "size": "16MiB", "queue_depth": 32}),
        );
        assert_eq!(made, "f");
        let f = &ok(path, "bdev_get_bdevs", json!({"name": "f"}))[0];
        assert_eq!(
            (&f["product_name"], &f["num_blocks"]),
            (&json!("file"), &json!(32768))
        );
        let disk = host.add(0, "tcm-user/0/fdisk/dataplane/f", facts(512, 16 * MIB));
        wait_for_devices(path, &["fdisk"]);
        verified_job(&disk, 16 * MIB / 512, 512, 500);
        let io = ok(path, "bdev_get_iostat", json!({"name": "f"}));
        assert!(io["bdevs"][0]["num_ops"].as_u64().unwrap() >= 500, "{io}");
        host.remove(0);
        wait_for_devices(path, &[]);
        assert_eq!(ok(path, "bdev_delete", json!({"name": "f"})), true);
    });
}

#[test]
fn an_rbd_bdev_created_over_the_socket_serves_with_verify() {
    let Some(cluster) = test_support::ceph::cluster() else {
        return;
    };
    let image = cluster.create_image("serve_rpc", 16 * MIB);
    let conf = cluster.conf().display().to_string();
    let host = SimHost::default();
    serving(&host, RpcOptions::new, |path, logs| {
        // A missing image: refused, naming it; a wrong type named.
        let (c, m) = fails(
            path,
            "bdev_rbd_create",
            json!({"name": "r", "pool_name": image.pool(), "rbd_name": "no-such-image", "conf": conf}),
        );
        assert_eq!(c, code::INVALID);
        assert!(
            m.contains("rbd/no-such-image") && m.contains("does not exist"),
            "{m}"
        );
        let (c, m) = fails(
            path,
            "bdev_rbd_create",
            json!({"name": "r", "pool_name": image.pool(), "rbd_name": image.name(), "block_size": "4k"}),
        );
        assert_eq!(c, code::INVALID_PARAMS);
        assert!(m.contains("block_size"), "{m}");

        let made = ok(
            path,
            "bdev_rbd_create",
            json!({
                "name": "r",
                "pool_name": image.pool(),
                "rbd_name": image.name(),
                "conf": conf,
                "op_timeout_secs": 20,
                "config": {"rbd_cache": "true"},
            }),
        );
        assert_eq!(made, "r");
        assert_eq!(logs.count("bdev r: rbd:rbd/"), 1, "{}", logs.dump());
        let r = &ok(path, "bdev_get_bdevs", json!({"name": "r"}))[0];
        assert_eq!(
            (&r["product_name"], &r["num_blocks"]),
            (&json!("rbd"), &json!(16 * MIB / 512))
        );
        let disk = host.add(0, "tcm-user/0/rdisk/dataplane/r", facts(512, 16 * MIB));
        wait_for_devices(path, &["rdisk"]);
        verified_job(&disk, 16 * MIB / 512, 512, 500);
        let io = ok(path, "bdev_get_iostat", json!({"name": "r"}));
        assert!(io["bdevs"][0]["num_ops"].as_u64().unwrap() >= 500, "{io}");
        host.remove(0);
        wait_for_devices(path, &[]);
        assert_eq!(ok(path, "bdev_delete", json!({"name": "r"})), true);
    });
}

#[test]
fn a_successor_waits_for_the_socket_of_a_server_that_is_exiting() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("rpc.sock");
    let (first, _requests) = RpcServer::start(RpcOptions::new(&path)).unwrap();
    // Without patience a live server's socket is refused at once.
    assert!(matches!(
        RpcServer::start_waiting(RpcOptions::new(&path), Duration::ZERO),
        Err(SocketError::InUse { .. })
    ));
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(first); // the predecessor exits
        });
        let (second, _requests) =
            RpcServer::start_waiting(RpcOptions::new(&path), PATIENCE).unwrap();
        assert_eq!(second.path(), path);
        UnixStream::connect(&path).expect("the successor listens");
    });
}

/// `scst_device_add` takes the keys of an `[[scst]]` entry, checked by the
/// configuration's own parser; on this host (no scst_user) the
/// registration fails with an error naming the device, and nothing is
/// added. `scst_device_remove` of an unknown device is -19.
#[test]
fn scst_devices_over_the_socket_are_checked_and_their_failures_named() {
    let host = SimHost::default();
    serving(&host, RpcOptions::new, |path, _| {
        let (c, m) = fails(
            path,
            "scst_device_add",
            json!({"name": "d0", "bdev": "ram0", "colour": "blue"}),
        );
        assert_eq!(c, code::INVALID_PARAMS);
        assert!(m.contains("colour"), "{m}");
        let (c, m) = fails(
            path,
            "scst_device_add",
            json!({"name": "d0", "bdev": "nope"}),
        );
        assert_eq!(c, code::INVALID_PARAMS);
        assert!(m.contains("nope"), "{m}");
        let (c, m) = fails(
            path,
            "scst_device_add",
            json!({"name": "d0", "bdev": "ram0"}),
        );
        assert_eq!(c, code::INVALID);
        assert!(m.contains("\"d0\"") && m.contains("no SCST here"), "{m}");
        assert_eq!(ok(path, "scst_get_devices", Value::Null), json!([]));
        let (c, _) = fails(path, "scst_device_remove", json!({"name": "d0"}));
        assert_eq!(c, code::NO_SUCH_DEVICE);
    });
}

/// `log_set_level` needs the logger the binary hands the socket: without
/// one the call is refused (-22) and says so; a missing level is -32602.
#[test]
fn log_set_level_without_a_logger_is_refused() {
    let host = SimHost::default();
    serving(&host, RpcOptions::new, |path, _| {
        let (c, m) = fails(path, "log_set_level", json!({"level": "debug"}));
        assert_eq!(c, code::INVALID);
        assert!(m.contains("log level cannot be changed"), "{m}");
        let (c, m) = fails(path, "log_set_level", json!({}));
        assert_eq!(c, code::INVALID_PARAMS);
        assert!(m.starts_with("level"), "{m}");
    });
}
