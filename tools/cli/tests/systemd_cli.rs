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
    let config = tmp.path().join("serve.toml");
    std::fs::write(&config, "[reactors]\ncores = [0]\n").unwrap();
    let path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    // systemd names the pid it expects pings from: the shell's, which
    // `exec` hands to serve.
    let mut child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_dataplane"))
        .args(["serve", "--no-netlink", "--state-dir", "none", "--config"])
        .arg(&config)
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
}

#[test]
fn without_notify_socket_nothing_is_sent_and_serve_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("serve.toml");
    std::fs::write(&config, "[reactors]\ncores = [0]\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(["serve", "--no-netlink", "--state-dir", "none", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "serve keeps running");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("systemd notification failed"), "{stderr}");
}
