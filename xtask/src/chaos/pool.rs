//! The pool under chaos: three vipd nodes (6 VIPs), a client and an intruder. Invariants:
//! every VIP on exactly one running node, two per node, the client reaching it at that
//! node's MAC, no daemon gone — and, while a cut between two nodes lasts that the third
//! sees across (a restart of one side during it included), no VIP on two nodes. Faults
//! include long ones (a cable pulled past every forget time), one-way cuts and faults
//! during faults (a restart, or the witness frozen, during a cut). An intruder claims VIPs now and then (gratuitous ARP
//! from a new MAC): the holder must win the client back.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Serialize;
use vipd_lab::lab::{Host, Lab};

use super::{CONVERGE, Cluster, Rng, claim, converge, flap, lossy, monotonic_s, tail};

const VIPS: [&str; 6] = [
    "192.0.2.201",
    "192.0.2.202",
    "192.0.2.203",
    "192.0.2.204",
    "192.0.2.205",
    "192.0.2.206",
];
/// The pool's timers: 20 ms heartbeats, dead after 100 ms (five intervals, the ratio of
/// vipd's defaults), 500 ms hold-down. `VIPD_CHAOS_DEAD` overrides the dead interval (e.g.
/// `60ms`, three intervals, where partition arbitration has no room for jitter: see
/// docs/benchmarks.md, Chaos).
const TIMERS: [&str; 4] = ["--interval", "20ms", "--hold-down", "500ms"];
const DEAD_DEFAULT: &str = "100ms";

/// The faults injected, one per cycle, drawn at random.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Link cut and SIGKILL, then the link back and the daemon restarted.
    HardKill,
    /// SIGTERM, then restarted.
    GracefulStop,
    /// Two nodes cannot hear each other (dropped in the switch), the third hears both.
    Partition,
    /// SIGSTOP past the dead interval, then SIGCONT.
    Freeze,
    /// The link down and up three times in a row.
    LinkFlap,
    /// 10 % loss and 2±1 ms jitter on one node's link for a second (tc netem).
    LossyLink,
    /// A held VIP removed from outside (`ip addr del`).
    VipRemoved,
    /// A second vipd started on a node's interface.
    SecondInstance,
    /// Another host announces one of the node's VIPs as its own (gratuitous ARPs from a
    /// MAC not seen before): the holder defends it.
    ForeignClaim,
    /// The node's cable pulled for longer than every forget time (65 s), then back.
    LongCut,
    /// Frames from one node to another dropped for 2 s (longer than the dead interval),
    /// the other way still flowing.
    OneWayCut,
    /// A cut between two nodes that the third sees across, and one of the two restarted
    /// 3 s into it; no VIP on two nodes that hear each other meanwhile.
    RestartDuringCut,
    /// A cut between two nodes, and the third (the one that sees across) frozen past the
    /// dead interval during it.
    FreezeDuringCut,
}

const FAULTS: [Fault; 13] = [
    Fault::HardKill,
    Fault::GracefulStop,
    Fault::Partition,
    Fault::Freeze,
    Fault::LinkFlap,
    Fault::LossyLink,
    Fault::VipRemoved,
    Fault::SecondInstance,
    Fault::ForeignClaim,
    Fault::LongCut,
    Fault::OneWayCut,
    Fault::RestartDuringCut,
    Fault::FreezeDuringCut,
];

/// Longer than every forget time (60 s).
const LONG_CUT: Duration = Duration::from_secs(65);

/// The pool under test.
pub struct Pool {
    lab: Lab,
    vipd: PathBuf,
    nodes: Vec<Host>,
    client: Host,
    /// Claims VIPs it does not hold.
    intruder: Host,
    /// Claims made, for a new MAC each.
    claims: u32,
    procs: Vec<usize>,
    /// Daemons (re)started, for log names.
    starts: usize,
    /// The dead interval, as a flag value.
    dead: String,
}

impl Pool {
    /// Builds the lab and starts the three nodes; returns once they hold two VIPs each.
    pub fn start() -> anyhow::Result<Self> {
        let vipd = crate::demo::build_vipd()?;
        let mut lab = Lab::new("chaos")?;
        let mut nodes = Vec::new();
        for i in 1..=3 {
            nodes.push(lab.add_host(
                &format!("n{i}"),
                &format!("192.0.2.{}/24", 10 + i),
                &format!("02:00:00:00:00:{:02x}", 10 + i),
            )?);
        }
        let client = lab.add_host("client", "192.0.2.100/24", "02:00:00:00:00:64")?;
        let intruder = lab.add_host("intruder", "192.0.2.66/24", "02:00:00:00:00:42")?;
        let mut c = Pool {
            lab,
            vipd,
            nodes,
            client,
            intruder,
            claims: 0,
            procs: vec![0; 3],
            starts: 0,
            dead: std::env::var("VIPD_CHAOS_DEAD").unwrap_or_else(|_| DEAD_DEFAULT.into()),
        };
        for i in 0..3 {
            c.start_node(i)?;
        }
        converge(&mut c)?.map_err(|(kind, detail)| {
            anyhow::anyhow!("never converged at start: {kind}: {detail}")
        })?;
        vipd_lab::lab::wait_until("two VIPs on each node", CONVERGE, || {
            let holders = c.holders()?;
            Ok((0..3).all(|i| holders.values().filter(|on| on.contains(&i)).count() == 2))
        })?;
        Ok(c)
    }

    fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.starts += 1;
        let host = self.nodes[i].clone();
        let mut args: Vec<&str> = TIMERS.to_vec();
        args.extend(["--dead-interval", &self.dead]);
        for v in VIPS {
            args.extend(["--vip", v]);
        }
        let log = format!("{}-{}", host.name, self.starts);
        let p = self
            .lab
            .spawn_vipd(&host, i as u32 + 1, &log, &self.vipd, &args)?;
        self.lab
            .proc(p)
            .wait_for_line(&["vipd started"], Duration::from_secs(20))?;
        self.procs[i] = p;
        Ok(())
    }

    /// Which nodes hold each VIP (one `ip` call per node: the harness must not load the
    /// machine it measures).
    fn holders(&self) -> anyhow::Result<BTreeMap<&'static str, Vec<usize>>> {
        let mut out: BTreeMap<&'static str, Vec<usize>> =
            VIPS.iter().map(|v| (*v, Vec::new())).collect();
        for (i, n) in self.nodes.iter().enumerate() {
            let addrs = self.lab.addresses(n)?;
            for vip in VIPS {
                if addrs.iter().any(|a| a.split('/').next() == Some(vip)) {
                    out.get_mut(vip).expect("listed").push(i);
                }
            }
        }
        Ok(out)
    }

    /// Why the invariants do not hold now, if they do not.
    fn check(&mut self) -> anyhow::Result<Option<(&'static str, String)>> {
        for i in 0..self.nodes.len() {
            let p = self.procs[i];
            if self.lab.proc(p).child.try_wait()?.is_some() {
                return Ok(Some((
                    "daemon_exited",
                    format!("n{} exited:\n{}", i + 1, tail(&self.lab.proc(p).output())),
                )));
            }
        }
        let holders = self.holders()?;
        for (vip, on) in &holders {
            if on.len() != 1 {
                return Ok(Some(("not_one_owner", format!("{vip} on {on:?}"))));
            }
        }
        // Back to the steady state: every node (past its hold-down) holds its share.
        let shares: Vec<usize> = (0..self.nodes.len())
            .map(|i| holders.values().filter(|on| on.contains(&i)).count())
            .collect();
        if shares.iter().any(|n| *n != VIPS.len() / self.nodes.len()) {
            return Ok(Some(("unbalanced", format!("VIPs per node {shares:?}"))));
        }
        for (vip, on) in holders {
            let owner = &self.nodes[on[0]];
            // A client entry at another MAC would make the ping below wait out its timeout
            // (a second): said at once instead, so the time measured is the repair's.
            let mac = self.lab.neighbour_mac(&self.client, vip)?;
            if mac.as_ref().is_some_and(|m| *m != owner.mac) {
                return Ok(Some((
                    "client_wrong_mac",
                    format!("{vip} on {} but the client has {mac:?}", owner.name),
                )));
            }
            if !self.lab.ping(&self.client, vip)? {
                return Ok(Some((
                    "client_unanswered",
                    format!("{vip} (on {})", owner.name),
                )));
            }
            let mac = self.lab.neighbour_mac(&self.client, vip)?;
            if mac.as_deref() != Some(owner.mac.as_str()) {
                return Ok(Some((
                    "client_wrong_mac",
                    format!("{vip} on {} but the client has {mac:?}", owner.name),
                )));
            }
        }
        Ok(None)
    }

    /// A VIP on two nodes, sampled `samples` times. The nodes are looked at one after the
    /// other, so a hand-over between two looks shows as two owners once: it counts only
    /// when two samples in a row show it.
    fn double_owned(&self, samples: usize) -> anyhow::Result<Option<String>> {
        let mut suspect: Option<(&str, Vec<usize>)> = None;
        for _ in 0..samples {
            let twice = self.holders()?.into_iter().find(|(_, on)| on.len() > 1);
            match (&suspect, twice) {
                (Some((v, was)), Some((vip, on))) if *v == vip && *was == on => {
                    return Ok(Some(format!("{vip} on {on:?}")));
                }
                (_, now) => suspect = now,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(None)
    }

    /// A VIP node `i` holds, if any.
    fn held_by(&self, i: usize) -> anyhow::Result<Option<&'static str>> {
        Ok(self
            .holders()?
            .into_iter()
            .find(|(_, on)| on.contains(&i))
            .map(|(v, _)| v))
    }

    /// Injects `fault` on node `i` (and `j`, for a partition) and restores; returns a
    /// violation seen while it lasted.
    fn inject_on(&mut self, fault: Fault, i: usize, j: usize) -> anyhow::Result<Option<String>> {
        let host = self.nodes[i].clone();
        let p = self.procs[i];
        match fault {
            Fault::HardKill => {
                self.lab.set_link(&host, false)?;
                self.lab.proc(p).signal(libc::SIGKILL)?;
                self.lab.proc(p).wait_exit(Duration::from_secs(10))?;
                self.wait_taken_over(i)?;
                self.lab.set_link(&host, true)?;
                self.start_node(i)?;
            }
            Fault::GracefulStop => {
                self.lab.proc(p).signal(libc::SIGTERM)?;
                if !self.lab.proc(p).wait_exit(Duration::from_secs(10))? {
                    return Ok(Some("a graceful stop exited non-zero".into()));
                }
                self.start_node(i)?;
            }
            Fault::Partition => {
                let other = self.nodes[j].clone();
                let at = monotonic_s();
                self.lab.partition(&host, &other, true)?;
                // Past both dead intervals and well beyond: a third node sees both sides.
                let seen = self.double_owned(25)?;
                self.lab.partition(&host, &other, false)?;
                return Ok(seen.map(|d| {
                    format!(
                        "during the cut between {} and {} from {at:.6} (CLOCK_MONOTONIC s, as in \
                         the logs) to {:.6}: {d}",
                        host.name,
                        other.name,
                        monotonic_s()
                    )
                }));
            }
            Fault::Freeze => {
                self.lab.proc(p).signal(libc::SIGSTOP)?;
                let taken = self.wait_taken_over(i);
                self.lab.proc(p).signal(libc::SIGCONT)?;
                taken?;
            }
            Fault::LinkFlap => flap(&self.lab, &host)?,
            Fault::LossyLink => lossy(&self.lab, &host)?,
            Fault::VipRemoved => {
                if let Some(vip) = self.held_by(i)? {
                    self.lab.ip(
                        &host.netns,
                        &["addr", "del", &format!("{vip}/32"), "dev", "eth0"],
                    )?;
                }
            }
            Fault::SecondInstance => {
                let instance = format!("{}-second", self.lab.prefix());
                let mut args = vec![
                    "run",
                    "-i",
                    "eth0",
                    "-n",
                    "9",
                    "--instance",
                    &instance,
                    "--insecure",
                ];
                for v in VIPS {
                    args.extend(["--vip", v]);
                }
                let vipd = self.vipd.clone();
                let q = self.lab.spawn(&host, "second", &vipd, &args)?;
                let ok = self.lab.proc(q).wait_exit(Duration::from_secs(10))?;
                if ok {
                    return Ok(Some("a second instance started".into()));
                }
                // (The running daemons may move VIPs meanwhile: the second's own word.)
                let out = self.lab.proc(q).output();
                if !out.contains("another vipd runs on eth0") || out.contains("removed a VIP") {
                    return Ok(Some(format!(
                        "a second instance did not refuse first:\n{out}"
                    )));
                }
            }
            Fault::ForeignClaim => {
                if let Some(vip) = self.held_by(i)? {
                    self.claims += 1;
                    claim(&self.lab, &self.intruder, vip, self.claims)?;
                }
            }
            Fault::LongCut => {
                let until = std::time::Instant::now() + LONG_CUT;
                self.lab.set_switch_port(&host, false)?;
                let taken = self.wait_taken_over(i);
                // Looked at all along: no VIP on two nodes (the cut node let go of its
                // VIPs when its carrier went).
                let mut seen = None;
                while seen.is_none() && std::time::Instant::now() < until {
                    seen = self.double_owned(10)?;
                    std::thread::sleep(Duration::from_millis(500));
                }
                if let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
                    std::thread::sleep(left);
                }
                self.lab.set_switch_port(&host, true)?;
                taken?;
                if let Some(d) = seen {
                    return Ok(Some(format!("while {}'s cable was out: {d}", host.name)));
                }
            }
            Fault::OneWayCut => {
                let other = self.nodes[j].clone();
                self.lab.cut_one_way(&host, &other, true)?;
                std::thread::sleep(Duration::from_secs(2));
                self.lab.cut_one_way(&host, &other, false)?;
            }
            Fault::RestartDuringCut => {
                let other = self.nodes[j].clone();
                let at = monotonic_s();
                self.lab.partition(&host, &other, true)?;
                std::thread::sleep(Duration::from_secs(3));
                self.lab.proc(p).signal(libc::SIGTERM)?;
                let clean = self.lab.proc(p).wait_exit(Duration::from_secs(10))?;
                self.start_node(i)?;
                let seen = self.double_owned(25)?;
                self.lab.partition(&host, &other, false)?;
                if !clean {
                    return Ok(Some("a graceful stop exited non-zero".into()));
                }
                return Ok(seen.map(|d| {
                    format!(
                        "during the cut between {} and {} (from {at:.6}, {} restarted 3 s in): {d}",
                        host.name, other.name, host.name
                    )
                }));
            }
            Fault::FreezeDuringCut => {
                let other = self.nodes[j].clone();
                let k = (0..self.nodes.len())
                    .find(|k| *k != i && *k != j)
                    .expect("three nodes");
                let witness = self.procs[k];
                self.lab.partition(&host, &other, true)?;
                std::thread::sleep(Duration::from_millis(500));
                self.lab.proc(witness).signal(libc::SIGSTOP)?;
                std::thread::sleep(Duration::from_secs(1));
                self.lab.proc(witness).signal(libc::SIGCONT)?;
                std::thread::sleep(Duration::from_secs(2));
                self.lab.partition(&host, &other, false)?;
            }
        }
        Ok(None)
    }

    /// Waits (bounded) until the other nodes hold every VIP node `i` held.
    fn wait_taken_over(&self, i: usize) -> anyhow::Result<()> {
        vipd_lab::lab::wait_until("the peers to take over", CONVERGE, || {
            Ok(self
                .holders()?
                .values()
                .all(|on| on.iter().any(|n| *n != i)))
        })
    }
}

impl Cluster for Pool {
    type Fault = Fault;

    fn faults(&self) -> &'static [Fault] {
        &FAULTS
    }

    fn inject(&mut self, fault: Fault, rng: &mut Rng) -> anyhow::Result<(String, Option<String>)> {
        let i = rng.below(3) as usize;
        let j = (i + 1 + rng.below(2) as usize) % 3;
        let during = self.inject_on(fault, i, j)?;
        Ok((format!("n{}", i + 1), during))
    }

    fn broken(&mut self) -> anyhow::Result<Option<(&'static str, String)>> {
        self.check()
    }

    fn describe(&self) -> String {
        format!(
            "3 nodes, 6 VIPs (20ms/{}, hold-down 500ms), a client and an intruder",
            self.dead
        )
    }

    fn results_name(&self, cycles: usize) -> String {
        match (cycles < 100, self.dead.as_str()) {
            (true, _) => "chaos-smoke".to_string(),
            (false, DEAD_DEFAULT) => "chaos".to_string(),
            (false, dead) => format!("chaos-{dead}"),
        }
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({ "dead_interval": self.dead })
    }

    fn logs(&self) -> PathBuf {
        self.lab.dir().to_path_buf()
    }
}
