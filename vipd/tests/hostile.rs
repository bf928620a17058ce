//! Hostile packets in network namespaces: an attacker on the segment and one behind a
//! router (off-link, sending to a VIP) forge heartbeats; no VIP may move, be left unheld or
//! be held twice, and every refusal is counted under its name.
//!
//! These run as root (CI does); elsewhere they are listed as ignored, with the reason.

mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use socket2::SockRef;
use vipd_common::{
    auth::{AUTH_LEN, Key, sign},
    heartbeat::{DEFAULT_PORT, FLAG_LEAVING, FLAG_MATURE, HEADER_LEN, Heartbeat, State},
};
use vipd_lab::lab::{Host, Lab, require_root, wait_until};

use common::{counter, status};

const VIPS: [&str; 6] = [
    "192.0.2.201",
    "192.0.2.202",
    "192.0.2.203",
    "192.0.2.204",
    "192.0.2.205",
    "192.0.2.206",
];
/// Generous bound for anything that should take milliseconds (CI machines are slow).
const SETTLE: Duration = Duration::from_secs(20);

/// Which node holds each VIP (None: nobody; Err: more than one).
fn holders(lab: &Lab, nodes: &[(&Host, u32)]) -> anyhow::Result<Vec<Option<u32>>> {
    VIPS.iter()
        .map(|vip| {
            let mut on = Vec::new();
            for (host, id) in nodes {
                if lab.has_address(host, vip)? {
                    on.push(*id);
                }
            }
            anyhow::ensure!(on.len() <= 1, "{vip} is held by nodes {on:?}");
            Ok(on.first().copied())
        })
        .collect()
}

/// Starts a pool node with `extra` flags (the lab's key unless they say otherwise).
fn start(lab: &mut Lab, host: &Host, id: u32, extra: &[&str]) -> anyhow::Result<usize> {
    let mut args = vec!["--interval", "20ms", "--hold-down", "300ms"];
    for vip in VIPS {
        args.extend(["--vip", vip]);
    }
    args.extend_from_slice(extra);
    common::start_node(lab, host, id, &args, &[])
}

/// Waits until every VIP is held once and the nodes agree on the view `ids`.
fn settled(lab: &Lab, nodes: &[(&Host, u32)], ids: &[u32]) -> anyhow::Result<Vec<Option<u32>>> {
    wait_until("every VIP held once, views agree", SETTLE, || {
        // A hand-over in progress may hold a VIP twice for a moment: not settled yet.
        let Ok(held) = holders(lab, nodes) else {
            return Ok(false);
        };
        let mut views = Vec::new();
        for (host, _) in nodes {
            views.push(status(lab, host)?["view"].clone());
        }
        Ok(held.iter().all(Option::is_some) && views.iter().all(|v| *v == serde_json::json!(ids)))
    })?;
    holders(lab, nodes)
}

/// A forged heartbeat: `state` claims every VIP of the pool; `key` signs it.
fn forged(
    node_id: u32,
    incarnation: u64,
    sequence: u64,
    flags: u8,
    state: bool,
    key: Option<Key>,
) -> Vec<u8> {
    let mut section = vec![0u8; State::len_for(VIPS.len() as u16, 0)];
    if state {
        let digest = vipd::pool::pool_digest(
            &VIPS
                .iter()
                .map(|v| v.parse().unwrap())
                .collect::<Vec<vipd::vip::Vip>>(),
        );
        State::write(&mut section, digest, VIPS.len() as u16, |_| true, &[]);
    } else {
        section.clear();
    }
    let hb = Heartbeat {
        flags,
        auth_len: if key.is_some() { AUTH_LEN as u16 } else { 0 },
        cluster_id: 1,
        node_id,
        incarnation,
        sequence,
        interval_us: 20_000,
        weight: u16::MAX,
        state_len: section.len() as u16,
        view_digest: 0,
        hears: 0,
        dead_us: 60_000,
    };
    let mut payload = hb.to_bytes().to_vec();
    payload.extend_from_slice(&section);
    debug_assert_eq!(payload.len(), HEADER_LEN + section.len());
    if let Some(key) = key {
        let trailer = sign(key, &payload);
        payload.extend_from_slice(&trailer);
    }
    payload
}

/// A UDP socket in the current namespace that sends with `ttl` (255: as if on the link).
fn sender(ttl: u32) -> anyhow::Result<UdpSocket> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    let s = SockRef::from(&sock);
    s.set_ttl_v4(ttl)?;
    s.set_multicast_ttl_v4(ttl)?;
    Ok(sock)
}

/// Sends `frames` round-robin to `targets` from `host` for `length` (at most `max` in
/// all), pausing `gap` between rounds; returns how many were sent.
fn blast(
    lab: &Lab,
    host: &Host,
    ttl: u32,
    targets: &[SocketAddr],
    frames: &[Vec<u8>],
    (length, gap, max): (Duration, Duration, usize),
) -> anyhow::Result<usize> {
    let targets = targets.to_vec();
    let frames = frames.to_vec();
    lab.in_netns(host, move || {
        let sock = sender(ttl)?;
        let start = Instant::now();
        let mut sent = 0;
        'outer: while start.elapsed() < length {
            for f in &frames {
                for t in &targets {
                    if sent >= max {
                        break 'outer;
                    }
                    // A full socket buffer is not an error for a flood.
                    if sock.send_to(f, t).is_ok() {
                        sent += 1;
                    }
                }
            }
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
        }
        Ok(sent)
    })
}

fn key_of(lab: &Lab) -> anyhow::Result<Key> {
    let text = std::fs::read_to_string(lab.key_file()?)?;
    vipd::auth::parse_key(&text).map_err(anyhow::Error::msg)
}

/// Three nodes, an attacker on their link (`evil`) and one off it (`far`, behind a
/// router on the segment).
struct Attacked {
    lab: Lab,
    nodes: [Host; 3],
    evil: Host,
    far: Host,
}

fn attacked(tag: &str) -> anyhow::Result<Attacked> {
    let mut lab = Lab::new(tag)?;
    let nodes = lab.add_nodes()?;
    let evil = lab.add_host("evil", "192.0.2.66/24", "02:00:00:00:00:42")?;
    let rt = lab.add_host("rt", "192.0.2.1/24", "02:00:00:00:00:01")?;
    let far = lab.add_host("far", "203.0.113.66/24", "02:00:00:00:00:43")?;
    lab.set_switch_port(&far, false)?;
    lab.connect(&rt, &far, "eth1", "198.51.100.1/24", "198.51.100.2/24")?;
    lab.sysctl(&rt, "net.ipv4.ip_forward", "1")?;
    lab.ip(
        &far.netns,
        &["route", "add", "192.0.2.0/24", "via", "198.51.100.1"],
    )?;
    Ok(Attacked {
        lab,
        nodes,
        evil,
        far,
    })
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn forged_heartbeats_on_the_link_and_from_off_link_move_nothing() -> anyhow::Result<()> {
    require_root();
    let Attacked {
        mut lab,
        nodes: [n1, n2, n3],
        evil,
        far,
    } = attacked("vh")?;
    let nodes = [(&n1, 1), (&n2, 2), (&n3, 3)];
    for (host, id) in nodes {
        start(&mut lab, host, id, &[])?;
    }
    let before = settled(&lab, &nodes, &[1, 2, 3])?;

    // On the link, without the key: a heavy MATURE node 99, LEAVING for node 2, a new
    // incarnation of node 3, node 1 claiming every VIP — each with TTL 255, to every node
    // and to the group.
    let now = u64::MAX / 2;
    let frames = [
        forged(99, now, 1, FLAG_MATURE, false, None),
        forged(2, now, 1, FLAG_LEAVING, false, None),
        forged(3, now, 1, 0, false, None),
        forged(1, now, 1, FLAG_MATURE, true, None),
    ];
    let mut targets: Vec<SocketAddr> = ["192.0.2.11", "192.0.2.12", "192.0.2.13", "224.0.0.199"]
        .iter()
        .map(|a| SocketAddr::new(a.parse().unwrap(), DEFAULT_PORT))
        .collect();
    let attack = |lab: &Lab, host: &Host, ttl, targets: &[SocketAddr], frames: &[Vec<u8>]| {
        let length = Duration::from_secs(2);
        blast(
            lab,
            host,
            ttl,
            targets,
            frames,
            (length, Duration::from_millis(5), 20_000),
        )
    };
    std::thread::scope(|s| -> anyhow::Result<()> {
        let flood = s.spawn(|| attack(&lab, &evil, 255, &targets, &frames));
        // While it lasts, every VIP stays where it was, held once.
        while !flood.is_finished() {
            assert_eq!(
                holders(&lab, &nodes)?,
                before,
                "a VIP moved during the attack"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let sent = flood.join().expect("attacker")?;
        assert!(sent > 100, "the attack sent {sent} frames");
        Ok(())
    })?;
    for (host, _) in nodes {
        let s = status(&lab, host)?;
        assert_eq!(s["view"], serde_json::json!([1, 2, 3]), "{s}");
        assert!(counter(&s, "heartbeats_bad_auth") > 0, "{s}");
        let ids: Vec<u64> = s["peers"]
            .as_array()
            .context("peers")?
            .iter()
            .filter_map(|p| p["id"].as_u64())
            .collect();
        assert!(!ids.contains(&99), "node 99 recorded: {s}");
    }
    assert_eq!(holders(&lab, &nodes)?, before);

    // From off the link, to a VIP's own address, even signed with the cluster's key (a
    // leaked key, or a capture replayed from afar): TTL 63 on arrival, refused by GTSM.
    let key = key_of(&lab)?;
    let vip_holder = nodes
        .iter()
        .find(|(_, id)| before[0] == Some(*id))
        .map(|(h, _)| *h)
        .context("holder of the first VIP")?;
    let signed = [
        forged(99, now, 1, FLAG_MATURE, false, Some(key)),
        forged(2, now, 1, FLAG_LEAVING, false, Some(key)),
    ];
    targets = vec![SocketAddr::new(VIPS[0].parse().unwrap(), DEFAULT_PORT)];
    std::thread::scope(|s| -> anyhow::Result<()> {
        let flood = s.spawn(|| attack(&lab, &far, 64, &targets, &signed));
        while !flood.is_finished() {
            assert_eq!(
                holders(&lab, &nodes)?,
                before,
                "a VIP moved during the attack"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        flood.join().expect("attacker")?;
        Ok(())
    })?;
    wait_until("off-link heartbeats counted as bad TTL", SETTLE, || {
        Ok(counter(&status(&lab, vip_holder)?, "heartbeats_bad_ttl") > 10)
    })?;
    let s = status(&lab, vip_holder)?;
    assert_eq!(s["view"], serde_json::json!([1, 2, 3]), "{s}");
    assert_eq!(holders(&lab, &nodes)?, before);
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn forged_ids_cannot_lock_out_a_real_node_and_a_flood_costs_no_failover() -> anyhow::Result<()> {
    require_root();
    // Unauthenticated (the attacker could forge anything here): what must still hold is
    // that the tables stay usable, real nodes are never declared dead and logs stay small.
    let mut lab = Lab::new("vf")?;
    let [n1, n2, n3, n4] = lab.add_nodes()?;
    let evil = lab.add_host("evil", "192.0.2.66/24", "02:00:00:00:00:42")?;
    let mut procs = Vec::new();
    for (host, id) in [(&n1, 1), (&n2, 2), (&n3, 3)] {
        procs.push(start(&mut lab, host, id, &["--insecure"])?);
    }
    let three = [(&n1, 1), (&n2, 2), (&n3, 3)];
    settled(&lab, &three, &[1, 2, 3])?;
    let targets: Vec<SocketAddr> = ["192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14"]
        .iter()
        .map(|a| SocketAddr::new(a.parse().unwrap(), DEFAULT_PORT))
        .collect();

    // 2,000 distinct ids (never MATURE): more than the peer table holds.
    let ids: Vec<Vec<u8>> = (1000..3000)
        .map(|id| forged(id, 1, 1, 0, false, None))
        .collect();
    let sent = blast(
        &lab,
        &evil,
        255,
        &targets[..3],
        &ids,
        (Duration::from_secs(10), Duration::ZERO, ids.len() * 3),
    )?;
    assert_eq!(sent, ids.len() * 3);
    // A real fourth node started afterwards still joins everyone's view.
    procs.push(start(&mut lab, &n4, 4, &["--insecure"])?);
    let four = [(&n1, 1), (&n2, 2), (&n3, 3), (&n4, 4)];
    settled(&lab, &four, &[1, 2, 3, 4])?;

    // A flood of flags flipping between LEAVING and MATURE under many ids, as fast as the
    // attacker can send: status answers throughout, no real node is declared dead, and
    // the logs do not grow with the flood.
    let log_len = |lab: &mut Lab, p: usize| lab.proc(p).output().lines().count();
    let lines_before: Vec<usize> = procs.iter().map(|&p| log_len(&mut lab, p)).collect();
    let flipping: Vec<Vec<u8>> = (0..400u64)
        .map(|i| {
            let flags = if i % 2 == 0 {
                FLAG_LEAVING
            } else {
                FLAG_MATURE
            };
            forged(5000 + (i / 2) as u32 % 50, 7, i + 1, flags, false, None)
        })
        .collect();
    let answered = std::thread::scope(|s| -> anyhow::Result<usize> {
        let flood = s.spawn(|| {
            let window = (Duration::from_secs(3), Duration::ZERO, 500_000);
            blast(&lab, &evil, 255, &targets, &flipping, window)
        });
        let mut answered = 0;
        while !flood.is_finished() {
            for (host, _) in four {
                status(&lab, host)
                    .with_context(|| format!("status of {} during the flood", host.name))?;
                answered += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let sent = flood.join().expect("attacker")?;
        assert!(sent > 1000, "the flood sent {sent} frames");
        Ok(answered)
    })?;
    assert!(answered > 0);
    for (i, &p) in procs.iter().enumerate() {
        let out = lab.proc(p).output();
        let real_lost = out
            .lines()
            .filter(|l| l.contains("peer left the view"))
            .filter(|l| {
                l.split_whitespace()
                    .any(|w| ["peer=1", "peer=2", "peer=3", "peer=4"].contains(&w))
            })
            .count();
        assert_eq!(real_lost, 0, "a real node was declared lost:\n{out}");
        let grown = out.lines().count() - lines_before[i];
        assert!(grown < 2_000, "{grown} log lines during the flood");
    }
    Ok(())
}

/// Two nodes running, and an attacker's recording of n2's heartbeats (state sections
/// included) since its start.
struct Recorded {
    lab: Lab,
    n1: Host,
    n2: Host,
    evil: Host,
    procs: [usize; 2],
    frames: Vec<Vec<u8>>,
}

fn recorded(tag: &str) -> anyhow::Result<Recorded> {
    let mut lab = Lab::new(tag)?;
    let [n1, n2] = lab.add_nodes()?;
    let evil = lab.add_host("evil", "192.0.2.66/24", "02:00:00:00:00:42")?;
    let (_, pcap) = lab.spawn_capture(
        &evil,
        "recording",
        "udp port 7846 and ether src 02:00:00:00:00:0c",
        5_000,
        Duration::from_secs(60),
    )?;
    let procs = [start(&mut lab, &n1, 1, &[])?, start(&mut lab, &n2, 2, &[])?];
    settled(&lab, &[(&n1, 1), (&n2, 2)], &[1, 2])?;
    // A few seconds of heartbeats, state-section refreshes included.
    wait_until("a recording of n2 with state sections", SETTLE, || {
        let capture = vipd_lab::pcap::Capture::read(&pcap)?;
        Ok(capture.packets.len() > 200 && capture.packets.iter().any(|p| p.data.len() > 120))
    })?;
    let frames = vipd_lab::pcap::Capture::read(&pcap)?
        .packets
        .into_iter()
        .map(|p| p.data)
        .collect();
    Ok(Recorded {
        lab,
        n1,
        n2,
        evil,
        procs,
        frames,
    })
}

/// Replays `frames` from `evil` for 3 s while node 1 holds every VIP (it must go on
/// holding them); returns node 1's status and its entry for node 2, if any.
fn replay(
    lab: &Lab,
    evil: &Host,
    both: &[(&Host, u32)],
    frames: &[Vec<u8>],
) -> anyhow::Result<(serde_json::Value, Option<serde_json::Value>)> {
    let until = Instant::now() + Duration::from_secs(3);
    for chunk in frames.chunks(100).cycle().take(1000) {
        if Instant::now() >= until {
            break;
        }
        lab.send_frames(evil, "eth0", chunk)?;
        assert!(
            holders(lab, both)?.iter().all(|h| *h == Some(1)),
            "a VIP was given to the replayed node"
        );
    }
    let s = status(lab, both[0].0)?;
    assert_eq!(s["view"], serde_json::json!([1]), "{s}");
    let two = s["peers"]
        .as_array()
        .context("peers")?
        .iter()
        .find(|p| p["id"] == 2)
        .cloned();
    Ok((s, two))
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_recording_replayed_to_a_node_that_just_started_is_not_a_live_peer() -> anyhow::Result<()> {
    require_root();
    let Recorded {
        mut lab,
        n1,
        n2,
        evil,
        procs: [p1, p2],
        frames,
    } = recorded("vr")?;
    let both = [(&n1, 1), (&n2, 2)];

    // n2 goes away for good; n1 holds everything. Then n1 restarts: it has heard nothing
    // yet.
    lab.proc(p2).signal(libc::SIGTERM)?;
    lab.proc(p2).wait_exit(SETTLE)?;
    wait_until("n1 holds every VIP", SETTLE, || {
        Ok(holders(&lab, &both)?.iter().all(|h| *h == Some(1)))
    })?;
    lab.proc(p1).signal(libc::SIGTERM)?;
    lab.proc(p1).wait_exit(SETTLE)?;
    start(&mut lab, &n1, 1, &[])?;
    wait_until("the new n1 holds every VIP", SETTLE, || {
        Ok(holders(&lab, &both)?.iter().all(|h| *h == Some(1)))
    })?;

    // The recording, replayed to it as it was sent (TTL 255, n2's MAC and address, the
    // right key, fresh to this new incarnation of n1): n2 must not come back to life.
    let (s, two) = replay(&lab, &evil, &both, &frames)?;
    // The replay is recorded as heard (the MAC is right) but never joins the view.
    assert!(two.is_none_or(|p| p["in_view"] == false), "{s}");
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_node_whose_clock_went_back_is_still_a_peer() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("vc")?;
    let [n1, n2] = lab.add_nodes()?;
    let both = [(&n1, 1), (&n2, 2)];
    start(&mut lab, &n1, 1, &[])?;
    // n2's previous run had its clock a day ahead: n1 recorded that run's incarnation (an
    // authentic heartbeat of it, from n2's address), and n2 left it in its state file.
    let ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        + 86_400_000_000_000;
    let state_file = format!("/var/lib/vipd/{}-n2.incarnation", lab.prefix());
    std::fs::create_dir_all("/var/lib/vipd")?;
    std::fs::write(&state_file, format!("{ahead}\n"))?;
    let key = key_of(&lab)?;
    let last_run = forged(2, ahead, 1000, 0, false, Some(key));
    let to_n1 = [SocketAddr::new("192.0.2.11".parse()?, DEFAULT_PORT)];
    let once = (Duration::from_secs(1), Duration::ZERO, 1);
    blast(&lab, &n2, 255, &to_n1, &[last_run], once)?;
    wait_until("n1 recorded n2's last run", SETTLE, || {
        let s = status(&lab, &n1)?;
        Ok(s["peers"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["id"] == 2)))
    })?;
    // Now n2 starts with the right time, a day behind that run: its incarnation must still
    // be newer than the one n1 recorded, or n1 refuses it as a replay forever.
    start(&mut lab, &n2, 2, &[])?;
    let held = settled(&lab, &both, &[1, 2])?;
    assert_eq!(
        held.iter().filter(|h| **h == Some(2)).count(),
        3,
        "{held:?}"
    );
    assert_eq!(counter(&status(&lab, &n1)?, "heartbeats_replayed"), 0);
    let recorded: u64 = std::fs::read_to_string(&state_file)?.trim().parse()?;
    assert_eq!(recorded, ahead + 1);
    Ok(())
}

/// The (incarnation, sequence) of the first heartbeat of node `id` (MAC 02:…:(10 + id))
/// that `host` overhears on its link, from a capture named `name`.
fn overheard(lab: &mut Lab, host: &Host, id: u32, name: &str) -> anyhow::Result<(u64, u64)> {
    let filter = format!(
        "udp port {DEFAULT_PORT} and ether src 02:00:00:00:00:{:02x}",
        10 + id
    );
    let (_, pcap) = lab.spawn_capture(host, name, &filter, 20, Duration::from_secs(20))?;
    let mut heard = None;
    wait_until("a heartbeat overheard", SETTLE, || {
        let capture = vipd_lab::pcap::Capture::read(&pcap)?;
        heard = capture.packets.iter().find_map(|p| {
            let payload = p.data.get(14 + 20 + 8..)?;
            let hb = Heartbeat::parse(payload, 1).ok()?;
            (hb.node_id == id).then_some((hb.incarnation, hb.sequence))
        });
        Ok(heard.is_some())
    })?;
    heard.context("overheard")
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn off_link_state_sections_never_reach_the_daemon() -> anyhow::Result<()> {
    require_root();
    // Unauthenticated, so only GTSM stands between an off-link attacker and the daemon:
    // the XDP program counts TTL 64 as refused and must drop it (the kernel does not
    // enforce IP_MINTTL on UDP sockets).
    let Attacked {
        mut lab,
        nodes: [n1, n2, n3],
        evil,
        far,
    } = attacked("vo")?;
    let nodes = [(&n1, 1), (&n2, 2), (&n3, 3)];
    for (host, id) in nodes {
        start(&mut lab, host, id, &["--insecure"])?;
    }
    let before = settled(&lab, &nodes, &[1, 2, 3])?;
    // What an accomplice on the link learns: node 1's incarnation and sequence.
    let (incarnation, sequence) = overheard(&mut lab, &evil, 1, "n1")?;

    // Node 1 (the lowest id: the others give way to it) claiming every VIP, in its own
    // incarnation, sequences ahead of its own: from afar, to the nodes and the VIPs.
    let frames: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            forged(
                1,
                incarnation,
                sequence + 1_000_000 + i,
                FLAG_MATURE,
                true,
                None,
            )
        })
        .collect();
    let targets: Vec<SocketAddr> = ["192.0.2.12", "192.0.2.13"]
        .iter()
        .chain(&VIPS)
        .map(|a| SocketAddr::new(a.parse().unwrap(), DEFAULT_PORT))
        .collect();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let flood = s.spawn(|| {
            let window = (Duration::from_secs(3), Duration::from_millis(2), 50_000);
            blast(&lab, &far, 64, &targets, &frames, window)
        });
        while !flood.is_finished() {
            assert_eq!(
                holders(&lab, &nodes)?,
                before,
                "a VIP moved during the attack"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let sent = flood.join().expect("attacker")?;
        assert!(sent > 100, "the attack sent {sent} frames");
        Ok(())
    })?;
    for (host, id) in [(&n2, 2), (&n3, 3)] {
        let s = status(&lab, host)?;
        assert!(counter(&s, "heartbeats_bad_ttl") > 0, "node {id}: {s}");
        assert_eq!(s["view"], serde_json::json!([1, 2, 3]), "{s}");
    }
    assert_eq!(holders(&lab, &nodes)?, before);
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_recording_replayed_after_the_node_was_forgotten_is_refused() -> anyhow::Result<()> {
    require_root();
    let Recorded {
        mut lab,
        n1,
        n2,
        evil,
        procs: [p1, p2],
        frames,
    } = recorded("vg")?;
    let both = [(&n1, 1), (&n2, 2)];

    // n2 goes away and n1 forgets it (a minute of silence); n1 itself keeps running, so
    // the recording echoes n1's current incarnation.
    lab.proc(p2).signal(libc::SIGTERM)?;
    lab.proc(p2).wait_exit(SETTLE)?;
    lab.proc(p1)
        .wait_for_line(&["long-silent peers forgotten"], Duration::from_secs(90))?;

    let replayed_before = counter(&status(&lab, &n1)?, "heartbeats_replayed");
    let (s, two) = replay(&lab, &evil, &both, &frames)?;
    assert!(two.is_none(), "the forgotten node came back by replay: {s}");
    assert!(counter(&s, "heartbeats_replayed") > replayed_before, "{s}");
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP, nftables): run as root with `cargo test -- --include-ignored`"]
fn heartbeats_flow_while_new_tracked_flows_are_refused() -> anyhow::Result<()> {
    require_root();
    // What a full conntrack table does to a busy web node, as a firewall: every new
    // tracked flow refused, both ways, from before vipd starts.
    let mut lab = Lab::new("vc")?;
    let [n1, n2] = lab.add_nodes()?;
    for rule in [
        "add table inet fw",
        "add chain inet fw in { type filter hook input priority filter; policy accept; }",
        "add chain inet fw out { type filter hook output priority filter; policy accept; }",
        "add rule inet fw in ct state new drop",
        "add rule inet fw out ct state new drop",
    ] {
        let out = lab.exec(&n1, "nft", &[rule])?;
        anyhow::ensure!(out.status.success(), "nft {rule}: {out:?}");
    }
    anyhow::ensure!(!lab.ping(&n1, "192.0.2.12")?, "new flows are refused on n1");
    let both = [(&n1, 1), (&n2, 2)];
    for (host, id) in both {
        start(&mut lab, host, id, &[])?;
    }
    // Heartbeats and their state sections are untracked: the pool forms and shares.
    let held = settled(&lab, &both, &[1, 2])?;
    assert!(
        held.contains(&Some(1)) && held.contains(&Some(2)),
        "{held:?}"
    );
    let s = status(&lab, &n1)?;
    assert!(
        s["conntrack"]
            .as_str()
            .is_some_and(|c| c.starts_with("exempt")),
        "{s}"
    );
    // Still refused: only vipd's own traffic is exempt.
    assert!(!lab.ping(&n1, "192.0.2.12")?, "a tracked flow got through");
    Ok(())
}

/// Resident memory of process `p` (kB).
fn rss_kb(lab: &mut Lab, p: usize) -> anyhow::Result<u64> {
    let pid = lab.proc(p).child.id();
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_flood_on_the_heartbeat_port_moves_nothing_and_costs_no_memory() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("vl")?;
    let [n1, n2] = lab.add_nodes()?;
    let evil = lab.add_host("evil", "192.0.2.66/24", "02:00:00:00:00:42")?;
    let both = [(&n1, 1), (&n2, 2)];
    let procs = [start(&mut lab, &n1, 1, &[])?, start(&mut lab, &n2, 2, &[])?];
    let before = settled(&lab, &both, &[1, 2])?;
    let idle: Vec<u64> = procs
        .iter()
        .map(|&p| rss_kb(&mut lab, p))
        .collect::<anyhow::Result<_>>()?;
    let lines_before: Vec<usize> = procs
        .iter()
        .map(|&p| lab.proc(p).output().lines().count())
        .collect();

    // Ten seconds as fast as one sender goes, at TTL 255, without the key: both nodes'
    // ids with state sections claiming everything, LEAVING, and fresh ids.
    let now = u64::MAX / 2;
    let frames: Vec<Vec<u8>> = (0..64u64)
        .flat_map(|i| {
            [
                forged(1, now, i + 1, FLAG_MATURE, true, None),
                forged(2, now, i + 1, FLAG_LEAVING, true, None),
                forged(100 + i as u32, now, 1, FLAG_MATURE, false, None),
            ]
        })
        .collect();
    let targets: Vec<SocketAddr> = ["192.0.2.11", "192.0.2.12", "224.0.0.199"]
        .iter()
        .map(|a| SocketAddr::new(a.parse().unwrap(), DEFAULT_PORT))
        .collect();
    let (answered, slowest) = std::thread::scope(|s| -> anyhow::Result<(usize, Duration)> {
        let flood = s.spawn(|| {
            let window = (Duration::from_secs(10), Duration::ZERO, 20_000_000);
            blast(&lab, &evil, 255, &targets, &frames, window)
        });
        let (mut answered, mut slowest) = (0, Duration::ZERO);
        while !flood.is_finished() {
            assert_eq!(
                holders(&lab, &both)?,
                before,
                "a VIP moved during the flood"
            );
            for (host, _) in both {
                let asked = Instant::now();
                status(&lab, host).with_context(|| format!("status of {}", host.name))?;
                slowest = slowest.max(asked.elapsed());
                answered += 1;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let sent = flood.join().expect("attacker")?;
        println!("flood: {sent} datagrams in 10 s");
        assert!(sent > 10_000, "the flood sent {sent} datagrams");
        Ok((answered, slowest))
    })?;
    println!("status answered {answered} times during the flood, slowest {slowest:?}");
    for (i, (host, _)) in both.iter().enumerate() {
        let s = status(&lab, host)?;
        assert_eq!(s["view"], serde_json::json!([1, 2]), "{s}");
        assert!(counter(&s, "heartbeats_bad_auth") > 10_000, "{s}");
        let rss = rss_kb(&mut lab, procs[i])?;
        println!(
            "{}: RSS {} kB idle, {rss} kB after the flood",
            host.name, idle[i]
        );
        assert!(
            rss * 10 <= idle[i] * 11,
            "RSS grew from {} to {rss} kB",
            idle[i]
        );
        let grown = lab.proc(procs[i]).output().lines().count() - lines_before[i];
        assert!(grown < 20, "{grown} log lines during the flood");
    }
    assert_eq!(holders(&lab, &both)?, before);
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_garp_flood_from_ever_new_macs_is_one_conflict_defended_on_schedule() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("vm")?;
    let [n1, n2] = lab.add_nodes()?;
    let evil = lab.add_host("evil", "192.0.2.66/24", "02:00:00:00:00:42")?;
    let events = lab.dir().join("events.log");
    let hooks = lab.dir().join("hooks.toml");
    std::fs::write(
        &hooks,
        format!(
            "[hooks]\ncommand = [\"/bin/sh\", \"-c\", \"echo \\\"$VIPD_EVENT $VIPD_MAC\\\" >> {}\"]\n",
            events.display()
        ),
    )?;
    let config = hooks.to_str().context("path")?;
    let both = [(&n1, 1), (&n2, 2)];
    let procs = [
        start(&mut lab, &n1, 1, &["--config", config])?,
        start(&mut lab, &n2, 2, &["--config", config])?,
    ];
    let before = settled(&lab, &both, &[1, 2])?;
    let (keeper, kp) = if before[0] == Some(1) {
        (&n1, procs[0])
    } else {
        (&n2, procs[1])
    };
    let idle = rss_kb(&mut lab, kp)?;

    // Gratuitous ARPs for a held VIP, each from another MAC (a thousand of them, over and
    // over), for ten seconds.
    let vip: std::net::Ipv4Addr = VIPS[0].parse()?;
    let frames: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| {
            let mac = [2, 0xee, 0, 0, (i >> 8) as u8, i as u8];
            vipd::announce::garp_frame(mac, vip).to_vec()
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(10);
    let mut sent = 0;
    for round in 0..100_000 {
        if Instant::now() >= until {
            break;
        }
        lab.send_frames(&evil, "eth0", &frames)?;
        sent += frames.len();
        if round % 20 == 0 {
            assert_eq!(
                holders(&lab, &both)?,
                before,
                "a VIP moved during the flood"
            );
        }
    }
    println!("flood: {sent} gratuitous ARPs from 1000 MACs in 10 s");
    let s = status(&lab, keeper)?;
    let conflicts = s["conflicts"].as_array().context("conflicts")?;
    assert_eq!(conflicts.len(), 1, "{s}");
    // One defence at the first claim, one 10 s later at most.
    assert!(conflicts[0]["defences"].as_u64() <= Some(2), "{s}");
    assert!(conflicts[0]["claimers"].as_u64() > Some(100), "{s}");
    let rss = rss_kb(&mut lab, kp)?;
    println!(
        "{}: RSS {idle} kB idle, {rss} kB after the flood",
        keeper.name
    );
    assert!(rss * 10 <= idle * 11, "RSS grew from {idle} to {rss} kB");
    // One conflict: one hook.
    let hooked = std::fs::read_to_string(&events).unwrap_or_default();
    let conflict_hooks = hooked
        .lines()
        .filter(|l| l.starts_with("vip_conflict"))
        .count();
    assert_eq!(conflict_hooks, 1, "{hooked}");
    assert_eq!(holders(&lab, &both)?, before);
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_flood_of_state_sections_never_starves_the_watchdog() -> anyhow::Result<()> {
    require_root();
    // Unauthenticated, so forged state sections under fresh ids pass the XDP program and
    // keep the daemon's socket full: the watchdog, fed from the fast path's progress, must
    // never wait behind it (systemd would kill vipd, its VIPs would flap).
    let mut lab = Lab::new("vw")?;
    let [n1, n2] = lab.add_nodes()?;
    let evil = lab.add_host("evil", "192.0.2.66/24", "02:00:00:00:00:42")?;
    let socket_path = lab.dir().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let notify = format!("NOTIFY_SOCKET={}", socket_path.display());
    let instance = format!("{}-n1", lab.prefix());
    let mut args = vec![
        notify.as_str(),
        "WATCHDOG_USEC=200000",
        common::VIPD,
        "run",
        "-i",
        "eth0",
        "-n",
        "1",
        "--instance",
        &instance,
        "--insecure",
        "--interval",
        "20ms",
        "--hold-down",
        "300ms",
    ];
    for vip in VIPS {
        args.extend(["--vip", vip]);
    }
    let p1 = lab.spawn(&n1, "n1-vipd", std::path::Path::new("env"), &args)?;
    lab.proc(p1).wait_for_line(&["vipd started"], SETTLE)?;
    start(&mut lab, &n2, 2, &["--insecure"])?;
    let both = [(&n1, 1), (&n2, 2)];
    let before = settled(&lab, &both, &[1, 2])?;
    let idle = rss_kb(&mut lab, p1)?;

    let frames: Vec<Vec<u8>> = (0..512u32)
        .map(|i| forged(1000 + i, 7, 1 + u64::from(i), 0, true, None))
        .collect();
    let targets = [SocketAddr::new("192.0.2.11".parse()?, DEFAULT_PORT)];
    let fed = std::thread::scope(|s| -> anyhow::Result<usize> {
        let flood = s.spawn(|| {
            let window = (Duration::from_secs(10), Duration::ZERO, 20_000_000);
            blast(&lab, &evil, 255, &targets, &frames, window)
        });
        let mut fed = 0;
        let mut buf = [0u8; 256];
        while !flood.is_finished() {
            if let Ok(n) = socket.recv(&mut buf) {
                fed += usize::from(&buf[..n] == b"WATCHDOG=1");
            }
        }
        let sent = flood.join().expect("attacker")?;
        println!("flood: {sent} state sections in 10 s; the watchdog fed {fed} times");
        Ok(fed)
    })?;
    // Fed every 100 ms when the fast path runs: far more than 10 in 10 s.
    assert!(fed >= 10, "the watchdog was fed {fed} times in 10 s");
    assert_eq!(holders(&lab, &both)?, before);
    let rss = rss_kb(&mut lab, p1)?;
    println!("n1: RSS {idle} kB idle, {rss} kB after the flood");
    assert!(rss * 10 <= idle * 11, "RSS grew from {idle} to {rss} kB");
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP, nftables): run as root with `cargo test -- --include-ignored`"]
fn heartbeats_refused_now_and_then_are_logged_once_not_per_send() -> anyhow::Result<()> {
    require_root();
    // One heartbeat in twenty refused by a local rule: sendto fails with EPERM, as it
    // does when a busy node's conntrack table is full.
    let mut lab = Lab::new("vs")?;
    let [n1, n2] = lab.add_nodes()?;
    let both = [(&n1, 1), (&n2, 2)];
    let p1 = start(&mut lab, &n1, 1, &[])?;
    start(&mut lab, &n2, 2, &[])?;
    settled(&lab, &both, &[1, 2])?;
    for rule in [
        "add table inet loss",
        "add chain inet loss out { type filter hook output priority filter; policy accept; }",
        "add rule inet loss out udp dport 7846 numgen random mod 20 0 drop",
    ] {
        let out = lab.exec(&n1, "nft", &[rule])?;
        anyhow::ensure!(out.status.success(), "nft {rule}: {out:?}");
    }
    let said = |lab: &mut Lab| lab.proc(p1).count_lines(&["sending heartbeats on eth0"]);
    lab.proc(p1)
        .wait_for_line(&["sending heartbeats on eth0 fails"], SETTLE)?;
    // Ten seconds of it: 500 heartbeats, about 25 refused.
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    let lines = said(&mut lab);
    assert!(
        lines <= 2,
        "{lines} lines about failing sends:\n{}",
        lab.proc(p1).output()
    );
    assert_eq!(
        holders(&lab, &both)?.iter().filter(|h| h.is_some()).count(),
        VIPS.len()
    );
    Ok(())
}
