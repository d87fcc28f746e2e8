//! Repeated runs of one scenario. Each round runs every client in turn (each
//! spore build, then aria2), so that builds compared with each other share
//! the machine's moods; a [`Tally`] per client counts the runs where every
//! remaining download finished. One run of a churn scenario says little:
//! whether a group is lost depends on timing, so its pass rate is the measure.
//!
//! With `vary_seed`, round K plans the scenario with seed + K − 1: other
//! leave times, other departing hosts, another file. Without it every round
//! replays the scenario's one schedule.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::report::{RunReport, Tally};
use crate::runner::{RunOptions, run_plan};
use crate::scenario::Scenario;

/// What runs the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKind {
    Spore(PathBuf),
    Aria2,
}

/// A client and the label its reports carry (file names, plots, summaries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub label: String,
    pub kind: ClientKind,
}

impl Client {
    /// Each spore build (labelled `spore` when alone, else `K-FILENAME`),
    /// then aria2 if asked for.
    pub fn list(builds: &[PathBuf], aria2: bool) -> Vec<Client> {
        let mut clients: Vec<Client> = builds
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let label = if builds.len() == 1 {
                    "spore".to_string()
                } else {
                    let name = b
                        .file_name()
                        .map_or_else(|| "spore".into(), |n| n.to_string_lossy().into_owned());
                    format!("{}-{name}", i + 1)
                };
                Client {
                    label,
                    kind: ClientKind::Spore(b.clone()),
                }
            })
            .collect();
        if aria2 {
            clients.push(Client {
                label: "aria2".into(),
                kind: ClientKind::Aria2,
            });
        }
        clients
    }

    fn tally_label(&self) -> String {
        match &self.kind {
            ClientKind::Spore(b) => format!("spore ({})", b.display()),
            ClientKind::Aria2 => self.label.clone(),
        }
    }
}

/// How many rounds, and where their reports go.
#[derive(Debug, Clone)]
pub struct Rounds {
    pub runs: u32,
    pub vary_seed: bool,
    /// One round writes its reports here; several write each run's to
    /// `out/LABEL/run-K` and the summary to `out/NAME-runs.txt`.
    pub out: PathBuf,
}

impl Rounds {
    /// Where a run's reports and its working directory go, below `out` and
    /// below the working root.
    pub fn run_dir(&self, label: &str, round: u32) -> PathBuf {
        if self.runs == 1 {
            PathBuf::from(label)
        } else {
            Path::new(label).join(format!("run-{round}"))
        }
    }

    /// The scenario's seed in `round` (counted from 1).
    pub fn seed(&self, base: u64, round: u32) -> u64 {
        if self.vary_seed {
            base.wrapping_add(u64::from(round - 1))
        } else {
            base
        }
    }
}

/// Runs `scenario` `rounds.runs` times with every client, writes the reports
/// and prints a line per run (and, for one round, each report's table); with
/// several rounds, a summary line per client too. `options.spore` is ignored:
/// each client brings its own build. Returns one tally per client.
pub fn run_rounds(
    scenario: &Scenario,
    clients: &[Client],
    rounds: &Rounds,
    options: &RunOptions,
    run_id: &str,
) -> Result<Vec<Tally>> {
    let mut tallies: Vec<Tally> = clients
        .iter()
        .map(|c| Tally::new(c.tally_label()))
        .collect();
    let name = &scenario.name;
    for round in 1..=rounds.runs {
        let plan = Scenario {
            seed: rounds.seed(scenario.seed, round),
            ..scenario.clone()
        }
        .plan()?;
        let mut reports: Vec<RunReport> = Vec::new();
        for (client, tally) in clients.iter().zip(&mut tallies) {
            let sub = rounds.run_dir(&client.label, round);
            let opts = RunOptions {
                spore: match &client.kind {
                    ClientKind::Spore(b) => b.clone(),
                    ClientKind::Aria2 => options.spore.clone(),
                },
                work: options.work.join(&sub),
                ..options.clone()
            };
            let mut report = match client.kind {
                ClientKind::Spore(_) => run_plan(&plan, &opts, run_id)?,
                ClientKind::Aria2 => crate::bittorrent::run_aria2(&plan, &opts, run_id)?,
            };
            report.tool.clone_from(&client.label);
            if rounds.runs == 1 {
                report.write_all(&rounds.out)?;
                println!("{}", report.summary());
            } else {
                report.write_all(&rounds.out.join(&sub))?;
                println!(
                    "[run {round}/{}] {}: {}",
                    rounds.runs,
                    client.label,
                    report.summary()
                );
            }
            tally.add(&report);
            if !options.keep {
                let _ = std::fs::remove_dir_all(&opts.work);
            }
            reports.push(report);
        }
        if rounds.runs == 1 {
            if reports.len() > 1 {
                let refs: Vec<&RunReport> = reports.iter().collect();
                crate::plot::completion_cdf(&refs, &rounds.out.join(format!("{name}-cdf.svg")))?;
            }
            for r in &reports {
                println!("\n{}", r.markdown());
            }
        }
    }
    if rounds.runs > 1 {
        let lines: Vec<String> = tallies.iter().map(Tally::summary).collect();
        let seeds = if rounds.vary_seed {
            format!(
                ", seeds {} to {}",
                scenario.seed,
                rounds.seed(scenario.seed, rounds.runs)
            )
        } else {
            String::new()
        };
        println!(
            "\n{name}: {} rounds{seeds}\n{}",
            rounds.runs,
            lines.join("\n")
        );
        std::fs::write(
            rounds.out.join(format!("{name}-runs.txt")),
            lines.join("\n") + "\n",
        )?;
    }
    Ok(tallies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_are_numbered_only_when_compared() {
        let one = Client::list(&[PathBuf::from("/x/spore")], true);
        assert_eq!(
            one.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(),
            ["spore", "aria2"]
        );
        let two = Client::list(
            &[PathBuf::from("/a/spore"), PathBuf::from("/b/spore-new")],
            false,
        );
        assert_eq!(
            two.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(),
            ["1-spore", "2-spore-new"]
        );
        assert_eq!(
            two[1].kind,
            ClientKind::Spore(PathBuf::from("/b/spore-new"))
        );
    }

    #[test]
    fn one_round_writes_in_place_and_several_per_run() {
        let mut r = Rounds {
            runs: 1,
            vary_seed: false,
            out: PathBuf::from("out"),
        };
        assert_eq!(r.run_dir("spore", 1), PathBuf::from("spore"));
        r.runs = 3;
        assert_eq!(r.run_dir("1-spore", 2), PathBuf::from("1-spore/run-2"));
    }

    #[test]
    fn seeds_vary_by_round_only_when_asked() {
        let mut r = Rounds {
            runs: 5,
            vary_seed: false,
            out: PathBuf::from("out"),
        };
        assert_eq!((1..=5).map(|k| r.seed(7, k)).collect::<Vec<_>>(), [7; 5]);
        r.vary_seed = true;
        assert_eq!(
            (1..=5).map(|k| r.seed(7, k)).collect::<Vec<_>>(),
            [7, 8, 9, 10, 11]
        );
        assert_eq!(r.seed(u64::MAX, 2), 0);
    }

    #[test]
    fn another_seed_plans_other_departures() {
        let text = |seed: u64| {
            format!(
                r#"
name = "c"
seed = {seed}
[file]
size_mib = 1
[link]
up_mbit = 8
[[hosts]]
name = "seed"
[[hosts]]
name = "leecher"
count = 10
[[events]]
at_s = 0
hosts = ["*"]
do = "start"
[[events]]
at_random_s = [1, 20]
hosts = ["leecher*"]
fraction = 0.3
do = "kill"
"#
            )
        };
        let departures = |seed: u64| {
            let plan = Scenario::parse(&text(seed)).unwrap().plan().unwrap();
            format!("{:?}", plan.events)
        };
        assert_eq!(departures(1), departures(1));
        assert_ne!(departures(1), departures(2));
    }
}
