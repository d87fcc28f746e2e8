//! What each command does: open the node's store, call it, print the result
//! as text or JSON.

use std::{io::Write, ops::Range, path::Path};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::HumanBytes;
use serde_json::json;
use spore_core::{ContentKind, Hash, Ticket};
use spore_node::Home;
use spore_store::{BlobRecord, BlobState, ImportMode, Location, Removed, Store, Verified};

use crate::{
    args::{Cli, Command, StoreCommand},
    client::Daemon,
    network,
    progress::ImportBar,
};

pub(crate) fn run(cli: Cli) -> Result<()> {
    let home = Home::resolve(cli.home.as_deref())?;
    let json = cli.json;
    match cli.command {
        Command::Network(command) => network::run(&home, command, json),
        Command::Store(StoreCommand::Add { path, copy, quiet })
            if let Some(daemon) = Daemon::find(&home) =>
        {
            add_through_daemon(&daemon, &path, copy, quiet, json)
        }
        Command::Store(command) => {
            let store = home.open_store().context("opening the store")?;
            match command {
                StoreCommand::Add { path, copy, quiet } => add(&store, &path, copy, quiet, json),
                StoreCommand::Ls { id: None } => list(&store, json),
                StoreCommand::Ls { id: Some(id) } => {
                    list_collection(&store, &resolve(&store, &id)?, json)
                }
                StoreCommand::Cat { id, range } => {
                    cat(&store, &resolve(&store, &id)?, range.as_deref())
                }
                StoreCommand::Export { id, dest, force } => {
                    export(&store, &resolve(&store, &id)?, &dest, force, json)
                }
                StoreCommand::Rm { id } => remove(&store, &resolve(&store, &id)?, json),
                StoreCommand::Verify { id } => verify(&store, id.as_deref(), json),
            }
        }
    }
}

/// Accepts a full content id, a unique hex prefix of one in the store, or a ticket.
fn resolve(store: &Store, id: &str) -> Result<Hash> {
    let id = id.trim();
    let is_prefix = (4..64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_hexdigit());
    if !is_prefix {
        return Ok(Ticket::from_ticket_or_id(id)?.hash);
    }
    let prefix = id.to_ascii_lowercase();
    let matches: Vec<Hash> = store
        .list_all()?
        .into_iter()
        .map(|r| r.hash)
        .filter(|h| h.to_hex().starts_with(&prefix))
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => bail!("nothing in the store has an id starting with {prefix}"),
        many => bail!(
            "{prefix} is ambiguous: {} ids start with it; give more digits",
            many.len()
        ),
    }
}

fn add(store: &Store, path: &Path, copy: bool, quiet: bool, json: bool) -> Result<()> {
    let mode = if copy {
        ImportMode::Copy
    } else {
        ImportMode::InPlace
    };
    let bar = ImportBar::new(!json && !quiet);
    let added = store.add_path(path, mode, &bar);
    bar.finish();
    let added = added.with_context(|| format!("adding {}", path.display()))?;
    let ticket = Ticket::new(added.kind, added.hash);
    for (skipped, why) in &added.skipped {
        eprintln!("skipped {}: {why}", skipped.display());
    }
    if quiet {
        println!("{}", added.hash);
        return Ok(());
    }
    if json {
        let skipped: Vec<_> = added
            .skipped
            .iter()
            .map(|(p, why)| json!({"path": p.display().to_string(), "reason": why}))
            .collect();
        print_json(&json!({
            "id": added.hash.to_hex(),
            "kind": added.kind.to_string(),
            "name": added.name,
            "size": added.size,
            "files": added.files,
            "ticket": ticket.to_string(),
            "skipped": skipped,
        }))
    } else {
        let what = match added.kind {
            ContentKind::Blob => format!("{}, blob", HumanBytes(added.size)),
            ContentKind::Collection => format!(
                "{} files, {}, collection",
                added.files,
                HumanBytes(added.size)
            ),
        };
        println!("added {} ({what})", added.name);
        println!("id      {}", added.hash);
        println!("ticket  {ticket}");
        Ok(())
    }
}

/// With a daemon running, adding goes through it, so the content is
/// announced at once and the ticket carries the daemon's addresses.
fn add_through_daemon(
    daemon: &Daemon,
    path: &Path,
    copy: bool,
    quiet: bool,
    json: bool,
) -> Result<()> {
    let absolute = std::fs::canonicalize(path)
        .with_context(|| format!("adding {}: reading {}", path.display(), path.display()))?;
    let added = daemon
        .post("/v1/add", json!({"path": absolute, "copy": copy}))
        .with_context(|| format!("adding {}", path.display()))?;
    if quiet {
        println!("{}", added["id"].as_str().unwrap_or("?"));
    } else if json {
        print_json(&added)?;
    } else {
        println!(
            "added {} ({} bytes, {})",
            added["name"].as_str().unwrap_or("?"),
            added["size"],
            added["kind"].as_str().unwrap_or("?")
        );
        println!("id      {}", added["id"].as_str().unwrap_or("?"));
        println!("ticket  {}", added["ticket"].as_str().unwrap_or("?"));
    }
    Ok(())
}

fn record_json(r: &BlobRecord) -> serde_json::Value {
    let (verified, reason) = match &r.state {
        BlobState::Partial(bits) => (Some(bits.count_ones()), None),
        BlobState::Broken(why) => (None, Some(why.clone())),
        BlobState::Complete => (None, None),
    };
    json!({
        "id": r.hash.to_hex(),
        "kind": r.kind.to_string(),
        "size": r.size,
        "state": r.state.name(),
        "name": r.tag.as_ref().map(|t| t.name.clone()),
        "added_at": r.tag.as_ref().map(|t| t.added_at),
        "in_place": match &r.location {
            Location::External(e) => Some(e.path.display().to_string()),
            Location::Owned => None,
        },
        "verified_groups": verified,
        "broken_reason": reason,
    })
}

fn list(store: &Store, json: bool) -> Result<()> {
    let records = store.list()?;
    if json {
        return print_json(&records.iter().map(record_json).collect::<Vec<_>>().into());
    }
    if records.is_empty() {
        eprintln!("the store is empty; add something with `spore add PATH`");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<64}  {:<10}  {:>10}  {:<8}  NAME",
        "ID", "KIND", "SIZE", "STATE"
    )?;
    for r in records {
        let state = match &r.state {
            BlobState::Partial(bits) => format!("{}%", bits.count_ones() * 100 / bits.len().max(1)),
            other => other.name().to_string(),
        };
        let name = r.tag.as_ref().map(|t| t.name.as_str()).unwrap_or("");
        let size = match r.kind {
            // a collection's own size is its manifest's; people expect its files'
            ContentKind::Collection => store.collection(&r.hash).map_or(r.size, |c| c.total_size()),
            ContentKind::Blob => r.size,
        };
        writeln!(
            out,
            "{}  {:<10}  {:>10}  {:<8}  {name}",
            r.hash,
            r.kind.to_string(),
            HumanBytes(size).to_string(),
            state
        )?;
    }
    Ok(())
}

fn list_collection(store: &Store, hash: &Hash, json: bool) -> Result<()> {
    let collection = store.collection(hash)?;
    if json {
        let entries: Vec<_> = collection
            .entries()
            .iter()
            .map(|e| json!({"path": e.path.as_str(), "size": e.size, "id": e.hash.to_hex(), "mode": format!("{:o}", e.mode)}))
            .collect();
        return print_json(&entries.into());
    }
    let mut out = std::io::stdout().lock();
    for e in collection.entries() {
        writeln!(
            out,
            "{}  {:>10}  {:o}  {}",
            e.hash,
            HumanBytes(e.size).to_string(),
            e.mode,
            e.path
        )?;
    }
    Ok(())
}

fn parse_range(text: &str, size: u64) -> Result<Range<u64>> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| anyhow!("range {text:?} is not START..END, START.. or ..END"))?;
    let number = |s: &str, default: u64| -> Result<u64> {
        if s.is_empty() {
            Ok(default)
        } else {
            s.trim()
                .parse()
                .with_context(|| format!("{s:?} in range {text:?} is not a byte offset"))
        }
    };
    let (start, end) = (number(start, 0)?, number(end, size)?);
    if start > end {
        bail!("range {text:?} starts after it ends");
    }
    if end > size {
        bail!("range {text:?} ends past the end of the blob ({size} bytes)");
    }
    Ok(start..end)
}

fn cat(store: &Store, hash: &Hash, range: Option<&str>) -> Result<()> {
    let blob = store.blob(hash)?;
    if blob.kind() == ContentKind::Collection {
        bail!(
            "{hash} is a collection; list it with `spore ls {hash}` or write it out with `spore export`"
        );
    }
    let range = match range {
        Some(text) => parse_range(text, blob.size())?,
        None => 0..blob.size(),
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    store.read_range(hash, range, &mut out)?;
    out.flush()?;
    Ok(())
}

fn export(store: &Store, hash: &Hash, dest: &Path, force: bool, json: bool) -> Result<()> {
    let exported = store
        .export(hash, dest, force)
        .with_context(|| format!("exporting {hash} to {}", dest.display()))?;
    if json {
        print_json(
            &json!({"id": hash.to_hex(), "dest": dest.display().to_string(), "files": exported.files, "bytes": exported.bytes}),
        )
    } else {
        println!(
            "exported {} file(s), {} to {}",
            exported.files,
            HumanBytes(exported.bytes),
            dest.display()
        );
        Ok(())
    }
}

fn remove(store: &Store, hash: &Hash, json: bool) -> Result<()> {
    let removed = store.remove(hash)?;
    if json {
        return print_json(&match &removed {
            Removed::Deleted { freed } => {
                json!({"id": hash.to_hex(), "removed": true, "freed": freed.iter().map(Hash::to_hex).collect::<Vec<_>>()})
            }
            Removed::KeptReferenced { by } => {
                json!({"id": hash.to_hex(), "removed": false, "kept_for": by.iter().map(Hash::to_hex).collect::<Vec<_>>()})
            }
        });
    }
    match removed {
        Removed::Deleted { freed } => println!("removed {hash} ({} blob(s) freed)", freed.len()),
        Removed::KeptReferenced { by } => {
            let by: Vec<String> = by.iter().map(Hash::to_hex).collect();
            println!(
                "untagged {hash}; its bytes stay because collection {} lists it",
                by.join(", ")
            );
        }
    }
    Ok(())
}

fn verify(store: &Store, id: Option<&str>, json: bool) -> Result<()> {
    let targets: Vec<Hash> = match id {
        Some(id) => vec![resolve(store, id)?],
        None => store.list_all()?.into_iter().map(|r| r.hash).collect(),
    };
    let mut broken = 0;
    let mut results = Vec::new();
    for hash in targets {
        let (state, detail) = match store.verify(&hash) {
            Ok(Verified::Intact { bytes }) => ("intact", HumanBytes(bytes).to_string()),
            Ok(Verified::OutboardRepaired { bytes }) => (
                "repaired",
                format!("{}, outboard rebuilt", HumanBytes(bytes)),
            ),
            Err(e) => {
                broken += 1;
                ("broken", format!("{:#}", anyhow::Error::from(e)))
            }
        };
        if json {
            results.push(json!({"id": hash.to_hex(), "state": state, "detail": detail}));
        } else {
            println!("{state:<8}  {hash}  {detail}");
        }
    }
    if json {
        print_json(&results.into())?;
    }
    if broken > 0 {
        bail!(
            "{broken} entr{} failed verification",
            if broken == 1 { "y" } else { "ies" }
        );
    }
    Ok(())
}

fn print_json(value: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}
