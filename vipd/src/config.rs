//! Configuration: the TOML file (`/etc/vipd/vipd.toml` by default), command-line flags
//! that override it, and the validated [`Config`] the daemon runs with.
//!
//! Unknown keys are errors that name the key's path (`heartbeat.intervall`), and
//! `vipd check-config` prints the effective configuration in the same format, so its output
//! is itself a valid configuration file.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use vipd_common::heartbeat::{DEFAULT_GROUP_V4, DEFAULT_PORT};

use crate::{auth::Key, vip::Vip};

/// Where the configuration file is read from when `--config` is not given (if it exists).
pub const DEFAULT_CONFIG: &str = "/etc/vipd/vipd.toml";
/// Most VIPs in one pool (the state section of a heartbeat must fit in one datagram).
pub const MAX_VIPS: usize = 10_000;
/// The heartbeat interval unless configured: with [`DEAD_INTERVALS`], the fastest setting
/// that showed no false failover with every core saturated (`cargo xtask bench
/// starvation`) with a margin: it still rides out four lost heartbeats in a row.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(2);
/// The dead interval unless configured, in heartbeat intervals.
pub const DEAD_INTERVALS: u32 = 5;
/// The shortest heartbeat interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_micros(500);
/// The fast path's SCHED_FIFO priority unless configured (below threaded interrupt
/// handlers, which default to 50, so the NIC is still served first).
pub const DEFAULT_RT_PRIORITY: u8 = 40;
/// Where a node keeps state across restarts unless configured (`[node] state_dir`; the
/// systemd unit's StateDirectory).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vipd";
/// The largest weight a peer is given by default (`[pool] max_weight`): a forged or
/// misconfigured heartbeat cannot claim the whole pool.
pub const DEFAULT_MAX_WEIGHT: u16 = 100;

/// A duration written as text: "100ms", "1s", "500us".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s)
            .map(Dur)
            .map_err(|e| format!("{s:?}: {e}"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Vip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Vip {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The configuration file. Every key is optional; flags override keys.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct File {
    /// This node.
    pub node: NodeSection,
    /// Heartbeats and failure detection.
    pub heartbeat: HeartbeatSection,
    /// The VIPs.
    pub pool: PoolSection,
    /// Gratuitous ARP / unsolicited NA schedule.
    pub announce: AnnounceSection,
    /// XDP attachment and pins.
    pub xdp: XdpSection,
    /// Prometheus metrics.
    pub metrics: MetricsSection,
    /// The fast path's thread (heartbeats, deadlines, takeover).
    pub fastpath: FastPathSection,
    /// Health checks: a failing node withdraws from the pool.
    #[serde(rename = "check", skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    /// A command run on VIP and node state changes.
    pub hooks: HooksSection,
    /// VRRP groups (VRRP mode, instead of a pool).
    #[serde(rename = "vrrp", skip_serializing_if = "Vec::is_empty")]
    pub vrrp: Vec<Vrrp>,
}

/// One `[[vrrp]]` group: a VRRPv3 (RFC 5798) or VRRPv2 (RFC 3768) virtual router, like a
/// keepalived `vrrp_instance`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Vrrp {
    /// Virtual Router ID, 1-255 (unique per family on the segment, and on this node).
    pub vrid: u8,
    /// VRRP version: 3 (RFC 5798, IPv4 and IPv6) or 2 (RFC 3768, IPv4 only, whole-second
    /// intervals; keepalived's default `vrrp_version`) [default: 3].
    #[serde(default = "default_vrrp_version")]
    pub version: u8,
    /// VRRPv2 only: the plain-text password of keepalived's `auth_type PASS` (at most 8
    /// bytes, sent in clear in every advert: it keeps configurations apart, it is no
    /// security) [default: none, Auth Type 0].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_pass: Option<String>,
    /// Where the group runs [default: node.interface].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// 1-254, or 255 for the owner of the addresses [default: 100].
    #[serde(default = "default_vrrp_priority")]
    pub priority: u8,
    /// The group's addresses, all IPv4 or all IPv6.
    pub vips: Vec<Vip>,
    /// How often the Master advertises; whole centiseconds [default: 1s].
    #[serde(default = "default_advert_interval")]
    pub advert_interval: Dur,
    /// A higher-priority Backup takes over from a lower-priority Master [default: true].
    #[serde(default = "yes")]
    pub preempt: bool,
    /// Accept_Mode: as a non-owner Master, accept packets addressed to the VIPs
    /// [default: true, like keepalived without vrrp_strict]. When false, an nftables rule
    /// drops them (pings and services on the VIP stop answering).
    #[serde(default = "yes")]
    pub accept: bool,
    /// Use the virtual MAC 00:00:5E:00:01:VRID (IPv6: 00:00:5E:00:02:VRID) on a macvlan
    /// `vrrp4.VRID.IFINDEX` / `vrrp6.VRID.IFINDEX`, like keepalived's use_vmac [default: false: the
    /// interface's MAC and gratuitous ARP / unsolicited NA].
    #[serde(default)]
    pub vmac: bool,
    /// Unicast VRRP, like keepalived's `unicast_peer`: adverts go to each of these
    /// addresses instead of the multicast group, and count only from them (at most 8, the
    /// group's family) [default: none: multicast].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unicast_peers: Vec<IpAddr>,
    /// Unicast: the adverts' source address, like keepalived's `unicast_src_ip` (one of
    /// the interface's addresses) [default: as multicast: the interface's primary IPv4
    /// address or its IPv6 link-local one].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unicast_src: Option<IpAddr>,
    /// Unicast: the lowest TTL / hop limit accepted, like keepalived's `min_ttl` (255
    /// when every peer is on the segment) [default: 0: any, as keepalived, since unicast
    /// adverts may cross routers].
    #[serde(default)]
    pub unicast_min_ttl: u8,
}

impl Vrrp {
    /// The interface it runs on (filled in from node.interface by validation).
    pub fn interface(&self) -> &str {
        self.interface.as_deref().unwrap_or_default()
    }

    /// Whether the group is IPv6.
    pub fn ipv6(&self) -> bool {
        self.vips.first().is_some_and(|v| v.addr.is_ipv6())
    }

    /// "ipv4" or "ipv6".
    pub fn family(&self) -> &'static str {
        if self.ipv6() { "ipv6" } else { "ipv4" }
    }

    /// The virtual MAC of the group (RFC 5798 section 7.3).
    pub fn virtual_mac(&self) -> [u8; 6] {
        [0, 0, 0x5e, 0, if self.ipv6() { 2 } else { 1 }, self.vrid]
    }

    /// The name of the group's macvlan when `vmac` is on, on the interface of index
    /// `ifindex`: `vrrp4.<vrid>.<ifindex>` (`vrrp6.…` for IPv6), so daemons running one
    /// VRID on two interfaces never touch each other's. An index too long for the 15
    /// characters of a Linux interface name is written in hex after a shorter prefix.
    pub fn vmac_name(&self, ifindex: u32) -> String {
        let family = if self.ipv6() { 6 } else { 4 };
        let name = format!("vrrp{family}.{}.{ifindex}", self.vrid);
        if name.len() <= 15 {
            name
        } else {
            format!("v{family}.{}.{ifindex:x}", self.vrid)
        }
    }

    /// The advertisement interval in centiseconds.
    pub fn interval_cs(&self) -> u16 {
        (self.advert_interval.0.as_millis() / 10) as u16
    }

    /// VRRPv2's Auth Type and authentication data (the password, zero-padded).
    pub fn auth(&self) -> (u8, [u8; vipd_common::vrrp::AUTH_DATA_LEN]) {
        let mut data = [0u8; vipd_common::vrrp::AUTH_DATA_LEN];
        match &self.auth_pass {
            Some(pass) => {
                let n = pass.len().min(data.len());
                data[..n].copy_from_slice(&pass.as_bytes()[..n]);
                (vipd_common::vrrp::AUTH_PASS, data)
            }
            None => (vipd_common::vrrp::AUTH_NONE, data),
        }
    }

    /// Parses the `--vrrp` form: `VRID` then comma-separated `key=value`: `priority`,
    /// `vip` (repeat), `interval`, `version`, `auth_pass`, `preempt`, `accept` and `vmac`
    /// (yes/no), `interface`, `unicast_peer` (repeat), `unicast_src`, `unicast_min_ttl`.
    pub fn parse_spec(spec: &str) -> Result<Self, String> {
        let mut parts = spec.split(',').map(str::trim);
        let vrid = parts
            .next()
            .and_then(|v| v.parse::<u8>().ok())
            .ok_or_else(|| format!("{spec:?}: starts with the VRID (1-255)"))?;
        let mut g = Vrrp {
            vrid,
            version: default_vrrp_version(),
            auth_pass: None,
            interface: None,
            priority: default_vrrp_priority(),
            vips: Vec::new(),
            advert_interval: default_advert_interval(),
            preempt: true,
            accept: true,
            vmac: false,
            unicast_peers: Vec::new(),
            unicast_src: None,
            unicast_min_ttl: 0,
        };
        let yes_no = |k: &str, v: &str| match v {
            "yes" | "true" | "on" => Ok(true),
            "no" | "false" | "off" => Ok(false),
            _ => Err(format!("{k}={v:?}: yes or no")),
        };
        for part in parts.filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected key=value"))?;
            match k {
                "priority" | "prio" => {
                    g.priority = v.parse().map_err(|_| format!("priority={v:?}: 1-255"))?;
                }
                "vip" => g.vips.push(v.parse()?),
                "interval" => g.advert_interval = v.parse()?,
                "version" => g.version = v.parse().map_err(|_| format!("version={v:?}: 2 or 3"))?,
                "auth_pass" => g.auth_pass = Some(v.to_string()),
                "preempt" => g.preempt = yes_no(k, v)?,
                "accept" => g.accept = yes_no(k, v)?,
                "vmac" => g.vmac = yes_no(k, v)?,
                "interface" => g.interface = Some(v.to_string()),
                "unicast_peer" | "peer" => g.unicast_peers.push(
                    v.parse()
                        .map_err(|_| format!("{k}={v:?}: an IPv4 or IPv6 address"))?,
                ),
                "unicast_src" => {
                    g.unicast_src = Some(
                        v.parse()
                            .map_err(|_| format!("{k}={v:?}: an IPv4 or IPv6 address"))?,
                    );
                }
                "unicast_min_ttl" => {
                    g.unicast_min_ttl = v.parse().map_err(|_| format!("{k}={v:?}: 0-255"))?;
                }
                _ => {
                    return Err(format!(
                        "unknown key {k:?} (priority, vip, interval, version, auth_pass, preempt, \
                         accept, vmac, interface, unicast_peer, unicast_src, unicast_min_ttl)"
                    ));
                }
            }
        }
        Ok(g)
    }

    fn validate(&mut self) -> Result<(), String> {
        let at = format!("vrrp group {}", self.vrid);
        if self.vrid == 0 {
            return Err("vrrp: the VRID must be 1 to 255".into());
        }
        if self.priority == 0 {
            return Err(format!(
                "{at}: priority must be 1 to 255 (0 is sent only by a stopping Master)"
            ));
        }
        if self.vips.is_empty() {
            return Err(format!("{at}: no vips"));
        }
        let max = if self.ipv6() {
            vipd_common::vrrp::MAX_ADDRS_V6
        } else {
            vipd_common::vrrp::MAX_ADDRS_V4
        };
        if self.vips.len() > max {
            return Err(format!(
                "{at}: at most {max} {} addresses per group (one advert carries them all)",
                self.family()
            ));
        }
        if self.vips.iter().any(|v| v.addr.is_ipv6() != self.ipv6()) {
            return Err(format!(
                "{at}: mixes IPv4 and IPv6 addresses (use one group per family, as VRRP does)"
            ));
        }
        let ms = self.advert_interval.0.as_millis();
        match self.version {
            3 => {
                if !self.advert_interval.0.as_nanos().is_multiple_of(10_000_000)
                    || !(10..=40_950).contains(&ms)
                {
                    return Err(format!(
                        "{at}: advert_interval must be whole centiseconds from 10ms to 40.95s \
                         (it is {})",
                        self.advert_interval
                    ));
                }
                if self.auth_pass.is_some() {
                    return Err(format!(
                        "{at}: auth_pass is VRRPv2's (RFC 5798 removed authentication from \
                         VRRPv3): drop it, or set version = 2"
                    ));
                }
            }
            2 => {
                if self.ipv6() {
                    return Err(format!(
                        "{at}: VRRPv2 is IPv4 only (RFC 3768): use version = 3 for IPv6"
                    ));
                }
                if !self
                    .advert_interval
                    .0
                    .as_nanos()
                    .is_multiple_of(1_000_000_000)
                    || !(1_000..=255_000).contains(&ms)
                {
                    return Err(format!(
                        "{at}: a VRRPv2 advert_interval is whole seconds from 1s to 255s (RFC \
                         3768; keepalived rounds other values) (it is {})",
                        self.advert_interval
                    ));
                }
                if let Some(pass) = &self.auth_pass
                    && (pass.is_empty() || pass.len() > vipd_common::vrrp::AUTH_DATA_LEN)
                {
                    return Err(format!(
                        "{at}: auth_pass is 1 to 8 bytes (keepalived uses only the first 8)"
                    ));
                }
            }
            v => return Err(format!("{at}: version {v}: VRRP version 2 or 3")),
        }
        self.vips.sort();
        if let Some(w) = self.vips.windows(2).find(|w| w[0].addr == w[1].addr) {
            return Err(format!("{at}: VIP {} is listed twice", w[0].addr));
        }
        self.validate_unicast(&at)
    }

    /// Whether adverts go to `unicast_peers` instead of the multicast group.
    pub fn unicast(&self) -> bool {
        !self.unicast_peers.is_empty()
    }

    fn validate_unicast(&mut self, at: &str) -> Result<(), String> {
        let max = vipd_common::maps::MAX_VRRP_PEERS_PER_GROUP as usize;
        if self.unicast_peers.len() > max {
            return Err(format!("{at}: at most {max} unicast_peers"));
        }
        let is_vip = |a: &IpAddr| self.vips.iter().any(|v| v.addr == *a);
        for a in self.unicast_peers.iter().chain(&self.unicast_src) {
            if a.is_ipv6() != self.ipv6() {
                return Err(format!(
                    "{at}: {a} is not {} like the group's vips",
                    self.family()
                ));
            }
            if a.is_unspecified() || a.is_multicast() || a.is_loopback() || is_vip(a) {
                return Err(format!(
                    "{at}: {a} cannot be a unicast peer or source (a unicast address that is \
                     not one of the group's vips)"
                ));
            }
        }
        if !self.unicast() && (self.unicast_src.is_some() || self.unicast_min_ttl != 0) {
            return Err(format!(
                "{at}: unicast_src and unicast_min_ttl need unicast_peers"
            ));
        }
        self.unicast_peers.sort();
        if let Some(w) = self.unicast_peers.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("{at}: unicast peer {} is listed twice", w[0]));
        }
        if let Some(src) = self.unicast_src
            && self.unicast_peers.contains(&src)
        {
            return Err(format!("{at}: unicast_src {src} is also a unicast peer"));
        }
        Ok(())
    }
}

/// How to attach the XDP program: `auto` tries native (driver) mode and falls back to
/// generic (skb).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native if the driver supports it, else generic.
    Auto,
    /// Native XDP in the driver only.
    Driver,
    /// Generic XDP in the network stack only.
    Skb,
}

/// `[heartbeat]`'s interval and dead interval, defaulted and checked.
fn heartbeat_timers(h: &HeartbeatSection) -> Result<(Duration, Duration), String> {
    let interval = h.interval.map_or(DEFAULT_INTERVAL, |d| d.0);
    if interval < MIN_INTERVAL {
        return Err(format!(
            "the heartbeat interval ({interval:?}) must be at least {MIN_INTERVAL:?}: \
             shorter intervals cannot be kept under load (timer wake-up and scheduling \
             latency are tens of microseconds)"
        ));
    }
    let dead_interval = h.dead_interval.map_or(interval * DEAD_INTERVALS, |d| d.0);
    if dead_interval <= interval {
        return Err(format!(
            "the dead interval ({dead_interval:?}) must be longer than the heartbeat interval ({interval:?})"
        ));
    }
    if interval > Duration::from_secs(3600) || dead_interval > Duration::from_secs(3 * 3600) {
        return Err("the heartbeat and dead intervals must be at most an hour or so".into());
    }
    Ok((interval, dead_interval))
}

/// Validates each `[[vrrp]]` group (its interface defaulting to `interface`), and that no
/// VRID is declared twice per family and no address is in two groups.
fn check_vrrp_groups(vrrp: &mut [Vrrp], interface: &str) -> Result<(), String> {
    for g in vrrp.iter_mut() {
        g.validate()?;
        if g.interface.as_deref().is_none_or(str::is_empty) {
            g.interface = Some(interface.to_string());
        }
    }
    let mut keys: Vec<(bool, u8)> = vrrp.iter().map(|g| (g.ipv6(), g.vrid)).collect();
    keys.sort();
    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!(
            "vrrp: VRID {} is declared twice for {}",
            w[0].1,
            if w[0].0 { "IPv6" } else { "IPv4" }
        ));
    }
    let mut all: Vec<IpAddr> = vrrp
        .iter()
        .flat_map(|g| g.vips.iter().map(|v| v.addr))
        .collect();
    all.sort();
    if let Some(w) = all.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("vrrp: {} is in two groups", w[0]));
    }
    Ok(())
}

/// The pool's VIPs: at most [`MAX_VIPS`], none twice; sorted.
fn check_pool_vips(vips: &mut [Vip]) -> Result<(), String> {
    if vips.len() > MAX_VIPS {
        return Err(format!("at most {MAX_VIPS} VIPs per pool"));
    }
    vips.sort();
    if let Some(w) = vips.windows(2).find(|w| w[0].addr == w[1].addr) {
        return Err(format!("VIP {} is listed twice", w[0].addr));
    }
    Ok(())
}

/// Bounds on the file's durations that keep timer arithmetic far from overflow.
fn check_durations(
    heartbeat: &HeartbeatSection,
    announce: &AnnounceSection,
    hooks: &HooksSection,
    checks: &[Check],
) -> Result<(), String> {
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);
    let too_long = |what: &str, d: Option<&Dur>, max: Duration| match d {
        Some(d) if d.0 > max => Err(format!("{what} must be at most {}", Dur(max))),
        _ => Ok(()),
    };
    too_long("heartbeat.hold_down", heartbeat.hold_down.as_ref(), DAY)?;
    too_long("heartbeat.heal_delay", heartbeat.heal_delay.as_ref(), DAY)?;
    too_long("announce.refresh", announce.refresh.as_ref(), DAY)?;
    too_long("hooks.timeout", hooks.timeout.as_ref(), HOUR)?;
    for r in announce.repeats.iter().flatten() {
        too_long("announce.repeats", Some(r), HOUR)?;
    }
    for c in checks {
        too_long("check interval", Some(&c.interval), HOUR)?;
        too_long("check timeout", Some(&c.timeout), HOUR)?;
    }
    Ok(())
}

/// Each `[[check]]`: positive rise, fall, interval and timeout, and a probe that parses.
fn check_health_checks(checks: &[Check]) -> Result<(), String> {
    for c in checks {
        if c.rise == 0 || c.fall == 0 || c.interval.0.is_zero() || c.timeout.0.is_zero() {
            return Err(format!(
                "check {:?}: rise, fall, interval and timeout must be more than zero",
                c.name
            ));
        }
        c.probe()?;
    }
    Ok(())
}

fn default_vrrp_priority() -> u8 {
    100
}
fn default_vrrp_version() -> u8 {
    vipd_common::vrrp::VERSION_3
}
fn default_advert_interval() -> Dur {
    Dur(Duration::from_secs(1))
}
fn yes() -> bool {
    true
}

/// `[node]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Node id, unique in the cluster, 1 or more.
    pub id: Option<u32>,
    /// The cluster interface.
    pub interface: Option<String>,
    /// Placement weight.
    pub weight: Option<u16>,
    /// Instance name (pins and control socket).
    pub instance: Option<String>,
    /// Where the node keeps state across restarts (its last incarnation).
    pub state_dir: Option<PathBuf>,
}

/// `[heartbeat]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatSection {
    /// Time between heartbeats.
    pub interval: Option<Dur>,
    /// Silence after which a peer is dead.
    pub dead_interval: Option<Dur>,
    /// Wait before taking VIPs after start or carrier return.
    pub hold_down: Option<Dur>,
    /// How long a peer lost by timeout must be heard again before it gets VIPs again.
    pub heal_delay: Option<Dur>,
    /// Unicast peers.
    pub peers: Option<Vec<IpAddr>>,
    /// Multicast group.
    pub group: Option<IpAddr>,
    /// Cluster id.
    pub cluster_id: Option<u32>,
    /// UDP port.
    pub port: Option<u16>,
    /// `"key"` (the default: a pool refuses to start without `auth_key_file`) or `"off"`
    /// (no authentication: the pool trusts everyone on the link).
    pub auth: Option<AuthMode>,
    /// Shared key authenticating heartbeats: a file of 32 hex characters, mode 0600.
    pub auth_key_file: Option<PathBuf>,
    /// A second accepted key, during a key rotation (heartbeats are signed with
    /// `auth_key_file`'s).
    pub auth_next_key_file: Option<PathBuf>,
}

/// Whether heartbeats are authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// With the shared key of `auth_key_file` (required for a pool).
    Key,
    /// Not at all: said at start-up, in `vipd status` and as `vipd_auth_enabled 0`.
    Off,
}

/// `[pool]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSection {
    /// The VIPs (the same list on every node).
    pub vips: Option<Vec<Vip>>,
    /// Move VIPs to rebalance (false: only orphaned VIPs move).
    pub preempt: Option<bool>,
    /// A preferred node for some VIPs: `{ "192.0.2.201" = 1 }`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred: Option<std::collections::BTreeMap<IpAddr, u32>>,
    /// The largest weight a peer is given, whatever its heartbeats claim.
    pub max_weight: Option<u16>,
}

/// `[announce]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnounceSection {
    /// Frames sent at once on takeover.
    pub burst: Option<u16>,
    /// Repeats after a takeover.
    pub repeats: Option<Vec<Dur>>,
    /// Periodic refresh ("0s": off).
    pub refresh: Option<Dur>,
}

/// `[xdp]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdpSection {
    /// auto, driver or skb.
    pub mode: Option<AttachMode>,
    /// bpffs directory for pins.
    pub pin_root: Option<PathBuf>,
}

/// `[fastpath]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FastPathSection {
    /// SCHED_FIFO priority of the fast path's thread, 1–99; 0 runs it at normal priority.
    pub rt_priority: Option<u8>,
    /// A shadow sender on each CPU sends the heartbeat when the fast path misses a slot
    /// (its CPU stopped under it, as hypervisors do).
    pub shadow_senders: Option<bool>,
}

/// `[metrics]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Address to serve Prometheus metrics on (e.g. "127.0.0.1:9797"); none: off.
    pub listen: Option<SocketAddr>,
}

/// `[hooks]`
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HooksSection {
    /// Program run (with arguments, no shell) on every event; details in `VIPD_*`
    /// environment variables.
    pub command: Option<Vec<String>>,
    /// How long a hook may run before it is killed.
    pub timeout: Option<Dur>,
}

/// One `[[check]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// A name for logs and status.
    pub name: String,
    /// `command` (exit 0), `tcp` (connect) or `http` (GET answered with `status`).
    #[serde(rename = "type")]
    pub kind: CheckType,
    /// For `command`: the program and its arguments (no shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// For `tcp` and `http`: where to connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    /// For `http`: the request path [default: /].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For `http`: the expected status [default: 200].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Time between checks.
    #[serde(default = "default_check_interval")]
    pub interval: Dur,
    /// A check not done within this fails.
    #[serde(default = "default_check_timeout")]
    pub timeout: Dur,
    /// Successes in a row that make a failed check healthy again.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Failures in a row that make a healthy check fail.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

/// The `type` of a check.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    /// A program that must exit 0.
    Command,
    /// A TCP connection that must be accepted.
    Tcp,
    /// An HTTP GET that must answer with the expected status.
    Http,
}

/// What a check does, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Run argv; pass on exit 0.
    Command(Vec<String>),
    /// Connect; pass if accepted.
    Tcp(SocketAddr),
    /// GET path; pass on the status.
    Http {
        address: SocketAddr,
        path: String,
        status: u16,
    },
}

impl Check {
    /// The validated kind, or what is missing.
    pub fn probe(&self) -> Result<CheckKind, String> {
        let missing =
            |what: &str| format!("check {:?} of type {:?} needs {what}", self.name, self.kind);
        Ok(match self.kind {
            CheckType::Command => match &self.command {
                Some(c) if !c.is_empty() => CheckKind::Command(c.clone()),
                _ => return Err(missing("a non-empty command")),
            },
            CheckType::Tcp => CheckKind::Tcp(self.address.ok_or_else(|| missing("an address"))?),
            CheckType::Http => CheckKind::Http {
                address: self.address.ok_or_else(|| missing("an address"))?,
                path: self.path.clone().unwrap_or_else(|| "/".into()),
                status: self.status.unwrap_or(200),
            },
        })
    }
}

fn default_check_interval() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_check_timeout() -> Dur {
    Dur(Duration::from_millis(500))
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    2
}

impl File {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses configuration text; errors name the offending key's path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let de = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let inner = inner.trim();
            if path == "." {
                inner.to_string()
            } else {
                format!("at {path}: {inner}")
            }
        })
    }
}

/// A validated configuration for one daemon.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Cluster interface.
    pub interface: String,
    /// This node.
    pub node_id: u32,
    /// Instance name.
    pub instance: String,
    /// State kept across restarts.
    pub state_dir: PathBuf,
    /// The pool, sorted, no duplicates.
    pub vips: Vec<Vip>,
    /// Unicast peers.
    pub peers: Vec<IpAddr>,
    /// Multicast group, if any.
    pub group: Option<IpAddr>,
    /// Cluster id.
    pub cluster_id: u32,
    /// Heartbeat port.
    pub port: u16,
    /// Where the heartbeat authentication key was read from (None: no authentication).
    pub auth_key_file: Option<PathBuf>,
    /// The key read from `auth_key_file` (never printed); heartbeats are signed with it.
    pub auth_key: Option<Key>,
    /// Where the second accepted key was read from, during a rotation.
    pub auth_next_key_file: Option<PathBuf>,
    /// The second accepted key (never printed).
    pub auth_next_key: Option<Key>,
    /// Heartbeat interval.
    pub interval: Duration,
    /// Dead interval.
    pub dead_interval: Duration,
    /// Hold-down before taking or getting VIPs.
    pub hold_down: Duration,
    /// How long a peer lost by timeout must be heard again before it returns to the view.
    pub heal_delay: Duration,
    /// Placement weight.
    pub weight: u16,
    /// Ceiling on the weights peers announce.
    pub max_weight: u16,
    /// Rebalance by moving VIPs (false: only orphaned VIPs move).
    pub preempt: bool,
    /// Preferred node per VIP.
    pub preferred: std::collections::BTreeMap<IpAddr, u32>,
    /// Announcements at takeover.
    pub announce_burst: u16,
    /// Repeats after a takeover.
    pub announce_repeats: Vec<Duration>,
    /// Periodic re-announcement (None: off).
    pub announce_refresh: Option<Duration>,
    /// Where maps are pinned: `<pin_root>/<instance>`.
    pub pin_root: PathBuf,
    /// XDP attach mode.
    pub xdp_mode: AttachMode,
    /// Prometheus listen address.
    pub metrics: Option<SocketAddr>,
    /// SCHED_FIFO priority of the fast path (0: normal scheduling).
    pub rt_priority: u8,
    /// Shadow heartbeat senders on the other CPUs.
    pub shadow_senders: bool,
    /// Health checks.
    pub checks: Vec<Check>,
    /// Hook command.
    pub hook: Option<Vec<String>>,
    /// Hook timeout.
    pub hook_timeout: Duration,
    /// VRRP groups: when any, the daemon runs in VRRP mode (and the pool is empty).
    pub vrrp: Vec<Vrrp>,
}

/// The signing key and the second accepted key of `[heartbeat]`: a pool needs a key unless
/// `auth = "off"` says it runs without.
fn auth_keys(h: &HeartbeatSection, pool: bool) -> Result<(Option<Key>, Option<Key>), String> {
    let load = |p: &Option<PathBuf>| p.as_deref().map(crate::auth::load_key).transpose();
    match (h.auth, &h.auth_key_file) {
        (Some(AuthMode::Off), Some(_)) => Err(
            "heartbeat.auth = \"off\" and an auth_key_file: remove one (a key means authenticated)"
                .into(),
        ),
        (Some(AuthMode::Off), None) if h.auth_next_key_file.is_some() => {
            Err("heartbeat.auth_next_key_file needs an auth_key_file".into())
        }
        (Some(AuthMode::Off), None) => Ok((None, None)),
        (_, None) if h.auth_next_key_file.is_some() => {
            Err("heartbeat.auth_next_key_file needs an auth_key_file".into())
        }
        (_, None) if pool => Err(
            "heartbeats are not authenticated: anyone on the link could move the VIPs. Make a key \
             with `vipd keygen /etc/vipd/auth.key`, copy it to every node and set \
             [heartbeat] auth_key_file (or --auth-key-file); or, to trust everyone on the \
             link, set [heartbeat] auth = \"off\" (or --insecure)"
                .into(),
        ),
        (_, None) => Ok((None, None)),
        (_, Some(_)) => Ok((load(&h.auth_key_file)?, load(&h.auth_next_key_file)?)),
    }
}

/// Whether `addrs` hold IPv4 and IPv6 addresses.
fn families(addrs: &[IpAddr]) -> (bool, bool) {
    (
        addrs.iter().any(IpAddr::is_ipv4),
        addrs.iter().any(IpAddr::is_ipv6),
    )
}

impl Config {
    /// Heartbeat destinations: the peers, and the group (the default group if neither).
    pub fn destinations(&self) -> Vec<IpAddr> {
        let mut d = self.peers.clone();
        match self.group {
            Some(g) => d.push(g),
            None if d.is_empty() => d.push(DEFAULT_GROUP_V4.into()),
            None => {}
        }
        d
    }

    /// How the fast path's thread is scheduled.
    pub fn fast_path_priority(&self) -> crate::fastpath::Priority {
        match self.rt_priority {
            0 => crate::fastpath::Priority::Normal,
            p => crate::fastpath::Priority::RealTime(p),
        }
    }

    /// Where the last incarnation of this instance is kept.
    pub fn incarnation_file(&self) -> PathBuf {
        self.state_dir
            .join(format!("{}.incarnation", self.instance))
    }

    /// Where VRRP mode saves the original values of the ARP sysctls it changes.
    pub fn sysctl_file(&self) -> PathBuf {
        self.state_dir.join(format!("{}.sysctl", self.instance))
    }

    /// Per-instance pin directory.
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root.join(&self.instance)
    }

    /// Validates a merged file (flags already applied) and fills in defaults.
    pub fn from_file(f: File) -> Result<Self, String> {
        let node_id = f.node.id.ok_or("no node id: set [node] id or --node-id")?;
        if node_id == 0 {
            return Err("the node id must be 1 or more".into());
        }
        let interface = f
            .node
            .interface
            .ok_or("no interface: set [node] interface or --interface")?;
        let (interval, dead_interval) = heartbeat_timers(&f.heartbeat)?;
        let hold_down = f
            .heartbeat
            .hold_down
            .map_or(Duration::from_secs(1), |d| d.0);
        let rt_priority = f.fastpath.rt_priority.unwrap_or(DEFAULT_RT_PRIORITY);
        if rt_priority > 99 {
            return Err(format!(
                "fastpath.rt_priority must be 0 (normal scheduling) to 99 (it is {rt_priority})"
            ));
        }
        let mut vips = f.pool.vips.unwrap_or_default();
        let mut vrrp = f.vrrp;
        if vips.is_empty() && vrrp.is_empty() {
            return Err(
                "no VIPs: set [pool] vips or --vip, or declare [[vrrp]] groups or --vrrp".into(),
            );
        }
        check_vrrp_groups(&mut vrrp, &interface)?;
        check_pool_vips(&mut vips)?;
        if let Some(v) = vips
            .iter()
            .find(|v| vrrp.iter().any(|g| g.vips.iter().any(|w| w.addr == v.addr)))
        {
            return Err(format!(
                "{} is both in the pool and in a VRRP group: one address, one owner",
                v.addr
            ));
        }
        let peers = f.heartbeat.peers.clone().unwrap_or_default();
        if let Some(p) = peers
            .iter()
            .find(|p| p.is_multicast() || p.is_unspecified())
        {
            return Err(format!(
                "peer {p} must be a unicast address (use the group for multicast)"
            ));
        }
        if let Some(g) = f.heartbeat.group.filter(|g| !g.is_multicast()) {
            return Err(format!("group {g} is not a multicast address"));
        }
        let preferred = f.pool.preferred.unwrap_or_default();
        if let Some(vip) = preferred
            .keys()
            .find(|a| !vips.iter().any(|v| v.addr == **a))
        {
            return Err(format!(
                "pool.preferred names {vip}, which is not in pool.vips"
            ));
        }
        if preferred.values().any(|&n| n == 0) {
            return Err("pool.preferred: node ids are 1 or more".into());
        }
        let weight = f.node.weight.unwrap_or(1);
        if weight == 0 {
            return Err("the weight must be 1 or more".into());
        }
        let max_weight = f.pool.max_weight.unwrap_or(DEFAULT_MAX_WEIGHT);
        if weight > max_weight {
            return Err(format!(
                "the weight ({weight}) is above pool.max_weight ({max_weight}), the most any \
                 node is given: raise pool.max_weight on every node"
            ));
        }
        let instance = f
            .node
            .instance
            .unwrap_or_else(|| format!("{interface}-{node_id}"));
        if instance.is_empty() || instance.contains('/') || instance.starts_with('.') {
            return Err(format!("instance {instance:?} must be a plain file name"));
        }
        check_durations(&f.heartbeat, &f.announce, &f.hooks, &f.checks)?;
        let burst = f.announce.burst.unwrap_or(3);
        if !(1..=100).contains(&burst) {
            return Err("the announce burst must be 1 to 100".into());
        }
        check_health_checks(&f.checks)?;
        if f.hooks.command.as_ref().is_some_and(Vec::is_empty) {
            return Err("hooks.command is empty".into());
        }
        let (auth_key, auth_next_key) = auth_keys(&f.heartbeat, !vips.is_empty())?;
        Ok(Config {
            interface,
            node_id,
            instance,
            state_dir: f
                .node
                .state_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            vips,
            peers,
            group: f.heartbeat.group,
            cluster_id: f.heartbeat.cluster_id.unwrap_or(1),
            port: f.heartbeat.port.unwrap_or(DEFAULT_PORT),
            auth_key_file: f.heartbeat.auth_key_file,
            auth_key,
            auth_next_key_file: f.heartbeat.auth_next_key_file,
            auth_next_key,
            interval,
            dead_interval,
            hold_down,
            heal_delay: f.heartbeat.heal_delay.map_or(hold_down, |d| d.0),
            weight,
            max_weight,
            preempt: f.pool.preempt.unwrap_or(true),
            preferred,
            announce_burst: burst,
            announce_repeats: f.announce.repeats.map_or_else(
                || {
                    vec![
                        Duration::from_millis(50),
                        Duration::from_millis(250),
                        Duration::from_secs(1),
                    ]
                },
                |r| r.into_iter().map(|d| d.0).collect(),
            ),
            announce_refresh: Some(f.announce.refresh.map_or(Duration::from_secs(60), |d| d.0))
                .filter(|d| !d.is_zero()),
            pin_root: f
                .xdp
                .pin_root
                .unwrap_or_else(|| vipd_common::maps::DEFAULT_PIN_ROOT.into()),
            xdp_mode: f.xdp.mode.unwrap_or(AttachMode::Auto),
            metrics: f.metrics.listen,
            rt_priority,
            shadow_senders: f.fastpath.shadow_senders.unwrap_or(true),
            checks: f.checks,
            hook: f.hooks.command,
            hook_timeout: f.hooks.timeout.map_or(Duration::from_secs(10), |d| d.0),
            vrrp,
        })
    }

    /// The effective configuration as a file (every key filled in).
    pub fn to_file(&self) -> File {
        File {
            node: NodeSection {
                id: Some(self.node_id),
                interface: Some(self.interface.clone()),
                weight: Some(self.weight),
                instance: Some(self.instance.clone()),
                state_dir: Some(self.state_dir.clone()),
            },
            heartbeat: HeartbeatSection {
                interval: Some(Dur(self.interval)),
                dead_interval: Some(Dur(self.dead_interval)),
                hold_down: Some(Dur(self.hold_down)),
                heal_delay: Some(Dur(self.heal_delay)),
                peers: Some(self.peers.clone()),
                group: self.group,
                cluster_id: Some(self.cluster_id),
                port: Some(self.port),
                auth: (!self.vips.is_empty()).then_some(if self.auth_key.is_some() {
                    AuthMode::Key
                } else {
                    AuthMode::Off
                }),
                auth_key_file: self.auth_key_file.clone(),
                auth_next_key_file: self.auth_next_key_file.clone(),
            },
            pool: PoolSection {
                vips: Some(self.vips.clone()),
                preempt: Some(self.preempt),
                preferred: Some(self.preferred.clone()).filter(|p| !p.is_empty()),
                max_weight: Some(self.max_weight),
            },
            announce: AnnounceSection {
                burst: Some(self.announce_burst),
                repeats: Some(self.announce_repeats.iter().map(|d| Dur(*d)).collect()),
                refresh: Some(Dur(self.announce_refresh.unwrap_or_default())),
            },
            xdp: XdpSection {
                mode: Some(self.xdp_mode),
                pin_root: Some(self.pin_root.clone()),
            },
            metrics: MetricsSection {
                listen: self.metrics,
            },
            fastpath: FastPathSection {
                rt_priority: Some(self.rt_priority),
                shadow_senders: Some(self.shadow_senders),
            },
            checks: self.checks.clone(),
            hooks: HooksSection {
                command: self.hook.clone(),
                timeout: Some(Dur(self.hook_timeout)),
            },
            vrrp: self.vrrp.clone(),
        }
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.to_file())
            .unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Whether this node runs a pool (it may run VRRP groups as well).
    pub fn has_pool(&self) -> bool {
        !self.vips.is_empty()
    }

    /// Every VRRP group's VIPs.
    pub fn vrrp_vips(&self) -> Vec<Vip> {
        self.vrrp
            .iter()
            .flat_map(|g| g.vips.iter().copied())
            .collect()
    }

    /// What a reload to `new` cannot change without a restart, if anything. (VRRP groups
    /// change on a reload; only their interfaces are fixed, which the daemon checks.)
    pub fn needs_restart(&self, new: &Config) -> Option<&'static str> {
        if self.interface != new.interface {
            Some("the interface")
        } else if self.node_id != new.node_id {
            Some("the node id")
        } else if self.instance != new.instance || self.pin_root != new.pin_root {
            Some("the instance or pin root")
        } else if self.cluster_id != new.cluster_id || self.port != new.port {
            Some("the cluster id or port")
        } else if self.group != new.group || self.peers.is_empty() != new.peers.is_empty() {
            Some("the heartbeat group, or between multicast and unicast peers")
        } else if families(&self.destinations()) != families(&new.destinations()) {
            Some("the address families heartbeats are sent over (peers of another family)")
        } else if self.auth_key.is_some() != new.auth_key.is_some() {
            Some("heartbeat authentication on or off")
        } else if new.auth_key.is_some()
            && new.auth_key != self.auth_key
            && new.auth_key != self.auth_next_key
        {
            Some(
                "the heartbeat key to one this node does not accept yet (it would split the \
                 pool; to rotate keys, first add the new one as auth_next_key_file on every \
                 node and reload, see docs/security.md, key rotation)",
            )
        } else if self.xdp_mode != new.xdp_mode {
            Some("the XDP mode")
        } else if self.metrics != new.metrics {
            Some("the metrics address")
        } else if self.rt_priority != new.rt_priority || self.shadow_senders != new.shadow_senders {
            Some("the fast path's rt_priority or shadow_senders")
        } else if self.interval != new.interval || self.dead_interval != new.dead_interval {
            Some("the heartbeat or dead interval")
        } else if self.has_pool() != new.has_pool() {
            Some("whether this node runs a pool")
        } else if self.vrrp.is_empty() != new.vrrp.is_empty() {
            Some("whether this node runs VRRP groups")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../dist/vipd.toml");

    /// A key file (mode 0600) named `tag` in a temporary directory.
    fn key_file(tag: &str, hex: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("vipd-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auth.key");
        std::fs::write(&path, format!("{hex}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// The example configuration, its key file in a temporary directory.
    fn example(tag: &str) -> Config {
        let key = key_file(tag, "00112233445566778899aabbccddeeff");
        let text = EXAMPLE.replace("/etc/vipd/auth.key", key.to_str().unwrap());
        Config::from_file(File::parse(&text).unwrap()).unwrap()
    }

    #[test]
    fn the_example_config_is_valid() {
        let c = example("valid");
        assert!(c.auth_key.is_some());
        assert_eq!(c.node_id, 1);
        assert_eq!(c.vips.len(), 3);
        assert_eq!(c.checks.len(), 1);
    }

    #[test]
    fn effective_config_round_trips() {
        let c = example("round-trip");
        let again = Config::from_file(File::parse(&c.to_toml()).unwrap()).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let e = File::parse("[heartbeat]\nintervall = \"1s\"\n").unwrap_err();
        assert!(e.contains("heartbeat.intervall"), "{e}");
        let e = File::parse("[pool]\nvips = [\"192.0.2.1\", \"nonsense\"]\n").unwrap_err();
        assert!(e.contains("pool.vips"), "{e}");
        let e = File::parse("[[check]]\nname = \"x\"\ntype = \"ftp\"\n").unwrap_err();
        assert!(e.contains("check[0].type"), "{e}");
        let e =
            File::parse("[[check]]\nname = \"x\"\ntype = \"tcp\"\nadress = \"x\"\n").unwrap_err();
        assert!(e.contains("adress"), "{e}");
        assert!(e.contains("check"), "{e}");
        let e = File::parse("[nodes]\n").unwrap_err();
        assert!(e.contains("nodes"), "{e}");
    }

    #[test]
    fn missing_and_bad_values_are_explained() {
        let base = "[node]\nid = 1\ninterface = \"eth0\"\n";
        let cfg = |extra: &str| Config::from_file(File::parse(&format!("{base}{extra}")).unwrap());
        assert!(cfg("").unwrap_err().contains("no VIPs"));
        assert!(
            cfg("[pool]\nvips=[\"192.0.2.1\",\"192.0.2.1\"]")
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            cfg("[pool]\nvips=[\"192.0.2.1\"]\n[heartbeat]\nauth=\"off\"\ninterval=\"1s\"\ndead_interval=\"1s\"")
                .unwrap_err()
                .contains("longer")
        );
        assert!(
            cfg("[pool]\nvips=[\"192.0.2.1\"]\npreferred={\"192.0.2.2\"=1}")
                .unwrap_err()
                .contains("not in pool.vips")
        );
        let pref = cfg(
            "[pool]\nvips=[\"192.0.2.1\"]\npreferred={\"192.0.2.1\"=2}\n[heartbeat]\nauth=\"off\"",
        )
        .unwrap();
        assert_eq!(pref.preferred.len(), 1);
        assert!(
            cfg("[pool]\nvips=[\"192.0.2.1\"]\n[announce]\nrefresh=\"1000years\"")
                .unwrap_err()
                .contains("at most")
        );
        // A pool needs a key, or to say it runs without one.
        let e = cfg("[pool]\nvips=[\"192.0.2.1\"]").unwrap_err();
        assert!(
            e.contains("vipd keygen") && e.contains("auth = \"off\"") && e.contains("--insecure"),
            "{e}"
        );
        assert!(
            cfg("[pool]\nvips=[\"192.0.2.1\"]\n[heartbeat]\nauth=\"off\"\nauth_key_file=\"/k\"")
                .unwrap_err()
                .contains("remove one")
        );
        assert!(
            cfg(
                "[pool]\nvips=[\"192.0.2.1\"]\n[heartbeat]\nauth=\"off\"\nauth_next_key_file=\"/k\""
            )
            .unwrap_err()
            .contains("needs an auth_key_file")
        );
        let e = File::parse("[heartbeat]\nauth=\"maybe\"").unwrap_err();
        assert!(e.contains("expected `key` or `off`"), "{e}");
        let heavy = "[node]\nid = 1\ninterface = \"eth0\"\nweight = 11\n[heartbeat]\nauth = \"off\"\n\
                     [pool]\nvips = [\"192.0.2.1\"]\nmax_weight = 10\n";
        let e = Config::from_file(File::parse(heavy).unwrap()).unwrap_err();
        assert!(e.contains("max_weight"), "{e}");
        let ok = cfg("[pool]\nvips=[\"192.0.2.1\"]\n[heartbeat]\nauth=\"off\"").unwrap();
        assert_eq!(ok.auth_key, None);
        assert_eq!(ok.max_weight, DEFAULT_MAX_WEIGHT);
        assert_eq!(ok.destinations(), vec![IpAddr::from(DEFAULT_GROUP_V4)]);
        assert_eq!(ok.pin_dir(), PathBuf::from("/sys/fs/bpf/vipd/eth0-1"));
    }

    #[test]
    fn the_auth_key_file_is_read_checked_and_never_shown() {
        use std::os::unix::fs::PermissionsExt as _;
        let hex = "00112233445566778899aabbccddeeff";
        let key_path = key_file("auth", hex);
        let dir = key_path.parent().unwrap().to_path_buf();
        let text = format!(
            "[node]\nid = 1\ninterface = \"eth0\"\n[pool]\nvips = [\"192.0.2.1\"]\n\
             [heartbeat]\nauth_key_file = \"{}\"\n",
            key_path.display()
        );
        let c = Config::from_file(File::parse(&text).unwrap()).unwrap();
        assert_eq!(c.auth_key, Some(crate::auth::parse_key(hex).unwrap()));
        // The effective configuration names the file, never the key, and round-trips.
        let toml = c.to_toml();
        assert!(toml.contains(&format!("auth_key_file = \"{}\"", key_path.display())));
        assert!(
            !toml.contains(hex) && !format!("{c:?}").contains(hex),
            "{toml}"
        );
        assert_eq!(Config::from_file(File::parse(&toml).unwrap()).unwrap(), c);

        // Too open: refused, naming the file.
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Config::from_file(File::parse(&text).unwrap()).unwrap_err();
        assert!(
            e.contains(&key_path.display().to_string()) && e.contains("0644"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reload_rules() {
        let c = example("reload");
        let mut vips_changed = c.clone();
        vips_changed.vips.pop();
        assert_eq!(c.needs_restart(&vips_changed), None);
        let mut other_if = c.clone();
        other_if.interface = "eth9".into();
        assert_eq!(c.needs_restart(&other_if), Some("the interface"));
        // Turning authentication on or off needs a restart.
        let key = |b: u8| Some(crate::auth::Key::from_bytes([b; 16]));
        let mut off = c.clone();
        off.auth_key_file = None;
        off.auth_key = None;
        let on_off = Some("heartbeat authentication on or off");
        assert_eq!(c.needs_restart(&off), on_off);
        assert_eq!(off.needs_restart(&c), on_off);
        // A key rotation by reloads: only ever to a key the running node accepts.
        let old = c.clone();
        let mut new_key = old.clone();
        new_key.auth_key = key(2);
        assert!(
            old.needs_restart(&new_key)
                .is_some_and(|w| w.contains("auth_next_key_file")),
            "signing with a key not accepted yet would split the pool"
        );
        let mut step1 = old.clone();
        step1.auth_next_key = key(2);
        assert_eq!(old.needs_restart(&step1), None);
        let mut step2 = step1.clone();
        (step2.auth_key, step2.auth_next_key) = (step1.auth_next_key, step1.auth_key);
        assert_eq!(step1.needs_restart(&step2), None);
        let mut step3 = step2.clone();
        step3.auth_next_key = None;
        assert_eq!(step2.needs_restart(&step3), None);
        assert_eq!(old.needs_restart(&old.clone()), None);
        // Unicast peers change by reloads, within the families heartbeats already use.
        let mut more_peers = c.clone();
        more_peers.peers.push("192.0.2.14".parse().unwrap());
        assert_eq!(c.needs_restart(&more_peers), None);
        let mut v6_peer = c.clone();
        v6_peer.peers.push("2001:db8::14".parse().unwrap());
        assert!(
            c.needs_restart(&v6_peer)
                .is_some_and(|w| w.contains("families"))
        );
        let mut multicast = c.clone();
        multicast.peers.clear();
        assert!(
            c.needs_restart(&multicast)
                .is_some_and(|w| w.contains("multicast"))
        );
    }

    const VRRP: &str = r#"
[node]
id = 1
interface = "eth0"

[[vrrp]]
vrid = 51
priority = 150
vips = ["192.0.2.200/24"]
advert_interval = "100ms"
preempt = false

[[vrrp]]
vrid = 51
vips = ["2001:db8::200/64"]
"#;

    #[test]
    fn vrrp_groups_parse_default_and_round_trip() {
        let c = Config::from_file(File::parse(VRRP).unwrap()).unwrap();
        assert!(c.vips.is_empty());
        assert_eq!(c.vrrp.len(), 2);
        let (v4, v6) = (&c.vrrp[0], &c.vrrp[1]);
        assert_eq!(
            (v4.priority, v4.interval_cs(), v4.preempt),
            (150, 10, false)
        );
        assert_eq!(
            (v6.priority, v6.interval_cs(), v6.preempt),
            (100, 100, true)
        );
        assert!(v6.ipv6() && !v4.ipv6() && v6.accept);
        let again = Config::from_file(File::parse(&c.to_toml()).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn a_vrrpv2_group_carries_its_password() {
        let g =
            Vrrp::parse_spec("51,vip=192.0.2.200,interval=3s,version=2,auth_pass=secret").unwrap();
        assert_eq!(g.version, 2);
        assert_eq!(g.auth(), (vipd_common::vrrp::AUTH_PASS, *b"secret\0\0"));
        let text = "[node]\nid = 1\ninterface = \"eth0\"\n[[vrrp]]\nvrid = 51\nversion = 2\n\
                    vips = [\"192.0.2.200\"]\nadvert_interval = \"3s\"\n";
        let c = Config::from_file(File::parse(text).unwrap()).unwrap();
        assert_eq!((c.vrrp[0].version, c.vrrp[0].interval_cs()), (2, 300));
        assert_eq!(c.vrrp[0].auth(), (vipd_common::vrrp::AUTH_NONE, [0; 8]));
        let v3 = Config::from_file(File::parse(VRRP).unwrap()).unwrap();
        assert!(v3.vrrp.iter().all(|g| g.version == 3), "3 by default");
    }

    #[test]
    fn a_unicast_group_lists_its_peers_in_either_form() {
        let g = Vrrp::parse_spec(
            "51,vip=192.0.2.200/24,unicast_peer=192.0.2.13,unicast_peer=192.0.2.11,\
             unicast_src=192.0.2.12,unicast_min_ttl=255",
        )
        .unwrap();
        let text = "[node]\nid = 1\ninterface = \"eth0\"\n[[vrrp]]\nvrid = 51\n\
                    vips = [\"192.0.2.200/24\"]\nunicast_peers = [\"192.0.2.11\", \"192.0.2.13\"]\n\
                    unicast_src = \"192.0.2.12\"\nunicast_min_ttl = 255\n";
        let c = Config::from_file(File::parse(text).unwrap()).unwrap();
        let mut g = g;
        g.validate().unwrap();
        g.interface = c.vrrp[0].interface.clone();
        assert_eq!(g, c.vrrp[0]);
        assert!(g.unicast());
        let again = Config::from_file(File::parse(&c.to_toml()).unwrap()).unwrap();
        assert_eq!(again, c);
        assert!(Vrrp::parse_spec("51,unicast_peer=nowhere").is_err());
    }

    /// Every key the file accepts, as serde's derives declare them: `section.key` for the
    /// sections, `vrrp.key` and `check.key` for the `[[vrrp]]` and `[[check]]` tables.
    fn file_keys() -> Vec<String> {
        use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
        use std::cell::RefCell;

        type Error = de::value::Error;
        /// Deserializes nothing: records each struct's field names under `prefix`, visits
        /// a section's fields one level down, gives structs an empty map (their defaults)
        /// and tables one element (recorded even though it fails).
        struct Keys<'a> {
            prefix: String,
            depth: usize,
            out: &'a RefCell<Vec<String>>,
        }
        impl<'de> Deserializer<'de> for Keys<'_> {
            type Error = Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
                Err(de::Error::custom("a leaf"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                visitor: V,
            ) -> Result<V::Value, Error> {
                let mut out = self.out.borrow_mut();
                out.extend(fields.iter().map(|f| format!("{}{f}", self.prefix)));
                drop(out);
                let fields = if self.depth == 0 { fields } else { &[] };
                visitor.visit_map(Fields {
                    fields: fields.iter(),
                    out: self.out,
                    current: String::new(),
                })
            }
            fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                visitor.visit_seq(One { keys: Some(self) })
            }
            fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                visitor.visit_some(self)
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 char str string bytes byte_buf
                unit unit_struct newtype_struct tuple tuple_struct map enum identifier
                ignored_any
            }
        }
        struct Fields<'a> {
            fields: std::slice::Iter<'static, &'static str>,
            out: &'a RefCell<Vec<String>>,
            current: String,
        }
        impl<'de> MapAccess<'de> for Fields<'_> {
            type Error = Error;
            fn next_key_seed<K: DeserializeSeed<'de>>(
                &mut self,
                seed: K,
            ) -> Result<Option<K::Value>, Error> {
                let Some(f) = self.fields.next() else {
                    return Ok(None);
                };
                self.current = (*f).to_string();
                seed.deserialize(de::value::StrDeserializer::<Error>::new(f))
                    .map(Some)
            }
            fn next_value_seed<T: DeserializeSeed<'de>>(
                &mut self,
                seed: T,
            ) -> Result<T::Value, Error> {
                seed.deserialize(Keys {
                    prefix: format!("{}.", self.current),
                    depth: 1,
                    out: self.out,
                })
            }
        }
        struct One<'a> {
            keys: Option<Keys<'a>>,
        }
        impl<'de> SeqAccess<'de> for One<'_> {
            type Error = Error;
            fn next_element_seed<T: DeserializeSeed<'de>>(
                &mut self,
                seed: T,
            ) -> Result<Option<T::Value>, Error> {
                // The element fails (required fields missing) once its keys are recorded.
                Ok(self.keys.take().and_then(|k| seed.deserialize(k).ok()))
            }
        }
        let out = RefCell::new(Vec::new());
        let _ = File::deserialize(Keys {
            prefix: String::new(),
            depth: 0,
            out: &out,
        });
        out.into_inner()
    }

    /// The configuration reference (docs/configuration.md, and docs/vrrp.md for the VRRP
    /// groups' keys) names every key the code accepts, so the two cannot drift apart.
    #[test]
    fn the_configuration_reference_names_every_key() {
        let reference = include_str!("../../docs/configuration.md");
        let vrrp = include_str!("../../docs/vrrp.md");
        let keys = file_keys();
        assert!(keys.len() > 40, "{keys:?}");
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| match k.split_once('.') {
                // A section itself: its keys are checked one by one.
                None => false,
                Some(("vrrp", key)) => !vrrp.contains(&format!("{key} =")),
                Some(("check", key)) => !reference.contains(&format!("`{key}`")),
                Some(_) => !reference.contains(&format!("`{k}`")),
            })
            .collect();
        assert!(
            missing.is_empty(),
            "keys the code accepts but the reference does not name: {missing:?}"
        );
    }

    #[test]
    fn macvlan_names_name_the_interface_and_fit_linux() {
        let g = Vrrp::parse_spec("51,vip=192.0.2.200").unwrap();
        let g6 = Vrrp::parse_spec("255,vip=2001:db8::1").unwrap();
        assert_eq!(g.vmac_name(2), "vrrp4.51.2");
        assert_ne!(g.vmac_name(2), g.vmac_name(3), "one VRID on two interfaces");
        assert_eq!(g6.vmac_name(99_999), "vrrp6.255.99999");
        assert_eq!(g6.vmac_name(u32::MAX), "v6.255.ffffffff");
        assert!(g6.vmac_name(100_000).len() <= 15);
    }

    #[test]
    fn the_vrrp_example_config_is_valid() {
        let text = include_str!("../../dist/vipd-vrrp.toml");
        let c = Config::from_file(File::parse(text).unwrap()).unwrap();
        assert_eq!(c.vrrp.len(), 2);
        assert!(c.vrrp[1].ipv6());
    }

    #[test]
    fn vrrp_spec_matches_the_file_form() {
        let g = Vrrp::parse_spec(
            "51,priority=150,vip=192.0.2.200/24,interval=100ms,preempt=no,interface=eth0",
        )
        .unwrap();
        let c = Config::from_file(File::parse(VRRP).unwrap()).unwrap();
        assert_eq!(g, c.vrrp[0]);
        for bad in [
            "",
            "x",
            "300",
            "51,prio=300",
            "51,vip",
            "51,colour=red",
            "51,preempt=maybe",
        ] {
            assert!(Vrrp::parse_spec(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_vrrp_groups_are_refused_with_the_reason() {
        let bad = |group: &str, needle: &str| {
            let text = format!("[node]\nid = 1\ninterface = \"eth0\"\n[[vrrp]]\n{group}\n");
            let err = File::parse(&text)
                .and_then(Config::from_file)
                .expect_err(group);
            assert!(err.contains(needle), "{group}: {err}");
        };
        bad("vrid = 0\nvips = [\"192.0.2.1\"]", "VRID");
        bad("vrid = 256\nvips = [\"192.0.2.1\"]", "vrrp");
        bad("vrid = 1\npriority = 0\nvips = [\"192.0.2.1\"]", "priority");
        bad("vrid = 1\nvips = []", "no vips");
        bad("vrid = 1\nvips = [\"192.0.2.1\", \"2001:db8::1\"]", "mixes");
        bad(
            "vrid = 1\nvips = [\"192.0.2.1\"]\nadvert_interval = \"15ms\"",
            "centiseconds",
        );
        bad(
            "vrid = 1\nvips = [\"192.0.2.1\"]\nadvert_interval = \"1m\"",
            "centiseconds",
        );
        bad("vrid = 1\nvips = [\"192.0.2.1\"]\ncolour = 1", "colour");
        bad("vrid = 1\nversion = 4\nvips = [\"192.0.2.1\"]", "version 4");
        bad(
            "vrid = 1\nversion = 2\nvips = [\"2001:db8::1\"]",
            "IPv4 only",
        );
        bad(
            "vrid = 1\nversion = 2\nvips = [\"192.0.2.1\"]\nadvert_interval = \"100ms\"",
            "whole seconds",
        );
        bad(
            "vrid = 1\nversion = 2\nvips = [\"192.0.2.1\"]\nauth_pass = \"123456789\"",
            "1 to 8 bytes",
        );
        bad(
            "vrid = 1\nvips = [\"192.0.2.1\"]\nauth_pass = \"secret\"",
            "VRRPv2's",
        );
        let v4 = "vrid = 1\nvips = [\"192.0.2.1\"]\n";
        bad(
            &format!("{v4}unicast_peers = [\"2001:db8::2\"]"),
            "not ipv4",
        );
        bad(
            &format!("{v4}unicast_peers = [\"192.0.2.1\"]"),
            "not one of",
        );
        bad(
            &format!("{v4}unicast_peers = [\"224.0.0.18\"]"),
            "unicast address",
        );
        bad(
            &format!("{v4}unicast_src = \"192.0.2.12\""),
            "need unicast_peers",
        );
        bad(&format!("{v4}unicast_min_ttl = 255"), "need unicast_peers");
        bad(
            &format!("{v4}unicast_peers = [\"192.0.2.11\", \"192.0.2.11\"]"),
            "twice",
        );
        bad(
            &format!("{v4}unicast_peers = [\"192.0.2.11\"]\nunicast_src = \"192.0.2.11\""),
            "also a unicast peer",
        );
        let nine: Vec<String> = (1..=9).map(|i| format!("\"192.0.2.{}\"", 10 + i)).collect();
        bad(
            &format!("{v4}unicast_peers = [{}]", nine.join(", ")),
            "at most 8",
        );
        bad(
            "vrid = 1\nvips = [\"192.0.2.1\"]\n[[vrrp]]\nvrid = 1\nvips = [\"192.0.2.2\"]",
            "twice",
        );
        bad(
            "vrid = 1\nvips = [\"192.0.2.1\"]\n[pool]\nvips = [\"192.0.2.1\", \"192.0.2.9\"]",
            "one owner",
        );
    }

    #[test]
    fn a_node_may_run_a_pool_and_vrrp_groups() {
        let text = "[node]\nid = 1\ninterface = \"eth0\"\n[heartbeat]\nauth = \"off\"\n\
                    [pool]\nvips = [\"192.0.2.8\", \"192.0.2.9\"]\n[[vrrp]]\nvrid = 51\nvips = [\"192.0.2.1\"]\n";
        let c = Config::from_file(File::parse(text).unwrap()).unwrap();
        assert!(c.has_pool());
        assert_eq!((c.vips.len(), c.vrrp.len()), (2, 1));
        assert_eq!(c.vrrp[0].interface(), "eth0");
        let mut vrrp_only = c.clone();
        vrrp_only.vips.clear();
        assert_eq!(
            c.needs_restart(&vrrp_only),
            Some("whether this node runs a pool")
        );
    }
}
