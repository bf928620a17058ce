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
    programs::{Xdp, XdpMode},
};
use tracing::{info, warn};
use vipd_common::maps::{
    CONFIG_MAP, COUNTER_SLOTS, COUNTERS_MAP, Counter, EVENTS_MAP, PEERS_MAP, PeerState,
    VRRP_EVENTS_MAP, VRRP_GROUPS_MAP, VRRP_SEEN_MAP, VrrpGroup, VrrpSeen, XdpConfig,
};

/// The XDP object built by `vipd/build.rs`.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vipd"));

/// bpffs's f_type (`BPF_FS_MAGIC`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// How to attach: `auto` tries native (driver) mode and falls back to generic (skb).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native if the driver supports it, else generic.
    Auto,
    /// Native XDP in the driver only.
    Driver,
    /// Generic XDP in the network stack only.
    Skb,
}

/// The loaded program, attached, with its maps.
pub struct LoadedXdp {
    // Owns the program and its link: dropping it detaches the program.
    _ebpf: Ebpf,
    /// Peer table written by the program.
    pub peers: HashMap<MapData, u32, PeerState>,
    /// Per-CPU counters, indexed by `Counter` (shared with the metrics endpoint).
    pub counters: Arc<Mutex<PerCpuArray<MapData, u64>>>,
    /// The VRRP groups this node runs (VRRP mode), written by the daemon.
    pub vrrp_groups: HashMap<MapData, u32, VrrpGroup>,
    /// What the program last heard of each group's Master.
    pub vrrp_seen: HashMap<MapData, u32, VrrpSeen>,
    /// "driver" or "skb".
    pub mode: &'static str,
    /// Where the maps are pinned.
    pub pin_dir: PathBuf,
}

/// Where and how to load.
pub struct XdpSettings<'a> {
    /// Interface to attach to.
    pub interface: &'a str,
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
    for (name, file) in [
        (PEERS_MAP, "peers"),
        (COUNTERS_MAP, "counters"),
        (EVENTS_MAP, "events"),
        (CONFIG_MAP, "config"),
        (VRRP_GROUPS_MAP, "vrrp_groups"),
        (VRRP_SEEN_MAP, "vrrp_seen"),
        (VRRP_EVENTS_MAP, "vrrp_events"),
    ] {
        let path = settings.pin_dir.join(file);
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
    program
        .load()
        .context("loading the XDP program into the kernel (verifier)")?;
    let mode = attach(program, settings.interface, settings.mode)?;
    info!(interface = settings.interface, mode, pins = %settings.pin_dir.display(), "XDP program attached");

    let peers = HashMap::try_from(ebpf.take_map(PEERS_MAP).context("PEERS")?)?;
    let counters = Arc::new(Mutex::new(PerCpuArray::try_from(
        ebpf.take_map(COUNTERS_MAP).context("COUNTERS")?,
    )?));
    let events = RingBuf::try_from(ebpf.take_map(EVENTS_MAP).context("EVENTS")?)?;
    let vrrp = RingBuf::try_from(ebpf.take_map(VRRP_EVENTS_MAP).context("VRRP_EVENTS")?)?;
    let vrrp_groups = HashMap::try_from(ebpf.take_map(VRRP_GROUPS_MAP).context("VRRP_GROUPS")?)?;
    let vrrp_seen = HashMap::try_from(ebpf.take_map(VRRP_SEEN_MAP).context("VRRP_SEEN")?)?;
    Ok((
        LoadedXdp {
            _ebpf: ebpf,
            peers,
            counters,
            vrrp_groups,
            vrrp_seen,
            mode,
            pin_dir: settings.pin_dir.into(),
        },
        Rings { events, vrrp },
    ))
}

fn attach(program: &mut Xdp, interface: &str, mode: AttachMode) -> anyhow::Result<&'static str> {
    let try_mode = |program: &mut Xdp, m: XdpMode| program.attach(interface, m).map(|_| ());
    match mode {
        AttachMode::Driver => try_mode(program, XdpMode::Driver)
            .with_context(|| format!("attaching XDP to {interface} in driver mode"))
            .map(|()| "driver"),
        AttachMode::Skb => try_mode(program, XdpMode::Skb)
            .with_context(|| format!("attaching XDP to {interface} in generic (skb) mode"))
            .map(|()| "skb"),
        AttachMode::Auto => match try_mode(program, XdpMode::Driver) {
            Ok(()) => Ok("driver"),
            Err(aya::programs::ProgramError::UnknownInterface { name }) => {
                bail!("no interface named {name:?} in this network namespace")
            }
            Err(e) => {
                info!(
                    interface,
                    "native XDP unavailable ({e}); using generic (skb) mode"
                );
                try_mode(program, XdpMode::Skb)
                    .with_context(|| format!("attaching XDP to {interface} (driver and skb mode)"))
                    .map(|()| "skb")
            }
        },
    }
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
    /// A snapshot of the peer table (entries that fail to read are skipped).
    pub fn peer_table(&self) -> Vec<PeerState> {
        self.peers
            .iter()
            .filter_map(Result::ok)
            .map(|(_, v)| v)
            .collect()
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

/// Per-packet cost of the XDP program (BPF_PROG_TEST_RUN, `repeat` runs per frame), for a
/// heartbeat, a VRRP advert, an ARP request and a TCP segment, and of an empty XDP_PASS
/// program as the baseline. Loads the programs without attaching them. Returns
/// (frame, verdict, ns per packet).
pub fn bench(repeat: u32) -> anyhow::Result<Vec<(&'static str, u32, f64)>> {
    use aya::programs::{TestRun as _, TestRunOptions};
    use vipd_common::heartbeat::DEFAULT_PORT;
    let mut ebpf = Ebpf::load(PROGRAM).context("loading the XDP object (needs CAP_BPF)")?;
    {
        let map = ebpf.map_mut(CONFIG_MAP).context("CONFIG map missing")?;
        let mut config: Array<_, XdpConfig> = Array::try_from(map)?;
        let cfg = XdpConfig {
            cluster_id: 1,
            node_id: 1,
            dead_ns: 300_000_000,
            port: DEFAULT_PORT,
            _pad: [0; 6],
        };
        config.set(0, cfg, 0)?;
        // A Backup of VRID 51 (IPv4) at priority 100: the bench's advert, at priority 200,
        // holds it back (validated, checksummed, recorded, no notice after the first).
        let map = ebpf
            .map_mut(VRRP_GROUPS_MAP)
            .context("VRRP_GROUPS map missing")?;
        let mut groups: HashMap<_, u32, VrrpGroup> = HashMap::try_from(map)?;
        let group = VrrpGroup {
            priority: 100,
            preempt: 1,
            state: vipd_common::maps::VRRP_BACKUP,
            ..VrrpGroup::default()
        };
        groups.insert(vipd_common::maps::vrrp_key(false, 51), group, 0)?;
    }
    for name in ["vipd", "vipd_pass"] {
        let p: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name}"))?
            .try_into()?;
        p.load().with_context(|| format!("loading {name}"))?;
    }
    let frames = bench_frames();
    let mut out = Vec::new();
    for (program, label, frame) in [
        ("vipd_pass", "baseline: empty XDP_PASS program", &frames[0]),
        ("vipd", "vipd heartbeat (recorded, dropped)", &frames[0]),
        (
            "vipd",
            "VRRP advert of our group (checked, recorded, passed)",
            &frames[1],
        ),
        ("vipd", "VRRP advert, other VRID (passed)", &frames[4]),
        ("vipd", "ARP request (passed)", &frames[2]),
        ("vipd", "unrelated TCP segment (passed)", &frames[3]),
    ] {
        let p: &Xdp = ebpf.program(program).context("program")?.try_into()?;
        // One warm-up run (it creates the peer entry), then the measured runs.
        p.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..TestRunOptions::new()
        })?;
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        })?;
        out.push((label, r.return_value, r.duration.as_nanos() as f64));
    }
    Ok(out)
}

/// Test frames: a heartbeat from node 2 of cluster 1, a VRRPv3 advert for VRID 51, an ARP
/// request, a TCP SYN, an advert for VRID 52 (all padded to Ethernet's minimum).
fn bench_frames() -> [Vec<u8>; 5] {
    use vipd_common::heartbeat::{DEFAULT_PORT, Heartbeat};
    let eth = |ethertype: u16| {
        let mut f = vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    };
    let ipv4 = |proto: u8, payload_len: usize| {
        let total = (20 + payload_len) as u16;
        let mut h = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 192, 0, 2, 12, 224, 0, 0, 199,
        ];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h
    };
    let hb = Heartbeat {
        cluster_id: 1,
        node_id: 2,
        incarnation: 7,
        sequence: 1,
        interval_us: 100_000,
        weight: 1,
        ..Heartbeat::default()
    }
    .to_bytes();
    let mut heartbeat = eth(0x0800);
    heartbeat.extend(ipv4(17, 8 + hb.len()));
    heartbeat.extend_from_slice(&DEFAULT_PORT.to_be_bytes());
    heartbeat.extend_from_slice(&DEFAULT_PORT.to_be_bytes());
    heartbeat.extend_from_slice(&((8 + hb.len()) as u16).to_be_bytes());
    heartbeat.extend_from_slice(&[0, 0]);
    heartbeat.extend_from_slice(&hb);
    let vrrp_frame = |vrid: u8| {
        let vips = ["192.0.2.200".parse().expect("address")];
        crate::vrrp::advert::frame(
            [2, 0, 0, 0, 0, 2],
            &crate::vrrp::advert::AdvertSpec {
                vrid,
                priority: 200,
                interval_cs: 100,
                source: "192.0.2.12".parse().expect("address"),
                vips: &vips,
            },
        )
        .0
    };
    let (vrrp, other_vrid) = (vrrp_frame(51), vrrp_frame(52));
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 192, 0, 2, 12, 0, 0, 0, 0, 0, 0, 192, 0, 2, 200,
    ]);
    let mut tcp = eth(0x0800);
    tcp.extend(ipv4(6, 20));
    tcp.extend_from_slice(&[
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    [heartbeat, vrrp, arp, tcp, other_vrid].map(|mut f| {
        f.resize(f.len().max(60), 0);
        f
    })
}
