//! The fuzzer's frames: heartbeats and VRRP adverts built right (signed with the right,
//! the next or a wrong key, fresh or replayed, from peers and strangers, on-link and
//! off-link), ARP and neighbour discovery claiming held VIPs or not, from this node's MAC
//! or another's, then often damaged (truncated, lengths that lie, IPv4 options, VLAN tags,
//! fragments, IPv6 extension headers, flipped bytes), and plain random bytes. Seeded, so a
//! run is repeatable.

use std::collections::BTreeMap;

use vipd_common::{
    auth::{AUTH_LEN, Key, sign},
    heartbeat::{FLAG_LEAVING, FLAG_MATURE, HEADER_LEN, Heartbeat, State},
    maps::{VrrpGroup, VrrpPeer, XdpConfig, addr_key_v4, vrrp_key},
    vrrp::{self, Advert, IPPROTO_VRRP},
};

/// Largest frame generated (an Ethernet MTU's worth).
pub const MAX_FRAME: usize = 1514;
/// Node ids heartbeats carry: 1 is the fuzzed node's own.
pub const NODES: u32 = 64;
/// The fuzzed node's cluster.
const CLUSTER: u32 = 7;
/// The heartbeat port.
const PORT: u16 = 7846;
/// Peers' IPv4 sources (in the peer filter): 192.0.2.1-8.
const PEER_V4: [u8; 3] = [192, 0, 2];
/// Strangers' IPv4 sources: 198.51.100.x.
const STRANGER_V4: [u8; 3] = [198, 51, 100];
/// VRIDs the fuzzed node runs (IPv4 51, 52 with an address list; IPv6 51).
const VRIDS: [u8; 3] = [51, 52, 53];
/// The VRRPv2 group's (VRIDS[2]) password and interval.
const V2_PASS: [u8; 8] = *b"secret\0\0";
const V2_INTERVAL_CS: u16 = 100;
/// The fuzzed node's own MAC (in `OWN_MACS`); claims from it are not recorded.
const OWN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Other hosts' MACs.
const OTHER_MACS: [[u8; 6]; 2] = [[0x02, 0, 0, 0, 0, 0x42], [0x02, 0, 0, 0, 0, 0x43]];

/// xorshift64*: small, fast and repeatable; not for anything secret.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// One configuration of the fuzzed program: its settings, peer filter and VRRP groups.
pub struct Setup {
    /// Shown in reports.
    pub name: &'static str,
    /// The program's `CONFIG`.
    pub config: XdpConfig,
    /// `PEER_ADDRS`.
    pub peer_addrs: Vec<[u8; 16]>,
    /// `VRRP_GROUPS`.
    pub groups: Vec<(u32, VrrpGroup)>,
    /// `VRRP_PEERS`: the unicast groups' peers.
    pub vrrp_peers: Vec<VrrpPeer>,
    /// `HELD`: the VIPs the node holds (the ARP/NDP watch's).
    pub held: Vec<[u8; 16]>,
    /// `OWN_MACS`.
    pub own_macs: Vec<[u8; 6]>,
}

/// The key heartbeats are signed with, the next key of a rotation, and one nobody accepts.
pub const KEYS: [Key; 3] = [
    Key::from_bytes(*b"fuzz-current-key"),
    Key::from_bytes(*b"fuzz-the-nextkey"),
    Key::from_bytes(*b"fuzz-foreign-key"),
];

fn peer_v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    a[15] = last;
    a
}

fn link_local(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..2].copy_from_slice(&[0xfe, 0x80]);
    a[15] = last;
    a
}

/// The four configurations fuzzed: no key and no filter; one key with a peer filter (and
/// unicast VRRP groups); VRRP mode (no heartbeats read); a key rotation (two keys). Each has VRRP groups for both
/// families, one comparing address lists. Dead intervals never end during a run, as the model assumes.
pub fn setups() -> Vec<Setup> {
    let config = |auth: u8, peer_filter: u8| XdpConfig {
        cluster_id: CLUSTER,
        node_id: 1,
        dead_ns: u64::MAX,
        port: PORT,
        heartbeats: 1,
        auth,
        peer_filter,
        auth_key: if auth > 0 {
            [KEYS[0].k0, KEYS[0].k1]
        } else {
            [0; 2]
        },
        auth_next_key: if auth > 1 {
            [KEYS[1].k0, KEYS[1].k1]
        } else {
            [0; 2]
        },
        ..XdpConfig::default()
    };
    let mut peer_addrs = Vec::new();
    for i in 1..=8 {
        peer_addrs.push(addr_key_v4([PEER_V4[0], PEER_V4[1], PEER_V4[2], i]));
        peer_addrs.push(peer_v6(i));
        peer_addrs.push(link_local(i));
    }
    let group = |addr_count: u8| VrrpGroup {
        primary: link_local(9),
        priority: 100,
        preempt: 1,
        state: vipd_common::maps::VRRP_BACKUP,
        addr_count,
        addr_fingerprint: if addr_count > 0 {
            vrrp::addresses_fingerprint(&vip_v4(1))
        } else {
            0
        },
        version: vrrp::VERSION_3,
        ..VrrpGroup::default()
    };
    let v2 = VrrpGroup {
        version: vrrp::VERSION_2,
        auth_type: vrrp::AUTH_PASS,
        auth_data: V2_PASS,
        interval_cs: V2_INTERVAL_CS,
        ..group(1)
    };
    let groups = vec![
        (vrrp_key(false, VRIDS[0]), group(0)),
        (vrrp_key(false, VRIDS[1]), group(1)),
        (vrrp_key(true, VRIDS[0]), group(0)),
        (vrrp_key(false, VRIDS[2]), v2),
    ];
    // With the peer filter, two groups are unicast: IPv4 from 192.0.2.1-4 with TTL 64 or
    // more, IPv6 from 2001:db8::1-4 and fe80::1-2 with any hop limit.
    let unicast_groups = vec![
        (vrrp_key(false, VRIDS[0]), group(0)),
        (
            vrrp_key(false, VRIDS[1]),
            VrrpGroup {
                unicast: 1,
                min_ttl: 64,
                ..group(1)
            },
        ),
        (
            vrrp_key(true, VRIDS[0]),
            VrrpGroup {
                unicast: 1,
                ..group(0)
            },
        ),
        (vrrp_key(false, VRIDS[2]), v2),
    ];
    let mut vrrp_peers = Vec::new();
    for i in 1..=4 {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[PEER_V4[0], PEER_V4[1], PEER_V4[2], i]);
        vrrp_peers.push(VrrpPeer {
            group: vrrp_key(false, VRIDS[1]),
            addr,
        });
        vrrp_peers.push(VrrpPeer {
            group: vrrp_key(true, VRIDS[0]),
            addr: peer_v6(i),
        });
    }
    for i in 1..=2 {
        vrrp_peers.push(VrrpPeer {
            group: vrrp_key(true, VRIDS[0]),
            addr: link_local(i),
        });
    }
    let held = || {
        let mut h: Vec<[u8; 16]> = (1..=2).map(|i| addr_key_v4(vip_v4(i))).collect();
        h.push(vip_v6(1));
        h
    };
    vec![
        Setup {
            name: "no key, no peer filter",
            config: config(0, 0),
            peer_addrs: Vec::new(),
            groups: groups.clone(),
            vrrp_peers: Vec::new(),
            held: held(),
            own_macs: vec![OWN_MAC],
        },
        Setup {
            name: "key, peer filter",
            config: config(1, 1),
            peer_addrs,
            groups: unicast_groups,
            vrrp_peers,
            held: held(),
            own_macs: vec![OWN_MAC],
        },
        Setup {
            name: "VRRP mode (no heartbeats)",
            config: XdpConfig {
                heartbeats: 0,
                ..config(0, 0)
            },
            peer_addrs: Vec::new(),
            groups: groups.clone(),
            vrrp_peers: Vec::new(),
            held: held(),
            own_macs: vec![OWN_MAC],
        },
        Setup {
            name: "key rotation (two keys)",
            config: config(2, 0),
            peer_addrs: Vec::new(),
            groups,
            vrrp_peers: Vec::new(),
            held: held(),
            own_macs: vec![OWN_MAC],
        },
    ]
}

/// IPv6 VIPs: 2001:db8::a:<i> (the first is held).
fn vip_v6(i: u8) -> [u8; 16] {
    let mut a = peer_v6(i);
    a[13] = 0x0a;
    a
}

fn vip_v4(i: u8) -> [u8; 4] {
    [203, 0, 113, i]
}

/// Builds frames for one setup, remembering each node's last incarnation and sequence so
/// that most signed heartbeats are fresh and some are replays.
pub struct Frames {
    rng: Rng,
    last: BTreeMap<u32, (u64, u64, u8)>,
}

/// Where a heartbeat's IP header says it comes from.
#[derive(Clone, Copy)]
enum Source {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Frames {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            last: BTreeMap::new(),
        }
    }

    /// The next frame: a valid or hostile heartbeat or advert, damaged half the time, or
    /// random bytes.
    pub fn next_frame(&mut self) -> Vec<u8> {
        let mut frame = match self.rng.below(24) {
            0..=11 => self.heartbeat(),
            12..=17 => self.advert(),
            18..=21 => self.neighbor(),
            _ => {
                let len = 14 + self.rng.below(200) as usize;
                let mut f = self.rng.bytes(len);
                // Random bytes under a known EtherType now and then, to get past Ethernet.
                if self.rng.one_in(2) {
                    let t: u16 = if self.rng.one_in(2) { 0x0800 } else { 0x86dd };
                    f[12..14].copy_from_slice(&t.to_be_bytes());
                }
                f
            }
        };
        if self.rng.one_in(2) {
            self.damage(&mut frame);
        }
        frame.truncate(MAX_FRAME);
        frame
    }

    /// Well-formed frames of every kind the program handles, each to be cut at every
    /// offset by the caller.
    pub fn samples(&mut self) -> Vec<Vec<u8>> {
        let v4 = Source::V4([192, 0, 2, 2]);
        let v6 = Source::V6(peer_v6(2));
        let state = |rng: &mut Rng| Some(valid_state(rng));
        let mut out = Vec::new();
        for (source, key) in [(v4, Some(KEYS[0])), (v6, Some(KEYS[1])), (v4, None)] {
            let st = state(&mut self.rng);
            let hb = header(2, 5, 9, FLAG_MATURE, st.as_ref().map_or(0, Vec::len), key);
            out.push(udp_frame(source, 255, PORT, &payload(hb, st, key)));
        }
        let rng = &mut self.rng;
        out.push(advert_frame(rng, (3, false), VRIDS[1], 255, [192, 0, 2, 3]));
        out.push(advert_frame(rng, (3, true), VRIDS[0], 255, link_local(3)));
        out.push(advert_frame(rng, (2, false), VRIDS[2], 255, [192, 0, 2, 3]));
        out.push(arp_frame(OTHER_MACS[0], 1, vip_v4(1), vip_v4(1)));
        out.push(nd_frame(OTHER_MACS[0], 136, 255, link_local(4), vip_v6(1)));
        out
    }

    /// An ARP packet or a neighbour solicitation/advertisement: mostly claims or requests
    /// for held VIPs, from this node's MAC or another's, some of other kinds.
    fn neighbor(&mut self) -> Vec<u8> {
        let mac = match self.rng.below(4) {
            0 => OWN_MAC,
            1 => OTHER_MACS[1],
            _ => OTHER_MACS[0],
        };
        let v4 = |rng: &mut Rng| match rng.below(4) {
            0 => [0; 4],
            1 => vip_v4(3),
            _ => vip_v4(1 + rng.below(2) as u8),
        };
        let v6 = |rng: &mut Rng| {
            if rng.one_in(4) { vip_v6(2) } else { vip_v6(1) }
        };
        if self.rng.one_in(2) {
            let op = match self.rng.below(8) {
                0 => self.rng.below(5) as u16,
                1..=4 => 1,
                _ => 2,
            };
            let sender = v4(&mut self.rng);
            let target = if self.rng.one_in(3) {
                sender
            } else {
                v4(&mut self.rng)
            };
            let mut f = arp_frame(mac, op, sender, target);
            if self.rng.one_in(10) {
                let at = 14 + self.rng.below(6) as usize;
                f[at] ^= 1 << self.rng.below(8);
            }
            f
        } else {
            let kind = match self.rng.below(8) {
                0 => 128 + self.rng.below(10) as u8,
                1..=3 => 135,
                _ => 136,
            };
            let hops = if self.rng.one_in(6) { 64 } else { 255 };
            let source = if self.rng.one_in(3) {
                [0; 16]
            } else {
                link_local(4)
            };
            let mut f = nd_frame(mac, kind, hops, source, v6(&mut self.rng));
            if self.rng.one_in(10) {
                f[14 + 40 + 1] = 1; // A non-zero code.
            }
            f
        }
    }

    fn heartbeat(&mut self) -> Vec<u8> {
        let rng = &mut self.rng;
        let node = 1 + rng.below(u64::from(NODES)) as u32;
        let (mut incarnation, mut sequence, mut flags) =
            self.last.get(&node).copied().unwrap_or((1, 0, 0));
        match rng.below(16) {
            0 => {
                incarnation += 1;
                sequence = 0;
            }
            1 => incarnation = incarnation.saturating_sub(1),
            2 => sequence = sequence.saturating_sub(rng.below(3)),
            3 => sequence += 2 + rng.below(5),
            4 => flags = rng.byte() & (FLAG_LEAVING | FLAG_MATURE),
            5 => flags = rng.byte(),
            _ => {}
        }
        sequence += 1;
        self.last.insert(node, (incarnation, sequence, flags));
        let key = match rng.below(8) {
            0 => None,
            1 => Some(KEYS[1]),
            2 => Some(KEYS[2]),
            _ => Some(KEYS[0]),
        };
        let state = match rng.below(4) {
            0 => Some(valid_state(rng)),
            1 => {
                let n = rng.below(64) as usize;
                Some(rng.bytes(n))
            }
            _ => None,
        };
        let mut hb = header(
            node,
            incarnation,
            sequence,
            flags,
            state.as_ref().map_or(0, Vec::len),
            key,
        );
        if rng.one_in(12) {
            hb.cluster_id = CLUSTER + 1 + rng.below(3) as u32;
        }
        if rng.one_in(30) {
            hb.node_id = 0;
        }
        hb.weight = rng.below(4) as u16 * 100 + 1;
        let mut payload = payload(hb, state, key);
        match rng.below(40) {
            0 => payload[0] ^= 1 << rng.below(8),
            1 => payload[4] = rng.byte(),
            2 => payload[6..8].copy_from_slice(&(rng.below(64) as u16).to_be_bytes()),
            3 => payload[38..40].copy_from_slice(&(rng.below(4096) as u16).to_be_bytes()),
            _ => {}
        }
        let last = 1 + rng.below(9) as u8;
        let source = match rng.below(6) {
            0 => Source::V4([STRANGER_V4[0], STRANGER_V4[1], STRANGER_V4[2], last]),
            1 => Source::V6(peer_v6(last.wrapping_add(100))),
            2 => Source::V6(peer_v6(last)),
            3 => Source::V6(link_local(last)),
            _ => Source::V4([PEER_V4[0], PEER_V4[1], PEER_V4[2], last]),
        };
        let ttl = match rng.below(10) {
            0 => 254,
            1 => 64,
            2 => rng.byte(),
            _ => 255,
        };
        let port = if rng.one_in(20) { PORT + 1 } else { PORT };
        udp_frame(source, ttl, port, &payload)
    }

    fn advert(&mut self) -> Vec<u8> {
        let rng = &mut self.rng;
        let v6 = rng.one_in(2);
        let vrid = match rng.below(6) {
            0 => rng.byte(),
            1 => VRIDS[1],
            2 if !v6 => VRIDS[2],
            _ => VRIDS[0],
        };
        // Mostly the group's version; VRRPv2 is IPv4 only.
        let v2 = !v6 && ((vrid == VRIDS[2]) != rng.one_in(8));
        let version = if v2 { 2 } else { 3 };
        let ttl = if rng.one_in(6) { rng.byte() } else { 255 };
        let last = 1 + rng.below(9) as u8;
        let mut f = if v6 {
            let src = if rng.one_in(5) {
                peer_v6(last)
            } else {
                link_local(last)
            };
            advert_frame(rng, (version, true), vrid, ttl, src)
        } else {
            advert_frame(rng, (version, false), vrid, ttl, [192, 0, 2, last])
        };
        let ip_len = if v6 { 40 } else { 20 };
        let at = 14 + ip_len;
        match rng.below(12) {
            0 => f[at] = rng.byte(),
            1 => f[at + 3] = rng.byte(),
            2 => f[at + 4..at + 6].copy_from_slice(&[0, 0]),
            3 => f[at + 6] ^= 1 << rng.below(8),
            _ => {}
        }
        f
    }

    /// One or more kinds of damage.
    fn damage(&mut self, f: &mut Vec<u8>) {
        let rng = &mut self.rng;
        for _ in 0..1 + rng.below(2) {
            let ethertype = u16::from_be_bytes([f[12], f[13]]);
            match rng.below(10) {
                0 | 1 => {
                    let len = 14 + rng.below((f.len() - 13) as u64) as usize;
                    f.truncate(len);
                }
                2 => {
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(f.len() as u64) as usize;
                        f[at] = rng.byte();
                    }
                }
                3 if ethertype == 0x0800 && f.len() >= 34 => {
                    // IPv4 options: one more header word.
                    f[14] = 0x46;
                    let at = 34;
                    f.splice(at..at, [1, 1, 1, 0]);
                }
                4 if ethertype == 0x0800 && f.len() >= 34 => {
                    // A fragment: More Fragments, or an offset.
                    let frag: u16 = if rng.one_in(2) { 0x2000 } else { 185 };
                    f[20..22].copy_from_slice(&frag.to_be_bytes());
                }
                5 => {
                    // An 802.1Q tag.
                    f.splice(12..12, [0x81, 0x00, 0, rng.byte()]);
                }
                6 if ethertype == 0x86dd && f.len() >= 54 => {
                    // A hop-by-hop or destination options header before the payload.
                    let next = f[20];
                    f[20] = if rng.one_in(2) { 0 } else { 60 };
                    f.splice(54..54, [next, 0, 1, 4, 0, 0, 0, 0]);
                }
                7 => {
                    // The length field of the IP or UDP header lies.
                    let at = match ethertype {
                        0x0800 if rng.one_in(2) => 16,
                        0x0800 => 38,
                        0x86dd if rng.one_in(2) => 18,
                        0x86dd => 58,
                        _ => 12,
                    };
                    if at + 2 <= f.len() {
                        f[at..at + 2].copy_from_slice(&(rng.next_u64() as u16).to_be_bytes());
                    }
                }
                8 => {
                    // Trailing bytes (padding, or a longer frame than the headers say).
                    let extra = rng.below(64) as usize;
                    f.extend(rng.bytes(extra));
                }
                _ => {
                    let at = rng.below(f.len() as u64) as usize;
                    f[at] ^= 1 << rng.below(8);
                }
            }
        }
    }
}

/// A heartbeat header for `node`, with lengths for `state_len` bytes of state and a
/// trailer when signed.
fn header(
    node: u32,
    incarnation: u64,
    sequence: u64,
    flags: u8,
    state_len: usize,
    key: Option<Key>,
) -> Heartbeat {
    Heartbeat {
        flags,
        auth_len: if key.is_some() { AUTH_LEN as u16 } else { 0 },
        cluster_id: CLUSTER,
        node_id: node,
        incarnation,
        sequence,
        interval_us: 20_000,
        weight: 1,
        state_len: state_len as u16,
        view_digest: 0x1234,
        hears: 0b110,
        dead_us: 60_000,
    }
}

/// A state section of a few VIPs with a few echoes.
fn valid_state(rng: &mut Rng) -> Vec<u8> {
    let vips = rng.below(40) as u16;
    let echoes: Vec<(u32, u64)> = (0..rng.below(4))
        .map(|i| (1 + i as u32, rng.below(3)))
        .collect();
    let mut out = vec![0u8; State::len_for(vips, echoes.len())];
    let bits = rng.next_u64();
    State::write(&mut out, 99, vips, |i| bits >> (i % 64) & 1 == 1, &echoes);
    out
}

/// The UDP payload: header, state section, trailer (signed with `key`, if any).
fn payload(hb: Heartbeat, state: Option<Vec<u8>>, key: Option<Key>) -> Vec<u8> {
    let mut p = hb.to_bytes().to_vec();
    p.extend(state.unwrap_or_default());
    if let Some(key) = key {
        let mac = sign(key, &p);
        p.extend(mac);
    }
    debug_assert!(p.len() >= HEADER_LEN);
    p
}

/// An Ethernet/IPv4 ARP packet from `mac` (operation `op`).
fn arp_frame(mac: [u8; 6], op: u16, sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend(mac);
    f.extend(0x0806u16.to_be_bytes());
    f.extend([0, 1, 0x08, 0, 6, 4]);
    f.extend(op.to_be_bytes());
    f.extend(mac);
    f.extend(sender);
    f.extend([0; 6]);
    f.extend(target);
    f
}

/// An ICMPv6 message of type `kind` with `target` (a neighbour solicitation or
/// advertisement for 135/136), from `mac` and `source`, with a link-layer option.
fn nd_frame(mac: [u8; 6], kind: u8, hops: u8, source: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
    f.extend(mac);
    f.extend(0x86ddu16.to_be_bytes());
    ipv6(&mut f, 58, hops, source, link_local(1), 32);
    f.extend([kind, 0, 0, 0, 0x20, 0, 0, 0]);
    f.extend(target);
    f.extend([2, 1]);
    f.extend(mac);
    f
}

fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend([0x02, 0, 0, 0, 0, 0x02]);
    f.extend(ethertype.to_be_bytes());
    f
}

/// An IPv4 header (no options, checksum left zero: the program does not read it).
fn ipv4(f: &mut Vec<u8>, proto: u8, ttl: u8, src: [u8; 4], dst: [u8; 4], payload_len: usize) {
    f.extend([0x45, 0]);
    f.extend(((20 + payload_len) as u16).to_be_bytes());
    f.extend([0, 0, 0x40, 0, ttl, proto, 0, 0]);
    f.extend(src);
    f.extend(dst);
}

fn ipv6(f: &mut Vec<u8>, next: u8, hops: u8, src: [u8; 16], dst: [u8; 16], payload_len: usize) {
    f.extend([0x60, 0, 0, 0]);
    f.extend((payload_len as u16).to_be_bytes());
    f.extend([next, hops]);
    f.extend(src);
    f.extend(dst);
}

fn udp_frame(source: Source, ttl: u8, port: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut f = match source {
        Source::V4(src) => {
            let mut f = ethernet(0x0800);
            ipv4(&mut f, 17, ttl, src, [192, 0, 2, 1], udp_len);
            f
        }
        Source::V6(src) => {
            let mut f = ethernet(0x86dd);
            ipv6(&mut f, 17, ttl, src, peer_v6(1), udp_len);
            f
        }
    };
    f.extend(port.to_be_bytes());
    f.extend(port.to_be_bytes());
    f.extend((udp_len as u16).to_be_bytes());
    f.extend([0, 0]);
    f.extend(payload);
    f
}

/// A VRRP advert (`(version, ipv6)`) for `vrid` with one to three addresses (the first
/// the group's), the checksum right; a VRRPv2 one mostly with the v2 group's password and
/// interval.
fn advert_frame<S: Into<AdvertSource>>(
    rng: &mut Rng,
    (version, v6): (u8, bool),
    vrid: u8,
    ttl: u8,
    source: S,
) -> Vec<u8> {
    let count = 1 + rng.below(3) as u8;
    let v2 = version == vrrp::VERSION_2;
    let advert = Advert {
        version,
        auth_type: match rng.below(8) {
            0 => rng.byte(),
            1 => vrrp::AUTH_NONE,
            _ => vrrp::AUTH_PASS,
        },
        vrid,
        priority: rng.byte(),
        count,
        max_adver_int_cs: if !v2 {
            1 + rng.below(400) as u16
        } else if rng.one_in(6) {
            100 * (1 + rng.below(4) as u16)
        } else {
            V2_INTERVAL_CS
        },
        checksum: 0,
    };
    let mut msg = [0u8; vrrp::HEADER_LEN].to_vec();
    let header: &mut [u8; vrrp::HEADER_LEN] = (&mut msg[..]).try_into().expect("header");
    advert.write_header(header);
    for i in 0..count {
        if v6 {
            msg.extend(peer_v6(200 + i));
        } else {
            msg.extend(vip_v4(1 + i * rng.below(2) as u8));
        }
    }
    if v2 {
        let mut pass = V2_PASS;
        if rng.one_in(6) {
            pass[rng.below(8) as usize] ^= 1;
        }
        msg.extend(pass);
    }
    let mut f;
    match source.into() {
        AdvertSource(src) if v6 => {
            let dst = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12];
            let sum = vrrp::checksum_v6(src, dst, &msg);
            msg[6..8].copy_from_slice(&sum.to_be_bytes());
            f = ethernet(0x86dd);
            ipv6(&mut f, IPPROTO_VRRP, ttl, src, dst, msg.len());
        }
        AdvertSource(src) => {
            let (src, dst) = ([src[0], src[1], src[2], src[3]], [224, 0, 0, 18]);
            let sum = if v2 {
                vrrp::checksum_v2(&msg)
            } else {
                vrrp::checksum_v4(src, dst, &msg)
            };
            msg[6..8].copy_from_slice(&sum.to_be_bytes());
            f = ethernet(0x0800);
            ipv4(&mut f, IPPROTO_VRRP, ttl, src, dst, msg.len());
        }
    }
    f.extend(msg);
    f
}

/// An advert's source: IPv4 in the first four bytes.
struct AdvertSource([u8; 16]);

impl From<[u8; 4]> for AdvertSource {
    fn from(a: [u8; 4]) -> Self {
        let mut s = [0u8; 16];
        s[..4].copy_from_slice(&a);
        Self(s)
    }
}

impl From<[u8; 16]> for AdvertSource {
    fn from(a: [u8; 16]) -> Self {
        Self(a)
    }
}
