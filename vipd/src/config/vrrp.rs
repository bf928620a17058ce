//! `[[vrrp]]` groups: one VRRPv3 (RFC 5798) or VRRPv2 (RFC 3768) virtual router each, its
//! `--vrrp` form, and their checks.

use std::{net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};

use super::file::Dur;
use crate::vip::Vip;

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

    pub(super) fn validate(&mut self) -> Result<(), String> {
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

/// Validates each `[[vrrp]]` group (its interface defaulting to `interface`), and that no
/// VRID is declared twice per family and no address is in two groups.
pub(super) fn check_groups(vrrp: &mut [Vrrp], interface: &str) -> Result<(), String> {
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
