//! VRRP advertisements as this node sends them: the message — VRRPv3 with its checksum
//! over the pseudo-header (RFC 5798 section 5), or VRRPv2 with its authentication data
//! and a checksum over the message alone (RFC 3768) — and, for multicast, the whole
//! frame: Ethernet, then IPv4 (TTL 255, to 224.0.0.18) or IPv6 (hop limit 255, from the
//! link-local address, to ff02::12). Unicast messages go out through `unicast`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vipd_common::vrrp::{self, Advert, IPPROTO_VRRP};

/// 224.0.0.18, the IPv4 VRRP group.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// ff02::12, the IPv6 VRRP group.
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// EtherType of IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// What one advertisement says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertSpec<'a> {
    /// `vrrp::VERSION_3` or `VERSION_2` (IPv4 only).
    pub version: u8,
    /// VRRPv2: the Auth Type and its data (a password, zero-padded; zeros for none).
    pub auth: (u8, [u8; vrrp::AUTH_DATA_LEN]),
    /// Virtual Rtr ID.
    pub vrid: u8,
    /// Priority (0: the Master is stopping).
    pub priority: u8,
    /// Max Adver Int, centiseconds (VRRPv2: whole seconds of them).
    pub interval_cs: u16,
    /// Source address: the interface's primary IPv4 address or its IPv6 link-local one.
    pub source: IpAddr,
    /// The virtual addresses, all of the source's family.
    pub vips: &'a [IpAddr],
}

/// The VRRP message of `spec` with its checksum, for an IP packet to `dest` (the v3
/// pseudo-header holds it: the multicast group, or a unicast peer).
pub fn message(spec: &AdvertSpec<'_>, dest: IpAddr) -> Vec<u8> {
    let mut msg = vec![0u8; vrrp::HEADER_LEN];
    let v2 = spec.version == vrrp::VERSION_2;
    let header = Advert {
        version: spec.version,
        auth_type: if v2 { spec.auth.0 } else { 0 },
        vrid: spec.vrid,
        priority: spec.priority,
        count: spec.vips.len().min(255) as u8, // Config validation keeps it below.
        max_adver_int_cs: spec.interval_cs,
        checksum: 0,
    };
    header.write_header((&mut msg[..vrrp::HEADER_LEN]).try_into().expect("8 bytes"));
    for vip in spec.vips.iter().take(255) {
        match vip {
            IpAddr::V4(a) => msg.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => msg.extend_from_slice(&a.octets()),
        }
    }
    if v2 {
        msg.extend_from_slice(&spec.auth.1);
    }
    let checksum = match (spec.source, dest) {
        _ if v2 => vrrp::checksum_v2(&msg),
        (IpAddr::V4(src), IpAddr::V4(dst)) => vrrp::checksum_v4(src.octets(), dst.octets(), &msg),
        (IpAddr::V6(src), IpAddr::V6(dst)) => vrrp::checksum_v6(src.octets(), dst.octets(), &msg),
        // Config validation keeps a group's addresses in one family.
        _ => 0,
    };
    msg[6..8].copy_from_slice(&checksum.to_be_bytes());
    msg
}

/// The whole multicast Ethernet frame from `mac`, and its EtherType.
pub fn frame(mac: [u8; 6], spec: &AdvertSpec<'_>) -> (Vec<u8>, u16) {
    let mut out = Vec::with_capacity(14 + 40 + vrrp::HEADER_LEN + 16 * spec.vips.len() + 8);
    match spec.source {
        IpAddr::V4(src) => {
            let msg = message(spec, GROUP_V4.into());
            out.extend_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
            out.extend_from_slice(&mac);
            out.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[1] = 0xc0; // Precedence: internetwork control, as routers send.
            ip[2..4].copy_from_slice(&((20 + msg.len()) as u16).to_be_bytes());
            ip[6] = 0x40; // Don't Fragment: the ID may then stay 0 (RFC 6864).
            ip[8] = 255;
            ip[9] = IPPROTO_VRRP;
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&GROUP_V4.octets());
            let c = ipv4_header_checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&ip);
            out.extend_from_slice(&msg);
            (out, ETH_P_IPV4)
        }
        IpAddr::V6(src) => {
            let msg = message(spec, GROUP_V6.into());
            out.extend_from_slice(&[0x33, 0x33, 0x00, 0x00, 0x00, 0x12]);
            out.extend_from_slice(&mac);
            out.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x6c; // Version 6, traffic class 0xc0.
            ip[4..6].copy_from_slice(&(msg.len() as u16).to_be_bytes());
            ip[6] = IPPROTO_VRRP;
            ip[7] = 255;
            ip[8..24].copy_from_slice(&src.octets());
            ip[24..40].copy_from_slice(&GROUP_V6.octets());
            out.extend_from_slice(&ip);
            out.extend_from_slice(&msg);
            (out, ETH_P_IPV6)
        }
    }
}

/// The IPv4 header checksum (RFC 791) of a header whose checksum field is zero.
fn ipv4_header_checksum(h: &[u8; 20]) -> u16 {
    let mut sum: u32 = h
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vipd_common::vrrp::Family;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0b];

    #[test]
    fn ipv4_advert_is_valid_vrrpv3_with_right_checksums() {
        let vips: [IpAddr; 2] = [
            "192.0.2.200".parse().unwrap(),
            "192.0.2.201".parse().unwrap(),
        ];
        let spec = AdvertSpec {
            version: vrrp::VERSION_3,
            auth: (0, [0; 8]),
            vrid: 51,
            priority: 150,
            interval_cs: 100,
            source: "192.0.2.11".parse().unwrap(),
            vips: &vips,
        };
        let (f, proto) = frame(MAC, &spec);
        assert_eq!(proto, ETH_P_IPV4);
        assert_eq!(&f[0..6], &[0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
        assert_eq!(&f[6..12], &MAC);
        let ip: [u8; 20] = f[14..34].try_into().unwrap();
        assert_eq!((ip[8], ip[9]), (255, 112), "TTL 255, protocol 112");
        assert_eq!(ipv4_header_checksum(&ip), 0, "header checksum verifies");
        let msg = &f[34..];
        assert_eq!(msg.len(), 8 + 2 * 4);
        let a = Advert::parse(msg, Family::V4).unwrap();
        assert_eq!(
            (a.vrid, a.priority, a.count, a.max_adver_int_cs),
            (51, 150, 2, 100)
        );
        assert_eq!(vrrp::checksum_v4([192, 0, 2, 11], [224, 0, 0, 18], msg), 0);
        assert_eq!(&msg[8..12], &[192, 0, 2, 200]);
    }

    #[test]
    fn ipv6_advert_is_valid_vrrpv3_from_the_link_local_address() {
        let vips: [IpAddr; 1] = ["2001:db8::200".parse().unwrap()];
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let spec = AdvertSpec {
            version: vrrp::VERSION_3,
            auth: (0, [0; 8]),
            vrid: 52,
            priority: 0,
            interval_cs: 10,
            source: src.into(),
            vips: &vips,
        };
        let (f, proto) = frame(MAC, &spec);
        assert_eq!(proto, ETH_P_IPV6);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 0x12]);
        assert_eq!((f[14 + 6], f[14 + 7]), (112, 255), "next header, hop limit");
        let msg = &f[54..];
        let a = Advert::parse(msg, Family::V6).unwrap();
        assert_eq!((a.vrid, a.priority, a.count), (52, 0, 1));
        assert_eq!(vrrp::checksum_v6(src.octets(), GROUP_V6.octets(), msg), 0);
    }

    #[test]
    fn ipv4_vrrpv2_advert_carries_its_password_and_a_plain_checksum() {
        let vips: [IpAddr; 1] = ["192.0.2.200".parse().unwrap()];
        let spec = AdvertSpec {
            version: vrrp::VERSION_2,
            auth: (vrrp::AUTH_PASS, *b"secret\0\0"),
            vrid: 51,
            priority: 100,
            interval_cs: 300,
            source: "192.0.2.11".parse().unwrap(),
            vips: &vips,
        };
        let (f, _) = frame(MAC, &spec);
        let msg = &f[34..];
        assert_eq!(msg.len(), 8 + 4 + 8);
        assert_eq!(&msg[..8], &[0x21, 51, 100, 1, 1, 3, msg[6], msg[7]]);
        assert_eq!(&msg[12..], b"secret\0\0");
        assert_eq!(vrrp::checksum_v2(msg), 0, "over the message alone");
        let a = Advert::parse(msg, Family::V4).unwrap();
        assert_eq!(
            (a.version, a.auth_type, a.max_adver_int_cs),
            (2, vrrp::AUTH_PASS, 300)
        );
    }

    #[test]
    fn a_unicast_v3_message_sums_with_the_peer_in_the_pseudo_header() {
        let vips: [IpAddr; 1] = ["2001:db8::200".parse().unwrap()];
        let (src, peer): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8::11".parse().unwrap(),
            "2001:db8::12".parse().unwrap(),
        );
        let spec = AdvertSpec {
            version: vrrp::VERSION_3,
            auth: (0, [0; 8]),
            vrid: 52,
            priority: 100,
            interval_cs: 100,
            source: src.into(),
            vips: &vips,
        };
        let msg = message(&spec, peer.into());
        assert_eq!(vrrp::checksum_v6(src.octets(), peer.octets(), &msg), 0);
        assert_ne!(vrrp::checksum_v6(src.octets(), GROUP_V6.octets(), &msg), 0);
    }
}
