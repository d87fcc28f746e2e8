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

#[test]
fn get_a_collection_and_refuse_a_hostile_one() {
    let dir = TempDir::new().unwrap();
    let seed_home = dir.path().join("seed");
    let _seed = seed_node(&seed_home, 0);
    let tree = dir.path().join("photos");
    let files = [
        ("2024/summer/beach.jpg", pattern(700_000)),
        ("2024/readme.txt", b"hello".to_vec()),
        ("index.html", pattern(20_000)),
    ];
    for (p, bytes) in &files {
        std::fs::create_dir_all(tree.join(p).parent().unwrap()).unwrap();
        std::fs::write(tree.join(p), bytes).unwrap();
    }
    let shared: Value = serde_json::from_str(&ok(
        &seed_home,
        &["--json", "share", tree.to_str().unwrap()],
    ))
    .unwrap();
    let ticket = shared["ticket"].as_str().unwrap();

    let home = leecher_home(dir.path());
    let out = dir.path().join("out");
    let done = ok(
        &home,
        &["--json", "get", ticket, "-o", out.to_str().unwrap()],
    );
    assert!(done.contains("\"event\":\"done\""), "{done}");
    for (p, bytes) in &files {
        assert_eq!(&std::fs::read(out.join(p)).unwrap(), bytes, "{p}");
    }

    // A manifest made by hand with a path that climbs out, shared as a plain
    // file and announced as a collection in the ticket.
    let placeholder = "placeholder";
    let valid = spore_core::Collection::new(vec![spore_core::CollectionEntry {
        path: spore_core::RelativePath::new(placeholder).unwrap(),
        size: 5,
        hash: spore_core::Hash::of(b"hello"),
        mode: 0o644,
    }])
    .unwrap()
    .encode();
    let at = valid
        .windows(placeholder.len())
        .position(|w| w == placeholder.as_bytes())
        .unwrap();
    let hostile = "../../escaped";
    let mut manifest = valid[..at - 1].to_vec();
    manifest.push(hostile.len() as u8);
    manifest.extend_from_slice(hostile.as_bytes());
    manifest.extend_from_slice(&valid[at + placeholder.len()..]);
    let evil = dir.path().join("evil.manifest");
    std::fs::write(&evil, &manifest).unwrap();
    let shared: Value = serde_json::from_str(&ok(
        &seed_home,
        &["--json", "share", evil.to_str().unwrap()],
    ))
    .unwrap();
    let mut t = spore_core::Ticket::from_ticket_or_id(shared["ticket"].as_str().unwrap()).unwrap();
    t.kind = spore_core::ContentKind::Collection;
    let out2 = dir.path().join("sub/out2");
    let failed = spore(&home)
        .args(["get", &t.to_string(), "-o", out2.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(
        stderr.contains("invalid") && stderr.contains("../../escaped"),
        "{stderr}"
    );
    assert!(!out2.exists(), "nothing written");
    assert!(!dir.path().join("escaped").exists());
    assert!(!dir.path().parent().unwrap().join("escaped").exists());
}

#[test]
fn node_rate_flags_cap_uploads_and_downloads() {
    let dir = TempDir::new().unwrap();
    let bad = spore(&dir.path().join("x"))
        .args(["node", "--max-upload", "10 parsecs"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("not a rate"), "{stderr}");

    // 3 MB from a seed capped at 1 MiB/s: at least ~2.3 s once the
    // token bucket's first burst (512 KiB) is spent
    let seed_home = dir.path().join("seed");
    std::fs::create_dir_all(&seed_home).unwrap();
    let _seed = RunningNode::start(&seed_home, &["--max-upload", "1M"]);
    let file = dir.path().join("capped.bin");
    let ticket = &share(&seed_home, &file, 3_000_000);
    let home = leecher_home(dir.path());
    let started = std::time::Instant::now();
    ok(&home, &["get", ticket, "--no-progress"]);
    let up = started.elapsed();
    assert!(up >= Duration::from_secs(2), "the upload cap held: {up:?}");

    // the same through a leecher node capped at 1 MiB/s down (the config
    // says unlimited; the flag wins)
    let seed2_home = dir.path().join("seed2");
    let _seed2 = seed_node(&seed2_home, 0);
    let file2 = dir.path().join("capped2.bin");
    let ticket2 = &share(&seed2_home, &file2, 3_000_001);
    let home2 = dir.path().join("leecher2");
    std::fs::create_dir_all(home2.join("config")).unwrap();
    std::fs::write(
        home2.join("config/spore.toml"),
        "[transfer]\nmax_download = 0\n",
    )
    .unwrap();
    let _leecher = RunningNode::start(&home2, &["--max-download", "1MiB/s"]);
    let started = std::time::Instant::now();
    ok(&home2, &["get", ticket2, "--no-progress"]);
    let down = started.elapsed();
    assert!(
        down >= Duration::from_secs(2),
        "the download cap held: {down:?}"
    );
}
