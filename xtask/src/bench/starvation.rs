//! `cargo xtask bench starvation`: false failovers of healthy clusters while every core is
//! saturated. No fault is injected: any peer loss or change of Master during the window is
//! a false failover.
//!
//! Every system runs at the same time, as a two-node cluster on a bridge of its own (one
//! [`Lab`] each, so clusters cannot hear one another), under the same load:
//!
//! - `cpu`: `stress-ng --cpu <2 × cores>` at nice 0 in the root namespace;
//! - `softirq`: the same, plus a UDP flood across a bridge between two namespaces that the
//!   benchmark makes for it (203.0.113.0/24), which keeps the network softirq busy.
//!
//! The systems: vipd pool mode at several heartbeat/dead intervals and at its defaults,
//! keepalived (VRRPv3, advert_int 0.01) and vipd VRRP mode (adverts every 10 ms). For the
//! VRRP systems the Master's adverts are captured (tcpdump, kernel timestamps) at the
//! Master's own eth0 (when it sent them) and at the Backup's (when it heard them), and gaps
//! longer than 1.5 advert intervals are counted as late adverts.
//!
//! Each cluster must be settled (vipd: both nodes past their hold-down, the peer joined,
//! one VIP each; VRRP: the priority-200 node Master, the other Backup, for 1.5 s) before
//! the load starts; only events during the load window are counted.

use std::{
    fmt::Write as _,
    fs::File,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use serde::Serialize;
use vipd_lab::{
    lab::{self, Host, Lab, wait_until},
    pcap::{Capture, ETHERTYPE_IPV4, Ethernet, Ipv4, parse_mac},
    timeline::field,
};

use super::{Machine, write_results};

/// The VIPs of every vipd pool (one per node once settled).
const POOL_VIPS: &str = "192.0.2.201,192.0.2.202";
/// The VIP of every VRRP group.
const VRRP_VIP: &str = "192.0.2.200";
/// The VRRP advert interval of both VRRP systems.
const VRRP_INTERVAL: Duration = Duration::from_millis(10);
/// IP protocol number of VRRP.
const IPPROTO_VRRP: u8 = 112;
/// A gap between adverts longer than this many intervals makes the later one late.
const LATE_FACTOR: f64 = 1.5;
/// Longest wait for a daemon to start or a cluster to settle (before any load).
const WAIT: Duration = Duration::from_secs(30);
/// How long a cluster must stay in its expected state to count as settled.
const SETTLE: Duration = Duration::from_millis(1500);
/// CPU hogs per core.
const HOGS_PER_CORE: usize = 2;
/// stress-ng's CPU method: an empty loop (no FPU or memory pressure, just busy).
const CPU_METHOD: &str = "loop";
/// Addresses and port of the flood (a documentation range, inside its own namespaces).
const FLOOD_SOURCE: &str = "203.0.113.1";
const FLOOD_SINK: &str = "203.0.113.2";
const FLOOD_PORT: u16 = 9999;
/// Payload of each flood datagram: small, so the per-packet cost dominates.
const FLOOD_PAYLOAD: usize = 64;
/// Extra time given to the bounded helpers (stress-ng, flood, tcpdump) past the window.
const MARGIN: Duration = Duration::from_secs(60);

/// A load profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Load {
    /// CPU hogs only.
    Cpu,
    /// CPU hogs plus a UDP flood through a bridge (softirq load).
    Softirq,
}

impl Load {
    /// Its name in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Load::Cpu => "cpu",
            Load::Softirq => "softirq",
        }
    }
}

/// `--load`: which profiles to run, one after the other with fresh labs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadChoice {
    /// CPU hogs only.
    Cpu,
    /// CPU hogs plus a UDP flood through a bridge.
    Softirq,
    /// `cpu`, then `softirq`.
    Both,
}

impl LoadChoice {
    /// The profiles, in run order.
    pub fn profiles(self) -> Vec<Load> {
        match self {
            LoadChoice::Cpu => vec![Load::Cpu],
            LoadChoice::Softirq => vec![Load::Softirq],
            LoadChoice::Both => vec![Load::Cpu, Load::Softirq],
        }
    }
}

/// What a cluster runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// vipd pool mode, two nodes sharing two VIPs, with `--interval` and `--dead-interval`
    /// (or vipd's defaults when `None`).
    Pool {
        /// (interval, dead interval) as given to vipd, e.g. ("2ms", "8ms").
        timers: Option<(String, String)>,
    },
    /// keepalived, VRRPv3, advert_int 0.01, priorities 200 and 100.
    Keepalived,
    /// vipd VRRP mode, adverts every 10 ms, priorities 200 and 100.
    VipdVrrp,
    /// One vipd daemon per node running both: the pool with these (interval, dead
    /// interval), and VRID 51 as [`Kind::VipdVrrp`] — two fast paths on one box.
    Mixed {
        /// (interval, dead interval) of the pool, e.g. ("1ms", "4ms").
        timers: (String, String),
    },
}

/// One row of the benchmark: a two-node cluster.
#[derive(Clone, Debug)]
pub struct System {
    /// Its name in the table.
    pub label: String,
    /// What it runs.
    pub kind: Kind,
    /// Its heartbeat or advert interval.
    pub interval: Duration,
    /// Flags added to both nodes' `vipd run` (e.g. `--rt-priority 0`).
    pub extra: Vec<String>,
}

impl System {
    /// Whether it runs a vipd pool (heartbeat figures in its logs).
    fn runs_pool(&self) -> bool {
        matches!(self.kind, Kind::Pool { .. } | Kind::Mixed { .. })
    }

    /// Its pool's heartbeat interval (a pool's `interval`; a mixed daemon's pool timers).
    fn heartbeat_interval(&self) -> Duration {
        match &self.kind {
            Kind::Mixed { timers } => parse_duration(&timers.0).unwrap_or(self.interval),
            _ => self.interval,
        }
    }
}

/// The systems to run: a subset for `quick`.
pub fn systems(quick: bool, vipd: &Path) -> anyhow::Result<Vec<System>> {
    let pool = |i: &str, d: &str, extra: &[&str], label: String| System {
        label,
        kind: Kind::Pool {
            timers: Some((i.into(), d.into())),
        },
        interval: parse_duration(i).unwrap_or(Duration::from_millis(100)),
        extra: extra.iter().map(|s| s.to_string()).collect(),
    };
    let mut all = Vec::new();
    let timers: &[(&str, &str)] = if quick {
        &[("1ms", "4ms")]
    } else {
        &[
            ("1ms", "3ms"),
            ("1ms", "4ms"),
            ("2ms", "8ms"),
            ("5ms", "15ms"),
            ("10ms", "30ms"),
        ]
    };
    for (i, d) in timers {
        all.push(pool(i, d, &[], format!("vipd {i}/{d}")));
    }
    if !quick {
        let (interval, dead) = default_timers(vipd)?;
        all.push(System {
            label: format!("vipd default ({interval}/{dead})"),
            kind: Kind::Pool { timers: None },
            interval: parse_duration(&interval).unwrap_or(Duration::from_millis(100)),
            extra: Vec::new(),
        });
        // What each protection of the fast path is worth: without real-time priority,
        // without the shadow senders (and the CPU watch that comes with them).
        let label = "vipd 1ms/4ms, rt off (--rt-priority 0)".to_string();
        all.push(pool("1ms", "4ms", &["--rt-priority", "0"], label));
        let label = "vipd 1ms/4ms, no shadows (--no-shadow-senders)".to_string();
        all.push(pool("1ms", "4ms", &["--no-shadow-senders"], label));
    }
    all.push(System {
        label: "keepalived VRRPv3 (advert_int 0.01)".into(),
        kind: Kind::Keepalived,
        interval: VRRP_INTERVAL,
        extra: Vec::new(),
    });
    all.push(System {
        label: "vipd VRRP mode (advert 10ms)".into(),
        kind: Kind::VipdVrrp,
        interval: VRRP_INTERVAL,
        extra: Vec::new(),
    });
    if !quick {
        all.push(System {
            label: "vipd pool 1ms/4ms + VRRP 10ms, one daemon".into(),
            kind: Kind::Mixed {
                timers: ("1ms".into(), "4ms".into()),
            },
            interval: VRRP_INTERVAL,
            extra: Vec::new(),
        });
    }
    Ok(all)
}

/// vipd's default (interval, dead interval), from `vipd check-config`.
fn default_timers(vipd: &Path) -> anyhow::Result<(String, String)> {
    let out = Command::new(vipd)
        .args([
            "check-config",
            "-i",
            "eth0",
            "-n",
            "1",
            "--vip",
            "192.0.2.201",
            // The timers do not depend on the key; without one the check refuses.
            "--insecure",
        ])
        .output()
        .with_context(|| format!("running {} check-config", vipd.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().strip_prefix('=')?.trim().into())
            .map(|v: &str| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "?".into())
    };
    Ok((value("interval"), value("dead_interval")))
}

/// `1ms`, `500us`, `1s`, `0.5s` as a duration.
fn parse_duration(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    Some(Duration::from_secs_f64(number.parse::<f64>().ok()? * scale))
}

/// Adverts of a VRRP Master over the window, as captured at one point.
#[derive(Clone, Debug, Serialize)]
pub struct Adverts {
    /// Where: "sent" (the Master's eth0) or "heard" (the Backup's eth0).
    pub at: String,
    /// Adverts from the Master captured in the window.
    pub count: usize,
    /// Gaps longer than 1.5 intervals between consecutive adverts.
    pub late: usize,
    /// The longest gap, milliseconds.
    pub max_gap_ms: f64,
    /// What tcpdump reported as dropped by the kernel (capture incomplete when > 0).
    pub dropped_by_kernel: Option<u64>,
}

/// One system under one load profile.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The system's label.
    pub system: String,
    /// The load profile.
    pub load: Load,
    /// The load window, seconds.
    pub window_s: f64,
    /// Peer losses by timeout (vipd pool, both nodes) or changes of Master (VRRP: the
    /// Backup entering Master, or the Master leaving it) during the window.
    pub false_failovers: usize,
    /// vipd pool: peer losses for another reason than a timeout during the window.
    pub other_peer_losses: Option<usize>,
    /// vipd pool: heartbeats sent by both nodes over their whole run (settling included).
    pub heartbeats_sent: Option<u64>,
    /// vipd pool: heartbeats both nodes would have sent on schedule over the same time.
    pub heartbeats_scheduled: Option<f64>,
    /// vipd pool: heartbeats the daemons themselves counted as sent late, over their whole
    /// run (when the daemon reports it: `heartbeats_late` in its "stopped" line).
    pub heartbeats_late: Option<u64>,
    /// vipd pool: the latest of those, µs (`max_late_us`, the larger of both nodes').
    pub max_late_us: Option<u64>,
    /// VRRP: the Master's adverts at its own eth0 and at the Backup's.
    pub adverts: Vec<Adverts>,
    /// Anything that makes the figures doubtful.
    pub notes: Vec<String>,
}

/// `cargo xtask bench starvation`: runs every system under each profile of `load` for
/// `seconds` (about 5 s and a subset with `quick`), prints the table and writes the results.
/// With `only`, just the systems whose label contains one of those words.
pub fn bench(seconds: u64, quick: bool, load: LoadChoice, only: &[String]) -> anyhow::Result<()> {
    // SAFETY: geteuid never fails.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the starvation benchmark needs root (network namespaces, XDP): run it with sudo");
    }
    let window = Duration::from_secs(if quick { 5 } else { seconds.max(1) });
    let vipd = crate::demo::build_vipd()?;
    let machine = Machine::here();
    let mut systems = systems(quick, &vipd)?;
    if !only.is_empty() {
        systems.retain(|s| only.iter().any(|w| s.label.contains(w.as_str())));
        if systems.is_empty() {
            bail!("no system's label contains any of {only:?}");
        }
    }
    let hogs = HOGS_PER_CORE * machine.cores;
    let flooders = machine.cores.max(1);
    let mut rows = Vec::new();
    let mut profiles = Vec::new();
    let mut failed = serde_json::Map::new();
    for profile in load.profiles() {
        println!(
            "==> load {}: {} clusters for {} s",
            profile.name(),
            systems.len(),
            window.as_secs()
        );
        let setup = LoadSetup {
            profile,
            hogs,
            flooders,
            window,
        };
        match run_profile(&setup, &systems, &vipd, &mut failed) {
            Ok((r, info)) => {
                rows.extend(r);
                profiles.push(info);
            }
            Err(e) if lab::interrupted() => return Err(e),
            Err(e) => {
                println!("  load {} failed: {e:#}", profile.name());
                failed.insert(profile.name().into(), format!("{e:#}").into());
            }
        }
    }
    let table = table(&rows, &machine, hogs, flooders);
    println!("\n{table}");
    let json = serde_json::json!({
        "machine": machine,
        "window_s": window.as_secs(),
        "load": {
            "cpu_hogs": hogs,
            "cpu_method": CPU_METHOD,
            "flood_senders": flooders,
            "flood_payload_bytes": FLOOD_PAYLOAD,
        },
        "profiles": profiles,
        "rows": rows,
        "failed": failed,
    });
    let name = if quick {
        "starvation-smoke"
    } else if !only.is_empty() {
        "starvation-subset"
    } else {
        "starvation"
    };
    let (j, m) = write_results(name, &json, &table)?;
    println!("wrote {} and {}", j.display(), m.display());
    Ok(())
}

/// One load profile's parameters.
struct LoadSetup {
    profile: Load,
    hogs: usize,
    flooders: usize,
    window: Duration,
}

/// What the load did in one profile.
#[derive(Debug, Serialize)]
struct ProfileInfo {
    load: Load,
    window_s: f64,
    /// Flood datagrams sent per second (softirq profile).
    flood_datagrams_per_s: Option<f64>,
}

/// Starts every cluster, waits until each is settled, runs the load for the window and
/// counts. A cluster that does not start or settle is left out (and listed in `failed`).
fn run_profile(
    setup: &LoadSetup,
    systems: &[System],
    vipd: &Path,
    failed: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<(Vec<Row>, ProfileInfo)> {
    let load = setup.profile;
    let mut clusters = Vec::new();
    for system in systems {
        let started = Cluster::start(system, vipd).and_then(|mut c| {
            c.settle()?;
            Ok(c)
        });
        match started {
            Ok(c) => {
                println!("  {}: settled", system.label);
                clusters.push(c);
            }
            Err(e) => leave_out(&system.label, load, e, failed)?,
        }
    }
    // Captures start once every cluster is settled, so they cover the whole window.
    let mut captured = Vec::new();
    for mut c in clusters {
        match c.start_captures(setup.window + MARGIN) {
            Ok(()) => captured.push(c),
            Err(e) => leave_out(&c.system.label, load, e, failed)?,
        }
    }
    let mut clusters = captured;
    if clusters.is_empty() {
        bail!("no cluster settled");
    }
    let mut flood = match load {
        Load::Softirq => Some(Flood::new().context("setting up the UDP flood")?),
        Load::Cpu => None,
    };
    let baseline: Vec<Counts> = clusters.iter_mut().map(Cluster::counts).collect();
    let (wall_start, start) = (realtime_ns(), Instant::now());
    if let Some(f) = &mut flood {
        f.start(setup.flooders, setup.window + MARGIN)?;
    }
    let hogs = Hogs::start(setup.hogs, setup.window + MARGIN)?;
    wait_window(setup.window, &mut clusters, &baseline)?;
    let end: Vec<Counts> = clusters.iter_mut().map(Cluster::counts).collect();
    let (wall_end, window_s) = (realtime_ns(), start.elapsed().as_secs_f64());
    let exited: Vec<bool> = clusters.iter_mut().map(Cluster::any_exited).collect();
    drop(hogs);
    let flood_sent = flood.as_mut().map(Flood::stop);
    if clusters.iter().any(|c| !c.taps.is_empty()) {
        // tcpdump reads the kernel's buffer block by block (a block is handed over when full
        // or after a second): let it take the window's last adverts before it is stopped.
        pause(Duration::from_secs(2))?;
    }
    let mut rows = Vec::new();
    for (i, c) in clusters.iter_mut().enumerate() {
        let mut row = c.finish(load, window_s, (wall_start, wall_end))?;
        row.false_failovers = end[i].failovers.saturating_sub(baseline[i].failovers);
        if row.other_peer_losses.is_some() {
            row.other_peer_losses = Some(end[i].other.saturating_sub(baseline[i].other));
        }
        if exited[i] {
            row.notes
                .push("a daemon exited during the window: figures invalid".into());
        }
        rows.push(row);
    }
    let info = ProfileInfo {
        load,
        window_s,
        flood_datagrams_per_s: flood_sent.map(|n| n as f64 / window_s),
    };
    Ok((rows, info))
}

/// Records why the cluster of `label` is left out of `load`'s run; an interruption is
/// returned as the error it is instead.
fn leave_out(
    label: &str,
    load: Load,
    e: anyhow::Error,
    failed: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    if lab::interrupted() {
        return Err(e);
    }
    println!("  {label}: left out: {e:#}");
    failed.insert(
        format!("{label} ({})", load.name()),
        format!("{e:#}").into(),
    );
    Ok(())
}

/// Waits out the window (interruptible), printing the false failovers so far every minute.
fn wait_window(
    window: Duration,
    clusters: &mut [Cluster],
    baseline: &[Counts],
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut next_report = Duration::from_secs(60);
    while start.elapsed() < window {
        if lab::interrupted() {
            bail!("interrupted");
        }
        if start.elapsed() >= next_report {
            let so_far: Vec<String> = clusters
                .iter_mut()
                .zip(baseline)
                .map(|(c, b)| {
                    let n = c.counts().failovers.saturating_sub(b.failovers);
                    format!("{} {n}", c.system.label)
                })
                .collect();
            println!(
                "  {:>4} s: false failovers so far: {}",
                next_report.as_secs(),
                so_far.join(", ")
            );
            next_report += Duration::from_secs(60);
        }
        thread::sleep(Duration::from_millis(100).min(window.saturating_sub(start.elapsed())));
    }
    Ok(())
}

/// Sleeps for `d`, in steps, failing if interrupted.
fn pause(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if lab::interrupted() {
            bail!("interrupted");
        }
        thread::sleep(
            Duration::from_millis(100).min(end.saturating_duration_since(Instant::now())),
        );
    }
    Ok(())
}

/// Event counts read from a cluster's logs at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    /// Peer losses by timeout / changes of Master.
    failovers: usize,
    /// vipd pool: peer losses for other reasons.
    other: usize,
}

/// A packet capture of VRRP adverts on one node's eth0.
struct Tap {
    /// "sent" (the Master's eth0) or "heard" (the Backup's).
    at: &'static str,
    proc: usize,
    pcap: PathBuf,
}

/// A running two-node cluster on a bridge of its own. Node 0 is the VRRP Master
/// (priority 200), node 1 the Backup (priority 100); in a pool they are alike.
struct Cluster {
    system: System,
    lab: Lab,
    nodes: [Host; 2],
    daemons: [usize; 2],
    taps: Vec<Tap>,
}

impl Cluster {
    /// Makes the lab and starts both daemons.
    fn start(system: &System, vipd: &Path) -> anyhow::Result<Self> {
        let mut lab = Lab::new("st")?;
        let nodes = [
            lab.add_host("a", "192.0.2.11/24", "02:00:00:00:05:0b")?,
            lab.add_host("b", "192.0.2.12/24", "02:00:00:00:05:0c")?,
        ];
        let mut daemons = [0; 2];
        for (n, host) in nodes.iter().enumerate() {
            daemons[n] = start_daemon(&mut lab, system, host, n, vipd)?;
        }
        Ok(Self {
            system: system.clone(),
            lab,
            nodes,
            daemons,
            taps: Vec::new(),
        })
    }

    /// Fails if a daemon has exited, with its log.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for n in 0..2 {
            let p = self.lab.proc(self.daemons[n]);
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "the daemon on {} exited ({status}); its log:\n{}",
                    self.nodes[n].name,
                    p.output()
                );
            }
        }
        Ok(())
    }

    /// Whether either daemon has exited.
    fn any_exited(&mut self) -> bool {
        self.check_alive().is_err()
    }

    /// Whether the cluster is in its healthy steady state now.
    fn in_steady_state(&mut self) -> anyhow::Result<bool> {
        let logs = [self.log(0), self.log(1)];
        let has = |n: usize, needles: &[&str]| {
            logs[n]
                .lines()
                .any(|l| needles.iter().all(|s| l.contains(s)))
        };
        let on = |lab: &Lab, node: &Host, vip: &str| lab.has_address(node, vip);
        let pool_steady = || -> anyhow::Result<bool> {
            let up = (0..2).all(|n| has(n, &["hold-down over"]) && has(n, &["peer joined"]));
            if !up {
                return Ok(false);
            }
            let mut holders = Vec::new();
            for vip in POOL_VIPS.split(',') {
                let on_nodes: Vec<usize> = (0..2)
                    .filter(|&n| on(&self.lab, &self.nodes[n], vip).unwrap_or(false))
                    .collect();
                if on_nodes.len() != 1 {
                    return Ok(false);
                }
                holders.push(on_nodes[0]);
            }
            Ok(holders[0] != holders[1])
        };
        let vrrp_steady = |keepalived: bool| -> anyhow::Result<bool> {
            let (master, backup): (&[&str], &[&str]) = if keepalived {
                (&["Entering MASTER STATE"], &["Entering BACKUP STATE"])
            } else {
                (&["vrrp state", "to=master"], &["vrrp state", "to=backup"])
            };
            Ok(has(0, master)
                && has(1, backup)
                && on(&self.lab, &self.nodes[0], VRRP_VIP)?
                && !on(&self.lab, &self.nodes[1], VRRP_VIP)?)
        };
        match self.system.kind {
            Kind::Pool { .. } => pool_steady(),
            Kind::Keepalived => vrrp_steady(true),
            Kind::VipdVrrp => vrrp_steady(false),
            Kind::Mixed { .. } => Ok(pool_steady()? && vrrp_steady(false)?),
        }
    }

    /// Waits until the cluster has been in its steady state for [`SETTLE`].
    fn settle(&mut self) -> anyhow::Result<()> {
        let mut since: Option<Instant> = None;
        let what = format!("{} to settle", self.system.label);
        wait_until(&what, WAIT, || {
            self.check_alive()?;
            if self.in_steady_state()? {
                let at = *since.get_or_insert_with(Instant::now);
                Ok(at.elapsed() >= SETTLE)
            } else {
                since = None;
                Ok(false)
            }
        })
        .with_context(|| format!("logs so far:\n{}\n---\n{}", self.log(0), self.log(1)))
    }

    /// VRRP systems: starts capturing adverts at both nodes' eth0 for at most `timeout`.
    fn start_captures(&mut self, timeout: Duration) -> anyhow::Result<()> {
        if matches!(self.system.kind, Kind::Pool { .. }) {
            return Ok(());
        }
        // Room for every advert of the window (and a Backup's, should it become Master).
        let per_second = 2.0 / self.system.interval.as_secs_f64();
        let max_packets = (per_second * timeout.as_secs_f64()).min(f64::from(u32::MAX)) as u32;
        for (n, at) in [(0, "sent"), (1, "heard")] {
            let name = format!("adverts-{at}");
            let filter = format!("ip proto {IPPROTO_VRRP}");
            let node = self.nodes[n].clone();
            let (proc, pcap) = self
                .lab
                .spawn_capture(&node, &name, &filter, max_packets, timeout)
                .with_context(|| format!("capturing adverts on {}", node.name))?;
            self.taps.push(Tap { at, proc, pcap });
        }
        Ok(())
    }

    /// Node `n`'s daemon output so far.
    fn log(&mut self, n: usize) -> String {
        self.lab.proc(self.daemons[n]).output()
    }

    /// The false-failover events in the logs so far.
    fn counts(&mut self) -> Counts {
        let (master, backup) = (self.daemons[0], self.daemons[1]);
        let count = |lab: &mut Lab, p: usize, needles: &[&str]| lab.proc(p).count_lines(needles);
        let lab = &mut self.lab;
        let pool = |lab: &mut Lab| {
            let lost = ["event=\"peer_lost\""];
            let timeout = ["event=\"peer_lost\"", "reason=\"timeout\""];
            let all = count(lab, master, &lost) + count(lab, backup, &lost);
            let failovers = count(lab, master, &timeout) + count(lab, backup, &timeout);
            Counts {
                failovers,
                other: all - failovers,
            }
        };
        let vrrp = |lab: &mut Lab| {
            count(lab, backup, &["vrrp state", "to=master"])
                + count(lab, master, &["vrrp state", "from=master"])
        };
        match self.system.kind {
            Kind::Pool { .. } => pool(lab),
            Kind::Mixed { .. } => {
                let p = pool(lab);
                Counts {
                    failovers: p.failovers + vrrp(lab),
                    other: p.other,
                }
            }
            Kind::Keepalived => Counts {
                failovers: count(lab, backup, &["Entering MASTER STATE"])
                    + count(lab, master, &["Entering BACKUP STATE"])
                    + count(lab, master, &["Entering FAULT STATE"]),
                other: 0,
            },
            Kind::VipdVrrp => Counts {
                failovers: vrrp(lab),
                other: 0,
            },
        }
    }

    /// After the window: stops the captures and reads them; stops vipd pool nodes with
    /// SIGTERM and reads their heartbeat counts. `wall` is the window in CLOCK_REALTIME ns.
    /// The event counts are filled in by the caller.
    fn finish(&mut self, load: Load, window_s: f64, wall: (u64, u64)) -> anyhow::Result<Row> {
        let mut row = Row {
            system: self.system.label.clone(),
            load,
            window_s,
            false_failovers: 0,
            other_peer_losses: None,
            heartbeats_sent: None,
            heartbeats_scheduled: None,
            heartbeats_late: None,
            max_late_us: None,
            adverts: Vec::new(),
            notes: Vec::new(),
        };
        let master_mac = parse_mac(&self.nodes[0].mac)?;
        for tap in &self.taps {
            let p = self.lab.proc(tap.proc);
            // tcpdump prints its statistics (drops included) when it stops.
            let _ = p.signal(libc::SIGTERM);
            let _ = p.wait_exit(Duration::from_secs(10));
            let dropped = dropped_by_kernel(&p.output());
            match advert_gaps(&tap.pcap, master_mac, wall, self.system.interval) {
                Ok((count, late, max_gap_ms)) => {
                    if dropped.is_some_and(|d| d > 0) {
                        row.notes.push(format!(
                            "capture at the {} side dropped packets: its gaps are unreliable",
                            tap.at
                        ));
                    }
                    row.adverts.push(Adverts {
                        at: tap.at.into(),
                        count,
                        late,
                        max_gap_ms,
                        dropped_by_kernel: dropped,
                    });
                }
                Err(e) => row
                    .notes
                    .push(format!("capture at the {} side unusable: {e:#}", tap.at)),
            }
        }
        if self.system.runs_pool() {
            // How long each lost peer had been silent when it was declared lost.
            let mut silences = Vec::new();
            for n in 0..self.daemons.len() {
                for line in self.log(n).lines().filter(|l| {
                    l.contains("event=\"peer_lost\"") && l.contains("reason=\"timeout\"")
                }) {
                    if let Some(us) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("silence_us="))
                        .and_then(|v| v.parse::<f64>().ok())
                    {
                        silences.push(format!("{:.1}", us / 1e3));
                    }
                }
            }
            if !silences.is_empty() {
                row.notes.push(format!(
                    "silence at each loss (ms): {}",
                    silences.join(", ")
                ));
            }
            row.other_peer_losses = Some(0);
            let stats = self.stop_pool()?;
            row.heartbeats_sent = stats.sent;
            row.heartbeats_scheduled = stats.scheduled;
            row.heartbeats_late = stats.late;
            row.max_late_us = stats.max_late_us;
        }
        Ok(row)
    }

    /// Stops both pool nodes with SIGTERM and reads their heartbeat figures from the
    /// "stopped" line; each is summed over both nodes (the maximum for `max_late_us`) when
    /// both logged it.
    fn stop_pool(&mut self) -> anyhow::Result<HeartbeatStats> {
        for &d in &self.daemons {
            let _ = self.lab.proc(d).signal(libc::SIGTERM);
        }
        let mut total = HeartbeatStats {
            sent: Some(0),
            scheduled: Some(0.0),
            late: Some(0),
            max_late_us: Some(0),
        };
        for n in 0..2 {
            let p = self.lab.proc(self.daemons[n]);
            p.wait_exit(Duration::from_secs(10))
                .with_context(|| format!("stopping vipd on {}", self.nodes[n].name))?;
            let node = HeartbeatStats::from_log(&p.output(), self.system.heartbeat_interval());
            total.sent = total.sent.zip(node.sent).map(|(a, b)| a + b);
            total.scheduled = total.scheduled.zip(node.scheduled).map(|(a, b)| a + b);
            total.late = total.late.zip(node.late).map(|(a, b)| a + b);
            total.max_late_us = total
                .max_late_us
                .zip(node.max_late_us)
                .map(|(a, b)| a.max(b));
        }
        Ok(total)
    }
}

/// Heartbeat figures of vipd pool nodes, from their logs.
#[derive(Clone, Copy, Debug, Default)]
struct HeartbeatStats {
    /// `heartbeats_sent` of the "stopped" line.
    sent: Option<u64>,
    /// Heartbeats due on schedule between the "vipd started" and "stopping" lines.
    scheduled: Option<f64>,
    /// `heartbeats_late` of the "stopped" line, if the daemon reports it.
    late: Option<u64>,
    /// `max_late_us` of the "stopped" line, if the daemon reports it.
    max_late_us: Option<u64>,
}

impl HeartbeatStats {
    /// Reads one node's figures from its whole log; `interval` is its heartbeat interval.
    fn from_log(log: &str, interval: Duration) -> Self {
        let line = |needle: &str| log.lines().find(|l| l.contains(needle));
        let stopped = line("stopped");
        let lifetime = match (line("vipd started"), line("stopping:")) {
            (Some(a), Some(b)) => log_time(b).zip(log_time(a)).map(|(b, a)| b - a),
            _ => None,
        };
        Self {
            sent: stopped.and_then(|l| field(l, "heartbeats_sent")),
            scheduled: lifetime.map(|t| t / interval.as_secs_f64()),
            late: stopped.and_then(|l| field(l, "heartbeats_late")),
            max_late_us: stopped.and_then(|l| field(l, "max_late_us")),
        }
    }
}

/// Starts node `n`'s daemon of `system` on `host`.
fn start_daemon(
    lab: &mut Lab,
    system: &System,
    host: &Host,
    n: usize,
    vipd: &Path,
) -> anyhow::Result<usize> {
    let id = n as u32 + 1;
    let priority = if n == 0 { 200 } else { 100 };
    let extra = system.extra.iter().map(String::as_str);
    let (p, ready) = match &system.kind {
        Kind::Pool { timers } => {
            let mut args = vec!["--vip", POOL_VIPS, "--hold-down", "300ms"];
            if let Some((interval, dead)) = timers {
                args.extend([
                    "--interval",
                    interval.as_str(),
                    "--dead-interval",
                    dead.as_str(),
                ]);
            }
            args.extend(extra);
            let log = format!("vipd-{}", host.name);
            (lab.spawn_vipd(host, id, &log, vipd, &args)?, "vipd started")
        }
        Kind::VipdVrrp => {
            let ms = VRRP_INTERVAL.as_millis();
            let spec = format!("51,priority={priority},vip={VRRP_VIP}/32,interval={ms}ms");
            let mut args = vec!["--vrrp", spec.as_str()];
            args.extend(extra);
            let log = format!("vrrp-{}", host.name);
            (lab.spawn_vipd(host, id, &log, vipd, &args)?, "vipd started")
        }
        Kind::Mixed {
            timers: (interval, dead),
        } => {
            let ms = VRRP_INTERVAL.as_millis();
            let spec = format!("51,priority={priority},vip={VRRP_VIP}/32,interval={ms}ms");
            let mut args = vec!["--vip", POOL_VIPS, "--hold-down", "300ms"];
            args.extend([
                "--interval",
                interval,
                "--dead-interval",
                dead,
                "--vrrp",
                &spec,
            ]);
            args.extend(extra);
            let log = format!("mixed-{}", host.name);
            // The groups start after the pool.
            (
                lab.spawn_vipd(host, id, &log, vipd, &args)?,
                "vipd started: VRRP groups",
            )
        }
        Kind::Keepalived => {
            let conf = keepalived_conf(host, priority);
            let log = format!("keepalived-{}", host.name);
            (lab.spawn_keepalived(host, &log, &conf)?, "Startup complete")
        }
    };
    lab.proc(p).wait_for_line(&[ready], WAIT)?;
    Ok(p)
}

/// keepalived's configuration: VRRPv3, advert_int 0.01, VRID 51, both starting as Backup.
fn keepalived_conf(host: &Host, priority: u8) -> String {
    format!(
        "global_defs {{\n    vrrp_version 3\n    router_id {}\n}}\n\
         vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n\
         \x20   priority {priority}\n    advert_int 0.01\n    virtual_ipaddress {{\n        {VRRP_VIP}/32 dev eth0\n    }}\n}}\n",
        host.name
    )
}

/// The CLOCK_MONOTONIC seconds a vipd log line starts with.
fn log_time(line: &str) -> Option<f64> {
    line.split_whitespace().next()?.parse().ok()
}

/// The "N packets dropped by kernel" figure tcpdump prints when it stops.
fn dropped_by_kernel(log: &str) -> Option<u64> {
    log.lines()
        .find(|l| l.contains("packets dropped by kernel"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
}

/// (adverts, late adverts, longest gap in ms) of the VRRP adverts from `master` in the
/// capture at `pcap`, between `wall.0` and `wall.1` (CLOCK_REALTIME ns).
fn advert_gaps(
    pcap: &Path,
    master: [u8; 6],
    wall: (u64, u64),
    interval: Duration,
) -> anyhow::Result<(usize, usize, f64)> {
    let capture = Capture::read(pcap)?;
    let times: Vec<u64> = capture
        .packets
        .iter()
        .filter(|p| is_advert_from(&p.data, master))
        .map(|p| u64::from(p.ts_sec) * 1_000_000_000 + u64::from(p.ts_nsec))
        .filter(|&t| (wall.0..=wall.1).contains(&t))
        .collect();
    Ok(gap_stats(&times, interval))
}

/// Whether `frame` is an IPv4 VRRP packet sent by `mac`.
fn is_advert_from(frame: &[u8], mac: [u8; 6]) -> bool {
    Ethernet::parse(frame).is_some_and(|e| {
        e.src == mac
            && e.ethertype == ETHERTYPE_IPV4
            && Ipv4::parse(e.payload).is_some_and(|ip| ip.protocol == IPPROTO_VRRP)
    })
}

/// (count, gaps longer than [`LATE_FACTOR`] intervals, longest gap in ms) of sorted
/// timestamps in ns.
fn gap_stats(times: &[u64], interval: Duration) -> (usize, usize, f64) {
    let late_ns = interval.as_nanos() as f64 * LATE_FACTOR;
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]) as f64)
        .collect();
    let late = gaps.iter().filter(|&&g| g > late_ns).count();
    let max = gaps.iter().copied().fold(0.0, f64::max) / 1e6;
    (times.len(), late, max)
}

/// Nanoseconds since the Unix epoch (the clock of capture timestamps).
fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The CPU hogs: `stress-ng --cpu <workers>` at nice 0 in the root namespace, in a process
/// group of their own that is killed on drop; bounded by `--timeout` should we be killed.
struct Hogs {
    child: Child,
    log: PathBuf,
}

impl Hogs {
    /// Starts `workers` hogs for at most `timeout`.
    fn start(workers: usize, timeout: Duration) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let log = std::env::temp_dir().join(format!("vipd-starvation-{}.log", std::process::id()));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("stress-ng")
            .process_group(0)
            .args(["--cpu", &workers.to_string(), "--cpu-method", CPU_METHOD])
            .args(["--timeout", &format!("{}s", timeout.as_secs().max(1))])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting stress-ng (is it installed? see ./scripts/setup.sh)")?;
        let mut hogs = Self { child, log };
        // A bad option makes stress-ng exit at once.
        thread::sleep(Duration::from_millis(300));
        if let Some(status) = hogs.child.try_wait()? {
            let text = std::fs::read_to_string(&hogs.log).unwrap_or_default();
            bail!("stress-ng exited at once ({status}): {text}");
        }
        Ok(hogs)
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the process group we created for stress-ng.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A UDP flood across a bridge between two namespaces of its own: the sender threads'
/// sockets live in one namespace, an unread socket in the other takes the datagrams.
/// Stops at its deadline or on drop.
struct Flood {
    stop: Arc<AtomicBool>,
    senders: Vec<JoinHandle<u64>>,
    source: Host,
    // Dropped after the senders are stopped (fields drop in order, after `Drop::drop`).
    _sink: UdpSocket,
    lab: Lab,
}

impl Flood {
    /// Makes the two namespaces and the sink.
    fn new() -> anyhow::Result<Self> {
        let mut lab = Lab::new("sf")?;
        let source = lab.add_host("fa", &format!("{FLOOD_SOURCE}/24"), "02:00:00:00:06:01")?;
        let sink = lab.add_host("fb", &format!("{FLOOD_SINK}/24"), "02:00:00:00:06:02")?;
        let sink = lab.in_netns(&sink, || {
            UdpSocket::bind((FLOOD_SINK, FLOOD_PORT)).context("binding the flood's sink")
        })?;
        Ok(Self {
            stop: Arc::new(AtomicBool::new(false)),
            senders: Vec::new(),
            source,
            _sink: sink,
            lab,
        })
    }

    /// Starts `threads` senders, each as fast as it can, for at most `limit`.
    fn start(&mut self, threads: usize, limit: Duration) -> anyhow::Result<()> {
        let target = SocketAddr::from((FLOOD_SINK.parse::<std::net::Ipv4Addr>()?, FLOOD_PORT));
        let deadline = Instant::now() + limit;
        for _ in 0..threads {
            let socket = self.lab.in_netns(&self.source, || {
                UdpSocket::bind((FLOOD_SOURCE, 0)).context("binding a flood sender")
            })?;
            let stop = Arc::clone(&self.stop);
            self.senders.push(thread::spawn(move || {
                let payload = [0u8; FLOOD_PAYLOAD];
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    for _ in 0..64 {
                        // A full queue (ENOBUFS) is part of the load, not an error.
                        if socket.send_to(&payload, target).is_ok() {
                            sent += 1;
                        }
                    }
                }
                sent
            }));
        }
        Ok(())
    }

    /// Stops the senders; the datagrams they sent.
    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.senders.drain(..).map(|t| t.join().unwrap_or(0)).sum()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The results table (markdown), with what was measured and how.
fn table(rows: &[Row], machine: &Machine, hogs: usize, flooders: usize) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "False failovers of healthy two-node clusters while every core is saturated (no fault\n\
         injected). All clusters run at once, each on a bridge of its own, under the same load:\n\
         `cpu`: `stress-ng --cpu {hogs} --cpu-method {CPU_METHOD}` ({HOGS_PER_CORE} per core, nice 0) in the root\n\
         namespace; `softirq`: the same plus a UDP flood ({flooders} senders, {FLOOD_PAYLOAD}-byte datagrams)\n\
         across a bridge between two other namespaces. Events are counted from a settled state\n\
         over the load window only."
    );
    let _ = writeln!(
        t,
        "\nfalse failovers: vipd pool: peer losses by timeout, summed over both nodes; VRRP: the\n\
         Backup entering Master plus the Master leaving it. heartbeats: sent by both vipd nodes\n\
         over their whole run, and as a share of those due on schedule (sends on changes and the\n\
         LEAVING burst at stop count too, so it can pass 100%), with the late ones and the latest\n\
         as the daemons counted them, where they do. late adverts: gaps longer\n\
         than {LATE_FACTOR}× the advert interval between the Master's adverts, from tcpdump's kernel\n\
         timestamps at the Master's eth0 (sent) / at the Backup's (heard)."
    );
    let _ = writeln!(
        t,
        "vipd rows run with the daemon's defaults (fast path at SCHED_FIFO 40, shadow senders \
         on) unless the row says otherwise."
    );
    let _ = writeln!(t, "Machine: {}.\n", machine.line());
    let _ = writeln!(
        t,
        "| system | load | window (s) | false failovers | heartbeats sent (% of schedule) | late adverts sent / heard | max advert gap ms sent / heard | notes |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|");
    for r in rows {
        let heartbeats = match (r.heartbeats_sent, r.heartbeats_scheduled) {
            (Some(s), Some(d)) if d > 0.0 => format!("{s} ({:.1}%)", s as f64 * 100.0 / d),
            (Some(s), _) => s.to_string(),
            _ => "-".into(),
        };
        let heartbeats = match (r.heartbeats_late, r.max_late_us) {
            (Some(l), Some(m)) => format!("{heartbeats}; {l} late, max {:.3} ms", m as f64 / 1e3),
            _ => heartbeats,
        };
        let at = |at: &str| r.adverts.iter().find(|a| a.at == at);
        let pair = |f: &dyn Fn(&Adverts) -> String| {
            if r.adverts.is_empty() {
                return "-".to_string();
            }
            let side = |s: &str| at(s).map_or("?".into(), f);
            format!("{} / {}", side("sent"), side("heard"))
        };
        let late = pair(&|a: &Adverts| format!("{} of {}", a.late, a.count));
        let gap = pair(&|a: &Adverts| format!("{:.3}", a.max_gap_ms));
        let mut notes = r.notes.clone();
        if let Some(o) = r.other_peer_losses.filter(|&o| o > 0) {
            notes.push(format!("{o} peer losses for another reason"));
        }
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} | {} | {heartbeats} | {late} | {gap} | {} |",
            r.system,
            r.load.name(),
            r.window_s,
            r.false_failovers,
            notes.join("; ")
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_late_gaps() {
        let ms = 1_000_000;
        let times = [0, 10 * ms, 20 * ms, 36 * ms, 46 * ms, 100 * ms];
        let (count, late, max) = gap_stats(&times, Duration::from_millis(10));
        assert_eq!((count, late), (6, 2));
        assert!((max - 54.0).abs() < 1e-9);
        assert_eq!(gap_stats(&[], Duration::from_millis(10)), (0, 0, 0.0));
    }

    #[test]
    fn parses_durations_and_tcpdump_drops() {
        assert_eq!(parse_duration("2ms"), Some(Duration::from_millis(2)));
        assert_eq!(parse_duration("500us"), Some(Duration::from_micros(500)));
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("fast"), None);
        let log =
            "12 packets captured\n12 packets received by filter\n3 packets dropped by kernel\n";
        assert_eq!(dropped_by_kernel(log), Some(3));
        assert_eq!(log_time("12.500000  INFO vipd: stopped"), Some(12.5));
    }
}
