//! What a SIGHUP reload does to the running VRRP groups, as pure logic: each group of the
//! new configuration is matched to the running one of the same family and VRID, and the
//! least disruptive change that reaches the new settings is chosen.
//!
//! - Unchanged groups are not touched (no advert, no address change).
//! - Priority, preempt, advert interval, accept mode and the VIP list change in place: a
//!   Master keeps its state, adds the new VIPs, removes the dropped ones and advertises the
//!   new values at once, so a Backup that now outranks it preempts as RFC 5798 says.
//! - The unicast peers and `unicast_min_ttl` change in place too (adverts go to the new
//!   peers from the next one on).
//! - A new interface, virtual MAC, VRRP version, advert source (`unicast_src`), a switch
//!   between multicast and unicast, or becoming or ceasing to be the address owner
//!   (priority 255, which starts as Master), restarts the group: it stops (priority 0 if it
//!   was Master) and starts again.
//! - Groups no longer configured stop; new ones start.

use crate::{config::Vrrp, vip::Vip};

/// What happens to one group.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The running group `old` stays as it is.
    Keep { old: usize },
    /// The running group `old` takes the new settings in place.
    Update { old: usize, new: Vrrp },
    /// The running group `old` stops and starts again with the new settings.
    Restart { old: usize, new: Vrrp },
    /// A new group starts.
    Add { new: Vrrp },
    /// The running group `old` stops for good.
    Remove { old: usize },
}

/// The changes from the running groups `old` to `new`: first the removals, then one entry
/// per new group in the new configuration's order.
pub fn plan(old: &[Vrrp], new: &[Vrrp]) -> Vec<Change> {
    let key = |g: &Vrrp| (g.ipv6(), g.vrid);
    let mut changes: Vec<Change> = old
        .iter()
        .enumerate()
        .filter(|(_, o)| !new.iter().any(|n| key(n) == key(o)))
        .map(|(i, _)| Change::Remove { old: i })
        .collect();
    for n in new {
        let change = match old.iter().position(|o| key(o) == key(n)) {
            None => Change::Add { new: n.clone() },
            Some(i) if old[i] == *n => Change::Keep { old: i },
            Some(i) if needs_restart(&old[i], n) => Change::Restart {
                old: i,
                new: n.clone(),
            },
            Some(i) => Change::Update {
                old: i,
                new: n.clone(),
            },
        };
        changes.push(change);
    }
    changes
}

/// Whether going from `old` to `new` (same family and VRID) needs a restart of the group.
fn needs_restart(old: &Vrrp, new: &Vrrp) -> bool {
    let owner = |g: &Vrrp| g.priority == vipd_common::vrrp::PRIORITY_OWNER;
    old.interface() != new.interface()
        || old.vmac != new.vmac
        || owner(old) != owner(new)
        || old.version != new.version
        || old.unicast() != new.unicast()
        || old.unicast_src != new.unicast_src
}

/// A Master's address changes for an in-place update: (to remove, to add). A VIP whose
/// prefix changes is removed and added again; the others are not touched.
pub fn vip_changes(old: &[Vip], new: &[Vip]) -> (Vec<Vip>, Vec<Vip>) {
    let remove = old.iter().filter(|v| !new.contains(v)).copied().collect();
    let add = new.iter().filter(|v| !old.contains(v)).copied().collect();
    (remove, add)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(spec: &str) -> Vrrp {
        let mut g = Vrrp::parse_spec(spec).unwrap();
        g.interface.get_or_insert_with(|| "eth0".into());
        g
    }

    #[test]
    fn unchanged_groups_are_kept_and_others_added_or_removed() {
        let a = group("51,vip=192.0.2.200/24");
        let b = group("52,vip=192.0.2.201/24");
        let b6 = group("52,vip=2001:db8::200/64");
        let c = group("53,vip=192.0.2.202/24");
        let changes = plan(&[a.clone(), b.clone()], &[c.clone(), a, b6.clone()]);
        assert_eq!(
            changes,
            [
                Change::Remove { old: 1 },
                Change::Add { new: c },
                Change::Keep { old: 0 },
                // The same VRID in the other family is another group.
                Change::Add { new: b6 },
            ]
        );
    }

    #[test]
    fn settings_change_in_place() {
        let old = group("51,priority=100,vip=192.0.2.200/24,interval=1s");
        for spec in [
            "51,priority=200,vip=192.0.2.200/24,interval=1s",
            "51,priority=100,vip=192.0.2.200/24,interval=100ms",
            "51,priority=100,vip=192.0.2.200/24,interval=1s,preempt=no",
            "51,priority=100,vip=192.0.2.200/24,interval=1s,accept=no",
            "51,priority=100,vip=192.0.2.200/24,vip=192.0.2.201,interval=1s",
        ] {
            let new = group(spec);
            assert_eq!(
                plan(std::slice::from_ref(&old), std::slice::from_ref(&new)),
                [Change::Update { old: 0, new }],
                "{spec}"
            );
        }
    }

    #[test]
    fn interface_vmac_version_and_ownership_changes_restart() {
        let old = group("51,priority=100,vip=192.0.2.200/24");
        for spec in [
            "51,priority=100,vip=192.0.2.200/24,interface=eth1",
            "51,priority=100,vip=192.0.2.200/24,version=2",
            "51,priority=100,vip=192.0.2.200/24,vmac=yes",
            "51,priority=255,vip=192.0.2.200/24",
            // Multicast to unicast, and (below) another unicast source.
            "51,priority=100,vip=192.0.2.200/24,unicast_peer=192.0.2.12",
        ] {
            let new = group(spec);
            assert_eq!(
                plan(std::slice::from_ref(&old), std::slice::from_ref(&new)),
                [Change::Restart { old: 0, new }],
                "{spec}"
            );
        }
    }

    #[test]
    fn only_changed_vips_are_touched() {
        let old = group("51,vip=192.0.2.200/24,vip=192.0.2.201/24,vip=192.0.2.202/24").vips;
        let new = group("51,vip=192.0.2.200/24,vip=192.0.2.201/25,vip=192.0.2.203/24").vips;
        let (remove, add) = vip_changes(&old, &new);
        let text = |v: &[Vip]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(text(&remove), ["192.0.2.201/24", "192.0.2.202/24"]);
        assert_eq!(text(&add), ["192.0.2.201/25", "192.0.2.203/24"]);
    }

    #[test]
    fn unicast_peers_change_in_place_and_a_new_source_restarts() {
        let old = group("51,vip=192.0.2.200/24,unicast_peer=192.0.2.12,unicast_src=192.0.2.11");
        for spec in [
            "51,vip=192.0.2.200/24,unicast_peer=192.0.2.12,unicast_peer=192.0.2.13,\
             unicast_src=192.0.2.11",
            "51,vip=192.0.2.200/24,unicast_peer=192.0.2.13,unicast_src=192.0.2.11",
            "51,vip=192.0.2.200/24,unicast_peer=192.0.2.12,unicast_src=192.0.2.11,\
             unicast_min_ttl=255",
        ] {
            let new = group(spec);
            let changes = plan(std::slice::from_ref(&old), std::slice::from_ref(&new));
            assert_eq!(changes, [Change::Update { old: 0, new }], "{spec}");
        }
        for spec in [
            "51,vip=192.0.2.200/24,unicast_peer=192.0.2.12,unicast_src=192.0.2.10",
            "51,vip=192.0.2.200/24,unicast_peer=192.0.2.12",
            "51,vip=192.0.2.200/24",
        ] {
            let new = group(spec);
            let changes = plan(std::slice::from_ref(&old), std::slice::from_ref(&new));
            assert_eq!(changes, [Change::Restart { old: 0, new }], "{spec}");
        }
    }
}
