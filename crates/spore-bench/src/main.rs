//! Benchmarks that print numbers side by side with the reference tools named
//! in DESIGN.md §8. They are commands, not tests: nothing here asserts a time.
//!
//! `cargo run --release -p spore-bench -- import` (see docs/benchmarks.md).

mod import;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Import(args) => import::run(args),
    }
}
