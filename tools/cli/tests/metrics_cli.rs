//! The metrics endpoint over real TCP: `dataplane bench --metrics-listen`
//! scraped twice while it runs (counters rise, every line is the
//! OpenMetrics text format), bad requests answered without disturbing it,
//! and `dataplane serve --metrics-listen` on a host without TCMU or SCST.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod support;

/// Generous: the machine may be busy with other builds.
const DEADLINE: Duration = Duration::from_secs(60);

/// Kills the child when dropped (a failed assertion must not leave a bench
/// spinning).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the child's stderr on a thread, line by line, into a channel
/// (to its end).
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even once nobody listens, so the child never
        // blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits for the line that gives the metrics address.
fn metrics_address(lines: &mpsc::Receiver<String>) -> SocketAddr {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("the metrics address is logged");
        if let Some(rest) = line.split("metrics at http://").nth(1) {
            let addr = rest.split("/metrics").next().unwrap();
            return addr.parse().unwrap();
        }
    }
}

/// Starts `command` (a serve or bench listening for metrics) and waits
/// for the address it logs; the child is killed when the guard drops.
fn listening(command: &mut Command) -> (Running, SocketAddr) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let running = Running(child);
    let addr = metrics_address(&lines);
    (running, addr)
}

/// Sends `request` and returns the whole answer (status line, headers,
/// body).
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// GET /metrics: the body of a 200 answer.
fn scrape(addr: SocketAddr) -> String {
    let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}\r\n", body.len())),
        "{head}"
    );
    body.to_owned()
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_value(s: &str) -> bool {
    matches!(s, "+Inf" | "-Inf" | "NaN") || s.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Parses `{k="v",...}`; returns the labels or why not.
fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let inner = s
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or("labels not in braces")?;
    let mut labels = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        if !is_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err("bad escape".into()),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(labels)
}

/// A sample: its name, labels and value.
type Sample = (String, Vec<(String, String)>, f64);

/// Checks every line of `text` against the OpenMetrics text format
/// (descriptors, samples of the family last described, `# EOF` last) and
/// returns the samples.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    assert!(text.ends_with('\n'));
    let mut family: Option<(String, String)> = None;
    let mut samples = Vec::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, text) = (parts.next(), parts.next(), parts.next());
            let name = name.unwrap_or_default();
            assert!(is_name(name), "bad family name in {line:?}");
            match kind {
                Some("HELP") => assert!(text.is_some(), "{line:?}"),
                Some("TYPE") => {
                    let t = text.unwrap_or_default();
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "info",
                            "summary",
                            "unknown"
                        ]
                        .contains(&t),
                        "{line:?}"
                    );
                    family = Some((name.to_owned(), t.to_owned()));
                }
                Some("UNIT") => assert!(
                    name.ends_with(&format!("_{}", text.unwrap_or("?"))),
                    "{line:?}"
                ),
                _ => panic!("unknown descriptor {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        assert!(is_value(value), "bad value in {line:?}");
        let (name, labels) = match series.find('{') {
            Some(i) => (
                &series[..i],
                parse_labels(&series[i..]).unwrap_or_else(|e| panic!("{e}: {line:?}")),
            ),
            None => (series, Vec::new()),
        };
        assert!(is_name(name), "bad metric name in {line:?}");
        let (family_name, kind) = family
            .as_ref()
            .unwrap_or_else(|| panic!("sample before any TYPE: {line:?}"));
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        assert!(
            suffixes
                .iter()
                .any(|s| name.strip_suffix(s) == Some(family_name.as_str())),
            "{name} is not a sample of {family_name} ({kind})"
        );
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or(f64::NAN),
        };
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

/// The value of the sample `name` whose labels include `label`.
fn value(samples: &[Sample], name: &str, label: (&str, &str)) -> Option<f64> {
    samples
        .iter()
        .find(|(n, labels, _)| {
            n == name && labels.iter().any(|(k, v)| k == label.0 && v == label.1)
        })
        .map(|s| s.2)
}

#[test]
fn the_parser_refuses_what_is_not_the_format() {
    let ok = "# HELP x_total a\n# TYPE x counter\nx_total{a=\"b\\\"c\"} 1\n# EOF\n";
    assert_eq!(parse_exposition(ok)[0].1, [("a".into(), "b\"c".into())]);
    for bad in [
        "# TYPE x counter\nx_total 1\n",             // no EOF
        "# TYPE x counter\nx_total one\n# EOF\n",    // bad value
        "# TYPE x counter\ny_total 1\n# EOF\n",      // another family
        "# TYPE x counter\nx_total{a=b} 1\n# EOF\n", // unquoted label
        "x 1\n# EOF\n",                              // no TYPE
        "# TYPE x gauge\nx{a=\"1\" 1\n# EOF\n",      // open brace
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_exposition(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
}

#[test]
fn bench_metrics_rise_while_it_runs_and_bad_requests_do_not_disturb() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dataplane"));
    command
        .args([
            "bench",
            "--bdev",
            "null",
            "--size",
            "16MiB",
            "--iodepth",
            "4",
            "--ramp",
            "0",
            // Killed once the test is done; long enough for a slow host.
            "--runtime",
            "120",
            "--idle",
            "adaptive",
            "--quiet",
        ])
        .args(["--metrics-listen", "127.0.0.1:0"]);
    let (_running, addr) = listening(&mut command);

    let completed = |samples: &[Sample]| {
        value(
            samples,
            "dataplane_device_commands_completed_total",
            ("device", "bench0"),
        )
    };
    // The first scrape that sees the device complete commands...
    let deadline = Instant::now() + DEADLINE;
    let first = loop {
        let samples = parse_exposition(&scrape(addr));
        if completed(&samples).is_some_and(|c| c > 0.0) {
            break samples;
        }
        assert!(Instant::now() < deadline, "no command completed");
        std::thread::sleep(Duration::from_millis(100));
    };
    let labels = &first
        .iter()
        .find(|s| s.0 == "dataplane_device_commands_completed_total")
        .unwrap()
        .1;
    assert!(
        labels.contains(&("frontend".into(), "tcmu".into())),
        "{labels:?}"
    );
    assert!(
        labels.contains(&("bdev".into(), "null0".into())),
        "{labels:?}"
    );

    // ...then bad requests, each answered or dropped...
    let answer = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
    let answer = exchange(addr, b"GET /other HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    let answer = exchange(addr, b"not http at all\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let mut oversize = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    oversize.resize(64 * 1024, b'a');
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    // The server may close before taking it all: a write error is fine.
    let _ = stream.write_all(&oversize);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
        "{answer}"
    );
    // A client that connects and says nothing, held open meanwhile.
    let silent = TcpStream::connect(addr).unwrap();

    // ...and a later scrape sees the counters risen.
    let deadline = Instant::now() + DEADLINE;
    let before = completed(&first).unwrap();
    let second = loop {
        let samples = parse_exposition(&scrape(addr));
        if completed(&samples).unwrap() > before {
            break samples;
        }
        assert!(Instant::now() < deadline, "counters did not rise");
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(silent);
    for name in [
        "dataplane_device_commands_received_total",
        "dataplane_device_data_bytes_total",
        "dataplane_device_doorbells_total",
        "dataplane_device_latency_seconds_count",
    ] {
        let (a, b) = (
            value(&first, name, ("device", "bench0")).unwrap(),
            value(&second, name, ("device", "bench0")).unwrap(),
        );
        assert!(b >= a && b > 0.0, "{name}: {a} then {b}");
    }
    // The LUN's figures: reads (the bench's default pattern) and GOOD
    // responses rise, no errors by any sense key, every bdev has a depth.
    let of = |s: &[Sample], name: &str, label: (&str, &str)| {
        s.iter()
            .find(|(n, labels, _)| {
                n == name
                    && labels.contains(&("device".into(), "bench0".into()))
                    && labels.contains(&(label.0.into(), label.1.into()))
            })
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("no {name} with {label:?}"))
    };
    for (name, label) in [
        ("dataplane_device_commands_total", ("op", "read")),
        ("dataplane_device_responses_total", ("status", "GOOD")),
    ] {
        let (a, b) = (of(&first, name, label), of(&second, name, label));
        assert!(b > a && a > 0.0, "{name} {label:?}: {a} then {b}");
    }
    assert_eq!(
        of(&second, "dataplane_device_commands_total", ("op", "write")),
        0.0
    );
    let errors: f64 = second
        .iter()
        .filter(|s| s.0 == "dataplane_device_errors_total")
        .map(|s| s.2)
        .sum();
    assert_eq!(errors, 0.0);
    assert!(
        value(&second, "dataplane_bdev_queue_depth", ("bdev", "null0")).is_some(),
        "no queue depth for null0"
    );
    let busy = |s: &[Sample]| {
        value(
            s,
            "dataplane_reactor_busy_seconds_total",
            ("reactor", "reactor0"),
        )
        .unwrap()
    };
    assert!(busy(&second) >= busy(&first) && busy(&second) > 0.0);
    // The latency histogram's buckets grow to its count at +Inf.
    let buckets: Vec<f64> = second
        .iter()
        .filter(|s| s.0 == "dataplane_device_latency_seconds_bucket")
        .map(|s| s.2)
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(
        buckets.last().copied(),
        value(
            &second,
            "dataplane_device_latency_seconds_count",
            ("device", "bench0")
        )
    );
    assert_eq!(
        value(&second, "dataplane_bdev_info", ("bdev", "null0")),
        Some(1.0)
    );
}

#[test]
fn serve_exports_metrics_without_kernel_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_dataplane"));
    command
        .args(support::serve_args(tmp.path(), support::WITH_RAM))
        .args(["--metrics-listen", "127.0.0.1:0"]);
    let (_running, addr) = listening(&mut command);
    let samples = parse_exposition(&scrape(addr));
    assert_eq!(
        value(&samples, "dataplane_bdev_info", ("bdev", "ram0")),
        Some(1.0)
    );
    assert!(
        value(
            &samples,
            "dataplane_reactor_iterations_total",
            ("reactor", "reactor0")
        )
        .is_some(),
        "{samples:?}"
    );
    // Every family is described even with no device.
    let text = scrape(addr);
    assert!(text.contains("# TYPE dataplane_device_latency_seconds histogram\n"));
}

#[test]
fn a_bad_listen_address_is_refused_before_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(support::serve_args(tmp.path(), support::BARE))
        .args(["--metrics-listen", "nowhere"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--metrics-listen \"nowhere\": not an address to listen on"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Stopping serve with its metrics endpoint does not depend on reaching
/// that endpoint: in a network namespace whose loopback is down (the VM
/// test's guest before it brings `lo` up), SIGTERM still ends serve at once.
#[test]
fn serve_with_metrics_stops_when_loopback_is_down() {
    use test_support::skip::{can_run, report, Need};
    if !can_run(&[Need::Root, Need::Tool("unshare")]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new("unshare")
        .arg("-n")
        .arg(env!("CARGO_BIN_EXE_dataplane"))
        .args(support::serve_args(tmp.path(), support::BARE))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            // Logged once the signal handlers are in place (the metrics
            // address comes before them).
            Ok(line) if line.contains("serving TCMU subtype") => break,
            Ok(line) if line.starts_with("unshare:") => {
                // A container may refuse new namespaces even to root.
                report(Need::Privilege("unshare -n (a network namespace)"));
                let _ = child.wait();
                return;
            }
            Ok(_) => {}
            Err(e) => panic!("serve never started: {e}"),
        }
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let stop_by = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > stop_by {
            let _ = child.kill();
            panic!("serve did not exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "serve exited with {status}");
}
