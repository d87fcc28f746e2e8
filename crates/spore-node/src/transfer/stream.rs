//! Streaming reads: read any range of a blob while it downloads.
//!
//! A [`BlobStream`] is a reader over one blob. When the blob is complete in
//! the store it reads from there. Otherwise it joins (or starts) the blob's
//! download and reads from the download's *view*, the worker's reader over
//! the groups verified so far; a read that reaches a missing group moves the
//! download's playhead (the scheduler's streaming window) to the read
//! position and waits until the group verifies.
//!
//! **Invariant:** every byte handed out was verified against the content id
//! on its way out of the store ([`spore_store::Blob::read_with`]); a missing
//! group means waiting, never a guess.
//!
//! Several readers of one download share one playhead: the last reader that
//! had to wait sets it. When the last reader goes away the playhead is
//! cleared and the download goes on in rarest-first order (it is not
//! cancelled: what a player started fetching is usually watched to the end).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use spore_core::{ContentKind, GROUP_SIZE, Hash};
use spore_store::{Blob, StoreError};
use tokio::sync::watch;

use super::{DownloadHandle, DownloadRequest, DownloadState, Progress, Transfer, lock};

/// The playhead of one download, shared by its readers and its controller.
#[derive(Debug)]
pub(crate) struct StreamControl {
    /// Byte offset the readers wait for; `None` when nobody streams.
    pub(crate) playhead: watch::Sender<Option<u64>>,
    /// Open [`BlobStream`]s over this download.
    pub(crate) readers: AtomicUsize,
}

impl StreamControl {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            playhead: watch::channel(None).0,
            readers: AtomicUsize::new(0),
        })
    }

    /// True while at least one reader streams: the worker then publishes
    /// every verified group at once instead of batching them.
    pub(crate) fn is_streaming(&self) -> bool {
        self.readers.load(Ordering::Relaxed) > 0
    }

    fn seek(&self, offset: u64) {
        self.playhead.send_if_modified(|p| {
            let changed = p.is_none_or(|old| old / GROUP_SIZE != offset / GROUP_SIZE);
            if changed {
                *p = Some(offset);
            }
            changed
        });
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    Store(String),
    #[error("fetching {hash} failed: {reason}")]
    Failed { hash: Hash, reason: String },
    #[error("the download of {0} was cancelled")]
    Cancelled(Hash),
    #[error("range {start}..{end} is outside {hash} ({size} bytes)")]
    OutOfRange {
        hash: Hash,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("the node is shutting down")]
    Shutdown,
}

impl From<StoreError> for StreamError {
    fn from(e: StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

#[derive(Debug)]
enum Source {
    /// Complete in the store.
    Local,
    /// Being downloaded.
    Remote {
        handle: DownloadHandle,
        view: watch::Receiver<Option<Blob>>,
        control: Arc<StreamControl>,
    },
}

/// A verified reader over one blob, local or still downloading.
#[derive(Debug)]
pub struct BlobStream {
    hash: Hash,
    size: u64,
    kind: ContentKind,
    store: spore_store::Store,
    source: Source,
}

impl Drop for BlobStream {
    fn drop(&mut self) {
        if let Source::Remote { control, .. } = &self.source
            && control.readers.fetch_sub(1, Ordering::Relaxed) == 1
        {
            control.playhead.send_replace(None);
        }
    }
}

impl Transfer {
    /// Opens a reader over `request.hash`: from the store when complete,
    /// otherwise from its download (started if none runs). Returns once
    /// the blob's size is proven (its last group verified).
    pub async fn open_stream(&self, request: DownloadRequest) -> Result<BlobStream, StreamError> {
        let hash = request.hash;
        let store = self.shared.store.clone();
        if let Some(blob) = complete_blob(&store, hash).await? {
            return Ok(BlobStream::local(store, blob));
        }
        let kind = request.kind;
        let handle = self.download(request);
        let active = lock(&self.shared.downloads)
            .get(&hash)
            .map(|active| (active.view.clone(), active.stream.clone()));
        // None: finished (or failed) between the two calls
        let Some((view, control)) = active else {
            return self.after_download(handle, store).await;
        };
        control.readers.fetch_add(1, Ordering::Relaxed);
        let mut stream = BlobStream {
            hash,
            size: 0,
            kind,
            store: store.clone(),
            source: Source::Remote {
                handle: handle.clone(),
                view,
                control,
            },
        };
        let mut progress = handle.subscribe();
        loop {
            let p = progress.borrow_and_update().clone();
            match p.state {
                DownloadState::Done => return self.after_download(handle, store).await,
                DownloadState::Failed(reason) => return Err(StreamError::Failed { hash, reason }),
                _ => {}
            }
            if let Some(size) = p.size {
                stream.size = size;
                return Ok(stream);
            }
            tokio::select! {
                changed = progress.changed() => {
                    if changed.is_err() {
                        return Err(ended(&handle, &progress.borrow()));
                    }
                }
                _ = self.shared.cancel.cancelled() => return Err(StreamError::Shutdown),
            }
            if handle.is_cancelled() {
                return Err(StreamError::Cancelled(hash));
            }
        }
    }

    async fn after_download(
        &self,
        handle: DownloadHandle,
        store: spore_store::Store,
    ) -> Result<BlobStream, StreamError> {
        let hash = handle.hash();
        match complete_blob(&store, hash).await? {
            Some(blob) => Ok(BlobStream::local(store, blob)),
            None => Err(ended(&handle, &handle.progress())),
        }
    }
}

fn ended(handle: &DownloadHandle, p: &Progress) -> StreamError {
    match &p.state {
        DownloadState::Failed(reason) => StreamError::Failed {
            hash: handle.hash(),
            reason: reason.clone(),
        },
        _ if handle.is_cancelled() => StreamError::Cancelled(handle.hash()),
        _ => StreamError::Shutdown,
    }
}

async fn complete_blob(
    store: &spore_store::Store,
    hash: Hash,
) -> Result<Option<Blob>, StreamError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || match store.has_complete(&hash)? {
        true => store.blob(&hash).map(Some),
        false => Ok(None),
    })
    .await
    .map_err(|_| StreamError::Shutdown)?
    .map_err(StreamError::from)
}

impl BlobStream {
    fn local(store: spore_store::Store, blob: Blob) -> Self {
        Self {
            hash: blob.hash(),
            size: blob.size(),
            kind: blob.kind(),
            store,
            source: Source::Local,
        }
    }

    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// The blob's size, proven by its last group.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The kind the request named (the store's, when local).
    pub fn kind(&self) -> ContentKind {
        self.kind
    }

    /// True when every byte is already here (no waiting on the network).
    pub fn is_local(&self) -> bool {
        matches!(self.source, Source::Local)
    }

    /// The download behind this reader, if the blob was not complete.
    pub fn download(&self) -> Option<&DownloadHandle> {
        match &self.source {
            Source::Local => None,
            Source::Remote { handle, .. } => Some(handle),
        }
    }

    /// Reads verified bytes at `offset`: at least one byte and at most
    /// `max`, fewer when the groups after them are not verified yet.
    /// Waits (moving the download's playhead to `offset`) until the group
    /// at `offset` verifies. Returns an empty buffer only at the end.
    pub async fn read_at(&mut self, offset: u64, max: usize) -> Result<Bytes, StreamError> {
        if offset > self.size {
            return Err(StreamError::OutOfRange {
                hash: self.hash,
                start: offset,
                end: offset,
                size: self.size,
            });
        }
        let end = offset.saturating_add(max as u64).min(self.size);
        if offset == end {
            return Ok(Bytes::new());
        }
        loop {
            let blob = match &mut self.source {
                Source::Local => return self.read_local(offset..end).await,
                Source::Remote {
                    handle,
                    view,
                    control,
                } => {
                    let current = view.borrow_and_update().clone();
                    match current {
                        Some(blob) if blob.is_complete() => {
                            // The download finished: read from the store from now on.
                            control.readers.fetch_sub(1, Ordering::Relaxed);
                            self.source = Source::Local;
                            continue;
                        }
                        Some(blob) if blob.available().get(offset / GROUP_SIZE) => {
                            control.seek(offset);
                            blob
                        }
                        _ => {
                            control.seek(offset);
                            let mut progress = handle.subscribe();
                            {
                                let p = progress.borrow_and_update();
                                if p.is_finished() || handle.is_cancelled() {
                                    // The view is the authority on a Done download.
                                    if p.state != DownloadState::Done {
                                        return Err(ended(handle, &p));
                                    }
                                }
                            }
                            tokio::select! {
                                changed = view.changed() => {
                                    if changed.is_err() {
                                        return Err(ended(handle, &handle.progress()));
                                    }
                                }
                                changed = progress.changed() => {
                                    if changed.is_err() {
                                        return Err(ended(handle, &handle.progress()));
                                    }
                                }
                            }
                            continue;
                        }
                    }
                }
            };
            // Serve the run of verified groups that starts at `offset`.
            let available = blob.available();
            let mut run_end = offset / GROUP_SIZE + 1;
            while run_end * GROUP_SIZE < end && available.get(run_end) {
                run_end += 1;
            }
            let range = offset..end.min(run_end * GROUP_SIZE);
            return tokio::task::spawn_blocking(move || blob.read_range(range))
                .await
                .map_err(|_| StreamError::Shutdown)?
                .map(Bytes::from)
                .map_err(StreamError::from);
        }
    }

    async fn read_local(&self, range: std::ops::Range<u64>) -> Result<Bytes, StreamError> {
        let store = self.store.clone();
        let hash = self.hash;
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity((range.end - range.start) as usize);
            store.read_range(&hash, range, &mut out).map(|_| out)
        })
        .await
        .map_err(|_| StreamError::Shutdown)?
        .map(Bytes::from)
        .map_err(StreamError::from)
    }

    /// Reads the whole blob (for small blobs: manifests).
    pub async fn read_to_end(&mut self, limit: u64) -> Result<Vec<u8>, StreamError> {
        if self.size > limit {
            return Err(StreamError::OutOfRange {
                hash: self.hash,
                start: 0,
                end: self.size,
                size: limit,
            });
        }
        let mut out = Vec::with_capacity(self.size as usize);
        while (out.len() as u64) < self.size {
            let chunk = self.read_at(out.len() as u64, 1 << 20).await?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}
