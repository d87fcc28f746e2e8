//! `spore-testbed check`: builds two hosts with the given link and measures it
//! with `ping` and `iperf3`, to show the emulator and the caps do what they say.

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::emulator::LinkShape;
use crate::net::{HostConfig, Testbed, run};

#[derive(Debug, Clone, Serialize)]
pub struct CheckConfig {
    pub up_mbit: f64,
    pub down_mbit: f64,
    pub delay_ms: f64,
    pub jitter_ms: f64,
    pub loss: f64,
    pub pings: u32,
    pub iperf_seconds: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckResult {
    pub rtt_min_ms: f64,
    pub rtt_avg_ms: f64,
    pub rtt_max_ms: f64,
    pub rtt_mdev_ms: f64,
    pub ping_loss: f64,
    /// TCP goodput from a to b (a's upload cap and b's download cap apply).
    pub tcp_mbit: f64,
    /// TCP goodput from b to a (`iperf3 -R`).
    pub tcp_reverse_mbit: f64,
}

/// `(min, avg, max, mdev)` in ms and the loss fraction from `ping`'s summary.
pub fn parse_ping(text: &str) -> Option<(f64, f64, f64, f64, f64)> {
    let loss = text
        .lines()
        .find(|l| l.contains("packet loss"))?
        .split(',')
        .find(|p| p.contains("packet loss"))?
        .trim()
        .split('%')
        .next()?
        .parse::<f64>()
        .ok()?
        / 100.0;
    let rtt = text
        .lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))?;
    let nums: Vec<f64> = rtt
        .split('=')
        .nth(1)?
        .trim()
        .split(' ')
        .next()?
        .split('/')
        .filter_map(|x| x.parse().ok())
        .collect();
    if nums.len() < 4 {
        return None;
    }
    Some((nums[0], nums[1], nums[2], nums[3], loss))
}

fn iperf_mbit(json: &str) -> Result<f64> {
    let v: Value = serde_json::from_str(json).context("reading iperf3 JSON")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e6)
        .context("no sum_received in iperf3 output")
}

pub fn run_check(cfg: &CheckConfig, exe: &std::path::Path) -> Result<CheckResult> {
    for tool in ["ping", "iperf3"] {
        if std::process::Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            anyhow::bail!("`{tool}` is not installed (scripts/deps installs it)");
        }
    }
    let shape = LinkShape {
        delay: Duration::from_secs_f64(cfg.delay_ms / 1000.0),
        jitter: Duration::from_secs_f64(cfg.jitter_ms / 1000.0),
        loss: cfg.loss,
        ..LinkShape::default()
    };
    let host = |name: &str, last: u8| HostConfig {
        name: name.into(),
        ip: std::net::Ipv4Addr::new(10, 77, 0, last),
        up_bps: Some(cfg.up_mbit * 1e6),
        down_bps: Some(cfg.down_mbit * 1e6),
        shape,
        congestion: None,
    };
    let work = std::env::temp_dir().join(format!("spore-testbed-check-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let bed = Testbed::up(
        &format!("c{}", std::process::id()),
        &[host("a", 1), host("b", 2)],
        exe,
        1,
        &work,
    )?;
    let mut result = CheckResult::default();
    let ping = run(bed.command(0, "ping").args([
        "-q",
        "-c",
        &cfg.pings.to_string(),
        "-i",
        "0.02",
        "-W",
        "2",
        "10.77.0.2",
    ]))
    .or_else(|e| {
        if cfg.loss > 0.0 {
            Ok(e.to_string())
        } else {
            Err(e)
        }
    })?;
    if let Some((min, avg, max, mdev, loss)) = parse_ping(&ping) {
        result.rtt_min_ms = min;
        result.rtt_avg_ms = avg;
        result.rtt_max_ms = max;
        result.rtt_mdev_ms = mdev;
        result.ping_loss = loss;
    }
    let mut server = bed
        .command(1, "iperf3")
        .args(["-s", "-B", "10.77.0.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let t = cfg.iperf_seconds.to_string();
    let fwd = run(bed
        .command(0, "iperf3")
        .args(["-c", "10.77.0.2", "-t", &t, "-J"]));
    let rev = run(bed
        .command(0, "iperf3")
        .args(["-c", "10.77.0.2", "-t", &t, "-J", "-R"]));
    let _ = server.kill();
    let _ = server.wait();
    result.tcp_mbit = iperf_mbit(&fwd?)?;
    result.tcp_reverse_mbit = iperf_mbit(&rev?)?;
    drop(bed);
    let _ = std::fs::remove_dir_all(&work);
    Ok(result)
}

/// The configured and measured numbers side by side.
pub fn check_table(cfg: &CheckConfig, r: &CheckResult) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| quantity | configured | measured |\n|---|---|---|");
    let _ = writeln!(
        s,
        "| RTT a↔b (ms) | {:.1} (2 × {:.1} one way) | min {:.2} / avg {:.2} / max {:.2} |",
        2.0 * cfg.delay_ms,
        cfg.delay_ms,
        r.rtt_min_ms,
        r.rtt_avg_ms,
        r.rtt_max_ms
    );
    let _ = writeln!(
        s,
        "| RTT spread (ms) | jitter ±{:.1} each way | mdev {:.2} |",
        cfg.jitter_ms, r.rtt_mdev_ms
    );
    let rt_loss = 1.0 - (1.0 - cfg.loss).powi(2);
    let _ = writeln!(
        s,
        "| ping loss (round trip) | {:.2}% ({:.2}% each way) | {:.2}% over {} pings |",
        rt_loss * 100.0,
        cfg.loss * 100.0,
        r.ping_loss * 100.0,
        cfg.pings
    );
    let _ = writeln!(
        s,
        "| TCP a→b (Mbit/s) | min(up {:.0}, down {:.0}) | {:.1} |",
        cfg.up_mbit, cfg.down_mbit, r.tcp_mbit
    );
    let _ = writeln!(
        s,
        "| TCP b→a (Mbit/s) | min(up {:.0}, down {:.0}) | {:.1} |",
        cfg.up_mbit, cfg.down_mbit, r.tcp_reverse_mbit
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summaries_parse() {
        let text = "--- 10.77.0.2 ping statistics ---\n200 packets transmitted, 196 received, 2% packet loss, time 4000ms\nrtt min/avg/max/mdev = 20.101/20.402/21.733/0.210 ms\n";
        assert_eq!(
            parse_ping(text),
            Some((20.101, 20.402, 21.733, 0.210, 0.02))
        );
        assert_eq!(parse_ping("nothing"), None);
    }

    #[test]
    fn iperf_json_parses() {
        let j = r#"{"end":{"sum_received":{"bits_per_second":49500000.0}}}"#;
        assert!((iperf_mbit(j).unwrap() - 49.5).abs() < 1e-9);
        assert!(iperf_mbit("{}").is_err());
    }
}
