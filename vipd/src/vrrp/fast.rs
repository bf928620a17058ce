//! VRRP mode's fast path: the loop on the real-time thread that runs every group's
//! [`VirtualRouter`]: a Master's adverts at their times, a Backup's Master_Down_Timer
//! checked against the kernel's last-heard time, the XDP program's notices, and the
//! takeover itself (VIPs added and announced in batches, no async hop).
//!
//! The slow path ([`super::slow`]) makes groups (addresses, macvlans, nftables), decides
//! which may run (carrier, health checks), reloads, and reports; it asks through
//! [`Command`]s and hears [`Report`]s. Nothing here waits on it.

use std::{
    net::IpAddr,
    os::fd::AsRawFd as _,
    sync::{Arc, atomic::Ordering},
};

use aya::maps::{Array, HashMap, MapData, RingBuf};
use vipd_common::{
    maps::{
        VRRP_BACKUP, VRRP_INITIALIZE, VRRP_MASTER, VrrpGroup, VrrpNotice, VrrpSeen, fence_slot_vrrp,
    },
    vrrp::{self, Notice},
};

use super::{
    advert::{self, AdvertSpec},
    fsm::{Heard, Step, VrrpAction, VrrpEvent, VrrpState},
    group::{Group, address_bytes, bytes_of, ip_of, state_name},
};
use crate::{
    announce::Announcer,
    clock::monotonic_ns,
    config::Vrrp,
    control::VrrpStatus,
    fastpath::{channel::FastEnd, sends::SendNotice},
    holder::{self, Released, Taken},
    ifaddr::{IfAddrs, Outcome},
    vip::Vip,
};

/// Priority-0 adverts sent on a graceful stop (the RFC sends one; a second covers a loss).
const STOP_ADVERTS: usize = 2;
/// Commands handled per wake-up.
pub const COMMANDS: usize = 256;
/// Reports queued for the slow path before the fast path drops them.
pub const REPORTS: usize = 4096;
/// Notices handled per wake-up (a flood must not delay an advert).
const NOTICES_PER_WAKE: usize = 256;

/// Something the slow path asks.
pub enum Command {
    /// A group made by the slow path (in Initialize), to run from now on.
    Add(Box<Group>),
    /// Start the group (Initialize → Backup, or Master for the owner).
    Start { key: u32, reason: &'static str },
    /// Stop the group: a Master sends priority 0 and releases its VIPs.
    Stop { key: u32, reason: &'static str },
    /// Stop the group if running and forget it; answer when done (its macvlan may go).
    Retire {
        key: u32,
        done: tokio::sync::oneshot::Sender<()>,
    },
    /// A Master gives up these VIPs (a reload dropped them).
    ReleaseVips { key: u32, vips: Vec<Vip> },
    /// New settings for the group, in place; a Master adds `add` and advertises at once.
    Update {
        key: u32,
        cfg: Box<Vrrp>,
        add: Vec<Vip>,
    },
    /// Every group's status, in order.
    Status(tokio::sync::oneshot::Sender<Vec<VrrpStatus>>),
    /// These addresses were removed from interface `ifindex` (`None`: any address of any
    /// interface may have been): Masters add and announce theirs again.
    Restore {
        ifindex: Option<u32>,
        addrs: Option<Vec<IpAddr>>,
    },
}

/// Something the fast path did or saw.
#[derive(Debug)]
pub enum Report {
    /// A group changed state.
    Transition {
        key: u32,
        vrid: u8,
        family: &'static str,
        from: VrrpState,
        to: VrrpState,
        reason: &'static str,
    },
    /// A Backup's Master_Down_Timer fired (CLOCK_MONOTONIC ns; the Master's last advert).
    MasterDown {
        vrid: u8,
        mono_ns: u64,
        last_seen_ns: u64,
    },
    /// A new Master was heard.
    MasterHeard {
        vrid: u8,
        master: IpAddr,
        priority: u8,
        interval_cs: u16,
    },
    /// The Master sent priority 0.
    PriorityZero { vrid: u8, master: IpAddr },
    /// An advert for this VRID listed other addresses.
    AddressMismatch {
        vrid: u8,
        family: &'static str,
        from: IpAddr,
        priority: u8,
        ours: String,
    },
    /// VIPs added and announced (from `announcer`).
    Taken {
        vrid: u8,
        announcer: Arc<Announcer>,
        list: Vec<Taken>,
    },
    /// A Master's VIPs that had been removed from outside, added and announced again.
    Restored {
        vrid: u8,
        announcer: Arc<Announcer>,
        vips: Vec<Vip>,
    },
    /// A VIP could not be added.
    TakeFailed { vrid: u8, vip: Vip, error: String },
    /// VIPs removed.
    Released { vrid: u8, list: Vec<Released> },
    /// Something to say about a group's failing advert sends (once per episode).
    Sends {
        vrid: u8,
        interface: String,
        notice: SendNotice,
    },
}

/// The maps, ring and sockets the fast path acts with.
pub struct Io {
    /// VRRP_GROUPS (its own handle on the pinned map): how the XDP program judges adverts.
    pub groups: HashMap<MapData, u32, VrrpGroup>,
    /// VRRP_SEEN: the Master's last advert as the XDP program recorded it.
    pub seen: HashMap<MapData, u32, VrrpSeen>,
    /// VRRP_EVENTS: notices that need the daemon.
    pub notices: RingBuf<MapData>,
    /// The self-fencing clock: when a Master last advertised.
    pub fence: Array<MapData, u64>,
    /// Address changes.
    pub addrs: IfAddrs,
}

/// The fast path's end of the channels, for VRRP mode.
pub type Channels = FastEnd<Command, Report>;

/// The groups as the fast path runs them.
struct Routers {
    io: Io,
    ch: Channels,
    groups: Vec<Group>,
    announce_burst: u16,
}

/// Runs the groups until `shared.stop`; then stops each (priority 0, VIPs released).
/// The body of the fast-path thread.
pub fn run(io: Io, ch: Channels, announce_burst: u16) {
    let mut r = Routers {
        io,
        ch,
        groups: Vec::new(),
        announce_burst,
    };
    while !r.ch.stopping() {
        for _ in 0..COMMANDS {
            let Some(c) = r.ch.next_command() else {
                break;
            };
            r.on_command(c);
        }
        for _ in 0..NOTICES_PER_WAKE {
            let Some(n) = r.io.notices.next().map(|item| read_notice(&item)) else {
                break;
            };
            if let Some(n) = n {
                r.on_notice(&n);
            }
        }
        let now = monotonic_ns();
        r.on_timers(now);
        r.retry(now);
        let wake = r
            .groups
            .iter()
            .flat_map(|g| [g.router.next_deadline(), g.retry.at])
            .flatten()
            .min();
        let fd = r.io.notices.as_raw_fd();
        if r.ch.sleeper.wait(wake, &[fd]).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        r.ch.shared.stats.wakeups.fetch_add(1, Ordering::Relaxed);
    }
    for i in 0..r.groups.len() {
        r.stop(i, "shutdown");
    }
}

fn read_notice(item: &[u8]) -> Option<VrrpNotice> {
    (item.len() >= size_of::<VrrpNotice>()).then(|| {
        // SAFETY: the program writes whole VrrpNotice records; read unaligned.
        unsafe { item.as_ptr().cast::<VrrpNotice>().read_unaligned() }
    })
}

impl Routers {
    fn report(&self, r: Report) {
        self.ch.report(r);
    }

    fn index(&self, key: u32) -> Option<usize> {
        self.groups.iter().position(|g| g.key == key)
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Add(g) => {
                self.groups.push(*g);
                self.publish(self.groups.len() - 1);
            }
            Command::Start { key, reason } => {
                if let Some(i) = self.index(key) {
                    self.start(i, reason);
                }
            }
            Command::Stop { key, reason } => {
                if let Some(i) = self.index(key) {
                    self.stop(i, reason);
                }
            }
            Command::Retire { key, done } => {
                if let Some(i) = self.index(key) {
                    if self.groups[i].router.state != VrrpState::Initialize {
                        self.stop(i, "reload");
                    }
                    self.groups.remove(i);
                }
                let _ = done.send(());
            }
            Command::ReleaseVips { key, vips } => {
                if let Some(i) = self.index(key)
                    && self.groups[i].router.state == VrrpState::Master
                {
                    self.release_vips(i, &vips);
                }
            }
            Command::Update { key, cfg, add } => {
                if let Some(i) = self.index(key) {
                    self.update(i, *cfg, &add);
                }
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Restore { ifindex, addrs } => self.restore(ifindex, addrs.as_deref()),
        }
    }

    /// Adds again the VIPs of Masters that were removed from outside (`addrs` on
    /// `ifindex`; `None`: any).
    fn restore(&mut self, ifindex: Option<u32>, addrs: Option<&[IpAddr]>) {
        for i in 0..self.groups.len() {
            let g = &self.groups[i];
            if g.router.state != VrrpState::Master || ifindex.is_some_and(|x| x != g.vip_ifindex) {
                continue;
            }
            let vips: Vec<Vip> = g
                .cfg
                .vips
                .iter()
                .filter(|v| addrs.is_none_or(|a| a.contains(&v.addr)))
                .copied()
                .collect();
            if vips.is_empty() {
                continue;
            }
            let (vrid, announcer) = (g.cfg.vrid, Arc::clone(&g.announcer));
            let taken = self.add(i, &vips);
            let vips: Vec<Vip> = taken
                .iter()
                .filter(|t| !t.already_present)
                .map(|t| t.vip)
                .collect();
            if !vips.is_empty() {
                self.report(Report::Restored {
                    vrid,
                    announcer,
                    vips,
                });
            }
        }
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
            version: g.cfg.version,
            auth_type: g.cfg.auth().0,
            interval_cs: g.cfg.interval_cs(),
            unicast: u8::from(g.cfg.unicast()),
            min_ttl: g.cfg.unicast_min_ttl,
            auth_data: g.cfg.auth().1,
        };
        let key = g.key;
        // A failed write leaves the program judging by the old state; it is retried with
        // the next transition.
        let _ = self.io.groups.insert(key, value, 0);
    }

    /// What the XDP program last recorded of group `i`'s Master, if heard since the group
    /// started or its Master last sent priority 0.
    fn heard(&self, i: usize, now: u64) -> Option<Heard> {
        let g = &self.groups[i];
        let seen = self.io.seen.get(&g.key, 0).ok()?;
        g.router.counts(seen.last_seen_ns).then(|| Heard {
            at: seen.last_seen_ns.min(now),
            priority: seen.priority,
            max_adver_int_cs: seen.max_adver_int_cs,
            source: ip_of(&seen.master, g.cfg.ipv6()),
        })
    }

    /// Feeds `event` to group `i` at `now` and carries out what it says.
    fn feed(&mut self, i: usize, event: VrrpEvent, now: u64) {
        let step = self.groups[i].router.handle(event, now);
        self.after(i, step);
    }

    /// Carries out group `i`'s `step`: publishes its transition, does its actions, then
    /// reports the transition.
    fn after(&mut self, i: usize, step: Step) {
        if step.transition.is_some() {
            // Tell the XDP program first: it judges the next advert by our state.
            self.publish(i);
        }
        for action in step.actions {
            match action {
                VrrpAction::SendAdvert { priority } => self.send_advert(i, priority),
                VrrpAction::TakeVips => {
                    let vips = self.groups[i].cfg.vips.clone();
                    self.take_vips(i, &vips);
                }
                VrrpAction::ReleaseVips => {
                    let vips = self.groups[i].cfg.vips.clone();
                    self.release_vips(i, &vips);
                }
            }
        }
        if let Some(t) = step.transition {
            let g = &self.groups[i];
            self.report(Report::Transition {
                key: g.key,
                vrid: g.cfg.vrid,
                family: g.cfg.family(),
                from: t.from,
                to: t.to,
                reason: t.reason,
            });
        }
    }

    fn send_advert(&mut self, i: usize, priority: u8) {
        let g = &self.groups[i];
        let spec = AdvertSpec {
            version: g.cfg.version,
            auth: g.cfg.auth(),
            vrid: g.cfg.vrid,
            priority,
            interval_cs: g.cfg.interval_cs(),
            source: g.source,
            vips: &g.vips,
        };
        // Unicast: to every peer (the first failure is reported; one delivered is enough
        // to count as advertising). Multicast: one frame.
        let (sent, any) = match &g.unicast {
            Some(socket) => {
                let mut first_error = None;
                let mut any = false;
                for &peer in &g.cfg.unicast_peers {
                    match socket.send(peer, &advert::message(&spec, peer)) {
                        Ok(()) => any = true,
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (first_error.map_or(Ok(()), Err), any)
            }
            None => {
                let (frame, proto) = advert::frame(g.announcer.mac(), &spec);
                let sent = g.announcer.send(&frame, proto);
                let any = sent.is_ok();
                (sent, any)
            }
        };
        if any && priority > 0 {
            // A Master alive and advertising: the XDP program answers for the group's
            // VIPs until three of its advert intervals after this advert, when its Backups
            // take over (see `maps::FENCE_MAP`).
            let slot = fence_slot_vrrp(g.cfg.ipv6(), g.cfg.vrid);
            let wait = 3 * g.cfg.advert_interval.0.as_nanos() as u64;
            let _ = self.io.fence.set(u32::from(slot), monotonic_ns() + wait, 0);
        }
        let error = sent.err().map(|e| e.to_string());
        let (vrid, interface) = (g.cfg.vrid, g.link_name.clone());
        let notice = self.groups[i]
            .sends
            .sent(monotonic_ns(), error.as_deref().map_or(Ok(()), Err));
        if let Some(notice) = notice {
            self.report(Report::Sends {
                vrid,
                interface,
                notice,
            });
        }
    }

    /// Adds `vips` to group `i`'s interface and announces them, reporting those the kernel
    /// refused; returns those added.
    fn add(&mut self, i: usize, vips: &[Vip]) -> Vec<holder::Taken> {
        let g = &self.groups[i];
        let (vrid, ifindex, announcer) = (g.cfg.vrid, g.vip_ifindex, Arc::clone(&g.announcer));
        let (taken, failed) = holder::take(
            &mut self.io.addrs,
            &announcer,
            ifindex,
            vips,
            self.announce_burst,
            None,
            || {},
        );
        let now = monotonic_ns();
        let refused: Vec<Vip> = failed.iter().map(|(v, _)| *v).collect();
        let retry = &mut self.groups[i].retry;
        // Said once: a retry that fails again stays quiet.
        let first: Vec<(Vip, String)> = failed
            .into_iter()
            .filter(|(v, _)| !retry.add.contains(v))
            .map(|(v, e)| (v, e.to_string()))
            .collect();
        retry.added(now, vips, &refused);
        for (vip, error) in first {
            self.report(Report::TakeFailed { vrid, vip, error });
        }
        taken
    }

    /// Adds `vips` as group `i`'s and announces them, in batches; adverts of the other
    /// groups stay on time in between.
    fn take_vips(&mut self, i: usize, vips: &[Vip]) {
        let (vrid, announcer) = (
            self.groups[i].cfg.vrid,
            Arc::clone(&self.groups[i].announcer),
        );
        let taken = self.add(i, vips);
        if !taken.is_empty() {
            self.report(Report::Taken {
                vrid,
                announcer,
                list: taken,
            });
        }
    }

    /// Removes group `i`'s `vips`.
    fn release_vips(&mut self, i: usize, vips: &[Vip]) {
        let g = &self.groups[i];
        let (vrid, ifindex) = (g.cfg.vrid, g.vip_ifindex);
        let list: Vec<(Vip, Option<u32>)> = vips.iter().map(|v| (*v, None)).collect();
        let released = holder::release(&mut self.io.addrs, ifindex, &list);
        // A VIP the kernel kept is tried again until it goes (a Backup must not answer
        // for it); it is reported released once it is.
        let kept: Vec<Vip> = released
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .map(|r| r.vip)
            .collect();
        self.groups[i].retry.removed(monotonic_ns(), vips, &kept);
        self.report(Report::Released {
            vrid,
            list: released,
        });
    }

    /// Tries again the address changes the kernel refused, where due: a Master's missing
    /// VIPs (added and announced), any group's kept ones (removed).
    fn retry(&mut self, now: u64) {
        for i in 0..self.groups.len() {
            let g = &self.groups[i];
            if g.retry.at.is_none_or(|at| at > now) {
                continue;
            }
            let master = g.router.state == VrrpState::Master;
            let (add, remove) = (g.retry.add.clone(), g.retry.remove.clone());
            self.groups[i].retry.at = None;
            if !remove.is_empty() {
                self.release_vips(i, &remove);
            }
            if master && !add.is_empty() {
                self.take_vips(i, &add);
            } else if !master {
                self.groups[i].retry.add.clear();
            }
        }
    }

    /// A notice from the XDP program.
    fn on_notice(&mut self, n: &VrrpNotice) {
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
        // Nothing heard before the group (re)started, or before its Master's priority 0,
        // counts.
        let router = &self.groups[i].router;
        if router.state == VrrpState::Initialize || n.ts_ns < router.void_before {
            return;
        }
        // Notices carry the kernel's arrival time; never feed a time in the future.
        let at = n.ts_ns.min(monotonic_ns());
        let g = &self.groups[i];
        let vrid = g.cfg.vrid;
        match kind {
            Notice::AddressMismatch => {
                let ours = g
                    .cfg
                    .vips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ");
                let family = g.cfg.family();
                self.report(Report::AddressMismatch {
                    vrid,
                    family,
                    from: source,
                    priority: n.priority,
                    ours,
                });
                return;
            }
            Notice::PriorityZero => {
                self.report(Report::PriorityZero {
                    vrid,
                    master: source,
                });
            }
            // The FSM steps down below and says why.
            Notice::Outranked => {}
            Notice::MasterChanged => {
                self.report(Report::MasterHeard {
                    vrid,
                    master: source,
                    priority: n.priority,
                    interval_cs: n.max_adver_int_cs,
                });
            }
        }
        self.feed(i, event, at);
    }

    /// Fires due timers. A Backup's Master_Down_Timer is checked against the kernel's
    /// record of the Master's last advert first ([`expire`](super::fsm::VirtualRouter::expire)).
    fn on_timers(&mut self, now: u64) {
        for i in 0..self.groups.len() {
            let Some(due_at) = self.groups[i].router.next_deadline() else {
                continue;
            };
            if due_at > now {
                continue;
            }
            let before = self.groups[i].router.state;
            if before == VrrpState::Master && self.groups[i].router.adver_at == Some(due_at) {
                let interval = u64::from(self.groups[i].cfg.interval_cs()) * super::fsm::CS;
                self.ch.shared.stats.record_send(now - due_at, interval / 2);
            }
            let heard = (before == VrrpState::Backup)
                .then(|| self.heard(i, now))
                .flatten();
            let snapshot = self.groups[i].router.clone();
            let mut step = self.groups[i].router.expire(now, heard);
            if before == VrrpState::Backup && self.groups[i].router.state == VrrpState::Master {
                // Tell the XDP program at once, then look again: an advert that arrived
                // while we decided was judged as a Backup's and only recorded.
                self.publish(i);
                let late = self
                    .heard(i, now)
                    .filter(|l| heard.is_none_or(|h| l.at > h.at));
                if let Some(late) = late {
                    let g = &mut self.groups[i];
                    g.router = snapshot;
                    step = g.router.expire(now, Some(late));
                    if g.router.state == VrrpState::Backup {
                        self.publish(i);
                    }
                }
            }
            if step
                .transition
                .is_some_and(|t| (t.from, t.to) == (VrrpState::Backup, VrrpState::Master))
            {
                self.report(Report::MasterDown {
                    vrid: self.groups[i].cfg.vrid,
                    mono_ns: now,
                    last_seen_ns: heard.map_or(0, |h| h.at),
                });
            }
            self.after(i, step);
        }
    }

    /// Starts group `i` (Initialize → Backup, or Master for the owner).
    fn start(&mut self, i: usize, reason: &'static str) {
        let now = monotonic_ns();
        let g = &self.groups[i];
        if g.router.state != VrrpState::Initialize {
            return;
        }
        // What the XDP program heard before is void (the FSM's `void_before`): judge the
        // Master afresh. Safe while the map still says Initialize (the XDP program ignores
        // adverts then): the first advert after the start is news, and
        // Master_Adver_Interval is learnt.
        let key = g.key;
        let _ = self.io.seen.remove(&key);
        self.feed(i, VrrpEvent::Startup { reason }, now);
    }

    /// Stops group `i`: a Master sends priority 0 and releases its VIPs.
    fn stop(&mut self, i: usize, reason: &'static str) {
        if self.groups[i].router.state == VrrpState::Initialize {
            return;
        }
        let was_master = self.groups[i].router.state == VrrpState::Master;
        self.feed(i, VrrpEvent::Shutdown { reason }, monotonic_ns());
        if was_master {
            for _ in 1..STOP_ADVERTS {
                self.send_advert(i, 0);
            }
        }
    }

    /// Gives group `i` the settings of `new` in place
    /// ([`reconfigure`](super::fsm::VirtualRouter::reconfigure)): a Master keeps its state,
    /// adds `add` (the VIPs it dropped are already gone) and advertises the new values at
    /// once.
    fn update(&mut self, i: usize, new: Vrrp, add: &[Vip]) {
        let g = &mut self.groups[i];
        g.vips = new.vips.iter().map(|v| v.addr).collect();
        let actions =
            g.router
                .reconfigure(new.priority, new.interval_cs(), new.preempt, monotonic_ns());
        g.cfg = new;
        let state = g.router.state;
        self.publish(i);
        if state == VrrpState::Master {
            self.take_vips(i, add);
        }
        self.after(
            i,
            Step {
                actions,
                transition: None,
            },
        );
    }

    fn status(&self) -> Vec<VrrpStatus> {
        let now = monotonic_ns();
        self.groups
            .iter()
            .map(|g| {
                let seen = self.io.seen.get(&g.key, 0).ok();
                let master = match g.router.state {
                    VrrpState::Master => Some((g.source, g.cfg.priority)),
                    VrrpState::Backup => g.router.master,
                    VrrpState::Initialize => None,
                };
                VrrpStatus {
                    vrid: g.cfg.vrid,
                    interface: g.cfg.interface().into(),
                    family: g.cfg.family().into(),
                    version: g.cfg.version,
                    state: state_name(g.router.state).into(),
                    priority: g.cfg.priority,
                    master: master.map(|(a, _)| a.to_string()),
                    master_priority: master.map(|(_, p)| p),
                    master_seen_ms_ago: seen
                        .filter(|_| g.router.state == VrrpState::Backup)
                        .map(|s| now.saturating_sub(s.last_seen_ns) as f64 / 1e6),
                    adverts_received: seen.map_or(0, |s| s.received),
                    vips: g.cfg.vips.iter().map(ToString::to_string).collect(),
                    unicast_peers: g
                        .cfg
                        .unicast_peers
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                }
            })
            .collect()
    }
}
