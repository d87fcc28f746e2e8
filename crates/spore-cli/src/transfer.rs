//! `spore share` and `spore get`: through the running node when there is one,
//! otherwise with a node of this process's own.

use std::{io::IsTerminal, path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use spore_core::{ContentKind, Hash, Ticket};
use spore_net::{Multiaddr, PeerId};
use spore_node::{
    Home, Node, NodeConfig,
    transfer::{DownloadRequest, DownloadState},
};
use spore_store::ImportMode;

use crate::client::Daemon;

type Providers = Vec<(PeerId, Vec<Multiaddr>)>;

fn parse_target(text: &str) -> Result<(Hash, ContentKind, Providers)> {
    let ticket = Ticket::from_ticket_or_id(text)?;
    let providers = ticket
        .providers
        .iter()
        .filter_map(|h| spore_net::from_hint(h).ok())
        .collect();
    Ok((ticket.hash, ticket.kind, providers))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Live progress on stderr (a bar on a terminal), or JSON lines on stdout.
struct Report {
    bar: Option<ProgressBar>,
    json: bool,
}

impl Report {
    fn new(json: bool, no_progress: bool) -> Self {
        let bar = (!json && !no_progress && std::io::stderr().is_terminal()).then(|| {
            ProgressBar::new(0).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            )
        });
        Self { bar, json }
    }

    fn update(&self, size: Option<u64>, verified: u64, peers: usize, state: &str) {
        if let Some(bar) = &self.bar {
            if let Some(size) = size {
                bar.set_length(size);
            }
            bar.set_position(verified);
            bar.set_message(format!("{peers} peers"));
        }
        if self.json {
            println!(
                "{}",
                json!({"event": "progress", "state": state, "size": size, "verified_bytes": verified, "peers": peers})
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

pub(crate) fn get(
    home: &Home,
    target: &str,
    output: Option<&Path>,
    force: bool,
    no_progress: bool,
    json: bool,
) -> Result<()> {
    let (hash, kind, providers) = parse_target(target)?;
    let report = Report::new(json, no_progress);
    let started = std::time::Instant::now();
    let result = match Daemon::find(home) {
        Some(daemon) => get_through_daemon(&daemon, target, hash, &report),
        None => runtime()?.block_on(get_in_process(home, hash, kind, providers, &report)),
    };
    report.finish();
    let (size, resumed) = result?;
    let elapsed = started.elapsed().as_secs_f64().max(1e-6);
    if let Some(dest) = output {
        let store = home.open_store().context("opening the store")?;
        // a collection's files go under DEST; a blob into DEST, or DEST/<id> if it is a directory
        let dest = if kind == ContentKind::Blob && dest.is_dir() {
            dest.join(hash.to_hex())
        } else {
            dest.to_path_buf()
        };
        store
            .export(&hash, &dest, force)
            .with_context(|| format!("writing {}", dest.display()))?;
        if json {
            println!(
                "{}",
                json!({"event": "done", "id": hash.to_hex(), "size": size, "resumed_bytes": resumed, "seconds": elapsed, "dest": dest.display().to_string()})
            );
        } else {
            println!(
                "{} ({}) in {elapsed:.1} s, written to {}",
                hash,
                HumanBytes(size),
                dest.display()
            );
        }
    } else if json {
        println!(
            "{}",
            json!({"event": "done", "id": hash.to_hex(), "size": size, "resumed_bytes": resumed, "seconds": elapsed})
        );
    } else {
        println!(
            "{} ({}) in {elapsed:.1} s; it is in the store: `spore cat {}` or `spore export {} DEST`",
            hash,
            HumanBytes(size),
            hash.short(),
            hash.short()
        );
    }
    Ok(())
}

fn get_through_daemon(
    daemon: &Daemon,
    target: &str,
    hash: Hash,
    report: &Report,
) -> Result<(u64, u64)> {
    daemon.post("/v1/downloads", json!({ "ticket": target }))?;
    loop {
        let p: Value = daemon.get(&format!("/v1/downloads/{hash}"))?;
        let size = p["size"].as_u64();
        let state = p["state"].as_str().unwrap_or("?");
        report.update(
            size,
            p["verified_bytes"].as_u64().unwrap_or(0),
            p["peers"].as_u64().unwrap_or(0) as usize,
            state,
        );
        match state {
            "done" => return Ok((size.unwrap_or(0), p["resumed_bytes"].as_u64().unwrap_or(0))),
            "failed" => bail!(
                "download failed: {}",
                p["error"].as_str().unwrap_or("no details")
            ),
            "cancelled" => bail!("the download was cancelled"),
            "paused" => bail!(
                "the download was paused; `spore get` again (or POST /v1/downloads/{hash}/resume) resumes it"
            ),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Returns the size and the bytes that were already verified before this run.
async fn get_in_process(
    home: &Home,
    hash: Hash,
    kind: ContentKind,
    providers: Providers,
    report: &Report,
) -> Result<(u64, u64)> {
    let mut config = NodeConfig::load(home)?;
    // a short-lived node must not fight another process for the port
    config.net.listen_port = 0;
    let node = Node::start(home.clone(), config, spore_net::CancellationToken::new()).await?;
    let handle = node.start_download(DownloadRequest::new(hash, kind, providers));
    let mut progress = handle.subscribe();
    let outcome = loop {
        let p = progress.borrow_and_update().clone();
        let state = match &p.state {
            DownloadState::Starting => "starting",
            DownloadState::Downloading => "downloading",
            DownloadState::Done => "done",
            DownloadState::Failed(_) => "failed",
            DownloadState::Paused => "paused",
            DownloadState::Cancelled => "cancelled",
        };
        report.update(p.size, p.verified_bytes, p.peers, state);
        match p.state {
            DownloadState::Done => break Ok((p.size.unwrap_or(0), p.resumed_bytes)),
            DownloadState::Failed(e) => break Err(anyhow::anyhow!("download failed: {e}")),
            DownloadState::Paused | DownloadState::Cancelled => {
                break Err(anyhow::anyhow!("the download was stopped"));
            }
            _ => {}
        }
        tokio::select! {
            changed = progress.changed() => if changed.is_err() { break Err(anyhow::anyhow!("the download stopped")) },
            _ = tokio::signal::ctrl_c() => {
                break Err(anyhow::anyhow!("interrupted; what was verified is kept, `spore get` again resumes"));
            }
        }
    };
    node.shutdown().await;
    outcome
}

pub(crate) fn share(home: &Home, path: &Path, copy: bool, json: bool) -> Result<()> {
    let mode = if copy {
        ImportMode::Copy
    } else {
        ImportMode::InPlace
    };
    if let Some(daemon) = Daemon::find(home) {
        let absolute =
            std::fs::canonicalize(path).with_context(|| format!("reading {}", path.display()))?;
        let added = daemon.post("/v1/add", json!({"path": absolute, "copy": copy}))?;
        let ticket = added["ticket"].as_str().unwrap_or("?").to_string();
        return print_share(
            &added["name"],
            added["size"].as_u64().unwrap_or(0),
            &ticket,
            json,
            "the running node serves it",
        );
    }
    runtime()?.block_on(async {
        let config = NodeConfig::load(home)?;
        let node = Node::start(home.clone(), config, spore_net::CancellationToken::new()).await?;
        let added = node
            .add(path.to_path_buf(), mode)
            .await
            .with_context(|| format!("sharing {}", path.display()))?;
        let mut ticket = Ticket::new(added.kind, added.hash);
        if let Ok(hint) = node.net().local_provider_hint().await {
            ticket = ticket.with_providers(vec![hint]);
        }
        print_share(
            &json!(added.name),
            added.size,
            &ticket.to_string(),
            json,
            "serving until Ctrl-C",
        )?;
        let _ = tokio::signal::ctrl_c().await;
        node.shutdown().await;
        anyhow::Ok(())
    })
}

fn print_share(name: &Value, size: u64, ticket: &str, json: bool, serving: &str) -> Result<()> {
    if json {
        println!("{}", json!({"name": name, "size": size, "ticket": ticket}));
    } else {
        println!(
            "sharing {} ({}); {serving}",
            name.as_str().unwrap_or("?"),
            HumanBytes(size)
        );
        println!("ticket: {ticket}");
        println!("fetch it elsewhere with: spore get {ticket}");
    }
    Ok(())
}
