//! Results of a run: JSON, a Markdown table, and SVG plots (completion CDF,
//! download throughput over time).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::bound::{Bound, kumar_ross};
use crate::scenario::{Action, Plan};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DownloadOutcome {
    /// The host was never asked to download.
    NotAsked,
    Running,
    Done,
    /// Killed by the scenario while downloading.
    Left,
    TimedOut,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStats {
    pub host: String,
    /// Bytes of groups it delivered first.
    pub useful_bytes: u64,
    /// Bytes of groups it delivered after another source (verified, unused).
    pub duplicate_bytes: u64,
    /// Bytes of its responses that failed verification.
    pub wasted_bytes: u64,
    /// Groups that failed verification: its strikes (banned at 3).
    pub bad_groups: u64,
    pub banned: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostReport {
    pub name: String,
    pub ip: String,
    pub up_mbit: Option<f64>,
    pub down_mbit: Option<f64>,
    pub outcome: DownloadOutcome,
    /// Seconds from the first `get` to the verified file on disk.
    pub completion_s: Option<f64>,
    /// What the client itself reported, when it did.
    pub spore_seconds: Option<f64>,
    pub attempts: u32,
    /// Bytes on the wire (IP, as the host's veth counts them).
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// CPU seconds of the client process (user + system).
    pub cpu_s: f64,
    pub peak_rss_mib: f64,
    /// CPU seconds of this host's link emulator (relay) process.
    pub emulator_cpu_s: f64,
    pub sources: Vec<SourceStats>,
    /// Bytes the client last reported verified (spore's `get --json`
    /// progress), when it reported any.
    pub verified_bytes: Option<u64>,
}

/// Counters of one host at one time (cumulative).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    pub t: f64,
    pub host: usize,
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub cpu_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub tool: String,
    /// The hosts' TCP congestion control.
    pub congestion: String,
    pub file_bytes: u64,
    /// Kumar–Ross bound, for a scenario with one sharer.
    pub bound: Option<Bound>,
    /// The last successful download's completion time.
    pub last_finish_s: Option<f64>,
    pub ratio_to_bound: Option<f64>,
    pub downloads_done: usize,
    pub downloads_asked: usize,
    pub hosts: Vec<HostReport>,
    pub samples: Vec<Sample>,
    pub events: Vec<(f64, String)>,
}

/// The bound of a plan with exactly one sharing host, over the hosts that get.
pub fn plan_bound(plan: &Plan) -> Option<Bound> {
    let mut sharers: Vec<usize> = Vec::new();
    let mut getters: Vec<usize> = Vec::new();
    for e in &plan.events {
        match e.action {
            Action::Share { .. } => sharers.extend(e.hosts.iter().copied()),
            Action::Get => getters.extend(e.hosts.iter().copied()),
            _ => {}
        }
    }
    sharers.sort_unstable();
    sharers.dedup();
    getters.sort_unstable();
    getters.dedup();
    if sharers.len() != 1 {
        return None;
    }
    let seed = &plan.hosts[sharers[0]];
    let leechers: Vec<(f64, f64)> = getters
        .iter()
        .map(|i| {
            let h = &plan.hosts[*i];
            (
                h.up_bps.unwrap_or(f64::INFINITY),
                h.down_bps.unwrap_or(f64::INFINITY),
            )
        })
        .collect();
    kumar_ross(
        plan.file_bytes,
        seed.up_bps.unwrap_or(f64::INFINITY),
        &leechers,
    )
}

impl RunReport {
    pub fn new(
        plan: &Plan,
        tool: &str,
        congestion: String,
        hosts: Vec<HostReport>,
        samples: Vec<Sample>,
        events: Vec<(f64, String)>,
    ) -> Self {
        let bound = plan_bound(plan);
        let asked: Vec<&HostReport> = hosts
            .iter()
            .filter(|h| h.outcome != DownloadOutcome::NotAsked)
            .collect();
        let done: Vec<&HostReport> = asked
            .iter()
            .copied()
            .filter(|h| h.outcome == DownloadOutcome::Done)
            .collect();
        // a run where a remaining host did not finish has no finish time
        let all_remaining_done = asked
            .iter()
            .all(|h| matches!(h.outcome, DownloadOutcome::Done | DownloadOutcome::Left));
        let last_finish_s = if all_remaining_done && !done.is_empty() {
            done.iter().filter_map(|h| h.completion_s).reduce(f64::max)
        } else {
            None
        };
        let ratio_to_bound = match (last_finish_s, bound) {
            (Some(t), Some(b)) if b.seconds > 0.0 => Some(t / b.seconds),
            _ => None,
        };
        Self {
            scenario: plan.name.clone(),
            tool: tool.to_string(),
            congestion,
            file_bytes: plan.file_bytes,
            bound,
            last_finish_s,
            ratio_to_bound,
            downloads_done: done.len(),
            downloads_asked: asked.len(),
            hosts,
            samples,
            events,
        }
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} / {}: {}/{} downloads done",
            self.scenario, self.tool, self.downloads_done, self.downloads_asked
        );
        if let Some(t) = self.last_finish_s {
            let _ = write!(s, ", last finished at {t:.2} s");
        }
        if let Some(b) = self.bound {
            let _ = write!(s, "; Kumar–Ross bound {:.2} s", b.seconds);
        }
        if let Some(r) = self.ratio_to_bound {
            let _ = write!(s, "; ratio {r:.3}");
        }
        if let Some(short) = self.shortfall_groups() {
            let groups = self.file_bytes.div_ceil(spore_core::GROUP_SIZE);
            let _ = write!(
                s,
                "; the remaining downloads stopped {short} of {groups} chunk groups short at best"
            );
        }
        s
    }

    /// For a run where downloads timed out: how many 16 KiB chunk groups the
    /// one that got furthest still lacked. Remaining peers trade what they
    /// hold until the timeout, so this is about what no remaining peer had:
    /// what the departures took with them. `None` when none timed out or
    /// none reported its progress.
    pub fn shortfall_groups(&self) -> Option<u64> {
        let best = self
            .hosts
            .iter()
            .filter(|h| h.outcome == DownloadOutcome::TimedOut)
            .filter_map(|h| h.verified_bytes)
            .max()?;
        Some(
            self.file_bytes
                .saturating_sub(best)
                .div_ceil(spore_core::GROUP_SIZE),
        )
    }

    pub fn markdown(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "### {} ({}), {:.0} MiB\n",
            self.scenario,
            self.tool,
            mib(self.file_bytes)
        );
        let _ = writeln!(
            s,
            "| host | up / down cap (Mbit/s) | outcome | completion (s) | MiB up | MiB down | CPU (s) | peak RSS (MiB) | emulator CPU (s) |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        let cap = |c: Option<f64>| c.map_or("∞".to_string(), |c| format!("{c:.0}"));
        for h in &self.hosts {
            let outcome = match &h.outcome {
                DownloadOutcome::Failed(e) => format!("failed: {}", e.replace('|', "/")),
                o => serde_json::to_value(o)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            };
            let _ = writeln!(
                s,
                "| {} | {} / {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                h.name,
                cap(h.up_mbit),
                cap(h.down_mbit),
                outcome,
                h.completion_s.map_or("–".into(), |t| format!("{t:.2}")),
                mib(h.bytes_up),
                mib(h.bytes_down),
                h.cpu_s,
                h.peak_rss_mib,
                h.emulator_cpu_s
            );
        }
        s.push('\n');
        if let Some(b) = self.bound {
            let _ = writeln!(
                s,
                "Kumar–Ross bound: **{:.2} s** = max(F/u_s {:.2} s, F/d_min {:.2} s, N·F/(u_s+Σu_i) {:.2} s)",
                b.seconds, b.seed_term, b.download_term, b.aggregate_term
            );
        }
        let _ = writeln!(s, "TCP congestion control: {}", self.congestion);
        match (self.last_finish_s, self.ratio_to_bound) {
            (Some(t), Some(r)) => {
                let _ = writeln!(
                    s,
                    "Last finisher: **{t:.2} s**, ratio to the bound **{r:.3}**"
                );
            }
            (Some(t), None) => {
                let _ = writeln!(s, "Last finisher: **{t:.2} s**");
            }
            _ => {
                let _ = writeln!(
                    s,
                    "Not every remaining download finished ({}/{} done).",
                    self.downloads_done, self.downloads_asked
                );
            }
        }
        for h in self
            .hosts
            .iter()
            .filter(|h| h.outcome == DownloadOutcome::Done)
        {
            if let Some(t) = h.completion_s.filter(|t| *t > 0.0) {
                let _ = writeln!(
                    s,
                    "- {}: goodput {:.1} Mbit/s; received {:.1}% more than F on the wire (IP/TCP headers, protocol, duplicates)",
                    h.name,
                    self.file_bytes as f64 * 8.0 / 1e6 / t,
                    (h.bytes_down as f64 / self.file_bytes.max(1) as f64 - 1.0) * 100.0
                );
            }
        }
        let with_sources: Vec<&HostReport> = self
            .hosts
            .iter()
            .filter(|h| !h.sources.is_empty())
            .collect();
        if !with_sources.is_empty() {
            s.push('\n');
            for h in &with_sources {
                s.push_str(&self.source_summary(h));
            }
            let _ = writeln!(
                s,
                "\n| downloader | source | useful MiB | duplicate MiB | wasted MiB | bad groups | banned |\n|---|---|---|---|---|---|---|"
            );
            for h in with_sources {
                for src in &h.sources {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {:.1} | {:.2} | {:.2} | {} | {} |",
                        h.name,
                        src.host,
                        mib(src.useful_bytes),
                        mib(src.duplicate_bytes),
                        mib(src.wasted_bytes),
                        src.bad_groups,
                        src.banned
                    );
                }
            }
        }
        s
    }

    /// One downloader's duplicates, waste and bans, from its node's
    /// per-source counters (DESIGN.md §6: duplicates ≤ 1%, waste ≤ 10%,
    /// liars banned within 3 bad groups).
    fn source_summary(&self, h: &HostReport) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let pct = |b: u64| b as f64 * 100.0 / self.file_bytes.max(1) as f64;
        let duplicate: u64 = h.sources.iter().map(|s| s.duplicate_bytes).sum();
        let wasted: u64 = h.sources.iter().map(|s| s.wasted_bytes).sum();
        let mut line = format!(
            "- {}: duplicate bytes {:.2} MiB ({:.2}% of F), wasted bytes {:.2} MiB ({:.2}% of F)",
            h.name,
            mib(duplicate),
            pct(duplicate),
            mib(wasted),
            pct(wasted)
        );
        let banned: Vec<String> = h
            .sources
            .iter()
            .filter(|s| s.banned)
            .map(|s| format!("{} after {}", s.host, s.bad_groups))
            .collect();
        if !banned.is_empty() {
            let _ = write!(line, "; banned (strikes): {}", banned.join(", "));
        }
        let unbanned_liars: Vec<&str> = h
            .sources
            .iter()
            .filter(|s| !s.banned && s.bad_groups > 0)
            .map(|s| s.host.as_str())
            .collect();
        if !unbanned_liars.is_empty() {
            let _ = write!(
                line,
                "; sent bad groups, not banned: {}",
                unbanned_liars.join(", ")
            );
        }
        line.push('\n');
        line
    }

    /// Download rate of each host between samples, in Mbit/s: `(host, [(t, rate)])`.
    pub fn throughput(&self) -> Vec<(usize, Vec<(f64, f64)>)> {
        let mut out = Vec::new();
        for (i, h) in self.hosts.iter().enumerate() {
            if h.outcome == DownloadOutcome::NotAsked {
                continue;
            }
            let pts: Vec<&Sample> = self.samples.iter().filter(|s| s.host == i).collect();
            let series = pts
                .windows(2)
                .filter(|w| w[1].t > w[0].t)
                .map(|w| {
                    (
                        w[1].t,
                        (w[1].down_bytes.saturating_sub(w[0].down_bytes)) as f64 * 8.0
                            / 1e6
                            / (w[1].t - w[0].t),
                    )
                })
                .collect();
            out.push((i, series));
        }
        out
    }

    /// Sorted completion times with the fraction done: the CDF's steps.
    pub fn completion_cdf(&self) -> Vec<(f64, f64)> {
        let mut t: Vec<f64> = self
            .hosts
            .iter()
            .filter_map(|h| {
                h.completion_s
                    .filter(|_| h.outcome == DownloadOutcome::Done)
            })
            .collect();
        t.sort_by(f64::total_cmp);
        let n = self.downloads_asked.max(1) as f64;
        t.iter()
            .enumerate()
            .map(|(i, t)| (*t, (i + 1) as f64 / n))
            .collect()
    }

    pub fn write_all(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let stem = format!("{}-{}", self.scenario, self.tool);
        std::fs::write(
            dir.join(format!("{stem}.json")),
            serde_json::to_string_pretty(self)?,
        )?;
        std::fs::write(dir.join(format!("{stem}.md")), self.markdown())?;
        crate::plot::completion_cdf(&[self], &dir.join(format!("{stem}-cdf.svg")))?;
        crate::plot::throughput(self, &dir.join(format!("{stem}-throughput.svg")))?;
        Ok(())
    }
}

/// Repeated runs of one client (one build of it): how many ended with every
/// remaining download done, and the ratio to the bound over those. One run
/// of a churn scenario says little: whether a group is lost depends on
/// timing, so its pass rate is the measure (`run --runs N`).
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    pub label: String,
    pub runs: usize,
    /// Runs where every remaining download finished.
    pub finished: usize,
    /// Ratio to the bound of each run that finished (when it has a bound).
    pub ratios: Vec<f64>,
    /// [`RunReport::shortfall_groups`] of each run that did not.
    pub shortfalls: Vec<u64>,
}

impl Tally {
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            runs: 0,
            finished: 0,
            ratios: Vec::new(),
            shortfalls: Vec::new(),
        }
    }

    pub fn add(&mut self, report: &RunReport) {
        self.runs += 1;
        if report.last_finish_s.is_some() {
            self.finished += 1;
            self.ratios.extend(report.ratio_to_bound);
        } else {
            self.shortfalls.extend(report.shortfall_groups());
        }
    }

    /// One line: the pass count, the median, lowest and highest ratio, and
    /// how far short the failed runs stopped.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: every remaining download finished in {} of {} runs",
            self.label, self.finished, self.runs
        );
        let mut sorted = self.ratios.clone();
        sorted.sort_by(f64::total_cmp);
        if let (Some(lo), Some(hi)) = (sorted.first(), sorted.last()) {
            let mid = sorted.len() / 2;
            let median = if sorted.len() % 2 == 1 {
                sorted[mid]
            } else {
                (sorted[mid - 1] + sorted[mid]) / 2.0
            };
            let _ = write!(
                s,
                "; ratio to the bound in those: median {median:.3}, {lo:.3} to {hi:.3}"
            );
        }
        if !self.shortfalls.is_empty() {
            let mut short = self.shortfalls.clone();
            short.sort_unstable();
            let list: Vec<String> = short.iter().map(u64::to_string).collect();
            let _ = write!(
                s,
                "; the others stopped short by (chunk groups, at best): {}",
                list.join(", ")
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn plan() -> Plan {
        Scenario::parse(
            r#"
name = "t"
[file]
size_mib = 1
[link]
up_mbit = 8
down_mbit = 80
[[hosts]]
name = "s"
up_mbit = 16
[[hosts]]
name = "l"
count = 2
[[events]]
at_s = 0
hosts = ["s"]
do = "share"
[[events]]
at_s = 0
hosts = ["l*"]
do = "get"
"#,
        )
        .unwrap()
        .plan()
        .unwrap()
    }

    fn host(name: &str, outcome: DownloadOutcome, t: Option<f64>) -> HostReport {
        HostReport {
            name: name.into(),
            ip: "10.77.0.1".into(),
            up_mbit: Some(8.0),
            down_mbit: None,
            outcome,
            completion_s: t,
            spore_seconds: None,
            attempts: 1,
            bytes_up: 1 << 20,
            bytes_down: 2 << 20,
            cpu_s: 0.5,
            peak_rss_mib: 20.0,
            emulator_cpu_s: 0.0,
            verified_bytes: None,
            sources: vec![
                SourceStats {
                    host: "s".into(),
                    useful_bytes: 1 << 20,
                    duplicate_bytes: 16 << 10,
                    wasted_bytes: 0,
                    bad_groups: 0,
                    banned: false,
                },
                SourceStats {
                    host: "liar".into(),
                    useful_bytes: 0,
                    duplicate_bytes: 0,
                    wasted_bytes: 96 << 10,
                    bad_groups: 3,
                    banned: true,
                },
            ],
        }
    }

    #[test]
    fn the_report_computes_the_ratio_to_the_bound() {
        let hosts = vec![
            host("s", DownloadOutcome::NotAsked, None),
            host("l1", DownloadOutcome::Done, Some(0.5)),
            host("l2", DownloadOutcome::Done, Some(1.2)),
        ];
        let samples = vec![
            Sample {
                t: 0.0,
                host: 1,
                up_bytes: 0,
                down_bytes: 0,
                cpu_s: 0.0,
            },
            Sample {
                t: 0.5,
                host: 1,
                up_bytes: 0,
                down_bytes: 1_000_000,
                cpu_s: 0.1,
            },
        ];
        let r = RunReport::new(&plan(), "spore", "bbr".into(), hosts, samples, vec![]);
        // F = 8 Mibit; seed 16 Mbit/s, two leechers at 8 up: 2F/(32 Mbit/s)
        let b = r.bound.unwrap();
        let f = 8.0 * 1048576.0;
        assert!((b.seconds - 2.0 * f / 32e6).abs() < 1e-9);
        assert_eq!(r.last_finish_s, Some(1.2));
        assert!((r.ratio_to_bound.unwrap() - 1.2 / b.seconds).abs() < 1e-9);
        assert_eq!(r.completion_cdf(), vec![(0.5, 0.5), (1.2, 1.0)]);
        let tp = r.throughput();
        assert_eq!(tp.len(), 2);
        assert_eq!(tp[0].1, vec![(0.5, 16.0)]);
        let md = r.markdown();
        assert!(
            md.contains("| l2 | 8 / ∞ | done | 1.20 | 1.0 | 2.0 | 0.5 | 20.0 | 0.0 |"),
            "{md}"
        );
        assert!(md.contains("ratio to the bound"));
        // 1 MiB in 1.2 s; 2 MiB on the wire for a 1 MiB file
        assert!(
            md.contains("- l2: goodput 7.0 Mbit/s; received 100.0% more than F"),
            "{md}"
        );
        assert!(
            md.contains("| l1 | s | 1.0 | 0.02 | 0.00 | 0 | false |"),
            "{md}"
        );
        assert!(
            md.contains("| l1 | liar | 0.0 | 0.00 | 0.09 | 3 | true |"),
            "{md}"
        );
        // 16 KiB of duplicates and 96 KiB wasted of a 1 MiB file
        assert!(
            md.contains("- l1: duplicate bytes 0.02 MiB (1.56% of F), wasted bytes 0.09 MiB (9.38% of F); banned (strikes): liar after 3"),
            "{md}"
        );
        assert!(r.summary().contains("2/2 downloads done"));
    }

    #[test]
    fn a_failed_run_says_how_far_short_the_best_remaining_download_stopped() {
        let mut l1 = host("l1", DownloadOutcome::TimedOut, None);
        l1.verified_bytes = Some(1 << 19);
        let mut l2 = host("l2", DownloadOutcome::TimedOut, None);
        // three whole groups and 100 bytes of a fourth missing from 1 MiB
        l2.verified_bytes = Some((1 << 20) - 3 * 16384 - 100);
        let hosts = vec![host("s", DownloadOutcome::NotAsked, None), l1, l2];
        let failed = RunReport::new(&plan(), "spore", "bbr".into(), hosts, vec![], vec![]);
        assert_eq!(failed.shortfall_groups(), Some(4));
        assert!(
            failed
                .summary()
                .contains("stopped 4 of 64 chunk groups short at best"),
            "{}",
            failed.summary()
        );

        let hosts = vec![
            host("s", DownloadOutcome::NotAsked, None),
            host("l1", DownloadOutcome::Done, Some(0.5)),
            host("l2", DownloadOutcome::Done, Some(0.7)),
        ];
        let passed = RunReport::new(&plan(), "spore", "bbr".into(), hosts, vec![], vec![]);
        assert_eq!(passed.shortfall_groups(), None);
        let mut tally = Tally::new("spore");
        tally.add(&failed);
        tally.add(&passed);
        let line = tally.summary();
        assert!(line.contains("finished in 1 of 2 runs"), "{line}");
        assert!(
            line.contains("stopped short by (chunk groups, at best): 4"),
            "{line}"
        );
    }

    #[test]
    fn an_unfinished_download_leaves_no_finish_time() {
        let hosts = vec![
            host("s", DownloadOutcome::NotAsked, None),
            host("l1", DownloadOutcome::Done, Some(0.5)),
            host("l2", DownloadOutcome::TimedOut, None),
        ];
        let r = RunReport::new(&plan(), "spore", "bbr".into(), hosts, vec![], vec![]);
        assert_eq!(r.last_finish_s, None);
        assert_eq!(r.ratio_to_bound, None);
        assert!(
            r.markdown()
                .contains("Not every remaining download finished (1/2 done)")
        );
    }

    #[test]
    fn hosts_that_left_do_not_hold_up_the_finish() {
        let hosts = vec![
            host("s", DownloadOutcome::NotAsked, None),
            host("l1", DownloadOutcome::Done, Some(0.5)),
            host("l2", DownloadOutcome::Left, None),
        ];
        let r = RunReport::new(&plan(), "spore", "bbr".into(), hosts, vec![], vec![]);
        assert_eq!(r.last_finish_s, Some(0.5));
    }

    #[test]
    fn reports_are_written_with_plots() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec![
            host("s", DownloadOutcome::NotAsked, None),
            host("l1", DownloadOutcome::Done, Some(0.5)),
            host("l2", DownloadOutcome::Done, Some(1.0)),
        ];
        let samples = (0..6)
            .flat_map(|k| {
                (0..3).map(move |h| Sample {
                    t: k as f64 * 0.5,
                    host: h,
                    up_bytes: 0,
                    down_bytes: k * 100_000,
                    cpu_s: 0.0,
                })
            })
            .collect();
        let r = RunReport::new(&plan(), "spore", "bbr".into(), hosts, samples, vec![]);
        r.write_all(dir.path()).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("t-spore-cdf.svg")).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("polyline") || svg.contains("path"),
            "{svg}"
        );
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("t-spore.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["downloads_done"], 2);
        assert!(dir.path().join("t-spore-throughput.svg").exists());
    }

    #[test]
    fn a_tally_counts_finished_runs_and_their_ratios() {
        let done = |l2: Option<f64>| {
            let hosts = vec![
                host("s", DownloadOutcome::NotAsked, None),
                host("l", DownloadOutcome::Done, Some(0.5)),
                match l2 {
                    Some(t) => host("l2", DownloadOutcome::Done, Some(t)),
                    None => host("l2", DownloadOutcome::TimedOut, None),
                },
            ];
            RunReport::new(&plan(), "spore", "bbr".into(), hosts, vec![], vec![])
        };
        let mut t = Tally::new("spore (a)");
        assert_eq!(
            t.summary(),
            "spore (a): every remaining download finished in 0 of 0 runs"
        );
        for l2 in [Some(1.2), None, Some(1.0), Some(1.1)] {
            t.add(&done(l2));
        }
        assert_eq!((t.runs, t.finished, t.ratios.len()), (4, 3, 3));
        let bound = done(Some(1.0)).bound.unwrap().seconds;
        let summary = t.summary();
        assert!(
            summary.starts_with("spore (a): every remaining download finished in 3 of 4 runs"),
            "{summary}"
        );
        assert!(
            summary.contains(&format!("median {:.3}", 1.1 / bound)),
            "{summary}"
        );
        assert!(
            summary.ends_with(&format!("{:.3} to {:.3}", 1.0 / bound, 1.2 / bound)),
            "{summary}"
        );
    }
}
