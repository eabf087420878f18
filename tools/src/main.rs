//! `dataplane`: the command-line tool of the SCSI dataplane.
//!
//! - `dataplane bench`: the whole dataplane (reactors, SPSC rings, bdevs, the
//!   SCSI layer, the TCMU frontend) against the built-in kernel simulator; no
//!   root, no kernel modules.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A polled userspace SCSI dataplane for LIO/TCMU and SCST.
#[derive(Debug, Parser)]
#[command(name = "dataplane", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark the full dataplane against the built-in kernel simulator.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dataplane: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
