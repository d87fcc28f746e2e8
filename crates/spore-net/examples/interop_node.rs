//! A spore-net node for the libp2p interop test (`tests/interop/`).
//!
//! Starts a node on 127.0.0.1 (TCP only, Kademlia in server mode, no mDNS),
//! provides `Hash::of(b"interop")` and prints one JSON line on stdout:
//!
//! ```json
//! {"event":"ready","peer_id":"12D3…","listen_addrs":["/ip4/127.0.0.1/tcp/…"],
//!  "kad_protocol":"/spore/kad/1.0.0","provided_key":{"hash_hex":"…","kad_key_hex":"…"}, …}
//! ```
//!
//! `kad_key_hex` is the Kademlia key on the wire (`RecordKey::new(hash.as_bytes())`
//! in spore-net: the 32 raw hash bytes, no multihash prefix).
//!
//! Then it reads commands on stdin, one per line, answering each with one
//! JSON line, and exits when stdin closes (or on `quit`):
//! - `dial MULTIADDR`: dial the address, then report the peer as `peer` below;
//! - `peer PEER_ID`: wait (up to 15 s) until identify and ping have reported
//!   on that connected peer, then print its agent version, protocols, listen
//!   addresses, ping RTT and connections;
//! - `status`: the node status.
//!
//! Only spore-net's public API is used. Logs go to stderr (`RUST_LOG`).

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use spore_core::Hash;
use spore_net::{
    CancellationToken, KAD_PROTOCOL, Multiaddr, NetConfig, NetHandle, NetNode, PeerId,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The content key the node provides; the JS side looks its providers up.
const INTEROP_KEY: &[u8] = b"interop";
/// How long `peer` waits for identify and ping to report.
const PEER_REPORT_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::main]
async fn main() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // kad warns that it has no peer to bootstrap from: expected here.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,libp2p_kad=error")),
        )
        .try_init();
    if let Err(e) = run().await {
        println!("{}", obj(&[("event", s("error")), ("error", s(&e))]));
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let cancel = CancellationToken::new();
    let node = NetNode::start(NetConfig::for_tests(), cancel.clone())
        .await
        .map_err(|e| format!("start: {e}"))?;
    let handle = node.handle().clone();

    let hash = Hash::of(INTEROP_KEY);
    // With an empty routing table the announcement has nobody to reach; the
    // record is stored locally, which is what GET_PROVIDERS answers from.
    match handle.start_providing(hash).await {
        Ok(()) | Err(spore_net::NetError::NoKnownPeers) => {}
        Err(e) => return Err(format!("start_providing: {e}")),
    }

    let listen = handle
        .listen_addrs()
        .await
        .map_err(|e| format!("listen_addrs: {e}"))?;
    let status = handle.status().await.map_err(|e| format!("status: {e}"))?;
    let key = obj(&[
        ("text", s(&String::from_utf8_lossy(INTEROP_KEY))),
        ("hash_hex", s(&hash.to_hex())),
        ("kad_key_hex", s(&hex(hash.as_bytes()))),
    ]);
    println!(
        "{}",
        obj(&[
            ("event", s("ready")),
            ("peer_id", s(&handle.local_peer_id().to_string())),
            ("listen_addrs", strs(listen.iter().map(|a| a.to_string()))),
            ("kad_protocol", s(KAD_PROTOCOL.as_ref())),
            ("kad_server_mode", status.kad_server_mode.to_string()),
            ("provided_keys", status.provided_keys.to_string()),
            ("provided_key", key),
        ])
    );

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            _ = cancel.cancelled() => break,
        };
        let Ok(Some(line)) = line else { break };
        let mut words = line.split_whitespace();
        let reply = match (words.next(), words.next()) {
            (None, _) => continue,
            (Some("quit"), _) => break,
            (Some("dial"), Some(addr)) => dial_and_report(&handle, addr).await,
            (Some("peer"), Some(id)) => match id.parse::<PeerId>() {
                Ok(peer) => report_peer(&handle, peer).await,
                Err(e) => err("peer", &format!("bad peer id {id:?}: {e}")),
            },
            (Some("status"), _) => match handle.status().await {
                Ok(st) => obj(&[
                    ("event", s("status")),
                    ("ok", "true".into()),
                    ("connected_peers", st.connected_peers.to_string()),
                    ("routing_table_size", st.routing_table_size.to_string()),
                    ("kad_server_mode", st.kad_server_mode.to_string()),
                    ("provided_keys", st.provided_keys.to_string()),
                ]),
                Err(e) => err("status", &e.to_string()),
            },
            (Some(cmd), _) => err("unknown", &format!("unknown command {cmd:?}")),
        };
        println!("{reply}");
    }

    node.shutdown().await;
    Ok(())
}

async fn dial_and_report(handle: &NetHandle, addr: &str) -> String {
    let addr: Multiaddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => return err("peer", &format!("bad multiaddr {addr:?}: {e}")),
    };
    match handle.dial(addr).await {
        Ok(peer) => report_peer(handle, peer).await,
        Err(e) => err("peer", &format!("dial: {e}")),
    }
}

/// Waits until identify (agent version) and ping (latency) reported on
/// `peer`, then describes it; reports whatever is known on timeout.
async fn report_peer(handle: &NetHandle, peer: PeerId) -> String {
    let deadline = Instant::now() + PEER_REPORT_TIMEOUT;
    loop {
        let peers = match handle.peers().await {
            Ok(p) => p,
            Err(e) => return err("peer", &format!("peers: {e}")),
        };
        let info = peers.into_iter().find(|p| p.peer_id == peer);
        let complete = info
            .as_ref()
            .is_some_and(|p| p.agent_version.is_some() && p.latency.is_some());
        if complete || Instant::now() >= deadline {
            let Some(p) = info else {
                return err("peer", &format!("not connected to {peer}"));
            };
            let conns = p.connections.iter().map(|c| {
                obj(&[
                    ("remote_addr", s(&c.remote_addr.to_string())),
                    ("direction", s(&format!("{:?}", c.direction).to_lowercase())),
                    ("transport", s(&format!("{:?}", c.transport).to_lowercase())),
                ])
            });
            return obj(&[
                ("event", s("peer")),
                ("ok", complete.to_string()),
                ("peer_id", s(&p.peer_id.to_string())),
                (
                    "agent_version",
                    p.agent_version.as_deref().map_or("null".into(), s),
                ),
                ("protocols", strs(p.protocols.iter().cloned())),
                (
                    "listen_addrs",
                    strs(p.listen_addrs.iter().map(|a| a.to_string())),
                ),
                (
                    "ping_rtt_ms",
                    p.latency
                        .map_or("null".into(), |d| format!("{:.3}", d.as_secs_f64() * 1e3)),
                ),
                (
                    "connections",
                    format!("[{}]", conns.collect::<Vec<_>>().join(",")),
                ),
            ]);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn err(event: &str, msg: &str) -> String {
    obj(&[
        ("event", s(event)),
        ("ok", "false".into()),
        ("error", s(msg)),
    ])
}

/// A JSON object from already-encoded values.
fn obj(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", s(k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// A JSON array of strings.
fn strs(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.map(|x| s(&x)).collect::<Vec<_>>().join(","))
}

/// A JSON string literal.
fn s(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut acc, b| {
        let _ = write!(acc, "{b:02x}");
        acc
    })
}
