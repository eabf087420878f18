//! The kernel's name of a TCMU ring's UIO device,
//! `tcm-user/<hba>/<name>/<dev_config>`, and the `<subtype>/<cfg>`
//! convention of `dev_config`.

use std::fmt;

use super::error::DiscoveryError;

/// A TCMU UIO device name that follows the `dev_config` convention:
/// `tcm-user/<hba>/<name>/<subtype>/<cfg>`.
///
/// `<name>` is the configfs directory name (never contains `/`); `<subtype>`
/// is the first `/`-separated part of `dev_config`; `<cfg>` is everything
/// after it (it may be empty or contain further `/` for other handlers; for
/// ours it is a bdev name, see [`TcmuUioName::bdev`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcmuUioName {
    /// The HBA index N of `core/user_N`.
    pub hba: u32,
    /// The device's configfs name.
    pub name: String,
    /// The handler subtype (`dataplane` for us).
    pub subtype: String,
    /// The handler configuration string.
    pub cfg: String,
}

/// The prefix of every TCMU UIO device name.
pub const TCMU_UIO_PREFIX: &str = "tcm-user/";

impl TcmuUioName {
    /// Parses a UIO name (a trailing newline is ignored). `None` if it is not
    /// `tcm-user/<u32>/<name>/<subtype>/<cfg>` with a non-empty name and
    /// subtype: not a TCMU device, or one whose `dev_config` does not follow
    /// the `<subtype>/<cfg>` convention. Such a device is simply not ours.
    pub fn parse(uio_name: &str) -> Option<Self> {
        let (hba, name, dev_config) = parse_tcmu_ident(uio_name)?;
        let (subtype, cfg) = dev_config.split_once('/')?;
        if subtype.is_empty() {
            return None;
        }
        Some(Self {
            hba,
            name: name.to_owned(),
            subtype: subtype.to_owned(),
            cfg: cfg.to_owned(),
        })
    }

    /// `<cfg>` as a bdev name: non-empty, without `/`.
    pub fn bdev(&self) -> Result<&str, DiscoveryError> {
        let why = if self.cfg.is_empty() {
            "the handler configuration (bdev name) after the subtype is empty"
        } else if self.cfg.contains('/') {
            "the handler configuration (bdev name) contains '/'"
        } else {
            return Ok(&self.cfg);
        };
        Err(DiscoveryError::BadBdevName {
            uio_name: self.to_string(),
            why,
        })
    }
}

impl fmt::Display for TcmuUioName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TCMU_UIO_PREFIX}{}/{}/{}/{}",
            self.hba, self.name, self.subtype, self.cfg
        )
    }
}

/// Splits `tcm-user/<hba>/<name>[/<dev_config>]` into its parts (trailing
/// newline ignored). `dev_config` is `""` when absent.
pub fn parse_tcmu_ident(uio_name: &str) -> Option<(u32, &str, &str)> {
    let rest = uio_name
        .trim_end_matches('\n')
        .strip_prefix(TCMU_UIO_PREFIX)?;
    let (hba, rest) = rest.split_once('/')?;
    if hba.is_empty() || !hba.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hba = hba.parse().ok()?;
    let (name, dev_config) = rest.split_once('/').unwrap_or((rest, ""));
    if name.is_empty() {
        return None;
    }
    Some((hba, name, dev_config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_our_uio_names() {
        let n = TcmuUioName::parse("tcm-user/3/disk0/dataplane/ram0\n").unwrap();
        assert_eq!(
            n,
            TcmuUioName {
                hba: 3,
                name: "disk0".into(),
                subtype: "dataplane".into(),
                cfg: "ram0".into(),
            }
        );
        assert_eq!(n.bdev().unwrap(), "ram0");
        assert_eq!(n.to_string(), "tcm-user/3/disk0/dataplane/ram0");

        // Another handler's cfg may contain '/': parsed, but not a bdev name.
        let n = TcmuUioName::parse("tcm-user/0/vol/qcow/var/lib/a.qcow2").unwrap();
        assert_eq!(n.subtype, "qcow");
        assert_eq!(n.cfg, "var/lib/a.qcow2");
        let err = n.bdev().unwrap_err().to_string();
        assert!(err.contains("contains '/'"), "{err}");
        assert!(err.contains("tcm-user/0/vol/qcow/var/lib/a.qcow2"), "{err}");

        let n = TcmuUioName::parse("tcm-user/0/vol/dataplane/").unwrap();
        assert_eq!(n.cfg, "");
        assert!(n.bdev().unwrap_err().to_string().contains("is empty"));
    }

    #[test]
    fn names_that_are_not_ours_do_not_parse() {
        for name in [
            "",
            "uio_pdrv_genirq",
            "tcm-user",
            "tcm-user/",
            "tcm-user/x/disk0/dataplane/ram0",
            "tcm-user/-1/disk0/dataplane/ram0",
            "tcm-user/99999999999/disk0/dataplane/ram0",
            "tcm-user/0//dataplane/ram0",
            "tcm-user/0/disk0",
            "tcm-user/0/disk0/",
            "tcm-user/0/disk0/noslash",
            "tcm-user/0/disk0//ram0",
            "tcm-users/0/disk0/dataplane/ram0",
        ] {
            assert_eq!(TcmuUioName::parse(name), None, "{name:?}");
        }
        assert_eq!(parse_tcmu_ident("tcm-user/0/disk0"), Some((0, "disk0", "")));
        assert_eq!(
            parse_tcmu_ident("tcm-user/7/d/x/y\n"),
            Some((7, "d", "x/y"))
        );
    }
}
