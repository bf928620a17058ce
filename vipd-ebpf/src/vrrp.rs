//! VRRP adverts (IP protocol 112): validated, judged with `vipd_common::vrrp::judge`
//! and recorded in `VRRP_SEEN`; the daemon is told only of changes (`VRRP_EVENTS`).

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns, programs::XdpContext};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};
use vipd_common::{
    maps::{Counter, VRRP_INITIALIZE, VRRP_MASTER, VrrpNotice, VrrpPeer, VrrpSeen, vrrp_key},
    vrrp::{self, Advert, Family, Local, Notice, Seen, VrrpError},
};

use crate::{
    frame::{count, eth_source, judged, ptr_at},
    maps::{VRRP_EVENTS, VRRP_GROUPS, VRRP_PEERS, VRRP_SEEN},
};

/// Longest VRRP message checksummed here, in 16-bit words.
const VRRP_MAX_WORDS: usize = vrrp::MAX_MESSAGE_LEN / 2;

/// A VRRP packet over IPv4 (header without options, not fragmented).
#[inline(always)]
pub(crate) fn over_v4(ctx: &XdpContext, ip: &Ipv4Hdr) -> u32 {
    let total = u16::from_be_bytes(ip.tot_len) as usize;
    if ip.vihl != 0x45 || u16::from_be_bytes(ip.frags) & 0x3fff != 0 || total < Ipv4Hdr::LEN {
        return judged(Counter::VrrpMalformed);
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
pub(crate) fn over_v6(ctx: &XdpContext, ip: &Ipv6Hdr) -> u32 {
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
/// is for one of our groups. An advert refused is dropped; the others are passed: nothing
/// on this host reads VRRP, so the kernel discards them, and capture tools still see them. Not inlined, so its stack frame
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
        return judged(Counter::VrrpMalformed);
    };
    // SAFETY: ptr_at checked the header lies inside the frame.
    let advert = match Advert::parse_header(unsafe { &*header }, msg_len, family) {
        Ok(a) => a,
        Err(VrrpError::BadVersion(_) | VrrpError::BadType(_)) => {
            return judged(Counter::VrrpBadVersion);
        }
        Err(_) => {
            return judged(Counter::VrrpMalformed);
        }
    };
    let key = vrrp_key(family == Family::V6, advert.vrid);
    // SAFETY: a map value pointer, only read here (the daemon replaces values whole).
    let Some(group) = (unsafe { VRRP_GROUPS.get(key) }) else {
        return judged(Counter::VrrpUnknownVrid);
    };
    // The same VRID on another segment is another group.
    if group.ifindex != 0 && group.ifindex as usize != ctx.ingress_ifindex() {
        return judged(Counter::VrrpUnknownVrid);
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
        return judged(refused);
    }
    // Addresses are 4 or 16 bytes, so a VRRP message has an even length.
    if msg_len > VRRP_MAX_WORDS * 2
        || msg_len % 2 == 1
        || ctx.data() + off + msg_len > ctx.data_end()
    {
        return judged(Counter::VrrpMalformed);
    }
    let Some(msg_sum) = message_sum(ctx, off, msg_len) else {
        return judged(Counter::VrrpMalformed);
    };
    if !advert.checksum_ok(pseudo, msg_sum) {
        return judged(Counter::VrrpBadChecksum);
    }
    let auth_data = if advert.version == vrrp::VERSION_2 {
        // The parser checked the authentication data lies inside the message.
        match ptr_at::<[u8; vrrp::AUTH_DATA_LEN]>(ctx, off + advert.auth_data_offset()) {
            // SAFETY: ptr_at checked the 8 bytes lie inside the frame.
            Some(p) => unsafe { *p },
            None => {
                return judged(Counter::VrrpMalformed);
            }
        }
    } else {
        [0; vrrp::AUTH_DATA_LEN]
    };
    if let Err(refused) = vrrp::check_group(&advert, group, &auth_data) {
        return judged(refused);
    }
    // SAFETY: as above.
    let fingerprint = vrrp::message_fingerprint(msg_sum, unsafe { &*header }, &auth_data);
    let mismatch = !vrrp::addresses_match(
        advert.count,
        fingerprint,
        group.addr_count,
        group.addr_fingerprint,
    );
    // Either counter, never both: each frame counts once.
    count(if mismatch {
        Counter::VrrpAddrMismatch
    } else {
        Counter::VrrpAccepted
    });
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
