//! A pool and a VRRP group in one daemon, in network namespaces: two nodes each run a pool
//! of two VIPs (heartbeats) and VRID 51 (VRRPv3) on the same interface, through one XDP
//! program. The pool balances and the group elects its Master; a hard failure of the
//! Master moves both its pool VIP and the group's VIP to the survivor; on its return the
//! pool rebalances and the group is preempted back; a graceful stop hands everything over.
//! A second test runs the group on another interface than the pool: the group's link
//! going down moves nothing of the pool.
//!
//! These need root: they are ignored unless run with `--include-ignored` (as CI does).

mod common;

use std::{path::Path, time::Duration};

use anyhow::{Context as _, ensure};
use common::{VIPD, counter, held, status, stop};
use vipd_lab::lab::{Host, Lab, require_root, wait_until};

/// Generous bound for anything that takes a fraction of a second (CI machines are slow).
const WAIT: Duration = Duration::from_secs(20);
const POOL: [&str; 2] = ["192.0.2.201", "192.0.2.202"];
const GROUP_VIP: &str = "192.0.2.200";

/// Spawns vipd as node `id` on `host`: the pool ([`POOL`], 50 ms heartbeats), the VRRP
/// group `spec` and the `extra` flags.
fn spawn(
    lab: &mut Lab,
    host: &Host,
    id: u32,
    log: &str,
    spec: &str,
    extra: &[&str],
) -> anyhow::Result<usize> {
    let vips: Vec<String> = POOL.iter().map(|v| format!("{v}/24")).collect();
    let mut args: Vec<&str> = vips.iter().flat_map(|v| ["--vip", v.as_str()]).collect();
    args.extend(["--interval", "50ms", "--vrrp", spec]);
    args.extend_from_slice(extra);
    lab.spawn_vipd(host, id, log, Path::new(VIPD), &args)
}

/// Starts node `id` on `host` with the pool and VRID 51 (`vrrp_extra` appended to the
/// group's spec) at `priority`; waits until both have started.
fn start(
    lab: &mut Lab,
    host: &Host,
    id: u32,
    priority: u8,
    vrrp_extra: &str,
    log: &str,
) -> anyhow::Result<usize> {
    let spec = format!("51,priority={priority},vip={GROUP_VIP}/24,interval=100ms{vrrp_extra}");
    let p = spawn(lab, host, id, log, &spec, &["--hold-down", "300ms"])?;
    lab.proc(p).wait_for_line(&["vipd started: pool"], WAIT)?;
    lab.proc(p)
        .wait_for_line(&["vrrp state", "vrid=51", "reason=startup"], WAIT)?;
    Ok(p)
}

/// The state of VRID 51 in `host`'s status.
fn group_state(lab: &Lab, host: &Host) -> anyhow::Result<String> {
    let st = status(lab, host)?;
    let g = st["vrrp"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["vrid"] == 51)
        .with_context(|| format!("no VRID 51 in {st:#}"))?;
    Ok(g["state"].as_str().unwrap_or_default().to_string())
}

/// Waits until `master` is VRID 51's Master holding its VIP and each pool VIP is on
/// exactly one of `nodes`, each node holding `per_node` of them.
fn wait_settled(lab: &Lab, nodes: &[&Host], master: &Host, per_node: usize) -> anyhow::Result<()> {
    wait_until(
        &format!("{} Master of VRID 51, the pool balanced", master.name),
        WAIT,
        || {
            let pool_ok = POOL.iter().all(|v| {
                nodes
                    .iter()
                    .filter(|n| lab.has_address(n, v).unwrap_or(false))
                    .count()
                    == 1
            }) && nodes.iter().all(|n| held(lab, n, &POOL) == per_node);
            let group_ok = lab.has_address(master, GROUP_VIP)?
                && nodes
                    .iter()
                    .filter(|n| n.name != master.name)
                    .all(|n| !lab.has_address(n, GROUP_VIP).unwrap_or(true));
            Ok(pool_ok && group_ok && group_state(lab, master)? == "master")
        },
    )
    .with_context(|| {
        nodes
            .iter()
            .map(|n| format!("{}: {:?}", n.name, lab.addresses(n).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_pool_and_a_vrrp_group_fail_over_in_one_daemon() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("mixed")?;
    let [n1, n2] = lab.add_nodes::<2>()?;
    let p1 = start(&mut lab, &n1, 1, 200, "", "n1-vipd")?;
    let p2 = start(&mut lab, &n2, 2, 100, "", "n2-vipd")?;
    wait_settled(&lab, &[&n1, &n2], &n1, 1)?;

    // One status, both parts: the pool's view and VIPs, the group, both fast paths, and
    // the one XDP program's counters for heartbeats and adverts.
    let st = status(&lab, &n1)?;
    ensure!(st["view"] == serde_json::json!([1, 2]), "view: {st:#}");
    ensure!(
        st["fast_path"].is_object() && st["vrrp_fast_path"].is_object(),
        "both fast paths in the status: {st:#}"
    );
    ensure!(
        st["vips"].as_array().is_some_and(|v| v.len() == POOL.len()),
        "the pool's VIPs in the status: {st:#}"
    );
    let st2 = status(&lab, &n2)?;
    ensure!(
        counter(&st2, "heartbeats_accepted") > 0 && counter(&st2, "vrrp_accepted") > 0,
        "one XDP program reads both heartbeats and adverts: {st2:#}"
    );
    ensure!(group_state(&lab, &n2)? == "backup");

    // A hard failure of n1: n2 takes its pool VIP and becomes the group's Master.
    lab.proc(p1).signal(libc::SIGKILL)?;
    lab.proc(p1).wait_exit(WAIT)?;
    wait_until("n2 holding every VIP", WAIT, || {
        Ok(held(&lab, &n2, &POOL) == POOL.len()
            && lab.has_address(&n2, GROUP_VIP)?
            && group_state(&lab, &n2)? == "master")
    })
    .with_context(|| format!("n2: {:?}", lab.addresses(&n2).unwrap_or_default()))?;
    // The killed daemon's addresses stay on n1 until it runs again (its XDP program, still
    // attached, fences them): the new daemon clears them at start-up.
    let p1 = start(&mut lab, &n1, 1, 200, "", "n1-vipd-again")?;
    wait_settled(&lab, &[&n1, &n2], &n1, 1)?;
    lab.proc(p2).wait_for_line(
        &["vrrp state", "vrid=51", "to=backup", "reason=preempted"],
        WAIT,
    )?;

    // A graceful stop of n2: its pool VIP goes to n1 at once (LEAVING); the group stays.
    stop(&mut lab, p2)?;
    wait_until("n1 holding every VIP", WAIT, || {
        Ok(held(&lab, &n1, &POOL) == POOL.len() && lab.has_address(&n1, GROUP_VIP)?)
    })?;
    ensure!(held(&lab, &n2, &POOL) == 0 && !lab.has_address(&n2, GROUP_VIP)?);
    stop(&mut lab, p1)?;
    ensure!(held(&lab, &n1, &POOL) == 0 && !lab.has_address(&n1, GROUP_VIP)?);
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_vrrp_group_on_another_interface_than_the_pool() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("mixedif")?;
    let [n1, n2] = lab.add_nodes::<2>()?;
    lab.connect(&n1, &n2, "eth1", "198.51.100.11/24", "198.51.100.12/24")?;
    let mut procs = Vec::new();
    for (host, id, priority) in [(&n1, 1, 200), (&n2, 2, 100)] {
        let spec =
            format!("52,priority={priority},vip=198.51.100.200/24,interval=100ms,interface=eth1");
        let p = spawn(
            &mut lab,
            host,
            id,
            &format!("{}-vipd", host.name),
            &spec,
            &[],
        )?;
        lab.proc(p)
            .wait_for_line(&["vipd started: VRRP groups"], WAIT)?;
        procs.push(p);
    }
    let on_eth1 = |lab: &Lab, host: &Host| -> anyhow::Result<bool> {
        Ok(lab
            .addresses_on(host, "eth1")?
            .iter()
            .any(|a| a.starts_with("198.51.100.200/")))
    };
    wait_until(
        "the pool balanced on eth0, VRID 52 Master n1 on eth1",
        WAIT,
        || {
            Ok(held(&lab, &n1, &POOL) == 1
                && held(&lab, &n2, &POOL) == 1
                && on_eth1(&lab, &n1)?
                && !on_eth1(&lab, &n2)?)
        },
    )?;
    let st = status(&lab, &n1)?;
    ensure!(
        st["interface"] == "eth0,eth1" && st["carrier"]["eth1"] == true,
        "both interfaces in the status: {st:#}"
    );
    // The group's cable goes down (both ends lose carrier): the group stops on both nodes
    // (its VIP removed, the status degraded on eth1) while the pool, on eth0, stays as it
    // is; the cable back, n1 is the group's Master again.
    lab.set_link_of(&n1, "eth1", false)?;
    wait_until("VRID 52's VIP on neither node", WAIT, || {
        Ok(!on_eth1(&lab, &n1)? && !on_eth1(&lab, &n2)?)
    })?;
    let st = status(&lab, &n1)?;
    ensure!(
        st["carrier"]["eth1"] == false,
        "eth1 without carrier: {st:#}"
    );
    ensure!(held(&lab, &n1, &POOL) == 1 && held(&lab, &n2, &POOL) == 1);
    lab.set_link_of(&n1, "eth1", true)?;
    wait_until("VRID 52 back on n1", WAIT, || {
        Ok(on_eth1(&lab, &n1)? && !on_eth1(&lab, &n2)?)
    })?;
    ensure!(held(&lab, &n1, &POOL) == 1 && held(&lab, &n2, &POOL) == 1);
    for p in procs {
        stop(&mut lab, p)?;
    }
    Ok(())
}
