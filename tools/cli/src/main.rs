//! `dataplane`: the command-line tool of the SCSI dataplane.
//!
//! - `dataplane bench`: the whole dataplane (reactors, SPSC rings, bdevs, the
//!   SCSI layer, the TCMU or SCST frontend) against the built-in kernel simulator; no
//!   root, no kernel modules.
//! - `dataplane serve`: serve real LIO/TCMU and SCST (scst_user) devices from a
//!   configuration file.
//! - `dataplane lio`: create, delete and list TCMU devices in LIO's configfs.
//! - `dataplane scst`: add SCST LUNs for the dataplane's scst_user devices.
//! - `dataplane rpc`: one call on the control socket of `dataplane serve`.
//!
//! The doc comments of the argument types are clap's `--help` text, written
//! for a terminal (`[[scst]]`, `user_<HBA>`), not as rustdoc markup.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use logging::LogFormat;

mod args;
mod bench;
mod lio;
mod logging;
mod metrics;
mod rpc;
mod scst;
mod serve;
mod systemd;
mod table;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A polled userspace SCSI dataplane for LIO/TCMU and SCST.
#[derive(Debug, Parser)]
#[command(name = "dataplane", version, about, long_about = None)]
struct Cli {
    /// Log level or filter in env-filter syntax (error, warn, info, debug,
    /// trace, or e.g. "info,dataplane::serve=debug"); default: $DATAPLANE_LOG,
    /// else info.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log lines: human text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark the full dataplane against the built-in kernel simulator.
    Bench(bench::BenchArgs),
    /// Serve LIO/TCMU and SCST (scst_user) devices (runs until SIGTERM).
    Serve(serve::ServeArgs),
    /// Create, delete and list TCMU devices in LIO's configfs.
    Lio(lio::LioArgs),
    /// Add or remove SCST LUNs for dataplane devices (scst_local, iSCSI).
    Scst(scst::ScstArgs),
    /// Call a method on the control socket of `dataplane serve` (JSON-RPC).
    Rpc(rpc::RpcArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = logging::init(cli.log_level.as_deref(), cli.log_format) {
        eprintln!("dataplane: error: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Lio(args) => lio::run(args),
        Command::Scst(args) => scst::run(args),
        Command::Rpc(args) => rpc::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dataplane: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
