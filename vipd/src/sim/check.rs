//! The invariants, checked after every wake-up and every fault's start and end:
//! - two nodes that hear each other never both answer for a VIP for longer than a dead
//!   interval (two takers settle it by their state sections), once the faults have been
//!   still for [`Bounds::two_owners_ns`];
//! - a paused node's kernel (its daemon stopped, or stuck in an address add) never answers
//!   for a VIP that a running node on the same link took during the pause, beyond
//!   [`Bounds::fence_ns`] if that node counted on its heartbeats when the pause began
//!   ([`World::counts_on`]: it fences itself before its peers may take over, whatever
//!   their dead intervals), beyond its fence otherwise (its last heartbeats were lost, or
//!   it was no member of the taker's view); a VIP both held across a split, before the
//!   pause, is the heal's to settle, as for two running nodes;
//! - a VIP is never answered by nobody while a node that may hold it runs, once the faults
//!   have been still for [`Bounds::no_owner_ns`];
//! - after the faults end and a quiet time ([`Bounds::quiet_ns`]), each VIP has exactly
//!   one owner, where placement puts it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use super::world::{Params, World};
use crate::pool::placement::{self, Member};

const MS: u64 = 1_000_000;

/// How long after the last fault change each invariant must hold.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// How long two owners that hear each other may last (a dead interval).
    pub settle_ns: u64,
    /// How long a paused node and a running one may both answer (a heartbeat interval:
    /// the fence and the takeover are timed from the same last heartbeat).
    pub fence_ns: u64,
    pub two_owners_ns: u64,
    pub no_owner_ns: u64,
    pub quiet_ns: u64,
}

impl Bounds {
    /// The bounds for `params`' timers: two dead intervals plus the heal delay (a peer
    /// heard again is settled within a few heartbeats, or after its heal delay), and for a
    /// VIP on nobody the hold-down on top (a node that starts waits that long).
    pub fn for_params(p: &Params) -> Self {
        let (dead, hold) = (p.longest_dead_ms() * MS, p.hold_down_ms * MS);
        Self {
            settle_ns: dead,
            fence_ns: p.interval_ms * MS,
            two_owners_ns: 2 * dead + hold + 500 * MS,
            no_owner_ns: 2 * dead + 2 * hold + 1000 * MS,
            quiet_ns: 2 * hold + 5000 * MS,
        }
    }
}

/// An invariant broken: when and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub at_ns: u64,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {:.3}s: {}", self.at_ns as f64 / 1e9, self.what)
    }
}

/// Watches a run.
pub struct Checker {
    bounds: Bounds,
    /// Since when each VIP has been answered by nobody.
    unanswered_since: BTreeMap<IpAddr, u64>,
    /// Since when each VIP has been answered by two nodes that hear each other.
    doubled_since: BTreeMap<(IpAddr, usize, usize), u64>,
    /// Since when each VIP has been answered by a paused node and a running one beside it.
    unfenced_since: BTreeMap<(IpAddr, usize, usize), u64>,
    /// Since when each node has answered for each VIP.
    answering_since: BTreeMap<(IpAddr, usize), u64>,
    /// Since when each paused node has been paused, and the nodes that counted on its
    /// heartbeats then ([`World::counts_on`]).
    paused_since: BTreeMap<usize, (u64, BTreeSet<usize>)>,
}

impl Checker {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            unanswered_since: BTreeMap::new(),
            doubled_since: BTreeMap::new(),
            unfenced_since: BTreeMap::new(),
            answering_since: BTreeMap::new(),
            paused_since: BTreeMap::new(),
        }
    }

    /// The invariants that hold at every moment (past their bounds).
    pub fn check(&mut self, w: &World) -> Result<(), Violation> {
        let still = w.now.saturating_sub(w.last_change);
        for i in 0..w.len() {
            if w.health(i).paused {
                self.paused_since.entry(i).or_insert_with(|| {
                    let counting = (0..w.len()).filter(|j| w.counts_on(*j, i)).collect();
                    (w.now, counting)
                });
            } else {
                self.paused_since.remove(&i);
            }
        }
        let pool = w.pool().to_vec();
        for vip in &pool {
            let owners: Vec<usize> = (0..w.len()).filter(|i| w.answers(*i, vip)).collect();
            self.answering_since
                .retain(|(v, i), _| v != vip || owners.contains(i));
            for i in &owners {
                self.answering_since.entry((*vip, *i)).or_insert(w.now);
            }
            // How long `a`, paused, may answer beside `b`, which took the VIP during the
            // pause: an interval if `b` counted on `a`'s heartbeats when it stopped (the
            // fence comes first), else until the fence at the latest (a dead interval of
            // `a`'s after its last heartbeat); no bound for a VIP held before the pause.
            let pause_bound = |a: usize, b: usize| {
                let (paused, counting) = self.paused_since.get(&a)?;
                let took = self
                    .answering_since
                    .get(&(*vip, b))
                    .is_some_and(|since| since > paused);
                took.then(|| match counting.contains(&b) {
                    true => self.bounds.fence_ns,
                    false => w.params.dead_ms_of(a) * MS + self.bounds.fence_ns,
                })
            };
            let mut doubled = Vec::new();
            for (k, a) in owners.iter().enumerate() {
                for b in &owners[k + 1..] {
                    if w.hear_each_other(*a, *b) {
                        doubled.push((*vip, *a, *b));
                    }
                }
            }
            self.doubled_since
                .retain(|(v, a, b), _| v != vip || doubled.contains(&(*v, *a, *b)));
            for (v, a, b) in doubled {
                let since = *self.doubled_since.entry((v, a, b)).or_insert(w.now);
                let lasted = w.now.saturating_sub(since);
                if still > self.bounds.two_owners_ns && lasted > self.bounds.settle_ns {
                    return Err(Violation {
                        at_ns: w.now,
                        what: format!(
                            "{vip} answered by n{} and n{}, which hear each other, for {:.3}s",
                            w.id(a),
                            w.id(b),
                            lasted as f64 / 1e9
                        ),
                    });
                }
            }
            let unfenced: Vec<(IpAddr, usize, usize, u64)> = owners
                .iter()
                .flat_map(|a| owners.iter().map(move |b| (*a, *b)))
                .filter(|(a, b)| w.paused_beside(*a, *b))
                .filter_map(|(a, b)| pause_bound(a, b).map(|bound| (*vip, a, b, bound)))
                .collect();
            self.unfenced_since.retain(|(v, a, b), _| {
                v != vip || unfenced.iter().any(|u| (u.0, u.1, u.2) == (*v, *a, *b))
            });
            for (v, a, b, bound) in unfenced {
                let since = *self.unfenced_since.entry((v, a, b)).or_insert(w.now);
                let lasted = w.now.saturating_sub(since);
                if lasted > bound {
                    return Err(Violation {
                        at_ns: w.now,
                        what: format!(
                            "{vip} answered by n{}, paused, and by n{} beside it, which took it during the pause, for {:.3}s",
                            w.id(a),
                            w.id(b),
                            lasted as f64 / 1e9
                        ),
                    });
                }
            }
            if !owners.is_empty() {
                self.unanswered_since.remove(vip);
                continue;
            }
            let since = *self.unanswered_since.entry(*vip).or_insert(w.now);
            let eligible = (0..w.len()).any(|i| {
                let h = w.health(i);
                h.running && !h.paused && h.carrier && h.healthy && !h.add_fails
            });
            let unanswered = w.now.saturating_sub(since.max(w.last_change));
            if eligible && unanswered > self.bounds.no_owner_ns {
                return Err(Violation {
                    at_ns: w.now,
                    what: format!(
                        "{vip} answered by nobody for {:.3}s while a node that may hold it runs",
                        unanswered as f64 / 1e9
                    ),
                });
            }
        }
        Ok(())
    }

    /// After the quiet time: each VIP on exactly one node, as placement puts it on every
    /// node (equal weights).
    pub fn converged(&self, w: &World) -> Result<(), Violation> {
        let mut holders = BTreeMap::new();
        for vip in w.pool() {
            let owners: Vec<u32> = (0..w.len())
                .filter(|i| w.answers(*i, vip))
                .map(|i| w.id(i))
                .collect();
            if owners.len() != 1 {
                return Err(Violation {
                    at_ns: w.now,
                    what: format!("after the quiet time {vip} is answered by {owners:?}"),
                });
            }
            holders.insert(*vip, owners[0]);
        }
        let members: Vec<Member> = (0..w.len())
            .map(|i| Member {
                id: w.id(i),
                weight: 1,
            })
            .collect();
        let placed = placement::place_by_lists(
            w.pool(),
            &members,
            &BTreeMap::new(),
            &holders,
            &BTreeMap::new(),
            true,
        );
        if placed != holders {
            let counts = |m: &BTreeMap<IpAddr, u32>| {
                let ids: BTreeSet<u32> = m.values().copied().collect();
                ids.iter()
                    .map(|id| (*id, m.values().filter(|v| *v == id).count()))
                    .collect::<Vec<_>>()
            };
            return Err(Violation {
                at_ns: w.now,
                what: format!(
                    "after the quiet time the VIPs are not where placement puts them: held \
                     {:?}, placed {:?}",
                    counts(&holders),
                    counts(&placed)
                ),
            });
        }
        Ok(())
    }
}
