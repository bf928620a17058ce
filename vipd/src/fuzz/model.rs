//! The host reference of the XDP program: the same walk through a frame, written over
//! plain slices with the same `vipd_common` parsers and rules (`Heartbeat::parse_header`,
//! `peer::admit`, `peer::record`, `Advert::parse_header`, the checksum helpers,
//! `neighbor::Arp`/`Nd`, `maps::claim_update`). The
//! fuzzer feeds both the same frames and any difference in verdict, counters, peer table
//! or events is a bug in one of them.

use std::collections::{BTreeMap, BTreeSet};

use vipd_common::{
    auth::{Key, header_mac_offset, siphash24_header},
    heartbeat::{HEADER_LEN, Heartbeat, ParseError},
    maps::{
        Counter, EventKind, PeerState, Verdict, VipClaim, VrrpGroup, VrrpPeer, XdpConfig,
        addr_key_v4, claim_update, vrrp_key,
    },
    neighbor::{ARP_LEN, Arp, ClaimKind, ND_LEN, Nd},
    peer,
    vrrp::{self, Advert, Family, IPPROTO_VRRP, VrrpError},
};

/// XDP_DROP.
pub const DROP: u32 = 1;
/// XDP_PASS.
pub const PASS: u32 = 2;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;

/// What the program does with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// XDP_DROP or XDP_PASS.
    pub verdict: u32,
    /// The counter it adds one to.
    pub counter: Counter,
    /// The event it pushes (node id, kind), if any.
    pub event: Option<(u32, EventKind)>,
    /// The node whose peer entry it writes, if any.
    pub recorded: Option<u32>,
    /// The held VIP whose claim it records, if any, and whether it must tell the daemon
    /// (a new claimer; a known one is told again after a second of the program's clock,
    /// which the model does not have).
    pub claimed: Option<([u8; 16], bool)>,
}

/// The state the program keeps and reads, as the model sees it.
pub struct Model {
    /// The program's configuration.
    pub config: XdpConfig,
    /// `PEER_ADDRS`.
    pub peer_addrs: BTreeSet<[u8; 16]>,
    /// `VRRP_GROUPS`.
    pub groups: BTreeMap<u32, VrrpGroup>,
    /// `VRRP_PEERS`.
    pub vrrp_peers: Vec<VrrpPeer>,
    /// `PEERS` (times are not modelled: the program's come from its clock).
    pub peers: BTreeMap<u32, PeerState>,
    /// `HELD`.
    pub held: BTreeSet<[u8; 16]>,
    /// `OWN_MACS`.
    pub own_macs: BTreeSet<[u8; 6]>,
    /// `CLAIMS` (times are not modelled).
    pub claims: BTreeMap<[u8; 16], VipClaim>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn other() -> Outcome {
    judged(Counter::OtherTraffic)
}

/// A frame counted under `counter`, dropped or passed as the counters' table says.
fn judged(counter: Counter) -> Outcome {
    Outcome {
        verdict: match counter.verdict() {
            Verdict::Drop => DROP,
            _ => PASS,
        },
        counter,
        event: None,
        recorded: None,
        claimed: None,
    }
}

impl Model {
    /// A model of a freshly loaded program of `setup`.
    pub fn new(setup: &super::frames::Setup) -> Self {
        Self {
            config: setup.config,
            peer_addrs: setup.peer_addrs.iter().copied().collect(),
            groups: setup.groups.iter().copied().collect(),
            vrrp_peers: setup.vrrp_peers.clone(),
            peers: BTreeMap::new(),
            held: setup.held.iter().copied().collect(),
            own_macs: setup.own_macs.iter().copied().collect(),
            claims: BTreeMap::new(),
        }
    }

    /// The program's outcome for `frame` (at a time long before any dead interval ends:
    /// the fuzzer configures one that never does), updating the peer table.
    pub fn classify(&mut self, frame: &[u8]) -> Outcome {
        if frame.len() < ETH_LEN {
            return other();
        }
        let (udp_off, ttl, source) = match be16(frame, 12) {
            0x0806 => return self.arp(frame),
            0x0800 => {
                let Some(ip) = frame.get(ETH_LEN..ETH_LEN + IPV4_LEN) else {
                    return other();
                };
                if ip[9] == IPPROTO_VRRP {
                    return self.vrrp_v4(frame, ip);
                }
                if ip[0] != 0x45 || ip[9] != 17 || be16(ip, 6) & 0x3fff != 0 {
                    return other();
                }
                let src = [ip[12], ip[13], ip[14], ip[15]];
                (ETH_LEN + IPV4_LEN, ip[8], addr_key_v4(src))
            }
            0x86DD => {
                let Some(ip) = frame.get(ETH_LEN..ETH_LEN + IPV6_LEN) else {
                    return other();
                };
                if ip[6] == IPPROTO_VRRP {
                    return self.vrrp_v6(frame, ip);
                }
                if ip[6] == 58 {
                    return self.neighbor(frame);
                }
                if ip[6] != 17 {
                    return other();
                }
                let src: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
                (ETH_LEN + IPV6_LEN, ip[7], src)
            }
            _ => return other(),
        };
        let Some(udp) = frame.get(udp_off..udp_off + UDP_LEN) else {
            return other();
        };
        if self.config.heartbeats == 0 || be16(udp, 2) != self.config.port {
            return other();
        }
        let payload_len = (be16(udp, 4) as usize).saturating_sub(UDP_LEN);
        let at = udp_off + UDP_LEN;
        let Some(header) = frame.get(at..at + HEADER_LEN) else {
            return judged(Counter::HeartbeatMalformed);
        };
        let header: &[u8; HEADER_LEN] = header.try_into().expect("HEADER_LEN bytes");
        let hb = match Heartbeat::parse_header(header, payload_len, self.config.cluster_id) {
            Ok(hb) => hb,
            Err(ParseError::ForeignCluster(_)) => return judged(Counter::ForeignCluster),
            Err(_) => return judged(Counter::HeartbeatMalformed),
        };
        let config = self.config;
        let admitted = peer::admit(
            &hb,
            ttl,
            &config,
            || self.peer_addrs.contains(&source),
            || authentic(frame, header, &hb, udp_off, &config),
        );
        if let Err(refused) = admitted {
            return judged(refused);
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&frame[6..12]);
        match peer::record(self.peers.get(&hb.node_id), &hb, mac, 0, &config) {
            Err(refused) => judged(refused),
            Ok((state, kind)) => {
                self.peers.insert(hb.node_id, state);
                Outcome {
                    verdict: if hb.state_len > 0 { PASS } else { DROP },
                    counter: Counter::HeartbeatAccepted,
                    event: kind.map(|k| (hb.node_id, k)),
                    recorded: Some(hb.node_id),
                    claimed: None,
                }
            }
        }
    }

    /// An ARP frame (the fuzzer never fences: only claims are modelled).
    fn arp(&mut self, frame: &[u8]) -> Outcome {
        let Some(packet) = frame.get(ETH_LEN..ETH_LEN + ARP_LEN) else {
            return other();
        };
        let Some(arp) = Arp::parse(packet.try_into().expect("ARP_LEN bytes")) else {
            return other();
        };
        match arp.claim() {
            Some((addr, kind)) => self.watch(addr_key_v4(addr), arp.sender_mac, kind),
            None => other(),
        }
    }

    /// A neighbour solicitation or advertisement (or other ICMPv6).
    fn neighbor(&mut self, frame: &[u8]) -> Outcome {
        let Some(bytes) = frame.get(..ETH_LEN + IPV6_LEN + ND_LEN) else {
            return other();
        };
        let ip = &bytes[ETH_LEN..ETH_LEN + IPV6_LEN];
        let source: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
        let message = bytes[ETH_LEN + IPV6_LEN..]
            .try_into()
            .expect("ND_LEN bytes");
        let Some(nd) = Nd::parse(message, ip[7], &source) else {
            return other();
        };
        let mac: [u8; 6] = frame[6..12].try_into().expect("6 bytes");
        match nd.claim() {
            Some((addr, kind)) => self.watch(addr, mac, kind),
            None => other(),
        }
    }

    /// The ARP/NDP watch: a claim on a held VIP from a MAC not the node's own.
    fn watch(&mut self, vip: [u8; 16], mac: [u8; 6], kind: ClaimKind) -> Outcome {
        if !self.held.contains(&vip) || self.own_macs.contains(&mac) {
            return other();
        }
        let prev = self.claims.get(&vip);
        let new_claimer = prev.is_none_or(|p| p.mac != mac);
        let (next, _) = claim_update(prev, mac, kind as u8, 0);
        self.claims.insert(vip, next);
        Outcome {
            claimed: Some((vip, new_claimer)),
            ..judged(Counter::NeighborClaim)
        }
    }

    fn vrrp_v4(&self, frame: &[u8], ip: &[u8]) -> Outcome {
        let total = be16(ip, 2) as usize;
        if ip[0] != 0x45 || be16(ip, 6) & 0x3fff != 0 || total < IPV4_LEN {
            return judged(Counter::VrrpMalformed);
        }
        let (src, dst) = (
            [ip[12], ip[13], ip[14], ip[15]],
            [ip[16], ip[17], ip[18], ip[19]],
        );
        let msg_len = total - IPV4_LEN;
        let mut source = [0u8; 16];
        source[..4].copy_from_slice(&src);
        let pseudo = vrrp::pseudo_sum_v4(src, dst, msg_len);
        self.vrrp_advert(frame, (Family::V4, msg_len, ip[8], pseudo, source))
    }

    fn vrrp_v6(&self, frame: &[u8], ip: &[u8]) -> Outcome {
        let msg_len = be16(ip, 4) as usize;
        let src: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
        let dst: [u8; 16] = ip[24..40].try_into().expect("16 bytes");
        let pseudo = vrrp::pseudo_sum_v6(src, dst, msg_len);
        self.vrrp_advert(frame, (Family::V6, msg_len, ip[7], pseudo, src))
    }

    /// (family, message length, TTL, pseudo-header sum, source).
    fn vrrp_advert(
        &self,
        frame: &[u8],
        (family, msg_len, ttl, pseudo, source): (Family, usize, u8, u32, [u8; 16]),
    ) -> Outcome {
        let off = ETH_LEN
            + match family {
                Family::V4 => IPV4_LEN,
                Family::V6 => IPV6_LEN,
            };
        let Some(header) = frame.get(off..off + vrrp::HEADER_LEN) else {
            return judged(Counter::VrrpMalformed);
        };
        let header: &[u8; vrrp::HEADER_LEN] = header.try_into().expect("header bytes");
        let advert = match Advert::parse_header(header, msg_len, family) {
            Ok(a) => a,
            Err(VrrpError::BadVersion(_) | VrrpError::BadType(_)) => {
                return judged(Counter::VrrpBadVersion);
            }
            Err(_) => return judged(Counter::VrrpMalformed),
        };
        let key = vrrp_key(family == Family::V6, advert.vrid);
        let Some(group) = self.groups.get(&key) else {
            return judged(Counter::VrrpUnknownVrid);
        };
        // BPF_PROG_TEST_RUN's frames arrive on the loopback interface.
        if group.ifindex != 0 && group.ifindex != 1 {
            return judged(Counter::VrrpUnknownVrid);
        }
        let is_peer = || {
            self.vrrp_peers.contains(&VrrpPeer {
                group: key,
                addr: source,
            })
        };
        if let Err(refused) = vrrp::check_sender(group, family, ttl, &source, is_peer) {
            return judged(refused);
        }
        if msg_len > vrrp::MAX_MESSAGE_LEN || msg_len % 2 == 1 || off + msg_len > frame.len() {
            return judged(Counter::VrrpMalformed);
        }
        let msg_sum: u32 = frame[off..off + msg_len]
            .chunks_exact(2)
            .map(|w| u32::from(be16(w, 0)))
            .sum();
        if !advert.checksum_ok(pseudo, msg_sum) {
            return judged(Counter::VrrpBadChecksum);
        }
        let mut auth_data = [0u8; vrrp::AUTH_DATA_LEN];
        if advert.version == vrrp::VERSION_2 {
            let at = off + advert.auth_data_offset();
            let Some(data) = frame.get(at..at + vrrp::AUTH_DATA_LEN) else {
                return judged(Counter::VrrpMalformed);
            };
            auth_data.copy_from_slice(data);
        }
        if let Err(refused) = vrrp::check_group(&advert, group, &auth_data) {
            return judged(refused);
        }
        let fingerprint = vrrp::message_fingerprint(msg_sum, header, &auth_data);
        let matches = vrrp::addresses_match(
            advert.count,
            fingerprint,
            group.addr_count,
            group.addr_fingerprint,
        );
        judged(if matches {
            Counter::VrrpAccepted
        } else {
            Counter::VrrpAddrMismatch
        })
    }
}

/// The XDP program's MAC check: a 16-byte trailer inside the frame whose header MAC is
/// right for one of the configured keys.
fn authentic(
    frame: &[u8],
    header: &[u8; HEADER_LEN],
    hb: &Heartbeat,
    udp_off: usize,
    config: &XdpConfig,
) -> bool {
    let Some(at) = header_mac_offset(hb) else {
        return false;
    };
    let at = udp_off + UDP_LEN + at;
    let Some(mac) = frame.get(at..at + 8) else {
        return false;
    };
    let mac = u64::from_be_bytes(mac.try_into().expect("8 bytes"));
    let key = |k: [u64; 2]| Key { k0: k[0], k1: k[1] };
    mac == siphash24_header(key(config.auth_key), header)
        || (config.auth == 2 && mac == siphash24_header(key(config.auth_next_key), header))
}
