//! `spore search` and `spore describe`.

use std::{io::BufRead, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use spore_core::Hash;
use spore_node::{
    Home, Node, NodeConfig,
    search::{self as node_search, SearchEvent, SearchHit, SearchRequest},
};
use spore_search::{Filters, ItemKind, MAX_HOPS, Media, index::Index, parse_size};

use crate::client::Daemon;

/// Arguments of `spore search`.
#[derive(Debug, clap::Args)]
pub(crate) struct SearchArgs {
    /// Words the name must all contain.
    #[arg(required = true)]
    words: Vec<String>,
    /// Only this node's index (tags and descriptions count too).
    #[arg(long)]
    local: bool,
    /// Media type: video, audio, image, document, archive, other.
    #[arg(long = "type", value_name = "TYPE")]
    media: Option<String>,
    /// File extension, e.g. mkv.
    #[arg(long)]
    ext: Option<String>,
    /// blob, collection, or file (a file inside a collection).
    #[arg(long)]
    kind: Option<String>,
    /// Smallest size, e.g. 10M.
    #[arg(long, value_name = "SIZE")]
    min_size: Option<String>,
    /// Largest size, e.g. 4G.
    #[arg(long, value_name = "SIZE")]
    max_size: Option<String>,
    /// Hop limit of the widest stage (1 to 7).
    #[arg(long, default_value_t = spore_search::DEFAULT_HOPS)]
    hops: u8,
    /// Seconds to wait for results (1 to 120).
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Stop widening the search after this many results.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

impl SearchArgs {
    fn text(&self) -> String {
        self.words.join(" ")
    }

    fn request(&self) -> Result<SearchRequest> {
        let size = |s: &Option<String>| -> Result<Option<u64>> {
            s.as_deref()
                .map(|v| parse_size(v).map_err(anyhow::Error::msg))
                .transpose()
        };
        let media = match &self.media {
            Some(m) => Some(Media::parse(m).with_context(|| {
                format!("unknown type {m:?} (video, audio, image, document, archive, other)")
            })?),
            None => None,
        };
        let kind = match &self.kind {
            Some(k) => Some(
                ItemKind::parse(k)
                    .with_context(|| format!("unknown kind {k:?} (blob, collection, file)"))?,
            ),
            None => None,
        };
        if self.hops == 0 || self.hops > MAX_HOPS {
            bail!("--hops must be between 1 and {MAX_HOPS}");
        }
        if !(1..=120).contains(&self.timeout) {
            bail!("--timeout must be between 1 and 120 seconds");
        }
        let mut req = SearchRequest::new(self.text());
        req.filters = Filters {
            min_size: size(&self.min_size)?,
            max_size: size(&self.max_size)?,
            media,
            extension: self
                .ext
                .as_deref()
                .map(|e| e.trim_start_matches('.').to_lowercase()),
            kind,
        };
        req.hops = self.hops;
        req.timeout = Duration::from_secs(self.timeout);
        req.wanted = self.limit.max(1);
        spore_search::Query::new(&req.text, req.filters.clone(), req.hops)?;
        Ok(req)
    }

    fn query_string(&self) -> String {
        let mut q = vec![("q", self.text())];
        let mut opt = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        };
        opt("type", &self.media);
        opt("ext", &self.ext);
        opt("kind", &self.kind);
        opt("min_size", &self.min_size);
        opt("max_size", &self.max_size);
        q.push(("hops", self.hops.to_string()));
        q.push(("timeout", self.timeout.to_string()));
        q.push(("wanted", self.limit.to_string()));
        if self.local {
            q.push(("local", "true".into()));
        }
        q.iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Percent-encodes a query-string value.
fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Collects hits as they arrive and prints them.
struct Printer {
    json: bool,
    hits: Vec<SearchHit>,
}

impl Printer {
    fn hit(&mut self, hit: SearchHit) {
        let new = !self.hits.iter().any(|h| h.id == hit.id);
        if self.json {
            println!("{}", json!({"event": "hit", "hit": hit}));
        } else if new {
            println!("{}", line(&hit));
        }
        self.hits.retain(|h| h.id != hit.id);
        self.hits.push(hit);
    }

    fn done(mut self) -> Result<()> {
        self.hits.sort_by(|a, b| {
            b.relevance
                .total_cmp(&a.relevance)
                .then(b.sources.cmp(&a.sources))
                .then(a.name.cmp(&b.name))
        });
        if self.json {
            println!("{}", json!({"event": "done", "results": self.hits}));
            return Ok(());
        }
        if self.hits.is_empty() {
            bail!("no results");
        }
        if self.hits.len() > 1 {
            println!("\n{} results, best first:", self.hits.len());
            for h in &self.hits {
                println!("{}", line(h));
            }
        }
        Ok(())
    }
}

fn line(h: &SearchHit) -> String {
    let sources = match h.sources {
        0 => "local".to_string(),
        1 => "1 source".to_string(),
        n => format!("{n} sources"),
    };
    let kind = if h.kind == "blob" { "" } else { &h.kind };
    format!(
        "{:<48} {:>10}  {:<10} {:<10} {}",
        h.name,
        human(h.size),
        sources,
        kind,
        h.id
    )
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) fn search(home: &Home, args: &SearchArgs, json: bool) -> Result<()> {
    let request = args.request()?;
    let mut printer = Printer {
        json,
        hits: Vec::new(),
    };
    if let Some(daemon) = Daemon::find(home) {
        let body = daemon.get_stream(&format!("/v1/search?{}", args.query_string()))?;
        let mut event = String::new();
        for line in body.lines() {
            let line = line.context("reading results from the daemon")?;
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                match event.as_str() {
                    "hit" => {
                        let hit: Value = serde_json::from_str(data.trim())?;
                        printer.hit(hit_from_json(&hit));
                    }
                    "done" => break,
                    _ => {}
                }
            }
        }
        return printer.done();
    }
    if args.local {
        let store = home.open_store()?;
        let mut index = Index::open(&node_search::index_path(home))?;
        for h in node_search::search_local(&mut index, &store, &request, 256)? {
            printer.hit(h);
        }
        return printer.done();
    }
    runtime()?.block_on(search_with_ephemeral_node(home, request, &mut printer))?;
    printer.done()
}

fn hit_from_json(v: &Value) -> SearchHit {
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    SearchHit {
        id: s("id"),
        name: s("name"),
        size: v["size"].as_u64().unwrap_or(0),
        kind: s("kind"),
        media: s("media"),
        parent: v["parent"].as_str().map(String::from),
        sources: v["sources"].as_u64().unwrap_or(0) as usize,
        publishers: strings("publishers"),
        relevance: v["relevance"].as_f64().unwrap_or(0.0),
        tags: strings("tags"),
        description: s("description"),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// No daemon: a node for the length of the search (its own store and index
/// answer too), joined through the configured bootstrap peers and mDNS.
async fn search_with_ephemeral_node(
    home: &Home,
    request: SearchRequest,
    printer: &mut Printer,
) -> Result<()> {
    let mut config = NodeConfig::load(home)?;
    // A second process must not fight over the daemon's port or files.
    config.net.listen_port = 0;
    config.net.address_book_file = None;
    let node = Node::start(home.clone(), config, spore_net::CancellationToken::new()).await?;
    // Give bootstrap, mDNS and the neighbours' routing filters a moment.
    for _ in 0..30 {
        if node.net().peers().await.is_ok_and(|p| !p.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut rx = node.search().search(request).await?;
    while let Some(ev) = rx.recv().await {
        match ev {
            SearchEvent::Hit(h) => printer.hit(h),
            SearchEvent::Done { .. } => break,
        }
    }
    node.shutdown().await;
    Ok(())
}

pub(crate) fn describe(
    home: &Home,
    id: &Hash,
    tags: &[String],
    description: Option<String>,
    json: bool,
) -> Result<()> {
    let mut index = Index::open(&node_search::index_path(home))?;
    index.set_meta(id, tags, description.as_deref().unwrap_or(""))?;
    if json {
        println!(
            "{}",
            json!({"id": id.to_hex(), "tags": tags, "description": description})
        );
    } else {
        println!("described {id}");
    }
    Ok(())
}
