//! The VRRP groups' slow path: start-up, then everything around the groups that does not
//! decide failover speed — making groups (advert source, virtual MAC, multicast joins,
//! nftables), deciding which may run (carrier, health checks), SIGHUP reloads, status,
//! metrics, hooks and logs. The groups themselves run on the fast path ([`super::fast`]);
//! the daemon's shell ([`crate::daemon`]) owns what they share with a pool.
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
use aya::maps::{MapData, RingBuf};
use tracing::{debug, info, warn};
use vipd_common::maps::{ClaimNotice, fence_slot_vrrp, vrrp_key};

use super::{
    fast::{self, COMMANDS, Command, REPORTS, Report},
    fsm::VrrpState,
    group::{
        Group, GroupInfo, Port, bytes_of, describe, join_groups, new_group, source_address,
        state_name,
    },
    host::HostChanges,
    reload::{self, Change},
};
use crate::{
    announce::Announcer,
    clock::monotonic_ns,
    config::{Config, Vrrp},
    conflict::Claimer,
    control::{Status, VrrpStatus},
    daemon::Shell,
    fastpath::{
        channel::{self, Shared, SlowEnd},
        sends::SendNotice,
    },
    hooks::Hooks,
    ifaddr::{IfAddrs, Outcome},
    metrics::{GroupLabel, ReasonLabel},
    netlink::{AddressGone, Link},
    runtime::join_fast_path,
    xdp::LoadedXdp,
};

/// The groups, made on the host but not started yet (see [`prepare`]).
pub struct Prepared {
    ports: BTreeMap<String, Port>,
    host: HostChanges,
    made: Vec<Group>,
}

/// Makes every group on the host before the XDP program is loaded: an announcer per
/// interface, each group's advert source and virtual MAC. `links` are the node's
/// interfaces, each groups' among them.
pub async fn prepare(cfg: &Config, links: &BTreeMap<String, Link>) -> anyhow::Result<Prepared> {
    let mut host = HostChanges::new(&cfg.node.instance, cfg.node.sysctl_file());
    let all = cfg.vrrp_vips();
    let mut ports = BTreeMap::new();
    for g in &cfg.vrrp {
        let name = g.interface();
        if ports.contains_key(name) {
            continue;
        }
        let link = links
            .get(name)
            .with_context(|| format!("interface {name} was not opened"))?
            .clone();
        let announcer = Announcer::open(link.index, link.mac).context(
            "opening an AF_PACKET socket for adverts and gratuitous ARP (needs CAP_NET_RAW)",
        )?;
        ports.insert(
            name.to_string(),
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
    Ok(Prepared { ports, host, made })
}

/// Starts the prepared groups' fast path (the groups stay in Initialize until
/// [`Groups::start_groups`]). Returns the slow side, the fast path's reports and its
/// thread.
pub async fn start(
    sh: &mut Shell,
    prepared: Prepared,
    vrrp_events: RingBuf<MapData>,
) -> anyhow::Result<(
    Groups,
    tokio::sync::mpsc::Receiver<Report>,
    std::thread::JoinHandle<()>,
)> {
    let Prepared {
        ports,
        mut host,
        made,
    } = prepared;
    let cfg = &sh.cfg;
    for mac in made.iter().map(|g| g.announcer.mac()) {
        sh.loaded.add_own_mac(mac)?;
    }
    for g in &cfg.vrrp {
        set_peers(&mut sh.loaded, g)?;
    }
    let groups: Vec<GroupInfo> = made.iter().map(|g| g.info()).collect();
    let mut joined = Vec::new();
    join_groups(&groups, &mut joined)?;
    host.accept_rules(&cfg.vrrp)?;
    let io = fast::Io {
        groups: sh.loaded.open_vrrp_groups()?,
        seen: sh.loaded.open_vrrp_seen()?,
        notices: vrrp_events,
        fence: sh.loaded.open_fence()?,
        addrs: IfAddrs::open().context("opening a netlink socket")?,
    };
    let burst = cfg.common.announce_burst;
    let (fast, reports, thread) = channel::start(
        cfg.node.fast_path_priority(),
        (COMMANDS, REPORTS),
        move |end| fast::run(io, end, burst),
    )
    .context("starting the VRRP fast path")?;
    for g in made {
        fast.ask(Command::Add(Box::new(g))).await;
    }
    info!(
        node = cfg.node.id,
        interfaces = ?ports.keys().collect::<Vec<_>>(),
        groups = ?cfg.vrrp.iter().map(describe).collect::<Vec<_>>(),
        conntrack = %sh.notrack.describe(),
        "vipd started: VRRP groups"
    );
    let groups = Groups {
        carrier: ports
            .values()
            .map(|p| (p.link.index, p.link.carrier))
            .collect(),
        groups,
        ports,
        host,
        joined,
        fast,
    };
    Ok((groups, reports, thread))
}

/// The VRRP groups' slow side: what it acts with.
pub struct Groups {
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
    /// Asks the fast path.
    pub fast: SlowEnd<Command>,
}

/// The groups' part of a `vipd status` answer, once their fast path has answered.
pub struct PendingStatus(Option<tokio::sync::oneshot::Receiver<Vec<VrrpStatus>>>);

impl PendingStatus {
    /// Waits (at most 1 s) for the groups' states and writes them into `status`.
    pub async fn fill(self, status: &mut Status) {
        if let Some(rx) = self.0
            && let Ok(Ok(vrrp)) = tokio::time::timeout(Duration::from_secs(1), rx).await
        {
            status.vrrp = vrrp;
        }
    }
}

/// Tells the XDP program group `g`'s unicast peers (none: multicast).
fn set_peers(loaded: &mut LoadedXdp, g: &Vrrp) -> anyhow::Result<()> {
    let peers: Vec<[u8; 16]> = g.unicast_peers.iter().map(|&a| bytes_of(a)).collect();
    loaded
        .set_vrrp_peers(vrrp_key(g.ipv6(), g.vrid), &peers)
        .with_context(|| format!("VRRP group {}: its unicast peers", g.vrid))
}

impl Groups {
    /// Whether group `i` may run: carrier on its interface, every health check passing.
    fn runnable(&self, sh: &Shell, i: usize) -> bool {
        self.carrier
            .get(&self.groups[i].ifindex)
            .copied()
            .unwrap_or(false)
            && sh.runnable()
    }

    /// Asks the fast path to start group `i`.
    async fn start_group(&mut self, i: usize, reason: &'static str) {
        self.groups[i].started = true;
        let key = self.groups[i].key;
        self.fast.ask(Command::Start { key, reason }).await;
    }

    /// Asks the fast path to stop group `i`.
    async fn stop_group(&mut self, i: usize, reason: &'static str) {
        self.groups[i].started = false;
        let key = self.groups[i].key;
        self.fast.ask(Command::Stop { key, reason }).await;
    }

    /// The fast path's thread state, for metrics and the watchdog.
    pub fn fast_path(&self) -> (Arc<Shared>, bool) {
        self.fast.path()
    }

    /// The indices of the interfaces groups run on.
    pub fn ifindices(&self) -> Vec<u32> {
        self.ports.values().map(|p| p.link.index).collect()
    }

    /// Starts each group that may run (carrier, health checks), says why for the others.
    pub async fn start_groups(&mut self, sh: &Shell) {
        for i in 0..self.groups.len() {
            if self.runnable(sh, i) {
                self.start_group(i, "startup").await;
            } else {
                let g = &self.groups[i];
                let why = if self.carrier.get(&g.ifindex) == Some(&true) {
                    "until every health check has passed"
                } else {
                    "no carrier on its interface"
                };
                warn!(vrid = g.cfg.vrid, "not starting: {why}");
            }
        }
    }

    /// Stops: waits for the fast path (told to stop) to send priority-0 adverts and remove
    /// its VIPs, taking its last reports, logs its figures and undoes the host changes.
    pub async fn stop(
        mut self,
        sh: &mut Shell,
        reports: &mut tokio::sync::mpsc::Receiver<Report>,
        thread: std::thread::JoinHandle<()>,
    ) {
        join_fast_path(reports, thread, |r| self.on_report(sh, r)).await;
        let stats = &self.fast.shared.stats;
        info!(
            adverts_sent = stats.sent.load(Ordering::Relaxed),
            adverts_late = stats.late.load(Ordering::Relaxed),
            max_late_us = stats.max_late_ns.load(Ordering::Relaxed) / 1000,
            "VRRP groups stopped"
        );
        drop(self.host);
    }

    /// Starts or stops each group whose runnability differs from what it was asked.
    pub async fn apply_runnable(&mut self, sh: &Shell, reason: &'static str) {
        for i in 0..self.groups.len() {
            match (self.groups[i].started, self.runnable(sh, i)) {
                (true, false) => self.stop_group(i, reason).await,
                (false, true) => self.start_group(i, reason).await,
                _ => {}
            }
        }
    }

    /// Logs, counts and hooks what the fast path did.
    pub fn on_report(&mut self, sh: &mut Shell, report: Report) {
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
                self.group_hooks(sh, |g| g.key == key)
                    .vrrp_state(vrid, state_name(to));
                sh.metrics
                    .vrrp_state
                    .get_or_create(&GroupLabel {
                        vrid: vrid.to_string(),
                        family: family.into(),
                    })
                    .set(to as i64);
                if to == VrrpState::Master {
                    sh.metrics
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
                let ipv6 = list.first().is_some_and(|t| t.vip.addr.is_ipv6());
                for t in &list {
                    sh.loaded
                        .set_held(t.vip.addr, Some(fence_slot_vrrp(ipv6, vrid)));
                }
                let hooks = self.group_hooks(sh, |g| (g.cfg.vrid, g.cfg.ipv6()) == (vrid, ipv6));
                sh.held.taken(&list, Some(vrid), &announcer, &hooks);
            }
            Report::Restored {
                vrid: _,
                announcer,
                vips,
            } => sh.held.restored(&vips, &announcer),
            Report::TakeFailed { vrid, vip, error } => warn!(vrid, "adding {vip}: {error}"),
            Report::Released { vrid, list } => {
                for r in list
                    .iter()
                    .filter(|r| !matches!(r.outcome, Outcome::Failed(_)))
                {
                    sh.loaded.set_held(r.vip.addr, None);
                    sh.watch.forget(&r.vip.addr);
                }
                let ipv6 = list.first().is_some_and(|r| r.vip.addr.is_ipv6());
                let hooks = self.group_hooks(sh, |g| (g.cfg.vrid, g.cfg.ipv6()) == (vrid, ipv6));
                sh.held.released(&list, Some(vrid), &hooks);
            }
            Report::Sends {
                vrid,
                interface,
                notice,
            } => match notice {
                SendNotice::Recovered { .. } => {
                    info!(vrid, interface = %interface, "sending adverts {notice}")
                }
                _ => warn!(vrid, interface = %interface, "sending adverts {notice}"),
            },
        }
    }

    /// The hooks for the events of the group `which` finds: `VIPD_INTERFACE` is its
    /// interface.
    fn group_hooks(&self, sh: &Shell, which: impl Fn(&GroupInfo) -> bool) -> Hooks {
        match self.groups.iter().find(|g| which(g)) {
            Some(g) => sh.hooks.on_interface(g.cfg.interface()),
            None => sh.hooks.clone(),
        }
    }

    /// Notices of the ARP/NDP watch. A router heard advertising one of our groups is a live
    /// peer (two Masters for a moment: the adverts settle it); anyone else's claim is a
    /// conflict, defended.
    pub fn on_claims(&mut self, sh: &mut Shell, notices: &[ClaimNotice]) {
        let now = monotonic_ns();
        // MAC → (VRID, heard within three of its intervals).
        let routers: BTreeMap<[u8; 6], (u32, bool)> = sh
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
            sh.watch
                .on_claim(now, n.into(), claimer, &mut sh.held, &sh.metrics, &sh.hooks);
        }
    }

    /// The groups' part of a `vipd status` answer: asks the fast path for the groups'
    /// states (read by [`PendingStatus::fill`]) and writes what the slow path knows into
    /// `status` — the node's state and fast path unless a pool runs too (then the pool's
    /// are the node's, and this fast path is `vrrp_fast_path`).
    pub fn status(&self, sh: &Shell, status: &mut Status) -> PendingStatus {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let asked = self.fast.try_ask(Command::Status(tx)).is_ok();
        let state = if self.carrier.values().all(|up| !up) {
            "fault"
        } else if self.carrier.values().any(|up| !up) {
            "degraded"
        } else if !sh.health.healthy() {
            "withdrawn"
        } else {
            "active"
        };
        status.state = state.into();
        status.fast_path = Some(self.fast.status());
        status.carrier = self
            .ports
            .values()
            .map(|p| {
                let up = self.carrier.get(&p.link.index).copied().unwrap_or(false);
                (p.link.name.clone(), up)
            })
            .collect();
        PendingStatus(asked.then_some(rx))
    }

    /// What a reload to `new` does to the groups ([`reload::plan`]), or why it cannot be
    /// applied: a group on a new interface, or a new or restarted group without an address
    /// to send adverts from. Nothing changes here.
    pub async fn plan_reload(&self, new: &Config) -> anyhow::Result<Vec<Change>> {
        let running: Vec<Vrrp> = self.groups.iter().map(|g| g.cfg.clone()).collect();
        let changes = reload::plan(&running, &new.vrrp);
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
        for change in &changes {
            if let Change::Add { new: g } | Change::Restart { new: g, .. } = change {
                let addresses = self.ports[g.interface()].link.addresses().await?;
                source_address(&addresses, g, &all)
                    .with_context(|| format!("VRRP group {} on {}", g.vrid, g.interface()))?;
            }
        }
        Ok(changes)
    }

    /// Applies a reload's `changes` (from [`Self::plan_reload`]) once the shell has taken
    /// the new configuration; reports keep being taken meanwhile.
    pub async fn reload(
        &mut self,
        sh: &mut Shell,
        changes: Vec<Change>,
        reports: &mut tokio::sync::mpsc::Receiver<Report>,
    ) {
        // 1. Every removal first (so a VIP that moves to another group is not deleted
        //    after that group added it): groups that go away or restart stop; updated
        //    Masters remove the VIPs they drop. The fast path takes commands in order.
        let mut added = BTreeMap::new();
        for change in &changes {
            match change {
                Change::Remove { old } => self.retire(sh, *old, true, reports).await,
                Change::Restart { old, .. } => self.retire(sh, *old, false, reports).await,
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
        let all = sh.cfg.vrrp_vips();
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
                            let added = sh.loaded.add_own_mac(g.announcer.mac());
                            if let Err(e) = added.and_then(|()| set_peers(&mut sh.loaded, &new)) {
                                warn!(vrid = new.vrid, "{e:#}");
                            }
                            fresh.push(self.groups.len());
                            self.groups.push(g.info());
                            self.fast.ask(Command::Add(Box::new(g))).await;
                        }
                        Err(e) => {
                            warn!(vrid = new.vrid, "VRRP group not started: {e:#}");
                            self.forget(sh, &new);
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
            if let Err(e) = set_peers(&mut sh.loaded, &new) {
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
        if let Err(e) = self.host.accept_rules(&sh.cfg.vrrp) {
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
            groups = ?sh.cfg.vrrp.iter().map(describe).collect::<Vec<_>>(),
            "VRRP groups reloaded"
        );
        self.apply_runnable(sh, "reload").await;
    }

    /// Stops group `i` for a reload (priority 0 if Master, VIPs released) and waits until
    /// the fast path has let it go; removes its virtual MAC and, if it is `gone` from the
    /// configuration, forgets it. Reports keep being taken meanwhile.
    async fn retire(
        &mut self,
        sh: &mut Shell,
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
                    Some(r) => self.on_report(sh, r),
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
            self.forget(sh, &cfg);
            info!(vrid = cfg.vrid, family = cfg.family(), "VRRP group removed");
        }
    }

    /// Removes what the XDP program and the metrics know of group `g`, and the group from
    /// the running configuration (so a later reload that lists it again starts it).
    fn forget(&mut self, sh: &mut Shell, g: &Vrrp) {
        let key = vrrp_key(g.ipv6(), g.vrid);
        let _ = sh.loaded.vrrp_groups.remove(&key);
        let _ = sh.loaded.vrrp_seen.remove(&key);
        let _ = sh.loaded.set_vrrp_peers(key, &[]);
        sh.metrics.vrrp_state.remove(&GroupLabel {
            vrid: g.vrid.to_string(),
            family: g.family().into(),
        });
        sh.cfg.vrrp.retain(|c| vrrp_key(c.ipv6(), c.vrid) != key);
    }

    /// An address left an interface: if it is one of the groups' VIPs, its Master adds it
    /// again (a Backup's own releases are not held, so they are left alone).
    pub async fn on_address_gone(&mut self, sh: &Shell, what: &AddressGone) {
        let command = match *what {
            AddressGone::Address(index, a) if sh.cfg.vrrp_vips().iter().any(|v| v.addr == a) => {
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

    pub async fn on_carrier(&mut self, sh: &Shell, index: u32, up: bool) {
        // Another interface (the pool's), or no change.
        let Some(was) = self.carrier.get_mut(&index) else {
            return;
        };
        if *was == up {
            return;
        }
        *was = up;
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
        self.apply_runnable(sh, if up { "link_up" } else { "link_down" })
            .await;
    }
}
