//! vipd's XDP program.
//!
//! Parses Ethernet → IPv4/IPv6 → UDP → vipd heartbeat with bounds checks on every read.
//! A heartbeat of our cluster must pass `vipd_common::peer::admit` — TTL / hop limit 255
//! (GTSM), a source in `PEER_ADDRS` when `peers` are configured, the MAC when a key is —
//! or it is counted and passed, never recorded. An admitted heartbeat from another node
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
//! to `VRRP_EVENTS`. VRRP frames are always passed (nothing on the host reads them).
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
//! passed, never recorded. The daemon checks the full MAC of the state sections it receives.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    helpers::bpf_ktime_get_ns,
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use aya_log_ebpf::info;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};
use vipd_common::{
    auth::{Key, header_mac, header_mac_offset, siphash24_header},
    heartbeat::{FLAG_LEAVING, HEADER_LEN, Heartbeat, ParseError},
    maps::{
        CLAIM_EVENTS_BYTES, COUNTER_SLOTS, ClaimNotice, Counter, EVENTS_BYTES, MAX_CLAIMS,
        MAX_HELD, MAX_OWN_MACS, MAX_PEER_ADDRS, MAX_PEERS, MAX_VRRP_GROUPS, MAX_VRRP_PEERS,
        PeerEvent, PeerState, VRRP_EVENTS_BYTES, VRRP_INITIALIZE, VRRP_MASTER, VipClaim, VrrpGroup,
        VrrpNotice, VrrpPeer, VrrpSeen, XdpConfig, addr_key_v4, claim_update, fenced, vrrp_key,
    },
    neighbor::{ARP_LEN, Arp, ClaimKind, ND_LEN, Nd},
    peer,
    vrrp::{self, Advert, Family, IPPROTO_VRRP, Local, Notice, Seen, VrrpError},
};

// BTF map definitions: `bpftool map dump` prints the values' named fields.
// LRU: a flood of forged ids evicts the least recently heard entries instead of filling
// the table for good (real peers, heard every interval, stay recent).
#[btf_map]
static PEERS: LruHashMap<u32, PeerState, { MAX_PEERS as usize }> = LruHashMap::new();

#[btf_map]
static PEER_ADDRS: HashMap<[u8; 16], u8, { MAX_PEER_ADDRS as usize }> = HashMap::new();

/// When the program last logged (per CPU): at most one line a second, so a flood of new
/// ids cannot flood the log.
#[btf_map]
static LOGGED_AT: PerCpuArray<u64, 1> = PerCpuArray::new();

#[btf_map]
static COUNTERS: PerCpuArray<u64, { COUNTER_SLOTS as usize }> = PerCpuArray::new();

#[btf_map]
static EVENTS: RingBuf<PeerEvent, { EVENTS_BYTES as usize }> = RingBuf::new();

#[btf_map]
static CONFIG: Array<XdpConfig, 1> = Array::new();

#[btf_map]
static VRRP_GROUPS: HashMap<u32, VrrpGroup, { MAX_VRRP_GROUPS as usize }> = HashMap::new();

#[btf_map]
static VRRP_SEEN: HashMap<u32, VrrpSeen, { MAX_VRRP_GROUPS as usize }> = HashMap::new();

/// The unicast groups' peers (see `maps::VRRP_PEERS_MAP`).
#[btf_map]
static VRRP_PEERS: HashMap<VrrpPeer, u8, { MAX_VRRP_PEERS as usize }> = HashMap::new();

#[btf_map]
static VRRP_EVENTS: RingBuf<VrrpNotice, { VRRP_EVENTS_BYTES as usize }> = RingBuf::new();

/// The daemon's last progress (see `maps::FENCE_MAP`).
#[btf_map]
static FENCE: Array<u64, 1> = Array::new();

/// The VIPs this node holds (see `maps::HELD_MAP`).
#[btf_map]
static HELD: HashMap<[u8; 16], u8, { MAX_HELD as usize }> = HashMap::new();

/// This node's MACs (see `maps::OWN_MACS_MAP`).
#[btf_map]
static OWN_MACS: HashMap<[u8; 6], u8, { MAX_OWN_MACS as usize }> = HashMap::new();

/// Other MACs claiming held VIPs (see `maps::CLAIMS_MAP`).
#[btf_map]
static CLAIMS: LruHashMap<[u8; 16], VipClaim, { MAX_CLAIMS as usize }> = LruHashMap::new();

#[btf_map]
static CLAIM_EVENTS: RingBuf<ClaimNotice, { CLAIM_EVENTS_BYTES as usize }> = RingBuf::new();

/// Longest VRRP message checksummed here, in 16-bit words.
const VRRP_MAX_WORDS: usize = vrrp::MAX_MESSAGE_LEN / 2;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_ARP: u16 = 0x0806;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

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

#[inline(always)]
fn count(c: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU slot, written only from this CPU.
        unsafe { *slot += 1 };
    }
}

/// A pointer to a `T` at `offset` in the frame, if the whole `T` lies inside it.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Returns the verdict for a heartbeat-port frame, or `None` for other traffic.
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
            return Some(arp(unsafe { &*frame }, config));
        }
        ETH_P_IPV4 => {
            let ip: *const Ipv4Hdr = ptr_at(ctx, EthHdr::LEN)?;
            // SAFETY: as above.
            let ip = unsafe { &*ip };
            if ip.proto == IPPROTO_VRRP {
                return Some(vrrp_v4(ctx, ip));
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
                return Some(vrrp_v6(ctx, ip));
            }
            if ip.next_hdr == IPPROTO_ICMPV6 {
                let frame: *const [u8; ND_FRAME] = ptr_at(ctx, 0)?;
                // SAFETY: ptr_at checked the whole frame prefix lies inside the frame.
                return Some(neighbor(unsafe { &*frame }, config));
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
    if u16::from_be_bytes(udp.dst) != config.port {
        return None;
    }
    // From here on the frame is addressed to the heartbeat port.
    let payload_len = (u16::from_be_bytes(udp.len) as usize).saturating_sub(UdpHdr::LEN);
    let Some(header) = ptr_at::<[u8; HEADER_LEN]>(ctx, udp_off + UdpHdr::LEN) else {
        count(Counter::HeartbeatMalformed);
        return Some(xdp_action::XDP_PASS);
    };
    // SAFETY: ptr_at checked all HEADER_LEN bytes lie inside the frame.
    let header = unsafe { &*header };
    let hb = match Heartbeat::parse_header(header, payload_len, config.cluster_id) {
        Ok(hb) => hb,
        Err(ParseError::ForeignCluster(_)) => {
            count(Counter::ForeignCluster);
            return Some(xdp_action::XDP_PASS);
        }
        Err(_) => {
            count(Counter::HeartbeatMalformed);
            return Some(xdp_action::XDP_PASS);
        }
    };
    let admitted = peer::admit(
        &hb,
        ttl,
        config,
        // SAFETY: a lookup; the value is not read.
        || unsafe { PEER_ADDRS.get(source) }.is_some(),
        || authentic(ctx, header, &hb, udp_off, config),
    );
    if let Err(refused) = admitted {
        count(refused);
        return Some(xdp_action::XDP_PASS);
    }
    if !record(ctx, &hb, config) {
        return Some(xdp_action::XDP_PASS);
    }
    if hb.state_len > 0 {
        Some(xdp_action::XDP_PASS)
    } else {
        Some(xdp_action::XDP_DROP)
    }
}

/// An ARP frame, Ethernet header included.
const ARP_FRAME: usize = EthHdr::LEN + ARP_LEN;
/// A neighbour solicitation or advertisement frame up to its target, headers included.
const ND_FRAME: usize = EthHdr::LEN + Ipv6Hdr::LEN + ND_LEN;

/// ARP: a claim on a held VIP from another MAC is recorded ([`watch`]); a request for a
/// held VIP while this node is fenced is dropped ([`fence`]). Anything else ARP is other
/// traffic. Takes the frame's bytes (checked to be there), not the context: its stack
/// frame stays out of the entry point's.
#[inline(never)]
fn arp(frame: &[u8; ARP_FRAME], config: &XdpConfig) -> u32 {
    let packet: Option<&[u8; ARP_LEN]> = frame[EthHdr::LEN..].try_into().ok();
    let Some(arp) = packet.and_then(Arp::parse) else {
        return other_traffic();
    };
    let claimed = match arp.claim() {
        Some((addr, kind)) => watch(&addr_key_v4(addr), arp.sender_mac, kind),
        None => false,
    };
    let fenced = arp.asks_for().and_then(|a| fence(config, &addr_key_v4(a)));
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

/// Counts a frame as other traffic; passes it.
#[inline(always)]
fn other_traffic() -> u32 {
    count(Counter::OtherTraffic);
    xdp_action::XDP_PASS
}

/// Neighbour discovery: as [`arp`], for advertisements and DAD solicitations (claims,
/// from the frame's Ethernet source) and solicitations (fencing).
#[inline(never)]
fn neighbor(frame: &[u8; ND_FRAME], config: &XdpConfig) -> u32 {
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
    let fenced = nd.asks_for().and_then(|a| fence(config, &a));
    verdict(fenced, claimed)
}

/// The frame's Ethernet source address.
#[inline(always)]
fn eth_source(ctx: &XdpContext) -> Option<[u8; 6]> {
    let eth: *const [u8; 12] = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked both addresses lie inside the frame.
    let eth = unsafe { &*eth };
    Some([eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]])
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

/// Self-fencing: when the daemon has made no progress for the dead interval (its peers
/// are taking its VIPs over), a request for one of its VIPs is dropped, so a frozen or
/// dead daemon's node stops answering for them as the peers start to.
#[inline(always)]
fn fence(config: &XdpConfig, vip: &[u8; 16]) -> Option<u32> {
    let alive = *FENCE.get(0)?;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a lookup; the value is not read.
    if !fenced(alive, now, config.dead_ns) || unsafe { HELD.get(vip) }.is_none() {
        return None;
    }
    count(Counter::NeighborFenced);
    Some(xdp_action::XDP_DROP)
}

/// Whether the heartbeat carries a 16-byte trailer, inside the frame, whose header MAC is
/// SipHash-2-4 of `header` with the shared key. Not inlined: SipHash's state stays out of
/// the entry point's stack frame.
#[inline(never)]
fn authentic(
    ctx: &XdpContext,
    header: &[u8; HEADER_LEN],
    hb: &Heartbeat,
    udp_off: usize,
    config: &XdpConfig,
) -> bool {
    let Some(at) = header_mac_offset(hb) else {
        return false;
    };
    let Some(mac) = ptr_at::<[u8; 8]>(ctx, udp_off + UdpHdr::LEN + at) else {
        return false;
    };
    // SAFETY: ptr_at checked the 8 bytes lie inside the frame.
    let mac = header_mac(unsafe { &*mac });
    mac_matches(mac, header, &config.auth_key)
        || (config.auth == 2 && mac_matches(mac, header, &config.auth_next_key))
}

/// Whether `mac` is SipHash-2-4 of `header` with `key`. Not inlined: one copy of SipHash
/// serves both keys of a rotation.
#[inline(never)]
fn mac_matches(mac: u64, header: &[u8; HEADER_LEN], key: &[u64; 2]) -> bool {
    mac == siphash24_header(
        Key {
            k0: key[0],
            k1: key[1],
        },
        header,
    )
}

/// Updates the peer table for one admitted heartbeat ([`peer::record`]) and reports state
/// changes. Returns false (nothing recorded) for a replay. Not inlined, so its stack frame
/// does not add to the VRRP path's (the verifier allows 512 bytes along a call chain).
#[inline(never)]
fn record(ctx: &XdpContext, hb: &Heartbeat, config: &XdpConfig) -> bool {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let entry = PEERS.get_ptr_mut(hb.node_id);
    // SAFETY: a valid map value pointer; concurrent writers only race on counts.
    let prev = entry.map(|p| unsafe { &*p });
    let prev_sequence = prev.map_or(0, |p| p.sequence);
    let prev_flags = prev.map_or(0, |p| p.flags);
    let mac = eth_source(ctx).unwrap_or_default();
    let (state, kind) = match peer::record(prev, hb, mac, now, config) {
        Ok(next) => next,
        Err(refused) => {
            count(refused);
            return false;
        }
    };
    match entry {
        // SAFETY: as above.
        Some(p) => unsafe { *p = state },
        None => {
            if PEERS.insert(hb.node_id, state, 0).is_err() {
                count(Counter::PeerTableFull);
                return false;
            }
            if log_due(now) {
                info!(
                    ctx,
                    "vipd: new peer {} (leaving={}); more are not logged for a second",
                    hb.node_id,
                    hb.flags & FLAG_LEAVING
                );
            }
        }
    }
    count(Counter::HeartbeatAccepted);
    if let Some(kind) = kind {
        emit(&PeerEvent {
            ts_ns: now,
            incarnation: hb.incarnation,
            sequence: hb.sequence,
            prev_sequence,
            node_id: hb.node_id,
            kind: kind as u8,
            flags: hb.flags,
            prev_flags,
            _pad: 0,
        });
    }
    true
}

/// Whether this CPU may log now (at most once a second).
#[inline(always)]
fn log_due(now: u64) -> bool {
    match LOGGED_AT.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, written only from this CPU.
        Some(at) => unsafe {
            let due = *at == 0 || now.saturating_sub(*at) >= 1_000_000_000;
            if due {
                *at = now;
            }
            due
        },
        None => false,
    }
}

/// A VRRP packet over IPv4 (header without options, not fragmented).
#[inline(always)]
fn vrrp_v4(ctx: &XdpContext, ip: &Ipv4Hdr) -> u32 {
    let total = u16::from_be_bytes(ip.tot_len) as usize;
    if ip.vihl != 0x45 || u16::from_be_bytes(ip.frags) & 0x3fff != 0 || total < Ipv4Hdr::LEN {
        count(Counter::VrrpMalformed);
        return xdp_action::XDP_PASS;
    }
    let mut packet = VrrpPacket {
        family: Family::V4,
        msg_len: total - Ipv4Hdr::LEN,
        ttl: ip.ttl,
        pseudo: vrrp::pseudo_sum_v4(ip.src_addr, ip.dst_addr, total - Ipv4Hdr::LEN),
        source: [0; 16],
    };
    packet.source[..4].copy_from_slice(&ip.src_addr);
    vrrp_advert(ctx, &packet)
}

/// A VRRP packet over IPv6 (no extension headers).
#[inline(always)]
fn vrrp_v6(ctx: &XdpContext, ip: &Ipv6Hdr) -> u32 {
    let len = u16::from_be_bytes(ip.payload_len) as usize;
    let packet = VrrpPacket {
        family: Family::V6,
        msg_len: len,
        ttl: ip.hop_limit,
        pseudo: vrrp::pseudo_sum_v6(ip.src_addr, ip.dst_addr, len),
        source: ip.src_addr,
    };
    vrrp_advert(ctx, &packet)
}

/// What the IP layer tells about a VRRP packet (a struct: BPF calls take 5 arguments).
struct VrrpPacket {
    family: Family,
    /// Bytes after the IP header.
    msg_len: usize,
    /// TTL or hop limit.
    ttl: u8,
    /// Sum of the pseudo-header's words.
    pseudo: u32,
    /// Source address (IPv4 in the first four bytes).
    source: [u8; 16],
}

/// Validates a VRRP advert `msg_len` bytes long after the IP header, and records it if it
/// is for one of our groups. Always passes the frame: nothing on this host reads VRRP, so
/// the kernel discards it, and capture tools still see it. Not inlined, so its stack frame
/// does not add to the heartbeat path's (the verifier allows 512 bytes along a call chain).
#[inline(never)]
fn vrrp_advert(ctx: &XdpContext, packet: &VrrpPacket) -> u32 {
    let VrrpPacket {
        family,
        msg_len,
        ttl,
        pseudo,
        ref source,
    } = *packet;
    let ip_len = match family {
        Family::V4 => Ipv4Hdr::LEN,
        Family::V6 => Ipv6Hdr::LEN,
    };
    let off = EthHdr::LEN + ip_len;
    let Some(header) = ptr_at::<[u8; vrrp::HEADER_LEN]>(ctx, off) else {
        count(Counter::VrrpMalformed);
        return xdp_action::XDP_PASS;
    };
    // SAFETY: ptr_at checked the header lies inside the frame.
    let advert = match Advert::parse_header(unsafe { &*header }, msg_len, family) {
        Ok(a) => a,
        Err(VrrpError::BadVersion(_) | VrrpError::BadType(_)) => {
            count(Counter::VrrpBadVersion);
            return xdp_action::XDP_PASS;
        }
        Err(_) => {
            count(Counter::VrrpMalformed);
            return xdp_action::XDP_PASS;
        }
    };
    let key = vrrp_key(family == Family::V6, advert.vrid);
    // SAFETY: a map value pointer, only read here (the daemon replaces values whole).
    let Some(group) = (unsafe { VRRP_GROUPS.get(key) }) else {
        count(Counter::VrrpUnknownVrid);
        return xdp_action::XDP_PASS;
    };
    // The same VRID on another segment is another group.
    if group.ifindex != 0 && group.ifindex as usize != ctx.ingress_ifindex() {
        count(Counter::VrrpUnknownVrid);
        return xdp_action::XDP_PASS;
    }
    let is_peer = || {
        let peer = VrrpPeer {
            group: key,
            addr: *source,
        };
        // SAFETY: a lookup; the value is not read.
        unsafe { VRRP_PEERS.get(peer) }.is_some()
    };
    if let Err(refused) = vrrp::check_sender(group, family, ttl, source, is_peer) {
        count(refused);
        return xdp_action::XDP_PASS;
    }
    // Addresses are 4 or 16 bytes, so a VRRP message has an even length.
    if msg_len > VRRP_MAX_WORDS * 2
        || msg_len % 2 == 1
        || ctx.data() + off + msg_len > ctx.data_end()
    {
        count(Counter::VrrpMalformed);
        return xdp_action::XDP_PASS;
    }
    let Some(msg_sum) = message_sum(ctx, off, msg_len) else {
        count(Counter::VrrpMalformed);
        return xdp_action::XDP_PASS;
    };
    if !advert.checksum_ok(pseudo, msg_sum) {
        count(Counter::VrrpBadChecksum);
        return xdp_action::XDP_PASS;
    }
    let auth_data = if advert.version == vrrp::VERSION_2 {
        // The parser checked the authentication data lies inside the message.
        match ptr_at::<[u8; vrrp::AUTH_DATA_LEN]>(ctx, off + advert.auth_data_offset()) {
            // SAFETY: ptr_at checked the 8 bytes lie inside the frame.
            Some(p) => unsafe { *p },
            None => {
                count(Counter::VrrpMalformed);
                return xdp_action::XDP_PASS;
            }
        }
    } else {
        [0; vrrp::AUTH_DATA_LEN]
    };
    if let Err(refused) = vrrp::check_group(&advert, group, &auth_data) {
        count(refused);
        return xdp_action::XDP_PASS;
    }
    count(Counter::VrrpAccepted);
    // SAFETY: as above.
    let fingerprint = vrrp::message_fingerprint(msg_sum, unsafe { &*header }, &auth_data);
    let mismatch = !vrrp::addresses_match(
        advert.count,
        fingerprint,
        group.addr_count,
        group.addr_fingerprint,
    );
    let local = Local {
        priority: group.priority,
        preempt: group.preempt != 0,
        master: group.state == VRRP_MASTER,
        active: group.state != VRRP_INITIALIZE,
        primary: &group.primary,
    };
    // SAFETY: a bpf_ktime_get_ns call.
    let now = unsafe { bpf_ktime_get_ns() };
    let seen = VRRP_SEEN.get_ptr_mut(key);
    let verdict = match seen {
        // SAFETY: a map value pointer; the XDP program is its only writer.
        Some(p) => unsafe {
            let p = &*p;
            vrrp::judge(
                &local,
                &advert,
                source,
                Some(&Seen {
                    source: &p.master,
                    priority: p.priority,
                    max_adver_int_cs: p.max_adver_int_cs,
                }),
            )
        },
        None => vrrp::judge(&local, &advert, source, None),
    };
    if verdict.refresh {
        match seen {
            // SAFETY: as above.
            Some(p) => unsafe {
                let p = &mut *p;
                p.last_seen_ns = now;
                p.received += 1;
                p.master = *source;
                p.priority = advert.priority;
                p.max_adver_int_cs = advert.max_adver_int_cs;
                p.mac = eth_source(ctx).unwrap_or_default();
            },
            None => {
                let record = VrrpSeen {
                    last_seen_ns: now,
                    received: 1,
                    master: *source,
                    priority: advert.priority,
                    max_adver_int_cs: advert.max_adver_int_cs,
                    mac: eth_source(ctx).unwrap_or_default(),
                    ..VrrpSeen::default()
                };
                let _ = VRRP_SEEN.insert(key, record, 0);
            }
        }
    }
    if let Some(notice) = verdict.notice {
        vrrp_notify(now, source, key, notice, &advert);
    }
    if mismatch {
        count(Counter::VrrpAddrMismatch);
        // Say so at most every MISMATCH_NOTICE_NS per group.
        let due = match VRRP_SEEN.get_ptr_mut(key) {
            // SAFETY: a map value pointer; the XDP program is its only writer.
            Some(p) => unsafe {
                let due = now.saturating_sub((*p).mismatch_ns) >= vrrp::MISMATCH_NOTICE_NS
                    || (*p).mismatch_ns == 0;
                if due {
                    (*p).mismatch_ns = now;
                }
                due
            },
            None => {
                let record = VrrpSeen {
                    mismatch_ns: now,
                    ..VrrpSeen::default()
                };
                VRRP_SEEN.insert(key, record, 0).is_ok()
            }
        };
        if due {
            vrrp_notify(now, source, key, Notice::AddressMismatch, &advert);
        }
    }
    xdp_action::XDP_PASS
}

/// Pushes a notice about `advert` to the daemon (counted as lost if the ring is full).
#[inline(always)]
fn vrrp_notify(now: u64, source: &[u8; 16], key: u32, notice: Notice, advert: &Advert) {
    match VRRP_EVENTS.reserve(0) {
        Some(mut entry) => {
            entry.write(VrrpNotice {
                ts_ns: now,
                source: *source,
                key,
                kind: notice as u8,
                priority: advert.priority,
                max_adver_int_cs: advert.max_adver_int_cs,
            });
            entry.submit(0);
        }
        None => count(Counter::EventsLost),
    }
}

/// The unfolded sum of the 16-bit words of the VRRP message at `off`, `len` bytes (even,
/// at most `VRRP_MAX_WORDS` words, all in the frame): with the pseudo-header's it folds
/// to zero when the checksum is right.
#[inline(always)]
fn message_sum(ctx: &XdpContext, off: usize, len: usize) -> Option<u32> {
    let mut sum = 0u32;
    let words = len / 2;
    for i in 0..VRRP_MAX_WORDS {
        if i >= words {
            break;
        }
        let w = ptr_at::<[u8; 2]>(ctx, off + 2 * i)?;
        // SAFETY: ptr_at checked both bytes lie inside the frame.
        let w = unsafe { *w };
        sum += u32::from(u16::from_be_bytes(w));
    }
    Some(sum)
}

#[inline(always)]
fn emit(event: &PeerEvent) {
    if EVENTS.output(*event, 0).is_err() {
        count(Counter::EventsLost);
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
