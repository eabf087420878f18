//! Logs of `dataplane serve`: `--log-format json` writes one JSON object
//! per line with a level and a message; `--log-level` and `DATAPLANE_LOG`
//! filter by level; a bad level is refused with its name.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

mod support;

/// Runs serve (a RAM bdev, no TCMU nor SCST on the host) with `args` until
/// its first statistics report, then stops it with SIGTERM; returns its
/// stderr lines.
fn serve_logs(args: &[&str], env: Option<(&str, &str)>) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_dataplane"));
    command
        .args(args)
        .args(support::serve_args(tmp.path(), support::WITH_RAM))
        .args(["--stats-json", "--stats-interval", "0.2"])
        .env_remove("DATAPLANE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((key, value)) = env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    // The first report on stdout: serve is up and has logged its start.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with('{'), "a statistics report: {first:?}");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    // Drain stdout so serve never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr.lines().map(str::to_owned).collect()
}

fn json_lines(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line:?}"));
            assert!(v.is_object(), "{line:?}");
            assert!(v["level"].is_string(), "no level: {line:?}");
            assert!(v["message"].is_string(), "no message: {line:?}");
            assert!(v["timestamp"].is_string(), "no timestamp: {line:?}");
            v
        })
        .collect()
}

#[test]
fn json_logs_are_one_object_per_line_with_level_and_message() {
    let events = json_lines(&serve_logs(&["--log-format", "json"], None));
    let serving = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("serving TCMU subtype")
        })
        .expect("the start is logged");
    assert_eq!(serving["level"], "INFO");
    assert_eq!(serving["target"], "dataplane serve");
    assert!(events
        .iter()
        .any(|e| e["message"] == "all devices drained; exiting"));
}

#[test]
fn the_level_filter_comes_from_the_flag_or_the_environment() {
    let has_info = |lines: &[String]| lines.iter().any(|l| l.contains(" INFO "));
    let text = serve_logs(&[], None);
    assert!(
        text.iter()
            .any(|l| l.contains(" INFO dataplane serve: serving TCMU subtype")),
        "{text:?}"
    );
    assert!(!has_info(&serve_logs(&["--log-level", "warn"], None)));
    assert!(!has_info(&serve_logs(
        &[],
        Some(("DATAPLANE_LOG", "error"))
    )));
    // The flag wins over the environment.
    assert!(has_info(&serve_logs(
        &["--log-level", "info"],
        Some(("DATAPLANE_LOG", "error"))
    )));
    let events = json_lines(&serve_logs(
        &["--log-format", "json", "--log-level", "debug"],
        None,
    ));
    assert!(events.iter().any(|e| e["level"] == "INFO"));
}

#[test]
fn a_bad_level_is_refused_with_its_name() {
    for (args, env, want) in [
        (
            &["--log-level", "loud"][..],
            None,
            "--log-level \"loud\": not a log level",
        ),
        (
            &[][..],
            Some("x=lots"),
            "DATAPLANE_LOG \"x=lots\": not a log level",
        ),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dataplane"));
        command.args(args).args(["lio", "list"]);
        command.env_remove("DATAPLANE_LOG");
        if let Some(value) = env {
            command.env("DATAPLANE_LOG", value);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
