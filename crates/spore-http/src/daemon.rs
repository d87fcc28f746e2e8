//! `spore node`: a node plus its API, running until it is told to stop.

use std::{net::SocketAddr, sync::Arc};

use spore_net::CancellationToken;
use spore_node::{ApiEndpoint, Home, Node, NodeConfig, NodeError, api_token};
use tokio::task::JoinHandle;

use crate::AppState;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(
        "cannot listen for the API on {addr}: {source} (is another `spore node` running? set [api] listen in spore.toml)"
    )]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the API files under the home directory: {0}")]
    Files(#[source] std::io::Error),
}

/// A running node with its HTTP API.
#[derive(Debug)]
pub struct Daemon {
    node: Arc<Node>,
    api_addr: SocketAddr,
    events: Arc<crate::EventBus>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Daemon {
    /// Starts the node and its API, and publishes where the API listens.
    pub async fn start(home: Home, config: NodeConfig) -> Result<Self, DaemonError> {
        let token = api_token(&home).map_err(DaemonError::Files)?;
        let listener = tokio::net::TcpListener::bind(config.api.listen)
            .await
            .map_err(|source| DaemonError::Listen {
                addr: config.api.listen,
                source,
            })?;
        let api_addr = listener.local_addr().map_err(DaemonError::Files)?;
        let node = Node::start(home.clone(), config, CancellationToken::new()).await?;
        let state = AppState::new(node.clone(), token, api_addr);
        let events = state.events.clone();
        let server = tokio::spawn(crate::serve(listener, state));
        ApiEndpoint {
            addr: api_addr,
            pid: std::process::id(),
        }
        .publish(&home)
        .map_err(DaemonError::Files)?;
        tracing::info!(%api_addr, "API listening");
        Ok(Self {
            node,
            api_addr,
            events,
            server,
        })
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The API's event bus (what `/v1/events` streams).
    pub fn events(&self) -> &Arc<crate::EventBus> {
        &self.events
    }

    /// Waits for SIGINT or SIGTERM (or for the node to be cancelled).
    pub async fn wait_for_signal(&self) {
        let cancel = self.node.cancel_token().clone();
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = interrupt => tracing::info!("interrupted; shutting down"),
            _ = terminate => tracing::info!("terminated; shutting down"),
            _ = cancel.cancelled() => {}
        }
    }

    /// Stops the API and the node, waits for every task, and withdraws the
    /// endpoint file.
    pub async fn shutdown(self) {
        self.node.cancel_token().cancel();
        match self.server.await {
            Ok(Err(e)) => tracing::warn!("API server ended with an error: {e}"),
            Err(e) => tracing::warn!("API server task failed: {e}"),
            Ok(Ok(())) => {}
        }
        let home = self.node.home().clone();
        self.node.shutdown().await;
        ApiEndpoint::withdraw(&home);
    }
}
