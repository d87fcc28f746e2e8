//! A daemon on 127.0.0.1 with its own home, and blocking HTTP helpers.

#![allow(dead_code)] // each test file uses a part

use std::time::Duration;

use serde_json::Value;
use spore_http::Daemon;
use spore_node::{Home, NodeConfig};
use tempfile::TempDir;

pub(crate) struct TestDaemon {
    pub(crate) daemon: Daemon,
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) dir: TempDir,
}

pub(crate) async fn start() -> TestDaemon {
    start_with(|_| {}).await
}

/// A daemon whose configuration `tune` adjusts first.
pub(crate) async fn start_with(tune: impl FnOnce(&mut NodeConfig)) -> TestDaemon {
    let dir = TempDir::new().unwrap();
    let home = Home::under(dir.path());
    let mut config = NodeConfig::load(&home).unwrap();
    let files = (
        config.net.identity_file.clone(),
        config.net.address_book_file.clone(),
    );
    config.net = spore_net::NetConfig::for_tests();
    (config.net.identity_file, config.net.address_book_file) = files;
    config.api.listen = "127.0.0.1:0".parse().unwrap();
    tune(&mut config);
    let daemon = Daemon::start(home.clone(), config).await.unwrap();
    let base = format!("http://{}", daemon.api_addr());
    let token = spore_node::api_token(&home).unwrap();
    TestDaemon {
        daemon,
        base,
        token,
        dir,
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// A response: status, headers we care about, body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A blocking request (call from a blocking thread).
pub(crate) fn request(method: &str, url: &str, headers: &[(&str, String)]) -> Reply {
    let agent = agent();
    let mut response = match method {
        "HEAD" => {
            let mut req = agent.head(url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            req.call().unwrap()
        }
        _ => {
            let mut req = agent.get(url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            req.call().unwrap()
        }
    };
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

pub(crate) fn post_json(url: &str, token: &str, body: Value) -> Reply {
    let mut response = agent()
        .post(url)
        .header("Authorization", format!("Bearer {token}"))
        .send_json(body)
        .unwrap();
    Reply {
        status: response.status().as_u16(),
        headers: Vec::new(),
        body: response.body_mut().read_to_vec().unwrap_or_default(),
    }
}

impl TestDaemon {
    /// Adds a file that is on disk; returns (id, ticket).
    pub(crate) async fn add_file(&self, name: &str, bytes: &[u8]) -> (String, String) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let url = format!("{}/v1/add", self.base);
        let token = self.token.clone();
        let reply = tokio::task::spawn_blocking(move || {
            post_json(&url, &token, serde_json::json!({ "path": path }))
        })
        .await
        .unwrap();
        let v = reply.json();
        assert_eq!(reply.status, 200, "{v}");
        (
            v["id"].as_str().unwrap().to_string(),
            v["ticket"].as_str().unwrap().to_string(),
        )
    }

    pub(crate) async fn get(&self, path: &str, headers: Vec<(&'static str, String)>) -> Reply {
        let url = format!("{}{path}", self.base);
        tokio::task::spawn_blocking(move || request("GET", &url, &headers))
            .await
            .unwrap()
    }
}

/// Bytes that differ at every offset, so a misplaced range shows.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8)
        .collect()
}
