//! `cargo xtask demo`: a local vipd cluster in network namespaces.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context as _, bail};
use vipd_lab::lab::{Host, Lab, Proc, wait_until};

use crate::workspace_root;

const VIPS: [&str; 2] = ["192.0.2.201", "192.0.2.202"];
const WAIT: Duration = Duration::from_secs(15);

pub fn run() -> anyhow::Result<()> {
    // SAFETY: geteuid never fails.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo needs root (network namespaces, XDP, bpffs): run it with sudo");
    }
    let vipd = build_vipd()?;
    let mut lab = Lab::new("demo")?;
    let [n1, n2] = lab.add_nodes()?;
    let client = lab.add_host("client", "192.0.2.100/24", "02:00:00:00:00:64")?;
    let nodes = [n1.clone(), n2.clone()];
    step(&format!(
        "Lab {}: n1 {} ({}), n2 {} ({}), client {} on one bridge; VIPs {} and {}; logs in {}",
        lab.prefix(),
        n1.addr,
        n1.mac,
        n2.addr,
        n2.mac,
        client.addr,
        VIPS[0],
        VIPS[1],
        lab.dir().display()
    ));

    let start = |lab: &mut Lab, host: &Host, id: u32, run: &str| -> anyhow::Result<usize> {
        let args = ["--vip", VIPS[0], "--vip", VIPS[1]];
        let p = lab.spawn_vipd(host, id, &format!("{}-{run}", host.name), &vipd, &args)?;
        lab.proc(p).wait_for_line(&["vipd started"], WAIT)?;
        Ok(p)
    };
    step(
        "Starting vipd on n1 and n2 (defaults: multicast heartbeats every 2ms, dead after 10ms, 1s hold-down)",
    );
    let p1 = start(&mut lab, &n1, 1, "first")?;
    let p2 = start(&mut lab, &n2, 2, "first")?;
    println!(
        "  {}",
        lab.proc(p1)
            .wait_for_line(&["XDP program attached"], WAIT)?
            .trim()
    );
    let owners = wait_one_each(&lab, &nodes)?;
    show(&lab, &nodes, &client)?;
    let n1_vip = if owners[0] == "n1" { VIPS[0] } else { VIPS[1] };

    step("Hard failure of n1: SIGKILL, then its link cut");
    lab.proc(p1).signal(libc::SIGKILL)?;
    lab.set_link(&n1, false)?;
    // n1 is cut off: the address its killed daemon left there is cleaned when it restarts.
    let reachable = [n2.clone()];
    wait_placement(&lab, &reachable, &[(VIPS[0], "n2"), (VIPS[1], "n2")])?;
    wait_until("the client to learn n2's MAC for the VIP", WAIT, || {
        Ok(lab.neighbour_mac(&client, n1_vip)?.as_deref() == Some(n2.mac.as_str()))
    })?;
    timeline(lab.proc(p2), n1_vip)?;
    show(&lab, &reachable, &client)?;

    step("n1 comes back: link up, vipd restarted; after its hold-down it gets one VIP back");
    lab.set_link(&n1, true)?;
    let p1 = start(&mut lab, &n1, 1, "second")?;
    let owners = wait_one_each(&lab, &nodes)?;
    let n1_vip = if owners[0] == "n1" { VIPS[0] } else { VIPS[1] };
    wait_until("the client to learn n1's MAC", WAIT, || {
        Ok(lab.neighbour_mac(&client, n1_vip)?.as_deref() == Some(n1.mac.as_str()))
    })?;
    show(&lab, &nodes, &client)?;
    let n2_vip = if n1_vip == VIPS[0] { VIPS[1] } else { VIPS[0] };

    step("Graceful stop of n2 (SIGTERM): it sends LEAVING, n1 adopts at once, no dead interval");
    lab.proc(p2).signal(libc::SIGTERM)?;
    lab.proc(p2).wait_exit(WAIT)?;
    wait_placement(&lab, &nodes, &[(VIPS[0], "n1"), (VIPS[1], "n1")])?;
    timeline(lab.proc(p1), n2_vip)?;
    show(&lab, &nodes, &client)?;

    step("Tearing down the lab");
    drop(lab);
    println!("\nDone. Run the tests with: cargo test");
    Ok(())
}

fn step(text: &str) {
    println!("\n==> {text}");
}

/// Builds vipd (release) and returns its path.
pub fn build_vipd() -> anyhow::Result<PathBuf> {
    step("Building vipd (release)");
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(["build", "--release", "--quiet", "--package", "vipd"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status}); did you run ./scripts/setup.sh?");
    }
    Ok(workspace_root().join("target/release/vipd"))
}

/// Waits until each VIP is on exactly one node and each node holds one; returns the
/// holder of each VIP.
fn wait_one_each(lab: &Lab, nodes: &[Host]) -> anyhow::Result<Vec<String>> {
    let mut owners = Vec::new();
    wait_until("one VIP on each node", WAIT, || {
        owners.clear();
        for vip in VIPS {
            let on: Vec<&Host> = nodes
                .iter()
                .filter(|n| lab.has_address(n, vip).unwrap_or(false))
                .collect();
            if on.len() != 1 {
                return Ok(false);
            }
            owners.push(on[0].name.clone());
        }
        Ok(owners[0] != owners[1])
    })?;
    Ok(owners)
}

fn wait_placement(lab: &Lab, nodes: &[Host], expected: &[(&str, &str)]) -> anyhow::Result<()> {
    wait_until(&format!("VIP placement {expected:?}"), WAIT, || {
        for (vip, owner) in expected {
            for n in nodes {
                if lab.has_address(n, vip)? != (n.name == *owner) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    })
}

/// Prints who holds each VIP and which MAC answers the client.
fn show(lab: &Lab, nodes: &[Host], client: &Host) -> anyhow::Result<()> {
    for vip in VIPS {
        let holders: Vec<&str> = nodes
            .iter()
            .filter(|n| lab.has_address(n, vip).unwrap_or(false))
            .map(|n| n.name.as_str())
            .collect();
        let answered = lab.ping(client, vip)?;
        let mac = lab
            .neighbour_mac(client, vip)?
            .unwrap_or_else(|| "-".into());
        let by = nodes
            .iter()
            .find(|n| n.mac == mac)
            .map_or("?", |n| n.name.as_str());
        println!(
            "  {vip}: configured on {holders:?}; client ping {}, client ARP entry {mac} ({by})",
            if answered { "answered" } else { "UNANSWERED" },
        );
    }
    Ok(())
}

/// Prints the survivor's failover timeline for `vip` from its log.
fn timeline(survivor: &Proc, vip: &str) -> anyhow::Result<()> {
    let Some(t) = vipd_lab::timeline::last_takeover(&survivor.output(), None, vip) else {
        println!("  (timeline lines not found in the survivor's log)");
        return Ok(());
    };
    let t0 = t.last_seen_ns;
    let reason = &t.reason;
    let ms = |t: Option<u64>| t.map_or(f64::NAN, |t| t.saturating_sub(t0) as f64 / 1e6);
    println!(
        "  Failover timeline from the survivor's log (CLOCK_MONOTONIC, ms after the last heartbeat heard):"
    );
    let rows = [
        ("last heartbeat from the peer".to_string(), Some(t0)),
        (format!("loss detected ({reason})"), Some(t.detected_ns)),
        (format!("address {vip} added"), t.added_ns),
        ("first gratuitous ARP sent".to_string(), t.announced_ns),
    ];
    for (label, t) in rows {
        println!("    {label:<34} {:9.3}", ms(t));
    }
    Ok(())
}
