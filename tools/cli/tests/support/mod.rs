//! What the CLI's integration tests share: `dataplane serve` on a host
//! without TCMU or SCST. (Each test file includes this module and uses part
//! of it.)
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::Path;

/// One reactor on CPU 0, nothing else.
pub const BARE: &str = "[reactors]\ncores = [0]\n";

/// One adaptive reactor on CPU 0 and a 4 MiB RAM bdev `ram0`.
pub const WITH_RAM: &str = "[reactors]\ncores = [0]\nidle = \"adaptive\"\n\
     [[bdev]]\nname = \"ram0\"\ntype = \"ram\"\nsize = \"4MiB\"\n";

/// The arguments of `dataplane serve` with `config` written to
/// `dir/serve.toml`: no netlink, no state files, no control socket, and
/// empty sysfs and configfs roots (`dir`), so no device of the host is
/// seen.
pub fn serve_args(dir: &Path, config: &str) -> Vec<OsString> {
    let file = dir.join("serve.toml");
    std::fs::write(&file, config).unwrap();
    let mut args: Vec<OsString> = [
        "serve",
        "--no-netlink",
        "--state-dir",
        "none",
        "--rpc-socket",
        "none",
        "--config",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(file.into_os_string());
    for flag in ["--sysfs-root", "--configfs-root"] {
        args.push(flag.into());
        args.push(dir.as_os_str().to_owned());
    }
    args
}
