//! `spore-testbed`: run scenarios on hosts in network namespaces.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use spore_testbed::check::{CheckConfig, check_table, run_check};
use spore_testbed::emulator::{LinkShape, RelayConfig, run_relay};
use spore_testbed::net::{PREFIX, cleanup, install_signal_cleanup, require_root};
use spore_testbed::rounds::{Client, Rounds, run_rounds};
use spore_testbed::runner::RunOptions;
use spore_testbed::scenario::Scenario;

/// Many hosts in Linux network namespaces, with rate caps and emulated
/// latency/jitter/loss; scenarios that run spore (or aria2) on them.
#[derive(Debug, Parser)]
#[command(name = "spore-testbed", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Tool {
    Spore,
    Aria2,
    Both,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a scenario (needs root) and write JSON, Markdown and SVG plots.
    Run {
        scenario: PathBuf,
        /// The spore binary (default: `spore` next to this binary). Given
        /// more than once, every round runs each build in turn, and the
        /// summary compares them.
        #[arg(long)]
        spore: Vec<PathBuf>,
        /// Run the scenario this many times (rounds). With more than one,
        /// each run's reports go to OUT/BUILD/run-K, and a summary gives
        /// per build how many runs finished every remaining download and
        /// their ratios to the bound (churn is measured by its pass rate).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
        /// Round K runs the scenario with its seed + K - 1 (other leave
        /// times, other departing hosts), not the same schedule every time.
        #[arg(long)]
        vary_seed: bool,
        /// Where the reports go.
        #[arg(long, default_value = "testbed-results")]
        out: PathBuf,
        /// Working directory for homes and files (default: a new one under /tmp).
        #[arg(long)]
        work: Option<PathBuf>,
        /// Keep the working directory (node logs, downloaded files).
        #[arg(long)]
        keep: bool,
        /// Which client runs the scenario; `both` runs spore, then aria2.
        #[arg(long, value_enum, default_value = "spore")]
        tool: Tool,
        /// RUST_LOG for the nodes.
        #[arg(long, default_value = "info")]
        log: String,
        /// Override the file size of the scenario (MiB).
        #[arg(long)]
        size_mib: Option<f64>,
        /// Override the scenario's time limit (seconds): a churn run that
        /// lost a group otherwise waits out the whole limit.
        #[arg(long)]
        timeout_s: Option<f64>,
        /// A spore.toml for every spore node, e.g. `[net]` `quic = false`
        /// for a run where every connection is TCP.
        #[arg(long)]
        node_config: Option<PathBuf>,
        /// Override the scenario's TCP congestion control for every host
        /// (`bbr`, `cubic`, …; see /proc/sys/net/ipv4/tcp_available_congestion_control).
        #[arg(long)]
        congestion: Option<String>,
    },
    /// Check a scenario file without running it (no root needed).
    Validate { scenario: PathBuf },
    /// Measure a two-host link with ping and iperf3 (needs root).
    Check {
        #[arg(long, default_value_t = 50.0)]
        up_mbit: f64,
        #[arg(long, default_value_t = 1000.0)]
        down_mbit: f64,
        /// One-way delay per host (RTT = 2 × this).
        #[arg(long, default_value_t = 10.0)]
        delay_ms: f64,
        #[arg(long, default_value_t = 0.0)]
        jitter_ms: f64,
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        #[arg(long, default_value_t = 200)]
        pings: u32,
        #[arg(long, default_value_t = 5)]
        iperf_seconds: u32,
    },
    /// Remove every namespace (with its veths, bridge, TUN devices and
    /// processes) that a testbed left behind, and the working directories
    /// (`$TMPDIR/spore-testbed-*`) of interrupted runs.
    Cleanup,
    /// (internal) The link emulator of one host, run inside its namespace.
    #[command(hide = true)]
    Relay {
        #[arg(long)]
        tun: String,
        #[arg(long)]
        mark: u32,
        #[arg(long, default_value_t = 0.0)]
        delay_ms: f64,
        #[arg(long, default_value_t = 0.0)]
        jitter_ms: f64,
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        #[arg(long)]
        reorder: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1500)]
        mtu: u16,
        #[arg(long)]
        stats: Option<PathBuf>,
    },
    /// (internal) GET a path of the spore node API of a home, run inside a namespace.
    #[command(hide = true)]
    Api {
        #[arg(long)]
        home: PathBuf,
        path: String,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn load(path: &Path, size_mib: Option<f64>, timeout_s: Option<f64>) -> Result<Scenario> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut scenario = Scenario::parse(&text).with_context(|| format!("in {}", path.display()))?;
    if let Some(s) = size_mib {
        scenario.file.size_mib = s;
    }
    if let Some(t) = timeout_s {
        scenario.timeout_s = t;
    }
    scenario
        .plan()
        .with_context(|| format!("in {}", path.display()))?;
    Ok(scenario)
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let exe = std::env::current_exe().context("finding this binary")?;
    match cli.command {
        Cmd::Validate { scenario } => {
            let plan = load(&scenario, None, None)?.plan()?;
            println!(
                "{}: {} hosts, {} events, {} MiB",
                plan.name,
                plan.hosts.len(),
                plan.events.len(),
                plan.file_bytes >> 20
            );
            if let Some(b) = spore_testbed::report::plan_bound(&plan) {
                println!("Kumar–Ross bound: {:.2} s", b.seconds);
            }
        }
        Cmd::Cleanup => {
            require_root()?;
            let mut removed = cleanup(PREFIX)?;
            // working directories of interrupted runs (homes, logs, big files)
            for entry in std::fs::read_dir(std::env::temp_dir())?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("spore-testbed-") && entry.path().is_dir() {
                    std::fs::remove_dir_all(entry.path())?;
                    removed.push(entry.path().display().to_string());
                }
            }
            if removed.is_empty() {
                println!("nothing to remove");
            } else {
                println!("removed {}", removed.join(", "));
            }
        }
        Cmd::Relay {
            tun,
            mark,
            delay_ms,
            jitter_ms,
            loss,
            reorder,
            seed,
            mtu,
            stats,
        } => {
            let shape = LinkShape {
                delay: Duration::from_secs_f64(delay_ms / 1000.0),
                jitter: Duration::from_secs_f64(jitter_ms / 1000.0),
                loss,
                reorder,
                ..LinkShape::default()
            };
            run_relay(&RelayConfig {
                tun,
                mtu,
                mark,
                shape,
                seed,
                stats_file: stats,
            })?;
        }
        Cmd::Api { home, path } => {
            let token = std::fs::read_to_string(home.join("config/api-token"))
                .context("reading the API token")?;
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            let mut resp = agent
                .get(format!("http://127.0.0.1:5323{path}"))
                .header("Authorization", format!("Bearer {}", token.trim()))
                .call()?;
            println!("{}", resp.body_mut().read_to_string()?);
        }
        Cmd::Check {
            up_mbit,
            down_mbit,
            delay_ms,
            jitter_ms,
            loss,
            pings,
            iperf_seconds,
        } => {
            require_root()?;
            install_signal_cleanup()?;
            let cfg = CheckConfig {
                up_mbit,
                down_mbit,
                delay_ms,
                jitter_ms,
                loss,
                pings,
                iperf_seconds,
            };
            let r = run_check(&cfg, &exe)?;
            print!("{}", check_table(&cfg, &r));
        }
        Cmd::Run {
            scenario,
            spore,
            runs,
            vary_seed,
            out,
            work,
            keep,
            tool,
            log,
            size_mib,
            timeout_s,
            node_config,
            congestion,
        } => {
            let mut scenario = load(&scenario, size_mib, timeout_s)?;
            if congestion.is_some() {
                scenario.congestion = congestion;
            }
            require_root()?;
            install_signal_cleanup()?;
            let builds = if spore.is_empty() {
                vec![exe.with_file_name("spore")]
            } else {
                spore
            };
            if matches!(tool, Tool::Spore | Tool::Both) {
                for b in &builds {
                    if !b.is_file() {
                        bail!(
                            "no spore binary at {} (build it: cargo build --release --bin spore, or pass --spore)",
                            b.display()
                        );
                    }
                }
            }
            if let Some(c) = &node_config
                && !c.is_file()
            {
                bail!("no node configuration at {}", c.display());
            }
            let id = std::process::id();
            let work =
                work.unwrap_or_else(|| std::env::temp_dir().join(format!("spore-testbed-{id}")));
            let spore_builds: &[PathBuf] = if matches!(tool, Tool::Aria2) {
                &[]
            } else {
                &builds
            };
            let clients = Client::list(spore_builds, matches!(tool, Tool::Aria2 | Tool::Both));
            let options = RunOptions {
                spore: builds[0].clone(),
                testbed_exe: exe.clone(),
                work: work.clone(),
                keep,
                log,
                node_config,
            };
            let rounds = Rounds {
                runs,
                vary_seed,
                out,
            };
            let tallies = run_rounds(&scenario, &clients, &rounds, &options, &id.to_string())?;
            if !keep {
                let _ = std::fs::remove_dir_all(&work);
            }
            if tallies.iter().any(|t| t.finished < t.runs) {
                bail!("not every remaining download finished");
            }
        }
    }
    Ok(())
}
