//! The VRRP-mode daemon: one [`VirtualRouter`](super::fsm::VirtualRouter) per configured
//! group, driven by the XDP program's notices, its own timers, carrier changes, health
//! checks and signals.
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

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::mpsc::UnboundedSender,
    task::JoinHandle,
    time::{Instant, sleep_until},
};
use tracing::{debug, info, warn};
use vipd_common::{
    maps::{VRRP_BACKUP, VRRP_INITIALIZE, VRRP_MASTER, VrrpGroup, VrrpNotice, XdpConfig, vrrp_key},
    vrrp::{self, Notice},
};

use super::{
    advert::{self, AdvertSpec},
    fsm::{Heard, VrrpAction, VrrpEvent, VrrpState},
    group::{
        Group, Port, address_bytes, bytes_of, describe, ip_of, join_groups, new_group,
        source_address, state_name,
    },
    host::HostChanges,
    reload::{self, Change},
};
use crate::{
    announce::Announcer,
    cli::RunArgs,
    clock::monotonic_ns,
    config::{Config, Vrrp},
    control::{self, Status, VrrpStatus},
    health,
    hooks::Hooks,
    metrics::{self, GroupLabel, Metrics, ReasonLabel, VipLabel},
    netlink::{CarrierWatch, Link},
    runtime::{answer, check_privileges, remove_leftovers},
    vip::Vip,
    xdp::{self, LoadedXdp},
};

/// Priority-0 adverts sent on a graceful stop (the RFC sends one; a second covers a loss).
const STOP_ADVERTS: usize = 2;

/// Everything the loop acts with.
struct Runtime {
    cfg: Config,
    /// Where a reload reads the configuration from.
    args: RunArgs,
    loaded: LoadedXdp,
    hooks: Hooks,
    metrics: Arc<Metrics>,
    groups: Vec<Group>,
    /// The interfaces groups run on, by name (fixed for the daemon's life).
    ports: BTreeMap<String, Port>,
    /// What the daemon changed on the host besides addresses, undone at the end.
    host: HostChanges,
    /// Sockets holding the VRRP multicast memberships: (ifindex, IPv6, socket).
    joined: Vec<(u32, bool, std::net::UdpSocket)>,
    /// Carrier of each interface (by index): a group runs while its interface has carrier
    /// and every health check passes.
    carrier: BTreeMap<u32, bool>,
    health: health::Tracker,
    /// Results of other generations of checks (before a reload) are ignored.
    health_generation: u64,
    health_tasks: Vec<JoinHandle<()>>,
    health_tx: UnboundedSender<(u64, usize, bool)>,
}

/// Runs the configured VRRP groups until SIGTERM or SIGINT, then stops them (priority-0
/// adverts, VIPs removed). SIGHUP reloads the configuration from `args` (see [`reload`]).
/// Host changes are undone however it ends.
///
/// [`reload`]: super::reload
pub async fn run(cfg: Config, args: RunArgs) -> anyhow::Result<()> {
    check_privileges()?;
    // First: a second daemon of the same instance must stop before it touches anything.
    let control = control::bind(&cfg.instance)?;
    let mut host = HostChanges::new(&cfg.instance);
    let mut names: Vec<String> = cfg.vrrp.iter().map(|g| g.interface().to_string()).collect();
    names.sort();
    names.dedup();
    let all = cfg.vrrp_vips();
    let mut ports = BTreeMap::new();
    for name in &names {
        let link = Link::open(name).await?;
        remove_leftovers(&link, &all).await?;
        let announcer = Announcer::open(link.index, link.mac).context(
            "opening an AF_PACKET socket for adverts and gratuitous ARP (needs CAP_NET_RAW)",
        )?;
        ports.insert(
            name.clone(),
            Port {
                link,
                announcer: Arc::new(announcer),
            },
        );
    }
    let mut groups = Vec::new();
    for g in &cfg.vrrp {
        groups.push(new_group(&ports[g.interface()], &mut host, g, &all).await?);
    }
    let (loaded, rings) = xdp::load(&xdp::XdpSettings {
        interface: &names[0],
        also: &names[1..],
        mode: cfg.xdp_mode,
        pin_dir: &cfg.pin_dir(),
        // No heartbeats in VRRP mode: port 0 matches nothing.
        config: XdpConfig {
            node_id: cfg.node_id,
            ..XdpConfig::default()
        },
    })?;
    let mut joined = Vec::new();
    join_groups(&groups, &mut joined)?;
    host.accept_rules(&cfg.vrrp)?;
    let indices: Vec<u32> = ports.values().map(|p| p.link.index).collect();
    let mut carrier_watch = CarrierWatch::open_many(&indices)?;
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
    let health_tasks = health::spawn(&cfg.checks, 0, health_tx.clone());
    let mut sigterm = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing a SIGHUP handler")?;
    // SAFETY: the ring buffer owns its fd and moves into the AsyncFd.
    let mut notices = unsafe { AsyncFd::register_with_interest(rings.vrrp, Interest::READABLE) }
        .map_err(std::io::Error::from)
        .context("polling the XDP VRRP ring buffer")?;

    info!(
        node = cfg.node_id,
        interfaces = ?names,
        groups = ?cfg.vrrp.iter().map(describe).collect::<Vec<_>>(),
        "vipd started in VRRP mode"
    );
    let mut rt = Runtime {
        hooks: hooks_of(&cfg),
        health: health::Tracker::new(&cfg.checks),
        health_generation: 0,
        health_tasks,
        health_tx,
        carrier: ports
            .values()
            .map(|p| (p.link.index, p.link.carrier))
            .collect(),
        cfg,
        args,
        loaded,
        metrics,
        groups,
        ports,
        host,
        joined,
    };
    for i in 0..rt.groups.len() {
        rt.publish(i);
        if rt.runnable(i) {
            rt.start(i, "startup").await;
        } else {
            let g = &rt.groups[i];
            let why = if rt.carrier.get(&g.ifindex) == Some(&true) {
                "until every health check has passed"
            } else {
                "no carrier on its interface"
            };
            warn!(vrid = g.cfg.vrid, "not starting: {why}");
        }
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
            change = carrier_watch.next_change() => {
                let Some((index, up)) = change else {
                    break "the kernel closed the link notification socket";
                };
                rt.on_carrier(index, up).await;
            }
            Some((generation, check, passed)) = health_rx.recv() => {
                if generation == rt.health_generation {
                    rt.on_check(check, passed).await;
                }
            }
            _ = sighup.recv() => rt.reload().await,
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
    for i in 0..rt.groups.len() {
        rt.stop(i, "shutdown").await;
    }
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
    rt.health_tasks.iter().for_each(JoinHandle::abort);
    let Runtime {
        host, loaded, cfg, ..
    } = rt;
    drop(host);
    xdp::remove_pins(&loaded.pin_dir);
    let _ = std::fs::remove_file(control::socket_path(&cfg.instance));
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

fn hooks_of(cfg: &Config) -> Hooks {
    Hooks::new(
        cfg.hook.clone(),
        cfg.hook_timeout,
        cfg.node_id,
        &cfg.instance,
        &cfg.interface,
    )
}

impl Runtime {
    /// Whether group `i` may run: carrier on its interface, every health check passing.
    fn runnable(&self, i: usize) -> bool {
        self.carrier
            .get(&self.groups[i].ifindex)
            .copied()
            .unwrap_or(false)
            && self.health.healthy()
    }

    fn runnable_all(&self) -> Vec<bool> {
        (0..self.groups.len()).map(|i| self.runnable(i)).collect()
    }

    /// What the XDP program last recorded of group `i`'s Master, if heard since the group
    /// started or its Master last sent priority 0.
    fn heard(&self, i: usize, now: u64) -> Option<Heard> {
        let g = &self.groups[i];
        let seen = self.loaded.vrrp_seen.get(&g.key, 0).ok()?;
        (seen.last_seen_ns > g.stopped_at).then(|| Heard {
            at: seen.last_seen_ns.min(now),
            priority: seen.priority,
            max_adver_int_cs: seen.max_adver_int_cs,
            source: ip_of(&seen.master, g.cfg.ipv6()),
        })
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
            addr_count: g.vips.len().min(255) as u8,
            ifindex: g.ifindex,
            addr_fingerprint: vrrp::addresses_fingerprint(&address_bytes(&g.vips)),
            _pad: [0; 2],
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

    fn send_advert(&mut self, i: usize, priority: u8) {
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
        let sent = g.announcer.send(&frame, proto);
        let failing = sent.is_err();
        if let Err(e) = sent
            && !g.send_failing
        {
            warn!(vrid = g.cfg.vrid, interface = %g.link.name, "sending adverts fails: {e}");
        }
        self.groups[i].send_failing = failing;
    }

    async fn take(&mut self, i: usize) {
        let vips = self.groups[i].cfg.vips.clone();
        self.take_vips(i, &vips).await;
    }

    /// Adds `vips` as group `i`'s, announcing each at once and on the repeat schedule.
    async fn take_vips(&mut self, i: usize, vips: &[Vip]) {
        let (link, announcer) = (
            self.groups[i].link.clone(),
            Arc::clone(&self.groups[i].announcer),
        );
        for &vip in vips {
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
            let task = tokio::spawn(async move {
                for after in repeats {
                    sleep_until(start + after).await;
                    if announcer.announce(addr).is_ok() {
                        metrics.announcements.inc();
                    }
                }
            });
            self.groups[i].repeats.push((addr, task));
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
        let vips = self.groups[i].cfg.vips.clone();
        self.release_vips(i, &vips).await;
    }

    /// Removes group `i`'s `vips` and stops announcing them.
    async fn release_vips(&mut self, i: usize, vips: &[Vip]) {
        self.groups[i].repeats.retain(|(addr, task)| {
            let stop = vips.iter().any(|v| v.addr == *addr);
            if stop {
                task.abort();
            }
            !stop
        });
        let link = self.groups[i].link.clone();
        for &vip in vips {
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
        // Nothing heard before the group (re)started counts.
        if self.groups[i].router.state == VrrpState::Initialize
            || n.ts_ns < self.groups[i].stopped_at
        {
            return;
        }
        // Notices carry the kernel's arrival time; never feed a time in the future.
        let at = n.ts_ns.min(monotonic_ns());
        let g = &mut self.groups[i];
        match kind {
            Notice::AddressMismatch => {
                warn!(vrid = g.cfg.vrid, family = g.cfg.family(), from = %source,
                    priority = n.priority,
                    "an advert for this VRID lists other addresses than ours ({}): another \
                     cluster on the same VRID, or configurations that differ (counted as \
                     vrrp_addr_mismatch; said again at most every 10 s)",
                    g.cfg.vips.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "));
                return;
            }
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
    /// record of the Master's last advert first ([`expire`](super::fsm::VirtualRouter::expire)).
    async fn on_timers(&mut self, now: u64) {
        for i in 0..self.groups.len() {
            let due = self.groups[i]
                .router
                .next_deadline()
                .is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            let before = self.groups[i].router.state;
            let heard = (before == VrrpState::Backup)
                .then(|| self.heard(i, now))
                .flatten();
            let snapshot = self.groups[i].router.clone();
            let mut actions = self.groups[i].router.expire(now, heard);
            // The record the timer was judged against.
            let mut judged = heard;
            if before == VrrpState::Backup && self.groups[i].router.state == VrrpState::Master {
                // Tell the XDP program at once, then look again: an advert that arrived
                // while we decided was judged as a Backup's and only recorded.
                self.publish(i);
                let late = self
                    .heard(i, now)
                    .filter(|l| heard.is_none_or(|h| l.at > h.at));
                if let Some(late) = late {
                    judged = Some(late);
                    let g = &mut self.groups[i];
                    g.router = snapshot;
                    actions = g.router.expire(now, Some(late));
                    if g.router.state == VrrpState::Backup {
                        self.publish(i);
                    }
                }
            }
            let g = &mut self.groups[i];
            match (before, g.router.state) {
                (VrrpState::Backup, VrrpState::Master) => {
                    // A Skew_Time after priority 0 keeps that reason; any other expiry
                    // (also right after stepping down) is the Master going silent.
                    if g.reason != "priority_zero" {
                        g.reason = "master_down";
                    }
                    info!(target: "vipd::timeline", event = "master_down", vrid = g.cfg.vrid,
                        mono_ns = now, last_seen_ns = heard.map_or(0, |h| h.at),
                        "Master_Down_Timer fired");
                    g.master = None;
                }
                (VrrpState::Backup, VrrpState::Backup) => {
                    // Re-armed from the kernel's record: the Master is alive.
                    if let Some(h) = judged {
                        g.master = Some((h.source, h.priority));
                        g.reason = "master_down";
                    }
                }
                _ => {}
            }
            self.after(i, before, actions).await;
        }
    }

    /// Starts group `i` (Initialize → Backup, or Master for the owner).
    async fn start(&mut self, i: usize, reason: &'static str) {
        let now = monotonic_ns();
        let g = &mut self.groups[i];
        g.reason = reason;
        // What the XDP program heard before is void: judge the Master afresh.
        g.stopped_at = now;
        g.master = None;
        // Safe while the map still says Initialize (the XDP program ignores adverts then):
        // the first advert after the start is news, and Master_Adver_Interval is learnt.
        let key = g.key;
        let _ = self.loaded.vrrp_seen.remove(&key);
        self.feed(i, VrrpEvent::Startup, now).await;
    }

    /// Stops group `i`: a Master sends priority 0 and releases its VIPs.
    async fn stop(&mut self, i: usize, reason: &'static str) {
        let was_master = self.groups[i].router.state == VrrpState::Master;
        self.groups[i].reason = reason;
        self.feed(i, VrrpEvent::Shutdown, monotonic_ns()).await;
        if was_master {
            for _ in 1..STOP_ADVERTS {
                self.send_advert(i, 0);
            }
        }
        self.groups[i].master = None;
    }

    /// Starts or stops each group whose runnability changed from `was`.
    async fn apply_runnable(&mut self, was: Vec<bool>, reason: &'static str) {
        for (i, was) in was.into_iter().enumerate() {
            match (was, self.runnable(i)) {
                (true, false) => self.stop(i, reason).await,
                (false, true) => self.start(i, reason).await,
                _ => {}
            }
        }
    }

    /// SIGHUP: re-reads the configuration and applies what changed ([`reload::plan`]), or
    /// keeps the running configuration and says why. Nothing changes before the new
    /// configuration is known to be usable.
    async fn reload(&mut self) {
        let new = match self.args.load() {
            Ok(new) => new,
            Err(e) => {
                warn!("reload rejected, keeping the running configuration: {e}");
                return;
            }
        };
        let running: Vec<Vrrp> = self.groups.iter().map(|g| g.cfg.clone()).collect();
        let changes = reload::plan(&running, &new.vrrp);
        if let Err(e) = self.check_reload(&new, &changes).await {
            warn!("reload rejected, keeping the running configuration: {e}");
            return;
        }
        if new == self.cfg {
            info!("reload: configuration unchanged");
            return;
        }
        let was: BTreeMap<u32, bool> = (0..self.groups.len())
            .map(|i| (self.groups[i].key, self.runnable(i)))
            .collect();
        if new.checks != self.cfg.checks {
            self.health = self.health.carry_over(&self.cfg.checks, &new.checks);
            self.health_generation += 1;
            self.health_tasks.iter().for_each(JoinHandle::abort);
            self.health_tasks =
                health::spawn(&new.checks, self.health_generation, self.health_tx.clone());
        }
        self.hooks = hooks_of(&new);
        self.cfg = new;

        // 1. Every removal first, while the indices hold (so a VIP that moves to another
        //    group is not deleted after that group added it): groups that go away or
        //    restart stop; updated Masters remove the VIPs they drop.
        let mut added = BTreeMap::new();
        for change in &changes {
            match change {
                Change::Remove { old } => self.retire(*old, true).await,
                Change::Restart { old, .. } => self.retire(*old, false).await,
                Change::Update { old, new } => {
                    let (remove, add) = reload::vip_changes(&self.groups[*old].cfg.vips, &new.vips);
                    if self.groups[*old].router.state == VrrpState::Master {
                        self.release_vips(*old, &remove).await;
                    }
                    added.insert(*old, add);
                }
                Change::Keep { .. } | Change::Add { .. } => {}
            }
        }
        // 2. The groups in the new order; new and restarted ones made afresh.
        let all = self.cfg.vrrp_vips();
        let mut old: Vec<Option<Group>> = std::mem::take(&mut self.groups)
            .into_iter()
            .map(Some)
            .collect();
        let mut fresh = Vec::new();
        let mut updated = Vec::new();
        for change in changes {
            match change {
                Change::Keep { old: i } => self.groups.extend(old[i].take()),
                Change::Update { old: i, new } => {
                    updated.push((self.groups.len(), new, added.remove(&i).unwrap_or_default()));
                    self.groups.extend(old[i].take());
                }
                Change::Restart { new, .. } | Change::Add { new } => {
                    let port = &self.ports[new.interface()];
                    match new_group(port, &mut self.host, &new, &all).await {
                        Ok(g) => {
                            fresh.push(self.groups.len());
                            self.groups.push(g);
                        }
                        Err(e) => {
                            warn!(vrid = new.vrid, "VRRP group not started: {e:#}");
                            self.forget(&new);
                        }
                    }
                }
                Change::Remove { .. } => {}
            }
        }
        // 3. Additions: updated groups take their new settings (a Master adds its new VIPs
        //    and advertises at once); new groups start.
        for (i, new, add) in updated {
            self.update(i, new, &add).await;
        }
        if let Err(e) = join_groups(&self.groups, &mut self.joined) {
            warn!("{e:#}");
        }
        if let Err(e) = self.host.accept_rules(&self.cfg.vrrp) {
            warn!("{e:#}");
        }
        info!(
            groups = ?self.cfg.vrrp.iter().map(describe).collect::<Vec<_>>(),
            "configuration reloaded"
        );
        for &i in &fresh {
            self.publish(i);
        }
        let was = (0..self.groups.len())
            .map(|i| !fresh.contains(&i) && was.get(&self.groups[i].key) == Some(&true))
            .collect();
        self.apply_runnable(was, "reload").await;
    }

    /// Why `new` cannot be applied by a reload, if it cannot: a change that needs a
    /// restart, or a new or restarted group without an address to send adverts from.
    async fn check_reload(&self, new: &Config, changes: &[Change]) -> anyhow::Result<()> {
        if let Some(what) = self.cfg.needs_restart(new) {
            bail!("changing {what} needs a restart");
        }
        if let Some(g) = new
            .vrrp
            .iter()
            .find(|g| !self.ports.contains_key(g.interface()))
        {
            bail!(
                "VRID {} on {}: a group on a new interface needs a restart",
                g.vrid,
                g.interface()
            );
        }
        let all = new.vrrp_vips();
        for change in changes {
            if let Change::Add { new: g } | Change::Restart { new: g, .. } = change {
                let addresses = self.ports[g.interface()].link.addresses().await?;
                source_address(&addresses, g, &all)
                    .with_context(|| format!("VRRP group {} on {}", g.vrid, g.interface()))?;
            }
        }
        Ok(())
    }

    /// Stops group `i` for a reload (priority 0 if Master, VIPs released) and, if it is
    /// `gone` from the configuration, forgets it.
    async fn retire(&mut self, i: usize, gone: bool) {
        if self.groups[i].router.state != VrrpState::Initialize {
            self.stop(i, "reload").await;
        }
        let cfg = self.groups[i].cfg.clone();
        if cfg.vmac {
            self.host.remove_macvlan(&cfg.vmac_name());
        }
        if gone {
            self.forget(&cfg);
            info!(vrid = cfg.vrid, family = cfg.family(), "VRRP group removed");
        }
    }

    /// Removes what the XDP program and the metrics know of group `g`, and the group from
    /// the running configuration (so a later reload that lists it again starts it).
    fn forget(&mut self, g: &Vrrp) {
        let key = vrrp_key(g.ipv6(), g.vrid);
        let _ = self.loaded.vrrp_groups.remove(&key);
        let _ = self.loaded.vrrp_seen.remove(&key);
        self.metrics.vrrp_state.remove(&GroupLabel {
            vrid: g.vrid.to_string(),
            family: g.family().into(),
        });
        self.cfg.vrrp.retain(|c| vrrp_key(c.ipv6(), c.vrid) != key);
    }

    /// Gives group `i` the settings of `new` in place
    /// ([`reconfigure`](super::fsm::VirtualRouter::reconfigure)): a Master keeps its state,
    /// adds `add` (the VIPs it dropped are already gone) and advertises the new values at
    /// once.
    async fn update(&mut self, i: usize, new: Vrrp, add: &[Vip]) {
        info!(
            vrid = new.vrid,
            family = new.family(),
            "VRRP group updated: {}",
            describe(&new)
        );
        let g = &mut self.groups[i];
        g.vips = new.vips.iter().map(|v| v.addr).collect();
        let actions =
            g.router
                .reconfigure(new.priority, new.interval_cs(), new.preempt, monotonic_ns());
        g.cfg = new;
        let state = g.router.state;
        self.publish(i);
        if state == VrrpState::Master {
            self.take_vips(i, add).await;
        }
        self.after(i, state, actions).await;
    }

    async fn on_carrier(&mut self, index: u32, up: bool) {
        if self.carrier.get(&index) == Some(&up) {
            return;
        }
        let was = self.runnable_all();
        self.carrier.insert(index, up);
        let name = self
            .ports
            .iter()
            .find(|(_, p)| p.link.index == index)
            .map_or(String::new(), |(name, _)| name.clone());
        if up {
            info!(interface = %name, "carrier back");
        } else {
            warn!(interface = %name, "carrier lost: leaving its VRRP groups");
        }
        self.apply_runnable(was, if up { "link_up" } else { "link_down" })
            .await;
    }

    async fn on_check(&mut self, index: usize, passed: bool) {
        let was = self.runnable_all();
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
                    interface: g.cfg.interface().into(),
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
        let state = if self.carrier.values().any(|up| !up) {
            "fault"
        } else if !self.health.healthy() {
            "withdrawn"
        } else {
            "active"
        };
        Status {
            node_id: self.cfg.node_id,
            instance: self.cfg.instance.clone(),
            interface: self
                .groups
                .iter()
                .map(|g| g.cfg.interface())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(","),
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
