//! spore's local HTTP API: JSON under `/v1`, a bearer token on everything
//! but `/v1/health`, browsers limited to the API's own origin, and an OpenAPI
//! document generated from the handlers at `/v1/openapi.json`.
//!
//! The API listens on 127.0.0.1 by default. It must never hand out bytes the
//! store has not verified, nor accept a request without the token.

mod auth;
mod daemon;
mod error;
mod events;
mod gateway;
mod metrics;
mod routes;
mod search;
mod ui;

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    Json, Router, middleware,
    routing::{get, post},
};
use spore_node::Node;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

pub use daemon::{Daemon, DaemonError};
pub use error::ApiError;
pub use events::EventBus;
pub use metrics::Metrics;
pub use routes::Peer;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub token: Arc<str>,
    pub started: Instant,
    /// `Origin` values a browser may send (the API's own addresses).
    pub allowed_origins: Arc<[String]>,
    /// Node events for `/v1/events`.
    pub events: Arc<events::EventBus>,
    pub metrics: Arc<metrics::Metrics>,
}

impl AppState {
    pub fn new(node: Arc<Node>, token: String, api_addr: SocketAddr) -> Self {
        let port = api_addr.port();
        let allowed_origins = [
            format!("http://{api_addr}"),
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
            format!("http://[::1]:{port}"),
        ];
        Self {
            node,
            token: token.into(),
            started: Instant::now(),
            allowed_origins: allowed_origins.into(),
            events: Arc::default(),
            metrics: Arc::default(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "spore node API", description = "Control a spore node. Send `Authorization: Bearer <token>`; the token is in `<home>/config/api-token`."),
    paths(gateway::blob, gateway::collection_file, events::events, metrics::metrics, ui::upload, routes::health, routes::status, routes::peers, routes::add, routes::providers, routes::connect, routes::disconnect, routes::start_download, routes::list_downloads, routes::get_download, routes::cancel_download, routes::pause_download, routes::resume_download, search::search),
    modifiers(&BearerToken)
)]
struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// All routes, with authentication in front of everything but health.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/v1/status", get(routes::status))
        .route("/v1/peers", get(routes::peers))
        .route("/v1/add", post(routes::add))
        .route("/v1/providers/{id}", get(routes::providers))
        .route("/v1/connect", post(routes::connect))
        .route("/v1/disconnect", post(routes::disconnect))
        .route(
            "/v1/downloads",
            post(routes::start_download).get(routes::list_downloads),
        )
        .route(
            "/v1/downloads/{id}",
            get(routes::get_download).delete(routes::cancel_download),
        )
        .route("/v1/downloads/{id}/pause", post(routes::pause_download))
        .route("/v1/downloads/{id}/resume", post(routes::resume_download))
        .route("/v1/search", get(search::search))
        .route("/v1/openapi.json", get(|| async { Json(openapi()) }))
        .route("/v1/events", get(events::events))
        .route("/v1/upload", post(ui::upload))
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let gateway = Router::new()
        .route("/b/{id}", get(gateway::blob))
        .route("/c/{id}/{*path}", get(gateway::collection_file))
        .route("/c/{id}", get(gateway::collection_index))
        .route("/c/{id}/", get(gateway::collection_index))
        .route("/", get(ui::index))
        .route("/ui/app.js", get(ui::app_js))
        .route("/ui/style.css", get(ui::style_css))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_same_origin,
        ));
    Router::new()
        .route("/v1/health", get(routes::health))
        .merge(protected)
        .merge(gateway)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .fallback(|| async { ApiError::not_found("no such endpoint; see /v1/openapi.json") })
        .with_state(state)
}

/// Serves the API on `listener` until `node`'s cancellation token fires.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    let cancel = state.node.cancel_token().clone();
    let pump = events::pump(state.clone());
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { cancel.cancelled().await });
    let (served, ()) = tokio::join!(server.into_future(), pump);
    served
}
