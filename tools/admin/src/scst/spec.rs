//! What `add-lun` and `del-lun` are given: target drivers and their
//! defaults, [`LunSpec`], and the checks on names and LUN numbers.

use super::error::ScstAdminError;

/// The default target driver.
pub const DEFAULT_DRIVER: &str = "scst_local";
/// The target scst_local creates when loaded with `add_default_tgt=1` (the
/// default).
pub const DEFAULT_LOCAL_TARGET: &str = "scst_local_tgt";
/// The largest LUN SCST accepts (`SCST_MAX_LUN`, 14 bits).
pub const MAX_LUN: u64 = (1 << 14) - 1;

/// The kernel module that provides a target driver (for the
/// "modprobe ..." advice).
pub fn driver_module(driver: &str) -> &str {
    match driver {
        "iscsi" => "iscsi-scst",
        "qla2x00t" => "qla2x00tgt",
        other => other,
    }
}

/// The default target of a driver, if it has one (scst_local's
/// `scst_local_tgt`).
pub fn default_target(driver: &str) -> Option<&'static str> {
    (driver == DEFAULT_DRIVER).then_some(DEFAULT_LOCAL_TARGET)
}

/// One LUN to add: `<driver>/<target>/luns/<lun>` → `<device>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunSpec {
    /// The SCST device (a dataplane `[[scst]]` device name).
    pub device: String,
    /// The target driver (`scst_local`, `iscsi`, ...).
    pub driver: String,
    /// The target (`scst_local_tgt`, an IQN, ...).
    pub target: String,
    /// The LUN number.
    pub lun: u64,
}

impl LunSpec {
    /// LUN 0 of scst_local's default target.
    pub fn new(device: impl Into<String>) -> Self {
        Self {
            device: device.into(),
            driver: DEFAULT_DRIVER.to_owned(),
            target: DEFAULT_LOCAL_TARGET.to_owned(),
            lun: 0,
        }
    }

    /// Checks the names (they go into paths and a whitespace-separated
    /// command) and the LUN range.
    pub fn validate(&self) -> Result<(), ScstAdminError> {
        check_component("device name", &self.device)?;
        check_component("target driver", &self.driver)?;
        check_component("target name", &self.target)?;
        check_lun(self.lun)
    }
}

pub(super) fn check_lun(lun: u64) -> Result<(), ScstAdminError> {
    if lun > MAX_LUN {
        return Err(ScstAdminError::Invalid(format!(
            "LUN {lun} is out of range (SCST allows 0 to {MAX_LUN})"
        )));
    }
    Ok(())
}

/// A name used as a path component and a `mgmt` word.
pub(super) fn check_component(what: &str, name: &str) -> Result<(), ScstAdminError> {
    let why = if name.is_empty() {
        "is empty".to_owned()
    } else if name == "." || name == ".." {
        "is not a name".to_owned()
    } else if let Some(c) = name.chars().find(|&c| !c.is_ascii_graphic() || c == '/') {
        format!("contains {c:?} (allowed: printable ASCII without spaces and '/')")
    } else {
        return Ok(());
    };
    Err(ScstAdminError::Invalid(format!("{what} {name:?} {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_specs_are_validated() {
        LunSpec::new("disk0").validate().unwrap();
        let msg = |f: &dyn Fn(&mut LunSpec)| {
            let mut s = LunSpec::new("disk0");
            f(&mut s);
            s.validate().unwrap_err().to_string()
        };
        assert_eq!(
            msg(&|s| s.lun = 16384),
            "LUN 16384 is out of range (SCST allows 0 to 16383)"
        );
        assert_eq!(
            msg(&|s| s.device = "a b".into()),
            "device name \"a b\" contains ' ' (allowed: printable ASCII without spaces and '/')"
        );
        assert_eq!(
            msg(&|s| s.target = "..".into()),
            "target name \"..\" is not a name"
        );
        assert_eq!(
            msg(&|s| s.driver = String::new()),
            "target driver \"\" is empty"
        );
    }

    #[test]
    fn drivers_name_their_module_and_default_target() {
        assert_eq!(driver_module("iscsi"), "iscsi-scst");
        assert_eq!(driver_module("scst_local"), "scst_local");
        assert_eq!(default_target("scst_local"), Some("scst_local_tgt"));
        assert_eq!(default_target("iscsi"), None);
    }
}
