//! ARP and IPv6 neighbour discovery, as far as the XDP program reads them: which address a
//! packet *claims* for its sender (the ARP/NDP watch: someone else answering for one of
//! our VIPs) and which address a request *asks for* (self-fencing).

/// Bytes of an Ethernet/IPv4 ARP packet: htype, ptype, hlen, plen, oper, sha, spa, tha,
/// tpa.
pub const ARP_LEN: usize = 28;
/// Bytes of a neighbour solicitation or advertisement up to its target address: type,
/// code, checksum, flags/reserved, target.
pub const ND_LEN: usize = 24;
/// Length of a gratuitous ARP frame (Ethernet + ARP, without padding).
pub const GARP_LEN: usize = 14 + ARP_LEN;

const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_PTYPE_IPV4: u16 = 0x0800;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const ND_SOLICIT: u8 = 135;
const ND_ADVERT: u8 = 136;

/// How a packet claims an address (`VipClaim::kind`, `ClaimNotice::kind`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimKind {
    /// An ARP reply from the address.
    ArpReply = 1,
    /// A gratuitous ARP (a request whose sender and target are the address).
    Gratuitous = 2,
    /// An ARP request sent from the address.
    ArpRequest = 3,
    /// An ARP probe for the address (RFC 5227: sender 0.0.0.0, someone wants to use it).
    ArpProbe = 4,
    /// A neighbour advertisement for the address.
    Advert = 5,
    /// A duplicate address detection solicitation for it (source ::).
    Dad = 6,
}

impl ClaimKind {
    /// Decodes a `kind` byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::ArpReply,
            2 => Self::Gratuitous,
            3 => Self::ArpRequest,
            4 => Self::ArpProbe,
            5 => Self::Advert,
            6 => Self::Dad,
            _ => return None,
        })
    }

    /// A short name for logs, status and hooks.
    pub fn name(self) -> &'static str {
        match self {
            Self::ArpReply => "arp-reply",
            Self::Gratuitous => "gratuitous-arp",
            Self::ArpRequest => "arp-request",
            Self::ArpProbe => "arp-probe",
            Self::Advert => "neighbor-advert",
            Self::Dad => "dad-solicit",
        }
    }
}

/// A gratuitous ARP request, "who has `ip`? tell `ip`", from `mac`, broadcast: how a host
/// announces (or claims) an address.
pub fn gratuitous_arp(mac: [u8; 6], ip: [u8; 4]) -> [u8; GARP_LEN] {
    let mut f = [0u8; GARP_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&ARP_HTYPE_ETHERNET.to_be_bytes());
    f[16..18].copy_from_slice(&ARP_PTYPE_IPV4.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip);
    // The target hardware address stays zero.
    f[38..42].copy_from_slice(&ip);
    f
}

/// An Ethernet/IPv4 ARP request or reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender hardware address.
    pub sender_mac: [u8; 6],
    /// Sender protocol address.
    pub sender_ip: [u8; 4],
    /// Target protocol address.
    pub target_ip: [u8; 4],
}

impl Arp {
    /// Reads an ARP packet; `None` unless it is Ethernet/IPv4 and a request or reply.
    #[inline(always)]
    pub fn parse(b: &[u8; ARP_LEN]) -> Option<Self> {
        if u16::from_be_bytes([b[0], b[1]]) != ARP_HTYPE_ETHERNET
            || u16::from_be_bytes([b[2], b[3]]) != ARP_PTYPE_IPV4
            || b[4] != 6
            || b[5] != 4
        {
            return None;
        }
        let op = u16::from_be_bytes([b[6], b[7]]);
        if op != ARP_REQUEST && op != ARP_REPLY {
            return None;
        }
        Some(Self {
            op,
            sender_mac: [b[8], b[9], b[10], b[11], b[12], b[13]],
            sender_ip: [b[14], b[15], b[16], b[17]],
            target_ip: [b[24], b[25], b[26], b[27]],
        })
    }

    /// The address this packet claims for `sender_mac`, and how.
    #[inline(always)]
    pub fn claim(&self) -> Option<([u8; 4], ClaimKind)> {
        if self.sender_ip == [0; 4] {
            return (self.op == ARP_REQUEST).then_some((self.target_ip, ClaimKind::ArpProbe));
        }
        let kind = match self.op {
            ARP_REPLY => ClaimKind::ArpReply,
            _ if self.sender_ip == self.target_ip => ClaimKind::Gratuitous,
            _ => ClaimKind::ArpRequest,
        };
        Some((self.sender_ip, kind))
    }

    /// The address a request asks for: the one a fenced node stops answering for.
    #[inline(always)]
    pub fn asks_for(&self) -> Option<[u8; 4]> {
        (self.op == ARP_REQUEST).then_some(self.target_ip)
    }
}

/// A neighbour solicitation or advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nd {
    /// A solicitation (else an advertisement).
    pub solicit: bool,
    /// Sent from the unspecified address (a solicitation for duplicate address detection).
    pub unspecified_source: bool,
    /// The target address.
    pub target: [u8; 16],
}

impl Nd {
    /// Reads a neighbour solicitation or advertisement (`None` for any other ICMPv6, a
    /// non-zero code, or a hop limit other than 255: RFC 4861 7.1.1 and 7.1.2, such
    /// packets are invalid). `source` is the IPv6 source address.
    #[inline(always)]
    pub fn parse(b: &[u8; ND_LEN], hop_limit: u8, source: &[u8; 16]) -> Option<Self> {
        if (b[0] != ND_SOLICIT && b[0] != ND_ADVERT) || b[1] != 0 || hop_limit != 255 {
            return None;
        }
        let mut target = [0u8; 16];
        target.copy_from_slice(&b[8..24]);
        Some(Self {
            solicit: b[0] == ND_SOLICIT,
            unspecified_source: *source == [0; 16],
            target,
        })
    }

    /// The address this packet claims for its sender, and how: an advertisement claims
    /// its target, a solicitation for duplicate address detection wants it.
    #[inline(always)]
    pub fn claim(&self) -> Option<([u8; 16], ClaimKind)> {
        match (self.solicit, self.unspecified_source) {
            (false, _) => Some((self.target, ClaimKind::Advert)),
            (true, true) => Some((self.target, ClaimKind::Dad)),
            (true, false) => None,
        }
    }

    /// The address a solicitation asks for (DAD's included: the holder would answer it):
    /// the one a fenced node stops answering for.
    #[inline(always)]
    pub fn asks_for(&self) -> Option<[u8; 16]> {
        self.solicit.then_some(self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp(op: u16, sender: [u8; 4], target: [u8; 4]) -> [u8; ARP_LEN] {
        let mut b = [0u8; ARP_LEN];
        b[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
        b[6..8].copy_from_slice(&op.to_be_bytes());
        b[8..14].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        b[14..18].copy_from_slice(&sender);
        b[24..28].copy_from_slice(&target);
        b
    }

    #[test]
    fn arp_claims() {
        let vip = [192, 0, 2, 10];
        let other = [192, 0, 2, 1];
        let p = |b| Arp::parse(&b).unwrap();
        assert_eq!(
            p(arp(2, vip, other)).claim(),
            Some((vip, ClaimKind::ArpReply))
        );
        assert_eq!(
            p(arp(1, vip, vip)).claim(),
            Some((vip, ClaimKind::Gratuitous))
        );
        assert_eq!(
            p(arp(1, vip, other)).claim(),
            Some((vip, ClaimKind::ArpRequest))
        );
        assert_eq!(
            p(arp(1, [0; 4], vip)).claim(),
            Some((vip, ClaimKind::ArpProbe))
        );
        assert_eq!(p(arp(2, [0; 4], vip)).claim(), None);
        assert_eq!(p(arp(1, other, vip)).asks_for(), Some(vip));
        assert_eq!(p(arp(1, vip, vip)).asks_for(), Some(vip));
        assert_eq!(p(arp(2, other, vip)).asks_for(), None);
        assert_eq!(p(arp(1, other, vip)).sender_mac, [2, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn a_gratuitous_arp_claims_its_address() {
        let f = gratuitous_arp([2, 0, 0, 0, 0, 9], [192, 0, 2, 10]);
        let arp = Arp::parse(f[14..].try_into().unwrap()).unwrap();
        assert_eq!(arp.claim(), Some(([192, 0, 2, 10], ClaimKind::Gratuitous)));
        assert_eq!(arp.sender_mac, [2, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn arp_refuses_other_kinds() {
        let mut b = arp(3, [1; 4], [2; 4]);
        assert_eq!(Arp::parse(&b), None);
        b = arp(1, [1; 4], [2; 4]);
        b[1] = 6; // Token ring.
        assert_eq!(Arp::parse(&b), None);
        b = arp(1, [1; 4], [2; 4]);
        b[5] = 16;
        assert_eq!(Arp::parse(&b), None);
    }

    #[test]
    fn nd_claims() {
        let mut b = [0u8; ND_LEN];
        let target = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        b[8..24].copy_from_slice(&target);
        let src = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        b[0] = 136;
        let na = Nd::parse(&b, 255, &src).unwrap();
        assert_eq!(na.claim(), Some((target, ClaimKind::Advert)));
        assert_eq!(na.asks_for(), None);
        b[0] = 135;
        let ns = Nd::parse(&b, 255, &src).unwrap();
        assert_eq!(ns.claim(), None);
        assert_eq!(ns.asks_for(), Some(target));
        let dad = Nd::parse(&b, 255, &[0; 16]).unwrap();
        assert_eq!(dad.claim(), Some((target, ClaimKind::Dad)));
        assert_eq!(dad.asks_for(), Some(target));
        assert_eq!(Nd::parse(&b, 64, &src), None);
        b[1] = 1;
        assert_eq!(Nd::parse(&b, 255, &src), None);
        b[1] = 0;
        b[0] = 128;
        assert_eq!(Nd::parse(&b, 255, &src), None);
    }

    #[test]
    fn kinds_round_trip() {
        for k in 1..=6u8 {
            assert_eq!(ClaimKind::from_u8(k).unwrap() as u8, k);
        }
        assert_eq!(ClaimKind::from_u8(7), None);
    }
}
