//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// spore: share and fetch content-addressed data, peer to peer.
#[derive(Debug, Parser)]
#[command(name = "spore", version, about, propagate_version = true)]
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
