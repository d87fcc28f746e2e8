//! `GET /v1/search`: keyword search, streamed as server-sent events (one
//! `hit` event per new result or new source, then one `done`).

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Query, State},
    response::sse::{Event, KeepAlive, Sse},
};
use futures::Stream;
use serde::{Deserialize, Serialize};
use spore_node::search::{SearchError, SearchEvent, SearchHit, SearchRequest};
use spore_search::{Filters, ItemKind, MAX_HOPS, Media, parse_size};
use utoipa::{IntoParams, ToSchema};

use crate::{ApiError, AppState};

/// Longest search the API runs.
const MAX_TIMEOUT_SECS: u64 = 120;

#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct SearchParams {
    /// Words an item's name must all contain.
    q: String,
    /// Media type: video, audio, image, document, archive, other.
    #[serde(rename = "type")]
    media: Option<String>,
    /// File extension, e.g. `mkv`.
    ext: Option<String>,
    /// blob, collection or file (a file inside a collection).
    kind: Option<String>,
    /// Smallest size, e.g. `10M`.
    min_size: Option<String>,
    /// Largest size, e.g. `4G`.
    max_size: Option<String>,
    /// Hop limit of the widest stage (default 4, at most 7).
    hops: Option<u8>,
    /// Seconds before the search ends (default 10, at most 120).
    timeout: Option<u64>,
    /// Stop widening after this many results (default 50).
    wanted: Option<usize>,
    /// Only this node's index (tags and descriptions count too).
    #[serde(default)]
    local: bool,
}

/// One result (the `data` of a `hit` event).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SearchResult {
    id: String,
    name: String,
    size: u64,
    kind: String,
    media: String,
    parent: Option<String>,
    sources: usize,
    publishers: Vec<String>,
    relevance: f64,
    tags: Vec<String>,
    description: String,
}

impl From<SearchHit> for SearchResult {
    fn from(h: SearchHit) -> Self {
        Self {
            id: h.id,
            name: h.name,
            size: h.size,
            kind: h.kind,
            media: h.media,
            parent: h.parent,
            sources: h.sources,
            publishers: h.publishers,
            relevance: h.relevance,
            tags: h.tags,
            description: h.description,
        }
    }
}

pub(crate) fn request(p: &SearchParams) -> Result<SearchRequest, ApiError> {
    let size = |s: &Option<String>| s.as_deref().map(parse_size).transpose();
    let filters = Filters {
        min_size: size(&p.min_size).map_err(ApiError::bad_request)?,
        max_size: size(&p.max_size).map_err(ApiError::bad_request)?,
        media: p
            .media
            .as_deref()
            .map(|m| {
                Media::parse(m).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "unknown type {m:?} (video, audio, image, document, archive, other)"
                    ))
                })
            })
            .transpose()?,
        extension: p
            .ext
            .as_deref()
            .map(|e| e.trim_start_matches('.').to_lowercase()),
        kind: p
            .kind
            .as_deref()
            .map(|k| {
                ItemKind::parse(k).ok_or_else(|| {
                    ApiError::bad_request(format!("unknown kind {k:?} (blob, collection, file)"))
                })
            })
            .transpose()?,
    };
    let hops = p.hops.unwrap_or(spore_search::DEFAULT_HOPS);
    if hops > MAX_HOPS {
        return Err(ApiError::bad_request(format!(
            "hops {hops} is above the maximum {MAX_HOPS}"
        )));
    }
    let mut req = SearchRequest::new(p.q.clone());
    req.filters = filters;
    req.hops = hops;
    req.timeout = Duration::from_secs(p.timeout.unwrap_or(10).clamp(1, MAX_TIMEOUT_SECS));
    req.wanted = p.wanted.unwrap_or(50).max(1);
    // Checks the words and filters now, so a bad query is a 400, not an empty stream.
    spore_search::Query::new(&req.text, req.filters.clone(), req.hops)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(req)
}

fn hit_event(hit: SearchHit) -> Event {
    Event::default()
        .event("hit")
        .json_data(SearchResult::from(hit))
        .unwrap_or_default()
}

/// Keyword search across the network (or only this node with `local=true`).
/// A `text/event-stream` of `hit` events (JSON `SearchResult`; a result is
/// sent again when it gains a source) and a final `done` event
/// (`{"results": n, "stages": n}`).
#[utoipa::path(get, path = "/v1/search", security(("token" = [])), params(SearchParams),
    responses((status = 200, description = "server-sent events: `hit` (SearchResult), then `done`", body = SearchResult, content_type = "text/event-stream"),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn search(
    State(state): State<AppState>,
    Query(params): Query<SearchParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let req = request(&params)?;
    let search = state.node.search().clone();
    let rx = if params.local {
        let hits = search
            .search_local(req, 256)
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(hits.len() + 1);
        let results = hits.len();
        for h in hits {
            let _ = tx.try_send(SearchEvent::Hit(h));
        }
        let _ = tx.try_send(SearchEvent::Done { results, stages: 0 });
        rx
    } else {
        search.search(req).await.map_err(|e| match e {
            SearchError::Query(_) => ApiError::bad_request(e.to_string()),
            SearchError::Busy(_) => ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                e.to_string(),
            ),
            _ => ApiError::internal(e.to_string()),
        })?
    };
    let stream = futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        let ev = rx.recv().await?;
        let (event, more) = match ev {
            SearchEvent::Hit(h) => (hit_event(h), true),
            SearchEvent::Done { results, stages } => (
                Event::default()
                    .event("done")
                    .json_data(serde_json::json!({"results": results, "stages": stages}))
                    .unwrap_or_default(),
                false,
            ),
        };
        Some((Ok(event), more.then_some(rx)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
