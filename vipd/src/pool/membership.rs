//! Who is in the cluster, decided from what the XDP program recorded.
//!
//! Pure logic: the daemon feeds it snapshots of the peer table with the current
//! CLOCK_MONOTONIC time, and it answers which peers joined or left the *view* (the set of
//! nodes VIPs are placed on) and why. A peer is in the view while it is
//! - alive: heard within the dead interval (timestamps are taken in the kernel, so a
//!   daemon that was not scheduled on time does not mistake a healthy peer for dead);
//! - mature: it says so in its heartbeats (FLAG_MATURE), once up for its hold-down;
//! - not leaving (FLAG_LEAVING): a node stopping on purpose leaves the view at once;
//! - verified: it has echoed this node's current incarnation ([`Membership::verify`]), so
//!   a recording replayed to a node that has just started is never taken for a live peer.
//!
//! A silent peer that another peer still hears stays in the view ([`Membership::set_view`]):
//! when the link between this node and a peer breaks while a third node hears both,
//! taking the peer's VIPs would leave them on two nodes for the whole partition. Each
//! heartbeat carries `hears`, a bit per member of the sender's view heard within 1.25 of
//! its intervals when it was sent. A bit set in a heartbeat that arrived here 1.5 of its
//! sender's intervals (at least 1.25 intervals + 2 ms) after a silent member's last
//! heartbeat proves that member alive at that
//! moment (SWIM's indirect evidence, without probes): it counts like a heartbeat heard
//! through the other peer, and the silent one is lost a dead interval after the last proof
//! (so one bit missing to jitter changes nothing). A real failure is declared as soon as
//! it would be without the rule: no bit can prove a dead peer alive after its last
//! heartbeat (unless delivery took longer than that allowance). A peer once lost returns
//! only by being heard again. With nobody
//! hearing both sides (a real split, or two nodes), the silent peer is lost as before.
//!
//! A peer that left the view by timeout and is heard again (a partition healed, a lossy
//! link recovered) comes back only once heard for the *heal delay*
//! ([`Membership::set_heal_delay`], the hold-down by default): a flapping link does not drag
//! VIPs back and forth. Meanwhile it is *returning* ([`Membership::returning`]): what it
//! says it holds still counts, so a VIP both sides took during the split is settled at
//! once.
//!
//! Silence during this node's own stall is excused ([`Membership::excuse_stall`]): when a
//! hypervisor stops the whole machine, the peers' heartbeats stop with it (in a lab, or
//! when the "peers" share the host), and on waking the deadline watcher must not judge
//! them before they have had a chance to send again.

use std::collections::BTreeMap;

use vipd_common::{
    heartbeat::{FLAG_MATURE, is_leaving, view_digest},
    maps::PeerState,
};

use crate::config::MAX_DEAD_INTERVAL;

/// The window of a `hears` bit: a member heard within 1.25 of the sender's intervals
/// (every live member is heard every interval, give or take jitter).
pub fn hears_window(interval_ns: u64) -> u64 {
    interval_ns * 5 / 4
}

/// Time allowed for a heartbeat's delivery (send to the receiver's XDP timestamp) when a
/// bit is read as proof: a quarter of the sender's interval, and never less than this (on
/// virtual machines delivery takes hundreds of microseconds under load).
const DELIVERY_NS: u64 = 2_000_000;

/// How long after a silent peer's last heartbeat here a member's heartbeat must arrive
/// for its `hears` bit to prove the peer outlived that heartbeat: the bit's window plus
/// the delivery allowance. (With a dead interval shorter than this plus an interval, as
/// at 1ms/3ms, no proof can arrive in time: arbitration then never delays a failover.)
fn evidence_lead(interval_ns: u64) -> u64 {
    hears_window(interval_ns) + (interval_ns / 4).max(DELIVERY_NS)
}
/// Members a `hears` bitmap covers (the first 64 of a view, in id order).
pub const HEARS_BITS: usize = 64;
/// Views of this node kept to decode members' `hears` bits (theirs may lag a change).
const VIEWS_KEPT: usize = 4;

/// Why a peer left the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeftBecause {
    /// No heartbeat for the dead interval; `last_seen_ns` is the last one heard.
    Timeout { last_seen_ns: u64 },
    /// It sent LEAVING.
    Leaving,
    /// It restarted (a new incarnation that is not yet mature).
    Restarted,
    /// It stopped claiming maturity.
    NotMature,
}

/// A change of the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The peer entered the view.
    Joined { node_id: u32 },
    /// The peer left the view.
    Left { node_id: u32, because: LeftBecause },
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    state: PeerState,
    in_view: bool,
    /// The latest moment another peer's `hears` bits prove this one was alive, later than
    /// its last heartbeat here, and that peer (in this incarnation; see
    /// [`Membership::observe`]): it counts like a heartbeat heard through it.
    heard_via: Option<(u64, u32)>,
    /// When a peer's heartbeat with its `hears` bit for this one set last arrived, and
    /// that peer: while it still names a view with this one in it, it keeps this one
    /// (see [`Membership::held`]).
    held_by: Option<(u64, u32)>,
    /// It left the view by timeout (in this incarnation): its return waits for the heal
    /// delay.
    lost: bool,
    /// Since when it is heard again after being lost (continuously: reset by a silence).
    back_since: Option<u64>,
}

/// The membership view kept by one node.
#[derive(Debug)]
pub struct Membership {
    dead_ns: u64,
    /// How long a peer lost by timeout must be heard again before it returns.
    heal_ns: u64,
    peers: BTreeMap<u32, Peer>,
    /// The last stall of each of this node's CPUs (or threads), by source: (when it
    /// ended, how long it was).
    stalls: BTreeMap<usize, (u64, u64)>,
    /// The incarnation of each peer that has echoed ours (see [`Membership::verify`]).
    verified: BTreeMap<u32, u64>,
    /// The last views this node announced (ids in order, itself included when active),
    /// with their digests, the latest last: a member's `hears` bits index into the one
    /// whose digest it sends (a view change here need not have reached it yet).
    views: Vec<(u64, Vec<u32>)>,
    /// When the table was last observed: a deadline not after it has been acted on.
    observed_ns: u64,
}

impl Membership {
    /// A view with no peers; a peer silent for `dead_ns` is declared dead.
    pub fn new(dead_ns: u64) -> Self {
        Self {
            dead_ns,
            heal_ns: 0,
            peers: BTreeMap::new(),
            stalls: BTreeMap::new(),
            verified: BTreeMap::new(),
            views: Vec::new(),
            observed_ns: 0,
        }
    }

    /// A peer lost by timeout returns to the view only once heard again for `heal_ns`
    /// (0: at once).
    pub fn set_heal_delay(&mut self, heal_ns: u64) {
        self.heal_ns = heal_ns;
    }

    /// Peers lost by timeout, heard again, waiting out the heal delay.
    pub fn returning(&self, now_ns: u64) -> Vec<u32> {
        self.peers
            .iter()
            .filter(|(_, p)| !p.in_view && p.lost && p.back_since.is_some())
            .filter(|(_, p)| self.alive(&p.state, now_ns))
            .map(|(&id, _)| id)
            .collect()
    }

    /// The view as this node announces it (ids in ascending order, itself included when
    /// active): the index of members' `hears` bits.
    pub fn set_view(&mut self, ids: &[u32]) {
        let digest = view_digest(ids);
        if self.views.last().is_some_and(|(d, _)| *d == digest) {
            return;
        }
        self.views.retain(|(d, _)| *d != digest);
        if self.views.len() == VIEWS_KEPT {
            self.views.remove(0);
        }
        self.views.push((digest, ids.to_vec()));
    }

    /// The `hears` bits for a heartbeat of node `me`: bit i for the i-th of `members`
    /// (ids in order) whose last heartbeat (`last_seen`, read fresh from the peer table)
    /// is less than `window_ns` old ([`hears_window`]); never its own.
    pub fn hears_bits(
        members: &[u32],
        me: u32,
        mut last_seen: impl FnMut(u32) -> Option<u64>,
        now_ns: u64,
        window_ns: u64,
    ) -> u64 {
        members
            .iter()
            .take(HEARS_BITS)
            .enumerate()
            .filter(|(_, id)| **id != me)
            .filter(|(_, id)| last_seen(**id).is_some_and(|t| now_ns.saturating_sub(t) < window_ns))
            .fold(0, |bits, (i, _)| bits | 1 << i)
    }

    /// The latest moment a live, verified peer's latest heartbeat proves `p` alive, if
    /// later than `p`'s last heartbeat here, and that peer: its bit for `p` is set, and it
    /// arrived [`evidence_lead`] after that moment. Any such peer's word counts, a
    /// member or not yet (holding down): it is evidence, not a vote.
    fn evidence(&self, p: &PeerState, witnesses: &[&PeerState]) -> Option<(u64, u32)> {
        witnesses
            .iter()
            .filter(|m| m.node_id != p.node_id && self.bit_for(m, p.node_id))
            .map(|m| {
                let lead = evidence_lead(u64::from(m.interval_us) * 1000);
                (m.last_seen_ns.saturating_sub(lead), m.node_id)
            })
            .filter(|(at, _)| *at > p.last_seen_ns)
            .max()
    }

    /// The latest arrival of a live, verified peer's heartbeat with its bit for `p` set,
    /// later than `p`'s last heartbeat here, and that peer.
    fn latest_bit(&self, p: &PeerState, witnesses: &[&PeerState]) -> Option<(u64, u32)> {
        witnesses
            .iter()
            .filter(|m| m.node_id != p.node_id && self.bit_for(m, p.node_id))
            .map(|m| (m.last_seen_ns, m.node_id))
            .filter(|(at, _)| *at > p.last_seen_ns)
            .max()
    }

    /// Until when the member `p`, already kept on a witness's proof past its own silence
    /// (a link between us is cut, not `p` dead), is kept on the witness's own view, if it
    /// is now: the witness (live, verified) still names a view of ours with `p` in it, and
    /// its bit for `p` was set within `p`'s dead interval. A bit proves `p` alive only up
    /// to its window before the heartbeat, so a few late heartbeats of `p` at the witness
    /// clear it while the witness, timing `p` by the dead interval, never lost it; the view
    /// says the witness still keeps `p`. Never on the way to a first timeout (a dead peer
    /// is declared at its deadline, not when the others' views catch up), and never
    /// chained: a witness that keeps `p` only on another's word does not hear it, its bits
    /// stay clear, and the hold ends a dead interval after its last set one.
    fn held(&self, p: &Peer, now_ns: u64) -> Option<u64> {
        p.heard_via?;
        let (at, by) = p.held_by?;
        let until = at + self.dead_for(&p.state);
        let witness = &self.peers.get(&by)?.state;
        let keeps = self.is_verified(by, witness.incarnation)
            && self.alive(witness, now_ns)
            && self.names(witness, p.state.node_id);
        (keeps && now_ns < until).then_some(until)
    }

    /// Whether member `m`'s latest heartbeat names a view (one of ours) with `node_id` in it.
    fn names(&self, m: &PeerState, node_id: u32) -> bool {
        self.views
            .iter()
            .rev()
            .find(|(d, _)| *d == m.view_digest)
            .is_some_and(|(_, ids)| ids.contains(&node_id))
    }

    /// When `p` was last known alive: heard here, or through another peer.
    fn last_alive(p: &Peer) -> u64 {
        p.heard_via
            .map_or(p.state.last_seen_ns, |(at, _)| at.max(p.state.last_seen_ns))
    }

    /// Whether a peer whose entry is `state`, last known alive at `at_ns`, still counts.
    fn alive_since(&self, state: &PeerState, at_ns: u64, now_ns: u64) -> bool {
        now_ns.saturating_sub(at_ns) < self.allowed(state, at_ns)
    }

    /// Whether member `m`'s `hears` bits say it heard `node_id`: decoded with the view
    /// (of the last ones here) whose digest it sent.
    fn bit_for(&self, m: &PeerState, node_id: u32) -> bool {
        self.hears_bit(m, node_id) == Some(true)
    }

    /// Member `m`'s `hears` bit for `node_id`, if its view is one of ours and covers it.
    fn hears_bit(&self, m: &PeerState, node_id: u32) -> Option<bool> {
        self.views
            .iter()
            .rev()
            .find(|(d, _)| *d == m.view_digest)
            .and_then(|(_, ids)| ids.iter().position(|id| *id == node_id))
            .filter(|pos| *pos < HEARS_BITS)
            .map(|pos| m.hears & (1 << pos) != 0)
    }

    /// Verified peers heard within the dead interval, in or out of the view: those whose
    /// `hears` bits may keep a silent member (their entries must be read fresh).
    pub fn witnesses(&self, now_ns: u64) -> Vec<u32> {
        self.peers
            .iter()
            .filter(|(_, p)| {
                !p.in_view
                    && self.is_verified(p.state.node_id, p.state.incarnation)
                    && self.alive(&p.state, now_ns)
            })
            .map(|(&id, _)| id)
            .collect()
    }

    /// Peers in the view that this node has not heard for the dead interval, kept on
    /// another peer's word, each with the last peer that heard them.
    pub fn vouched(&self, now_ns: u64) -> Vec<(u32, u32)> {
        self.peers
            .iter()
            .filter(|(_, p)| p.in_view && !self.alive(&p.state, now_ns))
            .filter_map(|(&id, p)| Some((id, p.heard_via.or(p.held_by)?.1)))
            .collect()
    }

    /// Records that `node_id`, in its incarnation `incarnation`, echoed this node's current
    /// incarnation in an (authenticated) state section: it is live now, not a recording.
    /// Until then a peer never enters the view.
    pub fn verify(&mut self, node_id: u32, incarnation: u64) {
        self.verified.insert(node_id, incarnation);
    }

    /// Whether `node_id` is verified in `incarnation`.
    pub fn is_verified(&self, node_id: u32, incarnation: u64) -> bool {
        self.verified.get(&node_id) == Some(&incarnation)
    }

    /// The peers heard within the dead interval as (node id, incarnation), the most
    /// recently (re)started first, at most `max`: what this node's state sections echo.
    pub fn echoes(&self, now_ns: u64, max: usize) -> Vec<(u32, u64)> {
        let mut heard: Vec<&PeerState> = self
            .peers
            .values()
            .map(|p| &p.state)
            .filter(|s| now_ns.saturating_sub(s.last_seen_ns) < self.dead_for(s))
            .collect();
        heard.sort_by_key(|s| std::cmp::Reverse((s.first_seen_ns, s.node_id)));
        heard
            .iter()
            .take(max)
            .map(|s| (s.node_id, s.incarnation))
            .collect()
    }

    /// Records that `source` (a CPU of this node, or its fast-path thread) could not run
    /// from `end_ns - len_ns` to `end_ns` (replacing its earlier stall): the part of a
    /// peer's silence that overlaps a stall does not count, since heartbeats received on a
    /// stopped CPU wait with it. A peer is still declared dead at most a dead interval
    /// after the stall ended.
    pub fn excuse_stall(&mut self, source: usize, end_ns: u64, len_ns: u64) {
        self.stalls.insert(source, (end_ns, len_ns));
    }

    /// How long the peer whose entry is `state` may be silent before it is dead: this
    /// node's dead interval or the peer's own, the longer (a rolling change of the dead
    /// interval: a peer fences itself only after its own, so nobody may take its VIPs
    /// sooner).
    pub fn dead_for(&self, state: &PeerState) -> u64 {
        let said = (u64::from(state.dead_us) * 1000).min(MAX_DEAD_INTERVAL.as_nanos() as u64);
        self.dead_ns.max(said)
    }

    /// The silence the peer whose entry is `state`, last known alive at `last_seen_ns`,
    /// may keep up without being dead.
    fn allowed(&self, state: &PeerState, last_seen_ns: u64) -> u64 {
        let overlap = self
            .stalls
            .values()
            .map(|&(end, len)| len.min(end.saturating_sub(last_seen_ns)))
            .max()
            .unwrap_or(0);
        self.dead_for(state) + overlap
    }

    fn alive(&self, state: &PeerState, now_ns: u64) -> bool {
        now_ns.saturating_sub(state.last_seen_ns) < self.allowed(state, state.last_seen_ns)
    }

    /// Whether `state` qualifies for the view in everything but its silence.
    fn qualifies_but_silence(&self, state: &PeerState) -> bool {
        self.is_verified(state.node_id, state.incarnation)
            && state.flags & FLAG_MATURE != 0
            && !is_leaving(state.flags)
    }

    /// Whether `p` is (or stays) in the view: heard within the dead interval, or — a member
    /// already — proven alive through another peer within it. A peer once lost returns
    /// only by being heard again (evidence never flaps it back in).
    fn qualifies(&self, p: &Peer, now_ns: u64) -> bool {
        let alive = self.alive(&p.state, now_ns)
            || (p.in_view
                && (self.alive_since(&p.state, Self::last_alive(p), now_ns)
                    || self.held(p, now_ns).is_some()));
        let healed = !p.lost
            || p.back_since
                .is_some_and(|t| now_ns.saturating_sub(t) >= self.heal_ns);
        self.qualifies_but_silence(&p.state) && alive && healed
    }

    /// Feeds the peer table as read at `now_ns`; returns the view's changes, in node order.
    pub fn observe(
        &mut self,
        table: impl IntoIterator<Item = PeerState>,
        now_ns: u64,
    ) -> Vec<Transition> {
        self.observed_ns = now_ns;
        for state in table {
            let previous = self.peers.get(&state.node_id).copied();
            let in_view = previous.is_some_and(|p| p.in_view);
            let same = previous.filter(|p| p.state.incarnation == state.incarnation);
            // Evidence about an earlier incarnation says nothing of this one.
            let heard_via = same
                .and_then(|p| p.heard_via)
                .filter(|(at, _)| *at > state.last_seen_ns);
            let held_by = same
                .and_then(|p| p.held_by)
                .filter(|(at, _)| *at > state.last_seen_ns);
            // A restart is no heal: the new incarnation holds down by itself.
            let lost = same.is_some_and(|p| p.lost);
            let back_since = if lost && self.alive(&state, now_ns) {
                same.and_then(|p| p.back_since).or(Some(now_ns))
            } else {
                None
            };
            self.peers.insert(
                state.node_id,
                Peer {
                    state,
                    in_view,
                    heard_via,
                    held_by,
                    lost,
                    back_since,
                },
            );
        }
        // What the other peers' latest `hears` bits prove about the silent members, kept
        // until overtaken: one heartbeat of theirs with a bit missing (jitter) does not
        // undo it. (Only silent members are looked at, against live verified peers only:
        // thousands of forged ids cost nothing here.)
        let silent: Vec<u32> = self
            .peers
            .iter()
            .filter(|(_, p)| p.in_view && !self.alive(&p.state, now_ns))
            .map(|(&id, _)| id)
            .collect();
        type Proofs = (Option<(u64, u32)>, Option<(u64, u32)>);
        let evidence: Vec<(u32, Proofs)> = if silent.is_empty() {
            Vec::new()
        } else {
            let witnesses: Vec<&PeerState> = self
                .peers
                .values()
                .map(|m| &m.state)
                .filter(|m| self.is_verified(m.node_id, m.incarnation) && self.alive(m, now_ns))
                .collect();
            silent
                .iter()
                .map(|id| {
                    let state = &self.peers[id].state;
                    let proofs = (
                        self.evidence(state, &witnesses),
                        self.latest_bit(state, &witnesses),
                    );
                    (*id, proofs)
                })
                .collect()
        };
        for (id, (new, bit)) in evidence {
            let p = self.peers.get_mut(&id).expect("present");
            let last = p.state.last_seen_ns;
            p.heard_via = p.heard_via.max(new).filter(|(at, _)| *at > last);
            p.held_by = p.held_by.max(bit).filter(|(at, _)| *at > last);
        }
        let mut out = Vec::new();
        let dead_ns = self.dead_ns;
        let decisions: Vec<(u32, bool, PeerState)> = self
            .peers
            .iter()
            .map(|(&id, p)| (id, self.qualifies(p, now_ns), p.state))
            .collect();
        for (node_id, qualifies, state) in decisions {
            let peer = self.peers.get_mut(&node_id).expect("present");
            if qualifies == peer.in_view {
                continue;
            }
            peer.in_view = qualifies;
            if qualifies {
                peer.lost = false;
                peer.back_since = None;
                out.push(Transition::Joined { node_id });
                continue;
            }
            let last_alive = Self::last_alive(&self.peers[&node_id]);
            let because = if !self.alive_since(&state, last_alive, now_ns) {
                let peer = self.peers.get_mut(&node_id).expect("present");
                peer.lost = true;
                peer.back_since = None;
                LeftBecause::Timeout {
                    last_seen_ns: state.last_seen_ns,
                }
            } else if is_leaving(state.flags) {
                LeftBecause::Leaving
            } else if state.first_seen_ns >= now_ns.saturating_sub(dead_ns) {
                LeftBecause::Restarted
            } else {
                LeftBecause::NotMature
            };
            out.push(Transition::Left { node_id, because });
        }
        out
    }

    /// Whether some member's latest heartbeat says it does not hear `me` (its `hears` bit
    /// for this node is clear, or written for a view this node cannot decode): a link that
    /// works one way only, which this node cannot see from its side.
    pub fn unheard_by_a_member(&self, me: u32) -> bool {
        self.peers
            .values()
            .filter(|p| p.in_view)
            .any(|p| !self.bit_for(&p.state, me))
    }

    /// Whether member `member`'s latest heartbeat, decoded with the view it names, says it
    /// does not hear `me`: what `me` claims cannot reach it (a one-way link), so in a
    /// conflict it is `me` that must give way.
    pub fn deaf_to(&self, member: u32, me: u32) -> bool {
        self.peers
            .get(&member)
            .is_some_and(|p| p.in_view && self.hears_bit(&p.state, me) == Some(false))
    }

    /// The peers in the view, in node order.
    pub fn view_peers(&self) -> Vec<u32> {
        self.peers
            .iter()
            .filter(|(_, p)| p.in_view)
            .map(|(&id, _)| id)
            .collect()
    }

    /// When the earliest peer in the view would time out, or a returning peer's heal
    /// delay ends, if any (CLOCK_MONOTONIC ns). A heal delay that ended by the last
    /// observation without the peer returning (it is not mature, or leaving) is no
    /// deadline: only its next heartbeat can change that (a deadline in the past would
    /// keep the fast path from ever sleeping).
    pub fn next_deadline(&self) -> Option<u64> {
        let now = self.observed_ns;
        let timeouts = self.peers.values().filter(|p| p.in_view).map(|p| {
            let at = Self::last_alive(p);
            let timeout = at + self.allowed(&p.state, at);
            // Kept on a witness's view past its timeout: until the hold ends (a view
            // change of the witness comes with its heartbeat).
            match self.held(p, now) {
                Some(until) if timeout <= now => until,
                _ => timeout,
            }
        });
        let heals = self
            .peers
            .values()
            .filter(|p| !p.in_view && p.lost)
            .filter_map(|p| p.back_since.map(|t| t + self.heal_ns))
            .filter(|t| *t > self.observed_ns);
        timeouts.chain(heals).min()
    }

    /// Every peer heard, with whether it is in the view, in node order.
    pub fn peers(&self) -> impl Iterator<Item = (&PeerState, bool)> {
        self.peers.values().map(|p| (&p.state, p.in_view))
    }

    /// The last state seen for a peer.
    pub fn peer(&self, node_id: u32) -> Option<&PeerState> {
        self.peers.get(&node_id).map(|p| &p.state)
    }

    /// Forgets peers outside the view that have been silent for `after_ns`, then, while
    /// more than `max` peers are known, those outside the view silent longest: forged or
    /// long-gone ids cannot grow the table without bound. Returns the forgotten ids.
    pub fn forget(&mut self, now_ns: u64, after_ns: u64, max: usize) -> Vec<u32> {
        let mut gone: Vec<u32> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.in_view && now_ns.saturating_sub(p.state.last_seen_ns) >= after_ns)
            .map(|(&id, _)| id)
            .collect();
        let left = self.peers.len() - gone.len();
        if left > max {
            let mut idle: Vec<(u64, u32)> = self
                .peers
                .iter()
                .filter(|(id, p)| !p.in_view && !gone.contains(id))
                .map(|(&id, p)| (p.state.last_seen_ns, id))
                .collect();
            idle.sort_unstable();
            gone.extend(idle.iter().take(left - max).map(|&(_, id)| id));
        }
        for id in &gone {
            self.peers.remove(id);
            self.verified.remove(id);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vipd_common::heartbeat::FLAG_LEAVING;

    const MS: u64 = 1_000_000;
    const DEAD: u64 = 300 * MS;

    /// Observes `table` as if every peer in it had echoed our incarnation.
    fn seen(
        m: &mut Membership,
        table: impl IntoIterator<Item = PeerState>,
        now_ns: u64,
    ) -> Vec<Transition> {
        let table: Vec<PeerState> = table.into_iter().collect();
        for p in &table {
            m.verify(p.node_id, p.incarnation);
        }
        m.observe(table, now_ns)
    }

    #[test]
    fn a_peer_joins_only_once_it_echoed_our_incarnation() {
        let mut m = Membership::new(DEAD);
        let mut p = peer(2, 1000 * MS, FLAG_MATURE);
        p.incarnation = 7;
        // Heard, mature, alive — but it has not shown it hears us (a replayed recording
        // could look just like this).
        assert!(m.observe([p], 1000 * MS).is_empty());
        // An echo of another incarnation of it proves nothing.
        m.verify(2, 6);
        assert!(m.observe([p], 1001 * MS).is_empty());
        m.verify(2, 7);
        let t = m.observe([p], 1002 * MS);
        assert_eq!(t, vec![Transition::Joined { node_id: 2 }]);
        // It restarts: the new incarnation must echo us again.
        p.incarnation = 8;
        p.first_seen_ns = 1100 * MS;
        p.last_seen_ns = 1100 * MS;
        let t = m.observe([p], 1100 * MS);
        assert_eq!(
            t,
            vec![Transition::Left {
                node_id: 2,
                because: LeftBecause::Restarted
            }]
        );
        m.verify(2, 8);
        assert_eq!(
            m.observe([p], 1101 * MS),
            vec![Transition::Joined { node_id: 2 }]
        );
        // What we echo: the peers we hear, the most recently (re)started first.
        let mut q = peer(3, 1101 * MS, 0);
        q.incarnation = 5;
        q.first_seen_ns = 1101 * MS;
        m.observe([q], 1101 * MS);
        assert_eq!(m.echoes(1101 * MS, 8), vec![(3, 5), (2, 8)]);
        assert_eq!(m.echoes(1101 * MS, 1), vec![(3, 5)]);
        assert!(m.echoes(1101 * MS + DEAD, 8).is_empty());
    }

    fn peer(node_id: u32, last_seen_ns: u64, flags: u8) -> PeerState {
        PeerState {
            node_id,
            last_seen_ns,
            first_seen_ns: 0,
            flags,
            ..PeerState::default()
        }
    }

    #[test]
    fn a_peer_back_from_a_timeout_returns_after_the_heal_delay() {
        const HEAL: u64 = 500 * MS;
        let mut m = Membership::new(DEAD);
        m.set_heal_delay(HEAL);
        let at = |t: u64| peer(2, t * MS, FLAG_MATURE);
        assert_eq!(
            seen(&mut m, [at(1000)], 1000 * MS),
            vec![Transition::Joined { node_id: 2 }]
        );
        // Lost by timeout.
        let t = seen(&mut m, [at(1000)], 1300 * MS);
        assert!(matches!(
            t[..],
            [Transition::Left {
                because: LeftBecause::Timeout { .. },
                ..
            }]
        ));
        // Heard again: returning, not in the view, until heard for the heal delay.
        assert!(seen(&mut m, [at(2000)], 2000 * MS).is_empty());
        assert_eq!(m.returning(2000 * MS), vec![2]);
        assert_eq!(m.next_deadline(), Some(2000 * MS + HEAL));
        assert!(seen(&mut m, [at(2400)], 2400 * MS).is_empty());
        // Silent again past the dead interval: the wait starts over.
        assert!(seen(&mut m, [at(2400)], 2800 * MS).is_empty());
        assert!(m.returning(2800 * MS).is_empty());
        assert!(seen(&mut m, [at(3000)], 3000 * MS).is_empty());
        assert!(seen(&mut m, [at(3400)], 3400 * MS).is_empty());
        assert_eq!(
            seen(&mut m, [at(3500)], 3500 * MS),
            vec![Transition::Joined { node_id: 2 }]
        );
        assert!(m.returning(3500 * MS).is_empty());
        // A restart is no heal: a new incarnation joins once mature, without the delay.
        seen(&mut m, [at(3500)], 3900 * MS);
        let mut restarted = at(4000);
        restarted.incarnation = 9;
        assert_eq!(
            seen(&mut m, [restarted], 4000 * MS),
            vec![Transition::Joined { node_id: 2 }]
        );
        // Leaving is no timeout either: back at once.
        let mut leaving = at(4100);
        leaving.incarnation = 9;
        leaving.flags |= FLAG_LEAVING;
        seen(&mut m, [leaving], 4100 * MS);
        let mut back = at(4200);
        back.incarnation = 9;
        assert_eq!(
            seen(&mut m, [back], 4200 * MS),
            vec![Transition::Joined { node_id: 2 }]
        );
    }

    #[test]
    fn a_heal_delay_that_ended_without_a_return_is_no_deadline() {
        // Lost, heard again but not mature (its checks fail): when its heal delay ends it
        // does not return, and that moment must not stay a deadline (the fast path would
        // wake for it forever, never sleeping).
        const HEAL: u64 = 500 * MS;
        let mut m = Membership::new(DEAD);
        m.set_heal_delay(HEAL);
        seen(&mut m, [peer(2, 1000 * MS, FLAG_MATURE)], 1000 * MS);
        seen(&mut m, [peer(2, 1000 * MS, FLAG_MATURE)], 1300 * MS);
        assert!(seen(&mut m, [peer(2, 2000 * MS, 0)], 2000 * MS).is_empty());
        assert_eq!(m.next_deadline(), Some(2000 * MS + HEAL));
        assert!(seen(&mut m, [peer(2, 2500 * MS, 0)], 2500 * MS).is_empty());
        assert_eq!(m.next_deadline(), None);
        // Mature again: it returns at once (heard for longer than the delay).
        assert_eq!(
            seen(&mut m, [peer(2, 2600 * MS, FLAG_MATURE)], 2600 * MS),
            vec![Transition::Joined { node_id: 2 }]
        );
    }

    #[test]
    fn long_silent_and_surplus_peers_outside_the_view_are_forgotten() {
        let mut m = Membership::new(DEAD);
        seen(&mut m, [peer(2, 1000 * MS, FLAG_MATURE)], 1000 * MS);
        let forged = (100..110).map(|id| peer(id, (900 + id as u64) * MS, 0));
        seen(&mut m, forged, 1010 * MS);
        // Nothing silent long enough, at most 20 known: nothing forgotten.
        assert!(m.forget(1010 * MS, 60_000 * MS, 20).is_empty());
        // At most 5: the six silent longest outside the view go, the member stays.
        let gone = m.forget(1010 * MS, 60_000 * MS, 5);
        assert_eq!(gone, vec![100, 101, 102, 103, 104, 105]);
        assert!(m.peer(2).is_some());
        // Long silent and outside the view: forgotten (the member has timed out of the
        // view by now and goes too).
        seen(&mut m, [], 70_000 * MS);
        let gone = m.forget(70_000 * MS, 60_000 * MS, 5);
        assert_eq!(gone.len(), 5);
        assert_eq!(m.peers().count(), 0);
    }

    #[test]
    fn mature_alive_peer_joins_once() {
        let mut m = Membership::new(DEAD);
        let t = seen(&mut m, [peer(2, 1000 * MS, FLAG_MATURE)], 1001 * MS);
        assert_eq!(t, vec![Transition::Joined { node_id: 2 }]);
        assert!(seen(&mut m, [peer(2, 1100 * MS, FLAG_MATURE)], 1101 * MS).is_empty());
        assert_eq!(m.view_peers(), vec![2]);
        assert_eq!(m.next_deadline(), Some(1100 * MS + DEAD));
    }

    #[test]
    fn immature_peer_stays_out() {
        let mut m = Membership::new(DEAD);
        assert!(seen(&mut m, [peer(2, 1000 * MS, 0)], 1001 * MS).is_empty());
        assert!(m.view_peers().is_empty());
        assert_eq!(m.next_deadline(), None);
    }

    /// Peer 3's heartbeat at `at_ms`, hearing the members at `hears` (positions in
    /// [1, 2, 3]), with `view` as its view.
    fn voucher(at_ms: u64, hears: u64, view: &[u32]) -> PeerState {
        PeerState {
            interval_us: 100_000,
            hears,
            view_digest: view_digest(view),
            ..peer(3, at_ms * MS, FLAG_MATURE)
        }
    }

    /// Node 1 with peers 2 and 3 in its view, all heard at 1000 ms (interval 100 ms).
    fn three() -> Membership {
        let mut m = Membership::new(DEAD);
        let two = PeerState {
            interval_us: 100_000,
            ..peer(2, 1000 * MS, FLAG_MATURE)
        };
        seen(&mut m, [two, voucher(1000, 0b011, &[1, 2, 3])], 1000 * MS);
        m.set_view(&[1, 2, 3]);
        m
    }

    #[test]
    fn a_silent_peer_another_member_hears_stays_until_it_does_not() {
        let mut m = three();
        // 2 falls silent here at 1000 ms; 3 keeps hearing it (bit 1).
        for at in [1100, 1200] {
            assert!(seen(&mut m, [voucher(at, 0b011, &[1, 2, 3])], at * MS).is_empty());
        }
        // 2's deadline: 3's heartbeat of 1290 ms proves 2 alive at 1140 ms (its bit covers
        // 125 ms, plus 25 for delivery), later than we heard it: kept, as if heard then.
        assert!(seen(&mut m, [voucher(1290, 0b011, &[1, 2, 3])], 1300 * MS).is_empty());
        assert_eq!(m.vouched(1300 * MS), vec![(2, 3)]);
        assert_eq!(m.view_peers(), vec![2, 3]);
        assert_eq!(m.next_deadline(), Some(1440 * MS));
        assert!(seen(&mut m, [voucher(1390, 0b011, &[1, 2, 3])], 1400 * MS).is_empty());
        assert_eq!(m.next_deadline(), Some(1540 * MS));
        // 2's heartbeats reach 3 late for a while (its bit clear), but 3 still names a view
        // with 2 in it: kept on 3's own view, past the last proof (1240 ms) and its dead
        // interval; the deadline is the hold's end, a dead interval after the last bit.
        assert!(seen(&mut m, [voucher(1490, 0b001, &[1, 2, 3])], 1500 * MS).is_empty());
        assert!(seen(&mut m, [voucher(1540, 0b001, &[1, 2, 3])], 1545 * MS).is_empty());
        assert_eq!(m.vouched(1545 * MS), vec![(2, 3)]);
        assert_eq!(m.next_deadline(), Some(1690 * MS));
        // 3 drops 2 from its view: lost, as a timeout of its last heartbeat here.
        let t = seen(&mut m, [voucher(1590, 0b001, &[1, 3])], 1590 * MS);
        assert_eq!(
            t,
            vec![Transition::Left {
                node_id: 2,
                because: LeftBecause::Timeout {
                    last_seen_ns: 1000 * MS
                }
            }]
        );
        assert!(m.vouched(1590 * MS).is_empty());
    }

    #[test]
    fn a_witness_view_keeps_a_peer_a_dead_interval_past_its_last_bit_at_most() {
        let mut m = three();
        seen(&mut m, [voucher(1290, 0b011, &[1, 2, 3])], 1300 * MS);
        // 3 keeps naming 2 (on yet another's word, say) but stops hearing it: the hold ends
        // a dead interval after 3's last bit for it (1290 ms), a chain of views is no proof.
        assert!(seen(&mut m, [voucher(1390, 0b001, &[1, 2, 3])], 1400 * MS).is_empty());
        assert!(seen(&mut m, [voucher(1490, 0b001, &[1, 2, 3])], 1589 * MS).is_empty());
        let t = seen(&mut m, [voucher(1590, 0b001, &[1, 2, 3])], 1590 * MS);
        assert!(
            matches!(t[..], [Transition::Left { node_id: 2, .. }]),
            "{t:?}"
        );
    }

    #[test]
    fn a_dead_peer_is_declared_at_its_deadline_whatever_the_bits_say() {
        let mut m = three();
        // 2 died right after its heartbeat of 1000 ms; 3 heard that one too. 3's last bit
        // for it is at most 125 ms after it: never 150 ms past our last hearing of it.
        seen(&mut m, [voucher(1124, 0b011, &[1, 2, 3])], 1124 * MS);
        let t = seen(&mut m, [voucher(1124, 0b011, &[1, 2, 3])], 1300 * MS);
        assert_eq!(t.len(), 1, "{t:?}");
        assert!(matches!(t[0], Transition::Left { node_id: 2, .. }));
    }

    #[test]
    fn only_a_live_member_of_the_same_view_vouches() {
        // A view this node never had: its bits cannot be decoded.
        let mut m = three();
        let t = seen(&mut m, [voucher(1290, 0b011, &[1, 2, 3, 4])], 1300 * MS);
        assert!(
            matches!(t[..], [Transition::Left { node_id: 2, .. }]),
            "{t:?}"
        );
        // A voucher silent itself past the dead interval: both go.
        let mut m = three();
        seen(&mut m, [voucher(1290, 0b011, &[1, 2, 3])], 1300 * MS);
        let t = seen(&mut m, [], 1600 * MS);
        assert_eq!(t.len(), 2, "{t:?}");
    }

    #[test]
    fn bits_are_read_with_the_view_the_member_sent() {
        // This node's view changed (7 joined, or this node became active); 3 still sends
        // the digest of the view before, where 2 is bit 1.
        let mut m = three();
        m.set_view(&[1, 2, 3, 7]);
        assert!(seen(&mut m, [voucher(1290, 0b010, &[1, 2, 3])], 1300 * MS).is_empty());
        assert_eq!(m.vouched(1300 * MS), vec![(2, 3)]);
        // In the new view 2 is bit 1 too, 7 bit 3: a bit for 7 is not one for 2, so the
        // proof of 1140 ms runs out, and the hold on 3's view a dead interval after 3's
        // last bit for 2 (1290 ms).
        let t = seen(&mut m, [voucher(1590, 0b1000, &[1, 2, 3, 7])], 1590 * MS);
        assert!(
            matches!(t[..], [Transition::Left { node_id: 2, .. }]),
            "{t:?}"
        );
    }

    #[test]
    fn hears_bits_follow_the_view_order_and_never_name_the_sender() {
        let seen_at = |id: u32| match id {
            2 => Some(990 * MS),
            5 => Some(800 * MS),
            _ => None,
        };
        let bits = Membership::hears_bits(&[1, 2, 5, 9], 1, seen_at, 1000 * MS, 125 * MS);
        assert_eq!(bits, 0b0010);
        let bits = Membership::hears_bits(&[1, 2, 5, 9], 1, seen_at, 1000 * MS, 250 * MS);
        assert_eq!(bits, 0b0110);
        assert_eq!(hears_window(100 * MS), 125 * MS);
    }

    #[test]
    fn silence_for_the_dead_interval_is_a_timeout() {
        let mut m = Membership::new(DEAD);
        seen(&mut m, [peer(2, 1000 * MS, FLAG_MATURE)], 1000 * MS);
        // One nanosecond before the deadline: still alive.
        assert!(seen(&mut m, [], 1000 * MS + DEAD - 1).is_empty());
        let t = seen(&mut m, [], 1000 * MS + DEAD);
        assert_eq!(
            t,
            vec![Transition::Left {
                node_id: 2,
                because: LeftBecause::Timeout {
                    last_seen_ns: 1000 * MS
                }
            }]
        );
        assert!(m.view_peers().is_empty());
    }

    /// A rolling change of the dead interval: a peer whose own is longer fences itself only
    /// after it, so it is waited for that long; a shorter one changes nothing here.
    #[test]
    fn a_peer_with_a_longer_dead_interval_is_waited_for_that_long() {
        let mut m = Membership::new(DEAD);
        let slow = PeerState {
            dead_us: (3 * DEAD / 1000) as u32,
            ..peer(2, 1000 * MS, FLAG_MATURE)
        };
        let quick = PeerState {
            dead_us: (DEAD / 2000) as u32,
            ..peer(3, 1000 * MS, FLAG_MATURE)
        };
        seen(&mut m, [slow, quick], 1000 * MS);
        assert_eq!(m.next_deadline(), Some(1000 * MS + DEAD));
        let t = seen(&mut m, [], 1000 * MS + DEAD);
        assert_eq!(
            t,
            vec![Transition::Left {
                node_id: 3,
                because: LeftBecause::Timeout {
                    last_seen_ns: 1000 * MS
                }
            }]
        );
        assert_eq!(m.next_deadline(), Some(1000 * MS + 3 * DEAD));
        assert!(seen(&mut m, [], 1000 * MS + 3 * DEAD - 1).is_empty());
        assert_eq!(m.view_peers(), vec![2]);
        assert_eq!(seen(&mut m, [], 1000 * MS + 3 * DEAD).len(), 1);
        assert!(m.view_peers().is_empty());
    }

    /// A peer saying a dead interval longer than any this build allows is waited for the
    /// longest allowed, not for 71 minutes.
    #[test]
    fn a_peer_dead_interval_past_the_limit_is_capped() {
        let m = Membership::new(DEAD);
        let wild = PeerState {
            dead_us: u32::MAX,
            ..peer(2, 1000 * MS, FLAG_MATURE)
        };
        assert_eq!(m.dead_for(&wild), MAX_DEAD_INTERVAL.as_nanos() as u64);
        assert_eq!(m.dead_for(&peer(3, 1000 * MS, FLAG_MATURE)), DEAD);
    }

    #[test]
    fn a_late_daemon_does_not_declare_a_fresh_peer_dead() {
        // The daemon wakes long after the deadline it had computed, but the kernel kept
        // stamping heartbeats meanwhile: the peer is alive.
        let mut m = Membership::new(DEAD);
        seen(&mut m, [peer(2, 1000 * MS, FLAG_MATURE)], 1000 * MS);
        assert!(seen(&mut m, [peer(2, 5000 * MS, FLAG_MATURE)], 5001 * MS).is_empty());
    }

    #[test]
    fn silence_during_our_own_stall_is_excused() {
        let mut m = Membership::new(DEAD);
        seen(&mut m, [peer(2, 1000 * MS, FLAG_MATURE)], 1000 * MS);
        // This node was stopped for 500 ms (the whole machine, peers included): on waking
        // the peer is past its deadline only because nobody ran.
        m.excuse_stall(0, 1600 * MS, 500 * MS);
        assert!(seen(&mut m, [], 1600 * MS).is_empty());
        assert_eq!(m.next_deadline(), Some(1000 * MS + DEAD + 500 * MS));
        // Heard again after the stall: ordinary deadlines from then on.
        seen(&mut m, [peer(2, 1601 * MS, FLAG_MATURE)], 1601 * MS);
        assert_eq!(m.next_deadline(), Some(1601 * MS + DEAD));
        // Not heard again: dead once the excuse is used up.
        let mut m = Membership::new(DEAD);
        seen(&mut m, [peer(2, 1000 * MS, FLAG_MATURE)], 1000 * MS);
        m.excuse_stall(0, 1600 * MS, 500 * MS);
        let t = seen(&mut m, [], 1000 * MS + DEAD + 500 * MS);
        assert!(matches!(
            t.as_slice(),
            [Transition::Left {
                because: LeftBecause::Timeout { .. },
                ..
            }]
        ));
    }

    #[test]
    fn only_the_silence_that_overlaps_a_stall_is_excused() {
        let mut m = Membership::new(DEAD);
        seen(&mut m, [peer(2, 1000 * MS, FLAG_MATURE)], 1000 * MS);
        // A CPU stopped from 1200 to 1250 ms: 50 ms more; the longest overlap counts.
        m.excuse_stall(1, 1250 * MS, 50 * MS);
        m.excuse_stall(2, 1210 * MS, 20 * MS);
        assert_eq!(m.next_deadline(), Some(1000 * MS + DEAD + 50 * MS));
        // Heard during the stall: only the rest of the stall is excused.
        seen(&mut m, [peer(2, 1240 * MS, FLAG_MATURE)], 1240 * MS);
        assert_eq!(m.next_deadline(), Some(1240 * MS + DEAD + 10 * MS));
    }

    #[test]
    fn leaving_leaves_at_once() {
        let mut m = Membership::new(DEAD);
        seen(&mut m, [peer(2, 1000 * MS, FLAG_MATURE)], 1000 * MS);
        let t = seen(
            &mut m,
            [peer(2, 1010 * MS, FLAG_MATURE | FLAG_LEAVING)],
            1010 * MS,
        );
        assert_eq!(
            t,
            vec![Transition::Left {
                node_id: 2,
                because: LeftBecause::Leaving
            }]
        );
    }

    #[test]
    fn restart_within_dead_interval_leaves_until_mature_again() {
        let mut m = Membership::new(DEAD);
        seen(&mut m, [peer(2, 1000 * MS, FLAG_MATURE)], 1000 * MS);
        let restarted = PeerState {
            first_seen_ns: 1050 * MS,
            ..peer(2, 1050 * MS, 0)
        };
        let t = seen(&mut m, [restarted], 1050 * MS);
        assert_eq!(
            t,
            vec![Transition::Left {
                node_id: 2,
                because: LeftBecause::Restarted
            }]
        );
        let mature = PeerState {
            first_seen_ns: 1050 * MS,
            ..peer(2, 2050 * MS, FLAG_MATURE)
        };
        assert_eq!(
            seen(&mut m, [mature], 2050 * MS),
            vec![Transition::Joined { node_id: 2 }]
        );
    }

    #[test]
    fn returning_peer_rejoins() {
        let mut m = Membership::new(DEAD);
        seen(&mut m, [peer(2, 1000 * MS, FLAG_MATURE)], 1000 * MS);
        seen(&mut m, [], 2000 * MS);
        let t = seen(&mut m, [peer(2, 3000 * MS, FLAG_MATURE)], 3000 * MS);
        assert_eq!(t, vec![Transition::Joined { node_id: 2 }]);
    }

    #[test]
    fn transitions_come_in_node_order() {
        let mut m = Membership::new(DEAD);
        let t = seen(
            &mut m,
            [peer(9, 10 * MS, FLAG_MATURE), peer(3, 10 * MS, FLAG_MATURE)],
            10 * MS,
        );
        assert_eq!(
            t,
            vec![
                Transition::Joined { node_id: 3 },
                Transition::Joined { node_id: 9 }
            ]
        );
    }
}
