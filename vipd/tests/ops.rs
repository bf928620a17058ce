//! Operating vipd: configuration files, status, metrics, health checks, hooks, reload.
//!
//! The namespace tests run as root (CI does); elsewhere they are listed as ignored, with the reason.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use vipd_lab::lab::{Host, Lab, require_root, wait_until};

use common::{VIPD, status_of};

const SETTLE: Duration = Duration::from_secs(15);
const VIPS: [&str; 2] = ["192.0.2.201", "192.0.2.202"];

fn two_nodes(tag: &str) -> anyhow::Result<(Lab, Host, Host, Host)> {
    let mut lab = Lab::new(tag)?;
    let [n1, n2] = lab.add_nodes()?;
    let client = lab.add_host("client", "192.0.2.100/24", "02:00:00:00:00:64")?;
    Ok((lab, n1, n2, client))
}

/// Writes a configuration file for node `id` on `host` (peer: `peer`), plus `extra` TOML.
fn write_config(
    lab: &Lab,
    host: &Host,
    id: u32,
    peer: &Host,
    extra: &str,
) -> anyhow::Result<PathBuf> {
    let path = lab.dir().join(format!("{}.toml", host.name));
    let text = format!(
        "[node]\nid = {id}\ninterface = \"eth0\"\ninstance = \"{}-{}\"\n\n\
         [heartbeat]\ninterval = \"50ms\"\nhold_down = \"300ms\"\npeers = [\"{}\"]\n\
         auth_key_file = \"{}\"\n\n\
         [pool]\nvips = [\"{}\", \"{}\"]\n\n{extra}",
        lab.prefix(),
        host.name,
        peer.addr,
        lab.key_file()?.display(),
        VIPS[0],
        VIPS[1]
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

fn start(lab: &mut Lab, host: &Host, config: &Path, extra: &[&str]) -> anyhow::Result<usize> {
    let mut args = vec!["run", "--config", config.to_str().context("path")?];
    args.extend_from_slice(extra);
    let p = lab.spawn(host, &format!("{}-vipd", host.name), Path::new(VIPD), &args)?;
    lab.proc(p).wait_for_line(&["vipd started"], SETTLE)?;
    Ok(p)
}

fn held(lab: &Lab, host: &Host) -> usize {
    common::held(lab, host, &VIPS)
}

/// `GET /metrics` from the endpoint at 127.0.0.1:9797 inside `host`'s namespace.
fn scrape_metrics(lab: &Lab, host: &Host) -> anyhow::Result<String> {
    lab.in_netns(host, || {
        let mut s = TcpStream::connect("127.0.0.1:9797")?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    })
}

#[test]
fn check_config_prints_the_effective_configuration_and_names_bad_keys() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("vipd-check-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[node]\nid = 2\ninterface = \"eth0\"\n[heartbeat]\nauth = \"off\"\n\
         [pool]\nvips = [\"192.0.2.201\"]\n",
    )?;
    let out = Command::new(VIPD)
        .args([
            "check-config",
            "-c",
            good.to_str().unwrap(),
            "--weight",
            "3",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("weight = 3"),
        "flags override the file: {text}"
    );
    assert!(
        text.contains("dead_interval = \"10ms\""),
        "defaults are filled in: {text}"
    );
    // The effective configuration is itself a valid configuration.
    let effective = dir.join("effective.toml");
    std::fs::write(&effective, text.as_bytes())?;
    let again = Command::new(VIPD)
        .args(["check-config", "-c", effective.to_str().unwrap()])
        .output()?;
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[node]\nid = 2\n[heartbeat]\nintervall = \"1s\"\n")?;
    let out = Command::new(VIPD)
        .args(["check-config", "-c", bad.to_str().unwrap()])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("heartbeat.intervall"), "{err}");
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[test]
fn zone_prints_round_robin_records() -> anyhow::Result<()> {
    let out = Command::new(VIPD)
        .args([
            "zone",
            "--name",
            "www",
            "--ttl",
            "30",
            "--vip",
            "2001:db8::1,192.0.2.202,192.0.2.201",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let records: Vec<&str> = text.lines().filter(|l| !l.starts_with(';')).collect();
    assert_eq!(
        records,
        [
            "www\t30\tIN\tA\t192.0.2.201",
            "www\t30\tIN\tA\t192.0.2.202",
            "www\t30\tIN\tAAAA\t2001:db8::1"
        ]
    );
    Ok(())
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn status_and_metrics_describe_a_running_pair() -> anyhow::Result<()> {
    require_root();
    let (mut lab, n1, n2, _client) = two_nodes("os")?;
    let c1 = write_config(
        &lab,
        &n1,
        1,
        &n2,
        "[metrics]\nlisten = \"127.0.0.1:9797\"\n",
    )?;
    let c2 = write_config(&lab, &n2, 2, &n1, "")?;
    let p1 = start(&mut lab, &n1, &c1, &[])?;
    start(&mut lab, &n2, &c2, &[])?;
    wait_until("one VIP each", SETTLE, || {
        Ok(held(&lab, &n1) == 1 && held(&lab, &n2) == 1)
    })?;

    let instance = format!("{}-n1", lab.prefix());
    let mut status = serde_json::Value::Null;
    wait_until("status: both in the view, views agreeing", SETTLE, || {
        status = status_of(&instance)?;
        Ok(status["view"] == serde_json::json!([1, 2]) && status["views_agree"] == true)
    })
    .with_context(|| format!("{status:#}"))?;
    assert_eq!(status["state"], "active");
    assert_eq!(status["peers"][0]["id"], 2);
    assert_eq!(status["peers"][0]["state"], "up");
    let owners: Vec<u64> = status["vips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["owner"].as_u64())
        .collect();
    assert_eq!(owners.len(), 2, "{status:#}");
    assert!(status["counters"]["heartbeats_accepted"].as_u64().unwrap() > 0);
    let table = Command::new(VIPD)
        .args(["status", "--instance", &instance])
        .output()?;
    assert!(String::from_utf8_lossy(&table.stdout).contains("all members agree"));

    // Scrape the metrics endpoint from inside n1's namespace.
    let text = scrape_metrics(&lab, &n1)?;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("vipd_peer_up{peer=\"2\"} 1"), "{text}");
    assert!(text.contains("vipd_active 1"), "{text}");
    let owned = text
        .lines()
        .filter(|l| l.starts_with("vipd_vip_owned{") && l.ends_with(" 1"))
        .count();
    assert_eq!(owned, 1, "{text}");
    assert!(text.contains("vipd_announcements_total"), "{text}");
    let heartbeats = text
        .lines()
        .find(|l| {
            l.starts_with("vipd_xdp_packets_total{kind=\"heartbeats_accepted\",verdict=\"record\"}")
        })
        .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .with_context(|| format!("no heartbeat counter in {text}"))?;
    assert!(heartbeats > 0);

    // Without a daemon, status falls back to the pinned maps.
    lab.proc(p1).signal(libc::SIGKILL)?;
    lab.proc(p1).wait_exit(SETTLE).ok();
    let out = Command::new(VIPD)
        .args(["status", "--json", "--instance", &instance])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading the pinned maps"));
    let pins: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(pins["peers"][0]["id"], 2);
    Ok(())
}

/// A TCP responder inside `host`'s namespace, accepting until dropped.
struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    fn start(lab: &Lab, host: &Host, addr: &'static str) -> anyhow::Result<Self> {
        let listener = lab.in_netns(host, || Ok(TcpListener::bind(addr)?))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            // Bounded: stops when told, polling every 10 ms.
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => drop(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_failing_check_moves_vips_away_and_hooks_see_every_event() -> anyhow::Result<()> {
    require_root();
    let (mut lab, n1, n2, client) = two_nodes("oh")?;
    let events = lab.dir().join("n1-events.log");
    let hook = format!(
        "[[check]]\nname = \"web\"\ntype = \"tcp\"\naddress = \"127.0.0.1:8080\"\ninterval = \"100ms\"\n\
         timeout = \"100ms\"\nrise = 2\nfall = 2\n\n[hooks]\ncommand = [\"/bin/sh\", \"-c\", \
         \"echo \\\"$VIPD_EVENT $VIPD_VIP $VIPD_STATE\\\" >> {}\"]\ntimeout = \"5s\"\n",
        events.display()
    );
    let c1 = write_config(&lab, &n1, 1, &n2, &hook)?;
    let c2 = write_config(&lab, &n2, 2, &n1, "")?;
    let web = Responder::start(&lab, &n1, "127.0.0.1:8080")?;
    let p1 = start(&mut lab, &n1, &c1, &[])?;
    start(&mut lab, &n2, &c2, &[])?;
    wait_until("one VIP each", SETTLE, || {
        Ok(held(&lab, &n1) == 1 && held(&lab, &n2) == 1)
    })?;
    let n1_vip = VIPS
        .iter()
        .find(|v| lab.has_address(&n1, v).unwrap_or(false))
        .copied()
        .context("n1's VIP")?;

    // The responder stops: n1 withdraws, its VIP moves to n2 and answers from there.
    drop(web);
    wait_until("n2 holding both VIPs", SETTLE, || {
        Ok(held(&lab, &n1) == 0 && held(&lab, &n2) == 2)
    })?;
    lab.proc(p1)
        .wait_for_line(&["health check failing", "web"], SETTLE)?;
    wait_until("the VIP answering the client from n2", SETTLE, || {
        Ok(lab.ping(&client, n1_vip)?
            && lab.neighbour_mac(&client, n1_vip)?.as_deref() == Some(n2.mac.as_str()))
    })?;

    // It comes back: after `rise` passes n1 takes its share again.
    let _web = Responder::start(&lab, &n1, "127.0.0.1:8080")?;
    wait_until("one VIP each again", SETTLE, || {
        Ok(held(&lab, &n1) == 1 && held(&lab, &n2) == 1)
    })?;

    let log = || std::fs::read_to_string(&events).unwrap_or_default();
    wait_until("the hook to record the comeback", SETTLE, || {
        Ok(log().matches("vip_acquired").count() >= 2
            && log().matches("node_state  active").count() >= 2)
    })
    .with_context(log)?;
    let log = log();
    for expected in [
        "node_state  holding-down",
        "node_state  active",
        "node_state  withdrawn",
        "vip_released ",
    ] {
        assert!(log.contains(expected), "{expected:?} missing from:\n{log}");
    }
    assert!(log.contains(&format!("vip_released {n1_vip}")), "{log}");

    // A graceful stop says `stopping`, and the hooks of its last releases run before the
    // daemon exits.
    let before = log.lines().count();
    lab.proc(p1).signal(libc::SIGTERM)?;
    assert!(lab.proc(p1).wait_exit(SETTLE)?, "a clean stop exits 0");
    let log = std::fs::read_to_string(&events)?;
    let after: Vec<&str> = log.lines().skip(before).collect();
    assert!(after.contains(&"node_state  stopping"), "{log}");
    assert!(
        after.iter().any(|l| l.starts_with("vip_released ")),
        "the last release's hook ran before exit:\n{log}"
    );
    Ok(())
}

/// Two checks: with "web" failing, "api" failing and passing again does not bring n1 back
/// (the pool was told each check's own state, not the node's); once "web" passes too, it
/// takes its share again.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn one_check_passing_again_does_not_return_a_node_another_keeps_out() -> anyhow::Result<()> {
    require_root();
    let (mut lab, n1, n2, _client) = two_nodes("ow")?;
    let check = |name: &str, port: u16| {
        format!(
            "[[check]]\nname = \"{name}\"\ntype = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\
             interval = \"100ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 2\n\n"
        )
    };
    let checks = format!("{}{}", check("web", 8080), check("api", 8081));
    let c1 = write_config(&lab, &n1, 1, &n2, &checks)?;
    let c2 = write_config(&lab, &n2, 2, &n1, "")?;
    let web = Responder::start(&lab, &n1, "127.0.0.1:8080")?;
    let api = Responder::start(&lab, &n1, "127.0.0.1:8081")?;
    let p1 = start(&mut lab, &n1, &c1, &[])?;
    start(&mut lab, &n2, &c2, &[])?;
    wait_until("one VIP each", SETTLE, || {
        Ok(held(&lab, &n1) == 1 && held(&lab, &n2) == 1)
    })?;
    drop(web);
    lab.proc(p1)
        .wait_for_line(&["health check failing", "check=\"web\""], SETTLE)?;
    drop(api);
    lab.proc(p1)
        .wait_for_line(&["health check failing", "check=\"api\""], SETTLE)?;
    let _api = Responder::start(&lab, &n1, "127.0.0.1:8081")?;
    // Its first pass was logged at start-up; this is its return.
    lab.proc(p1)
        .wait_for_lines(&["health check passing", "check=\"api\""], 2, SETTLE)?;
    let status = common::status(&lab, &n1)?;
    assert_eq!(status["state"], serde_json::json!("withdrawn"), "{status}");
    wait_until("n2 holding both VIPs", SETTLE, || {
        Ok(held(&lab, &n1) == 0 && held(&lab, &n2) == 2)
    })?;
    let _web = Responder::start(&lab, &n1, "127.0.0.1:8080")?;
    wait_until("one VIP each again", SETTLE, || {
        Ok(held(&lab, &n1) == 1 && held(&lab, &n2) == 1)
    })
}

#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn sighup_applies_a_new_pool_and_rejects_a_bad_file() -> anyhow::Result<()> {
    require_root();
    let (mut lab, n1, n2, _client) = two_nodes("or")?;
    let c1 = write_config(&lab, &n1, 1, &n2, "")?;
    let c2 = write_config(&lab, &n2, 2, &n1, "")?;
    let p1 = start(&mut lab, &n1, &c1, &[])?;
    let p2 = start(&mut lab, &n2, &c2, &[])?;
    wait_until("one VIP each", SETTLE, || {
        Ok(held(&lab, &n1) == 1 && held(&lab, &n2) == 1)
    })?;

    // A third VIP on both nodes: placed without touching the two that did not move.
    for (path, p) in [(&c1, p1), (&c2, p2)] {
        let text = std::fs::read_to_string(path)?.replace(
            &format!("\"{}\"]", VIPS[1]),
            &format!("\"{}\", \"192.0.2.203\"]", VIPS[1]),
        );
        std::fs::write(path, text)?;
        lab.proc(p).signal(libc::SIGHUP)?;
    }
    wait_until("192.0.2.203 on exactly one node", SETTLE, || {
        Ok(lab.has_address(&n1, "192.0.2.203")? != lab.has_address(&n2, "192.0.2.203")?)
    })?;
    for p in [p1, p2] {
        let log = lab.proc(p).output();
        let (_, after) = log
            .split_once("configuration reloaded")
            .context("no reload logged")?;
        assert!(
            !after.contains("released VIP"),
            "a VIP moved on reload:\n{log}"
        );
    }

    // A broken file is rejected and the node keeps running as it was.
    std::fs::write(&c1, "[node]\nid = \"one\"\n")?;
    lab.proc(p1).signal(libc::SIGHUP)?;
    lab.proc(p1).wait_for_line(
        &["reload rejected, keeping the running configuration"],
        SETTLE,
    )?;
    assert!(lab.proc(p1).child.try_wait()?.is_none(), "still running");
    Ok(())
}

/// Unicast peers change by reloads: a node missing from the others' `peers` is refused in
/// the XDP program (counted, never in a view); once they list it and reload, it is in every
/// view, and no VIP moved.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_reload_admits_a_peer_that_was_refused() -> anyhow::Result<()> {
    require_root();
    let (mut lab, n1, n2, _client) = two_nodes("op")?;
    let n3 = lab.add_host("n3", "192.0.2.13/24", "02:00:00:00:00:0d")?;
    let c1 = write_config(&lab, &n1, 1, &n2, "")?;
    let c2 = write_config(&lab, &n2, 2, &n1, "")?;
    let p1 = start(&mut lab, &n1, &c1, &[])?;
    let p2 = start(&mut lab, &n2, &c2, &[])?;
    wait_until("one VIP each", SETTLE, || {
        Ok(held(&lab, &n1) == 1 && held(&lab, &n2) == 1)
    })?;
    let add_peer = |path: &Path, peer: &Host| -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path)?;
        let (head, tail) = text.split_once("peers = [").context("no peers line")?;
        std::fs::write(path, format!("{head}peers = [\"{}\", {tail}", peer.addr))?;
        Ok(())
    };
    // n3 lists both, with a hold-down longer than the test: it never takes a VIP.
    let c3 = write_config(&lab, &n3, 3, &n1, "")?;
    add_peer(&c3, &n2)?;
    let text =
        std::fs::read_to_string(&c3)?.replace("hold_down = \"300ms\"", "hold_down = \"10m\"");
    std::fs::write(&c3, text)?;
    start(&mut lab, &n3, &c3, &[])?;

    let prefix = lab.prefix().to_string();
    let peer_ids = |host: &Host| -> anyhow::Result<Vec<u64>> {
        let s = status_of(&format!("{prefix}-{}", host.name))?;
        Ok(s["peers"]
            .as_array()
            .context("peers")?
            .iter()
            .filter_map(|p| p["id"].as_u64())
            .collect())
    };
    let instance1 = format!("{}-n1", lab.prefix());
    wait_until("n1 refuses n3's heartbeats", SETTLE, || {
        let s = status_of(&instance1)?;
        Ok(s["counters"]["heartbeats_unknown_source"].as_u64() > Some(0))
    })?;
    assert_eq!(peer_ids(&n1)?, [2], "n3 is not a peer of n1 yet");
    assert_eq!(peer_ids(&n2)?, [1], "n3 is not a peer of n2 yet");

    for (path, p) in [(&c1, p1), (&c2, p2)] {
        add_peer(path, &n3)?;
        lab.proc(p).signal(libc::SIGHUP)?;
    }
    wait_until("n3 a peer of every node", SETTLE, || {
        Ok(peer_ids(&n1)? == [2, 3] && peer_ids(&n2)? == [1, 3] && peer_ids(&n3)? == [1, 2])
    })?;
    let received_from_n3 = |s: &serde_json::Value| {
        s["peers"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["id"] == 3))
            .and_then(|p| p["received"].as_u64())
            .unwrap_or(0)
    };
    let before = status_of(&instance1)?;
    assert_eq!(held(&lab, &n1), 1);
    assert_eq!(held(&lab, &n2), 1);
    assert_eq!(held(&lab, &n3), 0);
    for p in [p1, p2] {
        let log = lab.proc(p).output();
        let (_, after) = log
            .split_once("configuration reloaded")
            .context("no reload logged")?;
        assert!(!after.contains("released VIP"), "a VIP moved:\n{log}");
    }
    // Once n3 is listed its heartbeats are recorded, never refused.
    let mut after = before.clone();
    wait_until("more heartbeats from n3 recorded on n1", SETTLE, || {
        after = status_of(&instance1)?;
        Ok(received_from_n3(&after) >= received_from_n3(&before) + 5)
    })?;
    assert_eq!(
        after["counters"]["heartbeats_unknown_source"],
        before["counters"]["heartbeats_unknown_source"],
        "n3's heartbeats are refused after the reload"
    );
    Ok(())
}

/// A held VIP removed from outside (an operator's `ip addr del`, a network manager
/// reconfiguring the interface) is added and announced again, logged and counted; the
/// peer never takes it.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn a_vip_removed_from_outside_is_added_again() -> anyhow::Result<()> {
    require_root();
    let (mut lab, n1, n2, _client) = two_nodes("oa")?;
    let c1 = write_config(
        &lab,
        &n1,
        1,
        &n2,
        "[metrics]\nlisten = \"127.0.0.1:9797\"\n",
    )?;
    let c2 = write_config(&lab, &n2, 2, &n1, "")?;
    let p1 = start(&mut lab, &n1, &c1, &[])?;
    let p2 = start(&mut lab, &n2, &c2, &[])?;
    wait_until("one VIP each", SETTLE, || {
        Ok(held(&lab, &n1) == 1 && held(&lab, &n2) == 1)
    })?;
    let vip = *VIPS
        .iter()
        .find(|v| lab.has_address(&n1, v).unwrap_or(false))
        .context("n1 holds a VIP")?;

    for round in 1..=2 {
        lab.ip(
            &n1.netns,
            &["addr", "del", &format!("{vip}/32"), "dev", "eth0"],
        )?;
        lab.proc(p1)
            .wait_for_line(&["removed from the interface from outside", vip], SETTLE)?;
        wait_until("the VIP back on n1", SETTLE, || lab.has_address(&n1, vip))?;
        assert!(!lab.has_address(&n2, vip)?, "round {round}: n2 took {vip}");
        assert_eq!(held(&lab, &n2), 1);
        let text = scrape_metrics(&lab, &n1)?;
        assert!(
            text.contains(&format!("vipd_vips_restored_total {round}")),
            "{text}"
        );
    }
    // Its own releases are not undone: n2 stops and n1 holds both; n2 returns and n1
    // hands one back without adding it again.
    lab.proc(p2).signal(libc::SIGTERM)?;
    lab.proc(p2).wait_exit(SETTLE)?;
    wait_until("n1 holds both", SETTLE, || Ok(held(&lab, &n1) == 2))?;
    start(&mut lab, &n2, &c2, &[])?;
    wait_until("one VIP each again", SETTLE, || {
        Ok(held(&lab, &n1) == 1 && held(&lab, &n2) == 1)
    })?;
    let log = lab.proc(p1).output();
    assert_eq!(
        log.matches("removed from the interface from outside")
            .count(),
        2,
        "{log}"
    );
    Ok(())
}

/// Under a service manager (`Type=notify`): READY=1 once running, WATCHDOG=1 while the fast
/// path answers, STOPPING=1 on SIGTERM; a clean stop exits 0.
#[test]
#[ignore = "needs root (namespaces, XDP): run as root with `cargo test -- --include-ignored`"]
fn the_service_manager_hears_ready_watchdog_and_stopping() -> anyhow::Result<()> {
    require_root();
    let (mut lab, n1, n2, _client) = two_nodes("on")?;
    let socket_path = lab.dir().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path)?;
    socket.set_read_timeout(Some(SETTLE))?;
    let c1 = write_config(&lab, &n1, 1, &n2, "")?;
    let notify = format!("NOTIFY_SOCKET={}", socket_path.display());
    let p = lab.spawn(
        &n1,
        "n1-vipd",
        Path::new("env"),
        &[
            &notify,
            "WATCHDOG_USEC=200000",
            VIPD,
            "run",
            "--config",
            c1.to_str().context("path")?,
        ],
    )?;
    let next = || -> anyhow::Result<String> {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).context("no notification")?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    assert_eq!(next()?, "READY=1");
    for _ in 0..5 {
        assert_eq!(next()?, "WATCHDOG=1");
    }
    lab.proc(p).signal(libc::SIGTERM)?;
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("STOPPING=1") && seen.len() < 100 {
        seen.push(next()?);
    }
    assert_eq!(
        seen.last().map(String::as_str),
        Some("STOPPING=1"),
        "{seen:?}"
    );
    assert!(lab.proc(p).wait_exit(SETTLE)?, "a clean stop exits 0");
    Ok(())
}
