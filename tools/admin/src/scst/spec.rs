//! What `add-lun` and `del-lun` are given: target drivers and their
//! defaults, [`LunSpec`], and the checks on names and LUN numbers.

use dataplane::scst::export;

use super::error::ScstAdminError;

pub use dataplane::scst::export::{default_target, DEFAULT_DRIVER, DEFAULT_LOCAL_TARGET, MAX_LUN};

/// The kernel module that provides a target driver (for the
/// "modprobe ..." advice).
pub fn driver_module(driver: &str) -> &str {
    match driver {
        "iscsi" => "iscsi-scst",
        "qla2x00t" => "qla2x00tgt",
        other => other,
    }
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
    export::check_lun(lun).map_err(ScstAdminError::Invalid)
}

/// A name used as a path component and a `mgmt` word.
pub(super) fn check_component(what: &str, name: &str) -> Result<(), ScstAdminError> {
    export::check_component(what, name).map_err(ScstAdminError::Invalid)
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
