//! What a configuration reload changes: [`plan`] compares the running
//! configuration with a new, already validated one.
//!
//! # Rules
//! - `[reactors]` cannot change while serving (its threads are pinned and
//!   every device is placed on them): such a configuration is refused.
//! - A bdev is *rebuilt* (taken away, then made again) when its definition
//!   changed, or when a bdev it stands on (a striped bdev's children, a
//!   fault bdev's base) is rebuilt or removed while it stays.
//! - An `[[scst]]` device is re-registered (removed, then added) when its
//!   definition changed or its bdev is rebuilt; devices whose definition and
//!   bdev are unchanged are left alone, so their I/O never stops.
//! - `[tcmu]` changes apply to TCMU devices attached from then on.
//!
//! The plan orders its steps so that each one finds what it needs: SCST
//! devices go before the bdevs under them, bdevs before those they stand
//! on; new bdevs are made children first, then the SCST devices over them.
//! Whether the server can carry a step out (a TCMU device still on a bdev
//! to be removed, a kind of bdev it cannot make while running) is for the
//! server to check before it applies anything.

use std::collections::HashSet;

use super::config::{BdevConfig, ScstConfig, ServeConfig};

/// Why a new configuration cannot be applied while serving (nothing of it
/// was applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// `[reactors]` changed.
    #[error("[reactors] cannot change while serving (restart serve to apply it)")]
    Reactors,
    /// A bdev the new configuration removes or rebuilds is used by
    /// something that stays (a TCMU device, or a device or bdev created
    /// over the control socket).
    #[error("bdev {bdev:?} would be removed or rebuilt but {} uses it", users.join(", "))]
    InUse {
        /// The bdev.
        bdev: String,
        /// What uses it.
        users: Vec<String>,
    },
    /// A bdev the new configuration adds has the name of one created over
    /// the control socket.
    #[error("bdev {0:?} is in the new configuration but one of that name was created over the control socket: delete it first")]
    Exists(String),
    /// An `[[scst]]` device the new configuration adds has the name of
    /// one added over the control socket.
    #[error("SCST device {0:?} is in the new configuration but one of that name was added over the control socket: remove it first")]
    DeviceExists(String),
}

/// What a reload did: the plan, and the steps that failed (each logged;
/// the others were carried out).
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    /// The steps.
    pub plan: ReloadPlan,
    /// The steps that failed, each with why.
    pub failed: Vec<String>,
}

/// The steps of a reload, in the order they are applied. See the module
/// docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// `[[scst]]` devices to remove (unregistered: SCST drops their LUNs),
    /// by name.
    pub scst_removed: Vec<String>,
    /// Bdevs to remove, users before what they stand on.
    pub bdevs_removed: Vec<String>,
    /// Bdevs to make, what they stand on first.
    pub bdevs_added: Vec<BdevConfig>,
    /// `[[scst]]` devices to register (and export), in configuration order.
    pub scst_added: Vec<ScstConfig>,
    /// `[tcmu]` changed (for devices attached from now on).
    pub tcmu_changed: bool,
}

impl ReloadPlan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == ReloadPlan::default()
    }

    /// One line for the log: what goes, what comes.
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "nothing changed".to_owned();
        }
        let mut parts = Vec::new();
        let names = |v: &[String]| v.join(", ");
        if !self.scst_removed.is_empty() {
            parts.push(format!(
                "SCST devices removed: {}",
                names(&self.scst_removed)
            ));
        }
        if !self.bdevs_removed.is_empty() {
            parts.push(format!("bdevs removed: {}", names(&self.bdevs_removed)));
        }
        if !self.bdevs_added.is_empty() {
            let added: Vec<String> = self
                .bdevs_added
                .iter()
                .map(|b| b.name().to_owned())
                .collect();
            parts.push(format!("bdevs made: {}", names(&added)));
        }
        if !self.scst_added.is_empty() {
            let added: Vec<String> = self.scst_added.iter().map(|c| c.name.clone()).collect();
            parts.push(format!("SCST devices registered: {}", names(&added)));
        }
        if self.tcmu_changed {
            parts.push("[tcmu] changed (for TCMU devices attached from now on)".to_owned());
        }
        parts.join("; ")
    }
}

/// The bdevs `b` stands on directly.
fn stands_on(b: &BdevConfig) -> Vec<&str> {
    match b {
        BdevConfig::Striped { children, .. } => children.iter().map(String::as_str).collect(),
        BdevConfig::Fault { base, .. } => vec![base.as_str()],
        _ => Vec::new(),
    }
}

fn find<'a>(bdevs: &'a [BdevConfig], name: &str) -> Option<&'a BdevConfig> {
    bdevs.iter().find(|b| b.name() == name)
}

/// The steps from `old` (running) to `new` (validated). See the module
/// docs.
pub fn plan(old: &ServeConfig, new: &ServeConfig) -> Result<ReloadPlan, ReloadError> {
    if old.reactors != new.reactors {
        return Err(ReloadError::Reactors);
    }
    // Bdevs of `old` that go away: removed or changed, then everything in
    // `old` standing on one of those, to a fixed point.
    let mut going: HashSet<&str> = old
        .bdevs
        .iter()
        .filter(|b| find(&new.bdevs, b.name()) != Some(*b))
        .map(BdevConfig::name)
        .collect();
    loop {
        let more: Vec<&str> = old
            .bdevs
            .iter()
            .filter(|b| !going.contains(b.name()))
            .filter(|b| stands_on(b).iter().any(|n| going.contains(n)))
            .map(BdevConfig::name)
            .collect();
        if more.is_empty() {
            break;
        }
        going.extend(more);
    }
    // Removal order: a bdev before those it stands on.
    let mut bdevs_removed = Vec::new();
    let mut left: Vec<&BdevConfig> = old
        .bdevs
        .iter()
        .filter(|b| going.contains(b.name()))
        .collect();
    while !left.is_empty() {
        let (ready, wait): (Vec<&BdevConfig>, Vec<&BdevConfig>) = left
            .iter()
            .partition(|b| !left.iter().any(|user| stands_on(user).contains(&b.name())));
        if ready.is_empty() {
            // A cycle: validation refuses those; take the rest as they come.
            bdevs_removed.extend(wait.iter().map(|b| b.name().to_owned()));
            break;
        }
        bdevs_removed.extend(ready.iter().map(|b| b.name().to_owned()));
        left = wait;
    }
    // Bdevs of `new` to make: those not in `old` or going; what they stand
    // on first.
    let mut bdevs_added = Vec::new();
    let mut made: HashSet<&str> = new
        .bdevs
        .iter()
        .map(BdevConfig::name)
        .filter(|n| find(&old.bdevs, n).is_some() && !going.contains(n))
        .collect();
    let mut left: Vec<&BdevConfig> = new
        .bdevs
        .iter()
        .filter(|b| !made.contains(b.name()))
        .collect();
    while !left.is_empty() {
        let (ready, wait): (Vec<&BdevConfig>, Vec<&BdevConfig>) = left
            .iter()
            .partition(|b| stands_on(b).iter().all(|n| made.contains(n)));
        if ready.is_empty() {
            bdevs_added.extend(wait.into_iter().cloned());
            break;
        }
        for b in ready {
            made.insert(b.name());
            bdevs_added.push(b.clone());
        }
        left = wait;
    }
    // SCST devices: changed, gone, or over a bdev that is rebuilt.
    let rebuilt = |bdev: &str| going.contains(bdev);
    let scst_removed: Vec<String> = old
        .scst
        .iter()
        .filter(|c| new.scst.iter().find(|n| n.name == c.name) != Some(*c) || rebuilt(&c.bdev))
        .map(|c| c.name.clone())
        .collect();
    let scst_added: Vec<ScstConfig> = new
        .scst
        .iter()
        .filter(|c| old.scst.iter().all(|o| o.name != c.name) || scst_removed.contains(&c.name))
        .cloned()
        .collect();
    Ok(ReloadPlan {
        scst_removed,
        bdevs_removed,
        bdevs_added,
        scst_added,
        tcmu_changed: old.tcmu != new.tcmu,
    })
}

#[cfg(test)]
mod tests;
