//! A collection download: the manifest first, then its files.
//!
//! The manifest is fetched like any blob (untagged), decoded and validated
//! by [`spore_core::Collection`] (safe relative paths, no duplicates, sane
//! sizes) before anything else happens: a hostile manifest fails the
//! download with the reason and nothing is fetched or written. Once valid,
//! the manifest is tagged (its tag keeps the member blobs from garbage
//! collection; members get no tag of their own) and its member blobs are
//! downloaded, [`PARALLEL_MEMBERS`] at a time, from the peers that served
//! the manifest plus whatever each member's discovery finds. Files reach the
//! destination only through [`spore_store::Store::export`], which joins
//! validated paths under it, refuses symbolic links inside it and never
//! overwrites a file.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use spore_core::{Collection, ContentKind, Hash};
use spore_net::{CancellationToken, Multiaddr, PeerId};
use spore_store::{BlobState, Store, StoreError, Tag};
use tokio::sync::watch;

use super::{
    DownloadHandle, DownloadRequest, DownloadState, Keep, Progress, SourceProgress, Transfer, lock,
};

/// Member blobs downloaded at once (each uses many sources itself).
pub(super) const PARALLEL_MEMBERS: usize = 4;
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

pub(super) async fn run(
    transfer: Transfer,
    request: DownloadRequest,
    cancel: CancellationToken,
    progress_tx: watch::Sender<Progress>,
) {
    let hash = request.hash;
    let mut c = Run {
        transfer: transfer.clone(),
        request,
        progress_tx,
        members: Vec::new(),
        rate: (Instant::now(), 0, 0.0),
    };
    let outcome = tokio::select! {
        r = c.drive() => r.map_err(Some),
        _ = cancel.cancelled() => Err(None),
    };
    // Stop what is still running and wait until it let go of its partial
    // blobs, so that a resume (or a cancel's cleanup) finds them closed.
    for m in &c.members {
        if !m.progress().is_finished() {
            m.cancel();
        }
    }
    for m in &c.members {
        m.stopped().await;
    }
    match outcome {
        Ok(()) => c.progress_tx.send_modify(|p| {
            p.state = DownloadState::Done;
            p.verified_bytes = p.size.unwrap_or(p.verified_bytes);
            p.files_done = p.files.unwrap_or(p.files_done);
            p.rate = 0.0;
        }),
        Err(Some(e)) => {
            tracing::info!(%hash, "collection download failed: {e}");
            c.progress_tx
                .send_modify(|p| p.state = DownloadState::Failed(e));
        }
        // paused or cancelled: the handle says which
        Err(None) => {}
    }
    let mut collections = lock(&transfer.shared.collections);
    if collections
        .get(&hash)
        .is_some_and(|h| h.progress.same_channel(&c.progress_tx.subscribe()))
    {
        collections.remove(&hash);
    }
}

struct Run {
    transfer: Transfer,
    request: DownloadRequest,
    progress_tx: watch::Sender<Progress>,
    /// Every download this one started (the manifest's included).
    members: Vec<DownloadHandle>,
    /// When and at how many bytes the rate was last computed, and the rate.
    rate: (Instant, u64, f64),
}

/// One file's blob (several entries may share it).
struct Member {
    hash: Hash,
    size: u64,
    /// The first path that lists it, for messages.
    path: String,
    /// How many entries list it.
    entries: usize,
}

impl Run {
    fn store(&self) -> Store {
        self.transfer.shared.store.clone()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let store = self.store();
        tokio::task::spawn_blocking(move || f(store))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    async fn drive(&mut self) -> Result<(), String> {
        let hash = self.request.hash;
        // 1. The manifest, as an untagged blob.
        let manifest = self.transfer.download(DownloadRequest {
            kind: ContentKind::Collection,
            dest: None,
            keep: Keep::Untagged,
            ..self.request.clone()
        });
        self.members.push(manifest.clone());
        let done = manifest
            .wait()
            .await
            .map_err(|e| format!("fetching the manifest: {e}"))?;

        // 2. Validate it before anything else.
        let collection = self
            .blocking(move |store| Ok(read_manifest(&store, hash)))
            .await??;

        // 3. The collection is the user's now: its tag keeps the members.
        let name = self
            .request
            .dest
            .as_ref()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| hash.short());
        self.blocking(move |store| {
            if store.get(&hash)?.is_some_and(|r| r.tag.is_none()) {
                store.tag(&hash, Tag::now(name))?;
            }
            Ok(())
        })
        .await?;

        // 4. The member blobs, from the manifest's sources and discovery.
        let mut providers: Vec<(PeerId, Vec<Multiaddr>)> = self.request.providers.clone();
        for s in &done.sources {
            if !s.banned && !providers.iter().any(|(p, _)| *p == s.peer) {
                providers.push((s.peer, Vec::new()));
            }
        }
        self.fetch_members(&collection, providers).await?;

        // 5. Write the files out.
        if let Some(dest) = self.request.dest.clone() {
            let shown = dest.display().to_string();
            self.blocking(move |store| store.export(&hash, &dest, false))
                .await
                .map_err(|e| format!("writing under {shown}: {e}"))?;
        }
        Ok(())
    }

    async fn fetch_members(
        &mut self,
        collection: &Collection,
        providers: Vec<(PeerId, Vec<Multiaddr>)>,
    ) -> Result<(), String> {
        let mut by_hash: HashMap<Hash, usize> = HashMap::new();
        let mut members: Vec<Member> = Vec::new();
        for e in collection.entries() {
            match by_hash.get(&e.hash) {
                Some(&i) => members[i].entries += 1,
                None => {
                    if e.size == 0 && e.hash != Hash::EMPTY {
                        return Err(format!(
                            "the manifest lists {} as empty but with the id of non-empty content",
                            e.path.as_str()
                        ));
                    }
                    by_hash.insert(e.hash, members.len());
                    members.push(Member {
                        hash: e.hash,
                        size: e.size,
                        path: e.path.as_str().to_string(),
                        entries: 1,
                    });
                }
            }
        }
        let total = collection.total_size();
        let files = collection.entries().len();
        self.progress_tx.send_modify(|p| {
            p.size = Some(total);
            p.files = Some(files);
            p.state = DownloadState::Downloading;
        });

        // What is here already (and empty files, which need no peer).
        let hashes: Vec<(Hash, u64)> = members.iter().map(|m| (m.hash, m.size)).collect();
        let present = self
            .blocking(move |store| {
                let mut present = HashSet::new();
                for (hash, size) in hashes {
                    if size == 0 && hash == Hash::EMPTY {
                        store.import_bytes(&[], ContentKind::Blob)?;
                    }
                    if store.has_complete(&hash)? {
                        present.insert(hash);
                    }
                }
                Ok(present)
            })
            .await?;
        let mut done_bytes = 0u64;
        let mut files_done = 0usize;
        let mut pending = Vec::new();
        for m in members {
            if present.contains(&m.hash) {
                self.check_size(&m).await?;
                done_bytes += m.size * m.entries as u64;
                files_done += m.entries;
            } else {
                pending.push(m);
            }
        }
        // what was here before this run (whole files, then the groups members resume from)
        let mut resumed = done_bytes;
        pending.reverse(); // pop() takes them in manifest order

        let mut running: Vec<(Member, DownloadHandle)> = Vec::new();
        let mut sources: HashMap<PeerId, SourceProgress> = HashMap::new();
        loop {
            while running.len() < PARALLEL_MEMBERS
                && let Some(m) = pending.pop()
            {
                let handle = self.transfer.download(DownloadRequest {
                    hash: m.hash,
                    kind: ContentKind::Blob,
                    providers: providers.clone(),
                    discover: self.request.discover,
                    dest: None,
                    keep: Keep::Untagged,
                });
                self.members.push(handle.clone());
                running.push((m, handle));
            }
            if running.is_empty() {
                break;
            }
            let mut still = Vec::with_capacity(running.len());
            for (m, handle) in running {
                let p = handle.progress();
                match &p.state {
                    DownloadState::Done => {
                        self.check_size(&m).await?;
                        done_bytes += m.size * m.entries as u64;
                        files_done += m.entries;
                        resumed += p.resumed_bytes.min(m.size) * m.entries as u64;
                        merge_sources(&mut sources, &p.sources);
                    }
                    DownloadState::Failed(e) => return Err(format!("{}: {e}", m.path)),
                    DownloadState::Paused | DownloadState::Cancelled => {
                        return Err(format!("{}: its download was stopped", m.path));
                    }
                    DownloadState::Starting | DownloadState::Downloading => {
                        still.push((m, handle));
                    }
                }
            }
            running = still;
            let mut all_sources = sources.clone();
            let mut verified = done_bytes;
            let mut resumed_now = resumed;
            let mut peers = 0;
            for (m, h) in &running {
                let p = h.progress();
                verified += p.verified_bytes.min(m.size) * m.entries as u64;
                resumed_now += p.resumed_bytes.min(m.size) * m.entries as u64;
                peers = peers.max(p.peers);
                merge_sources(&mut all_sources, &p.sources);
            }
            self.publish(verified, resumed_now, peers, files_done, all_sources);
            if !running.is_empty() {
                let mut changes: Vec<_> = running.iter().map(|(_, h)| h.subscribe()).collect();
                let any = futures::future::select_all(
                    changes.iter_mut().map(|rx| Box::pin(rx.changed())),
                );
                let _ = tokio::time::timeout(PUBLISH_EVERY, any).await;
            }
        }
        Ok(())
    }

    /// The manifest's size for a file must be its content's size.
    async fn check_size(&self, m: &Member) -> Result<(), String> {
        let hash = m.hash;
        let actual = self
            .blocking(move |store| Ok(store.get(&hash)?.map(|r| (r.size, r.state))))
            .await?;
        match actual {
            Some((size, BlobState::Complete)) if size == m.size => Ok(()),
            Some((size, _)) => Err(format!(
                "{}: the manifest says {} bytes but its content has {size}",
                m.path, m.size
            )),
            None => Err(format!("{}: vanished from the store", m.path)),
        }
    }

    fn publish(
        &mut self,
        verified: u64,
        resumed: u64,
        peers: usize,
        files_done: usize,
        sources: HashMap<PeerId, SourceProgress>,
    ) {
        let now = Instant::now();
        let (t0, b0, rate) = self.rate;
        let dt = now.duration_since(t0).as_secs_f64();
        if dt >= 0.2 {
            let inst = verified.saturating_sub(b0) as f64 / dt;
            let rate = if rate == 0.0 {
                inst
            } else {
                0.7 * rate + 0.3 * inst
            };
            self.rate = (now, verified, rate);
        }
        let mut sources: Vec<SourceProgress> = sources.into_values().collect();
        sources.sort_by_key(|s| std::cmp::Reverse(s.useful_bytes));
        let rate = self.rate.2;
        self.progress_tx.send_modify(|p| {
            p.verified_bytes = verified;
            p.resumed_bytes = resumed;
            p.peers = peers;
            p.rate = rate;
            p.files_done = files_done;
            p.duplicate_bytes = sources.iter().map(|s| s.duplicate_bytes).sum();
            p.wasted_bytes = sources.iter().map(|s| s.wasted_bytes).sum();
            p.sources = sources;
        });
    }
}

/// Reads and validates a downloaded manifest; the error says why it is
/// refused in words a user can act on.
fn read_manifest(store: &Store, hash: Hash) -> Result<Collection, String> {
    match store.collection(&hash) {
        Ok(c) => Ok(c),
        Err(StoreError::Collection { source, .. }) => Err(format!(
            "the manifest of collection {hash} is invalid, nothing was written: {source}"
        )),
        Err(StoreError::NotACollection(_)) => Err(format!(
            "{hash} is not a collection manifest (maybe the ticket of a single file?)"
        )),
        Err(e) => Err(format!("reading the manifest: {e}")),
    }
}

/// Adds one member's per-source counts to the collection's.
fn merge_sources(into: &mut HashMap<PeerId, SourceProgress>, from: &[SourceProgress]) {
    for s in from {
        let e = into.entry(s.peer).or_insert_with(|| SourceProgress {
            peer: s.peer,
            useful_bytes: 0,
            duplicate_bytes: 0,
            wasted_bytes: 0,
            bad_groups: 0,
            banned: false,
        });
        e.useful_bytes += s.useful_bytes;
        e.duplicate_bytes += s.duplicate_bytes;
        e.wasted_bytes += s.wasted_bytes;
        e.bad_groups += s.bad_groups;
        e.banned |= s.banned;
    }
}

/// After a cancel: drops what the download left half done. For a
/// collection: the manifest's tag (so its completed files become garbage
/// unless something else keeps them) and its members' partial blobs.
pub(super) fn drop_partial(
    store: &Store,
    hash: &Hash,
    kind: ContentKind,
) -> Result<(), StoreError> {
    let Some(record) = store.get(hash)? else {
        return Ok(());
    };
    if kind == ContentKind::Collection
        && record.state == BlobState::Complete
        && let Ok(collection) = store.collection(hash)
    {
        for e in collection.entries() {
            if let Some(r) = store.get(&e.hash)?
                && matches!(r.state, BlobState::Partial(_))
                && r.tag.is_none()
            {
                store.remove(&e.hash)?;
            }
        }
    }
    let partial = matches!(record.state, BlobState::Partial(_));
    let ours = kind == ContentKind::Collection && record.state == BlobState::Complete;
    if partial || ours {
        store.remove(hash)?;
    }
    Ok(())
}
