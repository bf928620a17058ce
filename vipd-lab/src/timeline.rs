//! Reading vipd's failover timeline (`vipd::timeline` log lines) back from a log, for the
//! demo and the benchmarks.

/// One takeover, as the new owner logged it (CLOCK_MONOTONIC nanoseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// Why the peer left the view: timeout, LEAVING, ...
    pub reason: String,
    /// The kernel's timestamp of the peer's last heartbeat.
    pub last_seen_ns: u64,
    /// When the loss was declared.
    pub detected_ns: u64,
    /// When the VIP was added, if it was after the loss.
    pub added_ns: Option<u64>,
    /// When its first announcement went out, if it was after the loss.
    pub announced_ns: Option<u64>,
}

/// The value of `name=<number>` in a log line.
pub fn field(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}="))?.parse().ok())
}

/// The last loss of a peer (of `peer`, if given) in `log`, or in VRRP mode the last
/// expiry of the Master_Down_Timer, and the takeover of `vip` after it. When `vip` was
/// added, only losses up to its last addition count (a daemon running a pool and VRRP
/// groups logs both kinds: the one that moved `vip` came before it).
pub fn last_takeover(log: &str, peer: Option<u32>, vip: &str) -> Option<Takeover> {
    let added_last = log
        .lines()
        .rev()
        .find(|l| l.contains("event=\"address_added\"") && l.contains(&format!("vip={vip} ")))
        .and_then(|l| field(l, "mono_ns"));
    let lost = log.lines().rev().find(|l| {
        let loss = (l.contains("event=\"peer_lost\"")
            && peer.is_none_or(|p| l.contains(&format!("peer={p} "))))
            || l.contains("event=\"master_down\"");
        loss && added_last.is_none_or(|a| field(l, "mono_ns").is_some_and(|t| t <= a))
    })?;
    if lost.contains("event=\"master_down\"") {
        let detected_ns = field(lost, "mono_ns")?;
        return Some(Takeover {
            reason: "master_down".into(),
            last_seen_ns: field(lost, "last_seen_ns")?,
            detected_ns,
            added_ns: after(log, "address_added", vip, detected_ns),
            announced_ns: after(log, "first_announce", vip, detected_ns),
        });
    }
    let detected_ns = field(lost, "mono_ns")?;
    Some(Takeover {
        reason: lost
            .split("reason=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?")
            .into(),
        last_seen_ns: field(lost, "last_seen_mono_ns")?,
        detected_ns,
        added_ns: after(log, "address_added", vip, detected_ns),
        announced_ns: after(log, "first_announce", vip, detected_ns),
    })
}

/// The first `event` for `vip` at or after `from`.
fn after(log: &str, event: &str, vip: &str, from: u64) -> Option<u64> {
    log.lines()
        .filter(|l| l.contains(&format!("event=\"{event}\"")) && l.contains(&format!("vip={vip} ")))
        .filter_map(|l| field(l, "mono_ns"))
        .find(|&t| t >= from)
}

/// The effective heartbeat interval and dead interval as the daemon logged them at start
/// (the `interval=` and `dead_interval=` fields of its "vipd started" line, e.g. "100ms").
pub fn started_intervals(log: &str) -> Option<(String, String)> {
    let line = log.lines().find(|l| l.contains("vipd started"))?;
    let word = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_matches(|c| c == '"' || c == ',').to_string())
    };
    Some((word("interval")?, word("dead_interval")?))
}

/// A duration as Rust's `Debug` prints it ("300ms", "1.5s", "500µs") or as vipd's
/// configuration writes it ("1m", "250us").
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim_matches('"');
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "ns" => 1e-9,
        "µs" | "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        _ => return None,
    };
    std::time::Duration::try_from_secs_f64(number * scale).ok()
}

/// The first loss of `peer` declared at or after `from_ns` (`peer_lost`): the kernel's time
/// of its last heartbeat and the time of the loss (CLOCK_MONOTONIC ns).
pub fn peer_lost_after(log: &str, peer: u32, from_ns: u64) -> Option<(u64, u64)> {
    log.lines()
        .filter(|l| l.contains("event=\"peer_lost\"") && l.contains(&format!("peer={peer} ")))
        .filter_map(|l| Some((field(l, "last_seen_mono_ns")?, field(l, "mono_ns")?)))
        .find(|&(_, at)| at >= from_ns)
}

/// For each VIP, the time of its first `event` (`address_added`, `first_announce`) at or
/// after `from_ns`.
pub fn vip_events_after(
    log: &str,
    event: &str,
    from_ns: u64,
) -> std::collections::HashMap<std::net::IpAddr, u64> {
    let tag = format!("event=\"{event}\"");
    let mut first = std::collections::HashMap::new();
    for l in log.lines().filter(|l| l.contains(&tag)) {
        let vip = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("vip=")?.parse().ok());
        if let (Some(vip), Some(at)) = (vip, field(l, "mono_ns"))
            && at >= from_ns
        {
            first.entry(vip).or_insert(at);
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_intervals_and_events_after_a_time() {
        let log = "\
0.1 INFO vipd::daemon: vipd started node=1 interface=eth0 vips=[\"192.0.2.200/32\"] interval=100ms dead_interval=300ms hold_down=300ms weight=1
2.0 INFO vipd::timeline: peer left the view (timeout) event=\"peer_lost\" peer=2 reason=\"timeout\" last_seen_mono_ns=10 mono_ns=20 silence_us=0
3.0 INFO vipd::timeline: peer left the view (timeout) event=\"peer_lost\" peer=2 reason=\"timeout\" last_seen_mono_ns=100 mono_ns=400 silence_us=300
3.1 INFO vipd::timeline: took over VIP event=\"address_added\" vip=2001:db8::5:1 mono_ns=410 already_present=false
3.2 INFO vipd::timeline: took over VIP event=\"address_added\" vip=198.51.100.1 mono_ns=415 already_present=false
";
        assert_eq!(
            started_intervals(log),
            Some(("100ms".into(), "300ms".into()))
        );
        assert_eq!(peer_lost_after(log, 2, 30), Some((100, 400)));
        assert_eq!(peer_lost_after(log, 1, 0), None);
        let added = vip_events_after(log, "address_added", 400);
        assert_eq!(added.len(), 2);
        assert_eq!(added[&"2001:db8::5:1".parse().unwrap()], 410);
        assert_eq!(
            parse_duration("300ms"),
            Some(std::time::Duration::from_millis(300))
        );
        assert_eq!(
            parse_duration("1.5s"),
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(
            parse_duration("500µs"),
            Some(std::time::Duration::from_micros(500))
        );
        assert_eq!(parse_duration("fast"), None);
    }

    #[test]
    fn reads_the_takeover_after_the_loss() {
        let log = "\
1.0 INFO vipd::timeline: took over VIP event=\"address_added\" vip=192.0.2.201 mono_ns=5 already_present=false
2.0 INFO vipd::timeline: peer left the view (timeout) event=\"peer_lost\" peer=1 reason=\"timeout\" last_seen_mono_ns=100 mono_ns=400 silence_us=300
2.1 INFO vipd::timeline: took over VIP event=\"address_added\" vip=192.0.2.201 mono_ns=410 already_present=false
2.2 INFO vipd::timeline: announced VIP event=\"first_announce\" vip=192.0.2.201 mono_ns=420 burst=3
";
        let t = last_takeover(log, Some(1), "192.0.2.201").unwrap();
        assert_eq!(t.reason, "timeout");
        assert_eq!((t.last_seen_ns, t.detected_ns), (100, 400));
        assert_eq!((t.added_ns, t.announced_ns), (Some(410), Some(420)));
        assert_eq!(last_takeover(log, Some(2), "192.0.2.201"), None);
        assert_eq!(
            last_takeover(log, None, "192.0.2.202").unwrap().added_ns,
            None
        );
    }

    #[test]
    fn reads_the_loss_that_moved_the_vip_when_a_daemon_runs_both() {
        // A pool and a VRRP group: the peer's loss moved the pool's VIP, the later
        // Master_Down_Timer the group's.
        let log = "\
2.0 INFO vipd::timeline: peer left the view (timeout) event=\"peer_lost\" peer=1 reason=\"timeout\" last_seen_mono_ns=100 mono_ns=400 silence_us=300
2.1 INFO vipd::timeline: took over VIP event=\"address_added\" vip=192.0.2.201 mono_ns=410 already_present=false
2.2 INFO vipd::timeline: announced VIP event=\"first_announce\" vip=192.0.2.201 mono_ns=420 burst=3
2.3 INFO vipd::timeline: Master_Down_Timer fired event=\"master_down\" vrid=51 mono_ns=900 last_seen_ns=40
2.4 INFO vipd::timeline: took over VIP event=\"address_added\" vip=192.0.2.200 mono_ns=910 vrid=51
";
        let pool = last_takeover(log, Some(1), "192.0.2.201").unwrap();
        assert_eq!((pool.reason.as_str(), pool.detected_ns), ("timeout", 400));
        let group = last_takeover(log, Some(1), "192.0.2.200").unwrap();
        assert_eq!(
            (group.reason.as_str(), group.added_ns),
            ("master_down", Some(910))
        );
    }

    #[test]
    fn reads_a_vrrp_master_down() {
        let log = "\
1.0 INFO vipd::timeline: Master_Down_Timer fired event=\"master_down\" vrid=51 mono_ns=400 last_seen_ns=40
1.1 INFO vipd::timeline: took over VIP event=\"address_added\" vip=192.0.2.200 mono_ns=410 vrid=51
1.2 INFO vipd::timeline: announced VIP event=\"first_announce\" vip=192.0.2.200 mono_ns=420 burst=3
";
        let t = last_takeover(log, Some(1), "192.0.2.200").unwrap();
        assert_eq!(
            (t.reason.as_str(), t.last_seen_ns, t.detected_ns),
            ("master_down", 40, 400)
        );
        assert_eq!((t.added_ns, t.announced_ns), (Some(410), Some(420)));
    }
}
