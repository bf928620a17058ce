//! Heartbeat authentication in network namespaces: nodes sharing a key are peers, a node
//! with another key on the same segment never is, and replayed heartbeats are refused.
//!
//! These run as root (CI does); elsewhere they are listed as ignored, with the reason.

mod common;

use std::{net::UdpSocket, path::Path, process::Command, time::Duration};

use anyhow::Context as _;
use vipd_common::{
    auth::{AUTH_LEN, Key, sign},
    heartbeat::{DEFAULT_PORT, Heartbeat},
};
use vipd_lab::lab::{Host, Lab, require_root, wait_until};

use common::{VIPD, counter, status};

const VIPS: [&str; 2] = ["192.0.2.201", "192.0.2.202"];
/// Generous bound for anything that should take milliseconds (CI machines are slow).
const SETTLE: Duration = Duration::from_secs(15);

/// `vipd keygen PATH`, then the key it wrote.
fn keygen(path: &Path) -> anyhow::Result<Key> {
    let out = Command::new(VIPD)
        .args(["keygen", path.to_str().context("path")?])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "vipd keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = std::fs::read_to_string(path)?;
    let hex = hex.trim();
    anyhow::ensure!(hex.len() == 32, "key file holds {hex:?}");
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(Key::from_bytes(bytes))
}

/// Starts vipd on `host` as node `id` (multicast heartbeats, so every node hears every
/// other) with the key file `key`.
fn start(lab: &mut Lab, host: &Host, id: u32, key: &Path) -> anyhow::Result<usize> {
    let key = key.to_str().context("path")?;
    let args = [
        "--vip",
        VIPS[0],
        "--vip",
        VIPS[1],
        "--interval",
        "50ms",
        "--hold-down",
        "300ms",
        "--auth-key-file",
        key,
    ];
    common::start_node(lab, host, id, &args, &["auth=true"])
}

fn peer(status: &serde_json::Value, id: u32) -> Option<&serde_json::Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == serde_json::json!(id))
}

fn held(lab: &Lab, host: &Host) -> usize {
    common::held(lab, host, &VIPS)
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn only_nodes_sharing_the_key_are_peers_and_replays_are_refused() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("va")?;
    let [n1, n2, n3] = lab.add_nodes()?;
    let shared = lab.dir().join("shared.key");
    let other = lab.dir().join("other.key");
    let key = keygen(&shared)?;
    keygen(&other)?;

    // The odd one out starts first: its heartbeats are on the wire all along.
    start(&mut lab, &n3, 3, &other)?;
    start(&mut lab, &n1, 1, &shared)?;
    start(&mut lab, &n2, 2, &shared)?;

    // n1 and n2 become peers and share the pool, one VIP each.
    wait_until(
        "n1 and n2 up in each other's status, one VIP each",
        SETTLE,
        || {
            let (s1, s2) = (status(&lab, &n1)?, status(&lab, &n2)?);
            let up = |s: &serde_json::Value, id| {
                peer(s, id).is_some_and(|p| p["state"] == "up" && p["in_view"] == true)
            };
            Ok(up(&s1, 2) && up(&s2, 1) && held(&lab, &n1) == 1 && held(&lab, &n2) == 1)
        },
    )
    .with_context(|| {
        format!(
            "n1: {:?}\nn2: {:?}",
            status(&lab, &n1).ok(),
            status(&lab, &n2).ok()
        )
    })?;
    // n3's heartbeats reach both and are refused: counted as bad auth, never recorded.
    wait_until(
        "n3's heartbeats counted as bad auth on n1 and n2",
        SETTLE,
        || {
            Ok(counter(&status(&lab, &n1)?, "heartbeats_bad_auth") >= 10
                && counter(&status(&lab, &n2)?, "heartbeats_bad_auth") >= 10)
        },
    )?;
    for (host, other_id) in [(&n1, 2), (&n2, 1)] {
        let s = status(&lab, host)?;
        assert!(
            peer(&s, 3).is_none(),
            "n3 is not a peer of {}: {s}",
            host.name
        );
        assert_eq!(s["view"], serde_json::json!([1, 2]), "{s}");
        assert_eq!(s["peers"].as_array().map(Vec::len), Some(1), "{s}");
        assert!(peer(&s, other_id).is_some(), "{s}");
        assert_eq!(counter(&s, "heartbeats_replayed"), 0, "{s}");
    }
    // And n3, alone with its key, hears nobody either.
    let s3 = status(&lab, &n3)?;
    assert_eq!(s3["peers"].as_array().map(Vec::len), Some(0), "{s3}");
    assert!(counter(&s3, "heartbeats_bad_auth") > 0, "{s3}");
    assert_eq!(held(&lab, &n1) + held(&lab, &n2), 2);

    // A heartbeat signed with the shared key (as if captured on the wire) is recorded once;
    // sent again, or with an older sequence, it is refused as a replay.
    let signed = |sequence: u64| {
        let hb = Heartbeat {
            cluster_id: 1,
            node_id: 9,
            incarnation: 1000,
            sequence,
            interval_us: 50_000,
            weight: 1,
            auth_len: AUTH_LEN as u16,
            ..Heartbeat::default()
        }
        .to_bytes();
        let mut payload = hb.to_vec();
        payload.extend_from_slice(&sign(key, &hb));
        payload
    };
    let target = format!("{}:{DEFAULT_PORT}", n1.addr);
    let send = |payload: Vec<u8>| {
        let target = target.clone();
        lab.in_netns(&n3, move || {
            // TTL 255, as from the link (GTSM).
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            sock.set_ttl(255)?;
            sock.send_to(&payload, &target)?;
            Ok(())
        })
    };
    send(signed(5))?;
    wait_until("node 9 recorded by n1", SETTLE, || {
        Ok(peer(&status(&lab, &n1)?, 9).is_some())
    })?;
    send(signed(5))?;
    send(signed(4))?;
    wait_until("two replays counted by n1", SETTLE, || {
        Ok(counter(&status(&lab, &n1)?, "heartbeats_replayed") == 2)
    })?;
    let s1 = status(&lab, &n1)?;
    let nine = peer(&s1, 9).context("node 9")?;
    assert_eq!(nine["received"], 1, "{s1}");
    assert_eq!(nine["in_view"], false, "not mature: {s1}");
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn keys_rotate_by_reloads_without_splitting_the_pool() -> anyhow::Result<()> {
    require_root();
    let mut lab = Lab::new("vk")?;
    let [n1, n2] = lab.add_nodes()?;
    let (old, new) = (lab.dir().join("old.key"), lab.dir().join("new.key"));
    keygen(&old)?;
    let nodes = [(&n1, 1), (&n2, 2)];
    let write = |lab: &Lab, key: &Path, next: Option<&Path>| -> anyhow::Result<()> {
        for (host, id) in nodes {
            let next = next.map_or(String::new(), |p| {
                format!("auth_next_key_file = \"{}\"\n", p.display())
            });
            std::fs::write(
                lab.dir().join(format!("{}.toml", host.name)),
                format!(
                    "[node]\nid = {id}\ninterface = \"eth0\"\ninstance = \"{}-{}\"\n\n\
                     [heartbeat]\ninterval = \"50ms\"\nhold_down = \"300ms\"\n\
                     auth_key_file = \"{}\"\n{next}\n[pool]\nvips = [\"{}\", \"{}\"]\n",
                    lab.prefix(),
                    host.name,
                    key.display(),
                    VIPS[0],
                    VIPS[1]
                ),
            )?;
        }
        Ok(())
    };
    write(&lab, &old, None)?;
    let mut procs = Vec::new();
    for (host, _) in nodes {
        let config = lab.dir().join(format!("{}.toml", host.name));
        let args = ["run", "--config", config.to_str().context("path")?];
        let p = lab.spawn(host, &format!("{}-vipd", host.name), Path::new(VIPD), &args)?;
        lab.proc(p)
            .wait_for_line(&["vipd started", "auth=true"], SETTLE)?;
        procs.push(p);
    }
    let one_each = |lab: &Lab| -> anyhow::Result<bool> {
        Ok(status(lab, &n1)?["view"] == serde_json::json!([1, 2])
            && status(lab, &n2)?["view"] == serde_json::json!([1, 2])
            && held(lab, &n1) == 1
            && held(lab, &n2) == 1)
    };
    wait_until("n1 and n2 peers, one VIP each", SETTLE, || one_each(&lab))?;
    let placed: Vec<usize> = [&n1, &n2].iter().map(|h| held(&lab, h)).collect();

    // Straight to a new key on one node: refused (it would split the pool), and the node
    // keeps the key it runs with.
    keygen(&new)?;
    write(&lab, &new, None)?;
    lab.proc(procs[0]).signal(libc::SIGHUP)?;
    let line = lab
        .proc(procs[0])
        .wait_for_line(&["reload rejected"], SETTLE)?;
    assert!(
        line.contains("the heartbeat key to one this node does not accept yet"),
        "{line}"
    );
    assert!(
        lab.proc(procs[0]).child.try_wait()?.is_none(),
        "still running"
    );

    // The documented rotation, each step on every node before the next: accept the new
    // key; sign with it (still accepting the old); drop the old. The pool never splits.
    let steps: [(&Path, Option<&Path>); 3] = [(&old, Some(&new)), (&new, Some(&old)), (&new, None)];
    for (step, (key, next)) in steps.into_iter().enumerate() {
        write(&lab, key, next)?;
        for (i, &p) in procs.iter().enumerate() {
            let before = lab.proc(p).count_lines(&["configuration reloaded"]);
            lab.proc(p).signal(libc::SIGHUP)?;
            lab.proc(p)
                .wait_for_lines(&["configuration reloaded"], before + 1, SETTLE)?;
            assert!(one_each(&lab)?, "step {step}: the pool split");
            if (step, i) == (1, 0) {
                // n1 signs with the new key, n2 still with the old one: n1 dropping the
                // old key now would lose n2. Refused, from what n2 signs with.
                write(&lab, &new, None)?;
                let needle = ["still signs with a key this configuration no longer accepts"];
                let before = lab.proc(p).count_lines(&needle);
                lab.proc(p).signal(libc::SIGHUP)?;
                lab.proc(p).wait_for_lines(&needle, before + 1, SETTLE)?;
                assert!(one_each(&lab)?, "the refused reload split the pool");
                write(&lab, key, next)?;
            }
        }
        let received = |lab: &Lab| -> anyhow::Result<u64> {
            Ok(peer(&status(lab, &n1)?, 2)
                .and_then(|p| p["received"].as_u64())
                .unwrap_or(0))
        };
        let before = received(&lab)?;
        wait_until("n2's heartbeats still accepted by n1", SETTLE, || {
            Ok(received(&lab)? >= before + 5)
        })?;
        assert!(one_each(&lab)?, "step {step}: the pool split");
    }
    let after: Vec<usize> = [&n1, &n2].iter().map(|h| held(&lab, h)).collect();
    assert_eq!(after, placed);
    // One key again.
    let s = status(&lab, &n1)?;
    assert_eq!(s["auth"], "key", "{s}");
    Ok(())
}
