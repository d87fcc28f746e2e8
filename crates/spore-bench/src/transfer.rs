//! Transfer speed, 1 → 1 on loopback: a seed node shares a generated file in
//! place, a second node downloads it (every 16 KiB group verified, written to
//! its store on disk). Both nodes run in this process. `compare` runs the
//! same measurement beside the reference tools.

use std::{sync::Arc, time::Instant};

use anyhow::{Context, Result, bail};
use spore_net::{CancellationToken, NetConfig};
use spore_node::{Home, Node, NodeConfig, transfer::DownloadState};
use spore_store::ImportMode;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Size of the blob in MiB.
    #[arg(long, default_value_t = 2048)]
    size_mib: u64,
    /// Where to put the file and both nodes' homes (default: a temporary directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

async fn node(home: Home) -> Result<Arc<Node>> {
    let mut config = NodeConfig::load(&home)?;
    let files = (
        config.net.identity_file.take(),
        config.net.address_book_file.take(),
    );
    config.net = NetConfig::for_tests();
    (config.net.identity_file, config.net.address_book_file) = files;
    Ok(Node::start(home, config, CancellationToken::new()).await?)
}

pub(crate) fn run(args: Args) -> Result<()> {
    let scratch = crate::scratch_dir(args.dir.as_deref())?;
    let file = crate::import::generate(&scratch.path().join("blob.bin"), args.size_mib << 20)?;
    let secs = measure(&file, scratch.path())?;
    println!(
        "spore 1→1, {} MiB, verified and written to disk: {secs:.2} s, {:.0} MiB/s (target >= 800 MiB/s)",
        args.size_mib,
        args.size_mib as f64 / secs
    );
    Ok(())
}

/// Seconds one node takes to download `file` from another (both in this
/// process, homes under `scratch`), every group verified and written to disk.
pub(crate) fn measure(file: &std::path::Path, scratch: &std::path::Path) -> Result<f64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let seed = node(Home::under(&scratch.join("seed"))).await?;
        let leecher = node(Home::under(&scratch.join("leecher"))).await?;
        let added = seed.add(file.to_path_buf(), ImportMode::InPlace).await?;
        let provider = (seed.net().local_peer_id(), seed.net().listen_addrs().await?);
        let started = Instant::now();
        let handle = leecher.download(added.hash, vec![provider]);
        let progress = handle.wait().await.context("downloading")?;
        let secs = started.elapsed().as_secs_f64();
        if progress.state != DownloadState::Done || !leecher.store().has_complete(&added.hash)? {
            bail!("the download did not complete");
        }
        seed.shutdown().await;
        leecher.shutdown().await;
        anyhow::Ok(secs)
    })
}
