//! The ARP/NDP watch's daemon side: what to do when the XDP program sees another MAC claim
//! a VIP this node holds.
//!
//! A claimer is judged by the cluster's word, not by its MAC alone (a MAC is easy to
//! forge). A live peer whose own authenticated state says it holds the VIP (a split brain
//! between vipd nodes; VRRP routers both Master for a moment) is left to the cluster's own
//! rule — the pool's holdings (lower id keeps, the keeper announces again when the other
//! lets go) or VRRP's adverts; the pool sends its holdings at once so that rule runs now.
//! A live peer's MAC whose state does not say so is given [`GRACE_NS`] (a hand-over's
//! state section may be on its way) and judged again. Anyone else — a host configured with
//! the address, a peer that is not live, a forged peer MAC — is a *conflict* of the VIP
//! (one per VIP, whoever claims, so claims from ever new MACs cost no more than one
//! claimer's): said once (log with the MAC,
//! `vip_conflict` hook, metric, `vipd status`) and the VIP is defended by announcing it
//! again, at once and then with a back-off (RFC 5227 2.4 (c): at most one defence per
//! [`DEFEND_INTERVAL_NS`], the gap doubling while the conflict lasts), so two hosts never
//! fight a GARP war. The VIP is never given up: a lost VIP is worse than a contested one,
//! and an operator must remove the other host's address.
//!
//! [`Conflicts`] is pure (the time is passed in); [`ClaimRing`] reads the XDP program's
//! claim notices; [`Watch`] is what both modes' slow paths run on them.

use std::{collections::BTreeMap, net::IpAddr};

use aya::maps::{MapData, RingBuf};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};
use vipd_common::{maps::ClaimNotice, neighbor::ClaimKind};

use crate::{
    holder::Announcements, hooks::Hooks, metrics::Metrics, netlink::mac_text, ratelimit::LogLimit,
};

/// Defences of one conflict are at least this far apart at first (RFC 5227's
/// DEFEND_INTERVAL, 10 s).
pub const DEFEND_INTERVAL_NS: u64 = 10_000_000_000;
/// The gap between defences stops doubling here.
pub const MAX_DEFEND_INTERVAL_NS: u64 = 320_000_000_000;
/// A conflict with no claim for this long is over.
pub const QUIET_NS: u64 = 60_000_000_000;
/// Conflicts tracked at most (the oldest quiet one is forgotten first).
pub const MAX_CONFLICTS: usize = 256;
/// Notices read per wake-up.
const NOTICES_PER_WAKE: usize = 256;
/// A live peer's MAC claiming a VIP its state does not hold is judged again this long
/// after the first claim (its state section may be on its way).
pub const GRACE_NS: u64 = 250_000_000;

/// Who claims the VIP, as the mode can tell from the MAC and the cluster's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claimer {
    /// A live peer that holds the VIP by its own word: the pool node whose authenticated
    /// state (this incarnation, verified) lists it, or a live VRRP router of the group.
    Peer(u32),
    /// A live pool peer's MAC, but the peer's state does not list the VIP (a forged MAC,
    /// or a hand-over whose state section is on its way): judged again after [`GRACE_NS`].
    Unproven(u32),
    /// A peer heard before but not live now (pool: its node id).
    SilentPeer(u32),
    /// No peer has this MAC.
    Unknown,
}

/// What to do about one claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing (not held any more, or a defence is not due yet).
    Nothing,
    /// A live peer claims it: let the cluster's rule settle it now.
    PeerClaim,
    /// Announce the VIP again now.
    Defend,
    /// A live peer that claimed the VIP too let go (the cluster's rule settled it for this
    /// node): announce it again, clients may still hold the peer's MAC.
    Reannounce,
}

/// One VIP another host claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The claimer's MAC.
    pub mac: [u8; 6],
    /// Who that is.
    pub claimer: Claimer,
    /// How it claimed last.
    pub kind: Option<ClaimKind>,
    /// When it was first and last told.
    pub first_ns: u64,
    /// Last claim told.
    pub last_ns: u64,
    /// Notices received (the XDP program tells at most one a second per VIP; its `CLAIMS`
    /// map counts every packet).
    pub notices: u64,
    /// Defences sent.
    pub defences: u32,
    /// The next defence is allowed from here.
    pub next_defence_ns: u64,
    /// Times the claimer's MAC changed (one conflict per VIP, whoever claims).
    pub claimers: u32,
}

/// The conflicts of the VIPs this node holds.
#[derive(Debug, Default)]
pub struct Conflicts {
    table: BTreeMap<IpAddr, Conflict>,
    /// Claims judged again once their grace ended: the claim, when it was first seen, and
    /// whether a live peer holding the VIP made it (a split brain the cluster's rule
    /// settles: once that peer lets go, its announcements may still sit in clients'
    /// caches, so this node announces the VIP again) or an [`Claimer::Unproven`] one.
    pending: BTreeMap<IpAddr, (Claim, u64, bool)>,
}

/// One claim, as the XDP program told it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The claimed VIP.
    pub vip: IpAddr,
    /// The claimer's MAC.
    pub mac: [u8; 6],
    /// How it claimed.
    pub kind: Option<ClaimKind>,
}

impl Conflicts {
    /// A claim at `now`; `held`: this node holds the VIP. Returns what to do, and whether
    /// a new conflict began (to report once).
    pub fn on_claim(
        &mut self,
        now: u64,
        claim: Claim,
        claimer: Claimer,
        held: bool,
    ) -> (Action, bool) {
        let Claim { vip, mac, kind } = claim;
        if !held {
            self.table.remove(&vip);
            self.pending.remove(&vip);
            return (Action::Nothing, false);
        }
        let room = self.pending.len() < MAX_CONFLICTS || self.pending.contains_key(&vip);
        match claimer {
            Claimer::Peer(_) => {
                // Bounded: without room, the claim is told again within a second.
                if !room {
                    return (Action::PeerClaim, false);
                }
                let known = self.pending.get(&vip).is_some_and(|p| p.2);
                let entry = self.pending.entry(vip).or_insert((claim, now, true));
                entry.2 = true;
                // Asked once: the cluster's rule runs on the holdings sent then.
                let action = if known {
                    Action::Nothing
                } else {
                    Action::PeerClaim
                };
                return (action, false);
            }
            Claimer::Unproven(_) if self.pending.get(&vip).is_some_and(|p| p.2) => {
                // The peer that held it let go while this node kept it.
                self.pending.remove(&vip);
                return (Action::Reannounce, false);
            }
            Claimer::Unproven(_) if !self.table.contains_key(&vip) => {
                if !room {
                    return (Action::PeerClaim, false);
                }
                let since = self.pending.entry(vip).or_insert((claim, now, false)).1;
                if now.saturating_sub(since) < GRACE_NS {
                    return (Action::PeerClaim, false);
                }
                self.pending.remove(&vip);
            }
            _ => {}
        }
        // One conflict per VIP: another claimer's MAC is recorded, the back-off goes on.
        let new = !self.table.contains_key(&vip);
        if new {
            self.make_room(now);
            self.table.insert(
                vip,
                Conflict {
                    mac,
                    claimer,
                    kind,
                    first_ns: now,
                    last_ns: now,
                    notices: 0,
                    defences: 0,
                    next_defence_ns: now,
                    claimers: 1,
                },
            );
        }
        let Some(c) = self.table.get_mut(&vip) else {
            return (Action::Nothing, new);
        };
        c.last_ns = now;
        c.notices += 1;
        c.kind = kind;
        c.claimer = claimer;
        if c.mac != mac {
            c.mac = mac;
            c.claimers = c.claimers.saturating_add(1);
        }
        if now < c.next_defence_ns {
            return (Action::Nothing, new);
        }
        let gap = DEFEND_INTERVAL_NS
            .saturating_mul(1 << c.defences.min(16))
            .min(MAX_DEFEND_INTERVAL_NS);
        c.defences += 1;
        c.next_defence_ns = now + gap;
        (Action::Defend, new)
    }

    /// Ends the conflicts with no claim for [`QUIET_NS`]; returns their VIPs.
    pub fn expire(&mut self, now: u64) -> Vec<IpAddr> {
        let over: Vec<IpAddr> = self
            .table
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.last_ns) >= QUIET_NS)
            .map(|(v, _)| *v)
            .collect();
        for v in &over {
            self.table.remove(v);
        }
        over
    }

    /// Forgets `vip`'s conflict (released: no longer this node's to defend).
    pub fn forget(&mut self, vip: &IpAddr) {
        self.table.remove(vip);
        self.pending.remove(vip);
    }

    /// The unproven claims whose grace has ended at `now`, to judge again.
    pub fn due(&self, now: u64) -> Vec<Claim> {
        self.pending
            .values()
            .filter(|(_, since, _)| now.saturating_sub(*since) >= GRACE_NS)
            .map(|(claim, _, _)| *claim)
            .collect()
    }

    /// The conflicts, by VIP.
    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &Conflict)> {
        self.table.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The conflicts for `vipd status` at `now`.
    pub fn status(&self, now: u64) -> Vec<ConflictStatus> {
        let secs = |ns: u64| (ns as f64 / 1e9 * 10.0).round() / 10.0;
        self.table
            .iter()
            .map(|(vip, c)| ConflictStatus {
                vip: vip.to_string(),
                mac: mac_text(c.mac),
                claimer: claimer_text(c.claimer),
                kind: c.kind.map_or("unknown", ClaimKind::name).into(),
                since_s: secs(now.saturating_sub(c.first_ns)),
                last_s_ago: secs(now.saturating_sub(c.last_ns)),
                notices: c.notices,
                defences: c.defences,
                next_defence_in_s: secs(c.next_defence_ns.saturating_sub(now)),
                claimers: c.claimers,
            })
            .collect()
    }

    /// Past [`MAX_CONFLICTS`], forgets the one claimed least recently.
    fn make_room(&mut self, _now: u64) {
        while self.table.len() >= MAX_CONFLICTS {
            let Some(oldest) = self
                .table
                .iter()
                .min_by_key(|(_, c)| c.last_ns)
                .map(|(v, _)| *v)
            else {
                return;
            };
            self.table.remove(&oldest);
        }
    }
}

/// One conflict in `vipd status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConflictStatus {
    /// The VIP.
    pub vip: String,
    /// The claimer's MAC.
    pub mac: String,
    /// "unknown host", or the silent peer's id.
    pub claimer: String,
    /// How it claimed last (gratuitous-arp, arp-reply, neighbor-advert, dad-solicit, …).
    pub kind: String,
    /// Seconds since the conflict began.
    pub since_s: f64,
    /// Seconds since the last claim was told.
    pub last_s_ago: f64,
    /// Claim notices (at most one a second).
    pub notices: u64,
    /// Defences sent (the VIP announced again).
    pub defences: u32,
    /// Seconds until another defence is allowed.
    pub next_defence_in_s: f64,
    /// Times the claimer's MAC changed.
    #[serde(default)]
    pub claimers: u32,
}

fn claimer_text(c: Claimer) -> String {
    match c {
        Claimer::Peer(id) => format!("peer {id}"),
        Claimer::Unproven(id) => format!("node {id}'s MAC (its state does not hold it)"),
        Claimer::SilentPeer(id) => format!("node {id} (not live here)"),
        Claimer::Unknown => "unknown host".into(),
    }
}

impl From<&ClaimNotice> for Claim {
    fn from(n: &ClaimNotice) -> Self {
        Claim {
            vip: notice_vip(n),
            mac: n.mac,
            kind: ClaimKind::from_u8(n.kind),
        }
    }
}

/// The VIP of a claim notice (IPv4-mapped keys are IPv4).
pub fn notice_vip(n: &ClaimNotice) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(n.vip);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The XDP program's claim notices, read from the slow path.
pub struct ClaimRing(AsyncFd<RingBuf<MapData>>);

impl ClaimRing {
    /// Watches `ring` (the program's `CLAIM_EVENTS`).
    pub fn new(ring: RingBuf<MapData>) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        // SAFETY: the ring owns its descriptor and moves into the AsyncFd, which keeps it
        // open as long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .context("polling the XDP claim ring")?;
        Ok(Self(fd))
    }

    /// Waits for notices; returns the next ones (at most a bounded batch: the rest wait
    /// for the next call).
    pub async fn next(&mut self) -> std::io::Result<Vec<ClaimNotice>> {
        loop {
            let mut guard = self.0.readable_mut().await?;
            let ring = guard.get_inner_mut();
            let mut out = Vec::new();
            while out.len() < NOTICES_PER_WAKE {
                let Some(item) = ring.next() else { break };
                if item.len() >= size_of::<ClaimNotice>() {
                    // SAFETY: ClaimNotice is plain old data and the item holds at least
                    // that many bytes.
                    out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
                }
            }
            if out.len() < NOTICES_PER_WAKE {
                guard.clear_ready();
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
}

/// The slow path's ARP/NDP watch: the claim ring, the conflicts, rate-limited logs.
pub struct Watch {
    /// The XDP program's claim notices.
    pub ring: ClaimRing,
    conflicts: Conflicts,
    logs: LogLimit<IpAddr>,
}

impl Watch {
    /// Watches `ring`.
    pub fn new(ring: RingBuf<MapData>) -> anyhow::Result<Self> {
        Ok(Self {
            ring: ClaimRing::new(ring)?,
            conflicts: Conflicts::default(),
            logs: LogLimit::new(10_000_000_000, 2, 256),
        })
    }

    /// One claim, `claimer` as the mode judges it: a new conflict is logged with the MAC,
    /// counted and hooked (`vip_conflict`); a due defence announces the VIP again (from
    /// `held`, which says whether this node holds it). Returns whether a live peer's MAC
    /// claims a held VIP (the mode sends its holdings, so the cluster's rule runs now).
    pub fn on_claim(
        &mut self,
        now: u64,
        claim: Claim,
        claimer: Claimer,
        held: &mut Announcements,
        metrics: &Metrics,
        hooks: &Hooks,
    ) -> bool {
        let vip = claim.vip;
        let is_held = held.holds(&vip);
        let (action, new) = self.conflicts.on_claim(now, claim, claimer, is_held);
        let mac = mac_text(claim.mac);
        let how = claim.kind.map_or("unknown", ClaimKind::name);
        if new {
            metrics.vip_conflicts.inc();
            hooks.vip_conflict(vip, &mac);
        }
        if (new || action == Action::PeerClaim)
            && let Some(suppressed) = self.logs.allow(vip, now)
        {
            match claimer {
                Claimer::Peer(id) => info!(%vip, mac, how, peer = id, suppressed,
                    "a live peer claims a VIP held here too (split brain): its rule settles it"),
                Claimer::Unproven(id) if !new => info!(%vip, mac, how, peer = id, suppressed,
                    "a live peer's MAC claims a VIP held here that its state does not hold: \
                     defended unless its state says so within 250 ms"),
                _ => warn!(%vip, mac, how, claimer = claimer_text(claimer), suppressed,
                    "another host claims a VIP held here: announcing it again (at most once \
                     every 10 s, backing off); remove the address from that host"),
            }
        }
        if action == Action::Defend {
            metrics.vip_defences.inc();
            held.defend(vip);
        }
        if action == Action::Reannounce {
            info!(%vip, "a peer that claimed a VIP held here let go: announcing it again");
            held.defend(vip);
        }
        metrics.vip_conflicts_now.set(self.conflicts.len() as i64);
        action == Action::PeerClaim
    }

    /// The claims by a live peer's MAC whose grace ended at `now`: the mode judges them
    /// again and hands them back to [`on_claim`](Self::on_claim).
    pub fn due(&self, now: u64) -> Vec<Claim> {
        self.conflicts.due(now)
    }

    /// Ends quiet conflicts (call now and then).
    pub fn expire(&mut self, now: u64, metrics: &Metrics) {
        for vip in self.conflicts.expire(now) {
            info!(%vip, "VIP conflict over: no claim for a minute");
        }
        metrics.vip_conflicts_now.set(self.conflicts.len() as i64);
    }

    /// Forgets the conflicts of `vip` (released).
    pub fn forget(&mut self, vip: &IpAddr) {
        self.conflicts.forget(vip);
    }

    /// The conflicts for `vipd status`.
    pub fn status(&self, now: u64) -> Vec<ConflictStatus> {
        self.conflicts.status(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const VIP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));
    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

    fn by(mac: [u8; 6]) -> Claim {
        Claim {
            vip: VIP,
            mac,
            kind: Some(ClaimKind::Gratuitous),
        }
    }

    fn claim(c: &mut Conflicts, at: u64) -> (Action, bool) {
        c.on_claim(at, by(MAC), Claimer::Unknown, true)
    }

    #[test]
    fn an_unknown_claimer_is_defended_at_once_then_with_a_doubling_gap() {
        let mut c = Conflicts::default();
        assert_eq!(claim(&mut c, 0), (Action::Defend, true));
        let mut defended = vec![0];
        // A claim every second for an hour.
        for t in 1..3600 {
            match claim(&mut c, t * S) {
                (Action::Defend, false) => defended.push(t),
                (Action::Nothing, false) => {}
                other => panic!("at {t} s: {other:?}"),
            }
        }
        assert_eq!(
            defended,
            [
                0, 10, 30, 70, 150, 310, 630, 950, 1270, 1590, 1910, 2230, 2550, 2870, 3190, 3510
            ]
        );
        let status = c.status(3600 * S);
        assert_eq!(status[0].mac, "02:00:00:00:00:09");
        assert_eq!(status[0].claimer, "unknown host");
        assert_eq!(status[0].kind, "gratuitous-arp");
        assert_eq!(status[0].defences, 16);
    }

    #[test]
    fn a_live_peer_is_left_to_the_cluster_rule_and_a_released_vip_is_forgotten() {
        let mut c = Conflicts::default();
        let peer = c.on_claim(0, by(MAC), Claimer::Peer(2), true);
        assert_eq!(peer, (Action::PeerClaim, false));
        assert!(c.is_empty());
        assert_eq!(claim(&mut c, 0).0, Action::Defend);
        let gone = c.on_claim(S, by(MAC), Claimer::Unknown, false);
        assert_eq!(gone, (Action::Nothing, false));
        assert!(c.is_empty());
    }

    #[test]
    fn a_new_claimer_does_not_restart_the_back_off_and_quiet_conflicts_end() {
        let mut c = Conflicts::default();
        assert_eq!(claim(&mut c, 0), (Action::Defend, true));
        // Claims from ever new MACs (a flood alternating between two, or forging many):
        // one conflict, defended on the same schedule as one claimer's.
        let mut defences = 1;
        for i in 1..100u64 {
            let mac = [2, 0, 0, 0, (i >> 8) as u8, i as u8];
            match c.on_claim(i * S / 10, by(mac), Claimer::SilentPeer(3), true) {
                (Action::Defend, false) => defences += 1,
                (Action::Nothing, false) => {}
                other => panic!("claim {i}: {other:?}"),
            }
        }
        assert_eq!(defences, 1, "10 s of claims: one defence");
        assert_eq!(c.status(10 * S)[0].claimers, 100);
        assert_eq!(c.expire(9 * S + QUIET_NS), Vec::<IpAddr>::new());
        assert_eq!(c.expire(10 * S + QUIET_NS), vec![VIP]);
        assert!(c.is_empty());
    }

    #[test]
    fn a_peer_mac_whose_state_does_not_hold_the_vip_is_defended_after_the_grace() {
        let mut c = Conflicts::default();
        // A hand-over: the claim comes first, the state section saying so right after.
        assert_eq!(
            c.on_claim(0, by(MAC), Claimer::Unproven(2), true),
            (Action::PeerClaim, false)
        );
        assert_eq!(c.due(GRACE_NS - 1), vec![]);
        assert_eq!(
            c.on_claim(GRACE_NS / 2, by(MAC), Claimer::Peer(2), true),
            (Action::PeerClaim, false)
        );
        // Judged again while the peer still holds it: nothing more (asked once).
        assert_eq!(c.due(GRACE_NS), vec![by(MAC)]);
        assert_eq!(
            c.on_claim(GRACE_NS, by(MAC), Claimer::Peer(2), true),
            (Action::Nothing, false)
        );
        // The rule settled it for this node: the peer let go; its announcements may sit
        // in caches, so the VIP is announced again (no conflict).
        assert_eq!(
            c.on_claim(2 * GRACE_NS, by(MAC), Claimer::Unproven(2), true),
            (Action::Reannounce, false)
        );
        assert!(c.is_empty());
        assert_eq!(c.due(S), vec![]);
        // A forged MAC: the state never says so; judged again once the grace ends.
        c.on_claim(S, by(MAC), Claimer::Unproven(2), true);
        assert_eq!(c.due(S + GRACE_NS), vec![by(MAC)]);
        assert_eq!(
            c.on_claim(S + GRACE_NS, by(MAC), Claimer::Unproven(2), true),
            (Action::Defend, true)
        );
        assert_eq!(c.due(S + 2 * GRACE_NS), vec![]);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut c = Conflicts::default();
        for i in 0..(MAX_CONFLICTS as u32 + 10) {
            let vip = IpAddr::V6(std::net::Ipv6Addr::from(
                0x2001_0db8_u128 << 96 | u128::from(i),
            ));
            let claim = Claim {
                vip,
                mac: MAC,
                kind: None,
            };
            c.on_claim(u64::from(i), claim, Claimer::Unknown, true);
        }
        assert_eq!(c.len(), MAX_CONFLICTS);
    }

    #[test]
    fn notice_addresses_decode() {
        let mut n = ClaimNotice {
            vip: vipd_common::maps::addr_key(VIP),
            ..ClaimNotice::default()
        };
        assert_eq!(notice_vip(&n), VIP);
        n.vip = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(notice_vip(&n), "2001:db8::1".parse::<IpAddr>().unwrap());
    }
}
