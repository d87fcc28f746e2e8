//! Runs a [`Plan`] with the real `spore` binary on a [`Testbed`], samples
//! every host twice a second, and returns a [`RunReport`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use spore_core::Ticket;

use crate::net::{Testbed, run, wait_until};
use crate::report::{DownloadOutcome, HostReport, RunReport, Sample, SourceStats};
use crate::scenario::{Action, Plan, Trigger};

/// Where things are.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `spore` binary.
    pub spore: PathBuf,
    /// The `spore-testbed` binary (for the relays and API calls in namespaces).
    pub testbed_exe: PathBuf,
    /// Homes, logs and files of this run (removed at the end unless `keep`).
    pub work: PathBuf,
    pub keep: bool,
    /// Extra `RUST_LOG` for the nodes.
    pub log: String,
    /// A `spore.toml` given to every spore host (`None`: spore's defaults).
    pub node_config: Option<PathBuf>,
}

const PORT: u16 = 5322;
const API: &str = "127.0.0.1:5323";
const SAMPLE: Duration = Duration::from_millis(500);

struct HostState {
    home: PathBuf,
    node: Option<Child>,
    get: Option<Child>,
    get_started: Option<Instant>,
    /// The node was started once (for `restart`).
    peer_id: Option<String>,
    /// Started with `--debug-lie-uploads` (kept across restarts).
    lying: bool,
    outcome: DownloadOutcome,
    completion: Option<f64>,
    attempts: u32,
    cpu_s_done: f64,
    peak_rss_kib: u64,
    up_rate: Option<f64>,
    down_rate: Option<f64>,
    sources: Vec<SourceStats>,
    get_seconds: Option<f64>,
}

/// Fills a file with `bytes` pseudo-random bytes from `seed`.
pub fn make_file(path: &Path, bytes: u64, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::new(File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// CPU seconds (user + system) and peak RSS (KiB) of a live process.
pub fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the command name, which is in parentheses and may hold spaces
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()??
        .max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some((ticks / hz, hwm))
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Flips one byte in `groups` evenly spread 16 KiB groups of `path`, keeping
/// its size and modification time. Returns the offsets it changed.
pub fn corrupt_file(path: &Path, groups: u32) -> Result<Vec<u64>> {
    let meta = std::fs::metadata(path)?;
    let mtime = meta.modified()?;
    let size = meta.len();
    let group_count = size.div_ceil(16 * 1024).max(1);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut offsets = Vec::new();
    for i in 0..u64::from(groups).min(group_count) {
        let group = (i * group_count) / u64::from(groups).min(group_count);
        let offset = (group * 16 * 1024 + 100).min(size.saturating_sub(1));
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut b)?;
        b[0] ^= 0xff;
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(&b)?;
        offsets.push(offset);
    }
    f.sync_all()?;
    f.set_modified(mtime)?;
    Ok(offsets)
}

/// The largest file under `dir` of exactly `size` bytes (a stored copy).
fn find_blob(dir: &Path, size: u64) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(p);
            } else if m.len() == size {
                return Some(p);
            }
        }
    }
    None
}

struct Run<'a> {
    plan: &'a Plan,
    opts: &'a RunOptions,
    bed: Testbed,
    hosts: Vec<HostState>,
    ticket: Option<Ticket>,
    start: Instant,
    samples: Vec<Sample>,
    events_log: Vec<(f64, String)>,
    source_file: PathBuf,
}

impl Run<'_> {
    fn spore(&self, i: usize) -> std::process::Command {
        let mut cmd = self.bed.command(i, &self.opts.spore);
        cmd.arg("--home").arg(&self.hosts[i].home);
        cmd
    }

    fn log(&mut self, what: String) {
        let t = self.start.elapsed().as_secs_f64();
        eprintln!("[{t:7.2} s] {what}");
        self.events_log.push((t, what));
    }

    fn running_peers(&self, except: usize) -> Vec<String> {
        self.hosts
            .iter()
            .enumerate()
            .filter(|(i, h)| *i != except && h.node.is_some())
            .filter_map(|(i, h)| {
                Some(format!(
                    "/ip4/{}/tcp/{PORT}/p2p/{}",
                    self.bed.hosts[i].ip,
                    h.peer_id.as_ref()?
                ))
            })
            .take(3)
            .collect()
    }

    fn start_node(&mut self, i: usize) -> Result<()> {
        if self.hosts[i].node.is_some() {
            return Ok(());
        }
        if self.hosts[i].peer_id.is_none() {
            let out = run(self.spore(i).arg("id"))?;
            self.hosts[i].peer_id = Some(out.trim().to_string());
        }
        let ip = self.bed.hosts[i].ip.to_string();
        let mut cmd = self.spore(i);
        cmd.args([
            "-v",
            "node",
            "--port",
            &PORT.to_string(),
            "--listen-ip",
            &ip,
            "--api",
            API,
            "--no-mdns",
            "--advertise-listen-addrs",
        ]);
        if self.hosts[i].lying {
            cmd.arg("--debug-lie-uploads");
        }
        for b in self.running_peers(i) {
            cmd.args(["--bootstrap", &b]);
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.hosts[i].home.join("node.log"))?;
        cmd.env("RUST_LOG", &self.opts.log)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().context("starting spore node")?;
        self.hosts[i].node = Some(child);
        // ready once `spore status` answers through the API
        let ok = wait_until(Duration::from_secs(30), || {
            self.spore(i)
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if !ok {
            bail!(
                "the node on {} did not answer within 30 s (see {})",
                self.bed.hosts[i].name,
                self.hosts[i].home.join("node.log").display()
            );
        }
        let lying = if self.hosts[i].lying {
            " (lying: corrupts its uploads)"
        } else {
            ""
        };
        self.log(format!("{}: node up{lying}", self.bed.hosts[i].name));
        Ok(())
    }

    fn stop_node(&mut self, i: usize) {
        self.sample_usage(i);
        let h = &mut self.hosts[i];
        if let Some(n) = &h.node
            && let Some((cpu, _)) = proc_usage(n.id())
        {
            h.cpu_s_done += cpu;
        }
        kill(&mut h.get);
        kill(&mut h.node);
    }

    fn sample_usage(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        if let Some(n) = &h.node
            && let Some((_, hwm)) = proc_usage(n.id())
        {
            h.peak_rss_kib = h.peak_rss_kib.max(hwm);
        }
    }

    fn share(&mut self, i: usize, copy: bool) -> Result<()> {
        let file = self.hosts[i].home.join("shared.bin");
        if !file.exists() {
            std::fs::copy(&self.source_file, &file)?;
        }
        let mut cmd = self.spore(i);
        cmd.args(["--json", "share"]).arg(&file);
        if copy {
            cmd.arg("--copy");
        }
        let out = run(&mut cmd)?;
        let v: Value = serde_json::from_str(out.lines().last().unwrap_or(""))
            .with_context(|| format!("reading `spore share` output {out:?}"))?;
        let text = v["ticket"]
            .as_str()
            .context("no ticket in `spore share` output")?;
        let t = Ticket::from_ticket_or_id(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        // one ticket naming every sharer, as a user merging tickets would
        self.ticket = Some(match self.ticket.take() {
            Some(mut old) if old.hash == t.hash => {
                for p in t.providers {
                    if !old.providers.contains(&p) {
                        old.providers.push(p);
                    }
                }
                old
            }
            _ => t,
        });
        self.log(format!(
            "{}: shared {}{}",
            self.bed.hosts[i].name,
            &text[..16.min(text.len())],
            if copy { " (copy)" } else { "" }
        ));
        Ok(())
    }

    fn get(&mut self, i: usize) -> Result<()> {
        let ticket = self
            .ticket
            .as_ref()
            .context("nothing shared yet")?
            .to_string();
        let out = self.hosts[i].home.join("out.bin");
        let stdout = File::create(self.hosts[i].home.join(GET_EVENTS))?;
        let stderr = File::create(self.hosts[i].home.join("get.err"))?;
        let child = self
            .spore(i)
            .args(["--json", "get", &ticket, "--no-progress", "--force", "-o"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()?;
        let h = &mut self.hosts[i];
        h.get = Some(child);
        h.attempts += 1;
        if h.get_started.is_none() {
            h.get_started = Some(Instant::now());
        }
        h.outcome = DownloadOutcome::Running;
        self.log(format!("{}: get", self.bed.hosts[i].name));
        Ok(())
    }

    /// Reads the download's per-source stats from the node's API.
    fn fetch_sources(&mut self, i: usize) {
        let Some(t) = &self.ticket else { return };
        let mut cmd = self.bed.command(i, &self.opts.testbed_exe);
        cmd.args(["api", "--home"])
            .arg(&self.hosts[i].home)
            .arg(format!("/v1/downloads/{}", t.hash.to_hex()));
        let Ok(out) = run(&mut cmd) else { return };
        let Ok(v) = serde_json::from_str::<Value>(&out) else {
            return;
        };
        let names: HashMap<String, String> = self
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(k, h)| Some((h.peer_id.clone()?, self.bed.hosts[k].name.clone())))
            .collect();
        self.hosts[i].sources = v["sources"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let peer = s["peer_id"]
                            .as_str()
                            .or(s["peer"].as_str())
                            .unwrap_or("?")
                            .to_string();
                        SourceStats {
                            host: names.get(&peer).cloned().unwrap_or(peer),
                            useful_bytes: s["useful_bytes"].as_u64().unwrap_or(0),
                            duplicate_bytes: s["duplicate_bytes"].as_u64().unwrap_or(0),
                            wasted_bytes: s["wasted_bytes"].as_u64().unwrap_or(0),
                            bad_groups: s["bad_groups"].as_u64().unwrap_or(0),
                            banned: s["banned"].as_bool().unwrap_or(false),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
    }

    fn poll_gets(&mut self) {
        for i in 0..self.hosts.len() {
            let Some(child) = &mut self.hosts[i].get else {
                continue;
            };
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            self.hosts[i].get = None;
            let name = self.bed.hosts[i].name.clone();
            if status.success() {
                let t = self.hosts[i].get_started.map(|s| s.elapsed().as_secs_f64());
                self.hosts[i].completion = t;
                self.hosts[i].outcome = DownloadOutcome::Done;
                self.hosts[i].get_seconds = get_events(&self.hosts[i].home.join(GET_EVENTS))
                    .into_iter()
                    .find(|v| v["event"] == "done")
                    .and_then(|v| v["seconds"].as_f64());
                self.fetch_sources(i);
                self.log(format!("{name}: done in {:.2} s", t.unwrap_or(0.0)));
            } else {
                let err =
                    std::fs::read_to_string(self.hosts[i].home.join("get.err")).unwrap_or_default();
                self.hosts[i].outcome =
                    DownloadOutcome::Failed(err.trim().lines().last().unwrap_or("").to_string());
                self.log(format!("{name}: get failed ({status}): {}", err.trim()));
            }
        }
    }

    fn apply(&mut self, i: usize, action: &Action) -> Result<()> {
        let name = self.bed.hosts[i].name.clone();
        match action {
            Action::Start { lie } => {
                self.hosts[i].lying = *lie;
                self.start_node(i)?;
            }
            Action::Share { copy } => self.share(i, *copy)?,
            Action::Get => self.get(i)?,
            Action::Kill => {
                let was_running = self.hosts[i].get.is_some();
                self.stop_node(i);
                if was_running {
                    self.hosts[i].outcome = DownloadOutcome::Left;
                }
                self.log(format!("{name}: killed"));
            }
            Action::Restart => {
                let resume = self.hosts[i].get.is_some();
                self.stop_node(i);
                self.log(format!("{name}: killed for a restart"));
                self.start_node(i)?;
                if resume {
                    self.get(i)?;
                }
            }
            Action::Corrupt { groups } => {
                let home = &self.hosts[i].home;
                let path = find_blob(&home.join("data"), self.plan.file_bytes)
                    .or_else(|| Some(home.join("shared.bin")).filter(|p| p.exists()))
                    .with_context(|| format!("{name} holds no copy to corrupt"))?;
                let offsets = corrupt_file(&path, *groups)?;
                self.log(format!(
                    "{name}: flipped a byte in {} groups of {}",
                    offsets.len(),
                    path.display()
                ));
            }
            Action::SetLink { up_bps, down_bps } => {
                let h = &mut self.hosts[i];
                h.up_rate = up_bps.or(h.up_rate);
                h.down_rate = down_bps.or(h.down_rate);
                let (u, d) = (h.up_rate, h.down_rate);
                self.bed.set_rates(i, u, d)?;
                self.log(format!(
                    "{name}: link now up {:?} / down {:?} Mbit/s",
                    u.map(|r| r / 1e6),
                    d.map(|r| r / 1e6)
                ));
            }
        }
        Ok(())
    }

    fn sample(&mut self) {
        let t = self.start.elapsed().as_secs_f64();
        for i in 0..self.hosts.len() {
            self.sample_usage(i);
            let c = self.bed.hosts[i].link_counters().unwrap_or_default();
            let (up, down) = (c.up_bytes, c.down_bytes);
            let cpu = self.hosts[i].cpu_s_done
                + self.hosts[i]
                    .node
                    .as_ref()
                    .and_then(|n| proc_usage(n.id()))
                    .map_or(0.0, |u| u.0);
            self.samples.push(Sample {
                t,
                host: i,
                up_bytes: up,
                down_bytes: down,
                cpu_s: cpu,
            });
        }
    }

    fn execute(&mut self) -> Result<()> {
        let mut pending: Vec<(usize, bool)> =
            (0..self.plan.events.len()).map(|i| (i, false)).collect();
        let mut next_sample = Instant::now();
        loop {
            let now = self.start.elapsed().as_secs_f64();
            if Instant::now() >= next_sample {
                self.sample();
                next_sample += SAMPLE;
            }
            for entry in pending.iter_mut() {
                if entry.1 {
                    continue;
                }
                let due = match self.plan.events[entry.0].trigger.clone() {
                    Trigger::At(at) => now >= at,
                    Trigger::When {
                        host,
                        uploaded_bytes,
                        downloaded_bytes,
                    } => {
                        // fresh counters on every pass (20 ms), not the last
                        // sample (500 ms): at 50 Mbit/s a sample's age is up
                        // to 3 MB more upload than the scenario asks for
                        let c = self.bed.hosts[host].link_counters().unwrap_or_default();
                        let due = uploaded_bytes.is_some_and(|b| c.up_payload() >= b)
                            || downloaded_bytes.is_some_and(|b| c.down_payload() >= b);
                        if due {
                            let what = format!(
                                "{}: {} MB up, {} MB down (transport payload; {} and {} MB on the link)",
                                self.bed.hosts[host].name,
                                mb(c.up_payload()),
                                mb(c.down_payload()),
                                mb(c.up_bytes),
                                mb(c.down_bytes)
                            );
                            self.log(what);
                        }
                        due
                    }
                };
                if due {
                    entry.1 = true;
                    let ev = self.plan.events[entry.0].clone();
                    for h in &ev.hosts {
                        self.apply(*h, &ev.action)?;
                    }
                }
            }
            self.poll_gets();
            let gets_pending = pending.iter().any(|(e, done)| {
                !done
                    && matches!(
                        self.plan.events[*e].action,
                        Action::Get | Action::Restart | Action::Share { .. }
                    )
            });
            let running = self.hosts.iter().any(|h| h.get.is_some());
            let any_get = self.hosts.iter().any(|h| h.attempts > 0);
            if any_get && !running && !gets_pending {
                self.sample();
                return Ok(());
            }
            if self.start.elapsed() > self.plan.timeout {
                self.log(format!(
                    "timeout after {:.0} s",
                    self.plan.timeout.as_secs_f64()
                ));
                for h in &mut self.hosts {
                    if h.get.is_some() {
                        h.outcome = DownloadOutcome::TimedOut;
                    }
                }
                self.sample();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Where a host's `spore --json get` writes its events, a JSON object a line.
const GET_EVENTS: &str = "get.jsonl";

/// The events in `path` (see [`GET_EVENTS`]); lines that are not JSON are skipped.
fn get_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The verified bytes of the last progress event (or `done`: the size).
fn last_verified_bytes(events: &[Value]) -> Option<u64> {
    events
        .iter()
        .rev()
        .find_map(|v| match v["event"].as_str()? {
            "progress" => v["verified_bytes"].as_u64(),
            "done" => v["size"].as_u64(),
            _ => None,
        })
}

/// Builds the testbed, runs the plan, tears everything down, checks every
/// finished download against the content id, and returns the report.
pub fn run_plan(plan: &Plan, opts: &RunOptions, run_id: &str) -> Result<RunReport> {
    std::fs::create_dir_all(&opts.work)?;
    let source_file = opts.work.join("source.bin");
    eprintln!("making a {} MiB file", plan.file_bytes >> 20);
    make_file(&source_file, plan.file_bytes, plan.seed)?;
    let expected = {
        let mut h = blake3::Hasher::new();
        h.update_mmap_rayon(&source_file)?;
        h.finalize()
    };
    let bed = Testbed::up(
        run_id,
        &plan.host_configs(),
        &opts.testbed_exe,
        plan.seed,
        &opts.work,
    )?;
    let congestion = bed.congestion()?;
    let hosts = plan
        .hosts
        .iter()
        .map(|h| {
            let home = opts.work.join(&h.name);
            std::fs::create_dir_all(&home)?;
            if let Some(config) = &opts.node_config {
                // Where `spore --home` reads its configuration.
                std::fs::create_dir_all(home.join("config"))?;
                std::fs::copy(config, home.join("config").join("spore.toml"))
                    .with_context(|| format!("copying {}", config.display()))?;
            }
            Ok(HostState {
                home,
                node: None,
                get: None,
                get_started: None,
                peer_id: None,
                lying: false,
                outcome: DownloadOutcome::NotAsked,
                completion: None,
                attempts: 0,
                cpu_s_done: 0.0,
                peak_rss_kib: 0,
                up_rate: h.up_bps,
                down_rate: h.down_bps,
                sources: Vec::new(),
                get_seconds: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut r = Run {
        plan,
        opts,
        bed,
        hosts,
        ticket: None,
        start: Instant::now(),
        samples: Vec::new(),
        events_log: Vec::new(),
        source_file,
    };
    let result = r.execute();
    for i in 0..r.hosts.len() {
        r.stop_node(i);
    }
    let relay_cpu: Vec<f64> = r
        .bed
        .hosts
        .iter()
        .map(|h| proc_usage(h.relay_pid()).map_or(0.0, |u| u.0))
        .collect();
    r.bed.teardown()?;
    result?;
    // verify after the run, so hashing does not compete with the transfers
    let mut reports = Vec::new();
    for (i, h) in r.hosts.iter_mut().enumerate() {
        if h.outcome == DownloadOutcome::Done {
            let out = h.home.join("out.bin");
            let mut hasher = blake3::Hasher::new();
            let ok = hasher.update_mmap_rayon(&out).is_ok() && hasher.finalize() == expected;
            if !ok {
                h.outcome = DownloadOutcome::Failed("output does not match the content id".into());
            }
        }
        let last = r.samples.iter().rev().find(|s| s.host == i);
        reports.push(HostReport {
            name: plan.hosts[i].name.clone(),
            ip: plan.hosts[i].ip.to_string(),
            up_mbit: plan.hosts[i].up_bps.map(|b| b / 1e6),
            down_mbit: plan.hosts[i].down_bps.map(|b| b / 1e6),
            outcome: h.outcome.clone(),
            completion_s: h.completion,
            spore_seconds: h.get_seconds,
            attempts: h.attempts,
            bytes_up: last.map_or(0, |s| s.up_bytes),
            bytes_down: last.map_or(0, |s| s.down_bytes),
            cpu_s: h.cpu_s_done,
            peak_rss_mib: h.peak_rss_kib as f64 / 1024.0,
            emulator_cpu_s: relay_cpu[i],
            sources: h.sources.clone(),
            verified_bytes: last_verified_bytes(&get_events(&h.home.join(GET_EVENTS))),
        });
    }
    let report = RunReport::new(
        plan,
        "spore",
        congestion,
        reports,
        std::mem::take(&mut r.samples),
        std::mem::take(&mut r.events_log),
    );
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&opts.work);
    }
    Ok(report)
}

fn mb(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_progress_of_get_json_is_what_a_download_verified() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(GET_EVENTS);
        assert_eq!(last_verified_bytes(&get_events(&path)), None);
        std::fs::write(
            &path,
            concat!(
                r#"{"event":"progress","state":"running","verified_bytes":100}"#,
                "\n",
                r#"{"event":"progress","state":"running","verified_bytes":4096}"#,
                "\nnot json\n",
            ),
        )
        .unwrap();
        assert_eq!(last_verified_bytes(&get_events(&path)), Some(4096));
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(r#"{"event":"done","size":8192,"seconds":1.5}"#);
        std::fs::write(&path, text).unwrap();
        assert_eq!(last_verified_bytes(&get_events(&path)), Some(8192));
    }

    #[test]
    fn corrupting_flips_bytes_and_keeps_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        make_file(&path, 1 << 20, 9).unwrap();
        let before = std::fs::read(&path).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let offsets = corrupt_file(&path, 4).unwrap();
        assert_eq!(offsets.len(), 4);
        let after = std::fs::read(&path).unwrap();
        assert_eq!(after.len(), before.len());
        let changed: Vec<usize> = (0..after.len())
            .filter(|i| after[*i] != before[*i])
            .collect();
        assert_eq!(changed.len(), 4);
        // one byte in each of 4 different 16 KiB groups
        let mut groups: Vec<usize> = changed.iter().map(|i| i / (16 * 1024)).collect();
        groups.dedup();
        assert_eq!(groups.len(), 4);
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        assert_eq!(find_blob(dir.path(), 1 << 20), Some(path));
    }

    #[test]
    fn files_repeat_with_the_seed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        make_file(&a, 3 << 20, 1).unwrap();
        make_file(&b, 3 << 20, 1).unwrap();
        make_file(&c, 3 << 20, 2).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
        assert_eq!(std::fs::metadata(&a).unwrap().len(), 3 << 20);
    }

    #[test]
    fn usage_of_this_process_is_read() {
        let (cpu, rss) = proc_usage(std::process::id()).unwrap();
        assert!(cpu >= 0.0);
        assert!(rss > 1024, "peak RSS {rss} KiB");
    }
}
