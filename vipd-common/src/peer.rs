//! What the XDP program does with one heartbeat of our cluster: the checks it must pass
//! before anything is recorded ([`admit`]), and how it changes the peer's entry
//! ([`record`]). Pure, so the XDP program, the host tests and the differential fuzzer
//! (`cargo xtask fuzz-xdp`) run the same rules.

use crate::{
    heartbeat::Heartbeat,
    maps::{Counter, EventKind, PeerState, XdpConfig},
};

/// TTL / hop limit every heartbeat must arrive with (GTSM, RFC 5082): only a sender on the
/// link can make it 255.
pub const GTSM_TTL: u8 = 255;

/// Whether a parsed heartbeat may be recorded, in the order the checks cost: GTSM, then the
/// peer filter (`known_source`, asked only with `peers` configured), then the MAC
/// (`authentic`, asked only with a key), then our own id. The error names the counter.
#[inline(always)]
pub fn admit(
    hb: &Heartbeat,
    ttl: u8,
    config: &XdpConfig,
    known_source: impl FnOnce() -> bool,
    authentic: impl FnOnce() -> bool,
) -> Result<(), Counter> {
    if ttl != GTSM_TTL {
        return Err(Counter::HeartbeatBadTtl);
    }
    if config.peer_filter != 0 && !known_source() {
        return Err(Counter::HeartbeatUnknownSource);
    }
    if config.auth != 0 && !authentic() {
        return Err(Counter::HeartbeatBadAuth);
    }
    if hb.node_id == config.node_id {
        return Err(Counter::OwnNodeId);
    }
    Ok(())
}

/// The peer's entry after an admitted heartbeat arriving at `now` from the Ethernet source
/// `mac` (`prev`: its entry, if the table has one), and the event to push, if any. With authentication, a heartbeat not
/// newer than `prev` (an earlier incarnation, or a sequence not above the last) is a
/// replay: `Err(HeartbeatReplayed)`, nothing recorded.
#[inline(always)]
pub fn record(
    prev: Option<&PeerState>,
    hb: &Heartbeat,
    mac: [u8; 6],
    now: u64,
    config: &XdpConfig,
) -> Result<(PeerState, Option<EventKind>), Counter> {
    let Some(peer) = prev else {
        let state = PeerState {
            last_seen_ns: now,
            first_seen_ns: now,
            incarnation: hb.incarnation,
            sequence: hb.sequence,
            view_digest: hb.view_digest,
            hears: hb.hears,
            received: 1,
            node_id: hb.node_id,
            interval_us: hb.interval_us,
            dead_us: hb.dead_us,
            weight: hb.weight,
            mac,
            flags: hb.flags,
            ..PeerState::default()
        };
        return Ok((state, Some(EventKind::NewPeer)));
    };
    if config.auth != 0
        && (hb.incarnation < peer.incarnation
            || (hb.incarnation == peer.incarnation && hb.sequence <= peer.sequence))
    {
        return Err(Counter::HeartbeatReplayed);
    }
    let mut next = *peer;
    let kind = if peer.incarnation != hb.incarnation {
        next.first_seen_ns = now;
        Some(EventKind::Restarted)
    } else if now.saturating_sub(peer.last_seen_ns) > config.dead_ns {
        Some(EventKind::Returned)
    } else if peer.flags != hb.flags {
        Some(EventKind::FlagsChanged)
    } else if hb.sequence > peer.sequence && hb.sequence - peer.sequence > 1 {
        next.missed = peer.missed.saturating_add(hb.sequence - peer.sequence - 1);
        Some(EventKind::SequenceGap)
    } else {
        None
    };
    next.last_seen_ns = now;
    next.incarnation = hb.incarnation;
    next.sequence = hb.sequence;
    next.view_digest = hb.view_digest;
    next.hears = hb.hears;
    next.interval_us = hb.interval_us;
    next.dead_us = hb.dead_us;
    next.weight = hb.weight;
    next.mac = mac;
    next.flags = hb.flags;
    next.received = peer.received.wrapping_add(1);
    Ok((next, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::{FLAG_LEAVING, FLAG_MATURE};

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn config(auth: u8, peer_filter: u8) -> XdpConfig {
        XdpConfig {
            cluster_id: 1,
            node_id: 1,
            dead_ns: 10_000_000,
            auth,
            peer_filter,
            ..XdpConfig::default()
        }
    }

    fn hb(node_id: u32, incarnation: u64, sequence: u64, flags: u8) -> Heartbeat {
        Heartbeat {
            cluster_id: 1,
            node_id,
            incarnation,
            sequence,
            flags,
            weight: 1,
            ..Heartbeat::default()
        }
    }

    #[test]
    fn checks_run_in_order_and_only_when_configured() {
        let h = hb(2, 1, 1, 0);
        let no = || -> bool { panic!("not asked") };
        assert_eq!(
            admit(&h, 64, &config(1, 1), no, no),
            Err(Counter::HeartbeatBadTtl)
        );
        assert_eq!(admit(&h, 255, &config(0, 0), no, no), Ok(()));
        assert_eq!(
            admit(&h, 255, &config(1, 1), || false, no),
            Err(Counter::HeartbeatUnknownSource)
        );
        assert_eq!(
            admit(&h, 255, &config(1, 1), || true, || false),
            Err(Counter::HeartbeatBadAuth)
        );
        assert_eq!(admit(&h, 255, &config(2, 1), || true, || true), Ok(()));
        assert_eq!(
            admit(&hb(1, 1, 1, 0), 255, &config(0, 0), no, no),
            Err(Counter::OwnNodeId)
        );
    }

    #[test]
    fn first_heartbeat_is_a_new_peer_then_changes_are_events() {
        let c = config(1, 0);
        let (p, ev) = record(None, &hb(2, 5, 1, 0), MAC, 100, &c).unwrap();
        assert_eq!(p.mac, MAC);
        assert_eq!(ev, Some(EventKind::NewPeer));
        assert_eq!((p.first_seen_ns, p.received), (100, 1));
        let (p, ev) = record(Some(&p), &hb(2, 5, 2, 0), MAC, 200, &c).unwrap();
        assert_eq!(ev, None);
        let (p, ev) = record(Some(&p), &hb(2, 5, 3, FLAG_MATURE), MAC, 300, &c).unwrap();
        assert_eq!(ev, Some(EventKind::FlagsChanged));
        let (p, ev) = record(Some(&p), &hb(2, 5, 6, FLAG_MATURE), MAC, 400, &c).unwrap();
        assert_eq!((ev, p.missed), (Some(EventKind::SequenceGap), 2));
        let (p, ev) = record(Some(&p), &hb(2, 5, 7, FLAG_MATURE), MAC, 20_000_400, &c).unwrap();
        assert_eq!(ev, Some(EventKind::Returned));
        let (p, ev) = record(Some(&p), &hb(2, 6, 1, 0), MAC, 20_000_500, &c).unwrap();
        assert_eq!(
            (ev, p.first_seen_ns),
            (Some(EventKind::Restarted), 20_000_500)
        );
        let (p, ev) = record(Some(&p), &hb(2, 6, 2, FLAG_LEAVING), MAC, 20_000_600, &c).unwrap();
        assert_eq!((ev, p.received), (Some(EventKind::FlagsChanged), 7));
    }

    #[test]
    fn with_a_key_older_heartbeats_are_replays() {
        let c = config(1, 0);
        let (p, _) = record(None, &hb(2, 5, 10, 0), MAC, 100, &c).unwrap();
        for (inc, seq) in [(5, 10), (5, 9), (4, 100)] {
            assert_eq!(
                record(Some(&p), &hb(2, inc, seq, 0), MAC, 200, &c),
                Err(Counter::HeartbeatReplayed)
            );
        }
        // Without a key, anything goes (nothing could stop a forger anyway).
        assert!(record(Some(&p), &hb(2, 4, 1, 0), MAC, 200, &config(0, 0)).is_ok());
    }
}
