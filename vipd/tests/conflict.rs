//! The ARP/NDP watch in network namespaces: a host that claims a VIP a node holds (by
//! gratuitous ARP, ARP reply or unsolicited neighbour advertisement) is seen by the XDP
//! program, reported with its MAC in `vipd status`, and answered with a bounded defence;
//! the VIP never moves or goes unheld. A claim with a live peer's MAC counts as the
//! peer's only if the peer's own state holds the VIP; a forged one is defended too.
//!
//! These run as root (CI does); elsewhere they are listed as ignored, with the reason.

mod common;

use std::time::Duration;

use anyhow::Context as _;
use vipd::announce::{garp_frame, unsolicited_na_frame};
use vipd_lab::{
    lab::{Host, Lab, require_root, wait_until},
    pcap::parse_mac,
};

use common::status;

const VIPS: [&str; 3] = ["192.0.2.201", "192.0.2.202", "2001:db8::201"];
/// Generous bound for anything that should take milliseconds (CI machines are slow).
const SETTLE: Duration = Duration::from_secs(20);

/// The node of `nodes` holding `vip` (exactly one must).
fn holder<'a>(lab: &Lab, nodes: &'a [Host], vip: &str) -> anyhow::Result<&'a Host> {
    let on: Vec<&Host> = nodes
        .iter()
        .filter(|h| lab.has_address(h, vip).unwrap_or(false))
        .collect();
    anyhow::ensure!(on.len() == 1, "{vip} is held by {} nodes", on.len());
    Ok(on[0])
}

/// The conflict `status` lists for `vip`, if any.
fn conflict(status: &serde_json::Value, vip: &str) -> Option<serde_json::Value> {
    status["conflicts"]
        .as_array()?
        .iter()
        .find(|c| c["vip"] == vip)
        .cloned()
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn another_host_claiming_a_held_vip_is_reported_and_defended_even_with_a_peers_mac()
-> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("claim")?;
    let [n1, n2] = lab.add_nodes()?;
    let intruder = lab.add_host("intruder", "192.0.2.66/24", "02:00:00:00:00:42")?;
    let client = lab.add_host("client", "192.0.2.100/24", "02:00:00:00:00:64")?;
    let nodes = [n1.clone(), n2.clone()];
    for (host, id) in [(&n1, 1), (&n2, 2)] {
        // Takeovers' repeated announcements end at once: only a defence can win a client
        // back.
        let mut args = vec![
            "--interval",
            "20ms",
            "--hold-down",
            "300ms",
            "--announce-repeats",
            "10ms",
        ];
        for vip in VIPS {
            args.extend(["--vip", vip]);
        }
        common::start_node(&mut lab, host, id, &args, &[])?;
    }
    wait_until("every VIP held by one node", SETTLE, || {
        Ok(VIPS.iter().all(|v| holder(&lab, &nodes, v).is_ok()))
    })?;

    // IPv4: the client talks to the VIP, then the intruder announces it as its own.
    let vip = VIPS[0];
    let owner = holder(&lab, &nodes, vip)?.clone();
    anyhow::ensure!(lab.ping(&client, vip)?, "the client reaches {vip}");
    let intruder_mac = parse_mac(&intruder.mac)?;
    let garp = garp_frame(intruder_mac, vip.parse()?).to_vec();
    lab.send_frames(
        &intruder,
        "eth0",
        &[garp.clone(), garp.clone(), garp.clone()],
    )?;
    let seen =
        wait_until("the holder reports the conflict", SETTLE, || {
            Ok(conflict(&status(&lab, &owner)?, vip)
                .is_some_and(|c| c["defences"].as_u64() >= Some(1)))
        });
    let s = status(&lab, &owner)?;
    seen.with_context(|| format!("status of {}: {s:#}", owner.name))?;
    let c = conflict(&s, vip).context("conflict listed")?;
    assert_eq!(c["mac"], intruder.mac, "{c:#}");
    assert_eq!(c["claimer"], "unknown host", "{c:#}");
    assert_eq!(c["kind"], "gratuitous-arp", "{c:#}");
    assert!(
        s["counters"]["neighbor_claims"].as_u64() >= Some(1),
        "{s:#}"
    );
    // The defence wins the client back: its entry for the VIP is the holder's MAC again.
    wait_until("the client's entry points at the holder", SETTLE, || {
        Ok(lab.neighbour_mac(&client, vip)?.as_deref() == Some(owner.mac.as_str()))
    })?;
    // A flood of claims is answered with a bounded defence, never a GARP war.
    for _ in 0..20 {
        lab.send_frames(
            &intruder,
            "eth0",
            &[garp.clone(), garp.clone(), garp.clone()],
        )?;
    }
    let s = status(&lab, &owner)?;
    let c = conflict(&s, vip).context("conflict still listed")?;
    assert!(
        c["defences"].as_u64() <= Some(2),
        "at most one defence per 10 s: {c:#}"
    );
    // Nothing moved: the VIP is still held once, by the same node.
    assert_eq!(holder(&lab, &nodes, vip)?.name, owner.name);

    // IPv6: an unsolicited neighbour advertisement for the IPv6 VIP.
    let vip6 = VIPS[2];
    let owner6 = holder(&lab, &nodes, vip6)?.clone();
    let na = unsolicited_na_frame(intruder_mac, vip6.parse()?).to_vec();
    lab.send_frames(&intruder, "eth0", &[na.clone(), na])?;
    let seen = wait_until("the holder reports the IPv6 conflict", SETTLE, || {
        Ok(conflict(&status(&lab, &owner6)?, vip6).is_some())
    });
    let s = status(&lab, &owner6)?;
    seen.with_context(|| format!("status of {}: {s:#}", owner6.name))?;
    let c = conflict(&s, vip6).context("conflict listed")?;
    assert_eq!(c["kind"], "neighbor-advert", "{c:#}");
    assert_eq!(c["mac"], intruder.mac, "{c:#}");

    // A gratuitous ARP with a live peer's MAC for a VIP held here, which that peer's own
    // (authenticated) state does not hold: a forgery, not a split brain. It is defended
    // once the grace for a hand-over's state section has passed, and the client comes back.
    let vip2 = VIPS[1];
    let keeper = holder(&lab, &nodes, vip2)?.clone();
    let peer = nodes
        .iter()
        .find(|h| h.name != keeper.name)
        .context("peer")?;
    anyhow::ensure!(lab.ping(&client, vip2)?, "the client reaches {vip2}");
    let garp = garp_frame(parse_mac(&peer.mac)?, vip2.parse()?).to_vec();
    lab.send_frames(&intruder, "eth0", &[garp])?;
    let seen = wait_until(
        "the keeper defends against the peer's forged MAC",
        SETTLE,
        || {
            Ok(conflict(&status(&lab, &keeper)?, vip2)
                .is_some_and(|c| c["defences"].as_u64() >= Some(1)))
        },
    );
    let s = status(&lab, &keeper)?;
    seen.with_context(|| format!("status of {}: {s:#}", keeper.name))?;
    let c = conflict(&s, vip2).context("conflict listed")?;
    assert_eq!(c["mac"], peer.mac, "{c:#}");
    assert!(
        c["claimer"]
            .as_str()
            .is_some_and(|t| t.contains("state does not hold it")),
        "{c:#}"
    );
    wait_until("the client's entry points at the keeper", SETTLE, || {
        Ok(lab.neighbour_mac(&client, vip2)?.as_deref() == Some(keeper.mac.as_str()))
    })?;
    anyhow::ensure!(lab.ping(&client, vip2)?, "the client reaches {vip2} again");
    assert_eq!(holder(&lab, &nodes, vip2)?.name, keeper.name);
    Ok(())
}
