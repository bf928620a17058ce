//! The pool's decisions as a state machine: what this node holds, takes and gives back,
//! and what its next heartbeat says, from the peer table the XDP program keeps, the slow
//! path's commands, the carrier and health verdicts and the time.
//!
//! Everything it touches goes through [`Edges`]: the fast path ([`super::fast`]) implements
//! it over the XDP maps, sockets and rtnetlink on its real-time thread; the deterministic
//! simulator (`cargo xtask sim`) over memory, a virtual clock and a simulated link. Given
//! the same calls and the same answers, it does the same thing: no clock, no randomness
//! and no I/O of its own.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use vipd_common::{
    auth::AUTH_LEN,
    heartbeat::{
        ECHO_LEN, FLAG_MATURE, FLAG_PARTIAL, HEADER_LEN, MAX_ECHOES, State as WireState,
        is_leaving, view_digest,
    },
    maps::{EventKind, PeerState},
};

use super::{
    STATE_BURST, STATE_REFRESH_NS, lists,
    membership::{LeftBecause, Membership, Transition, hears_window},
    messages::{Command, Report},
    placement::{self, Member},
    pool_digest,
};
use crate::{
    config::Config,
    control::{PeerStatus, Status, VipStatus},
    fastpath::sends::SendWatch,
    heartbeat::MAX_DATAGRAM,
    holder::{Released, Taken},
    ifaddr::Outcome,
    vip::Vip,
};

/// Least time a reload's new VIPs wait before they are taken (see `Decide::added`).
const RELOAD_SETTLE_NS: u64 = 250_000_000;
/// Peers outside the view silent this long are forgotten (and removed from the table).
pub const FORGET_AFTER_NS: u64 = 60_000_000_000;
/// How often the whole peer table is read (between times, only the peers named by events
/// and the view's members): catches what no event says (a weight or view digest change,
/// events lost to a full ring) at a bounded cost however many ids a flood brings.
pub const FULL_SCAN_NS: u64 = 100_000_000;
/// Peer table entries read between two checks of the heartbeat slot.
const SCAN_CHUNK: usize = 32;
/// How long a VIP may be claimed by nobody this node knows of before the lowest id of its
/// view (of those that see all of it) takes it whatever placement says: views that differ (a partial partition) can
/// each place it on a node that places it elsewhere. Longer than the refresh of state
/// sections, so a claim not heard yet is not overridden.
const ORPHAN_NS: u64 = STATE_REFRESH_NS + STATE_REFRESH_NS / 4;
/// How long after a loss a takeover still reports the loss's time (its latency).
const LOSS_REPORTED_NS: u64 = 1_000_000_000;

/// A heartbeat to send: its flags, the sender's view digest, the `hears` bits and the
/// state section or list chunk (may be empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outgoing {
    pub flags: u8,
    pub view_digest: u64,
    pub hears: u64,
    pub section: Vec<u8>,
}

/// What the state machine acts on and reads. Calls happen in the order the decisions
/// need them; an implementation answers at once (the simulator may make an add fail or
/// take virtual time).
pub trait Edges {
    /// CLOCK_MONOTONIC now, in ns.
    fn now(&self) -> u64;
    /// A peer's entry in the XDP program's table.
    fn peer(&self, id: u32) -> Option<PeerState>;
    /// Every id in the table.
    fn peer_ids(&self) -> Vec<u32>;
    /// Whether this node's heartbeat slot has come (the schedule moves on when it has).
    fn heartbeat_due(&mut self) -> bool;
    /// Sends a heartbeat now and moves the self-fencing clock to its time.
    fn send(&mut self, hb: &Outgoing) -> Result<(), String>;
    /// When this node last sent a heartbeat (its own or a shadow sender's), 0 if never.
    fn last_sent(&self) -> u64;
    /// Adds `vips` and announces them in batches; between batches a heartbeat whose slot
    /// has come goes out with `keepalive` (no state section), unless the node has been
    /// silent for the dead interval (then [`Decide::heartbeat`] yields first). Returns what was added and
    /// what failed, with why.
    fn add(
        &mut self,
        vips: &[Vip],
        keepalive: &Outgoing,
        loss_ns: Option<u64>,
    ) -> (Vec<Taken>, Vec<(Vip, String)>);
    /// Removes `vips` (each with who it goes to).
    fn remove(&mut self, vips: &[(Vip, Option<u32>)]) -> Vec<Released>;
    /// Announces held addresses again (gratuitous ARP / unsolicited NA, with repeats).
    fn announce(&mut self, addrs: &[IpAddr]);
    /// A reload: gives the heartbeat senders `new`'s weight, destinations and key.
    fn reconfigure(&mut self, old: &Config, new: &Config);
    /// Tells the slow path (never waits: a report that does not fit is dropped, counted).
    fn report(&mut self, report: Report);
}

/// Which peers a reconcile reads from the table.
pub enum Scan {
    /// Every entry.
    All,
    /// These ids (and the view's members, and the peers that may vouch for them).
    Ids(BTreeSet<u32>),
}

/// The pool as this node runs it.
pub struct Decide {
    cfg: Config,
    /// The pool, sorted (bit i of a state section is `pool[i]`).
    pool: Vec<IpAddr>,
    pool_digest: u32,
    membership: Membership,
    mature_at: u64,
    mature: bool,
    carrier: bool,
    healthy: bool,
    held: BTreeMap<IpAddr, Vip>,
    /// What each peer last said it holds, and in which of its incarnations.
    peers: BTreeMap<u32, (u64, BTreeSet<IpAddr>)>,
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
    /// VIPs nobody claims (not this node, no member or returning peer), since when.
    unclaimed_since: BTreeMap<IpAddr, u64>,
    /// VIPs no member this node hears directly claims (nor this node), since when: the
    /// orphan clock when no member sees the whole view. Kept beside the other, so a
    /// change of basis (the member that saw all stops being one) does not restart it.
    unclaimed_heard_since: BTreeMap<IpAddr, u64>,
    /// Held VIPs taken because nobody claimed them (see [`ORPHAN_NS`]).
    orphans: BTreeSet<IpAddr>,
    /// This node sees the cluster only in part (see [`FLAG_PARTIAL`]), and since when.
    partial: bool,
    partial_since: Option<u64>,
    /// The end of this hold-down waits for a member's view ([`Decide::member_sees_more`]).
    waited_for_view: bool,
    view_digest: u64,
    views_agree: bool,
    state_burst: u8,
    last_state_sent_ns: u64,
    node_state: &'static str,
    /// When the last peer loss was declared, for the takeover latency.
    last_loss_ns: Option<u64>,
    /// VIPs whose failure to be added was reported (once until they are added).
    take_failed: BTreeSet<IpAddr>,
    /// Failing heartbeat sends, said once per episode.
    sends: SendWatch,
    /// When the whole peer table was last read.
    last_full_scan_ns: u64,
    /// The view as announced (ids in order, this node included when active).
    view_ids: Vec<u32>,
    /// Peers kept in the view on another member's word, as last reported.
    vouched: Vec<(u32, u32)>,
    /// Peers that left the view by timeout (their return is a heal).
    timed_out: BTreeSet<u32>,
}

impl Decide {
    /// The pool of `cfg` on a node starting at `now` (holding down), with the verdicts as
    /// they are.
    pub fn new(cfg: Config, now: u64, carrier: bool, healthy: bool) -> Self {
        let mut membership = Membership::new(cfg.pool.dead_interval.as_nanos() as u64);
        membership.set_heal_delay(cfg.pool.heal_delay.as_nanos() as u64);
        Self {
            pool: cfg.pool.vips.iter().map(|v| v.addr).collect(),
            pool_digest: pool_digest(&cfg.pool.vips),
            membership,
            mature_at: now + cfg.pool.hold_down.as_nanos() as u64,
            mature: false,
            carrier,
            healthy,
            held: BTreeMap::new(),
            peers: BTreeMap::new(),
            lists: BTreeMap::new(),
            list_chunks: lists::chunks(&cfg.pool.vips),
            list_next: 0,
            list_left: 0,
            added: BTreeSet::new(),
            added_until: 0,
            conflicts: BTreeSet::new(),
            unclaimed_since: BTreeMap::new(),
            unclaimed_heard_since: BTreeMap::new(),
            orphans: BTreeSet::new(),
            partial: false,
            partial_since: None,
            waited_for_view: false,
            view_digest: 0,
            views_agree: true,
            state_burst: STATE_BURST,
            last_state_sent_ns: 0,
            node_state: "",
            last_loss_ns: None,
            take_failed: BTreeSet::new(),
            sends: SendWatch::default(),
            last_full_scan_ns: 0,
            view_ids: Vec::new(),
            vouched: Vec::new(),
            timed_out: BTreeSet::new(),
            cfg,
        }
    }

    /// The running configuration.
    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    /// The VIPs held, as this node knows them.
    pub fn held(&self) -> impl Iterator<Item = &Vip> {
        self.held.values()
    }

    /// The view digest of the last heartbeat.
    /// Whether peer `id` is in this node's view.
    pub fn in_view(&self, id: u32) -> bool {
        self.view_ids.contains(&id)
    }

    pub fn view_digest(&self) -> u64 {
        self.view_digest
    }

    /// Whether this node takes VIPs: past its hold-down, with carrier, and healthy.
    pub fn active(&self) -> bool {
        self.mature && self.carrier && self.healthy
    }

    /// The flags of this node's heartbeats.
    pub fn flags(&self) -> u8 {
        let mature = if self.active() { FLAG_MATURE } else { 0 };
        let partial = if self.partial { FLAG_PARTIAL } else { 0 };
        mature | partial
    }

    /// The heartbeat the keep-alives of a long takeover send (no state section; the caller
    /// sets the `hears` bits, under the view whose digest it carries).
    pub fn keepalive(&self) -> Outgoing {
        Outgoing {
            flags: self.flags(),
            view_digest: self.view_digest,
            ..Outgoing::default()
        }
    }

    /// The node state for logs, hooks and status.
    pub fn state_name(&self) -> &'static str {
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

    /// After a silence of the dead interval (the process was frozen, or hung past what the
    /// shadows cover): the peers have declared this node lost and taken its VIPs, so it
    /// gives back whatever it still holds and starts its hold-down again, before its first
    /// heartbeat, instead of claiming them a second time.
    pub fn yield_after_silence(&mut self, fx: &mut impl Edges) {
        let now = fx.now();
        let last = fx.last_sent();
        let silent = now.saturating_sub(last);
        if last == 0
            || silent < self.cfg.pool.dead_interval.as_nanos() as u64
            || !self.dropped_by_peers(fx, last)
        {
            return;
        }
        fx.report(Report::Silenced {
            silent_ns: silent,
            held: self.held.len(),
        });
        self.release_all(fx);
        self.mature = false;
        self.mature_at = now + self.cfg.pool.hold_down.as_nanos() as u64;
        self.state_burst = STATE_BURST;
    }

    /// A member whose view holds nodes this node does not have (its digest is neither this
    /// node's members' nor theirs with this node): it hears a node this one does not — a
    /// cut this node sees one side of. Such a node does not end its hold-down: placing the
    /// pool over the part it sees would take VIPs the unseen nodes hold (a restart during a
    /// cut put them on two nodes); it waits, holding nothing, until it sees what its
    /// members see. (A node running does not stop taking over for this: a takeover waits
    /// for nothing.)
    fn member_sees_more(&self) -> Option<u32> {
        let me = self.cfg.node.id;
        let mut peers = self.membership.view_peers();
        peers.sort_unstable();
        let without = view_digest(&peers);
        let mut with: Vec<u32> = peers.iter().copied().chain([me]).collect();
        with.sort_unstable();
        let with = view_digest(&with);
        peers.iter().copied().find(|id| {
            self.membership
                .peer(*id)
                .is_some_and(|p| p.view_digest != without && p.view_digest != with)
        })
    }

    /// Whether a member heard after this node's silence reached the dead interval (read
    /// now) shows a view without this node: the peers did declare it lost (after a stall
    /// they shared and excused, as when the whole machine paused, their view is still
    /// this node's, and nothing need be given back).
    fn dropped_by_peers(&self, fx: &impl Edges, last_sent: u64) -> bool {
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
        let dead = self.cfg.pool.dead_interval.as_nanos() as u64;
        without
            .iter()
            .filter_map(|id| fx.peer(*id))
            .filter(|p| p.last_seen_ns >= last_sent.saturating_add(dead))
            .any(|p| p.view_digest == digest)
    }

    /// Excuses the peers' silence while `source` (0: this thread, 1 + i: CPU i) could not
    /// run, from `end_ns - len_ns` to `end_ns` (see [`Membership::excuse_stall`]).
    pub fn excuse_stall(&mut self, source: usize, end_ns: u64, len_ns: u64) {
        self.membership.excuse_stall(source, end_ns, len_ns);
    }

    /// Sends the heartbeat if its slot has come (also inside long work).
    pub fn send_if_due(&mut self, fx: &mut impl Edges) {
        if fx.heartbeat_due() {
            self.heartbeat(fx);
        }
    }

    /// Sends this node's heartbeat now, with the state section if one is due: at its slot,
    /// or out of turn when something changed (the slots stay as they are, in step with the
    /// shadows).
    pub fn heartbeat(&mut self, fx: &mut impl Edges) {
        // Silent for the dead interval (a takeover blocked in netlink, a pause): the peers
        // took what this node holds; it gives that back before its next heartbeat says
        // anything (a heartbeat would make the silence look over).
        self.yield_after_silence(fx);
        let mut section = self.state_section_due(fx.now());
        if section.is_empty() {
            section = self.list_chunk_due();
        }
        // Taken now: peers read a bit as "heard within 1.25 intervals before it was sent".
        let hb = Outgoing {
            flags: self.flags(),
            view_digest: self.view_digest,
            hears: self.hears(fx),
            section,
        };
        let sent = fx.send(&hb);
        if let Some(notice) = self
            .sends
            .sent(fx.now(), sent.as_ref().map_err(String::as_str).copied())
        {
            fx.report(Report::Sends(notice));
        }
    }

    /// The `hears` bits: the view members whose last heartbeat (one lookup each) is recent.
    fn hears(&self, fx: &impl Edges) -> u64 {
        Membership::hears_bits(
            &self.view_ids,
            self.cfg.node.id,
            |id| fx.peer(id).map(|p| p.last_seen_ns),
            fx.now(),
            hears_window(self.cfg.pool.interval.as_nanos() as u64),
        )
    }

    /// The state section to put in the next heartbeat, if one is due.
    fn state_section_due(&mut self, now: u64) -> Vec<u8> {
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

    /// The slow path's carrier and health verdicts; returns whether they changed.
    fn verdicts(&mut self, fx: &mut impl Edges, carrier: bool, healthy: bool) -> bool {
        let changed = carrier != self.carrier || healthy != self.healthy;
        if healthy != self.healthy {
            self.healthy = healthy;
            self.state_burst = STATE_BURST;
        }
        if carrier != self.carrier {
            self.carrier = carrier;
            if carrier {
                // Start the hold-down again: a flapping link must not drag VIPs around.
                self.mature_at = fx.now() + self.cfg.pool.hold_down.as_nanos() as u64;
            } else {
                self.mature = false;
                self.release_all(fx);
            }
        }
        changed
    }

    /// A peer, in `incarnation`, echoed our current incarnation; returns whether that is
    /// new.
    fn verified(&mut self, peer: u32, incarnation: u64) -> bool {
        let new = !self.membership.is_verified(peer, incarnation);
        self.membership.verify(peer, incarnation);
        new
    }

    /// What a peer, in `incarnation`, says it holds; returns whether that changed.
    fn holdings(&mut self, peer: u32, incarnation: u64, vips: BTreeSet<IpAddr>) -> bool {
        let entry = (incarnation, vips);
        let changed = self.peers.get(&peer) != Some(&entry);
        self.peers.insert(peer, entry);
        changed
    }

    /// What each peer says it holds, from its current incarnation only: a state section
    /// of an earlier one says nothing of what it holds now (and one of the new incarnation
    /// may be read before the event that says the peer restarted).
    fn claims(&self) -> impl Iterator<Item = (u32, &BTreeSet<IpAddr>)> {
        self.peers
            .iter()
            .filter(|(id, (incarnation, _))| {
                self.membership
                    .peer(**id)
                    .is_some_and(|p| p.incarnation == *incarnation)
            })
            .map(|(id, (_, vips))| (*id, vips))
    }

    /// The VIP list a peer runs when it is not ours (`None`: ours again); returns whether
    /// that changed.
    fn peer_list(&mut self, peer: u32, vips: Option<BTreeSet<IpAddr>>) -> bool {
        match vips {
            Some(vips) => self.lists.insert(peer, vips.clone()).as_ref() != Some(&vips),
            None => self.lists.remove(&peer).is_some(),
        }
    }

    /// A peer runs another list: send ours (one round of chunks).
    fn send_list(&mut self) {
        if self.list_left == 0 {
            self.list_left = self.list_chunks.len();
        }
        self.state_burst = STATE_BURST;
    }

    /// A live peer claims a held VIP: send what this node holds now.
    fn send_holdings(&mut self, fx: &mut impl Edges) {
        self.state_burst = STATE_BURST;
        self.heartbeat(fx);
    }

    /// A reloaded configuration (nothing in it needs a restart); the caller has given the
    /// sockets their new weight, destinations and key.
    fn reload(&mut self, now: u64, cfg: Config) {
        let old: BTreeSet<IpAddr> = self.pool.iter().copied().collect();
        self.pool = cfg.pool.vips.iter().map(|v| v.addr).collect();
        self.added = self
            .pool
            .iter()
            .filter(|v| !old.contains(v))
            .copied()
            .collect();
        let interval = cfg.pool.interval.as_nanos() as u64;
        self.added_until = now + (3 * interval).max(RELOAD_SETTLE_NS);
        self.pool_digest = pool_digest(&cfg.pool.vips);
        self.list_chunks = lists::chunks(&cfg.pool.vips);
        (self.list_next, self.list_left) = (0, 0);
        self.membership
            .set_heal_delay(cfg.pool.heal_delay.as_nanos() as u64);
        self.cfg = cfg;
        self.state_burst = STATE_BURST;
    }

    /// An event from the XDP program (what a restarted peer held no longer counts: see
    /// [`Decide::claims`]).
    fn on_event(&mut self, kind: Option<EventKind>) {
        if matches!(
            kind,
            Some(EventKind::NewPeer | EventKind::Restarted | EventKind::Returned)
        ) {
            // It needs to learn what we hold, and our echo of its incarnation.
            self.state_burst = STATE_BURST;
        }
    }

    /// One turn of the fast path's loop once it woke (after its heartbeat): the slow
    /// path's verdicts and `commands`, the XDP program's `events` (kind, peer), then the
    /// deadlines; reads the peer table and acts when any of them says so. Returns when it
    /// must run again at the latest (a deadline, the hold-down's end, the next full read).
    pub fn turn(
        &mut self,
        fx: &mut impl Edges,
        carrier: bool,
        healthy: bool,
        commands: impl IntoIterator<Item = Command>,
        events: &[(Option<EventKind>, u32)],
    ) -> Option<u64> {
        let mut reconcile = self.verdicts(fx, carrier, healthy);
        for c in commands {
            reconcile |= self.command(fx, c);
        }
        // Events coalesce per peer: a flood costs one read of each peer it names.
        let mut touched = BTreeSet::new();
        for (kind, id) in events {
            self.on_event(*kind);
            touched.insert(*id);
        }
        reconcile |= !touched.is_empty();
        let now = fx.now();
        if self.next_timer().is_some_and(|t| t <= now) {
            reconcile = true;
        }
        if now.saturating_sub(self.last_full_scan_ns) >= FULL_SCAN_NS {
            self.reconcile(fx, Scan::All);
        } else if reconcile {
            self.reconcile(fx, Scan::Ids(touched));
        }
        self.next_timer()
    }

    /// A command from the slow path; returns whether to reconcile.
    fn command(&mut self, fx: &mut impl Edges, command: Command) -> bool {
        match command {
            Command::Verified { peer, incarnation } => self.verified(peer, incarnation),
            Command::Holdings {
                peer,
                incarnation,
                vips,
            } => self.holdings(peer, incarnation, vips),
            Command::PeerList { peer, vips } => self.peer_list(peer, vips),
            Command::SendList => {
                self.send_list();
                false
            }
            Command::Reload(cfg) => {
                fx.reconfigure(&self.cfg, &cfg);
                self.reload(fx.now(), *cfg);
                true
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status(fx.now()));
                false
            }
            Command::Restore(addrs) => {
                self.restore(fx, addrs);
                false
            }
            Command::SendHoldings => {
                self.send_holdings(fx);
                false
            }
        }
    }

    /// The next moment something can change without a packet: a peer's deadline, the end
    /// of our hold-down, the next full read of the table, a reload's new VIPs.
    pub fn next_timer(&self) -> Option<u64> {
        let hold_down = (self.carrier && !self.mature).then_some(self.mature_at);
        let full_scan = self.last_full_scan_ns + FULL_SCAN_NS;
        let added = (!self.added.is_empty()).then_some(self.added_until);
        crate::fastpath::schedule::earliest([
            self.membership.next_deadline(),
            hold_down,
            Some(full_scan),
            added,
        ])
    }

    /// Reads the peer table (all of it, or the peers named and the view's members),
    /// updates the view, places the pool and acts.
    pub fn reconcile(&mut self, fx: &mut impl Edges, scan: Scan) {
        let now = fx.now();
        if self.carrier && !self.mature && now >= self.mature_at {
            if let Some(member) = self.member_sees_more() {
                // Looked at again every interval; said once per hold-down.
                if !self.waited_for_view {
                    self.waited_for_view = true;
                    fx.report(Report::HoldingForView { member });
                }
                self.mature_at = now + self.cfg.pool.interval.as_nanos() as u64;
            } else {
                self.waited_for_view = false;
                self.mature = true;
                fx.report(Report::Mature);
                // Tell peers at once, so they hand over this node's share together with it.
                self.state_burst = STATE_BURST;
                self.heartbeat(fx);
            }
        }
        let full = matches!(scan, Scan::All);
        let table = match scan {
            Scan::All => {
                self.last_full_scan_ns = now;
                self.read_table(fx)
            }
            Scan::Ids(mut ids) => {
                // The view, and every peer that may vouch for a silent member: fresh.
                ids.extend(self.membership.view_peers());
                ids.extend(self.membership.witnesses(now));
                ids.iter().filter_map(|id| fx.peer(*id)).collect()
            }
        };
        if self.update(fx, table, now) {
            // What we hold changed: say so now rather than at the next slot.
            self.heartbeat(fx);
        }
        if full {
            self.forget(fx, now);
        }
    }

    /// The whole peer table, the heartbeat kept on time while a big one is read.
    fn read_table(&mut self, fx: &mut impl Edges) -> Vec<PeerState> {
        let keys = fx.peer_ids();
        let mut table = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(SCAN_CHUNK) {
            table.extend(chunk.iter().filter_map(|id| fx.peer(*id)));
            self.send_if_due(fx);
        }
        table
    }

    /// Forgets long-silent peers outside the view. Their entries stay in the XDP program's
    /// table (a bounded LRU map), so a recording of their heartbeats stays a replay there;
    /// [`update`](Self::update) skips entries that old for peers it does not know.
    fn forget(&mut self, fx: &mut impl Edges, now: u64) {
        let max = vipd_common::maps::MAX_PEERS as usize;
        let gone = self.membership.forget(now, FORGET_AFTER_NS, max);
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            self.peers.remove(id);
            self.lists.remove(id);
        }
        fx.report(Report::Forgotten(gone));
    }

    /// Feeds a peer table snapshot; places and acts. Returns whether what we hold changed.
    fn update(&mut self, fx: &mut impl Edges, mut table: Vec<PeerState>, now: u64) -> bool {
        // A forgotten peer's entry: known again only once it is heard from again.
        table.retain(|p| {
            now.saturating_sub(p.last_seen_ns) < FORGET_AFTER_NS
                || self.membership.peer(p.node_id).is_some()
        });
        let transitions = self.membership.observe(table, now);
        let vouched = self.membership.vouched(now);
        if vouched != self.vouched {
            self.vouched.clone_from(&vouched);
            fx.report(Report::Vouched(vouched));
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
            fx.report(Report::Transition {
                transition: t,
                at_ns: now,
                last_seen_ns: peer.map_or(0, |p| p.last_seen_ns),
                weight: peer.map_or(0, |p| p.weight),
            });
        }
        let state = self.state_name();
        if state != self.node_state {
            self.node_state = state;
            fx.report(Report::NodeState(state));
        }
        let members = self.members();
        self.check_views(fx, &members);
        let holders = self.holders(&members);
        // Peers back from a timeout, waiting out the heal delay: no VIPs are placed on
        // them yet, but what they hold counts (a VIP both sides took is settled now).
        let healing = self.membership.returning(now);
        // A peer lost by timeout is back: clients may have followed it meanwhile, so what
        // is held here is announced again now (not only once its heal delay is over).
        for id in &healing {
            returning |= self.timed_out.remove(id);
        }
        self.track_conflicts(fx, &members, &healing);
        if now >= self.added_until {
            self.added.clear();
        }
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
        // The split-brain rule: of two claimants the lower id keeps the VIP, whatever this
        // node's placement says (views can differ after a partial partition: placement on
        // each side may give the VIP to itself), among members and peers returning alike.
        // A member that does not hear this node cannot learn of its claim, so this node
        // gives way to it whatever the ids (a link that works one way only).
        let yielded: BTreeMap<IpAddr, u32> = self
            .claims()
            .filter(|(id, _)| {
                let member = members.iter().any(|m| m.id == *id);
                (*id < me && (member || healing.contains(id)))
                    || (member && self.membership.deaf_to(*id, me))
            })
            .flat_map(|(id, vips)| vips.iter().map(move |v| (*v, id)))
            .filter(|(v, _)| self.held.contains_key(v))
            .collect();
        // What the members this node hears directly claim (a member kept on another's word
        // may have let go of a VIP without this node hearing it).
        let unheard: Vec<u32> = self.vouched.iter().map(|(id, _)| *id).collect();
        let heard: Vec<Member> = members
            .iter()
            .filter(|m| !unheard.contains(&m.id))
            .copied()
            .collect();
        let claimed_heard = self.claimed_by_others(&heard, &healing);
        let (orphans, orphan_basis) = self.orphans(&claimed, &claimed_heard, &members, now);
        // A VIP nobody claims for a dead interval: the views of who holds what differ
        // somewhere (a lost state section, a lossy link); every heartbeat says what this
        // node holds until it is claimed again.
        let dead_ns = self.cfg.pool.dead_interval.as_nanos() as u64;
        if self
            .unclaimed_since
            .values()
            .any(|t| now.saturating_sub(*t) >= dead_ns)
        {
            self.state_burst = self.state_burst.max(1);
        }
        let to_take: Vec<Vip> = self
            .cfg
            .pool
            .vips
            .iter()
            .filter(|v| {
                let orphan = orphans.contains(&v.addr);
                (assignment.get(&v.addr) == Some(&me) || orphan)
                    && !self.held.contains_key(&v.addr)
                    && (!claimed.contains(&v.addr) || orphan)
                    && !self.added.contains(&v.addr)
            })
            .copied()
            .collect();
        let mut changed = false;
        if !to_take.is_empty() {
            changed |= self.take(fx, &to_take);
            self.orphans
                .extend(orphans.iter().filter(|v| self.held.contains_key(v)));
        }
        // A VIP taken as an orphan is kept while some node sees the cluster only in part
        // (here, or as a member's heartbeat says): the member placement gives it to may
        // not take it. Once every node sees all, placement rules again.
        // Said once it lasted a dead interval: views differ for a moment at every join.
        let partial_here = !self.views_agree
            || !self.vouched.is_empty()
            || self.membership.unheard_by_a_member(me);
        self.partial_since = partial_here.then(|| self.partial_since.unwrap_or(now));
        let dead = self.cfg.pool.dead_interval.as_nanos() as u64;
        self.partial = self
            .partial_since
            .is_some_and(|t| now.saturating_sub(t) >= dead);
        let partial = self.partial
            || members.iter().any(|m| {
                self.membership
                    .peer(m.id)
                    .is_some_and(|p| m.id != me && p.flags & FLAG_PARTIAL != 0)
            });
        self.orphans
            .retain(|v| partial && self.held.contains_key(v) && !orphan_basis.contains(v));
        // A refused add made this node hold down again: it keeps nothing.
        let active = self.active();
        let to_release: Vec<(Vip, Option<u32>)> = self
            .held
            .values()
            .filter(|v| {
                let kept = self.orphans.contains(&v.addr);
                !active
                    || (assignment.get(&v.addr) != Some(&me) && !kept)
                    || yielded.contains_key(&v.addr)
            })
            .map(|v| {
                let to = yielded.get(&v.addr).or(assignment.get(&v.addr));
                (*v, to.copied().filter(|_| active))
            })
            .collect();
        if !to_release.is_empty() {
            self.release(fx, &to_release);
            changed = true;
        }
        if changed {
            self.state_burst = STATE_BURST;
        }
        if returning {
            self.announce_held_again(fx);
        }
        changed
    }

    /// The VIPs nobody this node knows of has claimed for [`ORPHAN_NS`] and that it takes
    /// (when active), with the claims that decided it. The taker is the lowest id of the
    /// view among the members that see all of it (a member that sees it only in part may
    /// hold stale claims of the peers it does not hear, and so see no orphan where there
    /// is one), judging by every claim; when no member sees all of it, the lowest id,
    /// judging by the claims of the members it hears directly (`claimed_heard`).
    fn orphans(
        &mut self,
        claimed: &BTreeSet<IpAddr>,
        claimed_heard: &BTreeSet<IpAddr>,
        members: &[Member],
        now: u64,
    ) -> (BTreeSet<IpAddr>, BTreeSet<IpAddr>) {
        let me = self.cfg.node.id;
        // (What a member kept on another's word last said is stale: it is not counted.)
        let sees_all = |m: &&Member| {
            if m.id == me {
                !self.partial
            } else {
                !self.vouched.iter().any(|(id, _)| *id == m.id)
                    && self
                        .membership
                        .peer(m.id)
                        .is_some_and(|p| p.flags & FLAG_PARTIAL == 0)
            }
        };
        let seer = members.iter().find(sees_all);
        let taker = seer.or(members.first()).map(|m| m.id);
        let since_unclaimed = |basis: &BTreeSet<IpAddr>, since: &mut BTreeMap<IpAddr, u64>| {
            since.retain(|v, _| !basis.contains(v) && !self.held.contains_key(v));
            for v in self.pool.iter() {
                if !basis.contains(v) && !self.held.contains_key(v) {
                    since.entry(*v).or_insert(now);
                }
            }
        };
        since_unclaimed(claimed, &mut self.unclaimed_since);
        since_unclaimed(claimed_heard, &mut self.unclaimed_heard_since);
        let (basis, since) = if seer.is_some() {
            (claimed, &self.unclaimed_since)
        } else {
            (claimed_heard, &self.unclaimed_heard_since)
        };
        let basis = basis.clone();
        if !self.active() || taker != Some(me) {
            return (BTreeSet::new(), basis);
        }
        let orphans = since
            .iter()
            .filter(|(_, t)| now.saturating_sub(**t) >= ORPHAN_NS)
            .map(|(v, _)| *v)
            .collect();
        (orphans, basis)
    }

    /// A peer declared lost came back (a partition healed, a frozen node thawed): it may
    /// have answered for VIPs held here meanwhile, and clients may still send to it. Every
    /// held VIP is announced again (with repeats), so they come back here at once.
    fn announce_held_again(&mut self, fx: &mut impl Edges) {
        let held: Vec<IpAddr> = self.held.keys().copied().collect();
        if held.is_empty() {
            return;
        }
        fx.announce(&held);
        fx.report(Report::AnnouncedAgain(held));
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
            self.claims()
                .filter(|(id, _)| members.iter().any(|m| m.id == *id))
                .flat_map(|(id, vips)| vips.iter().map(move |v| (*v, id))),
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
    fn check_views(&mut self, fx: &mut impl Edges, members: &[Member]) {
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
            fx.report(Report::Views {
                agree,
                view: ids,
                differing,
            });
        }
    }

    /// The VIPs the other members, and the peers `returning` from a timeout, say they hold
    /// (their latest state sections).
    fn claimed_by_others(&self, members: &[Member], returning: &[u32]) -> BTreeSet<IpAddr> {
        self.claims()
            .filter(|(id, _)| {
                *id != self.cfg.node.id
                    && (members.iter().any(|m| m.id == *id) || returning.contains(id))
            })
            .flat_map(|(_, vips)| vips.iter().copied())
            .collect()
    }

    /// Re-announces held VIPs that stopped being claimed by a peer: after a split brain the
    /// segment must learn our MAC again.
    fn track_conflicts(&mut self, fx: &mut impl Edges, members: &[Member], returning: &[u32]) {
        let claimed_by_peers = self.claimed_by_others(members, returning);
        let now: BTreeSet<IpAddr> = self
            .held
            .keys()
            .filter(|v| claimed_by_peers.contains(v))
            .copied()
            .collect();
        for vip in now.difference(&self.conflicts) {
            fx.report(Report::Conflict(*vip));
            self.state_burst = STATE_BURST;
        }
        let resolved: Vec<IpAddr> = self
            .conflicts
            .difference(&now)
            .filter(|v| self.held.contains_key(v))
            .copied()
            .collect();
        if !resolved.is_empty() {
            fx.announce(&resolved);
            for vip in resolved {
                fx.report(Report::ConflictResolved(vip));
            }
        }
        self.conflicts = now;
    }

    /// Adds and announces `vips`; returns whether any is now held.
    fn take(&mut self, fx: &mut impl Edges, vips: &[Vip]) -> bool {
        let taken = self.add(fx, vips);
        let any = !taken.is_empty();
        if any {
            fx.report(Report::Taken(taken));
        }
        any
    }

    /// Adds held VIPs that were removed from outside (`None`: any held VIP) again, and
    /// announces them; one the kernel refuses is no longer held (and retried like any
    /// take).
    pub fn restore(&mut self, fx: &mut impl Edges, addrs: Option<Vec<IpAddr>>) {
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
            .add(fx, &vips)
            .into_iter()
            .filter(|t| !t.already_present)
            .map(|t| t.vip)
            .collect();
        if vips.iter().any(|v| !self.held.contains_key(&v.addr)) {
            // Not held any more: peers must hear it now.
            self.state_burst = STATE_BURST;
            self.heartbeat(fx);
        }
        if !restored.is_empty() {
            fx.report(Report::Restored(restored));
        }
    }

    /// Adds `vips` (held once added). Failures are reported (once until they succeed).
    /// Returns what was added.
    fn add(&mut self, fx: &mut impl Edges, vips: &[Vip]) -> Vec<Taken> {
        let loss_ns = self
            .last_loss_ns
            .filter(|l| fx.now().saturating_sub(*l) < LOSS_REPORTED_NS);
        // Its `hears` bits are taken now, under the view whose digest it carries (bits
        // taken under an earlier view would shift when a lower id left).
        let keepalive = Outgoing {
            hears: self.hears(fx),
            ..self.keepalive()
        };
        let (taken, failed) = fx.add(vips, &keepalive, loss_ns);
        for t in &taken {
            self.held.insert(t.vip.addr, t.vip);
            self.take_failed.remove(&t.vip.addr);
        }
        let refused = !failed.is_empty();
        for (vip, error) in failed {
            // Not held; said once.
            if self.take_failed.insert(vip.addr) {
                fx.report(Report::TakeFailed { vip, error });
            }
        }
        if refused && self.mature {
            // This node cannot hold what placement gives it: it holds down (its peers take
            // its share, it gives back what it has), then tries again.
            self.mature = false;
            self.mature_at = fx.now() + self.cfg.pool.hold_down.as_nanos() as u64;
            self.state_burst = STATE_BURST;
        }
        taken
    }

    /// Removes `vips` (each with the node placement gives it to); a VIP the kernel would
    /// not remove stays held, so the next reconcile retries and peers are not told it is
    /// free while it is not.
    fn release(&mut self, fx: &mut impl Edges, vips: &[(Vip, Option<u32>)]) {
        let released = fx.remove(vips);
        for r in &released {
            if !matches!(r.outcome, Outcome::Failed(_)) {
                self.held.remove(&r.vip.addr);
            }
        }
        fx.report(Report::Released(released));
    }

    /// Gives back every VIP held.
    pub fn release_all(&mut self, fx: &mut impl Edges) {
        let all: Vec<(Vip, Option<u32>)> = self.held.values().map(|v| (*v, None)).collect();
        if !all.is_empty() {
            self.release(fx, &all);
        }
    }

    /// The fast path's part of `vipd status`.
    pub fn status(&self, now: u64) -> Status {
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
                    None => peer_state(p, now, self.membership.dead_for(p)).into(),
                },
                weight: p.weight,
                dead_interval_ms: f64::from(p.dead_us) / 1e3,
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
                    self.claims()
                        .filter(|(id, _)| view.contains(id))
                        .find(|(_, vips)| vips.contains(&v.addr))
                        .map(|(id, _)| id)
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
            dead_interval_ms: self.cfg.pool.dead_interval.as_secs_f64() * 1e3,
            peers,
            vips,
            ..Status::default()
        }
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use vipd_common::heartbeat::view_digest;

    use super::*;
    use crate::config::File;

    const MS: u64 = 1_000_000;

    /// Memory edges with a clock the test moves.
    #[derive(Default)]
    struct Fake {
        now: u64,
        table: BTreeMap<u32, PeerState>,
        addrs: BTreeSet<IpAddr>,
        sent: Vec<Outgoing>,
        refuse: bool,
        reports: Vec<Report>,
        last_sent_ns: u64,
        /// How long an add blocks.
        add_blocks_ns: u64,
        /// A peer's entry written while an add blocks.
        meanwhile: Option<(u32, PeerState)>,
        /// The keep-alives handed to each add.
        keepalives: Vec<Outgoing>,
    }

    impl Edges for Fake {
        fn now(&self) -> u64 {
            self.now
        }
        fn peer(&self, id: u32) -> Option<PeerState> {
            self.table.get(&id).copied()
        }
        fn peer_ids(&self) -> Vec<u32> {
            self.table.keys().copied().collect()
        }
        fn heartbeat_due(&mut self) -> bool {
            // Every 100 ms (the tests' interval).
            self.now >= self.last_sent_ns + 100 * MS
        }
        fn send(&mut self, hb: &Outgoing) -> Result<(), String> {
            self.sent.push(hb.clone());
            self.last_sent_ns = self.now;
            Ok(())
        }
        fn last_sent(&self) -> u64 {
            self.last_sent_ns
        }
        fn add(
            &mut self,
            vips: &[Vip],
            keepalive: &Outgoing,
            loss_ns: Option<u64>,
        ) -> (Vec<Taken>, Vec<(Vip, String)>) {
            self.keepalives.push(keepalive.clone());
            // A takeover blocked in netlink: the keepalive is not sent past the dead
            // interval (as the fast path's), and the peers move on meanwhile.
            self.now += self.add_blocks_ns;
            if let Some((id, state)) = self.meanwhile.take() {
                self.table.insert(id, state);
            }
            if self.refuse {
                return (
                    Vec::new(),
                    vips.iter().map(|v| (*v, "EPERM".into())).collect(),
                );
            }
            let taken = vips
                .iter()
                .map(|v| Taken {
                    vip: *v,
                    added_ns: self.now,
                    already_present: !self.addrs.insert(v.addr),
                    first_announce_ns: None,
                    loss_ns,
                })
                .collect();
            (taken, Vec::new())
        }
        fn remove(&mut self, vips: &[(Vip, Option<u32>)]) -> Vec<Released> {
            vips.iter()
                .map(|(v, to)| {
                    self.addrs.remove(&v.addr);
                    Released {
                        vip: *v,
                        new_owner: *to,
                        outcome: Outcome::Done,
                    }
                })
                .collect()
        }
        fn announce(&mut self, _addrs: &[IpAddr]) {}
        fn reconfigure(&mut self, _old: &Config, _new: &Config) {}
        fn report(&mut self, report: Report) {
            self.reports.push(report);
        }
    }

    /// Node `id` of a pool of two VIPs (100 ms heartbeats, 500 ms dead, 1 s hold-down).
    fn config(id: u32) -> Config {
        let text = format!(
            "[node]\nid = {id}\ninterface = \"eth0\"\n[heartbeat]\ninterval = \"100ms\"\n\
             dead_interval = \"500ms\"\nhold_down = \"1s\"\nauth = \"off\"\n\
             [pool]\nvips = [\"192.0.2.201\", \"192.0.2.202\"]\n"
        );
        Config::from_file(File::parse(&text).unwrap()).unwrap()
    }

    /// Peer `id`'s entry as the XDP program records it, heard at `at`, with `view`.
    fn peer(id: u32, at: u64, view: &[u32]) -> PeerState {
        PeerState {
            node_id: id,
            incarnation: 7,
            last_seen_ns: at,
            first_seen_ns: 0,
            flags: FLAG_MATURE,
            interval_us: 100_000,
            weight: 1,
            view_digest: view_digest(view),
            hears: 0b11,
            ..PeerState::default()
        }
    }

    /// Node 2 with peer 1 in its view, at 2 s, each holding one VIP.
    fn two_nodes() -> (Decide, Fake) {
        let mut d = Decide::new(config(2), 0, true, true);
        let mut fx = Fake::default();
        fx.table.insert(1, peer(1, 0, &[1, 2]));
        d.verified(1, 7);
        for t in (1000..=2000).step_by(100) {
            fx.now = t * MS;
            fx.table.insert(1, peer(1, fx.now, &[1, 2]));
            d.turn(&mut fx, true, true, [], &[]);
        }
        assert_eq!(fx.addrs.len(), 1, "{:?}", fx.addrs);
        let theirs: BTreeSet<IpAddr> = d
            .pool
            .iter()
            .filter(|v| !fx.addrs.contains(v))
            .copied()
            .collect();
        d.holdings(1, 7, theirs);
        (d, fx)
    }

    #[test]
    fn a_node_takes_its_share_once_mature_and_all_when_its_peer_dies() {
        let (mut d, mut fx) = two_nodes();
        assert_eq!(d.state_name(), "active");
        // Peer 1 falls silent: a dead interval later this node holds both.
        let last = fx.now;
        fx.now = last + 500 * MS;
        d.turn(&mut fx, true, true, [], &[]);
        assert_eq!(fx.addrs.len(), 2);
    }

    #[test]
    fn a_forgotten_peer_stays_forgotten_until_heard_again() {
        let (mut d, mut fx) = two_nodes();
        let last = fx.now;
        // Silent past the forget time: forgotten, its entry left in the table (where a
        // recording of its heartbeats stays a replay).
        fx.now = last + FORGET_AFTER_NS + FULL_SCAN_NS;
        d.turn(&mut fx, true, true, [], &[]);
        fx.now += FULL_SCAN_NS;
        d.turn(&mut fx, true, true, [], &[]);
        assert!(
            fx.reports
                .iter()
                .any(|r| matches!(r, Report::Forgotten(ids) if ids == &[1]))
        );
        assert!(fx.table.contains_key(&1));
        assert!(d.membership.peer(1).is_none(), "the stale entry came back");
        // Heard again: a peer again.
        fx.now += 100 * MS;
        fx.table.insert(1, peer(1, fx.now, &[1, 2]));
        d.turn(&mut fx, true, true, [], &[]);
        assert!(d.membership.peer(1).is_some());
    }

    #[test]
    fn a_refused_add_holds_the_node_down_and_gives_back_what_it_has() {
        let (mut d, mut fx) = two_nodes();
        fx.refuse = true;
        fx.now += 500 * MS;
        d.turn(&mut fx, true, true, [], &[]);
        assert!(fx.addrs.is_empty(), "{:?}", fx.addrs);
        assert_eq!(d.state_name(), "holding-down");
        assert_eq!(fx.sent.last().map(|h| h.flags & FLAG_MATURE), Some(0));
        // Adds work again: after the hold-down it takes its share again.
        fx.refuse = false;
        for _ in 0..11 {
            fx.now += 100 * MS;
            d.turn(&mut fx, true, true, [], &[]);
        }
        assert_eq!(d.state_name(), "active");
        assert!(!fx.addrs.is_empty());
    }

    #[test]
    fn of_two_members_claiming_a_vip_the_lower_id_keeps_it() {
        let (mut d, mut fx) = two_nodes();
        let mine: Vec<IpAddr> = fx.addrs.iter().copied().collect();
        // Peer 1 (lower id) says it holds everything (a split brain settling).
        d.holdings(1, 7, d.pool.iter().copied().collect());
        fx.now += 100 * MS;
        fx.table.insert(1, peer(1, fx.now, &[1, 2]));
        d.turn(&mut fx, true, true, [], &[]);
        assert!(fx.addrs.is_empty(), "kept {mine:?}");
    }

    #[test]
    fn claims_of_an_earlier_incarnation_do_not_count() {
        let (mut d, mut fx) = two_nodes();
        d.holdings(1, 6, d.pool.iter().copied().collect());
        fx.now += 100 * MS;
        fx.table.insert(1, peer(1, fx.now, &[1, 2]));
        d.turn(&mut fx, true, true, [], &[]);
        assert_eq!(fx.addrs.len(), 1);
    }

    /// Node 2 of three (six VIPs, two each), at 2 s.
    fn three_nodes() -> (Decide, Fake) {
        let text = "[node]\nid = 2\ninterface = \"eth0\"\n[heartbeat]\ninterval = \"100ms\"\n\
                    dead_interval = \"500ms\"\nhold_down = \"1s\"\nauth = \"off\"\n[pool]\n\
                    vips = [\"192.0.2.201\", \"192.0.2.202\", \"192.0.2.203\", \
                    \"192.0.2.204\", \"192.0.2.205\", \"192.0.2.206\"]\n";
        let cfg = Config::from_file(File::parse(text).unwrap()).unwrap();
        let mut d = Decide::new(cfg, 0, true, true);
        let mut fx = Fake::default();
        for id in [1, 3] {
            d.verified(id, 7);
        }
        for t in (1000..=2000).step_by(100) {
            fx.now = t * MS;
            for id in [1, 3] {
                fx.table.insert(id, peer(id, fx.now, &[1, 2, 3]));
            }
            d.turn(&mut fx, true, true, [], &[]);
        }
        (d, fx)
    }

    /// Turns every 100 ms for `n` turns: node 1 silent, node 3 heard (not hearing node 1).
    fn node_1_dies(d: &mut Decide, fx: &mut Fake, n: usize) {
        for _ in 0..n {
            fx.now += 100 * MS;
            let hears = 0b110;
            fx.table.insert(
                3,
                PeerState {
                    hears,
                    ..peer(3, fx.now, &[1, 2, 3])
                },
            );
            d.turn(fx, true, true, [], &[]);
        }
    }

    #[test]
    fn a_takeovers_keepalive_says_hears_under_the_view_it_names() {
        let (mut d, mut fx) = three_nodes();
        node_1_dies(&mut d, &mut fx, 6);
        assert_eq!(fx.addrs.len(), 3, "{:?}", fx.addrs);
        let keepalive = fx.keepalives.last().expect("a takeover");
        let after = fx.sent.last().expect("a heartbeat after the takeover");
        assert_eq!(keepalive.view_digest, view_digest(&[2, 3]));
        assert_eq!(after.view_digest, keepalive.view_digest);
        assert_ne!(keepalive.hears, 0, "node 3 is heard");
        assert_eq!(keepalive.hears, after.hears, "bits of another view");
    }

    #[test]
    fn a_takeover_blocked_past_the_dead_interval_gives_back_what_peers_took() {
        let (mut d, mut fx) = three_nodes();
        assert_eq!(fx.addrs.len(), 2, "{:?}", fx.addrs);
        let mine = fx.addrs.clone();
        // Node 1 dies. Node 2's takeover of its share blocks in netlink for 2 s, while
        // node 3 declares node 2 lost too (its view: itself).
        fx.add_blocks_ns = 2_000 * MS;
        let mut three = peer(3, fx.now + 1_900 * MS, &[3]);
        three.hears = 0b1;
        fx.meanwhile = Some((3, three));
        // Until the takeover: node 1 silent, node 3 heard; after it, node 3 says view [3].
        while fx.meanwhile.is_some() {
            node_1_dies(&mut d, &mut fx, 1);
        }
        fx.add_blocks_ns = 0;
        for _ in 0..3 {
            fx.now += 100 * MS;
            let last_seen_ns = fx.now;
            fx.table.insert(
                3,
                PeerState {
                    last_seen_ns,
                    ..three
                },
            );
            d.turn(&mut fx, true, true, [], &[]);
        }
        assert!(
            fx.addrs.is_empty(),
            "kept {:?} (held {mine:?}) after a silence its peers acted on",
            fx.addrs
        );
        assert_eq!(d.state_name(), "holding-down");
        assert!(
            fx.reports
                .iter()
                .any(|r| matches!(r, Report::Silenced { .. }))
        );
    }

    #[test]
    fn a_node_that_sees_one_side_of_a_cut_holds_down_until_it_sees_all() {
        // Node 3 starts during a cut between it and node 2: it hears node 1 only, whose
        // view is [1, 2].
        let mut d = Decide::new(config(3), 0, true, true);
        let mut fx = Fake::default();
        d.verified(1, 7);
        for t in (0..=3000).step_by(100) {
            fx.now = t * MS;
            fx.table.insert(1, peer(1, fx.now, &[1, 2]));
            d.turn(&mut fx, true, true, [], &[]);
        }
        assert_eq!(d.state_name(), "holding-down");
        assert!(fx.addrs.is_empty(), "took {:?}", fx.addrs);
        let waits = |fx: &Fake| {
            fx.reports
                .iter()
                .filter(|r| matches!(r, Report::HoldingForView { member: 1 }))
                .count()
        };
        assert_eq!(waits(&fx), 1, "said once");
        // The cut heals: node 2 heard and verified, node 1's view is explained.
        d.verified(2, 7);
        for _ in 0..5 {
            fx.now += 100 * MS;
            for id in [1, 2] {
                fx.table.insert(id, peer(id, fx.now, &[1, 2]));
            }
            d.turn(&mut fx, true, true, [], &[]);
        }
        assert_eq!(d.state_name(), "active");
    }
}
