//! `GET /v1/search` end to end: a real daemon, real HTTP, server-sent events.

#![allow(clippy::unwrap_used)] // tests may panic on setup failures

mod common;

use std::io::Read;

use common::TestDaemon;

/// Status, content type and the whole body (the stream ends with `done`).
fn get(base: &str, token: &str, path: &str) -> (u16, String, String) {
    let mut r = common::agent()
        .get(format!("{base}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let mut body = String::new();
    r.body_mut().as_reader().read_to_string(&mut body).unwrap();
    (r.status().as_u16(), ct, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn search_streams_server_sent_events_and_refuses_bad_queries() {
    let TestDaemon {
        daemon,
        base,
        token,
        dir,
    } = common::start().await;

    let file = dir.path().join("narwhal tusks 4k.mkv");
    std::fs::write(&file, b"narwhal video").unwrap();
    daemon
        .node()
        .add(file, spore_store::ImportMode::InPlace)
        .await
        .unwrap();
    let id = blake3::hash(b"narwhal video").to_hex().to_string();

    let (b, t) = (base.clone(), token.clone());
    let (status, ct, body) = tokio::task::spawn_blocking(move || {
        get(&b, &t, "/v1/search?q=Narwhal%20tusks&type=video&timeout=2")
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let hit = body
        .lines()
        .skip_while(|l| *l != "event: hit")
        .nth(1)
        .and_then(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no hit event in {body}"));
    let hit: serde_json::Value = serde_json::from_str(hit).unwrap();
    assert_eq!(hit["id"], id.as_str());
    assert_eq!(hit["media"], "video");
    assert!(body.contains("event: done"), "{body}");

    // Local only, with a filter that excludes it: just `done`.
    let (b, t) = (base.clone(), token.clone());
    let (status, _, body) = tokio::task::spawn_blocking(move || {
        get(&b, &t, "/v1/search?q=narwhal&local=true&min_size=1G")
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        !body.contains("event: hit") && body.contains("event: done"),
        "{body}"
    );

    for bad in [
        "/v1/search?q=.",
        "/v1/search?q=narwhal&type=hologram",
        "/v1/search?q=narwhal&min_size=lots",
        "/v1/search?q=narwhal&hops=9",
        "/v1/search",
    ] {
        let (b, t) = (base.clone(), token.clone());
        let (status, _, body) = tokio::task::spawn_blocking(move || get(&b, &t, bad))
            .await
            .unwrap();
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (b, t) = (base.clone(), token.clone());
    let (_, _, doc) = tokio::task::spawn_blocking(move || get(&b, &t, "/v1/openapi.json"))
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["paths"]["/v1/search"]["get"].is_object());
    daemon.shutdown().await;
}
