//! `spore node` and the commands that talk to it, as real processes.

#![allow(clippy::unwrap_used)] // tests may panic on setup failures

mod common;

use std::time::Duration;

use common::{RunningNode, ok};
use serde_json::Value;
use tempfile::TempDir;

#[test]
fn node_runs_answers_and_stops_gracefully_keeping_its_identity() {
    let dir = TempDir::new().unwrap();
    let home = dir.path().join("a");
    let id_before = ok(&home, &["id"]);
    let node = RunningNode::start(&home, &[]);
    assert_eq!(
        node.info["peer_id"].as_str().unwrap(),
        id_before.trim(),
        "the identity is the one `spore id` made"
    );

    let status: Value = serde_json::from_str(&ok(&home, &["--json", "status"])).unwrap();
    assert_eq!(status["peer_id"], node.info["peer_id"]);
    let text = ok(&home, &["status"]);
    assert!(
        text.contains("misbehaviour  0 malformed messages, 0 peers penalised, 0 banned"),
        "{text}"
    );

    // a second node on the same home is refused with a clear message
    let second = common::command(&home)
        .args(["node", "--port", "0", "--api", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));

    // adding goes through the daemon: the ticket names it as a provider
    let file = dir.path().join("talk.txt");
    std::fs::write(&file, b"a talk").unwrap();
    let added: Value =
        serde_json::from_str(&ok(&home, &["--json", "add", file.to_str().unwrap()])).unwrap();
    let ticket: spore_core::Ticket = added["ticket"].as_str().unwrap().parse().unwrap();
    assert_eq!(ticket.providers.len(), 1);

    let home_path = node.home.clone();
    assert!(node.stop().success(), "SIGTERM is a clean exit");
    assert!(
        !home_path.join("state/api.json").exists(),
        "the endpoint file is withdrawn"
    );
    let status = common::command(&home).args(["status"]).output().unwrap();
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("no node is running"));

    let again = RunningNode::start(&home, &[]);
    assert_eq!(
        again.info["peer_id"],
        node_peer_id(&id_before),
        "a restart keeps the peer id"
    );
    // the content added before the restart is still there and announced again
    assert!(ok(&home, &["ls"]).contains("talk.txt"));
    assert!(again.stop().success());
}

fn node_peer_id(id: &str) -> Value {
    Value::String(id.trim().to_string())
}

#[test]
fn two_nodes_connect_and_find_content_through_the_dht() {
    let dir = TempDir::new().unwrap();
    let (home_a, home_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = RunningNode::start(&home_a, &[]);
    let b = RunningNode::start(&home_b, &["--bootstrap", &a.addr()]);

    let file = dir.path().join("data.bin");
    std::fs::write(&file, vec![42u8; 50_000]).unwrap();
    let id = ok(&home_a, &["add", "-q", file.to_str().unwrap()])
        .trim()
        .to_string();

    let a_id = a.info["peer_id"].as_str().unwrap().to_string();
    let mut found = String::new();
    for _ in 0..20 {
        found = ok(&home_b, &["find", &id]);
        if found.contains(&a_id) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(found.contains(&a_id), "{found}");

    let peers: Value = serde_json::from_str(&ok(&home_b, &["--json", "peers"])).unwrap();
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer_id"] == a_id.as_str())
    );
    ok(&home_b, &["disconnect", &a_id]);
    assert!(ok(&home_a, &["connect", &b.addr()]).contains(b.info["peer_id"].as_str().unwrap()));
    let bad = common::command(&home_b)
        .args(["connect", "not-an-address"])
        .output()
        .unwrap();
    assert!(!bad.status.success());

    // with no daemon running, `find` starts a short-lived node of its own
    let home_c = dir.path().join("c");
    std::fs::create_dir_all(home_c.join("config")).unwrap();
    std::fs::write(
        home_c.join("config/spore.toml"),
        format!(
            "[net]\nmdns = false\nlisten_ip = \"127.0.0.1\"\nbootstrap = [\"{}\"]\n",
            a.addr()
        ),
    )
    .unwrap();
    assert!(ok(&home_c, &["find", &id]).contains(&a_id));
    // and so do `peers` (whom it reaches) and `connect` (a reachability check)
    let peers: Value = serde_json::from_str(&ok(&home_c, &["--json", "peers"])).unwrap();
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer_id"] == a_id.as_str()),
        "{peers}"
    );
    let reached = ok(&home_c, &["connect", &b.addr()]);
    assert!(
        reached.contains("reached") && reached.contains(b.info["peer_id"].as_str().unwrap()),
        "{reached}"
    );
    let refused = common::command(&home_c)
        .args(["connect", "/ip4/127.0.0.1/tcp/1"])
        .output()
        .unwrap();
    assert!(!refused.status.success());

    assert!(b.stop().success());
    assert!(a.stop().success());
}

#[test]
fn a_broken_config_file_is_named_in_the_error() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/spore.toml"),
        "[net]\nlisten_port = \"many\"\n",
    )
    .unwrap();
    let out = common::command(dir.path()).args(["node"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spore.toml") && err.contains("listen_port"),
        "{err}"
    );
}
