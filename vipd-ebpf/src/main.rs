//! vipd's XDP program.
//!
//! Parses Ethernet → IPv4/IPv6 → UDP → vipd heartbeat with bounds checks on every read.
//! A heartbeat of our cluster must pass `vipd_common::peer::admit` — TTL / hop limit 255
//! (GTSM), a source in `PEER_ADDRS` when `peers` are configured, the MAC when a key is —
//! or it is counted and dropped, never recorded: what this program refuses never reaches
//! the daemon (`Counter::verdict` says, for every counter, what becomes of the frame). An admitted heartbeat from another node
//! updates that peer's entry in `PEERS` (`vipd_common::peer::record`)
//! (last-seen time, sequence, incarnation, flags, weight, counts), pushes a `PeerEvent`
//! to `EVENTS` when the peer's state changes, and is dropped: the daemon never has to read
//! it. A heartbeat that carries a state section (what the sender holds, sent on change) is
//! recorded too but passed up to the daemon's socket. Everything else is passed untouched.
//! VRRP adverts (IP protocol 112) for the groups in `VRRP_GROUPS` are validated (version,
//! type, length, checksum, the sender by `vrrp::check_sender`: TTL 255 for multicast, a
//! source in `VRRP_PEERS` for unicast; v2 authentication and interval) and judged with
//! `vipd_common::vrrp::judge`: an advert that holds a Backup back only refreshes
//! `VRRP_SEEN`; priority 0, a Master being outranked, or a new Master push a `VrrpNotice`
//! to `VRRP_EVENTS`. Adverts for our groups that fail a check are dropped; the others
//! are passed (nothing on the host reads them, capture tools still see them).
//! ARP packets and neighbour solicitations/advertisements are read for two things: a claim
//! on a VIP in `HELD` from a MAC not in `OWN_MACS` (another owner, or a host configured
//! with the address) is recorded in `CLAIMS` and told to the daemon through
//! `CLAIM_EVENTS` (the ARP/NDP watch, `vipd_common::neighbor`), and a request for a held
//! VIP is dropped while the daemon is fenced (see `fence`).
//! `COUNTERS` counts each outcome per CPU.
//!
//! With authentication on (`XdpConfig::auth`), a heartbeat is recorded only if its trailer
//! is there and its header MAC (SipHash-2-4 of the 56 header bytes with the shared key) is
//! right, and only if it is newer than the last one recorded from that peer (a later
//! incarnation, or the same one with a higher sequence): anything else is counted and
//! dropped, never recorded. The daemon checks the full MAC of the state sections it receives.
//!
//! Layout: this file dispatches each frame and parses heartbeats up to their admission
//! (inline in the entry point, whose stack frame the verifier adds to each callee's);
//! [`heartbeat`] checks their MAC and records them, [`vrrp`] handles adverts,
//! [`neighbor`] ARP and NDP, [`maps`] declares the maps and [`frame`] holds the
//! bounds-checked reads and counters they all use.
#![no_std]
#![no_main]

mod frame;
mod heartbeat;
mod maps;
mod neighbor;
mod vrrp;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};
use vipd_common::{
    heartbeat::{HEADER_LEN, Heartbeat, ParseError},
    maps::{Counter, addr_key_v4},
    peer,
    vrrp::IPPROTO_VRRP,
};

use crate::{
    frame::{
        ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_ICMPV6, IPPROTO_UDP, judged, other_traffic,
        ptr_at,
    },
    maps::{CONFIG, PEER_ADDRS},
    neighbor::{ARP_FRAME, ND_FRAME, arp},
};

/// Entry point: never aborts a frame, whatever happens in parsing.
#[xdp]
pub fn vipd(ctx: XdpContext) -> u32 {
    classify(&ctx).unwrap_or_else(other_traffic)
}

/// An empty program, the baseline of `cargo xtask bench xdp` (never attached).
#[xdp]
pub fn vipd_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The verdict for a frame this program reads (a heartbeat, a VRRP advert, ARP or NDP),
/// or `None` for other traffic. The heartbeat's path stays inline here: the entry point's
/// stack frame and the VRRP path's together stay within the verifier's 512 bytes.
#[inline(always)]
fn classify(ctx: &XdpContext) -> Option<u32> {
    let config = CONFIG.get(0)?;
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked the header lies inside the frame.
    let ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let (udp_off, ttl, source) = match ether_type {
        ETH_P_ARP => {
            let frame: *const [u8; ARP_FRAME] = ptr_at(ctx, 0)?;
            // SAFETY: ptr_at checked the whole frame prefix lies inside the frame.
            return Some(arp(unsafe { &*frame }));
        }
        ETH_P_IPV4 => {
            let ip: *const Ipv4Hdr = ptr_at(ctx, EthHdr::LEN)?;
            // SAFETY: as above.
            let ip = unsafe { &*ip };
            if ip.proto == IPPROTO_VRRP {
                return Some(vrrp::over_v4(ctx, ip));
            }
            // Our heartbeats carry no IP options and are never fragmented.
            if ip.vihl != 0x45
                || ip.proto != IPPROTO_UDP
                || u16::from_be_bytes(ip.frags) & 0x3fff != 0
            {
                return None;
            }
            (EthHdr::LEN + Ipv4Hdr::LEN, ip.ttl, addr_key_v4(ip.src_addr))
        }
        ETH_P_IPV6 => {
            let ip: *const Ipv6Hdr = ptr_at(ctx, EthHdr::LEN)?;
            // SAFETY: as above.
            let ip = unsafe { &*ip };
            if ip.next_hdr == IPPROTO_VRRP {
                return Some(vrrp::over_v6(ctx, ip));
            }
            if ip.next_hdr == IPPROTO_ICMPV6 {
                let frame: *const [u8; ND_FRAME] = ptr_at(ctx, 0)?;
                // SAFETY: ptr_at checked the whole frame prefix lies inside the frame.
                return Some(neighbor::nd(unsafe { &*frame }));
            }
            if ip.next_hdr != IPPROTO_UDP {
                return None;
            }
            (EthHdr::LEN + Ipv6Hdr::LEN, ip.hop_limit, ip.src_addr)
        }
        _ => return None,
    };
    let udp: *const UdpHdr = ptr_at(ctx, udp_off)?;
    // SAFETY: as above.
    let udp = unsafe { &*udp };
    if config.heartbeats == 0 || u16::from_be_bytes(udp.dst) != config.port {
        return None;
    }
    // From here on the frame is addressed to the heartbeat port.
    let payload_len = (u16::from_be_bytes(udp.len) as usize).saturating_sub(UdpHdr::LEN);
    let Some(header) = ptr_at::<[u8; HEADER_LEN]>(ctx, udp_off + UdpHdr::LEN) else {
        return Some(judged(Counter::HeartbeatMalformed));
    };
    // SAFETY: ptr_at checked all HEADER_LEN bytes lie inside the frame.
    let header = unsafe { &*header };
    let hb = match Heartbeat::parse_header(header, payload_len, config.cluster_id) {
        Ok(hb) => hb,
        Err(ParseError::ForeignCluster(_)) => return Some(judged(Counter::ForeignCluster)),
        Err(_) => return Some(judged(Counter::HeartbeatMalformed)),
    };
    let admitted = peer::admit(
        &hb,
        ttl,
        config,
        // SAFETY: a lookup; the value is not read.
        || unsafe { PEER_ADDRS.get(source) }.is_some(),
        || heartbeat::authentic(ctx, header, &hb, udp_off, config),
    );
    if let Err(refused) = admitted {
        return Some(judged(refused));
    }
    if let Err(refused) = heartbeat::record(ctx, &hb, config) {
        return Some(judged(refused));
    }
    if hb.state_len > 0 {
        Some(xdp_action::XDP_PASS)
    } else {
        Some(xdp_action::XDP_DROP)
    }
}

// On the host (clippy) a dependency links std, which has its own handler.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
