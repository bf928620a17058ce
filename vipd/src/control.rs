//! The control socket (`/run/vipd/<instance>.sock`, root only), `vipd status` and `vipd
//! drain`.
//!
//! A connection asks one [`Request`] and the daemon answers one JSON [`Status`]. When no
//! daemon answers, `vipd status` falls back to the pinned maps, which outlive a crashed
//! daemon.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::{
    cli::{DrainArgs, StatusArgs, Target},
    config::File,
};

/// What a control connection asks (one line; anything else, or nothing within a second,
/// is a status request): each is answered with the status, after the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Status,
    Drain,
    Undrain,
}

impl Request {
    /// The drain state it asks for, if any.
    pub fn drained(self) -> Option<bool> {
        match self {
            Self::Status => None,
            Self::Drain => Some(true),
            Self::Undrain => Some(false),
        }
    }

    /// The line that asks it.
    pub fn line(self) -> &'static [u8] {
        match self {
            Self::Status => b"status\n",
            Self::Drain => b"drain\n",
            Self::Undrain => b"undrain\n",
        }
    }
}

/// Directory of control sockets.
pub const RUN_DIR: &str = "/run/vipd";

/// The control socket of an instance.
pub fn socket_path(instance: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{instance}.sock"))
}

/// What a running node reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    /// This node.
    pub node_id: u32,
    /// Instance name.
    pub instance: String,
    /// Cluster interface.
    pub interface: String,
    /// "driver" or "skb".
    pub xdp_mode: String,
    /// Whether heartbeats and adverts are exempt from connection tracking: "exempt
    /// (nftables table …)" or "tracked (why)".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub conntrack: String,
    /// Heartbeat authentication (pool mode): "key", "key (rotating: two keys accepted)",
    /// or "off (INSECURE: …)".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth: String,
    /// Drained by `vipd drain`: out of the pool and the groups until `vipd undrain`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drained: bool,
    /// active, holding-down, withdrawn (health checks), fault (no carrier), degraded
    /// (VRRP mode: some of its interfaces without carrier, see `carrier`).
    pub state: String,
    /// VRRP mode: whether each interface the groups run on has carrier (the groups on
    /// one without it are out, like keepalived's FAULT state).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub carrier: BTreeMap<String, bool>,
    /// Pool mode: this node's dead interval (ms).
    #[serde(default)]
    pub dead_interval_ms: f64,
    /// The view: node ids VIPs are placed on.
    pub view: Vec<u32>,
    /// Whether every member's view digest equals ours (pool mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub views_agree: Option<bool>,
    /// The peers heard.
    pub peers: Vec<PeerStatus>,
    /// Each VIP and who holds it, as far as this node knows.
    pub vips: Vec<VipStatus>,
    /// Health checks.
    pub checks: Vec<CheckStatus>,
    /// XDP counters, summed over CPUs.
    pub counters: BTreeMap<String, u64>,
    /// The fast path's scheduling and punctuality (pool mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_path: Option<FastPathStatus>,
    /// VRRP groups (VRRP mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vrrp: Vec<VrrpStatus>,
    /// The VRRP groups' fast path, when the node runs a pool as well (`fast_path` is then
    /// the pool's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp_fast_path: Option<FastPathStatus>,
    /// Held VIPs another host claims (the ARP/NDP watch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<crate::conflict::ConflictStatus>,
}

/// The fast path in [`Status`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FastPathStatus {
    /// "SCHED_FIFO <priority>", or normal (and why).
    pub scheduling: String,
    /// Heartbeats sent on schedule.
    pub heartbeats_sent: u64,
    /// Of those, sent more than half an interval after their slot.
    pub heartbeats_late: u64,
    /// The latest one, in ms after its slot.
    pub max_late_ms: f64,
    /// Reports the slow path could not take in time (logs, metrics, hooks lost).
    pub reports_dropped: u64,
}

/// One VRRP group in [`Status`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VrrpStatus {
    /// Virtual Rtr ID.
    pub vrid: u8,
    /// The interface it runs on.
    pub interface: String,
    /// "ipv4" or "ipv6".
    pub family: String,
    /// The VRRP version, 3 or 2.
    #[serde(default)]
    pub version: u8,
    /// "initialize", "backup" or "master".
    pub state: String,
    /// Our priority.
    pub priority: u8,
    /// The Master's address: ours when Master, the last one heard when Backup.
    pub master: Option<String>,
    /// The Master's priority as last heard (ours when Master).
    pub master_priority: Option<u8>,
    /// Milliseconds since the Master was last heard (Backup).
    pub master_seen_ms_ago: Option<f64>,
    /// Adverts from the Master counted by the XDP program.
    pub adverts_received: u64,
    /// The group's addresses.
    pub vips: Vec<String>,
    /// Unicast VRRP: the peers adverts go to (empty: multicast).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unicast_peers: Vec<String>,
}

/// One peer in [`Status`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Node id.
    pub id: u32,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms_ago: f64,
    /// In this node's view.
    pub in_view: bool,
    /// up, holding-down (not mature), leaving, down.
    pub state: String,
    /// Placement weight.
    pub weight: u16,
    /// Whether its view digest equals ours.
    pub same_view: bool,
    /// It runs another VIP list than ours (a rolling change): only the VIPs both list are
    /// placed together.
    #[serde(default)]
    pub other_vip_list: bool,
    /// Its dead interval, as its heartbeats say (ms; 0: not said). This node waits the
    /// longer of it and its own before it takes the peer's VIPs.
    #[serde(default)]
    pub dead_interval_ms: f64,
    /// Heartbeats received, and missed in sequence.
    pub received: u64,
    /// Heartbeats missing from its sequence.
    pub missed: u64,
}

/// One VIP in [`Status`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VipStatus {
    /// Address/prefix.
    pub vip: String,
    /// The node holding it, if known.
    pub owner: Option<u32>,
}

/// One health check in [`Status`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckStatus {
    /// Its name.
    pub name: String,
    /// Passing (None: no result yet).
    pub healthy: Option<bool>,
}

/// Binds the control socket (directory 0700, socket 0600), replacing a stale one.
pub fn bind(instance: &str) -> anyhow::Result<ControlSocket> {
    std::fs::create_dir_all(RUN_DIR).with_context(|| format!("creating {RUN_DIR}"))?;
    std::fs::set_permissions(RUN_DIR, std::fs::Permissions::from_mode(0o700))?;
    let path = socket_path(instance);
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            anyhow::bail!(
                "another vipd runs instance {instance:?} ({} answers)",
                path.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding {}", path.display()))?;
    let socket = ControlSocket { listener, path };
    std::fs::set_permissions(&socket.path, std::fs::Permissions::from_mode(0o600))?;
    Ok(socket)
}

/// The daemon's control socket; its file is removed when this is dropped, so a start that
/// fails after binding it leaves nothing behind in `/run/vipd`.
pub struct ControlSocket {
    listener: tokio::net::UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// The next `vipd status` connection.
    pub async fn accept(
        &self,
    ) -> std::io::Result<(tokio::net::UnixStream, tokio::net::unix::SocketAddr)> {
        self.listener.accept().await
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The instance named, or that of the configuration file given.
fn instance_of(target: &Target) -> anyhow::Result<String> {
    match (&target.instance, &target.config) {
        (Some(i), _) => Ok(i.clone()),
        (None, Some(path)) => {
            let cfg = crate::cli::RunArgs {
                config: Some(path.clone()),
                ..Default::default()
            }
            .load()
            .map_err(|e| anyhow::anyhow!(e))?;
            Ok(cfg.node.instance)
        }
        (None, None) => anyhow::bail!("give --instance or --config"),
    }
}

/// `vipd status`.
pub fn print_status(args: &StatusArgs) -> anyhow::Result<()> {
    let instance = instance_of(&args.target)?;
    let status = match ask(&instance, Request::Status) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "vipd: no answer on {} ({e:#}); reading the pinned maps instead",
                socket_path(&instance).display()
            );
            from_pins(&instance, args.target.config.as_deref())?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", table(&status));
    }
    Ok(())
}

/// `vipd drain` (`drained`) and `vipd undrain`: asks the daemon, then with `--wait` polls
/// its status until the node holds nothing.
pub fn drain(args: &DrainArgs, drained: bool) -> anyhow::Result<()> {
    let instance = instance_of(&args.target)?;
    let request = if drained {
        Request::Drain
    } else {
        Request::Undrain
    };
    let mut status = ask(&instance, request).context("asking the daemon (is it running?)")?;
    println!(
        "node {} {}",
        status.node_id,
        if drained { "drained" } else { "undrained" }
    );
    if !(drained && args.wait) {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + args.timeout.0;
    loop {
        let held = holds(&status);
        if held.is_empty() {
            println!("node {} holds no VIP", status.node_id);
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "still holding {} after {:?}",
                held.join(", "),
                args.timeout.0
            );
        }
        std::thread::sleep(Duration::from_millis(50));
        status = ask(&instance, Request::Status)?;
    }
}

/// What the node of `status` holds: the pool's VIPs it owns, the groups it is Master of.
fn holds(status: &Status) -> Vec<String> {
    let vips = status
        .vips
        .iter()
        .filter(|v| v.owner == Some(status.node_id))
        .map(|v| v.vip.clone());
    let groups = status
        .vrrp
        .iter()
        .filter(|g| g.state == "master")
        .map(|g| format!("VRRP group {} on {}", g.vrid, g.interface));
    vips.chain(groups).collect()
}

fn ask(instance: &str, request: Request) -> anyhow::Result<Status> {
    let path = socket_path(instance);
    let mut s =
        UnixStream::connect(&path).with_context(|| format!("connecting to {}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request.line())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    serde_json::from_str(&text).context("reading the daemon's answer")
}

/// What the pins tell without a daemon: whether the node is fenced, the VIPs it holds,
/// peers and counters.
fn from_pins(instance: &str, config: Option<&Path>) -> anyhow::Result<Status> {
    use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
    use vipd_common::{
        heartbeat::{FLAG_MATURE, is_leaving},
        maps::{
            CONFIG_MAP, COUNTERS_MAP, Counter, FENCE_MAP, FENCE_SLOTS, PEERS_MAP, PeerState,
            XdpConfig, fenced,
        },
    };
    let root = config
        .and_then(|p| File::load(p).ok())
        .and_then(|f| f.xdp.pin_root)
        .unwrap_or_else(|| vipd_common::maps::DEFAULT_PIN_ROOT.into());
    let dir = root.join(instance);
    let open = |map: &str| -> anyhow::Result<Map> {
        let path = dir.join(crate::xdp::pin_file(map));
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Map::from_map_data(data)?)
    };
    let peers: HashMap<MapData, u32, PeerState> = HashMap::try_from(open(PEERS_MAP)?)?;
    let counters: PerCpuArray<MapData, u64> = PerCpuArray::try_from(open(COUNTERS_MAP)?)?;
    let now = crate::clock::monotonic_ns();
    let mut status = Status {
        instance: instance.into(),
        state: "unknown (no daemon answered; from the pinned maps)".into(),
        ..Status::default()
    };
    let config = Array::<MapData, XdpConfig>::try_from(open(CONFIG_MAP)?)?.get(&0, 0)?;
    status.node_id = config.node_id;
    let deadlines = Array::<MapData, u64>::try_from(open(FENCE_MAP)?)?;
    // The latest deadline that has passed, if any.
    let passed = (0..FENCE_SLOTS)
        .filter_map(|slot| deadlines.get(&slot, 0).ok())
        .filter(|&deadline| fenced(deadline, now))
        .max();
    let attached = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("link-"));
    if let Some(deadline) = passed.filter(|_| attached) {
        status.state = format!(
            "fenced (no daemon answered; its word ran out {:.1} s ago: the XDP program, still \
             attached, drops ARP requests and solicitations for the VIPs below)",
            now.saturating_sub(deadline) as f64 / 1e9
        );
    }
    for vip in crate::xdp::pinned_held(&dir)? {
        status.vips.push(VipStatus {
            vip: vip.to_string(),
            owner: Some(config.node_id),
        });
    }
    for (id, p) in peers.iter().filter_map(Result::ok) {
        let flags = if is_leaving(p.flags) {
            "leaving"
        } else if p.flags & FLAG_MATURE != 0 {
            "up"
        } else {
            "holding-down"
        };
        status.peers.push(PeerStatus {
            id,
            last_seen_ms_ago: now.saturating_sub(p.last_seen_ns) as f64 / 1e6,
            state: flags.into(),
            weight: p.weight,
            dead_interval_ms: f64::from(p.dead_us) / 1e3,
            received: p.received,
            missed: p.missed,
            ..PeerStatus::default()
        });
    }
    for &c in Counter::ALL {
        let total = counters.get(&(c as u32), 0).map_or(0, |v| v.iter().sum());
        status.counters.insert(c.name().into(), total);
    }
    Ok(status)
}

/// A human rendering of a status.
pub fn table(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "node {} on {} (instance {}, XDP {}): {}",
        s.node_id, s.interface, s.instance, s.xdp_mode, s.state
    );
    let no_carrier: Vec<&str> = s
        .carrier
        .iter()
        .filter(|(_, up)| !**up)
        .map(|(name, _)| name.as_str())
        .collect();
    if s.drained {
        let _ = writeln!(
            t,
            "drained: holds no VIP and joins no VRRP group until `vipd undrain`"
        );
    }
    if !no_carrier.is_empty() {
        let _ = writeln!(
            t,
            "no carrier on {} (its groups are out until it returns)",
            no_carrier.join(", ")
        );
    }
    if !s.conntrack.is_empty() {
        let _ = writeln!(t, "connection tracking: {}", s.conntrack);
    }
    if !s.auth.is_empty() {
        let _ = writeln!(t, "heartbeat authentication: {}", s.auth);
    }
    if let Some(f) = &s.fast_path {
        let _ = writeln!(
            t,
            "fast path: {}; {} heartbeats sent, {} late (max {:.3} ms after its slot)",
            f.scheduling, f.heartbeats_sent, f.heartbeats_late, f.max_late_ms
        );
    }
    if !s.vrrp.is_empty() {
        let _ = writeln!(
            t,
            "\n{:<5} {:<5} {:<3} {:<9} {:<10} {:>4}  {:<26} {:>12} {:>9}  vips",
            "vrid",
            "af",
            "ver",
            "interface",
            "state",
            "prio",
            "master (prio)",
            "last heard",
            "adverts"
        );
        for g in &s.vrrp {
            let master = match (&g.master, g.master_priority) {
                (Some(m), Some(p)) => format!("{m} ({p})"),
                (Some(m), None) => m.clone(),
                _ => "-".into(),
            };
            let heard = g
                .master_seen_ms_ago
                .map_or("-".into(), |ms| format!("{ms:.1} ms"));
            let _ = writeln!(
                t,
                "{:<5} {:<5} {:<3} {:<9} {:<10} {:>4}  {:<26} {:>12} {:>9}  {}",
                g.vrid,
                g.family,
                g.version,
                g.interface,
                g.state,
                g.priority,
                master,
                heard,
                g.adverts_received,
                g.vips.join(" ")
            );
            if !g.unicast_peers.is_empty() {
                let _ = writeln!(t, "      unicast to {}", g.unicast_peers.join(" "));
            }
        }
    }
    if s.vrrp.is_empty() || !s.peers.is_empty() {
        let _ = writeln!(
            t,
            "view {:?}, {}",
            s.view,
            if s.views_agree != Some(false) {
                "all members agree"
            } else {
                "VIEWS DIFFER"
            }
        );
        let _ = writeln!(
            t,
            "\n{:<6} {:<13} {:>12} {:>7} {:>6} {:>10} {:>7}",
            "peer", "state", "last seen", "in view", "weight", "received", "missed"
        );
    }
    for p in &s.peers {
        let _ = writeln!(
            t,
            "{:<6} {:<13} {:>9.1} ms {:>7} {:>6} {:>10} {:>7}{}",
            p.id,
            p.state,
            p.last_seen_ms_ago,
            if p.in_view { "yes" } else { "no" },
            p.weight,
            p.received,
            p.missed,
            if p.other_vip_list {
                "  (another VIP list)"
            } else {
                ""
            }
        );
        if p.dead_interval_ms > 0.0
            && s.dead_interval_ms > 0.0
            && p.dead_interval_ms != s.dead_interval_ms
        {
            let _ = writeln!(
                t,
                "{:<6} dead interval {} ms, here {} ms: waited for {} ms",
                "",
                p.dead_interval_ms,
                s.dead_interval_ms,
                p.dead_interval_ms.max(s.dead_interval_ms)
            );
        }
    }
    if !s.vips.is_empty() {
        let _ = writeln!(t, "\n{:<24} owner", "vip");
        for v in &s.vips {
            let owner = v.owner.map_or("-".to_string(), |o| o.to_string());
            let mine = if v.owner == Some(s.node_id) {
                " (this node)"
            } else {
                ""
            };
            let _ = writeln!(t, "{:<24} {owner}{mine}", v.vip);
        }
    }
    if !s.conflicts.is_empty() {
        let _ = writeln!(
            t,
            "\nCONFLICTS: held VIPs another host claims\n{:<24} {:<17} {:<24} {:<15} {:>8} {:>8} {:>9}",
            "vip", "mac", "claimer", "how", "since", "defences", "next"
        );
        for c in &s.conflicts {
            let _ = writeln!(
                t,
                "{:<24} {:<17} {:<24} {:<15} {:>6.1} s {:>8} {:>7.1} s",
                c.vip, c.mac, c.claimer, c.kind, c.since_s, c.defences, c.next_defence_in_s
            );
        }
    }
    if !s.checks.is_empty() {
        let _ = writeln!(t, "\ncheck");
        for c in &s.checks {
            let state = match c.healthy {
                Some(true) => "passing",
                Some(false) => "FAILING",
                None => "pending",
            };
            let _ = writeln!(t, "{:<24} {state}", c.name);
        }
    }
    let _ = writeln!(t, "\nXDP counters");
    for (k, v) in &s.counters {
        let _ = writeln!(t, "  {k:<22} {v}");
    }
    t
}
