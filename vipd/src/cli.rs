//! Command line, parsed with clap. `run` and `check-config` read the configuration file
//! and apply their flags on top of it.

use std::{net::IpAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::{
    config::{AuthMode, Config, DEFAULT_CONFIG, Dur, File},
    pool::placement::Member,
    vip::Vip,
    xdp::AttachMode,
};

/// vipd: keeps the virtual IPs of a round-robin DNS name alive, moving them from failed
/// nodes to live ones within milliseconds. Heartbeats are parsed by an XDP program.
///
/// Every node of a pool runs `vipd run` with its own node id and the same VIPs, from
/// /etc/vipd/vipd.toml or flags. Needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW).
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
    /// Run the failover daemon
    ///
    /// SIGHUP reloads the configuration (only what changed is
    /// touched; an invalid file is rejected and the running configuration kept);
    /// SIGTERM/SIGINT leave the cluster cleanly (LEAVING, VIPs released).
    #[command(after_long_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Validate the configuration and print the effective configuration
    ///
    /// The file and flags are merged and checked; the output is itself a valid configuration file. Exits 1 on an error, naming the key.
    #[command(after_long_help = "EXAMPLE:\n    vipd check-config --config /etc/vipd/vipd.toml")]
    CheckConfig(RunArgs),
    /// Show a running node: peers, VIP owners, checks, XDP counters
    ///
    /// Shows its state, the peers (last heard, in the view or not), who
    /// holds each VIP, health checks, XDP counters, and whether the members' views agree.
    /// Asks the daemon's control socket (/run/vipd/<instance>.sock, root only); with no
    /// daemon answering, reads the pinned maps instead.
    #[command(
        after_long_help = "EXAMPLES:\n    vipd status --instance eth0-1\n    vipd status --config /etc/vipd/vipd.toml --json"
    )]
    Status(StatusArgs),
    /// Print the round-robin DNS records (A/AAAA) for the pool
    ///
    /// Publish the VIPs, never the nodes' own addresses.
    #[command(
        after_long_help = "EXAMPLE:\n    vipd zone --name www --ttl 60 --config /etc/vipd/vipd.toml"
    )]
    Zone(ZoneArgs),
    /// Capacity planner: each node's share now and after up to k failures
    ///
    /// Each node's share of a pool now, and after every combination of
    /// up to k node failures, with the worst-case load multiplier (VIPs held after the
    /// failures ÷ VIPs held now). Uses the daemon's own placement.
    #[command(
        after_long_help = "EXAMPLES:\n    vipd plan --nodes 2 --vips 3\n    vipd plan --node 1:1,2:1,3:2 --vips 8 -k 2 --json"
    )]
    Plan(PlanArgs),
    /// Write a new random heartbeat authentication key
    ///
    /// Writes 32 hex characters (a 128-bit key from the kernel's random number generator)
    /// to PATH with mode 0600, refusing to overwrite an existing file; with no PATH, prints
    /// the key. Copy the file to every node and set [heartbeat] auth_key_file (or
    /// --auth-key-file) to it.
    #[command(
        after_long_help = "EXAMPLE:\n    vipd keygen /etc/vipd/auth.key\n    scp -p /etc/vipd/auth.key node2:/etc/vipd/auth.key"
    )]
    Keygen {
        /// Where to write the key [default: print it].
        path: Option<PathBuf>,
    },
    /// Maintenance mode: give this node's VIPs to its peers and stay out until undrained
    ///
    /// The pool's VIPs move to their placement successors and the node leaves its VRRP
    /// groups, as for a failing health check; it stays out of placement, across restarts
    /// of vipd, until `vipd undrain`. With --wait, returns once the node holds no VIP and
    /// is Master of no group.
    #[command(
        after_long_help = "EXAMPLES:\n    vipd drain --config /etc/vipd/vipd.toml --wait\n    vipd undrain --config /etc/vipd/vipd.toml"
    )]
    Drain(DrainArgs),
    /// Return a drained node to its pool and groups
    Undrain(DrainArgs),
    /// Print a shell completion script
    ///
    /// The package installs them; from a source build, e.g.
    /// `vipd completions bash > /etc/bash_completion.d/vipd`.
    #[command(after_long_help = "EXAMPLE:\n    vipd completions zsh > ~/.zfunc/_vipd")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (vipd.8 and one per subcommand) into DIR
    #[command(hide = true)]
    Man {
        /// Where to write them.
        dir: PathBuf,
    },
}

const RUN_EXAMPLES: &str = "EXAMPLES:
    Two nodes, two VIPs, multicast heartbeats (run the same on node 2 with -n 2):
        vipd run -i eth0 -n 1 --vip 192.0.2.201,192.0.2.202

    Unicast heartbeats (clouds without multicast), faster detection:
        vipd run -i eth0 -n 1 --vip 192.0.2.201,192.0.2.202 --peer 192.0.2.12 \\
                 --interval 20ms --dead-interval 60ms

    From the configuration file, as the systemd unit does:
        vipd run --config /etc/vipd/vipd.toml

SIGNALS:
    SIGHUP           reload the configuration (invalid or restart-only changes are rejected)
    SIGTERM, SIGINT  send LEAVING, release VIPs, detach, exit

ENVIRONMENT:
    VIPD_LOG         log filter (info, debug, vipd=debug, ...)";

/// Flags of `run` and `check-config`; each overrides the configuration file's key.
#[derive(Debug, Args, Default, Clone)]
pub struct RunArgs {
    /// Configuration file [default: /etc/vipd/vipd.toml, if it exists].
    #[arg(short, long)]
    pub config: Option<PathBuf>,

    /// The cluster interface: heartbeats are sent and parsed here, VIPs are added here
    /// ([node] interface).
    #[arg(short, long)]
    pub interface: Option<String>,

    /// This node's id: unique in the cluster, 1 or more ([node] id).
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..))]
    pub node_id: Option<u32>,

    /// A VIP of the pool (repeat, or comma-separate); every node lists the same VIPs.
    /// `192.0.2.201` is added as /32, `2001:db8::201` as /128; `ADDR/LEN` sets the prefix
    /// ([pool] vips).
    #[arg(long = "vip", value_delimiter = ',')]
    pub vips: Vec<Vip>,

    /// A VRRP group (VRRP mode, repeat for more): `VRID,key=value,…` with `priority=1-255`
    /// [100], `vip=ADDR[/LEN]` (repeat; one family per group), `interval=1s` (advert
    /// interval, whole centiseconds), `preempt=yes|no` [yes], `accept=yes|no` [yes],
    /// `vmac=yes|no` [no: the interface's MAC; yes: 00:00:5e:00:01:VRID on a macvlan],
    /// `interface=NAME` [--interface]; e.g.
    /// `--vrrp 51,priority=150,vip=192.0.2.200/24,interval=100ms` ([[vrrp]]).
    #[arg(long = "vrrp", value_parser = crate::config::Vrrp::parse_spec)]
    pub vrrp: Vec<crate::config::Vrrp>,

    /// A peer to send heartbeats to by unicast (repeat, or comma-separate). With peers,
    /// no multicast is sent unless --group is given too ([heartbeat] peers).
    #[arg(long = "peer", value_delimiter = ',')]
    pub peers: Vec<IpAddr>,

    /// Multicast group for heartbeats [default: 224.0.0.199 when there are no peers].
    #[arg(long)]
    pub group: Option<IpAddr>,

    /// Cluster id: nodes only listen to heartbeats of their own cluster [default: 1].
    #[arg(long)]
    pub cluster_id: Option<u32>,

    /// UDP port of heartbeats [default: 7846].
    #[arg(long)]
    pub port: Option<u16>,

    /// Authenticate heartbeats with the shared key in PATH (32 hex characters, mode 0600,
    /// the same file on every node; `vipd keygen PATH` makes one). Heartbeats without a
    /// valid MAC, and replayed ones, are counted and ignored. A pool needs a key unless
    /// --insecure ([heartbeat] auth_key_file).
    #[arg(long, value_name = "PATH")]
    pub auth_key_file: Option<PathBuf>,

    /// Run the pool without authentication: anyone who can send a packet onto the
    /// cluster's link can then move, hold or free its VIPs ([heartbeat] auth = "off").
    #[arg(long, conflicts_with = "auth_key_file")]
    pub insecure: bool,

    /// Time between heartbeats (e.g. 2ms, 100ms, 500us; at least 500us) [default: 2ms].
    #[arg(long)]
    pub interval: Option<Dur>,

    /// Silence after which a peer is declared dead [default: 5 × interval].
    #[arg(long)]
    pub dead_interval: Option<Dur>,

    /// How long a node waits before it takes VIPs (and before peers give it VIPs back),
    /// after it starts and whenever its interface regains carrier, so a flapping node
    /// does not drag VIPs back and forth [default: 1s].
    #[arg(long)]
    pub hold_down: Option<Dur>,

    /// How long a peer lost by timeout (a partition, a lossy link) must be heard again
    /// before VIPs are placed on it again [default: the hold-down].
    #[arg(long)]
    pub heal_delay: Option<Dur>,

    /// This node's placement weight: its share of the pool is proportional to it
    /// [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub weight: Option<u16>,

    /// Do not move VIPs to rebalance: a VIP stays where it is until its holder leaves.
    #[arg(long)]
    pub no_preempt: bool,

    /// Gratuitous ARPs / unsolicited NAs sent at once on takeover [default: 3].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub announce_burst: Option<u16>,

    /// When to announce again after a takeover, comma-separated [default: 50ms,250ms,1s].
    #[arg(long, value_delimiter = ',')]
    pub announce_repeats: Vec<Dur>,

    /// Re-announce every held VIP this often, so stale ARP caches converge (0s: never)
    /// [default: 60s].
    #[arg(long)]
    pub announce_refresh: Option<Dur>,

    /// Name of this instance: maps are pinned in <pin-root>/<instance>, the control socket
    /// is /run/vipd/<instance>.sock [default: <interface>-<node-id>].
    #[arg(long)]
    pub instance: Option<String>,

    /// bpffs directory under which each instance pins its maps [default: /sys/fs/bpf/vipd].
    #[arg(long)]
    pub pin_root: Option<PathBuf>,

    /// XDP attach mode [default: auto].
    #[arg(long, value_enum)]
    pub xdp_mode: Option<AttachMode>,

    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9797 [default: off].
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,

    /// SCHED_FIFO priority (1-99) of the fast path's thread, which sends heartbeats,
    /// watches deadlines and takes VIPs over; 0 runs it at normal priority. Needs
    /// CAP_SYS_NICE (and CAP_IPC_LOCK to lock memory), else it says so and runs at
    /// normal priority [default: 40] ([fastpath] rt_priority).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=99))]
    pub rt_priority: Option<u8>,

    /// Do not start the shadow senders: threads pinned to each CPU that send the heartbeat
    /// when the fast path misses a slot because its CPU was stopped under it (hypervisors
    /// do that for milliseconds) ([fastpath] shadow_senders = false).
    #[arg(long)]
    pub no_shadow_senders: bool,

    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}

impl RunArgs {
    /// The configuration file to read, if any: --config, else the default if it exists.
    pub fn config_path(&self) -> Option<PathBuf> {
        self.config.clone().or_else(|| {
            let default = PathBuf::from(DEFAULT_CONFIG);
            default.exists().then_some(default)
        })
    }

    /// Reads the file (if any), applies the flags, validates.
    pub fn load(&self) -> Result<Config, String> {
        let mut file = match self.config_path() {
            Some(path) => File::load(&path)?,
            None => File::default(),
        };
        self.apply(&mut file);
        Config::from_file(file)
    }

    fn apply(&self, f: &mut File) {
        fn set<T: Clone>(slot: &mut Option<T>, flag: &Option<T>) {
            if flag.is_some() {
                slot.clone_from(flag);
            }
        }
        set(&mut f.node.interface, &self.interface);
        set(&mut f.node.id, &self.node_id);
        set(&mut f.node.weight, &self.weight);
        set(&mut f.node.instance, &self.instance);
        if !self.vips.is_empty() {
            f.pool.vips = Some(self.vips.clone());
        }
        if !self.vrrp.is_empty() {
            f.vrrp = self.vrrp.clone();
        }
        if self.no_preempt {
            f.pool.preempt = Some(false);
        }
        if !self.peers.is_empty() {
            f.heartbeat.peers = Some(self.peers.clone());
        }
        set(&mut f.heartbeat.group, &self.group);
        set(&mut f.heartbeat.cluster_id, &self.cluster_id);
        set(&mut f.heartbeat.port, &self.port);
        set(&mut f.heartbeat.auth_key_file, &self.auth_key_file);
        if self.auth_key_file.is_some() {
            f.heartbeat.auth = Some(AuthMode::Key);
        }
        if self.insecure {
            f.heartbeat.auth = Some(AuthMode::Off);
        }
        set(&mut f.heartbeat.interval, &self.interval);
        set(&mut f.heartbeat.dead_interval, &self.dead_interval);
        set(&mut f.heartbeat.hold_down, &self.hold_down);
        set(&mut f.heartbeat.heal_delay, &self.heal_delay);
        set(&mut f.announce.burst, &self.announce_burst);
        if !self.announce_repeats.is_empty() {
            f.announce.repeats = Some(self.announce_repeats.clone());
        }
        set(&mut f.announce.refresh, &self.announce_refresh);
        set(&mut f.xdp.pin_root, &self.pin_root);
        set(&mut f.xdp.mode, &self.xdp_mode);
        set(&mut f.metrics.listen, &self.metrics);
        set(&mut f.fastpath.rt_priority, &self.rt_priority);
        if self.no_shadow_senders {
            f.fastpath.shadow_senders = Some(false);
        }
    }
}

/// Which running daemon a command asks (`status`, `drain`, `undrain`).
#[derive(Debug, Args)]
pub struct Target {
    /// The instance (as given to `vipd run`).
    #[arg(long, required_unless_present = "config")]
    pub instance: Option<String>,

    /// …or the configuration file it runs with (the instance is derived from it).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
}

/// `vipd status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `vipd drain` and `vipd undrain` flags.
#[derive(Debug, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub target: Target,

    /// Wait until the node holds no VIP and is Master of no VRRP group (drain only).
    #[arg(long)]
    pub wait: bool,

    /// How long --wait waits before it fails.
    #[arg(long, default_value = "30s")]
    pub timeout: Dur,
}

/// `vipd zone` flags.
#[derive(Debug, Args)]
pub struct ZoneArgs {
    /// The record name, e.g. `www` or `www.example.com.`.
    #[arg(long)]
    pub name: String,

    /// Time to live of the records, seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl: u32,

    /// The pool's VIPs (otherwise read from the configuration file).
    #[arg(long = "vip", value_delimiter = ',')]
    pub vips: Vec<Vip>,

    /// Configuration file [default: /etc/vipd/vipd.toml].
    #[arg(short, long)]
    pub config: Option<PathBuf>,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use vipd_common::heartbeat::DEFAULT_GROUP_V4;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(["vipd", "run", "--config", "/dev/null"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        run.load()
    }

    #[test]
    fn defaults() {
        let c = parse(&[
            "-i",
            "eth0",
            "-n",
            "1",
            "--vip",
            "192.0.2.202,192.0.2.201",
            "--insecure",
        ])
        .unwrap();
        assert_eq!(c.pool.auth_key, None);
        assert_eq!(c.pool.interval, Duration::from_millis(2));
        assert_eq!(c.pool.dead_interval, Duration::from_millis(10));
        assert_eq!(c.pool.destinations(), vec![IpAddr::from(DEFAULT_GROUP_V4)]);
        assert_eq!(c.pool.vips[0].to_string(), "192.0.2.201/32");
        assert_eq!(c.node.pin_dir(), PathBuf::from("/sys/fs/bpf/vipd/eth0-1"));
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
            "--insecure",
        ])
        .unwrap();
        assert_eq!(
            c.pool.destinations(),
            vec!["192.0.2.11".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("vipd-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vipd.toml");
        std::fs::write(
            &path,
            "[node]\nid = 3\ninterface = \"eth1\"\n[pool]\nvips = [\"192.0.2.9\"]\n\
             [heartbeat]\nauth = \"off\"\n",
        )
        .unwrap();
        let cli =
            Cli::try_parse_from(["vipd", "run", "-c", path.to_str().unwrap(), "-n", "4"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        let c = run.load().unwrap();
        assert_eq!((c.node.id, c.node.interface.as_str()), (4, "eth1"));
        std::fs::remove_dir_all(dir).unwrap();
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
        assert!(parse(&["--config", "/nonexistent/vipd.toml"]).is_err());
    }
}
