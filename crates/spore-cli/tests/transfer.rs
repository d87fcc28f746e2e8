//! `spore share` and `spore get` as real processes: through a running node,
//! with a node of their own, and resumed after kill -9.

#![allow(clippy::unwrap_used)] // tests may panic on setup failures

mod common;

use std::{path::Path, process::Stdio, time::Duration};

use common::{RunningNode, command as spore, ok};
use serde_json::Value;
use tempfile::TempDir;

/// A `spore node` on 127.0.0.1 with an upload cap, so a download takes a while.
fn seed_node(home: &Path, max_upload: u64) -> RunningNode {
    std::fs::create_dir_all(home.join("config")).unwrap();
    std::fs::write(
        home.join("config/spore.toml"),
        format!("[transfer]\nmax_upload = {max_upload}\n"),
    )
    .unwrap();
    RunningNode::start(home, &[])
}

fn leecher_home(dir: &Path) -> std::path::PathBuf {
    let home = dir.join("leecher");
    std::fs::create_dir_all(home.join("config")).unwrap();
    std::fs::write(
        home.join("config/spore.toml"),
        "[net]\nmdns = false\nlisten_ip = \"127.0.0.1\"\n",
    )
    .unwrap();
    home
}

/// Writes `len` bytes to `file`, shares it from `seed_home`, returns the ticket.
fn share(seed_home: &Path, file: &Path, len: usize) -> String {
    std::fs::write(file, pattern(len)).unwrap();
    let shared: Value =
        serde_json::from_str(&ok(seed_home, &["--json", "share", file.to_str().unwrap()])).unwrap();
    shared["ticket"].as_str().unwrap().to_string()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ (i >> 13) as u8)
        .collect()
}

#[test]
fn share_then_get_with_and_without_a_running_node() {
    let dir = TempDir::new().unwrap();
    let seed_home = dir.path().join("seed");
    let _seed = seed_node(&seed_home, 0);
    let file = dir.path().join("talk.mkv");
    let ticket = &share(&seed_home, &file, 3_000_000);

    // no node runs for the leecher: `get` brings its own
    let home = leecher_home(dir.path());
    let out = dir.path().join("copy.mkv");
    let done = ok(
        &home,
        &["--json", "get", ticket, "-o", out.to_str().unwrap()],
    );
    assert!(
        done.lines().last().unwrap().contains("\"event\":\"done\""),
        "{done}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), pattern(3_000_000));
    assert!(
        !spore(&home)
            .args(["get", ticket, "-o", out.to_str().unwrap()])
            .output()
            .unwrap()
            .status
            .success(),
        "no clobbering"
    );

    // with a node running for the leecher, `get` goes through its API
    let home2 = dir.path().join("leecher2");
    let _node2 = seed_node(&home2, 0);
    let out2 = dir.path().join("dir");
    std::fs::create_dir_all(&out2).unwrap();
    ok(
        &home2,
        &["get", ticket, "-o", out2.to_str().unwrap(), "--no-progress"],
    );
    let id = shared_id(&file);
    assert_eq!(std::fs::read(out2.join(&id)).unwrap(), pattern(3_000_000));
    let downloads: Value = serde_json::from_str(&ok(&home2, &["--json", "status"])).unwrap();
    assert!(downloads["store_entries"].as_u64().unwrap() >= 1);

    let bad = spore(&home)
        .args(["get", "spore1nonsense"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

fn shared_id(file: &Path) -> String {
    blake3::hash(&std::fs::read(file).unwrap())
        .to_hex()
        .to_string()
}

#[test]
fn get_resumes_after_kill_9() {
    let dir = TempDir::new().unwrap();
    let seed_home = dir.path().join("seed");
    // 4 MB/s upload: 16 MB take about 4 s
    let _seed = seed_node(&seed_home, 4_000_000);
    let file = dir.path().join("big.bin");
    let ticket = &share(&seed_home, &file, 16_000_000);

    let home = leecher_home(dir.path());
    let mut get = spore(&home)
        .args(["get", ticket])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    get.kill().unwrap(); // SIGKILL
    get.wait().unwrap();

    let listed: Value = serde_json::from_str(&ok(&home, &["--json", "ls"])).unwrap();
    let entry = &listed[0];
    assert_eq!(entry["state"], "partial", "{listed}");
    assert!(
        entry["verified_groups"].as_u64().unwrap() > 0,
        "progress survived the kill"
    );

    let out = dir.path().join("out.bin");
    let done = ok(
        &home,
        &["--json", "get", ticket, "-o", out.to_str().unwrap()],
    );
    let last: Value = serde_json::from_str(done.lines().last().unwrap()).unwrap();
    assert!(
        last["resumed_bytes"].as_u64().unwrap() > 0,
        "the second run resumed: {last}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), pattern(16_000_000));
}
