//! The program's maps, declared with BTF so `bpftool map dump` prints the values' named
//! fields; their layouts and the daemon's view of them are in `vipd_common::maps`.

use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use vipd_common::maps::{
    CLAIM_EVENTS_BYTES, COUNTER_SLOTS, ClaimNotice, EVENTS_BYTES, FENCE_SLOTS, MAX_CLAIMS,
    MAX_HELD, MAX_OWN_MACS, MAX_PEER_ADDRS, MAX_PEERS, MAX_VRRP_GROUPS, MAX_VRRP_PEERS, PeerEvent,
    PeerState, VRRP_EVENTS_BYTES, VipClaim, VrrpGroup, VrrpNotice, VrrpPeer, VrrpSeen, XdpConfig,
};

// LRU: a flood of forged ids evicts the least recently heard entries instead of filling
// the table for good (real peers, heard every interval, stay recent).
#[btf_map]
pub(crate) static PEERS: LruHashMap<u32, PeerState, { MAX_PEERS as usize }> = LruHashMap::new();

#[btf_map]
pub(crate) static PEER_ADDRS: HashMap<[u8; 16], u8, { MAX_PEER_ADDRS as usize }> = HashMap::new();

/// When the program last logged (per CPU): at most one line a second, so a flood of new
/// ids cannot flood the log.
#[btf_map]
pub(crate) static LOGGED_AT: PerCpuArray<u64, 1> = PerCpuArray::new();

#[btf_map]
pub(crate) static COUNTERS: PerCpuArray<u64, { COUNTER_SLOTS as usize }> = PerCpuArray::new();

#[btf_map]
pub(crate) static EVENTS: RingBuf<PeerEvent, { EVENTS_BYTES as usize }> = RingBuf::new();

#[btf_map]
pub(crate) static CONFIG: Array<XdpConfig, 1> = Array::new();

#[btf_map]
pub(crate) static VRRP_GROUPS: HashMap<u32, VrrpGroup, { MAX_VRRP_GROUPS as usize }> =
    HashMap::new();

#[btf_map]
pub(crate) static VRRP_SEEN: HashMap<u32, VrrpSeen, { MAX_VRRP_GROUPS as usize }> = HashMap::new();

/// The unicast groups' peers (see `maps::VRRP_PEERS_MAP`).
#[btf_map]
pub(crate) static VRRP_PEERS: HashMap<VrrpPeer, u8, { MAX_VRRP_PEERS as usize }> = HashMap::new();

#[btf_map]
pub(crate) static VRRP_EVENTS: RingBuf<VrrpNotice, { VRRP_EVENTS_BYTES as usize }> = RingBuf::new();

/// When each slot's daemon's word runs out (see `maps::FENCE_MAP`).
#[btf_map]
pub(crate) static FENCE: Array<u64, { FENCE_SLOTS as usize }> = Array::new();

/// The VIPs this node holds (see `maps::HELD_MAP`).
#[btf_map]
pub(crate) static HELD: HashMap<[u8; 16], u16, { MAX_HELD as usize }> = HashMap::new();

/// This node's MACs (see `maps::OWN_MACS_MAP`).
#[btf_map]
pub(crate) static OWN_MACS: HashMap<[u8; 6], u8, { MAX_OWN_MACS as usize }> = HashMap::new();

/// Other MACs claiming held VIPs (see `maps::CLAIMS_MAP`).
#[btf_map]
pub(crate) static CLAIMS: LruHashMap<[u8; 16], VipClaim, { MAX_CLAIMS as usize }> =
    LruHashMap::new();

#[btf_map]
pub(crate) static CLAIM_EVENTS: RingBuf<ClaimNotice, { CLAIM_EVENTS_BYTES as usize }> =
    RingBuf::new();
