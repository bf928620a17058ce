//! Layout of the BPF maps shared by the XDP program and the daemon.
//!
//! All values are `#[repr(C)]` with explicit padding so both sides agree byte for byte.

/// Where vipd pins its maps by default: one directory per instance below it.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/vipd";

/// The maps pinned in an instance's directory (`bpftool map dump pinned …`), each as its
/// name in lower case (`VRRP_GROUPS` → `vrrp_groups`).
pub const PINNED_MAPS: [&str; 14] = [
    PEERS_MAP,
    PEER_ADDRS_MAP,
    CONFIG_MAP,
    COUNTERS_MAP,
    EVENTS_MAP,
    VRRP_GROUPS_MAP,
    VRRP_SEEN_MAP,
    VRRP_PEERS_MAP,
    VRRP_EVENTS_MAP,
    FENCE_MAP,
    HELD_MAP,
    OWN_MACS_MAP,
    CLAIMS_MAP,
    CLAIM_EVENTS_MAP,
];

/// Name of the peer table: `LruHashMap<u32 node_id, PeerState>` (a flood of forged ids
/// evicts the least recently heard, never locks real nodes out).
pub const PEERS_MAP: &str = "PEERS";
/// Name of the per-CPU counters: `PerCpuArray<u64>`, indexed by [`Counter`].
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the ring buffer of [`PeerEvent`]s.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the one-entry configuration array: `Array<XdpConfig>`.
pub const CONFIG_MAP: &str = "CONFIG";

/// Name of the VRRP groups this node runs: `HashMap<u32 key, VrrpGroup>` (see [`vrrp_key`]),
/// written by the daemon.
pub const VRRP_GROUPS_MAP: &str = "VRRP_GROUPS";
/// Name of what the XDP program heard per VRRP group: `HashMap<u32 key, VrrpSeen>`.
pub const VRRP_SEEN_MAP: &str = "VRRP_SEEN";
/// Name of the ring buffer of [`VrrpNotice`]s.
pub const VRRP_EVENTS_MAP: &str = "VRRP_EVENTS";

/// Name of the self-fencing deadlines: `Array<u64>`, one per slot ([`FENCE_POOL`], and
/// [`fence_slot_vrrp`] for each VRRP group), each the moment its daemon's word runs out —
/// the pool's last heartbeat plus the dead interval (when its peers take over), a VRRP
/// group's last advert as Master plus three of its advert intervals (a Backup's
/// Master_Down_Interval, skew aside) — in `bpf_ktime_get_ns()` time; 0: fencing off. Past
/// it ([`fenced`]: the daemon is frozen, hung or dead) the program stops answering for
/// the VIPs held under that slot. Each VRRP group has its own, so a frozen Master of a
/// fast group is fenced as fast as its Backups take over, whatever the other groups run.
pub const FENCE_MAP: &str = "FENCE";
/// Name of the VIPs this node holds: `HashMap<[u8; 16] address, u16 fence slot>` (see
/// [`addr_key`]), written by the daemon; ARP requests and neighbour solicitations for
/// them are dropped while their slot is fenced.
pub const HELD_MAP: &str = "HELD";

/// The pool's slot of `FENCE`.
pub const FENCE_POOL: u16 = 0;

/// The `FENCE` slot of VRRP group `vrid` of a family.
pub const fn fence_slot_vrrp(ipv6: bool, vrid: u8) -> u16 {
    1 + ((ipv6 as u16) << 8 | vrid as u16)
}

/// Number of `FENCE` slots: the pool's, and one per VRRP group (VRID and family).
pub const FENCE_SLOTS: u32 = 1 + 2 * 256;

/// Most VIPs `HELD` holds.
pub const MAX_HELD: u32 = 16 * 1024;

/// Name of this node's own MAC addresses: `HashMap<[u8; 6], u8>`, written by the daemon
/// (the interfaces the program runs on, VRRP virtual MACs): an ARP/NDP claim from one of
/// them is ours.
pub const OWN_MACS_MAP: &str = "OWN_MACS";
/// Most MACs `OWN_MACS` holds.
pub const MAX_OWN_MACS: u32 = 64;
/// Name of the ARP/NDP watch's record: `LruHashMap<[u8; 16] address, VipClaim>`, per held
/// VIP that another MAC claimed (see [`crate::neighbor`]).
pub const CLAIMS_MAP: &str = "CLAIMS";
/// Most VIPs `CLAIMS` remembers (the least recently claimed are forgotten first).
pub const MAX_CLAIMS: u32 = 1024;
/// Name of the ring buffer of [`ClaimNotice`]s.
pub const CLAIM_EVENTS_MAP: &str = "CLAIM_EVENTS";
/// Size of the claim ring buffer in bytes.
pub const CLAIM_EVENTS_BYTES: u32 = 16 * 1024;
/// A VIP's claimer is told to the daemon at most this often (ns), and at once when the
/// claiming MAC changes.
pub const CLAIM_NOTICE_NS: u64 = 1_000_000_000;

/// What the ARP/NDP watch saw of other MACs claiming one held VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipClaim {
    /// `bpf_ktime_get_ns()` of the first claim by this MAC.
    pub first_ns: u64,
    /// Of the last claim.
    pub last_ns: u64,
    /// Claims seen (all MACs).
    pub count: u64,
    /// When the daemon was last told.
    pub notified_ns: u64,
    /// The claimer's MAC (ARP's sender hardware address, the Ethernet source for NDP).
    pub mac: [u8; 6],
    /// A `neighbor::ClaimKind`.
    pub kind: u8,
    /// Padding.
    pub _pad: u8,
}

/// A claim pushed to the daemon (rate-limited per VIP, see [`CLAIM_NOTICE_NS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClaimNotice {
    /// `bpf_ktime_get_ns()` at arrival.
    pub ts_ns: u64,
    /// The claimed VIP (see [`addr_key`]).
    pub vip: [u8; 16],
    /// The claimer's MAC.
    pub mac: [u8; 6],
    /// A `neighbor::ClaimKind`.
    pub kind: u8,
    /// Padding.
    pub _pad: u8,
}

/// A held VIP's record after a claim by `mac` at `now` (`prev`: its record, if any), and
/// whether to tell the daemon: the first claim, a new claimer, or [`CLAIM_NOTICE_NS`] since
/// the last notice.
#[inline(always)]
pub fn claim_update(prev: Option<&VipClaim>, mac: [u8; 6], kind: u8, now: u64) -> (VipClaim, bool) {
    let mut next = prev.copied().unwrap_or_default();
    let new_claimer = prev.is_none_or(|p| p.mac != mac);
    if new_claimer {
        next.first_ns = now;
        next.mac = mac;
    }
    let notify = new_claimer || now.saturating_sub(next.notified_ns) >= CLAIM_NOTICE_NS;
    if notify {
        next.notified_ns = now;
    }
    next.last_ns = now;
    next.count = next.count.wrapping_add(1);
    next.kind = kind;
    (next, notify)
}

/// Whether a `FENCE` slot whose deadline is `deadline_ns` (0: never set) is fenced at
/// `now_ns`: its daemon's last word ran out, its peers are taking over.
#[inline(always)]
pub fn fenced(deadline_ns: u64, now_ns: u64) -> bool {
    deadline_ns != 0 && now_ns > deadline_ns
}

/// Most peers the peer table holds.
pub const MAX_PEERS: u32 = 1024;
/// Size of the event ring buffer in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 64 * 1024;

/// What the XDP program needs to know about this node; written once before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// Heartbeats of other clusters are counted and passed.
    pub cluster_id: u32,
    /// Our own node id: heartbeats carrying it are counted (duplicate id or loop).
    pub node_id: u32,
    /// The pool's dead interval, nanoseconds: silence after which a peer heard again is
    /// reported as returned.
    pub dead_ns: u64,
    /// UDP destination port of heartbeats.
    pub port: u16,
    /// How many keys heartbeats may be signed with: 0, no authentication; 1, `auth_key`;
    /// 2, `auth_key` or `auth_next_key` (a key rotation). With a key, heartbeats must carry
    /// a valid MAC trailer (see [`crate::auth`]) and are refused when replayed.
    pub auth: u8,
    /// 1: heartbeats are recorded only from the source addresses in `PEER_ADDRS`.
    pub peer_filter: u8,
    /// 1: this node runs a pool, and UDP to `port` is read as heartbeats; 0: no heartbeats
    /// (VRRP mode), every UDP datagram is other traffic.
    pub heartbeats: u8,
    /// Padding.
    pub _pad: [u8; 3],
    /// The shared SipHash key as (k0, k1), when `auth` is 1 or 2.
    pub auth_key: [u64; 2],
    /// The second accepted key, when `auth` is 2.
    pub auth_next_key: [u64; 2],
}

/// Name of the peers' source addresses: `HashMap<[u8; 16] address, u8>` (see
/// [`addr_key`]), written by the daemon when `peers` are configured.
pub const PEER_ADDRS_MAP: &str = "PEER_ADDRS";
/// Most source addresses `PEER_ADDRS` holds.
pub const MAX_PEER_ADDRS: u32 = 256;

/// An address as a key of `PEER_ADDRS`: IPv6 as is, IPv4 as an IPv4-mapped IPv6 address.
pub const fn addr_key_v4(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// An address as a key of `PEER_ADDRS` (see [`addr_key_v4`]).
pub fn addr_key(a: core::net::IpAddr) -> [u8; 16] {
    match a {
        core::net::IpAddr::V4(v4) => addr_key_v4(v4.octets()),
        core::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// What the XDP program knows about one peer, keyed by node id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerState {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the last heartbeat was accepted.
    pub last_seen_ns: u64,
    /// When this incarnation of the peer was first heard.
    pub first_seen_ns: u64,
    /// The peer's current incarnation.
    pub incarnation: u64,
    /// Sequence number of the last heartbeat.
    pub sequence: u64,
    /// The peer's view digest from its last heartbeat.
    pub view_digest: u64,
    /// Heartbeats accepted from this peer (all incarnations).
    pub received: u64,
    /// Heartbeats missing from the sequence (within one incarnation).
    pub missed: u64,
    /// The `hears` bits of its last heartbeat: which members of its view it heard lately.
    pub hears: u64,
    /// The peer's node id.
    pub node_id: u32,
    /// The peer's heartbeat interval, microseconds.
    pub interval_us: u32,
    /// The peer's placement weight.
    pub weight: u16,
    /// The Ethernet source of its last heartbeat (to tell its ARP/NDP claims).
    pub mac: [u8; 6],
    /// The flags of the last heartbeat (`heartbeat::FLAG_*`).
    pub flags: u8,
    /// Padding.
    pub _pad: [u8; 3],
    /// The peer's dead interval, microseconds (0: it did not say).
    pub dead_us: u32,
}

/// Most VRRP groups: every VRID, for IPv4 and IPv6.
pub const MAX_VRRP_GROUPS: u32 = 512;
/// Size of the VRRP ring buffer in bytes.
pub const VRRP_EVENTS_BYTES: u32 = 16 * 1024;

/// Key of a VRRP group in the maps: the address family (4 or 6) and the VRID.
pub const fn vrrp_key(ipv6: bool, vrid: u8) -> u32 {
    (if ipv6 { 6 << 8 } else { 4 << 8 }) | vrid as u32
}

/// Name of the unicast VRRP peers: `HashMap<VrrpPeer, u8>`, written by the daemon for
/// the groups with `unicast_peers`.
pub const VRRP_PEERS_MAP: &str = "VRRP_PEERS";
/// Most entries `VRRP_PEERS` holds (every group with its most peers).
pub const MAX_VRRP_PEERS: u32 = MAX_VRRP_GROUPS * MAX_VRRP_PEERS_PER_GROUP;
/// Most unicast peers of one group.
pub const MAX_VRRP_PEERS_PER_GROUP: u32 = 8;

/// A key of `VRRP_PEERS`: a group (`vrrp_key`) and a peer's address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VrrpPeer {
    /// The group's `vrrp_key`.
    pub group: u32,
    /// The peer's address (IPv4 in the first four bytes, the rest zero).
    pub addr: [u8; 16],
}

/// `VrrpGroup::state` values.
pub const VRRP_INITIALIZE: u8 = 0;
/// Backup.
pub const VRRP_BACKUP: u8 = 1;
/// Master.
pub const VRRP_MASTER: u8 = 2;

/// A VRRP group this node runs, as the XDP program needs it; the daemon rewrites it on
/// every state change.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VrrpGroup {
    /// Our primary address (IPv4 in the first four bytes), for ties.
    pub primary: [u8; 16],
    /// Our priority.
    pub priority: u8,
    /// 1: Preempt_Mode.
    pub preempt: u8,
    /// `VRRP_INITIALIZE`, `VRRP_BACKUP` or `VRRP_MASTER`.
    pub state: u8,
    /// How many addresses the group has (0: adverts' address lists are not compared).
    pub addr_count: u8,
    /// The interface the group runs on: adverts for its VRID that arrive on another
    /// interface are counted as for an unknown VRID (0: any interface).
    pub ifindex: u32,
    /// `vrrp::addresses_fingerprint` of the group's addresses.
    pub addr_fingerprint: u16,
    /// The VRRP version the group runs (`vrrp::VERSION_3` or `VERSION_2`).
    pub version: u8,
    /// VRRPv2: the Auth Type adverts must carry (`vrrp::AUTH_NONE` or `AUTH_PASS`).
    pub auth_type: u8,
    /// VRRPv2: the advertisement interval adverts must carry, centiseconds.
    pub interval_cs: u16,
    /// 1: unicast VRRP (keepalived's `unicast_peer`): adverts count only from the sources
    /// `VRRP_PEERS` lists for the group, with a TTL / hop limit of at least `min_ttl`.
    /// 0: multicast, where the TTL / hop limit must be 255 (RFC 5798 5.1.1.3).
    pub unicast: u8,
    /// Unicast only: the lowest TTL / hop limit accepted (0: any, as keepalived).
    pub min_ttl: u8,
    /// VRRPv2 with `AUTH_PASS`: the password, zero-padded to 8 bytes.
    pub auth_data: [u8; 8],
}

/// What the XDP program last heard of a group's Master, written only by it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VrrpSeen {
    /// `bpf_ktime_get_ns()` of the last advert that restarts the Master_Down_Timer.
    pub last_seen_ns: u64,
    /// Adverts recorded for this group: those that held us back as Backup or outranked us
    /// as Master (not lower-priority ones a Master or preempting Backup discards).
    pub received: u64,
    /// The Master's address (IPv4 in the first four bytes).
    pub master: [u8; 16],
    /// Its priority.
    pub priority: u8,
    /// Padding.
    pub _pad: u8,
    /// Its advertisement interval, centiseconds.
    pub max_adver_int_cs: u16,
    /// The Ethernet source of its last advert (to tell its ARP/NDP claims).
    pub mac: [u8; 6],
    /// Padding.
    pub _pad2: [u8; 6],
    /// `bpf_ktime_get_ns()` of the last address-list mismatch notice (rate limit).
    pub mismatch_ns: u64,
}

/// An advert that needs the daemon (`vrrp::Notice`), pushed to the VRRP ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VrrpNotice {
    /// `bpf_ktime_get_ns()` at arrival.
    pub ts_ns: u64,
    /// The sender's address (IPv4 in the first four bytes).
    pub source: [u8; 16],
    /// The group's key ([`vrrp_key`]).
    pub key: u32,
    /// A `vrrp::Notice`.
    pub kind: u8,
    /// The advert's priority.
    pub priority: u8,
    /// The advert's interval, centiseconds.
    pub max_adver_int_cs: u16,
}

/// Why the XDP program woke the daemon.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// First heartbeat ever from this node id.
    NewPeer = 1,
    /// The peer's flags changed (LEAVING set, MATURE set, ...).
    FlagsChanged = 2,
    /// The peer restarted: a new incarnation.
    Restarted = 3,
    /// Sequence numbers were skipped.
    SequenceGap = 4,
    /// Heard again after a silence longer than the dead interval.
    Returned = 5,
}

impl EventKind {
    /// Decodes the `kind` byte of a [`PeerEvent`].
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::NewPeer,
            2 => Self::FlagsChanged,
            3 => Self::Restarted,
            4 => Self::SequenceGap,
            5 => Self::Returned,
            _ => return None,
        })
    }
}

/// One state change, pushed to the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerEvent {
    /// `bpf_ktime_get_ns()` of the heartbeat that caused it.
    pub ts_ns: u64,
    /// The peer's incarnation.
    pub incarnation: u64,
    /// The heartbeat's sequence number.
    pub sequence: u64,
    /// The sequence number before it (for gaps and restarts).
    pub prev_sequence: u64,
    /// The peer.
    pub node_id: u32,
    /// An [`EventKind`].
    pub kind: u8,
    /// The heartbeat's flags.
    pub flags: u8,
    /// The flags before it.
    pub prev_flags: u8,
    /// Padding.
    pub _pad: u8,
}

/// What the XDP program does with a frame, by the counter it counts it under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded in a map, then dropped (a heartbeat) or passed up (one with a state
    /// section, for the daemon's socket).
    Record,
    /// Passed to the kernel's stack untouched.
    Pass,
    /// Dropped: refused, so nothing on the host ever reads it.
    Drop,
    /// Not a frame (a lost event).
    None,
}

impl Verdict {
    /// The metric label: `"record"`, `"pass"`, `"drop"`, or `""`.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Record => "record",
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
            Verdict::None => "",
        }
    }
}

/// Declares the counters once: the enum, [`Counter::ALL`], names and metric labels all
/// come from this one list.
macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $variant:ident = $index:literal, $name:literal, $verdict:ident; )*) => {
        /// Indices into the per-CPU counters array.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $( $(#[doc = $doc])* $variant = $index, )*
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant),*];

            /// A short snake_case name for logs, status output and metrics.
            pub fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)*
                }
            }

            /// What the XDP program does with the frames counted here: the one table both
            /// the program and its host model (`cargo xtask fuzz-xdp`) act on.
            pub const fn verdict(self) -> Verdict {
                match self {
                    $(Counter::$variant => Verdict::$verdict,)*
                }
            }
        }
    };
}

counters! {
    /// Heartbeats of our cluster from another node, recorded (dropped, or passed up when
    /// they carry a state section).
    HeartbeatAccepted = 0, "heartbeats_accepted", Record;
    /// Frames to the heartbeat port that are not valid heartbeats, dropped.
    HeartbeatMalformed = 1, "heartbeats_malformed", Drop;
    /// Valid heartbeats of another cluster, dropped.
    ForeignCluster = 2, "foreign_cluster", Drop;
    /// Heartbeats carrying our own node id (a duplicate id on the segment), dropped.
    OwnNodeId = 3, "own_node_id", Drop;
    /// Everything else, passed untouched.
    OtherTraffic = 4, "other_traffic", Pass;
    /// Events lost because a ring buffer was full.
    EventsLost = 5, "events_lost", None;
    /// Heartbeats not recorded because the peer table could not take a new peer, dropped.
    PeerTableFull = 6, "peer_table_full", Drop;
    /// With authentication on: heartbeats without a trailer or with a wrong header MAC,
    /// dropped.
    HeartbeatBadAuth = 7, "heartbeats_bad_auth", Drop;
    /// With authentication on: heartbeats of a known peer older than the last one recorded
    /// (an earlier incarnation, or a sequence not above the last), dropped: a replayed
    /// state section never reaches the daemon either.
    HeartbeatReplayed = 8, "heartbeats_replayed", Drop;
    /// Valid VRRP adverts for one of our groups, listing the group's addresses.
    VrrpAccepted = 9, "vrrp_accepted", Pass;
    /// VRRP adverts for one of our groups whose TTL / hop limit is not 255 (multicast: sent
    /// from off-link) or below the group's `unicast_min_ttl` (unicast). Like every VRRP
    /// refusal below, dropped (nothing on the host reads VRRP).
    VrrpBadTtl = 10, "vrrp_bad_ttl", Drop;
    /// VRRP packets of another version or type, or of another version than the group's.
    VrrpBadVersion = 11, "vrrp_bad_version", Drop;
    /// VRRP adverts that are truncated or have a zero VRID, count or interval.
    VrrpMalformed = 12, "vrrp_malformed", Drop;
    /// VRRP adverts with a wrong checksum.
    VrrpBadChecksum = 13, "vrrp_bad_checksum", Drop;
    /// VRRP adverts for a VRID this node does not run on the interface they came in on.
    VrrpUnknownVrid = 14, "vrrp_unknown_vrid", Pass;
    /// Valid adverts for one of our groups that list other addresses than the group's
    /// (another cluster on the VRID, or differing configurations): logged, still processed
    /// (counted here, not as `vrrp_accepted`).
    VrrpAddrMismatch = 15, "vrrp_addr_mismatch", Pass;
    /// Heartbeats whose TTL / hop limit is not 255 (GTSM, RFC 5082: sent from off-link, or
    /// by a sender that does not set it), dropped (the kernel does not enforce
    /// `IP_MINTTL` on UDP sockets).
    HeartbeatBadTtl = 16, "heartbeats_bad_ttl", Drop;
    /// With `peers` configured: heartbeats from a source address that is not a peer,
    /// dropped.
    HeartbeatUnknownSource = 17, "heartbeats_unknown_source", Drop;
    /// IPv6 VRRP adverts from a source that is not link-local (RFC 5798 5.1.2.1).
    VrrpNotLinkLocal = 18, "vrrp_not_link_local", Drop;
    /// ARP requests and neighbour solicitations for a held VIP dropped because the daemon
    /// made no progress for the dead interval (frozen, hung or dead: self-fencing, while
    /// its peers take the VIPs over).
    NeighborFenced = 19, "neighbor_fenced", Drop;
    /// ARP and NDP packets claiming a held VIP from a MAC that is not this node's (another
    /// owner, or a host configured with it): recorded in `CLAIMS`, told to the daemon.
    NeighborClaim = 20, "neighbor_claims", Pass;
    /// VRRPv2 adverts for one of our groups with another Auth Type or password than the
    /// group's (RFC 3768 7.1).
    VrrpBadAuth = 21, "vrrp_bad_auth", Drop;
    /// VRRPv2 adverts for one of our groups with another advertisement interval than the
    /// group's (RFC 3768 7.1: a misconfiguration; never a Master to follow).
    VrrpBadInterval = 22, "vrrp_bad_interval", Drop;
    /// Unicast VRRP adverts for one of our groups from a source that is not one of its
    /// `unicast_peers`.
    VrrpNotPeer = 23, "vrrp_not_peer", Drop;
}

/// Number of slots in the counters array.
pub const COUNTER_SLOTS: u32 = 32;

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain #[repr(C)] structs of integers with explicit padding: any bit pattern
    // is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for XdpConfig {}
    unsafe impl aya::Pod for PeerState {}
    unsafe impl aya::Pod for PeerEvent {}
    unsafe impl aya::Pod for VrrpGroup {}
    unsafe impl aya::Pod for VrrpSeen {}
    unsafe impl aya::Pod for VrrpPeer {}
    unsafe impl aya::Pod for VrrpNotice {}
    unsafe impl aya::Pod for VipClaim {}
    unsafe impl aya::Pod for ClaimNotice {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn sizes_have_no_implicit_padding() {
        assert_eq!(
            size_of::<XdpConfig>(),
            4 + 4 + 8 + 2 + 1 + 1 + 1 + 3 + 2 * 8 + 2 * 8
        );
        assert_eq!(size_of::<PeerState>(), 8 * 8 + 4 + 4 + 2 + 6 + 1 + 3 + 4);
        assert_eq!(size_of::<PeerEvent>(), 4 * 8 + 4 + 4);
        assert_eq!(size_of::<VrrpGroup>(), 16 + 4 + 4 + 2 + 2 + 2 + 2 + 8);
        assert_eq!(size_of::<VrrpSeen>(), 8 + 8 + 16 + 1 + 1 + 2 + 6 + 6 + 8);
        assert_eq!(size_of::<VipClaim>(), 4 * 8 + 6 + 1 + 1);
        assert_eq!(size_of::<ClaimNotice>(), 8 + 16 + 6 + 1 + 1);
        assert_eq!(size_of::<VrrpNotice>(), 8 + 16 + 4 + 4);
    }

    #[test]
    fn counters_are_in_index_order_and_fit() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{}", c.name());
            assert_eq!(c.verdict() == Verdict::None, c == &Counter::EventsLost);
        }
        assert!(Counter::ALL.len() as u32 <= COUNTER_SLOTS);
    }

    #[test]
    fn claims_are_told_first_on_a_new_claimer_and_then_once_a_second() {
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let (c, told) = claim_update(None, a, 2, 10);
        assert!(told);
        assert_eq!((c.first_ns, c.last_ns, c.count, c.mac), (10, 10, 1, a));
        let (c, told) = claim_update(Some(&c), a, 1, 20);
        assert!(!told);
        assert_eq!((c.first_ns, c.last_ns, c.count, c.kind), (10, 20, 2, 1));
        let (c, told) = claim_update(Some(&c), b, 1, 30);
        assert!(told, "a new claimer is told at once");
        assert_eq!((c.first_ns, c.mac, c.count), (30, b, 3));
        let (c, told) = claim_update(Some(&c), b, 1, 30 + CLAIM_NOTICE_NS - 1);
        assert!(!told);
        let (_, told) = claim_update(Some(&c), b, 1, 30 + CLAIM_NOTICE_NS);
        assert!(told);
    }

    #[test]
    fn event_kinds_round_trip() {
        for k in 1..=5u8 {
            assert_eq!(EventKind::from_u8(k).unwrap() as u8, k);
        }
        assert_eq!(EventKind::from_u8(0), None);
        assert_eq!(EventKind::from_u8(6), None);
    }
}
