//! The pool's slow path: start-up, then everything that does not decide failover speed —
//! reading peers' state sections, logging what the fast path reports, carrier and health
//! verdicts, reload, status. It asks the fast path ([`super::fast`]) for changes and never
//! stands between a deadline and a takeover. The daemon's shell ([`crate::daemon`]) owns
//! what the pool shares with VRRP groups and hands it the events that concern it.
//!
//! Timeline log lines (target `vipd::timeline`, CLOCK_MONOTONIC nanoseconds, the clock of
//! the XDP program's timestamps, taken on the fast path): `peer_lost` (with the peer's last
//! heartbeat), `address_added`, `first_announce`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, RingBuf};
use tracing::{debug, info, warn};
use vipd_common::{
    auth,
    heartbeat::{HEADER_LEN, Heartbeat, State as WireState, is_leaving},
    maps::{ClaimNotice, EventKind, FENCE_POOL, MAX_PEERS, PeerEvent, PeerState},
    vip_list::{self, ListChunk},
};

use super::{
    fast,
    lists::Lists,
    membership::{LeftBecause, Transition},
    messages::{COMMANDS, Command, REPORTS, Report, Verdicts},
    pool_digest,
    told::Told,
};
use crate::{
    announce::Announcer,
    clock::{monotonic_ns, realtime_ns},
    config::Config,
    conflict::{Claim, Claimer},
    control::Status,
    daemon::Shell,
    fastpath::{
        channel::{self, Shared, SlowEnd},
        sends::SendNotice,
        shadow::{self, Vouch},
    },
    heartbeat::{Heartbeats, Receiver},
    ifaddr::{IfAddrs, Outcome},
    incarnation,
    metrics::{PeerLabel, ReasonLabel},
    netlink::{AddressGone, Link},
    ratelimit::LogLimit,
    runtime::join_fast_path,
};

/// At most one warning about rejected state sections this often.
const REJECTED_WARNING_EVERY: Duration = Duration::from_secs(10);
/// While a peer runs another VIP list, this node's list is sent again this often (a peer
/// that missed a chunk, or started since, gets it): until it has, that peer cannot read
/// this node's holdings, so a VIP may stay on two nodes (a lost chunk under load once
/// kept one there 10 s). As often as the state section's refresh.
const LIST_AGAIN: Duration = Duration::from_nanos(super::STATE_REFRESH_NS);

/// Starts the pool on `link` (the configured interface): heartbeat sockets, shadow
/// senders, the fast path's thread. Returns the slow side, the fast path's reports and its
/// thread.
pub fn start(
    sh: &mut Shell,
    link: &Link,
    events: RingBuf<MapData>,
) -> anyhow::Result<(
    Pool,
    tokio::sync::mpsc::Receiver<Report>,
    std::thread::JoinHandle<()>,
)> {
    let cfg = &sh.cfg;
    sh.loaded.set_peer_addrs(&cfg.pool.peers)?;
    let incarnation = incarnation::next(&cfg.node.incarnation_file(), realtime_ns());
    let announcer = Arc::new(
        Announcer::open(link.index, link.mac)
            .context("opening an AF_PACKET socket for gratuitous ARP (needs CAP_NET_RAW)")?,
    );
    let heartbeats = Heartbeats::open(
        &cfg.node.interface,
        link.index,
        cfg.pool.port,
        &cfg.pool.destinations(),
        super::heartbeat_template(cfg, incarnation),
        cfg.pool.auth_key,
    )
    .with_context(|| {
        format!(
            "opening heartbeat sockets on {} port {}",
            cfg.node.interface, cfg.pool.port
        )
    })?;
    let receiver = heartbeats
        .receiver()
        .context("registering the heartbeat sockets")?;
    let verdicts = Arc::new(Verdicts::new(link.carrier, sh.runnable()));
    let start_ns = monotonic_ns();
    let interval_ns = cfg.pool.interval.as_nanos() as u64;
    let shadow_period_ns =
        shadow::check_period(interval_ns, cfg.pool.dead_interval.as_nanos() as u64);
    let vouch = Arc::new(Vouch::default());
    vouch.weight.store(cfg.pool.weight, Ordering::Relaxed);
    vouch
        .dead_ns
        .store(cfg.pool.dead_interval.as_nanos() as u64, Ordering::Relaxed);
    let shadows = if cfg.node.shadow_senders {
        shadow::spawn(
            &heartbeats,
            &vouch,
            start_ns,
            (interval_ns, shadow_period_ns),
            cfg.node.fast_path_priority(),
            &|| sh.loaded.open_fence(),
        )
        .context("starting the shadow senders")?
    } else {
        Vec::new()
    };
    let io = fast::Io {
        heartbeats,
        peers: sh.loaded.open_peers()?,
        fence: sh.loaded.open_fence()?,
        events,
        addrs: IfAddrs::open().context("opening a netlink socket")?,
        ifindex: link.index,
        announcer: Arc::clone(&announcer),
        vouch: Arc::clone(&vouch),
        shadows,
        verdicts: Arc::clone(&verdicts),
    };
    let fast_cfg = cfg.clone();
    let (fast, reports, thread) = channel::start(
        cfg.node.fast_path_priority(),
        (COMMANDS, REPORTS),
        move |end| fast::run(fast_cfg, io, end, start_ns),
    )
    .context("starting the pool's fast path")?;
    info!(
        node = cfg.node.id,
        interface = %cfg.node.interface,
        vips = ?cfg.pool.vips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        destinations = ?cfg.pool.destinations(),
        interval = ?cfg.pool.interval,
        dead_interval = ?cfg.pool.dead_interval,
        hold_down = ?cfg.pool.hold_down,
        weight = cfg.pool.weight,
        preempt = cfg.pool.preempt,
        carrier = link.carrier,
        auth = cfg.pool.auth_key.is_some(),
        conntrack = %sh.notrack.describe(),
        "vipd started: pool"
    );
    if cfg.pool.auth_key.is_none() {
        warn!(
            "heartbeats are NOT authenticated (auth = \"off\"): anyone who can send onto {} \
             can move, hold or free the VIPs",
            cfg.node.interface
        );
    }
    sh.metrics
        .auth_enabled
        .set(i64::from(cfg.pool.auth_key.is_some()));
    let pool = Pool {
        pool: cfg.pool.vips.iter().map(|v| v.addr).collect(),
        pool_digest: pool_digest(&cfg.pool.vips),
        announcer,
        fast,
        verdicts,
        receiver,
        vouch,
        told: Told::default(),
        incarnation,
        state_seen: BTreeMap::new(),
        other_pool: BTreeSet::new(),
        lists: Lists::new(&cfg.pool.vips),
        states: BTreeMap::new(),
        signed_with: BTreeMap::new(),
        lists_told: BTreeMap::new(),
        list_sent: None,
        restore_pending: None,
        vouched: Vec::new(),
        rejected: Rejected::default(),
        event_logs: LogLimit::per_peer(),
        view_logs: LogLimit::per_peer(),
        stopped: None,
        link_name: link.name.clone(),
        ifindex: link.index,
        carrier: link.carrier,
    };
    Ok((pool, reports, thread))
}

/// How heartbeats are authenticated, for the start-up line and `vipd status`.
fn auth_text(cfg: &Config) -> &'static str {
    match (cfg.pool.auth_key, cfg.pool.auth_next_key) {
        (Some(_), None) => "key",
        (Some(_), Some(_)) => "key (rotating: a second key is accepted)",
        (None, _) => {
            "off (INSECURE: anyone who can send onto the link can move, hold or free the VIPs)"
        }
    }
}

/// State sections ignored because they failed authentication, for a rate-limited warning.
#[derive(Default)]
struct Rejected {
    last_warning: Option<Instant>,
    since_warning: u64,
}

/// What the pool's slow path keeps.
pub struct Pool {
    announcer: Arc<Announcer>,
    /// Asks the fast path.
    pub fast: SlowEnd<Command>,
    /// The slow path's carrier and health verdicts, as the fast path reads them.
    verdicts: Arc<Verdicts>,
    /// Heartbeats the XDP program passed up (those with a state section).
    pub receiver: Receiver,
    /// What the shadow senders covered.
    vouch: Arc<Vouch>,
    /// The pool, sorted (bit i of a state section is `pool[i]`).
    pool: Vec<IpAddr>,
    pool_digest: u32,
    /// What the fast path was told of each peer (verified, holdings).
    told: Told,
    /// This daemon's incarnation, which peers' state sections must echo.
    incarnation: u64,
    /// With authentication: (incarnation, sequence) of the last state section accepted
    /// from each peer, so a replayed one is refused.
    state_seen: BTreeMap<u32, (u64, u64)>,
    /// With authentication: the key each peer signed its last state section with, so a
    /// reload never drops a key a live peer still signs with.
    signed_with: BTreeMap<u32, auth::Key>,
    /// Peers whose last state section was for another VIP list (a rolling change, or a
    /// mistake): their holdings are read with their list, once it is known.
    other_pool: BTreeSet<u32>,
    /// The VIP lists known by digest (this node's, peers' learned in chunks).
    lists: Lists,
    /// Each peer's last accepted state section (bytes), read again when its list arrives
    /// or ours changes.
    states: BTreeMap<u32, Vec<u8>>,
    /// The other list each peer runs, as last told to the fast path (absent: ours).
    lists_told: BTreeMap<u32, u32>,
    /// When this node last asked the fast path to send its list.
    list_sent: Option<Instant>,
    /// Removed addresses the fast path has not been asked to restore yet (its queue was
    /// full); `Some(None)`: every held VIP.
    restore_pending: Option<Option<Vec<IpAddr>>>,
    /// Peers kept in the view on another member's word (peer, member), as last reported.
    vouched: Vec<(u32, u32)>,
    rejected: Rejected,
    /// Per-peer limits on the log lines heartbeats can cause.
    event_logs: LogLimit<u32>,
    view_logs: LogLimit<u32>,
    /// What the fast path said when it ended.
    stopped: Option<(u64, u64, u64)>,
    link_name: String,
    /// The cluster interface's index.
    ifindex: u32,
    carrier: bool,
}

/// The pool's part of a `vipd status` answer, once its fast path has answered.
pub struct PendingStatus {
    asked: Option<tokio::sync::oneshot::Receiver<Status>>,
    other_pool: BTreeSet<u32>,
}

impl PendingStatus {
    /// Waits (at most 1 s) for the fast path's view and writes it into `status`.
    pub async fn fill(self, status: &mut Status) {
        let Some(rx) = self.asked else {
            return;
        };
        if let Ok(Ok(fast)) = tokio::time::timeout(Duration::from_secs(1), rx).await {
            status.state = fast.state;
            status.view = fast.view;
            status.views_agree = fast.views_agree;
            status.peers = fast.peers;
            for p in &mut status.peers {
                p.other_vip_list |= self.other_pool.contains(&p.id);
            }
            status.vips.extend(fast.vips);
        }
    }
}

/// Whether a state section authenticated as (`incarnation`, `sequence`) may be used: it is
/// from the incarnation the XDP program last recorded for that peer (`current`), and newer
/// than the last one accepted (`last`). The XDP program refuses replayed heartbeats, but it
/// passes refused frames up, so the daemon checks the state sections it reads itself.
fn fresh_state(
    last: Option<(u64, u64)>,
    current: Option<u64>,
    incarnation: u64,
    sequence: u64,
) -> bool {
    current == Some(incarnation) && last.is_none_or(|last| (incarnation, sequence) > last)
}

impl Pool {
    /// Logs, counts and hooks what the fast path did.
    pub fn on_report(&mut self, sh: &mut Shell, report: Report) {
        match report {
            Report::XdpEvent(ev) => {
                if let Some(suppressed) = self.event_logs.allow(ev.node_id, monotonic_ns()) {
                    log_event(&ev, suppressed);
                }
            }
            Report::Transition {
                transition,
                at_ns,
                last_seen_ns,
                weight,
            } => {
                let id = match transition {
                    Transition::Joined { node_id } | Transition::Left { node_id, .. } => node_id,
                };
                if let Some(suppressed) = self.view_logs.allow(id, at_ns) {
                    log_transition(&transition, at_ns, last_seen_ns, weight, suppressed);
                }
                self.count_transition(sh, &transition, at_ns);
            }
            Report::Vouched(list) => self.on_vouched(list),
            Report::Silenced { silent_ns, held } => warn!(
                silent_ms = silent_ns / 1_000_000,
                released = held,
                "this node sent no heartbeat for longer than the dead interval (frozen or \
                 hung): its peers have taken over, so it gave its VIPs back and holds down \
                 again"
            ),
            Report::NodeState(state) => {
                info!(state, "node state");
                sh.hooks.node_state(state);
                sh.metrics.active.set(i64::from(state == "active"));
            }
            Report::Mature => info!(
                node = sh.cfg.node.id,
                "hold-down over: this node now takes its share of VIPs"
            ),
            Report::HoldingForView { member } => warn!(
                member,
                "hold-down over, but a member hears nodes this node does not (a cut?): \
                 holding down until this node sees what its members see"
            ),
            Report::Views {
                agree,
                view,
                differing,
            } => {
                if agree {
                    info!(view = ?view, "membership views agree");
                } else {
                    info!(view = ?view, differing = ?differing, "membership views differ");
                }
            }
            Report::Conflict(vip) => {
                warn!(vip = %vip, "VIP claimed by another node too (split brain?)")
            }
            Report::ConflictResolved(vip) => {
                info!(vip = %vip, "conflict resolved: announcing again");
                sh.held.announced_again(vip);
            }
            Report::AnnouncedAgain(vips) => {
                info!(
                    count = vips.len(),
                    "a peer declared lost is back: held VIPs announced again"
                );
                for vip in vips {
                    sh.held.announced_again(vip);
                }
            }
            Report::Taken(list) => {
                for t in &list {
                    sh.loaded.set_held(t.vip.addr, Some(FENCE_POOL));
                }
                sh.held.taken(&list, None, &self.announcer, &sh.hooks);
            }
            Report::Restored(vips) => sh.held.restored(&vips, &self.announcer),
            Report::TakeFailed { vip, error } => {
                warn!(
                    "taking over {vip}: {error}; this node holds down (its peers take its \
                     share) and tries again after the hold-down"
                )
            }
            Report::Released(list) => {
                for r in list
                    .iter()
                    .filter(|r| !matches!(r.outcome, Outcome::Failed(_)))
                {
                    sh.loaded.set_held(r.vip.addr, None);
                    sh.watch.forget(&r.vip.addr);
                }
                sh.held.released(&list, None, &sh.hooks);
            }
            Report::Sends(notice @ SendNotice::Recovered { .. }) => {
                info!("sending heartbeats on {} {notice}", sh.cfg.node.interface)
            }
            Report::Sends(notice) => {
                warn!("sending heartbeats on {} {notice}", sh.cfg.node.interface)
            }
            Report::Forgotten(ids) => {
                info!(peers = ?ids, "long-silent peers forgotten");
                for id in ids {
                    self.forget(sh, id);
                }
            }
            Report::Stopped {
                sent,
                failed,
                sequence,
            } => self.stopped = Some((sent, failed, sequence)),
        }
    }

    /// The fast path forgot `peer`: whatever it was told of it is told again when the peer
    /// is heard from again (its echo verifies it anew, its holdings and list count anew).
    /// The last state section's (incarnation, sequence) is kept: a recording of it stays
    /// refused.
    fn forget(&mut self, sh: &Shell, peer: u32) {
        self.told.forget(peer);
        self.signed_with.remove(&peer);
        self.lists_told.remove(&peer);
        self.states.remove(&peer);
        if self.other_pool.remove(&peer) {
            sh.metrics
                .peers_other_pool
                .set(self.other_pool.len() as i64);
        }
    }

    /// Notices of the ARP/NDP watch, each claimer judged by [`claimer`](Self::claimer):
    /// a live peer's claim makes the fast path send this node's holdings now (the
    /// holdings rule settles a split brain: the lower id keeps the VIP and announces it
    /// again when the other lets go; an ARP packet, which nothing authenticates, never
    /// makes this node let go itself); anyone else's is a conflict, defended.
    pub fn on_claims(&mut self, sh: &mut Shell, notices: &[ClaimNotice]) {
        let claims: Vec<Claim> = notices.iter().map(Claim::from).collect();
        self.judge_claims(sh, &claims);
    }

    /// Judges again the claims by a live peer's MAC whose grace ended (call now and then).
    pub fn recheck_claims(&mut self, sh: &mut Shell) {
        let due = sh.watch.due(monotonic_ns());
        if !due.is_empty() {
            self.judge_claims(sh, &due);
        }
    }

    fn judge_claims(&mut self, sh: &mut Shell, claims: &[Claim]) {
        let now = monotonic_ns();
        let dead = sh.cfg.pool.dead_interval.as_nanos() as u64;
        // One read of the peer table per batch: MAC → (node id, live incarnation).
        let peers: BTreeMap<[u8; 6], (u32, Option<u64>)> = sh
            .loaded
            .peers
            .iter()
            .filter_map(Result::ok)
            .map(|(id, p)| {
                let live = now.saturating_sub(p.last_seen_ns) < dead && !is_leaving(p.flags);
                (p.mac, (id, live.then_some(p.incarnation)))
            })
            .collect();
        let mut peer_claim = false;
        for claim in claims {
            let claimer = self.claimer(peers.get(&claim.mac).copied(), claim.vip);
            peer_claim |=
                sh.watch
                    .on_claim(now, *claim, claimer, &mut sh.held, &sh.metrics, &sh.hooks);
        }
        if peer_claim {
            let _ = self.fast.try_ask(Command::SendHoldings);
        }
    }

    /// Who claims `vip`, from the peer its MAC names (id, incarnation if live): a peer
    /// only if its own authenticated state — verified in this incarnation — holds `vip`.
    fn claimer(&self, by_mac: Option<(u32, Option<u64>)>, vip: IpAddr) -> Claimer {
        match by_mac {
            Some((id, Some(incarnation))) if self.told.holds(id, incarnation, &vip) => {
                Claimer::Peer(id)
            }
            Some((id, Some(_))) => Claimer::Unproven(id),
            Some((id, None)) => Claimer::SilentPeer(id),
            None => Claimer::Unknown,
        }
    }

    /// Metrics for one view change.
    fn count_transition(&mut self, sh: &Shell, t: &Transition, now: u64) {
        let (node_id, up) = match *t {
            Transition::Joined { node_id } => (node_id, true),
            Transition::Left { node_id, .. } => (node_id, false),
        };
        sh.metrics
            .peer_up
            .get_or_create(&PeerLabel {
                peer: node_id.to_string(),
            })
            .set(i64::from(up));
        let Transition::Left { because, .. } = *t else {
            return;
        };
        let reason = match because {
            LeftBecause::Timeout { last_seen_ns } => {
                sh.metrics
                    .detection_seconds
                    .observe(now.saturating_sub(last_seen_ns) as f64 / 1e9);
                "timeout"
            }
            LeftBecause::Leaving => "leaving",
            LeftBecause::Restarted => "restarted",
            LeftBecause::NotMature => "withdrawn",
        };
        sh.metrics
            .failovers
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// The fast path's thread state, for metrics and the watchdog.
    pub fn fast_path(&self) -> (Arc<Shared>, bool) {
        self.fast.path()
    }

    /// The cluster interface's index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Carrier changed on interface `index`: if it is the pool's, tell the fast path
    /// (which releases everything on a loss).
    pub fn on_carrier(&mut self, sh: &Shell, index: u32, up: bool) {
        if index != self.ifindex || up == self.carrier {
            return;
        }
        self.carrier = up;
        if up {
            info!(interface = %self.link_name, hold_down = ?sh.cfg.pool.hold_down,
                "carrier back: taking VIPs again after the hold-down");
        } else {
            warn!(interface = %self.link_name, "carrier lost: releasing all VIPs");
        }
        self.verdicts.carrier.store(up, Ordering::Relaxed);
        self.fast.wake();
    }

    /// The health checks' verdict changed (the fast path releases everything while they
    /// fail).
    pub fn on_health(&mut self, healthy: bool) {
        self.verdicts.healthy.store(healthy, Ordering::Relaxed);
        self.fast.wake();
    }

    /// The pool's part of a reload to `new` (checked by the shell): the XDP program takes
    /// the new keys and peers, the peers' holdings are read with the new list, and the
    /// fast path gets the new configuration. Nothing changes if it fails.
    pub fn reload(&mut self, sh: &mut Shell, new: &Config) -> anyhow::Result<()> {
        if let Some(peer) = self.signing_with_a_dropped_key(sh, new) {
            bail!(
                "peer {peer} still signs with a key this configuration no longer accepts (it \
                 would split the pool): finish the rotation's previous step on every node first"
            );
        }
        // Accept the new keys and peers before signing with them or sending to them (a
        // rotation never splits the pool).
        if let Err(e) = sh
            .loaded
            .set_peer_addrs(&new.pool.peers)
            .and_then(|()| sh.loaded.set_config(crate::daemon::xdp_config(new)))
        {
            self.restore_xdp(sh);
            return Err(e);
        }
        // The peers' holdings and lists, read with the new list, reach the fast path
        // before the new list does: it never places the new pool on holdings read with
        // the old one.
        self.use_list(sh, &new.pool.vips);
        if self
            .fast
            .try_ask(Command::Reload(Box::new(new.clone())))
            .is_err()
        {
            self.restore_xdp(sh);
            let old = sh.cfg.pool.vips.clone();
            self.use_list(sh, &old);
            bail!("the pool's fast path is busy; send SIGHUP again");
        }
        Ok(())
    }

    /// After the shell took a reload: the health verdict as the (maybe new) checks say.
    pub fn reloaded(&mut self, sh: &Shell) {
        self.on_health(sh.runnable());
    }

    /// A live peer whose last state section was signed with a key `new` does not accept.
    fn signing_with_a_dropped_key(&self, sh: &Shell, new: &Config) -> Option<u32> {
        let accepted = [new.pool.auth_key, new.pool.auth_next_key];
        let now = monotonic_ns();
        let dead = sh.cfg.pool.dead_interval.as_nanos() as u64;
        self.signed_with
            .iter()
            .filter(|(_, k)| !accepted.contains(&Some(**k)))
            .map(|(id, _)| *id)
            .find(|id| {
                self.recorded(sh, *id)
                    .is_some_and(|p| now.saturating_sub(p.last_seen_ns) < dead)
            })
    }

    /// Runs `vips` as this node's list: the peers' holdings read again with it (the lists
    /// seen before are kept: peers not reloaded yet still run them) and handed to the
    /// fast path.
    fn use_list(&mut self, sh: &Shell, vips: &[crate::vip::Vip]) {
        self.pool = vips.iter().map(|v| v.addr).collect();
        self.pool_digest = pool_digest(vips);
        self.lists.learn(vips.into());
        self.told.unsay_holdings();
        self.list_sent = None;
        let peers: Vec<u32> = self.states.keys().copied().collect();
        for peer in peers {
            self.read_holdings(sh, peer);
        }
    }

    /// Logs which silent peers another member still hears (kept in the view: a partition
    /// between this node and them, not a failure).
    fn on_vouched(&mut self, list: Vec<(u32, u32)>) {
        for (peer, by) in &list {
            if !self.vouched.iter().any(|(p, _)| p == peer) {
                warn!(
                    peer,
                    heard_by = by,
                    "peer silent past the dead interval but heard by another member: kept in \
                     the view, its VIPs stay with it (a partition between this node and it?)"
                );
            }
        }
        for (peer, _) in &self.vouched {
            if !list.iter().any(|(p, _)| p == peer) {
                info!(peer, "peer no longer kept on another member's word");
            }
        }
        self.vouched = list;
    }

    /// An address left the interface: if it is a VIP, the fast path adds it again if it
    /// still holds it (its own releases are not held any more, so they are left alone).
    pub fn on_address_gone(&mut self, what: &AddressGone) {
        let addrs = match *what {
            AddressGone::Address(index, a) if index == self.ifindex && self.pool.contains(&a) => {
                Some(vec![a])
            }
            AddressGone::Address(..) => return,
            AddressGone::Unknown => None,
        };
        let pending = match (self.restore_pending.take(), addrs) {
            (Some(Some(mut old)), Some(new)) => Some({
                old.extend(new);
                old
            }),
            (Some(None), _) | (_, None) => None,
            (None, Some(new)) => Some(new),
        };
        self.restore_pending = Some(pending);
        self.retry_restore();
    }

    /// Hands the fast path the pending restore, unless its queue is full (then the
    /// announcement refresh tick tries again).
    pub fn retry_restore(&mut self) {
        let Some(addrs) = self.restore_pending.take() else {
            return;
        };
        if let Err(Command::Restore(addrs)) = self.fast.try_ask(Command::Restore(addrs)) {
            self.restore_pending = Some(addrs);
        }
    }

    /// Puts the running configuration's keys and peers back into the XDP program (a reload
    /// that did not go through).
    fn restore_xdp(&mut self, sh: &mut Shell) {
        let restored = sh
            .loaded
            .set_peer_addrs(&sh.cfg.pool.peers)
            .and_then(|()| sh.loaded.set_config(crate::daemon::xdp_config(&sh.cfg)));
        if let Err(e) = restored {
            warn!("restoring the XDP program's keys and peers: {e:#}");
        }
    }

    /// The pool's part of a `vipd status` answer: asks the fast path for its view (read by
    /// [`PendingStatus::fill`]) and writes what the slow path knows into `status`.
    pub fn status(&self, sh: &Shell, status: &mut Status) -> PendingStatus {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let asked = self.fast.try_ask(Command::Status(tx)).is_ok();
        status.auth = auth_text(&sh.cfg).into();
        status.dead_interval_ms = sh.cfg.pool.dead_interval.as_secs_f64() * 1e3;
        status.state = "unknown (the fast path did not answer)".into();
        if let Some(groups) = status.fast_path.replace(self.fast.status()) {
            status.vrrp_fast_path = Some(groups);
        }
        PendingStatus {
            asked: asked.then_some(rx),
            other_pool: self.other_pool.clone(),
        }
    }

    /// Stops: waits for the fast path (told to stop) to send LEAVING and release its VIPs,
    /// taking its last reports, and logs its figures.
    pub async fn stop(
        mut self,
        sh: &mut Shell,
        reports: &mut tokio::sync::mpsc::Receiver<Report>,
        thread: std::thread::JoinHandle<()>,
    ) {
        join_fast_path(reports, thread, |r| self.on_report(sh, r)).await;
        let (sent, failed, sequence) = self.stopped.unwrap_or_default();
        let stats = &self.fast.shared.stats;
        let covered = self.vouch.covered.load(Ordering::Relaxed);
        info!(
            heartbeats_sent = sent + covered,
            heartbeats_failed = failed,
            heartbeats_late = stats.late.load(Ordering::Relaxed),
            heartbeats_covered = covered,
            stalls = stats.stalls.load(Ordering::Relaxed),
            max_stall_us = stats.max_stall_ns.load(Ordering::Relaxed) / 1000,
            max_late_us = stats.max_late_ns.load(Ordering::Relaxed) / 1000,
            last_sequence = sequence,
            "pool stopped"
        );
    }

    /// A datagram on the heartbeat port that the XDP program passed up: a peer's state
    /// section is checked here and handed to the fast path when it says something new.
    pub fn on_datagram(&mut self, sh: &Shell, payload: &[u8], from: IpAddr) {
        let Ok(hb) = Heartbeat::parse(payload, sh.cfg.pool.cluster_id) else {
            return;
        };
        // The XDP program passed it up without recording it if it came from elsewhere.
        if !sh.cfg.pool.peers.is_empty() && !sh.cfg.pool.peers.contains(&from) {
            return;
        }
        if hb.node_id == sh.cfg.node.id || hb.state_len == 0 {
            return;
        }
        let recorded = self.recorded(sh, hb.node_id);
        if let Some(key) = sh.cfg.pool.auth_key {
            let verify = |k| auth::verify(k, payload, hb.state_len.into(), hb.auth_len).is_ok();
            let signer = [Some(key), sh.cfg.pool.auth_next_key]
                .into_iter()
                .flatten()
                .find(|k| verify(*k));
            let reason = if signer.is_none() {
                Some("bad_auth")
            } else if !fresh_state(
                self.state_seen.get(&hb.node_id).copied(),
                recorded.map(|p| p.incarnation),
                hb.incarnation,
                hb.sequence,
            ) {
                Some("replayed")
            } else {
                None
            };
            if let Some(reason) = reason {
                self.reject_state(sh, hb.node_id, reason);
                return;
            }
            self.state_seen
                .insert(hb.node_id, (hb.incarnation, hb.sequence));
            if let Some(k) = signer {
                if self.signed_with.len() >= MAX_PEERS as usize {
                    self.signed_with.clear();
                }
                self.signed_with.insert(hb.node_id, k);
            }
        }
        if recorded.is_none_or(|p| p.incarnation != hb.incarnation) {
            // Not (yet) in the peer table as this incarnation: a spoofed or brand-new id;
            // its state arrives again in the next heartbeats that carry it.
            return;
        }
        let section = &payload[HEADER_LEN..HEADER_LEN + hb.state_len as usize];
        if vip_list::is_list(section) {
            self.on_list_chunk(sh, hb.node_id, section);
            return;
        }
        let Ok(state) = WireState::parse(section) else {
            debug!(peer = hb.node_id, "malformed state section");
            return;
        };
        if state.echoes_for(sh.cfg.node.id, self.incarnation)
            && let Some(command) = self.told.verify(hb.node_id, hb.incarnation)
            && self.fast.try_ask(command).is_ok()
        {
            self.told.verified(hb.node_id, hb.incarnation);
        }
        if self.states.len() >= MAX_PEERS as usize && !self.states.contains_key(&hb.node_id) {
            // Bounded: keep only the peers the XDP program still records.
            let loaded = &sh.loaded;
            self.states.retain(|id, _| loaded.peers.get(id, 0).is_ok());
        }
        self.states.insert(hb.node_id, section.to_vec());
        self.read_holdings(sh, hb.node_id);
    }

    /// Reads a peer's last state section with the list it was written for: hands the fast
    /// path the peer's holdings and, when it runs another list than ours, that list.
    fn read_holdings(&mut self, sh: &Shell, peer: u32) {
        let Some(section) = self.states.get(&peer).cloned() else {
            return;
        };
        let Ok(state) = WireState::parse(&section) else {
            return;
        };
        let other = state.pool_digest != self.pool_digest;
        if other && !self.other_pool.contains(&peer) {
            self.other_pool.insert(peer);
            warn!(
                peer,
                "peer runs another VIP list (a rolling change, or a mistake): the lists are \
                 exchanged, and the VIPs both list placed alike"
            );
            sh.metrics
                .peers_other_pool
                .set(self.other_pool.len() as i64);
            self.list_sent = None;
        } else if !other && self.other_pool.remove(&peer) {
            info!(peer, "peer's VIP list matches this node's again");
            sh.metrics
                .peers_other_pool
                .set(self.other_pool.len() as i64);
        }
        let list = if other {
            self.send_list();
            match self.lists.get(state.pool_digest) {
                Some(list) => Some(list.iter().map(|v| v.addr).collect::<Vec<IpAddr>>()),
                // Its holdings are unknown until its list is complete here.
                None => return,
            }
        } else {
            None
        };
        let addrs = list.as_deref().unwrap_or(&self.pool);
        if addrs.len() != usize::from(state.vip_count) {
            return;
        }
        let vips: BTreeSet<IpAddr> = addrs
            .iter()
            .enumerate()
            .filter(|(i, _)| state.holds(*i))
            .map(|(_, v)| *v)
            .collect();
        let told = other.then_some(state.pool_digest);
        if self.lists_told.get(&peer).copied() != told {
            let command = Command::PeerList {
                peer,
                vips: list.as_ref().map(|l| l.iter().copied().collect()),
            };
            // When the fast path is behind, the peer's next state section says it again.
            if self.fast.try_ask(command).is_err() {
                return;
            }
            match told {
                Some(digest) => {
                    info!(
                        peer,
                        vips = addrs.len(),
                        shared = addrs.iter().filter(|v| self.pool.contains(v)).count(),
                        "learned the peer's VIP list: the VIPs both list are placed on the \
                         nodes that list them"
                    );
                    self.lists_told.insert(peer, digest)
                }
                None => self.lists_told.remove(&peer),
            };
        }
        // When the fast path is behind, the peer's next state section says it again.
        let Some(incarnation) = self.recorded(sh, peer).map(|p| p.incarnation) else {
            return;
        };
        if let Some(command) = self.told.holdings(peer, incarnation, &vips)
            && self.fast.try_ask(command).is_ok()
        {
            self.told.held(peer, incarnation, vips);
        }
    }

    /// A chunk of a peer's VIP list; once the list is complete, the holdings of the peers
    /// running it are read.
    fn on_list_chunk(&mut self, sh: &Shell, peer: u32, section: &[u8]) {
        let Ok(chunk) = ListChunk::parse(section) else {
            debug!(peer, "malformed VIP list chunk");
            return;
        };
        if let Some(digest) = self.lists.on_chunk(peer, &chunk) {
            let running: Vec<u32> = self
                .states
                .iter()
                .filter(|(_, s)| WireState::parse(s).is_ok_and(|s| s.pool_digest == digest))
                .map(|(id, _)| *id)
                .collect();
            for peer in running {
                self.read_holdings(sh, peer);
            }
        }
    }

    /// Asks the fast path to send this node's list (a peer runs another): at once for a
    /// new such peer, then every `LIST_AGAIN` while there are any.
    fn send_list(&mut self) {
        if self.list_sent.is_some_and(|t| t.elapsed() < LIST_AGAIN) {
            return;
        }
        if self.fast.try_ask(Command::SendList).is_ok() {
            self.list_sent = Some(Instant::now());
        }
    }

    /// What the XDP program recorded of peer `id`, if anything.
    fn recorded(&self, sh: &Shell, id: u32) -> Option<PeerState> {
        sh.loaded.peers.get(&id, 0).ok()
    }

    /// Counts a state section that failed authentication; warns now and then.
    fn reject_state(&mut self, sh: &Shell, claimed_peer: u32, reason: &'static str) {
        sh.metrics
            .state_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
        let r = &mut self.rejected;
        r.since_warning += 1;
        if r.last_warning
            .is_none_or(|t| t.elapsed() >= REJECTED_WARNING_EVERY)
        {
            warn!(
                claimed_peer,
                reason,
                rejected = r.since_warning,
                "ignored state section(s) that failed authentication (wrong key, forged or \
                 replayed); counted in vipd_state_sections_rejected_total"
            );
            r.last_warning = Some(Instant::now());
            r.since_warning = 0;
        }
    }
}

/// Logs an event from the XDP program.
/// Logs an event from the XDP program; `suppressed`: lines about this peer left out
/// before it (rate limit).
fn log_event(ev: &PeerEvent, suppressed: u64) {
    match EventKind::from_u8(ev.kind) {
        Some(EventKind::NewPeer) => {
            info!(
                peer = ev.node_id,
                mono_ns = ev.ts_ns,
                suppressed,
                "new peer heard"
            )
        }
        Some(EventKind::FlagsChanged) if is_leaving(ev.flags) => {
            info!(
                peer = ev.node_id,
                mono_ns = ev.ts_ns,
                suppressed,
                "peer sent LEAVING"
            )
        }
        Some(EventKind::FlagsChanged) => debug!(
            peer = ev.node_id,
            flags = ev.flags,
            prev = ev.prev_flags,
            "peer flags changed"
        ),
        Some(EventKind::Restarted) => info!(
            peer = ev.node_id,
            incarnation = ev.incarnation,
            last_sequence = ev.prev_sequence,
            suppressed,
            "peer restarted"
        ),
        Some(EventKind::Returned) => info!(
            peer = ev.node_id,
            suppressed, "peer heard again after silence"
        ),
        Some(EventKind::SequenceGap) => debug!(
            peer = ev.node_id,
            missed = ev
                .sequence
                .saturating_sub(ev.prev_sequence.saturating_add(1)),
            "heartbeats missed"
        ),
        None => warn!(kind = ev.kind, "unknown event from the XDP program"),
    }
}

fn log_transition(t: &Transition, now: u64, last_seen_ns: u64, weight: u16, suppressed: u64) {
    match *t {
        Transition::Joined { node_id } => {
            info!(peer = node_id, weight, suppressed, "peer joined the view");
        }
        Transition::Left { node_id, because } => {
            let reason = match because {
                LeftBecause::Timeout { .. } => "timeout",
                LeftBecause::Leaving => "LEAVING",
                LeftBecause::Restarted => "restarted",
                LeftBecause::NotMature => "not mature",
            };
            info!(target: "vipd::timeline", event = "peer_lost", peer = node_id, reason,
                last_seen_mono_ns = last_seen_ns, mono_ns = now,
                silence_us = now.saturating_sub(last_seen_ns) / 1000, suppressed,
                "peer left the view ({reason})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fresh_state;

    #[test]
    fn state_sections_must_be_newer_and_of_the_current_incarnation() {
        // The first one of the incarnation the XDP program recorded.
        assert!(fresh_state(None, Some(10), 10, 1));
        // Not of the recorded incarnation (an old one replayed, or a peer not recorded).
        assert!(!fresh_state(None, Some(10), 9, 100));
        assert!(!fresh_state(None, None, 10, 1));
        // Newer than the last accepted, or not.
        assert!(fresh_state(Some((10, 5)), Some(10), 10, 6));
        assert!(!fresh_state(Some((10, 5)), Some(10), 10, 5));
        assert!(!fresh_state(Some((10, 5)), Some(10), 10, 4));
        // A restart: the new incarnation, whatever its sequence.
        assert!(fresh_state(Some((10, 5)), Some(11), 11, 1));
        assert!(!fresh_state(Some((11, 1)), Some(11), 10, 6));
    }
}
