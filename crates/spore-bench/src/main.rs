//! Benchmarks that print numbers side by side with the reference tools named
//! in DESIGN.md §8. They are commands, not tests: nothing here asserts a time.
//!
//! `cargo run --release -p spore-bench -- import|transfer|compare|streaming|footprint` (see docs/benchmarks.md).

mod compare;
mod footprint;
mod import;
mod streaming;
mod transfer;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "spore-bench",
    about = "spore benchmarks, beside the reference tools"
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// `spore add` (hash + bao outboard, in place) against `b3sum` on the same file.
    Import(import::Args),
    /// One node downloads a blob from another (both in this process, on
    /// loopback), verified and written to disk.
    Transfer(transfer::Args),
    /// spore 1→1 beside libtorrent, aria2 and kubo on the same file
    /// (install them with scripts/bench-deps).
    Compare(compare::Args),
    /// Time to the first 4 MiB and seek latency of remote content read
    /// through a node's HTTP gateway (loopback, a fresh node per run).
    Streaming(streaming::Args),
    /// Start-up time and memory of the real `spore` binary: idle, and while
    /// moving a blob between two node processes at 1 Gbit/s.
    Footprint(footprint::Args),
}

/// A temporary working directory, inside `dir` (created if missing) when given.
fn scratch_dir(dir: Option<&std::path::Path>) -> anyhow::Result<tempfile::TempDir> {
    use anyhow::Context;
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            tempfile::tempdir_in(dir).with_context(|| format!("cannot work in {}", dir.display()))
        }
        None => tempfile::tempdir().context("cannot create a temporary directory"),
    }
}

fn main() -> anyhow::Result<()> {
    // Quiet unless asked: `RUST_LOG=spore_node=debug,yamux=debug spore-bench …`.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    match Cli::parse().bench {
        Bench::Import(args) => import::run(args),
        Bench::Transfer(args) => transfer::run(args),
        Bench::Compare(args) => compare::run(args),
        Bench::Streaming(args) => streaming::run(args),
        Bench::Footprint(args) => footprint::run(args),
    }
}

/// The value at fraction `p` (0 to 1) of `values`, which it sorts in place
/// (nearest rank); `None` when there are none.
pub(crate) fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(i).copied()
}
