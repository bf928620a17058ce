//! Which node holds which VIP: weighted, balanced, minimal movement, deterministic.
//!
//! Inputs are the membership view (node ids and weights), the pool, and who holds each VIP
//! now (learned from the holders' heartbeats). Every node that has the same inputs computes
//! the same assignment, whatever the order it learned them in, so a takeover needs no
//! coordination round.
//!
//! With `W` the sum of weights and `N` the number of VIPs, node `i`'s fair share is
//! `N·wᵢ/W`; it gets `⌊share⌋` or `⌈share⌉` VIPs (balanced within one). Within those bounds
//! it keeps as many of the VIPs it holds as it can, so:
//! - when a node leaves, only its VIPs move;
//! - when a node joins, only as many VIPs move as balance needs, and they move to it.
//!
//! A VIP claimed by two nodes (after a split brain) counts as held by the lower node id.
//! Without preemption (`preempt = false`) nodes keep everything they hold, and only orphaned
//! VIPs are placed (on the nodes furthest below their share).
//!
//! Worked examples (equal weights, `v1 < v2 < …`, nodes numbered by id):
//! - 2 nodes, 2 VIPs, from nothing: node 1 {v1}, node 2 {v2}. Node 2 dies: node 1 {v1, v2}.
//!   Node 2 returns: v2 moves back (node 1 is above its share of 1).
//! - 2 nodes, 3 VIPs: shares 1.5: node 1 {v1, v2}, node 2 {v3}; the node with the lower
//!   id breaks the tie for the odd VIP.
//! - 3 nodes, 6 VIPs: node 1 {v1, v2}, node 2 {v3, v4}, node 3 {v5, v6}. Node 3 dies:
//!   shares 3, v5 goes to node 1 and v6 to node 2; nothing else moves. Node 2 dies too:
//!   node 1 holds all six. Both return: two each again, each returning node taking VIPs
//!   from node 1 only.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, BinaryHeap},
    net::IpAddr,
};

/// A member of the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    /// Node id.
    pub id: u32,
    /// Placement weight, at least 1 (0 is treated as 1).
    pub weight: u32,
}

/// One node's bounds and counts during placement.
#[derive(Clone, Copy, Debug)]
struct Slot {
    id: u32,
    /// N·w (the share scaled by W).
    scaled_share: u128,
    lo: usize,
    hi: usize,
    held: usize,
    /// How many VIPs it will hold.
    target: usize,
}

impl Slot {
    /// How far above its share it would be with `count` VIPs, scaled by W.
    fn excess(&self, count: usize, total_weight: u128) -> i128 {
        count as i128 * total_weight as i128 - self.scaled_share as i128
    }
}

/// Assigns every VIP of `pool` to one member; empty if there are no members.
///
/// `holders` says who holds each VIP now (entries for non-members are ignored).
pub fn place(
    pool: &[IpAddr],
    members: &[Member],
    holders: &BTreeMap<IpAddr, u32>,
    preempt: bool,
) -> BTreeMap<IpAddr, u32> {
    place_preferring(pool, members, holders, &BTreeMap::new(), preempt)
}

/// [`place`], with a preferred node for some VIPs: the counts are the same, but a member
/// that must give VIPs up gives up first those preferred by another member, and VIPs that
/// move go to their preferred member when it has room. So a VIP returns to its preferred
/// node whenever placement moves VIPs to that node anyway.
pub fn place_preferring(
    pool: &[IpAddr],
    members: &[Member],
    holders: &BTreeMap<IpAddr, u32>,
    preferred: &BTreeMap<IpAddr, u32>,
    preempt: bool,
) -> BTreeMap<IpAddr, u32> {
    let mut pool = pool.to_vec();
    pool.sort_unstable();
    pool.dedup();
    let mut members: Vec<Member> = members.to_vec();
    members.sort_unstable();
    members.dedup_by_key(|m| m.id);
    if members.is_empty() {
        return BTreeMap::new();
    }
    let n = pool.len() as u128;
    let total_weight: u128 = members.iter().map(|m| u128::from(m.weight.max(1))).sum();

    // What each member holds now, in pool order.
    let index: BTreeMap<u32, usize> = members.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
    let mut held: Vec<Vec<IpAddr>> = vec![Vec::new(); members.len()];
    for vip in &pool {
        if let Some(&i) = holders.get(vip).and_then(|id| index.get(id)) {
            held[i].push(*vip);
        }
    }
    let mut slots: Vec<Slot> = members
        .iter()
        .zip(&held)
        .map(|(m, h)| {
            let scaled_share = n * u128::from(m.weight.max(1));
            let lo = (scaled_share / total_weight) as usize;
            let hi = lo + usize::from(!scaled_share.is_multiple_of(total_weight));
            Slot {
                id: m.id,
                scaled_share,
                lo,
                hi,
                held: h.len(),
                target: 0,
            }
        })
        .collect();

    if preempt {
        balanced_targets(&mut slots, pool.len(), total_weight);
    } else {
        sticky_targets(&mut slots, pool.len(), total_weight);
    }

    // Each member keeps, up to its target, the VIPs it holds: first those it is preferred
    // for, then those nobody else prefers, then the rest, lowest address first. The others
    // are dealt in pool order: to their preferred member if it has room, else to the
    // members still below target, in member order.
    let prefers_other = |vip: &IpAddr, id: u32| match preferred.get(vip) {
        Some(&p) if p == id => 0,
        Some(p) if index.contains_key(p) => 2,
        _ => 1,
    };
    let mut out = BTreeMap::new();
    let mut room: Vec<usize> = Vec::with_capacity(slots.len());
    for (slot, h) in slots.iter().zip(&mut held) {
        h.sort_by_key(|vip| (prefers_other(vip, slot.id), *vip));
        for vip in h.iter().take(slot.target) {
            out.insert(*vip, slot.id);
        }
        room.push(slot.target - slot.held.min(slot.target));
    }
    let orphans: Vec<IpAddr> = pool
        .iter()
        .filter(|v| !out.contains_key(*v))
        .copied()
        .collect();
    let mut rest = Vec::new();
    for vip in orphans {
        match preferred.get(&vip).and_then(|p| index.get(p)) {
            Some(&i) if room[i] > 0 => {
                room[i] -= 1;
                out.insert(vip, slots[i].id);
            }
            _ => rest.push(vip),
        }
    }
    let mut receivers = slots
        .iter()
        .zip(&room)
        .flat_map(|(s, &r)| std::iter::repeat_n(s.id, r));
    for vip in rest {
        let id = receivers.next().expect("targets add up to the pool size");
        out.insert(vip, id);
    }
    out
}

/// [`place_preferring`] while members run different VIP lists (a rolling configuration
/// change): each VIP of `pool` is placed among the members that list it, the VIPs listed
/// by the same members placed together. `lists` holds the list of each member that runs
/// another list than `pool`; the others run `pool`. Every node, whichever list it runs,
/// so places a VIP it shares with others as they do; balance holds within each group.
/// With no other list among the members, this is [`place_preferring`] on `pool`.
pub fn place_by_lists(
    pool: &[IpAddr],
    members: &[Member],
    lists: &BTreeMap<u32, BTreeSet<IpAddr>>,
    holders: &BTreeMap<IpAddr, u32>,
    preferred: &BTreeMap<IpAddr, u32>,
    preempt: bool,
) -> BTreeMap<IpAddr, u32> {
    if !members.iter().any(|m| lists.contains_key(&m.id)) {
        return place_preferring(pool, members, holders, preferred, preempt);
    }
    let lists_it = |m: &Member, vip: &IpAddr| lists.get(&m.id).is_none_or(|l| l.contains(vip));
    let mut groups: BTreeMap<Vec<Member>, Vec<IpAddr>> = BTreeMap::new();
    for vip in pool {
        let listing: Vec<Member> = members
            .iter()
            .filter(|m| lists_it(m, vip))
            .copied()
            .collect();
        groups.entry(listing).or_default().push(*vip);
    }
    groups
        .iter()
        .flat_map(|(listing, vips)| place_preferring(vips, listing, holders, preferred, preempt))
        .collect()
}

/// Targets within [lo, hi] that sum to `n` and keep as many held VIPs as possible.
fn balanced_targets(slots: &mut [Slot], n: usize, total_weight: u128) {
    for s in slots.iter_mut() {
        s.target = s.held.clamp(s.lo, s.hi);
    }
    let mut sum: usize = slots.iter().map(|s| s.target).sum();
    // Too many: lower the members furthest above their share (those holding more than
    // their floor) until the total fits.
    while sum > n {
        let s = slots
            .iter_mut()
            .filter(|s| s.target > s.lo)
            .max_by_key(|s| (s.excess(s.target, total_weight), Reverse(s.id)))
            .expect("the floors sum to at most n");
        s.target -= 1;
        sum -= 1;
    }
    // Too few: raise the members furthest below their share, up to their ceiling.
    raise(slots, n - sum, total_weight, |s| s.target < s.hi);
}

/// Targets that never take a VIP away from its holder; orphans fill the emptiest members.
fn sticky_targets(slots: &mut [Slot], n: usize, total_weight: u128) {
    for s in slots.iter_mut() {
        s.target = s.held;
    }
    let sum: usize = slots.iter().map(|s| s.target).sum();
    raise(slots, n - sum, total_weight, |_| true);
}

/// Adds `count` to the targets, one at a time, to the eligible member furthest below its
/// share (lowest id on ties).
fn raise(slots: &mut [Slot], count: usize, total_weight: u128, eligible: impl Fn(&Slot) -> bool) {
    let mut heap: BinaryHeap<(Reverse<i128>, Reverse<u32>, usize)> = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| eligible(s))
        .map(|(i, s)| {
            (
                Reverse(s.excess(s.target + 1, total_weight)),
                Reverse(s.id),
                i,
            )
        })
        .collect();
    for _ in 0..count {
        let (_, _, i) = heap.pop().expect("the ceilings sum to at least n");
        slots[i].target += 1;
        if eligible(&slots[i]) {
            let s = &slots[i];
            heap.push((
                Reverse(s.excess(s.target + 1, total_weight)),
                Reverse(s.id),
                i,
            ));
        }
    }
}

/// Each member's count of VIPs in an assignment (members with none included).
pub fn counts(assignment: &BTreeMap<IpAddr, u32>, members: &[Member]) -> BTreeMap<u32, usize> {
    let mut c: BTreeMap<u32, usize> = members.iter().map(|m| (m.id, 0)).collect();
    for id in assignment.values() {
        *c.entry(*id).or_default() += 1;
    }
    c
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;

    fn pool(n: usize) -> Vec<IpAddr> {
        (0..n as u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0xC000_0200 + i)))
            .collect()
    }

    fn members(ids: &[u32]) -> Vec<Member> {
        ids.iter().map(|&id| Member { id, weight: 1 }).collect()
    }

    fn ids_of(a: &BTreeMap<IpAddr, u32>, id: u32) -> Vec<IpAddr> {
        a.iter()
            .filter(|(_, n)| **n == id)
            .map(|(v, _)| *v)
            .collect()
    }

    fn fresh(p: &[IpAddr], m: &[Member]) -> BTreeMap<IpAddr, u32> {
        place(p, m, &BTreeMap::new(), true)
    }

    /// Each node's own view of the assignment, as node `me` running `lists[me]` computes it.
    fn as_seen_by(
        me: u32,
        lists: &BTreeMap<u32, BTreeSet<IpAddr>>,
        m: &[Member],
        holders: &BTreeMap<IpAddr, u32>,
    ) -> BTreeMap<IpAddr, u32> {
        let own = &lists[&me];
        let others: BTreeMap<u32, BTreeSet<IpAddr>> = lists
            .iter()
            .filter(|(id, l)| **id != me && *l != own)
            .map(|(id, l)| (*id, l.clone()))
            .collect();
        let pool: Vec<IpAddr> = own.iter().copied().collect();
        place_by_lists(&pool, m, &others, holders, &BTreeMap::new(), true)
    }

    #[test]
    fn nodes_on_different_lists_place_the_vips_they_share_alike() {
        // A rolling change of 6 VIPs to 5 of them plus a seventh, node 1 first.
        let old: BTreeSet<IpAddr> = pool(6).into_iter().collect();
        let new: BTreeSet<IpAddr> = pool(7).into_iter().skip(1).collect();
        let m = members(&[1, 2, 3]);
        let start = fresh(&pool(6), &m);
        for rolled in 0..=3u32 {
            let lists: BTreeMap<u32, BTreeSet<IpAddr>> = (1..=3)
                .map(|id| {
                    (
                        id,
                        if id <= rolled {
                            new.clone()
                        } else {
                            old.clone()
                        },
                    )
                })
                .collect();
            let views: Vec<_> = (1..=3)
                .map(|me| as_seen_by(me, &lists, &m, &start))
                .collect();
            // Every VIP some node lists is placed on exactly one member that lists it, and
            // every node that lists it agrees on which.
            for vip in old.union(&new) {
                let mut owners = BTreeSet::new();
                for (me, view) in (1..=3).zip(&views) {
                    if let Some(owner) = view.get(vip) {
                        assert!(
                            lists[owner].contains(vip),
                            "{vip} on {owner}, which lacks it"
                        );
                        owners.insert(*owner);
                    } else {
                        assert!(!lists[&me].contains(vip));
                    }
                }
                let listed = lists.values().any(|l| l.contains(vip));
                assert_eq!(
                    owners.len(),
                    usize::from(listed),
                    "{vip} after {rolled} rolled: {views:?}"
                );
            }
            // What did not change hands stays put: the VIPs both lists share keep their
            // holders.
            for vip in old.intersection(&new) {
                assert_eq!(views[0].get(vip), start.get(vip), "{vip} moved");
            }
        }
    }

    #[test]
    fn with_one_list_placement_is_unchanged() {
        let p = pool(7);
        let m = members(&[1, 2, 3]);
        let same: BTreeMap<u32, BTreeSet<IpAddr>> = BTreeMap::new();
        assert_eq!(
            place_by_lists(&p, &m, &same, &BTreeMap::new(), &BTreeMap::new(), true),
            fresh(&p, &m)
        );
    }

    /// Every member within one VIP of its weighted share.
    fn assert_balanced(a: &BTreeMap<IpAddr, u32>, m: &[Member], n: usize) {
        let w: u128 = m.iter().map(|m| u128::from(m.weight.max(1))).sum();
        for (id, count) in counts(a, m) {
            let weight = u128::from(m.iter().find(|x| x.id == id).unwrap().weight.max(1));
            let scaled = n as u128 * weight;
            let (lo, hi) = (scaled / w, scaled.div_ceil(w));
            assert!(
                (lo..=hi).contains(&(count as u128)),
                "node {id} holds {count}, share {}/{w}",
                scaled
            );
        }
    }

    #[test]
    fn worked_examples() {
        let p = pool(2);
        let a = fresh(&p, &members(&[1, 2]));
        assert_eq!((ids_of(&a, 1), ids_of(&a, 2)), (vec![p[0]], vec![p[1]]));
        let alone = place(&p, &members(&[1]), &a, true);
        assert_eq!(ids_of(&alone, 1), p);
        let back = place(&p, &members(&[1, 2]), &alone, true);
        assert_eq!(back, a);

        let p = pool(3);
        let a = fresh(&p, &members(&[1, 2]));
        assert_eq!(
            (ids_of(&a, 1), ids_of(&a, 2)),
            (vec![p[0], p[1]], vec![p[2]])
        );

        let p = pool(6);
        let three = fresh(&p, &members(&[1, 2, 3]));
        assert_eq!(ids_of(&three, 3), vec![p[4], p[5]]);
        let two = place(&p, &members(&[1, 2]), &three, true);
        assert_eq!(ids_of(&two, 1), vec![p[0], p[1], p[4]]);
        assert_eq!(ids_of(&two, 2), vec![p[2], p[3], p[5]]);
        let one = place(&p, &members(&[1]), &two, true);
        assert_eq!(ids_of(&one, 1), p);
        let again = place(&p, &members(&[1, 2, 3]), &one, true);
        assert_eq!(
            counts(&again, &members(&[1, 2, 3]))
                .values()
                .collect::<Vec<_>>(),
            [&2, &2, &2]
        );
    }

    #[test]
    fn double_claims_go_to_the_lower_id() {
        let p = pool(2);
        // After a split brain, both claim everything; node 1 counts as the holder.
        let holders: BTreeMap<IpAddr, u32> = p.iter().map(|v| (*v, 1)).collect();
        let a = place(&p, &members(&[1, 2]), &holders, true);
        assert_eq!(a[&p[0]], 1);
        assert_eq!(a[&p[1]], 2);
    }

    #[test]
    fn no_preempt_keeps_what_is_held() {
        let p = pool(4);
        let alone = fresh(&p, &members(&[1]));
        let a = place(&p, &members(&[1, 2]), &alone, false);
        assert_eq!(a, alone, "the joiner gets nothing while the holder lives");
        let gone = place(&p, &members(&[2, 3]), &a, false);
        assert_eq!(
            counts(&gone, &members(&[2, 3]))
                .values()
                .collect::<Vec<_>>(),
            [&2, &2]
        );
    }

    #[test]
    fn preferred_nodes_get_their_vips_when_balance_allows() {
        let p = pool(4);
        let m = members(&[1, 2]);
        // v0 and v1 prefer node 2, v3 prefers node 1.
        let pref = BTreeMap::from([(p[0], 2), (p[1], 2), (p[3], 1)]);
        let a = place_preferring(&p, &m, &BTreeMap::new(), &pref, true);
        assert_eq!((a[&p[0]], a[&p[1]], a[&p[3]]), (2, 2, 1));
        assert_eq!(counts(&a, &m).values().collect::<Vec<_>>(), [&2, &2]);
        // Node 2 leaves and returns: its preferred VIPs come back to it.
        let alone = place_preferring(&p, &members(&[1]), &a, &pref, true);
        let back = place_preferring(&p, &m, &alone, &pref, true);
        assert_eq!(back, a);
        // A preference for a node that is not a member changes nothing.
        let ghost = BTreeMap::from([(p[0], 9)]);
        assert_eq!(
            place_preferring(&p, &m, &BTreeMap::new(), &ghost, true),
            fresh(&p, &m)
        );
    }

    #[test]
    fn weights_are_respected() {
        let p = pool(10);
        let m = [
            Member { id: 1, weight: 3 },
            Member { id: 2, weight: 1 },
            Member { id: 3, weight: 1 },
        ];
        let a = fresh(&p, &m);
        assert_eq!(counts(&a, &m)[&1], 6);
        assert_balanced(&a, &m, 10);
    }

    fn view() -> impl Strategy<Value = (Vec<Member>, usize)> {
        (
            proptest::collection::btree_map(1u32..10_000, 1u32..8, 1..=64),
            0usize..=10_000,
        )
            .prop_map(|(m, n)| {
                (
                    m.into_iter()
                        .map(|(id, weight)| Member { id, weight })
                        .collect(),
                    n,
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn deterministic_and_order_independent((m, n) in view(), seed in any::<u64>()) {
            let p = pool(n);
            let a = fresh(&p, &m);
            let mut shuffled_m = m.clone();
            let mut shuffled_p = p.clone();
            // A cheap deterministic shuffle.
            let k = (seed as usize) % shuffled_m.len().max(1);
            shuffled_m.rotate_left(k);
            shuffled_m.reverse();
            shuffled_p.reverse();
            prop_assert_eq!(&a, &fresh(&shuffled_p, &shuffled_m));
            prop_assert_eq!(a.len(), n);
            assert_balanced(&a, &m, n);
        }

        #[test]
        fn a_leave_moves_only_the_leavers_vips((m, n) in view(), pick in any::<usize>()) {
            prop_assume!(m.len() >= 2);
            let p = pool(n);
            let before = fresh(&p, &m);
            let gone = m[pick % m.len()].id;
            let rest: Vec<Member> = m.iter().copied().filter(|x| x.id != gone).collect();
            let after = place(&p, &rest, &before, true);
            assert_balanced(&after, &rest, n);
            for (vip, owner) in &before {
                if *owner != gone {
                    prop_assert_eq!(after[vip], *owner, "{} moved off a survivor", vip);
                }
            }
        }

        #[test]
        fn a_join_moves_the_minimum_to_the_joiner((m, n) in view(), pick in any::<usize>()) {
            prop_assume!(m.len() >= 2);
            let p = pool(n);
            let joiner = m[pick % m.len()];
            let old: Vec<Member> = m.iter().copied().filter(|x| x.id != joiner.id).collect();
            let before = fresh(&p, &old);
            let after = place(&p, &m, &before, true);
            assert_balanced(&after, &m, n);
            let moved: Vec<&IpAddr> = before.keys().filter(|v| before[*v] != after[*v]).collect();
            for v in &moved {
                prop_assert_eq!(after[*v], joiner.id, "{} moved between old members", v);
            }
            // The joiner gets its floor, or more only where old members were forced down.
            let w: u128 = m.iter().map(|x| u128::from(x.weight)).sum();
            let floor = (n as u128 * u128::from(joiner.weight) / w) as usize;
            let forced: usize = old.iter().map(|x| {
                let hi = (n as u128 * u128::from(x.weight)).div_ceil(w) as usize;
                ids_of(&before, x.id).len().saturating_sub(hi)
            }).sum();
            prop_assert_eq!(moved.len(), floor.max(forced));
        }

        #[test]
        fn preferences_keep_the_leave_guarantee((m, n) in view(), pick in any::<usize>(), seed in any::<u32>()) {
            prop_assume!(m.len() >= 2);
            let p = pool(n);
            // Every third VIP prefers some member.
            let pref: BTreeMap<IpAddr, u32> = p.iter().enumerate().filter(|(i, _)| i % 3 == 0)
                .map(|(i, v)| (*v, m[(i + seed as usize) % m.len()].id)).collect();
            let before = place_preferring(&p, &m, &BTreeMap::new(), &pref, true);
            assert_balanced(&before, &m, n);
            let gone = m[pick % m.len()].id;
            let rest: Vec<Member> = m.iter().copied().filter(|x| x.id != gone).collect();
            let after = place_preferring(&p, &rest, &before, &pref, true);
            assert_balanced(&after, &rest, n);
            for (vip, owner) in &before {
                if *owner != gone {
                    prop_assert_eq!(after[vip], *owner);
                }
            }
        }

        #[test]
        fn placing_again_changes_nothing((m, n) in view()) {
            let p = pool(n);
            let a = fresh(&p, &m);
            prop_assert_eq!(&place(&p, &m, &a, true), &a);
            prop_assert_eq!(&place(&p, &m, &a, false), &a);
        }
    }
}
