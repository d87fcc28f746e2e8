#![allow(clippy::unwrap_used)]
//! `spore search` and `spore describe` through the real binary: the local
//! index, a daemon's streamed API, and a short-lived node.

mod common;

use common::{RunningNode, command, ok};
use serde_json::Value;

fn write(path: &std::path::Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn last_json(out: &str) -> Value {
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

#[test]
fn local_search_finds_blobs_files_in_collections_and_tags() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let iso = files.path().join("debian-12-amd64-netinst.iso");
    write(&iso, b"not really an iso");
    write(&files.path().join("photos/2024/beach sunset.jpg"), b"jpeg?");
    write(&files.path().join("photos/notes.txt"), b"text");
    let h = home.path();
    let id = ok(h, &["add", "-q", iso.to_str().unwrap()])
        .trim()
        .to_string();
    ok(h, &["add", files.path().join("photos").to_str().unwrap()]);

    let out = ok(h, &["search", "--local", "Debian", "netinst"]);
    assert!(out.contains("debian-12-amd64-netinst.iso"), "{out}");
    assert!(out.contains(&id), "{out}");

    let done = last_json(&ok(h, &["--json", "search", "--local", "sunset"]));
    let results = done["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{done}");
    assert_eq!(results[0]["kind"], "file");
    assert_eq!(results[0]["name"], "2024/beach sunset.jpg");

    // Filters: the iso is an archive of a few bytes.
    ok(
        h,
        &[
            "search",
            "--local",
            "--type",
            "archive",
            "--max-size",
            "1K",
            "debian",
        ],
    );
    let none = command(h)
        .args(["search", "--local", "--min-size", "10M", "debian"])
        .output()
        .unwrap();
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no results"));

    // Tags and descriptions are searched locally.
    ok(
        h,
        &[
            "describe",
            &id,
            "--tag",
            "installer",
            "--description",
            "Bookworm net install",
        ],
    );
    let out = ok(h, &["search", "--local", "bookworm", "installer"]);
    assert!(out.contains(&id), "{out}");

    for (args, needle) in [
        (
            vec!["search", "--local", "--type", "bogus", "x1"],
            "unknown type",
        ),
        (
            vec!["search", "--local", "--min-size", "ten", "x1"],
            "not a size",
        ),
        (vec!["search", "--local", "a", "."], "no keyword"),
        (vec!["search", "--hops", "9", "x1"], "--hops"),
    ] {
        let out = command(h).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn network_search_through_a_daemon_and_a_short_lived_node() {
    let (ha, hb, hc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let files = tempfile::tempdir().unwrap();
    let film = files.path().join("okapi migration.mkv");
    write(&film, b"a film about okapis");
    let id = ok(ha.path(), &["add", "-q", film.to_str().unwrap()])
        .trim()
        .to_string();
    let a = RunningNode::start(ha.path(), &[]);
    let b = RunningNode::start(hb.path(), &["--bootstrap", &a.addr()]);

    // B's daemon asks A over /spore/search/1 and streams the results (SSE).
    let out = ok(
        hb.path(),
        &[
            "--json",
            "search",
            "okapi",
            "--type",
            "video",
            "--timeout",
            "8",
            "--limit",
            "1",
        ],
    );
    let done = last_json(&out);
    let hit = &done["results"][0];
    assert_eq!(hit["id"], id.as_str(), "{out}");
    assert_eq!(hit["sources"], 1);
    assert_eq!(hit["publishers"][0], a.info["peer_id"]);
    assert!(
        out.lines().next().unwrap().contains("\"event\":\"hit\""),
        "{out}"
    );

    // No daemon for C: a short-lived node joins through A (spore.toml).
    let config = format!(
        "[net]\nlisten_ip = \"127.0.0.1\"\nmdns = false\nbootstrap = [\"{}\"]\n",
        a.addr()
    );
    write(&hc.path().join("config/spore.toml"), config.as_bytes());
    let out = ok(
        hc.path(),
        &["search", "okapi", "--timeout", "8", "--limit", "1"],
    );
    assert!(
        out.contains("okapi migration.mkv") && out.contains(&id),
        "{out}"
    );

    b.stop();
    a.stop();
}
