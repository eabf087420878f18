//! Registering an scst_user device: [`ScstOptions`] (the `scst_user_opt`
//! knobs, validated with the kernel's ranges), [`RegisterSpec`] and
//! [`register_device`].
//!
//! # Sequence ([`register_with_version`])
//! 1. Validate the spec (name, block size, SGV settings, options); every
//!    error names the value.
//! 2. Put DEV_USER_VERSION and the license `"GPL"` in 128-byte
//!    [`KernelString`] buffers (the kernel copies 91 bytes from each
//!    pointer whatever the string length).
//! 3. `REGISTER_DEVICE` with a `TYPE_DISK` description. Errors are mapped
//!    by [`ScstError::from_register_errno`]: EINVAL → version mismatch
//!    (and where the kernel logs the expected one), EPERM → license,
//!    EEXIST → name taken.
//! 4. `SET_OPTIONS` with the same options, then `GET_OPTIONS`: every option
//!    [`ScstOptions`] controls must read back as set
//!    ([`ScstError::OptionsNotKept`] otherwise). SET_OPTIONS makes SCST
//!    suspend activity briefly (as fileio_tgt's own round trip does).
//!
//! # Options and their defaults
//! | option | default | kernel values |
//! | --- | --- | --- |
//! | `parse_type` | `standard` | standard, call, exception |
//! | `memory_reuse` | `all` | none, read, write, all |
//! | `on_free_cmd` | per memory policy (below) | call, ignore |
//! | partial transfers | not supported (fixed) | only NOT_SUPPORTED is implemented |
//! | `tst` | 1 (separate task sets, like fileio_tgt) | 0, 1 |
//! | `queue_alg` | 1 (unrestricted reordering, like fileio_tgt) | 0, 1 |
//! | `qerr` | 0 | 0, 1, 3 |
//! | `tas`, `swp` | 0 | 0, 1 |
//! | `d_sense` | 0 (fixed-format sense) | 0, 1 |
//!
//! **on_free_cmd policy.** Unset, it is `ignore` when `memory_reuse` is
//! `all` and `call` otherwise, like fileio_tgt: with reuse ALL every buffer
//! is cached by the kernel and comes back through ON_CACHED_MEM_FREE, so
//! ON_FREE_CMD would only cost a context switch per command; with any other
//! reuse type, buffers of uncached directions are returned only by
//! ON_FREE_CMD. `ignore` together with a reuse type other than `all` would
//! leak those buffers and is refused.
//!
//! # Files
//! The options are in `options.rs`; the spec, its checks and the sequence
//! here; the tests in `tests.rs`.

mod options;

#[cfg(test)]
mod tests;

pub use options::{MemoryReuse, OnFreeCmd, ParseType, ScstOptions};

use super::abi::{ScstUserDevDesc, ScstUserOpt, SCST_MAX_NAME, TYPE_DISK};
use super::driver::ScstDriver;
use super::error::{ControlOp, RegisterAttempt, ScstError};
use super::version::{check_version_string, find_dev_user_version, KernelString, VersionSource};

/// The license string passed to the kernel.
pub const LICENSE: &str = "GPL";

/// Longest device name accepted. The ABI field holds 49 bytes + NUL, but
/// scst_user.c copies it with `strlcpy(dev->name, desc->name,
/// sizeof(dev->name) - 1)`, which keeps 48: a 49-byte name would register
/// under a truncated name.
pub const MAX_DEVICE_NAME: usize = SCST_MAX_NAME - 2;

/// The prefix of the SGV pool name of a device `dataplane` registers:
/// `dataplane.<device>`. SCST shows a device's pools in
/// `/sys/kernel/scst_tgt/sgv/`, which is how `dataplane scst list` tells its
/// own scst_user devices from other handlers' (fileio_tgt's, for example),
/// whose pools carry their device's name.
pub const DATAPLANE_SGV_PREFIX: &str = "dataplane.";

/// The marked SGV pool name of `device` ([`DATAPLANE_SGV_PREFIX`]), or
/// `None` when it would not fit the ABI's 49 bytes (device names over 39
/// bytes: such a device keeps the default pool name, its own).
pub fn dataplane_sgv_name(device: &str) -> Option<String> {
    let name = format!("{DATAPLANE_SGV_PREFIX}{device}");
    (name.len() < SCST_MAX_NAME).then_some(name)
}

/// What to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterSpec {
    /// The SCST device name (`/sys/kernel/scst_tgt/devices/<name>`): 1 to
    /// [`MAX_DEVICE_NAME`] bytes of printable ASCII, no `/`.
    pub name: String,
    /// Logical block size: a power of two, at least 512.
    pub block_size: u32,
    /// The configured DEV_USER_VERSION; `None` finds it
    /// ([`find_dev_user_version`]).
    pub version: Option<String>,
    /// The scst_user options.
    pub options: ScstOptions,
    /// Name of the device's SGV pools; `None` = the device name.
    pub sgv_name: Option<String>,
    /// Share the SGV pools with devices of the same `sgv_name`.
    pub sgv_shared: bool,
    /// SGV single-allocation pages; 0 = power-of-two sizes.
    pub sgv_single_alloc_pages: i32,
    /// SGV purge interval in seconds; 0 = the 60 s default, negative =
    /// never purge.
    pub sgv_purge_interval: i32,
    /// Do not create the clustered (`<name>-clust`) SGV pool.
    pub sgv_disable_clustered_pool: bool,
}

impl RegisterSpec {
    /// A spec with default options and SGV settings, the version found at
    /// run time.
    pub fn new(name: impl Into<String>, block_size: u32) -> Self {
        Self {
            name: name.into(),
            block_size,
            version: None,
            options: ScstOptions::default(),
            sgv_name: None,
            sgv_shared: false,
            sgv_single_alloc_pages: 0,
            sgv_purge_interval: 0,
            sgv_disable_clustered_pool: false,
        }
    }

    /// Checks the name, block size, SGV settings and options.
    pub fn validate(&self) -> Result<(), ScstError> {
        check_name("SCST device name", &self.name, MAX_DEVICE_NAME)?;
        if let Some(sgv) = &self.sgv_name {
            check_name("SGV pool name", sgv, SCST_MAX_NAME - 1)?;
        }
        if self.block_size < 512 || !self.block_size.is_power_of_two() {
            return Err(ScstError::Invalid(format!(
                "block size {} of SCST device {:?} is invalid: it must be a power of two of at \
                 least 512",
                self.block_size, self.name
            )));
        }
        if self.sgv_single_alloc_pages < 0 {
            return Err(ScstError::Invalid(format!(
                "sgv_single_alloc_pages = {} is invalid: it must be 0 (power-of-two sizes) or \
                 more",
                self.sgv_single_alloc_pages
            )));
        }
        self.options.validate()
    }

    /// The REGISTER_DEVICE description, pointing at `version` and `license`
    /// (which must outlive every use of the result).
    pub fn dev_desc(&self, version: &KernelString, license: &KernelString) -> ScstUserDevDesc {
        let mut desc = ScstUserDevDesc {
            version_str: version.addr(),
            license_str: license.addr(),
            type_: TYPE_DISK,
            sgv_shared: u8::from(self.sgv_shared),
            sgv_disable_clustered_pool: u8::from(self.sgv_disable_clustered_pool),
            _pad0: 0,
            sgv_single_alloc_pages: self.sgv_single_alloc_pages,
            sgv_purge_interval: self.sgv_purge_interval,
            opt: self.options.to_abi(),
            block_size: self.block_size,
            enable_pr_cmds_notifications: 0,
            name: [0; SCST_MAX_NAME],
            sgv_name: [0; SCST_MAX_NAME],
            _pad1: [0; 7],
        };
        copy_name(&mut desc.name, &self.name);
        if let Some(sgv) = &self.sgv_name {
            copy_name(&mut desc.sgv_name, sgv);
        }
        desc
    }
}

/// Copies at most `dst.len() - 1` bytes, leaving a NUL.
fn copy_name(dst: &mut [u8; SCST_MAX_NAME], name: &str) {
    let n = name.len().min(SCST_MAX_NAME - 1);
    dst[..n].copy_from_slice(&name.as_bytes()[..n]);
}

fn check_name(what: &str, name: &str, max: usize) -> Result<(), ScstError> {
    let why = if name.is_empty() {
        "is empty".to_owned()
    } else if name.len() > max {
        format!("is {} bytes long (at most {max})", name.len())
    } else if let Some(c) = name.chars().find(|&c| !c.is_ascii_graphic() || c == '/') {
        format!("contains {c:?} (allowed: printable ASCII without spaces and '/')")
    } else {
        return Ok(());
    };
    Err(ScstError::Invalid(format!("{what} {name:?} {why}")))
}

/// Registers the device of `spec` on `driver` with the DEV_USER_VERSION
/// from [`find_dev_user_version`]`(spec.version)`. See the module docs.
pub fn register_device<D: ScstDriver + ?Sized>(
    driver: &mut D,
    spec: &RegisterSpec,
) -> Result<(), ScstError> {
    spec.validate()?;
    let (version, source) = find_dev_user_version(spec.version.as_deref())?;
    register_with_version(driver, spec, &version, &source)
}

/// [`register_device`] with an already known version (`spec.version` is
/// not looked at).
pub fn register_with_version<D: ScstDriver + ?Sized>(
    driver: &mut D,
    spec: &RegisterSpec,
    version: &str,
    source: &VersionSource,
) -> Result<(), ScstError> {
    spec.validate()?;
    let origin = source.to_string();
    let unusable = |why| ScstError::VersionUnusable {
        version: version.to_owned(),
        origin: origin.clone(),
        why,
    };
    check_version_string(version).map_err(unusable)?;
    let version_buf = KernelString::new(version).map_err(unusable)?;
    let license_buf =
        KernelString::new(LICENSE).map_err(|why| ScstError::Invalid(why.to_string()))?;
    let desc = spec.dev_desc(&version_buf, &license_buf);
    let attempt = RegisterAttempt {
        device: &spec.name,
        version,
        origin: &origin,
        license: LICENSE,
        block_size: spec.block_size,
    };
    // `version_buf` and `license_buf` live until the end of this function:
    // readable for the whole call.
    driver
        .register(&desc)
        .map_err(|e| ScstError::from_register_errno(e, &attempt))?;
    let opt = desc.opt;
    driver
        .set_options(&opt)
        .map_err(|e| ScstError::from_ioctl_errno(ControlOp::SetOptions, &spec.name, e))?;
    let kept = driver
        .get_options()
        .map_err(|e| ScstError::from_ioctl_errno(ControlOp::GetOptions, &spec.name, e))?;
    check_kept(&spec.name, &opt, &kept)
}

/// The options [`ScstOptions`] controls must read back as set. Other bytes
/// (`tmf_only`, `has_own_order_mgmt`, `ext_copy_remap_supported`,
/// `partial_len`, padding) are not compared: older kernels do not return
/// all of them.
fn check_kept(device: &str, set: &ScstUserOpt, got: &ScstUserOpt) -> Result<(), ScstError> {
    let fields: [(&str, u8, u8); 10] = [
        ("parse_type", set.parse_type, got.parse_type),
        (
            "on_free_cmd_type",
            set.on_free_cmd_type,
            got.on_free_cmd_type,
        ),
        (
            "memory_reuse_type",
            set.memory_reuse_type,
            got.memory_reuse_type,
        ),
        (
            "partial_transfers_type",
            set.partial_transfers_type,
            got.partial_transfers_type,
        ),
        ("tst", set.tst, got.tst),
        ("queue_alg", set.queue_alg, got.queue_alg),
        ("qerr", set.qerr, got.qerr),
        ("tas", set.tas, got.tas),
        ("swp", set.swp, got.swp),
        ("d_sense", set.d_sense, got.d_sense),
    ];
    let mismatches: Vec<String> = fields
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, a, b)| format!("{name}: set {a}, kernel has {b}"))
        .collect();
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(ScstError::OptionsNotKept {
            device: device.to_owned(),
            mismatches: mismatches.join(", "),
        })
    }
}
