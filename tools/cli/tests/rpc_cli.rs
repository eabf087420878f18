//! `dataplane rpc` against a running `dataplane serve` with no devices and
//! no TCMU or SCST on the host: bdevs created, listed and deleted over the
//! control socket, errors printed with exit status 1, a second server on
//! the same socket refused, the socket removed at exit.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn rpc(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .arg("rpc")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_server_without_devices_is_driven_over_its_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("empty.toml");
    std::fs::write(&config, "[reactors]\ncores = [0]\n").unwrap();
    let socket = tmp.path().join("rpc.sock");
    let serve = |socket: &Path| {
        Command::new(env!("CARGO_BIN_EXE_dataplane"))
            .args(["serve", "--no-netlink", "--state-dir", "none"])
            .arg("--config")
            .arg(&config)
            .arg("--rpc-socket")
            .arg(socket)
            .args(["--sysfs-root", tmp.path().to_str().unwrap()])
            .args(["--configfs-root", tmp.path().to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let child = serve(&socket);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rpc(&socket, &["rpc_get_methods"]).status.success() {
        assert!(Instant::now() < deadline, "the socket never answered");
        std::thread::sleep(Duration::from_millis(20));
    }

    let made = rpc(&socket, &["bdev_ram_create", "name=r0", "size=4MiB"]);
    assert_eq!(stdout(&made), "r0\n");
    let made = rpc(&socket, &["bdev_null_create", "name=n0", "num_blocks=64"]);
    assert_eq!(stdout(&made), "n0\n");
    let bdevs: serde_json::Value =
        serde_json::from_str(&stdout(&rpc(&socket, &["bdev_get_bdevs", "name=r0"]))).unwrap();
    assert_eq!(bdevs[0]["num_blocks"], 8192);
    let config_text = stdout(&rpc(&socket, &["server_get_config"]));
    assert!(config_text.contains("name = \"r0\""), "{config_text}");
    assert_eq!(stdout(&rpc(&socket, &["bdev_delete", "name=n0"])), "true\n");

    let refused = rpc(&socket, &["bdev_delete", "name=nope"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("bdev_delete failed: no bdev named \"nope\" (code -19)"),
        "{err}"
    );
    let refused = rpc(&socket, &["bdev_ram_create", "name=x", "size=lots"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("size: "));
    let refused = rpc(&socket, &["no_such_method"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("(code -32601)"));

    // The log filter, changed while serving.
    assert_eq!(
        stdout(&rpc(&socket, &["log_set_level", "level=debug"])),
        "debug\n"
    );
    let refused = rpc(&socket, &["log_set_level", "level=loud"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("level") && err.contains("(code -32602)"),
        "{err}"
    );

    // A second server on the live socket is refused.
    let second = serve(&socket).wait_with_output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("a server is already listening"), "{err}");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("control socket"), "{err}");
    assert!(!socket.exists(), "the socket is removed at exit");

    // Without a server, the client says so.
    let none = rpc(&socket, &["rpc_get_methods"]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("connecting to"));
}
