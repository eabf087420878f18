//! The checks `create`, `delete` and `list` make before touching anything:
//! configfs mounted, LIO's target directory present, the TCMU backend and
//! tcm_loop loaded. Each failure says which command fixes it.

use std::path::Path;

use dataplane::kernfs::Fs;

use super::admin::Lio;
use super::error::LioError;
use super::tree::user_hbas;

impl<F: Fs> Lio<F> {
    /// LIO's configfs directory and its `core` exist; otherwise says whether
    /// configfs is mounted (from `<proc>/self/mounts`) or `target_core_mod`
    /// is missing.
    pub(super) fn check_target_core(&self) -> Result<(), LioError> {
        let target = &self.roots.configfs;
        if target.is_dir() {
            let core = self.roots.core_dir();
            if core.is_dir() {
                return Ok(());
            }
            return Err(LioError::ModuleNotLoaded {
                module: "target_core_mod",
                why: format!("{} does not exist", core.display()),
            });
        }
        let mount_point = target.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mounts = self.roots.proc.join("self/mounts");
        let mounted = std::fs::read_to_string(mounts)
            .ok()
            .is_some_and(|m| is_mounted(&m, &mount_point, "configfs"));
        if mounted {
            Err(LioError::ModuleNotLoaded {
                module: "target_core_mod",
                why: format!(
                    "configfs is mounted on {} but {} does not exist",
                    mount_point.display(),
                    target.display()
                ),
            })
        } else {
            Err(LioError::ConfigfsNotMounted {
                mount_point_missing: !mount_point.is_dir(),
                mount_point,
                target: target.clone(),
            })
        }
    }

    /// TCMU support: `<sysfs>/module/target_core_user` exists (it has
    /// module parameters, so it is there even when built in), or some
    /// `core/user_*` HBA does (which only the loaded backend allows).
    pub(super) fn check_tcmu_module(&self) -> Result<(), LioError> {
        let module = self.roots.module_dir("target_core_user");
        if module.is_dir() || !user_hbas(&self.roots).is_empty() {
            return Ok(());
        }
        Err(LioError::ModuleNotLoaded {
            module: "target_core_user",
            why: format!("{} does not exist", module.display()),
        })
    }

    /// tcm_loop: `<configfs>/loopback` exists (someone registered the
    /// fabric) or `<sysfs>/module/tcm_loop` does. `mkdir loopback` would
    /// load the module through the kernel's request_module; we don't rely on
    /// that.
    pub(super) fn check_tcm_loop(&self) -> Result<(), LioError> {
        let module = self.roots.module_dir("tcm_loop");
        if self.roots.loopback_dir().is_dir() || module.is_dir() {
            return Ok(());
        }
        Err(LioError::ModuleNotLoaded {
            module: "tcm_loop",
            why: format!(
                "neither {} nor {} exists",
                module.display(),
                self.roots.loopback_dir().display()
            ),
        })
    }
}

/// Whether `/proc/self/mounts` text `mounts` has a mount of type `fstype` on
/// `mount_point` (octal escapes in the mount point are decoded).
fn is_mounted(mounts: &str, mount_point: &Path, fstype: &str) -> bool {
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_, Some(point), Some(kind)) = (fields.next(), fields.next(), fields.next()) else {
            return false;
        };
        kind == fstype && Path::new(&unescape_mount_field(point)) == mount_point
    })
}

/// Decodes the `\ooo` octal escapes the kernel uses in `/proc/*/mounts`.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(digits) = bytes.get(i + 1..i + 4) {
                if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let value = digits
                        .iter()
                        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                    if let Ok(byte) = u8::try_from(value) {
                        out.push(byte);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_table() {
        let m = "sysfs /sys sysfs rw 0 0\nnone /sys/kernel/config configfs rw,relatime 0 0\n\
                 x /mnt/with\\040space configfs rw 0 0\n";
        assert!(is_mounted(m, Path::new("/sys/kernel/config"), "configfs"));
        assert!(!is_mounted(m, Path::new("/sys"), "configfs"));
        assert!(is_mounted(m, Path::new("/mnt/with space"), "configfs"));
        assert!(!is_mounted("", Path::new("/sys/kernel/config"), "configfs"));
        assert_eq!(unescape_mount_field("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_mount_field("a\\9"), "a\\9");
        assert_eq!(unescape_mount_field("end\\"), "end\\");
    }
}
