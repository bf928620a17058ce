//! Command line: `vipd run …`, parsed with clap and validated into a [`Config`].

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use vipd_common::heartbeat::DEFAULT_PORT;

use crate::{heartbeat::DEFAULT_GROUP_V4, placement::Member, vip::Vip, xdp::AttachMode};

/// vipd: keeps the virtual IPs of a round-robin DNS name alive, moving them from failed
/// nodes to live ones within milliseconds. Heartbeats are parsed by an XDP program.
#[derive(Debug, Parser)]
#[command(name = "vipd", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the failover daemon on one interface (needs root, or CAP_BPF, CAP_NET_ADMIN and
    /// CAP_NET_RAW).
    Run(RunArgs),
    /// Capacity planner: each node's share of a pool now, and after every combination of
    /// up to k node failures, with the worst-case load multiplier (VIPs held after the
    /// failures ÷ VIPs held now). Uses the daemon's own placement.
    Plan(PlanArgs),
}

/// `vipd plan` flags.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// A node as ID or ID:WEIGHT (repeat, or comma-separate).
    #[arg(long = "node", value_delimiter = ',', value_parser = parse_member,
          required_unless_present = "nodes")]
    pub node: Vec<Member>,

    /// Shorthand for --node 1,2,…,N (all weight 1).
    #[arg(long, conflicts_with = "node", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub nodes: Option<u32>,

    /// The pool's VIPs (repeat, or comma-separate) …
    #[arg(long = "vip", value_delimiter = ',', required_unless_present = "vips")]
    pub vip: Vec<Vip>,

    /// … or just how many there are.
    #[arg(long, conflicts_with = "vip")]
    pub vips: Option<usize>,

    /// Plan for up to this many simultaneous node failures.
    #[arg(short = 'k', long, default_value_t = 1)]
    pub failures: usize,

    /// Plan for a pool run with --no-preempt.
    #[arg(long)]
    pub no_preempt: bool,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_member(s: &str) -> Result<Member, String> {
    let (id, weight) = s.split_once(':').unwrap_or((s, "1"));
    let id: u32 = id
        .parse()
        .ok()
        .filter(|&i| i > 0)
        .ok_or("node ids are whole numbers from 1")?;
    let weight: u32 = weight
        .parse()
        .ok()
        .filter(|&w| (1..=u32::from(u16::MAX)).contains(&w))
        .ok_or("weights are whole numbers from 1 to 65535")?;
    Ok(Member { id, weight })
}

/// `vipd run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The cluster interface: heartbeats are sent and parsed here, VIPs are added here.
    #[arg(short, long)]
    pub interface: String,

    /// This node's id: unique in the cluster, 1 or more.
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..))]
    pub node_id: u32,

    /// A VIP of the pool (repeat, or comma-separate). Every node lists the same VIPs.
    /// `192.0.2.201` is added as /32, `2001:db8::201` as /128; `ADDR/LEN` sets the prefix.
    #[arg(long = "vip", required = true, value_delimiter = ',')]
    pub vips: Vec<Vip>,

    /// A peer to send heartbeats to by unicast (repeat, or comma-separate). With peers,
    /// no multicast is sent unless --group is given too.
    #[arg(long = "peer", value_delimiter = ',')]
    pub peers: Vec<IpAddr>,

    /// Multicast group for heartbeats [default: 224.0.0.199 when no --peer is given].
    #[arg(long)]
    pub group: Option<IpAddr>,

    /// Cluster id: nodes only listen to heartbeats of their own cluster.
    #[arg(long, default_value_t = 1)]
    pub cluster_id: u32,

    /// UDP port of heartbeats.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Time between heartbeats (e.g. 100ms, 1s, 500us).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// Silence after which a peer is declared dead [default: 3 × interval].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub dead_interval: Option<Duration>,

    /// How long a starting node waits before it takes VIPs (and before peers give it
    /// VIPs back); the wait starts again whenever the interface regains carrier, so a
    /// flapping node does not drag VIPs back and forth.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub hold_down: Duration,

    /// This node's placement weight: its share of the pool is proportional to it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub weight: u16,

    /// Do not move VIPs to rebalance: a VIP stays where it is until its holder leaves.
    #[arg(long)]
    pub no_preempt: bool,

    /// Gratuitous ARPs / unsolicited NAs sent at once on takeover.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub announce_burst: u16,

    /// When to announce again after a takeover (comma-separated, from the takeover).
    #[arg(long, default_value = "50ms,250ms,1s", value_delimiter = ',',
          value_parser = humantime::parse_duration)]
    pub announce_repeats: Vec<Duration>,

    /// Re-announce every held VIP this often, so stale ARP caches converge (0s: never).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub announce_refresh: Duration,

    /// Name of this instance: maps are pinned in <pin-root>/<instance>
    /// [default: <interface>-<node-id>].
    #[arg(long)]
    pub instance: Option<String>,

    /// bpffs directory under which each instance pins its maps.
    #[arg(long, default_value = "/sys/fs/bpf/vipd")]
    pub pin_root: PathBuf,

    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub xdp_mode: AttachMode,
}

/// Most VIPs in one pool (the state section of a heartbeat must fit in one datagram).
pub const MAX_VIPS: usize = 10_000;

/// A validated configuration for one daemon.
#[derive(Clone, Debug)]
pub struct Config {
    /// Cluster interface.
    pub interface: String,
    /// This node.
    pub node_id: u32,
    /// The pool, sorted, no duplicates.
    pub vips: Vec<Vip>,
    /// Heartbeat destinations (peers and/or group).
    pub destinations: Vec<IpAddr>,
    /// Cluster id.
    pub cluster_id: u32,
    /// Heartbeat port.
    pub port: u16,
    /// Heartbeat interval.
    pub interval: Duration,
    /// Dead interval.
    pub dead_interval: Duration,
    /// Hold-down before taking or getting VIPs.
    pub hold_down: Duration,
    /// Placement weight.
    pub weight: u16,
    /// Rebalance by moving VIPs (false: only orphaned VIPs move).
    pub preempt: bool,
    /// Announcements at takeover.
    pub announce_burst: u16,
    /// Repeats after a takeover.
    pub announce_repeats: Vec<Duration>,
    /// Periodic re-announcement (None: off).
    pub announce_refresh: Option<Duration>,
    /// Pin directory of this instance.
    pub pin_dir: PathBuf,
    /// XDP attach mode.
    pub xdp_mode: AttachMode,
}

impl TryFrom<RunArgs> for Config {
    type Error = String;

    fn try_from(a: RunArgs) -> Result<Self, String> {
        if a.interval.is_zero() {
            return Err("--interval must be more than zero".into());
        }
        let dead_interval = a.dead_interval.unwrap_or(a.interval * 3);
        if dead_interval <= a.interval {
            return Err(format!(
                "--dead-interval ({dead_interval:?}) must be longer than --interval ({:?})",
                a.interval
            ));
        }
        if a.interval > Duration::from_secs(3600) || dead_interval.as_nanos() > u64::MAX as u128 {
            return Err("--interval and --dead-interval must be at most an hour".into());
        }
        if a.vips.len() > MAX_VIPS {
            return Err(format!("at most {MAX_VIPS} VIPs per pool"));
        }
        let mut vips = a.vips;
        vips.sort();
        if let Some(w) = vips.windows(2).find(|w| w[0].addr == w[1].addr) {
            return Err(format!("VIP {} is listed twice", w[0].addr));
        }
        if let Some(p) = a
            .peers
            .iter()
            .find(|p| p.is_multicast() || p.is_unspecified())
        {
            return Err(format!(
                "--peer {p} must be a unicast address (use --group for multicast)"
            ));
        }
        if let Some(g) = a.group.filter(|g| !g.is_multicast()) {
            return Err(format!("--group {g} is not a multicast address"));
        }
        let mut destinations = a.peers;
        match a.group {
            Some(g) => destinations.push(g),
            None if destinations.is_empty() => destinations.push(DEFAULT_GROUP_V4.into()),
            None => {}
        }
        let instance = a
            .instance
            .unwrap_or_else(|| format!("{}-{}", a.interface, a.node_id));
        if instance.is_empty() || instance.contains('/') || instance.starts_with('.') {
            return Err(format!("--instance {instance:?} must be a plain file name"));
        }
        Ok(Config {
            pin_dir: a.pin_root.join(instance),
            interface: a.interface,
            node_id: a.node_id,
            vips,
            destinations,
            cluster_id: a.cluster_id,
            port: a.port,
            interval: a.interval,
            dead_interval,
            hold_down: a.hold_down,
            weight: a.weight,
            preempt: !a.no_preempt,
            announce_burst: a.announce_burst,
            announce_repeats: a.announce_repeats,
            announce_refresh: Some(a.announce_refresh).filter(|d| !d.is_zero()),
            xdp_mode: a.xdp_mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli =
            Cli::try_parse_from(["vipd", "run"].iter().chain(args)).map_err(|e| e.to_string())?;
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        Config::try_from(run)
    }

    #[test]
    fn defaults() {
        let c = parse(&["-i", "eth0", "-n", "1", "--vip", "192.0.2.202,192.0.2.201"]).unwrap();
        assert_eq!(c.interval, Duration::from_millis(100));
        assert_eq!(c.dead_interval, Duration::from_millis(300));
        assert_eq!(c.destinations, vec![IpAddr::from(DEFAULT_GROUP_V4)]);
        assert_eq!(c.vips[0].to_string(), "192.0.2.201/32");
        assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/vipd/eth0-1"));
    }

    #[test]
    fn peers_replace_multicast() {
        let c = parse(&[
            "-i",
            "e",
            "-n",
            "2",
            "--vip",
            "192.0.2.1",
            "--peer",
            "192.0.2.11",
        ])
        .unwrap();
        assert_eq!(
            c.destinations,
            vec!["192.0.2.11".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn bad_values_are_errors() {
        let base = ["-i", "e", "-n", "1", "--vip", "192.0.2.1"];
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        assert!(parse(&["-i", "e", "-n", "0", "--vip", "192.0.2.1"]).is_err());
        assert!(parse(&["-i", "e", "-n", "1"]).is_err(), "a VIP is required");
        assert!(with(&["--interval", "soon"]).is_err());
        assert!(with(&["--interval", "100ms", "--dead-interval", "50ms"]).is_err());
        assert!(with(&["--vip", "192.0.2.1"]).is_err(), "duplicate VIP");
        assert!(with(&["--peer", "224.0.0.1"]).is_err());
        assert!(with(&["--group", "192.0.2.9"]).is_err());
        assert!(with(&["--instance", "../x"]).is_err());
        assert!(with(&["--vip", "not-an-ip"]).is_err());
    }
}
