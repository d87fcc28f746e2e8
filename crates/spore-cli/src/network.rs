//! Commands that need the network: `node` runs the daemon; the others ask
//! the running daemon through its API, or start a short-lived node when none
//! runs and the question can still be answered (`find`, `peers`, `connect`).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use spore_core::{Hash, Ticket};
use spore_http::Daemon as DaemonProcess;
use spore_net::{Multiaddr, NetNode};
use spore_node::{Home, NodeConfig};

use crate::{
    args::{NetworkCommand, NodeArgs},
    client::Daemon,
};

pub(crate) fn run(home: &Home, command: NetworkCommand, json: bool) -> Result<()> {
    match command {
        NetworkCommand::Node(args) => node(home, &args, json),
        NetworkCommand::Id => id(home, json),
        NetworkCommand::Status => status(home, json),
        NetworkCommand::Peers => peers(home, json),
        NetworkCommand::Connect { addr } => connect(home, &addr, json),
        NetworkCommand::Disconnect { peer_id } => disconnect(home, &peer_id, json),
        NetworkCommand::Find { id } => find(home, &id, json),
        NetworkCommand::Search(args) => crate::search::search(home, &args, json),
        NetworkCommand::Describe {
            id,
            tags,
            description,
        } => crate::search::describe(home, &parse_id(&id)?, &tags, description, json),
        NetworkCommand::Share { path, copy } => crate::transfer::share(home, &path, copy, json),
        NetworkCommand::Get {
            ticket,
            output,
            force,
            no_progress,
        } => crate::transfer::get(home, &ticket, output.as_deref(), force, no_progress, json),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn multiaddrs(list: &[String]) -> Result<Vec<Multiaddr>> {
    list.iter()
        .map(|s| {
            s.parse()
                .with_context(|| format!("{s:?} is not a multiaddr"))
        })
        .collect()
}

fn node_config(home: &Home, args: &NodeArgs) -> Result<NodeConfig> {
    let mut config = NodeConfig::load(home)?;
    let net = &mut config.net;
    if let Some(port) = args.port {
        net.listen_port = port;
    }
    if let Some(ip) = args.listen_ip {
        net.listen_ip = ip;
    }
    net.bootstrap.extend(multiaddrs(&args.bootstrap)?);
    net.rendezvous_points.extend(multiaddrs(&args.rendezvous)?);
    net.mdns &= !args.no_mdns;
    net.rendezvous_server |= args.rendezvous_server;
    net.relay_server |= args.relay_server;
    net.advertise_listen_addrs |= args.advertise_listen_addrs;
    if let Some(api) = args.api {
        config.api.listen = api;
    }
    if let Some(rate) = args.max_upload {
        config.transfer.max_upload = rate;
    }
    if let Some(rate) = args.max_download {
        config.transfer.max_download = rate;
    }
    config.transfer.super_seed &= !args.no_super_seed;
    config.transfer.debug_lie_uploads = args.debug_lie_uploads;
    Ok(config)
}

/// `spore node`: runs until SIGINT or SIGTERM.
fn node(home: &Home, args: &NodeArgs, json: bool) -> Result<()> {
    if let Some(running) = Daemon::find(home) {
        bail!(
            "a node is already running for this home (API {}); stop it first or use another --home",
            running.address()
        );
    }
    let config = node_config(home, args)?;
    runtime()?.block_on(async {
        let daemon = DaemonProcess::start(home.clone(), config).await?;
        let net = daemon.node().net().clone();
        let status = net.status().await?;
        let token_path = home.config.join("api-token");
        if json {
            println!(
                "{}",
                json!({
                    "peer_id": status.peer_id.to_string(),
                    "listen_addrs": status.listen_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "api": format!("http://{}", daemon.api_addr()),
                    "token_file": token_path.display().to_string(),
                })
            );
        } else {
            println!("spore node {}", status.peer_id);
            for addr in &status.listen_addrs {
                println!("  listening on {addr}");
            }
            println!("  open http://{}/  (web UI; token in {})", daemon.api_addr(), token_path.display());
            println!("  API http://{0}/v1, stream http://{0}/b/<id> (Range; mpv/VLC/browsers play it)", daemon.api_addr());
            println!("  stop with Ctrl-C");
        }
        daemon.wait_for_signal().await;
        daemon.shutdown().await;
        anyhow::Ok(())
    })
}

/// `spore id`: the peer id of this home's identity (created if new).
fn id(home: &Home, json: bool) -> Result<()> {
    let config = NodeConfig::load(home)?;
    let path = config
        .net
        .identity_file
        .context("no identity file configured")?;
    let peer_id = spore_net::identity::load_or_create(&path)
        .with_context(|| format!("reading the identity in {}", path.display()))?
        .public()
        .to_peer_id();
    if json {
        println!("{}", json!({"peer_id": peer_id.to_string()}));
    } else {
        println!("{peer_id}");
    }
    Ok(())
}

fn running(home: &Home) -> Result<Daemon> {
    Daemon::find(home).context("no node is running for this home; start one with `spore node`")
}

fn status(home: &Home, json: bool) -> Result<()> {
    let s = running(home)?.get("/v1/status")?;
    if json {
        return print(&s);
    }
    println!("peer id       {}", s["peer_id"].as_str().unwrap_or("?"));
    println!(
        "version       {} (up {} s)",
        s["version"].as_str().unwrap_or("?"),
        s["uptime_secs"]
    );
    for addr in s["listen_addrs"].as_array().into_iter().flatten() {
        println!("listening     {}", addr.as_str().unwrap_or("?"));
    }
    for addr in s["external_addrs"].as_array().into_iter().flatten() {
        println!("reachable at  {}", addr.as_str().unwrap_or("?"));
    }
    println!(
        "reachability  {}",
        s["reachability"].as_str().unwrap_or("?")
    );
    println!(
        "peers         {} ({} connections)",
        s["connected_peers"], s["connections"]
    );
    println!(
        "dht           {} peers in the routing table, {} mode, {} keys provided",
        s["routing_table_size"],
        if s["kad_server_mode"].as_bool() == Some(true) {
            "server"
        } else {
            "client"
        },
        s["provided_keys"]
    );
    println!("store         {} entries", s["store_entries"]);
    let failed: u64 = s["connection_errors"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(serde_json::Value::as_u64)
        .sum();
    println!(
        "misbehaviour  {} malformed messages, {} peers penalised, {} banned; {failed} failed connections",
        s["malformed_messages"], s["penalised_peers"], s["banned_peers"]
    );
    Ok(())
}

/// `spore peers`: the daemon's peers, or when none runs, the peers a
/// short-lived node reaches through bootstrap, the address book and mDNS.
fn peers(home: &Home, json: bool) -> Result<()> {
    let peers = match Daemon::find(home) {
        Some(daemon) => daemon.get("/v1/peers")?,
        None => {
            eprintln!("no node is running for this home; joining briefly to see who answers");
            runtime()?.block_on(async {
                let node = ephemeral_node(home).await?;
                // identify tells each peer's protocols and agent in a moment
                let mut peers = node.handle().peers().await;
                for _ in 0..20 {
                    if peers.as_ref().is_ok_and(|list| {
                        list.iter()
                            .all(|p| p.agent_version.is_some() && p.latency.is_some())
                    }) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    peers = node.handle().peers().await;
                }
                node.shutdown().await;
                let peers: Vec<spore_http::Peer> = peers?.into_iter().map(Into::into).collect();
                anyhow::Ok(serde_json::to_value(peers)?)
            })?
        }
    };
    if json {
        return print(&peers);
    }
    let list = peers.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        eprintln!("no peers connected");
    }
    for p in list {
        let latency = p["latency_ms"]
            .as_f64()
            .map_or("-".to_string(), |ms| format!("{ms:.1} ms"));
        let conn = &p["connections"][0];
        println!(
            "{}  {:<8}  {:<4}  {:>9}  {}  {}",
            p["peer_id"].as_str().unwrap_or("?"),
            conn["direction"].as_str().unwrap_or("-"),
            conn["transport"].as_str().unwrap_or("-"),
            latency,
            conn["remote_addr"].as_str().unwrap_or("-"),
            p["agent_version"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}

/// `spore connect`: the daemon dials and keeps the connection; when none
/// runs, a short-lived node dials, which checks that the peer is reachable.
fn connect(home: &Home, addr: &str, json: bool) -> Result<()> {
    let answer = match Daemon::find(home) {
        Some(daemon) => daemon.post("/v1/connect", json!({ "addr": addr }))?,
        None => {
            let addr: Multiaddr = addr
                .parse()
                .with_context(|| format!("{addr:?} is not a multiaddr"))?;
            runtime()?.block_on(async {
                let node = ephemeral_node(home).await?;
                let dialled = node.handle().dial(addr).await;
                node.shutdown().await;
                let peer_id = dialled.context("dialling")?;
                anyhow::Ok(json!({ "peer_id": peer_id.to_string(), "daemon": false }))
            })?
        }
    };
    if json {
        return print(&answer);
    }
    let peer_id = answer["peer_id"].as_str().unwrap_or("?");
    if answer["daemon"] == false {
        println!(
            "reached {peer_id} (no node is running for this home, so the connection closed again)"
        );
    } else {
        println!("connected to {peer_id}");
    }
    Ok(())
}

fn disconnect(home: &Home, peer_id: &str, json: bool) -> Result<()> {
    running(home)?.post("/v1/disconnect", json!({ "peer_id": peer_id }))?;
    if json {
        return print(&json!({"disconnected": peer_id}));
    }
    println!("disconnected from {peer_id}");
    Ok(())
}

/// `spore find`: asks the daemon, or a short-lived node when none runs.
fn find(home: &Home, id: &str, json: bool) -> Result<()> {
    let hash = parse_id(id)?;
    let providers: Vec<(String, Vec<String>)> = match Daemon::find(home) {
        Some(daemon) => daemon
            .get(&format!("/v1/providers/{hash}"))?
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let addrs = p["addrs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(String::from))
                    .collect();
                (p["peer_id"].as_str().unwrap_or("?").to_string(), addrs)
            })
            .collect(),
        None => runtime()?.block_on(find_with_ephemeral_node(home, hash))?,
    };
    if json {
        let list: Vec<Value> = providers
            .iter()
            .map(|(p, a)| json!({"peer_id": p, "addrs": a}))
            .collect();
        return print(&list.into());
    }
    if providers.is_empty() {
        bail!("no provider of {hash} found");
    }
    for (peer, addrs) in providers {
        println!("{peer}  {}", addrs.join(" "));
    }
    Ok(())
}

/// A node for one command when no daemon runs: this home's identity and
/// configuration, but an ephemeral port and a read-only address book. Gives
/// bootstrap, mDNS and the address book up to 5 s to connect to someone.
async fn ephemeral_node(home: &Home) -> Result<NetNode> {
    let mut config = NodeConfig::load(home)?.net;
    // a second process must not fight the daemon's port or rewrite its files
    config.listen_port = 0;
    config.address_book_file = None;
    let node = NetNode::start(config, spore_net::CancellationToken::new()).await?;
    for _ in 0..50 {
        if node
            .handle()
            .status()
            .await
            .is_ok_and(|s| s.connected_peers > 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(node)
}

async fn find_with_ephemeral_node(home: &Home, hash: Hash) -> Result<Vec<(String, Vec<String>)>> {
    let node = ephemeral_node(home).await?;
    let net = node.handle().clone();
    let _ = net.bootstrap().await;
    let found = net.find_providers(hash).await;
    node.shutdown().await;
    Ok(found?
        .into_iter()
        .map(|p| {
            (
                p.peer_id.to_string(),
                p.addrs.iter().map(ToString::to_string).collect(),
            )
        })
        .collect())
}

fn parse_id(id: &str) -> Result<Hash> {
    Ok(Ticket::from_ticket_or_id(id)?.hash)
}

fn print(value: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
