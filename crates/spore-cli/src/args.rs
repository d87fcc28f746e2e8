//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// spore: share and fetch content-addressed data, peer to peer.
#[derive(Debug, Parser)]
#[command(name = "spore", version, propagate_version = true)]
#[command(about = "spore: share and fetch content-addressed data, peer to peer")]
pub(crate) struct Cli {
    /// Keep all of this node's files under DIR instead of the XDG directories.
    #[arg(long, global = true, value_name = "DIR", env = "SPORE_HOME")]
    pub(crate) home: Option<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    #[command(flatten)]
    Store(StoreCommand),
    #[command(flatten)]
    Network(NetworkCommand),
}

/// Commands that work on the local store.
#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Add a file (as a blob) or a directory (as a collection) to the store.
    ///
    /// Files are referenced in place by default: nothing is copied, and a file
    /// that changes later is detected and never served as the old content.
    Add {
        path: PathBuf,
        /// Copy the bytes into the store instead of referencing them in place.
        #[arg(long)]
        copy: bool,
        /// Print only the content id (for scripts).
        #[arg(short, long)]
        quiet: bool,
    },
    /// List what was added (or, given a collection, the files in it).
    Ls {
        /// A collection to list the files of.
        id: Option<String>,
    },
    /// Write the verified bytes of a blob to standard output.
    Cat {
        /// A content id (64 hex digits or a unique prefix) or a ticket.
        id: String,
        /// Only these bytes: START..END, START.. or ..END (END exclusive).
        #[arg(long, value_name = "START..END")]
        range: Option<String>,
    },
    /// Write a blob to a file, or a collection into a directory, verified.
    Export {
        id: String,
        dest: PathBuf,
        /// Replace files that exist already.
        #[arg(long)]
        force: bool,
    },
    /// Remove what was added; blobs still listed by a collection stay.
    Rm { id: String },
    /// Re-hash stored content and report damage (all entries if no id is given).
    Verify { id: Option<String> },
}

/// Commands that run or ask the node.
#[derive(Debug, Subcommand)]
pub(crate) enum NetworkCommand {
    /// Run the node in the foreground: network, DHT, and the local API.
    Node(NodeArgs),
    /// Print this node's peer id.
    Id,
    /// The running node at a glance.
    Status,
    /// Peers the running node is connected to.
    Peers,
    /// Connect the running node to a peer.
    Connect {
        /// A multiaddr, ideally ending in /p2p/<peer id>.
        addr: String,
    },
    /// Disconnect the running node from a peer.
    Disconnect { peer_id: String },
    /// Share a file: add it in place and make sure a node serves it (the
    /// running node, or this command until Ctrl-C). Prints the ticket.
    Share {
        path: std::path::PathBuf,
        /// Copy the bytes into the store instead of referencing them in place.
        #[arg(long)]
        copy: bool,
    },
    /// Download a blob from every peer that has it, verified as it arrives.
    Get {
        /// A ticket (its providers are dialled directly) or a content id (found in the DHT).
        ticket: String,
        /// Write the result to this file (or into this directory); without it
        /// the blob stays in the store.
        #[arg(short, long, value_name = "DEST")]
        output: Option<std::path::PathBuf>,
        /// Replace DEST if it exists.
        #[arg(long)]
        force: bool,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Find peers that provide content, in the DHT.
    Find {
        /// A content id or a ticket.
        id: String,
    },
    /// Search by keywords: across the network (through the running node,
    /// or a short-lived one), or only this node's index with --local.
    /// Results are printed as they arrive, then sorted.
    Search(crate::search::SearchArgs),
    /// Set the tags and description of shared content (searched with --local).
    Describe {
        /// A content id or a ticket.
        id: String,
        /// A tag (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
}

/// Settings of `spore node`; each overrides `spore.toml` in the config directory.
#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    /// Port for TCP and QUIC (0 picks a free one).
    #[arg(long)]
    pub(crate) port: Option<u16>,
    /// Address to bind the network to (default 0.0.0.0).
    #[arg(long)]
    pub(crate) listen_ip: Option<std::net::IpAddr>,
    /// Address of the local API (default 127.0.0.1:5323).
    #[arg(long)]
    pub(crate) api: Option<std::net::SocketAddr>,
    /// A peer to join through (repeatable), e.g. /ip4/1.2.3.4/tcp/5322/p2p/12D3…
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) bootstrap: Vec<String>,
    /// Do not discover peers on the local network.
    #[arg(long)]
    pub(crate) no_mdns: bool,
    /// Serve as a rendezvous point for other peers.
    #[arg(long)]
    pub(crate) rendezvous_server: bool,
    /// A rendezvous server to register at (repeatable), ending in /p2p/<peer id>.
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) rendezvous: Vec<String>,
    /// Relay connections for peers behind NAT.
    #[arg(long)]
    pub(crate) relay_server: bool,
    /// Treat the listen addresses as reachable (a LAN or a test on 127.0.0.1).
    #[arg(long)]
    pub(crate) advertise_listen_addrs: bool,
    /// Upload limit over all peers, per second: `10M`, `500K`, `1.5MiB`, `0` for none
    /// (K, M, G are powers of 1024). Overrides `[transfer] max_upload`.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub(crate) max_upload: Option<u64>,
    /// Download limit over all peers, per second (same units as --max-upload).
    /// Overrides `[transfer] max_download`.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub(crate) max_download: Option<u64>,
    /// Announce every complete blob whole to every downloader, not a few
    /// pieces at a time (turns off `[transfer] super_seed`).
    #[arg(long)]
    pub(crate) no_super_seed: bool,
    /// TEST ONLY: corrupt every chunk group this node uploads (the testbed's
    /// lying sources). Peers ban it after 3 bad groups.
    #[arg(long, hide = true)]
    pub(crate) debug_lie_uploads: bool,
}

/// A rate in bytes per second from text such as `10M`, `500K`, `2MiB/s` or `0`.
pub(crate) fn parse_rate(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let number = trimmed
        .strip_suffix("/s")
        .or_else(|| trimmed.strip_suffix("ps"))
        .unwrap_or(trimmed);
    parse_size::Config::new()
        .with_binary()
        .parse_size(number)
        .map_err(|e| {
            format!("{text:?} is not a rate ({e}); write bytes per second like 10M, 500K or 0")
        })
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates_in_human_units() {
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("500K"), Ok(500 * 1024));
        assert_eq!(parse_rate("10M"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_rate("10MiB/s"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_rate("1.5G"), Ok(3 * 512 * 1024 * 1024));
        assert_eq!(parse_rate("4096"), Ok(4096));
        for bad in ["", "fast", "-1M", "10X"] {
            let err = parse_rate(bad).unwrap_err();
            assert!(err.contains("not a rate"), "{bad}: {err}");
        }
    }
}
