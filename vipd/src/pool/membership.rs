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
//! Silence during this node's own stall is excused ([`Membership::excuse_stall`]): when a
//! hypervisor stops the whole machine, the peers' heartbeats stop with it (in a lab, or
//! when the "peers" share the host), and on waking the deadline watcher must not judge
//! them before they have had a chance to send again.

use std::collections::BTreeMap;

use vipd_common::{
    heartbeat::{FLAG_LEAVING, FLAG_MATURE},
    maps::PeerState,
};

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
}

/// The membership view kept by one node.
#[derive(Debug)]
pub struct Membership {
    dead_ns: u64,
    peers: BTreeMap<u32, Peer>,
    /// The last stall of each of this node's CPUs (or threads), by source: (when it
    /// ended, how long it was).
    stalls: BTreeMap<usize, (u64, u64)>,
    /// The incarnation of each peer that has echoed ours (see [`Membership::verify`]).
    verified: BTreeMap<u32, u64>,
}

impl Membership {
    /// A view with no peers; a peer silent for `dead_ns` is declared dead.
    pub fn new(dead_ns: u64) -> Self {
        Self {
            dead_ns,
            peers: BTreeMap::new(),
            stalls: BTreeMap::new(),
            verified: BTreeMap::new(),
        }
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
            .filter(|s| now_ns.saturating_sub(s.last_seen_ns) < self.dead_ns)
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

    /// The silence a peer last heard at `last_seen_ns` may keep up without being dead.
    fn allowed(&self, last_seen_ns: u64) -> u64 {
        let overlap = self
            .stalls
            .values()
            .map(|&(end, len)| len.min(end.saturating_sub(last_seen_ns)))
            .max()
            .unwrap_or(0);
        self.dead_ns + overlap
    }

    fn alive(&self, state: &PeerState, now_ns: u64) -> bool {
        now_ns.saturating_sub(state.last_seen_ns) < self.allowed(state.last_seen_ns)
    }

    fn qualifies(&self, state: &PeerState, now_ns: u64) -> bool {
        self.is_verified(state.node_id, state.incarnation)
            && self.alive(state, now_ns)
            && state.flags & FLAG_MATURE != 0
            && state.flags & FLAG_LEAVING == 0
    }

    /// Feeds the peer table as read at `now_ns`; returns the view's changes, in node order.
    pub fn observe(
        &mut self,
        table: impl IntoIterator<Item = PeerState>,
        now_ns: u64,
    ) -> Vec<Transition> {
        for state in table {
            let previous = self.peers.get(&state.node_id).copied();
            let in_view = previous.is_some_and(|p| p.in_view);
            self.peers.insert(state.node_id, Peer { state, in_view });
        }
        let mut out = Vec::new();
        let dead_ns = self.dead_ns;
        let decisions: Vec<(u32, bool, PeerState)> = self
            .peers
            .iter()
            .map(|(&id, p)| (id, self.qualifies(&p.state, now_ns), p.state))
            .collect();
        for (node_id, qualifies, state) in decisions {
            let peer = self.peers.get_mut(&node_id).expect("present");
            if qualifies == peer.in_view {
                continue;
            }
            peer.in_view = qualifies;
            if qualifies {
                out.push(Transition::Joined { node_id });
                continue;
            }
            let because =
                if now_ns.saturating_sub(state.last_seen_ns) >= self.allowed(state.last_seen_ns) {
                    LeftBecause::Timeout {
                        last_seen_ns: state.last_seen_ns,
                    }
                } else if state.flags & FLAG_LEAVING != 0 {
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

    /// The peers in the view, in node order.
    pub fn view_peers(&self) -> Vec<u32> {
        self.peers
            .iter()
            .filter(|(_, p)| p.in_view)
            .map(|(&id, _)| id)
            .collect()
    }

    /// When the earliest peer in the view would time out, if any (CLOCK_MONOTONIC ns).
    pub fn next_deadline(&self) -> Option<u64> {
        self.peers
            .values()
            .filter(|p| p.in_view)
            .map(|p| p.state.last_seen_ns + self.allowed(p.state.last_seen_ns))
            .min()
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
