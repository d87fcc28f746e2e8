//! The `spore` binary end to end: real processes, real files.

#![allow(clippy::unwrap_used)] // tests may panic on setup failures

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use tempfile::TempDir;

struct Env {
    dir: TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: TempDir::new().unwrap(),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spore"));
        cmd.arg("--home")
            .arg(self.home())
            .args(args)
            .env_remove("RUST_LOG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "spore {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "spore {args:?} should have failed");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.starts_with("error: "),
            "one clear error line: {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        stderr
    }

    fn add_json(&self, path: &Path, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["--json", "add", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(17) ^ (i >> 10) as u8)
        .collect()
}

#[test]
fn add_prints_the_b3sum_hash_and_a_ticket() {
    let env = Env::new();
    let file = env.write("talk.mkv", &pattern(1_234_567));
    let out = env.ok(&["add", file.to_str().unwrap()]);
    let expected = blake3::hash(&pattern(1_234_567)).to_hex().to_string();
    assert!(out.contains(&format!("id      {expected}")), "{out}");
    assert!(out.contains("ticket  spore1"), "{out}");
    let b3sum = Command::new("b3sum")
        .arg(&file)
        .output()
        .expect("b3sum must be installed (.ci/run installs it)");
    assert!(
        String::from_utf8(b3sum.stdout)
            .unwrap()
            .starts_with(&expected)
    );
    // the ticket works wherever an id does
    let ticket = out
        .lines()
        .find_map(|l| l.strip_prefix("ticket  "))
        .unwrap();
    assert_eq!(env.run(&["cat", ticket]).stdout, pattern(1_234_567));
}

#[test]
fn cat_prints_verified_bytes_and_ranges() {
    let env = Env::new();
    let bytes = pattern(100_000);
    let added = env.add_json(&env.write("f", &bytes), &[]);
    let id = added["id"].as_str().unwrap();
    let cat = |args: &[&str]| env.command(args).output().unwrap().stdout;
    assert_eq!(cat(&["cat", id]), bytes);
    assert_eq!(cat(&["cat", &id[..8]]), bytes, "a unique prefix is enough");
    assert_eq!(cat(&["cat", id, "--range", "10..20"]), &bytes[10..20]);
    assert_eq!(cat(&["cat", id, "--range", "99990.."]), &bytes[99_990..]);
    assert_eq!(cat(&["cat", id, "--range", "..5"]), &bytes[..5]);
    assert!(
        env.fails(&["cat", id, "--range", "20..10"])
            .contains("starts after it ends")
    );
    assert!(
        env.fails(&["cat", id, "--range", "0..100001"])
            .contains("past the end")
    );
    assert!(
        env.fails(&["cat", id, "--range", "x"])
            .contains("START..END")
    );
}

#[test]
fn bad_input_gets_one_clear_line_and_a_nonzero_exit() {
    let env = Env::new();
    env.add_json(&env.write("keep", b"keep me"), &[]);
    assert!(
        env.fails(&["add", env.path("missing").to_str().unwrap()])
            .contains("No such file")
    );
    assert!(
        env.fails(&["cat", "not-an-id"])
            .contains("not a content id")
    );
    assert!(
        env.fails(&["cat", &"0".repeat(64)])
            .contains("not in the store")
    );
    assert!(env.fails(&["cat", "spore1aaaa"]).contains("ticket"));
    assert!(env.fails(&["cat", "spore2aaaa"]).contains("version"));
    let fifo_dir = env.path("dev");
    fs::create_dir_all(&fifo_dir).unwrap();
    let fifo = fifo_dir.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        env.fails(&["add", fifo.to_str().unwrap()])
            .contains("neither a regular file")
    );
    // unreadable files: only meaningful when not running with root's privileges
    let secret = env.write("secret", b"s");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::File::open(&secret).is_err() {
        assert!(
            env.fails(&["add", secret.to_str().unwrap()])
                .contains("Permission denied")
        );
    }
    // nothing already stored was harmed
    assert_eq!(
        env.ok(&["cat", &blake3::hash(b"keep me").to_hex()]),
        "keep me"
    );
    assert!(env.ok(&["verify"]).contains("intact"));
}

#[test]
fn collections_export_with_nested_paths_and_modes() {
    let env = Env::new();
    env.write("album/cover.jpg", &pattern(5000));
    env.write("album/disc 1/01 intro.flac", &pattern(70_000));
    env.write("album/disc 1/02 ünïcode.flac", b"x");
    let added = env.add_json(&env.path("album"), &["--copy"]);
    assert_eq!(added["kind"], "collection");
    assert_eq!(added["files"], 3);
    let id = added["id"].as_str().unwrap();
    let listing = env.ok(&["ls", id]);
    assert!(listing.contains("disc 1/01 intro.flac"), "{listing}");
    assert!(env.fails(&["cat", id]).contains("is a collection"));
    let dest = env.path("out");
    env.ok(&["export", id, dest.to_str().unwrap()]);
    assert_eq!(
        fs::read(dest.join("disc 1/01 intro.flac")).unwrap(),
        pattern(70_000)
    );
    assert_eq!(fs::read(dest.join("cover.jpg")).unwrap(), pattern(5000));
    assert!(
        env.fails(&["export", id, dest.to_str().unwrap()])
            .contains("exists already")
    );
    env.ok(&["export", id, dest.to_str().unwrap(), "--force"]);
    let blob_dest = env.path("single.bin");
    let cover = blake3::hash(&pattern(5000)).to_hex().to_string();
    env.ok(&["export", &cover, blob_dest.to_str().unwrap()]);
    assert_eq!(fs::read(blob_dest).unwrap(), pattern(5000));
}

#[test]
fn ls_rm_and_json() {
    let env = Env::new();
    let a = env.add_json(&env.write("a", b"aaa"), &[]);
    let b = env.add_json(&env.write("b", b"bbb"), &["--copy"]);
    let ls: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "ls"])).unwrap();
    let names: Vec<_> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"a") && names.contains(&"b"));
    env.ok(&["rm", a["id"].as_str().unwrap()]);
    let text = env.ok(&["ls"]);
    assert!(!text.contains(a["id"].as_str().unwrap()) && text.contains(b["id"].as_str().unwrap()));
    assert!(
        env.fails(&["rm", a["id"].as_str().unwrap()])
            .contains("not in the store")
    );
}

#[test]
fn modified_in_place_file_is_refused_not_served() {
    let env = Env::new();
    let file = env.write("doc.txt", &pattern(50_000));
    let id = env.add_json(&file, &[])["id"].as_str().unwrap().to_string();
    let mut changed = pattern(50_000);
    changed[100] ^= 1;
    fs::write(&file, &changed).unwrap();
    let out = env.run(&["cat", &id]);
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "no byte of the changed file is printed"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("changed since it was added"));
    assert!(env.ok(&["ls"]).contains("broken"));
    assert!(!env.run(&["verify", &id]).status.success());
}

#[test]
fn writing_to_a_full_device_fails_cleanly() {
    let env = Env::new();
    let id = env.add_json(&env.write("f", &pattern(200_000)), &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env
        .command(&["cat", &id])
        .stdout(
            fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No space left"));
}

#[test]
fn full_disk_during_import_leaves_the_store_intact() {
    let env = Env::new();
    let home = env.home();
    fs::create_dir_all(&home).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&home)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(home.clone());
    let small = env.add_json(&env.write("small", b"small and safe"), &["--copy"]);
    let big = env.write("big", &pattern(3 << 20));
    let err = env.fails(&["add", "--copy", big.to_str().unwrap()]);
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(
        env.ok(&["cat", small["id"].as_str().unwrap()]),
        "small and safe"
    );
    assert!(env.ok(&["verify"]).contains("intact"));
    let leftovers = fs::read_dir(home.join("data/store/tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "no staged file is left behind");
}

#[test]
fn kill_9_during_import_leaves_a_clean_store() {
    let env = Env::new();
    let keep = env.add_json(&env.write("keep", b"precious"), &["--copy"]);
    let big = env.write("big", &pattern(256 << 20));
    for delay_ms in [5, 40, 150, 400] {
        let mut child = env
            .command(&["add", "--copy", big.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let verify = env.ok(&["verify"]);
        assert!(!verify.contains("broken"), "{verify}");
        assert_eq!(env.ok(&["cat", keep["id"].as_str().unwrap()]), "precious");
    }
    // the store is clean: leftovers are removed on open and the add succeeds now
    let added = env.add_json(&big, &["--copy"]);
    assert_eq!(added["size"], 256 << 20);
    assert_eq!(
        fs::read_dir(env.home().join("data/store/tmp"))
            .unwrap()
            .count(),
        0
    );
    let blob_files: usize = fs::read_dir(env.home().join("data/store/blobs"))
        .unwrap()
        .map(|shard| fs::read_dir(shard.unwrap().path()).unwrap().count())
        .sum();
    // keep (tiny: data only) + big (data + outboard): no orphan files remain
    assert_eq!(blob_files, 3);
}
