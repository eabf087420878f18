//! `dataplane lio`: create, delete and list TCMU devices in LIO's configfs.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

/// Flags of `dataplane lio` (being written).
#[derive(Debug, Args)]
pub struct LioArgs {}

/// Runs `dataplane lio`.
pub fn run(_args: LioArgs) -> Result<ExitCode> {
    bail!("dataplane lio is not available yet")
}
