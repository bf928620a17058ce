//! `cargo xtask bench failover`: the client-visible outage across a hard failure of the
//! VIP's owner (link cut and SIGKILL of the daemon and its children), for vipd at its
//! default and at 2ms/8ms and 1ms/4ms, vipd in VRRP mode, keepalived (VRRPv3) at its
//! smallest advert interval and its default, and ucarp at its fastest — same topology,
//! same run.
//!
//! Topology: three servers and a client on one bridge; every server runs the echo
//! responder bound to the VIP; the client probes the VIP at a fixed rate.
//!
//! Every run also records a timeline on CLOCK_MONOTONIC (one clock for all the lab's
//! namespaces): the kill (taken in the bench right before the owner's link goes down),
//! the kernel's time of the last heartbeat the new owner heard from it, the loss declared,
//! the address added and the first announcement (the new owner's `vipd::timeline` log),
//! and the client's first reply from the new owner (the probe). [`breakdown_table`] shows
//! where the milliseconds go.
//!
//! The scale row ([`run_scale`]): a pool of many VIPs on two vipd nodes at 5ms/15ms; each
//! run hard-kills one node and measures until the LAST of its VIPs answers the client from
//! the survivor. Method: the client probes every VIP of the failed node round-robin (20,000
//! requests/s in all) and records each VIP's first reply from the survivor; a VIP leaves the
//! rotation once the survivor has answered it, so the VIPs still waiting are probed ever
//! faster and the last one's first reply is timed to within the gap between the two last
//! requests sent to it (reported as the resolution). The survivor's log gives loss
//! declared → last VIP's first announcement.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::{
    ms,
    probe::{ManyReport, ProbeReport, monotonic_ns},
    quantile,
};
use vipd_lab::{
    lab::{Host, Lab, wait_until},
    timeline,
};

const VIP: &str = "192.0.2.200";
/// The VRRP group beside the pool in the mixed row (every node at the default priority:
/// the highest address is Master), on its own VIP.
const MIXED_GROUP: &str = "51,vip=192.0.2.250/32,interval=10ms";
const PORT: u16 = 9000;
const WAIT: Duration = Duration::from_secs(20);

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum System {
    /// vipd without interval flags: its defaults, whatever they are (the row's label says
    /// what the daemon logged).
    VipdDefault,
    /// vipd at 2 ms heartbeats, 8 ms dead interval.
    VipdFast,
    /// vipd at 1 ms heartbeats, 4 ms dead interval.
    Vipd1ms,
    /// vipd at 1 ms heartbeats, 3 ms dead interval.
    Vipd1ms3,
    /// keepalived, VRRPv3, advert_int 0.01 (the smallest it accepts: one centisecond).
    KeepalivedFast,
    /// keepalived, VRRPv3, advert_int 1 (its default).
    KeepalivedDefault,
    /// ucarp at its fastest stable setting: advbase 1 (advbase 0 with a skew is accepted,
    /// but flaps: thousands of state changes a minute with no failure at all).
    UcarpFast,
    /// vipd in VRRP mode, adverts every centisecond (like keepalived's 0.01).
    VrrpFast,
    /// vipd in VRRP mode, adverts every second (the VRRP default).
    VrrpDefault,
    /// vipd in VRRP mode, VRRPv2 at its fastest (adverts every second: v2 has whole
    /// seconds only).
    VrrpV2,
    /// keepalived, VRRPv2 (its default version), advert_int 1 (v2's fastest).
    KeepalivedV2,
    /// The scale row: a pool of many VIPs on two vipd nodes ([`run_scale`]).
    VipdScale,
    /// vipd at 1 ms / 4 ms with a VRRP group (adverts every 10 ms, another VIP) in the same
    /// daemon: the pool's failover while a second fast path runs beside it.
    VipdMixed,
}

impl System {
    /// Every system, in table order.
    pub const ALL: [System; 13] = [
        System::VipdDefault,
        System::Vipd1ms3,
        System::Vipd1ms,
        System::VipdMixed,
        System::VipdFast,
        System::VrrpFast,
        System::VrrpDefault,
        System::KeepalivedFast,
        System::KeepalivedDefault,
        System::VrrpV2,
        System::KeepalivedV2,
        System::UcarpFast,
        System::VipdScale,
    ];

    /// Its name for `--systems`.
    pub fn key(self) -> &'static str {
        match self {
            System::VipdDefault => "vipd-default",
            System::Vipd1ms => "vipd-1ms",
            System::Vipd1ms3 => "vipd-1ms-3ms",
            System::VipdFast => "vipd-2ms",
            System::VrrpFast => "vrrp-10ms",
            System::VrrpDefault => "vrrp-1s",
            System::VrrpV2 => "vrrp-v2",
            System::KeepalivedV2 => "keepalived-v2",
            System::KeepalivedFast => "keepalived-0.01",
            System::KeepalivedDefault => "keepalived-1",
            System::UcarpFast => "ucarp",
            System::VipdScale => "vipd-scale",
            System::VipdMixed => "vipd-mixed",
        }
    }

    /// Parses a [`System::key`] (for clap).
    pub fn parse(key: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.key() == key)
            .ok_or_else(|| {
                let keys: Vec<&str> = Self::ALL.iter().map(|s| s.key()).collect();
                format!("unknown system {key:?}; one of {}", keys.join(", "))
            })
    }

    /// Its name in tables and files when no run says better (see [`Run::label`]).
    pub fn name(self) -> &'static str {
        match self {
            System::VipdDefault => "vipd (default)",
            System::VipdFast => "vipd (2ms/8ms)",
            System::Vipd1ms => "vipd (1ms/4ms)",
            System::Vipd1ms3 => "vipd (1ms/3ms)",
            System::KeepalivedFast => "keepalived VRRPv3 (advert_int 0.01)",
            System::KeepalivedDefault => "keepalived VRRPv3 (advert_int 1, default)",
            System::UcarpFast => "ucarp (advbase 1, its fastest stable setting)",
            System::VrrpFast => "vipd VRRP mode (advert 10ms)",
            System::VrrpDefault => "vipd VRRP mode (advert 1s, default)",
            System::VrrpV2 => "vipd VRRP mode, VRRPv2 (advert 1s, v2's fastest)",
            System::KeepalivedV2 => "keepalived VRRPv2 (advert_int 1, v2's fastest)",
            System::VipdScale => "vipd pool of many VIPs (5ms/15ms)",
            System::VipdMixed => "vipd (1ms/4ms) + VRRP group (10ms), one daemon",
        }
    }

    /// The interval flags of a vipd pool-mode row, `None` for the others.
    fn vipd_flags(self) -> Option<&'static [&'static str]> {
        match self {
            System::VipdDefault => Some(&[]),
            System::VipdFast => Some(&["--interval", "2ms", "--dead-interval", "8ms"]),
            System::Vipd1ms => Some(&["--interval", "1ms", "--dead-interval", "4ms"]),
            System::Vipd1ms3 => Some(&["--interval", "1ms", "--dead-interval", "3ms"]),
            System::VipdScale => Some(&SCALE_FLAGS),
            System::VipdMixed => Some(&[
                "--interval",
                "1ms",
                "--dead-interval",
                "4ms",
                "--vrrp",
                MIXED_GROUP,
            ]),
            _ => None,
        }
    }

    /// How long to probe: long enough for the slowest expected takeover. For vipd's pool
    /// mode, from the dead interval the daemon reported.
    fn probe_duration(self, dead: Option<Duration>) -> Duration {
        match self {
            System::VipdDefault
            | System::VipdFast
            | System::Vipd1ms
            | System::Vipd1ms3
            | System::VipdMixed
            | System::VipdScale => (dead.unwrap_or(Duration::from_millis(300)) * 5)
                .clamp(Duration::from_millis(1000), Duration::from_secs(60)),
            System::KeepalivedFast | System::VrrpFast => Duration::from_millis(1000),
            System::KeepalivedDefault
            | System::UcarpFast
            | System::VrrpDefault
            | System::VrrpV2
            | System::KeepalivedV2 => Duration::from_millis(6000),
        }
    }

    /// How long the owner must stay unchanged before a run: longer than an election or
    /// preemption takes.
    fn settle(self, dead: Option<Duration>) -> Duration {
        match self {
            System::KeepalivedDefault
            | System::UcarpFast
            | System::VrrpDefault
            | System::VrrpV2
            | System::KeepalivedV2 => Duration::from_secs(5),
            _ => (dead.unwrap_or_default() * 5).max(Duration::from_millis(1500)),
        }
    }

    /// A log line the daemon prints once it takes part in the group.
    fn ready_line(self) -> &'static str {
        match self {
            System::VipdDefault
            | System::VipdFast
            | System::Vipd1ms
            | System::Vipd1ms3
            | System::VipdMixed
            | System::VipdScale => "hold-down over",
            System::KeepalivedFast | System::KeepalivedDefault | System::KeepalivedV2 => "STATE",
            System::UcarpFast => "Switching to state",
            System::VrrpFast | System::VrrpDefault | System::VrrpV2 => "vrrp state",
        }
    }
}

/// One measured failover.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    /// The system.
    pub system: System,
    /// The row's label, with the intervals the daemon reported (empty in older files).
    #[serde(default)]
    pub label: String,
    /// What the probe saw.
    pub probe: ProbeReport,
    /// Last heartbeat heard from the failed node → loss declared, by the new owner (µs).
    pub detection_us: Option<f64>,
    /// Loss declared → first gratuitous ARP, by the new owner (µs).
    pub takeover_us: Option<f64>,
    /// The run's timeline (absent in older files).
    #[serde(default)]
    pub timeline: Option<Timeline>,
}

/// One failover on CLOCK_MONOTONIC (ns), from the kill to the client's first reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timeline {
    /// Right before the owner's link went down (then its daemon was SIGKILLed).
    pub kill_ns: u64,
    /// The kernel's time of the last heartbeat (VRRP: advert) the new owner heard from it.
    pub last_heartbeat_ns: Option<u64>,
    /// The new owner declared it lost (VRRP: Master_Down_Timer fired).
    pub loss_ns: Option<u64>,
    /// The new owner added the VIP.
    pub added_ns: Option<u64>,
    /// The new owner's first announcement of it (gratuitous ARP).
    pub announced_ns: Option<u64>,
    /// The client's first reply from the new owner.
    pub first_reply_ns: Option<u64>,
}

/// The steps of a [`Timeline`], as in [`Timeline::steps`].
pub const STEPS: [&str; 6] = [
    "kill → last heartbeat",
    "last heartbeat → loss declared",
    "loss → address added",
    "address → first announce",
    "first announce → client's first reply",
    "kill → client's first reply",
];

impl Timeline {
    /// The five steps from the kill to the client's first reply and their sum, µs (the
    /// first is negative when the last heartbeat left before the kill).
    pub fn steps(&self) -> [Option<f64>; 6] {
        let d =
            |a: Option<u64>, b: Option<u64>| Some((i128::from(b?) - i128::from(a?)) as f64 / 1e3);
        let kill = Some(self.kill_ns);
        [
            d(kill, self.last_heartbeat_ns),
            d(self.last_heartbeat_ns, self.loss_ns),
            d(self.loss_ns, self.added_ns),
            d(self.added_ns, self.announced_ns),
            d(self.announced_ns, self.first_reply_ns),
            d(kill, self.first_reply_ns),
        ]
    }
}

/// The label of `system`'s row: what its runs recorded, else its static name.
pub fn label(runs: &[Run], system: System) -> String {
    runs.iter()
        .find(|r| r.system == system && !r.label.is_empty())
        .map_or_else(|| system.name().to_string(), |r| r.label.clone())
}

struct Node {
    host: Host,
    id: u32,
    vipd: usize,
    restarts: u32,
}

/// Runs `runs` failovers of `system`, probing at `rate` requests per second.
pub fn run(
    system: System,
    runs: usize,
    rate: u32,
    vipd: &Path,
    xtask: &Path,
) -> anyhow::Result<Vec<Run>> {
    anyhow::ensure!(
        system != System::VipdScale,
        "the scale row runs in run_scale"
    );
    let mut lab = Lab::new("bf")?;
    let client = lab.add_host("client", "192.0.2.100/24", "02:00:00:00:00:64")?;
    let mut nodes = Vec::new();
    for i in 1..=3u32 {
        let host = lab.add_host(
            &format!("s{i}"),
            &format!("192.0.2.{}/24", 10 + i),
            &format!("02:00:00:00:00:{:02x}", 10 + i),
        )?;
        let bind = format!("{VIP}:{PORT}");
        lab.spawn(
            &host,
            &format!("echo-s{i}"),
            xtask,
            &["echo", "--bind", &bind, "--name", &host.name],
        )?;
        let vipd_proc = start_daemon(&mut lab, &host, i, system, vipd, 0)?;
        nodes.push(Node {
            host,
            id: i,
            vipd: vipd_proc,
            restarts: 0,
        });
    }
    for n in &nodes {
        lab.proc(n.vipd)
            .wait_for_line(&[system.ready_line()], WAIT)?;
    }
    let (label, dead) = match system.vipd_flags() {
        Some(flags) => vipd_label(system, &lab.proc(nodes[0].vipd).output(), vipd, flags),
        None => (system.name().to_string(), None),
    };
    if label != system.name() {
        println!("  {label}");
    }
    let duration = system.probe_duration(dead);
    let mut results = Vec::new();
    for r in 0..runs {
        let owner = wait_stable_owner(&lab, &nodes, system.settle(dead))?;
        let out = lab.dir().join(format!("probe-{r}.json"));
        let args = [
            "probe",
            "--target",
            &format!("{VIP}:{PORT}"),
            "--rate",
            &rate.to_string(),
            "--duration-ms",
            &duration.as_millis().to_string(),
            "--out",
            out.to_str().context("path")?,
        ];
        let probe = lab.spawn(&client, &format!("probe-{r}"), xtask, &args)?;
        // The schedule is the experiment: let the probe see the owner answer first.
        std::thread::sleep(duration / 5);
        let failed = &nodes[owner];
        let kill_ns = cut_link(&lab, &failed.host)?;
        lab.proc(failed.vipd).signal(libc::SIGKILL)?;
        if !lab
            .proc(probe)
            .wait_exit(duration + Duration::from_secs(10))?
        {
            bail!("probe {r} failed: {}", lab.proc(probe).output());
        }
        let report: ProbeReport = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
        let new_owner = wait_single_owner_except(&lab, &nodes, owner)?;
        let takeover = timeline::last_takeover(
            &lab.proc(nodes[new_owner].vipd).output(),
            Some(failed.id),
            VIP,
        )
        .filter(|t| t.detected_ns >= kill_ns);
        let detection_us = takeover
            .as_ref()
            .map(|t| t.detected_ns.saturating_sub(t.last_seen_ns) as f64 / 1e3);
        let takeover_us = takeover.as_ref().and_then(|t| {
            t.announced_ns
                .map(|a| a.saturating_sub(t.detected_ns) as f64 / 1e3)
        });
        let tl = Timeline {
            kill_ns,
            last_heartbeat_ns: takeover.as_ref().map(|t| t.last_seen_ns),
            loss_ns: takeover.as_ref().map(|t| t.detected_ns),
            added_ns: takeover.as_ref().and_then(|t| t.added_ns),
            announced_ns: takeover.as_ref().and_then(|t| t.announced_ns),
            first_reply_ns: report.first_new_reply_ns.filter(|&f| f >= kill_ns),
        };
        println!(
            "  run {r:>3}: {} → {}: outage {:>9.0} µs, lost {:>5}, dup {:>5}, detection {:>9} µs, takeover {:>7} µs",
            failed.host.name,
            nodes[new_owner].host.name,
            report.longest_unanswered_us,
            report.lost,
            report.duplicates,
            detection_us.map_or("-".into(), |d| format!("{d:.0}")),
            takeover_us.map_or("-".into(), |t| format!("{t:.0}")),
        );
        println!("            {}", steps_line(&tl));
        results.push(Run {
            system,
            label: label.clone(),
            probe: report,
            detection_us,
            takeover_us,
            timeline: Some(tl),
        });

        // Restore the failed node and wait until it is back in the pool.
        let i = owner;
        lab.set_link(&nodes[i].host.clone(), true)?;
        nodes[i].restarts += 1;
        let (host, id, restarts) = (nodes[i].host.clone(), nodes[i].id, nodes[i].restarts);
        nodes[i].vipd = start_daemon(&mut lab, &host, id, system, vipd, restarts)?;
    }
    Ok(results)
}

/// One line with a timeline's steps, in ms.
fn steps_line(t: &Timeline) -> String {
    let s = t.steps();
    let short = [
        "kill→hb",
        "hb→loss",
        "loss→addr",
        "addr→ann",
        "ann→reply",
        "= kill→reply",
    ];
    let parts: Vec<String> = short
        .iter()
        .zip(s)
        .map(|(name, v)| format!("{name} {}", ms(v)))
        .collect();
    format!("{} ms", parts.join(", "))
}

/// A vipd row's label from the intervals the daemon logged at start ("vipd started":
/// interval, dead_interval), else from `vipd check-config` with the same flags; and the
/// dead interval.
fn vipd_label(
    system: System,
    log: &str,
    vipd: &Path,
    flags: &[&str],
) -> (String, Option<Duration>) {
    let intervals = timeline::started_intervals(log).or_else(|| {
        let out = std::process::Command::new(vipd)
            .args(["check-config", "-i", "eth0", "-n", "1", "--vip", VIP])
            .args(flags)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let key = |k: &str| {
            text.lines().find_map(|l| {
                let (name, value) = l.split_once('=')?;
                (name.trim() == k).then(|| value.trim().trim_matches('"').to_string())
            })
        };
        Some((key("interval")?, key("dead_interval")?))
    });
    let Some((interval, dead)) = intervals else {
        return (system.name().to_string(), None);
    };
    let parsed = timeline::parse_duration(&dead);
    let label = match system {
        System::VipdDefault => format!("vipd (default: {interval}/{dead})"),
        System::VipdMixed => format!("vipd ({interval}/{dead}) + VRRP group (10ms), one daemon"),
        _ => format!("vipd ({interval}/{dead})"),
    };
    (label, parsed)
}

/// Takes `host`'s eth0 down from inside its namespace (SIOCSIFFLAGS) and returns
/// CLOCK_MONOTONIC right before the call: the kill time of the timeline, free of the
/// fork/exec of an `ip` command.
fn cut_link(lab: &Lab, host: &Host) -> anyhow::Result<u64> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    lab.in_netns(host, || {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_INET)");
        }
        // SAFETY: a descriptor we just opened and nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"eth0") {
            *d = *s as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS fills the flags of the named interface.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut ifr) } != 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS eth0");
        }
        // SAFETY: the union member SIOCGIFFLAGS wrote.
        unsafe { ifr.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short) };
        let kill_ns = monotonic_ns();
        // SAFETY: SIOCSIFFLAGS with the flags just read, minus IFF_UP.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const ifr) } != 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS eth0");
        }
        Ok(kill_ns)
    })
}

/// Starts vipd (pool mode) in `host` and waits until it takes part.
fn start_vipd(
    lab: &mut Lab,
    host: &Host,
    id: u32,
    log: &str,
    vipd: &Path,
    extra: &[&str],
) -> anyhow::Result<usize> {
    let p = lab.spawn_vipd(host, id, log, vipd, extra)?;
    lab.proc(p).wait_for_line(&["hold-down over"], WAIT)?;
    Ok(p)
}

fn start_daemon(
    lab: &mut Lab,
    host: &Host,
    id: u32,
    system: System,
    vipd: &Path,
    run: u32,
) -> anyhow::Result<usize> {
    let log = format!("{system:?}-{}-{run}", host.name);
    let p = match system {
        System::VipdDefault
        | System::VipdFast
        | System::Vipd1ms
        | System::Vipd1ms3
        | System::VipdMixed
        | System::VipdScale => {
            let mut args = vec!["--vip", VIP, "--hold-down", "300ms"];
            args.extend(system.vipd_flags().unwrap_or_default());
            return start_vipd(lab, host, id, &log, vipd, &args);
        }
        System::VrrpFast | System::VrrpDefault | System::VrrpV2 => {
            let interval = match system {
                System::VrrpFast => "10ms",
                System::VrrpV2 => "1s,version=2",
                _ => "1s",
            };
            let spec = format!(
                "51,priority={},vip={VIP}/32,interval={interval}",
                250 - 50 * id
            );
            lab.spawn_vipd(host, id, &log, vipd, &["--vrrp", &spec])?
        }
        System::KeepalivedFast | System::KeepalivedDefault | System::KeepalivedV2 => {
            let advert = if system == System::KeepalivedFast {
                "0.01"
            } else {
                "1"
            };
            let version = if system == System::KeepalivedV2 { 2 } else { 3 };
            let conf = format!(
                "global_defs {{\n    vrrp_version {version}\n    router_id {}\n}}\n\
                 vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n\
                 \x20   priority {}\n    advert_int {advert}\n    virtual_ipaddress {{\n        {VIP}/32 dev eth0\n    }}\n}}\n",
                host.name,
                250 - 50 * id,
            );
            lab.spawn_keepalived(host, &log, &conf)?
        }
        System::UcarpFast => {
            let dir = lab.dir().join(&log);
            std::fs::create_dir_all(&dir)?;
            let (up, down) = (dir.join("up.sh"), dir.join("down.sh"));
            std::fs::write(&up, "#!/bin/sh\nexec ip addr add \"$2\"/32 dev \"$1\"\n")?;
            std::fs::write(&down, "#!/bin/sh\nexec ip addr del \"$2\"/32 dev \"$1\"\n")?;
            for f in [&up, &down] {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755))?;
            }
            let skew = id.to_string();
            let args = [
                "-i",
                "eth0",
                "-s",
                &host.addr,
                "-v",
                "51",
                "-p",
                "vipdbench",
                "-a",
                VIP,
                "-u",
                up.to_str().context("path")?,
                "-d",
                down.to_str().context("path")?,
                "-b",
                "1",
                "-k",
                &skew,
                "-P",
            ];
            lab.spawn(host, &log, Path::new("ucarp"), &args)?
        }
    };
    lab.proc(p).wait_for_line(&[system.ready_line()], WAIT)?;
    Ok(p)
}

/// The server holding the VIP, once exactly one has held it for `settle` without change
/// (so a pending preemption or election is over before the next failure).
fn wait_stable_owner(lab: &Lab, nodes: &[Node], settle: Duration) -> anyhow::Result<usize> {
    let mut owner = None;
    let mut since = std::time::Instant::now();
    wait_until("the VIP on exactly one server, stably", WAIT * 2, || {
        let on: Vec<usize> = (0..nodes.len())
            .filter(|&i| lab.has_address(&nodes[i].host, VIP).unwrap_or(false))
            .collect();
        let now = (on.len() == 1).then(|| on[0]);
        if now != owner {
            owner = now;
            since = std::time::Instant::now();
        }
        Ok(owner.is_some() && since.elapsed() >= settle)
    })?;
    Ok(owner.unwrap_or(0))
}
fn wait_single_owner_except(lab: &Lab, nodes: &[Node], failed: usize) -> anyhow::Result<usize> {
    let mut owner = 0;
    wait_until("a survivor holding the VIP", WAIT, || {
        let on: Vec<usize> = (0..nodes.len())
            .filter(|&i| i != failed && lab.has_address(&nodes[i].host, VIP).unwrap_or(false))
            .collect();
        owner = on.first().copied().unwrap_or(0);
        Ok(on.len() == 1)
    })?;
    Ok(owner)
}

/// "Where the milliseconds go": p50 of each step of the timeline, per row.
pub fn breakdown_table(runs: &[Run]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Where the milliseconds go (p50 of each step over the runs, ms; every time is CLOCK_MONOTONIC,\n\
         one clock for all the lab's namespaces). kill = right before the owner's link goes down (then\n\
         SIGKILL); last heartbeat = the kernel's receive time of the last heartbeat (VRRP: advert) the new\n\
         owner heard from it, negative when it left before the kill; loss declared, address added and\n\
         first announce (gratuitous ARP) = the new owner's vipd::timeline log; client's first reply = the\n\
         probe's receive time of the first reply from the new owner. The steps are p50s each, so they need\n\
         not add up to the p50 of the total. keepalived and ucarp log no timeline: only the total.\n"
    );
    let _ = writeln!(t, "| system | runs | {} |", STEPS.join(" | "));
    let _ = writeln!(t, "|---|---|{}", "---|".repeat(STEPS.len()));
    for system in System::ALL {
        let of: Vec<&Timeline> = runs
            .iter()
            .filter(|r| r.system == system)
            .filter_map(|r| r.timeline.as_ref())
            .collect();
        if of.is_empty() {
            continue;
        }
        let cells: Vec<String> = (0..STEPS.len())
            .map(|i| {
                let mut v: Vec<f64> = of.iter().filter_map(|t| t.steps()[i]).collect();
                v.sort_by(f64::total_cmp);
                ms(quantile(&v, 0.5))
            })
            .collect();
        let _ = writeln!(
            t,
            "| {} | {} | {} |",
            label(runs, system),
            of.len(),
            cells.join(" | ")
        );
    }
    t
}

// ---------------------------------------------------------------------------------------
// The scale row.

/// vipd nodes in the scale row.
pub const SCALE_NODES: u32 = 2;
/// The scale row's vipd flags.
const SCALE_FLAGS: [&str; 4] = ["--interval", "5ms", "--dead-interval", "15ms"];
/// The scale row's probe: requests per second over all the failed node's VIPs.
pub const SCALE_RATE: u32 = 20_000;

/// `n` VIPs from the documentation ranges, never a lab host's address: 198.51.100.1-254,
/// 203.0.113.1-254, 192.0.2.1-254 except .10-.19 (servers), .100 (client) and .200, then
/// 2001:db8::5:1, 2001:db8::5:2, … (IPv4 has only some 750 documentation addresses).
pub fn scale_pool(n: usize) -> Vec<IpAddr> {
    let v4 = (1..=254u8)
        .map(|i| [198, 51, 100, i])
        .chain((1..=254u8).map(|i| [203, 0, 113, i]))
        .chain(
            (1..=254u8)
                .filter(|i| !(10..20).contains(i) && *i != 100 && *i != 200)
                .map(|i| [192, 0, 2, i]),
        )
        .map(IpAddr::from);
    let v6 = (1..=u16::MAX).map(|i| IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 5, i)));
    v4.chain(v6).take(n).collect()
}

/// One failover of the scale row (CLOCK_MONOTONIC ns).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScaleRun {
    /// VIPs in the pool.
    pub vips: usize,
    /// VIPs the failed node held (all moved to the survivor).
    pub moved: usize,
    /// The failed node.
    pub failed: String,
    /// Right before its link went down (then its daemon was SIGKILLed).
    pub kill_ns: u64,
    /// The kernel's time of the last heartbeat the survivor heard from it.
    pub last_heartbeat_ns: Option<u64>,
    /// The survivor declared it lost.
    pub loss_ns: Option<u64>,
    /// The survivor added the first and the last of its VIPs.
    pub first_added_ns: Option<u64>,
    /// The survivor added the last of its VIPs.
    pub last_added_ns: Option<u64>,
    /// The survivor's first announcement of the last VIP it announced, and that VIP.
    pub last_announce_ns: Option<u64>,
    /// That VIP.
    pub last_announce_vip: Option<IpAddr>,
    /// VIPs of the failed node with no first announcement by the survivor in its log.
    pub not_announced: usize,
    /// The client's first reply from the survivor for the last VIP to answer, and that VIP.
    pub last_reply_ns: Option<u64>,
    /// That VIP.
    pub last_reply_vip: Option<IpAddr>,
    /// The time between the two last requests sent to that VIP: the resolution of
    /// `last_reply_ns` (µs).
    pub last_reply_resolution_us: Option<f64>,
    /// VIPs of the failed node the survivor never answered during the probe.
    pub not_answered: usize,
    /// Requests per second the probe sent, in all.
    pub probe_rate: f64,
}

impl ScaleRun {
    fn since(from: Option<u64>, to: Option<u64>) -> Option<f64> {
        Some((i128::from(to?) - i128::from(from?)) as f64 / 1e3)
    }
    /// Loss declared → the last VIP's first announcement (µs).
    pub fn loss_to_last_announce_us(&self) -> Option<f64> {
        Self::since(self.loss_ns, self.last_announce_ns)
    }
    /// Loss declared → the client's first reply for the last VIP to answer (µs).
    pub fn loss_to_last_reply_us(&self) -> Option<f64> {
        Self::since(self.loss_ns, self.last_reply_ns)
    }
    /// Kill → the client's first reply for the last VIP to answer (µs).
    pub fn kill_to_last_reply_us(&self) -> Option<f64> {
        Self::since(Some(self.kill_ns), self.last_reply_ns)
    }
}

/// The scale row: `runs` hard failures of one of [`SCALE_NODES`] vipd nodes sharing a pool
/// of `vips` VIPs; returns the row's label and the runs. The node killed alternates.
pub fn run_scale(
    vips: usize,
    runs: usize,
    vipd: &Path,
    xtask: &Path,
) -> anyhow::Result<(String, Vec<ScaleRun>)> {
    let pool = scale_pool(vips);
    anyhow::ensure!(pool.len() == vips && vips >= 2, "2 to 65,000 VIPs");
    let v6 = pool.iter().any(IpAddr::is_ipv6);
    let mut lab = Lab::new("bsc")?;
    let client = lab.add_host("client", "192.0.2.100/24", "02:00:00:00:00:64")?;
    // The other documentation ranges are on the same segment: the client ARPs for them.
    for net in ["198.51.100.0/24", "203.0.113.0/24"] {
        lab.ip(&client.netns, &["route", "add", net, "dev", "eth0"])?;
    }
    if v6 {
        lab.add_address(&client, "2001:db8::100/64")?;
    }
    let conf = lab.dir().join("scale-pool.toml");
    let mut text = String::from("[pool]\nvips = [\n");
    for v in &pool {
        let _ = writeln!(text, "    \"{v}\",");
    }
    text.push_str("]\n");
    std::fs::write(&conf, text)?;
    let conf = conf.to_str().context("path")?.to_owned();
    let vipd_args: Vec<&str> = ["--config", &conf, "--hold-down", "300ms"]
        .into_iter()
        .chain(SCALE_FLAGS)
        .collect();
    let mut nodes = Vec::new();
    for i in 1..=SCALE_NODES {
        let host = lab.add_host(
            &format!("s{i}"),
            &format!("192.0.2.{}/24", 10 + i),
            &format!("02:00:00:00:00:{:02x}", 10 + i),
        )?;
        if v6 {
            lab.add_address(&host, &format!("2001:db8::{}/64", 10 + i))?;
        }
        // One responder per family, answering from whichever VIP a request went to.
        let binds: &[&str] = if v6 {
            &["0.0.0.0", "[::]"]
        } else {
            &["0.0.0.0"]
        };
        for (k, b) in binds.iter().enumerate() {
            let bind = format!("{b}:{PORT}");
            lab.spawn(
                &host,
                &format!("echo-s{i}-{k}"),
                xtask,
                &["echo", "--bind", &bind, "--name", &host.name],
            )?;
        }
        let p = start_vipd(
            &mut lab,
            &host,
            i,
            &format!("scale-s{i}-0"),
            vipd,
            &vipd_args,
        )?;
        nodes.push(Node {
            host,
            id: i,
            vipd: p,
            restarts: 0,
        });
    }
    let (label, _) = vipd_label(
        System::VipdScale,
        &lab.proc(nodes[0].vipd).output(),
        vipd,
        &SCALE_FLAGS,
    );
    let label = format!(
        "vipd, {vips} VIPs on {SCALE_NODES} nodes {}",
        label.trim_start_matches("vipd ")
    );
    println!("  {label}");
    let mut results = Vec::new();
    for r in 0..runs {
        let held = wait_balanced(&lab, &nodes, &pool, Duration::from_millis(1500))?;
        let victim = r % nodes.len();
        let targets: Vec<SocketAddr> = held[victim]
            .iter()
            .map(|&a| SocketAddr::new(a, PORT))
            .collect();
        let list = lab.dir().join(format!("targets-{r}.txt"));
        let lines: Vec<String> = targets.iter().map(ToString::to_string).collect();
        std::fs::write(&list, lines.join("\n"))?;
        let out = lab.dir().join(format!("probe-many-{r}.json"));
        let probe_args = [
            "probe-many",
            "--targets-file",
            list.to_str().context("path")?,
            "--from-node",
            &nodes[victim].host.name,
            "--rate",
            &SCALE_RATE.to_string(),
            "--max-duration-ms",
            "15000",
            "--out",
            out.to_str().context("path")?,
        ];
        let probe = lab.spawn(&client, &format!("probe-many-{r}"), xtask, &probe_args)?;
        lab.proc(probe)
            .wait_for_line(&["every target answered"], WAIT)?;
        std::thread::sleep(Duration::from_millis(200));
        let kill_ns = cut_link(&lab, &nodes[victim].host)?;
        lab.proc(nodes[victim].vipd).signal(libc::SIGKILL)?;
        if !lab.proc(probe).wait_exit(Duration::from_secs(30))? {
            bail!("probe {r} failed: {}", lab.proc(probe).output());
        }
        let report: ManyReport = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
        let survivors: Vec<usize> = (0..nodes.len()).filter(|&i| i != victim).collect();
        let moved: HashSet<IpAddr> = held[victim].iter().copied().collect();
        wait_until("the survivors holding the failed node's VIPs", WAIT, || {
            let mut on = HashSet::new();
            for &s in &survivors {
                for a in lab.addresses(&nodes[s].host)? {
                    if let Some(Ok(ip)) = a.split('/').next().map(str::parse::<IpAddr>) {
                        on.insert(ip);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
            Ok(moved.is_subset(&on))
        })?;
        // The survivors' timelines: loss declared, then each VIP added and announced.
        let (mut last_heartbeat_ns, mut loss_ns) = (None, None::<u64>);
        let (mut added, mut announced) = (HashMap::new(), HashMap::new());
        for &s in &survivors {
            let log = lab.proc(nodes[s].vipd).output();
            if let Some((seen, at)) = timeline::peer_lost_after(&log, nodes[victim].id, kill_ns) {
                last_heartbeat_ns = last_heartbeat_ns.max(Some(seen));
                loss_ns = Some(loss_ns.map_or(at, |l| l.min(at)));
                for (v, t) in timeline::vip_events_after(&log, "address_added", at) {
                    added.entry(v).or_insert(t);
                }
                for (v, t) in timeline::vip_events_after(&log, "first_announce", at) {
                    announced.entry(v).or_insert(t);
                }
            }
        }
        let of_moved = |m: &HashMap<IpAddr, u64>| -> Vec<(u64, IpAddr)> {
            let mut v: Vec<(u64, IpAddr)> = m
                .iter()
                .filter(|(ip, _)| moved.contains(ip))
                .map(|(&ip, &t)| (t, ip))
                .collect();
            v.sort();
            v
        };
        let (added, announced) = (of_moved(&added), of_moved(&announced));
        let last_reply = report
            .targets
            .iter()
            .filter_map(|t| Some((t.first_new_reply_ns?, t)))
            .max_by_key(|(at, _)| *at);
        let run = ScaleRun {
            vips,
            moved: moved.len(),
            failed: nodes[victim].host.name.clone(),
            kill_ns,
            last_heartbeat_ns,
            loss_ns,
            first_added_ns: added.first().map(|a| a.0),
            last_added_ns: added.last().map(|a| a.0),
            last_announce_ns: announced.last().map(|a| a.0),
            last_announce_vip: announced.last().map(|a| a.1),
            not_announced: moved.len() - announced.len(),
            last_reply_ns: last_reply.map(|l| l.0),
            last_reply_vip: last_reply.map(|l| l.1.target.ip()),
            last_reply_resolution_us: last_reply.and_then(|(_, t)| {
                Some(t.first_new_sent_ns?.saturating_sub(t.previous_sent_ns?) as f64 / 1e3)
            }),
            not_answered: report
                .targets
                .iter()
                .filter(|t| t.first_new_reply_ns.is_none())
                .count(),
            probe_rate: report.rate,
        };
        println!(
            "  run {r:>3}: {} down, {} VIPs moved: loss→last announce {} ms ({}), loss→last VIP answers {} ms ({}, ±{} ms), kill→last answer {} ms{}",
            run.failed,
            run.moved,
            ms(run.loss_to_last_announce_us()),
            run.last_announce_vip.map_or("-".into(), |v| v.to_string()),
            ms(run.loss_to_last_reply_us()),
            run.last_reply_vip.map_or("-".into(), |v| v.to_string()),
            ms(run.last_reply_resolution_us),
            ms(run.kill_to_last_reply_us()),
            if run.not_answered + run.not_announced > 0 {
                format!(
                    "; {} never answered, {} not announced",
                    run.not_answered, run.not_announced
                )
            } else {
                String::new()
            },
        );
        results.push(run);

        // Restore the failed node; it takes its share back after its hold-down.
        lab.set_link(&nodes[victim].host, true)?;
        nodes[victim].restarts += 1;
        let (host, id) = (nodes[victim].host.clone(), nodes[victim].id);
        let log = format!("scale-{}-{}", host.name, nodes[victim].restarts);
        nodes[victim].vipd = start_vipd(&mut lab, &host, id, &log, vipd, &vipd_args)?;
    }
    Ok((label, results))
}

/// The pool's VIPs held by each node, once every VIP is on exactly one node, every node
/// holds some, and that has not changed for `settle`.
fn wait_balanced(
    lab: &Lab,
    nodes: &[Node],
    pool: &[IpAddr],
    settle: Duration,
) -> anyhow::Result<Vec<Vec<IpAddr>>> {
    let in_pool: HashSet<IpAddr> = pool.iter().copied().collect();
    let mut last: Option<Vec<Vec<IpAddr>>> = None;
    let mut since = Instant::now();
    wait_until(
        "every VIP of the pool on exactly one server, stably",
        WAIT * 3,
        || {
            // `ip addr` of a thousand addresses is not free: look ten times a second.
            std::thread::sleep(Duration::from_millis(90));
            let mut held = Vec::new();
            for n in nodes {
                let mut on: Vec<IpAddr> = lab
                    .addresses(&n.host)?
                    .iter()
                    .filter_map(|a| a.split('/').next()?.parse().ok())
                    .filter(|a| in_pool.contains(a))
                    .collect();
                on.sort();
                held.push(on);
            }
            let distinct: HashSet<&IpAddr> = held.iter().flatten().collect();
            let total: usize = held.iter().map(Vec::len).sum();
            let ok = total == pool.len()
                && distinct.len() == pool.len()
                && held.iter().all(|h| !h.is_empty());
            let now = ok.then_some(held);
            if now != last {
                last = now;
                since = Instant::now();
            }
            Ok(last.is_some() && since.elapsed() >= settle)
        },
    )?;
    Ok(last.unwrap_or_default())
}

/// The scale row's table.
pub fn scale_table(label: &str, runs: &[ScaleRun]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Scale: {label}; each run hard-kills one node (link cut + SIGKILL, alternating) and its VIPs move\n\
         to the survivor. Times in ms on CLOCK_MONOTONIC, p50 (max). loss = the survivor declares the node\n\
         lost; last announce = the survivor's first gratuitous ARP/NA of the last VIP it announced (its\n\
         vipd::timeline log); last answer = the client's first reply from the survivor for the last of the\n\
         moved VIPs to answer. The client probes every moved VIP round-robin ({},{:03} requests/s in all) and\n\
         drops a VIP from the rotation once the survivor answers it, so the last VIPs are probed ever\n\
         faster; resolution = the time between the last two requests to the last VIP to answer.\n",
        SCALE_RATE / 1000,
        SCALE_RATE % 1000
    );
    let _ = writeln!(
        t,
        "| VIPs moved | runs | loss → first VIP added | loss → last VIP added | loss → last announce | loss → last answer | kill → last answer | resolution | not answered |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|");
    let stat = |f: &dyn Fn(&ScaleRun) -> Option<f64>| {
        let mut v: Vec<f64> = runs.iter().filter_map(f).collect();
        v.sort_by(f64::total_cmp);
        format!("{} ({})", ms(quantile(&v, 0.5)), ms(v.last().copied()))
    };
    let mut moved: Vec<f64> = runs.iter().map(|r| r.moved as f64).collect();
    moved.sort_by(f64::total_cmp);
    let _ = writeln!(
        t,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        quantile(&moved, 0.5).map_or("-".into(), |m| format!("{m:.0}")),
        runs.len(),
        stat(&|r| ScaleRun::since(r.loss_ns, r.first_added_ns)),
        stat(&|r| ScaleRun::since(r.loss_ns, r.last_added_ns)),
        stat(&ScaleRun::loss_to_last_announce_us),
        stat(&ScaleRun::loss_to_last_reply_us),
        stat(&ScaleRun::kill_to_last_reply_us),
        stat(&|r| r.last_reply_resolution_us),
        runs.iter()
            .map(|r| r.not_answered + r.not_announced)
            .sum::<usize>(),
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_pool_avoids_the_lab_and_repeats_nothing() {
        let pool = scale_pool(1000);
        assert_eq!(pool.len(), 1000);
        let set: HashSet<&IpAddr> = pool.iter().collect();
        assert_eq!(set.len(), 1000);
        for own in ["192.0.2.11", "192.0.2.12", "192.0.2.100", "192.0.2.200"] {
            assert!(!set.contains(&own.parse::<IpAddr>().unwrap()), "{own}");
        }
        assert!(pool[..700].iter().all(IpAddr::is_ipv4));
        assert!(pool[999].is_ipv6());
    }

    #[test]
    fn systems_parse_by_key() {
        for s in System::ALL {
            assert_eq!(System::parse(s.key()), Ok(s));
        }
        assert!(System::parse("vrrpd").is_err());
    }

    #[test]
    fn timeline_steps_add_up() {
        let t = Timeline {
            kill_ns: 1_000_000,
            last_heartbeat_ns: Some(500_000),
            loss_ns: Some(4_500_000),
            added_ns: Some(4_600_000),
            announced_ns: Some(4_650_000),
            first_reply_ns: Some(5_000_000),
        };
        let s = t.steps();
        assert_eq!(s[0], Some(-500.0));
        let sum: f64 = s[..5].iter().map(|x| x.unwrap()).sum();
        assert_eq!(Some(sum), s[5]);
        assert_eq!(s[5], Some(4000.0));
    }
}
