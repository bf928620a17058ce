//! ARP and neighbour discovery: the ARP/NDP watch (claims on held VIPs from other MACs,
//! recorded in `CLAIMS`) and self-fencing (requests for held VIPs dropped while the
//! daemon makes no progress).

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns};
use network_types::{eth::EthHdr, ip::Ipv6Hdr};
use vipd_common::{
    maps::{ClaimNotice, Counter, addr_key_v4, claim_update, fenced},
    neighbor::{ARP_LEN, Arp, ClaimKind, ND_LEN, Nd},
};

use crate::{
    frame::{count, other_traffic},
    maps::{CLAIM_EVENTS, CLAIMS, FENCE, HELD, OWN_MACS},
};

/// An ARP frame, Ethernet header included.
pub(crate) const ARP_FRAME: usize = EthHdr::LEN + ARP_LEN;
/// A neighbour solicitation or advertisement frame up to its target, headers included.
pub(crate) const ND_FRAME: usize = EthHdr::LEN + Ipv6Hdr::LEN + ND_LEN;

/// ARP: a claim on a held VIP from another MAC is recorded ([`watch`]); a request for a
/// held VIP while this node is fenced is dropped ([`fence`]). Anything else ARP is other
/// traffic. Takes the frame's bytes (checked to be there), not the context: its stack
/// frame stays out of the entry point's.
#[inline(never)]
pub(crate) fn arp(frame: &[u8; ARP_FRAME]) -> u32 {
    let packet: Option<&[u8; ARP_LEN]> = frame[EthHdr::LEN..].try_into().ok();
    let Some(arp) = packet.and_then(Arp::parse) else {
        return other_traffic();
    };
    let claimed = match arp.claim() {
        Some((addr, kind)) => watch(&addr_key_v4(addr), arp.sender_mac, kind),
        None => false,
    };
    let fenced = arp.asks_for().and_then(|a| fence(&addr_key_v4(a)));
    verdict(fenced, claimed)
}

/// A neighbour packet's verdict: dropped when fenced, else passed (counted as other
/// traffic unless it was a claim).
#[inline(always)]
fn verdict(fenced: Option<u32>, claimed: bool) -> u32 {
    match fenced {
        Some(action) => action,
        None if claimed => xdp_action::XDP_PASS,
        None => other_traffic(),
    }
}

/// Neighbour discovery: as [`arp`], for advertisements and DAD solicitations (claims,
/// from the frame's Ethernet source) and solicitations (fencing).
#[inline(never)]
pub(crate) fn nd(frame: &[u8; ND_FRAME]) -> u32 {
    const IP: usize = EthHdr::LEN;
    let (Ok(source), Ok(message)) = (
        <&[u8; 16]>::try_from(&frame[IP + 8..IP + 24]),
        <&[u8; ND_LEN]>::try_from(&frame[IP + Ipv6Hdr::LEN..]),
    ) else {
        return other_traffic();
    };
    let Some(nd) = Nd::parse(message, frame[IP + 7], source) else {
        return other_traffic();
    };
    let claimed = match nd.claim() {
        Some((addr, kind)) => {
            let mac = [frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]];
            watch(&addr, mac, kind)
        }
        None => false,
    };
    let fenced = nd.asks_for().and_then(|a| fence(&a));
    verdict(fenced, claimed)
}

/// The ARP/NDP watch: a claim on a held VIP by a MAC that is not this node's is recorded
/// in `CLAIMS` and told to the daemon (at most once a second per VIP, at once for a new
/// claimer). Returns whether it was such a claim. Not inlined: one copy serves ARP and NDP.
#[inline(never)]
fn watch(vip: &[u8; 16], mac: [u8; 6], kind: ClaimKind) -> bool {
    // SAFETY: lookups; the values are not read.
    if unsafe { HELD.get(vip) }.is_none() || unsafe { OWN_MACS.get(mac) }.is_some() {
        return false;
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let entry = CLAIMS.get_ptr_mut(vip);
    // SAFETY: a valid map value pointer; concurrent writers only race on counts.
    let prev = entry.map(|p| unsafe { &*p });
    let (next, notify) = claim_update(prev, mac, kind as u8, now);
    match entry {
        // SAFETY: as above.
        Some(p) => unsafe { *p = next },
        None => {
            let _ = CLAIMS.insert(vip, next, 0);
        }
    }
    count(Counter::NeighborClaim);
    if notify {
        let notice = ClaimNotice {
            ts_ns: now,
            vip: *vip,
            mac,
            kind: kind as u8,
            _pad: 0,
        };
        if CLAIM_EVENTS.output(notice, 0).is_err() {
            count(Counter::EventsLost);
        }
    }
    true
}

/// Self-fencing: once the deadline of a held VIP's slot has passed (its daemon's last
/// heartbeat or advert plus the time its peers wait before taking over), a request for it
/// is dropped, so a frozen or dead daemon's node stops answering for it as the peers start
/// to.
#[inline(always)]
fn fence(vip: &[u8; 16]) -> Option<u32> {
    // SAFETY: a lookup of a plain value.
    let slot = *unsafe { HELD.get(vip) }?;
    let deadline = *FENCE.get(u32::from(slot))?;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if !fenced(deadline, now) {
        return None;
    }
    count(Counter::NeighborFenced);
    Some(xdp_action::XDP_DROP)
}
