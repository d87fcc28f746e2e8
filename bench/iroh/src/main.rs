//! One iroh-blobs transfer on loopback, for `spore-bench compare` (DESIGN.md
//! §8: iroh's `sendme` waits for an internet relay, so iroh is run as a
//! library here).
//!
//! A provider and a fetcher, each with an iroh endpoint and a filesystem
//! store of its own under `--work`, live in this one process. Neither has a
//! relay or address lookup; both bind 127.0.0.1 only, and the fetcher dials
//! the provider by its socket address. The provider imports `--file` (in
//! place where the store allows it), untimed. The timed part is the
//! fetcher's dial and its fetch of the blob by hash, until the blob is
//! complete in its store: iroh-blobs checks every chunk group against the
//! BLAKE3 tree (bao) as it arrives and writes it to the store's files. The
//! blob is then exported to `--work/received` (untimed) for the caller to
//! compare with the original.
//!
//! Prints one line, `seconds <f64>` (as compare's Python helpers do); errors
//! go to stderr with a non-zero exit.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use iroh::{Endpoint, EndpointAddr, RelayMode, endpoint::presets, protocol::Router};
use iroh_blobs::{
    ALPN, BlobFormat, BlobsProtocol,
    api::blobs::{AddPathOptions, BlobStatus, ImportMode},
    store::fs::FsStore,
};

#[derive(Debug, Parser)]
#[command(about = "Times one iroh-blobs transfer of a file between two endpoints on 127.0.0.1")]
struct Args {
    /// The file to transfer.
    #[arg(long)]
    file: PathBuf,
    /// A directory for both stores and the received copy (`received`).
    #[arg(long)]
    work: PathBuf,
    /// Give up after this many seconds (the whole run, import and export too).
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // A watchdog thread rather than `tokio::time::timeout`: it also fires
    // if something blocks a runtime thread, and it never drops the stores'
    // own runtimes from inside an async context.
    let limit = Duration::from_secs(args.timeout_secs);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("spore-bench-iroh: no result within {limit:?}");
        std::process::exit(2);
    });
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")
        .and_then(|rt| rt.block_on(run(&args.file, &args.work)));
    match outcome {
        Ok(secs) => {
            println!("seconds {secs}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spore-bench-iroh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(file: &Path, work: &Path) -> Result<f64> {
    // The stores take absolute paths only (the import and the export).
    let file = std::path::absolute(file)?;
    let work = std::path::absolute(work)?;
    let work = work.as_path();
    let size = std::fs::metadata(&file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    std::fs::create_dir_all(work)?;
    let provider_store = FsStore::load(work.join("provider-store"))
        .await
        .context("opening the provider's store")?;
    let fetcher_store = FsStore::load(work.join("fetcher-store"))
        .await
        .context("opening the fetcher's store")?;

    let added = provider_store
        .blobs()
        .add_path_with_opts(AddPathOptions {
            path: file.clone(),
            format: BlobFormat::Raw,
            // spore's benchmark shares in place too: no copy of the file
            // competes with the transfer for the page cache
            mode: ImportMode::TryReference,
        })
        .await
        .context("importing the file into the provider's store")?;
    let hash = added.hash;

    let router = Router::builder(loopback_endpoint().await?)
        .accept(ALPN, BlobsProtocol::new(&provider_store, None))
        .spawn();
    let provider_addr = router
        .endpoint()
        .bound_sockets()
        .into_iter()
        .find(SocketAddr::is_ipv4)
        .context("the provider has no IPv4 socket")?;
    let provider = EndpointAddr::new(router.endpoint().id()).with_ip_addr(provider_addr);
    let fetcher = loopback_endpoint().await?;

    // The dial is timed, as spore's own benchmark times its dial: on
    // loopback it is a QUIC handshake of a millisecond or two.
    let started = Instant::now();
    let conn = fetcher
        .connect(provider, ALPN)
        .await
        .context("dialing the provider")?;
    fetcher_store
        .remote()
        .fetch(conn.clone(), hash)
        .complete()
        .await
        .context("fetching the blob")?;
    let secs = started.elapsed().as_secs_f64();

    match fetcher_store.blobs().status(hash).await? {
        BlobStatus::Complete { size: got } if got == size => {}
        other => bail!("after the fetch the fetcher's store has {other:?}, expected {size} bytes"),
    }
    conn.close(0u32.into(), b"done");
    let received = work.join("received");
    fetcher_store
        .blobs()
        .export(hash, &received)
        .finish()
        .await
        .with_context(|| format!("exporting to {}", received.display()))?;

    fetcher.close().await;
    // This also stops the provider's store: `BlobsProtocol` shuts its store
    // down with the router.
    router.shutdown().await.context("stopping the provider")?;
    fetcher_store
        .shutdown()
        .await
        .context("stopping the fetcher's store")?;
    Ok(secs)
}

/// An endpoint that can reach nothing but 127.0.0.1: no relay, no address
/// lookup (the Minimal preset only picks the TLS crypto provider), one IPv4
/// socket on loopback.
async fn loopback_endpoint() -> Result<Endpoint> {
    let endpoint = Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .clear_ip_transports()
        .bind_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?
        .bind()
        .await
        .context("binding an endpoint on 127.0.0.1")?;
    Ok(endpoint)
}
