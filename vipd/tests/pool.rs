//! Pool mode in network namespaces: N VIPs over M nodes, balanced and weighted, with
//! minimal movement on failures, IPv6, a flapping link, and divergent views converging.
//!
//! These run as root (CI does); elsewhere they are listed as ignored, with the reason.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use anyhow::Context as _;
use vipd_lab::lab::{Host, Lab, require_root, wait_until};

const SETTLE: Duration = Duration::from_secs(15);

struct Pool {
    lab: Lab,
    nodes: Vec<Host>,
    client: Host,
    vips: Vec<String>,
    procs: BTreeMap<String, usize>,
}

impl Pool {
    /// `n` nodes (192.0.2.1x, 2001:db8::1x) and a client; `vips` is the pool.
    fn new(tag: &str, n: usize, vips: &[&str]) -> anyhow::Result<Self> {
        let mut lab = Lab::new(tag)?;
        let mut nodes = Vec::new();
        for i in 1..=n {
            let h = lab.add_host(
                &format!("n{i}"),
                &format!("192.0.2.{}/24", 10 + i),
                &format!("02:00:00:00:00:{:02x}", 10 + i),
            )?;
            lab.add_address(&h, &format!("2001:db8::{}/64", 10 + i))?;
            nodes.push(h);
        }
        let client = lab.add_host("client", "192.0.2.100/24", "02:00:00:00:00:64")?;
        lab.add_address(&client, "2001:db8::100/64")?;
        Ok(Self {
            lab,
            nodes,
            client,
            vips: vips.iter().map(|v| v.to_string()).collect(),
            procs: BTreeMap::new(),
        })
    }

    /// Starts vipd on node `i` (1-based) with `extra` flags.
    fn start(&mut self, i: usize, run: &str, extra: &[&str]) -> anyhow::Result<()> {
        let host = self.nodes[i - 1].clone();
        let mut args = vec!["--interval", "50ms"];
        if !extra.contains(&"--config") {
            for v in &self.vips {
                args.extend(["--vip", v.as_str()]);
            }
        }
        args.extend_from_slice(extra);
        let vipd = Path::new(env!("CARGO_BIN_EXE_vipd"));
        let p = self.lab.spawn_vipd(
            &host,
            i as u32,
            &format!("{}-{run}", host.name),
            vipd,
            &args,
        )?;
        self.lab
            .proc(p)
            .wait_for_line(&["XDP program attached"], SETTLE)?;
        self.procs.insert(host.name.clone(), p);
        Ok(())
    }

    /// Two nodes, two VIPs, one each (300 ms hold-down); returns n1's VIP too.
    fn two_balanced(tag: &str) -> anyhow::Result<(Self, String)> {
        let mut p = Pool::new(tag, 2, &["192.0.2.201", "192.0.2.202"])?;
        for i in 1..=2 {
            p.start(i, "first", &["--hold-down", "300ms"])?;
        }
        let n1_vip = vip_of(&p.wait_counts(&[1, 2], &[1, 1])?, "n1")?;
        Ok((p, n1_vip))
    }

    /// The client asks who has `vip` (three ARP requests): `owner` answers, `fenced` never.
    fn only_answers(&self, vip: &str, owner: &Host, fenced: &Host) -> anyhow::Result<()> {
        let args = ["-c", "3", "-w", "3", "-I", "eth0", vip];
        let out = self.lab.exec(&self.client, "arping", &args)?;
        let text = String::from_utf8_lossy(&out.stdout).to_uppercase();
        anyhow::ensure!(
            text.contains(&owner.mac.to_uppercase()),
            "{} answers:\n{text}",
            owner.name
        );
        anyhow::ensure!(
            !text.contains(&fenced.mac.to_uppercase()),
            "the fenced {} answered:\n{text}",
            fenced.name
        );
        Ok(())
    }

    /// Freezes node `i`'s daemon (SIGSTOP), runs `during`, and thaws it (SIGCONT) whatever
    /// `during` returned.
    fn frozen(
        &mut self,
        i: usize,
        during: impl FnOnce(&Self) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let pid = self.procs[&format!("n{i}")];
        self.lab.proc(pid).signal(libc::SIGSTOP)?;
        let result = during(self);
        self.lab.proc(pid).signal(libc::SIGCONT)?;
        result
    }

    /// Node `i` says it sent no heartbeat for longer than the dead interval (so it gave back
    /// what it held), and the two nodes settle one VIP each, answered.
    fn yields_and_rebalances(&mut self, i: usize) -> anyhow::Result<()> {
        self.lab.proc(self.procs[&format!("n{i}")]).wait_for_line(
            &["sent no heartbeat for longer than the dead interval"],
            SETTLE,
        )?;
        self.one_each()
    }

    /// The two nodes settle one VIP each, each answered by its holder.
    fn one_each(&self) -> anyhow::Result<()> {
        let healed = self.wait_counts(&[1, 2], &[1, 1])?;
        self.wait_answering(&healed)
    }

    /// Stops node `i`'s daemon gracefully (SIGTERM) and waits for it to exit.
    fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        let pid = self.procs[&format!("n{i}")];
        self.lab.proc(pid).signal(libc::SIGTERM)?;
        self.lab.proc(pid).wait_exit(SETTLE).map(|_| ())
    }

    /// Hard failure of node `i`: SIGKILL and its link cut.
    fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let host = self.nodes[i - 1].clone();
        let p = self.procs[&host.name];
        self.lab.proc(p).signal(libc::SIGKILL)?;
        self.lab.set_link(&host, false)?;
        self.lab.proc(p).wait_exit(SETTLE).ok();
        Ok(())
    }

    /// Who holds each VIP among `live` nodes (1-based), once every VIP is on exactly one of
    /// them and node `live[k]` holds `counts[k]` VIPs.
    fn wait_counts(
        &self,
        live: &[usize],
        counts: &[usize],
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let mut owners = BTreeMap::new();
        let mut last = String::new();
        wait_until(
            &format!("VIP counts {counts:?} on nodes {live:?}"),
            SETTLE,
            || {
                owners.clear();
                for vip in &self.vips {
                    let addr = vip.split('/').next().unwrap_or(vip);
                    let on: Vec<&Host> = live
                        .iter()
                        .map(|i| &self.nodes[i - 1])
                        .filter(|h| self.lab.has_address(h, addr).unwrap_or(false))
                        .collect();
                    if on.len() != 1 {
                        last = format!(
                            "{vip} on {:?}",
                            on.iter().map(|h| &h.name).collect::<Vec<_>>()
                        );
                        return Ok(false);
                    }
                    owners.insert(addr.to_string(), on[0].name.clone());
                }
                let have = self.held_counts(&owners, live.iter().copied());
                last = format!("counts {have:?}");
                Ok(have == counts)
            },
        )
        .with_context(|| format!("last seen: {last}"))?;
        Ok(owners)
    }

    /// Every VIP answers the client, from the MAC of the node holding it.
    fn wait_answering(&self, owners: &BTreeMap<String, String>) -> anyhow::Result<()> {
        for (vip, owner) in owners {
            let mac = &self
                .nodes
                .iter()
                .find(|h| h.name == *owner)
                .expect("owner")
                .mac;
            wait_until(&format!("{vip} answering from {owner}"), SETTLE, || {
                Ok(self.lab.ping(&self.client, vip)?
                    && self.lab.neighbour_mac(&self.client, vip)?.as_deref() == Some(mac.as_str()))
            })
            .with_context(|| {
                format!(
                    "ping: {:?}, client's entry: {:?}",
                    self.lab.ping(&self.client, vip),
                    self.lab.ip(&self.client.netns, &["neigh", "show", vip])
                )
            })?;
        }
        Ok(())
    }

    /// How many of `owners`' VIPs each of `nodes` (1-based) holds, in order.
    fn held_counts(
        &self,
        owners: &BTreeMap<String, String>,
        nodes: impl Iterator<Item = usize>,
    ) -> Vec<usize> {
        nodes
            .map(|i| {
                owners
                    .values()
                    .filter(|o| **o == self.nodes[i - 1].name)
                    .count()
            })
            .collect()
    }

    fn log(&mut self, node: &str) -> String {
        let p = self.procs[node];
        self.lab.proc(p).output()
    }
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// A VIP `node` holds, from [`Pool::wait_counts`]'s owners.
fn vip_of(owners: &BTreeMap<String, String>, node: &str) -> anyhow::Result<String> {
    owners
        .iter()
        .find(|(_, o)| *o == node)
        .map(|(v, _)| v.clone())
        .with_context(|| format!("{node}'s VIP"))
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn three_nodes_six_vips_spread_and_return_over_ipv4_and_ipv6() -> anyhow::Result<()> {
    require_root();
    let vips = [
        "192.0.2.201",
        "192.0.2.202",
        "192.0.2.203",
        "2001:db8::201",
        "2001:db8::202",
        "2001:db8::203",
    ];
    let mut p = Pool::new("vp", 3, &vips)?;
    // Heartbeats over IPv6 link-local multicast: the XDP program parses IPv6 too.
    let flags = ["--group", "ff02::7846", "--hold-down", "500ms"];
    for i in 1..=3 {
        p.start(i, "first", &flags)?;
    }
    let before = p.wait_counts(&[1, 2, 3], &[2, 2, 2])?;
    p.wait_answering(&before)?;

    // n3 dies: its two VIPs go one to n1 and one to n2; nothing else moves.
    p.kill(3)?;
    let after = p.wait_counts(&[1, 2], &[3, 3])?;
    for (vip, owner) in &before {
        if owner != "n3" {
            assert_eq!(&after[vip], owner, "{vip} moved off a survivor");
        }
    }
    p.wait_answering(&after)?;

    // n2 dies too: n1 holds all six.
    p.kill(2)?;
    let alone = p.wait_counts(&[1], &[6])?;
    p.wait_answering(&alone)?;

    // Both return (their crashed runs' addresses are cleaned at start): 2 each again,
    // every moved VIP coming from n1.
    for i in [2, 3] {
        p.lab.set_link(&p.nodes[i - 1].clone(), true)?;
        p.start(i, "second", &flags)?;
    }
    let back = p.wait_counts(&[1, 2, 3], &[2, 2, 2])?;
    p.wait_answering(&back)?;
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn five_weighted_nodes_hold_shares_by_weight() -> anyhow::Result<()> {
    require_root();
    let vips: Vec<String> = (201..=210).map(|i| format!("192.0.2.{i}")).collect();
    let vips: Vec<&str> = vips.iter().map(String::as_str).collect();
    let mut p = Pool::new("vw", 5, &vips)?;
    let weights = ["1", "1", "2", "2", "4"];
    for (i, w) in weights.iter().enumerate() {
        // Default transport: IPv4 link-local multicast.
        p.start(i + 1, "first", &["--weight", w, "--hold-down", "500ms"])?;
    }
    // 10 VIPs over weights 1+1+2+2+4: shares are exactly the weights.
    let owners = p.wait_counts(&[1, 2, 3, 4, 5], &[1, 1, 2, 2, 4])?;
    p.wait_answering(&owners)?;

    // The heavy node dies: its 4 VIPs spread by weight (shares 10/6·w: 1.7, 1.7, 3.3, 3.3),
    // and only its VIPs move.
    p.kill(5)?;
    // The light nodes are furthest below their shares, so they get the two odd VIPs.
    let after = p.wait_counts(&[1, 2, 3, 4], &[2, 2, 3, 3])?;
    for (vip, owner) in &owners {
        if owner != "n5" {
            assert_eq!(&after[vip], owner, "{vip} moved off a survivor");
        }
    }
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_flapping_link_does_not_drag_vips_back_and_forth() -> anyhow::Result<()> {
    require_root();
    let mut p = Pool::new("vl", 3, &["192.0.2.201", "192.0.2.202", "192.0.2.203"])?;
    let flags = ["--hold-down", "1500ms", "--dead-interval", "150ms"];
    for i in 1..=3 {
        p.start(i, "first", &flags)?;
    }
    p.wait_counts(&[1, 2, 3], &[1, 1, 1])?;
    let taken = |p: &mut Pool, n: &str| count(&p.log(n), r#"event="address_added""#);
    let released = |p: &mut Pool, n: &str| count(&p.log(n), "released VIP");
    let (t1, t2, t3) = (
        taken(&mut p, "n1"),
        taken(&mut p, "n2"),
        taken(&mut p, "n3"),
    );
    let (r1, r2, r3) = (
        released(&mut p, "n1"),
        released(&mut p, "n2"),
        released(&mut p, "n3"),
    );

    // n3's switch port flaps 6 times: 300 ms down (twice the dead interval), 300 ms up
    // (well inside the hold-down). The schedule is the stimulus, not a synchronisation.
    let n3 = p.nodes[2].clone();
    for _ in 0..6 {
        p.lab.set_switch_port(&n3, false)?;
        std::thread::sleep(Duration::from_millis(300));
        p.lab.set_switch_port(&n3, true)?;
        std::thread::sleep(Duration::from_millis(300));
    }
    // After a hold-down of stability n3 gets one VIP back.
    let after = match p.wait_counts(&[1, 2, 3], &[1, 1, 1]) {
        Ok(after) => after,
        Err(e) => {
            let logs: Vec<String> = ["n1", "n2", "n3"]
                .iter()
                .map(|n| format!("--- {n}\n{}", p.log(n)))
                .collect();
            return Err(e.context(logs.join("\n")));
        }
    };
    p.wait_answering(&after)?;

    // Over the whole episode: n3's VIP went to a survivor once and n3 got one VIP back
    // once; n3 took nothing while flapping.
    let survivors_took = taken(&mut p, "n1") + taken(&mut p, "n2") - t1 - t2;
    assert_eq!(
        survivors_took, 1,
        "survivors took over more than n3's one VIP"
    );
    assert_eq!(taken(&mut p, "n3") - t3, 1, "n3 took VIPs while flapping");
    assert_eq!(
        released(&mut p, "n3") - r3,
        1,
        "n3 released its VIP once, at the first carrier loss"
    );
    assert_eq!(
        released(&mut p, "n1") + released(&mut p, "n2") - r1 - r2,
        1,
        "one VIP given back"
    );
    assert_eq!(count(&p.log("n3"), "carrier lost"), 6);
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn divergent_views_converge_to_one_owner_and_reannounce() -> anyhow::Result<()> {
    require_root();
    let mut p = Pool::new("vd", 2, &["192.0.2.201", "192.0.2.202"])?;
    p.start(
        1,
        "first",
        &["--peer", "192.0.2.12", "--hold-down", "300ms"],
    )?;
    p.start(
        2,
        "first",
        &["--peer", "192.0.2.11", "--hold-down", "300ms"],
    )?;
    let owners = p.wait_counts(&[1, 2], &[1, 1])?;
    let n1_vip = vip_of(&owners, "n1")?;

    // n1's heartbeats stop reaching n2 (n2's still reach n1): n2 declares n1 dead and
    // takes its VIP while n1 keeps it. The views differ.
    let n1 = p.nodes[0].clone();
    let nft = |p: &Pool, args: &[&str]| -> anyhow::Result<()> {
        let out = p.lab.exec(&n1, "nft", args)?;
        anyhow::ensure!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    nft(&p, &["add", "table", "inet", "vipdtest"])?;
    nft(
        &p,
        &[
            "add",
            "chain",
            "inet",
            "vipdtest",
            "out",
            "{ type filter hook output priority 0; }",
        ],
    )?;
    nft(
        &p,
        &[
            "add",
            "rule",
            "inet",
            "vipdtest",
            "out",
            "ip",
            "daddr",
            "192.0.2.12",
            "udp",
            "dport",
            "7846",
            "drop",
        ],
    )?;
    wait_until("both nodes holding n1's VIP", SETTLE, || {
        Ok(p.lab.has_address(&p.nodes[0], &n1_vip)? && p.lab.has_address(&p.nodes[1], &n1_vip)?)
    })?;
    p.lab
        .proc(p.procs["n1"])
        .wait_for_line(&["claimed by another node too"], SETTLE)?;

    // Heal: as soon as the views agree, one owner per VIP (the lower id keeps it), and n1
    // announces it again so the client's stale entry (n2's MAC) is corrected.
    nft(&p, &["delete", "table", "inet", "vipdtest"])?;
    let healed = p.wait_counts(&[1, 2], &[1, 1])?;
    assert_eq!(healed[&n1_vip], "n1");
    p.lab
        .proc(p.procs["n1"])
        .wait_for_line(&["conflict resolved: announcing again"], SETTLE)?;
    p.wait_answering(&healed)?;
    Ok(())
}

/// A cut between two nodes that a third still hears (no carrier lost, the client reaches
/// everyone): nobody takes over, because the third vouches for each side; no VIP is ever
/// on two nodes, and the heal changes nothing. A real failure behind the same cut is still
/// a failover.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_partition_that_a_third_node_sees_across_moves_nothing() -> anyhow::Result<()> {
    require_root();
    let vips = [
        "192.0.2.201",
        "192.0.2.202",
        "192.0.2.203",
        "192.0.2.204",
        "192.0.2.205",
        "192.0.2.206",
    ];
    let mut p = Pool::new("vp", 3, &vips)?;
    for i in 1..=3 {
        p.start(i, "first", &["--hold-down", "300ms"])?;
    }
    let before = p.wait_counts(&[1, 2, 3], &[2, 2, 2])?;
    let (n1, n2) = (p.nodes[0].clone(), p.nodes[1].clone());
    let takes: Vec<usize> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| count(&p.log(n), "took over VIP"))
        .collect();

    p.lab.partition(&n1, &n2, true)?;
    // Both sides see the other fall silent past the dead interval, and keep it: n3 hears it.
    for (node, peer) in [("n1", "2"), ("n2", "1")] {
        p.lab.proc(p.procs[node]).wait_for_line(
            &[
                "heard by another member: kept in the view",
                &format!("peer={peer}"),
            ],
            SETTLE,
        )?;
    }
    // Meanwhile every VIP stays where it was, on one node only (looked at for 4 s: longer
    // than a VIP may go unclaimed before the lowest id takes it, 50 times at least).
    let looked = std::time::Instant::now();
    for i in 0..1000 {
        if i >= 50 && looked.elapsed() > Duration::from_secs(4) {
            break;
        }
        for (vip, owner) in &before {
            for node in &p.nodes {
                assert_eq!(
                    p.lab.has_address(node, vip)?,
                    node.name == *owner,
                    "{vip} (held by {owner}) on {}",
                    node.name
                );
            }
        }
    }
    for (node, n) in ["n1", "n2", "n3"].iter().zip(&takes) {
        let log = p.log(node);
        assert_eq!(count(&log, "took over VIP"), *n, "{node} took more:\n{log}");
    }

    // The cut heals: nothing moves.
    p.lab.partition(&n1, &n2, false)?;
    p.lab
        .proc(p.procs["n1"])
        .wait_for_line(&["no longer kept on another member's word"], SETTLE)?;
    assert_eq!(p.wait_counts(&[1, 2, 3], &[2, 2, 2])?, before);

    // Cut again, and n2 really dies behind it: n1 and n3 take its VIPs.
    p.lab.partition(&n1, &n2, true)?;
    p.kill(2)?;
    p.wait_counts(&[1, 3], &[3, 3])?;
    Ok(())
}

/// A frozen daemon (SIGSTOP past the dead interval): its peer takes its VIPs over and its
/// own kernel stops answering ARP for them (self-fencing in XDP), so clients see one owner;
/// on thaw it gives them back, holds down, then takes its share again.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_frozen_daemon_fences_itself_and_yields_on_thaw() -> anyhow::Result<()> {
    require_root();
    let (mut p, n1_vip) = Pool::two_balanced("vz")?;
    let (n1, n2) = (p.nodes[0].clone(), p.nodes[1].clone());

    p.frozen(1, |p| {
        wait_until("n2 holding n1's VIP", SETTLE, || {
            p.lab.has_address(&n2, &n1_vip)
        })?;
        assert!(
            p.lab.has_address(&n1, &n1_vip)?,
            "a frozen daemon cannot remove it"
        );
        // The client asks who has it: only n2 answers, n1's kernel is fenced.
        p.only_answers(&n1_vip, &n2, &n1)
    })?;
    p.yields_and_rebalances(1)?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["status", "--json", "--instance"])
        .arg(format!("{}-n1", p.lab.prefix()))
        .output()?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert!(
        status["counters"]["neighbor_fenced"].as_u64() > Some(0),
        "the fence is counted: {status}"
    );
    Ok(())
}

/// A daemon frozen (SIGSTOP) for longer than the time after which a silent peer is
/// forgotten (60 s): n2 takes its VIP and forgets it; thawed, n1 finds its peers' entries
/// stale, gives back what it still holds, and is verified and placed again as a new peer
/// would be: one owner each, never both answering meanwhile.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_daemon_frozen_past_the_forget_time_returns_to_one_owner() -> anyhow::Result<()> {
    require_root();
    let (mut p, n1_vip) = Pool::two_balanced("vz")?;
    let (n1, n2) = (p.nodes[0].clone(), p.nodes[1].clone());
    p.frozen(1, |p| {
        wait_until("n2 holding n1's VIP", SETTLE, || {
            p.lab.has_address(&n2, &n1_vip)
        })?;
        p.only_answers(&n1_vip, &n2, &n1)?;
        wait_until("n1 forgotten by n2", Duration::from_secs(90), || {
            std::thread::sleep(Duration::from_millis(500));
            let status = common::status(&p.lab, &n2)?;
            Ok(status["peers"]
                .as_array()
                .is_some_and(|a| a.iter().all(|x| x["id"] != 1)))
        })?;
        p.only_answers(&n1_vip, &n2, &n1)
    })?;
    p.yields_and_rebalances(1)
}

/// A rolling change of the dead interval caught halfway (n1 still on 250 ms, n2 already
/// on 3 s): n2, frozen, fences itself only after its own 3 s, so n1 waits that long for it
/// (heartbeats say the sender's dead interval) and clients never see both answer.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_holder_on_a_longer_dead_interval_is_fenced_before_it_is_replaced() -> anyhow::Result<()> {
    require_root();
    let mut p = Pool::new("vd", 2, &["192.0.2.201", "192.0.2.202"])?;
    p.start(1, "first", &["--hold-down", "300ms"])?;
    p.start(
        2,
        "first",
        &["--hold-down", "300ms", "--dead-interval", "3s"],
    )?;
    let owners = p.wait_counts(&[1, 2], &[1, 1])?;
    let n2_vip = vip_of(&owners, "n2")?;
    let (n1, n2) = (p.nodes[0].clone(), p.nodes[1].clone());
    let status = common::status(&p.lab, &n1)?;
    let peer = status["peers"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == 2))
        .context("peer 2 listed")?;
    assert_eq!(peer["dead_interval_ms"], 3000.0, "{status:#}");
    assert_eq!(status["dead_interval_ms"], 250.0, "its own: {status:#}");

    p.frozen(2, |p| {
        wait_until("n1 holding n2's VIP", SETTLE, || {
            p.lab.has_address(&n1, &n2_vip)
        })?;
        // Taken only once n2's kernel stopped answering for it.
        p.only_answers(&n2_vip, &n1, &n2)
    })?;
    p.one_each()?;
    Ok(())
}

/// A takeover blocked in netlink past the dead interval (a debug build's fault: n1's add
/// of n2's VIP stalls 2 s): n2, restarted meanwhile, hears nobody and takes every VIP;
/// n1, once unblocked, sent no heartbeat for longer than the dead interval, so it gives
/// back what it holds instead of keeping both VIPs beside n2, and returns: one owner each.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_takeover_blocked_in_netlink_gives_back_what_peers_took() -> anyhow::Result<()> {
    require_root();
    let (mut p, n1_vip) = Pool::two_balanced("vn")?;
    let n2_vip = p
        .vips
        .iter()
        .find(|v| **v != n1_vip)
        .cloned()
        .context("n2's VIP")?;
    // n1 again, with the fault armed for n2's VIP.
    p.stop(1)?;
    let stall = format!("{n2_vip}:2000");
    let host = p.nodes[0].clone();
    let mut args = vec!["--interval", "50ms", "--hold-down", "300ms"];
    for v in &p.vips {
        args.extend(["--vip", v.as_str()]);
    }
    let vipd = Path::new(env!("CARGO_BIN_EXE_vipd"));
    let env = [("VIPD_FAULT_STALL_ADD", stall.as_str())];
    let n1 = p
        .lab
        .spawn_vipd_with_env(&host, 1, "n1-stalling", vipd, &args, &env)?;
    p.lab
        .proc(n1)
        .wait_for_line(&["XDP program attached"], SETTLE)?;
    p.procs.insert("n1".into(), n1);
    p.wait_counts(&[1, 2], &[1, 1])?;

    // n2 stops (n1 takes its VIP and stalls in netlink), and starts again at once.
    p.stop(2)?;
    p.lab
        .proc(n1)
        .wait_for_line(&["test fault: the takeover stalls"], SETTLE)?;
    p.start(2, "second", &["--hold-down", "300ms"])?;
    p.yields_and_rebalances(1)
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_crashed_daemon_stays_fenced_and_its_restart_replaces_the_program() -> anyhow::Result<()> {
    require_root();
    let (mut p, n1_vip) = Pool::two_balanced("vk")?;
    let (n1, n2) = (p.nodes[0].clone(), p.nodes[1].clone());

    // A crash: the process dies, its link stays up, its VIP stays on the interface.
    let pid = p.procs["n1"];
    p.lab.proc(pid).signal(libc::SIGKILL)?;
    p.lab.proc(pid).wait_exit(SETTLE).ok();
    wait_until("n2 holding n1's VIP", SETTLE, || {
        p.lab.has_address(&n2, &n1_vip)
    })?;
    assert!(
        p.lab.has_address(&n1, &n1_vip)?,
        "a dead daemon cannot remove it"
    );
    // The XDP program outlived the daemon (its link is pinned) and fences the node: the
    // client's ARP requests are answered by n2 only.
    p.only_answers(&n1_vip, &n2, &n1)?;
    // `vipd status` reads the pins: fenced, holding the VIP on the interface.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["status", "--json", "--instance"])
        .arg(format!("{}-n1", p.lab.prefix()))
        .output()?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert!(
        status["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("fenced")),
        "{status:#}"
    );
    assert!(
        status["vips"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x["vip"] == n1_vip.as_str())),
        "{status:#}"
    );

    // The restart replaces the program (no "busy"), removes the leftover VIP and takes its
    // share back.
    p.start(1, "second", &["--hold-down", "300ms"])?;
    p.one_each()?;
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_healed_split_is_settled_at_once_and_rebalanced_after_the_heal_delay() -> anyhow::Result<()> {
    require_root();
    let mut p = Pool::new("vh", 2, &["192.0.2.201", "192.0.2.202"])?;
    for i in 1..=2 {
        p.start(i, "first", &["--hold-down", "300ms", "--heal-delay", "6s"])?;
    }
    p.wait_counts(&[1, 2], &[1, 1])?;
    let (n1, n2) = (p.nodes[0].clone(), p.nodes[1].clone());

    // A real split (nobody sees both sides): each side takes every VIP.
    p.lab.partition(&n1, &n2, true)?;
    wait_until("both sides holding every VIP", SETTLE, || {
        for vip in &p.vips {
            if !(p.lab.has_address(&n1, vip)? && p.lab.has_address(&n2, vip)?) {
                return Ok(false);
            }
        }
        Ok(true)
    })?;

    // Healed: the VIPs both took are settled at once (the lower id keeps them), while n2
    // waits out its heal delay before it gets its share back.
    p.lab.partition(&n1, &n2, false)?;
    p.wait_counts(&[1, 2], &[2, 0])?;
    let status = common::status(&p.lab, &n1)?;
    let peer = status["peers"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == 2))
        .context("peer 2 listed")?;
    assert_eq!(peer["state"], "returning (heal delay)", "{status:#}");
    p.one_each()?;
    Ok(())
}

/// A split longer than the time after which a silent peer is forgotten (60 s): each side
/// forgets the other, and once healed they hear, verify and place with each other again
/// (each VIP back on one node), as after a short split.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_split_longer_than_the_forget_time_heals_to_one_owner() -> anyhow::Result<()> {
    require_root();
    let mut p = Pool::new("vf", 2, &["192.0.2.201", "192.0.2.202"])?;
    for i in 1..=2 {
        p.start(i, "first", &["--hold-down", "300ms"])?;
    }
    p.wait_counts(&[1, 2], &[1, 1])?;
    let (n1, n2) = (p.nodes[0].clone(), p.nodes[1].clone());

    p.lab.partition(&n1, &n2, true)?;
    // Both sides take every VIP, then forget each other (no longer listed as peers).
    for (node, peer) in [(&n1, 2), (&n2, 1)] {
        wait_until("the peer forgotten", Duration::from_secs(90), || {
            std::thread::sleep(Duration::from_millis(500));
            let status = common::status(&p.lab, node)?;
            Ok(status["peers"]
                .as_array()
                .is_some_and(|a| a.iter().all(|x| x["id"] != peer)))
        })?;
    }
    p.lab.partition(&n1, &n2, false)?;
    p.one_each()?;
    for (node, peer) in [(&n1, 2), (&n2, 1)] {
        let status = common::status(&p.lab, node)?;
        let entry = status["peers"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == peer))
            .context("peer listed")?;
        assert_eq!(entry["in_view"], true, "{status:#}");
    }
    Ok(())
}

/// A restart behind a cut that a third node sees across (3 nodes, 6 VIPs; n1 and n2 cut
/// apart, n1 restarted 3 s in): during the cut every VIP stays answered, never by two nodes
/// that hear each other, and the heal leaves each VIP on one node, balanced.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_restart_during_a_cut_leaves_no_vip_on_none_or_on_two() -> anyhow::Result<()> {
    require_root();
    let vips = [
        "192.0.2.201",
        "192.0.2.202",
        "192.0.2.203",
        "192.0.2.204",
        "192.0.2.205",
        "192.0.2.206",
    ];
    let mut p = Pool::new("vr", 3, &vips)?;
    for i in 1..=3 {
        p.start(i, "first", &["--hold-down", "300ms"])?;
    }
    p.wait_counts(&[1, 2, 3], &[2, 2, 2])?;
    let (n1, n2, n3) = (p.nodes[0].clone(), p.nodes[1].clone(), p.nodes[2].clone());

    p.lab.partition(&n1, &n2, true)?;
    std::thread::sleep(Duration::from_secs(3));
    p.stop(1)?;
    p.start(1, "second", &["--hold-down", "300ms"])?;
    // During the cut: every VIP answered, by one of n1 and n3 and one of n2 and n3 at
    // most (n1 and n2 do not hear each other).
    let mut last = String::new();
    wait_until(
        "every VIP on a node, never on two that hear each other",
        SETTLE,
        || {
            for vip in &vips {
                let on: Vec<&Host> = [&n1, &n2, &n3]
                    .into_iter()
                    .filter(|h| p.lab.has_address(h, vip).unwrap_or(false))
                    .collect();
                let hear =
                    |a: &Host, b: &Host| !(a.name != b.name && a.name != "n3" && b.name != "n3");
                let twice = on
                    .iter()
                    .enumerate()
                    .any(|(k, a)| on[k + 1..].iter().any(|b| hear(a, b)));
                if on.is_empty() || twice {
                    last = format!(
                        "{vip} on {:?}",
                        on.iter().map(|h| &h.name).collect::<Vec<_>>()
                    );
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .with_context(|| last.clone())?;

    p.lab.partition(&n1, &n2, false)?;
    let healed = p.wait_counts(&[1, 2, 3], &[2, 2, 2])?;
    p.wait_answering(&healed)?;
    Ok(())
}

/// A changed VIP list rolled out node by node (SIGHUP, one node at a time), one VIP
/// dropped and one added: nodes on different lists exchange their lists and place the VIPs
/// they share alike, so no VIP is ever on two nodes or on none that some live node lists
/// (each VIP on a node that lists it), also when a node on the old list dies halfway; each
/// node shows the others on another list until they have reloaded too.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_rolling_vip_list_change_never_doubles_or_drops_a_vip() -> anyhow::Result<()> {
    require_root();
    let old: Vec<String> = (201..=206).map(|i| format!("192.0.2.{i}")).collect();
    let new: Vec<String> = (202..=207).map(|i| format!("192.0.2.{i}")).collect();
    let every: Vec<&str> = ["192.0.2.201", "192.0.2.207"]
        .into_iter()
        .chain(new.iter().take(5).map(String::as_str))
        .collect();
    let mut p = Pool::new("vr", 3, &every)?;
    let write = |p: &Pool, i: usize, vips: &[String]| -> anyhow::Result<String> {
        let path = p.lab.dir().join(format!("n{i}.toml"));
        let list: Vec<String> = vips.iter().map(|v| format!("\"{v}\"")).collect();
        std::fs::write(&path, format!("[pool]\nvips = [{}]\n", list.join(", ")))?;
        Ok(path.to_str().context("path")?.to_owned())
    };
    let mut lists: BTreeMap<usize, &[String]> = BTreeMap::new();
    let mut paths = Vec::new();
    for i in 1..=3 {
        paths.push(write(&p, i, &old)?);
        p.start(
            i,
            "first",
            &["--config", &paths[i - 1], "--hold-down", "300ms"],
        )?;
        lists.insert(i, &old);
    }
    // Every node active (past its hold-down) before the change rolls: two VIPs each.
    p.wait_placed_counts(&lists, Some(&[2, 2, 2]))?;

    // n1, then n2, reload the new list; after each step every VIP is placed once.
    let other_list = |p: &Pool, node: usize, peer: u32| -> anyhow::Result<bool> {
        let status = common::status(&p.lab, &p.nodes[node - 1])?;
        let peers = status["peers"].as_array().context("peers")?;
        let entry = peers
            .iter()
            .find(|x| x["id"] == peer)
            .context("peer listed")?;
        Ok(entry["other_vip_list"] == true)
    };
    for i in [1, 2] {
        write(&p, i, &new)?;
        let proc = p.procs[&format!("n{i}")];
        p.lab.proc(proc).signal(libc::SIGHUP)?;
        lists.insert(i, &new);
        p.wait_placed(&lists)?;
    }
    assert!(other_list(&p, 3, 1)? && other_list(&p, 1, 3)?);
    assert!(!other_list(&p, 1, 2)?);

    // n3, still on the old list, dies: what it held goes to n1 and n2, except the VIP
    // only its list has, which nobody live lists any more.
    p.kill(3)?;
    lists.remove(&3);
    let owners = p.wait_placed(&lists)?;
    assert!(!owners.contains_key("192.0.2.201"), "{owners:?}");

    // It comes back on the new list: one list again, two VIPs each.
    write(&p, 3, &new)?;
    p.lab.set_link(&p.nodes[2].clone(), true)?;
    p.start(
        3,
        "second",
        &["--config", &paths[2], "--hold-down", "300ms"],
    )?;
    lists.insert(3, &new);
    let owners = p.wait_placed_counts(&lists, Some(&[2, 2, 2]))?;
    p.wait_answering(&owners)?;
    assert!(!other_list(&p, 1, 3)?);
    Ok(())
}

impl Pool {
    /// Waits until every VIP some live node lists (`lists`: node → its list) is on
    /// exactly one live node, one that lists it, and no other VIP is on any; fails if a
    /// VIP is seen on the same two nodes by two reads in a row meanwhile (nodes are read
    /// one after the other, so one read may catch a handover half done). Returns who
    /// holds each.
    fn wait_placed(
        &self,
        lists: &BTreeMap<usize, &[String]>,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        self.wait_placed_counts(lists, None)
    }

    /// [`Pool::wait_placed`], also until the live nodes hold `counts` VIPs (in order).
    fn wait_placed_counts(
        &self,
        lists: &BTreeMap<usize, &[String]>,
        counts: Option<&[usize]>,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let mut owners = BTreeMap::new();
        let mut last = String::new();
        let mut doubled = BTreeSet::new();
        let mut doubled_now: BTreeSet<String> = BTreeSet::new();
        wait_until("each VIP on one node that lists it", SETTLE, || {
            owners.clear();
            let mut settled = true;
            let before = std::mem::take(&mut doubled_now);
            for vip in &self.vips {
                let on: Vec<usize> = lists
                    .keys()
                    .copied()
                    .filter(|i| {
                        self.lab
                            .has_address(&self.nodes[i - 1], vip)
                            .unwrap_or(false)
                    })
                    .collect();
                if on.len() > 1 {
                    let double = format!("{vip} on {on:?}");
                    if before.contains(&double) {
                        doubled.insert(double.clone());
                    }
                    doubled_now.insert(double);
                }
                let listed = lists.values().any(|l| l.contains(vip));
                let right = match on[..] {
                    [i] => lists[&i].contains(vip),
                    [] => !listed,
                    _ => false,
                };
                if !right {
                    last = format!("{vip} on {on:?}");
                    settled = false;
                } else if let [i] = on[..] {
                    owners.insert(vip.clone(), self.nodes[i - 1].name.clone());
                }
            }
            if let Some(counts) = counts {
                let have = self.held_counts(&owners, lists.keys().copied());
                if have != counts {
                    last = format!("counts {have:?}");
                    settled = false;
                }
            }
            Ok(settled)
        })
        .with_context(|| format!("last seen: {last}"))?;
        anyhow::ensure!(doubled.is_empty(), "VIPs on two nodes: {doubled:?}");
        Ok(owners)
    }
}

/// `vipd drain --wait`: n1 gives its VIP to n2 and holds nothing when it returns; it stays
/// out across a restart of vipd (the mark is kept), and `vipd undrain` brings it back to
/// one VIP each, answered.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_drained_node_stays_out_across_a_restart_until_undrained() -> anyhow::Result<()> {
    require_root();
    let (mut p, _) = Pool::two_balanced("vd")?;
    let instance = format!("{}-n1", p.lab.prefix());
    let vipd = |verb: &str, extra: &[&str]| -> anyhow::Result<String> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vipd"))
            .args([verb, "--instance", &instance])
            .args(extra)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "vipd {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let said = vipd("drain", &["--wait", "--timeout", "10s"])?;
    assert!(said.contains("holds no VIP"), "{said}");
    p.wait_counts(&[1, 2], &[0, 2])?;
    let status = common::status_of(&instance)?;
    assert_eq!(status["drained"], serde_json::json!(true), "{status}");
    // A restart keeps it out (past its hold-down: n2 keeps both).
    p.stop(1)?;
    p.start(1, "restarted", &["--hold-down", "300ms"])?;
    p.lab
        .proc(p.procs["n1"])
        .wait_for_line(&["this node is drained"], SETTLE)?;
    p.lab
        .proc(p.procs["n1"])
        .wait_for_line(&["hold-down over"], SETTLE)?;
    // Past its hold-down, a node that may hold VIPs is active at once: this one is not.
    let status = common::status_of(&instance)?;
    assert_eq!(status["drained"], serde_json::json!(true), "{status}");
    assert_eq!(status["state"], serde_json::json!("withdrawn"), "{status}");
    p.wait_counts(&[1, 2], &[0, 2])?;
    vipd("undrain", &[])?;
    p.one_each()?;
    let status = common::status_of(&instance)?;
    assert!(status.get("drained").is_none(), "{status}");
    Ok(())
}
