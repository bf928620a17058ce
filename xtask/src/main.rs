//! `cargo xtask <task>`: developer tasks for vipd.
//!
//! - `build-ebpf`: builds the XDP object on its own and prints its path.
//! - `demo`: a two-node cluster and a client in network namespaces; shows a takeover.
//! - `bench …`, `fuzz-xdp`, `chaos`, `sim`: measurements and checks that print figures and
//!   write bench/results/.

mod bench;
mod chaos;
mod demo;
mod dist;
mod sim;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer tasks for vipd")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the XDP program (vipd-ebpf) for bpfel-unknown-none and print the object's path,
    /// for `llvm-objdump -S` or `bpftool prog load`. (`cargo build` embeds it anyway.)
    BuildEbpf,
    /// Run a local cluster in network namespaces (two vipd nodes, a client), kill a node,
    /// show the takeover with its timeline, bring it back, stop one gracefully, tear down.
    /// Needs root and ./scripts/setup.sh.
    Demo,
    /// Benchmarks: print figures and write bench/results/<date>-<name>.{json,md}.
    Bench {
        #[command(subcommand)]
        which: BenchTask,
    },
    /// Random faults on a three-node pool (kills, stops, partitions, freezes, link flaps,
    /// lossy links, VIPs removed from outside, a second instance, another host claiming a
    /// VIP), each followed by a check of the invariants once converged; `--vrrp`: on vipd
    /// and keepalived as the two routers of a VRRP group. Needs root; writes
    /// bench/results/<date>-chaos[-vrrp].{json,md}; fails on any violation.
    Chaos {
        /// Faults to inject, one per cycle.
        #[arg(long, default_value_t = 1000)]
        cycles: usize,
        /// Seed of the fault sequence.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// VRRP mode, with keepalived as the other router.
        #[arg(long)]
        vrrp: bool,
    },
    /// Differential fuzzing of the XDP program: generated and damaged frames through the
    /// loaded program (BPF_PROG_TEST_RUN) and its host reference; any difference in verdict,
    /// counters, peer table or events fails. Needs root; writes
    /// bench/results/<date>-fuzz-xdp.{json,md}.
    FuzzXdp {
        /// Frames to run (split over three configurations).
        #[arg(long, default_value_t = 1_000_000)]
        frames: u64,
        /// Seed of the frame generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Deterministic simulation of the pool: its real state machine on 2..7 nodes, virtual
    /// time, a simulated link, fault schedules drawn from each seed (partitions of every
    /// shape, cuts past the forget time, loss, reordering, crashes, restarts, pauses, flaps,
    /// refused adds), invariants checked after every step. No root needed; writes
    /// bench/results/<date>-sim.{json,md}; fails on any violation (shrunk and traced).
    Sim(sim::Args),
    /// A Debian package for real nodes (no Rust toolchain or bpf-linker on them): the
    /// binary, the systemd unit, the example configuration, man pages, shell completions.
    /// Writes target/dist/vipd_<version>_<arch>.deb; install it with
    /// `apt install ./target/dist/vipd_*.deb`.
    Dist {
        /// Package this binary instead of building one (release).
        #[arg(long)]
        vipd: Option<PathBuf>,
        /// Where to write the package [default: target/dist].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Then unpack it and run it from there, with no build tool on PATH.
        #[arg(long)]
        check: bool,
    },
    /// (Used by the failover benchmark.) Answer UDP requests to an address with a name.
    #[command(hide = true)]
    Echo {
        /// ADDR:PORT; with 0.0.0.0:PORT or [::]:PORT, every local address of the family,
        /// each request answered from the address it was sent to (IP_PKTINFO).
        #[arg(long)]
        bind: std::net::SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 600)]
        max_seconds: u64,
    },
    /// (Used by the failover benchmark.) Probe an address at a fixed rate; write a report.
    #[command(hide = true)]
    Probe {
        #[arg(long)]
        target: std::net::SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        rate: u32,
        #[arg(long)]
        duration_ms: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// (Used by the failover benchmark's scale row.) Probe many addresses round-robin until
    /// another node than --from-node has answered each; write a report.
    #[command(hide = true)]
    ProbeMany {
        /// One ADDR:PORT per line.
        #[arg(long)]
        targets_file: PathBuf,
        #[arg(long)]
        from_node: String,
        #[arg(long, default_value_t = 20_000)]
        rate: u32,
        #[arg(long)]
        max_duration_ms: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchTask {
    /// Client-visible outage across a hard failure of the VIP's owner (needs root).
    Failover {
        /// Failovers per system.
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// A smoke run: one failover each of vipd at its defaults, VRRP mode at 10ms and
        /// the scale row with at most 100 VIPs (or of the --systems given).
        #[arg(long)]
        quick: bool,
        /// Probe requests per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u32,
        /// Only redraw the table and plot from an earlier result file.
        #[arg(long)]
        replot: Option<PathBuf>,
        /// Run only these rows, comma-separated: vipd-default, vipd-1ms, vipd-2ms,
        /// vrrp-10ms, vrrp-1s, keepalived-0.01, keepalived-1, ucarp, vipd-scale [default: all].
        #[arg(long, value_delimiter = ',', value_parser = bench::failover::System::parse)]
        systems: Vec<bench::failover::System>,
        /// VIPs in the scale row's pool (vipd-scale).
        #[arg(long, default_value_t = 1000)]
        scale_vips: usize,
        /// Use this vipd binary instead of building the workspace's (release).
        #[arg(long)]
        vipd: Option<PathBuf>,
    },
    /// Per-packet cost of the XDP program via BPF_PROG_TEST_RUN (needs root).
    Xdp {
        /// Runs per frame kind.
        #[arg(long, default_value_t = 10_000_000)]
        repeat: u32,
        /// A smoke run (10,000 runs per frame).
        #[arg(long)]
        quick: bool,
    },
    /// Userspace CPU and wake-ups of one node with 8 peers sending adverts: vipd vs
    /// keepalived (needs root).
    Cpu {
        /// A smoke run (1 s window).
        #[arg(long)]
        quick: bool,
    },
    /// Placement of 10,000 VIPs over 64 nodes: time, and VIPs moved on a leave and a join.
    Placement {
        /// A smoke run (1,000 VIPs over 16 nodes).
        #[arg(long)]
        quick: bool,
    },
    /// False failovers of healthy clusters with every core saturated, no fault injected:
    /// vipd at several timer settings, keepalived and vipd VRRP mode at once (needs root).
    Starvation {
        /// Load window per profile, seconds.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// A smoke run: about 5 s per profile with vipd 2ms/8ms, keepalived and VRRP mode.
        #[arg(long)]
        quick: bool,
        /// Load profile(s), run one after the other with fresh labs.
        #[arg(long, value_enum, default_value_t = bench::starvation::LoadChoice::Both)]
        load: bench::starvation::LoadChoice,
        /// Only the systems whose label contains this (repeatable), e.g. "one daemon".
        #[arg(long)]
        only: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let task = Cli::parse().task;
    if matches!(task, Task::Demo | Task::Bench { .. } | Task::Chaos { .. }) {
        // Ctrl-C unwinds the lab (namespaces, processes, pins) instead of leaking it.
        vipd_lab::lab::handle_interrupts();
    }
    match task {
        Task::BuildEbpf => {
            let object = build_ebpf()?;
            println!("{}", object.display());
            Ok(())
        }
        Task::Demo => demo::run(),
        Task::Bench {
            which: BenchTask::Failover {
                replot: Some(path), ..
            },
        } => replot_failover(&path),
        Task::Bench {
            which:
                BenchTask::Failover {
                    runs,
                    quick,
                    rate,
                    replot: None,
                    systems,
                    scale_vips,
                    vipd,
                },
        } => bench_failover(runs, quick, rate, systems, scale_vips, vipd),
        Task::Bench {
            which: BenchTask::Xdp { repeat, quick },
        } => bench::xdp(if quick { 10_000 } else { repeat }, quick),
        Task::Bench {
            which: BenchTask::Placement { quick },
        } => bench::placement(quick),
        Task::Bench {
            which: BenchTask::Cpu { quick },
        } => bench::cpu(quick),
        Task::Bench {
            which:
                BenchTask::Starvation {
                    seconds,
                    quick,
                    load,
                    only,
                },
        } => bench::starvation::bench(seconds, quick, load, &only),
        Task::FuzzXdp { frames, seed } => bench::fuzz_xdp(frames, seed),
        Task::Chaos { cycles, seed, vrrp } => chaos::run(cycles, seed, vrrp),
        Task::Sim(args) => sim::run(&args),
        Task::Dist { vipd, out, check } => dist::run(vipd, out, check).map(|_| ()),
        Task::Echo {
            bind,
            name,
            max_seconds,
        } => bench::probe::echo(bind, &name, std::time::Duration::from_secs(max_seconds)),
        Task::Probe {
            target,
            rate,
            duration_ms,
            out,
        } => {
            let report =
                bench::probe::probe(target, rate, std::time::Duration::from_millis(duration_ms))?;
            std::fs::write(&out, serde_json::to_string(&report)?)?;
            Ok(())
        }
        Task::ProbeMany {
            targets_file,
            from_node,
            rate,
            max_duration_ms,
            out,
        } => {
            let targets = std::fs::read_to_string(&targets_file)?
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.trim().parse())
                .collect::<Result<Vec<std::net::SocketAddr>, _>>()?;
            let report = bench::probe::probe_many(
                &targets,
                &from_node,
                rate,
                std::time::Duration::from_millis(max_duration_ms),
            )?;
            std::fs::write(&out, serde_json::to_string(&report)?)?;
            Ok(())
        }
    }
}

/// The workspace root (xtask's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .into()
}

/// Builds vipd-ebpf the way `vipd/build.rs` (aya-build) does, into target/ebpf.
fn build_ebpf() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let target_dir = root.join("target/ebpf");
    let arch = std::env::consts::ARCH;
    let status = Command::new("rustup")
        .current_dir(&root)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "--package",
            "vipd-ebpf",
            "--bins",
        ])
        .args([
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .context("running rustup (did you run ./scripts/setup.sh?)")?;
    if !status.success() {
        bail!("building vipd-ebpf failed ({status}); ./scripts/setup.sh installs what it needs");
    }
    Ok(target_dir.join("bpfel-unknown-none/release/vipd"))
}

fn bench_failover(
    runs: usize,
    quick: bool,
    rate: u32,
    systems: Vec<bench::failover::System>,
    scale_vips: usize,
    vipd: Option<PathBuf>,
) -> anyhow::Result<()> {
    use bench::failover::System;
    // SAFETY: geteuid never fails.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the failover benchmark needs root (network namespaces, XDP): run it with sudo");
    }
    let vipd = match vipd {
        Some(v) => v,
        None => demo::build_vipd()?,
    };
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    let machine = bench::Machine::here();
    let (systems, runs, scale_vips) = match (quick, systems.is_empty()) {
        (true, true) => (
            vec![System::VipdDefault, System::VrrpFast, System::VipdScale],
            1,
            scale_vips.min(100),
        ),
        (true, false) => (systems, 1, scale_vips.min(100)),
        (false, true) => (System::ALL.to_vec(), runs, scale_vips),
        (false, false) => (systems, runs, scale_vips),
    };
    let mut all = Vec::new();
    let mut scale = None;
    let mut failures = serde_json::Map::new();
    for system in systems {
        println!("==> {} × {runs}", system.name());
        // One system failing (say, one that never settles) must not lose the others.
        let result = if system == System::VipdScale {
            bench::failover::run_scale(scale_vips, runs, &vipd, &xtask).map(|s| scale = Some(s))
        } else {
            bench::failover::run(system, runs, rate, &vipd, &xtask).map(|r| all.extend(r))
        };
        if let Err(e) = result {
            println!("  {} failed: {e:#}", system.name());
            failures.insert(system.name().into(), format!("{e:#}").into());
        }
    }
    let table = failover_markdown(&all, scale.as_ref(), &machine);
    println!("\n{table}");
    let scale_json = scale.as_ref().map(|(label, r)| {
        serde_json::json!({ "label": label, "vips": scale_vips, "nodes": bench::failover::SCALE_NODES,
            "rate": bench::failover::SCALE_RATE, "runs": r })
    });
    let json = serde_json::json!({ "machine": machine, "rate": rate, "runs": all,
        "scale": scale_json, "failed": failures });
    let (j, m) = bench::write_results(
        if quick { "failover-smoke" } else { "failover" },
        &json,
        &table,
    )?;
    let svg = j.with_extension("svg");
    bench::failover_plot(&all, &svg)?;
    println!(
        "wrote {}, {} and {}",
        j.display(),
        m.display(),
        svg.display()
    );
    Ok(())
}

/// The failover results as markdown: the outage table, where the milliseconds go, and the
/// scale row's table.
fn failover_markdown(
    runs: &[bench::failover::Run],
    scale: Option<&(String, Vec<bench::failover::ScaleRun>)>,
    machine: &bench::Machine,
) -> String {
    let mut md = if runs.is_empty() {
        format!("Machine: {}.\n", machine.line())
    } else {
        bench::failover_table(runs, machine)
    };
    if runs.iter().any(|r| r.timeline.is_some()) {
        md.push('\n');
        md.push_str(&bench::failover::breakdown_table(runs));
    }
    if let Some((label, s)) = scale.filter(|s| !s.1.is_empty()) {
        md.push('\n');
        md.push_str(&bench::failover::scale_table(label, s));
    }
    md
}

/// Redraws the failover table (`.md`) and plot (`.svg`) beside an earlier `.json` result.
fn replot_failover(path: &std::path::Path) -> anyhow::Result<()> {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let runs: Vec<bench::failover::Run> = serde_json::from_value(json["runs"].clone())?;
    let scale = match &json["scale"] {
        serde_json::Value::Null => None,
        s => Some((
            s["label"].as_str().unwrap_or("vipd pool").to_string(),
            serde_json::from_value(s["runs"].clone())?,
        )),
    };
    let machine = bench::Machine::here();
    let table = failover_markdown(&runs, scale.as_ref(), &machine);
    println!("{table}");
    std::fs::write(path.with_extension("md"), &table)?;
    bench::failover_plot(&runs, &path.with_extension("svg"))?;
    Ok(())
}
