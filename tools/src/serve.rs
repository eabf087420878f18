//! `dataplane serve`: serve TCMU devices from a configuration file.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

/// Flags of `dataplane serve` (being written).
#[derive(Debug, Args)]
pub struct ServeArgs {}

/// Runs `dataplane serve`.
pub fn run(_args: ServeArgs) -> Result<ExitCode> {
    bail!("dataplane serve is not available yet")
}
