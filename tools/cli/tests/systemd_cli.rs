//! `dataplane serve` under systemd's notification protocol: with
//! `$NOTIFY_SOCKET` (a datagram socket of the test's) it sends `READY=1`
//! with a `STATUS=` line, `WATCHDOG=1` while it serves (`$WATCHDOG_USEC`),
//! and `STOPPING=1` on SIGTERM, then exits 0. Runs anywhere: a host without
//! TCMU or SCST serves no device but still starts.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod support;

/// Generous: the machine may be busy with other builds.
const DEADLINE: Duration = Duration::from_secs(60);

/// Receives notifications until one contains `what`; returns all received.
fn until(socket: &UnixDatagram, what: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + DEADLINE;
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m| m.lines().any(|l| l == what)) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {what} among {seen:?}");
        socket.set_read_timeout(Some(left)).unwrap();
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}; got {seen:?}"));
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

#[test]
fn serve_tells_systemd_ready_watchdog_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    // systemd names the pid it expects pings from: the shell's, which
    // `exec` hands to serve.
    let mut child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_dataplane"))
        .args(support::serve_args(tmp.path(), support::BARE))
        .arg("--fd-store")
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    until(&socket, "READY=1", &mut seen);
    let ready = seen.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=serving")),
        "READY=1 comes with a status: {ready:?}"
    );
    until(&socket, "WATCHDOG=1", &mut seen);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    until(&socket, "STOPPING=1", &mut seen);
    let status = child.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");
    // No SCST device here: nothing to store.
    assert!(!seen.iter().any(|m| m.contains("FDSTORE")), "{seen:?}");
}

#[test]
fn fd_store_needs_a_service_manager() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(support::serve_args(tmp.path(), support::BARE))
        .arg("--fd-store")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--fd-store") && stderr.contains("NOTIFY_SOCKET"),
        "{stderr}"
    );
}

/// An fd the service manager passes as `scst-disk0` is taken over for the
/// `[[scst]]` device disk0 instead of registering it: here it is a plain
/// file, not `/dev/scst_user`, so the start fails naming the device (on a
/// real host it is the registered device, served at once).
#[test]
fn a_stored_fd_is_taken_over_for_its_device() {
    let tmp = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n[[scst]]\nname = \"disk0\"\nbdev = \"ram0\"\n",
        support::WITH_RAM
    );
    let stored = tmp.path().join("stored");
    std::fs::write(&stored, b"").unwrap();
    // LISTEN_PID must be serve's pid: the shell's, which exec keeps.
    let out = Command::new("sh")
        .args([
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=scst-disk0 exec \"$0\" \"$@\" 3<\"$STORED\"",
        ])
        .arg(env!("CARGO_BIN_EXE_dataplane"))
        .args(support::serve_args(tmp.path(), &config))
        .env("STORED", &stored)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("taking over SCST device(s) [\"scst-disk0\"]"),
        "{stderr}"
    );
    assert!(stderr.contains("disk0"), "{stderr}");
    assert!(
        !stderr.contains("DEV_USER_VERSION") && !stderr.contains("scst_user is not loaded"),
        "no registration was tried: {stderr}"
    );
}

#[test]
fn without_notify_socket_nothing_is_sent_and_serve_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(support::serve_args(tmp.path(), support::BARE))
        .env_remove("NOTIFY_SOCKET")
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Serving (its signal handlers in place): then SIGTERM.
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("serving TCMU subtype"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        seen.push(lines.recv_timeout(left).expect("serve says it serves"));
    }
    assert!(child.try_wait().unwrap().is_none(), "serve keeps running");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    seen.extend(lines.iter());
    let stderr = seen.join("\n");
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("systemd notification failed"), "{stderr}");
}
