//! Prometheus metrics, in the exposition format of the `prometheus-client` crate, served
//! at `GET /metrics` on the configured address.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};
use tracing::{info, warn};
use vipd_common::maps::{COUNTER_SLOTS, Counter as XdpCounter, Verdict};

/// `peer` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// Node id.
    pub peer: String,
}

/// `vip` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipLabel {
    /// The address.
    pub vip: String,
}

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// timeout, leaving, restarted, not_mature.
    pub reason: String,
}

/// `vrid` and `family` labels of a VRRP group.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    /// Virtual Rtr ID.
    pub vrid: String,
    /// ipv4 or ipv6.
    pub family: String,
}

/// `kind` and `verdict` labels of XDP packet counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PacketLabel {
    /// What the program saw.
    pub kind: String,
    /// What it did: drop or pass.
    pub verdict: String,
}

/// Every metric vipd exports.
pub struct Metrics {
    registry: Registry,
    /// 1 while the peer is in this node's view.
    pub peer_up: Family<PeerLabel, Gauge>,
    /// 1 while this node holds the VIP.
    pub vip_owned: Family<VipLabel, Gauge>,
    /// Peers lost from the view, by reason (each one moves its VIPs).
    pub failovers: Family<ReasonLabel, Counter>,
    /// Last heartbeat heard → loss declared, for timeouts.
    pub detection_seconds: Histogram,
    /// Loss declared → first announcement of an adopted VIP.
    pub takeover_seconds: Histogram,
    /// Gratuitous ARPs and unsolicited NAs sent.
    pub announcements: Counter,
    /// Held VIPs removed from outside and added again.
    pub vips_restored: Counter,
    /// Conflicts begun: another host (not a live peer) claimed a held VIP.
    pub vip_conflicts: Counter,
    /// Held VIPs announced again against such a claim.
    pub vip_defences: Counter,
    /// Conflicts going on.
    pub vip_conflicts_now: Gauge,
    /// Hook events replaced by a newer one of their VIP, group or node before they ran
    /// (or refused by a full queue).
    pub hook_events_coalesced: Counter,
    /// Peers whose state sections are for another VIP list.
    pub peers_other_pool: Gauge,
    /// 1 while this node takes VIPs (mature, carrier, healthy).
    pub active: Gauge,
    /// 1 while the node is drained (`vipd drain`).
    pub drained: Gauge,
    /// State sections ignored by the daemon, by reason (`bad_auth`, `replayed`).
    pub state_rejected: Family<ReasonLabel, Counter>,
    /// VRRP mode: each group's state (0 initialize, 1 backup, 2 master).
    pub vrrp_state: Family<GroupLabel, Gauge>,
    /// 1 while the fast path runs at a real-time priority.
    pub fast_path_realtime: Gauge,
    heartbeats_sent: Counter,
    heartbeats_late: Counter,
    reports_dropped: Counter,
    /// Last totals synced into the three counters above.
    fast_seen: Mutex<[u64; 3]>,
    xdp_packets: Family<PacketLabel, Counter>,
    xdp_events_lost: Counter,
    /// 1 when heartbeats are authenticated (pool mode with a key).
    pub auth_enabled: Gauge,
    xdp_seen: Mutex<[u64; COUNTER_SLOTS as usize]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vipd");
        let m = Self {
            peer_up: Family::default(),
            vip_owned: Family::default(),
            failovers: Family::default(),
            detection_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            takeover_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 16)),
            announcements: Counter::default(),
            vips_restored: Counter::default(),
            vip_conflicts: Counter::default(),
            vip_defences: Counter::default(),
            vip_conflicts_now: Gauge::default(),
            hook_events_coalesced: Counter::default(),
            peers_other_pool: Gauge::default(),
            active: Gauge::default(),
            drained: Gauge::default(),
            state_rejected: Family::default(),
            vrrp_state: Family::default(),
            fast_path_realtime: Gauge::default(),
            heartbeats_sent: Counter::default(),
            heartbeats_late: Counter::default(),
            reports_dropped: Counter::default(),
            fast_seen: Mutex::new([0; 3]),
            xdp_packets: Family::default(),
            xdp_events_lost: Counter::default(),
            auth_enabled: Gauge::default(),
            xdp_seen: Mutex::new([0; COUNTER_SLOTS as usize]),
            registry: Registry::default(),
        };
        registry.register(
            "peer_up",
            "Peer is in this node's membership view",
            m.peer_up.clone(),
        );
        registry.register("vip_owned", "This node holds the VIP", m.vip_owned.clone());
        registry.register(
            "vrrp_state",
            "VRRP group state: 0 initialize, 1 backup, 2 master",
            m.vrrp_state.clone(),
        );
        registry.register(
            "failovers",
            "Peers lost from the view, by reason",
            m.failovers.clone(),
        );
        registry.register(
            "detection_latency_seconds",
            "From a peer's last heartbeat to its loss being declared (timeouts)",
            m.detection_seconds.clone(),
        );
        registry.register(
            "takeover_latency_seconds",
            "From a loss being declared to the first announcement of an adopted VIP",
            m.takeover_seconds.clone(),
        );
        registry.register(
            "announcements",
            "Gratuitous ARPs and unsolicited NAs sent",
            m.announcements.clone(),
        );
        registry.register(
            "vips_restored",
            "Held VIPs removed from the interface from outside (ip addr flush, a network \
             manager) and added again",
            m.vips_restored.clone(),
        );
        registry.register(
            "vip_conflicts",
            "Conflicts begun: another host (not a live peer) claimed a held VIP by ARP or \
             neighbour discovery",
            m.vip_conflicts.clone(),
        );
        registry.register(
            "vip_defences",
            "Held VIPs announced again against another host's claim (backing off)",
            m.vip_defences.clone(),
        );
        registry.register(
            "hook_events_coalesced",
            "Hook events replaced by a newer one of their VIP, group or node before they \
             ran, or refused by a full queue",
            m.hook_events_coalesced.clone(),
        );
        registry.register(
            "vip_conflicts_current",
            "VIP conflicts going on (a claim within the last minute)",
            m.vip_conflicts_now.clone(),
        );
        registry.register(
            "peers_other_pool",
            "Peers whose state sections are for another VIP list (a rolling change of the \
             list, or a mistake): their holdings are ignored",
            m.peers_other_pool.clone(),
        );
        registry.register(
            "active",
            "This node takes VIPs (mature, carrier, healthy)",
            m.active.clone(),
        );
        registry.register(
            "drained",
            "This node is drained (`vipd drain`): it holds no VIP and joins no VRRP group \
             until `vipd undrain`",
            m.drained.clone(),
        );
        registry.register(
            "state_sections_rejected",
            "State sections (what a peer holds) ignored because they failed authentication",
            m.state_rejected.clone(),
        );
        registry.register(
            "fast_path_realtime",
            "The fast path (heartbeats, deadlines, takeover) runs at a real-time priority",
            m.fast_path_realtime.clone(),
        );
        registry.register(
            "heartbeats_sent",
            "Heartbeats sent on the fast path's schedule",
            m.heartbeats_sent.clone(),
        );
        registry.register(
            "heartbeats_late",
            "Heartbeats sent more than half an interval after their slot",
            m.heartbeats_late.clone(),
        );
        registry.register(
            "fast_path_reports_dropped",
            "Reports of the fast path the slow path could not take in time",
            m.reports_dropped.clone(),
        );
        registry.register(
            "xdp_events_lost",
            "Events of the XDP program lost because its ring buffer was full",
            m.xdp_events_lost.clone(),
        );
        registry.register(
            "auth_enabled",
            "Heartbeats are authenticated with a shared key (0: the pool trusts the segment)",
            m.auth_enabled.clone(),
        );
        registry.register(
            "xdp_packets",
            "Frames seen by the XDP program, by kind and verdict",
            m.xdp_packets.clone(),
        );
        Self { registry, ..m }
    }

    /// Brings the fast paths' metrics up to date: whether all run real-time, and their
    /// totals of [sent, late, reports dropped].
    pub fn sync_fast_path(&self, realtime: bool, totals: [u64; 3]) {
        self.fast_path_realtime.set(i64::from(realtime));
        let mut seen = self.fast_seen.lock().unwrap_or_else(|e| e.into_inner());
        for ((counter, total), seen) in [
            &self.heartbeats_sent,
            &self.heartbeats_late,
            &self.reports_dropped,
        ]
        .into_iter()
        .zip(totals)
        .zip(seen.iter_mut())
        {
            counter.inc_by(total.saturating_sub(*seen));
            *seen = total.max(*seen);
        }
    }

    /// Brings the XDP counters up to the totals read from the map: frames as
    /// `xdp_packets{kind=<counter name>,verdict}`, lost events as `xdp_events_lost`.
    pub fn sync_xdp(&self, totals: &[(XdpCounter, u64)]) {
        let mut seen = self.xdp_seen.lock().unwrap_or_else(|e| e.into_inner());
        for &(c, total) in totals {
            let Some(slot) = seen.get_mut(c as usize) else {
                continue;
            };
            let delta = total.saturating_sub(*slot);
            *slot = total.max(*slot);
            if c.verdict() == Verdict::None {
                self.xdp_events_lost.inc_by(delta);
                continue;
            }
            let label = PacketLabel {
                kind: c.name().into(),
                verdict: c.verdict().name().into(),
            };
            self.xdp_packets.get_or_create(&label).inc_by(delta);
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            warn!("encoding metrics: {e}");
        }
        out
    }
}

/// Serves `GET /metrics` on `addr`; `refresh` is called before each scrape.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    refresh: impl Fn() + Send + Sync + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    info!(%addr, "serving Prometheus metrics at /metrics");
    let refresh = Arc::new(refresh);
    // A scraper or two is normal; more at once are refused rather than allowed to use up
    // the daemon's file descriptors.
    let slots = Arc::new(tokio::sync::Semaphore::new(8));
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                continue;
            };
            let metrics = Arc::clone(&metrics);
            let refresh = Arc::clone(&refresh);
            tokio::spawn(async move {
                let _permit = permit;
                let mut buf = [0u8; 2048];
                let read =
                    tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
                let Ok(Ok(n)) = read else { return };
                let request = String::from_utf8_lossy(&buf[..n]);
                let response = if request.starts_with("GET /metrics ")
                    || request.starts_with("GET /metrics?")
                {
                    refresh();
                    let body = metrics.render();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .into()
                };
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_names_with_prefix_and_xdp_deltas() {
        let m = Metrics::new();
        m.peer_up
            .get_or_create(&PeerLabel { peer: "2".into() })
            .set(1);
        m.failovers
            .get_or_create(&ReasonLabel {
                reason: "timeout".into(),
            })
            .inc();
        m.sync_xdp(&[(XdpCounter::HeartbeatAccepted, 10)]);
        m.sync_xdp(&[
            (XdpCounter::HeartbeatAccepted, 15),
            (XdpCounter::EventsLost, 2),
        ]);
        let text = m.render();
        assert!(text.contains("vipd_peer_up{peer=\"2\"} 1"), "{text}");
        assert!(
            text.contains("vipd_failovers_total{reason=\"timeout\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "vipd_xdp_packets_total{kind=\"heartbeats_accepted\",verdict=\"record\"} 15"
            ),
            "{text}"
        );
        assert!(
            text.contains("vipd_detection_latency_seconds_bucket"),
            "{text}"
        );
        assert!(text.contains("vipd_xdp_events_lost_total 2"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
