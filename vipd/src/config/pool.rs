//! The pool: its VIPs, placement settings and the heartbeats that carry its membership
//! (`[pool]`, `[heartbeat]`, `[node] weight`), checked.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, time::Duration};

use vipd_common::heartbeat::{DEFAULT_GROUP_V4, DEFAULT_PORT};

use super::file::{AuthMode, Dur, File, HeartbeatSection, PoolSection};
use crate::{auth::Key, vip::Vip};

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
/// The largest weight a peer is given by default (`[pool] max_weight`): a forged or
/// misconfigured heartbeat cannot claim the whole pool.
pub const DEFAULT_MAX_WEIGHT: u16 = 100;
/// The hold-down unless configured.
const DEFAULT_HOLD_DOWN: Duration = Duration::from_secs(1);

/// The pool and its heartbeats, validated. A node that runs only VRRP groups has no VIPs
/// here (the heartbeat settings still have their defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// The VIPs, sorted, no duplicates (empty: no pool).
    pub vips: Vec<Vip>,
    /// This node's placement weight.
    pub weight: u16,
    /// Ceiling on the weights peers announce.
    pub max_weight: u16,
    /// Rebalance by moving VIPs (false: only orphaned VIPs move).
    pub preempt: bool,
    /// Preferred node per VIP.
    pub preferred: BTreeMap<IpAddr, u32>,
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
}

impl Pool {
    /// Checks `[pool]`, `[heartbeat]` and the node's weight, and fills in defaults.
    pub fn check(f: &File) -> Result<Self, String> {
        let h = &f.heartbeat;
        let (interval, dead_interval) = heartbeat_timers(h)?;
        let mut vips = f.pool.vips.clone().unwrap_or_default();
        check_vips(&mut vips)?;
        let peers = h.peers.clone().unwrap_or_default();
        if let Some(p) = peers
            .iter()
            .find(|p| p.is_multicast() || p.is_unspecified())
        {
            return Err(format!(
                "peer {p} must be a unicast address (use the group for multicast)"
            ));
        }
        if let Some(g) = h.group.filter(|g| !g.is_multicast()) {
            return Err(format!("group {g} is not a multicast address"));
        }
        let preferred = f.pool.preferred.clone().unwrap_or_default();
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
        super::at_most("heartbeat.hold_down", h.hold_down, super::DAY)?;
        super::at_most("heartbeat.heal_delay", h.heal_delay, super::DAY)?;
        let hold_down = h.hold_down.map_or(DEFAULT_HOLD_DOWN, |d| d.0);
        let (auth_key, auth_next_key) = auth_keys(h, !vips.is_empty())?;
        Ok(Pool {
            vips,
            weight,
            max_weight,
            preempt: f.pool.preempt.unwrap_or(true),
            preferred,
            peers,
            group: h.group,
            cluster_id: h.cluster_id.unwrap_or(1),
            port: h.port.unwrap_or(DEFAULT_PORT),
            auth_key_file: h.auth_key_file.clone(),
            auth_key,
            auth_next_key_file: h.auth_next_key_file.clone(),
            auth_next_key,
            interval,
            dead_interval,
            hold_down,
            heal_delay: h.heal_delay.map_or(hold_down, |d| d.0),
        })
    }

    /// Writes the pool's keys, every one filled in, into `f`.
    pub fn write(&self, f: &mut File) {
        f.node.weight = Some(self.weight);
        f.heartbeat = HeartbeatSection {
            interval: Some(Dur(self.interval)),
            dead_interval: Some(Dur(self.dead_interval)),
            hold_down: Some(Dur(self.hold_down)),
            heal_delay: Some(Dur(self.heal_delay)),
            peers: Some(self.peers.clone()),
            group: self.group,
            cluster_id: Some(self.cluster_id),
            port: Some(self.port),
            auth: self.enabled().then_some(if self.auth_key.is_some() {
                AuthMode::Key
            } else {
                AuthMode::Off
            }),
            auth_key_file: self.auth_key_file.clone(),
            auth_next_key_file: self.auth_next_key_file.clone(),
        };
        f.pool = PoolSection {
            vips: Some(self.vips.clone()),
            preempt: Some(self.preempt),
            preferred: Some(self.preferred.clone()).filter(|p| !p.is_empty()),
            max_weight: Some(self.max_weight),
        };
    }

    /// Whether this node runs a pool (it has VIPs).
    pub fn enabled(&self) -> bool {
        !self.vips.is_empty()
    }

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

    /// What a reload to `new` cannot change in the pool without a restart, if anything.
    pub fn needs_restart(&self, new: &Pool) -> Option<&'static str> {
        if self.cluster_id != new.cluster_id || self.port != new.port {
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
        } else if self.interval != new.interval || self.dead_interval != new.dead_interval {
            Some("the heartbeat or dead interval")
        } else if self.enabled() != new.enabled() {
            Some("whether this node runs a pool")
        } else {
            None
        }
    }
}

/// Longest dead interval (heartbeats carry it as `u32` microseconds); a peer saying more is
/// waited for this long.
pub const MAX_DEAD_INTERVAL: Duration = Duration::from_secs(3600);

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
    if dead_interval > MAX_DEAD_INTERVAL {
        return Err(format!(
            "the dead interval ({dead_interval:?}) must be at most {MAX_DEAD_INTERVAL:?} \
             (heartbeats carry it in microseconds, 32 bits)"
        ));
    }
    Ok((interval, dead_interval))
}

/// The pool's VIPs: at most [`MAX_VIPS`], none twice; sorted.
fn check_vips(vips: &mut [Vip]) -> Result<(), String> {
    if vips.len() > MAX_VIPS {
        return Err(format!("at most {MAX_VIPS} VIPs per pool"));
    }
    vips.sort();
    if let Some(w) = vips.windows(2).find(|w| w[0].addr == w[1].addr) {
        return Err(format!("VIP {} is listed twice", w[0].addr));
    }
    Ok(())
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
