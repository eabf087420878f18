//! [`ScstOptions`]: the `scst_user_opt` knobs of a device, their names,
//! defaults and the kernel's ranges (the table in the module docs of
//! [`super`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::scst::abi::{self, ScstUserOpt};
use crate::scst::error::ScstError;

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
