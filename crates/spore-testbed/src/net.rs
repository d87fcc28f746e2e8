//! The network: one namespace per host, a hub namespace holding a bridge, a
//! veth pair from each host to the bridge, `tc` rate caps and a relay
//! process per host for delay, jitter and loss.
//!
//! ```text
//!  host ns "sptb-<run>-h3"                         hub ns "sptb-<run>-hub"
//!  app ──> route 10.77/16 dev spt0 (TUN) ──> relay (delay/jitter/loss)
//!          relay's raw socket, fwmark 1 ──> table 100: 10.77/16 dev eth0
//!          eth0 10.77.0.3/32, tbf = upload cap ════ v3, tbf = download cap ── br0
//!  app <── eth0 (incoming packets are delivered directly)
//! ```
//!
//! So each host delays what it sends: the RTT between two hosts is the sum of
//! their one-way delays. Nothing is created in the root namespace; deleting
//! the namespaces (after killing every process in them) removes every veth,
//! bridge and TUN device. [`Testbed`] does that on drop, on Ctrl-C/SIGTERM
//! (through [`install_signal_cleanup`]), and `spore-testbed cleanup` does it for
//! whatever a killed run left behind.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::emulator::LinkShape;

/// Every namespace the testbed makes starts with this.
pub const PREFIX: &str = "sptb-";
const TUN: &str = "spt0";
const MARK: u32 = 0x77;
const TABLE: u32 = 77;

/// Refuses to go on without root, with a message that says why.
pub fn require_root() -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!(
            "spore-testbed needs root: it creates network namespaces, veth pairs, a bridge, TUN devices and tc qdiscs. \
             Run it with sudo (or as root in CI)."
        );
    }
    for tool in ["ip", "tc"] {
        if Command::new(tool).arg("-V").output().is_err() {
            bail!("`{tool}` (iproute2) is not installed");
        }
    }
    Ok(())
}

/// Runs a command, failing with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The sysctl of a namespace's TCP congestion control.
const CONGESTION: &str = "net.ipv4.tcp_congestion_control";

fn sysctl(ns: &str, key: &str, value: &str) -> Result<String> {
    run(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        &format!("{key}={value}"),
    ]))
}

/// Sets the namespace's TCP congestion control, or says which ones this
/// machine has.
fn set_congestion(ns: &str, name: &str) -> Result<()> {
    sysctl(ns, CONGESTION, name).map(drop).with_context(|| {
        let available =
            std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
                .unwrap_or_default();
        format!(
            "TCP congestion control {name:?} is not available here (available: {}; others may need `modprobe tcp_{name}`)",
            available.trim()
        )
    })
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// A host to build.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub name: String,
    pub ip: Ipv4Addr,
    pub up_bps: Option<f64>,
    pub down_bps: Option<f64>,
    pub shape: LinkShape,
    /// Its TCP congestion control; `None` keeps what a new namespace gets
    /// (the machine's).
    pub congestion: Option<String>,
}

/// A host that exists.
#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub ip: Ipv4Addr,
    /// Its namespace.
    pub ns: String,
    /// The hub-side end of its veth.
    pub hub_veth: String,
    relay: Child,
}

impl Host {
    /// A process in the host's namespace, whose `/proc/PID/net/dev` shows its counters.
    pub fn relay_pid(&self) -> u32 {
        self.relay.id()
    }

    /// Bytes and packets sent and received on the host's veth.
    pub fn link_counters(&self) -> Result<LinkCounters> {
        read_counters(self.relay.id(), "eth0")
    }
}

/// Headers of one packet on a host's link: Ethernet (14), IPv4 (20) and TCP
/// with the timestamp option Linux sends by default (32).
pub const PACKET_HEADERS: u64 = 66;

/// An interface's counters, from `/proc/net/dev`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub up_bytes: u64,
    pub up_packets: u64,
    pub down_bytes: u64,
    pub down_packets: u64,
}

impl LinkCounters {
    /// What the host's transport carried up: the interface's bytes less
    /// [`PACKET_HEADERS`] for every packet (an ACK counts zero). This is what
    /// a client's "uploaded" means, and it does not depend on the MTU.
    pub fn up_payload(&self) -> u64 {
        self.up_bytes
            .saturating_sub(self.up_packets.saturating_mul(PACKET_HEADERS))
    }

    /// What the host's transport carried down (see [`Self::up_payload`]).
    pub fn down_payload(&self) -> u64 {
        self.down_bytes
            .saturating_sub(self.down_packets.saturating_mul(PACKET_HEADERS))
    }
}

/// An interface's counters, as seen from `pid`'s namespace.
pub fn read_counters(pid: u32, iface: &str) -> Result<LinkCounters> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))?;
    parse_net_dev(&text, iface).with_context(|| format!("no {iface} in /proc/{pid}/net/dev"))
}

/// The counters of `iface` in the text of `/proc/net/dev`.
pub fn parse_net_dev(text: &str, iface: &str) -> Option<LinkCounters> {
    for line in text.lines().skip(2) {
        let (name, rest) = line.split_once(':')?;
        if name.trim() == iface {
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if f.len() >= 10 {
                return Some(LinkCounters {
                    down_bytes: f[0],
                    down_packets: f[1],
                    up_bytes: f[8],
                    up_packets: f[9],
                });
            }
        }
    }
    None
}

static ACTIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// On Ctrl-C or SIGTERM, remove the testbeds of this process, then exit 130.
/// A panic unwinds through [`Testbed`]'s drop instead.
pub fn install_signal_cleanup() -> Result<()> {
    ctrlc::set_handler(|| {
        eprintln!("interrupted: removing the testbed");
        let prefixes = ACTIVE.lock().map(|a| a.clone()).unwrap_or_default();
        for p in prefixes {
            let _ = cleanup(&p);
        }
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}

/// Namespaces whose names start with `prefix`.
pub fn namespaces(prefix: &str) -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect())
}

/// Kills every process in the matching namespaces and deletes them (with
/// their veths, bridge and TUN devices). Returns what it removed.
pub fn cleanup(prefix: &str) -> Result<Vec<String>> {
    let list = namespaces(prefix)?;
    for ns in &list {
        kill_all_in(ns);
    }
    // one short wait for all of them (a namespace held by a dying process
    // keeps its devices until the process is gone), then delete the names
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline
        && list
            .iter()
            .any(|ns| ip(&["netns", "pids", ns]).is_ok_and(|p| !p.trim().is_empty()))
    {
        for ns in &list {
            kill_all_in(ns);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for ns in &list {
        let _ = ip(&["netns", "del", ns]);
    }
    // nothing is made in the root namespace, but a crash between `ip link add`
    // and the move could leave a veth there: remove any with our prefix
    if let Ok(links) = ip(&["-o", "link", "show"]) {
        for l in links.lines() {
            if let Some(name) = l
                .split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or(""))
                && name.starts_with(PREFIX)
            {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
    Ok(list)
}

fn kill_all_in(ns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The built network. Dropping it tears everything down.
#[derive(Debug)]
pub struct Testbed {
    pub prefix: String,
    pub hub: String,
    pub hosts: Vec<Host>,
    by_name: HashMap<String, usize>,
}

fn tbf(rate_bps: f64) -> Vec<String> {
    // burst: ~2 ms at the rate, at least 16 KiB (a few full packets);
    // queue: 50 ms at the rate, like a modest router buffer
    let bytes_per_s = rate_bps / 8.0;
    let burst = ((bytes_per_s * 0.002) as u64).max(16 * 1024);
    vec![
        "tbf".into(),
        "rate".into(),
        format!("{}bit", rate_bps.round() as u64),
        "burst".into(),
        burst.to_string(),
        "latency".into(),
        "50ms".into(),
    ]
}

impl Testbed {
    /// Builds the hub and every host. `relay_exe` is the `spore-testbed` binary
    /// (run as `relay` in each namespace).
    pub fn up(
        run_id: &str,
        hosts: &[HostConfig],
        relay_exe: &Path,
        seed: u64,
        work: &Path,
    ) -> Result<Self> {
        require_root()?;
        let prefix = format!("{PREFIX}{run_id}-");
        if let Ok(mut a) = ACTIVE.lock() {
            a.push(prefix.clone());
        }
        let mut bed = Testbed {
            hub: format!("{prefix}hub"),
            prefix,
            hosts: Vec::new(),
            by_name: HashMap::new(),
        };
        bed.build(hosts, relay_exe, seed, work)?;
        Ok(bed)
    }

    fn build(
        &mut self,
        hosts: &[HostConfig],
        relay_exe: &Path,
        seed: u64,
        work: &Path,
    ) -> Result<()> {
        let hub = self.hub.clone();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, h) in hosts.iter().enumerate() {
            let ns = format!("{}h{}", self.prefix, i + 1);
            let hub_veth = format!("v{}", i + 1);
            ip(&["netns", "add", &ns])?;
            // host end and hub end are created directly in their namespaces
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &hub_veth,
                "netns", &hub,
            ])?;
            for (k, v) in [
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.conf.eth0.rp_filter", "0"),
                ("net.ipv6.conf.all.disable_ipv6", "1"),
                ("net.ipv6.conf.default.disable_ipv6", "1"),
            ] {
                sysctl(&ns, k, v)?;
            }
            if let Some(name) = &h.congestion {
                set_congestion(&ns, name)?;
            }
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/32", h.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &hub, "link", "set", &hub_veth, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &hub_veth, "up"])?;
            let relay = self.start_relay(&ns, h, relay_exe, seed.wrapping_add(i as u64), work)?;
            let host = Host {
                name: h.name.clone(),
                ip: h.ip,
                ns: ns.clone(),
                hub_veth,
                relay,
            };
            self.by_name.insert(h.name.clone(), self.hosts.len());
            self.hosts.push(host);
            ip(&["-n", &ns, "link", "set", TUN, "up"])?;
            // what the host sends goes to the relay; what the relay sends (marked) goes out eth0
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "10.77.0.0/16",
                "dev",
                TUN,
                "src",
                &h.ip.to_string(),
            ])?;
            ip(&[
                "-n",
                &ns,
                "rule",
                "add",
                "fwmark",
                &MARK.to_string(),
                "table",
                &TABLE.to_string(),
            ])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "10.77.0.0/16",
                "dev",
                "eth0",
                "src",
                &h.ip.to_string(),
                "table",
                &TABLE.to_string(),
            ])?;
            let index = self.hosts.len() - 1;
            self.set_rates(index, h.up_bps, h.down_bps)?;
        }
        Ok(())
    }

    fn start_relay(
        &self,
        ns: &str,
        h: &HostConfig,
        exe: &Path,
        seed: u64,
        work: &Path,
    ) -> Result<Child> {
        let stats: PathBuf = work.join(format!("relay-{}.json", h.name));
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(exe)
            .args([
                "relay",
                "--tun",
                TUN,
                "--mark",
                &MARK.to_string(),
                "--delay-ms",
                &format!("{}", h.shape.delay.as_secs_f64() * 1000.0),
                "--jitter-ms",
                &format!("{}", h.shape.jitter.as_secs_f64() * 1000.0),
                "--loss",
                &h.shape.loss.to_string(),
                "--seed",
                &seed.to_string(),
            ])
            .args(if h.shape.reorder {
                vec!["--reorder"]
            } else {
                vec![]
            })
            .arg("--stats")
            .arg(&stats)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the relay")?;
        let stdout = child.stdout.take().context("relay stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            bail!("the relay in {ns} did not start (see its error above)");
        }
        Ok(child)
    }

    /// The TCP congestion control the hosts use (that of the first host;
    /// they all have the same).
    pub fn congestion(&self) -> Result<String> {
        let host = self.hosts.first().context("a testbed without hosts")?;
        let out =
            run(Command::new("ip").args(["netns", "exec", &host.ns, "sysctl", "-n", CONGESTION]))?;
        Ok(out.trim().to_string())
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.by_name.get(name).map(|i| &self.hosts[*i])
    }

    /// Sets (or removes, with `None`) the upload and download caps of host `index`.
    pub fn set_rates(
        &self,
        index: usize,
        up_bps: Option<f64>,
        down_bps: Option<f64>,
    ) -> Result<()> {
        let h = &self.hosts[index];
        for (ns, dev, rate) in [
            (&h.ns, "eth0", up_bps),
            (&self.hub, h.hub_veth.as_str(), down_bps),
        ] {
            match rate {
                Some(r) => {
                    let mut cmd = Command::new("tc");
                    cmd.args(["-n", ns, "qdisc", "replace", "dev", dev, "root"])
                        .args(tbf(r));
                    run(&mut cmd)?;
                }
                None => {
                    let _ = run(
                        Command::new("tc").args(["-n", ns, "qdisc", "del", "dev", dev, "root"])
                    );
                }
            }
        }
        Ok(())
    }

    /// A command that runs in the host's namespace.
    pub fn command(&self, index: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[index].ns])
            .arg(program);
        cmd
    }

    /// Kills every process and removes every namespace of this testbed.
    pub fn teardown(&mut self) -> Result<()> {
        for h in &mut self.hosts {
            let _ = h.relay.kill();
            let _ = h.relay.wait();
        }
        let removed = cleanup(&self.prefix)?;
        if let Ok(mut a) = ACTIVE.lock() {
            a.retain(|p| p != &self.prefix);
        }
        let left = namespaces(&self.prefix)?;
        if !left.is_empty() {
            bail!("could not remove {left:?}");
        }
        self.hosts.clear();
        let _ = removed;
        Ok(())
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("tearing down the testbed: {e:#}");
        }
    }
}

/// Waits until `f` is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_counters_parse() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
 lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n  \
 eth0: 123456     100    0    0    0     0          0         0   654321     200    0    0    0     0       0          0\n";
        let eth0 = parse_net_dev(text, "eth0").unwrap();
        assert_eq!((eth0.up_bytes, eth0.up_packets), (654321, 200));
        assert_eq!((eth0.down_bytes, eth0.down_packets), (123456, 100));
        assert_eq!(eth0.up_payload(), 654321 - 200 * PACKET_HEADERS);
        assert_eq!(eth0.down_payload(), 123456 - 100 * PACKET_HEADERS);
        assert_eq!(parse_net_dev(text, "lo"), Some(LinkCounters::default()));
        assert_eq!(parse_net_dev(text, "spt0"), None);
    }

    #[test]
    fn tbf_has_a_sane_burst() {
        let args = tbf(5e6);
        assert_eq!(args[2], "5000000bit");
        assert_eq!(args[4], "16384");
        let args = tbf(200e6);
        assert_eq!(args[4], "50000");
    }
}
