//! The configuration file as written: every section and key, all optional, as serde reads
//! and writes them. [`super::Config`] is what the daemon runs with, validated.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{health::Check, vrrp::Vrrp};
use crate::vip::Vip;

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
