//! `cargo xtask bench failover`: the client-visible outage across a hard failure of the
//! VIP's owner (link cut and SIGKILL of the daemon and its children), for vipd at its
//! default and fastest settings, keepalived (VRRPv3) at its smallest advert interval and
//! its default, and ucarp at its fastest — same topology, same run.
//!
//! Topology: three servers and a client on one bridge; every server runs the echo
//! responder bound to the VIP; the client probes the VIP at a fixed rate.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::probe::ProbeReport;
use xtask::lab::{Host, Lab, wait_until};

const VIP: &str = "192.0.2.200";
const PORT: u16 = 9000;
const WAIT: Duration = Duration::from_secs(20);

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum System {
    /// vipd with its defaults (100 ms heartbeats, 300 ms dead interval).
    VipdDefault,
    /// vipd at its fastest settings here (2 ms heartbeats, 8 ms dead interval).
    VipdFast,
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
}

impl System {
    /// Every system, in table order.
    pub const ALL: [System; 7] = [
        System::VipdDefault,
        System::VipdFast,
        System::VrrpFast,
        System::VrrpDefault,
        System::KeepalivedFast,
        System::KeepalivedDefault,
        System::UcarpFast,
    ];

    /// Its name in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            System::VipdDefault => "vipd (default: 100ms/300ms)",
            System::VipdFast => "vipd (fastest: 2ms/8ms)",
            System::KeepalivedFast => "keepalived VRRPv3 (advert_int 0.01)",
            System::KeepalivedDefault => "keepalived VRRPv3 (advert_int 1, default)",
            System::UcarpFast => "ucarp (advbase 1, its fastest stable setting)",
            System::VrrpFast => "vipd VRRP mode (advert 10ms)",
            System::VrrpDefault => "vipd VRRP mode (advert 1s, default)",
        }
    }

    /// How long to probe: long enough for the slowest expected takeover.
    fn probe_duration(self) -> Duration {
        match self {
            System::VipdDefault => Duration::from_millis(1500),
            System::VipdFast | System::KeepalivedFast | System::VrrpFast => {
                Duration::from_millis(1000)
            }
            System::KeepalivedDefault | System::UcarpFast | System::VrrpDefault => {
                Duration::from_millis(6000)
            }
        }
    }

    /// How long the owner must stay unchanged before a run: longer than an election or
    /// preemption takes.
    fn settle(self) -> Duration {
        match self {
            System::KeepalivedDefault | System::UcarpFast | System::VrrpDefault => {
                Duration::from_secs(5)
            }
            _ => Duration::from_millis(1500),
        }
    }

    /// A log line the daemon prints once it takes part in the group.
    fn ready_line(self) -> &'static str {
        match self {
            System::VipdDefault | System::VipdFast => "hold-down over",
            System::KeepalivedFast | System::KeepalivedDefault => "STATE",
            System::UcarpFast => "Switching to state",
            System::VrrpFast | System::VrrpDefault => "vrrp state",
        }
    }
}

/// One measured failover.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    /// The system.
    pub system: System,
    /// What the probe saw.
    pub probe: ProbeReport,
    /// Last heartbeat heard from the failed node → loss declared, by the new owner (µs).
    pub detection_us: Option<f64>,
    /// Loss declared → first gratuitous ARP, by the new owner (µs).
    pub takeover_us: Option<f64>,
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
    let mut results = Vec::new();
    for r in 0..runs {
        let owner = wait_stable_owner(&lab, &nodes, system.settle())?;
        let out = lab.dir().join(format!("probe-{r}.json"));
        let duration = system.probe_duration();
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
        lab.set_link(&failed.host, false)?;
        lab.proc(failed.vipd).signal(libc::SIGKILL)?;
        if !lab
            .proc(probe)
            .wait_exit(duration + Duration::from_secs(10))?
        {
            bail!("probe {r} failed: {}", lab.proc(probe).output());
        }
        let report: ProbeReport = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
        let new_owner = wait_single_owner_except(&lab, &nodes, owner)?;
        let (detection_us, takeover_us) =
            timeline(&lab.proc(nodes[new_owner].vipd).output(), failed.id);
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
        results.push(Run {
            system,
            probe: report,
            detection_us,
            takeover_us,
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
        System::VipdDefault | System::VipdFast => {
            let mut args = vec!["--vip", VIP, "--hold-down", "300ms"];
            if system == System::VipdFast {
                args.extend(["--interval", "2ms", "--dead-interval", "8ms"]);
            }
            lab.spawn_vipd(host, id, &log, vipd, &args)?
        }
        System::VrrpFast | System::VrrpDefault => {
            let interval = if system == System::VrrpFast {
                "10ms"
            } else {
                "1s"
            };
            let spec = format!(
                "51,priority={},vip={VIP}/32,interval={interval}",
                250 - 50 * id
            );
            lab.spawn_vipd(host, id, &log, vipd, &["--vrrp", &spec])?
        }
        System::KeepalivedFast | System::KeepalivedDefault => {
            let advert = if system == System::KeepalivedFast {
                "0.01"
            } else {
                "1"
            };
            let conf = format!(
                "global_defs {{\n    vrrp_version 3\n    router_id {}\n}}\n\
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

/// Detection and takeover times (µs) for the loss of `peer`, from the new owner's log.
fn timeline(log: &str, peer: u32) -> (Option<f64>, Option<f64>) {
    match xtask::timeline::last_takeover(log, Some(peer), VIP) {
        Some(t) => (
            Some(t.detected_ns.saturating_sub(t.last_seen_ns) as f64 / 1e3),
            t.announced_ns.map(|a| (a - t.detected_ns) as f64 / 1e3),
        ),
        None => (None, None),
    }
}
