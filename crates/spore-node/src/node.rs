//! A running node: the store and the network, and the background work that
//! joins them (announcing stored content in the DHT).

use std::{path::PathBuf, sync::Arc, time::Duration};

use spore_core::Hash;
use spore_net::{CancellationToken, NetHandle, NetNode};
use spore_store::{Added, BlobState, ImportMode, Store, StoreError};
use tokio::task::JoinSet;

use crate::{
    Home, HomeError, NodeConfig,
    search::{Search, SearchError},
    transfer::{DownloadHandle, DownloadRequest, Transfer},
};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error("starting the network: {0}")]
    Net(#[from] spore_net::StartError),
    #[error("starting the transfer engine: {0}")]
    Transfer(#[from] spore_net::NetError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("starting search: {0}")]
    Search(#[from] SearchError),
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// A node: store plus network, with its background tasks. Cheap to share
/// behind an `Arc`; stop it with [`Node::shutdown`].
#[derive(Debug)]
pub struct Node {
    home: Home,
    store: Store,
    net: NetNode,
    transfer: Transfer,
    search: Search,
    cancel: CancellationToken,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    config: NodeConfig,
}

impl Node {
    /// Opens the store, starts the network, and starts announcing every
    /// complete blob (now, and again every `reprovide_interval_secs`).
    pub async fn start(
        home: Home,
        config: NodeConfig,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, NodeError> {
        let store = {
            let home = home.clone();
            tokio::task::spawn_blocking(move || home.open_store())
                .await
                .map_err(|_| NodeError::ShuttingDown)??
        };
        let net = NetNode::start(config.net.clone(), cancel.child_token()).await?;
        let transfer = Transfer::start(
            store.clone(),
            net.handle().clone(),
            config.transfer.clone(),
            cancel.child_token(),
        )?;
        let mut tasks = JoinSet::new();
        let search = Search::start(
            crate::search::index_path(&home),
            store.clone(),
            net.handle().clone(),
            config.search.clone(),
            cancel.child_token(),
            &mut tasks,
        )?;
        let node = Arc::new(Self {
            home,
            store,
            net,
            transfer,
            search,
            cancel,
            tasks: tokio::sync::Mutex::new(tasks),
            config,
        });
        let reprovider = Self::reprovide_loop(
            node.store.clone(),
            node.net.handle().clone(),
            node.cancel.clone(),
            node.config.reprovide_interval_secs,
        );
        node.tasks.lock().await.spawn(reprovider);
        tracing::info!(peer_id = %node.net.peer_id(), "node started");
        Ok(node)
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn net(&self) -> &NetHandle {
        self.net.handle()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The transfer engine: serves stored blobs, runs downloads.
    pub fn transfer(&self) -> &Transfer {
        &self.transfer
    }

    /// Keyword search: the local index and `/spore/search/1`.
    pub fn search(&self) -> &Search {
        &self.search
    }

    /// Downloads `hash` from the given providers (a ticket's), the DHT and
    /// connected peers; joins a download of the same hash already running.
    pub fn download(
        &self,
        hash: Hash,
        providers: Vec<(spore_net::PeerId, Vec<spore_net::Multiaddr>)>,
    ) -> DownloadHandle {
        self.transfer.download(DownloadRequest::new(
            hash,
            spore_core::ContentKind::Blob,
            providers,
        ))
    }

    /// Starts any download: a blob or a collection, with a destination or not.
    pub fn start_download(&self, request: DownloadRequest) -> DownloadHandle {
        self.transfer.download(request)
    }

    /// The token that stops this node and all its tasks.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Adds a file or directory (on a blocking thread) and announces it.
    pub async fn add(&self, path: PathBuf, mode: ImportMode) -> Result<Added, NodeError> {
        let store = self.store.clone();
        let added = tokio::task::spawn_blocking(move || store.add_path(&path, mode, &()))
            .await
            .map_err(|_| NodeError::ShuttingDown)??;
        self.announce(&added.hash).await;
        if added.kind == spore_core::ContentKind::Collection {
            let store = self.store.clone();
            let hash = added.hash;
            let children = tokio::task::spawn_blocking(move || store.collection(&hash))
                .await
                .map_err(|_| NodeError::ShuttingDown)??;
            for entry in children.entries() {
                self.announce(&entry.hash).await;
            }
        }
        self.search.reindex().await;
        Ok(added)
    }

    /// Starts providing `hash` in the DHT; a failure is logged, not fatal
    /// (the reprovide loop tries again).
    pub async fn announce(&self, hash: &Hash) {
        if let Err(e) = self.net().start_providing(*hash).await {
            tracing::debug!(%hash, "could not announce: {e}");
        }
    }

    async fn reprovide_loop(
        store: Store,
        net: NetHandle,
        cancel: CancellationToken,
        interval_secs: u64,
    ) {
        let interval = Duration::from_secs(interval_secs.max(60));
        loop {
            let listed = {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.list_all()).await
            };
            match listed {
                Ok(Ok(records)) => {
                    let complete: Vec<Hash> = records
                        .into_iter()
                        .filter(|r| r.state == BlobState::Complete)
                        .map(|r| r.hash)
                        .collect();
                    tracing::debug!(count = complete.len(), "announcing stored content");
                    for hash in complete {
                        if cancel.is_cancelled() {
                            return;
                        }
                        if let Err(e) = net.start_providing(hash).await {
                            tracing::debug!(%hash, "could not announce: {e}");
                        }
                    }
                }
                Ok(Err(e)) => tracing::warn!("cannot list the store to announce it: {e}"),
                Err(_) => return,
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Stops every task and the network, and waits until they are gone.
    pub async fn shutdown(self: Arc<Self>) {
        self.cancel.cancel();
        self.transfer.shutdown().await;
        let mut tasks = std::mem::take(&mut *self.tasks.lock().await);
        while tasks.join_next().await.is_some() {}
        match Arc::try_unwrap(self) {
            Ok(node) => node.net.shutdown().await,
            Err(shared) => {
                // Someone still holds the node (an API request in flight); the
                // cancelled token stops the network task, give it a moment.
                let net = shared.net.handle().clone();
                drop(shared);
                for _ in 0..50 {
                    if net.status().await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        tracing::info!("node stopped");
    }
}
