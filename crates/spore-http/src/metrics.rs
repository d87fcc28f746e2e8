//! `/metrics`: Prometheus text format, behind the token.
//!
//! One registry per API (not a process-wide recorder), so several nodes in
//! one process, as in tests, each count their own. Counters and gauges
//! that the node already keeps are read at scrape time; request latencies
//! are recorded by a middleware, labelled by route template (bounded: never
//! the raw path) and status.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{ApiError, AppState};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// The API's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    bytes_up: Counter,
    bytes_down: Counter,
    peers: Gauge,
    routing_table: Gauge,
    downloads_active: Gauge,
    requests: Family<RequestLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("spore");
        let bytes_up = Counter::default();
        let bytes_down = Counter::default();
        let peers = Gauge::default();
        let routing_table = Gauge::default();
        let downloads_active = Gauge::default();
        let requests = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "uploaded_bytes",
            "Payload bytes sent to peers",
            bytes_up.clone(),
        );
        registry.register(
            "downloaded_bytes",
            "Bytes of chunk groups downloaded and verified",
            bytes_down.clone(),
        );
        registry.register("peers", "Connected peers", peers.clone());
        registry.register(
            "dht_routing_table_size",
            "Peers in the Kademlia routing table",
            routing_table.clone(),
        );
        registry.register(
            "downloads_active",
            "Downloads not yet done or failed",
            downloads_active.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests by route template and status, until the response head",
            requests.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            bytes_up,
            bytes_down,
            peers,
            routing_table,
            downloads_active,
            requests,
        }
    }
}

/// Moves a counter up to `total` (the node keeps the totals).
fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// Records the latency of every request.
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let labels = RequestLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    state
        .metrics
        .requests
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Prometheus metrics of the node.
#[utoipa::path(get, path = "/metrics", security(("token" = [])),
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"),
        (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m: Arc<Metrics> = state.metrics.clone();
    let transfer = state.node.transfer();
    catch_up(&m.bytes_up, transfer.upload_stats().total);
    catch_up(&m.bytes_down, transfer.downloaded_bytes());
    let active = transfer
        .downloads()
        .iter()
        .filter(|d| !d.progress().is_finished() && !d.is_cancelled())
        .count();
    m.downloads_active
        .set(i64::try_from(active).unwrap_or(i64::MAX));
    let net = state.node.net().status().await?;
    m.peers
        .set(i64::try_from(net.connected_peers).unwrap_or(i64::MAX));
    m.routing_table
        .set(i64::try_from(net.routing_table_size).unwrap_or(i64::MAX));
    let mut text = String::new();
    encode(
        &mut text,
        &m.registry.lock().unwrap_or_else(PoisonError::into_inner),
    )
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
