//! The same swarm with a BitTorrent client: aria2 on the same hosts and
//! links, with Debian's opentracker (it serves whitelisted info-hashes only)
//! on the seed's host.
//!
//! Only `start`, `share` and `get` are understood: the sharer seeds from the
//! scenario's `share` time, each getter starts aria2c at its `get` time and
//! seeds on after it finishes (as spore's nodes do).

use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::net::{Testbed, run};
use crate::report::{DownloadOutcome, HostReport, RunReport, Sample};
use crate::runner::{RunOptions, make_file, proc_usage};
use crate::scenario::{Action, Plan, Trigger};

const TRACKER_PORT: u16 = 6969;

/// The piece length exponent for about 1,000–2,000 pieces (32 KiB – 4 MiB).
pub fn piece_exponent(file_bytes: u64) -> u32 {
    let target = (file_bytes / 1024).max(1);
    (63 - target.leading_zeros()).clamp(15, 22)
}

/// The info-hash from `aria2c -S` output.
pub fn parse_info_hash(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("Info Hash:"))?;
    let h = line.split(':').nth(1)?.trim().to_ascii_lowercase();
    (h.len() == 40 && h.chars().all(|c| c.is_ascii_hexdigit())).then_some(h)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn run_aria2(plan: &Plan, opts: &RunOptions, run_id: &str) -> Result<RunReport> {
    for tool in ["aria2c", "mktorrent", "opentracker"] {
        if which(tool).is_none() {
            bail!(
                "`{tool}` is not installed (Debian packages aria2, mktorrent, opentracker; scripts/deps installs them)"
            );
        }
    }
    let mut seed = None;
    let mut gets: Vec<(usize, f64)> = Vec::new();
    for e in &plan.events {
        let at = match e.trigger {
            Trigger::At(t) => t,
            Trigger::When { .. } => bail!("the BitTorrent run knows only timed events"),
        };
        match e.action {
            Action::Start { .. } => {}
            Action::Share { .. } => {
                if seed.is_some() || e.hosts.len() != 1 {
                    bail!("the BitTorrent run needs exactly one sharing host");
                }
                seed = Some((e.hosts[0], at));
            }
            Action::Get => gets.extend(e.hosts.iter().map(|h| (*h, at))),
            ref a => bail!("the BitTorrent run does not do {a:?}"),
        }
    }
    let (seed, seed_at) = seed.context("no host shares")?;
    std::fs::create_dir_all(&opts.work)?;
    let seed_dir = opts.work.join(&plan.hosts[seed].name);
    std::fs::create_dir_all(&seed_dir)?;
    let data = seed_dir.join("shared.bin");
    make_file(&data, plan.file_bytes, plan.seed)?;
    let expected = {
        let mut h = blake3::Hasher::new();
        h.update_mmap_rayon(&data)?;
        h.finalize()
    };
    let torrent = opts.work.join("shared.torrent");
    let tracker_ip = plan.hosts[seed].ip;
    run(std::process::Command::new("mktorrent")
        .args([
            "-l",
            &piece_exponent(plan.file_bytes).to_string(),
            "-a",
            &format!("http://{tracker_ip}:{TRACKER_PORT}/announce"),
            "-o",
        ])
        .arg(&torrent)
        .arg(&data))?;
    let info = run(std::process::Command::new("aria2c").arg("-S").arg(&torrent))?;
    let info_hash = parse_info_hash(&info).context("no info hash in `aria2c -S` output")?;
    let whitelist = opts.work.join("whitelist");
    std::fs::write(&whitelist, format!("{info_hash}\n"))?;
    let hook = opts.work.join("done-hook.sh");
    std::fs::write(&hook, "#!/bin/sh\ndate +%s.%N > \"$SPT_DONE\"\n")?;
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;

    let bed = Testbed::up(
        run_id,
        &plan.host_configs(),
        &opts.testbed_exe,
        plan.seed,
        &opts.work,
    )?;
    let congestion = bed.congestion()?;
    let mut children: Vec<Option<Child>> = (0..plan.hosts.len()).map(|_| None).collect();
    let mut tracker = bed
        .command(seed, "opentracker")
        .args([
            "-i",
            &tracker_ip.to_string(),
            "-p",
            &TRACKER_PORT.to_string(),
            "-P",
            &TRACKER_PORT.to_string(),
            "-w",
            "whitelist",
        ])
        // opentracker chroots into -d before it reads the whitelist: a relative path
        .arg("-d")
        .arg(&opts.work)
        .current_dir(&opts.work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(opts.work.join("tracker.log"))?)
        .spawn()
        .context("starting opentracker")?;
    std::thread::sleep(Duration::from_millis(300));

    let aria = |bed: &Testbed, i: usize, dir: &Path, seeding: bool| -> Result<Child> {
        let name = &plan.hosts[i].name;
        let mut cmd = bed.command(i, "aria2c");
        cmd.args([
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--seed-ratio=0.0",
            "--file-allocation=none",
            "--bt-tracker-interval=5",
            "--summary-interval=0",
            "--console-log-level=warn",
            "--listen-port=6881",
            "--auto-save-interval=0",
        ]);
        if seeding {
            cmd.arg("--bt-seed-unverified=true");
        } else {
            cmd.arg(format!("--on-bt-download-complete={}", hook.display()));
        }
        cmd.arg("-d").arg(dir).arg(&torrent);
        cmd.env("SPT_DONE", opts.work.join(format!("{name}.done")));
        cmd.stdin(Stdio::null())
            .stdout(File::create(opts.work.join(format!("{name}.aria2.log")))?)
            .stderr(Stdio::inherit());
        Ok(cmd.spawn()?)
    };

    let start = Instant::now();
    let start_unix = unix_now() - start.elapsed().as_secs_f64();
    let mut started: Vec<Option<f64>> = vec![None; plan.hosts.len()];
    let mut completion: Vec<Option<f64>> = vec![None; plan.hosts.len()];
    let mut samples = Vec::new();
    let mut events = Vec::new();
    let mut seed_started = false;
    let mut next_sample = Instant::now();
    let sample_all = |samples: &mut Vec<Sample>, children: &[Option<Child>], t: f64| {
        for (i, host) in bed.hosts.iter().enumerate() {
            let c = host.link_counters().unwrap_or_default();
            let cpu = children[i]
                .as_ref()
                .and_then(|c| proc_usage(c.id()))
                .map_or(0.0, |u| u.0);
            samples.push(Sample {
                t,
                host: i,
                up_bytes: c.up_bytes,
                down_bytes: c.down_bytes,
                cpu_s: cpu,
            });
        }
    };
    let result: Result<()> = 'run: loop {
        let now = start.elapsed().as_secs_f64();
        if !seed_started && now >= seed_at {
            children[seed] = Some(aria(&bed, seed, &seed_dir, true)?);
            seed_started = true;
            events.push((now, format!("{}: seeding", plan.hosts[seed].name)));
        }
        for (h, at) in &gets {
            if started[*h].is_none() && now >= *at && seed_started {
                let dir = opts.work.join(&plan.hosts[*h].name);
                std::fs::create_dir_all(&dir)?;
                children[*h] = Some(aria(&bed, *h, &dir, false)?);
                started[*h] = Some(now);
                events.push((now, format!("{}: aria2c", plan.hosts[*h].name)));
            }
        }
        for (h, _) in &gets {
            if completion[*h].is_none()
                && let Ok(text) =
                    std::fs::read_to_string(opts.work.join(format!("{}.done", plan.hosts[*h].name)))
                && let Ok(t) = text.trim().parse::<f64>()
            {
                let c = t - start_unix - started[*h].unwrap_or(0.0);
                completion[*h] = Some(c);
                events.push((now, format!("{}: done in {c:.2} s", plan.hosts[*h].name)));
                eprintln!("[{now:7.2} s] {}: done in {c:.2} s", plan.hosts[*h].name);
            }
            if let Some(c) = &mut children[*h]
                && let Ok(Some(status)) = c.try_wait()
                && completion[*h].is_none()
            {
                break 'run Err(anyhow::anyhow!(
                    "aria2c on {} exited ({status}) before finishing",
                    plan.hosts[*h].name
                ));
            }
        }
        if Instant::now() >= next_sample {
            next_sample += Duration::from_millis(500);
            sample_all(&mut samples, &children, now);
        }
        if gets.iter().all(|(h, _)| completion[*h].is_some()) {
            break 'run Ok(());
        }
        if start.elapsed() > plan.timeout {
            events.push((now, "timeout".into()));
            break 'run Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The counters at the end, not up to 500 ms before it: a report read
    // from the last periodic sample missed the last bytes, and aria2's
    // leechers seemed to receive less than the file.
    sample_all(&mut samples, &children, start.elapsed().as_secs_f64());
    let mut usage = vec![(0.0, 0u64); plan.hosts.len()];
    for (i, c) in children.iter_mut().enumerate() {
        if let Some(c) = c {
            usage[i] = proc_usage(c.id()).unwrap_or((0.0, 0));
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    let _ = tracker.kill();
    let _ = tracker.wait();
    let last_counters: Vec<(u64, u64)> = (0..plan.hosts.len())
        .map(|i| {
            samples
                .iter()
                .rev()
                .find(|s: &&Sample| s.host == i)
                .map_or((0, 0), |s| (s.up_bytes, s.down_bytes))
        })
        .collect();
    let relay_cpu: Vec<f64> = bed
        .hosts
        .iter()
        .map(|h| proc_usage(h.relay_pid()).map_or(0.0, |u| u.0))
        .collect();
    drop(bed);
    result?;
    let mut hosts = Vec::new();
    for (i, h) in plan.hosts.iter().enumerate() {
        let asked = gets.iter().any(|g| g.0 == i);
        let outcome = if !asked {
            DownloadOutcome::NotAsked
        } else if completion[i].is_some() {
            let mut hasher = blake3::Hasher::new();
            let file = opts.work.join(&h.name).join("shared.bin");
            if hasher.update_mmap_rayon(&file).is_ok() && hasher.finalize() == expected {
                DownloadOutcome::Done
            } else {
                DownloadOutcome::Failed("output does not match".into())
            }
        } else {
            DownloadOutcome::TimedOut
        };
        hosts.push(HostReport {
            name: h.name.clone(),
            ip: h.ip.to_string(),
            up_mbit: h.up_bps.map(|b| b / 1e6),
            down_mbit: h.down_bps.map(|b| b / 1e6),
            outcome,
            completion_s: completion[i],
            spore_seconds: None,
            attempts: u32::from(asked),
            bytes_up: last_counters[i].0,
            bytes_down: last_counters[i].1,
            cpu_s: usage[i].0,
            peak_rss_mib: usage[i].1 as f64 / 1024.0,
            emulator_cpu_s: relay_cpu[i],
            sources: Vec::new(),
            verified_bytes: None,
        });
    }
    let report = RunReport::new(plan, "aria2", congestion, hosts, samples, events);
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&opts.work);
    }
    Ok(report)
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_sizes_give_about_a_thousand_pieces() {
        assert_eq!(piece_exponent(1 << 30), 20); // 1 MiB pieces: 1024 of them
        assert_eq!(piece_exponent(256 << 20), 18);
        assert_eq!(piece_exponent(1 << 20), 15);
        assert_eq!(piece_exponent(64 << 30), 22);
    }

    #[test]
    fn info_hash_is_read_from_aria2() {
        let text = "Mode: single\nInfo Hash: 0123456789ABCDEF0123456789abcdef01234567\nPiece Length: 1.0MiB\n";
        assert_eq!(
            parse_info_hash(text).as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(parse_info_hash("Info Hash: xyz"), None);
    }
}
