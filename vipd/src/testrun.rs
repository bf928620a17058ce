//! The XDP program loaded but never attached, run on frames with BPF_PROG_TEST_RUN: the
//! harness of the differential fuzzer ([`crate::fuzz`]), with its maps readable.

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use vipd_common::maps::{
    CONFIG_MAP, COUNTERS_MAP, Counter, EVENTS_MAP, PEER_ADDRS_MAP, PEERS_MAP, PeerEvent, PeerState,
    VRRP_EVENTS_MAP, VRRP_GROUPS_MAP, VrrpGroup, XdpConfig,
};

use crate::xdp::PROGRAM;

/// The program, loaded with a configuration, peer addresses and VRRP groups.
pub struct Detached {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    vrrp_notices: RingBuf<MapData>,
}

impl Detached {
    /// Loads the program (needs CAP_BPF) with `config`, the source addresses of
    /// `peer_addrs` and the VRRP `groups` (key, group).
    pub fn load(
        config: XdpConfig,
        peer_addrs: &[[u8; 16]],
        groups: &[(u32, VrrpGroup)],
    ) -> anyhow::Result<Self> {
        let mut ebpf = Ebpf::load(PROGRAM).context("loading the XDP object (needs CAP_BPF)")?;
        let map = ebpf.map_mut(CONFIG_MAP).context("CONFIG")?;
        Array::<_, XdpConfig>::try_from(map)?.set(0, config, 0)?;
        let map = ebpf.map_mut(PEER_ADDRS_MAP).context("PEER_ADDRS")?;
        let mut addrs: HashMap<_, [u8; 16], u8> = HashMap::try_from(map)?;
        for a in peer_addrs {
            addrs.insert(a, 1, 0)?;
        }
        let map = ebpf.map_mut(VRRP_GROUPS_MAP).context("VRRP_GROUPS")?;
        let mut vrrp: HashMap<_, u32, VrrpGroup> = HashMap::try_from(map)?;
        for (key, group) in groups {
            vrrp.insert(key, group, 0)?;
        }
        let p: &mut Xdp = ebpf.program_mut("vipd").context("program")?.try_into()?;
        crate::xdp::load_program(p)?;
        let events = RingBuf::try_from(ebpf.take_map(EVENTS_MAP).context("EVENTS")?)?;
        let vrrp_notices =
            RingBuf::try_from(ebpf.take_map(VRRP_EVENTS_MAP).context("VRRP_EVENTS")?)?;
        Ok(Self {
            ebpf,
            events,
            vrrp_notices,
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
