//! scst_user fixtures: option sets, device descriptions and registration
//! as a test of the kernel side wants them (raw strings and options, none
//! of the checks `dataplane::scst::register` makes), and the handler's
//! PARSE pass-through.
//!
//! They take the `DEV_USER_VERSION` to offer as an argument: the simulator's
//! (`sim::scst::DEV_USER_VERSION_3_11`) or any other.

use dataplane::scst::abi::*;
use dataplane::scst::driver::ScstDriver;
use nix::errno::Errno;

/// Bytes of each description string buffer. The kernel reads 91 bytes of
/// each string whatever its length, so a buffer must be longer than that.
pub const DESC_STRING_BYTES: usize = 128;

/// The name [`register`] gives the device.
pub const DEVICE_NAME: &str = "disk0";

/// Options with the given memory reuse, ON_FREE_CMD and parse types;
/// partial transfers not supported, TST 1 and the unrestricted queue
/// algorithm, the rest zero.
pub fn options(memory_reuse: u8, on_free_cmd: u8, parse: u8) -> ScstUserOpt {
    ScstUserOpt {
        parse_type: parse,
        on_free_cmd_type: on_free_cmd,
        memory_reuse_type: memory_reuse,
        partial_transfers_type: SCST_USER_PARTIAL_TRANSFERS_NOT_SUPPORTED,
        tst: 1,
        queue_alg: 1,
        ..Default::default()
    }
}

/// The version and license strings a description points to, NUL-padded in
/// buffers of [`DESC_STRING_BYTES`], taken as given (valid or not).
#[derive(Debug, Clone)]
pub struct DescStrings {
    /// `version_str`.
    pub version: Box<[u8; DESC_STRING_BYTES]>,
    /// `license_str`.
    pub license: Box<[u8; DESC_STRING_BYTES]>,
}

impl DescStrings {
    /// The strings `version` and `license`.
    ///
    /// # Panics
    /// If either does not fit with its terminating NUL.
    pub fn new(version: &str, license: &str) -> Self {
        Self {
            version: padded(version),
            license: padded(license),
        }
    }
}

/// `text` NUL-padded in a buffer of [`DESC_STRING_BYTES`].
fn padded(text: &str) -> Box<[u8; DESC_STRING_BYTES]> {
    assert!(text.len() < DESC_STRING_BYTES, "{text:?} is too long");
    let mut buf = Box::new([0u8; DESC_STRING_BYTES]);
    buf[..text.len()].copy_from_slice(text.as_bytes());
    buf
}

/// A disk's description: `name` (truncated to leave a NUL), `block_size`,
/// `opt`, the strings of `strings` (which must outlive its use), no SGV
/// settings.
pub fn desc(
    strings: &DescStrings,
    name: &str,
    block_size: u32,
    opt: ScstUserOpt,
) -> ScstUserDevDesc {
    let mut n = [0u8; SCST_MAX_NAME];
    let len = name.len().min(SCST_MAX_NAME - 1);
    n[..len].copy_from_slice(&name.as_bytes()[..len]);
    ScstUserDevDesc {
        version_str: strings.version.as_ptr() as u64,
        license_str: strings.license.as_ptr() as u64,
        type_: TYPE_DISK,
        sgv_shared: 0,
        sgv_disable_clustered_pool: 0,
        _pad0: 0,
        sgv_single_alloc_pages: 0,
        sgv_purge_interval: 0,
        opt,
        block_size,
        enable_pr_cmds_notifications: 0,
        name: n,
        sgv_name: [0; SCST_MAX_NAME],
        _pad1: [0; 7],
    }
}

/// REGISTER_DEVICE of the disk [`DEVICE_NAME`] with `block_size` and
/// `opt`, offering `version` and the license "GPL"; the one ioctl, nothing
/// else.
pub fn register<D: ScstDriver + ?Sized>(
    driver: &mut D,
    version: &str,
    block_size: u32,
    opt: ScstUserOpt,
) -> Result<(), Errno> {
    let strings = DescStrings::new(version, "GPL");
    driver.register(&desc(&strings, DEVICE_NAME, block_size, opt))
}
