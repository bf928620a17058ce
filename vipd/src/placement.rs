//! Which node holds which VIP, computed from the membership view alone.
//!
//! The rule (a later placement will add weights and minimal movement): sort the VIPs by
//! address and the live node ids numerically; VIP number `i` goes to node number
//! `i mod n`. Every node that has the same view computes the same assignment, so no
//! coordination round is needed before a takeover.

use std::{collections::BTreeMap, net::IpAddr};

/// Assigns every VIP to one node of `view`; empty if the view is empty.
pub fn assign(vips: &[IpAddr], view: &[u32]) -> BTreeMap<IpAddr, u32> {
    let mut nodes = view.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    let mut vips = vips.to_vec();
    vips.sort_unstable();
    vips.dedup();
    if nodes.is_empty() {
        return BTreeMap::new();
    }
    vips.into_iter()
        .enumerate()
        .map(|(i, vip)| (vip, nodes[i % nodes.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn two_nodes_two_vips_one_each() {
        let vips = [ip("192.0.2.202"), ip("192.0.2.201")];
        let a = assign(&vips, &[2, 1]);
        assert_eq!(a[&ip("192.0.2.201")], 1);
        assert_eq!(a[&ip("192.0.2.202")], 2);
    }

    #[test]
    fn survivor_takes_everything() {
        let vips = [ip("192.0.2.201"), ip("192.0.2.202"), ip("2001:db8::201")];
        let a = assign(&vips, &[2]);
        assert!(a.values().all(|&n| n == 2));
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn independent_of_input_order() {
        let v1 = [ip("192.0.2.1"), ip("192.0.2.3"), ip("192.0.2.2")];
        let v2 = [ip("192.0.2.3"), ip("192.0.2.2"), ip("192.0.2.1")];
        assert_eq!(assign(&v1, &[3, 1, 2]), assign(&v2, &[2, 3, 1]));
    }

    #[test]
    fn empty_view_assigns_nothing() {
        assert!(assign(&[ip("192.0.2.1")], &[]).is_empty());
    }

    #[test]
    fn balanced_within_one() {
        let vips: Vec<IpAddr> = (1..=7).map(|i| ip(&format!("192.0.2.{i}"))).collect();
        let a = assign(&vips, &[1, 2, 3]);
        let mut counts = BTreeMap::new();
        for n in a.values() {
            *counts.entry(*n).or_insert(0) += 1;
        }
        let (min, max) = (
            counts.values().min().unwrap(),
            counts.values().max().unwrap(),
        );
        assert!(max - min <= 1, "{counts:?}");
    }
}
