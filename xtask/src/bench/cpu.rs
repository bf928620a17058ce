//! `cargo xtask bench cpu`: userspace CPU time and wake-ups of one node's daemon over a
//! fixed window while 8 peers send adverts to it at a high rate, in the same run: vipd
//! (peers heartbeat every 1 ms; the node itself runs the defaults, and the heartbeats are
//! parsed in XDP), keepalived (VRRPv3 at 10 ms, its smallest interval: the node is backup
//! in 8 groups, each mastered by one keepalived peer), and vipd in VRRP mode in keepalived's
//! place as that backup (the same 8 keepalived masters).

use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};
use vipd_lab::lab::{Host, Lab};

const PEERS: u32 = 8;

/// Which daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Daemon {
    /// vipd, 1 ms heartbeats.
    Vipd,
    /// keepalived, VRRPv3, advert_int 0.01.
    Keepalived,
    /// vipd in VRRP mode, backup of 8 keepalived masters at advert_int 0.01.
    VipdVrrp,
}

/// CPU and wake-ups of the measured node's daemon over the window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CpuResult {
    /// The daemon.
    pub daemon: Daemon,
    /// Adverts per second the peers send to the measured node.
    pub adverts_per_second: f64,
    /// The window, seconds.
    pub window_s: f64,
    /// User + system CPU time of the daemon's processes, milliseconds per second.
    pub cpu_ms_per_s: f64,
    /// Context switches (voluntary + involuntary) of its threads per second: wake-ups.
    pub wakeups_per_s: f64,
}

/// Measures both daemons over `window`.
pub fn run(window: Duration, vipd: &Path) -> anyhow::Result<Vec<CpuResult>> {
    Ok(vec![
        measure(Daemon::Vipd, window, vipd)?,
        measure(Daemon::Keepalived, window, vipd)?,
        measure(Daemon::VipdVrrp, window, vipd)?,
    ])
}

fn measure(daemon: Daemon, window: Duration, vipd: &Path) -> anyhow::Result<CpuResult> {
    let mut lab = Lab::new("bc")?;
    let mut hosts: Vec<Host> = Vec::new();
    for i in 0..=PEERS {
        hosts.push(lab.add_host(
            &format!("h{i}"),
            &format!("192.0.2.{}/24", 20 + i),
            &format!("02:00:00:00:01:{:02x}", i),
        )?);
    }
    let mut measured = 0;
    for (i, host) in hosts.clone().iter().enumerate() {
        let p = match daemon {
            Daemon::VipdVrrp if i == 0 => {
                // The measured node is backup (priority 50) in groups 1..=8, as keepalived's.
                let groups: Vec<String> = (1..=PEERS)
                    .map(|g| format!("{g},priority=50,vip=192.0.2.{}/32,interval=10ms", 200 + g))
                    .collect();
                let mut args = Vec::new();
                for g in &groups {
                    args.extend(["--vrrp", g.as_str()]);
                }
                let p = lab.spawn_vipd(host, 1, "vipd-h0", vipd, &args)?;
                lab.proc(p)
                    .wait_for_line(&["vipd started"], Duration::from_secs(20))?;
                p
            }
            Daemon::Vipd => {
                // The measured node h0 runs vipd's defaults; the 8 peers send every 1 ms
                // (with a dead interval that tolerates anything h0 does).
                let pool: Vec<String> = (0..=PEERS)
                    .map(|k| format!("192.0.2.{}", 200 + k))
                    .collect();
                let pool = pool.join(",");
                let mut args = vec!["--vip", &pool, "--hold-down", "200ms"];
                if i > 0 {
                    args.extend(["--interval", "1ms", "--dead-interval", "500ms"]);
                }
                let log = format!("vipd-{}", host.name);
                let p = lab.spawn_vipd(host, i as u32 + 1, &log, vipd, &args)?;
                lab.proc(p)
                    .wait_for_line(&["vipd started"], Duration::from_secs(20))?;
                p
            }
            Daemon::Keepalived | Daemon::VipdVrrp => {
                // Node h0 is backup (priority 50) in groups 1..=8; peer hi masters group i.
                let mut conf = format!(
                    "global_defs {{\n    vrrp_version 3\n    router_id {}\n}}\n",
                    host.name
                );
                for g in 1..=PEERS {
                    let priority = if i == 0 {
                        50
                    } else if g == i as u32 {
                        200
                    } else {
                        continue;
                    };
                    conf += &format!(
                        "vrrp_instance G{g} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {g}\n    priority {priority}\n    advert_int 0.01\n    virtual_ipaddress {{\n        192.0.2.{}/32 dev eth0\n    }}\n}}\n",
                        200 + g
                    );
                }
                let p = lab.spawn_keepalived(host, &format!("keepalived-{}", host.name), &conf)?;
                lab.proc(p)
                    .wait_for_line(&["Startup complete"], Duration::from_secs(20))?;
                p
            }
        };
        if i == 0 {
            measured = p;
        }
    }
    // Let every peer settle into sending (the hold-down, the VRRP elections).
    std::thread::sleep(Duration::from_secs(2));
    let pgid = lab.proc(measured).child.id();
    let before = sample(pgid)?;
    std::thread::sleep(window);
    let after = sample(pgid)?;
    let secs = window.as_secs_f64();
    let tick = clock_ticks_per_second();
    let adverts_per_second = match daemon {
        Daemon::Vipd => f64::from(PEERS) * 1000.0,
        Daemon::Keepalived | Daemon::VipdVrrp => f64::from(PEERS) * 100.0,
    };
    Ok(CpuResult {
        daemon,
        adverts_per_second,
        window_s: secs,
        cpu_ms_per_s: (after.0 - before.0) as f64 * 1000.0 / tick / secs,
        wakeups_per_s: (after.1 - before.1) as f64 / secs,
    })
}

/// (CPU ticks, context switches) of every thread of every process in the group.
fn sample(pgid: u32) -> anyhow::Result<(u64, u64)> {
    let mut ticks = 0;
    let mut switches = 0;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may contain spaces) are space-separated.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[2] is pgrp (field 5); f[11], f[12] are utime, stime (fields 14, 15).
        if f.get(2).and_then(|g| g.parse::<u32>().ok()) != Some(pgid) {
            continue;
        }
        ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        ticks += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            for line in status.lines() {
                if let Some(v) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    switches += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    Ok((ticks, switches))
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}
