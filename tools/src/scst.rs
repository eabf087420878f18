//! `dataplane scst`: add a dataplane SCST device as a LUN of scst_local or
//! an iSCSI target through /sys/kernel/scst_tgt.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

/// Flags of `dataplane scst` (being written).
#[derive(Debug, Args)]
pub struct ScstArgs {}

/// Runs `dataplane scst`.
pub fn run(_args: ScstArgs) -> Result<ExitCode> {
    bail!("dataplane scst is not available yet")
}
