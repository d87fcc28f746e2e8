//! `/v1/events` (server-sent events) and `/metrics` on real daemons.

#![allow(clippy::unwrap_used)] // tests may panic on setup failures

mod common;

use std::{
    io::{BufRead, BufReader},
    time::{Duration, Instant},
};

use common::{TestDaemon, start};

fn endpoint(d: &TestDaemon) -> (String, String) {
    (d.base.clone(), d.token.clone())
}

/// One parsed server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: serde_json::Value,
}

/// Reads events until `stop` says so or `limit` passes; the connection is
/// dropped at the end.
fn read_events(
    (base, token): (String, String),
    last_id: Option<u64>,
    limit: Duration,
    mut stop: impl FnMut(&[Sse]) -> bool,
) -> Vec<Sse> {
    let mut req = common::agent()
        .get(&format!("{base}/v1/events"))
        .header("Authorization", format!("Bearer {token}"));
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let response = req.call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut lines = BufReader::new(response.into_body().into_reader()).lines();
    let deadline = Instant::now() + limit;
    let mut events = Vec::new();
    let mut current = (None, String::new(), String::new());
    while Instant::now() < deadline && !stop(&events) {
        let Some(Ok(line)) = lines.next() else { break };
        if line.is_empty() {
            if !current.1.is_empty() {
                events.push(Sse {
                    id: current.0,
                    event: std::mem::take(&mut current.1),
                    data: serde_json::from_str(&current.2).unwrap_or_default(),
                });
            }
            current = (None, String::new(), String::new());
        } else if let Some(v) = line.strip_prefix("id: ") {
            current.0 = v.parse().ok();
        } else if let Some(v) = line.strip_prefix("event: ") {
            current.1 = v.to_string();
        } else if let Some(v) = line.strip_prefix("data: ") {
            current.2.push_str(v);
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn events_report_peers_adds_and_downloads_with_increasing_ids() {
    let a = start().await;
    let b = start().await;
    let (id, ticket) = a.add_file("shared.bin", &common::pattern(3_000_000)).await;

    // b downloads from a: b sees the peer join and the download progress.
    let b_base = b.base.clone();
    let b_token = b.token.clone();
    let reader = {
        let b = endpoint(&b);
        std::thread::spawn(move || {
            read_events(b, None, Duration::from_secs(30), |events| {
                events
                    .iter()
                    .any(|e| e.event == "download" && e.data["state"] == "done")
            })
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = tokio::task::spawn_blocking(move || {
        common::post_json(
            &format!("{b_base}/v1/downloads"),
            &b_token,
            serde_json::json!({ "ticket": ticket }),
        )
    })
    .await
    .unwrap();
    assert_eq!(started.status, 200);
    let events = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    let ids: Vec<u64> = events.iter().map(|e| e.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let a_peer = a.daemon.node().net().local_peer_id().to_string();
    assert!(
        events
            .iter()
            .any(|e| e.event == "peer_connected" && e.data["peer_id"] == a_peer.as_str()),
        "{events:?}"
    );
    let done = events
        .iter()
        .find(|e| e.event == "download" && e.data["state"] == "done");
    assert_eq!(done.unwrap().data["id"], id.as_str());

    // Reconnecting with Last-Event-ID replays what came after it, and only that.
    // (at least the peer's arrival and the download's end came: two ids)
    let middle = ids[(ids.len() - 1) / 2];
    let replay = {
        let b = endpoint(&b);
        tokio::task::spawn_blocking(move || {
            read_events(b, Some(middle), Duration::from_secs(5), |e| {
                e.last().and_then(|e| e.id) == Some(*ids.last().unwrap())
            })
        })
        .await
        .unwrap()
    };
    assert!(
        replay.first().and_then(|e| e.id) == Some(middle + 1),
        "{replay:?}"
    );

    // An add shows up as an event on a.
    let reader = {
        let a = endpoint(&a);
        std::thread::spawn(move || {
            read_events(a, None, Duration::from_secs(10), |e| {
                e.iter().any(|e| e.event == "added")
            })
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (second, _) = a.add_file("second.bin", b"second").await;
    let events = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    let added = events.iter().find(|e| e.event == "added").unwrap();
    assert_eq!(added.data["id"], second.as_str());

    // Too old a Last-Event-ID: told that events were lost.
    for i in 0..1100 {
        a.daemon
            .events()
            .publish("test", serde_json::json!({ "i": i }));
    }
    let lagged = {
        let a = endpoint(&a);
        tokio::task::spawn_blocking(move || {
            read_events(a, Some(1), Duration::from_secs(5), |e| !e.is_empty())
        })
        .await
        .unwrap()
    };
    assert_eq!(lagged[0].event, "lagged", "{lagged:?}");
    assert!(lagged[0].data["missed"].as_u64() > Some(0));

    b.daemon.shutdown().await;
    a.daemon.shutdown().await;
}

/// The value of an unlabelled metric (or the sum over its labels).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(d: &TestDaemon, token: Option<&str>) -> common::Reply {
    let url = format!("{}/metrics", d.base);
    let headers: Vec<(&str, String)> = token
        .map(|t| vec![("Authorization", format!("Bearer {t}"))])
        .unwrap_or_default();
    tokio::task::spawn_blocking(move || common::request("GET", &url, &headers))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_need_the_token_and_their_values_move() {
    let a = start().await;
    let b = start().await;
    assert_eq!(scrape(&b, None).await.status, 401);
    assert_eq!(scrape(&b, Some("wrong")).await.status, 401);

    let before = scrape(&b, Some(&b.token)).await;
    assert_eq!(before.status, 200);
    assert!(
        before
            .header("content-type")
            .unwrap()
            .contains("openmetrics")
    );
    let before = String::from_utf8(before.body).unwrap();
    assert_eq!(metric(&before, "spore_downloaded_bytes_total"), 0.0);
    assert_eq!(metric(&before, "spore_peers"), 0.0);

    let file = common::pattern(2_000_000);
    let (id, ticket) = a.add_file("m.bin", &file).await;
    let got = b.get(&format!("/b/{ticket}"), vec![]).await;
    assert!(got.status == 200 && got.body == file);

    let after = String::from_utf8(scrape(&b, Some(&b.token)).await.body).unwrap();
    assert!(
        metric(&after, "spore_downloaded_bytes_total") >= 2_000_000.0,
        "{after}"
    );
    assert!(metric(&after, "spore_peers") >= 1.0, "{after}");
    assert!(
        metric(&after, "spore_dht_routing_table_size") >= 1.0,
        "{after}"
    );
    // the gateway request and the first scrape were timed
    assert!(
        after.contains("spore_http_request_duration_seconds_count{method=\"GET\",route=\"/b/{id}\",status=\"200\"} 1"),
        "{after}"
    );
    assert!(metric(&after, "spore_http_request_duration_seconds_count") >= 3.0);
    let uploaded = String::from_utf8(scrape(&a, Some(&a.token)).await.body).unwrap();
    assert!(
        metric(&uploaded, "spore_uploaded_bytes_total") >= 2_000_000.0,
        "{uploaded}"
    );
    let _ = id;

    b.daemon.shutdown().await;
    a.daemon.shutdown().await;
}

/// A client that stops reading is not buffered for: once the socket is
/// full, the bounded channel overflows and the client, when it reads
/// again, is told how many events it lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_lags_and_is_told_so() {
    let d = start().await;
    let (base, token) = endpoint(&d);
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let response = common::agent()
            .get(&format!("{base}/v1/events"))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .unwrap();
        opened_tx.send(()).unwrap();
        go_rx.recv().unwrap(); // stop reading while the node publishes
        let mut lines = BufReader::new(response.into_body().into_reader()).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut event = String::new();
        while Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(kind) = line.strip_prefix("event: ") {
                event = kind.to_string();
            }
            if event == "lagged" && line.starts_with("data: ") {
                return Some(line);
            }
        }
        None
    });
    tokio::task::spawn_blocking(move || opened_rx.recv().unwrap())
        .await
        .unwrap();
    // Far more than the socket buffers and the channel hold.
    let padding = "x".repeat(200);
    for i in 0..200_000 {
        d.daemon
            .events()
            .publish("test", serde_json::json!({ "i": i, "pad": padding }));
    }
    go_tx.send(()).unwrap();
    let lagged = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    let data: serde_json::Value =
        serde_json::from_str(lagged.expect("a lagged event").trim_start_matches("data: ")).unwrap();
    assert!(data["missed"].as_u64() > Some(0), "{data}");
    d.daemon.shutdown().await;
}
