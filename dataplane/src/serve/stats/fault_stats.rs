//! Statistics of `fault` bdevs: what each injected since start, so a test
//! or a soak run can tell the failures it asked for from any other.

use std::fmt::Write as _;

use bdev::FaultBdev;
use serde::Serialize;

/// What a `fault` bdev injected since start (totals: the counters of the
/// bdev, over every channel).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FaultBdevStats {
    /// The bdev the faults are injected into.
    pub base: String,
    /// Number of rules.
    pub rules: usize,
    /// Requests failed with an injected error.
    pub failed: u64,
    /// Requests whose completion was delayed.
    pub delayed: u64,
    /// Requests held until aborted.
    pub stuck: u64,
    /// Requests aborted (stuck, or waiting out a delay).
    pub aborted: u64,
    /// Writes refused for want of space (the space limit).
    pub no_space: u64,
    /// Blocks allocated now, with a space limit (absent without).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub space_used_blocks: Option<u64>,
}

impl FaultBdevStats {
    /// The figures of `bdev` now.
    pub fn of(bdev: &FaultBdev) -> Self {
        let s = bdev.stats();
        Self {
            base: bdev.base().name().to_string(),
            rules: bdev.rules().len(),
            failed: s.failed,
            delayed: s.delayed,
            stuck: s.stuck,
            aborted: s.aborted,
            no_space: s.no_space,
            space_used_blocks: bdev.space_used(),
        }
    }

    /// The bdev's line of the text report.
    pub(super) fn render(&self, name: &str, s: &mut String) {
        let _ = write!(
            s,
            "  bdev {name} (fault over {}, {} rules): injected {} failed, {} delayed, \
             {} stuck, {} aborted, {} out of space",
            self.base,
            self.rules,
            self.failed,
            self.delayed,
            self.stuck,
            self.aborted,
            self.no_space
        );
        if let Some(used) = self.space_used_blocks {
            let _ = write!(s, ", {used} blocks used");
        }
        s.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bdev::fault::{FaultAction, FaultError, FaultRule, OpSet};
    use bdev::{BdevRef, IoOp, RamBdev};

    use super::*;

    #[test]
    fn a_fault_bdev_reports_its_base_rules_and_counters() {
        let base: BdevRef = Arc::new(RamBdev::new("ram0", 512, 2048).unwrap());
        let rule = FaultRule::new(
            OpSet::NONE.with(IoOp::Read),
            FaultAction::Fail(FaultError::Medium),
        );
        let fault = FaultBdev::new("f0", base, vec![rule], 1)
            .unwrap()
            .with_space_limit(64);
        let stats = FaultBdevStats::of(&fault);
        assert_eq!(stats.base, "ram0");
        assert_eq!(stats.rules, 1);
        assert_eq!(stats.failed, 0);
        assert_eq!(stats.space_used_blocks, Some(0));
        let mut text = String::new();
        stats.render("f0", &mut text);
        assert_eq!(
            text,
            "  bdev f0 (fault over ram0, 1 rules): injected 0 failed, 0 delayed, 0 stuck, \
             0 aborted, 0 out of space, 0 blocks used\n"
        );
    }
}
