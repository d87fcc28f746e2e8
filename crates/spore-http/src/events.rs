//! Node events for `/v1/events` (server-sent events).
//!
//! One [`EventBus`] per API: events get increasing ids, go out over a
//! bounded broadcast channel, and the latest [`KEPT`] stay in a ring so a
//! client that reconnects with `Last-Event-ID` gets what it missed. A
//! client too slow to keep up is not buffered for: it skips ahead and is
//! sent a `lagged` event that says how many it lost. Memory is bounded by
//! the channel and the ring, whatever the clients do.
//!
//! Sources: peers joining and leaving (the network's events), shares (the
//! add handler), and download progress (sampled twice a second; one event
//! per download whose progress changed).

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    extract::State,
    http::HeaderMap,
    response::sse::{Event as SseEvent, KeepAlive, Sse},
};
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use spore_net::NetEvent;
use tokio::sync::broadcast;

use crate::AppState;

/// Events kept for clients that reconnect.
pub(crate) const KEPT: usize = 1024;
/// Events buffered per client before it lags.
const CHANNEL: usize = 256;
/// How often download progress is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// One event: its id, its type (the SSE `event:` field) and its JSON data.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    pub(crate) id: u64,
    pub(crate) kind: &'static str,
    pub(crate) data: Value,
}

#[derive(Debug)]
struct Inner {
    next_id: u64,
    kept: VecDeque<Arc<Event>>,
}

/// Fan-out of node events, bounded.
#[derive(Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
    inner: Mutex<Inner>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CHANNEL).0,
            inner: Mutex::new(Inner {
                next_id: 1,
                kept: VecDeque::with_capacity(KEPT),
            }),
        }
    }
}

impl EventBus {
    /// Publishes an event; returns its id.
    pub fn publish(&self, kind: &'static str, data: Value) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let event = Arc::new(Event {
            id: inner.next_id,
            kind,
            data,
        });
        inner.next_id += 1;
        if inner.kept.len() == KEPT {
            inner.kept.pop_front();
        }
        inner.kept.push_back(event.clone());
        // Sent under the lock, so ids reach every receiver in order.
        let _ = self.tx.send(event.clone());
        event.id
    }

    /// Subscribes, and returns the kept events after `last_id`; `Err` with
    /// the count lost when some after it are no longer kept.
    fn subscribe_after(
        &self,
        last_id: Option<u64>,
    ) -> (broadcast::Receiver<Arc<Event>>, Vec<Arc<Event>>, u64) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = self.tx.subscribe();
        let Some(last) = last_id else {
            return (rx, Vec::new(), 0);
        };
        let replay: Vec<Arc<Event>> = inner.kept.iter().filter(|e| e.id > last).cloned().collect();
        let oldest = inner.kept.front().map_or(inner.next_id, |e| e.id);
        let lost = oldest.saturating_sub(last + 1).min(inner.next_id - 1);
        (rx, replay, lost)
    }
}

fn to_sse(event: &Event) -> SseEvent {
    SseEvent::default()
        .id(event.id.to_string())
        .event(event.kind)
        .json_data(&event.data)
        .unwrap_or_else(|_| SseEvent::default().event(event.kind))
}

fn lagged(missed: u64) -> SseEvent {
    SseEvent::default()
        .event("lagged")
        .json_data(json!({
            "missed": missed,
            "message": "this client fell behind; events were dropped (reload state from the API)"
        }))
        .unwrap_or_else(|_| SseEvent::default().event("lagged"))
}

/// Node events as server-sent events: `peer_connected`, `peer_disconnected`,
/// `added`, `download` (progress) and `lagged`; each with an increasing id.
/// Send `Last-Event-ID` to resume after a disconnection.
#[utoipa::path(get, path = "/v1/events", security(("token" = [])),
    params(("Last-Event-ID" = Option<u64>, Header, description = "resume after this event id")),
    responses((status = 200, description = "a text/event-stream of node events", content_type = "text/event-stream"),
        (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (rx, replay, lost) = state.events.subscribe_after(last_id);
    let mut seen = replay.last().map(|e| e.id).or(last_id).unwrap_or(0);
    let head = (lost > 0).then(|| lagged(lost));
    let head = futures::stream::iter(
        head.into_iter()
            .chain(replay.iter().map(|e| to_sse(e)))
            .map(Ok)
            .collect::<Vec<_>>(),
    );
    let live = futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(event) => Some((Ok::<_, u64>(event), rx)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some((Err(n), rx)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
    .filter_map(move |item| {
        let out = match item {
            Ok(event) if event.id <= seen => None, // already replayed
            Ok(event) => {
                seen = event.id;
                Some(Ok(to_sse(&event)))
            }
            Err(missed) => Some(Ok(lagged(missed))),
        };
        futures::future::ready(out)
    });
    let cancel = state.node.cancel_token().clone();
    let stream = head
        .chain(live)
        .take_until(async move { cancel.cancelled().await });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Feeds the bus from the network and the downloads until the node stops.
pub(crate) async fn pump(state: AppState) {
    let cancel = state.node.cancel_token().clone();
    let mut net = state.node.net().subscribe();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Last progress published per download (bounded by the engine's list).
    let mut last: HashMap<String, Value> = HashMap::new();
    let mut net_open = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            ev = net.recv(), if net_open => match ev {
                Ok(NetEvent::PeerConnected { peer_id, remote_addr, .. }) => {
                    state.events.publish("peer_connected", json!({
                        "peer_id": peer_id.to_string(),
                        "remote_addr": remote_addr.to_string(),
                    }));
                }
                Ok(NetEvent::PeerDisconnected { peer_id }) => {
                    state.events.publish("peer_disconnected", json!({ "peer_id": peer_id.to_string() }));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!("event pump missed {n} network events");
                }
                // the network stopped; keep sampling downloads until cancelled
                Err(broadcast::error::RecvError::Closed) => net_open = false,
            },
            _ = tick.tick() => {
                let downloads = state.node.transfer().downloads();
                let mut current = HashMap::with_capacity(downloads.len());
                for handle in &downloads {
                    let out = serde_json::to_value(crate::routes::download_out(handle)).unwrap_or(Value::Null);
                    let id = handle.hash().to_hex();
                    if last.get(&id) != Some(&out) {
                        state.events.publish("download", out.clone());
                    }
                    current.insert(id, out);
                }
                last = current;
            }
        }
    }
}
