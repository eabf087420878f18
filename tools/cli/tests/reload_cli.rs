//! `dataplane serve` reloads its configuration file on SIGHUP: a valid
//! change is applied (a bdev made, logged), a file that does not load is
//! refused with its error while the server keeps serving, and SIGTERM
//! still stops it cleanly.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod support;

/// Generous: the machine may be busy with other builds.
const DEADLINE: Duration = Duration::from_secs(60);

/// Waits for a stderr line containing `what`; returns it.
fn line_with(lines: &mpsc::Receiver<String>, what: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no line with {what:?}: {e}"));
        if line.contains(what) {
            return line;
        }
    }
}

#[test]
fn sighup_applies_a_valid_file_and_refuses_a_bad_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(support::serve_args(tmp.path(), support::WITH_RAM))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let pid = Pid::from_raw(child.id() as i32);
    line_with(&lines, "serving");
    let file = tmp.path().join("serve.toml");

    let grown = format!(
        "{}\n[[bdev]]\nname = \"ram1\"\ntype = \"null\"\nsize = \"8MiB\"\n",
        support::WITH_RAM
    );
    std::fs::write(&file, grown).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    let done = line_with(&lines, "reloaded");
    assert!(done.contains("reloaded: bdevs made: ram1"), "{done}");

    std::fs::write(&file, "[reactors]\ncores = [0]\n[[bdev]]\nname = \"x\"\n").unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    let refused = line_with(&lines, "reload refused");
    assert!(
        refused.contains("reload refused") && refused.contains("the running configuration stays"),
        "{refused}"
    );
    assert!(child.try_wait().unwrap().is_none(), "serve keeps running");

    kill(pid, Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");
}
