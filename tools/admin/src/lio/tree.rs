//! Walks of LIO's configfs tree shared by create, delete and list: the
//! TCMU HBAs, their devices' settings, and the fabric LUN links that point
//! at TCMU devices (the walk itself is `dataplane::kernfs`'s).

use std::path::{Path, PathBuf};

use dataplane::kernfs::{self, read_trimmed, Roots};
pub(super) use dataplane::kernfs::{numbered_subdirs, subdirs, LunLink};

/// The `core/user_<N>` directories, sorted by N.
pub(super) fn user_hbas(roots: &Roots) -> Vec<(u32, PathBuf)> {
    let mut out: Vec<(u32, PathBuf)> = subdirs(&roots.core_dir())
        .into_iter()
        .filter_map(|name| {
            let n = name.strip_prefix("user_")?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((n.parse().ok()?, roots.core_dir().join(&name)))
        })
        .collect();
    out.sort();
    out
}

/// `attrib/<attr>` of TCMU device directory `dir`, else the token after
/// `info_key` in its `info`.
pub(super) fn attrib_or_info(dir: &Path, attr: &str, info_key: &str) -> Option<String> {
    if let Ok(value) = read_trimmed(&dir.join("attrib").join(attr)) {
        return Some(value);
    }
    let info = read_trimmed(&dir.join("info")).ok()?;
    let mut tokens = info.split_whitespace();
    while let Some(token) = tokens.next() {
        if token == info_key {
            return tokens.next().map(str::to_owned);
        }
    }
    None
}

/// The handler subtype and cfg of TCMU device directory `dir`, from its
/// `dev_config` (`<subtype>/<cfg>`; the whole value is the subtype if it
/// has no `/`); both `None` when it was never configured.
pub(super) fn dev_config(dir: &Path) -> (Option<String>, Option<String>) {
    let config = attrib_or_info(dir, "dev_config", "Config:");
    match config.filter(|c| !c.is_empty() && c != "NULL") {
        Some(c) => match c.split_once('/') {
            Some((s, b)) => (Some(s.to_owned()), Some(b.to_owned())),
            None => (Some(c), None),
        },
        None => (None, None),
    }
}

/// Every LUN symlink under every fabric that points at a TCMU device.
pub(super) fn lun_links(roots: &Roots) -> Vec<LunLink> {
    kernfs::lun_links(&roots.configfs)
        .into_iter()
        .filter(|l| l.tcmu().is_some())
        .collect()
}
