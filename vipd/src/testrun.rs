//! The XDP program loaded but never attached, run on frames with BPF_PROG_TEST_RUN: the
//! harness of the differential fuzzer ([`crate::fuzz`]), with its maps readable.

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use vipd_common::maps::{
    CLAIM_EVENTS_MAP, CLAIMS_MAP, CONFIG_MAP, COUNTERS_MAP, Counter, EVENTS_MAP, HELD_MAP,
    OWN_MACS_MAP, PEER_ADDRS_MAP, PEERS_MAP, PeerEvent, PeerState, VRRP_EVENTS_MAP,
    VRRP_GROUPS_MAP, VRRP_PEERS_MAP, VipClaim, VrrpGroup, VrrpPeer, XdpConfig,
};

use crate::{fuzz::frames::Setup, xdp::PROGRAM};

/// The program, loaded with a configuration, peer addresses, VRRP groups, held VIPs and
/// its own MACs.
pub struct Detached {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    vrrp_notices: RingBuf<MapData>,
    claim_notices: RingBuf<MapData>,
}

impl Detached {
    /// Loads the program (needs CAP_BPF) with `setup`'s configuration and map contents.
    pub fn load(setup: &Setup) -> anyhow::Result<Self> {
        let mut ebpf = Ebpf::load(PROGRAM).context("loading the XDP object (needs CAP_BPF)")?;
        let map = ebpf.map_mut(CONFIG_MAP).context("CONFIG")?;
        Array::<_, XdpConfig>::try_from(map)?.set(0, setup.config, 0)?;
        let map = ebpf.map_mut(PEER_ADDRS_MAP).context("PEER_ADDRS")?;
        let mut addrs: HashMap<_, [u8; 16], u8> = HashMap::try_from(map)?;
        for a in &setup.peer_addrs {
            addrs.insert(a, 1, 0)?;
        }
        let map = ebpf.map_mut(VRRP_GROUPS_MAP).context("VRRP_GROUPS")?;
        let mut vrrp: HashMap<_, u32, VrrpGroup> = HashMap::try_from(map)?;
        for (key, group) in &setup.groups {
            vrrp.insert(key, group, 0)?;
        }
        let map = ebpf.map_mut(VRRP_PEERS_MAP).context("VRRP_PEERS")?;
        let mut peers: HashMap<_, VrrpPeer, u8> = HashMap::try_from(map)?;
        for peer in &setup.vrrp_peers {
            peers.insert(peer, 1, 0)?;
        }
        let map = ebpf.map_mut(HELD_MAP).context("HELD")?;
        let mut held: HashMap<_, [u8; 16], u16> = HashMap::try_from(map)?;
        for vip in &setup.held {
            // A VRRP group's slot, never fenced here (its deadline stays 0).
            held.insert(vip, vipd_common::maps::fence_slot_vrrp(false, 1), 0)?;
        }
        let map = ebpf.map_mut(OWN_MACS_MAP).context("OWN_MACS")?;
        let mut own: HashMap<_, [u8; 6], u8> = HashMap::try_from(map)?;
        for mac in &setup.own_macs {
            own.insert(mac, 1, 0)?;
        }
        let p: &mut Xdp = ebpf.program_mut("vipd").context("program")?.try_into()?;
        crate::xdp::load_program(p)?;
        let events = RingBuf::try_from(ebpf.take_map(EVENTS_MAP).context("EVENTS")?)?;
        let vrrp_notices =
            RingBuf::try_from(ebpf.take_map(VRRP_EVENTS_MAP).context("VRRP_EVENTS")?)?;
        let claim_notices =
            RingBuf::try_from(ebpf.take_map(CLAIM_EVENTS_MAP).context("CLAIM_EVENTS")?)?;
        Ok(Self {
            ebpf,
            events,
            vrrp_notices,
            claim_notices,
        })
    }

    /// Runs the program once on `frame`; its verdict (XDP_DROP 1, XDP_PASS 2, …).
    pub fn run(&self, frame: &[u8]) -> anyhow::Result<u32> {
        let p: &Xdp = self.ebpf.program("vipd").context("program")?.try_into()?;
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        })?;
        Ok(r.return_value)
    }

    /// Every counter, summed over CPUs, in `Counter::ALL` order.
    pub fn counters(&self) -> anyhow::Result<Vec<u64>> {
        let map = self.ebpf.map(COUNTERS_MAP).context("COUNTERS")?;
        let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        Counter::ALL
            .iter()
            .map(|c| Ok(counters.get(&(*c as u32), 0)?.iter().sum()))
            .collect()
    }

    /// The peer table's entry for `node_id`.
    pub fn peer(&self, node_id: u32) -> anyhow::Result<Option<PeerState>> {
        let map = self.ebpf.map(PEERS_MAP).context("PEERS")?;
        let peers: HashMap<_, u32, PeerState> = HashMap::try_from(map)?;
        match peers.get(&node_id, 0) {
            Ok(p) => Ok(Some(p)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The `CLAIMS` entry of `vip`.
    pub fn claim(&self, vip: &[u8; 16]) -> anyhow::Result<Option<VipClaim>> {
        let map = self.ebpf.map(CLAIMS_MAP).context("CLAIMS")?;
        let claims: HashMap<_, [u8; 16], VipClaim> = HashMap::try_from(map)?;
        match claims.get(vip, 0) {
            Ok(c) => Ok(Some(c)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// How many claim notices were pushed since the last call.
    pub fn claim_notices(&mut self) -> usize {
        let mut n = 0;
        while self.claim_notices.next().is_some() {
            n += 1;
        }
        n
    }

    /// The events pushed since the last call.
    pub fn events(&mut self) -> Vec<PeerEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            if item.len() >= size_of::<PeerEvent>() {
                // SAFETY: PeerEvent is plain old data and the item holds that many bytes.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
            }
        }
        out
    }

    /// Discards the VRRP notices pushed since the last call (so the ring never fills);
    /// returns how many there were.
    pub fn drain_vrrp_notices(&mut self) -> usize {
        let mut n = 0;
        while self.vrrp_notices.next().is_some() {
            n += 1;
        }
        n
    }
}
