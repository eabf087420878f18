//! Where an scst_user device is exported: LUN `lun` of target `target` of
//! target driver `driver`
//! (`/sys/kernel/scst_tgt/targets/<driver>/<target>/luns/<lun>`), the rules
//! for those names, and [`export_lun`].
//!
//! SCST removes a device's LUNs when its handler's fd closes (a restart, a
//! crash, a re-registration after a fault). `dataplane serve` runs
//! [`export_lun`] for each LUN configured for a device after registering
//! it, so the LUNs come back by themselves and the initiators' disks
//! resume; `dataplane scst add-lun` adds one by hand with the same rules.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::kernfs::{link_name, scst_mgmt, Fs, MgmtError, Roots};

/// The default target driver.
pub const DEFAULT_DRIVER: &str = "scst_local";
/// The target scst_local creates when loaded with `add_default_tgt=1` (the
/// default).
pub const DEFAULT_LOCAL_TARGET: &str = "scst_local_tgt";
/// The largest LUN SCST accepts (`SCST_MAX_LUN`, 14 bits).
pub const MAX_LUN: u64 = (1 << 14) - 1;

/// The default target of a driver, if it has one (scst_local's
/// `scst_local_tgt`).
pub fn default_target(driver: &str) -> Option<&'static str> {
    (driver == DEFAULT_DRIVER).then_some(DEFAULT_LOCAL_TARGET)
}

/// Checks a name used as a path component and a `mgmt` word; the error
/// says what is wrong with it.
pub fn check_component(what: &str, name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "is empty".to_owned()
    } else if name == "." || name == ".." {
        "is not a name".to_owned()
    } else if let Some(c) = name.chars().find(|&c| !c.is_ascii_graphic() || c == '/') {
        format!("contains {c:?} (allowed: printable ASCII without spaces and '/')")
    } else {
        return Ok(());
    };
    Err(format!("{what} {name:?} {why}"))
}

/// Checks a LUN number.
pub fn check_lun(lun: u64) -> Result<(), String> {
    if lun > MAX_LUN {
        return Err(format!(
            "LUN {lun} is out of range (SCST allows 0 to {MAX_LUN})"
        ));
    }
    Ok(())
}

/// A LUN of a target: `<driver>/<target>/luns/<lun>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LunAddress {
    /// The target driver (`scst_local`, `iscsi`, ...).
    pub driver: String,
    /// The target (`scst_local_tgt`, an IQN, ...).
    pub target: String,
    /// The LUN number.
    pub lun: u64,
}

impl LunAddress {
    /// Checks the names and the LUN number.
    pub fn validate(&self) -> Result<(), String> {
        check_component("target driver", &self.driver)?;
        check_component("target name", &self.target)?;
        check_lun(self.lun)
    }
}

impl fmt::Display for LunAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LUN {} of {}/{}", self.lun, self.driver, self.target)
    }
}

/// What [`export_lun`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exported {
    /// The LUN was added.
    Added,
    /// The LUN already maps the device.
    AlreadyThere,
}

/// Why [`export_lun`] could not export the device.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The target does not exist.
    #[error(
        "no target {} (is the target driver loaded, and the target created?)",
        .0.display()
    )]
    NoTarget(PathBuf),
    /// The LUN maps another device.
    #[error("{} maps device {device:?}", dir.display())]
    Taken {
        /// `luns/<lun>`.
        dir: PathBuf,
        /// The device it maps.
        device: String,
    },
    /// The `add` command failed.
    #[error("`{command}` to {}: {error}", path.display())]
    Mgmt {
        /// The command.
        command: String,
        /// The `mgmt` file.
        path: PathBuf,
        /// Why.
        error: MgmtError,
    },
}

/// Exports `device` (registered) as `at`: nothing if that LUN already maps
/// it, else `add <device> <lun>` to the target's `luns/mgmt` (the kernel
/// then sends ATTACH_SESS to the device and waits up to 5 s for the answer
/// inside the write, so the device must be polled meanwhile), waiting up to
/// `timeout` for a pending result.
pub fn export_lun(
    fs: &mut dyn Fs,
    roots: &Roots,
    device: &str,
    at: &LunAddress,
    timeout: Duration,
) -> Result<Exported, ExportError> {
    let target_dir = roots.scst_target_dir(&at.driver, &at.target);
    if !target_dir.is_dir() {
        return Err(ExportError::NoTarget(target_dir));
    }
    let luns = target_dir.join("luns");
    let lun_dir = luns.join(at.lun.to_string());
    if lun_dir.symlink_metadata().is_ok() {
        let mapped = link_name(&lun_dir.join("device")).unwrap_or_else(|| "?".into());
        if mapped == device {
            return Ok(Exported::AlreadyThere);
        }
        return Err(ExportError::Taken {
            dir: lun_dir,
            device: mapped,
        });
    }
    let command = format!("add {device} {}", at.lun);
    let path = luns.join("mgmt");
    scst_mgmt(fs, roots, &path, &command, timeout).map_err(|error| ExportError::Mgmt {
        command,
        path,
        error,
    })?;
    Ok(Exported::Added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_luns_are_checked() {
        let at = |driver: &str, target: &str, lun| LunAddress {
            driver: driver.into(),
            target: target.into(),
            lun,
        };
        at("scst_local", "scst_local_tgt", 0).validate().unwrap();
        assert_eq!(
            at("scst_local", "t", 16384).validate().unwrap_err(),
            "LUN 16384 is out of range (SCST allows 0 to 16383)"
        );
        assert_eq!(
            at("scst_local", "a b", 1).validate().unwrap_err(),
            "target name \"a b\" contains ' ' (allowed: printable ASCII without spaces and '/')"
        );
        assert_eq!(
            at("", "t", 1).validate().unwrap_err(),
            "target driver \"\" is empty"
        );
        assert_eq!(at("iscsi", "iqn.x", 3).to_string(), "LUN 3 of iscsi/iqn.x");
        assert_eq!(default_target("scst_local"), Some("scst_local_tgt"));
        assert_eq!(default_target("iscsi"), None);
    }
}
