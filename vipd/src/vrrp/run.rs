//! The VRRP-mode daemon: one [`VirtualRouter`] per configured group, driven by the XDP
//! program's notices, its own timers, carrier changes, health checks and signals.
//!
//! A Backup is not woken per advert: the XDP program records the Master's last advert in
//! `VRRP_SEEN`; when the Master_Down_Timer fires, the daemon reads that timestamp and, if
//! the Master was heard within Master_Down_Interval, re-arms from it. Only a priority-0
//! advert, a new Master, or (when Master) an outranking advert raises a notice.
//!
//! Log lines: `vrrp state vrid=… family=… from=… to=… reason=…` on every transition
//! (reasons: startup, master_down, priority_zero, preempted, shutdown, link_down, link_up,
//! check_failed, check_passed), and the `vipd::timeline` events `master_down`,
//! `address_added` and `first_announce` (CLOCK_MONOTONIC nanoseconds).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    task::JoinHandle,
    time::{Instant, sleep_until},
};
use tracing::{debug, info, warn};
use vipd_common::{
    maps::{VRRP_BACKUP, VRRP_INITIALIZE, VRRP_MASTER, VrrpGroup, VrrpNotice, XdpConfig, vrrp_key},
    vrrp::Notice,
};

use super::{
    advert::{self, AdvertSpec},
    fsm::{Heard, VirtualRouter, VrrpAction, VrrpEvent, VrrpState},
};
use crate::{
    announce::Announcer,
    clock::monotonic_ns,
    config::{Config, Vrrp},
    control::{self, Status, VrrpStatus},
    daemon::{answer, check_privileges, remove_leftovers},
    health,
    hooks::Hooks,
    metrics::{self, GroupLabel, Metrics, ReasonLabel, VipLabel},
    netlink::{CarrierWatch, Link},
    vip::Vip,
    xdp::{self, LoadedXdp},
};

/// Priority-0 adverts sent on a graceful stop (the RFC sends one; a second covers a loss).
const STOP_ADVERTS: usize = 2;

/// One group at run time.
struct Group {
    cfg: Vrrp,
    key: u32,
    router: VirtualRouter,
    /// The adverts' source: primary IPv4 address or IPv6 link-local address.
    source: IpAddr,
    vips: Vec<IpAddr>,
    /// Kernel time of the last priority-0 notice: older sightings of the Master are void.
    stopped_at: u64,
    /// The Master as last heard (Backup).
    master: Option<(IpAddr, u8)>,
    /// Why the next transition happens (for the log).
    reason: &'static str,
    /// Tasks repeating announcements of the held VIPs.
    repeats: Vec<JoinHandle<()>>,
    /// Where the VIPs go: the interface, or the group's virtual-MAC macvlan.
    link: Link,
    /// Sends adverts and announcements from `link`'s MAC.
    announcer: Arc<Announcer>,
}

/// Everything the loop acts with.
struct Runtime {
    cfg: Config,
    loaded: LoadedXdp,
    hooks: Hooks,
    metrics: Arc<Metrics>,
    groups: Vec<Group>,
    /// Carrier and health: a node that is down or unhealthy runs no group.
    carrier: bool,
    health: health::Tracker,
}

/// Runs the configured VRRP groups until SIGTERM or SIGINT, then stops them (priority-0
/// adverts, VIPs removed).
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    check_privileges()?;
    let link = Link::open(&cfg.interface).await?;
    let all: Vec<Vip> = cfg.vrrp.iter().flat_map(|g| g.vips.clone()).collect();
    remove_leftovers(&link, &all).await?;
    let addresses = link.addresses().await?;
    let announcer = Arc::new(Announcer::open(link.index, link.mac).context(
        "opening an AF_PACKET socket for adverts and gratuitous ARP (needs CAP_NET_RAW)",
    )?);
    let arp_ignore = vmac::prepare(&cfg)?;
    let mut groups = Vec::new();
    for g in &cfg.vrrp {
        let source = source_address(&addresses, g, &all)
            .with_context(|| format!("VRRP group {} on {}", g.vrid, cfg.interface))?;
        let (group_link, group_announcer) = if g.vmac {
            let name = g.vmac_name();
            let vlink = link
                .add_macvlan(&name, g.virtual_mac())
                .await
                .with_context(|| format!("VRRP group {}: the virtual MAC", g.vrid))?;
            let a = Announcer::open(vlink.index, vlink.mac)
                .with_context(|| format!("opening an AF_PACKET socket on {name}"))?;
            info!(vrid = g.vrid, interface = %name, "virtual MAC {}", vmac::text(vlink.mac));
            (vlink, Arc::new(a))
        } else {
            (link.clone(), Arc::clone(&announcer))
        };
        groups.push(Group {
            link: group_link,
            announcer: group_announcer,
            key: vrrp_key(g.ipv6(), g.vrid),
            router: VirtualRouter::new(g.priority, g.interval_cs(), g.preempt, source),
            source,
            vips: g.vips.iter().map(|v| v.addr).collect(),
            stopped_at: 0,
            master: None,
            reason: "startup",
            repeats: Vec::new(),
            cfg: g.clone(),
        });
    }
    let (loaded, rings) = xdp::load(&xdp::XdpSettings {
        interface: &cfg.interface,
        mode: cfg.xdp_mode,
        pin_dir: &cfg.pin_dir(),
        // No heartbeats in VRRP mode: port 0 matches nothing.
        config: XdpConfig {
            node_id: cfg.node_id,
            ..XdpConfig::default()
        },
    })?;
    let _joined = join_groups(&groups, link.index)
        .context("joining the VRRP multicast groups (224.0.0.18 / ff02::12)")?;
    accept_mode::install(&cfg.instance, &cfg.vrrp)?;
    let mut carrier_watch = CarrierWatch::open(link.index)?;
    let control = control::bind(&cfg.instance)?;
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = cfg.metrics {
        let counters = Arc::clone(&loaded.counters);
        let m = Arc::clone(&metrics);
        metrics::serve(addr, Arc::clone(&metrics), move || {
            m.sync_xdp(&xdp::sum_counters(&counters))
        })
        .await
        .with_context(|| format!("serving metrics on {addr}"))?;
    }
    let (health_tx, mut health_rx) = tokio::sync::mpsc::unbounded_channel();
    let _health_tasks = health::spawn(&cfg.checks, 0, health_tx);
    let mut sigterm = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing a SIGHUP handler")?;
    // SAFETY: the ring buffer owns its fd and moves into the AsyncFd.
    let mut notices = unsafe { AsyncFd::register_with_interest(rings.vrrp, Interest::READABLE) }
        .map_err(std::io::Error::from)
        .context("polling the XDP VRRP ring buffer")?;

    info!(
        node = cfg.node_id,
        interface = %cfg.interface,
        groups = ?cfg.vrrp.iter().map(|g| format!("{}/{} prio {}", g.vrid, g.family(), g.priority)).collect::<Vec<_>>(),
        carrier = link.carrier,
        "vipd started in VRRP mode"
    );
    let mut rt = Runtime {
        hooks: Hooks::new(
            cfg.hook.clone(),
            cfg.hook_timeout,
            cfg.node_id,
            &cfg.instance,
            &cfg.interface,
        ),
        health: health::Tracker::new(&cfg.checks),
        carrier: link.carrier,
        cfg,
        loaded,
        metrics,
        groups,
    };
    for i in 0..rt.groups.len() {
        rt.publish(i);
    }
    if rt.runnable() {
        rt.start_all("startup").await;
    }

    let stop_reason = loop {
        let wake = rt.next_deadline();
        tokio::select! {
            biased;
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            guard = notices.readable_mut() => {
                let Ok(mut guard) = guard else {
                    break "the XDP VRRP ring buffer failed";
                };
                let mut batch = Vec::new();
                while let Some(item) = guard.get_inner_mut().next() {
                    if item.len() >= size_of::<VrrpNotice>() {
                        // SAFETY: the program writes whole VrrpNotice records; read unaligned.
                        batch.push(unsafe { item.as_ptr().cast::<VrrpNotice>().read_unaligned() });
                    }
                }
                guard.clear_ready();
                for n in batch {
                    rt.on_notice(&n).await;
                }
            }
            up = carrier_watch.next() => {
                let Some(up) = up else {
                    break "the kernel closed the link notification socket";
                };
                rt.on_carrier(up).await;
            }
            Some((_, check, passed)) = health_rx.recv() => rt.on_check(check, passed).await,
            _ = sighup.recv() => {
                warn!("SIGHUP: VRRP groups are not reloaded; restart vipd to change them");
            }
            accepted = control.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(answer(stream, rt.status()));
                }
            }
            _ = sleep_until(wake) => {}
        }
        rt.on_timers(monotonic_ns()).await;
    };

    info!(
        reason = stop_reason,
        "stopping: priority-0 adverts, releasing VIPs"
    );
    rt.stop_all("shutdown").await;
    let counters: Vec<String> = rt
        .loaded
        .counters()
        .iter()
        .map(|(c, v)| format!("{}={v}", c.name()))
        .collect();
    info!(
        xdp_mode = rt.loaded.mode,
        counters = counters.join(" "),
        "stopped"
    );
    accept_mode::remove(&rt.cfg.instance);
    for g in rt.groups.iter().filter(|g| g.cfg.vmac) {
        if let Err(e) = g.link.delete().await {
            warn!("removing the virtual MAC interface: {e}");
        }
    }
    vmac::restore(&rt.cfg.interface, arp_ignore);
    xdp::remove_pins(&rt.loaded.pin_dir);
    let _ = std::fs::remove_file(control::socket_path(&rt.cfg.instance));
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

/// The address adverts of `group` are sent from: the interface's first IPv4 address that
/// is not a VIP, or its IPv6 link-local address (RFC 5798 section 5.1.2.1).
fn source_address(
    addresses: &[(IpAddr, u8)],
    group: &Vrrp,
    vips: &[Vip],
) -> anyhow::Result<IpAddr> {
    let is_vip = |a: &IpAddr| vips.iter().any(|v| v.addr == *a);
    let found = if group.ipv6() {
        addresses
            .iter()
            .map(|(a, _)| *a)
            .find(|a| matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
    } else {
        addresses
            .iter()
            .map(|(a, _)| *a)
            .find(|a| a.is_ipv4() && !is_vip(a))
    };
    match found {
        Some(a) => Ok(a),
        None if group.ipv6() => {
            bail!("no IPv6 link-local address to send adverts from (is IPv6 enabled?)")
        }
        None => bail!("no IPv4 address (other than a VIP) to send adverts from"),
    }
}

/// Joins 224.0.0.18 / ff02::12 on the interface, so its multicast filter lets adverts in
/// (the sockets receive nothing: VRRP is not UDP). Keep the sockets to stay joined.
fn join_groups(groups: &[Group], ifindex: u32) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let mut sockets = Vec::new();
    if let Some(g) = groups.iter().find(|g| g.source.is_ipv4()) {
        let IpAddr::V4(local) = g.source else {
            unreachable!()
        };
        let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.join_multicast_v4(&advert::GROUP_V4, &local)?;
        sockets.push(s);
    }
    if groups.iter().any(|g| g.source.is_ipv6()) {
        let s = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?;
        s.join_multicast_v6(&advert::GROUP_V6, ifindex)?;
        sockets.push(s);
    }
    Ok(sockets)
}

fn state_name(s: VrrpState) -> &'static str {
    match s {
        VrrpState::Initialize => "initialize",
        VrrpState::Backup => "backup",
        VrrpState::Master => "master",
    }
}

fn ip_of(bytes: &[u8; 16], ipv6: bool) -> IpAddr {
    if ipv6 {
        Ipv6Addr::from(*bytes).into()
    } else {
        Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into()
    }
}

fn bytes_of(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

impl Runtime {
    /// Whether groups may run: carrier up and every health check passing.
    fn runnable(&self) -> bool {
        self.carrier && self.health.healthy()
    }

    fn next_deadline(&self) -> Instant {
        let now_ns = monotonic_ns();
        let next = self
            .groups
            .iter()
            .filter_map(|g| g.router.next_deadline())
            .min()
            .unwrap_or(now_ns + 3_600_000_000_000);
        Instant::now() + Duration::from_nanos(next.saturating_sub(now_ns))
    }

    /// Writes group `i` to the XDP program's VRRP_GROUPS map.
    fn publish(&mut self, i: usize) {
        let g = &self.groups[i];
        let value = VrrpGroup {
            primary: bytes_of(g.source),
            priority: g.cfg.priority,
            preempt: u8::from(g.cfg.preempt),
            state: match g.router.state {
                VrrpState::Initialize => VRRP_INITIALIZE,
                VrrpState::Backup => VRRP_BACKUP,
                VrrpState::Master => VRRP_MASTER,
            },
            _pad: [0; 5],
        };
        let key = g.key;
        if let Err(e) = self.loaded.vrrp_groups.insert(key, value, 0) {
            warn!(vrid = g.cfg.vrid, "writing the VRRP_GROUPS map: {e}");
        }
    }

    /// Feeds `event` to group `i` at `now` and carries out what it says.
    async fn feed(&mut self, i: usize, event: VrrpEvent, now: u64) {
        let before = self.groups[i].router.state;
        let actions = self.groups[i].router.handle(event, now);
        self.after(i, before, actions).await;
    }

    /// Carries out `actions` of group `i`, then logs and publishes a transition.
    async fn after(&mut self, i: usize, before: VrrpState, actions: Vec<VrrpAction>) {
        let after = self.groups[i].router.state;
        if after != before {
            // Tell the XDP program first: it judges the next advert by our state.
            self.publish(i);
        }
        for action in actions {
            match action {
                VrrpAction::SendAdvert { priority } => self.send_advert(i, priority),
                VrrpAction::TakeVips => self.take(i).await,
                VrrpAction::ReleaseVips => self.release(i).await,
            }
        }
        if after != before {
            let g = &self.groups[i];
            info!(
                "vrrp state vrid={} family={} from={} to={} reason={}",
                g.cfg.vrid,
                g.cfg.family(),
                state_name(before),
                state_name(after),
                g.reason
            );
            self.hooks.vrrp_state(g.cfg.vrid, state_name(after));
            self.metrics
                .vrrp_state
                .get_or_create(&GroupLabel {
                    vrid: g.cfg.vrid.to_string(),
                    family: g.cfg.family().into(),
                })
                .set(after as i64);
            if after == VrrpState::Master {
                self.metrics
                    .failovers
                    .get_or_create(&ReasonLabel {
                        reason: g.reason.into(),
                    })
                    .inc();
            }
        }
    }

    fn send_advert(&self, i: usize, priority: u8) {
        let g = &self.groups[i];
        let (frame, proto) = advert::frame(
            g.announcer.mac(),
            &AdvertSpec {
                vrid: g.cfg.vrid,
                priority,
                interval_cs: g.cfg.interval_cs(),
                source: g.source,
                vips: &g.vips,
            },
        );
        if let Err(e) = g.announcer.send(&frame, proto) {
            debug!(vrid = g.cfg.vrid, "sending an advert: {e}");
        }
    }

    async fn take(&mut self, i: usize) {
        let vips = self.groups[i].cfg.vips.clone();
        let (link, announcer) = (
            self.groups[i].link.clone(),
            Arc::clone(&self.groups[i].announcer),
        );
        for vip in vips {
            match link.add(&vip).await {
                Ok(_) => {
                    info!(target: "vipd::timeline", event = "address_added", vip = %vip.addr,
                        mono_ns = monotonic_ns(), vrid = self.groups[i].cfg.vrid, "took over VIP");
                }
                Err(e) => {
                    warn!("adding {vip}: {e}");
                    continue;
                }
            }
            let mut first = None;
            for _ in 0..self.cfg.announce_burst {
                match announcer.announce(vip.addr) {
                    Ok(()) => {
                        first.get_or_insert_with(monotonic_ns);
                        self.metrics.announcements.inc();
                    }
                    Err(e) => warn!("announcing {}: {e}", vip.addr),
                }
            }
            if let Some(mono_ns) = first {
                info!(target: "vipd::timeline", event = "first_announce", vip = %vip.addr,
                    mono_ns, burst = self.cfg.announce_burst, "announced VIP");
            }
            let announcer = Arc::clone(&announcer);
            let metrics = Arc::clone(&self.metrics);
            let repeats = self.cfg.announce_repeats.clone();
            let start = Instant::now();
            let addr = vip.addr;
            self.groups[i].repeats.push(tokio::spawn(async move {
                for after in repeats {
                    sleep_until(start + after).await;
                    if announcer.announce(addr).is_ok() {
                        metrics.announcements.inc();
                    }
                }
            }));
            self.metrics
                .vip_owned
                .get_or_create(&VipLabel {
                    vip: vip.addr.to_string(),
                })
                .set(1);
            self.hooks.vip_acquired(vip.addr);
        }
    }

    async fn release(&mut self, i: usize) {
        for task in self.groups[i].repeats.drain(..) {
            task.abort();
        }
        let vips = self.groups[i].cfg.vips.clone();
        let link = self.groups[i].link.clone();
        for vip in vips {
            match link.remove(&vip).await {
                Ok(_) => info!(vip = %vip.addr, vrid = self.groups[i].cfg.vrid, "released VIP"),
                Err(e) => warn!("removing {vip}: {e}"),
            }
            self.metrics
                .vip_owned
                .get_or_create(&VipLabel {
                    vip: vip.addr.to_string(),
                })
                .set(0);
            self.hooks.vip_released(vip.addr);
        }
    }

    /// A notice from the XDP program.
    async fn on_notice(&mut self, n: &VrrpNotice) {
        let Some(i) = self.groups.iter().position(|g| g.key == n.key) else {
            return;
        };
        let Some(kind) = Notice::from_u8(n.kind) else {
            return;
        };
        let ipv6 = self.groups[i].cfg.ipv6();
        let source = ip_of(&n.source, ipv6);
        let event = VrrpEvent::Advert {
            priority: n.priority,
            max_adver_int_cs: n.max_adver_int_cs,
            source,
        };
        if self.groups[i].router.state == VrrpState::Initialize {
            return;
        }
        // Notices carry the kernel's arrival time; never feed a time in the future.
        let at = n.ts_ns.min(monotonic_ns());
        let g = &mut self.groups[i];
        match kind {
            Notice::PriorityZero => {
                g.stopped_at = n.ts_ns;
                g.master = None;
                g.reason = "priority_zero";
                debug!(vrid = g.cfg.vrid, master = %source, "the Master is stopping (priority 0)");
            }
            Notice::Outranked => {
                g.master = Some((source, n.priority));
                g.reason = "preempted";
            }
            Notice::MasterChanged => {
                g.master = Some((source, n.priority));
                g.reason = "master_down";
                info!(vrid = g.cfg.vrid, master = %source, priority = n.priority,
                    interval_cs = n.max_adver_int_cs, "vrrp master heard");
            }
        }
        self.feed(i, event, at).await;
    }

    /// Fires due timers. A Backup's Master_Down_Timer is checked against the kernel's
    /// record of the Master's last advert first.
    async fn on_timers(&mut self, now: u64) {
        for i in 0..self.groups.len() {
            let g = &self.groups[i];
            let due = g.router.next_deadline().is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            let mut heard = None;
            if g.router.state == VrrpState::Backup {
                let seen = self.loaded.vrrp_seen.get(&g.key, 0).ok();
                // Sightings before a priority-0 advert (or our own start) are void.
                heard = seen
                    .filter(|s| s.last_seen_ns > g.stopped_at)
                    .map(|s| Heard {
                        at: s.last_seen_ns.min(now),
                        priority: s.priority,
                        max_adver_int_cs: s.max_adver_int_cs,
                        source: ip_of(&s.master, g.cfg.ipv6()),
                    });
            }
            let before = self.groups[i].router.state;
            let actions = self.groups[i].router.expire(now, heard);
            let g = &mut self.groups[i];
            if before == VrrpState::Backup && g.router.state == VrrpState::Master {
                if g.reason != "priority_zero" {
                    g.reason = "master_down";
                }
                info!(target: "vipd::timeline", event = "master_down", vrid = g.cfg.vrid,
                    mono_ns = now, last_seen_ns = heard.map_or(0, |h| h.at),
                    "Master_Down_Timer fired");
                g.master = None;
            }
            self.after(i, before, actions).await;
        }
    }

    async fn start_all(&mut self, reason: &'static str) {
        let now = monotonic_ns();
        for i in 0..self.groups.len() {
            self.groups[i].reason = reason;
            self.groups[i].stopped_at = now;
            self.feed(i, VrrpEvent::Startup, now).await;
        }
    }

    async fn stop_all(&mut self, reason: &'static str) {
        let now = monotonic_ns();
        for i in 0..self.groups.len() {
            let was_master = self.groups[i].router.state == VrrpState::Master;
            self.groups[i].reason = reason;
            self.feed(i, VrrpEvent::Shutdown, now).await;
            if was_master {
                for _ in 1..STOP_ADVERTS {
                    self.send_advert(i, 0);
                }
            }
            self.groups[i].master = None;
        }
    }

    async fn on_carrier(&mut self, up: bool) {
        if up == self.carrier {
            return;
        }
        let was = self.runnable();
        self.carrier = up;
        if up {
            info!(interface = %self.cfg.interface, "carrier back");
        } else {
            warn!(interface = %self.cfg.interface, "carrier lost: leaving every VRRP group");
        }
        self.apply_runnable(was, if up { "link_up" } else { "link_down" })
            .await;
    }

    async fn on_check(&mut self, index: usize, passed: bool) {
        let was = self.runnable();
        let Some(now_healthy) = self.health.record(index, passed) else {
            return;
        };
        let name = self.cfg.checks.get(index).map_or("?", |c| c.name.as_str());
        if now_healthy {
            info!(check = name, "health check passing");
        } else {
            warn!(
                check = name,
                "health check failing: leaving every VRRP group"
            );
        }
        let reason = if now_healthy {
            "check_passed"
        } else {
            "check_failed"
        };
        self.apply_runnable(was, reason).await;
    }

    async fn apply_runnable(&mut self, was: bool, reason: &'static str) {
        match (was, self.runnable()) {
            (true, false) => self.stop_all(reason).await,
            (false, true) => self.start_all(reason).await,
            _ => {}
        }
    }

    fn status(&self) -> Status {
        let now = monotonic_ns();
        let vrrp = self
            .groups
            .iter()
            .map(|g| {
                let seen = self.loaded.vrrp_seen.get(&g.key, 0).ok();
                let master = match g.router.state {
                    VrrpState::Master => Some((g.source, g.cfg.priority)),
                    VrrpState::Backup => g.master,
                    VrrpState::Initialize => None,
                };
                VrrpStatus {
                    vrid: g.cfg.vrid,
                    family: g.cfg.family().into(),
                    state: state_name(g.router.state).into(),
                    priority: g.cfg.priority,
                    master: master.map(|(a, _)| a.to_string()),
                    master_priority: master.map(|(_, p)| p),
                    master_seen_ms_ago: seen
                        .filter(|_| g.router.state == VrrpState::Backup)
                        .map(|s| now.saturating_sub(s.last_seen_ns) as f64 / 1e6),
                    adverts_received: seen.map_or(0, |s| s.received),
                    vips: g.cfg.vips.iter().map(ToString::to_string).collect(),
                }
            })
            .collect();
        let state = if !self.carrier {
            "fault"
        } else if !self.health.healthy() {
            "withdrawn"
        } else {
            "active"
        };
        Status {
            node_id: self.cfg.node_id,
            instance: self.cfg.instance.clone(),
            interface: self.cfg.interface.clone(),
            xdp_mode: self.loaded.mode.into(),
            state: state.into(),
            views_agree: true,
            counters: self
                .loaded
                .counters()
                .iter()
                .map(|(c, v)| (c.name().to_string(), *v))
                .collect(),
            vrrp,
            ..Status::default()
        }
    }
}

/// The virtual MAC's side effects on the host.
mod vmac {
    use anyhow::Context as _;
    use tracing::{info, warn};

    use crate::config::Config;

    /// "00:00:5e:00:01:33".
    pub fn text(mac: [u8; 6]) -> String {
        mac.map(|b| format!("{b:02x}")).join(":")
    }

    /// What is set on the interface while the daemon runs: it must neither answer ARP for
    /// the VIPs (they live on the macvlan) nor use a VIP as the sender of its own ARP
    /// requests, or clients would learn its real MAC for a VIP.
    const SETTINGS: [(&str, &str); 2] = [("arp_ignore", "1"), ("arp_announce", "2")];

    fn path(interface: &str, key: &str) -> String {
        format!("/proc/sys/net/ipv4/conf/{interface}/{key}")
    }

    /// Applies [`SETTINGS`] when an IPv4 group uses a virtual MAC; returns the old values.
    pub fn prepare(cfg: &Config) -> anyhow::Result<Vec<(&'static str, String)>> {
        if !cfg.vrrp.iter().any(|g| g.vmac && !g.ipv6()) {
            return Ok(Vec::new());
        }
        let mut old = Vec::new();
        for (key, value) in SETTINGS {
            let p = path(&cfg.interface, key);
            let was = std::fs::read_to_string(&p).with_context(|| format!("reading {p}"))?;
            std::fs::write(&p, value)
                .with_context(|| format!("setting {p} to {value} (virtual MAC)"))?;
            info!("{p} = {value} while running (was {})", was.trim());
            old.push((key, was.trim().to_string()));
        }
        Ok(old)
    }

    /// Puts back what [`prepare`] changed.
    pub fn restore(interface: &str, old: Vec<(&'static str, String)>) {
        for (key, value) in old {
            if let Err(e) = std::fs::write(path(interface, key), value) {
                warn!("restoring {key} on {interface}: {e}");
            }
        }
    }
}

/// Accept_Mode false: an nftables table that drops packets addressed to the group's VIPs
/// (neighbour discovery still passes), in place for the daemon's whole run. A Backup does
/// not hold the VIPs, so the rules only matter while this node is Master.
mod accept_mode {
    use std::{io::Write as _, process::Stdio};

    use anyhow::{Context as _, bail};
    use tracing::warn;

    use crate::config::Vrrp;

    fn table(instance: &str) -> String {
        let clean: String = instance
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("vipd_{clean}")
    }

    fn nft(script: &str) -> anyhow::Result<()> {
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft (accept = false needs nftables)")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// Installs the drop rules for groups with `accept = false` (not the owner's).
    pub fn install(instance: &str, groups: &[Vrrp]) -> anyhow::Result<()> {
        remove(instance);
        let vips: Vec<String> = groups
            .iter()
            .filter(|g| !g.accept && g.priority != 255)
            .flat_map(|g| g.vips.iter().map(|v| v.addr))
            .map(|a| match a {
                std::net::IpAddr::V4(a) => format!("ip daddr {a} drop"),
                std::net::IpAddr::V6(a) => format!(
                    "ip6 daddr {a} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept\n    ip6 daddr {a} drop"
                ),
            })
            .collect();
        if vips.is_empty() {
            return Ok(());
        }
        let t = table(instance);
        nft(&format!(
            "table inet {t} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    {}\n  }}\n}}\n",
            vips.join("\n    ")
        ))
        .context("installing the accept = false rules")
    }

    /// Removes the table, if any.
    pub fn remove(instance: &str) {
        let t = table(instance);
        let exists = std::process::Command::new("nft")
            .args(["list", "table", "inet", &t])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if exists && let Err(e) = nft(&format!("delete table inet {t}\n")) {
            warn!("removing the accept = false rules: {e}");
        }
    }
}
