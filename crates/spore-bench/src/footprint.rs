//! The real binary's footprint (DESIGN.md §6: start-up < 200 ms, idle
//! ≤ 30 MiB RSS, ≤ 64 MiB while moving 1 Gbit/s): `spore node` processes on
//! 127.0.0.1, memory read from `/proc/<pid>/status`.
//!
//! RSS counts the file pages a process has mapped as well as its own memory,
//! so both are printed: `anon` is what the node allocated, `file` is mostly
//! page cache of the shared file, which the kernel can drop at any time.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The spore binary (default: `spore` next to this binary).
    #[arg(long)]
    spore: Option<PathBuf>,
    /// Start-ups timed (each in a fresh home).
    #[arg(long, default_value_t = 5)]
    starts: usize,
    /// Seconds a node sits idle before its memory is read.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Size of the blob moved between two nodes, MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// The seed's upload limit while moving it, MiB/s (119 MiB/s is 1 Gbit/s).
    #[arg(long, default_value_t = 119)]
    rate_mib: u64,
}

pub(crate) fn run(args: Args) -> Result<()> {
    let spore = match args.spore {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("spore"),
    };
    if !spore.exists() {
        bail!(
            "{} not found: build it with `cargo build --release --bin spore` or pass --spore",
            spore.display()
        );
    }
    let scratch = tempfile::tempdir()?;

    let mut times = Vec::new();
    for i in 0..args.starts {
        let (node, took) = Node::start(&spore, &scratch.path().join(format!("start-{i}")), &[])?;
        times.push(took);
        drop(node);
    }
    times.sort();
    println!(
        "start-up (spawn to API and listeners up), {} runs: best {:.0} ms, median {:.0} ms  (target < 200 ms)",
        times.len(),
        ms(times[0]),
        ms(times[times.len() / 2])
    );

    let rate = format!("{}MiB", args.rate_mib);
    let (seed, _) = Node::start(
        &spore,
        &scratch.path().join("seed"),
        &["--max-upload", &rate],
    )?;
    std::thread::sleep(Duration::from_secs(args.idle_secs));
    println!(
        "idle node after {} s: {}  (target <= 30 MiB)",
        args.idle_secs,
        Memory::of(seed.pid())?
    );

    let file = crate::import::generate(&scratch.path().join("blob.bin"), args.size_mib << 20)?;
    let shared = seed.cli(&["--json", "share"], Some(&file))?;
    let ticket = last_json(&shared)?["ticket"]
        .as_str()
        .context("no ticket in `spore share` output")?
        .to_string();
    let (leecher, _) = Node::start(&spore, &scratch.path().join("leecher"), &[])?;
    let out = scratch.path().join("out.bin");
    let mut get = leecher
        .command(&["--json", "get", &ticket, "--no-progress", "-o"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    let (mut seed_peak, mut leecher_peak) = (Memory::default(), Memory::default());
    let status = loop {
        seed_peak = seed_peak.max(Memory::of(seed.pid())?);
        leecher_peak = leecher_peak.max(Memory::of(leecher.pid())?);
        if let Some(status) = get.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(600) {
            let _ = get.kill();
            bail!("the download took more than 600 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = get.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err)?;
        }
        bail!("`spore get` failed: {err}");
    }
    let got = std::fs::metadata(&out)?.len();
    if got != args.size_mib << 20 {
        bail!("downloaded {got} bytes, expected {}", args.size_mib << 20);
    }
    let mib_s = args.size_mib as f64 / took.as_secs_f64();
    println!(
        "moving {} MiB seed → leecher at {mib_s:.0} MiB/s ({:.2} Gbit/s; seed capped at {rate}/s), peaks while moving:",
        args.size_mib,
        mib_s * 8.0 * 1.048_576 / 1000.0,
    );
    println!("  seed     {seed_peak}  (target <= 64 MiB)");
    println!("  leecher  {leecher_peak}  (target <= 64 MiB)");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn last_json(out: &str) -> Result<Value> {
    serde_json::from_str(out.lines().last().unwrap_or(""))
        .with_context(|| format!("reading JSON from {out:?}"))
}

/// A `spore node` process in its own home; killed on drop.
struct Node {
    spore: PathBuf,
    home: PathBuf,
    child: Child,
}

impl Node {
    /// Starts a node on 127.0.0.1 (random ports, no mDNS) and waits until it
    /// prints that it is up; returns how long that took.
    fn start(spore: &Path, home: &Path, extra: &[&str]) -> Result<(Self, Duration)> {
        let started = Instant::now();
        let mut child = Command::new(spore)
            .arg("--home")
            .arg(home)
            .args(["--json", "node", "--port", "0", "--listen-ip", "127.0.0.1"])
            .args(["--api", "127.0.0.1:0", "--no-mdns"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", spore.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let took = started.elapsed();
        let node = Self {
            spore: spore.to_path_buf(),
            home: home.to_path_buf(),
            child,
        };
        if line.trim().is_empty() {
            bail!("`spore node` in {} exited before it was up", home.display());
        }
        Ok((node, took))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.spore);
        cmd.arg("--home").arg(&self.home).args(args);
        cmd
    }

    /// Runs a CLI command against this node; returns its stdout.
    fn cli(&self, args: &[&str], path: Option<&Path>) -> Result<String> {
        let mut cmd = self.command(args);
        if let Some(path) = path {
            cmd.arg(path);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            bail!(
                "spore {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Memory of a process, KiB, from `/proc/<pid>/status`.
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    rss: u64,
    anon: u64,
    file: u64,
}

impl Memory {
    fn of(pid: u32) -> Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading the memory of process {pid}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            rss: field("VmRSS:"),
            anon: field("RssAnon:"),
            file: field("RssFile:"),
        })
    }

    /// Each field's maximum (peaks need not coincide).
    fn max(self, other: Self) -> Self {
        Self {
            rss: self.rss.max(other.rss),
            anon: self.anon.max(other.anon),
            file: self.file.max(other.file),
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |k: u64| k as f64 / 1024.0;
        write!(
            f,
            "RSS {:.1} MiB (anon {:.1}, file {:.1})",
            mib(self.rss),
            mib(self.anon),
            mib(self.file)
        )
    }
}
