//! `cargo xtask chaos`: random faults, one after the other, each followed by a check of the
//! invariants once the cluster has converged back to its steady state. Two clusters:
//! [`pool`] (three vipd nodes, the default) and [`vrrp`] (`--vrrp`: vipd and keepalived as
//! the two routers of a VRRP group). Prints the violations by kind and the convergence time
//! per fault kind; writes bench/results/<date>-<name>.{json,md}; exits non-zero on any
//! violation.

mod pool;
mod vrrp;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;
use vipd_lab::lab::{Host, Lab, interrupted};

use crate::bench::{Machine, write_results};

/// Longest wait for convergence after a fault before it counts as a violation.
pub const CONVERGE: Duration = Duration::from_secs(20);

/// xorshift64*: a repeatable sequence of faults for a seed.
pub struct Rng(u64);

impl Rng {
    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A cluster the faults are injected into.
pub trait Cluster {
    /// The faults it knows.
    type Fault: Copy + Ord + std::fmt::Debug + Serialize + 'static;

    /// Every fault, drawn with equal chances.
    fn faults(&self) -> &'static [Self::Fault];

    /// Injects `fault` (its targets drawn from `rng`) and restores; returns what it hit,
    /// for the log, and a violation seen while it lasted.
    fn inject(
        &mut self,
        fault: Self::Fault,
        rng: &mut Rng,
    ) -> anyhow::Result<(String, Option<String>)>;

    /// Why the invariants do not hold now, if they do not.
    fn broken(&mut self) -> anyhow::Result<Option<(&'static str, String)>>;

    /// The cluster for the report's first line ("3 nodes, 6 VIPs (…)").
    fn describe(&self) -> String;

    /// The results' file name for a run of `cycles` faults.
    fn results_name(&self, cycles: usize) -> String;

    /// Settings for the JSON results.
    fn settings(&self) -> serde_json::Value;

    /// Where the lab keeps its logs.
    fn logs(&self) -> std::path::PathBuf;
}

/// One broken invariant.
#[derive(Debug, Serialize)]
struct Violation<F> {
    cycle: usize,
    fault: F,
    kind: &'static str,
    detail: String,
}

/// What a run measured, per fault kind.
#[derive(Debug, Default, Serialize)]
struct PerFault {
    cycles: usize,
    violations: usize,
    /// Fault restored → every invariant holds, ms.
    converged_ms: Vec<f64>,
}

/// `cargo xtask chaos --cycles N --seed S [--vrrp]`.
pub fn run(cycles: usize, seed: u64, vrrp: bool) -> anyhow::Result<()> {
    // SAFETY: geteuid never fails.
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "chaos needs root (namespaces, XDP)"
    );
    if vrrp {
        drive(&mut vrrp::Routers::start()?, cycles, seed)
    } else {
        drive(&mut pool::Pool::start()?, cycles, seed)
    }
}

/// Waits until the invariants hold; the time it took, or the last reason they did not.
/// A slow convergence (over 2 s) says what held it up.
pub fn converge<C: Cluster>(c: &mut C) -> anyhow::Result<Result<Duration, (&'static str, String)>> {
    let start = Instant::now();
    let mut last = ("not_converged", String::new());
    while start.elapsed() < CONVERGE {
        anyhow::ensure!(!interrupted(), "interrupted");
        match c.broken()? {
            None => {
                let took = start.elapsed();
                if took > Duration::from_secs(2) {
                    eprintln!(
                        "slow convergence ({:.1} s) at {:.3}: last {}: {}",
                        took.as_secs_f64(),
                        monotonic_s(),
                        last.0,
                        last.1
                    );
                }
                return Ok(Ok(took));
            }
            Some(why) => last = why,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Err(last))
}

/// Runs `cycles` faults drawn from `seed` on `c`, then reports.
fn drive<C: Cluster>(c: &mut C, cycles: usize, seed: u64) -> anyhow::Result<()> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut per: BTreeMap<C::Fault, PerFault> = BTreeMap::new();
    let mut violations = Vec::new();
    let started = Instant::now();
    let faults = c.faults();
    for cycle in 0..cycles {
        let fault = faults[rng.below(faults.len() as u64) as usize];
        per.entry(fault).or_default().cycles += 1;
        let (target, during) = c
            .inject(fault, &mut rng)
            .with_context(|| format!("cycle {cycle}: {fault:?}"))?;
        let mut broken = Vec::new();
        if let Some(d) = during {
            broken.push(("during_fault", d));
        }
        match converge(c)? {
            Ok(t) => per
                .get_mut(&fault)
                .expect("entry")
                .converged_ms
                .push(t.as_secs_f64() * 1e3),
            Err(why) => broken.push(why),
        }
        for (kind, detail) in broken {
            eprintln!("cycle {cycle} {fault:?} {target}: VIOLATION {kind}: {detail}");
            per.get_mut(&fault).expect("entry").violations += 1;
            violations.push(Violation {
                cycle,
                fault,
                kind,
                detail,
            });
        }
        if (cycle + 1) % 10 == 0 {
            eprintln!(
                "{} cycles, {} violations, {:.0} s",
                cycle + 1,
                violations.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }

    let machine = Machine::here();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Chaos: {cycles} random faults (seed {seed}) on {}, {:.0} s; after each, every \
         invariant must hold within {} s. **{} violations.**",
        c.describe(),
        started.elapsed().as_secs_f64(),
        CONVERGE.as_secs(),
        violations.len()
    );
    let _ = writeln!(md, "Machine: {}.\n", machine.line());
    let _ = writeln!(
        md,
        "| fault | cycles | violations | converged p50 (ms) | p99 | max |\n|---|---|---|---|---|---|"
    );
    for (fault, f) in &mut per {
        f.converged_ms.sort_by(f64::total_cmp);
        let v = &f.converged_ms;
        let _ = writeln!(
            md,
            "| {fault:?} | {} | {} | {:.0} | {:.0} | {:.0} |",
            f.cycles,
            f.violations,
            percentile(v, 0.5),
            percentile(v, 0.99),
            percentile(v, 1.0)
        );
    }
    for v in violations.iter().take(20) {
        let _ = writeln!(
            md,
            "\n- cycle {} {:?}: {}: {}",
            v.cycle, v.fault, v.kind, v.detail
        );
    }
    println!("{md}");
    let json = serde_json::json!({
        "machine": machine,
        "cycles": cycles,
        "seed": seed,
        "settings": c.settings(),
        "faults": per,
        "violations": violations,
    });
    let (j, m) = write_results(&c.results_name(cycles), &json, &md)?;
    println!("wrote {} and {}", j.display(), m.display());
    anyhow::ensure!(
        violations.is_empty(),
        "{} invariant violations (logs in {})",
        violations.len(),
        c.logs().display()
    );
    Ok(())
}

/// Takes `host`'s link down and up three times in a row.
pub fn flap(lab: &Lab, host: &Host) -> anyhow::Result<()> {
    for _ in 0..3 {
        lab.set_link(host, false)?;
        std::thread::sleep(Duration::from_millis(30));
        lab.set_link(host, true)?;
        std::thread::sleep(Duration::from_millis(30));
    }
    Ok(())
}

/// 10 % loss and 2±1 ms jitter on `host`'s link for a second (tc netem).
pub fn lossy(lab: &Lab, host: &Host) -> anyhow::Result<()> {
    let tc = |args: &[&str]| -> anyhow::Result<bool> {
        let mut full = vec!["qdisc"];
        full.extend_from_slice(args);
        Ok(lab.exec(host, "tc", &full)?.status.success())
    };
    let netem = ["netem", "loss", "10%", "delay", "2ms", "1ms"];
    let mut add = vec!["add", "dev", "eth0", "root"];
    add.extend(netem);
    if tc(&add)? {
        std::thread::sleep(Duration::from_secs(1));
        tc(&["del", "dev", "eth0", "root"])?;
    }
    Ok(())
}

/// `intruder` claims `vip` with three gratuitous ARPs from a MAC of its own, the `n`th
/// (a new claimer each time: the holder defends at once).
pub fn claim(lab: &Lab, intruder: &Host, vip: &str, n: u32) -> anyhow::Result<()> {
    let n = n.to_be_bytes();
    let mac = [0x02, 0x66, n[0], n[1], n[2], n[3]];
    let ip: std::net::Ipv4Addr = vip.parse()?;
    let garp = vipd_common::neighbor::gratuitous_arp(mac, ip.octets()).to_vec();
    lab.send_frames(intruder, "eth0", &[garp.clone(), garp.clone(), garp])
}

/// CLOCK_MONOTONIC in seconds: the clock vipd's log lines start with.
pub fn monotonic_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// The last lines of a log.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
