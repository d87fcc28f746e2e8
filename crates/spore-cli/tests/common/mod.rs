//! Running the `spore` binary from tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // each test file uses a part; setup failures may panic

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// `spore --home HOME`, without the caller's RUST_LOG.
pub fn command(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spore"));
    cmd.arg("--home").arg(home).env_remove("RUST_LOG");
    cmd
}

/// Runs and expects success; returns stdout.
pub fn ok(home: &Path, args: &[&str]) -> String {
    let out = command(home).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "spore {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A `spore node` on 127.0.0.1 (free ports, no mDNS), killed and reaped when
/// dropped, even on a panic.
pub struct RunningNode {
    pub child: Child,
    pub home: PathBuf,
    /// The JSON line `spore --json node` prints once it runs.
    pub info: Value,
}

impl RunningNode {
    pub fn start(home: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spore"))
            .arg("--home")
            .arg(home)
            .args([
                "--json",
                "node",
                "--port",
                "0",
                "--api",
                "127.0.0.1:0",
                "--listen-ip",
                "127.0.0.1",
            ])
            .args(["--no-mdns", "--advertise-listen-addrs"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        Self {
            child,
            home: home.to_path_buf(),
            info,
        }
    }

    pub fn addr(&self) -> String {
        let tcp = self.info["listen_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a.as_str().unwrap().contains("/tcp/"))
            .unwrap();
        format!(
            "{}/p2p/{}",
            tcp.as_str().unwrap(),
            self.info["peer_id"].as_str().unwrap()
        )
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
