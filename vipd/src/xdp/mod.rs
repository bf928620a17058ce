//! Loading the XDP program, attaching it, and pinning its maps under bpffs.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLinkId,
    },
};
use tracing::{info, warn};
use vipd_common::maps::{
    CLAIM_EVENTS_MAP, CONFIG_MAP, COUNTER_SLOTS, COUNTERS_MAP, Counter, EVENTS_MAP, FENCE_MAP,
    HELD_MAP, OWN_MACS_MAP, PEER_ADDRS_MAP, PEERS_MAP, PINNED_MAPS, PeerState, VRRP_EVENTS_MAP,
    VRRP_GROUPS_MAP, VRRP_PEERS_MAP, VRRP_SEEN_MAP, VrrpGroup, VrrpPeer, VrrpSeen, XdpConfig,
    addr_key,
};

mod cost;

pub use cost::bench;

/// The XDP object built by `vipd/build.rs`.
pub(crate) static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vipd"));

/// bpffs's f_type (`BPF_FS_MAGIC`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

pub use crate::config::AttachMode;

/// The loaded program, attached, with its maps.
pub struct LoadedXdp {
    // Owns the program.
    _ebpf: Ebpf,
    /// The program's links, pinned (`link-<interface>`): the program stays attached if the
    /// daemon dies, so its node stays fenced; a clean stop removes the pins, and dropping
    /// these detaches it.
    _links: Vec<PinnedLink>,
    /// Peer table written by the program.
    pub peers: HashMap<MapData, u32, PeerState>,
    /// The source addresses heartbeats are recorded from, with `peers` configured.
    peer_addrs: HashMap<MapData, [u8; 16], u8>,
    /// The program's configuration (rewritten by a reload that changes the keys).
    config: Array<MapData, XdpConfig>,
    /// Per-CPU counters, indexed by `Counter` (shared with the metrics endpoint).
    pub counters: Arc<Mutex<PerCpuArray<MapData, u64>>>,
    /// The VRRP groups this node runs (VRRP mode), written by the daemon.
    pub vrrp_groups: HashMap<MapData, u32, VrrpGroup>,
    /// What the program last heard of each group's Master.
    pub vrrp_seen: HashMap<MapData, u32, VrrpSeen>,
    /// The unicast groups' peers.
    vrrp_peers: HashMap<MapData, VrrpPeer, u8>,
    /// The VIPs this node holds, for self-fencing and the ARP/NDP watch.
    held: HashMap<MapData, [u8; 16], u16>,
    /// This node's MACs: their ARP/NDP claims are not conflicts.
    own_macs: HashMap<MapData, [u8; 6], u8>,
    /// "driver" or "skb".
    pub mode: &'static str,
    /// Where the maps are pinned.
    pub pin_dir: PathBuf,
}

/// Where and how to load.
pub struct XdpSettings<'a> {
    /// Interface to attach to.
    pub interface: &'a str,
    /// More interfaces to attach the same program to (VRRP groups elsewhere).
    pub also: &'a [String],
    /// Attach mode.
    pub mode: AttachMode,
    /// Per-instance pin directory, e.g. `/sys/fs/bpf/vipd/eth0-1`.
    pub pin_dir: &'a Path,
    /// Written to the program's CONFIG map before attaching.
    pub config: XdpConfig,
}

/// The program's ring buffers, each polled on its own.
pub struct Rings {
    /// Peer state changes (pool mode).
    pub events: RingBuf<MapData>,
    /// VRRP adverts that need the daemon (VRRP mode).
    pub vrrp: RingBuf<MapData>,
    /// Other MACs claiming held VIPs (the ARP/NDP watch).
    pub claims: RingBuf<MapData>,
}

/// Loads, configures, attaches and pins; replaces stale pins of the same instance.
pub fn load(settings: &XdpSettings<'_>) -> anyhow::Result<(LoadedXdp, Rings)> {
    prepare_pin_dir(settings.pin_dir)?;
    let mut ebpf = Ebpf::load(PROGRAM).context(
        "loading the XDP program (needs CAP_BPF and CAP_NET_ADMIN, and a kernel with BTF)",
    )?;
    match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => spawn_log_reader(logger),
        Err(e) => warn!("XDP program logs unavailable: {e}"),
    }
    {
        let map = ebpf
            .map_mut(CONFIG_MAP)
            .context("CONFIG map missing from the object")?;
        let mut config: Array<_, XdpConfig> = Array::try_from(map)?;
        config
            .set(0, settings.config, 0)
            .context("writing the XDP CONFIG map")?;
    }
    for name in PINNED_MAPS {
        let path = settings.pin_dir.join(pin_file(name));
        let map = ebpf
            .map(name)
            .with_context(|| format!("{name} map missing from the object"))?;
        map.pin(&path)
            .with_context(|| format!("pinning {name} at {}", path.display()))?;
    }
    let program: &mut Xdp = ebpf
        .program_mut("vipd")
        .context("program `vipd` missing from the object")?
        .try_into()?;
    load_program(program)?;
    let mut links = Vec::new();
    let mut mode = "";
    let interfaces = std::iter::once(settings.interface)
        .chain(settings.also.iter().map(String::as_str))
        .enumerate()
        .filter(|(i, name)| *i == 0 || *name != settings.interface);
    for (i, interface) in interfaces {
        let (m, id) = attach(program, interface, settings.mode, settings.pin_dir)?;
        if i == 0 {
            mode = m;
        }
        info!(interface, mode = m, pins = %settings.pin_dir.display(), "XDP program attached");
        links.extend(pin_link(
            program,
            id,
            &settings.pin_dir.join(link_pin(interface)),
        ));
    }

    let peers = HashMap::try_from(ebpf.take_map(PEERS_MAP).context("PEERS")?)?;
    let peer_addrs = HashMap::try_from(ebpf.take_map(PEER_ADDRS_MAP).context("PEER_ADDRS")?)?;
    let config = Array::try_from(ebpf.take_map(CONFIG_MAP).context("CONFIG")?)?;
    let counters = Arc::new(Mutex::new(PerCpuArray::try_from(
        ebpf.take_map(COUNTERS_MAP).context("COUNTERS")?,
    )?));
    let events = RingBuf::try_from(ebpf.take_map(EVENTS_MAP).context("EVENTS")?)?;
    let vrrp = RingBuf::try_from(ebpf.take_map(VRRP_EVENTS_MAP).context("VRRP_EVENTS")?)?;
    let vrrp_groups = HashMap::try_from(ebpf.take_map(VRRP_GROUPS_MAP).context("VRRP_GROUPS")?)?;
    let vrrp_seen = HashMap::try_from(ebpf.take_map(VRRP_SEEN_MAP).context("VRRP_SEEN")?)?;
    let vrrp_peers = HashMap::try_from(ebpf.take_map(VRRP_PEERS_MAP).context("VRRP_PEERS")?)?;
    let held = HashMap::try_from(ebpf.take_map(HELD_MAP).context("HELD")?)?;
    let own_macs = HashMap::try_from(ebpf.take_map(OWN_MACS_MAP).context("OWN_MACS")?)?;
    let claims = RingBuf::try_from(ebpf.take_map(CLAIM_EVENTS_MAP).context("CLAIM_EVENTS")?)?;
    Ok((
        LoadedXdp {
            _ebpf: ebpf,
            _links: links,
            peers,
            peer_addrs,
            config,
            counters,
            vrrp_groups,
            vrrp_seen,
            vrrp_peers,
            held,
            own_macs,
            mode,
            pin_dir: settings.pin_dir.into(),
        },
        Rings {
            events,
            vrrp,
            claims,
        },
    ))
}

/// Loads `program` into the kernel, trying again a few times when BPF_PROG_LOAD answers
/// EAGAIN (as libbpf does: the kernel says so when the verifier is interrupted, e.g. with
/// many programs loading at once).
pub(crate) fn load_program(program: &mut Xdp) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match program.load() {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 && is_eagain(&e) => {
                std::thread::sleep(std::time::Duration::from_millis(20 * u64::from(attempt)));
            }
            Err(e) => {
                return Err(e).context("loading the XDP program into the kernel (verifier)");
            }
        }
    }
}

/// Whether EAGAIN is somewhere in `error`'s chain.
fn is_eagain(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut e = Some(error);
    while let Some(err) = e {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EAGAIN))
        {
            return true;
        }
        e = err.source();
    }
    false
}

/// The pin of the program's link on `interface`, in the instance's pin directory.
fn link_pin(interface: &str) -> String {
    format!("link-{interface}")
}

/// Pins the link `id` of `program` at `path`, so the program outlives the daemon (a dead
/// daemon's node stays fenced). Without bpf_link (kernels before 5.9: a netlink attach)
/// the program goes with the process: said once, not an error.
fn pin_link(program: &mut Xdp, id: XdpLinkId, path: &Path) -> Option<PinnedLink> {
    let link = match program.take_link(id) {
        Ok(link) => link,
        Err(e) => {
            warn!("taking the XDP link to pin it: {e}");
            return None;
        }
    };
    let pinned = FdLink::try_from(link)
        .map_err(|e| e.to_string())
        .and_then(|fd| fd.pin(path).map_err(|e| e.to_string()));
    match pinned {
        Ok(p) => Some(p),
        Err(e) => {
            warn!(
                "the XDP program cannot outlive this daemon ({e}): if it crashes, its node \
                 keeps answering for its VIPs until it is restarted"
            );
            None
        }
    }
}

/// What to say when attaching to `interface` fails: another program may be attached, a
/// dead vipd's link among them (pins are per instance; interface names are per network
/// namespace, so this daemon cannot tell whose they are).
fn busy_hint(pin_dir: &Path, interface: &str) -> String {
    let own = pin_dir.join(link_pin(interface));
    let pins: Vec<String> = pin_dir
        .parent()
        .and_then(|root| fs::read_dir(root).ok())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|d| d.path().join(link_pin(interface)))
        .filter(|p| *p != own && p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if pins.is_empty() {
        "(is another XDP program attached? `ip link show` names it)".into()
    } else {
        format!(
            "(is another XDP program attached? `ip link show` names it; a vipd of another \
             instance that died leaves its link pinned — remove it if that one is dead: {})",
            pins.join(", ")
        )
    }
}

fn attach(
    program: &mut Xdp,
    interface: &str,
    mode: AttachMode,
    pin_dir: &Path,
) -> anyhow::Result<(&'static str, XdpLinkId)> {
    let busy = busy_hint(pin_dir, interface);
    match mode {
        AttachMode::Driver => program
            .attach(interface, XdpMode::Driver)
            .with_context(|| format!("attaching XDP to {interface} in driver mode {busy}"))
            .map(|id| ("driver", id)),
        AttachMode::Skb => program
            .attach(interface, XdpMode::Skb)
            .with_context(|| format!("attaching XDP to {interface} in generic (skb) mode {busy}"))
            .map(|id| ("skb", id)),
        AttachMode::Auto => match program.attach(interface, XdpMode::Driver) {
            Ok(id) => Ok(("driver", id)),
            Err(aya::programs::ProgramError::UnknownInterface { name }) => {
                bail!("no interface named {name:?} in this network namespace")
            }
            Err(e) => {
                info!(
                    interface,
                    "native XDP unavailable ({e}); using generic (skb) mode"
                );
                program
                    .attach(interface, XdpMode::Skb)
                    .with_context(|| {
                        format!("attaching XDP to {interface} (driver and skb mode) {busy}")
                    })
                    .map(|id| ("skb", id))
            }
        },
    }
}

/// The file map `name` is pinned as in an instance's directory: the name in lower case.
pub fn pin_file(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Mounts bpffs on /sys/fs/bpf if needed, and empties the instance's pin directory.
fn prepare_pin_dir(pin_dir: &Path) -> anyhow::Result<()> {
    let bpffs = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(bpffs) && fs_type(bpffs)? != BPF_FS_MAGIC {
        mount_bpffs(bpffs)?;
    }
    fs::create_dir_all(pin_dir).with_context(|| format!("creating {}", pin_dir.display()))?;
    if fs_type(pin_dir)? != BPF_FS_MAGIC {
        bail!(
            "{} is not on a bpf filesystem (mount -t bpf bpf <dir>)",
            pin_dir.display()
        );
    }
    let mut stale = Vec::new();
    for entry in fs::read_dir(pin_dir).with_context(|| format!("reading {}", pin_dir.display()))? {
        let path = entry?.path();
        fs::remove_file(&path).with_context(|| format!("removing stale pin {}", path.display()))?;
        stale.push(path);
    }
    if !stale.is_empty() {
        warn!(pins = ?stale, "replaced pinned maps left by an earlier run of this instance");
    }
    fs::set_permissions(pin_dir, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// The VIPs an instance's pinned `held` map lists (what its last run held, when that run
/// crashed), read before the pins are replaced.
pub fn pinned_held(pin_dir: &Path) -> anyhow::Result<Vec<std::net::IpAddr>> {
    let path = pin_dir.join(pin_file(HELD_MAP));
    let open = || MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()));
    // The slot was a u8 before per-group VRRP fencing: a crashed older daemon's pin.
    let keys: Vec<[u8; 16]> =
        match HashMap::<_, [u8; 16], u16>::try_from(aya::maps::Map::HashMap(open()?)) {
            Ok(held) => held.keys().filter_map(Result::ok).collect(),
            Err(_) => HashMap::<_, [u8; 16], u8>::try_from(aya::maps::Map::HashMap(open()?))?
                .keys()
                .filter_map(Result::ok)
                .collect(),
        };
    Ok(keys
        .into_iter()
        .map(|key| std::net::IpAddr::V6(key.into()).to_canonical())
        .collect())
}

/// Removes the instance's pins (on a clean exit).
pub fn remove_pins(pin_dir: &Path) {
    if let Err(e) = fs::remove_dir_all(pin_dir) {
        warn!("removing {}: {e}", pin_dir.display());
    }
}

fn fs_type(path: &Path) -> anyhow::Result<i64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs is plain data; zeroed is valid, and c is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs({})", path.display()));
    }
    Ok(st.f_type as i64)
}

fn mount_bpffs(at: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(at).with_context(|| format!("creating {}", at.display()))?;
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mount -t bpf bpf {} (bpffs unavailable)", at.display()));
    }
    info!("mounted bpffs on {}", at.display());
    Ok(())
}

fn spawn_log_reader(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer's fd and moves into the AsyncFd.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let Ok(mut fd) = registered else {
        warn!("XDP program logs unavailable: cannot poll the log ring buffer");
        return;
    };
    tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

impl LoadedXdp {
    /// A second handle on the peer table, from its pin (for the fast path's thread).
    pub fn open_peers(&self) -> anyhow::Result<HashMap<MapData, u32, PeerState>> {
        self.open_pinned(PEERS_MAP, aya::maps::Map::LruHashMap)
    }

    /// A handle on the self-fencing clock, from its pin (for the fast path's thread, which
    /// writes its progress there).
    pub fn open_fence(&self) -> anyhow::Result<Array<MapData, u64>> {
        let path = self.pin_dir.join(pin_file(FENCE_MAP));
        let data = MapData::from_pin(&path)
            .with_context(|| format!("opening the pinned map {}", path.display()))?;
        Ok(Array::try_from(aya::maps::Map::Array(data))?)
    }

    /// Records that this node holds `vip` under the fencing slot `by` (`FENCE_POOL`, a
    /// group's `fence_slot_vrrp`; `None`: no longer holds it): once that slot's deadline
    /// has passed the program drops ARP requests and solicitations for it.
    pub fn set_held(&mut self, vip: std::net::IpAddr, by: Option<u16>) {
        let key = addr_key(vip);
        let r = match by {
            Some(slot) => self.held.insert(key, slot, 0),
            None => self.held.remove(&key),
        };
        if let Err(e) = r
            && by.is_some()
        {
            warn!(%vip, "recording a held VIP for self-fencing: {e}");
        }
    }

    /// Adds `mac` to this node's MACs (an interface's, a VRRP virtual MAC): ARP and NDP
    /// from it never count as another host claiming a held VIP.
    pub fn add_own_mac(&mut self, mac: [u8; 6]) -> anyhow::Result<()> {
        self.own_macs
            .insert(mac, 1, 0)
            .context("writing the OWN_MACS map")
    }

    /// Rewrites the program's configuration (it applies from the next frame).
    pub fn set_config(&mut self, config: XdpConfig) -> anyhow::Result<()> {
        self.config
            .set(0, config, 0)
            .context("writing the XDP CONFIG map")
    }

    /// Makes `PEER_ADDRS` hold exactly `addrs` (the configured peers): heartbeats from
    /// other sources are then counted and never recorded (when `XdpConfig::peer_filter`).
    pub fn set_peer_addrs(&mut self, addrs: &[std::net::IpAddr]) -> anyhow::Result<()> {
        let keep: std::collections::BTreeSet<[u8; 16]> =
            addrs.iter().map(|a| addr_key(*a)).collect();
        for key in &keep {
            self.peer_addrs
                .insert(key, 1, 0)
                .context("writing the PEER_ADDRS map")?;
        }
        let stale: Vec<[u8; 16]> = self
            .peer_addrs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep.contains(k))
            .collect();
        for key in stale {
            self.peer_addrs
                .remove(&key)
                .context("updating the PEER_ADDRS map")?;
        }
        Ok(())
    }

    /// Makes `VRRP_PEERS` hold exactly `peers` (addresses as the map keeps them: IPv4 in
    /// the first four bytes) for group `group` (a `vrrp_key`): its unicast adverts then
    /// count only from them.
    pub fn set_vrrp_peers(&mut self, group: u32, peers: &[[u8; 16]]) -> anyhow::Result<()> {
        let keep: Vec<VrrpPeer> = peers.iter().map(|&addr| VrrpPeer { group, addr }).collect();
        let stale: Vec<VrrpPeer> = self
            .vrrp_peers
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.group == group && !keep.contains(k))
            .collect();
        for k in stale {
            self.vrrp_peers
                .remove(&k)
                .context("updating the VRRP_PEERS map")?;
        }
        for k in keep {
            self.vrrp_peers
                .insert(k, 1, 0)
                .context("writing the VRRP_PEERS map")?;
        }
        Ok(())
    }

    /// A second handle on VRRP_GROUPS, from its pin (for the fast path's thread).
    pub fn open_vrrp_groups(&self) -> anyhow::Result<HashMap<MapData, u32, VrrpGroup>> {
        self.open_pinned(VRRP_GROUPS_MAP, aya::maps::Map::HashMap)
    }

    /// A second handle on VRRP_SEEN, from its pin (for the fast path's thread).
    pub fn open_vrrp_seen(&self) -> anyhow::Result<HashMap<MapData, u32, VrrpSeen>> {
        self.open_pinned(VRRP_SEEN_MAP, aya::maps::Map::HashMap)
    }

    fn open_pinned<V: aya::Pod>(
        &self,
        map: &str,
        kind: fn(MapData) -> aya::maps::Map,
    ) -> anyhow::Result<HashMap<MapData, u32, V>> {
        let path = self.pin_dir.join(pin_file(map));
        let data = MapData::from_pin(&path)
            .with_context(|| format!("opening the pinned map {}", path.display()))?;
        Ok(HashMap::try_from(kind(data))?)
    }

    /// Each counter summed over CPUs.
    pub fn counters(&self) -> Vec<(Counter, u64)> {
        sum_counters(&self.counters)
    }
}

/// Each counter of a per-CPU counters map, summed over CPUs.
pub fn sum_counters(counters: &Mutex<PerCpuArray<MapData, u64>>) -> Vec<(Counter, u64)> {
    let counters = counters.lock().unwrap_or_else(|e| e.into_inner());
    Counter::ALL
        .iter()
        .filter(|c| (**c as u32) < COUNTER_SLOTS)
        .map(|&c| {
            (
                c,
                counters.get(&(c as u32), 0).map_or(0, |v| v.iter().sum()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use aya::programs::{TestRun as _, TestRunOptions};
    use vipd_common::{
        auth::{AUTH_LEN, Key, sign},
        heartbeat::{HEADER_LEN, Heartbeat, State},
    };

    use super::*;

    const PASS: u32 = 2;
    const DROP: u32 = 1;

    /// The program loaded (never attached) with authentication on (needs root).
    fn load_with_auth(key: Key) -> Ebpf {
        vipd_lab::lab::require_root();
        let mut ebpf = Ebpf::load(PROGRAM).expect("loading the object");
        let map = ebpf.map_mut(CONFIG_MAP).expect("CONFIG");
        let mut config: Array<_, XdpConfig> = Array::try_from(map).expect("CONFIG array");
        config
            .set(0, cost::node_1_config(Some(key)), 0)
            .expect("writing CONFIG");
        let p: &mut Xdp = ebpf
            .program_mut("vipd")
            .expect("program")
            .try_into()
            .expect("xdp");
        p.load().expect("the verifier accepts the program");
        ebpf
    }

    fn verdict(ebpf: &Ebpf, frame: &[u8]) -> u32 {
        let p: &Xdp = ebpf.program("vipd").unwrap().try_into().unwrap();
        p.test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        })
        .expect("test run")
        .return_value
    }

    fn counter(ebpf: &Ebpf, c: Counter) -> u64 {
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(ebpf.map(COUNTERS_MAP).unwrap()).unwrap();
        counters.get(&(c as u32), 0).unwrap().iter().sum()
    }

    fn recorded(ebpf: &Ebpf, node: u32) -> Option<PeerState> {
        let peers: HashMap<_, u32, PeerState> =
            HashMap::try_from(ebpf.map(PEERS_MAP).unwrap()).unwrap();
        peers.get(&node, 0).ok()
    }

    /// A heartbeat frame from `node`, with a 1-VIP state section if `state`, signed with
    /// `key` (None: no trailer).
    fn frame(key: Option<Key>, node: u32, incarnation: u64, sequence: u64, state: bool) -> Vec<u8> {
        let state_len = if state { State::len_for(1, 0) } else { 0 };
        let hb = Heartbeat {
            cluster_id: 1,
            node_id: node,
            incarnation,
            sequence,
            interval_us: 100_000,
            weight: 1,
            auth_len: if key.is_some() { AUTH_LEN as u16 } else { 0 },
            state_len: state_len as u16,
            ..Heartbeat::default()
        };
        let mut payload = hb.to_bytes().to_vec();
        payload.resize(HEADER_LEN + state_len, 0);
        if state {
            State::write(&mut payload[HEADER_LEN..], 7, 1, |_| true, &[]);
        }
        if let Some(key) = key {
            let trailer = sign(key, &payload);
            payload.extend_from_slice(&trailer);
        }
        cost::heartbeat_frame(&payload)
    }

    #[test]
    #[ignore = "needs root (XDP): run as root with `cargo test -- --include-ignored`"]
    fn with_auth_only_authentic_fresh_heartbeats_are_recorded() {
        let key = Key::from_bytes(*b"0123456789abcdef");
        let ebpf = load_with_auth(key);
        let bad = |n| (counter(&ebpf, Counter::HeartbeatBadAuth), n);
        // No trailer, another key, a changed header: refused, dropped, never recorded.
        assert_eq!(verdict(&ebpf, &frame(None, 2, 10, 1, false)), DROP);
        let other = Key::from_bytes([0x55; 16]);
        assert_eq!(verdict(&ebpf, &frame(Some(other), 2, 10, 1, false)), DROP);
        let mut changed = frame(Some(key), 2, 10, 1, false);
        changed[14 + 20 + 8 + 37] ^= 1; // the weight's low byte
        assert_eq!(verdict(&ebpf, &changed), DROP);
        // The trailer announced but cut off by the end of the frame (the UDP length
        // claims it): refused.
        let mut cut = frame(Some(key), 2, 10, 1, true);
        let udp_end = 14 + 20 + 8 + HEADER_LEN + State::len_for(1, 0);
        cut.truncate(udp_end + 4);
        assert_eq!(verdict(&ebpf, &cut), DROP);
        assert_eq!(bad(4), (4, 4));
        assert_eq!(recorded(&ebpf, 2), None);

        // Authentic but from off the link (TTL below 255): refused before the MAC is checked.
        let mut routed = frame(Some(key), 2, 10, 5, false);
        routed[14 + 8] = 254;
        assert_eq!(verdict(&ebpf, &routed), DROP);
        assert_eq!(counter(&ebpf, Counter::HeartbeatBadTtl), 1);
        assert_eq!(bad(4), (4, 4));
        assert_eq!(recorded(&ebpf, 2), None);

        // Authentic: recorded (and dropped, no state section).
        assert_eq!(verdict(&ebpf, &frame(Some(key), 2, 10, 5, false)), DROP);
        assert_eq!(recorded(&ebpf, 2).map(|p| p.sequence), Some(5));
        // Replays: the same sequence, an older one, an older incarnation; dropped, with a
        // state section too (the daemon's socket never sees a replay).
        for (incarnation, sequence, state) in [(10, 5, false), (10, 4, true), (9, 100, false)] {
            assert_eq!(
                verdict(&ebpf, &frame(Some(key), 2, incarnation, sequence, state)),
                DROP
            );
        }
        assert_eq!(counter(&ebpf, Counter::HeartbeatReplayed), 3);
        let peer = recorded(&ebpf, 2).unwrap();
        assert_eq!((peer.incarnation, peer.sequence, peer.received), (10, 5, 1));
        // Newer ones are recorded: a later sequence (with a state section: passed up), then
        // a new incarnation starting again at 1.
        assert_eq!(verdict(&ebpf, &frame(Some(key), 2, 10, 6, true)), PASS);
        assert_eq!(verdict(&ebpf, &frame(Some(key), 2, 11, 1, false)), DROP);
        let peer = recorded(&ebpf, 2).unwrap();
        assert_eq!((peer.incarnation, peer.sequence, peer.received), (11, 1, 3));
        assert_eq!(counter(&ebpf, Counter::HeartbeatAccepted), 3);
        assert_eq!(bad(4), (4, 4));
        // Our own id with a wrong MAC counts as bad auth, not as a duplicate id.
        assert_eq!(verdict(&ebpf, &frame(Some(other), 1, 1, 1, false)), DROP);
        assert_eq!(counter(&ebpf, Counter::OwnNodeId), 0);
        assert_eq!(bad(5), (5, 5));
    }
}
