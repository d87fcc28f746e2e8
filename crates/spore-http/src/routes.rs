//! The `/v1` endpoints. Handlers translate between JSON and the node; the
//! types here are the API's own, so the wire format does not move when a
//! library type does.

use std::path::PathBuf;

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use spore_core::{ContentKind, Hash, Ticket};
use spore_net::{Multiaddr, PeerId};
use spore_store::ImportMode;
use utoipa::ToSchema;

use crate::{ApiError, AppState};

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    ok: bool,
    version: String,
}

/// Liveness, without authentication.
#[utoipa::path(get, path = "/v1/health", responses((status = 200, body = Health)))]
pub(crate) async fn health() -> Json<Health> {
    Json(Health {
        ok: true,
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Status {
    peer_id: String,
    version: String,
    uptime_secs: u64,
    listen_addrs: Vec<String>,
    external_addrs: Vec<String>,
    /// `unknown`, `public` or `private`.
    reachability: String,
    connected_peers: usize,
    connections: usize,
    routing_table_size: usize,
    kad_server_mode: bool,
    provided_keys: usize,
    /// Entries the user added, and downloads in progress.
    store_entries: usize,
    /// Payload bytes sent to peers since the node started.
    uploaded_bytes: u64,
    /// Bytes downloaded and verified since the node started.
    downloaded_bytes: u64,
    /// Failed connection attempts since start, by direction and cause
    /// (`"outgoing: refused"`, `"incoming: denied by limits"`, …).
    connection_errors: std::collections::BTreeMap<String, u64>,
    /// Malformed or oversized protocol messages received since start.
    malformed_messages: u64,
    /// Peers with a misbehaviour score.
    penalised_peers: usize,
    /// Peers banned right now.
    banned_peers: usize,
}

/// The node at a glance.
#[utoipa::path(get, path = "/v1/status", security(("token" = [])),
    responses((status = 200, body = Status), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn status(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    let net = state.node.net().status().await?;
    let store = state.node.store().clone();
    let store_entries = tokio::task::spawn_blocking(move || store.list())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??
        .len();
    Ok(Json(Status {
        peer_id: net.peer_id.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: state.started.elapsed().as_secs(),
        listen_addrs: net.listen_addrs.iter().map(ToString::to_string).collect(),
        external_addrs: net.external_addrs.iter().map(ToString::to_string).collect(),
        reachability: serde_json::to_value(net.reachability)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        connected_peers: net.connected_peers,
        connections: net.connections,
        routing_table_size: net.routing_table_size,
        kad_server_mode: net.kad_server_mode,
        provided_keys: net.provided_keys,
        store_entries,
        uploaded_bytes: state.node.transfer().upload_stats().total,
        downloaded_bytes: state.node.transfer().downloaded_bytes(),
        connection_errors: net.connection_errors,
        malformed_messages: net.malformed_messages,
        penalised_peers: net.penalised_peers,
        banned_peers: net.banned_peers,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Connection {
    remote_addr: String,
    /// `inbound` or `outbound`.
    direction: String,
    /// `tcp`, `quic`, `relay` or `other`.
    transport: String,
}

/// A connected peer, as `/v1/peers` (and `spore peers --json`) show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Peer {
    peer_id: String,
    connections: Vec<Connection>,
    listen_addrs: Vec<String>,
    protocols: Vec<String>,
    agent_version: Option<String>,
    /// Last ping round trip in milliseconds.
    latency_ms: Option<f64>,
}

impl From<spore_net::PeerInfo> for Peer {
    fn from(p: spore_net::PeerInfo) -> Self {
        Self {
            peer_id: p.peer_id.to_string(),
            connections: p
                .connections
                .iter()
                .map(|c| Connection {
                    remote_addr: c.remote_addr.to_string(),
                    direction: word(&c.direction),
                    transport: word(&c.transport),
                })
                .collect(),
            listen_addrs: p.listen_addrs.iter().map(ToString::to_string).collect(),
            protocols: p.protocols,
            agent_version: p.agent_version,
            latency_ms: p.latency.map(|d| d.as_secs_f64() * 1000.0),
        }
    }
}

fn word<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Connected peers.
#[utoipa::path(get, path = "/v1/peers", security(("token" = [])),
    responses((status = 200, body = Vec<Peer>), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn peers(State(state): State<AppState>) -> Result<Json<Vec<Peer>>, ApiError> {
    let peers = state.node.net().peers().await?;
    Ok(Json(peers.into_iter().map(Peer::from).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct AddRequest {
    /// A file or directory on the node's machine.
    #[schema(value_type = String)]
    path: PathBuf,
    /// Copy the bytes into the store instead of referencing them in place.
    #[serde(default)]
    copy: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AddResponse {
    id: String,
    /// `blob` or `collection`.
    kind: String,
    name: String,
    size: u64,
    files: usize,
    /// Carries this node's addresses, so the receiver can dial it directly.
    ticket: String,
}

/// Adds a file or directory that is on the node's machine, and announces it.
#[utoipa::path(post, path = "/v1/add", security(("token" = [])), request_body = AddRequest,
    responses((status = 200, body = AddResponse), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn add(
    State(state): State<AppState>,
    Json(request): Json<AddRequest>,
) -> Result<Json<AddResponse>, ApiError> {
    if !request.path.is_absolute() {
        return Err(ApiError::bad_request(format!(
            "{} is relative; the node resolves paths on its own machine, so give an absolute path",
            request.path.display()
        )));
    }
    let mode = if request.copy {
        ImportMode::Copy
    } else {
        ImportMode::InPlace
    };
    add_path(&state, request.path, mode).await.map(Json)
}

/// Adds a path, announces it, and tells the event stream.
pub(crate) async fn add_path(
    state: &AppState,
    path: PathBuf,
    mode: ImportMode,
) -> Result<AddResponse, ApiError> {
    let added = state.node.add(path, mode).await?;
    let ticket = ticket_for(state, added.kind, added.hash).await;
    state.events.publish(
        "added",
        serde_json::json!({
            "id": added.hash.to_hex(),
            "kind": added.kind.to_string(),
            "name": added.name,
            "size": added.size,
            "ticket": ticket,
        }),
    );
    Ok(AddResponse {
        id: added.hash.to_hex(),
        kind: added.kind.to_string(),
        name: added.name,
        size: added.size,
        files: added.files,
        ticket,
    })
}

/// A ticket for `hash` that names this node as a provider.
pub(crate) async fn ticket_for(state: &AppState, kind: ContentKind, hash: Hash) -> String {
    let ticket = Ticket::new(kind, hash);
    match state.node.net().local_provider_hint().await {
        Ok(hint) => ticket.with_providers(vec![hint]).to_string(),
        Err(_) => ticket.to_string(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProviderOut {
    peer_id: String,
    addrs: Vec<String>,
}

fn parse_ticket(text: &str) -> Result<Ticket, ApiError> {
    Ticket::from_ticket_or_id(text).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn parse_id(id: &str) -> Result<Hash, ApiError> {
    parse_ticket(id).map(|t| t.hash)
}

/// Peers that provide a content id, found in the DHT.
#[utoipa::path(get, path = "/v1/providers/{id}", security(("token" = [])),
    params(("id" = String, Path, description = "content id (64 hex digits) or ticket")),
    responses((status = 200, body = Vec<ProviderOut>), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn providers(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<ProviderOut>>, ApiError> {
    let hash = parse_id(&id)?;
    let found = state.node.net().find_providers(hash).await?;
    Ok(Json(
        found
            .into_iter()
            .map(|p| ProviderOut {
                peer_id: p.peer_id.to_string(),
                addrs: p.addrs.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ConnectRequest {
    /// A multiaddr, ideally ending in `/p2p/<peer id>`.
    addr: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConnectResponse {
    peer_id: String,
}

/// Dials a peer.
#[utoipa::path(post, path = "/v1/connect", security(("token" = [])), request_body = ConnectRequest,
    responses((status = 200, body = ConnectResponse), (status = 400, body = crate::error::ErrorBody), (status = 502, body = crate::error::ErrorBody)))]
pub(crate) async fn connect(
    State(state): State<AppState>,
    Json(request): Json<ConnectRequest>,
) -> Result<Json<ConnectResponse>, ApiError> {
    let addr: Multiaddr = request.addr.parse().map_err(|e| {
        ApiError::bad_request(format!("{:?} is not a multiaddr: {e}", request.addr))
    })?;
    let peer = state.node.net().dial(addr).await?;
    Ok(Json(ConnectResponse {
        peer_id: peer.to_string(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct DisconnectRequest {
    peer_id: String,
}

/// Closes every connection to a peer.
#[utoipa::path(post, path = "/v1/disconnect", security(("token" = [])), request_body = DisconnectRequest,
    responses((status = 204), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn disconnect(
    State(state): State<AppState>,
    Json(request): Json<DisconnectRequest>,
) -> Result<StatusCode, ApiError> {
    let peer: PeerId = request.peer_id.parse().map_err(|e| {
        ApiError::bad_request(format!("{:?} is not a peer id: {e}", request.peer_id))
    })?;
    state.node.net().disconnect(peer).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SourceOut {
    peer_id: String,
    /// Bytes of verified groups this peer delivered first.
    useful_bytes: u64,
    /// Bytes of groups it delivered that verified but were already present.
    duplicate_bytes: u64,
    /// Payload bytes of its responses that failed verification.
    wasted_bytes: u64,
    /// Groups it sent that failed verification (banned at 3).
    bad_groups: u32,
    banned: bool,
}

/// A download and how far it is.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DownloadOut {
    id: String,
    /// `blob` or `collection`.
    kind: String,
    /// Known once a source announced it and the last group verified; for a
    /// collection, the sum of its files once the manifest is validated.
    size: Option<u64>,
    verified_bytes: u64,
    resumed_bytes: u64,
    /// Bytes that verified but were already present, over every source.
    duplicate_bytes: u64,
    /// Bytes of responses that failed verification, over every source.
    wasted_bytes: u64,
    peers: usize,
    /// Verified bytes per second, recently.
    rate: f64,
    /// `starting`, `downloading`, `paused`, `done`, `failed` or `cancelled`.
    state: String,
    error: Option<String>,
    /// For a collection: how many files it lists (once its manifest is validated).
    files: Option<usize>,
    /// For a collection: how many of them are complete.
    files_done: usize,
    sources: Vec<SourceOut>,
}

pub(crate) fn download_out(handle: &spore_node::transfer::DownloadHandle) -> DownloadOut {
    use spore_node::transfer::DownloadState;
    let p = handle.progress();
    let (state, error) = match &p.state {
        DownloadState::Starting => ("starting", None),
        DownloadState::Downloading => ("downloading", None),
        DownloadState::Done => ("done", None),
        DownloadState::Failed(e) => ("failed", Some(e.clone())),
        DownloadState::Paused => ("paused", None),
        DownloadState::Cancelled => ("cancelled", None),
    };
    DownloadOut {
        id: p.hash.clone(),
        kind: handle.kind().to_string(),
        size: p.size,
        verified_bytes: p.verified_bytes,
        resumed_bytes: p.resumed_bytes,
        duplicate_bytes: p.duplicate_bytes,
        wasted_bytes: p.wasted_bytes,
        peers: p.peers,
        rate: p.rate,
        state: state.to_string(),
        error,
        files: p.files,
        files_done: p.files_done,
        sources: p
            .sources
            .iter()
            .map(|s| SourceOut {
                peer_id: s.peer.to_string(),
                useful_bytes: s.useful_bytes,
                duplicate_bytes: s.duplicate_bytes,
                wasted_bytes: s.wasted_bytes,
                bad_groups: s.bad_groups,
                banned: s.banned,
            })
            .collect(),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct DownloadRequestIn {
    /// A ticket (`spore1…`, its providers are dialled) or a content id (found
    /// in the DHT). A collection's ticket downloads its manifest and every file.
    ticket: String,
    /// An absolute path on the node's machine: once complete, the blob is
    /// written to this file, or the collection's files under this directory
    /// (never outside it, never over an existing file).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    dest: Option<PathBuf>,
    /// What a bare content id points at (a ticket says it itself): `blob`
    /// (the default) or `collection` (the manifest, then every file).
    #[serde(default)]
    kind: Option<KindIn>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KindIn {
    Blob,
    Collection,
}

impl From<KindIn> for ContentKind {
    fn from(k: KindIn) -> Self {
        match k {
            KindIn::Blob => Self::Blob,
            KindIn::Collection => Self::Collection,
        }
    }
}

/// Starts downloading a blob or a collection (or joins the download already running).
#[utoipa::path(post, path = "/v1/downloads", security(("token" = [])), request_body = DownloadRequestIn,
    responses((status = 200, body = DownloadOut), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn start_download(
    State(state): State<AppState>,
    Json(request): Json<DownloadRequestIn>,
) -> Result<Json<DownloadOut>, ApiError> {
    let ticket = parse_ticket(&request.ticket)?;
    let is_ticket = request.ticket.trim().parse::<Hash>().is_err();
    let kind = match request.kind.map(ContentKind::from) {
        Some(kind) if is_ticket && kind != ticket.kind => {
            return Err(ApiError::bad_request(format!(
                "the ticket is for a {}, not a {kind}",
                ticket.kind
            )));
        }
        Some(kind) => kind,
        None => ticket.kind,
    };
    if let Some(dest) = &request.dest
        && !dest.is_absolute()
    {
        return Err(ApiError::bad_request(format!(
            "{} is relative; the node resolves paths on its own machine, so give an absolute path",
            dest.display()
        )));
    }
    let providers = ticket
        .providers
        .iter()
        .filter_map(|h| spore_net::from_hint(h).ok())
        .collect();
    let mut download = spore_node::transfer::DownloadRequest::new(ticket.hash, kind, providers);
    download.dest = request.dest;
    let handle = state.node.start_download(download);
    Ok(Json(download_out(&handle)))
}

/// Downloads started since the node started.
#[utoipa::path(get, path = "/v1/downloads", security(("token" = [])),
    responses((status = 200, body = Vec<DownloadOut>), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn list_downloads(State(state): State<AppState>) -> Json<Vec<DownloadOut>> {
    Json(
        state
            .node
            .transfer()
            .downloads()
            .iter()
            .map(download_out)
            .collect(),
    )
}

fn find_download(
    state: &AppState,
    id: &str,
) -> Result<spore_node::transfer::DownloadHandle, ApiError> {
    let hash = parse_id(id)?;
    state
        .node
        .transfer()
        .find_download(&hash)
        .ok_or_else(|| ApiError::not_found(format!("no download of {hash}")))
}

/// One download.
#[utoipa::path(get, path = "/v1/downloads/{id}", security(("token" = [])),
    params(("id" = String, Path, description = "content id")),
    responses((status = 200, body = DownloadOut), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_download(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DownloadOut>, ApiError> {
    Ok(Json(download_out(&find_download(&state, &id)?)))
}

/// Pauses a download: it stops once its verified groups are on disk; they
/// stay, and a resume fetches none of them again.
#[utoipa::path(post, path = "/v1/downloads/{id}/pause", security(("token" = [])),
    params(("id" = String, Path, description = "content id")),
    responses((status = 200, body = DownloadOut), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn pause_download(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DownloadOut>, ApiError> {
    let hash = parse_id(&id)?;
    let handle = state.node.transfer().pause(&hash).await?;
    Ok(Json(download_out(&handle)))
}

/// Resumes a paused download from the groups it verified.
#[utoipa::path(post, path = "/v1/downloads/{id}/resume", security(("token" = [])),
    params(("id" = String, Path, description = "content id")),
    responses((status = 200, body = DownloadOut), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn resume_download(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DownloadOut>, ApiError> {
    let hash = parse_id(&id)?;
    let handle = state.node.transfer().resume(&hash).await?;
    Ok(Json(download_out(&handle)))
}

/// Cancels a download and forgets it. A running or paused download stops and
/// its partial data is dropped; a finished one only leaves the list (its
/// content stays in the store).
#[utoipa::path(delete, path = "/v1/downloads/{id}", security(("token" = [])),
    params(("id" = String, Path, description = "content id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn cancel_download(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let hash = parse_id(&id)?;
    state.node.transfer().cancel(&hash).await?;
    Ok(StatusCode::NO_CONTENT)
}
