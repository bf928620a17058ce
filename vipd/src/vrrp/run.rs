//! VRRP mode's slow path: start-up, then everything around the groups that does not decide
//! failover speed — making groups (advert source, virtual MAC, multicast joins, nftables),
//! deciding which may run (carrier, health checks), SIGHUP reloads, the control socket,
//! metrics, hooks and logs. The groups themselves run on the fast path ([`super::fast`]).
//!
//! A Backup is not woken per advert: the XDP program records the Master's last advert in
//! `VRRP_SEEN`; when the Master_Down_Timer fires, the fast path reads that timestamp and,
//! if the Master was heard within Master_Down_Interval, re-arms from it. Only a priority-0
//! advert, a new Master, or (when Master) an outranking advert raises a notice.
//!
//! Log lines: `vrrp state vrid=… family=… from=… to=… reason=…` on every transition
//! (reasons: startup, master_down, priority_zero, preempted, shutdown, link_down, link_up,
//! check_failed, check_passed, reload), and the `vipd::timeline` events `master_down`,
//! `address_added` and `first_announce` (CLOCK_MONOTONIC nanoseconds).

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::{sync::mpsc::UnboundedSender, task::JoinHandle};
use tracing::{debug, info, warn};
use vipd_common::maps::{ClaimNotice, XdpConfig, vrrp_key};

use super::{
    fast::{self, COMMANDS, Command, REPORTS, Report},
    fsm::VrrpState,
    group::{
        GroupInfo, Port, bytes_of, describe, join_groups, new_group, source_address, state_name,
    },
    host::HostChanges,
    reload::{self, Change},
};
use crate::{
    announce::Announcer,
    cli::RunArgs,
    clock::monotonic_ns,
    config::{Config, Vrrp},
    conflict::{self, Claimer},
    control::{self, Status},
    fastpath::channel::{self, SlowEnd},
    health,
    holder::Announcements,
    hooks::Hooks,
    ifaddr::{IfAddrs, Outcome},
    metrics::{GroupLabel, Metrics, ReasonLabel},
    netlink::{AddressGone, AddressWatch, CarrierWatch, Link},
    notify::Notifier,
    runtime::{
        Signal, Signals, Stop, answer, check_privileges, claim_interface, clean_up, counters_text,
        hooks_of, join_fast_path, remove_leftovers, serve_metrics,
    },
    xdp::{self, LoadedXdp},
};

/// Everything the slow path acts with.
struct Runtime {
    cfg: Config,
    /// Where a reload reads the configuration from.
    args: RunArgs,
    loaded: LoadedXdp,
    hooks: Hooks,
    metrics: Arc<Metrics>,
    /// The groups, as handed to the fast path, in configuration order.
    groups: Vec<GroupInfo>,
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
    /// Held VIPs, their announcements repeated.
    held: Announcements,
    /// The ARP/NDP watch: other hosts claiming held VIPs.
    watch: conflict::Watch,
    fast: SlowEnd<Command>,
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
    let mut names: Vec<String> = cfg.vrrp.iter().map(|g| g.interface().to_string()).collect();
    names.sort();
    names.dedup();
    // Then: one daemon per interface, every interface claimed before anything on the host
    // changes (leftover VIPs, macvlans, sysctls).
    let mut links = Vec::new();
    let mut claims = Vec::new();
    for name in &names {
        let link = Link::open(name).await?;
        claims.push(claim_interface(&link.name, link.index)?);
        links.push(link);
    }
    let mut host = HostChanges::new(&cfg.instance, cfg.sysctl_file());
    let all = cfg.vrrp_vips();
    let mut ports = BTreeMap::new();
    for link in links {
        let name = link.name.clone();
        remove_leftovers(&link, &all, &cfg.pin_dir()).await?;
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
    let mut made = Vec::new();
    for g in &cfg.vrrp {
        made.push(new_group(&ports[g.interface()], &mut host, g, &all).await?);
    }
    let (mut loaded, rings) = xdp::load(&xdp::XdpSettings {
        interface: &names[0],
        also: &names[1..],
        mode: cfg.xdp_mode,
        pin_dir: &cfg.pin_dir(),
        config: xdp_config(&cfg),
    })?;
    // ARP/NDP from these is this node's own: the interfaces', the groups' virtual MACs.
    for mac in ports
        .values()
        .map(|p| p.link.mac)
        .chain(made.iter().map(|g| g.announcer.mac()))
    {
        loaded.add_own_mac(mac)?;
    }
    for g in &cfg.vrrp {
        set_peers(&mut loaded, g)?;
    }
    let groups: Vec<GroupInfo> = made.iter().map(|g| g.info()).collect();
    let mut joined = Vec::new();
    join_groups(&groups, &mut joined)?;
    host.accept_rules(&cfg.vrrp)?;
    let indices: Vec<u32> = ports.values().map(|p| p.link.index).collect();
    let mut carrier_watch = CarrierWatch::open_many(&indices)?;
    let mut gone = AddressWatch::open()?;

    let io = fast::Io {
        groups: loaded.open_vrrp_groups()?,
        seen: loaded.open_vrrp_seen()?,
        notices: rings.vrrp,
        fence: loaded.open_fence()?,
        addrs: IfAddrs::open().context("opening a netlink socket")?,
    };
    let burst = cfg.announce_burst;
    let (fast, mut reports, thread) =
        channel::start(cfg.fast_path_priority(), (COMMANDS, REPORTS), move |end| {
            fast::run(io, end, burst)
        })
        .context("starting the fast path")?;
    for g in made {
        fast.ask(Command::Add(Box::new(g))).await;
    }
    let metrics = Arc::new(Metrics::new());
    serve_metrics(cfg.metrics, &metrics, &loaded.counters, &fast).await?;
    let (health_tx, mut health_rx) = tokio::sync::mpsc::unbounded_channel();
    let health_tasks = health::spawn(&cfg.checks, 0, health_tx.clone());
    let mut signals = Signals::install()?;
    let mut refresh =
        tokio::time::interval(cfg.announce_refresh.unwrap_or(Duration::from_secs(86_400)));
    refresh.reset();
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));

    info!(
        node = cfg.node_id,
        interfaces = ?names,
        groups = ?cfg.vrrp.iter().map(describe).collect::<Vec<_>>(),
        "vipd started in VRRP mode"
    );
    let notifier = Notifier::from_env();
    let mut watchdog = tokio::time::interval(notifier.watchdog_period());
    notifier.ready();
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
        held: Announcements::new(
            Arc::clone(&metrics),
            cfg.announce_burst,
            cfg.announce_repeats.clone(),
        ),
        watch: conflict::Watch::new(rings.claims)?,
        cfg,
        args,
        loaded,
        metrics,
        groups,
        ports,
        host,
        joined,
        fast,
    };
    for i in 0..rt.groups.len() {
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
        tokio::select! {
            biased;
            signal = signals.next() => match signal {
                Signal::Stop(why) => break Stop::Asked(why),
                Signal::Reload => rt.reload(&mut reports).await,
            },
            report = reports.recv() => match report {
                Some(r) => rt.on_report(r),
                None => break Stop::Failed("the fast path ended"),
            },
            change = carrier_watch.next_change() => {
                let Some((index, up)) = change else {
                    break Stop::Failed("the kernel closed the link notification socket");
                };
                rt.on_carrier(index, up).await;
            }
            removed = gone.next() => match removed {
                Some(what) => rt.on_address_gone(what).await,
                None => break Stop::Failed("the kernel closed the address notification socket"),
            },
            Some((generation, check, passed)) = health_rx.recv() => {
                if generation == rt.health_generation {
                    rt.on_check(check, passed).await;
                }
            }
            accepted = control.accept() => {
                if let Ok((stream, _)) = accepted {
                    rt.answer_status(stream);
                }
            }
            _ = watchdog.tick() => {
                let wakeups = rt.fast.shared.stats.wakeups.load(Ordering::Relaxed);
                notifier.watchdog(wakeups, || rt.fast.wake());
            }
            _ = refresh.tick() => rt.held.refresh(),
            claims = rt.watch.ring.next() => match claims {
                Ok(notices) => rt.on_claims(&notices),
                Err(e) => {
                    warn!("polling the XDP claim ring: {e}");
                    break Stop::Failed("the XDP claim ring could not be polled");
                }
            },
            _ = housekeeping.tick() => rt.watch.expire(monotonic_ns(), &rt.metrics),
        }
    };

    info!(
        reason = stop_reason.reason(),
        "stopping: priority-0 adverts, releasing VIPs"
    );
    notifier.stopping();
    rt.hooks.node_state("stopping");
    rt.fast.stop();
    join_fast_path(&mut reports, thread, |r| rt.on_report(r)).await;
    let stats = &rt.fast.shared.stats;
    info!(
        xdp_mode = rt.loaded.mode,
        adverts_sent = stats.sent.load(Ordering::Relaxed),
        adverts_late = stats.late.load(Ordering::Relaxed),
        max_late_us = stats.max_late_ns.load(Ordering::Relaxed) / 1000,
        counters = counters_text(&rt.loaded),
        "stopped"
    );
    rt.health_tasks.iter().for_each(JoinHandle::abort);
    let Runtime {
        host,
        loaded,
        cfg,
        hooks,
        ..
    } = rt;
    drop(host);
    clean_up(&loaded.pin_dir, &cfg.instance, &hooks).await;
    stop_reason.outcome()
}

/// Tells the XDP program group `g`'s unicast peers (none: multicast).
fn set_peers(loaded: &mut xdp::LoadedXdp, g: &Vrrp) -> anyhow::Result<()> {
    let peers: Vec<[u8; 16]> = g.unicast_peers.iter().map(|&a| bytes_of(a)).collect();
    loaded
        .set_vrrp_peers(vrrp_key(g.ipv6(), g.vrid), &peers)
        .with_context(|| format!("VRRP group {}: its unicast peers", g.vrid))
}

/// What the XDP program is told in VRRP mode: no heartbeats (`heartbeats` 0), and
/// self-fencing three advert intervals after a Master's last advert (a Backup's
/// Master_Down_Interval, skew aside: when the other routers take over) — of the slowest
/// group, so a Master of a slow group is never fenced while it advertises.
fn xdp_config(cfg: &Config) -> XdpConfig {
    let fence_ns = cfg
        .vrrp
        .iter()
        .map(|g| 3 * g.advert_interval.0.as_nanos() as u64)
        .max()
        .unwrap_or(u64::MAX);
    XdpConfig {
        node_id: cfg.node_id,
        dead_ns: fence_ns,
        ..XdpConfig::default()
    }
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

    /// Asks the fast path to start group `i`.
    async fn start(&mut self, i: usize, reason: &'static str) {
        self.groups[i].started = true;
        let key = self.groups[i].key;
        self.fast.ask(Command::Start { key, reason }).await;
    }

    /// Asks the fast path to stop group `i`.
    async fn stop(&mut self, i: usize, reason: &'static str) {
        self.groups[i].started = false;
        let key = self.groups[i].key;
        self.fast.ask(Command::Stop { key, reason }).await;
    }

    /// Starts or stops each group whose runnability differs from what it was asked.
    async fn apply_runnable(&mut self, reason: &'static str) {
        for i in 0..self.groups.len() {
            match (self.groups[i].started, self.runnable(i)) {
                (true, false) => self.stop(i, reason).await,
                (false, true) => self.start(i, reason).await,
                _ => {}
            }
        }
    }

    /// Logs, counts and hooks what the fast path did.
    fn on_report(&mut self, report: Report) {
        match report {
            Report::Transition {
                key,
                vrid,
                family,
                from,
                to,
                reason,
            } => {
                info!(
                    "vrrp state vrid={vrid} family={family} from={} to={} reason={reason}",
                    state_name(from),
                    state_name(to),
                );
                self.group_hooks(|g| g.key == key)
                    .vrrp_state(vrid, state_name(to));
                self.metrics
                    .vrrp_state
                    .get_or_create(&GroupLabel {
                        vrid: vrid.to_string(),
                        family: family.into(),
                    })
                    .set(to as i64);
                if to == VrrpState::Master {
                    self.metrics
                        .failovers
                        .get_or_create(&ReasonLabel {
                            reason: reason.into(),
                        })
                        .inc();
                }
            }
            Report::MasterDown {
                vrid,
                mono_ns,
                last_seen_ns,
            } => {
                info!(target: "vipd::timeline", event = "master_down", vrid, mono_ns,
                    last_seen_ns, "Master_Down_Timer fired");
            }
            Report::MasterHeard {
                vrid,
                master,
                priority,
                interval_cs,
            } => info!(vrid, master = %master, priority, interval_cs, "vrrp master heard"),
            Report::PriorityZero { vrid, master } => {
                debug!(vrid, master = %master, "the Master is stopping (priority 0)")
            }
            Report::AddressMismatch {
                vrid,
                family,
                from,
                priority,
                ours,
            } => warn!(vrid, family, from = %from, priority,
                "an advert for this VRID lists other addresses than ours ({ours}): another \
                 cluster on the same VRID, or configurations that differ (counted as \
                 vrrp_addr_mismatch; said again at most every 10 s)"),
            Report::Taken {
                vrid,
                announcer,
                list,
            } => {
                for t in &list {
                    self.loaded.set_held(t.vip.addr, true);
                }
                let ipv6 = list.first().is_some_and(|t| t.vip.addr.is_ipv6());
                let hooks = self.group_hooks(|g| (g.cfg.vrid, g.cfg.ipv6()) == (vrid, ipv6));
                self.held.taken(&list, Some(vrid), &announcer, &hooks);
            }
            Report::Restored {
                vrid: _,
                announcer,
                vips,
            } => self.held.restored(&vips, &announcer),
            Report::TakeFailed { vrid, vip, error } => warn!(vrid, "adding {vip}: {error}"),
            Report::Released { vrid, list } => {
                for r in list
                    .iter()
                    .filter(|r| !matches!(r.outcome, Outcome::Failed(_)))
                {
                    self.loaded.set_held(r.vip.addr, false);
                    self.watch.forget(&r.vip.addr);
                }
                let ipv6 = list.first().is_some_and(|r| r.vip.addr.is_ipv6());
                let hooks = self.group_hooks(|g| (g.cfg.vrid, g.cfg.ipv6()) == (vrid, ipv6));
                self.held.released(&list, Some(vrid), &hooks);
            }
            Report::SendFailing {
                vrid,
                interface,
                error,
            } => match error {
                Some(e) => warn!(vrid, interface = %interface, "sending adverts fails: {e}"),
                None => info!(vrid, interface = %interface, "sending adverts works again"),
            },
        }
    }

    /// The hooks for the events of the group `which` finds: `VIPD_INTERFACE` is its
    /// interface.
    fn group_hooks(&self, which: impl Fn(&GroupInfo) -> bool) -> Hooks {
        match self.groups.iter().find(|g| which(g)) {
            Some(g) => self.hooks.on_interface(g.cfg.interface()),
            None => self.hooks.clone(),
        }
    }

    /// Notices of the ARP/NDP watch. A router heard advertising one of our groups is a live
    /// peer (two Masters for a moment: the adverts settle it); anyone else's claim is a
    /// conflict, defended.
    fn on_claims(&mut self, notices: &[ClaimNotice]) {
        let now = monotonic_ns();
        // MAC → (VRID, heard within three of its intervals).
        let routers: BTreeMap<[u8; 6], (u32, bool)> = self
            .loaded
            .vrrp_seen
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, seen)| seen.mac != [0; 6])
            .map(|(key, seen)| {
                let interval = u64::from(seen.max_adver_int_cs) * 10_000_000;
                let live = now.saturating_sub(seen.last_seen_ns) < 3 * interval;
                (seen.mac, (key & 0xff, live))
            })
            .collect();
        for n in notices {
            let claimer = match routers.get(&n.mac) {
                Some((vrid, true)) => Claimer::Peer(*vrid),
                Some((vrid, false)) => Claimer::SilentPeer(*vrid),
                None => Claimer::Unknown,
            };
            self.watch
                .on_notice(now, n, claimer, &mut self.held, &self.metrics, &self.hooks);
        }
    }

    /// Answers a control connection: the groups from the fast path plus the rest.
    fn answer_status(&self, stream: tokio::net::UnixStream) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let asked = self.fast.try_ask(Command::Status(tx)).is_ok();
        let state = if self.carrier.values().all(|up| !up) {
            "fault"
        } else if self.carrier.values().any(|up| !up) {
            "degraded"
        } else if !self.health.healthy() {
            "withdrawn"
        } else {
            "active"
        };
        let mut base = Status {
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
            counters: self
                .loaded
                .counters()
                .iter()
                .map(|(c, v)| (c.name().to_string(), *v))
                .collect(),
            fast_path: Some(self.fast.status()),
            conflicts: self.watch.status(monotonic_ns()),
            carrier: self
                .ports
                .values()
                .map(|p| {
                    let up = self.carrier.get(&p.link.index).copied().unwrap_or(false);
                    (p.link.name.clone(), up)
                })
                .collect(),
            ..Status::default()
        };
        tokio::spawn(async move {
            if asked && let Ok(Ok(vrrp)) = tokio::time::timeout(Duration::from_secs(1), rx).await {
                base.vrrp = vrrp;
            }
            answer(stream, base).await;
        });
    }

    /// SIGHUP: re-reads the configuration and applies what changed ([`reload::plan`]), or
    /// keeps the running configuration and says why. Nothing changes before the new
    /// configuration is known to be usable.
    async fn reload(&mut self, reports: &mut tokio::sync::mpsc::Receiver<Report>) {
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
        if new.checks != self.cfg.checks {
            self.health = self.health.carry_over(&self.cfg.checks, &new.checks);
            self.health_generation += 1;
            self.health_tasks.iter().for_each(JoinHandle::abort);
            self.health_tasks =
                health::spawn(&new.checks, self.health_generation, self.health_tx.clone());
        }
        self.hooks = self.hooks.reconfigured(hooks_of(&new));
        self.held
            .reconfigure(new.announce_burst, new.announce_repeats.clone());
        self.cfg = new;
        if let Err(e) = self.loaded.set_config(xdp_config(&self.cfg)) {
            warn!("reload: {e:#}");
        }

        // 1. Every removal first (so a VIP that moves to another group is not deleted
        //    after that group added it): groups that go away or restart stop; updated
        //    Masters remove the VIPs they drop. The fast path takes commands in order.
        let mut added = BTreeMap::new();
        for change in &changes {
            match change {
                Change::Remove { old } => self.retire(*old, true, reports).await,
                Change::Restart { old, .. } => self.retire(*old, false, reports).await,
                Change::Update { old, new } => {
                    let (remove, add) = reload::vip_changes(&self.groups[*old].cfg.vips, &new.vips);
                    let key = self.groups[*old].key;
                    self.fast
                        .ask(Command::ReleaseVips { key, vips: remove })
                        .await;
                    added.insert(*old, add);
                }
                Change::Keep { .. } | Change::Add { .. } => {}
            }
        }
        // 2. The groups in the new order; new and restarted ones made afresh.
        let all = self.cfg.vrrp_vips();
        let mut old: Vec<Option<GroupInfo>> = std::mem::take(&mut self.groups)
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
                            let added = self.loaded.add_own_mac(g.announcer.mac());
                            if let Err(e) = added.and_then(|()| set_peers(&mut self.loaded, &new)) {
                                warn!(vrid = new.vrid, "{e:#}");
                            }
                            fresh.push(self.groups.len());
                            self.groups.push(g.info());
                            self.fast.ask(Command::Add(Box::new(g))).await;
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
            info!(
                vrid = new.vrid,
                family = new.family(),
                "VRRP group updated: {}",
                describe(&new)
            );
            if let Err(e) = set_peers(&mut self.loaded, &new) {
                warn!(vrid = new.vrid, "{e:#}");
            }
            self.groups[i].cfg = new.clone();
            let key = self.groups[i].key;
            self.fast
                .ask(Command::Update {
                    key,
                    cfg: Box::new(new),
                    add,
                })
                .await;
        }
        if let Err(e) = join_groups(&self.groups, &mut self.joined) {
            warn!("{e:#}");
        }
        if let Err(e) = self.host.accept_rules(&self.cfg.vrrp) {
            warn!("{e:#}");
        }
        let vmac_ports: Vec<&str> = self
            .groups
            .iter()
            .filter(|g| g.cfg.vmac && !g.cfg.ipv6())
            .map(|g| g.cfg.interface())
            .collect();
        self.host.keep_arp_settings(&vmac_ports);
        info!(
            groups = ?self.cfg.vrrp.iter().map(describe).collect::<Vec<_>>(),
            "configuration reloaded"
        );
        self.apply_runnable("reload").await;
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

    /// Stops group `i` for a reload (priority 0 if Master, VIPs released) and waits until
    /// the fast path has let it go; removes its virtual MAC and, if it is `gone` from the
    /// configuration, forgets it. Reports keep being taken meanwhile.
    async fn retire(
        &mut self,
        i: usize,
        gone: bool,
        reports: &mut tokio::sync::mpsc::Receiver<Report>,
    ) {
        let (done, mut wait) = tokio::sync::oneshot::channel();
        let key = self.groups[i].key;
        self.fast.ask(Command::Retire { key, done }).await;
        loop {
            tokio::select! {
                _ = &mut wait => break,
                r = reports.recv() => match r {
                    Some(r) => self.on_report(r),
                    None => break,
                },
            }
        }
        let cfg = self.groups[i].cfg.clone();
        if cfg.vmac {
            self.host
                .remove_macvlan(&cfg.vmac_name(self.groups[i].ifindex));
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
        let _ = self.loaded.set_vrrp_peers(key, &[]);
        self.metrics.vrrp_state.remove(&GroupLabel {
            vrid: g.vrid.to_string(),
            family: g.family().into(),
        });
        self.cfg.vrrp.retain(|c| vrrp_key(c.ipv6(), c.vrid) != key);
    }

    /// An address left an interface: if it is one of the groups' VIPs, its Master adds it
    /// again (a Backup's own releases are not held, so they are left alone).
    async fn on_address_gone(&mut self, what: AddressGone) {
        let command = match what {
            AddressGone::Address(index, a) if self.cfg.vrrp_vips().iter().any(|v| v.addr == a) => {
                Command::Restore {
                    ifindex: Some(index),
                    addrs: Some(vec![a]),
                }
            }
            AddressGone::Address(..) => return,
            AddressGone::Unknown => Command::Restore {
                ifindex: None,
                addrs: None,
            },
        };
        self.fast.ask(command).await;
    }

    async fn on_carrier(&mut self, index: u32, up: bool) {
        if self.carrier.get(&index) == Some(&up) {
            return;
        }
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
        self.apply_runnable(if up { "link_up" } else { "link_down" })
            .await;
    }

    async fn on_check(&mut self, index: usize, passed: bool) {
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
        self.apply_runnable(reason).await;
    }
}
