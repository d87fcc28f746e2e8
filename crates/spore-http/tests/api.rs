//! The API end to end: real daemons on 127.0.0.1, real HTTP requests.

#![allow(clippy::unwrap_used)] // tests may panic on setup failures

mod common;

use std::time::Duration;

use common::{TestDaemon, start_with};
use serde_json::{Value, json};
use spore_core::Ticket;
use spore_node::NodeConfig;

/// Downloads look for more sources every second, not every five.
fn quick_discovery(config: &mut NodeConfig) {
    config.transfer.discovery_interval_secs = 1;
}

async fn start() -> TestDaemon {
    start_with(quick_discovery).await
}

type Headers = Vec<(&'static str, String)>;

/// One request; returns status and JSON body (Null when empty).
async fn call(
    method: &'static str,
    url: String,
    headers: Headers,
    body: Option<Value>,
) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let agent = common::agent();
        let mut response = match (method, body) {
            ("DELETE", _) => {
                let mut req = agent.delete(&url);
                for (k, v) in &headers {
                    req = req.header(*k, v);
                }
                req.call().unwrap()
            }
            ("GET", _) => {
                let mut req = agent.get(&url);
                for (k, v) in &headers {
                    req = req.header(*k, v);
                }
                req.call().unwrap()
            }
            (_, body) => {
                let mut req = agent.post(&url);
                for (k, v) in &headers {
                    req = req.header(*k, v);
                }
                req.send_json(body.unwrap_or(Value::Null)).unwrap()
            }
        };
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    })
    .await
    .unwrap()
}

impl TestDaemon {
    fn auth(&self) -> Vec<(&'static str, String)> {
        vec![("Authorization", format!("Bearer {}", self.token))]
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        call("GET", format!("{}{path}", self.base), self.auth(), None).await
    }

    async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        call(
            "POST",
            format!("{}{path}", self.base),
            self.auth(),
            Some(body),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_auth_failure_is_refused_with_the_error_shape() {
    let d = start().await;
    let url = format!("{}/v1/status", d.base);
    let (status, body) = call("GET", format!("{}/v1/health", d.base), vec![], None).await;
    assert_eq!(
        (status, body["ok"].as_bool()),
        (200, Some(true)),
        "health needs no token"
    );

    let cases: Vec<(Headers, u16, &str)> = vec![
        (vec![], 401, "unauthorized"),
        (
            vec![("Authorization", "Bearer wrong".into())],
            401,
            "unauthorized",
        ),
        (
            vec![("Authorization", d.token.clone())],
            401,
            "unauthorized",
        ),
        (
            vec![("Authorization", format!("Basic {}", d.token))],
            401,
            "unauthorized",
        ),
        (
            vec![
                ("Authorization", format!("Bearer {}", d.token)),
                ("Origin", "https://evil.example".into()),
            ],
            403,
            "forbidden",
        ),
        (
            vec![
                ("Authorization", format!("Bearer {}", d.token)),
                ("Sec-Fetch-Site", "cross-site".into()),
            ],
            403,
            "forbidden",
        ),
    ];
    for (headers, expected, code) in cases {
        let (status, body) = call("GET", url.clone(), headers.clone(), None).await;
        assert_eq!(status, expected, "{headers:?}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // the API's own origin is allowed
    let mut own = d.auth();
    own.push(("Origin", d.base.clone()));
    assert_eq!(call("GET", url, own, None).await.0, 200);
    // every protected endpoint requires the token
    for path in ["/v1/peers", "/v1/openapi.json", "/v1/providers/x"] {
        assert_eq!(
            call("GET", format!("{}{path}", d.base), vec![], None)
                .await
                .0,
            401,
            "{path}"
        );
    }
    for path in ["/v1/add", "/v1/connect", "/v1/disconnect"] {
        assert_eq!(
            call("POST", format!("{}{path}", d.base), vec![], Some(json!({})))
                .await
                .0,
            401,
            "{path}"
        );
    }
    let (status, body) = d.get_json("/v1/nope").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_openapi_and_add() {
    let d = start().await;
    let (status, body) = d.get_json("/v1/status").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["peer_id"].as_str().unwrap(),
        d.daemon.node().net().local_peer_id().to_string()
    );
    assert!(!body["listen_addrs"].as_array().unwrap().is_empty());
    // A fresh node: no misbehaving peers, the counters are there.
    assert!(body["connection_errors"].is_object());
    assert_eq!(body["malformed_messages"], 0);
    assert_eq!(body["penalised_peers"], 0);
    assert_eq!(body["banned_peers"], 0);

    let (status, doc) = d.get_json("/v1/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/v1/status",
        "/v1/peers",
        "/v1/add",
        "/v1/providers/{id}",
        "/v1/connect",
        "/v1/disconnect",
        "/v1/health",
        "/v1/events",
        "/v1/upload",
        "/metrics",
        "/b/{id}",
        "/c/{collection}/{path}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    assert!(doc["components"]["securitySchemes"]["token"].is_object());

    let (status, body) = d
        .post_json("/v1/add", json!({"path": "relative/file"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, _) = d
        .post_json("/v1/add", json!({"path": "/definitely/missing"}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = d.post_json("/v1/add", json!({"nonsense": true})).await;
    assert!(status == 400 || status == 422, "malformed body: {status}");

    let file = d.dir.path().join("hello.txt");
    std::fs::write(&file, b"hello from the API").unwrap();
    let (status, body) = d.post_json("/v1/add", json!({"path": file})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["id"],
        blake3::hash(b"hello from the API").to_hex().to_string()
    );
    let ticket: Ticket = body["ticket"].as_str().unwrap().parse().unwrap();
    assert_eq!(ticket.providers.len(), 1, "the ticket names this node");
    let (_, status) = d.get_json("/v1/status").await;
    assert!(status["provided_keys"].as_u64().unwrap() >= 1);
    d.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_connect_find_providers_and_disconnect() {
    let a = start().await;
    let b = start().await;
    let a_addr = a.get_json("/v1/status").await.1["listen_addrs"][0]
        .as_str()
        .unwrap()
        .to_string();
    let a_id = a.daemon.node().net().local_peer_id().to_string();
    let (status, body) = b
        .post_json(
            "/v1/connect",
            json!({"addr": format!("{a_addr}/p2p/{a_id}")}),
        )
        .await;
    assert_eq!(
        (status, body["peer_id"].as_str()),
        (200, Some(a_id.as_str())),
        "{body}"
    );
    let (status, body) = b
        .post_json("/v1/connect", json!({"addr": "not a multiaddr"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );

    let file = a.dir.path().join("shared.bin");
    std::fs::write(&file, vec![7u8; 100_000]).unwrap();
    let id = a.post_json("/v1/add", json!({"path": file})).await.1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut found = Vec::new();
    for _ in 0..20 {
        let (status, body) = b.get_json(&format!("/v1/providers/{id}")).await;
        assert_eq!(status, 200, "{body}");
        found = body.as_array().unwrap().clone();
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        found.iter().any(|p| p["peer_id"] == a_id.as_str()),
        "{found:?}"
    );
    let (status, _) = b.get_json("/v1/providers/xyz").await;
    assert_eq!(status, 400);

    let (_, peers) = b.get_json("/v1/peers").await;
    let peer = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == a_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(peer["connections"][0]["direction"], "outbound");
    assert_eq!(peer["connections"][0]["transport"], "tcp");
    let (status, _) = b
        .post_json("/v1/disconnect", json!({"peer_id": a_id}))
        .await;
    assert_eq!(status, 204);
    let (status, _) = b
        .post_json("/v1/disconnect", json!({"peer_id": "nope"}))
        .await;
    assert_eq!(status, 400);

    let home = b.daemon.node().home().clone();
    let api = b.daemon.api_addr();
    b.daemon.shutdown().await;
    assert_eq!(
        spore_node::ApiEndpoint::read(&home),
        None,
        "the endpoint file is withdrawn"
    );
    assert!(
        std::net::TcpStream::connect(api).is_err(),
        "the API is closed"
    );
    a.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_leaves_no_task_behind() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let d = start().await;
    assert_eq!(d.get_json("/v1/status").await.0, 200);
    assert_eq!(d.get_json("/v1/peers").await.0, 200);
    assert!(metrics.num_alive_tasks() > before);
    d.daemon.shutdown().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while metrics.num_alive_tasks() > before && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metrics.num_alive_tasks(),
        before,
        "every task of the node and its API has ended"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_start_report_progress_and_finish() {
    let a = start().await;
    let b = start().await;
    let file = a.dir.path().join("movie.bin");
    let bytes: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let added = a.post_json("/v1/add", json!({"path": file})).await.1;
    let ticket = added["ticket"].as_str().unwrap();
    let id = added["id"].as_str().unwrap();

    let (status, body) = b
        .post_json("/v1/downloads", json!({"ticket": ticket}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id);
    let mut last = Value::Null;
    for _ in 0..100 {
        last = b.get_json(&format!("/v1/downloads/{id}")).await.1;
        if last["state"] == "done" || last["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["state"], "done", "{last}");
    assert_eq!(last["verified_bytes"], 2_000_000);
    assert!(
        last["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["useful_bytes"].as_u64() > Some(0))
    );
    // one honest source: nothing duplicated or wasted, and the API says so
    for s in last["sources"].as_array().unwrap() {
        assert_eq!(s["duplicate_bytes"], 0, "{s}");
        assert_eq!(s["wasted_bytes"], 0, "{s}");
    }
    assert_eq!(last["duplicate_bytes"], 0, "{last}");
    assert_eq!(last["wasted_bytes"], 0, "{last}");
    let (_, list) = b.get_json("/v1/downloads").await;
    assert!(list.as_array().unwrap().iter().any(|d| d["id"] == id));
    // the download is in b's store, tagged, and verified
    let hash: spore_core::Hash = id.parse().unwrap();
    assert_eq!(
        b.daemon
            .node()
            .store()
            .blob(&hash)
            .unwrap()
            .read_all()
            .unwrap(),
        bytes
    );
    assert!(
        b.daemon
            .node()
            .store()
            .get(&hash)
            .unwrap()
            .unwrap()
            .tag
            .is_some()
    );

    let (status, _) = b
        .post_json("/v1/downloads", json!({"ticket": "spore1garbage"}))
        .await;
    assert_eq!(status, 400);
    // a plain file's id announced as a collection: its "manifest" is refused
    let collection = Ticket::new(spore_core::ContentKind::Collection, hash).to_string();
    let (status, body) = b
        .post_json("/v1/downloads", json!({"ticket": collection}))
        .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (200, Some("collection")),
        "{body}"
    );
    let last = wait_finished(&b, id).await;
    assert_eq!(last["state"], "failed", "{last}");
    assert!(
        last["error"].as_str().unwrap().contains("not a collection"),
        "{last}"
    );
    let missing = "0".repeat(64);
    assert_eq!(b.get_json(&format!("/v1/downloads/{missing}")).await.0, 404);
    let (status, body) = call(
        "DELETE",
        format!("{}/v1/downloads/{missing}", b.base),
        b.auth(),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = call(
        "DELETE",
        format!("{}/v1/downloads/{id}", b.base),
        b.auth(),
        None,
    )
    .await;
    assert_eq!(status, 204, "cancelling a finished download is harmless");
    b.daemon.shutdown().await;
    a.daemon.shutdown().await;
}

impl TestDaemon {
    async fn delete_json(&self, path: &str) -> (u16, Value) {
        call("DELETE", format!("{}{path}", self.base), self.auth(), None).await
    }
}

/// Polls a download until it is done or failed (at most 60 s).
async fn wait_finished(d: &TestDaemon, id: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        last = d.get_json(&format!("/v1/downloads/{id}")).await.1;
        if last["state"] == "done" || last["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// Polls a download until `verified_bytes` reaches `bytes`.
async fn wait_bytes(d: &TestDaemon, id: &str, bytes: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        last = d.get_json(&format!("/v1/downloads/{id}")).await.1;
        if last["verified_bytes"].as_u64().unwrap_or(0) >= bytes {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_pause_resume_and_cancel() {
    let a = start_with(|config| {
        quick_discovery(config);
        config.transfer.max_upload = 3_000_000;
    })
    .await;
    let b = start().await;
    let file = a.dir.path().join("big.bin");
    let bytes: Vec<u8> = (0..12_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let added = a.post_json("/v1/add", json!({"path": file})).await.1;
    let ticket = added["ticket"].as_str().unwrap();
    let id = added["id"].as_str().unwrap();
    let hash: spore_core::Hash = id.parse().unwrap();

    let (status, body) = b
        .post_json("/v1/downloads", json!({"ticket": ticket}))
        .await;
    assert_eq!(status, 200, "{body}");
    wait_bytes(&b, id, 3_000_000).await;
    let (status, paused) = b
        .post_json(&format!("/v1/downloads/{id}/pause"), json!({}))
        .await;
    assert_eq!(
        (status, paused["state"].as_str()),
        (200, Some("paused")),
        "{paused}"
    );
    let kept = paused["verified_bytes"].as_u64().unwrap();
    assert!(kept >= 2_000_000, "{paused}");
    // the verified groups are on disk while it is paused
    let record = b.daemon.node().store().get(&hash).unwrap().unwrap();
    assert!(
        matches!(record.state, spore_store::BlobState::Partial(ref bits) if bits.count_ones() > 0)
    );
    let (status, body) = b
        .post_json(&format!("/v1/downloads/{id}/pause"), json!({}))
        .await;
    assert_eq!(status, 200, "pausing twice is harmless: {body}");

    let uploaded = a.daemon.node().transfer().upload_stats().total;
    let (status, resumed) = b
        .post_json(&format!("/v1/downloads/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200, "{resumed}");
    let (status, body) = b
        .post_json(&format!("/v1/downloads/{id}/resume"), json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    let last = wait_finished(&b, id).await;
    assert_eq!(last["state"], "done", "{last}");
    assert!(last["resumed_bytes"].as_u64().unwrap() >= kept, "{last}");
    let second = a.daemon.node().transfer().upload_stats().total - uploaded;
    assert!(
        second <= 12_000_000 - kept + 2_000_000,
        "resume fetched {second} bytes with {kept} verified"
    );
    assert_eq!(
        b.daemon
            .node()
            .store()
            .blob(&hash)
            .unwrap()
            .read_all()
            .unwrap(),
        bytes
    );

    // cancel: a second file, stopped halfway, leaves nothing behind
    let file2 = a.dir.path().join("big2.bin");
    let bytes2: Vec<u8> = (0..12_000_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&file2, &bytes2).unwrap();
    let added2 = a.post_json("/v1/add", json!({"path": file2})).await.1;
    let id2 = added2["id"].as_str().unwrap();
    let hash2: spore_core::Hash = id2.parse().unwrap();
    b.post_json("/v1/downloads", json!({"ticket": added2["ticket"]}))
        .await;
    wait_bytes(&b, id2, 1_000_000).await;
    let (status, _) = b.delete_json(&format!("/v1/downloads/{id2}")).await;
    assert_eq!(status, 204);
    assert_eq!(b.get_json(&format!("/v1/downloads/{id2}")).await.0, 404);
    assert!(
        b.daemon.node().store().get(&hash2).unwrap().is_none(),
        "partial data dropped"
    );
    let (status, body) = b
        .post_json(&format!("/v1/downloads/{id2}/pause"), json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    let openapi = b.get_json("/v1/openapi.json").await.1;
    assert!(openapi["paths"]["/v1/downloads/{id}/pause"]["post"].is_object());
    assert!(openapi["paths"]["/v1/downloads/{id}/resume"]["post"].is_object());
    b.daemon.shutdown().await;
    a.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collection_downloads_through_the_api_into_a_directory() {
    let a = start().await;
    let b = start().await;
    let tree = a.dir.path().join("album");
    std::fs::create_dir_all(tree.join("disc1/extras")).unwrap();
    std::fs::write(tree.join("disc1/track1.flac"), vec![7u8; 300_000]).unwrap();
    std::fs::write(tree.join("disc1/extras/notes.txt"), b"liner notes").unwrap();
    std::fs::write(tree.join("cover.jpg"), vec![9u8; 50_000]).unwrap();
    let added = a.post_json("/v1/add", json!({"path": tree})).await.1;
    assert_eq!(added["kind"], "collection", "{added}");
    let id = added["id"].as_str().unwrap();

    let dest = b.dir.path().join("downloads/album");
    let (status, body) = b
        .post_json(
            "/v1/downloads",
            json!({"ticket": added["ticket"], "dest": "relative/dir"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = b
        .post_json(
            "/v1/downloads",
            json!({"ticket": added["ticket"], "dest": dest}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let last = wait_finished(&b, id).await;
    assert_eq!(last["state"], "done", "{last}");
    assert_eq!(
        (last["files"].as_u64(), last["files_done"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(last["verified_bytes"], 350_011);
    assert_eq!(
        std::fs::read(dest.join("disc1/track1.flac")).unwrap(),
        vec![7u8; 300_000]
    );
    assert_eq!(
        std::fs::read(dest.join("disc1/extras/notes.txt")).unwrap(),
        b"liner notes"
    );
    assert_eq!(
        std::fs::read(dest.join("cover.jpg")).unwrap(),
        vec![9u8; 50_000]
    );

    // A bare id says nothing of its kind: `kind` does (a ticket's own wins).
    let (status, body) = b
        .post_json(
            "/v1/downloads",
            json!({"ticket": added["ticket"], "kind": "blob"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let again = b.dir.path().join("downloads/again");
    let (status, body) = b
        .post_json(
            "/v1/downloads",
            json!({"ticket": id, "kind": "collection", "dest": again}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "collection", "{body}");
    let last = wait_finished(&b, id).await;
    assert_eq!(last["state"], "done", "{last}");
    assert_eq!(
        std::fs::read(again.join("disc1/extras/notes.txt")).unwrap(),
        b"liner notes"
    );
    b.daemon.shutdown().await;
    a.daemon.shutdown().await;
}
