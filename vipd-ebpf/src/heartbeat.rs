//! vipd heartbeats, once the entry point has parsed them and `vipd_common::peer::admit`
//! is asking: the MAC check ([`authentic`]) and the peer table's update ([`record`]).

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::XdpContext};
use aya_log_ebpf::info;
use network_types::udp::UdpHdr;
use vipd_common::{
    auth::{Key, header_mac, header_mac_offset, siphash24_header},
    heartbeat::{HEADER_LEN, Heartbeat, is_leaving},
    maps::{Counter, PeerEvent, XdpConfig},
    peer,
};

use crate::{
    frame::{count, eth_source, log_due, ptr_at},
    maps::{EVENTS, PEERS},
};

/// Whether the heartbeat carries a 16-byte trailer, inside the frame, whose header MAC is
/// SipHash-2-4 of `header` with the shared key. Not inlined: SipHash's state stays out of
/// the entry point's stack frame.
#[inline(never)]
pub(crate) fn authentic(
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
/// changes. Refuses (nothing recorded) a replay, or a new peer the table cannot take. Not inlined, so its stack frame
/// does not add to the VRRP path's (the verifier allows 512 bytes along a call chain).
#[inline(never)]
pub(crate) fn record(ctx: &XdpContext, hb: &Heartbeat, config: &XdpConfig) -> Result<(), Counter> {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let entry = PEERS.get_ptr(hb.node_id);
    // SAFETY: a valid map value pointer, only read: writers replace the whole entry, and
    // the one read stays valid (RCU) until this program returns.
    let prev = entry.map(|p| unsafe { &*p });
    let prev_sequence = prev.map_or(0, |p| p.sequence);
    let prev_flags = prev.map_or(0, |p| p.flags);
    let mac = eth_source(ctx).unwrap_or_default();
    let (state, kind) = peer::record(prev, hb, mac, now, config)?;
    // Replaced, never written in place: the kernel links a new element and unlinks the
    // old one (RCU), so the daemon's lookups copy one heartbeat's entry whole, never a
    // torn mix of two (its `hears` bits with another view's digest).
    if PEERS.insert(hb.node_id, state, 0).is_err() {
        return Err(Counter::PeerTableFull);
    }
    if prev.is_none() && log_due(now) {
        info!(
            ctx,
            "vipd: new peer {} (leaving={}); more are not logged for a second",
            hb.node_id,
            is_leaving(hb.flags) as u8
        );
    }
    count(Counter::HeartbeatAccepted);
    if let Some(kind) = kind {
        // Written straight into the ring (no copy on the stack, whose 512 bytes the entry
        // point and this function share).
        match EVENTS.reserve(0) {
            Some(mut slot) => {
                slot.write(PeerEvent {
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
                slot.submit(0);
            }
            None => count(Counter::EventsLost),
        }
    }
    Ok(())
}
