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

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::abi::{self, ScstUserDevDesc, ScstUserOpt, SCST_MAX_NAME, TYPE_DISK};
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

/// `parse_type`: who parses CDBs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParseType {
    /// SCST's own parser; PARSE never reaches the handler.
    #[default]
    Standard,
    /// Every command comes as PARSE first.
    Call,
    /// PARSE only when SCST's parser fails.
    Exception,
}

/// `memory_reuse_type`: which data buffers the kernel caches (and hands
/// back as `pbuf` of later commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryReuse {
    /// No caching.
    None,
    /// READ buffers.
    Read,
    /// WRITE buffers.
    Write,
    /// All buffers.
    #[default]
    All,
}

/// `on_free_cmd_type`: whether the handler gets ON_FREE_CMD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFreeCmd {
    /// Send ON_FREE_CMD for every command the handler saw.
    Call,
    /// Don't.
    Ignore,
}

impl ParseType {
    /// The ABI value.
    pub fn abi(self) -> u8 {
        match self {
            ParseType::Standard => abi::SCST_USER_PARSE_STANDARD,
            ParseType::Call => abi::SCST_USER_PARSE_CALL,
            ParseType::Exception => abi::SCST_USER_PARSE_EXCEPTION,
        }
    }
}

impl MemoryReuse {
    /// The ABI value.
    pub fn abi(self) -> u8 {
        match self {
            MemoryReuse::None => abi::SCST_USER_MEM_NO_REUSE,
            MemoryReuse::Read => abi::SCST_USER_MEM_REUSE_READ,
            MemoryReuse::Write => abi::SCST_USER_MEM_REUSE_WRITE,
            MemoryReuse::All => abi::SCST_USER_MEM_REUSE_ALL,
        }
    }
}

impl OnFreeCmd {
    /// The ABI value.
    pub fn abi(self) -> u8 {
        match self {
            OnFreeCmd::Call => abi::SCST_USER_ON_FREE_CMD_CALL,
            OnFreeCmd::Ignore => abi::SCST_USER_ON_FREE_CMD_IGNORE,
        }
    }
}

fn parse_choice<T: Copy>(option: &str, s: &str, choices: &[(&str, T)]) -> Result<T, ScstError> {
    let lower = s.to_ascii_lowercase();
    choices
        .iter()
        .find(|(name, _)| *name == lower)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            ScstError::Invalid(format!(
                "SCST option {option} = {s:?} is invalid: allowed values are {}",
                names.join(", ")
            ))
        })
}

impl FromStr for ParseType {
    type Err = ScstError;

    /// `standard` (or fileio_tgt's `std`), `call`, `exception` (`excpt`).
    fn from_str(s: &str) -> Result<Self, ScstError> {
        parse_choice(
            "parse_type",
            s,
            &[
                ("standard", ParseType::Standard),
                ("std", ParseType::Standard),
                ("call", ParseType::Call),
                ("exception", ParseType::Exception),
                ("excpt", ParseType::Exception),
            ],
        )
    }
}

impl FromStr for MemoryReuse {
    type Err = ScstError;

    /// `none`, `read`, `write`, `all`.
    fn from_str(s: &str) -> Result<Self, ScstError> {
        parse_choice(
            "memory_reuse",
            s,
            &[
                ("none", MemoryReuse::None),
                ("read", MemoryReuse::Read),
                ("write", MemoryReuse::Write),
                ("all", MemoryReuse::All),
            ],
        )
    }
}

impl FromStr for OnFreeCmd {
    type Err = ScstError;

    /// `call`, `ignore`.
    fn from_str(s: &str) -> Result<Self, ScstError> {
        parse_choice(
            "on_free_cmd",
            s,
            &[("call", OnFreeCmd::Call), ("ignore", OnFreeCmd::Ignore)],
        )
    }
}

/// The options of one scst_user device (see the module docs for the
/// defaults and ranges). Deserializes from the `[[scst]]` config with every
/// field optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScstOptions {
    /// Who parses CDBs.
    pub parse_type: ParseType,
    /// Which buffers the kernel caches.
    pub memory_reuse: MemoryReuse,
    /// ON_FREE_CMD; `None` = per memory policy
    /// ([`ScstOptions::effective_on_free_cmd`]).
    pub on_free_cmd: Option<OnFreeCmd>,
    /// Control mode page TST: 0 one task set, 1 separate task sets.
    pub tst: u8,
    /// Control mode page QUEUE ALGORITHM MODIFIER: 0 restricted, 1
    /// unrestricted reordering.
    pub queue_alg: u8,
    /// Control mode page QERR: 0, 1 or 3.
    pub qerr: u8,
    /// Control mode page TAS: 0 or 1.
    pub tas: u8,
    /// Control mode page SWP (software write protect): 0 or 1.
    pub swp: u8,
    /// Control mode page D_SENSE: 0 fixed-format, 1 descriptor-format sense.
    pub d_sense: u8,
}

impl Default for ScstOptions {
    fn default() -> Self {
        Self {
            parse_type: ParseType::Standard,
            memory_reuse: MemoryReuse::All,
            on_free_cmd: None,
            tst: 1,
            queue_alg: 1,
            qerr: 0,
            tas: 0,
            swp: 0,
            d_sense: 0,
        }
    }
}

impl ScstOptions {
    /// `on_free_cmd`, or the memory policy's choice: `ignore` with reuse
    /// `all`, `call` otherwise.
    pub fn effective_on_free_cmd(&self) -> OnFreeCmd {
        self.on_free_cmd.unwrap_or(match self.memory_reuse {
            MemoryReuse::All => OnFreeCmd::Ignore,
            _ => OnFreeCmd::Call,
        })
    }

    /// Checks every value against the kernel's ranges
    /// (`__dev_user_set_opt`) and the on_free_cmd policy; the error names
    /// the option and the allowed values.
    pub fn validate(&self) -> Result<(), ScstError> {
        let checks: [(&str, u8, &[u8], &str); 6] = [
            (
                "tst",
                self.tst,
                &[0, 1],
                "0 (one task set) and 1 (separate task sets)",
            ),
            (
                "queue_alg",
                self.queue_alg,
                &[0, 1],
                "0 (restricted reordering) and 1 (unrestricted reordering)",
            ),
            ("qerr", self.qerr, &[0, 1, 3], "0, 1 and 3"),
            ("tas", self.tas, &[0, 1], "0 and 1"),
            ("swp", self.swp, &[0, 1], "0 and 1"),
            (
                "d_sense",
                self.d_sense,
                &[0, 1],
                "0 (fixed-format sense) and 1 (descriptor-format sense)",
            ),
        ];
        for (name, value, allowed, words) in checks {
            if !allowed.contains(&value) {
                return Err(ScstError::Invalid(format!(
                    "SCST option {name} = {value} is invalid: allowed values are {words}"
                )));
            }
        }
        if self.on_free_cmd == Some(OnFreeCmd::Ignore) && self.memory_reuse != MemoryReuse::All {
            return Err(ScstError::Invalid(format!(
                "SCST option on_free_cmd = ignore needs memory_reuse = all (it is {:?}): buffers \
                 the kernel does not cache are returned only through ON_FREE_CMD",
                self.memory_reuse
            )));
        }
        Ok(())
    }

    /// The ABI struct: these options, partial transfers NOT_SUPPORTED,
    /// `tmf_only`, `has_own_order_mgmt` and `ext_copy_remap_supported` 0.
    /// Call [`ScstOptions::validate`] first.
    pub fn to_abi(&self) -> ScstUserOpt {
        ScstUserOpt {
            parse_type: self.parse_type.abi(),
            on_free_cmd_type: self.effective_on_free_cmd().abi(),
            memory_reuse_type: self.memory_reuse.abi(),
            partial_transfers_type: abi::SCST_USER_PARTIAL_TRANSFERS_NOT_SUPPORTED,
            partial_len: 0,
            tst: self.tst,
            tmf_only: 0,
            queue_alg: self.queue_alg,
            qerr: self.qerr,
            tas: self.tas,
            swp: self.swp,
            d_sense: self.d_sense,
            has_own_order_mgmt: 0,
            ext_copy_remap_supported: 0,
            _pad: [0; 3],
        }
    }
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

impl fmt::Display for ScstOptions {
    /// `parse_type=standard memory_reuse=all on_free_cmd=ignore tst=1 ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lower = |s: String| s.to_ascii_lowercase();
        write!(
            f,
            "parse_type={} memory_reuse={} on_free_cmd={} tst={} queue_alg={} qerr={} tas={} \
             swp={} d_sense={}",
            lower(format!("{:?}", self.parse_type)),
            lower(format!("{:?}", self.memory_reuse)),
            lower(format!("{:?}", self.effective_on_free_cmd())),
            self.tst,
            self.queue_alg,
            self.qerr,
            self.tas,
            self.swp,
            self.d_sense
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_match_fileio_tgt() {
        let o = ScstOptions::default();
        o.validate().unwrap();
        let a = o.to_abi();
        assert_eq!(a.parse_type, abi::SCST_USER_PARSE_STANDARD);
        assert_eq!(a.memory_reuse_type, abi::SCST_USER_MEM_REUSE_ALL);
        assert_eq!(a.on_free_cmd_type, abi::SCST_USER_ON_FREE_CMD_IGNORE);
        assert_eq!(
            a.partial_transfers_type,
            abi::SCST_USER_PARTIAL_TRANSFERS_NOT_SUPPORTED
        );
        assert_eq!((a.tst, a.queue_alg, a.qerr), (1, 1, 0));
        assert_eq!((a.tas, a.swp, a.d_sense), (0, 0, 0));
        assert_eq!(
            (a.tmf_only, a.has_own_order_mgmt, a.ext_copy_remap_supported),
            (0, 0, 0)
        );
        assert_eq!(
            o.to_string(),
            "parse_type=standard memory_reuse=all on_free_cmd=ignore tst=1 queue_alg=1 qerr=0 \
             tas=0 swp=0 d_sense=0"
        );
    }

    #[test]
    fn on_free_cmd_follows_memory_policy() {
        for (reuse, expect) in [
            (MemoryReuse::All, OnFreeCmd::Ignore),
            (MemoryReuse::Read, OnFreeCmd::Call),
            (MemoryReuse::Write, OnFreeCmd::Call),
            (MemoryReuse::None, OnFreeCmd::Call),
        ] {
            let o = ScstOptions {
                memory_reuse: reuse,
                ..Default::default()
            };
            assert_eq!(o.effective_on_free_cmd(), expect, "{reuse:?}");
            assert_eq!(o.to_abi().on_free_cmd_type, expect.abi());
        }
        let o = ScstOptions {
            on_free_cmd: Some(OnFreeCmd::Call),
            ..Default::default()
        };
        o.validate().unwrap();
        assert_eq!(o.to_abi().on_free_cmd_type, abi::SCST_USER_ON_FREE_CMD_CALL);
        let o = ScstOptions {
            on_free_cmd: Some(OnFreeCmd::Ignore),
            memory_reuse: MemoryReuse::Read,
            ..Default::default()
        };
        assert_eq!(
            o.validate().unwrap_err().to_string(),
            "SCST option on_free_cmd = ignore needs memory_reuse = all (it is Read): buffers \
             the kernel does not cache are returned only through ON_FREE_CMD"
        );
    }

    #[test]
    fn option_ranges_are_the_kernels() {
        let check = |f: &dyn Fn(&mut ScstOptions), ok: bool| {
            let mut o = ScstOptions::default();
            f(&mut o);
            assert_eq!(o.validate().is_ok(), ok, "{o:?}");
        };
        for v in 0..=255u8 {
            check(&|o| o.tst = v, v <= 1);
            check(&|o| o.queue_alg = v, v <= 1);
            check(&|o| o.qerr = v, matches!(v, 0 | 1 | 3));
            check(&|o| o.tas = v, v <= 1);
            check(&|o| o.swp = v, v <= 1);
            check(&|o| o.d_sense = v, v <= 1);
        }
        let o = ScstOptions {
            qerr: 2,
            ..Default::default()
        };
        assert_eq!(
            o.validate().unwrap_err().to_string(),
            "SCST option qerr = 2 is invalid: allowed values are 0, 1 and 3"
        );
        let o = ScstOptions {
            tst: 7,
            ..Default::default()
        };
        assert_eq!(
            o.validate().unwrap_err().to_string(),
            "SCST option tst = 7 is invalid: allowed values are 0 (one task set) and 1 \
             (separate task sets)"
        );
    }

    #[test]
    fn option_names_parse() {
        assert_eq!("STD".parse::<ParseType>().unwrap(), ParseType::Standard);
        assert_eq!("call".parse::<ParseType>().unwrap(), ParseType::Call);
        assert_eq!("excpt".parse::<ParseType>().unwrap(), ParseType::Exception);
        assert_eq!(
            "Exception".parse::<ParseType>().unwrap().abi(),
            abi::SCST_USER_PARSE_EXCEPTION
        );
        assert_eq!(
            "x".parse::<ParseType>().unwrap_err().to_string(),
            "SCST option parse_type = \"x\" is invalid: allowed values are standard, std, call, \
             exception, excpt"
        );
        assert_eq!("write".parse::<MemoryReuse>().unwrap().abi(), 2);
        assert_eq!("none".parse::<MemoryReuse>().unwrap().abi(), 0);
        assert_eq!("read".parse::<MemoryReuse>().unwrap().abi(), 1);
        assert_eq!("ignore".parse::<OnFreeCmd>().unwrap().abi(), 1);
        assert!("sometimes"
            .parse::<OnFreeCmd>()
            .unwrap_err()
            .to_string()
            .contains("on_free_cmd"));
    }

    #[test]
    fn options_deserialize_with_defaults() {
        let o: ScstOptions = toml::from_str("parse_type = \"call\"\nqerr = 3\n").unwrap();
        assert_eq!(o.parse_type, ParseType::Call);
        assert_eq!(o.qerr, 3);
        assert_eq!(o.tst, 1);
        assert_eq!(o.memory_reuse, MemoryReuse::All);
        let o: ScstOptions =
            toml::from_str("memory_reuse = \"read\"\non_free_cmd = \"call\"\n").unwrap();
        assert_eq!(o.memory_reuse, MemoryReuse::Read);
        assert_eq!(o.on_free_cmd, Some(OnFreeCmd::Call));
        assert!(toml::from_str::<ScstOptions>("bogus = 1\n").is_err());
        assert!(toml::from_str::<ScstOptions>("parse_type = \"sometimes\"\n").is_err());
    }

    #[test]
    fn specs_are_validated() {
        RegisterSpec::new("disk0", 512).validate().unwrap();
        RegisterSpec::new("d".repeat(48), 4096).validate().unwrap();
        let msg = |s: RegisterSpec| s.validate().unwrap_err().to_string();
        assert_eq!(
            msg(RegisterSpec::new("d".repeat(49), 512)),
            format!(
                "SCST device name {:?} is 49 bytes long (at most 48)",
                "d".repeat(49)
            )
        );
        assert_eq!(
            msg(RegisterSpec::new("", 512)),
            "SCST device name \"\" is empty"
        );
        assert_eq!(
            msg(RegisterSpec::new("a b", 512)),
            "SCST device name \"a b\" contains ' ' (allowed: printable ASCII without spaces and \
             '/')"
        );
        assert!(msg(RegisterSpec::new("a/b", 512)).contains("contains '/'"));
        for bad in [0, 256, 520, 1000, 3 << 10] {
            assert_eq!(
                msg(RegisterSpec::new("d", bad)),
                format!(
                    "block size {bad} of SCST device \"d\" is invalid: it must be a power of two \
                     of at least 512"
                )
            );
        }
        for good in [512, 1024, 2048, 4096, 8192, 65536] {
            RegisterSpec::new("d", good).validate().unwrap();
        }
        let mut s = RegisterSpec::new("d", 512);
        s.sgv_name = Some("x".repeat(50));
        assert!(msg(s.clone()).starts_with("SGV pool name"));
        s.sgv_name = None;
        s.sgv_single_alloc_pages = -1;
        assert!(msg(s.clone()).starts_with("sgv_single_alloc_pages = -1"));
        s.sgv_single_alloc_pages = 0;
        s.options.swp = 2;
        assert!(msg(s).starts_with("SCST option swp = 2"));
    }

    #[test]
    fn the_description_has_the_c_layout() {
        let version = KernelString::new("3.11.0-preV").unwrap();
        let license = KernelString::new(LICENSE).unwrap();
        let mut spec = RegisterSpec::new("disk0", 4096);
        spec.sgv_name = Some("pool".into());
        spec.sgv_shared = true;
        spec.sgv_single_alloc_pages = 4;
        spec.sgv_purge_interval = -1;
        spec.sgv_disable_clustered_pool = true;
        let desc = spec.dev_desc(&version, &license);
        // SAFETY: ScstUserDevDesc is 160 bytes of plain data; viewing it as
        // bytes is valid for its whole size.
        let bytes: [u8; 160] = unsafe { std::mem::transmute(desc) };
        assert_eq!(&bytes[0..8], &version.addr().to_ne_bytes());
        assert_eq!(&bytes[8..16], &license.addr().to_ne_bytes());
        assert_eq!(bytes[16], TYPE_DISK);
        assert_eq!((bytes[17], bytes[18]), (1, 1));
        assert_eq!(&bytes[20..24], &4i32.to_ne_bytes());
        assert_eq!(&bytes[24..28], &(-1i32).to_ne_bytes());
        assert_eq!(bytes[28], abi::SCST_USER_PARSE_STANDARD); // opt.parse_type
        assert_eq!(bytes[29], abi::SCST_USER_ON_FREE_CMD_IGNORE);
        assert_eq!(bytes[30], abi::SCST_USER_MEM_REUSE_ALL);
        assert_eq!(bytes[36], 1); // opt.tst
        assert_eq!(bytes[38], 1); // opt.queue_alg
        assert_eq!(&bytes[48..52], &4096u32.to_ne_bytes());
        assert_eq!(bytes[52], 0);
        assert_eq!(&bytes[53..59], b"disk0\0");
        assert!(bytes[58..103].iter().all(|&b| b == 0));
        assert_eq!(&bytes[103..108], b"pool\0");
        assert!(bytes[107..160].iter().all(|&b| b == 0));
    }
}
