//! Scenarios: a declarative TOML file of hosts, links and a timeline, checked
//! and expanded into a [`Plan`] (pure: no I/O beyond reading the text).
//!
//! ```toml
//! name = "swarm-smoke"
//! seed = 1
//! timeout_s = 300
//! congestion = "bbr"     # TCP congestion control of every host (unset: the machine's)
//! [file]
//! size_mib = 256
//! [link]                 # every host's defaults
//! up_mbit = 100          # upload cap (tc on the host's veth)
//! down_mbit = 1000       # download cap (tc on the bridge side)
//! delay_ms = 10          # one-way delay on the host's egress: RTT = sum of both hosts'
//! jitter_ms = 0
//! loss = 0.0
//! [[hosts]]
//! name = "seed"
//! up_mbit = 200
//! [[hosts]]
//! name = "leecher"
//! count = 8              # leecher1 … leecher8
//! [[events]]
//! at_s = 0
//! hosts = ["*"]
//! do = "start"
//! [[events]]
//! at_s = 1
//! hosts = ["seed"]
//! do = "share"
//! [[events]]
//! at_s = 2
//! hosts = ["leecher*"]
//! do = "get"
//! ```
//!
//! An event fires at `at_s` seconds, at a random time in `at_random_s = [lo, hi]`
//! (one draw per host, from the scenario's seed), or `when` what a host's
//! transport sent or received (its link's bytes less each packet's headers,
//! checked every 20 ms) passes a multiple of the file size:
//! `when = { host = "seed", uploaded = 1.1 }` or
//! `when = { host = "dl", downloaded = 0.5 }`. `fraction = 0.3` picks that share
//! of the matched hosts at random (seeded). Actions: `start` (`lie = true`
//! starts the node with the test-only `--debug-lie-uploads`: it corrupts
//! every chunk group it uploads, also after a `restart`), `share` (`copy =
//! true` stores a copy), `get`, `kill`, `restart`, `corrupt` (`groups = N`
//! 16 KiB groups of the host's stored copy get a flipped byte, which the
//! node refuses to serve rather than sends), `set_link` (`up_mbit`/`down_mbit`).

use std::net::Ipv4Addr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{emulator::LinkShape, net::HostConfig};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("reading the scenario: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, ScenarioError> {
    Err(ScenarioError::Invalid(msg.into()))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// The TCP congestion control of every host (`bbr`, `cubic`, …); unset,
    /// the hosts use the machine's, which the report names either way.
    #[serde(default)]
    pub congestion: Option<String>,
    pub file: FileSpec,
    #[serde(default)]
    pub link: LinkSpec,
    pub hosts: Vec<HostGroup>,
    pub events: Vec<Event>,
}

fn default_seed() -> u64 {
    1
}
fn default_timeout() -> f64 {
    600.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub size_mib: f64,
}

/// A link; every field may be left to the scenario's `[link]` defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub up_mbit: Option<f64>,
    pub down_mbit: Option<f64>,
    pub delay_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
    pub loss: Option<f64>,
    pub reorder: Option<bool>,
}

impl LinkSpec {
    fn or(&self, defaults: &LinkSpec) -> LinkSpec {
        LinkSpec {
            up_mbit: self.up_mbit.or(defaults.up_mbit),
            down_mbit: self.down_mbit.or(defaults.down_mbit),
            delay_ms: self.delay_ms.or(defaults.delay_ms),
            jitter_ms: self.jitter_ms.or(defaults.jitter_ms),
            loss: self.loss.or(defaults.loss),
            reorder: self.reorder.or(defaults.reorder),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostGroup {
    pub name: String,
    pub count: Option<u32>,
    #[serde(flatten)]
    pub link: LinkSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Start,
    Share,
    Get,
    Kill,
    Restart,
    Corrupt,
    SetLink,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub at_s: Option<f64>,
    pub at_random_s: Option<[f64; 2]>,
    pub when: Option<Condition>,
    pub hosts: Vec<String>,
    pub fraction: Option<f64>,
    #[serde(rename = "do")]
    pub action: ActionKind,
    pub copy: Option<bool>,
    pub lie: Option<bool>,
    pub groups: Option<u32>,
    pub up_mbit: Option<f64>,
    pub down_mbit: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub host: String,
    /// Bytes the host's transport sent (its link's bytes less each
    /// packet's headers, `net::LinkCounters::up_payload`), as a multiple of
    /// the file size.
    pub uploaded: Option<f64>,
    /// Bytes the host's transport received, as a multiple of the file size.
    pub downloaded: Option<f64>,
}

/// One host, ready to build.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostPlan {
    pub name: String,
    pub ip: Ipv4Addr,
    /// Upload cap in bits per second; `None` is uncapped.
    pub up_bps: Option<f64>,
    pub down_bps: Option<f64>,
    pub shape: LinkShape,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Trigger {
    At(f64),
    When {
        host: usize,
        uploaded_bytes: Option<u64>,
        downloaded_bytes: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Action {
    Start {
        /// With `--debug-lie-uploads`: a source that sends bad data.
        lie: bool,
    },
    Share {
        copy: bool,
    },
    Get,
    Kill,
    Restart,
    Corrupt {
        groups: u32,
    },
    SetLink {
        up_bps: Option<f64>,
        down_bps: Option<f64>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedEvent {
    pub trigger: Trigger,
    pub hosts: Vec<usize>,
    pub action: Action,
}

/// A checked scenario with every host named and every event resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub timeout: Duration,
    pub congestion: Option<String>,
    pub file_bytes: u64,
    pub hosts: Vec<HostPlan>,
    pub events: Vec<PlannedEvent>,
}

impl Plan {
    /// What the testbed builds for this plan's hosts.
    pub fn host_configs(&self) -> Vec<HostConfig> {
        self.hosts
            .iter()
            .map(|h| HostConfig {
                name: h.name.clone(),
                ip: h.ip,
                up_bps: h.up_bps,
                down_bps: h.down_bps,
                shape: h.shape,
                congestion: self.congestion.clone(),
            })
            .collect()
    }
}

/// The most hosts one testbed builds (addresses 10.77.0.1 – 10.77.0.250).
pub const MAX_HOSTS: usize = 250;

impl Scenario {
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        Ok(toml::from_str(text)?)
    }

    /// Checks everything and expands groups, patterns and random draws.
    pub fn plan(&self) -> Result<Plan, ScenarioError> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return invalid("`name` must be non-empty letters, digits, '-' or '_'");
        }
        if !(self.file.size_mib > 0.0 && self.file.size_mib <= 64.0 * 1024.0) {
            return invalid("`file.size_mib` must be in (0, 65536]");
        }
        if !(self.timeout_s > 0.0 && self.timeout_s.is_finite()) {
            return invalid("`timeout_s` must be positive");
        }
        let file_bytes = (self.file.size_mib * 1024.0 * 1024.0).round() as u64;
        let mut hosts = Vec::new();
        for group in &self.hosts {
            if group.name.is_empty()
                || group.name.len() > 24
                || !group
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return invalid(format!(
                    "host name {:?}: 1–24 letters, digits, '-' or '_'",
                    group.name
                ));
            }
            let link = group.link.or(&self.link);
            let names: Vec<String> = match group.count {
                None => vec![group.name.clone()],
                Some(0) => return invalid(format!("host group {:?} has count 0", group.name)),
                Some(n) => (1..=n).map(|i| format!("{}{i}", group.name)).collect(),
            };
            for name in names {
                if hosts.iter().any(|h: &HostPlan| h.name == name) {
                    return invalid(format!("two hosts are named {name:?}"));
                }
                if hosts.len() >= MAX_HOSTS {
                    return invalid(format!("at most {MAX_HOSTS} hosts"));
                }
                let index = hosts.len() as u8 + 1;
                hosts.push(HostPlan {
                    name,
                    ip: Ipv4Addr::new(10, 77, 0, index),
                    up_bps: rate(link.up_mbit, "up_mbit")?,
                    down_bps: rate(link.down_mbit, "down_mbit")?,
                    shape: shape(&link)?,
                });
            }
        }
        if hosts.is_empty() {
            return invalid("no hosts");
        }
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut events = Vec::new();
        for (i, e) in self.events.iter().enumerate() {
            let what = format!("event {} ({:?})", i + 1, e.action);
            let mut matched = match_hosts(&hosts, &e.hosts)
                .map_err(|m| ScenarioError::Invalid(format!("{what}: {m}")))?;
            if let Some(f) = e.fraction {
                if !(f > 0.0 && f <= 1.0) {
                    return invalid(format!("{what}: `fraction` must be in (0, 1]"));
                }
                matched.shuffle(&mut rng);
                let keep = ((matched.len() as f64 * f).round() as usize).max(1);
                matched.truncate(keep);
                matched.sort_unstable();
            }
            let action = action(e).map_err(|m| ScenarioError::Invalid(format!("{what}: {m}")))?;
            let triggers = [e.at_s.is_some(), e.at_random_s.is_some(), e.when.is_some()];
            if triggers.iter().filter(|t| **t).count() != 1 {
                return invalid(format!(
                    "{what}: give exactly one of `at_s`, `at_random_s`, `when`"
                ));
            }
            if let Some(at) = e.at_s {
                if !(at >= 0.0 && at.is_finite()) {
                    return invalid(format!("{what}: `at_s` must be ≥ 0"));
                }
                events.push(PlannedEvent {
                    trigger: Trigger::At(at),
                    hosts: matched,
                    action,
                });
            } else if let Some([lo, hi]) = e.at_random_s {
                if !(lo >= 0.0 && hi >= lo && hi.is_finite()) {
                    return invalid(format!(
                        "{what}: `at_random_s` must be [lo, hi] with 0 ≤ lo ≤ hi"
                    ));
                }
                for h in matched {
                    let at = if hi > lo {
                        rng.random_range(lo..hi)
                    } else {
                        lo
                    };
                    events.push(PlannedEvent {
                        trigger: Trigger::At(at),
                        hosts: vec![h],
                        action: action.clone(),
                    });
                }
            } else if let Some(c) = &e.when {
                let host = hosts.iter().position(|h| h.name == c.host).ok_or_else(|| {
                    ScenarioError::Invalid(format!(
                        "{what}: `when.host` {:?} is not a host",
                        c.host
                    ))
                })?;
                let bytes = |r: Option<f64>| -> Result<Option<u64>, ScenarioError> {
                    match r {
                        None => Ok(None),
                        Some(r) if r > 0.0 && r.is_finite() => {
                            Ok(Some((r * file_bytes as f64) as u64))
                        }
                        Some(_) => invalid(format!("{what}: `when` ratios must be positive")),
                    }
                };
                let (up, down) = (bytes(c.uploaded)?, bytes(c.downloaded)?);
                if up.is_some() == down.is_some() {
                    return invalid(format!(
                        "{what}: `when` needs exactly one of `uploaded`, `downloaded`"
                    ));
                }
                events.push(PlannedEvent {
                    trigger: Trigger::When {
                        host,
                        uploaded_bytes: up,
                        downloaded_bytes: down,
                    },
                    hosts: matched,
                    action,
                });
            }
        }
        if events.iter().any(|e| e.action == Action::Get)
            && !events
                .iter()
                .any(|e| matches!(e.action, Action::Share { .. }))
        {
            return invalid("a `get` needs a `share` to fetch from");
        }
        Ok(Plan {
            name: self.name.clone(),
            description: self.description.clone(),
            seed: self.seed,
            timeout: Duration::from_secs_f64(self.timeout_s),
            congestion: self.congestion.clone(),
            file_bytes,
            hosts,
            events,
        })
    }
}

fn rate(mbit: Option<f64>, what: &str) -> Result<Option<f64>, ScenarioError> {
    match mbit {
        None => Ok(None),
        Some(m) if m > 0.0 && m <= 100_000.0 => Ok(Some(m * 1e6)),
        Some(m) => invalid(format!("`{what}` = {m}: must be in (0, 100000] Mbit/s")),
    }
}

fn shape(link: &LinkSpec) -> Result<LinkShape, ScenarioError> {
    let ms = |v: Option<f64>, what: &str| -> Result<Duration, ScenarioError> {
        match v.unwrap_or(0.0) {
            v if (0.0..=10_000.0).contains(&v) => Ok(Duration::from_secs_f64(v / 1000.0)),
            v => invalid(format!("`{what}` = {v}: must be in [0, 10000] ms")),
        }
    };
    let loss = link.loss.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&loss) {
        return invalid(format!("`loss` = {loss}: must be in [0, 1]"));
    }
    Ok(LinkShape {
        delay: ms(link.delay_ms, "delay_ms")?,
        jitter: ms(link.jitter_ms, "jitter_ms")?,
        loss,
        reorder: link.reorder.unwrap_or(false),
        ..LinkShape::default()
    })
}

fn action(e: &Event) -> Result<Action, String> {
    let extra = |allowed: &[&str]| -> Result<(), String> {
        let given = [
            ("copy", e.copy.is_some()),
            ("lie", e.lie.is_some()),
            ("groups", e.groups.is_some()),
            ("up_mbit", e.up_mbit.is_some()),
            ("down_mbit", e.down_mbit.is_some()),
        ];
        match given.iter().find(|(n, g)| *g && !allowed.contains(n)) {
            Some((n, _)) => Err(format!("`{n}` does not apply to this action")),
            None => Ok(()),
        }
    };
    Ok(match e.action {
        ActionKind::Start => {
            extra(&["lie"])?;
            Action::Start {
                lie: e.lie.unwrap_or(false),
            }
        }
        ActionKind::Share => {
            extra(&["copy"])?;
            Action::Share {
                copy: e.copy.unwrap_or(false),
            }
        }
        ActionKind::Get => {
            extra(&[])?;
            Action::Get
        }
        ActionKind::Kill => {
            extra(&[])?;
            Action::Kill
        }
        ActionKind::Restart => {
            extra(&[])?;
            Action::Restart
        }
        ActionKind::Corrupt => {
            extra(&["groups"])?;
            match e.groups {
                Some(g) if g > 0 => Action::Corrupt { groups: g },
                _ => return Err("`corrupt` needs `groups` ≥ 1".into()),
            }
        }
        ActionKind::SetLink => {
            extra(&["up_mbit", "down_mbit"])?;
            if e.up_mbit.is_none() && e.down_mbit.is_none() {
                return Err("`set_link` needs `up_mbit` or `down_mbit`".into());
            }
            Action::SetLink {
                up_bps: rate(e.up_mbit, "up_mbit").map_err(|e| e.to_string())?,
                down_bps: rate(e.down_mbit, "down_mbit").map_err(|e| e.to_string())?,
            }
        }
    })
}

/// Host indices matching the patterns: a name, or a prefix ending in `*`.
fn match_hosts(hosts: &[HostPlan], patterns: &[String]) -> Result<Vec<usize>, String> {
    if patterns.is_empty() {
        return Err("`hosts` is empty".into());
    }
    let mut out = Vec::new();
    for p in patterns {
        let before = out.len();
        for (i, h) in hosts.iter().enumerate() {
            let hit = match p.strip_suffix('*') {
                Some(prefix) => h.name.starts_with(prefix),
                None => h.name == *p,
            };
            if hit && !out.contains(&i) {
                out.push(i);
            }
        }
        if out.len() == before
            && !hosts.iter().any(|h| {
                p.strip_suffix('*')
                    .map_or(h.name == *p, |x| h.name.starts_with(x))
            })
        {
            return Err(format!("no host matches {p:?}"));
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWARM: &str = r#"
name = "swarm"
seed = 5
[file]
size_mib = 256
[link]
up_mbit = 100
down_mbit = 1000
delay_ms = 10
[[hosts]]
name = "seed"
up_mbit = 200
[[hosts]]
name = "leecher"
count = 8
[[events]]
at_s = 0
hosts = ["*"]
do = "start"
[[events]]
at_s = 1
hosts = ["seed"]
do = "share"
[[events]]
at_random_s = [5, 10]
hosts = ["leecher*"]
fraction = 0.3
do = "kill"
[[events]]
when = { host = "seed", uploaded = 1.1 }
hosts = ["seed"]
do = "kill"
"#;

    #[test]
    fn a_swarm_expands_into_hosts_and_events() {
        let plan = Scenario::parse(SWARM).unwrap().plan().unwrap();
        assert_eq!(plan.hosts.len(), 9);
        assert_eq!(plan.hosts[0].name, "seed");
        assert_eq!(plan.hosts[0].up_bps, Some(200e6));
        assert_eq!(plan.hosts[8].name, "leecher8");
        assert_eq!(plan.hosts[8].ip, Ipv4Addr::new(10, 77, 0, 9));
        assert_eq!(plan.hosts[8].up_bps, Some(100e6));
        assert_eq!(plan.hosts[8].shape.delay, Duration::from_millis(10));
        assert_eq!(plan.file_bytes, 256 << 20);
        assert_eq!(plan.events[0].hosts.len(), 9);
        // 30% of 8 leechers, each at its own random time in [5, 10)
        let kills: Vec<_> = plan
            .events
            .iter()
            .filter(|e| e.action == Action::Kill && e.hosts != [0])
            .collect();
        assert_eq!(kills.len(), 2);
        for k in &kills {
            let Trigger::At(t) = k.trigger else { panic!() };
            assert!((5.0..10.0).contains(&t));
            assert!(k.hosts[0] >= 1);
        }
        let last = plan.events.last().unwrap();
        assert_eq!(
            last.trigger,
            Trigger::When {
                host: 0,
                uploaded_bytes: Some((1.1 * (256u64 << 20) as f64) as u64),
                downloaded_bytes: None
            }
        );
        // the same seed draws the same hosts and times
        let again = Scenario::parse(SWARM).unwrap().plan().unwrap();
        assert_eq!(plan.events, again.events);
        // unset, every host keeps the machine's congestion control
        assert!(plan.host_configs().iter().all(|h| h.congestion.is_none()));
    }

    #[test]
    fn a_congestion_control_reaches_every_host() {
        let text = format!("congestion = \"cubic\"\n{SWARM}");
        let plan = Scenario::parse(&text).unwrap().plan().unwrap();
        let hosts = plan.host_configs();
        assert_eq!(hosts.len(), 9);
        assert!(
            hosts
                .iter()
                .all(|h| h.congestion.as_deref() == Some("cubic"))
        );
        assert_eq!(hosts[8].up_bps, plan.hosts[8].up_bps);
    }

    fn err(text: &str) -> String {
        match Scenario::parse(text).and_then(|s| s.plan()) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn mistakes_get_clear_messages() {
        let base = "name = \"x\"\n[file]\nsize_mib = 1\n[[hosts]]\nname = \"a\"\n";
        assert!(
            err(&format!(
                "{base}[[events]]\nhosts = [\"a\"]\ndo = \"start\"\n"
            ))
            .contains("exactly one of")
        );
        assert!(
            err(&format!(
                "{base}[[events]]\nat_s = 0\nhosts = [\"b\"]\ndo = \"start\"\n"
            ))
            .contains("no host matches")
        );
        assert!(
            err(&format!(
                "{base}[[events]]\nat_s = 0\nhosts = [\"a\"]\ndo = \"get\"\n"
            ))
            .contains("needs a `share`")
        );
        assert!(
            err(&format!(
                "{base}[[events]]\nat_s = 0\nhosts = [\"a\"]\ndo = \"kill\"\ncopy = true\n"
            ))
            .contains("does not apply")
        );
        assert!(
            err(&format!(
                "{base}[[events]]\nat_s = 0\nhosts = [\"a\"]\ndo = \"corrupt\"\n"
            ))
            .contains("groups")
        );
        assert!(
            err(&format!(
                "{base}[[events]]\nat_s = 0\nhosts = [\"a\"]\ndo = \"get\"\nlie = true\n"
            ))
            .contains("does not apply")
        );
        assert!(
            err(&format!(
                "{base}[[events]]\nat_s = 0\nhosts = [\"a\"]\ndo = \"explode\"\n"
            ))
            .contains("unknown variant")
        );
        assert!(err("name = \"x\"\n[file]\nsize_mib = 1\n[link]\nloss = 2\n[[hosts]]\nname = \"a\"\n[[events]]\nat_s = 0\nhosts = [\"a\"]\ndo = \"start\"\n").contains("loss"));
        assert!(err("name = \"x\"\n[file]\nsize_mib = 1\n[[hosts]]\nname = \"a\"\n[[hosts]]\nname = \"a\"\n[[events]]\nat_s = 0\nhosts = [\"a\"]\ndo = \"start\"\n").contains("two hosts"));
        assert!(
            err("name = \"x\"\nevents = []\n[file]\nsize_mib = 0\n[[hosts]]\nname = \"a\"\n")
                .contains("size_mib")
        );
    }

    #[test]
    fn the_corrupt_scenario_starts_30_percent_of_sources_lying() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/corrupt.toml");
        let plan = Scenario::parse(&std::fs::read_to_string(path).unwrap())
            .unwrap()
            .plan()
            .unwrap();
        let sharers: Vec<usize> = plan
            .events
            .iter()
            .filter(|e| matches!(e.action, Action::Share { .. }))
            .flat_map(|e| e.hosts.clone())
            .collect();
        let liars: Vec<usize> = plan
            .events
            .iter()
            .filter(|e| e.action == Action::Start { lie: true })
            .flat_map(|e| e.hosts.clone())
            .collect();
        assert_eq!(sharers.len(), 10);
        assert_eq!(liars.len(), 3);
        assert!(liars.iter().all(|l| sharers.contains(l)));
        // every host is started once, liars with the flag
        let started: usize = plan
            .events
            .iter()
            .filter(|e| matches!(e.action, Action::Start { .. }))
            .map(|e| e.hosts.len())
            .sum();
        assert_eq!(started, plan.hosts.len());
    }

    #[test]
    fn the_shipped_scenarios_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            Scenario::parse(&text)
                .and_then(|s| s.plan())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert!(n >= 4, "only {n} scenarios");
    }
}
