//! Streaming through the gateway, remote content on loopback: a seed node
//! shares a generated file; a fresh node (a daemon with its HTTP gateway,
//! new for every run so nothing is local) is asked for it over HTTP with
//! Range requests, as a media player would:
//!
//! - *first 4 MiB*: `GET /b/<ticket>` with `Range: bytes=0-4194303`, from
//!   the request until the last of those bytes arrived (this includes
//!   finding the size: the blob's last group is fetched and verified first);
//! - *seek*: then a `Range` request at a random offset far from the start,
//!   timed to its first byte and to its first 1 MiB.
//!
//! Prints p50/p95 over the runs (target: both ≤ 1.5 s at p95, DESIGN.md §6).
//! `--verbose` prints every run with the seed's upload total, which shows
//! how much of the blob a viewer had fetched before its seek.

use std::{io::Read, sync::Arc, time::Instant};

use anyhow::{Context, Result, bail};
use spore_core::{ContentKind, Ticket};
use spore_http::Daemon;
use spore_net::{CancellationToken, NetConfig};
use spore_node::{Home, Node, NodeConfig};
use spore_store::ImportMode;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Size of the blob in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Runs, each with a fresh downloading node.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// The seed's upload limit in MiB/s (`[transfer] max_upload`; 0: unlimited).
    #[arg(long, default_value_t = 0)]
    seed_mib_per_s: u64,
    /// Print every run.
    #[arg(long)]
    verbose: bool,
    /// Where to put the file and the nodes' homes (default: a temporary directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn config(home: &Home) -> Result<NodeConfig> {
    let mut config = NodeConfig::load(home)?;
    let files = (
        config.net.identity_file.take(),
        config.net.address_book_file.take(),
    );
    config.net = NetConfig::for_tests();
    (config.net.identity_file, config.net.address_book_file) = files;
    config.api.listen = "127.0.0.1:0".parse()?;
    Ok(config)
}

/// Reads `len` bytes of a Range response; returns (time to first byte, time to all).
fn timed_range(url: &str, start: u64, len: u64) -> Result<(f64, f64)> {
    let t0 = Instant::now();
    let response = ureq::get(url)
        .header("Range", format!("bytes={start}-{}", start + len - 1))
        .call()
        .context("range request")?;
    if response.status().as_u16() != 206 {
        bail!("expected 206, got {}", response.status());
    }
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    let mut first = None;
    while got < len {
        let n = body.read(&mut buf)?;
        if n == 0 {
            bail!("the body ended after {got} of {len} bytes");
        }
        first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
        got += n as u64;
    }
    Ok((first.unwrap_or_default(), t0.elapsed().as_secs_f64()))
}

pub(crate) fn run(args: Args) -> Result<()> {
    let scratch = crate::scratch_dir(args.dir.as_deref())?;
    let size = args.size_mib << 20;
    if size < 16 << 20 {
        bail!("--size-mib must be at least 16");
    }
    let file = crate::import::generate(&scratch.path().join("video.bin"), size)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let seed_home = Home::under(&scratch.path().join("seed"));
    let (seed, ticket): (Arc<Node>, String) = runtime.block_on(async {
        let mut seed_config = config(&seed_home)?;
        seed_config.transfer.max_upload = args.seed_mib_per_s << 20;
        let seed = Node::start(seed_home.clone(), seed_config, CancellationToken::new()).await?;
        let added = seed.add(file.clone(), ImportMode::InPlace).await?;
        let hint = seed.net().local_provider_hint().await?;
        let ticket = Ticket::new(ContentKind::Blob, added.hash).with_providers(vec![hint]);
        anyhow::Ok((seed, ticket.to_string()))
    })?;
    let (mut first_4m, mut seek_first, mut seek_1m) = (Vec::new(), Vec::new(), Vec::new());

    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for run in 0..args.runs {
        let viewer_dir = scratch.path().join(format!("viewer-{run}"));
        let home = Home::under(&viewer_dir);
        let daemon = runtime.block_on(Daemon::start(home.clone(), config(&home)?))?;
        let url = format!("http://{}/b/{ticket}", daemon.api_addr());
        let (_, t) = timed_range(&url, 0, 4 << 20)?;
        first_4m.push(t);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let offset = (size / 4 + rng % (size / 2)) & !0xfff;
        let (f, t) = timed_range(&url, offset, 1 << 20)?;
        seek_first.push(f);
        seek_1m.push(t);
        if args.verbose {
            eprintln!(
                "run {run}: first 4 MiB {:.3} s, seek to {offset}: {:.3} s / {:.3} s; seed uploaded {} bytes so far",
                first_4m[run],
                seek_first[run],
                seek_1m[run],
                seed.transfer().upload_stats().total
            );
        }
        runtime.block_on(daemon.shutdown());
        std::fs::remove_dir_all(&viewer_dir).ok();
    }
    runtime.block_on(seed.shutdown());
    let runs = args.runs;
    let line = |name: &str, v: &mut Vec<f64>| {
        let p50 = crate::percentile(v, 0.5).unwrap_or(f64::NAN);
        let p95 = crate::percentile(v, 0.95).unwrap_or(f64::NAN);
        println!("{name:<34} p50 {p50:>6.3} s   p95 {p95:>6.3} s   ({runs} runs)");
    };
    let limit = match args.seed_mib_per_s {
        0 => "unlimited".to_string(),
        r => format!("{r} MiB/s"),
    };
    println!(
        "streaming through the gateway, remote {} MiB blob on loopback, seed upload {limit} (target: p95 <= 1.5 s)",
        args.size_mib
    );
    line("first 4 MiB (incl. size proof)", &mut first_4m);
    line("seek: first byte", &mut seek_first);
    line("seek: first 1 MiB", &mut seek_1m);

    Ok(())
}
