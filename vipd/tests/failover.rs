//! Two vipd nodes and a client in network namespaces: takeover on a hard failure, handover
//! on a graceful stop, and the XDP program's pinned maps read back with bpftool.
//!
//! These run as root (CI does); elsewhere they are listed as ignored, with the reason.

use std::{net::UdpSocket, path::Path, time::Duration};

use anyhow::Context as _;
use vipd_lab::lab::{Host, Lab, require_root, wait_until};

const VIP1: &str = "192.0.2.201";
const VIP2: &str = "192.0.2.202";
const MAC1: &str = "02:00:00:00:00:0b";
const MAC2: &str = "02:00:00:00:00:0c";
/// Generous bound for anything that should take milliseconds (CI machines are slow).
const SETTLE: Duration = Duration::from_secs(10);
const PORT: u16 = vipd_common::heartbeat::DEFAULT_PORT;

struct Cluster {
    lab: Lab,
    n1: Host,
    n2: Host,
    client: Host,
}

fn cluster(tag: &str) -> anyhow::Result<Cluster> {
    let mut lab = Lab::new(tag)?;
    let n1 = lab.add_host("n1", "192.0.2.11/24", MAC1)?;
    let n2 = lab.add_host("n2", "192.0.2.12/24", MAC2)?;
    let client = lab.add_host("client", "192.0.2.100/24", "02:00:00:00:00:64")?;
    Ok(Cluster {
        lab,
        n1,
        n2,
        client,
    })
}

/// Starts vipd on `host` (node `id`), heartbeating by unicast to `peer` every 50 ms;
/// returns its proc id.
fn start_vipd(
    lab: &mut Lab,
    host: &Host,
    id: u32,
    peer: &Host,
    run: &str,
) -> anyhow::Result<usize> {
    start_vipd_with(lab, host, id, peer, run, &["--interval", "50ms"])
}

/// [`start_vipd`] with other timing flags.
fn start_vipd_with(
    lab: &mut Lab,
    host: &Host,
    id: u32,
    peer: &Host,
    run: &str,
    timing: &[&str],
) -> anyhow::Result<usize> {
    let mut args = vec![
        "--vip",
        VIP1,
        "--vip",
        VIP2,
        "--peer",
        &peer.addr,
        "--hold-down",
        "300ms",
    ];
    args.extend_from_slice(timing);
    let log = format!("{}-{run}", host.name);
    let proc = lab.spawn_vipd(host, id, &log, Path::new(env!("CARGO_BIN_EXE_vipd")), &args)?;
    lab.proc(proc)
        .wait_for_line(&["XDP program attached"], SETTLE)?;
    Ok(proc)
}

/// The host each VIP is configured on, once every VIP is on exactly one host and each
/// host holds `per_host` VIPs.
fn wait_balanced(c: &Cluster, hosts: &[&Host], per_host: usize) -> anyhow::Result<Vec<Host>> {
    let mut owners = Vec::new();
    wait_until(
        &format!("{per_host} VIP(s) on each of {} hosts", hosts.len()),
        SETTLE,
        || {
            owners.clear();
            for vip in [VIP1, VIP2] {
                let on: Vec<&&Host> = hosts
                    .iter()
                    .filter(|h| c.lab.has_address(h, vip).unwrap_or(false))
                    .collect();
                if on.len() != 1 {
                    return Ok(false);
                }
                owners.push((**on[0]).clone());
            }
            Ok(hosts
                .iter()
                .all(|h| owners.iter().filter(|o| o.name == h.name).count() == per_host))
        },
    )
    .with_context(|| {
        format!(
            "n1 has {:?}, n2 has {:?}",
            c.lab.addresses(&c.n1).unwrap_or_default(),
            c.lab.addresses(&c.n2).unwrap_or_default()
        )
    })?;
    Ok(owners)
}

/// Waits until the client reaches every VIP at the MAC of the host holding it.
fn wait_reachable_at(c: &Cluster, vips: &[&str], owners: &[Host]) -> anyhow::Result<()> {
    for (vip, owner) in vips.iter().zip(owners) {
        wait_for_ping(c, vip)?;
        wait_until(
            &format!("the client's entry for {vip} to hold {}'s MAC", owner.name),
            SETTLE,
            || Ok(c.lab.neighbour_mac(&c.client, vip)?.as_deref() == Some(owner.mac.as_str())),
        )?;
    }
    Ok(())
}

fn wait_for_ping(c: &Cluster, vip: &str) -> anyhow::Result<()> {
    wait_until(&format!("{vip} answering the client"), SETTLE, || {
        c.lab.ping(&c.client, vip)
    })
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn hard_failure_moves_vip_to_survivor_and_restart_rebalances() -> anyhow::Result<()> {
    require_root();
    let mut c = cluster("vf")?;
    let (n1, n2) = (c.n1.clone(), c.n2.clone());
    let p1 = start_vipd(&mut c.lab, &n1, 1, &n2, "first")?;
    let p2 = start_vipd(&mut c.lab, &n2, 2, &n1, "first")?;

    let owners = wait_balanced(&c, &[&n1, &n2], 1)?;
    wait_reachable_at(&c, &[VIP1, VIP2], &owners)?;
    let n1_vip = if owners[0].name == "n1" { VIP1 } else { VIP2 };

    // Hard failure: SIGKILL (no LEAVING) and the link cut.
    c.lab.proc(p1).signal(libc::SIGKILL)?;
    c.lab.set_link(&n1, false)?;
    c.lab.proc(p1).wait_exit(SETTLE).ok();

    wait_until("node 2 holding both VIPs", SETTLE, || {
        Ok(c.lab.has_address(&n2, VIP1)? && c.lab.has_address(&n2, VIP2)?)
    })?;
    // The gratuitous ARP, not a re-resolution, rewrites the client's entry: no traffic
    // from the client is needed for it.
    wait_until(
        "the client's neighbour entry for n1's VIP to hold node 2's MAC",
        SETTLE,
        || Ok(c.lab.neighbour_mac(&c.client, n1_vip)?.as_deref() == Some(MAC2)),
    )?;
    wait_for_ping(&c, n1_vip)?;
    let log2 = c.lab.proc(p2).output();
    assert!(
        log2.contains(r#"event="peer_lost" peer=1 reason="timeout""#),
        "{log2}"
    );

    // Node 1 returns (its crashed run left its VIP on eth0: start-up must clean it).
    assert!(
        c.lab.has_address(&n1, n1_vip)?,
        "SIGKILL leaves the address behind"
    );
    c.lab.set_link(&n1, true)?;
    let p1b = start_vipd(&mut c.lab, &n1, 1, &n2, "second")?;
    c.lab
        .proc(p1b)
        .wait_for_line(&["removed a VIP left on eth0 by an earlier run"], SETTLE)?;
    let owners = wait_balanced(&c, &[&n1, &n2], 1)?;
    wait_reachable_at(&c, &[VIP1, VIP2], &owners)?;
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn one_millisecond_heartbeats_fail_over_and_hold_down_ends() -> anyhow::Result<()> {
    require_root();
    let mut c = cluster("vq")?;
    let (n1, n2) = (c.n1.clone(), c.n2.clone());
    let fast = ["--interval", "1ms", "--dead-interval", "4ms"];
    let p1 = start_vipd_with(&mut c.lab, &n1, 1, &n2, "first", &fast)?;
    let p2 = start_vipd_with(&mut c.lab, &n2, 2, &n1, "first", &fast)?;
    // A heartbeat is due every millisecond: the hold-down must still end on its own.
    for p in [p1, p2] {
        c.lab.proc(p).wait_for_line(&["hold-down over"], SETTLE)?;
    }
    let owners = wait_balanced(&c, &[&n1, &n2], 1)?;
    wait_reachable_at(&c, &[VIP1, VIP2], &owners)?;
    let n1_vip = if owners[0].name == "n1" { VIP1 } else { VIP2 };

    c.lab.proc(p1).signal(libc::SIGKILL)?;
    c.lab.set_link(&n1, false)?;
    let line = c
        .lab
        .proc(p2)
        .wait_for_line(&[r#"event="peer_lost" peer=1 reason="timeout""#], SETTLE)?;
    assert!(line.contains("last_seen_mono_ns"), "{line}");
    wait_until("node 2 holding both VIPs", SETTLE, || {
        Ok(c.lab.has_address(&n2, VIP1)? && c.lab.has_address(&n2, VIP2)?)
    })?;
    wait_until(
        "the client's neighbour entry for n1's VIP to hold node 2's MAC",
        SETTLE,
        || Ok(c.lab.neighbour_mac(&c.client, n1_vip)?.as_deref() == Some(MAC2)),
    )?;
    wait_for_ping(&c, n1_vip)?;
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn graceful_stop_hands_over_at_once_on_leaving() -> anyhow::Result<()> {
    require_root();
    let mut c = cluster("vg")?;
    let (n1, n2) = (c.n1.clone(), c.n2.clone());
    let p1 = start_vipd(&mut c.lab, &n1, 1, &n2, "first")?;
    let p2 = start_vipd(&mut c.lab, &n2, 2, &n1, "first")?;
    wait_balanced(&c, &[&n1, &n2], 1)?;

    c.lab.proc(p1).signal(libc::SIGTERM)?;
    assert!(c.lab.proc(p1).wait_exit(SETTLE)?, "vipd exits 0 on SIGTERM");
    // Node 1 released its VIP on the way out; node 2 adopted it because of LEAVING.
    assert!(
        c.lab
            .addresses(&n1)?
            .iter()
            .all(|a| !a.starts_with("192.0.2.20"))
    );
    wait_balanced(&c, &[&n2], 2)?;
    let line = c
        .lab
        .proc(p2)
        .wait_for_line(&["peer_lost", "peer=1"], SETTLE)?;
    assert!(line.contains(r#"reason="LEAVING""#), "{line}");
    assert!(c.lab.proc(p2).output().contains("peer sent LEAVING"));
    wait_for_ping(&c, VIP1)?;
    // Its pins are gone with it.
    assert!(!Path::new(&format!("/sys/fs/bpf/vipd/{}-n1", c.lab.prefix())).exists());
    Ok(())
}

/// `bpftool -j map dump pinned <path>` as JSON.
fn bpftool_dump(path: &str) -> anyhow::Result<serde_json::Value> {
    let out = vipd_lab::lab::run("bpftool", &["-j", "map", "dump", "pinned", path])?;
    serde_json::from_str(&out).with_context(|| format!("bpftool output: {out}"))
}

/// The entries of a bpftool JSON dump, as named by the maps' BTF (`formatted`).
fn entries(dump: &serde_json::Value) -> Vec<&serde_json::Value> {
    dump.as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["formatted"])
        .collect()
}

/// A counter summed over CPUs, from a dump of the per-CPU counters array.
fn counter(dump: &serde_json::Value, index: u32) -> u64 {
    entries(dump)
        .into_iter()
        .find(|e| e["key"] == index)
        .and_then(|e| e["values"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|cpu| cpu["value"].as_u64())
        .sum()
}

fn stopped_field(log: &str, field: &str) -> anyhow::Result<u64> {
    let line = log
        .lines()
        .find(|l| l.contains(" stopped "))
        .context("no 'stopped' line")?;
    let value = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{field}=")))
        .with_context(|| format!("no {field} in {line}"))?;
    Ok(value.parse()?)
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn pinned_maps_count_what_was_sent() -> anyhow::Result<()> {
    use vipd_common::maps::Counter;
    require_root();
    let mut c = cluster("vm")?;
    let (n1, n2, client) = (c.n1.clone(), c.n2.clone(), c.client.clone());
    let p1 = start_vipd(&mut c.lab, &n1, 1, &n2, "first")?;
    let p2 = start_vipd(&mut c.lab, &n2, 2, &n1, "first")?;
    c.lab
        .proc(p1)
        .wait_for_line(&["peer joined the view", "peer=2"], SETTLE)?;

    // Bad input at the heartbeat port: counted and passed, never recorded.
    let target = format!("{}:{PORT}", n1.addr);
    let foreign = vipd_common::heartbeat::Heartbeat {
        cluster_id: 99,
        node_id: 5,
        ..Default::default()
    };
    c.lab.in_netns(&client, || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        for garbage in [&b"hello"[..], &[0u8; 48][..], &[0xffu8; 100][..]] {
            s.send_to(garbage, &target)?;
        }
        s.send_to(&foreign.to_bytes(), &target)?;
        s.send_to(&foreign.to_bytes(), &target)?;
        Ok(())
    })?;
    let pin = format!("/sys/fs/bpf/vipd/{}-n1", c.lab.prefix());
    wait_until("bad frames counted", SETTLE, || {
        let d = bpftool_dump(&format!("{pin}/counters"))?;
        Ok(counter(&d, Counter::HeartbeatMalformed as u32) == 3
            && counter(&d, Counter::ForeignCluster as u32) == 2)
    })?;

    c.lab.proc(p2).signal(libc::SIGTERM)?;
    assert!(c.lab.proc(p2).wait_exit(SETTLE)?);
    let log2 = c.lab.proc(p2).output();
    let sent = stopped_field(&log2, "heartbeats_sent")?;
    let last_sequence = stopped_field(&log2, "last_sequence")?;
    assert_eq!(stopped_field(&log2, "heartbeats_failed")?, 0);

    // Node 2 sent only to node 1, which was listening before node 2 started.
    let counters = bpftool_dump(&format!("{pin}/counters"))?;
    assert_eq!(
        counter(&counters, Counter::HeartbeatAccepted as u32),
        sent,
        "{counters}"
    );
    assert_eq!(counter(&counters, Counter::OwnNodeId as u32), 0);

    let peers = bpftool_dump(&format!("{pin}/peers"))?;
    let entry = entries(&peers)
        .into_iter()
        .find(|e| e["key"] == 2)
        .with_context(|| format!("no entry for node 2 in {peers}"))?;
    let peer = &entry["value"];
    assert_eq!(peer["node_id"], 2);
    assert_eq!(peer["sequence"], last_sequence);
    assert_eq!(peer["received"], sent);
    assert_eq!(peer["missed"], 0);
    assert_eq!(peer["interval_us"], 50_000);
    let flags = peer["flags"].as_u64().context("flags")? as u8;
    assert_eq!(
        flags & vipd_common::heartbeat::FLAG_LEAVING,
        vipd_common::heartbeat::FLAG_LEAVING
    );
    Ok(())
}
