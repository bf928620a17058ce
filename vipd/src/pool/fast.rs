//! The pool's fast path: the loop on the real-time thread that sends this node's
//! heartbeats on their absolute schedule, declares peers lost against the kernel's
//! timestamps, places the pool ([`placement`], pure) on the view ([`Membership`], pure),
//! and adds, announces and releases VIPs itself — synchronously, in batches.
//!
//! Every wake-up serves the heartbeat first, then the slow path's latest carrier and
//! health verdicts, then a bounded number of commands and XDP events, then deadlines.
//! Nothing here waits on the slow path: reports go out with `try_send`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    os::fd::AsRawFd as _,
    sync::{Arc, atomic::Ordering},
};

use aya::maps::{Array, HashMap, MapData, RingBuf};
use vipd_common::{
    auth::AUTH_LEN,
    heartbeat::{
        ECHO_LEN, FLAG_LEAVING, FLAG_MATURE, HEADER_LEN, MAX_ECHOES, State as WireState,
        is_leaving, view_digest,
    },
    maps::{EventKind, Fence, PeerEvent, PeerState},
};

use super::{
    STATE_BURST, STATE_REFRESH_NS, lists,
    membership::{LeftBecause, Membership, Transition, hears_window},
    messages::{Command, Report, Verdicts},
    placement::{self, Member},
    pool_digest,
};
use crate::{
    announce::Announcer,
    clock::monotonic_ns,
    config::Config,
    control::{PeerStatus, Status, VipStatus},
    fastpath::{
        STALL_NS,
        channel::FastEnd,
        schedule::{Periodic, earliest},
        shadow::{self, Vouch},
    },
    heartbeat::{Heartbeats, MAX_DATAGRAM},
    holder,
    ifaddr::{IfAddrs, Outcome},
    vip::Vip,
};

/// LEAVING heartbeats sent on a graceful stop (more than one, in case one is lost).
const LEAVING_BURST: usize = 3;
/// XDP events handled per wake-up (a flood must not delay the next heartbeat).
const EVENTS_PER_WAKE: usize = 256;
/// How often the whole peer table is read (between times, only the peers named by events
/// and the view's members): catches what no event says (a weight or view digest change,
/// events lost to a full ring) at a bounded cost however many ids a flood brings.
const FULL_SCAN_NS: u64 = 100_000_000;
/// Least time a reload's new VIPs wait before they are taken (see `Pool::added`).
const RELOAD_SETTLE_NS: u64 = 250_000_000;
/// Peers outside the view silent this long are forgotten (and removed from the table).
const FORGET_AFTER_NS: u64 = 60_000_000_000;
/// Peer table entries read between two checks of the heartbeat slot.
const SCAN_CHUNK: usize = 32;

/// The descriptors and maps the fast path acts with.
pub struct Io {
    /// Heartbeat sockets (sending).
    pub heartbeats: Heartbeats,
    /// The XDP program's peer table (its own handle on the pinned map).
    pub peers: HashMap<MapData, u32, PeerState>,
    /// The XDP program's event ring.
    pub events: RingBuf<MapData>,
    /// The self-fencing clock: when this node last sent a heartbeat.
    pub fence: Array<MapData, u64>,
    /// Address changes on the cluster interface.
    pub addrs: IfAddrs,
    /// The cluster interface's index.
    pub ifindex: u32,
    /// Gratuitous ARP / unsolicited NA.
    pub announcer: Arc<Announcer>,
    /// What the shadow senders send when this thread misses a slot.
    pub vouch: Arc<Vouch>,
    /// The shadow senders (stopped before LEAVING goes out).
    pub shadows: Vec<std::thread::JoinHandle<()>>,
    /// The slow path's carrier and health verdicts.
    pub verdicts: Arc<Verdicts>,
}

/// The fast path's end of the channels, for the pool.
pub type Channels = FastEnd<Command, Report>;

/// The pool as this node runs it, owned by the fast path.
struct Pool {
    cfg: Config,
    io: Io,
    ch: Channels,
    /// The pool, sorted (bit i of a state section is `pool[i]`).
    pool: Vec<IpAddr>,
    pool_digest: u32,
    membership: Membership,
    send: Periodic,
    mature_at: u64,
    mature: bool,
    carrier: bool,
    healthy: bool,
    held: BTreeMap<IpAddr, Vip>,
    /// What each peer last said it holds.
    peers: BTreeMap<u32, BTreeSet<IpAddr>>,
    /// The VIP list of each peer that runs another one (a rolling change).
    lists: BTreeMap<u32, BTreeSet<IpAddr>>,
    /// This node's list in chunks, for such peers; the next to send, and how many are
    /// left of the round being sent.
    list_chunks: Vec<Vec<u8>>,
    list_next: usize,
    list_left: usize,
    /// VIPs the last reload added, not taken before `added_until`: by then the peers'
    /// state sections say which list they run, so nodes reloaded at the same moment place
    /// them alike.
    added: BTreeSet<IpAddr>,
    added_until: u64,
    /// Held VIPs that a peer claims too.
    conflicts: BTreeSet<IpAddr>,
    view_digest: u64,
    views_agree: bool,
    state_burst: u8,
    last_state_sent_ns: u64,
    node_state: &'static str,
    /// When the last peer loss was declared, for the takeover latency.
    last_loss_ns: Option<u64>,
    /// VIPs whose failure to be added was reported (once until they are added).
    take_failed: BTreeSet<IpAddr>,
    send_failing: bool,
    /// When the whole peer table was last read.
    last_full_scan_ns: u64,
    /// The view as announced (ids in order, this node included when active).
    view_ids: Vec<u32>,
    /// Peers kept in the view on another member's word, as last reported.
    vouched: Vec<(u32, u32)>,
    /// Peers that left the view by timeout (their return is a heal).
    timed_out: BTreeSet<u32>,
}

/// Which peers a reconcile reads from the table.
enum Scan {
    /// Every entry.
    All,
    /// These ids (and the view's members).
    Ids(BTreeSet<u32>),
}

/// Runs the pool's fast path until `shared.stop`, its heartbeat slots starting at
/// `start_ns` (the shadows check half an interval after each); then sends LEAVING and
/// releases every VIP. This is the body of the fast-path thread.
pub fn run(cfg: Config, io: Io, ch: Channels, start_ns: u64) {
    let now = monotonic_ns().max(start_ns);
    let mut membership = Membership::new(cfg.pool.dead_interval.as_nanos() as u64);
    membership.set_heal_delay(cfg.pool.heal_delay.as_nanos() as u64);
    let pool = Pool {
        pool: cfg.pool.vips.iter().map(|v| v.addr).collect(),
        pool_digest: pool_digest(&cfg.pool.vips),
        membership,
        send: Periodic::new(start_ns, cfg.pool.interval.as_nanos() as u64),
        mature_at: now + cfg.pool.hold_down.as_nanos() as u64,
        mature: false,
        carrier: io.verdicts.carrier.load(Ordering::Relaxed),
        healthy: io.verdicts.healthy.load(Ordering::Relaxed),
        held: BTreeMap::new(),
        peers: BTreeMap::new(),
        lists: BTreeMap::new(),
        list_chunks: lists::chunks(&cfg.pool.vips),
        list_next: 0,
        list_left: 0,
        added: BTreeSet::new(),
        added_until: 0,
        conflicts: BTreeSet::new(),
        view_digest: 0,
        views_agree: true,
        state_burst: STATE_BURST,
        last_state_sent_ns: 0,
        node_state: "",
        last_loss_ns: None,
        take_failed: BTreeSet::new(),
        send_failing: false,
        last_full_scan_ns: 0,
        view_ids: Vec::new(),
        vouched: Vec::new(),
        timed_out: BTreeSet::new(),
        cfg,
        io,
        ch,
    };
    pool.run();
}

impl Pool {
    fn run(mut self) {
        // Say at once where we stand (holding down), and hear the peers already there.
        self.reconcile(monotonic_ns(), Scan::All);
        loop {
            let now = monotonic_ns();
            self.io.vouch.progress_ns.store(now, Ordering::Relaxed);
            self.yield_after_silence(now);
            self.send_if_due();
            if self.ch.stopping() {
                break;
            }
            let mut reconcile = self.take_verdicts();
            for _ in 0..super::messages::COMMANDS {
                let Some(c) = self.ch.next_command() else {
                    break;
                };
                reconcile |= self.on_command(c);
            }
            // Events coalesce per peer: a flood costs one read of each peer it names.
            let mut touched = BTreeSet::new();
            for _ in 0..EVENTS_PER_WAKE {
                let Some(ev) = self.io.events.next().map(|item| read_event(&item)) else {
                    break;
                };
                if let Some(ev) = ev {
                    self.on_event(ev);
                    touched.insert(ev.node_id);
                }
            }
            reconcile |= !touched.is_empty();
            let now = monotonic_ns();
            self.excuse_cpu_stalls(now);
            if self.timer_due(now) {
                reconcile = true;
            }
            if now.saturating_sub(self.last_full_scan_ns) >= FULL_SCAN_NS {
                self.reconcile(now, Scan::All);
            } else if reconcile {
                self.reconcile(now, Scan::Ids(touched));
            }
            let wake = earliest([Some(self.send.next()), self.next_timer()]);
            let fd = self.io.events.as_raw_fd();
            if self.ch.sleeper.wait(wake, &[fd]).is_err() {
                // poll/timerfd failing is not expected; never spin on it.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            self.ch.shared.stats.wakeups.fetch_add(1, Ordering::Relaxed);
            self.excuse_own_stall(wake);
        }
        self.stop();
    }

    /// After a silence of the dead interval (the process was frozen, or hung past what the
    /// shadows cover): the peers have declared this node lost and taken its VIPs, so it
    /// gives back whatever it still holds and starts its hold-down again, before its first
    /// heartbeat, instead of claiming them a second time.
    fn yield_after_silence(&mut self, now: u64) {
        let last = self.io.vouch.sent_ns.load(Ordering::Acquire);
        let silent = now.saturating_sub(last);
        if last == 0
            || silent < self.cfg.pool.dead_interval.as_nanos() as u64
            || !self.dropped_by_peers()
        {
            return;
        }
        self.report(Report::Silenced {
            silent_ns: silent,
            held: self.held.len(),
        });
        self.release_all();
        self.mature = false;
        self.mature_at = now + self.cfg.pool.hold_down.as_nanos() as u64;
        self.state_burst = STATE_BURST;
    }

    /// Whether a member's latest heartbeat (read now) shows a view without this node: the
    /// peers did declare it lost (a stall they shared, as when the whole machine paused,
    /// they excused, and then nothing need be given back).
    fn dropped_by_peers(&self) -> bool {
        let me = self.cfg.node.id;
        if !self.view_ids.contains(&me) {
            return false;
        }
        let without: Vec<u32> = self
            .view_ids
            .iter()
            .copied()
            .filter(|id| *id != me)
            .collect();
        let digest = view_digest(&without);
        without
            .iter()
            .filter_map(|id| self.io.peers.get(id, 0).ok())
            .any(|p| p.view_digest == digest)
    }

    /// After waking later than asked (this thread, or the whole machine, could not run),
    /// excuses the peers' silence during the stall: their heartbeats may have been held up
    /// by the same stop.
    fn excuse_own_stall(&mut self, asked: Option<u64>) {
        let Some(asked) = asked else { return };
        let now = monotonic_ns();
        let late = now.saturating_sub(asked);
        if late > STALL_NS {
            self.membership.excuse_stall(0, now, late);
            self.ch.shared.stats.record_stall(late);
        }
    }

    /// Excuses the peers' silence during the stalls of this node's CPUs, as the shadows
    /// saw them (a stall still going on counts until now): a heartbeat that reached a
    /// stopped CPU waits with it.
    fn excuse_cpu_stalls(&mut self, now: u64) {
        let interval = self.cfg.pool.interval.as_nanos() as u64;
        let period = shadow::check_period(interval, self.cfg.pool.dead_interval.as_nanos() as u64);
        let n = usize::from(self.io.vouch.shadows.load(Ordering::Acquire));
        for (i, cpu) in self.io.vouch.cpus.iter().take(n).enumerate() {
            if let Some((end, len)) = cpu.stall(now, period, STALL_NS) {
                self.membership.excuse_stall(1 + i, end, len);
            }
        }
    }

    /// A heartbeat more than half an interval after its slot counts as late.
    fn send_tolerance_ns(&self) -> u64 {
        self.cfg.pool.interval.as_nanos() as u64 / 2
    }

    fn report(&self, r: Report) {
        self.ch.report(r);
    }

    /// Whether this node takes VIPs: past its hold-down, with carrier, and healthy.
    fn active(&self) -> bool {
        self.mature && self.carrier && self.healthy
    }

    fn flags(&self) -> u8 {
        if self.active() { FLAG_MATURE } else { 0 }
    }

    /// The node state for logs, hooks and status.
    fn state_name(&self) -> &'static str {
        if !self.carrier {
            "fault"
        } else if !self.healthy {
            "withdrawn"
        } else if !self.mature {
            "holding-down"
        } else {
            "active"
        }
    }

    /// Sends this node's heartbeat now, with the state section if one is due: at its slot,
    /// or out of turn when something changed (the slots stay as they are, in step with the
    /// shadows).
    fn heartbeat(&mut self) {
        let mut section = self.state_section_due();
        if section.is_empty() {
            section = self.list_chunk_due();
        }
        let (flags, digest) = (self.flags(), self.view_digest);
        // Taken now: peers read a bit as "heard within 1.25 intervals before it was sent".
        self.take_hears();
        let sent = self.io.heartbeats.send(flags, digest, &section);
        let now = monotonic_ns();
        self.io.vouch.sent(now, flags, digest);
        // Alive as the peers see it: the XDP program answers for our VIPs until a dead
        // interval after this heartbeat, when they would take them over (see
        // `maps::FENCE_MAP`).
        let _ = self.io.fence.set(Fence::Pool as u32, now, 0);
        match sent {
            Ok(()) if self.send_failing => {
                self.send_failing = false;
                self.report(Report::SendFailing(None));
            }
            Err(e) if !self.send_failing => {
                self.send_failing = true;
                self.report(Report::SendFailing(Some(e.to_string())));
            }
            _ => {}
        }
    }

    /// Reads the view members' last heartbeats from the peer table (one lookup each) and
    /// sets the `hears` bits of the heartbeat about to go out.
    fn take_hears(&mut self) {
        let now = monotonic_ns();
        let peers = &self.io.peers;
        let bits = Membership::hears_bits(
            &self.view_ids,
            self.cfg.node.id,
            |id| peers.get(&id, 0).ok().map(|p| p.last_seen_ns),
            now,
            hears_window(self.cfg.pool.interval.as_nanos() as u64),
        );
        self.io.heartbeats.set_hears(bits);
    }

    /// The state section to put in the next heartbeat, if one is due.
    fn state_section_due(&mut self) -> Vec<u8> {
        let now = monotonic_ns();
        if self.state_burst == 0 && now.saturating_sub(self.last_state_sent_ns) < STATE_REFRESH_NS {
            return Vec::new();
        }
        self.state_burst = self.state_burst.saturating_sub(1);
        self.last_state_sent_ns = now;
        let count = self.pool.len() as u16;
        // Echo as many peers as fit in the datagram (the newest first: they wait for it).
        let room = MAX_DATAGRAM - HEADER_LEN - AUTH_LEN - WireState::len_for(count, 0);
        let echoes = self
            .membership
            .echoes(now, (room / ECHO_LEN).min(MAX_ECHOES));
        let mut out = vec![0u8; WireState::len_for(count, echoes.len())];
        WireState::write(
            &mut out,
            self.pool_digest,
            count,
            |i| self.held.contains_key(&self.pool[i]),
            &echoes,
        );
        out
    }

    /// The next chunk of this node's VIP list, while a round is being sent.
    fn list_chunk_due(&mut self) -> Vec<u8> {
        if self.list_left == 0 || self.list_chunks.is_empty() {
            return Vec::new();
        }
        self.list_left -= 1;
        let i = self.list_next % self.list_chunks.len();
        self.list_next = i + 1;
        self.list_chunks[i].clone()
    }

    /// Reads the slow path's carrier and health verdicts; returns whether they changed.
    fn take_verdicts(&mut self) -> bool {
        let carrier = self.io.verdicts.carrier.load(Ordering::Relaxed);
        let healthy = self.io.verdicts.healthy.load(Ordering::Relaxed);
        let changed = carrier != self.carrier || healthy != self.healthy;
        if healthy != self.healthy {
            self.healthy = healthy;
            self.state_burst = STATE_BURST;
        }
        if carrier != self.carrier {
            self.carrier = carrier;
            if carrier {
                // Start the hold-down again: a flapping link must not drag VIPs around.
                self.mature_at = monotonic_ns() + self.cfg.pool.hold_down.as_nanos() as u64;
            } else {
                self.mature = false;
                self.release_all();
            }
        }
        changed
    }

    /// A command from the slow path; returns whether to reconcile.
    fn on_command(&mut self, command: Command) -> bool {
        match command {
            Command::Verified { peer, incarnation } => {
                let new = !self.membership.is_verified(peer, incarnation);
                self.membership.verify(peer, incarnation);
                new
            }
            Command::Holdings { peer, vips } => {
                let changed = self.peers.get(&peer) != Some(&vips);
                self.peers.insert(peer, vips);
                changed
            }
            Command::PeerList { peer, vips } => match vips {
                Some(vips) => self.lists.insert(peer, vips).as_ref() != self.lists.get(&peer),
                None => self.lists.remove(&peer).is_some(),
            },
            Command::SendList => {
                if self.list_left == 0 {
                    self.list_left = self.list_chunks.len();
                }
                self.state_burst = STATE_BURST;
                false
            }
            Command::Reload(cfg) => {
                let old: BTreeSet<IpAddr> = self.pool.iter().copied().collect();
                self.pool = cfg.pool.vips.iter().map(|v| v.addr).collect();
                self.added = self
                    .pool
                    .iter()
                    .filter(|v| !old.contains(v))
                    .copied()
                    .collect();
                let interval = cfg.pool.interval.as_nanos() as u64;
                self.added_until = monotonic_ns() + (3 * interval).max(RELOAD_SETTLE_NS);
                self.pool_digest = pool_digest(&cfg.pool.vips);
                self.list_chunks = lists::chunks(&cfg.pool.vips);
                (self.list_next, self.list_left) = (0, 0);
                self.io.heartbeats.set_weight(cfg.pool.weight);
                if cfg.pool.peers != self.cfg.pool.peers {
                    self.io
                        .heartbeats
                        .set_destinations(&cfg.pool.destinations());
                }
                if let Some(key) = cfg.pool.auth_key {
                    self.io.heartbeats.set_key(key);
                }
                self.io
                    .vouch
                    .weight
                    .store(cfg.pool.weight, Ordering::Relaxed);
                self.membership
                    .set_heal_delay(cfg.pool.heal_delay.as_nanos() as u64);
                self.cfg = *cfg;
                self.state_burst = STATE_BURST;
                true
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
                false
            }
            Command::Restore(addrs) => {
                self.restore(addrs);
                false
            }
            Command::SendHoldings => {
                self.state_burst = STATE_BURST;
                self.heartbeat();
                false
            }
        }
    }

    /// An event from the XDP program.
    fn on_event(&mut self, ev: PeerEvent) {
        let kind = EventKind::from_u8(ev.kind);
        if kind == Some(EventKind::Restarted) {
            self.peers.remove(&ev.node_id);
        }
        if matches!(
            kind,
            Some(EventKind::NewPeer | EventKind::Restarted | EventKind::Returned)
        ) {
            // It needs to learn what we hold, and our echo of its incarnation.
            self.state_burst = STATE_BURST;
        }
        self.report(Report::XdpEvent(ev));
    }

    /// Whether a peer's deadline or the end of the hold-down has passed.
    fn timer_due(&self, now: u64) -> bool {
        self.next_timer().is_some_and(|t| t <= now)
    }

    /// The next moment something can change without a packet: a peer's deadline, or the
    /// end of our hold-down.
    fn next_timer(&self) -> Option<u64> {
        let hold_down = (self.carrier && !self.mature).then_some(self.mature_at);
        let full_scan = self.last_full_scan_ns + FULL_SCAN_NS;
        let added = (!self.added.is_empty()).then_some(self.added_until);
        earliest([
            self.membership.next_deadline(),
            hold_down,
            Some(full_scan),
            added,
        ])
    }

    /// Reads the peer table (all of it, or the peers named and the view's members),
    /// updates the view, places the pool and acts.
    fn reconcile(&mut self, now: u64, scan: Scan) {
        if self.carrier && !self.mature && now >= self.mature_at {
            self.mature = true;
            self.report(Report::Mature);
            // Tell peers at once, so they hand over this node's share together with it.
            self.state_burst = STATE_BURST;
            self.heartbeat();
        }
        let full = matches!(scan, Scan::All);
        let table = match scan {
            Scan::All => {
                self.last_full_scan_ns = now;
                self.read_table()
            }
            Scan::Ids(mut ids) => {
                // The view, and every peer that may vouch for a silent member: fresh.
                ids.extend(self.membership.view_peers());
                ids.extend(self.membership.witnesses(now));
                ids.iter()
                    .filter_map(|id| self.io.peers.get(id, 0).ok())
                    .collect()
            }
        };
        if self.update(table, now) {
            // What we hold changed: say so now rather than at the next slot.
            self.heartbeat();
        }
        if full {
            self.forget(now);
        }
    }

    /// The whole peer table, the heartbeat kept on time while a big one is read.
    fn read_table(&mut self) -> Vec<PeerState> {
        let keys: Vec<u32> = self.io.peers.keys().filter_map(Result::ok).collect();
        let mut table = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(SCAN_CHUNK) {
            table.extend(chunk.iter().filter_map(|id| self.io.peers.get(id, 0).ok()));
            self.send_if_due();
        }
        table
    }

    /// Sends the heartbeat if its slot has come (inside long work).
    fn send_if_due(&mut self) {
        let now = monotonic_ns();
        if self.send.due(now) {
            let late = self.send.advance(now);
            self.heartbeat();
            self.ch
                .shared
                .stats
                .record_send(late, self.send_tolerance_ns());
        }
    }

    /// Forgets long-silent peers outside the view, and removes them from the table.
    fn forget(&mut self, now: u64) {
        let max = vipd_common::maps::MAX_PEERS as usize;
        let gone = self.membership.forget(now, FORGET_AFTER_NS, max);
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            self.peers.remove(id);
            self.lists.remove(id);
            let _ = self.io.peers.remove(id);
        }
        self.report(Report::Forgotten(gone));
    }

    /// Feeds a peer table snapshot; places and acts. Returns whether what we hold changed.
    fn update(&mut self, table: Vec<PeerState>, now: u64) -> bool {
        let transitions = self.membership.observe(table, now);
        let vouched = self.membership.vouched(now);
        if vouched != self.vouched {
            self.vouched.clone_from(&vouched);
            self.report(Report::Vouched(vouched));
        }
        let mut returning = false;
        for t in transitions {
            match t {
                Transition::Left {
                    node_id,
                    because: LeftBecause::Timeout { .. },
                } => {
                    self.timed_out.insert(node_id);
                }
                Transition::Joined { node_id } => returning |= self.timed_out.remove(&node_id),
                Transition::Left { .. } => {}
            }
            if matches!(t, Transition::Left { .. }) {
                self.last_loss_ns = Some(now);
            }
            let id = match t {
                Transition::Joined { node_id } | Transition::Left { node_id, .. } => node_id,
            };
            let peer = self.membership.peer(id);
            self.report(Report::Transition {
                transition: t,
                at_ns: now,
                last_seen_ns: peer.map_or(0, |p| p.last_seen_ns),
                weight: peer.map_or(0, |p| p.weight),
            });
        }
        let state = self.state_name();
        if state != self.node_state {
            self.node_state = state;
            self.report(Report::NodeState(state));
        }
        let members = self.members();
        self.check_views(&members);
        let holders = self.holders(&members);
        // Peers back from a timeout, waiting out the heal delay: no VIPs are placed on
        // them yet, but what they hold counts (a VIP both sides took is settled now).
        let healing = self.membership.returning(now);
        // A peer lost by timeout is back: clients may have followed it meanwhile, so what
        // is held here is announced again now (not only once its heal delay is over).
        for id in &healing {
            returning |= self.timed_out.remove(id);
        }
        self.track_conflicts(&members, &healing);
        if !self.carrier {
            // Nothing to place on a dead link (everything was released on carrier loss).
            return false;
        }
        // Not active (holding down, or withdrawn by a failing check): we are not a member,
        // so placement gives us nothing and whatever we hold is released below.
        let assignment = placement::place_by_lists(
            &self.pool,
            &members,
            &self.lists,
            &holders,
            &self.cfg.pool.preferred,
            self.cfg.pool.preempt,
        );
        let me = self.cfg.node.id;
        // Take over first: that is the urgent half. A VIP another member still says it
        // holds is its to hand over: taken once its state section no longer lists it (a
        // hand-back never puts a VIP on two nodes; a lost node is no member, so a
        // takeover never waits).
        let claimed = self.claimed_by_others(&members, &healing);
        // The split-brain rule with a returning peer, as `holders` has it among members:
        // of two claimants the lower id keeps the VIP.
        let yielded: BTreeMap<IpAddr, u32> = self
            .peers
            .iter()
            .filter(|(id, _)| healing.contains(id) && **id < me)
            .flat_map(|(id, vips)| vips.iter().map(move |v| (*v, *id)))
            .filter(|(v, _)| self.held.contains_key(v))
            .collect();
        if now >= self.added_until {
            self.added.clear();
        }
        let to_take: Vec<Vip> = self
            .cfg
            .pool
            .vips
            .iter()
            .filter(|v| {
                assignment.get(&v.addr) == Some(&me)
                    && !self.held.contains_key(&v.addr)
                    && !claimed.contains(&v.addr)
                    && !self.added.contains(&v.addr)
            })
            .copied()
            .collect();
        let to_release: Vec<(Vip, Option<u32>)> = self
            .held
            .values()
            .filter(|v| assignment.get(&v.addr) != Some(&me) || yielded.contains_key(&v.addr))
            .map(|v| {
                let to = yielded.get(&v.addr).or(assignment.get(&v.addr));
                (*v, to.copied())
            })
            .collect();
        let mut changed = false;
        if !to_take.is_empty() {
            changed |= self.take(&to_take);
        }
        if !to_release.is_empty() {
            self.release(&to_release);
            changed = true;
        }
        if changed {
            self.state_burst = STATE_BURST;
        }
        if returning {
            self.announce_held_again();
        }
        changed
    }

    /// A peer declared lost came back (a partition healed, a frozen node thawed): it may
    /// have answered for VIPs held here meanwhile, and clients may still send to it. Every
    /// held VIP is announced again (with repeats), so they come back here at once.
    fn announce_held_again(&mut self) {
        let held: Vec<IpAddr> = self.held.keys().copied().collect();
        if held.is_empty() {
            return;
        }
        self.io
            .announcer
            .announce_many(&held, self.cfg.common.announce_burst);
        self.report(Report::AnnouncedAgain(held));
    }

    /// The view with weights, this node included when active, in id order.
    fn members(&self) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .membership
            .view_peers()
            .into_iter()
            .map(|id| Member {
                id,
                weight: self.membership.peer(id).map_or(1, |p| {
                    u32::from(p.weight.clamp(1, self.cfg.pool.max_weight))
                }),
            })
            .collect();
        if self.active() {
            members.push(Member {
                id: self.cfg.node.id,
                weight: u32::from(self.cfg.pool.weight),
            });
        }
        members.sort();
        members
    }

    /// Who holds what now: our own addresses and what members said in their heartbeats;
    /// a VIP claimed twice counts as the lower id's.
    fn holders(&self, members: &[Member]) -> BTreeMap<IpAddr, u32> {
        let mut holders: BTreeMap<IpAddr, u32> = BTreeMap::new();
        let claims = self.held.keys().map(|v| (*v, self.cfg.node.id)).chain(
            self.peers
                .iter()
                .filter(|(id, _)| members.iter().any(|m| m.id == **id))
                .flat_map(|(id, vips)| vips.iter().map(move |v| (*v, *id))),
        );
        for (vip, id) in claims {
            holders
                .entry(vip)
                .and_modify(|h| *h = (*h).min(id))
                .or_insert(id);
        }
        holders
    }

    /// Reports when the members' view digests stop or start agreeing with ours.
    fn check_views(&mut self, members: &[Member]) {
        let ids: Vec<u32> = members.iter().map(|m| m.id).collect();
        self.view_digest = view_digest(&ids);
        self.membership.set_view(&ids);
        self.view_ids.clone_from(&ids);
        let differing: Vec<u32> = ids
            .iter()
            .filter(|id| **id != self.cfg.node.id)
            .filter(|id| {
                self.membership
                    .peer(**id)
                    .is_some_and(|p| p.view_digest != self.view_digest)
            })
            .copied()
            .collect();
        let agree = differing.is_empty();
        if agree != self.views_agree {
            self.views_agree = agree;
            self.report(Report::Views {
                agree,
                view: ids,
                differing,
            });
        }
    }

    /// The VIPs the other members, and the peers `returning` from a timeout, say they hold
    /// (their latest state sections).
    fn claimed_by_others(&self, members: &[Member], returning: &[u32]) -> BTreeSet<IpAddr> {
        self.peers
            .iter()
            .filter(|(id, _)| {
                **id != self.cfg.node.id
                    && (members.iter().any(|m| m.id == **id) || returning.contains(id))
            })
            .flat_map(|(_, vips)| vips.iter().copied())
            .collect()
    }

    /// Re-announces held VIPs that stopped being claimed by a peer: after a split brain the
    /// segment must learn our MAC again.
    fn track_conflicts(&mut self, members: &[Member], returning: &[u32]) {
        let claimed_by_peers = self.claimed_by_others(members, returning);
        let now: BTreeSet<IpAddr> = self
            .held
            .keys()
            .filter(|v| claimed_by_peers.contains(v))
            .copied()
            .collect();
        for vip in now.difference(&self.conflicts) {
            self.report(Report::Conflict(*vip));
            self.state_burst = STATE_BURST;
        }
        let resolved: Vec<IpAddr> = self
            .conflicts
            .difference(&now)
            .filter(|v| self.held.contains_key(v))
            .copied()
            .collect();
        if !resolved.is_empty() {
            self.io
                .announcer
                .announce_many(&resolved, self.cfg.common.announce_burst);
            for vip in resolved {
                self.report(Report::ConflictResolved(vip));
            }
        }
        self.conflicts = now;
    }

    /// Adds and announces `vips` in batches, each batch announced as soon as its addresses
    /// are in, heartbeats kept on time in between. Returns whether any is now held.
    fn take(&mut self, vips: &[Vip]) -> bool {
        let taken = self.add(vips);
        let any = !taken.is_empty();
        if any {
            self.report(Report::Taken(taken));
        }
        any
    }

    /// Adds held VIPs that were removed from outside (`None`: any held VIP) again, and
    /// announces them; one the kernel refuses is no longer held (and retried like any
    /// take).
    fn restore(&mut self, addrs: Option<Vec<IpAddr>>) {
        let vips: Vec<Vip> = match addrs {
            Some(addrs) => addrs
                .iter()
                .filter_map(|a| self.held.get(a))
                .copied()
                .collect(),
            None => self.held.values().copied().collect(),
        };
        if vips.is_empty() {
            return;
        }
        for v in &vips {
            self.held.remove(&v.addr);
        }
        let restored: Vec<Vip> = self
            .add(&vips)
            .into_iter()
            .filter(|t| !t.already_present)
            .map(|t| t.vip)
            .collect();
        if vips.iter().any(|v| !self.held.contains_key(&v.addr)) {
            // Not held any more: peers must hear it now.
            self.state_burst = STATE_BURST;
            self.heartbeat();
        }
        if !restored.is_empty() {
            self.report(Report::Restored(restored));
        }
    }

    /// Adds `vips` in batches, announcing each, the heartbeat kept on time; they are held
    /// once added. Failures are reported (once until they succeed). Returns what was added.
    fn add(&mut self, vips: &[Vip]) -> Vec<holder::Taken> {
        let loss_ns = self
            .last_loss_ns
            .filter(|l| monotonic_ns().saturating_sub(*l) < 1_000_000_000);
        let burst = self.cfg.common.announce_burst;
        let tolerance = self.send_tolerance_ns();
        let (flags, digest) = (self.flags(), self.view_digest);
        let Io {
            addrs,
            announcer,
            heartbeats,
            vouch,
            fence,
            ifindex,
            ..
        } = &mut self.io;
        let (send, stats) = (&mut self.send, &self.ch.shared.stats);
        let (taken, failed) =
            holder::take(addrs, announcer, *ifindex, vips, burst, loss_ns, || {
                // A long batch must not make the peers declare this node dead.
                let now = monotonic_ns();
                if send.due(now) {
                    let late = send.advance(now);
                    let _ = heartbeats.send(flags, digest, &[]);
                    let now = monotonic_ns();
                    vouch.sent(now, flags, digest);
                    let _ = fence.set(Fence::Pool as u32, now, 0);
                    stats.record_send(late, tolerance);
                }
            });
        for t in &taken {
            self.held.insert(t.vip.addr, t.vip);
            self.take_failed.remove(&t.vip.addr);
        }
        for (vip, e) in failed {
            // Not held: the next reconcile tries again; said once.
            if self.take_failed.insert(vip.addr) {
                self.report(Report::TakeFailed {
                    vip,
                    error: e.to_string(),
                });
            }
        }
        taken
    }

    /// Removes `vips` (each with the node placement gives it to); a VIP the kernel would
    /// not remove stays held, so the next reconcile retries and peers are not told it is
    /// free while it is not.
    fn release(&mut self, vips: &[(Vip, Option<u32>)]) {
        let released = holder::release(&mut self.io.addrs, self.io.ifindex, vips);
        for r in &released {
            if !matches!(r.outcome, Outcome::Failed(_)) {
                self.held.remove(&r.vip.addr);
            }
        }
        self.report(Report::Released(released));
    }

    fn release_all(&mut self) {
        let all: Vec<(Vip, Option<u32>)> = self.held.values().map(|v| (*v, None)).collect();
        if !all.is_empty() {
            self.release(&all);
        }
    }

    /// Leaves the cluster: LEAVING heartbeats, then every VIP released.
    fn stop(mut self) {
        // No shadow may send an ordinary heartbeat after LEAVING.
        self.io.vouch.stop.store(true, Ordering::Relaxed);
        for shadow in std::mem::take(&mut self.io.shadows) {
            let _ = shadow.join();
        }
        for _ in 0..LEAVING_BURST {
            let _ = self.io.heartbeats.send(FLAG_LEAVING, self.view_digest, &[]);
        }
        self.release_all();
        let h = &self.io.heartbeats;
        self.report(Report::Stopped {
            sent: h.sent,
            failed: h.failed,
            sequence: h.sequence(),
        });
    }

    /// The fast path's part of `vipd status`.
    fn status(&self) -> Status {
        let now = monotonic_ns();
        let mut view = self.membership.view_peers();
        if self.active() {
            view.push(self.cfg.node.id);
        }
        view.sort_unstable();
        let returning = self.membership.returning(now);
        let peers = self
            .membership
            .peers()
            .map(|(p, in_view)| PeerStatus {
                id: p.node_id,
                last_seen_ms_ago: now.saturating_sub(p.last_seen_ns) as f64 / 1e6,
                in_view,
                state: match self.vouched.iter().find(|(id, _)| *id == p.node_id) {
                    Some((_, by)) => format!("up (not heard here; node {by} hears it)"),
                    None if returning.contains(&p.node_id) => "returning (heal delay)".into(),
                    None => {
                        peer_state(p, now, self.cfg.pool.dead_interval.as_nanos() as u64).into()
                    }
                },
                weight: p.weight,
                same_view: p.view_digest == self.view_digest,
                other_vip_list: self.lists.contains_key(&p.node_id),
                received: p.received,
                missed: p.missed,
            })
            .collect();
        let vips = self
            .cfg
            .pool
            .vips
            .iter()
            .map(|v| {
                let owner = if self.held.contains_key(&v.addr) {
                    Some(self.cfg.node.id)
                } else {
                    self.peers
                        .iter()
                        .filter(|(id, _)| view.contains(id))
                        .find(|(_, vips)| vips.contains(&v.addr))
                        .map(|(id, _)| *id)
                };
                VipStatus {
                    vip: v.to_string(),
                    owner,
                }
            })
            .collect();
        Status {
            state: self.state_name().into(),
            view,
            views_agree: Some(self.views_agree),
            peers,
            vips,
            ..Status::default()
        }
    }
}

/// A record of the event ring, if whole.
fn read_event(item: &[u8]) -> Option<PeerEvent> {
    (item.len() >= size_of::<PeerEvent>()).then(|| {
        // SAFETY: PeerEvent is plain old data and the item holds at least that many bytes.
        unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) }
    })
}

/// A peer's state for status: up, holding-down, leaving or down.
fn peer_state(p: &PeerState, now: u64, dead_ns: u64) -> &'static str {
    if now.saturating_sub(p.last_seen_ns) >= dead_ns {
        "down"
    } else if is_leaving(p.flags) {
        "leaving"
    } else if p.flags & FLAG_MATURE != 0 {
        "up"
    } else {
        "holding-down"
    }
}
