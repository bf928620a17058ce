//! Property tests of the wire parsers shared by the XDP program and the daemon: on any
//! bytes they return an error instead of panicking, and what they accept writes back the
//! same. (`cargo xtask fuzz-xdp` runs the XDP program itself against its host reference.)

use proptest::prelude::*;
use vipd_common::{
    auth::{self, AUTH_LEN, Key},
    heartbeat::{HEADER_LEN, Heartbeat, MAGIC, MAX_ECHOES, State, VERSION},
    vip_list::{self, LIST_HEADER_LEN, LIST_MARK, ListChunk},
    vrrp::{self, Advert, Family},
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2_000,
        ..ProptestConfig::default()
    }
}

fn header() -> impl Strategy<Value = Heartbeat> {
    (
        (any::<u8>(), any::<u16>(), any::<u32>(), 1..=u32::MAX),
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<u16>()),
        (any::<u16>(), any::<u64>(), any::<u64>(), any::<u32>()),
    )
        .prop_map(
            |(
                (flags, auth_len, cluster_id, node_id),
                (incarnation, sequence, interval_us, weight),
                (state_len, view_digest, hears, dead_us),
            )| Heartbeat {
                flags,
                auth_len,
                cluster_id,
                node_id,
                incarnation,
                sequence,
                interval_us,
                weight,
                state_len,
                view_digest,
                hears,
                dead_us,
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn heartbeat_parse_never_panics_and_keeps_what_it_reads(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..200),
        cluster in any::<u32>(),
        ours in any::<bool>(),
    ) {
        // Half the cases start like a heartbeat of the cluster, to get past the magic.
        if ours && bytes.len() >= 12 {
            bytes[..4].copy_from_slice(&MAGIC.to_be_bytes());
            bytes[4] = VERSION;
            bytes[6..8].copy_from_slice(&[0, 0]);
            bytes[8..12].copy_from_slice(&cluster.to_be_bytes());
        }
        if let Ok(hb) = Heartbeat::parse(&bytes, cluster) {
            // Everything but the 4 reserved bytes at the end, which are ignored (written 0).
            prop_assert_eq!(&hb.to_bytes()[..HEADER_LEN - 4], &bytes[..HEADER_LEN - 4]);
            prop_assert_eq!(&hb.to_bytes()[HEADER_LEN - 4..], &[0u8; 4][..]);
            prop_assert_eq!(hb.cluster_id, cluster);
            prop_assert!(hb.node_id != 0);
            prop_assert!(
                bytes.len() >= HEADER_LEN + hb.state_len as usize + hb.auth_len as usize
            );
        }
    }

    #[test]
    fn a_written_heartbeat_parses_back(hb in header(), extra in 0usize..64) {
        let mut payload = hb.to_bytes().to_vec();
        let need = hb.state_len as usize + hb.auth_len as usize;
        payload.resize(HEADER_LEN + need + extra, 0);
        prop_assert_eq!(Heartbeat::parse(&payload, hb.cluster_id), Ok(hb));
        // One byte short of what the header announces is truncated.
        payload.truncate(HEADER_LEN + need - 1.min(need));
        if need > 0 {
            prop_assert!(Heartbeat::parse(&payload, hb.cluster_id).is_err());
        }
    }

    #[test]
    fn state_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(state) = State::parse(&bytes) {
            prop_assert!(state.echoes().count() <= MAX_ECHOES);
            for i in 0..state.vip_count as usize + 8 {
                let _ = state.holds(i);
            }
            prop_assert!(!state.holds(state.vip_count as usize));
        }
    }

    #[test]
    fn a_written_state_section_parses_back(
        digest in any::<u32>(),
        vips in 0u16..2_000,
        held in proptest::collection::btree_set(0usize..2_000, 0..50),
        echoes in proptest::collection::vec((any::<u32>(), any::<u64>()), 0..=MAX_ECHOES),
    ) {
        let mut out = vec![0u8; State::len_for(vips, echoes.len())];
        let n = State::write(&mut out, digest, vips, |i| held.contains(&i), &echoes);
        prop_assert_eq!(n, out.len());
        let state = State::parse(&out).expect("a written section parses");
        prop_assert_eq!(state.pool_digest, digest);
        prop_assert_eq!(state.vip_count, vips);
        for i in 0..vips as usize {
            prop_assert_eq!(state.holds(i), held.contains(&i));
        }
        prop_assert_eq!(state.echoes().collect::<Vec<_>>(), echoes.clone());
        for (id, inc) in &echoes {
            prop_assert!(state.echoes_for(*id, *inc));
        }
        // Any other length is refused.
        prop_assert!(State::parse(&out[..out.len() - 1]).is_err());
    }

    #[test]
    fn list_chunk_parse_never_panics(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..200),
        marked in any::<bool>(),
    ) {
        // Half the cases carry the mark, to get past it.
        if marked && bytes.len() >= 6 {
            bytes[4..6].copy_from_slice(&LIST_MARK.to_be_bytes());
        }
        if let Ok(chunk) = ListChunk::parse(&bytes) {
            prop_assert_eq!(chunk.entries().count(), usize::from(chunk.count));
            prop_assert!(u32::from(chunk.first) + u32::from(chunk.count) <= u32::from(chunk.total));
            prop_assert!(State::parse(&bytes).is_err());
        }
    }

    #[test]
    fn a_written_list_chunk_parses_back(
        digest in any::<u32>(),
        first in 0u16..100,
        entries in proptest::collection::vec((any::<[u8; 16]>(), any::<bool>(), 0u8..=128), 0..40),
    ) {
        let entries: Vec<(std::net::IpAddr, u8)> = entries
            .into_iter()
            .map(|(b, v4, prefix)| {
                let v6 = std::net::Ipv6Addr::from(b);
                if v4 {
                    let a: [u8; 4] = b[..4].try_into().expect("4 bytes");
                    (std::net::Ipv4Addr::from(a).into(), prefix.min(32))
                } else {
                    (v6.into(), prefix)
                }
            })
            .collect();
        let total = first + entries.len() as u16;
        let len = LIST_HEADER_LEN + entries.iter().map(|(a, _)| vip_list::entry_len(a)).sum::<usize>();
        let mut out = vec![0u8; len];
        prop_assert_eq!(ListChunk::write(&mut out, digest, total, first, &entries), len);
        let chunk = ListChunk::parse(&out).expect("a written chunk parses");
        prop_assert_eq!((chunk.pool_digest, chunk.total, chunk.first), (digest, total, first));
        prop_assert_eq!(chunk.entries().collect::<Vec<_>>(), entries);
        prop_assert!(vip_list::is_list(&out) && State::parse(&out).is_err());
    }

    #[test]
    fn heartbeat_verify_never_panics(
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        state_len in 0usize..300,
        auth_len in any::<u16>(),
    ) {
        let _ = auth::verify(Key::from_bytes([7; 16]), &payload, state_len, auth_len);
    }

    #[test]
    fn a_signed_heartbeat_verifies_and_a_changed_one_does_not(
        hb in header(),
        state in proptest::collection::vec(any::<u8>(), 0..64),
        flip in any::<prop::sample::Index>(),
    ) {
        let key = Key::from_bytes(*b"parser-prop-key!");
        let hb = Heartbeat { state_len: state.len() as u16, auth_len: AUTH_LEN as u16, ..hb };
        let mut payload = hb.to_bytes().to_vec();
        payload.extend(&state);
        let mac = auth::sign(key, &payload);
        payload.extend(mac);
        prop_assert!(auth::verify(key, &payload, state.len(), AUTH_LEN as u16).is_ok());
        let at = flip.index(payload.len());
        payload[at] ^= 1;
        prop_assert!(auth::verify(key, &payload, state.len(), AUTH_LEN as u16).is_err());
    }

    #[test]
    fn advert_parse_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..1_500),
        v6 in any::<bool>(),
    ) {
        let family = if v6 { Family::V6 } else { Family::V4 };
        if let Ok(advert) = Advert::parse(&bytes, family) {
            prop_assert!(advert.vrid != 0 && advert.count != 0 && advert.max_adver_int_cs != 0);
            prop_assert!(
                bytes.len() >= vrrp::HEADER_LEN + advert.count as usize * family.addr_len()
            );
        }
    }

    #[test]
    fn a_written_advert_parses_back_with_a_right_checksum(
        vrid in 1u8..=255,
        priority in any::<u8>(),
        interval in 1u16..0x1000,
        addrs in proptest::collection::vec(any::<[u8; 4]>(), 1..20),
        src in any::<[u8; 4]>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let advert = Advert {
            version: vrrp::VERSION_3,
            auth_type: 0,
            vrid,
            priority,
            count: addrs.len() as u8,
            max_adver_int_cs: interval,
            checksum: 0,
        };
        let mut msg = vec![0u8; vrrp::HEADER_LEN];
        advert.write_header((&mut msg[..vrrp::HEADER_LEN]).try_into().unwrap());
        for a in &addrs {
            msg.extend(a);
        }
        let dst = [224, 0, 0, 18];
        let sum = vrrp::checksum_v4(src, dst, &msg);
        msg[6..8].copy_from_slice(&sum.to_be_bytes());
        prop_assert_eq!(vrrp::checksum_v4(src, dst, &msg), 0);
        let parsed = Advert::parse(&msg, Family::V4).expect("a written advert parses");
        prop_assert_eq!(parsed, Advert { checksum: sum, ..advert });
        // One flipped bit anywhere breaks the checksum.
        let at = flip.index(msg.len());
        msg[at] ^= 0x10;
        prop_assert!(vrrp::checksum_v4(src, dst, &msg) != 0);
    }
}
